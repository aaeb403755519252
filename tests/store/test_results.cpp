// Results file dnnscape/1: writer/reader round trip, resume, truncation, crash safety under
// kill -9, and what h5py/pandas see.
#include <doctest/doctest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/results.hpp"

extern char** environ;

namespace fs = std::filesystem;
using namespace dnnscape;
using namespace dnnscape::store;

namespace {

// Kills and reaps a forked child when the test leaves its scope, even through a failed REQUIRE.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

// A fresh path in the scratch working directory.
fs::path fresh(const std::string& name) {
  fs::remove(name);
  return name;
}

FileMeta test_meta() {
  FileMeta m;
  m.tool_version = "0.1.0-test";
  m.spec_name = "unit";
  m.spec_sha256 = std::string(64, 'a');
  m.spec_yaml = "name: unit\nfamilies: [fc]\n";
  m.created_utc = "2026-01-02T03:04:05Z";
  return m;
}

SystemInfo test_system() {
  SystemInfo s;
  s.hostname = "node01";
  s.cpu_model = "Test CPU @ 2.0GHz";
  s.logical_cpus = 64;
  s.onednn_version = "3.0.0";
  s.onednn_isa = "avx512_core";
  s.peak_gflops_f32 = 2048.5;
  s.peak_gflops_f32_1core = 64.25;
  s.mem_bandwidth_gbs = 150.0;
  s.energy_source = "none: no RAPL counters";
  return s;  // peak_gflops_bf16 stays NaN
}

// Record i: families rotate, every param/knob/metric derived from i, 3 + i % 4 samples, 2 ops.
RunRecord make_record(int i) {
  RunRecord r;
  auto& c = r.config;
  c.family = static_cast<space::Family>(i % 3);
  c.batch = 32 + i;
  c.layers = 1 + i % 8;
  if (c.family == space::Family::fc) {
    c.nodes = 64 * (i + 1);
    c.input = 784;
    c.output = 10;
  } else if (c.family == space::Family::cnn) {
    c.filters = 16 + i;
    c.blocks = 2;
    c.image = 224;
    c.output = 1000;
    c.block_fn = "bottleneck";
  } else {
    c.nodes = 128;
    c.embedding = 64;
    c.length = 25 + i;
    c.vocab = 1000;
    c.cell = "lstm";
  }
  c.knobs.threads = i % 2 == 0 ? 0 : 4;
  c.knobs.dtype = i % 2 == 0 ? "f32" : "bf16";
  r.config_id = c.config_id();
  r.status = status::ok;
  r.message = "";
  auto& m = r.metrics;
  m.step_time_s = 0.001 * (i + 1);
  m.step_time_ci_low_s = m.step_time_s * 0.99;
  m.step_time_ci_high_s = m.step_time_s * 1.01;
  m.flops = 1e9 * (i + 1);
  m.gflops = m.flops / m.step_time_s / 1e9;
  m.examples_per_s = static_cast<double>(c.batch) / m.step_time_s;
  m.params = 1000.0 * i;
  const int k = 3 + i % 4;
  for (int j = 0; j < k; ++j) r.samples.push_back(m.step_time_s + j * 1e-6);
  m.reps = k;
  r.provenance.host = "node01";
  r.provenance.rank = i % 4;
  r.provenance.cores = "0-3";
  r.provenance.workers_on_host = 2;
  r.provenance.effective_isa = "avx512_core";
  r.provenance.finished_utc = "2026-01-02T03:04:05Z";
  r.ops.push_back({0, "inner_product", "forward", 1e-4 * (i + 1), 2e6, 3e5, "brg:avx512_core"});
  r.ops.push_back({1, "eltwise", "backward_data", 2e-5, 0, 1e5, "jit:avx512_core"});
  return r;
}

RunRecord failed_record(int i, const std::string& why) {
  RunRecord r = make_record(i);
  r.status = status::failed;
  r.message = why;
  r.metrics = Metrics{};
  r.samples.clear();
  r.ops.clear();
  return r;
}

bool same_double(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

void check_same(const RunRecord& got, const RunRecord& want) {
  CHECK(got.config == want.config);
  CHECK(got.config_id == want.config_id);
  CHECK(got.status == want.status);
  CHECK(got.message == want.message);
  CHECK(same_double(got.metrics.step_time_s, want.metrics.step_time_s));
  CHECK(same_double(got.metrics.gflops, want.metrics.gflops));
  CHECK(same_double(got.metrics.energy_j, want.metrics.energy_j));
  CHECK(same_double(got.metrics.wall_s, want.metrics.wall_s));
  CHECK(got.metrics.reps == want.metrics.reps);
  CHECK(got.provenance.host == want.provenance.host);
  CHECK(got.provenance.rank == want.provenance.rank);
  CHECK(got.provenance.cores == want.provenance.cores);
  CHECK(got.provenance.finished_utc == want.provenance.finished_utc);
  CHECK(got.samples == want.samples);
  REQUIRE(got.ops.size() == want.ops.size());
  for (std::size_t i = 0; i < got.ops.size(); ++i) {
    CHECK(got.ops[i].layer == want.ops[i].layer);
    CHECK(got.ops[i].op == want.ops[i].op);
    CHECK(got.ops[i].phase == want.ops[i].phase);
    CHECK(got.ops[i].impl == want.ops[i].impl);
    CHECK(same_double(got.ops[i].time_s, want.ops[i].time_s));
    CHECK(got.ops[i].flops == want.ops[i].flops);
    CHECK(got.ops[i].bytes == want.ops[i].bytes);
  }
}

// Runs `python -c script args...` and returns its exit status (-1 if it did not exit normally).
int run_python(const std::string& script, const std::vector<std::string>& args) {
  const char* env = std::getenv("PYTHON");
  const std::string python = env != nullptr && *env != '\0' ? env : "/usr/bin/python3";
  std::vector<std::string> argv_s = {python, "-c", script};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, python.c_str(), nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// The loader documented in docs/results-schema.md, checked against expected values.
// argv: path, "plain" | "swmr", expected batch list, expected status list (comma-separated; the
// file's rows must start with them), step_time_s of row 0.
const char* kPandasCheck = R"(
import sys, h5py, numpy as np, pandas as pd
path, mode, batches, statuses, t0 = sys.argv[1:6]
errors = []
if mode == "plain":
    # docs/results-schema.md, cleanly closed file: bytes as they are, then decoded.
    raw = pd.DataFrame({k: v[()] for k, v in h5py.File(path, "r")["runs"].items()})
    if raw["status"][0] != b"ok":
        errors.append(f"raw status[0]: {raw['status'][0]!r}")
    df = pd.DataFrame({k: (v[()].astype(str) if v.dtype.kind == "S" else v[()]) for k, v in h5py.File(path, "r")["runs"].items()})
    f = h5py.File(path, "r")
else:
    # docs/results-schema.md, file being written or left by a killed writer.
    runs = h5py.File(path, "r", libver="latest", swmr=True)["runs"]
    n = min(len(v) for v in runs.values())
    df = pd.DataFrame({k: (v[:n].astype(str) if v.dtype.kind == "S" else v[:n]) for k, v in runs.items()})
    f = runs.file
def expect(what, got, want):
    if got != want:
        errors.append(f"{what}: got {got!r}, want {want!r}")
expect("schema", f.attrs["schema"], b"dnnscape/1")
want_b = [int(x) for x in batches.split(",")]
want_s = statuses.split(",")
expect("batch", list(df["batch"])[:len(want_b)], want_b)
expect("status", list(df["status"])[:len(want_s)], want_s)
expect("step_time_s[0]", float(df["step_time_s"][0]), float(t0))
expect("energy_j is NaN", bool(np.isnan(df["energy_j"][0])), True)
expect("config_id width", len(df["config_id"][0]), 16)
s = f["samples"]
expect("samples of row 0", int((s["row"][()] == 0).sum()) > 0 or df["reps"][0] == 0, True)
expect("ops columns", sorted(f["ops"].keys()), sorted(["row", "layer", "op", "phase", "impl", "time_s", "flops", "bytes"]))
print(f"python: {len(df)} rows, {len(df.columns)} columns, mode={mode}")
if errors:
    print("\n".join(errors))
    sys.exit(1)
)";

std::string join_batches(const std::vector<RunRecord>& rs) {
  std::string out;
  for (const auto& r : rs) {
    if (!out.empty()) out += ',';
    out += std::to_string(r.config.batch);
  }
  return out;
}

}  // namespace

TEST_CASE("round trip: ints, strings, NaN, samples and ops") {
  const fs::path path = fresh("roundtrip.h5");
  std::vector<RunRecord> recs = {make_record(0), make_record(1), make_record(2),
                                 failed_record(3, "out of memory: 12 GiB needed")};
  recs[1].metrics.energy_j = 12.5;
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    for (const auto& r : recs) w.write(r);
    REQUIRE(w.rows().size() == 4);
    CHECK(w.rows().at(recs[2].config_id).row == 2);
    CHECK(w.rows().at(recs[3].config_id).status == "failed");
  }
  const ResultsReader rd(path);
  REQUIRE(rd.rows() == 4);
  CHECK(rd.meta().schema == "dnnscape/1");
  CHECK(rd.meta().spec_yaml == test_meta().spec_yaml);
  CHECK(rd.meta().created_utc == "2026-01-02T03:04:05Z");
  CHECK(rd.system().logical_cpus == 64);
  CHECK(rd.system().peak_gflops_f32 == 2048.5);
  CHECK(std::isnan(rd.system().peak_gflops_bf16));
  CHECK(rd.system().energy_source == "none: no RAPL counters");

