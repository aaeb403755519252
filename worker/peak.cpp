#include "worker/peak.hpp"

#include <fmt/format.h>
#include <immintrin.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "worker/sysinfo.hpp"

namespace dnnscape::worker {
namespace {

using clock_type = std::chrono::steady_clock;

// Enough independent accumulator chains to hide FMA latency (4-5 cycles) at 2 FMAs per cycle,
// while leaving registers for the operands: 24 of the 32 zmm registers.
constexpr int kChains = 24;
constexpr long kInner = 1 << 14;

// The sum of a vector's lanes, through memory: _mm512_reduce_add_ps trips GCC 12's
// -Wuninitialized inside its own header (PR 105593), and this runs once per kernel call.
__attribute__((target("avx512f"))) double sum_lanes(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  double s = 0;
  for (float x : lanes) s += static_cast<double>(x);
  return s;
}

__attribute__((target("avx512f"))) double fma_kernel_avx512(long outer) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(0.001F * static_cast<float>(j));
  const __m512 a = _mm512_set1_ps(0.999999F);
  const __m512 b = _mm512_set1_ps(1e-7F);
  for (long o = 0; o < outer; ++o) {
    for (long i = 0; i < kInner; ++i) {
#pragma GCC unroll 24
      for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
    }
  }
  __m512 s = acc[0];
  for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, acc[j]);
  return sum_lanes(s);
}

// bf16 dot products: each vdpbf16ps does 32 multiply-adds into 16 f32 lanes = 64 FLOP.
__attribute__((target("avx512f,avx512bf16"))) double bf16_kernel_avx512(long outer) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(0.0F);
  const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3f80));  // 1.0 in bf16
  const __m512bh b = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3380));  // ~6e-8
  for (long o = 0; o < outer; ++o) {
    for (long i = 0; i < kInner; ++i) {
#pragma GCC unroll 24
      for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
    }
  }
  __m512 s = acc[0];
  for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, acc[j]);
  return sum_lanes(s);
}

// AVX2 fallback: 12 chains of 8 lanes.
__attribute__((target("avx2,fma"))) double fma_kernel_avx2(long outer) {
  constexpr int chains = 12;
  __m256 acc[chains];
  for (int j = 0; j < chains; ++j) acc[j] = _mm256_set1_ps(0.001F * static_cast<float>(j));
  const __m256 a = _mm256_set1_ps(0.999999F);
  const __m256 b = _mm256_set1_ps(1e-7F);
  for (long o = 0; o < outer; ++o) {
    for (long i = 0; i < kInner * 2; ++i) {
#pragma GCC unroll 12
      for (int j = 0; j < chains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
    }
  }
  __m256 s = acc[0];
  for (int j = 1; j < chains; ++j) s = _mm256_add_ps(s, acc[j]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return static_cast<double>(out[0]);
}

struct Kernel {
  double (*fn)(long);
  double flops_per_outer;
  std::string name;
};

Kernel f32_kernel() {
  if (__builtin_cpu_supports("avx512f")) {
    return {fma_kernel_avx512, 2.0 * 16 * kChains * kInner, fmt::format("avx512 fma x{}", kChains)};
  }
  return {fma_kernel_avx2, 2.0 * 8 * 12 * kInner * 2, "avx2 fma x12"};
}

// Runs `k` on `threads` threads at once (started together by a barrier) for about `seconds`;
// returns GFLOP/s of all threads together.
double run_parallel(const Kernel& k, int threads, double seconds) {
  // Calibrate the outer count on one thread so a trial lasts about `seconds`.
  long outer = 1;
  for (;;) {
    const auto t0 = clock_type::now();
    volatile double sink = k.fn(outer);
    (void)sink;
    const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (dt > 0.02) {
      outer = std::max<long>(1, static_cast<long>(static_cast<double>(outer) * seconds / dt));
      break;
    }
    outer *= 4;
  }
  std::barrier sync(threads);
  std::vector<double> elapsed(static_cast<std::size_t>(threads));
  std::vector<std::jthread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      sync.arrive_and_wait();
      const auto t0 = clock_type::now();
      volatile double sink = k.fn(outer);
      (void)sink;
      elapsed[static_cast<std::size_t>(t)] =
          std::chrono::duration<double>(clock_type::now() - t0).count();
    });
  }
  pool.clear();
  const double slowest = *std::max_element(elapsed.begin(), elapsed.end());
  return k.flops_per_outer * static_cast<double>(outer) * threads / slowest / 1e9;
}

