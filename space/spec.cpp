#include "space/spec.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string_view>
#include <system_error>
#include <unordered_set>

#include "space/grid.hpp"

namespace dnnscape::space {
namespace {

using Names = std::span<const std::string_view>;

// Bounds that keep a spec from exhausting memory or time before anything runs.
constexpr std::uint64_t kMaxConfigs = 1'000'000;
constexpr std::uint64_t kMaxAxisValues = 1 << 20;
constexpr std::uint64_t kMaxSobolSeed = 0xFFFFFFFF;

constexpr std::array<std::string_view, 6> kTopKeys{"name",     "families", "knobs",
                                                   "sampling", "measure",  "limits"};
constexpr std::array<std::string_view, 3> kFamilyNames{"fc", "cnn", "rnn"};
constexpr std::array<std::string_view, 2> kBlockFns{"residual", "bottleneck"};
constexpr std::array<std::string_view, 3> kCells{"rnn", "lstm", "gru"};
constexpr std::array<std::string_view, 2> kModes{"training", "inference"};
constexpr std::array<std::string_view, 2> kDtypes{"f32", "bf16"};
constexpr std::array<std::string_view, 9> kAlgorithms{"default",  "best",  "direct",
                                                      "winograd", "auto",  "inner_product",
                                                      "matmul",   "fused", "decomposed"};
constexpr std::array<std::string_view, 8> kIsaCaps{
    "none",           "sse41", "avx", "avx2", "avx512_core", "avx512_core_vnni", "avx512_core_bf16",
    "avx512_core_amx"};
constexpr std::array<std::string_view, 6> kSamplingKeys{"random",  "sobol", "adaptive",
                                                        "initial", "seed",  "cost_aware"};
constexpr std::array<std::string_view, 5> kMeasureKeys{"warmup_s", "min_reps", "max_reps",
                                                       "target_ci", "max_time_s"};
constexpr std::array<std::string_view, 2> kLimitKeys{"memory_fraction", "timeout_s"};

// A parameter or knob: integer-valued (allowed empty) or one of the allowed names.
struct AxisDef {
  std::string_view name;
  Names allowed;  // empty: an integer
  bool zero_allowed = false;
};

constexpr std::array<AxisDef, 5> kFcParams{
    {{"layers", {}}, {"nodes", {}}, {"input", {}}, {"output", {}}, {"batch", {}}}};
constexpr std::array<AxisDef, 6> kCnnParams{{{"block_fn", kBlockFns},
                                             {"filters", {}},
                                             {"blocks", {}},
                                             {"image", {}},
                                             {"output", {}},
                                             {"batch", {}}}};
constexpr std::array<AxisDef, 6> kRnnParams{{{"cell", kCells},
                                             {"layers", {}},
                                             {"embedding", {}},
                                             {"length", {}},
                                             {"vocab", {}},
                                             {"batch", {}}}};
constexpr std::array<AxisDef, 5> kKnobs{{{"mode", kModes},
                                         {"dtype", kDtypes},
                                         {"threads", {}, true},
                                         {"algorithm", kAlgorithms},
                                         {"isa_cap", kIsaCaps}}};

std::span<const AxisDef> family_params(Family f) {
  switch (f) {
    case Family::fc:
      return kFcParams;
    case Family::cnn:
      return kCnnParams;
    case Family::rnn:
      return kRnnParams;
  }
  return {};
}

Axis default_knob(std::string_view name) {
  if (name == "threads") return {std::string(name), {0}, {}};
  const std::string value = name == "mode"        ? "training"
                            : name == "dtype"     ? "f32"
                            : name == "algorithm" ? "default"
                                                  : "none";
  return {std::string(name), {}, {value}};
}

std::vector<std::string_view> names_of(std::span<const AxisDef> defs) {
  std::vector<std::string_view> out;
  for (const auto& d : defs) out.push_back(d.name);
  return out;
}

std::string one_of(std::span<const std::string_view> names) {
  return fmt::format("one of: {}", fmt::join(names, ", "));
}

std::string join_path(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

bool plain_scalar(const YAML::Node& n) {
  return n.IsScalar() && n.Tag() == "?";
}

// How a node is named in messages.
std::string describe(const YAML::Node& n) {
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a map";
  if (!n.IsScalar()) return "nothing";
  if (plain_scalar(n)) return fmt::format("'{}'", n.Scalar());
  return fmt::format("the string \"{}\"", n.Scalar());
}

// A key of a map and its value; a missing or empty value is reported at the key.
struct Field {
  YAML::Node key;
  YAML::Node value;
  std::string path;
  [[nodiscard]] YAML::Mark mark() const {
    return value.IsDefined() && !value.IsNull() ? value.Mark() : key.Mark();
  }
};

struct SamplingRead {
  Sampling sampling;
  std::optional<Field> count;    // the random/sobol/adaptive entry
  std::optional<Field> initial;  // adaptive: its initial entry, if given
};

// Reads one spec document; every problem becomes a one-line SpecError naming FILE:LINE:COL.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[nodiscard]] Spec read(const std::string& text) const;

 private:
  [[noreturn]] void fail(const YAML::Mark& mark, std::string_view path,
                         std::string_view message) const;
  [[noreturn]] void fail(const YAML::Node& at, std::string_view path,
                         std::string_view message) const {
    fail(at.Mark(), path, message);
  }

  [[nodiscard]] YAML::Node parse(const std::string& text) const;
  [[nodiscard]] std::vector<Field> fields(const YAML::Node& map, std::string_view path,
                                          std::span<const std::string_view> allowed,
                                          std::string_view unknown_what) const;
  [[nodiscard]] static std::optional<Field> find(const std::vector<Field>& fields,
                                                 std::string_view key);
  [[nodiscard]] Field require(const std::vector<Field>& fields, const YAML::Node& map,
                              std::string_view path, std::string_view key) const;

  [[nodiscard]] std::string read_name(const Field& f) const;
  [[nodiscard]] std::int64_t read_int(const YAML::Node& n, const YAML::Mark& mark,
                                      std::string_view path, std::int64_t min,
                                      std::string_view expected) const;
  [[nodiscard]] std::uint64_t read_uint(const Field& f) const;
  [[nodiscard]] double read_number(const Field& f) const;
  void check(bool ok, const Field& f, std::string_view message) const {
    if (!ok) fail(f.mark(), f.path, message);
  }

  [[nodiscard]] Axis read_axis(const Field& f, const AxisDef& def) const;
  [[nodiscard]] std::vector<std::int64_t> read_ints(const Field& f, const AxisDef& def) const;
  [[nodiscard]] std::vector<std::int64_t> read_value_form(const Field& f, const AxisDef& def) const;
  [[nodiscard]] std::vector<std::int64_t> read_log2(const Field& f, const YAML::Node& bounds) const;
  [[nodiscard]] std::vector<std::int64_t> read_range(const Field& f, const AxisDef& def,
                                                     const YAML::Node& bounds) const;
  [[nodiscard]] std::vector<std::string> read_names(const Field& f, const AxisDef& def) const;
  [[nodiscard]] std::string read_one_name(const YAML::Node& n, const Field& f,
                                          const AxisDef& def) const;

  [[nodiscard]] std::vector<FamilyGrid> read_families(const Field& f,
                                                      const std::vector<Axis>& knobs) const;
  [[nodiscard]] std::vector<Axis> read_knobs(const std::optional<Field>& f) const;
  [[nodiscard]] SamplingRead read_sampling(const std::optional<Field>& f) const;
  [[nodiscard]] MeasureSettings read_measure(const std::optional<Field>& f) const;
  [[nodiscard]] Limits read_limits(const std::optional<Field>& f) const;
  [[nodiscard]] std::vector<Config> draw(const SamplingRead& s,
                                         const std::vector<FamilyGrid>& grids,
                                         const Field& families) const;
  [[nodiscard]] std::vector<Config> draw_sobol(const Field& at,
                                               const std::vector<FamilyGrid>& grids,
                                               std::uint64_t n, std::uint64_t seed) const;

  std::string file_;
};

void Reader::fail(const YAML::Mark& mark, std::string_view path, std::string_view message) const {
  const int line = mark.is_null() ? 1 : mark.line + 1;
  const int column = mark.is_null() ? 1 : mark.column + 1;
  if (path.empty()) throw SpecError(fmt::format("{}:{}:{}: {}", file_, line, column, message));
  throw SpecError(fmt::format("{}:{}:{}: {}: {}", file_, line, column, path, message));
}

YAML::Node Reader::parse(const std::string& text) const {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    // Keep the error on one line whatever yaml-cpp says.
    std::string msg = e.msg;
    for (auto& ch : msg) ch = ch == '\n' ? ' ' : ch;
    fail(e.mark, "", "YAML syntax error: " + msg);
  }
}

// The entries of a map, after checking that every key is allowed and appears once.
std::vector<Field> Reader::fields(const YAML::Node& map, std::string_view path,
                                  std::span<const std::string_view> allowed,
                                  std::string_view unknown_what) const {
  std::vector<Field> out;
  for (const auto& kv : map) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : describe(kv.first);
    Field f{kv.first, kv.second, join_path(path, key)};
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      fail(kv.first, f.path,
           fmt::format("unknown {} (expected {})", unknown_what, one_of(allowed)));
    }
    if (find(out, key)) fail(kv.first, f.path, "duplicate key");
    out.push_back(std::move(f));
  }
  return out;
}

