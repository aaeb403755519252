#include "analysis/model_cli.hpp"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "analysis/cli_args.hpp"
#include "analysis/frame.hpp"
#include "space/spec.hpp"
#include "store/results.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace dnnscape::analysis {
namespace {

constexpr int kExitUsage = 2;

std::string pct(double x) {
  return std::isfinite(x) ? fmt::format("{:.1f}%", 100 * x) : "n/a";
}

}  // namespace

ModelFitResult fit_landscape(const ModelFitOptions& o) {
  ModelFitResult result;
  result.model.metric = o.metric;
  nlohmann::json files = nlohmann::json::array();
  // (system, family) -> points; systems keep the order of the files.
  std::vector<std::pair<model::System, std::vector<model::Point>>> systems;
  for (const auto& path : o.inputs) {
    if (!fs::exists(path)) throw InputError(fmt::format("{}: no such file", path.string()));
    std::vector<std::int64_t> rows;
    if (!o.where.empty()) rows = load_frame(path, {}, o.where).run_row;
    auto data = model::read_points(path, o.metric, o.where.empty() ? nullptr : &rows);
    files.push_back({{"path", fs::absolute(path).string()},
                     {"spec_name", data.spec_name},
                     {"spec_sha256", data.spec_sha256},
                     {"system", data.system.name},
                     {"ok_rows", data.ok_rows},
                     {"rows_used", data.points.size()}});
    auto it = std::find_if(systems.begin(), systems.end(),
                           [&](const auto& s) { return s.first.name == data.system.name; });
    if (it == systems.end()) {
      systems.emplace_back(data.system, std::move(data.points));
    } else {
      for (auto& p : data.points) it->second.push_back(std::move(p));
    }
  }
  nlohmann::json accuracy = nlohmann::json::array();
  for (const auto& [system, points] : systems) {
    for (auto family : {space::Family::fc, space::Family::cnn, space::Family::rnn}) {
      PanelReport r;
      r.system = system.name;
      r.family = family;
      for (const auto& p : points)
        if (p.config.family == family) r.points.push_back(p);
      if (r.points.size() < 4) continue;
      result.model.panels.push_back(model::Panel::fit(system, family, r.points, o.fit));
      if (r.points.size() >= 2 * static_cast<std::size_t>(o.folds))
        r.cv = model::cross_validate(system, family, r.points, o.folds, o.fit);
      if (o.extrapolate != "none") {
        bool varies = false;
        if (const auto* v0 = space::int_param(r.points.front().config, o.extrapolate)) {
          for (const auto& p : r.points)
            varies = varies || *space::int_param(p.config, o.extrapolate) != *v0;
        } else {
          throw InputError(
              fmt::format("--extrapolate: '{}' is not a numeric parameter (one of: "
                          "layers, nodes, input, output, batch, filters, blocks, "
                          "image, embedding, length, vocab)",
                          o.extrapolate));
        }
        if (varies)
          r.extrapolation = model::extrapolation_test(system, family, r.points, o.extrapolate,
                                                      o.extrapolate_threshold, o.fit);
        // What the test's intervals needed to cover 90% is what the model's own intervals
        // beyond its measured range get.
        if (r.extrapolation)
          result.model.panels.back().widen_extrapolation(r.extrapolation->parameter,
                                                         r.extrapolation->sd_factor());
      }
      if (r.extrapolation && r.cv.n == r.points.size()) {
        std::vector<char> tested;
        for (const auto& p : r.points) tested.push_back(r.extrapolation->tests(p) ? 1 : 0);
        r.cv_extrapolated_rows = r.cv.subset(tested);
      }
      nlohmann::json a = {{"system", r.system},
                          {"family", space::to_string(family)},
                          {"rows", r.points.size()},
                          {"cv", r.cv.to_json()}};
      a["extrapolation"] = r.extrapolation ? r.extrapolation->to_json() : nlohmann::json();
      if (r.extrapolation && r.cv_extrapolated_rows.n > 0)
        a["extrapolation"]["cv_same_rows"] = r.cv_extrapolated_rows.to_json();
      accuracy.push_back(a);
      result.panels.push_back(std::move(r));
    }
  }
  if (result.panels.empty())
    throw InputError("no family has the 4 ok rows with a positive metric that a model needs");
  result.model.fitted_on = {
      {"files", files},   {"metric", o.metric},           {"where", o.where},
      {"folds", o.folds}, {"created_utc", utc_now_iso()}, {"accuracy", accuracy}};
  return result;
}

