// Progress of a sweep with an ETA: a redrawn bar on a terminal, plain periodic lines otherwise
// (batch jobs, logs).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace dnnscape::orchestrator {

class Progress {
 public:
  // total: configs to run now; predicted_total_s: cost-model estimate of their wall time.
  Progress(std::int64_t total, double predicted_total_s, std::FILE* out, bool force_plain = false);
  // One config finished; predicted_s is its share of the prediction (for the ETA).
  void done(const std::string& status, double predicted_s, const std::string& label);
  // Nothing finished, but time passed: in plain mode, prints the periodic line when it is due
  // (batch logs show the sweep is alive even while long configs run).
  void tick();
  void finish();
  [[nodiscard]] std::int64_t completed() const { return completed_; }

  // ETA from the cost model, corrected by the ratio of elapsed time to predicted time so far.
  static double eta_s(double elapsed_s, double predicted_done_s, double predicted_total_s);
  static std::string format_duration(double seconds);

 private:
  void draw(const std::string& label);
  std::int64_t total_;
  double predicted_total_s_;
  double predicted_done_s_ = 0;
  std::FILE* out_;
  bool tty_;
  std::int64_t completed_ = 0, ok_ = 0, skipped_ = 0, failed_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_line_{};
  std::chrono::steady_clock::time_point last_draw_{};
  std::string last_label_;
};

}  // namespace dnnscape::orchestrator
