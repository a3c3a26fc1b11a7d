// Where a piece of work spends its time, operator by operator: the LibTorch (Kineto) profiler
// around a callable, its events folded into one row per name and device. CPU rows give self
// time (a nested operator's time is its parent's no longer); CUDA rows are the kernels and
// copies the GPU ran (with CUDA graphs too), so their count is the launches per call.
#pragma once
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace onebit::util {

struct OpRow {
  std::string name;
  bool gpu = false;  // a CUDA kernel or copy (else a CPU operator)
  int64_t calls = 0;
  double self_us = 0;
};

// Runs `fn` once under the profiler; rows sorted by self time, largest first.
inline std::vector<OpRow> profile_ops(const std::function<void()>& fn, bool cuda) {
  namespace prof = torch::profiler::impl;
  std::set<prof::ActivityType> acts{prof::ActivityType::CPU};
  if (cuda) acts.insert(prof::ActivityType::CUDA);
  // Without a GPU, Kineto's start-up logs a failed device count as an ERROR line: quiet it.
  if (!cuda) setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
  torch::autograd::profiler::prepareProfiler(prof::ProfilerConfig(prof::ProfilerState::KINETO), acts);
  torch::autograd::profiler::enableProfiler(prof::ProfilerConfig(prof::ProfilerState::KINETO), acts);
  fn();
  const auto result = torch::autograd::profiler::disableProfiler();

  struct Span {
    uint64_t start, end;
    std::string name;
  };
  std::map<uint64_t, std::vector<Span>> cpu_by_thread;
  std::map<std::pair<std::string, bool>, OpRow> rows;
  for (const auto& e : result->events()) {
    if (e.deviceType() == c10::DeviceType::CUDA) {
      auto& r = rows[{e.name(), true}];
      r.name = e.name();
      r.gpu = true;
      ++r.calls;
      r.self_us += double(e.durationNs()) / 1e3;
    } else if (e.durationNs() > 0) {
      cpu_by_thread[e.startThreadId()].push_back({e.startNs(), e.endNs(), e.name()});
    }
  }
  // Self time: each span minus the spans directly inside it (sorted by start, outer first).
  for (auto& [tid, spans] : cpu_by_thread) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
      return a.start != b.start ? a.start < b.start : a.end > b.end;
    });
    std::vector<std::pair<const Span*, double>> stack;  // span, its children's time
    auto close = [&] {
      const auto [s, child] = stack.back();
      stack.pop_back();
      auto& r = rows[{s->name, false}];
      r.name = s->name;
      ++r.calls;
      r.self_us += (double(s->end - s->start) - child) / 1e3;
      if (!stack.empty()) stack.back().second += double(s->end - s->start);
    };
    for (const auto& s : spans) {
      while (!stack.empty() && stack.back().first->end <= s.start) close();
      stack.push_back({&s, 0.0});
    }
    while (!stack.empty()) close();
  }
  std::vector<OpRow> out;
  for (auto& [key, r] : rows) out.push_back(std::move(r));
  std::sort(out.begin(), out.end(), [](const OpRow& a, const OpRow& b) { return a.self_us > b.self_us; });
  return out;
}

}  // namespace onebit::util
