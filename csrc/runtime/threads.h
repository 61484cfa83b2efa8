// Thread-count setting shared by every kernel.
//
// Kernels never let the partition of work change the order of a
// floating-point sum, so results are bitwise identical for any thread count.
#pragma once

namespace fastrnn {

// The most threads set_num_threads and FASTRNN_NUM_THREADS accept.
constexpr int kMaxThreads = 4096;

// Reads FASTRNN_NUM_THREADS and registers the fork handler (fork_limited()); called when
// the module loads, so that every later fork is seen. Idempotent.
void init_threads();
// Threads kernels use. Default: FASTRNN_NUM_THREADS if set (1..kMaxThreads), else the
// CPUs this process may run on (its affinity mask), else the machine's CPU count. One in
// a forked process (fork_limited()).
int get_num_threads();
// True in a process forked (at any depth) from one that had loaded fastrnn, in builds
// with GNU OpenMP. GNU OpenMP keeps its worker threads between parallel regions and cannot
// start them again in a forked child, whose first parallel region would wait forever for
// the parent's workers. Whether the parent's runtime had workers cannot be told: another
// library may share it (PyTorch's wheels ship a libgomp of the same name, which then serves
// both), and NumPy's BLAS threads alone make every process multithreaded. So every forked
// child runs the kernels on one thread.
bool fork_limited();
// True when FASTRNN_NUM_THREADS is set to something other than an integer in
// [1, kMaxThreads] (the default was used instead).
bool num_threads_env_ignored();
// 1 <= n <= kMaxThreads; throws std::invalid_argument otherwise. Without OpenMP the
// kernels always run on one thread whatever this says, and so do they after fork_limited().
void set_num_threads(int n);
// CPUs this process may run on (affinity), at least 1.
int available_cpus();
// True when the build has OpenMP.
bool have_openmp();

}  // namespace fastrnn
