#include "model/model.hpp"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "model/gp.hpp"
#include "model/nnls.hpp"
#include "space/grid.hpp"

namespace dnnscape::model {

struct Panel::Posterior {
  Gp gp;
};

namespace {

// The text dimensions of a config: string parameters and knobs (threads as a level: 0 means
// "all cores", not a magnitude).
constexpr std::string_view kTextDims[] = {"block_fn",  "cell",    "mode",   "dtype",
                                          "algorithm", "isa_cap", "threads"};
constexpr std::string_view kPhysical[] = {"compute_s", "memory_s", "roofline_s", "params"};

std::string text_value(const space::Config& c, std::string_view dim) {
  if (const auto* s = space::string_param(c, dim)) return *s;
  if (dim == "mode") return c.knobs.mode;
  if (dim == "dtype") return c.knobs.dtype;
  if (dim == "algorithm") return c.knobs.algorithm;
  if (dim == "isa_cap") return c.knobs.isa_cap;
  return std::to_string(c.knobs.threads);
}

double peak_for(const System& s, const std::string& dtype) {
  if (dtype == "bf16" && std::isfinite(s.peak_gflops_bf16) && s.peak_gflops_bf16 > 0)
    return s.peak_gflops_bf16;
  return s.peak_gflops_f32;
}

double physical(const System& s, const Point& p, std::string_view q) {
  const double compute = p.flops / (peak_for(s, p.config.knobs.dtype) * 1e9);
  const double memory = p.bytes / (s.mem_bandwidth_gbs * 1e9);
  if (q == "compute_s") return compute;
  if (q == "memory_s") return memory;
  if (q == "roofline_s") return std::max(compute, memory);
  return p.params;
}

double raw_feature(const System& s, const Feature& f, const Point& p) {
  switch (f.kind) {
    case Feature::Kind::log2_param:
      return std::log2(static_cast<double>(*space::int_param(p.config, f.param)));
    case Feature::Kind::indicator:
      return text_value(p.config, f.param) == f.level ? 1.0 : 0.0;
    case Feature::Kind::physical:
      return std::log2(physical(s, p, f.param));
  }
  return 0;
}

std::string kind_name(Feature::Kind k) {
  switch (k) {
    case Feature::Kind::log2_param:
      return "log2_param";
    case Feature::Kind::indicator:
      return "indicator";
    case Feature::Kind::physical:
      return "physical";
  }
  return "";
}

Feature::Kind kind_from(const std::string& s) {
  if (s == "log2_param") return Feature::Kind::log2_param;
  if (s == "indicator") return Feature::Kind::indicator;
  if (s == "physical") return Feature::Kind::physical;
  throw ModelError(fmt::format("unknown feature kind '{}'", s));
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto i = static_cast<std::size_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

std::vector<std::size_t> shuffled(std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::mt19937_64 rng(seed);
  for (std::size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[space::uniform_below(rng, i)]);
  return idx;
}

// Columns of the trend basis: the intercept and one per feature in the trend.
Eigen::Index trend_columns(const std::vector<Feature>& features) {
  return 1 + std::count_if(features.begin(), features.end(),
                           [](const Feature& f) { return f.in_trend; });
}

Eigen::MatrixXd basis(const std::vector<std::vector<double>>& x,
                      const std::vector<Feature>& features) {
  Eigen::MatrixXd h(static_cast<Eigen::Index>(x.size()), trend_columns(features));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const auto r = static_cast<Eigen::Index>(i);
    h(r, 0) = 1;
    Eigen::Index c = 1;
    for (std::size_t j = 0; j < features.size(); ++j)
      if (features[j].in_trend) h(r, c++) = x[i][j];
  }
  return h;
}

Eigen::MatrixXd inputs(const std::vector<std::vector<double>>& x, std::size_t d) {
  Eigen::MatrixXd m(static_cast<Eigen::Index>(x.size()), static_cast<Eigen::Index>(d));
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t j = 0; j < d; ++j)
      m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = x[i][j];
  return m;
}

// Non-negative least squares of the relative error of a compute_s + b memory_s + c against the
// measured values (nnls_relative).
std::vector<double> fit_anchor(const System& s, const std::vector<Point>& points) {
  std::vector<std::vector<double>> terms;
  std::vector<double> target;
  for (const auto& p : points) {
    const double c = physical(s, p, "compute_s"), m = physical(s, p, "memory_s");
    if (!std::isfinite(c) || !std::isfinite(m)) return {0, 0, 1};
    terms.push_back({c, m, 1.0});
    target.push_back(p.value);
  }
  auto best = nnls_relative(terms, target);
  return best.empty() ? std::vector<double>{0, 0, 1} : best;
}

}  // namespace

