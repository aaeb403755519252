// `dnnscape model fit` and `dnnscape predict`: the performance model (model/) on results files.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "model/model.hpp"

namespace dnnscape::analysis {

struct ModelFitOptions {
  std::vector<std::filesystem::path> inputs;
  std::string metric = "step_time_s";
  std::string where;
  int folds = 5;
  std::string extrapolate = "batch";  // parameter of the extrapolation test; "none" = skip
  std::optional<std::int64_t> extrapolate_threshold;
  model::FitOptions fit;
};

struct PanelReport {
  std::string system;
  space::Family family = space::Family::fc;
  std::vector<model::Point> points;  // the panel's training rows (CV order = this order)
  model::Accuracy cv;
  std::optional<model::ExtrapolationTest> extrapolation;
  // The cross-validated accuracy of the rows the extrapolation test predicts: how well the same
  // configs are predicted from neighbours on both sides, to tell "hard to extrapolate" from
  // "hard to predict at all" (noisier configs).
  model::Accuracy cv_extrapolated_rows;
};

struct ModelFitResult {
  model::Model model;
  std::vector<PanelReport> panels;
  [[nodiscard]] std::string finding() const;
  [[nodiscard]] std::string json() const;
};

// Fits one panel per (system, family) with at least 4 rows, cross-validates it and runs the
// extrapolation test. InputError / ModelError on bad input.
ModelFitResult fit_landscape(const ModelFitOptions& options);

// Counts of a config from the cost model (FLOPs, bytes, params): supplied by the app, which may
// use the worker library (analysis does not).
using CountsFn = std::function<model::Point(const space::Config&)>;

// Runs `dnnscape model ARGS` (fit) or `dnnscape predict ARGS`; returns the exit code (0, 2 bad
// input with one line on stderr, 1 other failures).
int model_command(const std::string& cmd, const std::vector<std::string>& args,
                  const CountsFn& counts);

}  // namespace dnnscape::analysis
