// dnnscape-executor: runs configs for one worker, isolated in its own process (no MPI here).
// Protocol on stdin/stdout, one JSON document per line: first the RunContext, then configs; each
// config is answered with one RunRecord line, in order (the supervisor may queue several configs
// ahead). EOF on stdin ends it. oneDNN and OpenMP read their start-up environment
// (ONEDNN_MAX_CPU_ISA, OMP_*) once, which is why each setting gets its own process.
//
// Memory: the address space is limited (RLIMIT_AS) to what the process maps at start plus
// limits.memory_fraction of the available memory, so a config whose real footprint exceeds what
// the memory guard predicted fails with bad_alloc / oneDNN out_of_memory (status `failed`,
// "out of memory ...") instead of dragging the node into the kernel's OOM killer.
//
// Test and benchmark hooks (never active unless set):
//   DNNSCAPE_EXECUTOR_SYNTHETIC=noop   answer every config at once with an `ok` record that
//                                      measured nothing (message says so): dispatch benchmarks.
//   DNNSCAPE_EXECUTOR_SYNTHETIC=sleep  sleep `batch` milliseconds per config, then as noop, with
//                                      step_time_s = the sleep: load-balance benchmarks.
//   DNNSCAPE_EXECUTOR_MEMORY_LIMIT=B   address-space budget of B bytes instead of
//                                      memory_fraction x available (out-of-memory tests).
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <xmmintrin.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "worker/executor.hpp"
#include "worker/sysinfo.hpp"

namespace {

using dnnscape::worker::RunContext;

// Virtual memory this process maps now (VmSize), bytes.
double mapped_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmSize:") {
      double kb = 0;
      in >> kb;
      return kb * 1024.0;
    }
    in.ignore(4096, '\n');
  }
  return 0;
}

void limit_address_space(const RunContext& ctx) {
  double budget = ctx.limits.memory_fraction * dnnscape::worker::available_memory_bytes();
  if (const char* v = std::getenv("DNNSCAPE_EXECUTOR_MEMORY_LIMIT"); v != nullptr && *v != '\0')
    budget = std::strtod(v, nullptr);
  if (!(budget > 0)) return;
  // Thread stacks and allocator arenas are reserved lazily; leave them room besides the budget.
  const double limit = mapped_bytes() + budget + 1073741824.0;
  rlimit rl{};
  if (getrlimit(RLIMIT_AS, &rl) != 0) return;
  const auto want = static_cast<rlim_t>(limit);
  if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) return;
  rl.rlim_cur = want;
  setrlimit(RLIMIT_AS, &rl);
}

enum class Synthetic { none, noop, sleep };

Synthetic synthetic_mode() {
  const char* v = std::getenv("DNNSCAPE_EXECUTOR_SYNTHETIC");
  if (v == nullptr || *v == '\0') return Synthetic::none;
  if (std::strcmp(v, "noop") == 0) return Synthetic::noop;
  if (std::strcmp(v, "sleep") == 0) return Synthetic::sleep;
  std::cerr << "dnnscape-executor: DNNSCAPE_EXECUTOR_SYNTHETIC must be noop or sleep, not '" << v
            << "'\n";
  std::exit(2);
}

dnnscape::store::RunRecord synthetic_record(const dnnscape::space::Config& config,
                                            const RunContext& ctx, Synthetic mode) {
  auto r = dnnscape::worker::predicted_record(config, ctx.peaks);
  r.status = dnnscape::store::status::ok;
  r.provenance.host = ctx.host;
  r.provenance.rank = ctx.rank;
  r.provenance.cores = ctx.cores;
  r.provenance.workers_on_host = ctx.workers_on_host;
  if (mode == Synthetic::sleep) {
    const double s = static_cast<double>(config.batch) * 1e-3;
    std::this_thread::sleep_for(std::chrono::duration<double>(s));
    r.metrics.step_time_s = s;
    r.message = "synthetic: slept batch ms (DNNSCAPE_EXECUTOR_SYNTHETIC=sleep), not a measurement";
  } else {
    r.message = "synthetic: nothing measured (DNNSCAPE_EXECUTOR_SYNTHETIC=noop)";
  }
  r.provenance.finished_utc = dnnscape::worker::utc_now_iso();
  return r;
}

}  // namespace

int main() {
  // Flush denormals to zero (FTZ) and treat denormal inputs as zero (DAZ) before any thread
  // exists, so every OpenMP and oneTBB thread inherits it: as training drives gradients small,
  // denormal arithmetic otherwise slows steps 10-20x mid-measurement. TensorFlow, which ParaDnn
  // ran on, does the same in its threads.
  _mm_setcsr(_mm_getcsr() | 0x8040U);
  // An executor whose supervisor died (its rank killed with the whole job) has no one to report
  // to: it goes too, instead of measuring on for minutes.
  const pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) return 0;
  std::ios::sync_with_stdio(false);
  const Synthetic synthetic = synthetic_mode();
  std::string line;
  if (!std::getline(std::cin, line)) return 0;
  RunContext ctx;
  try {
    ctx = dnnscape::worker::context_from_json(nlohmann::json::parse(line));
  } catch (const std::exception& e) {
    std::cerr << "dnnscape-executor: bad context: " << e.what() << '\n';
    return 2;
  }
  limit_address_space(ctx);
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    try {
      const auto config = dnnscape::worker::config_from_json(nlohmann::json::parse(line));
      const auto record = synthetic == Synthetic::none ? dnnscape::worker::run_config(config, ctx)
                                                       : synthetic_record(config, ctx, synthetic);
      // Flushed per record: the supervisor times each config from the previous record.
      std::cout << dnnscape::worker::to_json(record).dump() << '\n' << std::flush;
    } catch (const std::bad_alloc&) {
      return 3;  // the supervisor records "out of memory"
    } catch (const std::exception& e) {
      std::cerr << "dnnscape-executor: " << e.what() << '\n';
      return 2;
    }
  }
  return 0;
}
