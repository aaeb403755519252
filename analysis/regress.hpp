// Which parameter matters, and by how much more than another: OLS of a metric on the log2 of
// the parameters with standardized (z-scored) features and metric (ParaDnn's analysis, with
// confidence intervals, cross-validated fit and bootstrap intervals of importance ratios).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/frame.hpp"

namespace dnnscape::analysis {

struct RegressOptions {
  std::vector<std::filesystem::path> inputs;
  std::string metric = "flops_utilization";
  bool log_metric = false;         // regress log(metric) instead of the metric
  std::vector<std::string> knobs;  // knobs entered as indicator variables
  bool interactions = false;       // add every pairwise product of the main features
  std::string by = "family";       // one regression per: family | system | none (pooled)
  int folds = 5;                   // k of the k-fold cross-validated R²
  int bootstrap = 1000;            // bootstrap replicates for the importance ratios
  std::uint64_t seed = 1;
  std::string where;
  std::filesystem::path out_dir;  // empty: compute only, write nothing
};

struct RegressTerm {
  std::string name;  // "log2 batch", "cell=lstm", "log2 batch:log2 nodes"
  double coef = 0, se = 0, t = 0, p = 0, ci_low = 0, ci_high = 0;
};

// "a is ratio times more important than b": |coef a| / |coef b| with a bootstrap interval.
struct Importance {
  std::string a, b;
  double ratio = 0, low = 0, high = 0;
};

struct RegressPanel {
  std::string group;               // "host/fc", "fc", "host" or "all"
  std::size_t n = 0;               // rows used
  std::size_t dropped_rows = 0;    // rows without a usable metric
  std::vector<RegressTerm> terms;  // sorted by |coef|, largest first
  double intercept = 0;
  double r2 = 0, adj_r2 = 0, cv_r2 = 0;
  int df_resid = 0;
  std::vector<std::string> left_out;  // "input (constant)", "vocab (n/a for some rows)", ...
  std::vector<Importance> ranking;    // consecutive pairs of the sorted terms
  std::string finding;
};

struct RegressResult {
  std::string metric;
  std::vector<RegressPanel> panels;
  std::vector<std::string> not_fitted;  // panels that could not be fitted, with the reason
  std::vector<std::filesystem::path> files;
  std::string finding;
  [[nodiscard]] std::string json() const;
};

RegressResult regress(const RegressOptions& options);
// On already loaded frames (the report loads each file once); options.inputs is ignored.
RegressResult regress(const std::vector<Frame>& frames, const RegressOptions& options);
// The columns regress reads, so callers can load them once.
std::vector<std::string> regress_columns(const RegressOptions& options);

}  // namespace dnnscape::analysis
