// Runs and measures one config: the memory guard, model build, timed repetitions, the profiled
// pass, and the metrics of the row. Used in-process and by the `dnnscape-executor` program.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "space/spec.hpp"
#include "store/record.hpp"
#include "worker/peak.hpp"

namespace dnnscape::worker {

// Inference rows ask for at least this many repetitions (time allowing), so that latency_p99_s
// is an order statistic rather than an interpolation.
inline constexpr std::int64_t kLatencyReps = 100;

struct RunContext {
  space::MeasureSettings measure;
  space::Limits limits;
  Peaks peaks;
  std::string host;
  std::int64_t rank = 0;
  std::string cores;  // CPU list this executor is pinned to ("" = not pinned)
  std::int64_t workers_on_host = 1;
  bool profile = true;  // run the per-op profiled pass after the timed repetitions
};

// Never throws for a config's own failure: an unbuildable config is `skipped`, a oneDNN or
// allocation error is `failed`, both with a message.
store::RunRecord run_config(const space::Config& config, const RunContext& ctx);

// A record with everything known before running: ids, predicted counts, the cost-model time.
store::RunRecord predicted_record(const space::Config& config, const Peaks& peaks);

// Why this config would not run here (memory guard, missing CPU feature), or "" if it can.
std::string skip_reason(const space::Config& config, const space::Limits& limits);

// JSON forms used on the pipe between a worker and its executor, and over MPI.
nlohmann::json to_json(const space::Config& c);
space::Config config_from_json(const nlohmann::json& j);
nlohmann::json to_json(const store::RunRecord& r);
store::RunRecord record_from_json(const nlohmann::json& j);
nlohmann::json to_json(const RunContext& c);
RunContext context_from_json(const nlohmann::json& j);

}  // namespace dnnscape::worker
