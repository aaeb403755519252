// The RNN family: forward against a double-precision reference written from oneDNN's cell
// definitions, gradients by central differences of that reference, SGD progress, the embedding
// scatter-add, and the analytic counts.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "worker/families.hpp"
#include "worker/rnn.hpp"
#include "worker/sysinfo.hpp"

namespace dw = dnnscape::worker;
using dnnscape::space::Config;
using dnnscape::space::Family;

namespace {

Config rnn_config(const std::string& cell, std::int64_t layers, std::int64_t embedding,
                  std::int64_t length, std::int64_t vocab, std::int64_t batch,
                  const std::string& mode = "training", const std::string& algorithm = "default") {
  Config c;
  c.family = Family::rnn;
  c.cell = cell;
  c.layers = layers;
  c.embedding = embedding;
  c.length = length;
  c.vocab = vocab;
  c.batch = batch;
  c.knobs.mode = mode;
  c.knobs.algorithm = algorithm;
  return c;
}

// Largest |a - b| relative to the largest |b| (and absolute below 1e-3).
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 1e-3, err = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    err = std::max(err, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return err / scale;
}

std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

struct ParamsD {
  std::vector<double> embedding, weights_layer, weights_iter, bias, dense_weights, dense_bias;
};

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

ParamsD to_double(const dw::RnnParams& p) {
  return {to_double(p.embedding), to_double(p.weights_layer), to_double(p.weights_iter),
          to_double(p.bias),      to_double(p.dense_weights), to_double(p.dense_bias)};
}

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// The model of one config, straight from the oneDNN documentation of the cells:
//   rnn:  h = tanh(W x + U h' + b)
//   lstm: gates i, f, c~, o; c = f c' + i c~; h = o tanh(c)
//   gru:  gates u, r, o; o = tanh(W_o x + U_o (r h') + b_o); h = u h' + (1 - u) o
// Weights ldigo: W[l][i][g][h]. Returns the mean cross-entropy; `hidden` gets the last layer's
// output, T x B x H.
double reference_loss(const Config& c, const ParamsD& p, const std::vector<std::int32_t>& tokens,
                      const std::vector<std::int32_t>& targets, std::vector<double>* hidden) {
  const auto L = c.layers, H = c.embedding, T = c.length, V = c.vocab, B = c.batch;
  const std::int64_t G = dw::rnn_gates(c.cell);
  std::vector<double> x(static_cast<std::size_t>(T * B * H));
  for (std::int64_t n = 0; n < T * B; ++n) {
    for (std::int64_t e = 0; e < H; ++e) x[n * H + e] = p.embedding[tokens[n] * H + e];
  }
  for (std::int64_t l = 0; l < L; ++l) {
    std::vector<double> y(x.size());
    std::vector<double> h(static_cast<std::size_t>(B * H), 0.0), cs(h.size(), 0.0);
    const double* wl = p.weights_layer.data() + l * H * G * H;
    const double* wi = p.weights_iter.data() + l * H * G * H;
    const double* bias = p.bias.data() + l * G * H;
    for (std::int64_t t = 0; t < T; ++t) {
      std::vector<double> hn(h.size());
      for (std::int64_t b = 0; b < B; ++b) {
        const double* xin = &x[(t * B + b) * H];
        const double* hp = &h[b * H];
        // Pre-activations; the GRU's candidate gate gets its recurrent part after the reset.
        std::vector<double> a(static_cast<std::size_t>(G * H)), ri(static_cast<std::size_t>(H));
        for (std::int64_t g = 0; g < G; ++g) {
          for (std::int64_t k = 0; k < H; ++k) {
            double s = bias[g * H + k];
            for (std::int64_t i = 0; i < H; ++i) s += xin[i] * wl[(i * G + g) * H + k];
            const bool gru_candidate = c.cell == "gru" && g == 2;
            if (!gru_candidate) {
              for (std::int64_t i = 0; i < H; ++i) s += hp[i] * wi[(i * G + g) * H + k];
            }
            a[g * H + k] = s;
          }
        }
        for (std::int64_t k = 0; k < H; ++k) {
          double out = 0;
          if (c.cell == "rnn") {
            out = std::tanh(a[k]);
          } else if (c.cell == "lstm") {
            const double ig = sigmoid(a[k]), fg = sigmoid(a[H + k]), cg = std::tanh(a[2 * H + k]);
            const double og = sigmoid(a[3 * H + k]);
            cs[b * H + k] = fg * cs[b * H + k] + ig * cg;
            out = og * std::tanh(cs[b * H + k]);
          }
          hn[b * H + k] = out;
        }
        if (c.cell == "gru") {
          for (std::int64_t i = 0; i < H; ++i) ri[i] = sigmoid(a[H + i]) * hp[i];
          for (std::int64_t k = 0; k < H; ++k) {
            double s = a[2 * H + k];
            for (std::int64_t i = 0; i < H; ++i) s += ri[i] * wi[(i * G + 2) * H + k];
            const double u = sigmoid(a[k]);
            hn[b * H + k] = u * hp[k] + (1 - u) * std::tanh(s);
          }
        }
        std::copy(&hn[b * H], &hn[b * H] + H, &y[(t * B + b) * H]);
      }
      h = hn;
    }
    x = y;
  }
  if (hidden != nullptr) *hidden = x;
  double loss = 0;
  std::vector<double> z(static_cast<std::size_t>(V));
  for (std::int64_t n = 0; n < T * B; ++n) {
    for (std::int64_t v = 0; v < V; ++v) {
      double s = p.dense_bias[v];
      for (std::int64_t k = 0; k < H; ++k) s += x[n * H + k] * p.dense_weights[v * H + k];
      z[v] = s;
    }
    const double m = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (const double v : z) sum += std::exp(v - m);
    loss += m + std::log(sum) - z[targets[n]];
  }
  return loss / static_cast<double>(T * B);
}

}  // namespace

