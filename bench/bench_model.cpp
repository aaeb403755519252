// bench_model: how many measurements does the performance model need? Prediction error versus
// the number of measured configs, for adaptive sampling (the sweep's `sampling: {adaptive: N}`
// loop: Sobol first, then batches by integrated variance reduction), the max-sd rule, uniform
// random sampling and a coarser sub-grid, on a synthetic landscape with a known formula (the
// whole grid scored against the formula) and on a measured FC grid of this machine (a results
// file, measured once; a held-out third of it, the same for every method, scored against its
// measurement: the methods pick from the other two thirds). Each method is also charged the
// seconds its measurements take, so a cost-aware variant (what a pick teaches per predicted
// second: `sampling: {adaptive: N, cost_aware: true}`) is compared per node-second.
//
//   bench_model [MEASURED.h5] [--repeat AGAIN.h5] [--seeds K (5)] [--noise SD (0.02)]
//               [--synthetic-only] [--constant-noise] [--uncalibrated-cost]
//   AGAIN.h5: a second measurement of the same grid, to print how far two measurements of one
//   config lie apart: the floor of the measured grid's errors (a model that knew every config's
//   true time would still err by about 1/sqrt(2) of it against a single measurement).
//   MEASURED.h5 default: build/bench-data/model-fc.h5 from
//   dnnscape run bench/model-fc.yaml -o build/bench-data/model-fc.h5   (~6 min on 2 cores)
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/cost.hpp"
#include "model/model.hpp"
#include "model/synthetic.hpp"
#include "space/grid.hpp"
#include "space/spec.hpp"
#include "store/results.hpp"

using namespace dnnscape;

