// model: the GP + trend on synthetic landscapes with known answers.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>

#include "analysis/synth.hpp"
#include "model/cost.hpp"
#include "model/gp.hpp"
#include "model/model.hpp"
#include "model/nnls.hpp"
#include "model/synthetic.hpp"

using namespace dnnscape;
using namespace dnnscape::model;
namespace fs = std::filesystem;

TEST_CASE("the GP recovers a smooth 1-D function and its intervals cover about 90%") {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0.0, 0.05);
  const auto f = [](double x) { return std::sin(2 * x) + 0.5 * x; };
  Eigen::MatrixXd x(60, 1), h(60, 2);
  Eigen::VectorXd y(60);
  for (int i = 0; i < 60; ++i) {
    x(i, 0) = -3 + 6.0 * i / 59.0;
    h(i, 0) = 1;
    h(i, 1) = x(i, 0);
    y(i) = f(x(i, 0)) + noise(rng);
  }
  const Gp gp = Gp::fit(x, h, y, {});
  CHECK(gp.hyper().noise_var == doctest::Approx(0.0025).epsilon(1.0));  // within 2x
  Eigen::MatrixXd xs(200, 1), hs(200, 2);
  for (int i = 0; i < 200; ++i) {
    xs(i, 0) = -2.9 + 5.8 * i / 199.0;
    hs(i, 0) = 1;
    hs(i, 1) = xs(i, 0);
  }
  const auto pr = gp.predict(xs, hs);
  int covered = 0;
  double max_err = 0;
  for (int i = 0; i < 200; ++i) {
    const double truth = f(xs(i, 0));
    max_err = std::max(max_err, std::abs(pr[static_cast<std::size_t>(i)].mean - truth));
    const double yi = truth + noise(rng);
    const double sd = std::sqrt(pr[static_cast<std::size_t>(i)].var);
    covered += std::abs(yi - pr[static_cast<std::size_t>(i)].mean) <= kZ90 * sd ? 1 : 0;
  }
  CHECK(max_err < 0.08);
  CHECK(covered >= 160);  // 90% nominal; 80-97% accepted
  CHECK(covered <= 196);
  // Far from the data the prediction follows the linear trend and the variance grows.
  Eigen::MatrixXd far(1, 1), hfar(1, 2);
  far << 12;
  hfar << 1, 12;
  const auto pf = gp.predict(far, hfar);
  CHECK(pf[0].mean == doctest::Approx(gp.beta()(0) + 12 * gp.beta()(1)).epsilon(0.02));
  CHECK(pf[0].var > 4 * pr[100].var);
}

TEST_CASE("noise that grows along the trend's column is fitted, and both ends are covered") {
  // Noise sd 0.01 at x = -3 growing to 0.2 at x = 3 (log-linear): one noise variance for all
  // rows would be 4x too wide on the left and too narrow on the right.
  const auto sd_at = [](double x) { return 0.01 * std::exp(0.5 * (x + 3)); };
  const auto f = [](double x) { return std::sin(x) + 0.3 * x; };
  std::mt19937_64 rng(5);
  std::normal_distribution<double> unit(0.0, 1.0);
  constexpr int n = 120;
  Eigen::MatrixXd x(n, 1), h(n, 2);
  Eigen::VectorXd y(n);
  for (int i = 0; i < n; ++i) {
    x(i, 0) = -3 + 6.0 * i / (n - 1);
    h(i, 0) = 1;
    h(i, 1) = x(i, 0);
    y(i) = f(x(i, 0)) + sd_at(x(i, 0)) * unit(rng);
  }
  GpFitOptions o;
  o.noise_column = 1;
  const Gp het = Gp::fit(x, h, y, o);
  const Gp flat = Gp::fit(x, h, y, {});
  REQUIRE(het.hyper().heteroscedastic());
  CHECK(het.hyper().noise_slope == doctest::Approx(1.0).epsilon(0.5));  // ln var per unit: 2 x 0.5
  CHECK(!flat.hyper().heteroscedastic());
  CHECK(het.log_marginal_likelihood() > flat.log_marginal_likelihood() + 10);
  // Fresh measurements of 400 points in each outer third: the heteroscedastic intervals cover
  // ~90% of each; the constant ones over-cover the quiet third and under-cover the noisy one.
  const auto coverage = [&](const Gp& gp, double from) {
    Eigen::MatrixXd xs(400, 1), hs(400, 2);
    for (int i = 0; i < 400; ++i) {
      xs(i, 0) = from + 1.8 * i / 399.0;
      hs(i, 0) = 1;
      hs(i, 1) = xs(i, 0);
    }
    const auto pr = gp.predict(xs, hs);
    int in = 0;
    for (int i = 0; i < 400; ++i) {
      const auto& p = pr[static_cast<std::size_t>(i)];
      const double yi = f(xs(i, 0)) + sd_at(xs(i, 0)) * unit(rng);
      in += std::abs(yi - p.mean) <= kZ90 * std::sqrt(p.var) ? 1 : 0;
    }
    return in / 400.0;
  };
  CHECK(coverage(het, -2.9) >= 0.8);
  CHECK(coverage(het, -2.9) <= 0.99);
  CHECK(coverage(het, 1.1) >= 0.8);
  CHECK(coverage(het, 1.1) <= 0.99);
  CHECK(coverage(flat, -2.9) > 0.99);
  CHECK(coverage(flat, 1.1) < 0.8);
  // Beyond the training range the noise stays at the edge's value instead of growing on.
  Eigen::MatrixXd hfar(2, 2);
  hfar << 1, 3, 1, 30;
  const auto nv = noise_variance(het.hyper(), hfar);
  CHECK(nv(1) == doctest::Approx(nv(0)));
}

