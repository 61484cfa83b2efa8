// Forward and BPTT over whole sequences (RNN, LSTM, GRU), one target.
//
// Forward: W_ih and W_hh are packed once per call into blocks of U hidden
// units whose G gates are adjacent columns ([block][k][g*U + u], zero-padded
// past H). One OpenMP region spans the time loop; each thread owns a fixed
// range of blocks: it packs their weights (so they stay in its cache), computes
// their input projection Gx for a chunk of Tc steps at a time, and per step the
// recurrent product h_{t-1} W_hh^T on its columns, fused with the gate math on
// each register tile. One barrier per step (two for GRU with reset before the
// matmul, whose r must be complete before W_hn (r*h)). A call with only a few rows in
// all (T*N small: one step of a stream) skips the packing and reads the weights where
// they are, as dot products (Geo::direct); with a few more rows, as the transposed
// product W x^T (Geo::thin).
//
// Backward: a reverse loop with the same ownership: pointwise step -> dG_t for
// the owned units, a barrier, then the bias sums of the owned units and dh_{t-1} = dG_t W_hh
// on the owned columns (a few rows: from W_hh unpacked, as is dx = dG W_ih).
// After the loop, the weight and input gradients are big GEMMs over all T*N
// rows. No sum is ever split by thread, so any thread count gives the same bits.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <thread>
#include <type_traits>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "cells/cells.h"
#include "gemm/gemm.h"
#include "runtime/checked.h"
#include "runtime/target.h"
#include "seq/seq.h"
#include "seq/stream.h"
#include "seq/team.h"
#include "seq/workspace.h"
#include "seq/tile.h"
#include "simd/transpose.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

using i64 = std::int64_t;

// Blocking geometry: a block is U hidden units (UB vectors per gate).
struct Geo {
  int G = 1;
  int UB = 1;
  int U = 1;
  i64 nb = 0;   // blocks
  i64 GU = 0;   // columns per block (G*U)
  i64 GHp = 0;  // padded columns (nb*GU)
  i64 Tc = 1;   // steps per input-projection chunk
  // Forward without packing: every product reads W_ih and W_hh where they are (row-major)
  // as dot products (dot_rows). With few rows in all (T*N, direct_rows) packing costs more
  // than it saves: each weight is used T*N times, and packing reads and writes all of
  // them. Not for GRU with the reset before the matmul (its own loop below).
  bool direct = false;
  // A few more rows (more than direct_rows, see thin_rows): no packing either. Each product is
  // computed transposed, W x^T: the weights' rows as the tile kernel's broadcast operand,
  // read where they are, against x and h transposed (T*N and N columns, a few KiB, built
  // once per call and per step) (thin_rows). The backward's tiles read W_hh and W_ih
  // unpacked too.
  bool thin = false;
  bool unpacked() const { return direct || thin; }
  // The last block, when H is not a multiple of U and the weights are packed, can keep its
  // gates side by side: gate g of unit u in column g * len + u instead of g * U + u, in
  // ceil(G * len / lanes) vectors instead of G * UB (tail_stride = len, tail_cv fewer).
  // Otherwise tail_stride = U and tail_cv = G * UB, like every other block. The forward's
  // layout only: bwd_geometry may change `thin` without them (the backward never reads them).
  int tail_cv = 1;
  int tail_stride = 1;
  // Gate stride and tile width of block b.
  int stride(i64 b) const { return b == nb - 1 ? tail_stride : U; }
  int cv(i64 b) const { return b == nb - 1 ? tail_cv : G * UB; }
};

// The most rows (T*N) the forward computes without packing: about (I + H) / 40, between 1
// and 8. Each dot product ends with a sum across the lanes, whose cost against the K / lanes
// multiply-adds before it grows as K shrinks. Measured crossover (LSTM, GRU and RNN, 1 and
// 2 threads, I = H): about 3 rows at H = 64, 5 to 8 at H = 128, 8 at H = 256 and 8 to 16 at
// H = 512; at one row the direct forward is 1.3x (H = 64) to 3x (H = 512) faster.
inline i64 direct_rows(const SeqDims& d) {
  return std::clamp<i64>((d.I + d.H) / 40, 1, 8);
}

// Whether the forward computes T*N rows without packing, transposed (Geo::thin): up to 16
// rows, and up to 64 when the weights take 4 MiB or more (packing them then reads them
// from L3 or memory and writes as much). Measured, one step (T = 1), 2 threads, against
// packing: LSTM H = 512 1.5-1.65x faster at 16-48 rows, H = 1024 1.7-2.1x at 32-64 rows,
// H = 256 1.3x at 16 rows; smaller weights at 32-64 rows 0.8-1.1x (packed: the faster
// tiles of the packed path win back the packing).
// Every further step costs thin more than packed: its step product broadcasts each element
// of W_hh against ceil(N / lanes) vectors of h^T, where a packed tile loads one vector of
// W_hh for every `lanes` elements and uses it for up to 6 rows. What packing costs grows
// with the weights, what a step loses grows with T and shrinks as N fills the vectors, so
// thin also needs T^2 <= 1.2 * (weights in MiB) * max(1, 4 N / lanes). Fitted to LSTM, GRU
// and RNN in float32 on AVX-512 (16 lanes), I = H = 128-1024, N = 1-32, T = 2-16,
// inference, 2 threads: thin 0.3-0.55x packed's speed at N = 1-2 and T = 12-16 (LSTM
// (50,1,512,512): 0.32x), ahead up to about T = 3 (LSTM H = 512, N = 4), 6 (H = 1024,
// N = 4) or 4-8 (N >= 8). float64 (8 lanes, twice the bytes to pack) gains more from thin:
// LSTM H = 512, N = 4 1.4x at T = 6 and still 1.06x at T = 12; the bound stays on the safe
// side there. The backward decides for itself (bwd_geometry).
constexpr i64 kMaxThinRows = 64;  // the most rows (T*N) Geo::thin takes, forward or backward

template <class T>
bool thin_rows(const SeqDims& d) {
  if (d.T > kMaxThinRows / d.N) return false;  // T*N > kMaxThinRows, without overflow
  const double bytes = static_cast<double>(d.gates()) * static_cast<double>(d.H) *
                       static_cast<double>(d.I + d.H) * static_cast<double>(sizeof(T));
  if (d.T * d.N > 16 && bytes < 4.0 * (1 << 20)) return false;
  const double t = static_cast<double>(d.T);
  const double fill = std::max(1.0, 4.0 * static_cast<double>(d.N) / tile::lanes<T>());
  return d.T == 1 || t * t <= 1.2 * bytes / (1 << 20) * fill;
}

// An LSTM/GRU block is one tile vector per gate, and cells::lstm_fwd / gru_fwd do a block
// in one simd::Vec: the two widths must agree on every target.
static_assert(tile::lanes<float>() == simd::Vec<float>::lanes &&
                  tile::lanes<double>() == simd::Vec<double>::lanes,
              "tile and simd vector widths differ");

// The last block's layout (Geo::tail_cv, tail_stride), which depends on whether the weights
// are packed.
template <class T>
void set_tail(Geo& g, const SeqDims& d) {
  const bool gru_before = d.cell == Cell::gru && !d.reset_after;
  const int len = static_cast<int>(d.H - (g.nb - 1) * g.U);
  const int tail_cv = (g.G * len + tile::lanes<T>() - 1) / tile::lanes<T>();
  const bool tail = !gru_before && !g.unpacked() && tail_cv < g.G * g.UB;
  g.tail_cv = tail ? tail_cv : g.G * g.UB;
  g.tail_stride = tail ? len : g.U;
}

template <class T>
Geo geometry(const SeqDims& d) {
  Geo g;
  g.G = d.gates();
  // RNN: four vectors of units per block, or as few as H needs, but at least two (tiles of
  // one vector sum in another order depending on their rows, and a block may be split by
  // rows). Four for H = 32 left half of every product on zero padding: RNN (100,16,256,32)
  // inference 1.98x, (100,32,128,40) 1.61x, (100,64,768,32) 1.63x faster; training
  // 1.13-1.22x.
  const i64 vectors = (d.H + tile::lanes<T>() - 1) / tile::lanes<T>();
  g.UB = g.G == 1 ? static_cast<int>(std::clamp<i64>(vectors, 2, 4)) : 1;
  g.U = g.UB * tile::lanes<T>();
  g.nb = (d.H + g.U - 1) / g.U;
  g.GU = i64{g.G} * g.U;
  g.GHp = checked_mul(g.nb, g.GU, "padded gate columns");
  // Enough rows per chunk for an efficient input product, bounded by T.
  const i64 rows_wanted = 96;
  g.Tc = std::max<i64>(1, std::min<i64>(d.T, (rows_wanted + d.N - 1) / std::max<i64>(d.N, 1)));
  const bool gru_before = d.cell == Cell::gru && !d.reset_after;
  g.direct = !gru_before && d.T <= direct_rows(d) / d.N;  // T*N <= rows, no overflow
  g.thin = !gru_before && !g.direct && thin_rows<T>(d);
  if (g.thin) g.Tc = d.T;  // one input product over all T*N rows
  set_tail<T>(g, d);
  return g;
}

