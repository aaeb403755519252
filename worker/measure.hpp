// Repeated timing of one step with a nonparametric stopping rule (Hoefler & Belli, SC15).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "space/spec.hpp"

namespace dnnscape::worker {

// Median with its 95% confidence interval from order statistics (Le Boudec, "Performance
// Evaluation of Computer and Communication Systems", 2010, Sec. 2.2.1: ranks
// floor((n - 1.96 sqrt n)/2) and ceil(1 + (n + 1.96 sqrt n)/2)); defined for n >= 6, otherwise
// the interval is [min, max].
struct MedianCI {
  double median = 0;
  double low = 0;
  double high = 0;
};
MedianCI median_ci(std::vector<double> samples);

// Coefficient of variation (sample standard deviation / mean).
double coefficient_of_variation(const std::vector<double>& samples);

// The q-quantile (0..1) by linear interpolation between order statistics (type 7).
double quantile(std::vector<double> samples, double q);

struct TimingResult {
  std::vector<double> samples_s;  // every timed repetition
  MedianCI step_time_s;
  double cv = 0;
  bool converged = false;  // CI half-width within target_ci of the median
  std::int64_t warmup_steps = 0;
};

// Warm-up (>= 1 step and >= warmup_s), then repetitions until the 95% CI of the median lies
// within target_ci of the median, bounded by min_reps / max_reps / max_time_s. `step` must block
// until its work is complete.
TimingResult measure_steps(const std::function<void()>& step, const space::MeasureSettings& s);

}  // namespace dnnscape::worker
