// Per-target array entry points for the vector math (see simd/math.h).
#include "simd/math.h"

#include "runtime/target.h"
#include "simd/math_table.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

template <class T>
void exp_n(const T* in, T* out, std::int64_t n) {
  simd::exp_array(in, out, n);
}
template <class T>
void tanh_n(const T* in, T* out, std::int64_t n) {
  simd::tanh_array(in, out, n);
}
template <class T>
void sigmoid_n(const T* in, T* out, std::int64_t n) {
  simd::sigmoid_array(in, out, n);
}
template <class T>
void tanh_fast_n(const T* in, T* out, std::int64_t n) {
  simd::tanh_fast_array(in, out, n);
}
template <class T>
void sigmoid_fast_n(const T* in, T* out, std::int64_t n) {
  simd::sigmoid_fast_array(in, out, n);
}

template <class T>
constexpr MathFns<T> fns() {
  return {&exp_n<T>, &tanh_n<T>, &sigmoid_n<T>, &tanh_fast_n<T>, &sigmoid_fast_n<T>};
}

constexpr double bound(simd::MathFn fn, bool is_double) {
  return simd::max_error_ulp(fn, is_double);
}

}  // namespace

const MathTable& math_table() {
  using simd::MathFn;
  static const MathTable t{
      fns<float>(),
      fns<double>(),
      {{bound(MathFn::exp, false), bound(MathFn::exp, true)},
       {bound(MathFn::tanh, false), bound(MathFn::tanh, true)},
       {bound(MathFn::sigmoid, false), bound(MathFn::sigmoid, true)},
       {bound(MathFn::tanh_fast, false), bound(MathFn::tanh_fast, true)},
       {bound(MathFn::sigmoid_fast, false), bound(MathFn::sigmoid_fast, true)}},
  };
  return t;
}

FASTRNN_TARGET_NS_END
