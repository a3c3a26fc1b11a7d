// Progressive replacement (student.progressive_steps): the schedule, the student's forward
// against the teacher's (layers not yet replaced give the teacher's hidden states exactly), and
// the trainer (a layer not yet replaced keeps its W, g, h; finish() leaves every layer 1-bit).
#include <torch/torch.h>

#include <string>

#include "onebit/config/train_config.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/distill/progressive.h"
#include "onebit/distill/trainer.h"
#include "onebit/models/model_config.h"
#include "onebit/nn/onebit_linear.h"
#include "tests/distill/tiny_trainer.h"
#include "tests/support.h"

namespace {

using onebit::distill::ProgressiveReplacement;

onebit::models::ModelConfig four_layers() {
  return onebit::models::parse_model_config(R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
      "intermediate_size": 48, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false})");
}

std::vector<torch::Tensor> hidden_states(onebit::models::CausalLMImpl& m, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  onebit::models::ForwardArgs args;
  args.output_hidden_states = true;
  return m.forward(ids, args).hidden_states;
}

int count_stand_ins(onebit::models::CausalLMImpl& m) {
  int n = 0;
  for (const auto& mod : m.modules(false))
    if (auto* l = dynamic_cast<onebit::nn::OneBitLinearImpl*>(mod.get())) n += l->has_stand_in();
  return n;
}

}  // namespace

TEST_CASE("progressive replacement: layer i of L turns 1-bit at step floor(i*N/L), in either order", "[distill]") {
  auto s = onebit::test::make_trainer_setup(four_layers());
  ProgressiveReplacement fwd(*s.teacher, *s.student, 8, "first_to_last");
  ProgressiveReplacement rev(*s.teacher, *s.student, 8, "last_to_first");
  ProgressiveReplacement odd(*s.teacher, *s.student, 3, "first_to_last");
  const std::vector<int64_t> f = {0, 2, 4, 6}, r = {6, 4, 2, 0}, o = {0, 0, 1, 2};
  for (int64_t i = 0; i < 4; ++i) {
    CHECK(fwd.first_step(i) == f[i]);
    CHECK(rev.first_step(i) == r[i]);
    CHECK(odd.first_step(i) == o[i]);
  }
  // 7 linears per LLaMA layer: apply() sets a stand-in on each linear of each full-precision layer.
  CHECK(fwd.apply(0) == 1);
  CHECK(count_stand_ins(*s.student) == 3 * 7);
  CHECK(fwd.apply(5) == 3);
  CHECK(count_stand_ins(*s.student) == 7);
  CHECK(fwd.apply(6) == 4);
  CHECK(count_stand_ins(*s.student) == 0);
  CHECK(fwd.apply(1) == 1);  // a function of the step: going back restores the stand-ins
  CHECK(count_stand_ins(*s.student) == 3 * 7);
  CHECK_THROWS_WITH(ProgressiveReplacement(*s.teacher, *s.student, 8, "random"), OB_CONTAINS("first_to_last"));
}

TEST_CASE("progressive replacement: a layer not yet replaced computes exactly the teacher's layer", "[distill]") {
  auto s = onebit::test::make_trainer_setup(four_layers());
  const auto teacher = hidden_states(*s.teacher, s.batch);
  const auto onebit = hidden_states(*s.student, s.batch);  // every layer 1-bit
  ProgressiveReplacement rev(*s.teacher, *s.student, 8, "last_to_first");
  rev.apply(0);  // layers 0-2 are the teacher's, layer 3 is 1-bit
  const auto mixed = hidden_states(*s.student, s.batch);
  // hidden_states[i] is layer i-1's output: the first three layers' outputs are the teacher's.
  for (int i = 0; i <= 3; ++i) CHECK(torch::equal(mixed[i], teacher[i]));
  CHECK_FALSE(torch::allclose(mixed[4], teacher[4], 1e-3, 1e-3));
  ProgressiveReplacement fwd(*s.teacher, *s.student, 8, "first_to_last");
  fwd.apply(0);  // layer 0 1-bit: its output is the all-1-bit student's, the next ones are not
  const auto first = hidden_states(*s.student, s.batch);
  CHECK(torch::equal(first[1], onebit[1]));
  CHECK_FALSE(torch::allclose(first[1], teacher[1], 1e-3, 1e-3));
  fwd.apply(8);  // all 1-bit again
  const auto back = hidden_states(*s.student, s.batch);
  for (size_t i = 0; i < back.size(); ++i) CHECK(torch::equal(back[i], onebit[i]));
}

TEST_CASE("progressive replacement in training: layers wait their turn, finish() leaves all 1-bit, bad settings fail",
          "[distill]") {
  auto s = onebit::test::make_trainer_setup(four_layers());
  s.cfg.student.progressive_steps = 8;  // layers 1-bit from steps 0, 2, 4, 6
  s.cfg.optim.weight_decay = 0;         // a layer without gradients then stays exactly as it was
  onebit::dist::NoSync sync;
  onebit::distill::Trainer tr(s.cfg, s.teacher, s.student, [&] { return s.batch; }, sync, 10);
  const auto init = tr.trainable();
  std::map<std::string, torch::Tensor> start;
  for (const auto& [name, t] : init) start.emplace(name, t.detach().clone());
  auto moved = [&](const std::string& layer) {
    int n = 0, changed = 0;
    for (const auto& [name, t] : tr.trainable()) {
      if (name.find("layers." + layer + ".") == std::string::npos) continue;
      ++n;
      changed += !torch::equal(t, start.at(name));
    }
    REQUIRE(n == 7 * 3);  // W, g, h of 7 linears
    return changed;
  };
  for (int i = 0; i < 3; ++i) tr.step();  // steps 0, 1, 2: layers 0 and (from step 2) 1 train
  CHECK(moved("0") == 21);
  CHECK(moved("1") > 0);
  CHECK(moved("2") == 0);
  CHECK(moved("3") == 0);
  CHECK(count_stand_ins(*s.student) == 2 * 7);
  for (int i = 0; i < 4; ++i) tr.step();  // through step 6
  CHECK(moved("3") > 0);
  CHECK(count_stand_ins(*s.student) == 0);
  tr.step();
  tr.finish();
  CHECK(count_stand_ins(*s.student) == 0);

  auto t = onebit::test::make_trainer_setup(four_layers());
  t.cfg.student.progressive_steps = 10;
  CHECK_THROWS_WITH(onebit::distill::Trainer(t.cfg, t.teacher, t.student, [&] { return t.batch; }, sync, 5),
                    OB_CONTAINS("student.progressive_steps=10 keeps a decoder layer full precision until step 7"));
  onebit::config::TrainConfig c;
  c.model.teacher = "embedded";
  c.student.progressive_steps = 100;
  c.dist.shard_teacher = true;
  CHECK_THROWS_WITH(c.validate(), OB_CONTAINS("student.progressive_steps"));
  c.dist.shard_teacher = false;
  c.student.progressive_order = "backwards";
  CHECK_THROWS_WITH(c.validate(), OB_CONTAINS("student.progressive_order"));
}