TEST_CASE("on a roofline landscape the model cross-validates within a few percent") {
  const auto configs = synthetic::fc_grid(8, 2048, 4096);  // 4 x 6 x 9 = 216
  const auto points = synthetic::fc_measured(configs, 0.02, 7);
  const auto acc = cross_validate(synthetic::system(), space::Family::fc, points, 5);
  CHECK(acc.n == points.size());
  CHECK(acc.median_ape < 0.05);
  CHECK(acc.coverage90 >= 0.8);
  CHECK(acc.coverage90 <= 0.99);
}

TEST_CASE("extrapolation in batch follows the trend and is flagged") {
  const auto configs = synthetic::fc_grid(8, 2048, 16384);
  const auto points = synthetic::fc_measured(configs, 0.02, 11);
  const auto t = extrapolation_test(synthetic::system(), space::Family::fc, points, "batch");
  REQUIRE(t.has_value());
  CHECK(t->threshold == 1024);
  CHECK(t->accuracy.n > 0);
  CHECK(t->accuracy.median_ape < 0.15);

  std::vector<Point> low;
  for (const auto& p : points)
    if (p.config.batch <= 1024) low.push_back(p);
  const Panel panel = Panel::fit(synthetic::system(), space::Family::fc, low);
  CHECK(panel.ranges().at("batch") == std::pair<std::int64_t, std::int64_t>{16, 1024});
  auto inside = synthetic::fc_point(low[3].config);
  auto outside = inside;
  outside.config.batch = 8192;
  outside = synthetic::fc_point(outside.config);
  const auto pr = panel.predict({inside, outside});
  CHECK_FALSE(pr[0].extrapolated);
  CHECK(pr[1].extrapolated);
  CHECK(pr[1].why == "batch=8192 outside the measured [16, 1024]");
  CHECK(pr[0].lower < pr[0].value);
  CHECK(pr[0].value < pr[0].upper);
  // Relative width of the interval grows away from the data.
  CHECK(pr[1].log_sd > pr[0].log_sd);

  // Widening beyond the measured batch range touches only configs beyond it, and survives the
  // model file.
  Panel wide = panel;
  wide.widen_extrapolation("batch", 1.5);
  auto other = outside;  // beyond the measured nodes range instead
  other.config.batch = 64;
  other.config.nodes = 4096;
  other = synthetic::fc_point(other.config);
  const auto pw = Panel::from_json(wide.to_json()).predict({inside, outside, other});
  const auto pn = panel.predict({inside, outside, other});
  CHECK(pw[0].log_sd == doctest::Approx(pn[0].log_sd));
  CHECK(pw[1].log_sd == doctest::Approx(1.5 * pn[1].log_sd));
  CHECK(pw[1].value == doctest::Approx(pn[1].value));
  CHECK(pw[2].extrapolated);
  CHECK(pw[2].log_sd == doctest::Approx(pn[2].log_sd));
  CHECK_THROWS_AS(wide.widen_extrapolation("batch", 0.5), ModelError);
  CHECK_THROWS_AS(wide.widen_extrapolation("colour", 2), ModelError);
}

