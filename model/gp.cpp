#include "model/gp.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlopt.hpp>
#include <numeric>
#include <random>
#include <stdexcept>

#include "space/grid.hpp"

namespace dnnscape::model {
namespace {

constexpr double kSqrt5 = 2.23606797749979;
constexpr double kLog2Pi = 1.8378770664093453;

// Squared distances per dimension between the rows of a and b.
Eigen::MatrixXd weighted_sq_dist(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b,
                                 const std::vector<double>& ell) {
  Eigen::MatrixXd d = Eigen::MatrixXd::Zero(a.rows(), b.rows());
  for (Eigen::Index j = 0; j < a.cols(); ++j) {
    const double w = 1.0 / (ell[static_cast<std::size_t>(j)] * ell[static_cast<std::size_t>(j)]);
    for (Eigen::Index c = 0; c < b.rows(); ++c) {
      const double bj = b(c, j);
      d.col(c).array() += w * (a.col(j).array() - bj).square();
    }
  }
  return d;
}

Eigen::VectorXd ols_residuals(const Eigen::MatrixXd& h, const Eigen::VectorXd& y) {
  Eigen::MatrixXd hth = h.transpose() * h;
  const double ridge = 1e-8 * std::max(hth.trace() / static_cast<double>(h.cols()), 1e-300);
  hth.diagonal().array() += ridge;
  const Eigen::VectorXd beta = hth.ldlt().solve(h.transpose() * y);
  return y - h * beta;
}

// Negative-free objective state for NLopt: log marginal likelihood of r and its gradient.
struct LmlProblem {
  const Eigen::MatrixXd* x = nullptr;
  Eigen::VectorXd r;
  std::vector<Eigen::MatrixXd> dims;  // per dimension, squared differences
  double min_noise = 1e-6;
  Eigen::VectorXd s;  // the noise covariate per row; empty: homoscedastic (theta has d + 2)
  double best = -std::numeric_limits<double>::infinity();
  std::vector<double> best_theta;

