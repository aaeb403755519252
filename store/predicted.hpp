// The /predicted group of a results file: a performance model's prediction of every config of
// the spec's grid (adaptive sampling writes it; docs/results-schema.md describes it).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "space/config.hpp"

namespace dnnscape::store {

struct PredictedRow {
  space::Config config;
  double predicted = 0;  // the model's median of the metric
  double lower_90 = 0;   // 90% interval of a measurement
  double upper_90 = 0;
  bool extrapolated = false;  // outside the measured range of some parameter
  bool measured = false;      // /runs holds a row of this config
};

// Replaces /predicted of a results file that no live writer holds (call after the writer closed).
// `metric` names what was predicted (group attribute), `model_json` is a short description.
void write_predicted(const std::filesystem::path& path, const std::string& metric,
                     const std::string& model_json, const std::vector<PredictedRow>& rows);

}  // namespace dnnscape::store
