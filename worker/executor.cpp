#include "worker/executor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <omp.h>
#include <pmmintrin.h>
#include <xmmintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <new>
#include <nlohmann/json.hpp>
#include <numeric>
#include <oneapi/dnnl/dnnl.hpp>

#include "worker/best_mode.hpp"
#include "worker/cost.hpp"
#include "worker/energy.hpp"
#include "worker/families.hpp"
#include "worker/measure.hpp"
#include "worker/sysinfo.hpp"

namespace dnnscape::worker {

using store::RunRecord;

namespace {

// algorithm best: the default model measured side by side with the chosen one (interleaved steps,
// alternating which goes first), so that the speedup is not an artefact of load changing between
// two measurements. Both are built fresh (best's decisions come from the cache: no search), so
// both are at the same point of training: a model that already ran the timed repetitions may
// have reached denormal gradients, which slow CNN training steps down many times (docs/knobs.md).
// The schema has no column for the speedup: it goes into the row's message.
std::string best_versus_default(const space::Config& config, double memory_bytes,
                                const RunContext& ctx, const best::BestModeStats& st) {
  const std::string search = fmt::format(
      "search: {} layer passes decided, {} from the cache, {} candidates measured, {} pruned by "
      "the cost model",
      st.decisions, st.cache_hits, st.measurements, st.pruned);
  const double need = 2 * memory_bytes;
  if (need > ctx.limits.memory_fraction * available_memory_bytes()) {
    return fmt::format("best: default not measured side by side (both models would not fit); {}",
                       search);
  }
  space::Config dc = config;
  dc.knobs.algorithm = "default";
  auto mine = build_model(config);
  Model& best_model = *mine;
  auto def = build_model(dc);
  for (int i = 0; i < 2; ++i) {  // warm-up of both
    best_model.step();
    def->step();
  }
  std::vector<double> tb, td;
  auto timed = [](Model& m) {
    const auto t0 = std::chrono::steady_clock::now();
    m.step();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 15; ++i) {
    if (i % 2 == 0) {
      tb.push_back(timed(best_model));
      td.push_back(timed(*def));
    } else {
      td.push_back(timed(*def));
      tb.push_back(timed(best_model));
    }
    const double spent =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= 4 && spent > std::max(ctx.measure.max_time_s, 0.5)) break;
  }
  const double mb = median_ci(tb).median, md = median_ci(td).median;
  return fmt::format(
      "best: speedup over default {:.2f}x (side by side, {} interleaved pairs: default step {:.4g} "
      "s, best {:.4g} s); {}",
      md / mb, tb.size(), md, mb, search);
}

// Denormal floats make x86 arithmetic 10-100x slower; CNN training reaches them once its loss is
// small (docs/knobs.md), so a row's time would depend on how far into training its repetitions
// happened to be. Flush-to-zero and denormals-are-zero in this thread and in every OpenMP thread
// that will run oneDNN's kernels (threads created later copy the creating thread's MXCSR), as
// TensorFlow does in its CPU thread pools. Documented in docs/measurement.md.
void flush_denormals(int threads) {
  const auto set = [] {
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
  };
  set();
#pragma omp parallel num_threads(threads)
  set();
}

double seconds_of(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The per-op profile: rounds of one plain step and one profiled pass, alternating which goes
// first, for about half a second (3 to 15 rounds). Each op's time is its median over the passes;
// ops_time_ratio compares their sum with the median of the plain steps of the same rounds, so a
// change of load between the timed repetitions and the profile does not show up as a gap between
// the two.
std::vector<store::OpRecord> profile_ops(Model& model, double step_s, double& ratio) {
  const int rounds = static_cast<int>(std::clamp(0.5 / (2 * step_s), 3.0, 15.0));
  std::vector<store::OpRecord> ops;
  std::vector<std::vector<double>> times;
  std::vector<double> plain;
  for (int i = 0; i < rounds; ++i) {
    if (i % 2 == 1) plain.push_back(seconds_of([&] { model.step(); }));
    auto pass = model.profile_step();
    if (ops.empty()) {
      ops = pass;
      times.resize(ops.size());
    }
    for (std::size_t k = 0; k < ops.size() && k < pass.size(); ++k)
      times[k].push_back(pass[k].time_s);
    if (i % 2 == 0) plain.push_back(seconds_of([&] { model.step(); }));
  }
  double sum = 0;
  for (std::size_t k = 0; k < ops.size(); ++k) {
    ops[k].time_s = median_ci(times[k]).median;
    sum += ops[k].time_s;
  }
  ratio = ops.empty() ? store::kNaN : sum / median_ci(plain).median;
  return ops;
}

}  // namespace

RunRecord predicted_record(const space::Config& config, const Peaks& peaks) {
  RunRecord r;
  r.config = config;
  r.config_id = config.config_id();
  try {
    const ModelCounts c = predict_counts(config);
    r.metrics.flops = c.flops;
    r.metrics.bytes = c.bytes;
    r.metrics.params = c.params;
    r.metrics.memory_bytes = c.memory_bytes;
    r.metrics.arithmetic_intensity = c.bytes > 0 ? c.flops / c.bytes : store::kNaN;
    r.metrics.predicted_time_s = predicted_step_time_s(c, peaks, config.knobs.dtype);
  } catch (const Unsupported& e) {
    r.status = store::status::skipped;
    r.message = e.what();
  }
  return r;
}

std::string skip_reason(const space::Config& config, const space::Limits& limits) {
  if (config.knobs.dtype == "bf16" &&
      (!cpu_has_bf16() || std::getenv("DNNSCAPE_ASSUME_NO_BF16") != nullptr)) {
    return "bf16 needs avx512_core_bf16 or AMX, which this CPU does not have";
  }
  if (config.knobs.dtype == "bf16" &&
      (config.knobs.isa_cap == "sse41" || config.knobs.isa_cap == "avx" ||
       config.knobs.isa_cap == "avx2")) {
    return fmt::format("bf16 needs oneDNN's avx512_core kernels or newer; isa_cap {} excludes them",
                       config.knobs.isa_cap);
  }
  ModelCounts c;
  try {
    c = predict_counts(config);
  } catch (const Unsupported& e) {
    return e.what();
  }
  const double avail = available_memory_bytes();
  if (c.memory_bytes > limits.memory_fraction * avail) {
    return fmt::format(
        "predicted memory footprint {:.2f} GiB exceeds memory_fraction {} of the {:.2f} GiB "
        "available",
        c.memory_bytes / 1073741824.0, limits.memory_fraction, avail / 1073741824.0);
  }
  return "";
}

RunRecord run_config(const space::Config& config, const RunContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  RunRecord r = predicted_record(config, ctx.peaks);
  r.provenance.host = ctx.host;
  r.provenance.rank = ctx.rank;
  r.provenance.cores = ctx.cores;
  r.provenance.workers_on_host = ctx.workers_on_host;
  auto finish = [&](const char* status, std::string message) {
    r.status = status;
    r.message = std::move(message);
    r.provenance.finished_utc = utc_now_iso();
    r.metrics.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  };
  if (r.status != store::status::ok) return finish(store::status::skipped, r.message);
  if (auto why = skip_reason(config, ctx.limits); !why.empty())
    return finish(store::status::skipped, why);

  const int threads =
      config.knobs.threads > 0 ? static_cast<int>(config.knobs.threads) : available_cpus();
  omp_set_num_threads(threads);
  flush_denormals(threads);
  try {
    const bool best_mode = config.knobs.algorithm == "best";
    best::set_peaks(ctx.peaks);
    best::reset_stats();
    auto model = build_model(config);
    const best::BestModeStats search_stats = best::stats();
    r.provenance.effective_isa = onednn_isa();
    const ModelCounts& c = model->counts();
    // Latency percentiles need samples: p99 of fewer than 100 is an interpolation between the
    // largest ones, so inference asks for 100 (max_time_s still bounds the repetitions).
    space::MeasureSettings settings = ctx.measure;
    const bool inference = config.knobs.mode == "inference";
    if (inference) {
      settings.min_reps = std::max<std::int64_t>(settings.min_reps, kLatencyReps);
      settings.max_reps = std::max<std::int64_t>(settings.max_reps, kLatencyReps);
    }
    // Energy: a snapshot of the package counters before every step (only where they exist, so
    // elsewhere the timed region is untouched) and one after the last; the timed repetitions'
    // energy is the sum of their consecutive differences (each difference handles one wrap).
    const EnergyReader energy;
    std::vector<EnergyReader::Snapshot> snapshots;
    const TimingResult t = measure_steps(
        [&] {
          if (energy.available()) snapshots.push_back(energy.read());
          model->step();
        },
        settings);
    if (energy.available()) snapshots.push_back(energy.read());
    auto& m = r.metrics;
    m.step_time_s = t.step_time_s.median;
    m.step_time_ci_low_s = t.step_time_s.low;
    m.step_time_ci_high_s = t.step_time_s.high;
    m.step_time_cv = t.cv;
    m.reps = static_cast<std::int64_t>(t.samples_s.size());
    m.examples_per_s = static_cast<double>(config.batch) / m.step_time_s;
    m.flops = c.flops;
    m.gflops = c.flops / m.step_time_s / 1e9;
    const double peak = peak_gflops_for(ctx.peaks, config.knobs.dtype);
    m.flops_utilization = peak > 0 ? m.gflops / peak : store::kNaN;
    m.bytes = c.bytes;
    m.arithmetic_intensity = c.bytes > 0 ? c.flops / c.bytes : store::kNaN;
    m.params = c.params;
    m.memory_bytes = c.memory_bytes;
    if (inference) {
      m.latency_p50_s = quantile(t.samples_s, 0.50);
      m.latency_p90_s = quantile(t.samples_s, 0.90);
      m.latency_p99_s = quantile(t.samples_s, 0.99);
    }
    if (energy.available() && m.reps > 0) {
      const auto first = static_cast<std::size_t>(t.warmup_steps);
      double joules = 0;
      for (std::size_t i = first; i + 1 < snapshots.size(); ++i) {
        joules += energy.joules_between(snapshots[i], snapshots[i + 1]);
      }
      m.energy_j = joules / static_cast<double>(m.reps);
    }
    r.samples = t.samples_s;
    std::vector<std::string> notes;
    if (!t.converged) {
      const double half =
          std::max(m.step_time_s - m.step_time_ci_low_s, m.step_time_ci_high_s - m.step_time_s);
      notes.push_back(
          fmt::format("95% CI half-width {:.1f}% of the median after {} reps (target {:.1f}%)",
                      100.0 * half / m.step_time_s, m.reps, 100.0 * ctx.measure.target_ci));
    }
    if (inference && m.reps < kLatencyReps) {
      notes.push_back(fmt::format(
          "latency_p99_s from {} reps (< {}, max_time_s reached): an interpolation between the "
          "largest samples",
          m.reps, kLatencyReps));
    }
    if (ctx.profile) r.ops = profile_ops(*model, m.step_time_s, m.ops_time_ratio);
    if (best_mode) {
      const double bytes = model->counts().memory_bytes;
      model.reset();
      notes.push_back(best_versus_default(config, bytes, ctx, search_stats));
    }
    const std::string note = fmt::format("{}", fmt::join(notes, "; "));
    return finish(store::status::ok, note);
  } catch (const Unsupported& e) {
    return finish(store::status::skipped, e.what());
  } catch (const std::bad_alloc&) {
    return finish(store::status::failed, "out of memory while building or running the model");
  } catch (const dnnl::error& e) {
    const bool oom = e.status == dnnl_out_of_memory;
    return finish(store::status::failed, oom ? fmt::format("out of memory (oneDNN: {})", e.what())
                                             : fmt::format("oneDNN error: {}", e.what()));
  } catch (const std::exception& e) {
    return finish(store::status::failed, e.what());
  }
}

// ---- JSON forms ---------------------------------------------------------------------------

namespace {
double num(const nlohmann::json& j, const char* key) {
  const auto& v = j.at(key);
  return v.is_null() ? store::kNaN : v.get<double>();
}
nlohmann::json num_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}
}  // namespace

