// roofline: ceilings from /system, memory- vs compute-bound shares of configs and op time.
#include <doctest/doctest.h>

#include <filesystem>

#include "analysis/roofline.hpp"
#include "analysis/synth.hpp"

namespace fs = std::filesystem;
using namespace dnnscape::analysis;

TEST_CASE("ridge point, bound shares and the 1% op filter") {
  // Peak 300 GFLOP/s, 20 GB/s: ridge at 15 FLOP/byte.
  std::vector<dnnscape::store::RunRecord> rows;
  for (int i = 0; i < 10; ++i) {
    auto r = synth::fc(4, 64 << (i % 5), 2000, 200, 64 << (i / 5), 1e-3);
    r.metrics.arithmetic_intensity = i < 4 ? 5.0 : 50.0;  // 4 memory-bound, 6 compute-bound
    r.metrics.gflops = i < 4 ? 90.0 : 250.0;
    // Ops: a memory-bound eltwise (30% of the time), a compute-bound matmul (69.5%) and a tiny
    // reorder (0.5%) that the 1% filter drops.
    r.ops = {{0, "eltwise", "forward", 0.30e-3, 0.3e6, 0.3e6, "jit"},
             {0, "matmul", "forward", 0.695e-3, 100e6, 1e6, "brg"},
             {0, "reorder", "forward", 0.005e-3, 1e3, 1e3, "simple"}};
    rows.push_back(r);
  }
  synth::write("roof.h5", rows, synth::system_info("alpha", 300, 20));
  RooflineOptions o;
  o.inputs = {"roof.h5"};
  o.out_dir = "roof_out";
  const auto r = roofline(o);
  REQUIRE(r.rooflines.size() == 1);
  const auto& rl = r.rooflines[0];
  CHECK(rl.ridge_f32 == doctest::Approx(15.0));
  CHECK(rl.configs == 10);
  CHECK(rl.configs_memory_bound == 4);
  CHECK(rl.best_gflops == doctest::Approx(250.0));
  CHECK(rl.ops == 20);
  CHECK(rl.ops_left_out == 10);
  CHECK(rl.op_time_memory_bound_s == doctest::Approx(10 * 0.30e-3));
  CHECK(r.finding.find("4 of 10 configs (40.0%) are memory-bound") != std::string::npos);
  // 0.30 / (0.30 + 0.695) of the kept op time.
  CHECK(r.finding.find("30.2% is memory-bound") != std::string::npos);
  CHECK(r.finding.find("Above 100%") == std::string::npos);  // 250 of 300 GFLOP/s
  CHECK(fs::exists("roof_out/roofline.svg"));
  CHECK(fs::exists("roof_out/roofline.png"));
  CHECK(fs::exists("roof_out/roofline_summary.csv"));
  CHECK(fs::exists("roof_out/roofline_configs.csv"));

  o.where = "nodes >= 256";
  const auto r2 = roofline(o);
  CHECK(r2.rooflines[0].configs == 6);
  o.color = "planet";
  CHECK_THROWS_AS(roofline(o), InputError);
}

TEST_CASE("a file without measured ceilings is refused with a clear message") {
  auto sys = synth::system_info("beta");
  sys.mem_bandwidth_gbs = dnnscape::store::kNaN;
  synth::write("noroof.h5", {synth::fc(4, 64, 2000, 200, 64, 1e-3)}, sys);
  RooflineOptions o;
  o.inputs = {"noroof.h5"};
  CHECK_THROWS_WITH_AS(roofline(o),
                       doctest::Contains("no measured peak_gflops_f32 and mem_bandwidth_gbs"),
                       InputError);
}

TEST_CASE("a config above the f32 peak gets the FLOP convention's explanation") {
  // ParaDnn's count includes layer 0's backward-data pass, which training does not execute:
  // a wide-input FC model legitimately shows more model GFLOP/s than the peak kernel.
  auto r = synth::fc(1, 256, 2000, 200, 512, 1e-3);
  r.metrics.arithmetic_intensity = 50.0;
  r.metrics.gflops = 330.0;
  synth::write("roof_over.h5", {r}, synth::system_info("gamma", 300, 20));
  RooflineOptions o;
  o.inputs = {"roof_over.h5"};
  o.out_dir = "roof_over_out";
  const auto res = roofline(o);
  CHECK(res.finding.find("(110% of the f32 peak). Above 100%: gflops counts ParaDnn's model "
                         "FLOPs") != std::string::npos);
}
