// The CNN family: blocks against a straightforward double-precision reference (forward, and
// gradients by finite differences of the reference), training lowers the loss, the counts.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "worker/cnn.hpp"
#include "worker/families.hpp"
#include "worker/sysinfo.hpp"

using dnnscape::space::Config;
using dnnscape::space::Family;
using dnnscape::worker::build_cnn;
using dnnscape::worker::build_model;
using dnnscape::worker::cnn_counts;
using dnnscape::worker::predict_counts;
using dnnscape::worker::Unsupported;
using dnnscape::worker::cnn::BlockProbeSpec;
using dnnscape::worker::cnn::ConvLayer;

namespace {

// ---- A plain NCHW reference in double ---------------------------------------------------------

struct Tensor {
  std::int64_t n = 0, c = 0, h = 0, w = 0;
  std::vector<double> v;
  Tensor() = default;
  Tensor(std::int64_t n_, std::int64_t c_, std::int64_t h_, std::int64_t w_)
      : n(n_), c(c_), h(h_), w(w_), v(static_cast<std::size_t>(n_ * c_ * h_ * w_), 0.0) {}
  double& at(std::int64_t i, std::int64_t j, std::int64_t y, std::int64_t x) {
    return v[static_cast<std::size_t>(((i * c + j) * h + y) * w + x)];
  }
  [[nodiscard]] double at(std::int64_t i, std::int64_t j, std::int64_t y, std::int64_t x) const {
    return v[static_cast<std::size_t>(((i * c + j) * h + y) * w + x)];
  }
};

Tensor conv(const Tensor& x, const std::vector<double>& wt, const ConvLayer& l) {
  Tensor y(x.n, l.out_channels, l.out_h, l.out_w);
  const std::int64_t k = l.kernel;
  for (std::int64_t i = 0; i < x.n; ++i)
    for (std::int64_t o = 0; o < l.out_channels; ++o)
      for (std::int64_t oy = 0; oy < l.out_h; ++oy)
        for (std::int64_t ox = 0; ox < l.out_w; ++ox) {
          double s = 0;
          for (std::int64_t ci = 0; ci < l.in_channels; ++ci)
            for (std::int64_t ky = 0; ky < k; ++ky)
              for (std::int64_t kx = 0; kx < k; ++kx) {
                const std::int64_t iy = oy * l.stride - l.pad + ky;
                const std::int64_t ix = ox * l.stride - l.pad + kx;
                if (iy < 0 || iy >= x.h || ix < 0 || ix >= x.w) continue;
                s += x.at(i, ci, iy, ix) *
                     wt[static_cast<std::size_t>(((o * l.in_channels + ci) * k + ky) * k + kx)];
              }
          y.at(i, o, oy, ox) = s;
        }
  return y;
}

// Training-mode batch norm: statistics over N, H, W; biased variance (as oneDNN computes it).
Tensor batch_norm(const Tensor& x, const std::vector<double>& scale,
                  const std::vector<double>& shift) {
  Tensor y(x.n, x.c, x.h, x.w);
  const double m = static_cast<double>(x.n * x.h * x.w);
  for (std::int64_t j = 0; j < x.c; ++j) {
    double mean = 0, var = 0;
    for (std::int64_t i = 0; i < x.n; ++i)
      for (std::int64_t a = 0; a < x.h; ++a)
        for (std::int64_t b = 0; b < x.w; ++b) mean += x.at(i, j, a, b);
    mean /= m;
    for (std::int64_t i = 0; i < x.n; ++i)
      for (std::int64_t a = 0; a < x.h; ++a)
        for (std::int64_t b = 0; b < x.w; ++b) var += std::pow(x.at(i, j, a, b) - mean, 2);
    var /= m;
    const double inv =
        1.0 / std::sqrt(var + static_cast<double>(dnnscape::worker::cnn::kBnEpsilon));
    for (std::int64_t i = 0; i < x.n; ++i)
      for (std::int64_t a = 0; a < x.h; ++a)
        for (std::int64_t b = 0; b < x.w; ++b)
          y.at(i, j, a, b) = scale[static_cast<std::size_t>(j)] * (x.at(i, j, a, b) - mean) * inv +
                             shift[static_cast<std::size_t>(j)];
  }
  return y;
}

void relu(Tensor& t) {
  for (auto& e : t.v) e = std::max(e, 0.0);
}

struct BlockParams {
  std::vector<std::vector<double>> w, scale, shift;
};

// Post-activation block: main path conv-BN(-ReLU) units, shortcut identity or conv-BN, add, ReLU.
Tensor block_ref(const std::vector<ConvLayer>& convs, const Tensor& x, const BlockParams& p) {
  Tensor cur = x;
  Tensor shortcut = x;
  for (std::size_t i = 0; i < convs.size(); ++i) {
    const auto& l = convs[i];
    Tensor t = batch_norm(conv(l.projection ? x : cur, p.w[i], l), p.scale[i], p.shift[i]);
    if (l.relu) relu(t);
    (l.projection ? shortcut : cur) = std::move(t);
  }
  for (std::size_t e = 0; e < cur.v.size(); ++e) cur.v[e] += shortcut.v[e];
  relu(cur);
  return cur;
}

double dot(const Tensor& a, const std::vector<double>& r) {
  double s = 0;
  for (std::size_t i = 0; i < a.v.size(); ++i) s += a.v[i] * r[i];
  return s;
}

std::vector<double> random_vec(std::size_t n, double lo, double hi, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}
std::vector<float> to_f(const std::vector<double>& v) {
  return {v.begin(), v.end()};
}
// Rounded to f32 and back, so the reference sees exactly the values oneDNN gets.
std::vector<double> f32_exact(std::vector<double> v) {
  for (auto& e : v) e = static_cast<double>(static_cast<float>(e));
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float e : v) m = std::max(m, static_cast<double>(std::fabs(e)));
  return m;
}

