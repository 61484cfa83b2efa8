// Register-tiled GEMM micro-kernels and packing routines for one SIMD target.
//
// Included only by per-target code; everything here is in namespace
// fastrnn::<target>::gemm_detail. Kernels use GCC/Clang vector
// extensions sized to the target's widest register, so one source serves
// AVX-512 (16 floats), AVX2 (8 floats) and the portable baseline (16 bytes,
// SSE2 on x86-64, NEON/scalar elsewhere); -ffp-contract=fast turns
// `acc += b * a` into an FMA where the target has one.
//
// Packed layouts (row-major C = op(A) op(B)):
//   * B (k x n) is stored as panels of NR columns: panel q holds columns
//     [q*NR, q*NR+NR) as kc rows of NR contiguous elements (zero-padded past n).
//     Consecutive panels are `bps` elements apart (bps = kc*NR).
//   * A block (mb x kc) is stored as slivers of R <= MR rows (sliver sizes from
//     split_rows): a sliver holds kc groups of R contiguous elements (column p
//     of the sliver's rows), slivers back to back.
//
// Every C element is the sum over p = 0..k-1 in increasing order, split into
// the same fixed KC blocks whatever the thread count or tiling, so results do
// not depend on how the work is partitioned.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "gemm/gemm.h"
#include "runtime/target.h"
#include "simd/transpose.h"

FASTRNN_TARGET_NS_BEGIN
namespace gemm_detail {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kMaxAcc = 28;  // of 32 vector registers
constexpr int kMR = 14;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
constexpr int kMaxAcc = 12;  // of 16 vector registers
constexpr int kMR = 6;
#else
constexpr int kVecBytes = 16;
constexpr int kMaxAcc = 12;
constexpr int kMR = 6;
#endif

#ifndef FASTRNN_GEMM_KC
#define FASTRNN_GEMM_KC 256
#endif

template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};

template <class T>
struct Cfg {
  using V = typename VecOf<T>::type;
  static constexpr int L = kVecBytes / static_cast<int>(sizeof(T));  // lanes
  static constexpr int NR = 2 * L;                                    // panel width
  static constexpr int MR = kMR;                                      // rows per sliver
  static constexpr std::int64_t KC = FASTRNN_GEMM_KC;                 // k block
};

