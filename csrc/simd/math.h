// Vector and scalar exp, tanh, sigmoid for float and double, one copy per
// target (namespace fastrnn::<target>::simd). Include from *.simd.cpp only.
//
// Written from scratch: range reduction + polynomial, IEEE arithmetic only
// (no -ffast-math, no libm calls). The same code runs for every lane count, so
// the scalar functions (which evaluate one lane of the vector code) give
// bitwise the same results as the vector ones on the same target.
//
// Maximum error over the whole range, in ulp of the exact result (|computed -
// exact| / spacing of T at the exact value), measured against long double
// (docs/math.md; tests/test_math.py pins these bounds):
//
//                 with FMA (avx2, avx512)   without FMA (generic)
//                 float32    float64        float32    float64
//   exp           1          1              1          1
//   tanh          2          2.5            3          3
//   sigmoid       2          2              3          3
//   tanh_fast     3          3              3          3
//   sigmoid_fast  3          3              3          3
//
// Results below the smallest normal number (denormals) are computed, not
// flushed; their error is within 1 unit of the denormal spacing.
// max_error_ulp(fn, dtype) below returns these numbers for this target.
//
// Special values (all exact):
//   exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN, overflow -> +inf,
//   exp(x) = 0 below the smallest denormal (x < -103.98 float, -745.14 double).
//   tanh(+-0) = +-0, tanh(+-inf) = +-1, tanh(NaN) = NaN, tanh(x) = x for |x| < 2^-12
//   (float) / 2^-27 (double), where that is the correctly rounded value.
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
//             coefficients (degree 7 float, 13 double; truncation < 0.07 /
//             0.02 ulp), P as two Horner chains in r^2, 1 + r kept exact as
//             hi + lo; scale by 2^n as 2^n1 * 2^n2 (n1 + n2 = n; one vscalef on
//             AVX-512, same bits) so that overflow gives inf and denormal
//             results are rounded once.
//   tanh(x):  a = |x|; t = expm1(-2a) in (-1, 0] from the same reduction
//             (expm1 = 2^n q + (2^n - 1), q = r + r^2 P(r), exact for n = 0);
//             tanh(a) = -t / (2 + t), the denominator kept exact as hi + lo
//             and the quotient corrected once by its FMA residual (on FMA
//             targets only; without FMA it does not pay); sign restored from x. There is no
//             cancellation for small a: t ~ -2a and tanh(a) ~ a; below the
//             tiny threshold the result is a itself.
//   sigmoid(x): e = exp(-|x|) in (0, 1]; sigmoid(|x|) = 1 / (1 + e) and
//             sigmoid(-|x|) = e / (1 + e), so nothing overflows and small
//             results keep their relative accuracy; 1 + e kept exact as
//             hi + lo and the quotient corrected as for tanh.
#pragma once

#include <cstdint>

#include "runtime/target.h"
#include "simd/vec.h"

FASTRNN_TARGET_NS_BEGIN
namespace simd {

enum class MathFn : int { exp = 0, tanh = 1, sigmoid = 2, tanh_fast = 3, sigmoid_fast = 4 };
constexpr int num_math_fns = 5;

// Documented maximum error in ulp of this target's function for float
// (is_double false) or double; see the table at the top of this file.
constexpr double max_error_ulp(MathFn fn, bool is_double) {
  if (fn == MathFn::tanh_fast || fn == MathFn::sigmoid_fast) return 3.0;
#if defined(__FMA__)
  return fn == MathFn::exp ? 1.0 : fn == MathFn::tanh ? (is_double ? 2.5 : 2.0) : 2.0;
#else
  (void)is_double;
  return fn == MathFn::exp ? 1.0 : 3.0;
#endif
}

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
  // Below this |x|, tanh(x) rounds to x (x^2/3 < half an ulp).
  static constexpr float tanh_tiny = 0x1p-12f;
  static constexpr int degree = 7;
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
  static constexpr double tanh_tiny = 0x1p-27;
  static constexpr int degree = 13;
};

// 1/k!, rounded once to double (a compile-time constant).
constexpr double inv_factorial(int k) {
  double f = 1.0;
  for (int i = 2; i <= k; ++i) f *= i;
  return 1.0 / f;
}

