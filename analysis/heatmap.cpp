#include "analysis/heatmap.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include "analysis/gnuplot.hpp"
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A column read as display strings, whatever its type.
std::vector<std::string> column_as_strings(const store::ResultsReader& r, const std::string& name) {
  try {
    return r.read_string(name);
  } catch (const std::exception&) {
  }
  std::vector<std::string> out;
  for (auto v : r.read_int(name)) out.push_back(std::to_string(v));
  return out;
}

std::string tic_label(double v) {
  if (v >= 1024 && std::fmod(v, 1024) == 0)
    return fmt::format("{}k", static_cast<long long>(v / 1024));
  return fmt::format("{}", static_cast<long long>(v));
}

}  // namespace

HeatmapResult heatmap(const HeatmapOptions& o) {
  const store::ResultsReader reader(o.input);
  for (const auto& c : {o.x, o.y, o.metric}) {
    if (!reader.has_column(c))
      throw std::invalid_argument(fmt::format("{} has no column '{}'", o.input.string(), c));
  }
  if (!o.facet.empty() && !reader.has_column(o.facet)) {
    throw std::invalid_argument(fmt::format("{} has no column '{}'", o.input.string(), o.facet));
  }
  const auto status = reader.read_string("status");
  const auto xs = reader.read_double(o.x);
  const auto ys = reader.read_double(o.y);
  const auto ms = reader.read_double(o.metric);
  const auto fs = o.facet.empty() ? std::vector<std::string>(status.size())
                                  : column_as_strings(reader, o.facet);

  // facet -> (x, y) -> values
  std::map<std::string, std::map<std::pair<double, double>, std::vector<double>>> cells;
  std::set<double> xvals;
  std::set<double> yvals;
  for (std::size_t i = 0; i < status.size(); ++i) {
    if (status[i] != "ok" || !std::isfinite(ms[i]) || xs[i] < 0 || ys[i] < 0) continue;
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
  const std::string base_name = fmt::format("heatmap_{}_{}_{}{}", o.metric, o.x, o.y,
                                            o.facet.empty() ? "" : "_by_" + o.facet);
  const auto base = o.out_dir / base_name;
  HeatmapResult result;

  // Data: one block per facet (index i for gnuplot), plus a tidy CSV.
  const auto dat = std::filesystem::path(base).replace_extension(".dat");
  const auto csv = std::filesystem::path(base).replace_extension(".csv");
  std::ofstream d(dat);
  std::ofstream c(csv);
  c << (o.facet.empty() ? "" : o.facet + ",") << o.x << "," << o.y << "," << o.metric
    << "_median,rows\n";
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

  const auto& sys = reader.system();
  const auto& meta = reader.meta();
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
  gp += "set datafile missing 'NaN'\n";
  gp += "set palette rgbformulae 33,13,10\n";
  gp += fmt::format("set cbrange [{}:{}]\n", lo, hi > lo ? hi : lo + 1e-12);
  gp += fmt::format("set cblabel {}\n",
                    gp_quote(fmt::format("{} ({})", o.metric, metric_unit(o.metric))));
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
      fmt::format("{} of {} on {} ({}, peak {:.0f} GFLOP/s f32)", o.metric, meta.spec_name,
                  sys.hostname, sys.cpu_model, sys.peak_gflops_f32);
  gp +=
      fmt::format("set multiplot layout {},{} title {} font ',12'\n", rows, cols, gp_quote(title));
  for (std::size_t i = 0; i < panels; ++i) {
    gp +=
        fmt::format("set title {}\n",
                    gp_quote(o.facet.empty() ? (max_rows > 1 ? "median over other parameters" : "")
                                             : fmt::format("{} = {}", o.facet, facets[i])));
    gp +=
        fmt::format("plot {} index {} using 1:2:3 with image notitle\n", gp_quote(dat.string()), i);
  }
  gp += "unset multiplot\n";
  const int width = static_cast<int>(std::max<std::size_t>(520, 420 * cols + 120));
  const int height = static_cast<int>(std::max<std::size_t>(440, 360 * rows + 80));
  for (auto& f : render(gp, base, width, height)) result.files.push_back(f);
  result.files.push_back(csv);
  std::filesystem::remove(dat);

  result.finding =
      fmt::format("{} ranges from {:.4g} to {:.4g} {}; the highest cell is {} ({:.4g}).", o.metric,
                  lo, hi, metric_unit(o.metric), best_where, best);
  if (max_rows > 1) {
    result.finding += fmt::format(
        " Cells are medians over up to {} rows that differ in other parameters.", max_rows);
  }
  return result;
}

}  // namespace dnnscape::analysis
