#include "analysis/stats.hpp"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <boost/math/distributions/students_t.hpp>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <unordered_map>

namespace dnnscape::analysis {

double quantile_sorted(const std::vector<double>& s, double q) {
  if (s.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double h = (static_cast<double>(s.size()) - 1) * q;
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const auto hi = std::min(lo + 1, s.size() - 1);
  return s[lo] + (h - static_cast<double>(lo)) * (s[hi] - s[lo]);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return quantile_sorted(v, 0.5);
}

double t_critical(double df, double alpha) {
  const boost::math::students_t dist(df);
  return boost::math::quantile(boost::math::complement(dist, alpha / 2));
}

double t_p_value(double t, double df) {
  const boost::math::students_t dist(df);
  return 2 * boost::math::cdf(boost::math::complement(dist, std::fabs(t)));
}

BoxStats box_stats(std::vector<double> v) {
  BoxStats b;
  std::sort(v.begin(), v.end());
  b.n = v.size();
  if (v.empty()) return b;
  b.q1 = quantile_sorted(v, 0.25);
  b.median = quantile_sorted(v, 0.5);
  b.q3 = quantile_sorted(v, 0.75);
  const double iqr = b.q3 - b.q1;
  const double lo = b.q1 - 1.5 * iqr;
  const double hi = b.q3 + 1.5 * iqr;
  b.whisker_low = *std::lower_bound(v.begin(), v.end(), lo);
  b.whisker_high = *(std::upper_bound(v.begin(), v.end(), hi) - 1);
  b.outliers = static_cast<std::size_t>((std::lower_bound(v.begin(), v.end(), lo) - v.begin()) +
                                        (v.end() - std::upper_bound(v.begin(), v.end(), hi)));
  return b;
}

std::vector<std::uint32_t> bootstrap_units(std::size_t rows, std::size_t max_units,
                                           std::uint64_t seed, std::size_t* units) {
  // Always dealt in random order, so unit % k also gives random cross-validation folds.
  std::vector<std::uint32_t> perm(rows);
  std::iota(perm.begin(), perm.end(), 0U);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::shuffle(perm.begin(), perm.end(), rng);
  const std::size_t m = std::max<std::size_t>(1, std::min(rows, max_units));
  std::vector<std::uint32_t> unit(rows);
  for (std::size_t i = 0; i < rows; ++i) unit[perm[i]] = static_cast<std::uint32_t>(i % m);
  *units = m;
  return unit;
}

void bootstrap(std::size_t units, std::size_t reps, std::uint64_t seed,
               const std::function<void(std::size_t, const std::vector<double>&)>& fn) {
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, reps, 1),
                    [&](const tbb::blocked_range<std::size_t>& r) {
                      std::vector<double> w(units);
                      for (std::size_t rep = r.begin(); rep != r.end(); ++rep) {
                        std::mt19937_64 rng(seed + 0x632be59bd9b4e019ULL * (rep + 1));
                        std::uniform_int_distribution<std::size_t> pick(0, units - 1);
                        std::fill(w.begin(), w.end(), 0.0);
                        for (std::size_t k = 0; k < units; ++k) w[pick(rng)] += 1.0;
                        fn(rep, w);
                      }
                    });
}

std::pair<double, double> percentile_interval(std::vector<double> reps, double level) {
  reps.erase(std::remove_if(reps.begin(), reps.end(), [](double x) { return !std::isfinite(x); }),
             reps.end());
  if (reps.empty())
    return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  std::sort(reps.begin(), reps.end());
  const double a = (1 - level) / 2;
  return {quantile_sorted(reps, a), quantile_sorted(reps, 1 - a)};
}

// ---- decision tree ----------------------------------------------------------------------------

