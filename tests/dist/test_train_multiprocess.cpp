// onebit-train with two processes (Gloo on 127.0.0.1, CPU, fp32) against one process: the
// same loss sequence and final student; clear errors within dist.timeout_s when a rank is
// missing, dies or hangs (2 and 4 processes); SIGTERM to every rank or to one.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>
#include <nlohmann/json.hpp>

#include "onebit/dist/c10d_sync.h"
#include "onebit/distill/checkpoint.h"
#include "onebit/io/safetensors.h"
#include "tests/data/tmpdir.h"
#include "tests/dist/spawn.h"
#include "tests/support.h"
#include "tests/references.h"

namespace fs = std::filesystem;
using onebit::test::Child;
using onebit::test::rank_env;

namespace {

constexpr double kLossTol = 1e-5;    // relative, per logged step
constexpr double kWeightTol = 1e-5;  // max |a - b| over every student tensor
constexpr double kRunTimeoutS = 180; // one tiny run on 2 busy cores takes a few seconds
constexpr double kStartSlackS = 20;  // process start (libtorch load) on top of dist.timeout_s

// A tiny embedded teacher, self-sampled data, 4 steps, a checkpoint at step 2 and at the end.
// optim.eps = 1e-6 keeps AdamW's first steps from amplifying float rounding in near-zero
// gradients (lr·noise/eps), which one and two processes round differently.
std::string write_config(const onebit::test::TempDir& dir, const std::string& name, int64_t batch_size,
                         int64_t max_steps) {
  const std::string path = dir.str(name + ".yaml");
  std::ofstream(path) << "output_dir: " << dir.str(name) << R"(
model: {teacher: embedded, dtype: fp32, device: cpu}
embedded: {hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, num_kv_heads: 1,
           train_tokens: 8192, batch_size: 8, seq_len: 64, lr: 1.0e-2, seed: 7}
student: {svid: svd}
data: {source: sample, num_samples: 16, sample_length: 48, sample_batch: 8, seq_len: 32, batch_size: )"
                      << batch_size << R"(}
optim: {lr: 1.0e-3, eps: 1.0e-6, warmup_steps: 0, schedule: constant}
train: {max_steps: )" << max_steps
                      << R"(, precision: fp32, log_every: 1, save_every: 2, keep_last: 1, eval_seq_len: 32}
)";
  return path;
}

std::string train_exe() { return (onebit::test::binary_dir() / "onebit-train").string(); }

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream f(metrics);
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

int64_t count_lines(const fs::path& p) {
  std::ifstream f(p);
  int64_t n = 0;
  for (std::string line; std::getline(f, line);) ++n;
  return n;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs onebit-train as ranks 0 and 1 of 2 with extra overrides; both must succeed.
// Returns rank 0's output and rank 1's.
std::pair<std::string, std::string> run_two(const onebit::test::TempDir& dir, const std::string& cfg,
                                            const std::string& tag, const std::vector<std::string>& overrides = {}) {
  const int port = onebit::test::free_port();
  std::vector<std::string> args = {train_exe(), "--config", cfg};
  args.insert(args.end(), overrides.begin(), overrides.end());
  Child r0(args, rank_env(0, 2, port), dir.str(tag + "0.log"));
  Child r1(args, rank_env(1, 2, port), dir.str(tag + "1.log"));
  for (Child* c : {&r0, &r1}) {
    const int rc = c->wait(kRunTimeoutS);
    INFO(tag << ":\n" << c->output());
    REQUIRE(rc == 0);
  }
  return {r0.output(), r1.output()};
}

// Largest |a - b| over the tensors of two student folders (same names required).
double max_student_diff(const fs::path& a, const fs::path& b) {
  onebit::io::SafetensorsReader sa(a.string()), sb(b.string());
  REQUIRE(sa.names() == sb.names());
  double worst = 0;
  for (const auto& n : sa.names()) worst = std::max(worst, (sa.load(n) - sb.load(n)).abs().max().item<double>());
  return worst;
}

bool ready() {
  return fs::exists(train_exe()) && onebit::dist::backend_compiled("gloo");
}
const char* kNotReady = "needs build/onebit-train and the gloo headers (apt-get install libgloo-dev)";

}  // namespace

