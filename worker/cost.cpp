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

double predicted_config_time_s(double step, double warmup_s, long min_reps, long max_reps,
                               double max_time_s) {
  // Steps usually converge after a few dozen repetitions; warm-up is at least one step, and the
  // build plus profiled pass cost about two more.
  const double reps =
      std::clamp(30.0, static_cast<double>(min_reps), static_cast<double>(max_reps));
  return std::max(warmup_s, step) + std::min(reps * step, std::max(max_time_s, step)) + 2 * step;
}

}  // namespace dnnscape::worker
