#include "onebit/dist/c10d_sync.h"

#include <c10/util/Logging.h>
#include <torch/torch.h>

// c10d: the store and the backends. The PyPI wheel ships the c10d headers but not gloo's, which
// ProcessGroupGloo.hpp includes; Debian's libgloo-dev provides them (scripts/setup.sh installs
// it). Only headers are used: the code is libtorch_cpu's, and ProcessGroupGloo holds gloo types
// only behind shared_ptr, so the header version does not change the class layout.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(USE_C10D_GLOO) && __has_include(<gloo/config.h>)
#define ONEBIT_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL) && defined(ONEBIT_WITH_NCCL_HEADERS) && __has_include(<nccl.h>)
#define ONEBIT_HAVE_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "onebit/core/error.h"

namespace onebit::dist {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::chrono::milliseconds to_ms(double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0)); }

// First line of a c10d/gloo message, without gloo's "[/path/file.cc:NN] " prefix.
std::string short_cause(std::string s) {
  if (auto nl = s.find('\n'); nl != std::string::npos) s = s.substr(0, nl);
  if (!s.empty() && s[0] == '[')
    if (auto close = s.find("] "); close != std::string::npos && s.find(".cc:") < close) s = s.substr(close + 2);
  return s;
}

std::string cause_of(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return short_cause(c->what_without_backtrace());
  return short_cause(e.what());
}

