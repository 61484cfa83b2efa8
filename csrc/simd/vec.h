// A small portable SIMD vector layer, one copy per target.
//
// Include this header from per-target code (*.simd.cpp) only: everything is
// defined inside FASTRNN_TARGET_NS (namespace fastrnn::<target>::simd), so the
// AVX-512, AVX2 and baseline copies never share a symbol.
//
//   Vec<T>        T = float or double; the widest vector the target uses:
//                   avx512: 16 floats / 8 doubles (64 bytes)
//                   avx2  :  8 floats / 4 doubles (32 bytes)
//                   generic: 4 floats / 2 doubles (16 bytes; SSE2 on x86-64,
//                            the compiler's generic vectors elsewhere)
//   Mask<T>       per-lane true/false, the result of comparisons.
//
// Built on GCC/Clang vector extensions; intrinsics only where they matter
// (masked partial loads/stores). All loads and stores are unaligned. Partial
// loads/stores touch exactly the first r elements of memory: masked on
// AVX-512 and AVX2, through a small stack buffer elsewhere.
//
// Typical loop over n elements (the tail handled with partial access):
//
//   using V = simd::Vec<float>;
//   std::int64_t i = 0;
//   for (; i + V::lanes <= n; i += V::lanes) simd::tanh(V::load(x + i)).store(y + i);
//   if (i < n) {
//     int r = static_cast<int>(n - i);
//     simd::tanh(V::load_partial(x + i, r)).store_partial(y + i, r);
//   }
//
// Arithmetic follows IEEE-754 lane by lane (no -ffast-math); fma() is one
// rounding on targets with FMA (avx2, avx512) and two roundings on generic.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/target.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FASTRNN_SIMD_BYTES 64
#elif defined(__AVX2__)
#define FASTRNN_SIMD_BYTES 32
#else
#define FASTRNN_SIMD_BYTES 16
#endif

FASTRNN_TARGET_NS_BEGIN
namespace simd {

// True when fma() is a fused multiply-add (one rounding) on this target.
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
constexpr bool has_fma = true;
#else
constexpr bool has_fma = false;
#endif

// Raw vector types: element type, same-width signed integers (comparison
// results) and unsigned integers (bit manipulation).
template <class T>
struct VecTraits;

template <>
struct VecTraits<float> {
  typedef float raw __attribute__((vector_size(FASTRNN_SIMD_BYTES)));
  typedef std::int32_t sraw __attribute__((vector_size(FASTRNN_SIMD_BYTES)));
  typedef std::uint32_t uraw __attribute__((vector_size(FASTRNN_SIMD_BYTES)));
  using uint = std::uint32_t;
  static constexpr int mantissa_bits = 23;
  static constexpr int exponent_bias = 127;
};

template <>
struct VecTraits<double> {
  typedef double raw __attribute__((vector_size(FASTRNN_SIMD_BYTES)));
  typedef std::int64_t sraw __attribute__((vector_size(FASTRNN_SIMD_BYTES)));
  typedef std::uint64_t uraw __attribute__((vector_size(FASTRNN_SIMD_BYTES)));
  using uint = std::uint64_t;
  static constexpr int mantissa_bits = 52;
  static constexpr int exponent_bias = 1023;
};

// Per-lane boolean: every bit of a lane set (true) or clear (false).
template <class T>
struct Mask {
  typename VecTraits<T>::sraw m;

  friend Mask operator&(Mask a, Mask b) { return {a.m & b.m}; }
  friend Mask operator|(Mask a, Mask b) { return {a.m | b.m}; }
  friend Mask operator~(Mask a) { return {~a.m}; }
};

template <class T>
struct Vec {
  using Traits = VecTraits<T>;
  using raw = typename Traits::raw;
  using uraw = typename Traits::uraw;
  using uint = typename Traits::uint;
  using value_type = T;
  // Number of T lanes in one vector.
  static constexpr int lanes = FASTRNN_SIMD_BYTES / static_cast<int>(sizeof(T));

  raw v;

  // All lanes zero.
  static Vec zero() { return {raw{}}; }
  // All lanes equal to x.
  static Vec broadcast(T x) { return {x - raw{}}; }
  // Lanes p[0 .. lanes-1]; p needs no particular alignment.
  static Vec load(const T* p) {
    Vec r;
    std::memcpy(&r.v, p, sizeof(raw));
    return r;
  }
  // Lanes p[0 .. r-1], the other lanes zero; reads exactly r elements
  // (0 <= r <= lanes), so p + r may be the end of an allocation.
  static Vec load_partial(const T* p, int r);
  // Writes lanes to p[0 .. lanes-1] (unaligned).
  void store(T* p) const { std::memcpy(p, &v, sizeof(raw)); }
  // Writes the first r lanes to p[0 .. r-1] and nothing else (0 <= r <= lanes).
  void store_partial(T* p, int r) const;
  // Writes lanes to p[0 .. lanes-1], p aligned to the vector size, with a non-temporal
  // store on x86: the line goes to memory without being read into the cache first (for
  // data read much later). Call stream_fence() before another thread reads it.
  void stream(T* p) const;
  // Lane i (0 <= i < lanes), for tests and scalar wrappers.
  T lane(int i) const { return v[i]; }

