// The Slurm commands of the dnnscape CLI (`dnnscape submit`), for app/main.cpp to dispatch to.
#pragma once

#include <string>
#include <vector>

namespace dnnscape::slurm {

// The commands slurm_command() handles: {"submit"}.
const std::vector<std::string>& slurm_commands();

// Runs `dnnscape <cmd> <args...>`. Prints its own errors (one line, "dnnscape submit: ...") and
// returns the exit code: 0 done, 2 usage / spec / unsafe value, 1 sbatch failed.
int slurm_command(const std::string& cmd, const std::vector<std::string>& args);

}  // namespace dnnscape::slurm
