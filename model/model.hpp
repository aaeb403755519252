// A predictive performance model of a measured landscape: per (system, family) panel, a
// roofline-anchored log-linear trend plus a Gaussian process on log2 features, predicting the log
// of a metric with a 90% interval. docs/model.md describes the method and the file format.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/gp_hyper.hpp"
#include "space/config.hpp"

namespace dnnscape::model {

// Bad input (unreadable or wrong model file, unknown parameter, too few rows): one line, exit 2.
class ModelError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

inline constexpr const char* kModelSchema = "dnnscape-model/1";
inline constexpr double kZ90 = 1.6448536269514722;  // two-sided 90%: the 95th normal quantile

// How adaptive sampling ranks the unmeasured candidates. Both work on the predictive variance
// of the log metric, i.e. on uncertainty relative to the predicted value.
enum class Selection {
  // The candidate whose measurement removes the most predictive variance summed over all the
  // candidates (integrated variance reduction, "ALC": Cohn 1996; Seo et al. 2000). The sweep's
  // rule: it minimises the expected squared log error over the grid.
  variance_reduction,
  // The candidate with the largest predictive variance itself ("ALM", MacKay 1992): measures the
  // corners of the grid first. bench/bench_model compares it.
  max_sd,
};

// One config with its cost-model counts and, for training, the measured metric.
struct Point {
  space::Config config;
  double flops = std::numeric_limits<double>::quiet_NaN();  // per step
  double bytes = std::numeric_limits<double>::quiet_NaN();  // compulsory traffic per step
  double params = std::numeric_limits<double>::quiet_NaN();
  double value = std::numeric_limits<double>::quiet_NaN();  // measured metric (> 0)
  // What measuring it costs (MeasureCost): its footprint (measured, or the cost model's for a
  // candidate) and, when measured, the seconds measuring it took (/runs/wall_s).
  double memory_bytes = std::numeric_limits<double>::quiet_NaN();
  double wall_s = std::numeric_limits<double>::quiet_NaN();
};

// The ceilings that turn counts into seconds (the /system attributes of a results file).
struct System {
  std::string name;  // hostname
  double peak_gflops_f32 = std::numeric_limits<double>::quiet_NaN();
  double peak_gflops_bf16 = std::numeric_limits<double>::quiet_NaN();
  double mem_bandwidth_gbs = std::numeric_limits<double>::quiet_NaN();
};

struct Prediction {
  double value = 0;  // exp(mean of log): the predicted median
  double lower = 0;  // 90% interval of a new measurement
  double upper = 0;
  double log_sd = 0;  // predictive standard deviation of the log metric
  bool extrapolated = false;
  std::string why;  // extrapolated: the first parameter outside the measured range
};

struct FitOptions {
  std::size_t max_gp_points = 2000;    // larger panels are subsampled (seeded)
  std::size_t max_hyper_points = 400;  // points of the marginal-likelihood search
  int max_evals = 120;
  std::uint64_t seed = 1;
  double outlier_z = 4;  // leave-one-out z beyond which a row is left out of the GP (0: never)
  // The GP's noise variance log-linear in log2 roofline_s (the trend's feature) instead of one
  // value for the whole panel.
  bool noise_by_time = true;
};

// One model feature: the log2 of a parameter, an indicator of a level, or a physical quantity.
struct Feature {
  enum class Kind { log2_param, indicator, physical };
  Kind kind = Kind::log2_param;
  std::string name;         // e.g. "log2 batch", "mode=inference", "log2 compute_s"
  std::string param;        // parameter / knob / physical quantity
  std::string level;        // indicator: its level
  double mean = 0, sd = 1;  // standardization over the training points
  bool in_trend = true;     // also a column of the linear trend (else: GP input only)
};

// The model of one family on one system.
class Panel {
 public:
  static Panel fit(const System& system, space::Family family, const std::vector<Point>& points,
                   const FitOptions& options = {});
  [[nodiscard]] std::vector<Prediction> predict(const std::vector<Point>& points) const;

  // Up to k of `points` to measure next by `rule` (see Selection), each conditioned on the
  // picks before it; with `cost` (one per point, > 0) the score per unit of cost.
  // (index into points, square root of the pick's score) in pick order.
  [[nodiscard]] std::vector<std::pair<std::size_t, double>> select(
      const std::vector<Point>& points, std::size_t k,
      Selection rule = Selection::variance_reduction, const std::vector<double>& cost = {}) const;

  [[nodiscard]] nlohmann::json to_json() const;
  static Panel from_json(const nlohmann::json& j);

  // Widens the intervals of configs beyond the measured range of `parameter` by `sd_factor`
  // (>= 1) on the log scale: what the extrapolation test found they need (ExtrapolationTest::
  // sd_factor). Saved in the model file.
  void widen_extrapolation(const std::string& parameter, double sd_factor);
  [[nodiscard]] double extrapolation_sd_factor() const { return widen_factor_; }

  [[nodiscard]] const System& system() const { return system_; }
  [[nodiscard]] space::Family family() const { return family_; }
  [[nodiscard]] std::size_t rows() const { return rows_; }
  [[nodiscard]] std::size_t gp_rows() const { return y_.size(); }
  [[nodiscard]] const std::vector<Feature>& features() const { return features_; }
  [[nodiscard]] const GpHyper& hyper() const { return hyper_; }
  // Rows left out of the GP as outliers (labels).
  [[nodiscard]] const std::vector<std::string>& outliers() const { return outliers_; }
  [[nodiscard]] const std::map<std::string, std::pair<std::int64_t, std::int64_t>>& ranges() const {
    return ranges_;
  }

