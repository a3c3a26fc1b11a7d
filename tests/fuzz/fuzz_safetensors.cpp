// Fuzz target: SafetensorsReader on one file (header validation, then every tensor's load).
#include <torch/torch.h>

#include "onebit/io/safetensors.h"
#include "tests/fuzz/fuzz_input.h"

ONEBIT_FUZZ_TARGET(safetensors) {
  const auto path = onebit::fuzz::fresh_scratch() / "model.safetensors";
  onebit::fuzz::write_bytes(path, std::string(reinterpret_cast<const char*>(data), size));
  return onebit::fuzz::expect_clean([&] {
    onebit::io::SafetensorsReader r(path.string());
    for (const auto& name : r.names()) {
      const auto t = r.load(name, torch::kFloat32);
      if (t.numel() != c10::multiply_integers(r.info(name).shape)) std::abort();
    }
  });
}
