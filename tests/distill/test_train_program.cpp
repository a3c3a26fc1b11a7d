// onebit-train's bad-input messages (the program is run as a subprocess).
#include <array>
#include <cstdio>
#include <fstream>

#include "tests/data/tmpdir.h"
#include "tests/support.h"

namespace {

// Runs onebit-train with args; returns its exit status and stdout+stderr.
std::pair<int, std::string> run_train(const std::string& args) {
  const std::string cmd = (onebit::test::binary_dir() / "onebit-train").string() + " " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  while (p && std::fgets(buf.data(), buf.size(), p)) out += buf.data();
  const int rc = p ? ::pclose(p) : -1;
  return {rc, out};
}

}  // namespace

TEST_CASE("onebit-train: bad inputs give one clear message", "[distill]") {
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(onebit::test::binary_dir() / "onebit-train"),
                     "onebit-train not built (cmake --build build --target onebit-train)");
  onebit::test::TempDir dir("distill_program");
  const std::string cfg = dir.str("c.yaml");
  std::ofstream(cfg) << "model:\n  teacher: " << dir.str("missing") << "\noutput_dir: " << dir.str("run") << "\n";

  auto [rc1, typo] = run_train("--config " + cfg + " kd.aplha=1");
  CHECK(rc1 != 0);
  CHECK_THAT(typo, OB_CONTAINS("unknown key 'kd.aplha' (did you mean 'kd.alpha'?)"));

  auto [rc2, type] = run_train("--config " + cfg + " optim.lr=fast");
  CHECK(rc2 != 0);
  CHECK_THAT(type, OB_CONTAINS("optim.lr"));

  auto [rc3, missing] = run_train("--config " + cfg + " train.precision=fp32");
  CHECK(rc3 != 0);
  CHECK_THAT(missing, OB_CONTAINS("is not a Hugging Face model folder (no config.json)"));

  auto [rc4, help] = run_train("--help");
  CHECK(rc4 == 0);
  CHECK_THAT(help, OB_CONTAINS("--print-config"));
}
