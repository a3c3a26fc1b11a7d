// C10dSync: data-parallel GradSync over LibTorch's c10d. Rank 0 serves a TCPStore at
// MASTER_ADDR:MASTER_PORT (LaunchInfo), every rank joins it, then a ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA) is built on it. Gradients are averaged in flat buckets (one allreduce
// per bucket) by after_backward, or by ParamSync through the flat collectives; every failure (a rank that never joined, died or hangs) is one onebit::Error line
// within dist.timeout_s, never a hang or an abort trace. c10d and gloo stay in the .cpp.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "onebit/dist/grad_sync.h"
#include "onebit/dist/launch.h"

namespace onebit::dist {

struct C10dOptions {
  std::string backend = "auto";        // auto (nccl for a CUDA device, else gloo) | gloo | nccl
  double timeout_s = 300;              // joining, every collective and barrier
  int64_t bucket_bytes = 25 << 20;     // gradients are averaged in flat buckets of about this size
};

// Whether this build can create the backend ("gloo" needs the gloo headers at build time,
// "nccl" the NCCL headers and a CUDA LibTorch).
bool backend_compiled(const std::string& backend);

class C10dSync final : public GradSync {
 public:
  // Joins the group (blocks until all launch.world_size ranks are there, at most timeout_s).
  // device: where the model lives; it picks the backend for "auto" (and NCCL's GPU).
  C10dSync(const LaunchInfo& launch, torch::Device device, const C10dOptions& opts = {});
  ~C10dSync() override;

  // Sum over ranks ÷ world size, in place. A parameter without a gradient counts as zeros;
  // it gets one when any rank has one, and stays without one when no rank has one.
  void after_backward(const std::vector<torch::Tensor>& params) override;
  double mean(double x) override;
  // Flat collectives for ParamSync, queued on the backend (its own threads for Gloo, the NCCL
  // stream for NCCL); each waits at most dist.timeout_s. Gloo has no native reduce-scatter:
  // its _reduce_scatter_base allreduces a copy of the whole input and keeps this rank's chunk.
  Wait allreduce_sum(torch::Tensor flat) override;
  Wait reduce_scatter_sum(torch::Tensor out, torch::Tensor in) override;
  Wait all_gather(torch::Tensor out, torch::Tensor in) override;
  int rank() const override;
  int world_size() const override;

  // Every rank waits here for all others (at most timeout_s). `what` names it in errors.
  void barrier(const std::string& what);
  // Overwrites `tensors` on every rank with rank `root`'s values (same list on all ranks).
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  // Every rank's `t` (same shape and dtype on every rank), in rank order, as CPU tensors.
  std::vector<torch::Tensor> all_gather_cpu(const torch::Tensor& t);
  // Rank 0 runs fn (e.g. writes a cache) while the others wait, then the others run fn. The
  // wait has no time limit while rank 0 works (a thread of rank 0 beats in the store a few times
  // per timeout_s); if rank 0 fails, dies, or is silent for timeout_s (stopped, frozen), they fail.
  void rank0_first(const std::string& what, const std::function<void()>& fn);

  const std::string& backend() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onebit::dist