 private:
  void build();  // the GP posterior from x_, y_ and the hyperparameters
  // log(a compute_s + b memory_s + c): the roofline anchor the GP models the log residual of.
  [[nodiscard]] double anchor(const Point& p) const;
  [[nodiscard]] std::vector<double> feature_row(const Point& p) const;

  System system_;
  space::Family family_ = space::Family::fc;
  std::size_t rows_ = 0;
  std::vector<Feature> features_;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> ranges_;  // measured, per param
  std::map<std::string, std::vector<std::string>> levels_;               // measured, per text
  std::vector<std::vector<double>> x_;      // standardized features of the GP points
  std::vector<double> y_;                   // log metric minus the anchor, of the GP points
  std::vector<double> anchor_ = {0, 0, 1};  // a, b, c >= 0 of anchor()
  std::vector<std::string> outliers_;
  std::string widen_param_;  // widen_extrapolation()
  double widen_factor_ = 1;
  GpHyper hyper_;
  std::vector<double> beta_;
  struct Posterior;
  std::shared_ptr<const Posterior> posterior_;
};

// The next k of `candidates` to measure (indices, distinct), as adaptive sampling picks them:
// by `rule`, each pick conditioned on the picks before it as if they had been measured (so a
// batch spreads out). With `cost` (one per candidate, > 0: the seconds its measurement would
// take) a pick maximises what it teaches per second instead. Without a panel (too few rows yet)
// all k are random (seeded).
std::vector<std::size_t> choose_batch(const Panel* panel, const std::vector<Point>& candidates,
                                      std::size_t k, std::uint64_t seed,
                                      Selection rule = Selection::variance_reduction,
                                      const std::vector<double>& cost = {});

// Accuracy on held-out points: absolute percentage errors of the predicted median and coverage
// of the 90% intervals.
struct Accuracy {
  std::size_t n = 0;
  double median_ape = std::numeric_limits<double>::quiet_NaN();
  double p90_ape = std::numeric_limits<double>::quiet_NaN();
  double coverage90 = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> measured, predicted, lower, upper;  // per held-out point (input order)
  [[nodiscard]] nlohmann::json to_json() const;           // the summary, not the points
  // The same figures over the points with keep[i] != 0 (keep: one flag per point).
  [[nodiscard]] Accuracy subset(const std::vector<char>& keep) const;
};

Accuracy score(const std::vector<Point>& truth, const std::vector<Prediction>& predicted);

// k-fold cross-validation (random folds, seeded); each fold is a full fit (hyperparameters too).
// The Accuracy's per-point vectors are in the order of `points`.
Accuracy cross_validate(const System& system, space::Family family,
                        const std::vector<Point>& points, int folds,
                        const FitOptions& options = {});

struct ExtrapolationTest {
  std::string parameter;
  std::int64_t threshold = 0;  // fitted on parameter <= threshold, tested on the rest
  std::size_t train = 0;
  Accuracy accuracy;
  // Whether the test predicts `p` (its parameter is above the threshold) rather than fits on it.
  [[nodiscard]] bool tests(const Point& p) const {
    return *space::int_param(p.config, parameter) > threshold;
  }
  // The factor (>= 1) by which the predictive sd of the tested rows would have to grow for
  // their 90% intervals to cover 90% of them: the 90th percentile of |log error| / sd over
  // the 95th normal quantile, 1 when they already cover 90%.
  [[nodiscard]] double sd_factor() const;
  [[nodiscard]] nlohmann::json to_json() const;
};

// Fits on the points whose `parameter` is <= threshold and predicts the others. Without a
// threshold: 1024 for batch when the data spans it, else the median of the distinct values.
// Returns nullopt when the parameter does not vary or either side would be too small.
std::optional<ExtrapolationTest> extrapolation_test(const System& system, space::Family family,
                                                    const std::vector<Point>& points,
                                                    const std::string& parameter,
                                                    std::optional<std::int64_t> threshold = {},
                                                    const FitOptions& options = {});

// The model file: panels plus a record of what they were fitted on.
struct Model {
  std::string metric = "step_time_s";
  nlohmann::json fitted_on = nlohmann::json::object();  // files, spec sha, rows, where, accuracy
  std::vector<Panel> panels;

  // The panel for a family on a system ("" = the only / first system with that family).
  [[nodiscard]] const Panel* panel(space::Family family, const std::string& system = "") const;

  [[nodiscard]] nlohmann::json to_json() const;
  static Model from_json(const nlohmann::json& j, const std::string& name_for_errors);
  void save(const std::filesystem::path& path) const;
  // ModelError for a missing, unreadable or foreign file (one line naming it).
  static Model load(const std::filesystem::path& path);
};

// Training points of a results file: its ok rows with a positive, finite metric (restricted to
// `rows`, /runs indices, when given), and the file's system.
struct FileData {
  System system;
  std::vector<Point> points;
  std::int64_t ok_rows = 0;
  std::string spec_sha256, spec_name;
};
FileData read_points(const std::filesystem::path& path, const std::string& metric,
                     const std::vector<std::int64_t>* rows = nullptr);

}  // namespace dnnscape::model