TEST_CASE("rnn: one step of each cell matches the reference forward and its gradients") {
  for (const std::string algorithm : {"fused", "decomposed"}) {
    for (const std::string cell : {"rnn", "lstm", "gru"}) {
      CAPTURE(algorithm);
      CAPTURE(cell);
      const Config c = rnn_config(cell, 2, 6, 4, 9, 3, "training", algorithm);
      auto model = dw::build_rnn_model(c, 7);
      model->set_learning_rate(1.0F);
      const dw::RnnParams before = model->params();
      const ParamsD p0 = to_double(before);
      std::vector<double> ref_hidden;
      const double ref_loss = reference_loss(c, p0, model->tokens(), model->targets(), &ref_hidden);

      model->step();
      CHECK(model->last_loss() == doctest::Approx(ref_loss).epsilon(1e-5));
      const std::vector<float> hidden = model->hidden();
      REQUIRE(hidden.size() == ref_hidden.size());
      double max_err = 0;
      for (std::size_t i = 0; i < hidden.size(); ++i) {
        max_err = std::max(max_err, std::abs(hidden[i] - ref_hidden[i]));
      }
      CHECK(max_err < 1e-5);

      // Gradient the model applied (lr = 1): before - after. Central differences of the double
      // reference, on a few weights of every tensor.
      const ParamsD p1 = to_double(model->params());
      struct Probe {
        std::string name;
        std::vector<double> ParamsD::*tensor;
        std::vector<std::size_t> at;
      };
      const std::size_t used_row = static_cast<std::size_t>(model->tokens()[0]) * 6;
      const std::size_t layer1 = static_cast<std::size_t>(6 * dw::rnn_gates(cell) * 6);
      const std::vector<Probe> probes = {
          {"embedding", &ParamsD::embedding, {used_row, used_row + 5}},
          {"weights_layer", &ParamsD::weights_layer, {0, 7, layer1 + 3, layer1 + 11}},
          {"weights_iter", &ParamsD::weights_iter, {1, 13, layer1 + 2, layer1 + 17}},
          {"bias", &ParamsD::bias, {0, 5, static_cast<std::size_t>(6 * dw::rnn_gates(cell)) + 1}},
          {"dense_weights", &ParamsD::dense_weights, {0, 8, 29, 53}},
          {"dense_bias", &ParamsD::dense_bias, {0, 4, 8}},
      };
      double max_fd = 0;
      for (const auto& probe : probes) {
        for (const std::size_t i : probe.at) {
          CAPTURE(probe.name);
          CAPTURE(i);
          const double h = 1e-5;
          ParamsD pp = p0, pm = p0;
          (pp.*probe.tensor)[i] += h;
          (pm.*probe.tensor)[i] -= h;
          const double fd = (reference_loss(c, pp, model->tokens(), model->targets(), nullptr) -
                             reference_loss(c, pm, model->tokens(), model->targets(), nullptr)) /
                            (2 * h);
          const double applied = (p0.*probe.tensor)[i] - (p1.*probe.tensor)[i];
          CAPTURE(applied);
          CAPTURE(fd);
          CHECK(std::abs(applied - fd) <= 2e-3 * std::abs(fd) + 2e-6);
          max_fd = std::max(max_fd, std::abs(fd));
        }
      }
      CHECK(max_fd > 1e-3);  // the probes are not all trivially zero
    }
  }
}

