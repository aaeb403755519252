// Non-negative least squares of a relative error, for the few-term physical fits of model/ (the
// roofline anchor, the cost of measuring a config).
#pragma once

#include <vector>

namespace dnnscape::model {

// The x >= 0 (one per term) minimising sum_i (sum_j x_j terms[i][j] / target[i] - 1)^2: every
// non-empty subset of the terms solved by least squares, the best one whose coefficients are all
// positive kept (with a handful of terms that is the NNLS optimum). Terms left out are 0. Empty
// when no subset is feasible or the input is empty. Rows must all have the same length, targets
// must be > 0.
std::vector<double> nnls_relative(const std::vector<std::vector<double>>& terms,
                                  const std::vector<double>& target);

}  // namespace dnnscape::model
