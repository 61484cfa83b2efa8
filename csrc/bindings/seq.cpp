// Sequence kernels: forward and BPTT for RNN, LSTM, GRU (fastrnn.functional).
//
// Every argument is checked (types, dtypes, shapes, lengths, sizes) before any
// kernel runs; non-contiguous inputs are copied to C order; outputs are fresh
// arrays. Kernels run with the GIL released: they only touch the buffers
// passed to them and keep no global mutable state, so concurrent calls from
// several Python threads are safe.
#include "seq/seq.h"
#include "seq/lstmp.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/pool.h"
#include "runtime/checked.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

namespace py = pybind11;

namespace fastrnn::bindings {
namespace {

using i64 = std::int64_t;

std::string shape_str(const std::vector<i64>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

std::vector<i64> shape_of(const py::array& a) {
  std::vector<i64> s;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s.push_back(static_cast<i64>(a.shape(i)));
  return s;
}

// Checks that `o` is an ndarray of dtype T with the given shape (names are for
// the message) and returns it as a C-contiguous array (a copy if needed).
template <class T>
py::array_t<T, py::array::c_style> need(const py::handle& o, const char* name,
                                        const std::vector<i64>& shape, const char* dims) {
  if (!py::isinstance<py::array>(o)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(o).attr("__name__"))));
  }
  py::array arr = py::reinterpret_borrow<py::array>(o);
  if (!arr.dtype().equal(py::dtype::of<T>())) {
    throw py::type_error(std::string(name) + " must have dtype " +
                         std::string(py::str(py::dtype::of<T>())) + " (the dtype of x), got " +
                         std::string(py::str(arr.dtype())));
  }
  if (shape_of(arr) != shape) {
    throw py::value_error(std::string(name) + " must have shape " + dims + " = " +
                          shape_str(shape) + ", got " + shape_str(shape_of(arr)));
  }
  return py::array_t<T, py::array::c_style>::ensure(arr);
}

Cell parse_cell(const std::string& s) {
  if (s == "rnn") return Cell::rnn;
  if (s == "lstm") return Cell::lstm;
  if (s == "gru") return Cell::gru;
  throw py::value_error("cell must be 'rnn', 'lstm' or 'gru', got '" + s + "'");
}

Act parse_act(const std::string& s) {
  if (s == "tanh") return Act::tanh;
  if (s == "relu") return Act::relu;
  if (s == "sigmoid") return Act::sigmoid;
  throw py::value_error("nonlinearity must be 'tanh', 'relu' or 'sigmoid', got '" + s + "'");
}

// Byte size of an array with this many elements, checked.
template <class T>
void check_elems(i64 n, const char* what) {
  checked_mul(n, static_cast<i64>(sizeof(T)), what);
  if (n > std::numeric_limits<i64>::max() / 16) {
    throw std::length_error(std::string(what) + ": size overflows 64-bit arithmetic");
  }
}

// The float or double half of a kernel table (SeqTable, LstmpTable).
template <class T, class Table>
const auto& of_type(const Table& t) {
  if constexpr (std::is_same_v<T, float>) {
    return t.f32;
  } else {
    return t.f64;
  }
}

template <class T>
const SeqFns<T>& fns() {
  return of_type<T>(FASTRNN_DISPATCH(seq_table));
}

// A zero-filled array of n elements whose data is 64-byte aligned like the kernels' own
// workspace (a view into a slightly larger array): packed weights.
template <class T>
py::array_t<T, py::array::c_style> aligned_zeros(i64 n) {
  check_elems<T>(n, "packed weights");
  constexpr i64 pad = 64 / static_cast<i64>(sizeof(T));
  py::array_t<T, py::array::c_style> raw({checked_add(n, pad, "packed weights")});
  const auto addr = reinterpret_cast<std::uintptr_t>(raw.data());
  const i64 off = static_cast<i64>((64 - addr % 64) % 64 / sizeof(T));
  auto out = py::array_t<T, py::array::c_style>::ensure(raw[py::slice(off, off + n, 1)]);
  std::fill(out.mutable_data(), out.mutable_data() + n, T(0));
  return out;
}

// Packed weights handed to a forward: n elements of dtype T, 64-byte aligned (`maker`:
// the function that makes them, for the message).
template <class T>
py::array_t<T, py::array::c_style> need_packed(const py::object& o, i64 n, const char* maker) {
  auto packed = need<T>(o, "packed weights", {n}, "(packed_size,)");
  if (reinterpret_cast<std::uintptr_t>(packed.data()) % 64 != 0) {
    throw py::value_error(std::string("packed weights must be 64-byte aligned (") + maker +
                          "' array)");
  }
  return packed;
}

py::array_t<std::int64_t> check_lengths(const py::object& lengths, i64 N, i64 T) {
  py::array arr = py::reinterpret_borrow<py::array>(lengths);
  if (!py::isinstance<py::array>(lengths)) {
    throw py::type_error("lengths must be None or an integer numpy.ndarray of shape (N,)");
  }
  if (arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u') {
    throw py::type_error("lengths must have an integer dtype, got " +
                         std::string(py::str(arr.dtype())));
  }
  if (shape_of(arr) != std::vector<i64>{N}) {
    throw py::value_error("lengths must have shape (N,) = (" + std::to_string(N) + ",), got " +
                          shape_str(shape_of(arr)));
  }
  auto out = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (!out) throw py::type_error("lengths could not be converted to int64");
  const std::int64_t* p = out.data();
  for (i64 n = 0; n < N; ++n) {
    if (p[n] < 1 || p[n] > T) {
      throw py::value_error("lengths must satisfy 1 <= lengths[n] <= T = " + std::to_string(T) +
                            "; lengths[" + std::to_string(n) + "] = " + std::to_string(p[n]));
    }
  }
  return out;
}

template <class T>
void poison(py::array_t<T, py::array::c_style>& a) {
  std::fill(a.mutable_data(), a.mutable_data() + a.size(), std::numeric_limits<T>::quiet_NaN());
}

// The array the kernel fills with the tape's own copy of `a` (pooled, a's shape, NaN with
// poison_out), or without `copy` the caller's `a` itself, which the tape then keeps.
template <class T>
py::array_t<T, py::array::c_style> tape_copy(const py::array_t<T, py::array::c_style>& a,
                                             bool copy, bool poison_out) {
  if (!copy) return a;
  auto k = pooled_array<T>(std::vector<i64>(a.shape(), a.shape() + a.ndim()));
  if (poison_out) poison(k);
  return k;
}

