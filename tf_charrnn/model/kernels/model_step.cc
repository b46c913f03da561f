// CharRnnModelStep: one character of a Char-RNN with LSTM layers, for sampling: the embedding rows,
// every layer's step and the logits in one kernel call.
//
// A batch-1 step is a few MFLOP over 13 MB of weights (2 x 512), so it is bound by how fast one core
// streams the weights and by TensorFlow's per-op cost (the gather, a step op per layer, the state's
// slices and stacks, the logits' matmul: about as long as the products). One call per character leaves
// only the weights: the layers' [W; U] packed once per generation by the caller
// (tf_charrnn/model/fused_lstm.py) in blocks of 16 units, in float32, or in bfloat16 pairs (half the bytes,
// products on AVX512-BF16's vdpbf16ps with float32 accumulation; each layer's input and h rounded to
// bfloat16 as the bfloat16 training kernels round them; built only where the compiler targets
// AVX512-BF16). Gates, state and logits are float32. The blocks of a layer are split across the intra-op
// threads only from 16 MFLOP a shard on: at batch 1 the calling thread alone is faster.
#include <vector>

#include "bf16.h"
#include "lstm.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_charrnn {
namespace {

// Sampling steps come between other small ops, by which time the pool's threads are asleep: a
// batch-1 step (a few MFLOP) runs faster on the calling thread alone.
constexpr int64_t kMinFlopsPerShard = 1 << 24;

#ifdef __AVX512BF16__
// ForwardStep over bfloat16 pairs: z = [x, h_prev] [W; U] + b for units [u0, u0 + 16), then the gates.
struct ForwardStepBf16Weights {
  Rows16 inputs;           // [B, depth]: x then h_prev, rounded to bfloat16 (a zero pads an odd depth)
  int depth;               // even
  Rows c_prev;             // [B, H]
  const float* bias;       // [4H]
  const uint32_t* packed;  // [H / 16][depth / 2][4][16] pairs
  MutableRows h, c;        // [B, H]
  int units;

