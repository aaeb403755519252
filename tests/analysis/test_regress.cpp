// regress: standardized OLS on log2 parameters, checked against statsmodels and known answers.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "analysis/regress.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using namespace dnnscape::analysis;

namespace {

// FC grid x output {200, 1000} x dtype {f32, bf16}, noisy power-law step times: 480 rows.
void make_noisy(const fs::path& path) {
  std::mt19937_64 rng(42);
  std::normal_distribution<double> noise(0.0, 0.15);
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    for (std::int64_t out : {200, 1000}) {
      for (const char* dt : {"f32", "bf16"}) {
        const double t = 1e-9 * std::pow(l, 0.8) * std::pow(n, 1.5) * std::pow(b, 0.9) *
                         (std::string(dt) == "bf16" ? 0.6 : 1.0) * (out == 1000 ? 1.1 : 1.0) *
                         std::exp(noise(rng));
        rows.push_back(synth::fc(l, n, 2000, out, b, t, 300, dt));
      }
    }
  });
  // Rows that must not count: a failed one and a second family with too few rows to matter.
  auto failed = synth::fc(4, 64, 2000, 200, 64, 1.0);
  failed.config.layers = 3;
  failed.config_id = failed.config.config_id();
  failed.status = dnnscape::store::status::failed;
  rows.push_back(failed);
  synth::write(path, rows, synth::system_info("alpha"));
}

const RegressPanel& panel(const RegressResult& r, const std::string& group) {
  for (const auto& p : r.panels)
    if (p.group == group) return p;
  FAIL("no panel " << group);
  return r.panels.front();
}