namespace {

std::string show(double v) {
  if (std::fabs(v) < 1e15 && v == std::round(v))
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{:.4g}", v);
}

struct Binned {
  std::vector<std::uint8_t> bin;  // per row
  std::size_t bins = 0;
  std::vector<double> disp_min, disp_max;  // per bin
};

// At most 64 bins per feature: distinct values, or quantile ranges when there are more.
Binned bin_feature(const TreeFeature& f) {
  Binned b;
  // Distinct values with their counts (few for sweep parameters, so no sort of all rows).
  std::unordered_map<double, std::size_t> counts;
  for (double v : f.values) ++counts[v];
  std::vector<std::pair<double, std::size_t>> distinct(counts.begin(), counts.end());
  std::sort(distinct.begin(), distinct.end());
  std::vector<double> upper;  // bin k holds values <= upper[k]
  if (distinct.size() <= 64) {
    for (const auto& [v, n] : distinct) upper.push_back(v);
  } else {
    // Quantile bins from the cumulative counts.
    const double total = static_cast<double>(f.values.size());
    std::size_t cum = 0;
    int next = 1;
    for (const auto& [v, n] : distinct) {
      cum += n;
      if (static_cast<double>(cum) >= total * next / 64.0) {
        upper.push_back(v);
        while (next <= 64 && static_cast<double>(cum) >= total * next / 64.0) ++next;
      }
    }
    if (upper.empty() || upper.back() != distinct.back().first)
      upper.push_back(distinct.back().first);
  }
  b.bins = upper.size();
  b.disp_min.assign(b.bins, std::numeric_limits<double>::infinity());
  b.disp_max.assign(b.bins, -std::numeric_limits<double>::infinity());
  b.bin.resize(f.values.size());
  for (std::size_t i = 0; i < f.values.size(); ++i) {
    const auto k = static_cast<std::size_t>(
        std::lower_bound(upper.begin(), upper.end(), f.values[i]) - upper.begin());
    b.bin[i] = static_cast<std::uint8_t>(std::min(k, b.bins - 1));
    const double d = f.display.empty() ? f.values[i] : f.display[i];
    b.disp_min[b.bin[i]] = std::min(b.disp_min[b.bin[i]], d);
    b.disp_max[b.bin[i]] = std::max(b.disp_max[b.bin[i]], d);
  }
  return b;
}

struct Node {
  std::vector<std::uint32_t> rows;
  std::size_t wins = 0;
  int feature = -1;
  std::size_t split_bin = 0;  // left: bin <= split_bin
  std::unique_ptr<Node> left, right;
  [[nodiscard]] bool leaf() const { return feature < 0; }
  [[nodiscard]] bool label() const { return 2 * wins > rows.size(); }
};

double gini(double w, double n) {
  if (n <= 0) return 0;
  const double p = w / n;
  return n * 2 * p * (1 - p);
}

void grow(Node& node, const std::vector<Binned>& feats, const std::vector<char>& win, int depth,
          int max_depth, std::size_t min_leaf) {
  const double n = static_cast<double>(node.rows.size());
  const double parent = gini(static_cast<double>(node.wins), n);
  if (depth >= max_depth || parent <= 0) return;
  double best = parent - 1e-9 * n;
  int best_f = -1;
  std::size_t best_b = 0;
  for (std::size_t f = 0; f < feats.size(); ++f) {
    const auto& fb = feats[f];
    std::vector<double> cnt(fb.bins, 0), wcnt(fb.bins, 0);
    for (auto r : node.rows) {
      cnt[fb.bin[r]] += 1;
      wcnt[fb.bin[r]] += win[r] ? 1 : 0;
    }
    double ln = 0, lw = 0;
    for (std::size_t b = 0; b + 1 < fb.bins; ++b) {
      ln += cnt[b];
      lw += wcnt[b];
      if (ln < static_cast<double>(min_leaf) || n - ln < static_cast<double>(min_leaf)) continue;
      if (cnt[b] == 0) continue;
      const double g = gini(lw, ln) + gini(static_cast<double>(node.wins) - lw, n - ln);
      if (g < best) {
        best = g;
        best_f = static_cast<int>(f);
        best_b = b;
      }
    }
  }
  if (best_f < 0) return;
  node.feature = best_f;
  node.split_bin = best_b;
  node.left = std::make_unique<Node>();
  node.right = std::make_unique<Node>();
  for (auto r : node.rows) {
    auto& child = feats[best_f].bin[r] <= best_b ? *node.left : *node.right;
    child.rows.push_back(r);
    child.wins += win[r] ? 1 : 0;
  }
  node.rows.clear();
  node.rows.shrink_to_fit();
  grow(*node.left, feats, win, depth + 1, max_depth, min_leaf);
  grow(*node.right, feats, win, depth + 1, max_depth, min_leaf);
}

// Counts rows and wins of a subtree; collapses splits whose leaves all predict the same label.
std::pair<std::size_t, std::size_t> prune(Node& node) {
  if (node.leaf()) return {node.rows.size(), node.wins};
  const auto [ln, lw] = prune(*node.left);
  const auto [rn, rw] = prune(*node.right);
  if (node.left->leaf() && node.right->leaf() && node.left->label() == node.right->label()) {
    node.rows = std::move(node.left->rows);
    node.rows.insert(node.rows.end(), node.right->rows.begin(), node.right->rows.end());
    node.wins = lw + rw;
    node.feature = -1;
    node.left.reset();
    node.right.reset();
  }
  return {ln + rn, lw + rw};
}

struct Cond {
  int feature;
  bool left;
  std::size_t bin;
};

void paths(const Node& node, std::vector<Cond>& path, bool want,
           std::vector<std::vector<Cond>>& out, std::size_t& correct, int& leaves) {
  if (node.leaf()) {
    if (want) {
      ++leaves;
      correct += node.label() ? node.wins : node.rows.size() - node.wins;
    }
    if (node.label() == want && !node.rows.empty()) out.push_back(path);
    return;
  }
  path.push_back({node.feature, true, node.split_bin});
  paths(*node.left, path, want, out, correct, leaves);
  path.back().left = false;
  paths(*node.right, path, want, out, correct, leaves);
  path.pop_back();
}

std::string render_path(const std::vector<Cond>& path, const std::vector<TreeFeature>& features,
                        const std::vector<Binned>& feats) {
  if (path.empty()) return "everywhere";
  // Tightest bounds per feature, in order of first use.
  std::vector<int> order;
  std::vector<double> lo(features.size(), -INFINITY), hi(features.size(), INFINITY);
  for (const auto& c : path) {
    if (std::find(order.begin(), order.end(), c.feature) == order.end()) order.push_back(c.feature);
    const auto& fb = feats[c.feature];
    if (c.left) {
      double m = -INFINITY;
      for (std::size_t b = 0; b <= c.bin; ++b) m = std::max(m, fb.disp_max[b]);
      hi[c.feature] = std::min(hi[c.feature], m);
    } else {
      double m = INFINITY;
      for (std::size_t b = c.bin + 1; b < fb.bins; ++b) m = std::min(m, fb.disp_min[b]);
      lo[c.feature] = std::max(lo[c.feature], m);
    }
  }
  std::vector<std::string> parts;
  for (int f : order) {
    const auto& tf = features[f];
    if (tf.indicator) {
      parts.push_back(lo[f] > 0.5 ? tf.name : tf.negated);
    } else if (std::isfinite(lo[f]) && std::isfinite(hi[f])) {
      parts.push_back(lo[f] == hi[f]
                          ? fmt::format("{} = {}", tf.name, show(lo[f]))
                          : fmt::format("{} ≤ {} ≤ {}", show(lo[f]), tf.name, show(hi[f])));
    } else if (std::isfinite(lo[f])) {
      parts.push_back(fmt::format("{} ≥ {}", tf.name, show(lo[f])));
    } else {
      parts.push_back(fmt::format("{} ≤ {}", tf.name, show(hi[f])));
    }
  }
  std::string s;
  for (std::size_t i = 0; i < parts.size(); ++i) s += (i ? " and " : "") + parts[i];
  return s;
}

}  // namespace