// The geometry of packed weights for d's cell, GRU variant, I and H, whatever T and N: that
// of a call which packs them (pack_weights, and every call that reads packed weights).
template <class T>
Geo packed_geometry(const SeqDims& d) {
  SeqDims one = d;
  one.T = one.N = 1;  // only the unpacked paths depend on them
  Geo g = geometry<T>(one);
  g.direct = g.thin = false;
  set_tail<T>(g, one);
  return g;
}

constexpr int kMaxTile = 8 * 4 * 64;  // rows x (G*U) for every target and type
constexpr int kMaxU = 64;

struct FwdLayout {
  i64 wih = 0, whh = 0, gx = 0, gh = 0, bias = 0, bhn = 0, hbuf = 0, rh = 0, zb = 0, xt = 0,
      ht = 0, ldx = 0, ldh = 0, total = 0;
};

template <class T>
FwdLayout fwd_layout(const SeqDims& d, const Geo& g) {
  FwdLayout l;
  Carve w;
  const char* wih = "packed weight_ih";
  const i64 packed = g.unpacked() ? 0 : 1;
  l.wih = w.take(checked_mul(g.nb, d.I * packed, wih), g.GU, wih);
  const char* whh = "packed weight_hh";
  l.whh = w.take(checked_mul(g.nb, d.H * packed, whh), g.GU, whh);
  // [block][row][GU] so a block's rows are contiguous (no 4 KiB strides in L1)
  const char* gx = "input projection";
  l.gx = w.take(checked_mul(g.Tc, d.N, gx), g.GHp, gx);
  l.gh = w.take(d.N, g.GHp, "recurrent projection");
  l.bias = w.take(g.GHp, "bias");
  l.bhn = w.take(g.nb, g.U, "bias");
  const i64 nh = checked_mul(d.N, d.H, "state");
  l.hbuf = w.take(2, nh, "state");
  l.rh = w.take(nh, "state");
  l.zb = w.take(nh, "state");
  if (g.thin) {
    // x^T (I, ldx) and two h^T (H, ldh), rows padded to whole vectors, and one vector
    // more at the end: a tile reads whole vectors, past the last row's used columns.
    const i64 L = tile::lanes<T>();
    l.ldx = round16(d.T * d.N, "transposed input");  // T*N <= kMaxThinRows
    l.ldh = round16(d.N, "transposed state");
    l.xt = w.take(checked_add(checked_mul(d.I, l.ldx, "transposed input"), L, "transposed input"),
                  "transposed input");
    l.ht = w.take(checked_add(checked_mul(2 * d.H, l.ldh, "transposed state"), L,
                              "transposed state"),
                  "transposed state");
  }
  l.total = w.off;
  return l;
}

// Packed weights as a call that packs holds them in its workspace: W_ih from 0, W_hh from
// .whh, both ending where .gx starts. Their size and offsets depend only on d's cell, GRU
// variant, I and H (packed_geometry).
template <class T>
FwdLayout packed_layout(const SeqDims& d) {
  SeqDims one = d;
  one.T = one.N = 1;
  return fwd_layout<T>(one, packed_geometry<T>(d));
}

template <class T>
i64 packed_size(const SeqDims& d) {
  return packed_layout<T>(d).gx;
}

struct BwdLayout {
  i64 wbk = 0, dg = 0, dhn = 0, dts = 0, bsum = 0, total = 0;
};

template <class T>
BwdLayout bwd_layout(const SeqDims& d, const Geo& g) {
  BwdLayout l;
  Carve w;
  const i64 GH = checked_mul(g.G, d.H, "gate columns");
  const i64 TN = checked_mul(d.T, d.N, "time steps x batch");
  // The direct backward reads W_hh unpacked; the thin one too, bar a last partial block.
  const i64 packed = g.direct ? 0 : (g.thin ? 1 : g.nb);
  l.wbk = w.take(checked_mul(packed, GH, "packed weight_hh"), g.U, "packed weight_hh");
  l.dg = w.take(TN, GH, "gate gradients");
  l.dhn =
      w.take(d.cell == Cell::gru ? checked_mul(TN, d.H, "gate gradients") : 0, "gate gradients");
  l.dts = w.take(checked_mul(d.N, checked_mul(g.nb, g.U, "units"), "recurrent gradient"),
                 "recurrent gradient");
  l.bsum = w.take(GH + (d.cell == Cell::gru ? d.H : 0), "bias gradients");
  l.total = w.off;
  return l;
}

template <class T>
i64 forward_work(const SeqDims& d) {
  return fwd_layout<T>(d, geometry<T>(d)).total;
}

// The backward's geometry: the forward's, except that it reads the weights unpacked
// (Geo::thin) for every call of up to 64 rows (T*N) that does not take the direct path,
// unless W_hh is large and N small: from 12 MiB with N < 8 only up to 16 rows, from 24 MiB
// only with N = 4-7. Its tape does not depend on how the forward computed it. Unlike the
// forward's, the backward's transposed step product costs no more per step than the packed
// one (dG_t is the broadcast operand there), so skipping the packing of W_hh wins at nearly
// any T: backward alone, 2 threads, I = H = 128-1024, N = 1-32, T*N <= 64, LSTM, GRU and
// RNN: 1.04-1.8x faster in float32 (LSTM (4,4,512,512) 1.31x, (16,1,512,512) 1.32x), LSTM
// 1.0-1.7x in float64 up to H = 512 (8 MiB). The exceptions: W_hh of 12-16 MiB (float32
// LSTM and GRU at H = 1024) with N <= 4 was 0.6-0.95x from 24 rows on, 32 MiB (float64
// LSTM H = 1024) with N <= 2 0.54-0.86x from 12 rows on (the step's tiles read a new 4 KiB
// page at every k, through more than L3 holds).
template <class T>
Geo bwd_geometry(const SeqDims& d) {
  Geo g = geometry<T>(d);
  const bool gru_before = d.cell == Cell::gru && !d.reset_after;
  if (g.direct || gru_before || d.T > kMaxThinRows / d.N) return g;  // without overflow
  const double whh = static_cast<double>(g.G) * static_cast<double>(d.H) *
                     static_cast<double>(d.H) * static_cast<double>(sizeof(T));
  const double mib = whh / (1 << 20);
  g.thin = d.N >= 8 || mib < 12.0 || (d.T * d.N <= 16 && (mib < 24.0 || d.N >= 4));
  return g;
}

template <class T>
i64 backward_work(const SeqDims& d) {
  return bwd_layout<T>(d, bwd_geometry<T>(d)).total;
}

// Rows of a shared block per thread at the least (join_team).
constexpr i64 kMinSharedRows = 3;

// Threads for a sequence: only as many as keep about 32k multiply-adds per thread per step
// (below that a barrier costs more than it saves), counting the forward's input projection
// (`with_input`: computed by chunks of steps, but by the same threads); and at most one per
// block of units unless every thread can have kMinSharedRows rows of shared blocks
// (join_team). The two exceptions to the older rule (recurrent work only, one thread per
// block) measured, 2 threads against 1, inference: RNN (100,64,768,32) 1.58x, (500,2,768,100)
// 1.69x, (200,1,1024,128) 1.37x, LSTM (100,1,512,64) 1.8x, GRU (100,2,512,96) 1.82x,
// (100,16,64,32) 1.62x; training 1.1-1.35x; GRU (50,4,300,48) 0.96x.
inline int team_size(int want, i64 blocks, const SeqDims& d, bool with_input) {
  const i64 K = with_input ? d.H + d.I : d.H;
  const i64 useful = std::max<i64>(1, d.N * d.gates() * d.H * K / 32768);
  const bool shares = !(d.cell == Cell::gru && !d.reset_after) && d.N / want >= kMinSharedRows;
  const i64 most = shares ? i64{want} : blocks;
  return static_cast<int>(std::max<i64>(1, std::min<i64>({i64{want}, most, useful})));
}

// What a thread of the time loops' team owns for the whole sequence: blocks [b0, b1)
// (hidden units [j0, j1)) for all N rows, and rows [n0, n1) of the shared blocks
// [bs, nb), the nb % nth left over when whole blocks cannot be dealt out evenly. Without
// them one thread would do a block more than another every step: 13 blocks as 7 + 6
// make a step 8% longer than 6.5 + 6.5 (H = 200, LSTM/GRU float); a left-over block
// split by rows keeps every thread equally busy. Blocks are shared only when every
// thread gets at least kMinSharedRows rows (fewer leave the weights' trips from L2 as
// the cost of a step); every product of two or more rows sums each row in plain k order
// (tile.h: the forward's tiles are 3 or 4 vectors wide, the backward uses panel_fixed),
// so the bits do not depend on the split. GRU with the reset gate before the matmul
// shares nothing (its one-vector tiles keep partial sums).
// join_team also sets the step barrier's count (thread 0, before the barrier that
// follows the packing).
struct Owned {
  i64 b0, b1, j0, j1, bs, js, n0, n1;  // js: the first unit of the shared blocks
  int tid, nth;
};

