// AMX tiles for the bfloat16 kernels' recurrent products (lstm_sequence_bf16.cc): a [rows <= 16, depth]
// bfloat16 matrix times 64 columns of weights in bfloat16 pairs, accumulated in float32 by TDPBF16PS
// (a 16 x 32 by 32 x 16 product per instruction). The weights are read in the layouts the AVX512-BF16
// tiles already use: per pair of rows k, k + 1, 64 columns of (w[k], w[k + 1]) pairs.
//
// Which products a process runs (`Bf16Products`) is chosen once: AMX where the CPU has AMX-BF16 and the
// OS grants the tile state (arch_prctl ARCH_REQ_XCOMP_PERM), else AVX512-BF16. TF_CHARRNN_AMX=0 keeps
// AVX512-BF16 on an AMX CPU; TF_CHARRNN_AMX=emulate runs the same tile code through a software model of
// the tile instructions on any CPU (slow: for testing the tile code where no AMX CPU is at hand).
#ifndef TF_CHARRNN_KERNELS_AMX_H_
#define TF_CHARRNN_KERNELS_AMX_H_

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "lstm.h"

// The hardware tile code needs g++ 11 or later (its AMX intrinsics and target("amx-tile")); an older
// compiler (or another one) builds the rest, and its library never picks AMX.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define TF_CHARRNN_AMX_TILES 1
#endif

namespace tf_charrnn {

enum class Bf16Products { kAvx512Bf16, kAmx, kAmxEmulated };

inline const char* Bf16ProductsName(Bf16Products products) {
  switch (products) {
    case Bf16Products::kAmx: return "amx";
    case Bf16Products::kAmxEmulated: return "amx (emulated)";
    default: return "avx512_bf16";
  }
}

// CPUID.(EAX=7, ECX=0):EDX bit 22 (AMX-BF16) and bit 24 (AMX-TILE); then the OS must grant the tile
// data state to this process (Linux 5.16 on: XFEATURE_XTILEDATA = 18).
inline bool AmxGranted() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!(edx & (1u << 22)) || !(edx & (1u << 24))) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

inline Bf16Products ChooseBf16Products() {
  const char* setting = std::getenv("TF_CHARRNN_AMX");
  const std::string value = setting == nullptr ? "auto" : setting;
  if (value == "0") return Bf16Products::kAvx512Bf16;
  if (value == "emulate") return Bf16Products::kAmxEmulated;
#ifdef TF_CHARRNN_AMX_TILES
  if (AmxGranted()) return Bf16Products::kAmx;
#endif
  return Bf16Products::kAvx512Bf16;
}

// Chosen on first use, for the life of the process.
inline Bf16Products ProcessBf16Products() {
  static const Bf16Products products = ChooseBf16Products();
  return products;
}

constexpr int kTileRows = 16;  // batch rows per AMX tile

#ifdef TF_CHARRNN_AMX_TILES
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16")

// The tile registers: C0..C3 = tmm0..3 (16 float32 columns each), A = tmm4 (32 bfloat16 columns),
// B = tmm5 and tmm6 in turn (16 rows of 16 pairs). Strides are in bytes. One object serves a thread's
// shard of a step: the configuration is loaded again only when the number of rows changes, and the
// tiles are freed when the object goes.
class HardwareTiles {
 public:
  struct alignas(64) Config {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  };

