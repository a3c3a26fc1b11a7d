// Running the Python baselines of the bench/ programs (bench/py/*.py) as subprocesses.
#pragma once
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "onebit/core/error.h"

namespace onebit::bench {

// stdout of `cmd` (run by the shell); fails when it cannot be started.
inline std::string run_capture(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  OB_CHECK(pipe != nullptr, "cannot run: ", cmd);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe.get())) out.append(buf, n);
  return out;
}

// $ONEBIT_PYTHON, else the venv scripts/setup.sh makes, else python3.
inline std::string default_python() {
  if (const char* env = std::getenv("ONEBIT_PYTHON")) return env;
  const char* home = std::getenv("HOME");
  const std::filesystem::path venv =
      std::filesystem::path(home ? home : "") / ".cache/onebit/venv-torch-2.11.0/bin/python";
  return std::filesystem::exists(venv) ? venv.string() : "python3";
}

// bench/py/<name> in the source tree this program was built from (env ONEBIT_BENCH_PY_DIR overrides it).
inline std::string py_script(const std::string& name) {
  const char* env = std::getenv("ONEBIT_BENCH_PY_DIR");
  return (std::filesystem::path(env ? env : ONEBIT_BENCH_PY_DIR) / name).string();
}

// The JSON object on the last line of a Python baseline's stdout; fails naming the command
// when there is none (the script's own error went to its stderr).
inline nlohmann::json last_json(const std::string& out, const std::string& cmd) {
  const auto at = out.rfind('{');
  OB_CHECK(at != std::string::npos, "the Python baseline printed no result; run it to see why: ", cmd);
  return nlohmann::json::parse(out.substr(at));
}

// A Python process that answers each command line written to its stdin with one JSON line on
// its stdout (which goes through a FIFO at `fifo`), so that a benchmark can interleave its own
// runs with the Python ones. The first line it prints (e.g. a "ready" line) is read by read().
class PyServer {
 public:
  PyServer(const std::string& cmd, const std::string& fifo) : cmd_(cmd), fifo_(fifo) {
    std::signal(SIGPIPE, SIG_IGN);  // a dead child shows up as EOF below, not as a signal
    std::filesystem::remove(fifo_);
    OB_CHECK(mkfifo(fifo_.c_str(), 0600) == 0, "cannot create the FIFO ", fifo_);
    in_ = popen((cmd_ + " > " + fifo_).c_str(), "w");
    OB_CHECK(in_ != nullptr, "cannot run: ", cmd_);
    out_.open(fifo_);  // blocks until the shell has opened the FIFO for the child
    OB_CHECK(out_.is_open(), "cannot open the FIFO ", fifo_);
  }
  PyServer(const PyServer&) = delete;
  PyServer& operator=(const PyServer&) = delete;
  ~PyServer() {
    if (in_) pclose(in_);  // EOF on the child's stdin: it exits
    std::error_code ec;
    std::filesystem::remove(fifo_, ec);
  }

  // The next JSON line of the child's stdout (other lines are skipped).
  nlohmann::json read() {
    std::string line;
    while (std::getline(out_, line)) {
      if (!line.empty() && line[0] == '{') return nlohmann::json::parse(line);
    }
    fail("the Python side exited early (its error is above); command: ", cmd_);
  }
  nlohmann::json call(const std::string& command) {
    OB_CHECK(std::fputs((command + "\n").c_str(), in_) >= 0 && std::fflush(in_) == 0,
             "the Python side does not read commands any more (its error is above); command: ", cmd_);
    return read();
  }

 private:
  std::string cmd_, fifo_;
  FILE* in_ = nullptr;
  std::ifstream out_;
};

}  // namespace onebit::bench
