#include "onebit/dist/param_sync.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <tuple>

#include "onebit/core/error.h"
#include "onebit/optim/quantized_moment.h"
#include "onebit/optim/stochastic_round.h"

namespace onebit::dist {

Sharding parse_sharding(const std::string& name) {
  if (name == "none") return Sharding::None;
  if (name == "optimizer") return Sharding::Optimizer;
  if (name == "gradients") return Sharding::Gradients;
  if (name == "full") return Sharding::Full;
  fail("dist.sharding must be none, optimizer, gradients or full, got '", name, "'");
}

const char* sharding_name(Sharding s) {
  switch (s) {
    case Sharding::None: return "none";
    case Sharding::Optimizer: return "optimizer";
    case Sharding::Gradients: return "gradients";
    case Sharding::Full: return "full";
  }
  return "?";
}

namespace {

// Calls back with the tensor's index once autograd has accumulated its gradient.
struct GradReadyHook final : torch::autograd::PostAccumulateGradHook {
  GradReadyHook(std::function<void(size_t)> fn, size_t index) : fn(std::move(fn)), index(index) {}
  void operator()(const torch::autograd::Variable&) override { fn(index); }
  std::function<void(size_t)> fn;
  size_t index;
};

// At most this many ZeRO-2/3 buckets are in flight: each holds a transient full bucket until
// its reduce-scatter completes. One overlaps a layer's reduction with the next layer's
// backward; two measured 0.365 of none's trainable-state peak on 4 ranks (bench-shard), one 0.34.
constexpr size_t kMaxInFlight = 1;

}  // namespace

struct ParamSync::Impl final : models::LayerHooks {
  GradSync* sync = nullptr;
  ParamSyncOptions o;
  std::vector<torch::Tensor> params;
  int64_t world = 1, shards = 1, rank = 0;
  double comm_bytes = 0;

  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;
    int64_t layer = -1;
    int64_t padded = 0, shard = 0;  // elements: whole bucket (a multiple of shards), one shard
    int64_t elem = 4;               // bytes per element
    double lr_scale = 1;            // its tensors' learning rate = step()'s lr · lr_scale
    torch::Tensor param;            // [padded]; the tensors are views of it
    torch::Tensor grad;             // [padded] gradient buffer (none, optimizer)
    torch::Tensor grad_shard;       // [shard] this rank's averaged gradient (optimizer, gradients)
    torch::Tensor exp_avg, exp_avg_sq, step;  // AdamW state of the owned elements
    torch::Tensor exp_avg_scale, exp_avg_sq_scale;  // int8 moments: their block scales (quantized_moment.h)
    // backward bookkeeping
    int64_t pending = 0;
    bool launched = false;
    GradSync::Wait wait;
    torch::Tensor staging, recv;  // gradients: the transient bucket and its reduced shard
    // full, decoder layers: the owned shard lives apart; param is defined only while gathered
    torch::Tensor shard_param;
    bool gathered = true;
    GradSync::Wait gather_wait;
  };
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;
  std::vector<char> ready;
  std::deque<size_t> in_flight;
  bool reducing = false;
  std::vector<int64_t> numel_of;
  std::vector<std::vector<int64_t>> shape_of;
  std::map<int64_t, std::vector<size_t>> layer_buckets;  // full: decoder layer -> its buckets
  bool materialized = false;
  bool ended = false;  // end_training(): parameters only
  int64_t peak_bytes = 0;

  // Bytes of trainable state held right now: what is kept between steps, and with `transient`
  // what lives only during a step too (reduction buckets, autograd's own gradients until
  // launch() copies them out).
  int64_t held_bytes(bool transient = true) const {
    int64_t n = 0;
    auto add = [&n](const torch::Tensor& t) {
      if (t.defined()) n += t.numel() * int64_t(t.element_size());
    };
    for (const auto& b : buckets) {
      for (const auto* t : {&b.param, &b.grad, &b.grad_shard, &b.exp_avg, &b.exp_avg_sq, &b.exp_avg_scale,
                            &b.exp_avg_sq_scale, &b.step, &b.shard_param})
        add(*t);
      if (!transient) continue;
      add(b.staging);
      add(b.recv);
      if (per_micro())
        for (size_t i : b.params) {
          const auto& g = params[i].grad();
          if (g.defined() && !(b.staging.defined() && g.is_alias_of(b.staging))) add(g);
        }
    }
    return n;
  }
  void note_peak() { peak_bytes = std::max(peak_bytes, held_bytes()); }