std::string ModelFitResult::finding() const {
  std::string s =
      fmt::format("model of {} (log scale), {} panel(s)\n", model.metric, panels.size());
  for (std::size_t i = 0; i < panels.size(); ++i) {
    const auto& r = panels[i];
    const auto& p = model.panels[i];
    std::vector<std::string> names;
    for (const auto& f : p.features()) names.push_back(f.name);
    s += fmt::format("{} on {}: {} rows (GP on {}), features: {}\n", space::to_string(r.family),
                     r.system, p.rows(), p.gp_rows(), fmt::join(names, ", "));
    if (r.cv.n > 0) {
      s += fmt::format(
          "  {}-fold cross-validation: median abs. error {}, p90 {}, 90% intervals cover {} "
          "(n={})\n",
          model.fitted_on.value("folds", 5), pct(r.cv.median_ape), pct(r.cv.p90_ape),
          pct(r.cv.coverage90), r.cv.n);
    } else {
      s += "  cross-validation: too few rows\n";
    }
    if (r.extrapolation) {
      const auto& e = *r.extrapolation;
      s += fmt::format(
          "  extrapolation: fit on {} <= {} ({} rows), predict the {} above: median abs. error "
          "{}, p90 {}, coverage {}",
          e.parameter, e.threshold, e.train, e.accuracy.n, pct(e.accuracy.median_ape),
          pct(e.accuracy.p90_ape), pct(e.accuracy.coverage90));
      if (r.cv.n > 0 && r.cv.median_ape > 0)
        s += fmt::format(" ({:.2f}x the cross-validated error)",
                         e.accuracy.median_ape / r.cv.median_ape);
      s += '\n';
      if (const auto& c = r.cv_extrapolated_rows; c.n > 0 && c.median_ape > 0) {
        s += fmt::format(
            "    the same {} rows in cross-validation: median abs. error {}, p90 {}, coverage {} "
            "(extrapolating them errs {:.2f}x as much)\n",
            c.n, pct(c.median_ape), pct(c.p90_ape), pct(c.coverage90),
            e.accuracy.median_ape / c.median_ape);
      }
      if (p.extrapolation_sd_factor() > 1) {
        s += fmt::format(
            "    intervals of configs beyond the measured {} range are widened {:.2f}x (what the "
            "test's needed to cover 90%)\n",
            e.parameter, p.extrapolation_sd_factor());
      }
    }
  }
  return s;
}

std::string ModelFitResult::json() const {
  nlohmann::json j = {{"metric", model.metric}, {"panels", model.fitted_on.at("accuracy")}};
  for (std::size_t i = 0; i < panels.size(); ++i) {
    std::vector<std::string> names;
    for (const auto& f : model.panels[i].features()) names.push_back(f.name);
    j["panels"][i]["features"] = names;
    j["panels"][i]["gp_rows"] = model.panels[i].gp_rows();
  }
  return j.dump(2);
}

