#include "space/grid.hpp"

#include <boost/random/sobol.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>

namespace dnnscape::space {
namespace {

std::string* knob_name_field(Knobs& k, std::string_view name) {
  if (name == "mode") return &k.mode;
  if (name == "dtype") return &k.dtype;
  if (name == "algorithm") return &k.algorithm;
  if (name == "isa_cap") return &k.isa_cap;
  return nullptr;
}

void assign(Config& c, const Axis& axis, std::size_t i) {
  if (axis.numeric()) {
    std::int64_t* field = axis.name == "threads" ? &c.knobs.threads : int_param(c, axis.name);
    if (field == nullptr) throw std::logic_error("grid axis names no integer field: " + axis.name);
    *field = axis.ints.at(i);
    return;
  }
  std::string* field = knob_name_field(c.knobs, axis.name);
  if (field == nullptr) field = string_param(c, axis.name);
  if (field == nullptr) throw std::logic_error("grid axis names no string field: " + axis.name);
  *field = axis.names.at(i);
}

std::uint64_t saturating_mul(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || r > kGridSizeCap) return kGridSizeCap;
  return r;
}

std::vector<Config> configs_at(const FamilyGrid& g, const std::set<std::uint64_t>& indices) {
  std::vector<Config> out;
  out.reserve(indices.size());
  for (auto i : indices) out.push_back(g.at(i));
  return out;
}

void append(std::vector<Config>& to, std::vector<Config> from) {
  to.insert(to.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
}

std::vector<std::uint64_t> sizes_of(const std::vector<FamilyGrid>& grids) {
  std::vector<std::uint64_t> sizes;
  sizes.reserve(grids.size());
  for (const auto& g : grids) sizes.push_back(g.size());
  return sizes;
}

// How one varying axis turns a Sobol coordinate u in [0, 1) into a value index.
struct SobolAxis {
  std::size_t axis = 0;
  std::vector<std::size_t> order;  // value indices in mapping order
  // Per position in `order`: (log2(v) - log2(min)) / (log2(max) - log2(min)), so the ends are
  // exactly 0 and 1 and ties (u = 0.5 between two values) do not depend on libm rounding.
  // Empty = categorical mapping.
  std::vector<double> position;

  [[nodiscard]] std::size_t pick(double u) const {
    const std::size_t n = order.size();
    if (position.empty()) return order[std::min(n - 1, static_cast<std::size_t>(u * n))];
    std::size_t best = 0;  // ties go to the smaller value
    for (std::size_t k = 1; k < n; ++k) {
      if (std::abs(position[k] - u) < std::abs(position[best] - u)) best = k;
    }
    return order[best];
  }
};

// Numeric axes of positive values map in log2 space over their sorted values; other numeric axes
// (threads with 0 = all cores) by index over their sorted values; names by index in list order.
SobolAxis sobol_axis(const Axis& a, std::size_t axis_index) {
  SobolAxis s;
  s.axis = axis_index;
  s.order.resize(a.size());
  std::iota(s.order.begin(), s.order.end(), std::size_t{0});
  if (!a.numeric()) return s;
  std::sort(s.order.begin(), s.order.end(),
            [&](std::size_t x, std::size_t y) { return a.ints[x] < a.ints[y]; });
  if (a.ints[s.order.front()] <= 0) return s;
  const auto log2_of = [&](std::size_t k) {
    return std::log2(static_cast<double>(a.ints[s.order[k]]));
  };
  const double lo = log2_of(0);
  const double span = log2_of(s.order.size() - 1) - lo;
  for (std::size_t k = 0; k < s.order.size(); ++k) s.position.push_back((log2_of(k) - lo) / span);
  s.position.back() = 1.0;
  return s;
}

// u in [0, 1) from a 64-bit Sobol coordinate: the top 53 bits, exactly representable.
double unit_interval(std::uint64_t x) {
  return std::ldexp(static_cast<double>(x >> 11), -53);
}

std::set<std::uint64_t> sobol_indices(const FamilyGrid& g, std::uint64_t share,
                                      std::uint64_t seed) {
  std::set<std::uint64_t> chosen;
  if (share == 0) return chosen;
  std::vector<SobolAxis> varying;
  for (std::size_t i = 0; i < g.axes.size(); ++i) {
    if (g.axes[i].size() > 1) varying.push_back(sobol_axis(g.axes[i], i));
  }
  if (varying.empty()) return {0};  // a single config
  boost::random::sobol engine(varying.size());
  engine.seed(seed);
  std::vector<std::size_t> value_index(g.axes.size(), 0);
  const std::uint64_t budget = sobol_point_budget(share);
  for (std::uint64_t point = 0; point < budget && chosen.size() < share; ++point) {
    for (const auto& v : varying) value_index[v.axis] = v.pick(unit_interval(engine()));
    chosen.insert(g.index_of(value_index));
  }
  return chosen;
}

}  // namespace

std::uint64_t FamilyGrid::size() const {
  std::uint64_t n = 1;
  for (const auto& a : axes) n = saturating_mul(n, a.size());
  return n;
}

Config FamilyGrid::at(const std::vector<std::size_t>& value_index) const {
  Config c;
  c.family = family;
  for (std::size_t i = 0; i < axes.size(); ++i) assign(c, axes[i], value_index.at(i));
  return c;
}

Config FamilyGrid::at(std::uint64_t index) const {
  std::vector<std::size_t> value_index(axes.size(), 0);
  for (std::size_t i = axes.size(); i-- > 0;) {
    value_index[i] = static_cast<std::size_t>(index % axes[i].size());
    index /= axes[i].size();
  }
  return at(value_index);
}

std::uint64_t FamilyGrid::index_of(const std::vector<std::size_t>& value_index) const {
  std::uint64_t index = 0;
  for (std::size_t i = 0; i < axes.size(); ++i) index = index * axes[i].size() + value_index.at(i);
  return index;
}

std::vector<Config> expand_grid(const std::vector<FamilyGrid>& grids) {
  std::vector<Config> out;
  for (const auto& g : grids) {
    for (std::uint64_t i = 0, n = g.size(); i < n; ++i) out.push_back(g.at(i));
  }
  return out;
}

std::vector<std::uint64_t> split_proportionally(std::uint64_t count,
                                                const std::vector<std::uint64_t>& sizes) {
  __extension__ using u128 = unsigned __int128;
  const u128 total = std::accumulate(sizes.begin(), sizes.end(), u128{0});
  std::vector<std::uint64_t> share(sizes.size(), 0);
  if (total == 0) return share;
  std::vector<std::pair<u128, std::size_t>> remainder;  // (fractional part * total, bucket)
  std::uint64_t given = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const u128 exact = u128{count} * sizes[i];
    share[i] = static_cast<std::uint64_t>(exact / total);
    given += share[i];
    remainder.emplace_back(exact % total, i);
  }
  std::stable_sort(remainder.begin(), remainder.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t k = 0; given < count && k < remainder.size(); ++k) {
    const auto i = remainder[k].second;
    if (share[i] < sizes[i]) ++share[i], ++given;
  }
  return share;
}

std::vector<Config> sample_random(const std::vector<FamilyGrid>& grids, std::uint64_t count,
                                  std::uint64_t seed) {
  const auto shares = split_proportionally(count, sizes_of(grids));
  std::mt19937_64 engine(seed);
  std::vector<Config> out;
  for (std::size_t f = 0; f < grids.size(); ++f) {
    const std::uint64_t size = grids[f].size();
    std::set<std::uint64_t> chosen;
    while (chosen.size() < shares[f]) chosen.insert(uniform_below(engine, size));
    append(out, configs_at(grids[f], chosen));
  }
  return out;
}

std::uint64_t sobol_point_budget(std::uint64_t share) {
  return std::max<std::uint64_t>(std::uint64_t{1} << 20, 16 * share);
}

std::vector<Config> sample_sobol(const std::vector<FamilyGrid>& grids, std::uint64_t count,
                                 std::uint64_t seed) {
  const auto shares = split_proportionally(count, sizes_of(grids));
  std::vector<Config> out;
  for (std::size_t f = 0; f < grids.size(); ++f) {
    append(out, configs_at(grids[f], sobol_indices(grids[f], shares[f], seed)));
  }
  return out;
}

}  // namespace dnnscape::space
