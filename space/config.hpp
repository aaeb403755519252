// One point of the design space: a model family, its parameters and the software knobs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dnnscape::space {

enum class Family { fc, cnn, rnn };

std::string_view to_string(Family f);
// Throws std::invalid_argument for an unknown name.
Family family_from_string(std::string_view name);

// Software-side dimensions, crossed with every family (recorded per row).
struct Knobs {
  std::string mode = "training";  // training | inference
  std::string dtype = "f32";      // f32 | bf16
  std::string algorithm = "default";
  std::string isa_cap = "none";  // none = let oneDNN pick the best ISA
  std::int64_t threads = 0;      // 0 = all cores available to the process
  bool operator==(const Knobs&) const = default;
};

// Parameters use -1 (ints) or "" (strings) for "not applicable to this family", exactly as the
// /runs columns of the results file do.
struct Config {
  Family family = Family::fc;
  std::int64_t layers = -1;
  std::int64_t nodes = -1;
  std::int64_t input = -1;
  std::int64_t output = -1;
  std::int64_t batch = -1;
  std::int64_t filters = -1;
  std::int64_t blocks = -1;
  std::int64_t image = -1;
  std::int64_t embedding = -1;
  std::int64_t length = -1;
  std::int64_t vocab = -1;
  std::string block_fn;
  std::string cell;
  Knobs knobs;

  bool operator==(const Config&) const = default;

  // Canonical text: family, then every applicable parameter and every knob as key=value in a
  // fixed order. Independent of spec order, machine and locale.
  [[nodiscard]] std::string canonical() const;
  // Stable identifier: first 16 hex digits of SHA-256 of canonical().
  [[nodiscard]] std::string config_id() const;
  // Short human label, e.g. "fc layers=4 nodes=4096 ... batch=1024 training f32".
  [[nodiscard]] std::string label() const;
};

// The integer parameter names of the results schema, in column order.
inline constexpr std::string_view kIntParams[] = {"layers",    "nodes",   "input",  "output",
                                                  "batch",     "filters", "blocks", "image",
                                                  "embedding", "length",  "vocab"};
inline constexpr std::string_view kStringParams[] = {"block_fn", "cell"};

// Access a parameter by its schema name; returns nullptr for an unknown name.
const std::int64_t* int_param(const Config& c, std::string_view name);
std::int64_t* int_param(Config& c, std::string_view name);
const std::string* string_param(const Config& c, std::string_view name);
std::string* string_param(Config& c, std::string_view name);

// Lower-case hex SHA-256 of arbitrary bytes (OpenSSL).
std::string sha256_hex(std::string_view bytes);

}  // namespace dnnscape::space
