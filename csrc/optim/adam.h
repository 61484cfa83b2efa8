// One fused pass of the Adam update (PyTorch's rule, L2 weight decay) over a
// parameter array and its gradient and moment arrays.
#pragma once

#include <cstdint>

namespace fastrnn {

// Scalars already rounded to T by the caller, so that every operation below is the
// one NumPy would do on arrays of T (the Python fallback path):
//   d = g + wd * p                    (when has_wd)
//   m = m * b1 + c1 * d               (c1 = 1 - b1)
//   v = v * b2 + (c2 * d) * d         (c2 = 1 - b2)
//   p = p - ((m / ((sqrt(v) / sqrt_bc2) + eps)) * step)   (step = lr / (1 - b1^t))
// each product and sum rounded on its own (this file is built without FMA
// contraction), so results equal the NumPy expressions bit for bit.
template <class T>
struct AdamScalars {
  bool has_wd;
  T wd, b1, c1, b2, c2, sqrt_bc2, eps, step;
};

// n elements of each array, split between `threads` OpenMP threads (elementwise: the
// same bits for any thread count). p, m, v are updated in place; g is read only.
template <class T>
void adam_update(std::int64_t n, T* p, const T* g, T* m, T* v, const AdamScalars<T>& s,
                 int threads);

}  // namespace fastrnn
