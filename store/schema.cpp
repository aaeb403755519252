#include "store/schema.hpp"

#include <string>

namespace dnnscape::store::schema {

namespace {

using R = RunRecord;

// config.family is an enum in memory and its name on disk.
Column<R> family_column() {
  return {"family", Type::string, kShort,
          [](const R& r) -> Value { return std::string(space::to_string(r.config.family)); },
          [](R& r, Value&& v) { r.config.family = space::family_from_string(std::get<2>(v)); }};
}

std::vector<Column<R>> make_runs() {
  // clang-format off
  return {
      field<R>("config_id", kConfigId, [](auto& r) -> auto& { return r.config_id; }),
      family_column(),
      field<R>("layers", 0, [](auto& r) -> auto& { return r.config.layers; }),
      field<R>("nodes", 0, [](auto& r) -> auto& { return r.config.nodes; }),
      field<R>("input", 0, [](auto& r) -> auto& { return r.config.input; }),
      field<R>("output", 0, [](auto& r) -> auto& { return r.config.output; }),
      field<R>("batch", 0, [](auto& r) -> auto& { return r.config.batch; }),
      field<R>("filters", 0, [](auto& r) -> auto& { return r.config.filters; }),
      field<R>("blocks", 0, [](auto& r) -> auto& { return r.config.blocks; }),
      field<R>("image", 0, [](auto& r) -> auto& { return r.config.image; }),
      field<R>("embedding", 0, [](auto& r) -> auto& { return r.config.embedding; }),
      field<R>("length", 0, [](auto& r) -> auto& { return r.config.length; }),
      field<R>("vocab", 0, [](auto& r) -> auto& { return r.config.vocab; }),
      field<R>("block_fn", kShort, [](auto& r) -> auto& { return r.config.block_fn; }),
      field<R>("cell", kShort, [](auto& r) -> auto& { return r.config.cell; }),
      field<R>("mode", kShort, [](auto& r) -> auto& { return r.config.knobs.mode; }),
      field<R>("dtype", kShort, [](auto& r) -> auto& { return r.config.knobs.dtype; }),
      field<R>("algorithm", kShort, [](auto& r) -> auto& { return r.config.knobs.algorithm; }),
      field<R>("isa_cap", kShort, [](auto& r) -> auto& { return r.config.knobs.isa_cap; }),
      field<R>("threads", 0, [](auto& r) -> auto& { return r.config.knobs.threads; }),
      field<R>("status", kShort, [](auto& r) -> auto& { return r.status; }),
      field<R>("message", kMessage, [](auto& r) -> auto& { return r.message; }),
      field<R>("step_time_s", 0, [](auto& r) -> auto& { return r.metrics.step_time_s; }),
      field<R>("step_time_ci_low_s", 0, [](auto& r) -> auto& { return r.metrics.step_time_ci_low_s; }),
      field<R>("step_time_ci_high_s", 0, [](auto& r) -> auto& { return r.metrics.step_time_ci_high_s; }),
      field<R>("step_time_cv", 0, [](auto& r) -> auto& { return r.metrics.step_time_cv; }),
      field<R>("examples_per_s", 0, [](auto& r) -> auto& { return r.metrics.examples_per_s; }),
      field<R>("flops", 0, [](auto& r) -> auto& { return r.metrics.flops; }),
      field<R>("gflops", 0, [](auto& r) -> auto& { return r.metrics.gflops; }),
      field<R>("flops_utilization", 0, [](auto& r) -> auto& { return r.metrics.flops_utilization; }),
      field<R>("bytes", 0, [](auto& r) -> auto& { return r.metrics.bytes; }),
      field<R>("arithmetic_intensity", 0, [](auto& r) -> auto& { return r.metrics.arithmetic_intensity; }),
      field<R>("params", 0, [](auto& r) -> auto& { return r.metrics.params; }),
      field<R>("memory_bytes", 0, [](auto& r) -> auto& { return r.metrics.memory_bytes; }),
      field<R>("predicted_time_s", 0, [](auto& r) -> auto& { return r.metrics.predicted_time_s; }),
      field<R>("ops_time_ratio", 0, [](auto& r) -> auto& { return r.metrics.ops_time_ratio; }),
      field<R>("latency_p50_s", 0, [](auto& r) -> auto& { return r.metrics.latency_p50_s; }),
      field<R>("latency_p90_s", 0, [](auto& r) -> auto& { return r.metrics.latency_p90_s; }),
      field<R>("latency_p99_s", 0, [](auto& r) -> auto& { return r.metrics.latency_p99_s; }),
      field<R>("energy_j", 0, [](auto& r) -> auto& { return r.metrics.energy_j; }),
      field<R>("wall_s", 0, [](auto& r) -> auto& { return r.metrics.wall_s; }),
      field<R>("reps", 0, [](auto& r) -> auto& { return r.metrics.reps; }),
      field<R>("host", kHost, [](auto& r) -> auto& { return r.provenance.host; }),
      field<R>("rank", 0, [](auto& r) -> auto& { return r.provenance.rank; }),
      field<R>("cores", kCores, [](auto& r) -> auto& { return r.provenance.cores; }),
      field<R>("workers_on_host", 0, [](auto& r) -> auto& { return r.provenance.workers_on_host; }),
      field<R>("effective_isa", kShort, [](auto& r) -> auto& { return r.provenance.effective_isa; }),
      field<R>("finished_utc", kShort, [](auto& r) -> auto& { return r.provenance.finished_utc; }),
  };
  // clang-format on
}

std::vector<Column<OpRecord>> make_ops() {
  using O = OpRecord;
  // clang-format off
  return {
      field<O>("layer", 0, [](auto& o) -> auto& { return o.layer; }),
      field<O>("op", kShort, [](auto& o) -> auto& { return o.op; }),
      field<O>("phase", kShort, [](auto& o) -> auto& { return o.phase; }),
      field<O>("impl", kImpl, [](auto& o) -> auto& { return o.impl; }),
      field<O>("time_s", 0, [](auto& o) -> auto& { return o.time_s; }),
      field<O>("flops", 0, [](auto& o) -> auto& { return o.flops; }),
      field<O>("bytes", 0, [](auto& o) -> auto& { return o.bytes; }),
  };
  // clang-format on
}

// Attributes are sized to their value when written; the width is unused.
std::vector<Column<FileMeta>> make_meta() {
  using M = FileMeta;
  return {
      field<M>(
          "schema", 0, [](auto& m) -> auto& { return m.schema; }),
      field<M>(
          "tool_version", 0, [](auto& m) -> auto& { return m.tool_version; }),
      field<M>(
          "spec_name", 0, [](auto& m) -> auto& { return m.spec_name; }),
      field<M>(
          "spec_sha256", 0, [](auto& m) -> auto& { return m.spec_sha256; }),
      field<M>(
          "spec_yaml", 0, [](auto& m) -> auto& { return m.spec_yaml; }),
      field<M>(
          "created_utc", 0, [](auto& m) -> auto& { return m.created_utc; }),
      field<M>(
          "spec_history", 0, [](auto& m) -> auto& { return m.spec_history; }),
  };
}

std::vector<Column<SystemInfo>> make_system() {
  using S = SystemInfo;
  // clang-format off
  return {
      field<S>("hostname", 0, [](auto& s) -> auto& { return s.hostname; }),
      field<S>("cpu_model", 0, [](auto& s) -> auto& { return s.cpu_model; }),
      field<S>("logical_cpus", 0, [](auto& s) -> auto& { return s.logical_cpus; }),
      field<S>("onednn_version", 0, [](auto& s) -> auto& { return s.onednn_version; }),
      field<S>("onednn_isa", 0, [](auto& s) -> auto& { return s.onednn_isa; }),
      field<S>("peak_gflops_f32", 0, [](auto& s) -> auto& { return s.peak_gflops_f32; }),
      field<S>("peak_gflops_f32_1core", 0, [](auto& s) -> auto& { return s.peak_gflops_f32_1core; }),
      field<S>("peak_gflops_bf16", 0, [](auto& s) -> auto& { return s.peak_gflops_bf16; }),
      field<S>("mem_bandwidth_gbs", 0, [](auto& s) -> auto& { return s.mem_bandwidth_gbs; }),
      field<S>("energy_source", 0, [](auto& s) -> auto& { return s.energy_source; }),
  };
  // clang-format on
}

std::vector<Column<HostInfo>> make_hosts() {
  using H = HostInfo;
  // clang-format off
  return {
      field<H>("hostname", kHost, [](auto& h) -> auto& { return h.hostname; }),
      field<H>("cpu_model", kCores, [](auto& h) -> auto& { return h.cpu_model; }),
      field<H>("logical_cpus", 0, [](auto& h) -> auto& { return h.logical_cpus; }),
      field<H>("onednn_isa", kShort, [](auto& h) -> auto& { return h.onednn_isa; }),
      field<H>("peak_gflops_f32", 0, [](auto& h) -> auto& { return h.peak_gflops_f32; }),
      field<H>("peak_gflops_f32_1core", 0, [](auto& h) -> auto& { return h.peak_gflops_f32_1core; }),
      field<H>("peak_gflops_bf16", 0, [](auto& h) -> auto& { return h.peak_gflops_bf16; }),
      field<H>("mem_bandwidth_gbs", 0, [](auto& h) -> auto& { return h.mem_bandwidth_gbs; }),
      field<H>("workers", 0, [](auto& h) -> auto& { return h.workers; }),
      field<H>("first_seen_utc", kShort, [](auto& h) -> auto& { return h.first_seen_utc; }),
  };
  // clang-format on
}

std::vector<Column<JobInfo>> make_jobs() {
  using J = JobInfo;
  // clang-format off
  return {
      field<J>("job_id", kShort, [](auto& j) -> auto& { return j.job_id; }),
      field<J>("array_job_id", kShort, [](auto& j) -> auto& { return j.array_job_id; }),
      field<J>("array_task_id", kShort, [](auto& j) -> auto& { return j.array_task_id; }),
      field<J>("restart_count", 0, [](auto& j) -> auto& { return j.restart_count; }),
      field<J>("started_utc", kShort, [](auto& j) -> auto& { return j.started_utc; }),
      field<J>("host", kHost, [](auto& j) -> auto& { return j.host; }),
  };
  // clang-format on
}

}  // namespace

const std::vector<Column<JobInfo>>& jobs() {
  static const std::vector<Column<JobInfo>> table = make_jobs();
  return table;
}

const std::vector<Column<HostInfo>>& hosts() {
  static const std::vector<Column<HostInfo>> table = make_hosts();
  return table;
}

const std::vector<Column<FileMeta>>& meta() {
  static const std::vector<Column<FileMeta>> table = make_meta();
  return table;
}

const std::vector<Column<SystemInfo>>& system() {
  static const std::vector<Column<SystemInfo>> table = make_system();
  return table;
}

const std::vector<Column<RunRecord>>& runs() {
  static const std::vector<Column<RunRecord>> table = make_runs();
  return table;
}

const std::vector<Column<OpRecord>>& ops() {
  static const std::vector<Column<OpRecord>> table = make_ops();
  return table;
}

std::string config_id_of(const RunRecord& r) {
  return r.config_id.empty() ? r.config.config_id() : r.config_id;
}

}  // namespace dnnscape::store::schema
