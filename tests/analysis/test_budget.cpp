// budget: which configs meet a latency budget per system, the largest model per batch, the region
// as a rule, --by a knob, presets, budget strings and the one-line errors of the CLI.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/budget.hpp"
#include "analysis/cli.hpp"
#include "analysis/frame.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using namespace dnnscape::analysis;

namespace {

// An inference row of synth's FC grid with the given p99 latency (p50, p90 and the step time
// below it, so only the p99 column decides).
dnnscape::store::RunRecord inference(std::int64_t layers, std::int64_t nodes, std::int64_t batch,
                                     double p99, std::int64_t threads = 0) {
  auto r = synth::fc(layers, nodes, 2000, 200, batch, 0.5 * p99);
  r.config.knobs.mode = "inference";
  r.config.knobs.threads = threads;
  r.config_id = r.config.config_id();
  r.metrics.latency_p50_s = 0.5 * p99;
  r.metrics.latency_p90_s = 0.8 * p99;
  r.metrics.latency_p99_s = p99;
  return r;
}

double params_of(std::int64_t layers, std::int64_t nodes) {  // synth::fc's count
  return static_cast<double>(2000 * nodes + (layers - 1) * nodes * nodes + nodes * 200 +
                             layers * nodes + 200);
}

// A latency bounded by the cheaper of two limits: under 30 ms exactly when batch <= 64 or
// nodes <= 256 (0.9-1.0 x 28 ms there, at least 2 x 0.9 x 28 ms elsewhere), scaled by `slow`.
// (A product k * batch * nodes makes a staircase, which no depth-2 rule describes exactly; the
// product is used below for the largest model per batch.)
double either_latency(std::int64_t layers, std::int64_t nodes, std::int64_t batch, double slow) {
  const double m = std::min(static_cast<double>(batch) / 64, static_cast<double>(nodes) / 256);
  return slow * 0.028 * m * (0.9 + 0.1 * static_cast<double>(layers) / 32);
}

// Each file is written once per test run, by whichever test case needs it first.
void make_either(const fs::path& p = "budget_either.h5") {
  static bool done = false;
  if (done) return;
  done = true;
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    rows.push_back(inference(l, n, b, either_latency(l, n, b, 1)));
  });
  synth::write(p, rows, synth::system_info("server"));
}

constexpr double kK = 0.030 / (256.0 * 256.0);  // p99 = k * batch * nodes: 256 x 256 is 30 ms

void make_product(const fs::path& p = "budget_product.h5") {
  static bool done = false;
  if (done) return;
  done = true;
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    rows.push_back(inference(l, n, b, kK * static_cast<double>(b * n)));
  });
  synth::write(p, rows, synth::system_info("server"));
}

// Training rows only (synth's default mode), with either_latency as their step time.
void make_training() {
  static bool done = false;
  if (done) return;
  done = true;
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    rows.push_back(synth::fc(l, n, 2000, 200, b, either_latency(l, n, b, 1)));
  });
  synth::write("budget_training.h5", rows, synth::system_info("server"));
}

bool either_region(const std::string& rule) {
  return rule == "batch ≤ 64 or nodes ≤ 256" || rule == "nodes ≤ 256 or batch ≤ 64";
}

