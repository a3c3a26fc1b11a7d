// Fuzz target: the token-dataset index and its binary files. Input: two uint16 sizes, then
// index.json, tokens.bin and offsets.bin back to back (split_sized).
#include "onebit/data/token_dataset.h"
#include "tests/fuzz/fuzz_input.h"

ONEBIT_FUZZ_TARGET(token_dataset) {
  auto parts = onebit::fuzz::split_sized(data, size, 3);
  const auto dir = onebit::fuzz::fresh_scratch();
  onebit::fuzz::write_bytes(dir / "index.json", parts[0]);
  onebit::fuzz::write_bytes(dir / "tokens.bin", parts[1]);
  onebit::fuzz::write_bytes(dir / "offsets.bin", parts[2]);
  return onebit::fuzz::expect_clean([&] {
    const auto ds = onebit::data::TokenDataset::open(dir.string());
    int64_t total = 0;
    for (int64_t i = 0; i < ds.size(); ++i) {
      for (int64_t id : ds.sample(i))
        if (id < 0 || id >= ds.vocab_size()) std::abort();
      total += ds.length(i);
    }
    if (total != ds.num_tokens()) std::abort();
  });
}
