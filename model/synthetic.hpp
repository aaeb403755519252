// A landscape with a known formula, for tests and bench/bench_model: FC configs with analytic
// counts and step time max(flops / peak, bytes / bandwidth) / efficiency(batch) x noise.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "model/model.hpp"

namespace dnnscape::model::synthetic {

inline System system() {
  return {"synthetic", 200.0, std::numeric_limits<double>::quiet_NaN(), 20.0};
}

// The noise-free step time of an FC training step on system().
inline double fc_time_s(const Point& p) {
  const double roofline = std::max(p.flops / 200e9, p.bytes / 20e9);
  const double b = static_cast<double>(p.config.batch);
  const double n = static_cast<double>(p.config.nodes);
  // Saturates with batch (as measured machines do); wiggles with the width (blocking effects).
  const double efficiency = 0.9 / (1.0 + 64.0 / b) * (1.0 - 0.15 * std::sin(std::log2(n)));
  return roofline / efficiency + 20e-6 * static_cast<double>(p.config.layers);
}

// Counts of an FC config (ParaDnn: layers x Dense(nodes), Dense(output); training = 3 x forward).
inline Point fc_point(const space::Config& c) {
  Point p;
  p.config = c;
  const double l = static_cast<double>(c.layers), n = static_cast<double>(c.nodes);
  const double in = static_cast<double>(c.input), out = static_cast<double>(c.output);
  const double b = static_cast<double>(c.batch);
  p.params = in * n + (l - 1) * n * n + n * out;
  p.flops = 3 * 2 * b * p.params;
  p.bytes = 4 * (3 * p.params + 2 * b * (in + l * n + out));
  return p;
}

// The points of `configs` with measured = fc_time_s x lognormal(0, noise_sd).
inline std::vector<Point> fc_measured(const std::vector<space::Config>& configs, double noise_sd,
                                      std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, noise_sd);
  std::vector<Point> out;
  for (const auto& c : configs) {
    Point p = fc_point(c);
    p.value = fc_time_s(p) * std::exp(noise_sd > 0 ? noise(rng) : 0.0);
    out.push_back(std::move(p));
  }
  return out;
}

// layers x nodes x batch grid (input 1024, output 128, training f32), log2 steps.
inline std::vector<space::Config> fc_grid(std::int64_t max_layers = 16,
                                          std::int64_t max_nodes = 4096,
                                          std::int64_t max_batch = 16384) {
  std::vector<space::Config> out;
  for (std::int64_t l = 1; l <= max_layers; l *= 2)
    for (std::int64_t n = 64; n <= max_nodes; n *= 2)
      for (std::int64_t b = 16; b <= max_batch; b *= 2) {
        space::Config c;
        c.family = space::Family::fc;
        c.layers = l;
        c.nodes = n;
        c.input = 1024;
        c.output = 128;
        c.batch = b;
        out.push_back(c);
      }
  return out;
}

}  // namespace dnnscape::model::synthetic