inline Owned join_team(StepBarrier& bar, i64 nb, int U, i64 H, i64 N, bool may_share) {
  int tid = 0, nth = 1;
  thread_id(tid, nth);
  if (tid == 0) bar.count = nth;
  const i64 shared = (may_share && N / nth >= kMinSharedRows) ? nb % nth : 0;
  const i64 bs = nb - shared;
  const i64 b0 = bs * tid / nth, b1 = bs * (tid + 1) / nth;
  const i64 n0 = N * tid / nth, n1 = N * (tid + 1) / nth;
  const i64 js = std::min(H, bs * U);
  return {b0, b1, std::min(H, b0 * U), std::min(H, b1 * U), bs, js, n0, n1, tid, nth};
}

// dst[k*ldd + u] = src[(r0 + u)*K + k] for u < valid, and 0 for valid <= u < U (k < K):
// U rows of a row-major (.., K) matrix, transposed into U adjacent columns
// (simd::transpose_rect: B x B register blocks with AVX). Element by element, this
// packing was most of a short sequence's time: with the blocks, LSTM (1,1,512,512)
// inference is 5.5x faster, (25,16,512,512) 1.13x.
template <class T>
void pack_transposed(const T* src, i64 K, i64 r0, int valid, int U, T* dst, i64 ldd) {
  simd::transpose_rect(src + r0 * K, K, valid, K, dst, ldd);
  for (i64 k = 0; k < K; ++k) std::fill(dst + k * ldd + valid, dst + k * ldd + U, T(0));
}

// out[n*ldo + u] = sum over k of W[(r0 + u)*K + k] * v[n*ldv + k] for n < NR, u < valid,
// and 0 for valid <= u < U: U rows of a row-major weight matrix against NR rows of x or h,
// without packing (Geo::direct). Each sum runs lane-wise over k, then across the lanes
// (simd::reduce_add): one order per (K, target), whatever the thread count. Four weight
// rows at a time: their loads are the cost (each weight is used NR times), and four
// independent sums per vector row keep the FMAs from waiting on each other.
template <class T, int NR>
void dot_rows_nr(const T* W, i64 K, i64 r0, int valid, int U, const T* v, i64 ldv, T* out,
                 i64 ldo) {
  using V = simd::Vec<T>;
  constexpr int L = V::lanes;
  const i64 kv = K / L * L;
  const int kt = static_cast<int>(K - kv);
  for (int u = 0; u < valid; u += 4) {
    const int ur = std::min(4, valid - u);
    const T* w[4];
    for (int i = 0; i < 4; ++i) w[i] = W + (r0 + u + std::min(i, ur - 1)) * K;
    V acc[4][NR];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();
    auto fmas = [&](const V* x, auto load) {
      for (int i = 0; i < 4; ++i) {
        const V wi = load(w[i]);
        for (int j = 0; j < NR; ++j) acc[i][j] = simd::fma(wi, x[j], acc[i][j]);
      }
    };
    for (i64 k = 0; k < kv; k += L) {
      V x[NR];
      for (int j = 0; j < NR; ++j) x[j] = V::load(v + j * ldv + k);
      fmas(x, [k](const T* p) { return V::load(p + k); });
    }
    if (kt) {
      V x[NR];
      for (int j = 0; j < NR; ++j) x[j] = V::load_partial(v + j * ldv + kv, kt);
      fmas(x, [kv, kt](const T* p) { return V::load_partial(p + kv, kt); });
    }
    for (int j = 0; j < NR; ++j)
      for (int i = 0; i < ur; ++i) out[j * ldo + u + i] = simd::reduce_add(acc[i][j]);
  }
  for (int j = 0; j < NR; ++j) std::fill(out + j * ldo + valid, out + j * ldo + U, T(0));
}

// dot_rows_nr over `rows` rows of v, two at a time (each weight load serves both).
template <class T>
void dot_rows(const T* W, i64 K, i64 r0, int valid, int U, const T* v, i64 ldv, i64 rows,
              T* out, i64 ldo) {
  i64 n = 0;
  for (; n + 2 <= rows; n += 2)
    dot_rows_nr<T, 2>(W, K, r0, valid, U, v + n * ldv, ldv, out + n * ldo, ldo);
  if (n < rows) dot_rows_nr<T, 1>(W, K, r0, valid, U, v + n * ldv, ldv, out + n * ldo, ldo);
}

// The same product as dot_rows, out[n*ldo + u] = sum over k of W[(r0 + u)*K + k] * v[n][k],
// from v transposed: vt[k*ldv + n] for n < rows (Geo::thin). The tile kernel takes the
// weight rows as its broadcast operand and vt as its vector one, so no weight is packed or
// summed across lanes; each element is summed in plain k order (tile::panel_fixed, one
// K slice), so the bits do not depend on how the rows are split between threads.
// Columns of vt are read in whole vectors: up to a vector past `rows` (unused values).
template <class T>
void transposed_rows(const T* W, i64 K, i64 r0, int valid, int U, const T* vt, i64 ldv,
                     i64 rows, T* out, i64 ldo) {
  constexpr int L = tile::lanes<T>();
  alignas(64) T tmp[kMaxU * 4 * L];  // valid (<= U) weight rows x up to 4 vectors of rows
  for (i64 q0 = 0; q0 < rows; q0 += 4 * L) {
    const i64 nr = std::min<i64>(4 * L, rows - q0);
    const int cv = static_cast<int>((nr + L - 1) / L);
    tile::panel_fixed<T>(cv, tile::max_rows(cv), valid, K, K, W + r0 * K, K, vt + q0, ldv, tmp,
                         i64{cv} * L, false);
    for (i64 q = 0; q < nr; ++q) {
      T* o = out + (q0 + q) * ldo;
      for (int u = 0; u < valid; ++u) o[u] = tmp[u * cv * L + q];
      std::fill(o + valid, o + U, T(0));
    }
  }
}

// out[q*ldo + j] = sum over k < K of c[q*ldc + k] * W[k*ldw + j] (+ out[q*ldo + j] with
// `accumulate`) for q < rows, j < len: a few rows times a row-major weight matrix, read
// where it is (Geo::direct's backward: dh = dG W_hh, dx = dG W_ih). Strips of four
// vectors of columns, rows in pairs (each weight load serves both), each element summed
// in plain k order whatever the thread count.
template <class T, int NR>
void axpy_rows_nr(i64 K, const T* c, i64 ldc, const T* W, i64 ldw, i64 len, T* out, i64 ldo,
                  bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::lanes;
  constexpr int CV = 4;
  for (i64 j = 0; j < len; j += CV * L) {
    int cnt[CV];
    for (int v = 0; v < CV; ++v)
      cnt[v] = static_cast<int>(std::clamp<i64>(len - j - i64{v} * L, 0, L));
    auto load = [&](const T* p, int v) {
      return cnt[v] == L ? V::load(p + v * L) : V::load_partial(p + v * L, cnt[v]);
    };
    V acc[NR][CV];
    for (int q = 0; q < NR; ++q)
      for (int v = 0; v < CV; ++v) acc[q][v] = accumulate ? load(out + q * ldo + j, v) : V::zero();
    for (i64 k = 0; k < K; ++k) {
      const T* wk = W + k * ldw + j;
      V ck[NR];
      for (int q = 0; q < NR; ++q) ck[q] = V::broadcast(c[q * ldc + k]);
      for (int v = 0; v < CV; ++v) {
        const V wv = load(wk, v);
        for (int q = 0; q < NR; ++q) acc[q][v] = simd::fma(wv, ck[q], acc[q][v]);
      }
    }
    for (int q = 0; q < NR; ++q) {
      T* o = out + q * ldo + j;
      for (int v = 0; v < CV; ++v) {
        if (cnt[v] == L) {
          acc[q][v].store(o + v * L);
        } else if (cnt[v] > 0) {
          acc[q][v].store_partial(o + v * L, cnt[v]);
        }
      }
    }
  }
}

template <class T>
void axpy_rows(i64 rows, i64 K, const T* c, i64 ldc, const T* W, i64 ldw, i64 len, T* out,
               i64 ldo, bool accumulate) {
  i64 q = 0;
  for (; q + 2 <= rows; q += 2)
    axpy_rows_nr<T, 2>(K, c + q * ldc, ldc, W, ldw, len, out + q * ldo, ldo, accumulate);
  if (q < rows) {
    axpy_rows_nr<T, 1>(K, c + q * ldc, ldc, W, ldw, len, out + q * ldo, ldo, accumulate);
  }
}

// dst[0:len] = src[0:len]; a whole vector (the usual LSTM/GRU block) is a fixed-size
// copy the compiler turns into one load and store instead of a library call.
template <class T>
inline void copy_units(T* dst, const T* src, i64 len) {
  constexpr int L = tile::lanes<T>();
  if (len == L) {
    std::memcpy(dst, src, sizeof(T) * L);
  } else {
    std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(len));
  }
}

// The same for the training tape (gate activations, GRU's W_hn h + b_hn), which
// the backward reads long after: with `stream`, whole vector-aligned vectors go straight to
// memory instead of each destination line first being read into the cache (LSTM forward
// training 8-12% faster, a whole training step 2-4%, at T*N*H >= 400k). The forward ends
// with simd::stream_fence().
template <class T>
inline void tape_units(T* dst, const T* src, i64 len, bool stream) {
  using V = simd::Vec<T>;
  if (stream && len % V::lanes == 0 && reinterpret_cast<std::uintptr_t>(dst) % sizeof(V) == 0) {
    for (i64 i = 0; i < len; i += V::lanes) V::load(src + i).stream(dst + i);
  } else {
    copy_units(dst, src, len);
  }
}

