// bench-distill-step: one OneBit distillation step (teacher forward, student forward + backward,
// clip, AdamW) of onebit's Trainer vs a PyTorch + transformers loop written for the benchmark
// (bench/py/distill_step.py): same saved teacher and student weights, same token batch, dtype
// and threads. The Python process runs beside this one and the two sides take turns step by
// step, so load from other jobs hits both alike. Prints the median step time (wall and process
// CPU), a per-phase breakdown, the step's dense matmuls alone (a floor for any implementation),
// the peak memory of one step and per phase, and the onebit/torch ratios.
//   bench-distill-step                      # 8x512 LLaMA, ffn 1376, vocab 32000, batch 4 x 256, 2 threads
//   bench-distill-step --vocab 8192 --iters 9
#include <ATen/CPUGeneratorImpl.h>
#include <malloc.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#ifdef ONEBIT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "bench/llama_config.h"
#include "bench/memory.h"
#include "bench/python.h"
#include "bench/timing.h"
#include "onebit/config/train_config.h"
#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/kd_loss.h"
#include "onebit/distill/trainer.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"

using namespace onebit;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Options {
  int threads = 2, warmup = 2, iters = 5;
  int64_t batch = 4, seq = 256, layers = 8, hidden = 512, ffn = 1376, vocab = 32000, heads = 0, kv_heads = 0;
  std::string dtype = "fp32", device = "cpu", python = bench::default_python(), dir = "build/bench_distill_step";
  double lr = 4e-4, tol = 1e-3;
  std::string profile;        // chrome-trace file of one onebit step (LibTorch's legacy profiler)
  bool memory_child = false;  // internal: measure memory only, print one JSON line
};

const std::vector<std::string> kPhases{"teacher_fwd", "student_fwd", "kd_loss", "backward", "clip", "adamw"};

// The memory children run with large blocks served by mmap from process start (and returned on
// free), so that RSS follows the live tensors: bench::kMallocEnv. The timed processes keep glibc's
// default (adaptive) settings.
using bench::kMallocEnv;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// The random teacher, its OneBit student (to_onebit defaults: NMF SVID, latent sign(W)·0.01)
// and the token batch, saved under dir for both sides.
void make_inputs(const Options& o) {
  const json cfg = bench::llama_config(o.layers, o.hidden, o.ffn, o.vocab, o.heads, o.kv_heads, o.seq);
  torch::manual_seed(0);
  auto model = models::build_model(models::parse_model_config(cfg.dump()));
  models::save_pretrained(model, (fs::path(o.dir) / "teacher").string());
  models::to_onebit(*model, models::StudentOptions{});  // the same object becomes the student
  models::save_pretrained(model, (fs::path(o.dir) / "student").string());

  auto gen = torch::make_generator<at::CPUGeneratorImpl>(0);
  const auto ids = torch::randint(3, o.vocab, {o.batch, o.seq}, gen, torch::kLong).contiguous();
  const auto bin_path = fs::path(o.dir) / "ids.bin";
  std::ofstream bin(bin_path, std::ios::binary);
  bin.write(static_cast<const char*>(ids.data_ptr()), static_cast<std::streamsize>(ids.nbytes()));
  OB_CHECK(bin.good(), "cannot write ", bin_path.string());
  std::ofstream(fs::path(o.dir) / "ids.json") << json{{"shape", {o.batch, o.seq}}}.dump();
}

// ---- onebit's side: the Trainer as onebit-train runs it (fp32 master weights, no checkpointing) ----
struct OnebitSide {
  OnebitSide(const Options& o, torch::Device dev) : device(dev) {
    teacher = models::load_pretrained((fs::path(o.dir) / "teacher").string(),
                                      {device, o.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32});
    student = models::load_pretrained((fs::path(o.dir) / "student").string(), {device, torch::kFloat32});
    ids = torch::from_file((fs::path(o.dir) / "ids.bin").string(), false, o.batch * o.seq, torch::kLong)
              .view({o.batch, o.seq})
              .to(device);
    cfg.model.teacher = (fs::path(o.dir) / "teacher").string();  // defaults otherwise: kd_loss_scale 0.01,
    cfg.model.dtype = o.dtype;                                    // alpha 1, AdamW (0.9, 0.98), eps 1e-8,
    cfg.model.gradient_checkpointing = false;                     // weight decay 0.01, clip 1, chunk 1024
    cfg.train.precision = o.dtype;
    cfg.optim.lr = o.lr;
    cfg.optim.schedule = "constant";
    cfg.optim.warmup_steps = 0;
    cfg.validate();
    trainer = std::make_unique<distill::Trainer>(cfg, teacher, student, [this] { return ids; }, no_sync,
                                                 /*total_steps=*/1 << 30);
    for (const auto& [name, t] : trainer->trainable()) params.push_back(t);
    kd = cfg.kd;
  }

