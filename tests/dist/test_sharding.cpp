// dist.sharding none / optimizer / gradients / full between real processes (Gloo over 127.0.0.1): one
// process with the whole batch, 2 processes with half of it and 4 with a quarter train the same
// tiny student, with and without gradient accumulation, to the same losses and weights. A
// sharded run stopped and resumed equals the uninterrupted one exactly; a checkpoint missing a
// shard is skipped; another world size is refused. This test binary starts itself as the
// hidden worker case below, one process per rank.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/launch.h"
#include "onebit/distill/checkpoint.h"
#include "onebit/distill/trainer.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/param_shapes.h"
#include "onebit/models/to_onebit.h"
#include "tests/data/tmpdir.h"
#include "tests/dist/spawn.h"
#include "tests/distill/tiny_trainer.h"
#include "tests/support.h"

namespace fs = std::filesystem;

namespace {

constexpr double kLossTol = 1e-5;    // relative, per step
constexpr double kWeightTol = 1e-5;  // max |a - b| over the trainable tensors
constexpr double kWorkerTimeoutS = 240;  // 4 torch processes on 2 busy cores
constexpr int kSteps = 5, kCut = 3;  // steps per run; the resumed run stops after kCut
constexpr int64_t kGlobalBatch = 4, kSeqLen = 12;
constexpr double kBucketMb = 0.004;  // ~4 KiB: several buckets, each padded to the world size
const std::vector<std::string> kModes = {"none", "optimizer", "gradients", "full"};
const std::vector<std::string> kResumed = {"optimizer", "gradients", "full"};
constexpr size_t kPer = 3;  // results per run: losses, final trainable tensors, state bytes
const std::vector<int64_t> kAccums = {1, 2};
// Lean precision (bf16 latent W and AdamW moments, stochastic rounding): these modes train alike
// too (the same losses and the same sign(W)), and the last one is also resumed. The bf16
// gradients of W are summed across ranks in bf16: an element whose per-rank gradients nearly
// cancel can come out with another sign, and AdamW's normalised step (about ±lr) then differs,
// so the latent values agree only to 2·lr per step (measured: 1.3e-3 after 5 steps of 1e-3).
const std::vector<std::string> kLeanModes = {"none", "full"};
constexpr double kLeanWeightTol = 2 * 1e-3 * kSteps;

// Global batch k, the same on every rank; rank r of n trains on rows [r·4/n, (r+1)·4/n).
torch::Tensor rank_batch(int64_t k, int rank, int world) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + k);
  const auto all = torch::randint(64, {kGlobalBatch, kSeqLen}, gen, torch::kLong);
  const int64_t b = kGlobalBatch / world;
  return all.narrow(0, rank * b, b);
}

// One tiny training run on this rank's slice of the global batches.
struct Run {
  onebit::test::TrainerSetup s = onebit::test::make_trainer_setup();
  int64_t next = 0;  // global batches consumed
  std::unique_ptr<onebit::distill::Trainer> tr;
  Run(onebit::dist::GradSync& sync, const std::string& mode, int64_t accum, bool lean = false,
      bool shard_teacher = false) {
    if (lean) {
      s.cfg.student.latent_dtype = s.cfg.optim.state_dtype = "bf16";
      onebit::models::set_latent_dtype(*s.student, torch::kBFloat16);
    }
    s.cfg.dist.sharding = mode;
    s.cfg.dist.shard_teacher = shard_teacher;
    s.cfg.dist.bucket_mb = kBucketMb;
    s.cfg.optim.grad_accum = accum;
    // eps 1e-6 keeps AdamW's first steps from amplifying float rounding in near-zero
    // gradients (lr·noise/eps), which different world sizes round differently.
    s.cfg.optim.lr = 1e-3;
    s.cfg.optim.eps = 1e-6;
    tr = std::make_unique<onebit::distill::Trainer>(
        s.cfg, s.teacher, s.student, [this, &sync] { return rank_batch(next++, sync.rank(), sync.world_size()); },
        sync, 30);
  }
  torch::Tensor losses(int n) {
    std::vector<double> out;
    for (int i = 0; i < n; ++i) out.push_back(tr->step().loss);
    return torch::tensor(out, torch::kFloat64);
  }
  // The final trainable tensors (collective: full sharding gathers them first).
  torch::Tensor student() const {
    tr->param_sync().materialize();
    std::vector<torch::Tensor> parts;
    for (const auto& [name, t] : tr->trainable()) parts.push_back(t.detach().reshape({-1}).to(torch::kFloat32));
    return torch::cat(parts);
  }
};

