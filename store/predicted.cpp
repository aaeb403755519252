#include "store/predicted.hpp"

#include <fmt/format.h>

#include <cstring>
#include <functional>

#include "store/h5.hpp"

namespace dnnscape::store {
namespace {

constexpr const char* kPredicted = "predicted";
constexpr std::size_t kIdWidth = 16;
constexpr std::size_t kNameWidth = 32;

void write_strings(hid_t group, const std::string& name, std::size_t width,
                   const std::vector<PredictedRow>& rows,
                   const std::function<std::string(const PredictedRow&)>& get) {
  const h5::Handle d = h5::create_column(group, name, schema::Type::string, width);
  std::vector<char> buf(rows.size() * width, '\0');
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::string v = get(rows[i]);
    std::memcpy(buf.data() + i * width, v.data(), std::min(v.size(), width));
  }
  const auto n = static_cast<std::int64_t>(rows.size());
  h5::set_length(d.id(), n);
  if (n > 0) {
    const h5::Handle type = h5::string_type(width);
    h5::write_rows(d.id(), type.id(), 0, n, buf.data());
  }
}

template <class T>
void write_numbers(hid_t group, const std::string& name, const std::vector<PredictedRow>& rows,
                   const std::function<T(const PredictedRow&)>& get) {
  constexpr auto type = std::is_same_v<T, double> ? schema::Type::float64 : schema::Type::int64;
  const h5::Handle d = h5::create_column(group, name, type, 0);
  std::vector<T> buf;
  buf.reserve(rows.size());
  for (const auto& r : rows) buf.push_back(get(r));
  const auto n = static_cast<std::int64_t>(rows.size());
  h5::set_length(d.id(), n);
  if (n > 0) h5::write_rows(d.id(), h5::native(type), 0, n, buf.data());
}

}  // namespace

void write_predicted(const std::filesystem::path& path, const std::string& metric,
                     const std::string& model_json, const std::vector<PredictedRow>& rows) {
  h5::quiet_errors();
  try {
    const h5::Handle fapl = h5::file_access(/*latest_format=*/true, /*clear_status_flags=*/false);
    h5::Handle file = h5::open_file(path.string(), H5F_ACC_RDWR, fapl.id());
    if (h5::exists(file.id(), kPredicted))
      h5::check_ok(H5Ldelete(file.id(), kPredicted, H5P_DEFAULT), "H5Ldelete");
    const h5::Handle g = h5::create_group(file.id(), kPredicted);
    h5::write_attr(g.id(), "metric", metric);
    h5::write_attr(g.id(), "model", model_json);
    write_strings(g.id(), "config_id", kIdWidth, rows,
                  [](const PredictedRow& r) { return r.config.config_id(); });
    write_strings(g.id(), "family", kNameWidth, rows, [](const PredictedRow& r) {
      return std::string(space::to_string(r.config.family));
    });
    for (auto name : space::kIntParams) {
      write_numbers<std::int64_t>(g.id(), std::string(name), rows, [name](const PredictedRow& r) {
        return *space::int_param(r.config, name);
      });
    }
    for (auto name : space::kStringParams) {
      write_strings(g.id(), std::string(name), kNameWidth, rows,
                    [name](const PredictedRow& r) { return *space::string_param(r.config, name); });
    }
    write_strings(g.id(), "mode", kNameWidth, rows,
                  [](const PredictedRow& r) { return r.config.knobs.mode; });
    write_strings(g.id(), "dtype", kNameWidth, rows,
                  [](const PredictedRow& r) { return r.config.knobs.dtype; });
    write_strings(g.id(), "algorithm", kNameWidth, rows,
                  [](const PredictedRow& r) { return r.config.knobs.algorithm; });
    write_strings(g.id(), "isa_cap", kNameWidth, rows,
                  [](const PredictedRow& r) { return r.config.knobs.isa_cap; });
    write_numbers<std::int64_t>(g.id(), "threads", rows,
                                [](const PredictedRow& r) { return r.config.knobs.threads; });
    write_numbers<double>(g.id(), "predicted", rows,
                          [](const PredictedRow& r) { return r.predicted; });
    write_numbers<double>(g.id(), "lower_90", rows,
                          [](const PredictedRow& r) { return r.lower_90; });
    write_numbers<double>(g.id(), "upper_90", rows,
                          [](const PredictedRow& r) { return r.upper_90; });
    write_numbers<std::int64_t>(g.id(), "extrapolated", rows, [](const PredictedRow& r) {
      return std::int64_t{r.extrapolated ? 1 : 0};
    });
    write_numbers<std::int64_t>(g.id(), "measured", rows, [](const PredictedRow& r) {
      return std::int64_t{r.measured ? 1 : 0};
    });
    file.close("H5Fclose");
  } catch (const h5::Error& e) {
    throw StoreError(fmt::format("{}: writing /predicted: {}", path.string(), e.what()));
  }
}

}  // namespace dnnscape::store