  template <int Count>
  void Tile(int row, int block) const {
    const int u0 = block * kLanes;
    __m512 acc[kMaxRows][kVectors];
    for (int r = 0; r < Count; ++r)
      for (int g = 0; g < 4; ++g) acc[r][g] = _mm512_loadu_ps(bias + g * units + u0);
    MultiplyTileBf16<Count>(inputs.at(row), inputs.stride, depth,
                            packed + static_cast<int64_t>(block) * (depth / 2) * kWidth, acc);
    for (int r = 0; r < Count; ++r) {
      alignas(64) float z[4][kLanes];
      for (int g = 0; g < 4; ++g) _mm512_store_ps(z[g], acc[r][g]);
      ApplyGates(z, c_prev.at(row + r) + u0, nullptr, units, c.at(row + r) + u0, h.at(row + r) + u0);
    }
  }
};
#endif  // __AVX512BF16__

// logits[b] = [h of layers first..layers-1][b] head_kernel + head_bias, in float32: the state holds each
// layer's h then c, [L, 2, B, H]; the kernel's rows are the read layers' units, in layer order.
void Logits(const float* state, int first, int layers, int batch, int units, const float* kernel,
            const float* bias, int vocab, float* logits) {
  const int64_t plane = static_cast<int64_t>(batch) * units;
  for (int b = 0; b < batch; ++b) {
    float* out = logits + static_cast<int64_t>(b) * vocab;
    std::copy(bias, bias + vocab, out);
    for (int layer = first; layer < layers; ++layer) {
      const float* hb = state + 2 * layer * plane + static_cast<int64_t>(b) * units;
      const float* block = kernel + static_cast<int64_t>(layer - first) * units * vocab;
      for (int k = 0; k < units; ++k) {
        const float x = hb[k];
        const float* w = block + static_cast<int64_t>(k) * vocab;
        for (int v = 0; v < vocab; ++v) out[v] += x * w[v];
      }
    }
  }
}

template <typename Weight>
class ModelStepOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor &ids = context->input(0), &state = context->input(1), &embedding = context->input(2);
    ::tensorflow::OpInputList packed, biases;
    OP_REQUIRES_OK(context, context->input_list("packed", &packed));
    OP_REQUIRES_OK(context, context->input_list("bias", &biases));
    const Tensor &head_kernel = context->input(3 + 2 * packed.size()),
                 &head_bias = context->input(4 + 2 * packed.size());
    const int layers = packed.size();
    OP_REQUIRES(context, ids.dims() == 1 && embedding.dims() == 2,
                errors::InvalidArgument("ids must be [batch] and embedding [vocab, dim], got ",
                                        ids.shape().DebugString(), ", ", embedding.shape().DebugString()));
    const int batch = ids.dim_size(0), embedding_dim = embedding.dim_size(1);
    OP_REQUIRES(context,
                state.dims() == 4 && state.dim_size(0) == layers && state.dim_size(1) == 2 &&
                    state.dim_size(2) == batch && state.dim_size(3) % kLanes == 0 && state.dim_size(3) > 0,
                errors::InvalidArgument("state must be [", layers, ", 2, ", batch, ", units], units a positive "
                                        "multiple of ", kLanes, ", got ", state.shape().DebugString()));
    const int units = state.dim_size(3);
    OP_REQUIRES(context,
                head_kernel.dims() == 2 &&
                    (head_kernel.dim_size(0) == units || head_kernel.dim_size(0) == layers * units) &&
                    head_bias.shape() == TensorShape({head_kernel.dim_size(1)}),
                errors::InvalidArgument("head_kernel must be [", units, " or ", layers * units,
                                        " (every layer's h), vocab] and head_bias [vocab], got ",
                                        head_kernel.shape().DebugString(), ", ", head_bias.shape().DebugString()));
    // The logits read the last layer's h, or every layer's (skip connections to the output).
    const int first_read = head_kernel.dim_size(0) == units ? layers - 1 : 0;
    for (int layer = 0; layer < layers; ++layer) {
      const int in = layer == 0 ? embedding_dim : units;
      const TensorShape want = PackedShape(in, units);
      OP_REQUIRES(context, packed[layer].shape() == want && biases[layer].shape() == TensorShape({4 * units}),
                  errors::InvalidArgument("layer ", layer, "'s packed weights must be ", want.DebugString(),
                                          " and bias [", 4 * units, "], got ", packed[layer].shape().DebugString(),
                                          " and ", biases[layer].shape().DebugString()));
    }
    const int32_t* id = ids.flat<int32_t>().data();
    for (int b = 0; b < batch; ++b)
      OP_REQUIRES(context, id[b] >= 0 && id[b] < embedding.dim_size(0),
                  errors::InvalidArgument("id ", id[b], " is outside the embedding's ", embedding.dim_size(0),
                                          " rows"));
    Tensor *logits, *new_state, x;
    const int vocab = head_kernel.dim_size(1);
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({batch, vocab}), &logits));
    OP_REQUIRES_OK(context, context->allocate_output(1, state.shape(), &new_state));
    OP_REQUIRES_OK(context, context->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({batch, embedding_dim}), &x));
    float* x_data = x.flat<float>().data();
    for (int b = 0; b < batch; ++b)
      std::copy_n(embedding.flat<float>().data() + static_cast<int64_t>(id[b]) * embedding_dim, embedding_dim,
                  x_data + static_cast<int64_t>(b) * embedding_dim);

    const int64_t plane = static_cast<int64_t>(batch) * units;  // one of h, c of one layer
    const float* layer_input = x_data;
    int in = embedding_dim;
    for (int layer = 0; layer < layers; ++layer) {
      const float* h_prev = state.flat<float>().data() + 2 * layer * plane;
      float* h = new_state->flat<float>().data() + 2 * layer * plane;
      OP_REQUIRES_OK(context, StepLayer(context, layer_input, in, h_prev, h_prev + plane, packed[layer],
                                        biases[layer], batch, units, h, h + plane));
      layer_input = h;
      in = units;
    }
    Logits(new_state->flat<float>().data(), first_read, layers, batch, units, head_kernel.flat<float>().data(),
           head_bias.flat<float>().data(), vocab, logits->flat<float>().data());
  }

 private:
  static TensorShape PackedShape(int in, int units);
  static ::tensorflow::Status StepLayer(OpKernelContext* context, const float* x, int in, const float* h_prev,
                                        const float* c_prev, const Tensor& packed, const Tensor& bias, int batch,
                                        int units, float* h, float* c);
};

template <>
TensorShape ModelStepOp<float>::PackedShape(int in, int units) {
  return TensorShape({units / kLanes, in + units, kWidth});
}

