#include "analysis/regress.hpp"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "analysis/gnuplot.hpp"
#include "analysis/heatmap.hpp"
#include "analysis/stats.hpp"

namespace dnnscape::analysis {
namespace {

constexpr std::size_t kMaxUnits = 2048;

struct RowRef {
  std::uint32_t frame;
  std::uint32_t row;
};

// A categorical variable of a panel: per-row level index into `levels` (sorted).
struct CatVar {
  std::string name;
  std::vector<std::string> levels;
  std::vector<std::int32_t> code;
};

struct Design {
  std::vector<std::string> names;
  std::vector<int> source;  // main features: index of the variable they come from (interactions
                            // of two indicators of one variable are skipped)
  Eigen::MatrixXd z;        // n x p, standardized
  Eigen::VectorXd y;        // standardized
  std::vector<std::string> left_out;
  std::size_t dropped = 0;
};

std::string show(double v) {
  if (std::fabs(v) < 1e15 && v == std::round(v))
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{:.4g}", v);
}

// Standardizes a column in place (ddof 1); returns false when it does not vary.
bool standardize(Eigen::Ref<Eigen::VectorXd> v) {
  const double n = static_cast<double>(v.size());
  const double mean = v.mean();
  const double ss = (v.array() - mean).square().sum();
  const double sd = std::sqrt(ss / (n - 1));
  if (!(sd > 0) || sd < 1e-12 * (std::fabs(mean) + 1)) return false;
  v = (v.array() - mean) / sd;
  return true;
}

CatVar categorical(const std::vector<Frame>& frames, const std::vector<RowRef>& rows,
                   const std::string& name, bool* partial) {
  CatVar v;
  v.name = name;
  // Per frame: level code -> panel level index.
  std::vector<std::vector<std::int32_t>> remap(frames.size());
  std::map<std::string, std::int32_t> index;
  for (std::size_t f = 0; f < frames.size(); ++f) {
    if (name == "system") continue;
    const auto& c = frames[f].cat(name);
    for (const auto& l : c.levels) index.emplace(l, 0);
  }
  if (name == "system")
    for (const auto& fr : frames) index.emplace(fr.label(), 0);
  for (auto& [l, i] : index) {
    i = static_cast<std::int32_t>(v.levels.size());
    v.levels.push_back(l);
  }
  for (std::size_t f = 0; f < frames.size(); ++f) {
    if (name == "system") {
      remap[f] = {index.at(frames[f].label())};
      continue;
    }
    for (const auto& l : frames[f].cat(name).levels) remap[f].push_back(index.at(l));
  }
  v.code.resize(rows.size());
  std::vector<char> used(v.levels.size(), 0);
  *partial = false;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    const auto c = name == "system" ? remap[r.frame][0]
                                    : remap[r.frame][frames[r.frame].cat(name).codes[r.row]];
    v.code[i] = c;
    used[c] = 1;
    if (v.levels[c].empty()) *partial = true;
  }
  // Keep only levels present in the panel.
  std::vector<std::int32_t> compact(v.levels.size(), -1);
  std::vector<std::string> levels;
  for (std::size_t l = 0; l < used.size(); ++l) {
    if (!used[l]) continue;
    compact[l] = static_cast<std::int32_t>(levels.size());
    levels.push_back(v.levels[l]);
  }
  for (auto& c : v.code) c = compact[c];
  v.levels = std::move(levels);
  return v;
}

// Appends columns to `cols` while they are not (numerically) linear combinations of the kept ones
// plus the intercept: the residual variance of a standardized column regressed on the kept ones
// must exceed 1e-9. Returns the kept indices.
std::vector<int> independent_columns(const Eigen::MatrixXd& z) {
  const double n1 = static_cast<double>(z.rows()) - 1;
  const Eigen::MatrixXd corr = (z.transpose() * z) / n1;
  std::vector<int> kept;
  for (int j = 0; j < corr.cols(); ++j) {
    double resid = corr(j, j);
    if (!kept.empty()) {
      Eigen::MatrixXd css(kept.size(), kept.size());
      Eigen::VectorXd csj(kept.size());
      for (std::size_t a = 0; a < kept.size(); ++a) {
        csj(a) = corr(kept[a], j);
        for (std::size_t b = 0; b < kept.size(); ++b) css(a, b) = corr(kept[a], kept[b]);
      }
      resid -= csj.dot(css.ldlt().solve(csj));
    }
    if (resid > 1e-9) kept.push_back(j);
  }
  return kept;
}

Design build_design(const std::vector<Frame>& frames, std::vector<RowRef> rows,
                    const RegressOptions& o, bool pooled_family, bool pooled_system) {
  Design d;
  // The metric.
  {
    std::vector<RowRef> keep;
    std::vector<double> y;
    keep.reserve(rows.size());
    y.reserve(rows.size());
    for (const auto& r : rows) {
      double v = frames[r.frame].num(o.metric)[r.row];
      if (o.log_metric) v = v > 0 ? std::log(v) : NAN;
      if (!std::isfinite(v)) continue;
      keep.push_back(r);
      y.push_back(v);
    }
    d.dropped = rows.size() - keep.size();
    rows = std::move(keep);
    d.y = Eigen::Map<Eigen::VectorXd>(y.data(), static_cast<Eigen::Index>(y.size()));
  }
  const auto n = static_cast<Eigen::Index>(rows.size());
  std::vector<Eigen::VectorXd> cols;
  int var = 0;
  for (auto p : kNumericParams) {
    const std::string name(p);
    bool present = true;
    for (const auto& f : frames) present = present && f.numeric.count(name);
    if (!present) continue;
    Eigen::VectorXd x(n);
    Eigen::Index positive = 0;
    for (Eigen::Index i = 0; i < n; ++i) {
      const double v = frames[rows[i].frame].num(name)[rows[i].row];
      x(i) = v > 0 ? std::log2(v) : NAN;
      positive += v > 0 ? 1 : 0;
    }
    if (positive == 0) continue;  // not a parameter of this family
    if (positive < n) {
      d.left_out.push_back(name + " (n/a for some rows)");
      continue;
    }
    if (x.maxCoeff() == x.minCoeff()) {
      d.left_out.push_back(fmt::format("{} (constant = {})", name, show(std::exp2(x(0)))));
      continue;
    }
    d.names.push_back("log2 " + name);
    d.source.push_back(var++);
    cols.push_back(std::move(x));
  }
  std::vector<std::string> cat_names;
  for (auto p : kTextParams) cat_names.emplace_back(p);
  for (const auto& k : o.knobs) cat_names.push_back(k);
  if (pooled_family) cat_names.emplace_back("family");
  if (pooled_system && frames.size() > 1) cat_names.emplace_back("system");
  for (const auto& name : cat_names) {
    bool present = name == "system";
    if (!present) {
      present = true;
      for (const auto& f : frames) present = present && f.text.count(name);
    }
    if (!present) {
      // A numeric knob (threads) enters as levels of its values.
      bool numeric = true;
      for (const auto& f : frames) numeric = numeric && f.numeric.count(name);
      if (!numeric) continue;
      std::map<double, std::int32_t> lv;
      for (const auto& r : rows) lv.emplace(frames[r.frame].num(name)[r.row], 0);
      if (lv.size() < 2) {
        if (!lv.empty())
          d.left_out.push_back(fmt::format("{} (constant = {})", name, show(lv.begin()->first)));
        continue;
      }
      std::int32_t idx = 0;
      std::vector<double> values;
      for (auto& [v, i] : lv) {
        i = idx++;
        values.push_back(v);
      }
      for (std::size_t l = 1; l < values.size(); ++l) {
        Eigen::VectorXd x(n);
        for (Eigen::Index i = 0; i < n; ++i)
          x(i) = frames[rows[i].frame].num(name)[rows[i].row] == values[l] ? 1.0 : 0.0;
        d.names.push_back(fmt::format("{}={}", name, show(values[l])));
        d.source.push_back(var);
        cols.push_back(std::move(x));
      }
      ++var;
      continue;
    }
    bool partial = false;
    const auto v = categorical(frames, rows, name, &partial);
    if (v.levels.size() == 1 && v.levels[0].empty()) continue;  // not applicable here
    if (partial) {
      d.left_out.push_back(name + " (n/a for some rows)");
      continue;
    }
    if (v.levels.size() < 2) {
      d.left_out.push_back(fmt::format("{} (constant = {})", name, v.levels[0]));
      continue;
    }
    for (std::size_t l = 1; l < v.levels.size(); ++l) {
      Eigen::VectorXd x(n);
      for (Eigen::Index i = 0; i < n; ++i) x(i) = v.code[i] == static_cast<std::int32_t>(l) ? 1 : 0;
      d.names.push_back(fmt::format("{}={}", name, v.levels[l]));
      d.source.push_back(var);
      cols.push_back(std::move(x));
    }
    ++var;
  }
  for (auto& c : cols) standardize(c);
  const std::size_t mains = cols.size();
  if (o.interactions) {
    for (std::size_t a = 0; a < mains; ++a) {
      for (std::size_t b = a + 1; b < mains; ++b) {
        if (d.source[a] == d.source[b]) continue;  // indicators of one variable never co-occur
        Eigen::VectorXd x = cols[a].cwiseProduct(cols[b]);
        if (!standardize(x)) continue;
        d.names.push_back(d.names[a] + ":" + d.names[b]);
        d.source.push_back(-1);
        cols.push_back(std::move(x));
      }
    }
  }
  d.y = d.y.eval();
  Eigen::MatrixXd z(n, static_cast<Eigen::Index>(cols.size()));
  for (std::size_t j = 0; j < cols.size(); ++j) z.col(static_cast<Eigen::Index>(j)) = cols[j];
  cols.clear();
  if (z.cols() > 0) {
    const auto kept = independent_columns(z);
    if (kept.size() < static_cast<std::size_t>(z.cols())) {
      Eigen::MatrixXd zk(n, static_cast<Eigen::Index>(kept.size()));
      std::vector<std::string> names;
      std::size_t k = 0;
      for (Eigen::Index j = 0; j < z.cols(); ++j) {
        if (k < kept.size() && kept[k] == j) {
          zk.col(static_cast<Eigen::Index>(k++)) = z.col(j);
          names.push_back(d.names[j]);
        } else {
          d.left_out.push_back(d.names[j] + " (collinear with the others)");
        }
      }
      z = std::move(zk);
      d.names = std::move(names);
    }
  }
  d.z = std::move(z);
  return d;
}

// Solves the normal equations A x = b of a small symmetric positive definite system with one step
// of iterative refinement (the features are standardized, so A is well scaled).
Eigen::VectorXd solve_spd(const Eigen::MatrixXd& a, const Eigen::VectorXd& b) {
  const auto ldlt = a.ldlt();
  Eigen::VectorXd x = ldlt.solve(b);
  x += ldlt.solve(b - a * x);
  return x;
}

RegressPanel fit_panel(const Design& d, const RegressOptions& o, const std::string& group) {
  RegressPanel p;
  p.group = group;
  p.left_out = d.left_out;
  p.dropped_rows = d.dropped;
  const Eigen::Index n = d.z.rows();
  const Eigen::Index k = d.z.cols();
  const Eigen::Index q = k + 2;  // [1, z, y]
  p.n = static_cast<std::size_t>(n);
  if (k == 0)
    throw InputError(fmt::format("regress {}: no parameter varies in the selection", group));
  if (n <= k + 1)
    throw InputError(fmt::format("regress {}: {} rows are too few for {} terms", group, n, k + 1));
  Eigen::VectorXd y = d.y;
  if (!standardize(y))
    throw InputError(fmt::format("regress {}: {} does not vary in the selection", group, o.metric));

  // Per-unit Gram matrices of [1, z, y]; everything else (fit, folds, bootstrap) sums them.
  std::size_t units = 0;
  const auto unit = bootstrap_units(static_cast<std::size_t>(n), kMaxUnits, o.seed, &units);
  std::vector<std::size_t> start(units + 1, 0);
  for (auto u : unit) ++start[u + 1];
  for (std::size_t u = 0; u < units; ++u) start[u + 1] += start[u];
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
  {
    auto pos = start;
    for (Eigen::Index i = 0; i < n; ++i) order[pos[unit[i]]++] = i;
  }
  std::vector<Eigen::MatrixXd> gram(units);
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, units), [&](const auto& r) {
    for (std::size_t u = r.begin(); u != r.end(); ++u) {
      const auto m = static_cast<Eigen::Index>(start[u + 1] - start[u]);
      Eigen::MatrixXd block(m, q);
      for (Eigen::Index i = 0; i < m; ++i) {
        const auto row = order[start[u] + static_cast<std::size_t>(i)];
        block(i, 0) = 1.0;
        block.row(i).segment(1, k) = d.z.row(row);
        block(i, k + 1) = y(row);
      }
      gram[u] = block.transpose() * block;
    }
  });
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(q, q);
  for (const auto& m : gram) g += m;

  const Eigen::MatrixXd a = g.topLeftCorner(k + 1, k + 1);
  const Eigen::VectorXd beta = solve_spd(a, g.col(k + 1).head(k + 1));
  const Eigen::VectorXd resid =
      y - (d.z * beta.tail(k)).array().matrix() - Eigen::VectorXd::Constant(n, beta(0));
  const double rss = resid.squaredNorm();
  const double tss = (y.array() - y.mean()).square().sum();
  const double df = static_cast<double>(n - k - 1);
  p.df_resid = static_cast<int>(n - k - 1);
  const Eigen::MatrixXd cov = (rss / df) * a.ldlt().solve(Eigen::MatrixXd::Identity(k + 1, k + 1));
  const double tc = t_critical(df);
  p.intercept = beta(0);
  for (Eigen::Index j = 0; j < k; ++j) {
    RegressTerm t;
    t.name = d.names[static_cast<std::size_t>(j)];
    t.coef = beta(j + 1);
    t.se = std::sqrt(cov(j + 1, j + 1));
    t.t = t.coef / t.se;
    t.p = t_p_value(t.t, df);
    t.ci_low = t.coef - tc * t.se;
    t.ci_high = t.coef + tc * t.se;
    p.terms.push_back(t);
  }
  p.r2 = 1 - rss / tss;
  p.adj_r2 = 1 - (1 - p.r2) * static_cast<double>(n - 1) / df;

  // k-fold cross-validated R² = 1 - PRESS / TSS; folds are random (unit % k).
  const auto folds = static_cast<std::size_t>(std::clamp<Eigen::Index>(o.folds, 2, n));
  std::vector<Eigen::MatrixXd> fold_gram(folds, Eigen::MatrixXd::Zero(q, q));
  if (units >= folds) {
    for (std::size_t u = 0; u < units; ++u) fold_gram[u % folds] += gram[u];
    std::vector<Eigen::VectorXd> fold_beta(folds);
    bool ok = true;
    for (std::size_t f = 0; f < folds; ++f) {
      const Eigen::MatrixXd tg = g - fold_gram[f];
      if (tg(0, 0) <= static_cast<double>(k + 1)) ok = false;
      fold_beta[f] = solve_spd(tg.topLeftCorner(k + 1, k + 1), tg.col(k + 1).head(k + 1));
    }
    double press = 0;
    for (Eigen::Index i = 0; i < n; ++i) {
      const auto& b = fold_beta[unit[i] % folds];
      const double e = y(i) - b(0) - d.z.row(i).dot(b.tail(k));
      press += e * e;
    }
    p.cv_r2 = ok ? 1 - press / tss : NAN;
  } else {
    p.cv_r2 = NAN;
  }

  // Ranking by |standardized coefficient| and bootstrap intervals of consecutive ratios.
  std::vector<std::size_t> rank(static_cast<std::size_t>(k));
  std::iota(rank.begin(), rank.end(), 0);
  std::stable_sort(rank.begin(), rank.end(), [&](auto i, auto j) {
    return std::fabs(p.terms[i].coef) > std::fabs(p.terms[j].coef);
  });
  const std::size_t pairs = std::min<std::size_t>(rank.size() - 1, 5);
  std::vector<std::vector<double>> reps(
      pairs, std::vector<double>(static_cast<std::size_t>(o.bootstrap), NAN));
  if (pairs > 0 && o.bootstrap > 0) {
    bootstrap(units, static_cast<std::size_t>(o.bootstrap), o.seed + 17,
              [&](std::size_t rep, const std::vector<double>& w) {
                Eigen::MatrixXd gw = Eigen::MatrixXd::Zero(q, q);
                for (std::size_t u = 0; u < units; ++u)
                  if (w[u] != 0) gw.noalias() += w[u] * gram[u];
                const double nn = gw(0, 0);
                if (nn <= static_cast<double>(q)) return;
                // Refit on the resampled rows (pairs bootstrap). The standardization stays at
                // the full-sample sds: the sweep fixes the design, so the importance ratio's
                // uncertainty is that of the coefficients, not of the grid's spread.
                const Eigen::VectorXd mean = gw.row(0).tail(k + 1) / nn;
                const Eigen::MatrixXd c =
                    gw.bottomRightCorner(k + 1, k + 1) - nn * mean * mean.transpose();
                const Eigen::VectorXd std_coef =
                    c.topLeftCorner(k, k).ldlt().solve(c.col(k).head(k));
                for (std::size_t pr = 0; pr < pairs; ++pr) {
                  reps[pr][rep] = std::fabs(std_coef(static_cast<Eigen::Index>(rank[pr]))) /
                                  std::fabs(std_coef(static_cast<Eigen::Index>(rank[pr + 1])));
                }
              });
  }
  for (std::size_t pr = 0; pr < pairs; ++pr) {
    Importance im;
    im.a = p.terms[rank[pr]].name;
    im.b = p.terms[rank[pr + 1]].name;
    im.ratio = std::fabs(p.terms[rank[pr]].coef) / std::fabs(p.terms[rank[pr + 1]].coef);
    std::tie(im.low, im.high) = percentile_interval(reps[pr]);
    p.ranking.push_back(im);
  }
  std::vector<RegressTerm> sorted;
  for (auto i : rank) sorted.push_back(p.terms[i]);
  p.terms = std::move(sorted);

  const auto& top = p.terms.front();
  p.finding = fmt::format(
      "{} (n={}, R²={:.3f}, adjusted {:.3f}, {}-fold CV R²={:.3f}): {} matters most "
      "(standardized coefficient {:+.3f}, 95% CI {:+.3f} to {:+.3f})",
      group, n, p.r2, p.adj_r2, folds, p.cv_r2, top.name, top.coef, top.ci_low, top.ci_high);
  if (!p.ranking.empty()) {
    const auto& im = p.ranking.front();
    p.finding += fmt::format("; {} is {:.2f}x (95% CI {:.2f}–{:.2f}) more important than {}", im.a,
                             im.ratio, im.low, im.high, im.b);
  }
  p.finding += ".";
  if (!p.left_out.empty()) {
    std::string lo;
    for (std::size_t i = 0; i < p.left_out.size(); ++i) lo += (i ? ", " : "") + p.left_out[i];
    p.finding += " Left out: " + lo + ".";
  }
  return p;
}

