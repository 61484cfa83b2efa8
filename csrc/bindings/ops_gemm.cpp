// GEMM entry points behind fastrnn.ops.matmul, plus a private packed-B object
// (PackedB) so tests and benchmarks can reuse a packed operand.
//
// The Python layer (fastrnn/_ops_gemm.py) does the user-facing checks and
// makes operands row-contiguous; the checks here are a second line so that a
// kernel never sees a bad pointer/stride whatever the caller passes.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/bindings.h"
#include "gemm/gemm.h"
#include "runtime/checked.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

namespace py = pybind11;

namespace fastrnn::bindings {
namespace {

const GemmTable& table_for(Isa isa) {
#if defined(FASTRNN_X86_TARGETS)
  switch (isa) {
    case Isa::avx512:
      return avx512::gemm_table();
    case Isa::avx2:
      return avx2::gemm_table();
    default:
      return generic::gemm_table();
  }
#else
  (void)isa;
  return generic::gemm_table();
#endif
}

template <class T>
const GemmFns<T>& fns(const GemmTable& t);
template <>
const GemmFns<float>& fns<float>(const GemmTable& t) {
  return t.f32;
}
template <>
const GemmFns<double>& fns<double>(const GemmTable& t) {
  return t.f64;
}

// A 2-D operand the kernels can read: unit inner stride, row stride >= 1.
struct Operand {
  const void* data;
  std::int64_t rows, cols, ld;
};

Operand operand(const py::array& x, const char* name) {
  if (x.ndim() != 2) {
    throw py::value_error(std::string(name) + " must be 2-D, got " + std::to_string(x.ndim()) +
                          "-D");
  }
  const auto item = static_cast<std::int64_t>(x.itemsize());
  const std::int64_t rows = x.shape(0), cols = x.shape(1);
  if (rows == 0 || cols == 0) return Operand{x.data(), rows, cols, cols > 0 ? cols : 1};
  const std::int64_t s0 = x.strides(0), s1 = x.strides(1);
  if (cols > 1 && s1 != item) {
    throw py::value_error(std::string(name) + " must have unit stride along its last axis");
  }
  std::int64_t ld = cols > 0 ? cols : 1;
  if (rows > 1 && cols > 0) {
    if (s0 <= 0 || s0 % item != 0 || s0 / item < cols) {
      throw py::value_error(std::string(name) +
                            " must have a positive row stride of at least its row length");
    }
    ld = s0 / item;
  }
  checked_mul(rows, ld, name);
  return Operand{x.data(), rows, cols, ld};
}

template <class T>
void run_gemm(const py::array& a, const py::array& b, bool ta, bool tb, py::array& out,
              double alpha, double beta) {
  const Operand A = operand(a, "a"), B = operand(b, "b");
  const std::int64_t m = ta ? A.cols : A.rows, k = ta ? A.rows : A.cols;
  const std::int64_t kb = tb ? B.cols : B.rows, n = tb ? B.rows : B.cols;
  if (k != kb) {
    throw py::value_error("inner dimensions of a and b differ: op(a) has " + std::to_string(k) +
                          " columns, op(b) has " + std::to_string(kb) + " rows");
  }
  checked_mul(checked_mul(m, n, "gemm"), k, "gemm");
  if (out.ndim() != 2 || out.shape(0) != m || out.shape(1) != n) {
    throw py::value_error("out must have shape (" + std::to_string(m) + ", " + std::to_string(n) +
                          ")");
  }
  if (!out.writeable()) throw py::value_error("out must be writable");
  const Operand C = operand(out, "out");
  const GemmFns<T>& f = fns<T>(FASTRNN_DISPATCH(gemm_table));
  const int nt = get_num_threads();
  T* c = static_cast<T*>(out.mutable_data());
  {
    // Safe without the GIL: the kernel touches only these buffers, which the
    // caller's references keep alive, and no Python object.
    py::gil_scoped_release release;
    f.gemm(ta ? Trans::yes : Trans::no, tb ? Trans::yes : Trans::no, m, n, k,
           static_cast<T>(alpha), static_cast<const T*>(A.data), A.ld,
           static_cast<const T*>(B.data), B.ld, static_cast<T>(beta), c, C.ld, nt);
  }
}

void gemm_entry(const py::array& a, const py::array& b, bool ta, bool tb, py::array& out,
                double alpha, double beta) {
  const auto dt = a.dtype();
  if (!dt.equal(b.dtype()) || !dt.equal(out.dtype())) {
    throw py::type_error("a, b and out must have the same dtype");
  }
  if (dt.equal(py::dtype::of<float>())) {
    run_gemm<float>(a, b, ta, tb, out, alpha, beta);
  } else if (dt.equal(py::dtype::of<double>())) {
    run_gemm<double>(a, b, ta, tb, out, alpha, beta);
  } else {
    throw py::type_error("gemm supports float32 and float64 only");
  }
}

// Records every epilogue call (for tests): the tile, and a copy of the tile's
// values at the time of the call into `snapshot`, and +1 on `counts`.
template <class T>
struct TileRecorder {
  std::mutex mutex;
  std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t>> tiles;
  T* snapshot = nullptr;
  std::int32_t* counts = nullptr;
  std::int64_t ld = 0;

