#include "worker/energy.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <system_error>

namespace dnnscape::worker {

namespace fs = std::filesystem;

namespace {

// First line of a sysfs file, or "" with `error` set to errno's text.
std::string read_line(const fs::path& p, std::string* error = nullptr) {
  errno = 0;
  std::ifstream in(p);
  std::string line;
  if (!in || !std::getline(in, line)) {
    if (error != nullptr) *error = errno != 0 ? std::strerror(errno) : "empty";
    return "";
  }
  return line;
}

// A non-negative integer counter (microjoules), or a negative value when unreadable.
double read_counter(const fs::path& p, std::string* error = nullptr) {
  const std::string s = read_line(p, error);
  if (s.empty()) return -1;
  try {
    std::size_t used = 0;
    const double v = static_cast<double>(std::stoull(s, &used));
    return used == 0 ? -1 : v;
  } catch (const std::exception&) {
    if (error != nullptr) *error = fmt::format("not a number: '{}'", s);
    return -1;
  }
}

// Why perf energy events cannot stand in (dnnscape reads powercap only).
std::string perf_note() {
  return fs::exists("/sys/bus/event_source/devices/power/events")
             ? "perf power/energy-pkg exists but dnnscape reads powercap only"
             : "no perf power PMU (/sys/bus/event_source/devices/power) either";
}

}  // namespace

fs::path powercap_root() {
  const char* env = std::getenv("DNNSCAPE_POWERCAP_ROOT");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path(kPowercapRoot);
}

EnergyReader::EnergyReader(fs::path root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    source_ =
        fmt::format("none: {} does not exist (no powercap in this kernel, VM or container); {}",
                    root.string(), perf_note());
    return;
  }
  static const std::regex top_zone(R"(intel-rapl:(\d+))");
  std::vector<fs::path> zones;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (std::regex_match(e.path().filename().string(), top_zone)) zones.push_back(e.path());
  }
  std::sort(zones.begin(), zones.end());
  std::vector<std::string> problems;
  for (const auto& z : zones) {
    const std::string name = read_line(z / "name");
    if (name.rfind("package", 0) != 0) continue;  // psys and the like overlap the packages
    std::string why;
    const double range = read_counter(z / "max_energy_range_uj", &why);
    const double now = range > 0 ? read_counter(z / "energy_uj", &why) : -1;
    if (range <= 0 || now < 0) {
      problems.push_back(fmt::format("{} ({}): {}", name, z.filename().string(), why));
      continue;
    }
    domains_.push_back({name, z / "energy_uj", range});
  }
  if (!problems.empty()) {
    // All packages or none: a partial sum would look like a low-power machine.
    domains_.clear();
    source_ = fmt::format(
        "none: RAPL counters under {} not readable: {}{}", root.string(), fmt::join(problems, "; "),
        std::any_of(problems.begin(), problems.end(),
                    [](const auto& p) { return p.find("ermission") != std::string::npos; })
            ? " (energy_uj is root-only since Linux 5.10)"
            : "");
    return;
  }
  if (domains_.empty()) {
    source_ = fmt::format("none: no RAPL package domain (intel-rapl:N/name package-N) in {}; {}",
                          root.string(), perf_note());
    return;
  }
  std::vector<std::string> names;
  for (const auto& d : domains_) {
    names.push_back(fmt::format("{} ({})", d.name, d.energy_uj.parent_path().filename().string()));
  }
  source_ = fmt::format("powercap RAPL: {}", fmt::join(names, ", "));
}

EnergyReader::Snapshot EnergyReader::read() const {
  Snapshot s;
  s.reserve(domains_.size());
  for (const auto& d : domains_) {
    const double v = read_counter(d.energy_uj);
    if (v < 0) throw std::runtime_error(fmt::format("cannot read {}", d.energy_uj.string()));
    s.push_back(v);
  }
  return s;
}

double EnergyReader::joules_between(const Snapshot& before, const Snapshot& after) const {
  if (before.size() != domains_.size() || after.size() != domains_.size()) {
    throw std::invalid_argument("energy snapshots of a different set of domains");
  }
  double uj = 0;
  for (std::size_t i = 0; i < domains_.size(); ++i) {
    double d = after[i] - before[i];
    if (d < 0) d += domains_[i].max_energy_range_uj;  // the counter wrapped around
    uj += d;
  }
  return uj * 1e-6;
}

std::string energy_source(const fs::path& root) {
  return EnergyReader(root).source();
}

}  // namespace dnnscape::worker
