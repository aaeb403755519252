// A sweep on this machine: spec -> ordered work -> runner -> results file, with resume.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "space/spec.hpp"
#include "store/record.hpp"
#include "worker/peak.hpp"

namespace dnnscape::orchestrator {

// A sweep that cannot start (spec changed, file unusable). what() is one line for the user.
class SweepError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SweepOptions {
  std::filesystem::path spec_path;
  std::filesystem::path out_path;
  bool new_file = false;      // the spec changed: keep the old file aside and start a new one
  bool retry_failed = false;  // rerun failed / crashed / timeout rows (in place)
  bool extend = false;        // the spec changed: add its new configs to the file, keep the rest
  int workers_per_node = 0;   // 0: every worker rank works, unpinned; K: K per host, pinned
  double grace_s = 60;        // after a stop request, running configs may finish this long
  bool in_process = false;    // run configs in this process instead of an executor child
  bool plain_progress = false;
  bool profile = true;
  std::string executor_path;  // "" = next to this binary
  std::string tool_version;
  std::optional<store::JobInfo> job;  // the batch job this session runs in: a row of /jobs
};

struct SweepSummary {
  std::int64_t total = 0;    // configs in the spec
  std::int64_t already = 0;  // found in the file and not rerun
  std::int64_t ran = 0;
  std::map<std::string, std::int64_t> by_status;  // of the configs run now
  double wall_s = 0;
  bool interrupted = false;
  std::filesystem::path out_path;
  std::filesystem::path moved_aside;  // with new_file: where the old file went
  bool worker_only = false;           // this rank was an MPI worker: nothing to report
  bool failed_to_start = false;       // a worker rank whose master could not start the sweep
  bool extended = false;              // --extend changed the file's spec
  int workers = 1;                    // ranks that ran configs
  double farm_wall_s = 0;             // MPI farm: first dispatch to last record
  std::int64_t farm_recorded = 0;     // MPI farm: configs recorded through it
};

// A config with the cost model's view of it.
struct PlannedConfig {
  space::Config config;
  std::size_t index = 0;  // position in spec.configs (how the farm names it on the wire)
  std::string config_id;
  double flops = 0;
  double bytes = 0;
  double params = 0;
  double memory_bytes = 0;
  double predicted_step_s = 0;
  double predicted_total_s = 0;  // the whole measurement of it
  std::string skip_reason;       // non-empty: would not run here
};

// Every config with predictions, largest predicted cost first (stable for ties).
std::vector<PlannedConfig> plan_configs(const space::Spec& spec, const worker::Peaks& peaks);

// Set from a signal handler: stop handing out work, finish the running config, flush, return.
std::atomic<bool>& stop_requested();
void install_stop_handlers();

class MpiSession;
// Rank 0 (or the only process) plans, dispatches and writes; other ranks work until told to stop.
SweepSummary run_sweep(const SweepOptions& options, const worker::Peaks& peaks,
                       const MpiSession& mpi);

// /system attributes for this host with these peaks.
store::SystemInfo system_info(const worker::Peaks& peaks);

}  // namespace dnnscape::orchestrator
