// How the sequence kernels (seq.simd.cpp, lstmp.simd.cpp) cut one workspace into regions.
// Included by per-target files only: everything lives in namespace fastrnn::<target>.
#pragma once

#include <cstdint>

#include "runtime/checked.h"
#include "runtime/target.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

// n rounded up to a multiple of 16 elements (64 bytes of float), checked.
inline std::int64_t round16(std::int64_t n, const char* what) {
  return checked_mul((checked_add(n, 15, what)) / 16, 16, what);
}

// Consecutive regions of one workspace, each rounded up to 16 elements, with every size
// checked against 64-bit overflow: take(n) returns the next region's offset.
struct Carve {
  std::int64_t off = 0;
  std::int64_t take(std::int64_t n, const char* what) {
    const std::int64_t at = off;
    off = checked_add(off, round16(n, what), what);
    return at;
  }
  // A region of rows x cols elements.
  std::int64_t take(std::int64_t rows, std::int64_t cols, const char* what) {
    return take(checked_mul(rows, cols, what), what);
  }
};

}  // namespace
FASTRNN_TARGET_NS_END
