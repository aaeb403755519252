// The RNN family on oneDNN. Data flow of one training step (T steps, batch B, N = T * B rows):
//   embedding gather (oneTBB) -> one L-layer RNN primitive (forward_training, workspace)
//   -> inner_product (N x H) * (H x V) -> softmax in place -> loss + its gradient in place (oneTBB)
//   -> inner_product backward data / weights -> reorder of the cell weights to the backward layout
//   -> RNN backward (data and weights in one primitive) -> embedding scatter-add (oneTBB)
//   -> SGD updates (oneTBB) [-> bf16: reorders of the f32 masters into the bf16 weight copies].
// algorithm decomposed replaces the RNN primitives by matmuls and host element-wise loops per
// step (add_decomposed_forward / add_decomposed_backward); algorithm best measures both.
// Conventions (FLOPs, bytes, memory): docs/conventions-rnn.md.
#include "worker/rnn.hpp"

#include <omp.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "worker/best_mode.hpp"
#include "worker/dnnl_util.hpp"
#include "worker/families.hpp"

namespace dnnscape::worker {

namespace {

namespace du = dnnl_util;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
using Args = std::unordered_map<int, memory>;

constexpr double kF32 = 4;  // bytes per f32 element
constexpr double kId = 4;   // bytes per int32 token id
constexpr float kDefaultLearningRate = 0.1F;

// Layer indices of the op records: the whole cell stack is one primitive.
constexpr std::int64_t kLayerEmbedding = 0;
constexpr std::int64_t kLayerCells = 1;
constexpr std::int64_t kLayerDense = 2;
constexpr std::int64_t kLayerLoss = 3;

// The validated shape of one RNN config.
struct Dims {
  std::string cell;
  std::int64_t G = 1;  // gates
  std::int64_t L = 0, E = 0, H = 0, T = 0, V = 0, B = 0;
  bool training = true;
  // algorithm decomposed: matmul + host element-wise ops per step instead of the RNN primitives.
  bool decomposed = false;
  // dtype bf16 (fused only): bf16 activations and weight copies, f32 master weights, weight
  // gradients, activation gradients (oneDNN 2.6's RNN backward takes f32 diffs only), logits.
  bool bf16 = false;
  [[nodiscard]] double act_bytes() const { return bf16 ? 2.0 : 4.0; }
  [[nodiscard]] std::int64_t rows() const { return T * B; }
  [[nodiscard]] double cell_weights() const {  // weights_layer + weights_iter, all layers
    return static_cast<double>(L) * G * H * (E + H);
  }
  [[nodiscard]] double cell_bias() const { return static_cast<double>(L) * G * H; }
  [[nodiscard]] double dense_params() const { return static_cast<double>(H) * V + V; }
};

Dims dims_of(const space::Config& c) {
  if (c.family != space::Family::rnn) {
    throw std::invalid_argument("rnn: config is not of the rnn family");
  }
  if (c.knobs.dtype != "f32" && c.knobs.dtype != "bf16") {
    throw Unsupported(fmt::format("rnn: dtype {} is not f32 or bf16", c.knobs.dtype));
  }
  if (c.knobs.dtype == "bf16" && c.knobs.algorithm == "decomposed") {
    throw Unsupported(
        "rnn: algorithm decomposed is f32 only (its element-wise host loops are not built for "
        "bf16); algorithm fused has bf16");
  }
  // best is resolved by build_rnn_model (a measured choice); its counts are the default's.
  if (c.knobs.algorithm != "default" && c.knobs.algorithm != "fused" &&
      c.knobs.algorithm != "decomposed" && c.knobs.algorithm != "best") {
    throw Unsupported(fmt::format("rnn: unknown algorithm {} (default | fused | decomposed | best)",
                                  c.knobs.algorithm));
  }
  if (c.knobs.mode != "training" && c.knobs.mode != "inference") {
    throw Unsupported(fmt::format("rnn: unknown mode {}", c.knobs.mode));
  }
  Dims d;
  d.cell = c.cell;
  d.G = rnn_gates(c.cell);
  d.L = c.layers;
  d.E = c.embedding;
  d.H = c.embedding;
  d.T = c.length;
  d.V = c.vocab;
  d.B = c.batch;
  d.training = c.knobs.mode == "training";
  d.decomposed = c.knobs.algorithm == "decomposed";
  d.bf16 = c.knobs.dtype == "bf16";
  for (auto [name, v] :
       {std::pair{"layers", d.L}, std::pair{"embedding", d.E}, std::pair{"length", d.T},
        std::pair{"vocab", d.V}, std::pair{"batch", d.B}}) {
    if (v <= 0) throw Unsupported(fmt::format("rnn: {} must be positive, got {}", name, v));
  }
  if (d.rows() > std::numeric_limits<std::int32_t>::max() ||
      d.V > std::numeric_limits<std::int32_t>::max()) {
    throw Unsupported("rnn: length * batch and vocab must fit in int32 token positions");
  }
  return d;
}

// Expected number of distinct ids among N uniform draws from V (rows the embedding backward and
// its update touch).
double expected_distinct(double V, double N) {
  return V * -std::expm1(N * std::log1p(-1.0 / V));
}

// Leading dimension oneDNN's RNN gives its buffers (rnn_utils::get_good_ld): 64-byte multiples,
// never a multiple of 256 elements (4K aliasing).
double good_ld(std::int64_t dim) {
  std::int64_t ld = (dim + 15) / 16 * 16;
  if (ld % 256 == 0) ld += 16;
  return static_cast<double>(ld);
}

// Workspace of oneDNN 2.6's ref_rnn (forward_training; the backward reads it): gates and h of
// every cell, plus h/c states and diff states of every layer boundary and step (5 state-sized
// buffers for rnn and gru, 7 for lstm). Fitted to the sizes oneDNN 2.6.3 reports, within a few
// percent (page rounding); see docs/conventions-rnn.md.
double workspace_bytes_estimate(const Dims& d) {
  const double cells = static_cast<double>(d.L) * d.T * d.B;
  const double states = static_cast<double>(d.L + 1) * (d.T + 1) * d.B * good_ld(d.H);
  // bf16: 0.70-0.72 of the f32 size in the sizes oneDNN 2.6.3 reports (bf16 states, f32 gates).
  return (d.bf16 ? 0.72 : 1.0) * kF32 *
         (cells * good_ld(d.G * d.H) + cells * good_ld(d.H) + (d.cell == "lstm" ? 7 : 5) * states);
}

// The largest scratchpad of the primitives (one buffer is shared): the RNN's per-step gates and
// GEMM buffers, and for inference also the states that training keeps in the workspace.
double scratchpad_bytes_estimate(const Dims& d) {
  const double tail = 10.0 * d.B * good_ld(d.H) + 8192;
  const double gates = static_cast<double>(d.T) * d.B * good_ld(d.G * d.H);
  // bf16 (oneDNN 2.6.3, coarse): training scratchpads of 0.2-2 MB where f32 has 2-40 MB;
  // inference about 2/3 of f32's.
  if (d.training) return d.bf16 ? 2 * gates : kF32 * (5 * gates + tail);
  const double states = static_cast<double>(d.L + 1) * (d.T + 1) * d.B * good_ld(d.H);
  return (d.bf16 ? 2.0 / 3.0 : 1.0) * kF32 * ((d.cell == "lstm" ? 3 : 2) * states + gates + tail);
}

struct OpCost {
  std::int64_t layer = -1;
  std::string op;
  std::string phase;
  double flops = 0;
  double bytes = 0;
};

// algorithm decomposed, per layer l of the stack (input I = E = H, GH = G * H gate columns):
//   forward   gates = X W + b for all T steps in one matmul (the input projection), then per step
//             gates_t += h_{t-1} U (matmul; GRU: the u, r columns, then (r h_{t-1}) U_o for o)
//             and the gate nonlinearities and cell update on the host (eltwise);
//   backward  per step (t = T-1 .. 0) the gate gradients on the host (eltwise) and
//             d h_{t-1} += dG_t U^T (matmul); then per layer dX = dG W^T, dW = X^T dG,
//             dU = H_prev^T dG (GRU: (r h)^T dG_o for the o columns), db = 1^T dG (matmuls).
// Each entry is one /ops row: the sum over layers and steps of the primitives of that kind.
// Bytes are the operands of each executed primitive (the sum post-op reads its destination).
// Returns the forward rows, then (training) the backward rows.
std::pair<std::vector<OpCost>, std::vector<OpCost>> decomposed_costs(const Dims& d) {
  const double N = static_cast<double>(d.rows()), B = static_cast<double>(d.B);
  const double T = static_cast<double>(d.T), L = static_cast<double>(d.L);
  const double I = static_cast<double>(d.E), H = static_cast<double>(d.H);
  const double GH = static_cast<double>(d.G) * H;
  const bool gru = d.cell == "gru";
  const double gemm = 2.0 * N * H * GH * L;  // every T x B x H by H x GH product of the stack
  const double recurrent_step = (gru ? 2 : 1) * B * H + H * GH + 2 * B * GH;
  const double eltwise_step = (d.cell == "rnn" ? 2 : 11) * B * H;
  std::vector<OpCost> forward = {
      {kLayerCells, "matmul", "forward", 2.0 * N * I * GH * L,
       kF32 * L * (N * I + I * GH + GH + N * GH)},
      {kLayerCells, "matmul", "forward", gemm, kF32 * L * T * recurrent_step},
      {kLayerCells, "eltwise", "forward", 0, kF32 * L * T * eltwise_step},
  };
  // Per step: the gate gradients read the step's gradient and saved activations and write dG_t;
  // the GRU's host part also adds its direct terms to d h_{t-1} (assigned at t = 0, which
  // targets the unused initial-state gradient). Totals over the T steps of a layer:
  const double eltwise = d.cell == "rnn"    ? T * 3 * B * H
                         : d.cell == "lstm" ? T * 13 * B * H
                                            : T * 12 * B * H + (2 * T - 1) * B * H;
  // d h_{t-1} += dG_t U^T: the destination is read except at t = 0 (rnn, lstm); the GRU's
  // d(r h) = dG_o U_o^T, then d h_{t-1} += dG_ur U_ur^T.
  const double recurrent =
      gru ? T * (6 * B * H + H * GH) : T * (B * GH + GH * H) + (2 * T - 1) * B * H;
  const double weights =
      (N * I + N * GH + I * GH) + ((gru ? 2 : 1) * N * H + N * GH + H * GH) + (N + N * GH + GH);
  std::vector<OpCost> backward = {
      {kLayerCells, "eltwise", "backward_data", 0, kF32 * L * eltwise},
      {kLayerCells, "matmul", "backward_data", gemm, kF32 * L * recurrent},
      {kLayerCells, "matmul", "backward_data", 2.0 * N * I * GH * L,
       kF32 * L * (N * GH + GH * I + N * I)},
      // dW and dU count as GEMMs; db (a ones-vector product) is a bias add: 0 FLOPs here.
      {kLayerCells, "matmul", "backward_weights", 2.0 * N * I * GH * L + gemm, kF32 * L * weights},
  };
  return {std::move(forward), std::move(backward)};
}

// The ops of one step in execution order with their analytic FLOPs and compulsory bytes. The model
// executes exactly these ops; rnn_counts() sums them.
std::vector<OpCost> op_costs(const Dims& d) {
  const double N = static_cast<double>(d.rows());
  const double E = static_cast<double>(d.E), H = static_cast<double>(d.H);
  const double V = static_cast<double>(d.V);
  const double Pw = d.cell_weights(), Pb = d.cell_bias(), Pd = d.dense_params();
  const double ws = d.training ? workspace_bytes_estimate(d) : 0;
  const double cell_flops = 2.0 * N * d.G * H * (E + H) * static_cast<double>(d.L);
  const double dense_flops = 2.0 * N * Pd;
  const double U = expected_distinct(V, N);
  // Initial states (zeros, h and for LSTM c) read by both passes, their diffs written by backward.
  const double S = static_cast<double>(d.L) * d.B * H * (d.cell == "lstm" ? 2 : 1);
  // Element sizes: a for activations and the weights the primitives read (bf16: 2), f = 4 for
  // master weights, gradients, biases, the LSTM's c state, logits and probabilities.
  const double a = d.act_bytes(), f = kF32;
  const double Sh = static_cast<double>(d.L) * d.B * H, Sc = S - Sh;  // h and c initial states
  const std::string fwd = "forward";
  std::vector<OpCost> ops;
  ops.push_back({kLayerEmbedding, "embedding", fwd, 0, kId * N + (f + a) * N * E});
  if (d.decomposed) {
    for (auto& op : decomposed_costs(d).first) ops.push_back(std::move(op));
  } else {
    ops.push_back(
        {kLayerCells, d.cell, fwd, cell_flops, a * (N * E + Sh + Pw + N * H) + f * (Sc + Pb) + ws});
  }
  ops.push_back(
      {kLayerDense, "inner_product", fwd, dense_flops, a * (N * H + H * V) + f * (V + N * V)});
  ops.push_back({kLayerLoss, "softmax", fwd, 0, f * 2 * N * V});
  if (!d.training) return ops;
  // Reads the probabilities, writes the logits' gradient (in place in f32, a bf16 copy in bf16).
  ops.push_back({kLayerLoss, "loss", fwd, 0, kId * N + (f + a) * N * V});
  ops.push_back({kLayerDense, "inner_product", "backward_data", dense_flops,
                 a * (N * V + H * V) + f * N * H});
  ops.push_back({kLayerDense, "inner_product", "backward_weights", dense_flops,
                 a * (N * H + N * V) + f * Pd});
  if (d.decomposed) {
    for (auto& op : decomposed_costs(d).second) ops.push_back(std::move(op));
  } else {
    ops.push_back({kLayerCells, "reorder", "backward_data", 0, a * 2 * Pw});
    // One primitive computes diff data and diff weights; diff weights are accumulated
    // (read + write). Diffs are f32 (oneDNN 2.6), inputs at their own size.
    ops.push_back({kLayerCells, d.cell, "backward_data", 2 * cell_flops,
                   a * (N * E + Sh + Pw + N * H) + f * (Sc + Pb) +
                       f * (N * E + S + N * H + 2 * (Pw + Pb)) + ws});
  }
  ops.push_back(
      {kLayerEmbedding, "embedding", "backward_weights", 0, kId * N + kF32 * (N * E + U * E)});
  ops.push_back({kLayerEmbedding, "update", "update", 0, kF32 * 3 * U * E});
  // The fused primitive accumulates into its diff weights, so their update also zeroes them
  // (4 passes); the decomposed matmuls overwrite theirs (3 passes).
  ops.push_back({kLayerCells, "update", "update", 0, kF32 * (d.decomposed ? 3 : 4) * (Pw + Pb)});
  ops.push_back({kLayerDense, "update", "update", 0, kF32 * 3 * Pd});
  if (d.bf16) {  // mixed precision: the updated f32 masters rounded into the bf16 copies
    ops.push_back({kLayerCells, "reorder", "update", 0, (f + a) * Pw});
    ops.push_back({kLayerDense, "reorder", "update", 0, (f + a) * H * V});
  }
  return ops;
}

// algorithm decomposed: the tensors the builder allocates (docs/conventions-rnn.md, "Memory").
// Training keeps every layer's states and activated gates for the backward pass (the analogue of
// the fused workspace); inference keeps the states of every layer and one layer's gates.
// Matmul scratchpads are small next to these and not predicted.
double decomposed_memory_bytes_estimate(const Dims& d) {
  const double N = static_cast<double>(d.rows()), B = static_cast<double>(d.B);
  const double E = static_cast<double>(d.E), H = static_cast<double>(d.H);
  const double V = static_cast<double>(d.V), L = static_cast<double>(d.L);
  const double T = static_cast<double>(d.T), GH = static_cast<double>(d.G) * H;
  const double Pw = d.cell_weights(), Pb = d.cell_bias(), Pd = d.dense_params();
  const double kept = d.training ? L : 1;  // layers whose gates (c, r h) are kept
  double floats = V * E + N * E + L * (T + 1) * B * H + kept * N * GH + Pw + Pb + Pd + N * V;
  if (d.cell == "lstm") floats += kept * (T + 1) * B * H;
  if (d.cell == "gru") floats += kept * N * H;
  double ids = 2 * N;
  if (d.training) {
    floats += V * E + Pw + Pb + Pd + 2 * N * H + N * E + N * GH + B * H + N;
    if (d.cell != "rnn") floats += B * H;  // d c carry (lstm) or d (r h) (gru)
    ids += 2 * N + 2 * expected_distinct(V, N) + 1;
  }
  return kF32 * floats + kId * ids;
}

double memory_bytes_estimate(const Dims& d) {
  if (d.decomposed) return decomposed_memory_bytes_estimate(d);
  const double N = static_cast<double>(d.rows());
  const double E = static_cast<double>(d.E), H = static_cast<double>(d.H);
  const double V = static_cast<double>(d.V);
  const double Pw = d.cell_weights(), Pb = d.cell_bias(), Pd = d.dense_params();
  // Forward: table, ids, embedded input, cell weights, hidden output, dense weights, logits.
  const double state = static_cast<double>(d.L) * d.B * H;
  const double n_states = d.cell == "lstm" ? 2 : 1;
  // Element sizes as in op_costs(): a (bf16: 2) for activations and the weights primitives read.
  const double a = d.act_bytes(), f = kF32;
  // f32 shares one zero state for h and c; bf16 needs a bf16 h and an f32 c.
  double bytes = f * (V * E + Pb + V + N * V) + a * (N * E + state + Pw + N * H + H * V);
  if (d.bf16 && d.cell == "lstm") bytes += f * state;
  double ids = 2 * N;  // tokens, targets
  if (d.training) {
    // Gradients of every weight, the cells' backward-layout weights, diff of the hidden output
    // and of the embedded input, diff states; the embedding index; bf16: the f32 masters of the
    // cell and dense weights and the bf16 logits gradient.
    bytes += f * (V * E + Pw + Pb + Pd + N * H + N * E + n_states * state) + a * Pw;
    if (d.bf16) bytes += f * (Pw + H * V) + a * N * V;
    ids += 2 * N + 2 * expected_distinct(V, N) + 1;  // positions, rows, row starts (int64)
  }
  return bytes + kId * ids + (d.training ? workspace_bytes_estimate(d) : 0) +
         scratchpad_bytes_estimate(d);
}

// --- host helpers -------------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from (seed, stream, index): counter-based, so a parallel fill gives the same
// values whatever the partition.
double uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  const std::uint64_t h = splitmix64(seed ^ splitmix64(stream * 0x100000001B3ULL + i));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

void fill_uniform(std::span<float> out, float lo, float hi, std::uint64_t seed,
                  std::uint64_t stream) {
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, out.size(), 1 << 14), [&](const auto& r) {
    for (std::size_t i = r.begin(); i != r.end(); ++i) {
      out[i] = lo + (hi - lo) * static_cast<float>(uniform01(seed, stream, i));
    }
  });
}

