// Peak host memory of a piece of code, for the bench/ programs (Linux).
//
// Measure: RSS high-water mark above the RSS before the code. malloc_trim(0), read VmRSS, write
// "5" to /proc/self/clear_refs (resets VmHWM to the current RSS), run the code, read VmHWM.
// For RSS to follow the live tensors, the measured process must run with glibc serving every
// block of 64 KiB or more by mmap and returning it on free, from process start:
//   MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=131072
// (otherwise glibc's adaptive threshold keeps freed blocks up to 32 MiB in the heap, and RSS
// counts them). That holds for any allocator above malloc, so a C++ and a Python process
// measured this way are comparable.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

#include "onebit/core/error.h"

namespace onebit::bench {

// The environment prefix of such a measured child process (see above).
inline constexpr const char* kMallocEnv = "env MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=131072 ";

// A "VmRSS"/"VmHWM"-style line of /proc/self/status, in bytes.
inline int64_t proc_status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  }
  fail("no ", key, " in /proc/self/status");
}

// Resets VmHWM to the current RSS.
inline void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  OB_CHECK(clear && (clear << "5").flush(), "cannot reset the RSS high-water mark (/proc/self/clear_refs)");
}

}  // namespace onebit::bench
