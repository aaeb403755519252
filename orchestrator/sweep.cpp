#include "orchestrator/sweep.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "orchestrator/farm.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/runner.hpp"
#include "store/results.hpp"
#include "worker/cost.hpp"
#include "worker/energy.hpp"
#include "worker/executor.hpp"
#include "worker/sysinfo.hpp"

namespace dnnscape::orchestrator {

std::atomic<bool>& stop_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

namespace {
extern "C" void on_stop_signal(int /*sig*/) {
  stop_requested().store(true);
}

bool is_retryable(const std::string& status) {
  return status == store::status::failed || status == store::status::crashed ||
         status == store::status::timeout;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa,
            nullptr);  // Slurm sends it ahead of the time limit (--signal=B:USR1@grace)
}

store::SystemInfo system_info(const worker::Peaks& peaks) {
  store::SystemInfo s;
  s.hostname = worker::hostname();
  s.cpu_model = worker::cpu_model();
  s.logical_cpus = worker::available_cpus();
  s.onednn_version = worker::onednn_version();
  s.onednn_isa = worker::onednn_isa();
  s.peak_gflops_f32 = peaks.gflops_f32;
  s.peak_gflops_f32_1core = peaks.gflops_f32_1core;
  s.peak_gflops_bf16 = peaks.gflops_bf16 > 0 ? peaks.gflops_bf16 : store::kNaN;
  s.mem_bandwidth_gbs = peaks.mem_bandwidth_gbs;
  s.energy_source = worker::energy_source();
  return s;
}

std::vector<PlannedConfig> plan_configs(const space::Spec& spec, const worker::Peaks& peaks) {
  std::vector<PlannedConfig> out;
  out.reserve(spec.configs.size());
  for (const auto& c : spec.configs) {
    const store::RunRecord pred = worker::predicted_record(c, peaks);
    PlannedConfig p;
    p.config = c;
    p.config_id = pred.config_id;
    p.flops = pred.metrics.flops;
    p.bytes = pred.metrics.bytes;
    p.params = pred.metrics.params;
    p.memory_bytes = pred.metrics.memory_bytes;
    p.predicted_step_s =
        std::isfinite(pred.metrics.predicted_time_s) ? pred.metrics.predicted_time_s : 0.0;
    p.skip_reason =
        pred.status == store::status::ok ? worker::skip_reason(c, spec.limits) : pred.message;
    p.predicted_total_s = p.skip_reason.empty() ? worker::predicted_config_time_s(
                                                      p.predicted_step_s, spec.measure.warmup_s,
                                                      spec.measure.min_reps, spec.measure.max_reps,
                                                      spec.measure.max_time_s)
                                                : 0.0;
    out.push_back(std::move(p));
  }
  std::stable_sort(out.begin(), out.end(), [](const PlannedConfig& a, const PlannedConfig& b) {
    return a.predicted_step_s > b.predicted_step_s;
  });
  return out;
}

namespace {

store::ResultsWriter open_or_create(const SweepOptions& o, const space::Spec& spec,
                                    const worker::Peaks& peaks, SweepSummary& summary) {
  namespace fs = std::filesystem;
  store::FileMeta meta;
  meta.tool_version = o.tool_version;
  meta.spec_name = spec.name;
  meta.spec_sha256 = spec.sha256;
  meta.spec_yaml = spec.yaml_text;
  meta.created_utc = worker::utc_now_iso();
  if (fs::exists(o.out_path)) {
    auto writer = store::ResultsWriter::open(o.out_path);
    if (writer.meta().spec_sha256 == spec.sha256) return writer;
    if (!o.new_file) {
      throw SweepError(fmt::format(
          "{} holds results of a different spec ('{}', sha256 {}...); this spec ('{}') has sha256 "
          "{}...: "
          "pass --new-file to keep that file aside and start a new one, or choose another -o",
          o.out_path.string(), writer.meta().spec_name, writer.meta().spec_sha256.substr(0, 12),
          spec.name, spec.sha256.substr(0, 12)));
    }
    // Nothing measured is ever deleted: the old file moves aside under a dated name.
    std::string stamp = worker::utc_now_iso();
    std::replace(stamp.begin(), stamp.end(), ':', '-');
    const fs::path aside =
        o.out_path.parent_path() /
        fmt::format("{}.{}{}", o.out_path.stem().string(), stamp, o.out_path.extension().string());
    { auto closing = std::move(writer); }
    fs::rename(o.out_path, aside);
    summary.moved_aside = aside;
  }
  return store::ResultsWriter::create(o.out_path, meta, system_info(peaks));
}

}  // namespace

namespace {

// Serial execution in this process's executor: the single-process sweep. A crash is retried once
// in a fresh executor before its row is written.
void run_serial(ConfigRunner& runner, const std::vector<PlannedConfig>& todo,
                const RecordSink& sink, SweepSummary& summary) {
  for (const auto& p : todo) {
    if (stop_requested().load()) {
      summary.interrupted = true;
      return;
    }
    store::RunRecord record = runner.run(p.config);
    if (record.status == store::status::crashed && !stop_requested().load()) {
      record = runner.run(p.config);
      record.message += " (attempt 2)";
    }
    sink(record, p);
  }
}

}  // namespace

SweepSummary run_sweep(const SweepOptions& o, const worker::Peaks& peaks, const MpiSession& mpi) {
  const auto start = std::chrono::steady_clock::now();
  SweepSummary summary;
  summary.out_path = o.out_path;
  const std::string executor = o.executor_path.empty() ? default_executor_path() : o.executor_path;

  worker::RunContext ctx;
  ctx.peaks = peaks;
  ctx.host = worker::hostname();
  ctx.rank = mpi.rank();
  ctx.profile = o.profile;

  if (mpi.rank() != 0) {
    // A worker rank: the master sends the measurement settings, or an error to stop on.
    const auto hello = nlohmann::json::parse(mpi.broadcast(""));
    if (hello.contains("error")) {
      summary.failed_to_start = true;
      return summary;
    }
    const auto master_ctx = worker::context_from_json(hello.at("context"));
    ctx.measure = master_ctx.measure;
    ctx.limits = master_ctx.limits;
    ctx.profile = master_ctx.profile;
    farm_worker(mpi, ctx, executor);
    summary.worker_only = true;
    return summary;
  }

  std::optional<store::ResultsWriter> writer;
  std::vector<PlannedConfig> todo;
  space::Spec spec;
  try {
    spec = space::load_spec(o.spec_path);
    summary.total = static_cast<std::int64_t>(spec.configs.size());
    writer.emplace(open_or_create(o, spec, peaks, summary));
    for (auto& p : plan_configs(spec, peaks)) {
      if (auto it = writer->rows().find(p.config_id); it != writer->rows().end()) {
        if (!(o.retry_failed && is_retryable(it->second.status))) {
          ++summary.already;
          continue;
        }
      }
      todo.push_back(std::move(p));
    }
    ctx.measure = spec.measure;
    ctx.limits = spec.limits;
  } catch (const std::exception& e) {
    (void)mpi.broadcast(nlohmann::json{{"error", e.what()}}.dump());
    throw;
  }
  (void)mpi.broadcast(nlohmann::json{{"context", worker::to_json(ctx)}}.dump());

  double predicted_total = 0;
  for (const auto& p : todo) predicted_total += p.predicted_total_s;
  if (summary.already > 0) {
    fmt::print(stderr, "resuming {}: {} of {} configs already recorded, {} to run\n",
               o.out_path.string(), summary.already, summary.total, todo.size());
  }
  Progress progress(static_cast<std::int64_t>(todo.size()), predicted_total, stderr,
                    o.plain_progress);
  const RecordSink sink = [&](const store::RunRecord& record, const PlannedConfig& p) {
    writer->write(record);
    ++summary.ran;
    ++summary.by_status[record.status];
    progress.done(record.status, p.predicted_total_s, p.config.label());
  };

  // Configs that would not run here are recorded without dispatching them.
  std::vector<PlannedConfig> runnable;
  for (auto& p : todo) {
    if (p.skip_reason.empty()) {
      runnable.push_back(std::move(p));
      continue;
    }
    store::RunRecord record = worker::predicted_record(p.config, peaks);
    record.status = store::status::skipped;
    record.message = p.skip_reason;
    record.provenance.host = ctx.host;
    record.provenance.finished_utc = worker::utc_now_iso();
    sink(record, p);
  }

  if (mpi.size() > 1) {
    farm_master(mpi, std::move(runnable), sink);
    summary.interrupted =
        stop_requested().load() && summary.ran < static_cast<std::int64_t>(todo.size());
  } else {
    std::unique_ptr<ConfigRunner> runner;
    if (o.in_process) {
      runner = std::make_unique<InProcessRunner>(ctx);
    } else {
      runner = std::make_unique<ExecutorProcessRunner>(executor, ctx);
    }
    run_serial(*runner, runnable, sink, summary);
  }
  progress.finish();
  summary.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace dnnscape::orchestrator