TEST_CASE("onebit-train: 2 processes x batch 1 = 1 process x batch 2", "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_dp");
  const int steps = 4;

  Child single({train_exe(), "--config", write_config(dir, "one", 2, steps)}, {{"OMP_NUM_THREADS", "1"}},
               dir.str("one.log"));
  const auto t1 = std::chrono::steady_clock::now();
  {
    const int rc = single.wait(kRunTimeoutS);
    INFO(single.output());
    REQUIRE(rc == 0);
  }
  const double single_s = seconds_since(t1);

  const auto t2 = std::chrono::steady_clock::now();
  const auto [out0, out1] = run_two(dir, write_config(dir, "two", 1, steps), "two");
  const double two_s = seconds_since(t2);
  WARN("whole runs (teacher, samples, 4 steps, table): 1 process " << single_s << " s, 2 processes " << two_s << " s");

  // Rank 0 alone wrote the run folder and printed.
  CHECK_THAT(out0, OB_CONTAINS("dist: 2 ranks (torchrun), gloo at 127.0.0.1:"));
  CHECK_THAT(out0, OB_CONTAINS("OneBit student"));
  CHECK(out1.empty());
  CHECK(fs::exists(dir.path / "two" / "checkpoints" / "step-00000004" / "manifest.json"));

  const auto a = losses(dir.path / "one" / "metrics.jsonl"), b = losses(dir.path / "two" / "metrics.jsonl");
  REQUIRE(a.size() == size_t(steps));
  REQUIRE(b.size() == a.size());
  double worst_loss = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1 << ": " << a[i] << " vs " << b[i]);
    CHECK(std::abs(a[i] - b[i]) <= kLossTol * std::max(1.0, std::abs(a[i])));
    worst_loss = std::max(worst_loss, std::abs(a[i] - b[i]));
  }
  CHECK(a.front() != a.back());  // training moved

  const double worst_w = max_student_diff(dir.path / "one" / "student", dir.path / "two" / "student");
  WARN("max |loss difference| " << worst_loss << ", max |student weight difference| " << worst_w);
  CHECK(worst_w <= kWeightTol);

  // Two processes stopped after step 2 and resumed (the teacher folder of the first run, so
  // no final table: rank 0 leaves right after the student is saved) end where one process did.
  const std::string cfg3 = write_config(dir, "three", 1, 2);
  const std::string teacher = "model.teacher=" + dir.str("one/teacher");
  run_two(dir, cfg3, "three_a", {teacher});
  const auto [res0, res1] = run_two(dir, cfg3, "three_b", {teacher, "train.max_steps=4"});
  CHECK_THAT(res0, OB_CONTAINS("resumed from"));
  const auto c = losses(dir.path / "three" / "metrics.jsonl");
  REQUIRE(c.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - c[i]) <= kLossTol * std::max(1.0, std::abs(a[i])));
  CHECK(max_student_diff(dir.path / "one" / "student", dir.path / "three" / "student") <= kWeightTol);

  // dist.sharding=full with dist.shard_teacher: the same run; the student is written layer by
  // layer and the final table's student and teacher run through the layer hooks on both ranks.
  const auto [full0, full1] =
      run_two(dir, write_config(dir, "four", 1, steps), "four", {"dist.sharding=full", "dist.shard_teacher=true"});
  CHECK_THAT(full0, OB_CONTAINS("OneBit student"));
  CHECK(full1.empty());
  const auto d = losses(dir.path / "four" / "metrics.jsonl");
  REQUIRE(d.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - d[i]) <= kLossTol * std::max(1.0, std::abs(a[i])));
  CHECK(max_student_diff(dir.path / "one" / "student", dir.path / "four" / "student") <= kWeightTol);
}