// Asks for the cache lines of p[0:len) to be brought into L2 (len >= 1), or with
// kToL1 into L1.
template <bool kToL1 = false, class T>
inline void prefetch_units(const T* p, i64 len) {
  const std::uintptr_t last = reinterpret_cast<std::uintptr_t>(p + len - 1);
  for (std::uintptr_t c = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{63}; c <= last;
       c += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(c), 0, kToL1 ? 3 : 2);
}

// One row of a block at the end of its step: h_t (hv) into the state and into y, or, for a
// row past its length, the state carried over (hi) and y = 0.
template <class T>
inline void finish_row(bool active, const T* hv, const T* hi, T* ho, T* yo, i64 len) {
  if (active) {
    copy_units(ho, hv, len);
    copy_units(yo, hv, len);
  } else {
    copy_units(ho, hi, len);
    std::fill(yo, yo + len, T(0));
  }
}

// Weight gradients of a short call (small_k_product) of at least this many bytes are
// streamed to memory.
constexpr i64 kStreamGradBytes = i64{4} << 20;

// Block b of the packed weights: [b][k][gate*S + u] = W[gate*H + b*U + u][k], W_ih into
// wih and W_hh into whh. Gates in order: each gate's U columns from gt * S on, so in a short
// last block laid out side by side (S = len < U) the next gate overwrites the zeros past
// this one's units.
template <class T>
void pack_block(const SeqDims& d, const Geo& g, i64 b, const T* w_ih, const T* w_hh, T* wih,
                T* whh) {
  const int U = g.U;
  const i64 GU = g.GU;
  const int valid = static_cast<int>(std::min<i64>(U, d.H - b * U));
  const int S = g.stride(b);
  for (int gt = 0; gt < g.G; ++gt) {
    const i64 r0 = gt * d.H + b * U;
    pack_transposed(w_ih, d.I, r0, valid, U, wih + b * d.I * GU + gt * S, GU);
    pack_transposed(w_hh, d.H, r0, valid, U, whh + b * d.H * GU + gt * S, GU);
  }
}

template <class T>
void pack_weights(const SeqDims& d, const T* w_ih, const T* w_hh, T* out, int num_threads) {
  const Geo g = packed_geometry<T>(d);
  T* const whh = out + packed_layout<T>(d).whh;
  const int nt = static_cast<int>(std::max<i64>(1, std::min<i64>(num_threads, g.nb)));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
#endif
  for (i64 b = 0; b < g.nb; ++b) pack_block(d, g, b, w_ih, w_hh, out, whh);
}