// Every (mode, accum): losses and final student; then, for the sharded modes, a run that saves
// at step kCut - 1 and kCut, is rebuilt from fresh weights, resumes and finishes.
std::vector<torch::Tensor> train_all(onebit::dist::GradSync& sync, const fs::path& ckpt_root) {
  std::vector<torch::Tensor> out;
  for (const auto& mode : kModes)
    for (const int64_t accum : kAccums) {
      Run r(sync, mode, accum);
      out.push_back(r.losses(kSteps));
      const auto state = double(r.tr->param_sync().state_bytes());
      out.push_back(r.student());
      out.push_back(torch::tensor({state}, torch::kFloat64));
    }
  for (const auto& mode : kLeanModes) {
    Run r(sync, mode, 1, /*lean=*/true);
    out.push_back(r.losses(kSteps));
    out.push_back(r.student());
    out.push_back(torch::zeros({1}, torch::kFloat64));
  }
  {
    // dist.shard_teacher: the teacher's own decoder tensors sharded too; the same training.
    Run r(sync, "full", 2, /*lean=*/false, /*shard_teacher=*/true);
    out.push_back(r.losses(kSteps));
    out.push_back(r.student());
    double released = 0;  // teacher tensors held as nothing between its forwards
    for (const auto& p : r.s.teacher->parameters()) released += p.numel() == 0 ? 1 : 0;
    out.push_back(torch::tensor({released}, torch::kFloat64));
  }
  if (ckpt_root.empty()) return out;
  std::vector<std::string> resumed = kResumed;
  resumed.push_back("lean");  // kLeanModes.back() with bf16 latent W and moments
  for (const auto& name : resumed) {
    const bool lean = name == "lean";
    const std::string mode = lean ? kLeanModes.back() : name;
    const int64_t accum = lean ? 1 : 2;
    onebit::distill::CheckpointManager ckpts(ckpt_root / name, 2);
    auto save = [&](Run& r) {
      onebit::distill::TrainState st;
      r.tr->save_state(st);
      st.counters["next"] = r.next;
      ckpts.save(r.tr->param_sync(), st);
    };
    std::vector<torch::Tensor> losses;
    {
      Run a(sync, mode, accum, lean);
      losses.push_back(a.losses(kCut - 1));
      save(a);
      losses.push_back(a.losses(1));
      save(a);
    }
    Run b(sync, mode, accum, lean);
    const auto latest = ckpts.latest_valid();
    OB_CHECK(latest.has_value(), "no checkpoint to resume from");
    const auto st = ckpts.load(*latest, b.tr->param_sync());
    b.tr->load_state(st);
    b.next = st.counters.at("next");
    losses.push_back(b.losses(kSteps - kCut));
    out.push_back(torch::cat(losses));
    out.push_back(b.student());
    out.push_back(torch::zeros({1}, torch::kFloat64));
  }
  // full, after training: the student written layer by layer (rank 0 writes, every rank
  // gathers), read back from the file; and how far above its kept state a rank went meanwhile,
  // against the largest decoder layer's tensors.
  {
    Run r(sync, "full", 1);
    r.losses(kSteps);
    r.tr->finish();
    const fs::path dir = ckpt_root / "student_full";
    const double above = double(r.tr->save_student(dir.string(), sync.rank() == 0));
    sync.mean(0);  // the file is complete before anyone reads it
    onebit::io::SafetensorsReader file(dir.string());
    std::vector<torch::Tensor> parts;
    std::map<int64_t, double> layer_bytes;  // from the tensors' full shapes
    for (const auto& [name, t] : r.tr->trainable()) {
      parts.push_back(file.load(name).reshape({-1}));
      layer_bytes[onebit::models::decoder_layer_of(name)] += double(parts.back().numel()) * 4;
    }
    out.push_back(torch::cat(parts));
    double largest = 0;
    for (const auto& [layer, bytes] : layer_bytes)
      if (layer >= 0) largest = std::max(largest, bytes);
    out.push_back(torch::tensor({above, largest}, torch::kFloat64));
  }
  return out;
}

bool worker_mode() { return std::getenv("ONEBIT_SHARD_WORKER_OUT") != nullptr; }

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }
// Largest |got - want| per step, relative to max(1, |want|).
double max_rel_diff(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().div(want.abs().clamp_min(1.0)).max().item<double>();
}

