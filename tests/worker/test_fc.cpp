// The FC family on oneDNN against a plain reference: forward, loss, backprop, SGD, counts.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "worker/families.hpp"
#include "worker/fc.hpp"

using namespace dnnscape;
using worker::FcModel;

namespace {

space::Config tiny(const std::string& algorithm = "default", const std::string& mode = "training") {
  space::Config c;
  c.family = space::Family::fc;
  c.layers = 2;
  c.nodes = 8;
  c.input = 5;
  c.output = 4;
  c.batch = 3;
  c.knobs.algorithm = algorithm;
  c.knobs.mode = mode;
  return c;
}

// Parameters in the model's canonical layout: w[l] is [out][in], b[l] is [out].
struct Params {
  std::vector<std::vector<double>> w, b;
  std::vector<std::int64_t> widths;
};

Params params_of(const FcModel& m) {
  Params p;
  for (int l = 0; l <= m.weighted_layers(); ++l) p.widths.push_back(m.width(l));
  for (int l = 0; l < m.weighted_layers(); ++l) {
    const auto w = m.weights(l);
    const auto b = m.biases(l);
    p.w.emplace_back(w.begin(), w.end());
    p.b.emplace_back(b.begin(), b.end());
  }
  return p;
}

// Straightforward double-precision forward and backprop of the ParaDnn FC model.
struct Reference {
  std::vector<double> logits;
  double loss = 0;
  std::vector<std::vector<double>> dw, db;
};

Reference reference(const Params& p, const std::vector<float>& x,
                    const std::vector<std::int32_t>& labels, bool with_gradients = true) {
  const std::size_t batch = labels.size();
  const std::size_t nl = p.w.size();
  std::vector<std::vector<double>> h(nl + 1);  // h[l] = input of layer l, [batch][width(l)]
  std::vector<std::vector<double>> z(nl);      // pre-activations
  h[0].assign(x.begin(), x.end());
  for (std::size_t l = 0; l < nl; ++l) {
    const auto in = static_cast<std::size_t>(p.widths[l]);
    const auto out = static_cast<std::size_t>(p.widths[l + 1]);
    z[l].assign(batch * out, 0.0);
    h[l + 1].assign(batch * out, 0.0);
    for (std::size_t n = 0; n < batch; ++n) {
      for (std::size_t o = 0; o < out; ++o) {
        double acc = p.b[l][o];
        for (std::size_t i = 0; i < in; ++i) acc += p.w[l][o * in + i] * h[l][n * in + i];
        z[l][n * out + o] = acc;
        h[l + 1][n * out + o] = l + 1 < nl ? std::max(acc, 0.0) : acc;
      }
    }
  }
  Reference r;
  r.logits = z[nl - 1];
  const auto classes = static_cast<std::size_t>(p.widths.back());
  std::vector<double> g(batch * classes);
  for (std::size_t n = 0; n < batch; ++n) {
    double mx = -1e300;
    for (std::size_t j = 0; j < classes; ++j) mx = std::max(mx, r.logits[n * classes + j]);
    double sum = 0;
    for (std::size_t j = 0; j < classes; ++j) sum += std::exp(r.logits[n * classes + j] - mx);
    const auto label = static_cast<std::size_t>(labels[n]);
    r.loss -= (r.logits[n * classes + label] - mx - std::log(sum)) / static_cast<double>(batch);
    for (std::size_t j = 0; j < classes; ++j) {
      const double prob = std::exp(r.logits[n * classes + j] - mx) / sum;
      g[n * classes + j] = (prob - (j == label ? 1.0 : 0.0)) / static_cast<double>(batch);
    }
  }
  if (!with_gradients) return r;
  r.dw.resize(nl);
  r.db.resize(nl);
  for (std::size_t l = nl; l-- > 0;) {
    const auto in = static_cast<std::size_t>(p.widths[l]);
    const auto out = static_cast<std::size_t>(p.widths[l + 1]);
    r.dw[l].assign(out * in, 0.0);
    r.db[l].assign(out, 0.0);
    std::vector<double> gin(batch * in, 0.0);
    for (std::size_t n = 0; n < batch; ++n) {
      for (std::size_t o = 0; o < out; ++o) {
        const double go = g[n * out + o];
        r.db[l][o] += go;
        for (std::size_t i = 0; i < in; ++i) {
          r.dw[l][o * in + i] += go * h[l][n * in + i];
          gin[n * in + i] += go * p.w[l][o * in + i];
        }
      }
    }
    if (l > 0) {
      for (std::size_t k = 0; k < gin.size(); ++k) gin[k] *= z[l - 1][k] > 0 ? 1.0 : 0.0;
    }
    g = std::move(gin);
  }
  return r;
}

// Non-zero biases, so the tests see them applied (the model initializes them to zero).
void set_test_biases(FcModel& m) {
  for (int l = 0; l < m.weighted_layers(); ++l) {
    std::vector<float> b(static_cast<std::size_t>(m.width(l + 1)));
    for (std::size_t o = 0; o < b.size(); ++o) {
      b[o] = 0.05F * static_cast<float>((static_cast<int>(o) + l) % 5) - 0.1F;
    }
    m.set_biases(l, b);
  }
}

void check_close(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
  }
}

}  // namespace