  CHECK(rd.read_int("batch") == std::vector<std::int64_t>{32, 33, 34, 35});
  CHECK(rd.read_int("filters") == std::vector<std::int64_t>{-1, 17, -1, -1});
  CHECK(rd.read_double("batch") == std::vector<double>{32, 33, 34, 35});
  CHECK(rd.read_string("family") == std::vector<std::string>{"fc", "cnn", "rnn", "fc"});
  CHECK(rd.read_string("cell") == std::vector<std::string>{"", "", "lstm", ""});
  CHECK(rd.read_string("status") == std::vector<std::string>{"ok", "ok", "ok", "failed"});
  CHECK(rd.read_string("message")[3] == "out of memory: 12 GiB needed");
  const auto e = rd.read_double("energy_j");
  CHECK(std::isnan(e[0]));
  CHECK(e[1] == 12.5);
  CHECK(std::isnan(rd.read_double("step_time_s")[3]));
  CHECK(rd.read_double("step_time_s")[2] == 0.003);
  CHECK(rd.has_column("flops_utilization"));
  CHECK_FALSE(rd.has_column("no_such_column"));
  CHECK(rd.columns().front() == "config_id");
  CHECK(rd.columns().size() == 48);

  // samples: 3 + 4 + 5 for rows 0..2, none for the failed row.
  CHECK(rd.group_rows("samples") == 12);
  const auto srow = rd.read_group_int("samples", "row");
  CHECK(std::count(srow.begin(), srow.end(), 1) == 4);
  CHECK(rd.read_group_double("samples", "step_time_s")[3] == recs[1].samples[0]);
  CHECK(rd.group_rows("ops") == 6);
  CHECK(rd.read_group_string("ops", "impl")[0] == "brg:avx512_core");
  CHECK(rd.read_group_string("ops", "phase")[1] == "backward_data");
  CHECK(rd.read_group_int("ops", "layer") == std::vector<std::int64_t>{0, 1, 0, 1, 0, 1});

