#include "orchestrator/adaptive.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace dnnscape::orchestrator {

model::Point point_of(const PlannedConfig& p) {
  model::Point pt;
  pt.config = p.config;
  pt.flops = p.flops;
  pt.bytes = p.bytes;
  pt.params = p.params;
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
      points_.push_back(std::move(p));
    }
    return;
  }
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
  // (score, planned index): each family's panel proposes its k most uncertain candidates.
  std::vector<std::pair<double, std::size_t>> proposals;
  for (auto family : {space::Family::fc, space::Family::cnn, space::Family::rnn}) {
    std::vector<std::size_t> idx;
    std::vector<model::Point> pts;
    for (std::size_t i = 0; i < planned_.size(); ++i) {
      const auto& p = planned_[i];
      if (measured_flag_[i] != 0 || !p.skip_reason.empty() || p.config.family != family) continue;
      if (!std::isfinite(p.flops) || !std::isfinite(p.bytes) || !std::isfinite(p.params)) continue;
      idx.push_back(i);
      pts.push_back(point_of(p));
    }
    if (idx.empty()) continue;
    const auto panel = std::find_if(panels.begin(), panels.end(),
                                    [&](const model::Panel& m) { return m.family() == family; });
    if (panel == panels.end()) {
      // Too few rows for a model: anything of this family is maximally informative.
      for (std::size_t j = 0; j < std::min(k, idx.size()); ++j)
        proposals.emplace_back(std::numeric_limits<double>::infinity(), idx[j]);
      continue;
    }
    for (const auto& [j, sd] : panel->most_uncertain(pts, k)) proposals.emplace_back(sd, idx[j]);
  }
  std::stable_sort(proposals.begin(), proposals.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<PlannedConfig> batch;
  for (std::size_t j = 0; j < std::min(k, proposals.size()); ++j)
    batch.push_back(planned_[proposals[j].second]);
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