struct Run {
  int rc;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

Run run(const std::vector<std::string>& args) {
  std::fflush(stdout);
  std::fflush(stderr);
  const int out = dup(1), err = dup(2);
  const int fo = open("budget_cli.out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int fe = open("budget_cli.err", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fo, 1);
  dup2(fe, 2);
  const int rc = analysis_command("budget", args);
  std::fflush(stdout);
  std::fflush(stderr);
  dup2(out, 1);
  dup2(err, 2);
  close(fo);
  close(fe);
  close(out);
  close(err);
  return {rc, slurp("budget_cli.out"), slurp("budget_cli.err")};
}

}  // namespace

TEST_CASE("budget strings and presets") {
  CHECK(parse_budget("30ms") == doctest::Approx(0.030));
  CHECK(parse_budget("0.5s") == doctest::Approx(0.5));
  CHECK(parse_budget("500us") == doctest::Approx(500e-6));
  CHECK(parse_budget("500µs") == doctest::Approx(500e-6));
  CHECK(parse_budget("2 ms") == doctest::Approx(0.002));
  CHECK_THROWS_AS(parse_budget("30"), InputError);
  CHECK_THROWS_AS(parse_budget("30xs"), InputError);
  CHECK_THROWS_AS(parse_budget("ms"), InputError);
  CHECK_THROWS_AS(parse_budget("-5ms"), InputError);
  CHECK_THROWS_AS(parse_budget("0s"), InputError);
  CHECK_THROWS_WITH(parse_budget("30xs"),
                    "--budget: '30xs' is not a duration (expected a number and a unit: 30ms, "
                    "0.5s, 500us)");
  CHECK(preset_budgets("cv") == std::vector<double>{0.030});
  CHECK(preset_budgets("nlp") == std::vector<double>{0.100, 0.500});
  CHECK(preset_budgets("feed") == std::vector<double>{0.500});
  CHECK_THROWS_WITH(
      preset_budgets("asr"),
      "--preset: unknown preset 'asr' (expected cv = 30ms, nlp = 100ms and 500ms, feed = 500ms)");
  CHECK(format_budget(0.030) == "30ms");
  CHECK(format_budget(0.5) == "500ms");
  CHECK(format_budget(2) == "2s");
  CHECK(format_budget(500e-6) == "500us");
  CHECK(main_size_parameter("fc") == "nodes");
  CHECK(main_size_parameter("cnn") == "filters");
  CHECK(main_size_parameter("rnn") == "embedding");
}

TEST_CASE("cv preset: the feasible region is 'batch <= 64 or nodes <= 256' at 100% accuracy") {
  make_either();
  BudgetOptions o;
  o.inputs = {"budget_either.h5"};
  o.budgets_s = preset_budgets("cv");
  o.out_dir = "budget_either_out";
  const auto r = budget(o);
  REQUIRE(r.sections.size() == 1);
  const auto& s = r.sections[0];
  CHECK(s.system == "budget_either");
  CHECK(s.budget == "30ms");
  CHECK(s.configs == 120);
  // batch 64 (all 20 of layers x nodes) + nodes 64..256 at batch 128..2048 (5 x 4 x 3).
  CHECK(s.feasible == 20 + 60);
  REQUIRE(s.rules.size() == 1);
  CHECK(s.rules[0].family == "fc");
  CHECK_MESSAGE(either_region(s.rules[0].region), s.rules[0].region);
  CHECK_MESSAGE((s.rules[0].outside == "batch ≥ 128 and nodes ≥ 512" ||
                 s.rules[0].outside == "nodes ≥ 512 and batch ≥ 128"),
                s.rules[0].outside);
  CHECK(s.rules[0].rule.accuracy == doctest::Approx(1.0));
  CHECK(s.finding.find("budget_either at 30ms (latency_p99_s): 80 of 120 configs meet the "
                       "budget (66.7%).") == 0);
  CHECK(s.finding.find("(rule accuracy 100.0%)") != std::string::npos);
  for (const char* f :
       {"budget_budget_either_30ms.svg", "budget_budget_either_30ms.png",
        "budget_budget_either_30ms_batches.csv", "budget_budget_either_30ms_configs.csv",
        "budget_budget_either_30ms_cells.csv"})
    CHECK_MESSAGE(fs::exists(fs::path("budget_either_out") / f), f);
  // Heat-map cells: share of the 4 layer counts meeting the budget, x = nodes, y = batch.
  const auto cells = slurp("budget_either_out/budget_budget_either_30ms_cells.csv");
  CHECK(cells.find("fc,nodes,1024,batch,64,4,4,1\n") != std::string::npos);
  CHECK(cells.find("fc,nodes,1024,batch,128,4,0,0\n") != std::string::npos);
  CHECK(cells.find("fc,nodes,256,batch,2048,4,4,1\n") != std::string::npos);
  const auto j = nlohmann::json::parse(r.json());
  CHECK(j["analysis"] == "budget");
  CHECK(j["sections"][0]["rules"][0]["accuracy"] == 1.0);
}

TEST_CASE("the percentile picks the column: p50 is half the p99 here") {
  make_either();
  BudgetOptions o;
  o.inputs = {"budget_either.h5"};
  o.budgets_s = {0.030};
  o.percentile = 50;
  const auto r = budget(o);
  CHECK(r.latency_column == "latency_p50_s");
  // 0.5 x either_latency <= 30 ms wherever min(batch/64, nodes/256) <= 2.
  CHECK(r.sections.at(0).feasible == 40 + 4 * 4 * 4);  // batch <= 128, or nodes <= 512
  o.percentile = 95;
  CHECK_THROWS_AS(budget(o), InputError);
}

TEST_CASE("largest params that fit, per batch, when p99 = k * batch * nodes") {
  make_product();
  BudgetOptions o;
  o.inputs = {"budget_product.h5"};
  o.budgets_s = {0.030};
  const auto r = budget(o);
  const auto& s = r.sections.at(0);
  // Brute force over the grid: the expected count and largest params per batch.
  std::map<std::int64_t, std::pair<std::size_t, double>> want;
  synth::fc_grid([&](auto l, auto n, auto b) {
    auto& w = want[b];
    if (kK * static_cast<double>(b * n) <= 0.030) {
      ++w.first;
      w.second = std::max(w.second, params_of(l, n));
    }
  });
  REQUIRE(s.batches.size() == 6);
  for (const auto& bf : s.batches) {
    const auto b = static_cast<std::int64_t>(bf.batch);
    CAPTURE(b);
    CHECK(bf.family == "fc");
    CHECK(bf.configs == 20);
    CHECK(bf.feasible == want.at(b).first);
    if (want.at(b).first == 0) {
      CHECK(std::isnan(bf.max_params));
    } else {
      CHECK(bf.max_params == want.at(b).second);
    }
  }
  // batch 64: nodes up to 1024 fit, the largest is 32 layers x 1024 nodes; 2048: nothing.
  CHECK(s.batches.front().max_params == params_of(32, 1024));
  CHECK(s.batches.back().feasible == 0);
  CHECK(s.finding.find("Largest model that fits, by batch: 64: 34.8M params (20 of 20 fit)") !=
        std::string::npos);
  CHECK(s.finding.find("2048: none (0 of 20)") != std::string::npos);
}

TEST_CASE("--by threads: one thread and the full machine are two systems with their regions") {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    rows.push_back(inference(l, n, b, either_latency(l, n, b, 1), 0));
    rows.push_back(inference(l, n, b, either_latency(l, n, b, 4), 1));
  });
  synth::write("budget_threads.h5", rows, synth::system_info("server"));
  BudgetOptions o;
  o.inputs = {"budget_threads.h5"};
  o.budgets_s = preset_budgets("cv");
  o.by = "threads";
  const auto r = budget(o);
  REQUIRE(r.sections.size() == 2);
  CHECK(r.sections[0].system == "budget_threads threads=0");
  CHECK(r.sections[1].system == "budget_threads threads=1");
  CHECK(r.sections[0].configs == 120);
  CHECK(r.sections[1].configs == 120);
  CHECK_MESSAGE(either_region(r.sections[0].rules.at(0).region), r.sections[0].rules[0].region);
  // Four times slower: only nodes = 64 (0.25 x 4 x 28 ms x 0.9-1.0) stays under 30 ms.
  CHECK(r.sections[1].feasible == 24);
  CHECK(r.sections[1].rules.at(0).region == "nodes ≤ 64");
  CHECK(r.sections[1].rules.at(0).rule.accuracy == doctest::Approx(1.0));
  // threads is the system here, not a condition of the rule.
  CHECK(r.sections[0].rules[0].region.find("threads") == std::string::npos);
  CHECK(r.finding.find("At 30ms: budget_threads threads=0 fits 80 of 120 configs") !=
        std::string::npos);
}

