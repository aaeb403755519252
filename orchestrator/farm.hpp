// The MPI farm: rank 0 hands configs out to idle worker ranks (pull-based, largest predicted cost
// first, tiny configs batched) and alone writes the results; each worker rank runs its configs in
// a supervised executor process and sends the records back.
#pragma once

#include <functional>
#include <vector>

#include "orchestrator/mpi_session.hpp"
#include "orchestrator/sweep.hpp"
#include "store/record.hpp"
#include "worker/executor.hpp"

namespace dnnscape::orchestrator {

// Called on the master for every finished config, in completion order.
using RecordSink = std::function<void(const store::RunRecord&, const PlannedConfig&)>;

struct FarmOptions {
  double batch_target_s = 0.25;  // batch configs until their predicted time reaches this
  int max_batch = 512;
};

// Master side (rank 0 of a session with size > 1). Returns when every config is recorded, or
// after a stop request once the running batches came back. Crashed configs are retried once on a
// different worker (when there is one) before their row is written.
void farm_master(const MpiSession& mpi, std::vector<PlannedConfig> todo, const RecordSink& sink,
                 const FarmOptions& options = {});

// Worker side (every other rank): runs batches until the master says stop.
void farm_worker(const MpiSession& mpi, const worker::RunContext& ctx,
                 const std::string& executor_path);

// Splits `batch_target_s` worth of configs off the front of `queue` (at least one).
std::size_t batch_size(const std::vector<double>& predicted_s, std::size_t start,
                       const FarmOptions& options);

}  // namespace dnnscape::orchestrator