std::string fmt_s(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", s);
  return buf;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

bool backend_compiled(const std::string& backend) {
#ifdef ONEBIT_HAVE_GLOO
  if (backend == "gloo") return true;
#endif
#ifdef ONEBIT_HAVE_NCCL
  if (backend == "nccl") return true;
#endif
  return false;
}

struct C10dSync::Impl {
  LaunchInfo launch;
  C10dOptions opts;
  std::string backend;
  torch::Device comm_device = torch::kCPU;  // where collectives run (CPU for gloo, the GPU for NCCL)
  c10::intrusive_ptr<c10d::Store> store;  // the TCPStore, under torchrun's prefix when its agent serves it
  c10::intrusive_ptr<c10d::Backend> pg;
  bool broken = false;  // a collective failed: leave the group to the process exit
  int64_t rank0_first_calls = 0;

  // Gradient buckets, built on the first after_backward (the same on every rank).
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;
    torch::Tensor flat;
  };
  std::vector<Bucket> buckets;
  std::vector<std::pair<int64_t, torch::ScalarType>> layout;  // numel, dtype per parameter

  std::string where() const {
    return "rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world_size);
  }
  std::string addr() const {
    return "MASTER_ADDR=" + launch.master_addr + ", MASTER_PORT=" + std::to_string(launch.master_port);
  }

  // Runs a collective; any c10d/gloo failure becomes one line and marks the group broken.
  template <class F>
  auto guarded(const std::string& what, F&& f) -> decltype(f()) {
    const auto t0 = Clock::now();
    try {
      return f();
    } catch (const Error&) {
      broken = true;
      throw;
    } catch (const std::exception& e) {
      broken = true;
      fail("dist: ", what, " failed on ", where(), " after ", fmt_s(seconds_since(t0)), " s (dist.timeout_s=",
           fmt_s(opts.timeout_s), "); a rank probably died or hangs: ", cause_of(e));
    }
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work) { work->wait(to_ms(opts.timeout_s)); }

  // Queues `start`, a collective between a flat tensor of world_size × n values and one of n
  // values; the returned Wait finishes it (both tensors stay alive until then).
  template <class F>
  GradSync::Wait queue_flat(const char* what, const torch::Tensor& whole, const torch::Tensor& part, F start) {
    for (const auto* t : {&whole, &part})
      OB_CHECK(t->is_contiguous() && t->device() == comm_device, "dist: ", what, " needs contiguous tensors on ",
               comm_device.str(), ", got one on ", t->device().str());
    OB_CHECK(whole.numel() == part.numel() * launch.world_size, "dist: ", what, " of ", whole.numel(),
             " values in all and ", part.numel(), " per rank on ", launch.world_size, " ranks");
    auto work = guarded(what, start);
    return [this, work, whole, part, what] { guarded(what, [&] { wait(work); }); };
  }

  void allreduce_sum(torch::Tensor& t, const std::string& what) {
    guarded(what, [&] {
      std::vector<at::Tensor> v{t};
      c10d::AllreduceOptions o;
      o.timeout = to_ms(opts.timeout_s);
      wait(pg->allreduce(v, o));
    });
  }

  // Rendezvous: rank 0 listens (unless torchrun's agent already does), each rank announces
  // itself, rank 0 waits for all of them so that a missing rank is named. Then the backend
  // connects its own mesh through the store.
  void join() {
    const auto t0 = Clock::now();
    c10d::TCPStoreOptions so;
    OB_CHECK(launch.master_port > 0 && launch.master_port < 65536, "dist: MASTER_PORT=", launch.master_port,
             " is not a TCP port");
    so.port = static_cast<uint16_t>(launch.master_port);
    so.isServer = launch.rank == 0 && !launch.agent_store;
    if (so.isServer) so.numWorkers = static_cast<size_t>(launch.world_size);
    so.waitWorkers = false;  // rank 0 waits below, naming the missing ranks
    so.timeout = to_ms(opts.timeout_s);
    try {
      c10::intrusive_ptr<c10d::Store> tcp = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
      store = tcp;
      if (launch.agent_store) store = c10::make_intrusive<c10d::PrefixStore>(launch.store_prefix, tcp);
    } catch (const std::exception& e) {
      if (so.isServer)
        fail("dist: rank 0 of ", launch.world_size, " cannot serve the rendezvous store (", addr(),
             "): ", cause_of(e));
      fail("dist: ", where(), " could not reach rank 0 within ", fmt_s(opts.timeout_s), " s (", addr(),
           "; is rank 0 running and MASTER_ADDR right?): ", cause_of(e));
    }
    try {
      store->set("onebit/joined/" + std::to_string(launch.rank), std::vector<uint8_t>{1});
      if (launch.rank == 0) {
        std::vector<int> missing;
        while (true) {
          missing.clear();
          for (int r = 1; r < launch.world_size; ++r)
            if (!store->check({"onebit/joined/" + std::to_string(r)})) missing.push_back(r);
          if (missing.empty() || seconds_since(t0) > opts.timeout_s) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (!missing.empty()) {
          std::string list;
          for (size_t i = 0; i < missing.size() && i < 8; ++i) list += (i ? ", " : "") + std::to_string(missing[i]);
          if (missing.size() > 8) list += ", ...";
          fail("dist: rank", missing.size() > 1 ? "s " : " ", list, " of ", launch.world_size,
               " did not join within ", fmt_s(opts.timeout_s), " s (", addr(),
               "); start one process per rank (torchrun, srun) or raise dist.timeout_s");
        }
      }
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("dist: ", where(), " lost the rendezvous store (", addr(), "): ", cause_of(e));
    }
  }

  void make_backend(torch::Device device) {
    const auto timeout = to_ms(opts.timeout_s);
    auto on_error = [&](const std::exception& e) {
      fail("dist: ", where(), " could not connect the ", backend, " group within ", fmt_s(opts.timeout_s), " s (",
           addr(), "): ", cause_of(e));
    };
    if (backend == "gloo") {
#ifdef ONEBIT_HAVE_GLOO
      try {
        // create_default honours GLOO_SOCKET_IFNAME; a loopback master means a single host.
        auto o = is_loopback(launch.master_addr) ? c10d::ProcessGroupGloo::Options::create(timeout)
                                                 : c10d::ProcessGroupGloo::Options::create_default(timeout);
        if (o->devices.empty()) o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, launch.rank, launch.world_size, o);
      } catch (const std::exception& e) {
        on_error(e);
      }
      comm_device = torch::kCPU;
      return;
#endif
    }
    if (backend == "nccl") {
#ifdef ONEBIT_HAVE_NCCL
      // Blocking waits turn a timeout into an exception here instead of a watchdog abort.
      ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
      try {
        if (device.has_index()) c10::cuda::set_device(device.index());
        auto o = c10d::ProcessGroupNCCL::Options::create();
        o->timeout = timeout;
        pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, launch.rank, launch.world_size, o);
      } catch (const std::exception& e) {
        on_error(e);
      }
      comm_device = device;
      return;
#endif
    }
    fail("dist.backend=", backend, " is not available in this build",
         backend == "gloo" ? " (no gloo headers at build time: apt-get install libgloo-dev, then rebuild)"
                           : " (needs a CUDA LibTorch with NCCL and nccl.h at build time)");
  }
};

