#include "model/cost.hpp"

#include <fmt/format.h>

#include <cmath>

#include "model/nnls.hpp"

namespace dnnscape::model {

MeasureCost::MeasureCost(const space::MeasureSettings& settings, const std::vector<Point>& measured)
    : settings_(settings) {
  std::vector<std::vector<double>> terms;
  std::vector<double> wall;
  for (const auto& p : measured) {
    if (!std::isfinite(p.value) || p.value <= 0 || !std::isfinite(p.wall_s) || p.wall_s <= 0 ||
        !std::isfinite(p.memory_bytes) || p.memory_bytes < 0)
      continue;
    terms.push_back({settings_.predicted_time_s(p.value), p.memory_bytes, 1.0});
    wall.push_back(p.wall_s);
  }
  if (wall.size() < kMinRows) return;
  const auto x = nnls_relative(terms, wall);
  if (x.empty()) return;
  a_ = x[0];
  b_ = x[1];
  c_ = x[2];
  rows_ = wall.size();
}

double MeasureCost::operator()(double step_s, double memory_bytes) const {
  const double mem = std::isfinite(memory_bytes) && memory_bytes > 0 ? memory_bytes : 0.0;
  const double v = a_ * settings_.predicted_time_s(step_s) + b_ * mem + c_;
  // A fit that kept the footprint term alone prices a config of unknown footprint at 0: such a
  // config, or a non-finite price, gets the settings' prediction instead.
  return std::isfinite(v) && v > 0 ? v : settings_.predicted_time_s(step_s);
}

std::vector<double> MeasureCost::prices(const Panel& panel,
                                        const std::vector<Point>& candidates) const {
  const auto pred = panel.predict(candidates);
  std::vector<double> out;
  out.reserve(pred.size());
  for (std::size_t j = 0; j < pred.size(); ++j)
    out.push_back((*this)(pred[j].value, candidates[j].memory_bytes));
  return out;
}

std::string MeasureCost::describe() const {
  if (!calibrated()) return "uncalibrated (the measure settings' prediction)";
  return fmt::format(
      "wall_s = {:.2f} x steps + {:.2f} ns/byte x footprint + {:.1f} ms (from {} rows)", a_,
      b_ * 1e9, c_ * 1e3, rows_);
}

}  // namespace dnnscape::model
