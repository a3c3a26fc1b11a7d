// StopSignals: while one exists, SIGTERM and SIGUSR1 only set a flag that a loop polls, so the
// loop can finish its step, write a checkpoint and exit on its own (a SLURM preemption sends
// SIGTERM; `sbatch --signal=USR1@120` sends SIGUSR1 ahead of the time limit). The handler
// does nothing else (async-signal-safe). The destructor restores the previous handlers.
#pragma once

namespace onebit::util {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first of SIGTERM/SIGUSR1 received since construction, or 0.
  int received() const;
};

// The exit status of a run stopped by signal `sig`: 128 + sig, the status a shell reports
// for a process that signal ended (143 for SIGTERM, 138 for SIGUSR1). Non-zero on purpose:
// the run is not finished, and schedulers must not record it as complete.
inline int exit_code_for(int sig) { return 128 + sig; }

// "SIGTERM", "SIGUSR1", or "signal N".
const char* signal_name(int sig);

}  // namespace onebit::util