C10dSync::C10dSync(const LaunchInfo& launch, torch::Device device, const C10dOptions& opts)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.launch = launch;
  m.opts = opts;
  OB_CHECK(std::isfinite(opts.timeout_s) && opts.timeout_s > 0, "dist.timeout_s must be > 0, got ", opts.timeout_s);
  OB_CHECK(opts.bucket_bytes > 0, "dist: bucket size must be > 0, got ", opts.bucket_bytes);
  OB_CHECK(opts.backend == "auto" || opts.backend == "gloo" || opts.backend == "nccl",
           "dist.backend must be auto, gloo or nccl, got '", opts.backend, "'");
  m.backend = opts.backend == "auto" ? (device.is_cuda() ? "nccl" : "gloo") : opts.backend;
  OB_CHECK(m.backend != "nccl" || device.is_cuda(), "dist.backend=nccl needs a CUDA device, but the model is on ",
           device.str(), " (set model.device=auto or cuda, or dist.backend=gloo)");
  // c10d logs every connection retry and timeout itself; the error below says it in one line.
  if (!std::getenv("TORCH_CPP_LOG_LEVEL")) FLAGS_caffe2_log_level = std::max(FLAGS_caffe2_log_level, 3);
  m.join();
  m.make_backend(device);
}

C10dSync::~C10dSync() {
  if (impl_ && impl_->broken) {
    // After a failed collective the backend may still hold queued work that would each wait
    // out the timeout in its destructor: leave it (and its threads) to the process exit.
    impl_->pg.release();
  }
}

int C10dSync::rank() const { return impl_->launch.rank; }
int C10dSync::world_size() const { return impl_->launch.world_size; }
const std::string& C10dSync::backend() const { return impl_->backend; }

void C10dSync::after_backward(const std::vector<torch::Tensor>& params) {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(params.size());

  // Buckets: consecutive parameters of one dtype, about bucket_bytes each. They depend only on
  // shapes and dtypes, so every rank builds the same ones; checked once across ranks.
  std::vector<std::pair<int64_t, torch::ScalarType>> layout;
  layout.reserve(params.size());
  for (const auto& p : params) layout.emplace_back(p.numel(), p.scalar_type());
  if (layout != m.layout) {
    int64_t total = 0;
    for (const auto& [numel, dtype] : layout) total += numel;
    // max over ranks of (x, -x) equal to (x, -x) on every rank <=> x is the same everywhere.
    auto sig = torch::tensor({double(n), double(total), -double(n), -double(total)}, torch::kFloat64)
                   .to(m.comm_device);
    m.guarded("checking that all ranks train the same parameters", [&] {
      std::vector<at::Tensor> v{sig};
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::MAX;
      o.timeout = to_ms(m.opts.timeout_s);
      m.wait(m.pg->allreduce(v, o));
    });
    const auto s = sig.cpu();
    const auto* a = s.data_ptr<double>();
    OB_CHECK(a[0] == double(n) && a[1] == double(total) && -a[2] == double(n) && -a[3] == double(total), "dist: ",
             m.where(), " trains ", n, " tensors with ", total,
             " values, but another rank trains a different set; every rank must build the same model");
    m.buckets.clear();
    int64_t bytes = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const auto dtype = layout[i].second;
      const int64_t b = layout[i].first * int64_t(c10::elementSize(dtype));
      if (m.buckets.empty() || m.buckets.back().flat.scalar_type() != dtype || bytes + b > m.opts.bucket_bytes) {
        m.buckets.emplace_back();
        m.buckets.back().flat = torch::empty({0}, torch::TensorOptions().dtype(dtype).device(m.comm_device));
        bytes = 0;
      }
      auto& bk = m.buckets.back();
      bk.params.push_back(i);
      bk.offsets.push_back(bytes / int64_t(c10::elementSize(dtype)));
      bytes += b;
    }
    for (auto& bk : m.buckets) {
      const size_t last = bk.params.back();
      bk.flat = torch::empty({bk.offsets.back() + layout[last].first}, bk.flat.options());
    }
    m.layout = layout;
  }

  // Which parameters have a gradient on this rank (summed: on how many ranks).
  auto has_grad = torch::zeros({n}, torch::kFloat32);
  auto* hg = has_grad.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) hg[i] = params[size_t(i)].grad().defined() ? 1.f : 0.f;
  has_grad = has_grad.to(m.comm_device);

  for (auto& bk : m.buckets)
    for (size_t j = 0; j < bk.params.size(); ++j) {
      const auto& p = params[bk.params[j]];
      auto slice = bk.flat.narrow(0, bk.offsets[j], p.numel());
      if (p.grad().defined()) slice.copy_(p.grad().reshape({-1}));
      else slice.zero_();
    }

  // One allreduce per bucket, all queued before the first wait.
  m.guarded("allreduce of the gradients", [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    c10d::AllreduceOptions o;
    o.timeout = to_ms(m.opts.timeout_s);
    std::vector<std::vector<at::Tensor>> args;
    args.reserve(m.buckets.size() + 1);
    args.push_back({has_grad});
    for (auto& bk : m.buckets) args.push_back({bk.flat});
    for (auto& a : args) works.push_back(m.pg->allreduce(a, o));
    for (auto& w : works) m.wait(w);
  });

  const auto counts = has_grad.cpu();
  const float* cnt = counts.data_ptr<float>();
  const double inv = 1.0 / m.launch.world_size;
  for (auto& bk : m.buckets) {
    bk.flat.mul_(inv);
    for (size_t j = 0; j < bk.params.size(); ++j) {
      const size_t i = bk.params[j];
      if (cnt[i] == 0.f) continue;  // no rank has a gradient: leave it undefined everywhere
      auto p = params[i];
      auto avg = bk.flat.narrow(0, bk.offsets[j], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(avg);
      else p.mutable_grad() = avg.to(p.device()).clone();
    }
  }
}

