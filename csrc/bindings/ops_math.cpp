// Vector-math entry points behind fastrnn.ops.exp / tanh / sigmoid.
//
// The Python layer (fastrnn/_ops_math.py) converts inputs and allocates the
// output; this file re-checks what the kernel relies on (dtype, contiguity,
// sizes, writability), releases the GIL and calls the active target's array
// function.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <pybind11/numpy.h>

#include "bindings/bindings.h"
#include "runtime/dispatch.h"
#include "simd/math_table.h"

namespace py = pybind11;

namespace fastrnn::bindings {
namespace {

// Same order as MathTable::max_error_ulp.
enum class Fn : int { exp = 0, tanh = 1, sigmoid = 2, tanh_fast = 3, sigmoid_fast = 4 };

Fn parse_fn(const std::string& name) {
  if (name == "exp") return Fn::exp;
  if (name == "tanh") return Fn::tanh;
  if (name == "sigmoid") return Fn::sigmoid;
  if (name == "tanh_fast") return Fn::tanh_fast;
  if (name == "sigmoid_fast") return Fn::sigmoid_fast;
  throw py::value_error(
      "name must be one of 'exp', 'tanh', 'sigmoid', 'tanh_fast', 'sigmoid_fast', got '" + name +
      "'");
}

template <class T>
void (*pick(const MathFns<T>& fns, Fn fn))(const T*, T*, std::int64_t) {
  switch (fn) {
    case Fn::exp:
      return fns.exp;
    case Fn::tanh:
      return fns.tanh;
    case Fn::sigmoid:
      return fns.sigmoid;
    case Fn::tanh_fast:
      return fns.tanh_fast;
    case Fn::sigmoid_fast:
      return fns.sigmoid_fast;
  }
  return fns.exp;
}

const MathFns<float>& fns_of(const MathTable& t, float*) { return t.f32; }
const MathFns<double>& fns_of(const MathTable& t, double*) { return t.f64; }

template <class T>
void run(Fn fn, const py::array& x, py::array& out) {
  const T* in = static_cast<const T*>(x.data());
  T* o = static_cast<T*>(out.mutable_data());
  const auto n = static_cast<std::int64_t>(x.size());
  const MathTable& table = FASTRNN_DISPATCH(math_table);
  auto* f = pick(fns_of(table, static_cast<T*>(nullptr)), fn);
  // Safe without the GIL: the kernel touches only these two buffers, which the
  // caller keeps alive for the duration of the call, and no Python objects.
  py::gil_scoped_release release;
  f(in, o, n);
}

// out[...] = f(x[...]) elementwise. x and out: C-contiguous, same dtype
// (float32 or float64), same number of elements; out writable. out may be x.
void apply(const std::string& name, const py::array& x, py::array out) {
  const Fn fn = parse_fn(name);
  // array_t<T>::check_ compares dtypes by equivalence (not object identity).
  const bool f32 = py::array_t<float>::check_(x);
  const bool f64 = py::array_t<double>::check_(x);
  if (!f32 && !f64) throw py::type_error("x: expected dtype float32 or float64");
  if (f32 ? !py::array_t<float>::check_(out) : !py::array_t<double>::check_(out)) {
    throw py::type_error("out: dtype must match x");
  }
  if (!(x.flags() & py::array::c_style)) throw py::value_error("x: must be C-contiguous");
  if (!(out.flags() & py::array::c_style)) throw py::value_error("out: must be C-contiguous");
  if (!out.writeable()) throw py::value_error("out: must be writable");
  if (out.size() != x.size()) throw py::value_error("out: must have as many elements as x");
  if (f32) {
    run<float>(fn, x, out);
  } else {
    run<double>(fn, x, out);
  }
}

const MathTable& table_for(const std::string& isa) {
  if (isa.empty()) return FASTRNN_DISPATCH(math_table);
  Isa t = Isa::generic;
  try {
    t = parse_isa(isa);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(std::string("isa: ") + e.what());
  }
  if (!isa_supported(t)) {
    throw py::value_error("isa: SIMD target '" + isa + "' is not supported by this CPU/build");
  }
#if defined(FASTRNN_X86_TARGETS)
  if (t == Isa::avx512) return avx512::math_table();
  if (t == Isa::avx2) return avx2::math_table();
#endif
  return generic::math_table();
}

// Documented maximum error in ulp of a function for a dtype on a target
// ("" = the active target).
double max_error_ulp(const std::string& name, const std::string& dtype, const std::string& isa) {
  const Fn fn = parse_fn(name);
  int d = 0;
  if (dtype == "float32") {
    d = 0;
  } else if (dtype == "float64") {
    d = 1;
  } else {
    throw py::value_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
  }
  return table_for(isa).max_error_ulp[static_cast<int>(fn)][d];
}

}  // namespace

void register_math(py::module_& m) {
  m.def("math_apply", &apply, py::arg("name"), py::arg("x"), py::arg("out"),
        "out = f(x) elementwise for f in exp, tanh, sigmoid, tanh_fast, sigmoid_fast "
        "(C-contiguous float32/float64; out may be x).");
  m.def("math_max_error_ulp", &max_error_ulp, py::arg("name"), py::arg("dtype"),
        py::arg("isa") = std::string(),
        "Documented maximum error in ulp of a function on a SIMD target (default: active).");
}

}  // namespace fastrnn::bindings
