#include "onebit/nn/fused_ops.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorUtils.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "onebit/core/error.h"

#ifdef ONEBIT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/fused_ops.h"
#include "kernels/cuda/launch.h"
#endif

namespace onebit::nn {

namespace {
std::atomic<bool>& fused_flag() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("ONEBIT_FUSED_OPS");
    if (!env) return true;
    const std::string v(env);
    OB_CHECK(v == "0" || v == "1", "ONEBIT_FUSED_OPS must be 0 or 1, got '", v, "'");
    return v == "1";
  }()};
  return on;
}

thread_local int unfused_depth = 0;  // UnfusedScope nesting on this thread

// Whether an op must run its ATen sequence: fused ops off, or autograd on. Grad mode decides,
// not whether an input requires grad: a frozen norm on a no-grad input inside a training step
// then computes what it computes under activation checkpointing (whose forward runs without
// grad, in an UnfusedScope, and whose recompute runs with it).
bool use_ops() { return !fused_ops() || unfused_depth > 0 || torch::GradMode::is_enabled(); }

bool fused_dtype(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kHalf;
}

bool fused_device(const torch::Tensor& x) {
#ifdef ONEBIT_WITH_CUDA
  return x.device().is_cpu() || x.device().is_cuda();
#else
  return x.device().is_cpu();
#endif
}

#ifdef ONEBIT_WITH_CUDA
kernels::cuda::Act act_of(torch::ScalarType t) {
  if (t == torch::kBFloat16) return kernels::cuda::Act::BF16;
  if (t == torch::kHalf) return kernels::cuda::Act::F16;
  return kernels::cuda::Act::F32;
}
void check_launch(const char* err, const char* what) {
  OB_CHECK(err == nullptr, what, ": CUDA error at its launch (or from earlier work on the device): ", err ? err : "",
           err ? kernels::cuda::programmatic_launch_note() : "");
}
// The current stream of t's device (a cudaStream_t), where the kernels launch.
void* stream_of(const torch::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
#endif

// The op sequences the fused passes replace (and run under autograd).
torch::Tensor rms_norm_ops(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto h = x.to(torch::kFloat32);
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}
torch::Tensor rotary_ops(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// T(v) as a float: the rounding of an ATen op whose result has dtype T.
template <typename T>
inline float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

bool norm_weight_ok(const torch::Tensor& x, const torch::Tensor& weight) {
  return x.dim() >= 1 && x.numel() > 0 && fused_dtype(x.scalar_type()) && weight.scalar_type() == x.scalar_type() &&
         weight.dim() == 1 && weight.size(0) == x.size(-1) && weight.is_contiguous() &&
         weight.device() == x.device() && fused_device(x);
}

// One row of HF's RMSNorm on the CPU: y = w ⊙ T(x · rsqrt(mean(x²) + eps)).
template <typename T>
void rms_norm_row(const T* xr, const T* w, T* yr, int64_t dim, float eps) {
  double sq = 0;  // (ATen sums in fp32, in its own order: both are within fp32 rounding of this)
  for (int64_t i = 0; i < dim; ++i) {
    const float v = static_cast<float>(xr[i]);
    sq += double(v * v);
  }
  const float rstd = 1.0f / std::sqrt(float(sq / double(dim)) + eps);
  for (int64_t i = 0; i < dim; ++i) {
    const float hn = round_to<T>(static_cast<float>(xr[i]) * rstd);
    yr[i] = static_cast<T>(static_cast<float>(w[i]) * hn);
  }
}

// x [..., dim] as rows `stride` elements apart: x itself when its leading dimensions collapse
// into one (no view is made: at one token each ATen operator costs about a microsecond), else
// a contiguous copy kept in `copy`.
struct Rows {
  const torch::Tensor& t;
  int64_t stride;
};
Rows rows_of(const torch::Tensor& x, torch::Tensor& copy) {
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  if (x.stride(-1) == 1) {
    if (const auto st = at::detail::computeStride(x.sizes(), x.strides(), c10::IntArrayRef{rows, dim}))
      return {x, (*st)[0]};
  }
  copy = x.reshape({rows, dim}).contiguous();
  return {copy, dim};
}

// The norm passes over rows: for each row, h = T(x + r) first when r is given (written to h,
// then normalised), else x; the result to y. h and y contiguous.
void norm_rows(const Rows& x, const Rows* r, const torch::Tensor& weight, double eps, torch::Tensor* h,
               torch::Tensor& y) {
  const int64_t dim = x.t.size(-1), rows = x.t.numel() / dim;
#ifdef ONEBIT_WITH_CUDA
  if (x.t.device().is_cuda()) {
    const c10::cuda::CUDAGuard guard(x.t.device());
    kernels::cuda::RmsNormArgs a;
    a.x = x.t.const_data_ptr();
    a.x_row_stride = x.stride;
    if (r) {
      a.r = r->t.const_data_ptr();
      a.r_row_stride = r->stride;
      a.h = h->data_ptr();
    }
    a.w = weight.const_data_ptr();
    a.y = y.data_ptr();
    a.rows = rows, a.dim = dim;
    a.eps = float(eps);
    a.act = act_of(x.t.scalar_type());
    check_launch(kernels::cuda::rms_norm(a, stream_of(x.t)), r ? "add_rms_norm" : "rms_norm");
    return;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.t.scalar_type(), "onebit::rms_norm", [&] {
    const scalar_t* xp = x.t.const_data_ptr<scalar_t>();
    const scalar_t* rp = r ? r->t.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    scalar_t* hp = h ? h->data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / dim), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        const scalar_t* src = xp + row * x.stride;
        if (rp) {
          const scalar_t* rr = rp + row * r->stride;
          scalar_t* hr = hp + row * dim;
          for (int64_t i = 0; i < dim; ++i)
            hr[i] = static_cast<scalar_t>(static_cast<float>(src[i]) + static_cast<float>(rr[i]));
          src = hr;
        }
        rms_norm_row(src, wp, yp + row * dim, dim, float(eps));
      }
    });
  });
}
}  // namespace

