// Facts each compiled target reports about itself (for build_info() and tests).
#pragma once

#include "runtime/dispatch.h"

namespace fastrnn {

struct TargetInfo {
  const char* name;       // "generic", "avx2", "avx512"
  int float_lanes;        // float32 lanes in the widest vector this target uses
  int double_lanes;       // float64 lanes
  const char* features;   // the compiler's feature macros seen for this target
};

}  // namespace fastrnn

FASTRNN_DECLARE_TARGET_TABLE(TargetInfo, target_info)
