// dnnscape: map how deep-learning workloads perform on a platform. A thin CLI over the libraries.
#include <fmt/format.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/cli.hpp"
#include "analysis/model_cli.hpp"
#include "orchestrator/mpi_session.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/sweep.hpp"
#include "slurm/cli.hpp"
#include "slurm/job.hpp"
#include "space/spec.hpp"
#include "store/results.hpp"
#include "worker/executor.hpp"
#include "worker/peak.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace dnnscape;

namespace {

constexpr int kExitUsage = 2;

const char* const kUsage = R"(dnnscape - parameterized deep-learning performance landscapes

usage: dnnscape <command> [options]     (dnnscape <command> --help for details)

commands:
  plan SPEC            what a sweep would run: configs per family, FLOPs, memory, time; runs nothing
  run SPEC -o OUT.h5   measure every config of SPEC on this machine into an HDF5 results file
                       (resumes when OUT.h5 exists)
  submit SPEC -o OUT.h5 --time T
                       the sweep as a Slurm batch job that checkpoints and requeues itself at
                       the time limit until it is complete
  status OUT.h5        progress of a sweep (running or not): done, failed, remaining, ETA, failures
  peak                 measure (or show the cached) peak FLOP/s and memory bandwidth of this host
  heatmap OUT.h5       heat map of a metric over two parameters (SVG + PNG + CSV)
  regress OUT.h5       which parameters drive a metric, by how much (standardized OLS, CIs)
  roofline OUT.h5      configs and operations under the measured compute and bandwidth ceilings
  compare A.h5 B.h5    speedups per config, box plots, and a verdict: strictly/conditionally/no better
  budget OUT.h5 ...    which configs meet a latency budget (--preset cv|nlp|feed), as a rule
  report OUT.h5 ...    one self-contained HTML page with all of the above
  model fit OUT.h5 ... -o MODEL.json
                       a performance model of the landscape, with its cross-validated error
  predict MODEL.json (SPEC | --config k=v ...)
                       predicted metric with a 90% interval, flagged where it extrapolates

Start with: dnnscape plan examples/quickstart.yaml
)";

// Usage problems are one line on stderr and exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

po::variables_map parse(const std::vector<std::string>& args,
                        const po::options_description& visible,
                        const po::positional_options_description& pos,
                        const po::options_description& hidden = {}) {
  po::options_description all;
  all.add(visible).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  return vm;
}

worker::Peaks peaks_for_run(bool quiet) {
  if (auto p = worker::load_cached_peaks()) return *p;
  if (!quiet)
    fmt::print(stderr,
               "measuring this host's peak FLOP/s and memory bandwidth once (cached in {}) ...\n",
               worker::peak_cache_path().string());
  return worker::cached_or_measured_peaks(false);
}

std::string gib(double bytes) {
  return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
}

// ---- plan ------------------------------------------------------------------------------------