double Panel::anchor(const Point& p) const {
  const double c = anchor_[0] > 0 ? anchor_[0] * physical(system_, p, "compute_s") : 0.0;
  const double m = anchor_[1] > 0 ? anchor_[1] * physical(system_, p, "memory_s") : 0.0;
  const double v = std::log(c + m + anchor_[2]);
  if (!std::isfinite(v))
    throw ModelError(fmt::format("{}: the roofline anchor is not finite (flops {}, bytes {})",
                                 p.config.label(), p.flops, p.bytes));
  return v;
}

Panel Panel::fit(const System& system, space::Family family, const std::vector<Point>& all,
                 const FitOptions& options) {
  std::vector<Point> points;
  for (const auto& p : all)
    if (p.config.family == family && std::isfinite(p.value) && p.value > 0) points.push_back(p);
  if (points.size() < 4) {
    throw ModelError(fmt::format("{} on {}: {} usable rows, a model needs at least 4",
                                 space::to_string(family), system.name, points.size()));
  }
  Panel panel;
  panel.system_ = system;
  panel.family_ = family;
  panel.rows_ = points.size();

  // Measured ranges and levels, over every usable row.
  for (auto name : space::kIntParams) {
    std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
    bool applicable = true;
    for (const auto& p : points) {
      const std::int64_t v = *space::int_param(p.config, name);
      if (v <= 0) applicable = false;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    if (applicable) panel.ranges_[std::string(name)] = {lo, hi};
  }
  for (auto dim : kTextDims) {
    std::set<std::string> levels;
    for (const auto& p : points) levels.insert(text_value(p.config, dim));
    if (levels.size() == 1 && levels.begin()->empty()) continue;  // n/a for this family
    panel.levels_[std::string(dim)] = {levels.begin(), levels.end()};
  }

  // Candidate features; those that do not vary are left out.
  std::vector<Feature> candidates;
  for (const auto& [name, range] : panel.ranges_)
    if (range.first != range.second)
      candidates.push_back({Feature::Kind::log2_param, "log2 " + name, name, "", 0, 1, true});
  for (const auto& [dim, levels] : panel.levels_)
    for (std::size_t l = 1; l < levels.size(); ++l)
      candidates.push_back(
          {Feature::Kind::indicator, dim + "=" + levels[l], dim, levels[l], 0, 1, true});
  for (auto q : kPhysical) {
    const std::string name(q);
    bool finite = true;
    for (const auto& p : points)
      finite = finite && std::isfinite(std::log2(physical(system, p, q)));
    if (finite)
      candidates.push_back({Feature::Kind::physical, "log2 " + name, name, "", 0, 1, true});
  }

  // The GP points: a seeded subsample when the panel is large (the solve is cubic).
  std::vector<std::size_t> use(points.size());
  std::iota(use.begin(), use.end(), std::size_t{0});
  if (points.size() > options.max_gp_points) {
    use = shuffled(points.size(), options.seed);
    use.resize(options.max_gp_points);
    std::sort(use.begin(), use.end());
  }
  for (auto& f : candidates) {
    double sum = 0, sq = 0;
    for (auto i : use) {
      const double v = raw_feature(system, f, points[i]);
      sum += v;
      sq += v * v;
    }
    const auto n = static_cast<double>(use.size());
    f.mean = sum / n;
    f.sd = std::sqrt(std::max(sq / n - f.mean * f.mean, 0.0));
    if (f.sd > 1e-9) panel.features_.push_back(f);
  }
  const std::size_t d = panel.features_.size();
  // The trend: the anchor's residual is linear in log2 of the roofline time alone, which keeps
  // its meaning beyond the measured range; everything else enters the GP only, which reverts to
  // the trend away from the data, so extrapolating a parameter follows physics. Not more
  // physical terms: log2 compute_s - log2 params is log2 batch (and memory_s against compute_s
  // encodes it too), so a trend in them extrapolates how utilization grew with batch inside the
  // measured range as a straight line beyond it (measured FC grid, fit batch <= 1024, predict
  // 2048-16384: 16.4% median error with all four, 8.9% with the roofline time alone, at the same
  // 7% cross-validated error; docs/model.md).
  for (auto& f : panel.features_) f.in_trend = f.param == "roofline_s";
  panel.anchor_ = fit_anchor(system, points);
  const auto build_xy = [&] {
    panel.x_.clear();
    panel.y_.clear();
    for (auto i : use) {
      panel.x_.push_back(panel.feature_row(points[i]));
      panel.y_.push_back(std::log(points[i].value) - panel.anchor(points[i]));
    }
  };
  GpFitOptions go;
  go.max_hyper_points = options.max_hyper_points;
  go.max_evals = options.max_evals;
  go.seed = options.seed;
  // Column 1 of the basis is the trend's log2 roofline_s (when it varies): how long a step is.
  if (options.noise_by_time && trend_columns(panel.features_) > 1) go.noise_column = 1;
  const auto fit_gp = [&] {
    const Eigen::MatrixXd x = inputs(panel.x_, d);
    const Eigen::MatrixXd h = basis(panel.x_, panel.features_);
    const Eigen::VectorXd y = Eigen::Map<const Eigen::VectorXd>(
        panel.y_.data(), static_cast<Eigen::Index>(panel.y_.size()));
    return d > 0 ? Gp::fit(x, h, y, go) : Gp::with_hyper(x, h, y, GpHyper{{}, 1e-6, 0.01});
  };
  build_xy();
  Gp gp = fit_gp();
  // A measurement disturbed by another process on a shared machine is far off its neighbours
  // (2-5x slower, consistently within the config): rows more than FitOptions::outlier_z
  // leave-one-out standard deviations off are left out of the GP and the fit is repeated once.
  if (options.outlier_z > 0 && use.size() >= 16) {
    const auto z = gp.loo_z();
    std::vector<std::size_t> kept;
    for (std::size_t j = 0; j < use.size(); ++j) {
      if (std::abs(z[j]) <= options.outlier_z) {
        kept.push_back(use[j]);
      } else {
        panel.outliers_.push_back(points[use[j]].config.label());
      }
    }
    if (!panel.outliers_.empty() && kept.size() >= 8) {
      use = std::move(kept);
      std::vector<Point> clean;
      for (auto i : use) clean.push_back(points[i]);
      panel.anchor_ = fit_anchor(system, clean);
      build_xy();
      gp = fit_gp();
    } else {
      panel.outliers_.clear();
    }
  }
  panel.hyper_ = gp.hyper();
  panel.beta_.assign(gp.beta().data(), gp.beta().data() + gp.beta().size());
  panel.posterior_ = std::make_shared<const Posterior>(Posterior{std::move(gp)});
  return panel;
}

void Panel::build() {
  const Eigen::MatrixXd x = inputs(x_, features_.size());
  const Eigen::MatrixXd h = basis(x_, features_);
  const Eigen::VectorXd y =
      Eigen::Map<const Eigen::VectorXd>(y_.data(), static_cast<Eigen::Index>(y_.size()));
  Gp gp = Gp::with_hyper(x, h, y, hyper_);
  beta_.assign(gp.beta().data(), gp.beta().data() + gp.beta().size());
  posterior_ = std::make_shared<const Posterior>(Posterior{std::move(gp)});
}

std::vector<double> Panel::feature_row(const Point& p) const {
  std::vector<double> row;
  row.reserve(features_.size());
  for (const auto& f : features_) {
    const double v = raw_feature(system_, f, p);
    if (!std::isfinite(v)) {
      throw ModelError(fmt::format("{}: feature '{}' is not finite (flops {}, bytes {}, params {})",
                                   p.config.label(), f.name, p.flops, p.bytes, p.params));
    }
    row.push_back((v - f.mean) / f.sd);
  }
  return row;
}

std::vector<Prediction> Panel::predict(const std::vector<Point>& points) const {
  std::vector<Prediction> out(points.size());
  std::vector<std::vector<double>> rows;
  rows.reserve(points.size());
  for (std::size_t i = 0; i < points.size(); ++i) {
    const Point& p = points[i];
    if (p.config.family != family_) {
      throw ModelError(fmt::format("{}: the model's panel is for family {}", p.config.label(),
                                   space::to_string(family_)));
    }
    rows.push_back(feature_row(p));
    auto& pr = out[i];
    for (const auto& [name, range] : ranges_) {
      const std::int64_t v = *space::int_param(p.config, name);
      if (v < range.first || v > range.second) {
        pr.extrapolated = true;
        pr.why =
            fmt::format("{}={} outside the measured [{}, {}]", name, v, range.first, range.second);
        break;
      }
    }
    if (pr.extrapolated) continue;
    for (const auto& [dim, levels] : levels_) {
      const std::string v = text_value(p.config, dim);
      if (std::find(levels.begin(), levels.end(), v) == levels.end()) {
        pr.extrapolated = true;
        pr.why = fmt::format("{}={} not measured", dim, v);
        break;
      }
    }
  }
  const auto gp = posterior_->gp.predict(inputs(rows, features_.size()), basis(rows, features_));
  for (std::size_t i = 0; i < points.size(); ++i) {
    auto& pr = out[i];
    const double mean = anchor(points[i]) + gp[i].mean;
    pr.log_sd = std::sqrt(gp[i].var);
    if (widen_factor_ > 1 && pr.extrapolated) {
      const auto range = ranges_.find(widen_param_);
      const std::int64_t v = *space::int_param(points[i].config, widen_param_);
      if (range != ranges_.end() && (v < range->second.first || v > range->second.second))
        pr.log_sd *= widen_factor_;
    }
    pr.value = std::exp(mean);
    pr.lower = std::exp(mean - kZ90 * pr.log_sd);
    pr.upper = std::exp(mean + kZ90 * pr.log_sd);
  }
  return out;
}

std::vector<std::pair<std::size_t, double>> Panel::select(const std::vector<Point>& points,
                                                          std::size_t k, Selection rule,
                                                          const std::vector<double>& cost) const {
  std::vector<std::vector<double>> rows;
  rows.reserve(points.size());
  for (const auto& p : points) rows.push_back(feature_row(p));
  return posterior_->gp.select_batch(inputs(rows, features_.size()), basis(rows, features_), k,
                                     rule == Selection::variance_reduction, cost);
}

std::vector<std::size_t> choose_batch(const Panel* panel, const std::vector<Point>& candidates,
                                      std::size_t k, std::uint64_t seed, Selection rule,
                                      const std::vector<double>& cost) {
  if (!cost.empty() && cost.size() != candidates.size())
    throw std::invalid_argument("choose_batch: one cost per candidate");
  k = std::min(k, candidates.size());
  std::vector<std::size_t> out;
  std::vector<char> taken(candidates.size(), 0);
  const auto order = shuffled(candidates.size(), seed);
  if (panel != nullptr) {
    // The selection holds a (GP rows x candidates) matrix: a large grid is scored on a seeded
    // random subset of kMaxScored candidates.
    constexpr std::size_t kMaxScored = 20000;
    std::vector<std::size_t> scored(
        order.begin(),
        order.begin() + static_cast<std::ptrdiff_t>(std::min(kMaxScored, candidates.size())));
    std::sort(scored.begin(), scored.end());
    std::vector<Point> subset;
    std::vector<double> subset_cost;
    if (scored.size() < candidates.size()) {
      for (auto i : scored) {
        subset.push_back(candidates[i]);
        if (!cost.empty()) subset_cost.push_back(cost[i]);
      }
    }
    const bool all = scored.size() == candidates.size();
    for (const auto& [j, gain] :
         panel->select(all ? candidates : subset, k, rule, all ? cost : subset_cost)) {
      const std::size_t i = scored[j];
      out.push_back(i);
      taken[i] = 1;
    }
  }
  for (auto i : order) {
    if (out.size() >= k) break;
    if (taken[i] == 0) out.push_back(i);
  }
  return out;
}

nlohmann::json Panel::to_json() const {
  nlohmann::json features = nlohmann::json::array();
  for (const auto& f : features_) {
    features.push_back({{"name", f.name},
                        {"kind", kind_name(f.kind)},
                        {"param", f.param},
                        {"level", f.level},
                        {"mean", f.mean},
                        {"sd", f.sd},
                        {"in_trend", f.in_trend}});
  }
  nlohmann::json ranges = nlohmann::json::object();
  for (const auto& [k, v] : ranges_) ranges[k] = {v.first, v.second};
  nlohmann::json hyper_json = {{"length_scales", hyper_.length_scales},
                               {"signal_var", hyper_.signal_var},
                               {"noise_var", hyper_.noise_var}};
  if (hyper_.heteroscedastic()) {
    // Absent in older files (and when the slope is 0): one noise variance for the panel.
    hyper_json["noise_slope"] = hyper_.noise_slope;
    hyper_json["noise_column"] = hyper_.noise_column;
    hyper_json["noise_range"] = {hyper_.noise_range.first, hyper_.noise_range.second};
  }
  const auto nan_null = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  };
  return {{"system",
           {{"name", system_.name},
            {"peak_gflops_f32", nan_null(system_.peak_gflops_f32)},
            {"peak_gflops_bf16", nan_null(system_.peak_gflops_bf16)},
            {"mem_bandwidth_gbs", nan_null(system_.mem_bandwidth_gbs)}}},
          {"family", space::to_string(family_)},
          {"rows", rows_},
          {"gp_rows", y_.size()},
          {"features", features},
          {"ranges", ranges},
          {"levels", levels_},
          {"kernel", "matern52_ard"},
          {"hyper", hyper_json},
          {"trend_beta", beta_},
          {"outliers", outliers_},
          {"anchor", anchor_},
          {"extrapolation_sd_factor", {{"parameter", widen_param_}, {"factor", widen_factor_}}},
          {"x", x_},
          {"y_log_minus_anchor", y_}};
}

