// report: one self-contained HTML page, rendered in headless Chromium.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "analysis/report.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using namespace dnnscape::analysis;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
  return n;
}

dnnscape::store::RunRecord rnn(std::int64_t layers, std::int64_t embedding, std::int64_t batch,
                               const std::string& cell, double t) {
  dnnscape::store::RunRecord r;
  r.config.family = dnnscape::space::Family::rnn;
  r.config.layers = layers;
  r.config.embedding = embedding;
  r.config.length = 50;
  r.config.vocab = 4096;
  r.config.batch = batch;
  r.config.cell = cell;
  r.config_id = r.config.config_id();
  r.metrics.step_time_s = t;
  r.metrics.step_time_ci_low_s = t * 0.99;
  r.metrics.step_time_ci_high_s = t * 1.01;
  r.metrics.flops = 1e9 * static_cast<double>(layers * embedding * batch) / 1e4;
  r.metrics.gflops = r.metrics.flops / t / 1e9;
  r.metrics.flops_utilization = r.metrics.gflops / 300;
  r.metrics.bytes = r.metrics.flops / 8;
  r.metrics.arithmetic_intensity = 8;
  r.ops = {{0, "rnn", "forward", t * 0.9, r.metrics.flops * 0.9, r.metrics.bytes, "ref"},
           {0, "softmax", "forward", t * 0.1, r.metrics.flops * 0.1, r.metrics.bytes, "jit"}};
  return r;
}

void make(const fs::path& path, double speed, const std::string& host) {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    const double t = 1e-6 * static_cast<double>(l * n * b) / 64.0 / speed + 1e-4;
    rows.push_back(synth::fc(l, n, 2000, 200, b, b >= 512 ? t / speed : t * speed, 300 * speed));
  });
  for (std::int64_t layers : {1, 5, 9})
    for (std::int64_t emb : {100, 500, 900})
      for (std::int64_t batch : {64, 128, 256, 512})
        for (const char* cell : {"lstm", "gru"})
          rows.push_back(rnn(layers, emb, batch, cell,
                             1e-7 * static_cast<double>(layers * emb * batch) / speed));
  synth::write(path, rows, synth::system_info(host, 300 * speed, 20), "report-test");
}

}  // namespace

TEST_CASE("the report is one self-contained page that headless Chromium renders") {
  make("rep_a.h5", 1.0, "alpha");
  make("rep_b.h5", 1.5, "beta");
  ReportOptions o;
  o.inputs = {"rep_a.h5", "rep_b.h5"};
  o.out_dir = "rep_out";
  o.bootstrap = 200;
  const auto r = report(o);
  REQUIRE(fs::exists(r.html));
  CHECK(r.sections == std::vector<std::string>{"System and spec provenance", "Sweep summary",
                                               "Heat maps", "Which parameter matters: regression",
                                               "Roofline", "Measured vs predicted",
                                               "Comparison across files"});
  const auto html = slurp(r.html);
  // 2 files x 2 families of heat maps, 1 regression, 2 rooflines, 1 comparison.
  CHECK(count(html, "<svg") == 8);
  CHECK(count(html, "class=\"error\"") == 0);
  CHECK(html.find("Synthetic CPU alpha") != std::string::npos);
  CHECK(html.find("Synthetic CPU beta") != std::string::npos);
  CHECK(html.find("Verdict: rep_b is") != std::string::npos);
  // Nothing is fetched: no external src/href (SVG namespaces are names, not requests).
  CHECK_FALSE(std::regex_search(html, std::regex(R"((src|href)\s*=\s*["'](https?:)?//)")));
  CHECK(count(html, "<img") == 0);
  // The CSV tables are beside the page.
  CHECK(fs::exists("rep_out/regress_flops_utilization.csv"));
  CHECK(fs::exists("rep_out/compare_rep_b_vs_rep_a_configs.csv"));
  CHECK(fs::exists("rep_out/roofline_rep_a_summary.csv"));

  // Headless Chromium: the page loads, runs its one-line load marker, shows the figures, and
  // logs no JavaScript error.
  const auto profile = fs::absolute("chromium-profile");
  fs::remove_all(profile);
  const std::string flags = fmt::format(
      "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
      "--disable-background-networking --disable-component-update --disable-sync "
      "--enable-logging=stderr --v=0 --user-data-dir={}",
      profile.string());
  const auto url = "file://" + fs::absolute(r.html).string();
  const std::string dump =
      fmt::format("chromium {} --dump-dom '{}' > dom.html 2> chromium.log", flags, url);
  MESSAGE(dump);
  int rc = std::system(dump.c_str());
  REQUIRE(WIFEXITED(rc));
  REQUIRE(WEXITSTATUS(rc) == 0);
  const auto dom = slurp("dom.html");
  CHECK(dom.find("data-loaded=\"1\"") != std::string::npos);
  CHECK(count(dom, "<svg") == 8);
  CHECK(count(dom, "<figure>") == 8);
  const auto log = slurp("chromium.log");
  CHECK_MESSAGE(log.find("Uncaught") == std::string::npos, log);
  CHECK_MESSAGE(log.find("CONSOLE") == std::string::npos, log);

  const std::string shot = fmt::format(
      "chromium {} --window-size=1200,4000 --screenshot={} '{}' > /dev/null 2> shot.log", flags,
      fs::absolute("report.png").string(), url);
  rc = std::system(shot.c_str());
  REQUIRE(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
  REQUIRE(fs::exists("report.png"));
  CHECK(fs::file_size("report.png") > 50'000);
  fs::remove_all(profile);
}

TEST_CASE("one file with a varying knob gets a comparison across that knob") {
  std::vector<dnnscape::store::RunRecord> rows;
  synth::fc_grid([&](auto l, auto n, auto b) {
    const double t = 1e-6 * static_cast<double>(l * n * b) / 64.0 + 1e-4;
    rows.push_back(synth::fc(l, n, 2000, 200, b, t, 300, "f32"));
    rows.push_back(synth::fc(l, n, 2000, 200, b, t / 2, 300, "bf16"));
  });
  synth::write("rep_knob.h5", rows, synth::system_info("alpha"));
  ReportOptions o;
  o.inputs = {"rep_knob.h5"};
  o.out_dir = "rep_knob_out";
  o.bootstrap = 100;
  const auto r = report(o);
  CHECK(r.sections.back() == "Comparison across dtype");
  CHECK(r.finding.find("dtype=f32 vs dtype=bf16") != std::string::npos);
  CHECK(r.finding.find("Verdict: dtype=f32 is no better") != std::string::npos);
}
