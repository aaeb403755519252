// The RNN family: embedding -> L stacked vanilla-RNN/LSTM/GRU cells (one oneDNN primitive, or
// matmul + element-wise ops per step: algorithm decomposed) -> Dense(vocab) at every step ->
// softmax cross-entropy -> SGD. Conventions: docs/conventions-rnn.md.
// oneDNN stays out of this header; the extra accessors of RnnModel exist for the tests.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "worker/model.hpp"

namespace dnnscape::worker {

// Every weight of an RNN model in plain layouts (what the tests' reference computes with).
struct RnnParams {
  std::vector<float> embedding;      // V x E, row = token id
  std::vector<float> weights_layer;  // L x I x G x H (oneDNN ldigo, one direction)
  std::vector<float> weights_iter;   // L x H x G x H (ldigo)
  std::vector<float> bias;           // L x G x H (ldgo)
  std::vector<float> dense_weights;  // V x H (oi: logits = h * W^T + b)
  std::vector<float> dense_bias;     // V
};

// An RNN model with the accessors the tests need to check it against a reference.
class RnnModel : public Model {
 public:
  // Weights in plain layouts (reordered from the primitives' layouts; bf16: the f32 masters);
  // training models only.
  [[nodiscard]] virtual RnnParams params() const = 0;
  virtual void set_params(const RnnParams& params) = 0;
  // Input and target token ids, T x B (index t * B + b); fixed at build time.
  [[nodiscard]] virtual const std::vector<std::int32_t>& tokens() const = 0;
  [[nodiscard]] virtual const std::vector<std::int32_t>& targets() const = 0;
  // Output of the last layer at every step of the last step(), T x B x H.
  [[nodiscard]] virtual std::vector<float> hidden() const = 0;
  [[nodiscard]] virtual float learning_rate() const = 0;
  virtual void set_learning_rate(float lr) = 0;
};

// The model of a concrete algorithm (default, fused, decomposed); best is resolved by build_rnn.
std::unique_ptr<RnnModel> build_rnn_model(const space::Config& config, std::uint64_t seed);

// Gates per cell as oneDNN orders them: rnn 1, lstm 4 (i, f, c~, o), gru 3 (u, r, o).
// Throws Unsupported for another cell name.
int rnn_gates(const std::string& cell);

// Backward of the embedding lookup: for every row that occurs in `tokens`,
// table_grad[row] = sum of the rows of `grad` (n x width) at the positions holding that token.
// Rows that do not occur are left untouched. `rows`, `row_start`, `positions` are the index built
// by embedding_index(). Parallel over table rows on oneTBB, so repeated tokens never race.
struct EmbeddingIndex {
  std::vector<std::int32_t> rows;       // distinct token ids, ascending
  std::vector<std::int64_t> row_start;  // rows.size() + 1 offsets into positions
  std::vector<std::int32_t> positions;  // positions of each row's occurrences, ascending
};
EmbeddingIndex embedding_index(std::span<const std::int32_t> tokens, std::int64_t vocab);
void embedding_scatter_add(const EmbeddingIndex& index, std::span<const float> grad,
                           std::int64_t width, std::span<float> table_grad);

}  // namespace dnnscape::worker
