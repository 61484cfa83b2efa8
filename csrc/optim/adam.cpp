// Fused Adam update (see adam.h). Memory-bound (reads four arrays, writes three),
// so it is compiled once with the baseline flags rather than per SIMD target.
#include "optim/adam.h"

#include <cmath>

namespace fastrnn {

template <class T>
void adam_update(std::int64_t n, T* p, const T* g, T* m, T* v, const AdamScalars<T>& s,
                 int threads) {
  // Below ~256 Ki elements a parallel region costs more than it saves.
  const int nt = n >= (std::int64_t{1} << 18) && threads > 1 ? threads : 1;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    T d = g[i];
    if (s.has_wd) {
      const T decay = s.wd * p[i];
      d = d + decay;
    }
    const T m_old = m[i] * s.b1;
    const T m_add = s.c1 * d;
    const T mi = m_old + m_add;
    const T v_old = v[i] * s.b2;
    T v_add = s.c2 * d;
    v_add = v_add * d;
    const T vi = v_old + v_add;
    T den = std::sqrt(vi);
    den = den / s.sqrt_bc2;
    den = den + s.eps;
    T q = mi / den;
    q = q * s.step;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - q;
  }
}

template void adam_update<float>(std::int64_t, float*, const float*, float*, float*,
                                 const AdamScalars<float>&, int);
template void adam_update<double>(std::int64_t, double*, const double*, double*, double*,
                                  const AdamScalars<double>&, int);

}  // namespace fastrnn