// P(r) = sum over k = 2..degree of r^(k-2) / k!, so that expm1(r) =
// r + r^2 P(r) for |r| <= ln2/2 (Taylor, truncation < 0.07 ulp). Evaluated as
// even and odd parts in r^2: two independent Horner chains, half the latency.
template <class T>
FASTRNN_INLINE Vec<T> expm1_tail(Vec<T> r) {
  using V = Vec<T>;
  constexpr int d = ExpConst<T>::degree;
  const V r2 = r * r;
  // Coefficient k of P is 1/(k+2)!, k = 0..d-2.
  constexpr int top = d - 2;
  constexpr int top_even = top - (top % 2);
  constexpr int top_odd = top - 1 + (top % 2);
  V pe = V::broadcast(static_cast<T>(inv_factorial(top_even + 2)));
  for (int k = top_even - 2; k >= 0; k -= 2) {
    pe = fma(pe, r2, V::broadcast(static_cast<T>(inv_factorial(k + 2))));
  }
  V po = V::broadcast(static_cast<T>(inv_factorial(top_odd + 2)));
  for (int k = top_odd - 2; k >= 1; k -= 2) {
    po = fma(po, r2, V::broadcast(static_cast<T>(inv_factorial(k + 2))));
  }
  return fma(po, r, pe);
}

// expm1(r) = r + r^2 P(r) for |r| <= ln2/2.
template <class T>
FASTRNN_INLINE Vec<T> expm1_poly(Vec<T> r) {
  return fma(r * r, expm1_tail(r), r);
}

// Reduction shared by exp and expm1: x = n*ln2 + r with |r| <= ln2/2.
// x must be finite-clamped to |x| < 2^20 (or NaN). Returns r and n as an
// unsigned integer lane (two's complement).
template <class T>
FASTRNN_INLINE Vec<T> reduce(Vec<T> x, typename Vec<T>::uraw& n, Vec<T>& nf) {
  using V = Vec<T>;
  using C = ExpConst<T>;
  const V magic = V::broadcast(C::round_magic);
  const V t = fma(x, V::broadcast(C::log2e), magic);
  nf = t - magic;
  n = t.bits() - magic.bits();
  V r = fma(nf, V::broadcast(-C::ln2_hi), x);
  r = fma(nf, V::broadcast(-C::ln2_lo), r);
  return r;
}
template <class T>
FASTRNN_INLINE Vec<T> reduce(Vec<T> x, typename Vec<T>::uraw& n) {
  Vec<T> nf;
  return reduce(x, n, nf);
}

// 2^k for an integer lane k with a normal result (bias + k in [1, 2*bias]).
template <class T>
FASTRNN_INLINE Vec<T> pow2(typename Vec<T>::uraw k) {
  using Tr = VecTraits<T>;
  using U = typename Tr::uint;
  return Vec<T>::from_bits((k + U(Tr::exponent_bias)) << Tr::mantissa_bits);
}

// 1/d for d in [1, 2], relative error below 2^-27 (float) / 2^-55 (double): with
// AVX-512, the 14-bit hardware estimate refined by Newton steps r' = r (2 - d r)
// (one for float, two for double), several times the throughput of a division;
// elsewhere a division.
template <class T>
FASTRNN_INLINE Vec<T> recip_1_2(Vec<T> d) {
  using V = Vec<T>;
#if defined(__AVX512F__) && FASTRNN_SIMD_BYTES == 64
  const V two = V::broadcast(T(2));
  V r;
  if constexpr (sizeof(T) == 4) {
    r = V{typename V::raw(_mm512_rcp14_ps(__m512(d.v)))};
  } else {
    r = V{typename V::raw(_mm512_rcp14_pd(__m512d(d.v)))};
    r = r * fma(-d, r, two);
  }
  return r * fma(-d, r, two);
#else
  return V::broadcast(T(1)) / d;
#endif
}

// num / (d_hi + d_lo) for |d_lo| <= ulp(d_hi) / 2, d_hi in [1, 2]: 1/d_hi
// (recip_1_2), then one correction step with the residual num - q (d_hi + d_lo),
// which FMA computes almost exactly.
template <class T>
FASTRNN_INLINE Vec<T> div_hi_lo(Vec<T> num, Vec<T> d_hi, Vec<T> d_lo) {
  const Vec<T> rcp = recip_1_2(d_hi);
  const Vec<T> q = num * rcp;
  const Vec<T> res = fma(-q, d_hi, num) - q * d_lo;
  return fma(res, rcp, q);
}