int cmd_plan(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape plan SPEC [--json]\n\n"
      "Expands and validates SPEC and predicts, with the roofline cost model\n"
      "max(flops / peak, bytes / bandwidth) from this host's measured ceilings,\n"
      "what a run would do. Nothing is run or written.\n\noptions");
  opts.add_options()("help,h", "show this help")("json", "print the plan as JSON");
  po::options_description hidden;
  hidden.add_options()("spec", po::value<std::string>(), "spec");
  po::positional_options_description pos;
  pos.add("spec", 1);
  auto vm = parse(args, opts, pos, hidden);
  if (vm.count("help")) {
    std::cout << opts << '\n';
    return 0;
  }
  if (!vm.count("spec")) throw UsageError("plan needs a SPEC file (dnnscape plan --help)");
  const auto spec = space::load_spec(vm["spec"].as<std::string>());
  const auto peaks = peaks_for_run(vm.count("json") > 0);
  const auto planned = orchestrator::plan_configs(spec, peaks);

  struct FamilyPlan {
    std::int64_t configs = 0, runnable = 0;
    double flops = 0, time_s = 0, max_memory = 0;
  };
  std::map<std::string, FamilyPlan> fam;
  double total_flops = 0, total_time = 0, max_mem = 0;
  std::string max_mem_label;
  std::vector<const orchestrator::PlannedConfig*> skipped;
  for (const auto& p : planned) {
    auto& f = fam[std::string(space::to_string(p.config.family))];
    ++f.configs;
    if (!p.skip_reason.empty()) {
      // Not run: no FLOPs or time (a config oneDNN or the CPU cannot build has NaN counts).
      skipped.push_back(&p);
    } else {
      ++f.runnable;
      f.flops += p.flops;
      f.time_s += p.predicted_total_s;
      total_flops += p.flops;
      total_time += p.predicted_total_s;
    }
    if (!std::isfinite(p.memory_bytes)) continue;
    f.max_memory = std::max(f.max_memory, p.memory_bytes);
    if (p.memory_bytes > max_mem) {
      max_mem = p.memory_bytes;
      max_mem_label = p.config.label();
    }
  }
  if (vm.count("json")) {
    nlohmann::json j;
    j["spec"] = spec.name;
    j["spec_sha256"] = spec.sha256;
    j["configs"] = planned.size();
    j["total_flops"] = total_flops;
    j["max_memory_bytes"] = max_mem;
    j["max_memory_config"] = max_mem_label;
    j["estimated_time_s"] = total_time;
    j["peak_gflops_f32"] = peaks.gflops_f32;
    j["mem_bandwidth_gbs"] = peaks.mem_bandwidth_gbs;
    for (const auto& [name, f] : fam) {
      j["families"][name] = {{"configs", f.configs},
                             {"runnable", f.runnable},
                             {"flops", f.flops},
                             {"estimated_time_s", f.time_s},
                             {"max_memory_bytes", f.max_memory}};
    }
    j["config_ids"] = nlohmann::json::array();  // in the order a run would take them
    for (const auto& p : planned) j["config_ids"].push_back(p.config_id);
    j["skipped"] = nlohmann::json::array();
    for (const auto* p : skipped) {
      j["skipped"].push_back(
          {{"config_id", p->config_id}, {"config", p->config.label()}, {"reason", p->skip_reason}});
    }
    std::cout << j.dump(2) << '\n';
    return 0;
  }
  if (spec.sampling.kind == space::Sampling::Kind::adaptive) {
    fmt::print(
        "spec {} ({} candidate configs, adaptive: {} measured, {} of them Sobol first{}; "
        "the table covers every candidate)\n",
        spec.name, planned.size(), spec.sampling.count, spec.sampling.initial,
        spec.sampling.cost_aware ? ", the rest picked per predicted second" : "");
  } else {
    fmt::print("spec {} ({} configs, sampling by {})\n", spec.name, planned.size(),
               spec.sampling.kind == space::Sampling::Kind::grid ? "grid" : "sample");
  }
  fmt::print("ceilings: {:.0f} GFLOP/s f32 peak, {:.1f} GB/s memory bandwidth (measured)\n\n",
             peaks.gflops_f32, peaks.mem_bandwidth_gbs);
  fmt::print("{:<8} {:>8} {:>9} {:>14} {:>14} {:>12}\n", "family", "configs", "runnable",
             "model FLOPs", "max memory", "est. time");
  for (const auto& [name, f] : fam) {
    fmt::print("{:<8} {:>8} {:>9} {:>14.3e} {:>14} {:>12}\n", name, f.configs, f.runnable, f.flops,
               gib(f.max_memory), orchestrator::Progress::format_duration(f.time_s));
  }
  fmt::print("\ntotal model FLOPs per step summed over the configs that run: {:.3e}\n",
             total_flops);
  fmt::print("largest predicted footprint: {} ({})\n", gib(max_mem), max_mem_label);
  fmt::print("estimated time (cost model lower bound plus measurement overhead): {}\n",
             orchestrator::Progress::format_duration(total_time));
  if (!skipped.empty()) {
    fmt::print("\n{} configs would be skipped:\n", skipped.size());
    for (const auto* p : skipped)
      fmt::print("  {}  {}: {}\n", p->config_id, p->config.label(), p->skip_reason);
  }
  return 0;
}

