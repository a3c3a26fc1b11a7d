// CUDA kernels of the decode step's blocks (kernels/cuda/fused_ops.h). The products and sums use the
// _rn intrinsics so that nvcc cannot contract them into FMAs: each rounding is the one the
// ATen op sequence makes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/fused_ops.h"

namespace onebit::kernels::cuda {

namespace {
using common::block_max;
using common::block_sum;
using common::from_f;
using common::to_f;

constexpr int kNormThreads = 256;

// One block per row: the sum of squares, then the scaled row, re-read (from L1/L2) from x, or
// with a residual from h = T(x + r), which the first pass writes (each thread reads back its
// own elements).
template <typename T>
__global__ void __launch_bounds__(kNormThreads) rms_norm_kernel(RmsNormArgs a) {
  ONEBIT_PDL_WAIT();
  __shared__ float red[32];
  const T* xr = static_cast<const T*>(a.x) + int64_t(blockIdx.x) * a.x_row_stride;
  const T* rr = a.r ? static_cast<const T*>(a.r) + int64_t(blockIdx.x) * a.r_row_stride : nullptr;
  T* hr = a.r ? static_cast<T*>(a.h) + int64_t(blockIdx.x) * a.dim : nullptr;
  const T* w = static_cast<const T*>(a.w);
  T* yr = static_cast<T*>(a.y) + int64_t(blockIdx.x) * a.dim;
  float sq = 0.f;
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) {
    T v = xr[i];
    if (rr) {
      v = from_f<T>(__fadd_rn(to_f(v), to_f(rr[i])));
      hr[i] = v;
    }
    const float f = to_f(v);
    sq = __fadd_rn(sq, __fmul_rn(f, f));
  }
  const float r = rsqrtf(__fadd_rn(__fdiv_rn(block_sum(sq, red), float(a.dim)), a.eps));
  const T* src = hr ? hr : xr;
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) {
    const T hn = from_f<T>(__fmul_rn(to_f(src[i]), r));  // h.to(x.dtype)
    yr[i] = from_f<T>(__fmul_rn(to_f(w[i]), to_f(hn)));  // weight * h
  }
}

// One thread per element (grid-stride).
template <typename T>
__global__ void silu_mul_kernel(SiluMulArgs a) {
  ONEBIT_PDL_WAIT();
  const int64_t total = a.rows * a.dim;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / a.dim, i = e % a.dim;
    const float g = to_f(static_cast<const T*>(a.g)[r * a.g_row_stride + i]);
    const T s = from_f<T>(__fdiv_rn(g, __fadd_rn(1.f, expf(-g))));
    static_cast<T*>(a.y)[e] = from_f<T>(__fmul_rn(to_f(s), to_f(static_cast<const T*>(a.u)[r * a.u_row_stride + i])));
  }
}

// One thread per element of x, then of x2 (grid-stride); with v, the same element of v copied
// too.
template <typename T>
__global__ void rotary_kernel(RotaryArgs a, int64_t total) {
  ONEBIT_PDL_WAIT();
  const int64_t D = a.D, half = D / 2, first = a.B * a.H * a.T * D;  // x's elements, then x2's
  const T* cs = static_cast<const T*>(a.cos);
  const T* sn = static_cast<const T*>(a.sin);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const bool second = e >= first;
    const int64_t f = second ? e - first : e, H = second ? a.H2 : a.H;
    const int64_t i = f % D, row = f / D;
    const int64_t t = row % a.T, hh = (row / a.T) % H, b = row / (a.T * H);
    const int64_t src = second ? b * a.sb2 + hh * a.sh2 + t * a.st2 : b * a.sb + hh * a.sh + t * a.st;
    const T* xr = static_cast<const T*>(second ? a.x2 : a.x) + src;
    const int64_t c = b * a.cos_batch_stride + t * D + i;
    // rotate_half: [-x2, x1]; the negation is exact in every dtype.
    const float rot = i < half ? -to_f(xr[i + half]) : to_f(xr[i - half]);
    const T p = from_f<T>(__fmul_rn(to_f(xr[i]), to_f(cs[c])));
    const T m = from_f<T>(__fmul_rn(rot, to_f(sn[c])));
    const T out = from_f<T>(__fadd_rn(to_f(p), to_f(m)));
    if (second) {
      static_cast<T*>(a.y2)[f] = out;  // contiguous
      continue;
    }
    const int64_t dst = b * a.y_sb + hh * a.y_sh + (a.slots ? a.slots[t] : t) * a.y_st + i;
    static_cast<T*>(a.y)[dst] = out;
    if (a.v) static_cast<T*>(a.v_out)[dst] = static_cast<const T*>(a.v)[src + i];
  }
}

