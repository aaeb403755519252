// The analysis subcommands of the dnnscape CLI (regress, compare, roofline, report, budget and
// the extended heatmap), parsed with Boost.Program_options; app/main.cpp dispatches to it.
#pragma once

#include <string>
#include <vector>

namespace dnnscape::analysis {

// Runs `dnnscape CMD ARGS...` for CMD in analysis_commands(). Prints the finding (or --json) on
// stdout and returns 0; a usage or input problem prints one line on stderr and returns 2; any
// other failure prints one line and returns 1.
int analysis_command(const std::string& cmd, const std::vector<std::string>& args);

// The subcommands analysis_command handles.
const std::vector<std::string>& analysis_commands();

}  // namespace dnnscape::analysis
