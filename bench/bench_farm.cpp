// The MPI farm, measured through the real binaries (mpirun -> dnnscape run -> master/worker
// ranks -> dnnscape-executor), with the executor's synthetic hooks (app/executor_main.cpp):
//  (a) dispatch: no-op configs per second for 1, 2 and 4 workers (master, MPI, executor pipes,
//      JSON, and the batched HDF5 writes included; mpirun start-up and planning excluded: the
//      master times first dispatch to last record and prints it as the `farm:` line);
//  (b) balance: sleep tasks with heavy-tailed (Pareto) durations; makespan over the lower bound
//      max(total / N, longest) for N = 2, 4, 8 workers.
// Oversubscribed on a small machine is fine: the no-op executors and sleeping tasks need little
// CPU. Usage: bench_farm [--configs N] [--tasks N] [--repeat R] [--dnnscape PATH]
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Farm {
  double wall_s = 0;     // first dispatch to last record (the master's own timing)
  double process_s = 0;  // mpirun start to exit
  long configs = 0;
};

std::string run_capture(const std::string& cmd) {
  std::array<char, 4096> buf{};
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("popen failed");
  while (std::fgets(buf.data(), buf.size(), p) != nullptr) out += buf.data();
  const int rc = ::pclose(p);
  if (rc != 0) throw std::runtime_error(fmt::format("'{}' failed ({}):\n{}", cmd, rc, out));
  return out;
}

Farm run_farm(const std::string& dnnscape, const fs::path& spec, int workers,
              const std::string& mode, const fs::path& dir) {
  const fs::path out = dir / "bench.h5";
  fs::remove(out);
  const std::string cmd = fmt::format(
      "DNNSCAPE_EXECUTOR_SYNTHETIC={} mpirun --oversubscribe --bind-to none -np {} "
      "-x DNNSCAPE_EXECUTOR_SYNTHETIC {} run {} -o {} --plain-progress --no-profile 2>&1",
      mode, workers + 1, dnnscape, spec.string(), out.string());
  const auto t0 = std::chrono::steady_clock::now();
  const std::string text = run_capture(cmd);
  Farm f;
  f.process_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::smatch m;
  static const std::regex line(R"(farm: (\d+) configs on (\d+) workers in ([0-9.]+) s)");
  if (!std::regex_search(text, m, line)) throw std::runtime_error("no farm line in:\n" + text);
  f.configs = std::stol(m[1]);
  f.wall_s = std::stod(m[3]);
  return f;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string l;
  while (std::getline(in, l))
    if (l.rfind("model name", 0) == 0) return l.substr(l.find(':') + 2);
  return "?";
}

