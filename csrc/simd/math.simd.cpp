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

}  // namespace

const MathTable& math_table() {
  static const MathTable t{
      {&exp_n<float>, &tanh_n<float>, &sigmoid_n<float>},
      {&exp_n<double>, &tanh_n<double>, &sigmoid_n<double>},
      {{simd::max_error_ulp_exp, simd::max_error_ulp_exp},
       {simd::max_error_ulp_tanh, simd::max_error_ulp_tanh},
       {simd::max_error_ulp_sigmoid, simd::max_error_ulp_sigmoid}},
  };
  return t;
}

FASTRNN_TARGET_NS_END
