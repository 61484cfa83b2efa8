// The buffer cache behind pool.h, and _core.{empty, empty_cache, cache_info, set_cache_limit}.
#include "bindings/pool.h"

#include <pybind11/stl.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <list>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "bindings/bindings.h"
#include "runtime/checked.h"

namespace py = pybind11;

// csrc/bindings/trace.c
extern "C" int fastrnn_trace_track(unsigned int domain, std::uintptr_t ptr, std::size_t size);
extern "C" int fastrnn_trace_untrack(unsigned int domain, std::uintptr_t ptr);

namespace fastrnn::bindings {
namespace {

constexpr std::size_t kHuge = std::size_t{1} << 21;
constexpr std::size_t kMaxBlocks = 64;
constexpr std::size_t kDefaultLimit = std::size_t{1} << 30;
// tracemalloc domain of the blocks handed out (NumPy's arrays use 389047).
constexpr unsigned int kTraceDomain = 0x66726e6e;

struct Block {
  void* p;
  std::size_t bytes;
};

struct Cache {
  std::mutex mu;
  std::list<Block> blocks;  // most recently released first
  std::size_t bytes = 0;
  std::size_t limit = kDefaultLimit;
  std::atomic<std::size_t> in_use{0};  // bytes handed out and not yet released
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: arrays may outlive static destructors
  return *c;
}

// Blocks from 4 MiB on are 2 MiB aligned (huge pages), the rest 64-byte aligned.
std::size_t align_for(std::size_t bytes) { return bytes >= 2 * kHuge ? kHuge : 64; }

std::size_t rounded(std::size_t bytes) {
  const std::size_t align = align_for(bytes);
  return (bytes + align - 1) / align * align;
}

// size: a rounded() size.
void* fresh(std::size_t size) {
  const std::size_t align = align_for(size);
  void* p = std::aligned_alloc(align, size);
  if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == kHuge) madvise(p, size, MADV_HUGEPAGE);  // advice only
#endif
  return p;
}

// Frees cached blocks (least recently released first) until the cache is within
// `bytes` and `blocks`. Called with the lock held; returns the bytes freed.
std::size_t shrink(Cache& c, std::size_t bytes, std::size_t blocks) {
  std::size_t freed = 0;
  while (!c.blocks.empty() && (c.bytes > bytes || c.blocks.size() > blocks)) {
    const Block b = c.blocks.back();
    c.blocks.pop_back();
    c.bytes -= b.bytes;
    freed += b.bytes;
    std::free(b.p);
  }
  return freed;
}

// A block of at least `bytes` bytes: a cached one that fits, else a fresh one.
void* take(std::size_t bytes, std::size_t* got) {
  const std::size_t size = rounded(bytes == 0 ? 1 : bytes);
  if (size >= kPoolMinBytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    // Best fit among blocks no more than a quarter (+ 2 MiB) larger than asked.
    auto best = c.blocks.end();
    for (auto it = c.blocks.begin(); it != c.blocks.end(); ++it) {
      if (it->bytes >= size && it->bytes <= size + size / 4 + kHuge &&
          (best == c.blocks.end() || it->bytes < best->bytes)) {
        best = it;
      }
    }
    if (best != c.blocks.end()) {
      const Block b = *best;
      c.blocks.erase(best);
      c.bytes -= b.bytes;
      *got = b.bytes;
      return b.p;
    }
  }
  void* p = nullptr;
  try {
    p = fresh(size);
  } catch (const std::bad_alloc&) {
    pool_empty();  // the cached blocks may be what the allocator is missing
    p = fresh(size);
  }
  *got = size;
  return p;
}

}  // namespace

// Blocks in use are reported to tracemalloc (as NumPy does for its arrays), so that
// tracemalloc-based measurements see fastrnn's outputs, tapes and workspaces whether
// they came from the cache or not. Called without the cache lock held: tracking takes
// the GIL, and a thread holding the GIL may be waiting for that lock.
void* pool_acquire(std::size_t bytes, std::size_t* got) {
  void* p = take(bytes, got);
  cache().in_use.fetch_add(*got, std::memory_order_relaxed);
  fastrnn_trace_track(kTraceDomain, reinterpret_cast<std::uintptr_t>(p), *got);
  return p;
}

