// The sweep spec: value forms, expansion, sampling, config ids and the exact error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "space/grid.hpp"
#include "space/spec.hpp"

using namespace dnnscape::space;

namespace {

// The ParaDnn FC grid: 6 x 9 x 2 x 2 x 9 = 1944 configs.
const std::string kParaDnnFc = R"(name: paradnn-fc
families:
  fc:
    layers: {log2: [4, 128]}
    nodes:  {log2: [32, 8192]}
    input:  [2000, 8000]
    output: [200, 1000]
    batch:  {log2: [64, 16384]}
knobs:
  mode:  [training]
  dtype: [f32]
  threads: [0]
sampling: grid
measure: {warmup_s: 0.2, min_reps: 5, max_reps: 200, target_ci: 0.02, max_time_s: 20}
limits:  {memory_fraction: 0.7, timeout_s: 300}
)";

// A valid FC family, to which tests append one top-level section.
const std::string kTinyFc = R"(name: x
families:
  fc:
    layers: 4
    nodes: 32
    input: 10
    output: 10
    batch: 8
)";

std::string error_of(const std::string& yaml) {
  try {
    (void)parse_spec(yaml, "bad.yaml");
  } catch (const SpecError& e) {
    return e.what();
  }
  return "(no error)";
}

// A spec with one FC family whose `layers` value is given; the other parameters are scalars.
std::string fc_with_layers(const std::string& layers) {
  return "name: x\nfamilies:\n  fc:\n    layers: " + layers +
         "\n    nodes: 64\n    input: 10\n    output: 10\n    batch: 8\n";
}

std::vector<std::int64_t> layers_of(const Spec& s) {
  std::vector<std::int64_t> out;
  for (const auto& c : s.configs) out.push_back(c.layers);
  return out;
}

std::set<std::string> ids_of(const Spec& s) {
  std::set<std::string> ids;
  for (const auto& c : s.configs) ids.insert(c.config_id());
  return ids;
}

std::string with_sampling(const std::string& sampling) {
  return kParaDnnFc.substr(0, kParaDnnFc.find("sampling:")) + "sampling: " + sampling + "\n";
}

}  // namespace

TEST_CASE("the ParaDnn FC grid expands to 1944 configs in grid order") {
  const auto s = parse_spec(kParaDnnFc, "fc.yaml");
  CHECK(s.name == "paradnn-fc");
  CHECK(s.path == "fc.yaml");
  REQUIRE(s.configs.size() == 1944);
  CHECK(ids_of(s).size() == 1944);
  CHECK(s.sampling.kind == Sampling::Kind::grid);
  CHECK(s.sha256 == sha256_hex(kParaDnnFc));
  CHECK(s.yaml_text == kParaDnnFc);
  CHECK(s.measure.max_reps == 200);
  CHECK(s.measure.target_ci == doctest::Approx(0.02));
  CHECK(s.limits.timeout_s == doctest::Approx(300));

  const auto& first = s.configs.front();
  CHECK(first.family == Family::fc);
  CHECK(first.layers == 4);
  CHECK(first.nodes == 32);
  CHECK(first.input == 2000);
  CHECK(first.output == 200);
  CHECK(first.batch == 64);
  CHECK(first.filters == -1);
  CHECK(first.cell.empty());
  CHECK(first.knobs == Knobs{});
  CHECK(s.configs[1].batch == 128);  // the last axis varies fastest
  const auto& last = s.configs.back();
  CHECK(last.layers == 128);
  CHECK(last.nodes == 8192);
  CHECK(last.input == 8000);
  CHECK(last.output == 1000);
  CHECK(last.batch == 16384);

  std::set<std::int64_t> layers, nodes, batch;
  for (const auto& c : s.configs)
    layers.insert(c.layers), nodes.insert(c.nodes), batch.insert(c.batch);
  CHECK(layers == std::set<std::int64_t>{4, 8, 16, 32, 64, 128});
  CHECK(nodes.size() == 9);
  CHECK(batch.size() == 9);
}

