#include <map>

#include "onebit/dist/grad_sync.h"
#include "onebit/dist/launch.h"
#include "tests/support.h"

namespace {
onebit::dist::EnvLookup env_of(std::map<std::string, std::string> m) {
  return [m](const std::string& k) -> std::optional<std::string> {
    auto it = m.find(k);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}
}  // namespace

TEST_CASE("launch: no variables = single process", "[dist]") {
  const auto info = onebit::dist::detect_launch(env_of({}));
  CHECK(info.source == "single");
  CHECK(info.rank == 0);
  CHECK(info.world_size == 1);
}

TEST_CASE("launch: torchrun variables", "[dist]") {
  const auto info = onebit::dist::detect_launch(env_of(
      {{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "1234"},
       {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}));
  CHECK(info.source == "torchrun");
  CHECK(info.rank == 3);
  CHECK(info.world_size == 8);
  CHECK(info.local_rank == 1);
  CHECK(info.master_addr == "node7");
  CHECK(info.master_port == 1234);
}

TEST_CASE("launch: SLURM variables and node lists", "[dist]") {
  const auto info = onebit::dist::detect_launch(env_of(
      {{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "5"}, {"SLURM_NODELIST", "gpu[03-04,07]"}}));
  CHECK(info.source == "slurm");
  CHECK(info.rank == 5);
  CHECK(info.world_size == 16);
  CHECK(info.local_rank == 5);
  CHECK(info.master_addr == "gpu03");
  CHECK(onebit::dist::first_slurm_host("a1,b2") == "a1");
  CHECK(onebit::dist::first_slurm_host("node[7]") == "node7");
}

TEST_CASE("launch: malformed variables are named", "[dist]") {
  CHECK_THROWS_WITH(onebit::dist::detect_launch(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})), OB_CONTAINS("RANK='x'"));
  CHECK_THROWS_WITH(onebit::dist::detect_launch(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}})),
                    OB_CONTAINS("outside world size 2"));
  CHECK_THROWS_WITH(onebit::dist::first_slurm_host("gpu[01-02"), OB_CONTAINS("unclosed"));
}

TEST_CASE("NoSync leaves values alone", "[dist]") {
  onebit::dist::NoSync s;
  CHECK(s.mean(2.5) == 2.5);
  CHECK(s.world_size() == 1);
}
