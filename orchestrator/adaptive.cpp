#include "orchestrator/adaptive.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <unordered_map>

#include "space/grid.hpp"

namespace dnnscape::orchestrator {

model::Point point_of(const PlannedConfig& p) {
  model::Point pt;
  pt.config = p.config;
  pt.flops = p.flops;
  pt.bytes = p.bytes;
  pt.params = p.params;
  pt.memory_bytes = p.memory_bytes;
  return pt;
}

AdaptiveSampler::AdaptiveSampler(const space::Spec& spec, const model::System& system,
                                 std::vector<PlannedConfig> planned,
                                 const std::vector<std::string>& recorded,
                                 std::vector<model::Point> points)
    : spec_(spec), system_(system), planned_(std::move(planned)), points_(std::move(points)) {
  std::sort(planned_.begin(), planned_.end(),
            [](const PlannedConfig& a, const PlannedConfig& b) { return a.index < b.index; });
  measured_flag_.assign(planned_.size(), 0);
  std::unordered_map<std::string, std::size_t> pos;
  for (std::size_t i = 0; i < planned_.size(); ++i) pos.emplace(planned_[i].config_id, i);
  for (const auto& id : recorded) {
    if (auto it = pos.find(id); it != pos.end() && measured_flag_[it->second] == 0) {
      measured_flag_[it->second] = 1;
      ++measured_;
    }
  }
}

std::int64_t AdaptiveSampler::to_measure() const {
  return std::max<std::int64_t>(spec_.sampling.count - measured_, 0);
}

void AdaptiveSampler::add(const store::RunRecord& record) {
  for (std::size_t i = 0; i < planned_.size(); ++i) {
    if (planned_[i].config_id != record.config_id) continue;
    if (measured_flag_[i] == 0) {
      measured_flag_[i] = 1;
      ++measured_;
    }
    const double t = record.metrics.step_time_s;
    if (record.status == store::status::ok && std::isfinite(t) && t > 0) {
      model::Point p = point_of(planned_[i]);
      p.value = t;
      p.wall_s = record.metrics.wall_s;
      points_.push_back(std::move(p));
    }
    return;
  }
}

model::MeasureCost AdaptiveSampler::measure_cost() const {
  return {spec_.measure, points_};
}

std::vector<model::Panel> AdaptiveSampler::fit() const {
  std::vector<model::Panel> panels;
  for (auto family : {space::Family::fc, space::Family::cnn, space::Family::rnn}) {
    std::size_t n = 0;
    for (const auto& p : points_) n += p.config.family == family ? 1 : 0;
    if (n < 4) continue;
    model::FitOptions o;
    o.seed = spec_.sampling.seed + 1;
    panels.push_back(model::Panel::fit(system_, family, points_, o));
  }
  return panels;
}

std::vector<PlannedConfig> AdaptiveSampler::next_batch(std::size_t k) const {
  const auto panels = fit();
  // The unmeasured candidates per family; k is shared out in proportion to them.
  std::vector<std::vector<std::size_t>> idx(3);
  for (std::size_t i = 0; i < planned_.size(); ++i) {
    const auto& p = planned_[i];
    if (measured_flag_[i] != 0 || !p.skip_reason.empty()) continue;
    if (!std::isfinite(p.flops) || !std::isfinite(p.bytes) || !std::isfinite(p.params)) continue;
    idx[static_cast<std::size_t>(p.config.family)].push_back(i);
  }
  std::vector<std::uint64_t> sizes;
  std::uint64_t total = 0;
  for (const auto& v : idx) {
    sizes.push_back(v.size());
    total += v.size();
  }
  const auto share = space::split_proportionally(std::min<std::uint64_t>(k, total), sizes);
  // The price of measuring depends on the machine, not the family: one fit for the batch.
  std::optional<model::MeasureCost> seconds;
  if (spec_.sampling.cost_aware) seconds = measure_cost();
  std::vector<PlannedConfig> batch;
  for (std::size_t f = 0; f < idx.size(); ++f) {
    if (share[f] == 0) continue;
    const auto family = static_cast<space::Family>(f);
    std::vector<model::Point> pts;
    for (auto i : idx[f]) pts.push_back(point_of(planned_[i]));
    const auto panel = std::find_if(panels.begin(), panels.end(),
                                    [&](const model::Panel& m) { return m.family() == family; });
    const auto seed = spec_.sampling.seed * 1000003 + static_cast<std::uint64_t>(measured_) + f;
    const model::Panel* m = panel == panels.end() ? nullptr : &*panel;
    // cost_aware: a candidate's cost is the predicted wall time of measuring it: the model's
    // predicted step time through the spec's measurement settings, calibrated on what measuring
    // the rows so far took (MeasureCost).
    const auto cost = spec_.sampling.cost_aware && m != nullptr ? seconds->prices(*m, pts)
                                                                : std::vector<double>{};
    for (auto j : model::choose_batch(m, pts, static_cast<std::size_t>(share[f]), seed,
                                      model::Selection::variance_reduction, cost))
      batch.push_back(planned_[idx[f][j]]);
  }
  return batch;
}

void AdaptiveSampler::run(const std::function<bool(const std::vector<PlannedConfig>&)>& measure,
                          std::size_t batch_min) {
  // Round 0: the initial space-filling configs that are not measured yet.
  std::unordered_map<std::string, std::size_t> pos;
  for (std::size_t i = 0; i < planned_.size(); ++i) pos.emplace(planned_[i].config_id, i);
  std::vector<PlannedConfig> first;
  for (const auto& c : spec_.initial) {
    const auto i = pos.at(c.config_id());
    if (measured_flag_[i] == 0 && planned_[i].skip_reason.empty() &&
        static_cast<std::int64_t>(first.size()) < to_measure())
      first.push_back(planned_[i]);
  }
  if (!measure(first)) return;
  // Then refits between batches of at least 2 x workers (and about a tenth of the budget, so
  // that a sweep refits some ten times, not once per config).
  const auto step = static_cast<std::size_t>(
      std::max<std::int64_t>((spec_.sampling.count - spec_.sampling.initial + 9) / 10, 1));
  while (to_measure() > 0) {
    const std::size_t k =
        std::min<std::size_t>(std::max(batch_min, step), static_cast<std::size_t>(to_measure()));
    const auto batch = next_batch(k);
    if (batch.empty()) return;  // no candidate left
    if (!measure(batch)) return;
  }
}

std::vector<store::PredictedRow> AdaptiveSampler::predict_grid() const {
  const auto panels = fit();
  std::vector<std::pair<std::size_t, store::PredictedRow>> rows;  // spec order
  for (const auto& panel : panels) {
    std::vector<model::Point> pts;
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < planned_.size(); ++i) {
      const auto& p = planned_[i];
      if (p.config.family != panel.family()) continue;
      if (!std::isfinite(p.flops) || !std::isfinite(p.bytes) || !std::isfinite(p.params) ||
          p.flops <= 0 || p.bytes <= 0 || p.params <= 0)
        continue;
      pts.push_back(point_of(p));
      idx.push_back(i);
    }
    const auto pr = panel.predict(pts);
    for (std::size_t j = 0; j < pr.size(); ++j) {
      store::PredictedRow r;
      r.config = planned_[idx[j]].config;
      r.predicted = pr[j].value;
      r.lower_90 = pr[j].lower;
      r.upper_90 = pr[j].upper;
      r.extrapolated = pr[j].extrapolated;
      r.measured = measured_flag_[idx[j]] != 0;
      rows.emplace_back(idx[j], std::move(r));
    }
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<store::PredictedRow> out;
  out.reserve(rows.size());
  for (auto& [i, r] : rows) out.push_back(std::move(r));
  return out;
}

std::string AdaptiveSampler::model_summary() const {
  nlohmann::json j = {{"schema", model::kModelSchema},
                      {"metric", "step_time_s"},
                      {"ok_rows", points_.size()},
                      {"measured", measured_},
                      {"method", "log-linear roofline trend + Matern-5/2 ARD GP (docs/model.md)"}};
  return j.dump();
}

}  // namespace dnnscape::orchestrator
