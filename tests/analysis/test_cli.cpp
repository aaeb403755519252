// The analysis subcommands as the CLI runs them: exit codes, one-line errors, --json.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/cli.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using dnnscape::analysis::analysis_command;

namespace {

struct Run {
  int rc;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Runs a subcommand with stdout and stderr captured to files.
Run run(const std::string& cmd, const std::vector<std::string>& args) {
  std::fflush(stdout);
  std::fflush(stderr);
  const int out = dup(1), err = dup(2);
  const int fo = open("cli.out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int fe = open("cli.err", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fo, 1);
  dup2(fe, 2);
  const int rc = analysis_command(cmd, args);
  std::fflush(stdout);
  std::fflush(stderr);
  dup2(out, 1);
  dup2(err, 2);
  close(fo);
  close(fe);
  close(out);
  close(err);
  return {rc, slurp("cli.out"), slurp("cli.err")};
}

void make() {
  if (fs::exists("cli_a.h5")) return;
  std::vector<dnnscape::store::RunRecord> a, b;
  synth::fc_grid([&](auto l, auto n, auto bt) {
    const double t = 1e-6 * static_cast<double>(l * n * bt) + 1e-4;
    a.push_back(synth::fc(l, n, 2000, 200, bt, t));
    b.push_back(synth::fc(l, n, 2000, 200, bt, bt >= 512 ? t / 2 : t * 2, 600));
  });
  synth::write("cli_a.h5", a, synth::system_info("alpha"));
  synth::write("cli_b.h5", b, synth::system_info("beta", 600));
}

}  // namespace

TEST_CASE("compare prints the finding, --json the same results as JSON") {
  make();
  auto r = run("compare", {"cli_a.h5", "cli_b.h5", "-o", "cli_out", "--bootstrap", "100"});
  CHECK(r.rc == 0);
  CHECK(r.out.find(
            "Verdict: cli_b is conditionally better: cli_b wins beyond noise when batch ≥ 512") !=
        std::string::npos);
  CHECK(r.out.find("wrote cli_out/compare_cli_b_vs_cli_a.svg") != std::string::npos);
  r = run("compare", {"cli_a.h5", "cli_b.h5", "-o", "cli_out", "--json", "--bootstrap", "100"});
  CHECK(r.rc == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["comparisons"][0]["verdict"] == "conditionally better");
  CHECK(j["comparisons"][0]["rule"]["wins"] == "batch ≥ 512");
  CHECK(j["comparisons"][0]["matched"] == 120);
}

TEST_CASE("regress, roofline and heatmap run; the default output folder is beside the input") {
  make();
  auto r = run("regress", {"cli_a.h5", "--bootstrap", "50", "--interactions", "--log"});
  CHECK(r.rc == 0);
  CHECK(r.out.find("fc (n=120") != std::string::npos);
  CHECK(fs::exists("cli_a-plots/regress_log_flops_utilization.svg"));
  r = run("roofline", {"cli_a.h5", "cli_b.h5", "-o", "cli_out", "--json"});
  CHECK(r.rc == 0);
  CHECK(nlohmann::json::parse(r.out)["rooflines"].size() == 2);
  r = run("heatmap",
          {"cli_b.h5", "--baseline", "cli_a.h5", "--metric", "step_time_s", "-o", "cli_out"});
  CHECK(r.rc == 0);
  CHECK(r.out.find("speedup over cli_a (step_time_s) ranges from 0.5 to 2") != std::string::npos);
  r = run("regress", {"--help"});
  CHECK(r.rc == 0);
  CHECK(r.out.find("--interactions") != std::string::npos);
}

TEST_CASE("bad input: exit code 2 and one line on stderr") {
  make();
  const auto one_line = [](const Run& r) {
    return r.rc == 2 && !r.err.empty() && r.err.find('\n') == r.err.size() - 1;
  };
  auto r = run("regress", {"cli_a.h5", "--where", "batch >"});
  CHECK(one_line(r));
  CHECK(r.err == "dnnscape regress: --where: expected a value after '>' at column 8\n");
  r = run("compare", {"cli_a.h5"});
  CHECK(one_line(r));
  r = run("compare", {"cli_a.h5", "cli_b.h5", "--tie-within", "150"});
  CHECK(r.err == "dnnscape compare: --tie-within must be a percentage in [0, 100), got 150\n");
  r = run("compare", {"cli_a.h5", "nope.h5"});
  CHECK(r.err == "dnnscape compare: nope.h5: no such file\n");
  r = run("roofline", {"cli_a.h5", "--colour", "batch"});
  CHECK(one_line(r));
  r = run("regress", {"cli_a.h5", "--metric", "speed"});
  CHECK(r.err == "dnnscape regress: cli_a.h5 has no numeric column 'speed'\n");
  r = run("report", {});
  CHECK(one_line(r));
  std::ofstream("not-results.h5") << "hello";
  r = run("regress", {"not-results.h5"});
  CHECK(one_line(r));
  r = run("frobnicate", {});
  CHECK(r.rc == 2);
}
