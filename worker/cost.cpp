#include "worker/cost.hpp"

#include <algorithm>

namespace dnnscape::worker {

double peak_gflops_for(const Peaks& peaks, const std::string& dtype) {
  if (dtype == "bf16" && peaks.gflops_bf16 > 0) return peaks.gflops_bf16;
  return peaks.gflops_f32;
}

double predicted_step_time_s(const ModelCounts& c, const Peaks& peaks, const std::string& dtype) {
  const double peak = peak_gflops_for(peaks, dtype) * 1e9;
  const double bw = peaks.mem_bandwidth_gbs * 1e9;
  return std::max(peak > 0 ? c.flops / peak : 0.0, bw > 0 ? c.bytes / bw : 0.0);
}

}  // namespace dnnscape::worker