  // Bit pattern of each lane as an unsigned integer, and back.
  uraw bits() const { return (uraw)v; }  // vector cast: reinterprets the bits
  static Vec from_bits(uraw u) { return {(raw)u}; }

  friend Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
  friend Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
  friend Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
  friend Vec operator/(Vec a, Vec b) { return {a.v / b.v}; }
  friend Vec operator-(Vec a) { return {-a.v}; }
  // With a scalar on either side (broadcast to every lane).
  friend Vec operator+(Vec a, T b) { return {a.v + b}; }
  friend Vec operator-(Vec a, T b) { return {a.v - b}; }
  friend Vec operator*(Vec a, T b) { return {a.v * b}; }
  friend Vec operator/(Vec a, T b) { return {a.v / b}; }
  friend Vec operator+(T a, Vec b) { return {a + b.v}; }
  friend Vec operator-(T a, Vec b) { return {a - b.v}; }
  friend Vec operator*(T a, Vec b) { return {a * b.v}; }
  friend Vec operator/(T a, Vec b) { return {a / b.v}; }
  Vec& operator+=(Vec b) { return v += b.v, *this; }
  Vec& operator-=(Vec b) { return v -= b.v, *this; }
  Vec& operator*=(Vec b) { return v *= b.v, *this; }
  Vec& operator/=(Vec b) { return v /= b.v, *this; }

  // Comparisons (IEEE: any comparison with NaN is false, except !=).
  friend Mask<T> operator<(Vec a, Vec b) { return {a.v < b.v}; }
  friend Mask<T> operator<=(Vec a, Vec b) { return {a.v <= b.v}; }
  friend Mask<T> operator>(Vec a, Vec b) { return {a.v > b.v}; }
  friend Mask<T> operator>=(Vec a, Vec b) { return {a.v >= b.v}; }
  friend Mask<T> operator==(Vec a, Vec b) { return {a.v == b.v}; }
  friend Mask<T> operator!=(Vec a, Vec b) { return {a.v != b.v}; }
};

// Per lane: m ? a : b.
template <class T>
inline Vec<T> select(Mask<T> m, Vec<T> a, Vec<T> b) {
  return {m.m ? a.v : b.v};
}

// a * b + c; fused (one rounding) when the target has FMA.
template <class T>
inline Vec<T> fma(Vec<T> a, Vec<T> b, Vec<T> c) {
  return {a.v * b.v + c.v};  // contracted to FMA by -ffp-contract=fast on FMA targets
}

// x86's min and max instructions have exactly the semantics of min() and max() below
// (the second operand when either is NaN, or when both are zeros), but the compiler
// does not see that through the vector ternary and emits a compare and a blend.
#if defined(__AVX512F__) && FASTRNN_SIMD_BYTES == 64
#define FASTRNN_MM(name) _mm512_##name
using MmPs = __m512;
using MmPd = __m512d;
#elif defined(__AVX__) && FASTRNN_SIMD_BYTES == 32
#define FASTRNN_MM(name) _mm256_##name
using MmPs = __m256;
using MmPd = __m256d;
#elif defined(__SSE2__) && FASTRNN_SIMD_BYTES == 16
#define FASTRNN_MM(name) _mm_##name
using MmPs = __m128;
using MmPd = __m128d;
#endif

// Per lane a < b ? a : b (b when either is NaN).
template <class T>
inline Vec<T> min(Vec<T> a, Vec<T> b) {
  using R = typename Vec<T>::raw;
#if defined(FASTRNN_MM)
  if constexpr (sizeof(T) == 4) {
    return {R(FASTRNN_MM(min_ps)(MmPs(a.v), MmPs(b.v)))};
  } else {
    return {R(FASTRNN_MM(min_pd)(MmPd(a.v), MmPd(b.v)))};
  }
#else
  return {R(a.v < b.v ? a.v : b.v)};
#endif
}

// Per lane a > b ? a : b (b when either is NaN). So max(zero, x) propagates a
// NaN x (a NaN-preserving relu) while max(x, zero) turns it into 0.
template <class T>
inline Vec<T> max(Vec<T> a, Vec<T> b) {
  using R = typename Vec<T>::raw;
#if defined(FASTRNN_MM)
  if constexpr (sizeof(T) == 4) {
    return {R(FASTRNN_MM(max_ps)(MmPs(a.v), MmPs(b.v)))};
  } else {
    return {R(FASTRNN_MM(max_pd)(MmPd(a.v), MmPd(b.v)))};
  }
#else
  return {R(a.v > b.v ? a.v : b.v)};
#endif
}
#undef FASTRNN_MM

// |a|: clears the sign bit (also of NaN and -0).
template <class T>
inline Vec<T> abs(Vec<T> a) {
  using U = typename Vec<T>::uint;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  return Vec<T>::from_bits(a.bits() & ~sign);
}

// Magnitude of a with the sign of s.
template <class T>
inline Vec<T> copysign(Vec<T> a, Vec<T> s) {
  using U = typename Vec<T>::uint;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  return Vec<T>::from_bits((a.bits() & ~sign) | (s.bits() & sign));
}

// True in lanes holding NaN.
template <class T>
inline Mask<T> isnan(Vec<T> a) {
  return {a.v != a.v};
}

namespace detail {
// Sum of the lanes of a vector of `Bytes` bytes: its upper half added to its lower half,
// down to two lanes. The halves are register extracts (no trip through memory).
template <class T, int Bytes>
struct LaneSum {
  typedef T type __attribute__((vector_size(Bytes)));
  static T run(type v) {
    if constexpr (Bytes == 2 * static_cast<int>(sizeof(T))) {
      return v[0] + v[1];
    } else {
      typename LaneSum<T, Bytes / 2>::type lo, hi;
      std::memcpy(&lo, &v, sizeof lo);
      std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
      return LaneSum<T, Bytes / 2>::run(lo + hi);
    }
  }
};
}  // namespace detail

// Sum of all lanes, pairwise (upper half onto lower half until one lane is left): a fixed
// order per target, log2(lanes) adds deep instead of a chain of lanes - 1.
template <class T>
inline T reduce_add(Vec<T> a) {
  return detail::LaneSum<T, static_cast<int>(sizeof(a.v))>::run(a.v);
}

// ---------------------------------------------------------------------------
// Non-temporal stores.
// ---------------------------------------------------------------------------
// Through the integer form of the instruction: one store for float and double alike.
template <class T>
inline void Vec<T>::stream(T* p) const {
#if defined(__AVX512F__)
  _mm512_stream_si512(reinterpret_cast<__m512i*>(p), __m512i(v));
#elif defined(__AVX__)
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), __m256i(v));
#elif defined(__SSE2__)
  _mm_stream_si128(reinterpret_cast<__m128i*>(p), __m128i(v));
