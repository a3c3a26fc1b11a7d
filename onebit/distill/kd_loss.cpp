#include "onebit/distill/kd_loss.h"

#include <torch/torch.h>

#include <algorithm>
#include <optional>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"

namespace onebit::distill {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Logit-level KL and CE, one chunk of tokens at a time in fp32. Because both are final scalars,
// the forward also computes their gradients (when asked) while the chunk's softmaxes are at hand
// and keeps only those ([N,H], and [V,H] for a trained lm_head); backward scales them by the
// incoming gradients. So the logits are never recomputed (3 large matmuls per chunk, as an
// unchunked implementation does, not 5), and a chunk needs two [len,V] fp32 buffers: the
// softmax work runs over row blocks of them, and the gradient logits overwrite them.
//   d kl / d s_logits = q − p        d ce / d s_logits = valid · (q − onehot(label))
// Autocast is off inside: the logit matmuls stay fp32 even inside a bf16/fp16 region (bf16
// logits of magnitude ~20 would carry errors of ~0.1 into the KL); backward only scales.
struct ChunkedKlCe : public torch::autograd::Function<ChunkedKlCe> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& s_h, const torch::Tensor& s_w,
                               const torch::Tensor& t_h, const torch::Tensor& t_w, const torch::Tensor& labels,
                               int64_t chunk, bool need_h, bool need_w, bool ce_grad, double tau, int64_t top_k) {
    AutocastGuard fp32_only(s_h.device().type(), std::nullopt);
    const auto f32 = torch::kFloat32;
    const torch::Tensor sw = s_w.to(f32), tw = t_w.to(f32);
    const int64_t n = s_h.size(0), V = sw.size(0);
    const bool grads = need_h || need_w;
    const bool tempered = tau != 1.0;
    const bool truncated = top_k > 0 && top_k < V;  // kd.top_k: the teacher's k largest logits only
    const auto opts = s_h.options().dtype(f32);
    torch::Tensor dkl_h, dce_h, dkl_w, dce_w;
    if (need_h) dkl_h = torch::empty({n, s_h.size(1)}, opts);
    if (need_h && ce_grad) dce_h = torch::empty({n, s_h.size(1)}, opts);
    if (need_w) dkl_w = torch::zeros_like(sw);
    if (need_w && ce_grad) dce_w = torch::zeros_like(sw);
    auto kl = torch::zeros({}, opts);
    auto ce = torch::zeros({}, opts);
    // Rows per block of the elementwise work: about 1M floats, so its temporaries stay small.
    const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 20) / V);
    for (int64_t a = 0; a < n; a += chunk) {
      const int64_t len = std::min(chunk, n - a);
      const torch::Tensor sh = s_h.narrow(0, a, len).to(f32);
      torch::Tensor s_logits = torch::mm(sh, sw.t());                           // → q − p
      torch::Tensor t_logits = torch::mm(t_h.narrow(0, a, len).to(f32), tw.t());  // → CE grad logits
      const auto lab = labels.narrow(0, a, len);
      for (int64_t r = 0; r < len; r += rows) {
        const int64_t m = std::min(rows, len - r);
        // Two block temporaries (logq, logp); everything else is in place.
        auto s = s_logits.narrow(0, r, m), t = t_logits.narrow(0, r, m);
        // With τ ≠ 1 the KL softmaxes take the logits / τ, and the CE its own softmax at τ = 1
        // (three more block temporaries: s / τ, t / τ and that softmax).
        const auto logq = tempered ? torch::log_softmax(s / tau, -1) : torch::log_softmax(s, -1);
        torch::Tensor logp;  // log p, then a free [m,V] block
        if (truncated) {
          // p̃: the teacher's softmax over its k largest logits, 0 elsewhere (the order of the
          // logits, so the k, is the same at every τ); KL(p̃ ‖ q) = Σ_k p̃ (log p̃ − log q).
          const auto [tk, ik] = torch::topk(t, top_k, -1);
          const auto logpk = tempered ? torch::log_softmax(tk / tau, -1) : torch::log_softmax(tk, -1);
          const auto pk = logpk.exp();
          kl += (pk * (logpk - logq.gather(1, ik))).sum();
          t.zero_().scatter_(1, ik, pk);                // t = p̃
          if (grads && ce_grad) logp = torch::empty_like(t);
        } else {
          logp = tempered ? torch::log_softmax(t / tau, -1) : torch::log_softmax(t, -1);
          torch::exp_out(t, logp);                      // t = p
          kl += logp.sub_(logq).mul_(t).sum();           // Σ p·(log p − log q); logp is free after
        }
        const auto logq1 = tempered ? torch::log_softmax(s, -1) : logq;
        const auto l = lab.narrow(0, r, m);
        const auto valid = l.ge(0).to(f32).unsqueeze(1);
        const auto idx = l.clamp_min(0).unsqueeze(1);
        ce -= (logq1.gather(1, idx) * valid).sum();
        if (!grads) continue;
        if (ce_grad) {
          auto& e = logp;                               // valid·(q₁ − onehot), then into t
          torch::exp_out(e, logq1);
          e.mul_(valid).scatter_add_(1, idx, -valid);
          torch::exp_out(s, logq);                      // s = q
          s.sub_(t);
          t.copy_(e);
        } else {
          torch::exp_out(s, logq);
          s.sub_(t);                                    // s = q − p
        }
        // d τ²·KL(p_τ ‖ q_τ) / d s_logits = τ·(q_τ − p_τ) (p̃ in place of p with kd.top_k)
        if (tempered) s.mul_(tau);
      }
      if (!grads) continue;
      if (need_h) {
        auto rows_out = dkl_h.narrow(0, a, len);
        torch::mm_out(rows_out, s_logits, sw);
      }
      if (need_w) dkl_w.addmm_(s_logits.t(), sh);
      if (need_h && ce_grad) {
        auto rows_out = dce_h.narrow(0, a, len);
        torch::mm_out(rows_out, t_logits, sw);
      }
      if (need_w && ce_grad) dce_w.addmm_(t_logits.t(), sh);
    }
    if (tempered) kl.mul_(tau * tau);
    ctx->save_for_backward({dkl_h, dkl_w, dce_h, dce_w});
    ctx->saved_data["h_dtype"] = static_cast<int64_t>(s_h.scalar_type());
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(s_w.scalar_type());
    if (!ce_grad) ctx->mark_non_differentiable({ce});
    return {kl, ce};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &dkl_h = saved[0], &dkl_w = saved[1], &dce_h = saved[2], &dce_w = saved[3];
    const auto h_dtype = static_cast<torch::ScalarType>(ctx->saved_data["h_dtype"].toInt());
    const auto w_dtype = static_cast<torch::ScalarType>(ctx->saved_data["w_dtype"].toInt());
    auto combine = [&](const torch::Tensor& d_kl, const torch::Tensor& d_ce, torch::ScalarType dt) {
      if (!d_kl.defined()) return torch::Tensor();
      auto d = d_kl * grads[0].to(d_kl.scalar_type());
      if (d_ce.defined() && grads[1].defined()) d.add_(d_ce * grads[1].to(d_ce.scalar_type()));
      return d.to(dt);
    };
    return {combine(dkl_h, dce_h, h_dtype), combine(dkl_w, dce_w, w_dtype), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

// mean over rows of ‖normalize(t) − normalize(s)‖², normalize = x / max(‖x‖₂, 1e-12) per row
// (F.normalize), in fp32 row block by row block. It saves only references to s and t, which the
// forwards keep alive anyway (the layers' inputs and the teacher's states), and recomputes the
// normalisation in backward. Autograd's own composition would save fp32 copies of s and of the
// difference per layer: 8 bytes per element, 8 GiB for LLaMA-7B at 8192 tokens.
struct NormalizedMse : public torch::autograd::Function<NormalizedMse> {
  static constexpr double kEps = 1e-12;

  static int64_t block_rows(const torch::Tensor& s) {
    return std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, s.size(1)));
  }
  static torch::Tensor unit(const torch::Tensor& x, torch::Tensor* norm = nullptr) {
    const auto n = x.norm(2, -1, /*keepdim=*/true);
    if (norm) *norm = n;
    return x / n.clamp_min(kEps);
  }

  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& s, const torch::Tensor& t) {
    AutocastGuard fp32_only(s.device().type(), std::nullopt);
    const auto f32 = torch::kFloat32;
    auto sum = torch::zeros({}, s.options().dtype(f32));
    const int64_t n = s.size(0), rows = block_rows(s);
    for (int64_t a = 0; a < n; a += rows) {
      const int64_t len = std::min(rows, n - a);
      sum += (unit(t.narrow(0, a, len).to(f32)) - unit(s.narrow(0, a, len).to(f32))).pow(2).sum();
    }
    ctx->save_for_backward({s, t});
    return sum / static_cast<double>(std::max<int64_t>(1, n));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    AutocastGuard fp32_only(grads[0].device().type(), std::nullopt);
    const auto saved = ctx->get_saved_variables();
    const auto &s = saved[0], &t = saved[1];
    const auto f32 = torch::kFloat32;
    const int64_t n = s.size(0), rows = block_rows(s);
    // d/du of the mean: 2 (u − v) / n; through u = x / ‖x‖: (g − u (u·g)) / ‖x‖ (g / eps where
    // ‖x‖ ≤ eps, as F.normalize's clamp makes it).
    const auto scale = grads[0].to(f32) * (2.0 / static_cast<double>(std::max<int64_t>(1, n)));
    auto ds = torch::empty_like(s);
    for (int64_t a = 0; a < n; a += rows) {
      const int64_t len = std::min(rows, n - a);
      torch::Tensor norm;
      const auto u = unit(s.narrow(0, a, len).to(f32), &norm);
      const auto g = (u - unit(t.narrow(0, a, len).to(f32))) * scale;
      const auto along = (u * g).sum(-1, /*keepdim=*/true) * norm.gt(kEps).to(f32);
      ds.narrow(0, a, len).copy_((g - u * along) / norm.clamp_min(kEps));
    }
    return {ds, torch::Tensor()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> chunked_kl_ce(const torch::Tensor& s_h, const torch::Tensor& s_w,
                                                      const torch::Tensor& t_h, const torch::Tensor& t_w,
                                                      const torch::Tensor& labels, int64_t chunk_tokens,
                                                      bool ce_grad, double temperature, int64_t top_k) {
  OB_CHECK(s_h.dim() == 2 && t_h.dim() == 2 && s_h.sizes() == t_h.sizes(),
           "kd_loss: teacher/student final hidden states must both be [N,H], got ", s_h.sizes(), " and ",
           t_h.sizes());
  OB_CHECK(s_w.size(0) == t_w.size(0), "kd_loss: teacher vocabulary ", t_w.size(0), " != student vocabulary ",
           s_w.size(0));
  OB_CHECK(chunk_tokens > 0, "kd_loss: kd.chunk_tokens must be > 0, got ", chunk_tokens);
  OB_CHECK(temperature > 0, "kd_loss: kd.temperature must be > 0, got ", temperature);
  OB_CHECK(top_k >= 0, "kd_loss: kd.top_k must be >= 0, got ", top_k);
  const bool grad = torch::GradMode::is_enabled();
  auto out = ChunkedKlCe::apply(s_h, s_w, t_h.detach(), t_w.detach(), labels, chunk_tokens,
                                grad && s_h.requires_grad(), grad && s_w.requires_grad(), ce_grad, temperature, top_k);
  return {out[0], out[1]};
}

torch::Tensor normalized_mse(const torch::Tensor& s, const torch::Tensor& t) {
  OB_CHECK(s.dim() == 2 && s.sizes() == t.sizes(), "kd_loss: teacher/student hidden states must both be [N,H], got ",
           s.sizes(), " and ", t.sizes());
  return NormalizedMse::apply(s, t.detach());
}

namespace {

// Σ over hidden states i of normalized_mse(student_i, teacher_i), fp32, i from `first` to L − 1,
// or to L (the state after the final norm) with_final. `who` names the caller in the error.
torch::Tensor state_distance(const models::ForwardOutput& teacher, const models::ForwardOutput& student,
                             size_t first, bool with_final, const char* who) {
  const size_t L1 = teacher.hidden_states.size();
  OB_CHECK(L1 >= 2 && student.hidden_states.size() == L1, who, ": need L+1 hidden states from both models, got ", L1,
           " (teacher) and ", student.hidden_states.size(), " (student); forward with output_hidden_states");
  const size_t end = with_final ? L1 : L1 - 1;
  auto flat = [](const torch::Tensor& x) { return x.reshape({-1, x.size(-1)}); };
  auto sum = torch::zeros({}, student.last_hidden.options().dtype(torch::kFloat32));
  for (size_t i = first; i < end; ++i)
    sum = sum + normalized_mse(flat(student.hidden_states[i]), flat(teacher.hidden_states[i]));
  return sum;
}

}  // namespace

KdLossParts kd_loss(const models::ForwardOutput& teacher, const torch::Tensor& teacher_lm_head,
                    const models::ForwardOutput& student, const torch::Tensor& student_lm_head,
                    const torch::Tensor& input_ids, const KdLossOptions& o) {
  OB_CHECK(input_ids.dim() == 2, "kd_loss: input_ids must be [B,T], got ", input_ids.sizes());
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  // The whole loss is fp32, also when the forwards ran under autocast: states are upcast below.
  AutocastGuard fp32_only(student.last_hidden.device().type(), std::nullopt);

  // Next-token labels: position t predicts input_ids[t+1]; the last position has none (−1).
  auto labels = torch::full({B, T}, -1, input_ids.options().dtype(torch::kLong));
  if (T > 1) labels.narrow(1, 0, T - 1).copy_(input_ids.narrow(1, 1, T - 1));
  const auto s_last = student.last_hidden.reshape({B * T, -1});
  const auto t_last = teacher.last_hidden.reshape({B * T, -1});
  auto [kl_sum, ce_sum] = chunked_kl_ce(s_last, student_lm_head, t_last, teacher_lm_head,
                                        labels.reshape({-1}).to(s_last.device()), o.chunk_tokens,
                                        /*ce_grad=*/o.ce_weight != 0, o.temperature, o.top_k);
  const auto kl = kl_sum / static_cast<double>(B);
  const auto ce = ce_sum / static_cast<double>(std::max<int64_t>(1, B * (T - 1)));

  torch::Tensor hidden;
  {
    // With alpha = 0 the term is only logged: no graph.
    std::optional<torch::NoGradGuard> log_only;
    if (o.alpha == 0) log_only.emplace();
    hidden = state_distance(teacher, student, /*first=*/0, /*with_final=*/false, "kd_loss");
  }

  KdLossParts parts;
  parts.total = kl * o.kd_loss_scale + hidden * o.alpha;
  if (o.ce_weight != 0) parts.total = parts.total + ce * o.ce_weight;
  parts.kl = kl.detach();
  parts.hidden = hidden.detach();
  parts.ce = ce.detach();
  return parts;
}

KdLossParts block_loss(const models::ForwardOutput& teacher, const models::ForwardOutput& student) {
  AutocastGuard fp32_only(student.last_hidden.device().type(), std::nullopt);
  const auto hidden = state_distance(teacher, student, /*first=*/1, /*with_final=*/true, "block_loss");
  KdLossParts parts;
  parts.total = hidden;
  parts.hidden = hidden.detach();
  parts.kl = torch::zeros_like(parts.hidden);
  parts.ce = torch::zeros_like(parts.hidden);
  return parts;
}

}  // namespace onebit::distill