// e^x for x already clamped to [lo, hi] (a NaN x gives some NaN or number: callers
// that can see NaN select it themselves).
template <class T>
FASTRNN_INLINE Vec<T> exp_clamped(Vec<T> xc) {
  using V = Vec<T>;
  using U = typename V::uint;
  typename V::uraw n;
  V nf;
  const V r = reduce(xc, n, nf);
  // e^r = 1 + r + r^2 P(r). 1 + r is split into hi + lo exactly (Fast2Sum,
  // |1| >= |r|), so only the final addition rounds at the scale of 1.
  const V one = V::broadcast(T(1));
  const V hi = one + r;
  const V lo = (one - hi) + r;
  const V p = hi + fma(r * r, expm1_tail(r), lo);
#if defined(__AVX512F__) && FASTRNN_SIMD_BYTES == 64
  // p * 2^n rounded once (vscalef): the same bits as the two steps below, in one
  // instruction.
  (void)n;
  if constexpr (sizeof(T) == 4) {
    return V{typename V::raw(_mm512_scalef_ps(__m512(p.v), __m512(nf.v)))};
  } else {
    return V{typename V::raw(_mm512_scalef_pd(__m512d(p.v), __m512d(nf.v)))};
  }
#else
  (void)nf;
  // n = n1 + n2 with n1 = floor(n / 2); the offset keeps the shift on
  // non-negative numbers (|n| < 2048 here).
  const typename V::uraw n1 = ((n + U(2048)) >> 1) - U(1024);
  const typename V::uraw n2 = n - n1;
  return p * pow2<T>(n1) * pow2<T>(n2);
#endif
}

}  // namespace detail

// e^x per lane; max error 1 ulp (see top of file).
template <class T>
FASTRNN_INLINE Vec<T> exp(Vec<T> x) {
  using V = Vec<T>;
  using C = detail::ExpConst<T>;
  const V xc = min(max(x, V::broadcast(C::lo)), V::broadcast(C::hi));
  return select(isnan(x), x, detail::exp_clamped(xc));
}

namespace detail {

// tanh; Accurate selects the corrected division (see div_hi_lo). Without
// FMA the residual is not exact and the correction does not pay (measured:
// no gain for sigmoid, a loss for tanh), so there both variants are the same.
template <bool Accurate, class T>
FASTRNN_INLINE Vec<T> tanh_impl(Vec<T> x) {
  using V = Vec<T>;
  using C = ExpConst<T>;
  const V a = abs(x);
  // y = -2a, clamped where expm1(y) is -1 to working precision.
  const V y = max(V::broadcast(T(-2)) * a, V::broadcast(C::expm1_lo));
  typename V::uraw n;
  const V r = reduce(y, n);
  const V q = expm1_poly(r);
  const V s = pow2<T>(n);  // 2^n, n in [-58, 0]
  const V one = V::broadcast(T(1));
  // tanh(a) = N / D with N = -expm1(y) = 1 - s - s q and D = 2 + expm1(y) =
  // 1 + s + s q. D is kept as D_hi + D_lo exactly (s q is an exact product).
  const V num = fma(-s, q, one - s);
  const V a_hi = one + s;
  const V d_hi = fma(s, q, a_hi);
  V th;
  if (Accurate && has_fma) {
    const V a_lo = (one - a_hi) + s;
    const V d_lo = fma(s, q, a_hi - d_hi) + a_lo;
    th = div_hi_lo(num, d_hi, d_lo);
  } else {
    th = num / d_hi;
  }
  th = select(a < V::broadcast(C::tanh_tiny), a, th);
  return select(isnan(x), x, copysign(th, x));
}

template <bool Accurate, class T>
FASTRNN_INLINE Vec<T> sigmoid_impl(Vec<T> x) {
  using V = Vec<T>;
  // exp(-|x|) <= 1 needs no upper clamp, and a NaN x is selected below.
  const V e = exp_clamped(max(-abs(x), V::broadcast(ExpConst<T>::lo)));
  const V one = V::broadcast(T(1));
  const V num = select(x < V::zero(), e, one);
  const V d_hi = one + e;
  V y;
  if (Accurate && has_fma) {
    const V d_lo = (one - d_hi) + e;  // exact: 1 + e = d_hi + d_lo
    y = div_hi_lo(num, d_hi, d_lo);
  } else {
    y = num / d_hi;
  }
  return select(isnan(x), x, y);
}

}  // namespace detail

