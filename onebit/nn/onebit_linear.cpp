#include "onebit/nn/onebit_linear.h"

#include <torch/torch.h>

#include <cmath>

#include "onebit/autograd/sign_ste.h"
#include "onebit/core/autocast.h"
#include "onebit/core/error.h"
#include "onebit/init/svid.h"

namespace onebit::nn {

SteKind parse_ste_kind(const std::string& s) {
  if (s == "tanh") return SteKind::Tanh;
  if (s == "identity") return SteKind::Identity;
  if (s == "clipped") return SteKind::Clipped;
  fail("unknown STE kind '", s, "' (expected tanh, identity or clipped)");
}
SvidMethod parse_svid_method(const std::string& s) {
  if (s == "nmf") return SvidMethod::Nmf;
  if (s == "svd") return SvidMethod::Svd;
  if (s == "none") return SvidMethod::None;
  fail("unknown SVID method '", s, "' (expected nmf, svd or none)");
}
LatentInit parse_latent_init(const std::string& s) {
  if (s == "scaled") return LatentInit::Scaled;
  if (s == "keep") return LatentInit::Keep;
  fail("unknown latent init '", s, "' (expected scaled or keep)");
}
std::string to_string(SteKind k) {
  switch (k) {
    case SteKind::Tanh: return "tanh";
    case SteKind::Identity: return "identity";
    case SteKind::Clipped: return "clipped";
  }
  return "?";
}
std::string to_string(SvidMethod m) {
  switch (m) {
    case SvidMethod::Nmf: return "nmf";
    case SvidMethod::Svd: return "svd";
    case SvidMethod::None: return "none";
  }
  return "?";
}
std::string to_string(LatentInit l) {
  switch (l) {
    case LatentInit::Scaled: return "scaled";
    case LatentInit::Keep: return "keep";
  }
  return "?";
}

OneBitLinearOptions::OneBitLinearOptions(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {}

// ---------------------------------------------------------------------------------------------
// The fused autograd node. Saved: x, W, g, h, bias, u = (x⊙g)·sign(W)ᵀ and the LayerNorm
// statistics; y = u⊙h (+bias) is recomputed in backward (one cheap pass) instead of stored.
// Function::apply cannot take undefined tensors, so "no bias" travels as a 0-element tensor.
namespace {

bool low_precision(torch::ScalarType t) { return t == torch::kHalf || t == torch::kBFloat16; }

struct OneBitLinearFn : public torch::autograd::Function<OneBitLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& g,
                               const torch::Tensor& h, const torch::Tensor& bias, bool post_ln,
                               double eps, SteKind ste) {
    const auto dt = x.scalar_type();
    const auto ct = low_precision(dt) ? torch::kFloat32 : dt;  // dtype of h, bias and the norm
    const int64_t in = w.size(1), out = w.size(0);
    const torch::Tensor x2 = x.reshape({-1, in});
    const torch::Tensor u = torch::mm(x2 * g.to(dt), autograd::sign_pm1(w, dt).t());
    const torch::Tensor y = pre_norm(u.to(ct), h, bias, ct);
    torch::Tensor z, mean, rstd;
    if (post_ln) {
      std::tie(z, mean, rstd) = torch::native_layer_norm(y, {out}, {}, {}, eps);
    } else {
      z = y;
    }
    ctx->save_for_backward({x, w, g, h, bias, u, mean, rstd});
    ctx->saved_data["post_ln"] = post_ln;
    ctx->saved_data["ste"] = static_cast<int64_t>(ste);
    auto shape = x.sizes().vec();
    shape.back() = out;
    return z.to(dt).view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &g = saved[2], &h = saved[3], &bias = saved[4],
               &u = saved[5], &mean = saved[6], &rstd = saved[7];
    const bool post_ln = ctx->saved_data["post_ln"].toBool();
    const auto ste = static_cast<SteKind>(ctx->saved_data["ste"].toInt());
    const auto dt = x.scalar_type();
    const auto ct = low_precision(dt) ? torch::kFloat32 : dt;
    const int64_t in = w.size(1), out = w.size(0);

    torch::Tensor dy = grads[0].reshape({-1, out}).to(ct);
    if (post_ln) {
      const torch::Tensor y = pre_norm(u.to(ct), h, bias, ct);
      dy = std::get<0>(torch::native_layer_norm_backward(dy, y, {out}, mean, rstd, {}, {},
                                                         {true, false, false}));
    }
    torch::Tensor dx, dw, dg, dh, db;
    if (bias.numel() > 0 && ctx->needs_input_grad(4)) db = dy.sum(0).to(bias.scalar_type());
    if (ctx->needs_input_grad(3)) dh = (dy * u).sum(0).to(h.scalar_type());
    const torch::Tensor du = (dy * h.to(ct)).to(dt);
    const torch::Tensor x2 = x.reshape({-1, in});
    const torch::Tensor gd = g.to(dt);
    // One weight-sized buffer holds sign(W) for dx, then dS = duᵀ·(x⊙g), then dW in place (the
    // STE needs no buffer of its own): a backward allocates what torch::nn::Linear's does.
    torch::Tensor buf;
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(2)) {
      buf = autograd::sign_pm1(w.contiguous(), dt);
      const torch::Tensor dxg = torch::mm(du, buf);
      if (ctx->needs_input_grad(2)) dg = torch::sum(dxg * x2, {0}, false, g.scalar_type());
      if (ctx->needs_input_grad(0)) dx = (dxg * gd).view(x.sizes());
    }
    if (ctx->needs_input_grad(1)) {
      if (!buf.defined()) buf = torch::empty(w.sizes(), w.options().dtype(dt));
      torch::mm_out(buf, du.t(), x2 * gd);
      if (low_precision(w.scalar_type()))  // a bf16 latent W: the STE factor in fp32, dW in W's dtype
        dw = autograd::ste_backward_(buf.to(torch::kFloat32), w.to(torch::kFloat32).contiguous(), ste)
                 .to(w.scalar_type());
      else
        dw = dt == w.scalar_type() && w.is_contiguous() ? autograd::ste_backward_(buf, w, ste)
                                                        : autograd::ste_backward(buf, w, ste);
    }
    return {dx, dw, dg, dh, db, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

  // y = u ⊙ h (+ bias) in the compute dtype `ct`.
  static torch::Tensor pre_norm(const torch::Tensor& u, const torch::Tensor& h,
                                const torch::Tensor& bias, torch::ScalarType ct) {
    if (bias.numel() > 0) return torch::addcmul(bias.to(ct), u, h.to(ct));
    return u * h.to(ct);
  }
};

}  // namespace

namespace functional {
torch::Tensor onebit_linear(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& g, const torch::Tensor& h,
                            const torch::Tensor& bias, bool post_layernorm, double ln_eps,
                            SteKind ste) {
  OB_CHECK(weight.dim() == 2, "onebit_linear: weight must be 2-D [out, in], got shape ",
           weight.sizes());
  const int64_t out = weight.size(0), in = weight.size(1);
  OB_CHECK(x.dim() >= 1 && x.size(-1) == in, "onebit_linear: input last dim must be in_features=",
           in, ", got input shape ", x.sizes());
  OB_CHECK(g.dim() == 1 && g.size(0) == in, "onebit_linear: g must be [", in, "], got ", g.sizes());
  OB_CHECK(h.dim() == 1 && h.size(0) == out, "onebit_linear: h must be [", out, "], got ",
           h.sizes());
  OB_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == out),
           "onebit_linear: bias must be [", out, "], got ", bias.sizes());
  OB_CHECK(x.is_floating_point(), "onebit_linear: input must be floating point, got ",
           x.scalar_type());
  const torch::Tensor b = bias.defined() ? bias : torch::empty({0}, h.options());
  // Under autocast the layer acts like one matmul op: x is cast once to the autocast dtype
  // (a recorded cast, so dx returns in x's dtype) and autocast is off inside the node, whose
  // own casts (sign(W), g to x's dtype; h and the norm in fp32) then hold in forward and in
  // backward. Otherwise fp32 x would run mm in bf16 while the backward ran in fp32.
  const auto dev = x.device().type();
  if (const auto ac = autocast_dtype(dev); ac && x.scalar_type() != torch::kFloat64) {
    AutocastGuard off(dev, std::nullopt);
    return OneBitLinearFn::apply(x.to(*ac), weight, g, h, b, post_layernorm, ln_eps, ste);
  }
  return OneBitLinearFn::apply(x, weight, g, h, b, post_layernorm, ln_eps, ste);
}
}  // namespace functional

