// Packed GEMM: the interface every target implements.
//
// Declared once per target (inside namespace fastrnn::<target>) so that
// per-target kernels (csrc/seq) call their own target's GEMM directly with no
// dispatch; code compiled once reaches it through FASTRNN_DISPATCH(gemm_table).
//
// Conventions: row-major matrices with leading dimensions (elements between
// rows). op(A) is m×k, op(B) is k×n, C is m×n. Trans::yes means the stored
// matrix is the transpose (A stored k×m, B stored n×k). When beta == 0, C is
// not read (it may hold NaN). Sums over k are always done in the same order
// whatever num_threads is, so results are bitwise identical for any count.
#pragma once

#include <cstdint>

#include "runtime/dispatch.h"

namespace fastrnn {

enum class Trans : int { no = 0, yes = 1 };

// Called on a finished tile of C (all of k accumulated, alpha/beta applied):
// rows [row0, row0+rows), columns [col0, col0+cols); c points at C[row0, col0].
template <class T>
struct Epilogue {
  void (*fn)(void* ctx, std::int64_t row0, std::int64_t rows, std::int64_t col0,
             std::int64_t cols, T* c, std::int64_t ldc) = nullptr;
  void* ctx = nullptr;
};

// One right-hand side of gemm_shared_a: C (m x n, ldc) from B (k x n, ldb, not transposed).
template <class T>
struct GemmRhs {
  const T* b;
  std::int64_t ldb, n;
  T* c;
  std::int64_t ldc;
};

// Function table for code compiled once (bindings, benchmarks).
template <class T>
struct GemmFns {
  void (*gemm)(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
               const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
               std::int64_t ldc, int num_threads);
  std::int64_t (*packed_b_size)(std::int64_t k, std::int64_t n);
  std::int64_t (*packed_b_panel)();
  void (*pack_b)(Trans tb, std::int64_t k, std::int64_t n, const T* b, std::int64_t ldb,
                 T* packed);
  void (*gemm_packed)(Trans ta, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                      const T* a, std::int64_t lda, const T* packed_b, std::int64_t j0,
                      std::int64_t j1, T beta, T* c, std::int64_t ldc, int num_threads,
                      const Epilogue<T>* epilogue);
};

struct GemmTable {
  GemmFns<float> f32;
  GemmFns<double> f64;
};

}  // namespace fastrnn

FASTRNN_DECLARE_TARGET_TABLE(GemmTable, gemm_table)

// The per-target API: the same templates in every target namespace, explicitly
// instantiated for float and double by that target's gemm.simd.cpp.
#define FASTRNN_GEMM_DECLARE_TARGET(ns)                                                           \
  namespace fastrnn {                                                                             \
  namespace ns {                                                                                  \
  /* C = alpha*op(A)*op(B) + beta*C, OpenMP over the outer loops when num_threads > 1. */         \
  template <class T>                                                                              \
  void gemm(Trans ta, Trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,          \
            const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,             \
            std::int64_t ldc, int num_threads);                                                   \
  /* Elements a packed op(B) (k x n) occupies. */                                                 \
  template <class T>                                                                              \
  std::int64_t packed_b_size(std::int64_t k, std::int64_t n);                                     \
  /* Column-panel width of the packed layout: gemm_packed column ranges start at a multiple. */   \
  template <class T>                                                                              \
  std::int64_t packed_b_panel();                                                                  \
  /* Pack op(B) (k x n) once; reuse it for many gemm_packed calls. */                             \
  template <class T>                                                                              \
  void pack_b(Trans tb, std::int64_t k, std::int64_t n, const T* b, std::int64_t ldb, T* packed); \
  /* C[:, j0:j1] = alpha*op(A)*B[:, j0:j1] + beta*C[:, j0:j1], B packed by pack_b for the full */ \
  /* n; c points at C[0, 0]. j0 is 0 or a multiple of packed_b_panel<T>(). With */                \
  /* num_threads == 1 it never opens a parallel region, so a thread inside one may call it on */  \
  /* its own columns. The epilogue (may be null) runs on each finished tile. */                   \
  template <class T>                                                                              \
  void gemm_packed(Trans ta, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, \
                   std::int64_t lda, const T* packed_b, std::int64_t j0, std::int64_t j1, T beta, \
                   T* c, std::int64_t ldc, int num_threads, const Epilogue<T>* epilogue);         \
  /* C_r = alpha*op(A)*B_r + beta*C_r for r < count, each packed block of A used for every */     \
  /* B_r before the next is packed (the backward's dW_ih = dG^T X and dW_hh = dG^T H share */     \
  /* A = dG^T). Each element is summed in gemm()'s order: the same bits as count gemm calls. */   \
  template <class T>                                                                              \
  void gemm_shared_a(Trans ta, std::int64_t m, std::int64_t k, T alpha, const T* a,               \
                     std::int64_t lda, const GemmRhs<T>* rhs, int count, T beta,                  \
                     int num_threads);                                                            \
  }                                                                                               \
  }

FASTRNN_GEMM_DECLARE_TARGET(generic)
FASTRNN_GEMM_DECLARE_TARGET(avx2)
FASTRNN_GEMM_DECLARE_TARGET(avx512)
