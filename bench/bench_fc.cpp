// FC training step on oneDNN against two ceilings measured in the same run: a large oneDNN f32
// matmul (the "GEMM roof") and, when available, the FMA-kernel peak of worker/peak.hpp.
// Prints both algorithms (inner_product, matmul); the faster one is the fc "default".
//   bench_fc [layers nodes input output batch] [--reps N]
#include <fmt/format.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "worker/families.hpp"
#include "worker/fc.hpp"
#include "worker/peak.hpp"

using namespace dnnscape;
using clock_type = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// An n^3 f32 matmul with plain row-major operands: the "GEMM roof" the FC step is compared with.
struct GemmRoof {
  explicit GemmRoof(dnnl::memory::dim size) : n(size) {
    using dnnl::memory;
    const memory::desc md({n, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(md, md, md), eng);
    impl = pd.impl_info_str();
    a = memory(md, eng);
    b = memory(md, eng);
    c = memory(md, eng);
    std::fill_n(static_cast<float*>(a.get_data_handle()), n * n, 0.5F);
    std::fill_n(static_cast<float*>(b.get_data_handle()), n * n, 0.25F);
    mm = dnnl::matmul(pd);
  }
  void run() {
    mm.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    s.wait();
  }
  [[nodiscard]] double flops() const { return 2.0 * std::pow(static_cast<double>(n), 3); }

  dnnl::memory::dim n;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream s{eng};
  dnnl::memory a, b, c;
  dnnl::matmul mm;
  std::string impl;
};

double time_once(const std::function<void()>& f) {
  const auto t0 = clock_type::now();
  f();
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  space::Config c;
  c.family = space::Family::fc;
  c.layers = 4;
  c.nodes = 4096;
  c.input = 2000;
  c.output = 1000;
  c.batch = 1024;
  int reps = 7;
  std::vector<std::int64_t> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else {
      positional.push_back(std::atoll(argv[i]));
    }
  }
  if (positional.size() == 5) {
    c.layers = positional[0];
    c.nodes = positional[1];
    c.input = positional[2];
    c.output = positional[3];
    c.batch = positional[4];
  }
  const int threads = omp_get_max_threads();
  fmt::print("fc bench: {} | {} threads | {} reps per measurement (median)\n", c.label(), threads,
             reps);

  // Measured in this run, side by side with the steps, never taken from a cache of another day.
  const auto peaks = worker::measure_peaks();
  GemmRoof roof(2048);

  // The machine is shared: every round times the roof and one step of each algorithm back to back,
  // so load changes hit all three alike; medians over the rounds.
  const std::vector<std::string> algs{"inner_product", "matmul"};
  std::vector<std::unique_ptr<worker::FcModel>> models;
  for (const auto& alg : algs) {
    c.knobs.algorithm = alg;
    models.push_back(std::make_unique<worker::FcModel>(c, 42));
    models.back()->step();  // warm-up
  }
  roof.run();
  std::vector<double> t_roof;
  std::vector<std::vector<double>> t_step(algs.size());
  for (int r = 0; r < reps; ++r) {
    t_roof.push_back(time_once([&] { roof.run(); }));
    for (std::size_t a = 0; a < algs.size(); ++a) {
      t_step[a].push_back(time_once([&] { models[a]->step(); }));
    }
  }
  const double roof_gflops = roof.flops() / median(t_roof) / 1e9;
  fmt::print("GEMM roof (2048^3 f32 matmul, {}): {:.1f} GFLOP/s\n", roof.impl, roof_gflops);
  fmt::print(
      "FMA peak (worker/peak.hpp, {}, {} threads, measured in this run {}): {:.1f} GFLOP/s; "
      "GEMM roof / FMA peak {:.3f}\n",
      peaks.kernel, peaks.threads, peaks.measured_utc, peaks.gflops_f32,
      roof_gflops / peaks.gflops_f32);

  std::map<std::string, double> gflops;
  for (std::size_t a = 0; a < algs.size(); ++a) {
    const auto& alg = algs[a];
    auto& model = *models[a];
    c.knobs.algorithm = alg;
    const auto& counts = model.counts();
    const auto predicted = worker::fc_counts(c);
    const double t = median(t_step[a]);
    const double g = counts.flops / t / 1e9;
    gflops[alg] = g;
    const auto ops = model.profile_step();
    double ops_sum = 0;
    std::map<std::string, double> by_kind;
    std::map<std::string, std::string> impl_of;
    for (const auto& o : ops) impl_of[o.op + "/" + o.phase] = o.impl;
    for (const auto& o : ops) {
      ops_sum += o.time_s;
      by_kind[o.op + "/" + o.phase] += o.time_s;
    }
    fmt::print(
        "\n{:<14} step {:.4f} s (min {:.4f}) | {:.1f} GFLOP/s | / GEMM roof {:.3f} | "
        "/ FMA peak {:.3f} | impl {} | loss {:.4f}\n",
        alg, t, *std::min_element(t_step[a].begin(), t_step[a].end()), g, g / roof_gflops,
        g / peaks.gflops_f32, model.impl(), model.last_loss());
    fmt::print(
        "  flops {:.4g} (analytic {:.4g}), bytes {:.4g} (analytic {:.4g}), memory {:.1f} MiB "
        "(analytic {:.1f} MiB), profiled ops / step time {:.3f}\n",
        counts.flops, predicted.flops, counts.bytes, predicted.bytes,
        counts.memory_bytes / 1048576.0, predicted.memory_bytes / 1048576.0, ops_sum / t);
    for (const auto& [kind, s] : by_kind) {
      fmt::print("  {:<32} {:8.4f} s {:5.1f}%  {}\n", kind, s, 100.0 * s / ops_sum, impl_of[kind]);
    }
    for (const auto& o : ops) {
      if (o.flops > 0) {
        fmt::print("  layer {} {:<13} {:<16} {:7.4f} s {:6.1f} GFLOP/s {}\n", o.layer, o.op,
                   o.phase, o.time_s, o.flops / o.time_s / 1e9, o.impl);
      }
    }
  }
  const bool ip_wins = gflops["inner_product"] >= gflops["matmul"];
  fmt::print("\nfaster: {} ({:.3f}x the other); fc default is {}\n",
             ip_wins ? "inner_product" : "matmul",
             ip_wins ? gflops["inner_product"] / gflops["matmul"]
                     : gflops["matmul"] / gflops["inner_product"],
             worker::kFcDefaultAlgorithm);
  return 0;
}