// ---- run -------------------------------------------------------------------------------------

// A utilization above 1 means the ceiling the file was measured against is too low (typically
// `dnnscape peak` ran while other work loaded the machine, and the cache kept it): say so once.
// The utilization of the work actually executed is what cannot exceed 1: an FC training step
// skips layer 0's backward-data pass, 2·B·(input·nodes + nodes) of the convention's FLOPs
// (docs/conventions.md), so a one-layer, wide-input model legitimately shows up to 1.5.
void warn_if_peak_too_low(const fs::path& out) {
  try {
    const store::ResultsReader r(out);
    const auto u = r.read_double("flops_utilization");
    const auto flops = r.read_double("flops");
    const auto family = r.read_string("family");
    const auto mode = r.read_string("mode");
    const auto batch = r.read_int("batch");
    const auto input = r.read_int("input");
    const auto nodes = r.read_int("nodes");
    double worst = 0;
    for (std::size_t i = 0; i < u.size(); ++i) {
      if (!std::isfinite(u[i])) continue;
      double executed = 1;
      if (family[i] == "fc" && mode[i] == "training" && flops[i] > 0) {
        const auto b = static_cast<double>(batch[i]);
        const auto in = static_cast<double>(input[i]);
        const auto n = static_cast<double>(nodes[i]);
        executed = std::max(1 - 2 * b * (in * n + n) / flops[i], 0.1);
      }
      worst = std::max(worst, u[i] * executed);
    }
    if (worst <= 1.05) return;
    fmt::print(stderr,
               "warning: the utilization of the executed FLOPs reaches {:.2f}: the measured peak "
               "in this file ({:.0f} GFLOP/s f32) is too low, probably measured while the "
               "machine was busy; measure it again on a quiet machine with `dnnscape peak "
               "--force` (utilization is recomputed from gflops and the peak, so existing rows "
               "can be rescaled)\n",
               worst, r.system().peak_gflops_f32);
  } catch (const std::exception&) {
    // Only a hint: a file that cannot be read back is reported elsewhere.
  }
}

