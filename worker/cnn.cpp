// The CNN family: ResNet-v1 (post-activation) built from oneDNN primitives.
//
// Layout: every primitive after the stem works on the blocked layout the convolutions choose
// (format_tag::any, nChw16c on AVX-512); BN, ReLU, pooling and the adds take the convolution's
// layout as given and weights gradients are requested in the forward weights' layout, so no
// reorder runs inside a step. Memory: weights (and their gradients) live in one slab each, so the
// SGD update is a single sum primitive; gradients of activations live in a few shared buffers
// (two ping-pong buffers at block boundaries, one per position inside a block), because a block's
// internal gradients are dead once its backward pass is done. See docs/conventions-cnn.md.
#include "worker/cnn.hpp"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include "worker/best_mode.hpp"
#include "worker/dnnl_util.hpp"
#include "worker/families.hpp"

namespace dnnscape::worker {

namespace cnn {

double ConvLayer::forward_flops() const {
  return 2.0 * static_cast<double>(batch) * static_cast<double>(out_h * out_w) *
         static_cast<double>(out_channels) * static_cast<double>(in_channels * kernel * kernel);
}

}  // namespace cnn

namespace {

namespace du = dnnl_util;
using cnn::ConvLayer;
using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

constexpr std::size_t kAlign = 64;
constexpr double kF32 = 4;  // bytes per element

std::size_t align_up(std::size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}
std::int64_t pad16(std::int64_t c) {
  return (c + 15) / 16 * 16;
}
double dbl(std::int64_t v) {
  return static_cast<double>(v);
}

// ---- The layer list -------------------------------------------------------------------------

ConvLayer make_conv(std::string name, std::int64_t batch, std::int64_t ci, std::int64_t co,
                    std::int64_t k, std::int64_t stride, std::int64_t pad, std::int64_t hi,
                    std::int64_t wi, bool relu, bool projection) {
  ConvLayer l;
  l.name = std::move(name);
  l.batch = batch;
  l.in_channels = ci;
  l.out_channels = co;
  l.kernel = k;
  l.stride = stride;
  l.pad = pad;
  l.in_h = hi;
  l.in_w = wi;
  l.out_h = (hi + 2 * pad - k) / stride + 1;
  l.out_w = (wi + 2 * pad - k) / stride + 1;
  l.relu = relu;
  l.projection = projection;
  if (hi + 2 * pad < k || l.out_h < 1 || l.out_w < 1) {
    throw Unsupported(fmt::format(
        "cnn: layer {} gets a {}x{} input, too small for its {}x{} kernel", l.name, hi, wi, k, k));
  }
  return l;
}

struct BlockPlan {
  std::string name;
  std::vector<ConvLayer> main;
  std::optional<ConvLayer> proj;
};

struct NetPlan {
  std::int64_t batch = 0;
  std::int64_t image = 0;
  ConvLayer stem;
  std::int64_t pool_h = 0, pool_w = 0;  // max-pool output
  std::vector<BlockPlan> blocks;
  std::int64_t features = 0;  // channels into the global pool
  std::int64_t feat_h = 0, feat_w = 0;
  std::int64_t classes = 0;
  bool bf16 = false;
  double a = kF32;  // bytes per activation element (bf16: 2)
};

// The block with input (ci, h, w): main path and, where the shape changes, a projection.
BlockPlan make_block(const std::string& name, bool bottleneck, std::int64_t batch, std::int64_t ci,
                     std::int64_t filters, std::int64_t h, std::int64_t w, std::int64_t stride) {
  BlockPlan b;
  b.name = name;
  const std::int64_t co = bottleneck ? 4 * filters : filters;
  if (bottleneck) {
    b.main.push_back(make_conv(name + ".conv1", batch, ci, filters, 1, 1, 0, h, w, true, false));
    b.main.push_back(
        make_conv(name + ".conv2", batch, filters, filters, 3, stride, 1, h, w, true, false));
    const auto& m = b.main.back();
    b.main.push_back(
        make_conv(name + ".conv3", batch, filters, co, 1, 1, 0, m.out_h, m.out_w, false, false));
  } else {
    b.main.push_back(
        make_conv(name + ".conv1", batch, ci, filters, 3, stride, 1, h, w, true, false));
    const auto& m = b.main.back();
    b.main.push_back(
        make_conv(name + ".conv2", batch, filters, co, 3, 1, 1, m.out_h, m.out_w, false, false));
  }
  if (stride != 1 || ci != co) {
    b.proj = make_conv(name + ".proj", batch, ci, co, 1, stride, 0, h, w, false, true);
  }
  return b;
}

NetPlan make_plan(const space::Config& c) {
  if (c.family != space::Family::cnn) throw std::invalid_argument("cnn: config is not a cnn");
  if (c.block_fn != "residual" && c.block_fn != "bottleneck") {
    throw Unsupported(fmt::format("cnn: block_fn '{}' is not residual or bottleneck", c.block_fn));
  }
  if (c.filters < 1 || c.blocks < 1 || c.image < 1 || c.output < 1 || c.batch < 1) {
    throw Unsupported(fmt::format(
        "cnn: filters, blocks, image, output and batch must be positive (got {}, {}, {}, {}, {})",
        c.filters, c.blocks, c.image, c.output, c.batch));
  }
  if (c.knobs.dtype != "f32" && c.knobs.dtype != "bf16") {
    throw Unsupported(fmt::format("cnn: dtype {} is not f32 or bf16", c.knobs.dtype));
  }
  if (c.knobs.mode != "training" && c.knobs.mode != "inference") {
    throw Unsupported(fmt::format("cnn: mode '{}' is not training or inference", c.knobs.mode));
  }
  NetPlan p;
  p.batch = c.batch;
  p.image = c.image;
  p.classes = c.output;
  p.bf16 = c.knobs.dtype == "bf16";
  p.a = p.bf16 ? 2.0 : kF32;
  p.stem = make_conv("stem.conv", c.batch, 3, c.filters, 7, 2, 3, c.image, c.image, true, false);
  p.pool_h = (p.stem.out_h + 2 - 3) / 2 + 1;
  p.pool_w = (p.stem.out_w + 2 - 3) / 2 + 1;
  const bool bottleneck = c.block_fn == "bottleneck";
  std::int64_t ci = c.filters, h = p.pool_h, w = p.pool_w;
  for (int g = 0; g < 4; ++g) {
    const std::int64_t filters = c.filters << g;
    for (std::int64_t k = 0; k < c.blocks; ++k) {
      const std::int64_t stride = (g > 0 && k == 0) ? 2 : 1;
      p.blocks.push_back(make_block(fmt::format("group{}.block{}", g, k), bottleneck, c.batch, ci,
                                    filters, h, w, stride));
      const auto& last = p.blocks.back().main.back();
      ci = last.out_channels;
      h = last.out_h;
      w = last.out_w;
    }
  }
  p.features = ci;
  p.feat_h = h;
  p.feat_w = w;
  return p;
}

// ---- Per-primitive traffic (compulsory bytes: inputs, weights, outputs) ---------------------
// Shared by the analytic counts and the per-op records so the two cannot drift apart.

double act_elems(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  return dbl(n) * dbl(c) * dbl(h) * dbl(w);
}
double src_elems(const ConvLayer& l) {
  return act_elems(l.batch, l.in_channels, l.in_h, l.in_w);
}
double dst_elems(const ConvLayer& l) {
  return act_elems(l.batch, l.out_channels, l.out_h, l.out_w);
}
// `a` is the element size of activations, their gradients and the weights the primitives read
// (4, or 2 in bf16); statistics, BN scale/shift, biases, logits, weight gradients stay f32.
// Forward, backward-data and backward-weights all touch src, weights and dst once.
double conv_bytes(const ConvLayer& l, double a) {
  return a * (src_elems(l) + dbl(l.weight_count()) + dst_elems(l));
}
// Backward-weights writes f32 weight gradients (bf16 too).
double conv_bwd_weights_bytes(const ConvLayer& l, double a) {
  return a * (src_elems(l) + dst_elems(l)) + kF32 * dbl(l.weight_count());
}
// Forward: src, dst, scale, shift, mean, variance.
double bn_fwd_bytes(double elems, std::int64_t c, double a) {
  return a * 2 * elems + kF32 * 4 * dbl(c);
}
// Backward: src, diff_dst, diff_src, mean, variance, scale, diff_scale, diff_shift.
double bn_bwd_bytes(double elems, std::int64_t c, double a) {
  return a * 3 * elems + kF32 * 5 * dbl(c);
}
double relu_fwd_bytes(double elems, double a) {
  return a * 2 * elems;
}
double relu_bwd_bytes(double elems, double a) {
  return a * 3 * elems;
}
double add_bytes(double elems, double a) {
  return a * 3 * elems;
}
// Max pool: src and dst, plus the u8 workspace of argmax positions when training.
double maxpool_bytes(double src, double dst, bool training, double a) {
  return a * (src + dst) + (training ? dst : 0.0);
}
double dense_fwd_flops(const NetPlan& p) {
  return 2.0 * dbl(p.batch) * (dbl(p.features) * dbl(p.classes) + dbl(p.classes));
}
// src, weights (a); bias, logits (f32).
double dense_fwd_bytes(const NetPlan& p) {
  return p.a * (dbl(p.batch) * dbl(p.features) + dbl(p.features) * dbl(p.classes)) +
         kF32 * (dbl(p.classes) + dbl(p.batch) * dbl(p.classes));
}
// diff_dst, weights, diff_src.
double dense_bwd_data_bytes(const NetPlan& p) {
  return p.a * (dbl(p.batch) * dbl(p.classes) + dbl(p.features) * dbl(p.classes) +
                dbl(p.batch) * dbl(p.features));
}
// src, diff_dst (a); diff weights, diff bias (f32).
double dense_bwd_weights_bytes(const NetPlan& p) {
  return p.a * (dbl(p.batch) * dbl(p.features) + dbl(p.batch) * dbl(p.classes)) +
         kF32 * (dbl(p.features) * dbl(p.classes) + dbl(p.classes));
}
double gpool_bytes(const NetPlan& p) {
  return p.a * (act_elems(p.batch, p.features, p.feat_h, p.feat_w) + dbl(p.batch * p.features));
}
double softmax_bytes(const NetPlan& p) {
  return kF32 * 2 * dbl(p.batch) * dbl(p.classes);
}
// Loss and its gradient on the host: reads probabilities and labels, writes the gradient.
double loss_bytes(const NetPlan& p) {
  return (kF32 + p.a) * dbl(p.batch) * dbl(p.classes) + kF32 * dbl(p.batch);
}
// bf16 training: each step rounds the f32 master of every conv and dense weight into its bf16
// copy (read 4, write 2 bytes per weight).
double plan_conv_dense_weights(const NetPlan& p);
double copy_bytes(const NetPlan& p, bool training) {
  return p.bf16 && training ? (kF32 + p.a) * plan_conv_dense_weights(p) : 0.0;
}

double plan_params(const NetPlan& p) {
  double params = dbl(p.stem.weight_count()) + 2 * dbl(p.stem.out_channels);
  for (const auto& b : p.blocks) {
    for (const auto& l : b.main) params += dbl(l.weight_count()) + 2 * dbl(l.out_channels);
    if (b.proj) params += dbl(b.proj->weight_count()) + 2 * dbl(b.proj->out_channels);
  }
  return params + dbl(p.features) * dbl(p.classes) + dbl(p.classes);
}

double plan_conv_dense_weights(const NetPlan& p) {
  double w = dbl(p.stem.weight_count());
  for (const auto& b : p.blocks) {
    for (const auto& l : b.main) w += dbl(l.weight_count());
    if (b.proj) w += dbl(b.proj->weight_count());
  }
  return w + dbl(p.features) * dbl(p.classes);
}

double plan_forward_flops(const NetPlan& p) {
  double f = p.stem.forward_flops();
  for (const auto& b : p.blocks) {
    for (const auto& l : b.main) f += l.forward_flops();
    if (b.proj) f += b.proj->forward_flops();
  }
  return f + dense_fwd_flops(p);
}

// Bytes of one unit (conv + BN [+ ReLU]) per pass.
double unit_fwd_bytes(const ConvLayer& l, double a) {
  const double e = dst_elems(l);
  return conv_bytes(l, a) + bn_fwd_bytes(e, l.out_channels, a) +
         (l.relu ? relu_fwd_bytes(e, a) : 0.0);
}
double unit_bwd_bytes(const ConvLayer& l, bool backward_data, double a) {
  const double e = dst_elems(l);
  return (l.relu ? relu_bwd_bytes(e, a) : 0.0) + bn_bwd_bytes(e, l.out_channels, a) +
         conv_bwd_weights_bytes(l, a) + (backward_data ? conv_bytes(l, a) : 0.0);
}

double plan_bytes(const NetPlan& p, bool training) {
  const ConvLayer& s = p.stem;
  const double a = p.a;
  const double pool_dst = act_elems(p.batch, s.out_channels, p.pool_h, p.pool_w);
  double fwd = unit_fwd_bytes(s, a) + maxpool_bytes(dst_elems(s), pool_dst, training, a);
  double bwd = unit_bwd_bytes(s, false, a) + maxpool_bytes(dst_elems(s), pool_dst, true, a);
  for (const auto& b : p.blocks) {
    for (const auto& l : b.main) {
      fwd += unit_fwd_bytes(l, a);
      bwd += unit_bwd_bytes(l, true, a);
    }
    if (b.proj) {
      fwd += unit_fwd_bytes(*b.proj, a);
      bwd += unit_bwd_bytes(*b.proj, true, a);
    }
    const double out = dst_elems(b.main.back());
    fwd += add_bytes(out, a) + relu_fwd_bytes(out, a);
    // ReLU backward after the add, and the fan-in add of the two gradients at the block input.
    bwd += relu_bwd_bytes(out, a) + add_bytes(src_elems(b.main.front()), a);
  }
  fwd += gpool_bytes(p) + dense_fwd_bytes(p) + softmax_bytes(p);
  if (!training) return fwd;
  bwd += loss_bytes(p) + dense_bwd_data_bytes(p) + dense_bwd_weights_bytes(p) + gpool_bytes(p);
  const double update = kF32 * 3 * plan_params(p) + copy_bytes(p, true);
  return fwd + bwd + update;
}

// Footprint the builder allocates: mirrors Net's allocation rules with channels of activations
// and conv weights padded to the 16-channel blocks of the AVX-512 layouts.
// oneDNN 2.6's convolution_auto runs a 3x3 stride-1 forward-inference convolution with
// jit_wino_4x3 when the batch is >= 4 (its is_winograd_faster_than_direct) and the channels fill
// 16-lane blocks. Its weights then live in the Winograd domain (6x6 = 36 taps instead of 9) and its
// scratchpad holds another transformed copy plus about 6.8 MB of tile buffers (measured on 2.6.3).
bool auto_picks_winograd(const ConvLayer& l, bool training, const std::string& algorithm) {
  const bool shape =
      l.kernel == 3 && l.stride == 1 && l.in_channels % 16 == 0 && l.out_channels % 16 == 0;
  // explicit (best may pick it): any batch
  if (algorithm == "winograd" || algorithm == "best") return !training && shape;
  return !training && (algorithm == "default" || algorithm == "auto") && shape && l.batch >= 4;
}
constexpr double kWinoTileBuffers = 6.8e6;
// Training passes consider Winograd only above batch 8 (is_winograd_faster_than_direct).
bool winograd_candidate(const ConvLayer& l, const std::string& algorithm) {
  const bool shape =
      l.kernel == 3 && l.stride == 1 && l.in_channels % 16 == 0 && l.out_channels % 16 == 0;
  if (algorithm == "winograd" || algorithm == "best") return shape;
  return (algorithm == "default" || algorithm == "auto") && shape && l.batch > 8;
}

double plan_memory(const NetPlan& p, bool training, const std::string& algorithm) {
  // bf16: activations and their gradients at 2 bytes; weights f32 masters (in the slab, with f32
  // gradients) plus bf16 copies in training, bf16 only in inference; no Winograd (oneDNN 2.6 has
  // it for f32 only).
  const double a = p.a;
  const double wsize = p.bf16 && !training ? a : kF32;  // slab bytes per weight
  double copies = 0;
  auto act = [&](std::int64_t c, std::int64_t h, std::int64_t w) {
    return static_cast<double>(
        align_up(static_cast<std::size_t>(a * act_elems(p.batch, pad16(c), h, w))));
  };
  auto unit_acts = [&](const ConvLayer& l) {
    // conv output, BN output (ReLU in place), mean and variance.
    return 2 * act(l.out_channels, l.out_h, l.out_w) +
           2 * static_cast<double>(align_up(static_cast<std::size_t>(kF32 * dbl(l.out_channels))));
  };
  double scratch = 0;
  auto unit_weights = [&](const ConvLayer& l) {
    const std::int64_t ci = l.in_channels == 3 ? 3 : pad16(l.in_channels);
    const bool wino = !p.bf16 && auto_picks_winograd(l, training, algorithm);
    const double w = dbl(pad16(l.out_channels) * ci * l.kernel * l.kernel);
    if (p.bf16 && training)
      copies += static_cast<double>(align_up(static_cast<std::size_t>(a * w)));
    const double wino_weights = 36 * kF32 * dbl(l.in_channels * l.out_channels);
    if (wino) scratch = std::max(scratch, wino_weights + kWinoTileBuffers);
    if (training && !p.bf16 && winograd_candidate(l, algorithm)) {
      // Training: whether auto takes Winograd depends on the pass and oneDNN's heuristics;
      // budget its largest scratchpad, backward-weights' (about four transformed weight copies
      // on 2.6.3), as an upper estimate.
      // Explicit winograd runs every pass with it: measured (2.6.3, filters 16-64, image
      // 32-100) about twice the tile buffers where the weights are small.
      const double tiles =
          (algorithm == "winograd" || algorithm == "best" ? 2 : 1) * kWinoTileBuffers;
      scratch = std::max(scratch, std::max(4 * wino_weights, wino_weights + tiles));
    }
    return (wino ? 4.0 : 1.0) * static_cast<double>(align_up(static_cast<std::size_t>(wsize * w))) +
           2 * static_cast<double>(align_up(static_cast<std::size_t>(kF32 * dbl(l.out_channels))));
  };
  const ConvLayer& s = p.stem;
  double m = static_cast<double>(
      align_up(static_cast<std::size_t>(a * act_elems(p.batch, 3, p.image, p.image))));
  m += unit_acts(s) + act(s.out_channels, p.pool_h, p.pool_w);
  const double stem_weights = unit_weights(s);
  double weights = stem_weights;
  double boundary = act(s.out_channels, p.pool_h, p.pool_w);
  std::vector<double> slot(4, 0.0);  // d0, d1, d2: main positions; d3: projection
  slot[0] = act(s.out_channels, s.out_h, s.out_w);
  double t = 0;
  for (const auto& b : p.blocks) {
    for (std::size_t i = 0; i < b.main.size(); ++i) {
      const auto& l = b.main[i];
      m += unit_acts(l);
      weights += unit_weights(l);
      slot[i] = std::max(slot[i], act(l.out_channels, l.out_h, l.out_w));
    }
    if (b.proj) {
      const auto& l = *b.proj;
      m += unit_acts(l);
      weights += unit_weights(l);
      slot[3] = std::max(slot[3], act(l.out_channels, l.out_h, l.out_w));
      t = std::max(t, act(l.in_channels, l.in_h, l.in_w));
    }
    const auto& last = b.main.back();
    boundary = std::max(boundary, act(last.out_channels, last.out_h, last.out_w));
  }
  const auto small = [](double elems, double size) {
    return static_cast<double>(align_up(static_cast<std::size_t>(size * elems)));
  };
  const double nc = dbl(p.batch) * dbl(p.features), no = dbl(p.batch) * dbl(p.classes);
  const double dense = dbl(p.features) * dbl(p.classes);
  weights += small(dense, wsize) + small(dbl(p.classes), kF32);
  if (p.bf16 && training) copies += small(dense, a);
  // pooled features, logits, probabilities
  m += small(nc, a) + 2 * small(no, kF32) + weights + copies + scratch;
  if (!training) return m;
  // Max-pool workspace (u8), gradients of the weights, gradient buffers, labels.
  m += static_cast<double>(align_up(
      static_cast<std::size_t>(act_elems(p.batch, pad16(s.out_channels), p.pool_h, p.pool_w))));
  // Backward-data copies of the weights where its kernel wants another blocking (upper
  // estimate: every convolution but the stem, which has no backward-data pass), at `a` bytes.
  m += weights + (weights - stem_weights) * (a / kF32) + 2 * boundary + slot[0] + slot[1] +
       slot[2] + slot[3] + t;
  m += small(nc, a) + small(no, a) + small(dbl(p.batch), kF32);
  return m;
}

// ---- oneDNN building blocks ------------------------------------------------------------------

dnnl::algorithm conv_algorithm(const std::string& name) {
  // best starts from auto (its default candidate) and searches per layer pass (Net::conv_pd).
  if (name == "default" || name == "auto" || name == "best")
    return dnnl::algorithm::convolution_auto;
  if (name == "direct") return dnnl::algorithm::convolution_direct;
  if (name == "winograd") return dnnl::algorithm::convolution_winograd;
  throw Unsupported(
      fmt::format("cnn: algorithm '{}' is not one of default, auto, direct, winograd, best", name));
}

// Counter-based uniform numbers: the same values however TBB splits the range.
float uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (stream << 40) + i + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

void fill_uniform(float* p, std::size_t n, float lo, float hi, std::uint64_t seed,
                  std::uint64_t stream) {
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, n, 1 << 14), [&](const auto& r) {
    for (std::size_t i = r.begin(); i != r.end(); ++i) {
      p[i] = lo + (hi - lo) * uniform01(seed, stream, i);
    }
  });
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// One executed primitive (or host function) with what the profile records about it.
struct Op {
  std::optional<dnnl::primitive> prim;
  std::unordered_map<int, memory> args;
  std::function<void()> host;
  std::int64_t layer = -1;
  std::string op;
  std::string phase;
  std::string impl;
  double flops = 0;
  double bytes = 0;
};

// A weight tensor (or bias, BN scale/shift) in the slab, with its plain form for init/readout.
// bf16 training (mixed precision): `value` is the f32 master (in the layout of its f32 gradient),
// `copy` the bf16 tensor the primitives read, rounded from the master after every update.
struct Param {
  memory value;
  memory grad;
  memory copy;
  bool has_copy = false;
  [[nodiscard]] const memory& read() const { return has_copy ? copy : value; }
  memory::dims plain_dims;
  Tag plain_tag = Tag::undef;
  float init_bound = 0;  // uniform in [-bound, bound] when > 0, else init_value everywhere
  float init_value = 0;
};

// An activation: its layout and storage (an allocated buffer, bound after the build).
struct Act {
  memory::desc md;
  memory mem;
};

// conv + BN (+ ReLU) as built: what the backward pass needs.
struct Unit {
  ConvLayer shape;
  std::int64_t conv_layer = 0, bn_layer = 0, relu_layer = -1;
  dnnl::convolution_forward::primitive_desc conv_pd;
  dnnl::batch_normalization_forward::primitive_desc bn_pd;
  std::optional<dnnl::eltwise_forward::primitive_desc> relu_pd;
  std::size_t weights = 0, scale = 0, shift = 0;  // indices into Net::params
  Act conv_out;                                   // BN src
  Act out;                                        // BN dst, ReLU applied in place
  memory mean, var;
};

// Storage regions: each memory is created without a handle and bound once all sizes are known,
// so shared buffers can be sized to their largest user.
class Net {
 public:
  Net(bool training, const std::string& algorithm, bool bf16 = false)
      : training_(training),
        alg_(conv_algorithm(algorithm)),
        alg_name_(algorithm),
        best_(algorithm == "best"),
        bf16_(bf16),
        a_(bf16 ? 2.0 : kF32),
        adt_(bf16 ? Dt::bf16 : Dt::f32) {
    attr_.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  }