TEST_CASE("several budgets give one section per budget and system; nlp preset") {
  make_either();
  make_product();
  BudgetOptions o;
  o.inputs = {"budget_either.h5", "budget_product.h5"};
  o.budgets_s = preset_budgets("nlp");
  const auto r = budget(o);
  REQUIRE(r.sections.size() == 4);
  CHECK(r.sections[0].system == "budget_either");
  CHECK(r.sections[0].budget == "100ms");
  CHECK(r.sections[1].budget == "500ms");
  CHECK(r.sections[2].system == "budget_product");
}

TEST_CASE("training rows: an error without --allow-training, step_time_s with it") {
  make_training();
  BudgetOptions o;
  o.inputs = {"budget_training.h5"};
  o.budgets_s = {0.030};
  CHECK_THROWS_WITH_AS(budget(o),
                       "budget_training.h5: no inference rows with a finite latency_p99_s (120 "
                       "training rows); pass --allow-training to use their step_time_s",
                       InputError);
  o.allow_training = true;
  const auto r = budget(o);
  CHECK(r.sections.at(0).training_rows == 120);
  CHECK(r.sections[0].feasible == 80);
  CHECK_MESSAGE(either_region(r.sections[0].rules.at(0).region), r.sections[0].rules[0].region);
  CHECK(r.finding.find("latency_p99_s of inference rows, step_time_s of training rows") !=
        std::string::npos);
  CHECK(r.finding.find("120 training rows use step_time_s as their latency") != std::string::npos);
}

