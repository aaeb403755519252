#include "worker/fc.hpp"

#include <fmt/format.h>
#include <omp.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <functional>
#include <limits>
#include <string_view>
#include <unordered_map>

#include "worker/best_mode.hpp"
#include "worker/dnnl_util.hpp"
#include "worker/families.hpp"

namespace dnnscape::worker {

namespace {

namespace du = dnnl_util;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dnnl::memory;

// Random-stream ids of the model's tensors (dnnl_util::uniform_at): fixed so that both
// algorithms and every thread count see the same numbers for the same seed.
constexpr std::uint64_t kInputStream = 1;
constexpr std::uint64_t kLabelStream = 2;
constexpr std::uint64_t kWeightStream = 100;  // + layer

// The validated shape of an FC config.
struct FcShape {
  std::int64_t batch = 0;
  std::vector<std::int64_t> widths;  // input, nodes x layers, output
  bool training = true;
  std::string algorithm;  // inner_product | matmul
  bool bf16 = false;      // bf16 activations, gradients and weight copies; f32 master weights

  // Data type of activations, activation gradients and the weights the primitives read.
  [[nodiscard]] dnnl::memory::data_type act_dt() const {
    return bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  }
  [[nodiscard]] double act_bytes() const { return bf16 ? 2.0 : 4.0; }

  [[nodiscard]] int weighted_layers() const { return static_cast<int>(widths.size()) - 1; }
  [[nodiscard]] std::int64_t in(int l) const { return widths[static_cast<std::size_t>(l)]; }
  [[nodiscard]] std::int64_t out(int l) const { return widths[static_cast<std::size_t>(l) + 1]; }
  [[nodiscard]] bool hidden(int l) const { return l + 1 < weighted_layers(); }
  [[nodiscard]] std::int64_t max_width() const {
    return *std::max_element(widths.begin(), widths.end());
  }
};

FcShape fc_shape(const space::Config& c) {
  if (c.family != space::Family::fc)
    throw std::invalid_argument("fc model built for a non-fc config");
  if (c.layers < 0 || c.nodes < 1 || c.input < 1 || c.output < 1 || c.batch < 1) {
    throw std::invalid_argument(fmt::format(
        "fc needs layers >= 0 and nodes, input, output, batch >= 1 (got {}, {}, {}, {}, {})",
        c.layers, c.nodes, c.input, c.output, c.batch));
  }
  FcShape s;
  const auto& k = c.knobs;
  if (k.mode != "training" && k.mode != "inference") {
    throw Unsupported(
        fmt::format("mode '{}' is not available for fc (training | inference)", k.mode));
  }
  if (k.dtype != "f32" && k.dtype != "bf16")
    throw Unsupported(fmt::format("dtype '{}' is not available for fc (f32 | bf16)", k.dtype));
  s.bf16 = k.dtype == "bf16";
  if (k.algorithm == "default") {
    s.algorithm = kFcDefaultAlgorithm;
  } else if (k.algorithm == "best") {
    // Resolved by build_fc (a measured choice); the counts are those of the default.
    s.algorithm = kFcDefaultAlgorithm;
  } else if (k.algorithm == "inner_product" || k.algorithm == "matmul") {
    s.algorithm = k.algorithm;
  } else {
    throw Unsupported(fmt::format(
        "algorithm '{}' is not available for fc (default | inner_product | matmul)", k.algorithm));
  }
  s.training = k.mode == "training";
  s.batch = c.batch;
  s.widths.push_back(c.input);
  for (std::int64_t l = 0; l < c.layers; ++l) s.widths.push_back(c.nodes);
  s.widths.push_back(c.output);
  return s;
}

}  // namespace

// Analytic counts; the model computes the same from the memory descriptors of what it built
// (tests/worker/test_fc.cpp checks both agree). Conventions: docs/conventions.md.
ModelCounts fc_counts(const space::Config& config) {
  const FcShape s = fc_shape(config);
  const double b = static_cast<double>(s.batch);
  const double f = 4;              // bytes per f32: master weights, biases, gradients, logits
  const double a = s.act_bytes();  // activations, their gradients, the weights primitives read
  const bool copy = s.bf16 && s.training;  // bf16 weight copies refreshed from f32 masters
  ModelCounts c;
  double tensors = a * b * static_cast<double>(s.in(0));  // inputs
  for (int l = 0; l < s.weighted_layers(); ++l) {
    const double in = static_cast<double>(s.in(l));
    const double out = static_cast<double>(s.out(l));
    const double p = in * out + out;
    const double d = s.hidden(l) ? a : f;  // the logits stay f32 for softmax and the loss
    c.params += p;
    c.bytes += a * (b * in + in * out) + f * out + d * b * out;  // forward: src, w, bias, dst
    if (!s.training) {
      tensors += a * in * out + f * out;  // weights (bf16 in bf16 inference), f32 bias
      continue;
    }
    tensors += f * p + (copy ? a * in * out : 0);  // master weights and biases; bf16 copy
    tensors += f * p + d * b * out;                // gradients (f32); activations kept for backward
    if (s.hidden(l)) c.bytes += a * 3 * b * out;   // ReLU backward: dst, diff_dst, diff_src
    // backward_data: diff_dst, weights, diff_src; not for layer 0 (no gradient of the input data)
    if (l > 0) c.bytes += a * (b * out + in * out + b * in);
    c.bytes += a * (b * in + b * out) + f * in * out;  // backward_weights: src, diff_dst, diff_w
    // Bias gradient: inside backward_weights for inner_product, a ones-vector matmul for matmul.
    c.bytes += s.algorithm == "matmul" ? a * (b + b * out) + f * out : f * out;
    c.bytes += f * 3 * p;                     // SGD update: weights and gradients read, written
    if (copy) c.bytes += (f + a) * in * out;  // reorder master -> bf16 copy
  }
  const double o = static_cast<double>(s.out(s.weighted_layers() - 1));
  c.bytes += f * 2 * b * o;      // softmax: src, dst
  tensors += f * b * o + f * b;  // probabilities, labels (int32)
  if (s.training) {
    c.bytes += (f + a) * b * o + f * b;  // loss: probabilities, labels, logits gradient
    tensors += 2 * a * b * static_cast<double>(s.max_width());  // ping-pong gradient buffers
    if (s.algorithm == "matmul") tensors += a * b;              // ones vector (bias gradient)
  } else {
    // Activations: hidden layers alternate between (up to) two buffers; the logits have their own.
    const int hidden = s.weighted_layers() - 1;
    tensors += std::min(hidden, 2) * a * b * static_cast<double>(config.nodes) + f * b * o;
  }
  c.memory_bytes = tensors;  // + scratchpads, which only oneDNN knows (docs/conventions.md)
  c.flops = (s.training ? 6.0 : 2.0) * b * c.params;
  return c;
}

struct FcModel::Impl {
  FcShape shape;
  du::Runtime rt;
  tbb::task_arena arena;
  du::SharedScratchpad scratchpad;
  ModelCounts counts;
  double last_loss = std::numeric_limits<double>::quiet_NaN();

