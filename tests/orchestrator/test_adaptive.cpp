// Adaptive sampling's loop on the master (orchestrator/adaptive.cpp) with a known landscape in
// place of the workers: the budget is kept, and cost_aware buys its measurements for a fraction
// of the seconds while the grid's prediction stays close.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/synthetic.hpp"
#include "orchestrator/adaptive.hpp"
#include "space/spec.hpp"

using namespace dnnscape;

namespace {

struct Outcome {
  std::int64_t measured = 0;
  std::string cost;                // the sampler's measure_cost() at the end
  std::vector<std::string> picks;  // config_ids after the initial ones, in order
  double seconds = 0;              // measuring time of what was measured
  double median_ape = 0;           // of /predicted against the formula, over the whole grid
  std::size_t batches = 0;         // calls of the measure callback
};

// Measuring a config takes the spec's predicted time of its steps plus `ns_per_byte` of its
// footprint (allocating and filling its tensors); with `record_wall` the records say so
// (/runs/wall_s), and cost_aware can calibrate its cost on them.
Outcome sweep(bool cost_aware, double ns_per_byte = 0, bool record_wall = false) {
  const auto spec = space::parse_spec(std::string(R"(name: adaptive-unit
families:
  fc:
    layers: [1, 2, 4, 8]
    nodes:  {log2: [64, 2048]}
    input:  [1024]
    output: [128]
    batch:  {log2: [16, 4096]}
knobs: {mode: [training]}
measure: {warmup_s: 0.05, min_reps: 3, max_reps: 30, target_ci: 0.03, max_time_s: 1.5}
sampling: {adaptive: 48, initial: 12, seed: 3, cost_aware: )") +
                                          (cost_aware ? "true}\n" : "false}\n"),
                                      "adaptive-unit.yaml");
  REQUIRE(spec.sampling.cost_aware == cost_aware);
  worker::Peaks peaks;
  peaks.gflops_f32 = 200;
  peaks.mem_bandwidth_gbs = 20;
  const auto planned = orchestrator::plan_configs(spec, peaks);
  REQUIRE(planned.size() == 4 * 6 * 9);
  orchestrator::AdaptiveSampler sampler(spec, model::synthetic::system(), planned, {}, {});
  Outcome out;
  sampler.run(
      [&](const std::vector<orchestrator::PlannedConfig>& batch) {
        ++out.batches;
        if (out.batches > 1)
          for (const auto& p : batch) out.picks.push_back(p.config_id);
        for (const auto& p : batch) {
          const double t = model::synthetic::fc_time_s(orchestrator::point_of(p));
          store::RunRecord r;
          r.config = p.config;
          r.config_id = p.config_id;
          r.metrics.step_time_s = t;
          const double wall =
              spec.measure.predicted_time_s(t) + ns_per_byte * 1e-9 * p.memory_bytes;
          if (record_wall) r.metrics.wall_s = wall;
          sampler.add(r);
          out.seconds += wall;
        }
        return true;
      },
      4);
  out.measured = sampler.measured();
  out.cost = sampler.measure_cost().describe();
  std::unordered_map<std::string, double> truth;
  for (const auto& p : planned)
    truth.emplace(p.config_id, model::synthetic::fc_time_s(orchestrator::point_of(p)));
  std::vector<double> ape;
  for (const auto& row : sampler.predict_grid()) {
    const double t = truth.at(row.config.config_id());
    ape.push_back(std::abs(row.predicted - t) / t);
  }
  REQUIRE(ape.size() == planned.size());
  std::nth_element(ape.begin(), ape.begin() + static_cast<std::ptrdiff_t>(ape.size() / 2),
                   ape.end());
  out.median_ape = ape[ape.size() / 2];
  return out;
}

}  // namespace

TEST_CASE("cost_aware measures the same number of configs in a fraction of the time") {
  const Outcome plain = sweep(false);
  const Outcome cheap = sweep(true);
  CHECK(plain.measured == 48);
  CHECK(cheap.measured == 48);
  CHECK(plain.batches == cheap.batches);
  MESSAGE("predicted measuring time: " << plain.seconds << " s plain, " << cheap.seconds
                                       << " s cost_aware; median error " << plain.median_ape
                                       << " / " << cheap.median_ape);
  CHECK(cheap.seconds < 0.5 * plain.seconds);
  CHECK(plain.median_ape < 0.1);
  CHECK(cheap.median_ape < 0.1);
}

TEST_CASE("cost_aware calibrates its cost on the recorded wall time of what it measured") {
  // Measuring costs 40 ns per byte of footprint on top of the steps, which the spec's settings
  // do not know; told by the records' wall time, cost_aware learns it and picks by it.
  const Outcome blind = sweep(true, 40, false);
  const Outcome told = sweep(true, 40, true);
  CHECK(told.measured == 48);
  MESSAGE("measuring time: " << blind.seconds << " s uncalibrated, " << told.seconds
                             << " s calibrated; median error " << blind.median_ape << " / "
                             << told.median_ape << "; " << told.cost);
  CHECK(blind.cost.find("uncalibrated") != std::string::npos);
  CHECK(
      told.cost.find("wall_s = 1.00 x steps + 40.00 ns/byte x footprint + 0.0 ms (from 48 rows)") !=
      std::string::npos);
  CHECK(told.picks.size() == blind.picks.size());
  CHECK(told.picks != blind.picks);
  CHECK(told.median_ape < 0.1);
}