// tanh(x) per lane; max error max_error_ulp(MathFn::tanh, ...), relative
// (accurate near 0).
template <class T>
FASTRNN_INLINE Vec<T> tanh(Vec<T> x) {
  return detail::tanh_impl<true>(x);
}

// 1 / (1 + e^-x) per lane; max error max_error_ulp(MathFn::sigmoid, ...),
// relative (also for tiny results).
template <class T>
FASTRNN_INLINE Vec<T> sigmoid(Vec<T> x) {
  return detail::sigmoid_impl<true>(x);
}

// The same without the division correction: about 25% faster, max error
// max_error_ulp(MathFn::tanh_fast / sigmoid_fast, ...) = 3 ulp on every target.
// Same special values and tiny-argument behaviour as tanh / sigmoid.
template <class T>
FASTRNN_INLINE Vec<T> tanh_fast(Vec<T> x) {
  return detail::tanh_impl<false>(x);
}
template <class T>
FASTRNN_INLINE Vec<T> sigmoid_fast(Vec<T> x) {
  return detail::sigmoid_impl<false>(x);
}

// Scalar versions: one lane of the vector code (bitwise identical results).
inline float exp(float x) { return exp(Vec<float>::broadcast(x)).lane(0); }
inline double exp(double x) { return exp(Vec<double>::broadcast(x)).lane(0); }
inline float tanh(float x) { return tanh(Vec<float>::broadcast(x)).lane(0); }
inline double tanh(double x) { return tanh(Vec<double>::broadcast(x)).lane(0); }
inline float sigmoid(float x) { return sigmoid(Vec<float>::broadcast(x)).lane(0); }
inline double sigmoid(double x) { return sigmoid(Vec<double>::broadcast(x)).lane(0); }
inline float tanh_fast(float x) { return tanh_fast(Vec<float>::broadcast(x)).lane(0); }
inline double tanh_fast(double x) { return tanh_fast(Vec<double>::broadcast(x)).lane(0); }
inline float sigmoid_fast(float x) { return sigmoid_fast(Vec<float>::broadcast(x)).lane(0); }
inline double sigmoid_fast(double x) { return sigmoid_fast(Vec<double>::broadcast(x)).lane(0); }

// Runs body(i, ld, st) for i = 0, lanes, 2*lanes, ... < n: whole vectors, then one
// partial vector for the tail. ld(p) / st(p, v) load and store the lanes of the current
// vector at p (the tail's reads and writes touch exactly its n - i elements), so a body
// written once serves both, and each element gets the same operations wherever it sits.
template <class T, class Body>
FASTRNN_INLINE void for_vectors(std::int64_t n, Body body) {
  using V = Vec<T>;
  std::int64_t i = 0;
  for (; i + V::lanes <= n; i += V::lanes) {
    body(
        i, [](const T* p) { return V::load(p); }, [](T* p, V v) { v.store(p); });
  }
  if (i < n) {
    const int r = static_cast<int>(n - i);
    body(
        i, [r](const T* p) { return V::load_partial(p, r); },
        [r](T* p, V v) { v.store_partial(p, r); });
  }
}

// Applies f (a functor taking and returning Vec<T>) to in[0..n) -> out[0..n).
// out == in (in place) is allowed; other overlaps are not. Touches exactly n
// elements of each array.
template <class T, class F>
inline void map(const T* in, T* out, std::int64_t n, F f) {
  for_vectors<T>(n, [&](std::int64_t i, auto ld, auto st) { st(out + i, f(ld(in + i))); });
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
template <class T>
inline void tanh_fast_array(const T* in, T* out, std::int64_t n) {
  map(in, out, n, [](Vec<T> v) { return tanh_fast(v); });
}
template <class T>
inline void sigmoid_fast_array(const T* in, T* out, std::int64_t n) {
  map(in, out, n, [](Vec<T> v) { return sigmoid_fast(v); });
}

}  // namespace simd
FASTRNN_TARGET_NS_END
