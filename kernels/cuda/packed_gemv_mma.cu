// CUDA packed 1-bit GEMV on the tensor cores: the "mma" kernel (kernels/cuda/packed_gemv.h),
// and the kernel choice (plan_gemv, packed_gemv with a plan). docs/deployment.md, "CUDA kernel".
//
// Why. The lanes kernel (packed_gemv.cu) spends about 6 instructions per weight and token
// (extract a bit, move it to the sign, load x, xor, add): issue-bound near 0.7 TB/s of sign
// bytes. At memory speed on an H100/H200 (3-4 TB/s of signs ≈ 92-120 weights per clock per SM)
// an SM can issue about one instruction per weight for everything (128 lanes per clock), of
// which at most ~0.6 on the integer pipe (64 lanes per clock). Here the products go to the
// tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulators) and the signs cost one LOP3 per
// two weights, whatever the number of tokens.
//
// A (16 rows × 16 k): one LOP3 (word & mask) | base makes a bf16 pair from one bit of each
// 16-bit half of a 32-bit word of signs; the bit used is at one of four positions, each a
// "class" with its own encoding (kernels/cuda/packed_gemv_mma_map.h): bit 15 the bf16 sign bit
// of ±1, bit 14 an exponent bit giving 0 or 2, bits 13 and 12 exponent bits giving 1 or a base of
// 2^-64 / 2^-32; B is scaled per class (×1, ×−1, ×−2) so that Σ A·B + T = Σ sign·x·g with
// T = Σ x·g over the inputs of classes 1-3 (summed while staging). Shifting a word by 4, 8 and 12
// brings the next bits to those positions: 3 shifts (IMAD.SHL, on the FMA pipe) and 16 LOP3 per
// 32 weights.
//
// B (16 k × 8 columns): x ⊙ g as hi = bf16(v) and lo = bf16(v − hi), 16 significant bits (error
// ≤ 2^-17 of each product: fp32-level sums); column 2u is token u's hi, 2u + 1 its lo, 4 tokens
// per mma, two mma for 5 to 8 tokens. A NaN or inf in x makes its token's hi or lo columns NaN or
// inf, so every output of that token non-finite, and no other token's.
//
// The k order inside a chunk of 512 inputs (the map): thread tig of an mma quad owns 16-byte
// block tig of its rows (one 128-bit load per row), so A is built from the thread's own loads;
// B is staged in shared memory in fragment order by the same map (one 8- or 16-byte load per lane
// and k-step, conflict-free). tests/kernels/test_packed.cpp emulates one chunk on the CPU.
//
// Blocks (Cfg): one token: 256 threads, 8 warps on the same 32 rows (2 m-tiles each), each warp
// on its own chunks, staging its own B (shared by 32 rows; x and g of its next chunk are loaded
// while it computes); 2 to 8 tokens: 128 threads, 4 warps on 128 rows sharing the block's staged
// B (the staging, about 7 instructions per input and token, is then shared by 128 rows). Signs of
// the next chunk are loaded while the current one is computed. Split-K over blocks only where the
// rows alone leave the GPU short of blocks.
// Epilogue: without split-K and post-LayerNorm, h, bias and the cast happen in the same launch
// (one launch per call: the one-token decode case of every LLaMA-7B shape); otherwise the sums go
// to the workspace and a second kernel adds the splits and applies h, bias, the LayerNorm (one
// 1024-thread block per token) and the cast.
//
// SASS of the one-token kernel per chunk and thread (512 weights: 2 m-tiles × 2 rows × 128):
// 256 LOP3 + 48 IMAD.SHL + 64 HMMA + 32 LDS in the k-steps (0.8 per weight), ≈150 staging, ≈40
// loads and bookkeeping: ≈1.15 instructions per weight; 8 tokens: the same A work, 2 HMMA per
// 256 weights, staging shared by 4× the rows. Auto stays on the lanes kernel until this one has
// been measured on a GPU (bench-packed-gemv --device cuda prints both).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/packed_gemv.h"
#include "kernels/cuda/packed_gemv_mma_map.h"