float* f32(const memory& m) {
  return static_cast<float*>(m.get_data_handle());
}
std::size_t elements(const memory& m) {
  return m.get_desc().get_size() / sizeof(float);
}
std::span<float> span_of(const memory& m) {
  return {f32(m), elements(m)};
}

// w -= lr * g elementwise (both in the same layout, padding included); optionally g = 0, for
// gradients that oneDNN accumulates into.
void sgd(std::span<float> w, std::span<float> g, float lr, bool zero_grad) {
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, w.size(), 1 << 14), [&](const auto& r) {
    float* __restrict wp = w.data();
    float* __restrict gp = g.data();
    for (std::size_t i = r.begin(); i != r.end(); ++i) wp[i] -= lr * gp[i];
    if (zero_grad) std::fill(gp + r.begin(), gp + r.end(), 0.0F);
  });
}

std::string impl_of(const dnnl::primitive_desc_base& pd) {
  return pd.impl_info_str();
}

// --- the model ----------------------------------------------------------------------------------

struct DecomposedPds;  // the matmuls of algorithm decomposed (below)

class RnnModelImpl final : public RnnModel {
 public:
  RnnModelImpl(const space::Config& config, std::uint64_t seed);

  void step() override {
    arena_.execute([&] {
      for (auto& op : ops_) op.run();
    });
    stream_.wait();
  }
  [[nodiscard]] const ModelCounts& counts() const override { return counts_; }
  [[nodiscard]] double last_loss() const override { return loss_; }
  std::vector<store::OpRecord> profile_step() override;
  [[nodiscard]] std::string impl() const override { return impl_; }

