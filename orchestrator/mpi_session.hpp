// MPI for the farm, initialised only when the process was started by an MPI launcher, so plain
// `dnnscape run` stays a single process with no MPI runtime behind it. MPI headers stay in
// orchestrator/*.cpp.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace dnnscape::orchestrator {

class MpiSession {
 public:
  // Initialises MPI when launched_under_mpi(); otherwise a one-process session.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] bool active() const { return active_; }
  // Rank among the processes on this host, and how many there are (1 / 0 without MPI).
  [[nodiscard]] int node_rank() const { return node_rank_; }
  [[nodiscard]] int node_size() const { return node_size_; }
  // Runs `fn` on the first process of each host before the others go on (e.g. measuring and
  // caching this host's peaks once instead of concurrently).
  void node_first(const std::function<void()>& fn) const;
  // Broadcast of a string from rank 0 (returns it on every rank).
  [[nodiscard]] std::string broadcast(const std::string& from_root) const;
  // Every rank's string, in rank order, on rank 0 (empty elsewhere).
  [[nodiscard]] std::vector<std::string> gather(const std::string& mine) const;

  // True when an MPI launcher (mpirun/mpiexec/srun with PMI/PMIx) started this process.
  static bool launched_under_mpi();

 private:
  bool active_ = false;
  int rank_ = 0;
  int size_ = 1;
  int node_rank_ = 0;
  int node_size_ = 1;
  void* node_comm_ = nullptr;  // MPI_Comm of this host's processes (opaque here)
};

}  // namespace dnnscape::orchestrator
