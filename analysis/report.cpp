#include "analysis/report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "analysis/compare.hpp"
#include "analysis/frame.hpp"
#include "analysis/heatmap.hpp"
#include "analysis/model_cli.hpp"
#include "analysis/regress.hpp"
#include "analysis/roofline.hpp"
#include "analysis/stats.hpp"
#include "store/results.hpp"

namespace dnnscape::analysis {

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t pos = s.find(from); pos != std::string::npos;
       pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string show(double v) {
  if (!std::isfinite(v)) return "n/a";
  if (std::fabs(v) < 1e15 && v == std::round(v))
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{:.4g}", v);
}

std::string and_where(const std::string& user, const std::string& extra) {
  return user.empty() ? extra : fmt::format("({}) && {}", user, extra);
}

struct Page {
  std::filesystem::path dir;
  std::string body;
  std::vector<std::string> sections;
  int figures = 0;

  void section(const std::string& id, const std::string& title) {
    sections.push_back(title);
    body += fmt::format("<section id=\"{}\">\n<h2>{}</h2>\n", id, html_escape(title));
  }
  void end() { body += "</section>\n"; }
  void finding(const std::string& text) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) body += "<p class=\"finding\">" + html_escape(line) + "</p>\n";
  }
  void error(const std::string& text) {
    body += "<p class=\"error\">Not shown: " + html_escape(text) + "</p>\n";
  }
  // Links relative to the page, so the folder can be moved as a whole.
  std::string rel(const std::filesystem::path& p) const {
    return std::filesystem::relative(p, dir).generic_string();
  }
  void figure(const std::filesystem::path& svg, const std::string& caption) {
    if (!std::filesystem::exists(svg)) return;
    body += "<figure>" + inline_svg(svg, fmt::format("f{}_", ++figures)) + "<figcaption>" +
            html_escape(caption) + " (<a href=\"" + html_escape(rel(svg)) +
            "\">SVG</a>, <a href=\"" +
            html_escape(rel(std::filesystem::path(svg).replace_extension(".png"))) +
            "\">PNG</a>)</figcaption></figure>\n";
  }
};

std::filesystem::path first_svg(const std::vector<std::filesystem::path>& files) {
  for (const auto& f : files)
    if (f.extension() == ".svg") return f;
  return {};
}

// Heat-map axes for a family: y = batch when it varies, x = the parameter with most levels,
// facet = the next one with at most 9 levels.
struct Axes {
  std::string x, y, facet;
};
Axes pick_axes(const Frame& f, const std::vector<std::size_t>& rows) {
  std::vector<std::pair<std::size_t, std::string>> varying;
  for (auto p : kNumericParams) {
    const std::string name(p);
    if (!f.numeric.count(name)) continue;
    std::set<double> levels;
    for (auto r : rows) levels.insert(f.num(name)[r]);
    if (levels.size() > 1 && *levels.begin() > 0) varying.emplace_back(levels.size(), name);
  }
  std::stable_sort(varying.begin(), varying.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  Axes a;
  for (const auto& [n, name] : varying)
    if (name == "batch") a.y = name;
  for (const auto& [n, name] : varying) {
    if (name == a.y) continue;
    if (a.y.empty())
      a.y = name;
    else if (a.x.empty())
      a.x = name;
    else if (a.facet.empty() && n <= 9)
      a.facet = name;
  }
  if (a.x.empty()) std::swap(a.x, a.y);
  return a;
}

}  // namespace

std::string inline_svg(const std::filesystem::path& svg, const std::string& prefix) {
  std::string s = read_file(svg);
  const auto start = s.find("<svg");
  if (start == std::string::npos) return {};
  s.erase(0, start);
  // gnuplot's hook for its optional mouse script: the page runs none.
  for (const char* q : {"\"", "'"}) {
    const std::string attr = std::string("onload=") + q;
    auto pos = s.find(attr);
    if (pos != std::string::npos && pos < s.find('>')) {
      const auto end = s.find(q, pos + attr.size());
      s.erase(pos, end + 1 - pos);
    }
  }
  for (const char* q : {"'", "\""}) {
    replace_all(s, std::string("id=") + q, std::string("id=") + q + prefix);
    replace_all(s, std::string("href=") + q + "#", std::string("href=") + q + "#" + prefix);
  }
  replace_all(s, "url(#", "url(#" + prefix);
  return s;
}

