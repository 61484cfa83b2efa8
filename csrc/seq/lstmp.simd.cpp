// LSTM with a projection (seq/lstmp.h), forward and BPTT, one target.
//
// Forward: the weights laid out (lay_out, or pack() once beforehand), the input projection
// of all T*N rows as one GEMM; then one OpenMP region spans the time loop, with two phases
// per step, each ended by a barrier: (A) each thread owns fixed blocks of hidden units and
// computes their gates, r_{t-1} W_hh^T on register tiles (K = P), then the cell math (the
// input projection and the biases added there), c_t and m_t = o*tanh(c_t);
// (B) each thread owns fixed blocks of the P outputs and computes r_t = m_t W_hr^T
// (K = H), which is y_t and the next step's state. Per step that is 4HP + HP multiply-adds
// a row, against 4H*H + HP for folding W_hh W_hr into one H x 4H recurrent matrix.
// Backward: the reverse loop, also two barriers per step: dr_t = dy_t + dR (output blocks),
// dm_t = dr_t W_hr, the cell's backward into dG_t and the bias sums (unit blocks), then
// dR = dG_t W_hh (output blocks); after it, dx, dW_ih, dW_hh and dW_hr over all T*N rows.
// Threads split columns only: every sum runs in the same order for any thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cells/cells.h"
#include "gemm/gemm.h"
#include "runtime/checked.h"
#include "runtime/target.h"
#include "seq/lstmp.h"
#include "seq/stream.h"
#include "seq/team.h"
#include "seq/workspace.h"
#include "seq/tile.h"
#include "simd/transpose.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

using i64 = std::int64_t;

// The most rows (T*N) the kernels compute from the weights as they are (forward: dot
// products; backward: axpy rows and GEMMs on the weights in PyTorch's layout) instead of
// laying them out for the register tiles (the layout reads and writes every weight: most
// of a one-step call). Inference and training, packed or not, take the same
// path for the same T*N, so that they give the same bits. Measured, forward, one step of
// N rows, I = H/2, P = H/4, 1 / 2 threads: H = 256, N = 1 0.034 / 0.024 ms (laid out:
// 0.11 / 0.16), N = 8 0.18 / 0.10 (N = 9, laid out: 0.15 / 0.17); H = 512, N = 8 0.50 /
// 0.32 (N = 9: 0.83 / 0.50); H = 1024, N = 8 2.7 / 1.3 (N = 9: 5.3 / 2.5).
constexpr i64 kDirectRows = 8;

struct Sizes {
  i64 U, Hu, Pp, G4, nb, np;  // block, padded H and P, 4*Hu, unit blocks, output blocks
};

template <class T>
Sizes sizes_of(const LstmpDims& d) {
  Sizes s{};
  s.U = lstmp_block<T>();
  s.Hu = lstmp_round<T>(d.H);
  s.Pp = lstmp_round<T>(d.P);
  s.G4 = 4 * s.Hu;
  s.nb = s.Hu / s.U;
  s.np = s.Pp / s.U;
  return s;
}

struct FwdLay {
  i64 wi, wg, wr, bias, peep, gx, p, cs, mb, rs, rb, total;
};
template <class T>
FwdLay fwd_lay(const LstmpDims& d) {
  const Sizes s = sizes_of<T>(d);
  const i64 TN = checked_mul(d.T, d.N, "T*N");
  Carve c;
  FwdLay l{};
  l.wi = c.take(d.I, s.G4, "weight_ih");
  l.wg = c.take(d.P, s.G4, "weight_hh");
  l.wr = c.take(s.Hu, s.Pp, "weight_hr");
  l.bias = c.take(s.G4, "bias");
  l.peep = c.take(3, s.Hu, "peepholes");
  l.gx = c.take(TN, s.G4, "T*N*4*H");
  l.p = c.take(d.N, s.G4, "N*4*H");
  l.cs = c.take(d.N, s.Hu, "N*H");
  l.mb = c.take(d.N, s.Hu, "N*H");
  l.rs = c.take(d.N, s.Pp, "N*P");
  l.rb = c.take(d.N, s.Pp, "N*P");
  l.total = c.off;
  return l;
}