void pool_release(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  fastrnn_trace_untrack(kTraceDomain, reinterpret_cast<std::uintptr_t>(p));
  cache().in_use.fetch_sub(bytes, std::memory_order_relaxed);
  if (bytes < kPoolMinBytes) {
    std::free(p);
    return;
  }
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (bytes > c.limit) {
    std::free(p);
    return;
  }
  c.blocks.push_front(Block{p, bytes});
  c.bytes += bytes;
  shrink(c, c.limit, kMaxBlocks);
}

PoolStats pool_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return PoolStats{c.bytes, c.blocks.size(), c.limit, c.in_use.load(std::memory_order_relaxed)};
}

void pool_set_limit(std::size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
  shrink(c, c.limit, kMaxBlocks);
}

std::size_t pool_empty() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return shrink(c, 0, 0);
}

template <class T>
PoolBuffer<T>::PoolBuffer(std::int64_t n) {
  const std::int64_t bytes = checked_mul(checked_add(n, 1, "workspace"),
                                         static_cast<std::int64_t>(sizeof(T)), "workspace");
  p_ = pool_acquire(static_cast<std::size_t>(bytes), &bytes_);
}

template <class T>
py::array_t<T, py::array::c_style> pooled_array(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n = checked_mul(n, s, "array size");
  const std::int64_t bytes = checked_mul(n, static_cast<std::int64_t>(sizeof(T)), "array size");
  if (static_cast<std::size_t>(bytes) < kPoolMinBytes) {
    return py::array_t<T, py::array::c_style>(shape);
  }
  auto* owner = new Block{nullptr, 0};
  try {
    owner->p = pool_acquire(static_cast<std::size_t>(bytes), &owner->bytes);
  } catch (...) {
    delete owner;
    throw;
  }
  py::capsule base(owner, [](void* o) {
    auto* b = static_cast<Block*>(o);
    pool_release(b->p, b->bytes);
    delete b;
  });
  return py::array_t<T, py::array::c_style>(shape, static_cast<T*>(owner->p), base);
}

template class PoolBuffer<float>;
template class PoolBuffer<double>;
template py::array_t<float, py::array::c_style> pooled_array<float>(
    const std::vector<std::int64_t>&);
template py::array_t<double, py::array::c_style> pooled_array<double>(
    const std::vector<std::int64_t>&);

void register_pool(py::module_& m) {
  m.def(
      "empty_cache", [] { return pool_empty(); },
      "Free the cached buffers; returns the bytes freed.");
  m.def(
      "cache_info",
      [] {
        const PoolStats s = pool_stats();
        py::dict d;
        d["bytes"] = s.cached_bytes;
        d["blocks"] = s.cached_blocks;
        d["limit"] = s.limit;
        d["in_use"] = s.in_use;
        return d;
      },
      "Bytes and blocks held by the buffer cache, its limit, and the bytes in use.");
  m.def(
      "set_cache_limit", [](std::size_t bytes) { pool_set_limit(bytes); }, py::arg("bytes"),
      "Most bytes the buffer cache keeps (0 turns it off).");
  m.def(
      "empty",
      [](const std::vector<std::int64_t>& shape, const py::dtype& dtype) -> py::array {
        for (std::int64_t s : shape) {
          if (s < 0) throw py::value_error("empty: shape has a negative dimension");
        }
        if (dtype.equal(py::dtype::of<float>())) return pooled_array<float>(shape);
        if (dtype.equal(py::dtype::of<double>())) return pooled_array<double>(shape);
        throw py::type_error("empty: dtype must be float32 or float64");
      },
      py::arg("shape"), py::arg("dtype"),
      "Uninitialised C-contiguous array; from the buffer cache when >= 1 MiB.");
}

}  // namespace fastrnn::bindings
