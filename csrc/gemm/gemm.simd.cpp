// Packed, cache-blocked GEMM for one SIMD target (BLIS-style).
//
// gemm():        C is cut into one block per thread (rows when op(A) is the
//                taller operand, else columns); each thread runs the serial
//                algorithm on its block with private buffers, so threads never
//                wait on each other mid-call and never split k. Serial loops:
//                NC column block -> KC block of k -> pack B block (L2) -> MC row
//                block -> pack A block -> each A sliver (L1) sweeps the B panels.
// gemm_packed(): B was packed once for all of k (pack_b); A is packed in row
//                groups into a stack buffer (<= 128 KiB), so it allocates
//                nothing and can run inside a caller's parallel region. Each
//                group of B panels is streamed once and finished (epilogue)
//                before the next. Threads, if any, split the panels.
// gemm_shared_a(): gemm()'s loops for several B (and C) with one A, rows split
//                between threads: each packed block of A sweeps every B's block
//                before the next is packed.
//
// Blocking: KC = 256 for every target and type, so gemm and gemm_packed sum
// each element in the same order (bitwise equal results); NC is chosen so a
// packed B block is about 512 KiB (half the L2 of the target CPUs).
#include <cstdlib>
#include <new>

#include "gemm/gemm.h"
#include "gemm/gemm_kernel.h"
#include "runtime/checked.h"
#include "runtime/target.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

FASTRNN_TARGET_NS_BEGIN

namespace {

using gemm_detail::Block;
using gemm_detail::Cfg;
using gemm_detail::Update;

// Tuning knobs (compile-time; the defaults were chosen by measurement on a
// Cascade Lake Xeon: 1 MiB L2, 32 KiB L1D).
#ifndef FASTRNN_GEMM_MC_SLIVERS
#define FASTRNN_GEMM_MC_SLIVERS 8
#endif
#ifndef FASTRNN_GEMM_NC_BYTES
#define FASTRNN_GEMM_NC_BYTES (512 * 1024)
#endif

// Bytes of stack gemm_packed uses for one packed row group of A.
constexpr std::int64_t kStackABytes = 128 * 1024;

// Row block (A block, streamed sliver by sliver through L1) and column block
// (B block, kept in L2 while every sliver sweeps it) of gemm().
template <class T>
constexpr std::int64_t mc_block() {
  return Cfg<T>::MR * FASTRNN_GEMM_MC_SLIVERS;
}
template <class T>
constexpr std::int64_t nc_block() {
  return static_cast<std::int64_t>(FASTRNN_GEMM_NC_BYTES / (sizeof(T) * Cfg<T>::KC)) / Cfg<T>::NR *
         Cfg<T>::NR;
}

// A heap buffer for gemm()'s packed blocks (gemm_packed never allocates).
class Buffer {
 public:
  explicit Buffer(std::size_t bytes) {
    const std::size_t rounded = (bytes + 63) / 64 * 64;
    p_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (p_ == nullptr) throw std::bad_alloc();
  }
  ~Buffer() { std::free(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_;
};

// C[:, j0:j1] = beta * C[:, j0:j1] (zero when beta == 0, C unread): the k == 0 case.
template <class T>
void scale_c(std::int64_t m, std::int64_t j0, std::int64_t j1, T beta, T* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    for (std::int64_t j = j0; j < j1; ++j) row[j] = beta == T(0) ? T(0) : beta * row[j];
  }
}

// gemm_packed on columns [ja, jb) of the packed B (ja a multiple of NR), one thread.
template <class T>
void packed_range(Trans ta, std::int64_t m, std::int64_t k, T alpha, const T* a, std::int64_t lda,
                  const T* packed_b, std::int64_t ja, std::int64_t jb, T beta, T* c,
                  std::int64_t ldc, const Epilogue<T>* ep) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  constexpr std::int64_t KC = Cfg<T>::KC;
  alignas(64) T abuf[kStackABytes / sizeof(T)];
  const std::int64_t kc_max = k < KC ? k : KC;
  std::int64_t rows_per_group = static_cast<std::int64_t>(kStackABytes / sizeof(T)) / kc_max;
  const std::int64_t groups = (m + rows_per_group - 1) / rows_per_group;
  rows_per_group = (m + groups - 1) / groups;  // even groups
  const std::int64_t bps = k * NR;
  const T* bfirst = packed_b + (ja / NR) * bps;
  for (std::int64_t i0 = 0; i0 < m; i0 += rows_per_group) {
    const std::int64_t mb = m - i0 < rows_per_group ? m - i0 : rows_per_group;
    for (std::int64_t p0 = 0; p0 < k; p0 += KC) {
      const std::int64_t kc = k - p0 < KC ? k - p0 : KC;
      gemm_detail::pack_a(ta, a, lda, i0, mb, p0, kc, Cfg<T>::MR, abuf);
      Block<T> blk{mb,     kc, jb - ja, bps, c + i0 * ldc + ja, ldc, i0, ja,
                   Update<T>{alpha, beta, p0 == 0}, p0 + kc == k ? ep : nullptr};
      gemm_detail::macro_kernel(blk, abuf, bfirst + p0 * NR, false);
    }
  }
}

}  // namespace