  const auto got = rd.read_records();
  REQUIRE(got.size() == recs.size());
  for (std::size_t i = 0; i < recs.size(); ++i) {
    CAPTURE(i);
    check_same(got[i], recs[i]);
  }

  CHECK_THROWS_AS((void)rd.read_int("step_time_s"), StoreError);
  CHECK_THROWS_AS((void)rd.read_string("batch"), StoreError);
  CHECK_THROWS_WITH_AS((void)rd.read_double("nope"), doctest::Contains("roundtrip.h5"), StoreError);
  CHECK_THROWS_AS((void)ResultsWriter::create(path, test_meta(), test_system()), StoreError);
}

TEST_CASE("a retried failure overwrites its row in place") {
  const fs::path path = fresh("retry.h5");
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    w.write(make_record(0));
    w.write(failed_record(1, "executor crashed (SIGSEGV)"));
    w.write(make_record(2));
    CHECK(w.rows().at(make_record(1).config_id).status == "failed");
    w.write(make_record(1));
    REQUIRE(w.rows().size() == 3);
    CHECK(w.rows().at(make_record(1).config_id).row == 1);
    CHECK(w.rows().at(make_record(1).config_id).status == "ok");
  }
  const ResultsReader rd(path);
  REQUIRE(rd.rows() == 3);
  CHECK(rd.read_string("status") == std::vector<std::string>{"ok", "ok", "ok"});
  CHECK(rd.read_string("message")[1].empty());
  const auto got = rd.read_records();
  check_same(got[1], make_record(1));
  CHECK(got[1].samples.size() == 4);
}