  // A bucket updated through fp32 copies and stochastic rounding (bf16 tensors, bf16 or int8 moments).
  bool lean(const Bucket& b) const {
    return b.exp_avg.scalar_type() != torch::kFloat32 || params[b.params.front()].scalar_type() == torch::kBFloat16;
  }
  bool per_micro() const { return o.sharding == Sharding::Gradients || o.sharding == Sharding::Full; }
  // A bucket that lives sharded and is gathered around its layer.
  bool layered(const Bucket& b) const { return o.sharding == Sharding::Full && b.layer >= 0; }
  bool hooks_active() const { return o.sharding == Sharding::Full && !materialized; }

  torch::Tensor owned_param(const Bucket& b) const {
    if (layered(b)) return b.shard_param;
    return shards == 1 ? b.param : b.param.narrow(0, rank * b.shard, b.shard);
  }

  // Points the bucket's tensors at views of b.param (gathered) or at empty placeholders.
  void repoint(Bucket& b, bool on) {
    for (size_t j = 0; j < b.params.size(); ++j) {
      auto& p = params[b.params[j]];
      const size_t i = b.params[j];
      if (on) p.set_data(b.param.narrow(0, b.offsets[j], numel_of[i]).view(shape_of[i]));
      else p.set_data(torch::empty({0}, b.shard_param.options()));
    }
  }
  void start_gather(size_t bi) {
    auto& b = buckets[bi];
    if (b.gathered || b.gather_wait) return;
    b.param = torch::empty({b.padded}, b.shard_param.options());
    b.gather_wait = sync->all_gather(b.param, b.shard_param);
    count(double(b.padded) * double(b.param.element_size()), 1);
    note_peak();
  }
  void finish_gather(size_t bi) {
    auto& b = buckets[bi];
    if (b.gathered) return;
    start_gather(bi);
    auto wait = std::move(b.gather_wait);
    b.gather_wait = nullptr;
    wait();
    repoint(b, true);
    b.gathered = true;
  }
  void release(size_t bi) {
    auto& b = buckets[bi];
    if (!layered(b)) return;
    if (b.gather_wait) finish_gather(bi);  // a prefetch still in flight
    if (!b.gathered) return;
    repoint(b, false);
    b.param = torch::Tensor();
    b.gathered = false;
  }
  void gather_layer(int64_t layer, int64_t prefetch) {
    torch::NoGradGuard no_grad;
    if (auto it = layer_buckets.find(layer); it != layer_buckets.end())
      for (size_t bi : it->second) finish_gather(bi);
    if (auto it = layer_buckets.find(prefetch); it != layer_buckets.end())
      for (size_t bi : it->second) start_gather(bi);
  }

  // models::LayerHooks
  void before_layer(int64_t i) override {
    if (hooks_active()) gather_layer(i, i + 1);
  }
  void after_layer(int64_t i, const torch::Tensor& out) override {
    if (!hooks_active()) return;
    if (auto it = layer_buckets.find(i); it != layer_buckets.end())
      for (size_t bi : it->second) release(bi);
    // The backward reaches layer i when out's gradient is ready: gather it again then, and
    // let autograd accumulate the layer's gradients straight into its reduction buckets.
    if (out.requires_grad()) out.register_hook([this, i](const torch::Tensor&) {
      if (!hooks_active()) return;
      gather_layer(i, i - 1);
      if (auto it = layer_buckets.find(i); reducing && it != layer_buckets.end())
        for (size_t bi : it->second) stage_grads(bi);
    });
  }
  // Points the bucket's gradients at a zeroed transient bucket, which autograd then
  // accumulates into (in place: no grad mode in backward), so launch() has nothing to copy.
  void stage_grads(size_t bi) {
    auto& b = buckets[bi];
    if (b.launched || b.staging.defined()) return;
    torch::NoGradGuard no_grad;
    b.staging = torch::zeros({b.padded}, b.shard_param.options());
    for (size_t j = 0; j < b.params.size(); ++j) {
      const size_t i = b.params[j];
      auto& p = params[i];
      auto view = b.staging.narrow(0, b.offsets[j], numel_of[i]).view(shape_of[i]);
      if (p.grad().defined()) view.copy_(p.grad());
      p.mutable_grad() = view;
    }
  }
  torch::Tensor owned_grad(const Bucket& b) const { return o.sharding == Sharding::None ? b.grad : b.grad_shard; }

