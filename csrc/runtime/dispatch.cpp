#include "runtime/dispatch.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace fastrnn {
namespace {

bool cpu_has(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::generic:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == Isa::generic;
#endif
}

// Process-wide selection: written once at first use and by set_active_isa().
struct Selection {
  std::atomic<int> isa{-1};
  std::mutex mutex;
  std::string reason;
};

Selection& selection() {
  static Selection s;
  return s;
}

void initialise(Selection& s) {
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.isa.load() >= 0) return;
  Isa best = best_isa();
  Isa chosen = best;
  std::string reason = std::string("best target this CPU supports: ") + isa_name(best);
  if (const char* env = std::getenv("FASTRNN_ISA")) {
    std::string want(env);
    if (!want.empty()) {
      try {
        Isa w = parse_isa(want);
        if (static_cast<int>(w) <= static_cast<int>(best)) {
          chosen = w;
          reason = "forced by FASTRNN_ISA=" + want;
        } else {
          reason = "FASTRNN_ISA=" + want + " is not supported here; using " + isa_name(best);
        }
      } catch (const std::invalid_argument&) {
        reason = "FASTRNN_ISA=" + want + " is not a target (generic, avx2, avx512); using " +
                 isa_name(best);
      }
    }
  }
  s.reason = reason;
  s.isa.store(static_cast<int>(chosen));
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic:
      return "generic";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  std::string n = name;  // any case: FASTRNN_ISA=AVX2 as well
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "generic") return Isa::generic;
  if (n == "avx2") return Isa::avx2;
  if (n == "avx512") return Isa::avx512;
  throw std::invalid_argument("unknown SIMD target '" + name +
                              "'; expected one of 'generic', 'avx2', 'avx512'");
}

bool isa_compiled(Isa isa) {
#if defined(FASTRNN_X86_TARGETS)
  (void)isa;
  return true;
#else
  return isa == Isa::generic;
#endif
}

bool isa_supported(Isa isa) { return isa_compiled(isa) && cpu_has(isa); }

Isa best_isa() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::generic;
}

Isa active_isa() {
  Selection& s = selection();
  int v = s.isa.load(std::memory_order_acquire);
  if (v < 0) {
    initialise(s);
    v = s.isa.load(std::memory_order_acquire);
  }
  return static_cast<Isa>(v);
}

std::string isa_reason() {
  active_isa();
  Selection& s = selection();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.reason;
}

void set_active_isa(Isa isa) {
  if (!isa_compiled(isa)) {
    throw std::invalid_argument(std::string("SIMD target '") + isa_name(isa) +
                                "' is not compiled into this build");
  }
  if (!isa_supported(isa)) {
    throw std::invalid_argument(std::string("SIMD target '") + isa_name(isa) +
                                "' is not supported by this CPU");
  }
  active_isa();
  Selection& s = selection();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.reason = std::string("selected at run time: ") + isa_name(isa);
  s.isa.store(static_cast<int>(isa), std::memory_order_release);
}

}  // namespace fastrnn
