// Per-cell pointwise math, forward and backward, for one batch row and a run of
// hidden units. Included by per-target kernel files: everything here lives in
// namespace fastrnn::<target>.
//
// Forward functions take the recurrent pre-activations of one row of a block
// of U hidden units laid out gate by gate, p[g*U + u] (g < G, u < U), add the
// input projection gx (same layout) and leave the gate activations in p.
// Only the first `len` units of each gate are meaningful (len <= U).
// Backward functions work on units [0, len) of (…, G*stride) rows: gate g of unit u
// sits at [g*stride + u], with the tape's stride for the activations and dG's for the
// gradients (the caller offsets the pointers).
#pragma once

#include <cstdint>
#include <type_traits>

#include "runtime/target.h"
#include "seq/seq.h"
#include "simd/math.h"

FASTRNN_TARGET_NS_BEGIN
namespace cells {

// ---- activations (the one place to swap in vector math) ---------------------
// simd/math.h's `_fast` variants: no correction step after the division, max error 3 ulp
// on every target (the accurate ones: 2-2.5 with FMA, 3 without). The gate math is most of
// a step's work besides its products (at H = 128, 5 activations per LSTM unit took 6% of
// the forward); measured against the accurate ones, 2 threads, inference: LSTM
// (200,32,128,128) and (100,32,100,100) 1.03x faster, (100,64,256,256) 1.01x.
template <class T>
FASTRNN_INLINE simd::Vec<T> gate_sigmoid(simd::Vec<T> v) {
  return simd::sigmoid_fast(v);
}
template <class T>
FASTRNN_INLINE simd::Vec<T> gate_tanh(simd::Vec<T> v) {
  return simd::tanh_fast(v);
}
template <class T>
inline void sigmoid_n(T* p, int n) {
  simd::sigmoid_fast_array(p, p, n);
}
template <class T>
inline void tanh_n(T* p, int n) {
  simd::tanh_fast_array(p, p, n);
}
template <class T>
inline void relu_n(T* p, int n) {
  for (int i = 0; i < n; ++i) p[i] = p[i] > T(0) ? p[i] : T(0);
}
template <class T>
inline void act_n(Act act, T* p, int n) {
  if (act == Act::tanh) {
    tanh_n(p, n);
  } else if (act == Act::relu) {
    relu_n(p, n);
  } else {
    sigmoid_n(p, n);
  }
}

// ---- forward --------------------------------------------------------------
// RNN: h' = phi(a), a = p + gx. p (U) in: W_hh h; out: h'.
template <class T>
inline void rnn_fwd(Act act, int len, T* p, const T* gx) {
  for (int u = 0; u < len; ++u) p[u] += gx[u];
  act_n(act, p, len);
}

// The first len units of a row (len <= lanes): a whole vector when len == lanes, else a
// partial load or store that touches only those units (the row may end there).
template <class T>
FASTRNN_INLINE simd::Vec<T> load_units(const T* p, int len) {
  using V = simd::Vec<T>;
  return len == V::lanes ? V::load(p) : V::load_partial(p, len);
}
template <class T>
FASTRNN_INLINE void store_units(simd::Vec<T> v, T* p, int len) {
  if (len == simd::Vec<T>::lanes) {
    v.store(p);
  } else {
    v.store_partial(p, len);
  }
}

// rnn_fwd for inference: h' = phi(p + gx) straight to the state and to y (len units each),
// p unchanged. Per element the same operations as rnn_fwd, so the same bits. The activation
// is chosen once per row, outside the loop over vectors (chosen per vector, RNN inference at
// N <= 8 was 3-4% slower than through rnn_fwd; this way 1.04-1.19x faster, 2 threads).
template <class T, class Phi>
FASTRNN_INLINE void rnn_out(int len, const T* p, const T* gx, T* h_out, T* y_out, Phi phi) {
  using V = simd::Vec<T>;
  int u = 0;
  for (; u + V::lanes <= len; u += V::lanes) {
    const V h = phi(V::load(p + u) + V::load(gx + u));
    h.store(h_out + u);
    h.store(y_out + u);
  }
  if (u < len) {
    const int w = len - u;
    const V h = phi(load_units(p + u, w) + load_units(gx + u, w));
    store_units(h, h_out + u, w);
    store_units(h, y_out + u, w);
  }
}
template <class T>
inline void rnn_fwd_infer(Act act, int len, const T* p, const T* gx, T* h_out, T* y_out) {
  using V = simd::Vec<T>;
  if (act == Act::tanh) {
    rnn_out(len, p, gx, h_out, y_out, [](V a) { return simd::tanh_fast(a); });
  } else if (act == Act::relu) {
    rnn_out(len, p, gx, h_out, y_out,
            [](V a) { return simd::select(a > V::zero(), a, V::zero()); });
  } else {
    rnn_out(len, p, gx, h_out, y_out, [](V a) { return simd::sigmoid_fast(a); });
  }
}

// Gate g of one row of a block in q (gate_in: in p and in gx, added). S = U: a whole vector.
// S < U, a short last block whose gates sit side by side (S = len units each): its S units,
// zeros past them.
template <class T>
FASTRNN_INLINE simd::Vec<T> gate_load(const T* q, int g, int S, int U) {
  using V = simd::Vec<T>;
  return S == U ? V::load(q + g * U) : V::load_partial(q + g * S, S);
}
template <class T>
FASTRNN_INLINE simd::Vec<T> gate_in(const T* p, const T* gx, int g, int S, int U) {
  return gate_load(p, g, S, U) + gate_load(gx, g, S, U);
}

// The gates, c_new = f*c_in + i*g, tanh(c_new) and h_new = o*tanh(c_new) of one row of a
// block (in registers). One body for lstm_fwd and lstm_fwd_infer, so that training and
// inference get the same bits: the same statements, so the same fused multiply-adds.
// Peepholes (pp, or null for none): the block's p_i, p_f, p_o at pp, pp + ph, pp + 2*ph
// (len units each); i and f also see c_in, o sees c_new (reference.lstm).
template <class T>
struct LstmStep {
  simd::Vec<T> i, f, g, o, c, tc, h;
};
template <class T>
FASTRNN_INLINE LstmStep<T> lstm_step(int len, int U, int S, const T* p, const T* gx,
                                     const T* c_in, const T* pp, std::int64_t ph) {
  using V = simd::Vec<T>;
  LstmStep<T> r;
  const V cin = load_units(c_in, len);
  if (!pp) {  // the four gates side by side: independent chains for the out-of-order core
    r.i = gate_sigmoid(gate_in(p, gx, 0, S, U));
    r.f = gate_sigmoid(gate_in(p, gx, 1, S, U));
    r.g = gate_tanh(gate_in(p, gx, 2, S, U));
    r.o = gate_sigmoid(gate_in(p, gx, 3, S, U));
    r.c = r.f * cin + r.i * r.g;
  } else {  // o waits for c_new
    r.i = gate_sigmoid(gate_in(p, gx, 0, S, U) + load_units(pp, len) * cin);
    r.f = gate_sigmoid(gate_in(p, gx, 1, S, U) + load_units(pp + ph, len) * cin);
    r.g = gate_tanh(gate_in(p, gx, 2, S, U));
    r.c = r.f * cin + r.i * r.g;
    r.o = gate_sigmoid(gate_in(p, gx, 3, S, U) + load_units(pp + 2 * ph, len) * r.c);
  }
  r.tc = gate_tanh(r.c);
  r.h = r.o * r.tc;
  return r;
}

// LSTM: p (4U) in: W_hh h; out: i, f, g, o, gate g at p + g*S (S = U, or S = len for a
// short last block laid out side by side, see gate_in). c_in (len) -> c_new and
// h_new = o * tanh(c_new) (lstm_bwd takes tanh(c_new) again, from c_new). A block is one
// vector per gate (U == Vec<T>::lanes: the LSTM and GRU blocks of every target,
// seq.simd.cpp checks it), done in registers, inlined into the caller's row loop (as a call
// it spent a third of its time in the prologue of a general path's stack frame). A short
// last block (len < U) too: c_in is read with a partial load, p and gx hold G*S + U - S
// units (each gate's vector is stored whole, in gate order, so the next gate's store
// overwrites the lanes past len), and c_new and h_new must have room for U (the lanes past
// len get finite values nobody reads). In a scalar path, the 4 units left at H = 100 took a
// quarter of the forward's gate-math time.
template <class T>
FASTRNN_INLINE void lstm_fwd(int len, int U, int S, T* p, const T* gx, const T* c_in, T* c_new,
                             T* h_new, const T* pp, std::int64_t ph) {
  const LstmStep<T> r = lstm_step(len, U, S, p, gx, c_in, pp, ph);
  r.i.store(p);
  r.f.store(p + S);
  r.g.store(p + 2 * S);
  r.o.store(p + 3 * S);
  r.c.store(c_new);
  r.h.store(h_new);
}

// lstm_fwd for inference, which keeps neither the gates nor tanh(c): c updated in place
// (c_io, len units) and h_new written straight to the state and to y (h_out, y_out, len
// units each; partial stores in a short block). Through lstm_fwd's scratch rows and then
// copies, LSTM inference was 1.00-1.10x slower (2 threads, alternated in one process:
// (100,64,256,256) 1.05x, (200,32,128,128) 1.06x, (1000,8,64,64) 1.10x, (25,16,512,512) 1.0x).
template <class T>
FASTRNN_INLINE void lstm_fwd_infer(int len, int U, int S, const T* p, const T* gx, T* c_io,
                                   T* h_out, T* y_out, const T* pp, std::int64_t ph) {
  const LstmStep<T> r = lstm_step(len, U, S, p, gx, c_io, pp, ph);
  store_units(r.c, c_io, len);
  store_units(r.h, h_out, len);
  store_units(r.h, y_out, len);
}

// GRU, reset after the matmul, one row of a block in registers (as lstm_step, one body for
// gru_fwd and gru_fwd_infer): r, z, hn = W_hn h + b_hn, n and h_new = (1 - z) n + z h.
template <class T>
struct GruStep {
  simd::Vec<T> r, z, hn, n, h;
};
template <class T>
FASTRNN_INLINE GruStep<T> gru_step(int len, int U, int S, const T* p, const T* gx, const T* b_hn,
                                   const T* h) {
  using V = simd::Vec<T>;
  GruStep<T> q;
  q.r = gate_sigmoid(gate_in(p, gx, 0, S, U));
  q.z = gate_sigmoid(gate_in(p, gx, 1, S, U));
  q.hn = gate_load(p, 2, S, U) + V::load(b_hn);
  q.n = gate_tanh(gate_load(gx, 2, S, U) + q.r * q.hn);
  const V hv_in = load_units(h, len);
  q.h = q.n + q.z * (hv_in - q.n);
  return q;
}

// GRU, reset after the matmul: p (3U) in: W_hh h; out: r, z, n (gate stride S as in
// lstm_fwd). hn = W_hn h + b_hn, h_new = (1 - z) n + z h. One vector per gate in
// registers, a short block too, as in lstm_fwd: here h is read with a partial load; b_hn,
// hn and h_new hold U units.
template <class T>
FASTRNN_INLINE void gru_fwd(int len, int U, int S, T* p, const T* gx, const T* b_hn, const T* h,
                            T* hn, T* h_new) {
  const GruStep<T> q = gru_step(len, U, S, p, gx, b_hn, h);
  q.r.store(p);
  q.z.store(p + S);
  q.n.store(p + 2 * S);
  q.hn.store(hn);
  q.h.store(h_new);
}

// gru_fwd for inference: h_new straight to the state and to y (len units each, partial
// stores in a short block), nothing else kept (see lstm_fwd_infer; GRU inference 1.02-1.14x
// faster, 2 threads, H = 64-512).
template <class T>
FASTRNN_INLINE void gru_fwd_infer(int len, int U, int S, const T* p, const T* gx, const T* b_hn,
                                  const T* h, T* h_out, T* y_out) {
  const GruStep<T> q = gru_step(len, U, S, p, gx, b_hn, h);
  store_units(q.h, h_out, len);
  store_units(q.h, y_out, len);
}

// GRU, reset before the matmul, first half: p (2U) in: W_hr h, W_hz h; out: r, z.
template <class T>
inline void gru_rz_fwd(int len, int U, T* p, const T* gx) {
  for (int u = 0; u < len; ++u) {
    p[u] += gx[u];
    p[U + u] += gx[U + u];
  }
  sigmoid_n(p, len);
  sigmoid_n(p + U, len);
}

// Second half: pn (len) in: W_hn (r*h); out: n. gxn: W_in x + b_in + b_hn.
template <class T>
inline void gru_n_fwd(int len, T* pn, const T* gxn, const T* z, const T* h, T* h_new) {
  for (int u = 0; u < len; ++u) pn[u] += gxn[u];
  tanh_n(pn, len);
  for (int u = 0; u < len; ++u) h_new[u] = pn[u] + z[u] * (h[u] - pn[u]);
}

// ---- backward -------------------------------------------------------------
// Written over explicit vectors (simd::for_vectors: whole vectors, then a partial
// tail, each lane getting the operations a scalar loop would do): the compiler left
// these loops scalar (the outputs may alias the inputs as far as it can tell), and at
// small H they were most of the backward's own time.

// gh: dL/dh' (len). Writes dG (pre-activation gradients, gate stride H).
template <class T>
inline void rnn_bwd(Act act, int len, const T* gh, const T* a, T* dg) {
  using V = simd::Vec<T>;
  if (act == Act::relu) {
    for (int u = 0; u < len; ++u) dg[u] = a[u] > T(0) ? gh[u] : T(0);
    return;
  }
  const bool tanh = act == Act::tanh;
  simd::for_vectors<T>(len, [&](std::int64_t u, auto ld, auto st) {
    const V av = ld(a + u);
    st(dg + u, tanh ? ld(gh + u) * (T(1) - av * av) : ld(gh + u) * av * (T(1) - av));
  });
}

// LSTM. act: i,f,g,o (gate stride ha); c_prev and c: the step's cell state before and
// after; dG written with gate stride hg; dc (len) in: dL/dc' from later steps, out: dL/dc.
// tanh(c) comes from the forward's own gate_tanh, so it has the bits the forward used
// (on the same SIMD target); the tape no longer keeps it: the forward wrote an eighth
// less (LSTM training forward 1.00-1.06x faster), and c is the next step's c_prev, which
// the backward has just read. Peepholes as in lstm_step (pp, ph; null for none): o's
// gradient reaches c through p_o, and i's and f's reach c_prev through p_i and p_f.
template <class T>
inline void lstm_bwd(int len, std::int64_t ha, std::int64_t hg, const T* gh, const T* act,
                     const T* c_prev, const T* c, T* dc, T* dg, const T* pp, std::int64_t ph) {
  using V = simd::Vec<T>;
  auto body = [&](auto peep) {
    constexpr bool kPeep = decltype(peep)::value;
    simd::for_vectors<T>(len, [&](std::int64_t u, auto ld, auto st) {
      const V i = ld(act + u), f = ld(act + ha + u), g = ld(act + 2 * ha + u);
      const V o = ld(act + 3 * ha + u), t = gate_tanh(ld(c + u)), dh = ld(gh + u);
      const V dao = dh * t * o * (T(1) - o);
      V dct = ld(dc + u) + dh * o * (T(1) - t * t);
      if constexpr (kPeep) dct = dct + dao * ld(pp + 2 * ph + u);
      const V dai = dct * g * i * (T(1) - i);
      const V daf = dct * ld(c_prev + u) * f * (T(1) - f);
      st(dg + u, dai);
      st(dg + hg + u, daf);
      st(dg + 2 * hg + u, dct * i * (T(1) - g * g));
      st(dg + 3 * hg + u, dao);
      if constexpr (kPeep) {
        st(dc + u, dct * f + dai * ld(pp + u) + daf * ld(pp + ph + u));
      } else {
        st(dc + u, dct * f);
      }
    });
  };
  if (pp) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// GRU, reset after. act: r,z,n (gate stride ha); hn: W_hn h + b_hn. Writes dG for the
// input side (r, z, n; gate stride hg), dhn = dL/d(W_hn h + b_hn), and dh_direct = dL/dh
// via z.
template <class T>
inline void gru_bwd(int len, std::int64_t ha, std::int64_t hg, const T* gh, const T* act,
                    const T* h, const T* hn, T* dg, T* dhn, T* dh_direct) {
  using V = simd::Vec<T>;
  simd::for_vectors<T>(len, [&](std::int64_t u, auto ld, auto st) {
    const V r = ld(act + u), z = ld(act + ha + u), n = ld(act + 2 * ha + u), dh = ld(gh + u);
    const V dan = dh * (T(1) - z) * (T(1) - n * n);
    st(dg + u, dan * ld(hn + u) * r * (T(1) - r));
    st(dg + hg + u, dh * (ld(h + u) - n) * z * (T(1) - z));
    st(dg + 2 * hg + u, dan);
    st(dhn + u, dan * r);
    st(dh_direct + u, dh * z);
  });
}

// GRU, reset before, first half: dG for z and n; dh_direct = dL/dh via z. Gate strides
// as in gru_bwd.
template <class T>
inline void gru_zn_bwd(int len, std::int64_t ha, std::int64_t hg, const T* gh, const T* act,
                       const T* h, T* dg, T* dh_direct) {
  using V = simd::Vec<T>;
  simd::for_vectors<T>(len, [&](std::int64_t u, auto ld, auto st) {
    const V z = ld(act + ha + u), n = ld(act + 2 * ha + u), dh = ld(gh + u);
    st(dg + hg + u, dh * (ld(h + u) - n) * z * (T(1) - z));
    st(dg + 2 * hg + u, dh * (T(1) - z) * (T(1) - n * n));
    st(dh_direct + u, dh * z);
  });
}

// Second half: drh = dL/d(r*h) (len). Writes dG for r, adds r*drh to dh.
template <class T>
inline void gru_r_bwd(int len, const T* r, const T* h, const T* drh, T* dg_r, T* dh) {
  using V = simd::Vec<T>;
  simd::for_vectors<T>(len, [&](std::int64_t u, auto ld, auto st) {
    const V rv = ld(r + u), d = ld(drh + u);
    st(dg_r + u, d * ld(h + u) * rv * (T(1) - rv));
    st(dh + u, ld(dh + u) + d * rv);
  });
}

}  // namespace cells
FASTRNN_TARGET_NS_END