  distill::StepStats step() {
    const auto st = trainer->step();
    sync(device);
    return st;
  }

  // Trainer::step's phases (same calls and scopes, fp32 or bf16; not fp16's loss scaling), with
  // mark() after each of kPhases.
  void replay(const std::function<void()>& mark) {
    {
      distill::KdLossParts parts;
      {
        std::optional<AutocastGuard> autocast;  // forwards under autocast; kd_loss turns it off
        if (cfg.train.precision == "bf16") autocast.emplace(device.type(), torch::kBFloat16);
        models::ForwardArgs args;
        args.output_hidden_states = true;
        args.compute_logits = false;
        models::ForwardOutput t;
        {
          torch::NoGradGuard no_grad;
          t = teacher->forward(ids, args);
        }
        mark();
        const auto s = student->forward(ids, args);
        mark();
        parts = distill::kd_loss(t, teacher->lm_head_weight(), s, student->lm_head_weight(), ids, kd);
        mark();
      }
      auto& ps = trainer->param_sync();
      ps.begin_backward(true);
      parts.total.backward();
      ps.finish_backward();
      mark();
    }
    auto& ps = trainer->param_sync();
    ps.clip_grad_norm(cfg.optim.grad_clip);
    mark();
    ps.step(cfg.optim.lr);
    ps.zero_grad();
    mark();
  }

  torch::Device device;
  models::CausalLM teacher, student;
  torch::Tensor ids;
  config::TrainConfig cfg;
  dist::NoSync no_sync;
  std::unique_ptr<distill::Trainer> trainer;
  std::vector<torch::Tensor> params;
  distill::KdLossOptions kd;
};

// Memory in use: CPU RSS (bench/memory.h) or the CUDA caching allocator's allocated bytes.
struct MemProbe {
  explicit MemProbe(torch::Device d) : device(d) {}
  int64_t current() {
    sync(device);
    if (!device.is_cuda()) {
      malloc_trim(0);
      return bench::proc_status_bytes("VmRSS");
    }
#ifdef ONEBIT_WITH_CUDA  // UNTESTED: no GPU was available when this was written.
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index()).allocated_bytes[kAggregate].current;
#else
    fail("--device cuda: this build has no CUDA support (ONEBIT_WITH_CUDA)");
#endif
  }
  int64_t peak() {  // since the last reset()
    sync(device);
    if (!device.is_cuda()) return bench::proc_status_bytes("VmHWM");
#ifdef ONEBIT_WITH_CUDA
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index()).allocated_bytes[kAggregate].peak;
#else
    fail("--device cuda: this build has no CUDA support (ONEBIT_WITH_CUDA)");
#endif
  }
  void reset() {
    if (!device.is_cuda()) return bench::reset_peak_rss();
#ifdef ONEBIT_WITH_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(index());
#endif
  }
#ifdef ONEBIT_WITH_CUDA
  static constexpr size_t kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  c10::DeviceIndex index() const { return device.has_index() ? device.index() : c10::DeviceIndex(0); }
#endif
  torch::Device device;
};

// --memory-child: warm-up steps, then the peak of one Trainer::step and, per phase of a
// replayed step, the peak inside it and what is live at its end, all above the memory in use
// before the step. One JSON line.
json measure_memory(const Options& o, torch::Device device) {
  OnebitSide ob(o, device);
  for (int i = 0; i < o.warmup; ++i) ob.step();
  MemProbe mem(device);
  int64_t before = mem.current();
  mem.reset();
  ob.step();
  json out = {{"peak_step_bytes", mem.peak() - before}, {"resident_bytes", before}};
  before = mem.current();
  mem.reset();
  json phases = json::object();
  size_t k = 0;
  ob.replay([&] {
    phases[kPhases[k++]] = {mem.peak() - before, mem.current() - before};
    mem.reset();
  });
  out["phases"] = phases;
  return out;
}

std::string cli_args(const Options& o) {
  auto s = [](auto v) { return std::to_string(v); };
  return " --threads " + s(o.threads) + " --warmup " + s(o.warmup) + " --batch " + s(o.batch) + " --seq " +
         s(o.seq) + " --layers " + s(o.layers) + " --hidden " + s(o.hidden) + " --heads " + s(o.heads) +
         " --kv-heads " + s(o.kv_heads) + " --ffn " + s(o.ffn) + " --vocab " + s(o.vocab) + " --dtype " + o.dtype +
         " --device " + o.device + " --lr " + s(o.lr) + " --dir " + o.dir;
}