  // Data type of activations, their gradients and the weights the primitives read.
  [[nodiscard]] Dt adt() const { return adt_; }
  [[nodiscard]] double act_bytes() const { return a_; }
  // bf16 training: weights get f32 masters and bf16 copies.
  [[nodiscard]] bool copies() const { return bf16_ && training_; }

  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::vector<Op> fwd;
  std::vector<std::vector<Op>> bwd_groups;  // built in forward order, run in reverse
  std::vector<Op> update;
  std::vector<Param> params;
  std::vector<memory> bn_variances;
  std::int64_t next_layer = 0;

  [[nodiscard]] bool training() const { return training_; }

  int region(const std::string& name) {
    auto [it, fresh] = region_index_.try_emplace(name, static_cast<int>(regions_.size()));
    if (fresh) regions_.push_back({});
    return it->second;
  }
  int new_region() {
    regions_.push_back({});
    return static_cast<int>(regions_.size()) - 1;
  }
  // A memory at `offset` of region r; the region grows to hold it.
  memory bind(const memory::desc& md, int r, std::size_t offset = 0) {
    memory m(md, eng, DNNL_MEMORY_NONE);
    regions_[static_cast<std::size_t>(r)].size =
        std::max(regions_[static_cast<std::size_t>(r)].size, offset + align_up(md.get_size()));
    bindings_.push_back({m, r, offset});
    return m;
  }
  memory owned(const memory::desc& md) { return bind(md, new_region()); }