template <class T>
void forward(const SeqForward<T>& a) {
  const SeqDims& d = a.d;
  const Geo g = geometry<T>(d);
  const FwdLayout lay = fwd_layout<T>(d, g);
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H;
  const int G = g.G, U = g.U;
  const i64 GH = i64{G} * H, GU = g.GU, TcN = g.Tc * N;
  const bool tr = a.training;
  const bool stream = tr && Tn * N * GH * static_cast<i64>(sizeof(T)) >= kStreamTapeBytes;
  // The tape's row stride (seq.h), and so that of the state rows a step reads: training
  // keeps the states in the tape, inference in (N, H) buffers.
  const i64 Hp = tr ? tape_stride(H, sizeof(T)) : H, GHp = G * Hp;
  const bool lstm = d.cell == Cell::lstm;
  const bool gru = d.cell == Cell::gru;
  const bool gru_before = gru && !d.reset_after;
  // The packed weights: this call's workspace, which its threads fill below, or the caller's
  // (pack_weights), when the call packs at all.
  // The caller's layout has this workspace's offsets (packed_layout, lay.wih = 0).
  const bool given = a.packed && !g.unpacked();
  const bool own_pack = !g.unpacked() && !given;
  T* const wih_w = a.work + lay.wih;
  T* const whh_w = a.work + lay.whh;
  const T* const wih = given ? a.packed : wih_w;
  const T* const whh = given ? a.packed + lay.whh : whh_w;
  T* gx = a.work + lay.gx;
  T* ghs = a.work + lay.gh;
  T* bias = a.work + lay.bias;
  T* bhn = a.work + lay.bhn;
  T* hbuf = a.work + lay.hbuf;
  T* rhb = a.work + lay.rh;
  T* zb = a.work + lay.zb;
  T* xt = a.work + lay.xt;  // Geo::thin: x^T, and h^T of the current and the next step
  T* ht = a.work + lay.ht;
  const i64 ldx = lay.ldx, ldh = lay.ldh;
  const SeqTape<T>& tp = a.tape;
  const int nt = team_size(a.num_threads, g.nb, d, true);
  StepBarrier bar;

#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    const auto [b0, b1, j0, j1, bs, js, n0, n1, tid, nth] =
        join_team(bar, g.nb, U, H, N, !gru_before);
    auto barrier = [&bar] { bar.wait(); };
    // training: the backward's copies (seq.h)
    if (a.x_copy) copy_share(a.x_copy, a.x, Tn * N * I, tid, nth);
    if (a.w_ih_copy) copy_share(a.w_ih_copy, a.w_ih, GH * I, tid, nth);
    if (a.w_hh_copy) copy_share(a.w_hh_copy, a.w_hh, GH * H, tid, nth);

    // Pack this thread's blocks and its turn of the shared ones (pack_block), unless the
    // caller packed them, and fold their biases.
    auto pack = [&](i64 b) {
      const int valid = static_cast<int>(std::min<i64>(U, H - b * U));
      const int S = g.stride(b);
      if (own_pack) pack_block(d, g, b, a.w_ih, a.w_hh, wih_w, whh_w);
      for (int gt = 0; gt < G; ++gt) {
        const i64 r0 = gt * H + b * U;
        for (int u = 0; u < U; ++u) {
          const bool in = u < valid;
          const i64 row = r0 + u;
          const i64 col = b * GU + gt * S + u;
          // Biases folded into Gx: all of b_ih + b_hh, except b_hn when it sits inside r*(...).
          T bsum = T(0);
          if (in) {
            if (a.b_ih) bsum += a.b_ih[row];
            if (a.b_hh && !(gru && d.reset_after && gt == 2)) bsum += a.b_hh[row];
          }
          bias[col] = bsum;
          if (gt == 2 && gru) bhn[b * U + u] = (in && a.b_hh && d.reset_after) ? a.b_hh[row] : T(0);
        }
      }
    };
    for (i64 b = b0; b < b1; ++b) pack(b);
    for (i64 b = bs; b < g.nb; ++b)
      if ((b - bs) % nth == tid) pack(b);
    const i64 t_first = d.reverse ? Tn - 1 : 0;
    // h0 goes where the first step reads it: the tape, or in inference the state buffer
    // the second step writes (each step reads buffer (s - 1) & 1). Steps never read the
    // caller's h0: an h0 from np.zeros is untouched memory, every page of it mapped to the
    // kernel's one zero page, and on CPUs whose L1 tags lines by virtual address its rows
    // evict one another on every load (AMD Zen 4, GRU (1,256,40,1024) inference: 1.5x slower).
    T* const h0buf = hbuf + N * H;
    auto init_state = [&](i64 r0, i64 r1, i64 ja, i64 jb) {
      if (jb <= ja) return;
      const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(jb - ja);
      for (i64 n = r0; n < r1; ++n) {
        const i64 tape_row = (t_first * N + n) * Hp;
        std::memcpy((tr ? tp.hprev + tape_row : h0buf + n * H) + ja, a.h0 + n * H + ja, bytes);
        if (lstm) {
          std::memcpy((tr ? tp.cprev + tape_row : a.c_n + n * H) + ja, a.c0 + n * H + ja, bytes);
        }
      }
    };
    init_state(0, N, j0, j1);
    init_state(n0, n1, js, H);
    if (g.thin) {  // x^T by slices of columns, h0^T by the units (and rows) owned
      const i64 k0 = I * tid / nth, k1 = I * (tid + 1) / nth;
      simd::transpose_rect(a.x + k0, I, Tn * N, k1 - k0, xt + k0 * ldx, ldx);
      simd::transpose_rect(a.h0 + j0, H, N, j1 - j0, ht + j0 * ldh, ldh);
      simd::transpose_rect(a.h0 + n0 * H + js, H, n1 - n0, H - js, ht + js * ldh + n0, ldh);
    }
    omp_barrier();

    // LSTM peepholes of the units from jb on (cells::lstm_step), or null
    auto peep = [&a](i64 jb) -> const T* { return a.w_peep ? a.w_peep + jb : nullptr; };
    alignas(64) T tl[kMaxTile];
    alignas(64) T cnew[kMaxU];
    alignas(64) T hnew[kMaxU];
    alignas(64) T hnv[kMaxU] = {};
    const int cvx = G * g.UB;
    // K slice whose panel rows (GU wide) fill about 64 KiB (L2): long K runs per tile
    // (fewer accumulator loads/stores) matter more than an L1-resident slice; measured
    // 5-12% faster than 16 KiB slices for LSTM at N >= 16.
    const i64 kc = std::max<i64>(16, 65536 / (GU * static_cast<i64>(sizeof(T))));
    i64 tlo = 0;
    // C (rows x the block's columns, stride GU) = A (rows x K) * block b's packed panel B.
    // A short last block's tiles (Geo::tail_cv) may be one vector wide, where a tile of one
    // or two rows keeps partial sums (tile.h): from kMinSharedRows rows on they sum in plain
    // k order, so the rows of a shared block (at least that many per thread) get the same
    // bits however they are split; fewer rows are all N rows of a block or a chunk, grouped
    // the same for any thread count, and keep the partial sums (N = 1: 4x fewer cycles).
    auto tile_product = [&](i64 b, i64 rows, i64 K, const T* A, i64 lda, const T* B, T* C) {
      if (g.cv(b) == cvx) {
        tile::panel<T>(cvx, rows, K, kc, A, lda, B, GU, C, GU);
      } else if (rows >= kMinSharedRows) {
        tile::panel_rows<T, 1>(g.tail_cv, tile::max_rows(g.tail_cv), rows, K, kc, A, lda, B, GU,
                               C, GU, false);
      } else {
        tile::panel<T>(g.tail_cv, rows, K, kc, A, lda, B, GU, C, GU);
      }
    };
    // Gx of block b for the `rows` rows of x from row r (all in the current chunk), biases
    // added.
    auto input_projection = [&](i64 b, i64 r, i64 rows) {
      T* C = gx + (b * TcN + r - tlo * N) * GU;
      const i64 cols = g.cv(b) * tile::lanes<T>();  // GU, or fewer in a short last block
      if (g.unpacked()) {
        const int valid = static_cast<int>(std::min<i64>(U, H - b * U));
        for (int gt = 0; gt < G; ++gt) {
          if (g.thin) {
            transposed_rows(a.w_ih, I, gt * H + b * U, valid, U, xt + r, ldx, rows, C + gt * U,
                            GU);
          } else {
            dot_rows(a.w_ih, I, gt * H + b * U, valid, U, a.x + r * I, I, rows, C + gt * U, GU);
          }
        }
      } else {
        tile_product(b, rows, I, a.x + r * I, I, wih + b * I * GU, C);
      }
      for (i64 q = 0; q < rows; ++q)
        for (i64 c = 0; c < cols; ++c) C[q * GU + c] += bias[b * GU + c];
    };
    for (i64 s = 0; s < Tn; ++s) {
      const i64 t = d.reverse ? Tn - 1 - s : s;
      const i64 tnext = d.reverse ? t - 1 : t + 1;
      if (s % g.Tc == 0) {
        // Input projection for steps [s, s1) on this thread's columns.
        const i64 s1 = std::min(Tn, s + g.Tc);
        tlo = d.reverse ? Tn - s1 : s;
        for (i64 b = b0; b < b1; ++b) input_projection(b, tlo * N, (s1 - s) * N);
      }
      // The shared blocks' rows of this step only.
      for (i64 b = bs; b < g.nb; ++b) input_projection(b, t * N + n0, n1 - n0);
      const T* hin = tr ? tp.hprev + t * N * Hp : hbuf + ((s - 1) & 1) * N * H;
      T* hout = s == Tn - 1 ? a.h_n : (tr ? tp.hprev + tnext * N * Hp : hbuf + (s & 1) * N * H);
      const i64 ldo = s == Tn - 1 ? H : Hp;  // hout's row stride (hin's is Hp)
      const T* htin = ht + (s & 1) * H * ldh;  // Geo::thin: hin^T, and hout^T if s < T - 1
      T* htout = g.thin && s + 1 < Tn ? ht + ((s + 1) & 1) * H * ldh : nullptr;

      // Inference without lengths (nor Geo::thin's transposed state): the new states go
      // straight to where they live (cells::*_fwd_infer).
      const bool lean = !tr && !a.lengths && !htout;
      if (!gru_before) {
        // Block b, rows [r0, r1): its column panel (K slices of ~64 KiB), then the gate
        // math row by row on it while it is still in L1.
        auto step_block = [&](i64 b, i64 r0, i64 r1) {
          const int len = static_cast<int>(std::min<i64>(U, H - b * U));
          const int S = g.stride(b);
          const i64 jb = b * U;
          // Tape writes cover the padding too: whole vectors, streamable (values unused).
          const int lt = static_cast<int>(std::min<i64>(U, Hp - jb));
          if (g.direct) {
            for (int gt = 0; gt < G; ++gt)
              dot_rows(a.w_hh, H, gt * H + jb, len, U, hin + r0 * Hp, Hp, r1 - r0,
                       ghs + (b * N + r0) * GU + gt * U, GU);
          } else if (g.thin) {
            for (int gt = 0; gt < G; ++gt)
              transposed_rows(a.w_hh, H, gt * H + jb, len, U, htin + r0, ldh, r1 - r0,
                              ghs + (b * N + r0) * GU + gt * U, GU);
          } else {
            tile_product(b, r1 - r0, H, hin + r0 * Hp, Hp, whh + b * H * GU,
                         ghs + (b * N + r0) * GU);
          }
          if (lean) {
            for (i64 n = r0; n < r1; ++n) {
              const T* p = ghs + (b * N + n) * GU;
              const T* gxr = gx + (b * TcN + (t - tlo) * N + n) * GU;
              T* ho = hout + n * ldo + jb;
              T* yo = a.y + (t * N + n) * H + jb;
              if (d.cell == Cell::rnn) {
                cells::rnn_fwd_infer(d.act, len, p, gxr, ho, yo);
              } else if (lstm) {
                cells::lstm_fwd_infer(len, U, S, p, gxr, a.c_n + n * H + jb, ho, yo, peep(jb),
                                      H);
              } else {
                cells::gru_fwd_infer(len, U, S, p, gxr, bhn + jb, hin + n * Hp + jb, ho, yo);
              }
            }
            return;
          }
          for (i64 n = r0; n < r1; ++n) {
            const i64 tn = t * N + n;
            T* p = ghs + (b * N + n) * GU;
            const T* gxr = gx + (b * TcN + (t - tlo) * N + n) * GU;
            const bool active = !a.lengths || t < a.lengths[n];
            const T* hi = hin + n * Hp + jb;
            T* ho = hout + n * ldo + jb;
            T* yo = a.y + tn * H + jb;
            const T* hv = p;  // new state values
            if (d.cell == Cell::rnn) {
              cells::rnn_fwd(d.act, len, p, gxr);
              // No gate tape: phi(a_t) is h_t, the next step's hprev (seq.h), or after the
              // last step hlast.
              if (tr && s == Tn - 1) copy_units(tp.hlast + n * Hp + jb, p, len);
            } else if (lstm) {
              const T* cin = (tr ? tp.cprev + tn * Hp : a.c_n + n * H) + jb;
              T* cout = (tr ? (s == Tn - 1 ? a.c_n + n * H : tp.cprev + (tnext * N + n) * Hp)
                            : a.c_n + n * H) +
                        jb;
              cells::lstm_fwd(len, U, S, p, gxr, cin, cnew, hnew, peep(jb), H);
              if (tr) {
                for (int gt = 0; gt < 4; ++gt)
                  tape_units(tp.gates + tn * GHp + gt * Hp + jb, p + gt * S, lt, stream);
              }
              if (active) {
                copy_units(cout, cnew, len);
              } else if (cout != cin) {
                copy_units(cout, cin, len);
              }
              if (tr && s == Tn - 1) copy_units(tp.clast + n * Hp + jb, active ? cnew : cin, len);
              hv = hnew;
            } else {
              cells::gru_fwd(len, U, S, p, gxr, bhn + jb, hi, hnv, hnew);
              if (tr) {
                for (int gt = 0; gt < 3; ++gt)
                  tape_units(tp.gates + tn * GHp + gt * Hp + jb, p + gt * S, lt, stream);
                tape_units(tp.aux + tn * Hp + jb, hnv, lt, stream);
              }
              hv = hnew;
            }
            finish_row(active, hv, hi, ho, yo, len);
            if (htout) {
              const T* hs = active ? hv : hi;
              for (int u = 0; u < len; ++u) htout[(jb + u) * ldh + n] = hs[u];
            }
          }
        };
        for (i64 b = b0; b < b1; ++b) step_block(b, 0, N);
        for (i64 b = bs; b < g.nb; ++b) step_block(b, n0, n1);
      } else {
        // GRU, reset before the matmul: r, z first; then n needs W_hn (r*h) over all units.
        T* rh = tr ? tp.aux + t * N * Hp : rhb;  // row stride Hp
        const int mra = tile::max_rows(2);
        for (i64 b = b0; b < b1; ++b) {
          const int len = static_cast<int>(std::min<i64>(U, H - b * U));
          const i64 jb = b * U;
          for (i64 r0 = 0; r0 < N; r0 += mra) {
            const int mr = static_cast<int>(std::min<i64>(mra, N - r0));
            tile::run<T>(2, mr, H, hin + r0 * Hp, Hp, whh + b * H * GU, GU, tl, GU);
            for (int r = 0; r < mr; ++r) {
              const i64 n = r0 + r;
              const i64 tn = t * N + n;
              T* p = tl + r * GU;
              cells::gru_rz_fwd(len, U, p, gx + (b * TcN + (t - tlo) * N + n) * GU);
              const T* hi = hin + n * Hp + jb;
              for (int u = 0; u < len; ++u) rh[n * Hp + jb + u] = p[u] * hi[u];
              T* zd = tr ? tp.gates + tn * GHp + Hp + jb : zb + n * H + jb;
              copy_units(zd, p + U, len);
              if (tr) copy_units(tp.gates + tn * GHp + jb, p, len);
            }
          }
        }
        barrier();
        const int mrb = tile::max_rows(1);
        for (i64 b = b0; b < b1; ++b) {
          const int len = static_cast<int>(std::min<i64>(U, H - b * U));
          const i64 jb = b * U;
          for (i64 r0 = 0; r0 < N; r0 += mrb) {
            const int mr = static_cast<int>(std::min<i64>(mrb, N - r0));
            tile::run<T>(1, mr, H, rh + r0 * Hp, Hp, whh + b * H * GU + 2 * U, GU, tl, U);
            for (int r = 0; r < mr; ++r) {
              const i64 n = r0 + r;
              const i64 tn = t * N + n;
              T* pn = tl + r * U;
              const T* z = tr ? tp.gates + tn * GHp + Hp + jb : zb + n * H + jb;
              const T* hi = hin + n * Hp + jb;
              cells::gru_n_fwd(len, pn, gx + (b * TcN + (t - tlo) * N + n) * GU + 2 * U, z, hi,
                               hnew);
              if (tr) copy_units(tp.gates + tn * GHp + 2 * Hp + jb, pn, len);
              const bool active = !a.lengths || t < a.lengths[n];
              finish_row(active, hnew, hi, hout + n * ldo + jb, a.y + tn * H + jb, len);
            }
          }
        }
      }
      barrier();
    }
    simd::stream_fence();  // the tape's streamed stores (tape_units)
  }
}

