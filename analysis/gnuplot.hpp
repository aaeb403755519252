// Renders a gnuplot script to SVG and PNG. gnuplot-nox provides the svg and pngcairo terminals.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dnnscape::analysis {

// Runs `script` (which must not set a terminal or output) once per format; writes
// BASE.svg and BASE.png. size is in pixels. Throws std::runtime_error with gnuplot's stderr.
std::vector<std::filesystem::path> render(const std::string& script,
                                          const std::filesystem::path& base, int width, int height);

// Quotes a string for a gnuplot double-quoted literal.
std::string gp_quote(const std::string& s);

}  // namespace dnnscape::analysis
