// CharRnnLstmSequenceBf16 / CharRnnLstmSequenceBf16Grad: CharRnnLstmSequence's time loop (see
// lstm_sequence.cc) for the mixed_bfloat16 policy, with each step's recurrent product in bfloat16 and
// float32 accumulation (AVX512-BF16 vdpbf16ps: 32 products per instruction, twice an FMA's, over
// weights half the bytes; or AMX tiles where the CPU and OS grant them, amx.h). The gates, the cell
// state and all gradients are computed in float32; only what feeds a product is rounded to bfloat16:
// the recurrent weights (converted once per call, while packing), h and dz. The op's tensors are those
// of the surrounding bfloat16 matmuls: xw, h, dh and dz are bfloat16; c, the gates and everything else
// float32.
//
// Built only where the compiler targets AVX512-BF16 (-march=native on such a CPU defines
// __AVX512BF16__); elsewhere this file is empty and the library has no bfloat16 ops (native.py then
// keeps the float32 kernels for the bfloat16 policy).
#ifdef __AVX512BF16__

#include <immintrin.h>

#include <cstring>

#include "amx.h"
#include "bf16.h"
#include "lstm.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_charrnn {
namespace {

// One forward step for units [u0, u0 + 16): z = xw + h_prev U + b, then ApplyGates.
struct ForwardStepBf16 {
  Rows16 xw;               // [B, 4H]
  Rows16 h_prev;           // [B, H]
  Rows c_prev;             // [B, H]
  const float* bias;       // [4H]
  const uint32_t* packed;  // [H / 16][H / 2][4][16] pairs: U in blocks of 16 units
  MutableRows gates, c;    // [B, 4H], [B, H]
  MutableRows16 h;         // [B, H]
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    const int u0 = block * kLanes;
    __m512 acc[kMaxRows][kVectors];
    for (int r = 0; r < Count; ++r)
      for (int g = 0; g < 4; ++g) acc[r][g] = Input(row + r, g, u0);
    MultiplyTileBf16<Count>(h_prev.at(row), h_prev.stride, units,
                            packed + static_cast<int64_t>(block) * (units / 2) * kWidth, acc);
    for (int r = 0; r < Count; ++r) Finish(row + r, u0, acc[r]);
  }

  // Tile for `rows` (<= 16) rows with the product on AMX tiles (or their software model).
  template <typename Tiles>
  void TileAmx(Tiles& tiles, int row, int rows, int block) const {
    const int u0 = block * kLanes;
    alignas(64) float product[kTileRows][kWidth];  // [row][gate * 16 + lane]
    MultiplyRowsAmx(tiles, h_prev.at(row), h_prev.stride, units,
                    packed + static_cast<int64_t>(block) * (units / 2) * kWidth, rows, product);
    for (int r = 0; r < rows; ++r) {
      __m512 z[4];
      for (int g = 0; g < 4; ++g) z[g] = _mm512_add_ps(Input(row + r, g, u0), _mm512_load_ps(product[r] + g * kLanes));
      Finish(row + r, u0, z);
    }
  }

  // b + xw of gate g, units [u0, u0 + 16) of row `row`.
  __m512 Input(int row, int g, int u0) const {
    return _mm512_add_ps(_mm512_loadu_ps(bias + g * units + u0), LoadBf16(xw.at(row) + g * units + u0));
  }

  // Row `row`, units [u0, u0 + 16): from the pre-activations z of the four gates, the gates, c and h.
  void Finish(int row, int u0, const __m512 (&z)[kVectors]) const {
    alignas(64) float gates_z[4][kLanes];
    alignas(64) float h_new[kLanes];
    for (int g = 0; g < 4; ++g) _mm512_store_ps(gates_z[g], z[g]);
    ApplyGates(gates_z, c_prev.at(row) + u0, gates.at(row) + u0, units, c.at(row) + u0, h_new);
    StoreBf16(h.at(row) + u0, _mm512_load_ps(h_new));
  }
};