void write_outputs(RegressResult& res, const RegressOptions& o) {
  std::filesystem::create_directories(o.out_dir);
  const std::string stem = fmt::format("regress_{}{}", o.log_metric ? "log_" : "", o.metric);
  const auto csv = o.out_dir / (stem + ".csv");
  const auto fit_csv = o.out_dir / (stem + "_fit.csv");
  const auto imp_csv = o.out_dir / (stem + "_importance.csv");
  {
    std::ofstream c(csv);
    c << "group,term,coef,se,t,p,ci_low,ci_high\n";
    for (const auto& p : res.panels)
      for (const auto& t : p.terms)
        c << fmt::format("{},{},{:.10g},{:.10g},{:.10g},{:.6g},{:.10g},{:.10g}\n", p.group, t.name,
                         t.coef, t.se, t.t, t.p, t.ci_low, t.ci_high);
    std::ofstream f(fit_csv);
    f << "group,n,dropped_rows,terms,r2,adj_r2,cv_r2,left_out\n";
    for (const auto& p : res.panels) {
      std::string lo;
      for (std::size_t i = 0; i < p.left_out.size(); ++i) lo += (i ? "; " : "") + p.left_out[i];
      f << fmt::format("{},{},{},{},{:.10g},{:.10g},{:.10g},\"{}\"\n", p.group, p.n, p.dropped_rows,
                       p.terms.size(), p.r2, p.adj_r2, p.cv_r2, lo);
    }
    std::ofstream im(imp_csv);
    im << "group,a,b,ratio,ci_low,ci_high\n";
    for (const auto& p : res.panels)
      for (const auto& r : p.ranking)
        im << fmt::format("{},{},{},{:.6g},{:.6g},{:.6g}\n", p.group, r.a, r.b, r.ratio, r.low,
                          r.high);
  }
  // Sorted coefficient bars with 95% intervals, one panel per group.
  const std::size_t panels = res.panels.size();
  const std::size_t cols = panels <= 2 ? panels : 2;
  const std::size_t rows = (panels + cols - 1) / cols;
  std::size_t max_terms = 0;
  for (const auto& p : res.panels) max_terms = std::max(max_terms, p.terms.size());
  std::string gp;
  for (std::size_t i = 0; i < panels; ++i) {
    gp += fmt::format("$p{} << EOD\n", i);
    for (const auto& t : res.panels[i].terms)
      gp += fmt::format("{} {:.8g} {:.8g} {:.8g}\n", gp_quote(t.name), t.coef, t.ci_low, t.ci_high);
    gp += "EOD\n";
  }
  gp +=
      "set termoption noenhanced\nset style fill solid 0.6 border -1\nset boxwidth 0.6\nset grid "
      "ytics\n";
  gp += "set xtics rotate by 35 right font ',9' nomirror\nset xzeroaxis lt -1\n";
  gp += fmt::format("set ylabel {}\n", gp_quote("standardized coefficient (95% CI)"));
  gp += fmt::format("set multiplot layout {},{} title {} font ',12'\n", rows, cols,
                    gp_quote(fmt::format("OLS of {}{} on log2 parameters (z-scored)",
                                         o.log_metric ? "log " : "", o.metric)));
  for (std::size_t i = 0; i < panels; ++i) {
    const auto& p = res.panels[i];
    gp += fmt::format("set title {}\n", gp_quote(fmt::format("{}: n={}, R²={:.3f}, CV R²={:.3f}",
                                                             p.group, p.n, p.r2, p.cv_r2)));
    gp += fmt::format("set xrange [-0.7:{}]\n", static_cast<double>(p.terms.size()) - 0.3);
    gp += fmt::format(
        "plot $p{0} using 0:2:xtic(1) with boxes lc rgb '#4a7ab5' notitle, "
        "$p{0} using 0:2:3:4 with yerrorbars lc rgb '#222222' pt 0 notitle\n",
        i);
  }
  gp += "unset multiplot\n";
  const int width = static_cast<int>(cols * std::max<std::size_t>(420, 60 * max_terms + 160));
  const int height = static_cast<int>(rows * 420 + 60);
  for (auto& f : render(gp, o.out_dir / stem, width, height)) res.files.push_back(f);
  res.files.push_back(csv);
  res.files.push_back(fit_csv);
  res.files.push_back(imp_csv);
}

}  // namespace

