#include "orchestrator/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace dnnscape::orchestrator {

Progress::Progress(std::int64_t total, double predicted_total_s, std::FILE* out, bool force_plain)
    : total_(total),
      predicted_total_s_(predicted_total_s),
      out_(out),
      tty_(!force_plain && isatty(fileno(out)) != 0) {}

double Progress::eta_s(double elapsed_s, double predicted_done_s, double predicted_total_s) {
  const double left = std::max(0.0, predicted_total_s - predicted_done_s);
  if (predicted_done_s <= 0 || elapsed_s <= 0) return left;
  // The cost model is a lower bound; scale it by how far off it has been so far.
  return left * (elapsed_s / predicted_done_s);
}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s)) return "?";
  const auto t = static_cast<long>(std::llround(s));
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void Progress::done(const std::string& status, double predicted_s, const std::string& label) {
  ++completed_;
  predicted_done_s_ += predicted_s;
  if (status == "ok") {
    ++ok_;
  } else if (status == "skipped") {
    ++skipped_;
  } else {
    ++failed_;
  }
  draw(label);
}

void Progress::draw(const std::string& label) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = eta_s(elapsed, predicted_done_s_, predicted_total_s_);
  const double frac =
      total_ > 0 ? static_cast<double>(completed_) / static_cast<double>(total_) : 1.0;
  const std::string counts =
      fmt::format("{}/{} ok {} skipped {} failed {}", completed_, total_, ok_, skipped_, failed_);
  if (tty_) {
    // At most 10 redraws a second: thousands of tiny configs a second must not pay for a
    // terminal write each.
    const auto now = std::chrono::steady_clock::now();
    if (completed_ != total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    if (!label.empty()) last_label_ = label;
    constexpr int width = 30;
    const int filled = static_cast<int>(frac * width);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::string text =
        fmt::format("\r[{}] {:3.0f}% {} | {} elapsed, ETA {} | {}", bar, 100 * frac, counts,
                    format_duration(elapsed), format_duration(eta), last_label_);
    if (text.size() > 160) text.resize(160);
    fmt::print(out_, "{}\x1b[K", text);
    std::fflush(out_);
    return;
  }
  // Plain lines at most every 10 s (and always for the last config), for logs and batch jobs.
  const auto now = std::chrono::steady_clock::now();
  if (completed_ != total_ && now - last_line_ < std::chrono::seconds(10)) return;
  last_line_ = now;
  fmt::print(out_, "progress {:3.0f}% {} | elapsed {} | ETA {}\n", 100 * frac, counts,
             format_duration(elapsed), format_duration(eta));
  std::fflush(out_);
}

void Progress::tick() {
  const auto now = std::chrono::steady_clock::now();
  const auto since = std::max(tty_ ? last_draw_ : last_line_, start_);
  if (now - since < std::chrono::seconds(tty_ ? 1 : 10)) return;
  draw("");
}

void Progress::finish() {
  if (tty_) fmt::print(out_, "\n");
  std::fflush(out_);
}

}  // namespace dnnscape::orchestrator
