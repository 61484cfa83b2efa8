#include "bindings/bindings.h"

namespace fastrnn::bindings {

// GEMM entry points (fastrnn.ops.matmul).
void register_gemm(pybind11::module_& m) { (void)m; }

}  // namespace fastrnn::bindings
