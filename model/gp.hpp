// Gaussian-process regression with an explicit linear mean (a trend whose coefficients have a
// vague prior and are integrated out): Rasmussen & Williams, "Gaussian Processes for Machine
// Learning" (2006), sec. 2.7. Far from the data a prediction follows the trend and its variance
// grows with the trend's own uncertainty instead of collapsing to a constant.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <utility>
#include <vector>

#include "model/gp_hyper.hpp"

namespace dnnscape::model {

// The noise variance of the rows of h under `hyper` (GpHyper: model/gp_hyper.hpp).
Eigen::VectorXd noise_variance(const GpHyper& hyper, const Eigen::MatrixXd& h);

struct GpFitOptions {
  std::size_t max_hyper_points = 400;  // subsample used for the marginal-likelihood search
  int max_evals = 120;                 // per start of the optimiser
  std::uint64_t seed = 1;
  double min_noise_var = 1e-6;  // in units of y (here: log metric); keeps K well conditioned
  // A column of H the noise variance is log-linear in (its slope fitted with the rest, bounded
  // by max_noise_slope per unit of the column); -1: one noise variance for all rows.
  int noise_column = -1;
  double max_noise_slope = 1.5;
};

struct GpPrediction {
  double mean = 0;
  double var = 0;  // of a new measurement: latent variance + noise + trend uncertainty
};

// Fitted process: X (n x d inputs), H (n x p basis, usually [1, X]), y.
class Gp {
 public:
  // Hyperparameters by maximising the log marginal likelihood of the OLS residuals of y on H
  // (NLopt L-BFGS from two starts, analytic gradient), then the posterior on all n points.
  static Gp fit(const Eigen::MatrixXd& x, const Eigen::MatrixXd& h, const Eigen::VectorXd& y,
                const GpFitOptions& options);
  // The posterior for given hyperparameters (no search).
  static Gp with_hyper(const Eigen::MatrixXd& x, const Eigen::MatrixXd& h, const Eigen::VectorXd& y,
                       const GpHyper& hyper);

  // One row of xs / hs per query point.
  [[nodiscard]] std::vector<GpPrediction> predict(const Eigen::MatrixXd& xs,
                                                  const Eigen::MatrixXd& hs) const;

  // Greedy batch of up to k query rows: each the one whose measurement would remove the most
  // predictive variance summed over all query rows (integrated; else: the largest variance
  // itself), conditioned on the picks before it as if they had been measured, so a batch
  // spreads out instead of piling onto one uncertain corner. Variances and covariances include
  // the trend's share. With `cost` (one positive value per query row, e.g. the seconds its
  // measurement takes), a pick's score is divided by its cost: what it teaches per second.
  // Returns (row, square root of its score).
  [[nodiscard]] std::vector<std::pair<std::size_t, double>> select_batch(
      const Eigen::MatrixXd& xs, const Eigen::MatrixXd& hs, std::size_t k, bool integrated = true,
      const std::vector<double>& cost = {}) const;

  // Leave-one-out residuals of the training points in standard deviations (R&W eq. 5.12, with
  // the trend held fixed): alpha_i / sqrt([K^-1]_ii).
  [[nodiscard]] std::vector<double> loo_z() const;

  [[nodiscard]] const GpHyper& hyper() const { return hyper_; }
  [[nodiscard]] const Eigen::VectorXd& beta() const { return beta_; }
  [[nodiscard]] double log_marginal_likelihood() const { return lml_; }

 private:
  Eigen::MatrixXd x_, h_;
  GpHyper hyper_;
  Eigen::LLT<Eigen::MatrixXd> chol_;    // of K + noise
  Eigen::VectorXd beta_;                // GLS trend coefficients
  Eigen::VectorXd alpha_;               // K^-1 (y - H beta)
  Eigen::MatrixXd g_;                   // L^-1 H
  Eigen::LLT<Eigen::MatrixXd> a_chol_;  // of H' K^-1 H (+ a tiny ridge)
  double lml_ = 0;
};

// Matern-5/2 ARD covariance between the rows of a and b (no noise).
Eigen::MatrixXd matern52(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, const GpHyper& h);

}  // namespace dnnscape::model