void check_block(const BlockProbeSpec& spec) {
  CAPTURE(spec.block_fn);
  CAPTURE(spec.in_channels);
  CAPTURE(spec.filters);
  CAPTURE(spec.stride);
  const auto convs = dnnscape::worker::cnn::block_convs(spec);
  std::mt19937_64 rng(7);
  Tensor x(spec.batch, spec.in_channels, spec.height, spec.width);
  x.v = f32_exact(random_vec(x.v.size(), -1, 1, rng));
  BlockParams p;
  for (const auto& l : convs) {
    const double bound = std::sqrt(3.0 / static_cast<double>(l.in_channels * l.kernel * l.kernel));
    p.w.push_back(
        f32_exact(random_vec(static_cast<std::size_t>(l.weight_count()), -bound, bound, rng)));
    p.scale.push_back(
        f32_exact(random_vec(static_cast<std::size_t>(l.out_channels), 0.5, 1.5, rng)));
    p.shift.push_back(
        f32_exact(random_vec(static_cast<std::size_t>(l.out_channels), -0.5, 0.5, rng)));
  }
  const Tensor y = block_ref(convs, x, p);
  const auto r = f32_exact(random_vec(y.v.size(), -1, 1, rng));  // L = sum(y * r)

  std::vector<std::vector<float>> wf, sf, bf;
  for (std::size_t i = 0; i < convs.size(); ++i) {
    wf.push_back(to_f(p.w[i]));
    sf.push_back(to_f(p.scale[i]));
    bf.push_back(to_f(p.shift[i]));
  }
  const auto got = dnnscape::worker::cnn::run_block(spec, to_f(x.v), wf, sf, bf, to_f(r));

  // Forward.
  REQUIRE(got.dst.size() == y.v.size());
  double err = 0;
  for (std::size_t i = 0; i < y.v.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(got.dst[i]) - y.v[i]));
  }
  CHECK(err < 1e-4);

  // Gradients: central differences of the double reference (smooth almost everywhere).
  const double h = 1e-6;
  auto loss = [&](const Tensor& xx, const BlockParams& pp) {
    return dot(block_ref(convs, xx, pp), r);
  };
  auto fd_check = [&](double analytic, double numeric, double scale) {
    CHECK(std::fabs(analytic - numeric) <= 2e-3 * scale + 1e-5);
  };
  for (std::size_t i = 0; i < convs.size(); ++i) {
    CAPTURE(convs[i].name);
    const double wscale = max_abs(got.diff_weights[i]);
    CHECK(wscale > 0);
    for (std::size_t k : {std::size_t{0}, p.w[i].size() / 3, p.w[i].size() - 1}) {
      BlockParams plus = p, minus = p;
      plus.w[i][k] += h;
      minus.w[i][k] -= h;
      fd_check(got.diff_weights[i][k], (loss(x, plus) - loss(x, minus)) / (2 * h), wscale);
    }
    for (std::size_t k : {std::size_t{0}, p.scale[i].size() - 1}) {
      BlockParams plus = p, minus = p;
      plus.scale[i][k] += h;
      minus.scale[i][k] -= h;
      fd_check(got.diff_scale[i][k], (loss(x, plus) - loss(x, minus)) / (2 * h),
               max_abs(got.diff_scale[i]));
      plus = p;
      minus = p;
      plus.shift[i][k] += h;
      minus.shift[i][k] -= h;
      fd_check(got.diff_shift[i][k], (loss(x, plus) - loss(x, minus)) / (2 * h),
               max_abs(got.diff_shift[i]));
    }
  }
  const double xscale = max_abs(got.diff_src);
  for (std::size_t k : {std::size_t{1}, x.v.size() / 2, x.v.size() - 2}) {
    Tensor plus = x, minus = x;
    plus.v[k] += h;
    minus.v[k] -= h;
    fd_check(got.diff_src[k], (loss(plus, p) - loss(minus, p)) / (2 * h), xscale);
  }
}

