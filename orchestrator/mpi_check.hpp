// Checked MPI calls: a failing return code becomes an exception with MPI's own error text.
#pragma once

namespace dnnscape::orchestrator {
void check_mpi(int rc, const char* what);
}  // namespace dnnscape::orchestrator