Panel Panel::from_json(const nlohmann::json& j) {
  Panel p;
  const auto num = [](const nlohmann::json& v) {
    return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
  };
  const auto& s = j.at("system");
  p.system_.name = s.at("name").get<std::string>();
  p.system_.peak_gflops_f32 = num(s.at("peak_gflops_f32"));
  p.system_.peak_gflops_bf16 = num(s.at("peak_gflops_bf16"));
  p.system_.mem_bandwidth_gbs = num(s.at("mem_bandwidth_gbs"));
  p.family_ = space::family_from_string(j.at("family").get<std::string>());
  p.rows_ = j.at("rows").get<std::size_t>();
  for (const auto& f : j.at("features")) {
    p.features_.push_back({kind_from(f.at("kind").get<std::string>()),
                           f.at("name").get<std::string>(), f.at("param").get<std::string>(),
                           f.at("level").get<std::string>(), f.at("mean").get<double>(),
                           f.at("sd").get<double>(), f.at("in_trend").get<bool>()});
  }
  for (const auto& [k, v] : j.at("ranges").items())
    p.ranges_[k] = {v.at(0).get<std::int64_t>(), v.at(1).get<std::int64_t>()};
  p.levels_ = j.at("levels").get<std::map<std::string, std::vector<std::string>>>();
  const auto& h = j.at("hyper");
  p.hyper_.length_scales = h.at("length_scales").get<std::vector<double>>();
  p.hyper_.signal_var = h.at("signal_var").get<double>();
  p.hyper_.noise_var = h.at("noise_var").get<double>();
  if (h.contains("noise_slope")) {
    p.hyper_.noise_slope = h.at("noise_slope").get<double>();
    p.hyper_.noise_column = h.at("noise_column").get<int>();
    p.hyper_.noise_range = {h.at("noise_range").at(0).get<double>(),
                            h.at("noise_range").at(1).get<double>()};
  }
  p.x_ = j.at("x").get<std::vector<std::vector<double>>>();
  p.y_ = j.at("y_log_minus_anchor").get<std::vector<double>>();
  p.anchor_ = j.at("anchor").get<std::vector<double>>();
  p.outliers_ = j.value("outliers", std::vector<std::string>{});
  if (const auto w = j.find("extrapolation_sd_factor"); w != j.end()) {
    const double factor = w->at("factor").get<double>();
    if (factor != 1) p.widen_extrapolation(w->at("parameter").get<std::string>(), factor);
  }
  if (p.anchor_.size() != 3) throw ModelError("inconsistent panel (anchor)");
  if (p.hyper_.noise_column >= trend_columns(p.features_))
    throw ModelError("inconsistent panel (noise_column is not a column of the trend)");
  if (p.x_.size() != p.y_.size() || p.hyper_.length_scales.size() != p.features_.size())
    throw ModelError("inconsistent panel (x, y_log, features and length_scales disagree)");
  for (const auto& row : p.x_)
    if (row.size() != p.features_.size()) throw ModelError("inconsistent panel (x rows)");
  p.build();
  return p;
}