Config cnn_config(std::string block_fn, std::int64_t filters, std::int64_t blocks,
                  std::int64_t image, std::int64_t output, std::int64_t batch,
                  std::string mode = "training") {
  Config c;
  c.family = Family::cnn;
  c.block_fn = std::move(block_fn);
  c.filters = filters;
  c.blocks = blocks;
  c.image = image;
  c.output = output;
  c.batch = batch;
  c.knobs.mode = std::move(mode);
  return c;
}

}  // namespace

TEST_CASE("a residual block matches the reference, forward and gradients") {
  BlockProbeSpec s;
  s.block_fn = "residual";
  s.batch = 2;
  s.height = s.width = 6;
  SUBCASE("identity shortcut") {
    s.in_channels = 8;
    s.filters = 8;
    s.stride = 1;
    check_block(s);
  }
  SUBCASE("projection shortcut, stride 2") {
    s.in_channels = 8;
    s.filters = 16;
    s.stride = 2;
    check_block(s);
  }
}

TEST_CASE("a bottleneck block matches the reference, forward and gradients") {
  BlockProbeSpec s;
  s.block_fn = "bottleneck";
  s.batch = 2;
  s.height = s.width = 6;
  SUBCASE("projection shortcut, stride 2") {
    s.in_channels = 8;
    s.filters = 4;
    s.stride = 2;
    check_block(s);
  }
  SUBCASE("identity shortcut") {
    s.in_channels = 16;
    s.filters = 4;
    s.stride = 1;
    check_block(s);
  }
}

TEST_CASE("a tiny CNN lowers its loss with SGD") {
  for (const char* fn : {"residual", "bottleneck"}) {
    CAPTURE(fn);
    auto model = build_cnn(cnn_config(fn, 4, 1, 32, 10, 4), 42);
    std::vector<double> losses;
    for (int i = 0; i < 15; ++i) {
      model->step();
      losses.push_back(model->last_loss());
    }
    CHECK(std::isfinite(losses.front()));
    CHECK(losses.front() > 1.0);  // about log(10) for fresh weights
    CHECK(losses.back() < 0.7 * losses.front());
  }
}

TEST_CASE("bf16: a tiny CNN's loss is the f32 model's within bf16 rounding, and falls") {
  if (!dnnscape::worker::cpu_has_bf16()) return;  // the skipped row: tests/worker/test_dtype.cpp
  for (const char* fn : {"residual", "bottleneck"}) {
    CAPTURE(fn);
    Config c = cnn_config(fn, 16, 1, 32, 10, 4);
    auto f32 = build_cnn(c, 42);
    c.knobs.dtype = "bf16";
    auto bf16 = build_cnn(c, 42);  // the same initial values, rounded to bf16 for the copies
    CHECK(bf16->counts().flops == f32->counts().flops);
    f32->step();
    bf16->step();
    CHECK(bf16->last_loss() == doctest::Approx(f32->last_loss()).epsilon(0.02));
    std::vector<double> losses{bf16->last_loss()};
    bool copy = false, bf16_kernel = false;
    for (const auto& op : bf16->profile_step()) {
      copy = copy || (op.op == "reorder" && op.phase == "update");
      bf16_kernel =
          bf16_kernel || (op.op == "convolution" && op.impl.find("bf16") != std::string::npos);
    }
    CHECK(copy);         // the f32 master -> bf16 copy of every weight is timed in /ops
    CHECK(bf16_kernel);  // jit_bf16:avx512_core_bf16
    for (int i = 0; i < 14; ++i) {
      bf16->step();
      losses.push_back(bf16->last_loss());
    }
    CHECK(losses.back() < 0.7 * losses.front());
    c.knobs.mode = "inference";
    auto inf = build_model(c);
    inf->step();
    CHECK(std::isnan(inf->last_loss()));
  }
}