  double eval(const std::vector<double>& theta, std::vector<double>& grad) {
    const std::size_t d = dims.size();
    const Eigen::Index n = r.size();
    std::vector<double> ell(d);
    for (std::size_t j = 0; j < d; ++j) ell[j] = std::exp(theta[j]);
    const double sf2 = std::exp(theta[d]);
    const double sn2 = std::exp(theta[d + 1]) + min_noise;
    Eigen::VectorXd noise = Eigen::VectorXd::Constant(n, sn2);
    if (s.size() == n) noise = sn2 * (theta[d + 2] * s).array().exp().matrix();
    Eigen::MatrixXd rho2 = Eigen::MatrixXd::Zero(n, n);
    for (std::size_t j = 0; j < d; ++j) rho2 += dims[j] / (ell[j] * ell[j]);
    const Eigen::ArrayXXd rho = rho2.array().sqrt();
    const Eigen::ArrayXXd e = (-kSqrt5 * rho).exp();
    const Eigen::MatrixXd kf = (sf2 * (1 + kSqrt5 * rho + (5.0 / 3.0) * rho2.array()) * e).matrix();
    Eigen::MatrixXd k = kf;
    k.diagonal() += noise;
    Eigen::LLT<Eigen::MatrixXd> llt(k);
    if (llt.info() != Eigen::Success) {
      std::fill(grad.begin(), grad.end(), 0.0);
      return -1e300;
    }
    const Eigen::VectorXd alpha = llt.solve(r);
    const Eigen::MatrixXd& l = llt.matrixLLT();
    double logdet = 0;
    for (Eigen::Index i = 0; i < n; ++i) logdet += 2 * std::log(l(i, i));
    const double lml = -0.5 * r.dot(alpha) - 0.5 * logdet - 0.5 * static_cast<double>(n) * kLog2Pi;
    if (!grad.empty()) {
      Eigen::MatrixXd w = llt.solve(Eigen::MatrixXd::Identity(n, n));
      w = alpha * alpha.transpose() - w;
      const Eigen::ArrayXXd b = sf2 * (5.0 / 3.0) * (1 + kSqrt5 * rho) * e;
      const Eigen::ArrayXXd wb = w.array() * b;
      for (std::size_t j = 0; j < d; ++j)
        grad[j] = 0.5 * (wb * dims[j].array()).sum() / (ell[j] * ell[j]);
      grad[d] = 0.5 * (w.array() * kf.array()).sum();
      // d noise_i / d theta[d+1] = noise_i (sn2 - min) / sn2; d noise_i / d slope = noise_i s_i.
      grad[d + 1] = 0.5 * (sn2 - min_noise) / sn2 * w.diagonal().dot(noise);
      if (s.size() == n) grad[d + 2] = 0.5 * w.diagonal().dot(noise.cwiseProduct(s));
    }
    if (std::isfinite(lml) && lml > best) {
      best = lml;
      best_theta = theta;
    }
    return lml;
  }
};

double nlopt_objective(const std::vector<double>& theta, std::vector<double>& grad, void* data) {
  return static_cast<LmlProblem*>(data)->eval(theta, grad);
}

}  // namespace

Eigen::VectorXd noise_variance(const GpHyper& hyper, const Eigen::MatrixXd& h) {
  Eigen::VectorXd out = Eigen::VectorXd::Constant(h.rows(), hyper.noise_var);
  if (!hyper.heteroscedastic()) return out;
  const int noise_column = hyper.noise_column;
  if (noise_column >= h.cols())
    throw std::invalid_argument("GpHyper: the noise column is not a column of the basis");
  for (Eigen::Index i = 0; i < h.rows(); ++i)
    out(i) *= std::exp(hyper.noise_slope * std::clamp(h(i, noise_column), hyper.noise_range.first,
                                                      hyper.noise_range.second));
  return out;
}

Eigen::MatrixXd matern52(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, const GpHyper& h) {
  const Eigen::ArrayXXd rho2 = weighted_sq_dist(a, b, h.length_scales).array();
  const Eigen::ArrayXXd rho = rho2.sqrt();
  return (h.signal_var * (1 + kSqrt5 * rho + (5.0 / 3.0) * rho2) * (-kSqrt5 * rho).exp()).matrix();
}

Gp Gp::fit(const Eigen::MatrixXd& x, const Eigen::MatrixXd& h, const Eigen::VectorXd& y,
           const GpFitOptions& options) {
  const Eigen::Index n = x.rows();
  const auto d = static_cast<std::size_t>(x.cols());
  const Eigen::VectorXd r_all = ols_residuals(h, y);

  // The hyperparameter search runs on a random subsample: its cost is cubic in the points.
  std::vector<Eigen::Index> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), Eigen::Index{0});
  if (static_cast<std::size_t>(n) > options.max_hyper_points) {
    std::mt19937_64 rng(options.seed);
    for (std::size_t i = idx.size() - 1; i > 0; --i)
      std::swap(idx[i], idx[space::uniform_below(rng, i + 1)]);
    idx.resize(options.max_hyper_points);
  }
  const auto m = static_cast<Eigen::Index>(idx.size());
  Eigen::MatrixXd xs(m, x.cols());
  LmlProblem problem;
  problem.r.resize(m);
  for (Eigen::Index i = 0; i < m; ++i) {
    xs.row(i) = x.row(idx[static_cast<std::size_t>(i)]);
    problem.r(i) = r_all(idx[static_cast<std::size_t>(i)]);
  }
  problem.r.array() -= problem.r.mean();
  problem.min_noise = options.min_noise_var;
  const bool hetero = options.noise_column >= 0 && options.noise_column < h.cols() && m >= 8;
  std::pair<double, double> s_range = {0, 0};
  if (hetero) {
    const Eigen::VectorXd s_all = h.col(options.noise_column);
    s_range = {s_all.minCoeff(), s_all.maxCoeff()};
    problem.s.resize(m);
    for (Eigen::Index i = 0; i < m; ++i) problem.s(i) = s_all(idx[static_cast<std::size_t>(i)]);
  }
  const std::size_t n_theta = d + (hetero ? 3 : 2);
  for (std::size_t j = 0; j < d; ++j) {
    Eigen::MatrixXd dj(m, m);
    for (Eigen::Index c = 0; c < m; ++c)
      dj.col(c) =
          (xs.col(static_cast<Eigen::Index>(j)).array() - xs(c, static_cast<Eigen::Index>(j)))
              .square()
              .matrix();
    problem.dims.push_back(std::move(dj));
  }
  const double var =
      std::max(problem.r.squaredNorm() / static_cast<double>(std::max<Eigen::Index>(m, 1)), 1e-8);

  // Bounds in log space: length scales from 1/20 to 50 standard deviations of a feature.
  std::vector<double> lo(n_theta), hi(n_theta);
  for (std::size_t j = 0; j < d; ++j) {
    lo[j] = std::log(0.05);
    hi[j] = std::log(50.0);
  }
  lo[d] = std::log(var * 1e-3);
  hi[d] = std::log(var * 100);
  lo[d + 1] = std::log(1e-9);
  hi[d + 1] = std::log(var * 2);
  if (hetero) {
    lo[d + 2] = -options.max_noise_slope;
    hi[d + 2] = options.max_noise_slope;
  }
  for (const double start_ell : {1.0, 4.0}) {
    std::vector<double> theta(n_theta, 0.0);
    for (std::size_t j = 0; j < d; ++j) theta[j] = std::log(start_ell);
    theta[d] = std::log(var);
    theta[d + 1] = std::log(var * 0.05);
    nlopt::opt opt(nlopt::LD_LBFGS, static_cast<unsigned>(n_theta));
    opt.set_lower_bounds(lo);
    opt.set_upper_bounds(hi);
    opt.set_max_objective(nlopt_objective, &problem);
    opt.set_maxeval(options.max_evals);
    opt.set_ftol_rel(1e-7);
    double value = 0;
    try {
      (void)opt.optimize(theta, value);
    } catch (const std::exception&) {
      // Round-off or a failed line search: the best point seen so far is kept below.
    }
  }
  GpHyper hyper;
  hyper.length_scales.assign(d, 1.0);
  if (!problem.best_theta.empty()) {
    for (std::size_t j = 0; j < d; ++j) hyper.length_scales[j] = std::exp(problem.best_theta[j]);
    hyper.signal_var = std::exp(problem.best_theta[d]);
    hyper.noise_var = std::exp(problem.best_theta[d + 1]) + options.min_noise_var;
    if (hetero) {
      hyper.noise_slope = problem.best_theta[d + 2];
      hyper.noise_column = options.noise_column;
      hyper.noise_range = s_range;
    }
  } else {
    hyper.signal_var = var;
    hyper.noise_var = var * 0.05 + options.min_noise_var;
  }
  return with_hyper(x, h, y, hyper);
}

