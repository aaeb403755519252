#include "analysis/roofline.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <unordered_map>

#include "analysis/frame.hpp"
#include "analysis/gnuplot.hpp"
#include "store/results.hpp"

namespace dnnscape::analysis {
namespace {

std::string file_safe(std::string s) {
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return s;
}

// Indices 0..n-1, or a sorted random sample of `cap` of them.
std::vector<std::size_t> sample(std::size_t n, std::size_t cap, std::uint64_t seed) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  if (n <= cap) return idx;
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < cap; ++i) {
    std::uniform_int_distribution<std::size_t> d(i, n - 1);
    std::swap(idx[i], idx[d(rng)]);
  }
  idx.resize(cap);
  std::sort(idx.begin(), idx.end());
  return idx;
}

struct OpPoint {
  double intensity, gflops, time_s;
  std::string op;
};

}  // namespace

std::vector<std::string> roofline_columns(const RooflineOptions& o) {
  return {"config_id", "family",      "dtype", "arithmetic_intensity", "gflops", "flops",
          "bytes",     "step_time_s", o.color};
}

RooflineResult roofline(const RooflineOptions& o) {
  if (o.inputs.empty()) throw InputError("roofline needs at least one results file");
  std::vector<Frame> frames;
  for (const auto& in : o.inputs) frames.push_back(load_frame(in, roofline_columns(o), o.where));
  return roofline(frames, o);
}