Accuracy score(const std::vector<Point>& truth, const std::vector<Prediction>& predicted) {
  Accuracy a;
  a.n = truth.size();
  std::vector<double> ape;
  std::size_t covered = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    const double m = truth[i].value;
    const auto& p = predicted[i];
    a.measured.push_back(m);
    a.predicted.push_back(p.value);
    a.lower.push_back(p.lower);
    a.upper.push_back(p.upper);
    ape.push_back(std::abs(p.value - m) / m);
    covered += (m >= p.lower && m <= p.upper) ? 1 : 0;
  }
  if (!ape.empty()) {
    a.median_ape = quantile(ape, 0.5);
    a.p90_ape = quantile(ape, 0.9);
    a.coverage90 = static_cast<double>(covered) / static_cast<double>(ape.size());
  }
  return a;
}

Accuracy Accuracy::subset(const std::vector<char>& keep) const {
  if (keep.size() != measured.size())
    throw std::invalid_argument("Accuracy::subset: one flag per point");
  std::vector<Point> truth;
  std::vector<Prediction> pred;
  for (std::size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] == 0) continue;
    truth.emplace_back().value = measured[i];
    auto& p = pred.emplace_back();
    p.value = predicted[i];
    p.lower = lower[i];
    p.upper = upper[i];
  }
  return score(truth, pred);
}

