// One register_* function per area; module.cpp calls them all.
// Binding code checks arguments, allocates outputs, releases the GIL and calls
// a kernel. No math here.
#pragma once

#include <pybind11/pybind11.h>

namespace fastrnn::bindings {

void register_runtime(pybind11::module_& m);
void register_gemm(pybind11::module_& m);
void register_math(pybind11::module_& m);
void register_seq(pybind11::module_& m);
void register_pool(pybind11::module_& m);
void register_optim(pybind11::module_& m);

}  // namespace fastrnn::bindings
