// Best-mode search (knobs.algorithm: best), after MNN's "semi-auto search" (docs/knobs.md,
// "algorithm: best"): per layer and pass, rank the candidate algorithms with the roofline cost
// model, measure the survivors on that layer in isolation, keep the fastest, and cache the decision
// in a file keyed by (layer shape, pass, dtype, threads, effective ISA, oneDNN version).
// oneDNN stays out of this header: the families build the candidates and hand over closures.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "worker/model.hpp"
#include "worker/peak.hpp"

namespace dnnscape::worker::best {

// oneDNN 2.6's Winograd is F(4x4, 3x3) (jit_wino_4x3): a 6x6 input tile gives a 4x4 output tile
// with 36 multiplies instead of 16 * 9 = 144, i.e. 2.25x fewer than direct convolution.
inline constexpr double kWinogradReduction = 144.0 / 64.0;
// A candidate whose predicted time is more than this factor above the best prediction is pruned.
inline constexpr double kPruneFactor = 2.0;
// Timed executions per surviving candidate (interleaved round-robin, after one warm-up each).
inline constexpr int kTimedRuns = 5;
// The default candidate wins unless another is faster by more than this (noise) margin.
inline constexpr double kTieMargin = 0.03;

// What identifies a decision. The canonical string (str()) is the cache key:
//   op=conv;shape=mb16,ic16,oc16,ih25,iw25,kh3,kw3,sh1,sw1,ph1,pw1;pass=forward_training;
//   dtype=f32;threads=2;isa=avx512_core_bf16;onednn=2.6.3
struct LayerKey {
  std::string op;                                           // conv | fc_first_layer
  std::vector<std::pair<std::string, std::int64_t>> shape;  // named dims, in a fixed order
  std::string pass;  // forward_training | forward_inference | backward_data | backward_weights |
                     // training | inference (fc: the whole first layer)
  std::string dtype;
  int threads = 0;
  std::string isa;     // effective ISA (sysinfo onednn_isa())
  std::string onednn;  // oneDNN version
  [[nodiscard]] std::string str() const;
};

// The key's context fields for this process: threads (omp_get_max_threads), effective ISA and
// oneDNN version.
LayerKey make_key(std::string op, std::vector<std::pair<std::string, std::int64_t>> shape,
                  std::string pass, std::string dtype);

struct Decision {
  std::string algorithm;                    // the winner
  std::map<std::string, double> measured;   // median seconds per measured candidate
  std::map<std::string, double> predicted;  // roofline seconds per candidate
};

// What the searches of this process did since the last reset_stats().
struct BestModeStats {
  int decisions = 0;     // layer passes decided (searched or from the cache)
  int cache_hits = 0;    // decisions taken from the cache
  int measurements = 0;  // candidates measured (a timed series on one layer pass)
  int executions = 0;    // primitive executions of those series, warm-up included
  int pruned = 0;        // candidates dropped by the cost model
  std::vector<std::pair<std::string, std::string>> choices;  // (key, algorithm) in build order
};
BestModeStats& stats();
void reset_stats();

// The cache file: $DNNSCAPE_BEST_CACHE, else $XDG_CACHE_HOME/dnnscape/best-mode.json, else
// ~/.cache/dnnscape/best-mode.json.
std::filesystem::path cache_path();

// Decisions by key, in memory and in the file. Not thread-safe (one model builds at a time).
class Cache {
 public:
  // Reads `path`; a missing file is an empty cache; a corrupt one is ignored (false, warning()).
  bool load(const std::filesystem::path& path);
  [[nodiscard]] std::optional<Decision> find(const std::string& key) const;
  void put(const std::string& key, const Decision& d);
  // Merges this process's new decisions into the file's current content and writes it atomically
  // (PATH.tmp.PID, then rename); concurrent writers: the last one wins per key. No-op when
  // nothing is new. Errors go to stderr (the cache is an optimisation, never fatal).
  void save();
  [[nodiscard]] const std::string& warning() const { return warning_; }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::size_t size() const { return entries_.size(); }

 private:
  std::filesystem::path path_;
  std::map<std::string, Decision> entries_;
  std::map<std::string, Decision> fresh_;  // added by this process, not yet saved
  std::string warning_;
};

// The process-wide cache, (re)loaded from cache_path() when that path changed or after forget().
Cache& cache();
// Drops the in-memory cache, so the next cache() reads the file as a new process would.
void forget_cache();

// The ceilings the cost model uses: set by the executor from its RunContext; otherwise the cached
// peaks of this host (worker/peak.hpp) if any; without ceilings nothing is pruned.
void set_peaks(const Peaks& peaks);
// Roofline time max(flops / peak(threads), bytes / bandwidth); 0 when no ceilings are known.
// peak(threads) = min(all-core peak, threads x one-core peak).
double roofline_s(double flops, double bytes, int threads);

struct Candidate {
  std::string algorithm;
  double predicted_s = 0;
  std::function<void()> run;  // one execution, blocking until done
};

// Candidates that survive the cost model: predicted <= kPruneFactor x the best prediction. The
// candidate named `keep` (the default) always survives.
std::vector<std::string> survivors(const std::map<std::string, double>& predicted,
                                   const std::string& keep);

// Measures the candidates interleaved (one warm-up each, then kTimedRuns rounds), returns the
// decision: the fastest median, except that `default_algorithm` wins ties within kTieMargin.
// Counts into stats().
Decision measure_and_choose(const std::vector<Candidate>& candidates,
                            const std::string& default_algorithm);

// Records a decision (cache put + stats).
void record(const LayerKey& key, const Decision& d, bool from_cache);

// The whole-model choice of fc and rnn among `names` (names.front() is the default, which wins
// ties): the cached decision for `key`, else a model of each candidate from `variant` (with its
// analytic counts for the roofline), measured by measure_and_choose, recorded and saved.
using Variant = std::pair<std::unique_ptr<Model>, ModelCounts>;
std::string choose_whole_model(const LayerKey& key, const std::vector<std::string>& names,
                               const std::function<Variant(const std::string&)>& variant);

// A model built with a chosen algorithm for the whole model (fc, rnn): its /ops impl strings and
// impl() carry the choice before oneDNN's kernel name ("best:matmul brg:avx512_core").
class ChosenModel final : public Model {
 public:
  ChosenModel(std::unique_ptr<Model> m, const std::string& choice)
      : m_(std::move(m)), prefix_("best:" + choice + " ") {}
  void step() override { m_->step(); }
  [[nodiscard]] const ModelCounts& counts() const override { return m_->counts(); }
  [[nodiscard]] double last_loss() const override { return m_->last_loss(); }
  std::vector<store::OpRecord> profile_step() override {
    auto ops = m_->profile_step();
    for (auto& o : ops) o.impl = prefix_ + o.impl;
    return ops;
  }
  [[nodiscard]] std::string impl() const override { return prefix_ + m_->impl(); }

 private:
  std::unique_ptr<Model> m_;
  std::string prefix_;
};

}  // namespace dnnscape::worker::best
