// Shared by the LSTM kernels: register tiles of a [rows, k] x [k, 64] product over weights packed
// in blocks of 64 columns, the forward step of a block of 16 units, the split of a step's
// blocks across TensorFlow's intra-op threads, the sequence ops' input checks and shape functions.
#ifndef TF_CHARRNN_KERNELS_LSTM_H_
#define TF_CHARRNN_KERNELS_LSTM_H_

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <limits>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

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
// With AVX-512 the whole tile (up to 24 accumulators and 4 weight vectors) stays in the 32 registers.
// Without it GCC keeps a 16-float Vec in memory and moves it piece by piece on every use (the loop ran at
// about 5 GFLOP/s on Zen 3), so the tile is made in 8-float halves, the width of a 256-bit register, and
// `Vectors` vectors at a time: as many as keep the accumulators (and the weights a pass reuses across
// rows) in the 16 registers: all four for one row, two for two rows, one from three rows on (the 6 x 16
// tile of AVX2 matrix products).
template <int Rows>
inline void MultiplyTile(const float* a, int64_t lda, int depth, const float* w, Vec (&acc)[kMaxRows][kVectors]) {
#ifndef __AVX512F__
  typedef float Half __attribute__((vector_size(kLanes / 2 * sizeof(float)), aligned(4)));
  constexpr int Vectors = Rows == 1 ? 4 : Rows == 2 ? 2 : 1;
  constexpr int Halves = 2 * Vectors;
  for (int v0 = 0; v0 < kVectors; v0 += Vectors) {
    Half sum[Rows][Halves];
    for (int r = 0; r < Rows; ++r)
      for (int h = 0; h < Halves; ++h) sum[r][h] = reinterpret_cast<const Half*>(&acc[r][v0])[h];
    for (int k = 0; k < depth; ++k) {
      const Half* wk = reinterpret_cast<const Half*>(w + static_cast<int64_t>(k) * kWidth + v0 * kLanes);
      Half wh[Halves];
      for (int h = 0; h < Halves; ++h) wh[h] = wk[h];
#pragma GCC unroll 6
      for (int r = 0; r < Rows; ++r) {
        const float x = a[r * lda + k];
        for (int h = 0; h < Halves; ++h) sum[r][h] += x * wh[h];
      }
    }
    for (int r = 0; r < Rows; ++r)
      for (int h = 0; h < Halves; ++h) reinterpret_cast<Half*>(&acc[r][v0])[h] = sum[r][h];
  }
#else
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
#endif
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

// The gates and new state of 16 units of one batch row from their pre-activations z (gates i, f, c~, o):
// writes the activated gates (when `gates` is not null; gate g at gates + g * units), c and h.
inline void ApplyGates(const float (&z)[4][kLanes], const float* c_prev, float* gates, int units, float* c, float* h) {
  const Lanes i = ConstMap(z[0]).logistic(), f = ConstMap(z[1]).logistic();
  const Lanes candidate = ConstMap(z[2]).tanh(), o = ConstMap(z[3]).logistic();
  const Lanes c_new = f * ConstMap(c_prev) + i * candidate;
  if (gates != nullptr) {
    Map{gates} = i;
    Map{gates + units} = f;
    Map{gates + 2 * units} = candidate;
    Map{gates + 3 * units} = o;
  }
  Map{c} = c_new;
  Map{h} = o * c_new.tanh();
}

// The backward of ApplyGates for 16 units of one batch row: from dh (recurrent and upstream), the
// upstream dc and the carried dc (read, then overwritten with the dc flowing to the step before), the
// pre-activation gate gradients dz; adds them to dbias (gate g at dbias + g * units).
inline void GateGradients(const Lanes& dh, const float* gates, const float* c, const float* c_prev,
                          const float* dc_up, float* carry, float* dbias, int units, Lanes (&dz)[4]) {
  const Lanes i = ConstMap(gates), f = ConstMap(gates + units), candidate = ConstMap(gates + 2 * units),
              o = ConstMap(gates + 3 * units);
  const Lanes tanh_c = ConstMap(c).tanh();
  const Lanes dc = ConstMap(carry) + ConstMap(dc_up) + dh * o * (1.0f - tanh_c.square());
  dz[0] = dc * candidate * i * (1.0f - i);
  dz[1] = dc * ConstMap(c_prev) * f * (1.0f - f);
  dz[2] = dc * i * (1.0f - candidate.square());
  dz[3] = dh * tanh_c * o * (1.0f - o);
  for (int gate = 0; gate < 4; ++gate) Map{dbias + gate * units} += dz[gate];
  Map{carry} = dc * f;
}

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
      ApplyGates(z, c_prev.at(row + r) + u0, gates.data == nullptr ? nullptr : gates.at(row + r) + u0, units,
                 c.at(row + r) + u0, h.at(row + r) + u0);
    }
  }
};

