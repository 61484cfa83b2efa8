#include "bindings/bindings.h"

namespace fastrnn::bindings {

// Vector-math entry points (fastrnn.ops activations).
void register_math(pybind11::module_& m) { (void)m; }

}  // namespace fastrnn::bindings
