#include "onebit/util/stop_signals.h"

#include <signal.h>

#include <atomic>
#include <cstdio>

#include "onebit/core/error.h"

namespace onebit::util {
namespace {

std::atomic<int> g_received{0};
int g_instances = 0;  // one StopSignals at a time
struct sigaction g_old_term, g_old_usr1;

extern "C" void on_stop_signal(int sig) {
  int none = 0;
  g_received.compare_exchange_strong(none, sig);  // keep the first one
}

}  // namespace

StopSignals::StopSignals() {
  OB_CHECK(g_instances == 0, "StopSignals: only one may exist at a time");
  ++g_instances;
  g_received = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // interrupted reads and writes (sockets, checkpoint files) continue
  ::sigaction(SIGTERM, &sa, &g_old_term);
  ::sigaction(SIGUSR1, &sa, &g_old_usr1);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGTERM, &g_old_term, nullptr);
  ::sigaction(SIGUSR1, &g_old_usr1, nullptr);
  --g_instances;
}

int StopSignals::received() const { return g_received.load(); }

const char* signal_name(int sig) {
  if (sig == SIGTERM) return "SIGTERM";
  if (sig == SIGUSR1) return "SIGUSR1";
  static thread_local char buf[24];
  std::snprintf(buf, sizeof buf, "signal %d", sig);
  return buf;
}

}  // namespace onebit::util
