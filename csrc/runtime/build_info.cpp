#include "runtime/build_info.h"

namespace fastrnn {

std::string compiler_id() {
#if defined(FASTRNN_COMPILER)
  return FASTRNN_COMPILER;
#else
  return "unknown";
#endif
}

}  // namespace fastrnn