  ~HardwareTiles() {
    if (rows_ > 0) _tile_release();
  }
  // Zeroes C0..C3 for a product of `rows` rows.
  void Start(int rows) {
    if (rows != rows_) {
      Config config;
      for (int t = 0; t < 5; ++t) {
        config.colsb[t] = 64;
        config.rows[t] = rows;
      }
      config.colsb[5] = config.colsb[6] = 64;
      config.rows[5] = config.rows[6] = 16;
      _tile_loadconfig(&config);
      rows_ = rows;
    }
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  void LoadA(const uint16_t* a, int64_t stride) { _tile_loadd(4, a, stride); }
  // C_v += A B, B read from `b`.
  void Multiply(int v, const uint32_t* b, int64_t stride) {
    switch (v) {
      case 0: _tile_loadd(5, b, stride); _tile_dpbf16ps(0, 4, 5); break;
      case 1: _tile_loadd(6, b, stride); _tile_dpbf16ps(1, 4, 6); break;
      case 2: _tile_loadd(5, b, stride); _tile_dpbf16ps(2, 4, 5); break;
      default: _tile_loadd(6, b, stride); _tile_dpbf16ps(3, 4, 6); break;
    }
  }
  // Stores C_v at out + 16 v floats (rows `stride` bytes apart).
  void Finish(float* out, int64_t stride) {
    _tile_stored(0, out, stride);
    _tile_stored(1, out + kLanes, stride);
    _tile_stored(2, out + 2 * kLanes, stride);
    _tile_stored(3, out + 3 * kLanes, stride);
  }

 private:
  int rows_ = 0;  // rows of the loaded configuration; 0: none loaded
};

#pragma GCC pop_options
#endif  // TF_CHARRNN_AMX_TILES

// The same four operations in software: each pair product summed in float32, then added to C (the
// hardware rounds likewise; it also flushes denormals, which these tests never meet).
class EmulatedTiles {
 public:
  void Start(int rows) {
    rows_ = rows;
    std::memset(c_, 0, sizeof(c_));
  }
  void LoadA(const uint16_t* a, int64_t stride) {
    for (int r = 0; r < rows_; ++r) std::memcpy(a_[r], reinterpret_cast<const char*>(a) + r * stride, sizeof(a_[r]));
  }
  void Multiply(int v, const uint32_t* b, int64_t stride) {
    for (int k = 0; k < 16; ++k) {
      const uint32_t* pairs = reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(b) + k * stride);
      for (int r = 0; r < rows_; ++r)
        for (int n = 0; n < kLanes; ++n)
          c_[v][r][n] += Float(a_[r][2 * k]) * Float(pairs[n] & 0xFFFF) + Float(a_[r][2 * k + 1]) * Float(pairs[n] >> 16);
    }
  }
  void Finish(float* out, int64_t stride) {
    for (int v = 0; v < kVectors; ++v)
      for (int r = 0; r < rows_; ++r)
        std::memcpy(reinterpret_cast<char*>(out) + r * stride + v * kLanes * sizeof(float), c_[v][r], sizeof(c_[v][r]));
  }

 private:
  static float Float(uint32_t bits16) {
    const uint32_t bits = bits16 << 16;
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }
  int rows_ = 0;
  float c_[kVectors][kTileRows][kLanes];
  uint16_t a_[kTileRows][32];
};

// out[r][j] = sum_k a[r][k] w[k][j] for r < rows (<= 16) and j < 64 (kWidth): a is bfloat16 with rows
// `lda` elements apart, `depth` a multiple of 32; w holds per pair of rows k, k + 1 the 64 columns' pairs
// (`kWidth` pairs per pair of rows); out is [16][64] float32.
template <typename Tiles>
void MultiplyRowsAmx(Tiles& tiles, const uint16_t* a, int64_t lda, int depth, const uint32_t* w, int rows,
                     float (&out)[kTileRows][kWidth]) {
  tiles.Start(rows);
  constexpr int64_t kPairRowBytes = kWidth * sizeof(uint32_t);
  for (int k = 0; k < depth; k += 32) {
    tiles.LoadA(a + k, lda * sizeof(uint16_t));
    const uint32_t* wk = w + static_cast<int64_t>(k / 2) * kWidth;
    for (int v = 0; v < kVectors; ++v) tiles.Multiply(v, wk + v * kLanes, kPairRowBytes);
  }
  tiles.Finish(&out[0][0], kWidth * sizeof(float));
}

// Runs `step.TileAmx(tiles, row, rows, block)` over batch rows [first_row, last_row) (in tiles of up to 16)
// and all unit blocks, the blocks split across threads as RunBlocks splits them, one Tiles per shard.
template <typename Tiles, typename Step>
void RunBlocksAmx(OpKernelContext* context, const Step& step, int first_row, int last_row, int blocks,
                  int64_t flops_per_block, int64_t min_flops_per_shard) {
  ShardBlocks(context, blocks, flops_per_block, min_flops_per_shard,
              [&step, first_row, last_row](int64_t first, int64_t last) {
                Tiles tiles;
                for (int block = first; block < last; ++block)
                  for (int row = first_row; row < last_row; row += kTileRows)
                    step.TileAmx(tiles, row, std::min(kTileRows, last_row - row), block);
              });
}

// RunBlocks or RunBlocksAmx, as `products` says.
template <typename Step>
void RunBf16Blocks(Bf16Products products, OpKernelContext* context, const Step& step, int first_row, int last_row,
                   int blocks, int64_t flops_per_block, int64_t min_flops_per_shard) {
  switch (products) {
#ifdef TF_CHARRNN_AMX_TILES
    case Bf16Products::kAmx:
      return RunBlocksAmx<HardwareTiles>(context, step, first_row, last_row, blocks, flops_per_block,
                                         min_flops_per_shard);
#endif
    case Bf16Products::kAmxEmulated:
      return RunBlocksAmx<EmulatedTiles>(context, step, first_row, last_row, blocks, flops_per_block,
                                         min_flops_per_shard);
    default:
      return RunBlocks(context, step, first_row, last_row, blocks, flops_per_block, min_flops_per_shard);
  }
}

}  // namespace tf_charrnn

#endif  // TF_CHARRNN_KERNELS_AMX_H_
