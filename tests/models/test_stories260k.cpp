// The real pretrained stories260K (../shared): greedy decoding from BOS gives the documented text.
#include <torch/torch.h>

#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/tokenizer/tokenizer.h"
#include "tests/references.h"
#include "tests/support.h"

using namespace onebit;

TEST_CASE("stories260K greedy decoding from BOS reproduces the documented story", "[models]") {
  OB_SHARED_OR_SKIP(dir, "models/stories260K");
  auto model = models::load_pretrained(dir.string());
  auto tok = tokenizer::load_tokenizer(dir.string());
  REQUIRE(tok->bos_id() == 1);
  models::GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 40;
  auto out = models::generate(*model, torch::tensor({tok->bos_id()}, torch::kLong).unsqueeze(0), o)[0];
  std::vector<int64_t> ids(out.data_ptr<int64_t>() + 1, out.data_ptr<int64_t>() + out.numel());
  const std::string text = tok->decode(ids);
  INFO(text);
  CHECK(text.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 0) ==
        0);
}