TEST_CASE("rnn decomposed: forward, loss and every gradient equal the fused primitive's") {
  for (const std::string cell : {"rnn", "lstm", "gru"}) {
    CAPTURE(cell);
    // Sizes off oneDNN's 16-element blocks; 3 layers, so both gradient buffers alternate.
    auto fused = dw::build_rnn_model(rnn_config(cell, 3, 19, 7, 23, 5, "training", "fused"), 4);
    auto dec = dw::build_rnn_model(rnn_config(cell, 3, 19, 7, 23, 5, "training", "decomposed"), 4);
    REQUIRE(fused->tokens() == dec->tokens());
    const dw::RnnParams p0 = fused->params();
    dec->set_params(p0);
    fused->set_learning_rate(1.0F);
    dec->set_learning_rate(1.0F);
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      const dw::RnnParams before = fused->params();
      fused->step();
      dec->step();
      CHECK(dec->last_loss() == doctest::Approx(fused->last_loss()).epsilon(1e-6));
      CHECK(max_rel_diff(dec->hidden(), fused->hidden()) < 1e-5);
      // The applied gradients (lr = 1): before - after, per tensor.
      const dw::RnnParams pf = fused->params(), pd = dec->params();
      CHECK(max_rel_diff(minus(before.weights_layer, pd.weights_layer),
                         minus(before.weights_layer, pf.weights_layer)) < 1e-4);
      CHECK(max_rel_diff(minus(before.weights_iter, pd.weights_iter),
                         minus(before.weights_iter, pf.weights_iter)) < 1e-4);
      CHECK(max_rel_diff(minus(before.bias, pd.bias), minus(before.bias, pf.bias)) < 1e-4);
      CHECK(max_rel_diff(minus(before.embedding, pd.embedding),
                         minus(before.embedding, pf.embedding)) < 1e-4);
      CHECK(max_rel_diff(minus(before.dense_weights, pd.dense_weights),
                         minus(before.dense_weights, pf.dense_weights)) < 1e-4);
      dec->set_params(pf);  // the next step starts from identical weights again
    }
    // Same FLOPs by the convention; the /ops rows are those of the decomposed cells.
    CHECK(dec->counts().flops == fused->counts().flops);
    bool matmul = false, eltwise = false;
    for (const auto& op : dec->profile_step()) {
      matmul = matmul || (op.op == "matmul" && op.phase == "backward_weights");
      eltwise = eltwise || (op.op == "eltwise" && op.phase == "forward");
      CHECK(op.op != cell);
    }
    CHECK(matmul);
    CHECK(eltwise);
  }
}

TEST_CASE("rnn: a tiny model of each cell lowers its loss with SGD") {
  for (const std::string algorithm : {"fused", "decomposed"}) {
    for (const std::string cell : {"rnn", "lstm", "gru"}) {
      CAPTURE(algorithm);
      CAPTURE(cell);
      auto model = dw::build_rnn_model(rnn_config(cell, 2, 16, 6, 12, 4, "training", algorithm), 3);
      model->set_learning_rate(1.0F);
      model->step();
      const double first = model->last_loss();
      CHECK(first == doctest::Approx(std::log(12.0)).epsilon(0.1));
      // Random targets: the loss first falls to about their unigram entropy (~2.0 here).
      for (int i = 0; i < 10; ++i) model->step();
      CHECK(model->last_loss() < 0.9 * first);
    }
  }
}

