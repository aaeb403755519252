// One self-contained HTML page over one or more results files: provenance, sweep summary, heat
// maps, regression, roofline and comparison, each with its plain-text finding; figures are inline
// SVG, so the page needs no network and no other file. The CSV tables are written beside it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace dnnscape::analysis {

struct ReportOptions {
  std::vector<std::filesystem::path> inputs;
  std::string metric = "flops_utilization";
  std::string where;
  std::filesystem::path out_dir;
  int bootstrap = 1000;
  std::uint64_t seed = 1;
};

struct ReportResult {
  std::filesystem::path html;
  std::vector<std::filesystem::path> files;  // everything written (html, svg, png, csv)
  std::vector<std::string> sections;         // section titles, in page order
  std::string finding;
  [[nodiscard]] std::string json() const;
};

ReportResult report(const ReportOptions& options);

// HTML-escapes text (& < > " ').
std::string html_escape(const std::string& s);
// An SVG file's <svg> element, ready to inline: prolog removed, ids prefixed so several figures
// can share a page, gnuplot's onload hook removed (the page runs no plot scripts).
std::string inline_svg(const std::filesystem::path& svg, const std::string& id_prefix);

}  // namespace dnnscape::analysis
