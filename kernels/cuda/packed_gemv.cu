// CUDA packed 1-bit GEMV (kernels/cuda/packed_gemv.h).
//
// Pass 1 (partial sums): a block of 4 warps owns 16 output rows and one split of the input
// dimension. Per tile of 1024 inputs, x ⊙ g of up to 8 tokens is staged in shared memory as
// fp32; each row is 128 bytes of the tile, read by 8 lanes with one 128-bit load each (so a
// warp reads 4 rows); a lane walks its 128 signs with a lane-dependent rotation so that the 8
// lanes of a row hit 8 different shared-memory banks (the 4 rows of a warp read the same x:
// broadcasts); two accumulators per token; an 8-lane shuffle reduction; fp32 partials per
// split in the workspace.
// Pass 2 (epilogue): one block per token sums the splits, applies h and bias, the post-
// LayerNorm (block reduction of mean and variance over the row) and the cast to x's dtype.
// Both passes take a group of layers that read the same x (one layer: a group of one): the
// blocks of pass 1 are numbered across the layers (each layer its own first block), and pass 2
// walks the layers' column ranges of the output row one after another.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/packed_gemv.h"


namespace onebit::kernels::cuda {

namespace {
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;  // 16
constexpr int kTile = 1024;                           // inputs per shared-memory tile
constexpr int kLanesPerRow = 8;                       // 8 × 16 bytes = 128 bytes = 1024 signs

using common::block_sum;
using common::from_f;
using common::to_f;

// The group as the kernels see it: per layer its pointers, width, first output column and
// first block of pass 1.
struct Seg {
  const float* g;
  const uint4* signs;
  const float* h;
  const float* bias;
  int64_t out, col, block_begin;
};
struct Segs {
  Seg s[kMaxGroupLayers];
  int count;
  int64_t total_out;  // Σ out: the row length of y and of the workspace
};

template <typename T, int N>
__global__ void __launch_bounds__(kWarps * 32) partial_kernel(const T* __restrict__ x, Segs segs, int64_t row_vec,
                                                              float* __restrict__ ws, int64_t n0, int64_t n,
                                                              int64_t in, int64_t tiles_per_split) {
  ONEBIT_PDL_WAIT();
  __shared__ float xs[N][kTile];
  int si = 0;  // the layer of this block (uniform across the block)
  while (si + 1 < segs.count && int64_t(blockIdx.x) >= segs.s[si + 1].block_begin) ++si;
  const Seg& sg = segs.s[si];
  const float* __restrict__ g = sg.g;
  const uint4* __restrict__ signs = sg.signs;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % kLanesPerRow;  // which 16 bytes of the row's tile
  const int64_t o = (int64_t(blockIdx.x) - sg.block_begin) * kRowsPerBlock + warp * kRowsPerWarp + lane / kLanesPerRow;
  const int64_t tiles = (in + kTile - 1) / kTile;
  const int64_t t_begin = int64_t(blockIdx.y) * tiles_per_split;
  const int64_t t_end = t_begin + tiles_per_split < tiles ? t_begin + tiles_per_split : tiles;
  const int rot = 4 * sub;  // lane-dependent start bit: 8 lanes, 8 banks
  float acc[N][2];
#pragma unroll
  for (int t = 0; t < N; ++t) acc[t][0] = acc[t][1] = 0.f;

  for (int64_t tile = t_begin; tile < t_end; ++tile) {
    const int64_t base = tile * kTile;
    __syncthreads();
    for (int i = threadIdx.x; i < N * kTile; i += kWarps * 32) {
      const int t = i / kTile, k = i % kTile;
      const int64_t col = base + k;
      xs[t][k] = (t < n - n0 && col < in) ? to_f(x[(n0 + t) * in + col]) * g[col] : 0.f;
    }
    __syncthreads();
    if (o < sg.out && base + sub * 128 < in) {
      const uint4 w = signs[o * row_vec + tile * kLanesPerRow + sub];  // 128-bit load
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint32_t bits = words[q];
        const int off = sub * 128 + q * 32;
#pragma unroll 8
        for (int p = 0; p < 32; ++p) {
          const int b = (p + rot) & 31;
          const uint32_t neg = ((bits >> b) & 1u) << 31;
#pragma unroll
          for (int t = 0; t < N; ++t) {
            const float v = __uint_as_float(__float_as_uint(xs[t][off + b]) ^ neg);
            acc[t][p & 1] += v;
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < N; ++t) {
    float s = acc[t][0] + acc[t][1];
    for (int m = kLanesPerRow / 2; m > 0; m /= 2) s += __shfl_xor_sync(0xffffffffu, s, m);
    acc[t][0] = s;
  }
  if (sub == 0 && o < sg.out) {
#pragma unroll
    for (int t = 0; t < N; ++t)
      if (t < n - n0) ws[(int64_t(blockIdx.y) * n + n0 + t) * segs.total_out + sg.col + o] = acc[t][0];
  }
}

template <typename T>
__global__ void epilogue_kernel(float* __restrict__ ws, int splits, Segs segs, bool post_ln, float eps,
                                T* __restrict__ y, int64_t n) {
  ONEBIT_PDL_WAIT();
  __shared__ float red[32];
  const int64_t t = blockIdx.x, total = segs.total_out;
  for (int si = 0; si < segs.count; ++si) {  // uniform: every thread walks every layer
    const Seg& sg = segs.s[si];
    float* wr = ws + t * total + sg.col;  // split 0's slots of this layer and token
    T* yr = y + t * total + sg.col;
    float sum = 0.f;
    for (int64_t o = threadIdx.x; o < sg.out; o += blockDim.x) {
      float v = 0.f;
      for (int s = 0; s < splits; ++s) v += ws[(int64_t(s) * n + t) * total + sg.col + o];
      v = v * sg.h[o] + (sg.bias ? sg.bias[o] : 0.f);
      if (post_ln) {
        sum += v;
        wr[o] = v;  // split 0's slot now holds the pre-norm value
      } else {
        yr[o] = from_f<T>(v);
      }
    }
    if (!post_ln) continue;
    const float mean = block_sum(sum, red) / float(sg.out);
    float sq = 0.f;
    for (int64_t o = threadIdx.x; o < sg.out; o += blockDim.x) {
      const float d = wr[o] - mean;
      sq += d * d;
    }
    const float rstd = rsqrtf(block_sum(sq, red) / float(sg.out) + eps);
    for (int64_t o = threadIdx.x; o < sg.out; o += blockDim.x) yr[o] = from_f<T>((wr[o] - mean) * rstd);
  }
}

template <typename T>
const char* launch(const GemvGroupArgs& a, int splits, cudaStream_t st) {
  const T* x = static_cast<const T*>(a.x);
  Segs segs{};
  segs.count = a.count;
  int64_t blocks = 0, col = 0;
  for (int i = 0; i < a.count; ++i) {
    const GemvGroupLayer& l = a.layers[i];
    segs.s[i] = Seg{l.g, static_cast<const uint4*>(l.signs), l.h, l.bias, l.out, col, blocks};
    col += l.out;
    blocks += (l.out + kRowsPerBlock - 1) / kRowsPerBlock;
  }
  segs.total_out = col;
  const int64_t row_vec = a.row_bytes / 16, tiles = (a.in + kTile - 1) / kTile;
  const int64_t per_split = (tiles + splits - 1) / splits;
  const dim3 grid{static_cast<unsigned>(blocks), static_cast<unsigned>(splits)};
  for (int64_t n0 = 0; n0 < a.n; n0 += kMaxTokensPerPass) {
    const int64_t m = a.n - n0 < kMaxTokensPerPass ? a.n - n0 : kMaxTokensPerPass;
#define ONEBIT_GEMV_CASE(NT)                                                                               \
  case NT:                                                                                                 \
    ONEBIT_CUDA_LAUNCH(grid, kWarps * 32, 0, st, partial_kernel<T, NT>)                                    \
    (x, segs, row_vec, a.workspace, n0, a.n, a.in, per_split);                                             \
    break;
    switch (m) {
      ONEBIT_GEMV_CASE(1) ONEBIT_GEMV_CASE(2) ONEBIT_GEMV_CASE(3) ONEBIT_GEMV_CASE(4)
      ONEBIT_GEMV_CASE(5) ONEBIT_GEMV_CASE(6) ONEBIT_GEMV_CASE(7) ONEBIT_GEMV_CASE(8)
      default: break;
    }
#undef ONEBIT_GEMV_CASE
  }
  ONEBIT_CUDA_LAUNCH(unsigned(a.n), 256, 0, st, epilogue_kernel<T>)
  (a.workspace, splits, segs, a.post_layernorm, a.ln_eps, static_cast<T*>(a.y), a.n);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
}  // namespace

int choose_splits(int64_t in, int64_t out, int sms) {
  const int64_t blocks = (out + kRowsPerBlock - 1) / kRowsPerBlock, tiles = (in + kTile - 1) / kTile;
  int64_t s = (4 * int64_t(sms) + blocks - 1) / blocks;  // about 4 blocks per multiprocessor
  if (s > tiles) s = tiles;
  return s < 1 ? 1 : int(s);
}

int64_t workspace_floats(int64_t n, int64_t out, int splits) { return int64_t(splits) * n * out; }

const char* packed_gemv_group(const GemvGroupArgs& a, int splits, void* stream) {
  if (a.count < 1 || a.count > kMaxGroupLayers) return "packed_gemv: a group holds 1 to 4 layers";
  int64_t total = 0;
  for (int i = 0; i < a.count; ++i) total += a.layers[i].out;
  if (a.n == 0 || total == 0) return nullptr;
  // The partial kernel reads 16-byte words of ⌈in/128⌉ sign blocks per row.
  if (a.row_bytes % 16 != 0 || a.row_bytes < 16 * ((a.in + 127) / 128))
    return "packed_gemv: row_bytes must be 16·⌈in/128⌉ (runtime rows)";
  for (int i = 0; i < a.count; ++i)
    if (reinterpret_cast<uintptr_t>(a.layers[i].signs) % 16 != 0) return "packed_gemv: signs must be 16-byte aligned";
  if (splits < 1 || splits > 65535) return "packed_gemv: splits must be in [1, 65535]";  // (empty splits write 0)
  if (a.workspace == nullptr) return "packed_gemv: needs a workspace";
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.act) {
    case Act::F32: return launch<float>(a, splits, st);
    case Act::BF16: return launch<__nv_bfloat16>(a, splits, st);
    case Act::F16: return launch<__half>(a, splits, st);
  }
  return "packed_gemv: unknown activation dtype";
}

const char* packed_gemv(const GemvArgs& a, int splits, void* stream) {
  GemvGroupArgs g;
  g.x = a.x;
  g.act = a.act;
  g.layers[0] = GemvGroupLayer{a.g, a.signs, a.h, a.bias, a.out};
  g.count = 1;
  g.row_bytes = a.row_bytes;
  g.post_layernorm = a.post_layernorm;
  g.ln_eps = a.ln_eps;
  g.y = a.y;
  g.workspace = a.workspace;
  g.n = a.n, g.in = a.in;
  return packed_gemv_group(g, splits, stream);
}

}  // namespace onebit::kernels::cuda