TEST_CASE("image 100 works (global average pooling over the final 4x4 map)") {
  const auto layers = dnnscape::worker::cnn::conv_layers(cnn_config("residual", 4, 1, 100, 10, 2));
  CHECK(layers.back().out_h == 4);
  CHECK(layers.back().out_w == 4);
  for (const char* mode : {"training", "inference"}) {
    auto model = build_model(cnn_config("bottleneck", 4, 1, 100, 10, 2, mode));
    model->step();
    model->step();
    if (std::string(mode) == "training") {
      CHECK(std::isfinite(model->last_loss()));
    } else {
      CHECK(std::isnan(model->last_loss()));
    }
  }
}

TEST_CASE("counts() equal cnn_counts(); memory prediction within 25% of the allocation") {
  const std::vector<Config> configs = {
      cnn_config("residual", 16, 1, 100, 500, 8),
      cnn_config("bottleneck", 16, 1, 100, 500, 8),
      cnn_config("residual", 32, 2, 100, 1000, 8),
      cnn_config("bottleneck", 16, 2, 64, 100, 4),
      cnn_config("residual", 32, 1, 100, 1000, 16),  // batch > 8: Winograd in training
      cnn_config("residual", 16, 1, 100, 500, 8, "inference"),
      cnn_config("bottleneck", 32, 1, 100, 1000, 8, "inference"),
  };
  std::vector<Config> all = configs;
  if (dnnscape::worker::cpu_has_bf16()) {
    for (Config c : {configs[0], configs[1], configs[3], configs[5], configs[6]}) {
      c.knobs.dtype = "bf16";
      all.push_back(c);
    }
  }
  for (const auto& c : all) {
    CAPTURE(c.label());
    const auto predicted = cnn_counts(c);
    const auto dispatched = predict_counts(c);
    CHECK(dispatched.flops == predicted.flops);
    auto model = build_model(c);
    const auto& got = model->counts();
    CHECK(got.flops == predicted.flops);
    CHECK(got.bytes == predicted.bytes);
    CHECK(got.params == predicted.params);
    CHECK(got.memory_bytes > 0);
    MESSAGE(c.label(), ": memory measured ", got.memory_bytes / 1048576.0, " MiB, predicted ",
            predicted.memory_bytes / 1048576.0, " MiB");
    CHECK(std::fabs(predicted.memory_bytes / got.memory_bytes - 1.0) < 0.25);

    // The profiled ops add up to the counts: bytes exactly (reorders aside); FLOPs up to the stem's
    // backward-data pass, which the ParaDnn convention counts but the model never runs (the image
    // needs no gradient).
    const auto ops = model->profile_step();
    double flops = 0, bytes = 0;
    const std::set<std::string> known = {"convolution", "batch_norm", "eltwise",       "pooling",
                                         "binary",      "sum",        "inner_product", "softmax",
                                         "reorder",     "update",     "loss"};
    for (const auto& op : ops) {
      CHECK(known.count(op.op) == 1);
      CHECK(op.time_s >= 0);
      CHECK(!op.impl.empty());
      flops += op.flops;
      // Weight reorders for backward-data are layout conversions, outside the compulsory traffic;
      // bf16's master -> copy reorders (phase update) are part of the algorithm and count.
      if (op.op != "reorder" || op.phase == "update") bytes += op.bytes;
    }
    const auto layers = dnnscape::worker::cnn::conv_layers(c);
    const double stem_bwd = c.knobs.mode == "training" ? layers.front().forward_flops() : 0.0;
    CHECK(flops == doctest::Approx(predicted.flops - stem_bwd).epsilon(1e-12));
    CHECK(bytes == doctest::Approx(predicted.bytes).epsilon(1e-12));
  }
}

