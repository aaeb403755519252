// Statistics of the measurement loop: order-statistic CI of the median, quantiles, stopping rule.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "worker/measure.hpp"

using namespace dnnscape;

TEST_CASE("median CI uses the order statistics of Le Boudec's rule") {
  // n = 10: ranks floor((10 - 1.96*sqrt(10))/2) = 1 and ceil(1 + (10 + 1.96*sqrt(10))/2) = 10.
  std::vector<double> s{10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
  auto ci = worker::median_ci(s);
  CHECK(ci.median == doctest::Approx(5.5));
  CHECK(ci.low == 1);
  CHECK(ci.high == 10);
  // n = 100: ranks floor((100 - 19.6)/2) = 40 and ceil(1 + 119.6/2) = 61.
  std::vector<double> h;
  for (int i = 1; i <= 100; ++i) h.push_back(i);
  ci = worker::median_ci(h);
  CHECK(ci.median == doctest::Approx(50.5));
  CHECK(ci.low == 40);
  CHECK(ci.high == 61);
  // Fewer than 6 samples: the whole range.
  ci = worker::median_ci({3, 1, 2});
  CHECK(ci.median == 2);
  CHECK(ci.low == 1);
  CHECK(ci.high == 3);
}

TEST_CASE("quantiles interpolate between order statistics") {
  std::vector<double> s{1, 2, 3, 4, 5};
  CHECK(worker::quantile(s, 0.5) == doctest::Approx(3));
  CHECK(worker::quantile(s, 0.9) == doctest::Approx(4.6));
  CHECK(worker::quantile(s, 1.0) == doctest::Approx(5));
  CHECK(worker::coefficient_of_variation({2, 2, 2}) == doctest::Approx(0));
  CHECK(worker::coefficient_of_variation({1, 3}) == doctest::Approx(std::sqrt(2.0) / 2.0));
}

TEST_CASE("a steady step converges at the minimum repetitions; a noisy one runs to max_reps") {
  space::MeasureSettings m;
  m.warmup_s = 0;
  m.min_reps = 8;
  m.max_reps = 40;
  m.target_ci = 0.5;
  m.max_time_s = 10;
  int calls = 0;
  auto steady = [&] {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };
  auto r = worker::measure_steps(steady, m);
  CHECK(r.converged);
  CHECK(r.samples_s.size() == 8);
  CHECK(r.warmup_steps == 1);
  CHECK(calls == 9);
  CHECK(r.step_time_s.median >= 0.002);

  // Alternating 1 ms / 8 ms: the median's CI spans both, never within 1% -> max_reps.
  m.target_ci = 0.01;
  int k = 0;
  auto noisy = [&] { std::this_thread::sleep_for(std::chrono::milliseconds((k++ % 2) ? 8 : 1)); };
  r = worker::measure_steps(noisy, m);
  CHECK_FALSE(r.converged);
  CHECK(r.samples_s.size() == 40);
}

TEST_CASE("max_time_s bounds the repetitions") {
  space::MeasureSettings m;
  m.warmup_s = 0;
  m.min_reps = 5;
  m.max_reps = 1000;
  m.target_ci = 1e-9;
  m.max_time_s = 0.05;
  auto r =
      worker::measure_steps([] { std::this_thread::sleep_for(std::chrono::milliseconds(10)); }, m);
  CHECK(r.samples_s.size() >= 5);
  CHECK(r.samples_s.size() <= 12);
}