TEST_CASE("reopen and append") {
  const fs::path path = fresh("resume.h5");
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    w.write(make_record(0));
    w.write(failed_record(1, "timeout after 600 s"));
  }
  // A reader open in another process does not keep a resuming writer out.
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  ChildGuard reader{fork()};
  REQUIRE(reader.pid >= 0);
  if (reader.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    try {
      const ResultsReader before(path);
      const char c = before.rows() == 2 ? 'y' : 'n';
      if (write(ready[1], &c, 1) == 1) pause();
    } catch (...) {
    }
    _exit(1);
  }
  char answer = 0;
  REQUIRE(read(ready[0], &answer, 1) == 1);
  CHECK(answer == 'y');
  {
    auto w = ResultsWriter::open(path);
    CHECK(w.meta().spec_sha256 == test_meta().spec_sha256);
    CHECK(w.system().hostname == "node01");
    REQUIRE(w.rows().size() == 2);
    CHECK(w.rows().at(make_record(0).config_id).row == 0);
    CHECK(w.rows().at(make_record(1).config_id).status == "failed");
    w.write(make_record(2));
    w.write(make_record(1));  // the retry
    CHECK(w.rows().size() == 3);
  }
  close(ready[0]);
  close(ready[1]);
  const ResultsReader rd(path);
  REQUIRE(rd.rows() == 3);
  CHECK(rd.read_int("batch") == std::vector<std::int64_t>{32, 33, 34});
  CHECK(rd.read_string("status") == std::vector<std::string>{"ok", "ok", "ok"});
  const auto got = rd.read_records();
  for (int i = 0; i < 3; ++i) check_same(got[static_cast<std::size_t>(i)], make_record(i));
}

TEST_CASE("a file written before /runs/wall_s existed is resumed: old rows NaN, new rows kept") {
  const fs::path path = fresh("old-schema.h5");
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    RunRecord r = make_record(0);
    r.metrics.wall_s = 1.5;
    w.write(r);
    w.write(make_record(1));
  }
  // What a file of an earlier version looks like: no wall_s column.
  REQUIRE(run_python("import sys, h5py\nf = h5py.File(sys.argv[1], 'a')\ndel f['runs/wall_s']\n",
                     {path.string()}) == 0);
  {
    const ResultsReader old(path);
    REQUIRE(old.rows() == 2);
    CHECK(std::isnan(old.read_records()[0].metrics.wall_s));  // read as "not recorded"
  }
  {
    auto w = ResultsWriter::open(path);
    RunRecord r = make_record(2);
    r.metrics.wall_s = 2.25;
    w.write(r);
  }
  const ResultsReader rd(path);
  REQUIRE(rd.rows() == 3);
  const auto wall = rd.read_double("wall_s");
  REQUIRE(wall.size() == 3);
  CHECK(std::isnan(wall[0]));
  CHECK(std::isnan(wall[1]));
  CHECK(wall[2] == 2.25);
  CHECK(rd.read_int("batch") == std::vector<std::int64_t>{32, 33, 34});
  const auto got = rd.read_records();
  check_same(got[1], make_record(1));
}

