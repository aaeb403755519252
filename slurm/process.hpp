// Runs a Slurm command (sbatch, squeue, sacct) without a shell: argv as given, stdin from a string,
// stdout and stderr captured, killed after a timeout so an unreachable controller cannot hang us.
#pragma once

#include <string>
#include <vector>

namespace dnnscape::slurm {

struct CommandResult {
  int exit_code = -1;  // -1: could not start, killed by a signal, or timed out
  bool started = false;
  bool timed_out = false;
  std::string out, err;
};

CommandResult run_command(const std::vector<std::string>& argv, const std::string& stdin_text = "",
                          double timeout_s = 30);

}  // namespace dnnscape::slurm
