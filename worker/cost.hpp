// The roofline cost model: a step cannot be faster than its FLOPs at peak or its bytes at
// bandwidth. Orders the work (largest first), feeds `plan` and the ETA.
#pragma once

#include <string>

#include "worker/model.hpp"
#include "worker/peak.hpp"

namespace dnnscape::worker {

// Peak GFLOP/s for a dtype ("f32", "bf16"); the f32 peak when the dtype has none.
double peak_gflops_for(const Peaks& peaks, const std::string& dtype);

// max(flops / peak, bytes / bandwidth), seconds per step.
double predicted_step_time_s(const ModelCounts& counts, const Peaks& peaks,
                             const std::string& dtype);

}  // namespace dnnscape::worker