std::vector<std::string> regress_columns(const RegressOptions& o) {
  std::vector<std::string> c = {"family", o.metric};
  for (auto p : kNumericParams) c.emplace_back(p);
  for (auto p : kTextParams) c.emplace_back(p);
  for (const auto& k : o.knobs) c.push_back(k);
  return c;
}

RegressResult regress(const RegressOptions& o) {
  if (o.inputs.empty()) throw InputError("regress needs at least one results file");
  std::vector<Frame> frames;
  for (const auto& in : o.inputs) frames.push_back(load_frame(in, regress_columns(o), o.where));
  return regress(frames, o);
}

RegressResult regress(const std::vector<Frame>& frames, const RegressOptions& o) {
  if (o.by != "family" && o.by != "system" && o.by != "none")
    throw InputError(fmt::format("--by must be family, system or none, not '{}'", o.by));
  for (const auto& k : o.knobs) {
    if (std::find(kKnobs.begin(), kKnobs.end(), k) == kKnobs.end())
      throw InputError(
          fmt::format("--knobs: '{}' is not a knob (mode, dtype, algorithm, isa_cap, threads)", k));
  }
  for (const auto& f : frames) {
    if (!f.numeric.count(o.metric))
      throw InputError(fmt::format("{} has no numeric column '{}'", f.path.string(), o.metric));
    if (!f.text.count("family"))
      throw InputError(fmt::format("{} has no column 'family'", f.path.string()));
  }
  // Panels: group key -> rows.
  std::map<std::string, std::vector<RowRef>> groups;
  for (std::size_t fi = 0; fi < frames.size(); ++fi) {
    const auto& f = frames[fi];
    const auto& fam = f.cat("family");
    for (std::size_t r = 0; r < f.rows; ++r) {
      std::string key;
      if (o.by == "family")
        key = frames.size() > 1 ? f.label() + "/" + fam.at(r) : fam.at(r);
      else if (o.by == "system")
        key = f.label();
      else
        key = "all";
      groups[key].push_back({static_cast<std::uint32_t>(fi), static_cast<std::uint32_t>(r)});
    }
  }
  if (groups.empty()) throw InputError("regress: no ok rows in the selection");
  RegressResult res;
  res.metric = o.metric;
  // A panel that cannot be fitted (too few rows, nothing varies) is named in the finding; the
  // analysis fails only when no panel can be fitted.
  std::vector<std::string> skipped;
  for (auto& [key, rows] : groups) {
    const auto d = build_design(frames, std::move(rows), o, o.by != "family", o.by == "none");
    try {
      res.panels.push_back(fit_panel(d, o, key));
    } catch (const InputError& e) {
      if (groups.size() == 1) throw;
      skipped.push_back(e.what());
    }
  }
  if (res.panels.empty()) throw InputError(skipped.front());
  for (const auto& p : res.panels) res.finding += (res.finding.empty() ? "" : "\n") + p.finding;
  for (const auto& s : skipped) res.finding += "\nNot fitted: " + s + ".";
  res.not_fitted = skipped;
  if (!o.out_dir.empty()) write_outputs(res, o);
  return res;
}

