// The plain record of one measured (or skipped/failed) config: one row of /runs plus its samples
// and op profile. Everything that measures fills it; every sink (HDF5, console, JSON) reads it.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "space/config.hpp"

namespace dnnscape::store {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr const char* kSchema = "dnnscape/1";

// Status values of the `status` column.
namespace status {
inline constexpr const char* ok = "ok";
inline constexpr const char* skipped = "skipped";
inline constexpr const char* failed = "failed";
inline constexpr const char* crashed = "crashed";
inline constexpr const char* timeout = "timeout";
}  // namespace status

// One timed primitive execution of the profiled pass (group /ops).
struct OpRecord {
  std::int64_t layer = -1;
  std::string op;     // matmul, inner_product, convolution, eltwise, softmax, reorder, update, ...
  std::string phase;  // forward | backward_data | backward_weights | update
  double time_s = kNaN;
  double flops = 0;
  double bytes = 0;
  std::string impl;  // oneDNN implementation string, e.g. brg:avx512_core
};

struct Metrics {
  double step_time_s = kNaN;  // median over timed repetitions
  double step_time_ci_low_s = kNaN;
  double step_time_ci_high_s = kNaN;
  double step_time_cv = kNaN;
  double examples_per_s = kNaN;
  double flops = kNaN;  // model FLOPs per step (ParaDnn convention, docs/conventions.md)
  double gflops = kNaN;
  double flops_utilization = kNaN;
  double bytes = kNaN;  // compulsory traffic per step, summed over executed primitives
  double arithmetic_intensity = kNaN;
  double params = kNaN;
  double memory_bytes = kNaN;      // measured (ok rows) or predicted (skipped rows) footprint
  double predicted_time_s = kNaN;  // cost model: max(flops / peak, bytes / bandwidth)
  double ops_time_ratio = kNaN;    // sum of profiled op times / step time
  double latency_p50_s = kNaN;
  double latency_p90_s = kNaN;
  double latency_p99_s = kNaN;
  double energy_j = kNaN;
  // Seconds the executor spent on the config: model build, warm-up, timed repetitions and the
  // profiled pass (what measuring it cost, for cost-aware sampling and for planning).
  double wall_s = kNaN;
  std::int64_t reps = 0;
};

struct Provenance {
  std::string host;
  std::int64_t rank = 0;
  std::string cores;                 // CPU list the executor was pinned to ("" = not pinned)
  std::int64_t workers_on_host = 1;  // co-located workers sharing this host's memory bandwidth
  std::string effective_isa;         // what oneDNN reports it dispatched to
  std::string finished_utc;          // ISO 8601, e.g. 2026-11-28T12:00:00Z
};

struct RunRecord {
  space::Config config;
  std::string config_id;  // config.config_id(), cached
  std::string status = status::ok;
  std::string message;
  Metrics metrics;
  Provenance provenance;
  std::vector<double> samples;  // every timed repetition, seconds
  std::vector<OpRecord> ops;
};

// Context block of a results file (/system attributes).
struct SystemInfo {
  std::string hostname;
  std::string cpu_model;
  std::int64_t logical_cpus = 0;
  std::string onednn_version;
  std::string onednn_isa;
  double peak_gflops_f32 = kNaN;        // all cores
  double peak_gflops_f32_1core = kNaN;  // one core
  double peak_gflops_bf16 = kNaN;
  double mem_bandwidth_gbs = kNaN;
  std::string energy_source;  // where energy_j comes from, or why it is NaN
};

// One host that worked on a sweep (group /hosts): its CPU and measured ceilings, so a farm over
// unlike nodes keeps every node's peaks, not only the master's (/system).
struct HostInfo {
  std::string hostname;
  std::string cpu_model;
  std::int64_t logical_cpus = 0;
  std::string onednn_isa;
  double peak_gflops_f32 = kNaN;
  double peak_gflops_f32_1core = kNaN;
  double peak_gflops_bf16 = kNaN;
  double mem_bandwidth_gbs = kNaN;
  std::int64_t workers = 0;    // worker ranks that ran configs on it (latest session)
  std::string first_seen_utc;  // when it first joined a session of this sweep
};

// One session of a sweep that ran inside a batch job (group /jobs, one row per session): which
// Slurm job and restart wrote the rows finished from started_utc on.
struct JobInfo {
  std::string job_id;              // SLURM_JOB_ID (an array task has its own)
  std::string array_job_id;        // SLURM_ARRAY_JOB_ID, "" outside arrays
  std::string array_task_id;       // SLURM_ARRAY_TASK_ID, "" outside arrays
  std::int64_t restart_count = 0;  // SLURM_RESTART_COUNT: how often the job had been requeued
  std::string started_utc;         // when this session opened the file
  std::string host;                // where the master (the file's writer) ran
};

// Root attributes of a results file.
struct FileMeta {
  std::string schema = kSchema;
  std::string tool_version;
  std::string spec_name;
  std::string spec_sha256;
  std::string spec_yaml;
  std::string created_utc;
  // JSON array of the specs this file was extended with (--extend): {name, sha256, yaml,
  // applied_utc}; the first entry is the original spec. "" when never extended.
  std::string spec_history;
};

}  // namespace dnnscape::store