namespace {

void check_flat(const torch::Tensor& t, const torch::Device& device, const char* what) {
  OB_CHECK(t.is_contiguous() && t.device() == device, "dist: ", what, " needs a contiguous tensor on ", device.str(),
           ", got one on ", t.device().str());
}

}  // namespace

GradSync::Wait C10dSync::allreduce_sum(torch::Tensor flat) {
  auto& m = *impl_;
  check_flat(flat, m.comm_device, "allreduce");
  const char* what = "allreduce of the gradients";
  auto work = m.guarded(what, [&] {
    std::vector<at::Tensor> v{flat};
    c10d::AllreduceOptions o;
    o.timeout = to_ms(m.opts.timeout_s);
    return m.pg->allreduce(v, o);
  });
  return [&m, work, flat, what] { m.guarded(what, [&] { m.wait(work); }); };
}

GradSync::Wait C10dSync::reduce_scatter_sum(torch::Tensor out, torch::Tensor in) {
  auto& m = *impl_;
  return m.queue_flat("reduce-scatter of the gradients", in, out, [&] {
    c10d::ReduceScatterOptions o;
    o.timeout = to_ms(m.opts.timeout_s);
    return m.pg->_reduce_scatter_base(out, in, o);
  });
}

GradSync::Wait C10dSync::all_gather(torch::Tensor out, torch::Tensor in) {
  auto& m = *impl_;
  return m.queue_flat("all-gather of the parameters", out, in, [&] {
    c10d::AllgatherOptions o;
    o.timeout = to_ms(m.opts.timeout_s);
    return m.pg->_allgather_base(out, in, o);
  });
}

double C10dSync::mean(double x) {
  auto& m = *impl_;
  auto t = torch::full({1}, x, torch::TensorOptions().dtype(torch::kFloat64).device(m.comm_device));
  m.allreduce_sum(t, "allreduce of a logged scalar");
  return t.cpu().item<double>() / m.launch.world_size;
}

void C10dSync::barrier(const std::string& what) {
  auto& m = *impl_;
  // An allreduce of one value: the same timeout handling on gloo and NCCL.
  auto t = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat32).device(m.comm_device));
  m.allreduce_sum(t, "barrier (" + what + ")");
  t.cpu();
}

void C10dSync::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  m.guarded("broadcast from rank " + std::to_string(root), [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = to_ms(m.opts.timeout_s);
    for (const auto& t : tensors) {
      const bool staged = t.device() != m.comm_device || !t.is_contiguous();
      std::vector<at::Tensor> v{staged ? t.to(m.comm_device).contiguous() : t};
      m.wait(m.pg->broadcast(v, o));
      if (staged) t.copy_(v[0]);
    }
  });
}

