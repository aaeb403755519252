// The ParaDnn fully-connected model on oneDNN: `layers` hidden Dense(nodes)+ReLU, Dense(output)
// logits, softmax cross-entropy on fixed random labels, plain SGD. oneDNN stays in fc.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/model.hpp"

namespace dnnscape::worker {

inline constexpr float kFcLearningRate = 0.01F;
// What knobs.algorithm "default" means for fc: the faster of the two on the bench config
// (bench/bench_fc.cpp; the numbers are in docs/conventions.md).
inline constexpr const char* kFcDefaultAlgorithm = "matmul";

// The FC model. Weights are exposed in one canonical layout whatever the algorithm: layer l's
// weights as [out][in] row-major (out = units of the layer, in = its fan-in), biases as [out].
// Layer l maps width(l) to width(l + 1): width(0) = input, width(1..layers) = nodes,
// width(layers + 1) = output.
class FcModel final : public Model {
 public:
  FcModel(const space::Config& config, std::uint64_t seed);
  ~FcModel() override;

  void step() override;
  [[nodiscard]] const ModelCounts& counts() const override;
  [[nodiscard]] double last_loss() const override;
  std::vector<store::OpRecord> profile_step() override;
  [[nodiscard]] std::string impl() const override;

  [[nodiscard]] int weighted_layers() const;  // layers + 1
  [[nodiscard]] std::int64_t width(int l) const;
  [[nodiscard]] std::string algorithm() const;  // resolved: inner_product | matmul

  // Copies of the model's state (f32; canonical layouts above). Gradients are those of the last
  // training step, i.e. taken at the weights before that step's SGD update. With dtype bf16,
  // weights() are the f32 masters in training (the bf16 copies the primitives read are refreshed
  // from them) and the bf16 weights in inference; inputs() are the bf16 inputs widened to f32.
  [[nodiscard]] std::vector<float> weights(int l) const;
  [[nodiscard]] std::vector<float> biases(int l) const;
  [[nodiscard]] std::vector<float> weight_gradient(int l) const;
  [[nodiscard]] std::vector<float> bias_gradient(int l) const;
  [[nodiscard]] std::vector<float> inputs() const;  // [batch][input]
  [[nodiscard]] std::vector<std::int32_t> labels() const;
  [[nodiscard]] std::vector<float> logits() const;  // [batch][output] of the last forward pass
  void set_weights(int l, const std::vector<float>& w);
  void set_biases(int l, const std::vector<float>& b);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dnnscape::worker
