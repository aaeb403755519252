// The design space of each model family as a cartesian product of axes, and the three ways of
// drawing configs from it (full grid, uniform random, Sobol). Pure: no YAML, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "space/config.hpp"

namespace dnnscape::space {

// One dimension of a grid: a parameter or knob (schema name) and its distinct values, in the
// order the spec lists them. Exactly one of `ints` and `names` is non-empty.
struct Axis {
  std::string name;
  std::vector<std::int64_t> ints;
  std::vector<std::string> names;

  [[nodiscard]] bool numeric() const { return !ints.empty(); }
  [[nodiscard]] std::size_t size() const { return numeric() ? ints.size() : names.size(); }
};

// Grid sizes saturate here, so that sums and products of sizes never overflow.
inline constexpr std::uint64_t kGridSizeCap = std::uint64_t{1} << 62;

// Every parameter of one family crossed with every knob. Grid index = mixed-radix number over
// the axes, the last axis varying fastest.
struct FamilyGrid {
  Family family = Family::fc;
  std::vector<Axis> axes;

  // Number of configs, saturated at kGridSizeCap.
  [[nodiscard]] std::uint64_t size() const;
  // The config with the given value index on every axis.
  [[nodiscard]] Config at(const std::vector<std::size_t>& value_index) const;
  // The config with the given grid index (< size()).
  [[nodiscard]] Config at(std::uint64_t index) const;
  [[nodiscard]] std::uint64_t index_of(const std::vector<std::size_t>& value_index) const;
};

// Every config of every grid, grid after grid, each in grid-index order.
std::vector<Config> expand_grid(const std::vector<FamilyGrid>& grids);

// Splits `count` over buckets proportionally to `sizes` (largest remainder, ties to the earlier
// bucket). Requires count <= sum(sizes); no bucket gets more than its size.
std::vector<std::uint64_t> split_proportionally(std::uint64_t count,
                                                const std::vector<std::uint64_t>& sizes);

// A uniform integer in [0, bound) from the raw 64-bit output of the engine (rejection of the
// biased low range): identical on every platform, unlike std::uniform_int_distribution.
template <class Engine>
std::uint64_t uniform_below(Engine& engine, std::uint64_t bound) {
  const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const std::uint64_t r = engine();
    if (r >= threshold) return r % bound;
  }
}

// `count` distinct configs drawn uniformly (std::mt19937_64 seeded with `seed`), split over the
// grids by split_proportionally; each grid's share in grid-index order. Requires
// count <= sum of the grid sizes.
std::vector<Config> sample_random(const std::vector<FamilyGrid>& grids, std::uint64_t count,
                                  std::uint64_t seed);

// `count` distinct configs from a Sobol sequence over the varying axes of each grid, skipping the
// first `seed` points (see docs/spec.md for the mapping). Draws at most
// sobol_point_budget(share) points per grid, so it may return fewer than `count` configs.
std::vector<Config> sample_sobol(const std::vector<FamilyGrid>& grids, std::uint64_t count,
                                 std::uint64_t seed);
std::uint64_t sobol_point_budget(std::uint64_t share);

}  // namespace dnnscape::space