// U must be [H, 4H] with H a positive multiple of 64; sets *units.
inline ::tensorflow::Status CheckRecurrentKernel(const Tensor& kernel, int* units) {
  *units = kernel.dims() == 2 ? kernel.dim_size(0) : 0;
  if (kernel.dims() != 2 || kernel.dim_size(1) != 4 * *units)
    return errors::InvalidArgument("recurrent_kernel must be [units, 4 * units], got ", kernel.shape().DebugString());
  if (*units % kWidth != 0 || *units == 0)
    return errors::InvalidArgument("units must be a positive multiple of ", kWidth, ", got ", *units);
  return ::tensorflow::OkStatus();
}

inline ::tensorflow::Status CheckShape(const char* name, const Tensor& tensor, const TensorShape& shape) {
  if (tensor.shape() != shape)
    return errors::InvalidArgument(name, " must be ", shape.DebugString(), ", got ", tensor.shape().DebugString());
  return ::tensorflow::OkStatus();
}

// The sequence ops' common start (float32 and bfloat16): checks their inputs (xw, h0, c0, recurrent kernel,
// bias), sets the units, batch and time, and allocates h and c [B, T, H] and gates [B, T, 4H].
struct SequenceOutputs {
  int units, batch, time;
  Tensor *h, *c, *gates;
};
inline ::tensorflow::Status StartSequence(OpKernelContext* context, SequenceOutputs* out) {
  const Tensor &xw = context->input(0), &h0 = context->input(1), &c0 = context->input(2),
               &kernel = context->input(3), &bias = context->input(4);
  TF_RETURN_IF_ERROR(CheckRecurrentKernel(kernel, &out->units));
  const int units = out->units;
  if (xw.dims() != 3 || xw.dim_size(2) != 4 * units || xw.dim_size(1) == 0)
    return errors::InvalidArgument("xw must be [batch, time > 0, 4 * units], got ", xw.shape().DebugString());
  out->batch = xw.dim_size(0);
  out->time = xw.dim_size(1);
  TF_RETURN_IF_ERROR(CheckShape("h0", h0, TensorShape({out->batch, units})));
  TF_RETURN_IF_ERROR(CheckShape("c0", c0, TensorShape({out->batch, units})));
  TF_RETURN_IF_ERROR(CheckShape("bias", bias, TensorShape({4 * units})));
  TF_RETURN_IF_ERROR(context->allocate_output(0, TensorShape({out->batch, out->time, units}), &out->h));
  TF_RETURN_IF_ERROR(context->allocate_output(1, TensorShape({out->batch, out->time, units}), &out->c));
  TF_RETURN_IF_ERROR(context->allocate_output(2, xw.shape(), &out->gates));
  return ::tensorflow::OkStatus();
}

// The gradient ops' common start: checks their inputs (dh, dc, gates, c, c0, recurrent kernel), sets the
// units, batch and time, and allocates dz [B, T, 4H], dh0 and dc0 [B, H] and a zeroed dbias [4H].
struct GradOutputs {
  int units, batch, time;
  Tensor *dz, *dh0, *dc0, *dbias;
};
inline ::tensorflow::Status StartGradient(OpKernelContext* context, GradOutputs* out) {
  const Tensor &dh = context->input(0), &dc = context->input(1), &gates = context->input(2),
               &c = context->input(3), &c0 = context->input(4), &kernel = context->input(5);
  TF_RETURN_IF_ERROR(CheckRecurrentKernel(kernel, &out->units));
  if (c.dims() != 3 || c.dim_size(2) != out->units || c.dim_size(1) == 0)
    return errors::InvalidArgument("c must be [batch, time > 0, units], got ", c.shape().DebugString());
  out->batch = c.dim_size(0);
  out->time = c.dim_size(1);
  TF_RETURN_IF_ERROR(CheckShape("dh", dh, c.shape()));
  TF_RETURN_IF_ERROR(CheckShape("dc", dc, c.shape()));
  TF_RETURN_IF_ERROR(CheckShape("gates", gates, TensorShape({out->batch, out->time, 4 * out->units})));
  TF_RETURN_IF_ERROR(CheckShape("c0", c0, TensorShape({out->batch, out->units})));
  TF_RETURN_IF_ERROR(context->allocate_output(0, gates.shape(), &out->dz));
  TF_RETURN_IF_ERROR(context->allocate_output(1, c0.shape(), &out->dh0));
  TF_RETURN_IF_ERROR(context->allocate_output(2, c0.shape(), &out->dc0));
  TF_RETURN_IF_ERROR(context->allocate_output(3, TensorShape({4 * out->units}), &out->dbias));
  out->dbias->flat<float>().setZero();
  return ::tensorflow::OkStatus();
}

