// Packed, cache-blocked GEMM for one SIMD target (BLIS-style).
//
// gemm():        for each NC column block, for each KC block of k: pack B
//                (threads share the work), then threads take (MC row block,
//                column chunk) items: pack the A block into their own buffer
//                and run the macro-kernel. Threads never split k.
// gemm_packed(): B was packed once for all of k (pack_b); A is packed in
//                row groups into a stack buffer (<= 128 KiB), so it allocates
//                nothing and can run inside a caller's parallel region.
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

// Bytes of stack gemm_packed uses for one packed row group of A.
constexpr std::int64_t kStackABytes = 128 * 1024;

// Row block (A block in L2) and column block (B block in L3) of gemm().
template <class T>
constexpr std::int64_t mc_block() {
  return Cfg<T>::MR * (sizeof(T) == 4 ? 12 : 8);
}
template <class T>
constexpr std::int64_t nc_block() {
  return sizeof(T) == 4 ? 2048 : 1024;
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
      gemm_detail::macro_kernel(blk, abuf, bfirst + p0 * NR);
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

// The body of gemm() for thread t of nt (nt == 1: no parallel region around it).
template <class T>
void gemm_body(int t, int nt, Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
               T alpha, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
               std::int64_t ldc, T* bbuf, T* abuf_all) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  constexpr std::int64_t KC = Cfg<T>::KC;
  constexpr std::int64_t MC = mc_block<T>();
  constexpr std::int64_t NC = nc_block<T>();
  T* abuf = abuf_all + static_cast<std::int64_t>(t) * MC * KC;
  const std::int64_t n_ic = (m + MC - 1) / MC;
  for (std::int64_t jc = 0; jc < n; jc += NC) {
    const std::int64_t nc = n - jc < NC ? n - jc : NC;
    const std::int64_t npan = (nc + NR - 1) / NR;
    // Column chunks per row block: enough items for every thread to have work.
    std::int64_t chunks = 1;
    if (n_ic < 2 * nt) {
      chunks = (2 * nt + n_ic - 1) / n_ic;
      if (chunks > npan) chunks = npan;
    }
    const std::int64_t items = n_ic * chunks;
    const std::int64_t it0 = items * t / nt, it1 = items * (t + 1) / nt;
    for (std::int64_t p0 = 0; p0 < k; p0 += KC) {
      const std::int64_t kc = k - p0 < KC ? k - p0 : KC;
      const std::int64_t bps = kc * NR;
      gemm_detail::pack_b_panels(tb, b, ldb, p0, kc, jc, nc, npan * t / nt, npan * (t + 1) / nt,
                                 bps, bbuf);
#if defined(_OPENMP)
      if (nt > 1) {
#pragma omp barrier
      }
#endif
      std::int64_t packed_ic = -1;
      for (std::int64_t it = it0; it < it1; ++it) {
        const std::int64_t ic = it / chunks, ch = it % chunks;
        const std::int64_t i0 = ic * MC;
        const std::int64_t mb = m - i0 < MC ? m - i0 : MC;
        if (ic != packed_ic) {
          gemm_detail::pack_a(ta, a, lda, i0, mb, p0, kc, Cfg<T>::MR, abuf);
          packed_ic = ic;
        }
        const std::int64_t pa = npan * ch / chunks, pb = npan * (ch + 1) / chunks;
        const std::int64_t ja = pa * NR;
        const std::int64_t jb = pb * NR < nc ? pb * NR : nc;
        if (ja >= jb) continue;
        Block<T> blk{mb,    kc, jb - ja, bps, c + i0 * ldc + jc + ja, ldc, i0, jc + ja,
                     Update<T>{alpha, beta, p0 == 0}, nullptr};
        gemm_detail::macro_kernel(blk, abuf, bbuf + pa * bps);
      }
#if defined(_OPENMP)
      if (nt > 1) {
#pragma omp barrier
      }
#endif
    }
  }
}

}  // namespace

template <class T>
void gemm(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc,
          int num_threads) {
  constexpr std::int64_t NR = Cfg<T>::NR;
  constexpr std::int64_t KC = Cfg<T>::KC;
  constexpr std::int64_t MC = mc_block<T>();
  constexpr std::int64_t NC = nc_block<T>();
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    scale_c(m, 0, n, beta, c, ldc);
    return;
  }
  // Threads only where there is enough work to share (about 4 MFLOP each).
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) *
                       static_cast<double>(k);
  int nt = num_threads < 1 ? 1 : num_threads;
  while (nt > 1 && flops < 4.0e6 * nt) --nt;
  const std::int64_t kc_max = k < KC ? k : KC;
  const std::int64_t mc_max = m < MC ? m : MC;
  const std::int64_t nc_max = n < NC ? n : NC;
  const std::int64_t bpan = (nc_max + NR - 1) / NR;
  Buffer bbuf(static_cast<std::size_t>(bpan * NR * kc_max) * sizeof(T));
  Buffer abuf(static_cast<std::size_t>(nt) * static_cast<std::size_t>(MC * KC) * sizeof(T));
  (void)mc_max;
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num();
      const int team = omp_get_num_threads();
      gemm_body<T>(t, team, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bbuf.as<T>(),
                   abuf.as<T>());
    }
    return;
  }
#endif
  gemm_body<T>(0, 1, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bbuf.as<T>(),
               abuf.as<T>());
}

#define FASTRNN_GEMM_INSTANTIATE(T)                                                             \
  template void gemm<T>(Trans, Trans, std::int64_t, std::int64_t, std::int64_t, T, const T*,    \
                        std::int64_t, const T*, std::int64_t, T, T*, std::int64_t, int);        \
  template std::int64_t packed_b_size<T>(std::int64_t, std::int64_t);                           \
  template std::int64_t packed_b_panel<T>();                                                    \
  template void pack_b<T>(Trans, std::int64_t, std::int64_t, const T*, std::int64_t, T*);       \
  template void gemm_packed<T>(Trans, std::int64_t, std::int64_t, std::int64_t, T, const T*,    \
                               std::int64_t, const T*, std::int64_t, std::int64_t, T, T*,       \
                               std::int64_t, int, const Epilogue<T>*);
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