namespace onebit::kernels::cuda {

namespace mma_detail {

constexpr int kChunk = 512;    // inputs per chunk: 4 blocks of 128, one per thread of an mma quad
constexpr int kSteps = 32;     // k-steps of 16 per chunk
constexpr int kRT = 2;         // m-tiles of 16 rows per warp
constexpr int kLnThreads = 1024;
constexpr int kLnCached = 16;  // LayerNorm epilogue: values per thread held in registers (out ≤ 16384)

// Per tokens-per-pass NT: the block's shape.
//  NT = 1: 256 threads, 8 warps on the same 32 rows, each on its own chunks (it stages its own
//          B: one warp is a staging group; B shared by 32 rows); 2 blocks per SM (128 registers).
//  NT ≥ 2: 128 threads, 4 warps side by side on 128 rows sharing the B the block stages (the
//          staging, about 7 instructions per input and token, is shared by 128 rows); 3 blocks
//          per SM (170 registers).
template <int NT>
struct Cfg {
  static constexpr int THREADS = NT == 1 ? 256 : 128;
  static constexpr int MIN_BLOCKS = NT == 1 ? 2 : 3;
  static constexpr int WARPS = THREADS / 32;
  static constexpr int WR = NT == 1 ? 1 : 4;  // warps side by side on rows (they share staged B)
  static constexpr int WK = WARPS / WR;       // staging groups of WR warps, on alternate chunks
  static constexpr int ROWS = WR * kRT * 16;  // rows per block: 32 or 128
  static constexpr int P = 32 * WR;           // threads per staging group
  static constexpr int GPT = mma_map::groups_per_thread(P);     // staging groups per thread
  static constexpr int TSTEP = mma_map::token_step(P);          // a thread's tokens: first, first + TSTEP, ...
  static constexpr int TPT = (NT + TSTEP - 1) / TSTEP;          // tokens per thread at most
  static constexpr int CG = NT <= 4 ? 1 : 2;  // mma column groups (4 tokens × {hi, lo} each)
  static constexpr int GU = NT == 1 ? 2 : 8;  // B columns held in shared memory
  static constexpr int UNITS = kSteps * mma_map::b_row_units(GU);  // units of CG·8 bytes
  static constexpr int ACC = CG == 1 ? 2 : 1;    // accumulator sets (alternate k-steps: shorter mma chains)
  // x and g of the next chunk loaded into registers while the current one is computed: for one
  // token (24 registers), where a warp stages alone; with more tokens the x values would not
  // fit, and the other blocks on the multiprocessor compute while one stages.
  static constexpr bool PREFETCH = NT == 1;
  static_assert(GPT * P == 64 * TSTEP, "every (group, token) pair once");
  static_assert(WR == 1 || WK == 1, "a staging group is one warp or the whole block");
};

using mma_map::b_unit;
using mma_map::class_mult;
using mma_map::class_of;
using mma_map::class_t_factor;
using mma_map::Group;
using mma_map::stage_group;
static_assert(mma_map::kChunk == kChunk && mma_map::kSteps == kSteps, "one k map");

using common::block_sum;
using common::from_f;

// Four consecutive values of x (raw bits: 16-bit types two per word) and of g.
template <typename T>
struct X4 {
  uint32_t w[sizeof(T)];
};
template <typename T>
__device__ __forceinline__ float x_elem(const X4<T>& v, int c) {
  if constexpr (sizeof(T) == 4) {
    return __uint_as_float(v.w[c]);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __uint_as_float((c & 1) ? (v.w[c >> 1] & 0xFFFF0000u) : (v.w[c >> 1] << 16));
  } else {
    return __half2float(__ushort_as_half((unsigned short)((c & 1) ? (v.w[c >> 1] >> 16) : (v.w[c >> 1] & 0xFFFFu))));
  }
}
// x[k .. k + 3] (k a multiple of 4): one vector load when `vec` (rows and base aligned), else four
// scalar loads, each only when `checked` is false or k + c < in (else 0).
template <typename T>
__device__ __forceinline__ X4<T> load_x4(const T* p, int k, int in, bool vec, bool checked) {
  X4<T> v;
  if constexpr (sizeof(T) == 4) {
    if (vec && !checked) {
      const uint4 u = *reinterpret_cast<const uint4*>(p + k);
      v.w[0] = u.x, v.w[1] = u.y, v.w[2] = u.z, v.w[3] = u.w;
    } else {
      const uint32_t* q = reinterpret_cast<const uint32_t*>(p);
#pragma unroll
      for (int c = 0; c < 4; ++c) v.w[c] = (!checked || k + c < in) ? q[k + c] : 0u;
    }
  } else {
    if (vec && !checked) {
      const uint2 u = *reinterpret_cast<const uint2*>(p + k);
      v.w[0] = u.x, v.w[1] = u.y;
    } else {
      const unsigned short* q = reinterpret_cast<const unsigned short*>(p);
      uint32_t e[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) e[c] = (!checked || k + c < in) ? uint32_t(q[k + c]) : 0u;
      v.w[0] = e[0] | (e[1] << 16), v.w[1] = e[2] | (e[3] << 16);
    }
  }
  return v;
}
__device__ __forceinline__ float4 load_g4(const float* g, int k, int in, bool vec, bool checked) {
  if (vec && !checked) return *reinterpret_cast<const float4*>(g + k);
  float4 v;
  v.x = (!checked || k < in) ? g[k] : 0.f;
  v.y = (!checked || k + 1 < in) ? g[k + 1] : 0.f;
  v.z = (!checked || k + 2 < in) ? g[k + 2] : 0.f;
  v.w = (!checked || k + 3 < in) ? g[k + 3] : 0.f;
  return v;
}
__device__ __forceinline__ float f4(const float4& v, int c) { return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w; }

__device__ __forceinline__ uint32_t word_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// d += A·B, m16n8k16, bf16 inputs, fp32 accumulators (sm_80+).
__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#elif defined(ONEBIT_CUDA_EMU)  // tests/cuda_emu: the instruction's semantics on the CPU
  ::onebit::emu::mma_m16n8k16_bf16(d, a0, a1, a2, a3, b0, b1);
#else
  __trap();  // built for sm_80 and sm_90 only (CMakeLists.txt); the host refuses older devices
#endif
}

// sign_pair of the k map as one LOP3: written as C++, (w & mask) | base compiles to two LOP3s
// (an instruction takes one immediate); PTX lop3 with both constants as operands lets ptxas keep
// the base in a register (3 registers, hoisted) and the mask as the immediate.
__device__ __forceinline__ uint32_t sign_pair_lop3(uint32_t w, int ci) {
  const uint32_t mask = 0x80008000u >> ci;
  const uint32_t base = ci == 0 ? 0x3F803F80u : ci == 1 ? 0u : ci == 2 ? 0x1F801F80u : 0x2F802F80u;
  uint32_t d;
#ifdef ONEBIT_CUDA_EMU
  d = (w & mask) | base;
#else
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(w), "r"(mask), "r"(base));  // (a & b) | c
#endif
  return d;
}