  [[nodiscard]] RnnParams params() const override;
  void set_params(const RnnParams& p) override;
  [[nodiscard]] const std::vector<std::int32_t>& tokens() const override { return tokens_; }
  [[nodiscard]] const std::vector<std::int32_t>& targets() const override { return targets_; }
  [[nodiscard]] std::vector<float> hidden() const override {
    const auto n = static_cast<std::size_t>(d_.rows() * d_.H);
    if (d_.bf16) {
      const auto* h = static_cast<const std::uint16_t*>(dst_layer_.get_data_handle());
      std::vector<float> out(n);
      for (std::size_t i = 0; i < n; ++i) out[i] = du::from_bf16(h[i]);
      return out;
    }
    const float* h = f32(dst_layer_);
    return {h, h + n};
  }
  [[nodiscard]] float learning_rate() const override { return lr_; }
  void set_learning_rate(float lr) override { lr_ = lr; }

 private:
  // One executed primitive or host loop; `slot` is its /ops row (costs_), which several ops
  // share in the decomposed cells (one row per kind of op, summed over layers and steps).
  struct Op {
    std::size_t slot = 0;
    std::function<void()> run;
  };

  memory make(const memory::desc& md) {
    memory m(md, engine_);
    allocated_bytes_ += static_cast<double>(md.get_size());
    std::memset(m.get_data_handle(), 0, md.get_size());
    return m;
  }
  void add_op(std::size_t slot, const std::string& impl, std::function<void()> run) {
    if (slot >= costs_.size()) throw std::logic_error("rnn: ops and op_costs() disagree");
    std::string& s = slot_impl_[slot];
    if (s.empty()) {
      s = impl;
    } else if (s != impl && s.find(impl) == std::string::npos) {
      s += "," + impl;
    }
    ops_.push_back({slot, std::move(run)});
  }
  void add_primitive(std::size_t slot, const std::string& impl, const dnnl::primitive& p,
                     Args args) {
    if (scratchpad_bytes_ > 0) args.insert({DNNL_ARG_SCRATCHPAD, scratchpad_});
    add_op(slot, impl, [this, p, args = std::move(args)] { p.execute(stream_, args); });
  }
  // A view of `base` from float element `offset` on, with descriptor `md`.
  memory at(const memory& base, std::size_t offset, const memory::desc& md) const {
    return {md, engine_, f32(base) + offset};
  }
  void add_decomposed_forward(std::size_t slot, const DecomposedPds& dp);
  void add_decomposed_backward(std::size_t slot, const DecomposedPds& dp);
  void note_scratchpad(const dnnl::primitive_desc_base& pd) {
    scratchpad_bytes_ = std::max(scratchpad_bytes_, pd.scratchpad_desc().get_size());
  }
  // Copies between a primitive layout and a plain one (params/set_params for the tests).
  std::vector<float> read_plain(const memory& m, const memory::desc& plain) const;
  void write_plain(const std::vector<float>& v, const memory& m, const memory::desc& plain);
  // The cell and dense weights and biases of `p` into the masters, then their bf16 copies.
  void write_weights(const RnnParams& p);

  Dims d_;
  std::vector<OpCost> costs_;           // the /ops rows, op_costs(d_)
  std::vector<std::string> slot_impl_;  // their impl strings
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  mutable dnnl::stream stream_{engine_};
  tbb::task_arena arena_;
  float lr_ = kDefaultLearningRate;
  double loss_ = std::numeric_limits<double>::quiet_NaN();
  double allocated_bytes_ = 0;
  std::size_t scratchpad_bytes_ = 0;
  std::string impl_;
  ModelCounts counts_;

  std::vector<std::int32_t> tokens_, targets_;
  EmbeddingIndex index_;

  memory table_, table_grad_;
  memory src_layer_, dst_layer_, diff_dst_layer_, diff_src_layer_;
  // Zero initial states, given explicitly: with a zero src_iter descriptor oneDNN 2.6's backward
  // computes a wrong diff_weights_iter for the top layer of vanilla RNN and LSTM (checked by
  // tests/worker/test_rnn.cpp). diff_src_iter(_c) are written and not used.
  memory src_iter_, diff_src_iter_, diff_src_iter_c_;
  memory src_iter_c_;               // the LSTM's zero c state: src_iter_ (f32) or an f32 one
  memory w_layer_, w_iter_, bias_;  // forward layouts (updated in place)
  // f32 masters (SGD) of the weights: w_layer_, w_iter_, dense_w_ themselves, or (bf16
  // training) separate f32 tensors whose bf16 copies those are.
  memory master_layer_, master_iter_, dense_master_;
  memory dlogits_;                     // the logits gradient: logits_ itself (f32) or a bf16 tensor
  memory w_layer_bwd_, w_iter_bwd_;    // backward layouts, reordered every step
  memory dw_layer_, dw_iter_, dbias_;  // same layouts as w_layer_, w_iter_, bias_
  memory workspace_;
  memory dense_w_, dense_b_, dense_dw_, dense_db_;
  memory logits_;  // logits -> probabilities (softmax in place) -> d loss / d logits (in place)
  memory scratchpad_;
  // algorithm decomposed: per layer the states h_{-1} = 0, h_0 .. h_{T-1} ((T+1) x B x H; the
  // top layer's rows 1.. are dst_layer_), the activated gates (T x B x G x H), the LSTM's cell
  // states (like h) and the GRU's r * h_{t-1} (T x B x H); inference keeps one layer of the
  // last three. Backward: the gates' gradient dG (one layer), a second buffer for the gradient
  // of a layer's output (ping-pong with diff_dst_layer_), the unused gradient of the initial
  // state, the LSTM's d c carry or the GRU's d (r h), and the ones vector of db = 1^T dG.
  memory states_, gates_, cstates_, rh_;
  memory dgates_, diff_hidden_, diff_init_, diff_aux_, ones_;
  std::vector<Op> ops_;
};

// Memory descriptors of the cell stack: ldigo weights, ldgo bias, tnc activations.
// bf16: activations, the h state and weights bf16; the c state, bias, every diff f32.
struct CellDescs {
  memory::desc src_layer, dst_layer, state, state_c, w_layer_any, w_iter_any, bias_any,
      w_layer_plain, w_iter_plain, bias_plain, diff_src_layer, diff_dst_layer, diff_state;
};

CellDescs cell_descs(const Dims& d) {
  CellDescs c;
  const dt a = d.bf16 ? dt::bf16 : dt::f32;
  c.src_layer = memory::desc({d.T, d.B, d.E}, a, tag::tnc);
  c.dst_layer = memory::desc({d.T, d.B, d.H}, a, tag::tnc);
  c.state = memory::desc({d.L, 1, d.B, d.H}, a, tag::ldnc);
  c.state_c = memory::desc({d.L, 1, d.B, d.H}, dt::f32, tag::ldnc);
  c.diff_src_layer = memory::desc({d.T, d.B, d.E}, dt::f32, tag::tnc);
  c.diff_dst_layer = memory::desc({d.T, d.B, d.H}, dt::f32, tag::tnc);
  c.diff_state = c.state_c;
  c.w_layer_any = memory::desc({d.L, 1, d.E, d.G, d.H}, a, tag::any);
  c.w_iter_any = memory::desc({d.L, 1, d.H, d.G, d.H}, a, tag::any);
  c.bias_any = memory::desc({d.L, 1, d.G, d.H}, dt::f32, tag::any);
  c.w_layer_plain = memory::desc({d.L, 1, d.E, d.G, d.H}, dt::f32, tag::ldigo);
  c.w_iter_plain = memory::desc({d.L, 1, d.H, d.G, d.H}, dt::f32, tag::ldigo);
  c.bias_plain = memory::desc({d.L, 1, d.G, d.H}, dt::f32, tag::ldgo);
  return c;
}

// The three cells behind one interface: forward and backward primitive descriptors.
struct CellPds {
  dnnl::primitive fwd, bwd;
  memory::desc w_layer, w_iter, bias, w_layer_bwd, w_iter_bwd, bias_bwd, workspace;
  memory::desc dw_layer, dw_iter, dbias;  // f32: the forward layouts, bf16: oneDNN's choice
  std::string fwd_impl, bwd_impl;
  std::size_t fwd_scratch = 0, bwd_scratch = 0;
};

template <typename Fwd, typename Bwd>
void fill_pds(CellPds& out, const typename Fwd::primitive_desc& fpd,
              const typename Bwd::primitive_desc* bpd, bool bf16) {
  out.fwd = Fwd(fpd);
  out.w_layer = fpd.weights_layer_desc();
  out.w_iter = fpd.weights_iter_desc();
  out.bias = fpd.bias_desc();
  out.workspace = fpd.workspace_desc();
  out.fwd_impl = impl_of(fpd);
  out.fwd_scratch = fpd.scratchpad_desc().get_size();
  if (bpd != nullptr) {
    out.bwd = Bwd(*bpd);
    out.w_layer_bwd = bpd->weights_layer_desc();
    out.w_iter_bwd = bpd->weights_iter_desc();
    out.bias_bwd = bpd->bias_desc();
    out.bwd_impl = impl_of(*bpd);
    out.bwd_scratch = bpd->scratchpad_desc().get_size();
    out.dw_layer = bpd->diff_weights_layer_desc();
    out.dw_iter = bpd->diff_weights_iter_desc();
    out.dbias = bpd->diff_bias_desc();
    if (out.dbias != out.bias ||
        (!bf16 && (out.dw_layer != out.w_layer || out.dw_iter != out.w_iter))) {
      throw std::logic_error("rnn: diff weights layout differs from the weights layout");
    }
    if (bpd->workspace_desc() != out.workspace) {
      throw std::logic_error("rnn: backward workspace differs from the forward one");
    }
  }
}

