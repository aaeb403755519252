#include "slurm/cli.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "slurm/process.hpp"
#include "slurm/script.hpp"
#include "space/spec.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace dnnscape::slurm {
namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_text(const fs::path& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(fmt::format("cannot read {} {}", what, path.string()));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& path, const std::string& text, fs::perms perms) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw SubmitError(fmt::format("cannot write {}", path.string()));
  fs::permissions(path, perms);
}

void append_line(const fs::path& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << '\n';
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

fs::path self_executable() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw SubmitError("cannot tell where the dnnscape binary is (/proc/self/exe)");
  return p;
}

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// A job name from the spec's name: the characters Slurm and file names take, others as '_'.
std::string job_name_for(const std::string& spec_name) {
  std::string s = "dnnscape-" + spec_name;
  for (auto& c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '.' && c != '_' && c != '-' &&
        c != '+') {
      c = '_';
    }
  }
  return s.substr(0, 64);
}

std::int64_t positive(const YAML::Node& n, const std::string& what) {
  std::int64_t v = 0;
  try {
    v = n.as<std::int64_t>();
  } catch (const YAML::Exception&) {
    throw UsageError(fmt::format("{}: expected a positive integer", what));
  }
  if (v < 1) throw UsageError(fmt::format("{}: expected a positive integer", what));
  return v;
}

// --systems FILE.yaml (a map name -> settings, optionally under `systems:`), or a comma list of
// names that are partitions ("skx,icx").
std::vector<System> parse_systems(const std::string& arg) {
  std::vector<System> out;
  std::error_code ec;
  if (!fs::is_regular_file(arg, ec)) {
    std::string item;
    std::istringstream in(arg);
    while (std::getline(in, item, ',')) {
      System s;
      s.name = item;
      s.partition = item;
      out.push_back(std::move(s));
    }
  } else {
    YAML::Node root;
    try {
      root = YAML::LoadFile(arg);
    } catch (const YAML::Exception& e) {
      throw UsageError(fmt::format("{}: {}", arg, e.what()));
    }
    if (root.IsMap() && root["systems"]) root = root["systems"];
    if (!root.IsMap())
      throw UsageError(fmt::format("{}: expected a map of system name -> settings", arg));
    for (const auto& kv : root) {
      System s;
      s.name = kv.first.as<std::string>();
      const std::string where = fmt::format("{}: systems.{}", arg, s.name);
      if (kv.second.IsNull()) {
        out.push_back(std::move(s));
        continue;
      }
      if (!kv.second.IsMap()) throw UsageError(where + ": expected a map of settings");
      for (const auto& setting : kv.second) {
        const auto key = setting.first.as<std::string>();
        const auto& v = setting.second;
        const std::string at = where + "." + key;
        if (key == "partition") {
          s.partition = v.as<std::string>();
        } else if (key == "account") {
          s.account = v.as<std::string>();
        } else if (key == "constraint") {
          s.constraint = v.as<std::string>();
        } else if (key == "nodes") {
          s.nodes = positive(v, at);
        } else if (key == "workers_per_node") {
          s.workers_per_node = positive(v, at);
        } else if (key == "knobs" || key == "env") {
          if (!v.IsMap()) throw UsageError(at + ": expected a map");
          for (const auto& e : v) {
            const auto name = e.first.as<std::string>();
            if (key == "knobs") {
              YAML::Emitter em;
              em << YAML::Flow << e.second;
              s.knobs[name] = em.c_str();
            } else {
              if (!e.second.IsScalar()) throw UsageError(at + "." + name + ": expected a value");
              s.env[name] = e.second.as<std::string>();
            }
          }
        } else {
          throw UsageError(
              fmt::format("{}: unknown setting (expected partition, account, constraint, nodes, "
                          "workers_per_node, knobs, env)",
                          at));
        }
      }
      out.push_back(std::move(s));
    }
  }
  if (out.empty()) throw UsageError("--systems names no system");
  for (std::size_t i = 0; i < out.size(); ++i) {
    check_name(out[i].name, "system name");
    for (std::size_t j = 0; j < i; ++j)
      if (out[j].name == out[i].name)
        throw UsageError(fmt::format("system {:?} is named twice", out[i].name));
  }
  return out;
}