// One backward step for units [u0, u0 + 64): dh = dz_next U^T + upstream dh, then GateGradients.
struct BackwardStepBf16 {
  Rows16 dz_next;          // dz of step t + 1 (unused when first)
  bool first;              // t = T - 1: no dz_next
  Rows16 dh_up;            // upstream gradient of h_t
  Rows dc_up;              // upstream gradient of c_t
  Rows gates, c, c_prev;
  MutableRows16 dz;        // dz of step t (written)
  MutableRows dc_carry;    // [B, H] dc flowing to step t - 1, read then overwritten
  float* dbias;            // [4H], accumulated
  const uint32_t* packed;  // [H / 64][4H / 2][64] pairs: U^T in blocks of 64 units
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    const int u0 = block * kWidth;
    __m512 acc[kMaxRows][kVectors];
    for (int r = 0; r < Count; ++r)
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
    if (!first)
      MultiplyTileBf16<Count>(dz_next.at(row), dz_next.stride, 4 * units,
                              packed + static_cast<int64_t>(block) * 2 * units * kWidth, acc);
    for (int r = 0; r < Count; ++r)
      for (int v = 0; v < kVectors; ++v) Finish(row + r, u0 + v * kLanes, acc[r][v]);
  }

  // Tile for `rows` (<= 16) rows with the product on AMX tiles (or their software model).
  template <typename Tiles>
  void TileAmx(Tiles& tiles, int row, int rows, int block) const {
    alignas(64) float product[kTileRows][kWidth] = {};  // [row][unit - u0]
    if (!first)
      MultiplyRowsAmx(tiles, dz_next.at(row), dz_next.stride, 4 * units,
                      packed + static_cast<int64_t>(block) * 2 * units * kWidth, rows, product);
    for (int r = 0; r < rows; ++r)
      for (int v = 0; v < kVectors; ++v)
        Finish(row + r, block * kWidth + v * kLanes, _mm512_load_ps(product[r] + v * kLanes));
  }

  // Row `row`, units [u, u + 16): from the recurrent part of dh, the gate gradients (dz, dc, dbias).
  void Finish(int row, int u, __m512 dh_recurrent) const {
    alignas(64) float dh[kLanes];
    _mm512_store_ps(dh, _mm512_add_ps(dh_recurrent, LoadBf16(dh_up.at(row) + u)));
    Lanes dz_gates[4];
    GateGradients(ConstMap(dh), gates.at(row) + u, c.at(row) + u, c_prev.at(row) + u, dc_up.at(row) + u,
                  dc_carry.at(row) + u, dbias + u, units, dz_gates);
    for (int gate = 0; gate < 4; ++gate) StoreBf16(dz.at(row) + gate * units + u, _mm512_loadu_ps(dz_gates[gate].data()));
  }
};

// dh0 = dz_0 U^T for units [u0, u0 + 64).
struct InitialStateGradBf16 {
  Rows16 dz0;
  MutableRows dh0;
  const uint32_t* packed;
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    __m512 acc[kMaxRows][kVectors];
    for (int r = 0; r < Count; ++r)
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
    MultiplyTileBf16<Count>(dz0.at(row), dz0.stride, 4 * units,
                            packed + static_cast<int64_t>(block) * 2 * units * kWidth, acc);
    for (int r = 0; r < Count; ++r)
      for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(dh0.at(row + r) + block * kWidth + v * kLanes, acc[r][v]);
  }

  template <typename Tiles>
  void TileAmx(Tiles& tiles, int row, int rows, int block) const {
    alignas(64) float product[kTileRows][kWidth];
    MultiplyRowsAmx(tiles, dz0.at(row), dz0.stride, 4 * units,
                    packed + static_cast<int64_t>(block) * 2 * units * kWidth, rows, product);
    for (int r = 0; r < rows; ++r) std::memcpy(dh0.at(row + r) + block * kWidth, product[r], sizeof(product[r]));
  }
};

// A temporary of `count` 32-bit words (bfloat16 pairs).
::tensorflow::Status AllocatePairs(OpKernelContext* context, int64_t count, Tensor* tensor, uint32_t** data) {
  TF_RETURN_IF_ERROR(context->allocate_temp(::tensorflow::DT_INT32, TensorShape({count}), tensor));
  *data = reinterpret_cast<uint32_t*>(tensor->flat<int32_t>().data());
  return ::tensorflow::OkStatus();
}