  void count(double bytes, double factor) {
    if (world > 1) comm_bytes += bytes * factor * double(world - 1) / double(world);
  }

  void launch(size_t bi) {
    torch::NoGradGuard no_grad;
    auto& b = buckets[bi];
    b.launched = true;
    note_peak();
    const double bytes = double(b.padded) * double(b.elem);
    if (o.sharding == Sharding::None) {
      b.wait = sync->allreduce_sum(b.grad);
      count(bytes, 2);
    } else if (o.sharding == Sharding::Optimizer) {
      b.wait = sync->reduce_scatter_sum(b.grad_shard, b.grad);
      count(bytes, 1);
    } else {
      // Copy this micro-batch's gradients out of the tensors and free them (full: and the
      // gathered layer, whose backward is done).
      const auto opts = b.grad_shard.options();
      const bool staged = b.staging.defined();  // full: autograd accumulated into it already
      if (!staged) b.staging = torch::zeros({b.padded}, opts);
      for (size_t j = 0; j < b.params.size(); ++j) {
        auto& p = params[b.params[j]];
        if (!p.grad().defined()) continue;
        if (!staged) b.staging.narrow(0, b.offsets[j], numel_of[b.params[j]]).copy_(p.grad().reshape({-1}));
        p.mutable_grad().reset();
      }
      release(bi);
      b.recv = torch::empty({b.shard}, opts);
      note_peak();
      b.wait = sync->reduce_scatter_sum(b.recv, b.staging);
      count(bytes, 1);
      in_flight.push_back(bi);
      while (in_flight.size() > kMaxInFlight) {
        const size_t oldest = in_flight.front();
        in_flight.pop_front();
        complete(oldest);
      }
    }
  }

  void complete(size_t bi) {
    auto& b = buckets[bi];
    if (!b.wait) return;
    auto wait = std::move(b.wait);
    b.wait = nullptr;
    wait();
    if (per_micro()) {
      torch::NoGradGuard no_grad;
      b.grad_shard.add_(b.recv);
      b.staging = torch::Tensor();
      b.recv = torch::Tensor();
    }
  }

  void on_ready(size_t i) {
    if (!reducing) return;
    OB_CHECK(!ready[i], "dist: a trainable tensor received two gradients in one backward; ParamSync needs every "
                        "trainable tensor used once per forward");
    ready[i] = 1;
    auto& b = buckets[bucket_of[i]];
    if (--b.pending == 0) launch(bucket_of[i]);
  }

  // Starts a micro-batch: the previous one's reductions are complete, hooks re-armed.
  void arm(bool reduce) {
    for (size_t bi = 0; bi < buckets.size(); ++bi) complete(bi);
    in_flight.clear();
    reducing = reduce;
    std::fill(ready.begin(), ready.end(), 0);
    for (auto& b : buckets) {
      b.pending = static_cast<int64_t>(b.params.size());
      b.launched = false;
    }
  }

