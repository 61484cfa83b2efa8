#include "runtime/threads.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace fastrnn {
namespace {

std::atomic<bool> g_env_ignored{false};

int default_threads() {
  if (const char* env = std::getenv("FASTRNN_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1 && v <= kMaxThreads) return static_cast<int>(v);
    g_env_ignored.store(true, std::memory_order_relaxed);
  }
  return available_cpus();
}

std::atomic<bool> g_fork_limited{false};

void after_fork_in_child() { g_fork_limited.store(true, std::memory_order_relaxed); }

std::atomic<int>& setting() {
  static std::atomic<int> n{default_threads()};
  // GNU OpenMP only: LLVM's runtime starts its threads again in a forked child.
#if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__) && \
    (defined(__unix__) || defined(__APPLE__))
  static const bool registered = pthread_atfork(nullptr, nullptr, &after_fork_in_child) == 0;
  (void)registered;
#endif
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

void init_threads() { (void)setting(); }

int get_num_threads() {
  const int n = setting().load(std::memory_order_relaxed);
  return g_fork_limited.load(std::memory_order_relaxed) ? 1 : n;
}

bool fork_limited() { return g_fork_limited.load(std::memory_order_relaxed); }

bool num_threads_env_ignored() {
  (void)setting();  // the variable is read on first use
  return g_env_ignored.load(std::memory_order_relaxed);
}

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