  static void call(void* ctx, std::int64_t row0, std::int64_t rows, std::int64_t col0,
                   std::int64_t cols, T* c, std::int64_t ldc) {
    auto* self = static_cast<TileRecorder*>(ctx);
    for (std::int64_t i = 0; i < rows; ++i) {
      for (std::int64_t j = 0; j < cols; ++j) {
        self->snapshot[(row0 + i) * self->ld + col0 + j] = c[i * ldc + j];
        self->counts[(row0 + i) * self->ld + col0 + j] += 1;
      }
    }
    std::lock_guard<std::mutex> lock(self->mutex);
    self->tiles.emplace_back(row0, rows, col0, cols);
  }
};

// op(B) packed once by one SIMD target (the one active when it was built);
// matmul reuses it with that target's kernels.
class PackedB {
 public:
  PackedB(const py::array& b, bool transpose_b) : isa_(active_isa()) {
    const Operand B = operand(b, "b");
    k_ = transpose_b ? B.cols : B.rows;
    n_ = transpose_b ? B.rows : B.cols;
    const Trans tb = transpose_b ? Trans::yes : Trans::no;
    if (b.dtype().equal(py::dtype::of<float>())) {
      is_double_ = false;
      pack<float>(tb, B, f32_);
    } else if (b.dtype().equal(py::dtype::of<double>())) {
      is_double_ = true;
      pack<double>(tb, B, f64_);
    } else {
      throw py::type_error("b must be float32 or float64");
    }
  }

  std::int64_t k() const { return k_; }
  std::int64_t n() const { return n_; }
  std::string isa() const { return isa_name(isa_); }
  py::dtype dtype() const {
    return is_double_ ? py::dtype::of<double>() : py::dtype::of<float>();
  }
  std::int64_t panel() const {
    const GemmTable& t = table_for(isa_);
    return is_double_ ? t.f64.packed_b_panel() : t.f32.packed_b_panel();
  }

  // out[:, j0:j1] = alpha * op(a) @ B[:, j0:j1] + beta * out[:, j0:j1].
  // With record=True returns the epilogue tiles; snapshot/counts are filled.
  py::object matmul(const py::array& a, py::array& out, bool ta, double alpha, double beta,
                    std::int64_t j0, std::optional<std::int64_t> j1_opt, bool record,
                    std::optional<py::array> snapshot, std::optional<py::array> counts) {
    if (!a.dtype().equal(dtype()) || !out.dtype().equal(dtype())) {
      throw py::type_error("a and out must have the dtype of the packed b");
    }
    if (is_double_) return matmul_t<double>(a, out, ta, alpha, beta, j0, j1_opt, record,
                                            snapshot, counts);
    return matmul_t<float>(a, out, ta, alpha, beta, j0, j1_opt, record, snapshot, counts);
  }

 private:
  template <class T>
  void pack(Trans tb, const Operand& B, std::vector<T>& dst) {
    const GemmFns<T>& f = fns<T>(table_for(isa_));
    const std::int64_t size = f.packed_b_size(k_, n_);
    dst.resize(static_cast<std::size_t>(size));
    py::gil_scoped_release release;
    f.pack_b(tb, k_, n_, static_cast<const T*>(B.data), B.ld, dst.data());
  }

  template <class T>
  const std::vector<T>& storage() const;

