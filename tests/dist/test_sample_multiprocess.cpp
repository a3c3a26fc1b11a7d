// onebit-sample on 1, 2 and 3 processes (Gloo on 127.0.0.1, CPU, fp32): one dataset, byte for
// byte the same, also when a run at one world size is extended at another.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "onebit/data/token_dataset.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/models/loader.h"
#include "tests/data/tmpdir.h"
#include "tests/dist/spawn.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using onebit::test::Child;

namespace {

constexpr double kRunTimeoutS = 120;  // a few seconds each on 2 busy cores

std::string sample_exe() { return (onebit::test::binary_dir() / "onebit-sample").string(); }

std::string bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// onebit-sample of `model` into `out` on `world` processes (1: no launch variables); all must succeed.
void sample(int world, const std::string& model, const std::string& out, int64_t num_samples,
            const onebit::test::TempDir& dir) {
  const std::vector<std::string> args = {sample_exe(), "--model", model, "--out", out, "--num-samples",
                                         std::to_string(num_samples), "--max-length", "24", "--batch-size", "3",
                                         "--seed", "11", "--device", "cpu", "--quiet", "--dist-timeout", "60"};
  const int port = onebit::test::free_port();
  std::vector<std::unique_ptr<Child>> ranks;
  for (int r = 0; r < world; ++r) {
    const auto env = world == 1 ? std::map<std::string, std::string>{{"OMP_NUM_THREADS", "1"}}
                                : onebit::test::rank_env(r, world, port);
    ranks.push_back(std::make_unique<Child>(args, env, dir.str("w" + std::to_string(world) + "r" + std::to_string(r) + ".log")));
  }
  for (auto& c : ranks) {
    const int rc = c->wait(kRunTimeoutS);
    INFO(world << " processes:\n" << c->output());
    REQUIRE(rc == 0);
  }
}

void check_same_files(const fs::path& a, const fs::path& b) {
  for (const char* f : {"tokens.bin", "offsets.bin", "index.json"}) {
    INFO(f << ": " << a.string() << " vs " << b.string());
    CHECK(bytes(a / f) == bytes(b / f));
  }
}

}  // namespace

TEST_CASE("onebit-sample: 1, 2 and 3 processes write the same dataset, byte for byte", "[dist]") {
  OB_REQUIRE_OR_SKIP(fs::exists(sample_exe()) && onebit::dist::backend_compiled("gloo"),
                     "needs build/onebit-sample and the gloo headers (apt-get install libgloo-dev)");
  onebit::test::TempDir dir("sample_dp");
  // A tiny random LLaMA: its EOS (id 2) ends rows at different lengths.
  torch::manual_seed(5);
  onebit::models::save_pretrained(onebit::models::build_model(onebit::test::tiny_llama_config()), dir.str("model"));

  // 13 samples = 5 batches of 3: rounds of 2 and 3 ranks end with idle ranks and a partial batch.
  sample(1, dir.str("model"), dir.str("one"), 13, dir);
  sample(2, dir.str("model"), dir.str("two"), 13, dir);
  sample(3, dir.str("model"), dir.str("three"), 13, dir);
  const auto ds = onebit::data::TokenDataset::open(dir.str("one"));
  REQUIRE(ds.size() == 13);
  int64_t short_rows = 0;
  for (int64_t i = 0; i < ds.size(); ++i) short_rows += ds.length(i) < 24;
  CHECK(short_rows > 0);  // some rows stopped at EOS (and left the batch)
  CHECK(short_rows < ds.size());
  check_same_files(dir.path / "one", dir.path / "two");
  check_same_files(dir.path / "one", dir.path / "three");

  // Resumable across world sizes: 7 samples on 2 processes, extended to 13 on 3.
  sample(2, dir.str("model"), dir.str("grown"), 7, dir);
  CHECK(onebit::data::TokenDataset::open(dir.str("grown")).size() == 7);
  sample(3, dir.str("model"), dir.str("grown"), 13, dir);
  check_same_files(dir.path / "one", dir.path / "grown");
}