std::optional<Field> Reader::find(const std::vector<Field>& fields, std::string_view key) {
  for (const auto& f : fields) {
    if (f.key.Scalar() == key) return f;
  }
  return std::nullopt;
}

Field Reader::require(const std::vector<Field>& fields, const YAML::Node& map,
                      std::string_view path, std::string_view key) const {
  auto f = find(fields, key);
  if (!f) fail(map, join_path(path, key), "required key is missing");
  return *f;
}

std::string Reader::read_name(const Field& f) const {
  check(f.value.IsScalar() && !f.value.Scalar().empty(), f,
        fmt::format("expected a non-empty string, got {}", describe(f.value)));
  return f.value.Scalar();
}

// A decimal integer >= min from a plain scalar; `expected` names what was wanted.
std::int64_t Reader::read_int(const YAML::Node& n, const YAML::Mark& mark, std::string_view path,
                              std::int64_t min, std::string_view expected) const {
  const auto bad = [&](std::string_view why = "") {
    fail(mark, path, fmt::format("expected {}, got {}{}", expected, describe(n), why));
  };
  if (!plain_scalar(n)) bad();
  const std::string& s = n.Scalar();
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) bad(" (out of range)");
  if (ec != std::errc() || end != s.data() + s.size() || v < min) bad();
  return v;
}

