#include "analysis/cli.hpp"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/budget.hpp"
#include "analysis/cli_args.hpp"
#include "analysis/compare.hpp"
#include "analysis/frame.hpp"
#include "analysis/heatmap.hpp"
#include "analysis/regress.hpp"
#include "analysis/report.hpp"
#include "analysis/roofline.hpp"
#include "store/results.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace dnnscape::analysis {

bool parse_with_inputs(const std::vector<std::string>& args, const po::options_description& opts,
                       po::variables_map& vm) {
  po::options_description hidden;
  hidden.add_options()("input", po::value<std::vector<std::string>>(), "input");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("input", -1);
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") == 0) return true;
  std::cout << opts << '\n';
  return false;
}

namespace {

constexpr int kExitUsage = 2;

struct Common {
  std::vector<fs::path> inputs;
  fs::path out_dir;
  bool json = false;
  std::string where;
  std::string metric;
  bool metric_defaulted = true;
};

std::string one_line(std::string s) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return s;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, ','))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

void add_common(po::options_description& opts, const char* metric_default) {
  opts.add_options()("help,h", "show this help")(
      "output,o", po::value<std::string>(),
      "output directory for plots and CSV tables (default: INPUT-plots beside the first input)")(
      "json", po::bool_switch(), "print the results as JSON on stdout instead of the finding")(
      "where", po::value<std::string>()->default_value(""),
      "filter rows, e.g. 'family==fc && batch>=256' (==, !=, <, <=, >, >=, &&, ||, parentheses)");
  if (metric_default != nullptr)
    opts.add_options()("metric", po::value<std::string>()->default_value(metric_default),
                       "metric (a /runs column)");
}

// Parses args; returns false after printing --help.
bool parse(const std::vector<std::string>& args, po::options_description& opts, Common& c,
           po::variables_map& vm, std::size_t min_inputs) {
  if (!parse_with_inputs(args, opts, vm)) return false;
  if (vm.count("input"))
    for (const auto& s : vm["input"].as<std::vector<std::string>>()) c.inputs.emplace_back(s);
  if (c.inputs.size() < min_inputs)
    throw InputError(min_inputs == 1
                         ? "needs a results file (see --help)"
                         : fmt::format("needs {} or more results files (see --help)", min_inputs));
  for (const auto& in : c.inputs)
    if (!fs::exists(in)) throw InputError(fmt::format("{}: no such file", in.string()));
  c.out_dir = vm.count("output") ? fs::path(vm["output"].as<std::string>())
                                 : fs::absolute(c.inputs[0]).parent_path() /
                                       (c.inputs[0].stem().string() + "-plots");
  c.json = vm["json"].as<bool>();
  c.where = vm["where"].as<std::string>();
  if (vm.count("metric")) {
    c.metric = vm["metric"].as<std::string>();
    c.metric_defaulted = vm["metric"].defaulted();
  }
  return true;
}

void print_files(const std::vector<fs::path>& files) {
  for (const auto& f : files) fmt::print("wrote {}\n", f.string());
}