constexpr i64 kMaxSmallK = kMaxThinRows;  // Geo::unpacked: T*N <= kMaxThinRows

// C (M x len, ldc) = A^T B for A (K x M, lda) and B (K x len, ldb) with few rows K: the
// weight gradients of a call of at most 64 rows in all (Geo::unpacked), whose cost is
// writing C rather than the K multiply-adds per element. Chunks of kRows rows of A^T are
// transposed into L1 and multiplied by B's column strips (tiles over whole vectors, the
// last < L columns by axpy_rows) into a staging block, whose whole aligned vectors then go
// to C past the caches (the packed GEMM reads every line of C into the cache before
// writing it). Backward alone, alternated in one process, 2 threads: GRU (1,1,768,512)
// 1.66x faster, LSTM (1,1,1024,1024) 1.2x, (1,16,512,512) 1.07x, (1,48,1024,1024) 1.09x.
// Each element is summed in plain k order and the chunks do not depend on the thread
// count, so neither do the bits.
template <class T>
void small_k_product(i64 M, i64 len, i64 K, const T* A, i64 lda, const T* B, i64 ldb, T* C,
                     i64 ldc, int threads) {
  constexpr i64 L = tile::lanes<T>();
  constexpr i64 kRows = 48, kCols = 4 * L;
  const i64 chunks = (M + kRows - 1) / kRows;
  const int nt = static_cast<int>(std::max<i64>(1, std::min<i64>(threads, chunks)));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (i64 ci = 0; ci < chunks; ++ci) {
    const i64 m0 = ci * kRows, mc = std::min(kRows, M - m0);
    alignas(64) T at[kRows * kMaxSmallK];  // at[m*K + k] = A[k*lda + m0 + m]
    alignas(64) T st[kRows * kCols];
    simd::transpose_rect(A + m0, lda, K, mc, at, K);
    for (i64 j = 0; j < len; j += kCols) {
      const i64 w = std::min(kCols, len - j), full = w / L * L;
      if (full > 0) {
        tile::panel<T>(static_cast<int>(full / L), mc, K, K, at, K, B + j, ldb, st, kCols);
      }
      if (full < w) axpy_rows(mc, K, at, K, B + j + full, ldb, w - full, st + full, kCols, false);
      for (i64 m = 0; m < mc; ++m) stream_copy(C + (m0 + m) * ldc + j, st + m * kCols, w);
    }
    simd::stream_fence();
  }
}