  struct Layer {
    memory w, b, dw, db;  // f32 master weights, bias and their gradients (bf16 inference: w bf16)
    memory wc;            // the weights the primitives read: w itself, or its bf16 copy
    memory::desc w_canonical, b_canonical;  // [out][in] and [out] views for the accessors
  };
  std::vector<Layer> layers;
  memory x0, logits, probs, dlogits;
  memory ones;                   // [1][batch] of 1.0: the bias gradient of matmul
  std::vector<memory> grad_buf;  // owners of the gradient views (views do not keep them alive)
  std::vector<std::int32_t> labels;

  // One executed primitive (or host loop) of a step, with its conventional counts.
  struct Op {
    std::int64_t layer = -1;
    std::string op, phase;
    double flops = 0, bytes = 0;
    dnnl::primitive_desc_base pd;  // empty for host ops
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;
    std::function<void()> host;
    std::string impl;
  };
  std::vector<Op> ops;

  Impl(const space::Config& config, std::uint64_t seed);

  memory alloc(const memory::desc& md) {
    counts.memory_bytes += static_cast<double>(md.get_size());
    return du::checked("memory allocation", [&] { return memory(md, rt.engine); });
  }
  Op& add(std::int64_t layer, std::string op, std::string phase, double flops,
          const dnnl::primitive_desc_base& pd, std::unordered_map<int, memory> args) {
    Op o;
    o.layer = layer;
    o.op = std::move(op);
    o.phase = std::move(phase);
    o.flops = flops;
    o.pd = pd;
    o.args = std::move(args);
    for (const auto& [arg, m] : o.args) o.bytes += du::logical_bytes(m.get_desc());
    o.impl = du::impl_name(pd);
    scratchpad.require(pd);
    ops.push_back(std::move(o));
    return ops.back();
  }
  void run(Op& o) {
    if (o.host) {
      rt.stream.wait();
      o.host();
    } else {
      o.prim.execute(rt.stream, o.args);
    }
  }
  void loss_and_gradient();
  // Copies the master weights into the bf16 copy the primitives read (no-op without a copy).
  void refresh_copy(const Layer& L) {
    if (L.wc.get_data_handle() == L.w.get_data_handle()) return;
    memory src = L.w;
    memory dst = L.wc;
    du::checked("reorder (weights copy)", [&] {
      return dnnl::reorder(src, dst);
    }).execute(rt.stream, src, dst);
    rt.stream.wait();
  }
};

FcModel::Impl::Impl(const space::Config& config, std::uint64_t seed)
    : shape(fc_shape(config)), arena(std::max(1, omp_get_max_threads())) {
  const FcShape& s = shape;
  const memory::dim batch = s.batch;
  const int nl = s.weighted_layers();
  const bool mm = s.algorithm == "matmul";
  const auto fwd_kind =
      s.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const dt adt = s.act_dt();
  const bool copy = s.bf16 && s.training;  // f32 master weights + a bf16 copy (mixed precision)
  const auto plain = [](memory::dim r, memory::dim c, tag t = tag::ab, dt d = dt::f32) {
    return memory::desc({r, c}, d, t);
  };
  const auto view = [](const memory::desc& md, const memory& m) {
    return memory(md, m.get_engine(), m.get_data_handle());
  };

  // Inputs and labels, fixed for the model's life (ParaDnn trains on one random batch).
  x0 = alloc(plain(batch, s.in(0), tag::ab, adt));
  if (s.bf16) {
    std::vector<float> x(static_cast<std::size_t>(batch * s.in(0)));
    arena.execute([&] { du::fill_uniform(x.data(), x.size(), -0.5F, 0.5F, seed, kInputStream); });
    du::write_from_plain(x, plain(batch, s.in(0)), x0, rt);
  } else {
    arena.execute([&] {
      du::fill_uniform(static_cast<float*>(x0.get_data_handle()),
                       static_cast<std::size_t>(batch * s.in(0)), -0.5F, 0.5F, seed, kInputStream);
    });
  }
  labels.resize(static_cast<std::size_t>(batch));
  counts.memory_bytes += static_cast<double>(labels.size() * sizeof(std::int32_t));
  const auto classes = static_cast<float>(s.out(nl - 1));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const float u = du::uniform_at(seed, kLabelStream, i, 0.0F, classes);
    labels[i] = std::min(static_cast<std::int32_t>(u), static_cast<std::int32_t>(classes) - 1);
  }