nlohmann::json Accuracy::to_json() const {
  return {{"n", n}, {"median_ape", median_ape}, {"p90_ape", p90_ape}, {"coverage90", coverage90}};
}

void Panel::widen_extrapolation(const std::string& parameter, double sd_factor) {
  if (!space::int_param(space::Config{}, parameter))
    throw ModelError(fmt::format("'{}' is not a numeric parameter", parameter));
  if (!(sd_factor >= 1)) throw ModelError(fmt::format("sd factor {} is not >= 1", sd_factor));
  widen_param_ = parameter;
  widen_factor_ = sd_factor;
}

double ExtrapolationTest::sd_factor() const {
  std::vector<double> z;
  for (std::size_t i = 0; i < accuracy.measured.size(); ++i) {
    const double sd = (std::log(accuracy.upper[i]) - std::log(accuracy.lower[i])) / (2 * kZ90);
    if (!(sd > 0)) continue;
    z.push_back(std::abs(std::log(accuracy.measured[i]) - std::log(accuracy.predicted[i])) / sd);
  }
  if (z.empty()) return 1;
  return std::max(1.0, quantile(z, 0.9) / kZ90);
}

nlohmann::json ExtrapolationTest::to_json() const {
  auto j = accuracy.to_json();
  j["sd_factor"] = sd_factor();
  j["parameter"] = parameter;
  j["threshold"] = threshold;
  j["train"] = train;
  return j;
}

