// CharRnnLstmStep: one time step of one LSTM layer, for sampling.
//
// A sampling step is a [B, in + H] x [in + H, 4H] product plus a dozen elementwise ops; at batch 1
// TensorFlow spends more time dispatching them than computing. This kernel reads the layer's
// weights once, packed by the caller (tf_charrnn/sampling.py) into blocks of 16 units, and applies
// the gates and the state update in registers, the blocks split across the intra-op threads.
#include "lstm.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_charrnn {
namespace {

// Sampling steps come between other small ops, by which time the pool's threads are asleep: a
// batch-1 step (a few MFLOP) runs faster on the calling thread alone.
constexpr int64_t kMinFlopsPerShard = 1 << 24;

class LstmStepOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor &x = context->input(0), &h = context->input(1), &c = context->input(2),
                 &packed = context->input(3), &bias = context->input(4);
    OP_REQUIRES(context, x.dims() == 2 && h.dims() == 2 && h.dim_size(0) == x.dim_size(0) && c.shape() == h.shape(),
                errors::InvalidArgument("x must be [batch, in] and h, c [batch, units], got ", x.shape().DebugString(),
                                        ", ", h.shape().DebugString(), ", ", c.shape().DebugString()));
    const int batch = x.dim_size(0), in = x.dim_size(1), units = h.dim_size(1);
    OP_REQUIRES(context, units % kLanes == 0 && units > 0,
                errors::InvalidArgument("units must be a positive multiple of ", kLanes, ", got ", units));
    const TensorShape packed_shape({units / kLanes, in + units, kWidth});
    OP_REQUIRES(context, packed.shape() == packed_shape && bias.shape() == TensorShape({4 * units}),
                errors::InvalidArgument("packed_weights must be ", packed_shape.DebugString(), " and bias [",
                                        4 * units, "], got ", packed.shape().DebugString(), " and ",
                                        bias.shape().DebugString()));
    Tensor *h_out, *c_out;
    OP_REQUIRES_OK(context, context->allocate_output(0, h.shape(), &h_out));
    OP_REQUIRES_OK(context, context->allocate_output(1, c.shape(), &c_out));
    ForwardStep step;
    step.xw = {nullptr, 0};
    step.x = {x.flat<float>().data(), in};
    step.in = in;
    step.h_prev = {h.flat<float>().data(), units};
    step.c_prev = {c.flat<float>().data(), units};
    step.bias = bias.flat<float>().data();
    step.packed = packed.flat<float>().data();
    step.gates = {nullptr, 0};
    step.h = {h_out->flat<float>().data(), units};
    step.c = {c_out->flat<float>().data(), units};
    step.units = units;
    RunBlocks(context, step, batch, units / kLanes, 2LL * batch * (in + units) * kWidth, kMinFlopsPerShard);
  }
};

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnLstmStep")
    .Input("x: float")
    .Input("h: float")
    .Input("c: float")
    .Input("packed_weights: float")
    .Input("bias: float")
    .Output("new_h: float")
    .Output("new_c: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      context->set_output(0, context->input(1));
      context->set_output(1, context->input(2));
      return ::tensorflow::OkStatus();
    })
    .Doc("One LSTM step: x [B, in], h, c [B, H], [W; U] packed as [H / 16, in + H, 64], b [4H] -> new h, c.");

REGISTER_KERNEL_BUILDER(Name("CharRnnLstmStep").Device(::tensorflow::DEVICE_CPU), tf_charrnn::LstmStepOp);
