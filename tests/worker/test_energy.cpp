// The powercap RAPL reader against fake sysfs trees: which zones count, the readings, the
// wrap-around of energy_uj, the reasons when there is nothing to read; and the executor's column.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "worker/energy.hpp"
#include "worker/executor.hpp"

using namespace dnnscape;
namespace fs = std::filesystem;

namespace {

// A scratch powercap tree, removed at the end of the test.
struct FakeTree {
  fs::path root;
  FakeTree() {
    root = fs::temp_directory_path() /
           ("dnnscape-powercap-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(root);
    fs::create_directories(root);
  }
  ~FakeTree() { fs::remove_all(root); }
  FakeTree(const FakeTree&) = delete;
  FakeTree& operator=(const FakeTree&) = delete;

  void zone(const std::string& dir, const std::string& name, double energy_uj, double range_uj) {
    fs::create_directories(root / dir);
    write(dir + "/name", name);
    write(dir + "/energy_uj", fmt(energy_uj));
    write(dir + "/max_energy_range_uj", fmt(range_uj));
  }
  void set(const std::string& dir, double energy_uj) const {
    write(dir + "/energy_uj", fmt(energy_uj));
  }
  void write(const std::string& rel, const std::string& text) const {
    std::ofstream(root / rel) << text << "\n";
  }
  static std::string fmt(double v) { return std::to_string(static_cast<unsigned long long>(v)); }
  static inline int counter = 0;
};

constexpr double kRange = 262143328850;  // a real max_energy_range_uj (2^32 * 61.035 uJ)

}  // namespace

TEST_CASE("package domains are read and summed; sub-zones, mmio and psys are not") {
  FakeTree t;
  t.zone("intel-rapl:0", "package-0", 1000000, kRange);
  t.zone("intel-rapl:0/intel-rapl:0:0", "core", 500000, kRange);
  t.zone("intel-rapl:0/intel-rapl:0:1", "dram", 700000, kRange);
  t.zone("intel-rapl:1", "package-1", 2000000, kRange);
  t.zone("intel-rapl:2", "psys", 9000000, kRange);
  t.zone("intel-rapl-mmio:0", "package-0", 1000000, kRange);
  const worker::EnergyReader r(t.root);
  REQUIRE(r.available());
  CHECK(r.source() == "powercap RAPL: package-0 (intel-rapl:0), package-1 (intel-rapl:1)");
  const auto before = r.read();
  CHECK(before == std::vector<double>{1000000, 2000000});
  t.set("intel-rapl:0", 3500000);                 // +2.5 J
  t.set("intel-rapl:1", 2250000);                 // +0.25 J
  t.set("intel-rapl:0/intel-rapl:0:0", 9999999);  // inside package-0: must not add
  const auto after = r.read();
  CHECK(r.joules_between(before, after) == doctest::Approx(2.75));
  CHECK(r.joules_between(after, after) == 0);
}

TEST_CASE("a counter that wrapped around adds max_energy_range_uj") {
  FakeTree t;
  t.zone("intel-rapl:0", "package-0", kRange - 400000, kRange);
  const worker::EnergyReader r(t.root);
  REQUIRE(r.available());
  const auto before = r.read();
  t.set("intel-rapl:0", 600000);  // 0.4 J to the top of the range, then 0.6 J after the wrap
  CHECK(r.joules_between(before, r.read()) == doctest::Approx(1.0));
  // Small range, several wrapped steps summed one by one (as the executor does per step).
  FakeTree s;
  s.zone("intel-rapl:0", "package-0", 0, 1000000);
  const worker::EnergyReader small(s.root);
  double joules = 0;
  auto prev = small.read();
  for (int i = 1; i <= 10; ++i) {
    s.set("intel-rapl:0", (i * 700000) % 1000000);  // 0.7 J per step, wrapping every other step
    const auto now = small.read();
    joules += small.joules_between(prev, now);
    prev = now;
  }
  CHECK(joules == doctest::Approx(7.0));
}

TEST_CASE("without readable counters the reader says why") {
  {
    const worker::EnergyReader r("/nonexistent/powercap");
    CHECK_FALSE(r.available());
    CHECK(r.source().rfind("none: /nonexistent/powercap does not exist", 0) == 0);
  }
  {
    FakeTree t;  // a powercap tree with only non-RAPL zones
    fs::create_directories(t.root / "dtpm");
    const worker::EnergyReader r(t.root);
    CHECK_FALSE(r.available());
    CHECK(r.source().find("no RAPL package domain") != std::string::npos);
  }
  {
    FakeTree t;  // energy_uj missing (what an unprivileged reader meets is EACCES, same path)
    t.zone("intel-rapl:0", "package-0", 1, kRange);
    t.zone("intel-rapl:1", "package-1", 1, kRange);
    fs::remove(t.root / "intel-rapl:1/energy_uj");
    const worker::EnergyReader r(t.root);
    CHECK_FALSE(r.available());  // never a partial sum over some packages
    CHECK(r.source().find("not readable: package-1 (intel-rapl:1)") != std::string::npos);
  }
  {
    FakeTree t;
    t.zone("intel-rapl:0", "package-0", 1, kRange);
    t.write("intel-rapl:0/energy_uj", "garbage");
    CHECK_FALSE(worker::EnergyReader(t.root).available());
  }
}

TEST_CASE("energy_source() reads $DNNSCAPE_POWERCAP_ROOT, else /sys/class/powercap") {
  FakeTree t;
  t.zone("intel-rapl:0", "package-0", 1, kRange);
  ::setenv("DNNSCAPE_POWERCAP_ROOT", t.root.c_str(), 1);
  CHECK(worker::energy_source() == "powercap RAPL: package-0 (intel-rapl:0)");
  ::unsetenv("DNNSCAPE_POWERCAP_ROOT");
  CHECK(worker::energy_source() == worker::energy_source("/sys/class/powercap"));
  MESSAGE("this machine: " << worker::energy_source());
}

namespace {
space::Config tiny_fc() {
  space::Config c;
  c.family = space::Family::fc;
  c.layers = 1;
  c.nodes = 16;
  c.input = 8;
  c.output = 4;
  c.batch = 4;
  c.knobs.mode = "training";
  return c;
}
worker::RunContext quick() {
  worker::RunContext ctx;
  ctx.measure.warmup_s = 0;
  ctx.measure.min_reps = 6;
  ctx.measure.max_reps = 6;
  ctx.peaks.gflops_f32 = 100;
  ctx.peaks.mem_bandwidth_gbs = 10;
  ctx.profile = false;
  return ctx;
}
}  // namespace

TEST_CASE("the executor fills energy_j from the counters, NaN where there are none") {
  {
    FakeTree t;  // counters that do not move: 0 J per step, but a number
    t.zone("intel-rapl:0", "package-0", 5, kRange);
    ::setenv("DNNSCAPE_POWERCAP_ROOT", t.root.c_str(), 1);
    const auto r = worker::run_config(tiny_fc(), quick());
    ::unsetenv("DNNSCAPE_POWERCAP_ROOT");
    REQUIRE(r.status == store::status::ok);
    CHECK(r.metrics.energy_j == 0);
  }
  {
    ::setenv("DNNSCAPE_POWERCAP_ROOT", "/nonexistent/powercap", 1);
    const auto r = worker::run_config(tiny_fc(), quick());
    ::unsetenv("DNNSCAPE_POWERCAP_ROOT");
    REQUIRE(r.status == store::status::ok);
    CHECK(std::isnan(r.metrics.energy_j));
  }
}

TEST_CASE("inference asks for 100 reps; fewer (time-bounded) says p99 is an interpolation") {
  auto c = tiny_fc();
  c.knobs.mode = "inference";
  auto ctx = quick();
  ctx.measure.max_time_s = 30;
  auto r = worker::run_config(c, ctx);
  REQUIRE(r.status == store::status::ok);
  CHECK(r.metrics.reps >= worker::kLatencyReps);
  CHECK(r.message.find("interpolation") == std::string::npos);
  CHECK(r.metrics.latency_p50_s <= r.metrics.latency_p99_s);
  ctx.measure.max_time_s = 0;  // stops after 2 reps
  r = worker::run_config(c, ctx);
  REQUIRE(r.status == store::status::ok);
  CHECK(r.metrics.reps < worker::kLatencyReps);
  CHECK(r.message.find("latency_p99_s from " + std::to_string(r.metrics.reps) +
                       " reps (< 100, max_time_s reached): an interpolation") != std::string::npos);
}
