#include "onebit/distill/kd_loss.h"

#include <torch/torch.h>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"

namespace onebit::distill {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Logit-level KL and CE, one chunk of tokens at a time in fp32. Backward recomputes the
// chunk's softmaxes: d/ds_logits = g_kl·(q − p) + g_ce·(q − onehot(label)).
// Autocast is off in both directions: the logit matmuls stay fp32 even inside a bf16/fp16
// region (bf16 logits of magnitude ~20 would carry errors of ~0.1 into the KL).
struct ChunkedKlCe : public torch::autograd::Function<ChunkedKlCe> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& s_h, const torch::Tensor& s_w,
                               const torch::Tensor& t_h, const torch::Tensor& t_w, const torch::Tensor& labels,
                               int64_t chunk) {
    ctx->save_for_backward({s_h, s_w, t_h, t_w, labels});
    ctx->saved_data["chunk"] = chunk;
    AutocastGuard fp32_only(s_h.device().type(), std::nullopt);
    const auto f32 = torch::kFloat32;
    const torch::Tensor sw = s_w.to(f32), tw = t_w.to(f32);
    auto kl = torch::zeros({}, s_h.options().dtype(f32));
    auto ce = torch::zeros({}, s_h.options().dtype(f32));
    const int64_t n = s_h.size(0);
    for (int64_t a = 0; a < n; a += chunk) {
      const int64_t len = std::min(chunk, n - a);
      const auto logq = torch::log_softmax(torch::matmul(s_h.narrow(0, a, len).to(f32), sw.t()), -1);
      const auto logp = torch::log_softmax(torch::matmul(t_h.narrow(0, a, len).to(f32), tw.t()), -1);
      kl += (logp.exp() * (logp - logq)).sum();
      const auto lab = labels.narrow(0, a, len);
      const auto valid = lab.ge(0);
      const auto picked = logq.gather(1, lab.clamp_min(0).unsqueeze(1)).squeeze(1);
      ce -= (picked * valid.to(f32)).sum();
    }
    return {kl, ce};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &s_h = saved[0], &s_w = saved[1], &t_h = saved[2], &t_w = saved[3], &labels = saved[4];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    AutocastGuard fp32_only(s_h.device().type(), std::nullopt);
    const auto f32 = torch::kFloat32;
    const torch::Tensor sw = s_w.to(f32), tw = t_w.to(f32);
    const auto g_kl = grads[0].to(f32), g_ce = grads[1].to(f32);
    const bool need_h = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    torch::Tensor d_h = need_h ? torch::empty_like(s_h) : torch::Tensor();
    torch::Tensor d_w = need_w ? torch::zeros_like(sw) : torch::Tensor();
    const int64_t n = s_h.size(0);
    for (int64_t a = 0; a < n; a += chunk) {
      const int64_t len = std::min(chunk, n - a);
      const auto sh = s_h.narrow(0, a, len).to(f32);
      const auto q = torch::softmax(torch::matmul(sh, sw.t()), -1);
      const auto p = torch::softmax(torch::matmul(t_h.narrow(0, a, len).to(f32), tw.t()), -1);
      const auto lab = labels.narrow(0, a, len);
      const auto valid = lab.ge(0).to(f32).unsqueeze(1);
      // CE part: valid · (q − onehot); the one-hot is subtracted with a scatter.
      auto d_logits = (q - p) * g_kl + q * valid * g_ce;
      d_logits.scatter_add_(1, lab.clamp_min(0).unsqueeze(1), -(valid * g_ce));
      if (need_h) d_h.narrow(0, a, len).copy_(torch::matmul(d_logits, sw));
      if (need_w) d_w.addmm_(d_logits.t(), sh);
    }
    return {d_h, need_w ? d_w.to(s_w.scalar_type()) : torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> chunked_kl_ce(const torch::Tensor& s_h, const torch::Tensor& s_w,
                                                      const torch::Tensor& t_h, const torch::Tensor& t_w,
                                                      const torch::Tensor& labels, int64_t chunk_tokens) {
  OB_CHECK(s_h.dim() == 2 && t_h.dim() == 2 && s_h.sizes() == t_h.sizes(),
           "kd_loss: teacher/student final hidden states must both be [N,H], got ", s_h.sizes(), " and ",
           t_h.sizes());
  OB_CHECK(s_w.size(0) == t_w.size(0), "kd_loss: teacher vocabulary ", t_w.size(0), " != student vocabulary ",
           s_w.size(0));
  OB_CHECK(chunk_tokens > 0, "kd_loss: kd.chunk_tokens must be > 0, got ", chunk_tokens);
  auto out = ChunkedKlCe::apply(s_h, s_w, t_h.detach(), t_w.detach(), labels, chunk_tokens);
  return {out[0], out[1]};
}

KdLossParts kd_loss(const models::ForwardOutput& teacher, const torch::Tensor& teacher_lm_head,
                    const models::ForwardOutput& student, const torch::Tensor& student_lm_head,
                    const torch::Tensor& input_ids, const KdLossOptions& o) {
  OB_CHECK(input_ids.dim() == 2, "kd_loss: input_ids must be [B,T], got ", input_ids.sizes());
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  const auto f32 = torch::kFloat32;
  // The whole loss is fp32, also when the forwards ran under autocast: states are upcast below.
  AutocastGuard fp32_only(student.last_hidden.device().type(), std::nullopt);

  // Next-token labels: position t predicts input_ids[t+1]; the last position has none (−1).
  auto labels = torch::full({B, T}, -1, input_ids.options().dtype(torch::kLong));
  if (T > 1) labels.narrow(1, 0, T - 1).copy_(input_ids.narrow(1, 1, T - 1));
  const auto s_last = student.last_hidden.reshape({B * T, -1});
  const auto t_last = teacher.last_hidden.reshape({B * T, -1});
  auto [kl_sum, ce_sum] = chunked_kl_ce(s_last, student_lm_head, t_last, teacher_lm_head,
                                        labels.reshape({-1}).to(s_last.device()), o.chunk_tokens);
  const auto kl = kl_sum / static_cast<double>(B);
  const auto ce = ce_sum / static_cast<double>(std::max<int64_t>(1, B * (T - 1)));

  const size_t L1 = teacher.hidden_states.size();
  OB_CHECK(L1 >= 2 && student.hidden_states.size() == L1, "kd_loss: need L+1 hidden states from both models, got ",
           L1, " (teacher) and ", student.hidden_states.size(), " (student); forward with output_hidden_states");
  auto hidden = torch::zeros({}, s_last.options().dtype(f32));
  for (size_t i = 0; i + 1 < L1; ++i) {  // index L (after the final norm) is not used
    const auto t = torch::nn::functional::normalize(teacher.hidden_states[i].reshape({B * T, -1}).to(f32).detach(),
                                                    torch::nn::functional::NormalizeFuncOptions().dim(-1));
    const auto s = torch::nn::functional::normalize(student.hidden_states[i].reshape({B * T, -1}).to(f32),
                                                    torch::nn::functional::NormalizeFuncOptions().dim(-1));
    hidden = hidden + (t - s).pow(2).sum(-1).mean();
  }

  KdLossParts parts;
  parts.total = kl * o.kd_loss_scale + hidden * o.alpha;
  if (o.ce_weight != 0) parts.total = parts.total + ce * o.ce_weight;
  parts.kl = kl.detach();
  parts.hidden = hidden.detach();
  parts.ce = ce.detach();
  return parts;
}

}  // namespace onebit::distill
