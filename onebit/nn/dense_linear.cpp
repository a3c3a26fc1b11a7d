#include "onebit/nn/dense_linear.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/modules/linear.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_set>

#include "onebit/core/autocast.h"
#include "onebit/core/error.h"

namespace onebit::nn {

namespace {

using LinearPointwise = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                   std::string_view, c10::List<std::optional<c10::Scalar>>,
                                   std::optional<std::string_view>);

// LibTorch's oneDNN linear operator, when this build registers it.
std::optional<c10::TypedOperatorHandle<LinearPointwise>> onednn_linear() {
  if (!at::hasMKLDNN()) return std::nullopt;
  auto op = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  if (!op || !op->hasKernelForDispatchKey(c10::DispatchKey::CPU)) return std::nullopt;
  return op->typed<LinearPointwise>();
}

using ReorderWeight = at::Tensor(const at::Tensor&, std::optional<int64_t>);

struct Backend {
  std::atomic<DenseBackend> kind{DenseBackend::Aten};
  std::optional<c10::TypedOperatorHandle<LinearPointwise>> op;
  std::optional<c10::TypedOperatorHandle<ReorderWeight>> reorder;  // packs a weight for op
};

std::unique_ptr<Backend> make_backend() {
  auto owned = std::make_unique<Backend>();
  Backend& b = *owned;
  b.op = onednn_linear();
  if (b.op) {
    auto r = c10::Dispatcher::singleton().findSchema({"mkldnn::_reorder_linear_weight", ""});
    if (r && r->hasKernelForDispatchKey(c10::DispatchKey::CPU)) b.reorder = r->typed<ReorderWeight>();
  }
  b.kind = b.op ? DenseBackend::OneDnn : DenseBackend::Aten;
  return owned;
}

// Fails when `kind` is oneDNN and this LibTorch lacks its operator; `who` names the caller.
void check_available(const Backend& be, DenseBackend kind, const char* who) {
  OB_CHECK(kind != DenseBackend::OneDnn || be.op, who, ": this LibTorch has no oneDNN linear operator");
}

Backend& backend() {
  static const std::unique_ptr<Backend> b = [] {
    auto made = make_backend();
    if (const char* env = std::getenv("ONEBIT_DENSE_LINEAR")) {
      made->kind = parse_dense_backend(env, "ONEBIT_DENSE_LINEAR value");
      check_available(*made, made->kind, "ONEBIT_DENSE_LINEAR=onednn");
    }
    return made;
  }();
  return *b;
}

thread_local const DensePackScope* active_scope = nullptr;

// The rows a packed weight is laid out for (oneDNN's batch hint; any row count runs).
constexpr int64_t kPackRowsHint = 256;

// MemAvailable of /proc/meminfo in bytes; -1 where it cannot be read.
int64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream in(line.substr(13));
      int64_t kib = -1;
      in >> kib;
      return kib < 0 ? -1 : kib * 1024;
    }
  return -1;
}

}  // namespace

// oneDNN's bf16 matmul needs AVX-512 (F, BW, VL, DQ) at least; without it the operator throws.
bool onednn_bf16_supported() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
#else
  return false;
#endif
}

namespace {
// fp32 CPU tensors, or bf16 ones where oneDNN has bf16 kernels.
bool onednn_dtype(const torch::Tensor& t) {
  return t.device().is_cpu() &&
         (t.scalar_type() == torch::kFloat32 || (t.scalar_type() == torch::kBFloat16 && onednn_bf16_supported()));
}

bool packable(const torch::Tensor& w) {
  return w.defined() && w.dim() == 2 && w.numel() > 0 && onednn_dtype(w) && !w.is_mkldnn();
}

}  // namespace

