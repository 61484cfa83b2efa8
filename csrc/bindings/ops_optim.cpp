// Entry point behind the optimizers' fused updates (fastrnn/optim.py): checks the
// arrays the kernel relies on, releases the GIL and runs csrc/optim/adam.
#include <cstdint>
#include <string>

#include <pybind11/numpy.h>

#include "bindings/bindings.h"
#include "optim/adam.h"
#include "runtime/threads.h"

namespace py = pybind11;

namespace fastrnn::bindings {
namespace {

template <class T>
void adam_run(py::array& p, const py::array& g, py::array& m, py::array& v, bool has_wd,
              double wd, double b1, double c1, double b2, double c2, double sqrt_bc2, double eps,
              double step) {
  const AdamScalars<T> s{has_wd,
                         static_cast<T>(wd),
                         static_cast<T>(b1),
                         static_cast<T>(c1),
                         static_cast<T>(b2),
                         static_cast<T>(c2),
                         static_cast<T>(sqrt_bc2),
                         static_cast<T>(eps),
                         static_cast<T>(step)};
  T* pp = static_cast<T*>(p.mutable_data());
  const T* gp = static_cast<const T*>(g.data());
  T* mp = static_cast<T*>(m.mutable_data());
  T* vp = static_cast<T*>(v.mutable_data());
  const auto n = static_cast<std::int64_t>(p.size());
  const int threads = get_num_threads();
  py::gil_scoped_release release;
  adam_update<T>(n, pp, gp, mp, vp, s, threads);
}

// p, m, v updated in place; all four C-contiguous, one dtype (float32 or float64), the
// same number of elements; p, m, v writable and not overlapping each other or g.
void adam_step(py::array p, const py::array& g, py::array m, py::array v, bool has_wd,
               double wd, double b1, double c1, double b2, double c2, double sqrt_bc2,
               double eps, double step) {
  const bool f32 = py::array_t<float>::check_(p);
  if (!f32 && !py::array_t<double>::check_(p)) {
    throw py::type_error("p: expected dtype float32 or float64");
  }
  const char* names[] = {"p", "g", "m", "v"};
  const py::array* arrays[] = {&p, &g, &m, &v};
  for (int i = 0; i < 4; ++i) {
    const py::array& a = *arrays[i];
    if (f32 ? !py::array_t<float>::check_(a) : !py::array_t<double>::check_(a)) {
      throw py::type_error(std::string(names[i]) + ": dtype must match p");
    }
    if (!(a.flags() & py::array::c_style)) {
      throw py::value_error(std::string(names[i]) + ": must be C-contiguous");
    }
    if (a.size() != p.size()) {
      throw py::value_error(std::string(names[i]) + ": must have as many elements as p");
    }
    if (i != 1 && !a.writeable()) throw py::value_error(std::string(names[i]) + ": read-only");
  }
  const auto nbytes = static_cast<std::uintptr_t>(p.nbytes());
  for (int i = 0; i < 4; ++i) {
    for (int j = i + 1; j < 4; ++j) {
      const auto a = reinterpret_cast<std::uintptr_t>(arrays[i]->data());
      const auto b = reinterpret_cast<std::uintptr_t>(arrays[j]->data());
      if (nbytes != 0 && a < b + nbytes && b < a + nbytes) {
        throw py::value_error(std::string(names[i]) + " and " + names[j] + " overlap");
      }
    }
  }
  if (f32) {
    adam_run<float>(p, g, m, v, has_wd, wd, b1, c1, b2, c2, sqrt_bc2, eps, step);
  } else {
    adam_run<double>(p, g, m, v, has_wd, wd, b1, c1, b2, c2, sqrt_bc2, eps, step);
  }
}

}  // namespace

void register_optim(py::module_& m) {
  m.def("adam_step", &adam_step, py::arg("p"), py::arg("g"), py::arg("m"), py::arg("v"),
        py::arg("has_wd"), py::arg("wd"), py::arg("b1"), py::arg("c1"), py::arg("b2"),
        py::arg("c2"), py::arg("sqrt_bc2"), py::arg("eps"), py::arg("step"),
        "One fused Adam update of p, m, v in place (see csrc/optim/adam.h).");
}

}  // namespace fastrnn::bindings