ReportResult report(const ReportOptions& o) {
  if (o.inputs.empty()) throw InputError("report needs at least one results file");
  std::filesystem::create_directories(o.out_dir);
  ReportResult res;
  res.html = o.out_dir / "report.html";

  // Each file is read once, with every column any section needs.
  RegressOptions ro;
  ro.metric = o.metric;
  ro.bootstrap = o.bootstrap;
  ro.seed = o.seed;
  ro.where = o.where;
  ro.out_dir = o.out_dir;
  CompareOptions co;
  co.bootstrap = o.bootstrap;
  co.seed = o.seed;
  co.where = o.where;
  co.out_dir = o.out_dir;
  RooflineOptions rfo;
  rfo.where = o.where;
  rfo.out_dir = o.out_dir;
  std::vector<std::string> cols = regress_columns(ro);
  for (auto& c : compare_columns(co)) cols.push_back(c);
  for (auto& c : roofline_columns(rfo)) cols.push_back(c);
  std::sort(cols.begin(), cols.end());
  cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
  std::vector<Frame> frames;
  for (const auto& in : o.inputs) frames.push_back(load_frame(in, cols, o.where));

  Page page;
  page.dir = o.out_dir;
  std::vector<std::string> findings;

  // Provenance.
  page.section("provenance", "System and spec provenance");
  for (const auto& f : frames) {
    const auto& m = f.meta;
    const auto& s = f.system;
    page.body +=
        fmt::format("<h3>{}</h3>\n<table class=\"kv\">\n", html_escape(f.path.filename().string()));
    const std::vector<std::pair<std::string, std::string>> kv = {
        {"schema", m.schema},
        {"tool version", m.tool_version},
        {"spec", m.spec_name},
        {"spec sha256", m.spec_sha256},
        {"created (UTC)", m.created_utc},
        {"host", s.hostname},
        {"CPU", s.cpu_model},
        {"logical CPUs", std::to_string(s.logical_cpus)},
        {"oneDNN", s.onednn_version + " (" + s.onednn_isa + ")"},
        {"peak f32 (measured)",
         show(s.peak_gflops_f32) + " GFLOP/s (1 core: " + show(s.peak_gflops_f32_1core) + ")"},
        {"peak bf16 (measured)", show(s.peak_gflops_bf16) + " GFLOP/s"},
        {"memory bandwidth (measured)", show(s.mem_bandwidth_gbs) + " GB/s"},
        {"energy source", s.energy_source},
    };
    for (const auto& [k, v] : kv)
      page.body += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", html_escape(k), html_escape(v));
    page.body += "</table>\n";
    if (!m.spec_yaml.empty())
      page.body += "<details><summary>spec YAML</summary><pre>" + html_escape(m.spec_yaml) +
                   "</pre></details>\n";
  }
  page.end();

  // Sweep summary.
  page.section("summary", "Sweep summary");
  for (const auto& f : frames) {
    std::map<std::string, std::size_t> by_status;
    {
      const store::ResultsReader reader(f.path);
      if (reader.has_column("status"))
        for (const auto& st : reader.read_string("status")) ++by_status[st];
    }
    std::string statuses;
    for (const auto& [st, n] : by_status)
      statuses += fmt::format("{}{} {}", statuses.empty() ? "" : ", ", n, st);
    std::string line =
        fmt::format("{}: {} rows ({}); {} ok rows selected{}.", f.label(), f.file_rows, statuses,
                    f.rows, o.where.empty() ? "" : fmt::format(" by --where '{}'", o.where));
    page.finding(line);
    findings.push_back(line);
    page.body +=
        "<table><tr><th>family</th><th>ok rows</th><th>parameters (levels: range)</th>"
        "<th>" +
        html_escape(o.metric) + " min / median / max</th></tr>\n";
    const auto& fam = f.cat("family");
    for (std::size_t l = 0; l < fam.levels.size(); ++l) {
      std::vector<std::size_t> rows;
      for (std::size_t r = 0; r < f.rows; ++r)
        if (fam.codes[r] == static_cast<std::int32_t>(l)) rows.push_back(r);
      std::string params;
      for (auto p : kNumericParams) {
        const std::string name(p);
        if (!f.numeric.count(name)) continue;
        std::set<double> lv;
        for (auto r : rows) lv.insert(f.num(name)[r]);
        if (lv.empty() || *lv.rbegin() <= 0) continue;
        params += fmt::format("{}{} ({}: {}–{})", params.empty() ? "" : ", ", name, lv.size(),
                              show(*lv.begin()), show(*lv.rbegin()));
      }
      std::vector<double> mv;
      if (f.numeric.count(o.metric))
        for (auto r : rows)
          if (std::isfinite(f.num(o.metric)[r])) mv.push_back(f.num(o.metric)[r]);
      std::sort(mv.begin(), mv.end());
      page.body +=
          fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                      html_escape(fam.levels[l]), rows.size(), html_escape(params),
                      mv.empty() ? "n/a"
                                 : fmt::format("{} / {} / {}", show(mv.front()),
                                               show(quantile_sorted(mv, 0.5)), show(mv.back())));
    }
    page.body += "</table>\n";
  }
  page.end();

  // Heat maps: one per file and family.
  page.section("heatmaps", "Heat maps");
  for (const auto& f : frames) {
    const auto& fam = f.cat("family");
    for (std::size_t l = 0; l < fam.levels.size(); ++l) {
      std::vector<std::size_t> rows;
      for (std::size_t r = 0; r < f.rows; ++r)
        if (fam.codes[r] == static_cast<std::int32_t>(l)) rows.push_back(r);
      const auto axes = pick_axes(f, rows);
      if (axes.x.empty() || axes.y.empty()) {
        page.error(fmt::format("{} {}: fewer than two parameters vary", f.label(), fam.levels[l]));
        continue;
      }
      HeatmapOptions h;
      h.input = f.path;
      h.x = axes.x;
      h.y = axes.y;
      h.facet = axes.facet;
      h.metric = o.metric;
      h.where = and_where(o.where, "family==" + fam.levels[l]);
      h.out_dir = o.out_dir / fmt::format("heatmaps-{}-{}", f.label(), fam.levels[l]);
      try {
        const auto r = heatmap(h);
        page.body +=
            fmt::format("<h3>{} — {}</h3>\n", html_escape(f.label()), html_escape(fam.levels[l]));
        const auto line = fmt::format("{} {}: {}", f.label(), fam.levels[l], r.finding);
        page.finding(line);
        findings.push_back(line);
        page.figure(first_svg(r.files),
                    fmt::format("{} over {} × {}{}", o.metric, h.x, h.y,
                                h.facet.empty() ? "" : ", one panel per " + h.facet));
        for (const auto& p : r.files) res.files.push_back(p);
      } catch (const std::exception& e) {
        page.error(fmt::format("{} {}: {}", f.label(), fam.levels[l], e.what()));
      }
    }
  }
  page.end();

  // Regression.
  page.section("regression", "Which parameter matters: regression");
  try {
    const auto r = regress(frames, ro);
    page.finding(r.finding);
    findings.push_back(r.finding);
    page.figure(first_svg(r.files), "standardized OLS coefficients of " + o.metric +
                                        " on log2 parameters, with 95% confidence intervals");
    page.body +=
        "<table><tr><th>group</th><th>term</th><th>coefficient</th><th>95% "
        "CI</th><th>p</th></tr>\n";
    for (const auto& p : r.panels)
      for (const auto& t : p.terms)
        page.body += fmt::format(
            "<tr><td>{}</td><td>{}</td><td>{:+.4f}</td><td>{:+.4f} to "
            "{:+.4f}</td><td>{:.3g}</td></tr>\n",
            html_escape(p.group), html_escape(t.name), t.coef, t.ci_low, t.ci_high, t.p);
    page.body += "</table>\n";
    for (const auto& p : r.files) res.files.push_back(p);
  } catch (const std::exception& e) {
    page.error(e.what());
  }
  page.end();

  // Roofline.
  page.section("roofline", "Roofline");
  try {
    const auto r = roofline(frames, rfo);
    page.finding(r.finding);
    findings.push_back(r.finding);
    for (const auto& p : r.files)
      if (p.extension() == ".svg")
        page.figure(p, "achieved GFLOP/s against FLOP/byte under the measured ceilings");
    for (const auto& p : r.files) res.files.push_back(p);
  } catch (const std::exception& e) {
    page.error(e.what());
  }
  page.end();

  // Measured vs predicted: the performance model's cross-validated predictions of these rows
  // (docs/model.md); every row in a CSV, the worst predicted ones in a table.
  page.section("model", "Measured vs predicted");
  try {
    ModelFitOptions mo;
    mo.inputs = o.inputs;
    mo.where = o.where;
    mo.fit.seed = o.seed;
    const auto r = fit_landscape(mo);
    const std::string text = r.finding();
    page.finding(text);
    findings.push_back(text.substr(0, text.find('\n')));
    const auto csv_path = o.out_dir / "measured_vs_predicted.csv";
    std::ofstream csv(csv_path);
    csv << "system,family,config,measured_step_time_s,predicted_s,lower_90_s,upper_90_s\n";
    struct Worst {
      double err;
      std::string row;
    };
    std::vector<Worst> worst;
    for (const auto& p : r.panels) {
      for (std::size_t i = 0; i < p.cv.n; ++i) {
        const auto label = p.points[i].config.label();
        csv << fmt::format("{},{},\"{}\",{},{},{},{}\n", p.system, space::to_string(p.family),
                           label, p.cv.measured[i], p.cv.predicted[i], p.cv.lower[i],
                           p.cv.upper[i]);
        worst.push_back(
            {std::abs(p.cv.predicted[i] / p.cv.measured[i] - 1),
             fmt::format("<tr><td>{}</td><td>{:.4g}</td><td>{:.4g}</td><td>{:.4g} - "
                         "{:.4g}</td><td>{:+.1f}%</td></tr>\n",
                         html_escape(label), p.cv.measured[i], p.cv.predicted[i], p.cv.lower[i],
                         p.cv.upper[i], 100 * (p.cv.predicted[i] / p.cv.measured[i] - 1))});
      }
    }
    std::sort(worst.begin(), worst.end(),
              [](const Worst& a, const Worst& b) { return a.err > b.err; });
    page.body +=
        "<p>The worst cross-validated predictions of step_time_s (all rows: "
        "measured_vs_predicted.csv)</p>\n<table><tr><th>config</th><th>measured s</th>"
        "<th>predicted s</th><th>90% interval</th><th>error</th></tr>\n";
    for (std::size_t i = 0; i < std::min<std::size_t>(8, worst.size()); ++i)
      page.body += worst[i].row;
    page.body += "</table>\n";
    res.files.push_back(csv_path);
  } catch (const std::exception& e) {
    page.error(e.what());
  }
  page.end();

  // Comparison: several files, or the first knob that varies inside one file.
  std::string by;
  if (frames.size() == 1) {
    for (auto k : kKnobs) {
      const std::string name(k);
      if (frames[0].text.count(name) && frames[0].cat(name).levels.size() > 1) {
        by = name;
        break;
      }
    }
  }
  if (frames.size() > 1 || !by.empty()) {
    page.section("comparison",
                 frames.size() > 1 ? "Comparison across files" : "Comparison across " + by);
    try {
      co.by = by;
      const auto r = compare(frames, co);
      page.finding(r.finding);
      findings.push_back(r.finding);
      for (const auto& p : r.files)
        if (p.extension() == ".svg")
          page.figure(p, "speedup per config, box plot per family (whiskers: 1.5 IQR)");
      for (const auto& p : r.files) res.files.push_back(p);
    } catch (const std::exception& e) {
      page.error(e.what());
    }
    page.end();
  }

  std::string nav;
  for (const auto& s : page.sections) nav += "<li>" + html_escape(s) + "</li>";
  std::string title = "dnnscape report:";
  for (const auto& f : frames) title += " " + f.meta.spec_name + " on " + f.system.hostname + ";";
  title.pop_back();
  const std::string html = fmt::format(
      R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{0}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
.kv th {{ background: #f4f4f4; }}
.finding {{ background: #eef4fb; border-left: 4px solid #4a7ab5; padding: 0.5em 0.8em; }}
.error {{ background: #fbeeee; border-left: 4px solid #b54a4a; padding: 0.5em 0.8em; }}
figure {{ margin: 1em 0; }} figure svg {{ width: 100%; height: auto; max-height: 900px; }}
figcaption {{ font-size: 0.85em; color: #555; }}
pre {{ background: #f7f7f7; padding: 0.8em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>{0}</h1>
<p>Generated {1} by dnnscape from {2}. Metric: {3}{4}. Only rows with status ok are analysed.</p>
<ul class="toc">{5}</ul>
{6}<script>document.body.setAttribute("data-loaded", "1");</script>
</body>
</html>
)",
      html_escape(title), utc_now_iso(), html_escape([&] {
        std::string s;
        for (const auto& f : frames) s += (s.empty() ? "" : ", ") + f.path.filename().string();
        return s;
      }()),
      html_escape(o.metric), o.where.empty() ? "" : html_escape(", filter " + o.where), nav,
      page.body);
  {
    std::ofstream out(res.html);
    out << html;
    if (!out) throw std::runtime_error(fmt::format("cannot write {}", res.html.string()));
  }
  res.files.insert(res.files.begin(), res.html);
  res.sections = page.sections;
  for (const auto& f : findings) res.finding += f + "\n";
  res.finding += fmt::format("Report: {} ({} figures inline).", res.html.string(), page.figures);
  return res;
}

std::string ReportResult::json() const {
  nlohmann::json j;
  j["analysis"] = "report";
  j["html"] = html.string();
  j["sections"] = sections;
  j["finding"] = finding;
  j["files"] = nlohmann::json::array();
  for (const auto& f : files) j["files"].push_back(f.string());
  return j.dump(2);
}

}  // namespace dnnscape::analysis