  // Activations: training keeps every layer's output for backward; inference alternates two.
  std::vector<memory> act(static_cast<std::size_t>(nl));
  std::vector<memory> pingpong;
  for (int l = 0; l < nl; ++l) {
    const auto md = plain(batch, s.out(l), tag::ab, s.hidden(l) ? adt : dt::f32);
    if (s.training || l == nl - 1) {
      act[static_cast<std::size_t>(l)] = alloc(md);
    } else {
      if (pingpong.size() < 2 && pingpong.size() < static_cast<std::size_t>(l + 1)) {
        pingpong.push_back(alloc(md));
      }
      act[static_cast<std::size_t>(l)] = pingpong[static_cast<std::size_t>(l) % 2];
    }
  }
  logits = act.back();
  probs = alloc(plain(batch, s.out(nl - 1)));
  const auto src_of = [&](int l) { return l == 0 ? x0 : act[static_cast<std::size_t>(l) - 1]; };

  // Two gradient buffers, alternating backward through the layers; tensors are views of them.
  if (s.training) {
    for (int i = 0; i < 2; ++i) {
      grad_buf.push_back(alloc(memory::desc({batch * s.max_width()}, adt, tag::a)));
    }
    dlogits = view(plain(batch, s.out(nl - 1), tag::ab, adt), grad_buf[0]);
  }
  // The gradient with respect to layer l's output lives in buffer (nl - 1 - l) % 2.
  const auto grad_out = [&](int l) {
    return view(plain(batch, s.out(l), tag::ab, adt),
                grad_buf[static_cast<std::size_t>(nl - 1 - l) % 2]);
  };
  const auto grad_in = [&](int l) {
    return view(plain(batch, s.in(l), tag::ab, adt),
                grad_buf[static_cast<std::size_t>(nl - l) % 2]);
  };