CellPds make_cell_pds(const Dims& d, const dnnl::engine& eng, const dnnl::primitive_attr& attr) {
  const CellDescs c = cell_descs(d);
  const memory::desc none;
  const auto prop =
      d.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto dir = dnnl::rnn_direction::unidirectional_left2right;
  CellPds out;
  // Diff weights take the forward layouts so that SGD is elementwise (f32); bf16: f32 in the
  // layout oneDNN picks, which the f32 masters then take.
  const auto diff_weights = [&](const auto& fpd) {
    if (!d.bf16) return std::tuple{fpd.weights_layer_desc(), fpd.weights_iter_desc()};
    return std::tuple{memory::desc(c.w_layer_any.dims(), dt::f32, tag::any),
                      memory::desc(c.w_iter_any.dims(), dt::f32, tag::any)};
  };
  if (d.cell == "rnn") {
    using F = dnnl::vanilla_rnn_forward;
    using B = dnnl::vanilla_rnn_backward;
    const auto act = dnnl::algorithm::eltwise_tanh;
    F::primitive_desc fpd(F::desc(prop, act, dir, c.src_layer, c.state, c.w_layer_any, c.w_iter_any,
                                  c.bias_any, c.dst_layer, none),
                          attr, eng);
    if (!d.training) {
      fill_pds<F, B>(out, fpd, nullptr, d.bf16);
      return out;
    }
    const auto [dwl, dwi] = diff_weights(fpd);
    B::primitive_desc bpd(
        B::desc(dnnl::prop_kind::backward, act, dir, c.src_layer, c.state, c.w_layer_any,
                c.w_iter_any, c.bias_any, c.dst_layer, none, c.diff_src_layer, c.diff_state, dwl,
                dwi, fpd.bias_desc(), c.diff_dst_layer, none),
        attr, eng, fpd);
    fill_pds<F, B>(out, fpd, &bpd, d.bf16);
  } else if (d.cell == "lstm") {
    using F = dnnl::lstm_forward;
    using B = dnnl::lstm_backward;
    F::primitive_desc fpd(F::desc(prop, dir, c.src_layer, c.state, c.state_c, c.w_layer_any,
                                  c.w_iter_any, c.bias_any, c.dst_layer, none, none),
                          attr, eng);
    if (!d.training) {
      fill_pds<F, B>(out, fpd, nullptr, d.bf16);
      return out;
    }
    const auto [dwl, dwi] = diff_weights(fpd);
    B::primitive_desc bpd(
        B::desc(dnnl::prop_kind::backward, dir, c.src_layer, c.state, c.state_c, c.w_layer_any,
                c.w_iter_any, c.bias_any, c.dst_layer, none, none, c.diff_src_layer, c.diff_state,
                c.diff_state, dwl, dwi, fpd.bias_desc(), c.diff_dst_layer, none, none),
        attr, eng, fpd);
    fill_pds<F, B>(out, fpd, &bpd, d.bf16);
  } else {
    using F = dnnl::gru_forward;
    using B = dnnl::gru_backward;
    F::primitive_desc fpd(F::desc(prop, dir, c.src_layer, c.state, c.w_layer_any, c.w_iter_any,
                                  c.bias_any, c.dst_layer, none),
                          attr, eng);
    if (!d.training) {
      fill_pds<F, B>(out, fpd, nullptr, d.bf16);
      return out;
    }
    const auto [dwl, dwi] = diff_weights(fpd);
    B::primitive_desc bpd(
        B::desc(dnnl::prop_kind::backward, dir, c.src_layer, c.state, c.w_layer_any, c.w_iter_any,
                c.bias_any, c.dst_layer, none, c.diff_src_layer, c.diff_state, dwl, dwi,
                fpd.bias_desc(), c.diff_dst_layer, none),
        attr, eng, fpd);
    fill_pds<F, B>(out, fpd, &bpd, d.bf16);
  }
  return out;
}

// One matmul shape of the decomposed cells, shared by every layer and step (only the data
// pointers differ).
struct Matmul {
  dnnl::matmul prim;
  std::string impl;
  std::size_t scratch = 0;
};

// Row-major M x K view with leading dimension ld (>= K), or its transpose (K x M read column-wise).
memory::desc rows(std::int64_t m, std::int64_t k, std::int64_t ld) {
  return {{m, k}, dt::f32, memory::dims{ld, 1}};
}
memory::desc cols(std::int64_t m, std::int64_t k, std::int64_t ld) {  // transpose of rows(k, m, ld)
  return {{m, k}, dt::f32, memory::dims{1, ld}};
}

Matmul make_matmul(const dnnl::engine& eng, const memory::desc& src, const memory::desc& w,
                   const memory::desc& dst, bool accumulate, const memory::desc* bias = nullptr) {
  dnnl::post_ops po;
  if (accumulate) po.append_sum(1.0F);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(po);
  const dnnl::matmul::desc desc =
      bias != nullptr ? dnnl::matmul::desc(src, w, *bias, dst) : dnnl::matmul::desc(src, w, dst);
  const dnnl::matmul::primitive_desc pd(desc, attr, eng);
  return {dnnl::matmul(pd), impl_of(pd), pd.scratchpad_desc().get_size()};
}

// Every matmul shape the decomposed cells run (I = E = H; GH = G * H gate columns; ld GH for the
// gate columns of one GRU gate group). Names: forward / backward, what they compute.
struct DecomposedPds {
  Matmul projection;     // gates(N, GH) = X(N, I) W(I, GH) + b
  Matmul recurrent;      // gates_t(B, GH) += h(B, H) U(H, GH)       [gru: the u, r columns]
  Matmul recurrent_o;    // gru: gates_t(B, o) += (r h)(B, H) U_o(H, H)
  Matmul back_rec;       // d h_{t-1}(B, H) += dG_t U^T              [gru: u, r columns]
  Matmul back_rec_init;  // the same at t = 0, into the initial-state gradient (assigned)
  Matmul back_rh;        // gru: d(r h)(B, H) = dG_o U_o^T
  Matmul back_data;      // dX(N, I) = dG W^T
  Matmul back_w;         // dW(I, GH) = X^T dG  (rnn, lstm: also dU = H_prev^T dG)
  Matmul back_u_ur;      // gru: dU_ur(H, 2H) = H_prev^T dG_ur
  Matmul back_u_o;       // gru: dU_o(H, H) = (r h)^T dG_o
  Matmul back_bias;      // db(1, GH) = 1^T dG
  [[nodiscard]] std::size_t scratch() const {
    std::size_t s = 0;
    for (const Matmul* m : {&projection, &recurrent, &recurrent_o, &back_rec, &back_rec_init,
                            &back_rh, &back_data, &back_w, &back_u_ur, &back_u_o, &back_bias}) {
      s = std::max(s, m->scratch);
    }
    return s;
  }
};

DecomposedPds make_decomposed_pds(const Dims& d, const dnnl::engine& eng) {
  const std::int64_t N = d.rows(), B = d.B, I = d.E, H = d.H, GH = d.G * d.H;
  const bool gru = d.cell == "gru";
  const std::int64_t R = gru ? 2 * H : GH;  // gate columns of the first recurrent product
  DecomposedPds p;
  const memory::desc bias({1, GH}, dt::f32, tag::ab);
  p.projection = make_matmul(eng, rows(N, I, I), rows(I, GH, GH), rows(N, GH, GH), false, &bias);
  p.recurrent = make_matmul(eng, rows(B, H, H), rows(H, R, GH), rows(B, R, GH), true);
  if (gru) p.recurrent_o = make_matmul(eng, rows(B, H, H), rows(H, H, GH), rows(B, H, GH), true);
  if (!d.training) return p;
  p.back_rec = make_matmul(eng, rows(B, R, GH), cols(R, H, GH), rows(B, H, H), true);
  if (gru) {
    p.back_rh = make_matmul(eng, rows(B, H, GH), cols(H, H, GH), rows(B, H, H), false);
  } else {
    p.back_rec_init = make_matmul(eng, rows(B, GH, GH), cols(GH, H, GH), rows(B, H, H), false);
  }
  p.back_data = make_matmul(eng, rows(N, GH, GH), cols(GH, I, GH), rows(N, I, I), false);
  p.back_w = make_matmul(eng, cols(I, N, I), rows(N, GH, GH), rows(I, GH, GH), false);
  if (gru) {
    p.back_u_ur = make_matmul(eng, cols(H, N, H), rows(N, 2 * H, GH), rows(H, 2 * H, GH), false);
    p.back_u_o = make_matmul(eng, cols(H, N, H), rows(N, H, GH), rows(H, H, GH), false);
  }
  p.back_bias = make_matmul(eng, rows(1, N, N), rows(N, GH, GH), rows(1, GH, GH), false);
  return p;
}

float sigmoid(float x) {
  return 1.0F / (1.0F + std::exp(-x));
}

// Host loop over the B rows of one step, in chunks of about 4096 elements (smaller steps run in
// one task: the per-step element-wise work is small next to a task hand-off).
template <typename F>
void for_rows(std::int64_t B, std::int64_t H, F&& f) {
  const auto grain = static_cast<std::size_t>(std::max<std::int64_t>(1, 4096 / H));
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, static_cast<std::size_t>(B), grain),
                    [&](const auto& r) {
                      for (std::size_t b = r.begin(); b != r.end(); ++b) f(b);
                    });
}