  // Adds a weight tensor to the slab (and its gradient to the gradient slab).
  std::size_t add_param(const memory::desc& md, memory::dims plain, Tag tag, float init_bound,
                        float init_value) {
    if (weights_region_ < 0) {
      weights_region_ = new_region();
      if (training_) grads_region_ = new_region();
    }
    Param p;
    p.value = bind(md, weights_region_, slab_size_);
    if (training_) p.grad = bind(md, grads_region_, slab_size_);
    slab_size_ += align_up(md.get_size());
    p.plain_dims = std::move(plain);
    p.plain_tag = tag;
    p.init_bound = init_bound;
    p.init_value = init_value;
    params.push_back(std::move(p));
    return params.size() - 1;
  }

  // A conv or dense weight tensor whose primitives read `md`. With copies(), `md` is the bf16
  // copy; its f32 master and gradient join the slab once the backward-weights primitive has
  // chosen their layout (set_master).
  std::size_t add_weights(const memory::desc& md, memory::dims plain, Tag tag, float init_bound) {
    if (!copies()) return add_param(md, std::move(plain), tag, init_bound, 0.f);
    Param p;
    p.copy = owned(md);
    p.has_copy = true;
    p.plain_dims = std::move(plain);
    p.plain_tag = tag;
    p.init_bound = init_bound;
    params.push_back(std::move(p));
    return params.size() - 1;
  }
  void set_master(std::size_t index, const memory::desc& f32_md) {
    if (weights_region_ < 0) {
      weights_region_ = new_region();
      grads_region_ = new_region();
    }
    Param& p = params[index];
    p.value = bind(f32_md, weights_region_, slab_size_);
    p.grad = bind(f32_md, grads_region_, slab_size_);
    slab_size_ += align_up(f32_md.get_size());
  }
  // The descriptor of a weight gradient: the weights' own layout (f32), or f32 in the layout
  // oneDNN picks (copies()), which the master then takes.
  [[nodiscard]] memory::desc diff_weights_md(const Param& p) const {
    if (!p.has_copy) return p.value.get_desc();
    return {p.plain_dims, Dt::f32, Tag::any};
  }

