// Sequence kernels: forward and backpropagation through time for one layer and
// one direction of a vanilla RNN, an LSTM or a GRU.
//
// Names used in every shape comment:
//   T  time steps        N  batch rows        I  input features
//   H  hidden units      G  gates (RNN 1, LSTM 4 (i,f,g,o), GRU 3 (r,z,n))
// All arrays are dense row-major (C-contiguous), time-major: x (T,N,I),
// y (T,N,H), states (N,H), weight_ih (G*H,I), weight_hh (G*H,H), biases (G*H).
//
// Code compiled once (the bindings) reaches a target's kernels through
// FASTRNN_DISPATCH(seq_table). Work partitions never change the order of a
// floating-point sum, so results are bitwise identical for any thread count.
#pragma once

#include <cstdint>

#include "runtime/dispatch.h"

namespace fastrnn {

enum class Cell : int { rnn = 0, lstm = 1, gru = 2 };
enum class Act : int { tanh = 0, relu = 1, sigmoid = 2 };

struct SeqDims {
  std::int64_t T = 0;  // time steps, >= 1 for the kernels
  std::int64_t N = 0;  // batch rows, >= 1
  std::int64_t I = 0;  // input features, >= 0
  std::int64_t H = 0;  // hidden units, >= 1
  Cell cell = Cell::lstm;
  Act act = Act::tanh;      // RNN only
  bool reset_after = true;  // GRU only: n = tanh(Wx + b_in + r*(W_hn h + b_hn)); else r*h first
  bool reverse = false;     // process t = T-1 .. 0
  int gates() const { return cell == Cell::rnn ? 1 : (cell == Cell::lstm ? 4 : 3); }
};

// What training mode keeps for backward (all indexed by time t, not by step), with rows
// and gate segments Hp = tape_stride(H, sizeof(T)) apart (columns [H, Hp) unused):
//   hprev (T,N,Hp)   state entering the step at time t
//   gates (T,N,G*Hp) gate activations (LSTM: i,f,g,o; GRU: r,z,n); none for an RNN,
//                    whose phi(a_t) is h_t: the next step's hprev, or hlast
//   hlast (N,Hp)     RNN: the state after the last step (h_n, kept apart from the caller's)
//   cprev (T,N,Hp)   LSTM: cell state entering the step at time t
//   clast (N,Hp)     LSTM: the cell state after the last step (c_n, kept apart from the
//                    caller's array); the backward takes tanh(c_t) again from c_t (the
//                    next step's cprev, or clast), with the forward's own gate_tanh
//   aux   (T,N,Hp)   GRU reset_after: W_hn h + b_hn; GRU reset-before: r*h
// Pointers a cell does not use are null.
// H rounded up to whole 64-byte lines when that adds at most a quarter (H of at least
// four lines), else H. The forward writes the tape with streaming stores, which need
// whole, aligned vectors: with H = 100 floats every gate segment started mid-line and
// most of the tape went through the caches (LSTM (100,32,100,100) forward training took
// 23-32% longer than inference, against ~4% at H = 128).
inline std::int64_t tape_stride(std::int64_t H, std::int64_t elem_bytes) {
  const std::int64_t line = 64 / elem_bytes;
  return H >= 4 * line ? (H + line - 1) / line * line : H;
}

template <class T>
struct SeqTape {
  T* hprev = nullptr;
  T* gates = nullptr;
  T* cprev = nullptr;
  T* clast = nullptr;
  T* hlast = nullptr;
  T* aux = nullptr;
};

template <class T>
struct SeqForward {
  SeqDims d;
  const T* x = nullptr;                   // (T,N,I)
  const T* h0 = nullptr;                  // (N,H), never null
  const T* c0 = nullptr;                  // (N,H), LSTM only, never null there
  const T* w_ih = nullptr;                // (G*H,I)
  const T* w_hh = nullptr;                // (G*H,H)
  const T* b_ih = nullptr;                // (G*H) or null
  const T* b_hh = nullptr;                // (G*H) or null
  const T* w_peep = nullptr;              // (3*H) LSTM peepholes p_i, p_f, p_o, or null
  const std::int64_t* lengths = nullptr;  // (N), 1 <= len <= T, or null (all T)
  T* y = nullptr;                         // (T,N,H) out
  T* h_n = nullptr;                       // (N,H) out
  T* c_n = nullptr;                       // (N,H) out, LSTM only
  bool training = false;
  SeqTape<T> tape;    // written when training
  // Training, where not null: copies of x, w_ih and w_hh (same shapes) for the backward,
  // which the caller's arrays may no longer match by then (each may be null on its own).
  // Written by the kernel's threads in parallel (past the caches from 1 MiB on).
  T* x_copy = nullptr;
  T* w_ih_copy = nullptr;
  T* w_hh_copy = nullptr;
  // W_ih and W_hh as pack_weights laid them out for d (same cell, GRU variant, I, H, type and
  // target), or null: the forward then packs them itself. A call whose rows (T*N) are too
  // few to pack reads w_ih and w_hh instead, so those must hold the same weights.
  const T* packed = nullptr;
  T* work = nullptr;  // forward_work(d) elements, 64-byte aligned
  std::int64_t work_size = 0;
  int num_threads = 1;
};

template <class T>
struct SeqBackward {
  SeqDims d;
  const T* x = nullptr;     // (T,N,I)
  const T* w_ih = nullptr;  // (G*H,I)
  const T* w_hh = nullptr;  // (G*H,H)
  const T* w_peep = nullptr;  // (3*H) as given to the forward, or null (no peepholes)
  const std::int64_t* lengths = nullptr;
  SeqTape<const T> tape;    // as written by the forward pass
  const T* dy = nullptr;    // (T,N,H) or null (zero)
  const T* dh_n = nullptr;  // (N,H) or null (zero)
  const T* dc_n = nullptr;  // (N,H) or null (zero), LSTM only
  T* dx = nullptr;          // (T,N,I) out
  T* dh0 = nullptr;         // (N,H) out
  T* dc0 = nullptr;         // (N,H) out, LSTM only
  T* dw_ih = nullptr;       // (G*H,I) out
  T* dw_hh = nullptr;       // (G*H,H) out
  T* db_ih = nullptr;       // (G*H) out or null (no bias)
  T* db_hh = nullptr;       // (G*H) out or null (no bias)
  T* dw_peep = nullptr;     // (3*H) out where w_peep is not null
  T* work = nullptr;        // backward_work(d) elements, 64-byte aligned
  std::int64_t work_size = 0;
  int num_threads = 1;
};

template <class T>
struct SeqFns {
  // Workspace elements the kernels need (64-bit, overflow-checked: throws
  // std::length_error when a size does not fit).
  std::int64_t (*forward_work)(const SeqDims& d);
  std::int64_t (*backward_work)(const SeqDims& d);
  void (*forward)(const SeqForward<T>& a);
  void (*backward)(const SeqBackward<T>& a);
  // Elements of the forward's packed W_ih and W_hh for d's cell, GRU variant, I and H (T and
  // N do not matter), and the packing itself into `out` (that many elements, 64-byte
  // aligned; w_ih (G*H,I) and w_hh (G*H,H) row-major). The layout belongs to this target.
  std::int64_t (*packed_size)(const SeqDims& d);
  void (*pack_weights)(const SeqDims& d, const T* w_ih, const T* w_hh, T* out, int num_threads);
};

struct SeqTable {
  SeqFns<float> f32;
  SeqFns<double> f64;
};

}  // namespace fastrnn

FASTRNN_DECLARE_TARGET_TABLE(SeqTable, seq_table)