int cmd_regress(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape regress OUT.h5 [more.h5 ...] [options]\n\n"
      "OLS of METRIC (or its log) on the log2 of the parameters, features and metric z-scored\n"
      "(standardized coefficients), one regression per family (or system). Reports 95% CIs,\n"
      "R², adjusted R², k-fold CV R² and bootstrap intervals of importance ratios.\n\noptions");
  add_common(opts, "flops_utilization");
  opts.add_options()("log", po::bool_switch(), "regress the natural log of the metric")(
      "knobs", po::value<std::string>()->default_value(""),
      "comma-separated knobs entered as indicator variables (e.g. dtype,mode)")(
      "interactions", po::bool_switch(), "add every pairwise product of the main features")(
      "by", po::value<std::string>()->default_value("family"),
      "one regression per: family | system | none")("folds", po::value<int>()->default_value(5),
                                                    "k of the k-fold cross-validated R²")(
      "bootstrap", po::value<int>()->default_value(1000), "bootstrap replicates")(
      "seed", po::value<std::uint64_t>()->default_value(1), "random seed (folds, bootstrap)");
  Common c;
  po::variables_map vm;
  if (!parse(args, opts, c, vm, 1)) return 0;
  RegressOptions o;
  o.inputs = c.inputs;
  o.metric = c.metric;
  o.where = c.where;
  o.out_dir = c.out_dir;
  o.log_metric = vm["log"].as<bool>();
  o.knobs = split_list(vm["knobs"].as<std::string>());
  o.interactions = vm["interactions"].as<bool>();
  o.by = vm["by"].as<std::string>();
  o.folds = vm["folds"].as<int>();
  o.bootstrap = vm["bootstrap"].as<int>();
  o.seed = vm["seed"].as<std::uint64_t>();
  if (o.folds < 2) throw InputError("--folds must be at least 2");
  if (o.bootstrap < 0) throw InputError("--bootstrap must not be negative");
  const auto r = regress(o);
  if (c.json) {
    fmt::print("{}\n", r.json());
  } else {
    fmt::print("{}\n", r.finding);
    print_files(r.files);
  }
  return 0;
}

int cmd_compare(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape compare A.h5 B.h5 [C.h5 ...] [options]\n"
      "dnnscape compare OUT.h5 --by KNOB [--base LEVEL] [options]\n\n"
      "Matches configs on parameters and software knobs, computes the speedup of each later\n"
      "file (or knob level) over the first per config, box plots per family (whiskers 1.5 IQR),\n"
      "the geometric mean with a bootstrap CI and a verdict: strictly better, conditionally\n"
      "better (with a rule found by a shallow decision tree) or no better.\n"
      "The default metric is step_time_s (a speedup is a ratio of times).\n\noptions");
  add_common(opts, "step_time_s");
  opts.add_options()("by", po::value<std::string>()->default_value(""),
                     "compare the levels of this knob inside one file")(
      "base", po::value<std::string>()->default_value(""), "--by: the baseline level")(
      "depth", po::value<int>()->default_value(2), "depth of the decision tree behind the rule")(
      "tie-within", po::value<double>()->default_value(0),
      "PCT: a speedup within 1 ± PCT% is a tie even when the step-time CIs do not overlap "
      "(they are from within one sweep; compare two sweeps of one spec to see how far apart "
      "sweeps lie on your machine, docs/analysis.md)")(
      "bootstrap", po::value<int>()->default_value(1000), "bootstrap replicates")(
      "seed", po::value<std::uint64_t>()->default_value(1), "random seed");
  Common c;
  po::variables_map vm;
  if (!parse(args, opts, c, vm, 1)) return 0;
  CompareOptions o;
  o.inputs = c.inputs;
  o.metric = c.metric;
  o.where = c.where;
  o.out_dir = c.out_dir;
  o.by = vm["by"].as<std::string>();
  o.base = vm["base"].as<std::string>();
  o.depth = vm["depth"].as<int>();
  o.bootstrap = vm["bootstrap"].as<int>();
  o.seed = vm["seed"].as<std::uint64_t>();
  if (o.depth < 1 || o.depth > 6) throw InputError("--depth must be between 1 and 6");
  const double tie = vm["tie-within"].as<double>();
  if (!(tie >= 0 && tie < 100))
    throw InputError(fmt::format("--tie-within must be a percentage in [0, 100), got {}", tie));
  o.tie_within = tie / 100;
  const auto r = compare(o);
  if (c.json) {
    fmt::print("{}\n", r.json());
  } else {
    fmt::print("{}\n", r.finding);
    print_files(r.files);
  }
  return 0;
}