  // ---- forward ----------------------------------------------------------------------------
  std::vector<dnnl::inner_product_forward::primitive_desc> ip_fwd(static_cast<std::size_t>(nl));
  layers.resize(static_cast<std::size_t>(nl));
  for (int l = 0; l < nl; ++l) {
    auto& L = layers[static_cast<std::size_t>(l)];
    const memory::dim in = s.in(l);
    const memory::dim out = s.out(l);
    const double flops = 2.0 * static_cast<double>(batch) * static_cast<double>(in * out + out);
    dnnl::post_ops relu;
    if (s.hidden(l)) relu.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F, 0.0F);
    const auto attr = du::user_scratchpad_attr(relu);
    const std::string what = fmt::format("layer {} forward", l);
    const auto src_md = plain(batch, in, tag::ab, adt);
    const auto dst_md = plain(batch, out, tag::ab, s.hidden(l) ? adt : dt::f32);
    if (mm) {
      // Training keeps plain [in][out] weights so backward can read them transposed in place.
      const auto w_md = s.training ? plain(in, out, tag::ab, adt) : plain(in, out, tag::any, adt);
      const auto b_md = plain(1, out);
      auto pd = du::checked(what, [&] {
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, w_md, b_md, dst_md), attr,
                                            rt.engine);
      });
      L.wc = alloc(pd.weights_desc());
      L.w = copy ? alloc(plain(in, out)) : L.wc;
      L.b = alloc(b_md);
      L.w_canonical = plain(in, out, tag::ba);
      L.b_canonical = b_md;
      add(l, "matmul", "forward", flops, pd,
          {{DNNL_ARG_SRC, src_of(l)},
           {DNNL_ARG_WEIGHTS, L.wc},
           {DNNL_ARG_BIAS, L.b},
           {DNNL_ARG_DST, act[static_cast<std::size_t>(l)]}});
    } else {
      const auto w_md = memory::desc({out, in}, adt, tag::any);
      const auto b_md = memory::desc({out}, dt::f32, tag::a);
      auto pd = du::checked(what, [&] {
        return dnnl::inner_product_forward::primitive_desc(
            dnnl::inner_product_forward::desc(fwd_kind, src_md, w_md, b_md, dst_md), attr,
            rt.engine);
      });
      ip_fwd[static_cast<std::size_t>(l)] = pd;
      L.wc = alloc(pd.weights_desc());
      L.w = L.wc;  // bf16 training: replaced below by an f32 master in the gradient's layout
      L.b = alloc(b_md);
      L.w_canonical = plain(out, in);
      L.b_canonical = b_md;
      add(l, "inner_product", "forward", flops, pd,
          {{DNNL_ARG_SRC, src_of(l)},
           {DNNL_ARG_WEIGHTS, L.wc},
           {DNNL_ARG_BIAS, L.b},
           {DNNL_ARG_DST, act[static_cast<std::size_t>(l)]}});
    }
    std::fill_n(static_cast<float*>(L.b.get_data_handle()), out, 0.0F);
  }

  {
    const auto md = plain(batch, s.out(nl - 1));
    auto pd = du::checked("softmax forward", [&] {
      return dnnl::softmax_forward::primitive_desc(dnnl::softmax_forward::desc(fwd_kind, md, 1),
                                                   du::user_scratchpad_attr(), rt.engine);
    });
    add(nl - 1, "softmax", "forward", 0, pd, {{DNNL_ARG_SRC, logits}, {DNNL_ARG_DST, probs}});
  }

  // ---- loss and backward ------------------------------------------------------------------
  if (s.training) {
    if (mm) {
      ones = alloc(plain(1, batch, tag::ab, adt));
      du::write_from_plain(std::vector<float>(static_cast<std::size_t>(batch), 1.0F),
                           plain(1, batch), ones, rt);
    }
    {
      Op o;
      o.layer = nl - 1;
      o.op = "loss";
      o.phase = "backward_data";
      o.bytes = (4.0 + s.act_bytes()) * static_cast<double>(batch * s.out(nl - 1)) +
                4.0 * static_cast<double>(batch);
      o.impl = "host:tbb";
      o.host = [this] { loss_and_gradient(); };
      ops.push_back(std::move(o));
    }
    for (int l = nl - 1; l >= 0; --l) {
      auto& L = layers[static_cast<std::size_t>(l)];
      const memory::dim in = s.in(l);
      const memory::dim out = s.out(l);
      const double phase_flops =
          2.0 * static_cast<double>(batch) * static_cast<double>(in * out + out);
      const memory dy = grad_out(l);
      const memory dx = grad_in(l);
      const memory y = act[static_cast<std::size_t>(l)];
      if (s.hidden(l)) {
        // ReLU was fused into the forward primitive, so its derivative is read off the output:
        // y > 0 exactly where the pre-activation was > 0. In place on the gradient buffer.
        const auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
        const auto md = plain(batch, out, tag::ab, adt);
        auto pd = du::checked(fmt::format("layer {} relu backward", l), [&] {
          const dnnl::eltwise_forward::primitive_desc hint(
              dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg, md, 0.0F, 0.0F),
              rt.engine);
          return dnnl::eltwise_backward::primitive_desc(
              dnnl::eltwise_backward::desc(alg, md, md, 0.0F, 0.0F), du::user_scratchpad_attr(),
              rt.engine, hint);
        });
        add(l, "eltwise", "backward_data", 0, pd,
            {{DNNL_ARG_DST, y}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_SRC, dy}});
      }
      const std::string bd = fmt::format("layer {} backward_data", l);
      const std::string bw = fmt::format("layer {} backward_weights", l);
      if (mm) {
        // dX = dY W^T and dW = X^T dY, with the transposes as strided views of the same buffers.
        const auto attr = du::user_scratchpad_attr();
        const auto w_t = view(plain(out, in, tag::ba, adt), L.wc);
        const auto x_t = view(plain(in, batch, tag::ba, adt), src_of(l));
        if (l > 0) {
          auto pd_d = du::checked(bd, [&] {
            return dnnl::matmul::primitive_desc(
                dnnl::matmul::desc(dy.get_desc(), w_t.get_desc(), dx.get_desc()), attr, rt.engine);
          });
          add(l, "matmul", "backward_data", phase_flops, pd_d,
              {{DNNL_ARG_SRC, dy}, {DNNL_ARG_WEIGHTS, w_t}, {DNNL_ARG_DST, dx}});
        }
        L.dw = alloc(L.w.get_desc());  // f32 (the master's layout)
        L.db = alloc(L.b.get_desc());
        auto pd_w = du::checked(bw, [&] {
          return dnnl::matmul::primitive_desc(
              dnnl::matmul::desc(x_t.get_desc(), dy.get_desc(), L.dw.get_desc()), attr, rt.engine);
        });
        const double bias_flops = 2.0 * static_cast<double>(batch * out);
        add(l, "matmul", "backward_weights", phase_flops - bias_flops, pd_w,
            {{DNNL_ARG_SRC, x_t}, {DNNL_ARG_WEIGHTS, dy}, {DNNL_ARG_DST, L.dw}});
        // db = 1^T dY as a matrix-vector product: oneDNN 2.6 has only a reference reduction.
        auto pd_b = du::checked(fmt::format("layer {} bias gradient", l), [&] {
          return dnnl::matmul::primitive_desc(
              dnnl::matmul::desc(ones.get_desc(), dy.get_desc(), L.db.get_desc()), attr, rt.engine);
        });
        add(l, "matmul", "backward_weights", bias_flops, pd_b,
            {{DNNL_ARG_SRC, ones}, {DNNL_ARG_WEIGHTS, dy}, {DNNL_ARG_DST, L.db}});
      } else {
        const auto& fwd = ip_fwd[static_cast<std::size_t>(l)];
        const auto attr = du::user_scratchpad_attr();
        if (l > 0) {
          auto pd_d = du::checked(bd, [&] {
            return dnnl::inner_product_backward_data::primitive_desc(
                dnnl::inner_product_backward_data::desc(dx.get_desc(), fwd.weights_desc(),
                                                        dy.get_desc()),
                attr, rt.engine, fwd);
          });
          add(l, "inner_product", "backward_data", phase_flops, pd_d,
              {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, L.wc}, {DNNL_ARG_DIFF_SRC, dx}});
        }
        // The weight gradient takes the weights' own (blocked) layout, so SGD is elementwise;
        // with bf16 it is f32 in the layout oneDNN picks, and the f32 master takes that layout.
        const auto dw_md = copy ? memory::desc({out, in}, dt::f32, tag::any) : fwd.weights_desc();
        auto pd_w = du::checked(bw, [&] {
          return dnnl::inner_product_backward_weights::primitive_desc(
              dnnl::inner_product_backward_weights::desc(src_of(l).get_desc(), dw_md,
                                                         L.b.get_desc(), dy.get_desc()),
              attr, rt.engine, fwd);
        });
        if (copy) L.w = alloc(pd_w.diff_weights_desc());
        L.dw = alloc(pd_w.diff_weights_desc());
        L.db = alloc(pd_w.diff_bias_desc());
        add(l, "inner_product", "backward_weights", phase_flops, pd_w,
            {{DNNL_ARG_SRC, src_of(l)},
             {DNNL_ARG_DIFF_DST, dy},
             {DNNL_ARG_DIFF_WEIGHTS, L.dw},
             {DNNL_ARG_DIFF_BIAS, L.db}});
      }
      // SGD: w <- w - lr * dw, in place (oneDNN sum allows dst == first source).
      for (const auto& [p, g] : {std::pair{L.w, L.dw}, std::pair{L.b, L.db}}) {
        auto pd = du::checked(fmt::format("layer {} update", l), [&] {
          return dnnl::sum::primitive_desc(p.get_desc(), {1.0F, -kFcLearningRate},
                                           {p.get_desc(), g.get_desc()}, rt.engine,
                                           du::user_scratchpad_attr());
        });
        add(l, "update", "update", 0, pd,
            {{DNNL_ARG_MULTIPLE_SRC, p}, {DNNL_ARG_MULTIPLE_SRC + 1, g}, {DNNL_ARG_DST, p}});
      }
      if (copy) {
        // Mixed precision: the updated f32 master is rounded into the bf16 copy for the next step.
        auto pd = du::checked(fmt::format("layer {} weights copy", l), [&] {
          return dnnl::reorder::primitive_desc(rt.engine, L.w.get_desc(), rt.engine,
                                               L.wc.get_desc(), du::user_scratchpad_attr());
        });
        add(l, "reorder", "update", 0, pd, {{DNNL_ARG_FROM, L.w}, {DNNL_ARG_TO, L.wc}});
      }
    }
  }

  // Glorot-uniform weights (Glorot & Bengio, AISTATS 2010), zero biases (Keras Dense defaults),
  // written once every layout (and the master of a bf16 copy) is known.
  for (int l = 0; l < nl; ++l) {
    auto& L = layers[static_cast<std::size_t>(l)];
    const float limit = std::sqrt(6.0F / static_cast<float>(s.in(l) + s.out(l)));
    std::vector<float> w(static_cast<std::size_t>(s.in(l)*s.out(l)));
    arena.execute([&] {
      du::fill_uniform(w.data(), w.size(), -limit, limit, seed,
                       kWeightStream + static_cast<std::uint64_t>(l));
    });
    du::write_from_plain(w, L.w_canonical, L.w, rt);
    refresh_copy(L);
  }

  // Primitives are created once the shared scratchpad exists.
  scratchpad.allocate();
  counts.memory_bytes += static_cast<double>(scratchpad.bytes());
  for (auto& o : ops) {
    if (o.host) continue;
    o.prim = du::checked(fmt::format("layer {} {} {}", o.layer, o.op, o.phase),
                         [&] { return dnnl::primitive(o.pd.get()); });
    o.args[DNNL_ARG_SCRATCHPAD] = scratchpad.memory_for(o.pd, rt.engine);
    counts.bytes += o.bytes;
  }
  // Model FLOPs by the convention (docs/conventions.md): 2·B·params forward, 3x that in training,
  // although layer 0's backward-data pass (the gradient of the input data) is not executed.
  for (int l = 0; l < nl; ++l)
    counts.flops += (s.training ? 6.0 : 2.0) * static_cast<double>(batch) *
                    static_cast<double>(s.in(l)*s.out(l) + s.out(l));
  for (const auto& o : ops) {
    if (o.host) counts.bytes += o.bytes;
  }
  const auto elements = [](const memory::desc& md) {
    double n = 1;
    for (auto d : md.dims()) n *= static_cast<double>(d);
    return n;
  };
  for (const auto& L : layers) counts.params += elements(L.w.get_desc()) + elements(L.b.get_desc());
}

