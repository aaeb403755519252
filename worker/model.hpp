// A runnable model of one config, built from oneDNN primitives. oneDNN stays out of this header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "space/config.hpp"
#include "store/record.hpp"

namespace dnnscape::worker {

// What a step costs by the documented conventions (docs/conventions.md).
struct ModelCounts {
  double flops = 0;         // model FLOPs per step (training 6*B*params, inference 2*B*params)
  double bytes = 0;         // compulsory traffic: inputs + weights + outputs of every primitive
  double params = 0;        // weights and biases
  double memory_bytes = 0;  // all tensors the model allocates (incl. scratchpads)
};

class Model {
 public:
  virtual ~Model() = default;
  Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // One training step (forward, loss gradient, backward, SGD) or one inference forward pass.
  // Returns when the work has completed (stream waited).
  virtual void step() = 0;
  [[nodiscard]] virtual const ModelCounts& counts() const = 0;
  // Loss of the last step (training) or NaN (inference); used by tests.
  [[nodiscard]] virtual double last_loss() const = 0;
  // One step with every primitive timed on its own (the profiled pass of /ops).
  virtual std::vector<store::OpRecord> profile_step() = 0;
  // oneDNN implementation of the dominant primitive, e.g. "brg:avx512_core".
  [[nodiscard]] virtual std::string impl() const = 0;
};

// Thrown when oneDNN cannot build the model for this config (unsupported shape, dtype, ...).
class Unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds the model for `config` (primitives, memories, weight reorders, random data).
std::unique_ptr<Model> build_model(const space::Config& config, std::uint64_t seed = 42);

}  // namespace dnnscape::worker
