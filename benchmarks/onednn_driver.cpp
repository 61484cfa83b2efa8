// Times one oneDNN RNN layer (LSTM, GRU with the reset gate after the matmul, or a tanh
// RNN), float32, time-major, one direction, for benchmarks/bench_onednn.py, which builds
// this file against an installed oneDNN (v3) and checks what it writes against fastrnn's
// reference before it trusts the times.
//
//   onednn_driver CELL T N I H MODE REPEAT IN OUT
//
// CELL: lstm, gru or rnn; MODE: inference (one forward) or training (a training forward,
// then the backward). IN holds float32 arrays back to back in PyTorch's layouts: x (T,N,I),
// h0 (N,H), c0 (N,H) for LSTM only, w_ih (G*H,I), w_hh (G*H,H), b_ih (G*H), b_hh (G*H),
// and for training dy (T,N,H). OUT receives y (T,N,H), h_n (N,H), c_n for LSTM, and for
// training dx, dh0, dc0 for LSTM, dw_ih, dw_hh, db_ih, db_hh, in the same layouts. Weights
// are converted to oneDNN's preferred layouts once, outside the timing. Prints one line
// per timed run: milliseconds for the whole run (the primitives' execution, and in training
// the zeroing of the weight gradients, which oneDNN accumulates into), then those of the
// forward alone (the same number in inference).
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

using dnnl::algorithm;
using dnnl::engine;
using dnnl::memory;
using dnnl::prop_kind;
using dnnl::rnn_direction;
using dnnl::stream;
using tag = memory::format_tag;
using dt = memory::data_type;
using Args = std::unordered_map<int, memory>;
using Vec = std::vector<float>;