RnnModelImpl::RnnModelImpl(const space::Config& config, std::uint64_t seed)
    : d_(dims_of(config)),
      costs_(op_costs(d_)),
      slot_impl_(costs_.size()),
      arena_(std::max(1, omp_get_max_threads())) {
  const std::int64_t N = d_.rows();
  const auto E = d_.E, H = d_.H, V = d_.V;

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  // Token ids and the embedding index (fixed for the model's life, like ParaDnn's random data).
  tokens_.resize(static_cast<std::size_t>(N));
  targets_.resize(static_cast<std::size_t>(N));
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    tokens_[i] = static_cast<std::int32_t>(uniform01(seed, 1, i) * static_cast<double>(V));
    targets_[i] = static_cast<std::int32_t>(uniform01(seed, 2, i) * static_cast<double>(V));
  }
  allocated_bytes_ += kId * 2 * static_cast<double>(N);

  // Cell stack: the RNN primitives, or the decomposed cells' matmuls.
  const CellDescs cd = cell_descs(d_);
  CellPds cp;
  DecomposedPds dp;
  if (d_.decomposed) {
    dp = make_decomposed_pds(d_, engine_);
    scratchpad_bytes_ = dp.scratch();
  } else {
    cp = make_cell_pds(d_, engine_, attr);
    scratchpad_bytes_ = std::max(cp.fwd_scratch, cp.bwd_scratch);
  }

  // Dense: inner product over N rows. Weights in the layout the forward prefers, if the backward
  // implementations take it without falling back to a reference kernel; otherwise plain oi.
  // bf16: bf16 src, weights and logits gradient, f32 logits, diff src, weight gradients.
  const dt adt = d_.bf16 ? dt::bf16 : dt::f32;
  const memory::desc ip_src({N, H}, adt, tag::nc);
  const memory::desc ip_diff_src_md({N, H}, dt::f32, tag::nc);
  const memory::desc ip_dst({N, V}, dt::f32, tag::nc);
  const memory::desc ip_diff_dst({N, V}, adt, tag::nc);
  const memory::desc ip_bias({V}, dt::f32, tag::x);
  const auto ip_prop =
      d_.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  dnnl::inner_product_forward::primitive_desc ip_fwd;
  dnnl::inner_product_backward_data::primitive_desc ip_bwd_data;
  dnnl::inner_product_backward_weights::primitive_desc ip_bwd_w;
  for (const tag wtag : {tag::any, tag::oi}) {
    const memory::desc w_md({V, H}, adt, wtag);
    ip_fwd = dnnl::inner_product_forward::primitive_desc(
        dnnl::inner_product_forward::desc(ip_prop, ip_src, w_md, ip_bias, ip_dst), attr, engine_);
    if (!d_.training) break;
    const memory::desc w = ip_fwd.weights_desc();
    const memory::desc dw = d_.bf16 ? memory::desc({V, H}, dt::f32, tag::any) : w;
    try {
      ip_bwd_data = dnnl::inner_product_backward_data::primitive_desc(
          dnnl::inner_product_backward_data::desc(ip_diff_src_md, w, ip_diff_dst), attr, engine_,
          ip_fwd);
      ip_bwd_w = dnnl::inner_product_backward_weights::primitive_desc(
          dnnl::inner_product_backward_weights::desc(ip_src, dw, ip_bias, ip_diff_dst), attr,
          engine_, ip_fwd);
    } catch (const dnnl::error&) {
      if (wtag == tag::oi) throw;
      continue;
    }
    const bool ref =
        impl_of(ip_bwd_data).rfind("ref", 0) == 0 || impl_of(ip_bwd_w).rfind("ref", 0) == 0;
    if (!ref || wtag == tag::oi) break;
  }
  note_scratchpad(ip_fwd);
  if (d_.training) {
    note_scratchpad(ip_bwd_data);
    note_scratchpad(ip_bwd_w);
  }
  const dnnl::softmax_forward::primitive_desc sm_pd(dnnl::softmax_forward::desc(ip_prop, ip_dst, 1),
                                                    attr, engine_);
  note_scratchpad(sm_pd);

  // Weight-layout reorders for the cell backward.
  dnnl::reorder::primitive_desc ro_layer, ro_iter;
  const bool reorder_weights =
      d_.training && !d_.decomposed && (cp.w_layer_bwd != cp.w_layer || cp.w_iter_bwd != cp.w_iter);
  if (d_.training && !d_.decomposed && cp.bias_bwd != cp.bias) {
    throw std::logic_error("rnn: backward bias layout differs from the forward one");
  }

  // Memories.
  table_ = make(memory::desc({V, E}, dt::f32, tag::ab));
  src_layer_ = make(cd.src_layer);
  if (d_.decomposed) {
    const auto flat = [](double n) {
      return memory::desc({static_cast<memory::dim>(n)}, dt::f32, tag::a);
    };
    const double L = static_cast<double>(d_.L), kept = d_.training ? L : 1;
    const double steps = static_cast<double>(N), states = static_cast<double>(N + d_.B);
    const double GH = static_cast<double>(d_.G * H);
    states_ = make(flat(L * states * H));
    gates_ = make(flat(kept * steps * GH));
    if (d_.cell == "lstm") cstates_ = make(flat(kept * states * H));
    if (d_.cell == "gru") rh_ = make(flat(kept * steps * H));
    dst_layer_ =
        at(states_, static_cast<std::size_t>((L - 1) * states * H + d_.B * H), cd.dst_layer);
    w_layer_ = make(cd.w_layer_plain);
    w_iter_ = make(cd.w_iter_plain);
    bias_ = make(cd.bias_plain);
  } else {
    dst_layer_ = make(cd.dst_layer);
    src_iter_ = make(cd.state);
    // f32: one zero state serves h and c; bf16: h is bf16, c f32.
    src_iter_c_ = d_.bf16 && d_.cell == "lstm" ? make(cd.state_c) : src_iter_;
    w_layer_ = make(cp.w_layer);
    w_iter_ = make(cp.w_iter);
    bias_ = make(cp.bias);
  }
  dense_w_ = make(ip_fwd.weights_desc());
  dense_b_ = make(ip_fwd.bias_desc());
  logits_ = make(ip_dst);
  // Mixed precision (bf16 training): f32 masters in the layout of their f32 gradients; the
  // primitives read bf16 copies (w_layer_, w_iter_, dense_w_), refreshed after each update.
  const bool copies = d_.bf16 && d_.training;
  master_layer_ = copies ? make(cp.dw_layer) : w_layer_;
  master_iter_ = copies ? make(cp.dw_iter) : w_iter_;
  dense_master_ = copies ? make(ip_bwd_w.diff_weights_desc()) : dense_w_;
  dlogits_ = copies ? make(ip_diff_dst) : logits_;
  if (d_.training) {
    table_grad_ = make(table_.get_desc());
    diff_dst_layer_ = make(cd.diff_dst_layer);
    diff_src_layer_ = make(cd.diff_src_layer);
    dw_layer_ = make(master_layer_.get_desc());
    dw_iter_ = make(master_iter_.get_desc());
    dbias_ = make(bias_.get_desc());
    if (d_.decomposed) {
      const auto flat = [](std::int64_t n) { return memory::desc({n}, dt::f32, tag::a); };
      dgates_ = make(flat(N * d_.G * H));
      diff_hidden_ = make(cd.dst_layer);
      diff_init_ = make(flat(d_.B * H));
      if (d_.cell != "rnn") diff_aux_ = make(flat(d_.B * H));
      ones_ = make(flat(N));
      std::fill_n(f32(ones_), N, 1.0F);
    } else {
      diff_src_iter_ = make(cd.diff_state);
      if (d_.cell == "lstm") diff_src_iter_c_ = make(cd.diff_state);
      workspace_ = make(cp.workspace);
    }
    dense_dw_ = make(dense_master_.get_desc());
    dense_db_ = make(ip_fwd.bias_desc());
    if (reorder_weights) {
      w_layer_bwd_ = make(cp.w_layer_bwd);
      w_iter_bwd_ = make(cp.w_iter_bwd);
      ro_layer = dnnl::reorder::primitive_desc(w_layer_, w_layer_bwd_);
      ro_iter = dnnl::reorder::primitive_desc(w_iter_, w_iter_bwd_);
    } else {
      w_layer_bwd_ = w_layer_;
      w_iter_bwd_ = w_iter_;
    }
    index_ = embedding_index(tokens_, V);
    allocated_bytes_ += kId * static_cast<double>(index_.rows.size() + index_.positions.size()) +
                        8.0 * static_cast<double>(index_.row_start.size());
  }
  scratchpad_ = make(memory::desc(
      {static_cast<memory::dim>(std::max<std::size_t>(scratchpad_bytes_, 1))}, dt::u8, tag::x));

  // Random weights: U(-1/sqrt(H), 1/sqrt(H)) as PyTorch initializes RNN and Linear layers; the
  // table U(-0.1, 0.1). Filled plain, then reordered into the primitives' layouts.
  const float k = 1.0F / std::sqrt(static_cast<float>(H));
  arena_.execute([&] {
    fill_uniform(span_of(table_), -0.1F, 0.1F, seed, 10);
    RnnParams p;
    p.weights_layer.resize(cd.w_layer_plain.get_size() / sizeof(float));
    p.weights_iter.resize(cd.w_iter_plain.get_size() / sizeof(float));
    p.bias.resize(cd.bias_plain.get_size() / sizeof(float));
    p.dense_weights.resize(static_cast<std::size_t>(V * H));
    p.dense_bias.resize(static_cast<std::size_t>(V));
    fill_uniform(p.weights_layer, -k, k, seed, 11);
    fill_uniform(p.weights_iter, -k, k, seed, 12);
    fill_uniform(p.bias, -k, k, seed, 13);
    fill_uniform(p.dense_weights, -k, k, seed, 14);
    fill_uniform(p.dense_bias, -k, k, seed, 15);
    write_weights(p);
  });

  // The step, op by op (order and costs as op_costs()).
  std::size_t ci = 0;
  const float* table = f32(table_);
  void* emb = src_layer_.get_data_handle();
  const bool bf16 = d_.bf16;
  add_op(ci++, "host:tbb", [this, table, emb, E, bf16] {
    const auto e = static_cast<std::size_t>(E);
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, tokens_.size(), 16), [&](const auto& r) {
      for (std::size_t i = r.begin(); i != r.end(); ++i) {
        const float* row = table + static_cast<std::size_t>(tokens_[i]) * e;
        if (bf16) {  // the f32 table rows rounded into the bf16 input (nearest even)
          auto* out = static_cast<std::uint16_t*>(emb) + i * e;
          for (std::size_t j = 0; j < e; ++j) out[j] = du::to_bf16(row[j]);
        } else {
          std::memcpy(static_cast<float*>(emb) + i * e, row, sizeof(float) * e);
        }
      }
    });
  });
  Args cell_fwd{{DNNL_ARG_SRC_LAYER, src_layer_}, {DNNL_ARG_WEIGHTS_LAYER, w_layer_},
                {DNNL_ARG_WEIGHTS_ITER, w_iter_}, {DNNL_ARG_BIAS, bias_},
                {DNNL_ARG_DST_LAYER, dst_layer_}, {DNNL_ARG_SRC_ITER, src_iter_}};
  if (d_.cell == "lstm") cell_fwd.insert({DNNL_ARG_SRC_ITER_C, src_iter_c_});
  if (d_.training) cell_fwd.insert({DNNL_ARG_WORKSPACE, workspace_});
  if (d_.decomposed) {
    add_decomposed_forward(ci, dp);
    ci += 3;
    impl_ = dp.projection.impl;
  } else {
    add_primitive(ci++, cp.fwd_impl, cp.fwd, cell_fwd);
    impl_ = cp.fwd_impl;
  }
  const memory ip_src_mem(ip_src, engine_, dst_layer_.get_data_handle());
  add_primitive(ci++, impl_of(ip_fwd), dnnl::inner_product_forward(ip_fwd),
                {{DNNL_ARG_SRC, ip_src_mem},
                 {DNNL_ARG_WEIGHTS, dense_w_},
                 {DNNL_ARG_BIAS, dense_b_},
                 {DNNL_ARG_DST, logits_}});
  add_primitive(ci++, impl_of(sm_pd), dnnl::softmax_forward(sm_pd),
                {{DNNL_ARG_SRC, logits_}, {DNNL_ARG_DST, logits_}});
  if (d_.training) {
    // Mean cross-entropy over the N positions; its gradient (p - onehot) / N written over p (f32)
    // or rounded into the bf16 dlogits_ (bf16).
    add_op(ci++, "host:tbb", [this, V, bf16] {
      float* p = f32(logits_);
      void* g = dlogits_.get_data_handle();
      const auto n = tokens_.size();
      const auto v = static_cast<std::size_t>(V);
      const float inv_n = 1.0F / static_cast<float>(n);
      loss_ = tbb::parallel_deterministic_reduce(
                  tbb::blocked_range<std::size_t>(0, n, 64), 0.0,
                  [&](const auto& r, double acc) {
                    for (std::size_t i = r.begin(); i != r.end(); ++i) {
                      float* row = p + i * v;
                      const auto t = static_cast<std::size_t>(targets_[i]);
                      acc -= std::log(std::max(row[t], 1e-30F));
                      void* out = bf16 ? static_cast<void*>(static_cast<std::uint16_t*>(g) + i * v)
                                       : static_cast<void*>(row);  // f32: in place
                      du::softmax_xent_grad_row(row, out, v, t, inv_n, bf16);
                    }
                    return acc;
                  },
                  std::plus<>()) /
              static_cast<double>(n);
    });
    const memory ip_diff_src(ip_diff_src_md, engine_, diff_dst_layer_.get_data_handle());
    add_primitive(ci++, impl_of(ip_bwd_data), dnnl::inner_product_backward_data(ip_bwd_data),
                  {{DNNL_ARG_DIFF_DST, dlogits_},
                   {DNNL_ARG_WEIGHTS, dense_w_},
                   {DNNL_ARG_DIFF_SRC, ip_diff_src}});
    add_primitive(ci++, impl_of(ip_bwd_w), dnnl::inner_product_backward_weights(ip_bwd_w),
                  {{DNNL_ARG_SRC, ip_src_mem},
                   {DNNL_ARG_DIFF_DST, dlogits_},
                   {DNNL_ARG_DIFF_WEIGHTS, dense_dw_},
                   {DNNL_ARG_DIFF_BIAS, dense_db_}});
    if (d_.decomposed) {
      add_decomposed_backward(ci, dp);
      ci += 4;
    } else {
      const std::size_t reorder_slot = ci++;
      if (reorder_weights) {
        const dnnl::reorder rl(ro_layer), ri(ro_iter);
        add_op(reorder_slot, impl_of(ro_layer), [this, rl, ri] {
          rl.execute(stream_, w_layer_, w_layer_bwd_);
          ri.execute(stream_, w_iter_, w_iter_bwd_);
        });
      }
      Args cell_bwd{{DNNL_ARG_SRC_LAYER, src_layer_},
                    {DNNL_ARG_WEIGHTS_LAYER, w_layer_bwd_},
                    {DNNL_ARG_WEIGHTS_ITER, w_iter_bwd_},
                    {DNNL_ARG_BIAS, bias_},
                    {DNNL_ARG_DST_LAYER, dst_layer_},
                    {DNNL_ARG_DIFF_DST_LAYER, diff_dst_layer_},
                    {DNNL_ARG_WORKSPACE, workspace_},
                    {DNNL_ARG_DIFF_SRC_LAYER, diff_src_layer_},
                    {DNNL_ARG_DIFF_WEIGHTS_LAYER, dw_layer_},
                    {DNNL_ARG_DIFF_WEIGHTS_ITER, dw_iter_},
                    {DNNL_ARG_DIFF_BIAS, dbias_},
                    {DNNL_ARG_SRC_ITER, src_iter_},
                    {DNNL_ARG_DIFF_SRC_ITER, diff_src_iter_}};
      if (d_.cell == "lstm") {
        cell_bwd.insert({DNNL_ARG_SRC_ITER_C, src_iter_c_});
        cell_bwd.insert({DNNL_ARG_DIFF_SRC_ITER_C, diff_src_iter_c_});
      }
      add_primitive(ci++, cp.bwd_impl, cp.bwd, cell_bwd);
    }
    add_op(ci++, "host:tbb", [this, E] {
      embedding_scatter_add(index_, span_of(diff_src_layer_), E, span_of(table_grad_));
    });
    add_op(ci++, "host:tbb", [this, E] {
      float* w = f32(table_);
      const float* g = f32(table_grad_);
      const float lr = lr_;
      tbb::parallel_for(
          tbb::blocked_range<std::size_t>(0, index_.rows.size(), 16), [&](const auto& r) {
            for (std::size_t u = r.begin(); u != r.end(); ++u) {
              const auto off =
                  static_cast<std::size_t>(index_.rows[u]) * static_cast<std::size_t>(E);
              for (std::int64_t j = 0; j < E; ++j) {
                w[off + j] -= lr * g[off + j];
              }
            }
          });
    });
    // oneDNN accumulates into the cells' diff weights: zero them as they are consumed. The
    // decomposed matmuls overwrite theirs.
    add_op(ci++, "host:tbb", [this, zero = !d_.decomposed] {
      sgd(span_of(master_layer_), span_of(dw_layer_), lr_, zero);
      sgd(span_of(master_iter_), span_of(dw_iter_), lr_, zero);
      sgd(span_of(bias_), span_of(dbias_), lr_, zero);
    });
    add_op(ci++, "host:tbb", [this] {
      sgd(span_of(dense_master_), span_of(dense_dw_), lr_, false);
      sgd(span_of(dense_b_), span_of(dense_db_), lr_, false);
    });
    if (copies) {
      // Mixed precision: the updated f32 masters rounded into the bf16 copies for the next step.
      const dnnl::reorder rl(master_layer_, w_layer_), ri(master_iter_, w_iter_);
      const dnnl::reorder rd(dense_master_, dense_w_);
      add_op(ci++, impl_of(dnnl::reorder::primitive_desc(master_layer_, w_layer_)), [this, rl, ri] {
        rl.execute(stream_, master_layer_, w_layer_);
        ri.execute(stream_, master_iter_, w_iter_);
      });
      add_op(ci++, impl_of(dnnl::reorder::primitive_desc(dense_master_, dense_w_)),
             [this, rd] { rd.execute(stream_, dense_master_, dense_w_); });
    }
  }
  if (ci != costs_.size()) throw std::logic_error("rnn: ops and op_costs() disagree");

  counts_ = rnn_counts(config);
  counts_.memory_bytes = allocated_bytes_;
}

