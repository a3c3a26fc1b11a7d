// bench-packed-gemv: packed 1-bit GEMV/GEMM against a copy-bandwidth baseline and LibTorch
// dense fp32/bf16 matmuls, measured in the same run (docs/BENCHMARKS.md).
//   bench-packed-gemv --threads 2                 (CPU: every available kernel, rows 1)
//   bench-packed-gemv --device cuda --json        (GPU: every CUDA kernel vs cuBLAS bf16, JSON lines)
// Weights are cycled over enough copies of each layer to exceed the caches (--cold-mb), as a
// decoder does when it walks its layers, so a GEMV reads its weights from memory.
// On a GPU each CUDA kernel (lanes, mma, unpacked: packed::CudaKernel) runs the same copies on the same
// bf16 input; the calls over all copies are captured in one CUDA graph and timed by CUDA events
// around its replays (the GPU time a decoder that replays graphs sees, launch gaps included and
// host launch costs excluded: a 4096x4096 layer is 2 MB, under a microsecond of memory time, far
// below the host's cost of a launch); "eager_us" is the same calls launched one by one.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#ifdef ONEBIT_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include "kernels/cuda/launch.h"
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "bench/timing.h"
#include "onebit/core/error.h"
#include "onebit/export/packed_linear.h"
#include "onebit/nn/onebit_linear.h"

using namespace onebit;
using bench::median_ms;
using packed::CpuKernel;
using packed::CudaKernel;