TEST_CASE("the extrapolation sd factor is what 90% coverage of the tested rows needs") {
  ExtrapolationTest t;
  // Ten rows, each predicted 1.0 with log sd 0.1; the errors grow to 0.5 in log.
  for (int i = 0; i < 10; ++i) {
    t.accuracy.measured.push_back(std::exp(0.05 * (i + 1)));
    t.accuracy.predicted.push_back(1.0);
    t.accuracy.lower.push_back(std::exp(-kZ90 * 0.1));
    t.accuracy.upper.push_back(std::exp(kZ90 * 0.1));
  }
  // |log error| / sd = 0.5, 1.0, ..., 5.0; its 90th percentile 4.55 (interpolated).
  CHECK(t.sd_factor() == doctest::Approx(4.55 / kZ90));
  for (auto& m : t.accuracy.measured) m = std::exp(0.01);  // all well inside
  CHECK(t.sd_factor() == doctest::Approx(1.0));
}

TEST_CASE("a model file round-trips and a foreign file is refused in one line") {
  const auto points = synthetic::fc_measured(synthetic::fc_grid(4, 1024, 1024), 0.02, 5);
  Model m;
  m.metric = "step_time_s";
  m.panels.push_back(Panel::fit(synthetic::system(), space::Family::fc, points));
  const fs::path path = fs::temp_directory_path() / "dnnscape_test_model.json";
  m.save(path);
  const Model back = Model::load(path);
  REQUIRE(back.panels.size() == 1);
  const auto a = m.panels[0].predict({points[5]});
  const auto b = back.panel(space::Family::fc)->predict({points[5]});
  CHECK(b[0].value == doctest::Approx(a[0].value).epsilon(1e-9));
  CHECK(b[0].upper == doctest::Approx(a[0].upper).epsilon(1e-9));
  CHECK(back.panels[0].hyper().noise_slope == m.panels[0].hyper().noise_slope);
  CHECK(back.panels[0].hyper().noise_range == m.panels[0].hyper().noise_range);
  CHECK(back.panel(space::Family::cnn) == nullptr);

  {
    std::ofstream out(path);
    out << R"({"schema": "dnnscape-model/0", "panels": []})";
  }
  CHECK_THROWS_WITH_AS(
      Model::load(path),
      (path.string() + ": not a dnnscape model file (schema \"dnnscape-model/0\", expected "
                       "\"dnnscape-model/1\")")
          .c_str(),
      ModelError);
  fs::remove(path);
  CHECK_THROWS_WITH_AS(Model::load(path), (path.string() + ": cannot read the model file").c_str(),
                       ModelError);
}

namespace {

// A synthetic FC grid with every ninth config measured: the unmeasured candidates and the model
// fitted on the measured ones.
std::pair<std::vector<Point>, Panel> ninth_measured() {
  const auto all = synthetic::fc_measured(synthetic::fc_grid(8, 2048, 4096), 0.02, 3);
  std::vector<Point> train, cand;
  for (std::size_t i = 0; i < all.size(); ++i) (i % 9 == 0 ? train : cand).push_back(all[i]);
  return {cand, Panel::fit(synthetic::system(), space::Family::fc, train)};
}

}  // namespace

TEST_CASE("a batch is k distinct candidates, spread out, and random without a model") {
  const auto [cand, panel] = ninth_measured();
  for (const auto rule : {Selection::variance_reduction, Selection::max_sd}) {
    const auto batch = choose_batch(&panel, cand, 12, 1, rule);
    REQUIRE(batch.size() == 12);
    CHECK(std::set<std::size_t>(batch.begin(), batch.end()).size() == 12);
    // Conditioning spreads the batch over the grid.
    std::set<std::pair<std::int64_t, std::int64_t>> shapes;
    for (auto i : batch) shapes.insert({cand[i].config.layers, cand[i].config.nodes});
    CHECK(shapes.size() >= 8);
  }
  // max_sd's first pick is the most uncertain candidate.
  const auto pr = panel.predict(cand);
  std::size_t most = 0;
  for (std::size_t i = 0; i < pr.size(); ++i)
    if (pr[i].log_sd > pr[most].log_sd) most = i;
  CHECK(choose_batch(&panel, cand, 1, 1, Selection::max_sd)[0] == most);
  const auto random = choose_batch(nullptr, cand, 12, 1);
  CHECK(std::set<std::size_t>(random.begin(), random.end()).size() == 12);
  CHECK(choose_batch(nullptr, cand, 1000, 1).size() == cand.size());
}