std::uint64_t Reader::read_uint(const Field& f) const {
  const auto bad = [&](std::string_view why = "") {
    fail(f.mark(), f.path,
         fmt::format("expected a non-negative integer, got {}{}", describe(f.value), why));
  };
  if (!plain_scalar(f.value)) bad();
  const std::string& s = f.value.Scalar();
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) bad(" (out of range)");
  if (ec != std::errc() || end != s.data() + s.size()) bad();
  return v;
}

double Reader::read_number(const Field& f) const {
  double v = 0;
  bool ok = plain_scalar(f.value);
  if (ok) {
    const std::string& s = f.value.Scalar();
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    ok = ec == std::errc() && end == s.data() + s.size() && std::isfinite(v);
  }
  check(ok, f, fmt::format("expected a number, got {}", describe(f.value)));
  return v;
}

Axis Reader::read_axis(const Field& f, const AxisDef& def) const {
  Axis a;
  a.name = std::string(def.name);
  if (def.allowed.empty()) {
    a.ints = read_ints(f, def);
  } else {
    a.names = read_names(f, def);
  }
  return a;
}

// Drops repeated values, keeping the first occurrence of each.
template <class T>
std::vector<T> unique_in_order(std::vector<T> values) {
  std::set<T> seen;
  std::vector<T> out;
  for (auto& v : values) {
    if (seen.insert(v).second) out.push_back(std::move(v));
  }
  return out;
}

std::string_view integer_kind(const AxisDef& def) {
  return def.zero_allowed ? "a non-negative integer" : "a positive integer";
}

std::vector<std::int64_t> Reader::read_ints(const Field& f, const AxisDef& def) const {
  const std::int64_t min = def.zero_allowed ? 0 : 1;
  const auto& n = f.value;
  if (n.IsMap()) return read_value_form(f, def);
  if (!n.IsSequence()) {
    if (!n.IsScalar()) {
      fail(f.mark(), f.path,
           fmt::format("expected {}, a list, {{log2: [lo, hi]}} or {{range: [lo, hi, step]}}, "
                       "got {}",
                       integer_kind(def), describe(n)));
    }
    return {read_int(n, f.mark(), f.path, min, integer_kind(def))};
  }
  check(n.size() > 0, f, "empty list");
  std::vector<std::int64_t> values;
  for (const auto& e : n) values.push_back(read_int(e, e.Mark(), f.path, min, integer_kind(def)));
  return unique_in_order(std::move(values));
}