nlohmann::json to_json(const space::Config& c) {
  nlohmann::json j;
  j["family"] = std::string(space::to_string(c.family));
  for (auto name : space::kIntParams) j[std::string(name)] = *space::int_param(c, name);
  for (auto name : space::kStringParams) j[std::string(name)] = *space::string_param(c, name);
  j["knobs"] = {{"mode", c.knobs.mode},
                {"dtype", c.knobs.dtype},
                {"algorithm", c.knobs.algorithm},
                {"isa_cap", c.knobs.isa_cap},
                {"threads", c.knobs.threads}};
  return j;
}

space::Config config_from_json(const nlohmann::json& j) {
  space::Config c;
  c.family = space::family_from_string(j.at("family").get<std::string>());
  for (auto name : space::kIntParams)
    *space::int_param(c, name) = j.at(std::string(name)).get<std::int64_t>();
  for (auto name : space::kStringParams)
    *space::string_param(c, name) = j.at(std::string(name)).get<std::string>();
  const auto& k = j.at("knobs");
  c.knobs.mode = k.at("mode").get<std::string>();
  c.knobs.dtype = k.at("dtype").get<std::string>();
  c.knobs.algorithm = k.at("algorithm").get<std::string>();
  c.knobs.isa_cap = k.at("isa_cap").get<std::string>();
  c.knobs.threads = k.at("threads").get<std::int64_t>();
  return c;
}

