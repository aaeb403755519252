#include "worker/best_mode.hpp"

#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "worker/sysinfo.hpp"

namespace dnnscape::worker::best {

namespace {

constexpr const char* kSchema = "dnnscape-best-mode/1";

std::optional<Peaks>& explicit_peaks() {
  static std::optional<Peaks> p;
  return p;
}

nlohmann::json to_json(const Decision& d) {
  return {{"algorithm", d.algorithm}, {"measured_s", d.measured}, {"predicted_s", d.predicted}};
}

Decision decision_from_json(const nlohmann::json& j) {
  Decision d;
  d.algorithm = j.at("algorithm").get<std::string>();
  if (j.contains("measured_s"))
    d.measured = j.at("measured_s").get<std::map<std::string, double>>();
  if (j.contains("predicted_s"))
    d.predicted = j.at("predicted_s").get<std::map<std::string, double>>();
  return d;
}

// Parses the file; throws on anything malformed.
std::map<std::string, Decision> read_entries(const std::filesystem::path& path) {
  std::map<std::string, Decision> out;
  std::ifstream in(path);
  if (!in) return out;  // missing: empty
  std::stringstream ss;
  ss << in.rdbuf();
  const auto j = nlohmann::json::parse(ss.str());
  if (!j.is_object() || j.value("schema", "") != kSchema || !j.contains("entries") ||
      !j.at("entries").is_object()) {
    throw std::runtime_error(fmt::format("not a {} file", kSchema));
  }
  for (const auto& [k, v] : j.at("entries").items()) out[k] = decision_from_json(v);
  return out;
}

struct Global {
  Cache cache;
  bool loaded = false;
  BestModeStats stats;
};
Global& global() {
  static Global g;
  return g;
}

}  // namespace

std::string LayerKey::str() const {
  std::string dims;
  for (const auto& [name, v] : shape) {
    if (!dims.empty()) dims += ',';
    dims += fmt::format("{}{}", name, v);
  }
  return fmt::format("op={};shape={};pass={};dtype={};threads={};isa={};onednn={}", op, dims, pass,
                     dtype, threads, isa, onednn);
}

LayerKey make_key(std::string op, std::vector<std::pair<std::string, std::int64_t>> shape,
                  std::string pass, std::string dtype) {
  LayerKey k;
  k.op = std::move(op);
  k.shape = std::move(shape);
  k.pass = std::move(pass);
  k.dtype = std::move(dtype);
  k.threads = omp_get_max_threads();
  k.isa = onednn_isa();
  k.onednn = onednn_version();
  return k;
}

BestModeStats& stats() {
  return global().stats;
}
void reset_stats() {
  global().stats = {};
}

std::filesystem::path cache_path() {
  if (const char* p = std::getenv("DNNSCAPE_BEST_CACHE"); p != nullptr && *p != '\0') return p;
  std::filesystem::path base;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    base = x;
  } else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    base = std::filesystem::path(h) / ".cache";
  } else {
    base = std::filesystem::temp_directory_path();
  }
  return base / "dnnscape" / "best-mode.json";
}

bool Cache::load(const std::filesystem::path& path) {
  path_ = path;
  entries_.clear();
  fresh_.clear();
  warning_.clear();
  try {
    entries_ = read_entries(path);
    return true;
  } catch (const std::exception& e) {
    warning_ = fmt::format("dnnscape: ignoring the best-mode cache {} ({}); it will be rewritten",
                           path.string(), e.what());
    std::fprintf(stderr, "%s\n", warning_.c_str());
    return false;
  }
}

std::optional<Decision> Cache::find(const std::string& key) const {
  if (auto it = entries_.find(key); it != entries_.end()) return it->second;
  return std::nullopt;
}

void Cache::put(const std::string& key, const Decision& d) {
  entries_[key] = d;
  fresh_[key] = d;
}

void Cache::save() {
  if (fresh_.empty() || path_.empty()) return;
  std::map<std::string, Decision> merged;
  try {
    merged = read_entries(path_);  // what other executors wrote since we loaded
  } catch (const std::exception&) {
    // corrupt: replaced by ours
  }
  for (const auto& [k, d] : fresh_) merged[k] = d;
  nlohmann::json entries = nlohmann::json::object();
  for (const auto& [k, d] : merged) entries[k] = to_json(d);
  const nlohmann::json j{{"schema", kSchema}, {"entries", entries}};
  std::error_code ec;
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path(), ec);
  const std::filesystem::path tmp = path_.string() + fmt::format(".tmp.{}", ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(1) << '\n';
    out.close();
    if (!out) {
      std::fprintf(stderr, "dnnscape: cannot write the best-mode cache %s\n", tmp.c_str());
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path_, ec);
  if (ec) {
    std::fprintf(stderr, "dnnscape: cannot write the best-mode cache %s: %s\n", path_.c_str(),
                 ec.message().c_str());
    std::filesystem::remove(tmp, ec);
    return;
  }
  for (const auto& [k, d] : merged) entries_.try_emplace(k, d);
  fresh_.clear();
}