constexpr int kAttnWarps = 4;

// The elements of T in a 16-byte vector, and the lanes that read one row of D elements: the
// next power of two of its vectors, at most 32 (then each lane reads several vectors).
template <typename T>
constexpr int kVec = 16 / int(sizeof(T));
__host__ __device__ __forceinline__ int attn_row_lanes(int64_t vectors) {
  int l = 1;
  while (l < 32 && l < vectors) l *= 2;
  return l;
}

// q·k for one key row of D elements (qs: q · scale in shared memory, read by every thread at
// the same address: a broadcast). Vec: 16-byte loads, all of the row's issued before the sums.
template <typename T, bool Vec>
__device__ __forceinline__ float attn_dot(const float* qs, const T* kr, int64_t D) {
  float s0 = 0.f, s1 = 0.f;
  if constexpr (Vec) {
    constexpr int V = kVec<T>;
#pragma unroll 4
    for (int64_t d0 = 0; d0 < D; d0 += V) {
      const uint4 u = *reinterpret_cast<const uint4*>(kr + d0);
      T e[V];
      memcpy(e, &u, 16);
#pragma unroll
      for (int c = 0; c < V; c += 2) {
        s0 += qs[d0 + c] * to_f(e[c]);
        s1 += qs[d0 + c + 1] * to_f(e[c + 1]);
      }
    }
  } else {
    for (int64_t d = 0; d < D; ++d) (d % 2 ? s1 : s0) += qs[d] * to_f(kr[d]);
  }
  return s0 + s1;
}

// One block per (b, h, t) and split of the keys (blockIdx.y: keys [j0, j0 + chunk)). Scores:
// one thread per key (its row read with independent vector loads), kept in shared memory; the
// softmax's max and sum by block reductions. p·V: the lanes of a warp split a value row into
// vectors (attn_row_lanes lanes a row, so a warp reads 32 / that many rows at once) and the
// warps take every (4 · rows)-th key; the partial rows are summed through shared memory. Vec:
// k and v rows 16-byte aligned and D a multiple of the vector (the host checks), else element
// loads with the same split. One split: y; several: the unnormalised row, the max and the sum
// to the workspace, for attention_combine_kernel.
template <typename T, bool Vec>
__global__ void __launch_bounds__(kAttnWarps * 32) decode_attention_kernel(DecodeAttentionArgs a) {
  ONEBIT_PDL_WAIT();
  ONEBIT_CUDA_DYNAMIC_SMEM(float, smem);
  __shared__ float red[32];
  constexpr int V = Vec ? kVec<T> : 1;
  const int64_t D = a.D, chunk = (a.S + a.splits - 1) / a.splits, j0 = int64_t(blockIdx.y) * chunk;
  const int64_t S = j0 < a.S ? (a.S - j0 < chunk ? a.S - j0 : chunk) : 0;  // this split's keys
  const int L = attn_row_lanes((D + V - 1) / V), R = 32 / L;  // lanes a row, rows a warp
  float* qs = smem;          // [D], q · scale
  float* sc = qs + D;        // [chunk], scores, then probabilities
  float* part = sc + chunk;  // [kAttnWarps · R, D]
  const int64_t row = blockIdx.x, t = row % a.T, h = (row / a.T) % a.H, b = row / (a.T * a.H);
  const int64_t hk = h / (a.H / a.Hkv);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const T* qp = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh + t * a.q_st;
  const T* kb = static_cast<const T*>(a.k) + b * a.k_sb + hk * a.k_sh + j0 * a.k_ss;
  const T* vb = static_cast<const T*>(a.v) + b * a.v_sb + hk * a.v_sh + j0 * a.v_ss;
  const bool* mr = a.mask ? a.mask + b * a.mask_batch_stride + t * a.S + j0 : nullptr;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qs[d] = to_f(qp[d]) * a.scale;
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
    const float s = (mr && !mr[j]) ? -INFINITY : attn_dot<T, Vec>(qs, kb + j * a.k_ss, D);
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx, red);  // (its barriers also publish the scores)
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
    const float p = sc[j] == -INFINITY ? 0.f : expf(sc[j] - mx);
    sc[j] = p;
    sum += p;
  }
  sum = block_sum(sum, red);  // its barriers also publish the probabilities
  // This lane: key rows r0, r0 + stride, ...; vectors sub, sub + L, ... of each (E elements).
  constexpr int E = 8;  // elements a lane accumulates: D <= 256 = 32 lanes × 8
  const int sub = lane % L, r0 = warp * R + lane / L, stride = kAttnWarps * R;
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
#pragma unroll 2
  for (int64_t j = r0; j < S; j += stride) {
    const float p = sc[j];
    const T* vr = vb + j * a.v_ss;
#pragma unroll
    for (int e0 = 0; e0 < E; e0 += V) {
      const int64_t d0 = int64_t(sub + L * (e0 / V)) * V;
      if (d0 >= D) break;
      if constexpr (Vec) {
        const uint4 u = *reinterpret_cast<const uint4*>(vr + d0);
        T e[V];
        memcpy(e, &u, 16);
#pragma unroll
        for (int c = 0; c < V; ++c) acc[e0 + c] += p * to_f(e[c]);
      } else {
        acc[e0] += p * to_f(vr[d0]);
      }
    }
  }
  float* pr = part + int64_t(r0) * D;