template <class T>
std::int64_t packed_b_panel() {
  return Cfg<T>::NR;
}

template <class T>
std::int64_t packed_b_size(std::int64_t k, std::int64_t n) {
  const std::int64_t NR = Cfg<T>::NR;
  const std::int64_t panels = (n + NR - 1) / NR;
  return checked_mul(checked_mul(panels, NR, "packed_b_size"), k, "packed_b_size");
}

template <class T>
void pack_b(Trans tb, std::int64_t k, std::int64_t n, const T* b, std::int64_t ldb, T* packed) {
  const std::int64_t NR = Cfg<T>::NR;
  gemm_detail::pack_b_panels(tb, b, ldb, 0, k, 0, n, 0, (n + NR - 1) / NR, k * NR, packed);
}

template <class T>
void gemm_packed(Trans ta, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                 std::int64_t lda, const T* packed_b, std::int64_t j0, std::int64_t j1, T beta,
                 T* c, std::int64_t ldc, int num_threads, const Epilogue<T>* ep) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  if (j1 > n) j1 = n;
  if (m <= 0 || j1 <= j0) return;
  if (k <= 0) {
    scale_c(m, j0, j1, beta, c, ldc);
    if (ep != nullptr && ep->fn != nullptr) ep->fn(ep->ctx, 0, m, j0, j1 - j0, c + j0, ldc);
    return;
  }
  const std::int64_t npan = (j1 - j0 + NR - 1) / NR;
  std::int64_t nt = num_threads < 1 ? 1 : num_threads;
  if (nt > npan) nt = npan;
  // A parallel region costs microseconds: use threads only for >= ~0.5 MFLOP each.
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(j1 - j0) *
                       static_cast<double>(k);
  while (nt > 1 && flops < 0.5e6 * static_cast<double>(nt)) --nt;
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(static_cast<int>(nt))
    {
      const std::int64_t t = omp_get_thread_num();
      const std::int64_t team = omp_get_num_threads();
      const std::int64_t pa = npan * t / team, pb = npan * (t + 1) / team;
      const std::int64_t ja = j0 + pa * NR;
      const std::int64_t jb = j0 + pb * NR < j1 ? j0 + pb * NR : j1;
      if (ja < jb) packed_range(ta, m, k, alpha, a, lda, packed_b, ja, jb, beta, c, ldc, ep);
    }
    return;
  }
#endif
  packed_range(ta, m, k, alpha, a, lda, packed_b, j0, j1, beta, c, ldc, ep);
}

