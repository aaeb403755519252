// compare: matching, speedups, the geometric mean and its interval, and the three verdicts.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <random>

#include "analysis/compare.hpp"
#include "analysis/frame.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using namespace dnnscape::analysis;

namespace {

// Base step time of an FC config on system A.
double base_time(std::int64_t layers, std::int64_t nodes, std::int64_t batch) {
  return 1e-6 * static_cast<double>(layers * nodes * batch) / 64.0 + 1e-4;
}

void make_pair(const fs::path& a, const fs::path& b,
               const std::function<double(std::int64_t, std::int64_t, std::int64_t)>& factor,
               double ci_rel = 0.01) {
  std::vector<dnnscape::store::RunRecord> ra, rb;
  synth::fc_grid([&](auto l, auto n, auto bt) {
    const double t = base_time(l, n, bt);
    ra.push_back(synth::fc(l, n, 2000, 200, bt, t, 300, "f32", ci_rel));
    rb.push_back(synth::fc(l, n, 2000, 200, bt, t * factor(l, n, bt), 600, "f32", ci_rel));
  });
  synth::write(a, ra, synth::system_info("alpha", 300));
  synth::write(b, rb, synth::system_info("beta", 600));
}

}  // namespace

TEST_CASE("B wins exactly when batch >= 512: conditionally better with that rule") {
  make_pair("cond_a.h5", "cond_b.h5",
            [](auto, auto, auto batch) { return batch >= 512 ? 0.5 : 1.6; });
  CompareOptions o;
  o.inputs = {"cond_a.h5", "cond_b.h5"};
  o.out_dir = "cond_out";
  const auto r = compare(o);
  REQUIRE(r.comparisons.size() == 1);
  const auto& c = r.comparisons[0];
  CHECK(c.matched == 120);
  CHECK(c.only_a == 0);
  CHECK(c.only_b == 0);
  CHECK(c.noise_checked);
  CHECK(c.verdict == "conditionally better");
  CHECK(c.rule.wins == "batch ≥ 512");
  CHECK(c.rule.loses == "batch ≤ 256");
  CHECK(c.rule.accuracy == doctest::Approx(1.0));
  CHECK(c.losses == 60);  // batch 64, 128, 256 of 6 batch sizes
  CHECK(c.wins_beyond_noise == 60);
  CHECK(c.losses_beyond_noise == 60);
  // Geometric mean of 60 x 2 and 60 x 1/1.6.
  CHECK(c.geomean == doctest::Approx(std::sqrt(2.0 / 1.6)).epsilon(1e-9));
  CHECK(c.geomean_low <= c.geomean);
  CHECK(c.geomean_high >= c.geomean);
  CHECK(c.min == doctest::Approx(1 / 1.6));
  CHECK(c.max == doctest::Approx(2.0));
  CHECK(c.finding.find("B wins") == std::string::npos);  // labels are file stems
  CHECK(c.finding.find("cond_b wins beyond noise when batch ≥ 512; loses when batch ≤ 256") !=
        std::string::npos);
  CHECK(fs::exists("cond_out/compare_cond_b_vs_cond_a.svg"));
  CHECK(fs::exists("cond_out/compare_cond_b_vs_cond_a.png"));
  CHECK(fs::exists("cond_out/compare_cond_b_vs_cond_a_configs.csv"));
  CHECK(fs::exists("cond_out/compare_cond_b_vs_cond_a_families.csv"));
  // The plot states what the whiskers mean.
  std::ifstream svg("cond_out/compare_cond_b_vs_cond_a.svg");
  const std::string s((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  CHECK(s.find("1.5 IQR") != std::string::npos);
  CHECK(r.json().find("\"verdict\": \"conditionally better\"") != std::string::npos);
}

TEST_CASE("a two-parameter region: B wins when batch >= 512 or nodes >= 1024") {
  make_pair("two_a.h5", "two_b.h5",
            [](auto, auto nodes, auto batch) { return batch >= 512 || nodes >= 1024 ? 0.5 : 2.0; });
  CompareOptions o;
  o.inputs = {"two_a.h5", "two_b.h5"};
  const auto c = compare(o).comparisons.at(0);
  CHECK(c.verdict == "conditionally better");
  CHECK(c.rule.accuracy == doctest::Approx(1.0));
  // Either split order describes the same region.
  const bool a = c.rule.wins == "batch ≥ 512 or batch ≤ 256 and nodes ≥ 1024";
  const bool b = c.rule.wins == "nodes ≥ 1024 or nodes ≤ 512 and batch ≥ 512";
  CHECK_MESSAGE((a || b), c.rule.wins);
}

TEST_CASE("B wins everywhere beyond noise: strictly better") {
  make_pair("strict_a.h5", "strict_b.h5", [](auto, auto, auto) { return 0.8; });
  CompareOptions o;
  o.inputs = {"strict_a.h5", "strict_b.h5"};
  const auto c = compare(o).comparisons.at(0);
  CHECK(c.verdict == "strictly better");
  CHECK(c.losses == 0);
  CHECK(c.geomean == doctest::Approx(1.25));
  CHECK(c.geomean_low == doctest::Approx(1.25));
  CHECK(c.geomean_high == doctest::Approx(1.25));
  CHECK(c.rule.wins.empty());
}

TEST_CASE("faster everywhere but within noise somewhere: not strictly better") {
  // 0.995x with CIs of +-1%: every config overlaps, so B never wins beyond noise.
  make_pair("noise_a.h5", "noise_b.h5", [](auto, auto, auto) { return 0.995; });
  CompareOptions o;
  o.inputs = {"noise_a.h5", "noise_b.h5"};
  const auto c = compare(o).comparisons.at(0);
  CHECK(c.losses == 0);
  CHECK(c.wins_beyond_noise == 0);
  CHECK(c.verdict == "no better");
}

TEST_CASE("B slower everywhere: no better") {
  make_pair("slow_a.h5", "slow_b.h5", [](auto, auto, auto) { return 1.3; });
  CompareOptions o;
  o.inputs = {"slow_a.h5", "slow_b.h5"};
  const auto c = compare(o).comparisons.at(0);
  CHECK(c.verdict == "no better");
  CHECK(c.losses == 120);
  CHECK(c.losses_beyond_noise == 120);
}

// What two sweeps of one spec on a noisy machine look like: per-config CIs of +-1% (from within
// each sweep), yet a quarter of the configs 6% faster and a quarter 6% slower, scattered over
// the parameters so that no shallow tree separates them.
double scattered(std::int64_t l, std::int64_t n, std::int64_t b) {
  const auto k = (std::bit_width(static_cast<std::uint64_t>(l)) +
                  std::bit_width(static_cast<std::uint64_t>(n)) +
                  std::bit_width(static_cast<std::uint64_t>(b))) %
                 4;
  return k == 0 ? 0.94 : k == 1 ? 1.06 : 1.0;
}

TEST_CASE("scattered wins beyond the CIs: no rule, and --tie-within makes them ties") {
  make_pair("aa_a.h5", "aa_b.h5", scattered);
  CompareOptions o;
  o.inputs = {"aa_a.h5", "aa_b.h5"};
  auto c = compare(o).comparisons.at(0);
  CHECK(c.wins_beyond_noise == 30);
  CHECK(c.losses_beyond_noise == 30);
  CHECK(c.verdict == "conditionally better");
  CHECK(c.rule.leaves == 1);
  CHECK_MESSAGE(
      c.finding.find("aa_b wins beyond noise in 30 of 120 configs, but no rule of "
                     "depth 2 on the parameters tells them from the rest") != std::string::npos,
      c.finding);
  CHECK(c.finding.find("everywhere") == std::string::npos);
  o.tie_within = 0.10;
  c = compare(o).comparisons.at(0);
  CHECK(c.wins_beyond_noise == 0);
  CHECK(c.losses_beyond_noise == 0);
  CHECK(c.verdict == "no better");
  CHECK(c.finding.find("the speedup is beyond 1 ± 10%") != std::string::npos);
  // A band narrower than the differences leaves them as they were.
  o.tie_within = 0.05;
  CHECK(compare(o).comparisons.at(0).wins_beyond_noise == 30);
}

TEST_CASE("mismatched config sets are reported and left out") {
  std::vector<dnnscape::store::RunRecord> ra, rb;
  synth::fc_grid([&](auto l, auto n, auto bt) {
    const double t = base_time(l, n, bt);
    if (bt != 2048) ra.push_back(synth::fc(l, n, 2000, 200, bt, t));
    if (l != 32) rb.push_back(synth::fc(l, n, 2000, 200, bt, t / 2));
  });
  // A failed row in B is not a config B has.
  auto failed = synth::fc(4, 64, 2000, 1000, 64, 1.0);
  failed.status = dnnscape::store::status::failed;
  rb.push_back(failed);
  synth::write("mis_a.h5", ra, synth::system_info("alpha"));
  synth::write("mis_b.h5", rb, synth::system_info("beta"));
  CompareOptions o;
  o.inputs = {"mis_a.h5", "mis_b.h5"};
  o.out_dir = "mis_out";
  const auto c = compare(o).comparisons.at(0);
  CHECK(c.matched == 3 * 5 * 5);  // layers 4..16, batch 64..1024
  CHECK(c.only_a == 1 * 5 * 5);   // layers 32 (batch < 2048)
  CHECK(c.only_b == 3 * 5 * 1);   // batch 2048 (layers < 32)
  CHECK(c.only_a_ids.size() == c.only_a);
  CHECK(c.verdict == "strictly better");
  CHECK(c.geomean == doctest::Approx(2.0));
  CHECK(c.finding.find("25 configs only in mis_a, 15 only in mis_b") != std::string::npos);
  std::ifstream u("mis_out/compare_mis_b_vs_mis_a_unmatched.csv");
  std::string line;
  int lines = 0;
  while (std::getline(u, line)) ++lines;
  CHECK(lines == 1 + 25 + 15);
}

TEST_CASE("--by dtype compares knob levels inside one file, and --where restricts it") {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto bt) {
    const double t = base_time(l, n, bt);
    rows.push_back(synth::fc(l, n, 2000, 200, bt, t, 300, "f32"));
    rows.push_back(synth::fc(l, n, 2000, 200, bt, l >= 16 ? t / 3 : t * 1.2, 300, "bf16"));
  });
  synth::write("by.h5", rows, synth::system_info("alpha"));
  CompareOptions o;
  o.inputs = {"by.h5"};
  o.by = "dtype";
  o.base = "f32";
  auto c = compare(o).comparisons.at(0);
  CHECK(c.a == "dtype=f32");
  CHECK(c.b == "dtype=bf16");
  CHECK(c.matched == 120);
  CHECK(c.verdict == "conditionally better");
  CHECK(c.rule.wins == "layers ≥ 16");
  o.where = "layers >= 16";
  c = compare(o).comparisons.at(0);
  CHECK(c.matched == 60);
  CHECK(c.verdict == "strictly better");
  CHECK(c.geomean == doctest::Approx(3.0));
  o.base = "f16";
  CHECK_THROWS_AS(compare(o), InputError);
}

TEST_CASE("three files: each later file against the first") {
  make_pair("tri_a.h5", "tri_b.h5", [](auto, auto, auto) { return 0.5; });
  make_pair("tri_a2.h5", "tri_c.h5", [](auto, auto, auto) { return 2.0; });
  CompareOptions o;
  o.inputs = {"tri_a.h5", "tri_b.h5", "tri_c.h5"};
  const auto r = compare(o);
  REQUIRE(r.comparisons.size() == 2);
  CHECK(r.comparisons[0].verdict == "strictly better");
  CHECK(r.comparisons[1].verdict == "no better");
  CHECK(r.comparisons[1].geomean == doctest::Approx(0.5));
}

TEST_CASE("compare needs two inputs or --by") {
  CompareOptions o;
  o.inputs = {"cond_a.h5"};
  CHECK_THROWS_AS(compare(o), InputError);
}