struct BwdLay {
  i64 wgt, wrt, wip, dg, dr_all, dR, dr, tmp, dm, dc, dwi, dwh, bsum, peep, psum, dgu, total;
};
template <class T>
BwdLay bwd_lay(const LstmpDims& d) {
  const Sizes s = sizes_of<T>(d);
  const i64 TN = checked_mul(d.T, d.N, "T*N");
  Carve c;
  BwdLay l{};
  l.wgt = c.take(s.G4, s.Pp, "weight_hh");
  l.wrt = c.take(d.P, s.Hu, "weight_hr");
  l.wip = c.take(s.G4, d.I, "weight_ih");
  l.dg = c.take(TN, s.G4, "T*N*4*H");
  l.dr_all = c.take(TN, s.Pp, "T*N*P");
  l.dR = c.take(d.N, s.Pp, "N*P");
  l.dr = c.take(d.N, s.Pp, "N*P");
  l.tmp = c.take(d.N, s.Pp, "N*P");
  l.dm = c.take(d.N, s.Hu, "N*H");
  l.dc = c.take(d.N, s.Hu, "N*H");
  l.dwi = c.take(s.G4, d.I, "weight_ih");
  l.dwh = c.take(s.G4, d.P, "weight_hh");
  l.bsum = c.take(s.G4, "bias");
  l.peep = c.take(3, s.Hu, "peepholes");
  l.psum = c.take(3, s.Hu, "peepholes");
  // the direct path's dG in PyTorch's gate rows (a few rows only)
  l.dgu = c.take(TN <= kDirectRows ? checked_mul(TN, 4 * d.H, "T*N*4*H") : 0, "T*N*4*H");
  l.total = c.off;
  return l;
}

template <class T>
i64 work(const LstmpDims& d, bool backward) {
  return backward ? bwd_lay<T>(d).total : fwd_lay<T>(d).total;
}

// The permuted column of gate g of unit j (seq/lstmp.h), and back: the unit j of column
// col and the row of the weights (g*H + j) it holds.
inline i64 gate_col(i64 U, int g, i64 j) { return j / U * 4 * U + g * U + j % U; }
struct ColUnit {
  i64 j, row;
};
inline ColUnit col_unit(i64 U, i64 H, i64 col) {
  const i64 j = col / (4 * U) * U + col % U;
  return {j, col % (4 * U) / U * H + j};
}

// Threads: at most one per unit block, and only as many as keep about 48k multiply-adds
// per thread per step: a step has two barriers. Measured, 1 thread against 2, forward,
// N = 1: (100,1,64,256,P=64) (82k a step) 0.88 vs 1.01 ms, (100,1,256,256,96) (123k)
// 1.74 vs 0.97 ms.
inline int team(int want, const LstmpDims& d, const Sizes& s) {
  const i64 useful = std::max<i64>(1, d.N * (s.G4 * d.P + s.Hu * s.Pp) / 49152);
  return static_cast<int>(std::max<i64>(1, std::min<i64>({i64{want}, s.nb, useful})));
}

// What a thread of the time loop's team owns for the whole sequence: unit blocks [b0, b1)
// (units [u0, u1)) and output columns [q0, q1), whole blocks each. Thread 0 sets the step
// barrier's count (published by the caller's omp_barrier()).
struct Owned {
  i64 b0, b1, u0, u1, q0, q1;
};
inline Owned join(StepBarrier& bar, const Sizes& s) {
  int tid = 0, nth = 1;
  thread_id(tid, nth);
  if (tid == 0) bar.count = nth;
  Owned o{};
  o.b0 = s.nb * tid / nth;
  o.b1 = s.nb * (tid + 1) / nth;
  o.u0 = o.b0 * s.U;
  o.u1 = o.b1 * s.U;
  o.q0 = s.np * tid / nth * s.U;
  o.q1 = s.np * (tid + 1) / nth * s.U;
  return o;
}

// C[:, c0:c1) = A (N x K) B[:, c0:c1) on register tiles of up to four vectors (c0, c1
// multiples of the vector width; B rows ldb apart, C rows ldc apart). Every element is the
// sum over k in one fixed order whatever the column range (tile::panel_fixed).
template <class T>
void product(i64 N, i64 K, const T* A, i64 lda, const T* B, i64 ldb, T* C, i64 ldc, i64 c0,
             i64 c1) {
  constexpr i64 L = tile::lanes<T>();
  constexpr i64 kc = 256;
  const int mr = tile::max_rows(4);
  for (i64 j = c0; j < c1; j += 4 * L) {
    const int cv = static_cast<int>(std::min<i64>(4, (c1 - j) / L));
    tile::panel_fixed<T>(cv, mr, N, K, kc, A, lda, B + j, ldb, C + j, ldc, false);
  }
}

