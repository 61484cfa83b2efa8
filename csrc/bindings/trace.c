/* tracemalloc reporting for the buffer cache (pool.cpp). Written in C because the
   headers of CPython 3.11 and older declare these two functions without C linkage
   when included from C++ (the linker then looks for a C++ symbol that does not exist). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

int fastrnn_trace_track(unsigned int domain, uintptr_t ptr, size_t size);
int fastrnn_trace_untrack(unsigned int domain, uintptr_t ptr);

/* Takes the GIL itself when the caller does not hold it. Returns -2 when tracemalloc
   is not tracing. */
int fastrnn_trace_track(unsigned int domain, uintptr_t ptr, size_t size) {
  return PyTraceMalloc_Track(domain, ptr, size);
}

int fastrnn_trace_untrack(unsigned int domain, uintptr_t ptr) {
  return PyTraceMalloc_Untrack(domain, ptr);
}
