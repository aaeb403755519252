// bench_model: how many measurements does the performance model need? Prediction error of the
// unmeasured rest of a grid versus the number of measured configs, for adaptive sampling (the
// sweep's `sampling: {adaptive: N}` loop: Sobol first, then batches of the most uncertain
// candidates), uniform random sampling and a coarser sub-grid, on a synthetic landscape with a
// known formula and on a measured FC grid of this machine (a results file, measured once).
//
//   bench_model [MEASURED.h5] [--seeds K]
//   MEASURED.h5 default: build/bench-data/model-fc.h5 from
//   dnnscape run bench/model-fc.yaml -o build/bench-data/model-fc.h5   (~3-5 min on 2 cores)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/model.hpp"
#include "model/synthetic.hpp"
#include "space/grid.hpp"

using namespace dnnscape;

namespace {

struct Landscape {
  std::string name;
  model::System system;
  space::FamilyGrid grid;           // its axes (for Sobol and sub-grids)
  std::vector<model::Point> truth;  // every config with its value
};

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
};

// Median and p90 APE over the configs not in `measured`.
Err error_of_rest(const Landscape& l, const std::vector<std::size_t>& measured,
                  std::uint64_t seed) {
  std::vector<char> in(l.truth.size(), 0);
  std::vector<model::Point> train, rest;
  for (auto i : measured) in[i] = 1;
  for (std::size_t i = 0; i < l.truth.size(); ++i) (in[i] ? train : rest).push_back(l.truth[i]);
  model::FitOptions o;
  o.seed = seed;
  const auto panel = model::Panel::fit(l.system, space::Family::fc, train, o);
  const auto a = model::score(rest, panel.predict(rest));
  return {a.median_ape, a.p90_ape};
}

std::unordered_map<std::string, std::size_t> index_of(const Landscape& l) {
  std::unordered_map<std::string, std::size_t> pos;
  for (std::size_t i = 0; i < l.truth.size(); ++i) pos.emplace(l.truth[i].config.config_id(), i);
  return pos;
}

