// LSTM with a projection (PyTorch's proj_size = P), forward and BPTT over a whole
// sequence, one layer, one direction:
//   [i, f, g, o] = W_ih x_t + b_ih + W_hh r_{t-1} + b_hh,  c_t = f*c_{t-1} + i*g,
//   m_t = o*tanh(c_t),  r_t = W_hr m_t,  y_t = r_t
// Shapes (row-major): x (T,N,I), h0 = r_0 (N,P), c0 (N,H), weight_ih (4H,I),
// weight_hh (4H,P), weight_hr (P,H), biases (4H), y (T,N,P), h_n (N,P), c_n (N,H).
// lengths as in seq.h (packed-sequence semantics).
//
// The tape's layout does not depend on the SIMD target: units come in blocks of
// U = 64 / sizeof(T) (one cache line of each gate), H is padded to Hu and P to Pp (whole
// blocks), and the gate columns are permuted so that a block's four gates sit side by
// side: column b*4U + g*U + u holds gate g of unit b*U + u.
#pragma once

#include <cstdint>

#include "runtime/dispatch.h"

namespace fastrnn {

struct LstmpDims {
  std::int64_t T = 0, N = 0, I = 0, H = 0, P = 0;  // T, N, H, P >= 1; I >= 0
  bool reverse = false;
};

// Units per block, and n rounded up to whole blocks, for element type T.
template <class T>
constexpr std::int64_t lstmp_block() {
  return 64 / static_cast<std::int64_t>(sizeof(T));
}
template <class T>
constexpr std::int64_t lstmp_round(std::int64_t n) {
  return (n + lstmp_block<T>() - 1) / lstmp_block<T>() * lstmp_block<T>();
}

// What training keeps (time-indexed by t; Hu, Pp as above):
//   gates (T,N,4Hu)  i, f, g, o after their nonlinearities (permuted columns)
//   c     (T,N,Hu)   the cell state after step t (carried through inactive steps)
//   c0    (N,Hu)     the initial cell state
//   m     (T,N,Hu)   o*tanh(c_t), 0 on inactive steps
//   rprev (T,N,Pp)   the state r entering step t
template <class T>
struct LstmpTape {
  T* gates = nullptr;
  T* c = nullptr;
  T* c0 = nullptr;
  T* m = nullptr;
  T* rprev = nullptr;
};

template <class T>
struct LstmpForward {
  LstmpDims d;
  const T* x = nullptr;
  const T* h0 = nullptr;  // never null
  const T* c0 = nullptr;  // never null
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;  // or null
  const T* b_hh = nullptr;  // or null
  const T* w_hr = nullptr;
  const T* w_peep = nullptr;  // (3*H) peepholes p_i, p_f, p_o (seq.h's cells), or null
  const std::int64_t* lengths = nullptr;  // or null (all T)
  T* y = nullptr;
  T* h_n = nullptr;
  T* c_n = nullptr;
  bool training = false;
  LstmpTape<T> tape;  // written when training
  // Training: where the forward's threads copy x and the weights for the backward (any may
  // be null: not copied), so that later edits of the caller's arrays do not reach the tape.
  T* x_copy = nullptr;
  T* w_ih_copy = nullptr;
  T* w_hh_copy = nullptr;
  T* w_hr_copy = nullptr;
  // The weights as pack() laid them out for d's I, H and P (any target), or null: the
  // forward lays them out itself (w_ih, w_hh and w_hr must then hold the same weights).
  const T* packed = nullptr;
  T* work = nullptr;  // work(d, false) elements, 64-byte aligned
  int num_threads = 1;
};

template <class T>
struct LstmpBackward {
  LstmpDims d;
  const T* x = nullptr;  // the forward's x and weights
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* w_hr = nullptr;
  const T* w_peep = nullptr;  // (3*H) as given to the forward, or null
  const std::int64_t* lengths = nullptr;
  LstmpTape<const T> tape;
  const T* dy = nullptr;    // (T,N,P) or null (zero)
  const T* dh_n = nullptr;  // (N,P) or null
  const T* dc_n = nullptr;  // (N,H) or null
  T* dx = nullptr;
  T* dh0 = nullptr;
  T* dc0 = nullptr;
  T* dw_ih = nullptr;
  T* dw_hh = nullptr;
  T* db_ih = nullptr;  // or null
  T* db_hh = nullptr;  // or null
  T* dw_hr = nullptr;
  T* dw_peep = nullptr;  // (3*H) where w_peep is not null
  T* work = nullptr;  // work(d, true) elements, 64-byte aligned
  int num_threads = 1;
};

template <class T>
struct LstmpFns {
  // Workspace elements of the forward (backward = false) or the backward; throws
  // std::length_error when a size overflows 64-bit arithmetic.
  std::int64_t (*work)(const LstmpDims& d, bool backward);
  void (*forward)(const LstmpForward<T>& a);
  void (*backward)(const LstmpBackward<T>& a);
  // Elements of the forward's weight layout for d's I, H and P (T and N do not matter), and
  // that layout into `out` (64-byte aligned), the same on every target.
  std::int64_t (*packed_size)(const LstmpDims& d);
  void (*pack)(const LstmpDims& d, const T* w_ih, const T* w_hh, const T* w_hr, T* out,
               int num_threads);
};

struct LstmpTable {
  LstmpFns<float> f32;
  LstmpFns<double> f64;
};

}  // namespace fastrnn

FASTRNN_DECLARE_TARGET_TABLE(LstmpTable, lstmp_table)