TreeRule fit_rule(const std::vector<TreeFeature>& features, const std::vector<char>& win,
                  int max_depth, std::size_t min_leaf) {
  TreeRule rule;
  if (win.empty()) return rule;
  std::vector<Binned> feats;
  feats.reserve(features.size());
  for (const auto& f : features) feats.push_back(bin_feature(f));
  Node root;
  root.rows.resize(win.size());
  std::iota(root.rows.begin(), root.rows.end(), 0U);
  root.wins = static_cast<std::size_t>(std::count(win.begin(), win.end(), 1));
  grow(root, feats, win, 0, max_depth, std::max<std::size_t>(min_leaf, 1));
  prune(root);

  for (bool want : {true, false}) {
    std::vector<std::vector<Cond>> out;
    std::vector<Cond> path;
    std::size_t correct = 0;
    int leaves = 0;
    paths(root, path, want, out, correct, leaves);
    // Simplest region first.
    std::stable_sort(out.begin(), out.end(),
                     [](const auto& a, const auto& b) { return a.size() < b.size(); });
    if (want) {
      rule.accuracy = static_cast<double>(correct) / static_cast<double>(win.size());
      rule.leaves = leaves;
    }
    std::string s;
    for (std::size_t i = 0; i < out.size(); ++i)
      s += (i ? " or " : "") + render_path(out[i], features, feats);
    (want ? rule.wins : rule.loses) = s;
  }
  return rule;
}

}  // namespace dnnscape::analysis
