// The CPU emulator of tests/cuda_emu/emu_runtime.h: fibers (ucontext) per block, barriers that
// count the threads still running, and the few runtime calls the launchers make.
#include "tests/cuda_emu/emu_runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace onebit::emu {
namespace {

constexpr size_t kStackBytes = 64 * 1024;  // per emulated thread (the kernels' frames are small)
constexpr size_t kMaxDynamicSmem = 48 * 1024;

enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  uint3 idx;
  int linear = 0;
  State state = State::Runnable;
};
struct Warp {
  int alive = 0, arrived = 0;
  alignas(16) unsigned char slot[32][32];
};
// The launch that runs (launches do not nest; the tests run on one thread).
struct Running {
  dim3 grid, block;
  uint3 block_idx;
  std::vector<unsigned char> smem;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int alive = 0, arrived = 0;
  ucontext_t main;
  Fiber* cur = nullptr;
  const std::function<void()>* body = nullptr;
  std::string error;  // a fault found inside a fiber, thrown by run()
};
Running* g = nullptr;
cudaError_t g_last = cudaSuccess;
int g_sms = 8;
long g_launches = 0;
std::vector<std::unique_ptr<char[]>> g_stacks;  // reused across launches

Warp& warp_of(const Fiber& f) { return g->warps[size_t(f.linear / 32)]; }

void release_block() {
  for (Fiber& f : g->fibers)
    if (f.state == State::AtBlockBarrier) f.state = State::Runnable;
  g->arrived = 0;
}
void release_warp(int w) {
  for (size_t i = size_t(w) * 32; i < g->fibers.size() && i < size_t(w + 1) * 32; ++i)
    if (g->fibers[i].state == State::AtWarpBarrier) g->fibers[i].state = State::Runnable;
  g->warps[size_t(w)].arrived = 0;
}
void wait(State s) {
  g->cur->state = s;
  swapcontext(&g->cur->ctx, &g->main);
}

void fiber_entry() {
  try {
    (*g->body)();
  } catch (const std::exception& e) {
    if (g->error.empty()) g->error = e.what();
  }
  Fiber& f = *g->cur;
  f.state = State::Done;
  Warp& w = warp_of(f);
  --g->alive;
  --w.alive;
  // A thread that has returned no longer counts at a barrier (as on the GPU).
  if (g->arrived > 0 && g->arrived == g->alive) release_block();
  if (w.arrived > 0 && w.arrived == w.alive) release_warp(f.linear / 32);
}  // uc_link: back to the scheduler

const char* config_error(dim3 grid, dim3 block, size_t smem) {
  const unsigned long threads = (unsigned long)block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    return "block of more than 1024 threads or none";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) return "grid out of range";
  if (smem > kMaxDynamicSmem) return "more than 48 KB of dynamic shared memory";
  return nullptr;
}

void run_block(Running& L) {
  const int n = int(L.fibers.size());
  for (int i = 0; i < n; ++i) {
    Fiber& f = L.fibers[size_t(i)];
    f.linear = i;
    f.idx = uint3{unsigned(i) % L.block.x, unsigned(i) / L.block.x % L.block.y, unsigned(i) / (L.block.x * L.block.y)};
    f.state = State::Runnable;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = g_stacks[size_t(i)].get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &L.main;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  L.alive = n;
  L.arrived = 0;
  for (size_t w = 0; w < L.warps.size(); ++w) {
    L.warps[w].arrived = 0;
    L.warps[w].alive = std::min(32, n - int(w) * 32);
  }
  std::memset(L.smem.data(), 0xFF, L.smem.size());
  for (;;) {
    bool ran = false;
    for (Fiber& f : L.fibers) {
      if (f.state != State::Runnable) continue;
      L.cur = &f;
      swapcontext(&L.main, &f.ctx);
      ran = true;
      if (!L.error.empty()) return;
    }
    if (L.alive == 0) return;
    if (!ran) {
      int at_block = 0, at_warp = 0;
      for (const Fiber& f : L.fibers) {
        at_block += f.state == State::AtBlockBarrier;
        at_warp += f.state == State::AtWarpBarrier;
      }
      L.error = "deadlock: " + std::to_string(at_block) + " threads wait at __syncthreads and " +
                std::to_string(at_warp) + " at a warp barrier or shuffle";
      return;
    }
  }
}

}  // namespace