// What a training forward's tape keeps of an LSTM's peepholes (3*H values, which no packed
// snapshot holds): None without them, else a copy (copy) or the array given.
inline py::object kept_peepholes(const py::array& peep, bool given, bool copy) {
  if (!given) return py::none();
  return copy ? peep.attr("copy")() : py::object(peep);
}

// Whether a forward's tape holds peepholes; if so, them (3*H, checked) in `out`.
template <class T>
bool tape_peepholes(const py::dict& tape, i64 H, py::array_t<T, py::array::c_style>& out) {
  if (!tape.contains("weight_peephole") || tape["weight_peephole"].is_none()) return false;
  out = need<T>(tape["weight_peephole"], "tape weight_peephole", {3 * H}, "(3*H,)");
  return true;
}

// The sizes and options of a call, with T, N, I from x (T, N, I); H is set by the caller.
SeqDims dims_of(Cell cell, Act act, bool reset_after, bool reverse, const py::array& x) {
  SeqDims d;
  d.cell = cell;
  d.act = act;
  d.reset_after = reset_after;
  d.reverse = reverse;
  d.T = static_cast<i64>(x.shape(0));
  d.N = static_cast<i64>(x.shape(1));
  d.I = static_cast<i64>(x.shape(2));
  return d;
}

template <class T>
py::tuple forward_t(Cell cell, const py::object& x_o, const py::object& h0_o,
                    const py::object& c0_o, const py::object& wih_o, const py::object& whh_o,
                    const py::object& bih_o, const py::object& bhh_o, const py::object& len_o,
                    Act act, bool reset_after, bool reverse, bool training, bool copy_inputs,
                    bool share_weights, const py::object& packed_o, int packed_isa,
                    bool poison_out, const py::object& peep_o) {
  py::array x0 = py::reinterpret_borrow<py::array>(x_o);
  SeqDims d = dims_of(cell, act, reset_after, reverse, x0);
  const i64 G = d.gates();
  const i64 N = d.N, Tn = d.T, I = d.I;
  if (py::isinstance<py::none>(h0_o)) throw py::type_error("h0 must be an array (N, H)");
  py::array h00 = py::reinterpret_borrow<py::array>(h0_o);
  if (!py::isinstance<py::array>(h0_o) || h00.ndim() != 2) {
    need<T>(h0_o, "h0", {N, -1}, "(N, H)");  // raises with the right message
  }
  d.H = static_cast<i64>(h00.shape(1));
  const i64 H = d.H;
  if (H < 1) throw py::value_error("hidden size H must be >= 1 (h0 has shape (N, 0))");
  if (N < 1 || Tn < 1) throw py::value_error("x must have T >= 1 and N >= 1 here");
  const i64 GH = checked_mul(G, H, "G*H");
  std::string ghs = "(G*H, I) with G=" + std::to_string(G);
  // Sizes first (overflow-checked), before any copy or allocation; the message names the
  // arguments' sizes, not the buffer that would have overflowed.
  const SeqFns<T>& k = fns<T>();
  i64 work = 0;
  try {
    const i64 TN = checked_mul(Tn, N, "T*N");
    check_elems<T>(checked_mul(TN, I, "x"), "x");
    check_elems<T>(checked_mul(TN, GH, "T*N*G*H gate values"), "T*N*G*H gate values");
    check_elems<T>(checked_mul(GH, checked_add(I, H, "weights"), "weights"), "weights");
    work = k.forward_work(d);
    check_elems<T>(work, "workspace");
  } catch (const std::length_error& e) {
    throw std::length_error("x of shape (T, N, I) = " + shape_str({Tn, N, I}) +
                            " with hidden size H = " + std::to_string(H) + " (G = " +
                            std::to_string(G) + " gates) is too large: " + e.what());
  }

  auto x = need<T>(x_o, "x", {Tn, N, I}, "(T, N, I)");
  auto h0 = need<T>(h0_o, "h0", {N, H}, "(N, H)");
  py::array_t<T, py::array::c_style> c0;
  if (cell == Cell::lstm) c0 = need<T>(c0_o, "c0", {N, H}, "(N, H)");
  auto wih = need<T>(wih_o, "weight_ih", {GH, I}, "(G*H, I)");
  auto whh = need<T>(whh_o, "weight_hh", {GH, H}, "(G*H, H)");
  py::array_t<T, py::array::c_style> bih, bhh;
  if (!bih_o.is_none()) bih = need<T>(bih_o, "bias_ih", {GH}, "(G*H,)");
  if (!bhh_o.is_none()) bhh = need<T>(bhh_o, "bias_hh", {GH}, "(G*H,)");
  const bool has_peep = !peep_o.is_none();
  if (has_peep && cell != Cell::lstm) {
    throw py::value_error("weight_peephole: peepholes exist only for lstm");
  }
  py::array_t<T, py::array::c_style> peep;
  if (has_peep) peep = need<T>(peep_o, "weight_peephole", {3 * H}, "(3*H,)");
  py::array_t<std::int64_t> lens;
  if (!len_o.is_none()) lens = check_lengths(len_o, N, Tn);
  // Packed weights for the SIMD target in use (else ignored: the kernel packs as usual).
  py::array_t<T, py::array::c_style> packed;
  const bool use_packed = !packed_o.is_none() && packed_isa == static_cast<int>(active_isa());
  if (use_packed) packed = need_packed<T>(packed_o, k.packed_size(d), "seq_pack_weights");

  auto y = pooled_array<T>({Tn, N, H});
  py::array_t<T, py::array::c_style> hn({N, H}), cn;
  if (cell == Cell::lstm) cn = py::array_t<T, py::array::c_style>({N, H});
  py::array_t<T, py::array::c_style> hprev, gates, cprev, clast, hlast, aux;
  if (training) {  // rows Hp apart (seq.h: whole cache lines for the streaming stores)
    const i64 Hp = tape_stride(H, sizeof(T));
    hprev = pooled_array<T>({Tn, N, Hp});
    if (cell == Cell::rnn) {
      hlast = pooled_array<T>({N, Hp});
    } else {
      gates = pooled_array<T>({Tn, N, G * Hp});
    }
    if (cell == Cell::lstm) {
      cprev = pooled_array<T>({Tn, N, Hp});
      clast = pooled_array<T>({N, Hp});
    }
    if (cell == Cell::gru) aux = pooled_array<T>({Tn, N, Hp});
  }
  // The tape's own x and weights (written by the kernel), or the caller's arrays.
  const bool copies = training && copy_inputs;
  const bool wcopies = copies && !share_weights;
  auto xk = tape_copy(x, copies, poison_out);
  auto wihk = tape_copy(wih, wcopies, poison_out), whhk = tape_copy(whh, wcopies, poison_out);
  PoolBuffer<T> ws(work);
  const bool lstm = cell == Cell::lstm, gru = cell == Cell::gru;
  const bool has_bih = !bih_o.is_none(), has_bhh = !bhh_o.is_none(), has_len = !len_o.is_none();
  if (poison_out) {
    poison(y);
    poison(hn);
    if (lstm) poison(cn);
    if (training) {
      poison(hprev);
      if (cell == Cell::rnn) {
        poison(hlast);
      } else {
        poison(gates);
      }
      if (lstm) poison(cprev), poison(clast);
      if (gru) poison(aux);
    }
    std::fill(ws.data(), ws.data() + work, std::numeric_limits<T>::quiet_NaN());
  }

  SeqForward<T> a;
  a.d = d;
  a.x = x.data();
  a.h0 = h0.data();
  a.c0 = lstm ? c0.data() : nullptr;
  a.w_ih = wih.data();
  a.w_hh = whh.data();
  a.b_ih = has_bih ? bih.data() : nullptr;
  a.b_hh = has_bhh ? bhh.data() : nullptr;
  a.w_peep = has_peep ? peep.data() : nullptr;
  a.lengths = has_len ? lens.data() : nullptr;
  a.y = y.mutable_data();
  a.h_n = hn.mutable_data();
  a.c_n = lstm ? cn.mutable_data() : nullptr;
  a.training = training;
  if (training) {
    a.tape.hprev = hprev.mutable_data();
    a.tape.gates = cell == Cell::rnn ? nullptr : gates.mutable_data();
    a.tape.hlast = cell == Cell::rnn ? hlast.mutable_data() : nullptr;
    a.tape.cprev = lstm ? cprev.mutable_data() : nullptr;
    a.tape.clast = lstm ? clast.mutable_data() : nullptr;
    a.tape.aux = gru ? aux.mutable_data() : nullptr;
  }
  if (copies) a.x_copy = xk.mutable_data();
  if (wcopies) {
    a.w_ih_copy = wihk.mutable_data();
    a.w_hh_copy = whhk.mutable_data();
  }
  a.packed = use_packed ? packed.data() : nullptr;
  a.work = ws.data();
  a.work_size = work;
  a.num_threads = get_num_threads();
  {
    py::gil_scoped_release release;  // safe: the kernel touches only the buffers above
    k.forward(a);
  }
  py::dict tape;
  if (training) {
    tape["hprev"] = hprev;
    if (cell == Cell::rnn) {
      tape["hlast"] = hlast;
    } else {
      tape["gates"] = gates;
    }
    if (lstm) tape["cprev"] = cprev;
    if (lstm) tape["clast"] = clast;
    if (gru) tape["aux"] = aux;
    tape["x"] = xk;
    tape["weight_ih"] = wihk;
    tape["weight_hh"] = whhk;
    tape["has_bias_ih"] = has_bih;
    tape["has_bias_hh"] = has_bhh;
    tape["lengths"] = len_o.is_none() ? py::object(py::none()) : py::object(lens);
    tape["weight_peephole"] = kept_peepholes(peep, has_peep, copies);
  }
  return py::make_tuple(y, hn, lstm ? py::object(cn) : py::object(py::none()),
                        training ? py::object(tape) : py::object(py::none()));
}

