// Fault injection on onebit-train (CPU, deterministic): a full disk while a checkpoint is
// written, and kill -9 at many moments of a run (sampling, training, checkpoint writes), each
// time resumed with resume=auto. The run must never lose work or end differently.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "onebit/distill/checkpoint.h"
#include "tests/distill/train_program.h"

extern char** environ;
#include "onebit/io/safetensors.h"

namespace fs = std::filesystem;
using onebit::test::run_train;
using onebit::test::tiny_config;
using onebit::test::tiny_teacher;

#define OB_TRAIN_OR_SKIP()                                                                     \
  OB_REQUIRE_OR_SKIP(fs::exists(onebit::test::train_program()),                                \
                     "onebit-train not built (cmake --build build --target onebit-train)")

TEST_CASE("onebit-train: a full disk during a checkpoint write keeps the previous checkpoint", "[distill][faults]") {
  OB_TRAIN_OR_SKIP();
  onebit::test::TempDir dir("train_disk_full");
  const std::string args = "--config " + tiny_config(dir, tiny_teacher(dir)) + " output_dir=" + dir.str("run") +
                           " train.save_every=1 train.keep_last=5";
  auto [rc1, out1] = run_train(args + " train.max_steps=2");
  INFO(out1);
  REQUIRE(rc1 == 0);
  const fs::path ckpts = dir.path / "run" / "checkpoints", good = ckpts / "step-00000002";
  REQUIRE(fs::exists(good / "manifest.json"));
  uintmax_t largest = 0;
  for (const auto& f : fs::directory_iterator(good)) largest = std::max(largest, fs::file_size(f.path()));

  // No file may grow past half the largest checkpoint file: the next checkpoint cannot be
  // written (the write fails with EFBIG, as on a full disk; SIGXFSZ is ignored so the error
  // is the program's own). The run must stop with one error line and exit 1.
  const std::string limit = "trap '' XFSZ; prlimit --fsize=" + std::to_string(largest / 2) + " ";
  auto [rc2, out2] = run_train(args + " train.max_steps=4", limit);
  INFO(out2);
  CHECK(rc2 != 0);
  CHECK_THAT(out2, OB_CONTAINS("onebit-train: error:"));
  CHECK(std::count(out2.begin(), out2.end(), '\n') < 40);  // no abort trace
  CHECK_FALSE(fs::exists(ckpts / "step-00000003"));
  CHECK(onebit::distill::CheckpointManager::check(good).empty());

  // Space again: the run resumes from the intact step-2 checkpoint and finishes.
  auto [rc3, out3] = run_train(args + " train.max_steps=4");
  INFO(out3);
  CHECK(rc3 == 0);
  CHECK_THAT(out3, OB_CONTAINS("resumed from"));
  CHECK_THAT(out3, OB_CONTAINS("step-00000002"));
  CHECK(fs::exists(ckpts / "step-00000004" / "manifest.json"));
}

namespace {

// Highest step with a complete checkpoint under DIR/checkpoints, and whether a checkpoint is
// being written right now (its temp folder exists).
std::pair<int64_t, bool> checkpoint_progress(const fs::path& dir) {
  int64_t best = -1;
  bool writing = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) writing = true;
    else if (name.rfind("step-", 0) == 0 && fs::exists(e.path() / "manifest.json", ec))
      best = std::max<int64_t>(best, std::stoll(name.substr(5)));
  }
  return {best, writing};
}

// Starts onebit-train ARGS (output to /dev/null) and SIGKILLs it once `due()` says so.
// Returns true when it was killed, false when it exited 0 first; fails the test on any other exit.
template <class Due>
bool run_until_killed(const std::vector<std::string>& args, Due due) {
  std::vector<char*> argv;
  const std::string exe = onebit::test::train_program();
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (due(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  INFO("exit status " << status);
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return false;
}

}  // namespace

TEST_CASE("onebit-train: 20 kill -9 (start-up, sampling, training, checkpoint writes), each resumed, "
          "end in the same student bit for bit",
          "[distill][faults]") {
  OB_TRAIN_OR_SKIP();
  onebit::test::TempDir dir("train_kill9");
  const std::string cfg = tiny_config(dir, tiny_teacher(dir));
  const std::vector<std::string> common = {"--config", cfg, "train.save_every=1", "train.keep_last=2",
                                           "train.max_steps=14"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  REQUIRE_FALSE(run_until_killed(with({"output_dir=" + dir.str("whole")}), [](double) { return false; }));

  // The interrupted run has its own sample cache, so sampling is cut short too.
  const auto cut_args = with({"output_dir=" + dir.str("cut"), "data.sample_dir=" + dir.str("cut_samples")});
  const fs::path cut = dir.path / "cut";
  std::mt19937 rng(1201);
  int kills = 0, in_write = 0;
  for (int i = 0; i < 20; ++i) {
    const int64_t done = checkpoint_progress(cut).first;
    bool killed = false;
    if (i < 3) {  // during start-up or sampling: a fixed moment early on
      const double at = 0.05 + 0.25 * i;
      killed = run_until_killed(cut_args, [&](double t) { return t > at; });
    } else if (i % 3 == 0) {  // while a checkpoint is being written
      killed = run_until_killed(cut_args, [&](double) { return checkpoint_progress(cut).second; });
      in_write += killed;
    } else {  // somewhere inside a training step, one or two checkpoints further on
      const int64_t target = done + 1 + static_cast<int64_t>(rng() % 2);
      const double extra_ms = static_cast<double>(rng() % 40);
      double seen = -1;
      killed = run_until_killed(cut_args, [&](double t) {
        if (seen < 0 && checkpoint_progress(cut).first >= target) seen = t;
        return seen >= 0 && (t - seen) * 1000 >= extra_ms;
      });
    }
    kills += killed;
  }
  REQUIRE_FALSE(run_until_killed(cut_args, [](double) { return false; }));
  CHECK(kills >= 15);   // most runs were really cut short (a run may finish before its kill)
  CHECK(in_write >= 3); // and several of them mid-way through writing a checkpoint
  const std::string a = onebit::io::read_file(dir.str("whole/student/model.safetensors"));
  const std::string b = onebit::io::read_file(dir.str("cut/student/model.safetensors"));
  CHECK(!a.empty());
  CHECK(a == b);
}