TEST_CASE("fc forward, loss and gradients match a plain reference") {
  for (const std::string alg : {"inner_product", "matmul"}) {
    CAPTURE(alg);
    FcModel m(tiny(alg), 7);
    REQUIRE(m.weighted_layers() == 3);
    CHECK(m.algorithm() == alg);
    set_test_biases(m);
    const Params p = params_of(m);
    const auto labels = m.labels();
    for (auto y : labels) CHECK((y >= 0 && y < 4));
    const auto x = m.inputs();
    for (float v : x) CHECK((v >= -0.5F && v <= 0.5F));
    const Reference want = reference(p, x, labels);

    m.step();
    check_close(m.logits(), want.logits, 1e-5);
    CHECK(m.last_loss() == doctest::Approx(want.loss).epsilon(1e-5));
    for (int l = 0; l < m.weighted_layers(); ++l) {
      CAPTURE(l);
      check_close(m.weight_gradient(l), want.dw[static_cast<std::size_t>(l)], 1e-5);
      check_close(m.bias_gradient(l), want.db[static_cast<std::size_t>(l)], 1e-5);
      // SGD: w' = w - lr * dw.
      const auto w1 = m.weights(l);
      const auto& w0 = p.w[static_cast<std::size_t>(l)];
      const auto& dw = want.dw[static_cast<std::size_t>(l)];
      for (std::size_t i = 0; i < w1.size(); ++i) {
        CHECK(w1[i] == doctest::Approx(w0[i] - worker::kFcLearningRate * dw[i]).epsilon(1e-5));
      }
    }
  }
}

TEST_CASE("the reference gradient agrees with finite differences (double)") {
  FcModel m(tiny("default"), 11);
  set_test_biases(m);
  const Params p = params_of(m);
  const auto x = m.inputs();
  const auto labels = m.labels();
  const Reference r = reference(p, x, labels);
  m.step();
  const double eps = 1e-6;
  auto fd = [&](int l, bool bias, std::size_t i) {
    Params q = p;
    auto& v = bias ? q.b[static_cast<std::size_t>(l)] : q.w[static_cast<std::size_t>(l)];
    v[i] += eps;
    const double up = reference(q, x, labels, false).loss;
    v[i] -= 2 * eps;
    const double down = reference(q, x, labels, false).loss;
    return (up - down) / (2 * eps);
  };
  for (int l = 0; l < m.weighted_layers(); ++l) {
    const auto dw = m.weight_gradient(l);
    const auto db = m.bias_gradient(l);
    for (std::size_t i : {std::size_t{0}, std::size_t{3}, dw.size() - 1}) {
      CAPTURE(l);
      CAPTURE(i);
      const double want = fd(l, false, i);
      CHECK(r.dw[static_cast<std::size_t>(l)][i] == doctest::Approx(want).epsilon(1e-6).scale(1));
      CHECK(static_cast<double>(dw[i]) == doctest::Approx(want).epsilon(1e-4).scale(1e-2));
    }
    const double want_b = fd(l, true, 1);
    CHECK(r.db[static_cast<std::size_t>(l)][1] == doctest::Approx(want_b).epsilon(1e-6).scale(1));
    CHECK(static_cast<double>(db[1]) == doctest::Approx(want_b).epsilon(1e-4).scale(1e-2));
  }
}

