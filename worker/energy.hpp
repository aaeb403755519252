// Energy counters of the CPU packages (Linux powercap RAPL), read around the timed repetitions so
// that a row can carry joules per step. Where the counters are missing or unreadable, the reader
// says why and the executor leaves energy_j NaN.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dnnscape::worker {

inline constexpr const char* kPowercapRoot = "/sys/class/powercap";
// kPowercapRoot, or $DNNSCAPE_POWERCAP_ROOT when set (tests; sysfs mounted elsewhere).
std::filesystem::path powercap_root();

// The RAPL package domains under a powercap root (top-level zones `intel-rapl:N` whose `name` is
// `package-N`; the kernel's intel_rapl driver serves AMD Zen too). Sub-zones (core, uncore, dram)
// are inside their package and `intel-rapl-mmio` repeats the package, so neither is added.
class EnergyReader {
 public:
  explicit EnergyReader(std::filesystem::path root = powercap_root());

  // True when at least one package domain exists and its counter can be read.
  [[nodiscard]] bool available() const { return !domains_.empty(); }
  // "powercap RAPL: package-0 (intel-rapl:0)[, ...]", or why there are no readings.
  [[nodiscard]] const std::string& source() const { return source_; }

  // Raw counters of every domain, microjoules (same order as the domains).
  using Snapshot = std::vector<double>;
  [[nodiscard]] Snapshot read() const;
  // Joules consumed between two snapshots, summed over the domains. A counter that went down
  // wrapped around once at its max_energy_range_uj; more than one wrap between two snapshots is
  // undetectable, so snapshots must be closer than range / power (minutes at server power).
  [[nodiscard]] double joules_between(const Snapshot& before, const Snapshot& after) const;

 private:
  struct Domain {
    std::string name;                 // package-0
    std::filesystem::path energy_uj;  // .../intel-rapl:0/energy_uj
    double max_energy_range_uj = 0;
  };
  std::vector<Domain> domains_;
  std::string source_;
};

// Where energy_j comes from on this machine, or why it is NaN (for /system energy_source).
std::string energy_source(const std::filesystem::path& root = powercap_root());

}  // namespace dnnscape::worker
