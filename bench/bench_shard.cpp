// bench-shard: dist.sharding none / optimizer / gradients on CPU with Gloo processes on this
// machine. For each world size and mode it starts one process per rank (itself, as --rank-child)
// that builds the same random LLaMA teacher and OneBit student, runs warm-up and timed
// Trainer steps, and reports its peak RSS during the steps, the peak of its trainable state
// (ParamSync::peak_state_bytes: shards, gradients, AdamW state and whatever a step gathers or
// stages), the median step time and the bytes its ParamSync collectives moved per step.
// Printed as ratios to `none` measured in the same run, and against the ZeRO formulas (per
// step 2Ψ for DP, ZeRO-1 and ZeRO-2, 3Ψ for ZeRO-3, each times (N-1)/N of a ring).
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/llama_config.h"
#include "bench/memory.h"
#include "bench/timing.h"
#include "onebit/core/error.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/launch.h"
#include "onebit/io/safetensors.h"
#include "onebit/distill/trainer.h"
#include "onebit/models/loader.h"
#include "onebit/models/model_config.h"
#include "onebit/models/to_onebit.h"
#include "tests/dist/spawn.h"  // Child and free_port: the same process handling as the [dist] tests

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace onebit;

namespace {

struct Options {
  std::vector<int> worlds = {2, 4};
  std::vector<std::string> modes = {"none", "optimizer", "gradients", "full"};
  int64_t layers = 12, hidden = 512, ffn = 1376, vocab = 8192;
  int64_t batch = 1, seq = 64;  // per rank
  int warmup = 1, iters = 3;
  double bucket_mb = 25;
  std::string dir = "build/bench_shard";
  std::string json_out;
  // child
  bool child = false;
  std::string mode, out;
};

json run_rank(const Options& o) {
  at::set_num_threads(1);
  const auto launch = dist::detect_launch();
  dist::C10dOptions co;
  co.backend = "gloo";
  co.timeout_s = 600;
  dist::C10dSync sync(launch, torch::kCPU, co);

  torch::manual_seed(1);
  const auto mc = models::parse_model_config(bench::llama_config(o.layers, o.hidden, o.ffn, o.vocab).dump());
  auto teacher = models::build_model(mc);
  auto student = models::build_model(mc);
  {
    torch::NoGradGuard g;
    auto src = teacher->named_parameters();
    for (auto& item : student->named_parameters()) item.value().copy_(src[item.key()]);
  }
  models::StudentOptions so;
  so.svid = "none";  // the init does not matter here, and SVD of every matrix would dominate the run
  models::to_onebit(*student, so);
  config::TrainConfig cfg;
  cfg.model.dtype = "fp32";
  cfg.train.precision = "fp32";
  cfg.optim.schedule = "constant";
  cfg.optim.warmup_steps = 0;
  cfg.dist.sharding = o.mode;
  cfg.dist.bucket_mb = o.bucket_mb;
  const auto ids = torch::randint(o.vocab, {o.batch, o.seq}, torch::kLong);
  distill::Trainer tr(cfg, teacher, student, [&] { return ids; }, sync, 1 << 30);
  int64_t trainable = 0;
  for (const auto& [name, t] : tr.trainable()) trainable += t.numel();

  const int64_t rss_before = bench::proc_status_bytes("VmRSS");
  bench::reset_peak_rss();
  for (int i = 0; i < o.warmup; ++i) tr.step();
  const double bytes0 = tr.param_sync().comm_bytes();
  const double ms = bench::median_ms([&] { tr.step(); }, 0, o.iters);
  const double per_step = (tr.param_sync().comm_bytes() - bytes0) / o.iters;
  return {{"rank", launch.rank},
          {"trainable", trainable},
          {"peak_rss", bench::proc_status_bytes("VmHWM")},
          {"rss_before_steps", rss_before},
          {"state_bytes", tr.param_sync().state_bytes()},
          {"peak_state_bytes", tr.param_sync().peak_state_bytes()},
          {"step_ms", ms},
          {"comm_bytes_per_step", per_step}};
}

// Starts `world` ranks of mode `mode`; returns their reports.
std::vector<json> run_world(const Options& o, int world, const std::string& mode) {
  const std::string port = std::to_string(test::free_port());
  std::vector<std::unique_ptr<test::Child>> ranks;
  const std::string self = test::self_exe();
  for (int r = 0; r < world; ++r) {
    const std::string tag = (fs::path(o.dir) / (mode + "_w" + std::to_string(world) + "_r" + std::to_string(r))).string();
    std::vector<std::string> args = {self,         "--rank-child",         "--mode",  mode,
                                     "--out",      tag + ".json",          "--layers", std::to_string(o.layers),
                                     "--hidden",   std::to_string(o.hidden), "--ffn", std::to_string(o.ffn),
                                     "--vocab",    std::to_string(o.vocab),  "--batch", std::to_string(o.batch),
                                     "--seq",      std::to_string(o.seq),    "--warmup", std::to_string(o.warmup),
                                     "--iters",    std::to_string(o.iters),  "--bucket-mb", std::to_string(o.bucket_mb)};
    ranks.push_back(std::make_unique<test::Child>(
        args,
        std::map<std::string, std::string>{{"RANK", std::to_string(r)}, {"WORLD_SIZE", std::to_string(world)},
                                           {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port},
                                           {"OMP_NUM_THREADS", "1"},
                                           // RSS follows the live tensors (bench/memory.h)
                                           {"MALLOC_MMAP_THRESHOLD_", "65536"},
                                           {"MALLOC_TRIM_THRESHOLD_", "131072"}},
        tag + ".log"));
  }
  std::vector<json> out;
  for (int r = 0; r < world; ++r) {
    const int rc = ranks[size_t(r)]->wait(3600);
    OB_CHECK(rc == 0, "rank ", r, " of ", world, " (", mode, ") failed: ", ranks[size_t(r)]->output());
    const std::string tag = (fs::path(o.dir) / (mode + "_w" + std::to_string(world) + "_r" + std::to_string(r))).string();
    out.push_back(json::parse(std::ifstream(tag + ".json")));
  }
  return out;
}

double max_of(const std::vector<json>& v, const char* key) {
  double m = 0;
  for (const auto& j : v) m = std::max(m, j.at(key).get<double>());
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("bench-shard", [&] {
    CLI::App app{"dist.sharding on CPU Gloo processes: peak memory, trainable state, step time and bytes "
                 "communicated per rank, as ratios to dist.sharding=none"};
    app.option_defaults()->always_capture_default();
    Options o;
    app.add_option("--worlds", o.worlds, "world sizes (processes on this machine)");
    app.add_option("--modes", o.modes, "dist.sharding modes; the first is the baseline");
    app.add_option("--layers", o.layers, "decoder layers");
    app.add_option("--hidden", o.hidden, "hidden size");
    app.add_option("--ffn", o.ffn, "intermediate size");
    app.add_option("--vocab", o.vocab, "vocabulary size");
    app.add_option("--batch", o.batch, "sequences per rank and step");
    app.add_option("--seq", o.seq, "tokens per sequence");
    app.add_option("--warmup", o.warmup, "untimed steps first");
    app.add_option("--iters", o.iters, "timed steps (median reported)");
    app.add_option("--bucket-mb", o.bucket_mb, "dist.bucket_mb");
    app.add_option("--dir", o.dir, "logs and per-rank reports");
    app.add_option("--json", o.json_out, "write every number as JSON here");
    app.add_flag("--rank-child", o.child, "internal: run one rank")->group("");
    app.add_option("--mode", o.mode, "internal: this rank's mode")->group("");
    app.add_option("--out", o.out, "internal: this rank's report")->group("");
    CLI11_PARSE(app, argc, argv);
    if (o.child) {
      const json j = run_rank(o);
      std::ofstream(o.out) << j.dump();
      return 0;
    }
    OB_CHECK(o.iters >= 1 && o.warmup >= 1, "--iters and --warmup must be >= 1");
    fs::create_directories(o.dir);
    std::printf("random LLaMA %lld layers x %lld hidden, ffn %lld, vocab %lld; batch %lld x %lld tokens per rank, "
                "1 thread per rank, fp32\n",
                (long long)o.layers, (long long)o.hidden, (long long)o.ffn, (long long)o.vocab, (long long)o.batch,
                (long long)o.seq);
    json all = json::array();
    for (const int world : o.worlds) {
      std::map<std::string, std::vector<json>> runs;
      for (const auto& mode : o.modes) runs[mode] = run_world(o, world, mode);
      const auto& base = runs[o.modes.front()];
      const double psi = base.front().at("trainable").get<double>();
      const double ring = 4.0 * psi * (world - 1) / world;  // bytes of one fp32 ring pass over Ψ
      std::printf("\n%d ranks, Ψ = %.2fM trainable values; ZeRO formulas per step: 2Ψ = %.1f MB (DP, ZeRO-1/2), "
                  "3Ψ = %.1f MB (ZeRO-3), each x(N-1)/N in fp32\n",
                  world, psi / 1e6, 2 * ring / 1e6, 3 * ring / 1e6);
      std::printf("| mode | peak RSS in steps MiB (ratio) | trainable state peak MiB (ratio) | kept between steps MiB "
                  "(ratio) | step ms (ratio) | MB moved/step (/ formula) |\n|---|---|---|---|---|---|\n");
      for (const auto& mode : o.modes) {
        const auto& r = runs[mode];
        const double rss = max_of(r, "peak_rss"), peak = max_of(r, "peak_state_bytes"), st = max_of(r, "state_bytes"),
                     ms = max_of(r, "step_ms"), mb = max_of(r, "comm_bytes_per_step");
        const double formula = (mode == "full" ? 3 : 2) * ring;
        std::printf("| %s | %.0f (%.3f) | %.1f (%.3f) | %.1f (%.3f) | %.0f (%.3f) | %.1f (%.3f) |\n", mode.c_str(),
                    rss / 1048576.0, rss / max_of(base, "peak_rss"), peak / 1048576.0,
                    peak / max_of(base, "peak_state_bytes"), st / 1048576.0, st / max_of(base, "state_bytes"), ms,
                    ms / max_of(base, "step_ms"), mb / 1e6, mb / formula);
        all.push_back({{"world", world},
                       {"mode", mode},
                       {"trainable", psi},
                       {"peak_rss", rss},
                       {"peak_rss_ratio", rss / max_of(base, "peak_rss")},
                       {"peak_state_bytes", peak},
                       {"peak_state_ratio", peak / max_of(base, "peak_state_bytes")},
                       {"state_bytes", st},
                       {"step_ms", ms},
                       {"step_ratio", ms / max_of(base, "step_ms")},
                       {"comm_bytes_per_step", mb},
                       {"comm_formula_bytes", formula},
                       {"ranks", r}});
      }
    }
    if (!o.json_out.empty()) io::write_file_atomic(o.json_out, all.dump(2) + "\n");
    return 0;
  });
}