void run(dim3 grid, dim3 block, size_t dynamic_smem_bytes, const std::function<void()>& body) {
  if (g != nullptr) throw std::runtime_error("cuda_emu: a launch inside a kernel");
  if (const char* why = config_error(grid, block, dynamic_smem_bytes)) {
    (void)why;
    g_last = cudaErrorInvalidConfiguration;
    return;
  }
  ++g_launches;
  Running L;
  L.grid = grid;
  L.block = block;
  L.body = &body;
  const size_t n = size_t(block.x) * block.y * block.z;
  L.fibers.resize(n);
  L.warps.resize((n + 31) / 32);
  L.smem.resize(dynamic_smem_bytes);
  while (g_stacks.size() < n) g_stacks.emplace_back(new char[kStackBytes]);
  g = &L;
  for (unsigned z = 0; z < grid.z && L.error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && L.error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && L.error.empty(); ++x) {
        L.block_idx = uint3{x, y, z};
        run_block(L);
        if (!L.error.empty())
          L.error += " (block " + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
      }
  g = nullptr;
  if (!L.error.empty()) throw std::runtime_error("cuda_emu: " + L.error);
}

uint3& thread_idx() { return g->cur->idx; }
uint3& block_idx() { return g->block_idx; }
dim3& block_dim() { return g->block; }
dim3& grid_dim() { return g->grid; }
void* dynamic_smem() { return g->smem.data(); }

void sync_block() {
  if (++g->arrived == g->alive) return release_block();  // the last to arrive goes on
  wait(State::AtBlockBarrier);
}

void sync_warp() {
  const int w = g->cur->linear / 32;
  Warp& warp = g->warps[size_t(w)];
  if (++warp.arrived == warp.alive) return release_warp(w);
  wait(State::AtWarpBarrier);
}

void warp_exchange(const void* mine, void* out, size_t bytes, int src) {
  Fiber& f = *g->cur;
  Warp& warp = warp_of(f);
  std::memcpy(warp.slot[f.linear % 32], mine, bytes);
  sync_warp();  // every lane has written
  if (src < 0 || src >= warp.alive) {
    g->error = "shuffle from lane " + std::to_string(src) + " of a warp of " + std::to_string(warp.alive) + " threads";
    std::memset(out, 0xFF, bytes);
  } else {
    std::memcpy(out, warp.slot[src], bytes);
  }
  sync_warp();  // every lane has read before the next exchange writes
}

void mma_m16n8k16_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  Fiber& f = *g->cur;
  Warp& warp = warp_of(f);
  if (warp.alive != 32) {
    g->error = "mma.sync in a warp of " + std::to_string(warp.alive) + " threads";
    return;
  }
  const uint32_t mine[6] = {a0, a1, a2, a3, b0, b1};
  std::memcpy(warp.slot[f.linear % 32], mine, sizeof mine);
  sync_warp();  // every lane's fragments are in
  auto bf16 = [](uint32_t reg, int high) {  // one bf16 half of a register, as fp32
    const uint32_t bits = (high ? reg >> 16 : reg & 0xFFFFu) << 16;
    float v;
    std::memcpy(&v, &bits, 4);
    return double(v);
  };
  auto reg = [&](int lane, int r) {
    uint32_t v;
    std::memcpy(&v, warp.slot[lane] + 4 * r, 4);
    return v;
  };
  // A[m][k] and B[k][n] from the lanes that hold them.
  auto A = [&](int m, int k) {
    const int lane = 4 * (m % 8) + (k % 8) / 2;
    return bf16(reg(lane, (m >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)), k % 2);
  };
  auto B = [&](int k, int n) { return bf16(reg(4 * n + (k % 8) / 2, 4 + (k >= 8 ? 1 : 0)), k % 2); };
  const int lane = f.linear % 32, gid = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int m = gid + (i >= 2 ? 8 : 0), n = 2 * t + (i % 2);
    double s = d[i];
    for (int k = 0; k < 16; ++k) s += A(m, k) * B(k, n);
    d[i] = float(s);
  }
  sync_warp();  // every lane has read before the next exchange writes
}

cudaError_t get_last_error() {
  const cudaError_t e = g_last;
  g_last = cudaSuccess;
  return e;
}
const char* error_string(cudaError_t e) {
  if (e == cudaSuccess) return "no error";
  if (e == cudaErrorInvalidConfiguration) return "invalid configuration argument (cuda_emu)";
  return "error (cuda_emu)";
}
cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  if (attr == cudaDevAttrMultiProcessorCount) *value = g_sms;
  else if (attr == cudaDevAttrComputeCapabilityMajor) *value = 9;
  else *value = 0;
  return cudaSuccess;
}
cudaError_t get_device(int* device) {
  *device = 0;
  return cudaSuccess;
}
void set_multiprocessors(int n) { g_sms = n; }
long launches() { return g_launches; }

}  // namespace onebit::emu