// Barrier of a staging group: one warp, or the whole block.
template <int WR>
__device__ __forceinline__ void group_sync() {
  if constexpr (WR == 1) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

// One pass of up to 8 tokens (NT exactly) over the rows of this block and the chunks of split
// blockIdx.y. fused: y = cast(h·Σ + bias) here; else ws[split][n0 + t][o] = Σ (fp32).
// Signs are read once: streaming loads (ld.global.cs). No thread returns early: all take part
// in the barriers. Offsets: signs in 16-byte blocks and x, g in elements fit 32 bits (host
// checks), so an address is one IMAD.WIDE from a base pointer.
template <typename T, int NT>
__global__ void __launch_bounds__(Cfg<NT>::THREADS, Cfg<NT>::MIN_BLOCKS)
    mma_kernel(const T* __restrict__ x, const float* __restrict__ g, const uint4* __restrict__ signs, int row_vec,
               const float* __restrict__ h, const float* __restrict__ bias, T* __restrict__ y,
               float* __restrict__ ws, int64_t n0, int64_t n, int in, int64_t out, int chunks, int chunks_per_split,
               bool fused, bool fast_loads) {
  ONEBIT_PDL_WAIT();
  using C = Cfg<NT>;
  __shared__ __align__(16) uint2 sB[C::WK][C::UNITS * C::CG];  // staged B of each group's current chunk
  __shared__ float sRed[C::WK][C::ROWS][NT];                  // per-group sums, reduced at the end
  __shared__ float sT[C::WARPS][C::TPT];                       // per-warp T of its token slots

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wr = warp % C::WR, wk = warp / C::WR;
  const int gq = lane >> 2, tig = lane & 3;  // mma groupID and thread in group
  const int p = wr * 32 + lane;              // thread index in the staging group
  const int64_t row0 = int64_t(blockIdx.x) * C::ROWS;
  const int c_begin = int(blockIdx.y) * chunks_per_split;
  const int c_end = min(c_begin + chunks_per_split, chunks);
  // This group's chunks: c_begin + wk + WK·i, i < nc.
  const int nc = c_begin + wk < c_end ? (c_end - c_begin - wk + C::WK - 1) / C::WK : 0;
  uint32_t* const sb = reinterpret_cast<uint32_t*>(&sB[wk][0]);

  // Columns no token writes (2·NT < GU·CG) only feed accumulator columns nobody reads, but
  // are cleared once so that no uninitialised shared memory is read.
  if constexpr (2 * NT != C::GU * C::CG) {
    for (int i = p; i < C::UNITS * C::CG * 2; i += C::P) sb[i] = 0u;
    group_sync<C::WR>();
  }

  // Rows of this thread in the mma fragments: (m-tile mt, half hf) → rbase + 16·mt + 8·hf.
  // sig_at[mt][hf]: offset in 16-byte blocks of (that row, block 4c + tig) for the group's next
  // chunk c, advanced by 4·WK blocks per chunk (loop-carried, so the compiler keeps it in a
  // register instead of recomputing it from the thread index every chunk). Rows past `out` read
  // row out − 1 instead, blocks past the row its last block (no predicates in the loop): the
  // former's sums are never written, the latter's inputs are ≥ in, where B is zero, and A is
  // always finite.
  const int64_t rbase = row0 + wr * 32 + gq;
  uint32_t sig_at[kRT][2];
#pragma unroll
  for (int mt = 0; mt < kRT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int64_t o = rbase + 16 * mt + 8 * hf;
      sig_at[mt][hf] = uint32_t(o < out ? o : out - 1) * uint32_t(row_vec) + uint32_t(4 * (c_begin + wk) + tig);
    }
  int blk_at = 4 * (c_begin + wk) + tig;  // the block index itself, for the clamp

  // Loads the signs of the group's next chunk and advances to the one after.
  auto load_signs = [&](uint4 (&dst)[kRT][2]) {
    const uint32_t past = uint32_t(max(blk_at - (row_vec - 1), 0));  // > 0 only in the last chunk
#pragma unroll
    for (int mt = 0; mt < kRT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        dst[mt][hf] = __ldcs(signs + (sig_at[mt][hf] - past));
        sig_at[mt][hf] += 4u * C::WK;
      }
    blk_at += 4 * C::WK;
  };

  // This thread's staging groups: input offset in the chunk and shared-memory word of the hi
  // column of token 0 at k-step s0 (other tokens, hi/lo and s0 + 1: immediate offsets).
  int koff[C::GPT], wbase[C::GPT];
#pragma unroll
  for (int it = 0; it < C::GPT; ++it) {
    const Group m = stage_group(mma_map::group_of(p, it, C::P));
    koff[it] = m.koff;
    wbase[it] = b_unit(C::GU, m.s0, 0, m.tig) * C::CG * 2;
  }
  const int t_first = mma_map::token_first(p, C::P);
  const T* const xr = x + n0 * int64_t(in) + int64_t(t_first) * in;  // this thread's first token

  // x and g of the chunk to stage next, as loaded: per group, inputs koff + c and koff + 16 + c
  // (c < 4) of each of this thread's tokens (t_first + TSTEP·i), zero past `in`.
  X4<T> xv[C::GPT][2][C::TPT];
  float4 gv[C::GPT][2];
  auto load_xg = [&](int c) {
    const int base = c * kChunk;
    if (fast_loads && base + kChunk <= in) {  // whole chunk, aligned rows: vector loads
#pragma unroll
      for (int it = 0; it < C::GPT; ++it)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int k = base + koff[it] + 16 * e;
          gv[it][e] = *reinterpret_cast<const float4*>(g + k);
#pragma unroll
          for (int i = 0; i < C::TPT; ++i)
            if (t_first + C::TSTEP * i < NT) xv[it][e][i] = load_x4(xr + C::TSTEP * i * in, k, in, true, false);
        }
    } else {  // the last chunk, or unaligned rows: scalar loads, zero past `in`
#pragma unroll
      for (int it = 0; it < C::GPT; ++it)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int k = base + koff[it] + 16 * e;
          gv[it][e] = load_g4(g, k, in, false, true);
#pragma unroll
          for (int i = 0; i < C::TPT; ++i)
            if (t_first + C::TSTEP * i < NT) xv[it][e][i] = load_x4(xr + C::TSTEP * i * in, k, in, false, true);
        }
    }
  };

  float tacc[C::TPT];  // this thread's share of T per token slot
