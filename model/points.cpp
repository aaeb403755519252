// Training points from a results file (the store side of the model).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/model.hpp"
#include "store/results.hpp"

namespace dnnscape::model {

FileData read_points(const std::filesystem::path& path, const std::string& metric,
                     const std::vector<std::int64_t>* rows) {
  if (!std::filesystem::exists(path))
    throw ModelError(fmt::format("{}: no such file", path.string()));
  const store::ResultsReader reader(path);
  FileData out;
  out.system.name = reader.system().hostname;
  out.system.peak_gflops_f32 = reader.system().peak_gflops_f32;
  out.system.peak_gflops_bf16 = reader.system().peak_gflops_bf16;
  out.system.mem_bandwidth_gbs = reader.system().mem_bandwidth_gbs;
  out.spec_sha256 = reader.meta().spec_sha256;
  out.spec_name = reader.meta().spec_name;
  if (!reader.has_column(metric))
    throw ModelError(fmt::format("{}: no /runs column '{}'", path.string(), metric));
  const auto status = reader.read_string("status");
  const auto family = reader.read_string("family");
  const auto value = reader.read_double(metric);
  const auto flops = reader.read_double("flops");
  const auto bytes = reader.read_double("bytes");
  const auto params = reader.read_double("params");
  const auto nan_column =
      std::vector<double>(status.size(), std::numeric_limits<double>::quiet_NaN());
  const auto memory =
      reader.has_column("memory_bytes") ? reader.read_double("memory_bytes") : nan_column;
  const auto wall = reader.has_column("wall_s") ? reader.read_double("wall_s") : nan_column;
  std::map<std::string, std::vector<std::int64_t>> ints;
  for (auto name : space::kIntParams) ints[std::string(name)] = reader.read_int(std::string(name));
  std::map<std::string, std::vector<std::string>> texts;
  for (auto name : space::kStringParams)
    texts[std::string(name)] = reader.read_string(std::string(name));
  const auto mode = reader.read_string("mode");
  const auto dtype = reader.read_string("dtype");
  const auto algorithm = reader.read_string("algorithm");
  const auto isa_cap = reader.read_string("isa_cap");
  const auto threads = reader.read_int("threads");
  std::vector<char> wanted(status.size(), rows == nullptr ? 1 : 0);
  if (rows != nullptr)
    for (auto r : *rows)
      if (r >= 0 && static_cast<std::size_t>(r) < wanted.size())
        wanted[static_cast<std::size_t>(r)] = 1;
  for (std::size_t i = 0; i < status.size(); ++i) {
    if (status[i] != store::status::ok) continue;
    ++out.ok_rows;
    if (wanted[i] == 0 || !std::isfinite(value[i]) || value[i] <= 0) continue;
    Point p;
    p.config.family = space::family_from_string(family[i]);
    for (auto& [name, column] : ints) *space::int_param(p.config, name) = column[i];
    for (auto& [name, column] : texts) *space::string_param(p.config, name) = column[i];
    p.config.knobs.mode = mode[i];
    p.config.knobs.dtype = dtype[i];
    p.config.knobs.algorithm = algorithm[i];
    p.config.knobs.isa_cap = isa_cap[i];
    p.config.knobs.threads = threads[i];
    p.flops = flops[i];
    p.bytes = bytes[i];
    p.params = params[i];
    p.value = value[i];
    p.memory_bytes = memory[i];
    p.wall_s = wall[i];
    out.points.push_back(std::move(p));
  }
  return out;
}

}  // namespace dnnscape::model