// ---------------------------------------------------------------------------------------------
OneBitLinearImpl::OneBitLinearImpl(const OneBitLinearOptions& options_) : options(options_) {
  reset();
}

OneBitLinearImpl::OneBitLinearImpl(const OneBitLinearOptions& options_, const torch::TensorOptions& where)
    : options(options_), uninitialised_(where) {
  reset();
}

void OneBitLinearImpl::reset() {
  const int64_t in = options.in_features(), out = options.out_features();
  OB_CHECK(in > 0 && out > 0, "OneBitLinear: in_features and out_features must be positive, got ",
           in, " and ", out);
  OB_CHECK(options.ln_eps() > 0, "OneBitLinear: ln_eps must be positive, got ", options.ln_eps());
  OB_CHECK(options.latent_scale() > 0, "OneBitLinear: latent_scale must be positive, got ",
           options.latent_scale());
  torch::NoGradGuard no_grad;
  if (uninitialised_) {
    weight = register_parameter("weight", torch::empty({out, in}, *uninitialised_));
    g = register_parameter("g", torch::empty({in}, *uninitialised_));
    h = register_parameter("h", torch::empty({out}, *uninitialised_));
    bias = options.bias() ? register_parameter("bias", torch::empty({out}, *uninitialised_)) : torch::Tensor();
    return;
  }
  const double k = 1.0 / std::sqrt(double(in));
  // Same latent init as torch::nn::Linear; h = 1/√in keeps unit-variance inputs at unit
  // variance when the post-LayerNorm is off. from_linear overwrites all of it.
  weight = register_parameter("weight", torch::empty({out, in}).uniform_(-k, k));
  g = register_parameter("g", torch::ones({in}));
  h = register_parameter("h", torch::full({out}, k));
  if (options.bias()) {
    bias = register_parameter("bias", torch::zeros({out}));
  } else {
    bias = torch::Tensor();
  }
}