template <>
::tensorflow::Status ModelStepOp<float>::StepLayer(OpKernelContext* context, const float* x, int in,
                                                   const float* h_prev, const float* c_prev, const Tensor& packed,
                                                   const Tensor& bias, int batch, int units, float* h, float* c) {
  ForwardStep step;
  step.xw = {nullptr, 0};
  step.x = {x, in};
  step.in = in;
  step.h_prev = {h_prev, units};
  step.c_prev = {c_prev, units};
  step.bias = bias.flat<float>().data();
  step.packed = packed.flat<float>().data();
  step.gates = {nullptr, 0};
  step.h = {h, units};
  step.c = {c, units};
  step.units = units;
  RunBlocks(context, step, 0, batch, units / kLanes, 2LL * batch * (in + units) * kWidth, kMinFlopsPerShard);
  return ::tensorflow::OkStatus();
}

#ifdef __AVX512BF16__
template <>
TensorShape ModelStepOp<Bf16>::PackedShape(int in, int units) {
  return TensorShape({units / kLanes, (in + units + 1) / 2, kWidth, 2});
}

template <>
::tensorflow::Status ModelStepOp<Bf16>::StepLayer(OpKernelContext* context, const float* x, int in,
                                                  const float* h_prev, const float* c_prev, const Tensor& packed,
                                                  const Tensor& bias, int batch, int units, float* h, float* c) {
  const int depth = (in + units + 1) / 2 * 2;
  Tensor inputs;
  TF_RETURN_IF_ERROR(context->allocate_temp(::tensorflow::DT_BFLOAT16, TensorShape({batch, depth}), &inputs));
  uint16_t* rounded = Bits(&inputs);
  for (int b = 0; b < batch; ++b) {
    uint16_t* row = rounded + static_cast<int64_t>(b) * depth;
    for (int k = 0; k < in; ++k) row[k] = ToBf16(x[static_cast<int64_t>(b) * in + k]);
    for (int k = 0; k < units; ++k) row[in + k] = ToBf16(h_prev[static_cast<int64_t>(b) * units + k]);
    if (depth > in + units) row[depth - 1] = 0;
  }
  ForwardStepBf16Weights step;
  step.inputs = {rounded, depth};
  step.depth = depth;
  step.c_prev = {c_prev, units};
  step.bias = bias.flat<float>().data();
  step.packed = reinterpret_cast<const uint32_t*>(packed.flat<Bf16>().data());
  step.h = {h, units};
  step.c = {c, units};
  step.units = units;
  RunBlocks(context, step, 0, batch, units / kLanes, 2LL * batch * depth * kWidth, kMinFlopsPerShard);
  return ::tensorflow::OkStatus();
}
#endif  // __AVX512BF16__

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnModelStep")
    .Input("ids: int32")
    .Input("state: float")
    .Input("embedding: float")
    .Input("packed: N * T")
    .Input("bias: N * float")
    .Input("head_kernel: float")
    .Input("head_bias: float")
    .Output("logits: float")
    .Output("new_state: float")
    .Attr("N: int >= 1")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      int layers;
      TF_RETURN_IF_ERROR(context->GetAttr("N", &layers));
      const int head_kernel = 3 + 2 * layers;
      context->set_output(0, context->Matrix(context->Dim(context->input(0), 0),
                                             context->Dim(context->input(head_kernel), 1)));
      context->set_output(1, context->input(1));
      return ::tensorflow::OkStatus();
    })
    .Doc("One character of an LSTM Char-RNN: ids [B], state [L, 2, B, H] (h, c per layer), embedding "
         "[V_in, E], per layer [W; U] packed (float [H / 16, in + H, 64], or bfloat16 pairs "
         "[H / 16, (in + H + 1) / 2, 64, 2]) and bias [4H], head kernel [H, V] (the last layer's h) or "
         "[L x H, V] (every layer's) and bias [V] -> logits [B, V], new state.");

REGISTER_KERNEL_BUILDER(Name("CharRnnModelStep").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        tf_charrnn::ModelStepOp<float>);
#ifdef __AVX512BF16__
REGISTER_KERNEL_BUILDER(
    Name("CharRnnModelStep").Device(::tensorflow::DEVICE_CPU).TypeConstraint<::tensorflow::bfloat16>("T"),
    tf_charrnn::ModelStepOp<tf_charrnn::Bf16>);
#endif  // __AVX512BF16__