  template <class T>
  py::object matmul_t(const py::array& a, py::array& out, bool ta, double alpha, double beta,
                      std::int64_t j0, std::optional<std::int64_t> j1_opt, bool record,
                      std::optional<py::array>& snapshot, std::optional<py::array>& counts) {
    const Operand A = operand(a, "a");
    const std::int64_t m = ta ? A.cols : A.rows, k = ta ? A.rows : A.cols;
    if (k != k_) {
      throw py::value_error("inner dimensions differ: op(a) has " + std::to_string(k) +
                            " columns, packed b has " + std::to_string(k_) + " rows");
    }
    if (out.ndim() != 2 || out.shape(0) != m || out.shape(1) != n_) {
      throw py::value_error("out must have shape (" + std::to_string(m) + ", " +
                            std::to_string(n_) + ")");
    }
    if (!out.writeable()) throw py::value_error("out must be writable");
    const Operand C = operand(out, "out");
    const std::int64_t j1 = j1_opt ? *j1_opt : n_;
    const std::int64_t p = panel();
    if (j0 < 0 || j1 > n_ || j0 > j1 || (j0 % p != 0 && j0 != n_)) {
      throw py::value_error("need 0 <= j0 <= j1 <= n with j0 a multiple of the panel width " +
                            std::to_string(p));
    }
    const GemmFns<T>& f = fns<T>(table_for(isa_));
    const int nt = get_num_threads();
    T* c = static_cast<T*>(out.mutable_data());
    TileRecorder<T> rec;
    Epilogue<T> ep;
    if (record) {
      if (!snapshot || !counts) throw py::value_error("record=True needs snapshot and counts");
      if (!snapshot->dtype().equal(dtype()) || snapshot->ndim() != 2 || snapshot->shape(0) != m ||
          snapshot->shape(1) != n_ || !(snapshot->flags() & py::array::c_style) ||
          !counts->dtype().equal(py::dtype::of<std::int32_t>()) || counts->ndim() != 2 ||
          counts->shape(0) != m || counts->shape(1) != n_ ||
          !(counts->flags() & py::array::c_style)) {
        throw py::value_error("snapshot/counts must be C-contiguous (m, n) of dtype/int32");
      }
      rec.snapshot = static_cast<T*>(snapshot->mutable_data());
      rec.counts = static_cast<std::int32_t*>(counts->mutable_data());
      rec.ld = n_;
      ep.fn = &TileRecorder<T>::call;
      ep.ctx = &rec;
    }
    {
      // Safe without the GIL: only raw buffers kept alive by the caller.
      py::gil_scoped_release release;
      f.gemm_packed(ta ? Trans::yes : Trans::no, m, n_, k_, static_cast<T>(alpha),
                    static_cast<const T*>(A.data), A.ld, storage<T>().data(), j0, j1,
                    static_cast<T>(beta), c, C.ld, nt, record ? &ep : nullptr);
    }
    if (!record) return py::none();
    return py::cast(rec.tiles);
  }

  Isa isa_;
  bool is_double_ = false;
  std::int64_t k_ = 0, n_ = 0;
  std::vector<float> f32_;
  std::vector<double> f64_;
};

template <>
const std::vector<float>& PackedB::storage<float>() const {
  return f32_;
}
template <>
const std::vector<double>& PackedB::storage<double>() const {
  return f64_;
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def("gemm", &gemm_entry, py::arg("a"), py::arg("b"), py::arg("transpose_a"),
        py::arg("transpose_b"), py::arg("out"), py::arg("alpha") = 1.0, py::arg("beta") = 0.0,
        "out = alpha * op(a) @ op(b) + beta * out (internal; see fastrnn.ops.matmul).");
  py::class_<PackedB>(m, "PackedB",
                      "op(b) packed once for reuse (internal; tests and benchmarks).")
      .def(py::init<const py::array&, bool>(), py::arg("b"), py::arg("transpose_b") = false)
      .def_property_readonly("k", &PackedB::k)
      .def_property_readonly("n", &PackedB::n)
      .def_property_readonly("isa", &PackedB::isa)
      .def_property_readonly("dtype", &PackedB::dtype)
      .def_property_readonly("panel", &PackedB::panel)
      .def("_matmul", &PackedB::matmul, py::arg("a"), py::arg("out"), py::arg("transpose_a"),
           py::arg("alpha"), py::arg("beta"), py::arg("j0"), py::arg("j1"), py::arg("record"),
           py::arg("snapshot"), py::arg("counts"));
}

}  // namespace fastrnn::bindings