std::vector<std::int64_t> Reader::read_value_form(const Field& f, const AxisDef& def) const {
  check(f.value.size() == 1, f, "a value map holds exactly one key: log2 or range");
  const auto kv = *f.value.begin();
  const std::string form = kv.first.IsScalar() ? kv.first.Scalar() : describe(kv.first);
  if (form == "log2") return read_log2(f, kv.second);
  if (form == "range") return read_range(f, def, kv.second);
  fail(kv.first, f.path, fmt::format("unknown value form '{}' (expected log2 or range)", form));
}

std::string describe_shape(const YAML::Node& n) {
  return n.IsSequence() ? fmt::format("a list of {}", n.size()) : describe(n);
}

std::vector<std::int64_t> Reader::read_log2(const Field& f, const YAML::Node& bounds) const {
  if (!bounds.IsSequence() || bounds.size() != 2) {
    fail(bounds.IsNull() ? f.mark() : bounds.Mark(), f.path,
         fmt::format("log2 expects [lo, hi], got {}", describe_shape(bounds)));
  }
  std::array<std::int64_t, 2> b{};
  for (std::size_t i = 0; i < 2; ++i) {
    const auto e = bounds[i];
    b[i] = read_int(e, e.Mark(), f.path, 1, "a positive integer");
    if ((b[i] & (b[i] - 1)) != 0) {
      fail(e, f.path, fmt::format("log2 bound {} is not a power of two", b[i]));
    }
  }
  check(b[0] <= b[1], f, fmt::format("log2 range [{}, {}] is inverted (lo > hi)", b[0], b[1]));
  std::vector<std::int64_t> values;
  for (std::int64_t v = b[0];; v *= 2) {
    values.push_back(v);
    if (v == b[1]) break;
  }
  return values;
}

std::vector<std::int64_t> Reader::read_range(const Field& f, const AxisDef& def,
                                             const YAML::Node& bounds) const {
  if (!bounds.IsSequence() || bounds.size() != 3) {
    fail(bounds.IsNull() ? f.mark() : bounds.Mark(), f.path,
         fmt::format("range expects [lo, hi, step], got {}", describe_shape(bounds)));
  }
  const std::int64_t min = def.zero_allowed ? 0 : 1;
  const auto lo = read_int(bounds[0], bounds[0].Mark(), f.path, min, integer_kind(def));
  const auto hi = read_int(bounds[1], bounds[1].Mark(), f.path, min, integer_kind(def));
  const auto step = read_int(bounds[2], bounds[2].Mark(), f.path,
                             std::numeric_limits<std::int64_t>::min(), "an integer step");
  if (step <= 0) fail(bounds[2], f.path, fmt::format("range step must be positive, got {}", step));
  check(lo <= hi, f, fmt::format("range [{}, {}, {}] is inverted (lo > hi)", lo, hi, step));
  const auto count = static_cast<std::uint64_t>(hi - lo) / static_cast<std::uint64_t>(step) + 1;
  check(count <= kMaxAxisValues, f,
        fmt::format("range yields {} values, more than the limit of {}", count, kMaxAxisValues));
  std::vector<std::int64_t> values;
  for (std::uint64_t i = 0; i < count; ++i)
    values.push_back(lo + static_cast<std::int64_t>(i) * step);
  return values;
}

std::string Reader::read_one_name(const YAML::Node& n, const Field& f, const AxisDef& def) const {
  if (!n.IsScalar()) {
    fail(n, f.path, fmt::format("expected a name ({}), got {}", one_of(def.allowed), describe(n)));
  }
  const std::string& s = n.Scalar();
  if (std::find(def.allowed.begin(), def.allowed.end(), s) == def.allowed.end()) {
    fail(n, f.path, fmt::format("unknown value '{}' (expected {})", s, one_of(def.allowed)));
  }
  return s;
}

