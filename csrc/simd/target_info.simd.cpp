#include "simd/target_info.h"

#include "runtime/target.h"
#include "simd/vec.h"

FASTRNN_TARGET_NS_BEGIN

const TargetInfo& target_info() {
#if defined(__AVX512F__)
  constexpr const char* features = "AVX-512F/BW/DQ/VL, AVX2, FMA";
#elif defined(__AVX2__)
  constexpr const char* features = "AVX2, FMA";
#elif defined(__SSE2__)
  constexpr const char* features = "SSE2 (baseline x86-64)";
#else
  constexpr const char* features = "portable (compiler generic vectors)";
#endif
  static const TargetInfo info{FASTRNN_TARGET_NAME, simd::Vec<float>::lanes,
                               simd::Vec<double>::lanes, features};
  return info;
}

FASTRNN_TARGET_NS_END
