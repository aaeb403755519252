// regress, compare and report on a synthetic results file of N rows (default 1,000,000), against
// the same computations in pandas + statsmodels (bench_analysis_pandas.py), side by side in one
// run. The C++ side runs in this process; the Python side is timed by itself inside a subprocess
// (its interpreter start-up and imports are not counted).
//
//   bench_analysis [ROWS] [WORK_DIR]
#include <fmt/format.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "analysis/compare.hpp"
#include "analysis/regress.hpp"
#include "analysis/report.hpp"
#include "store/results.hpp"

namespace fs = std::filesystem;
using namespace dnnscape;

namespace {

const char* kPython = "/usr/bin/python3";

int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (pclose(p) != 0) out.clear();
  return out;
}

// A dnnscape/1 file written by the real ResultsWriter (two rows, so every column has the
// writer's type), then grown to `rows` rows by the Python generator through h5py: writing a
// million rows one durable append at a time would take the bench's whole budget.
void make_file(const fs::path& path, long rows, const fs::path& script) {
  fs::remove(path);
  store::FileMeta meta;
  meta.tool_version = "bench";
  meta.spec_name = "bench-analysis";
  meta.spec_yaml = "name: bench-analysis\n";
  store::SystemInfo sys;
  sys.hostname = "synthetic";
  sys.cpu_model = "synthetic";
  sys.peak_gflops_f32 = 300;
  sys.peak_gflops_bf16 = 600;
  sys.mem_bandwidth_gbs = 20;
  {
    auto w = store::ResultsWriter::create(path, meta, sys);
    for (const char* dtype : {"f32", "bf16"}) {
      store::RunRecord r;
      r.config.layers = 1;
      r.config.nodes = 32;
      r.config.input = 2000;
      r.config.output = 200;
      r.config.batch = 16;
      r.config.knobs.dtype = dtype;
      r.config_id = r.config.config_id();
      r.metrics.step_time_s = 1e-3;
      w.write(r);
    }
  }
  const auto cmd = fmt::format("{} {} make {} {}", kPython, script.string(), path.string(), rows);
  if (run(cmd) != 0) throw std::runtime_error("generator failed: " + cmd);
}

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const long rows = argc > 1 ? std::atol(argv[1]) : 1'000'000;
  const fs::path dir =
      argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "dnnscape-bench-analysis";
  const auto script = fs::path(__FILE__).parent_path() / "bench_analysis_pandas.py";
  fs::create_directories(dir);
  const auto file = dir / "bench.h5";
  fmt::print("generating {} rows in {} ...\n", rows, file.string());
  std::fflush(stdout);
  make_file(file, rows, script);

  const auto cpp_dir = dir / "cpp";
  const auto py_dir = dir / "pandas";
  fs::remove_all(cpp_dir);
  fs::remove_all(py_dir);
  fs::create_directories(cpp_dir);
  fs::create_directories(py_dir);

  analysis::RegressOptions ro;
  ro.inputs = {file};
  ro.knobs = {"dtype"};
  ro.out_dir = cpp_dir;
  analysis::CompareOptions co;
  co.inputs = {file};
  co.by = "dtype";
  co.out_dir = cpp_dir;
  analysis::ReportOptions rep;
  rep.inputs = {file};
  rep.out_dir = cpp_dir / "report";
  std::string verdict;
  const double t_regress = seconds([&] { analysis::regress(ro); });
  const double t_compare =
      seconds([&] { verdict = analysis::compare(co).comparisons.at(0).verdict; });
  const double t_report = seconds([&] { analysis::report(rep); });

  const auto out = capture(
      fmt::format("{} {} run {} {}", kPython, script.string(), file.string(), py_dir.string()));
  if (out.empty()) {
    fmt::print(stderr, "pandas side failed\n");
    return 1;
  }
  const auto py = nlohmann::json::parse(out);
  const double p_regress = py["regress"], p_compare = py["compare"], p_report = py["report"];

  fmt::print("\nanalysis on {} rows ({}; compare verdict: {})\n", rows, file.string(), verdict);
  fmt::print("{:<22} {:>12} {:>18} {:>10}\n", "analysis", "dnnscape s", "pandas+statsmodels s",
             "speedup");
  const auto line = [](const char* name, double c, double p) {
    fmt::print("{:<22} {:>12.3f} {:>18.3f} {:>9.1f}x\n", name, c, p, p / c);
  };
  line("regress", t_regress, p_regress);
  line("compare --by dtype", t_compare, p_compare);
  line("report", t_report, p_report);
  line("total", t_regress + t_compare + t_report, p_regress + p_compare + p_report);
  fmt::print("(C++ renders every figure with gnuplot; the pandas side draws none.)\n");
  return 0;
}