// The sequence kernels split a time step's unit blocks across the pool's threads only from 8 MFLOP per shard
// on: below that (e.g. 2 x 128 units, batch 50) the hand-off each step costs about what the second thread
// saves, so such sequences split their batch rows instead (SequenceRowShards).
constexpr int64_t kMinSequenceFlopsPerShard = 1 << 23;

// Runs work(first, last) over blocks [0, blocks) in one contiguous shard per intra-op thread (the calling
// thread runs one), with no shard under `min_flops_per_shard`: handing work to a thread costs more the
// longer it has been idle.
template <typename Work>
void ShardBlocks(OpKernelContext* context, int64_t blocks, int64_t flops_per_block, int64_t min_flops_per_shard,
                 const Work& work) {
  auto* threads = context->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t shards = std::min<int64_t>(
      {threads->NumThreads(), blocks, std::max<int64_t>(1, flops_per_block * blocks / min_flops_per_shard)});
  if (shards <= 1) return work(0, blocks);
  threads->ParallelFor(blocks, ::tsl::thread::ThreadPool::SchedulingParams::Fixed((blocks + shards - 1) / shards),
                       work);
}

// Runs `step.Tile` over batch rows [first_row, last_row) and all unit blocks, the blocks split across threads
// by ShardBlocks.
template <typename Step>
void RunBlocks(OpKernelContext* context, const Step& step, int first_row, int last_row, int blocks,
               int64_t flops_per_block, int64_t min_flops_per_shard) {
  ShardBlocks(context, blocks, flops_per_block, min_flops_per_shard,
              [&step, first_row, last_row](int64_t first, int64_t last) {
                for (int block = first; block < last; ++block) {
                  int row = first_row;
                  for (; row + kMaxRows <= last_row; row += kMaxRows) step.template Tile<kMaxRows>(row, block);
                  switch (last_row - row) {
                    case 5: step.template Tile<5>(row, block); break;
                    case 4: step.template Tile<4>(row, block); break;
                    case 3: step.template Tile<3>(row, block); break;
                    case 2: step.template Tile<2>(row, block); break;
                    case 1: step.template Tile<1>(row, block); break;
                    default: break;
                  }
                }
              });
}

// How many row shards a sequence op runs its time loop in. The batch rows of a sequence never meet, so the
// rows can be split once for the whole loop, with no hand-off per step: two shards per intra-op thread, at
// most one per register tile of rows, taken by whichever thread is free. Two rather than one: in training a
// layer's gradient kernel runs beside the previous layer's weight-gradient matmuls, and with one shard per
// thread the shard whose thread the matmul holds waited for it while the other thread idled (small 2 x 128
// steps 1.15x faster; four per thread was slower in bfloat16). Each shard reads all the packed recurrent
// weights every step, so a step large enough for ShardBlocks to split (two shards' worth of flops) is split
// by rows only while those weights are at most kMaxRowShardWeightBytes and each shard gets at least two
// register tiles of rows (Zen 4, batch 64: 1.03x to 1.10x at 256 units in float32 and bfloat16, 1.03x at
// 512 in bfloat16; 0.96x at 512 units in float32, 4 MB; 0.92x at batch 32, one tile in some shards;
// docs/performance.md); else it keeps one shard and splits each step's blocks.
constexpr int kRowShardsPerThread = 2;
constexpr int64_t kMaxRowShardWeightBytes = int64_t{2} << 20;
inline int SequenceRowShards(OpKernelContext* context, int batch, int64_t flops_per_step, int64_t weight_bytes) {
  const int threads = context->device()->tensorflow_cpu_worker_threads()->workers->NumThreads();
  const int tiles = (batch + kMaxRows - 1) / kMaxRows;
  if (flops_per_step >= 2 * kMinSequenceFlopsPerShard &&
      (weight_bytes > kMaxRowShardWeightBytes || tiles < 2 * kRowShardsPerThread * threads))
    return 1;
  return std::max(1, std::min(kRowShardsPerThread * threads, tiles));
}

