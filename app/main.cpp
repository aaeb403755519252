// dnnscape: map how deep-learning workloads perform on a platform. A thin CLI over the libraries.
#include <fmt/format.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/cli.hpp"
#include "orchestrator/mpi_session.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/sweep.hpp"
#include "space/spec.hpp"
#include "store/results.hpp"
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
  peak                 measure (or show the cached) peak FLOP/s and memory bandwidth of this host
  heatmap OUT.h5       heat map of a metric over two parameters (SVG + PNG + CSV)
  regress OUT.h5       which parameters drive a metric, by how much (standardized OLS, CIs)
  roofline OUT.h5      configs and operations under the measured compute and bandwidth ceilings
  compare A.h5 B.h5    speedups per config, box plots, and a verdict: strictly/conditionally/no better
  report OUT.h5 ...    one self-contained HTML page with all of the above

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
      skipped.push_back(&p);
    } else {
      ++f.runnable;
    }
    f.flops += p.flops;
    f.time_s += p.predicted_total_s;
    f.max_memory = std::max(f.max_memory, p.memory_bytes);
    total_flops += p.flops;
    total_time += p.predicted_total_s;
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
  fmt::print("spec {} ({} configs, sampling by {})\n", spec.name, planned.size(),
             spec.sampling.kind == space::Sampling::Kind::grid ? "grid" : "sample");
  fmt::print("ceilings: {:.0f} GFLOP/s f32 peak, {:.1f} GB/s memory bandwidth (measured)\n\n",
             peaks.gflops_f32, peaks.mem_bandwidth_gbs);
  fmt::print("{:<8} {:>8} {:>9} {:>14} {:>14} {:>12}\n", "family", "configs", "runnable",
             "model FLOPs", "max memory", "est. time");
  for (const auto& [name, f] : fam) {
    fmt::print("{:<8} {:>8} {:>9} {:>14.3e} {:>14} {:>12}\n", name, f.configs, f.runnable, f.flops,
               gib(f.max_memory), orchestrator::Progress::format_duration(f.time_s));
  }
  fmt::print("\ntotal model FLOPs per step summed over configs: {:.3e}\n", total_flops);
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

int cmd_run(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape run SPEC -o OUT.h5 [options]\n\n"
      "Measures every config of SPEC on this machine, largest predicted cost first, each in a\n"
      "supervised executor process (timeouts and crashes become rows, not a dead sweep). Every\n"
      "finished config is written durably to OUT.h5 before the next starts. Running the same\n"
      "command again resumes: configs already recorded are skipped. Ctrl-C lets the running\n"
      "config finish, then stops.\n\noptions");
  opts.add_options()("help,h", "show this help")("output,o", po::value<std::string>(),
                                                 "results file (HDF5)")(
      "new-file",
      "SPEC changed since OUT.h5 was written: move the old file aside (OUT.<time>.h5), start anew")(
      "retry-failed", "rerun rows whose status is failed, crashed or timeout (replaced in place)")(
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
  o.in_process = vm.count("in-process") > 0;
  o.profile = vm.count("no-profile") == 0;
  o.plain_progress = vm.count("plain-progress") > 0;
  o.tool_version = DNNSCAPE_VERSION;
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
  fmt::print("results: {}\n", fs::absolute(s.out_path).string());
  if (s.interrupted) {
    fmt::print("stopped early; run the same command again to resume where it stopped\n");
    return 130;
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
    if (cmd == "peak") return cmd_peak(args);
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