TEST_CASE("rnn: an inference model computes the training model's forward") {
  for (const std::string algorithm : {"fused", "decomposed"}) {
    for (const std::string cell : {"lstm", "gru"}) {
      CAPTURE(algorithm);
      CAPTURE(cell);
      const Config train = rnn_config(cell, 2, 16, 5, 20, 8, "training", algorithm);
      Config infer = train;
      infer.knobs.mode = "inference";
      auto a = dw::build_rnn_model(train, 11);
      auto b = dw::build_rnn_model(infer, 11);
      a->step();
      b->step();
      CHECK(std::isnan(b->last_loss()));
      CHECK(max_rel_diff(b->hidden(), a->hidden()) < 1e-4);
    }
  }
}

TEST_CASE("rnn bf16: each cell's loss is the f32 model's within bf16 rounding, and falls") {
  if (!dw::cpu_has_bf16()) return;  // the skipped row is tests/worker/test_dtype.cpp's
  for (const std::string cell : {"rnn", "lstm", "gru"}) {
    CAPTURE(cell);
    Config c = rnn_config(cell, 2, 16, 6, 12, 4);  // as the f32 SGD test: its loss falls fast
    auto f32 = dw::build_rnn_model(c, 5);
    c.knobs.dtype = "bf16";
    auto bf16 = dw::build_rnn_model(c, 5);
    bf16->set_params(f32->params());  // identical (f32 master) weights
    REQUIRE(bf16->counts().flops == f32->counts().flops);
    f32->set_learning_rate(1.0F);
    bf16->set_learning_rate(1.0F);
    f32->step();
    bf16->step();
    const double first = bf16->last_loss();
    // 8 significant bits in activations and weight copies: about 0.4% per rounding.
    CHECK(first == doctest::Approx(f32->last_loss()).epsilon(0.01));
    CHECK(max_rel_diff(bf16->hidden(), f32->hidden()) < 0.05);
    bool copy = false;
    for (const auto& op : bf16->profile_step()) {
      copy = copy || (op.op == "reorder" && op.phase == "update");
    }
    CHECK(copy);  // the f32 master -> bf16 copy is timed in /ops
    for (int i = 0; i < 10; ++i) bf16->step();
    CHECK(bf16->last_loss() < 0.95 * first);  // lstm falls slowest: ~9% in these 12 steps
    // Inference: bf16 weights only, same forward.
    c.knobs.mode = "inference";
    auto inf = dw::build_rnn_model(c, 5);
    inf->step();
    CHECK(std::isnan(inf->last_loss()));
  }
}

TEST_CASE("rnn: embedding scatter-add with repeated tokens matches a serial reference") {
  std::mt19937 rng(5);
  const std::int64_t vocab = 13, width = 37, n = 2000;
  std::vector<std::int32_t> tokens(n);
  // Heavily repeated ids, and some rows (10..12) never used.
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng() % 10);
  std::vector<float> grad(static_cast<std::size_t>(n * width));
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& g : grad) g = u(rng);

  std::vector<float> serial(static_cast<std::size_t>(vocab * width), 0.0F);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < width; ++j) serial[tokens[i] * width + j] += grad[i * width + j];
  }
  const dw::EmbeddingIndex index = dw::embedding_index(tokens, vocab);
  CHECK(index.rows.size() == 10);
  std::vector<float> table_grad(serial.size(), 42.0F);
  dw::embedding_scatter_add(index, grad, width, table_grad);
  for (std::int64_t r = 0; r < vocab; ++r) {
    for (std::int64_t j = 0; j < width; ++j) {
      // Same summation order as the serial loop: bit-identical. Unused rows are left alone.
      REQUIRE(table_grad[r * width + j] == (r < 10 ? serial[r * width + j] : 42.0F));
    }
  }
}

