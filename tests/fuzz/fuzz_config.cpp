// Fuzz target: the training config loader. Input: YAML text, then NUL-separated key=value
// overrides.
#include "onebit/config/train_config.h"
#include "tests/fuzz/fuzz_input.h"

ONEBIT_FUZZ_TARGET(config) {
  auto parts = onebit::fuzz::split_input(data, size, 4);
  const std::string yaml = parts[0];
  std::vector<std::string> overrides;
  for (size_t i = 1; i < parts.size(); ++i)
    if (!parts[i].empty()) overrides.push_back(parts[i]);
  return onebit::fuzz::expect_clean([&] {
    const auto cfg = onebit::config::parse_train_config(yaml, overrides, "fuzz.yaml");
    // A config that loads must print and re-load to itself.
    if (onebit::config::parse_train_config(cfg.to_yaml(), {}, "fuzz-roundtrip.yaml").to_yaml() != cfg.to_yaml())
      std::abort();
  });
}
