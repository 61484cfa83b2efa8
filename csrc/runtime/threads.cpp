#include "runtime/threads.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

namespace fastrnn {
namespace {

int default_threads() {
  if (const char* env = std::getenv("FASTRNN_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1 && v <= kMaxThreads) return static_cast<int>(v);
  }
  return available_cpus();
}

std::atomic<int>& setting() {
  static std::atomic<int> n{default_threads()};
  return n;
}

}  // namespace

int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc >= 1 ? static_cast<int>(hc) : 1;
}

int get_num_threads() { return setting().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads) {
    throw std::invalid_argument("set_num_threads: n must be in [1, " +
                                std::to_string(kMaxThreads) + "], got " + std::to_string(n));
  }
  setting().store(n, std::memory_order_relaxed);
}

bool have_openmp() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

}  // namespace fastrnn
