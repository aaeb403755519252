#include "worker/measure.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace dnnscape::worker {

MedianCI median_ci(std::vector<double> s) {
  MedianCI r;
  if (s.empty()) return r;
  std::sort(s.begin(), s.end());
  const auto n = s.size();
  r.median = n % 2 == 1 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  if (n < 6) {
    r.low = s.front();
    r.high = s.back();
    return r;
  }
  const double dn = static_cast<double>(n);
  const double half = 1.96 * std::sqrt(dn);
  // 1-based ranks of the order statistics bounding the median's 95% CI.
  auto lo_rank = static_cast<std::int64_t>(std::floor((dn - half) / 2.0));
  auto hi_rank = static_cast<std::int64_t>(std::ceil(1.0 + (dn + half) / 2.0));
  lo_rank = std::clamp<std::int64_t>(lo_rank, 1, static_cast<std::int64_t>(n));
  hi_rank = std::clamp<std::int64_t>(hi_rank, 1, static_cast<std::int64_t>(n));
  r.low = s[static_cast<std::size_t>(lo_rank - 1)];
  r.high = s[static_cast<std::size_t>(hi_rank - 1)];
  return r;
}

double coefficient_of_variation(const std::vector<double>& s) {
  if (s.size() < 2) return 0.0;
  const double mean = std::accumulate(s.begin(), s.end(), 0.0) / static_cast<double>(s.size());
  double ss = 0;
  for (double x : s) ss += (x - mean) * (x - mean);
  const double sd = std::sqrt(ss / static_cast<double>(s.size() - 1));
  return mean > 0 ? sd / mean : 0.0;
}

double quantile(std::vector<double> s, double q) {
  if (s.empty()) return std::nan("");
  std::sort(s.begin(), s.end());
  const double pos = q * static_cast<double>(s.size() - 1);
  const auto i = static_cast<std::size_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(i);
  if (i + 1 >= s.size()) return s.back();
  return s[i] + frac * (s[i + 1] - s[i]);
}

TimingResult measure_steps(const std::function<void()>& step, const space::MeasureSettings& m) {
  using clock = std::chrono::steady_clock;
  const auto seconds = [](clock::duration d) { return std::chrono::duration<double>(d).count(); };
  TimingResult r;

  const auto warm_start = clock::now();
  do {
    step();
    ++r.warmup_steps;
  } while (seconds(clock::now() - warm_start) < m.warmup_s);

  const auto start = clock::now();
  const auto min_reps = static_cast<std::size_t>(std::max<std::int64_t>(m.min_reps, 1));
  const auto max_reps = static_cast<std::size_t>(std::max<std::int64_t>(m.max_reps, 1));
  for (;;) {
    const auto t0 = clock::now();
    step();
    r.samples_s.push_back(seconds(clock::now() - t0));
    const auto n = r.samples_s.size();
    // The order-statistic CI needs at least 6 samples before it can say anything.
    if (n >= min_reps && n >= 6) {
      r.step_time_s = median_ci(r.samples_s);
      const double half = std::max(r.step_time_s.median - r.step_time_s.low,
                                   r.step_time_s.high - r.step_time_s.median);
      if (half <= m.target_ci * r.step_time_s.median) {
        r.converged = true;
        break;
      }
    }
    if (n >= max_reps) break;
    if (seconds(clock::now() - start) >= m.max_time_s && n >= std::min<std::size_t>(min_reps, 2))
      break;
  }
  r.step_time_s = median_ci(r.samples_s);
  r.cv = coefficient_of_variation(r.samples_s);
  return r;
}

}  // namespace dnnscape::worker
