#include "bindings/bindings.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastrnn native kernels (internal; use the fastrnn package API)";
  fastrnn::bindings::register_runtime(m);
  fastrnn::bindings::register_gemm(m);
  fastrnn::bindings::register_math(m);
  fastrnn::bindings::register_seq(m);
  fastrnn::bindings::register_pool(m);
  fastrnn::bindings::register_optim(m);
}
