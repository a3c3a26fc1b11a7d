// Fault injection on onebit-train (CPU, deterministic): a full disk while a checkpoint is
// written, kill -9 at many moments of a run (sampling, training, checkpoint writes), and
// SIGTERM/SIGUSR1 (a SLURM preemption or time limit), each time resumed with resume=auto.
// The run must never lose work or end differently.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "onebit/distill/checkpoint.h"
#include "onebit/util/stop_signals.h"
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

// Lines of a file another process is appending to (a partial last line does not count).
size_t complete_lines(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return static_cast<size_t>(std::count(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>(), '\n'));
}

// Starts onebit-train ARGS (stdout and stderr to `log`) and sends it `sig` once `due(seconds
// since start)` says so (once). Returns the exit status (128 + N when signal N ended it) and
// whether the signal was sent.
template <class Due>
std::pair<int, bool> run_signalled(const std::vector<std::string>& args, int sig, Due due,
                                   const std::string& log = "/dev/null") {
  std::vector<char*> argv;
  const std::string exe = onebit::test::train_program();
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  bool sent = false;
  while (::waitpid(pid, &status, sent ? 0 : WNOHANG) == 0) {
    if (due(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())) {
      ::kill(pid, sig);
      sent = true;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), sent};
}

// Starts onebit-train ARGS and SIGKILLs it once `due()` says so.
// Returns true when it was killed, false when it exited 0 first; fails the test on any other exit.
template <class Due>
bool run_until_killed(const std::vector<std::string>& args, Due due) {
  const auto [status, killed] = run_signalled(args, SIGKILL, due);
  if (killed) return true;
  INFO("exit status " << status);
  REQUIRE(status == 0);
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
                                           "train.max_steps=28"};  // room for 20 kills: a kill inside training skips 1-2 checkpoints
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
    if (i < 3) {  // during start-up or sampling: a fixed moment early on (a whole run can take
                  // only 0.5 s on a fast machine, so these stay well before its end)
      const double at = 0.03 + 0.08 * i;
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

TEST_CASE("onebit-train: SIGTERM and SIGUSR1 end the run after the step with a checkpoint and exit 128+signal; "
          "the same command resumes to the same student bit for bit",
          "[distill][faults]") {
  OB_TRAIN_OR_SKIP();
  onebit::test::TempDir dir("train_sigterm");
  const std::string cfg = tiny_config(dir, tiny_teacher(dir));
  // No periodic checkpoints: the one at the stop is the signal's.
  const std::vector<std::string> common = {"--config", cfg, "train.save_every=0", "train.max_steps=40"};
  auto with = [&](const std::string& out) {
    auto a = common;
    a.push_back("output_dir=" + dir.str(out));
    return a;
  };
  REQUIRE(run_signalled(with("whole"), SIGTERM, [](double) { return false; }).first == 0);

  const fs::path cut = dir.path / "cut";
  const std::string log = dir.str("cut.log");
  int64_t stopped_at = 0;
  for (const int sig : {SIGTERM, SIGUSR1}) {
    INFO(onebit::util::signal_name(sig));
    // Signalled once its metrics show 3 more steps than the previous run left.
    const size_t after = complete_lines(cut / "metrics.jsonl") + 3;
    std::chrono::steady_clock::time_point sent_at;
    const auto [status, sent] = run_signalled(
        with("cut"), sig,
        [&](double) {
          if (complete_lines(cut / "metrics.jsonl") < after) return false;
          sent_at = std::chrono::steady_clock::now();
          return true;
        },
        log);
    const double exit_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent_at).count();
    const std::string out = onebit::io::read_file(log);
    INFO(out);
    REQUIRE(sent);
    CHECK(status == 128 + sig);
    const auto steps = onebit::test::step_lines((cut / "metrics.jsonl").string());
    REQUIRE(steps.size() >= after);
    REQUIRE(steps.size() < 40);
    const int64_t last = steps.back()["step"].get<int64_t>();
    CHECK(last > stopped_at);
    stopped_at = last;
    char name[32];
    std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(last));
    CHECK(onebit::distill::CheckpointManager::check(cut / "checkpoints" / name).empty());
    CHECK_THAT(out, OB_CONTAINS(std::string("onebit-train: ") + onebit::util::signal_name(sig) + ": stopped after step " +
                                std::to_string(last) + " of 40, checkpoint "));
    CHECK_THAT(out, OB_CONTAINS("exit " + std::to_string(128 + sig) + "; the same command resumes"));
    CHECK(exit_s < 10);  // one tiny step and a checkpoint, far inside SLURM's 30 s KillWait
    WARN(onebit::util::signal_name(sig) << " at step " << last << ": exit " << status << " " << exit_s
                                        << " s after the signal");
  }
  const auto [status, sent] = run_signalled(with("cut"), SIGTERM, [](double) { return false; }, log);
  INFO(onebit::io::read_file(log));
  REQUIRE(status == 0);
  CHECK_THAT(onebit::io::read_file(log), OB_CONTAINS("at step " + std::to_string(stopped_at)));
  const std::string a = onebit::io::read_file(dir.str("whole/student/model.safetensors"));
  const std::string b = onebit::io::read_file(dir.str("cut/student/model.safetensors"));
  CHECK(!a.empty());
  CHECK(a == b);
}