std::vector<std::string> Reader::read_names(const Field& f, const AxisDef& def) const {
  const auto& n = f.value;
  if (n.IsScalar()) return {read_one_name(n, f, def)};
  if (!n.IsSequence()) {
    fail(f.mark(), f.path,
         fmt::format("expected a name or a list of names ({}), got {}", one_of(def.allowed),
                     describe(n)));
  }
  check(n.size() > 0, f, "empty list");
  std::vector<std::string> values;
  for (const auto& e : n) values.push_back(read_one_name(e, f, def));
  return unique_in_order(std::move(values));
}

std::vector<Axis> Reader::read_knobs(const std::optional<Field>& f) const {
  std::vector<Axis> axes;
  std::vector<Field> given;
  if (f) {
    check(f->value.IsMap(), *f, fmt::format("expected a map, got {}", describe(f->value)));
    given = fields(f->value, f->path, names_of(kKnobs), "knob");
  }
  for (const auto& def : kKnobs) {
    const auto knob = find(given, def.name);
    axes.push_back(knob ? read_axis(*knob, def) : default_knob(def.name));
  }
  return axes;
}

std::vector<FamilyGrid> Reader::read_families(const Field& f,
                                              const std::vector<Axis>& knobs) const {
  check(f.value.IsMap(), f,
        fmt::format("expected a map of model families ({}), got {}", one_of(kFamilyNames),
                    describe(f.value)));
  check(f.value.size() > 0, f,
        fmt::format("at least one family is required ({})", one_of(kFamilyNames)));
  const auto families = fields(f.value, f.path, kFamilyNames, "family");
  std::vector<FamilyGrid> grids;
  for (auto name : kFamilyNames) {  // fixed order: the YAML's key order does not matter
    const auto family = find(families, name);
    if (!family) continue;
    FamilyGrid g;
    g.family = family_from_string(name);
    const auto params = family_params(g.family);
    check(family->value.IsMap(), *family,
          fmt::format("expected a map of parameters, got {}", describe(family->value)));
    const auto given = fields(family->value, family->path, names_of(params), "parameter");
    for (const auto& def : params) {
      g.axes.push_back(read_axis(require(given, family->value, family->path, def.name), def));
    }
    g.axes.insert(g.axes.end(), knobs.begin(), knobs.end());
    grids.push_back(std::move(g));
  }
  return grids;
}

SamplingRead Reader::read_sampling(const std::optional<Field>& f) const {
  SamplingRead s;
  if (!f) return s;
  const auto expected = [&] {
    fail(f->mark(), f->path,
         fmt::format("expected grid, {{random: N, seed: S}}, {{sobol: N, seed: S}} or "
                     "{{adaptive: N, initial: M, seed: S, cost_aware: false}}, got {}",
                     describe(f->value)));
  };
  if (f->value.IsScalar() && f->value.Scalar() == "grid") return s;
  if (!f->value.IsMap()) expected();
  const auto given = fields(f->value, f->path, kSamplingKeys, "key");
  const auto random = find(given, "random");
  const auto sobol = find(given, "sobol");
  const auto adaptive = find(given, "adaptive");
  const int kinds = (random ? 1 : 0) + (sobol ? 1 : 0) + (adaptive ? 1 : 0);
  constexpr std::string_view kOne = "give exactly one of random, sobol or adaptive";
  if (kinds > 1) fail((adaptive ? adaptive : sobol)->key, f->path, kOne);
  if (kinds == 0) fail(f->value, f->path, kOne);
  s.count = random ? random : sobol ? sobol : adaptive;
  s.sampling.kind = random  ? Sampling::Kind::random
                    : sobol ? Sampling::Kind::sobol
                            : Sampling::Kind::adaptive;
  s.sampling.count =
      read_int(s.count->value, s.count->mark(), s.count->path, 1, "a positive number of configs");
  s.initial = find(given, "initial");
  if (s.initial && !adaptive)
    fail(s.initial->key, s.initial->path, "only adaptive sampling takes initial");
  if (adaptive) {
    // Default: a fifth of the budget, at least 8 (as much as the budget allows).
    s.sampling.initial =
        std::min<std::int64_t>(s.sampling.count, std::max<std::int64_t>(8, s.sampling.count / 5));
    if (s.initial) {
      s.sampling.initial = read_int(s.initial->value, s.initial->mark(), s.initial->path, 1,
                                    "a positive number of configs");
      check(s.sampling.initial <= s.sampling.count, *s.initial,
            fmt::format("must be at most adaptive ({}), got {}", s.sampling.count,
                        s.sampling.initial));
    }
  }
  if (const auto cost = find(given, "cost_aware")) {
    if (!adaptive) fail(cost->key, cost->path, "only adaptive sampling takes cost_aware");
    const bool plain = plain_scalar(cost->value);
    const std::string v = plain ? cost->value.Scalar() : std::string();
    if (v != "true" && v != "false")
      fail(cost->mark(), cost->path,
           fmt::format("expected true or false, got {}", describe(cost->value)));
    s.sampling.cost_aware = v == "true";
  }
  if (const auto seed = find(given, "seed")) {
    s.sampling.seed = read_uint(*seed);
    if (!random && s.sampling.seed > kMaxSobolSeed) {
      fail(seed->mark(), seed->path,
           fmt::format("a Sobol seed (points skipped) must be at most {}, got {}", kMaxSobolSeed,
                       s.sampling.seed));
    }
  }
  return s;
}