TEST_CASE("onebit-train: a rank that never starts is one clear error within the timeout", "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_missing");
  const std::string cfg = write_config(dir, "run", 1, 4);
  const int timeout_s = 3;
  const std::string to = "dist.timeout_s=" + std::to_string(timeout_s);
  const auto t0 = std::chrono::steady_clock::now();
  // Only rank 0 of 2, and (elsewhere) only rank 1 of 2.
  Child lone0({train_exe(), "--config", cfg, to}, rank_env(0, 2, onebit::test::free_port()), dir.str("r0.log"));
  Child lone1({train_exe(), "--config", cfg, to}, rank_env(1, 2, onebit::test::free_port()), dir.str("r1.log"));
  const int rc0 = lone0.wait(timeout_s + kStartSlackS), rc1 = lone1.wait(timeout_s + kStartSlackS);
  const double secs = seconds_since(t0);
  const std::string out0 = lone0.output(), out1 = lone1.output();
  INFO(out0 << "\n---\n" << out1);
  CHECK(rc0 == 1);
  CHECK(rc1 == 1);
  CHECK_THAT(out0, OB_CONTAINS("onebit-train: error: dist: rank 1 of 2 did not join within 3 s (MASTER_ADDR=127.0.0.1, MASTER_PORT="));
  CHECK_THAT(out1, OB_CONTAINS("onebit-train: error: dist: rank 1 of 2 could not reach rank 0 within 3 s"));
  for (const auto& out : {out0, out1}) {
    CHECK(out.find("frame #") == std::string::npos);  // no c10 backtrace
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);  // the error line alone
  }
  CHECK(secs < timeout_s + kStartSlackS);
}

// Two ranks of a long run (output_dir <dir>/run), started and past their first logged step.
struct RunningPair {
  int port = onebit::test::free_port();
  Child r0, r1;
  RunningPair(const onebit::test::TempDir& dir, const std::string& cfg, const std::string& timeout_override)
      : r0({train_exe(), "--config", cfg, timeout_override}, rank_env(0, 2, port), dir.str("r0.log")),
        r1({train_exe(), "--config", cfg, timeout_override}, rank_env(1, 2, port), dir.str("r1.log")) {
    const fs::path metrics = dir.path / "run" / "metrics.jsonl";
    const auto t0 = std::chrono::steady_clock::now();
    while (count_lines(metrics) < 1 && r0.running() && r1.running() && seconds_since(t0) < kRunTimeoutS)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    INFO(r0.output() << "\n---\n" << r1.output());
    REQUIRE(count_lines(metrics) >= 1);
  }
};

TEST_CASE("onebit-train: a rank that dies mid-run stops the others with a clear error", "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_dies");
  const std::string cfg = write_config(dir, "run", 1, 100000);
  const int timeout_s = 10;
  const std::string to = "dist.timeout_s=" + std::to_string(timeout_s);
  RunningPair pair(dir, cfg, to);
  Child &r0 = pair.r0, &r1 = pair.r1;
  r1.kill();
  const auto killed = std::chrono::steady_clock::now();
  const int rc0 = r0.wait(timeout_s + kStartSlackS);
  const double secs = seconds_since(killed);
  const std::string out0 = r0.output();
  INFO(out0);
  CHECK(rc0 == 1);
  CHECK_THAT(out0, OB_CONTAINS("onebit-train: error: dist: "));
  CHECK_THAT(out0, OB_CONTAINS("on rank 0 of 2 after"));
  CHECK_THAT(out0, OB_CONTAINS("a rank probably died or hangs"));
  CHECK(out0.find("frame #") == std::string::npos);
  CHECK(secs < timeout_s);
  WARN("rank 0 stopped " << secs << " s after rank 1 was killed");
}

