// Packed 1-bit signs of a OneBit weight: the format, the scalar reference and the CPU kernel
// interface (docs/deployment.md, "Format"). Plain C++: no torch, so nvcc and every CPU kernel
// file share it. Layout as in ggml: format here, reference in cpu/ref.cpp, portable kernels in
// cpu/generic.cpp, instruction-set kernels in cpu/avx2.cpp and cpu/avx512.cpp, the choice
// among them in cpu/dispatch.cpp.
//
// Signs of a row-major [out, in] weight, row by row. Byte k of a row holds the signs of inputs
// 8k..8k+7, least-significant bit first; bit 1 means −1, bit 0 means +1 (the OneBit authors'
// convention). sign(w) is −1 exactly when w < 0 (w = ±0 → +1, as in training). Bits past `in`
// are 0.
//  * File rows (model.safetensors): file_row_bytes(in) = ⌈in/8⌉ bytes, uint8 [out, ⌈in/8⌉].
//  * Runtime rows: blocks_per_row(in) = ⌈in/128⌉ SignBlocks of 16 bytes, so each row starts
//    16-byte aligned for 128-bit loads; the same bytes as the file row followed by zero bytes
//    (none when in % 128 == 0).
//  * Runtime tiles (the AVX-512 VNNI kernel's layout, chosen at load on CPUs that run it): the
//    runtime rows regrouped 16 rows at a time, rows past `out` zero. Tile t, 32-bit word q of
//    each row (q < 4·blocks): 64 bytes at (t·4·blocks + q)·64, row t·16 + r at byte 4r. One
//    64-byte load is then word q of sixteen rows, and a tile streams from memory in order.
#pragma once
#include <cstdint>