int cmd_run(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape run SPEC -o OUT.h5 [options]\n\n"
      "Measures every config of SPEC on this machine, largest predicted cost first, each in a\n"
      "supervised executor process (timeouts and crashes become rows, not a dead sweep). Every\n"
      "finished config is written durably to OUT.h5 before it counts as done. Running the same\n"
      "command again resumes: configs already recorded are skipped. Ctrl-C (SIGINT), SIGTERM or\n"
      "SIGUSR1 stop handing out work, let running configs finish (--grace-s), then exit.\n\n"
      "Under mpirun (mpirun --bind-to none -np N dnnscape run ...) rank 0 is the master and\n"
      "alone writes OUT.h5; every other rank is a worker with its own executor. Stop an MPI\n"
      "sweep with SIGUSR1 to mpirun (forwarded to every rank); SIGTERM/SIGINT to mpirun kill the\n"
      "job after a moment, which loses nothing but the running configs. docs/farm.md.\n\n"
      "options");
  opts.add_options()("help,h", "show this help")("output,o", po::value<std::string>(),
                                                 "results file (HDF5)")(
      "new-file",
      "SPEC changed since OUT.h5 was written: move the old file aside (OUT.<time>.h5), start anew")(
      "retry-failed", "rerun rows whose status is failed, crashed or timeout (replaced in place)")(
      "extend",
      "SPEC changed since OUT.h5 was written: add its new configs to OUT.h5 (rows stay; the old "
      "spec is kept in the spec_history attribute)")(
      "workers-per-node", po::value<int>()->default_value(0),
      "MPI: K worker ranks per host, each pinned to its own 1/K of the host's cores (surplus "
      "ranks idle); 0 = every worker rank works, unpinned")(
      "grace-s", po::value<double>()->default_value(60),
      "after a stop signal, running configs may finish within this many seconds")(
      "in-process", "run configs inside this process (no executor, no timeout; for debugging)")(
      "no-profile", "skip the per-operation profiled pass")(
      "plain-progress", "print progress lines instead of a redrawn bar");
  po::options_description hidden;
  hidden.add_options()("spec", po::value<std::string>(), "spec");
  po::positional_options_description pos;
  pos.add("spec", 1);
  auto vm = parse(args, opts, pos, hidden);
  if (vm.count("help")) {
    std::cout << opts << '\n';
    return 0;
  }
  if (!vm.count("spec")) throw UsageError("run needs a SPEC file (dnnscape run --help)");
  if (!vm.count("output"))
    throw UsageError("run needs -o OUT.h5, the results file to write or resume");
  orchestrator::SweepOptions o;
  o.spec_path = vm["spec"].as<std::string>();
  o.out_path = vm["output"].as<std::string>();
  o.new_file = vm.count("new-file") > 0;
  o.retry_failed = vm.count("retry-failed") > 0;
  o.extend = vm.count("extend") > 0;
  o.workers_per_node = vm["workers-per-node"].as<int>();
  o.grace_s = vm["grace-s"].as<double>();
  if (o.extend && o.new_file) throw UsageError("--extend and --new-file exclude each other");
  if (o.workers_per_node < 0) throw UsageError("--workers-per-node must be 0 or more");
  if (o.grace_s < 0) throw UsageError("--grace-s must be 0 or more");
  if (o.workers_per_node > 1 && !orchestrator::MpiSession::launched_under_mpi()) {
    throw UsageError(fmt::format(
        "--workers-per-node {0} needs that many worker ranks per host: run it under mpirun, e.g. "
        "mpirun --bind-to none -np {1} dnnscape run ... (one master plus {0} workers)",
        o.workers_per_node, o.workers_per_node + 1));
  }
  o.in_process = vm.count("in-process") > 0;
  o.profile = vm.count("no-profile") == 0;
  o.plain_progress = vm.count("plain-progress") > 0;
  o.tool_version = DNNSCAPE_VERSION;
  if (const auto job = slurm::job_from_environment()) {
    store::JobInfo j;
    j.job_id = job->job_id;
    j.array_job_id = job->array_job_id;
    j.array_task_id = job->array_task_id;
    j.restart_count = job->restart_count;
    o.job = j;
  }
  // Validate the spec before anything is measured or written.
  (void)space::load_spec(o.spec_path);
  if (o.out_path.has_parent_path()) fs::create_directories(o.out_path.parent_path());
  orchestrator::MpiSession mpi(nullptr, nullptr);
  // Each host measures its ceilings once (first process of the host), the others read the cache.
  worker::Peaks peaks;
  mpi.node_first([&] { peaks = peaks_for_run(mpi.rank() != 0); });
  orchestrator::install_stop_handlers();
  const auto s = orchestrator::run_sweep(o, peaks, mpi);
  if (s.failed_to_start) return 2;
  if (s.worker_only) return 0;
  if (!s.moved_aside.empty())
    fmt::print(stderr, "the previous file was kept as {}\n", s.moved_aside.string());
  std::string statuses;
  for (const auto& [status, n] : s.by_status)
    statuses += fmt::format("{}{} {}", statuses.empty() ? "" : ", ", n, status);
  fmt::print("{}: ran {} configs ({}) in {}; {} were already recorded; {} in the spec\n",
             s.interrupted ? "interrupted" : "done", s.ran, statuses.empty() ? "none" : statuses,
             orchestrator::Progress::format_duration(s.wall_s), s.already, s.total);
  if (s.farm_recorded > 0 && s.farm_wall_s > 0) {
    fmt::print(stderr,
               "farm: {} configs on {} workers in {:.3f} s ({:.0f} configs/s, first "
               "dispatch to last record)\n",
               s.farm_recorded, s.workers, s.farm_wall_s,
               static_cast<double>(s.farm_recorded) / s.farm_wall_s);
  }
  fmt::print("results: {}\n", fs::absolute(s.out_path).string());
  warn_if_peak_too_low(s.out_path);
  if (s.interrupted) {
    std::string again = "dnnscape run";
    for (const auto& a : args) again += " " + a;
    if (mpi.active()) again = fmt::format("mpirun -np {} {}", mpi.size(), again);
    fmt::print(
        "stopped early; every finished config is in {}. To resume where it stopped, run the same "
        "command again:\n  {}\n",
        s.out_path.string(), again);
    return 130;
  }
  return 0;
}

