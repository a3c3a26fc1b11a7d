// bench-memory-plan: the memory planner (onebit/plan/memory_plan.h) against the measured peak
// of a training step, on CPU. For each random LLaMA size and each setting, a fresh child
// process (bench::kMallocEnv, so that RSS follows the live tensors) loads teacher and student
// as onebit-train does, runs a warm-up step (the AdamW state exists from then on), then one
// measured step: its RSS high-water mark above the process's RSS before any model was loaded,
// next to the plan's peak for the same config (margin excluded). No timing.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/llama_config.h"
#include "bench/memory.h"
#include "bench/python.h"
#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/train_models.h"
#include "onebit/distill/trainer.h"
#include "onebit/models/loader.h"
#include "onebit/plan/memory_plan.h"

using namespace onebit;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Size {
  const char* name;
  int64_t layers, hidden, ffn, vocab;
};
const std::vector<Size> kSizes = {
    {"T", 1, 64, 172, 256}, {"S", 4, 256, 688, 8000}, {"M", 8, 512, 1376, 16000}, {"L", 12, 768, 2048, 32000}};

struct Setting {
  const char* name;
  const char* dtype;      // model.dtype = train.precision
  bool checkpointing;
  const char* latent = "fp32";  // student.latent_dtype
  const char* state = "fp32";   // optim.state_dtype
};
const std::vector<Setting> kSettings = {{"fp32", "fp32", false},
                                        {"bf16", "bf16", false},
                                        {"bf16+ckpt", "bf16", true},
                                        {"lean", "bf16", true, "bf16", "int8"}};

struct Options {
  int threads = 2;
  int64_t batch = 2, seq = 256;
  std::string dir = "build/bench_memory_plan", sizes = "SML", settings;
  double tolerance = 0.10;
  // child
  bool child = false;
  std::string teacher, dtype = "fp32", latent = "fp32", state = "fp32";
  bool checkpointing = false;
};

config::TrainConfig run_config(const Options& o) {
  return bench::step_config({o.teacher, "cpu", o.dtype, o.latent, o.state, o.checkpointing, o.batch, o.seq});
}

int64_t rss_now() {
  malloc_trim(0);
  return bench::proc_status_bytes("VmRSS");
}

// --child: one JSON line {baseline, resident, peak, plan}.
json child(const Options& o) {
  torch::manual_seed(0);
  (void)torch::ones({8}).sum().item<float>();  // the runtime is up before the baseline
  const int64_t baseline = rss_now();
  const auto cfg = run_config(o);
  const auto plan = plan::plan_memory(cfg, plan::teacher_model_config(cfg), plan::run_options(cfg, 1, false));
  distill::TrainModels tm = distill::load_train_models(cfg, torch::kCPU);
  const auto ids = torch::randint(3, tm.teacher->config().vocab_size, {o.batch, o.seq}, torch::kLong);
  dist::NoSync no_sync;
  distill::Trainer trainer(cfg, tm.teacher, tm.student, [&] { return ids; }, no_sync, 1 << 30);
  tm = {};  // the trainer holds the models
  trainer.step();
  const int64_t resident = rss_now();
  bench::reset_peak_rss();
  trainer.step();
  const int64_t peak = bench::proc_status_bytes("VmHWM");
  json comps = json::object();
  for (const auto& c : plan.components) comps[c.key] = c.bytes;
  return {{"baseline", baseline},
          {"resident", resident - baseline},
          {"peak", peak - baseline},
          {"plan_peak", plan.peak_bytes},
          {"plan_components", comps},
          {"params", plan.params_total}};
}

double mib(int64_t b) { return double(b) / (1 << 20); }

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-memory-plan", [&] {
    CLI::App app{"The --dry-run memory plan against the measured peak of a training step (CPU, random LLaMA "
                 "teachers of three sizes; fp32, bf16, bf16 with gradient checkpointing, and lean: that with bf16 latent W "
                 "and int8 AdamW moments)"};
    app.option_defaults()->always_capture_default();
    Options o;
    app.add_option("--threads", o.threads, "CPU threads");
    app.add_option("--batch", o.batch, "data.batch_size");
    app.add_option("--seq", o.seq, "data.seq_len");
    app.add_option("--sizes", o.sizes, "which sizes to run: letters of S (4x256), M (8x512), L (12x768), and T (1x64: LibTorch's fixed CPU cost)");
    app.add_option("--settings", o.settings, "which settings to run, comma-separated (default all): fp32, bf16, bf16+ckpt, lean");
    app.add_option("--tolerance", o.tolerance, "largest |measured/planned - 1| reported as within");
    app.add_option("--dir", o.dir, "where the random teachers are written");
    app.add_flag("--child", o.child, "internal: measure one setting (one JSON line)")->group("");
    app.add_option("--teacher", o.teacher, "internal: teacher folder")->group("");
    app.add_option("--dtype", o.dtype, "internal: model.dtype and train.precision")->group("");
    app.add_flag("--checkpointing", o.checkpointing, "internal: gradient checkpointing")->group("");
    app.add_option("--latent", o.latent, "internal: student.latent_dtype")->group("");
    app.add_option("--state", o.state, "internal: optim.state_dtype")->group("");
    CLI11_PARSE(app, argc, argv);
    at::set_num_threads(o.threads);
    if (o.child) {
      std::printf("%s\n", child(o).dump().c_str());
      return 0;
    }
    const std::string self = fs::canonical("/proc/self/exe").string();
    std::printf("batch %lld x %lld tokens, %d threads; MiB above the process before loading\n",
                static_cast<long long>(o.batch), static_cast<long long>(o.seq), o.threads);
    std::printf("%-4s %9s %-10s %10s %10s %8s  %s\n", "size", "params", "setting", "planned", "measured", "ratio",
                "within");
    int off = 0;
    for (const auto& s : kSizes) {
      if (o.sizes.find(s.name) == std::string::npos) continue;
      const std::string teacher = (fs::path(o.dir) / s.name).string();
      if (!fs::exists(fs::path(teacher) / "model.safetensors")) {
        torch::manual_seed(0);
        const auto cfg = bench::llama_config(s.layers, s.hidden, s.ffn, s.vocab);
        models::save_pretrained(models::build_model(models::parse_model_config(cfg.dump())), teacher);
      }
      for (const auto& st : kSettings) {
        if (!o.settings.empty() && ("," + o.settings + ",").find(std::string(",") + st.name + ",") == std::string::npos)
          continue;
        const std::string cmd = std::string(bench::kMallocEnv) + self + " --child --teacher " + teacher +
                                " --dtype " + st.dtype + (st.checkpointing ? " --checkpointing" : "") +
                                " --latent " + st.latent + " --state " + st.state +
                                " --batch " + std::to_string(o.batch) + " --seq " + std::to_string(o.seq) +
                                " --threads " + std::to_string(o.threads);
        const json r = json::parse(bench::run_capture(cmd));
        const double planned = double(r["plan_peak"].get<int64_t>()), measured = double(r["peak"].get<int64_t>());
        const double ratio = measured / planned;
        const bool within = std::abs(ratio - 1) <= o.tolerance;
        off += !within;
        std::printf("%-4s %8.1fM %-10s %10.1f %10.1f %8.3f  %s\n", s.name, r["params"].get<int64_t>() / 1e6, st.name,
                    mib(int64_t(planned)), mib(int64_t(measured)), ratio, within ? "yes" : "NO");
        std::fflush(stdout);
      }
    }
    return off == 0 ? 0 : 1;
  });
}
