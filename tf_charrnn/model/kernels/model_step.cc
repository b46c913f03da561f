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
// AVX512-BF16), or in int8 with a float32 scale per column (a quarter of the bytes; each weight widened to
// float32 as it is read, the products in float32 on the exact inputs, the scale applied to the sums; built
// for any CPU). Gates, state and logits are float32. The blocks of a layer are split across the intra-op
// threads only from 16 MFLOP a shard on: at batch 1 the calling thread alone is faster.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>
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

#ifdef __AVX512VNNI__
// int8 activations of one row for vpdpbusd: `values` / scale rounded to nearest, scale = their largest
// |value| / 127 (1 for a row of zeros), written to `out`; returns the scale and sets *sum to the sum of
// the int8 values.
inline float QuantizeRow(const float* values, int n, int8_t* out, int32_t* sum) {
  float largest = 0.0f;
  for (int k = 0; k < n; ++k) largest = std::max(largest, std::fabs(values[k]));
  const float scale = largest > 0.0f ? largest / 127.0f : 1.0f;
  int32_t total = 0;
  for (int k = 0; k < n; ++k) {
    const int q = static_cast<int>(std::nearbyint(values[k] / scale));
    out[k] = static_cast<int8_t>(q);
    total += q;
  }
  *sum = total;
  return scale;
}

// acc[r][v] += sum_k (w[k] + 128) a[r * lda + k] over k in quads on vpdpbusd: w holds, per quad of rows
// k..k + 3, kWidth columns of their 4 weights, each stored as weight + 128 (unsigned). `depth` is a
// multiple of 4.
template <int Rows>
inline void MultiplyTileInt8(const int8_t* a, int64_t lda, int depth, const uint8_t* w,
                             __m512i (&acc)[kMaxRows][kVectors]) {
  for (int k = 0; k < depth; k += 4) {
    const uint8_t* wk = w + static_cast<int64_t>(k) * kWidth;
    const __m512i w0 = _mm512_loadu_si512(wk), w1 = _mm512_loadu_si512(wk + 4 * kLanes),
                  w2 = _mm512_loadu_si512(wk + 8 * kLanes), w3 = _mm512_loadu_si512(wk + 12 * kLanes);
#pragma GCC unroll 6
    for (int r = 0; r < Rows; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + k, sizeof(quad));
      const __m512i x = _mm512_set1_epi32(quad);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, x);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, x);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], w2, x);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], w3, x);
    }
  }
}

// Rows of int8 activations with each row's scale and sum (QuantizeRow).
struct QuantizedRows {
  const int8_t* data;
  int64_t stride;
  const float* scale;
  const int32_t* sum;
  const int8_t* at(int row) const { return data + row * stride; }
};

// ForwardStep over int8 weights and int8 inputs: z = (x W + h_prev U) * scale + b for units [u0, u0 + 16),
// then the gates; x and h_prev quantised per row, each with its own scale.
struct ForwardStepInt8 {
  QuantizedRows x;        // [B, in4]: the layer input, zero-padded to a multiple of 4
  int in4;
  QuantizedRows h_prev;   // [B, H]
  Rows c_prev;            // [B, H]
  const float* scale;     // [4H]: column j of [W; U] is (its stored bytes - 128) x scale[j]
  const float* bias;      // [4H]
  const uint8_t* packed;  // [H / 16][(in4 + H) / 4][4][16][4]
  MutableRows h, c;       // [B, H]
  int units;