std::vector<torch::Tensor> C10dSync::all_gather_cpu(const torch::Tensor& t) {
  auto& m = *impl_;
  torch::NoGradGuard no_grad;
  return m.guarded("all_gather", [&] {
    std::vector<at::Tensor> in{t.to(m.comm_device).contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < m.launch.world_size; ++r) out[0].push_back(torch::empty_like(in[0]));
    c10d::AllgatherOptions o;
    o.timeout = to_ms(m.opts.timeout_s);
    m.wait(m.pg->allgather(out, in, o));
    std::vector<torch::Tensor> all;
    for (auto& x : out[0]) all.push_back(x.cpu());
    return all;
  });
}

void C10dSync::rank0_first(const std::string& what, const std::function<void()>& fn) {
  auto& m = *impl_;
  const std::string key = "onebit/rank0_first/" + std::to_string(m.rank0_first_calls++);
  // While rank 0 works, a thread of its own bumps `beat` in the store a few times per
  // dist.timeout_s. A rank 0 that is stopped or frozen stops beating (its sockets stay open, so
  // the store alone would not tell); one that dies closes them.
  const std::string beat = key + "/beat";
  const auto period = std::chrono::duration<double>(std::clamp(m.opts.timeout_s / 4, 0.05, 1.0));
  if (m.launch.rank == 0) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread beater([&] {
      std::unique_lock<std::mutex> lock(mu);
      for (uint8_t n = 0; !done; ++n) {
        try {
          m.store->set(beat, std::vector<uint8_t>{n});
        } catch (...) {
          return;  // the store is gone: the others see that themselves
        }
        cv.wait_for(lock, period, [&] { return done; });
      }
    });
    auto stop_beating = [&] {
      {
        std::lock_guard<std::mutex> lock(mu);
        done = true;
      }
      cv.notify_all();
      beater.join();
    };
    try {
      fn();
    } catch (...) {
      stop_beating();
      try {
        m.store->set(key, std::vector<uint8_t>{0});
      } catch (...) {
      }
      throw;
    }
    stop_beating();
    m.store->set(key, std::vector<uint8_t>{1});
    return;
  }
  // The store's server runs inside rank 0: a stopped rank 0 leaves TCPStore::check blocked in
  // recv with no time limit. So a thread of this rank polls the store, and this thread gives up
  // when neither a new beat nor the result has come for dist.timeout_s. The poller holds its own
  // reference to the store and its state, so it may outlive this call (left blocked).
  struct Poll {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<uint8_t> beat, status;
    bool finished = false, abandoned = false;
    std::string error;
  };
  const auto poll = std::make_shared<Poll>();
  std::thread([poll, store = m.store, key, beat] {
    try {
      for (;;) {
        if (store->check({key})) {
          auto status = store->get(key);
          std::lock_guard<std::mutex> lock(poll->mu);
          poll->status = std::move(status);
          poll->finished = true;
          poll->cv.notify_all();
          return;
        }
        std::vector<uint8_t> b;
        if (store->check({beat})) b = store->get(beat);
        {
          std::lock_guard<std::mutex> lock(poll->mu);
          if (poll->abandoned) return;
          poll->beat = std::move(b);
        }
        poll->cv.notify_all();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(poll->mu);
      poll->error = cause_of(e);
      poll->finished = true;
      poll->cv.notify_all();
    }
  }).detach();
  std::vector<uint8_t> status, last_beat;
  auto last_change = Clock::now();
  {
    std::unique_lock<std::mutex> lock(poll->mu);
    while (!poll->finished) {
      poll->cv.wait_for(lock, std::chrono::milliseconds(200));
      if (poll->beat != last_beat) {
        last_beat = poll->beat;
        last_change = Clock::now();
      }
      const double silent = seconds_since(last_change);
      if (!poll->finished && silent > m.opts.timeout_s) {
        poll->abandoned = true;
        fail("dist: rank 0 gave no sign of life for ", fmt_s(silent), " s while ", what, " (dist.timeout_s=",
             fmt_s(m.opts.timeout_s), "); it is probably stopped or hung; ", m.where(), " gives up");
      }
    }
    if (!poll->error.empty())
      fail("dist: rank 0 stopped while ", what, " (see its error); ", m.where(), " gives up: ", poll->error);
    status = poll->status;
  }
  OB_CHECK(!status.empty() && status[0] == 1, "dist: rank 0 failed while ", what, " (see its error); ", m.where(),
           " gives up");
  fn();
}

}  // namespace onebit::dist
