// Fuzz target: loading a model folder, the packed onebit-export format above all
// (docs/deployment.md): config.json with its quantization_config, then model.safetensors with
// the packed signs, g, h and the dense tensors. Input: a uint16 size, then config.json and
// model.safetensors back to back (split_sized). A model that loads runs one forward.
#include <torch/torch.h>

#include "onebit/models/loader.h"
#include "onebit/models/param_shapes.h"
#include "tests/fuzz/fuzz_input.h"

ONEBIT_FUZZ_TARGET(packed_model) {
  auto parts = onebit::fuzz::split_sized(data, size, 2);
  const auto dir = onebit::fuzz::fresh_scratch();
  onebit::fuzz::write_bytes(dir / "config.json", parts[0]);
  onebit::fuzz::write_bytes(dir / "model.safetensors", parts[1]);
  return onebit::fuzz::expect_clean([&] {
    namespace m = onebit::models;
    const auto cfg = m::parse_model_config(parts[0], "config.json");
    // The harness's memory cap: a config may declare any size, and the loader builds the model
    // it declares before it reads a tensor, so inputs that describe more than 4M parameters
    // (16 MB in fp32) are not loaded.
    double params = 0;
    for (const auto& p : m::param_shapes(cfg)) {
      double n = 1;
      for (int64_t d : p.shape) n *= static_cast<double>(d);
      params += n;
    }
    if (params > (1 << 22) || cfg.num_hidden_layers > 64) return;
    auto model = m::load_pretrained(dir.string());
    torch::NoGradGuard no_grad;
    const int64_t vocab = cfg.vocab_size;
    const auto ids = torch::arange(std::min<int64_t>(vocab, 3), torch::kLong).remainder(vocab).unsqueeze(0);
    const auto out = model->forward(ids);
    if (out.logits.size(-1) != vocab) std::abort();
  });
}