void set_fused_ops(bool on) { fused_flag() = on; }
bool fused_ops() { return fused_flag(); }
UnfusedScope::UnfusedScope() { ++unfused_depth; }
UnfusedScope::~UnfusedScope() { --unfused_depth; }

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (use_ops() || !norm_weight_ok(x, weight)) return rms_norm_ops(x, weight, eps);
  RECORD_FUNCTION("onebit::rms_norm", std::vector<c10::IValue>());
  torch::Tensor copy;
  torch::Tensor y = torch::empty(x.sizes(), x.options());
  norm_rows(rows_of(x, copy), nullptr, weight, eps, nullptr, y);
  return y;
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                                     const torch::Tensor& weight, double eps) {
  if (use_ops() || !norm_weight_ok(x, weight) || residual.sizes() != x.sizes() ||
      residual.scalar_type() != x.scalar_type() || residual.device() != x.device()) {
    auto h = x + residual;
    return {h, rms_norm(h, weight, eps)};
  }
  RECORD_FUNCTION("onebit::add_rms_norm", std::vector<c10::IValue>());
  torch::Tensor x_copy, r_copy;
  torch::Tensor h = torch::empty(x.sizes(), x.options()), y = torch::empty(x.sizes(), x.options());
  const Rows rr = rows_of(residual, r_copy);
  norm_rows(rows_of(x, x_copy), &rr, weight, eps, &h, y);
  return {h, y};
}

torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up) {
#ifdef ONEBIT_WITH_CUDA
  // CUDA only: on the CPU, ATen's two operators (a vectorised exp) beat one scalar pass.
  const bool fused = !use_ops() && gate.dim() >= 1 && gate.numel() > 0 && gate.device().is_cuda() &&
                     fused_dtype(gate.scalar_type()) && up.scalar_type() == gate.scalar_type() &&
                     up.sizes() == gate.sizes() && up.device() == gate.device();
  if (fused) {
    RECORD_FUNCTION("onebit::silu_mul", std::vector<c10::IValue>());
    torch::Tensor g_copy, u_copy;
    const Rows g = rows_of(gate, g_copy), u = rows_of(up, u_copy);
    torch::Tensor y = torch::empty(gate.sizes(), gate.options());
    const c10::cuda::CUDAGuard device_guard(gate.device());
    kernels::cuda::SiluMulArgs a;
    a.g = g.t.const_data_ptr();
    a.g_row_stride = g.stride;
    a.u = u.t.const_data_ptr();
    a.u_row_stride = u.stride;
    a.y = y.data_ptr();
    a.dim = gate.size(-1), a.rows = gate.numel() / a.dim;
    a.act = act_of(gate.scalar_type());
    check_launch(kernels::cuda::silu_mul(a, stream_of(gate)), "silu_mul");
    return y;
  }
#endif
  return torch::silu(gate) * up;
}

