#include "analysis/heatmap.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include "analysis/compare.hpp"
#include "analysis/frame.hpp"
#include "analysis/gnuplot.hpp"
#include "analysis/stats.hpp"
#include "store/results.hpp"

namespace dnnscape::analysis {

std::string metric_unit(const std::string& m) {
  static const std::map<std::string, std::string> units = {
      {"flops_utilization", "fraction of measured peak"},
      {"step_time_s", "s per step"},
      {"examples_per_s", "examples/s"},
      {"gflops", "GFLOP/s"},
      {"arithmetic_intensity", "FLOP/byte"},
      {"flops", "FLOP per step"},
      {"bytes", "bytes per step"},
      {"params", "parameters"},
      {"memory_bytes", "bytes"},
      {"step_time_cv", "coefficient of variation"},
      {"latency_p50_s", "s"},
      {"latency_p90_s", "s"},
      {"latency_p99_s", "s"},
      {"energy_j", "J per step"},
      {"ops_time_ratio", "sum of op times / step time"},
  };
  auto it = units.find(m);
  return it == units.end() ? m : it->second;
}

namespace {

std::string tic_label(double v) {
  if (v >= 1024 && std::fmod(v, 1024) == 0)
    return fmt::format("{}k", static_cast<long long>(v / 1024));
  return fmt::format("{}", static_cast<long long>(v));
}

}  // namespace

HeatmapResult heatmap(const HeatmapOptions& o) {
  std::vector<std::string> wanted = {o.x, o.y, o.metric};
  if (!o.facet.empty()) wanted.push_back(o.facet);
  const auto present = existing_columns(o.input, wanted);
  for (const auto& c : wanted) {
    if (std::find(present.begin(), present.end(), c) == present.end())
      throw std::invalid_argument(fmt::format("{} has no column '{}'", o.input.string(), c));
  }
  if (!o.baseline.empty())
    for (const auto& k : config_key_columns()) wanted.push_back(k);
  const Frame frame = load_frame(o.input, wanted, o.where);
  const auto facet_of = [&](std::size_t r) -> std::string {
    if (o.facet.empty()) return "";
    if (frame.text.count(o.facet)) return frame.cat(o.facet).at(r);
    const double v = frame.num(o.facet)[r];
    return v == std::round(v) && std::fabs(v) < 1e15 ? std::to_string(static_cast<long long>(v))
                                                     : fmt::format("{:g}", v);
  };
  // One value per config: the metric, or the speedup over the baseline's matching config.
  std::vector<double> xs, ys, ms;
  std::vector<std::string> fs;
  const auto& fx = frame.num(o.x);
  const auto& fy = frame.num(o.y);
  const auto& fm = frame.num(o.metric);
  std::string baseline_note;
  if (o.baseline.empty()) {
    for (std::size_t r = 0; r < frame.rows; ++r) {
      xs.push_back(fx[r]);
      ys.push_back(fy[r]);
      ms.push_back(fm[r]);
      fs.push_back(facet_of(r));
    }
  } else {
    const Frame base = load_frame(o.baseline, wanted, o.where);
    const auto m = match_configs(frame, base);
    const auto& bm = base.num(o.metric);
    const bool lower = lower_is_better(o.metric);
    for (const auto& [r, b] : m.pairs) {
      xs.push_back(fx[r]);
      ys.push_back(fy[r]);
      ms.push_back(lower ? bm[b] / fm[r] : fm[r] / bm[b]);
      fs.push_back(facet_of(r));
    }
    baseline_note =
        fmt::format(" over {} configs shared with {} ({} only in {}, {} only in {})",
                    m.pairs.size(), o.baseline.filename().string(), m.only_a.size(),
                    o.input.filename().string(), m.only_b.size(), o.baseline.filename().string());
  }
  const std::string value_name =
      o.baseline.empty()
          ? o.metric
          : fmt::format("speedup over {} ({})", o.baseline.stem().string(), o.metric);
  // facet -> (x, y) -> values
  std::map<std::string, std::map<std::pair<double, double>, std::vector<double>>> cells;
  std::set<double> xvals;
  std::set<double> yvals;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!std::isfinite(ms[i]) || xs[i] < 0 || ys[i] < 0) continue;
    cells[fs[i]][{xs[i], ys[i]}].push_back(ms[i]);
    xvals.insert(xs[i]);
    yvals.insert(ys[i]);
  }
  if (cells.empty()) {
    throw std::runtime_error(
        fmt::format("{}: no ok rows with {}, {} and {}", o.input.string(), o.x, o.y, o.metric));
  }
  // Facet panels in numeric order when the facet is numeric.
  std::vector<std::string> facets;
  for (const auto& [f, _] : cells) facets.push_back(f);
  std::stable_sort(facets.begin(), facets.end(), [](const std::string& a, const std::string& b) {
    char* ea = nullptr;
    char* eb = nullptr;
    const double da = std::strtod(a.c_str(), &ea);
    const double db = std::strtod(b.c_str(), &eb);
    if (*ea == '\0' && *eb == '\0' && !a.empty() && !b.empty()) return da < db;
    return a < b;
  });
  const std::vector<double> xv(xvals.begin(), xvals.end());
  const std::vector<double> yv(yvals.begin(), yvals.end());

  std::filesystem::create_directories(o.out_dir);
  std::string base_name = fmt::format("heatmap_{}_{}_{}{}", o.metric, o.x, o.y,
                                      o.facet.empty() ? "" : "_by_" + o.facet);
  if (!o.baseline.empty()) base_name += "_speedup_over_" + o.baseline.stem().string();
  const auto base = o.out_dir / base_name;
  HeatmapResult result;

  // Data: one block per facet (index i for gnuplot), plus a tidy CSV.
  const auto dat = std::filesystem::path(base).replace_extension(".dat");
  const auto csv = std::filesystem::path(base).replace_extension(".csv");
  std::ofstream d(dat);
  std::ofstream c(csv);
  c << (o.facet.empty() ? "" : o.facet + ",") << o.x << "," << o.y << ","
    << (o.baseline.empty() ? o.metric : "speedup_" + o.metric) << "_median,rows\n";
  double lo = INFINITY, hi = -INFINITY, best = -INFINITY;
  std::string best_where;
  std::size_t max_rows = 0;
  for (const auto& f : facets) {
    const auto& grid = cells.at(f);
    for (std::size_t yi = 0; yi < yv.size(); ++yi) {
      for (std::size_t xi = 0; xi < xv.size(); ++xi) {
        auto it = grid.find({xv[xi], yv[yi]});
        double v = NAN;
        if (it != grid.end()) {
          v = median(it->second);
          max_rows = std::max(max_rows, it->second.size());
          c << (o.facet.empty() ? "" : f + ",") << xv[xi] << "," << yv[yi] << "," << v << ","
            << it->second.size() << "\n";
          lo = std::min(lo, v);
          hi = std::max(hi, v);
          if (v > best) {
            best = v;
            best_where = fmt::format("{}={} {}={}{}", o.x, xv[xi], o.y, yv[yi],
                                     o.facet.empty() ? "" : fmt::format(" {}={}", o.facet, f));
          }
        }
        d << xi << " " << yi << " " << (std::isfinite(v) ? fmt::format("{:.6g}", v) : "NaN")
          << "\n";
      }
      d << "\n";
    }
    d << "\n\n";
  }
  d.close();
  c.close();

  const auto& sys = frame.system;
  const auto& meta = frame.meta;
  const std::size_t panels = facets.size();
  const std::size_t cols =
      panels <= 3 ? panels
                  : static_cast<std::size_t>(std::ceil(std::sqrt(static_cast<double>(panels))));
  const std::size_t rows = (panels + cols - 1) / cols;
  std::string tics_x = "(";
  for (std::size_t i = 0; i < xv.size(); ++i)
    tics_x += fmt::format("{}\"{}\" {}", i ? ", " : "", tic_label(xv[i]), i);
  tics_x += ")";
  std::string tics_y = "(";
  for (std::size_t i = 0; i < yv.size(); ++i)
    tics_y += fmt::format("{}\"{}\" {}", i ? ", " : "", tic_label(yv[i]), i);
  tics_y += ")";

  std::string gp;
  gp += "set termoption noenhanced\nset datafile missing 'NaN'\n";
  gp += "set palette rgbformulae 33,13,10\n";
  gp += fmt::format("set cbrange [{}:{}]\n", lo, hi > lo ? hi : lo + 1e-12);
  gp += fmt::format(
      "set cblabel {}\n",
      gp_quote(o.baseline.empty() ? fmt::format("{} ({})", o.metric, metric_unit(o.metric))
                                  : value_name + ", > 1: faster"));
  gp += fmt::format("set xtics {} rotate by 45 right font ',8'\nset ytics {} font ',8'\n", tics_x,
                    tics_y);
  gp += fmt::format("set xlabel {}\nset ylabel {}\n", gp_quote(o.x + " (log2 scale)"),
                    gp_quote(o.y + " (log2 scale)"));
  gp += fmt::format("set xrange [-0.5:{}]\nset yrange [-0.5:{}]\n",
                    static_cast<double>(xv.size()) - 0.5, static_cast<double>(yv.size()) - 0.5);
  gp +=
      "set object 1 rectangle from graph 0,0 to graph 1,1 behind fillcolor rgb '#dddddd' fillstyle "
      "solid noborder\n";
  const std::string title =
      fmt::format("{} of {} on {} ({}, peak {:.0f} GFLOP/s f32)", value_name, meta.spec_name,
                  sys.hostname, sys.cpu_model, sys.peak_gflops_f32);
  gp +=
      fmt::format("set multiplot layout {},{} title {} font ',12'\n", rows, cols, gp_quote(title));
  for (std::size_t i = 0; i < panels; ++i) {
    gp +=
        fmt::format("set title {}\n",
                    gp_quote(o.facet.empty() ? (max_rows > 1 ? "median over other parameters" : "")
                                             : fmt::format("{} = {}", o.facet, facets[i])));
    gp += fmt::format("plot {} index {} using 1:2:3 with image pixels notitle\n",
                      gp_quote(dat.string()), i);
  }
  gp += "unset multiplot\n";
  const int width = static_cast<int>(std::max<std::size_t>(520, 420 * cols + 120));
  const int height = static_cast<int>(std::max<std::size_t>(440, 360 * rows + 80));
  for (auto& f : render(gp, base, width, height)) result.files.push_back(f);
  result.files.push_back(csv);
  std::filesystem::remove(dat);

  result.finding = fmt::format(
      "{} ranges from {:.4g} to {:.4g}{}; the highest cell is {} ({:.4g}).", value_name, lo, hi,
      o.baseline.empty() ? fmt::format(" {}", metric_unit(o.metric)) : baseline_note, best_where,
      best);
  if (max_rows > 1) {
    result.finding += fmt::format(
        " Cells are medians over up to {} rows that differ in other parameters.", max_rows);
  }
  if (o.metric == "flops_utilization" && o.baseline.empty() && hi > 1)
    result.finding += fmt::format(" Above 1: {}", kAbovePeakNote);
  return result;
}

}  // namespace dnnscape::analysis
