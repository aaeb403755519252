// The hyperparameters of model::Gp (model/gp.hpp), apart so that holding them needs no Eigen.
#pragma once

#include <utility>
#include <vector>

namespace dnnscape::model {

// Hyperparameters of the ARD Matern-5/2 kernel plus Gaussian noise. The noise variance may grow
// or shrink log-linearly in one column of the trend basis H (heteroscedastic noise: on a shared
// machine how far a config's measurement wanders depends on how long its step is):
// noise_var * exp(noise_slope * s), s = H(i, noise_column) clamped to noise_range.
struct GpHyper {
  std::vector<double> length_scales;  // one per input dimension
  double signal_var = 1;
  double noise_var = 1e-4;
  double noise_slope = 0;
  int noise_column = -1;                           // -1: the same noise everywhere
  std::pair<double, double> noise_range = {0, 0};  // of s over the training rows

  [[nodiscard]] bool heteroscedastic() const { return noise_column >= 0 && noise_slope != 0; }
};

}  // namespace dnnscape::model
