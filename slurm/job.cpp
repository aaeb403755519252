#include "slurm/job.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "slurm/process.hpp"
#include "slurm/script.hpp"

namespace dnnscape::slurm {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string first_line_trimmed(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  const auto b = line.find_first_not_of(" \t\r");
  const auto e = line.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : line.substr(b, e - b + 1);
}

// Restarts seen by the batch script for this job (the last "start" event), -1 if none.
std::int64_t last_restart(const std::filesystem::path& results_file, const std::string& job_id) {
  std::ifstream in(sidecar_path(results_file));
  std::string line;
  std::int64_t restart = -1;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.value("event", "") == "start" && j.value("job_id", "") == job_id)
        restart = j.value("restart_count", std::int64_t{0});
    } catch (const std::exception&) {
      // a line cut short by a crash: skip it
    }
  }
  return restart;
}

}  // namespace

std::string JobEnvironment::label() const {
  std::string s = "job " + job_id;
  if (!array_job_id.empty()) s += fmt::format(" ({}_{})", array_job_id, array_task_id);
  return s + fmt::format(" restart {}", restart_count);
}

std::optional<JobEnvironment> job_from_environment() {
  JobEnvironment j;
  j.job_id = env("SLURM_JOB_ID");
  if (j.job_id.empty()) j.job_id = env("DNNSCAPE_SLURM_JOB_ID");
  if (j.job_id.empty()) return std::nullopt;
  j.array_job_id = env("SLURM_ARRAY_JOB_ID");
  j.array_task_id = env("SLURM_ARRAY_TASK_ID");
  std::string restarts = env("SLURM_RESTART_COUNT");
  if (restarts.empty()) restarts = env("DNNSCAPE_SLURM_RESTART_COUNT");
  try {
    j.restart_count = restarts.empty() ? 0 : std::stoll(restarts);
  } catch (const std::exception&) {
    j.restart_count = 0;
  }
  j.cluster = env("SLURM_CLUSTER_NAME");
  j.partition = env("SLURM_JOB_PARTITION");
  j.nodelist = env("SLURM_JOB_NODELIST");
  return j;
}

std::string last_job_id(const std::filesystem::path& results_file) {
  std::ifstream in(sidecar_path(results_file));
  std::string line, id;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      // The submission records the id sbatch gave ("123" or "123_4" for an array task); the
      // job records its own.
      if (auto v = j.value("job_id", std::string{}); !v.empty()) id = v;
    } catch (const std::exception&) {
    }
  }
  return id;
}

// Slurm's commands retry a missing slurm.conf for a minute: without one, Slurm is unreachable.
static bool slurm_configured() {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const std::string conf = env("SLURM_CONF"); !conf.empty()) return fs::exists(conf, ec);
  return fs::exists("/etc/slurm/slurm.conf", ec) || fs::exists("/run/slurm/conf/slurm.conf", ec);
}

std::string slurm_job_state(const std::filesystem::path& results_file) {
  const std::string id = last_job_id(results_file);
  if (id.empty() || !slurm_configured()) return "";
  std::string state;
  // -t all: squeue also knows jobs that ended within MinJobAge (default 5 minutes).
  const auto q = run_command({"squeue", "-h", "-t", "all", "-j", id, "-o", "%T"}, "", 5);
  if (q.exit_code == 0) state = first_line_trimmed(q.out);
  if (state.empty()) {
    const auto a = run_command({"sacct", "-n", "-X", "-P", "-j", id, "-o", "State"}, "", 5);
    if (a.exit_code == 0) state = first_line_trimmed(a.out);
  }
  if (state.empty()) return "";
  const std::int64_t restart = last_restart(results_file, id);
  return restart > 0 ? fmt::format("job {} {} (restart {})", id, state, restart)
                     : fmt::format("job {} {}", id, state);
}

}  // namespace dnnscape::slurm
