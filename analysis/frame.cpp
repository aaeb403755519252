#include "analysis/frame.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <unordered_map>

#include "analysis/filter.hpp"
#include "store/results.hpp"

namespace dnnscape::analysis {

bool is_text_column(std::string_view name) {
  static constexpr std::string_view kText[] = {
      "config_id", "family", "block_fn", "cell", "mode",  "dtype",         "algorithm",
      "isa_cap",   "status", "message",  "host", "cores", "effective_isa", "finished_utc"};
  return std::find(std::begin(kText), std::end(kText), name) != std::end(kText);
}

bool lower_is_better(std::string_view m) {
  const auto ends = [&](std::string_view s) {
    return m.size() >= s.size() && m.substr(m.size() - s.size()) == s;
  };
  if (ends("_per_s")) return false;  // rates: examples_per_s
  return ends("_s") || ends("_j") || m == "step_time_cv" || m == "memory_bytes" || m == "bytes";
}

std::string utc_now_iso() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::int32_t Categorical::code(std::string_view level) const {
  if (!sorted) {
    auto it = std::find(levels.begin(), levels.end(), level);
    return it == levels.end() ? -1 : static_cast<std::int32_t>(it - levels.begin());
  }
  auto it = std::lower_bound(levels.begin(), levels.end(), level);
  if (it == levels.end() || *it != level) return -1;
  return static_cast<std::int32_t>(it - levels.begin());
}

const std::vector<double>& Frame::num(const std::string& c) const {
  auto it = numeric.find(c);
  if (it == numeric.end()) {
    throw InputError(fmt::format("{} has no numeric column '{}'", path.string(), c));
  }
  return it->second;
}

const Categorical& Frame::cat(const std::string& c) const {
  auto it = text.find(c);
  if (it == text.end())
    throw InputError(fmt::format("{} has no text column '{}'", path.string(), c));
  return it->second;
}

namespace {

Categorical categorize(const std::vector<std::string>& v) {
  std::unordered_map<std::string, std::int32_t> first;
  std::vector<std::int32_t> raw(v.size());
  std::vector<std::string> seen;
  for (std::size_t i = 0; i < v.size(); ++i) {
    // Text columns mostly come in runs (one family, one dtype): skip the hash for a repeat.
    if (i > 0 && v[i] == v[i - 1]) {
      raw[i] = raw[i - 1];
      continue;
    }
    auto [it, inserted] = first.try_emplace(v[i], static_cast<std::int32_t>(seen.size()));
    if (inserted) seen.push_back(v[i]);
    raw[i] = it->second;
  }
  // Levels sorted, so codes are stable across files with the same level set.
  std::vector<std::int32_t> order(seen.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int32_t>(i);
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return seen[a] < seen[b]; });
  std::vector<std::int32_t> remap(seen.size());
  Categorical c;
  for (std::size_t r = 0; r < order.size(); ++r) {
    remap[order[r]] = static_cast<std::int32_t>(r);
    c.levels.push_back(seen[order[r]]);
  }
  c.codes.resize(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) c.codes[i] = remap[raw[i]];
  return c;
}

template <class T>
void compact(std::vector<T>& v, const std::vector<char>& keep) {
  std::size_t j = 0;
  for (std::size_t i = 0; i < v.size(); ++i)
    if (keep[i]) v[j++] = v[i];
  v.resize(j);
  v.shrink_to_fit();
}

// Drops levels no kept row uses, so a level list says what the selection holds.
void prune_levels(Categorical& c) {
  std::vector<std::int32_t> remap(c.levels.size(), -1);
  for (auto code : c.codes) remap[code] = 0;
  std::vector<std::string> levels;
  for (std::size_t l = 0; l < remap.size(); ++l) {
    if (remap[l] < 0) continue;
    remap[l] = static_cast<std::int32_t>(levels.size());
    levels.push_back(std::move(c.levels[l]));
  }
  for (auto& code : c.codes) code = remap[code];
  c.levels = std::move(levels);
}

}  // namespace

std::vector<std::string> existing_columns(const std::filesystem::path& path,
                                          const std::vector<std::string>& wanted) {
  const store::ResultsReader r(path);
  std::vector<std::string> out;
  for (const auto& w : wanted)
    if (r.has_column(w)) out.push_back(w);
  return out;
}

Frame load_frame(const std::filesystem::path& path, const std::vector<std::string>& columns,
                 const std::string& where) {
  const auto filter = Filter::parse(where);
  if (!std::filesystem::exists(path))
    throw InputError(fmt::format("{}: no such file", path.string()));
  const store::ResultsReader reader(path);
  Frame f;
  f.path = path;
  f.meta = reader.meta();
  f.system = reader.system();
  f.file_rows = reader.rows();
  f.rows = static_cast<std::size_t>(f.file_rows);

  std::vector<std::string> want = columns;
  for (const auto& c : filter.columns()) {
    if (!reader.has_column(c))
      throw InputError(fmt::format("--where: {} has no column '{}'", path.string(), c));
    want.push_back(c);
  }
  for (const auto& c : want) {
    if (f.has(c) || !reader.has_column(c) || c == "status") continue;
    if (c == "config_id" || c == "message" || c == "finished_utc") {
      // Unique per row: one level per row (levels unsorted, may repeat) saves hashing and
      // sorting a million strings; filters and labels only need at(row).
      Categorical cat;
      cat.levels = reader.read_string(c);
      cat.codes.resize(cat.levels.size());
      for (std::size_t i = 0; i < cat.codes.size(); ++i)
        cat.codes[i] = static_cast<std::int32_t>(i);
      cat.sorted = false;
      f.text.emplace(c, std::move(cat));
      continue;
    }
    if (is_text_column(c)) {
      f.text.emplace(c, categorize(reader.read_string(c)));
      continue;
    }
    try {
      f.numeric.emplace(c, reader.read_double(c));
    } catch (const store::StoreError&) {
      // A writer's extra text column we do not know by name.
      f.text.emplace(c, categorize(reader.read_string(c)));
    }
  }

  std::vector<char> keep(f.rows, 1);
  if (reader.has_column("status")) {
    const auto status = reader.read_string("status");
    for (std::size_t i = 0; i < f.rows; ++i) keep[i] = status[i] == store::status::ok;
  }
  f.not_ok = static_cast<std::int64_t>(std::count(keep.begin(), keep.end(), 0));
  filter.apply(f, keep);
  const auto kept = static_cast<std::size_t>(std::count(keep.begin(), keep.end(), 1));
  f.filtered_out = f.file_rows - f.not_ok - static_cast<std::int64_t>(kept);

  f.run_row.resize(f.rows);
  for (std::size_t i = 0; i < f.rows; ++i) f.run_row[i] = static_cast<std::int64_t>(i);
  if (kept != f.rows) {
    compact(f.run_row, keep);
    for (auto& [_, v] : f.numeric) compact(v, keep);
    for (auto& [_, c] : f.text) {
      compact(c.codes, keep);
      prune_levels(c);
    }
  }
  f.rows = kept;
  return f;
}

}  // namespace dnnscape::analysis