TEST_CASE("/jobs: each batch-job session adds a row; outside a job there is none") {
  const fs::path path = fresh("jobs.h5");
  JobInfo first;
  first.job_id = "1234";
  first.restart_count = 0;
  first.started_utc = "2026-12-02T10:00:00Z";
  first.host = "node01";
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system(), {}, first);
    w.write(make_record(0));
  }
  CHECK(ResultsReader(path).jobs().size() == 1);
  { auto w = ResultsWriter::open(path); }  // a session outside Slurm adds nothing
  JobInfo again = first;
  again.array_job_id = "1230";
  again.array_task_id = "4";
  again.restart_count = 1;
  again.started_utc = "2026-12-02T11:00:00Z";
  {
    OpenOptions o;
    o.job = again;
    auto w = ResultsWriter::open(path, o);
    w.write(make_record(1));
  }
  const ResultsReader rd(path);
  const auto jobs = rd.jobs();
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[0].job_id == "1234");
  CHECK(jobs[0].restart_count == 0);
  CHECK(jobs[0].array_job_id.empty());
  CHECK(jobs[1].restart_count == 1);
  CHECK(jobs[1].array_job_id == "1230");
  CHECK(jobs[1].array_task_id == "4");
  CHECK(jobs[1].started_utc == "2026-12-02T11:00:00Z");
  CHECK(jobs[1].host == "node01");
  CHECK(rd.rows() == 2);
  const fs::path plain = fresh("nojobs.h5");
  { auto w = ResultsWriter::create(plain, test_meta(), test_system()); }
  CHECK(ResultsReader(plain).jobs().empty());
}

TEST_CASE("long strings are truncated, never overflow") {
  const fs::path path = fresh("trunc.h5");
  RunRecord r = failed_record(0, std::string(600, 'm') + "TAIL");
  r.provenance.host = std::string(100, 'h');
  r.provenance.cores = "0-3";
  r.ops.push_back({0, std::string(40, 'o'), "forward", 1e-3, 1, 1, std::string(70, 'i')});
  RunRecord u = make_record(1);
  // 510 ASCII bytes then a 3-byte UTF-8 character: must not be cut in half at 512.
  u.message = std::string(510, 'x') + "\xE2\x82\xAC" + "more";
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    w.write(r);
    w.write(u);
  }
  const ResultsReader rd(path);
  const auto msg = rd.read_string("message");
  CHECK(msg[0] == std::string(512, 'm'));
  CHECK(msg[1] == std::string(510, 'x'));
  CHECK(rd.read_string("host")[0] == std::string(64, 'h'));
  CHECK(rd.read_group_string("ops", "op")[0] == std::string(32, 'o'));
  CHECK(rd.read_group_string("ops", "impl")[0] == std::string(64, 'i'));
  CHECK(rd.read_string("config_id")[0] == r.config_id);
}

TEST_CASE("files that are not dnnscape/1 results are refused clearly") {
  const fs::path text = fresh("not_hdf5.h5");
  std::ofstream(text) << "hello\n";
  CHECK_THROWS_WITH_AS(ResultsReader{text},
                       "not_hdf5.h5 is not a dnnscape/1 results file (not an HDF5 file)",
                       StoreError);
  CHECK_THROWS_WITH_AS((void)ResultsWriter::open(text),
                       "not_hdf5.h5 is not a dnnscape/1 results file (not an HDF5 file)",
                       StoreError);

  const fs::path other = fresh("other_schema.h5");
  REQUIRE(run_python("import sys, h5py\nf = h5py.File(sys.argv[1], 'w')\n"
                     "f.attrs['schema'] = 'other/7'\n",
                     {other.string()}) == 0);
  CHECK_THROWS_WITH_AS(ResultsReader{other},
                       "other_schema.h5 is not a dnnscape/1 results file (schema 'other/7')",
                       StoreError);
  CHECK_THROWS_WITH_AS((void)ResultsWriter::open(other),
                       "other_schema.h5 is not a dnnscape/1 results file (schema 'other/7')",
                       StoreError);

  const fs::path none = fresh("no_schema.h5");
  REQUIRE(run_python("import sys, h5py\nh5py.File(sys.argv[1], 'w')\n", {none.string()}) == 0);
  CHECK_THROWS_WITH_AS(ResultsReader{none},
                       "no_schema.h5 is not a dnnscape/1 results file (no 'schema' attribute)",
                       StoreError);

  CHECK_THROWS_WITH_AS(ResultsReader{"missing.h5"}, "missing.h5: no such file", StoreError);
  // HDF5's own error text reaches the message.
  CHECK_THROWS_WITH_AS((void)ResultsWriter::create("no_such_dir/x.h5", test_meta(), test_system()),
                       doctest::Contains("no_such_dir/x.h5: H5Fcreate: unable to create file"),
                       StoreError);
}

