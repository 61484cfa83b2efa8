// Thread-count setting shared by every kernel.
//
// Kernels never let the partition of work change the order of a
// floating-point sum, so results are bitwise identical for any thread count.
#pragma once

namespace fastrnn {

// The most threads set_num_threads and FASTRNN_NUM_THREADS accept.
constexpr int kMaxThreads = 4096;

// Threads kernels use. Default: FASTRNN_NUM_THREADS if set (1..kMaxThreads), else the
// CPUs this process may run on (its affinity mask), else the machine's CPU count. One in a
// process forked after this one ran kernels on several threads (fork_limited()).
int get_num_threads();
// get_num_threads() for a kernel about to run: also notes when that is more than one, so
// that a process forked later runs its kernels on one thread. GNU OpenMP keeps its worker
// threads between parallel regions and cannot start them again in a forked child, whose
// first parallel region would wait forever for the parent's workers.
int kernel_threads();
// True in a process forked (at any depth) after kernels ran on several threads.
bool fork_limited();
// 1 <= n <= kMaxThreads; throws std::invalid_argument otherwise. Without OpenMP the
// kernels always run on one thread whatever this says, and so do they after fork_limited().
void set_num_threads(int n);
// CPUs this process may run on (affinity), at least 1.
int available_cpus();
// True when the build has OpenMP.
bool have_openmp();

}  // namespace fastrnn