// The min_flops_per_shard a sequence op's RunBlocks gets: a time loop split by rows does not also split its
// steps (a shard runs on a pool thread already).
inline int64_t StepMinFlopsPerShard(int row_shards) {
  return row_shards > 1 ? std::numeric_limits<int64_t>::max() : kMinSequenceFlopsPerShard;
}

// Runs work(first_row, last_row, shard) for `shards` contiguous shards of the batch rows, each a near-equal
// share of the register tiles of rows, on the pool's threads as they come free; a single shard runs on the
// calling thread.
template <typename Work>
void ForEachRowShard(OpKernelContext* context, int batch, int shards, const Work& work) {
  if (shards <= 1) return work(0, batch, 0);
  const int64_t tiles = (batch + kMaxRows - 1) / kMaxRows;
  auto* threads = context->device()->tensorflow_cpu_worker_threads()->workers;
  threads->ParallelFor(shards, ::tsl::thread::ThreadPool::SchedulingParams::Fixed(1),
                       [&work, batch, shards, tiles](int64_t first, int64_t last) {
                         for (int64_t shard = first; shard < last; ++shard) {
                           const int first_row = std::min<int64_t>(batch, shard * tiles / shards * kMaxRows);
                           const int last_row = std::min<int64_t>(batch, (shard + 1) * tiles / shards * kMaxRows);
                           if (first_row < last_row) work(first_row, last_row, static_cast<int>(shard));
                         }
                       });
}

// With more than one row shard, a zeroed [shards, 4H] temporary: one bias gradient per shard, summed at the
// end by SumShards (a single shard accumulates into dbias itself).
inline ::tensorflow::Status AllocatePartialBias(OpKernelContext* context, int shards, int units, Tensor* partial) {
  if (shards <= 1) return ::tensorflow::OkStatus();
  TF_RETURN_IF_ERROR(context->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({shards, 4 * units}), partial));
  partial->flat<float>().setZero();
  return ::tensorflow::OkStatus();
}

// Sums `shards` partial bias gradients [shards, n] (one per row shard) into dbias [n].
inline void SumShards(const float* partial, int shards, int64_t n, float* dbias) {
  for (int shard = 0; shard < shards; ++shard)
    for (int64_t i = 0; i < n; ++i) dbias[i] += partial[shard * n + i];
}

// Shapes of a sequence op (float32 or bfloat16): xw [B, T, 4H], h0 [B, H] -> h, c [B, T, H], gates
// [B, T, 4H].
inline ::tensorflow::Status SequenceShapes(::tensorflow::shape_inference::InferenceContext* context) {
  auto xw = context->input(0);
  ::tensorflow::shape_inference::ShapeHandle h;
  TF_RETURN_IF_ERROR(context->ReplaceDim(xw, 2, context->Dim(context->input(1), 1), &h));
  context->set_output(0, h);
  context->set_output(1, h);
  context->set_output(2, xw);
  return ::tensorflow::OkStatus();
}

// Shapes of a sequence op's gradient: gates [B, T, 4H], c0 [B, H] -> dz [B, T, 4H], dh0, dc0 [B, H],
// dbias [4H].
inline ::tensorflow::Status SequenceGradShapes(::tensorflow::shape_inference::InferenceContext* context) {
  context->set_output(0, context->input(2));
  context->set_output(1, context->input(4));
  context->set_output(2, context->input(4));
  context->set_output(3, context->Vector(context->Dim(context->input(2), 2)));
  return ::tensorflow::OkStatus();
}

}  // namespace tf_charrnn

#endif  // TF_CHARRNN_KERNELS_LSTM_H_
