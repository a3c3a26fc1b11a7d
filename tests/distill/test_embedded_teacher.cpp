// The quickstart's embedded teacher: pretraining learns, the folder loads, reruns reuse it.
#include <torch/torch.h>

#include <filesystem>

#include "onebit/core/error.h"
#include "onebit/data/synthetic_language.h"
#include "onebit/distill/embedded_teacher.h"
#include "onebit/eval/perplexity.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/data/tmpdir.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

// A few thousand tokens on a very small LLaMA: fast, and enough for the loss to fall.
config::EmbeddedCfg tiny_cfg() {
  config::EmbeddedCfg c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.train_tokens = 8192;
  c.batch_size = 8;
  c.seq_len = 64;
  c.lr = 1e-2;
  c.seed = 7;
  return c;
}

constexpr int64_t kHeldoutDocs = 12;
constexpr double kMinLossDrop = 0.5;  // nats: from ~ln(370) = 5.9 at init

}  // namespace

TEST_CASE("embedded teacher: pretrains, saves a loadable folder, reruns reuse it", "[quickstart]") {
  test::TempDir tmp("embedded_teacher");
  const auto cfg = tiny_cfg();
  const auto r = distill::ensure_embedded_teacher(cfg, tmp.str(), torch::kCPU, false, kHeldoutDocs);
  CHECK_FALSE(r.reused);
  CHECK(r.steps == 16);  // 8192 tokens / (8 · 64)
  CHECK(r.first_loss > r.last_loss + kMinLossDrop);
  CHECK(r.dir == tmp.str("teacher"));

  auto m = models::load_pretrained(r.dir);
  CHECK(m->config().model_type == "llama");
  CHECK(m->config().vocab_size == data::synthetic::vocab_size());
  CHECK(m->config().hidden_size == 32);
  CHECK(m->config().num_hidden_layers == 2);
  CHECK(m->config().bos_token_id == data::synthetic::kBosId);
  CHECK(m->config().eos_token_id == data::synthetic::kEosId);
  torch::NoGradGuard ng;
  const auto ids = torch::tensor({data::synthetic::kBosId, int64_t(5), int64_t(9)}).unsqueeze(0);
  CHECK(m->forward(ids).logits.sizes() == torch::IntArrayRef({1, 3, data::synthetic::vocab_size()}));

  // The tokenizer folder and the held-out text: stories of another seed, readable as docs.
  auto tok = tokenizer::load_tokenizer(r.dir);
  const auto docs = eval::read_documents(r.heldout_text, eval::PplProtocol::Docs);
  REQUIRE(docs.size() == static_cast<size_t>(kHeldoutDocs));
  CHECK(docs[0] != data::synthetic::generate_document(cfg.seed, 0));
  // The pretrained teacher beats uniform guessing on held-out text.
  eval::PplOptions po;
  po.protocol = eval::PplProtocol::Docs;
  po.seq_len = 64;
  po.progress = false;
  m->eval();
  CHECK(eval::perplexity(*m, *tok, docs, po).ppl < 0.5 * static_cast<double>(data::synthetic::vocab_size()));

  // Rerun: same settings reuse the folder untouched; other settings pretrain again.
  const auto stamp = fs::last_write_time(fs::path(r.dir) / "model.safetensors");
  const auto again = distill::ensure_embedded_teacher(cfg, tmp.str(), torch::kCPU, false, kHeldoutDocs);
  CHECK(again.reused);
  CHECK(again.steps == 0);
  CHECK(fs::last_write_time(fs::path(r.dir) / "model.safetensors") == stamp);
  auto other = cfg;
  other.train_tokens = 4096;
  CHECK_FALSE(distill::ensure_embedded_teacher(other, tmp.str(), torch::kCPU, false, kHeldoutDocs).reused);
}

TEST_CASE("embedded teacher: bad budget is refused with the key", "[quickstart]") {
  test::TempDir tmp("embedded_teacher_bad");
  auto cfg = tiny_cfg();
  cfg.train_tokens = 0;
  CHECK_THROWS_WITH(distill::ensure_embedded_teacher(cfg, tmp.str(), torch::kCPU, false),
                    OB_CONTAINS("embedded.train_tokens must be > 0"));
}