#pragma unroll
  for (int e0 = 0; e0 < E; e0 += V) {
    const int64_t d0 = int64_t(sub + L * (e0 / V)) * V;
    if (d0 >= D) break;
#pragma unroll
    for (int c = 0; c < V; ++c) pr[d0 + c] = acc[e0 + c];
  }
  __syncthreads();
  if (a.splits > 1) {  // [o (D), max, sum] of this row and split
    float* wr = a.workspace + (row * a.splits + blockIdx.y) * (D + 2);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float o = 0.f;
      for (int rr = 0; rr < stride; ++rr) o += part[int64_t(rr) * D + d];
      wr[d] = o;
    }
    if (threadIdx.x == 0) wr[D] = mx, wr[D + 1] = sum;
    return;
  }
  T* yr = static_cast<T*>(a.y) + ((b * a.T + t) * a.H + h) * D;
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int rr = 0; rr < stride; ++rr) o += part[int64_t(rr) * D + d];
    yr[d] = from_f<T>(o * inv);
  }
}

// One block per (b, h, t): the splits' rows rescaled to the largest maximum M, y = Σ_p w_p o_p /
// Σ_p w_p l_p with w_p = exp(m_p − M) (0 for a split whose keys were all masked).
template <typename T>
__global__ void __launch_bounds__(128) attention_combine_kernel(DecodeAttentionArgs a) {
  ONEBIT_PDL_WAIT();
  __shared__ float w[kMaxDecodeSplits];
  const int64_t D = a.D, row = blockIdx.x, t = row % a.T, h = (row / a.T) % a.H, b = row / (a.T * a.H);
  const float* base = a.workspace + row * a.splits * (D + 2);
  float M = -INFINITY;
  for (int p = 0; p < a.splits; ++p) M = fmaxf(M, base[p * (D + 2) + D]);
  float L = 0.f;
  for (int p = 0; p < a.splits; ++p) {
    const float m = base[p * (D + 2) + D];
    const float wp = m == -INFINITY ? 0.f : expf(m - M);
    if (threadIdx.x == 0) w[p] = wp;
    L += wp * base[p * (D + 2) + D + 1];
  }
  __syncthreads();
  T* yr = static_cast<T*>(a.y) + ((b * a.T + t) * a.H + h) * D;
  const float inv = L > 0.f ? 1.f / L : 0.f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int p = 0; p < a.splits; ++p) o += w[p] * base[p * (D + 2) + d];
    yr[d] = from_f<T>(o * inv);
  }
}

const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// Blocks of 256 threads for a grid-stride loop over `total` elements.
unsigned elementwise_blocks(int64_t total) {
  const int64_t blocks = (total + 255) / 256;
  return unsigned(blocks < 65535 ? blocks : 65535);
}

// Runs launch(T{}) for the element type of `act`, then returns the launch's error (or null).
template <typename Launch>
const char* by_dtype(Act act, const char* what, Launch&& launch) {
  switch (act) {
    case Act::F32: launch(float{}); break;
    case Act::BF16: launch(__nv_bfloat16{}); break;
    case Act::F16: launch(__half{}); break;
    default: return what;
  }
  return last_error();
}
}  // namespace