namespace {
// Whether the single RoPE pass covers x [B, H, T, D] with cos, sin.
bool rotary_fusable(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const auto dt = x.scalar_type();
  const int64_t D = x.dim() == 4 ? x.size(3) : 0;
  return !use_ops() && x.dim() == 4 && D % 2 == 0 && fused_dtype(dt) && cos.scalar_type() == dt &&
         sin.scalar_type() == dt && cos.sizes() == sin.sizes() && cos.dim() == 4 && cos.size(1) == 1 &&
         cos.size(2) == x.size(2) && cos.size(3) == D && (cos.size(0) == 1 || cos.size(0) == x.size(0)) &&
         x.stride(3) == 1 && cos.device() == x.device() && sin.device() == x.device() && fused_device(x);
}

// The RoPE pass: rotary(x) into y (strides of y, the last 1) at row slots[t] (or t) for token t,
// and v copied to v_out at the same places when given (v strided as x, v_out as y); with x2,
// also rotary(x2) into y2 (contiguous), on CUDA in the same launch.
void rotary_pass(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& y,
                 const torch::Tensor& slots, const torch::Tensor* v, torch::Tensor* v_out,
                 const torch::Tensor* x2 = nullptr, torch::Tensor* y2 = nullptr) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  const auto dt = x.scalar_type();
  const auto c = cos.contiguous(), s = sin.contiguous();
  const int64_t sb = x.stride(0), sh = x.stride(1), st = x.stride(2), cb = c.size(0) == 1 ? 0 : T * D;
  const int64_t yb = y.stride(0), yh = y.stride(1), yt = y.stride(2);
#ifdef ONEBIT_WITH_CUDA
  if (x.device().is_cuda()) {
    const c10::cuda::CUDAGuard guard(x.device());
    kernels::cuda::RotaryArgs a;
    a.x = x.const_data_ptr();
    a.B = B, a.H = H, a.T = T, a.D = D;
    a.sb = sb, a.sh = sh, a.st = st;
    a.cos = c.const_data_ptr();
    a.sin = s.const_data_ptr();
    a.cos_batch_stride = cb;
    a.y = y.data_ptr();
    a.y_sb = yb, a.y_sh = yh, a.y_st = yt;
    a.slots = slots.defined() ? slots.const_data_ptr<int64_t>() : nullptr;
    a.v = v ? v->const_data_ptr() : nullptr;
    a.v_out = v_out ? v_out->data_ptr() : nullptr;
    if (x2) {
      a.x2 = x2->const_data_ptr();
      a.H2 = x2->size(1), a.sb2 = x2->stride(0), a.sh2 = x2->stride(1), a.st2 = x2->stride(2);
      a.y2 = y2->data_ptr();
    }
    a.act = act_of(dt);
    check_launch(kernels::cuda::rotary(a, stream_of(x)), "rotary");
    return;
  }
#endif
  if (x2) rotary_pass(*x2, cos, sin, *y2, torch::Tensor(), nullptr, nullptr);
  const int64_t half = D / 2;
  const int64_t* slot = slots.defined() ? slots.const_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "onebit::rotary", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t *cp = c.const_data_ptr<scalar_t>(), *sp = s.const_data_ptr<scalar_t>();
    scalar_t* op = y.data_ptr<scalar_t>();
    const scalar_t* vp = v ? v->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* vo = v_out ? v_out->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B * H * T, std::max<int64_t>(1, 16384 / D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / (H * T), h = (r / T) % H, t = r % T;
        const int64_t src = b * sb + h * sh + t * st, dst = b * yb + h * yh + (slot ? slot[t] : t) * yt;
        const scalar_t* xr = xp + src;
        const scalar_t *cr = cp + b * cb + t * D, *sr = sp + b * cb + t * D;
        scalar_t* o = op + dst;
        // Each product rounded to the dtype, then the rounded sum: as x·cos + rotate_half(x)·sin.
        auto put = [&](int64_t i, float rot) {
          const float a = round_to<scalar_t>(static_cast<float>(xr[i]) * static_cast<float>(cr[i]));
          const float m = round_to<scalar_t>(rot * static_cast<float>(sr[i]));
          o[i] = static_cast<scalar_t>(a + m);
        };
        for (int64_t i = 0; i < half; ++i) put(i, -static_cast<float>(xr[i + half]));
        for (int64_t i = half; i < D; ++i) put(i, static_cast<float>(xr[i - half]));
        if (vp) std::copy(vp + src, vp + src + D, vo + dst);
      }
    });
  });
}
}  // namespace

torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (!rotary_fusable(x, cos, sin)) return rotary_ops(x, cos, sin);
  RECORD_FUNCTION("onebit::rotary", std::vector<c10::IValue>());
  auto out = torch::empty(x.sizes(), x.options());
  rotary_pass(x, cos, sin, out, torch::Tensor(), nullptr, nullptr);
  return out;
}

torch::Tensor rotary_store_kv(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& k_cache,
                              torch::Tensor& v_cache, const torch::Tensor& slots) {
  const bool fused = rotary_fusable(q, cos, sin) && rotary_fusable(k, cos, sin) && q.scalar_type() == k.scalar_type() &&
                     q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3) &&
                     v.sizes() == k.sizes() && v.strides() == k.strides() &&
                     v.scalar_type() == k.scalar_type() && v.device() == k.device() && k_cache.dim() == 4 &&
                     k_cache.scalar_type() == k.scalar_type() && k_cache.device() == k.device() &&
                     v_cache.sizes() == k_cache.sizes() && v_cache.strides() == k_cache.strides() &&
                     v_cache.scalar_type() == k_cache.scalar_type() && v_cache.device() == k.device() &&
                     k_cache.size(0) == k.size(0) && k_cache.size(1) == k.size(1) && k_cache.size(3) == k.size(3) &&
                     k_cache.stride(3) == 1 && slots.scalar_type() == torch::kLong && slots.dim() == 1 &&
                     slots.size(0) == k.size(2) && slots.is_contiguous() && slots.device() == k.device();
  if (!fused) {
    k_cache.index_copy_(2, slots, rotary(k, cos, sin));
    v_cache.index_copy_(2, slots, v);
    return rotary(q, cos, sin);
  }
  RECORD_FUNCTION("onebit::rotary_store_kv", std::vector<c10::IValue>());
  auto q_out = torch::empty(q.sizes(), q.options());
  rotary_pass(k, cos, sin, k_cache, slots, &v, &v_cache, &q, &q_out);
  return q_out;
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, bool causal, double scale) {
  const auto dt = q.scalar_type();
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2);
  const bool mask_ok = !mask.defined() || (mask.scalar_type() == torch::kBool && mask.dim() == 4 &&
                                           (mask.size(0) == 1 || mask.size(0) == B) && mask.size(1) == 1 &&
                                           mask.size(2) == T && mask.size(3) == S && mask.device() == q.device());
  const bool fused = !use_ops() && T == 1 && fused_dtype(dt) && k.scalar_type() == dt &&
                     v.scalar_type() == dt && k.dim() == 4 && v.sizes() == k.sizes() && k.size(0) == B &&
                     k.size(3) == D && Hkv >= 1 && H % Hkv == 0 && S >= 1 && S <= 8192 && D <= 256 &&
                     q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && k.device() == q.device() &&
                     v.device() == q.device() && mask_ok && fused_device(q);
  if (!fused) {
    std::optional<torch::Tensor> m;
    if (mask.defined()) m = mask;
    auto out = at::scaled_dot_product_attention(q, k, v, m, 0.0, causal, scale, /*enable_gqa=*/Hkv != H);
    return out.transpose(1, 2).reshape({B, T, -1});
  }
  // One query token: the causal mask allows every key (the token is the last one).
  RECORD_FUNCTION("onebit::attention", std::vector<c10::IValue>());
  const torch::Tensor mc = mask.defined() ? mask.contiguous() : torch::Tensor();
  const int64_t mask_bs = mc.defined() && mc.size(0) == B && B > 1 ? T * S : 0;
  auto y = torch::empty({B, T, H * D}, q.options());