TEST_CASE("onebit-train: a rank that hangs stops the others after dist.timeout_s", "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_hangs");
  const std::string cfg = write_config(dir, "run", 1, 100000);
  const int timeout_s = 3;
  const std::string to = "dist.timeout_s=" + std::to_string(timeout_s);
  RunningPair pair(dir, cfg, to);
  Child &r0 = pair.r0, &r1 = pair.r1;
  r1.signal(SIGSTOP);  // alive, sockets open, silent
  const auto stopped = std::chrono::steady_clock::now();
  const int rc0 = r0.wait(timeout_s + kStartSlackS);
  const double secs = seconds_since(stopped);
  r1.kill();
  const std::string out0 = r0.output();
  INFO(out0);
  CHECK(rc0 == 1);
  CHECK_THAT(out0, OB_CONTAINS("on rank 0 of 2 after"));
  CHECK_THAT(out0, OB_CONTAINS("(dist.timeout_s=3); a rank probably died or hangs"));
  CHECK(out0.find("frame #") == std::string::npos);
  CHECK(secs >= timeout_s - 0.5);
  CHECK(secs < timeout_s + 5);
  WARN("rank 0 stopped " << secs << " s after rank 1 hung (dist.timeout_s=" << timeout_s << ")");
}

TEST_CASE("onebit-train under torchrun: the ranks use its agent's store", "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  const std::string py = onebit::test::python();
  OB_REFERENCE_OR_SKIP(!py.empty() && std::system((py + " -c 'import torch.distributed.run' 2>/dev/null").c_str()) == 0,
                     "needs a Python with torch (torchrun); set ONEBIT_PYTHON");
  onebit::test::TempDir dir("train_torchrun");
  const std::string cfg = write_config(dir, "run", 1, 2);
  Child run({py, "-m", "torch.distributed.run", "--nproc-per-node=2",
             "--master-port=" + std::to_string(onebit::test::free_port()), "--no-python", train_exe(), "--config", cfg,
             "dist.timeout_s=60"},
            {{"OMP_NUM_THREADS", "1"}}, dir.str("torchrun.log"));
  const int rc = run.wait(kRunTimeoutS);
  INFO(run.output());
  REQUIRE(rc == 0);
  CHECK_THAT(run.output(), OB_CONTAINS("dist: 2 ranks (torchrun), gloo at"));
  CHECK(losses(dir.path / "run" / "metrics.jsonl").size() == 2);
}

namespace {

// Ranks 0..world-1 of one onebit-train run (the same arguments), logs <dir>/<tag>R.log.
struct Ranks {
  int port = onebit::test::free_port();
  std::vector<std::unique_ptr<Child>> r;
  Ranks(const onebit::test::TempDir& dir, int world, const std::vector<std::string>& args, const std::string& tag) {
    std::vector<std::string> argv = {train_exe()};
    argv.insert(argv.end(), args.begin(), args.end());
    for (int i = 0; i < world; ++i)
      r.push_back(std::make_unique<Child>(argv, rank_env(i, world, port), dir.str(tag + std::to_string(i) + ".log")));
  }
  bool all_running() {
    for (auto& c : r)
      if (!c->running()) return false;
    return true;
  }
  std::string outputs() const {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) s += "--- rank " + std::to_string(i) + ":\n" + r[i]->output();
    return s;
  }
  // Waits while every rank runs, at most kRunTimeoutS, until `done` holds; returns it.
  bool wait_until(const std::function<bool()>& done) {
    const auto t0 = std::chrono::steady_clock::now();
    while (!done() && all_running() && seconds_since(t0) < kRunTimeoutS)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return done();
  }
  // Waits (while every rank runs) until `metrics` has at least n lines.
  void wait_for_lines(const fs::path& metrics, int64_t n) {
    wait_until([&] { return count_lines(metrics) >= n; });
    INFO(outputs());
    REQUIRE(count_lines(metrics) >= n);
  }
};

// The hang tests: once `begun` holds, and `hold_s` seconds later, rank 0 is stopped (SIGSTOP:
// alive, sockets open, silent). Returns the moment of the stop.
std::chrono::steady_clock::time_point stop_rank0_when(Ranks& ranks, const std::function<bool()>& begun,
                                                      int hold_s = 0) {
  ranks.wait_until(begun);
  std::this_thread::sleep_for(std::chrono::seconds(hold_s));
  {
    INFO(ranks.outputs());
    REQUIRE(begun());
    REQUIRE(ranks.all_running());
  }
  ranks.r[0]->signal(SIGSTOP);
  return std::chrono::steady_clock::now();
}

std::string step_dir(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

}  // namespace

