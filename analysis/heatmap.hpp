// Heat maps of a metric over two parameters, one panel per value of a facet (ParaDnn Fig. style).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dnnscape::analysis {

struct HeatmapOptions {
  std::filesystem::path input;
  std::string x = "nodes";
  std::string y = "batch";
  std::string metric = "flops_utilization";
  std::string facet;  // "" = one panel; any /runs column (parameter, knob, family, ...)
  std::filesystem::path out_dir;
  std::string where;               // --where filter ("" = all ok rows)
  std::filesystem::path baseline;  // set: colour = speedup of `input` over this file, per config
                                   // (metric ratio oriented so that > 1 means input is better)
};

struct HeatmapResult {
  std::vector<std::filesystem::path> files;  // .svg, .png, .csv
  std::string finding;                       // one or two plain-text sentences
};

// Cells aggregate the ok rows that share (facet, x, y) by their median (other parameters vary
// inside a cell; the finding says how many rows a cell holds). With a baseline, each config's
// speedup is computed first (configs matched as in compare) and cells hold the median speedup.
// Throws std::invalid_argument (InputError) for an unknown column or a bad filter and
// std::runtime_error when nothing can be plotted.
HeatmapResult heatmap(const HeatmapOptions& options);

// Human unit of a metric, for colour-bar labels.
std::string metric_unit(const std::string& metric);

}  // namespace dnnscape::analysis
