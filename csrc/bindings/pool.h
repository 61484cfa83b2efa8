// Reuse of large buffers across calls (outputs, training tapes, workspaces).
//
// A training loop allocates the same big arrays every step: the tape (T*N*G*H gate
// activations and more), the backward's gate gradients, dx. Fresh memory costs a page
// fault and a zero-fill per page on first touch; for arrays past glibc's mmap threshold
// (32 MiB) that happens on every call and took ~10-25% of an LSTM training step at
// T*N*H >= 2M. Buffers of at least kPoolMinBytes therefore come from a small cache of
// released blocks; the cache keeps at most 64 blocks and `limit` bytes
// (fastrnn.set_cache_limit; fastrnn.empty_cache frees it). Blocks are 64-byte aligned,
// 2 MiB aligned and advised to use transparent huge pages from 4 MiB on. Blocks in use
// are reported to tracemalloc (domain 0x66726e6e), like NumPy's own arrays.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastrnn::bindings {

// Smallest request served by the cache; smaller ones are plain allocations.
constexpr std::size_t kPoolMinBytes = std::size_t{1} << 20;

// A block of at least `bytes` bytes (a cached one when one fits). Throws std::bad_alloc.
void* pool_acquire(std::size_t bytes, std::size_t* got);
// Gives a block from pool_acquire back (kept for reuse while within the limits).
void pool_release(void* p, std::size_t bytes) noexcept;

struct PoolStats {
  std::size_t cached_bytes, cached_blocks, limit;
  std::size_t in_use;  // bytes of blocks handed out and not yet released
};
PoolStats pool_stats();
void pool_set_limit(std::size_t bytes);
std::size_t pool_empty();  // frees every cached block; returns the bytes freed

// RAII scratch memory for one call (n elements of T, uninitialised).
template <class T>
class PoolBuffer {
 public:
  explicit PoolBuffer(std::int64_t n);
  ~PoolBuffer() { pool_release(p_, bytes_); }
  PoolBuffer(const PoolBuffer&) = delete;
  PoolBuffer& operator=(const PoolBuffer&) = delete;
  T* data() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

// A fresh C-contiguous array of this shape (uninitialised); from the cache when large,
// and handed back to it when NumPy frees the array.
template <class T>
pybind11::array_t<T, pybind11::array::c_style> pooled_array(const std::vector<std::int64_t>& shape);

}  // namespace fastrnn::bindings