  // z[r][g] += (acc[r][g] - 128 * rows.sum[row + r]) * rows.scale[row + r], then acc is zeroed.
  template <int Count>
  static void AddScaled(const QuantizedRows& rows, int row, __m512i (&acc)[kMaxRows][kVectors],
                        __m512 (&z)[kMaxRows][kVectors]) {
    for (int r = 0; r < Count; ++r) {
      const __m512i offset = _mm512_set1_epi32(128 * rows.sum[row + r]);
      const __m512 scale = _mm512_set1_ps(rows.scale[row + r]);
      for (int g = 0; g < 4; ++g) {
        z[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][g], offset)), scale, z[r][g]);
        acc[r][g] = _mm512_setzero_si512();
      }
    }
  }

  template <int Count>
  void Tile(int row, int block) const {
    const int u0 = block * kLanes;
    __m512i acc[kMaxRows][kVectors];
    __m512 z[kMaxRows][kVectors];
    for (int r = 0; r < Count; ++r)
      for (int g = 0; g < 4; ++g) {
        acc[r][g] = _mm512_setzero_si512();
        z[r][g] = _mm512_setzero_ps();
      }
    const uint8_t* w = packed + static_cast<int64_t>(block) * (in4 + units) * kWidth;
    MultiplyTileInt8<Count>(x.at(row), x.stride, in4, w, acc);
    AddScaled<Count>(x, row, acc, z);
    MultiplyTileInt8<Count>(h_prev.at(row), h_prev.stride, units, w + static_cast<int64_t>(in4) * kWidth, acc);
    AddScaled<Count>(h_prev, row, acc, z);
    for (int r = 0; r < Count; ++r) {
      alignas(64) float gates[4][kLanes];
      for (int g = 0; g < 4; ++g)
        _mm512_store_ps(gates[g], _mm512_fmadd_ps(z[r][g], _mm512_loadu_ps(scale + g * units + u0),
                                                  _mm512_loadu_ps(bias + g * units + u0)));
      ApplyGates(gates, c_prev.at(row + r) + u0, nullptr, units, c.at(row + r) + u0, h.at(row + r) + u0);
    }
  }
};
#endif  // __AVX512VNNI__

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
    ::tensorflow::OpInputList packed, biases, scales;
    OP_REQUIRES_OK(context, context->input_list("packed", &packed));
    OP_REQUIRES_OK(context, context->input_list("bias", &biases));
    if (kScaled) OP_REQUIRES_OK(context, context->input_list("scale", &scales));
    const Tensor *head_kernel_input, *head_bias_input;
    OP_REQUIRES_OK(context, context->input("head_kernel", &head_kernel_input));
    OP_REQUIRES_OK(context, context->input("head_bias", &head_bias_input));
    const Tensor &head_kernel = *head_kernel_input, &head_bias = *head_bias_input;
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
      if (kScaled)
        OP_REQUIRES(context, scales[layer].shape() == TensorShape({4 * units}),
                    errors::InvalidArgument("layer ", layer, "'s scale must be [", 4 * units, "], got ",
                                            scales[layer].shape().DebugString()));
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
                                        kScaled ? &scales[layer] : nullptr, biases[layer], batch, units, h,
                                        h + plane));
      layer_input = h;
      in = units;
    }
    Logits(new_state->flat<float>().data(), first_read, layers, batch, units, head_kernel.flat<float>().data(),
           head_bias.flat<float>().data(), vocab, logits->flat<float>().data());
  }

 private:
  // int8 weights come with a scale per column (the op CharRnnModelStepInt8).
  static constexpr bool kScaled = std::is_same<Weight, uint8_t>::value;
  static TensorShape PackedShape(int in, int units);
  static ::tensorflow::Status StepLayer(OpKernelContext* context, const float* x, int in, const float* h_prev,
                                        const float* c_prev, const Tensor& packed, const Tensor* scale,
                                        const Tensor& bias, int batch, int units, float* h, float* c);
};

template <>
TensorShape ModelStepOp<float>::PackedShape(int in, int units) {
  return TensorShape({units / kLanes, in + units, kWidth});
}

