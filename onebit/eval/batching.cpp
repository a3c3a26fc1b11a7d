#include "onebit/eval/batching.h"

#include <limits>

#include "onebit/core/error.h"

namespace onebit::eval {

std::vector<std::pair<size_t, size_t>> cut_sorted(const std::vector<int64_t>& lengths, int64_t max_tokens,
                                                  int64_t forward_cost) {
  const size_t n = lengths.size();
  for (size_t i = 0; i < n; ++i)
    OB_CHECK(lengths[i] >= 1 && (i == 0 || lengths[i] <= lengths[i - 1]),
             "cut_sorted: lengths must be >= 1 and sorted longest first");
  // best[j]: least cost of rows [0, j); from[j]: where the last batch of that cut begins.
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> best(n + 1, kInf);
  std::vector<size_t> from(n + 1, 0);
  best[0] = 0;
  for (size_t i = 0; i < n; ++i) {  // a batch starting at row i, padded to lengths[i]
    for (size_t j = i + 1; j <= n; ++j) {
      const int64_t tokens = int64_t(j - i) * lengths[i];
      if (j > i + 1 && tokens > max_tokens) break;
      const int64_t cost = best[i] + forward_cost + tokens;
      if (cost < best[j]) {
        best[j] = cost;
        from[j] = i;
      }
    }
  }
  std::vector<std::pair<size_t, size_t>> cuts;
  for (size_t j = n; j > 0; j = from[j]) cuts.emplace_back(from[j], j);
  return {cuts.rbegin(), cuts.rend()};
}

}  // namespace onebit::eval