  // Every rank must pack the same tensors: compare (count, elements) across ranks.
  void check_same_layout() {
    int64_t total = 0;
    for (const auto& p : params) total += p.numel();
    const double n = double(params.size()), t = double(total);
    const double m1 = sync->mean(n), m2 = sync->mean(n * n), m3 = sync->mean(t), m4 = sync->mean(t * t);
    OB_CHECK(m2 - m1 * m1 == 0 && m4 - m3 * m3 == 0, "dist: rank ", rank, " trains ", params.size(),
             " tensors with ", total, " values, but another rank trains a different set; every rank must build the "
             "same model");
  }
};

ParamSync::ParamSync(std::vector<torch::Tensor> params, GradSync& sync, const ParamSyncOptions& options,
                     const std::vector<int64_t>& layer_of)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.sync = &sync;
  m.o = options;
  m.params = std::move(params);
  m.world = sync.world_size();
  m.rank = sync.rank();
  m.shards = options.sharding == Sharding::None ? 1 : m.world;
  OB_CHECK(!m.params.empty(), "dist: ParamSync has no trainable tensors");
  OB_CHECK(options.bucket_bytes > 0, "dist.bucket_mb must be > 0");
  OB_CHECK(layer_of.empty() || layer_of.size() == m.params.size(), "dist: ParamSync got ", layer_of.size(),
           " layer indices for ", m.params.size(), " tensors");
  OB_CHECK(options.lr_scale.empty() || options.lr_scale.size() == m.params.size(), "dist: ParamSync got ",
           options.lr_scale.size(), " learning-rate scales for ", m.params.size(), " tensors");
  auto layer = [&](size_t i) { return layer_of.empty() ? int64_t(-1) : layer_of[i]; };
  auto lr_scale = [&](size_t i) { return options.lr_scale.empty() ? 1.0 : options.lr_scale[i]; };
  for (const auto& p : m.params) {
    m.numel_of.push_back(p.numel());
    m.shape_of.push_back(p.sizes().vec());
  }
  if (m.world > 1) m.check_same_layout();
  torch::NoGradGuard no_grad;

  // Buckets: tensors of one dtype, device and lr scale in order, about bucket_bytes each, never
  // spanning two layers. Each such kind has its own open bucket, so interleaved kinds (a bf16
  // latent W between fp32 g and h) make one bucket series per kind, not one bucket per tensor.
  std::map<std::tuple<int, std::string, double>, size_t> open;  // kind -> its open bucket
  m.bucket_of.resize(m.params.size());
  std::vector<int64_t> numel, bytes;
  for (size_t i = 0; i < m.params.size(); ++i) {
    const auto& p = m.params[i];
    OB_CHECK(p.is_leaf() && (options.frozen || p.requires_grad()), "dist: ParamSync tensor ", i,
             " is not a trainable leaf");
    const int64_t b = p.numel() * int64_t(p.element_size());
    if (!m.buckets.empty() && m.buckets.back().layer != layer(i)) open.clear();
    const auto key = std::make_tuple(int(p.scalar_type()), p.device().str(), lr_scale(i));
    auto it = open.find(key);
    if (it == open.end() || bytes[it->second] + b > options.bucket_bytes) {
      m.buckets.emplace_back();
      m.buckets.back().layer = layer(i);
      m.buckets.back().lr_scale = lr_scale(i);
      numel.push_back(0);
      bytes.push_back(0);
      it = open.insert_or_assign(key, m.buckets.size() - 1).first;
    }
    const size_t bi = it->second;
    m.buckets[bi].params.push_back(i);
    m.buckets[bi].offsets.push_back(numel[bi]);
    m.bucket_of[i] = bi;
    numel[bi] += p.numel();
    bytes[bi] += b;
  }
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) {
    auto& b = m.buckets[bi];
    const auto opts = m.params[b.params.front()].options().requires_grad(false);
    b.padded = (numel[bi] + m.shards - 1) / m.shards * m.shards;
    b.elem = int64_t(m.params[b.params.front()].element_size());
    b.shard = b.padded / m.shards;
    b.param = torch::zeros({b.padded}, opts);
    if (!options.frozen) {
      if (!m.per_micro()) b.grad = torch::zeros({b.padded}, opts);
      if (options.sharding != Sharding::None) b.grad_shard = torch::zeros({b.shard}, opts);
      if (options.state_dtype == torch::kChar) {  // 8-bit blockwise codes and their scales
        auto qm = optim::make_quantized_moment(b.shard, /*is_signed=*/true, opts);
        auto qv = optim::make_quantized_moment(b.shard, /*is_signed=*/false, opts);
        b.exp_avg = qm.codes, b.exp_avg_scale = qm.scales;
        b.exp_avg_sq = qv.codes, b.exp_avg_sq_scale = qv.scales;
      } else {
        b.exp_avg = torch::zeros({b.shard}, opts.dtype(options.state_dtype));
        b.exp_avg_sq = torch::zeros({b.shard}, opts.dtype(options.state_dtype));
      }
      b.step = torch::zeros({}, opts.dtype(torch::kFloat32));
    }
    for (size_t j = 0; j < b.params.size(); ++j) {
      auto& p = m.params[b.params[j]];
      auto view = b.param.narrow(0, b.offsets[j], p.numel());
      view.copy_(p.detach().reshape({-1}));
      p.set_data(view.view(p.sizes()));
      if (b.grad.defined()) p.mutable_grad() = b.grad.narrow(0, b.offsets[j], p.numel()).view(p.sizes());
      else p.mutable_grad().reset();
    }
    if (m.layered(b)) {
      // Keep only this rank's shard; the layer is gathered when it runs.
      b.shard_param = b.param.narrow(0, m.rank * b.shard, b.shard).clone();
      m.layer_buckets[b.layer].push_back(bi);
      m.release(bi);
    }
  }
  m.ready.assign(m.params.size(), 0);
  if (options.frozen) {
    OB_CHECK(options.sharding == Sharding::Full, "dist: frozen tensors are only sharded layer by layer (full)");
    m.ended = true;  // no backward, step or optimizer state
    return;
  }
  Impl* self = impl_.get();
  for (size_t i = 0; i < m.params.size(); ++i)
    torch::autograd::impl::set_post_acc_grad_hooks(
        m.params[i], std::make_unique<GradReadyHook>([self](size_t k) { self->on_ready(k); }, i));
  m.arm(false);
}

