// Where this process sits in a multi-process launch: torchrun variables (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// first host of SLURM_NODELIST). SLURM variables are read only here.
#pragma once
#include <c10/core/Device.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

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

// This process's device for `spec` (auto | cpu | cuda | cuda:N): auto = cuda when a GPU is
// visible, else cpu. A bare cuda with several ranks is GPU LOCAL_RANK (one process per GPU),
// or the only visible GPU when the launcher gives each process its own (srun
// --gpus-per-task=1); cuda:N as given. onebit::Error for another spec or a missing GPU.
c10::Device device_for(const std::string& spec, const LaunchInfo& launch);

// The hosts of a SLURM node list, in order, as `scontrol show hostnames` prints them:
// "rack[1-2]-n[01-02],gpu[07,09]" -> rack1-n01 rack1-n02 rack2-n01 rack2-n02 gpu07 gpu09
// (zero padding kept). A malformed list throws onebit::Error quoting it.
std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist);
// Its first host (the rendezvous when MASTER_ADDR is not set): "gpu[01-04,07],cpu3" -> "gpu01".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace onebit::dist
