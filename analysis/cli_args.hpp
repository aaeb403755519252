// Command-line parsing shared by the analysis and model subcommands (internal to analysis/).
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace dnnscape::analysis {

// Parses `opts` plus any number of positional inputs (stored under "input"). Returns false
// after printing `opts` for --help.
bool parse_with_inputs(const std::vector<std::string>& args,
                       const boost::program_options::options_description& opts,
                       boost::program_options::variables_map& vm);

}  // namespace dnnscape::analysis
