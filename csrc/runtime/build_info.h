// Facts about this build, for fastrnn.build_info().
#pragma once

#include <string>

namespace fastrnn {

// Compiler name and version this library was built with.
std::string compiler_id();

}  // namespace fastrnn
