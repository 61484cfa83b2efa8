#include "simd/target_info.h"

#include "runtime/target.h"

FASTRNN_TARGET_NS_BEGIN

const TargetInfo& target_info() {
#if defined(__AVX512F__)
  static const TargetInfo info{FASTRNN_TARGET_NAME, 16, 8, "AVX-512F/BW/DQ/VL, AVX2, FMA"};
#elif defined(__AVX2__)
  static const TargetInfo info{FASTRNN_TARGET_NAME, 8, 4, "AVX2, FMA"};
#elif defined(__SSE2__)
  static const TargetInfo info{FASTRNN_TARGET_NAME, 4, 2, "SSE2 (baseline x86-64)"};
#else
  static const TargetInfo info{FASTRNN_TARGET_NAME, 1, 1, "portable scalar"};
#endif
  return info;
}

FASTRNN_TARGET_NS_END