class LstmSequenceBf16Op : public OpKernel {
 public:
  explicit LstmSequenceBf16Op(::tensorflow::OpKernelConstruction* context)
      : OpKernel(context), products_(ProcessBf16Products()) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &xw = context->input(0), &h0 = context->input(1), &c0 = context->input(2),
                 &kernel = context->input(3), &bias = context->input(4);
    SequenceOutputs out;
    OP_REQUIRES_OK(context, StartSequence(context, &out));
    const int units = out.units, batch = out.batch, time = out.time;
    Tensor *gates = out.gates, *h = out.h, *c = out.c, packed, h0_bf16;
    OP_REQUIRES_OK(context, context->allocate_temp(::tensorflow::DT_BFLOAT16, h0.shape(), &h0_bf16));
    uint32_t* p;
    OP_REQUIRES_OK(context, AllocatePairs(context, static_cast<int64_t>(units) * 2 * units, &packed, &p));
    const uint32_t* packed_data = p;
    const float* u = kernel.flat<float>().data();
    const int64_t row = 4 * units;
    for (int block = 0; block < units / kLanes; ++block)  // [H / 16][H / 2][4][16]
      for (int k = 0; k < units; k += 2)
        for (int g = 0; g < 4; ++g)
          for (int lane = 0; lane < kLanes; ++lane) {
            const int64_t column = g * units + block * kLanes + lane;
            *p++ = Pair(u[k * row + column], u[(k + 1) * row + column]);
          }
    const float* h0_data = h0.flat<float>().data();
    uint16_t* h0_bits = Bits(&h0_bf16);
    for (int64_t i = 0; i < static_cast<int64_t>(batch) * units; ++i) h0_bits[i] = ToBf16(h0_data[i]);

    const int64_t seq_h = static_cast<int64_t>(time) * units, seq_z = 4 * seq_h;
    const int64_t flops_per_block = 2LL * batch * units * kWidth;
    const int shards = SequenceRowShards(context, batch, flops_per_block * (units / kLanes),
                                         kernel.NumElements() * static_cast<int64_t>(2));
    ForEachRowShard(context, batch, shards, [&](int first_row, int last_row, int) {
      ForwardStepBf16 step;
      step.bias = bias.flat<float>().data();
      step.packed = packed_data;
      step.units = units;
      for (int t = 0; t < time; ++t) {
        step.xw = {Bits(xw) + t * 4 * units, seq_z};
        step.h_prev = t == 0 ? Rows16{h0_bits, units} : Rows16{Bits(h) + (t - 1) * units, seq_h};
        step.c_prev = t == 0 ? Rows{c0.flat<float>().data(), units} : Rows{c->flat<float>().data() + (t - 1) * units, seq_h};
        step.gates = {gates->flat<float>().data() + t * 4 * units, seq_z};
        step.h = {Bits(h) + t * units, seq_h};
        step.c = {c->flat<float>().data() + t * units, seq_h};
        RunBf16Blocks(products_, context, step, first_row, last_row, units / kLanes, flops_per_block,
                      StepMinFlopsPerShard(shards));
      }
    });
  }

 private:
  const Bf16Products products_;
};

class LstmSequenceBf16GradOp : public OpKernel {
 public:
  explicit LstmSequenceBf16GradOp(::tensorflow::OpKernelConstruction* context)
      : OpKernel(context), products_(ProcessBf16Products()) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &dh = context->input(0), &dc = context->input(1), &gates = context->input(2),
                 &c = context->input(3), &c0 = context->input(4), &kernel = context->input(5);
    GradOutputs out;
    OP_REQUIRES_OK(context, StartGradient(context, &out));
    const int units = out.units, batch = out.batch, time = out.time;
    Tensor *dz = out.dz, *dh0 = out.dh0, *dc0 = out.dc0, *dbias = out.dbias, packed;
    uint32_t* p;
    OP_REQUIRES_OK(context, AllocatePairs(context, static_cast<int64_t>(units) * 2 * units, &packed, &p));
    const uint32_t* packed_data = p;
    const float* u = kernel.flat<float>().data();
    for (int block = 0; block < units / kWidth; ++block)  // [H / 64][4H / 2][64] = blocks of U^T
      for (int k = 0; k < 4 * units; k += 2)
        for (int lane = 0; lane < kWidth; ++lane) {
          const float* column = u + static_cast<int64_t>(block * kWidth + lane) * 4 * units + k;
          *p++ = Pair(column[0], column[1]);
        }