int cmd_roofline(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape roofline OUT.h5 [more.h5 ...] [options]\n\n"
      "Achieved GFLOP/s against FLOP/byte under the measured ceilings of each file's /system;\n"
      "model points coloured by a parameter, operation points from /ops (ops under 1% of\n"
      "their step left out), and the share of configs and op time that is "
      "memory-bound.\n\noptions");
  add_common(opts, "gflops");
  opts.add_options()("color", po::value<std::string>()->default_value("batch"),
                     "column that colours the model points")(
      "min-op-share", po::value<double>()->default_value(0.01),
      "leave out ops under this share of their config's profiled time");
  Common c;
  po::variables_map vm;
  if (!parse(args, opts, c, vm, 1)) return 0;
  RooflineOptions o;
  o.inputs = c.inputs;
  o.where = c.where;
  o.out_dir = c.out_dir;
  o.color = vm["color"].as<std::string>();
  o.min_op_share = vm["min-op-share"].as<double>();
  const auto r = roofline(o);
  if (c.json) {
    fmt::print("{}\n", r.json());
  } else {
    fmt::print("{}\n", r.finding);
    print_files(r.files);
  }
  return 0;
}

int cmd_report(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape report OUT.h5 [more.h5 ...] -o DIR [options]\n\n"
      "One self-contained HTML page (inline SVG, no network needed): provenance, sweep summary,\n"
      "heat maps, regression, roofline and, for several files (or a knob with several levels),\n"
      "the comparison, each with its finding; the CSV tables are written beside it.\n\noptions");
  add_common(opts, "flops_utilization");
  opts.add_options()("bootstrap", po::value<int>()->default_value(1000), "bootstrap replicates")(
      "seed", po::value<std::uint64_t>()->default_value(1), "random seed");
  Common c;
  po::variables_map vm;
  if (!parse(args, opts, c, vm, 1)) return 0;
  ReportOptions o;
  o.inputs = c.inputs;
  o.metric = c.metric;
  o.where = c.where;
  o.out_dir = c.out_dir;
  o.bootstrap = vm["bootstrap"].as<int>();
  o.seed = vm["seed"].as<std::uint64_t>();
  const auto r = report(o);
  if (c.json) {
    fmt::print("{}\n", r.json());
  } else {
    fmt::print("{}\n", r.finding);
  }
  return 0;
}

int cmd_heatmap(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape heatmap OUT.h5 [--x P] [--y P] [--metric M] [--facet C] [--baseline B.h5]\n\n"
      "Heat map of METRIC over two parameters (log2 axes), one panel per value of FACET (any\n"
      "column: parameter, knob, family), from the ok rows. With --baseline, the colour is the\n"
      "per-config speedup of OUT.h5 over B.h5. Writes SVG, PNG and CSV.\n\noptions");
  add_common(opts, "flops_utilization");
  opts.add_options()("x", po::value<std::string>()->default_value("nodes"), "x parameter")(
      "y", po::value<std::string>()->default_value("batch"), "y parameter")(
      "facet", po::value<std::string>()->default_value(""), "one panel per value of this column")(
      "baseline", po::value<std::string>()->default_value(""),
      "colour = speedup of the input over this results file");
  Common c;
  po::variables_map vm;
  if (!parse(args, opts, c, vm, 1)) return 0;
  HeatmapOptions o;
  o.input = c.inputs[0];
  o.metric = c.metric;
  o.where = c.where;
  o.out_dir = c.out_dir;
  o.x = vm["x"].as<std::string>();
  o.y = vm["y"].as<std::string>();
  o.facet = vm["facet"].as<std::string>();
  o.baseline = vm["baseline"].as<std::string>();
  if (!o.baseline.empty() && !fs::exists(o.baseline))
    throw InputError(fmt::format("{}: no such file", o.baseline.string()));
  const auto r = heatmap(o);
  if (c.json) {
    nlohmann::json j;
    j["analysis"] = "heatmap";
    j["finding"] = r.finding;
    j["files"] = nlohmann::json::array();
    for (const auto& f : r.files) j["files"].push_back(f.string());
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{}\n", r.finding);
    print_files(r.files);
  }
  return 0;
}

