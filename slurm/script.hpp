// Batch scripts for sweeps: the job description, the checks and quoting every value goes through,
// and the rendering of a template into a script that sbatch accepts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace dnnscape::slurm {

// A submission that cannot be made (bad value, bad template, sbatch refused). what() is one line.
class SubmitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---- quoting and checks: the only ways a value reaches a script ----------------------------

// 'text' for bash: nothing inside is expanded. Throws on control characters (newlines included),
// which have no place in a name or path of a sweep.
std::string shell_quote(const std::string& text, const std::string& what);
// "text" for an #SBATCH line as sbatch parses it (backslash escapes \, " and #).
std::string sbatch_quote(const std::string& text, const std::string& what);
// A path inside a Slurm filename pattern (--output): % doubled, so it is never a replacement.
std::string slurm_pattern_literal(const std::string& path);
// Names that become file names or Slurm identifiers: letters, digits and . _ + - (not first).
// `extra` admits more characters (e.g. "," for partition lists). Throws SubmitError naming `what`.
void check_name(const std::string& value, const std::string& what, const std::string& extra = "");
// Constraint expressions (features joined by & | , with [..]*N counts): no shell metacharacters.
void check_constraint(const std::string& value);
// An environment variable name.
void check_env_name(const std::string& name);
// Slurm time limits: [D-]HH:MM:SS (or MM:SS), in seconds.
std::int64_t parse_time_limit(const std::string& text);
std::string format_time_limit(std::int64_t seconds);

// ---- the job --------------------------------------------------------------------------------

// One system of a multi-system submission: where it runs and what differs there.
struct System {
  std::string name;  // "" for a plain single-system submission
  std::string partition, account, constraint;
  std::int64_t nodes = 0;                    // 0 = the submission's
  std::int64_t workers_per_node = 0;         // 0 = the submission's
  std::map<std::string, std::string> knobs;  // knob -> YAML value (scalar or [list]) in the spec
  std::map<std::string, std::string> env;    // exported to every rank
  // Filled by the submission: what this system's job reads and writes.
  std::filesystem::path spec;     // the spec (or the derived spec with the knobs set)
  std::filesystem::path results;  // its results file
};

// Everything a batch script is rendered from. Paths are absolute.
struct BatchJob {
  std::string job_name;
  std::string partition, account, constraint;  // "" = the site's default / none
  std::int64_t nodes = 1;
  std::int64_t workers_per_node = 1;
  std::int64_t time_limit_s = 3600;
  std::int64_t grace_s = 120;  // USR1 this long before the time limit
  bool exclusive = false;
  std::string launcher = "auto";  // auto | mpirun | srun | none
  std::vector<std::string> mpirun_args;
  std::vector<std::string> srun_args;
  std::int64_t max_restarts = 20;
  std::filesystem::path dnnscape_bin;
  std::filesystem::path log_pattern;  // Slurm's --output (stdout and stderr), a filename pattern
  std::filesystem::path chdir;
  std::vector<System> systems;  // one: a plain job; several: a job array, one task per system
  std::string tool_version;
};

// The default template (slurm/templates/batch.sh, compiled in).
const std::string& default_template();
// Renders `template_text` for `job`: {{sbatch}}, {{settings}} and {{version}} are replaced; any
// other {{...}} or a missing {{sbatch}} / {{settings}} is a SubmitError.
std::string render_batch_script(const std::string& template_text, const BatchJob& job);
// Seconds the sweep gets after USR1 before running configs are abandoned.
std::int64_t abandon_after_s(std::int64_t grace_s);

// Files next to a results file OUT.h5: OUT.slurm.jsonl (one JSON line per job event: submitted,
// start, end, with job id and SLURM_RESTART_COUNT), OUT.slurm-%j.out (Slurm's stdout and stderr)
// and OUT.slurm.sh (the script as submitted).
std::filesystem::path sidecar_path(const std::filesystem::path& results);
std::filesystem::path log_pattern_for(const std::filesystem::path& results);
std::filesystem::path script_path_for(const std::filesystem::path& results);

}  // namespace dnnscape::slurm