// clang-format off
#define DNNSCAPE_METRICS(X) \
  X(step_time_s) \
  X(step_time_ci_low_s) \
  X(step_time_ci_high_s) \
  X(step_time_cv) \
  X(examples_per_s) \
  X(flops) \
  X(gflops) \
  X(flops_utilization) \
  X(bytes) \
  X(arithmetic_intensity) \
  X(params) \
  X(memory_bytes) \
  X(predicted_time_s) \
  X(ops_time_ratio) \
  X(latency_p50_s) \
  X(latency_p90_s) \
  X(latency_p99_s) \
  X(energy_j) \
  X(wall_s)
// clang-format on

nlohmann::json to_json(const RunRecord& r) {
  nlohmann::json m;
#define X(name) m[#name] = num_or_null(r.metrics.name);
  DNNSCAPE_METRICS(X)
#undef X
  m["reps"] = r.metrics.reps;
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& o : r.ops) {
    ops.push_back({o.layer, o.op, o.phase, num_or_null(o.time_s), o.flops, o.bytes, o.impl});
  }
  const auto& p = r.provenance;
  return {{"config", to_json(r.config)},
          {"config_id", r.config_id},
          {"status", r.status},
          {"message", r.message},
          {"metrics", m},
          {"provenance",
           {{"host", p.host},
            {"rank", p.rank},
            {"cores", p.cores},
            {"workers_on_host", p.workers_on_host},
            {"effective_isa", p.effective_isa},
            {"finished_utc", p.finished_utc}}},
          {"samples", r.samples},
          {"ops", ops}};
}

