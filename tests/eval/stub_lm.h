// Test doubles with known outputs: a byte-level tokenizer and a causal LM whose logits are a
// closed-form function of (token, position), so tests compute expected NLLs by hand.
#pragma once
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "onebit/models/causal_lm.h"
#include "onebit/tokenizer/tokenizer.h"

namespace onebit::test {

// id = byte + 3 (BOS 1, EOS 2); the two-byte string "\n " is one merged token 259, so that
// tokenizing context + continuation differs from tokenizing them apart.
class StubTokenizer : public tokenizer::Tokenizer {
 public:
  static constexpr int64_t kMerged = 259;
  explicit StubTokenizer(bool add_bos = true, bool has_bos = true) {
    bos_id_ = has_bos ? 1 : -1;
    eos_id_ = 2;
    add_bos_ = add_bos;
  }
  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n' && i + 1 < text.size() && text[i + 1] == ' ') {
        ids.push_back(kMerged);
        ++i;
      } else {
        ids.push_back(int64_t(static_cast<unsigned char>(text[i])) + 3);
      }
    }
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (int64_t id : ids) {
      if (id == kMerged) s += "\n ";
      else if (id >= 3) s += char(id - 3);
    }
    return s;
  }
  int64_t vocab_size() const override { return 260; }
};

// logit(token a at position p, vocab entry v): depends on the position so that a wrong KV-cache
// position shows up in the scores.
inline double stub_logit(int64_t a, int64_t p, int64_t v) {
  return std::sin(0.37 * double(a) + 0.11 * double(v)) * 2.0 + 0.05 * double(p % 7) * double(v % 5) +
         (v == (a + 1) % 260 ? 1.5 : 0.0);
}

// log p(v | token a at position p) by the direct formula (double precision, no torch).
inline double stub_logprob(int64_t a, int64_t p, int64_t v, int64_t vocab = 260) {
  double m = -1e300;
  for (int64_t u = 0; u < vocab; ++u) m = std::max(m, stub_logit(a, p, u));
  double s = 0;
  for (int64_t u = 0; u < vocab; ++u) s += std::exp(stub_logit(a, p, u) - m);
  return stub_logit(a, p, v) - m - std::log(s);
}

// logits(token a at position p) = stub_logit(a, p % 7, ·), computed as last_hidden · Wᵀ with a
// one-hot last_hidden over the (a, p % 7) pairs and W the table of logits, so scorers that
// apply lm_head_weight() themselves get the same numbers. Positions: position_ids when
// given, else cache length + arange; attention masks are irrelevant (no attention).
class StubLMImpl : public models::CausalLMImpl {
 public:
  static constexpr int64_t kV = 260, kP = 7;
  explicit StubLMImpl(int64_t max_pos = 4096, torch::Dtype dtype = torch::kFloat32) : dtype_(dtype) {
    cfg_.model_type = "llama";
    cfg_.vocab_size = kV;
    cfg_.max_position_embeddings = max_pos;
    auto table = torch::empty({kV, kP, kV}, torch::kFloat64);
    auto acc = table.accessor<double, 3>();
    for (int64_t a = 0; a < kV; ++a)
      for (int64_t p = 0; p < kP; ++p)
        for (int64_t v = 0; v < kV; ++v) acc[a][p][v] = stub_logit(a, p, v);
    weight_ = table.view({kV * kP, kV}).t().contiguous().to(dtype_);  // [V, V*P]
  }
  models::ForwardOutput forward(const torch::Tensor& ids, const models::ForwardArgs& args) override {
    ++calls;
    const int64_t past = args.cache ? args.cache->length() : 0;
    auto pos = args.position_ids.defined()
                   ? args.position_ids.to(torch::kInt64)
                   : (torch::arange(ids.size(1), torch::kInt64) + past).unsqueeze(0).expand_as(ids);
    auto hot = torch::one_hot(ids * kP + pos.remainder(kP), kV * kP).to(dtype_);  // [B, T, V*P]
    if (args.cache) {  // keep one fake layer so that length() advances
      auto kv = ids.to(torch::kFloat32).unsqueeze(1).unsqueeze(-1);  // [B, 1, T, 1]
      if (args.cache->k.empty()) {
        args.cache->k.push_back(kv);
        args.cache->v.push_back(kv);
      } else {
        args.cache->k[0] = torch::cat({args.cache->k[0], kv}, 2);
        args.cache->v[0] = torch::cat({args.cache->v[0], kv}, 2);
      }
    }
    models::ForwardOutput out;
    out.last_hidden = hot;
    if (args.compute_logits) out.logits = torch::matmul(hot, weight_.t());
    return out;
  }
  const models::ModelConfig& config() const override { return cfg_; }
  torch::Tensor lm_head_weight() const override { return weight_; }
  void set_gradient_checkpointing(bool) override {}
  int calls = 0;

 private:
  models::ModelConfig cfg_;
  torch::Tensor weight_;
  torch::Dtype dtype_;
};

}  // namespace onebit::test