#else
  store(p);
#endif
}

// Orders this thread's earlier stream() stores before its later stores.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// ---------------------------------------------------------------------------
// Partial loads and stores.
// ---------------------------------------------------------------------------
#if defined(__AVX512F__)

template <>
inline Vec<float> Vec<float>::load_partial(const float* p, int r) {
  const __mmask16 k = static_cast<__mmask16>((1u << r) - 1u);
  return {raw(_mm512_maskz_loadu_ps(k, p))};
}
template <>
inline void Vec<float>::store_partial(float* p, int r) const {
  const __mmask16 k = static_cast<__mmask16>((1u << r) - 1u);
  _mm512_mask_storeu_ps(p, k, __m512(v));
}
template <>
inline Vec<double> Vec<double>::load_partial(const double* p, int r) {
  const __mmask8 k = static_cast<__mmask8>((1u << r) - 1u);
  return {raw(_mm512_maskz_loadu_pd(k, p))};
}
template <>
inline void Vec<double>::store_partial(double* p, int r) const {
  const __mmask8 k = static_cast<__mmask8>((1u << r) - 1u);
  _mm512_mask_storeu_pd(p, k, __m512d(v));
}

#elif defined(__AVX2__)

namespace detail {
// Lanes i < r all ones, others zero (the sign bit selects in maskload/maskstore).
inline __m256i first_lanes32(int r) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), iota);
}
inline __m256i first_lanes64(int r) {
  const __m256i iota = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(r), iota);
}
}  // namespace detail

template <>
inline Vec<float> Vec<float>::load_partial(const float* p, int r) {
  return {raw(_mm256_maskload_ps(p, detail::first_lanes32(r)))};
}
template <>
inline void Vec<float>::store_partial(float* p, int r) const {
  _mm256_maskstore_ps(p, detail::first_lanes32(r), __m256(v));
}
template <>
inline Vec<double> Vec<double>::load_partial(const double* p, int r) {
  return {raw(_mm256_maskload_pd(p, detail::first_lanes64(r)))};
}
template <>
inline void Vec<double>::store_partial(double* p, int r) const {
  _mm256_maskstore_pd(p, detail::first_lanes64(r), __m256d(v));
}

#else

template <class T>
inline Vec<T> Vec<T>::load_partial(const T* p, int r) {
  T buf[lanes] = {};
  for (int i = 0; i < r; ++i) buf[i] = p[i];
  return load(buf);
}
template <class T>
inline void Vec<T>::store_partial(T* p, int r) const {
  T buf[lanes];
  store(buf);
  for (int i = 0; i < r; ++i) p[i] = buf[i];
}

#endif

}  // namespace simd
FASTRNN_TARGET_NS_END
