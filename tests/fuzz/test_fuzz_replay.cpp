// The fuzz targets in the ordinary suite: each runs over its seed corpus (tests/fuzz/corpus/)
// and over deterministic mutations of it (byte flips, insertions, deletions, truncations,
// splices), so CI exercises every parser with broken input even without clang/libFuzzer
// (scripts/fuzz.sh does the coverage-guided runs). A target may reject input only with
// onebit::Error; any other exception fails the test, a crash fails the run.
#include <torch/torch.h>

#include <filesystem>
#include <random>

#include "tests/fuzz/fuzz_input.h"
#include "tests/io/test_util.h"
#include "tests/support.h"

namespace {

using Target = int (*)(const uint8_t*, size_t);

std::vector<std::string> seeds(const std::string& target) {
  std::vector<std::string> out;
  const auto dir = onebit::test::source_dir() / "tests" / "fuzz" / "corpus" / target;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(onebit::test::read_text(e.path().string()));
  std::sort(out.begin(), out.end());
  return out;
}

std::string mutate(std::string s, std::mt19937_64& rng, const std::vector<std::string>& pool) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int k = 0; k < edits; ++k) {
    const size_t at = s.empty() ? 0 : rng() % s.size();
    switch (rng() % 6) {
      case 0: if (!s.empty()) s[at] = static_cast<char>(s[at] ^ (1u << (rng() % 8))); break;      // bit flip
      case 1: if (!s.empty()) s[at] = static_cast<char>(rng()); break;                            // byte
      case 2: s.insert(at, 1, static_cast<char>("{}[]\":,0-9e \n\0\xff"[rng() % 16])); break;     // syntax byte
      case 3: if (!s.empty()) s.erase(at, 1 + rng() % 8); break;                                  // delete
      case 4: s.resize(at); break;                                                                // truncate
      default: {                                                                                  // splice
        const std::string& o = pool[rng() % pool.size()];
        if (!o.empty()) s.insert(at, o.substr(rng() % o.size(), 1 + rng() % 64));
      }
    }
  }
  return s;
}

void replay(const std::string& name, Target target, int mutations_per_seed) {
  const auto pool = seeds(name);
  REQUIRE(!pool.empty());
  std::mt19937_64 rng(20261201);
  size_t runs = 0;
  for (const auto& seed : pool) {
    std::vector<std::string> inputs{seed};
    for (int i = 0; i < mutations_per_seed; ++i) inputs.push_back(mutate(seed, rng, pool));
    for (const auto& in : inputs) {
      INFO(name << " input of " << in.size() << " bytes");
      CHECK_NOTHROW(target(reinterpret_cast<const uint8_t*>(in.data()), in.size()));
      ++runs;
    }
  }
  CHECK(runs == pool.size() * (1 + mutations_per_seed));
}

}  // namespace

TEST_CASE("fuzz replay: safetensors reader", "[fuzz][io]") { replay("safetensors", onebit::fuzz::safetensors, 2000); }
TEST_CASE("fuzz replay: config loader", "[fuzz][config]") { replay("config", onebit::fuzz::config, 600); }
TEST_CASE("fuzz replay: tokenizer.json and encode", "[fuzz][tokenizer]") { replay("tokenizer", onebit::fuzz::tokenizer, 150); }
TEST_CASE("fuzz replay: token dataset", "[fuzz][data]") { replay("token_dataset", onebit::fuzz::token_dataset, 3000); }
TEST_CASE("fuzz replay: eval task readers", "[fuzz][eval]") { replay("eval_tasks", onebit::fuzz::eval_tasks, 400); }
TEST_CASE("fuzz replay: packed model loader", "[fuzz][export]") { replay("packed_model", onebit::fuzz::packed_model, 300); }
