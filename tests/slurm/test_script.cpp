// Batch scripts: the #SBATCH lines, quoting that bash and sbatch both take literally, rejection
// of values that cannot be quoted, the template rules, `submit --dry-run`, and the job helpers.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "slurm/cli.hpp"
#include "slurm/job.hpp"
#include "slurm/process.hpp"
#include "slurm/script.hpp"

using namespace dnnscape::slurm;
namespace fs = std::filesystem;

namespace {

// Values that would execute something if they reached bash or sbatch unquoted.
const std::vector<std::string> kNasty = {
    "plain",
    "with space",
    "it's",
    "say \"hi\"",
    "$(touch PWNED-dollar)",
    "`touch PWNED-backtick`",
    "${HOME}",
    "a;touch PWNED-semicolon",
    "a|touch PWNED-pipe",
    "a&&touch PWNED-and",
    "back\\slash",
    "hash # mark",
    "percent %j %%",
    "'\"'\"",
    "*?[glob]",
    "~tilde",
    "-dash",
    "é ünïcode",
};

fs::path scratch() {
  static const fs::path dir = [] {
    auto d = fs::temp_directory_path() / fmt::format("dnnscape-slurm-test-{}", ::getpid());
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

BatchJob simple_job() {
  BatchJob j;
  j.job_name = "dnnscape-test";
  j.nodes = 2;
  j.workers_per_node = 4;
  j.time_limit_s = 3600 + 120;
  j.grace_s = 90;
  j.dnnscape_bin = "/opt/dnnscape/bin/dnnscape";
  j.log_pattern = "/data/out.slurm-%j.out";
  j.chdir = "/data";
  j.tool_version = "9.9.9";
  System s;
  s.spec = "/specs/fc.yaml";
  s.results = "/data/out.h5";
  j.systems.push_back(s);
  return j;
}

std::vector<std::string> sbatch_lines(const std::string& script) {
  std::vector<std::string> lines;
  std::istringstream in(script);
  for (std::string l; std::getline(in, l);)
    if (l.rfind("#SBATCH ", 0) == 0) lines.push_back(l);
  return lines;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Runs `script` with bash in `dir` and returns its stdout.
std::string run_bash(const std::string& script, const fs::path& dir) {
  const auto r = run_command({"bash", "-c", "cd \"$1\" && bash -s", "bash", dir.string()}, script);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return r.out;
}

// Captures what `fn` prints on stdout (fmt::print writes through stdout's FILE*).
template <class F>
std::string capture_stdout(F fn, int& rc) {
  const fs::path file = scratch() / "stdout.txt";
  std::fflush(stdout);
  const int saved = ::dup(1);
  std::FILE* f = std::fopen(file.c_str(), "w");
  ::dup2(::fileno(f), 1);
  rc = fn();
  std::fflush(stdout);
  std::cout.flush();
  ::dup2(saved, 1);
  ::close(saved);
  std::fclose(f);
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("the default template renders the #SBATCH lines a sweep needs") {
  BatchJob j = simple_job();
  j.partition = "cpu";
  j.account = "proj42";
  j.constraint = "avx512&ib";
  j.exclusive = true;
  const auto script = render_batch_script(default_template(), j);
  const auto lines = sbatch_lines(script);
  CHECK(contains(lines, "#SBATCH --job-name=\"dnnscape-test\""));
  CHECK(contains(lines, "#SBATCH --nodes=2"));
  CHECK(contains(lines, "#SBATCH --ntasks-per-node=4"));
  CHECK(contains(lines, "#SBATCH --time=01:02:00"));
  CHECK(contains(lines, "#SBATCH --signal=B:USR1@90"));
  CHECK(contains(lines, "#SBATCH --requeue"));
  CHECK(contains(lines, "#SBATCH --open-mode=append"));
  CHECK(contains(lines, "#SBATCH --output=\"/data/out.slurm-%j.out\""));
  CHECK(contains(lines, "#SBATCH --chdir=\"/data\""));
  CHECK(contains(lines, "#SBATCH --partition=\"cpu\""));
  CHECK(contains(lines, "#SBATCH --account=\"proj42\""));
  CHECK(contains(lines, "#SBATCH --constraint=\"avx512&ib\""));
  CHECK(contains(lines, "#SBATCH --exclusive"));
  CHECK(lines.size() == 13);
  // sbatch stops reading #SBATCH at the first command: all of them come before any.
  std::istringstream in(script);
  bool command_seen = false;
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("#SBATCH", 0) == 0) CHECK_MESSAGE(!command_seen, l);
    if (!l.empty() && l[0] != '#') command_seen = true;
  }
  CHECK(script.find("DNNSCAPE_BIN='/opt/dnnscape/bin/dnnscape'") != std::string::npos);
  CHECK(script.find("DNNSCAPE_WORKERS_PER_NODE=4") != std::string::npos);
  CHECK(script.find("scontrol requeue") != std::string::npos);
  CHECK(script.find("{{") == std::string::npos);
}

TEST_CASE("optional #SBATCH lines are left out, several systems become an array") {
  BatchJob j = simple_job();
  auto lines = sbatch_lines(render_batch_script(default_template(), j));
  for (const auto& l : lines) {
    CHECK(l.find("--partition") == std::string::npos);
    CHECK(l.find("--account") == std::string::npos);
    CHECK(l.find("--exclusive") == std::string::npos);
    CHECK(l.find("--array") == std::string::npos);
  }
  System b = j.systems[0];
  j.systems[0].name = "a";
  b.name = "b";
  b.results = "/data/out.b.h5";
  b.env["ONEDNN_VERBOSE"] = "0";
  j.systems.push_back(b);
  const auto script = render_batch_script(default_template(), j);
  lines = sbatch_lines(script);
  CHECK(contains(lines, "#SBATCH --array=0-1"));
  CHECK(script.find("case ${SLURM_ARRAY_TASK_ID:-} in") != std::string::npos);
  CHECK(script.find("export ONEDNN_VERBOSE='0'") != std::string::npos);
}

TEST_CASE("shell quoting: bash reads every value back exactly and runs nothing") {
  const fs::path dir = scratch() / "bash";
  fs::create_directories(dir);
  BatchJob j = simple_job();
  j.systems.clear();
  std::string expect;
  for (std::size_t i = 0; i < kNasty.size(); ++i) {
    System s;
    s.name = fmt::format("s{}", i);
    s.spec = "/specs/" + kNasty[i] + ".yaml";
    s.results = "/data/" + kNasty[i] + "/out.h5";
    s.env["DNNSCAPE_TEST_VALUE"] = kNasty[i];
    j.systems.push_back(s);
  }
  j.mpirun_args = kNasty;
  j.dnnscape_bin = "/opt/" + kNasty[4] + "/dnnscape";
  // A template that prints what the settings define, for every array task.
  const std::string tpl =
      "{{sbatch}}\n"
      "for SLURM_ARRAY_TASK_ID in $(seq 0 " +
      std::to_string(kNasty.size() - 1) +
      "); do\n{{settings}}\n"
      "printf '%s\\n' \"$DNNSCAPE_SPEC\" \"$DNNSCAPE_OUT\" \"$DNNSCAPE_TEST_VALUE\"\n"
      "done\nprintf '%s\\n' \"$DNNSCAPE_BIN\" \"${DNNSCAPE_MPIRUN_ARGS[@]}\"\n";
  const std::string out = run_bash(render_batch_script(tpl, j), dir);
  for (const auto& v : kNasty)
    expect += "/specs/" + v + ".yaml\n/data/" + v + "/out.h5\n" + v + "\n";
  expect += j.dnnscape_bin.string() + "\n";
  for (const auto& v : kNasty) expect += v + "\n";
  CHECK(out == expect);
  for (const auto& e : fs::directory_iterator(dir))
    FAIL("a quoted value ran a command, it created ", e.path().string());
}

TEST_CASE("sbatch quoting escapes what sbatch's #SBATCH parser would interpret") {
  CHECK(sbatch_quote("a b", "x") == "\"a b\"");
  CHECK(sbatch_quote("say \"hi\" # not a comment \\", "x") ==
        "\"say \\\"hi\\\" \\# not a comment \\\\\"");
  CHECK(slurm_pattern_literal("/data/100%/run") == "/data/100%%/run");
  CHECK(shell_quote("it's", "x") == "'it'\\''s'");
}

TEST_CASE("newlines and other control characters are rejected, never quoted") {
  for (const std::string& bad : std::vector<std::string>{"two\nlines", "car\rreturn", "tab\tbed",
                                                         std::string("nul\0x", 5)}) {
    CHECK_THROWS_AS(shell_quote(bad, "results path"), SubmitError);
    CHECK_THROWS_AS(sbatch_quote(bad, "results path"), SubmitError);
    BatchJob j = simple_job();
    j.systems[0].results = "/data/" + bad + "/out.h5";
    CHECK_THROWS_AS(render_batch_script(default_template(), j), SubmitError);
    j = simple_job();
    j.job_name = bad;
    CHECK_THROWS_AS(render_batch_script(default_template(), j), SubmitError);
  }
  CHECK_THROWS_WITH_AS(shell_quote("a\nb", "results path"),
                       doctest::Contains("results path contains a control character"), SubmitError);
}

TEST_CASE("names, partitions, accounts and constraints with shell characters are rejected") {
  CHECK_NOTHROW(check_name("skylake-48.v2_x+", "system name"));
  CHECK_NOTHROW(check_name("cpu,gpu", "partition", ","));
  CHECK_NOTHROW(check_constraint("avx512&(ib|opa),[rack1*2]"));
  for (const auto& v : kNasty) {
    if (v == "plain") continue;
    CHECK_THROWS_AS(check_name(v, "system name"), SubmitError);
    CHECK_THROWS_AS(check_name(v, "partition", ","), SubmitError);
    CHECK_THROWS_AS(check_name(v, "account"), SubmitError);
  }
  for (const std::string v : {"a b", "$(x)", "`x`", "a;b", "a\"b", "a'b", "a\nb", "a#b", "a%b"})
    CHECK_THROWS_AS(check_constraint(v), SubmitError);
  CHECK_THROWS_WITH_AS(check_name("a b", "partition"),
                       "partition \"a b\" may contain only letters, digits and . _ + - (and not "
                       "start with - or .)",
                       SubmitError);
  CHECK_THROWS_AS(check_env_name("A-B"), SubmitError);
  CHECK_THROWS_AS(check_env_name("1A"), SubmitError);
  CHECK_NOTHROW(check_env_name("ONEDNN_MAX_CPU_ISA"));
}

TEST_CASE("time limits") {
  CHECK(parse_time_limit("00:01:00") == 60);
  CHECK(parse_time_limit("12:30:05") == 45005);
  CHECK(parse_time_limit("2-00:00:00") == 172800);
  CHECK(parse_time_limit("10:00") == 600);
  CHECK(format_time_limit(172800 + 61) == "2-00:01:01");
  CHECK(format_time_limit(45005) == "12:30:05");
  CHECK_THROWS_AS(parse_time_limit("00:00:30"), SubmitError);  // Slurm's minimum is a minute
  CHECK_THROWS_AS(parse_time_limit("1h"), SubmitError);
  CHECK_THROWS_AS(parse_time_limit("00:61:00"), SubmitError);
  CHECK(abandon_after_s(120) == 90);
  CHECK(abandon_after_s(10) == 5);
}

TEST_CASE("templates: unknown placeholders and missing blocks are errors") {
  const BatchJob j = simple_job();
  CHECK_THROWS_WITH_AS(render_batch_script("#!/bin/bash\n{{settings}}\n", j),
                       "the template has no {{sbatch}}", SubmitError);
  CHECK_THROWS_WITH_AS(render_batch_script("{{sbatch}}\n", j), "the template has no {{settings}}",
                       SubmitError);
  CHECK_THROWS_WITH_AS(render_batch_script("{{sbatch}}\n{{settings}}\necho {{spec}}\n", j),
                       doctest::Contains("template line 3: unknown placeholder \"{{spec}}"),
                       SubmitError);
  CHECK(render_batch_script("{{sbatch}}\n{{settings}}\n# {{version}}\n", j).find("# 9.9.9") !=
        std::string::npos);
}

TEST_CASE("files next to the results file") {
  CHECK(sidecar_path("/d/run.h5") == "/d/run.slurm.jsonl");
  CHECK(log_pattern_for("/d/run.h5") == "/d/run.slurm-%j.out");
  CHECK(log_pattern_for("/d/50%.h5") == "/d/50%%.slurm-%j.out");
  CHECK(script_path_for("/d/run.h5") == "/d/run.slurm.sh");
}

TEST_CASE("submit --dry-run prints the script and submits nothing") {
  const fs::path dir = scratch() / "dry run $(touch PWNED)";
  const std::string spec = std::string(DNNSCAPE_SOURCE_DIR) + "/tests/slurm/specs/tiny-fc.yaml";
  int rc = -1;
  const std::string out = capture_stdout(
      [&] {
        return slurm_command(
            "submit", {spec, "-o", (dir / "o'ut.h5").string(), "--time", "00:05:00", "--nodes", "1",
                       "--workers-per-node", "2", "--partition", "debug", "--account", "acct",
                       "--constraint", "avx2", "--exclusive", "--grace", "30", "--dry-run"});
      },
      rc);
  CHECK(rc == 0);
  const auto lines = sbatch_lines(out);
  CHECK(contains(lines, "#SBATCH --job-name=\"dnnscape-tiny-fc\""));
  CHECK(contains(lines, "#SBATCH --time=00:05:00"));
  CHECK(contains(lines, "#SBATCH --signal=B:USR1@30"));
  CHECK(contains(lines, "#SBATCH --nodes=1"));
  CHECK(contains(lines, "#SBATCH --ntasks-per-node=2"));
  CHECK(contains(lines, "#SBATCH --partition=\"debug\""));
  CHECK(contains(lines, "#SBATCH --account=\"acct\""));
  CHECK(contains(lines, "#SBATCH --constraint=\"avx2\""));
  CHECK(contains(lines, "#SBATCH --exclusive"));
  CHECK(contains(lines, "#SBATCH --requeue"));
  CHECK(contains(lines, fmt::format("#SBATCH --output=\"{}/o'ut.slurm-%j.out\"", dir.string())));
  CHECK(out.find(fmt::format("DNNSCAPE_OUT='{}/o'\\''ut.h5'", dir.string())) != std::string::npos);
  CHECK(out.find("# dry run: would write") != std::string::npos);
  CHECK(!fs::exists(dir));  // nothing written
}

TEST_CASE("submit rejects unsafe values and bad options with one line and exit 2") {
  const std::string spec = std::string(DNNSCAPE_SOURCE_DIR) + "/tests/slurm/specs/tiny-fc.yaml";
  const std::vector<std::string> base = {spec,     "-o",       (scratch() / "x.h5").string(),
                                         "--time", "00:05:00", "--dry-run"};
  auto with = [&](std::vector<std::string> extra) {
    auto a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  int rc = -1;
  for (const auto& extra : std::vector<std::vector<std::string>>{
           {"--partition", "debug;touch PWNED"},
           {"--account", "$(id)"},
           {"--constraint", "`id`"},
           {"--job-name", "a b"},
           {"--systems", "ok,bad name"},
           {"--systems", "a,a"},
           {"--grace", "3000"},
           {"--launcher", "ssh"},
           {"--nodes", "0"},
       }) {
    capture_stdout([&] { return rc = slurm_command("submit", with(extra)); }, rc);
    CHECK_MESSAGE(rc == 2, extra[0], " ", extra[1]);
  }
  capture_stdout(
      [&] {
        return slurm_command("submit", {spec, "-o", "x.h5", "--time", "00:00:10", "--dry-run"});
      },
      rc);
  CHECK(rc == 2);  // shorter than Slurm's minimum
  capture_stdout([&] { return slurm_command("submit", {spec, "--time", "00:05:00"}); }, rc);
  CHECK(rc == 2);  // no -o
  // A results path with a newline cannot be quoted for #SBATCH: rejected.
  capture_stdout(
      [&] {
        return slurm_command("submit",
                             {spec, "-o", "/tmp/a\nb/x.h5", "--time", "00:05:00", "--dry-run"});
      },
      rc);
  CHECK(rc == 2);
}

TEST_CASE("--systems: a YAML file with partitions, knobs and environment") {
  const fs::path dir = scratch() / "systems";
  fs::create_directories(dir);
  const std::string spec = std::string(DNNSCAPE_SOURCE_DIR) + "/tests/slurm/specs/tiny-fc.yaml";
  {
    std::ofstream f(dir / "same.yaml");
    f << "systems:\n  native: {}\n  avx2:\n    knobs: {isa_cap: avx2}\n    env: {X: \"$(id)\"}\n";
  }
  int rc = -1;
  std::string out = capture_stdout(
      [&] {
        return slurm_command("submit", {spec, "-o", (dir / "r.h5").string(), "--time", "00:05:00",
                                        "--systems", (dir / "same.yaml").string(), "--dry-run"});
      },
      rc);
  CHECK(rc == 0);
  CHECK(contains(sbatch_lines(out), "#SBATCH --array=0-1"));  // same resources: one array
  CHECK(out.find(fmt::format("DNNSCAPE_OUT='{}/r.native.h5'", dir.string())) != std::string::npos);
  CHECK(out.find(fmt::format("DNNSCAPE_SPEC='{}/r.avx2.spec.yaml'", dir.string())) !=
        std::string::npos);
  CHECK(out.find("export X='$(id)'") != std::string::npos);
  {
    std::ofstream f(dir / "parts.yaml");
    f << "a: {partition: pa}\nb: {partition: pb, nodes: 2}\n";
  }
  out = capture_stdout(
      [&] {
        return slurm_command("submit", {spec, "-o", (dir / "r.h5").string(), "--time", "00:05:00",
                                        "--systems", (dir / "parts.yaml").string(), "--dry-run"});
      },
      rc);
  CHECK(rc == 0);
  const auto lines = sbatch_lines(out);  // two scripts, one job per partition
  CHECK(contains(lines, "#SBATCH --partition=\"pa\""));
  CHECK(contains(lines, "#SBATCH --partition=\"pb\""));
  CHECK(contains(lines, "#SBATCH --nodes=2"));
  CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
          return l.find("--array") != std::string::npos;
        }) == 0);
  {
    std::ofstream f(dir / "badknob.yaml");
    f << "x: {knobs: {isa_cap: avx9000}}\n";
  }
  capture_stdout(
      [&] {
        return rc = slurm_command("submit",
                                  {spec, "-o", (dir / "r.h5").string(), "--time", "00:05:00",
                                   "--systems", (dir / "badknob.yaml").string(), "--dry-run"});
      },
      rc);
  CHECK(rc == 2);
}

TEST_CASE("job provenance from the environment, and no state without Slurm") {
  ::unsetenv("SLURM_JOB_ID");
  ::unsetenv("DNNSCAPE_SLURM_JOB_ID");
  CHECK(!job_from_environment().has_value());
  ::setenv("SLURM_JOB_ID", "1234", 1);
  ::setenv("SLURM_RESTART_COUNT", "2", 1);
  const auto j = job_from_environment();
  REQUIRE(j.has_value());
  CHECK(j->job_id == "1234");
  CHECK(j->restart_count == 2);
  CHECK(j->label() == "job 1234 restart 2");
  ::unsetenv("SLURM_JOB_ID");
  ::unsetenv("SLURM_RESTART_COUNT");

  const fs::path dir = scratch() / "state";
  fs::create_directories(dir);
  CHECK(slurm_job_state(dir / "none.h5").empty());  // no sidecar
  {
    std::ofstream f(sidecar_path(dir / "r.h5"));
    f << R"({"event":"submitted","job_id":"77"})"
      << "\n"
      << R"({"event":"start","job_id)"
      << "\n";
  }
  CHECK(last_job_id(dir / "r.h5") == "77");  // a torn last line is skipped
  // An unreachable controller: no slurm.conf at all.
  ::setenv("SLURM_CONF", (dir / "missing.conf").c_str(), 1);
  CHECK(slurm_job_state(dir / "r.h5").empty());
  ::unsetenv("SLURM_CONF");
}