std::string RegressResult::json() const {
  nlohmann::json j;
  j["analysis"] = "regress";
  j["metric"] = metric;
  j["finding"] = finding;
  j["not_fitted"] = not_fitted;
  for (const auto& f : files) j["files"].push_back(f.string());
  for (const auto& p : panels) {
    nlohmann::json jp;
    jp["group"] = p.group;
    jp["n"] = p.n;
    jp["dropped_rows"] = p.dropped_rows;
    jp["r2"] = p.r2;
    jp["adj_r2"] = p.adj_r2;
    jp["cv_r2"] = std::isfinite(p.cv_r2) ? nlohmann::json(p.cv_r2) : nlohmann::json();
    jp["df_resid"] = p.df_resid;
    jp["intercept"] = p.intercept;
    jp["left_out"] = p.left_out;
    jp["terms"] = nlohmann::json::array();
    for (const auto& t : p.terms)
      jp["terms"].push_back({{"name", t.name},
                             {"coef", t.coef},
                             {"se", t.se},
                             {"t", t.t},
                             {"p", t.p},
                             {"ci_low", t.ci_low},
                             {"ci_high", t.ci_high}});
    jp["ranking"] = nlohmann::json::array();
    for (const auto& r : p.ranking)
      jp["ranking"].push_back(
          {{"a", r.a}, {"b", r.b}, {"ratio", r.ratio}, {"ci_low", r.low}, {"ci_high", r.high}});
    jp["finding"] = p.finding;
    j["panels"].push_back(jp);
  }
  return j.dump(2);
}

}  // namespace dnnscape::analysis
