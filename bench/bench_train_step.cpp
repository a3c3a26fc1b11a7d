// bench-train-step: a OneBit distillation of a random-weight LLaMA-shaped teacher, loaded and
// trained as onebit-train does (load_train_models, Trainer), for a few steps: peak memory of the
// device, tokens/s, MFU (8·N FLOPs per token: teacher forward 2N, student forward and backward
// 6N, against --peak-tflops) and the --dry-run plan of the same config, as one JSON object.
// scripts/gpu-check.sh runs it LLaMA-7B-shaped on one GPU; on CPU it runs small shapes.
// --nccl: the gradients go through C10dSync (NCCL on a GPU, gloo on CPU) at world size 1.
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/llama_config.h"
#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/train_models.h"
#include "onebit/distill/trainer.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/plan/device_memory.h"
#include "onebit/plan/memory_plan.h"

using namespace onebit;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Options {
  int64_t layers = 2, hidden = 256, ffn = 688, vocab = 8000, heads = 0, batch = 2, seq = 128;
  int steps = 3, warmup = 1, threads = 0;
  std::string device = "cpu", dtype = "bf16", dir = "build/bench_train_step", json_out;
  std::string latent_dtype = "fp32", state_dtype = "fp32";  // student.latent_dtype, optim.state_dtype
  bool checkpointing = true, nccl = false;
  double peak_tflops = 0;  // the device's dense bf16 peak; 0: no MFU
};

void sync(torch::Device d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// The random teacher (HF init on the device, saved in the teacher dtype) unless dir holds it.
void make_teacher(const Options& o, torch::Device device) {
  const json cfg = bench::llama_config(o.layers, o.hidden, o.ffn, o.vocab, o.heads, 0, o.seq);
  const fs::path marker = fs::path(o.dir) / "bench_config.json";
  const json want = {{"config", cfg}, {"dtype", o.dtype}};
  if (fs::exists(marker) && json::parse(io::read_file(marker.string())) == want) return;
  torch::manual_seed(0);
  const auto dtype = o.dtype == "fp32" ? torch::kFloat32 : torch::kBFloat16;
  models::save_pretrained(models::build_model(models::parse_model_config(cfg.dump()), {device, dtype}), o.dir);
  io::write_file_atomic(marker.string(), want.dump());
}

json run(const Options& o) {
  const torch::Device device(o.device);
  const auto t_setup = std::chrono::steady_clock::now();
  make_teacher(o, device);
  config::TrainConfig cfg = bench::step_config(
      {o.dir, o.device, o.dtype, o.latent_dtype, o.state_dtype, o.checkpointing, o.batch, o.seq});
  const auto plan = plan::plan_memory(cfg, plan::teacher_model_config(cfg),
                                      plan::run_options(cfg, 1, device.is_cuda()));

  std::unique_ptr<dist::GradSync> sync_impl;
  std::string sync_name = "none";
  if (o.nccl) {
    dist::LaunchInfo one;  // rank 0 of 1 on 127.0.0.1
    one.master_port = 29500 + static_cast<int>(::getpid() % 1000);
    auto c = std::make_unique<dist::C10dSync>(one, device);
    sync_name = c->backend();
    sync_impl = std::move(c);
  } else {
    sync_impl = std::make_unique<dist::NoSync>();
  }
  auto tm = distill::load_train_models(cfg, device);
  const auto ids = torch::randint(3, o.vocab, {o.batch, o.seq}, torch::TensorOptions().dtype(torch::kLong).device(device));
  distill::Trainer trainer(cfg, tm.teacher, tm.student, [&] { return ids; }, *sync_impl, 1 << 30);
  tm = {};
  sync(device);
  const double setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_setup).count();

  double first_loss = 0, last_loss = 0;
  for (int i = 0; i < o.warmup; ++i) first_loss = trainer.step().loss;
  sync(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < o.steps; ++i) last_loss = trainer.step().loss;
  sync(device);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double tokens_per_s = double(o.batch * o.seq * o.steps) / secs;
  const double flops_per_s = 8.0 * double(plan.params_total) * tokens_per_s;
  json out = {{"device", o.device},
              {"params", plan.params_total},
              {"shape", {{"layers", o.layers}, {"hidden", o.hidden}, {"ffn", o.ffn}, {"vocab", o.vocab}}},
              {"batch", o.batch},
              {"seq", o.seq},
              {"dtype", o.dtype},
              {"checkpointing", o.checkpointing},
              {"latent_dtype", o.latent_dtype},
              {"state_dtype", o.state_dtype},
              {"sync", sync_name},
              {"steps", o.steps},
              {"setup_s", setup_s},
              {"step_s", secs / o.steps},
              {"tokens_per_s", tokens_per_s},
              {"tflops", flops_per_s / 1e12},
              {"loss_first", first_loss},
              {"loss_last", last_loss},
              {"peak_bytes", plan::device_peak_bytes(device)},
              {"planned_peak_bytes", plan.peak_bytes},
              {"planned_total_bytes", plan.total_bytes}};
  if (o.peak_tflops > 0) out["mfu"] = flops_per_s / (o.peak_tflops * 1e12);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-train-step", [&] {
    CLI::App app{"A few OneBit distillation steps of a random LLaMA-shaped teacher as onebit-train runs them: "
                 "peak device memory, tokens/s, MFU and the planned peak (one JSON object)"};
    app.option_defaults()->always_capture_default();
    Options o;
    app.add_option("--layers", o.layers, "decoder layers");
    app.add_option("--hidden", o.hidden, "hidden size");
    app.add_option("--ffn", o.ffn, "intermediate size");
    app.add_option("--vocab", o.vocab, "vocabulary size");
    app.add_option("--heads", o.heads, "attention heads (0: hidden/64; LLaMA-7B: 32)");
    app.add_option("--batch", o.batch, "data.batch_size");
    app.add_option("--seq", o.seq, "data.seq_len");
    app.add_option("--steps", o.steps, "timed steps");
    app.add_option("--warmup", o.warmup, "untimed steps first");
    app.add_option("--device", o.device, "cpu or cuda[:N]");
    app.add_option("--dtype", o.dtype, "teacher dtype and train.precision")->check(CLI::IsMember({"fp32", "bf16"}));
    app.add_option("--checkpointing", o.checkpointing, "model.gradient_checkpointing");
    app.add_option("--latent-dtype", o.latent_dtype, "student.latent_dtype (lean: bf16)")
        ->check(CLI::IsMember({"fp32", "bf16"}));
    app.add_option("--state-dtype", o.state_dtype, "optim.state_dtype (lean: bf16 or int8)")
        ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
    app.add_flag("--nccl", o.nccl, "gradients through C10dSync at world size 1 (NCCL on CUDA, gloo on CPU)");
    app.add_option("--peak-tflops", o.peak_tflops, "the device's dense bf16 peak, for MFU (H100/H200 SXM: 989)");
    app.add_option("--threads", o.threads, "CPU threads (0: LibTorch's default)");
    app.add_option("--dir", o.dir, "where the random teacher is written (reused when its shape matches)");
    app.add_option("--json", o.json_out, "also write the JSON object here");
    CLI11_PARSE(app, argc, argv);
    OB_CHECK(o.steps >= 1 && o.warmup >= 0, "--steps must be >= 1 and --warmup >= 0");
    if (o.threads > 0) at::set_num_threads(o.threads);
    const json out = run(o);
    std::printf("%s\n", out.dump(2).c_str());
    if (!o.json_out.empty()) io::write_file_atomic(o.json_out, out.dump(2) + "\n");
    return 0;
  });
}
