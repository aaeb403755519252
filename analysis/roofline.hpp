// Roofline: achieved FLOP/s against arithmetic intensity under the measured compute and memory
// ceilings of the file's /system, for whole models and for the profiled operations (/ops).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "analysis/frame.hpp"

namespace dnnscape::analysis {

struct RooflineOptions {
  std::vector<std::filesystem::path> inputs;  // one roofline per file
  std::string color = "batch";                // parameter that colours the model points
  double min_op_share = 0.01;  // ops under this share of their config's time are left out
  std::string where;
  std::filesystem::path out_dir;
  std::size_t max_plot_points = 20000;  // larger selections plot a random sample (CSV has all)
};

struct Roofline {
  std::string label;
  double peak_gflops_f32 = 0, peak_gflops_bf16 = 0, mem_bandwidth_gbs = 0;
  double ridge_f32 = 0;  // FLOP/byte where the f32 compute roof meets the bandwidth roof
  std::size_t configs = 0, configs_memory_bound = 0;
  double best_gflops = 0;
  std::string best_config;
  std::size_t ops = 0, ops_left_out = 0;
  double op_time_s = 0, op_time_memory_bound_s = 0;
  std::string finding;
};

struct RooflineResult {
  std::vector<Roofline> rooflines;
  std::vector<std::filesystem::path> files;
  std::string finding;
  [[nodiscard]] std::string json() const;
};

RooflineResult roofline(const RooflineOptions& options);
RooflineResult roofline(const std::vector<Frame>& frames, const RooflineOptions& options);
std::vector<std::string> roofline_columns(const RooflineOptions& options);

}  // namespace dnnscape::analysis