torch::Tensor OneBitLinearImpl::forward(const torch::Tensor& x) {
  OB_CHECK(x.dim() >= 1 && x.size(-1) == options.in_features(),
           "OneBitLinear: input last dim must be in_features=", options.in_features(),
           ", got input shape ", x.sizes());
  if (stand_in_weight_.defined()) {
    // Under autocast linear casts its operands itself; otherwise they follow x's dtype (a
    // bf16 teacher in an fp32 run computes its stand-in layers in fp32).
    const bool autocast = autocast_dtype(x.device().type()).has_value();
    auto as_x = [&](const torch::Tensor& t) { return !t.defined() || autocast ? t : t.to(x.scalar_type()); };
    return torch::nn::functional::linear(x, as_x(stand_in_weight_), as_x(stand_in_bias_));
  }
  return functional::onebit_linear(x, weight, g, h, bias, options.post_layernorm(),
                                   options.ln_eps(), options.ste());
}

std::shared_ptr<OneBitLinearImpl> OneBitLinearImpl::from_linear(const torch::Tensor& w,
                                                                const torch::Tensor& b,
                                                                OneBitLinearOptions options) {
  OB_CHECK(w.defined() && w.dim() == 2, "OneBitLinear::from_linear: weight must be 2-D [out, in], got shape ",
           w.defined() ? w.sizes() : torch::IntArrayRef{});
  OB_CHECK(w.size(0) == options.out_features() && w.size(1) == options.in_features(),
           "OneBitLinear::from_linear: weight shape ", w.sizes(), " does not match options [out=",
           options.out_features(), ", in=", options.in_features(), "]");
  OB_CHECK(w.is_floating_point(), "OneBitLinear::from_linear: weight must be floating point, got ",
           w.scalar_type());
  OB_CHECK(torch::isfinite(w).all().item<bool>(),
           "OneBitLinear::from_linear: weight ", w.sizes(), " has NaN or inf values");
  if (b.defined()) {
    OB_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "OneBitLinear::from_linear: bias shape ",
             b.sizes(), " does not match out_features=", w.size(0));
    OB_CHECK(torch::isfinite(b).all().item<bool>(),
             "OneBitLinear::from_linear: bias has NaN or inf values");
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor W = w.detach().to(torch::kFloat32);
  torch::Tensor a, bb;
  switch (options.svid()) {
    case SvidMethod::Nmf: {
      auto r = init::svid_nmf(W);
      a = r.a, bb = r.b;
      break;
    }
    case SvidMethod::Svd: {
      auto r = init::svid_svd(W);
      a = r.a, bb = r.b;
      break;
    }
    case SvidMethod::None:
      a = W.abs().mean(1);
      bb = torch::ones({W.size(1)}, W.options());
      break;
  }
  auto m = std::make_shared<OneBitLinearImpl>(options, W.options());
  m->weight.copy_(options.latent_init() == LatentInit::Scaled
                      ? autograd::sign_pm1(W, torch::kFloat32) * options.latent_scale()
                      : W);
  m->g.copy_(bb);
  m->h.copy_(a);
  // The original bias is kept only when the options ask for one (method.md §1: OPT).
  if (m->bias.defined()) {
    if (b.defined()) {
      m->bias.copy_(b);
    } else {
      m->bias.zero_();
    }
  }
  return m;
}

void OneBitLinearImpl::set_stand_in(torch::Tensor w, torch::Tensor b) {
  if (w.defined()) {
    OB_CHECK(w.dim() == 2 && w.size(0) == options.out_features() && w.size(1) == options.in_features(),
             "OneBitLinear: stand-in weight must be [", options.out_features(), ", ", options.in_features(),
             "], got ", w.sizes());
    OB_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == options.out_features()),
             "OneBitLinear: stand-in bias must be [", options.out_features(), "], got ", b.sizes());
  } else {
    b = torch::Tensor();
  }
  stand_in_weight_ = std::move(w);
  stand_in_bias_ = std::move(b);
}

double OneBitLinearImpl::bits_per_parameter() const {
  const double weights = double(options.in_features()) * double(options.out_features());
  const double scales = double(options.in_features() + options.out_features() +
                               (options.bias() ? options.out_features() : 0));
  return (weights + 16.0 * scales) / (weights + scales);
}

void OneBitLinearImpl::pretty_print(std::ostream& os) const {
  os << "onebit::nn::OneBitLinear(in_features=" << options.in_features()
     << ", out_features=" << options.out_features() << ", bias=" << options.bias()
     << ", post_layernorm=" << options.post_layernorm() << ", ste=" << to_string(options.ste())
     << ")";
}

}  // namespace onebit::nn