// Softmax cross-entropy over the probabilities: loss = -mean log p[label], and its gradient with
// respect to the logits, (p - onehot) / batch, row-parallel on oneTBB.
void FcModel::Impl::loss_and_gradient() {
  const auto batch = static_cast<std::size_t>(shape.batch);
  const auto classes = static_cast<std::size_t>(shape.widths.back());
  const auto* p = static_cast<const float*>(probs.get_data_handle());
  void* g = dlogits.get_data_handle();
  const bool bf16 = shape.bf16;
  const float inv_batch = 1.0F / static_cast<float>(batch);
  const double sum = arena.execute([&] {
    return tbb::parallel_deterministic_reduce(
        tbb::blocked_range<std::size_t>(0, batch, 16), 0.0,
        [&](const tbb::blocked_range<std::size_t>& r, double acc) {
          for (std::size_t i = r.begin(); i != r.end(); ++i) {
            const float* pi = p + i * classes;
            const auto label = static_cast<std::size_t>(labels[i]);
            void* gi = bf16 ? static_cast<void*>(static_cast<std::uint16_t*>(g) + i * classes)
                            : static_cast<void*>(static_cast<float*>(g) + i * classes);
            du::softmax_xent_grad_row(pi, gi, classes, label, inv_batch, bf16);
            acc -= std::log(std::max(static_cast<double>(pi[label]), double{FLT_MIN}));
          }
          return acc;
        },
        std::plus<>());
  });
  last_loss = sum / static_cast<double>(batch);
}