template <class T>
py::dict backward_t(Cell cell, const py::dict& tape, Act act, bool reset_after, bool reverse,
                    const py::object& dy_o, const py::object& dhn_o, const py::object& dcn_o,
                    bool poison_out) {
  py::object x_o = tape["x"];
  py::object w_o = tape["weight_hh"];
  py::array x0 = py::reinterpret_borrow<py::array>(x_o);
  py::array w0 = py::reinterpret_borrow<py::array>(w_o);
  if (!py::isinstance<py::array>(x_o) || x0.ndim() != 3 || !py::isinstance<py::array>(w_o) ||
      w0.ndim() != 2) {
    throw py::value_error("tape is damaged: x must be a 3-d and weight_hh a 2-d array");
  }
  SeqDims d = dims_of(cell, act, reset_after, reverse, x0);
  const i64 G = d.gates();
  d.H = static_cast<i64>(w0.shape(1));
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H;
  if (Tn < 1 || N < 1 || H < 1) throw py::value_error("tape is damaged: empty sizes");
  const i64 GH = checked_mul(G, H, "G*H");
  const i64 Hp = tape_stride(H, sizeof(T));  // the tape's row stride (seq.h)
  const SeqFns<T>& k = fns<T>();
  const i64 work = k.backward_work(d);
  check_elems<T>(work, "workspace");

  auto x = need<T>(x_o, "tape x", {Tn, N, I}, "(T, N, I)");
  auto wih = need<T>(tape["weight_ih"], "tape weight_ih", {GH, I}, "(G*H, I)");
  auto whh = need<T>(w_o, "tape weight_hh", {GH, H}, "(G*H, H)");
  const std::string hp_s = "(T, N, Hp) with Hp = " + std::to_string(Hp);
  const std::string ghp_s = "(T, N, G*Hp) with Hp = " + std::to_string(Hp);
  const char* hps = hp_s.c_str();
  const std::string last_s = "(N, Hp) with Hp = " + std::to_string(Hp);
  py::array_t<T, py::array::c_style> gates, hlast;
  if (cell == Cell::rnn) {
    hlast = need<T>(tape["hlast"], "tape hlast", {N, Hp}, last_s.c_str());
  } else {
    gates = need<T>(tape["gates"], "tape gates", {Tn, N, G * Hp}, ghp_s.c_str());
  }
  auto hprev = need<T>(tape["hprev"], "tape hprev", {Tn, N, Hp}, hps);
  py::array_t<T, py::array::c_style> cprev, clast, aux;
  if (cell == Cell::lstm) {
    cprev = need<T>(tape["cprev"], "tape cprev", {Tn, N, Hp}, hps);
    clast = need<T>(tape["clast"], "tape clast", {N, Hp}, last_s.c_str());
  }
  if (cell == Cell::gru) aux = need<T>(tape["aux"], "tape aux", {Tn, N, Hp}, hps);
  py::array_t<std::int64_t> lens;
  py::object len_o = tape["lengths"];
  if (!len_o.is_none()) lens = check_lengths(len_o, N, Tn);
  py::array_t<T, py::array::c_style> dy, dhn, dcn;
  if (!dy_o.is_none()) dy = need<T>(dy_o, "dy", {Tn, N, H}, "(T, N, H)");
  if (!dhn_o.is_none()) dhn = need<T>(dhn_o, "dh_n", {N, H}, "(N, H)");
  if (cell == Cell::lstm && !dcn_o.is_none()) dcn = need<T>(dcn_o, "dc_n", {N, H}, "(N, H)");
  const bool has_bih = tape["has_bias_ih"].cast<bool>();
  const bool has_bhh = tape["has_bias_hh"].cast<bool>();
  py::array_t<T, py::array::c_style> peep, dpeep;
  const bool has_peep = tape_peepholes(tape, H, peep);
  if (has_peep && cell != Cell::lstm) throw py::value_error("tape is damaged: peepholes");
  if (has_peep) dpeep = py::array_t<T, py::array::c_style>({3 * H});

  auto dx = pooled_array<T>({Tn, N, I});
  // The weight gradients from the cache too: 64-byte aligned (the kernel may stream them).
  auto dwih = pooled_array<T>({GH, I});
  auto dwhh = pooled_array<T>({GH, H});
  py::array_t<T, py::array::c_style> dh0({N, H}), dc0, dbih, dbhh;
  if (cell == Cell::lstm) dc0 = py::array_t<T, py::array::c_style>({N, H});
  if (has_bih) dbih = py::array_t<T, py::array::c_style>({GH});
  if (has_bhh) dbhh = py::array_t<T, py::array::c_style>({GH});
  PoolBuffer<T> ws(work);
  const bool lstm = cell == Cell::lstm, gru = cell == Cell::gru;
  const bool has_len = !len_o.is_none(), has_dy = !dy_o.is_none(), has_dhn = !dhn_o.is_none();
  const bool has_dcn = lstm && !dcn_o.is_none();
  if (poison_out) {
    for (auto* a : {&dx, &dh0, &dwih, &dwhh}) poison(*a);
    if (lstm) poison(dc0);
    if (has_bih) poison(dbih);
    if (has_bhh) poison(dbhh);
    if (has_peep) poison(dpeep);
    std::fill(ws.data(), ws.data() + work, std::numeric_limits<T>::quiet_NaN());
  }
  SeqBackward<T> a;
  a.d = d;
  a.x = x.data();
  a.w_ih = wih.data();
  a.w_hh = whh.data();
  a.w_peep = has_peep ? peep.data() : nullptr;
  a.lengths = has_len ? lens.data() : nullptr;
  a.tape.hprev = hprev.data();
  a.tape.gates = cell == Cell::rnn ? nullptr : gates.data();
  a.tape.hlast = cell == Cell::rnn ? hlast.data() : nullptr;
  a.tape.cprev = lstm ? cprev.data() : nullptr;
  a.tape.clast = lstm ? clast.data() : nullptr;
  a.tape.aux = gru ? aux.data() : nullptr;
  a.dy = has_dy ? dy.data() : nullptr;
  a.dh_n = has_dhn ? dhn.data() : nullptr;
  a.dc_n = has_dcn ? dcn.data() : nullptr;
  a.dx = dx.mutable_data();
  a.dh0 = dh0.mutable_data();
  a.dc0 = lstm ? dc0.mutable_data() : nullptr;
  a.dw_ih = dwih.mutable_data();
  a.dw_hh = dwhh.mutable_data();
  a.db_ih = has_bih ? dbih.mutable_data() : nullptr;
  a.db_hh = has_bhh ? dbhh.mutable_data() : nullptr;
  a.dw_peep = has_peep ? dpeep.mutable_data() : nullptr;
  a.work = ws.data();
  a.work_size = work;
  a.num_threads = get_num_threads();
  {
    py::gil_scoped_release release;  // safe: the kernel touches only the buffers above
    k.backward(a);
  }
  py::dict out;
  out["x"] = dx;
  out["h0"] = dh0;
  if (cell == Cell::lstm) out["c0"] = dc0;
  out["weight_ih"] = dwih;
  out["weight_hh"] = dwhh;
  out["bias_ih"] = has_bih ? py::object(dbih) : py::object(py::none());
  out["bias_hh"] = has_bhh ? py::object(dbhh) : py::object(py::none());
  if (has_peep) out["weight_peephole"] = dpeep;
  return out;
}