int run_statsmodels(const fs::path& h5, const RegressResult& r, const std::string& flags) {
  const fs::path json = fmt::format("{}-{}.json", h5.stem().string(), flags.size());
  std::ofstream(json) << r.json();
  const std::string cmd =
      fmt::format("/usr/bin/python3 {}/tests/analysis/statsmodels_check.py {} {} {}",
                  DNNSCAPE_SOURCE_DIR, h5.string(), json.string(), flags);
  MESSAGE(cmd);
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

TEST_CASE("coefficients, standard errors and R² equal statsmodels OLS") {
  make_noisy("noisy.h5");
  SUBCASE("log metric, dtype as an indicator") {
    RegressOptions o;
    o.inputs = {"noisy.h5"};
    o.log_metric = true;
    o.knobs = {"dtype"};
    o.bootstrap = 200;
    const auto r = regress(o);
    REQUIRE(r.panels.size() == 1);
    const auto& p = r.panels[0];
    CHECK(p.group == "fc");
    CHECK(p.n == 480);
    CHECK(p.terms.size() == 5);  // layers, nodes, output, batch, dtype=f32
    CHECK(std::find(p.left_out.begin(), p.left_out.end(), "input (constant = 2000)") !=
          p.left_out.end());
    CHECK(run_statsmodels("noisy.h5", r, "--log --knobs dtype") == 0);
  }
  SUBCASE("raw metric with pairwise interactions") {
    RegressOptions o;
    o.inputs = {"noisy.h5"};
    o.knobs = {"dtype"};
    o.interactions = true;
    o.bootstrap = 100;
    o.out_dir = "noisy_out";
    const auto r = regress(o);
    const auto& p = r.panels.at(0);
    CHECK(p.terms.size() == 5 + 10);
    CHECK(run_statsmodels("noisy.h5", r, "--interactions --knobs dtype") == 0);
    CHECK(fs::exists("noisy_out/regress_flops_utilization.svg"));
    CHECK(fs::exists("noisy_out/regress_flops_utilization.png"));
    CHECK(fs::exists("noisy_out/regress_flops_utilization.csv"));
    CHECK(fs::exists("noisy_out/regress_flops_utilization_fit.csv"));
    CHECK(fs::exists("noisy_out/regress_flops_utilization_importance.csv"));
  }
}

TEST_CASE("known answer: importance ratio and its interval") {
  // y = 3 log2(batch) + 1 log2(nodes) + small noise on an orthogonal grid: the standardized
  // coefficients are proportional to 3 sd(log2 batch) and 1 sd(log2 nodes).
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0.0, 0.05);
  std::vector<dnnscape::store::RunRecord> rows;
  for (int rep = 0; rep < 3; ++rep) {
    synth::fc_grid([&](auto l, auto n, auto b) {
      auto r = synth::fc(l, n, 2000, 200 + rep, b, 1e-3);
      r.metrics.flops_utilization = 3 * std::log2(b) + std::log2(n) + noise(rng);
      rows.push_back(r);
    });
  }
  synth::write("known.h5", rows, synth::system_info("alpha"));
  RegressOptions o;
  o.inputs = {"known.h5"};
  o.bootstrap = 500;
  const auto r = regress(o);
  const auto& p = r.panels.at(0);
  REQUIRE(p.terms.size() == 4);  // layers, nodes, output (3 levels), batch
  CHECK(p.terms[0].name == "log2 batch");
  CHECK(p.terms[1].name == "log2 nodes");
  const auto sd = [](std::vector<double> v) {
    double m = 0;
    for (double x : v) m += x;
    m /= static_cast<double>(v.size());
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  // Grid levels are balanced, so the sd over rows is the population sd of the level set (the
  // row-level ddof correction is common to both and cancels in the ratio).
  const double truth = 3 * sd({6, 7, 8, 9, 10, 11}) / sd({6, 7, 8, 9, 10});
  const auto& im = p.ranking.at(0);
  CHECK(im.a == "log2 batch");
  CHECK(im.b == "log2 nodes");
  CHECK(im.ratio == doctest::Approx(truth).epsilon(0.01));
  CHECK(im.low < im.ratio);
  CHECK(im.high > im.ratio);
  CHECK(im.low > truth * 0.97);
  CHECK(im.high < truth * 1.03);
  CHECK(p.r2 > 0.999);
  CHECK(p.cv_r2 > 0.999);
  CHECK(p.cv_r2 <= p.r2);
  // Layers has no effect: its interval covers zero.
  const auto layers = std::find_if(p.terms.begin(), p.terms.end(),
                                   [](const auto& t) { return t.name == "log2 layers"; });
  REQUIRE(layers != p.terms.end());
  CHECK(layers->ci_low < 0);
  CHECK(layers->ci_high > 0);
  CHECK(r.finding.find("log2 batch is") != std::string::npos);
}

TEST_CASE("a filter that fixes a parameter leaves it out and names it") {
  make_noisy("noisy2.h5");
  RegressOptions o;
  o.inputs = {"noisy2.h5"};
  o.where = "batch == 256 && dtype == f32";
  o.bootstrap = 50;
  const auto r = regress(o);
  const auto& p = panel(r, "fc");
  CHECK(p.n == 4 * 5 * 2);
  CHECK(std::find(p.left_out.begin(), p.left_out.end(), "batch (constant = 256)") !=
        p.left_out.end());
  CHECK(r.finding.find("Left out: input (constant = 2000), batch (constant = 256)") !=
        std::string::npos);
}

TEST_CASE("bad input is an InputError") {
  make_noisy("noisy3.h5");
  RegressOptions o;
  o.inputs = {"noisy3.h5"};
  o.bootstrap = 10;
  o.knobs = {"batch"};
  CHECK_THROWS_WITH_AS(regress(o), doctest::Contains("not a knob"), InputError);
  o.knobs = {};
  o.by = "planet";
  CHECK_THROWS_AS(regress(o), InputError);
  o.by = "family";
  o.metric = "no_such_metric";
  CHECK_THROWS_WITH_AS(regress(o), doctest::Contains("no numeric column 'no_such_metric'"),
                       InputError);
  o.metric = "flops_utilization";
  o.where = "layers == 4 && nodes == 64 && batch == 64 && dtype == f32";
  CHECK_THROWS_WITH_AS(regress(o), doctest::Contains("too few"), InputError);
  o.where = "layers >>= 4";
  CHECK_THROWS_WITH_AS(regress(o), doctest::Contains("--where"), InputError);
}

TEST_CASE("a panel whose metric does not vary is named, the others are fitted") {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    rows.push_back(synth::fc(l, n, 2000, 200, b, 1e-9 * static_cast<double>(l * n * n + b)));
  });
  for (std::int64_t layers : {1, 5, 9}) {
    for (std::int64_t batch : {64, 128}) {
      dnnscape::store::RunRecord r;
      r.config.family = dnnscape::space::Family::rnn;
      r.config.layers = layers;
      r.config.embedding = 100;
      r.config.batch = batch;
      r.config.cell = "lstm";
      r.config_id = r.config.config_id();
      r.metrics.flops_utilization = 0.25;
      r.metrics.step_time_s = 1e-3;
      rows.push_back(r);
    }
  }
  synth::write("flat.h5", rows, synth::system_info("alpha"));
  RegressOptions o;
  o.inputs = {"flat.h5"};
  o.bootstrap = 20;
  const auto r = regress(o);
  REQUIRE(r.panels.size() == 1);
  CHECK(r.panels[0].group == "fc");
  REQUIRE(r.not_fitted.size() == 1);
  CHECK(r.not_fitted[0] == "regress rnn: flops_utilization does not vary in the selection");
  o.where = "family == rnn";
  CHECK_THROWS_WITH_AS(regress(o), "regress rnn: flops_utilization does not vary in the selection",
                       InputError);
}
