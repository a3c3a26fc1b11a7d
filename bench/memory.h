// Peak host memory of a piece of code, for the bench/ programs (Linux).
//
// RSS high-water mark above the RSS before the code: /proc/self/clear_refs "5" resets VmHWM to
// the current RSS, the code runs, VmHWM is read. Before that, glibc is told to serve every block
// of 64 KiB or more by mmap and to return it on free (fixed M_MMAP_THRESHOLD, low trim
// threshold, malloc_trim), so RSS follows the live tensors rather than freed memory that malloc
// kept. The Python baselines do the same through ctypes, so both sides are measured alike,
// whatever allocator sits above malloc.
#pragma once
#include <malloc.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <string>

#include "onebit/core/error.h"

namespace onebit::bench {

// A "VmRSS"/"VmHWM"-style line of /proc/self/status, in bytes.
inline int64_t proc_status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  }
  fail("no ", key, " in /proc/self/status");
}

struct PeakMemory {
  int64_t resident = 0;  // RSS before the code (bytes)
  int64_t peak = 0;      // VmHWM during the code minus `resident` (bytes)
};

// Switches malloc to mmap-backed large blocks (for the rest of the process), runs `code` once
// so that the switch settles, then measures a second run of `code`.
inline PeakMemory peak_rss_of(const std::function<void()>& code) {
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  code();
  malloc_trim(0);
  PeakMemory m;
  m.resident = proc_status_bytes("VmRSS");
  {
    std::ofstream clear("/proc/self/clear_refs");
    OB_CHECK(clear && (clear << "5").flush(), "cannot reset the RSS high-water mark (/proc/self/clear_refs)");
  }
  code();
  m.peak = proc_status_bytes("VmHWM") - m.resident;
  return m;
}

}  // namespace onebit::bench