TEST_CASE("variance reduction picks where the candidates are, max sd the far corner") {
  // Measured at 0, 1, 2, 3; candidates: a dense cluster at 1.25-1.75 and one lone point far
  // out at 8. The lone point is the most uncertain; measuring inside the cluster removes more
  // variance from the candidates as a whole.
  Eigen::MatrixXd x(4, 1), h(4, 1);
  Eigen::VectorXd y(4);
  for (int i = 0; i < 4; ++i) {
    x(i, 0) = i;
    h(i, 0) = 1;
    y(i) = std::sin(static_cast<double>(i));
  }
  const Gp gp = Gp::with_hyper(x, h, y, GpHyper{{0.6}, 1.0, 1e-4});
  Eigen::MatrixXd xs(21, 1), hs = Eigen::MatrixXd::Ones(21, 1);
  for (int i = 0; i < 20; ++i) xs(i, 0) = 1.25 + 0.5 * i / 19.0;
  xs(20, 0) = 8;
  const auto ivr = gp.select_batch(xs, hs, 2, true);
  const auto sd = gp.select_batch(xs, hs, 2, false);
  REQUIRE(ivr.size() == 2);
  REQUIRE(sd.size() == 2);
  CHECK(sd[0].first == 20);
  CHECK(ivr[0].first >= 5);  // the middle of the cluster
  CHECK(ivr[0].first <= 14);
  // Conditioned on the first pick, the second one is not its neighbour.
  CHECK(std::abs(static_cast<int>(ivr[1].first) - static_cast<int>(ivr[0].first)) >= 4);
}

TEST_CASE("with costs, a batch buys what teaches the most per second") {
  const auto [cand, panel] = ninth_measured();
  std::vector<double> cost;
  for (const auto& p : cand) cost.push_back(synthetic::fc_time_s(p));
  const auto total = [&](const std::vector<std::size_t>& batch) {
    double s = 0;
    for (auto i : batch) s += cost[i];
    return s;
  };
  const auto plain = choose_batch(&panel, cand, 12, 1);
  const auto cheap = choose_batch(&panel, cand, 12, 1, Selection::variance_reduction, cost);
  REQUIRE(cheap.size() == 12);
  CHECK(std::set<std::size_t>(cheap.begin(), cheap.end()).size() == 12);
  CHECK(total(cheap) < 0.2 * total(plain));
  // Still spread out, not twelve copies of the cheapest corner.
  std::set<std::pair<std::int64_t, std::int64_t>> shapes;
  for (auto i : cheap) shapes.insert({cand[i].config.layers, cand[i].config.nodes});
  CHECK(shapes.size() >= 6);
  // Equal costs change nothing.
  CHECK(choose_batch(&panel, cand, 12, 1, Selection::variance_reduction,
                     std::vector<double>(cand.size(), 3.0)) == plain);
  CHECK_THROWS_AS(choose_batch(&panel, cand, 12, 1, Selection::variance_reduction, {1.0, 2.0}),
                  std::invalid_argument);
}

TEST_CASE("an accuracy's subset has the figures of its points alone") {
  std::vector<Point> truth(4);
  std::vector<Prediction> pred(4);
  const double measured[] = {1, 2, 4, 8}, predicted[] = {1.1, 2, 2, 8.8};
  for (std::size_t i = 0; i < 4; ++i) {
    truth[i].value = measured[i];
    pred[i].value = predicted[i];
    pred[i].lower = 0.95 * predicted[i];
    pred[i].upper = 1.05 * predicted[i];
  }
  const auto all = score(truth, pred);
  const auto sub = all.subset({1, 0, 1, 0});
  CHECK(sub.n == 2);
  CHECK(sub.median_ape == doctest::Approx(0.3));  // 10% and 50%
  CHECK(sub.coverage90 == doctest::Approx(0.0));
  CHECK(all.subset({0, 1, 0, 0}).coverage90 == doctest::Approx(1.0));
  CHECK_THROWS_AS((void)all.subset({1}), std::invalid_argument);
}