template <class T>
void backward(const SeqBackward<T>& a) {
  const SeqDims& d = a.d;
  const Geo g = bwd_geometry<T>(d);
  const BwdLayout lay = bwd_layout<T>(d, g);
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H;
  const int G = g.G, U = g.U;
  const i64 GH = i64{G} * H;
  const bool lstm = d.cell == Cell::lstm;
  const bool gru = d.cell == Cell::gru;
  const bool gru_before = gru && !d.reset_after;
  T* wbk = a.work + lay.wbk;
  T* dG = a.work + lay.dg;
  T* dhn = a.work + lay.dhn;
  T* dts = a.work + lay.dts;  // (N, nb*U): dG_t W_hh for the owned blocks
  // Column sums of dG (and of dhn, GRU reset-after, from GH on): the bias gradients.
  T* bsum = a.work + lay.bsum;
  const bool bias = a.db_ih || a.db_hh;
  const bool with_dhn = gru && d.reset_after;  // dhn = dL/d(W_hn h + b_hn) exists
  i64 shared_js = H;  // the first unit of the shared blocks (join_team)
  const i64 kc = std::max<i64>(16, 16384 / (U * static_cast<i64>(sizeof(T))));
  // Blocks per superblock (LSTM/GRU blocks are one vector wide) and the row group of
  // every step product, fixed so that the bits do not depend on the superblock width.
  const i64 SB = g.UB == 1 ? 4 : 1;
  const int mr_bwd = tile::max_rows(4);
  const SeqTape<const T>& tp = a.tape;
  const i64 Hp = tape_stride(H, sizeof(T)), GHp = G * Hp;  // the tape's strides (seq.h)
  // Row n of what the forward's step at time t (the backward's step s) produced: the
  // state it handed on (h_t, LSTM c_t), which the forward's next step took in, or after
  // its last step (s == 0) the tape's copy; and its gate activations, an RNN's being h_t.
  auto next_state = [&](i64 s, i64 t, i64 n, const T* prev, const T* last) -> const T* {
    return s == 0 ? last + n * Hp : prev + ((d.reverse ? t - 1 : t + 1) * N + n) * Hp;
  };
  // The peephole gradients of units [ja, jb) from step s (time t) on: dp_i += dA_i c_{t-1},
  // dp_f += dA_f c_{t-1}, dp_o += dA_o c_t over the rows in order (dA is zero on inactive
  // steps). Like the bias sums, the owned units' inside the loop, the shared blocks' after
  // it, every unit in the same order of steps and rows: the bits do not depend on the
  // thread count.
  // In vectors: as a scalar loop (seven pointers: not vectorised) a training step of LSTM
  // (1000,8,64,64) took 1.20x the time of one without peepholes.
  auto peep_sums = [&](i64 s, i64 t, i64 ja, i64 jb) {
    using V = simd::Vec<T>;
    T* dpi = a.dw_peep + ja;
    T* dpf = a.dw_peep + H + ja;
    T* dpo = a.dw_peep + 2 * H + ja;
    for (i64 n = 0; n < N; ++n) {
      const T* dgr = dG + (t * N + n) * GH + ja;
      const T* cp = tp.cprev + (t * N + n) * Hp + ja;
      const T* ct = next_state(s, t, n, tp.cprev, tp.clast) + ja;
      simd::for_vectors<T>(jb - ja, [&](i64 u, auto ld, auto st) {
        const V c = ld(cp + u);
        st(dpi + u, ld(dpi + u) + ld(dgr + u) * c);
        st(dpf + u, ld(dpf + u) + ld(dgr + H + u) * c);
        st(dpo + u, ld(dpo + u) + ld(dgr + 3 * H + u) * ld(ct + u));
      });
    }
  };
  const int nt = team_size(a.num_threads, g.nb, d, false);
  StepBarrier bar;

#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    const auto [b0, b1, j0, j1, bs, js, n0, n1, tid, nth] =
        join_team(bar, g.nb, U, H, N, !gru_before);
    auto barrier = [&bar] { bar.wait(); };
    // W_hh (G*H x H) packed by runs of up to SB owned blocks ("superblocks", from b0 in
    // steps of SB): superblock sb of w blocks is [k][w*U] at wbk + sb*GH*U, i.e.
    // [sb][k][(b - sb)*U + u] = W_hh[k][b*U + u]; a wide tile per step product.
    // Row copies (the element loop this replaces reloaded a.w_hh on every element: it
    // may alias wbk as far as the compiler knows; LSTM (1,1,512,512) backward 1.55x faster).
    // A shared block is a superblock of its own, packed by one thread (its turn).
    const T* whh = a.w_hh;
    // (Into `to` instead of the superblock's place: Geo::thin's one copied block.)
    auto pack = [&](i64 sb, i64 w, T* to = nullptr) {
      const i64 wU = w * U;
      const i64 in_h = std::min(wU, H - sb * U);
      T* const base = to ? to : wbk + sb * GH * U;
      for (i64 k = 0; k < GH; ++k) {
        T* dst = base + k * wU;
        std::memcpy(dst, whh + k * H + sb * U, sizeof(T) * static_cast<std::size_t>(in_h));
        std::fill(dst + in_h, dst + wU, T(0));
      }
    };
    // A few rows: the step products read W_hh where it is (Geo::thin: except a last block
    // reaching past H, whose tiles would read past the rows' ends; its owner copies it).
    const i64 tail = H % U ? g.nb - 1 : -1;
    if (g.thin) {
      if ((tail >= b0 && tail < b1) || (tail >= bs && (tail - bs) % nth == tid)) {
        pack(tail, 1, wbk);
      }
    } else if (!g.direct) {
      for (i64 sb = b0; sb < b1; sb += SB) pack(sb, std::min<i64>(SB, b1 - sb));
      for (i64 b = bs; b < g.nb; ++b)
        if ((b - bs) % nth == tid) pack(b, 1);
    }
    auto init_grads = [&](i64 r0, i64 r1, i64 ja, i64 jb) {
      for (i64 n = r0; n < r1; ++n)
        for (i64 j = ja; j < jb; ++j) {
          a.dh0[n * H + j] = a.dh_n ? a.dh_n[n * H + j] : T(0);
          if (lstm) a.dc0[n * H + j] = a.dc_n ? a.dc_n[n * H + j] : T(0);
        }
    };
    init_grads(0, N, j0, j1);
    init_grads(n0, n1, js, H);
    if (tid == 0) shared_js = js;
    if (bias) {
      for (int gt = 0; gt < G; ++gt) std::fill(bsum + gt * H + j0, bsum + gt * H + j1, T(0));
      if (with_dhn) std::fill(bsum + GH + j0, bsum + GH + j1, T(0));
    }
    if (a.dw_peep) {
      for (int k = 0; k < 3; ++k) {
        std::fill(a.dw_peep + k * H + j0, a.dw_peep + k * H + j1, T(0));
      }
    }
    omp_barrier();  // publishes bar.count

    // What the pointwise step of row tn, units [jb, jb + len) reads from memory: the
    // tape (mostly streamed past the caches by the forward) and dy. Fetched a step
    // ahead, towards L2: the pointwise step of LSTM (80,16,300,300) took 4.6-5.8 Mcyc
    // per call waiting on these loads, 3.8-4.2 with them fetched (2.4 vs 5.3 when
    // the tape is wholly in memory). Always inlined: as a function of loads and prefetches
    // GCC took it for a pure one and deleted its calls, prefetches and all (none were left
    // in the binary; restored, LSTM (80,16,300,300) backward 1.05x faster).
    // Fetched again into L1 two rows ahead in the same step (kL1Ahead): a step's W_hh
    // share, dG_t and the lines fetched a step ahead can outgrow L2, and the first load of
    // each row still waited (30% of the pointwise step's samples at LSTM (40,32,300,300)).
    // Backward alone, both ways alternated in one process, 2 threads, 8 shapes (LSTM, GRU,
    // RNN, H = 64-512, N = 16-256), five runs: 0.95-1.02x the time, medians 0.98-0.99; 1 thread
    // 0.97-1.03x. Four rows ahead: 0.98-1.01x; without the step-ahead fetch: 0.93-1.01x.
    auto act_row = [&](i64 s, i64 t, i64 n) -> const T* {
      return d.cell == Cell::rnn ? next_state(s, t, n, tp.hprev, tp.hlast)
                                 : tp.gates + (t * N + n) * GHp;
    };
    auto prefetch_row = [&](auto to_l1, i64 s, i64 t, i64 n, i64 jb,
                            int len) FASTRNN_INLINE_LAMBDA {
      constexpr bool l1 = decltype(to_l1)::value;
      const i64 tn = t * N + n;
      const T* act = act_row(s, t, n);
      for (int gt = 0; gt < G; ++gt) prefetch_units<l1>(act + gt * Hp + jb, len);
      if (lstm) {
        prefetch_units<l1>(tp.cprev + tn * Hp + jb, len);
      } else if (gru) {
        prefetch_units<l1>(tp.hprev + tn * Hp + jb, len);
        if (d.reset_after) prefetch_units<l1>(tp.aux + tn * Hp + jb, len);
      }
      if (a.dy) prefetch_units<l1>(a.dy + tn * H + jb, len);
    };
    constexpr i64 kL1Ahead = 2;
    alignas(64) T tl[kMaxTile];
    alignas(64) T gb[kMaxU];
    for (i64 s = 0; s < Tn; ++s) {
      const i64 t = d.reverse ? s : Tn - 1 - s;
      const i64 t_next = d.reverse ? t + 1 : t - 1;  // the next step's time
      // Block b, rows [r0, r1): the pointwise step, dh_t -> dG_t (and dh, dc through it).
      auto pointwise = [&](i64 b, i64 r0, i64 r1) {
        const int len = static_cast<int>(std::min<i64>(U, H - b * U));
        const i64 jb = b * U;
        for (i64 n = r0; n < r1; ++n) {
          const i64 tn = t * N + n;
          T* dgr = dG + tn * GH + jb;
          if (a.lengths && t >= a.lengths[n]) {
            for (int gt = 0; gt < G; ++gt) std::fill(dgr + gt * H, dgr + gt * H + len, T(0));
            if (with_dhn) std::fill(dhn + tn * H + jb, dhn + tn * H + jb + len, T(0));
            continue;
          }
          if (s + 1 < Tn) prefetch_row(std::false_type{}, s + 1, t_next, n, jb, len);
          if (n + kL1Ahead < r1) prefetch_row(std::true_type{}, s, t, n + kL1Ahead, jb, len);
          T* dh = a.dh0 + n * H + jb;
          if (a.dy) {
            const T* dyr = a.dy + tn * H + jb;
            for (int u = 0; u < len; ++u) gb[u] = dh[u] + dyr[u];
          } else {
            for (int u = 0; u < len; ++u) gb[u] = dh[u];
          }
          const T* act = act_row(s, t, n) + jb;
          if (d.cell == Cell::rnn) {
            cells::rnn_bwd(d.act, len, gb, act, dgr);
            std::fill(dh, dh + len, T(0));
          } else if (lstm) {
            const T* ct = next_state(s, t, n, tp.cprev, tp.clast) + jb;
            cells::lstm_bwd(len, Hp, H, gb, act, tp.cprev + tn * Hp + jb, ct,
                            a.dc0 + n * H + jb, dgr, a.w_peep ? a.w_peep + jb : nullptr, H);
            std::fill(dh, dh + len, T(0));
          } else if (d.reset_after) {
            cells::gru_bwd(len, Hp, H, gb, act, tp.hprev + tn * Hp + jb, tp.aux + tn * Hp + jb,
                           dgr, dhn + tn * H + jb, dh);
          } else {
            cells::gru_zn_bwd(len, Hp, H, gb, act, tp.hprev + tn * Hp + jb, dgr, dh);
          }
        }
      };
      for (i64 b = b0; b < b1; ++b) pointwise(b, 0, N);
      for (i64 b = bs; b < g.nb; ++b) pointwise(b, n0, n1);
      if (gru_before) {
        barrier();
        // dL/d(r*h) = dA_n W_hn on the owned units, then the r gate.
        const int mrb = tile::max_rows(1);
        for (i64 b = b0; b < b1; ++b) {
          const int len = static_cast<int>(std::min<i64>(U, H - b * U));
          const i64 jb = b * U;
          for (i64 r0 = 0; r0 < N; r0 += mrb) {
            const int mr = static_cast<int>(std::min<i64>(mrb, N - r0));
            const i64 sb = b0 + (b - b0) / SB * SB;
            const i64 wU = std::min<i64>(SB, b1 - sb) * U;
            tile::run<T>(1, mr, H, dG + (t * N + r0) * GH + 2 * H, GH,
                         wbk + sb * GH * U + 2 * H * wU + (b - sb) * U, wU, tl, U);
            for (int r = 0; r < mr; ++r) {
              const i64 n = r0 + r;
              const i64 tn = t * N + n;
              if (a.lengths && t >= a.lengths[n]) {
                std::fill(dG + tn * GH + jb, dG + tn * GH + jb + len, T(0));
                continue;
              }
              cells::gru_r_bwd(len, tp.gates + tn * GHp + jb, tp.hprev + tn * Hp + jb,
                               tl + r * U, dG + tn * GH + jb, a.dh0 + n * H + jb);
            }
          }
        }
      }
      barrier();
      // The bias sums of the owned units, while dG_t is in this thread's caches: every
      // column summed in the order of the steps, whatever the thread count (the shared
      // blocks' columns are summed after the loop, in the same order).
      if (bias) {
        for (i64 n = 0; n < N; ++n) {
          const T* dgr = dG + (t * N + n) * GH;
          for (int gt = 0; gt < G; ++gt) {
            T* acc = bsum + gt * H;
            const T* row = dgr + gt * H;
            for (i64 j = j0; j < j1; ++j) acc[j] += row[j];
          }
          if (with_dhn) {
            const T* row = dhn + (t * N + n) * H;
            for (i64 j = j0; j < j1; ++j) bsum[GH + j] += row[j];
          }
        }
      }
      if (a.dw_peep) peep_sums(s, t, j0, j1);
      // dh_{t-1} += dG_t W_hh on the owned units (K in L1-sized slices over all N rows).
      const i64 K1 = gru ? 2 * H : GH;
      // Superblock sb of w blocks, rows [r0, r1).
      auto product = [&](i64 sb, int w, i64 r0, i64 r1) {
        const i64 wU = i64{w} * U;
        const i64 jb = sb * U;
        const i64 len = std::min<i64>(wU, H - jb);
        const int cv = g.UB * w;
        const i64 rows = r1 - r0;
        T* C = dts + sb * N * U + r0 * wU;  // (N, w*U), from row r0
        const T* dGt = dG + (t * N + r0) * GH;
        // The tiles of cv vectors into C from B (rows ldb apart).
        auto tiles = [&](int cv, const T* B, i64 ldb, T* Cc) {
          if (SB == 1) {  // RNN: one width, the plain tiles
            tile::panel<T>(cv, rows, K1, kc, dGt, GH, B, ldb, Cc, wU);
          } else {
            tile::panel_fixed<T>(cv, mr_bwd, rows, K1, kc, dGt, GH, B, ldb, Cc, wU, false);
          }
          if (with_dhn) {  // GRU reset-after adds dhn_t W_hn
            tile::panel_fixed<T>(cv, mr_bwd, rows, H, kc, dhn + (t * N + r0) * H, H,
                                 B + 2 * H * ldb, ldb, Cc, wU, true);
          }
        };
        if (g.direct) {
          axpy_rows(rows, K1, dGt, GH, whh + jb, H, len, C, wU, false);
          if (with_dhn) {
            axpy_rows(rows, H, dhn + (t * N + r0) * H, H, whh + 2 * H * H + jb, H, len, C, wU,
                      true);
          }
        } else if (g.thin) {  // whole blocks from W_hh, the last partial one from its copy
          const int wf = static_cast<int>(std::min<i64>(w, (H - jb) / U));
          if (wf > 0) tiles(g.UB * wf, whh + jb, H, C);
          if (wf < w) tiles(g.UB, wbk, U, C + i64{wf} * U);
        } else {
          tiles(cv, wbk + sb * GH * U, wU, C);
        }
        for (i64 q = 0; q < rows; ++q) {
          T* dh = a.dh0 + (r0 + q) * H + jb;
          const T* src = C + q * wU;
          for (i64 u = 0; u < len; ++u) dh[u] += src[u];
        }
      };
      for (i64 sb = b0; sb < b1; sb += SB)
        product(sb, static_cast<int>(std::min<i64>(SB, b1 - sb)), 0, N);
      for (i64 b = bs; b < g.nb; ++b) product(b, 1, n0, n1);
    }
  }

  // Weight, bias and input gradients over all T*N rows.
  const i64 TN = Tn * N;
  const int th = std::max(1, a.num_threads);
  if (g.unpacked()) {
    // dx = dG W_ih without packing W_ih, strips of four vectors of columns per thread: the
    // direct backward's by axpy_rows (rows in pairs; a thread per four strips), the thin
    // one's as tiles over the strip's whole vectors, the last < L columns by axpy_rows.
    constexpr i64 L = tile::lanes<T>();
    constexpr i64 kStrip = 4 * L;
    const i64 kcx = std::max<i64>(16, 65536 / (kStrip * static_cast<i64>(sizeof(T))));
    const i64 strips = (I + kStrip - 1) / kStrip;
    const int nx =
        static_cast<int>(std::min<i64>(th, g.direct ? std::max<i64>(1, strips / 4) : strips));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nx) schedule(static) if (nx > 1)