TEST_CASE("SGD lowers the loss on fixed labels") {
  for (const std::string alg : {"inner_product", "matmul"}) {
    CAPTURE(alg);
    FcModel m(tiny(alg), 3);
    std::vector<double> losses;
    for (int i = 0; i < 10; ++i) {
      m.step();
      losses.push_back(m.last_loss());
    }
    CHECK(std::isfinite(losses.front()));
    for (std::size_t i = 1; i < losses.size(); ++i) CHECK(losses[i] < losses[i - 1]);
  }
}

TEST_CASE("inference logits equal the training forward pass; algorithms agree") {
  FcModel train_ip(tiny("inner_product"), 5);
  FcModel train_mm(tiny("matmul"), 5);
  FcModel infer_ip(tiny("inner_product", "inference"), 5);
  FcModel infer_mm(tiny("matmul", "inference"), 5);
  for (FcModel* m : {&train_ip, &train_mm, &infer_ip, &infer_mm}) {
    set_test_biases(*m);
    m->step();
  }
  CHECK(std::isnan(infer_ip.last_loss()));
  const auto logits = train_ip.logits();
  const std::vector<double> want(logits.begin(), logits.end());
  check_close(infer_ip.logits(), want, 1e-5);
  check_close(infer_mm.logits(), want, 1e-5);
  check_close(train_mm.logits(), want, 1e-5);
  CHECK(train_mm.last_loss() == doctest::Approx(train_ip.last_loss()).epsilon(1e-6));
  for (int l = 0; l < train_ip.weighted_layers(); ++l) {
    const auto g = train_ip.weight_gradient(l);
    check_close(train_mm.weight_gradient(l), std::vector<double>(g.begin(), g.end()), 1e-5);
    const auto gb = train_ip.bias_gradient(l);
    check_close(train_mm.bias_gradient(l), std::vector<double>(gb.begin(), gb.end()), 1e-5);
    const auto w = train_ip.weights(l);
    check_close(train_mm.weights(l), std::vector<double>(w.begin(), w.end()), 1e-6);
  }
}

TEST_CASE("counts agree with fc_counts and the ParaDnn FLOP convention") {
  auto medium = tiny();
  medium.layers = 2;
  medium.nodes = 1024;
  medium.input = 1000;
  medium.output = 500;
  medium.batch = 256;
  for (auto c : {tiny(), medium}) {
    for (const std::string alg : {"inner_product", "matmul"}) {
      for (const std::string mode : {"training", "inference"}) {
        c.knobs.algorithm = alg;
        c.knobs.mode = mode;
        CAPTURE(c.label());
        const FcModel m(c, 1);
        const auto& got = m.counts();
        const auto want = worker::fc_counts(c);
        const double params = static_cast<double>(c.input * c.nodes + c.nodes +
                                                  (c.layers - 1) * (c.nodes * c.nodes + c.nodes) +
                                                  c.nodes * c.output + c.output);
        CHECK(got.params == params);
        CHECK(want.params == params);
        const double factor = mode == "training" ? 6 : 2;
        CHECK(got.flops == factor * static_cast<double>(c.batch) * params);
        CHECK(want.flops == got.flops);
        CHECK(want.bytes == got.bytes);
        // The analytic footprint omits oneDNN's scratchpads and the padding of blocked weight
        // layouts, so it is a lower bound, tight for realistic sizes (docs/conventions.md).
        CHECK(got.memory_bytes >= want.memory_bytes);
        if (c.nodes >= 1024) CHECK(got.memory_bytes <= 1.1 * want.memory_bytes);
      }
    }
  }
  CHECK(worker::predict_counts(tiny()).flops == worker::fc_counts(tiny()).flops);
}

TEST_CASE("unsupported knobs are reported as Unsupported") {
  auto c = tiny("winograd");
  CHECK_THROWS_AS(worker::build_fc(c, 1), worker::Unsupported);
  c = tiny();
  c.knobs.dtype = "f16";
  CHECK_THROWS_AS(worker::build_fc(c, 1), worker::Unsupported);
  CHECK_THROWS_AS(worker::fc_counts(c), worker::Unsupported);
  c = tiny();
  c.layers = 0;  // a single Dense(output) layer still works
  FcModel m(c, 1);
  m.step();
  CHECK(std::isfinite(m.last_loss()));
  CHECK(m.counts().flops == worker::fc_counts(c).flops);
}