template <class T>
inline typename VecOf<T>::type vload(const T* p) {
  typename VecOf<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void vstore(T* p, typename VecOf<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

// Panels per micro-tile for a sliver of R rows: as many as the accumulator
// budget allows (R * P * 2 vectors), at most 4.
constexpr int panels_for(int r) {
  return (kMaxAcc / (2 * r)) >= 4 ? 4 : ((kMaxAcc / (2 * r)) >= 1 ? kMaxAcc / (2 * r) : 1);
}

// Balanced split of mb rows into ceil(mb / MR) slivers: the first `extra`
// slivers have base + 1 rows, the rest base rows.
struct RowSplit {
  std::int64_t count, base, extra;
  std::int64_t start(std::int64_t s) const { return s * base + (s < extra ? s : extra); }
  std::int64_t size(std::int64_t s) const { return base + (s < extra ? 1 : 0); }
  std::int64_t largest() const { return base + (extra > 0 ? 1 : 0); }
};
inline RowSplit split_rows(std::int64_t mb, std::int64_t mr) {
  RowSplit s{};
  s.count = (mb + mr - 1) / mr;
  if (s.count == 0) return s;
  s.base = mb / s.count;
  s.extra = mb % s.count;
  return s;
}

// One sliver of R rows: d[p*R + i] = op(A)[r0 + i, p0 + p]. R is a compile-time
// constant so each p of ta == yes is a fixed-size copy of R adjacent values, with no
// inner loop (measured: pack_a was ~15% of an LSTM backward, whose GEMMs have k = T*N
// or m = T*N, with a runtime R); ta == no transposes R rows.
template <class T, int R>
void pack_sliver(Trans ta, const T* a, std::int64_t lda, std::int64_t r0, std::int64_t p0,
                 std::int64_t kc, T* d) {
  if (ta == Trans::no) {
    // R rows into kc groups of R (simd::transpose_rect: register blocks with AVX, rows
    // fetched ahead). Element by element, packing was ~30% of a product with n = 100
    // (dX of a sequence's backward: each sliver feeds only 4 panels); 1 thread: 54 -> 64
    // GF/s at (m, n, k) = (3200, 100, 400), 84 -> 88 at (700, 650, 2600).
    simd::transpose_rect(a + r0 * lda + p0, lda, R, kc, d, R);
  } else {
    for (std::int64_t p = 0; p < kc; ++p)
      std::memcpy(d + p * R, a + (p0 + p) * lda + r0, sizeof(T) * R);
  }
}

// pack_a with ta == yes: stored rows per pass over the slivers, and how far ahead
// (in rows) to prefetch.
#ifndef FASTRNN_PACK_ROWS
#define FASTRNN_PACK_ROWS 8
#endif
#ifndef FASTRNN_PACK_AHEAD
#define FASTRNN_PACK_AHEAD 16
#endif
constexpr std::int64_t kPackRows = FASTRNN_PACK_ROWS;
constexpr std::int64_t kPackAhead = FASTRNN_PACK_AHEAD;

// pack_sliver for a runtime r in 1..MR, through a table of the MR instantiations.
template <class T, std::size_t... I>
void pack_sliver_r(int r, Trans ta, const T* a, std::int64_t lda, std::int64_t r0,
                   std::int64_t p0, std::int64_t kc, T* d, std::index_sequence<I...>) {
  using Fn = void (*)(Trans, const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, T*);
  static constexpr Fn table[] = {&pack_sliver<T, static_cast<int>(I) + 1>...};
  table[r - 1](ta, a, lda, r0, p0, kc, d);
}

// Pack op(A)[i0:i0+mb, p0:p0+kc] into slivers (see the file comment).
// ta == no: A stored m x k (A[i,p] = a[i*lda+p]); yes: stored k x m.
template <class T>
void pack_a(Trans ta, const T* a, std::int64_t lda, std::int64_t i0, std::int64_t mb,
            std::int64_t p0, std::int64_t kc, std::int64_t mr, T* dst) {
  const RowSplit sp = split_rows(mb, mr);
  // ta == yes reads row p of the stored matrix as mb adjacent values: go through
  // the rows a few at a time for every sliver, prefetching rows further on, so
  // each stored row is streamed once (the rows are usually far apart, e.g. the
  // T*N x G*H gate gradients, where one sliver per pass was bound by misses).
  const std::int64_t step = ta == Trans::yes ? kPackRows : kc;
  for (std::int64_t q0 = 0; q0 < kc; q0 += step) {
    const std::int64_t qn = kc - q0 < step ? kc - q0 : step;
    if (ta == Trans::yes) {
      const std::int64_t q1 = q0 + kPackAhead, qe = q1 + qn < kc ? q1 + qn : kc;
      for (std::int64_t q = q1; q < qe; ++q) {
        const T* row = a + (p0 + q) * lda + i0;
        for (std::int64_t e = 0; e < mb; e += 64 / static_cast<std::int64_t>(sizeof(T)))
          __builtin_prefetch(row + e, 0, 3);
      }
    }
    for (std::int64_t s = 0; s < sp.count; ++s) {
      pack_sliver_r<T>(static_cast<int>(sp.size(s)), ta, a, lda, i0 + sp.start(s), p0 + q0, qn,
                       dst + sp.start(s) * kc + q0 * sp.size(s), std::make_index_sequence<kMR>());
    }
  }
}

// Pack op(B)[p0:p0+kc, j0:j0+nc] into ceil(nc/NR) panels, `bps` elements apart.
// tb == no: B stored k x n (B[p,j] = b[p*ldb+j]); yes: stored n x k.
template <class T>
void pack_b_panels(Trans tb, const T* b, std::int64_t ldb, std::int64_t p0, std::int64_t kc,
                   std::int64_t j0, std::int64_t nc, std::int64_t panel_begin,
                   std::int64_t panel_end, std::int64_t bps, T* dst) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  if (tb == Trans::no) {
    // Row by row: each stored row is read front to back (one stream, which the hardware
    // prefetches) and dealt out to the panels, full ones by fixed-size copies. Panel by
    // panel, with one memcpy call per row, the rows were fetched 128 bytes at a time ldb
    // apart: 7% of an RNN backward ((100,64,256,256), 2 threads), now 1.05x faster.
    const std::int64_t full_end = std::min(panel_end, nc / NR);
    for (std::int64_t p = 0; p < kc; ++p) {
      const T* src = b + (p0 + p) * ldb + j0;
      T* dp = dst + p * NR;
      std::int64_t q = panel_begin;
      for (; q < full_end; ++q) std::memcpy(dp + q * bps, src + q * NR, sizeof(T) * NR);
      for (; q < panel_end; ++q) {
        const std::int64_t w = nc - q * NR;
        std::memcpy(dp + q * bps, src + q * NR, sizeof(T) * static_cast<std::size_t>(w));
        std::fill(dp + q * bps + w, dp + q * bps + NR, T(0));
      }
    }
    return;
  }
  for (std::int64_t q = panel_begin; q < panel_end; ++q) {
    T* d = dst + q * bps;
    const std::int64_t jq = q * NR;
    const std::int64_t w = nc - jq < NR ? nc - jq : NR;
    // Stored n x k: w stored rows transposed into the panel's columns (register blocks
    // with AVX, simd/transpose.h), the columns past w zero.
    simd::transpose_rect(b + (j0 + jq) * ldb + p0, ldb, w, kc, d, NR);
    for (std::int64_t p = 0; p < kc; ++p) std::fill(d + p * NR + w, d + p * NR + NR, T(0));
  }
}

// How a finished micro-tile is written to C.
template <class T>
struct Update {
  T alpha;
  T beta;
  bool first;  // first k block: C = alpha*acc + beta*C (C unread when beta == 0)
               // later blocks: C = C + alpha*acc
};

// One vector of results into C (or into a staging row for a partial tile).
template <class T>
inline void write_vec(T* cp, typename VecOf<T>::type acc, const Update<T>& u) {
  using V = typename VecOf<T>::type;
  V r = acc * u.alpha;
  if (!u.first) {
    r = vload(cp) + r;
  } else if (u.beta != T(0)) {
    r = vload(cp) * u.beta + r;
  }
  vstore(cp, r);
}

// C[0:R, 0:ncols] (+)= A_sliver (R x kc, packed) * B (the first NV vectors of
// ceil(NV / 2) panels of kc x NR). ncols <= NV*L; columns past ncols are computed
// (B is zero-padded) but not written. The tail goes through a staging row so it
// sees exactly the same arithmetic as full vectors. NV = 1 is the last panel of a
// matrix whose width leaves at most one vector in it (n = 100: 3 panels and 4
// columns), which would otherwise cost a whole panel's FMAs.
template <class T, int R, int NV>
void micro_kernel(std::int64_t kc, const T* __restrict a, const T* __restrict b, std::int64_t bps,
                  T* __restrict c, std::int64_t ldc, std::int64_t ncols, const Update<T>& u) {
  using V = typename VecOf<T>::type;
  constexpr int L = Cfg<T>::L;
  constexpr int NR = Cfg<T>::NR;
  constexpr int P = (NV + 1) / 2;
  V acc[R][NV];
  // Start fetching the C tile now; it is needed only after the k loop.
  constexpr int kLines = (P * NR * static_cast<int>(sizeof(T)) + 63) / 64;
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int l = 0; l < kLines; ++l) __builtin_prefetch(c + i * ldc + l * (64 / sizeof(T)), 1, 3);
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  }
  for (std::int64_t p = 0; p < kc; ++p) {
    const T* bp = b + p * NR;
#pragma GCC unroll 4
    for (int q = 0; q < P; ++q) {
      if constexpr (NV == 1) {
        const V b0 = vload(bp);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) acc[i][0] += b0 * a[p * R + i];
      } else {
        const V b0 = vload(bp + q * bps);
        const V b1 = vload(bp + q * bps + L);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const T ai = a[p * R + i];
          acc[i][2 * q] += b0 * ai;
          acc[i][2 * q + 1] += b1 * ai;
        }
      }
    }
  }
  if (ncols == NV * L) {
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) write_vec(c + i * ldc + v * L, acc[i][v], u);
    }
  } else {
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < NV; ++v) {
        const std::int64_t j = static_cast<std::int64_t>(v) * L;
        if (j >= ncols) break;
        const std::int64_t w = ncols - j < L ? ncols - j : L;
        T* cp = c + i * ldc + j;
        alignas(64) T stage[L] = {};
        if (!(u.first && u.beta == T(0))) std::memcpy(stage, cp, sizeof(T) * w);
        write_vec(stage, acc[i][v], u);
        std::memcpy(cp, stage, sizeof(T) * w);
      }
    }
  }
}

