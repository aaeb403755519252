#include "orchestrator/mpi_session.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <cstdlib>
#include <stdexcept>

#include "orchestrator/mpi_check.hpp"

namespace dnnscape::orchestrator {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(
      fmt::format("MPI {} failed: {}", what, std::string(text, static_cast<std::size_t>(len))));
}

bool MpiSession::launched_under_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

MpiSession::MpiSession(int* argc, char*** argv) {
  if (!launched_under_mpi()) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  active_ = true;
  // Errors come back as codes that check_mpi turns into exceptions, instead of aborting the job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  auto* node = new MPI_Comm;  // NOLINT: owned, freed in the destructor
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, node),
            "MPI_Comm_split_type");
  node_comm_ = node;
  check_mpi(MPI_Comm_rank(*node, &node_rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(*node, &node_size_), "MPI_Comm_size");
}

void MpiSession::node_first(const std::function<void()>& fn) const {
  if (!active_) {
    fn();
    return;
  }
  auto* node = static_cast<MPI_Comm*>(node_comm_);
  if (node_rank_ == 0) fn();
  check_mpi(MPI_Barrier(*node), "MPI_Barrier");
  if (node_rank_ != 0) fn();
}

MpiSession::~MpiSession() {
  if (!active_) return;
  auto* node = static_cast<MPI_Comm*>(node_comm_);
  if (node != nullptr) {
    MPI_Comm_free(node);
    delete node;  // NOLINT: see constructor
  }
  MPI_Finalize();
}

std::string MpiSession::broadcast(const std::string& from_root) const {
  if (!active_ || size_ == 1) return from_root;
  long long n = rank_ == 0 ? static_cast<long long>(from_root.size()) : 0;
  check_mpi(MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD), "MPI_Bcast");
  std::string s = rank_ == 0 ? from_root : std::string(static_cast<std::size_t>(n), '\0');
  check_mpi(MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return s;
}

std::vector<std::string> MpiSession::gather(const std::string& mine) const {
  if (!active_ || size_ == 1) return {mine};
  int n = static_cast<int>(mine.size());
  std::vector<int> sizes(rank_ == 0 ? static_cast<std::size_t>(size_) : 0);
  check_mpi(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather");
  std::vector<int> offsets(sizes.size());
  int total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    offsets[i] = total;
    total += sizes[i];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  check_mpi(MPI_Gatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(),
                        MPI_CHAR, 0, MPI_COMM_WORLD),
            "MPI_Gatherv");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    out.push_back(
        all.substr(static_cast<std::size_t>(offsets[i]), static_cast<std::size_t>(sizes[i])));
  return out;
}

}  // namespace dnnscape::orchestrator