// ---- bf16 (mixed precision: bf16 activations, gradients and weight copies, f32 master weights)

namespace {
bool bf16_here() {
  return __builtin_cpu_supports("avx512bf16") != 0;
}
}  // namespace

TEST_CASE("bf16 training matches the f32 reference within bf16 rounding; masters stay f32") {
  if (!bf16_here()) return;  // the executor records such rows skipped (test_executor)
  for (const std::string alg : {"inner_product", "matmul"}) {
    CAPTURE(alg);
    auto c = tiny(alg);
    c.knobs.dtype = "bf16";
    FcModel m(c, 7);
    set_test_biases(m);
    const Params p = params_of(m);
    const auto labels = m.labels();
    const auto x = m.inputs();  // already rounded to bf16
    const Reference want = reference(p, x, labels);
    m.step();
    // 8 significant bits per operand: a few ulp of 2^-8 after three layers.
    check_close(m.logits(), want.logits, 3e-2);
    CHECK(m.last_loss() == doctest::Approx(want.loss).epsilon(2e-2));
    for (int l = 0; l < m.weighted_layers(); ++l) {
      CAPTURE(l);
      const auto dw = m.weight_gradient(l);
      check_close(dw, want.dw[static_cast<std::size_t>(l)], 2e-2);
      check_close(m.bias_gradient(l), want.db[static_cast<std::size_t>(l)], 2e-2);
      // The update runs on the f32 masters: w' = w - lr * dw exactly as f32 arithmetic gives it,
      // not rounded to bf16 (an update of 1e-4 would vanish in 8 bits).
      const auto w1 = m.weights(l);
      const auto& w0 = p.w[static_cast<std::size_t>(l)];
      for (std::size_t i = 0; i < w1.size(); ++i) {
        const float expect = static_cast<float>(w0[i]) - worker::kFcLearningRate * dw[i];
        CHECK(w1[i] == doctest::Approx(expect).epsilon(1e-6));
      }
    }
    // And it trains.
    std::vector<double> losses{m.last_loss()};
    for (int i = 0; i < 8; ++i) {
      m.step();
      losses.push_back(m.last_loss());
    }
    CHECK(losses.back() < losses.front());
  }
}

TEST_CASE("bf16 inference logits match the f32 inference within bf16 rounding") {
  if (!bf16_here()) return;
  for (const std::string alg : {"inner_product", "matmul"}) {
    CAPTURE(alg);
    auto c = tiny(alg, "inference");
    FcModel f32(c, 5);
    c.knobs.dtype = "bf16";
    FcModel bf(c, 5);
    f32.step();
    bf.step();
    const auto want = f32.logits();
    check_close(bf.logits(), std::vector<double>(want.begin(), want.end()), 3e-2);
    CHECK(bf.impl().find("bf16") != std::string::npos);  // e.g. brg:avx512_core_bf16
  }
}

TEST_CASE("bf16 counts agree with fc_counts; FLOPs as f32, fewer bytes") {
  if (!bf16_here()) return;
  auto medium = tiny();
  medium.nodes = 1024;
  medium.input = 1000;
  medium.output = 500;
  medium.batch = 256;
  for (auto c : {tiny(), medium}) {
    for (const std::string alg : {"inner_product", "matmul"}) {
      for (const std::string mode : {"training", "inference"}) {
        c.knobs.algorithm = alg;
        c.knobs.mode = mode;
        c.knobs.dtype = "f32";
        const auto f32 = worker::fc_counts(c);
        c.knobs.dtype = "bf16";
        CAPTURE(c.label());
        const FcModel m(c, 1);
        const auto& got = m.counts();
        const auto want = worker::fc_counts(c);
        CHECK(got.params == f32.params);
        CHECK(got.flops == f32.flops);
        CHECK(want.flops == f32.flops);
        CHECK(want.bytes == doctest::Approx(got.bytes).epsilon(1e-12));
        CHECK(want.bytes < f32.bytes);
        CHECK(got.memory_bytes >= want.memory_bytes);
        if (c.nodes >= 1024) CHECK(got.memory_bytes <= 1.1 * want.memory_bytes);
      }
    }
  }
}
