// Adaptive sampling on the master (spec `sampling: {adaptive: N, initial: M, seed: S}`): measure
// M space-filling configs, then batches of the candidates the performance model is least sure
// of (per predicted second of measuring with cost_aware), refitting between batches, until N are
// measured; then predict the whole grid.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/cost.hpp"
#include "model/model.hpp"
#include "orchestrator/sweep.hpp"
#include "store/predicted.hpp"
#include "store/record.hpp"

namespace dnnscape::orchestrator {

class AdaptiveSampler {
 public:
  // `planned`: every config of the spec with its counts; `recorded`: config_ids that already
  // have a row (they count towards N); `points`: the ok rows among them (training data).
  AdaptiveSampler(const space::Spec& spec, const model::System& system,
                  std::vector<PlannedConfig> planned, const std::vector<std::string>& recorded,
                  std::vector<model::Point> points);

  // A record was written: it counts towards N and, when ok, trains the model.
  void add(const store::RunRecord& record);
  // Runs rounds until N configs are measured, no candidate is left or `measure` (which runs
  // and records one batch) returns false (a stop). `batch_min` = 2 x workers.
  void run(const std::function<bool(const std::vector<PlannedConfig>&)>& measure,
           std::size_t batch_min);

  // The whole grid, predicted by a model fitted on every ok row (families without enough
  // rows are left out).
  [[nodiscard]] std::vector<store::PredictedRow> predict_grid() const;
  [[nodiscard]] std::string model_summary() const;
  [[nodiscard]] std::int64_t measured() const { return measured_; }
  [[nodiscard]] std::int64_t to_measure() const;
  // What cost_aware charges a candidate: the spec's predicted measuring time, calibrated on the
  // /runs/wall_s of the ok rows so far (model::MeasureCost).
  [[nodiscard]] model::MeasureCost measure_cost() const;

 private:
  [[nodiscard]] std::vector<model::Panel> fit() const;
  [[nodiscard]] std::vector<PlannedConfig> next_batch(std::size_t k) const;

  const space::Spec& spec_;
  model::System system_;
  std::vector<PlannedConfig> planned_;  // spec order
  std::vector<char> measured_flag_;     // per planned_
  std::vector<model::Point> points_;
  std::int64_t measured_ = 0;
};

model::Point point_of(const PlannedConfig& p);

}  // namespace dnnscape::orchestrator
