#include "onebit/dist/launch.h"

#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <regex>

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

namespace {

// One "[...]" body: "01-04,07" -> {"01", "02", "03", "04", "07"}; a range keeps the width of its
// first number ("08-10" -> "08", "09", "10").
std::vector<std::string> expand_brackets(const std::string& body, const std::string& nodelist) {
  auto bad = [&](const std::string& why) { fail("SLURM_NODELIST='", nodelist, "': ", why); };
  std::vector<std::string> out;
  size_t i = 0;
  while (true) {
    const size_t comma = std::min(body.find(',', i), body.size());
    const std::string item = body.substr(i, comma - i);
    const size_t dash = item.find('-');
    const std::string lo = item.substr(0, dash), hi = dash == std::string::npos ? lo : item.substr(dash + 1);
    const auto digits = [](const std::string& t) {
      return !t.empty() && t.size() <= 18 && t.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(lo) || !digits(hi)) bad("'[" + body + "]' holds '" + item + "', not a number or a range a-b");
    const long long a = std::stoll(lo), b = std::stoll(hi);
    if (b < a) bad("range '" + item + "' runs backwards");
    for (long long n = a; n <= b; ++n) {
      std::string s = std::to_string(n);
      if (s.size() < lo.size()) s.insert(0, lo.size() - s.size(), '0');
      out.push_back(s);
    }
    if (comma == body.size()) return out;
    i = comma + 1;
  }
}

}  // namespace

std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist) {
  // Groups separated by ',' outside brackets; each group is literal text and bracket sets,
  // expanded as their product with the last set varying fastest (as `scontrol show hostnames`).
  std::vector<std::string> hosts;
  size_t i = 0;
  while (i <= nodelist.size()) {
    std::vector<std::string> group{""};
    const size_t start = i;
    while (i < nodelist.size() && nodelist[i] != ',') {
      std::vector<std::string> parts;
      if (nodelist[i] == '[') {
        const size_t close = nodelist.find(']', i);
        OB_CHECK(close != std::string::npos, "SLURM_NODELIST='", nodelist, "': unclosed '['");
        const std::string body = nodelist.substr(i + 1, close - i - 1);
        OB_CHECK(body.find('[') == std::string::npos, "SLURM_NODELIST='", nodelist, "': nested '['");
        parts = expand_brackets(body, nodelist);
        i = close + 1;
      } else {
        const size_t stop = std::min({nodelist.find('[', i), nodelist.find(',', i), nodelist.size()});
        OB_CHECK(nodelist.find(']', i) >= stop, "SLURM_NODELIST='", nodelist, "': ']' without '['");
        parts = {nodelist.substr(i, stop - i)};
        i = stop;
      }
      std::vector<std::string> next;
      for (const auto& head : group)
        for (const auto& p : parts) next.push_back(head + p);
      group = std::move(next);
    }
    OB_CHECK(i > start, "SLURM_NODELIST='", nodelist, "' has an empty host name");
    hosts.insert(hosts.end(), group.begin(), group.end());
    ++i;  // past ','
  }
  return hosts;
}

std::string first_slurm_host(const std::string& nodelist) { return expand_slurm_nodelist(nodelist).front(); }

c10::Device device_for(const std::string& spec, const LaunchInfo& launch) {
  OB_CHECK(spec == "auto" || spec == "cpu" || spec == "cuda" || std::regex_match(spec, std::regex("cuda:[0-9]+")),
           "device must be auto, cpu, cuda or cuda:N, got '", spec, "'");
  if (spec == "cpu" || (spec == "auto" && !torch::cuda::is_available())) return c10::Device(c10::kCPU);
  OB_CHECK(torch::cuda::is_available(), "device ", spec, ": no CUDA device is available");
  c10::Device d(spec == "auto" ? "cuda" : spec);
  if (!d.has_index() && launch.world_size > 1) {
    const int n = static_cast<int>(torch::cuda::device_count());
    OB_CHECK(launch.local_rank < n || n == 1, "rank ", launch.rank, ": local rank ", launch.local_rank,
             " but this process sees ", n, " GPUs; start at most one process per GPU");
    d = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(n == 1 ? 0 : launch.local_rank));
  }
  return d;
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
