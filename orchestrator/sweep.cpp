#include "orchestrator/sweep.hpp"

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_set>

#include "orchestrator/adaptive.hpp"
#include "orchestrator/farm.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/runner.hpp"
#include "store/predicted.hpp"
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
  for (std::size_t i = 0; i < spec.configs.size(); ++i) {
    const auto& c = spec.configs[i];
    const store::RunRecord pred = worker::predicted_record(c, peaks);
    PlannedConfig p;
    p.config = c;
    p.index = i;
    p.config_id = pred.config_id;
    p.flops = pred.metrics.flops;
    p.bytes = pred.metrics.bytes;
    p.params = pred.metrics.params;
    p.memory_bytes = pred.metrics.memory_bytes;
    p.predicted_step_s =
        std::isfinite(pred.metrics.predicted_time_s) ? pred.metrics.predicted_time_s : 0.0;
    p.skip_reason =
        pred.status == store::status::ok ? worker::skip_reason(c, spec.limits) : pred.message;
    p.predicted_total_s =
        p.skip_reason.empty() ? spec.measure.predicted_time_s(p.predicted_step_s) : 0.0;
    out.push_back(std::move(p));
  }
  std::stable_sort(out.begin(), out.end(), [](const PlannedConfig& a, const PlannedConfig& b) {
    return a.predicted_step_s > b.predicted_step_s;
  });
  return out;
}

