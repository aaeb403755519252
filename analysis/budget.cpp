#include "analysis/budget.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "analysis/compare.hpp"
#include "analysis/frame.hpp"
#include "analysis/gnuplot.hpp"

namespace dnnscape::analysis {
namespace {

std::string show(double v) {
  if (std::fabs(v) < 1e15 && v == std::round(v))
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{:.4g}", v);
}

// 1048576 -> "1.05M".
std::string count_label(double v) {
  if (!std::isfinite(v)) return "n/a";
  if (v >= 1e9) return fmt::format("{:.3g}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.3g}M", v / 1e6);
  if (v >= 1e4) return fmt::format("{:.3g}k", v / 1e3);
  return show(v);
}

std::string tic_label(double v) {
  if (v >= 1024 && std::fmod(v, 1024) == 0)
    return fmt::format("{}k", static_cast<long long>(v / 1024));
  return show(v);
}

std::string file_safe(std::string s) {
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return s;
}

double percent(std::size_t a, std::size_t b) {
  return b == 0 ? 0.0 : 100.0 * static_cast<double>(a) / static_cast<double>(b);
}

// One condition of a rendered rule ("batch ≤ 64", "128 ≤ nodes ≤ 512", "family = cnn") as a
// predicate over the rows the features were built from; nullopt when it cannot be read back.
std::optional<std::function<bool(std::size_t)>> read_condition(
    const std::string& c, const std::vector<TreeFeature>& feats) {
  for (const auto& f : feats) {
    if (!f.indicator) continue;
    if (c == f.name) return [&f](std::size_t i) { return f.values[i] > 0.5; };
    if (c == f.negated) return [&f](std::size_t i) { return f.values[i] <= 0.5; };
  }
  std::vector<std::string> t;
  std::istringstream in(c);
  for (std::string w; in >> w;) t.push_back(w);
  const auto feature = [&](const std::string& name) -> const TreeFeature* {
    for (const auto& f : feats)
      if (!f.indicator && f.name == name) return &f;
    return nullptr;
  };
  const auto number = [](const std::string& w, double& v) {
    char* end = nullptr;
    v = std::strtod(w.c_str(), &end);
    return end != w.c_str() && *end == '\0';
  };
  const auto disp = [](const TreeFeature* f, std::size_t i) {
    return f->display.empty() ? f->values[i] : f->display[i];
  };
  double a = 0, b = 0;
  if (t.size() == 3 && number(t[2], a)) {
    const auto* f = feature(t[0]);
    if (f == nullptr) return std::nullopt;
    if (t[1] == "≤") return [f, a, disp](std::size_t i) { return disp(f, i) <= a; };
    if (t[1] == "≥") return [f, a, disp](std::size_t i) { return disp(f, i) >= a; };
    if (t[1] == "=") return [f, a, disp](std::size_t i) { return disp(f, i) == a; };
    return std::nullopt;
  }
  if (t.size() == 5 && t[1] == "≤" && t[3] == "≤" && number(t[0], a) && number(t[4], b)) {
    const auto* f = feature(t[2]);
    if (f == nullptr) return std::nullopt;
    return [f, a, b, disp](std::size_t i) { return disp(f, i) >= a && disp(f, i) <= b; };
  }
  return std::nullopt;
}

std::vector<std::string> split_on(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  std::size_t from = 0;
  for (auto at = s.find(sep); at != std::string::npos; at = s.find(sep, from)) {
    out.push_back(s.substr(from, at - from));
    from = at + sep.size();
  }
  out.push_back(s.substr(from));
  return out;
}

// The tree prints a region as its leaves' paths ("batch ≤ 64 or batch ≥ 128 and nodes ≤ 256").
// Drops every condition whose removal leaves the labelling of every row unchanged, so the rule
// reads "batch ≤ 64 or nodes ≤ 256"; a rule it cannot read back is returned as is.
std::string simplify_rule(const std::string& rule, const std::vector<TreeFeature>& feats) {
  if (rule.empty() || feats.empty()) return rule;
  const std::size_t n = feats.front().values.size();
  using Pred = std::function<bool(std::size_t)>;
  std::vector<std::vector<std::string>> text;
  std::vector<std::vector<Pred>> preds;
  for (const auto& part : split_on(rule, " or ")) {
    text.push_back(split_on(part, " and "));
    preds.emplace_back();
    for (const auto& c : text.back()) {
      auto p = read_condition(c, feats);
      if (!p) return rule;
      preds.back().push_back(std::move(*p));
    }
  }
  const auto label = [&](std::vector<char>& out) {
    out.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 0; k < preds.size() && !out[i]; ++k)
        out[i] = std::all_of(preds[k].begin(), preds[k].end(), [i](const Pred& p) { return p(i); });
  };
  std::vector<char> original, now;
  label(original);
  for (std::size_t k = 0; k < preds.size(); ++k) {
    for (std::size_t c = 0; c < preds[k].size() && preds[k].size() > 1;) {
      auto p = std::move(preds[k][c]);
      preds[k].erase(preds[k].begin() + static_cast<std::ptrdiff_t>(c));
      label(now);
      if (now == original) {
        text[k].erase(text[k].begin() + static_cast<std::ptrdiff_t>(c));
        continue;
      }
      preds[k].insert(preds[k].begin() + static_cast<std::ptrdiff_t>(c), std::move(p));
      ++c;
    }
  }
  std::vector<std::string> parts;
  for (const auto& conds : text) {
    std::string part;
    for (std::size_t c = 0; c < conds.size(); ++c) part += (c ? " and " : "") + conds[c];
    if (std::find(parts.begin(), parts.end(), part) == parts.end()) parts.push_back(part);
  }
  std::string out;
  for (std::size_t k = 0; k < parts.size(); ++k) out += (k ? " or " : "") + parts[k];
  return out;
}

// The usable rows of one system and their latencies.
struct System {
  const Frame* frame = nullptr;
  std::string label;
  std::vector<std::uint32_t> rows;
  std::vector<double> latency;  // per entry of rows
  std::size_t training_rows = 0, training_left_out = 0, no_latency = 0;
};

struct Cell {
  std::size_t configs = 0, feasible = 0;
};

// Heat-map cells of one family: (x, y) -> counts.
struct Panel {
  std::string family, x, y;
  std::map<std::pair<double, double>, Cell> cells;
};

std::string family_of(const Frame& f, std::uint32_t r) {
  return f.text.count("family") ? f.cat("family").at(r) : std::string("all");
}

BudgetSection analyse(const System& s, double budget_s, const BudgetOptions& o,
                      const std::string& latency_column, std::vector<Panel>* panels) {
  BudgetSection sec;
  sec.system = s.label;
  sec.budget_s = budget_s;
  sec.budget = format_budget(budget_s);
  sec.training_rows = s.training_rows;
  sec.training_left_out = s.training_left_out;
  sec.no_latency = s.no_latency;
  const Frame& f = *s.frame;
  const bool has_params = f.numeric.count("params") != 0;
  const bool has_batch = f.numeric.count("batch") != 0;
  const bool has_id = f.text.count("config_id") != 0;
  const std::vector<double>* batch_col = has_batch ? &f.num("batch") : nullptr;
  const std::vector<double>* params_col = has_params ? &f.num("params") : nullptr;

  // Rows per family (families in name order).
  std::map<std::string, std::vector<std::size_t>> by_family;  // indices into s.rows
  for (std::size_t i = 0; i < s.rows.size(); ++i) by_family[family_of(f, s.rows[i])].push_back(i);
  for (const auto& [family, idx] : by_family) {
    std::vector<std::uint32_t> rows;
    std::vector<char> win;
    rows.reserve(idx.size());
    win.reserve(idx.size());
    std::map<double, BatchFit> batches;
    for (auto i : idx) {
      const auto r = s.rows[i];
      const bool ok = s.latency[i] <= budget_s;
      rows.push_back(r);
      win.push_back(ok ? 1 : 0);
      const double b = batch_col ? (*batch_col)[r] : -1;
      auto& bf = batches[b];
      if (bf.configs == 0) {
        bf.family = family;
        bf.batch = b;
        bf.max_params = NAN;
        bf.max_params_latency_s = NAN;
      }
      ++bf.configs;
      if (!ok) continue;
      ++bf.feasible;
      const double p = params_col ? (*params_col)[r] : NAN;
      if (std::isfinite(p) && !(p <= bf.max_params)) {  // NaN max_params: first fit
        bf.max_params = p;
        bf.max_params_config =
            has_id ? f.cat("config_id").at(r) : fmt::format("row {}", f.run_row[r]);
        bf.max_params_latency_s = s.latency[i];
      }
    }
    for (auto& [b, bf] : batches) sec.batches.push_back(std::move(bf));

    FamilyRule fr;
    fr.family = family;
    fr.configs = rows.size();
    fr.feasible = static_cast<std::size_t>(std::count(win.begin(), win.end(), 1));
    if (fr.feasible == fr.configs) {
      fr.region = "every config";
      fr.outside = "no config";
      fr.rule.accuracy = 1;
      fr.rule.leaves = 1;
    } else if (fr.feasible == 0) {
      fr.region = "no config";
      fr.outside = "every config";
      fr.rule.accuracy = 1;
      fr.rule.leaves = 1;
    } else {
      const auto feats = rule_features(f, rows, o.by);
      fr.rule = fit_rule(feats, win, o.depth, std::max<std::size_t>(1, rows.size() / 100));
      fr.rule.wins = simplify_rule(fr.rule.wins, feats);
      fr.rule.loses = simplify_rule(fr.rule.loses, feats);
      fr.region = fr.rule.wins.empty() ? "no simple rule" : fr.rule.wins;
      fr.outside = fr.rule.loses.empty() ? "no simple rule" : fr.rule.loses;
    }
    sec.configs += fr.configs;
    sec.feasible += fr.feasible;
    sec.rules.push_back(std::move(fr));

    if (panels != nullptr) {
      Panel p;
      p.family = family;
      p.x = o.x.empty() ? main_size_parameter(family) : o.x;
      p.y = o.y;
      if (p.x.empty() || !f.numeric.count(p.x) || !f.numeric.count(p.y)) continue;
      const auto& xv = f.num(p.x);
      const auto& yv = f.num(p.y);
      for (std::size_t k = 0; k < rows.size(); ++k) {
        const double x = xv[rows[k]], y = yv[rows[k]];
        if (!(x > 0) || !(y > 0)) continue;  // n/a for this row
        auto& c = p.cells[{x, y}];
        ++c.configs;
        c.feasible += win[k] ? 1 : 0;
      }
      if (!p.cells.empty()) panels->push_back(std::move(p));
    }
  }

  // Finding.
  const std::string what =
      o.allow_training && s.training_rows > 0
          ? fmt::format("{} of inference rows, step_time_s of training rows", latency_column)
          : latency_column;
  sec.finding =
      fmt::format("{} at {} ({}): {} of {} configs meet the budget ({:.1f}%).", s.label, sec.budget,
                  what, sec.feasible, sec.configs, percent(sec.feasible, sec.configs));
  const bool several = sec.rules.size() > 1;
  for (const auto& fr : sec.rules) {
    // "Feasible when ..." for one family, "fc: feasible when ..." for several.
    const std::string who = several ? fmt::format(" {}: ", fr.family) : " ";
    const auto cap = [several](std::string t) {
      if (!several && !t.empty()) t[0] = static_cast<char>(std::toupper(t[0]));
      return t;
    };
    if (fr.feasible == 0 || fr.feasible == fr.configs) {
      sec.finding +=
          fmt::format("{}{} fits{}.", who, cap(fr.feasible == 0 ? "no config" : "every config"),
                      several ? fmt::format(" ({})", fr.configs) : "");
      continue;
    }
    sec.finding += fmt::format("{}{} {}; over budget when {} (rule accuracy {:.1f}%).", who,
                               cap("feasible when"), fr.region, fr.outside, 100 * fr.rule.accuracy);
  }
  // Largest model per batch size, over the families.
  std::map<double, const BatchFit*> best;
  std::map<double, std::pair<std::size_t, std::size_t>> counts;
  for (const auto& bf : sec.batches) {
    auto& c = counts[bf.batch];
    c.first += bf.feasible;
    c.second += bf.configs;
    auto& b = best[bf.batch];
    if (std::isfinite(bf.max_params) && (b == nullptr || bf.max_params > b->max_params)) b = &bf;
  }
  if (has_batch && has_params) {
    sec.finding += " Largest model that fits, by batch:";
    bool first = true;
    for (const auto& [batch, bf] : best) {
      const auto [fe, n] = counts.at(batch);
      sec.finding += fmt::format("{} {}: ", first ? "" : ",", show(batch));
      first = false;
      if (bf == nullptr) {
        sec.finding += fmt::format("none (0 of {})", n);
      } else {
        sec.finding += fmt::format("{} params{} ({} of {} fit)", count_label(bf->max_params),
                                   several ? fmt::format(" ({})", bf->family) : "", fe, n);
      }
    }
    sec.finding += ".";
  }
  if (s.training_rows > 0)
    sec.finding += fmt::format(
        " {} training rows use step_time_s as their latency (--allow-training: a training step, "
        "not an inference latency).",
        s.training_rows);
  if (s.training_left_out > 0)
    sec.finding += fmt::format(
        " {} training rows left out (no latency; --allow-training uses their step_time_s).",
        s.training_left_out);
  if (s.no_latency > 0)
    sec.finding += fmt::format(" {} rows without a finite latency left out.", s.no_latency);
  return sec;
}

void plot_panels(const BudgetSection& sec, const std::vector<Panel>& panels,
                 const std::string& latency_column, const std::filesystem::path& base) {
  std::string gp =
      "set termoption noenhanced\nset datafile missing 'NaN'\n"
      "set palette defined (0 '#d73027', 0.5 '#fee08b', 1 '#1a9850')\nset cbrange [0:1]\n";
  gp += fmt::format("set cblabel {}\n", gp_quote(fmt::format("share of configs with {} <= {}",
                                                             latency_column, sec.budget)));
  for (std::size_t i = 0; i < panels.size(); ++i) {
    const auto& p = panels[i];
    std::set<double> xs, ys;
    for (const auto& [k, c] : p.cells) {
      xs.insert(k.first);
      ys.insert(k.second);
    }
    const std::vector<double> xv(xs.begin(), xs.end()), yv(ys.begin(), ys.end());
    std::string img = fmt::format("$img{} << EOD\n", i);
    std::string lab = fmt::format("$lab{} << EOD\n", i);
    for (std::size_t yi = 0; yi < yv.size(); ++yi) {
      for (std::size_t xi = 0; xi < xv.size(); ++xi) {
        auto it = p.cells.find({xv[xi], yv[yi]});
        if (it == p.cells.end()) {
          img += fmt::format("{} {} NaN\n", xi, yi);
          continue;
        }
        const double share =
            static_cast<double>(it->second.feasible) / static_cast<double>(it->second.configs);
        img += fmt::format("{} {} {:.6g}\n", xi, yi, share);
        lab += fmt::format("{} {} \"{:.0f}%\"\n", xi, yi, 100 * share);
      }
      img += "\n";
    }
    gp += img + "EOD\n" + lab + "EOD\n";
  }
  const std::size_t cols = std::min<std::size_t>(panels.size(), 3);
  const std::size_t rows = (panels.size() + cols - 1) / cols;
  gp += fmt::format("set multiplot layout {},{} title {} font ',11'\n", rows, cols,
                    gp_quote(fmt::format("{}: configs meeting {} ({}), {} of {}", sec.system,
                                         sec.budget, latency_column, sec.feasible, sec.configs)));
  for (std::size_t i = 0; i < panels.size(); ++i) {
    const auto& p = panels[i];
    std::set<double> xs, ys;
    for (const auto& [k, c] : p.cells) {
      xs.insert(k.first);
      ys.insert(k.second);
    }
    const auto tics = [](const std::set<double>& values) {
      std::string t = "(";
      std::size_t k = 0;
      for (double v : values) {
        t += fmt::format("{}\"{}\" {}", k ? ", " : "", tic_label(v), k);
        ++k;
      }
      return t + ")";
    };
    const std::string tx = tics(xs), ty = tics(ys);
    std::string region;
    for (const auto& fr : sec.rules)
      if (fr.family == p.family) region = fr.region;
    gp += fmt::format("set title {} font ',9'\n",
                      gp_quote(fmt::format("{}: feasible when {}", p.family, region)));
    gp +=
        fmt::format("set xtics {} rotate by 45 right font ',8'\nset ytics {} font ',8'\n", tx, ty);
    gp += fmt::format("set xlabel {}\nset ylabel {}\n", gp_quote(p.x + " (log2 scale)"),
                      gp_quote(p.y + " (log2 scale)"));
    gp += fmt::format("set xrange [-0.5:{}]\nset yrange [-0.5:{}]\n",
                      static_cast<double>(xs.size()) - 0.5, static_cast<double>(ys.size()) - 0.5);
    gp += fmt::format("plot $img{0} using 1:2:3 with image pixels notitle", i);
    if (xs.size() * ys.size() <= 256)
      gp += fmt::format(", $lab{0} using 1:2:3 with labels font ',7' notitle", i);
    gp += "\n";
  }
  gp += "unset multiplot\n";
  const int width = static_cast<int>(std::max<std::size_t>(560, 440 * cols + 120));
  const int height = static_cast<int>(std::max<std::size_t>(460, 380 * rows + 80));
  render(gp, base, width, height);
}

std::vector<std::string> wanted_columns(const BudgetOptions& o, const std::string& latency) {
  std::vector<std::string> c = {"config_id", "family", "params", "mode", latency, "step_time_s"};
  for (auto p : kNumericParams) c.emplace_back(p);
  for (auto p : kTextParams) c.emplace_back(p);
  for (auto p : kKnobs) c.emplace_back(p);
  if (!o.x.empty()) c.push_back(o.x);
  c.push_back(o.y);
  return c;
}

}  // namespace

