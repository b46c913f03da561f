// Shared by the LSTM kernels: register tiles of a [rows, k] x [k, 64] product over weights packed
// in blocks of 64 columns, the forward step of a block of 16 units, and the split of a step's
// blocks across TensorFlow's intra-op threads.
#ifndef TF_CHARRNN_KERNELS_LSTM_H_
#define TF_CHARRNN_KERNELS_LSTM_H_

#include <Eigen/Core>
#include <algorithm>

#include "tensorflow/core/framework/op_kernel.h"

namespace tf_charrnn {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr int kLanes = 16;        // floats per vector
constexpr int kMaxRows = 6;       // batch rows per register tile
constexpr int kVectors = 4;       // vectors per register tile: 4 gates of 16 units, or 64 units
constexpr int kWidth = kLanes * kVectors;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));
using Lanes = Eigen::Array<float, kLanes, 1>;
using Map = Eigen::Map<Lanes>;
using ConstMap = Eigen::Map<const Lanes>;

inline Vec Load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
inline void Store(float* p, const Vec& v) { *reinterpret_cast<Vec*>(p) = v; }

// acc[r][v] += sum_k a[r * lda + k] * w[k * kWidth + v * kLanes ...]: a Rows x kWidth tile.
template <int Rows>
inline void MultiplyTile(const float* a, int64_t lda, int depth, const float* w, Vec (&acc)[kMaxRows][kVectors]) {
  for (int k = 0; k < depth; ++k) {
    const float* wk = w + static_cast<int64_t>(k) * kWidth;
    const Vec w0 = Load(wk), w1 = Load(wk + kLanes), w2 = Load(wk + 2 * kLanes), w3 = Load(wk + 3 * kLanes);
#pragma GCC unroll 6
    for (int r = 0; r < Rows; ++r) {
      const float x = a[r * lda + k];
      acc[r][0] += x * w0;
      acc[r][1] += x * w1;
      acc[r][2] += x * w2;
      acc[r][3] += x * w3;
    }
  }
}

// Rows of a [B, ?] matrix with a row stride, from row `row` on.
struct Rows {
  const float* data;
  int64_t stride;
  const float* at(int row) const { return data + row * stride; }
};
struct MutableRows {
  float* data;
  int64_t stride;
  float* at(int row) const { return data + row * stride; }
};

// One LSTM step for units [u0, u0 + 16) of `Count` batch rows from `row` on:
// z = xw + [x, h_prev] [W; U] + b, then the gates and the new c and h.
struct ForwardStep {
  Rows xw;              // precomputed x W [B, 4H], or no data
  Rows x;               // layer input [B, in], when in > 0
  int in = 0;
  Rows h_prev, c_prev;  // [B, H]
  const float* bias;    // [4H]
  const float* packed;  // [H / 16][in + H][4][16]: [W; U] in blocks of 16 units
  MutableRows gates;    // activated gates [B, 4H], or no data
  MutableRows h, c;     // [B, H]
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    const int u0 = block * kLanes;
    Vec acc[kMaxRows][kVectors];
    for (int r = 0; r < Count; ++r)
      for (int g = 0; g < 4; ++g) {
        acc[r][g] = Load(bias + g * units + u0);
        if (xw.data != nullptr) acc[r][g] += Load(xw.at(row + r) + g * units + u0);
      }
    const float* w = packed + static_cast<int64_t>(block) * (in + units) * kWidth;
    if (in > 0) MultiplyTile<Count>(x.at(row), x.stride, in, w, acc);
    MultiplyTile<Count>(h_prev.at(row), h_prev.stride, units, w + static_cast<int64_t>(in) * kWidth, acc);
    for (int r = 0; r < Count; ++r) {
      alignas(64) float z[4][kLanes];
      for (int g = 0; g < 4; ++g) Store(z[g], acc[r][g]);
      const Lanes i = ConstMap(z[0]).logistic(), f = ConstMap(z[1]).logistic();
      const Lanes candidate = ConstMap(z[2]).tanh(), o = ConstMap(z[3]).logistic();
      const Lanes c_new = f * ConstMap(c_prev.at(row + r) + u0) + i * candidate;
      if (gates.data != nullptr) {
        float* g_out = gates.at(row + r) + u0;
        Map{g_out} = i;
        Map{g_out + units} = f;
        Map{g_out + 2 * units} = candidate;
        Map{g_out + 3 * units} = o;
      }
      Map{c.at(row + r) + u0} = c_new;
      Map{h.at(row + r) + u0} = o * c_new.tanh();
    }
  }
};

// Runs `step.Tile` over all batch rows and unit blocks: the blocks in one contiguous shard per
// intra-op thread (the calling thread runs one), with no shard under `min_flops_per_shard`: handing
// work to a thread costs more the longer it has been idle.
template <typename Step>
void RunBlocks(OpKernelContext* context, const Step& step, int batch, int blocks, int64_t flops_per_block,
               int64_t min_flops_per_shard) {
  auto work = [&step, batch](int64_t first, int64_t last) {
    for (int block = first; block < last; ++block) {
      int row = 0;
      for (; row + kMaxRows <= batch; row += kMaxRows) step.template Tile<kMaxRows>(row, block);
      switch (batch - row) {
        case 5: step.template Tile<5>(row, block); break;
        case 4: step.template Tile<4>(row, block); break;
        case 3: step.template Tile<3>(row, block); break;
        case 2: step.template Tile<2>(row, block); break;
        case 1: step.template Tile<1>(row, block); break;
        default: break;
      }
    }
  };
  auto* threads = context->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t shards = std::min<int64_t>(
      {threads->NumThreads(), blocks, std::max<int64_t>(1, flops_per_block * blocks / min_flops_per_shard)});
  if (shards <= 1) return work(0, blocks);
  threads->ParallelFor(blocks, ::tsl::thread::ThreadPool::SchedulingParams::Fixed((blocks + shards - 1) / shards),
                       work);
}

}  // namespace tf_charrnn

#endif  // TF_CHARRNN_KERNELS_LSTM_H_