// One row of one unit block: p (4U, gate g at g*U) in: W_hh r; out: the activations.
// gx: the input projection, b: both biases summed; c_in -> c_out, m = o*tanh(c_out).
// Peepholes (pp: the block's p_i, p_f, p_o, ph apart, zeros past H; or null) as in
// cells::lstm_step.
template <class T>
FASTRNN_INLINE void cell_fwd(i64 U, T* p, const T* gx, const T* b, const T* c_in, T* c_out,
                             T* m, const T* pp, i64 ph) {
  using V = simd::Vec<T>;
  auto pre = [&](i64 k) FASTRNN_INLINE_LAMBDA {
    return V::load(p + k) + V::load(gx + k) + V::load(b + k);
  };
  for (i64 u = 0; u < U; u += V::lanes) {
    const V cin = V::load(c_in + u);
    const V i = cells::gate_sigmoid(pp ? pre(u) + V::load(pp + u) * cin : pre(u));
    const V f = cells::gate_sigmoid(pp ? pre(U + u) + V::load(pp + ph + u) * cin : pre(U + u));
    const V g = cells::gate_tanh(pre(2 * U + u));
    const V c = f * cin + i * g;
    const V o = cells::gate_sigmoid(pp ? pre(3 * U + u) + V::load(pp + 2 * ph + u) * c
                                       : pre(3 * U + u));
    i.store(p + u);
    f.store(p + U + u);
    g.store(p + 2 * U + u);
    o.store(p + 3 * U + u);
    c.store(c_out + u);
    (o * cells::gate_tanh(c)).store(m + u);
  }
}

inline bool active(const i64* lengths, i64 t, i64 n) { return !lengths || t < lengths[n]; }

// p (3*H: p_i, p_f, p_o) into out (3*Hu), zeros past H in each third; returns out.
template <class T>
const T* pad_peepholes(const T* p, i64 H, i64 Hu, T* out) {
  for (int k = 0; k < 3; ++k) {
    std::copy(p + k * H, p + (k + 1) * H, out + k * Hu);
    std::fill(out + k * Hu + H, out + (k + 1) * Hu, T(0));
  }
  return out;
}