// ---- status ----------------------------------------------------------------------------------

// Seconds since the epoch of "2026-11-28T12:00:00Z"; NaN if it does not parse.
double parse_utc(const std::string& iso) {
  std::tm tm{};
  if (iso.size() < 19 || std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon,
                                     &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
    return std::nan("");
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<double>(timegm(&tm));
}

int cmd_status(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape status OUT.h5 [--json]\n\n"
      "How far a sweep has come, while it runs or after: configs done (ok), skipped, failed\n"
      "(failed / crashed / timeout) and remaining (the spec stored in OUT.h5, expanded again),\n"
      "per family; throughput; an ETA from the cost model scaled by how far it has been off; the\n"
      "slowest configs so far and every failure with its message. Reads the file SWMR, so it\n"
      "never disturbs the writer.\n\noptions");
  opts.add_options()("help,h", "show this help")("json", "print JSON")(
      "top", po::value<int>()->default_value(5), "how many of the slowest configs to list");
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::string>(), "file");
  po::positional_options_description pos;
  pos.add("file", 1);
  auto vm = parse(args, opts, pos, hidden);
  if (vm.count("help")) {
    std::cout << opts << '\n';
    return 0;
  }
  if (!vm.count("file")) throw UsageError("status needs a results file (dnnscape status --help)");
  const fs::path path = vm["file"].as<std::string>();
  const int top = std::max(0, vm["top"].as<int>());
  const store::ResultsReader reader(path);
  const bool live = store::ResultsWriter::is_being_written(path);
  const auto ids = reader.read_string("config_id");
  const auto families = reader.read_string("family");
  const auto statuses = reader.read_string("status");
  const auto messages = reader.read_string("message");
  const auto step = reader.read_double("step_time_s");
  const auto reps = reader.read_int("reps");
  const auto finished = reader.read_string("finished_utc");
  const auto n = static_cast<std::size_t>(reader.rows());

  // The spec's config set, expanded again from the copy in the file, with the cost model's
  // prediction of each (ceilings from /system).
  std::vector<orchestrator::PlannedConfig> planned;
  std::string spec_problem;
  std::int64_t adaptive_budget = -1;  // adaptive sampling: configs to measure of the candidates
  try {
    const auto spec = space::parse_spec(reader.meta().spec_yaml, path.string() + ":spec_yaml");
    if (spec.sampling.kind == space::Sampling::Kind::adaptive)
      adaptive_budget = spec.sampling.count;
    worker::Peaks peaks;
    const auto& sys = reader.system();
    peaks.gflops_f32 = sys.peak_gflops_f32;
    peaks.gflops_f32_1core = sys.peak_gflops_f32_1core;
    peaks.gflops_bf16 = std::isfinite(sys.peak_gflops_bf16) ? sys.peak_gflops_bf16 : 0;
    peaks.mem_bandwidth_gbs = sys.mem_bandwidth_gbs;
    planned = orchestrator::plan_configs(spec, peaks);
  } catch (const std::exception& e) {
    spec_problem = e.what();
  }
  std::map<std::string, const orchestrator::PlannedConfig*> by_id;
  for (const auto& p : planned) by_id[p.config_id] = &p;
  auto label_of = [&](std::size_t i) {
    auto it = by_id.find(ids[i]);
    return it != by_id.end() ? it->second->config.label() : families[i] + " (not in the spec)";
  };

  struct Counts {
    std::int64_t total = 0, ok = 0, skipped = 0, failed = 0, remaining = 0;
  };
  std::map<std::string, Counts> fam;
  std::map<std::string, std::int64_t> by_status;
  Counts all;
  std::map<std::string, std::size_t> row_of;
  for (std::size_t i = 0; i < n; ++i) row_of[ids[i]] = i;
  auto add = [&](Counts& c, const std::string& st) {
    if (st == "ok") {
      ++c.ok;
    } else if (st == "skipped") {
      ++c.skipped;
    } else if (st.empty()) {
      ++c.remaining;
    } else {
      ++c.failed;
    }
  };
  double predicted_left_s = 0, predicted_done_s = 0;
  for (const auto& p : planned) {
    const std::string fname(space::to_string(p.config.family));
    ++fam[fname].total;
    ++all.total;
    auto it = row_of.find(p.config_id);
    const std::string st = it == row_of.end() ? "" : statuses[it->second];
    add(fam[fname], st);
    add(all, st);
    if (st.empty()) {
      predicted_left_s += p.predicted_total_s;
    } else {
      predicted_done_s += p.predicted_total_s;
    }
  }
  for (std::size_t i = 0; i < n; ++i) ++by_status[statuses[i]];
  if (adaptive_budget >= 0 && all.remaining > 0) {
    // Adaptive: only the budget is left to measure, not every unmeasured candidate.
    const std::int64_t left = std::min(
        all.remaining, std::max<std::int64_t>(adaptive_budget - (all.total - all.remaining), 0));
    predicted_left_s *= static_cast<double>(left) / static_cast<double>(all.remaining);
    if (!vm.count("json")) {
      fmt::print(
          "adaptive sampling: {} of the {} candidates are measured, the rest predicted "
          "(/predicted)\n",
          adaptive_budget, all.total);
    }
    all.remaining = left;
  }
  if (planned.empty()) {  // no usable spec: count the rows only
    for (std::size_t i = 0; i < n; ++i) {
      add(all, statuses[i]);
      add(fam[families[i]], statuses[i]);
      ++all.total;
      ++fam[families[i]].total;
    }
  }

  // Throughput over the span of finish times; the ETA scales the cost model by how far off it
  // has been over that span.
  double first = std::nan(""), last = std::nan("");
  for (std::size_t i = 0; i < n; ++i) {
    const double t = parse_utc(finished[i]);
    if (!std::isfinite(t)) continue;
    first = std::isfinite(first) ? std::min(first, t) : t;
    last = std::isfinite(last) ? std::max(last, t) : t;
  }
  const double span_s = std::isfinite(first) ? last - first : 0;
  const double per_s = span_s > 0 ? static_cast<double>(n > 0 ? n - 1 : 0) / span_s : std::nan("");
  const double ratio = span_s > 0 && predicted_done_s > 0 ? span_s / predicted_done_s : 1.0;
  const double eta_s = all.remaining > 0 ? predicted_left_s * ratio : 0.0;

  std::vector<std::size_t> slow;
  for (std::size_t i = 0; i < n; ++i)
    if (statuses[i] == "ok" && std::isfinite(step[i])) slow.push_back(i);
  auto measured_s = [&](std::size_t i) {
    return step[i] * static_cast<double>(std::max<std::int64_t>(reps[i], 1));
  };
  std::sort(slow.begin(), slow.end(),
            [&](std::size_t a, std::size_t b) { return measured_s(a) > measured_s(b); });
  if (slow.size() > static_cast<std::size_t>(top)) slow.resize(static_cast<std::size_t>(top));
  std::vector<std::size_t> failures;
  for (std::size_t i = 0; i < n; ++i)
    if (statuses[i] == "failed" || statuses[i] == "crashed" || statuses[i] == "timeout")
      failures.push_back(i);

  if (vm.count("json")) {
    nlohmann::json j;
    j["file"] = path.string();
    j["spec"] = reader.meta().spec_name;
    j["spec_sha256"] = reader.meta().spec_sha256;
    j["running"] = live;
    j["rows"] = n;
    auto counts = [](const Counts& c) {
      return nlohmann::json{{"total", c.total},
                            {"done", c.ok},
                            {"skipped", c.skipped},
                            {"failed", c.failed},
                            {"remaining", c.remaining}};
    };
    j["configs"] = counts(all);
    for (const auto& [name, c] : fam) j["families"][name] = counts(c);
    j["by_status"] = by_status;
    j["throughput_configs_per_s"] = std::isfinite(per_s) ? nlohmann::json(per_s) : nlohmann::json();
    j["span_s"] = span_s;
    j["first_finished_utc"] =
        n > 0 ? nlohmann::json(*std::min_element(finished.begin(), finished.end()))
              : nlohmann::json();
    j["last_finished_utc"] =
        n > 0 ? nlohmann::json(*std::max_element(finished.begin(), finished.end()))
              : nlohmann::json();
    j["eta_s"] = eta_s;
    j["predicted_remaining_s"] = predicted_left_s;
    j["model_ratio"] = ratio;
    if (!spec_problem.empty()) j["spec_problem"] = spec_problem;
    j["slowest"] = nlohmann::json::array();
    for (auto i : slow)
      j["slowest"].push_back({{"config_id", ids[i]},
                              {"config", label_of(i)},
                              {"step_time_s", step[i]},
                              {"reps", reps[i]},
                              {"measured_s", measured_s(i)}});
    j["failures"] = nlohmann::json::array();
    for (auto i : failures)
      j["failures"].push_back({{"config_id", ids[i]},
                               {"config", label_of(i)},
                               {"status", statuses[i]},
                               {"message", messages[i]}});
    std::cout << j.dump(2) << '\n';
    return 0;
  }
  fmt::print("{}: spec '{}' (sha256 {}...), {}\n", path.string(), reader.meta().spec_name,
             reader.meta().spec_sha256.substr(0, 12),
             live ? "sweep running (a writer holds the file)" : "no sweep writing it now");
  if (!spec_problem.empty()) fmt::print("cannot expand the stored spec: {}\n", spec_problem);
  std::string breakdown;
  for (const auto& st : {"failed", "crashed", "timeout"}) {
    if (auto it = by_status.find(st); it != by_status.end())
      breakdown += fmt::format("{}{} {}", breakdown.empty() ? "" : ", ", it->second, st);
  }
  fmt::print("configs: {} in the spec: {} done, {} skipped, {} failed{}, {} remaining\n", all.total,
             all.ok, all.skipped, all.failed, breakdown.empty() ? "" : " (" + breakdown + ")",
             all.remaining);
  fmt::print("\n{:<8} {:>7} {:>7} {:>8} {:>7} {:>10}\n", "family", "total", "done", "skipped",
             "failed", "remaining");
  for (const auto& [name, c] : fam)
    fmt::print("{:<8} {:>7} {:>7} {:>8} {:>7} {:>10}\n", name, c.total, c.ok, c.skipped, c.failed,
               c.remaining);
  fmt::print("\n");
  if (std::isfinite(per_s)) {
    fmt::print("throughput: {:.2f} configs/s ({:.1f}/min) over {} of finish times\n", per_s,
               per_s * 60, orchestrator::Progress::format_duration(span_s));
  } else {
    fmt::print("throughput: not yet measurable ({} rows)\n", n);
  }
  if (all.remaining > 0) {
    fmt::print(
        "ETA: {} for {} remaining configs (cost model {} x {:.2f}, its observed "
        "error so far){}\n",
        orchestrator::Progress::format_duration(eta_s), all.remaining,
        orchestrator::Progress::format_duration(predicted_left_s), ratio,
        live ? "" : "; nothing is running: resume with the same dnnscape run command");
  } else {
    fmt::print("ETA: nothing remains\n");
  }
  if (!slow.empty()) {
    fmt::print("\nslowest so far (median step x reps):\n");
    for (auto i : slow)
      fmt::print("  {:>9.3f} s  {}  {} (step {:.3g} s x {})\n", measured_s(i), ids[i], label_of(i),
                 step[i], reps[i]);
  }
  if (!failures.empty()) {
    fmt::print("\nfailures ({}):\n", failures.size());
    for (auto i : failures)
      fmt::print("  {:<8} {}  {}: {}\n", statuses[i], ids[i], label_of(i), messages[i]);
  }
  return 0;
}

