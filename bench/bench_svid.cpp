// SVID initialisation time: power-iteration SVD vs rank-1 NMF on LLaMA-sized weights.
//   bench-svid --threads 2
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "onebit/core/error.h"
#include "onebit/init/svid.h"

int main(int argc, char** argv) {
  return onebit::guarded_main("bench-svid", [&] {
    CLI::App app{"SVID: power-iteration SVD vs rank-1 NMF (time, iterations, error)"};
    int threads = 0;
    bool small = false;
    app.add_option("--threads", threads, "torch intra-op threads (0: leave default)");
    app.add_flag("--small", small, "also check against torch::linalg_svd on a 1024x1024 matrix");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (threads > 0) torch::set_num_threads(threads);
    auto ms_since = [](auto t0) {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    std::printf("threads=%d; Gaussian weights with log-normal row scales (one run each)\n",
                torch::get_num_threads());
    std::printf("%-12s %10s %6s %10s %6s %8s %10s %10s %10s\n", "shape", "svd ms", "iters", "nmf ms",
                "iters", "nmf/svd", "err svd", "err nmf", "err mean");
    std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {11008, 4096}};
    if (small) shapes.insert(shapes.begin(), {1024, 1024});
    for (auto [out, in] : shapes) {
      torch::manual_seed(0);
      auto w = torch::randn({out, in}) * torch::exp(torch::randn({out, 1}) * 0.5);
      auto t0 = std::chrono::steady_clock::now();
      auto svd = onebit::init::svid_svd(w);
      const double t_svd = ms_since(t0);
      t0 = std::chrono::steady_clock::now();
      auto nmf = onebit::init::svid_nmf(w);
      const double t_nmf = ms_since(t0);
      std::printf("%5lldx%-6lld %10.1f %6lld %10.1f %6lld %8.2f %10.6f %10.6f %10.6f\n", (long long)out,
                  (long long)in, t_svd, (long long)svd.iterations, t_nmf, (long long)nmf.iterations,
                  t_nmf / t_svd, onebit::init::svid_error(w, svd.a, svd.b),
                  onebit::init::svid_error(w, nmf.a, nmf.b), onebit::init::sign_mean_error(w));
      if (small && out == 1024) {
        t0 = std::chrono::steady_clock::now();
        const double opt = onebit::init::optimal_rank1_error(w);
        std::printf("  full SVD of |W| (torch::linalg_svdvals, double): %.1f ms, optimal error %.6f\n",
                    ms_since(t0), opt);
      }
    }
    return 0;
  });
}