#pragma unroll
  for (int i = 0; i < C::TPT; ++i) tacc[i] = 0.f;

  // B of the staged chunk: per group and token, for each class c the pair v = mult·x·g at
  // koff + c, koff + 16 + c (low, high half) as hi = bf16(v) and lo = bf16(v − hi); k-step s0
  // takes c = 3, 2 (registers 0, 1), s0 + 1 takes c = 1, 0: four 64-bit stores (hi, lo × 2).
  auto stage = [&]() {
#pragma unroll
    for (int it = 0; it < C::GPT; ++it) {
      float gm[2][4];
#pragma unroll
      for (int e = 0; e < 2; ++e)
#pragma unroll
        for (int c = 0; c < 4; ++c) gm[e][c] = f4(gv[it][e], c) * class_mult(class_of(c));
#pragma unroll
      for (int i = 0; i < C::TPT; ++i) {
        const int t = t_first + C::TSTEP * i;
        if (t >= NT) continue;
        uint32_t hi[4], lo[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float v0 = x_elem(xv[it][0][i], c) * gm[0][c], v1 = x_elem(xv[it][1][i], c) * gm[1][c];
          const __nv_bfloat162 h2 = __floats2bfloat162_rn(v0, v1);  // .x (low 16 bits) = v0
          hi[c] = *reinterpret_cast<const uint32_t*>(&h2);
          const float h0 = __uint_as_float(hi[c] << 16), h1 = __uint_as_float(hi[c] & 0xFFFF0000u);
          const __nv_bfloat162 l2 = __floats2bfloat162_rn(v0 - h0, v1 - h1);
          lo[c] = *reinterpret_cast<const uint32_t*>(&l2);
          const float tf = class_t_factor(class_of(c));
          if (tf != 0.f) tacc[i] = fmaf(v0 + v1, tf, tacc[i]);
        }
        // Token t's columns: hi 2·(t mod 4), lo 2·(t mod 4) + 1, column group t / 4.
        const int w_hi = wbase[it] + (4 * (2 * (t & 3)) * C::CG + (t >> 2)) * 2;
        const int w_lo = w_hi + 4 * C::CG * 2;
        constexpr int kNextStep = mma_map::b_row_units(C::GU) * C::CG * 2;  // words from k-step s0 to s0 + 1
        *reinterpret_cast<uint2*>(sb + w_hi) = make_uint2(hi[3], hi[2]);
        *reinterpret_cast<uint2*>(sb + w_lo) = make_uint2(lo[3], lo[2]);
        *reinterpret_cast<uint2*>(sb + w_hi + kNextStep) = make_uint2(hi[1], hi[0]);
        *reinterpret_cast<uint2*>(sb + w_lo + kNextStep) = make_uint2(lo[1], lo[0]);
      }
    }
  };

  float acc[kRT][C::CG][C::ACC][4];