template <class T>
py::array_t<T, py::array::c_style> pack_weights_t(Cell cell, const py::object& wih_o,
                                                  const py::object& whh_o, bool reset_after,
                                                  i64 GH, i64 I) {
  SeqDims d;
  d.cell = cell;
  d.reset_after = reset_after;
  d.I = I;
  d.H = GH / d.gates();
  d.T = d.N = 1;
  auto wih = need<T>(wih_o, "weight_ih", {GH, I}, "(G*H, I)");
  auto whh = need<T>(whh_o, "weight_hh", {GH, d.H}, "(G*H, H)");
  const SeqFns<T>& k = fns<T>();
  // Zeros in the columns past a short last block's units, which no kernel reads for a result.
  auto out = aligned_zeros<T>(k.packed_size(d));
  {
    py::gil_scoped_release release;
    k.pack_weights(d, wih.data(), whh.data(), out.mutable_data(), get_num_threads());
  }
  return out;
}

py::tuple pack_weights_any(Cell cell, const py::object& wih_o, const py::object& whh_o,
                           bool reset_after) {
  if (!py::isinstance<py::array>(wih_o) || py::reinterpret_borrow<py::array>(wih_o).ndim() != 2) {
    throw py::type_error("weight_ih must be a 2-d numpy.ndarray (G*H, I)");
  }
  py::array w = py::reinterpret_borrow<py::array>(wih_o);
  SeqDims d;
  d.cell = cell;
  const i64 G = d.gates(), GH = static_cast<i64>(w.shape(0)), I = static_cast<i64>(w.shape(1));
  if (GH < G || GH % G != 0) {
    throw py::value_error("weight_ih must have shape (G*H, I) with G=" + std::to_string(G) +
                          " and H >= 1, got " + shape_str(shape_of(w)));
  }
  const int isa = static_cast<int>(active_isa());
  if (w.dtype().equal(py::dtype::of<double>())) {
    return py::make_tuple(pack_weights_t<double>(cell, wih_o, whh_o, reset_after, GH, I), isa);
  }
  if (w.dtype().equal(py::dtype::of<float>())) {
    return py::make_tuple(pack_weights_t<float>(cell, wih_o, whh_o, reset_after, GH, I), isa);
  }
  throw py::type_error("weight_ih must have dtype float32 or float64, got " +
                       std::string(py::str(w.dtype())));
}

