#include "worker/dnnl_util.hpp"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "worker/model.hpp"

namespace dnnscape::worker::dnnl_util {

namespace {

const char* status_name(dnnl_status_t s) {
  switch (s) {
    case dnnl_success:
      return "success";
    case dnnl_out_of_memory:
      return "out_of_memory";
    case dnnl_invalid_arguments:
      return "invalid_arguments";
    case dnnl_unimplemented:
      return "unimplemented";
    case dnnl_iterator_ends:
      return "iterator_ends";
    case dnnl_runtime_error:
      return "runtime_error";
    case dnnl_not_required:
      return "not_required";
  }
  return "unknown";
}

// splitmix64 finalizer (Steele, Lea, Flood, "Fast splittable pseudorandom number generators",
// OOPSLA 2014): a good 64-bit mix for counter-based generation.
std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

DnnlError::DnnlError(std::string_view what, const dnnl::error& e)
    : std::runtime_error(
          fmt::format("oneDNN {}: {} (status {})", what, e.what(), status_name(e.status))),
      status(e.status) {}

void rethrow(std::string_view what, const dnnl::error& e) {
  if (e.status == dnnl_unimplemented) {
    throw Unsupported(fmt::format("oneDNN has no implementation for {} ({})", what, e.what()));
  }
  if (e.status == dnnl_out_of_memory) throw e;
  throw DnnlError(what, e);
}

std::size_t dtype_bytes(dnnl::memory::data_type dt) {
  using dt_t = dnnl::memory::data_type;
  switch (dt) {
    case dt_t::f32:
    case dt_t::s32:
      return 4;
    case dt_t::bf16:
    case dt_t::f16:
      return 2;
    case dt_t::s8:
    case dt_t::u8:
      return 1;
    default:
      break;
  }
  return 0;
}

double logical_bytes(const dnnl::memory::desc& md) {
  double n = 1;
  for (auto d : md.dims()) n *= static_cast<double>(d);
  return md.dims().empty() ? 0.0 : n * static_cast<double>(dtype_bytes(md.data_type()));
}

std::string impl_name(const dnnl::primitive_desc_base& pd) {
  return pd.impl_info_str();
}

dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::primitive_attr user_scratchpad_attr(const dnnl::post_ops& ops) {
  dnnl::primitive_attr attr = user_scratchpad_attr();
  attr.set_post_ops(ops);
  return attr;
}

void SharedScratchpad::require(const dnnl::primitive_desc_base& pd) {
  bytes_ = std::max(bytes_, pd.scratchpad_desc().get_size());
}

void SharedScratchpad::allocate() {
  buffer_.resize(std::max<std::size_t>(bytes_, 64));
}

dnnl::memory SharedScratchpad::memory_for(const dnnl::primitive_desc_base& pd,
                                          const dnnl::engine& eng) const {
  // const_cast: oneDNN takes a void* handle; the buffer is only written by primitives.
  return {pd.scratchpad_desc(), eng, const_cast<std::byte*>(buffer_.data())};
}

float uniform_at(std::uint64_t seed, std::uint64_t stream_id, std::uint64_t i, float lo, float hi) {
  const std::uint64_t r = mix64(mix64(seed ^ mix64(stream_id)) + i);
  const float u = static_cast<float>(r >> 40) * 0x1.0p-24F;  // [0, 1) with 24 bits
  return lo + (hi - lo) * u;
}

void fill_uniform(float* dst, std::size_t n, float lo, float hi, std::uint64_t seed,
                  std::uint64_t stream_id) {
  tbb::parallel_for(tbb::blocked_range<std::size_t>(0, n, 1 << 14),
                    [&](const tbb::blocked_range<std::size_t>& r) {
                      for (std::size_t i = r.begin(); i != r.end(); ++i) {
                        dst[i] = uniform_at(seed, stream_id, i, lo, hi);
                      }
                    });
}

void softmax_xent_grad_row(const float* p, void* grad, std::size_t classes, std::size_t label,
                           float scale, bool bf16) {
  if (bf16) {
    auto* g = static_cast<std::uint16_t*>(grad);
    for (std::size_t j = 0; j < classes; ++j) g[j] = to_bf16(p[j] * scale);
    g[label] = to_bf16(p[label] * scale - scale);
  } else {
    auto* g = static_cast<float*>(grad);
    for (std::size_t j = 0; j < classes; ++j) g[j] = p[j] * scale;
    g[label] -= scale;
  }
}

std::uint16_t to_bf16(float x) {
  std::uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffU) > 0x7f800000U) return static_cast<std::uint16_t>((u >> 16) | 0x40U);
  u += 0x7fffU + ((u >> 16) & 1U);
  return static_cast<std::uint16_t>(u >> 16);
}

float from_bf16(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float x = 0;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

void write_from_plain(const std::vector<float>& src, const dnnl::memory::desc& plain_md,
                      const dnnl::memory& dst, Runtime& rt) {
  if (src.size() * sizeof(float) != plain_md.get_size()) {
    throw std::invalid_argument(fmt::format("write_from_plain: {} values for a tensor of {} bytes",
                                            src.size(), plain_md.get_size()));
  }
  dnnl::memory plain(plain_md, rt.engine, const_cast<float*>(src.data()));
  dnnl::memory out = dst;  // a handle copy: reorder::execute takes non-const references
  checked("reorder (write)", [&] {
    return dnnl::reorder(plain, out);
  }).execute(rt.stream, plain, out);
  rt.stream.wait();
}

std::vector<float> read_to_plain(const dnnl::memory& src, const dnnl::memory::desc& plain_md,
                                 Runtime& rt) {
  rt.stream.wait();
  std::vector<float> out(plain_md.get_size() / sizeof(float));
  dnnl::memory plain(plain_md, rt.engine, out.data());
  dnnl::memory in = src;
  checked("reorder (read)", [&] { return dnnl::reorder(in, plain); }).execute(rt.stream, in, plain);
  rt.stream.wait();
  return out;
}

double timed_s(dnnl::stream& stream, const std::function<void()>& run) {
  using clock = std::chrono::steady_clock;
  stream.wait();
  const auto t0 = clock::now();
  run();
  stream.wait();
  return std::chrono::duration<double>(clock::now() - t0).count();
}

}  // namespace dnnscape::worker::dnnl_util
