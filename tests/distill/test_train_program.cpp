// onebit-train run as a subprocess: bad-input messages, and short real runs in bf16 and fp16
// (with an exact resume of the fp16 loss scaler) on a tiny random LLaMA teacher.
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/distill/train_program.h"

using onebit::test::run_train;
using onebit::test::step_lines;
using onebit::test::tiny_config;
using onebit::test::tiny_teacher;

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

TEST_CASE("onebit-train: bf16 autocast runs end to end on a tiny teacher", "[distill]") {
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(onebit::test::binary_dir() / "onebit-train"),
                     "onebit-train not built (cmake --build build --target onebit-train)");
  onebit::test::TempDir dir("train_bf16");
  const std::string cfg = tiny_config(dir, tiny_teacher(dir));
  auto [rc, out] =
      run_train("--config " + cfg + " train.precision=bf16 train.max_steps=4 output_dir=" + dir.str("run"));
  INFO(out);
  REQUIRE(rc == 0);
  const auto lines = step_lines(dir.str("run/metrics.jsonl"));
  REQUIRE(lines.size() == 4);
  for (size_t i = 0; i < lines.size(); ++i) {
    CHECK(lines[i]["step"] == static_cast<int>(i + 1));
    CHECK(std::isfinite(lines[i]["loss"].get<double>()));
    CHECK(lines[i]["loss"].get<double>() > 0);
    CHECK(!lines[i]["skipped"].get<bool>());
    CHECK(!lines[i].contains("loss_scale"));  // fp16 only
  }
  CHECK(std::filesystem::exists(dir.path / "run" / "student" / "model.safetensors"));
  std::ifstream saved(dir.path / "run" / "config.yaml");
  std::stringstream text;
  text << saved.rdbuf();
  CHECK_THAT(text.str(), OB_CONTAINS("precision: \"bf16\""));
}

TEST_CASE("onebit-train: fp16 logs the loss scale and resumes it exactly", "[distill]") {
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(onebit::test::binary_dir() / "onebit-train"),
                     "onebit-train not built (cmake --build build --target onebit-train)");
  onebit::test::TempDir dir("train_fp16");
  const std::string cfg = tiny_config(dir, tiny_teacher(dir));
  // 2^24 overflows at first; growth every 2 finite steps: both show up in 6 steps.
  const std::string fp16 = " train.precision=fp16 train.loss_scale_init=16777216 train.loss_scale_growth_interval=2";
  auto [rc1, out1] = run_train("--config " + cfg + fp16 + " train.max_steps=6 output_dir=" + dir.str("whole"));
  INFO(out1);
  REQUIRE(rc1 == 0);
  auto [rc2, out2] = run_train("--config " + cfg + fp16 + " train.max_steps=3 output_dir=" + dir.str("cut"));
  INFO(out2);
  REQUIRE(rc2 == 0);
  auto [rc3, out3] = run_train("--config " + cfg + fp16 + " train.max_steps=6 output_dir=" + dir.str("cut"));
  INFO(out3);
  REQUIRE(rc3 == 0);
  CHECK_THAT(out3, OB_CONTAINS("resumed from"));

  const auto whole = step_lines(dir.str("whole/metrics.jsonl"));
  const auto cut = step_lines(dir.str("cut/metrics.jsonl"));
  REQUIRE(whole.size() == cut.size());
  bool overflowed = false;
  for (size_t i = 0; i < whole.size(); ++i) {
    INFO("line " << i << ": " << whole[i].dump() << " vs " << cut[i].dump());
    REQUIRE(whole[i].contains("loss_scale"));
    CHECK(whole[i]["step"] == cut[i]["step"]);
    CHECK(whole[i]["loss"].get<double>() == cut[i]["loss"].get<double>());
    CHECK(whole[i]["loss_scale"].get<double>() == cut[i]["loss_scale"].get<double>());
    CHECK(whole[i]["overflow"] == cut[i]["overflow"]);
    overflowed = overflowed || whole[i]["overflow"].get<bool>();
  }
  CHECK(overflowed);
  CHECK(whole.back()["step"] == 6);
}

