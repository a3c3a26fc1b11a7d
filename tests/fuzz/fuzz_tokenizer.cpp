// Fuzz target: tokenizer.json parsing and encode/decode. Input: tokenizer.json, NUL, then
// the text to encode (any bytes: invalid UTF-8 included).
#include "onebit/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

ONEBIT_FUZZ_TARGET(tokenizer) {
  auto parts = onebit::fuzz::split_input(data, size, 2);
  const auto dir = onebit::fuzz::fresh_scratch();
  onebit::fuzz::write_bytes(dir / "tokenizer.json", parts[0]);
  return onebit::fuzz::expect_clean([&] {
    auto tok = onebit::tokenizer::load_tokenizer(dir.string());
    const auto ids = tok->encode(parts[1]);
    for (int64_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) std::abort();  // ids the model can embed
    (void)tok->decode(ids);
  });
}
