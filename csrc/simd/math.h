// Vector and scalar exp, tanh, sigmoid for float and double, one copy per
// target (namespace fastrnn::<target>::simd). Include from *.simd.cpp only.
//
// Written from scratch: range reduction + polynomial, IEEE arithmetic only
// (no -ffast-math, no libm calls). The same code runs for every lane count, so
// the scalar functions (which evaluate one lane of the vector code) give
// bitwise the same results as the vector ones on the same target.
//
// Maximum error over the whole range, measured against float64/long double
// (see docs/math.md and tests/test_math.py; the tests pin these bounds):
//
//               float32   float64     (ulp of the correctly rounded result)
//   exp          1 ulp     1 ulp       results below the smallest normal number
//   tanh         3 ulp     3 ulp       (denormals) are computed, not flushed; their
//   sigmoid      3 ulp     3 ulp       error is within 1 unit of the denormal spacing
//
// The constants max_error_ulp_{exp,tanh,sigmoid} below hold these numbers.
//
// Special values (all exact):
//   exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN, overflow -> +inf,
//   exp(x) = 0 below the smallest denormal (x < -103.98 float, -745.14 double).
//   tanh(+-0) = +-0, tanh(+-inf) = +-1, tanh(NaN) = NaN, tanh(x) = x for tiny x.
//   sigmoid(-inf) = 0, sigmoid(+inf) = 1, sigmoid(NaN) = NaN, sigmoid(0) = 0.5.
//   No NaN for any finite or infinite input; no floating-point overflow in the
//   intermediate steps of tanh and sigmoid.
//
// If the caller's thread runs with flush-to-zero / denormals-are-zero set
// (not done by fastrnn), denormal inputs/outputs are treated as zero.
//
// Algorithms (T = float or double):
//   exp(x):   clamp x to [lo, hi] (beyond which the result is 0 / inf);
//             n = round(x / ln2), r = x - n*ln2 (two-part ln2, exact
//             products), |r| <= ln2/2; e^r = 1 + r + r^2 P(r) with the Taylor
//             coefficients (degree 8 float, 13 double; truncation < 0.01 ulp);
//             scale by 2^n as 2^n1 * 2^n2 (n1 + n2 = n) so that overflow gives
//             inf and denormal results are rounded once.
//   tanh(x):  a = |x|; t = expm1(-2a) in (-1, 0] from the same reduction
//             (expm1 = 2^n q + (2^n - 1), q = r + r^2 P(r), exact for n = 0);
//             tanh(a) = -t / (2 + t); sign restored from x. There is no
//             cancellation for small a: t ~ -2a and tanh(a) ~ a.
//   sigmoid(x): e = exp(-|x|) in (0, 1]; sigmoid(|x|) = 1 / (1 + e) and
//             sigmoid(-|x|) = e / (1 + e), so nothing overflows and small
//             results keep their relative accuracy.
#pragma once

#include <cstdint>

#include "runtime/target.h"
#include "simd/vec.h"

