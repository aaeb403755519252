// How the orchestrator hands one config to a worker and gets its record back. The single-process
// sweep and every MPI worker rank use the same interface.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "space/config.hpp"
#include "store/record.hpp"
#include "worker/executor.hpp"

namespace dnnscape::orchestrator {

class ConfigRunner {
 public:
  virtual ~ConfigRunner() = default;
  ConfigRunner() = default;
  ConfigRunner(const ConfigRunner&) = delete;
  ConfigRunner& operator=(const ConfigRunner&) = delete;
  // Runs one config to a record. Never throws for the config's own failure.
  virtual store::RunRecord run(const space::Config& config) = 0;
};

// Runs configs in this process (tests, debugging). No timeout or crash containment.
class InProcessRunner final : public ConfigRunner {
 public:
  explicit InProcessRunner(worker::RunContext ctx) : ctx_(std::move(ctx)) {}
  store::RunRecord run(const space::Config& config) override {
    return worker::run_config(config, ctx_);
  }

 private:
  worker::RunContext ctx_;
};

// Runs configs in a supervised `dnnscape-executor` child (posix_spawn, JSON lines over pipes).
// A config that outlives limits.timeout_s is killed (`timeout`), a child that dies is `crashed`
// with its signal (or `failed` with "memory" when the kernel's OOM killer did it), and the child
// is restarted for the next config. Environment that oneDNN reads at start-up
// (ONEDNN_MAX_CPU_ISA, OMP_NUM_THREADS, OMP_PROC_BIND, OMP_PLACES) is set per child; a config that
// needs other values gets a fresh child.
class ExecutorProcessRunner final : public ConfigRunner {
 public:
  // What a batch should do next, asked between configs and while one runs.
  enum class Control { go_on, stop_after_current, stop_now };

  ExecutorProcessRunner(std::string executor_path, worker::RunContext ctx);
  ~ExecutorProcessRunner() override;
  store::RunRecord run(const space::Config& config) override;

  // Runs configs in order, keeping a few lines queued in the executor's stdin so that tiny
  // configs do not pay a round trip each. on_record(i, json) gets the record of configs[i] as
  // one JSON text (the executor's own line, unparsed, or a supervisor-made failure record).
  // `control` (optional) can stop the batch: stop_after_current lets the running config finish,
  // stop_now kills it unrecorded. Returns how many configs got a record (always a prefix).
  std::size_t run_batch(std::span<const space::Config> configs,
                        const std::function<void(std::size_t, std::string&&)>& on_record,
                        const std::function<Control()>& control = {});

  // Starts the executor a config like this one needs, ahead of the first config (its start-up
  // then overlaps with waiting for work). Failures surface later, per config.
  void prepare(const space::Config& config);

  // pid of the running child, or -1 (for tests that kill it).
  [[nodiscard]] int child_pid() const;

 private:
  struct Child;
  void ensure_child(const space::Config& config);
  void stop_child();
  std::string executor_path_;
  worker::RunContext ctx_;
  std::unique_ptr<Child> child_;
};

// "0-3,8" for a sorted CPU list; parse_cpu_list is its inverse.
std::string format_cpu_list(const std::vector<int>& cpus);
std::vector<int> parse_cpu_list(const std::string& text);
// CPUs of this process's affinity mask, ascending.
std::vector<int> affinity_cpus();

// Path of the dnnscape-executor program next to the running binary (or $DNNSCAPE_EXECUTOR).
std::string default_executor_path();

}  // namespace dnnscape::orchestrator