  // Binds the primitive's scratchpad (if any) to the shared scratchpad region.
  template <typename PD>
  void add_scratchpad(Op& op, const PD& pd) {
    const memory::desc sd = pd.scratchpad_desc();
    if (sd.get_size() == 0) return;
    if (scratch_region_ < 0) scratch_region_ = new_region();
    op.args[DNNL_ARG_SCRATCHPAD] = bind(sd, scratch_region_);
  }

  template <typename PD>
  Op make_op(const PD& pd, std::int64_t layer, std::string op, std::string phase, double flops,
             double bytes, std::unordered_map<int, memory> args) {
    Op o;
    o.prim = dnnl::primitive(pd.get());
    o.args = std::move(args);
    o.layer = layer;
    o.op = std::move(op);
    o.phase = std::move(phase);
    o.impl = pd.impl_info_str();
    o.flops = flops;
    o.bytes = bytes;
    add_scratchpad(o, pd);
    return o;
  }

  const dnnl::primitive_attr& attr() const { return attr_; }

  // Convolution primitive descriptors; a non-default algorithm that oneDNN cannot build for a
  // layer is Unsupported, naming the layer. Winograd is the exception: oneDNN has it only for
  // some layers (3x3 stride 1, channels in 16s, avx512_core), so each pass of each convolution
  // takes it where oneDNN builds it and runs direct otherwise; /ops impl shows which ran
  // (jit_wino_4x3 vs jit). A model where no pass gets it is Unsupported (require_winograd()).
  template <typename F>
  auto conv_pd(const ConvLayer& l, const char* what, F&& make,
               const memory::desc* fwd_weights = nullptr) {
    if (best_) return conv_pd_best(l, what, make, fwd_weights);
    if (alg_ == dnnl::algorithm::convolution_winograd) {
      if (l.kernel == 3 && l.stride == 1) {
        try {
          auto pd = make(alg_);
          ++winograd_passes_;
          return pd;
        } catch (const dnnl::error&) {  // no kernel for this shape or pass: direct below
        }
      }
      return conv_pd_with(dnnl::algorithm::convolution_direct, "direct", l, what, make);
    }
    return conv_pd_with(alg_, alg_name_, l, what, make);
  }
  // algorithm best: candidates auto (the default), direct and, for 3x3 stride 1, winograd;
  // ranked by the roofline model (Winograd: FLOPs / 2.25), pruned above 2x the best prediction
  // (auto never: it is what default runs), the survivors measured on this layer pass in isolation
  // (same threads, `any` layouts as in the model, the backward-data weights reorder included when
  // the candidate's kernel wants another weights blocking than the forward's `fwd_weights`), the
  // fastest kept. Decisions are cached (worker/best_mode.hpp); the choice goes into /ops impl.
  template <typename F>
  auto conv_pd_best(const ConvLayer& l, const char* what, F&& make,
                    const memory::desc* fwd_weights) {
    using PD = decltype(make(dnnl::algorithm::convolution_auto));
    const std::string w = what;
    const std::string pass = w == "forward" ? (training_ ? "forward_training" : "forward_inference")
                             : w == "backward-data" ? "backward_data"
                                                    : "backward_weights";
    const best::LayerKey key = best::make_key("conv",
                                              {{"mb", l.batch},
                                               {"ic", l.in_channels},
                                               {"oc", l.out_channels},
                                               {"ih", l.in_h},
                                               {"iw", l.in_w},
                                               {"kh", l.kernel},
                                               {"kw", l.kernel},
                                               {"sh", l.stride},
                                               {"sw", l.stride},
                                               {"ph", l.pad},
                                               {"pw", l.pad}},
                                              pass, bf16_ ? "bf16" : "f32");
    std::vector<std::string> names{"auto", "direct"};
    if (l.kernel == 3 && l.stride == 1) names.emplace_back("winograd");
    if (auto d = best::cache().find(key.str());
        d && std::find(names.begin(), names.end(), d->algorithm) != names.end()) {
      try {
        PD pd = make(conv_algorithm(d->algorithm));
        best::record(key, *d, true);
        last_choice_ = d->algorithm;
        return pd;
      } catch (const dnnl::error&) {  // not buildable any more: search again
      }
    }
    const int threads = key.threads;
    const double direct = best::roofline_s(l.forward_flops(), conv_bytes(l, a_), threads);
    std::map<std::string, double> predicted{{"direct", direct}, {"auto", direct}};
    if (names.size() > 2) {
      predicted["winograd"] = best::roofline_s(l.forward_flops() / best::kWinogradReduction,
                                               conv_bytes(l, a_), threads);
      predicted["auto"] = std::min(direct, predicted["winograd"]);  // auto runs one of the two
    }
    std::vector<PD> pds;
    std::vector<best::Candidate> cands;
    std::vector<std::pair<std::string, memory::desc>> seen;  // (impl, weights) already a candidate
    for (const auto& name : best::survivors(predicted, "auto")) {
      std::optional<PD> pd;
      if (name == "auto") {
        pd = make(dnnl::algorithm::convolution_auto);  // as default: its failure is the model's
      } else {
        try {
          pd = make(conv_algorithm(name));
        } catch (const dnnl::error&) {  // no kernel for this layer pass
          continue;
        }
      }
      // auto resolves to one of the others: the same kernel on the same layouts is measured once.
      const std::string impl = pd->impl_info_str();
      const memory::desc wd = pd->weights_desc();
      if (std::any_of(seen.begin(), seen.end(),
                      [&](const auto& s) { return s.first == impl && s.second == wd; })) {
        continue;
      }
      seen.emplace_back(impl, wd);
      cands.push_back({name, predicted[name], isolated_run(*pd, fwd_weights)});
      pds.push_back(std::move(*pd));
    }
    if (cands.empty())
      return conv_pd_with(dnnl::algorithm::convolution_direct, "direct", l, what, make);
    const best::Decision d = best::measure_and_choose(cands, "auto");
    best::record(key, d, false);
    last_choice_ = d.algorithm;
    for (std::size_t i = 0; i < cands.size(); ++i) {
      if (cands[i].algorithm == d.algorithm) return pds[i];
    }
    return pds.front();
  }

  // One execution of a convolution pass on its own buffers (zeros), waited; plus the weights
  // reorder the model would run before it (backward data, another weights blocking).
  template <typename PD>
  std::function<void()> isolated_run(const PD& pd, const memory::desc* fwd_weights) {
    std::unordered_map<int, memory> args;
    for (int arg : {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC,
                    DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST, DNNL_ARG_SCRATCHPAD}) {
      const memory::desc md = pd.query_md(dnnl::query::exec_arg_md, arg);
      if (md.get_size() == 0) continue;
      memory m(md, eng);
      std::memset(m.get_data_handle(), 0, md.get_size());
      args[arg] = m;
    }
    std::optional<dnnl::reorder> rd;
    memory rsrc;
    if (fwd_weights != nullptr && pd.weights_desc() != *fwd_weights) {
      rsrc = memory(*fwd_weights, eng);
      std::memset(rsrc.get_data_handle(), 0, fwd_weights->get_size());
      rd = dnnl::reorder(rsrc, args.at(DNNL_ARG_WEIGHTS));
    }
    dnnl::primitive prim(pd.get());
    return [this, prim, args, rd, rsrc]() mutable {
      if (rd) rd->execute(strm, rsrc, args.at(DNNL_ARG_WEIGHTS));
      prim.execute(strm, args);
      strm.wait();
    };
  }

  // "best:winograd " before the impl of a convolution op the search chose (algorithm best).
  void tag_choice(Op& op) const {
    if (best_) op.impl = fmt::format("best:{} {}", last_choice_, op.impl);
  }
  [[nodiscard]] bool best() const { return best_; }

  template <typename F>
  auto conv_pd_with(dnnl::algorithm alg, const std::string& alg_name, const ConvLayer& l,
                    const char* what, F&& make) {
    try {
      return make(alg);
    } catch (const dnnl::error& e) {
      if (alg == dnnl::algorithm::convolution_auto) throw;
      throw Unsupported(fmt::format(
          "cnn: oneDNN cannot build a {} convolution {} for layer {} ({}x{} stride {}, {}->{} "
          "channels, {}x{} input): {}",
          alg_name, what, l.name, l.kernel, l.kernel, l.stride, l.in_channels, l.out_channels,
          l.in_h, l.in_w, e.what()));
    }
  }

