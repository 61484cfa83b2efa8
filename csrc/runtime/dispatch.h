// Instruction-set detection and run-time dispatch.
//
// Each kernel area (gemm, simd math, seq) defines a table of function pointers
// and a function returning it, once per target:
//
//   // in area.h
//   struct GemmTable { void (*sgemm)(...); ... };
//   FASTRNN_DECLARE_TARGET_TABLE(GemmTable, gemm_table)
//   // in area.simd.cpp (inside FASTRNN_TARGET_NS_BEGIN/END)
//   const GemmTable& gemm_table() { static const GemmTable t{...}; return t; }
//   // anywhere compiled once
//   const GemmTable& k = FASTRNN_DISPATCH(gemm_table);
//
// FASTRNN_DISPATCH returns the table of the target active now (see
// active_isa()); it is one atomic load and a switch.
#pragma once

#include <string>

namespace fastrnn {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
// Parses "generic" | "avx2" | "avx512"; throws std::invalid_argument otherwise.
Isa parse_isa(const std::string& name);
// Targets compiled into this build.
bool isa_compiled(Isa isa);
// Compiled and runnable on this CPU (CPUID + OS support for the registers).
bool isa_supported(Isa isa);
// The best target this CPU supports.
Isa best_isa();
// The target kernels use now. Initialised on first use from the CPU and the
// FASTRNN_ISA environment variable (which may only lower the target).
Isa active_isa();
// Why active_isa() is what it is (for build_info()).
std::string isa_reason();
// Select a target (tests use this to run every target the CPU has). Throws
// std::invalid_argument if the target is not compiled or not supported.
void set_active_isa(Isa isa);

}  // namespace fastrnn

#define FASTRNN_DECLARE_TARGET_TABLE(Type, fn) \
  namespace fastrnn {                          \
  namespace generic {                          \
  const Type& fn();                            \
  }                                            \
  namespace avx2 {                             \
  const Type& fn();                            \
  }                                            \
  namespace avx512 {                           \
  const Type& fn();                            \
  }                                            \
  }

#if defined(FASTRNN_X86_TARGETS)
#define FASTRNN_DISPATCH(fn)                                            \
  (::fastrnn::active_isa() == ::fastrnn::Isa::avx512 ? ::fastrnn::avx512::fn() \
   : ::fastrnn::active_isa() == ::fastrnn::Isa::avx2 ? ::fastrnn::avx2::fn()   \
                                                       : ::fastrnn::generic::fn())
#else
#define FASTRNN_DISPATCH(fn) (::fastrnn::generic::fn())
#endif