ParamSync::~ParamSync() {
  if (!impl_ || impl_->o.frozen) return;
  for (auto& p : impl_->params) {
    torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
    p.mutable_grad().reset();  // the views of the gradient buffers: free them with the rest
  }
  // Unwaited work (an exception mid-backward) is left to the group; nothing waits here.
}

void ParamSync::begin_backward(bool last) {
  auto& m = *impl_;
  OB_CHECK(!m.materialized && !m.ended, "dist: ParamSync training has ended; no more backwards");
  m.arm(last || m.per_micro());
}

void ParamSync::finish_backward() {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  // Buckets whose hooks did not all fire (a tensor without a gradient) go now, in order.
  if (m.reducing)
    for (size_t bi = 0; bi < m.buckets.size(); ++bi)
      if (!m.buckets[bi].launched) m.launch(bi);
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) {
    m.complete(bi);
    m.release(bi);  // full: a layer whose tensors got no gradient
  }
  m.in_flight.clear();
  m.reducing = false;
  if (m.world > 1)
    for (auto& b : m.buckets) m.owned_grad(b).mul_(1.0 / double(m.world));
}

std::vector<torch::Tensor> ParamSync::grads() const {
  std::vector<torch::Tensor> out;
  for (const auto& b : impl_->buckets) out.push_back(impl_->owned_grad(b));
  return out;
}

double ParamSync::clip_grad_norm(double max_norm) {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  const auto gs = grads();
  auto sq = torch::zeros({1}, gs.front().options().dtype(torch::kFloat64));
  for (const auto& g : gs)  // bf16 gradients: the norm accumulated and returned in fp32
    sq += (g.scalar_type() == torch::kBFloat16 ? at::linalg_vector_norm(g, 2, {}, false, torch::kFloat32) : g.norm(2))
              .to(torch::kFloat64)
              .pow(2);
  if (m.shards > 1) m.sync->allreduce_sum(sq)();
  const double norm = std::sqrt(sq.item<double>());
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1)
    for (const auto& g : gs) g.mul_(coef);
  return norm;
}