Gp Gp::with_hyper(const Eigen::MatrixXd& x, const Eigen::MatrixXd& h, const Eigen::VectorXd& y,
                  const GpHyper& hyper) {
  if (x.rows() == 0) throw std::invalid_argument("a Gaussian process needs training points");
  Gp gp;
  gp.x_ = x;
  gp.h_ = h;
  gp.hyper_ = hyper;
  Eigen::MatrixXd k = matern52(x, x, hyper);
  k.diagonal() += noise_variance(hyper, h);
  k.diagonal().array() += 1e-10 * hyper.signal_var;
  gp.chol_.compute(k);
  if (gp.chol_.info() != Eigen::Success)
    throw std::runtime_error("the GP covariance is not positive definite");
  gp.g_ = gp.chol_.matrixL().solve(h);
  Eigen::MatrixXd a = gp.g_.transpose() * gp.g_;
  a.diagonal().array() += 1e-8 * std::max(a.trace() / static_cast<double>(a.rows()), 1e-300);
  gp.a_chol_.compute(a);
  const Eigen::VectorXd ly = gp.chol_.matrixL().solve(y);
  gp.beta_ = gp.a_chol_.solve(gp.g_.transpose() * ly);
  const Eigen::VectorXd resid = y - h * gp.beta_;
  gp.alpha_ = gp.chol_.solve(resid);
  double logdet = 0;
  const Eigen::MatrixXd& l = gp.chol_.matrixLLT();
  for (Eigen::Index i = 0; i < l.rows(); ++i) logdet += 2 * std::log(l(i, i));
  gp.lml_ =
      -0.5 * resid.dot(gp.alpha_) - 0.5 * logdet - 0.5 * static_cast<double>(x.rows()) * kLog2Pi;
  return gp;
}

std::vector<GpPrediction> Gp::predict(const Eigen::MatrixXd& xs, const Eigen::MatrixXd& hs) const {
  std::vector<GpPrediction> out(static_cast<std::size_t>(xs.rows()));
  constexpr Eigen::Index kChunk = 512;
  for (Eigen::Index start = 0; start < xs.rows(); start += kChunk) {
    const Eigen::Index m = std::min(kChunk, xs.rows() - start);
    const Eigen::MatrixXd ks = matern52(x_, xs.middleRows(start, m), hyper_);  // n x m
    const Eigen::VectorXd mean = hs.middleRows(start, m) * beta_ + ks.transpose() * alpha_;
    Eigen::MatrixXd v = ks;
    chol_.matrixL().solveInPlace(v);
    const Eigen::MatrixXd r = hs.middleRows(start, m).transpose() - g_.transpose() * v;  // p x m
    const Eigen::MatrixXd ar = a_chol_.solve(r);
    const Eigen::VectorXd noise = noise_variance(hyper_, hs.middleRows(start, m));
    for (Eigen::Index i = 0; i < m; ++i) {
      const double latent = std::max(hyper_.signal_var - v.col(i).squaredNorm(), 0.0);
      const double trend = std::max(r.col(i).dot(ar.col(i)), 0.0);
      auto& p = out[static_cast<std::size_t>(start + i)];
      p.mean = mean(i);
      p.var = latent + trend + noise(i);
    }
  }
  return out;
}