namespace onebit::kernels {

constexpr int64_t kSignsPerBlock = 128;
struct alignas(16) SignBlock {
  uint8_t q[kSignsPerBlock / 8];
};
static_assert(sizeof(SignBlock) == 16, "SignBlock must be exactly 128 bits, no padding");

inline int64_t file_row_bytes(int64_t in) { return (in + 7) / 8; }
inline int64_t blocks_per_row(int64_t in) { return (in + kSignsPerBlock - 1) / kSignsPerBlock; }
inline int64_t padded_in(int64_t in) { return blocks_per_row(in) * kSignsPerBlock; }

// ---- scalar reference (cpu/ref.cpp) ----
// w row-major [out, in] → out·blocks_per_row(in) blocks.
void pack_ref(const float* w, int64_t out, int64_t in, SignBlock* packed);
// File rows (row stride file_row_bytes(in)) ⇄ runtime blocks.
void file_rows_to_blocks(const uint8_t* file, int64_t out, int64_t in, SignBlock* packed);
void blocks_to_file_rows(const SignBlock* packed, int64_t out, int64_t in, uint8_t* file);
// True when every padding bit (past `in`) of the file rows is 0.
bool file_padding_is_zero(const uint8_t* file, int64_t out, int64_t in);
// Runtime rows ⇄ runtime tiles (tiled_rows(out)·16·blocks bytes).
constexpr int64_t kTileRows = 16;
inline int64_t tiled_rows(int64_t out) { return (out + kTileRows - 1) / kTileRows * kTileRows; }
// Byte offset in runtime tiles of 32-bit word q of row o (words = 4·blocks per row).
inline int64_t tile_word_offset(int64_t o, int64_t q, int64_t words) {
  return ((o / kTileRows) * words + q) * 64 + 4 * (o % kTileRows);
}
void rows_to_tiles(const SignBlock* rows, int64_t out, int64_t blocks, uint8_t* tiles);
void tiles_to_rows(const uint8_t* tiles, int64_t out, int64_t blocks, SignBlock* rows);

// ---- the product every kernel computes ----
// y[t, o] = h[o] · Σ_i sign[o, i] · xg[t, i] (+ bias[o]) for t < n, o in [o_begin, o_end).
// xg = x ⊙ g in fp32 with rows padded by zeros to padded_in(in) floats (row stride xs ≥ that),
// so kernels run over whole blocks; padding signs are +1 and multiply zeros.
enum class SignLayout { Rows, Tiles };
struct GemmArgs {
  const float* xg = nullptr;
  int64_t n = 0, xs = 0;
  const SignBlock* w = nullptr;  // runtime rows, or runtime tiles for gemm_tiles_avx512vnni
  int64_t blocks = 0;            // blocks_per_row(in)
  const float* h = nullptr;
  const float* bias = nullptr;  // null: none
  float* y = nullptr;
  int64_t ys = 0;  // row stride of y
};
using GemmRowsFn = void (*)(const GemmArgs& a, int64_t o_begin, int64_t o_end);

void gemm_rows_ref(const GemmArgs& a, int64_t o_begin, int64_t o_end);  // one bit at a time
// LayerNorm without affine over each of the n rows of y ([n, out], stride ys), in place:
// the post-LayerNorm epilogue (a second pass once all outputs of a row exist).
void layernorm_rows(float* y, int64_t n, int64_t out, int64_t ys, double eps);

// ---- portable kernels (cpu/generic.cpp) ----
// Rows [o_begin, o_end) of the ±1 matrix into dst (row-major, (o_end − o_begin) × in), one
// 32-byte copy per byte of signs (the tiled prefill path unpacks tiles with it).
void unpack_rows(const SignBlock* packed, int64_t in, int64_t o_begin, int64_t o_end, float* dst);
// The same from runtime tiles.
void unpack_tile_rows(const uint8_t* tiles, int64_t in, int64_t o_begin, int64_t o_end, float* dst);
// Masked add/subtract: per byte of signs, an 8-lane ±0 sign mask from a table, xor-ed into x.
void gemm_rows_generic(const GemmArgs& a, int64_t o_begin, int64_t o_end);
// Lookup table over groups of 8 inputs, one row of xg: lut[256·j + b] = Σ_k (bit k of b ?
// −xg[8j+k] : +xg[8j+k]) for j < padded_in(in)/8 (lut_floats floats); the GEMV is then one
// load and one add per 8 weights.
inline int64_t lut_floats(int64_t blocks) { return blocks * kSignsPerBlock / 8 * 256; }
void build_lut(const float* xg, int64_t blocks, float* lut);
void gemv_lut_rows(const float* lut, const GemmArgs& a, int64_t o_begin, int64_t o_end);  // a.n == 1

// ---- instruction-set kernels (cpu/avx2.cpp, cpu/avx512.cpp), same contract ----
// Both are lookup tables over groups of inputs, built per call for a chunk of the input and
// all tokens; two helpers they share (cpu/generic.cpp, built without instruction-set flags):
// Words of 32 signs per chunk: as many as keep the tables of n tokens (table_bytes_per_word
// each) within budget_bytes, a multiple of `align` words (at least `align`), at most `words`.
int64_t lut_chunk_words(int64_t budget_bytes, int64_t n, int64_t table_bytes_per_word, int64_t align, int64_t words);
// The epilogue on the sums the kernel left in y: y[t, o] = y[t, o] · h[o] (+ bias[o]).
void scale_rows(const GemmArgs& a, int64_t o_begin, int64_t o_end);
void gemm_rows_avx2(const GemmArgs& a, int64_t o_begin, int64_t o_end);
void gemm_rows_avx512(const GemmArgs& a, int64_t o_begin, int64_t o_end);
// Runtime tiles (a.w), AVX-512 VNNI + VBMI (cpu/avx512_vnni.cpp): 16-bit lookup tables, a
// scale per block of 128 inputs (not exact: see the file). o_begin a multiple of kTileRows.
void gemm_tiles_avx512vnni(const GemmArgs& a, int64_t o_begin, int64_t o_end);

// ---- run-time choice (cpu/dispatch.cpp) ----
// Avx512Vnni: AVX-512 F, BW, VBMI and VNNI (Intel Ice Lake and later, AMD Zen 4 and later);
// its kernel reads runtime tiles, the others runtime rows.
enum class CpuIsa { Generic, Avx2, Avx512, Avx512Vnni };
bool cpu_supports(CpuIsa isa);  // compiled in and supported by this CPU
// The best supported kernel, or the one named by the environment variable ONEBIT_CPU_KERNEL
// (generic | avx2 | avx512 | avx512vnni) when set and supported.
CpuIsa best_cpu_isa();
GemmRowsFn gemm_rows_for(CpuIsa isa);
inline SignLayout layout_for(CpuIsa isa) { return isa == CpuIsa::Avx512Vnni ? SignLayout::Tiles : SignLayout::Rows; }
const char* to_string(CpuIsa isa);

}  // namespace onebit::kernels