template <>
::tensorflow::Status ModelStepOp<float>::StepLayer(OpKernelContext* context, const float* x, int in,
                                                   const float* h_prev, const float* c_prev, const Tensor& packed,
                                                   const Tensor*, const Tensor& bias, int batch, int units,
                                                   float* h, float* c) {
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

#ifdef __AVX512VNNI__
template <>
TensorShape ModelStepOp<uint8_t>::PackedShape(int in, int units) {
  return TensorShape({units / kLanes, (in + 3) / 4 + units / 4, kWidth, 4});
}

template <>
::tensorflow::Status ModelStepOp<uint8_t>::StepLayer(OpKernelContext* context, const float* x, int in,
                                                     const float* h_prev, const float* c_prev, const Tensor& packed,
                                                     const Tensor* scale, const Tensor& bias, int batch, int units,
                                                     float* h, float* c) {
  const int in4 = (in + 3) / 4 * 4;
  Tensor inputs, scales, sums;
  TF_RETURN_IF_ERROR(context->allocate_temp(::tensorflow::DT_INT8, TensorShape({batch, in4 + units}), &inputs));
  TF_RETURN_IF_ERROR(context->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({2, batch}), &scales));
  TF_RETURN_IF_ERROR(context->allocate_temp(::tensorflow::DT_INT32, TensorShape({2, batch}), &sums));
  int8_t* quantized = inputs.flat<int8_t>().data();
  float* row_scale = scales.flat<float>().data();
  int32_t* row_sum = sums.flat<int32_t>().data();
  for (int b = 0; b < batch; ++b) {
    int8_t* row = quantized + static_cast<int64_t>(b) * (in4 + units);
    row_scale[b] = QuantizeRow(x + static_cast<int64_t>(b) * in, in, row, &row_sum[b]);
    std::fill(row + in, row + in4, 0);
    row_scale[batch + b] =
        QuantizeRow(h_prev + static_cast<int64_t>(b) * units, units, row + in4, &row_sum[batch + b]);
  }
  ForwardStepInt8 step;
  step.x = {quantized, in4 + units, row_scale, row_sum};
  step.in4 = in4;
  step.h_prev = {quantized + in4, in4 + units, row_scale + batch, row_sum + batch};
  step.c_prev = {c_prev, units};
  step.scale = scale->flat<float>().data();
  step.bias = bias.flat<float>().data();
  step.packed = packed.flat<uint8_t>().data();
  step.h = {h, units};
  step.c = {c, units};
  step.units = units;
  RunBlocks(context, step, 0, batch, units / kLanes, 2LL * batch * (in4 + units) * kWidth, kMinFlopsPerShard);
  return ::tensorflow::OkStatus();
}
#endif  // __AVX512VNNI__

#ifdef __AVX512BF16__
template <>
TensorShape ModelStepOp<Bf16>::PackedShape(int in, int units) {
  return TensorShape({units / kLanes, (in + units + 1) / 2, kWidth, 2});
}

template <>
::tensorflow::Status ModelStepOp<Bf16>::StepLayer(OpKernelContext* context, const float* x, int in,
                                                  const float* h_prev, const float* c_prev, const Tensor& packed,
                                                  const Tensor*, const Tensor& bias, int batch, int units,
                                                  float* h, float* c) {
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

namespace {
// Shapes of a model step: ids [B] and the head kernel [?, V] -> logits [B, V]; the state keeps its shape.
// The head kernel follows `lists_per_layer` lists of N tensors.
::tensorflow::Status ModelStepShapes(::tensorflow::shape_inference::InferenceContext* context,
                                     int lists_per_layer) {
  int layers;
  TF_RETURN_IF_ERROR(context->GetAttr("N", &layers));
  const int head_kernel = 3 + lists_per_layer * layers;
  context->set_output(0, context->Matrix(context->Dim(context->input(0), 0),
                                         context->Dim(context->input(head_kernel), 1)));
  context->set_output(1, context->input(1));
  return ::tensorflow::OkStatus();
}
}  // namespace

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
      return ModelStepShapes(context, 2);
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

#ifdef __AVX512VNNI__
REGISTER_OP("CharRnnModelStepInt8")
    .Input("ids: int32")
    .Input("state: float")
    .Input("embedding: float")
    .Input("packed: N * uint8")
    .Input("scale: N * float")
    .Input("bias: N * float")
    .Input("head_kernel: float")
    .Input("head_bias: float")
    .Output("logits: float")
    .Output("new_state: float")
    .Attr("N: int >= 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      return ModelStepShapes(context, 3);
    })
    .Doc("CharRnnModelStep on int8 weights and inputs (vpdpbusd): per layer [W; U] in quads of rows "
         "[H / 16, (in + 3) / 4 + H / 4, 64, 4] uint8 (each weight as its int8 value + 128; W's rows "
         "zero-padded to a multiple of 4) with a float32 scale per column [4H] (weight = int8 value x "
         "scale), and bias [4H]; each step's x and h_prev rounded to int8 per row, each with its own scale.");

REGISTER_KERNEL_BUILDER(Name("CharRnnModelStepInt8").Device(::tensorflow::DEVICE_CPU),
                        tf_charrnn::ModelStepOp<uint8_t>);
#endif  // __AVX512VNNI__
