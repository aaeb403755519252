// The Slurm job around a sweep: who we are inside a job (for provenance), and what state the job
// writing a results file is in (for `dnnscape status`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace dnnscape::slurm {

// Provenance of a process that runs inside a Slurm job (from the environment Slurm sets; the
// batch script also exports DNNSCAPE_SLURM_JOB_ID / DNNSCAPE_SLURM_RESTART_COUNT to every rank).
struct JobEnvironment {
  std::string job_id;              // SLURM_JOB_ID (an array task has its own)
  std::string array_job_id;        // SLURM_ARRAY_JOB_ID, "" outside arrays
  std::string array_task_id;       // SLURM_ARRAY_TASK_ID, "" outside arrays
  std::int64_t restart_count = 0;  // SLURM_RESTART_COUNT: how often the job was requeued
  std::string cluster;             // SLURM_CLUSTER_NAME
  std::string partition;           // SLURM_JOB_PARTITION
  std::string nodelist;            // SLURM_JOB_NODELIST
  // "job 1234 restart 2" (with "_task" for arrays): one field for a provenance column.
  [[nodiscard]] std::string label() const;
};

// The job this process runs in, or nothing outside Slurm.
std::optional<JobEnvironment> job_from_environment();

// The Slurm state of the job that writes `results_file` (its id is in the sidecar
// OUT.slurm.jsonl that `dnnscape submit` and the batch script keep), e.g.
// "job 1234 RUNNING (restart 1)". squeue first, then sacct for jobs squeue has forgotten.
// "" when there is no such job or Slurm is unreachable (no commands, no controller).
std::string slurm_job_state(const std::filesystem::path& results_file);

// The last job id recorded in the sidecar of `results_file` ("" when none).
std::string last_job_id(const std::filesystem::path& results_file);

}  // namespace dnnscape::slurm
