// onebit-train --dry-run: every paper recipe of configs/ plans against its published
// config.json (configs/models), the JSON matches the table, and a plan that does not fit
// says so (exit 3) with what would make it fit.
#include <filesystem>
#include <regex>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/data/tmpdir.h"
#include "tests/support.h"

namespace fs = std::filesystem;

namespace {
std::pair<int, std::string> dry_run(const std::string& args) {
  return onebit::test::run_shell((onebit::test::binary_dir() / "onebit-train").string() + " --dry-run " + args +
                                 " 2>&1");
}
// Paper recipes (teacher placeholder /path/to/<name>) and the configs/models folder of each.
const std::map<std::string, std::string> kRecipeModel = {
    {"llama7b.yaml", "llama-7b"},      {"llama13b.yaml", "llama-13b"}, {"llama2-7b.yaml", "llama-2-7b"},
    {"llama2-13b.yaml", "llama-2-13b"}, {"opt-1.3b.yaml", "opt-1.3b"},  {"opt-2.7b.yaml", "opt-2.7b"},
    {"smollm2-135m.yaml", "smollm2-135m"}};
// The GPUs each recipe is written for.
const std::map<std::string, int> kRecipeGpus = {{"llama7b.yaml", 8},   {"llama13b.yaml", 16}, {"llama2-7b.yaml", 8},
                                                {"llama2-13b.yaml", 16}, {"opt-1.3b.yaml", 8},  {"opt-2.7b.yaml", 8},
                                                {"smollm2-135m.yaml", 1}};
}  // namespace

TEST_CASE("onebit-train --dry-run: every paper recipe plans against configs/models", "[plan][program]") {
  const fs::path src = onebit::test::source_dir();
  onebit::test::TempDir dir("dry_run");
  int recipes = 0;
  for (const auto& e : fs::directory_iterator(src / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("/path/to/") == std::string::npos) continue;  // not a paper recipe
    const std::string name = e.path().filename().string();
    INFO(name);
    REQUIRE(kRecipeModel.count(name));  // a new recipe needs its model folder here
    const std::string json = dir.str(name + ".json");
    const auto [rc, out] = dry_run("--config " + e.path().string() + " model.teacher=" +
                                   (src / "configs/models" / kRecipeModel.at(name)).string() +
                                   " --gpu-memory 1TiB --json " + json);
    INFO(out);
    CHECK(rc == 0);
    CHECK_THAT(out, OB_CONTAINS("parameters: "));
    CHECK_THAT(out, OB_CONTAINS("fits in 1024.00 GiB per GPU"));
    const auto j = nlohmann::json::parse(onebit::test::run_shell("cat " + json).second);
    CHECK(j["fit"]["fits"] == true);
    CHECK(j["run"]["steps"].get<int64_t>() > 0);
    // As shipped, on the GPUs its comment names (the paper's: 8, 16 for 13B), each 80 GB.
    const auto gpus = kRecipeGpus.at(name);
    const auto [rc80, out80] = dry_run("--config " + e.path().string() + " model.teacher=" +
                                       (src / "configs/models" / kRecipeModel.at(name)).string() +
                                       " --gpu-memory 80GB --world-size " + std::to_string(gpus));
    INFO(out80);
    CHECK(rc80 == 0);
    CHECK_THAT(out80, OB_CONTAINS("world size " + std::to_string(gpus)));
    ++recipes;
  }
  CHECK(recipes == static_cast<int>(kRecipeModel.size()));
}

TEST_CASE("onebit-train --dry-run: the embedded quickstart teacher, a plan that does not fit", "[plan][program]") {
  const fs::path src = onebit::test::source_dir();
  auto [rc, out] = dry_run("--config " + (src / "configs/quickstart.yaml").string());
  CHECK(rc == 0);
  CHECK_THAT(out, OB_CONTAINS("model: llama, 4 layers, hidden 128"));

  std::tie(rc, out) = dry_run("--config " + (src / "configs/llama7b.yaml").string() + " model.teacher=" +
                              (src / "configs/models/llama-7b").string() + " --gpu-memory 80GB");
  CHECK(rc == 3);
  CHECK_THAT(out, OB_CONTAINS("does NOT fit in 74.51 GiB per GPU"));
  // The fewest GPUs (doubling) with full sharding that fit, and half as many do not.
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex(R"(try (\d+) GPUs with dist.sharding=full: [0-9.]+ GiB \(fits\))")));
  const int gpus = std::stoi(m[1]);
  CHECK(gpus >= 2);
  if (gpus > 2) {
    const auto [rc_half, out_half] =
        dry_run("--config " + (src / "configs/llama7b.yaml").string() + " model.teacher=" +
                (src / "configs/models/llama-7b").string() + " --gpu-memory 80GB dist.sharding=full --world-size " +
                std::to_string(gpus / 2));
    CHECK(rc_half == 3);
  }

  std::tie(rc, out) = dry_run("--config " + (src / "configs/llama7b.yaml").string() + " model.teacher=" +
                              (src / "configs/models/llama-7b").string() +
                              " --gpu-memory 80GB --world-size 8 dist.sharding=full");
  CHECK(rc == 0);
  CHECK_THAT(out, OB_CONTAINS("fits in 74.51 GiB per GPU"));

  std::tie(rc, out) = dry_run("--config " + (src / "configs/llama7b.yaml").string() + " --gpu-memory 80GB");
  CHECK(rc == 1);
  CHECK_THAT(out, OB_CONTAINS("/path/to/llama-7b/config.json"));
  std::tie(rc, out) = dry_run("--config " + (src / "configs/llama7b.yaml").string() + " --gpu-memory lots");
  CHECK(rc == 1);
  CHECK_THAT(out, OB_CONTAINS("memory size 'lots' is not a size"));
}