TEST_CASE("a live writer: readers in other processes follow it, a second writer is refused") {
  const fs::path path = fresh("busy.h5");
  int to_child[2];
  int to_parent[2];
  REQUIRE(pipe(to_child) == 0);
  REQUIRE(pipe(to_parent) == 0);
  ChildGuard guard{fork()};
  REQUIRE(guard.pid >= 0);
  if (guard.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char c = 'w';
    try {
      auto w = ResultsWriter::create(path, test_meta(), test_system());
      w.write(make_record(0));
      if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1) _exit(2);
      w.write(make_record(1));
      if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1) _exit(2);
    } catch (...) {
      _exit(1);
    }
    _exit(0);
  }
  char c = 'g';
  REQUIRE(read(to_parent[0], &c, 1) == 1);
  CHECK_THROWS_WITH_AS((void)ResultsWriter::open(path), doctest::Contains("another live process"),
                       StoreError);
  auto rd = std::make_optional<ResultsReader>(path);
  CHECK(rd->swmr());
  CHECK(rd->rows() == 1);
  REQUIRE(write(to_child[1], &c, 1) == 1);
  REQUIRE(read(to_parent[0], &c, 1) == 1);
  CHECK(rd->rows() == 1);  // a snapshot until refreshed
  rd->refresh();
  CHECK(rd->rows() == 2);
  CHECK(rd->read_int("batch") == std::vector<std::int64_t>{32, 33});
  CHECK(rd->read_records()[1].samples == make_record(1).samples);
  REQUIRE(write(to_child[1], &c, 1) == 1);
  int st = 0;
  waitpid(guard.pid, &st, 0);
  guard.pid = -1;
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  rd.reset();  // HDF5 refuses a writer while this process has the file open read-only
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) close(fd);

  // Two writers in one process are refused the same way.
  auto w = ResultsWriter::open(path);
  CHECK_THROWS_WITH_AS((void)ResultsWriter::open(path), doctest::Contains("another live process"),
                       StoreError);
}

