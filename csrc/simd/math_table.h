// Array versions of the vector math (exp, tanh, sigmoid) for code compiled
// once (bindings, tests, benchmarks). Per-target code includes simd/math.h
// and calls the inline functions directly instead.
#pragma once

#include <cstdint>

#include "runtime/dispatch.h"

namespace fastrnn {

// out[i] = f(in[i]) for i in [0, n). out == in (in place) is allowed; other
// overlaps are not. Exactly n elements of each array are touched.
template <class T>
struct MathFns {
  void (*exp)(const T* in, T* out, std::int64_t n);
  void (*tanh)(const T* in, T* out, std::int64_t n);
  void (*sigmoid)(const T* in, T* out, std::int64_t n);
  void (*tanh_fast)(const T* in, T* out, std::int64_t n);
  void (*sigmoid_fast)(const T* in, T* out, std::int64_t n);
};

struct MathTable {
  MathFns<float> f32;
  MathFns<double> f64;
  // Maximum error in ulp this target's functions are documented (and tested)
  // to stay within; index [function][dtype], function 0 exp, 1 tanh,
  // 2 sigmoid, 3 tanh_fast, 4 sigmoid_fast (simd::MathFn), dtype 0 float32,
  // 1 float64.
  double max_error_ulp[5][2];
};

}  // namespace fastrnn

FASTRNN_DECLARE_TARGET_TABLE(MathTable, math_table)