  // Allocates every region and binds the memories; returns the bytes allocated.
  double finalize() {
    if (training_ && slab_size_ > 0) build_update();
    double total = 0;
    storage_.clear();
    for (auto& r : regions_) {
      const std::size_t n = align_up(std::max<std::size_t>(r.size, kAlign));
      void* p = std::aligned_alloc(kAlign, n);
      if (p == nullptr) throw std::bad_alloc();
      std::memset(p, 0, n);  // zero padding of blocked layouts; also faults the pages in
      r.data = p;
      storage_.emplace_back(p);
      total += static_cast<double>(n);
    }
    for (auto& b : bindings_) {
      b.mem.set_data_handle(static_cast<char*>(regions_[static_cast<std::size_t>(b.region)].data) +
                            b.offset);
    }
    return total;
  }

  // Writes a plain host tensor into a (possibly blocked) memory, or reads it back.
  void write(memory dst, const float* src, const memory::dims& dims, Tag tag) {
    memory plain({dims, Dt::f32, tag}, eng, const_cast<float*>(src));  // NOLINT
    dnnl::reorder(plain, dst).execute(strm, plain, dst);
    strm.wait();
  }
  std::vector<float> read(memory src, const memory::dims& dims, Tag tag) {
    std::size_t n = 1;
    for (auto d : dims) n *= static_cast<std::size_t>(d);
    std::vector<float> out(n);
    memory plain({dims, Dt::f32, tag}, eng, out.data());
    dnnl::reorder(src, plain).execute(strm, src, plain);
    strm.wait();
    return out;
  }

  static void run(Op& op, dnnl::stream& s) {
    if (op.host) {
      op.host();
    } else {
      op.prim->execute(s, op.args);
    }
  }

  // ---- Layers ----

  // conv + BN (+ ReLU) on `x`; pushes the forward ops and returns the built unit.
  Unit unit(const ConvLayer& l, const Act& x) {
    Unit u;
    u.shape = l;
    const memory::dims strides{l.stride, l.stride}, pad{l.pad, l.pad};
    const memory::desc w_any({l.out_channels, l.in_channels, l.kernel, l.kernel}, adt_, Tag::any);
    const memory::desc dst_any({l.batch, l.out_channels, l.out_h, l.out_w}, adt_, Tag::any);
    const auto prop =
        training_ ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    u.conv_pd = conv_pd(l, "forward", [&](dnnl::algorithm a) {
      return dnnl::convolution_forward::primitive_desc(
          {prop, a, x.md, w_any, dst_any, strides, pad, pad}, attr_, eng);
    });
    u.conv_layer = next_layer++;
    // He-uniform: the BN right after makes the scale matter little, but keep activations sane.
    const float bound = std::sqrt(6.0f / static_cast<float>(l.in_channels * l.kernel * l.kernel));
    u.weights = add_weights(u.conv_pd.weights_desc(),
                            {l.out_channels, l.in_channels, l.kernel, l.kernel}, Tag::oihw, bound);
    u.conv_out = {u.conv_pd.dst_desc(), owned(u.conv_pd.dst_desc())};
    fwd.push_back(make_op(u.conv_pd, u.conv_layer, "convolution", "forward", l.forward_flops(),
                          conv_bytes(l, a_),
                          {{DNNL_ARG_SRC, x.mem},
                           {DNNL_ARG_WEIGHTS, params[u.weights].read()},
                           {DNNL_ARG_DST, u.conv_out.mem}}));
    tag_choice(fwd.back());

    const memory::desc& md = u.conv_out.md;
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    if (!training_) flags = flags | dnnl::normalization_flags::use_global_stats;
    u.bn_pd = dnnl::batch_normalization_forward::primitive_desc({prop, md, cnn::kBnEpsilon, flags},
                                                                attr_, eng);
    u.bn_layer = next_layer++;
    const memory::desc c_md({l.out_channels}, Dt::f32, Tag::x);
    u.scale = add_param(c_md, {l.out_channels}, Tag::x, 0.f, 1.f);
    u.shift = add_param(c_md, {l.out_channels}, Tag::x, 0.f, 0.f);
    u.out = {md, owned(md)};
    u.mean = owned(u.bn_pd.mean_desc());
    u.var = owned(u.bn_pd.variance_desc());
    bn_variances.push_back(u.var);
    const double e = dst_elems(l);
    fwd.push_back(make_op(u.bn_pd, u.bn_layer, "batch_norm", "forward", 0,
                          bn_fwd_bytes(e, l.out_channels, a_),
                          {{DNNL_ARG_SRC, u.conv_out.mem},
                           {DNNL_ARG_DST, u.out.mem},
                           {DNNL_ARG_SCALE, params[u.scale].value},
                           {DNNL_ARG_SHIFT, params[u.shift].value},
                           {DNNL_ARG_MEAN, u.mean},
                           {DNNL_ARG_VARIANCE, u.var}}));
    if (l.relu) {
      u.relu_layer = next_layer++;
      u.relu_pd = relu(u.out, u.relu_layer);
    }
    return u;
  }

  // In-place ReLU forward on `a`.
  dnnl::eltwise_forward::primitive_desc relu(const Act& a, std::int64_t layer) {
    const auto prop =
        training_ ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    dnnl::eltwise_forward::primitive_desc pd(
        {prop, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, a.md, 0.f, 0.f}, attr_, eng);
    fwd.push_back(make_op(pd, layer, "eltwise", "forward", 0, relu_fwd_bytes(elems(a.md), a_),
                          {{DNNL_ARG_SRC, a.mem}, {DNNL_ARG_DST, a.mem}}));
    return pd;
  }

  static double elems(const memory::desc& md) {
    double n = 1;
    for (auto d : md.dims()) n *= dbl(d);
    return n;
  }

  // In-place ReLU backward on `diff` (gradient at the ReLU output, replaced by its input's).
  void relu_backward(std::vector<Op>& group, const dnnl::eltwise_forward::primitive_desc& fwd_pd,
                     const Act& out, const memory& diff, std::int64_t layer) {
    dnnl::eltwise_backward::primitive_desc pd(
        {dnnl::algorithm::eltwise_relu_use_dst_for_bwd, out.md, out.md, 0.f, 0.f}, attr_, eng,
        fwd_pd);
    group.push_back(
        make_op(pd, layer, "eltwise", "backward_data", 0, relu_bwd_bytes(elems(out.md), a_),
                {{DNNL_ARG_DST, out.mem}, {DNNL_ARG_DIFF_DST, diff}, {DNNL_ARG_DIFF_SRC, diff}}));
  }

  // Backward of a unit. The gradient at its output arrives in `diff_in`; if that is not `d` (the
  // unit's own gradient buffer) it is left intact (the block's last BN reads the add's gradient,
  // which the shortcut still needs). `diff_x` receives the gradient of the unit's input (none for
  // the stem).
  void unit_backward(std::vector<Op>& group, const Unit& u, const Act& x, const memory& diff_in,
                     const memory& d, const std::optional<memory>& diff_x) {
    const ConvLayer& l = u.shape;
    const double e = dst_elems(l);
    if (u.relu_pd) relu_backward(group, *u.relu_pd, u.out, diff_in, u.relu_layer);
    const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    dnnl::batch_normalization_backward::primitive_desc bn_pd(
        {dnnl::prop_kind::backward, u.out.md, u.conv_out.md, cnn::kBnEpsilon, flags}, attr_, eng,
        u.bn_pd);
    group.push_back(make_op(bn_pd, u.bn_layer, "batch_norm", "backward_data", 0,
                            bn_bwd_bytes(e, l.out_channels, a_),
                            {{DNNL_ARG_SRC, u.conv_out.mem},
                             {DNNL_ARG_MEAN, u.mean},
                             {DNNL_ARG_VARIANCE, u.var},
                             {DNNL_ARG_SCALE, params[u.scale].value},
                             {DNNL_ARG_SHIFT, params[u.shift].value},
                             {DNNL_ARG_DIFF_DST, diff_in},
                             {DNNL_ARG_DIFF_SRC, d},
                             {DNNL_ARG_DIFF_SCALE, params[u.scale].grad},
                             {DNNL_ARG_DIFF_SHIFT, params[u.shift].grad}}));
    const memory::dims strides{l.stride, l.stride}, pad{l.pad, l.pad};
    const memory::desc dw_md = diff_weights_md(params[u.weights]);
    auto bw_pd = conv_pd(l, "backward-weights", [&](dnnl::algorithm a) {
      return dnnl::convolution_backward_weights::primitive_desc(
          {a, x.md, dw_md, u.conv_out.md, strides, pad, pad}, attr_, eng, u.conv_pd);
    });
    if (params[u.weights].has_copy) set_master(u.weights, bw_pd.diff_weights_desc());
    const memory::desc w_md = params[u.weights].read().get_desc();
    group.push_back(make_op(bw_pd, u.conv_layer, "convolution", "backward_weights",
                            l.forward_flops(), conv_bwd_weights_bytes(l, a_),
                            {{DNNL_ARG_SRC, x.mem},
                             {DNNL_ARG_DIFF_DST, d},
                             {DNNL_ARG_DIFF_WEIGHTS, params[u.weights].grad}}));
    tag_choice(group.back());
    if (!diff_x) return;
    // The backward-data kernels may want the weights in another blocking than the forward pass
    // (direct jit: OIhw16o16i vs OIhw16i16o); then they get a copy, reordered every step.
    const memory::desc w_any({l.out_channels, l.in_channels, l.kernel, l.kernel}, adt_, Tag::any);
    auto bd_pd = conv_pd(
        l, "backward-data",
        [&](dnnl::algorithm a) {
          return dnnl::convolution_backward_data::primitive_desc(
              {a, x.md, w_any, u.conv_out.md, strides, pad, pad}, attr_, eng, u.conv_pd);
        },
        &w_md);
    memory w_bwd = params[u.weights].read();
    if (bd_pd.weights_desc() != w_md) {
      w_bwd = owned(bd_pd.weights_desc());
      dnnl::reorder::primitive_desc rpd(eng, w_md, eng, bd_pd.weights_desc(), attr_);
      group.push_back(make_op(rpd, u.conv_layer, "reorder", "backward_data", 0,
                              2 * a_ * dbl(l.weight_count()),
                              {{DNNL_ARG_FROM, params[u.weights].read()}, {DNNL_ARG_TO, w_bwd}}));
    }
    group.push_back(make_op(
        bd_pd, u.conv_layer, "convolution", "backward_data", l.forward_flops(), conv_bytes(l, a_),
        {{DNNL_ARG_DIFF_DST, d}, {DNNL_ARG_WEIGHTS, w_bwd}, {DNNL_ARG_DIFF_SRC, *diff_x}}));
    tag_choice(group.back());
  }

