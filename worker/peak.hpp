// Measured ceilings of this machine: peak FLOP/s (FMA kernel) and memory bandwidth (triad).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace dnnscape::worker {

struct Peaks {
  double gflops_f32 = 0;         // all cores
  double gflops_f32_1core = 0;   // one core
  double gflops_bf16 = 0;        // all cores; 0 when the CPU has no bf16 dot-product instructions
  double mem_bandwidth_gbs = 0;  // STREAM triad convention: 24 bytes per element
  int threads = 0;
  std::string kernel;  // which FMA kernel ran, e.g. "avx512 fma x24"
  std::string host;
  std::string cpu_model;
  std::string measured_utc;
};

// Best of `trials` trials of each kernel. Threads: all CPUs of the process's affinity mask.
Peaks measure_peaks(int trials = 5);

// Per-host cache file: $XDG_CACHE_HOME/dnnscape/peaks-HOST.json (or ~/.cache/...), overridable by
// the DNNSCAPE_PEAK_CACHE environment variable (a file path).
std::filesystem::path peak_cache_path();
std::optional<Peaks> load_cached_peaks();
void save_cached_peaks(const Peaks& p);
// Cached peaks when present for this host and CPU, otherwise measured and cached.
Peaks cached_or_measured_peaks(bool force_measure = false);

}  // namespace dnnscape::worker