namespace {

int cmd_fit(const std::vector<std::string>& args) {
  po::options_description opts(
      "dnnscape model fit OUT.h5 [more.h5 ...] -o MODEL.json [options]\n\n"
      "Fits a performance model of METRIC per family (and per system, when the files come from\n"
      "several hosts) on the ok rows. It predicts log(METRIC) as the log of a roofline anchor\n"
      "(a*flops/peak + b*bytes/bandwidth + c, peaks from each file's /system) plus a\n"
      "log-linear trend in the roofline time and a Gaussian process (Matern-5/2, one length\n"
      "scale per feature, fitted by marginal likelihood) over the log2 parameters, the knobs as\n"
      "indicators and the roofline terms, its noise variance log-linear in the roofline time.\n"
      "Reports the k-fold cross-validated median and p90 absolute percentage error, the\n"
      "coverage of the 90% intervals, and an extrapolation test: fit on the lower part of a\n"
      "parameter's range (batch <= 1024 by default), predict the rest, next to the\n"
      "cross-validated error of those same rows. Intervals of configs beyond the measured\n"
      "range of that parameter are widened by what the test needed to cover 90%.\n"
      "`dnnscape predict` uses the model file.\n"
      "docs/model.md describes the method and the file.\n\noptions");
  opts.add_options()("help,h", "show this help")("output,o", po::value<std::string>(),
                                                 "model file to write (JSON)")(
      "metric", po::value<std::string>()->default_value("step_time_s"),
      "metric to model (a positive /runs column)")(
      "where", po::value<std::string>()->default_value(""),
      "fit on the rows that pass this filter, e.g. 'family==fc && batch>=64'")(
      "folds", po::value<int>()->default_value(5), "k of the k-fold cross-validation")(
      "extrapolate", po::value<std::string>()->default_value("batch"),
      "parameter of the extrapolation test (none: skip it)")(
      "extrapolate-at", po::value<std::int64_t>(),
      "fit on parameter <= this value (default: 1024 for batch, else the median value)")(
      "max-gp-points", po::value<std::size_t>()->default_value(2000),
      "larger panels are subsampled for the Gaussian process")(
      "noise", po::value<std::string>()->default_value("by-time"),
      "the GP's noise variance: by-time (log-linear in log2 roofline time, so long and short "
      "steps get the scatter each shows) or constant (one value per panel)")(
      "seed", po::value<std::uint64_t>()->default_value(1), "random seed (folds, subsamples)")(
      "json", po::bool_switch(), "print the accuracy as JSON");
  po::variables_map vm;
  if (!parse_with_inputs(args, opts, vm)) return 0;
  ModelFitOptions o;
  if (vm.count("input"))
    for (const auto& s : vm["input"].as<std::vector<std::string>>()) o.inputs.emplace_back(s);
  if (o.inputs.empty()) throw InputError("needs a results file (see --help)");
  if (!vm.count("output")) throw InputError("needs -o MODEL.json (see --help)");
  o.metric = vm["metric"].as<std::string>();
  o.where = vm["where"].as<std::string>();
  o.folds = vm["folds"].as<int>();
  if (o.folds < 2) throw InputError("--folds must be at least 2");
  o.extrapolate = vm["extrapolate"].as<std::string>();
  if (vm.count("extrapolate-at")) o.extrapolate_threshold = vm["extrapolate-at"].as<std::int64_t>();
  o.fit.max_gp_points = vm["max-gp-points"].as<std::size_t>();
  if (o.fit.max_gp_points < 8) throw InputError("--max-gp-points must be at least 8");
  o.fit.seed = vm["seed"].as<std::uint64_t>();
  const auto noise = vm["noise"].as<std::string>();
  if (noise != "by-time" && noise != "constant")
    throw InputError(fmt::format("--noise: expected by-time or constant, got '{}'", noise));
  o.fit.noise_by_time = noise == "by-time";
  const auto r = fit_landscape(o);
  const fs::path out(vm["output"].as<std::string>());
  r.model.save(out);
  if (vm["json"].as<bool>()) {
    fmt::print("{}\n", r.json());
  } else {
    fmt::print("{}wrote {}\n", r.finding(), out.string());
  }
  return 0;
}

const std::vector<std::string>& config_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k = {"family"};
    for (auto p : space::kIntParams) k.emplace_back(p);
    for (auto p : space::kStringParams) k.emplace_back(p);
    for (const char* p : {"mode", "dtype", "algorithm", "isa_cap", "threads"}) k.emplace_back(p);
    return k;
  }();
  return keys;
}