  // dst = src0 + src1 (dst may be src0).
  Op add(const Act& src0, const Act& src1, const memory& dst, std::int64_t layer,
         const char* phase) {
    dnnl::binary::primitive_desc pd({dnnl::algorithm::binary_add, src0.md, src1.md, src0.md}, attr_,
                                    eng);
    return make_op(pd, layer, "binary", phase, 0, add_bytes(elems(src0.md), a_),
                   {{DNNL_ARG_SRC_0, src0.mem}, {DNNL_ARG_SRC_1, src1.mem}, {DNNL_ARG_DST, dst}});
  }

  // One block on `x`, whose input gradient goes to region `diff_x_region` and whose output
  // gradient arrives in region `diff_y_region`. Returns the block output.
  Act block(const BlockPlan& b, const Act& x, int diff_x_region, int diff_y_region) {
    std::vector<Unit> units;
    std::vector<Act> inputs;
    Act cur = x;
    for (const auto& l : b.main) {
      inputs.push_back(cur);
      units.push_back(unit(l, cur));
      cur = units.back().out;
    }
    std::optional<Unit> proj;
    Act shortcut = x;
    if (b.proj) {
      proj = unit(*b.proj, x);
      shortcut = proj->out;
    }
    const std::int64_t add_layer = next_layer++;
    fwd.push_back(add(cur, shortcut, cur.mem, add_layer, "forward"));
    const std::int64_t relu_layer = next_layer++;
    const auto relu_pd = relu(cur, relu_layer);
    if (!training_) return cur;

    std::vector<Op> group;
    const memory dy = bind(cur.md, diff_y_region);
    const memory dx = bind(x.md, diff_x_region);
    relu_backward(group, relu_pd, cur, dy, relu_layer);  // dy now holds the add's gradient
    std::vector<memory> d;
    for (std::size_t i = 0; i < units.size(); ++i) {
      d.push_back(bind(units[i].out.md, region(fmt::format("diff.d{}", i))));
    }
    std::optional<memory> t;
    if (proj) {
      // Shortcut first: it writes dx, the main path's input gradient is added after.
      const memory dp = bind(proj->out.md, region("diff.d3"));
      unit_backward(group, *proj, x, dy, dp, dx);
      t = bind(x.md, region("diff.t"));
    }
    for (std::size_t i = units.size(); i-- > 0;) {
      const bool last = i + 1 == units.size();
      const memory& diff_in = last ? dy : d[i];
      const memory diff_x = i > 0 ? d[i - 1] : (proj ? *t : dx);
      unit_backward(group, units[i], inputs[i], diff_in, d[i], diff_x);
    }
    // Fan-in at the block input: dx += (projection path ? main-path gradient : add's gradient).
    if (proj) {
      group.push_back(add({x.md, dx}, {x.md, *t}, dx, add_layer, "backward_data"));
    } else {
      group.push_back(add({x.md, dx}, {cur.md, dy}, dx, add_layer, "backward_data"));
    }
    bwd_groups.push_back(std::move(group));
    return cur;
  }

  // The sum primitive of the SGD update over the whole weight slab: w = w - lr * dw.
  void build_update() {
    const memory::desc md({static_cast<memory::dim>(slab_size_ / sizeof(float))}, Dt::f32, Tag::x);
    dnnl::sum::primitive_desc pd(md, {1.f, -cnn::kLearningRate}, {md, md}, eng, attr_);
    const memory wm = bind(md, weights_region_), gm = bind(md, grads_region_);
    update.push_back(make_op(
        pd, -1, "update", "update", 0, update_bytes_,
        {{DNNL_ARG_MULTIPLE_SRC, wm}, {DNNL_ARG_MULTIPLE_SRC + 1, gm}, {DNNL_ARG_DST, wm}}));
    // Mixed precision: the updated f32 masters rounded into the bf16 copies for the next step.
    for (const Param& p : params) {
      if (!p.has_copy) continue;
      double n = 1;
      for (auto d : p.plain_dims) n *= dbl(d);
      dnnl::reorder::primitive_desc rpd(eng, p.value.get_desc(), eng, p.copy.get_desc(), attr_);
      update.push_back(make_op(rpd, -1, "reorder", "update", 0, (kF32 + a_) * n,
                               {{DNNL_ARG_FROM, p.value}, {DNNL_ARG_TO, p.copy}}));
    }
  }

  double update_bytes_ = 0;

 private:
  struct Region {
    std::size_t size = 0;
    void* data = nullptr;
  };
  struct Binding {
    memory mem;
    int region;
    std::size_t offset;
  };
  bool training_;
  dnnl::algorithm alg_;
  std::string alg_name_;
  int winograd_passes_ = 0;  // convolution passes built with Winograd (algorithm winograd)
  bool best_ = false;        // algorithm best: per layer pass search (conv_pd_best)
  bool bf16_ = false;        // dtype bf16 (mixed precision in training)
  double a_ = kF32;          // bytes per activation element
  Dt adt_ = Dt::f32;
  std::string last_choice_;  // what the last conv_pd_best chose

 public:
  // algorithm winograd where oneDNN has Winograd for none of the model's convolutions would be
  // direct under another name: Unsupported instead.
  void require_winograd() const {
    if (alg_ != dnnl::algorithm::convolution_winograd || winograd_passes_ > 0) return;
    throw Unsupported(
        "cnn: algorithm winograd: oneDNN builds Winograd for none of this model's convolutions "
        "(it has F(4x4, 3x3) for 3x3 stride-1 convolutions with channels in multiples of 16 on "
        "avx512_core); all would run direct");
  }

 private:
  dnnl::primitive_attr attr_;
  std::vector<Region> regions_;
  std::unordered_map<std::string, int> region_index_;
  std::vector<Binding> bindings_;
  std::vector<std::unique_ptr<void, FreeDeleter>> storage_;
  int weights_region_ = -1, grads_region_ = -1, scratch_region_ = -1;
  std::size_t slab_size_ = 0;
};

// Initial values from the plain shape; the stream id keeps every tensor's numbers distinct.
void init_param(Net& net, const Param& p, std::uint64_t seed, std::uint64_t stream) {
  std::size_t n = 1;
  for (auto d : p.plain_dims) n *= static_cast<std::size_t>(d);
  std::vector<float> h(n, p.init_value);
  if (p.init_bound > 0) fill_uniform(h.data(), n, -p.init_bound, p.init_bound, seed, stream);
  net.write(p.value, h.data(), p.plain_dims, p.plain_tag);
  if (p.has_copy) {
    memory from = p.value, to = p.copy;
    dnnl::reorder(from, to).execute(net.strm, from, to);
    net.strm.wait();
  }
}

// ---- The model --------------------------------------------------------------------------------

class CnnModel final : public Model {
 public:
  CnnModel(const space::Config& config, std::uint64_t seed)
      : plan_(make_plan(config)),
        net_(config.knobs.mode == "training", config.knobs.algorithm, plan_.bf16),
        counts_(cnn_counts(config)) {
    build(seed);
  }

  void step() override {
    for (auto& op : net_.fwd) Net::run(op, net_.strm);
    if (net_.training()) {
      for (auto g = net_.bwd_groups.rbegin(); g != net_.bwd_groups.rend(); ++g) {
        for (auto& op : *g) Net::run(op, net_.strm);
      }
      for (auto& op : net_.update) Net::run(op, net_.strm);
    }
    net_.strm.wait();
  }

