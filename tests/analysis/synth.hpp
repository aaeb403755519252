// Synthetic results files for the analysis tests, written through the real ResultsWriter.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "store/results.hpp"

namespace synth {

using dnnscape::store::RunRecord;

inline dnnscape::store::SystemInfo system_info(const std::string& host, double peak_gflops = 300,
                                               double bw_gbs = 20) {
  dnnscape::store::SystemInfo s;
  s.hostname = host;
  s.cpu_model = "Synthetic CPU " + host;
  s.logical_cpus = 2;
  s.onednn_version = "2.6.3";
  s.onednn_isa = "avx512_core";
  s.peak_gflops_f32 = peak_gflops;
  s.peak_gflops_f32_1core = peak_gflops / 2;
  s.peak_gflops_bf16 = 2 * peak_gflops;
  s.mem_bandwidth_gbs = bw_gbs;
  s.energy_source = "none";
  return s;
}

// An FC config with metrics derived from a step time (ParaDnn FLOP convention, 6 * B * params).
inline RunRecord fc(std::int64_t layers, std::int64_t nodes, std::int64_t input,
                    std::int64_t output, std::int64_t batch, double step_time_s,
                    double peak_gflops = 300, const std::string& dtype = "f32",
                    double ci_rel = 0.01) {
  RunRecord r;
  r.config.family = dnnscape::space::Family::fc;
  r.config.layers = layers;
  r.config.nodes = nodes;
  r.config.input = input;
  r.config.output = output;
  r.config.batch = batch;
  r.config.knobs.dtype = dtype;
  r.config_id = r.config.config_id();
  const double params = static_cast<double>(input * nodes + (layers - 1) * nodes * nodes +
                                            nodes * output + layers * nodes + output);
  auto& m = r.metrics;
  m.step_time_s = step_time_s;
  m.step_time_ci_low_s = step_time_s * (1 - ci_rel);
  m.step_time_ci_high_s = step_time_s * (1 + ci_rel);
  m.step_time_cv = ci_rel;
  m.examples_per_s = static_cast<double>(batch) / step_time_s;
  m.params = params;
  m.flops = 6 * static_cast<double>(batch) * params;
  m.gflops = m.flops / step_time_s / 1e9;
  m.flops_utilization = m.gflops / peak_gflops;
  m.bytes = 4 * (3 * params + 4 * static_cast<double>(batch) * static_cast<double>(nodes * layers));
  m.arithmetic_intensity = m.flops / m.bytes;
  m.memory_bytes = m.bytes;
  m.reps = 9;
  r.samples.assign(9, step_time_s);
  r.provenance.host = "synthetic";
  r.provenance.finished_utc = "2026-01-01T00:00:00Z";
  return r;
}

inline void write(const std::filesystem::path& path, const std::vector<RunRecord>& rows,
                  const dnnscape::store::SystemInfo& sys, const std::string& spec = "synthetic") {
  std::filesystem::remove(path);
  dnnscape::store::FileMeta meta;
  meta.tool_version = "test";
  meta.spec_name = spec;
  meta.spec_sha256.assign(1, '0');  // not = "0": a GCC 12 -Wrestrict false positive (PR 105651)
  meta.spec_yaml = "name: " + spec + "\n";
  meta.created_utc = "2026-01-01T00:00:00Z";
  auto w = dnnscape::store::ResultsWriter::create(path, meta, sys);
  for (const auto& r : rows) w.write(r);
}

// Calls f(layers, nodes, batch) over a small FC grid.
inline void fc_grid(const std::function<void(std::int64_t, std::int64_t, std::int64_t)>& f) {
  for (std::int64_t layers : {4, 8, 16, 32})
    for (std::int64_t nodes : {64, 128, 256, 512, 1024})
      for (std::int64_t batch : {64, 128, 256, 512, 1024, 2048}) f(layers, nodes, batch);
}

}  // namespace synth