namespace {

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

memory::desc plain(const memory::dims& d, tag t) { return memory::desc(d, dt::f32, t); }
memory::desc any(const memory::dims& d) { return memory::desc(d, dt::f32, tag::any); }

// oneDNN's gate index -> PyTorch's. GRU: oneDNN orders (update, reset, candidate), PyTorch
// (reset, update, candidate); LSTM (i, f, g, o) and the RNN's one gate agree.
int torch_gate(const std::string& cell, int g) {
  if (cell == "gru" && g < 2) return 1 - g;
  return g;
}

struct Layer {
  std::string cell;
  long T, N, I, H;
  int G;
};

// PyTorch's (G*H, K) weight -> oneDNN's ldigo (1, 1, K, G, H), or back with !to_ldigo.
Vec ldigo(const Layer& L, const float* w, long K, bool to_ldigo) {
  Vec out(static_cast<size_t>(K * L.G * L.H));
  for (long k = 0; k < K; ++k)
    for (int g = 0; g < L.G; ++g)
      for (long o = 0; o < L.H; ++o) {
        const long at_dnnl = (k * L.G + g) * L.H + o;
        const long at_torch = (torch_gate(L.cell, g) * L.H + o) * K + k;
        if (to_ldigo) {
          out[at_dnnl] = w[at_torch];
        } else {
          out[at_torch] = w[at_dnnl];
        }
      }
  return out;
}

// Gate biases: b_ih + b_hh per gate, except GRU's candidate, whose b_hn sits inside
// r * (W_hn h + b_hn): oneDNN's linear-before-reset GRU keeps it as a fourth bias.
long bias_gates(const Layer& L) { return L.cell == "gru" ? 4 : L.G; }
Vec to_ldgo(const Layer& L, const float* b_ih, const float* b_hh) {
  Vec out(static_cast<size_t>(bias_gates(L) * L.H));
  for (int g = 0; g < L.G; ++g) {
    const long tg = torch_gate(L.cell, g);
    for (long o = 0; o < L.H; ++o) {
      const bool inside = L.cell == "gru" && g == 2;
      out[g * L.H + o] = b_ih[tg * L.H + o] + (inside ? 0.f : b_hh[tg * L.H + o]);
    }
  }
  if (L.cell == "gru")
    for (long o = 0; o < L.H; ++o) out[3 * L.H + o] = b_hh[2 * L.H + o];
  return out;
}

// A user array in a plain layout, reordered into the layout a primitive wants (or used as
// is when they agree).
memory in_layout(memory user, const memory::desc& want, const engine& eng, stream& s) {
  if (user.get_desc() == want) return user;
  memory m(want, eng);
  dnnl::reorder(user, m).execute(s, user, m);
  s.wait();
  return m;
}

template <class Fwd, class Bwd, class MakeFwd, class MakeBwd>
int run(const Layer& L, bool training, int repeat, const std::vector<float>& in,
        const char* out_path, MakeFwd make_fwd, MakeBwd make_bwd) {
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const bool lstm = L.cell == "lstm";
  const memory::dims src_d{L.T, L.N, L.I}, dst_d{L.T, L.N, L.H}, st_d{1, 1, L.N, L.H};
  const memory::dims wl_d{1, 1, L.I, L.G, L.H}, wi_d{1, 1, L.H, L.G, L.H};
  const memory::dims b_d{1, 1, bias_gates(L), L.H};
  const long NH = L.N * L.H, GH = L.G * L.H;

  // Inputs, in the order IN holds them.
  const float* p = in.data();
  auto take = [&p](long n) {
    Vec v(p, p + n);
    p += n;
    return v;
  };
  Vec x = take(L.T * L.N * L.I), h0 = take(NH), c0 = lstm ? take(NH) : Vec(NH, 0.f);
  const Vec w_ih = take(GH * L.I), w_hh = take(GH * L.H), b_ih = take(GH), b_hh = take(GH);
  Vec wl = ldigo(L, w_ih.data(), L.I, true), wi = ldigo(L, w_hh.data(), L.H, true);
  Vec b = to_ldgo(L, b_ih.data(), b_hh.data());
  Vec dy = training ? take(L.T * L.N * L.H) : Vec();
  Vec y(L.T * NH), hn(NH), cn(NH);

  auto md_src = plain(src_d, tag::tnc), md_dst = plain(dst_d, tag::tnc);
  auto md_st = plain(st_d, tag::ldnc), md_b = plain(b_d, tag::ldgo);
  auto fpd = make_fwd(eng, training ? prop_kind::forward_training : prop_kind::forward_inference,
                      md_src, md_st, any(wl_d), any(wi_d), md_b, md_dst);
  memory m_x(md_src, eng, x.data()), m_y(md_dst, eng, y.data());
  memory m_h0(md_st, eng, h0.data()), m_c0(md_st, eng, c0.data());
  memory m_hn(md_st, eng, hn.data()), m_cn(md_st, eng, cn.data());
  memory m_b(md_b, eng, b.data());
  memory u_wl(plain(wl_d, tag::ldigo), eng, wl.data());
  memory u_wi(plain(wi_d, tag::ldigo), eng, wi.data());
  memory m_wl = in_layout(u_wl, fpd.weights_layer_desc(), eng, s);
  memory m_wi = in_layout(u_wi, fpd.weights_iter_desc(), eng, s);
  Args fargs{{DNNL_ARG_SRC_LAYER, m_x},       {DNNL_ARG_SRC_ITER, m_h0},
             {DNNL_ARG_WEIGHTS_LAYER, m_wl},  {DNNL_ARG_WEIGHTS_ITER, m_wi},
             {DNNL_ARG_BIAS, m_b},            {DNNL_ARG_DST_LAYER, m_y},
             {DNNL_ARG_DST_ITER, m_hn}};
  if (lstm) {
    fargs[DNNL_ARG_SRC_ITER_C] = m_c0;
    fargs[DNNL_ARG_DST_ITER_C] = m_cn;
  }
  memory ws;
  if (training) {
    ws = memory(fpd.workspace_desc(), eng);
    fargs[DNNL_ARG_WORKSPACE] = ws;
  }
  Fwd fwd(fpd);

  // Backward: the gradients of every input, the final states' upstream gradients zero.
  Vec dx(L.T * L.N * L.I), dh0(NH), dc0(NH), dhn(NH, 0.f), dcn(NH, 0.f);
  Vec dwl(L.I * GH), dwi(L.H * GH), db(bias_gates(L) * L.H);
  Bwd* bwd = nullptr;
  Args bargs;
  memory m_dwl, m_dwi, m_db, u_dwl, u_dwi;
  if (training) {
    auto bpd = make_bwd(eng, md_src, md_st, any(wl_d), any(wi_d), md_b, md_dst, fpd);
    memory m_dx(md_src, eng, dx.data()), m_dh0(md_st, eng, dh0.data());
    memory m_dc0(md_st, eng, dc0.data()), m_dy(md_dst, eng, dy.data());
    memory m_dhn(md_st, eng, dhn.data()), m_dcn(md_st, eng, dcn.data());
    u_dwl = memory(plain(wl_d, tag::ldigo), eng, dwl.data());
    u_dwi = memory(plain(wi_d, tag::ldigo), eng, dwi.data());
    m_dwl = memory(bpd.diff_weights_layer_desc(), eng);
    m_dwi = memory(bpd.diff_weights_iter_desc(), eng);
    m_db = memory(md_b, eng, db.data());
    bargs = {{DNNL_ARG_SRC_LAYER, m_x},
             {DNNL_ARG_SRC_ITER, m_h0},
             {DNNL_ARG_WEIGHTS_LAYER, in_layout(u_wl, bpd.weights_layer_desc(), eng, s)},
             {DNNL_ARG_WEIGHTS_ITER, in_layout(u_wi, bpd.weights_iter_desc(), eng, s)},
             {DNNL_ARG_BIAS, m_b},
             {DNNL_ARG_DST_LAYER, m_y},
             {DNNL_ARG_DST_ITER, m_hn},
             {DNNL_ARG_WORKSPACE, ws},
             {DNNL_ARG_DIFF_SRC_LAYER, m_dx},
             {DNNL_ARG_DIFF_SRC_ITER, m_dh0},
             {DNNL_ARG_DIFF_WEIGHTS_LAYER, m_dwl},
             {DNNL_ARG_DIFF_WEIGHTS_ITER, m_dwi},
             {DNNL_ARG_DIFF_BIAS, m_db},
             {DNNL_ARG_DIFF_DST_LAYER, m_dy},
             {DNNL_ARG_DIFF_DST_ITER, m_dhn}};
    if (lstm) {
      bargs[DNNL_ARG_SRC_ITER_C] = m_c0;
      bargs[DNNL_ARG_DST_ITER_C] = m_cn;
      bargs[DNNL_ARG_DIFF_SRC_ITER_C] = m_dc0;
      bargs[DNNL_ARG_DIFF_DST_ITER_C] = m_dcn;
    }
    bwd = new Bwd(bpd);
  }
  auto zero = [](memory& m) {
    std::memset(m.get_data_handle(), 0, m.get_desc().get_size());
  };

  for (int r = 0; r <= repeat; ++r) {  // run 0: warm-up
    const double t0 = now_ms();
    fwd.execute(s, fargs);
    s.wait();
    const double t_fwd = now_ms();
    if (training) {
      zero(m_dwl);
      zero(m_dwi);
      zero(m_db);
      bwd->execute(s, bargs);
    }
    s.wait();
    const double ms = now_ms() - t0;
    if (r > 0) std::printf("%.6f %.6f\n", ms, t_fwd - t0);
  }

  std::ofstream out(out_path, std::ios::binary);
  auto put = [&out](const Vec& v) {
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  };
  put(y);
  put(hn);
  if (lstm) put(cn);
  if (training) {
    dnnl::reorder(m_dwl, u_dwl).execute(s, m_dwl, u_dwl);
    dnnl::reorder(m_dwi, u_dwi).execute(s, m_dwi, u_dwi);
    s.wait();
    put(dx);
    put(dh0);
    if (lstm) put(dc0);
    put(ldigo(L, dwl.data(), L.I, false));
    put(ldigo(L, dwi.data(), L.H, false));
    // db_ih: every gate's bias gradient; db_hh: the same, but GRU's b_hn has its own.
    Vec dbi(GH), dbh(GH);
    for (int g = 0; g < L.G; ++g)
      for (long o = 0; o < L.H; ++o) {
        dbi[torch_gate(L.cell, g) * L.H + o] = db[g * L.H + o];
        dbh[torch_gate(L.cell, g) * L.H + o] = db[g * L.H + o];
      }
    if (L.cell == "gru")
      for (long o = 0; o < L.H; ++o) dbh[2 * L.H + o] = db[3 * L.H + o];
    put(dbi);
    put(dbh);
  }
  delete bwd;
  return out ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: %s CELL T N I H MODE REPEAT IN OUT\n", argv[0]);
    return 2;
  }
  Layer L{argv[1], std::atol(argv[2]), std::atol(argv[3]), std::atol(argv[4]),
          std::atol(argv[5]), 0};
  L.G = L.cell == "lstm" ? 4 : (L.cell == "gru" ? 3 : 1);
  const bool training = std::string(argv[6]) == "training";
  const int repeat = std::atoi(argv[7]);
  std::ifstream f(argv[8], std::ios::binary | std::ios::ate);
  std::vector<float> in(static_cast<size_t>(f.tellg()) / 4);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(in.data()), static_cast<std::streamsize>(in.size() * 4));
  const auto dir = rnn_direction::unidirectional_left2right;
  try {
    if (L.cell == "lstm") {
      return run<dnnl::lstm_forward, dnnl::lstm_backward>(
          L, training, repeat, in, argv[9],
          [&](const engine& e, prop_kind pk, auto src, auto st, auto wl, auto wi, auto b,
              auto dst) {
            return dnnl::lstm_forward::primitive_desc(e, pk, dir, src, st, st, wl, wi, b, dst,
                                                      st, st);
          },
          [&](const engine& e, auto src, auto st, auto wl, auto wi, auto b, auto dst,
              const auto& hint) {
            return dnnl::lstm_backward::primitive_desc(e, prop_kind::backward, dir, src, st, st,
                                                       wl, wi, b, dst, st, st, src, st, st, wl,
                                                       wi, b, dst, st, st, hint);
          });
    }
    if (L.cell == "gru") {
      return run<dnnl::lbr_gru_forward, dnnl::lbr_gru_backward>(
          L, training, repeat, in, argv[9],
          [&](const engine& e, prop_kind pk, auto src, auto st, auto wl, auto wi, auto b,
              auto dst) {
            return dnnl::lbr_gru_forward::primitive_desc(e, pk, dir, src, st, wl, wi, b, dst, st);
          },
          [&](const engine& e, auto src, auto st, auto wl, auto wi, auto b, auto dst,
              const auto& hint) {
            return dnnl::lbr_gru_backward::primitive_desc(e, prop_kind::backward, dir, src, st,
                                                          wl, wi, b, dst, st, src, st, wl, wi, b,
                                                          dst, st, hint);
          });
    }
    const auto act = algorithm::eltwise_tanh;
    return run<dnnl::vanilla_rnn_forward, dnnl::vanilla_rnn_backward>(
        L, training, repeat, in, argv[9],
        [&](const engine& e, prop_kind pk, auto src, auto st, auto wl, auto wi, auto b,
            auto dst) {
          return dnnl::vanilla_rnn_forward::primitive_desc(e, pk, act, dir, src, st, wl, wi, b,
                                                           dst, st);
        },
        [&](const engine& e, auto src, auto st, auto wl, auto wi, auto b, auto dst,
            const auto& hint) {
          return dnnl::vanilla_rnn_backward::primitive_desc(e, prop_kind::backward, act, dir, src,
                                                            st, wl, wi, b, dst, st, src, st, wl,
                                                            wi, b, dst, st, hint);
        });
  } catch (const dnnl::error& e) {
    std::fprintf(stderr, "oneDNN error: %s (status %d)\n", e.what(), static_cast<int>(e.status));
    return 1;
  }
}