  [[nodiscard]] const ModelCounts& counts() const override { return counts_; }
  [[nodiscard]] double last_loss() const override { return last_loss_; }

  std::vector<store::OpRecord> profile_step() override {
    std::vector<store::OpRecord> out;
    auto timed = [&](Op& op) {
      const auto t0 = std::chrono::steady_clock::now();
      Net::run(op, net_.strm);
      net_.strm.wait();
      const auto t1 = std::chrono::steady_clock::now();
      out.push_back({op.layer, op.op, op.phase, std::chrono::duration<double>(t1 - t0).count(),
                     op.flops, op.bytes, op.impl});
    };
    for (auto& op : net_.fwd) timed(op);
    if (net_.training()) {
      for (auto g = net_.bwd_groups.rbegin(); g != net_.bwd_groups.rend(); ++g) {
        for (auto& op : *g) timed(op);
      }
      for (auto& op : net_.update) timed(op);
    }
    return out;
  }

  [[nodiscard]] std::string impl() const override { return impl_; }

 private:
  void build(std::uint64_t seed) {
    const NetPlan& p = plan_;
    const bool training = net_.training();
    // Input image NCHW (3 channels: the stem convolution reads the plain layout).
    const Dt adt = net_.adt();
    const memory::desc img_md({p.batch, 3, p.image, p.image}, adt, Tag::nchw);
    const Act img{img_md, net_.owned(img_md)};

    // Stem: conv + BN + ReLU, then a 3x3 stride-2 max pool.
    Unit stem = net_.unit(p.stem, img);
    const memory::desc pool_any({p.batch, p.stem.out_channels, p.pool_h, p.pool_w}, adt, Tag::any);
    const auto prop =
        training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    dnnl::pooling_forward::primitive_desc pool_pd(
        {prop, dnnl::algorithm::pooling_max, stem.out.md, pool_any, {2, 2}, {3, 3}, {1, 1}, {1, 1}},
        net_.attr(), net_.eng);
    const std::int64_t pool_layer = net_.next_layer++;
    const Act pooled{pool_pd.dst_desc(), net_.owned(pool_pd.dst_desc())};
    std::optional<memory> ws;
    if (training) ws = net_.owned(pool_pd.workspace_desc());
    const double pool_src = dst_elems(p.stem);
    const double pool_dst = act_elems(p.batch, p.stem.out_channels, p.pool_h, p.pool_w);
    {
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, stem.out.mem},
                                           {DNNL_ARG_DST, pooled.mem}};
      if (ws) args[DNNL_ARG_WORKSPACE] = *ws;
      net_.fwd.push_back(net_.make_op(pool_pd, pool_layer, "pooling", "forward", 0,
                                      maxpool_bytes(pool_src, pool_dst, training, p.a), args));
    }
    if (training) {
      std::vector<Op> g;
      const memory d_pool = net_.bind(pooled.md, net_.region("diff.boundary0"));
      const memory d_stem = net_.bind(stem.out.md, net_.region("diff.d0"));
      dnnl::pooling_backward::primitive_desc pb(
          {dnnl::algorithm::pooling_max, stem.out.md, pooled.md, {2, 2}, {3, 3}, {1, 1}, {1, 1}},
          net_.attr(), net_.eng, pool_pd);
      g.push_back(net_.make_op(
          pb, pool_layer, "pooling", "backward_data", 0,
          maxpool_bytes(pool_src, pool_dst, true, p.a),
          {{DNNL_ARG_DIFF_DST, d_pool}, {DNNL_ARG_DIFF_SRC, d_stem}, {DNNL_ARG_WORKSPACE, *ws}}));
      net_.unit_backward(g, stem, img, d_stem, d_stem, std::nullopt);
      net_.bwd_groups.push_back(std::move(g));
    }

    // The blocks; gradients at block boundaries alternate between two buffers.
    Act x = pooled;
    for (std::size_t k = 0; k < p.blocks.size(); ++k) {
      x = net_.block(p.blocks[k], x, net_.region(fmt::format("diff.boundary{}", k % 2)),
                     net_.region(fmt::format("diff.boundary{}", (k + 1) % 2)));
    }
    const int last_boundary = net_.region(fmt::format("diff.boundary{}", p.blocks.size() % 2));

    // Head: global average pool, dense, softmax; loss and its gradient on the host.
    // Its output keeps the blocks' layout (a plain one makes oneDNN fall back to ref:any).
    const memory::desc feat_any({p.batch, p.features, 1, 1}, adt, Tag::any);
    const memory::dims gstride{1, 1}, gkernel{p.feat_h, p.feat_w}, gpad{0, 0};
    dnnl::pooling_forward::primitive_desc gp_pd({prop, dnnl::algorithm::pooling_avg_include_padding,
                                                 x.md, feat_any, gstride, gkernel, gpad, gpad},
                                                net_.attr(), net_.eng);
    const memory::desc feat_md = gp_pd.dst_desc();
    const std::int64_t gpool_layer = net_.next_layer++;
    const Act feat{feat_md, net_.owned(feat_md)};
    net_.fwd.push_back(net_.make_op(gp_pd, gpool_layer, "pooling", "forward", 0, gpool_bytes(p),
                                    {{DNNL_ARG_SRC, x.mem}, {DNNL_ARG_DST, feat.mem}}));

    const memory::desc w_any({p.classes, p.features, 1, 1}, adt, Tag::any);
    const memory::desc b_md({p.classes}, Dt::f32, Tag::x);
    // Logits and probabilities f32 (softmax and loss in f32); their gradient in `adt`.
    const memory::desc logits_md({p.batch, p.classes}, Dt::f32, Tag::nc);
    const memory::desc dlogits_md({p.batch, p.classes}, adt, Tag::nc);
    dnnl::inner_product_forward::primitive_desc ip_pd({prop, feat_md, w_any, b_md, logits_md},
                                                      net_.attr(), net_.eng);
    const std::int64_t dense_layer = net_.next_layer++;
    // Glorot-uniform weights, zero bias.
    const float glorot = std::sqrt(6.0f / static_cast<float>(p.features + p.classes));
    const std::size_t dense_w =
        net_.add_weights(ip_pd.weights_desc(), {p.classes, p.features, 1, 1}, Tag::oihw, glorot);
    const std::size_t dense_b = net_.add_param(b_md, {p.classes}, Tag::x, 0.f, 0.f);
    const memory logits = net_.owned(logits_md);
    net_.fwd.push_back(net_.make_op(ip_pd, dense_layer, "inner_product", "forward",
                                    dense_fwd_flops(p), dense_fwd_bytes(p),
                                    {{DNNL_ARG_SRC, feat.mem},
                                     {DNNL_ARG_WEIGHTS, net_.params[dense_w].read()},
                                     {DNNL_ARG_BIAS, net_.params[dense_b].value},
                                     {DNNL_ARG_DST, logits}}));
    dnnl::softmax_forward::primitive_desc sm_pd({prop, logits_md, 1}, net_.attr(), net_.eng);
    const std::int64_t softmax_layer = net_.next_layer++;
    const memory probs = net_.owned(logits_md);
    net_.fwd.push_back(net_.make_op(sm_pd, softmax_layer, "softmax", "forward", 0, softmax_bytes(p),
                                    {{DNNL_ARG_SRC, logits}, {DNNL_ARG_DST, probs}}));

    std::optional<memory> dlogits;
    memory labels_mem;
    if (training) {
      std::vector<Op> g;
      const std::int64_t loss_layer = net_.next_layer++;
      dlogits = net_.owned(dlogits_md);
      labels_mem = net_.owned(memory::desc({p.batch}, Dt::s32, Tag::x));
      Op loss;
      loss.layer = loss_layer;
      loss.op = "loss";
      loss.phase = "backward_data";
      loss.impl = "host:tbb";
      loss.bytes = loss_bytes(p);
      loss.host = [this, probs, dl = *dlogits, labels_mem, n = p.batch, c = p.classes]() {
        last_loss_ = softmax_xent(probs, dl, labels_mem, n, c);
      };
      g.push_back(std::move(loss));
      const Act dfeat{feat_md, net_.owned(feat_md)};
      dnnl::inner_product_backward_data::primitive_desc bd(
          {feat_md, ip_pd.weights_desc(), dlogits_md}, net_.attr(), net_.eng, ip_pd);
      g.push_back(net_.make_op(bd, dense_layer, "inner_product", "backward_data",
                               dense_fwd_flops(p), dense_bwd_data_bytes(p),
                               {{DNNL_ARG_DIFF_DST, *dlogits},
                                {DNNL_ARG_WEIGHTS, net_.params[dense_w].read()},
                                {DNNL_ARG_DIFF_SRC, dfeat.mem}}));
      dnnl::inner_product_backward_weights::primitive_desc bw(
          {feat_md, net_.diff_weights_md(net_.params[dense_w]), b_md, dlogits_md}, net_.attr(),
          net_.eng, ip_pd);
      if (net_.params[dense_w].has_copy) net_.set_master(dense_w, bw.diff_weights_desc());
      g.push_back(net_.make_op(bw, dense_layer, "inner_product", "backward_weights",
                               dense_fwd_flops(p), dense_bwd_weights_bytes(p),
                               {{DNNL_ARG_SRC, feat.mem},
                                {DNNL_ARG_DIFF_DST, *dlogits},
                                {DNNL_ARG_DIFF_WEIGHTS, net_.params[dense_w].grad},
                                {DNNL_ARG_DIFF_BIAS, net_.params[dense_b].grad}}));
      dnnl::pooling_backward::primitive_desc gb({dnnl::algorithm::pooling_avg_include_padding, x.md,
                                                 feat_md, gstride, gkernel, gpad, gpad},
                                                net_.attr(), net_.eng, gp_pd);
      g.push_back(net_.make_op(
          gb, gpool_layer, "pooling", "backward_data", 0, gpool_bytes(p),
          {{DNNL_ARG_DIFF_DST, dfeat.mem}, {DNNL_ARG_DIFF_SRC, net_.bind(x.md, last_boundary)}}));
      net_.bwd_groups.push_back(std::move(g));
    }

