// The dtype knob: bf16 FC against f32 measured side by side, utilization against the bf16 peak,
// and the skipped row (with its reason) on a CPU without bf16.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <omp.h>

#include "worker/executor.hpp"
#include "worker/families.hpp"
#include "worker/fc.hpp"
#include "worker/sysinfo.hpp"

using namespace dnnscape;

namespace {

space::Config fc(const std::string& dtype, std::int64_t layers, std::int64_t nodes,
                 std::int64_t input, std::int64_t output, std::int64_t batch) {
  space::Config c;
  c.family = space::Family::fc;
  c.layers = layers;
  c.nodes = nodes;
  c.input = input;
  c.output = output;
  c.batch = batch;
  c.knobs.mode = "training";
  c.knobs.dtype = dtype;
  return c;
}

space::Config rnn(const std::string& dtype, std::string cell = "lstm", std::int64_t layers = 1,
                  std::int64_t embedding = 32, std::int64_t length = 4, std::int64_t vocab = 50,
                  std::int64_t batch = 8) {
  space::Config c;
  c.family = space::Family::rnn;
  c.cell = std::move(cell);
  c.layers = layers;
  c.embedding = embedding;
  c.length = length;
  c.vocab = vocab;
  c.batch = batch;
  c.knobs.mode = "training";
  c.knobs.dtype = dtype;
  return c;
}

space::Config cnn(const std::string& dtype, std::int64_t filters = 16, std::int64_t image = 32,
                  std::int64_t batch = 4, std::string block_fn = "residual") {
  space::Config c;
  c.family = space::Family::cnn;
  c.block_fn = std::move(block_fn);
  c.filters = filters;
  c.blocks = 1;
  c.image = image;
  c.output = 10;
  c.batch = batch;
  c.knobs.mode = "training";
  c.knobs.dtype = dtype;
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

worker::RunContext quick_context() {
  worker::RunContext ctx;
  ctx.measure.warmup_s = 0;
  ctx.measure.min_reps = 6;
  ctx.measure.max_reps = 6;
  ctx.measure.max_time_s = 5;
  ctx.peaks.gflops_f32 = 100;
  ctx.peaks.gflops_bf16 = 400;
  ctx.peaks.mem_bandwidth_gbs = 10;
  ctx.profile = true;
  return ctx;
}

}  // namespace

TEST_CASE("bf16 FC training reaches a higher GFLOP/s than f32 on a large config, side by side") {
  if (!worker::cpu_has_bf16()) return;
  // Large enough that the GEMMs dominate (the element-wise ops and the bf16 copies are < 5%).
  const auto cf = fc("f32", 2, 2048, 2000, 1000, 512);
  const auto cb = fc("bf16", 2, 2048, 2000, 1000, 512);
  worker::FcModel f32(cf, 1);
  worker::FcModel bf16(cb, 1);
  REQUIRE(f32.counts().flops == bf16.counts().flops);
  f32.step();
  bf16.step();
  // Alternate the two so the load of the shared machine hits both alike; compare medians.
  std::vector<double> tf, tb;
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < 9; ++i) {
    auto t0 = clock::now();
    f32.step();
    tf.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    t0 = clock::now();
    bf16.step();
    tb.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  const double gf = f32.counts().flops / median(tf) / 1e9;
  const double gb = bf16.counts().flops / median(tb) / 1e9;
  MESSAGE(
      fmt::format("fc training layers 2 nodes 2048 input 2000 output 1000 batch 512: "
                  "f32 {:.1f} GFLOP/s ({}), bf16 {:.1f} GFLOP/s ({}), bf16/f32 {:.2f}",
                  gf, f32.impl(), gb, bf16.impl(), gb / gf));
  CHECK(bf16.impl().find("bf16") != std::string::npos);
  CHECK(gb > gf);
}

// Not part of the suite: the CNN and RNN figures of docs/knobs.md ("dtype").
//   worker_test_dtype -tc='bench*' --no-skip   (DNNSCAPE_BENCH_THREADS, default 2)
// Fresh f32 and bf16 models of the same config, two warm-up steps each, then PAIRS interleaved
// steps (alternating which goes first); GFLOP/s from the medians.
TEST_CASE("bench: bf16 vs f32 GFLOP/s on a CNN and an RNN config, side by side" * doctest::skip()) {
  if (!worker::cpu_has_bf16()) return;
  const char* th = std::getenv("DNNSCAPE_BENCH_THREADS");
  const int threads = th != nullptr ? std::atoi(th) : 2;
  std::vector<space::Config> configs;
  for (const std::string mode : {"training", "inference"}) {
    space::Config c = cnn("f32", 32, 112, 16);
    c.output = 1000;
    c.knobs.mode = mode;
    configs.push_back(c);
    space::Config r = rnn("f32", "lstm", 1, 512, 50, 1000, 64);
    r.knobs.mode = mode;
    configs.push_back(r);
    r.cell = "gru";
    configs.push_back(r);
  }
  for (auto cf : configs) {
    cf.knobs.threads = threads;
    space::Config cb = cf;
    cb.knobs.dtype = "bf16";
    omp_set_num_threads(threads);
    auto f = worker::build_model(cf, 1);
    auto b = worker::build_model(cb, 1);
    for (int i = 0; i < 2; ++i) {
      f->step();
      b->step();
    }
    std::vector<double> tf, tb;
    using clock = std::chrono::steady_clock;
    const auto timed = [](worker::Model& m) {
      const auto t0 = clock::now();
      m.step();
      return std::chrono::duration<double>(clock::now() - t0).count();
    };
    for (int i = 0; i < 11; ++i) {
      if (i % 2 == 0) {
        tf.push_back(timed(*f));
        tb.push_back(timed(*b));
      } else {
        tb.push_back(timed(*b));
        tf.push_back(timed(*f));
      }
    }
    const double gf = f->counts().flops / median(tf) / 1e9;
    const double gb = b->counts().flops / median(tb) / 1e9;
    MESSAGE(
        fmt::format("{} threads {}: f32 {:.1f} GFLOP/s ({:.2f} ms, {}), bf16 {:.1f} GFLOP/s "
                    "({:.2f} ms, {}), bf16/f32 {:.2f}",
                    cf.label(), threads, gf, median(tf) * 1e3, f->impl(), gb, median(tb) * 1e3,
                    b->impl(), gb / gf));
  }
}

TEST_CASE("a bf16 row's utilization is computed against the bf16 peak") {
  if (!worker::cpu_has_bf16()) return;
  const auto ctx = quick_context();
  const auto r = worker::run_config(fc("bf16", 1, 64, 32, 16, 32), ctx);
  REQUIRE(r.status == store::status::ok);
  CHECK(r.metrics.flops_utilization ==
        doctest::Approx(r.metrics.gflops / ctx.peaks.gflops_bf16).epsilon(1e-12));
  const auto f = worker::run_config(fc("f32", 1, 64, 32, 16, 32), ctx);
  REQUIRE(f.status == store::status::ok);
  CHECK(f.metrics.flops_utilization ==
        doctest::Approx(f.metrics.gflops / ctx.peaks.gflops_f32).epsilon(1e-12));
  bool copy_op = false;
  for (const auto& op : r.ops) copy_op = copy_op || (op.op == "reorder" && op.phase == "update");
  CHECK(copy_op);  // the f32 master -> bf16 copy of every layer is timed in /ops
}

TEST_CASE("without bf16 in the CPU a bf16 row is skipped with the reason") {
  for (const auto& c : {fc("bf16", 1, 64, 32, 16, 32), rnn("bf16"), cnn("bf16")}) {
    CAPTURE(c.label());
    ::setenv("DNNSCAPE_ASSUME_NO_BF16", "1", 1);
    const auto r = worker::run_config(c, quick_context());
    ::unsetenv("DNNSCAPE_ASSUME_NO_BF16");
    CHECK(r.status == store::status::skipped);
    CHECK(r.message == "bf16 needs avx512_core_bf16 or AMX, which this CPU does not have");
    CHECK(r.samples.empty());
    space::Config capped = c;
    capped.knobs.isa_cap = "avx2";
    const auto a = worker::run_config(capped, quick_context());
    CHECK(a.status == store::status::skipped);
    CHECK(a.message.find("isa_cap avx2 excludes them") != std::string::npos);
  }
}