RunRecord record_from_json(const nlohmann::json& j) {
  RunRecord r;
  r.config = config_from_json(j.at("config"));
  r.config_id = j.at("config_id").get<std::string>();
  r.status = j.at("status").get<std::string>();
  r.message = j.at("message").get<std::string>();
  const auto& m = j.at("metrics");
#define X(name) r.metrics.name = num(m, #name);
  DNNSCAPE_METRICS(X)
#undef X
  r.metrics.reps = m.at("reps").get<std::int64_t>();
  const auto& p = j.at("provenance");
  r.provenance.host = p.at("host").get<std::string>();
  r.provenance.rank = p.at("rank").get<std::int64_t>();
  r.provenance.cores = p.at("cores").get<std::string>();
  r.provenance.workers_on_host = p.at("workers_on_host").get<std::int64_t>();
  r.provenance.effective_isa = p.at("effective_isa").get<std::string>();
  r.provenance.finished_utc = p.at("finished_utc").get<std::string>();
  r.samples = j.at("samples").get<std::vector<double>>();
  for (const auto& o : j.at("ops")) {
    r.ops.push_back({o[0].get<std::int64_t>(), o[1].get<std::string>(), o[2].get<std::string>(),
                     o[3].is_null() ? store::kNaN : o[3].get<double>(), o[4].get<double>(),
                     o[5].get<double>(), o[6].get<std::string>()});
  }
  return r;
}

nlohmann::json to_json(const RunContext& c) {
  const auto& m = c.measure;
  const auto& p = c.peaks;
  return {{"measure",
           {{"warmup_s", m.warmup_s},
            {"min_reps", m.min_reps},
            {"max_reps", m.max_reps},
            {"target_ci", m.target_ci},
            {"max_time_s", m.max_time_s}}},
          {"limits",
           {{"memory_fraction", c.limits.memory_fraction}, {"timeout_s", c.limits.timeout_s}}},
          {"peaks",
           {{"gflops_f32", p.gflops_f32},
            {"gflops_f32_1core", p.gflops_f32_1core},
            {"gflops_bf16", p.gflops_bf16},
            {"mem_bandwidth_gbs", p.mem_bandwidth_gbs},
            {"threads", p.threads}}},
          {"host", c.host},
          {"rank", c.rank},
          {"cores", c.cores},
          {"workers_on_host", c.workers_on_host},
          {"profile", c.profile}};
}

RunContext context_from_json(const nlohmann::json& j) {
  RunContext c;
  const auto& m = j.at("measure");
  c.measure.warmup_s = m.at("warmup_s").get<double>();
  c.measure.min_reps = m.at("min_reps").get<std::int64_t>();
  c.measure.max_reps = m.at("max_reps").get<std::int64_t>();
  c.measure.target_ci = m.at("target_ci").get<double>();
  c.measure.max_time_s = m.at("max_time_s").get<double>();
  c.limits.memory_fraction = j.at("limits").at("memory_fraction").get<double>();
  c.limits.timeout_s = j.at("limits").at("timeout_s").get<double>();
  const auto& p = j.at("peaks");
  c.peaks.gflops_f32 = p.at("gflops_f32").get<double>();
  c.peaks.gflops_f32_1core = p.at("gflops_f32_1core").get<double>();
  c.peaks.gflops_bf16 = p.at("gflops_bf16").get<double>();
  c.peaks.mem_bandwidth_gbs = p.at("mem_bandwidth_gbs").get<double>();
  c.peaks.threads = p.at("threads").get<int>();
  c.host = j.at("host").get<std::string>();
  c.rank = j.at("rank").get<std::int64_t>();
  c.cores = j.at("cores").get<std::string>();
  c.workers_on_host = j.at("workers_on_host").get<std::int64_t>();
  c.profile = j.at("profile").get<bool>();
  return c;
}

}  // namespace dnnscape::worker