#endif
    for (i64 sidx = 0; sidx < strips; ++sidx) {
      const i64 j = sidx * kStrip, wdt = std::min(kStrip, I - j);
      const i64 full = g.thin ? wdt / L * L : 0;
      if (full > 0) {
        tile::panel<T>(static_cast<int>(full / L), TN, GH, kcx, dG, GH, a.w_ih + j, I, a.dx + j, I);
      }
      if (full < wdt) {
        axpy_rows(TN, GH, dG, GH, a.w_ih + j + full, I, wdt - full, a.dx + j + full, I, false);
      }
    }
  } else {
    gemm<T>(Trans::no, Trans::no, TN, I, GH, T(1), dG, GH, a.w_ih, I, T(0), a.dx, I, th);
  }
  // C_r (M x len_r) = A^T B_r over the T*N rows of A (.., M) and each B_r (.., len_r): weight
  // gradients of the same M gate rows, so that the GEMM packs each block of A = dG^T once
  // for both (gemm_shared_a; backward alone, 2 threads: LSTM (200,32,128,128) and
  // (100,64,256,256) 1.03x faster, (1000,8,64,64) 1.06x, GRU (200,32,128,128) 1.03x, RNN
  // (100,64,256,256) 1.02x; the same bits). A short call's gradient of kStreamGradBytes or more is
  // small_k_product's, streamed: a smaller one is better left in the caches for whatever
  // reads it next (with a NumPy SGD update after each step, LSTM (1,12,256,256), 1 MiB per
  // matrix, was 10% slower streamed; from 4 MiB on the same or faster).
  auto weight_grads = [&](i64 M, const T* A, i64 lda, std::initializer_list<GemmRhs<T>> rhs) {
    GemmRhs<T> packed[2];
    int count = 0;
    for (const GemmRhs<T>& r : rhs) {
      const bool big = M * r.n * static_cast<i64>(sizeof(T)) >= kStreamGradBytes;
      if (g.unpacked() && big && TN <= kMaxSmallK) {
        small_k_product(M, r.n, TN, A, lda, r.b, r.ldb, r.c, r.ldc, th);
      } else {
        packed[count++] = r;
      }
    }
    gemm_shared_a<T>(Trans::yes, M, TN, T(1), A, lda, packed, count, T(0), th);
  };
  if (!gru) {
    weight_grads(GH, dG, GH, {{a.x, I, I, a.dw_ih, I}, {tp.hprev, Hp, H, a.dw_hh, H}});
  } else {
    // r and z rows: dG against x and h; n rows: dG against x, and against r*h (reset before)
    // or dhn against h (reset after).
    T* dwi_n = a.dw_ih + 2 * H * I;
    T* dwh_n = a.dw_hh + 2 * H * H;
    weight_grads(2 * H, dG, GH, {{a.x, I, I, a.dw_ih, I}, {tp.hprev, Hp, H, a.dw_hh, H}});
    if (d.reset_after) {
      weight_grads(H, dG + 2 * H, GH, {{a.x, I, I, dwi_n, I}});
      weight_grads(H, dhn, H, {{tp.hprev, Hp, H, dwh_n, H}});
    } else {
      weight_grads(H, dG + 2 * H, GH, {{a.x, I, I, dwi_n, I}, {tp.aux, Hp, H, dwh_n, H}});
    }
  }
  if (a.dw_peep && shared_js < H) {
    for (int k = 0; k < 3; ++k) {
      std::fill(a.dw_peep + k * H + shared_js, a.dw_peep + (k + 1) * H, T(0));
    }
    for (i64 s = 0; s < Tn; ++s) peep_sums(s, d.reverse ? s : Tn - 1 - s, shared_js, H);
  }
  // Both biases sit on the same pre-activations, except GRU's b_hn (reset after), which
  // sits inside r * (...): the sums of dG serve both. Those of the owned units were taken in
  // the reverse loop, while dG_t was in the caches (backward alone, 2 threads, against a
  // pass over dG after the loop: GRU (200,32,128,128) 1.08x faster, (60,100,96,96) 1.08x,
  // LSTM (200,32,128,128) 1.03x, (100,64,256,256) 1.01x); the shared blocks' columns are
  // summed here, in the same order of steps, so the bits do not depend on the thread count.
  if (!bias) return;
  const i64 shared = with_dhn ? 2 * H : GH;
  auto shared_sums = [&](const T* m, i64 ld, T* out) {
    std::fill(out + shared_js, out + H, T(0));
    for (i64 s = 0; s < Tn; ++s) {
      const i64 t = d.reverse ? s : Tn - 1 - s;
      for (i64 n = 0; n < N; ++n) {
        const T* row = m + (t * N + n) * ld;
        for (i64 j = shared_js; j < H; ++j) out[j] += row[j];
      }
    }
  };
  if (shared_js < H) {
    for (int gt = 0; gt < G; ++gt) shared_sums(dG + gt * H, GH, bsum + gt * H);
    if (with_dhn) shared_sums(dhn, H, bsum + GH);
  }
  if (a.db_ih) std::copy(bsum, bsum + GH, a.db_ih);
  if (a.db_hh) {
    std::copy(bsum, bsum + shared, a.db_hh);
    if (with_dhn) std::copy(bsum + GH, bsum + GH + H, a.db_hh + 2 * H);
  }
}

}  // namespace

const SeqTable& seq_table() {
  static const SeqTable t{
      {&forward_work<float>, &backward_work<float>, &forward<float>, &backward<float>,
       &packed_size<float>, &pack_weights<float>},
      {&forward_work<double>, &backward_work<double>, &forward<double>, &backward<double>,
       &packed_size<double>, &pack_weights<double>},
  };
  return t;
}

FASTRNN_TARGET_NS_END