FcModel::FcModel(const space::Config& config, std::uint64_t seed)
    : impl_(std::make_unique<Impl>(config, seed)) {}
FcModel::~FcModel() = default;

void FcModel::step() {
  auto& m = *impl_;
  for (auto& o : m.ops) m.run(o);
  m.rt.stream.wait();
}

const ModelCounts& FcModel::counts() const {
  return impl_->counts;
}
double FcModel::last_loss() const {
  return impl_->last_loss;
}

std::vector<store::OpRecord> FcModel::profile_step() {
  auto& m = *impl_;
  std::vector<store::OpRecord> out;
  out.reserve(m.ops.size());
  for (auto& o : m.ops) {
    store::OpRecord r;
    r.layer = o.layer;
    r.op = o.op;
    r.phase = o.phase;
    r.flops = o.flops;
    r.bytes = o.bytes;
    r.impl = o.impl;
    r.time_s = du::timed_s(m.rt.stream, [&] { m.run(o); });
    out.push_back(std::move(r));
  }
  return out;
}

std::string FcModel::impl() const {
  const auto& ops = impl_->ops;
  const auto it = std::max_element(ops.begin(), ops.end(),
                                   [](const auto& a, const auto& b) { return a.flops < b.flops; });
  return it == ops.end() ? std::string() : it->impl;
}