TEST_CASE("rnn: counts() equal rnn_counts(), memory prediction within 25%") {
  const std::vector<Config> configs = {
      rnn_config("rnn", 3, 32, 8, 500, 64),
      rnn_config("lstm", 2, 64, 10, 1000, 32),
      rnn_config("gru", 1, 128, 20, 2000, 16),
      rnn_config("lstm", 1, 100, 10, 1024, 64, "inference"),
      rnn_config("gru", 2, 64, 12, 4096, 32, "inference"),
      rnn_config("lstm", 1, 256, 30, 4096, 64),
      rnn_config("rnn", 3, 32, 8, 500, 64, "training", "decomposed"),
      rnn_config("lstm", 2, 64, 10, 1000, 32, "training", "decomposed"),
      rnn_config("gru", 2, 128, 20, 2000, 16, "training", "decomposed"),
      rnn_config("lstm", 1, 100, 10, 1024, 64, "inference", "decomposed"),
      rnn_config("gru", 2, 64, 12, 4096, 32, "inference", "decomposed"),
  };
  std::vector<Config> all = configs;
  if (dw::cpu_has_bf16()) {
    for (Config c : {configs[0], configs[1], configs[2], configs[3], configs[5]}) {
      c.knobs.dtype = "bf16";
      all.push_back(c);
    }
  }
  for (const auto& c : all) {
    CAPTURE(c.label());
    const dw::ModelCounts predicted = dw::rnn_counts(c);
    auto model = dw::build_rnn_model(c, 1);
    const dw::ModelCounts& built = model->counts();
    CHECK(built.flops == predicted.flops);
    CHECK(built.bytes == predicted.bytes);
    CHECK(built.params == predicted.params);
    CHECK(built.memory_bytes == doctest::Approx(predicted.memory_bytes).epsilon(0.25));
    CHECK(dw::predict_counts(c).flops == predicted.flops);

    const auto ops = model->profile_step();
    double flops = 0, bytes = 0;
    for (const auto& op : ops) {
      flops += op.flops;
      bytes += op.bytes;
      CHECK(op.time_s >= 0);
      CHECK(!op.impl.empty());
    }
    CHECK(flops == doctest::Approx(built.flops));
    CHECK(bytes == doctest::Approx(built.bytes).epsilon(0.05));  // reorder skipped if layouts agree
  }
}

TEST_CASE("rnn: FLOPs and params by hand, lstm layers 1 embedding 500 length 50 vocab 8192") {
  const dw::ModelCounts c = dw::rnn_counts(rnn_config("lstm", 1, 500, 50, 8192, 64));
  // Cells: 2 * B * G * H * (I + H) per step = 2 * 64 * 4 * 500 * 1000 = 256e6, times 50 steps.
  // Dense: 2 * (B * T) * (H * V + V) = 6400 * 4 104 192 = 26 266 828 800. Training = 3 x forward.
  CHECK(c.flops == 3 * (12'800'000'000.0 + 26'266'828'800.0));
  // Embedding 8192 * 500 + cell 4 * 500 * 1000 + bias 2000 + dense 500 * 8192 + 8192.
  CHECK(c.params == 4'096'000.0 + 2'000'000.0 + 2'000.0 + 4'104'192.0);
  const dw::ModelCounts inf = dw::rnn_counts(rnn_config("lstm", 1, 500, 50, 8192, 64, "inference"));
  CHECK(inf.flops == 39'066'828'800.0);
}

TEST_CASE("rnn: unsupported knobs and parameters are reported, not crashed on") {
  Config c = rnn_config("lstm", 1, 8, 4, 16, 2);
  c.knobs.dtype = "f16";
  CHECK_THROWS_AS(dw::rnn_counts(c), dw::Unsupported);
  c.knobs.dtype = "bf16";
  c.knobs.algorithm = "decomposed";
  CHECK_THROWS_WITH_AS(dw::rnn_counts(c), doctest::Contains("f32 only"), dw::Unsupported);
  c.knobs.dtype = "f32";
  c.knobs.algorithm = "winograd";
  CHECK_THROWS_WITH_AS(dw::build_rnn_model(c, 1), doctest::Contains("unknown algorithm"),
                       dw::Unsupported);
  c.knobs.algorithm = "fused";
  c.cell = "transformer";
  CHECK_THROWS_AS(dw::rnn_counts(c), dw::Unsupported);
}