int cmd_budget(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape budget OUT.h5 [more.h5 ...] (--budget 30ms | --preset cv|nlp|feed) [options]\n\n"
      "Per system (file, or each level of --by KNOB inside a file) and latency budget: which\n"
      "configs meet the budget (latency_pNN_s of inference rows <= budget), per batch size the\n"
      "count and the largest model (params) that fits, the feasible region as a rule on the\n"
      "parameters (a shallow decision tree on their log2) and a heat map of the share of configs\n"
      "that fit. Presets (Walle's services): cv = 30ms, nlp = 100ms and 500ms, feed = 500ms.\n"
      "\noptions");
  add_common(opts, nullptr);
  opts.add_options()("budget", po::value<std::vector<std::string>>()->composing(),
                     "latency budget(s): 30ms, 0.5s, 500us (repeat or comma-separate)")(
      "preset", po::value<std::string>()->default_value(""),
      "cv (30ms), nlp (100ms and 500ms) or feed (500ms)")(
      "percentile", po::value<int>()->default_value(99), "latency percentile: 50, 90 or 99")(
      "families", po::value<std::string>()->default_value(""),
      "comma-separated families (default: all)")(
      "by", po::value<std::string>()->default_value(""),
      "treat each level of this knob (e.g. threads, isa_cap) inside a file as a system")(
      "allow-training", po::bool_switch(),
      "use step_time_s of training rows as their latency (inference rows keep latency_pNN_s)")(
      "x", po::value<std::string>()->default_value(""),
      "heat-map x (default: the family's main size parameter: nodes, filters, embedding)")(
      "y", po::value<std::string>()->default_value("batch"), "heat-map y")(
      "depth", po::value<int>()->default_value(2), "depth of the decision tree behind the rule");
  Common c;
  po::variables_map vm;
  if (!parse(args, opts, c, vm, 1)) return 0;
  BudgetOptions o;
  o.inputs = c.inputs;
  o.where = c.where;
  o.out_dir = c.out_dir;
  if (vm.count("budget"))
    for (const auto& b : vm["budget"].as<std::vector<std::string>>())
      for (const auto& part : split_list(b)) o.budgets_s.push_back(parse_budget(part));
  const auto preset = vm["preset"].as<std::string>();
  if (!preset.empty())
    for (double b : preset_budgets(preset)) o.budgets_s.push_back(b);
  if (o.budgets_s.empty()) throw InputError("needs --budget DURATION or --preset cv|nlp|feed");
  o.percentile = vm["percentile"].as<int>();
  o.families = split_list(vm["families"].as<std::string>());
  o.by = vm["by"].as<std::string>();
  o.allow_training = vm["allow-training"].as<bool>();
  o.x = vm["x"].as<std::string>();
  o.y = vm["y"].as<std::string>();
  o.depth = vm["depth"].as<int>();
  const auto r = budget(o);
  if (c.json) {
    fmt::print("{}\n", r.json());
  } else {
    fmt::print("{}\n", r.finding);
    print_files(r.files);
  }
  return 0;
}

}  // namespace

const std::vector<std::string>& analysis_commands() {
  static const std::vector<std::string> cmds = {"regress", "compare", "roofline",
                                                "report",  "heatmap", "budget"};
  return cmds;
}

int analysis_command(const std::string& cmd, const std::vector<std::string>& args) {
  try {
    if (cmd == "regress") return cmd_regress(args);
    if (cmd == "compare") return cmd_compare(args);
    if (cmd == "roofline") return cmd_roofline(args);
    if (cmd == "report") return cmd_report(args);
    if (cmd == "heatmap") return cmd_heatmap(args);
    if (cmd == "budget") return cmd_budget(args);
    fmt::print(stderr, "dnnscape: unknown analysis command '{}'\n", cmd);
    return kExitUsage;
  } catch (const po::error& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, one_line(e.what()));
    return kExitUsage;
  } catch (const std::invalid_argument& e) {  // InputError and heatmap's unknown columns
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, one_line(e.what()));
    return kExitUsage;
  } catch (const store::StoreError& e) {  // not a dnnscape/1 results file
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, one_line(e.what()));
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", cmd, one_line(e.what()));
    return 1;
  }
}

}  // namespace dnnscape::analysis
