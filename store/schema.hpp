// The column tables of schema dnnscape/1: one line per column (name, type, string width,
// accessor into the record). The writer, the reader and the resume logic all iterate these, so a
// new column is one line here (and one in docs/results-schema.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "store/record.hpp"

namespace dnnscape::store::schema {

enum class Type { int64, float64, string };

using Value = std::variant<std::int64_t, double, std::string>;

// One column of a group whose rows are records of type Rec (RunRecord for /runs, OpRecord for
// /ops). get/set move one value between a record and the column.
template <class Rec>
struct Column {
  std::string_view name;
  Type type = Type::float64;
  std::size_t width = 0;  // bytes of a fixed-length string column; 0 for numbers
  Value (*get)(const Rec&) = nullptr;
  void (*set)(Rec&, Value&&) = nullptr;
};

namespace detail {
template <class T>
constexpr Type type_of() {
  if constexpr (std::is_same_v<T, std::int64_t>) return Type::int64;
  if constexpr (std::is_same_v<T, double>) return Type::float64;
  if constexpr (std::is_same_v<T, std::string>) return Type::string;
}
}  // namespace detail

// A column backed by a field: F is a captureless lambda `[](auto& r) -> auto& { return r.x; }`.
template <class Rec, class F>
Column<Rec> field(std::string_view name, std::size_t width, F /*field*/) {
  using T = std::remove_cvref_t<decltype(F{}(std::declval<Rec&>()))>;
  static_assert(std::is_same_v<T, std::int64_t> || std::is_same_v<T, double> ||
                std::is_same_v<T, std::string>);
  return {name, detail::type_of<T>(), std::is_same_v<T, std::string> ? width : 0,
          [](const Rec& r) -> Value { return F{}(r); },
          [](Rec& r, Value&& v) { F{}(r) = std::get<T>(std::move(v)); }};
}

// String widths (bytes). Longer values are truncated when written.
inline constexpr std::size_t kShort = 32;
inline constexpr std::size_t kConfigId = 16;
inline constexpr std::size_t kMessage = 512;
inline constexpr std::size_t kHost = 64;
inline constexpr std::size_t kCores = 128;
inline constexpr std::size_t kImpl = 64;

// /runs, in on-disk order. config_id comes first and identifies the row.
const std::vector<Column<RunRecord>>& runs();
// /ops columns besides `row`.
const std::vector<Column<OpRecord>>& ops();
// Root attributes (schema first) and /system attributes, written once when the file is created.
const std::vector<Column<FileMeta>>& meta();
const std::vector<Column<SystemInfo>>& system();
// /hosts columns (one row per host).
const std::vector<Column<HostInfo>>& hosts();
// /jobs columns (one row per session of the sweep inside a batch job).
const std::vector<Column<JobInfo>>& jobs();

// The config_id a record is stored under (its cached id, or computed from the config).
std::string config_id_of(const RunRecord& r);

}  // namespace dnnscape::store::schema
