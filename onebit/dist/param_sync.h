// ParamSync: gradient reduction and the AdamW step of the trainable tensors, for every
// dist.sharding mode, on the collectives of a GradSync. The trainer calls begin_backward /
// finish_backward around its backwards, then clip_grad_norm, step and zero_grad, and never
// learns how the state is laid out (docs/training.md, "Sharding").
//
// Layout: the trainable tensors are packed, in order, into flat buckets of about bucket_bytes
// (one dtype each: each dtype fills its own buckets), each padded to a multiple of the shard count. Every tensor becomes a view of
// its bucket, so an all-gather into the bucket updates the model. A bucket is cut into equal
// shards; rank r owns shard r of every bucket, and its AdamW state is only for those.
//   none       one shard (everything on every rank); gradients are views of full-size flat
//              buffers, allreduced bucket by bucket.
//   optimizer  ZeRO-1: world_size shards; full-size gradient buffers as in none, reduce-scattered
//              on the last micro-batch into this rank's gradient shard; AdamW on the shard, then
//              the updated parameters are all-gathered.
//   gradients  ZeRO-2: as optimizer, but every micro-batch's gradients are copied out of the
//              tensors' .grad into a transient bucket, reduce-scattered and accumulated into the
//              shard, and freed: no full-size gradient buffer outlives its bucket's reduction.
//   full       ZeRO-3: as gradients, and the tensors of decoder layers (layer_of >= 0) live as
//              this rank's shard only. layer_hooks() (installed on the model) all-gathers a
//              layer's buckets before it runs and frees them right after, prefetching the next
//              layer's; in backward the hook on the layer's output gathers them again (and
//              prefetches the layer before), and once their gradients are reduce-scattered they
//              are freed. The model must recompute its layers in backward (gradient
//              checkpointing), so no saved activation holds a gathered weight.
// Reduction starts from post-accumulate-grad hooks as soon as a bucket's last gradient is
// ready, so it overlaps with the rest of the backward. The update is one fused AdamW call
// (PyTorch's _fused_adamw_, i.e. torch.optim.AdamW(fused=True): decoupled weight decay, bias
// correction) over this rank's shard of all fp32 buckets with fp32 state. Lean precision (a bf16
// bucket, e.g. student.latent_dtype=bf16, or bf16/int8 moments, optim.state_dtype=bf16/int8):
// that bucket's shard, gradient and moments are upcast (int8: decoded) to fp32 temporaries,
// updated by the same kernel, and written back with stochastic rounding
// (onebit/optim/stochastic_round.h, quantized_moment.h), one bucket at a time, so the fp32
// copies never exceed one bucket.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "onebit/dist/grad_sync.h"
#include "onebit/models/causal_lm.h"

namespace onebit::dist {

enum class Sharding { None, Optimizer, Gradients, Full };

// "none" | "optimizer" | "gradients" | "full"; anything else is a one-line error naming dist.sharding.
Sharding parse_sharding(const std::string& name);
const char* sharding_name(Sharding s);

struct ParamSyncOptions {
  Sharding sharding = Sharding::None;
  int64_t bucket_bytes = 25 << 20;
  // AdamW (torch.optim.AdamW's meaning); the learning rate is given to each step().
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  // Frozen tensors (dist.shard_teacher): with Sharding::Full, only the layer-by-layer
  // gathering of the decoder layers' tensors (layer_hooks, hold_layer); no gradients, no
  // optimizer state, no step.
  bool frozen = false;
  // AdamW moments: fp32 | bf16 (stored rounded stochastically; math in fp32) | kChar: 8-bit
  // blockwise codes with per-block scales (onebit/optim/quantized_moment.h; state() then holds
  // "exp_avg_scale" and "exp_avg_sq_scale" too).
  torch::ScalarType state_dtype = torch::kFloat32;
  // Stochastic rounding: element e of bucket b at AdamW step s uses the random bits of
  // (seed, s, b, e), e counted over the whole bucket, so they depend on neither the rank nor
  // a resume.
  uint64_t seed = 0;
  // Per tensor (empty: all 1): its learning rate is step()'s lr times this (optim.gh_lr_scale).
  // Tensors of different scales never share a bucket.
  std::vector<double> lr_scale;
};

class ParamSync {
 public:
  // params: the trainable tensors, the same shapes and order on every rank (checked). They are
  // re-pointed into the flat buckets (values kept). layer_of: the decoder layer of each tensor
  // (-1: none; empty: all -1); buckets never span two layers. `sync` must outlive this object.
  ParamSync(std::vector<torch::Tensor> params, GradSync& sync, const ParamSyncOptions& options,
            const std::vector<int64_t>& layer_of = {});
  ~ParamSync();
  ParamSync(const ParamSync&) = delete;
  ParamSync& operator=(const ParamSync&) = delete;