MeasureSettings Reader::read_measure(const std::optional<Field>& f) const {
  MeasureSettings m;
  if (!f) return m;
  check(f->value.IsMap(), *f, fmt::format("expected a map, got {}", describe(f->value)));
  const auto given = fields(f->value, f->path, kMeasureKeys, "key");
  const auto integer = [&](const Field& x) {
    return read_int(x.value, x.mark(), x.path, std::numeric_limits<std::int64_t>::min(),
                    "an integer");
  };
  if (auto x = find(given, "warmup_s")) {
    m.warmup_s = read_number(*x);
    check(m.warmup_s >= 0, *x, fmt::format("must be >= 0, got {}", m.warmup_s));
  }
  if (auto x = find(given, "min_reps")) {
    m.min_reps = integer(*x);
    check(m.min_reps >= 1, *x, fmt::format("must be >= 1, got {}", m.min_reps));
  }
  if (auto x = find(given, "max_reps")) {
    m.max_reps = integer(*x);
    check(m.max_reps >= m.min_reps, *x,
          fmt::format("must be >= min_reps ({}), got {}", m.min_reps, m.max_reps));
  } else if (auto y = find(given, "min_reps")) {
    check(m.min_reps <= m.max_reps, *y,
          fmt::format("must be <= max_reps ({}), got {}", m.max_reps, m.min_reps));
  }
  if (auto x = find(given, "target_ci")) {
    m.target_ci = read_number(*x);
    check(m.target_ci > 0 && m.target_ci < 1, *x,
          fmt::format("must be in (0, 1), got {}", m.target_ci));
  }
  if (auto x = find(given, "max_time_s")) {
    m.max_time_s = read_number(*x);
    check(m.max_time_s > 0, *x, fmt::format("must be > 0, got {}", m.max_time_s));
  }
  return m;
}

Limits Reader::read_limits(const std::optional<Field>& f) const {
  Limits l;
  if (!f) return l;
  check(f->value.IsMap(), *f, fmt::format("expected a map, got {}", describe(f->value)));
  const auto given = fields(f->value, f->path, kLimitKeys, "key");
  if (auto x = find(given, "memory_fraction")) {
    l.memory_fraction = read_number(*x);
    check(l.memory_fraction > 0 && l.memory_fraction <= 1, *x,
          fmt::format("must be in (0, 1], got {}", l.memory_fraction));
  }
  if (auto x = find(given, "timeout_s")) {
    l.timeout_s = read_number(*x);
    check(l.timeout_s > 0, *x, fmt::format("must be > 0, got {}", l.timeout_s));
  }
  return l;
}

