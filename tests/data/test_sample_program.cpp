#include <cstdio>
#include <fstream>

#include "onebit/data/token_dataset.h"
#include "tests/data/tmpdir.h"
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