TEST_CASE("value forms: scalar, list, log2 and range") {
  CHECK(layers_of(parse_spec(fc_with_layers("3"), "s")) == std::vector<std::int64_t>{3});
  CHECK(layers_of(parse_spec(fc_with_layers("[5, 1, 3]"), "s")) ==
        std::vector<std::int64_t>{5, 1, 3});
  CHECK(layers_of(parse_spec(fc_with_layers("[2, 2, 4]"), "s")) ==
        std::vector<std::int64_t>{2, 4});  // duplicates collapse
  CHECK(layers_of(parse_spec(fc_with_layers("{log2: [1, 16]}"), "s")) ==
        std::vector<std::int64_t>{1, 2, 4, 8, 16});
  CHECK(layers_of(parse_spec(fc_with_layers("{log2: [8, 8]}"), "s")) ==
        std::vector<std::int64_t>{8});
  CHECK(layers_of(parse_spec(fc_with_layers("{range: [1, 10, 4]}"), "s")) ==
        std::vector<std::int64_t>{1, 5, 9});
  CHECK(layers_of(parse_spec(fc_with_layers("{range: [2, 6, 2]}"), "s")) ==
        std::vector<std::int64_t>{2, 4, 6});
  CHECK(layers_of(parse_spec(fc_with_layers("\n      - 7\n      - 9"), "s")) ==
        std::vector<std::int64_t>{7, 9});
}

TEST_CASE("cnn and rnn families take string parameters; families are concatenated") {
  const auto s = parse_spec(R"(name: mixed
families:
  rnn:
    cell: [lstm, gru]
    layers: 1
    embedding: 100
    length: 10
    vocab: 1024
    batch: 64
  cnn:
    block_fn: bottleneck
    filters: [16, 32]
    blocks: 2
    image: 100
    output: 500
    batch: {range: [64, 128, 64]}
)",
                            "mixed.yaml");
  REQUIRE(s.configs.size() == 2 + 4);
  // Families come in the fixed order fc, cnn, rnn whatever the YAML order.
  CHECK(s.configs[0].family == Family::cnn);
  CHECK(s.configs[0].block_fn == "bottleneck");
  CHECK(s.configs[0].filters == 16);
  CHECK(s.configs[0].cell.empty());
  CHECK(s.configs[0].layers == -1);
  CHECK(s.configs[3].filters == 32);
  CHECK(s.configs[3].batch == 128);
  CHECK(s.configs[4].family == Family::rnn);
  CHECK(s.configs[4].cell == "lstm");
  CHECK(s.configs[5].cell == "gru");
  CHECK(s.configs[5].vocab == 1024);
  CHECK(s.configs[5].block_fn.empty());
}

TEST_CASE("knobs default and are crossed with every family") {
  const auto plain = parse_spec(kTinyFc, "s");
  REQUIRE(plain.configs.size() == 1);
  CHECK(plain.configs[0].knobs == Knobs{});

  const auto s = parse_spec(kTinyFc + R"(knobs:
  mode: [training, inference]
  dtype: [f32, bf16]
  threads: {range: [0, 2, 1]}
  algorithm: matmul
  isa_cap: [avx2, avx512_core]
)",
                            "s");
  REQUIRE(s.configs.size() == 2 * 2 * 3 * 2);
  CHECK(ids_of(s).size() == s.configs.size());
  std::set<std::string> modes, dtypes, isas;
  std::set<std::int64_t> threads;
  for (const auto& c : s.configs) {
    modes.insert(c.knobs.mode), dtypes.insert(c.knobs.dtype), isas.insert(c.knobs.isa_cap);
    threads.insert(c.knobs.threads);
    CHECK(c.knobs.algorithm == "matmul");
    CHECK(c.layers == 4);
  }
  CHECK(modes == std::set<std::string>{"training", "inference"});
  CHECK(dtypes == std::set<std::string>{"f32", "bf16"});
  CHECK(isas == std::set<std::string>{"avx2", "avx512_core"});
  CHECK(threads == std::set<std::int64_t>{0, 1, 2});
}

