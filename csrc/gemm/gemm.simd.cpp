// PLACEHOLDER implementation of the packed-GEMM interface: correct, unblocked,
// slow. The blocked, register-tiled version replaces this file.
#include "gemm/gemm.h"

#include "runtime/target.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

template <class T>
inline T at(const T* p, std::int64_t ld, Trans t, std::int64_t r, std::int64_t c) {
  return t == Trans::no ? p[r * ld + c] : p[c * ld + r];
}

template <class T>
void gemm_impl(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
               const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
               std::int64_t ldc, std::int64_t j0, std::int64_t j1) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = j0; j < j1; ++j) {
      T s = 0;
      for (std::int64_t p = 0; p < k; ++p) s += at(a, lda, ta, i, p) * at(b, ldb, tb, p, j);
      T prev = beta == T(0) ? T(0) : beta * c[i * ldc + j];
      c[i * ldc + j] = alpha * s + prev;
    }
  }
}

}  // namespace

template <class T>
void gemm(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc, int) {
  gemm_impl<T>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, 0, n);
}

template <class T>
std::int64_t packed_b_size(std::int64_t k, std::int64_t n) {
  return k * n;
}

template <class T>
std::int64_t packed_b_panel() {
  return 1;
}

template <class T>
void pack_b(Trans tb, std::int64_t k, std::int64_t n, const T* b, std::int64_t ldb, T* packed) {
  for (std::int64_t p = 0; p < k; ++p)
    for (std::int64_t j = 0; j < n; ++j) packed[p * n + j] = at(b, ldb, tb, p, j);
}

template <class T>
void gemm_packed(Trans ta, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                 std::int64_t lda, const T* packed_b, std::int64_t j0, std::int64_t j1, T beta,
                 T* c, std::int64_t ldc, int, const Epilogue<T>* ep) {
  gemm_impl<T>(ta, Trans::no, m, n, k, alpha, a, lda, packed_b, n, beta, c, ldc, j0, j1);
  if (ep && ep->fn) ep->fn(ep->ctx, 0, m, j0, j1 - j0, c + j0, ldc);
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