int FcModel::weighted_layers() const {
  return impl_->shape.weighted_layers();
}
std::int64_t FcModel::width(int l) const {
  return impl_->shape.widths.at(static_cast<std::size_t>(l));
}
std::string FcModel::algorithm() const {
  return impl_->shape.algorithm;
}

namespace {
const auto& layer_at(const auto& layers, int l) {
  if (l < 0 || static_cast<std::size_t>(l) >= layers.size()) {
    throw std::out_of_range(fmt::format("fc layer {} out of range", l));
  }
  return layers[static_cast<std::size_t>(l)];
}
std::vector<float> read_or_empty(const memory& m, const memory::desc& md, du::Runtime& rt) {
  return m ? du::read_to_plain(m, md, rt) : std::vector<float>{};
}
}  // namespace

std::vector<float> FcModel::weights(int l) const {
  const auto& L = layer_at(impl_->layers, l);
  return du::read_to_plain(L.w, L.w_canonical, impl_->rt);
}
std::vector<float> FcModel::biases(int l) const {
  const auto& L = layer_at(impl_->layers, l);
  return du::read_to_plain(L.b, L.b_canonical, impl_->rt);
}
std::vector<float> FcModel::weight_gradient(int l) const {
  const auto& L = layer_at(impl_->layers, l);
  return read_or_empty(L.dw, L.w_canonical, impl_->rt);
}
std::vector<float> FcModel::bias_gradient(int l) const {
  const auto& L = layer_at(impl_->layers, l);
  return read_or_empty(L.db, L.b_canonical, impl_->rt);
}
std::vector<float> FcModel::inputs() const {
  const auto& d = impl_->x0.get_desc().dims();
  return du::read_to_plain(impl_->x0, memory::desc(d, dt::f32, tag::ab), impl_->rt);
}
std::vector<std::int32_t> FcModel::labels() const {
  return impl_->labels;
}
std::vector<float> FcModel::logits() const {
  return du::read_to_plain(impl_->logits, impl_->logits.get_desc(), impl_->rt);
}
void FcModel::set_weights(int l, const std::vector<float>& w) {
  const auto& L = layer_at(impl_->layers, l);
  du::write_from_plain(w, L.w_canonical, L.w, impl_->rt);
  impl_->refresh_copy(L);
}
void FcModel::set_biases(int l, const std::vector<float>& b) {
  const auto& L = layer_at(impl_->layers, l);
  du::write_from_plain(b, L.b_canonical, L.b, impl_->rt);
}