space::Config config_from_args(const std::vector<std::string>& kvs, const model::Model& m) {
  std::map<std::string, std::string> given;
  for (const auto& kv : kvs) {
    std::istringstream parts(kv);
    std::string item;
    while (std::getline(parts, item, ',')) {
      if (item.empty()) continue;
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0)
        throw InputError(fmt::format("--config: expected key=value, got '{}'", item));
      const std::string key = item.substr(0, eq);
      if (std::find(config_keys().begin(), config_keys().end(), key) == config_keys().end()) {
        throw InputError(fmt::format("--config: unknown key '{}' (expected one of: {})", key,
                                     fmt::join(config_keys(), ", ")));
      }
      given[key] = item.substr(eq + 1);
    }
  }
  space::Config c;
  if (auto it = given.find("family"); it != given.end()) {
    try {
      c.family = space::family_from_string(it->second);
    } catch (const std::invalid_argument&) {
      throw InputError(
          fmt::format("--config: unknown family '{}' (expected one of: fc, cnn, rnn)", it->second));
    }
  } else {
    std::set<space::Family> fams;
    for (const auto& p : m.panels) fams.insert(p.family());
    if (fams.size() != 1)
      throw InputError("--config: give family=fc|cnn|rnn (the model holds several)");
    c.family = *fams.begin();
  }
  const auto* panel = m.panel(c.family);
  if (panel == nullptr)
    throw InputError(fmt::format("the model holds no {} panel", space::to_string(c.family)));
  for (auto name : space::kIntParams) {
    const std::string key(name);
    const bool needed = panel->ranges().contains(key);
    auto it = given.find(key);
    if (it == given.end()) {
      if (needed)
        throw InputError(fmt::format("--config: {} needs {}=N", space::to_string(c.family), key));
      continue;
    }
    std::size_t used = 0;
    std::int64_t v = 0;
    try {
      v = std::stoll(it->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != it->second.size() || v <= 0)
      throw InputError(
          fmt::format("--config: {} expects a positive integer, got '{}'", key, it->second));
    *space::int_param(c, key) = v;
  }
  for (auto name : space::kStringParams)
    if (auto it = given.find(std::string(name)); it != given.end())
      *space::string_param(c, name) = it->second;
  if (auto it = given.find("mode"); it != given.end()) c.knobs.mode = it->second;
  if (auto it = given.find("dtype"); it != given.end()) c.knobs.dtype = it->second;
  if (auto it = given.find("algorithm"); it != given.end()) c.knobs.algorithm = it->second;
  if (auto it = given.find("isa_cap"); it != given.end()) c.knobs.isa_cap = it->second;
  if (auto it = given.find("threads"); it != given.end()) {
    try {
      c.knobs.threads = std::stoll(it->second);
    } catch (const std::exception&) {
      throw InputError(fmt::format("--config: threads expects an integer, got '{}'", it->second));
    }
  }
  return c;
}

