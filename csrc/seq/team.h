// What the time loops of the sequence kernels (seq.simd.cpp, lstmp.simd.cpp) share to
// run as one team of OpenMP threads: the thread's id and the per-step barrier. Included
// by per-target files only: everything lives in namespace fastrnn::<target>.
#pragma once

#include <atomic>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "runtime/target.h"

FASTRNN_TARGET_NS_BEGIN
namespace {

inline void thread_id(int& tid, int& nth) {
#if defined(_OPENMP)
  tid = omp_get_thread_num();
  nth = omp_get_num_threads();
#else
  tid = 0;
  nth = 1;
#endif
}

inline void omp_barrier() {
#if defined(_OPENMP)
#pragma omp barrier
#endif
}

// The per-step barrier of the time loops. Spins briefly (a step is microseconds),
// then yields the CPU: on a machine shared with other work a waiting thread must
// not burn the core its partner needs to finish the step. Lives on the kernel's
// stack (no global state); `count` is set by thread 0 before the first wait.
struct StepBarrier {
  std::atomic<int> arrived{0};
  std::atomic<int> generation{0};
  int count = 1;
  void wait() {
    if (count <= 1) return;
    const int gen = generation.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == count - 1) {
      arrived.store(0, std::memory_order_relaxed);
      generation.store(gen + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < 1000) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }
};

}  // namespace
FASTRNN_TARGET_NS_END