template <class T>
using MicroFn = void (*)(std::int64_t, const T*, const T*, std::int64_t, T*, std::int64_t,
                         std::int64_t, const Update<T>&);

// Kernel for a sliver of r rows (1..MR) and p panels (1 or panels_for(largest)); p = 0
// is half a panel (one vector, NV = 1).
template <class T, int R>
MicroFn<T> pick_r(int p) {
  constexpr int PMAX = panels_for(R);
  switch (p) {
    case 0:
      return &micro_kernel<T, R, 1>;
    case 1:
      return &micro_kernel<T, R, 2>;
    case 2:
      return PMAX >= 2 ? &micro_kernel<T, R, (PMAX >= 2 ? 4 : 2)> : nullptr;
    case 3:
      return PMAX >= 3 ? &micro_kernel<T, R, (PMAX >= 3 ? 6 : 2)> : nullptr;
    case 4:
      return PMAX >= 4 ? &micro_kernel<T, R, (PMAX >= 4 ? 8 : 2)> : nullptr;
    default:
      return nullptr;
  }
}

template <class T>
MicroFn<T> pick(int r, int p) {
  switch (r) {
    case 1: return pick_r<T, 1>(p);
    case 2: return pick_r<T, 2>(p);
    case 3: return pick_r<T, 3>(p);
    case 4: return pick_r<T, 4>(p);
    case 5: return pick_r<T, 5>(p);
    case 6: return pick_r<T, 6>(p);
#if defined(__AVX512F__)
    case 7: return pick_r<T, 7>(p);
    case 8: return pick_r<T, 8>(p);
    case 9: return pick_r<T, 9>(p);
    case 10: return pick_r<T, 10>(p);
    case 11: return pick_r<T, 11>(p);
    case 12: return pick_r<T, 12>(p);
    case 13: return pick_r<T, 13>(p);
    case 14: return pick_r<T, 14>(p);
#endif
    default: return nullptr;
  }
}