bool is_f64(const py::object& x) {
  if (!py::isinstance<py::array>(x)) {
    throw py::type_error("x must be a numpy.ndarray of shape (T, N, I), got " +
                         std::string(py::str(py::type::of(x).attr("__name__"))));
  }
  py::array a = py::reinterpret_borrow<py::array>(x);
  if (a.dtype().equal(py::dtype::of<double>())) return true;
  if (a.dtype().equal(py::dtype::of<float>())) return false;
  throw py::type_error("x must have dtype float32 or float64, got " +
                       std::string(py::str(a.dtype())));
}

// ---- LSTM with a projection (seq/lstmp.h) ----------------------------------------

template <class T>
const LstmpFns<T>& lstmp_fns() {
  return of_type<T>(FASTRNN_DISPATCH(lstmp_table));
}

// The sizes of a call from x (T, N, I) and weight_hr (P, H), both already 3-d and 2-d.
LstmpDims lstmp_dims(const py::array& x, const py::array& w_hr, bool reverse) {
  LstmpDims d;
  d.T = static_cast<i64>(x.shape(0));
  d.N = static_cast<i64>(x.shape(1));
  d.I = static_cast<i64>(x.shape(2));
  d.P = static_cast<i64>(w_hr.shape(0));
  d.H = static_cast<i64>(w_hr.shape(1));
  d.reverse = reverse;
  return d;
}

template <class T>
py::tuple lstmp_forward_t(const py::object& x_o, const py::object& h0_o, const py::object& c0_o,
                          const py::object& wih_o, const py::object& whh_o,
                          const py::object& bih_o, const py::object& bhh_o,
                          const py::object& whr_o, const py::object& len_o, bool reverse,
                          bool training, bool poison_out, const py::object& packed_o,
                          bool copy_inputs, bool share_weights, const py::object& peep_o) {
  py::array x0 = py::reinterpret_borrow<py::array>(x_o);
  py::array whr0 = py::reinterpret_borrow<py::array>(whr_o);
  if (!py::isinstance<py::array>(whr_o) || whr0.ndim() != 2) {
    throw py::type_error("weight_hr must be a 2-d numpy.ndarray (P, H)");
  }
  const LstmpDims d = lstmp_dims(x0, whr0, reverse);
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H, P = d.P;
  if (Tn < 1 || N < 1 || H < 1 || P < 1) {
    throw py::value_error("x must have T >= 1 and N >= 1, weight_hr (P, H) P, H >= 1 here");
  }
  const LstmpFns<T>& k = lstmp_fns<T>();
  i64 work = 0, Hu = 0, Pp = 0, G4 = 0;
  try {
    Hu = lstmp_round<T>(H);
    Pp = lstmp_round<T>(P);
    G4 = checked_mul(4, Hu, "4*H");
    const i64 TN = checked_mul(Tn, N, "T*N");
    check_elems<T>(checked_mul(TN, checked_add(I, P, "I+P"), "x"), "x");
    check_elems<T>(checked_mul(TN, G4, "T*N*4*H gate values"), "T*N*4*H gate values");
    work = k.work(d, false);
    check_elems<T>(work, "workspace");
  } catch (const std::length_error& e) {
    throw std::length_error("x of shape (T, N, I) = " + shape_str({Tn, N, I}) +
                            " with H = " + std::to_string(H) + ", P = " + std::to_string(P) +
                            " is too large: " + e.what());
  }
  const i64 GH = 4 * H;
  auto x = need<T>(x_o, "x", {Tn, N, I}, "(T, N, I)");
  auto h0 = need<T>(h0_o, "h0", {N, P}, "(N, P)");
  auto c0 = need<T>(c0_o, "c0", {N, H}, "(N, H)");
  auto wih = need<T>(wih_o, "weight_ih", {GH, I}, "(4*H, I)");
  auto whh = need<T>(whh_o, "weight_hh", {GH, P}, "(4*H, P)");
  auto whr = need<T>(whr_o, "weight_hr", {P, H}, "(P, H)");
  py::array_t<T, py::array::c_style> bih, bhh;
  if (!bih_o.is_none()) bih = need<T>(bih_o, "bias_ih", {GH}, "(4*H,)");
  if (!bhh_o.is_none()) bhh = need<T>(bhh_o, "bias_hh", {GH}, "(4*H,)");
  py::array_t<T, py::array::c_style> peep;
  if (!peep_o.is_none()) peep = need<T>(peep_o, "weight_peephole", {3 * H}, "(3*H,)");
  py::array_t<std::int64_t> lens;
  if (!len_o.is_none()) lens = check_lengths(len_o, N, Tn);
  py::array_t<T, py::array::c_style> packed;
  if (!packed_o.is_none()) {
    packed = need_packed<T>(packed_o, k.packed_size(d), "lstmp_pack_weights");
  }

  auto y = pooled_array<T>({Tn, N, P});
  py::array_t<T, py::array::c_style> hn({N, P}), cn({N, H});
  py::array_t<T, py::array::c_style> gates, cs, cz, ms, rprev;
  if (training) {
    gates = pooled_array<T>({Tn, N, G4});
    cs = pooled_array<T>({Tn, N, Hu});
    cz = py::array_t<T, py::array::c_style>({N, Hu});
    ms = pooled_array<T>({Tn, N, Hu});
    rprev = pooled_array<T>({Tn, N, Pp});
  }
  // The tape's own x and weights (written by the kernel), or the caller's arrays.
  const bool copies = training && copy_inputs;
  const bool wcopies = copies && !share_weights;
  auto xk = tape_copy(x, copies, poison_out);
  auto wihk = tape_copy(wih, wcopies, poison_out), whhk = tape_copy(whh, wcopies, poison_out);
  auto whrk = tape_copy(whr, wcopies, poison_out);
  PoolBuffer<T> ws(work);
  if (poison_out) {
    poison(y);
    poison(hn);
    poison(cn);
    if (training) {
      for (auto* a : {&gates, &cs, &cz, &ms, &rprev}) poison(*a);
    }
    std::fill(ws.data(), ws.data() + work, std::numeric_limits<T>::quiet_NaN());
  }
  LstmpForward<T> a;
  a.d = d;
  a.x = x.data();
  a.h0 = h0.data();
  a.c0 = c0.data();
  a.w_ih = wih.data();
  a.w_hh = whh.data();
  a.b_ih = bih_o.is_none() ? nullptr : bih.data();
  a.b_hh = bhh_o.is_none() ? nullptr : bhh.data();
  a.w_hr = whr.data();
  a.w_peep = peep_o.is_none() ? nullptr : peep.data();
  a.lengths = len_o.is_none() ? nullptr : lens.data();
  a.packed = packed_o.is_none() ? nullptr : packed.data();
  a.y = y.mutable_data();
  a.h_n = hn.mutable_data();
  a.c_n = cn.mutable_data();
  a.training = training;
  if (training) {
    a.tape.gates = gates.mutable_data();
    a.tape.c = cs.mutable_data();
    a.tape.c0 = cz.mutable_data();
    a.tape.m = ms.mutable_data();
    a.tape.rprev = rprev.mutable_data();
  }
  if (copies) a.x_copy = xk.mutable_data();
  if (wcopies) {
    a.w_ih_copy = wihk.mutable_data();
    a.w_hh_copy = whhk.mutable_data();
    a.w_hr_copy = whrk.mutable_data();
  }
  a.work = ws.data();
  a.num_threads = get_num_threads();
  {
    py::gil_scoped_release release;  // safe: the kernel touches only the buffers above
    k.forward(a);
  }
  py::dict tape;
  if (training) {
    tape["gates"] = gates;
    tape["c"] = cs;
    tape["c0"] = cz;
    tape["m"] = ms;
    tape["rprev"] = rprev;
    tape["x"] = xk;
    tape["weight_ih"] = wihk;
    tape["weight_hh"] = whhk;
    tape["weight_hr"] = whrk;
    tape["weight_peephole"] = kept_peepholes(peep, !peep_o.is_none(), copies);
    tape["has_bias_ih"] = !bih_o.is_none();
    tape["has_bias_hh"] = !bhh_o.is_none();
    tape["lengths"] = len_o.is_none() ? py::object(py::none()) : py::object(lens);
  }
  return py::make_tuple(y, hn, cn, training ? py::object(tape) : py::object(py::none()));
}