    net_.update_bytes_ = kF32 * 3 * plan_params(p);
    counts_.memory_bytes = net_.finalize();

    // Data and initial values.
    {
      const std::size_t n = static_cast<std::size_t>(p.batch * 3 * p.image * p.image);
      std::vector<float> pixels(n);
      fill_uniform(pixels.data(), n, -0.5f, 0.5f, seed, 1u << 20);
      net_.write(img.mem, pixels.data(), img_md.dims(), Tag::nchw);
    }
    if (training) {
      auto* lab = static_cast<std::int32_t*>(labels_mem.get_data_handle());
      for (std::int64_t i = 0; i < p.batch; ++i) {
        const float u = uniform01(seed, (1u << 20) + 1, static_cast<std::uint64_t>(i));
        lab[i] = std::min(static_cast<std::int32_t>(u * static_cast<float>(p.classes)),
                          static_cast<std::int32_t>(p.classes - 1));
      }
    }
    for (std::size_t i = 0; i < net_.params.size(); ++i) init_param(net_, net_.params[i], seed, i);
    if (!training) {
      // Inference BN uses global statistics: those of the fresh init (mean 0, variance 1).
      for (const auto& v : net_.bn_variances) {
        const std::size_t n = v.get_desc().get_size() / sizeof(float);
        std::fill_n(static_cast<float*>(v.get_data_handle()), n, 1.f);
      }
    }

    net_.require_winograd();
    if (net_.best()) best::cache().save();
    // The dominant primitive: the forward convolution with the most FLOPs.
    double best = -1;
    for (const auto& op : net_.fwd) {
      if (op.op == "convolution" && op.flops > best) {
        best = op.flops;
        impl_ = op.impl;
      }
    }
  }

  // The gradient is written f32, or rounded to bf16 (nearest even) when dlogits is bf16.
  static double softmax_xent(const memory& probs, const memory& dlogits, const memory& labels,
                             std::int64_t n, std::int64_t c) {
    const auto* pr = static_cast<const float*>(probs.get_data_handle());
    const bool bf16 = dlogits.get_desc().data_type() == Dt::bf16;
    void* d = dlogits.get_data_handle();
    const auto* lab = static_cast<const std::int32_t*>(labels.get_data_handle());
    const float inv_n = 1.0f / static_cast<float>(n);
    const double sum = tbb::parallel_reduce(
        tbb::blocked_range<std::int64_t>(0, n), 0.0,
        [&](const tbb::blocked_range<std::int64_t>& r, double acc) {
          for (std::int64_t i = r.begin(); i != r.end(); ++i) {
            const float* row = pr + i * c;
            const std::int32_t y = lab[i];
            void* drow = bf16 ? static_cast<void*>(static_cast<std::uint16_t*>(d) + i * c)
                              : static_cast<void*>(static_cast<float*>(d) + i * c);
            du::softmax_xent_grad_row(row, drow, static_cast<std::size_t>(c),
                                      static_cast<std::size_t>(y), inv_n, bf16);
            acc -= std::log(std::max(static_cast<double>(row[y]), 1e-30));
          }
          return acc;
        },
        std::plus<>());
    return sum / static_cast<double>(n);
  }

  NetPlan plan_;
  Net net_;
  ModelCounts counts_;
  double last_loss_ = std::numeric_limits<double>::quiet_NaN();
  std::string impl_;
};

}  // namespace

// ---- Public entry points ----------------------------------------------------------------------

ModelCounts cnn_counts(const space::Config& config) {
  const NetPlan p = make_plan(config);
  const bool training = config.knobs.mode == "training";
  ModelCounts c;
  const double fwd = plan_forward_flops(p);
  c.flops = training ? 3 * fwd : fwd;
  c.bytes = plan_bytes(p, training);
  c.params = plan_params(p);
  c.memory_bytes = plan_memory(p, training, config.knobs.algorithm);
  return c;
}

std::unique_ptr<Model> build_cnn(const space::Config& config, std::uint64_t seed) {
  return std::make_unique<CnnModel>(config, seed);
}

namespace cnn {

std::vector<ConvLayer> conv_layers(const space::Config& config) {
  const NetPlan p = make_plan(config);
  std::vector<ConvLayer> out{p.stem};
  for (const auto& b : p.blocks) {
    out.insert(out.end(), b.main.begin(), b.main.end());
    if (b.proj) out.push_back(*b.proj);
  }
  return out;
}

namespace {
BlockPlan probe_plan(const BlockProbeSpec& s) {
  if (s.block_fn != "residual" && s.block_fn != "bottleneck") {
    throw Unsupported(fmt::format("cnn: block_fn '{}' is not residual or bottleneck", s.block_fn));
  }
  return make_block("probe", s.block_fn == "bottleneck", s.batch, s.in_channels, s.filters,
                    s.height, s.width, s.stride);
}
}  // namespace

std::vector<ConvLayer> block_convs(const BlockProbeSpec& spec) {
  const BlockPlan b = probe_plan(spec);
  std::vector<ConvLayer> out = b.main;
  if (b.proj) out.push_back(*b.proj);
  return out;
}

BlockProbeResult run_block(const BlockProbeSpec& spec, const std::vector<float>& src,
                           const std::vector<std::vector<float>>& weights,
                           const std::vector<std::vector<float>>& bn_scale,
                           const std::vector<std::vector<float>>& bn_shift,
                           const std::vector<float>& diff_dst) {
  const BlockPlan b = probe_plan(spec);
  const std::size_t nconv = b.main.size() + (b.proj ? 1 : 0);
  if (weights.size() != nconv || bn_scale.size() != nconv || bn_shift.size() != nconv) {
    throw std::invalid_argument(fmt::format("cnn: the block has {} convolutions", nconv));
  }
  Net net(true, spec.algorithm);
  // The model's blocks get their input in the layout the stem chose: nChw16c on AVX-512.
  const memory::dims in_dims{spec.batch, spec.in_channels, spec.height, spec.width};
  const memory::desc x_md(in_dims, Dt::f32, Tag::nChw16c);
  const Act x{x_md, net.owned(x_md)};
  const int rx = net.region("diff.boundary0"), ry = net.region("diff.boundary1");
  const Act y = net.block(b, x, rx, ry);
  const memory dx = net.bind(x_md, rx);
  const memory dy = net.bind(y.md, ry);
  net.finalize();

  const auto& out_l = b.main.back();
  const memory::dims out_dims{spec.batch, out_l.out_channels, out_l.out_h, out_l.out_w};
  net.write(x.mem, src.data(), in_dims, Tag::nchw);
  // Parameters come in creation order: per unit weights, scale, shift; main path then projection.
  for (std::size_t i = 0; i < nconv; ++i) {
    const Param& w = net.params[3 * i];
    net.write(w.value, weights[i].data(), w.plain_dims, Tag::oihw);
    net.write(net.params[3 * i + 1].value, bn_scale[i].data(), net.params[3 * i + 1].plain_dims,
              Tag::x);
    net.write(net.params[3 * i + 2].value, bn_shift[i].data(), net.params[3 * i + 2].plain_dims,
              Tag::x);
  }
  for (auto& op : net.fwd) Net::run(op, net.strm);
  net.strm.wait();
  BlockProbeResult r;
  r.dst = net.read(y.mem, out_dims, Tag::nchw);
  net.write(dy, diff_dst.data(), out_dims, Tag::nchw);
  for (auto& op : net.bwd_groups.front()) Net::run(op, net.strm);
  net.strm.wait();
  r.diff_src = net.read(dx, in_dims, Tag::nchw);
  for (std::size_t i = 0; i < nconv; ++i) {
    const Param& w = net.params[3 * i];
    r.diff_weights.push_back(net.read(w.grad, w.plain_dims, Tag::oihw));
    r.diff_scale.push_back(
        net.read(net.params[3 * i + 1].grad, net.params[3 * i + 1].plain_dims, Tag::x));
    r.diff_shift.push_back(
        net.read(net.params[3 * i + 2].grad, net.params[3 * i + 2].plain_dims, Tag::x));
  }
  return r;
}

}  // namespace cnn

}  // namespace dnnscape::worker