#pragma unroll
  for (int mt = 0; mt < kRT; ++mt)
#pragma unroll
    for (int cg = 0; cg < C::CG; ++cg)
#pragma unroll
      for (int a = 0; a < C::ACC; ++a)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][cg][a][i] = 0.f;

  // The 32 k-steps of a chunk whose B is staged and whose signs are in `w4`. Lanes of unused
  // columns (g ≥ GU) load a used column's B: their accumulator columns are never read.
  const uint32_t* const sb_lane = sb + b_unit(C::GU, 0, gq % C::GU, tig) * C::CG * 2;
  auto compute = [&](const uint4 (&w4)[kRT][2]) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t sh[kRT][2];  // word q of each row, shifted by 4j
#pragma unroll
        for (int mt = 0; mt < kRT; ++mt)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) sh[mt][hf] = word_of(w4[mt][hf], q) << (4 * j);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int s = 8 * q + 2 * j + hh;
          const uint32_t* const bp = sb_lane + s * mma_map::b_row_units(C::GU) * C::CG * 2;
          uint32_t b[C::CG][2];
          if constexpr (C::CG == 1) {
            const uint2 v = *reinterpret_cast<const uint2*>(bp);
            b[0][0] = v.x, b[0][1] = v.y;
          } else {
            const uint4 v = *reinterpret_cast<const uint4*>(bp);
            b[0][0] = v.x, b[0][1] = v.y, b[C::CG - 1][0] = v.z, b[C::CG - 1][1] = v.w;
          }
#pragma unroll
          for (int mt = 0; mt < kRT; ++mt) {
            const uint32_t a0 = sign_pair_lop3(sh[mt][0], 2 * hh), a1 = sign_pair_lop3(sh[mt][1], 2 * hh);
            const uint32_t a2 = sign_pair_lop3(sh[mt][0], 2 * hh + 1), a3 = sign_pair_lop3(sh[mt][1], 2 * hh + 1);
#pragma unroll
            for (int cg = 0; cg < C::CG; ++cg) mma_bf16(acc[mt][cg][s % C::ACC], a0, a1, a2, a3, b[cg][0], b[cg][1]);
          }
        }
      }
    }
  };

  // Chunk i of this group, signs in `cur` (loaded): loads chunk i + 1's signs into `nxt` first,
  // stages B (x and g loaded ahead when C::PREFETCH, else now), computes.
  uint4 s0[kRT][2], s1[kRT][2];
  auto chunk_of = [&](int i) { return c_begin + wk + C::WK * i; };
  auto step = [&](uint4 (&cur)[kRT][2], uint4 (&nxt)[kRT][2], int i) {
    const bool more = i + 1 < nc;
    if (more) load_signs(nxt);  // chunk i + 1
    if constexpr (!C::PREFETCH) load_xg(chunk_of(i));
    group_sync<C::WR>();  // the group is done reading the previous chunk's B
    stage();
    group_sync<C::WR>();  // B visible to the group
    if constexpr (C::PREFETCH) {
      if (more) load_xg(chunk_of(i + 1));
    }
    compute(cur);
  };
  if (nc > 0) {
    load_signs(s0);  // chunk 0
    if constexpr (C::PREFETCH) load_xg(chunk_of(0));
  }
  for (int i = 0; i < nc; i += 2) {
    step(s0, s1, i);
    if (i + 1 < nc) step(s1, s0, i + 1);
  }

  // Reduce: the group's sums per (row, token) into shared memory, T per warp.
