// ProgressBar: a one-line bar with rate and ETA on a terminal; plain log lines (at most one
// every `log_every_s` seconds) when stderr is not a terminal (SLURM logs, CI).
#pragma once
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace onebit::util {

class ProgressBar {
 public:
  // total <= 0: unknown length (no ETA). unit names the counted things ("samples", "steps").
  ProgressBar(std::string label, int64_t total, std::string unit = "it", double log_every_s = 10.0);
  ~ProgressBar();
  // Reports `done` items so far (absolute, not a delta) with a free-form suffix ("loss 2.31").
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");  // final line with total time; idempotent
  double elapsed_s() const;
  double rate() const;  // items per second since start

 private:
  void draw(bool final_line);
  std::string label_, unit_, extra_;
  int64_t total_, done_ = 0, start_done_ = -1;
  double log_every_s_;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);  // "1h02m", "3m05s", "12.3s"

}  // namespace onebit::util