// Runs `world` worker processes; returns rank 0's results (checked equal to the others').
std::vector<torch::Tensor> run_workers(const onebit::test::TempDir& dir, int world) {
  const std::string port = std::to_string(onebit::test::free_port());
  const std::string tag = "w" + std::to_string(world) + "_";
  std::vector<std::unique_ptr<onebit::test::Child>> ranks;
  for (int r = 0; r < world; ++r)
    ranks.push_back(std::make_unique<onebit::test::Child>(
        std::vector<std::string>{onebit::test::self_exe(), "dist worker: sharded training"},
        std::map<std::string, std::string>{{"RANK", std::to_string(r)}, {"WORLD_SIZE", std::to_string(world)},
                                           {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port},
                                           {"OMP_NUM_THREADS", "1"},
                                           {"ONEBIT_SHARD_WORKER_OUT", dir.str(tag + std::to_string(r) + ".pt")},
                                           {"ONEBIT_SHARD_CKPT", dir.str(tag + "ckpt")}},
        dir.str(tag + std::to_string(r) + ".log")));
  for (int r = 0; r < world; ++r) {
    const int rc = ranks[size_t(r)]->wait(kWorkerTimeoutS);
    INFO("world " << world << ", rank " << r << " output:\n" << ranks[size_t(r)]->output());
    REQUIRE(rc == 0);
  }
  std::vector<torch::Tensor> rank0;
  torch::load(rank0, dir.str(tag + "0.pt"));
  for (int r = 1; r < world; ++r) {
    std::vector<torch::Tensor> other;
    torch::load(other, dir.str(tag + std::to_string(r) + ".pt"));
    REQUIRE(other.size() == rank0.size());
    for (size_t i = 0; i < other.size(); ++i) CHECK(torch::equal(other[i], rank0[i]));  // all ranks agree
  }
  return rank0;
}

}  // namespace

// Run by the test below in each child process (hidden: not part of a normal run).
TEST_CASE("dist worker: sharded training", "[.][dist_worker]") {
  if (!worker_mode()) return;
  onebit::dist::C10dOptions o;
  o.backend = "gloo";
  o.timeout_s = 60;
  onebit::dist::C10dSync sync(onebit::dist::detect_launch(), torch::kCPU, o);
  const auto out = train_all(sync, std::getenv("ONEBIT_SHARD_CKPT"));
  torch::save(out, std::getenv("ONEBIT_SHARD_WORKER_OUT"));
}