DensePackScope::DensePackScope(const std::vector<torch::Tensor>& weights) : outer_(active_scope) {
  active_scope = this;
  const auto& be = backend();
  if (be.kind != DenseBackend::OneDnn || !be.reorder) return;
  // Weights an enclosing scope holds packed are used from there, not packed again.
  auto wanted = [&](const torch::Tensor& w) { return packable(w) && !(outer_ && outer_->find(w)); };
  int64_t need = 0;
  for (const auto& w : weights)
    if (wanted(w)) need += w.nbytes();
  const int64_t avail = available_memory();
  if (need == 0 || (avail >= 0 && need > avail / 2)) return;
  torch::NoGradGuard no_grad;
  for (const auto& w : weights) {
    if (!wanted(w) || packed_.count(w.unsafeGetTensorImpl())) continue;
    auto p = be.reorder->call(w.contiguous(), kPackRowsHint);
    packed_.emplace(w.unsafeGetTensorImpl(), Entry{p, w, w.data_ptr(), w._version()});
    bytes_ += w.nbytes();
  }
}

DensePackScope::~DensePackScope() { active_scope = outer_; }

const DensePackScope::Entry* DensePackScope::find(const torch::Tensor& w) const {
  for (const DensePackScope* s = this; s; s = s->outer_) {
    auto it = s->packed_.find(w.unsafeGetTensorImpl());
    if (it == s->packed_.end()) continue;
    const Entry& e = it->second;
    return e.version == w._version() && e.data == w.data_ptr() ? &e : nullptr;
  }
  return nullptr;
}

std::vector<torch::Tensor> linear_weights(torch::nn::Module& root) {
  std::vector<torch::Tensor> out;
  std::unordered_set<const void*> seen;
  auto add = [&](const torch::nn::Module& m) {
    if (auto* lin = dynamic_cast<const torch::nn::LinearImpl*>(&m))
      if (seen.insert(lin->weight.unsafeGetTensorImpl()).second) out.push_back(lin->weight);
  };
  add(root);  // modules(include_self) would need root to be held by a shared_ptr
  for (const auto& m : root.modules(/*include_self=*/false)) add(*m);
  return out;
}

DenseBackend dense_backend() { return backend().kind; }

bool onednn_linear_available() { return backend().op.has_value(); }

void set_dense_backend(DenseBackend b) {
  check_available(backend(), b, "set_dense_backend");
  backend().kind = b;
}

std::string to_string(DenseBackend b) { return b == DenseBackend::OneDnn ? "onednn" : "aten"; }

DenseBackend parse_dense_backend(const std::string& s, const std::string& what) {
  if (s == "aten") return DenseBackend::Aten;
  if (s == "onednn") return DenseBackend::OneDnn;
  fail("unknown ", what, " '", s, "' (expected aten or onednn)");
}

torch::Tensor dense_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return dense_linear(backend().kind, x, w, b);
}

namespace {
// Whether oneDNN's operator may compute x·Wᵀ + b: no autograd, no CPU autocast (ATen's linear
// computes in the autocast dtype there), CPU tensors of one dtype (onednn_dtype) and matching,
// non-empty shapes.
bool onednn_applies(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const bool grad = torch::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  if (grad || autocast_dtype(c10::DeviceType::CPU)) return false;
  const auto dt = w.scalar_type();
  auto ok = [&](const torch::Tensor& t) { return t.scalar_type() == dt && onednn_dtype(t); };
  return ok(x) && ok(w) && w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1) && x.numel() > 0 &&
         w.numel() > 0 && (!b.defined() || (ok(b) && b.dim() == 1 && b.size(0) == w.size(0)));
}
}  // namespace

torch::Tensor dense_linear(DenseBackend kind, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const auto& be = backend();
  check_available(be, kind, "dense_linear");
  if (kind != DenseBackend::OneDnn || !onednn_applies(x, w, b)) return torch::nn::functional::linear(x, w, b);
  const DensePackScope::Entry* packed = active_scope ? active_scope->find(w) : nullptr;
  // bf16: oneDNN only with the weight packed (it reorders a plain one on every call, which
  // makes it no faster than ATen's).
  if (!packed && w.scalar_type() != torch::kFloat32) return torch::nn::functional::linear(x, w, b);
  std::optional<at::Tensor> bias;
  if (b.defined()) bias = b.contiguous();
  return be.op->call(x.contiguous(), packed ? packed->packed : w.contiguous(), bias, "none",
                     c10::List<std::optional<c10::Scalar>>(), std::nullopt);
}

}  // namespace onebit::nn
