// Is system (or knob setting) B better than A? Configs are matched on their parameters and
// software knobs, speedups summarized per family (box plots, geometric mean with a bootstrap
// interval), and the verdict says where B wins as a short rule on the parameters.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "analysis/frame.hpp"
#include "analysis/stats.hpp"

namespace dnnscape::analysis {

struct CompareOptions {
  std::vector<std::filesystem::path> inputs;  // A B [C ...]: each later file against A
  std::string by;                             // or: a knob inside one file (--by dtype)
  std::string base;                           // --by: the baseline level (default: first level)
  std::string metric = "step_time_s";         // ratio oriented so that > 1 means B is better
  int bootstrap = 1000;
  int depth = 2;  // depth of the decision tree behind the rule
  // A config whose speedup lies within [1/(1+t), 1+t] is a tie even when the step-time CIs do
  // not overlap: those CIs come from within one sweep, and two sweeps of one spec differ by
  // more (docs/analysis.md). 0: the CIs alone decide.
  double tie_within = 0;
  std::uint64_t seed = 1;
  std::string where;
  std::filesystem::path out_dir;  // empty: compute only
};

struct FamilySpeedup {
  std::string family;
  BoxStats box;
  double geomean = 0;
  std::size_t losses = 0;  // speedup < 1
};

struct Comparison {
  std::string a, b;  // labels: file stems or "dtype=f32"
  std::size_t matched = 0, only_a = 0, only_b = 0, duplicates = 0;
  std::vector<std::string> only_a_ids, only_b_ids;  // config_ids (or labels) of the mismatches
  double geomean = 0, geomean_low = 0, geomean_high = 0;
  double min = 0, median = 0, max = 0;
  std::size_t losses = 0;             // speedup < 1
  std::size_t wins_beyond_noise = 0;  // B's step-time CI entirely below A's (and beyond the band)
  std::size_t losses_beyond_noise = 0;
  bool noise_checked = false;  // both files have step-time CIs
  std::vector<FamilySpeedup> families;
  std::string verdict;  // strictly better | conditionally better | no better
  TreeRule rule;        // where B wins (conditionally better)
  std::string finding;
};

struct CompareResult {
  std::string metric;
  std::vector<Comparison> comparisons;
  std::vector<std::filesystem::path> files;
  std::string finding;
  [[nodiscard]] std::string json() const;
};

// Rows of a and b (frame row indices) that hold the same configuration: equal family, parameters
// and software knobs over the key columns both files have. Duplicates of a key are ignored.
struct ConfigMatch {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> pairs;
  std::vector<std::uint32_t> only_a, only_b;
  std::size_t duplicates = 0;
};
ConfigMatch match_configs(const Frame& a, const Frame& b);
// The columns that identify a configuration (load them to match).
std::vector<std::string> config_key_columns();

// Features of the decision tree behind a rule, over the given frame rows: the log2 of each numeric
// parameter that is positive in every row and varies (threads too), and family, text parameters
// and the other knobs as `name = level` indicators. `skip_knob` (e.g. the --by knob) is left out.
std::vector<TreeFeature> rule_features(const Frame& frame, const std::vector<std::uint32_t>& rows,
                                       std::string_view skip_knob = {});

CompareResult compare(const CompareOptions& options);
// On loaded frames (options.inputs ignored; one frame with options.by, or two or more).
CompareResult compare(const std::vector<Frame>& frames, const CompareOptions& options);
std::vector<std::string> compare_columns(const CompareOptions& options);

}  // namespace dnnscape::analysis
