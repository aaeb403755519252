// Shared oneDNN helpers for the model families: checked primitive construction, the engine and
// stream a model runs on, a shared user scratchpad, deterministic parallel fills (oneTBB) and
// per-primitive timing for the profiled pass. Included by family sources only, never by headers
// that the rest of the project sees.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace dnnscape::worker::dnnl_util {

// A oneDNN failure with the caller's context ("layer 3 backward_weights: ...") and oneDNN's text.
class DnnlError : public std::runtime_error {
 public:
  DnnlError(std::string_view what, const dnnl::error& e);
  dnnl_status_t status;
};

// Runs `make` (typically a primitive-descriptor constructor) and translates a dnnl::error:
// unimplemented -> Unsupported (the config is skipped with oneDNN's reason), out-of-memory ->
// rethrown as is (the executor records it as OOM), anything else -> DnnlError with `what`.
[[noreturn]] void rethrow(std::string_view what, const dnnl::error& e);
template <class F>
auto checked(std::string_view what, F&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const dnnl::error& e) {
    rethrow(what, e);
  }
}

// The CPU engine and the persistent in-order stream of one model.
struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

std::size_t dtype_bytes(dnnl::memory::data_type dt);
// Logical size of a tensor (product of dims times element size): the compulsory-traffic
// convention; padding of blocked layouts is not counted.
double logical_bytes(const dnnl::memory::desc& md);
// "brg:avx512_core", "gemm:jit", ... as oneDNN names the implementation.
std::string impl_name(const dnnl::primitive_desc_base& pd);

// Attribute with a user-managed scratchpad, so the model owns (and counts) the scratchpad memory.
dnnl::primitive_attr user_scratchpad_attr();
dnnl::primitive_attr user_scratchpad_attr(const dnnl::post_ops& ops);

// One scratchpad buffer shared by all primitives of a model (they run one after another on one
// stream). Register every primitive descriptor, then allocate(), then make memories for them.
class SharedScratchpad {
 public:
  void require(const dnnl::primitive_desc_base& pd);
  void allocate();
  [[nodiscard]] dnnl::memory memory_for(const dnnl::primitive_desc_base& pd,
                                        const dnnl::engine& eng) const;
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  std::size_t bytes_ = 0;
  std::vector<std::byte> buffer_;  // empty until allocate()
};

// Deterministic counter-based uniform numbers: element i of stream `stream_id` depends only on
// (seed, stream_id, i), so a fill gives the same values whatever the thread count.
float uniform_at(std::uint64_t seed, std::uint64_t stream_id, std::uint64_t i, float lo, float hi);
// Fills dst[0, n) in parallel on oneTBB.
void fill_uniform(float* dst, std::size_t n, float lo, float hi, std::uint64_t seed,
                  std::uint64_t stream_id);

// bfloat16 bits of `x`, rounded to nearest even (NaN stays NaN), as oneDNN converts.
std::uint16_t to_bf16(float x);
float from_bf16(std::uint16_t b);

// One row of the softmax cross-entropy gradient with respect to the logits,
// (p - onehot(label)) * scale, written as f32 or (bf16) rounded to nearest even. In f32, `grad`
// may be `p` itself (in place).
void softmax_xent_grad_row(const float* p, void* grad, std::size_t classes, std::size_t label,
                           float scale, bool bf16);

// Copies between a host vector in `plain_md`'s layout and a memory of any layout (reorder).
void write_from_plain(const std::vector<float>& src, const dnnl::memory::desc& plain_md,
                      const dnnl::memory& dst, Runtime& rt);
std::vector<float> read_to_plain(const dnnl::memory& src, const dnnl::memory::desc& plain_md,
                                 Runtime& rt);

// Wall time of `run` followed by stream.wait() (the stream is waited before starting too).
double timed_s(dnnl::stream& stream, const std::function<void()>& run);

}  // namespace dnnscape::worker::dnnl_util
