// The training forwards' copies of what only the backward reads (x and the weights), shared
// by the sequence kernels (seq.simd.cpp, lstmp.simd.cpp). Included by per-target files
// only: everything lives in namespace fastrnn::<target>.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/target.h"
#include "simd/vec.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

// Tapes whose gate activations take at least this many bytes are streamed (seq.simd.cpp's
// tape_units), and so are copies of at least this many bytes (copy_share); a smaller one may
// still be in the caches when the backward reads it.
constexpr std::int64_t kStreamTapeBytes = std::int64_t{1} << 20;

// dst[0:n) = src[0:n) with the whole vectors from dst's first vector-aligned element on
// stored past the caches (simd::Vec::stream), the elements before and after them plainly.
// Call simd::stream_fence() before another thread reads dst.
template <class T>
void stream_copy(T* dst, const T* src, std::int64_t n) {
  using V = simd::Vec<T>;
  constexpr std::int64_t L = V::lanes;
  std::int64_t i = 0;
  for (; i < n && reinterpret_cast<std::uintptr_t>(dst + i) % sizeof(V) != 0; ++i) dst[i] = src[i];
  for (; i + L <= n; i += L) V::load(src + i).stream(dst + i);
  for (; i < n; ++i) dst[i] = src[i];
}

// This thread's share of dst[0:n) = src[0:n) (slices split at whole 64-byte lines): the
// training copies of x and the weights, which only the backward reads. From
// kStreamTapeBytes on, stored past the caches (GRU (1,1,768,512) training 1.24x faster,
// LSTM (1,1,1024,1024) 1.13x; LSTM (10,8,256,256) the same either way).
template <class T>
void copy_share(T* dst, const T* src, std::int64_t n, int tid, int nth) {
  constexpr std::int64_t line = 64 / static_cast<std::int64_t>(sizeof(T));
  const std::int64_t i0 = n * tid / nth / line * line;
  const std::int64_t i1 = tid + 1 == nth ? n : n * (tid + 1) / nth / line * line;
  if (n * static_cast<std::int64_t>(sizeof(T)) >= kStreamTapeBytes) {
    stream_copy(dst + i0, src + i0, i1 - i0);
  } else if (i0 < i1) {
    std::memcpy(dst + i0, src + i0, sizeof(T) * static_cast<std::size_t>(i1 - i0));
  }
}

}  // namespace
FASTRNN_TARGET_NS_END
