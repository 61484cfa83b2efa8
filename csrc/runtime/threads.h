// Thread-count setting shared by every kernel.
//
// Kernels never let the partition of work change the order of a
// floating-point sum, so results are bitwise identical for any thread count.
#pragma once

namespace fastrnn {

// The most threads set_num_threads and FASTRNN_NUM_THREADS accept.
constexpr int kMaxThreads = 4096;

// Threads kernels use. Default: FASTRNN_NUM_THREADS if set (1..kMaxThreads), else the
// CPUs this process may run on (its affinity mask), else the machine's CPU count.
int get_num_threads();
// 1 <= n <= kMaxThreads; throws std::invalid_argument otherwise. Without OpenMP the
// kernels always run on one thread whatever this says.
void set_num_threads(int n);
// CPUs this process may run on (affinity), at least 1.
int available_cpus();
// True when the build has OpenMP.
bool have_openmp();

}  // namespace fastrnn
