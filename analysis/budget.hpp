// Latency budgets (Walle: computer vision ~30 ms, NLP 100-500 ms, feed ~500 ms): per system (file,
// or knob level inside a file), which configs meet a budget at each batch size, the largest model
// that fits, the feasible region as a rule on the parameters and a heat map of it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/stats.hpp"

namespace dnnscape::analysis {

struct BudgetOptions {
  std::vector<std::filesystem::path> inputs;  // one system per file
  std::vector<double> budgets_s;              // one section per budget and system
  int percentile = 99;                        // latency_p{50,90,99}_s
  std::vector<std::string> families;          // empty: all
  std::string by;               // a knob whose levels inside one file count as systems
  bool allow_training = false;  // training rows count, with step_time_s as their latency
  std::string x;                // heat-map x ("" = the family's main size parameter)
  std::string y = "batch";      // heat-map y
  int depth = 2;                // depth of the decision tree behind the rule
  std::string where;
  std::filesystem::path out_dir;  // empty: compute only
};

// "30ms", "0.5s", "500us" (also "500µs", "2 ms") -> seconds. Throws InputError otherwise.
double parse_budget(std::string_view text);
// Budgets of a preset: cv = 30 ms, nlp = 100 ms and 500 ms, feed = 500 ms. InputError otherwise.
std::vector<double> preset_budgets(std::string_view preset);
// Seconds -> "30ms", "500ms", "2s", "500us".
std::string format_budget(double seconds);
// The family's main size parameter: fc nodes, cnn filters, rnn embedding.
std::string main_size_parameter(std::string_view family);

// Per family and batch size: how many configs meet the budget and the largest that does.
struct BatchFit {
  std::string family;
  double batch = 0;
  std::size_t configs = 0, feasible = 0;
  double max_params = 0;          // NaN when none fits (or the file has no params column)
  std::string max_params_config;  // config_id of that config
  double max_params_latency_s = 0;
};

struct FamilyRule {
  std::string family;
  std::size_t configs = 0, feasible = 0;
  TreeRule rule;        // wins = the feasible region, loses = the infeasible one
  std::string region;   // printable feasible region: rule.wins, "every config" or "no config"
  std::string outside;  // printable infeasible region
};

struct BudgetSection {
  std::string system;  // file stem, or "stem threads=1" with --by
  double budget_s = 0;
  std::string budget;  // "30ms"
  std::size_t configs = 0, feasible = 0;
  std::size_t training_rows = 0;      // training rows used (step_time_s), --allow-training
  std::size_t training_left_out = 0;  // training rows left out (no --allow-training)
  std::size_t no_latency = 0;         // rows without a finite latency
  std::vector<FamilyRule> rules;
  std::vector<BatchFit> batches;  // family, then batch ascending
  std::string finding;
};

struct BudgetResult {
  int percentile = 99;
  std::string latency_column;           // latency_p99_s
  std::vector<BudgetSection> sections;  // system-major, then budget
  std::vector<std::filesystem::path> files;
  std::string finding;
  [[nodiscard]] std::string json() const;
};

// Throws InputError for bad options, a file without usable latencies, an unknown column.
BudgetResult budget(const BudgetOptions& options);

}  // namespace dnnscape::analysis
