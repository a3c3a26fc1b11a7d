#include "onebit/eval/scoring.h"

#include "onebit/core/error.h"
#include "onebit/models/causal_lm.h"

#include <algorithm>

namespace onebit::eval {

torch::Device model_device(const models::CausalLMImpl& model) {
  for (const auto& p : model.parameters()) return p.device();
  for (const auto& b : model.buffers()) return b.device();
  return torch::kCPU;
}

TargetScores score_targets_(torch::Tensor logits, const torch::Tensor& targets) {
  OB_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32 && targets.dim() == 1 &&
               targets.size(0) == logits.size(0),
           "score_targets_: expected fp32 logits [T, V] and targets [T], got ", logits.sizes(), " ",
           logits.scalar_type(), " and ", targets.sizes());
  auto t = targets.to(logits.device()).unsqueeze(-1);
  TargetScores s;
  s.greedy = logits.argmax(-1, /*keepdim=*/true).eq(t).squeeze(-1);
  // ATen's log-softmax kernel reads each row fully before writing it, so it runs in place; the
  // result is bitwise the out-of-place one (the test checks).
  at::_log_softmax_out(logits, logits, -1, /*half_to_float=*/false);
  s.logprob = logits.gather(-1, t).squeeze(-1).to(torch::kFloat64);
  return s;
}

TargetScores score_hidden(const torch::Tensor& hidden, const torch::Tensor& W, const torch::Tensor& targets,
                          int64_t slice_rows) {
  OB_CHECK(hidden.dim() == 2 && targets.dim() == 1 && targets.size(0) == hidden.size(0) && slice_rows >= 1,
           "score_hidden: expected hidden [n, H] and targets [n], got ", hidden.sizes(), " and ", targets.sizes());
  const int64_t n = hidden.size(0);
  TargetScores all{torch::empty({n}, torch::kFloat64), torch::empty({n}, torch::kBool)};
  auto t = targets.to(hidden.device());
  for (int64_t r0 = 0; r0 < n; r0 += slice_rows) {
    const int64_t m = std::min(slice_rows, n - r0);
    auto s = score_targets_(nn::dense_linear(hidden.narrow(0, r0, m), W).to(torch::kFloat32), t.narrow(0, r0, m));
    all.logprob.narrow(0, r0, m).copy_(s.logprob);
    all.greedy.narrow(0, r0, m).copy_(s.greedy);
  }
  return all;
}

torch::Tensor ids_tensor(const std::vector<int64_t>& ids, torch::Device device) {
  return torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device);
}

}  // namespace onebit::eval
