// dnnscape-executor: runs configs for one worker, isolated in its own process (no MPI here).
// Protocol on stdin/stdout, one JSON document per line: first the RunContext, then configs; each
// config is answered with one RunRecord line. EOF on stdin ends it. oneDNN and OpenMP read their
// start-up environment (ONEDNN_MAX_CPU_ISA, OMP_*) once, which is why each setting gets its own
// process.
#include <cstdio>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>
#include <string>

#include "worker/executor.hpp"

int main() {
  std::ios::sync_with_stdio(false);
  std::string line;
  if (!std::getline(std::cin, line)) return 0;
  dnnscape::worker::RunContext ctx;
  try {
    ctx = dnnscape::worker::context_from_json(nlohmann::json::parse(line));
  } catch (const std::exception& e) {
    std::cerr << "dnnscape-executor: bad context: " << e.what() << '\n';
    return 2;
  }
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    try {
      const auto config = dnnscape::worker::config_from_json(nlohmann::json::parse(line));
      const auto record = dnnscape::worker::run_config(config, ctx);
      std::cout << dnnscape::worker::to_json(record).dump() << '\n' << std::flush;
    } catch (const std::bad_alloc&) {
      return 3;  // the supervisor records "out of memory"
    } catch (const std::exception& e) {
      std::cerr << "dnnscape-executor: " << e.what() << '\n';
      return 2;
    }
  }
  return 0;
}
