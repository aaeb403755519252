#include "model/nnls.hpp"

#include <Eigen/Dense>
#include <cstddef>
#include <limits>

namespace dnnscape::model {

std::vector<double> nnls_relative(const std::vector<std::vector<double>>& terms,
                                  const std::vector<double>& target) {
  if (terms.empty() || terms.size() != target.size() || terms.front().empty()) return {};
  const std::size_t k = terms.front().size();
  const auto n = static_cast<Eigen::Index>(terms.size());
  std::vector<double> best;
  double best_rss = std::numeric_limits<double>::infinity();
  for (unsigned mask = 1; mask < (1U << k); ++mask) {
    std::vector<std::size_t> cols;
    for (std::size_t j = 0; j < k; ++j)
      if ((mask & (1U << j)) != 0) cols.push_back(j);
    Eigen::MatrixXd a(n, static_cast<Eigen::Index>(cols.size()));
    for (Eigen::Index i = 0; i < n; ++i)
      for (std::size_t j = 0; j < cols.size(); ++j)
        a(i, static_cast<Eigen::Index>(j)) =
            terms[static_cast<std::size_t>(i)][cols[j]] / target[static_cast<std::size_t>(i)];
    const Eigen::VectorXd one = Eigen::VectorXd::Ones(n);
    const Eigen::VectorXd x = a.colPivHouseholderQr().solve(one);
    if (!x.allFinite() || (x.array() <= 0).any()) continue;
    const double rss = (a * x - one).squaredNorm();
    if (rss < best_rss) {
      best_rss = rss;
      best.assign(k, 0.0);
      for (std::size_t j = 0; j < cols.size(); ++j) best[cols[j]] = x(static_cast<Eigen::Index>(j));
    }
  }
  return best;
}

}  // namespace dnnscape::model