namespace {

store::ResultsWriter open_or_create(const SweepOptions& o, const space::Spec& spec,
                                    const worker::Peaks& peaks,
                                    const std::vector<store::HostInfo>& hosts,
                                    SweepSummary& summary) {
  namespace fs = std::filesystem;
  store::FileMeta meta;
  meta.tool_version = o.tool_version;
  meta.spec_name = spec.name;
  meta.spec_sha256 = spec.sha256;
  meta.spec_yaml = spec.yaml_text;
  meta.created_utc = worker::utc_now_iso();
  std::optional<store::JobInfo> job = o.job;
  if (job) {
    job->started_utc = meta.created_utc;
    job->host = system_info(peaks).hostname;
  }
  if (fs::exists(o.out_path)) {
    store::OpenOptions open_options;
    open_options.hosts = hosts;
    open_options.job = job;
    const store::FileMeta stored = store::ResultsReader(o.out_path).meta();
    if (stored.spec_sha256 == spec.sha256)
      return store::ResultsWriter::open(o.out_path, open_options);
    if (o.extend) {
      // The stored spec is kept in spec_history; rows stay, new configs are added.
      open_options.extend_with = meta;
      summary.extended = true;
      return store::ResultsWriter::open(o.out_path, open_options);
    }
    if (!o.new_file) {
      throw SweepError(fmt::format(
          "{} holds results of a different spec ('{}', sha256 {}...); this spec ('{}') has sha256 "
          "{}...: pass --extend to add this spec's new configs to that file, --new-file to keep "
          "that file aside and start a new one, or choose another -o",
          o.out_path.string(), stored.spec_name, stored.spec_sha256.substr(0, 12), spec.name,
          spec.sha256.substr(0, 12)));
    }
    // Nothing measured is ever deleted: the old file moves aside under a dated name.
    if (store::ResultsWriter::is_being_written(o.out_path)) {
      throw SweepError(fmt::format("{} is being written by another live process; not moving it",
                                   o.out_path.string()));
    }
    std::string stamp = worker::utc_now_iso();
    std::replace(stamp.begin(), stamp.end(), ':', '-');
    const fs::path aside =
        o.out_path.parent_path() /
        fmt::format("{}.{}{}", o.out_path.stem().string(), stamp, o.out_path.extension().string());
    fs::rename(o.out_path, aside);
    summary.moved_aside = aside;
  }
  return store::ResultsWriter::create(o.out_path, meta, system_info(peaks), hosts, job);
}

// What a rank tells the master about its host, once at start.
nlohmann::json host_report(const worker::Peaks& peaks) {
  return {{"host", worker::hostname()},
          {"cpu_model", worker::cpu_model()},
          {"logical_cpus", worker::available_cpus()},
          {"onednn_isa", worker::onednn_isa()},
          {"peak_gflops_f32", peaks.gflops_f32},
          {"peak_gflops_f32_1core", peaks.gflops_f32_1core},
          {"peak_gflops_bf16", peaks.gflops_bf16},
          {"mem_bandwidth_gbs", peaks.mem_bandwidth_gbs}};
}

// /hosts rows: one per host that works in this session.
std::vector<store::HostInfo> hosts_of(const std::vector<std::string>& reports,
                                      const std::vector<Placement>& placement) {
  std::vector<store::HostInfo> hosts;
  const std::string now = worker::utc_now_iso();
  for (std::size_t r = 0; r < reports.size(); ++r) {
    if (!placement[r].active) continue;
    const auto j = nlohmann::json::parse(reports[r]);
    const auto name = j.at("host").get<std::string>();
    auto it = std::find_if(hosts.begin(), hosts.end(),
                           [&](const store::HostInfo& h) { return h.hostname == name; });
    if (it != hosts.end()) {
      ++it->workers;
      continue;
    }
    store::HostInfo h;
    h.hostname = name;
    h.cpu_model = j.at("cpu_model").get<std::string>();
    h.logical_cpus = j.at("logical_cpus").get<std::int64_t>();
    h.onednn_isa = j.at("onednn_isa").get<std::string>();
    h.peak_gflops_f32 = j.at("peak_gflops_f32").get<double>();
    h.peak_gflops_f32_1core = j.at("peak_gflops_f32_1core").get<double>();
    const double bf16 = j.at("peak_gflops_bf16").get<double>();
    h.peak_gflops_bf16 = bf16 > 0 ? bf16 : store::kNaN;
    h.mem_bandwidth_gbs = j.at("mem_bandwidth_gbs").get<double>();
    h.workers = 1;
    h.first_seen_utc = now;
    hosts.push_back(std::move(h));
  }
  return hosts;
}

// Serial execution in this process's executor: the single-process sweep. Each record is written
// as soon as it arrives; a crash is retried once in a fresh executor before its row is written.
void run_serial(ExecutorProcessRunner& runner, const std::vector<PlannedConfig>& todo,
                const std::function<void(store::RunRecord&&, const PlannedConfig&)>& sink,
                const SweepOptions& o, SweepSummary& summary) {
  bool stop_seen = false;
  std::chrono::steady_clock::time_point stop_since{};
  auto control = [&] {
    if (!stop_requested().load()) return ExecutorProcessRunner::Control::go_on;
    if (!stop_seen) {
      stop_seen = true;
      stop_since = std::chrono::steady_clock::now();
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_since).count();
    return waited < o.grace_s ? ExecutorProcessRunner::Control::stop_after_current
                              : ExecutorProcessRunner::Control::stop_now;
  };
  std::vector<space::Config> configs;
  configs.reserve(todo.size());
  for (const auto& p : todo) configs.push_back(p.config);
  std::vector<std::size_t> crashed;
  auto parse = [&](const PlannedConfig& p, std::string&& json) {
    try {
      return worker::record_from_json(nlohmann::json::parse(json));
    } catch (const std::exception& e) {
      store::RunRecord r = worker::predicted_record(p.config, {});
      r.status = store::status::failed;
      r.message = fmt::format("executor sent an unreadable record: {}", e.what());
      return r;
    }
  };
  const std::size_t done = runner.run_batch(
      configs,
      [&](std::size_t i, std::string&& json) {
        store::RunRecord r = parse(todo[i], std::move(json));
        if (r.status == store::status::crashed) {
          crashed.push_back(i);
          return;
        }
        sink(std::move(r), todo[i]);
      },
      control);
  bool all_recorded = done == todo.size();
  for (std::size_t i : crashed) {
    std::size_t got = 0;
    if (!stop_requested().load()) {
      got = runner.run_batch(
          std::span<const space::Config>(&configs[i], 1),
          [&](std::size_t, std::string&& json) {
            store::RunRecord r = parse(todo[i], std::move(json));
            r.message += " (attempt 2)";
            sink(std::move(r), todo[i]);
          },
          control);
    }
    // Not retried (a stop): the crash stays unrecorded and a resume runs it again.
    if (got == 0) all_recorded = false;
  }
  summary.interrupted = !all_recorded;
}

void run_in_process(ConfigRunner& runner, const std::vector<PlannedConfig>& todo,
                    const std::function<void(store::RunRecord&&, const PlannedConfig&)>& sink,
                    SweepSummary& summary) {
  for (const auto& p : todo) {
    if (stop_requested().load()) {
      summary.interrupted = true;
      return;
    }
    sink(runner.run(p.config), p);
  }
}

struct AdaptiveContext {
  const SweepOptions& o;
  const space::Spec& spec;
  const worker::Peaks& peaks;
  const MpiSession& mpi;
  const worker::RunContext& ctx;
  const std::string& executor;
  const std::vector<int>& active_workers;
  const FarmOptions& farm_options;
};

// Adaptive sampling (docs/spec.md): rounds of batches chosen by the model, each run by the farm
// (which releases its workers after every round; they come back when told there is more) or in
// this process; then the grid's prediction goes to /predicted once the writer is closed.
void run_adaptive(const AdaptiveContext& a, std::optional<store::ResultsWriter>& writer,
                  std::vector<model::Point> points, const BatchSink& batch_sink,
                  const std::function<void(store::RunRecord&&, const PlannedConfig&)>& sink,
                  Progress& progress, SweepSummary& summary) {
  std::unordered_set<std::string> ids;
  for (const auto& c : a.spec.configs) ids.insert(c.config_id());
  std::vector<std::string> recorded;
  for (const auto& [id, row] : writer->rows())
    if (ids.contains(id)) recorded.push_back(id);
  std::erase_if(points, [&](const model::Point& p) { return !ids.contains(p.config.config_id()); });
  const model::System system{worker::hostname(), a.peaks.gflops_f32,
                             a.peaks.gflops_bf16 > 0 ? a.peaks.gflops_bf16 : store::kNaN,
                             a.peaks.mem_bandwidth_gbs};
  AdaptiveSampler sampler(a.spec, system, plan_configs(a.spec, a.peaks), recorded,
                          std::move(points));
  const BatchSink adaptive_batch_sink = [&](const std::vector<store::RunRecord>& records,
                                            const std::vector<const PlannedConfig*>& planned) {
    batch_sink(records, planned);
    for (const auto& r : records) sampler.add(r);
  };
  const auto adaptive_sink = [&](store::RunRecord&& r, const PlannedConfig& p) {
    sampler.add(r);
    sink(std::move(r), p);
  };
  std::optional<ExecutorProcessRunner> runner;
  bool first_round = true;
  const auto measure = [&](const std::vector<PlannedConfig>& batch) {
    if (a.mpi.size() > 1) {
      if (!first_round) (void)a.mpi.broadcast(nlohmann::json{{"more", true}}.dump());
      first_round = false;
      const FarmResult r = farm_master(a.mpi, batch, a.active_workers, adaptive_batch_sink,
                                       &progress, a.farm_options);
      summary.interrupted = summary.interrupted || r.interrupted;
      summary.workers = r.workers;
      summary.farm_wall_s += r.wall_s;
      summary.farm_recorded += r.recorded;
    } else if (a.o.in_process) {
      InProcessRunner in_process(a.ctx);
      run_in_process(in_process, batch, adaptive_sink, summary);
    } else {
      if (!runner) runner.emplace(a.executor, a.ctx);
      run_serial(*runner, batch, adaptive_sink, a.o, summary);
    }
    return !summary.interrupted && !stop_requested().load();
  };
  // Worker ranks wait for a round or for the word that there is none: always end the protocol.
  const auto end_rounds = [&] {
    if (a.mpi.size() <= 1) return;
    if (first_round)
      (void)farm_master(a.mpi, {}, a.active_workers, adaptive_batch_sink, &progress,
                        a.farm_options);
    first_round = false;
    (void)a.mpi.broadcast(nlohmann::json{{"more", false}}.dump());
  };
  try {
    sampler.run(measure, 2 * std::max<std::size_t>(a.active_workers.size(), 1));
  } catch (...) {
    end_rounds();
    throw;
  }
  end_rounds();
  progress.finish();
  if (summary.interrupted || stop_requested().load()) return;  // a resume finishes the job
  writer.reset();  // /predicted is created outside SWMR writing, so the writer closes first
  const auto rows = sampler.predict_grid();
  store::write_predicted(a.o.out_path, "step_time_s", sampler.model_summary(), rows);
  const auto extrapolated =
      std::count_if(rows.begin(), rows.end(), [](const auto& r) { return r.extrapolated; });
  fmt::print(stderr,
             "adaptive: {} of {} configs measured; predicted {} into {}:/predicted ({} "
             "extrapolated)\n",
             sampler.measured(), a.spec.configs.size(), rows.size(), a.o.out_path.string(),
             extrapolated);
  if (a.spec.sampling.cost_aware)
    fmt::print(stderr, "adaptive: cost of measuring a config: {}\n",
               sampler.measure_cost().describe());
}

}  // namespace