// The spec with a system's knobs set: written next to its results, validated like any spec.
std::string derived_spec_text(const space::Spec& spec, const System& sys) {
  YAML::Node root = YAML::Load(spec.yaml_text);
  for (const auto& [knob, value] : sys.knobs) root["knobs"][knob] = YAML::Load(value);
  YAML::Emitter em;
  em << root;
  std::string text =
      fmt::format("# {} with the knobs of system '{}' (written by dnnscape submit)\n",
                  spec.path.filename().string(), sys.name);
  text += em.c_str();
  text += '\n';
  (void)space::parse_spec(text, fmt::format("system {} (knobs)", sys.name));  // throws SpecError
  return text;
}

std::string parsable_job_id(const std::string& sbatch_out) {
  std::string id = sbatch_out.substr(0, sbatch_out.find_first_of(";\n"));
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) return "";
  return id;
}

int cmd_submit(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape submit SPEC -o OUT.h5 --time HH:MM:SS [options]\n\n"
      "Renders a batch script for SPEC from a template and submits it with sbatch. The job runs\n"
      "the sweep as an MPI farm in its allocation (1 master + workers-per-node per node), writes\n"
      "Slurm's output to OUT.slurm-<job>.out and its job events (job id, SLURM_RESTART_COUNT) to\n"
      "OUT.slurm.jsonl next to OUT.h5. Slurm signals it --grace seconds before the time limit:\n"
      "the sweep stops handing out work, running configs finish (or are abandoned near the end of\n"
      "the grace), the file is flushed and, if work remains, the job requeues itself and resumes\n"
      "from the file. With --systems, one results file OUT.<system>.h5 per system (one job\n"
      "array when the systems share partition, account, constraint and sizes).\n\noptions");
  opts.add_options()("help,h", "show this help")("output,o", po::value<std::string>(),
                                                 "results file (HDF5)")(
      "time,t", po::value<std::string>(), "time limit per job run, HH:MM:SS or D-HH:MM:SS")(
      "nodes,N", po::value<std::int64_t>()->default_value(1), "nodes")(
      "workers-per-node", po::value<std::int64_t>()->default_value(1),
      "worker ranks per node (each runs configs in its executor)")(
      "partition,p", po::value<std::string>(), "partition")("account,A", po::value<std::string>(),
                                                            "account to charge")(
      "constraint,C", po::value<std::string>(), "node features, e.g. 'avx512&ib'")(
      "exclusive", "whole nodes (recommended for measurements)")(
      "grace", po::value<std::int64_t>()->default_value(120),
      "seconds before the time limit at which Slurm sends USR1 (it may come up to 60 s earlier)")(
      "max-restarts", po::value<std::int64_t>()->default_value(20),
      "requeue at most this often; then resubmit to go on")(
      "launcher", po::value<std::string>()->default_value("auto"),
      "auto | mpirun | srun | none (auto: mpirun if installed, else srun --mpi=pmix)")(
      "mpirun-args", po::value<std::string>()->default_value(""),
      "extra mpirun arguments, e.g. \"--bind-to none\" (words split on spaces)")(
      "srun-args", po::value<std::string>()->default_value(""), "extra srun arguments")(
      "systems", po::value<std::string>(),
      "one job per system: a YAML file (name: {partition, account, constraint, nodes, "
      "workers_per_node, knobs, env}) or a comma list of partitions")(
      "template", po::value<std::string>(),
      "batch script template (default: the built-in slurm/templates/batch.sh)")(
      "job-name,J", po::value<std::string>(), "job name (default dnnscape-<spec name>)")(
      "dry-run", "print the script(s) and the sbatch command; submit nothing");
  po::options_description hidden;
  hidden.add_options()("spec", po::value<std::string>(), "spec");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("spec", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << opts << '\n';
    return 0;
  }
  if (!vm.count("spec")) throw UsageError("submit needs a SPEC file (dnnscape submit --help)");
  if (!vm.count("output")) throw UsageError("submit needs -o OUT.h5, the results file");
  if (!vm.count("time")) throw UsageError("submit needs --time HH:MM:SS, the job's time limit");
  const bool dry_run = vm.count("dry-run") > 0;

  BatchJob job;
  job.tool_version = DNNSCAPE_VERSION;
  job.time_limit_s = parse_time_limit(vm["time"].as<std::string>());
  job.nodes = vm["nodes"].as<std::int64_t>();
  job.workers_per_node = vm["workers-per-node"].as<std::int64_t>();
  job.grace_s = vm["grace"].as<std::int64_t>();
  job.max_restarts = vm["max-restarts"].as<std::int64_t>();
  job.launcher = vm["launcher"].as<std::string>();
  job.exclusive = vm.count("exclusive") > 0;
  if (job.nodes < 1) throw UsageError("--nodes must be at least 1");
  if (job.workers_per_node < 1) throw UsageError("--workers-per-node must be at least 1");
  if (job.max_restarts < 0) throw UsageError("--max-restarts must be 0 or more");
  if (job.grace_s < 10 || job.grace_s >= job.time_limit_s)
    throw UsageError(fmt::format("--grace {} must be at least 10 s and shorter than --time ({} s)",
                                 job.grace_s, job.time_limit_s));
  if (job.launcher != "auto" && job.launcher != "mpirun" && job.launcher != "srun" &&
      job.launcher != "none")
    throw UsageError(
        fmt::format("--launcher {:?}: expected auto, mpirun, srun or none", job.launcher));
  if (job.launcher == "none" && (job.nodes > 1 || job.workers_per_node > 1))
    throw UsageError("--launcher none runs one process: it needs --nodes 1 --workers-per-node 1");
  job.mpirun_args = split_words(vm["mpirun-args"].as<std::string>());
  job.srun_args = split_words(vm["srun-args"].as<std::string>());
  if (vm.count("partition")) job.partition = vm["partition"].as<std::string>();
  if (vm.count("account")) job.account = vm["account"].as<std::string>();
  if (vm.count("constraint")) job.constraint = vm["constraint"].as<std::string>();

  const fs::path spec_path = fs::absolute(vm["spec"].as<std::string>()).lexically_normal();
  const auto spec = space::load_spec(spec_path);  // a bad spec stops here, before any job
  const fs::path out = fs::absolute(vm["output"].as<std::string>()).lexically_normal();
  (void)shell_quote(out.string(), "results path");  // one clear message for a path with a newline
  (void)shell_quote(spec_path.string(), "spec path");
  if (out.filename().empty() || out.stem().empty())
    throw UsageError(fmt::format("-o {:?} names no file", out.string()));
  job.job_name = vm.count("job-name") ? vm["job-name"].as<std::string>() : job_name_for(spec.name);
  check_name(job.job_name, "job name");
  job.dnnscape_bin = self_executable();
  job.chdir = out.parent_path();

  std::vector<System> systems;
  if (vm.count("systems")) {
    systems = parse_systems(vm["systems"].as<std::string>());
  } else {
    systems.emplace_back();
  }
  std::vector<std::pair<System*, std::string>> derived;  // system, spec text to write
  for (auto& s : systems) {
    if (s.name.empty()) {
      s.results = out;
      s.spec = spec_path;
    } else {
      const std::string stem = out.stem().string() + "." + s.name;
      s.results = out.parent_path() / (stem + out.extension().string());
      s.spec = spec_path;
      if (!s.knobs.empty()) {
        s.spec = out.parent_path() / (stem + ".spec.yaml");
        derived.emplace_back(&s, derived_spec_text(spec, s));
      }
    }
    // Every value is checked now, before anything is written or submitted.
    for (const auto* v : {&s.partition, &job.partition})
      if (!v->empty()) check_name(*v, "partition", ",");
    for (const auto* v : {&s.account, &job.account})
      if (!v->empty()) check_name(*v, "account");
    for (const auto* v : {&s.constraint, &job.constraint})
      if (!v->empty()) check_constraint(*v);
    for (const auto& [name, value] : s.env) {
      check_env_name(name);
      (void)shell_quote(value, "value of " + name);
    }
  }

  // Systems that differ only in knobs or environment share one job array; others get a job each.
  auto resources = [&](const System& s) {
    return std::make_tuple(s.partition.empty() ? job.partition : s.partition,
                           s.account.empty() ? job.account : s.account,
                           s.constraint.empty() ? job.constraint : s.constraint,
                           s.nodes > 0 ? s.nodes : job.nodes,
                           s.workers_per_node > 0 ? s.workers_per_node : job.workers_per_node);
  };
  std::vector<BatchJob> jobs;
  const bool one_array =
      systems.size() > 1 && std::all_of(systems.begin(), systems.end(), [&](const System& s) {
        return resources(s) == resources(systems.front());
      });
  auto job_for = [&](std::vector<System> members) {
    BatchJob j = job;
    std::tie(j.partition, j.account, j.constraint, j.nodes, j.workers_per_node) =
        resources(members.front());
    for (auto& m : members) m.partition = m.account = m.constraint = "";
    if (members.size() == 1) {
      j.log_pattern = log_pattern_for(members.front().results);
    } else {
      j.log_pattern = slurm_pattern_literal(out.parent_path().string()) + "/" +
                      slurm_pattern_literal(out.stem().string()) + ".slurm-%A_%a.out";
    }
    j.systems = std::move(members);
    return j;
  };
  if (systems.size() == 1 || one_array) {
    jobs.push_back(job_for(systems));
  } else {
    for (const auto& s : systems) jobs.push_back(job_for({s}));
  }

  const std::string template_text = vm.count("template")
                                        ? read_text(vm["template"].as<std::string>(), "template")
                                        : default_template();
  std::vector<std::pair<fs::path, std::string>> scripts;
  for (const auto& j : jobs) {
    const fs::path script =
        script_path_for(j.systems.size() == 1 ? j.systems.front().results : out);
    scripts.emplace_back(script, render_batch_script(template_text, j));
  }

  if (dry_run) {
    for (std::size_t i = 0; i < scripts.size(); ++i) {
      if (scripts.size() > 1) fmt::print("# ---- system {} ----\n", jobs[i].systems.front().name);
      fmt::print("{}", scripts[i].second);
      fmt::print("# dry run: would write {} and run: sbatch --parsable {}\n",
                 scripts[i].first.string(), scripts[i].first.string());
    }
    return 0;
  }

  fs::create_directories(out.parent_path());
  for (const auto& [sys, text] : derived)
    write_text(sys->spec, text,
               fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                   fs::perms::others_read);
  int failures = 0;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const auto& [script, text] = scripts[i];
    write_text(script, text,
               fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                   fs::perms::others_read | fs::perms::others_exec);
    const auto r = run_command({"sbatch", "--parsable", script.string()}, "", 60);
    const std::string id = parsable_job_id(r.out);
    if (!r.started || r.exit_code != 0 || id.empty()) {
      std::string why = r.err.empty() ? r.out : r.err;
      while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
      fmt::print(stderr, "dnnscape submit: sbatch {}: {}\n",
                 !r.started    ? "could not be run (is Slurm installed?)"
                 : r.timed_out ? "timed out"
                               : "refused the job",
                 why.empty() ? script.string() : why);
      ++failures;
      continue;
    }
    const auto& members = jobs[i].systems;
    for (std::size_t t = 0; t < members.size(); ++t) {
      const std::string member_id = members.size() > 1 ? fmt::format("{}_{}", id, t) : id;
      append_line(sidecar_path(members[t].results),
                  nlohmann::json{{"event", "submitted"},
                                 {"utc", utc_now()},
                                 {"job_id", member_id},
                                 {"system", members[t].name},
                                 {"script", script.string()},
                                 {"spec", members[t].spec.string()},
                                 {"results", members[t].results.string()}}
                      .dump());
    }
    const std::string where =
        fmt::format("{} node{} x {} worker{}, {}", jobs[i].nodes, jobs[i].nodes > 1 ? "s" : "",
                    jobs[i].workers_per_node, jobs[i].workers_per_node > 1 ? "s" : "",
                    format_time_limit(jobs[i].time_limit_s));
    if (members.size() == 1) {
      fmt::print("submitted job {}{} ({}): results {}\n", id,
                 members.front().name.empty() ? "" : " for system " + members.front().name, where,
                 members.front().results.string());
      const auto& results = members.front().results;
      fmt::print(
          "log: {}\n",
          (results.parent_path() / (results.stem().string() + ".slurm-" + id + ".out")).string());
    } else {
      fmt::print("submitted job array {} ({} systems; {}):\n", id, members.size(), where);
      for (std::size_t t = 0; t < members.size(); ++t)
        fmt::print("  {}_{} {}: results {}\n", id, t, members[t].name, members[t].results.string());
      fmt::print("logs: {}\n", jobs[i].log_pattern.string());
    }
    fmt::print("watch it: squeue -j {}   (or: dnnscape status {})\n", id,
               members.front().results.string());
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

const std::vector<std::string>& slurm_commands() {
  static const std::vector<std::string> cmds = {"submit"};
  return cmds;
}

int slurm_command(const std::string& cmd, const std::vector<std::string>& args) {
  try {
    if (cmd == "submit") return cmd_submit(args);
    fmt::print(stderr, "dnnscape: unknown command '{}'\n", cmd);
    return 2;
  } catch (const space::SpecError& e) {
    fmt::print(stderr, "{}\n", e.what());
    return 2;
  } catch (const po::error& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return 2;
  } catch (const UsageError& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return 2;
  } catch (const SubmitError& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return 2;
  } catch (const YAML::Exception& e) {
    fmt::print(stderr, "dnnscape {}: --systems: {}\n", cmd, e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, e.what());
    return 1;
  }
}

}  // namespace dnnscape::slurm
