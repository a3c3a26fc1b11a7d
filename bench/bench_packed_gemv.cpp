// bench-packed-gemv: packed 1-bit GEMV/GEMM against a copy-bandwidth baseline and LibTorch
// dense fp32/bf16 matmuls, measured in the same run (docs/BENCHMARKS.md).
//   bench-packed-gemv --threads 2                 (CPU: every available kernel, rows 1)
//   bench-packed-gemv --device cuda --json        (GPU: the CUDA path vs cuBLAS bf16, JSON lines)
// Weights are cycled over enough copies of each layer to exceed the caches (--cold-mb), as a
// decoder does when it walks its layers, so a GEMV reads its weights from memory.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/timing.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/onebit_linear.h"

using namespace onebit;
using bench::median_ms;
using packed::CpuKernel;

namespace {
void sync(const torch::Device& dev) {
  if (dev.is_cuda()) torch::cuda::synchronize(dev.index() < 0 ? 0 : dev.index());
}

// STREAM-style copy bandwidth (bytes read + written per second) of a `mb`-MB buffer.
double copy_gbs(const torch::Device& dev, int64_t mb, int iters) {
  const int64_t n = mb * (1 << 20) / 4;
  auto a = torch::rand({n}, torch::TensorOptions().device(dev)), b = torch::empty_like(a);
  const double ms = median_ms([&] { b.copy_(a); sync(dev); }, 2, iters);
  return 2.0 * double(n) * 4 / (ms * 1e6);
}
}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-packed-gemv", [&] {
    CLI::App app{"Packed 1-bit GEMV/GEMM vs copy bandwidth and LibTorch dense fp32/bf16 (same run)"};
    int iters = 15, threads = 0;
    int64_t cold_mb = 256, copy_mb = 256;
    std::vector<int64_t> rows_list = {1};
    std::vector<std::string> kernel_names;
    std::vector<std::string> shape_names = {"4096x4096", "4096x11008", "11008x4096"};
    std::string device = "cpu";
    bool json_out = false, post_ln = true;
    app.add_option("--iters", iters, "timed iterations (median)")->capture_default_str();
    app.add_option("--threads", threads, "torch intra-op threads (0: leave default)");
    app.add_option("--rows", rows_list, "rows of x (tokens), e.g. --rows 1 4 16")->capture_default_str();
    app.add_option("--cold-mb", cold_mb, "packed weights cycled per shape (MB), beyond the caches")->capture_default_str();
    app.add_option("--copy-mb", copy_mb, "copy-bandwidth buffer (MB)")->capture_default_str();
    app.add_option("--device", device, "cpu | cuda | cuda:N")->capture_default_str();
    app.add_option("--shapes", shape_names, "layer shapes INxOUT (default: LLaMA-7B's three)")->capture_default_str();
    app.add_option("--kernels", kernel_names, "CPU kernels to time (default: every available one), e.g. --kernels avx2 lut");
    app.add_flag("--json", json_out, "one JSON object per measurement instead of a table");
    app.add_option("--post-ln", post_ln, "post-LayerNorm in the packed layer")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    OB_CHECK(iters > 0 && cold_mb > 0 && copy_mb > 0, "--iters, --cold-mb and --copy-mb must be positive");
    if (threads > 0) torch::set_num_threads(threads);
    torch::Device dev(torch::kCPU);
    try {
      dev = torch::Device(device);
    } catch (const c10::Error&) {
      fail("--device: unknown device '", device, "' (cpu, cuda, cuda:N)");
    }
    OB_CHECK(!dev.is_cuda() || torch::cuda::is_available(), "--device ", device, ": no CUDA device");
    torch::NoGradGuard no_grad;

    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& name : shape_names) {
      long long in = 0, out = 0;
      char end = 0;
      OB_CHECK(std::sscanf(name.c_str(), "%lldx%lld%c", &in, &out, &end) == 2 && in > 0 && out > 0,
               "--shapes: '", name, "' is not INxOUT with positive sizes (e.g. 4096x11008)");
      shapes.emplace_back(in, out);
    }
    const double copy = copy_gbs(dev, copy_mb, iters);
    std::vector<CpuKernel> kernels;
    if (dev.is_cpu()) {
      for (CpuKernel k : {CpuKernel::Lut, CpuKernel::Generic, CpuKernel::Avx2, CpuKernel::Avx512,
                          CpuKernel::Avx512Vnni, CpuKernel::Tiled})
        if (packed::cpu_kernel_available(k) &&
            (kernel_names.empty() ||
             std::find(kernel_names.begin(), kernel_names.end(), packed::to_string(k)) != kernel_names.end()))
          kernels.push_back(k);
      OB_CHECK(!kernels.empty(), "--kernels: none of the named kernels is available (lut, generic, avx2, avx512, avx512vnni, tiled)");
    } else {
      kernels = {CpuKernel::Auto};
    }
    if (!json_out) {
      std::printf("device=%s threads=%d copy bandwidth %.1f GB/s (read+write, %lld MB buffer)\n", device.c_str(),
                  torch::get_num_threads(), copy, (long long)copy_mb);
      std::printf("%-12s %4s %-10s %10s %9s %7s %10s %10s %8s %8s\n", "shape", "rows", "kernel", "packed us", "GB/s",
                  "%copy", "fp32 us", "bf16 us", "x fp32", "x bf16");
    }
    for (auto [in, out] : shapes) {
      torch::manual_seed(0);
      auto layer = nn::OneBitLinear(nn::OneBitLinearOptions(in, out).post_layernorm(post_ln));
      const int64_t packed_bytes = out * ((in + 7) / 8);
      const int64_t copies = std::max<int64_t>(1, cold_mb * (1 << 20) / packed_bytes);
      std::vector<packed::PackedOneBitLinear> layers;
      for (int64_t c = 0; c < copies; ++c) layers.emplace_back(packed::PackedOneBitLinearImpl::from(*layer));
      for (auto& l : layers) l->to(dev);
      // Dense baselines: the ±1 matrix materialised, one LibTorch matmul (64+ MB: past the caches).
      const auto s = torch::where(layer->weight >= 0, 1.0f, -1.0f).to(dev);
      const auto s16 = s.to(torch::kBFloat16);
      for (int64_t rows : rows_list) {
        const auto x = torch::randn({rows, in}, torch::TensorOptions().device(dev));
        const auto x16 = x.to(torch::kBFloat16);
        const double t32 = median_ms([&] { torch::matmul(x, s.t()); sync(dev); }, 2, iters) * 1e3;
        const double t16 = median_ms([&] { torch::matmul(x16, s16.t()); sync(dev); }, 2, iters) * 1e3;
        for (CpuKernel k : kernels) {
          const auto& xin = dev.is_cuda() ? x16 : x;
          if (dev.is_cpu())  // the kernel's own layout, converted before timing
            for (auto& l : layers) l->use_layout(packed::layout_for(k));
          const double t = median_ms([&] {
                             for (auto& l : layers) l->forward(xin, k);
                             sync(dev);
                           }, 1, iters) * 1e3 / double(copies);
          const double gbs = double(packed_bytes) / (t * 1e3);
          if (json_out) {
            std::printf("%s\n", nlohmann::json{{"bench", "packed_gemv"}, {"device", device}, {"in", in}, {"out", out},
                                               {"rows", rows}, {"kernel", packed::to_string(k)}, {"packed_us", t},
                                               {"weight_gbs", gbs}, {"copy_gbs", copy}, {"pct_copy", 100 * gbs / copy},
                                               {"dense_fp32_us", t32}, {"dense_bf16_us", t16},
                                               {"speedup_fp32", t32 / t}, {"speedup_bf16", t16 / t},
                                               {"threads", torch::get_num_threads()}}
                                      .dump()
                                      .c_str());
          } else {
            std::printf("%5lldx%-6lld %4lld %-10s %10.1f %9.2f %6.1f%% %10.1f %10.1f %8.2f %8.2f\n", (long long)in,
                        (long long)out, (long long)rows, packed::to_string(k), t, gbs, 100 * gbs / copy, t32, t16,
                        t32 / t, t16 / t);
          }
        }
      }
    }
    return 0;
  });
}
