// What measuring a config costs in wall seconds, learned from the measured rows' /runs/wall_s.
// Cost-aware adaptive sampling ranks candidates by what they teach per second of this.
#pragma once

#include <string>
#include <vector>

#include "model/model.hpp"
#include "space/spec.hpp"

namespace dnnscape::model {

// wall_s = a * settings.predicted_time_s(step) + b * memory_bytes + c, with a, b, c >= 0 fitted
// to the measured rows (relative error, nnls_relative). The settings' prediction counts the
// steps (warm-up, repetitions, build and profiled pass); what it leaves out grows with the
// config's footprint (allocating and filling its tensors, creating its primitives; on the
// development VM the steps are 70% of an FC sweep's wall time, b is 1.7-3.4 ns per byte).
// Uncalibrated (fewer than kMinRows rows with a finite wall_s and footprint, or no feasible
// fit): a = 1, b = c = 0, the settings' prediction alone.
class MeasureCost {
 public:
  static constexpr std::size_t kMinRows = 4;

  explicit MeasureCost(const space::MeasureSettings& settings) : settings_(settings) {}
  // Fitted on the points with a finite value (step time), wall_s and memory_bytes.
  MeasureCost(const space::MeasureSettings& settings, const std::vector<Point>& measured);

  // Predicted seconds of measuring a config whose step takes step_s and whose footprint is
  // memory_bytes (NaN: counted as 0).
  [[nodiscard]] double operator()(double step_s, double memory_bytes) const;
  // The price of each candidate: its step time as `panel` predicts it, and its footprint.
  [[nodiscard]] std::vector<double> prices(const Panel& panel,
                                           const std::vector<Point>& candidates) const;
  [[nodiscard]] bool calibrated() const { return rows_ > 0; }
  [[nodiscard]] std::size_t rows() const { return rows_; }
  // "wall_s = 1.31 x steps + 5.4 ns/byte x footprint + 8.6 ms (from 96 rows)", or "uncalibrated".
  [[nodiscard]] std::string describe() const;

 private:
  space::MeasureSettings settings_;
  double a_ = 1, b_ = 0, c_ = 0;
  std::size_t rows_ = 0;  // the fit's rows (0: uncalibrated)
};

}  // namespace dnnscape::model