// Everything a macro-kernel call needs besides the packed blocks.
template <class T>
struct Block {
  std::int64_t mb;     // rows in the A block
  std::int64_t kc;     // k block length
  std::int64_t ncols;  // columns of C to produce (from the first panel)
  std::int64_t bps;    // distance between B panels
  T* c;                // C at (row0, col0)
  std::int64_t ldc;
  std::int64_t row0, col0;   // position in C, for the epilogue
  Update<T> u;
  const Epilogue<T>* epilogue;  // called per finished tile when non-null
};

// C block (mb x ncols) (+)= A block (packed slivers) * B panels.
// slivers_outer (gemm): each A sliver stays in L1 while it sweeps every B panel
// of the block (which lives in L2). Otherwise (gemm_packed, B streamed from
// memory once): groups of P panels outside, slivers inside, and each column
// group is finished, so the epilogue runs on it while it is hot.
template <class T>
void macro_kernel(const Block<T>& blk, const T* apack, const T* bpanels, bool slivers_outer) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  const RowSplit sp = split_rows(blk.mb, Cfg<T>::MR);
  if (sp.count == 0) return;
  const int P = panels_for(static_cast<int>(sp.largest()));
  MicroFn<T> fn_big[2], fn_one[2], fn_half[2];
  const int r_big = static_cast<int>(sp.base + (sp.extra > 0 ? 1 : 0));
  const int r_small = static_cast<int>(sp.base);
  fn_big[0] = pick<T>(r_big, P);
  fn_big[1] = pick<T>(r_small, P);
  fn_one[0] = pick<T>(r_big, 1);
  fn_one[1] = pick<T>(r_small, 1);
  fn_half[0] = pick<T>(r_big, 0);
  fn_half[1] = pick<T>(r_small, 0);
  const std::int64_t npan = (blk.ncols + NR - 1) / NR;
  // One micro-tile: sliver s, panels [g, g+P).
  auto tile = [&](std::int64_t s, std::int64_t g) {
    const std::int64_t gp = npan - g < P ? npan - g : P;
    const std::int64_t col = g * NR;
    const std::int64_t gcols = blk.ncols - col < gp * NR ? blk.ncols - col : gp * NR;
    const T* bg = bpanels + g * blk.bps;
    const int which = sp.size(s) == r_big ? 0 : 1;
    const T* as = apack + sp.start(s) * blk.kc;
    T* cs = blk.c + sp.start(s) * blk.ldc + col;
    if (gp == P && gcols > (P - 1) * NR + Cfg<T>::L) {
      fn_big[which](blk.kc, as, bg, blk.bps, cs, blk.ldc, gcols, blk.u);
    } else {
      for (std::int64_t q = 0; q < gp; ++q) {
        const std::int64_t qc = gcols - q * NR < NR ? gcols - q * NR : NR;
        MicroFn<T> fn = qc > Cfg<T>::L ? fn_one[which] : fn_half[which];
        fn(blk.kc, as, bg + q * blk.bps, blk.bps, cs + q * NR, blk.ldc, qc, blk.u);
      }
    }
  };
  if (slivers_outer) {
    for (std::int64_t s = 0; s < sp.count; ++s) {
      for (std::int64_t g = 0; g < npan; g += P) tile(s, g);
    }
    return;
  }
  for (std::int64_t g = 0; g < npan; g += P) {
    for (std::int64_t s = 0; s < sp.count; ++s) tile(s, g);
    if (blk.epilogue != nullptr && blk.epilogue->fn != nullptr) {
      const std::int64_t col = g * NR;
      const std::int64_t gcols = blk.ncols - col < P * NR ? blk.ncols - col : P * NR;
      blk.epilogue->fn(blk.epilogue->ctx, blk.row0, blk.mb, blk.col0 + col, gcols, blk.c + col,
                       blk.ldc);
    }
  }
}

}  // namespace gemm_detail
FASTRNN_TARGET_NS_END