TEST_CASE("kill -9 of a writer: the file reopens, keeps every visible row, and grows") {
  const fs::path path = fresh("crash.h5");
  constexpr std::int64_t kAtLeast = 200;
  ChildGuard guard{fork()};
  const pid_t child = guard.pid;
  REQUIRE(child >= 0);
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // Writes forever: new rows, and every 5th step a retry that overwrites an earlier failure.
    try {
      auto w = ResultsWriter::create(path, test_meta(), test_system());
      for (int i = 0;; ++i) {
        w.write(i % 5 == 1 ? failed_record(i, "executor crashed") : make_record(i));
        if (i % 5 == 4) w.write(make_record(i - 3));
      }
    } catch (...) {
      _exit(3);
    }
  }
  // Poll with a SWMR reader until enough rows are visible, then kill.
  std::int64_t seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::optional<ResultsReader> rd;
  while (seen < kAtLeast && std::chrono::steady_clock::now() < deadline) {
    try {
      if (!rd) rd.emplace(path);
      rd->refresh();
      seen = rd->rows();
    } catch (const StoreError&) {
      rd.reset();  // not created yet, or caught mid-creation
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(kill(child, SIGKILL) == 0);
  int st = 0;
  waitpid(child, &st, 0);
  guard.pid = -1;
  REQUIRE(WIFSIGNALED(st));
  REQUIRE(seen >= kAtLeast);
  CHECK(rd->swmr());
  rd.reset();
  MESSAGE("killed the writer after the reader saw " << seen << " rows");

  // h5py: a killed file opens with swmr=True (the superblock is still flagged open for write).
  const auto expected = std::vector<RunRecord>{make_record(0), make_record(1), make_record(2)};
  CHECK(run_python(kPandasCheck,
                   {path.string(), "swmr", join_batches(expected), "ok,ok,ok", "0.001"}) == 0);
  const int plain = run_python("import sys, h5py\nh5py.File(sys.argv[1], 'r')\n", {path.string()});
  MESSAGE("h5py.File(killed, 'r') without swmr=True exits " << plain);
  CHECK(plain != 0);  // documented: needs swmr=True until a writer reopens (or h5clear -s)

  std::int64_t rows_after_kill = 0;
  {
    auto w = ResultsWriter::open(path);
    rows_after_kill = static_cast<std::int64_t>(w.rows().size());
    CHECK(rows_after_kill >= seen);
    for (int i = 0; i < 10; ++i) w.write(make_record(100000 + i));
    CHECK(static_cast<std::int64_t>(w.rows().size()) == rows_after_kill + 10);
  }
  const ResultsReader after(path);
  REQUIRE(after.rows() == rows_after_kill + 10);
  const auto ids = after.read_string("config_id");
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == ids.size());
  const auto recs = after.read_records();
  // Every "ok" row is exactly a record the writer wrote, never a half-overwritten retry.
  std::map<std::string, int> written;
  for (int i = 0; i < 4 * rows_after_kill; ++i) written[make_record(i).config_id] = i;
  for (int i = 100000; i < 100010; ++i) written[make_record(i).config_id] = i;
  std::int64_t ok_rows = 0;
  for (const auto& r : recs) {
    CAPTURE(r.config_id);
    CHECK(r.config_id.size() == 16);
    CHECK(static_cast<std::int64_t>(r.samples.size()) >= r.metrics.reps);
    const auto it = written.find(r.config_id);
    REQUIRE(it != written.end());
    if (r.status == "ok") {
      ++ok_rows;
      check_same(r, make_record(it->second));
    } else {
      CHECK(r.status == "failed");  // a retry that the kill interrupted stays a failure
    }
  }
  CHECK(ok_rows >= rows_after_kill * 3 / 5);
  check_same(recs.back(), make_record(100009));
  // After a clean close h5py opens it without swmr=True.
  CHECK(run_python(kPandasCheck,
                   {path.string(), "plain", join_batches(expected), "ok,ok,ok", "0.001"}) == 0);
}

TEST_CASE("h5py and the documented pandas one-liner read a cleanly closed file") {
  const fs::path path = fresh("pandas.h5");
  std::vector<RunRecord> recs = {make_record(0), make_record(1), failed_record(2, "bad")};
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    for (const auto& r : recs) w.write(r);
  }
  CHECK(run_python(kPandasCheck, {path.string(), "plain", "32,33,34", "ok,ok,failed", "0.001"}) ==
        0);
  CHECK(run_python(kPandasCheck, {path.string(), "swmr", "32,33,34", "ok,ok,failed", "0.001"}) ==
        0);
  // The check can fail: a wrong expectation makes the script exit non-zero.
  CHECK(run_python(kPandasCheck, {path.string(), "plain", "32,33,99", "ok,ok,failed", "0.001"}) ==
        1);
}

TEST_CASE("appending 10,000 rows with 10 samples each") {
  const fs::path path = fresh("speed.h5");
  std::vector<RunRecord> recs;
  recs.reserve(10000);
  for (int i = 0; i < 10000; ++i) {
    RunRecord r = make_record(i);
    r.samples.assign(10, r.metrics.step_time_s);
    r.metrics.reps = 10;
    recs.push_back(std::move(r));
  }
  const auto t0 = std::chrono::steady_clock::now();
  {
    auto w = ResultsWriter::create(path, test_meta(), test_system());
    for (const auto& r : recs) w.write(r);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("wrote 10000 rows x 10 samples (+2 ops each) in "
          << s << " s, " << fs::file_size(path) / 1024 << " KiB");
  const ResultsReader rd(path);
  CHECK(rd.rows() == 10000);
  CHECK(rd.group_rows("samples") == 100000);
  CHECK(rd.read_int("batch").back() == 32 + 9999);
}