std::vector<double> Gp::loo_z() const {
  const Eigen::Index n = x_.rows();
  const Eigen::MatrixXd kinv = chol_.solve(Eigen::MatrixXd::Identity(n, n));
  std::vector<double> z(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i)
    z[static_cast<std::size_t>(i)] = alpha_(i) / std::sqrt(std::max(kinv(i, i), 1e-300));
  return z;
}

std::vector<std::pair<std::size_t, double>> Gp::select_batch(
    const Eigen::MatrixXd& xs, const Eigen::MatrixXd& hs, std::size_t k, bool integrated,
    const std::vector<double>& cost) const {
  const Eigen::Index m = xs.rows();
  if (!cost.empty() && cost.size() != static_cast<std::size_t>(m))
    throw std::invalid_argument("select_batch: one cost per query row");
  Eigen::MatrixXd v = matern52(x_, xs, hyper_);  // n x m, then L^-1 K*
  chol_.matrixL().solveInPlace(v);
  const Eigen::MatrixXd r = hs.transpose() - g_.transpose() * v;  // p x m
  const Eigen::MatrixXd ar = a_chol_.solve(r);
  const Eigen::VectorXd noise = noise_variance(hyper_, hs);
  Eigen::VectorXd var(m);
  for (Eigen::Index i = 0; i < m; ++i)
    var(i) = std::max(hyper_.signal_var - v.col(i).squaredNorm(), 0.0) +
             std::max(r.col(i).dot(ar.col(i)), 0.0);
  // The reference set over which the variance removed by a pick is summed: the query rows
  // themselves (every s-th of them when there are many, to bound the cost at m x 1024).
  const Eigen::Index stride = std::max<Eigen::Index>(1, (m + 1023) / 1024);
  std::vector<Eigen::Index> ref;
  for (Eigen::Index i = 0; i < m; i += stride) ref.push_back(i);
  const auto s_n = static_cast<Eigen::Index>(ref.size());
  Eigen::MatrixXd xr(s_n, xs.cols()), vr(v.rows(), s_n);
  for (Eigen::Index j = 0; j < s_n; ++j) {
    xr.row(j) = xs.row(ref[static_cast<std::size_t>(j)]);
    vr.col(j) = v.col(ref[static_cast<std::size_t>(j)]);
  }
  Eigen::MatrixXd rr(r.rows(), s_n);
  for (Eigen::Index j = 0; j < s_n; ++j) rr.col(j) = ar.col(ref[static_cast<std::size_t>(j)]);
  // m x S posterior covariance: the GP's share plus the trend's (R' A^-1 R_ref).
  Eigen::MatrixXd cref = matern52(xs, xr, hyper_) - v.transpose() * vr + r.transpose() * rr;
  std::vector<Eigen::VectorXd> updates;
  std::vector<char> taken(static_cast<std::size_t>(m), 0);
  std::vector<std::pair<std::size_t, double>> out;
  for (std::size_t t = 0; t < k; ++t) {
    // The pick that removes the most predictive variance of the log metric (= relative
    // uncertainty) summed over the grid, not the single most uncertain config: that one sits
    // in a corner, and a batch of them leaves the bulk of the grid as uncertain as before.
    Eigen::Index c = -1;
    double best = -1;
    for (Eigen::Index i = 0; i < m; ++i) {
      if (taken[static_cast<std::size_t>(i)] != 0) continue;
      double gain =
          integrated ? cref.row(i).squaredNorm() / (std::max(var(i), 0.0) + noise(i)) : var(i);
      if (!cost.empty()) gain /= std::max(cost[static_cast<std::size_t>(i)], 1e-12);
      if (gain > best) {
        best = gain;
        c = i;
      }
    }
    if (c < 0) break;
    taken[static_cast<std::size_t>(c)] = 1;
    out.emplace_back(static_cast<std::size_t>(c), std::sqrt(std::max(best, 0.0)));
    // Condition on the pick as if measured: the covariance of every query row with it, given
    // the data and the earlier picks (the trend's share included).
    Eigen::VectorXd cov = matern52(xs, xs.row(c), hyper_).col(0) - v.transpose() * v.col(c) +
                          r.transpose() * ar.col(c);
    for (const auto& u : updates) cov -= u * u(c);
    const double scale = std::sqrt(std::max(var(c), 0.0) + noise(c));
    Eigen::VectorXd u = cov / scale;
    const Eigen::RowVectorXd u_ref = cref.row(c) / scale;
    cref -= u * u_ref;
    var -= u.cwiseAbs2();
    updates.push_back(std::move(u));
  }
  return out;
}

}  // namespace dnnscape::model