// sum over k < K of w[k] v[k]: four vector sums over interleaved runs of k (four chains of
// fused multiply-adds in flight, not one), added pairwise, then across the lanes
// (simd::reduce_add); one order per (K, target).
template <class T>
FASTRNN_INLINE T dot(const T* w, const T* v, i64 K) {
  using V = simd::Vec<T>;
  constexpr i64 L = V::lanes;
  V acc[4] = {V::zero(), V::zero(), V::zero(), V::zero()};
  i64 k = 0;
  for (; k + 4 * L <= K; k += 4 * L) {
    for (int i = 0; i < 4; ++i) {
      acc[i] = simd::fma(V::load(w + k + i * L), V::load(v + k + i * L), acc[i]);
    }
  }
  for (; k + L <= K; k += L) acc[0] = simd::fma(V::load(w + k), V::load(v + k), acc[0]);
  if (k < K) {
    const int r = static_cast<int>(K - k);
    acc[1] = simd::fma(V::load_partial(w + k, r), V::load_partial(v + k, r), acc[1]);
  }
  return simd::reduce_add((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

// y[0, n) += alpha * x[0, n), one fused multiply-add per element.
template <class T>
FASTRNN_INLINE void axpy(i64 n, T alpha, const T* x, T* y) {
  using V = simd::Vec<T>;
  const V va = V::broadcast(alpha);
  simd::for_vectors<T>(n, [&](i64 i, auto ld, auto st) {
    st(y + i, simd::fma(va, ld(x + i), ld(y + i)));
  });
}

// dst (K x ld, first 4Hu columns) = w^T in the permuted layout, w (4H x K) row-major; zeros
// in the padded units' columns. Each gate of a block is U rows of w transposed in register
// blocks (simd::transpose_rect); element by element, the strided reads or writes took
// 5-7 ns each (a (1,1,512,256,64) forward spent 3.8 ms laying W_ih out).
template <class T>
void transpose_gates(const T* w, i64 H, i64 K, i64 U, T* dst, i64 ld, int th) {
  const i64 nb = (H + U - 1) / U;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(th) schedule(static) if (th > 1 && nb * U * K >= 32768)
#endif
  for (i64 bg = 0; bg < 4 * nb; ++bg) {
    const i64 b = bg / 4, g = bg % 4, valid = std::min(U, H - b * U);
    T* out = dst + b * 4 * U + g * U;
    simd::transpose_rect(w + (g * H + b * U) * K, K, valid, K, out, ld);
    if (valid < U) {
      for (i64 k = 0; k < K; ++k) std::fill(out + k * ld + valid, out + k * ld + U, T(0));
    }
  }
}

// The forward's weight layout into out[0, packed_size(d)): W_ih^T (I x 4Hu) and W_hh^T
// (P x 4Hu) in the permuted columns, W_hr^T (Hu x Pp), zeros past H and P, at the offsets
// of the forward's workspace (fwd_lay: the same for any T and N).
template <class T>
void lay_out(const LstmpDims& d, const T* w_ih, const T* w_hh, const T* w_hr, T* out, int th) {
  const Sizes s = sizes_of<T>(d);
  const FwdLay l = fwd_lay<T>(d);
  const i64 H = d.H, P = d.P;
  transpose_gates(w_ih, H, d.I, s.U, out + l.wi, s.G4, th);
  transpose_gates(w_hh, H, P, s.U, out + l.wg, s.G4, th);
  T* wr = out + l.wr;
  simd::transpose_rect(w_hr, H, P, H, wr, s.Pp);  // W_hr^T, then its padding
  for (i64 j = 0; j < s.Hu; ++j) {
    std::fill(wr + j * s.Pp + (j < H ? P : 0), wr + (j + 1) * s.Pp, T(0));
  }
}

template <class T>
i64 packed_size(const LstmpDims& d) {
  return fwd_lay<T>(d).bias;  // the weight regions come first
}

template <class T>
void pack(const LstmpDims& d, const T* w_ih, const T* w_hh, const T* w_hr, T* out, int th) {
  lay_out(d, w_ih, w_hh, w_hr, out, std::max(1, th));
}

template <class T>
void forward(const LstmpForward<T>& a) {
  const LstmpDims& d = a.d;
  const Sizes s = sizes_of<T>(d);
  const FwdLay l = fwd_lay<T>(d);
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H, P = d.P, TN = Tn * N;
  const i64 U = s.U, Hu = s.Hu, Pp = s.Pp, G4 = s.G4;
  T* bias = a.work + l.bias;
  T* gx = a.work + l.gx;
  const bool tr = a.training;
  const int th = std::max(1, a.num_threads);
  // A call of a few rows reads the weights where they are (direct); else their layout:
  // the caller's (pack), or made here at the same offsets.
  const bool direct = TN <= kDirectRows;
  // The tape's copies, by every thread (streamed from 1 MiB on: only the backward reads
  // them). A call of a few rows and large weights is mostly these copies; against NumPy
  // copying them after the call, 2 threads: training forward (1,1,512,1024,256) 1.45x
  // faster, (1,2,1024,1024,512) 1.4x; with weights under 1 MiB the same.
  if (a.x_copy || a.w_ih_copy || a.w_hh_copy || a.w_hr_copy) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(th) if (th > 1)
#endif
    {
      int tid = 0, nth = 1;
      thread_id(tid, nth);
      if (a.x_copy) copy_share(a.x_copy, a.x, TN * I, tid, nth);
      if (a.w_ih_copy) copy_share(a.w_ih_copy, a.w_ih, 4 * H * I, tid, nth);
      if (a.w_hh_copy) copy_share(a.w_hh_copy, a.w_hh, 4 * H * P, tid, nth);
      if (a.w_hr_copy) copy_share(a.w_hr_copy, a.w_hr, P * H, tid, nth);
      simd::stream_fence();
    }
  }
  if (!direct && !a.packed) lay_out(d, a.w_ih, a.w_hh, a.w_hr, a.work, th);
  const T* wsrc = a.packed ? a.packed : a.work;
  const T* wi = wsrc + l.wi;
  const T* wg = wsrc + l.wg;
  const T* wr = wsrc + l.wr;
  for (i64 col = 0; col < G4; ++col) {  // both biases summed
    const auto [j, row] = col_unit(U, H, col);
    T bsum = T(0);
    if (j < H && a.b_ih) bsum += a.b_ih[row];
    if (j < H && a.b_hh) bsum += a.b_hh[row];
    bias[col] = bsum;
  }
  // The peepholes with zeros past H, so that a block's vectors read whole (cell_fwd).
  const T* peep = a.w_peep ? pad_peepholes(a.w_peep, H, Hu, a.work + l.peep) : nullptr;
  if (!direct) gemm<T>(Trans::no, Trans::no, TN, G4, I, T(1), a.x, I, wi, G4, T(0), gx, G4, th);

  T* pbuf = a.work + l.p;    // inference: the step's gates
  T* cst = a.work + l.cs;    // inference: c
  T* mbuf = a.work + l.mb;   // inference: m_t
  T* rst = a.work + l.rs;    // r, the state (N x Pp)
  T* rbuf = a.work + l.rb;   // r_t before the length mask
  const LstmpTape<T>& tp = a.tape;
  const int nt = team(th, d, s);
  StepBarrier bar;

#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    const auto [b0, b1, u0, u1, q0, q1] = join(bar, s);
    const i64 t_first = d.reverse ? Tn - 1 : 0;
    for (i64 n = 0; n < N; ++n) {
      for (i64 q = q0; q < q1; ++q) {
        rst[n * Pp + q] = q < P ? a.h0[n * P + q] : T(0);
        if (tr) tp.rprev[(t_first * N + n) * Pp + q] = rst[n * Pp + q];
      }
      for (i64 j = u0; j < u1; ++j) {
        const T c = j < H ? a.c0[n * H + j] : T(0);
        if (tr) {
          tp.c0[n * Hu + j] = c;
        } else {
          cst[n * Hu + j] = c;
        }
      }
    }
    omp_barrier();  // publishes bar.count and the initial states

    for (i64 st = 0; st < Tn; ++st) {
      const i64 t = d.reverse ? Tn - 1 - st : st;
      const i64 t_prev = d.reverse ? t + 1 : t - 1;
      const i64 t_next = d.reverse ? t - 1 : t + 1;
      // (A) gates and cell of the owned units
      T* pt = tr ? tp.gates + t * N * G4 : pbuf;
      if (direct) {  // pt = r_{t-1} W_hh^T and Gx_t = x_t W_ih^T, by dot products
        for (i64 n = 0; n < N; ++n) {
          for (i64 col = b0 * 4 * U; col < b1 * 4 * U; ++col) {
            const auto [j, row] = col_unit(U, H, col);
            const bool in = j < H;
            pt[n * G4 + col] = in ? dot(a.w_hh + row * P, rst + n * Pp, P) : T(0);
            gx[(t * N + n) * G4 + col] = in ? dot(a.w_ih + row * I, a.x + (t * N + n) * I, I)
                                            : T(0);
          }
        }
      } else {
        product(N, P, rst, Pp, wg, G4, pt, G4, b0 * 4 * U, b1 * 4 * U);
      }
      const T* c_in = tr ? (st == 0 ? tp.c0 : tp.c + t_prev * N * Hu) : cst;
      T* c_out = tr ? tp.c + t * N * Hu : cst;
      T* mt = tr ? tp.m + t * N * Hu : mbuf;
      for (i64 n = 0; n < N; ++n) {
        const bool on = active(a.lengths, t, n);
        for (i64 b = b0; b < b1; ++b) {
          const i64 cu = n * Hu + b * U;
          if (!on) {  // the state carried, m = 0
            if (c_out != c_in) std::memcpy(c_out + cu, c_in + cu, sizeof(T) * U);
            std::fill(mt + cu, mt + cu + U, T(0));
            continue;
          }
          const i64 gc = n * G4 + b * 4 * U;
          cell_fwd(U, pt + gc, gx + t * N * G4 + gc, bias + b * 4 * U, c_in + cu, c_out + cu,
                   mt + cu, peep ? peep + b * U : nullptr, Hu);
        }
      }
      bar.wait();
      // (B) r_t = m_t W_hr^T on the owned outputs
      if (direct) {
        for (i64 n = 0; n < N; ++n)
          for (i64 q = q0; q < q1; ++q)
            rbuf[n * Pp + q] = q < P ? dot(a.w_hr + q * H, mt + n * Hu, H) : T(0);
      } else {
        product(N, Hu, mt, Hu, wr, Pp, rbuf, Pp, q0, q1);
      }
      for (i64 n = 0; n < N; ++n) {
        const bool on = active(a.lengths, t, n);
        T* yr = a.y + (t * N + n) * P;
        for (i64 q = q0; q < q1; ++q) {
          if (on) rst[n * Pp + q] = rbuf[n * Pp + q];
          if (q < P) yr[q] = on ? rbuf[n * Pp + q] : T(0);
          if (tr && st + 1 < Tn) tp.rprev[(t_next * N + n) * Pp + q] = rst[n * Pp + q];
        }
      }
      bar.wait();
    }
    const T* c_last = tr ? tp.c + (d.reverse ? 0 : Tn - 1) * N * Hu : cst;
    for (i64 n = 0; n < N; ++n) {
      for (i64 q = q0; q < std::min(q1, P); ++q) a.h_n[n * P + q] = rst[n * Pp + q];
      for (i64 j = u0; j < std::min(u1, H); ++j) a.c_n[n * H + j] = c_last[n * Hu + j];
    }
  }
}

template <class T>
void backward(const LstmpBackward<T>& a) {
  const LstmpDims& d = a.d;
  const Sizes s = sizes_of<T>(d);
  const BwdLay l = bwd_lay<T>(d);
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H, P = d.P, TN = Tn * N;
  const i64 U = s.U, Hu = s.Hu, Pp = s.Pp, G4 = s.G4;
  T* wgt = a.work + l.wgt;  // W_hh, permuted rows (4Hu x Pp)
  T* wrt = a.work + l.wrt;  // W_hr (P x Hu)
  T* wip = a.work + l.wip;  // W_ih, permuted rows (4Hu x I)
  T* dg = a.work + l.dg;    // dG for every step (T*N x 4Hu)
  T* dr_all = a.work + l.dr_all;  // dL/dr_t for every step (T*N x Pp), 0 when inactive
  T* dR = a.work + l.dR;    // dL/dr flowing into the step (N x Pp)
  T* drb = a.work + l.dr;   // dr_t of the step
  T* tmp = a.work + l.tmp;
  T* dm = a.work + l.dm;
  T* dc = a.work + l.dc;
  T* bsum = a.work + l.bsum;  // column sums of dG: both bias gradients
  // the peepholes (zeros past H), and the sums of their gradients (3*Hu each), or null
  const T* peep = a.w_peep ? pad_peepholes(a.w_peep, H, Hu, a.work + l.peep) : nullptr;
  T* psum = a.work + l.psum;
  const int th = std::max(1, a.num_threads);
  const LstmpTape<const T>& tp = a.tape;
  const bool direct = TN <= kDirectRows;  // the weights as they are (kDirectRows)

#if defined(_OPENMP)
#pragma omp parallel for num_threads(th) schedule(static) if (th > 1 && !direct)
#endif
  for (i64 col = 0; col < (direct ? 0 : G4); ++col) {  // whole rows copied
    const auto [j, row] = col_unit(U, H, col);
    const bool in = j < H;
    for (i64 q = 0; q < Pp; ++q) wgt[col * Pp + q] = in && q < P ? a.w_hh[row * P + q] : T(0);
    if (in) {
      std::memcpy(wip + col * I, a.w_ih + row * I, sizeof(T) * I);
    } else {
      std::fill(wip + col * I, wip + (col + 1) * I, T(0));
    }
  }
  for (i64 q = 0; q < (direct ? 0 : P); ++q)
    for (i64 j = 0; j < Hu; ++j) wrt[q * Hu + j] = j < H ? a.w_hr[q * H + j] : T(0);

  const int nt = team(th, d, s);
  StepBarrier bar;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    const auto [b0, b1, u0, u1, q0, q1] = join(bar, s);
    for (i64 n = 0; n < N; ++n) {
      for (i64 q = q0; q < q1; ++q) dR[n * Pp + q] = a.dh_n && q < P ? a.dh_n[n * P + q] : T(0);
      for (i64 j = u0; j < u1; ++j) dc[n * Hu + j] = a.dc_n && j < H ? a.dc_n[n * H + j] : T(0);
    }
    std::fill(bsum + b0 * 4 * U, bsum + b1 * 4 * U, T(0));
    for (int k = 0; k < 3; ++k) std::fill(psum + k * Hu + u0, psum + k * Hu + u1, T(0));
    omp_barrier();

    for (i64 st = 0; st < Tn; ++st) {
      const i64 t = d.reverse ? st : Tn - 1 - st;  // the forward's steps, last first
      const bool first = st + 1 == Tn;             // the forward's first step
      const i64 t_prev = d.reverse ? t + 1 : t - 1;
      // (1) dr_t = dR + dy_t on the owned outputs
      for (i64 n = 0; n < N; ++n) {
        const bool on = active(a.lengths, t, n);
        const T* dyr = a.dy ? a.dy + (t * N + n) * P : nullptr;
        T* dra = dr_all + (t * N + n) * Pp;
        for (i64 q = q0; q < q1; ++q) {
          const T v = on ? dR[n * Pp + q] + (dyr && q < P ? dyr[q] : T(0)) : T(0);
          drb[n * Pp + q] = v;
          dra[q] = v;
        }
      }
      bar.wait();
      // (2) dm_t = dr_t W_hr and the cell's backward on the owned units
      if (direct) {  // the rows of W_hr, q in order
        const i64 len = std::max<i64>(0, std::min(u1, H) - u0);
        for (i64 n = 0; n < N; ++n) {
          T* dmr = dm + n * Hu;
          std::fill(dmr + u0, dmr + u1, T(0));
          for (i64 q = 0; q < P; ++q) axpy(len, drb[n * Pp + q], a.w_hr + q * H + u0, dmr + u0);
        }
      } else {
        product(N, P, drb, Pp, wrt, Hu, dm, Hu, u0, u1);
      }
      const T* c_prev = first ? tp.c0 : tp.c + t_prev * N * Hu;
      for (i64 n = 0; n < N; ++n) {
        const bool on = active(a.lengths, t, n);
        T* dgr = dg + (t * N + n) * G4;
        for (i64 b = b0; b < b1; ++b) {
          if (!on) {
            std::fill(dgr + b * 4 * U, dgr + (b + 1) * 4 * U, T(0));
            continue;
          }
          const i64 cu = n * Hu + b * U;
          cells::lstm_bwd<T>(static_cast<int>(U), U, U, dm + cu,
                             tp.gates + (t * N + n) * G4 + b * 4 * U, c_prev + cu,
                             tp.c + t * N * Hu + cu, dc + cu, dgr + b * 4 * U,
                             peep ? peep + b * U : nullptr, Hu);
        }
        // The bias sums of the owned columns while dG_t is in the cache: every column
        // summed over the steps and rows in one order, whatever the thread count.
        for (i64 col = b0 * 4 * U; col < b1 * 4 * U; ++col) bsum[col] += dgr[col];
        // So are the peepholes': dp_i += dA_i c_{t-1}, dp_f += dA_f c_{t-1},
        // dp_o += dA_o c_t (dA is zero on inactive steps).
        if (!peep) continue;
        for (i64 b = b0; b < b1; ++b) {
          const T* dgb = dgr + b * 4 * U;
          const T* cp = c_prev + n * Hu + b * U;
          const T* ct = tp.c + (t * N + n) * Hu + b * U;
          T* ps = psum + b * U;
          for (i64 u = 0; u < U; ++u) {
            ps[u] += dgb[u] * cp[u];
            ps[Hu + u] += dgb[U + u] * cp[u];
            ps[2 * Hu + u] += dgb[3 * U + u] * ct[u];
          }
        }
      }
      bar.wait();
      // (3) dR = dG_t W_hh on the owned outputs (rows past their length keep theirs)
      if (direct) {  // the rows of W_hh, the permuted columns in order
        const i64 len = std::max<i64>(0, std::min(q1, P) - q0);
        for (i64 n = 0; n < N; ++n) {
          T* tmr = tmp + n * Pp;
          const T* dgr = dg + (t * N + n) * G4;
          std::fill(tmr + q0, tmr + q1, T(0));
          for (i64 col = 0; col < G4; ++col) {
            const auto [j, row] = col_unit(U, H, col);
            if (j < H) axpy(len, dgr[col], a.w_hh + row * P + q0, tmr + q0);
          }
        }
      } else {
        product(N, G4, dg + t * N * G4, G4, wgt, Pp, tmp, Pp, q0, q1);
      }
      for (i64 n = 0; n < N; ++n) {
        if (!active(a.lengths, t, n)) continue;
        std::memcpy(dR + n * Pp + q0, tmp + n * Pp + q0, sizeof(T) * (q1 - q0));
      }
    }
    for (i64 n = 0; n < N; ++n) {
      for (i64 q = q0; q < std::min(q1, P); ++q) a.dh0[n * P + q] = dR[n * Pp + q];
      for (i64 j = u0; j < std::min(u1, H); ++j) a.dc0[n * H + j] = dc[n * Hu + j];
    }
  }

  // Input, weight and bias gradients over all T*N rows; permuted rows back to PyTorch's
  // (direct: dG's few rows first, then the products against the weights as they are).
  gemm<T>(Trans::yes, Trans::no, P, H, TN, T(1), dr_all, Pp, tp.m, Hu, T(0), a.dw_hr, H, th);
  if (direct) {
    T* dgu = a.work + l.dgu;  // (T*N, 4H)
    for (i64 r = 0; r < TN; ++r) {
      for (i64 col = 0; col < G4; ++col) {
        const auto [j, row] = col_unit(U, H, col);
        if (j < H) dgu[r * 4 * H + row] = dg[r * G4 + col];
      }
    }
    gemm<T>(Trans::no, Trans::no, TN, I, 4 * H, T(1), dgu, 4 * H, a.w_ih, I, T(0), a.dx, I, th);
    gemm<T>(Trans::yes, Trans::no, 4 * H, I, TN, T(1), dgu, 4 * H, a.x, I, T(0), a.dw_ih, I, th);
    gemm<T>(Trans::yes, Trans::no, 4 * H, P, TN, T(1), dgu, 4 * H, tp.rprev, Pp, T(0), a.dw_hh,
            P, th);
  } else {
    T* dwi = a.work + l.dwi;
    T* dwh = a.work + l.dwh;
    gemm<T>(Trans::no, Trans::no, TN, I, G4, T(1), dg, G4, wip, I, T(0), a.dx, I, th);
    gemm<T>(Trans::yes, Trans::no, G4, I, TN, T(1), dg, G4, a.x, I, T(0), dwi, I, th);
    gemm<T>(Trans::yes, Trans::no, G4, P, TN, T(1), dg, G4, tp.rprev, Pp, T(0), dwh, P, th);
    for (int g = 0; g < 4; ++g) {
      for (i64 j = 0; j < H; ++j) {
        const i64 col = gate_col(U, g, j), row = g * H + j;
        std::memcpy(a.dw_ih + row * I, dwi + col * I, sizeof(T) * I);
        std::memcpy(a.dw_hh + row * P, dwh + col * P, sizeof(T) * P);
      }
    }
  }
  for (int g = 0; g < 4; ++g) {
    for (i64 j = 0; j < H; ++j) {
      const i64 col = gate_col(U, g, j), row = g * H + j;
      if (a.db_ih) a.db_ih[row] = bsum[col];
      if (a.db_hh) a.db_hh[row] = bsum[col];
    }
  }
  if (a.dw_peep) {
    for (int k = 0; k < 3; ++k) std::copy(psum + k * Hu, psum + k * Hu + H, a.dw_peep + k * H);
  }
}

}  // namespace

const LstmpTable& lstmp_table() {
  static const LstmpTable t{
      {&work<float>, &forward<float>, &backward<float>, &packed_size<float>, &pack<float>},
      {&work<double>, &forward<double>, &backward<double>, &packed_size<double>, &pack<double>},
  };
  return t;
}

FASTRNN_TARGET_NS_END
