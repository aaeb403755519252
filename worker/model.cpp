#include "worker/families.hpp"

#include <fmt/format.h>

namespace dnnscape::worker {

ModelCounts predict_counts(const space::Config& config) {
  switch (config.family) {
    case space::Family::fc:
      return fc_counts(config);
    case space::Family::cnn:
      return cnn_counts(config);
    case space::Family::rnn:
      return rnn_counts(config);
    default:
      break;
  }
  throw Unsupported(fmt::format("family {} is not built yet", space::to_string(config.family)));
}

std::unique_ptr<Model> build_model(const space::Config& config, std::uint64_t seed) {
  switch (config.family) {
    case space::Family::fc:
      return build_fc(config, seed);
    case space::Family::cnn:
      return build_cnn(config, seed);
    case space::Family::rnn:
      return build_rnn(config, seed);
    default:
      break;
  }
  throw Unsupported(fmt::format("family {} is not built yet", space::to_string(config.family)));
}

}  // namespace dnnscape::worker
