// heatmap: the original behaviour, facets over any column, filters and speedups between files.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "analysis/heatmap.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using namespace dnnscape::analysis;

namespace {

std::vector<std::vector<std::string>> csv(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream f(p);
  std::string line;
  while (std::getline(f, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, ',')) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

void make(const fs::path& path, double speed) {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    const double t = 1e-6 * static_cast<double>(l * n * b) + 1e-4;
    rows.push_back(synth::fc(l, n, 2000, 200, b, t / speed, 300, "f32"));
    rows.push_back(synth::fc(l, n, 2000, 200, b, t / speed / (b >= 512 ? 2 : 1), 300, "bf16"));
  });
  synth::write(path, rows, synth::system_info("alpha"));
}

}  // namespace

TEST_CASE("default options: one panel, medians over the other parameters") {
  make("hm.h5", 1.0);
  HeatmapOptions o;
  o.input = "hm.h5";
  o.out_dir = "hm_out";
  const auto r = heatmap(o);
  REQUIRE(r.files.size() == 3);
  CHECK(fs::exists("hm_out/heatmap_flops_utilization_nodes_batch.svg"));
  const auto t = csv("hm_out/heatmap_flops_utilization_nodes_batch.csv");
  CHECK(t[0] == std::vector<std::string>{"nodes", "batch", "flops_utilization_median", "rows"});
  CHECK(t.size() == 1 + 5 * 6);
  CHECK(t[1][3] == "8");  // 4 layers x 2 dtypes per cell
  CHECK(r.finding.find("medians over up to 8 rows") != std::string::npos);
  CHECK(r.finding.find("Above 1") == std::string::npos);  // at most 0.034 of the peak
}

TEST_CASE("flops_utilization above 1 gets the FLOP convention's explanation") {
  make("hm_fast.h5", 50.0);  // 50x faster: up to 1.7 of the peak
  HeatmapOptions o;
  o.input = "hm_fast.h5";
  o.out_dir = "hm_fast_out";
  const auto r = heatmap(o);
  CHECK(r.finding.find("to 1.721 fraction of measured peak") != std::string::npos);
  CHECK(r.finding.find("Above 1: gflops counts ParaDnn's model FLOPs") != std::string::npos);
  o.metric = "step_time_s";
  CHECK(heatmap(o).finding.find("Above 1") == std::string::npos);
}

TEST_CASE("facets over a knob and over family; --where restricts the rows") {
  make("hm2.h5", 1.0);
  HeatmapOptions o;
  o.input = "hm2.h5";
  o.out_dir = "hm2_out";
  o.facet = "dtype";
  o.x = "layers";
  o.metric = "step_time_s";
  heatmap(o);
  auto t = csv("hm2_out/heatmap_step_time_s_layers_batch_by_dtype.csv");
  CHECK(t[0][0] == "dtype");
  CHECK(t.size() == 1 + 2 * 4 * 6);
  CHECK(t[1][0] == "bf16");
  o.facet = "family";
  o.where = "nodes == 64 && dtype == f32";
  const auto r = heatmap(o);
  t = csv("hm2_out/heatmap_step_time_s_layers_batch_by_family.csv");
  CHECK(t.size() == 1 + 4 * 6);
  CHECK(t[1][0] == "fc");
  CHECK(t[1][4] == "1");  // one row per cell after the filter
  CHECK(r.finding.find("medians over") == std::string::npos);
  o.where = "nodes = 64";
  CHECK_THROWS_AS(heatmap(o), std::invalid_argument);
  o.where = "";
  o.facet = "planet";
  CHECK_THROWS_AS(heatmap(o), std::invalid_argument);
}

TEST_CASE("speedup heat map between two files") {
  make("hm_base.h5", 1.0);
  make("hm_fast.h5", 4.0);
  HeatmapOptions o;
  o.input = "hm_fast.h5";
  o.baseline = "hm_base.h5";
  o.metric = "step_time_s";
  o.facet = "dtype";
  o.out_dir = "hm3_out";
  const auto r = heatmap(o);
  const auto t = csv("hm3_out/heatmap_step_time_s_nodes_batch_by_dtype_speedup_over_hm_base.csv");
  REQUIRE(t.size() == 1 + 2 * 5 * 6);
  CHECK(t[0][3] == "speedup_step_time_s_median");
  for (std::size_t i = 1; i < t.size(); ++i) CHECK(std::stod(t[i][3]) == doctest::Approx(4.0));
  CHECK(r.finding.find("over 240 configs shared with hm_base.h5") != std::string::npos);
  // A higher-is-better metric is divided the other way round.
  o.metric = "examples_per_s";
  heatmap(o);
  const auto e =
      csv("hm3_out/heatmap_examples_per_s_nodes_batch_by_dtype_speedup_over_hm_base.csv");
  CHECK(std::stod(e[1][3]) == doctest::Approx(4.0));
}