// Forward of the decomposed cells, layer by layer: the input projection of all T steps in one
// matmul, then per step the recurrent matmul(s) and the cell's element-wise update on the host.
// Slots: slot projection, slot + 1 recurrent matmuls, slot + 2 element-wise.
void RnnModelImpl::add_decomposed_forward(std::size_t slot, const DecomposedPds& dp) {
  const std::int64_t L = d_.L, T = d_.T, B = d_.B, H = d_.H, I = d_.E, GH = d_.G * d_.H;
  const auto N = static_cast<std::size_t>(d_.rows());
  const auto z = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  const std::size_t bh = z(B * H), layer_states = N * z(H) + bh;
  const std::string cell = d_.cell;
  const memory::desc bias_md({1, GH}, dt::f32, tag::ab);
  for (std::int64_t l = 0; l < L; ++l) {
    const std::size_t keep = d_.training ? z(l) : 0;  // which kept-layer buffers this layer uses
    const memory x =
        l == 0 ? src_layer_ : at(states_, z(l - 1) * layer_states + bh, rows(d_.rows(), I, I));
    const std::size_t hs = z(l) * layer_states;  // h_{-1} of this layer in states_
    const std::size_t gs = keep * N * z(GH);     // its gates in gates_
    const std::size_t wl = z(l) * z(I * GH), wi = z(l) * z(H * GH);
    add_primitive(slot, dp.projection.impl, dp.projection.prim,
                  {{DNNL_ARG_SRC, x},
                   {DNNL_ARG_WEIGHTS, at(w_layer_, wl, rows(I, GH, GH))},
                   {DNNL_ARG_BIAS, at(bias_, z(l * GH), bias_md)},
                   {DNNL_ARG_DST, at(gates_, gs, rows(d_.rows(), GH, GH))}});
    float* const states = f32(states_);
    float* const gates = f32(gates_);
    for (std::int64_t t = 0; t < T; ++t) {
      float* hp = states + hs + z(t) * bh;    // h_{t-1}
      float* h = hp + bh;                     // h_t
      float* g = gates + gs + z(t * B * GH);  // this step's gates, B x GH
      const memory h_prev = at(states_, hs + z(t) * bh, rows(B, H, H));
      if (cell == "gru") {
        const memory gm = at(gates_, gs + z(t * B * GH), rows(B, 2 * H, GH));
        add_primitive(slot + 1, dp.recurrent.impl, dp.recurrent.prim,
                      {{DNNL_ARG_SRC, h_prev},
                       {DNNL_ARG_WEIGHTS, at(w_iter_, wi, rows(H, 2 * H, GH))},
                       {DNNL_ARG_DST, gm}});
        const std::size_t rs = keep * N * z(H) + z(t) * bh;
        float* rh = f32(rh_) + rs;
        // u = sigmoid, r = sigmoid, r * h_{t-1} for the candidate's recurrent product.
        add_op(slot + 2, "host:tbb", [=] {
          for_rows(B, 2 * H, [&](std::size_t b) {
            float* gb = g + b * z(GH);
            for (std::int64_t k = 0; k < 2 * H; ++k) gb[k] = sigmoid(gb[k]);
            for (std::int64_t k = 0; k < H; ++k)
              rh[b * z(H) + z(k)] = gb[H + k] * hp[b * z(H) + z(k)];
          });
        });
        add_primitive(slot + 1, dp.recurrent_o.impl, dp.recurrent_o.prim,
                      {{DNNL_ARG_SRC, at(rh_, rs, rows(B, H, H))},
                       {DNNL_ARG_WEIGHTS, at(w_iter_, wi + z(2 * H), rows(H, H, GH))},
                       {DNNL_ARG_DST, at(gates_, gs + z(t * B * GH + 2 * H), rows(B, H, GH))}});
        // o = tanh; h = u h_{t-1} + (1 - u) o.
        add_op(slot + 2, "host:tbb", [=] {
          for_rows(B, H, [&](std::size_t b) {
            float* gb = g + b * z(GH);
            for (std::int64_t k = 0; k < H; ++k) {
              const float u = gb[k], o = std::tanh(gb[2 * H + k]);
              gb[2 * H + k] = o;
              h[b * z(H) + z(k)] = u * hp[b * z(H) + z(k)] + (1.0F - u) * o;
            }
          });
        });
        continue;
      }
      add_primitive(slot + 1, dp.recurrent.impl, dp.recurrent.prim,
                    {{DNNL_ARG_SRC, h_prev},
                     {DNNL_ARG_WEIGHTS, at(w_iter_, wi, rows(H, GH, GH))},
                     {DNNL_ARG_DST, at(gates_, gs + z(t * B * GH), rows(B, GH, GH))}});
      if (cell == "rnn") {
        add_op(slot + 2, "host:tbb", [=] {
          for_rows(B, H, [&](std::size_t b) {
            for (std::int64_t k = 0; k < H; ++k) h[b * z(H) + z(k)] = std::tanh(g[b * z(H) + z(k)]);
          });
        });
        continue;
      }
      // LSTM, oneDNN's gate order i, f, c~, o: c = f c' + i c~, h = o tanh(c). The activated
      // gates stay in `g` for the backward pass.
      float* cp = f32(cstates_) + keep * layer_states + z(t) * bh;
      float* c = cp + bh;
      add_op(slot + 2, "host:tbb", [=] {
        for_rows(B, 4 * H, [&](std::size_t b) {
          float* gb = g + b * z(GH);
          for (std::int64_t k = 0; k < H; ++k) {
            const float i = sigmoid(gb[k]), f = sigmoid(gb[H + k]), cc = std::tanh(gb[2 * H + k]);
            const float o = sigmoid(gb[3 * H + k]);
            gb[k] = i;
            gb[H + k] = f;
            gb[2 * H + k] = cc;
            gb[3 * H + k] = o;
            const std::size_t j = b * z(H) + z(k);
            c[j] = f * cp[j] + i * cc;
            h[j] = o * std::tanh(c[j]);
          }
        });
      });
    }
  }
}

