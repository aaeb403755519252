// The CNN family (ResNet-v1, post-activation) on oneDNN: its layer list, and a single-block probe
// that runs one block with the model's own primitives so tests can check it against a reference.
// The model itself is built through build_cnn() / build_model(); oneDNN stays out of this header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "space/config.hpp"

namespace dnnscape::worker::cnn {

// Batch-norm epsilon of every BN layer.
inline constexpr float kBnEpsilon = 1e-5f;
// Plain SGD learning rate of the training step (weights, biases, BN scale and shift).
inline constexpr float kLearningRate = 0.05f;

// One convolution (+ batch norm, + ReLU when `relu`) of the network, with its shapes.
struct ConvLayer {
  std::string name;  // e.g. "stem.conv", "group1.block0.conv2", "group1.block0.proj"
  std::int64_t batch = 0;
  std::int64_t in_channels = 0;
  std::int64_t out_channels = 0;
  std::int64_t kernel = 0;  // square
  std::int64_t stride = 1;
  std::int64_t pad = 0;  // both sides
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t out_h = 0, out_w = 0;
  bool relu = false;  // ReLU right after this layer's BN (the block's last ReLU follows the add)
  bool projection = false;  // a shortcut projection (1x1 conv + BN)

  // 2 * batch * Ho * Wo * Cout * Cin * Kh * Kw, padding taps included.
  [[nodiscard]] double forward_flops() const;
  [[nodiscard]] std::int64_t weight_count() const {
    return out_channels * in_channels * kernel * kernel;
  }
};

// Every convolution of the model for `config`, in forward order: the stem, then each block's main
// path followed by its projection (if any). Throws Unsupported for invalid parameters.
std::vector<ConvLayer> conv_layers(const space::Config& config);

// One block on its own (for tests): input NCHW with `in_channels` channels, `filters` as in the
// model (bottleneck output = 4 * filters), `stride` on the block's first 3x3 (residual) or its 3x3
// (bottleneck); a projection shortcut when stride != 1 or the channel count changes.
struct BlockProbeSpec {
  std::string block_fn = "residual";
  std::int64_t batch = 2;
  std::int64_t in_channels = 8;
  std::int64_t filters = 8;
  std::int64_t height = 6;
  std::int64_t width = 6;
  std::int64_t stride = 1;
  std::string algorithm = "default";
};

// The block's convolutions (main path in order, then the projection), shapes only.
std::vector<ConvLayer> block_convs(const BlockProbeSpec& spec);

// Results of one forward (training-mode batch norm) and backward pass of a block; all tensors in
// plain layouts: activations NCHW, weights OIHW, in block_convs() order.
struct BlockProbeResult {
  std::vector<float> dst;
  std::vector<float> diff_src;
  std::vector<std::vector<float>> diff_weights;
  std::vector<std::vector<float>> diff_scale;
  std::vector<std::vector<float>> diff_shift;
};

// Runs the block with the primitives the model uses (same layouts, same in-place tricks, same
// gradient fan-in), given the input, one weight tensor / BN scale / BN shift per convolution, and
// the gradient arriving at the block's output.
BlockProbeResult run_block(const BlockProbeSpec& spec, const std::vector<float>& src,
                           const std::vector<std::vector<float>>& weights,
                           const std::vector<std::vector<float>>& bn_scale,
                           const std::vector<std::vector<float>>& bn_shift,
                           const std::vector<float>& diff_dst);

}  // namespace dnnscape::worker::cnn