namespace {

// Rows [row0, row0 + m) of C_r = alpha op(A) op(B_r) + beta C_r for every r < count (a and
// each c at row 0), on one thread with its own packing buffers, over all of k: each KC block
// of every op(B_r) packed side by side into bbuf (at most NC columns in all: the block stays
// in L2), then each MC block of A packed into abuf and its slivers (in L1) swept across them.
template <class T>
void serial_pass(Trans ta, Trans tb, std::int64_t row0, std::int64_t m, std::int64_t k, T alpha,
                 const T* a, std::int64_t lda, const GemmRhs<T>* rhs, int count, T beta,
                 T* bbuf, T* abuf) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  constexpr std::int64_t KC = Cfg<T>::KC;
  constexpr std::int64_t MC = mc_block<T>();
  for (std::int64_t p0 = 0; p0 < k; p0 += KC) {
    const std::int64_t kc = k - p0 < KC ? k - p0 : KC;
    const std::int64_t bps = kc * NR;
    T* bq = bbuf;
    for (int r = 0; r < count; ++r) {
      const std::int64_t npan = (rhs[r].n + NR - 1) / NR;
      gemm_detail::pack_b_panels(tb, rhs[r].b, rhs[r].ldb, p0, kc, 0, rhs[r].n, 0, npan, bps, bq);
      bq += npan * bps;
    }
    for (std::int64_t i0 = row0; i0 < row0 + m; i0 += MC) {
      const std::int64_t mb = row0 + m - i0 < MC ? row0 + m - i0 : MC;
      gemm_detail::pack_a(ta, a, lda, i0, mb, p0, kc, Cfg<T>::MR, abuf);
      bq = bbuf;
      for (int r = 0; r < count; ++r) {
        Block<T> blk{mb, kc, rhs[r].n, bps, rhs[r].c + i0 * rhs[r].ldc, rhs[r].ldc,
                     i0, 0, Update<T>{alpha, beta, p0 == 0}, nullptr};
        gemm_detail::macro_kernel(blk, abuf, bq, true);
        bq += (rhs[r].n + NR - 1) / NR * bps;
      }
    }
  }
}

// Threads for a product of `flops`: at most num_threads, each with about 2 MFLOP or more.
inline std::int64_t threads_for(double flops, int num_threads) {
  std::int64_t nt = num_threads < 1 ? 1 : num_threads;
  while (nt > 1 && flops < 2.0e6 * static_cast<double>(nt)) --nt;
  return nt;
}

// run(t) for t < nt, each on a thread of an OpenMP team when nt > 1.
template <class F>
void run_team(std::int64_t nt, F run) {
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel for num_threads(static_cast<int>(nt)) schedule(static, 1)
    for (std::int64_t t = 0; t < nt; ++t) run(t);
    return;
  }
#endif
  run(0);
}

// Split [0, len) into `parts` pieces with inner boundaries at multiples of `align`.
inline std::int64_t split_at(std::int64_t len, std::int64_t parts, std::int64_t i,
                             std::int64_t align) {
  if (i >= parts) return len;
  const std::int64_t at = len * i / parts / align * align;
  return at < len ? at : len;
}

}  // namespace

template <class T>
void gemm(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc,
          int num_threads) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  constexpr std::int64_t MR = Cfg<T>::MR;
  constexpr std::int64_t KC = Cfg<T>::KC;
  constexpr std::int64_t MC = mc_block<T>();
  constexpr std::int64_t NC = nc_block<T>();
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    scale_c(m, 0, n, beta, c, ldc);
    return;
  }
  // Threads only where there is enough work to share (about 2 MFLOP each).
  std::int64_t nt = threads_for(2.0 * static_cast<double>(m) * static_cast<double>(n) *
                                    static_cast<double>(k),
                                num_threads);
  // Each thread computes its own block of C over all of k with private packing
  // buffers, so threads never wait on each other mid-call. Rows are split when
  // op(A) is the taller operand (each thread then packs all of B, which costs
  // little next to its share of the product), columns otherwise.
  std::int64_t row_parts = 1, col_parts = 1;
  if (nt > 1) {
    if (m / MR >= n / NR) {
      row_parts = nt < (m + MR - 1) / MR ? nt : (m + MR - 1) / MR;
    } else {
      col_parts = nt < (n + NR - 1) / NR ? nt : (n + NR - 1) / NR;
    }
    nt = row_parts * col_parts;
  }
  const std::int64_t kc_max = k < KC ? k : KC;
  const std::int64_t b_elems = (NC < n ? NC : (n + NR - 1) / NR * NR) * kc_max;
  const std::int64_t a_elems = (MC < m ? MC : m) * kc_max;
  const std::int64_t per_thread = (b_elems + a_elems + 63) / 64 * 64;
  Buffer buf(static_cast<std::size_t>(per_thread * nt) * sizeof(T));
  run_team(nt, [&](std::int64_t t) {
    const std::int64_t ri = t / col_parts, ci = t % col_parts;
    const std::int64_t r0 = split_at(m, row_parts, ri, MR), r1 = split_at(m, row_parts, ri + 1, MR);
    const std::int64_t c0 = split_at(n, col_parts, ci, NR), c1 = split_at(n, col_parts, ci + 1, NR);
    T* bbuf = buf.as<T>() + t * per_thread;
    for (std::int64_t jc = c0; jc < c1 && r0 < r1; jc += NC) {  // column blocks of B in L2
      const GemmRhs<T> rhs{tb == Trans::no ? b + jc : b + jc * ldb, ldb,
                           c1 - jc < NC ? c1 - jc : NC, c + jc, ldc};
      serial_pass(ta, tb, r0, r1 - r0, k, alpha, a, lda, &rhs, 1, beta, bbuf, bbuf + b_elems);
    }
  });
}