// Backward through time of the decomposed cells, from the top layer down: per step (T-1 .. 0)
// the gate gradients dG_t on the host and d h_{t-1} += dG_t U^T (matmul); per layer
// dX = dG W^T, dW = X^T dG, dU = H_prev^T dG, db = 1^T dG (matmuls). The gradient of a layer's
// output arrives in its d Y buffer (T x B x H) and the step terms are added into it, so d h_t
// is d Y[t] once step t + 1 is done; at t = 0 they go to the unused initial-state gradient.
// Slots: slot element-wise, slot + 1 per-step matmuls, slot + 2 dX, slot + 3 dW, dU, db.
void RnnModelImpl::add_decomposed_backward(std::size_t slot, const DecomposedPds& dp) {
  const std::int64_t L = d_.L, T = d_.T, B = d_.B, H = d_.H, I = d_.E, GH = d_.G * d_.H;
  const std::int64_t Nr = d_.rows();
  const auto N = static_cast<std::size_t>(Nr);
  const auto z = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  const std::size_t bh = z(B * H), layer_states = N * z(H) + bh;
  const std::string cell = d_.cell;
  float* const states = f32(states_);
  float* const dgates = f32(dgates_);
  for (std::int64_t l = L - 1; l >= 0; --l) {
    const bool even = (L - 1 - l) % 2 == 0;
    const memory dy = even ? diff_dst_layer_ : diff_hidden_;
    const memory dx = l == 0 ? diff_src_layer_ : (even ? diff_hidden_ : diff_dst_layer_);
    float* const dyp = f32(dy);
    const std::size_t hs = z(l) * layer_states, gs = z(l) * N * z(GH);
    const std::size_t wl = z(l) * z(I * GH), wi = z(l) * z(H * GH);
    const float* gates = f32(gates_) + gs;
    for (std::int64_t t = T - 1; t >= 0; --t) {
      const float* hp = states + hs + z(t) * bh;
      const float* h = hp + bh;
      const float* g = gates + z(t * B * GH);
      float* dg = dgates + z(t * B * GH);
      float* dh = dyp + z(t) * bh;
      // Where d h_{t-1} goes: the previous step's rows of d Y, or (t = 0) the initial state's.
      const bool first = t == 0;
      float* dprev = first ? f32(diff_init_) : dh - bh;
      const memory dprev_m = first ? diff_init_ : at(dy, z(t - 1) * bh, rows(B, H, H));
      if (cell == "rnn") {
        add_op(slot, "host:tbb", [=] {
          for_rows(B, H, [&](std::size_t b) {
            for (std::int64_t k = 0; k < H; ++k) {
              const std::size_t j = b * z(H) + z(k);
              dg[j] = dh[j] * (1.0F - h[j] * h[j]);
            }
          });
        });
      } else if (cell == "lstm") {
        const float* cp = f32(cstates_) + z(l) * layer_states + z(t) * bh;
        const float* c = cp + bh;
        float* dc = f32(diff_aux_);  // d c_t from step t + 1 (0 at the last step)
        const bool last = t == T - 1;
        add_op(slot, "host:tbb", [=] {
          for_rows(B, 4 * H, [&](std::size_t b) {
            const float* gb = g + b * z(GH);
            float* db = dg + b * z(GH);
            for (std::int64_t k = 0; k < H; ++k) {
              const std::size_t j = b * z(H) + z(k);
              const float i = gb[k], f = gb[H + k], cc = gb[2 * H + k], o = gb[3 * H + k];
              const float tc = std::tanh(c[j]);
              const float dct = (last ? 0.0F : dc[j]) + dh[j] * o * (1.0F - tc * tc);
              db[k] = dct * cc * i * (1.0F - i);
              db[H + k] = dct * cp[j] * f * (1.0F - f);
              db[2 * H + k] = dct * i * (1.0F - cc * cc);
              db[3 * H + k] = dh[j] * tc * o * (1.0F - o);
              dc[j] = dct * f;
            }
          });
        });
      } else {
        // GRU: h = u h' + (1 - u) o, o = tanh(a_o + U_o (r h')).
        float* drh = f32(diff_aux_);
        add_op(slot, "host:tbb", [=] {
          for_rows(B, 3 * H, [&](std::size_t b) {
            const float* gb = g + b * z(GH);
            float* db = dg + b * z(GH);
            for (std::int64_t k = 0; k < H; ++k) {
              const std::size_t j = b * z(H) + z(k);
              const float u = gb[k], o = gb[2 * H + k];
              db[2 * H + k] = dh[j] * (1.0F - u) * (1.0F - o * o);
              db[k] = dh[j] * (hp[j] - o) * u * (1.0F - u);
              dprev[j] = (first ? 0.0F : dprev[j]) + dh[j] * u;
            }
          });
        });
        add_primitive(slot + 1, dp.back_rh.impl, dp.back_rh.prim,
                      {{DNNL_ARG_SRC, at(dgates_, z(t * B * GH + 2 * H), rows(B, H, GH))},
                       {DNNL_ARG_WEIGHTS, at(w_iter_, wi + z(2 * H), cols(H, H, GH))},
                       {DNNL_ARG_DST, diff_aux_}});
        add_op(slot, "host:tbb", [=] {
          for_rows(B, H, [&](std::size_t b) {
            const float* gb = g + b * z(GH);
            float* db = dg + b * z(GH);
            for (std::int64_t k = 0; k < H; ++k) {
              const std::size_t j = b * z(H) + z(k);
              const float r = gb[H + k];
              db[H + k] = drh[j] * hp[j] * r * (1.0F - r);
              dprev[j] += drh[j] * r;
            }
          });
        });
        add_primitive(slot + 1, dp.back_rec.impl, dp.back_rec.prim,
                      {{DNNL_ARG_SRC, at(dgates_, z(t * B * GH), rows(B, 2 * H, GH))},
                       {DNNL_ARG_WEIGHTS, at(w_iter_, wi, cols(2 * H, H, GH))},
                       {DNNL_ARG_DST, dprev_m}});
        continue;
      }
      const Matmul& m = first ? dp.back_rec_init : dp.back_rec;
      add_primitive(slot + 1, m.impl, m.prim,
                    {{DNNL_ARG_SRC, at(dgates_, z(t * B * GH), rows(B, GH, GH))},
                     {DNNL_ARG_WEIGHTS, at(w_iter_, wi, cols(GH, H, GH))},
                     {DNNL_ARG_DST, dprev_m}});
    }
    const memory x =
        l == 0 ? src_layer_ : at(states_, z(l - 1) * layer_states + bh, rows(Nr, I, I));
    const memory dg_all = at(dgates_, 0, rows(Nr, GH, GH));
    add_primitive(slot + 2, dp.back_data.impl, dp.back_data.prim,
                  {{DNNL_ARG_SRC, dg_all},
                   {DNNL_ARG_WEIGHTS, at(w_layer_, wl, cols(GH, I, GH))},
                   {DNNL_ARG_DST, at(dx, 0, rows(Nr, I, I))}});
    add_primitive(slot + 3, dp.back_w.impl, dp.back_w.prim,
                  {{DNNL_ARG_SRC, at(x, 0, cols(I, Nr, I))},
                   {DNNL_ARG_WEIGHTS, dg_all},
                   {DNNL_ARG_DST, at(dw_layer_, wl, rows(I, GH, GH))}});
    const memory h_prev_t = at(states_, hs, cols(H, Nr, H));
    if (cell == "gru") {
      add_primitive(slot + 3, dp.back_u_ur.impl, dp.back_u_ur.prim,
                    {{DNNL_ARG_SRC, h_prev_t},
                     {DNNL_ARG_WEIGHTS, at(dgates_, 0, rows(Nr, 2 * H, GH))},
                     {DNNL_ARG_DST, at(dw_iter_, wi, rows(H, 2 * H, GH))}});
      add_primitive(slot + 3, dp.back_u_o.impl, dp.back_u_o.prim,
                    {{DNNL_ARG_SRC, at(rh_, z(l) * N * z(H), cols(H, Nr, H))},
                     {DNNL_ARG_WEIGHTS, at(dgates_, z(2 * H), rows(Nr, H, GH))},
                     {DNNL_ARG_DST, at(dw_iter_, wi + z(2 * H), rows(H, H, GH))}});
    } else {
      add_primitive(slot + 3, dp.back_w.impl, dp.back_w.prim,
                    {{DNNL_ARG_SRC, h_prev_t},
                     {DNNL_ARG_WEIGHTS, dg_all},
                     {DNNL_ARG_DST, at(dw_iter_, wi, rows(H, GH, GH))}});
    }
    add_primitive(slot + 3, dp.back_bias.impl, dp.back_bias.prim,
                  {{DNNL_ARG_SRC, at(ones_, 0, rows(1, Nr, Nr))},
                   {DNNL_ARG_WEIGHTS, dg_all},
                   {DNNL_ARG_DST, at(dbias_, z(l * GH), rows(1, GH, GH))}});
  }
}