#ifdef ONEBIT_WITH_CUDA
  if (q.device().is_cuda()) {
    static_assert(kernels::cuda::kMaxDecodeKeys == 8192 && kernels::cuda::kMaxDecodeHeadDim == 256);
    const c10::cuda::CUDAGuard guard(q.device());
    kernels::cuda::DecodeAttentionArgs a;
    a.q = q.const_data_ptr(), a.q_sb = q.stride(0), a.q_sh = q.stride(1), a.q_st = q.stride(2);
    a.k = k.const_data_ptr(), a.k_sb = k.stride(0), a.k_sh = k.stride(1), a.k_ss = k.stride(2);
    a.v = v.const_data_ptr(), a.v_sb = v.stride(0), a.v_sh = v.stride(1), a.v_ss = v.stride(2);
    a.mask = mc.defined() ? mc.const_data_ptr<bool>() : nullptr;
    a.mask_batch_stride = mask_bs;
    a.y = y.data_ptr();
    a.B = B, a.H = H, a.Hkv = Hkv, a.T = T, a.S = S, a.D = D;
    a.scale = float(scale);
    a.act = act_of(dt);
    // Long spans: the keys split over blocks, their parts combined by a second launch.
    a.splits = kernels::cuda::decode_attention_splits(B * H * T, S, kernels::cuda::multiprocessors(q.device().index()));
    torch::Tensor ws;
    if (a.splits > 1) {
      ws = torch::empty({kernels::cuda::decode_attention_workspace_floats(a)}, q.options().dtype(torch::kFloat32));
      a.workspace = ws.data_ptr<float>();
    }
    check_launch(kernels::cuda::decode_attention(a, stream_of(q)), "attention");
    return y;
  }
#endif
  const int64_t group = H / Hkv;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "onebit::attention", [&] {
    const scalar_t *qp = q.const_data_ptr<scalar_t>(), *kp = k.const_data_ptr<scalar_t>(),
                   *vp = v.const_data_ptr<scalar_t>();
    const bool* mp = mc.defined() ? mc.const_data_ptr<bool>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * H * T, 1, [&](int64_t r0, int64_t r1) {
      std::vector<float> qs(static_cast<size_t>(D)), p(static_cast<size_t>(S)), acc(static_cast<size_t>(D));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = r % T, h = (r / T) % H, b = r / (T * H), hk = h / group;
        const scalar_t* qr = qp + b * q.stride(0) + h * q.stride(1) + t * q.stride(2);
        const scalar_t* kb = kp + b * k.stride(0) + hk * k.stride(1);
        const scalar_t* vb = vp + b * v.stride(0) + hk * v.stride(1);
        const bool* mr = mp ? mp + b * mask_bs + t * S : nullptr;
        for (int64_t d = 0; d < D; ++d) qs[d] = static_cast<float>(qr[d]) * float(scale);
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < S; ++j) {
          if (mr && !mr[j]) {
            p[j] = -std::numeric_limits<float>::infinity();
            continue;
          }
          const scalar_t* kr = kb + j * k.stride(2);
          // Four running sums (which the compiler may keep in one vector register), then theirs.
          float s4[4] = {0.f, 0.f, 0.f, 0.f};
          int64_t d = 0;
          for (; d + 4 <= D; d += 4)
            for (int u = 0; u < 4; ++u) s4[u] += qs[d + u] * static_cast<float>(kr[d + u]);
          float s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
          for (; d < D; ++d) s += qs[d] * static_cast<float>(kr[d]);
          p[j] = s;
          mx = std::max(mx, s);
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        float sum = 0.f;
        for (int64_t j = 0; j < S; ++j) {
          if (p[j] == -std::numeric_limits<float>::infinity()) continue;
          const float e = std::exp(p[j] - mx);
          sum += e;
          const scalar_t* vr = vb + j * v.stride(2);
          for (int64_t d = 0; d < D; ++d) acc[d] += e * static_cast<float>(vr[d]);
        }
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        scalar_t* yr = yp + ((b * T + t) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) yr[d] = static_cast<scalar_t>(acc[d] * inv);
      }
    });
  });
  return y;
}

}  // namespace onebit::nn
