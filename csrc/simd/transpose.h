// Square block transposes in registers, one copy per target (namespace
// fastrnn::<target>::simd). Include from *.simd.cpp only.
//
//   transpose_block<T>()  the block edge B: 8 floats / 4 doubles on targets with AVX
//                         (avx2, avx512; 256-bit registers), 1 elsewhere (no block
//                         transpose: callers take their element-by-element path).
//   transpose(src, lds, dst, ldd)
//                         dst[c*ldd + r] = src[r*lds + c] for r, c < B: B row loads,
//                         3*B (float) / 2*B (double) shuffles, B row stores.
//   transpose_rect(src, lds, rows, cols, dst, ldd)
//                         the same for r < rows, c < cols: B x B blocks through
//                         transpose() (the last row block overlapping when B does not
//                         divide rows), the edges element by element.
//
// Packing a row-major weight matrix into column panels (the sequence kernels' W_ih and
// W_hh, once per call) element by element ran at ~1.5 ns per element: one scalar load
// and one store each, loads of 16 rows in turn waiting on L3. Whole blocks load B rows
// at once and store whole vectors.
#pragma once

#include <cstdint>

#include "runtime/target.h"
#include "simd/vec.h"

FASTRNN_TARGET_NS_BEGIN
namespace simd {

template <class T>
constexpr int transpose_block() {
#if defined(__AVX__)
  return 32 / static_cast<int>(sizeof(T));
#else
  return 1;
#endif
}

#if defined(__AVX__)
inline void transpose(const float* src, std::int64_t lds, float* dst, std::int64_t ldd) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  // Pairs of rows interleaved, then pairs of pairs: u[q] (q < 4) holds columns q and
  // q + 4 of rows 0-3 in its two halves, u[q + 4] the same of rows 4-7.
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    const int a = 4 * h;
    u[a + 0] = _mm256_shuffle_ps(t[a + 0], t[a + 2], 0x44);
    u[a + 1] = _mm256_shuffle_ps(t[a + 0], t[a + 2], 0xEE);
    u[a + 2] = _mm256_shuffle_ps(t[a + 1], t[a + 3], 0x44);
    u[a + 3] = _mm256_shuffle_ps(t[a + 1], t[a + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_ps(dst + q * ldd, _mm256_permute2f128_ps(u[q], u[q + 4], 0x20));
    _mm256_storeu_ps(dst + (q + 4) * ldd, _mm256_permute2f128_ps(u[q], u[q + 4], 0x31));
  }
}

inline void transpose(const double* src, std::int64_t lds, double* dst, std::int64_t ldd) {
  __m256d r[4];
  for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(src + i * lds);
  // t[0] = columns 0 and 2 of rows 0-1, t[1] = columns 1 and 3; t[2], t[3] of rows 2-3.
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]);
  const __m256d t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]);
  const __m256d t3 = _mm256_unpackhi_pd(r[2], r[3]);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#else
template <class T>
inline void transpose(const T* src, std::int64_t, T* dst, std::int64_t) {
  dst[0] = src[0];
}
#endif

// dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols. With at least B rows, all of
// them go in B x B blocks: when B does not divide `rows`, the last row block overlaps the
// one before (the shared rows are written twice, with the same values); each row's lines
// are fetched four ahead (the loads were the stalls when packing a GEMM's A slivers).
// Fewer rows than B (all of them without AVX) go element by element in 16-column tiles,
// so that both the rows read and the columns written stay in L1 (one row at a time
// writes with a stride of ldd across all of dst, several times slower for long rows).
template <class T>
inline void transpose_rect(const T* src, std::int64_t lds, std::int64_t rows, std::int64_t cols,
                           T* dst, std::int64_t ldd) {
  constexpr int B = transpose_block<T>();
  constexpr int kLine = 64 / static_cast<int>(sizeof(T));
  if (B > 1 && rows >= B) {
    const std::int64_t cb = cols / B * B;
    for (std::int64_t r0 = 0;; r0 += B) {
      const std::int64_t r = r0 + B <= rows ? r0 : rows - B;
      const T* s = src + r * lds;
      for (std::int64_t c = 0; c < cb; c += B) {
        if (c % kLine == 0) {
          for (int i = 0; i < B; ++i) __builtin_prefetch(s + i * lds + c + 4 * kLine, 0, 3);
        }
        transpose(s + c, lds, dst + c * ldd + r, ldd);
      }
      for (std::int64_t c = cb; c < cols; ++c)
        for (int i = 0; i < B; ++i) dst[c * ldd + r + i] = s[i * lds + c];
      if (r + B >= rows) return;
    }
  }
  constexpr std::int64_t kTile = 16;
  for (std::int64_t c0 = 0; c0 < cols; c0 += kTile) {
    const std::int64_t c1 = c0 + kTile < cols ? c0 + kTile : cols;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = c0; c < c1; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}

}  // namespace simd
FASTRNN_TARGET_NS_END
