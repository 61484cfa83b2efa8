#include <string>

#include "bindings/bindings.h"
#include "runtime/build_info.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"
#include "simd/target_info.h"

namespace py = pybind11;

namespace fastrnn::bindings {
namespace {

const TargetInfo& info_for(Isa isa) {
#if defined(FASTRNN_X86_TARGETS)
  switch (isa) {
    case Isa::avx512:
      return avx512::target_info();
    case Isa::avx2:
      return avx2::target_info();
    default:
      return generic::target_info();
  }
#else
  (void)isa;
  return generic::target_info();
#endif
}

py::dict build_info() {
  py::dict d;
#if defined(FASTRNN_VERSION)
  d["version"] = FASTRNN_VERSION;
#else
  d["version"] = "unknown";
#endif
  d["compiler"] = compiler_id();
  d["openmp"] = have_openmp();
  d["num_threads"] = get_num_threads();
  d["fork_limited"] = fork_limited();
  d["available_cpus"] = available_cpus();
  py::list compiled, supported;
  py::dict targets;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (!isa_compiled(isa)) continue;
    compiled.append(isa_name(isa));
    if (isa_supported(isa)) supported.append(isa_name(isa));
    const TargetInfo& ti = info_for(isa);
    py::dict t;
    t["float_lanes"] = ti.float_lanes;
    t["double_lanes"] = ti.double_lanes;
    t["features"] = ti.features;
    targets[ti.name] = t;
  }
  d["targets_compiled"] = compiled;
  d["targets_supported"] = supported;
  d["target_details"] = targets;
  d["isa"] = isa_name(active_isa());
  d["isa_best"] = isa_name(best_isa());
  d["isa_reason"] = isa_reason();
  return d;
}

}  // namespace

void register_runtime(py::module_& m) {
  init_threads();
  m.def("build_info", &build_info, "Facts about this build and the SIMD target in use.");
  m.def("get_num_threads", &get_num_threads, "Threads the kernels use.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Set the threads the kernels use.");
  m.attr("max_threads") = kMaxThreads;  // set_num_threads' and FASTRNN_NUM_THREADS' bound
  m.def("num_threads_env_ignored", &num_threads_env_ignored,
        "True when FASTRNN_NUM_THREADS is set but not an integer in [1, 4096].");
  m.def("fork_limited", &fork_limited,
        "True in a forked process, where the kernels run on one thread.");
  m.def(
      "get_isa", []() { return std::string(isa_name(active_isa())); },
      "The SIMD target in use.");
  m.def(
      "set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); },
      py::arg("name"), "Select a SIMD target this CPU supports ('generic', 'avx2', 'avx512').");
  m.def(
      "supported_isas",
      []() {
        py::list l;
        for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
          if (isa_supported(isa)) l.append(isa_name(isa));
        }
        return l;
      },
      "SIMD targets compiled into this build that this CPU can run.");
}

}  // namespace fastrnn::bindings