TEST_CASE("config_id is a literal, stable value independent of YAML key order") {
  const auto s = parse_spec(kParaDnnFc, "fc.yaml");
  const auto& c = s.configs.front();
  CHECK(c.canonical() ==
        "family=fc;layers=4;nodes=32;input=2000;output=200;batch=64;mode=training;dtype=f32;"
        "algorithm=default;isa_cap=none;threads=0");
  CHECK(c.config_id() == "4c2c1d38241a1c2f");

  const auto reordered = parse_spec(R"(limits:  {timeout_s: 300, memory_fraction: 0.7}
knobs:
  threads: [0]
  dtype: [f32]
  mode:  [training]
families:
  fc:
    batch:  {log2: [64, 16384]}
    output: [1000, 200]
    nodes:  {log2: [32, 8192]}
    input:  [8000, 2000]
    layers: {log2: [4, 128]}
name: paradnn-fc
)",
                                    "reordered.yaml");
  CHECK(ids_of(reordered) == ids_of(s));
  CHECK(reordered.sha256 != s.sha256);  // the text differs, so does its hash
}

TEST_CASE("random sampling: N distinct configs, reproducible, seed-dependent") {
  const auto a = parse_spec(with_sampling("{random: 100, seed: 7}"), "r.yaml");
  const auto b = parse_spec(with_sampling("{random: 100, seed: 7}"), "r.yaml");
  const auto c = parse_spec(with_sampling("{random: 100, seed: 8}"), "r.yaml");
  CHECK(a.sampling.kind == Sampling::Kind::random);
  CHECK(a.sampling.count == 100);
  CHECK(a.sampling.seed == 7);
  REQUIRE(a.configs.size() == 100);
  CHECK(ids_of(a).size() == 100);
  CHECK(a.configs == b.configs);
  CHECK(ids_of(a) != ids_of(c));
  // The draw is pinned: a change of engine, index decoding or order would move this config.
  CHECK(a.configs.front().label() ==
        "fc layers=4 nodes=32 input=8000 output=1000 batch=128 training f32");
  const auto all = ids_of(parse_spec(kParaDnnFc, "fc.yaml"));
  for (const auto& id : ids_of(a)) CHECK(all.count(id) == 1);
  // The whole grid can be drawn.
  CHECK(parse_spec(with_sampling("{random: 1944}"), "r.yaml").configs.size() == 1944);
}

TEST_CASE("uniform_below uses the raw engine output, not std::uniform_int_distribution") {
  std::mt19937_64 engine(42);
  std::mt19937_64 copy(42);
  for (int i = 0; i < 100; ++i) CHECK(uniform_below(engine, 10) == copy() % 10);
  // The standard fixes the engine's output: the 10000th value of a default-seeded one.
  std::mt19937_64 fresh;
  fresh.discard(9999);
  CHECK(fresh() == 9981545732273789042ULL);
}

TEST_CASE("sobol sampling: N distinct configs, reproducible, seed-dependent, covers the range") {
  const auto a = parse_spec(with_sampling("{sobol: 64, seed: 0}"), "q.yaml");
  const auto b = parse_spec(with_sampling("{sobol: 64, seed: 0}"), "q.yaml");
  const auto c = parse_spec(with_sampling("{sobol: 64, seed: 1000}"), "q.yaml");
  CHECK(a.sampling.kind == Sampling::Kind::sobol);
  REQUIRE(a.configs.size() == 64);
  CHECK(ids_of(a).size() == 64);
  CHECK(a.configs == b.configs);
  CHECK(ids_of(a) != ids_of(c));
  // Pinned like the random draw: the mapping from Sobol points to values must not drift.
  CHECK(a.configs.front().label() ==
        "fc layers=4 nodes=128 input=8000 output=200 batch=512 training f32");
  std::set<std::int64_t> layers, nodes, batch, input;
  for (const auto& x : a.configs) {
    layers.insert(x.layers), nodes.insert(x.nodes), batch.insert(x.batch), input.insert(x.input);
  }
  CHECK(*layers.begin() == 4);
  CHECK(*layers.rbegin() == 128);
  CHECK(*nodes.begin() == 32);
  CHECK(*nodes.rbegin() == 8192);
  CHECK(*batch.begin() == 64);
  CHECK(*batch.rbegin() == 16384);
  CHECK(input == std::set<std::int64_t>{2000, 8000});
  CHECK(layers.size() == 6);  // 64 low-discrepancy points reach every layer count
  // Drawing the whole grid terminates.
  CHECK(parse_spec(with_sampling("{sobol: 1944}"), "q.yaml").configs.size() == 1944);
}

