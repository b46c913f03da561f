// CharRnnLstmSequence / CharRnnLstmSequenceGrad: the time loop of one LSTM layer over a whole
// sequence, forward and backward, for training on a CPU.
//
// TensorFlow runs each time step as a dozen small ops around a [B, H] x [H, 4H] matmul, so the loop
// costs more than its arithmetic. These kernels run the loop in C++: each step is one pass over the
// recurrent weights (packed per call into blocks that stay in L2), with the gate nonlinearities and
// the state update applied in registers, the units split across TensorFlow's intra-op threads. The
// input projection x W and the weight gradients are single large matmuls, left to TensorFlow
// (see tf_charrnn/fused_lstm.py). Arithmetic is Keras LSTMCell's: gates i, f, c~, o from
// z = x W + h U + b; c' = sigmoid(f) c + sigmoid(i) tanh(c~); h' = sigmoid(o) tanh(c').
//
// Layouts are batch-major as Keras has them: xw, gates, dz [B, T, 4H]; h, c [B, T, H].
#include "lstm.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_charrnn {
namespace {

// One backward step for units [u0, u0 + 64): dh = dz_next U^T (+ upstream), then the gate gradients.
struct BackwardStep {
  Rows dz_next;          // dz of step t + 1 (unused when first)
  bool first;            // t = T - 1: no dz_next
  Rows dh_up, dc_up;     // upstream gradients of h_t and c_t
  Rows gates, c, c_prev;
  MutableRows dz;        // dz of step t (written)
  MutableRows dc_carry;  // [B, H] dc flowing to step t - 1, read then overwritten
  float* dbias;          // [4H] sum of dz over rows and steps, accumulated
  const float* packed;   // [H / 64][4H][64]: U^T in blocks of 64 units
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    const int u0 = block * kWidth;
    Vec acc[kMaxRows][kVectors] = {};
    if (!first)
      MultiplyTile<Count>(dz_next.at(row), dz_next.stride, 4 * units,
                          packed + static_cast<int64_t>(block) * 4 * units * kWidth, acc);
    for (int r = 0; r < Count; ++r) {
      for (int v = 0; v < kVectors; ++v) {
        const int u = u0 + v * kLanes;
        alignas(64) float dh_rec[kLanes];
        Store(dh_rec, acc[r][v]);
        Lanes dz_gates[4];
        GateGradients(ConstMap(dh_rec) + ConstMap(dh_up.at(row + r) + u), gates.at(row + r) + u,
                      c.at(row + r) + u, c_prev.at(row + r) + u, dc_up.at(row + r) + u,
                      dc_carry.at(row + r) + u, dbias + u, units, dz_gates);
        for (int gate = 0; gate < 4; ++gate) Map{dz.at(row + r) + gate * units + u} = dz_gates[gate];
      }
    }
  }
};

// dh0 = dz_0 U^T for units [u0, u0 + 64).
struct InitialStateGrad {
  Rows dz0;
  MutableRows dh0;
  const float* packed;
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    Vec acc[kMaxRows][kVectors] = {};
    MultiplyTile<Count>(dz0.at(row), dz0.stride, 4 * units,
                        packed + static_cast<int64_t>(block) * 4 * units * kWidth, acc);
    for (int r = 0; r < Count; ++r)
      for (int v = 0; v < kVectors; ++v) Store(dh0.at(row + r) + block * kWidth + v * kLanes, acc[r][v]);
  }
};

class LstmSequenceOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor &xw = context->input(0), &h0 = context->input(1), &c0 = context->input(2),
                 &kernel = context->input(3), &bias = context->input(4);
    SequenceOutputs out;
    OP_REQUIRES_OK(context, StartSequence(context, &out));
    const int units = out.units, batch = out.batch, time = out.time;
    Tensor *gates = out.gates, *h = out.h, *c = out.c, packed;
    OP_REQUIRES_OK(context, context->allocate_temp(::tensorflow::DT_FLOAT, kernel.shape(), &packed));
    const float* u = kernel.flat<float>().data();
    float* p = packed.flat<float>().data();
    for (int block = 0; block < units / kLanes; ++block)       // [H / 16][H][4][16]
      for (int k = 0; k < units; ++k)
        for (int g = 0; g < 4; ++g)
          for (int lane = 0; lane < kLanes; ++lane)
            *p++ = u[static_cast<int64_t>(k) * 4 * units + g * units + block * kLanes + lane];

    const int64_t seq_h = static_cast<int64_t>(time) * units, seq_z = 4 * seq_h;
    const int64_t flops_per_block = 2LL * batch * units * kWidth;
    const int shards = SequenceRowShards(context, batch, flops_per_block * (units / kLanes),
                                         kernel.NumElements() * static_cast<int64_t>(sizeof(float)));
    ForEachRowShard(context, batch, shards, [&](int first_row, int last_row, int) {
      ForwardStep step;
      step.bias = bias.flat<float>().data();
      step.packed = packed.flat<float>().data();
      step.units = units;
      for (int t = 0; t < time; ++t) {
        step.xw = {xw.flat<float>().data() + t * 4 * units, seq_z};
        step.h_prev = t == 0 ? Rows{h0.flat<float>().data(), units} : Rows{h->flat<float>().data() + (t - 1) * units, seq_h};
        step.c_prev = t == 0 ? Rows{c0.flat<float>().data(), units} : Rows{c->flat<float>().data() + (t - 1) * units, seq_h};
        step.gates = {gates->flat<float>().data() + t * 4 * units, seq_z};
        step.h = {h->flat<float>().data() + t * units, seq_h};
        step.c = {c->flat<float>().data() + t * units, seq_h};
        RunBlocks(context, step, first_row, last_row, units / kLanes, flops_per_block, StepMinFlopsPerShard(shards));
      }
    });
  }
};

class LstmSequenceGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor &dh = context->input(0), &dc = context->input(1), &gates = context->input(2),
                 &c = context->input(3), &c0 = context->input(4), &kernel = context->input(5);
    GradOutputs out;
    OP_REQUIRES_OK(context, StartGradient(context, &out));
    const int units = out.units, batch = out.batch, time = out.time;
    Tensor *dz = out.dz, *dh0 = out.dh0, *dc0 = out.dc0, *dbias = out.dbias, packed;
    OP_REQUIRES_OK(context, context->allocate_temp(::tensorflow::DT_FLOAT, kernel.shape(), &packed));
    const float* u = kernel.flat<float>().data();
    float* p = packed.flat<float>().data();
    for (int block = 0; block < units / kWidth; ++block)       // [H / 64][4H][64] = blocks of U^T
      for (int k = 0; k < 4 * units; ++k)
        for (int lane = 0; lane < kWidth; ++lane)
          *p++ = u[static_cast<int64_t>(block * kWidth + lane) * 4 * units + k];

    float* carry = dc0->flat<float>().data();  // dc flowing back; ends as dc0
    std::fill(carry, carry + static_cast<int64_t>(batch) * units, 0.0f);
    const int64_t seq_h = static_cast<int64_t>(time) * units, seq_z = 4 * seq_h;
    const int64_t flops_per_block = 8LL * batch * units * kWidth;
    const int shards = SequenceRowShards(context, batch, flops_per_block * (units / kWidth),
                                         kernel.NumElements() * static_cast<int64_t>(sizeof(float)));
    Tensor partial_dbias;
    OP_REQUIRES_OK(context, AllocatePartialBias(context, shards, units, &partial_dbias));
    float* dz_data = dz->flat<float>().data();
    ForEachRowShard(context, batch, shards, [&](int first_row, int last_row, int shard) {
      BackwardStep step;
      step.dc_carry = {carry, units};
      step.dbias = shards > 1 ? partial_dbias.flat<float>().data() + shard * 4 * units : dbias->flat<float>().data();
      step.packed = packed.flat<float>().data();
      step.units = units;
      for (int t = time - 1; t >= 0; --t) {
        step.first = t == time - 1;
        step.dz_next = {dz_data + (t + 1) * 4 * units, seq_z};
        step.dh_up = {dh.flat<float>().data() + t * units, seq_h};
        step.dc_up = {dc.flat<float>().data() + t * units, seq_h};
        step.gates = {gates.flat<float>().data() + t * 4 * units, seq_z};
        step.c = {c.flat<float>().data() + t * units, seq_h};
        step.c_prev = t == 0 ? Rows{c0.flat<float>().data(), units} : Rows{c.flat<float>().data() + (t - 1) * units, seq_h};
        step.dz = {dz_data + t * 4 * units, seq_z};
        RunBlocks(context, step, first_row, last_row, units / kWidth, flops_per_block, StepMinFlopsPerShard(shards));
      }
      InitialStateGrad initial{{dz_data, seq_z}, {dh0->flat<float>().data(), units}, packed.flat<float>().data(), units};
      RunBlocks(context, initial, first_row, last_row, units / kWidth, flops_per_block, StepMinFlopsPerShard(shards));
    });
    if (shards > 1) SumShards(partial_dbias.flat<float>().data(), shards, 4 * units, dbias->flat<float>().data());
  }
};

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnLstmSequence")
    .Input("xw: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Input("bias: float")
    .Output("h: float")
    .Output("c: float")
    .Output("gates: float")
    .SetShapeFn(tf_charrnn::SequenceShapes)
    .Doc("LSTM layer over a sequence: xw = x W [B, T, 4H], h0, c0 [B, H], U [H, 4H], b [4H] -> h, c [B, T, H] "
         "and the activated gates [B, T, 4H] the gradient needs.");

REGISTER_OP("CharRnnLstmSequenceGrad")
    .Input("dh: float")
    .Input("dc: float")
    .Input("gates: float")
    .Input("c: float")
    .Input("c0: float")
    .Input("recurrent_kernel: float")
    .Output("dz: float")
    .Output("dh0: float")
    .Output("dc0: float")
    .Output("dbias: float")
    .SetShapeFn(tf_charrnn::SequenceGradShapes)
    .Doc("Backward of CharRnnLstmSequence: upstream dh, dc [B, T, H] -> pre-activation gate gradients dz "
         "[B, T, 4H], the initial states' gradients dh0, dc0 [B, H] and the bias gradient [4H].");

REGISTER_KERNEL_BUILDER(Name("CharRnnLstmSequence").Device(::tensorflow::DEVICE_CPU), tf_charrnn::LstmSequenceOp);
REGISTER_KERNEL_BUILDER(Name("CharRnnLstmSequenceGrad").Device(::tensorflow::DEVICE_CPU), tf_charrnn::LstmSequenceGradOp);