TEST_CASE("CLI: the cv preset reports the region; bad input is one line and exit 2") {
  make_either();
  make_training();
  {
    const auto r = run({"budget_either.h5", "--preset", "cv", "-o", "budget_cli_out"});
    CHECK(r.rc == 0);
    CHECK(r.out.find("Feasible when") != std::string::npos);
    CHECK(r.out.find("wrote budget_cli_out/budget_budget_either_30ms.svg") != std::string::npos);
  }
  {
    const auto r = run({"budget_either.h5", "--budget", "30ms,0.5s", "--json", "-o",
                        "budget_cli_out", "--where", "layers>=8"});
    CHECK(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["sections"].size() == 2);
    CHECK(j["sections"][0]["configs"] == 90);
    CHECK(j["sections"][1]["budget"] == "500ms");
  }
  {
    const auto r = run({"budget_either.h5", "--preset", "asr"});
    CHECK(r.rc == 2);
    CHECK(r.err ==
          "dnnscape budget: --preset: unknown preset 'asr' (expected cv = 30ms, nlp = 100ms and "
          "500ms, feed = 500ms)\n");
  }
  {
    const auto r = run({"budget_either.h5", "--budget", "30 parsecs"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("is not a duration") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  {
    const auto r = run({"budget_either.h5"});
    CHECK(r.rc == 2);
    CHECK(r.err == "dnnscape budget: needs --budget DURATION or --preset cv|nlp|feed\n");
  }
  {
    const auto r = run({"budget_training.h5", "--preset", "cv", "-o", "budget_cli_out"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("--allow-training") != std::string::npos);
  }
  {
    const auto r = run({"budget_either.h5", "--preset", "cv", "--by", "color"});
    CHECK(r.rc == 2);
  }
  {
    const auto r = run({"budget_either.h5", "--preset", "cv", "--families", "transformer"});
    CHECK(r.rc == 2);
    CHECK(r.err.find("unknown family 'transformer'") != std::string::npos);
  }
  const auto& cmds = analysis_commands();
  CHECK(std::find(cmds.begin(), cmds.end(), "budget") != cmds.end());
}
