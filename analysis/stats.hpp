// Small statistics shared by the analyses: quantiles, box-plot summaries, Student t quantiles,
// the chunked bootstrap and a shallow decision tree that turns a win/lose labelling into a rule.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dnnscape::analysis {

// Linear-interpolation quantile of sorted data (Hyndman & Fan type 7, numpy's default).
double quantile_sorted(const std::vector<double>& sorted, double q);
double median(std::vector<double> v);

// Two-sided (1 - alpha) Student t critical value with df degrees of freedom (Boost.Math).
double t_critical(double df, double alpha = 0.05);
// Two-sided p value of a t statistic.
double t_p_value(double t, double df);

// Tukey box: quartiles and whiskers at the most extreme data within 1.5 IQR of the box.
struct BoxStats {
  std::size_t n = 0;
  double q1 = 0, median = 0, q3 = 0, whisker_low = 0, whisker_high = 0;
  std::size_t outliers = 0;
};
BoxStats box_stats(std::vector<double> v);

// Rows dealt at random into resampling units for the bootstrap. Up to max_units rows each row is
// its own unit (the ordinary bootstrap); beyond that rows share max_units equal-sized units, and
// resampling units approximates resampling rows (the units are i.i.d. sums of random rows) at a
// cost independent of the row count.
std::vector<std::uint32_t> bootstrap_units(std::size_t rows, std::size_t max_units,
                                           std::uint64_t seed, std::size_t* units);

// Runs fn(replicate, weights) for `reps` replicates in parallel (oneTBB); weights[u] is how many
// times unit u was drawn (multinomial, n = units). Deterministic for a seed.
void bootstrap(std::size_t units, std::size_t reps, std::uint64_t seed,
               const std::function<void(std::size_t, const std::vector<double>&)>& fn);

// Percentile interval of bootstrap replicates (NaNs ignored).
std::pair<double, double> percentile_interval(std::vector<double> reps, double level = 0.95);

// A shallow CART classification tree (Gini) on numeric features; text conditions are rendered
// with the observed values that bound each split ("batch ≥ 512", not "log2 batch > 8.5").
struct TreeFeature {
  std::string name;
  std::vector<double> values;   // per row; the split space (e.g. log2 of the parameter)
  std::vector<double> display;  // per row; what the rule prints (e.g. the parameter itself)
  bool indicator = false;       // 0/1 "name" (display name "family = cnn")
  std::string negated;          // text for value 0 of an indicator ("family ≠ cnn")
};
struct TreeRule {
  std::string wins;     // "batch ≥ 512 or nodes ≥ 2048" ("" when no leaf predicts a win)
  std::string loses;    // likewise for losses
  double accuracy = 0;  // share of rows the tree labels correctly
  int leaves = 0;
};
TreeRule fit_rule(const std::vector<TreeFeature>& features, const std::vector<char>& win,
                  int max_depth = 2, std::size_t min_leaf = 1);

}  // namespace dnnscape::analysis
