// The sweep specification (YAML): what to run, how to measure it, and the limits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "space/config.hpp"

namespace dnnscape::space {

// A spec that cannot be used. what() is exactly one line: "FILE:LINE:COL: message naming the key".
class SpecError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MeasureSettings {
  double warmup_s = 0.2;
  std::int64_t min_reps = 5;
  std::int64_t max_reps = 200;
  double target_ci = 0.02;  // half-width of the 95% CI of the median, relative to the median
  double max_time_s = 20;

  // Predicted wall time of measuring one config whose step takes `step_s`: warm-up, the
  // repetitions, the build and the profiled pass, bounded by these settings. Orders the work,
  // feeds `plan`, the ETA and cost-aware adaptive sampling.
  [[nodiscard]] double predicted_time_s(double step_s) const;
};

struct Limits {
  double memory_fraction = 0.7;  // of available memory; bigger predicted footprints are skipped
  double timeout_s = 300;
};

struct Sampling {
  enum class Kind { grid, random, sobol, adaptive };
  Kind kind = Kind::grid;
  std::int64_t count = 0;    // random / sobol: configs drawn; adaptive: configs measured in all
  std::int64_t initial = 0;  // adaptive: space-filling (Sobol) configs measured before the model
  std::uint64_t seed = 0;
  // adaptive: pick what teaches the most per predicted second of measuring, not per config.
  bool cost_aware = false;
};

struct Spec {
  std::string name;
  std::filesystem::path path;
  std::string yaml_text;  // the file as read, stored in results for provenance
  std::string sha256;     // sha256_hex(yaml_text)
  Sampling sampling;
  MeasureSettings measure;
  Limits limits;
  std::vector<Config> configs;  // expanded, sampled, de-duplicated; order = spec order
                                // (adaptive: the full grid, the candidates)
  std::vector<Config> initial;  // adaptive: the `initial` Sobol configs, a subset of configs
};

// Reads, validates and expands a spec. Throws SpecError (one line, FILE:LINE:COL) on any problem;
// std::runtime_error if the file cannot be read.
Spec load_spec(const std::filesystem::path& path);
// Same, from text; `name_for_errors` stands in for FILE in messages.
Spec parse_spec(const std::string& yaml_text, const std::string& name_for_errors);

}  // namespace dnnscape::space
