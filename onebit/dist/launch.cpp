#include "onebit/dist/launch.h"

#include <cstdlib>

#include "onebit/core/error.h"

namespace onebit::dist {
namespace {

int to_int(const EnvLookup& env, const std::string& name, int fallback) {
  const auto v = env(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    const int x = std::stoi(*v, &used);
    OB_CHECK(used == v->size(), "");
    return x;
  } catch (...) {
    fail("environment variable ", name, "='", *v, "' is not an integer");
  }
}

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

std::string first_slurm_host(const std::string& nodelist) {
  // Up to the first ',' outside brackets; a bracket range keeps its prefix and first number.
  std::string host;
  for (size_t i = 0; i < nodelist.size(); ++i) {
    const char c = nodelist[i];
    if (c == ',') break;
    if (c == '[') {
      size_t j = i + 1;
      while (j < nodelist.size() && nodelist[j] != '-' && nodelist[j] != ',' && nodelist[j] != ']') host += nodelist[j++];
      OB_CHECK(nodelist.find(']', i) != std::string::npos, "SLURM_NODELIST='", nodelist, "': unclosed '['");
      return host;
    }
    host += c;
  }
  OB_CHECK(!host.empty(), "SLURM_NODELIST='", nodelist, "' names no host");
  return host;
}

LaunchInfo detect_launch(const EnvLookup& env) {
  LaunchInfo info;
  if (env("RANK") || env("WORLD_SIZE")) {
    info.source = "torchrun";
    info.rank = to_int(env, "RANK", 0);
    info.world_size = to_int(env, "WORLD_SIZE", 1);
    info.local_rank = to_int(env, "LOCAL_RANK", 0);
    if (auto a = env("MASTER_ADDR")) info.master_addr = *a;
    info.master_port = to_int(env, "MASTER_PORT", info.master_port);
    if (env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True") {
      info.agent_store = true;
      info.store_prefix = "/worker/attempt_" + env("TORCHELASTIC_RESTART_COUNT").value_or("0");
    }
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    info.source = "slurm";
    info.rank = to_int(env, "SLURM_PROCID", 0);
    info.world_size = to_int(env, "SLURM_NTASKS", 1);
    info.local_rank = to_int(env, "SLURM_LOCALID", 0);
    if (auto a = env("MASTER_ADDR")) info.master_addr = *a;
    else if (auto nl = env("SLURM_NODELIST")) info.master_addr = first_slurm_host(*nl);
    info.master_port = to_int(env, "MASTER_PORT", info.master_port);
  }
  OB_CHECK(info.world_size >= 1 && info.rank >= 0 && info.rank < info.world_size, "launch (", info.source,
           "): rank ", info.rank, " is outside world size ", info.world_size);
  return info;
}

}  // namespace onebit::dist