Cache& cache() {
  Global& g = global();
  const auto path = cache_path();
  if (!g.loaded || g.cache.path() != path) {
    g.cache.load(path);
    g.loaded = true;
  }
  return g.cache;
}

void forget_cache() {
  global().cache = Cache{};
  global().loaded = false;
}

void set_peaks(const Peaks& peaks) {
  explicit_peaks() = peaks;
}

double roofline_s(double flops, double bytes, int threads) {
  static const std::optional<Peaks> cached = load_cached_peaks();
  const bool given = explicit_peaks() && explicit_peaks()->gflops_f32 > 0;
  const std::optional<Peaks>& p = given ? explicit_peaks() : cached;
  if (!p || p->gflops_f32 <= 0) return 0;
  double peak = p->gflops_f32;
  if (p->gflops_f32_1core > 0) peak = std::min(peak, std::max(1, threads) * p->gflops_f32_1core);
  const double t_flops = flops / (peak * 1e9);
  const double t_bytes = p->mem_bandwidth_gbs > 0 ? bytes / (p->mem_bandwidth_gbs * 1e9) : 0.0;
  return std::max(t_flops, t_bytes);
}

std::vector<std::string> survivors(const std::map<std::string, double>& predicted,
                                   const std::string& keep) {
  double best = std::numeric_limits<double>::infinity();
  for (const auto& [a, t] : predicted) best = std::min(best, t);
  std::vector<std::string> out;
  for (const auto& [a, t] : predicted) {
    // No ceilings (best == 0): nothing can be ranked, so nothing is pruned.
    if (a == keep || best <= 0 || t <= kPruneFactor * best) {
      out.push_back(a);
    } else {
      ++stats().pruned;
    }
  }
  return out;
}

Decision measure_and_choose(const std::vector<Candidate>& candidates,
                            const std::string& default_algorithm) {
  Decision d;
  for (const auto& c : candidates) d.predicted[c.algorithm] = c.predicted_s;
  if (candidates.size() == 1) {  // nothing to compare: no measurement
    d.algorithm = candidates.front().algorithm;
    return d;
  }
  BestModeStats& s = stats();
  std::vector<std::vector<double>> t(candidates.size());
  for (const auto& c : candidates) {
    c.run();  // warm-up: first-touch of buffers, kernel caches
    ++s.executions;
  }
  for (int r = 0; r < kTimedRuns; ++r) {
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      candidates[i].run();
      const auto t1 = std::chrono::steady_clock::now();
      t[i].push_back(std::chrono::duration<double>(t1 - t0).count());
      ++s.executions;
    }
  }
  s.measurements += static_cast<int>(candidates.size());
  double best = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    auto v = t[i];
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    const double med = v[v.size() / 2];
    d.measured[candidates[i].algorithm] = med;
    if (med < best) {
      best = med;
      d.algorithm = candidates[i].algorithm;
    }
  }
  if (auto it = d.measured.find(default_algorithm);
      it != d.measured.end() && it->second <= best * (1.0 + kTieMargin)) {
    d.algorithm = default_algorithm;
  }
  return d;
}

std::string choose_whole_model(const LayerKey& key, const std::vector<std::string>& names,
                               const std::function<Variant(const std::string&)>& variant) {
  if (auto hit = cache().find(key.str());
      hit && std::find(names.begin(), names.end(), hit->algorithm) != names.end()) {
    record(key, *hit, true);
    return hit->algorithm;
  }
  std::vector<std::unique_ptr<Model>> models;
  std::vector<Candidate> cands;
  for (const auto& name : names) {
    auto [model, counts] = variant(name);
    Model* m = model.get();
    models.push_back(std::move(model));
    cands.push_back(
        {name, roofline_s(counts.flops, counts.bytes, key.threads), [m] { m->step(); }});
  }
  const Decision d = measure_and_choose(cands, names.front());
  record(key, d, false);
  cache().save();
  return d.algorithm;
}

void record(const LayerKey& key, const Decision& d, bool from_cache) {
  BestModeStats& s = stats();
  ++s.decisions;
  if (from_cache) {
    ++s.cache_hits;
  } else {
    cache().put(key.str(), d);
  }
  s.choices.emplace_back(key.str(), d.algorithm);
}

}  // namespace dnnscape::worker::best
