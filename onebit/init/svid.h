// SVID (method.md §2): W ≈ sign(W) ⊙ (a bᵀ), a bᵀ a non-negative rank-1 approximation of |W|.
// Pure functions; computed in fp32 on W's device; W is [out, in], a is [out], b is [in].
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace onebit::init {

struct Rank1 {
  torch::Tensor a;         // [out], >= 0 (becomes h)
  torch::Tensor b;         // [in],  >= 0 (becomes g)
  int64_t iterations = 0;  // iterations run
  bool converged = false;  // stopping rule met before max_iter
};

// Leading singular pair of |W| by power iteration from the all-ones vector (non-negative
// throughout, Perron-Frobenius). Stops when ‖v_k − v_{k−1}‖₂ ≤ tol (v unit-norm) or at max_iter.
// The singular value is split evenly: a = √σ·u, b = √σ·v.
struct SvdOptions {
  int64_t max_iter = 200;
  double tol = 1e-5;
};
Rank1 svid_svd(const torch::Tensor& w, const SvdOptions& opt = {});

// Rank-1 NMF of |W|, scikit-learn's NMF(n_components=1, init='random', solver='cd',
// beta_loss='frobenius', max_iter=200, tol=1e-4) re-implemented (docs/layer.md): random init
// avg·|N(0,1)| with avg = √mean|W| (from a torch generator seeded by `seed`, not numpy's),
// then alternating closed-form coordinate updates a ← max(|W| b / bᵀb, 0), b ← max(|W|ᵀ a / aᵀa, 0);
// stops when the projected-gradient violation falls to tol × the first iteration's.
struct NmfOptions {
  int64_t max_iter = 200;
  double tol = 1e-4;
  uint64_t seed = 0;
};
Rank1 svid_nmf(const torch::Tensor& w, const NmfOptions& opt = {});

// ‖W − sign(W) ⊙ a bᵀ‖_F / ‖W‖_F (sign(0) = +1), computed in double.
double svid_error(const torch::Tensor& w, const torch::Tensor& a, const torch::Tensor& b);
// The same error for the naive scale: a = mean|W| of each row, b = 1.
double sign_mean_error(const torch::Tensor& w);
// The smallest error any rank-1 a bᵀ can reach: √(Σ_{k≥2} σ_k(|W|)²) / ‖W‖_F (full SVD; small W).
double optimal_rank1_error(const torch::Tensor& w);

}  // namespace onebit::init