int run(int argc, char** argv) {
  int configs_side = 100;  // (a): side x side no-op configs
  int tasks = 300;         // (b)
  int repeat = 3;
  std::string dnnscape;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--configs") {
      configs_side = static_cast<int>(std::lround(std::sqrt(std::stod(next()))));
    } else if (a == "--tasks") {
      tasks = std::stoi(next());
    } else if (a == "--repeat") {
      repeat = std::stoi(next());
    } else if (a == "--dnnscape") {
      dnnscape = next();
    } else {
      fmt::print(stderr,
                 "usage: bench_farm [--configs N] [--tasks N] [--repeat R] [--dnnscape PATH]\n");
      return 2;
    }
  }
  if (dnnscape.empty())
    dnnscape = (fs::read_symlink("/proc/self/exe").parent_path() / "dnnscape").string();
  const fs::path dir = fs::temp_directory_path() / fmt::format("bench_farm.{}", ::getpid());
  fs::create_directories(dir);
  fmt::print("bench_farm: {} ({} logical CPUs), {} repeat(s), median reported\n", cpu_model(),
             sysconf(_SC_NPROCESSORS_ONLN), repeat);

  // (a) Dispatch.
  const fs::path noop = dir / "noop.yaml";
  std::ofstream(noop) << fmt::format(
      "name: bench-dispatch\nfamilies:\n  fc:\n    layers: {{range: [1, {0}, 1]}}\n"
      "    nodes: {{range: [1, {0}, 1]}}\n    input: 8\n    output: 4\n    batch: 2\n"
      "knobs:\n  mode: [training]\nsampling: grid\n"
      "measure: {{warmup_s: 0.01, min_reps: 6, max_reps: 6, target_ci: 0.5, max_time_s: 0.1}}\n"
      "limits: {{memory_fraction: 0.7, timeout_s: 60}}\n",
      configs_side);
  fmt::print("\n(a) dispatch: {} no-op configs through mpirun/master/worker/executor/HDF5\n\n",
             configs_side * configs_side);
  fmt::print(
      "| workers | configs/s (first dispatch to last record) | configs/s incl. mpirun start-up and "
      "planning |\n");
  fmt::print(
      "|--------:|------------------------------------------:|-------------------------------------"
      "-------:|\n");
  for (int w : {1, 2, 4}) {
    std::vector<double> rate, whole;
    for (int r = 0; r < repeat; ++r) {
      const Farm f = run_farm(dnnscape, noop, w, "noop", dir);
      rate.push_back(static_cast<double>(f.configs) / f.wall_s);
      whole.push_back(static_cast<double>(f.configs) / f.process_s);
    }
    fmt::print("| {:7} | {:41.0f} | {:43.0f} |\n", w, median(rate), median(whole));
    std::fflush(stdout);
  }

  // (b) Balance: Pareto(alpha 1.5, x_m 20 ms) durations, capped at 1.5 s, distinct integers (ms).
  std::mt19937_64 rng(20261128);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::set<long> ms;
  while (static_cast<int>(ms.size()) < tasks) {
    const double x = 20.0 / std::pow(1.0 - u(rng), 1.0 / 1.5);
    long v = std::lround(std::min(x, 1500.0));
    while (ms.contains(v)) ++v;
    ms.insert(v);
  }
  const double total_s = static_cast<double>(std::accumulate(ms.begin(), ms.end(), 0L)) / 1e3;
  const double longest_s = static_cast<double>(*ms.rbegin()) / 1e3;
  std::string batches;
  for (long v : ms) batches += fmt::format("{}{}", batches.empty() ? "" : ", ", v);
  const fs::path sleep = dir / "sleep.yaml";
  std::ofstream(sleep) << fmt::format(
      "name: bench-balance\nfamilies:\n  fc:\n    layers: 1\n    nodes: 4\n    input: 4\n"
      "    output: 2\n    batch: [{}]\nknobs:\n  mode: [training]\nsampling: grid\n"
      "measure: {{warmup_s: 0, min_reps: 6, max_reps: 6, target_ci: 0.5, max_time_s: 0.1}}\n"
      "limits: {{memory_fraction: 0.7, timeout_s: 60}}\n",
      batches);
  fmt::print(
      "\n(b) balance: {} sleep tasks, Pareto(alpha 1.5, x_m 20 ms) capped at 1.5 s: total {:.2f} "
      "s, "
      "longest {:.3f} s, median {:.3f} s\n\n",
      tasks, total_s, longest_s, static_cast<double>(*std::next(ms.begin(), tasks / 2)) / 1e3);
  fmt::print("| workers | lower bound max(total/N, longest) s | makespan s | makespan / bound |\n");
  fmt::print("|--------:|------------------------------------:|-----------:|-----------------:|\n");
  for (int w : {2, 4, 8}) {
    const double bound = std::max(total_s / w, longest_s);
    std::vector<double> span;
    for (int r = 0; r < repeat; ++r)
      span.push_back(run_farm(dnnscape, sleep, w, "sleep", dir).wall_s);
    const double m = median(span);
    fmt::print("| {:7} | {:35.3f} | {:10.3f} | {:16.3f} |\n", w, bound, m, m / bound);
    std::fflush(stdout);
  }
  fs::remove_all(dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The bench starts mpirun itself; Open MPI refuses root unless told (the tests do the same).
  if (::geteuid() == 0) {
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  }
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_farm: {}\n", e.what());
    return 1;
  }
}
