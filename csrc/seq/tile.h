// Register-tiled micro-kernel for the sequence kernels' small products:
// C (mr x CV*L) = A (mr x K) * B (K x CV*L), where L is the vector width of
// this target and B is a packed panel (row stride ldb, a multiple of L).
// Sums over K run in one fixed order that depends only on (mr, CV, K), never on
// the thread count. Lives in namespace fastrnn::<target>.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime/target.h"

FASTRNN_TARGET_NS_BEGIN
namespace tile {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kVecRegs = 32;
constexpr int kAccRegs = 24;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kVecRegs = 16;
constexpr int kAccRegs = 12;
#else
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 16;
constexpr int kAccRegs = 12;
#endif

template <class T>
constexpr int lanes() {
  return kVecBytes / static_cast<int>(sizeof(T));
}

// Rows per micro-tile for a tile CV vectors wide: at most kAccRegs accumulators, and
// they, the CV weight vectors of one k and the broadcast row value must all fit in
// registers. (With 16 registers a 3 x 4 tile needs 17: its accumulators spilled to
// the stack on every k, and the AVX2 LSTM forward ran at half speed.)
constexpr int max_rows(int cv) {
  const int by_acc = kAccRegs / cv;
  const int by_regs = (kVecRegs - 1 - cv) / cv;
  const int r = by_acc < by_regs ? by_acc : by_regs;
  return r < 1 ? 1 : (r > 8 ? 8 : r);
}

template <class T>
struct V {
  typedef T type __attribute__((vector_size(kVecBytes)));
};

template <class T>
inline typename V<T>::type load(const T* p) {
  typename V<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class T>
inline void store(T* p, typename V<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// C[r*ldc + j] = sum_k A[r*lda + k] * B[k*ldb + j], r < MR, j < CV*L.
// With few accumulators the K loop keeps KS partial sums (k mod KS), added at
// the end in a fixed order, so the FMA latency chain is not the limit. KS is
// 4/(MR*CV) when KSF = 0 (1 whenever MR*CV >= 4), and KSF otherwise.
// The partial sums of a one-row product whose sum must not depend on the tile width.
constexpr int one_row_sums() {
  constexpr int by_regs = kAccRegs / 4;  // up to 4 vectors per partial sum
  return by_regs < 1 ? 1 : (by_regs > 4 ? 4 : by_regs);
}

// pf (may be null): a B panel of the same shape to bring into L2 meanwhile (the next K
// slice, or the next block's weights), one cache line per vector per k.
template <class T, int MR, int CV, int KSF>
inline void kernel(std::int64_t K, const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T* C,
                   std::int64_t ldc, bool accumulate, const T* pf) {
  using Vt = typename V<T>::type;
  constexpr int L = lanes<T>();
  constexpr int KS = KSF > 0 ? KSF : (MR * CV >= 4 ? 1 : 4 / (MR * CV));
  Vt acc[KS][MR][CV];
  for (int s = 0; s < KS; ++s)
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < CV; ++c) acc[s][r][c] = Vt{};
  std::int64_t k = 0;
  // The K loop twice unrolled (the loop counter and pointer updates otherwise take issue
  // slots from the FMAs), with the prefetch test hoisted out of it.
  auto k_loop = [&](auto prefetch) {
#pragma GCC unroll 2
    for (; k + KS <= K; k += KS) {
#pragma GCC unroll 4
      for (int s = 0; s < KS; ++s) {
        const T* b = B + (k + s) * ldb;
        if constexpr (decltype(prefetch)::value) {
#pragma GCC unroll 4
          for (int c = 0; c < CV; ++c) __builtin_prefetch(pf + (k + s) * ldb + c * L, 0, 2);
        }
        Vt bv[CV];
#pragma GCC unroll 4
        for (int c = 0; c < CV; ++c) bv[c] = load(b + c * L);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const T a = A[r * lda + k + s];
#pragma GCC unroll 4
          for (int c = 0; c < CV; ++c) acc[s][r][c] += bv[c] * a;
        }
      }
    }
  };
  if (pf != nullptr) {
    k_loop(std::true_type{});
  } else {
    k_loop(std::false_type{});
  }
  for (; k < K; ++k) {
    const T* b = B + k * ldb;
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * lda + k];
      for (int c = 0; c < CV; ++c) acc[0][r][c] += load(b + c * L) * a;
    }
  }
  for (int s = 1; s < KS; ++s)
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < CV; ++c) acc[0][r][c] += acc[s][r][c];
  if (accumulate) {
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < CV; ++c) acc[0][r][c] = load(C + r * ldc + c * L) + acc[0][r][c];
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < CV; ++c) store(C + r * ldc + c * L, acc[0][r][c]);
}

