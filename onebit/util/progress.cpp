#include "onebit/util/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace onebit::util {

std::string format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, double log_every_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      log_every_s_(log_every_s),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  // An abandoned bar (exception) must not leave the cursor mid-line.
  if (!finished_ && tty_) std::cerr << std::endl;
}

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double ProgressBar::rate() const {
  const double t = elapsed_s();
  const int64_t counted = done_ - std::max<int64_t>(start_done_, 0);
  return t > 0 ? counted / t : 0.0;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  // The first report sets the origin for the rate, so resumed runs show their own speed.
  if (start_done_ < 0) start_done_ = done > 0 ? done : 0;
  done_ = done;
  extra_ = extra;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : log_every_s_)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish(const std::string& extra) {
  if (finished_) return;
  if (!extra.empty()) extra_ = extra;
  draw(true);
  finished_ = true;
}

void ProgressBar::draw(bool final_line) {
  std::ostringstream os;
  const double r = rate();
  char rate_buf[32];
  std::snprintf(rate_buf, sizeof rate_buf, "%.2f", r);
  if (tty_) os << '\r';
  os << label_ << ' ';
  if (total_ > 0) {
    const double frac = std::min(1.0, double(done_) / double(total_));
    if (tty_) {
      const int width = 24, fill = int(frac * width);
      os << '[' << std::string(fill, '#') << std::string(width - fill, '.') << "] ";
    }
    os << done_ << '/' << total_ << ' ' << unit_ << " (" << int(frac * 100) << "%)";
  } else {
    os << done_ << ' ' << unit_;
  }
  os << ' ' << rate_buf << ' ' << unit_ << "/s";
  if (final_line) {
    os << " in " << format_duration(elapsed_s());
  } else if (total_ > 0 && r > 0) {
    os << " ETA " << format_duration((total_ - done_) / r);
  }
  if (!extra_.empty()) os << " | " << extra_;
  if (tty_) os << "\x1b[K";  // clear what a longer previous line left
  if (!tty_ || final_line) os << '\n';
  std::cerr << os.str() << std::flush;
}

}  // namespace onebit::util
