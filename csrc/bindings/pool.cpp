// The buffer cache behind pool.h, and _core.{empty_cache, cache_info, set_cache_limit}.
#include "bindings/pool.h"

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

namespace fastrnn::bindings {
namespace {

constexpr std::size_t kHuge = std::size_t{1} << 21;
constexpr std::size_t kMaxBlocks = 64;
constexpr std::size_t kDefaultLimit = std::size_t{1} << 30;

struct Block {
  void* p;
  std::size_t bytes;
};

struct Cache {
  std::mutex mu;
  std::list<Block> blocks;  // most recently released first
  std::size_t bytes = 0;
  std::size_t limit = kDefaultLimit;
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

}  // namespace

void* pool_acquire(std::size_t bytes, std::size_t* got) {
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

void pool_release(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
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
  return PoolStats{c.bytes, c.blocks.size(), c.limit};
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
        return d;
      },
      "Bytes and blocks held by the buffer cache, and its limit.");
  m.def(
      "set_cache_limit", [](std::size_t bytes) { pool_set_limit(bytes); }, py::arg("bytes"),
      "Most bytes the buffer cache keeps (0 turns it off).");
}

}  // namespace fastrnn::bindings