template <class T>
py::array_t<T, py::array::c_style> lstmp_pack_t(const py::object& wih_o, const py::object& whh_o,
                                                const py::object& whr_o) {
  py::array whr0 = py::reinterpret_borrow<py::array>(whr_o);
  py::array wih0 = py::reinterpret_borrow<py::array>(wih_o);
  if (!py::isinstance<py::array>(whr_o) || whr0.ndim() != 2 ||
      !py::isinstance<py::array>(wih_o) || wih0.ndim() != 2) {
    throw py::type_error("weight_ih (4*H, I) and weight_hr (P, H) must be 2-d numpy.ndarrays");
  }
  LstmpDims d;
  d.T = d.N = 1;
  d.P = static_cast<i64>(whr0.shape(0));
  d.H = static_cast<i64>(whr0.shape(1));
  d.I = static_cast<i64>(wih0.shape(1));
  if (d.H < 1 || d.P < 1) throw py::value_error("weight_hr must have shape (P, H), P, H >= 1");
  auto wih = need<T>(wih_o, "weight_ih", {4 * d.H, d.I}, "(4*H, I)");
  auto whh = need<T>(whh_o, "weight_hh", {4 * d.H, d.P}, "(4*H, P)");
  auto whr = need<T>(whr_o, "weight_hr", {d.P, d.H}, "(P, H)");
  const LstmpFns<T>& k = lstmp_fns<T>();
  auto out = aligned_zeros<T>(k.packed_size(d));  // zeros in the regions' rounding
  {
    py::gil_scoped_release release;
    k.pack(d, wih.data(), whh.data(), whr.data(), out.mutable_data(), get_num_threads());
  }
  return out;
}