namespace {
void sync(const torch::Device& dev) {
  if (dev.is_cuda()) torch::cuda::synchronize(dev.index() < 0 ? 0 : dev.index());
}

#ifdef ONEBIT_WITH_CUDA
// Median GPU time in ms of `step` over `iters` timed runs, measured by CUDA events on a side
// stream: `step` captured once as a CUDA graph and replayed (graphed = true), or, when the
// capture fails, launched eagerly (graphed = false). eager_ms: the same events around eager
// launches of `step`.
double cuda_step_ms(const torch::Device& dev, const std::function<void()>& step, int iters, bool& graphed,
                    double& eager_ms) {
  const c10::cuda::CUDAGuard device_guard(dev);
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, dev.index());
  const c10::cuda::CUDAStreamGuard stream_guard(stream);
  c10::cuda::CUDAEvent begin(cudaEventDefault), end(cudaEventDefault);
  auto median_of = [&](const std::function<void()>& run) {
    std::vector<double> ms;
    for (int i = 0; i < iters; ++i) {
      begin.record(stream);
      run();
      end.record(stream);
      end.synchronize();
      ms.push_back(begin.elapsed_time(end));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  step();  // warm-up: lazy initialisation, allocations
  stream.synchronize();
  eager_ms = median_of(step);
  graphed = false;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  try {
    graph = std::make_unique<at::cuda::CUDAGraph>();
    graph->capture_begin();
    step();
    graph->capture_end();
    graph->replay();
    stream.synchronize();
    graphed = true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-packed-gemv: CUDA graph capture failed, timing eager launches: %s\n", e.what());
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t dropped = nullptr;
      cudaStreamEndCapture(stream.stream(), &dropped);
      if (dropped) cudaGraphDestroy(dropped);
    }
    (void)cudaGetLastError();
    return eager_ms;
  }
  return median_of([&] { graph->replay(); });
}
#endif

// STREAM-style copy bandwidth (bytes read + written per second) of a `mb`-MB buffer.
double copy_gbs(const torch::Device& dev, int64_t mb, int iters) {
  const int64_t n = mb * (1 << 20) / 4;
  auto a = torch::rand({n}, torch::TensorOptions().device(dev)), b = torch::empty_like(a);
  double ms = 0;
#ifdef ONEBIT_WITH_CUDA
  if (dev.is_cuda()) {  // CUDA events, as the kernels are timed (no host sync in the time)
    bool graphed = false;
    double eager_ms = 0;
    ms = cuda_step_ms(dev, [&] { b.copy_(a); }, iters, graphed, eager_ms);
  }
#endif
  if (!dev.is_cuda()) ms = median_ms([&] { b.copy_(a); sync(dev); }, 2, iters);
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
    app.add_option("--kernels", kernel_names,
                   "kernels to time (default: every available one), e.g. --kernels avx2 lut; on a GPU lanes, mma, unpacked");
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
    auto named = [&](const char* name) {
      return kernel_names.empty() || std::find(kernel_names.begin(), kernel_names.end(), name) != kernel_names.end();
    };
    std::vector<CpuKernel> kernels;
    std::vector<CudaKernel> cuda_kernels;
    if (dev.is_cpu()) {
      for (CpuKernel k : {CpuKernel::Lut, CpuKernel::Generic, CpuKernel::Avx2, CpuKernel::Avx512,
                          CpuKernel::Avx512Vnni, CpuKernel::Tiled})
        if (packed::cpu_kernel_available(k) && named(packed::to_string(k))) kernels.push_back(k);
      OB_CHECK(!kernels.empty(), "--kernels: none of the named kernels is available (lut, generic, avx2, avx512, avx512vnni, tiled)");
    } else {
#ifndef ONEBIT_WITH_CUDA
      fail("--device ", device, ": this build has no CUDA kernels (ONEBIT_WITH_CUDA)");
#endif
      for (CudaKernel k : {CudaKernel::Lanes, CudaKernel::Mma, CudaKernel::Unpacked})
        if (named(packed::to_string(k))) cuda_kernels.push_back(k);
      OB_CHECK(!cuda_kernels.empty(), "--kernels: none of the named kernels is a CUDA kernel (lanes, mma, unpacked)");
    }
    if (!json_out) {
      std::printf("device=%s threads=%d copy bandwidth %.1f GB/s (read+write, %lld MB buffer)\n", device.c_str(),
                  torch::get_num_threads(), copy, (long long)copy_mb);
      std::printf("%-12s %4s %-10s %10s %9s %7s %10s %10s %8s %8s\n", "shape", "rows", "kernel", "packed us", "GB/s",
                  "%copy", "fp32 us", "bf16 us", "x fp32", "x bf16");
    }
    for (const auto& shape : shapes) {
      const int64_t in = shape.first, out = shape.second;  // not a structured binding: lambdas below use them
      torch::manual_seed(0);
      auto layer = nn::OneBitLinear(nn::OneBitLinearOptions(in, out).post_layernorm(post_ln));
      const int64_t packed_bytes = out * ((in + 7) / 8);
      const int64_t copies = std::max<int64_t>(1, cold_mb * (1 << 20) / packed_bytes);
      std::vector<packed::PackedOneBitLinear> layers;
      for (int64_t c = 0; c < copies; ++c) layers.emplace_back(packed::PackedOneBitLinearImpl::from(*layer));
      for (auto& l : layers) l->to(dev);
      // Dense baselines: the ±1 matrix materialised, one LibTorch matmul (64+ MB: past a CPU's
      // caches). On a GPU, copies cycled past its L2 (a 4096² bf16 matrix is 32 MB, an H200's L2
      // 60 MB) and timed as the packed kernels are (CUDA events, a graph), not with a host sync
      // per call.
      const auto s = torch::where(layer->weight >= 0, 1.0f, -1.0f).to(dev);
      auto dense_copies = [&](torch::ScalarType dt) {
        std::vector<torch::Tensor> w{s.to(dt)};
        const int64_t bytes = s.numel() * int64_t(torch::elementSize(dt));
        if (dev.is_cuda())
          for (int64_t c = 1; c < cold_mb * (1 << 20) / bytes; ++c) w.push_back(w[0].clone());
        return w;
      };
      const auto s32 = dense_copies(torch::kFloat32), s16 = dense_copies(torch::kBFloat16);
      for (int64_t rows : rows_list) {
        const auto x = torch::randn({rows, in}, torch::TensorOptions().device(dev));
        const auto x16 = x.to(torch::kBFloat16);
        auto dense_us = [&](const torch::Tensor& xd, const std::vector<torch::Tensor>& ws) {
#ifdef ONEBIT_WITH_CUDA
          if (dev.is_cuda()) {
            bool graphed = false;
            double eager_ms = 0;
            return cuda_step_ms(dev, [&] { for (const auto& w : ws) torch::matmul(xd, w.t()); }, iters, graphed,
                                eager_ms) * 1e3 / double(ws.size());
          }
#endif
          return median_ms([&] { torch::matmul(xd, ws[0].t()); sync(dev); }, 2, iters) * 1e3;
        };
        const double t32 = dense_us(x, s32);
        const double t16 = dense_us(x16, s16);
        // One line per kernel: t = µs per layer call, eager = the same launched eagerly (GPU).
        auto report = [&](const char* kernel, double t, const char* timing, double eager) {
          const double gbs = double(packed_bytes) / (t * 1e3);
          if (json_out) {
            nlohmann::json j{{"bench", "packed_gemv"}, {"device", device}, {"in", in}, {"out", out},
                             {"rows", rows}, {"kernel", kernel}, {"packed_us", t},
                             {"weight_gbs", gbs}, {"copy_gbs", copy}, {"pct_copy", 100 * gbs / copy},
                             {"dense_fp32_us", t32}, {"dense_bf16_us", t16},
                             {"speedup_fp32", t32 / t}, {"speedup_bf16", t16 / t},
                             {"threads", torch::get_num_threads()}};
            if (dev.is_cuda()) j.update({{"timing", timing}, {"eager_us", eager}});
#ifdef ONEBIT_WITH_CUDA
            // (each call may start before the previous one ends, as in a decode step)
            if (dev.is_cuda()) j["programmatic_launch"] = kernels::cuda::programmatic_launch();
#endif
            std::printf("%s\n", j.dump().c_str());
          } else {
            std::printf("%5lldx%-6lld %4lld %-10s %10.1f %9.2f %6.1f%% %10.1f %10.1f %8.2f %8.2f\n", (long long)in,
                        (long long)out, (long long)rows, kernel, t, gbs, 100 * gbs / copy, t32, t16, t32 / t, t16 / t);
          }
        };
        for (CpuKernel k : kernels) {
          for (auto& l : layers) l->use_layout(packed::layout_for(k));  // the kernel's layout, before timing
          const double t = median_ms([&] {
                             for (auto& l : layers) l->forward(x, k);
                             sync(dev);
                           }, 1, iters) * 1e3 / double(copies);
          report(packed::to_string(k), t, "", 0);
        }
#ifdef ONEBIT_WITH_CUDA
        for (CudaKernel k : cuda_kernels) {
          bool graphed = false;
          double eager_ms = 0;
          const double ms = cuda_step_ms(dev, [&] { for (auto& l : layers) l->forward(x16, k); }, iters, graphed,
                                         eager_ms);
          report(packed::to_string(k), ms * 1e3 / double(copies), graphed ? "cuda_graph" : "eager",
                 eager_ms * 1e3 / double(copies));
        }
#endif
      }
    }
    return 0;
  });
}
