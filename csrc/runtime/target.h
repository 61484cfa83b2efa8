// Per-target compilation support.
//
// Files named *.simd.cpp are compiled once per SIMD target (generic, avx2,
// avx512 on x86-64; generic elsewhere) with FASTRNN_TARGET set to the target's
// name. Everything such a file defines, and every header it includes for its
// kernels, must live inside FASTRNN_TARGET_NS so that the copies compiled with
// different instruction sets never share a symbol (sharing one would let the
// linker pick an AVX-512 copy for a CPU without AVX-512).
//
// Rules for code in a *.simd.cpp file:
//   * no out-of-line standard-library templates (std::vector, std::function,
//     std::sort ...): their instantiations are shared symbols. Scalars from
//     <cmath> and our own inline helpers are fine.
//   * memory comes from the caller (workspace pointers), never from new/malloc.
#pragma once

#ifndef FASTRNN_TARGET
#define FASTRNN_TARGET generic
#define FASTRNN_TARGET_NAME "generic"
#endif

// For the small vector functions of the per-step gate math: inlined at every call site,
// so the out-of-order core overlaps the independent gates of a block instead of
// waiting on one call's latency chain after another.
// FASTRNN_NOINLINE keeps a rarely taken path (partial blocks) out of its caller, so the
// caller's common path needs no large stack frame.
// FASTRNN_INLINE_LAMBDA (after a lambda's parameter list) inlines a lambda the same way.
#if defined(__GNUC__)
#define FASTRNN_INLINE inline __attribute__((always_inline))
#define FASTRNN_NOINLINE __attribute__((noinline))
#define FASTRNN_INLINE_LAMBDA __attribute__((always_inline))
#else
#define FASTRNN_INLINE inline
#define FASTRNN_NOINLINE
#define FASTRNN_INLINE_LAMBDA
#endif

#define FASTRNN_TARGET_NS_BEGIN \
  namespace fastrnn {           \
  namespace FASTRNN_TARGET {
#define FASTRNN_TARGET_NS_END \
  }                           \
  }
