// Per-cell pointwise math, forward and backward, for one batch row and a run of
// hidden units. Included by per-target kernel files: everything here lives in
// namespace fastrnn::<target>.
//
// Forward functions take the recurrent pre-activations of one row of a block
// of U hidden units laid out gate by gate, p[g*U + u] (g < G, u < U), add the
// input projection gx (same layout) and leave the gate activations in p.
// Only the first `len` units of each gate are meaningful (len <= U).
// Backward functions work on units [0, len) of standard (…, G*H) rows:
// gate g of unit u sits at [g*H + u] (the caller offsets the pointers).
#pragma once

#include <cstdint>

#include "runtime/target.h"
#include "seq/seq.h"
#include "simd/math.h"

FASTRNN_TARGET_NS_BEGIN
namespace cells {

// ---- activations on arrays (the one place to swap in vector math) --------
// Vector math from simd/math.h (max error 3 ulp, see there).
template <class T>
inline void sigmoid_n(T* p, int n) {
  simd::sigmoid_inplace(p, n);
}
template <class T>
inline void tanh_n(T* p, int n) {
  simd::tanh_inplace(p, n);
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

// LSTM: p (4U) in: W_hh h; out: i, f, g, o. c_in (len) -> c_new, tc = tanh(c_new),
// h_new = o * tc (len each).
template <class T>
inline void lstm_fwd(int len, int U, T* p, const T* gx, const T* c_in, T* c_new, T* tc, T* h_new) {
  using V = simd::Vec<T>;
  if (len == V::lanes && U == V::lanes) {
    // A whole block of one vector per gate: everything in registers.
    const V i = simd::sigmoid(V::load(p) + V::load(gx));
    const V f = simd::sigmoid(V::load(p + U) + V::load(gx + U));
    const V gg = simd::tanh(V::load(p + 2 * U) + V::load(gx + 2 * U));
    const V o = simd::sigmoid(V::load(p + 3 * U) + V::load(gx + 3 * U));
    i.store(p);
    f.store(p + U);
    gg.store(p + 2 * U);
    o.store(p + 3 * U);
    const V c = f * V::load(c_in) + i * gg;
    c.store(c_new);
    const V t = simd::tanh(c);
    t.store(tc);
    (o * t).store(h_new);
    return;
  }
  for (int g = 0; g < 4; ++g) {
    T* q = p + g * U;
    const T* r = gx + g * U;
    for (int u = 0; u < len; ++u) q[u] += r[u];
  }
  sigmoid_n(p, len);
  sigmoid_n(p + U, len);
  tanh_n(p + 2 * U, len);
  sigmoid_n(p + 3 * U, len);
  const T* i = p;
  const T* f = p + U;
  const T* gg = p + 2 * U;
  for (int u = 0; u < len; ++u) {
    c_new[u] = f[u] * c_in[u] + i[u] * gg[u];
    tc[u] = c_new[u];
  }
  tanh_n(tc, len);
  const T* o = p + 3 * U;
  for (int u = 0; u < len; ++u) h_new[u] = o[u] * tc[u];
}

// GRU, reset after the matmul: p (3U) in: W_hh h; out: r, z, n.
// hn = W_hn h + b_hn (len), h_new = (1 - z) n + z h (len).
template <class T>
inline void gru_fwd(int len, int U, T* p, const T* gx, const T* b_hn, const T* h, T* hn, T* h_new) {
  using V = simd::Vec<T>;
  if (len == V::lanes && U == V::lanes) {
    // A whole block of one vector per gate: everything in registers.
    const V r = simd::sigmoid(V::load(p) + V::load(gx));
    const V z = simd::sigmoid(V::load(p + U) + V::load(gx + U));
    const V hv = V::load(p + 2 * U) + V::load(b_hn);
    const V n = simd::tanh(V::load(gx + 2 * U) + r * hv);
    r.store(p);
    z.store(p + U);
    n.store(p + 2 * U);
    hv.store(hn);
    (n + z * (V::load(h) - n)).store(h_new);
    return;
  }
  for (int u = 0; u < len; ++u) {
    p[u] += gx[u];
    p[U + u] += gx[U + u];
  }
  sigmoid_n(p, len);
  sigmoid_n(p + U, len);
  T* n = p + 2 * U;
  for (int u = 0; u < len; ++u) {
    hn[u] = n[u] + b_hn[u];
    n[u] = gx[2 * U + u] + p[u] * hn[u];
  }
  tanh_n(n, len);
  const T* z = p + U;
  for (int u = 0; u < len; ++u) h_new[u] = n[u] + z[u] * (h[u] - n[u]);
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
// gh: dL/dh' (len). Writes dG (pre-activation gradients, gate stride H).
template <class T>
inline void rnn_bwd(Act act, int len, const T* gh, const T* a, T* dg) {
  if (act == Act::tanh) {
    for (int u = 0; u < len; ++u) dg[u] = gh[u] * (T(1) - a[u] * a[u]);
  } else if (act == Act::relu) {
    for (int u = 0; u < len; ++u) dg[u] = a[u] > T(0) ? gh[u] : T(0);
  } else {
    for (int u = 0; u < len; ++u) dg[u] = gh[u] * a[u] * (T(1) - a[u]);
  }
}

// LSTM. act: i,f,g,o (stride H); dc (len) in: dL/dc' from later steps, out: dL/dc.
template <class T>
inline void lstm_bwd(int len, std::int64_t H, const T* gh, const T* act, const T* c_prev,
                     const T* tc, T* dc, T* dg) {
  const T* i = act;
  const T* f = act + H;
  const T* g = act + 2 * H;
  const T* o = act + 3 * H;
  for (int u = 0; u < len; ++u) {
    const T dct = dc[u] + gh[u] * o[u] * (T(1) - tc[u] * tc[u]);
    dg[u] = dct * g[u] * i[u] * (T(1) - i[u]);
    dg[H + u] = dct * c_prev[u] * f[u] * (T(1) - f[u]);
    dg[2 * H + u] = dct * i[u] * (T(1) - g[u] * g[u]);
    dg[3 * H + u] = gh[u] * tc[u] * o[u] * (T(1) - o[u]);
    dc[u] = dct * f[u];
  }
}

// GRU, reset after. act: r,z,n (stride H); hn: W_hn h + b_hn. Writes dG for the
// input side (r, z, n), dhn = dL/d(W_hn h + b_hn), and dh_direct = dL/dh via z.
template <class T>
inline void gru_bwd(int len, std::int64_t H, const T* gh, const T* act, const T* h, const T* hn,
                    T* dg, T* dhn, T* dh_direct) {
  const T* r = act;
  const T* z = act + H;
  const T* n = act + 2 * H;
  for (int u = 0; u < len; ++u) {
    const T dan = gh[u] * (T(1) - z[u]) * (T(1) - n[u] * n[u]);
    dg[u] = dan * hn[u] * r[u] * (T(1) - r[u]);
    dg[H + u] = gh[u] * (h[u] - n[u]) * z[u] * (T(1) - z[u]);
    dg[2 * H + u] = dan;
    dhn[u] = dan * r[u];
    dh_direct[u] = gh[u] * z[u];
  }
}

// GRU, reset before, first half: dG for z and n; dh_direct = dL/dh via z.
template <class T>
inline void gru_zn_bwd(int len, std::int64_t H, const T* gh, const T* act, const T* h, T* dg,
                       T* dh_direct) {
  const T* z = act + H;
  const T* n = act + 2 * H;
  for (int u = 0; u < len; ++u) {
    dg[H + u] = gh[u] * (h[u] - n[u]) * z[u] * (T(1) - z[u]);
    dg[2 * H + u] = gh[u] * (T(1) - z[u]) * (T(1) - n[u] * n[u]);
    dh_direct[u] = gh[u] * z[u];
  }
}

// Second half: drh = dL/d(r*h) (len). Writes dG for r, adds r*drh to dh.
template <class T>
inline void gru_r_bwd(int len, const T* r, const T* h, const T* drh, T* dg_r, T* dh) {
  for (int u = 0; u < len; ++u) {
    dg_r[u] = drh[u] * h[u] * r[u] * (T(1) - r[u]);
    dh[u] += drh[u] * r[u];
  }
}

}  // namespace cells
FASTRNN_TARGET_NS_END