void ParamSync::step(double lr) {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  OB_CHECK(!m.materialized && !m.ended, "dist: ParamSync training has ended; no more steps");
  auto adamw = [&](at::TensorList ps, at::TensorList gs, at::TensorList avg, at::TensorList avg_sq,
                   at::TensorList steps, double lr_scale) {
    at::_fused_adamw_(ps, gs, avg, avg_sq, {}, steps, lr * lr_scale, m.o.beta1, m.o.beta2, m.o.weight_decay,
                      m.o.eps, /*amsgrad=*/false, /*maximize=*/false);
  };
  // fp32 buckets with fp32 state: one fused call over all of them per lr scale.
  struct Group {
    std::vector<torch::Tensor> ps, gs, avg, avg_sq, steps;
  };
  std::map<double, Group> groups;
  for (auto& b : m.buckets) {
    b.step.add_(1);  // the kernel reads the step count; torch.optim counts first
    if (m.lean(b)) continue;
    auto& g = groups[b.lr_scale];
    g.ps.push_back(m.owned_param(b));
    g.gs.push_back(m.owned_grad(b));
    g.avg.push_back(b.exp_avg);
    g.avg_sq.push_back(b.exp_avg_sq);
    g.steps.push_back(b.step);
  }
  for (auto& [scale, g] : groups) adamw(g.ps, g.gs, g.avg, g.avg_sq, g.steps, scale);
  // Lean buckets, one at a time: AdamW in fp32 copies, then each bf16 tensor gets its new value
  // back by stochastic rounding (an update below bf16's spacing still moves it, on average).
  // Every bucket has taken the same steps: one step count seeds them all.
  const uint64_t s = std::any_of(m.buckets.begin(), m.buckets.end(), [&](const auto& b) { return m.lean(b); })
                         ? static_cast<uint64_t>(m.buckets.front().step.item<double>())
                         : 0;
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) {
    auto& b = m.buckets[bi];
    if (!m.lean(b)) continue;
    const torch::Tensor p = m.owned_param(b), g = m.owned_grad(b);
    const bool int8 = b.exp_avg_scale.defined();
    optim::QuantizedMoment qm{b.exp_avg, b.exp_avg_scale, true}, qv{b.exp_avg_sq, b.exp_avg_sq_scale, false};
    auto fp32 = [](const torch::Tensor& t) { return t.to(torch::kFloat32); };  // t itself when fp32
    const torch::Tensor p32 = fp32(p), m32 = int8 ? optim::dequantize(qm) : fp32(b.exp_avg),
                        v32 = int8 ? optim::dequantize(qv) : fp32(b.exp_avg_sq);
    adamw({p32}, {fp32(g)}, {m32}, {v32}, {b.step}, b.lr_scale);
    // Back into the stored dtypes; bf16 and int8 by stochastic rounding, one random stream per tensor.
    const int64_t offset = m.shards == 1 ? 0 : m.rank * b.shard;  // the shard's place in its bucket
    auto seed = [&](uint64_t stream) { return optim::mix_seed({m.o.seed, s, uint64_t(bi), stream}); };
    auto store = [&](torch::Tensor dst, const torch::Tensor& src, uint64_t stream) {
      if (dst.scalar_type() == torch::kFloat32) return;  // updated in place
      if (dst.scalar_type() != torch::kBFloat16) return void(dst.copy_(src));
      optim::stochastic_round_(dst, src, seed(stream), offset);
    };
    store(p, p32, 0);
    if (int8) {
      optim::quantize_(qm, m32, seed(1), offset);
      optim::quantize_(qv, v32, seed(2), offset);
    } else {
      store(b.exp_avg, m32, 1);
      store(b.exp_avg_sq, v32, 2);
    }
  }
  gather_params();
}