Accuracy cross_validate(const System& system, space::Family family, const std::vector<Point>& all,
                        int folds, const FitOptions& options) {
  std::vector<Point> points;
  for (const auto& p : all)
    if (p.config.family == family && std::isfinite(p.value) && p.value > 0) points.push_back(p);
  if (folds < 2) throw ModelError(fmt::format("--folds must be at least 2, got {}", folds));
  const auto k = static_cast<std::size_t>(folds);
  if (points.size() < 2 * k) {
    throw ModelError(fmt::format("{}: {} rows are too few for {}-fold cross-validation",
                                 space::to_string(family), points.size(), folds));
  }
  const auto order = shuffled(points.size(), options.seed + 17);
  std::vector<Prediction> predicted(points.size());
  tbb::parallel_for(std::size_t{0}, k, [&](std::size_t f) {
    std::vector<Point> train, test;
    std::vector<std::size_t> where;
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (i % k == f) {
        test.push_back(points[order[i]]);
        where.push_back(order[i]);
      } else {
        train.push_back(points[order[i]]);
      }
    }
    const auto pr = Panel::fit(system, family, train, options).predict(test);
    for (std::size_t i = 0; i < pr.size(); ++i) predicted[where[i]] = pr[i];
  });
  return score(points, predicted);
}