TEST_CASE("adaptive sampling: the grid is the candidates, initial is a Sobol subset of it") {
  const auto a = parse_spec(with_sampling("{adaptive: 100, initial: 20, seed: 3}"), "a.yaml");
  CHECK(a.sampling.kind == Sampling::Kind::adaptive);
  CHECK(a.sampling.count == 100);
  CHECK(a.sampling.initial == 20);
  CHECK(a.sampling.seed == 3);
  CHECK(a.configs.size() == parse_spec(kParaDnnFc, "g.yaml").configs.size());
  REQUIRE(a.initial.size() == 20);
  const auto sobol = parse_spec(with_sampling("{sobol: 20, seed: 3}"), "q.yaml");
  for (std::size_t i = 0; i < 20; ++i)
    CHECK(a.initial[i].config_id() == sobol.configs[i].config_id());
  // initial defaults to a fifth of the budget, at least 8.
  CHECK(parse_spec(with_sampling("{adaptive: 100}"), "a.yaml").sampling.initial == 20);
  CHECK(parse_spec(with_sampling("{adaptive: 30}"), "a.yaml").sampling.initial == 8);
  CHECK(parse_spec(with_sampling("{adaptive: 5}"), "a.yaml").sampling.initial == 5);
  // cost_aware: off unless asked for.
  CHECK_FALSE(parse_spec(with_sampling("{adaptive: 5}"), "a.yaml").sampling.cost_aware);
  CHECK(parse_spec(with_sampling("{adaptive: 5, cost_aware: true}"), "a.yaml").sampling.cost_aware);
  CHECK_FALSE(
      parse_spec(with_sampling("{adaptive: 5, cost_aware: false}"), "a.yaml").sampling.cost_aware);
}

TEST_CASE("sampling splits N across families proportionally to their grid sizes") {
  CHECK(split_proportionally(10, {30, 10}) == std::vector<std::uint64_t>{8, 2});  // 7.5 + 2.5
  CHECK(split_proportionally(3, {1, 1, 1}) == std::vector<std::uint64_t>{1, 1, 1});
  CHECK(split_proportionally(2, {1, 1, 1}) == std::vector<std::uint64_t>{1, 1, 0});
  CHECK(split_proportionally(4, {1, 100}) == std::vector<std::uint64_t>{0, 4});
  const auto s = parse_spec(R"(name: two
families:
  fc:
    layers: {range: [1, 30, 1]}
    nodes: 8
    input: 8
    output: 8
    batch: 8
  rnn:
    cell: [rnn, lstm, gru]
    layers: {range: [1, 10, 1]}
    embedding: 8
    length: 8
    vocab: 8
    batch: 8
sampling: {sobol: 20, seed: 3}
)",
                            "two.yaml");
  REQUIRE(s.configs.size() == 20);
  const auto fc = std::count_if(s.configs.begin(), s.configs.end(),
                                [](const Config& c) { return c.family == Family::fc; });
  CHECK(fc == 10);  // 30 of 60 grid points are FC
}