// ---- peak ------------------------------------------------------------------------------------

int cmd_peak(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape peak [--force] [--json]\n\n"
      "Peak f32 (and bf16) FLOP/s from an FMA kernel with enough independent\n"
      "accumulators, for one core and all cores, and memory bandwidth from a\n"
      "STREAM triad over 1.5 GiB; best of 5 trials. Cached per host; runs read\n"
      "the cache.\n\noptions");
  opts.add_options()("help,h", "show this help")("force", "measure again even if cached")(
      "json", "print JSON");
  auto vm = parse(args, opts, {});
  if (vm.count("help")) {
    std::cout << opts << '\n';
    return 0;
  }
  const auto p = worker::cached_or_measured_peaks(vm.count("force") > 0);
  if (vm.count("json")) {
    std::cout << nlohmann::json{{"host", p.host},
                                {"cpu_model", p.cpu_model},
                                {"threads", p.threads},
                                {"kernel", p.kernel},
                                {"gflops_f32", p.gflops_f32},
                                {"gflops_f32_1core", p.gflops_f32_1core},
                                {"gflops_bf16", p.gflops_bf16},
                                {"mem_bandwidth_gbs", p.mem_bandwidth_gbs},
                                {"measured_utc", p.measured_utc},
                                {"cache", worker::peak_cache_path().string()}}
                     .dump(2)
              << '\n';
    return 0;
  }
  fmt::print("host            {} ({}, {} CPUs)\n", p.host, p.cpu_model, p.threads);
  fmt::print("peak f32        {:.1f} GFLOP/s all cores, {:.1f} GFLOP/s one core ({})\n",
             p.gflops_f32, p.gflops_f32_1core, p.kernel);
  if (p.gflops_bf16 > 0) {
    fmt::print("peak bf16       {:.1f} GFLOP/s all cores (vdpbf16ps)\n", p.gflops_bf16);
  } else {
    fmt::print("peak bf16       n/a (no avx512_bf16)\n");
  }
  fmt::print("memory bandwidth {:.1f} GB/s (triad)\n", p.mem_bandwidth_gbs);
  fmt::print("measured        {} (cache {})\n", p.measured_utc, worker::peak_cache_path().string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? kExitUsage : 0;
  }
  if (args[0] == "--version") {
    std::cout << "dnnscape " << DNNSCAPE_VERSION << '\n';
    return 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "plan") return cmd_plan(args);
    if (cmd == "run") return cmd_run(args);
    if (cmd == "status") return cmd_status(args);
    if (cmd == "peak") return cmd_peak(args);
    if (cmd == "model" || cmd == "predict") {
      // The cost model's counts of a config (the analysis library does not link the worker).
      return analysis::model_command(cmd, args, [](const space::Config& c) {
        const store::RunRecord r = worker::predicted_record(c, {});
        model::Point p;
        p.config = c;
        p.flops = r.metrics.flops;
        p.bytes = r.metrics.bytes;
        p.params = r.metrics.params;
        return p;
      });
    }
    const auto& slurm_cmds = slurm::slurm_commands();
    if (std::find(slurm_cmds.begin(), slurm_cmds.end(), cmd) != slurm_cmds.end()) {
      return slurm::slurm_command(cmd, args);
    }
    const auto& analysis_cmds = analysis::analysis_commands();
    if (std::find(analysis_cmds.begin(), analysis_cmds.end(), cmd) != analysis_cmds.end()) {
      return analysis::analysis_command(cmd, args);
    }
    fmt::print(stderr, "dnnscape: unknown command '{}' (dnnscape --help lists them)\n", cmd);
    return kExitUsage;
  } catch (const space::SpecError& e) {
    fmt::print(stderr, "{}\n", e.what());
    return kExitUsage;
  } catch (const UsageError& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return kExitUsage;
  } catch (const orchestrator::SweepError& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return 1;
  }
}
