#include "onebit/models/step_decoder.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "onebit/core/error.h"
#include "onebit/nn/dense_linear.h"

#ifdef ONEBIT_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace onebit::models {

KVCache make_static_cache(const ModelConfig& c, int64_t batch, int64_t capacity, const torch::TensorOptions& options) {
  OB_CHECK(batch >= 1 && capacity >= 1, "static KV cache: batch and capacity must be >= 1, got ", batch, " and ",
           capacity);
  const int64_t heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads;
  const int64_t dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  KVCache cache;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    cache.k.push_back(torch::zeros({batch, heads, capacity, dim}, options));
    cache.v.push_back(torch::zeros({batch, heads, capacity, dim}, options));
  }
  cache.position = torch::zeros({1}, options.dtype(torch::kLong));
  cache.capacity = capacity;
  return cache;
}

torch::Tensor last_position_logits(CausalLMImpl& model, const torch::Tensor& ids, KVCache& cache) {
  ForwardArgs args;
  args.cache = &cache;
  args.compute_logits = false;
  const auto h = model.forward(ids, args).last_hidden;
  return nn::dense_linear(h.select(1, h.size(1) - 1), model.lm_head_weight()).to(torch::kFloat32);
}

#ifdef ONEBIT_WITH_CUDA
// The side stream that captures and replays (capture cannot run on the default stream) and one
// graph per span, all in one memory pool (they never run at the same time). The caller's stream
// and the side stream are ordered by events both ways.
struct StepDecoder::Graph {
  explicit Graph(torch::Device d)
      : stream(c10::cuda::getStreamFromPool(false, d.index())), pool(at::cuda::graph_pool_handle()) {}
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    torch::Tensor out;  // its output buffer
  };
  c10::cuda::CUDAStream stream;
  at::cuda::MempoolId_t pool;
  std::map<int64_t, Captured> by_span;
};
#else
struct StepDecoder::Graph {};
#endif

StepDecoder::StepDecoder(CausalLMImpl& model, int64_t batch, int64_t capacity, bool cuda_graph)
    : model_(model), batch_(batch) {
  const auto w = model.lm_head_weight();
  cache_ = make_static_cache(model.config(), batch, capacity, w.options().requires_grad(false));
  ids_ = torch::zeros({batch, 1}, torch::dtype(torch::kLong).device(w.device()));
  if (!cuda_graph) return;
  OB_CHECK(w.device().is_cuda(), "decoding with a CUDA graph needs the model on a CUDA device, it is on ", w.device());
#ifdef ONEBIT_WITH_CUDA
  graph_ = std::make_unique<Graph>(w.device());
#else
  fail("decoding with a CUDA graph: this build has no CUDA support (ONEBIT_WITH_CUDA)");
#endif
}

StepDecoder::~StepDecoder() = default;

int64_t StepDecoder::span_for(int64_t length) const {
  int64_t s = 64;
  while (s < length) s *= 2;
  return std::min(s, cache_.capacity);
}

void StepDecoder::check_room(int64_t T) const {
  OB_CHECK(length_ + T <= cache_.capacity, "StepDecoder: ", length_, " + ", T, " positions exceed its capacity of ",
           cache_.capacity);
}

torch::Tensor StepDecoder::prefill(const torch::Tensor& prompts) {
  OB_CHECK(prompts.dim() == 2 && prompts.size(0) == batch_ && prompts.size(1) >= 1,
           "StepDecoder::prefill: prompts must be [", batch_, ", T0] with T0 >= 1, got ", prompts.sizes());
  torch::NoGradGuard no_grad;
  cache_.position.zero_();
  length_ = 0;
  check_room(prompts.size(1));
  cache_.span = span_for(prompts.size(1));
  auto logits = last_position_logits(model_, prompts.to(ids_.device(), torch::kLong), cache_);
  length_ = prompts.size(1);
  return logits;
}

torch::Tensor StepDecoder::step(const torch::Tensor& tokens) {
  OB_CHECK(tokens.numel() == batch_ && (tokens.dim() == 1 || (tokens.dim() == 2 && tokens.size(1) == 1)),
           "StepDecoder::step: tokens must be [", batch_, "] or [", batch_, ", 1], got ", tokens.sizes());
  OB_CHECK(length_ >= 1, "StepDecoder::step: call prefill first");
  check_room(1);
  torch::NoGradGuard no_grad;
  cache_.span = span_for(length_ + 1);
  torch::Tensor logits;
  if (!graph_) {
    ids_.copy_(tokens.view({batch_, 1}));
    logits = last_position_logits(model_, ids_, cache_);
  } else {
#ifdef ONEBIT_WITH_CUDA
    auto& g = *graph_;
    const auto caller = c10::cuda::getCurrentCUDAStream(g.stream.device_index());
    c10::cuda::CUDAEvent ready, done;
    ready.record(caller);
    ready.block(g.stream);
    {
      const c10::cuda::CUDAStreamGuard on_side(g.stream);
      ids_.copy_(tokens.view({batch_, 1}));
      auto it = g.by_span.find(cache_.span);
      if (steps_ == 0) {
        // Warm-up (eager, on the side stream): libraries set up their workspaces. Its output is
        // read on the caller's stream: the allocator must not hand it out again before then.
        logits = last_position_logits(model_, ids_, cache_);
        logits.record_stream(caller);
      } else if (it == g.by_span.end()) {
        auto& c = g.by_span[cache_.span];
        c.graph = std::make_unique<at::cuda::CUDAGraph>();
        c.graph->capture_begin(g.pool);
        c.out = last_position_logits(model_, ids_, cache_);  // recorded, not run: replay() below runs it
        c.graph->capture_end();
        c.graph->replay();
        logits = c.out;
      } else {
        it->second.graph->replay();
        logits = it->second.out;
      }
    }
    done.record(g.stream);
    done.block(caller);
#endif
  }
  ++steps_;
  ++length_;
  return logits;
}

}  // namespace onebit::models