#pragma unroll
  for (int mt = 0; mt < kRT; ++mt)
#pragma unroll
    for (int cg = 0; cg < C::CG; ++cg) {
      const int t = 4 * cg + tig;
      if (t < NT) {
        float top = 0.f, bottom = 0.f;  // rows gq and gq + 8 of the m-tile: hi + lo columns of token t
#pragma unroll
        for (int a = 0; a < C::ACC; ++a) {
          top += acc[mt][cg][a][0] + acc[mt][cg][a][1];
          bottom += acc[mt][cg][a][2] + acc[mt][cg][a][3];
        }
        const int r = wr * 32 + 16 * mt + gq;
        sRed[wk][r][t] = top;
        sRed[wk][r + 8][t] = bottom;
      }
    }
#pragma unroll
  for (int i = 0; i < C::TPT; ++i) {  // a warp's threads share their tokens (token_first is per warp)
    float v = tacc[i];
#pragma unroll
    for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (lane == 0) sT[warp][i] = v;
  }
  __syncthreads();
  for (int e = tid; e < C::ROWS * NT; e += C::THREADS) {
    const int t = e / C::ROWS, r = e % C::ROWS;
    const int64_t o = row0 + r;
    if (o >= out) continue;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < C::WARPS; ++w) {  // T of token t: the slots of the warps whose threads staged it
      const int tf = mma_map::token_first(w * 32 % C::P, C::P);
      if (t >= tf && (t - tf) % C::TSTEP == 0) v += sT[w][(t - tf) / C::TSTEP];
    }
#pragma unroll
    for (int k = 0; k < C::WK; ++k) v += sRed[k][r][t];
    if (fused) {
      y[(n0 + t) * out + o] = from_f<T>(v * h[o] + (bias ? bias[o] : 0.f));
    } else {
      ws[(int64_t(blockIdx.y) * n + n0 + t) * out + o] = v;
    }
  }
}

// Split-K sums, h, bias and the cast; no LayerNorm: one thread per output.
template <typename T>
__global__ void finish_kernel(const float* __restrict__ ws, int splits, const float* __restrict__ h,
                              const float* __restrict__ bias, T* __restrict__ y, int64_t n, int64_t out) {
  ONEBIT_PDL_WAIT();
  const int64_t total = n * out, plane = n * out;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i % out;
    float v = 0.f;
    for (int s = 0; s < splits; ++s) v += ws[s * plane + i];
    y[i] = from_f<T>(v * h[o] + (bias ? bias[o] : 0.f));
  }
}

// Split-K sums, h, bias, LayerNorm without affine (biased variance, eps inside the root, as the
// lanes kernel's epilogue and torch::layer_norm) and the cast; one block of kLnThreads per token.
// Rows up to kLnCached·kLnThreads outputs keep their values in registers (one read of the
// workspace, all loads of a split in flight together); longer rows re-read it per pass.
template <typename T>
__global__ void __launch_bounds__(kLnThreads, 1)
    ln_kernel(const float* __restrict__ ws, int splits, const float* __restrict__ h, const float* __restrict__ bias,
              float eps, T* __restrict__ y, int64_t n, int64_t out) {
  ONEBIT_PDL_WAIT();
  __shared__ float red[32];
  const int64_t t = blockIdx.x, plane = n * out;
  const float* const w0 = ws + t * out;
  T* const yt = y + t * out;
  const int tid = threadIdx.x;
  auto value = [&](int64_t o) {
    float v = 0.f;
    for (int s = 0; s < splits; ++s) v += w0[s * plane + o];
    return v * h[o] + (bias ? bias[o] : 0.f);
  };
  if (out <= int64_t(kLnCached) * kLnThreads) {
    float v[kLnCached];
#pragma unroll
    for (int e = 0; e < kLnCached; ++e) v[e] = 0.f;
    for (int s = 0; s < splits; ++s) {
#pragma unroll
      for (int e = 0; e < kLnCached; ++e) {
        const int64_t o = tid + int64_t(kLnThreads) * e;
        if (o < out) v[e] += w0[s * plane + o];
      }
    }
    float sum = 0.f;
#pragma unroll
    for (int e = 0; e < kLnCached; ++e) {
      const int64_t o = tid + int64_t(kLnThreads) * e;
      if (o < out) {
        v[e] = v[e] * h[o] + (bias ? bias[o] : 0.f);
        sum += v[e];
      }
    }
    const float mean = block_sum(sum, red) / float(out);
    float sq = 0.f;
#pragma unroll
    for (int e = 0; e < kLnCached; ++e) {
      const int64_t o = tid + int64_t(kLnThreads) * e;
      if (o < out) sq += (v[e] - mean) * (v[e] - mean);
    }
    const float rstd = rsqrtf(block_sum(sq, red) / float(out) + eps);
#pragma unroll
    for (int e = 0; e < kLnCached; ++e) {
      const int64_t o = tid + int64_t(kLnThreads) * e;
      if (o < out) yt[o] = from_f<T>((v[e] - mean) * rstd);
    }
    return;
  }
  float sum = 0.f;
  for (int64_t o = tid; o < out; o += kLnThreads) sum += value(o);
  const float mean = block_sum(sum, red) / float(out);
  float sq = 0.f;
  for (int64_t o = tid; o < out; o += kLnThreads) {
    const float d = value(o) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_sum(sq, red) / float(out) + eps);
  for (int64_t o = tid; o < out; o += kLnThreads) yt[o] = from_f<T>((value(o) - mean) * rstd);
}