std::optional<ExtrapolationTest> extrapolation_test(const System& system, space::Family family,
                                                    const std::vector<Point>& all,
                                                    const std::string& parameter,
                                                    std::optional<std::int64_t> threshold,
                                                    const FitOptions& options) {
  std::vector<Point> points;
  for (const auto& p : all)
    if (p.config.family == family && std::isfinite(p.value) && p.value > 0) points.push_back(p);
  if (points.empty() || space::int_param(points.front().config, parameter) == nullptr)
    throw ModelError(fmt::format("--extrapolate: '{}' is not a numeric parameter", parameter));
  std::set<std::int64_t> values;
  for (const auto& p : points) values.insert(*space::int_param(p.config, parameter));
  if (values.size() < 2 || *values.begin() <= 0) return std::nullopt;
  std::int64_t thr = 0;
  if (threshold) {
    thr = *threshold;
  } else if (parameter == "batch" && *values.begin() <= 1024 && *values.rbegin() > 1024) {
    thr = 1024;
  } else {
    std::vector<std::int64_t> v(values.begin(), values.end());
    thr = v[(v.size() - 1) / 2];
  }
  ExtrapolationTest t;
  t.parameter = parameter;
  t.threshold = thr;
  std::vector<Point> train, test;
  for (const auto& p : points) (t.tests(p) ? test : train).push_back(p);
  if (train.size() < 8 || test.empty()) return std::nullopt;
  t.train = train.size();
  t.accuracy = score(test, Panel::fit(system, family, train, options).predict(test));
  return t;
}

const Panel* Model::panel(space::Family family, const std::string& system) const {
  for (const auto& p : panels)
    if (p.family() == family && (system.empty() || p.system().name == system)) return &p;
  return nullptr;
}

nlohmann::json Model::to_json() const {
  nlohmann::json j = {{"schema", kModelSchema}, {"metric", metric}, {"fitted_on", fitted_on}};
  j["panels"] = nlohmann::json::array();
  for (const auto& p : panels) j["panels"].push_back(p.to_json());
  return j;
}

Model Model::from_json(const nlohmann::json& j, const std::string& name) {
  if (!j.is_object() || !j.contains("schema") || !j["schema"].is_string() ||
      j["schema"].get<std::string>() != kModelSchema) {
    const std::string got = j.is_object() && j.contains("schema") ? j["schema"].dump() : "none";
    throw ModelError(fmt::format("{}: not a dnnscape model file (schema {}, expected \"{}\")", name,
                                 got, kModelSchema));
  }
  Model m;
  try {
    m.metric = j.at("metric").get<std::string>();
    m.fitted_on = j.at("fitted_on");
    for (const auto& p : j.at("panels")) m.panels.push_back(Panel::from_json(p));
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(fmt::format("{}: malformed model file: {}", name, e.what()));
  } catch (const ModelError& e) {
    throw ModelError(fmt::format("{}: {}", name, e.what()));
  }
  return m;
}

void Model::save(const std::filesystem::path& path) const {
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(fmt::format("cannot write {}", tmp.string()));
    out << to_json().dump() << '\n';
    if (!out) throw std::runtime_error(fmt::format("cannot write {}", tmp.string()));
  }
  std::filesystem::rename(tmp, path);  // a reader never sees half a model
}

Model Model::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path))
    throw ModelError(fmt::format("{}: cannot read the model file", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception&) {
    throw ModelError(fmt::format("{}: not a dnnscape model file (not JSON)", path.string()));
  }
  return from_json(j, path.string());
}

}  // namespace dnnscape::model