template <class T, int CV, int F>
inline void rows(int mr, std::int64_t K, const T* A, std::int64_t lda, const T* B, std::int64_t ldb,
                 T* C, std::int64_t ldc, bool acc, const T* pf) {
  switch (mr) {
    case 1:
      kernel<T, 1, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 2:
      kernel<T, 2, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 3:
      kernel<T, 3, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 4:
      kernel<T, 4, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 5:
      kernel<T, 5, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 6:
      kernel<T, 6, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 7:
      kernel<T, 7, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    default:
      kernel<T, 8, CV, F>(K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
  }
}

// One micro-tile of mr <= max_rows(cv) rows and cv (1..4) vectors; with acc,
// C += A*B (C + the new sum, in that order) instead of C = A*B. KSF as for kernel.
template <class T, int KSF = 0>
inline void run(int cv, int mr, std::int64_t K, const T* A, std::int64_t lda, const T* B,
                std::int64_t ldb, T* C, std::int64_t ldc, bool acc = false,
                const T* pf = nullptr) {
  switch (cv) {
    case 1:
      rows<T, 1, KSF>(mr, K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 2:
      rows<T, 2, KSF>(mr, K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    case 3:
      rows<T, 3, KSF>(mr, K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
    default:
      rows<T, 4, KSF>(mr, K, A, lda, B, ldb, C, ldc, acc, pf);
      break;
  }
}

// One row of cv vectors with KS partial sums (a switch over cv only: run<T, KS> would build
// the kernel for every row count).
template <class T, int KS>
inline void run_row(int cv, std::int64_t K, const T* A, const T* B, std::int64_t ldb, T* C,
                    bool acc) {
  switch (cv) {
    case 1:
      kernel<T, 1, 1, KS>(K, A, 0, B, ldb, C, 0, acc, nullptr);
      break;
    case 2:
      kernel<T, 1, 2, KS>(K, A, 0, B, ldb, C, 0, acc, nullptr);
      break;
    case 3:
      kernel<T, 1, 3, KS>(K, A, 0, B, ldb, C, 0, acc, nullptr);
      break;
    default:
      kernel<T, 1, 4, KS>(K, A, 0, B, ldb, C, 0, acc, nullptr);
      break;
  }
}

// C (M x cv*L) = A (M x K) * B (K x cv*L) for any M: K in slices of kc rows (so a
// slice of the B panel stays in cache while every row group uses it), rows in
// ceil(M / mrmax) groups of balanced sizes (mrmax <= max_rows(cv) at most), each a
// run<T, KSF> tile. Balanced, because a last group of one or two rows streams the
// whole B slice for few multiply-adds (N = 13 as 5+4+4 rows instead of 6+6+1: LSTM
// inference 4% faster; no slower anywhere measured). The K slices do not depend on M,
// and with KS = 1 a row's sum runs in plain k order whatever group it sits in, so it
// gets the same bits whichever rows it is computed with (the sequence kernels' shared
// blocks rely on it: KS = 1 whenever mr*cv >= 4, and always in panel_fixed for M >= 2).
// KSF = -1: a single row (M = 1) with one_row_sums() partial sums.
// With acc, the first slice also adds to C (C + sum, in that order).
// With several row groups, the first group of each slice also prefetches the next slice
// into L2 (after the last slice: whatever follows B in memory, which for the sequence
// kernels' packed weights is the next block): weights that do not fit in L2 then come
// from L3 ahead of use (LSTM H = 1024: 11% faster, H = 512: 4%; no change when they fit).
template <class T, int KSF>
inline void panel_rows(int cv, int mrmax, std::int64_t M, std::int64_t K, std::int64_t kc,
                       const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T* C,
                       std::int64_t ldc, bool acc) {
  const std::int64_t step = K <= kc ? (K > 0 ? K : 1) : kc;
  const std::int64_t groups = (M + mrmax - 1) / mrmax;
  std::int64_t k0 = 0;
  do {
    const std::int64_t kn = K - k0 < step ? K - k0 : step;
    std::int64_t r0 = 0;
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      const int mr = static_cast<int>(M / groups + (gi < M % groups ? 1 : 0));
      if constexpr (KSF < 0) {
        run_row<T, one_row_sums()>(cv, kn, A + k0, B + k0 * ldb, ldb, C, acc || k0 > 0);
      } else {
        run<T, KSF>(cv, mr, kn, A + r0 * lda + k0, lda, B + k0 * ldb, ldb, C + r0 * ldc, ldc,
                    acc || k0 > 0, r0 == 0 && M > mrmax ? B + (k0 + kn) * ldb : nullptr);
      }
      r0 += mr;
    }
    k0 += step;
  } while (k0 < K);
}

// The usual product: the tallest row groups the tile width allows.
template <class T>
inline void panel(int cv, std::int64_t M, std::int64_t K, std::int64_t kc, const T* A,
                  std::int64_t lda, const T* B, std::int64_t ldb, T* C, std::int64_t ldc,
                  bool acc = false) {
  panel_rows<T, 0>(cv, max_rows(cv), M, K, kc, A, lda, B, ldb, C, ldc, acc);
}

// Row groups of a given mrmax, every row summed in plain k order (one row alone: with
// one_row_sums() partial sums): any tile width cv and any split of the M rows into
// several panels of two or more rows give the same bits.
template <class T>
inline void panel_fixed(int cv, int mrmax, std::int64_t M, std::int64_t K, std::int64_t kc,
                        const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T* C,
                        std::int64_t ldc, bool acc) {
  if (M == 1) {
    panel_rows<T, -1>(cv, mrmax, M, K, kc, A, lda, B, ldb, C, ldc, acc);
  } else {
    panel_rows<T, 1>(cv, mrmax, M, K, kc, A, lda, B, ldb, C, ldc, acc);
  }
}

}  // namespace tile
FASTRNN_TARGET_NS_END