// STREAM triad a = b + s*c over arrays far larger than the last-level cache, first-touched and
// processed by the same threads in static blocks.
double triad_gbs(int threads, std::size_t elements, int trials) {
  std::unique_ptr<double[]> a(new double[elements]);
  std::unique_ptr<double[]> b(new double[elements]);
  std::unique_ptr<double[]> c(new double[elements]);
  const std::size_t block =
      (elements + static_cast<std::size_t>(threads) - 1) / static_cast<std::size_t>(threads);
  auto for_blocks = [&](auto&& body) {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) {
      const std::size_t lo = std::min(elements, static_cast<std::size_t>(t) * block);
      const std::size_t hi = std::min(elements, lo + block);
      pool.emplace_back([&body, lo, hi] { body(lo, hi); });
    }
  };
  for_blocks([&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      a[i] = 0.0;
      b[i] = 1.0;
      c[i] = 2.0;
    }
  });
  double best = 0;
  const double scalar = 3.0;
  for (int trial = 0; trial < trials; ++trial) {
    const auto t0 = clock_type::now();
    for_blocks([&](std::size_t lo, std::size_t hi) {
      double* __restrict pa = a.get();
      const double* __restrict pb = b.get();
      const double* __restrict pc = c.get();
      for (std::size_t i = lo; i < hi; ++i) pa[i] = pb[i] + scalar * pc[i];
    });
    const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
    best = std::max(best, 24.0 * static_cast<double>(elements) / dt / 1e9);
  }
  return best;
}

nlohmann::json to_json(const Peaks& p) {
  return {{"gflops_f32", p.gflops_f32},
          {"gflops_f32_1core", p.gflops_f32_1core},
          {"gflops_bf16", p.gflops_bf16},
          {"mem_bandwidth_gbs", p.mem_bandwidth_gbs},
          {"threads", p.threads},
          {"kernel", p.kernel},
          {"host", p.host},
          {"cpu_model", p.cpu_model},
          {"measured_utc", p.measured_utc}};
}

}  // namespace

Peaks measure_peaks(int trials) {
  Peaks p;
  p.threads = available_cpus();
  p.host = hostname();
  p.cpu_model = cpu_model();
  const Kernel f32 = f32_kernel();
  p.kernel = f32.name;
  for (int t = 0; t < trials; ++t) {
    p.gflops_f32_1core = std::max(p.gflops_f32_1core, run_parallel(f32, 1, 0.1));
    p.gflops_f32 = std::max(p.gflops_f32, run_parallel(f32, p.threads, 0.1));
  }
  if (cpu_has_bf16()) {
    const Kernel bf16{bf16_kernel_avx512, 2.0 * 32 * kChains * kInner, "avx512_bf16 dpbf16ps"};
    for (int t = 0; t < trials; ++t)
      p.gflops_bf16 = std::max(p.gflops_bf16, run_parallel(bf16, p.threads, 0.1));
  }
  // 3 arrays x 64 Mi doubles = 1.5 GiB: far above any last-level cache of today.
  p.mem_bandwidth_gbs = triad_gbs(p.threads, std::size_t{64} << 20, trials);
  p.measured_utc = utc_now_iso();
  return p;
}

std::filesystem::path peak_cache_path() {
  if (const char* f = std::getenv("DNNSCAPE_PEAK_CACHE"); f != nullptr && *f != '\0') return f;
  std::filesystem::path dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    dir = x;
  } else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    dir = std::filesystem::path(h) / ".cache";
  } else {
    dir = std::filesystem::temp_directory_path();
  }
  return dir / "dnnscape" / fmt::format("peaks-{}.json", hostname());
}

std::optional<Peaks> load_cached_peaks() {
  std::ifstream in(peak_cache_path());
  if (!in) return std::nullopt;
  try {
    const auto j = nlohmann::json::parse(in);
    Peaks p;
    p.gflops_f32 = j.at("gflops_f32").get<double>();
    p.gflops_f32_1core = j.at("gflops_f32_1core").get<double>();
    p.gflops_bf16 = j.at("gflops_bf16").get<double>();
    p.mem_bandwidth_gbs = j.at("mem_bandwidth_gbs").get<double>();
    p.threads = j.at("threads").get<int>();
    p.kernel = j.at("kernel").get<std::string>();
    p.host = j.at("host").get<std::string>();
    p.cpu_model = j.at("cpu_model").get<std::string>();
    p.measured_utc = j.at("measured_utc").get<std::string>();
    // A cache from another CPU or another affinity mask does not describe this process.
    if (p.host != hostname() || p.cpu_model != cpu_model() || p.threads != available_cpus()) {
      return std::nullopt;
    }
    return p;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void save_cached_peaks(const Peaks& p) {
  const auto path = peak_cache_path();
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << to_json(p).dump(2) << '\n';
    if (!out) return;  // a cache that cannot be written only costs a re-measurement
  }
  std::filesystem::rename(tmp, path, ec);
}

Peaks cached_or_measured_peaks(bool force_measure) {
  if (!force_measure) {
    if (auto p = load_cached_peaks()) return *p;
  }
  Peaks p = measure_peaks();
  save_cached_peaks(p);
  return p;
}

}  // namespace dnnscape::worker
