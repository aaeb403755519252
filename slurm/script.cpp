#include "slurm/script.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

namespace dnnscape::slurm {

extern const char* const kDefaultBatchTemplate;  // generated from templates/batch.sh

namespace {

void reject_control_chars(const std::string& text, const std::string& what) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      throw SubmitError(
          fmt::format("{} contains a control character (newline, tab, ...): {:?}", what, text));
    }
  }
}

}  // namespace

std::string shell_quote(const std::string& text, const std::string& what) {
  reject_control_chars(text, what);
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string sbatch_quote(const std::string& text, const std::string& what) {
  reject_control_chars(text, what);
  std::string out = "\"";
  for (char c : text) {
    if (c == '\\' || c == '"' || c == '#') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string slurm_pattern_literal(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == '%') out += '%';
    out += c;
  }
  return out;
}

void check_name(const std::string& value, const std::string& what, const std::string& extra) {
  auto ok_char = [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '+' ||
           c == '-' || extra.find(c) != std::string::npos;
  };
  if (value.empty()) throw SubmitError(fmt::format("{} is empty", what));
  if (!std::all_of(value.begin(), value.end(), ok_char) || value.front() == '-' ||
      value.front() == '.') {
    throw SubmitError(
        fmt::format("{} {:?} may contain only letters, digits and . _ + -{} (and not start with - "
                    "or .)",
                    what, value, extra.empty() ? "" : fmt::format(" {}", extra)));
  }
}

void check_constraint(const std::string& value) {
  static const std::regex ok(R"(^[A-Za-z0-9._+\-&|,\[\]*:()!]+$)");
  if (!std::regex_match(value, ok)) {
    throw SubmitError(fmt::format(
        "constraint {:?} may contain only feature names and & | , [ ] * : ( ) !", value));
  }
}

void check_env_name(const std::string& name) {
  static const std::regex ok("^[A-Za-z_][A-Za-z0-9_]*$");
  if (!std::regex_match(name, ok))
    throw SubmitError(fmt::format("environment variable name {:?} is not a shell name", name));
}

std::int64_t parse_time_limit(const std::string& text) {
  static const std::regex re(R"(^(?:(\d+)-)?(?:(\d{1,2}):)?(\d{1,2}):(\d{2})$)");
  std::smatch m;
  if (!std::regex_match(text, m, re))
    throw SubmitError(fmt::format("--time {:?}: expected HH:MM:SS or D-HH:MM:SS", text));
  const auto num = [&](int i) { return m[i].matched ? std::stoll(m[i].str()) : 0LL; };
  const std::int64_t days = num(1), hours = num(2), minutes = num(3), seconds = num(4);
  if (seconds > 59 || (m[2].matched && minutes > 59))
    throw SubmitError(fmt::format("--time {:?}: minutes and seconds go up to 59", text));
  const std::int64_t total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds;
  if (total < 60)
    throw SubmitError(fmt::format("--time {:?}: Slurm's smallest time limit is 1 minute", text));
  return total;
}

std::string format_time_limit(std::int64_t s) {
  const std::int64_t days = s / 86400;
  s %= 86400;
  const std::string hms = fmt::format("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return days > 0 ? fmt::format("{}-{}", days, hms) : hms;
}

std::int64_t abandon_after_s(std::int64_t grace_s) {
  // Leave a quarter of the grace (at least 5 s) to stop the step, record and requeue.
  return std::max<std::int64_t>(1, grace_s - std::max<std::int64_t>(5, grace_s / 4));
}

std::filesystem::path sidecar_path(const std::filesystem::path& results) {
  return results.parent_path() / (results.stem().string() + ".slurm.jsonl");
}
std::filesystem::path log_pattern_for(const std::filesystem::path& results) {
  return slurm_pattern_literal(results.parent_path().string()) + "/" +
         slurm_pattern_literal(results.stem().string()) + ".slurm-%j.out";
}
std::filesystem::path script_path_for(const std::filesystem::path& results) {
  return results.parent_path() / (results.stem().string() + ".slurm.sh");
}

const std::string& default_template() {
  static const std::string text = kDefaultBatchTemplate;
  return text;
}

namespace {

std::string sbatch_block(const BatchJob& job) {
  std::string s;
  auto line = [&](const std::string& option) { s += "#SBATCH " + option + "\n"; };
  const System& first = job.systems.at(0);
  line("--job-name=" + sbatch_quote(job.job_name, "job name"));
  line(fmt::format("--nodes={}", job.nodes));
  line(fmt::format("--ntasks-per-node={}", job.workers_per_node));
  line("--time=" + format_time_limit(job.time_limit_s));
  line(fmt::format("--signal=B:USR1@{}", job.grace_s));
  line("--requeue");
  line("--open-mode=append");  // a restarted job appends to the same log
  line("--output=" + sbatch_quote(job.log_pattern.string(), "log path"));
  line("--chdir=" + sbatch_quote(job.chdir.string(), "results directory"));
  const std::string& partition = first.partition.empty() ? job.partition : first.partition;
  const std::string& account = first.account.empty() ? job.account : first.account;
  const std::string& constraint = first.constraint.empty() ? job.constraint : first.constraint;
  if (!partition.empty()) line("--partition=" + sbatch_quote(partition, "partition"));
  if (!account.empty()) line("--account=" + sbatch_quote(account, "account"));
  if (!constraint.empty()) line("--constraint=" + sbatch_quote(constraint, "constraint"));
  if (job.exclusive) line("--exclusive");
  if (job.systems.size() > 1) line(fmt::format("--array=0-{}", job.systems.size() - 1));
  if (!s.empty()) s.pop_back();
  return s;
}

std::string quoted_array(const std::vector<std::string>& items, const std::string& what) {
  std::string s = "(";
  for (const auto& a : items) {
    if (s.size() > 1) s += ' ';
    s += shell_quote(a, what);
  }
  return s + ")";
}

std::string system_settings(const System& sys, const std::string& indent) {
  std::string s;
  auto set = [&](const std::string& var, const std::string& value, const std::string& what) {
    s += fmt::format("{}{}={}\n", indent, var, shell_quote(value, what));
  };
  set("DNNSCAPE_SYSTEM", sys.name, "system name");
  set("DNNSCAPE_SPEC", sys.spec.string(), "spec path");
  set("DNNSCAPE_OUT", sys.results.string(), "results path");
  set("DNNSCAPE_SIDECAR", sidecar_path(sys.results).string(), "results path");
  for (const auto& [name, value] : sys.env) {
    check_env_name(name);
    s += fmt::format("{}export {}={}\n{}DNNSCAPE_EXPORTS+=({})\n", indent, name,
                     shell_quote(value, "value of " + name), indent, name);
  }
  return s;
}

std::string settings_block(const BatchJob& job) {
  std::string s;
  auto set = [&](const std::string& var, const std::string& value, const std::string& what) {
    s += fmt::format("{}={}\n", var, shell_quote(value, what));
  };
  set("DNNSCAPE_BIN", job.dnnscape_bin.string(), "dnnscape path");
  set("DNNSCAPE_LAUNCHER", job.launcher, "launcher");
  s += fmt::format("DNNSCAPE_WORKERS_PER_NODE={}\n", job.workers_per_node);
  s += fmt::format("DNNSCAPE_ABANDON_AFTER_S={}\n", abandon_after_s(job.grace_s));
  s += fmt::format("DNNSCAPE_MAX_RESTARTS={}\n", job.max_restarts);
  s += "DNNSCAPE_MPIRUN_ARGS=" + quoted_array(job.mpirun_args, "--mpirun-args") + "\n";
  s += "DNNSCAPE_SRUN_ARGS=" + quoted_array(job.srun_args, "--srun-args") + "\n";
  s += "DNNSCAPE_EXPORTS=()\n";
  if (job.systems.size() == 1) {
    s += system_settings(job.systems[0], "");
  } else {
    s += "case ${SLURM_ARRAY_TASK_ID:-} in  # one array task per system\n";
    for (std::size_t i = 0; i < job.systems.size(); ++i) {
      s += fmt::format("  {})\n{}    ;;\n", i, system_settings(job.systems[i], "    "));
    }
    s +=
        "  *) echo \"dnnscape job: no system for array task '${SLURM_ARRAY_TASK_ID:-}'\" >&2; exit "
        "1 ;;\nesac\n";
  }
  if (!s.empty()) s.pop_back();
  return s;
}

}  // namespace

std::string render_batch_script(const std::string& template_text, const BatchJob& job) {
  if (job.systems.empty()) throw SubmitError("a batch job needs at least one system");
  const std::map<std::string, std::string> values = {{"sbatch", sbatch_block(job)},
                                                     {"settings", settings_block(job)},
                                                     {"version", job.tool_version}};
  for (const char* required : {"sbatch", "settings"}) {
    if (template_text.find(fmt::format("{{{{{}}}}}", required)) == std::string::npos)
      throw SubmitError(fmt::format("the template has no {{{{{}}}}}", required));
  }
  std::string out;
  std::size_t pos = 0;
  int line = 1;
  while (pos < template_text.size()) {
    const auto open = template_text.find("{{", pos);
    const auto chunk_end = open == std::string::npos ? template_text.size() : open;
    line += static_cast<int>(
        std::count(template_text.begin() + static_cast<std::ptrdiff_t>(pos),
                   template_text.begin() + static_cast<std::ptrdiff_t>(chunk_end), '\n'));
    out.append(template_text, pos, chunk_end - pos);
    if (open == std::string::npos) break;
    const auto close = template_text.find("}}", open + 2);
    const std::string key =
        close == std::string::npos ? "" : template_text.substr(open + 2, close - open - 2);
    const auto it = values.find(key);
    if (it == values.end()) {
      throw SubmitError(fmt::format(
          "template line {}: unknown placeholder {:?} (known: {{{{sbatch}}}}, {{{{settings}}}}, "
          "{{{{version}}}})",
          line,
          template_text.substr(open, std::min<std::size_t>(40, template_text.size() - open))));
    }
    out += it->second;
    pos = close + 2;
  }
  return out;
}

}  // namespace dnnscape::slurm
