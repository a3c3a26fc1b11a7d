#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "onebit/dist/grad_sync.h"
#include "onebit/dist/launch.h"
#include "tests/data/tmpdir.h"
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

// Expected lists as `scontrol show hostnames` prints them (SLURM's hostlist expansion).
TEST_CASE("launch: SLURM node lists expand like scontrol show hostnames", "[dist]") {
  using onebit::dist::expand_slurm_nodelist;
  using V = std::vector<std::string>;
  CHECK(expand_slurm_nodelist("rack[1-2]-n[01-04]") ==
        V{"rack1-n01", "rack1-n02", "rack1-n03", "rack1-n04", "rack2-n01", "rack2-n02", "rack2-n03", "rack2-n04"});
  CHECK(expand_slurm_nodelist("gpu[01-04,07]") == V{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"});
  CHECK(expand_slurm_nodelist("gpu[08-10],cpu3,rack[1-2]-n[7,09]") ==
        V{"gpu08", "gpu09", "gpu10", "cpu3", "rack1-n7", "rack1-n09", "rack2-n7", "rack2-n09"});
  CHECK(expand_slurm_nodelist("node[007-009]x") == V{"node007x", "node008x", "node009x"});
  CHECK(expand_slurm_nodelist("solo") == V{"solo"});
  CHECK(onebit::dist::first_slurm_host("rack[3-4]-n[02-04],gpu1") == "rack3-n02");
  CHECK(onebit::dist::first_slurm_host("a,rack[1-2]-n[01-04]") == "a");

  for (const auto& [bad, why] : std::vector<std::pair<std::string, std::string>>{
           {"", "empty host name"},
           {"gpu1,,gpu2", "empty host name"},
           {"gpu1,", "empty host name"},
           {"gpu[04-01]", "range '04-01' runs backwards"},
           {"gpu[a-b]", "holds 'a-b', not a number"},
           {"gpu[]", "holds '', not a number"},
           {"gpu[1-2", "unclosed '['"},
           {"gpu[[1]]", "nested '['"},
           {"gpu1]", "']' without '['"}}) {
    INFO(bad);
    CHECK_THROWS_WITH(expand_slurm_nodelist(bad), OB_CONTAINS("SLURM_NODELIST='" + bad + "'") && OB_CONTAINS(why));
  }
}

TEST_CASE("NoSync leaves values alone", "[dist]") {
  onebit::dist::NoSync s;
  CHECK(s.mean(2.5) == 2.5);
  CHECK(s.world_size() == 1);
}

// scripts/slurm/onebit-train.sbatch with fake scontrol/srun: what each task would be started with.
TEST_CASE("launch: the SLURM batch script exports the rendezvous that detect_launch reads", "[dist]") {
  namespace fs = std::filesystem;
  const fs::path script = onebit::test::source_dir() / "scripts/slurm/onebit-train.sbatch";
  REQUIRE(std::system(("bash -n " + script.string()).c_str()) == 0);
  onebit::test::TempDir dir("sbatch");
  std::ofstream(dir.str("scontrol")) << "#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] && printf 'gpu07\\ngpu08\\n'\n";
  std::ofstream(dir.str("srun")) << "#!/bin/sh\necho \"srun $*\"\necho \"MASTER_ADDR=$MASTER_ADDR\"\n"
                                    "echo \"MASTER_PORT=$MASTER_PORT\"\necho \"OMP_NUM_THREADS=$OMP_NUM_THREADS\"\n";
  fs::permissions(dir.path / "scontrol", fs::perms::owner_all);
  fs::permissions(dir.path / "srun", fs::perms::owner_all);
  const std::string cmd = "env -u MASTER_ADDR -u MASTER_PORT -u OMP_NUM_THREADS PATH=" + dir.str() +
                          ":$PATH SLURM_JOB_NODELIST='gpu[07-08]' SLURM_JOB_ID=123456 SLURM_NTASKS=16 "
                          "SLURM_JOB_NUM_NODES=2 SLURM_CPUS_PER_TASK=8 ONEBIT_TRAIN=/bin/true bash " +
                          script.string() + " configs/llama7b.yaml optim.lr=1e-4 > " + dir.str("out.txt") + " 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(dir.str("out.txt"));
  const std::string out((std::istreambuf_iterator<char>(in)), {});
  INFO(out);
  CHECK_THAT(out, OB_CONTAINS("16 ranks on 2 nodes, rendezvous gpu07:23456"));
  CHECK_THAT(out, OB_CONTAINS("srun --kill-on-bad-exit=1 /bin/true --config configs/llama7b.yaml optim.lr=1e-4"));
  CHECK_THAT(out, OB_CONTAINS("MASTER_ADDR=gpu07\nMASTER_PORT=23456\nOMP_NUM_THREADS=8"));

  // Task 9 of that job (second node, local id 1), as srun starts it.
  const auto info = onebit::dist::detect_launch(env_of({{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "16"},
                                                        {"SLURM_LOCALID", "1"}, {"SLURM_NODELIST", "gpu[07-08]"},
                                                        {"MASTER_ADDR", "gpu07"}, {"MASTER_PORT", "23456"}}));
  CHECK(info.source == "slurm");
  CHECK(info.rank == 9);
  CHECK(info.world_size == 16);
  CHECK(info.local_rank == 1);
  CHECK(info.master_addr == "gpu07");
  CHECK(info.master_port == 23456);
  CHECK_FALSE(info.agent_store);
}

TEST_CASE("launch: torchrun's agent store is used as a client with its prefix", "[dist]") {
  const auto info = onebit::dist::detect_launch(
      env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
              {"TORCHELASTIC_RESTART_COUNT", "3"}}));
  CHECK(info.agent_store);
  CHECK(info.store_prefix == "/worker/attempt_3");
  CHECK_FALSE(onebit::dist::detect_launch(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}})).agent_store);
}