TEST_CASE("onebit-train: SIGTERM to every rank, or to one, stops all at the same step with a checkpoint and "
          "exit 143; the same command resumes to the uninterrupted result",
          "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_sigterm");
  const int steps = 60;
  const std::string cfg = write_config(dir, "whole", 1, steps);
  run_two(dir, cfg, "whole");
  // The interrupted run trains with the first run's teacher (no final table) into its own folder.
  const std::vector<std::string> args = {"--config", cfg, "output_dir=" + dir.str("cut"),
                                         "model.teacher=" + dir.str("whole/teacher"), "dist.timeout_s=30"};
  const fs::path metrics = dir.path / "cut" / "metrics.jsonl";
  int64_t stopped_at = 0;
  for (const bool every_rank : {true, false}) {
    INFO((every_rank ? "SIGTERM to both ranks" : "SIGTERM to rank 1 only"));
    Ranks ranks(dir, 2, args, every_rank ? "all" : "one");
    ranks.wait_for_lines(metrics, count_lines(metrics) + 3);
    const auto t0 = std::chrono::steady_clock::now();
    if (every_rank) ranks.r[0]->signal(SIGTERM);
    ranks.r[1]->signal(SIGTERM);
    const int rc0 = ranks.r[0]->wait(kRunTimeoutS), rc1 = ranks.r[1]->wait(kRunTimeoutS);
    const double secs = seconds_since(t0);
    INFO(ranks.outputs());
    CHECK(rc0 == 143);
    CHECK(rc1 == 143);
    const auto st = losses(metrics);
    REQUIRE(st.size() < size_t(steps));
    const int64_t last = int64_t(st.size());  // one line per step, no step repeated (checked below)
    CHECK(last > stopped_at);
    stopped_at = last;
    CHECK(onebit::distill::CheckpointManager::check(dir.path / "cut" / "checkpoints" / step_dir(last)).empty());
    CHECK_THAT(ranks.r[0]->output(), OB_CONTAINS("onebit-train: SIGTERM: stopped after step " + std::to_string(last) +
                                                 " of " + std::to_string(steps)));
    CHECK(ranks.r[1]->output().empty());
    CHECK(secs < 10);
    WARN((every_rank ? "both ranks" : "rank 1 only") << " signalled: both exited 143 after step " << last << ", "
                                                      << secs << " s after the signal");
  }
  const auto [out0, out1] = run_two(dir, cfg, "rest", std::vector<std::string>(args.begin() + 2, args.end()));
  CHECK_THAT(out0, OB_CONTAINS("at step " + std::to_string(stopped_at)));
  const auto a = losses(dir.path / "whole" / "metrics.jsonl"), b = losses(metrics);
  REQUIRE(a.size() == size_t(steps));
  CHECK(a == b);  // every step once, the same losses
  CHECK(onebit::io::read_file(dir.str("whole/student/model.safetensors")) ==
        onebit::io::read_file(dir.str("cut/student/model.safetensors")));
}

TEST_CASE("onebit-train, 4 processes: a rank killed mid-run stops the other three with one error line each",
          "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_dies4");
  const int timeout_s = 10;
  Ranks ranks(dir, 4, {"--config", write_config(dir, "run", 1, 100000), "dist.timeout_s=" + std::to_string(timeout_s)},
              "r");
  ranks.wait_for_lines(dir.path / "run" / "metrics.jsonl", 1);
  ranks.r[2]->kill();
  const auto killed = std::chrono::steady_clock::now();
  double slowest = 0;
  for (int i : {0, 1, 3}) {
    const int rc = ranks.r[size_t(i)]->wait(timeout_s + kStartSlackS);
    slowest = std::max(slowest, seconds_since(killed));
    const std::string out = ranks.r[size_t(i)]->output();
    INFO("rank " << i << ":\n" << out);
    CHECK(rc == 1);
    CHECK_THAT(out, OB_CONTAINS("onebit-train: error: dist: "));
    CHECK_THAT(out, OB_CONTAINS("on rank " + std::to_string(i) + " of 4 after"));
    CHECK(out.find("frame #") == std::string::npos);
    if (i != 0) CHECK(std::count(out.begin(), out.end(), '\n') == 1);  // the error line alone
  }
  CHECK(slowest < timeout_s);
  WARN("4 ranks, rank 2 killed: the last of the others exited " << slowest << " s later (dist.timeout_s=" << timeout_s
                                                                  << ")");
}

