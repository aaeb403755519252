// Facts about this machine and process that every results file records.
#pragma once

#include <cstdint>
#include <string>

namespace dnnscape::worker {

std::string hostname();
std::string cpu_model();
// CPUs in this process's affinity mask (what a worker may use).
int available_cpus();
// Bytes of memory this process could still allocate: MemAvailable, capped by a cgroup limit.
double available_memory_bytes();
// Peak resident set size of this process so far, bytes (getrusage).
double peak_rss_bytes();
std::string onednn_version();
// oneDNN's effective CPU ISA name as dispatched (e.g. "avx512_core_bf16").
std::string onednn_isa();
bool cpu_has_bf16();
std::string utc_now_iso();

}  // namespace dnnscape::worker