std::vector<std::size_t> random_subset(std::size_t total, std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> idx(total);
  for (std::size_t i = 0; i < total; ++i) idx[i] = i;
  std::mt19937_64 rng(seed);
  for (std::size_t i = total; i > 1; --i) std::swap(idx[i - 1], idx[space::uniform_below(rng, i)]);
  idx.resize(n);
  return idx;
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

// The adaptive loop of orchestrator/adaptive.cpp on a landscape whose values are known:
// `initial` Sobol configs, then batches of `batch` picks by conditional predictive sd, recording
// the error of the rest at each budget.
std::map<std::size_t, Err> adaptive_curve(const Landscape& l,
                                          const std::vector<std::size_t>& budgets,
                                          std::size_t batch, std::uint64_t seed, bool mixed) {
  const auto pos = index_of(l);
  std::vector<std::size_t> measured;
  std::vector<char> in(l.truth.size(), 0);
  const std::size_t initial = 8;  // Sobol first: the smallest `initial` a spec defaults to
  for (const auto& c : space::sample_sobol({l.grid}, initial, seed)) {
    const auto i = pos.at(c.config_id());
    if (in[i] == 0) measured.push_back(i), in[i] = 1;
  }
  std::map<std::size_t, Err> curve;
  for (auto budget : budgets) {
    while (measured.size() < budget) {
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
      model::FitOptions o;
      o.seed = seed;
      const auto panel = model::Panel::fit(l.system, space::Family::fc, train, o);
      const std::size_t k = std::min(batch, budget - measured.size());
      // The sweep's rule (mixed = false) or the mixed variant.
      for (auto j : model::choose_batch(&panel, cand, k, seed * 1000003 + measured.size(), mixed)) {
        measured.push_back(cand_idx[j]);
        in[cand_idx[j]] = 1;
      }
    }
    curve[budget] = error_of_rest(l, measured, seed);
  }
  return curve;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty()      ? NAN
         : v.size() % 2 ? v[v.size() / 2]
                        : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// For each random budget: the fewest adaptive measurements that reach random's error there.
void print_reach(const char* what, const std::vector<std::size_t>& budgets,
                 const std::map<std::size_t, double>& adaptive,
                 const std::map<std::size_t, double>& random) {
  fmt::print("  {} error: adaptive needs, for random's error at n measured,", what);
  for (auto n : budgets) {
    std::size_t need = 0;
    for (auto m : budgets)
      if (need == 0 && adaptive.at(m) <= random.at(n)) need = m;
    if (need == 0)
      fmt::print(" n={}: >{}", n, budgets.back());
    else
      fmt::print(" n={}: {} ({:.2f}x)", n, need,
                 static_cast<double>(need) / static_cast<double>(n));
  }
  fmt::print("\n");
}

void run(const Landscape& l, const std::vector<std::size_t>& budgets, int seeds) {
  const auto t0 = std::chrono::steady_clock::now();
  fmt::print(
      "\n{}: {} configs. Absolute % error of the unmeasured rest, median / p90 "
      "(each the median over {} seeds; sub-grid: one)\n",
      l.name, l.truth.size(), seeds);
  fmt::print("{:>9} {:>15} {:>15} {:>15} {:>15} {:>7}\n", "measured", "adaptive", "mixed", "random",
             "sub-grid", "sub n");
  std::map<std::size_t, std::vector<double>> ad, ad90, mv, mv90, rn, rn90;
  for (int s = 0; s < seeds; ++s) {
    const auto seed = static_cast<std::uint64_t>(s + 1);
    for (const auto& [n, e] : adaptive_curve(l, budgets, 8, seed, false)) {
      ad[n].push_back(e.median);
      ad90[n].push_back(e.p90);
    }
    for (const auto& [n, e] : adaptive_curve(l, budgets, 8, seed, true)) {
      mv[n].push_back(e.median);
      mv90[n].push_back(e.p90);
    }
    for (auto n : budgets) {
      const auto e = error_of_rest(l, random_subset(l.truth.size(), n, 100 + seed), seed);
      rn[n].push_back(e.median);
      rn90[n].push_back(e.p90);
    }
  }
  std::map<std::size_t, double> a50, a90, r50, r90;
  for (auto n : budgets) {
    a50[n] = median(ad[n]);
    a90[n] = median(ad90[n]);
    r50[n] = median(rn[n]);
    r90[n] = median(rn90[n]);
    const auto sg = sub_grid(l, n);
    const Err sub = sg.size() >= 8 ? error_of_rest(l, sg, 1) : Err{};
    const auto cell = [](double a, double b) {
      return fmt::format("{:.1f}/{:.1f}%", 100 * a, 100 * b);
    };
    fmt::print("{:>9} {:>15} {:>15} {:>15} {:>15} {:>7}\n", n, cell(a50[n], a90[n]),
               cell(median(mv[n]), median(mv90[n])), cell(r50[n], r90[n]),
               cell(sub.median, sub.p90), sg.size());
  }
  print_reach("median", budgets, a50, r50);
  print_reach("p90", budgets, a90, r90);
  fmt::print("  ({:.0f} s)\n",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path measured = "build/bench-data/model-fc.h5";
  int seeds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seeds" && i + 1 < argc) {
      seeds = std::stoi(argv[++i]);
    } else if (a == "-h" || a == "--help") {
      fmt::print(
          "bench_model [MEASURED.h5] [--seeds K]   (see the top of bench/bench_model.cpp)\n");
      return 0;
    } else {
      measured = a;
    }
  }
  const std::vector<std::size_t> budgets = {16, 24, 32, 48, 64, 96, 128, 192};

  Landscape syn;
  syn.name = "synthetic roofline landscape (max(flops/peak, bytes/bw) / efficiency, 2% noise)";
  syn.system = model::synthetic::system();
  std::vector<space::Config> configs;
  for (auto c : model::synthetic::fc_grid(16, 4096, 16384)) {
    for (std::int64_t input : {256, 1024, 4096}) {
      c.input = input;
      configs.push_back(c);
    }
  }
  syn.truth = model::synthetic::fc_measured(configs, 0.02, 5);
  syn.grid = grid_of(syn.truth);
  run(syn, budgets, seeds);

  if (!std::filesystem::exists(measured)) {
    fmt::print(
        "\nno measured grid at {}: measure it once with\n  dnnscape run "
        "bench/model-fc.yaml -o {}\n",
        measured.string(), measured.string());
    return 0;
  }
  Landscape real;
  real.name = fmt::format("measured FC grid {}", measured.string());
  auto data = model::read_points(measured, "step_time_s");
  real.system = data.system;
  real.truth = std::move(data.points);
  real.grid = grid_of(real.truth);
  run(real, budgets, seeds);
  return 0;
}