int cmd_predict(const std::vector<std::string>& args, const CountsFn& counts) {
  po::options_description opts(
      "dnnscape predict MODEL.json SPEC.yaml [options]\n"
      "dnnscape predict MODEL.json --config family=fc layers=4 nodes=512 ... [options]\n\n"
      "Predicts the model's metric with a 90% interval for every config of a spec (its grid,\n"
      "or its sample) or for one config. A prediction is flagged `extrapolated` when a\n"
      "parameter lies outside the range the model was fitted on (or a knob level it never saw):\n"
      "it follows the trend there, and its interval widens.\n\noptions");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::vector<std::string>>()->multitoken(),
      "one config as key=value pairs (space- or comma-separated); keys: family, the family's "
      "parameters, mode, dtype, algorithm, isa_cap, threads")(
      "system", po::value<std::string>()->default_value(""),
      "the system (hostname) whose panel to use when the model holds several")(
      "json", po::bool_switch(), "print the predictions as JSON");
  po::variables_map vm;
  if (!parse_with_inputs(args, opts, vm)) return 0;
  std::vector<std::string> inputs;
  if (vm.count("input")) inputs = vm["input"].as<std::vector<std::string>>();
  if (inputs.empty()) throw InputError("needs a model file (see --help)");
  const bool one = vm.count("config") > 0;
  if (one == (inputs.size() == 2))
    throw InputError("give either a SPEC or --config key=value ... (see --help)");
  if (inputs.size() > 2) throw InputError("expected MODEL.json and at most one SPEC");
  const model::Model m = model::Model::load(inputs[0]);
  std::vector<space::Config> configs;
  if (one) {
    configs.push_back(config_from_args(vm["config"].as<std::vector<std::string>>(), m));
  } else {
    try {
      configs = space::load_spec(inputs[1]).configs;
    } catch (const space::SpecError&) {
      throw;
    } catch (const std::runtime_error& e) {  // cannot read the spec: bad input as well
      throw InputError(e.what());
    }
  }
  const std::string system = vm["system"].as<std::string>();
  nlohmann::json out = nlohmann::json::array();
  std::string text;
  std::size_t extrapolated = 0;
  for (auto family : {space::Family::fc, space::Family::cnn, space::Family::rnn}) {
    std::vector<model::Point> pts;
    for (const auto& c : configs)
      if (c.family == family) pts.push_back(counts(c));
    if (pts.empty()) continue;
    const auto* panel = m.panel(family, system);
    if (panel == nullptr) {
      throw InputError(fmt::format("{}: the model holds no {} panel{}", inputs[0],
                                   space::to_string(family),
                                   system.empty() ? "" : fmt::format(" for system '{}'", system)));
    }
    std::vector<model::Point> ok;
    std::vector<std::string> unsupported;
    for (auto& p : pts) {
      if (std::isfinite(p.flops) && p.flops > 0 && std::isfinite(p.bytes) && p.bytes > 0 &&
          std::isfinite(p.params) && p.params > 0)
        ok.push_back(std::move(p));
      else
        unsupported.push_back(p.config.label());
    }
    if (!unsupported.empty())
      fmt::print(stderr, "skipped {} config(s) the cost model cannot count, e.g. {}\n",
                 unsupported.size(), unsupported.front());
    const auto pr = panel->predict(ok);
    for (std::size_t i = 0; i < ok.size(); ++i) {
      const auto& c = ok[i].config;
      nlohmann::json j = {{"config_id", c.config_id()},
                          {"label", c.label()},
                          {"family", space::to_string(c.family)},
                          {"system", panel->system().name},
                          {"predicted", pr[i].value},
                          {"lower_90", pr[i].lower},
                          {"upper_90", pr[i].upper},
                          {"extrapolated", pr[i].extrapolated}};
      if (pr[i].extrapolated) j["why"] = pr[i].why;
      for (auto name : space::kIntParams)
        if (*space::int_param(c, name) >= 0) j[std::string(name)] = *space::int_param(c, name);
      out.push_back(std::move(j));
      extrapolated += pr[i].extrapolated ? 1 : 0;
      text += fmt::format("{}  {} {:.4g} (90%: {:.4g} - {:.4g}){}\n", c.label(), m.metric,
                          pr[i].value, pr[i].lower, pr[i].upper,
                          pr[i].extrapolated ? "  extrapolated: " + pr[i].why : "");
    }
  }
  if (vm["json"].as<bool>()) {
    fmt::print("{}\n", nlohmann::json{{"metric", m.metric}, {"predictions", out}}.dump(2));
  } else {
    fmt::print("{}{} config(s) predicted, {} extrapolated\n", text, out.size(), extrapolated);
  }
  return 0;
}

std::string one_line(std::string s) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return s;
}

}  // namespace

int model_command(const std::string& cmd, const std::vector<std::string>& args,
                  const CountsFn& counts) {
  std::string name = cmd;
  try {
    if (cmd == "predict") return cmd_predict(args, counts);
    name = "model";
    if (args.empty() || (args[0] != "fit" && args[0] != "--help" && args[0] != "-h")) {
      fmt::print(stderr, "dnnscape model: expected 'fit' (dnnscape model fit --help)\n");
      return kExitUsage;
    }
    if (args[0] != "fit") {
      std::cout << "dnnscape model fit OUT.h5 ... -o MODEL.json   fit a performance model "
                   "(dnnscape model fit --help)\n";
      return 0;
    }
    name = "model fit";
    return cmd_fit(std::vector<std::string>(args.begin() + 1, args.end()));
  } catch (const po::error& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", name, one_line(e.what()));
    return kExitUsage;
  } catch (const std::invalid_argument& e) {  // InputError, ModelError
    fmt::print(stderr, "dnnscape {}: {}\n", name, one_line(e.what()));
    return kExitUsage;
  } catch (const store::StoreError& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", name, one_line(e.what()));
    return kExitUsage;
  } catch (const space::SpecError& e) {
    fmt::print(stderr, "{}\n", one_line(e.what()));
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dnnscape {}: {}\n", name, one_line(e.what()));
    return 1;
  }
}

}  // namespace dnnscape::analysis
