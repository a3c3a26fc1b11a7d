#include "onebit/core/parallel.h"

#include <ATen/Parallel.h>

#include <mutex>
#include <set>
#include <thread>

namespace onebit {

int parallel_for_threads(int64_t n) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    const std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  return int(ids.size());
}

}  // namespace onebit
