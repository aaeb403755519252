// The MPI farm: rank 0 hands configs out to idle worker ranks (pull-based, largest predicted cost
// first, small configs batched) and alone writes the results; each worker rank runs its configs
// in a supervised executor process and sends the records back. docs/farm.md describes it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "orchestrator/mpi_session.hpp"
#include "orchestrator/sweep.hpp"
#include "store/record.hpp"
#include "worker/executor.hpp"

namespace dnnscape::orchestrator {

class Progress;

// Called on the master with the records of one message (one batch), in completion order, and
// the planned configs they belong to (parallel vectors). Writes them and counts them done.
using BatchSink = std::function<void(const std::vector<store::RunRecord>&,
                                     const std::vector<const PlannedConfig*>&)>;

struct FarmOptions {
  // Batches hold configs until their expected time (cost model x the observed ratio of actual to
  // predicted time) reaches batch_target_s, and never more than 1/(2 x workers) of the expected
  // time left (guided self-scheduling: batches shrink towards the end, so the tail balances).
  double batch_target_s = 0.25;
  int max_batch = 512;
  // After a stop request, running configs may finish within this many seconds, then they are
  // killed (and stay to be run on resume).
  double grace_s = 60;
};

// Where one rank works: decided by the master from every rank's host (see place_workers).
struct Placement {
  bool active = true;  // false: a surplus rank on its host (--workers-per-node), does no work
  int slot = 0;        // which of `slots` disjoint core sets of the host is this worker's
  int slots = 0;       // 0 = not pinned (uses every CPU of its affinity mask)
  std::int64_t workers_on_host = 1;
};

// host_of_rank[r] is rank r's host. Rank 0 is the master and works only when it is alone.
// workers_per_node 0: every worker rank works, unpinned; K > 0: the first K worker ranks of each
// host work, each pinned to its own 1/K of the host's CPUs.
std::vector<Placement> place_workers(const std::vector<std::string>& host_of_rank,
                                     int workers_per_node);

// Slot `slot` of `slots` contiguous, disjoint, nearly equal parts of `cpus` (empty if there are
// fewer CPUs than slots for it).
std::vector<int> split_cpus(const std::vector<int>& cpus, int slot, int slots);

struct FarmResult {
  double wall_s = 0;  // first dispatch to last record
  std::int64_t recorded = 0;
  int workers = 0;
  bool interrupted = false;
};

// Master side (rank 0 of a session with size > 1): `todo` in the order to hand out (largest
// first); `active_workers` the ranks that work. Returns when every config is recorded, or after a
// stop request once the running batches came back (configs not run stay unrecorded). Crashed
// configs are retried once on a different worker (when there is one) before their row is written.
FarmResult farm_master(const MpiSession& mpi, const std::vector<PlannedConfig>& todo,
                       const std::vector<int>& active_workers, const BatchSink& sink,
                       Progress* progress, const FarmOptions& options = {});

// Worker side: runs batches (indices into `configs`, the spec's configs in spec order) until the
// master says stop.
void farm_worker(const MpiSession& mpi, const worker::RunContext& ctx,
                 const std::string& executor_path, const std::vector<space::Config>& configs,
                 const FarmOptions& options = {});

// Number of configs from `start` on that one batch takes: at least one, predicted seconds summed
// up to `cap_s`, at most options.max_batch.
std::size_t batch_size(const std::vector<double>& predicted_s, std::size_t start, double cap_s,
                       const FarmOptions& options);

}  // namespace dnnscape::orchestrator
