// Overflow-checked size arithmetic for workspace sizing.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastrnn {

// a * b, throwing std::length_error when the product does not fit in int64.
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, const char* what) {
  std::int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) {
    throw std::length_error(std::string(what) + ": size overflows 64-bit arithmetic");
  }
  return r;
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b, const char* what) {
  std::int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) {
    throw std::length_error(std::string(what) + ": size overflows 64-bit arithmetic");
  }
  return r;
}

}  // namespace fastrnn