template <class T>
void gemm_shared_a(Trans ta, std::int64_t m, std::int64_t k, T alpha, const T* a,
                   std::int64_t lda, const GemmRhs<T>* rhs, int count, T beta, int num_threads) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  constexpr std::int64_t MR = Cfg<T>::MR;
  constexpr std::int64_t KC = Cfg<T>::KC;
  constexpr std::int64_t MC = mc_block<T>();
  constexpr std::int64_t NC = nc_block<T>();
  std::int64_t width = 0;  // the packed B blocks side by side
  for (int r = 0; r < count; ++r) width += (rhs[r].n + NR - 1) / NR * NR;
  if (count < 2 || m <= 0 || k <= 0 || width > NC) {
    for (int r = 0; r < count; ++r) {
      gemm<T>(ta, Trans::no, m, rhs[r].n, k, alpha, a, lda, rhs[r].b, rhs[r].ldb, beta, rhs[r].c,
              rhs[r].ldc, num_threads);
    }
    return;
  }
  const std::int64_t nt_rows = (m + MR - 1) / MR;
  std::int64_t nt = threads_for(2.0 * static_cast<double>(m) * static_cast<double>(width) *
                                    static_cast<double>(k),
                                num_threads);
  if (nt > nt_rows) nt = nt_rows;
  const std::int64_t kc_max = k < KC ? k : KC;
  const std::int64_t b_elems = width * kc_max;
  const std::int64_t a_elems = (MC < m ? MC : m) * kc_max;
  const std::int64_t per_thread = (b_elems + a_elems + 63) / 64 * 64;
  Buffer buf(static_cast<std::size_t>(per_thread * nt) * sizeof(T));
  run_team(nt, [&](std::int64_t t) {  // rows [r0, r1) of every C
    const std::int64_t r0 = split_at(m, nt, t, MR), r1 = split_at(m, nt, t + 1, MR);
    T* bbuf = buf.as<T>() + t * per_thread;
    if (r0 < r1) {
      serial_pass(ta, Trans::no, r0, r1 - r0, k, alpha, a, lda, rhs, count, beta, bbuf,
                  bbuf + b_elems);
    }
  });
}

#define FASTRNN_GEMM_INSTANTIATE(T)                                                             \
  template void gemm<T>(Trans, Trans, std::int64_t, std::int64_t, std::int64_t, T, const T*,    \
                        std::int64_t, const T*, std::int64_t, T, T*, std::int64_t, int);        \
  template std::int64_t packed_b_size<T>(std::int64_t, std::int64_t);                           \
  template std::int64_t packed_b_panel<T>();                                                    \
  template void pack_b<T>(Trans, std::int64_t, std::int64_t, const T*, std::int64_t, T*);       \
  template void gemm_packed<T>(Trans, std::int64_t, std::int64_t, std::int64_t, T, const T*,    \
                               std::int64_t, const T*, std::int64_t, std::int64_t, T, T*,       \
                               std::int64_t, int, const Epilogue<T>*);                          \
  template void gemm_shared_a<T>(Trans, std::int64_t, std::int64_t, T, const T*, std::int64_t,  \
                                 const GemmRhs<T>*, int, T, int);
FASTRNN_GEMM_INSTANTIATE(float)
FASTRNN_GEMM_INSTANTIATE(double)

const GemmTable& gemm_table() {
  static const GemmTable t{
      {&gemm<float>, &packed_b_size<float>, &packed_b_panel<float>, &pack_b<float>,
       &gemm_packed<float>},
      {&gemm<double>, &packed_b_size<double>, &packed_b_panel<double>, &pack_b<double>,
       &gemm_packed<double>},
  };
  return t;
}

FASTRNN_TARGET_NS_END
