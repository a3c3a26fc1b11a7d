// onebit-train's bad-input messages (the program is run as a subprocess).
#include <array>
#include <cstdio>
#include <fstream>

#include "tests/data/tmpdir.h"
#include "tests/support.h"

namespace {

// Runs onebit-train with args; returns its exit status and stdout+stderr.
std::pair<int, std::string> run_train(const std::string& args) {
  const std::string cmd = (onebit::test::binary_dir() / "onebit-train").string() + " " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  while (p && std::fgets(buf.data(), buf.size(), p)) out += buf.data();
  const int rc = p ? ::pclose(p) : -1;
  return {rc, out};
}

}  // namespace

TEST_CASE("onebit-train: bad inputs give one clear message", "[distill]") {
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(onebit::test::binary_dir() / "onebit-train"),
                     "onebit-train not built (cmake --build build --target onebit-train)");
  onebit::test::TempDir dir("distill_program");
  const std::string cfg = dir.str("c.yaml");
  std::ofstream(cfg) << "model:\n  teacher: " << dir.str("missing") << "\noutput_dir: " << dir.str("run") << "\n";

  auto [rc1, typo] = run_train("--config " + cfg + " kd.aplha=1");
  CHECK(rc1 != 0);
  CHECK_THAT(typo, OB_CONTAINS("unknown key 'kd.aplha' (did you mean 'kd.alpha'?)"));

  auto [rc2, type] = run_train("--config " + cfg + " optim.lr=fast");
  CHECK(rc2 != 0);
  CHECK_THAT(type, OB_CONTAINS("optim.lr"));

  auto [rc3, missing] = run_train("--config " + cfg + " train.precision=fp32");
  CHECK(rc3 != 0);
  CHECK_THAT(missing, OB_CONTAINS("is not a Hugging Face model folder (no config.json)"));

  auto [rc4, help] = run_train("--help");
  CHECK(rc4 == 0);
  CHECK_THAT(help, OB_CONTAINS("--print-config"));
}

TEST_CASE("onebit-train: a rerun with another teacher or student recipe refuses the old checkpoint", "[distill]") {
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(onebit::test::binary_dir() / "onebit-train"),
                     "onebit-train not built (cmake --build build --target onebit-train)");
  onebit::test::TempDir dir("distill_rerun");
  const std::string cfg = dir.str("tiny.yaml");
  std::ofstream(cfg) << "output_dir: " << dir.str("run") << R"(
model: {teacher: embedded, dtype: fp32, device: cpu}
embedded: {hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2, num_kv_heads: 1,
           train_tokens: 2048, batch_size: 8, seq_len: 32}
data: {num_samples: 8, sample_length: 32, sample_batch: 8, seq_len: 32, batch_size: 2}
optim: {warmup_steps: 0}
train: {max_steps: 2, precision: fp32, save_every: 0, eval_seq_len: 32}
)";
  auto [rc1, first] = run_train("--config " + cfg);
  REQUIRE(rc1 == 0);
  CHECK_THAT(first, OB_CONTAINS("OneBit student"));
  CHECK(std::filesystem::exists(dir.path / "run/checkpoints/step-00000002/manifest.json"));

  // Same recipe, longer: resumes.
  auto [rc2, longer] = run_train("--config " + cfg + " train.max_steps=3");
  CHECK(rc2 == 0);
  CHECK_THAT(longer, OB_CONTAINS("at step 2"));

  // Another teacher recipe: refused before the teacher is retrained, naming the key.
  auto [rc3, other] = run_train("--config " + cfg + " embedded.hidden_size=16 train.max_steps=4");
  CHECK(rc3 != 0);
  CHECK_THAT(other, OB_CONTAINS("belongs to a different run (embedded.hidden_size: was 32, now 16)"));
  CHECK_THAT(other, OB_CONTAINS("train.resume=never"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "run/checkpoints/step-00000004"));
}
