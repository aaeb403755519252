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
  std::string facet;  // "" = one panel
  std::filesystem::path out_dir;
};

struct HeatmapResult {
  std::vector<std::filesystem::path> files;  // .svg, .png, .csv
  std::string finding;                       // one or two plain-text sentences
};

// Cells aggregate the ok rows that share (facet, x, y) by their median (other parameters vary
// inside a cell; the finding says how many rows a cell holds). Throws std::invalid_argument for an
// unknown column and std::runtime_error when nothing can be plotted.
HeatmapResult heatmap(const HeatmapOptions& options);

// Human unit of a metric, for colour-bar labels.
std::string metric_unit(const std::string& metric);

}  // namespace dnnscape::analysis
