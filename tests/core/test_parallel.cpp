// The library is built with OpenMP: at::parallel_for in its own code really splits
// (onebit/core/parallel.h says why this can silently fail).
#include <torch/torch.h>

#include <algorithm>

#include "onebit/core/parallel.h"
#include "tests/support.h"

TEST_CASE("the library's at::parallel_for runs on every intra-op thread (built with OpenMP)", "[core]") {
  // Without -fopenmp on the library, at::parallel_for in its code (packed kernels, STE,
  // stochastic rounding) runs on one thread whatever the thread count, and the tests that
  // compare 1 and N threads pass without ever splitting.
  const int before = torch::get_num_threads();
  CHECK(onebit::parallel_for_threads(64) == std::min(64, before));
  torch::set_num_threads(2);
  CHECK(onebit::parallel_for_threads(64) == 2);
  CHECK(onebit::parallel_for_threads(1) == 1);
  torch::set_num_threads(before);
}
