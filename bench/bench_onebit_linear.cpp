// Forward+backward time of OneBitLinear vs torch::nn::Linear (same run, same inputs).
//   bench-onebit-linear --iters 10 --threads 2
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/timing.h"
#include "onebit/autograd/sign_ste.h"
#include "onebit/core/error.h"
#include "onebit/nn/onebit_linear.h"

namespace {
// Median wall time in ms of `step` over `iters` runs after `warmup` runs.
}  // namespace

using onebit::bench::median_ms;

int main(int argc, char** argv) {
  return onebit::guarded_main("bench-onebit-linear", [&] {
    CLI::App app{"OneBitLinear forward+backward vs torch::nn::Linear on CPU"};
    int iters = 10, warmup = 2, threads = 0;
    int64_t tokens = 512;
    std::string dtype = "fp32";
    bool breakdown = false;
    app.add_option("--iters", iters, "timed iterations (median reported)");
    app.add_option("--warmup", warmup, "untimed iterations first");
    app.add_option("--threads", threads, "torch intra-op threads (0: leave default)");
    app.add_option("--tokens", tokens, "rows of the input");
    app.add_flag("--breakdown", breakdown, "also time sign() and the STE backward alone");
    app.add_option("--dtype", dtype, "activation dtype: fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (threads > 0) torch::set_num_threads(threads);
    const auto dt = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    std::printf("threads=%d tokens=%lld dtype=%s iters=%d (median ms, forward+backward; ratio = median of paired runs)\n",
                torch::get_num_threads(), (long long)tokens, dtype.c_str(), iters);
    std::printf("%-14s %12s %12s %8s\n", "shape", "Linear", "OneBit", "ratio");
    for (auto [in, out] : {std::pair<int64_t, int64_t>{2048, 2048}, {2048, 5632}}) {
      torch::manual_seed(0);
      torch::nn::Linear lin(torch::nn::LinearOptions(in, out).bias(false));
      lin->to(dt);
      auto ob = onebit::nn::OneBitLinearImpl::from_linear(
          lin->weight.detach().to(torch::kFloat32), {},
          onebit::nn::OneBitLinearOptions(in, out).svid(onebit::nn::SvidMethod::None));
      auto x = torch::randn({tokens, in}).to(dt).requires_grad_();
      auto gy = torch::randn({tokens, out}).to(dt);
      auto run = [&](torch::nn::Module& m, const std::function<torch::Tensor(const torch::Tensor&)>& f) {
        return [&m, f, &x, &gy] {
          m.zero_grad();
          x.mutable_grad() = torch::Tensor();
          f(x).backward(gy);
        };
      };
      // Interleaved: each iteration times both layers back to back, so load from other
      // processes on a shared machine hits both alike; the ratio is the median of the pairs.
      auto step_lin = run(*lin, [&](const torch::Tensor& v) { return lin->forward(v); });
      auto step_ob = run(*ob, [&](const torch::Tensor& v) { return ob->forward(v); });
      for (int i = 0; i < warmup; ++i) step_lin(), step_ob();
      std::vector<double> tl, to, ratio;
      for (int i = 0; i < iters; ++i) {
        tl.push_back(median_ms(step_lin, 0, 1));
        to.push_back(median_ms(step_ob, 0, 1));
        ratio.push_back(to.back() / tl.back());
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      std::printf("%5lld->%-7lld %12.2f %12.2f %8.3f\n", (long long)in, (long long)out, median(tl),
                  median(to), median(ratio));
      if (breakdown) {  // the per-weight passes the layer adds to the three matmuls
        torch::NoGradGuard ng;
        const auto& w = ob->weight;
        auto gs = torch::randn_like(w).to(dt);  // dL/dsign(W) comes in the activations' dtype
        std::printf("    sign_pm1 %.2f ms, ste tanh %.2f ms, ste clipped %.2f ms\n",
                    median_ms([&] { onebit::autograd::sign_pm1(w, dt); }, 1, iters),
                    median_ms([&] { onebit::autograd::ste_backward(gs, w, onebit::nn::SteKind::Tanh); }, 1, iters),
                    median_ms([&] { onebit::autograd::ste_backward(gs, w, onebit::nn::SteKind::Clipped); }, 1, iters));
      }
    }
    return 0;
  });
}