int64_t chunks_of(int64_t in) { return (in + kChunk - 1) / kChunk; }
int rows_per_block(int64_t tokens_in_pass) { return tokens_in_pass == 1 ? Cfg<1>::ROWS : Cfg<2>::ROWS; }
int groups_per_block(int64_t tokens_in_pass) { return tokens_in_pass == 1 ? Cfg<1>::WK : Cfg<2>::WK; }

// Split-K of a call: none when the rows give about a block per multiprocessor already (one
// launch without post-LN); else about 2 blocks per multiprocessor, at least one chunk per
// group of warps.
int mma_splits(int64_t n, int64_t in, int64_t out, int sms, int requested) {
  const int64_t m = n < kMaxTokensPerPass ? n : kMaxTokensPerPass;  // the first pass decides
  const int64_t chunks = chunks_of(in), row_blocks = (out + rows_per_block(m) - 1) / rows_per_block(m);
  if (chunks <= 0 || row_blocks <= 0 || n <= 0) return 1;  // nothing to launch
  int64_t s = requested;
  if (s <= 0) {
    const int64_t cap = chunks / groups_per_block(m);
    s = 4 * row_blocks >= 3 * int64_t(sms) ? 1 : (2 * int64_t(sms) + row_blocks - 1) / row_blocks;
    if (s > cap) s = cap;
  }
  if (s > chunks) s = chunks;
  if (s < 1) s = 1;
  const int64_t per = (chunks + s - 1) / s;  // no empty splits
  s = (chunks + per - 1) / per;
  return int(s);
}

