// The rows an analysis works on: the ok rows of one results file that pass a --where filter,
// holding only the columns the analysis asked for (numeric ones as double, text ones as codes).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "store/record.hpp"

namespace dnnscape::analysis {

// Bad user input to an analysis (unknown column, bad --where expression, too few rows): the CLI
// prints the message on one line and exits with code 2.
class InputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Why a finding can show more than the measured f32 peak (roofline, flops_utilization heat maps).
inline constexpr const char* kAbovePeakNote =
    "gflops counts ParaDnn's model FLOPs, which include work a training step does not execute "
    "(layer 0's backward-data pass, docs/conventions.md); much more than that share means the "
    "peak was measured on a busy machine (`dnnscape peak --force`).";

// Schema dnnscape/1 column groups.
inline constexpr std::array<std::string_view, 11> kNumericParams = {
    "layers", "nodes", "input",     "output", "batch", "filters",
    "blocks", "image", "embedding", "length", "vocab"};
inline constexpr std::array<std::string_view, 2> kTextParams = {"block_fn", "cell"};
inline constexpr std::array<std::string_view, 5> kKnobs = {"mode", "dtype", "algorithm", "isa_cap",
                                                           "threads"};

// True for the text columns of /runs (family, status, knobs like dtype, provenance strings).
bool is_text_column(std::string_view name);
// Metrics where smaller is better (times, energy, variation, footprint).
bool lower_is_better(std::string_view metric);

// Now, ISO 8601 UTC ("2026-12-02T15:00:00Z"): when a report or model file was made.
std::string utc_now_iso();

// A text column as levels and one code per row. Levels are sorted and distinct, except for
// per-row identifiers (config_id, message, finished_utc), which keep one level per row.
struct Categorical {
  std::vector<std::string> levels;
  std::vector<std::int32_t> codes;
  bool sorted = true;
  [[nodiscard]] const std::string& at(std::size_t row) const { return levels[codes[row]]; }
  // Code of a level, or -1.
  [[nodiscard]] std::int32_t code(std::string_view level) const;
};

struct Frame {
  std::filesystem::path path;
  store::FileMeta meta;
  store::SystemInfo system;
  std::size_t rows = 0;
  std::int64_t file_rows = 0;         // rows of /runs before filtering
  std::int64_t not_ok = 0;            // rows dropped because status != ok
  std::int64_t filtered_out = 0;      // ok rows dropped by --where
  std::vector<std::int64_t> run_row;  // /runs index of each kept row
  std::map<std::string, std::vector<double>> numeric;
  std::map<std::string, Categorical> text;

  [[nodiscard]] bool has(const std::string& c) const {
    return numeric.count(c) != 0 || text.count(c) != 0;
  }
  // Throw InputError naming the file when the column is missing or of the other kind.
  [[nodiscard]] const std::vector<double>& num(const std::string& c) const;
  [[nodiscard]] const Categorical& cat(const std::string& c) const;
  // A short label of the file: its stem.
  [[nodiscard]] std::string label() const { return path.stem().string(); }
};

// Loads those of the listed columns that the file has (callers check has()), plus the columns
// `where` names, for the rows with status ok that pass `where`. A column named in `where` must
// exist and a bad expression is an InputError.
Frame load_frame(const std::filesystem::path& path, const std::vector<std::string>& columns,
                 const std::string& where = "");

// The columns of a file that exist among `wanted`.
std::vector<std::string> existing_columns(const std::filesystem::path& path,
                                          const std::vector<std::string>& wanted);

}  // namespace dnnscape::analysis
