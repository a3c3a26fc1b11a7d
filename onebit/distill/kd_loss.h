// The OneBit distillation loss (method.md §3):
//   kd_loss_scale · τ² · KL(softmax(t/τ) ‖ softmax(s/τ))   batchmean over [B,T,V]; τ = kd.temperature,
//                                                           1 (none) in the paper; with kd.top_k = k > 0
//                                                           the teacher's softmax over its k largest logits
//                                                           (renormalised, 0 elsewhere) takes its place
// + alpha · Σ_{i=0}^{L-1} mean_tokens ‖normalize(t_i) − normalize(s_i)‖²   (HF hidden_states 0..L-1)
// + ce_weight · CE(next-token labels).
// The logit terms are computed chunk by chunk from the final hidden states and the lm_head
// weights, so the [B,T,V] fp32 softmaxes of teacher and student never exist; a custom autograd
// Function computes each chunk's gradient in the forward, while its softmaxes are at hand.
// The hidden-state term (normalized_mse) saves no fp32 copies either.
// Every term is computed in fp32 with autocast off, whatever the dtype of the states (bf16/fp16
// ones are upcast).
#pragma once
#include <torch/types.h>

#include <cstdint>

#include "onebit/config/train_config.h"
#include "onebit/models/causal_lm.h"

namespace onebit::distill {

// The config's kd.* block is the loss's options (docs/configuration.md).
using KdLossOptions = config::KdCfg;

// `total` carries the graph; the parts are detached fp32 scalars for logging (unweighted).
struct KdLossParts {
  torch::Tensor total;
  torch::Tensor kl;      // τ²·KL at temperature τ, batchmean (sum over tokens and vocabulary / B)
  torch::Tensor hidden;  // Σ over layers of the mean squared distance of normalised states
  torch::Tensor ce;      // mean next-token cross-entropy of the student
};

// teacher/student: forwards with output_hidden_states (L+1 entries) and last_hidden.
// input_ids [B,T]: the CE labels are input_ids shifted by one (the last position has none).
KdLossParts kd_loss(const models::ForwardOutput& teacher, const torch::Tensor& teacher_lm_head,
                    const models::ForwardOutput& student, const torch::Tensor& student_lm_head,
                    const torch::Tensor& input_ids, const KdLossOptions& options);

// Block-wise reconstruction (kd.block_warmup_steps; EfficientQAT's Block-AP with the paper's
// normalised distance): the student forward ran with args.layer_inputs = the teacher's
// hidden_states, so its state i (1..L) is its layer i−1 applied to the teacher's input of that
// layer. total = hidden = Σ_{i=1}^{L} mean_tokens ‖normalize(t_i) − normalize(s_i)‖², every
// layer's term independent of the others; kl and ce are 0 (not computed).
KdLossParts block_loss(const models::ForwardOutput& teacher, const models::ForwardOutput& student);

// mean over rows of ‖normalize(t) − normalize(s)‖² (F.normalize along dim −1), an fp32 scalar
// differentiable in s [N,H] (t is detached). Saves no copy of s or t for backward: the
// normalisation is recomputed there, row block by row block.
torch::Tensor normalized_mse(const torch::Tensor& s, const torch::Tensor& t);

// Sum over tokens of τ²·KL(softmax(t_h·t_wᵀ/τ) ‖ softmax(s_h·s_wᵀ/τ)) and sum of CE (at τ = 1)
// (top_k > 0: the teacher's softmax over its top_k largest logits of each token, renormalised)
// over tokens whose label is >= 0, both fp32 scalars; s_h, t_h [N,H], labels [N] (int64, −1 = none).
// Differentiable in s_h and s_w (the CE only when ce_grad; otherwise it is a logged value).
// With grad mode on and s_h or s_w requiring grad, the forward already computes the gradients
// (one more [N,V]·[V,H] matmul, two with ce_grad) and backward only scales them: call it
// under NoGradGuard when no backward follows.
std::pair<torch::Tensor, torch::Tensor> chunked_kl_ce(const torch::Tensor& s_h, const torch::Tensor& s_w,
                                                      const torch::Tensor& t_h, const torch::Tensor& t_w,
                                                      const torch::Tensor& labels, int64_t chunk_tokens,
                                                      bool ce_grad = true, double temperature = 1.0,
                                                      int64_t top_k = 0);

}  // namespace onebit::distill