std::string python_cmd(const Options& o) {
  return o.python + " " + bench::py_script("distill_step.py") + " --dir " + o.dir + " --threads " +
         std::to_string(o.threads) + " --dtype " + o.dtype + " --device " + o.device + " --lr " + std::to_string(o.lr);
}

// The dense matmuls of one step alone, same shapes and layouts (attention excluded): the teacher
// and the student forward of every decoder linear, the student's dW and dx (no dx into layer 0's
// q/k/v, whose input needs no gradient), the teacher and student lm_head and the KD's dL/dh.
// Both sides must do all of them in fp32, so no implementation of the step can be faster.
std::function<void()> step_matmuls(const Options& o, const torch::Device& device) {
  const int64_t N = o.batch * o.seq, H = o.hidden, F = o.ffn;
  const int64_t heads = o.heads > 0 ? o.heads : H / 64, kv = (o.kv_heads > 0 ? o.kv_heads : heads) * (H / heads);
  const std::vector<std::pair<int64_t, int64_t>> linears{{H, H}, {H, kv}, {H, kv}, {H, H}, {H, F}, {H, F}, {F, H}};
  auto opt = torch::TensorOptions().device(device);
  std::vector<std::array<torch::Tensor, 3>> ops;  // x [N,in], W [out,in], du [N,out]
  for (const auto& [in, out] : linears)
    ops.push_back({torch::randn({N, in}, opt), torch::randn({out, in}, opt), torch::randn({N, out}, opt)});
  const auto h = torch::randn({N, H}, opt), lm = torch::randn({o.vocab, H}, opt);
  const auto dlogits = torch::randn({N, o.vocab}, opt);
  return [=] {
    for (int64_t l = 0; l < o.layers; ++l) {
      for (size_t k = 0; k < ops.size(); ++k) {
        const auto& [x, w, du] = ops[k];
        torch::mm(x, w.t());                    // teacher
        torch::mm(x, w.t());                    // student
        torch::mm(du.t(), x);                   // dW
        if (l > 0 || k >= 3) torch::mm(du, w);  // dx
      }
    }
    torch::mm(h, lm.t());
    torch::mm(h, lm.t());
    torch::mm(dlogits, lm);
    sync(device);
  };
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-distill-step", [&] {
    CLI::App app{"One OneBit distillation step: onebit's Trainer vs PyTorch + transformers (same model, batch, dtype, "
                 "threads): median step time and peak step memory"};
    app.option_defaults()->always_capture_default();
    Options o;
    app.add_option("--threads", o.threads, "CPU threads for both sides");
    app.add_option("--batch", o.batch, "sequences per step");
    app.add_option("--seq", o.seq, "tokens per sequence");
    app.add_option("--layers", o.layers, "decoder layers");
    app.add_option("--hidden", o.hidden, "hidden size");
    app.add_option("--heads", o.heads, "attention heads (0: hidden/64)");
    app.add_option("--kv-heads", o.kv_heads, "key/value heads (0: = heads)");
    app.add_option("--ffn", o.ffn, "intermediate size");
    app.add_option("--vocab", o.vocab, "vocabulary size (the logit KL works on [batch*seq, vocab])");
    app.add_option("--warmup", o.warmup, "untimed steps per side first (the first gives the compared losses)");
    app.add_option("--iters", o.iters, "timed steps per side, taking turns (medians reported)");
    app.add_option("--dtype", o.dtype,
                   "fp32, or bf16: teacher weights in bf16 on both sides; the student runs with "
                   "train.precision=bf16 in onebit's Trainer and under bf16 autocast in PyTorch")
        ->check(CLI::IsMember({"fp32", "bf16"}));
    app.add_option("--device", o.device, "cpu, or cuda[:N] (untested)");
    app.add_option("--lr", o.lr, "AdamW learning rate (constant schedule)");
    app.add_option("--tol", o.tol, "largest relative difference of the first-step losses");
    app.add_option("--python", o.python, "Python with torch + transformers");
    app.add_option("--dir", o.dir, "where the models, the batch and the FIFO go");
    app.add_option("--profile", o.profile, "also write a chrome trace (per-op times) of one onebit step here");
    app.add_flag("--memory-child", o.memory_child, "internal: measure onebit's memory only (one JSON line)")
        ->group("");
    CLI11_PARSE(app, argc, argv);
    OB_CHECK(o.warmup >= 1 && o.iters >= 1, "--warmup and --iters must be >= 1");

    at::set_num_threads(o.threads);
    const torch::Device device(o.device);
    if (o.memory_child) {
      std::printf("%s\n", measure_memory(o, device).dump().c_str());
      return 0;
    }
    make_inputs(o);

    // ---- the Python side (loads the same folders, then waits for commands) and onebit's ----
    const std::string fifo = (fs::path(o.dir) / "distill_step.fifo").string();
    auto py = std::make_unique<bench::PyServer>(python_cmd(o), fifo);
    const json ready = py->read();
    OnebitSide ob(o, device);
    int64_t trainable = 0, n_params = 0;
    for (const auto& t : ob.params) trainable += t.numel();
    for (const auto& p : ob.teacher->parameters()) n_params += p.numel();
    OB_CHECK(trainable == ready["trainable"].get<int64_t>(), "trainable parameters differ: onebit ", trainable,
             ", torch ", ready["trainable"].get<int64_t>());
    std::printf("model: random LLaMA %lldx%lld, ffn %lld, vocab %lld: %.1fM parameters, %.1fM trainable (W, g, h)\n"
                "batch %lld x %lld tokens, %s, %s, %d threads; %d warm-up + %d timed steps per side, taking turns\n",
                (long long)o.layers, (long long)o.hidden, (long long)o.ffn, (long long)o.vocab, n_params / 1e6,
                trainable / 1e6, (long long)o.batch, (long long)o.seq, o.dtype.c_str(), o.device.c_str(), o.threads,
                o.warmup, o.iters);
    std::fflush(stdout);

    // ---- first step (compared losses) and warm-up ----
    const distill::StepStats first = ob.step();
    const json py_first = py->call("step");
    for (int i = 1; i < o.warmup; ++i) ob.step(), py->call("step");

    // ---- timed steps, taking turns (the order alternates) ----
    std::vector<double> ob_wall, ob_cpu, py_wall, py_cpu, wall_ratio, cpu_ratio;
    for (int i = 0; i < o.iters; ++i) {
      json p;
      if (i % 2 == 0) p = py->call("step");
      const auto t = bench::median_times([&] { ob.step(); }, 0, 1);
      if (i % 2 == 1) p = py->call("step");
      ob_wall.push_back(t.wall_ms), ob_cpu.push_back(t.cpu_ms);
      py_wall.push_back(p["wall_ms"]), py_cpu.push_back(p["cpu_ms"]);
      wall_ratio.push_back(ob_wall.back() / py_wall.back());
      cpu_ratio.push_back(ob_cpu.back() / py_cpu.back());
    }

    // ---- breakdown: Trainer::step's phases replayed with clocks between them ----
    std::map<std::string, std::vector<double>> ob_ph_wall, ob_ph_cpu, py_ph_wall, py_ph_cpu;
    for (int i = 0; i < o.iters; ++i) {
      using clock = std::chrono::steady_clock;
      std::vector<std::pair<clock::time_point, double>> marks{{clock::now(), bench::process_cpu_ms()}};
      ob.replay([&] {
        sync(device);
        marks.emplace_back(clock::now(), bench::process_cpu_ms());
      });
      const json p = py->call("phases")["phases"];
      for (size_t k = 0; k < kPhases.size(); ++k) {
        const auto& n = kPhases[k];
        ob_ph_wall[n].push_back(std::chrono::duration<double, std::milli>(marks[k + 1].first - marks[k].first).count());
        ob_ph_cpu[n].push_back(marks[k + 1].second - marks[k].second);
        py_ph_wall[n].push_back(p[n][0]);
        py_ph_cpu[n].push_back(p[n][1]);
      }
    }
    if (!o.profile.empty()) {
      torch::autograd::profiler::RecordProfile guard(o.profile);
      ob.step();
    }

    // ---- the floor: the step's dense matmuls alone, taking turns with Python steps ----
    std::vector<double> mm_wall, mm_ratio;
    if (o.dtype == "fp32") {
      const auto matmuls = step_matmuls(o, device);
      for (int i = 0; i < o.iters; ++i) {
        const json p = py->call("step");
        mm_wall.push_back(bench::median_times(matmuls, i == 0 ? 1 : 0, 1).wall_ms);
        mm_ratio.push_back(mm_wall.back() / p["wall_ms"].get<double>());
      }
    }
    py.reset();  // the timed Python process exits

    // ---- memory: fresh processes, one at a time, with mmap-backed large blocks ----
    const std::string self = fs::read_symlink("/proc/self/exe").string();
    const std::string ob_out = bench::run_capture(kMallocEnv + self + " --memory-child" + cli_args(o));
    const auto brace = ob_out.rfind('\n', ob_out.size() - 2);
    const json ob_mem = json::parse(ob_out.substr(brace == std::string::npos ? 0 : brace + 1));
    json py_mem;
    {
      bench::PyServer pm(kMallocEnv + python_cmd(o), fifo);
      pm.read();
      for (int i = 0; i < o.warmup; ++i) pm.call("step");
      py_mem = pm.call("memory");
    }

    // ---- report ----
    const double py_loss = py_first["loss"];
    const double loss_rel = std::abs(first.loss - py_loss) / std::max(std::abs(py_loss), 1e-12);
    std::printf("\nfirst-step loss   onebit %.6f (kl %.4f, hidden %.6f)\n", first.loss, first.kl, first.hidden);
    std::printf("                  torch  %.6f (kl %.4f, hidden %.6f)   relative difference %.2e\n", py_loss,
                py_first["kl"].get<double>(), py_first["hidden"].get<double>(), loss_rel);

    std::printf("\n%-14s %10s %10s %7s %11s %10s %7s\n", "phase, median", "onebit ms", "torch ms", "ratio",
                "onebit cpu", "torch cpu", "ratio");
    double sums[4] = {0, 0, 0, 0};
    for (const auto& n : kPhases) {
      const double v[4] = {median(ob_ph_wall[n]), median(py_ph_wall[n]), median(ob_ph_cpu[n]), median(py_ph_cpu[n])};
      for (int k = 0; k < 4; ++k) sums[k] += v[k];
      std::printf("%-14s %10.1f %10.1f %7.2f %11.1f %10.1f %7.2f\n", n.c_str(), v[0], v[1], v[0] / v[1], v[2], v[3],
                  v[2] / v[3]);
    }
    std::printf("%-14s %10.1f %10.1f %7.2f %11.1f %10.1f %7.2f\n", "sum", sums[0], sums[1], sums[0] / sums[1],
                sums[2], sums[3], sums[2] / sums[3]);

    const double ob_peak = mib(ob_mem["peak_step_bytes"].get<int64_t>());
    const double py_peak = mib(py_mem["peak_step_bytes"].get<int64_t>());
    std::printf("\n%-28s %10s %10s %8s\n", "whole step (Trainer::step)", "onebit", "torch", "ratio");
    std::printf("%-28s %10.1f %10.1f %8.3f   target <= 0.667 (>= 1.5x faster)\n", "time, wall ms", median(ob_wall),
                median(py_wall), median(wall_ratio));
    std::printf("%-28s %10.1f %10.1f %8.3f\n", "time, process CPU ms", median(ob_cpu), median(py_cpu),
                median(cpu_ratio));
    if (!mm_wall.empty())
      std::printf("%-28s %10.1f %10s %8.3f   (fp32: no implementation can go below)\n",
                  "dense matmuls alone, wall ms", median(mm_wall), "", median(mm_ratio));
    std::printf("%-28s %10.1f %10.1f %8.3f   target <= 0.7\n", "peak step memory, MiB", ob_peak, py_peak,
                ob_peak / py_peak);
    std::printf("%-28s %10.1f %10.1f\n", "in use before it, MiB", mib(ob_mem["resident_bytes"].get<int64_t>()),
                mib(py_mem["resident_bytes"].get<int64_t>()));
    std::printf("time ratios: medians of the %d per-turn ratios; speed-up torch/onebit %.2fx (wall), %.2fx (cpu)\n",
                o.iters, 1.0 / median(wall_ratio), 1.0 / median(cpu_ratio));

    std::printf("\n%-14s %21s %21s   (MiB above the memory in use before the step)\n", "memory", "peak in phase",
                "live at its end");
    std::printf("%-14s %10s %10s %10s %10s\n", "", "onebit", "torch", "onebit", "torch");
    for (const auto& n : kPhases) {
      const auto &a = ob_mem["phases"][n], &b = py_mem["phases"][n];
      std::printf("%-14s %10.1f %10.1f %10.1f %10.1f\n", n.c_str(), mib(a[0].get<int64_t>()), mib(b[0].get<int64_t>()),
                  mib(a[1].get<int64_t>()), mib(b[1].get<int64_t>()));
    }
    OB_CHECK(loss_rel <= o.tol, "first-step losses differ by ", loss_rel, " (relative) > --tol ", o.tol,
             ": the two sides do not compute the same step");
    return 0;
  });
}
