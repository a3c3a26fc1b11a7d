// Packed 1-bit GEMV (CPU LUT kernel) vs dense fp32 matmul with the same ±1 matrix, same run.
//   bench-packed-gemv --threads 1 --iters 20
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/timing.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/onebit_linear.h"


using onebit::bench::median_ms;

int main(int argc, char** argv) {
  return onebit::guarded_main("bench-packed-gemv", [&] {
    CLI::App app{"CPU packed 1-bit GEMV vs dense fp32 matmul (no post-LayerNorm)"};
    int iters = 20, threads = 0;
    int64_t rows = 1;
    app.add_option("--iters", iters, "timed iterations (median reported)");
    app.add_option("--threads", threads, "torch intra-op threads (0: leave default)");
    app.add_option("--rows", rows, "rows of x (1 = GEMV; > 4 takes the tiled GEMM path)");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (threads > 0) torch::set_num_threads(threads);
    torch::NoGradGuard no_grad;
    std::printf("threads=%d rows=%lld iters=%d (median ms)\n", torch::get_num_threads(), (long long)rows, iters);
    std::printf("%-14s %10s %10s %8s %12s %12s\n", "shape", "dense", "packed", "speedup", "dense MB", "packed MB");
    for (auto [in, out] : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 11008}, {11008, 4096}}) {
      torch::manual_seed(0);
      auto layer = onebit::nn::OneBitLinear(onebit::nn::OneBitLinearOptions(in, out).post_layernorm(false));
      auto packed = onebit::packed::PackedLinear::from(*layer);
      // Dense baseline: the ±1 matrix kept materialised in fp32, one matmul plus the scales.
      auto s = torch::where(layer->weight >= 0, 1.0f, -1.0f);
      auto x = torch::randn({rows, in});
      const double t_dense = median_ms([&] { torch::matmul(x * layer->g, s.t()).mul_(layer->h); }, 1, iters);
      const double t_packed = median_ms([&] { packed.forward(x); }, 1, iters);
      std::printf("%5lld->%-7lld %10.3f %10.3f %8.2f %12.1f %12.1f\n", (long long)in, (long long)out, t_dense,
                  t_packed, t_dense / t_packed, s.numel() * 4 / 1e6, packed.signs.numel() / 1e6);
    }
    return 0;
  });
}