namespace {

struct Landscape {
  std::string name;
  model::System system;
  space::FamilyGrid grid;           // its axes (for Sobol and sub-grids)
  std::vector<model::Point> truth;  // every config with its (measured, noisy) value
  // The noise-free value of each config when the landscape has a formula: errors are scored
  // against it (else against the measurement, whose noise is then part of every error).
  std::vector<double> exact;
  // Without a formula: the configs every method is scored on, none of which it may measure
  // (truth holds the candidates only).
  std::vector<model::Point> held;
  // Seconds the measurement of each truth point takes (charged to a method that measures it),
  // and the settings the cost-aware rule predicts that time with.
  std::vector<double> cost;
  space::MeasureSettings measure;
  model::FitOptions fit;  // of every model fit (its seed set per run)
  // The cost-aware rule's cost: calibrated on the measured configs' wall time (the sweep's
  // model::MeasureCost), or the measure settings' prediction alone (--uncalibrated-cost).
  bool calibrated_cost = true;
};

std::vector<std::size_t> random_subset(std::size_t total, std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> idx(total);
  for (std::size_t i = 0; i < total; ++i) idx[i] = i;
  std::mt19937_64 rng(seed);
  for (std::size_t i = total; i > 1; --i) std::swap(idx[i - 1], idx[space::uniform_below(rng, i)]);
  idx.resize(std::min(n, total));
  return idx;
}

// `l` with a random third of its configs (seeded) moved to `held`.
Landscape hold_out(const Landscape& l, std::uint64_t seed) {
  Landscape out = l;
  out.truth.clear();
  out.cost.clear();
  std::vector<char> held(l.truth.size(), 0);
  for (auto i : random_subset(l.truth.size(), l.truth.size() / 3, seed)) held[i] = 1;
  for (std::size_t i = 0; i < l.truth.size(); ++i) {
    (held[i] != 0 ? out.held : out.truth).push_back(l.truth[i]);
    if (held[i] == 0) out.cost.push_back(l.cost[i]);
  }
  return out;
}

// The axes of a set of FC points: every parameter's distinct values.
space::FamilyGrid grid_of(const std::vector<model::Point>& pts) {
  space::FamilyGrid g;
  g.family = space::Family::fc;
  for (const char* name : {"layers", "nodes", "input", "output", "batch"}) {
    std::set<std::int64_t> v;
    for (const auto& p : pts) v.insert(*space::int_param(p.config, name));
    g.axes.push_back({name, {v.begin(), v.end()}, {}});
  }
  for (const char* knob : {"mode", "dtype", "threads", "algorithm", "isa_cap"}) {
    space::Axis a{knob, {}, {}};
    const auto& k = pts.front().config.knobs;
    if (std::string(knob) == "threads") {
      a.ints = {k.threads};
    } else {
      a.names = {std::string(knob) == "mode"        ? k.mode
                 : std::string(knob) == "dtype"     ? k.dtype
                 : std::string(knob) == "algorithm" ? k.algorithm
                                                    : k.isa_cap};
    }
    g.axes.push_back(a);
  }
  return g;
}

struct Err {
  double median = NAN, p90 = NAN;
  double seconds = NAN;  // what measuring the configs took
};

// Median and p90 APE of the model fitted on `measured`: over the whole grid against the formula
// when the landscape has one, else over the held-out configs against their measurement.
Err error_of(const Landscape& l, const std::vector<std::size_t>& measured, std::uint64_t seed) {
  std::vector<char> in(l.truth.size(), 0);
  std::vector<model::Point> train, rest;
  for (auto i : measured) in[i] = 1;
  for (std::size_t i = 0; i < l.truth.size(); ++i) {
    if (in[i] != 0) train.push_back(l.truth[i]);
    if (!l.exact.empty()) {
      rest.push_back(l.truth[i]);
      rest.back().value = l.exact[i];
    }
  }
  if (l.exact.empty()) rest = l.held;
  model::FitOptions o = l.fit;
  o.seed = seed;
  const auto panel = model::Panel::fit(l.system, space::Family::fc, train, o);
  const auto a = model::score(rest, panel.predict(rest));
  double seconds = 0;
  for (auto i : measured) seconds += l.cost[i];
  return {a.median_ape, a.p90_ape, seconds};
}

std::unordered_map<std::string, std::size_t> index_of(const Landscape& l) {
  std::unordered_map<std::string, std::size_t> pos;
  for (std::size_t i = 0; i < l.truth.size(); ++i) pos.emplace(l.truth[i].config.config_id(), i);
  return pos;
}

// A coarser grid: k evenly spaced values (ends included) of each varying axis, with k chosen
// as the same fraction of every axis so that the product is the largest <= n.
std::vector<std::size_t> sub_grid(const Landscape& l, std::size_t n) {
  const auto pos = index_of(l);
  std::vector<std::size_t> best;
  for (double f = 1.0; f > 0.01; f -= 0.01) {
    std::vector<std::vector<std::size_t>> picks;
    std::size_t product = 1;
    for (const auto& a : l.grid.axes) {
      const std::size_t v = a.size();
      const std::size_t k = std::clamp<std::size_t>(
          static_cast<std::size_t>(std::lround(f * static_cast<double>(v))), v > 1 ? 2 : 1, v);
      std::vector<std::size_t> p;
      for (std::size_t j = 0; j < k; ++j)
        p.push_back(k == 1 ? 0
                           : static_cast<std::size_t>(
                                 std::lround(static_cast<double>(j) * static_cast<double>(v - 1) /
                                             static_cast<double>(k - 1))));
      product *= k;
      picks.push_back(p);
    }
    if (product > n) continue;
    std::vector<std::size_t> at(picks.size(), 0);
    std::vector<std::size_t> out;
    for (;;) {
      std::vector<std::size_t> vi;
      for (std::size_t a = 0; a < picks.size(); ++a) vi.push_back(picks[a][at[a]]);
      if (auto it = pos.find(l.grid.at(vi).config_id()); it != pos.end()) out.push_back(it->second);
      std::size_t a = picks.size();
      while (a > 0 && ++at[a - 1] == picks[a - 1].size()) at[--a] = 0;
      if (a == 0) break;
    }
    return out;
  }
  return best;
}

// The adaptive loop of orchestrator/adaptive.cpp on a landscape whose values are known, for a
// budget of n: the spec's default initial max(8, n/5) Sobol configs, then batches of
// max(2 x 4 workers, a tenth of the rest) picked by `rule`, refitting between batches;
// `per_second`: each pick's score divided by its predicted measuring time (the model's predicted
// step time through the spec's measurement settings), as orchestrator/adaptive.cpp does.
Err adaptive_run(const Landscape& l, std::size_t n, std::uint64_t seed, model::Selection rule,
                 bool per_second = false) {
  n = std::min(n, l.truth.size());
  const auto pos = index_of(l);
  const std::size_t initial = std::max<std::size_t>(8, n / 5);
  const std::size_t batch = std::max<std::size_t>(8, (n - initial + 9) / 10);
  std::vector<std::size_t> measured;
  std::vector<char> in(l.truth.size(), 0);
  // The first `initial` distinct Sobol configs that are candidates (not held out).
  for (std::size_t m = initial; measured.size() < initial && m <= l.grid.size(); ++m) {
    for (const auto& c : space::sample_sobol({l.grid}, m, seed)) {
      const auto it = pos.find(c.config_id());
      if (it != pos.end() && in[it->second] == 0 && measured.size() < initial)
        measured.push_back(it->second), in[it->second] = 1;
    }
  }
  while (measured.size() < n) {
    std::vector<model::Point> train, cand;
    std::vector<std::size_t> cand_idx;
    for (std::size_t i = 0; i < l.truth.size(); ++i) {
      if (in[i] != 0) {
        train.push_back(l.truth[i]);
      } else {
        model::Point p = l.truth[i];
        p.value = std::numeric_limits<double>::quiet_NaN();  // not measured yet
        cand.push_back(p);
        cand_idx.push_back(i);
      }
    }
    model::FitOptions o = l.fit;
    o.seed = seed;
    const auto panel = model::Panel::fit(l.system, space::Family::fc, train, o);
    const std::size_t k = std::min(batch, n - measured.size());
    // As the sweep does: the predicted step time through the measure settings, calibrated on
    // what measuring the configs so far took (uncalibrated on the synthetic landscape).
    std::vector<double> cost;
    if (per_second) {
      const auto seconds =
          l.calibrated_cost ? model::MeasureCost(l.measure, train) : model::MeasureCost(l.measure);
      cost = seconds.prices(panel, cand);
    }
    for (auto j :
         model::choose_batch(&panel, cand, k, seed * 1000003 + measured.size(), rule, cost)) {
      measured.push_back(cand_idx[j]);
      in[cand_idx[j]] = 1;
    }
  }
  return error_of(l, measured, seed);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty()      ? NAN
         : v.size() % 2 ? v[v.size() / 2]
                        : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Where a method's error curve (x: measurements or seconds, at each budget) first falls to
// `target`: interpolated linearly in log x and log error between the budgets around the
// crossing. Below the first budget: -(its x); never: NaN.
double crossing(const std::vector<double>& x, const std::vector<double>& err, double target) {
  for (std::size_t j = 0; j < x.size(); ++j) {
    if (err[j] > target) continue;
    if (j == 0) return -x[0];
    const double x0 = std::log(x[j - 1]), x1 = std::log(x[j]);
    const double y0 = std::log(err[j - 1]), y1 = std::log(err[j]);
    return std::exp(y0 == y1 ? x1 : x0 + (std::log(target) - y0) * (x1 - x0) / (y1 - y0));
  }
  return NAN;
}

// For each random budget n: what `method` needs (measurements, or seconds of measuring) to reach
// random's error at n, and that over what random needed.
void print_reach(const std::string& what, const std::vector<double>& method_x,
                 const std::vector<double>& method_err, const std::vector<double>& random_x,
                 const std::vector<double>& random_err, const std::vector<std::size_t>& budgets,
                 bool seconds) {
  fmt::print("  {}:", what);
  for (std::size_t i = 0; i < budgets.size(); ++i) {
    const double need = crossing(method_x, method_err, random_err[i]);
    const auto amount = [&](double v) {
      return seconds ? fmt::format("{:.0f} s", v) : fmt::format("{:.0f}", v);
    };
    std::string cell;
    if (std::isnan(need)) {
      cell = fmt::format(">{}", amount(method_x.back()));
    } else if (need < 0) {
      cell = fmt::format("<={} ({:.2f}x)", amount(-need), -need / random_x[i]);
    } else {
      cell = fmt::format("{} ({:.2f}x)", amount(need), need / random_x[i]);
    }
    fmt::print(" n={}: {}", budgets[i], cell);
  }
  fmt::print("\n");
}

void run(const Landscape& l, const std::vector<std::size_t>& budgets, int seeds) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto held = l.exact.empty() ? l.truth.size() / 3 : 0;
  fmt::print("\n{}: {} configs{}. Absolute % error, median / p90 (each the median over {} seeds)\n",
             l.name, l.truth.size(),
             held > 0 ? fmt::format(", {} held out per seed", held) : std::string(), seeds);
  // Methods: 0 adaptive (the sweep's default rule), 1 max-sd, 2 adaptive per predicted second
  // (cost_aware), 3 random, 4 sub-grid.
  constexpr int kMethods = 5;
  const std::array<const char*, kMethods> names = {"adaptive", "max-sd", "per-second", "random",
                                                   "sub-grid"};
  fmt::print("{:>9}", "measured");
  for (auto name : names) fmt::print(" {:>15}", name);
  fmt::print(" {:>7}\n", "sub n");
  // [method][budget index] -> per-seed values
  std::vector<std::vector<std::vector<Err>>> e(kMethods,
                                               std::vector<std::vector<Err>>(budgets.size()));
  std::vector<std::vector<double>> sgn(budgets.size());
  std::vector<Err> every;  // per seed: the model fitted on every candidate
  for (int s = 0; s < seeds; ++s) {
    const auto seed = static_cast<std::uint64_t>(s + 1);
    const Landscape ls = l.exact.empty() ? hold_out(l, 500 + seed) : l;
    std::vector<std::size_t> all(ls.truth.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    every.push_back(error_of(ls, all, seed));
    for (std::size_t b = 0; b < budgets.size(); ++b) {
      const auto n = budgets[b];
      e[0][b].push_back(adaptive_run(ls, n, seed, model::Selection::variance_reduction));
      e[1][b].push_back(adaptive_run(ls, n, seed, model::Selection::max_sd));
      e[2][b].push_back(adaptive_run(ls, n, seed, model::Selection::variance_reduction, true));
      e[3][b].push_back(error_of(ls, random_subset(ls.truth.size(), n, 100 + seed), seed));
      const auto sg = sub_grid(ls, n);
      if (sg.size() < 8) continue;  // too coarse to fit
      e[4][b].push_back(error_of(ls, sg, seed));
      sgn[b].push_back(static_cast<double>(sg.size()));
    }
  }
  // Medians over the seeds: [method][budget].
  const auto med = [&](int m, double Err::*field) {
    std::vector<double> out;
    for (const auto& per_seed : e[static_cast<std::size_t>(m)]) {
      std::vector<double> v;
      for (const auto& x : per_seed) v.push_back(x.*field);
      out.push_back(median(v));
    }
    return out;
  };
  std::vector<std::vector<double>> m50, m90, sec;
  for (int m = 0; m < kMethods; ++m) {
    m50.push_back(med(m, &Err::median));
    m90.push_back(med(m, &Err::p90));
    sec.push_back(med(m, &Err::seconds));
  }
  const auto cell = [](double a, double b) {
    return std::isnan(a) ? std::string("-") : fmt::format("{:.1f}/{:.1f}%", 100 * a, 100 * b);
  };
  for (std::size_t b = 0; b < budgets.size(); ++b) {
    fmt::print("{:>9}", budgets[b]);
    for (int m = 0; m < kMethods; ++m) {
      const auto mi = static_cast<std::size_t>(m);
      fmt::print(" {:>15}", cell(m50[mi][b], m90[mi][b]));
    }
    fmt::print(" {:>7}\n",
               sgn[b].empty() ? std::string("-") : fmt::format("{:.0f}", median(sgn[b])));
  }
  {
    std::vector<double> a, b;
    for (const auto& x : every) a.push_back(x.median), b.push_back(x.p90);
    // No choice of n configs can do much better than all of them: where random's error at n is
    // already near this, no rule can reach it with far fewer.
    fmt::print("{:>9} {:>15}  (every candidate measured: the floor of every column)\n",
               fmt::format("all {}", l.truth.size() - held), cell(median(a), median(b)));
  }
  fmt::print("{:>9}", "seconds");
  fmt::print("  (of measuring, median over seeds, at n = {} / {})\n", budgets.front(),
             budgets.back());
  fmt::print("{:>9}", "");
  for (int m = 0; m < kMethods - 1; ++m) {
    const auto mi = static_cast<std::size_t>(m);
    fmt::print(" {:>15}", fmt::format("{:.0f} / {:.0f}", sec[mi].front(), sec[mi].back()));
  }
  fmt::print("\n");
  std::vector<double> counts;
  for (auto n : budgets) counts.push_back(static_cast<double>(n));
  fmt::print(" Measurements to reach random's error at n, and that over n:\n");
  print_reach("adaptive, median error", counts, m50[0], counts, m50[3], budgets, false);
  print_reach("adaptive, p90 error   ", counts, m90[0], counts, m90[3], budgets, false);
  print_reach("per-second, median    ", counts, m50[2], counts, m50[3], budgets, false);
  fmt::print(
      " Seconds of measuring to reach random's error at n, and that over random's seconds:\n");
  print_reach("adaptive, median error  ", sec[0], m50[0], sec[3], m50[3], budgets, true);
  print_reach("per-second, median error", sec[2], m50[2], sec[3], m50[3], budgets, true);
  print_reach("per-second, p90 error   ", sec[2], m90[2], sec[3], m90[3], budgets, true);
  fmt::print("  ({:.0f} s)\n",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

// How much two measurements of one grid differ: `again` scored as a prediction of `first`
// (model::score) over the configs both hold ok.
model::Accuracy repeat_floor(const std::vector<model::Point>& first,
                             const std::vector<model::Point>& again) {
  std::unordered_map<std::string, double> second;
  for (const auto& p : again) second.emplace(p.config.config_id(), p.value);
  std::vector<model::Point> shared;
  std::vector<model::Prediction> predicted;
  for (const auto& p : first) {
    if (auto it = second.find(p.config.config_id()); it != second.end()) {
      shared.push_back(p);
      model::Prediction same;
      same.value = same.lower = same.upper = it->second;
      predicted.push_back(same);
    }
  }
  return model::score(shared, predicted);
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path measured = "build/bench-data/model-fc.h5";
  std::filesystem::path repeat;
  int seeds = 5;
  double noise = 0.02;
  bool synthetic_only = false;
  bool constant_noise = false;
  bool calibrated_cost = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seeds" && i + 1 < argc) {
      seeds = std::stoi(argv[++i]);
    } else if (a == "--noise" && i + 1 < argc) {
      noise = std::stod(argv[++i]);
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = argv[++i];
    } else if (a == "--synthetic-only") {
      synthetic_only = true;
    } else if (a == "--constant-noise") {
      constant_noise = true;
    } else if (a == "--uncalibrated-cost") {
      calibrated_cost = false;
    } else if (a == "-h" || a == "--help") {
      fmt::print(
          "bench_model [MEASURED.h5] [--repeat AGAIN.h5: a second measurement of the same grid, "
          "for the noise floor] [--seeds K (5)] [--noise SD (0.02): lognormal noise of the "
          "synthetic landscape] [--synthetic-only] [--constant-noise: one noise variance per "
          "panel, not log-linear in the roofline time] [--uncalibrated-cost: the per-second rule "
          "prices a config by the measure settings alone, not calibrated on /runs/wall_s]\n(see "
          "the top of bench/bench_model.cpp)\n");
      return 0;
    } else {
      measured = a;
    }
  }
  const std::vector<std::size_t> budgets = {16, 24, 32, 48, 64, 96, 128, 192};

  Landscape syn;
  syn.name = fmt::format(
      "synthetic roofline landscape (max(flops/peak, bytes/bw) / efficiency, {:.1f}% noise; the "
      "whole grid scored against the noise-free formula)",
      100 * noise);
  syn.system = model::synthetic::system();
  syn.fit.noise_by_time = !constant_noise;
  std::vector<space::Config> configs;
  for (auto c : model::synthetic::fc_grid(16, 4096, 16384)) {
    for (std::int64_t input : {256, 1024, 4096}) {
      c.input = input;
      configs.push_back(c);
    }
  }
  syn.truth = model::synthetic::fc_measured(configs, noise, 5);
  for (const auto& p : syn.truth) syn.exact.push_back(model::synthetic::fc_time_s(p));
  syn.grid = grid_of(syn.truth);
  // Charged as if measured with bench/model-fc.yaml's settings.
  syn.measure = {0.05, 3, 30, 0.03, 1.5};
  for (double t : syn.exact) syn.cost.push_back(syn.measure.predicted_time_s(t));
  run(syn, budgets, seeds);
  if (synthetic_only) return 0;

  if (!std::filesystem::exists(measured)) {
    fmt::print(
        "\nno measured grid at {}: measure it once with\n  dnnscape run "
        "bench/model-fc.yaml -o {}\n",
        measured.string(), measured.string());
    return 0;
  }
  Landscape real;
  real.name = fmt::format("measured FC grid {} (a held-out third scored against its measurement)",
                          measured.string());
  auto data = model::read_points(measured, "step_time_s");
  real.system = data.system;
  real.fit.noise_by_time = !constant_noise;
  real.calibrated_cost = calibrated_cost;
  real.truth = std::move(data.points);
  real.grid = grid_of(real.truth);
  // What each config's measurement took: its /runs/wall_s; in a file written before that
  // column, warm-up (at least one step), its repetitions and the build plus profiled pass (two
  // steps), with the file's own measurement settings.
  real.measure =
      space::parse_spec(store::ResultsReader(measured).meta().spec_yaml, measured.string()).measure;
  std::unordered_map<std::string, double> reps;
  for (const auto& p : model::read_points(measured, "reps").points)
    reps.emplace(p.config.config_id(), p.value);
  std::size_t charged_wall = 0;
  for (const auto& p : real.truth) {
    const auto it = reps.find(p.config.config_id());
    const double r = it == reps.end() ? 30.0 : it->second;
    const bool wall = std::isfinite(p.wall_s) && p.wall_s > 0;
    charged_wall += wall ? 1 : 0;
    real.cost.push_back(wall ? p.wall_s
                             : std::max(real.measure.warmup_s, p.value) + (r + 2) * p.value);
  }
  fmt::print(
      "\n{} of its {} configs are charged their /runs/wall_s, the rest their steps; fitted on all "
      "of them, {}\n",
      charged_wall, real.truth.size(), model::MeasureCost(real.measure, real.truth).describe());
  run(real, budgets, seeds);
  if (!repeat.empty()) {
    const auto again = model::read_points(repeat, "step_time_s");
    const auto floor = repeat_floor(real.truth, again.points);
    if (floor.n == 0) {
      fmt::print("  {} shares no ok config with {}: no noise floor\n", repeat.string(),
                 measured.string());
    } else {
      fmt::print(
          "  noise floor: {} as a prediction of these {} configs errs by {:.1f}/{:.1f}% "
          "(median/p90)\n",
          repeat.string(), floor.n, 100 * floor.median_ape, 100 * floor.p90_ape);
    }
  }
  return 0;
}