TEST_CASE("malformed specs give one exact line: FILE:LINE:COL: key: message") {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"# only a comment\n",
       "bad.yaml:1:1: the spec is empty (expected one of: name, families, knobs, sampling, "
       "measure, limits)"},
      {"- a\n- b\n",
       "bad.yaml:1:1: expected a map at the top level (one of: name, families, knobs, sampling, "
       "measure, limits), got a list"},
      {"name: x\nfamilies: [1, 2\nknobs: {}\n",
       "bad.yaml:3:6: YAML syntax error: end of sequence flow not found"},
      {kTinyFc.substr(8), "bad.yaml:1:1: name: required key is missing"},
      {"name: \"\"\n" + kTinyFc.substr(8),
       "bad.yaml:1:7: name: expected a non-empty string, got the string \"\""},
      {"name: x\nname: y\n" + kTinyFc.substr(8), "bad.yaml:2:1: name: duplicate key"},
      {kTinyFc + "sweep: 1\n",
       "bad.yaml:9:1: sweep: unknown key (expected one of: name, families, knobs, sampling, "
       "measure, limits)"},
      {"name: x\n", "bad.yaml:1:1: families: required key is missing"},
      {"name: x\nfamilies: {}\n",
       "bad.yaml:2:11: families: at least one family is required (one of: fc, cnn, rnn)"},
      {"name: x\nfamilies: [fc]\n",
       "bad.yaml:2:11: families: expected a map of model families (one of: fc, cnn, rnn), got a "
       "list"},
      {"name: x\nfamilies:\n  mlp:\n    layers: 1\n",
       "bad.yaml:3:3: families.mlp: unknown family (expected one of: fc, cnn, rnn)"},
      {"name: x\nfamilies:\n  fc:\n",
       "bad.yaml:3:3: families.fc: expected a map of parameters, got nothing"},
      {"name: x\nfamilies:\n  fc:\n    layers: 4\n    nodes: 32\n    input: 10\n    output: 10\n",
       "bad.yaml:4:5: families.fc.batch: required key is missing"},
      {kTinyFc + "    width: 3\n",
       "bad.yaml:9:5: families.fc.width: unknown parameter (expected one of: layers, nodes, "
       "input, output, batch)"},
      {fc_with_layers("{log2: [128, 4]}"),
       "bad.yaml:4:13: families.fc.layers: log2 range [128, 4] is inverted (lo > hi)"},
      {fc_with_layers("{log2: [4, 100]}"),
       "bad.yaml:4:24: families.fc.layers: log2 bound 100 is not a power of two"},
      {fc_with_layers("{log2: [4, 8, 16]}"),
       "bad.yaml:4:20: families.fc.layers: log2 expects [lo, hi], got a list of 3"},
      {fc_with_layers("{range: [1, 8, 0]}"),
       "bad.yaml:4:28: families.fc.layers: range step must be positive, got 0"},
      {fc_with_layers("{range: [8, 1, 1]}"),
       "bad.yaml:4:13: families.fc.layers: range [8, 1, 1] is inverted (lo > hi)"},
      {fc_with_layers("{range: [1, 8]}"),
       "bad.yaml:4:21: families.fc.layers: range expects [lo, hi, step], got a list of 2"},
      {fc_with_layers("{range: [1, 100000000, 1]}"),
       "bad.yaml:4:13: families.fc.layers: range yields 100000000 values, more than the limit of "
       "1048576"},
      {fc_with_layers("{lin: [1, 8]}"),
       "bad.yaml:4:14: families.fc.layers: unknown value form 'lin' (expected log2 or range)"},
      {fc_with_layers("{log2: [1, 8], range: [1, 2, 1]}"),
       "bad.yaml:4:13: families.fc.layers: a value map holds exactly one key: log2 or range"},
      {fc_with_layers("[]"), "bad.yaml:4:13: families.fc.layers: empty list"},
      {fc_with_layers("[4, 0]"),
       "bad.yaml:4:17: families.fc.layers: expected a positive integer, got '0'"},
      {fc_with_layers("-4"),
       "bad.yaml:4:13: families.fc.layers: expected a positive integer, got '-4'"},
      {fc_with_layers("ten"),
       "bad.yaml:4:13: families.fc.layers: expected a positive integer, got 'ten'"},
      {fc_with_layers("1.5"),
       "bad.yaml:4:13: families.fc.layers: expected a positive integer, got '1.5'"},
      {fc_with_layers("\"4\""),
       "bad.yaml:4:13: families.fc.layers: expected a positive integer, got the string \"4\""},
      {fc_with_layers("99999999999999999999"),
       "bad.yaml:4:13: families.fc.layers: expected a positive integer, got "
       "'99999999999999999999' (out of range)"},
      {fc_with_layers(""),
       "bad.yaml:4:5: families.fc.layers: expected a positive integer, a list, {log2: [lo, hi]} "
       "or {range: [lo, hi, step]}, got nothing"},
      {"name: x\nfamilies:\n  rnn:\n    cell: [lstm, transformer]\n    layers: 1\n"
       "    embedding: 8\n    length: 4\n    vocab: 16\n    batch: 8\n",
       "bad.yaml:4:18: families.rnn.cell: unknown value 'transformer' (expected one of: rnn, "
       "lstm, gru)"},
      {"name: x\nfamilies:\n  cnn:\n    block_fn: {a: 1}\n    filters: 16\n    blocks: 1\n"
       "    image: 32\n    output: 10\n    batch: 8\n",
       "bad.yaml:4:15: families.cnn.block_fn: expected a name or a list of names (one of: "
       "residual, bottleneck), got a map"},
      {kTinyFc + "knobs:\n  mode: [training, train]\n",
       "bad.yaml:10:20: knobs.mode: unknown value 'train' (expected one of: training, "
       "inference)"},
      {kTinyFc + "knobs:\n  precision: [f32]\n",
       "bad.yaml:10:3: knobs.precision: unknown knob (expected one of: mode, dtype, threads, "
       "algorithm, isa_cap)"},
      {kTinyFc + "knobs:\n  threads: [0, -1]\n",
       "bad.yaml:10:16: knobs.threads: expected a non-negative integer, got '-1'"},
      {kTinyFc + "knobs:\n  isa_cap: avx3\n",
       "bad.yaml:10:12: knobs.isa_cap: unknown value 'avx3' (expected one of: none, sse41, avx, "
       "avx2, avx512_core, avx512_core_vnni, avx512_core_bf16, avx512_core_amx)"},
      {kTinyFc + "knobs:\n", "bad.yaml:9:1: knobs: expected a map, got nothing"},
      {kTinyFc + "sampling: lhs\n",
       "bad.yaml:9:11: sampling: expected grid, {random: N, seed: S}, {sobol: N, seed: S} or "
       "{adaptive: N, initial: M, seed: S, cost_aware: false}, got 'lhs'"},
      {kTinyFc + "sampling: {random: 1, sobol: 1}\n",
       "bad.yaml:9:23: sampling: give exactly one of random, sobol or adaptive"},
      {kTinyFc + "sampling: {random: 1, adaptive: 1}\n",
       "bad.yaml:9:23: sampling: give exactly one of random, sobol or adaptive"},
      {kTinyFc + "sampling: {random: 1, initial: 1}\n",
       "bad.yaml:9:23: sampling.initial: only adaptive sampling takes initial"},
      {kTinyFc + "sampling: {adaptive: 0}\n",
       "bad.yaml:9:22: sampling.adaptive: expected a positive number of configs, got '0'"},
      {kTinyFc + "sampling: {adaptive: 2}\n",
       "bad.yaml:9:22: sampling.adaptive: 2 configs requested, but the grid holds only 1"},
      {kTinyFc + "sampling: {adaptive: 1, initial: many}\n",
       "bad.yaml:9:34: sampling.initial: expected a positive number of configs, got 'many'"},
      {kTinyFc + "sampling: {adaptive: 1, initial: 2}\n",
       "bad.yaml:9:34: sampling.initial: must be at most adaptive (1), got 2"},
      {kTinyFc + "sampling: {adaptive: 1, seed: 99999999999}\n",
       "bad.yaml:9:31: sampling.seed: a Sobol seed (points skipped) must be at most 4294967295, "
       "got 99999999999"},
      {kTinyFc + "sampling: {random: 1, cost_aware: true}\n",
       "bad.yaml:9:23: sampling.cost_aware: only adaptive sampling takes cost_aware"},
      {kTinyFc + "sampling: {adaptive: 1, cost_aware: yes}\n",
       "bad.yaml:9:37: sampling.cost_aware: expected true or false, got 'yes'"},
      {kTinyFc + "sampling: {seed: 1}\n",
       "bad.yaml:9:11: sampling: give exactly one of random, sobol or adaptive"},
      {kTinyFc + "sampling: {random: 1, seeds: 1}\n",
       "bad.yaml:9:23: sampling.seeds: unknown key (expected one of: random, sobol, adaptive, "
       "initial, seed, cost_aware)"},
      {kTinyFc + "sampling: {random: 2, seed: 1}\n",
       "bad.yaml:9:20: sampling.random: 2 configs requested, but the grid holds only 1"},
      {kTinyFc + "sampling: {sobol: 0}\n",
       "bad.yaml:9:19: sampling.sobol: expected a positive number of configs, got '0'"},
      {kTinyFc + "sampling: {random: 1, seed: -1}\n",
       "bad.yaml:9:29: sampling.seed: expected a non-negative integer, got '-1'"},
      {kTinyFc + "sampling: {sobol: 1, seed: 99999999999}\n",
       "bad.yaml:9:28: sampling.seed: a Sobol seed (points skipped) must be at most 4294967295, "
       "got 99999999999"},
      {"name: x\nfamilies:\n  fc:\n    layers: 4\n    nodes: 64\n    input: 10\n    output: 10\n"
       "    batch: [1, 1099511627776, 1099511627777]\nsampling: {sobol: 3}\n",
       "bad.yaml:9:19: sampling.sobol: only 2 distinct configs found in the Sobol sequence (3 "
       "requested); some values are too close in log2 to be hit"},
      {"name: x\nfamilies:\n  fc:\n    layers: {range: [1, 1000, 1]}\n"
       "    nodes: {range: [1, 1001, 1]}\n    input: 10\n    output: 10\n    batch: 8\n",
       "bad.yaml:3:3: families: the grid holds 1001000 configs, more than the limit of 1000000; "
       "sample it with sampling: {random: N} or {sobol: N}"},
      {"name: x\nfamilies:\n  fc:\n    layers: {range: [1, 1000000, 1]}\n"
       "    nodes: {range: [1, 1000000, 1]}\n    input: {range: [1, 1000000, 1]}\n"
       "    output: {range: [1, 1000000, 1]}\n    batch: 8\nsampling: {random: 5}\n",
       "bad.yaml:3:3: families: the fc grid holds more than 4611686018427387904 configs"},
      {kTinyFc + "measure: {warmup_s: -1}\n",
       "bad.yaml:9:21: measure.warmup_s: must be >= 0, got -1"},
      {kTinyFc + "measure: {warmup_s: fast}\n",
       "bad.yaml:9:21: measure.warmup_s: expected a number, got 'fast'"},
      {kTinyFc + "measure: {min_reps: 0}\n",
       "bad.yaml:9:21: measure.min_reps: must be >= 1, got 0"},
      {kTinyFc + "measure: {min_reps: 2.5}\n",
       "bad.yaml:9:21: measure.min_reps: expected an integer, got '2.5'"},
      {kTinyFc + "measure: {min_reps: 10, max_reps: 5}\n",
       "bad.yaml:9:35: measure.max_reps: must be >= min_reps (10), got 5"},
      {kTinyFc + "measure: {min_reps: 500}\n",
       "bad.yaml:9:21: measure.min_reps: must be <= max_reps (200), got 500"},
      {kTinyFc + "measure: {target_ci: 1}\n",
       "bad.yaml:9:22: measure.target_ci: must be in (0, 1), got 1"},
      {kTinyFc + "measure: {max_time_s: 0}\n",
       "bad.yaml:9:23: measure.max_time_s: must be > 0, got 0"},
      {kTinyFc + "measure: {warmup: 1}\n",
       "bad.yaml:9:11: measure.warmup: unknown key (expected one of: warmup_s, min_reps, "
       "max_reps, target_ci, max_time_s)"},
      {kTinyFc + "limits: {memory_fraction: 1.5}\n",
       "bad.yaml:9:27: limits.memory_fraction: must be in (0, 1], got 1.5"},
      {kTinyFc + "limits: {timeout_s: 0}\n", "bad.yaml:9:21: limits.timeout_s: must be > 0, got 0"},
      {kTinyFc + "limits: {timeout_s: .nan}\n",
       "bad.yaml:9:21: limits.timeout_s: expected a number, got '.nan'"},
      {kTinyFc + "limits: {memory: 1}\n",
       "bad.yaml:9:10: limits.memory: unknown key (expected one of: memory_fraction, timeout_s)"},
      {kTinyFc + "limits: [1]\n", "bad.yaml:9:9: limits: expected a map, got a list"},
  };
  for (const auto& c : cases) {
    INFO(c.first);
    CHECK(error_of(c.first) == c.second);
  }
}

TEST_CASE("a missing spec file is a runtime_error naming the file") {
  try {
    (void)load_spec("/nonexistent/spec.yaml");
    FAIL("no error");
  } catch (const SpecError&) {
    FAIL("a missing file is not a spec error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) ==
          "cannot read spec /nonexistent/spec.yaml: No such file or directory");
  }
}

TEST_CASE("every example spec and every CLI test spec loads") {
  for (const char* sub : {"examples", "tests/app/specs"}) {
    const std::filesystem::path dir = std::filesystem::path(DNNSCAPE_SOURCE_DIR) / sub;
    if (!std::filesystem::is_directory(dir)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (entry.path().extension() != ".yaml") continue;
      INFO(entry.path().string());
      Spec s;
      CHECK_NOTHROW(s = load_spec(entry.path()));
      CHECK(!s.configs.empty());
      CHECK(s.path == entry.path());
    }
  }
}