FASTRNN_TARGET_NS_BEGIN
namespace simd {

// Documented maximum errors in ulp (same for float and double, every target).
constexpr double max_error_ulp_exp = 1.0;
constexpr double max_error_ulp_tanh = 3.0;
constexpr double max_error_ulp_sigmoid = 3.0;

namespace detail {

template <class T>
struct ExpConst;

template <>
struct ExpConst<float> {
  static constexpr float log2e = 1.44269504088896341f;
  // ln2 = ln2_hi + ln2_lo; ln2_hi has 9 trailing zero bits, so n*ln2_hi is
  // exact for |n| < 512.
  static constexpr float ln2_hi = 0.693145751953125f;
  static constexpr float ln2_lo = 1.42860682030941723212e-6f;
  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
  static constexpr float round_magic = 12582912.0f;
  // exp(hi) overflows, exp(lo) rounds to 0.
  static constexpr float hi = 89.0f;
  static constexpr float lo = -104.0f;
  // expm1(x) rounds to -1 below this.
  static constexpr float expm1_lo = -20.0f;
  static constexpr int degree = 8;
};

template <>
struct ExpConst<double> {
  static constexpr double log2e = 1.44269504088896340736;
  // ln2_hi has 32 trailing zero bits.
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double hi = 710.0;
  static constexpr double lo = -746.0;
  static constexpr double expm1_lo = -40.0;
  static constexpr int degree = 13;
};

// 1/k!, rounded once to double (a compile-time constant).
constexpr double inv_factorial(int k) {
  double f = 1.0;
  for (int i = 2; i <= k; ++i) f *= i;
  return 1.0 / f;
}

// Sum over k = 1..degree of r^k / k!, i.e. expm1(r) for |r| <= ln2/2,
// evaluated as r + r^2 * (1/2! + r * (1/3! + ...)).
template <class T>
inline Vec<T> expm1_poly(Vec<T> r) {
  using V = Vec<T>;
  constexpr int d = ExpConst<T>::degree;
  V p = V::broadcast(static_cast<T>(inv_factorial(d)));
  for (int k = d - 1; k >= 2; --k) p = fma(p, r, V::broadcast(static_cast<T>(inv_factorial(k))));
  return fma(r * r, p, r);
}

// Reduction shared by exp and expm1: x = n*ln2 + r with |r| <= ln2/2.
// x must be finite-clamped to |x| < 2^20 (or NaN). Returns r and n as an
// unsigned integer lane (two's complement).
template <class T>
inline Vec<T> reduce(Vec<T> x, typename Vec<T>::uraw& n) {
  using V = Vec<T>;
  using C = ExpConst<T>;
  const V magic = V::broadcast(C::round_magic);
  const V t = fma(x, V::broadcast(C::log2e), magic);
  const V nf = t - magic;
  n = t.bits() - magic.bits();
  V r = fma(nf, V::broadcast(-C::ln2_hi), x);
  r = fma(nf, V::broadcast(-C::ln2_lo), r);
  return r;
}

// 2^k for an integer lane k with a normal result (bias + k in [1, 2*bias]).
template <class T>
inline Vec<T> pow2(typename Vec<T>::uraw k) {
  using Tr = VecTraits<T>;
  using U = typename Tr::uint;
  return Vec<T>::from_bits((k + U(Tr::exponent_bias)) << Tr::mantissa_bits);
}

}  // namespace detail

// e^x per lane; max error 1 ulp (see top of file).
template <class T>
inline Vec<T> exp(Vec<T> x) {
  using V = Vec<T>;
  using C = detail::ExpConst<T>;
  using U = typename V::uint;
  const V xc = min(max(x, V::broadcast(C::lo)), V::broadcast(C::hi));
  typename V::uraw n;
  const V r = detail::reduce(xc, n);
  const V p = V::broadcast(T(1)) + detail::expm1_poly(r);
  // n = n1 + n2 with n1 = floor(n / 2); the offset keeps the shift on
  // non-negative numbers (|n| < 2048 here).
  const typename V::uraw n1 = ((n + U(2048)) >> 1) - U(1024);
  const typename V::uraw n2 = n - n1;
  const V y = p * detail::pow2<T>(n1) * detail::pow2<T>(n2);
  return select(isnan(x), x, y);
}

// tanh(x) per lane; max error 3 ulp, relative (accurate near 0).
template <class T>
inline Vec<T> tanh(Vec<T> x) {
  using V = Vec<T>;
  using C = detail::ExpConst<T>;
  const V a = abs(x);
  // y = -2a, clamped where expm1(y) is -1 to working precision.
  const V y = max(V::broadcast(T(-2)) * a, V::broadcast(C::expm1_lo));
  typename V::uraw n;
  const V r = detail::reduce(y, n);
  const V q = detail::expm1_poly(r);
  const V s = detail::pow2<T>(n);  // 2^n, n in [-58, 0]
  const V one = V::broadcast(T(1));
  const V t = fma(s, q, s - one);  // expm1(y); exactly q when n == 0
  const V th = -t / (V::broadcast(T(2)) + t);
  return select(isnan(x), x, copysign(th, x));
}

// 1 / (1 + e^-x) per lane; max error 3 ulp (relative, also for tiny results).
template <class T>
inline Vec<T> sigmoid(Vec<T> x) {
  using V = Vec<T>;
  const V e = exp(-abs(x));
  const V one = V::broadcast(T(1));
  const V num = select(x < V::zero(), e, one);
  const V y = num / (one + e);
  return select(isnan(x), x, y);
}

// Scalar versions: one lane of the vector code (bitwise identical results).
inline float exp(float x) { return exp(Vec<float>::broadcast(x)).lane(0); }
inline double exp(double x) { return exp(Vec<double>::broadcast(x)).lane(0); }
inline float tanh(float x) { return tanh(Vec<float>::broadcast(x)).lane(0); }
inline double tanh(double x) { return tanh(Vec<double>::broadcast(x)).lane(0); }
inline float sigmoid(float x) { return sigmoid(Vec<float>::broadcast(x)).lane(0); }
inline double sigmoid(double x) { return sigmoid(Vec<double>::broadcast(x)).lane(0); }

// Applies f (a functor taking and returning Vec<T>) to in[0..n) -> out[0..n).
// out == in (in place) is allowed; other overlaps are not. Touches exactly n
// elements of each array.
template <class T, class F>
inline void map(const T* in, T* out, std::int64_t n, F f) {
  using V = Vec<T>;
  std::int64_t i = 0;
  for (; i + V::lanes <= n; i += V::lanes) f(V::load(in + i)).store(out + i);
  if (i < n) {
    const int r = static_cast<int>(n - i);
    f(V::load_partial(in + i, r)).store_partial(out + i, r);
  }
}

// Array helpers: out[i] = f(in[i]) for i in [0, n); in == out allowed.
template <class T>
inline void exp_array(const T* in, T* out, std::int64_t n) {
  map(in, out, n, [](Vec<T> v) { return exp(v); });
}
template <class T>
inline void tanh_array(const T* in, T* out, std::int64_t n) {
  map(in, out, n, [](Vec<T> v) { return tanh(v); });
}
template <class T>
inline void sigmoid_array(const T* in, T* out, std::int64_t n) {
  map(in, out, n, [](Vec<T> v) { return sigmoid(v); });
}
// In place over a segment x[0..n), e.g. one gate block of a cell.
template <class T>
inline void tanh_inplace(T* x, std::int64_t n) {
  tanh_array(x, x, n);
}
template <class T>
inline void sigmoid_inplace(T* x, std::int64_t n) {
  sigmoid_array(x, x, n);
}

}  // namespace simd
FASTRNN_TARGET_NS_END