double parse_budget(std::string_view text) {
  const auto bad = [&] {
    return InputError(fmt::format(
        "--budget: '{}' is not a duration (expected a number and a unit: 30ms, 0.5s, 500us)",
        text));
  };
  std::string s(text);
  const char* begin = s.c_str();
  while (*begin == ' ') ++begin;
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  if (end == begin) throw bad();
  std::string unit(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  while (!unit.empty() && unit.back() == ' ') unit.pop_back();
  double scale = 0;
  if (unit == "s")
    scale = 1;
  else if (unit == "ms")
    scale = 1e-3;
  else if (unit == "us" || unit == "µs")
    scale = 1e-6;
  else
    throw bad();
  if (!std::isfinite(v) || !(v > 0))
    throw InputError(fmt::format("--budget: '{}' must be a positive duration", text));
  return v * scale;
}

std::vector<double> preset_budgets(std::string_view preset) {
  if (preset == "cv") return {0.030};
  if (preset == "nlp") return {0.100, 0.500};
  if (preset == "feed") return {0.500};
  throw InputError(fmt::format(
      "--preset: unknown preset '{}' (expected cv = 30ms, nlp = 100ms and 500ms, feed = 500ms)",
      preset));
}

std::string format_budget(double s) {
  if (s >= 1) return fmt::format("{:.6g}s", s);
  if (s >= 1e-3) return fmt::format("{:.6g}ms", s * 1e3);
  return fmt::format("{:.6g}us", s * 1e6);
}

std::string main_size_parameter(std::string_view family) {
  if (family == "fc") return "nodes";
  if (family == "cnn") return "filters";
  if (family == "rnn") return "embedding";
  return "";
}

BudgetResult budget(const BudgetOptions& o) {
  if (o.inputs.empty()) throw InputError("budget needs one or more results files");
  if (o.budgets_s.empty())
    throw InputError("budget needs --budget DURATION or --preset cv|nlp|feed");
  for (double b : o.budgets_s)
    if (!std::isfinite(b) || !(b > 0)) throw InputError("--budget must be a positive duration");
  if (o.percentile != 50 && o.percentile != 90 && o.percentile != 99)
    throw InputError(fmt::format("--percentile: {} is not one of 50, 90, 99", o.percentile));
  for (const auto& fam : o.families)
    if (main_size_parameter(fam).empty())
      throw InputError(fmt::format("--families: unknown family '{}' (expected fc, cnn, rnn)", fam));
  if (!o.by.empty() && std::find(kKnobs.begin(), kKnobs.end(), o.by) == kKnobs.end())
    throw InputError(
        fmt::format("--by: '{}' is not a knob (mode, dtype, algorithm, isa_cap, threads)", o.by));
  if (o.depth < 1 || o.depth > 6) throw InputError("--depth must be between 1 and 6");
  std::vector<double> budgets = o.budgets_s;
  std::sort(budgets.begin(), budgets.end());
  budgets.erase(std::unique(budgets.begin(), budgets.end(),
                            [](double a, double b) { return std::fabs(a - b) <= 1e-12 * b; }),
                budgets.end());

  BudgetResult res;
  res.percentile = o.percentile;
  res.latency_column = fmt::format("latency_p{}_s", o.percentile);
  const auto& lat_col = res.latency_column;

  std::vector<Frame> frames;
  frames.reserve(o.inputs.size());
  for (const auto& in : o.inputs) {
    if (existing_columns(in, {lat_col}).empty() && !o.allow_training)
      throw InputError(fmt::format(
          "{} has no column '{}' (no inference latencies); pass --allow-training to use the "
          "step_time_s of training rows",
          in.string(), lat_col));
    frames.push_back(load_frame(in, wanted_columns(o, lat_col), o.where));
    const auto& f = frames.back();
    if (!o.x.empty() && !f.numeric.count(o.x))
      throw InputError(fmt::format("{} has no numeric column '{}'", in.string(), o.x));
    if (!f.numeric.count(o.y))
      throw InputError(fmt::format("{} has no numeric column '{}'", in.string(), o.y));
    if (!o.by.empty() && !f.has(o.by))
      throw InputError(fmt::format("{} has no column '{}'", in.string(), o.by));
  }

  std::vector<System> systems;
  for (std::size_t fi = 0; fi < frames.size(); ++fi) {
    const Frame& f = frames[fi];
    std::string label = f.label();
    for (std::size_t j = 0; j < fi; ++j)
      if (frames[j].label() == label) {
        label += "@" + (f.system.hostname.empty() ? std::to_string(fi) : f.system.hostname);
        break;
      }
    const Categorical* mode = f.text.count("mode") ? &f.cat("mode") : nullptr;
    const std::int32_t training_code = mode ? mode->code("training") : -1;
    // Families kept, per level of the family column (all when --families is not given).
    const Categorical* fam = f.text.count("family") ? &f.cat("family") : nullptr;
    std::vector<char> keep_family(fam ? fam->levels.size() : 0, 1);
    for (std::size_t l = 0; l < keep_family.size(); ++l)
      keep_family[l] = o.families.empty() || std::find(o.families.begin(), o.families.end(),
                                                       fam->levels[l]) != o.families.end();
    const std::vector<double>* lat = f.numeric.count(lat_col) ? &f.num(lat_col) : nullptr;
    const std::vector<double>* step =
        f.numeric.count("step_time_s") ? &f.num("step_time_s") : nullptr;
    System all;
    all.frame = &f;
    all.label = label;
    std::vector<char> training;  // per entry of all.rows
    for (std::size_t r = 0; r < f.rows; ++r) {
      if (fam ? !keep_family[fam->codes[r]] : !o.families.empty()) continue;
      const bool train = mode != nullptr && mode->codes[r] == training_code;
      double v = NAN;
      if (train) {
        if (!o.allow_training) {
          ++all.training_left_out;
          continue;
        }
        v = step ? (*step)[r] : NAN;
      } else {
        v = lat ? (*lat)[r] : NAN;
      }
      if (!std::isfinite(v) || v < 0) {
        ++all.no_latency;
        continue;
      }
      all.rows.push_back(static_cast<std::uint32_t>(r));
      all.latency.push_back(v);
      training.push_back(train ? 1 : 0);
      all.training_rows += train ? 1 : 0;
    }
    if (all.rows.empty()) {
      if (all.training_left_out > 0)
        throw InputError(fmt::format(
            "{}: no inference rows with a finite {} ({} training rows); pass --allow-training to "
            "use their step_time_s",
            f.path.string(), lat_col, all.training_left_out));
      throw InputError(fmt::format("{}: no ok rows with a finite {}{}", f.path.string(), lat_col,
                                   o.families.empty() ? "" : " in the selected families"));
    }
    if (o.by.empty()) {
      systems.push_back(std::move(all));
      continue;
    }
    // One system per level of the knob (numeric levels in numeric order).
    std::map<std::string, std::vector<std::size_t>> text_levels;
    std::map<double, std::vector<std::size_t>> num_levels;
    for (std::size_t i = 0; i < all.rows.size(); ++i) {
      if (f.text.count(o.by))
        text_levels[f.cat(o.by).at(all.rows[i])].push_back(i);
      else
        num_levels[f.num(o.by)[all.rows[i]]].push_back(i);
    }
    std::vector<std::pair<std::string, std::vector<std::size_t>>> levels(text_levels.begin(),
                                                                         text_levels.end());
    for (auto& [v, idx] : num_levels) levels.emplace_back(show(v), std::move(idx));
    for (auto& [level, idx] : levels) {
      System s;
      s.frame = &f;
      s.label = fmt::format("{} {}={}", label, o.by, level);
      for (auto i : idx) {
        s.rows.push_back(all.rows[i]);
        s.latency.push_back(all.latency[i]);
        s.training_rows += training[i];
      }
      // Rows left out before the split have no level of their own: report them on each system.
      s.training_left_out = all.training_left_out;
      s.no_latency = all.no_latency;
      systems.push_back(std::move(s));
    }
  }

  const bool write = !o.out_dir.empty();
  if (write) std::filesystem::create_directories(o.out_dir);
  for (const auto& s : systems) {
    for (double b : budgets) {
      std::vector<Panel> panels;
      auto sec = analyse(s, b, o, lat_col, write ? &panels : nullptr);
      if (write) {
        const auto stem = file_safe(fmt::format("budget_{}_{}", sec.system, sec.budget));
        const auto base = o.out_dir / stem;
        {
          const auto p = o.out_dir / (stem + "_batches.csv");
          std::ofstream f(p);
          f << "family,batch,configs,feasible,max_params,max_params_config_id,"
               "max_params_latency_s\n";
          for (const auto& bf : sec.batches)
            f << fmt::format("{},{},{},{},{},{},{}\n", bf.family, show(bf.batch), bf.configs,
                             bf.feasible,
                             std::isfinite(bf.max_params) ? show(bf.max_params) : std::string(),
                             bf.max_params_config,
                             std::isfinite(bf.max_params_latency_s)
                                 ? fmt::format("{:.6g}", bf.max_params_latency_s)
                                 : std::string());
          res.files.push_back(p);
        }
        {
          const auto p = o.out_dir / (stem + "_configs.csv");
          std::ofstream f(p);
          const Frame& fr = *s.frame;
          f << "config_id,family,batch,params,latency_s,feasible\n";
          for (std::size_t i = 0; i < s.rows.size(); ++i) {
            const auto r = s.rows[i];
            f << fmt::format("{},{},{},{},{:.6g},{}\n",
                             fr.text.count("config_id") ? fr.cat("config_id").at(r) : std::string(),
                             family_of(fr, r),
                             fr.numeric.count("batch") ? show(fr.num("batch")[r]) : "",
                             fr.numeric.count("params") ? show(fr.num("params")[r]) : "",
                             s.latency[i], s.latency[i] <= b ? 1 : 0);
          }
          res.files.push_back(p);
        }
        if (!panels.empty()) {
          const auto p = o.out_dir / (stem + "_cells.csv");
          std::ofstream f(p);
          f << "family,x,x_value,y,y_value,configs,feasible,share\n";
          for (const auto& pa : panels)
            for (const auto& [k, c] : pa.cells)
              f << fmt::format("{},{},{},{},{},{},{},{:.6g}\n", pa.family, pa.x, show(k.first),
                               pa.y, show(k.second), c.configs, c.feasible,
                               static_cast<double>(c.feasible) / static_cast<double>(c.configs));
          plot_panels(sec, panels, lat_col, base);
          res.files.push_back(std::filesystem::path(base).replace_extension(".svg"));
          res.files.push_back(std::filesystem::path(base).replace_extension(".png"));
          res.files.push_back(p);
        }
      }
      res.finding += (res.finding.empty() ? "" : "\n") + sec.finding;
      res.sections.push_back(std::move(sec));
    }
  }
  // Several systems: where the budget lets a model move (device-class setting vs full machine).
  if (systems.size() > 1) {
    for (double b : budgets) {
      std::string line = fmt::format("At {}:", format_budget(b));
      bool first = true;
      for (const auto& sec : res.sections) {
        if (sec.budget_s != b) continue;
        double largest = NAN;
        for (const auto& bf : sec.batches)
          if (std::isfinite(bf.max_params) && !(bf.max_params <= largest)) largest = bf.max_params;
        line += fmt::format(
            "{} {} fits {} of {} configs ({:.1f}%{})", first ? "" : ";", sec.system, sec.feasible,
            sec.configs, percent(sec.feasible, sec.configs),
            std::isfinite(largest) ? fmt::format(", largest {} params", count_label(largest)) : "");
        first = false;
      }
      res.finding += "\n" + line + ".";
    }
  }
  return res;
}

std::string BudgetResult::json() const {
  const auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
  nlohmann::json j;
  j["analysis"] = "budget";
  j["percentile"] = percentile;
  j["latency_column"] = latency_column;
  j["finding"] = finding;
  j["files"] = nlohmann::json::array();
  for (const auto& f : files) j["files"].push_back(f.string());
  j["sections"] = nlohmann::json::array();
  for (const auto& s : sections) {
    nlohmann::json js = {{"system", s.system},
                         {"budget_s", s.budget_s},
                         {"budget", s.budget},
                         {"configs", s.configs},
                         {"feasible", s.feasible},
                         {"training_rows", s.training_rows},
                         {"training_left_out", s.training_left_out},
                         {"no_latency", s.no_latency},
                         {"finding", s.finding}};
    js["rules"] = nlohmann::json::array();
    for (const auto& r : s.rules)
      js["rules"].push_back({{"family", r.family},
                             {"configs", r.configs},
                             {"feasible", r.feasible},
                             {"region", r.region},
                             {"outside", r.outside},
                             {"accuracy", r.rule.accuracy},
                             {"leaves", r.rule.leaves}});
    js["batches"] = nlohmann::json::array();
    for (const auto& b : s.batches)
      js["batches"].push_back({{"family", b.family},
                               {"batch", b.batch},
                               {"configs", b.configs},
                               {"feasible", b.feasible},
                               {"max_params", num(b.max_params)},
                               {"max_params_config_id", b.max_params_config},
                               {"max_params_latency_s", num(b.max_params_latency_s)}});
    j["sections"].push_back(std::move(js));
  }
  return j.dump(2);
}

}  // namespace dnnscape::analysis
