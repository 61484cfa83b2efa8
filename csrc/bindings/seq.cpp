#include "bindings/bindings.h"

namespace fastrnn::bindings {

// Sequence kernels: forward and BPTT for RNN, LSTM, GRU (fastrnn.functional).
void register_seq(pybind11::module_& m) { (void)m; }

}  // namespace fastrnn::bindings