TEST_CASE("onebit-train, 4 processes: rank 0 hung while sampling stops the others after dist.timeout_s", "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_sample_hang4");
  const int timeout_s = 3;
  // Enough samples that sampling lasts well past the moment rank 0 is stopped.
  Ranks ranks(dir, 4,
              {"--config", write_config(dir, "run", 1, 4), "dist.timeout_s=" + std::to_string(timeout_s),
               "data.num_samples=100000"},
              "r");
  // Sampling has begun once rank 0 created the dataset (its index.json) and committed a round.
  const fs::path index = dir.path / "run" / "samples" / "index.json";
  auto committed = [&] {
    std::ifstream f(index);
    const auto j = nlohmann::json::parse(f, nullptr, false);
    return !j.is_discarded() && j.value("num_samples", int64_t(0)) > 0;
  };
  const auto stopped = stop_rank0_when(ranks, committed);
  double first = 1e9, slowest = 0;
  for (int i : {1, 2, 3}) {
    const int rc = ranks.r[size_t(i)]->wait(timeout_s + kStartSlackS);
    const double secs = seconds_since(stopped);
    first = std::min(first, secs);
    slowest = std::max(slowest, secs);
    const std::string out = ranks.r[size_t(i)]->output();
    INFO("rank " << i << ":\n" << out);
    CHECK(rc == 1);
    CHECK_THAT(out, OB_CONTAINS("onebit-train: error: dist: "));
    CHECK_THAT(out, OB_CONTAINS("(dist.timeout_s=3); a rank probably died or hangs"));
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  }
  ranks.r[0]->kill();
  CHECK(first >= timeout_s - 0.5);
  CHECK(slowest < timeout_s + 5);
  WARN("4 ranks, rank 0 stopped while sampling: the others exited " << first << "-" << slowest
                                                                     << " s later (dist.timeout_s=" << timeout_s << ")");
}

TEST_CASE("onebit-train: rank 0 hung while pretraining the embedded teacher stops the other after dist.timeout_s",
          "[dist]") {
  OB_REQUIRE_OR_SKIP(ready(), kNotReady);
  onebit::test::TempDir dir("train_pretrain_hang");
  const int timeout_s = 3;
  // Pretraining alone on rank 0 outlasts dist.timeout_s many times over; the other rank waits
  // without a limit while rank 0 beats, and gives up once it goes silent.
  Ranks ranks(dir, 2,
              {"--config", write_config(dir, "run", 1, 4), "dist.timeout_s=" + std::to_string(timeout_s),
               "embedded.train_tokens=20000000"},
              "r");
  const fs::path heldout = dir.path / "run" / "heldout.txt";  // written as pretraining begins
  // A wait longer than the timeout before the stop is fine.
  const auto stopped = stop_rank0_when(ranks, [&] { return fs::exists(heldout); }, timeout_s + 1);
  const int rc = ranks.r[1]->wait(timeout_s + kStartSlackS);
  const double secs = seconds_since(stopped);
  const std::string out = ranks.r[1]->output();
  ranks.r[0]->kill();
  INFO("rank 1:\n" << out);
  CHECK(rc == 1);
  CHECK_THAT(out, OB_CONTAINS("onebit-train: error: dist: rank 0 gave no sign of life for "));
  CHECK_THAT(out, OB_CONTAINS("s while pretraining the embedded teacher (dist.timeout_s=3); it is probably stopped or "
                              "hung; rank 1 of 2"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(secs >= timeout_s - 0.5);
  CHECK(secs < timeout_s + 5);
  WARN("2 ranks, rank 0 stopped while pretraining: rank 1 exited " << secs << " s later (dist.timeout_s="
                                                                  << timeout_s << ")");
}
