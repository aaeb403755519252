#include "analysis/compare.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <unordered_map>

#include "analysis/gnuplot.hpp"

namespace dnnscape::analysis {
namespace {

struct Side {
  const Frame* frame = nullptr;
  std::vector<std::uint32_t> rows;
  std::string label;
};

// Columns that identify a configuration (parameters and software knobs, not the system).
std::vector<std::string> key_columns(const Frame& f, const std::string& by) {
  std::vector<std::string> k;
  if (f.has("family")) k.emplace_back("family");
  for (auto p : kNumericParams)
    if (f.has(std::string(p))) k.emplace_back(p);
  for (auto p : kTextParams)
    if (f.has(std::string(p))) k.emplace_back(p);
  for (auto p : kKnobs)
    if (f.has(std::string(p)) && p != by) k.emplace_back(p);
  return k;
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  v *= 0xff51afd7ed558ccdULL;
  v ^= v >> 33;
  return (h ^ v) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
}

// Per-row 64-bit hash of the key columns, identical across files for equal configurations.
std::vector<std::uint64_t> row_keys(const Side& s, const std::vector<std::string>& cols) {
  std::vector<std::uint64_t> h(s.rows.size(), 0x84222325cbf29ce4ULL);
  for (const auto& c : cols) {
    if (s.frame->text.count(c)) {
      const auto& cat = s.frame->cat(c);
      std::vector<std::uint64_t> lh(cat.levels.size());
      for (std::size_t l = 0; l < lh.size(); ++l) lh[l] = std::hash<std::string>{}(cat.levels[l]);
      for (std::size_t i = 0; i < s.rows.size(); ++i) h[i] = mix(h[i], lh[cat.codes[s.rows[i]]]);
    } else {
      const auto& v = s.frame->num(c);
      for (std::size_t i = 0; i < s.rows.size(); ++i) {
        std::uint64_t bits = 0;
        const double x = v[s.rows[i]] + 0.0;  // -0.0 -> 0.0
        std::memcpy(&bits, &x, sizeof bits);
        h[i] = mix(h[i], bits);
      }
    }
  }
  return h;
}

// Key columns of two sides, resolved once (the per-pair check must not look columns up by name).
struct KeyColumns {
  std::vector<std::pair<const Categorical*, const Categorical*>> text;
  std::vector<std::pair<const std::vector<double>*, const std::vector<double>*>> num;
  KeyColumns(const Side& a, const Side& b, const std::vector<std::string>& cols) {
    for (const auto& c : cols) {
      if (a.frame->text.count(c))
        text.emplace_back(&a.frame->cat(c), &b.frame->cat(c));
      else
        num.emplace_back(&a.frame->num(c), &b.frame->num(c));
    }
  }
  [[nodiscard]] bool same(std::uint32_t ra, std::uint32_t rb) const {
    for (const auto& [x, y] : num)
      if ((*x)[ra] != (*y)[rb]) return false;
    for (const auto& [x, y] : text)
      if (x->at(ra) != y->at(rb)) return false;
    return true;
  }
};

ConfigMatch match(const Side& A, const Side& B, const std::vector<std::string>& cols) {
  ConfigMatch m;
  const auto ka = row_keys(A, cols);
  const auto kb = row_keys(B, cols);
  std::unordered_map<std::uint64_t, std::uint32_t> index;
  index.reserve(A.rows.size() * 2);
  for (std::size_t i = 0; i < A.rows.size(); ++i) {
    if (!index.emplace(ka[i], static_cast<std::uint32_t>(i)).second) ++m.duplicates;
  }
  const KeyColumns key(A, B, cols);
  std::vector<char> a_used(A.rows.size(), 0);
  m.pairs.reserve(std::min(A.rows.size(), B.rows.size()));
  for (std::size_t j = 0; j < B.rows.size(); ++j) {
    auto it = index.find(kb[j]);
    if (it == index.end() || !key.same(A.rows[it->second], B.rows[j])) {
      m.only_b.push_back(B.rows[j]);
      continue;
    }
    if (a_used[it->second]) {
      ++m.duplicates;
      continue;
    }
    a_used[it->second] = 1;
    m.pairs.emplace_back(A.rows[it->second], B.rows[j]);
  }
  for (std::size_t i = 0; i < A.rows.size(); ++i) {
    if (a_used[i]) continue;
    // Rows that duplicated an earlier key were counted as duplicates, not as mismatches.
    auto it = index.find(ka[i]);
    if (it != index.end() && it->second != i) continue;
    m.only_a.push_back(A.rows[i]);
  }
  return m;
}

std::string row_id(const Side& s, std::uint32_t r) {
  if (s.frame->text.count("config_id")) return s.frame->cat("config_id").at(r);
  return fmt::format("row {}", s.frame->run_row[r]);
}

std::string show(double v) {
  if (std::fabs(v) < 1e15 && v == std::round(v))
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{:.4g}", v);
}

std::string file_safe(std::string s) {
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return s;
}

Comparison compare_pair(const Side& A, const Side& B, const std::vector<std::string>& cols,
                        const CompareOptions& o, std::vector<std::string>* csv_rows) {
  Comparison c;
  c.a = A.label;
  c.b = B.label;
  const auto m = match(A, B, cols);
  c.duplicates = m.duplicates;
  c.only_a = m.only_a.size();
  c.only_b = m.only_b.size();
  for (std::size_t i = 0; i < std::min<std::size_t>(m.only_a.size(), 1000); ++i)
    c.only_a_ids.push_back(row_id(A, m.only_a[i]));
  for (std::size_t i = 0; i < std::min<std::size_t>(m.only_b.size(), 1000); ++i)
    c.only_b_ids.push_back(row_id(B, m.only_b[i]));
  const auto& pairs = m.pairs;

  const auto& ma = A.frame->num(o.metric);
  const auto& mb = B.frame->num(o.metric);
  const bool lower = lower_is_better(o.metric);
  const bool have_ci = A.frame->numeric.count("step_time_ci_low_s") &&
                       A.frame->numeric.count("step_time_ci_high_s") &&
                       B.frame->numeric.count("step_time_ci_low_s") &&
                       B.frame->numeric.count("step_time_ci_high_s");
  std::vector<double> speedup;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> used;
  std::vector<signed char> outcome;  // +1 win beyond noise, -1 loss beyond noise, 0 within noise
  speedup.reserve(pairs.size());
  std::size_t ci_rows = 0;
  const double band = 1 + o.tie_within;  // speedups within [1/band, band] are ties
  for (const auto& [ra, rb] : pairs) {
    const double a = ma[ra];
    const double b = mb[rb];
    const double s = lower ? a / b : b / a;
    if (!std::isfinite(s) || !(s > 0)) continue;
    speedup.push_back(s);
    used.emplace_back(ra, rb);
    signed char out = 0;
    if (have_ci) {
      const double alo = A.frame->num("step_time_ci_low_s")[ra];
      const double ahi = A.frame->num("step_time_ci_high_s")[ra];
      const double blo = B.frame->num("step_time_ci_low_s")[rb];
      const double bhi = B.frame->num("step_time_ci_high_s")[rb];
      if (std::isfinite(alo) && std::isfinite(ahi) && std::isfinite(blo) && std::isfinite(bhi)) {
        ++ci_rows;
        out = bhi < alo && s > band ? 1 : (ahi < blo && s < 1 / band ? -1 : 0);
      }
    }
    outcome.push_back(out);
  }
  c.matched = speedup.size();
  if (c.matched == 0) {
    c.verdict = "no shared configurations";
    c.finding = fmt::format("{} vs {}: no configuration is in both ({} only in {}, {} only in {}).",
                            c.b, c.a, c.only_a, c.a, c.only_b, c.b);
    return c;
  }
  c.noise_checked = have_ci && ci_rows == c.matched;
  std::vector<char> win(c.matched);
  for (std::size_t i = 0; i < c.matched; ++i) {
    if (speedup[i] < 1) ++c.losses;
    if (outcome[i] > 0) ++c.wins_beyond_noise;
    if (outcome[i] < 0) ++c.losses_beyond_noise;
    win[i] = c.noise_checked ? outcome[i] > 0 : speedup[i] > band;
  }
  {
    auto s = speedup;
    std::sort(s.begin(), s.end());
    c.min = s.front();
    c.max = s.back();
    c.median = quantile_sorted(s, 0.5);
  }
  // Geometric mean = exp(mean log speedup), percentile bootstrap interval (methodology rule 4).
  {
    std::size_t units = 0;
    const auto unit = bootstrap_units(c.matched, 4096, o.seed, &units);
    std::vector<double> sum(units, 0), cnt(units, 0);
    double total = 0;
    for (std::size_t i = 0; i < c.matched; ++i) {
      const double l = std::log(speedup[i]);
      sum[unit[i]] += l;
      cnt[unit[i]] += 1;
      total += l;
    }
    c.geomean = std::exp(total / static_cast<double>(c.matched));
    std::vector<double> reps(static_cast<std::size_t>(std::max(o.bootstrap, 0)));
    if (!reps.empty()) {
      bootstrap(units, reps.size(), o.seed + 29, [&](std::size_t r, const std::vector<double>& w) {
        double s = 0, n = 0;
        for (std::size_t u = 0; u < units; ++u) {
          s += w[u] * sum[u];
          n += w[u] * cnt[u];
        }
        reps[r] = std::exp(s / n);
      });
      std::tie(c.geomean_low, c.geomean_high) = percentile_interval(reps);
    } else {
      c.geomean_low = c.geomean_high = NAN;
    }
  }
  // Per family.
  const bool has_family = A.frame->text.count("family") != 0;
  {
    std::map<std::string, std::vector<double>> fam;
    for (std::size_t i = 0; i < c.matched; ++i)
      fam[has_family ? A.frame->cat("family").at(used[i].first) : "all"].push_back(speedup[i]);
    for (auto& [name, v] : fam) {
      FamilySpeedup fs;
      fs.family = name;
      double l = 0;
      for (double x : v) {
        l += std::log(x);
        fs.losses += x < 1 ? 1 : 0;
      }
      fs.geomean = std::exp(l / static_cast<double>(v.size()));
      fs.box = box_stats(std::move(v));
      c.families.push_back(fs);
    }
  }
  // Verdict.
  const std::size_t wins = static_cast<std::size_t>(std::count(win.begin(), win.end(), 1));
  const std::string band_text =
      o.tie_within > 0 ? fmt::format("the speedup is beyond 1 ± {:.3g}%", 100 * o.tie_within) : "";
  const std::string noise = c.noise_checked
                                ? fmt::format(" beyond noise (step-time CIs do not overlap{}{})",
                                              band_text.empty() ? "" : " and ", band_text)
                            : band_text.empty() ? ""
                                                : fmt::format(" ({})", band_text);
  if (wins == c.matched) {
    c.verdict = "strictly better";
  } else if (wins == 0) {
    c.verdict = "no better";
  } else {
    c.verdict = "conditionally better";
    // Shallow tree on the log2 parameters (and text parameters / families as indicators).
    std::vector<std::uint32_t> rows(c.matched);
    for (std::size_t i = 0; i < c.matched; ++i) rows[i] = used[i].first;
    const auto feats = rule_features(*A.frame, rows, o.by);
    c.rule = fit_rule(feats, win, o.depth, std::max<std::size_t>(1, c.matched / 100));
  }
  c.finding = fmt::format(
      "{} vs {} ({} over {} shared configs): geometric-mean speedup {:.3f}x (95% CI "
      "{:.3f}–{:.3f}), "
      "range {:.3g}x to {:.3g}x, median {:.3g}x; {} loses in {} configs ({:.1f}%)",
      c.b, c.a, o.metric, c.matched, c.geomean, c.geomean_low, c.geomean_high, c.min, c.max,
      c.median, c.b, c.losses,
      100.0 * static_cast<double>(c.losses) / static_cast<double>(c.matched));
  if (c.noise_checked)
    c.finding += fmt::format(", wins beyond noise in {} and loses beyond noise in {}",
                             c.wins_beyond_noise, c.losses_beyond_noise);
  c.finding += fmt::format(". Verdict: {} is {}", c.b, c.verdict);
  if (c.verdict == "strictly better") {
    c.finding += fmt::format(" than {}: it wins in every shared config{}", c.a, noise);
  } else if (c.verdict == "conditionally better") {
    const bool ties =
        c.noise_checked && c.matched - c.wins_beyond_noise - c.losses_beyond_noise > 0;
    const std::string beyond = noise.empty() ? "" : " beyond noise";
    if (c.rule.leaves <= 1) {
      // The tree found no split: its wins are not a region of the parameters.
      c.finding += fmt::format(
          ": {} wins{} in {} of {} configs, but no rule of depth {} on the parameters tells them "
          "from the rest; scattered wins like these are what two sweeps of one spec on a noisy "
          "machine show (--tie-within)",
          c.b, beyond, wins, c.matched, o.depth);
    } else {
      c.finding += fmt::format(": {} wins{} when {}", c.b, beyond,
                               c.rule.wins.empty() ? "(no simple rule)" : c.rule.wins);
      if (!c.rule.loses.empty())
        c.finding += fmt::format("; {} when {}", ties ? "loses or ties" : "loses", c.rule.loses);
      c.finding += fmt::format(" (rule accuracy {:.1f}%)", 100 * c.rule.accuracy);
    }
  } else {
    c.finding += fmt::format(" than {}: it wins{} in no shared config", c.a, noise);
  }
  c.finding += ".";
  if (c.only_a + c.only_b > 0)
    c.finding += fmt::format(" Left out of the statistics: {} configs only in {}, {} only in {}.",
                             c.only_a, c.a, c.only_b, c.b);
  if (c.duplicates > 0) c.finding += fmt::format(" {} duplicate configs ignored.", c.duplicates);

  if (csv_rows != nullptr) {
    fmt::memory_buffer buf;
    for (std::size_t i = 0; i < c.matched; ++i) {
      const auto [ra, rb] = used[i];
      fmt::format_to(std::back_inserter(buf), "{},{},{:.6g},{:.6g},{:.6g},{}\n", row_id(A, ra),
                     has_family ? A.frame->cat("family").at(ra) : "", ma[ra], mb[rb], speedup[i],
                     c.noise_checked ? (outcome[i] > 0   ? "win"
                                        : outcome[i] < 0 ? "loss"
                                                         : "tie")
                                     : (speedup[i] > band       ? "win"
                                        : speedup[i] < 1 / band ? "loss"
                                                                : "tie"));
    }
    csv_rows->emplace_back(buf.data(), buf.size());
  }
  return c;
}

void plot_comparison(const Comparison& c, const CompareOptions& o,
                     const std::filesystem::path& base) {
  std::string gp = "$box << EOD\n";
  for (std::size_t i = 0; i < c.families.size(); ++i) {
    const auto& f = c.families[i];
    gp += fmt::format("{} {:.8g} {:.8g} {:.8g} {:.8g} {:.8g} {}\n", i, f.box.q1, f.box.whisker_low,
                      f.box.whisker_high, f.box.q3, f.box.median,
                      gp_quote(fmt::format("{} (n={}, {} lose)", f.family, f.box.n, f.losses)));
  }
  gp += "EOD\n";
  gp +=
      "set termoption noenhanced\nset logscale y 2\nset grid ytics\nset style fill solid 0.35 "
      "border -1\n";
  gp += "set boxwidth 0.4\nset offsets 0, 0, graph 0.05, graph 0.05\n";
  gp += fmt::format("set xrange [-0.7:{}]\n", static_cast<double>(c.families.size()) - 0.3);
  gp += fmt::format("set ylabel {}\n",
                    gp_quote(fmt::format("speedup of {} over {} ({})", c.b, c.a, o.metric)));
  gp += fmt::format("set title {} font ',10'\n",
                    gp_quote(fmt::format(
                        "{} vs {}: geometric mean {:.3f}x (95% CI {:.3f}-{:.3f}), {} of {} "
                        "configs lose\nboxes: quartiles and median; whiskers: most extreme "
                        "config within 1.5 IQR of the box",
                        c.b, c.a, c.geomean, c.geomean_low, c.geomean_high, c.losses, c.matched)));
  gp += "set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb '#aa0000'\n";
  gp += "set xtics font ',9'\n";
  gp +=
      "plot $box using 1:2:3:4:5:xtic(7) with candlesticks whiskerbars 0.5 lc rgb '#4a7ab5' "
      "notitle, $box using 1:6:6:6:6 with candlesticks lw 2 lc rgb '#000000' notitle\n";
  const int width = static_cast<int>(std::max<std::size_t>(760, 200 * c.families.size() + 200));
  render(gp, base, width, 460);
}

}  // namespace

std::vector<TreeFeature> rule_features(const Frame& frame, const std::vector<std::uint32_t>& rows,
                                       std::string_view skip_knob) {
  std::vector<TreeFeature> feats;
  const std::size_t n = rows.size();
  const auto add_numeric = [&](const std::string& name) {
    if (!frame.numeric.count(name)) return;
    const auto& v = frame.num(name);
    TreeFeature f;
    f.name = name;
    f.values.resize(n);
    f.display.resize(n);
    double lo = INFINITY, hi = -INFINITY;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = v[rows[i]];
      if (!(x > 0)) return;  // not applicable to every row
      f.values[i] = std::log2(x);
      f.display[i] = x;
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    if (hi > lo) feats.push_back(std::move(f));
  };
  const auto add_text = [&](const std::string& name) {
    if (!frame.text.count(name)) return;
    const auto& cat = frame.cat(name);
    std::vector<char> present(cat.levels.size(), 0);
    for (std::size_t i = 0; i < n; ++i) present[cat.codes[rows[i]]] = 1;
    if (std::count(present.begin(), present.end(), 1) < 2) return;
    for (std::size_t l = 0; l < cat.levels.size(); ++l) {
      if (!present[l] || cat.levels[l].empty()) continue;
      TreeFeature f;
      f.name = fmt::format("{} = {}", name, cat.levels[l]);
      f.negated = fmt::format("{} ≠ {}", name, cat.levels[l]);
      f.indicator = true;
      f.values.resize(n);
      for (std::size_t i = 0; i < n; ++i)
        f.values[i] = cat.codes[rows[i]] == static_cast<std::int32_t>(l) ? 1 : 0;
      feats.push_back(std::move(f));
    }
  };
  for (auto p : kNumericParams) add_numeric(std::string(p));
  add_text("family");
  for (auto p : kTextParams) add_text(std::string(p));
  for (auto k : kKnobs)
    if (k != skip_knob) {
      if (k == "threads")
        add_numeric("threads");
      else
        add_text(std::string(k));
    }
  return feats;
}

ConfigMatch match_configs(const Frame& a, const Frame& b) {
  Side sa{&a, std::vector<std::uint32_t>(a.rows), a.label()};
  Side sb{&b, std::vector<std::uint32_t>(b.rows), b.label()};
  std::iota(sa.rows.begin(), sa.rows.end(), 0U);
  std::iota(sb.rows.begin(), sb.rows.end(), 0U);
  auto cols = key_columns(a, "");
  const auto other = key_columns(b, "");
  std::vector<std::string> common;
  for (const auto& c : cols)
    if (std::find(other.begin(), other.end(), c) != other.end()) common.push_back(c);
  return match(sa, sb, common);
}

std::vector<std::string> config_key_columns() {
  std::vector<std::string> c = {"config_id", "family"};
  for (auto p : kNumericParams) c.emplace_back(p);
  for (auto p : kTextParams) c.emplace_back(p);
  for (auto p : kKnobs) c.emplace_back(p);
  return c;
}

std::vector<std::string> compare_columns(const CompareOptions& o) {
  std::vector<std::string> c = {"config_id", "family", o.metric, "step_time_ci_low_s",
                                "step_time_ci_high_s"};
  for (auto p : kNumericParams) c.emplace_back(p);
  for (auto p : kTextParams) c.emplace_back(p);
  for (auto p : kKnobs) c.emplace_back(p);
  return c;
}

CompareResult compare(const CompareOptions& o) {
  if (o.by.empty() && o.inputs.size() < 2)
    throw InputError("compare needs two or more results files, or one file and --by KNOB");
  if (!o.by.empty() && o.inputs.size() != 1)
    throw InputError("compare --by compares the levels of a knob inside one results file");
  std::vector<Frame> frames;
  for (const auto& in : o.inputs) frames.push_back(load_frame(in, compare_columns(o), o.where));
  return compare(frames, o);
}

CompareResult compare(const std::vector<Frame>& frames, const CompareOptions& o) {
  for (const auto& f : frames)
    if (!f.numeric.count(o.metric))
      throw InputError(fmt::format("{} has no numeric column '{}'", f.path.string(), o.metric));
  std::vector<Side> sides;
  if (!o.by.empty()) {
    if (std::find(kKnobs.begin(), kKnobs.end(), o.by) == kKnobs.end())
      throw InputError(
          fmt::format("--by: '{}' is not a knob (mode, dtype, algorithm, isa_cap, threads)", o.by));
    const auto& f = frames.at(0);
    if (!f.has(o.by)) throw InputError(fmt::format("{} has no column '{}'", f.path.string(), o.by));
    std::map<std::string, std::vector<std::uint32_t>> levels;
    if (f.text.count(o.by)) {
      const auto& cat = f.cat(o.by);
      for (std::size_t r = 0; r < f.rows; ++r)
        levels[cat.at(r)].push_back(static_cast<std::uint32_t>(r));
    } else {
      const auto& v = f.num(o.by);
      std::map<double, std::vector<std::uint32_t>> nl;
      for (std::size_t r = 0; r < f.rows; ++r) nl[v[r]].push_back(static_cast<std::uint32_t>(r));
      for (auto& [x, rows] : nl) levels[show(x)] = std::move(rows);
    }
    if (levels.size() < 2)
      throw InputError(fmt::format("--by {}: the selection holds only one level", o.by));
    std::string base = o.base.empty() ? levels.begin()->first : o.base;
    if (!levels.count(base))
      throw InputError(fmt::format("--base: {} has no level '{}'", o.by, base));
    sides.push_back({&f, std::move(levels.at(base)), fmt::format("{}={}", o.by, base)});
    for (auto& [lv, rows] : levels)
      if (lv != base) sides.push_back({&f, std::move(rows), fmt::format("{}={}", o.by, lv)});
  } else {
    if (frames.size() < 2) throw InputError("compare needs two or more results files");
    for (const auto& f : frames) {
      Side s{&f, std::vector<std::uint32_t>(f.rows), f.label()};
      for (std::size_t r = 0; r < f.rows; ++r) s.rows[r] = static_cast<std::uint32_t>(r);
      sides.push_back(std::move(s));
    }
    // Equal stems (a/out.h5 vs b/out.h5): tell them apart by host.
    for (std::size_t i = 1; i < sides.size(); ++i)
      if (sides[i].label == sides[0].label)
        sides[i].label += "@" + (frames[i].system.hostname.empty() ? std::to_string(i)
                                                                   : frames[i].system.hostname);
  }
  auto cols = key_columns(*sides[0].frame, o.by);
  for (std::size_t i = 1; i < sides.size(); ++i) {
    const auto other = key_columns(*sides[i].frame, o.by);
    std::vector<std::string> common;
    for (const auto& c : cols)
      if (std::find(other.begin(), other.end(), c) != other.end()) common.push_back(c);
    cols = common;
  }
  CompareResult res;
  res.metric = o.metric;
  for (std::size_t i = 1; i < sides.size(); ++i) {
    std::vector<std::string> rows;
    auto c = compare_pair(sides[0], sides[i], cols, o, o.out_dir.empty() ? nullptr : &rows);
    if (!o.out_dir.empty()) {
      std::filesystem::create_directories(o.out_dir);
      const auto stem = file_safe(fmt::format("compare_{}_vs_{}", c.b, c.a));
      const auto base = o.out_dir / stem;
      {
        std::ofstream f(o.out_dir / (stem + "_configs.csv"));
        f << fmt::format("config_id,family,{0}_{1},{0}_{2},speedup,outcome\n", o.metric,
                         file_safe(c.a), file_safe(c.b));
        for (const auto& r : rows) f << r;
      }
      {
        std::ofstream f(o.out_dir / (stem + "_families.csv"));
        f << "family,n,geomean,q1,median,q3,whisker_low,whisker_high,outliers,losses\n";
        for (const auto& fs : c.families)
          f << fmt::format("{},{},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{},{}\n", fs.family,
                           fs.box.n, fs.geomean, fs.box.q1, fs.box.median, fs.box.q3,
                           fs.box.whisker_low, fs.box.whisker_high, fs.box.outliers, fs.losses);
      }
      {
        std::ofstream f(o.out_dir / (stem + "_unmatched.csv"));
        f << "only_in,config_id\n";
        for (const auto& id : c.only_a_ids) f << c.a << "," << id << "\n";
        for (const auto& id : c.only_b_ids) f << c.b << "," << id << "\n";
      }
      if (c.matched > 0) {
        plot_comparison(c, o, base);
        res.files.push_back(std::filesystem::path(base).replace_extension(".svg"));
        res.files.push_back(std::filesystem::path(base).replace_extension(".png"));
      }
      res.files.push_back(o.out_dir / (stem + "_configs.csv"));
      res.files.push_back(o.out_dir / (stem + "_families.csv"));
      res.files.push_back(o.out_dir / (stem + "_unmatched.csv"));
    }
    res.finding += (res.finding.empty() ? "" : "\n") + c.finding;
    res.comparisons.push_back(std::move(c));
  }
  return res;
}

std::string CompareResult::json() const {
  const auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
  nlohmann::json j;
  j["analysis"] = "compare";
  j["metric"] = metric;
  j["finding"] = finding;
  j["files"] = nlohmann::json::array();
  for (const auto& f : files) j["files"].push_back(f.string());
  for (const auto& c : comparisons) {
    nlohmann::json jc = {
        {"a", c.a},
        {"b", c.b},
        {"matched", c.matched},
        {"only_a", c.only_a},
        {"only_b", c.only_b},
        {"duplicates", c.duplicates},
        {"geomean", num(c.geomean)},
        {"geomean_ci", {num(c.geomean_low), num(c.geomean_high)}},
        {"min", num(c.min)},
        {"median", num(c.median)},
        {"max", num(c.max)},
        {"losses", c.losses},
        {"wins_beyond_noise", c.wins_beyond_noise},
        {"losses_beyond_noise", c.losses_beyond_noise},
        {"noise_checked", c.noise_checked},
        {"verdict", c.verdict},
        {"rule", {{"wins", c.rule.wins}, {"loses", c.rule.loses}, {"accuracy", c.rule.accuracy}}},
        {"only_a_ids", c.only_a_ids},
        {"only_b_ids", c.only_b_ids},
        {"finding", c.finding}};
    for (const auto& f : c.families)
      jc["families"].push_back({{"family", f.family},
                                {"n", f.box.n},
                                {"geomean", num(f.geomean)},
                                {"q1", f.box.q1},
                                {"median", f.box.median},
                                {"q3", f.box.q3},
                                {"whisker_low", f.box.whisker_low},
                                {"whisker_high", f.box.whisker_high},
                                {"outliers", f.box.outliers},
                                {"losses", f.losses}});
    j["comparisons"].push_back(jc);
  }
  return j.dump(2);
}

}  // namespace dnnscape::analysis