template <typename T>
const char* launch_mma(const GemvArgs& a, int splits, cudaStream_t st) {
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const auto* s = static_cast<const uint4*>(a.signs);
  const int64_t row_vec = a.row_bytes / 16;
  const int chunks = int(chunks_of(a.in));
  const int per_split = (chunks + splits - 1) / splits;
  const bool fused = splits == 1 && !a.post_layernorm;
  // Vector loads of 4 inputs: x rows aligned to 4 elements (in % 4 == 0 and an aligned base), g
  // aligned to 16 bytes.
  const bool fast_loads = a.in % 4 == 0 && reinterpret_cast<uintptr_t>(a.x) % (4 * sizeof(T)) == 0 &&
                          reinterpret_cast<uintptr_t>(a.g) % 16 == 0;
  for (int64_t n0 = 0; n0 < a.n; n0 += kMaxTokensPerPass) {
    const int64_t m = a.n - n0 < kMaxTokensPerPass ? a.n - n0 : kMaxTokensPerPass;
    const int rows = rows_per_block(m);
    const dim3 grid(unsigned((a.out + rows - 1) / rows), unsigned(splits));
#define ONEBIT_MMA_CASE(NT)                                                                                \
  case NT:                                                                                                 \
    ONEBIT_CUDA_LAUNCH(grid, Cfg<NT>::THREADS, 0, st, mma_kernel<T, NT>)                                   \
    (x, a.g, s, int(row_vec), a.h, a.bias, y, a.workspace, n0, a.n, int(a.in), a.out, chunks, per_split, fused, \
     fast_loads);                                                                                          \
    break;
    switch (m) {
      ONEBIT_MMA_CASE(1) ONEBIT_MMA_CASE(2) ONEBIT_MMA_CASE(3) ONEBIT_MMA_CASE(4)
      ONEBIT_MMA_CASE(5) ONEBIT_MMA_CASE(6) ONEBIT_MMA_CASE(7) ONEBIT_MMA_CASE(8)
      default: break;
    }
#undef ONEBIT_MMA_CASE
  }
  if (!fused) {
    if (a.post_layernorm) {
      ONEBIT_CUDA_LAUNCH(unsigned(a.n), kLnThreads, 0, st, ln_kernel<T>)
      (a.workspace, splits, a.h, a.bias, a.ln_eps, y, a.n, a.out);
    } else {
      const int64_t total = a.n * a.out, want = (total + 255) / 256;
      ONEBIT_CUDA_LAUNCH(unsigned(want < 65536 ? want : 65536), 256, 0, st, finish_kernel<T>)
      (a.workspace, splits, a.h, a.bias, y, a.n, a.out);
    }
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* packed_gemv_mma(const GemvArgs& a, int splits, void* stream) {
  if (a.n == 0 || a.out == 0) return nullptr;
  if (a.row_bytes % 16 != 0 || a.row_bytes < 16 * ((a.in + 127) / 128))
    return "packed_gemv (mma): row_bytes must be 16·⌈in/128⌉ (runtime rows)";
  if (reinterpret_cast<uintptr_t>(a.signs) % 16 != 0) return "packed_gemv (mma): signs must be 16-byte aligned";
  // 32-bit offsets: x and g in elements (8 rows of x), signs in 16-byte blocks.
  if (a.in < 1 || a.in > (int64_t(1) << 27)) return "packed_gemv (mma): in must be in [1, 2^27]";
  if ((a.out + 32) * (a.row_bytes / 16) >= (int64_t(1) << 32)) return "packed_gemv (mma): signs over 64 GiB";
  if (a.n > (int64_t(1) << 31) - 1) return "packed_gemv (mma): too many tokens";
  if (splits < 1 || splits > 65535) return "packed_gemv (mma): splits must be in [1, 65535]";
  const bool fused = splits == 1 && !a.post_layernorm;
  if (!fused && a.workspace == nullptr) return "packed_gemv (mma): this plan needs a workspace";
  if (compute_capability_major() < 8) return "packed_gemv (mma): needs compute capability 8.0 or newer (bf16 mma.sync)";
  const auto st = static_cast<cudaStream_t>(stream);
  switch (a.act) {
    case Act::F32: return launch_mma<float>(a, splits, st);
    case Act::BF16: return launch_mma<__nv_bfloat16>(a, splits, st);
    case Act::F16: return launch_mma<__half>(a, splits, st);
  }
  return "packed_gemv (mma): unknown activation dtype";
}

}  // namespace mma_detail

const char* to_string(GemvKernel k) {
  switch (k) {
    case GemvKernel::Auto: return "auto";
    case GemvKernel::Lanes: return "lanes";
    case GemvKernel::Mma: return "mma";
  }
  return "?";
}

// The default stays the lanes kernel until the mma kernel has been measured on a GPU.
GemvKernel resolve(GemvKernel k) { return k == GemvKernel::Auto ? GemvKernel::Lanes : k; }

GemvPlan plan_gemv(GemvKernel kernel, int64_t n, int64_t in, int64_t out, bool post_layernorm, int sms, int splits) {
  GemvPlan p;
  p.kernel = resolve(kernel);
  if (p.kernel == GemvKernel::Mma) {
    p.splits = mma_detail::mma_splits(n, in, out, sms, splits);
    const bool fused = p.splits == 1 && !post_layernorm;
    p.workspace_floats = fused ? 0 : int64_t(p.splits) * n * out;
  } else {
    const int64_t tiles = std::max<int64_t>(1, std::min<int64_t>((in + 1023) / 1024, 65535));  // lanes' tiles
    p.splits = splits > 0 ? int(std::min<int64_t>(splits, tiles)) : choose_splits(in, out, sms);
    p.workspace_floats = workspace_floats(n, out, p.splits);
  }
  return p;
}

const char* packed_gemv(const GemvArgs& a, const GemvPlan& plan, void* stream) {
  switch (plan.kernel) {
    case GemvKernel::Lanes: return packed_gemv(a, plan.splits, stream);
    case GemvKernel::Mma: return mma_detail::packed_gemv_mma(a, plan.splits, stream);
    case GemvKernel::Auto: break;
  }
  return "packed_gemv: the plan's kernel must be resolved (plan_gemv), not auto";
}

}  // namespace onebit::kernels::cuda