  // Before each micro-batch's backward; last: the optimizer step follows this backward.
  void begin_backward(bool last);
  // After the last micro-batch's backward: every reduction has finished, and grads() holds
  // this rank's share of the gradients averaged over ranks.
  void finish_backward();
  // This rank's averaged gradients as flat tensors (whole buckets in none, shards otherwise).
  std::vector<torch::Tensor> grads() const;
  // L2 norm of the whole averaged gradient (the same on every rank); scales the gradients down
  // to max_norm when it is above (torch.nn.utils.clip_grad_norm_). Non-finite norms clip nothing.
  double clip_grad_norm(double max_norm);
  // AdamW on this rank's shard with learning rate lr, then (sharded modes) all-gather.
  void step(double lr);
  void zero_grad();

  // Checkpoint state of this rank: its parameter shard and AdamW state, by name (views: loading
  // copies into them). Ranks >= num_shards() own nothing of their own (none: all but rank 0).
  std::map<std::string, torch::Tensor> state() const;
  // After state() was loaded on every rank: all-gather the parameter shards (sharded modes;
  // full: the tensors outside decoder layers, the others are gathered when their layer runs).
  void gather_params();
  // full: the hooks to install on the model (CausalLMImpl::set_layer_hooks); nullptr otherwise.
  models::LayerHooks* layer_hooks();
  // full: gathers every layer for good (every rank then holds the whole trainable tensors, e.g.
  // to save and evaluate the final student); the hooks do nothing afterwards, nor may step().
  // Collective. Other modes: nothing to do.
  void materialize();
  // full: gathers the buckets of decoder layer `layer` and releases every other layer's (-1:
  // releases them all), so that a caller can visit the layers one at a time, e.g. to write the
  // student. Collective: every rank calls it with the same layers in the same order. Other
  // modes: nothing to do.
  void hold_layer(int64_t layer);
  // The shape of trainable tensor i as it was given (full: its data is empty while released).
  const std::vector<int64_t>& shape(size_t i) const;
  // Ends training: frees the gradients, the AdamW state and the communication buffers, and
  // keeps the parameters (full: their shards, which the layer hooks still gather for forwards
  // and hold_layer for a caller). No backward, step or state() afterwards.
  void end_training();
  int64_t num_shards() const;
  Sharding sharding() const;
  GradSync& sync() const;

  // Bytes this rank sent and received in gradient and parameter collectives so far, by the
  // ring algorithms' volume (allreduce 2n(N-1)/N, reduce-scatter and all-gather n(N-1)/N of a
  // buffer of n bytes), as NCCL moves them (docs/training.md: Gloo's fallbacks move more).
  double comm_bytes() const;
  // Bytes of the trainable state this rank keeps between steps: parameter buckets, gradient
  // buffers or shards, AdamW state (not the transient buckets of a reduction in flight).
  int64_t state_bytes() const;
  // The most bytes of trainable state this rank held at once so far: state_bytes() plus what
  // lives only during a step (gathered layers, a reduction's transient buckets, the autograd
  // gradients not yet copied out). Sampled at every gather and reduction launch.
  int64_t peak_state_bytes() const;
  void reset_peak_state_bytes();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onebit::dist