TEST_CASE("sharding: 1 x batch 4, 2 x batch 2 and 4 x batch 1 train alike in every mode", "[dist]") {
  OB_REQUIRE_OR_SKIP(onebit::dist::backend_compiled("gloo"), "built without gloo headers (apt-get install libgloo-dev)");
  onebit::test::TempDir dir("sharding");
  onebit::dist::NoSync one;
  const auto ref = train_all(one, {});
  const size_t runs = kModes.size() * kAccums.size(), lean_runs = kLeanModes.size(), n = kPer * (runs + lean_runs);
  REQUIRE(ref.size() == n + kPer);  // and the shard_teacher run
  // Run k: mode kModes[k / 2], grad_accum kAccums[k % 2].
  auto at = [](size_t k, size_t what) { return kPer * k + what; };
  const auto initial = Run(one, "none", 1).student();
  // One process: every mode is the same computation.
  for (size_t k = 2; k < runs; ++k) {
    CHECK(max_abs_diff(ref[at(k, 0)], ref[at(k % 2, 0)]) < kLossTol);
    CHECK(max_abs_diff(ref[at(k, 1)], ref[at(k % 2, 1)]) < kWeightTol);
  }
  for (const int world : {2, 4}) {
    const auto got = run_workers(dir, world);
    REQUIRE(got.size() == n + kPer + kPer * (kResumed.size() + 1) + 2);
    for (size_t k = 0; k < runs; ++k) {
      INFO("world " << world << ", mode " << kModes[k / 2] << ", grad_accum " << kAccums[k % 2]);
      const double dl = max_rel_diff(got[at(k, 0)], ref[at(k, 0)]);
      const double dw = max_abs_diff(got[at(k, 1)], ref[at(k, 1)]);
      CAPTURE(dl, dw);
      CHECK(dl < kLossTol);
      CHECK(dw < kWeightTol);
      CHECK(max_abs_diff(ref[at(k, 1)], initial) > 100 * kWeightTol);  // training moved the weights
      // The trainable state a rank keeps, against none's: full sharding keeps 1/world of it
      // (plus the padding of each bucket), ZeRO-1 and ZeRO-2 their formulas' share.
      const double ratio = got[at(k, 2)].item<double>() / got[at(k % 2, 2)].item<double>();
      const double want = std::vector<double>{16.0, 8.0 + 12.0 / world, 4.0 + 12.0 / world, 16.0 / world}[k / 2] / 16;
      CAPTURE(ratio, want);
      CHECK(std::abs(ratio - want) < 0.05);
    }
    {
      // dist.shard_teacher (full, grad_accum 2): the one-process full run's losses and student.
      INFO("world " << world << ", full with dist.shard_teacher");
      const size_t full2 = 2 * 3 + 1;
      const double dl = max_rel_diff(got[n], ref[at(full2, 0)]);
      const double dw = max_abs_diff(got[n + 1], ref[at(full2, 1)]);
      CAPTURE(dl, dw);
      CHECK(dl < kLossTol);
      CHECK(dw < kWeightTol);
      CHECK(max_abs_diff(ref[n], ref[at(full2, 0)]) < kLossTol);  // one process: the same computation
      CHECK(got[n + 2].item<double>() >= 7);  // at least one layer's linears were sharded away
    }
    for (size_t k = runs; k < runs + lean_runs; ++k) {
      INFO("world " << world << ", lean precision, mode " << kLeanModes[k - runs]);
      const double dl = max_rel_diff(got[at(k, 0)], ref[at(k, 0)]);
      const double dw = max_abs_diff(got[at(k, 1)], ref[at(k, 1)]);
      CAPTURE(dl, dw);
      CHECK(dl < kLossTol);
      CHECK(dw < kLeanWeightTol);
      CHECK(torch::equal(got[at(k, 1)].sign(), ref[at(k, 1)].sign()));  // the same 1-bit student
      CHECK(max_abs_diff(ref[at(k, 1)], initial) > 100 * kWeightTol);
    }
    // The lean run stopped after kCut steps and resumed: exactly the uninterrupted one.
    CHECK(torch::equal(got[n + kPer + kPer * kResumed.size()], got[at(runs + lean_runs - 1, 0)]));
    CHECK(torch::equal(got[n + kPer + kPer * kResumed.size() + 1], got[at(runs + lean_runs - 1, 1)]));
    // Stopped after kCut steps and resumed from the sharded checkpoint: exactly the same run
    // (grad_accum 2).
    const size_t resumed = n + kPer;
    for (size_t m = 0; m < kResumed.size(); ++m) {
      INFO("world " << world << ", resumed " << kResumed[m]);
      const size_t whole = 2 * (m + 1) + 1;  // the run of that mode with grad_accum 2
      CHECK(torch::equal(got[resumed + kPer * m], got[at(whole, 0)]));
      CHECK(torch::equal(got[resumed + kPer * m + 1], got[at(whole, 1)]));
    }
    {
      // full: the student file written layer by layer is the trained student; while writing,
      // no rank held more than one decoder layer beyond its shard (padding aside).
      INFO("world " << world << ", full, student written layer by layer");
      const size_t full1 = 2 * 3;  // the run of mode full with grad_accum 1
      const auto& file = got[resumed + kPer * (kResumed.size() + 1)];
      const auto& held = got[resumed + kPer * (kResumed.size() + 1) + 1];
      CHECK(max_abs_diff(file, ref[at(full1, 1)]) < kWeightTol);
      const double above = held[0].item<double>(), largest = held[1].item<double>();
      CAPTURE(above, largest);
      CHECK(above >= 0.9 * largest);          // it did gather a layer
      CHECK(above <= 1.05 * largest + 1024);  // and never two
    }
    // Each rank wrote its shard; a checkpoint missing one is skipped for the previous one.
    const fs::path ck = dir.path / ("w" + std::to_string(world) + "_ckpt") / "gradients";
    char last[64], shard[64];
    std::snprintf(last, sizeof last, "step-%08d", kCut);
    std::snprintf(shard, sizeof shard, "shard-%05d-of-%05d.pt", world - 1, world);
    REQUIRE(fs::exists(ck / last / shard));
    onebit::distill::CheckpointManager mgr(ck, 2);
    REQUIRE(mgr.latest_valid()->filename() == last);
    fs::remove(ck / last / shard);
    const auto previous = mgr.latest_valid();
    REQUIRE(previous.has_value());
    CHECK(previous->filename() != last);
    // Another world size or sharding: one clear refusal.
    CHECK_THAT(onebit::distill::CheckpointManager::layout_mismatch(*previous, world + 1, "gradients"),
               OB_CONTAINS("written by " + std::to_string(world) + " rank(s) with dist.sharding=gradients, this run has " +
                           std::to_string(world + 1) + " with dist.sharding=gradients (re-sharding is not supported"));
    CHECK_THAT(onebit::distill::CheckpointManager::layout_mismatch(*previous, world, "optimizer"),
               OB_CONTAINS("this run has " + std::to_string(world) + " with dist.sharding=optimizer"));
  }
}