SweepSummary run_sweep(const SweepOptions& o, const worker::Peaks& peaks, const MpiSession& mpi) {
  const auto start = std::chrono::steady_clock::now();
  SweepSummary summary;
  summary.out_path = o.out_path;
  const std::string executor = o.executor_path.empty() ? default_executor_path() : o.executor_path;
  FarmOptions farm_options;
  farm_options.grace_s = o.grace_s;

  worker::RunContext ctx;
  ctx.peaks = peaks;
  ctx.host = worker::hostname();
  ctx.rank = mpi.rank();
  ctx.profile = o.profile;

  // Every rank reports its host and ceilings; the master places the workers from that.
  const auto reports = mpi.gather(host_report(peaks).dump());

  if (mpi.rank() != 0) {
    // A worker rank: the master sends the spec, the measurement settings and this rank's place,
    // or an error to stop on.
    const auto hello = nlohmann::json::parse(mpi.broadcast(""));
    if (hello.contains("error")) {
      summary.failed_to_start = true;
      return summary;
    }
    summary.worker_only = true;
    const auto& place = hello.at("placement").at(static_cast<std::size_t>(mpi.rank()));
    // Adaptive sampling runs the farm once per batch; the master says whether another follows.
    const bool adaptive = hello.value("adaptive", false);
    const auto more_rounds = [&] {
      return adaptive && nlohmann::json::parse(mpi.broadcast("")).value("more", false);
    };
    if (!place.at("active").get<bool>()) {
      while (more_rounds()) {
      }
      return summary;
    }
    const auto master_ctx = worker::context_from_json(hello.at("context"));
    ctx.measure = master_ctx.measure;
    ctx.limits = master_ctx.limits;
    ctx.profile = master_ctx.profile;
    ctx.workers_on_host = place.at("workers_on_host").get<std::int64_t>();
    const int slots = place.at("slots").get<int>();
    if (slots > 0) {
      // Pinned: this rank (and so its executors, which inherit the mask) runs on its own cores.
      const auto cpus = split_cpus(affinity_cpus(), place.at("slot").get<int>(), slots);
      if (!cpus.empty()) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c : cpus) CPU_SET(c, &set);
        if (sched_setaffinity(0, sizeof(set), &set) == 0) ctx.cores = format_cpu_list(cpus);
      }
    }
    farm_options.grace_s = hello.value("grace_s", o.grace_s);
    const auto spec =
        space::parse_spec(hello.at("spec_yaml").get<std::string>(), hello.at("spec_name"));
    do {
      farm_worker(mpi, ctx, executor, spec.configs, farm_options);
    } while (more_rounds());
    return summary;
  }

  std::optional<store::ResultsWriter> writer;
  std::vector<PlannedConfig> todo;
  space::Spec spec;
  std::vector<Placement> placement;
  std::vector<model::Point> adaptive_points;  // adaptive: the ok rows already in the file
  try {
    spec = space::load_spec(o.spec_path);
    summary.total = static_cast<std::int64_t>(spec.configs.size());
    std::vector<std::string> host_of_rank;
    for (const auto& r : reports)
      host_of_rank.push_back(nlohmann::json::parse(r).at("host").get<std::string>());
    placement = place_workers(host_of_rank, o.workers_per_node);
    if (spec.sampling.kind == space::Sampling::Kind::adaptive &&
        std::filesystem::exists(o.out_path))
      adaptive_points = model::read_points(o.out_path, "step_time_s").points;
    writer.emplace(open_or_create(o, spec, peaks, hosts_of(reports, placement), summary));
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
    if (spec.sampling.kind == space::Sampling::Kind::adaptive) summary.total = spec.sampling.count;
  } catch (const std::exception& e) {
    (void)mpi.broadcast(nlohmann::json{{"error", e.what()}}.dump());
    throw;
  }
  nlohmann::json places = nlohmann::json::array();
  std::vector<int> active_workers;
  for (std::size_t r = 0; r < placement.size(); ++r) {
    const auto& p = placement[r];
    places.push_back({{"active", p.active},
                      {"slot", p.slot},
                      {"slots", p.slots},
                      {"workers_on_host", p.workers_on_host}});
    if (p.active && r > 0) active_workers.push_back(static_cast<int>(r));
  }
  (
      void)mpi.broadcast(nlohmann::json{
      {"context", worker::to_json(ctx)},
      {"spec_yaml", spec.yaml_text},
      {"spec_name", spec.path.string()},
      {"placement", places},
      {"adaptive", spec.sampling.kind == space::Sampling::Kind::adaptive},
      {"grace_s", o.grace_s}}.dump());
  if (mpi.size() > 1) {
    for (std::size_t r = 1; r < placement.size(); ++r) {
      if (!placement[r].active) {
        fmt::print(stderr,
                   "rank {} idles: --workers-per-node {} and its host has more worker ranks\n", r,
                   o.workers_per_node);
      }
    }
  }

  double predicted_total = 0;
  for (const auto& p : todo) predicted_total += p.predicted_total_s;
  if (summary.extended) {
    fmt::print(stderr, "extending {}: spec '{}' replaces the stored spec (kept in spec_history)\n",
               o.out_path.string(), spec.name);
  }
  // An adaptive sweep runs what is left of its budget, not every unmeasured candidate.
  auto to_run = static_cast<std::int64_t>(todo.size());
  if (spec.sampling.kind == space::Sampling::Kind::adaptive && to_run > 0) {
    const std::int64_t left = std::max<std::int64_t>(summary.total - summary.already, 0);
    predicted_total *= static_cast<double>(std::min(left, to_run)) / static_cast<double>(to_run);
    to_run = std::min(left, to_run);
  }
  if (summary.already > 0) {
    fmt::print(stderr, "resuming {}: {} of {} configs already recorded, {} to run\n",
               o.out_path.string(), summary.already, summary.total, to_run);
  }
  Progress progress(to_run, predicted_total, stderr, o.plain_progress);
  auto count = [&](const store::RunRecord& record, const PlannedConfig& p) {
    ++summary.ran;
    ++summary.by_status[record.status];
    progress.done(record.status, p.predicted_total_s, p.config.label());
  };
  const BatchSink batch_sink = [&](const std::vector<store::RunRecord>& records,
                                   const std::vector<const PlannedConfig*>& planned) {
    writer->write_many(records);  // durable before any of them counts as done
    for (std::size_t i = 0; i < records.size(); ++i) count(records[i], *planned[i]);
  };
  const auto sink = [&](store::RunRecord&& record, const PlannedConfig& p) {
    writer->write(record);
    count(record, p);
  };

  if (spec.sampling.kind == space::Sampling::Kind::adaptive) {
    run_adaptive({o, spec, peaks, mpi, ctx, executor, active_workers, farm_options}, writer,
                 std::move(adaptive_points), batch_sink, sink, progress, summary);
    summary.wall_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return summary;
  }

  // Configs that would not run here are recorded without dispatching them.
  std::vector<PlannedConfig> runnable;
  std::vector<store::RunRecord> skipped;
  std::vector<const PlannedConfig*> skipped_planned;
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
    skipped.push_back(std::move(record));
    skipped_planned.push_back(&p);
  }
  if (!skipped.empty()) batch_sink(skipped, skipped_planned);

  if (mpi.size() > 1) {
    const FarmResult r =
        farm_master(mpi, runnable, active_workers, batch_sink, &progress, farm_options);
    summary.interrupted = r.interrupted;
    summary.workers = r.workers;
    summary.farm_wall_s = r.wall_s;
    summary.farm_recorded = r.recorded;
  } else if (o.in_process) {
    InProcessRunner runner(ctx);
    run_in_process(runner, runnable, sink, summary);
  } else {
    ExecutorProcessRunner runner(executor, ctx);
    run_serial(runner, runnable, sink, o, summary);
  }
  progress.finish();
  summary.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace dnnscape::orchestrator