    float* carry = dc0->flat<float>().data();  // dc flowing back; ends as dc0
    std::fill(carry, carry + static_cast<int64_t>(batch) * units, 0.0f);
    const int64_t seq_h = static_cast<int64_t>(time) * units, seq_z = 4 * seq_h;
    const int64_t flops_per_block = 8LL * batch * units * kWidth;
    const int shards = SequenceRowShards(context, batch, flops_per_block * (units / kWidth),
                                         kernel.NumElements() * static_cast<int64_t>(2));
    Tensor partial_dbias;
    OP_REQUIRES_OK(context, AllocatePartialBias(context, shards, units, &partial_dbias));
    uint16_t* dz_bits = Bits(dz);
    ForEachRowShard(context, batch, shards, [&](int first_row, int last_row, int shard) {
      BackwardStepBf16 step;
      step.dc_carry = {carry, units};
      step.dbias = shards > 1 ? partial_dbias.flat<float>().data() + shard * 4 * units : dbias->flat<float>().data();
      step.packed = packed_data;
      step.units = units;
      for (int t = time - 1; t >= 0; --t) {
        step.first = t == time - 1;
        step.dz_next = {dz_bits + (t + 1) * 4 * units, seq_z};
        step.dh_up = {Bits(dh) + t * units, seq_h};
        step.dc_up = {dc.flat<float>().data() + t * units, seq_h};
        step.gates = {gates.flat<float>().data() + t * 4 * units, seq_z};
        step.c = {c.flat<float>().data() + t * units, seq_h};
        step.c_prev = t == 0 ? Rows{c0.flat<float>().data(), units} : Rows{c.flat<float>().data() + (t - 1) * units, seq_h};
        step.dz = {dz_bits + t * 4 * units, seq_z};
        RunBf16Blocks(products_, context, step, first_row, last_row, units / kWidth, flops_per_block,
                      StepMinFlopsPerShard(shards));
      }
      InitialStateGradBf16 initial{{dz_bits, seq_z}, {dh0->flat<float>().data(), units}, packed_data, units};
      RunBf16Blocks(products_, context, initial, first_row, last_row, units / kWidth, flops_per_block,
                    StepMinFlopsPerShard(shards));
    });
    if (shards > 1) SumShards(partial_dbias.flat<float>().data(), shards, 4 * units, dbias->flat<float>().data());
  }

 private:
  const Bf16Products products_;
};

class Bf16ProductsOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    Tensor* name;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &name));
    name->scalar<::tensorflow::tstring>()() = Bf16ProductsName(ProcessBf16Products());
  }
};

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnBf16Products")
    .Output("products: string")
    .SetShapeFn(::tensorflow::shape_inference::ScalarShape)
    .Doc("What the bfloat16 ops run their recurrent products on in this process: \"amx\", \"amx (emulated)\" "
         "or \"avx512_bf16\" (see kernels/amx.h).");

REGISTER_OP("CharRnnLstmSequenceBf16")
    .Input("xw: bfloat16")
    .Input("h0: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Input("bias: float")
    .Output("h: bfloat16")
    .Output("c: float")
    .Output("gates: float")
    .SetShapeFn(tf_charrnn::SequenceShapes)
    .Doc("CharRnnLstmSequence with bfloat16 recurrent products: xw bfloat16 [B, T, 4H], h0, c0 [B, H], "
         "U [H, 4H], b [4H] -> h bfloat16 [B, T, H], c [B, T, H] and the activated gates [B, T, 4H].");

REGISTER_OP("CharRnnLstmSequenceBf16Grad")
    .Input("dh: bfloat16")
    .Input("dc: float")
    .Input("gates: float")
    .Input("c: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Output("dz: bfloat16")
    .Output("dh0: float")
    .Output("dc0: float")
    .Output("dbias: float")
    .SetShapeFn(tf_charrnn::SequenceGradShapes)
    .Doc("Backward of CharRnnLstmSequenceBf16: dh bfloat16 and dc [B, T, H] -> dz bfloat16 [B, T, 4H], "
         "dh0, dc0 [B, H] and the bias gradient [4H].");

REGISTER_KERNEL_BUILDER(Name("CharRnnBf16Products").Device(::tensorflow::DEVICE_CPU), tf_charrnn::Bf16ProductsOp);
REGISTER_KERNEL_BUILDER(Name("CharRnnLstmSequenceBf16").Device(::tensorflow::DEVICE_CPU),
                        tf_charrnn::LstmSequenceBf16Op);
REGISTER_KERNEL_BUILDER(Name("CharRnnLstmSequenceBf16Grad").Device(::tensorflow::DEVICE_CPU),
                        tf_charrnn::LstmSequenceBf16GradOp);

#endif  // __AVX512BF16__