std::vector<float> RnnModelImpl::read_plain(const memory& m, const memory::desc& plain) const {
  memory src = m;
  memory tmp(plain, engine_);
  dnnl::reorder(src, tmp).execute(stream_, src, tmp);
  stream_.wait();
  const float* p = f32(tmp);
  return {p, p + plain.get_size() / sizeof(float)};
}

void RnnModelImpl::write_plain(const std::vector<float>& v, const memory& m,
                               const memory::desc& plain) {
  if (v.size() * sizeof(float) != plain.get_size()) {
    throw std::invalid_argument("rnn: set_params: a tensor has the wrong size");
  }
  memory tmp(plain, engine_, const_cast<float*>(v.data()));
  memory dst = m;
  dnnl::reorder(tmp, dst).execute(stream_, tmp, dst);
  stream_.wait();
}

RnnParams RnnModelImpl::params() const {
  if (!d_.training) throw std::logic_error("rnn: params() is for training models");
  const CellDescs cd = cell_descs(d_);
  RnnParams p;
  const float* t = f32(table_);
  p.embedding.assign(t, t + d_.V * d_.E);
  p.weights_layer = read_plain(master_layer_, cd.w_layer_plain);
  p.weights_iter = read_plain(master_iter_, cd.w_iter_plain);
  p.bias = read_plain(bias_, cd.bias_plain);
  p.dense_weights = read_plain(dense_master_, memory::desc({d_.V, d_.H}, dt::f32, tag::oi));
  p.dense_bias = read_plain(dense_b_, memory::desc({d_.V}, dt::f32, tag::x));
  return p;
}

void RnnModelImpl::set_params(const RnnParams& p) {
  if (!d_.training) throw std::logic_error("rnn: set_params() is for training models");
  if (p.embedding.size() != static_cast<std::size_t>(d_.V * d_.E)) {
    throw std::invalid_argument("rnn: set_params: embedding has the wrong size");
  }
  std::copy(p.embedding.begin(), p.embedding.end(), f32(table_));
  write_weights(p);
}

void RnnModelImpl::write_weights(const RnnParams& p) {
  const CellDescs cd = cell_descs(d_);
  write_plain(p.weights_layer, master_layer_, cd.w_layer_plain);
  write_plain(p.weights_iter, master_iter_, cd.w_iter_plain);
  write_plain(p.bias, bias_, cd.bias_plain);
  write_plain(p.dense_weights, dense_master_, memory::desc({d_.V, d_.H}, dt::f32, tag::oi));
  write_plain(p.dense_bias, dense_b_, memory::desc({d_.V}, dt::f32, tag::x));
  for (auto [from, to] : {std::pair{master_layer_, w_layer_}, std::pair{master_iter_, w_iter_},
                          std::pair{dense_master_, dense_w_}}) {
    if (from.get_data_handle() == to.get_data_handle()) continue;
    dnnl::reorder(from, to).execute(stream_, from, to);
  }
  stream_.wait();
}

std::vector<store::OpRecord> RnnModelImpl::profile_step() {
  std::vector<store::OpRecord> records;
  records.reserve(costs_.size());
  arena_.execute([&] {
    std::vector<double> time_s(costs_.size(), 0.0);
    for (auto& op : ops_) {
      const auto start = std::chrono::steady_clock::now();
      op.run();
      stream_.wait();
      const std::chrono::duration<double> dt_s = std::chrono::steady_clock::now() - start;
      time_s[op.slot] += dt_s.count();
    }
    for (std::size_t i = 0; i < costs_.size(); ++i) {
      if (slot_impl_[i].empty()) continue;  // nothing ran (a reorder the layouts made needless)
      const OpCost& c = costs_[i];
      store::OpRecord r;
      r.layer = c.layer;
      r.op = c.op;
      r.phase = c.phase;
      r.time_s = time_s[i];
      r.flops = c.flops;
      r.bytes = c.bytes;
      r.impl = slot_impl_[i];
      records.push_back(std::move(r));
    }
  });
  return records;
}

}  // namespace

int rnn_gates(const std::string& cell) {
  if (cell == "rnn") return 1;
  if (cell == "lstm") return 4;
  if (cell == "gru") return 3;
  throw Unsupported(fmt::format("rnn: unknown cell '{}' (expected rnn, lstm or gru)", cell));
}

EmbeddingIndex embedding_index(std::span<const std::int32_t> tokens, std::int64_t vocab) {
  // Counting sort of the positions by token id: O(N + V), positions ascending within a row.
  std::vector<std::int64_t> count(static_cast<std::size_t>(vocab) + 1, 0);
  for (const auto t : tokens) {
    if (t < 0 || t >= vocab) throw std::out_of_range("rnn: token id outside the vocabulary");
    ++count[static_cast<std::size_t>(t) + 1];
  }
  EmbeddingIndex index;
  for (std::int64_t v = 0; v < vocab; ++v) {
    if (count[static_cast<std::size_t>(v) + 1] > 0)
      index.rows.push_back(static_cast<std::int32_t>(v));
    count[static_cast<std::size_t>(v) + 1] += count[static_cast<std::size_t>(v)];
  }
  index.positions.resize(tokens.size());
  std::vector<std::int64_t> next(count.begin(), count.end() - 1);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    index.positions[static_cast<std::size_t>(next[static_cast<std::size_t>(tokens[i])]++)] =
        static_cast<std::int32_t>(i);
  }
  index.row_start.reserve(index.rows.size() + 1);
  for (const auto r : index.rows) index.row_start.push_back(count[static_cast<std::size_t>(r)]);
  index.row_start.push_back(static_cast<std::int64_t>(tokens.size()));
  return index;
}

void embedding_scatter_add(const EmbeddingIndex& index, std::span<const float> grad,
                           std::int64_t width, std::span<float> table_grad) {
  const auto w = static_cast<std::size_t>(width);
  // One task per table row: each row is written by exactly one task (no races, no atomics), and
  // its occurrences are summed in position order, so the result does not depend on the threads.
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, index.rows.size(), 8), [&](const auto& r) {
    for (std::size_t u = r.begin(); u != r.end(); ++u) {
      float* __restrict dst = table_grad.data() + static_cast<std::size_t>(index.rows[u]) * w;
      const auto begin = static_cast<std::size_t>(index.row_start[u]);
      const auto end = static_cast<std::size_t>(index.row_start[u + 1]);
      const float* src = grad.data() + static_cast<std::size_t>(index.positions[begin]) * w;
      std::copy(src, src + w, dst);
      for (std::size_t k = begin + 1; k < end; ++k) {
        src = grad.data() + static_cast<std::size_t>(index.positions[k]) * w;
        for (std::size_t j = 0; j < w; ++j) dst[j] += src[j];
      }
    }
  });
}

ModelCounts rnn_counts(const space::Config& config) {
  const Dims d = dims_of(config);
  ModelCounts c;
  for (const auto& op : op_costs(d)) {
    c.flops += op.flops;
    c.bytes += op.bytes;
  }
  c.params = static_cast<double>(d.V) * d.E + d.cell_weights() + d.cell_bias() + d.dense_params();
  c.memory_bytes = memory_bytes_estimate(d);
  if (config.knobs.algorithm == "best" && !d.bf16) {  // either may be chosen
    Dims dd = d;
    dd.decomposed = true;
    c.memory_bytes = std::max(c.memory_bytes, memory_bytes_estimate(dd));
  }
  return c;
}

std::unique_ptr<RnnModel> build_rnn_model(const space::Config& config, std::uint64_t seed) {
  if (config.knobs.algorithm == "best") {
    throw std::invalid_argument(
        "rnn: build_rnn_model needs a concrete algorithm; build_rnn "
        "resolves best");
  }
  try {
    return std::make_unique<RnnModelImpl>(config, seed);
  } catch (const dnnl::error& e) {
    // Out of memory stays what it is (the executor records it); anything else oneDNN refuses
    // makes the config unsupported, with oneDNN's reason.
    if (e.status == dnnl_out_of_memory) throw;
    throw Unsupported(fmt::format("rnn: oneDNN cannot build {}: {}", config.label(), e.what()));
  }
}

namespace {

// algorithm best for rnn: one algorithm for the whole cell stack (fused primitives or decomposed
// matmuls; they keep their weights in different layouts, so mixing them per layer would add
// reorders), chosen by measuring both on the cell stack alone: the same cell, layers, embedding,
// length, batch, mode and dtype with a vocabulary of 16, so that the embedding, Dense(vocab) and
// softmax (common to both) are negligible. The roofline model ranks them equal (same FLOPs by the
// convention) and prunes neither. Cached like the CNN's decisions (worker/best_mode.hpp).
std::string choose_rnn_algorithm(const space::Config& config) {
  const Dims d = dims_of(config);
  const best::LayerKey key =
      best::make_key("rnn_cells_" + d.cell, {{"l", d.L}, {"h", d.H}, {"t", d.T}, {"mb", d.B}},
                     config.knobs.mode, config.knobs.dtype);
  // decomposed is f32 only: for bf16 fused is the one candidate, taken without measuring.
  if (d.bf16) return "fused";
  space::Config cells = config;
  cells.vocab = std::min<std::int64_t>(config.vocab, 16);
  return best::choose_whole_model(key, {"fused", "decomposed"}, [&](const std::string& name) {
    cells.knobs.algorithm = name;
    return best::Variant{build_rnn_model(cells, 42), rnn_counts(cells)};
  });
}

}  // namespace

std::unique_ptr<Model> build_rnn(const space::Config& config, std::uint64_t seed) {
  if (config.knobs.algorithm == "best") {
    space::Config chosen = config;
    chosen.knobs.algorithm = choose_rnn_algorithm(config);
    return std::make_unique<best::ChosenModel>(build_rnn_model(chosen, seed),
                                               chosen.knobs.algorithm);
  }
  return build_rnn_model(config, seed);
}

}  // namespace dnnscape::worker
