#include "bindings/bindings.h"

namespace fastrnn::bindings {

// GEMM and vector-math entry points (fastrnn.ops).
void register_ops(pybind11::module_& m) { (void)m; }

}  // namespace fastrnn::bindings