TEST_CASE("FLOPs recomputed from the layer list, and by hand for one config") {
  // residual, filters 16, blocks 1, image 100, output 500, batch 4.
  const Config c = cnn_config("residual", 16, 1, 100, 500, 4);
  const auto layers = dnnscape::worker::cnn::conv_layers(c);
  double fwd = 0;
  for (const auto& l : layers) {
    fwd += 2.0 * static_cast<double>(c.batch * l.out_h * l.out_w * l.out_channels * l.in_channels *
                                     l.kernel * l.kernel);
  }
  const std::int64_t features = layers.back().out_channels;
  CHECK(features == 128);
  fwd += 2.0 * static_cast<double>(c.batch * (features * c.output + c.output));
  CHECK(cnn_counts(c).flops == 3 * fwd);

  // By hand. Stem: 100 -> (100 + 6 - 7) / 2 + 1 = 50; 2 * 4 * 50 * 50 * 16 * 3 * 7 * 7.
  CHECK(layers.front().out_h == 50);
  CHECK(layers.front().forward_flops() == 47040000.0);
  // Max pool 50 -> 25; groups at 25, 13, 7, 4 with 16, 32, 64, 128 filters:
  //   group0: 2 x (2*4*625*16*16*9)                   = 23,040,000
  //   group1: 6,230,016 + 12,460,032 + proj 692,224   = 19,382,272
  //   group2: 7,225,344 + 14,450,688 + proj 802,816   = 22,478,848
  //   group3: 9,437,184 + 18,874,368 + proj 1,048,576 = 29,360,128
  //   dense:  2 * 4 * (128 * 500 + 500)               =    516,000
  // forward total 141,817,248; training 3x.
  CHECK(fwd == 141817248.0);
  CHECK(cnn_counts(c).flops == 425451744.0);
  // Params: conv weights 308,016; BN scale+shift 2 * (16 + 2*16 + 3*32 + 3*64 + 3*128) = 1,440;
  // dense 128 * 500 + 500 = 64,500.
  CHECK(cnn_counts(c).params == 373956.0);
  Config inf = c;
  inf.knobs.mode = "inference";
  CHECK(cnn_counts(inf).flops == 141817248.0);
}

TEST_CASE("unsupported knobs and parameters say why") {
  Config c = cnn_config("residual", 4, 1, 32, 10, 2);
  c.knobs.dtype = "f16";
  CHECK_THROWS_AS(cnn_counts(c), Unsupported);
  if (dnnscape::worker::cpu_has_bf16()) {  // oneDNN 2.6 has Winograd for f32 only
    c.knobs.dtype = "bf16";
    c.knobs.algorithm = "winograd";
    CHECK_THROWS_WITH_AS(build_model(c), doctest::Contains("Winograd for none"), Unsupported);
    c.knobs.algorithm = "default";
  }
  c.knobs.dtype = "f32";
  c.block_fn = "dense";
  CHECK_THROWS_WITH_AS(cnn_counts(c), "cnn: block_fn 'dense' is not residual or bottleneck",
                       Unsupported);
  c.block_fn = "residual";
  // algorithm winograd where no convolution gets it (isa_cap avx2) is skipped with the reason:
  // tests/worker/test_isa_cap.sh.
  c.knobs.algorithm = "direct";
  auto model = build_cnn(c, 1);
  model->step();
  CHECK(std::isfinite(model->last_loss()));
}

TEST_CASE("winograd runs on the 3x3 stride-1 convolutions and falls back to direct elsewhere") {
  for (const std::string mode : {"training", "inference"}) {
    CAPTURE(mode);
    Config c = cnn_config("residual", 16, 1, 32, 10, 4, mode);
    c.knobs.algorithm = "winograd";
    auto model = build_cnn(c, 1);
    model->step();
    if (mode == "training") CHECK(std::isfinite(model->last_loss()));
    const auto layers = dnnscape::worker::cnn::conv_layers(c);
    const auto ops = model->profile_step();
    int wino = 0, direct = 0;
    for (const auto& op : ops) {
      if (op.op != "convolution" || op.phase != "forward") continue;
      const bool w = op.impl.find("wino") != std::string::npos;
      (w ? wino : direct) += 1;
    }
    // Forward: the stem (7x7/2), the strided 3x3 and the 1x1 projections run direct; the 3x3
    // stride-1 convolutions with channels in 16s (group 0 both, the second of groups 1-3) Winograd.
    CHECK(wino == 5);
    CHECK(direct == static_cast<int>(layers.size()) - 5);
    // The FLOP convention counts direct convolution work whatever algorithm runs.
    Config d = c;
    d.knobs.algorithm = "direct";
    CHECK(model->counts().flops == cnn_counts(d).flops);
    // The memory prediction knows the Winograd-domain weights and scratchpads.
    const double predicted = cnn_counts(c).memory_bytes;
    MESSAGE(mode, " winograd: memory measured ", model->counts().memory_bytes / 1048576.0,
            " MiB, predicted ", predicted / 1048576.0, " MiB");
    CHECK(std::fabs(predicted / model->counts().memory_bytes - 1.0) < 0.25);
  }
}
