// onebit-sample as a program: sampling stories260K, resuming, refusing other settings, and
// kill -9 at random moments, each resumed, ending in the same dataset.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "onebit/data/token_dataset.h"
#include "onebit/models/loader.h"
#include "tests/data/tmpdir.h"
#include "tests/dist/spawn.h"
#include "tests/models/tiny.h"
#include "tests/support.h"

using onebit::test::TempDir;

namespace {
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
}  // namespace

TEST_CASE("onebit-sample: samples stories260K, resumes, refuses other settings", "[data]") {
  OB_SHARED_OR_SKIP(model, "models/stories260K");
  const auto exe = onebit::test::binary_dir() / "onebit-sample";
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(exe), "needs the onebit-sample program built (" + exe.string() + ")");
  TempDir tmp("sample_program");
  const std::string base = exe.string() + " --model " + model.string() + " --out " + tmp.str("ds") +
                           " --max-length 12 --batch-size 4 --seed 5 --device cpu --threads 1 --quiet";
  auto [rc, out] = run(base + " --num-samples 6");
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("wrote 6 samples") != std::string::npos);
  const auto six = onebit::data::TokenDataset::open(tmp.str("ds"));
  CHECK(six.size() == 6);
  CHECK(six.vocab_size() == 512);
  CHECK(six.generator().at("dtype") == "fp32");

  std::tie(rc, out) = run(base + " --num-samples 10");
  REQUIRE(rc == 0);
  CHECK(out.find("wrote 10 samples") != std::string::npos);
  CHECK(out.find("6 were already there") != std::string::npos);
  const auto ten = onebit::data::TokenDataset::open(tmp.str("ds"));
  for (int64_t i = 0; i < 6; ++i) CHECK(ten.sample(i) == six.sample(i));

  std::tie(rc, out) = run(base + " --num-samples 10 --temperature 0.5");
  CHECK(rc == 1);
  CHECK(out.find("onebit-sample: error:") != std::string::npos);
  CHECK(out.find("cannot resume: existing samples were made with temperature=1, this run asks for temperature=0.5") !=
        std::string::npos);

  std::tie(rc, out) = run(exe.string() + " --model /nonexistent --out " + tmp.str("x") + " --num-samples 1 --device cpu");
  CHECK(rc == 1);
  CHECK(out.find("onebit-sample: error:") != std::string::npos);
}

namespace {

// Samples committed in dataset folder `dir` (its index.json), 0 before the first commit.
int64_t committed_samples(const std::string& dir) {
  std::ifstream f(dir + "/index.json");
  const auto j = nlohmann::json::parse(f, nullptr, false);
  return j.is_discarded() ? 0 : j.value("num_samples", int64_t(0));
}

std::string file_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("onebit-sample: 12 kill -9 at random moments, each resumed, end in the same dataset byte for byte",
          "[data][faults]") {
  const auto exe = onebit::test::binary_dir() / "onebit-sample";
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(exe), "needs the onebit-sample program built (" + exe.string() + ")");
  TempDir tmp("sample_kill9");
  // A tiny random LLaMA: its EOS (id 2) ends rows at different lengths.
  torch::manual_seed(5);
  onebit::models::save_pretrained(onebit::models::build_model(onebit::test::tiny_llama_config()), tmp.str("model"));
  const int64_t n = 120, batch = 2;  // 60 commits of one batch
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{exe.string(), "--model", tmp.str("model"), "--out", tmp.str(out), "--num-samples",
                                    std::to_string(n), "--max-length", "16", "--batch-size", std::to_string(batch),
                                    "--seed", "11", "--device", "cpu", "--threads", "1", "--quiet"};
  };
  const std::map<std::string, std::string> env = {{"OMP_NUM_THREADS", "1"}};
  constexpr double kRunTimeoutS = 120;
  {
    onebit::test::Child whole(args("whole"), env, tmp.str("whole.log"));
    const int rc = whole.wait(kRunTimeoutS);
    INFO(whole.output());
    REQUIRE(rc == 0);
  }

  // Each run is killed once the dataset has grown by 1-3 batches past what the previous runs
  // left, then 0-20 ms later: mid-generation, mid-append or mid-commit.
  std::mt19937 rng(1601);
  int kills = 0;
  std::vector<int64_t> at;
  for (int i = 0; i < 12; ++i) {
    const int64_t target = committed_samples(tmp.str("cut")) + batch * int64_t(1 + rng() % 3);
    const auto extra = std::chrono::milliseconds(rng() % 21);
    onebit::test::Child cut(args("cut"), env, tmp.str("cut.log"));
    const auto t0 = std::chrono::steady_clock::now();
    while (cut.running() && committed_samples(tmp.str("cut")) < target &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(extra);
    if (!cut.running()) break;  // finished before its kill
    cut.kill();
    ++kills;
    at.push_back(committed_samples(tmp.str("cut")));
  }
  onebit::test::Child rest(args("cut"), env, tmp.str("rest.log"));
  const int rc = rest.wait(kRunTimeoutS);
  INFO(rest.output());
  REQUIRE(rc == 0);
  std::string where;
  for (auto a : at) where += " " + std::to_string(a);
  WARN(kills << " kills, at committed sample counts" << where);
  CHECK(kills == 12);
  REQUIRE(!at.empty());
  CHECK(at.back() < n);  // the last restart still had work to do
  const auto ds = onebit::data::TokenDataset::open(tmp.str("cut"));
  CHECK(ds.size() == n);  // none lost, none twice
  for (const char* f : {"tokens.bin", "offsets.bin", "index.json"}) {
    INFO(f);
    CHECK(file_bytes(tmp.str("whole/") + f) == file_bytes(tmp.str("cut/") + f));
  }
}