template <class T>
py::dict lstmp_backward_t(const py::dict& tape, const py::object& x_o, const py::object& wih_o,
                          const py::object& whh_o, const py::object& whr_o, bool reverse,
                          const py::object& dy_o, const py::object& dhn_o,
                          const py::object& dcn_o, bool poison_out) {
  py::array x0 = py::reinterpret_borrow<py::array>(x_o);
  py::array whr0 = py::reinterpret_borrow<py::array>(whr_o);
  if (!py::isinstance<py::array>(x_o) || x0.ndim() != 3 || !py::isinstance<py::array>(whr_o) ||
      whr0.ndim() != 2) {
    throw py::value_error("tape is damaged: x must be a 3-d and weight_hr a 2-d array");
  }
  const LstmpDims d = lstmp_dims(x0, whr0, reverse);
  const i64 Tn = d.T, N = d.N, I = d.I, H = d.H, P = d.P, GH = 4 * H;
  if (Tn < 1 || N < 1 || H < 1 || P < 1) throw py::value_error("tape is damaged: empty sizes");
  const i64 Hu = lstmp_round<T>(H), Pp = lstmp_round<T>(P), G4 = 4 * Hu;
  const LstmpFns<T>& k = lstmp_fns<T>();
  const i64 work = k.work(d, true);
  check_elems<T>(work, "workspace");
  auto x = need<T>(x_o, "tape x", {Tn, N, I}, "(T, N, I)");
  auto wih = need<T>(wih_o, "tape weight_ih", {GH, I}, "(4*H, I)");
  auto whh = need<T>(whh_o, "tape weight_hh", {GH, P}, "(4*H, P)");
  auto whr = need<T>(whr_o, "tape weight_hr", {P, H}, "(P, H)");
  const std::string g_s = "(T, N, 4*Hu) with Hu = " + std::to_string(Hu);
  const std::string h_s = "(T, N, Hu) with Hu = " + std::to_string(Hu);
  const std::string h0_s = "(N, Hu) with Hu = " + std::to_string(Hu);
  const std::string p_s = "(T, N, Pp) with Pp = " + std::to_string(Pp);
  auto gates = need<T>(tape["gates"], "tape gates", {Tn, N, G4}, g_s.c_str());
  auto cs = need<T>(tape["c"], "tape c", {Tn, N, Hu}, h_s.c_str());
  auto cz = need<T>(tape["c0"], "tape c0", {N, Hu}, h0_s.c_str());
  auto ms = need<T>(tape["m"], "tape m", {Tn, N, Hu}, h_s.c_str());
  auto rprev = need<T>(tape["rprev"], "tape rprev", {Tn, N, Pp}, p_s.c_str());
  py::array_t<std::int64_t> lens;
  py::object len_o = tape["lengths"];
  if (!len_o.is_none()) lens = check_lengths(len_o, N, Tn);
  py::array_t<T, py::array::c_style> dy, dhn, dcn;
  if (!dy_o.is_none()) dy = need<T>(dy_o, "dy", {Tn, N, P}, "(T, N, P)");
  if (!dhn_o.is_none()) dhn = need<T>(dhn_o, "dh_n", {N, P}, "(N, P)");
  if (!dcn_o.is_none()) dcn = need<T>(dcn_o, "dc_n", {N, H}, "(N, H)");
  const bool has_bih = tape["has_bias_ih"].cast<bool>();
  const bool has_bhh = tape["has_bias_hh"].cast<bool>();
  py::array_t<T, py::array::c_style> peep, dpeep;
  const bool has_peep = tape_peepholes(tape, H, peep);
  if (has_peep) dpeep = py::array_t<T, py::array::c_style>({3 * H});

  auto dx = pooled_array<T>({Tn, N, I});
  py::array_t<T, py::array::c_style> dh0({N, P}), dc0({N, H}), dwih({GH, I}), dwhh({GH, P}),
      dwhr({P, H}), dbih, dbhh;
  if (has_bih) dbih = py::array_t<T, py::array::c_style>({GH});
  if (has_bhh) dbhh = py::array_t<T, py::array::c_style>({GH});
  PoolBuffer<T> ws(work);
  if (poison_out) {
    for (auto* a : {&dx, &dh0, &dc0, &dwih, &dwhh, &dwhr}) poison(*a);
    if (has_bih) poison(dbih);
    if (has_bhh) poison(dbhh);
    if (has_peep) poison(dpeep);
    std::fill(ws.data(), ws.data() + work, std::numeric_limits<T>::quiet_NaN());
  }
  LstmpBackward<T> a;
  a.d = d;
  a.x = x.data();
  a.w_ih = wih.data();
  a.w_hh = whh.data();
  a.w_hr = whr.data();
  a.w_peep = has_peep ? peep.data() : nullptr;
  a.lengths = len_o.is_none() ? nullptr : lens.data();
  a.tape.gates = gates.data();
  a.tape.c = cs.data();
  a.tape.c0 = cz.data();
  a.tape.m = ms.data();
  a.tape.rprev = rprev.data();
  a.dy = dy_o.is_none() ? nullptr : dy.data();
  a.dh_n = dhn_o.is_none() ? nullptr : dhn.data();
  a.dc_n = dcn_o.is_none() ? nullptr : dcn.data();
  a.dx = dx.mutable_data();
  a.dh0 = dh0.mutable_data();
  a.dc0 = dc0.mutable_data();
  a.dw_ih = dwih.mutable_data();
  a.dw_hh = dwhh.mutable_data();
  a.db_ih = has_bih ? dbih.mutable_data() : nullptr;
  a.db_hh = has_bhh ? dbhh.mutable_data() : nullptr;
  a.dw_hr = dwhr.mutable_data();
  a.dw_peep = has_peep ? dpeep.mutable_data() : nullptr;
  a.work = ws.data();
  a.num_threads = get_num_threads();
  {
    py::gil_scoped_release release;  // safe: the kernel touches only the buffers above
    k.backward(a);
  }
  py::dict out;
  out["x"] = dx;
  out["h0"] = dh0;
  out["c0"] = dc0;
  out["weight_ih"] = dwih;
  out["weight_hh"] = dwhh;
  out["bias_ih"] = has_bih ? py::object(dbih) : py::object(py::none());
  out["bias_hh"] = has_bhh ? py::object(dbhh) : py::object(py::none());
  out["weight_hr"] = dwhr;
  if (has_peep) out["weight_peephole"] = dpeep;
  return out;
}

}  // namespace