void ParamSync::gather_params() {
  auto& m = *impl_;
  if (m.shards == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<GradSync::Wait> waits;
  std::vector<torch::Tensor> sent;
  for (auto& b : m.buckets) {
    if (m.layered(b)) continue;  // gathered when its layer runs
    sent.push_back(m.owned_param(b).clone());  // the input must not alias the output
    waits.push_back(m.sync->all_gather(b.param, sent.back()));
    m.count(double(b.padded) * double(b.param.element_size()), 1);
  }
  for (auto& w : waits) w();
}

void ParamSync::zero_grad() {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  for (auto& b : m.buckets) {
    if (b.grad.defined()) b.grad.zero_();
    if (b.grad_shard.defined()) b.grad_shard.zero_();
  }
  if (m.per_micro())
    for (auto& p : m.params) p.mutable_grad().reset();
}

std::map<std::string, torch::Tensor> ParamSync::state() const {
  const auto& m = *impl_;
  OB_CHECK(!m.ended, "dist: ParamSync training has ended; its optimizer state is gone");
  std::map<std::string, torch::Tensor> out;
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) {
    const auto& b = m.buckets[bi];
    char key[32];
    std::snprintf(key, sizeof key, "bucket%04zu.", bi);
    const std::string k = key;
    out.emplace(k + "param", m.owned_param(b));
    out.emplace(k + "exp_avg", b.exp_avg);
    out.emplace(k + "exp_avg_sq", b.exp_avg_sq);
    if (b.exp_avg_scale.defined()) {
      out.emplace(k + "exp_avg_scale", b.exp_avg_scale);
      out.emplace(k + "exp_avg_sq_scale", b.exp_avg_sq_scale);
    }
    out.emplace(k + "step", b.step);
  }
  return out;
}

models::LayerHooks* ParamSync::layer_hooks() {
  return impl_->o.sharding == Sharding::Full ? impl_.get() : nullptr;
}

void ParamSync::materialize() {
  auto& m = *impl_;
  if (m.o.sharding != Sharding::Full || m.materialized) return;
  torch::NoGradGuard no_grad;
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) m.start_gather(bi);
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) m.finish_gather(bi);
  m.materialized = true;
}

void ParamSync::hold_layer(int64_t layer) {
  auto& m = *impl_;
  if (!m.hooks_active()) return;
  torch::NoGradGuard no_grad;
  for (auto& [l, bis] : m.layer_buckets)
    if (l != layer)
      for (size_t bi : bis) m.release(bi);
  m.gather_layer(layer, /*prefetch=*/-1);
}

const std::vector<int64_t>& ParamSync::shape(size_t i) const {
  OB_CHECK(i < impl_->shape_of.size(), "dist: ParamSync has no tensor ", i);
  return impl_->shape_of[i];
}

void ParamSync::end_training() {
  auto& m = *impl_;
  for (size_t bi = 0; bi < m.buckets.size(); ++bi) m.complete(bi);
  m.in_flight.clear();
  m.reducing = false;
  for (auto& p : m.params) {
    torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
    p.mutable_grad().reset();
  }
  for (auto& b : m.buckets)
    for (auto* t : {&b.grad, &b.grad_shard, &b.exp_avg, &b.exp_avg_sq, &b.exp_avg_scale, &b.exp_avg_sq_scale,
                    &b.staging, &b.recv})
      *t = torch::Tensor();
  m.ended = true;
}

int64_t ParamSync::num_shards() const { return impl_->shards; }
Sharding ParamSync::sharding() const { return impl_->o.sharding; }
GradSync& ParamSync::sync() const { return *impl_->sync; }
double ParamSync::comm_bytes() const { return impl_->comm_bytes; }

int64_t ParamSync::peak_state_bytes() const { return std::max(impl_->peak_bytes, impl_->held_bytes()); }
void ParamSync::reset_peak_state_bytes() { impl_->peak_bytes = impl_->held_bytes(); }

int64_t ParamSync::state_bytes() const { return impl_->held_bytes(/*transient=*/false); }

}  // namespace onebit::dist