TEST_CASE("nnls of a relative error recovers positive coefficients and drops negative ones") {
  std::vector<std::vector<double>> terms;
  std::vector<double> y, y_neg;
  for (int i = 1; i <= 20; ++i) {
    const double u = i, v = (i * 7) % 11 + 1;
    terms.push_back({u, v, 1.0});
    y.push_back(2 * u + 0.5 * v + 3);
    y_neg.push_back(2 * u - 0.01 * v + 30);  // v's best LS coefficient is negative
  }
  const auto x = nnls_relative(terms, y);
  REQUIRE(x.size() == 3);
  CHECK(x[0] == doctest::Approx(2));
  CHECK(x[1] == doctest::Approx(0.5));
  CHECK(x[2] == doctest::Approx(3));
  const auto z = nnls_relative(terms, y_neg);
  REQUIRE(z.size() == 3);
  CHECK(z[1] == 0.0);
  CHECK(z[0] > 0);
  CHECK(z[2] > 0);
  CHECK(nnls_relative({}, {}).empty());
  CHECK(nnls_relative({{-1.0}, {-2.0}}, {1.0, 2.0}).empty());  // no positive solution
}

TEST_CASE("the cost of measuring is calibrated on the rows' wall time, footprint included") {
  const space::MeasureSettings settings{0.05, 3, 30, 0.03, 1.5};
  const MeasureCost plain(settings);
  CHECK_FALSE(plain.calibrated());
  CHECK(plain(0.01, 1e9) == doctest::Approx(settings.predicted_time_s(0.01)));
  // Rows whose wall time is 1.2 x the settings' prediction + 5 ns per byte + 10 ms.
  std::vector<Point> rows;
  for (int i = 0; i < 12; ++i) {
    Point p;
    p.value = 1e-4 * std::pow(2.0, i);
    p.memory_bytes = 1e6 * std::pow(1.7, (i * 5) % 12);
    p.wall_s = 1.2 * settings.predicted_time_s(p.value) + 5e-9 * p.memory_bytes + 0.01;
    rows.push_back(p);
  }
  rows.push_back(Point{});  // never measured: ignored
  const MeasureCost cost(settings, rows);
  REQUIRE(cost.calibrated());
  CHECK(cost.rows() == 12);
  CHECK(cost(0.02, 3e8) ==
        doctest::Approx(1.2 * settings.predicted_time_s(0.02) + 1.5 + 0.01).epsilon(1e-6));
  CHECK(cost.describe().find("5.00 ns/byte") != std::string::npos);
  // Wall time that is all footprint: a config of unknown footprint is still priced above 0.
  std::vector<Point> by_bytes = rows;
  by_bytes.pop_back();
  for (auto& p : by_bytes) p.wall_s = 5e-9 * p.memory_bytes;
  const MeasureCost bytes_only(settings, by_bytes);
  REQUIRE(bytes_only.calibrated());
  CHECK(bytes_only(0.01, 2e8) == doctest::Approx(1.0).epsilon(0.01));
  CHECK(bytes_only(0.01, std::numeric_limits<double>::quiet_NaN()) > 0);
  // Too few rows with a wall time (a file written before /runs/wall_s): the prediction alone.
  for (auto& p : rows) p.wall_s = std::numeric_limits<double>::quiet_NaN();
  rows[0].wall_s = 1;
  rows[1].wall_s = 2;
  CHECK_FALSE(MeasureCost(settings, rows).calibrated());
}

TEST_CASE("read_points carries each row's footprint and wall time (what MeasureCost fits)") {
  const auto dir = fs::temp_directory_path() / "dnnscape_test_model_points";
  fs::create_directories(dir);
  const auto path = dir / "rows.h5";
  std::vector<synth::RunRecord> rows;
  for (std::int64_t b : {16, 64, 256}) {
    auto r = synth::fc(1, 64, 256, 10, b, 1e-5 * static_cast<double>(b));
    r.metrics.memory_bytes = 1e6 * static_cast<double>(b);
    r.metrics.wall_s = 0.01 * static_cast<double>(b);
    rows.push_back(r);
  }
  synth::write(path, rows, synth::system_info("h"));
  const auto data = read_points(path, "step_time_s");
  REQUIRE(data.points.size() == 3);
  for (const auto& p : data.points) {
    const auto b = static_cast<double>(p.config.batch);
    CHECK(p.memory_bytes == doctest::Approx(1e6 * b));
    CHECK(p.wall_s == doctest::Approx(0.01 * b));
  }
  const space::MeasureSettings settings{0.05, 3, 30, 0.03, 1.5};
  CHECK_FALSE(MeasureCost(settings, data.points).calibrated());  // 3 rows < kMinRows
  fs::remove_all(dir);
}