RooflineResult roofline(const std::vector<Frame>& frames, const RooflineOptions& o) {
  RooflineResult res;
  for (const auto& f : frames) {
    if (!o.color.empty() && !f.has(o.color))
      throw InputError(fmt::format("--color: {} has no column '{}'", f.path.string(), o.color));
    Roofline rl;
    rl.label = f.label();
    rl.peak_gflops_f32 = f.system.peak_gflops_f32;
    rl.peak_gflops_bf16 = f.system.peak_gflops_bf16;
    rl.mem_bandwidth_gbs = f.system.mem_bandwidth_gbs;
    if (!(rl.peak_gflops_f32 > 0) || !(rl.mem_bandwidth_gbs > 0))
      throw InputError(fmt::format(
          "{}: /system has no measured peak_gflops_f32 and mem_bandwidth_gbs", f.path.string()));
    rl.ridge_f32 = rl.peak_gflops_f32 / rl.mem_bandwidth_gbs;
    const double ridge_bf16 =
        rl.peak_gflops_bf16 > 0 ? rl.peak_gflops_bf16 / rl.mem_bandwidth_gbs : rl.ridge_f32;
    const Categorical* dtype = f.text.count("dtype") ? &f.cat("dtype") : nullptr;
    const auto ridge_of = [&](std::size_t r) {
      return dtype != nullptr && dtype->at(r) == "bf16" ? ridge_bf16 : rl.ridge_f32;
    };

    // Model points.
    const auto col = [&](const char* c) -> const std::vector<double>* {
      return f.numeric.count(c) ? &f.num(c) : nullptr;
    };
    const auto* ai = col("arithmetic_intensity");
    const auto* gf = col("gflops");
    const auto* fl = col("flops");
    const auto* by = col("bytes");
    const auto* st = col("step_time_s");
    std::vector<std::size_t> rows;
    std::vector<double> xs, ys;
    std::size_t best_row = 0;
    for (std::size_t r = 0; r < f.rows; ++r) {
      double x = ai ? (*ai)[r] : NAN;
      if (!(x > 0) && fl && by) x = (*fl)[r] / (*by)[r];
      double y = gf ? (*gf)[r] : NAN;
      if (!(y > 0) && fl && st) y = (*fl)[r] / (*st)[r] / 1e9;
      if (!(x > 0) || !(y > 0) || !std::isfinite(x) || !std::isfinite(y)) continue;
      rows.push_back(r);
      xs.push_back(x);
      ys.push_back(y);
      ++rl.configs;
      if (x < ridge_of(r)) ++rl.configs_memory_bound;
      if (y > rl.best_gflops) {
        rl.best_gflops = y;
        best_row = r;
        rl.best_config = f.text.count("config_id") ? f.cat("config_id").at(r) : std::to_string(r);
      }
    }

    // Operation points from /ops, for the kept rows.
    std::vector<OpPoint> ops;
    {
      const store::ResultsReader reader(f.path);
      std::int64_t n_ops = 0;
      try {
        n_ops = reader.group_rows("ops");
      } catch (const store::StoreError&) {
        n_ops = 0;
      }
      if (n_ops > 0) {
        std::unordered_map<std::int64_t, std::size_t> kept;
        kept.reserve(f.rows * 2);
        for (std::size_t r = 0; r < f.rows; ++r) kept.emplace(f.run_row[r], r);
        const auto orow = reader.read_group_int("ops", "row");
        const auto otime = reader.read_group_double("ops", "time_s");
        const auto oflops = reader.read_group_double("ops", "flops");
        const auto obytes = reader.read_group_double("ops", "bytes");
        const auto oname = reader.read_group_string("ops", "op");
        std::unordered_map<std::int64_t, double> total;
        for (std::size_t i = 0; i < orow.size(); ++i)
          if (kept.count(orow[i]) && otime[i] > 0) total[orow[i]] += otime[i];
        for (std::size_t i = 0; i < orow.size(); ++i) {
          auto it = kept.find(orow[i]);
          if (it == kept.end() || !(otime[i] > 0)) continue;
          rl.op_time_s += otime[i];
          // The original dropped ops under 1% of the step; so do we (and ops with no FLOPs or
          // traffic, which have no place on a log-log roofline).
          if (otime[i] / total[orow[i]] < o.min_op_share || !(oflops[i] > 0) || !(obytes[i] > 0)) {
            ++rl.ops_left_out;
            continue;
          }
          OpPoint p{oflops[i] / obytes[i], oflops[i] / otime[i] / 1e9, otime[i], oname[i]};
          ++rl.ops;
          if (p.intensity < ridge_of(it->second)) rl.op_time_memory_bound_s += otime[i];
          ops.push_back(std::move(p));
        }
      }
    }
    double op_time_kept = 0;
    for (const auto& p : ops) op_time_kept += p.time_s;

    const double share_cfg = rl.configs ? 100.0 * static_cast<double>(rl.configs_memory_bound) /
                                              static_cast<double>(rl.configs)
                                        : 0;
    rl.finding = fmt::format(
        "{}: ceilings {:.0f} GFLOP/s f32{}, {:.1f} GB/s, ridge at {:.1f} FLOP/byte (f32). "
        "{} of {} configs ({:.1f}%) are memory-bound and {:.1f}% compute-bound; the fastest "
        "reaches {:.1f} GFLOP/s ({:.0f}% of the f32 peak).",
        rl.label, rl.peak_gflops_f32,
        rl.peak_gflops_bf16 > 0 ? fmt::format(" / {:.0f} bf16", rl.peak_gflops_bf16) : "",
        rl.mem_bandwidth_gbs, rl.ridge_f32, rl.configs_memory_bound, rl.configs, share_cfg,
        100 - share_cfg, rl.best_gflops, 100 * rl.best_gflops / rl.peak_gflops_f32);
    if (rl.best_gflops > rl.peak_gflops_f32 && (dtype == nullptr || dtype->at(best_row) != "bf16"))
      rl.finding += fmt::format(" Above 100%: {}", kAbovePeakNote);
    if (rl.ops > 0) {
      rl.finding += fmt::format(
          " Of the profiled op time ({} ops at >= {:.0f}% of their step; {} smaller ones left "
          "out), {:.1f}% is memory-bound and {:.1f}% compute-bound.",
          rl.ops, 100 * o.min_op_share, rl.ops_left_out,
          100 * rl.op_time_memory_bound_s / op_time_kept,
          100 * (1 - rl.op_time_memory_bound_s / op_time_kept));
    } else {
      rl.finding += " The file has no /ops profile.";
    }

    if (!o.out_dir.empty() && rl.configs > 0) {
      std::filesystem::create_directories(o.out_dir);
      const std::string stem =
          frames.size() > 1 ? file_safe("roofline_" + rl.label) : std::string("roofline");
      const auto base = o.out_dir / stem;
      const auto pick = sample(rows.size(), o.max_plot_points, 7);
      const std::vector<double>* cv =
          o.color.empty() ? nullptr : (f.numeric.count(o.color) ? &f.num(o.color) : nullptr);
      const Categorical* cc =
          o.color.empty() ? nullptr : (f.text.count(o.color) ? &f.cat(o.color) : nullptr);
      std::string gp = "$models << EOD\n";
      {
        std::ofstream csv(o.out_dir / (stem + "_configs.csv"));
        csv << "config_id,family," << (o.color.empty() ? "" : o.color + ",")
            << "arithmetic_intensity,gflops,bound\n";
        for (auto i : pick) {
          const auto r = rows[i];
          double c = 0;
          std::string cs;
          if (cv) {
            c = (*cv)[r] > 0 ? std::log2((*cv)[r]) : 0;
            cs = fmt::format("{}", (*cv)[r]);
          } else if (cc) {
            c = cc->codes[r];
            cs = cc->at(r);
          }
          gp += fmt::format("{:.6g} {:.6g} {:.6g}\n", xs[i], ys[i], c);
          csv << (f.text.count("config_id") ? f.cat("config_id").at(r) : "") << ","
              << (f.text.count("family") ? f.cat("family").at(r) : "") << ","
              << (o.color.empty() ? "" : cs + ",")
              << fmt::format("{:.6g},{:.6g},{}\n", xs[i], ys[i],
                             xs[i] < ridge_of(r) ? "memory" : "compute");
        }
      }
      gp += "EOD\n";
      std::map<std::string, double> op_time;
      for (const auto& p : ops) op_time[p.op] += p.time_s;
      std::vector<std::pair<double, std::string>> kinds;
      for (const auto& [k, t] : op_time) kinds.emplace_back(-t, k);
      std::sort(kinds.begin(), kinds.end());
      if (kinds.size() > 6) kinds.resize(6);
      const auto op_pick = sample(ops.size(), o.max_plot_points, 11);
      for (std::size_t k = 0; k < kinds.size(); ++k) {
        gp += fmt::format("$ops{} << EOD\n", k);
        for (auto i : op_pick)
          if (ops[i].op == kinds[k].second)
            gp += fmt::format("{:.6g} {:.6g}\n", ops[i].intensity, ops[i].gflops);
        gp += "EOD\n";
      }
      {
        std::ofstream csv(o.out_dir / (stem + "_summary.csv"));
        csv << "file,peak_gflops_f32,peak_gflops_bf16,mem_bandwidth_gbs,ridge_f32,configs,"
               "configs_memory_bound,ops,ops_left_out,op_time_s,op_time_memory_bound_s\n";
        csv << fmt::format("{},{},{},{},{:.6g},{},{},{},{},{:.6g},{:.6g}\n", rl.label,
                           rl.peak_gflops_f32, rl.peak_gflops_bf16, rl.mem_bandwidth_gbs,
                           rl.ridge_f32, rl.configs, rl.configs_memory_bound, rl.ops,
                           rl.ops_left_out, rl.op_time_s, rl.op_time_memory_bound_s);
      }
      double xmin = *std::min_element(xs.begin(), xs.end());
      double xmax = *std::max_element(xs.begin(), xs.end());
      for (const auto& p : ops) {
        xmin = std::min(xmin, p.intensity);
        xmax = std::max(xmax, p.intensity);
      }
      xmin = std::min(xmin, rl.ridge_f32) / 4;
      xmax = std::max(xmax, ridge_bf16) * 4;
      const double top =
          std::max(rl.peak_gflops_f32, rl.peak_gflops_bf16 > 0 ? rl.peak_gflops_bf16 : 0);
      gp +=
          "set termoption noenhanced\nset logscale xy 10\nset grid\nset key bottom right font "
          "',9'\n";
      gp += fmt::format("set xrange [{:.6g}:{:.6g}]\n", xmin, xmax);
      double ymin = *std::min_element(ys.begin(), ys.end());
      double ymax = std::max(top, *std::max_element(ys.begin(), ys.end()));
      for (const auto& p : ops) {
        ymin = std::min(ymin, p.gflops);
        ymax = std::max(ymax, p.gflops);
      }
      gp += fmt::format("set yrange [{:.6g}:{:.6g}]\n", std::max(1e-6, std::min(ymin, top) / 4),
                        ymax * 2);
      gp += "set xlabel 'arithmetic intensity (FLOP/byte)'\nset ylabel 'achieved GFLOP/s'\n";
      gp += "set palette rgbformulae 33,13,10\n";
      if (!o.color.empty())
        gp += fmt::format("set cblabel {}\n", gp_quote(cv ? "log2 " + o.color : o.color));
      gp += fmt::format(
          "set title {}\n",
          gp_quote(fmt::format(
              "Roofline of {} on {} ({}): measured ceilings; {}{}", rl.label, f.system.hostname,
              f.system.cpu_model,
              pick.size() < rows.size()
                  ? fmt::format("random sample of {} of {} configs", pick.size(), rows.size())
                  : fmt::format("{} configs", rows.size()),
              ops.empty() ? "" : fmt::format(", {} ops >= 1% of their step", ops.size()))));
      gp += fmt::format("roof(x, p) = (x * {0:.8g} < p) ? x * {0:.8g} : p\n", rl.mem_bandwidth_gbs);
      gp += "set samples 400\n";
      std::string plot =
          fmt::format("plot roof(x, {0:.8g}) lw 2 lc rgb '#000000' title {1}", rl.peak_gflops_f32,
                      gp_quote(fmt::format("f32 roof {:.0f} GFLOP/s, {:.1f} GB/s",
                                           rl.peak_gflops_f32, rl.mem_bandwidth_gbs)));
      if (rl.peak_gflops_bf16 > 0)
        plot += fmt::format(", roof(x, {0:.8g}) lw 2 dt 2 lc rgb '#555555' title {1}",
                            rl.peak_gflops_bf16,
                            gp_quote(fmt::format("bf16 roof {:.0f} GFLOP/s", rl.peak_gflops_bf16)));
      plot += fmt::format(", $models using 1:2:3 with points pt 7 ps 0.6 lc palette title {}",
                          gp_quote("models"));
      static const char* kColors[] = {"#1b9e77", "#d95f02", "#7570b3",
                                      "#e7298a", "#66a61e", "#a6761d"};
      for (std::size_t k = 0; k < kinds.size(); ++k)
        plot += fmt::format(", $ops{} using 1:2 with points pt 8 ps 0.7 lc rgb '{}' title {}", k,
                            kColors[k], gp_quote("op " + kinds[k].second));
      gp += plot + "\n";
      for (auto& p : render(gp, base, 760, 540)) res.files.push_back(p);
      res.files.push_back(o.out_dir / (stem + "_configs.csv"));
      res.files.push_back(o.out_dir / (stem + "_summary.csv"));
    }
    res.finding += (res.finding.empty() ? "" : "\n") + rl.finding;
    res.rooflines.push_back(std::move(rl));
  }
  return res;
}

std::string RooflineResult::json() const {
  nlohmann::json j;
  j["analysis"] = "roofline";
  j["finding"] = finding;
  j["files"] = nlohmann::json::array();
  for (const auto& f : files) j["files"].push_back(f.string());
  for (const auto& r : rooflines) {
    j["rooflines"].push_back({{"label", r.label},
                              {"peak_gflops_f32", r.peak_gflops_f32},
                              {"peak_gflops_bf16", r.peak_gflops_bf16},
                              {"mem_bandwidth_gbs", r.mem_bandwidth_gbs},
                              {"ridge_f32", r.ridge_f32},
                              {"configs", r.configs},
                              {"configs_memory_bound", r.configs_memory_bound},
                              {"best_gflops", r.best_gflops},
                              {"best_config", r.best_config},
                              {"ops", r.ops},
                              {"ops_left_out", r.ops_left_out},
                              {"op_time_s", r.op_time_s},
                              {"op_time_memory_bound_s", r.op_time_memory_bound_s},
                              {"finding", r.finding}});
  }
  return j.dump(2);
}

}  // namespace dnnscape::analysis
