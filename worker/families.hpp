// Per-family model builders and their analytic counts. build_model() dispatches here.
#pragma once

#include <cstdint>
#include <memory>

#include "worker/model.hpp"

namespace dnnscape::worker {

// Analytic counts of the model build_model() would build (no allocation, no oneDNN calls); used by
// `plan`, the cost model and the memory guard. memory_bytes is the predicted footprint.
ModelCounts fc_counts(const space::Config& config);
std::unique_ptr<Model> build_fc(const space::Config& config, std::uint64_t seed);
ModelCounts cnn_counts(const space::Config& config);
std::unique_ptr<Model> build_cnn(const space::Config& config, std::uint64_t seed);
ModelCounts rnn_counts(const space::Config& config);
std::unique_ptr<Model> build_rnn(const space::Config& config, std::uint64_t seed);

// Dispatch on config.family.
ModelCounts predict_counts(const space::Config& config);

}  // namespace dnnscape::worker