void register_seq(py::module_& m) {
  m.def(
      "seq_forward",
      [](const std::string& cell, const py::object& x, const py::object& h0, const py::object& c0,
         const py::object& wih, const py::object& whh, const py::object& bih, const py::object& bhh,
         const py::object& lengths, const std::string& nonlinearity, bool reset_after, bool reverse,
         bool training, bool copy_inputs, bool poison, bool share_weights,
         const py::object& packed, int packed_isa, const py::object& peephole) {
        const Cell c = parse_cell(cell);
        const Act a = parse_act(nonlinearity);
        py::array xa = py::reinterpret_borrow<py::array>(x);
        if (is_f64(x)) {
          if (xa.ndim() != 3) throw py::value_error("x must have shape (T, N, I)");
          return forward_t<double>(c, x, h0, c0, wih, whh, bih, bhh, lengths, a, reset_after,
                                   reverse, training, copy_inputs, share_weights, packed,
                                   packed_isa, poison, peephole);
        }
        if (xa.ndim() != 3) throw py::value_error("x must have shape (T, N, I)");
        return forward_t<float>(c, x, h0, c0, wih, whh, bih, bhh, lengths, a, reset_after, reverse,
                                training, copy_inputs, share_weights, packed, packed_isa, poison,
                                peephole);
      },
      py::arg("cell"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("weight_ih"),
      py::arg("weight_hh"), py::arg("bias_ih"), py::arg("bias_hh"), py::arg("lengths"),
      py::arg("nonlinearity"), py::arg("reset_after"), py::arg("reverse"), py::arg("training"),
      py::arg("copy_inputs") = false, py::arg("poison") = false, py::arg("share_weights") = false,
      py::arg("packed") = py::none(), py::arg("packed_isa") = -1,
      py::arg("peephole") = py::none(),
      "One layer, one direction over a whole sequence. Returns (y, h_n, c_n|None, tape|None); "
      "with training and copy_inputs the tape keeps its own copies of x and (unless "
      "share_weights) the weights. packed: seq_pack_weights' array for these weights, used "
      "when packed_isa is the SIMD target in use. peephole: an LSTM's (3*H,) p_i, p_f, p_o.");
  m.def(
      "seq_pack_weights",
      [](const std::string& cell, const py::object& wih_o, const py::object& whh_o,
         bool reset_after) {
        return pack_weights_any(parse_cell(cell), wih_o, whh_o, reset_after);
      },
      py::arg("cell"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("reset_after"),
      "The forward's packed layout of weight_ih (G*H, I) and weight_hh (G*H, H) for the SIMD "
      "target in use. Returns (packed array, target id).");
  m.def(
      "seq_backward",
      [](const std::string& cell, const py::dict& tape, const std::string& nonlinearity,
         bool reset_after, bool reverse, const py::object& dy, const py::object& dh_n,
         const py::object& dc_n, bool poison) {
        const Cell c = parse_cell(cell);
        const Act a = parse_act(nonlinearity);
        if (is_f64(tape["x"])) {
          return backward_t<double>(c, tape, a, reset_after, reverse, dy, dh_n, dc_n, poison);
        }
        return backward_t<float>(c, tape, a, reset_after, reverse, dy, dh_n, dc_n, poison);
      },
      py::arg("cell"), py::arg("tape"), py::arg("nonlinearity"), py::arg("reset_after"),
      py::arg("reverse"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"),
      py::arg("poison") = false, "BPTT for seq_forward(training=True). Returns a dict of grads.");
  m.def(
      "lstmp_forward",
      [](const py::object& x, const py::object& h0, const py::object& c0, const py::object& wih,
         const py::object& whh, const py::object& bih, const py::object& bhh,
         const py::object& whr, const py::object& lengths, bool reverse, bool training,
         bool poison, const py::object& packed, bool copy_inputs, bool share_weights,
         const py::object& peephole) {
        const bool f64 = is_f64(x);  // raises unless x is a float32/float64 ndarray
        if (py::reinterpret_borrow<py::array>(x).ndim() != 3) {
          throw py::value_error("x must have shape (T, N, I)");
        }
        if (f64) {
          return lstmp_forward_t<double>(x, h0, c0, wih, whh, bih, bhh, whr, lengths, reverse,
                                         training, poison, packed, copy_inputs, share_weights,
                                         peephole);
        }
        return lstmp_forward_t<float>(x, h0, c0, wih, whh, bih, bhh, whr, lengths, reverse,
                                      training, poison, packed, copy_inputs, share_weights,
                                      peephole);
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("weight_ih"), py::arg("weight_hh"),
      py::arg("bias_ih"), py::arg("bias_hh"), py::arg("weight_hr"), py::arg("lengths"),
      py::arg("reverse"), py::arg("training"), py::arg("poison") = false,
      py::arg("packed") = py::none(), py::arg("copy_inputs") = false,
      py::arg("share_weights") = false, py::arg("peephole") = py::none(),
      "LSTM with a projection (weight_hr (P, H)) over a whole sequence. Returns "
      "(y, h_n, c_n, tape|None); the tape holds the kernel's arrays and x, weight_ih, "
      "weight_hh, weight_hr: with training and copy_inputs the kernel's own copies of x and "
      "(unless share_weights) the weights, else the arrays given. packed: "
      "lstmp_pack_weights' array for these weights (the same on every SIMD target). "
      "peephole: (3*H,) p_i, p_f, p_o, kept in the tape as weight_peephole.");
  m.def(
      "lstmp_pack_weights",
      [](const py::object& wih, const py::object& whh, const py::object& whr) {
        if (is_f64(wih)) return py::object(lstmp_pack_t<double>(wih, whh, whr));
        return py::object(lstmp_pack_t<float>(wih, whh, whr));
      },
      py::arg("weight_ih"), py::arg("weight_hh"), py::arg("weight_hr"),
      "lstmp_forward's layout of weight_ih (4*H, I), weight_hh (4*H, P), weight_hr (P, H).");
  m.def(
      "lstmp_backward",
      [](const py::dict& tape, const py::object& x, const py::object& wih, const py::object& whh,
         const py::object& whr, bool reverse, const py::object& dy, const py::object& dh_n,
         const py::object& dc_n, bool poison) {
        if (is_f64(x)) {
          return lstmp_backward_t<double>(tape, x, wih, whh, whr, reverse, dy, dh_n, dc_n,
                                          poison);
        }
        return lstmp_backward_t<float>(tape, x, wih, whh, whr, reverse, dy, dh_n, dc_n, poison);
      },
      py::arg("tape"), py::arg("x"), py::arg("weight_ih"), py::arg("weight_hh"),
      py::arg("weight_hr"), py::arg("reverse"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"),
      py::arg("poison") = false,
      "BPTT for lstmp_forward(training=True) given the forward's x and weights.");
  m.def(
      "seq_work_elements",
      [](const std::string& cell, i64 T, i64 N, i64 I, i64 H, bool f64, bool backward) {
        SeqDims d;
        d.cell = parse_cell(cell);
        d.T = T;
        d.N = N;
        d.I = I;
        d.H = H;
        if (backward) return f64 ? fns<double>().backward_work(d) : fns<float>().backward_work(d);
        return f64 ? fns<double>().forward_work(d) : fns<float>().forward_work(d);
      },
      py::arg("cell"), py::arg("T"), py::arg("N"), py::arg("I"), py::arg("H"), py::arg("f64"),
      py::arg("backward") = false,
      "Workspace elements of the forward (or backward) kernel (for tests).");
}

}  // namespace fastrnn::bindings
