// Where this process sits in a multi-process launch: torchrun variables (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// first host of SLURM_NODELIST). SLURM variables are read only here.
#pragma once
#include <functional>
#include <optional>
#include <string>

namespace onebit::dist {

struct LaunchInfo {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  // single | torchrun | slurm
  // torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank is a client, keys under store_prefix.
  bool agent_store = false;
  std::string store_prefix;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// The process environment (std::getenv).
EnvLookup process_env();

// torchrun variables win over SLURM; neither = single process. Malformed values throw
// onebit::Error naming the variable.
LaunchInfo detect_launch(const EnvLookup& env = process_env());

// First host of a SLURM node list: "gpu[01-04,07],cpu3" -> "gpu01".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace onebit::dist