std::vector<Config> Reader::draw(const SamplingRead& s, const std::vector<FamilyGrid>& grids,
                                 const Field& families) const {
  std::uint64_t total = 0;
  for (const auto& g : grids) {
    check(g.size() < kGridSizeCap, families,
          fmt::format("the {} grid holds more than {} configs", to_string(g.family), kGridSizeCap));
    total += g.size();
  }
  if (s.sampling.kind == Sampling::Kind::grid) {
    check(total <= kMaxConfigs, families,
          fmt::format("the grid holds {} configs, more than the limit of {}; sample it with "
                      "sampling: {{random: N}} or {{sobol: N}}",
                      total, kMaxConfigs));
    return expand_grid(grids);
  }
  const Field& count = *s.count;
  const auto n = static_cast<std::uint64_t>(s.sampling.count);
  check(n <= total, count,
        fmt::format("{} configs requested, but the grid holds only {}", n, total));
  check(n <= kMaxConfigs, count,
        fmt::format("{} configs requested, more than the limit of {}", n, kMaxConfigs));
  if (s.sampling.kind == Sampling::Kind::random) return sample_random(grids, n, s.sampling.seed);
  if (s.sampling.kind == Sampling::Kind::adaptive) {
    // The candidates are the whole grid: the model predicts every one of them.
    check(total <= kMaxConfigs, families,
          fmt::format("the grid holds {} configs, more than the limit of {} (adaptive sampling "
                      "predicts every config of the grid)",
                      total, kMaxConfigs));
    return expand_grid(grids);
  }
  return draw_sobol(count, grids, n, s.sampling.seed);
}

std::vector<Config> Reader::draw_sobol(const Field& at, const std::vector<FamilyGrid>& grids,
                                       std::uint64_t n, std::uint64_t seed) const {
  auto configs = sample_sobol(grids, n, seed);
  check(configs.size() == n, at,
        fmt::format("only {} distinct configs found in the Sobol sequence ({} requested); some "
                    "values are too close in log2 to be hit",
                    configs.size(), n));
  return configs;
}

std::vector<Config> unique_by_id(std::vector<Config> configs) {
  std::unordered_set<std::string> seen;
  std::vector<Config> out;
  out.reserve(configs.size());
  for (auto& c : configs) {
    if (seen.insert(c.config_id()).second) out.push_back(std::move(c));
  }
  return out;
}

Spec Reader::read(const std::string& text) const {
  const YAML::Node root = parse(text);
  const std::string top_keys = one_of(kTopKeys);
  if (root.IsNull() || !root.IsDefined()) {
    fail(YAML::Mark::null_mark(), "", fmt::format("the spec is empty (expected {})", top_keys));
  }
  if (!root.IsMap()) {
    fail(root, "",
         fmt::format("expected a map at the top level ({}), got {}", top_keys, describe(root)));
  }
  const auto top = fields(root, "", kTopKeys, "key");
  Spec spec;
  spec.name = read_name(require(top, root, "", "name"));
  const Field families = require(top, root, "", "families");
  const auto knobs = read_knobs(find(top, "knobs"));
  const auto grids = read_families(families, knobs);
  const auto sampling = read_sampling(find(top, "sampling"));
  spec.sampling = sampling.sampling;
  spec.measure = read_measure(find(top, "measure"));
  spec.limits = read_limits(find(top, "limits"));
  spec.configs = unique_by_id(draw(sampling, grids, families));
  if (spec.sampling.kind == Sampling::Kind::adaptive) {
    spec.initial = unique_by_id(draw_sobol(sampling.initial ? *sampling.initial : *sampling.count,
                                           grids, static_cast<std::uint64_t>(spec.sampling.initial),
                                           spec.sampling.seed));
  }
  spec.yaml_text = text;
  spec.sha256 = sha256_hex(text);
  spec.path = file_;
  return spec;
}

}  // namespace

double MeasureSettings::predicted_time_s(double step_s) const {
  // Steps usually converge after a few dozen repetitions; warm-up is at least one step, and the
  // build plus profiled pass cost about two more.
  const double reps =
      std::clamp(30.0, static_cast<double>(min_reps), static_cast<double>(max_reps));
  return std::max(warmup_s, step_s) + std::min(reps * step_s, std::max(max_time_s, step_s)) +
         2 * step_s;
}

Spec parse_spec(const std::string& yaml_text, const std::string& name_for_errors) {
  return Reader(name_for_errors).read(yaml_text);
}

Spec load_spec(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw std::runtime_error(fmt::format("cannot read spec {}: is a directory", path.string()));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error(fmt::format("cannot read spec {}: {}", path.string(),
                                         std::generic_category().message(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw std::runtime_error(fmt::format("cannot read spec {}: read error", path.string()));
  }
  return parse_spec(text.str(), path.string());
}

}  // namespace dnnscape::space