const char* rms_norm(const RmsNormArgs& a, void* stream) {
  if (a.rows == 0 || a.dim == 0) return nullptr;
  if (a.rows > 2147483647LL) return "rms_norm: too many rows";
  const auto st = static_cast<cudaStream_t>(stream);
  return by_dtype(a.act, "rms_norm: unknown dtype", [&](auto tag) {
    ONEBIT_CUDA_LAUNCH(unsigned(a.rows), kNormThreads, 0, st, rms_norm_kernel<decltype(tag)>)(a);
  });
}

const char* silu_mul(const SiluMulArgs& a, void* stream) {
  if (a.rows * a.dim == 0) return nullptr;
  const auto st = static_cast<cudaStream_t>(stream);
  return by_dtype(a.act, "silu_mul: unknown dtype", [&](auto tag) {
    ONEBIT_CUDA_LAUNCH(elementwise_blocks(a.rows * a.dim), 256, 0, st, silu_mul_kernel<decltype(tag)>)(a);
  });
}

const char* rotary(const RotaryArgs& a, void* stream) {
  const int64_t total = a.B * (a.H + (a.x2 ? a.H2 : 0)) * a.T * a.D;
  if (total == 0) return nullptr;
  if (a.D % 2 != 0) return "rotary: the head dimension must be even";
  const auto st = static_cast<cudaStream_t>(stream);
  return by_dtype(a.act, "rotary: unknown dtype", [&](auto tag) {
    ONEBIT_CUDA_LAUNCH(elementwise_blocks(total), 256, 0, st, rotary_kernel<decltype(tag)>)(a, total);
  });
}

int decode_attention_splits(int64_t rows, int64_t S, int sms) {
  if (S <= 512 || rows <= 0) return 1;
  int64_t p = (2 * int64_t(sms) + rows - 1) / rows;
  p = p < (S + 255) / 256 ? p : (S + 255) / 256;
  p = p < kMaxDecodeSplits ? p : kMaxDecodeSplits;
  return p > 1 ? int(p) : 1;
}

int64_t decode_attention_workspace_floats(const DecodeAttentionArgs& a) {
  return a.splits > 1 ? a.B * a.H * a.T * a.splits * (a.D + 2) : 0;
}

const char* decode_attention(const DecodeAttentionArgs& a, void* stream) {
  if (a.B * a.H * a.T == 0 || a.D == 0) return nullptr;
  if (a.S < 1 || a.S > kMaxDecodeKeys) return "decode_attention: key count out of range";
  if (a.splits < 1 || a.splits > kMaxDecodeSplits) return "decode_attention: splits out of range";
  if (a.splits > 1 && a.workspace == nullptr) return "decode_attention: splits need a workspace";
  if (a.D > kMaxDecodeHeadDim) return "decode_attention: head dimension too large";
  if (a.Hkv < 1 || a.H % a.Hkv != 0) return "decode_attention: heads must be a multiple of the key/value heads";
  const auto st = static_cast<cudaStream_t>(stream);
  return by_dtype(a.act, "decode_attention: unknown dtype", [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    auto aligned = [](const void* p, int64_t sb, int64_t sh, int64_t ss) {
      return reinterpret_cast<uintptr_t>(p) % 16 == 0 && sb % V == 0 && sh % V == 0 && ss % V == 0;
    };
    const bool vec = a.D % V == 0 && aligned(a.k, a.k_sb, a.k_sh, a.k_ss) && aligned(a.v, a.v_sb, a.v_sh, a.v_ss);
    const int rows = 32 / attn_row_lanes(vec ? a.D / V : a.D);  // key rows a warp reads at once
    const int64_t chunk = (a.S + a.splits - 1) / a.splits;
    const size_t smem = size_t(a.D + chunk + kAttnWarps * rows * a.D) * sizeof(float);
    const dim3 grid(unsigned(a.B * a.H * a.T), unsigned(a.splits)), block(kAttnWarps * 32);
    if (vec) {
      ONEBIT_CUDA_LAUNCH(grid, block, smem, st, decode_attention_kernel<T, true>)(a);
    } else {
      ONEBIT_CUDA_LAUNCH(grid, block, smem, st, decode_attention_kernel<T, false>)(a);
    }
    if (a.splits > 1) ONEBIT_CUDA_LAUNCH(unsigned(a.B * a.H * a.T), 128, 0, st, attention_combine_kernel<T>)(a);
  });
}

}  // namespace onebit::kernels::cuda