namespace {

// algorithm best for fc: one algorithm for the whole model (mixing inner_product and matmul per
// layer would put reorders of weights and activations between the layers: inner_product wants
// its own weights blocking, matmul plain ones), chosen by measuring both on the model's first
// layers alone: input -> first width -> second width (a layers-1 model with the same batch, mode,
// dtype, threads; a layers-0 model when there is no hidden layer). Two layers, because layer 0
// has no backward-data pass and the algorithms differ most there. Their softmax and loss are
// common to both. Same FLOPs and bytes, so the roofline model ranks them equal and prunes
// neither. The choice is cached like the CNN's (worker/best_mode.hpp).
std::string choose_fc_algorithm(const space::Config& config) {
  const FcShape s = fc_shape(config);
  const bool two = s.weighted_layers() > 1;
  const best::LayerKey key =
      two ? best::make_key("fc_first_layers",
                           {{"mb", s.batch}, {"ic", s.in(0)}, {"hc", s.out(0)}, {"oc", s.out(1)}},
                           config.knobs.mode, config.knobs.dtype)
          : best::make_key("fc_first_layer", {{"mb", s.batch}, {"ic", s.in(0)}, {"oc", s.out(0)}},
                           config.knobs.mode, config.knobs.dtype);
  space::Config first = config;
  first.layers = two ? 1 : 0;
  first.nodes = s.out(0);
  first.output = two ? s.out(1) : s.out(0);
  static_assert(std::string_view(kFcDefaultAlgorithm) == "matmul");  // names.front()
  return best::choose_whole_model(key, {"matmul", "inner_product"}, [&](const std::string& name) {
    first.knobs.algorithm = name;
    return best::Variant{std::make_unique<FcModel>(first, 42), fc_counts(first)};
  });
}

}  // namespace

std::unique_ptr<Model> build_fc(const space::Config& config, std::uint64_t seed) {
  if (config.knobs.algorithm == "best") {
    space::Config chosen = config;
    chosen.knobs.algorithm = choose_fc_algorithm(config);
    return std::make_unique<best::ChosenModel>(std::make_unique<FcModel>(chosen, seed),
                                               chosen.knobs.algorithm);
  }
  return std::make_unique<FcModel>(config, seed);
}

}  // namespace dnnscape::worker
