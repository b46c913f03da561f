// CharRnnLstmStackStep: one time step of a stack of LSTM layers in a single op, for sampling.
//
// A batch-1 step is bound by reading the weights, and TensorFlow spends more time dispatching the
// step's dozen small ops than computing them. This kernel streams each layer's weights once, in a
// layout packed for it (see tf_charrnn/native.py), computes the gates of 16 units at a time in
// vector registers and applies the state update there, with the layer's units split across the
// intra-op threads. Arithmetic is Keras LSTMCell's: z = [x, h] W + b; gates i, f, c, o;
// c' = sigmoid(f) c + sigmoid(i) tanh(c~); h' = sigmoid(o) tanh(c').
#include <Eigen/Core>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr int kUnitsPerBlock = 16;  // one 16-float vector per gate
constexpr int kRowsPerTile = 4;     // batch rows sharing each weight load
typedef float Vec __attribute__((vector_size(kUnitsPerBlock * sizeof(float)), aligned(4)));
typedef uint16_t HalfVec __attribute__((vector_size(kUnitsPerBlock * sizeof(uint16_t)), aligned(2)));
typedef uint32_t WordVec __attribute__((vector_size(kUnitsPerBlock * sizeof(uint32_t))));

// 16 weights as floats: float32 storage as is; bfloat16 storage is the high half of a float32.
inline Vec LoadWeights(const float* w) { return *reinterpret_cast<const Vec*>(w); }
inline Vec LoadWeights(const Eigen::bfloat16* w) {
  const WordVec words = __builtin_convertvector(*reinterpret_cast<const HalfVec*>(w), WordVec) << 16;
  return reinterpret_cast<const Vec&>(words);
}
using Lanes = Eigen::Array<float, kUnitsPerBlock, 1>;

// Gates of one block of 16 units for `Rows` batch rows, then their new h and c.
// w: [in + units][4][16] packed weights of the block; bias: [4][16].
template <int Rows, typename W>
void StepTile(const float* x, int in, const float* h, const float* c, int units, int batch_stride_x,
              const W* w, const float* bias, float* h_out, float* c_out) {
  Vec acc[Rows][4];
  for (int r = 0; r < Rows; ++r)
    for (int g = 0; g < 4; ++g) acc[r][g] = *reinterpret_cast<const Vec*>(bias + g * kUnitsPerBlock);
  auto accumulate = [&](const float* rows, int stride, int depth, const W* weights) {
    for (int k = 0; k < depth; ++k) {
      const W* wk = weights + k * 4 * kUnitsPerBlock;
      const Vec w0 = LoadWeights(wk), w1 = LoadWeights(wk + kUnitsPerBlock),
                w2 = LoadWeights(wk + 2 * kUnitsPerBlock), w3 = LoadWeights(wk + 3 * kUnitsPerBlock);
#pragma GCC unroll 4
      for (int r = 0; r < Rows; ++r) {
        const float a = rows[r * stride + k];
        acc[r][0] += a * w0;
        acc[r][1] += a * w1;
        acc[r][2] += a * w2;
        acc[r][3] += a * w3;
      }
    }
  };
  accumulate(x, batch_stride_x, in, w);
  accumulate(h, units, units, w + in * 4 * kUnitsPerBlock);
  for (int r = 0; r < Rows; ++r) {
    alignas(64) float z[4][kUnitsPerBlock];
    for (int g = 0; g < 4; ++g) *reinterpret_cast<Vec*>(z[g]) = acc[r][g];
    const Lanes c_prev = Eigen::Map<const Lanes>(c + r * units);
    const Lanes c_new = Eigen::Map<const Lanes>(z[1]).logistic() * c_prev +
                        Eigen::Map<const Lanes>(z[0]).logistic() * Eigen::Map<const Lanes>(z[2]).tanh();
    Eigen::Map<Lanes>(c_out + r * units) = c_new;
    Eigen::Map<Lanes>(h_out + r * units) = Eigen::Map<const Lanes>(z[3]).logistic() * c_new.tanh();
  }
}

template <int Rows, typename W>
void StepRows(const float* x, int in, const float* h, const float* c, int units, const W* w,
              const float* bias, float* h_out, float* c_out, int first_block, int last_block) {
  for (int block = first_block; block < last_block; ++block) {
    const int offset = block * kUnitsPerBlock;
    StepTile<Rows, W>(x, in, h, c + offset, units, in, w + static_cast<int64_t>(block) * (in + units) * 4 * kUnitsPerBlock,
                   bias + block * 4 * kUnitsPerBlock, h_out + offset, c_out + offset);
  }
}

template <typename W>
class LstmStackStepOp : public OpKernel {
 public:
  explicit LstmStackStepOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("num_layers", &num_layers_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& states = context->input(1);
    OP_REQUIRES(context, x.dims() == 2, errors::InvalidArgument("x must be [batch, features]"));
    OP_REQUIRES(context, states.dims() == 4 && states.dim_size(0) == num_layers_ && states.dim_size(1) == 2 &&
                             states.dim_size(2) == x.dim_size(0),
                errors::InvalidArgument("states must be [num_layers, 2, batch, units]"));
    const int batch = x.dim_size(0), units = states.dim_size(3);
    OP_REQUIRES(context, units % kUnitsPerBlock == 0,
                errors::InvalidArgument("units must be a multiple of ", kUnitsPerBlock));
    const int blocks = units / kUnitsPerBlock;
    Tensor* new_states = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, states.shape(), &new_states));
    const float* x_data = x.flat<float>().data();
    const float* states_data = states.flat<float>().data();
    float* new_states_data = new_states->flat<float>().data();
    std::vector<const W*> weights(num_layers_);
    std::vector<const float*> biases(num_layers_);
    for (int layer = 0, in = x.dim_size(1); layer < num_layers_; ++layer, in = units) {
      const Tensor& w = context->input(2 + layer);
      const Tensor& bias = context->input(2 + num_layers_ + layer);
      OP_REQUIRES(context,
                  w.NumElements() == static_cast<int64_t>(in + units) * 4 * units && bias.NumElements() == 4 * units,
                  errors::InvalidArgument("layer ", layer, ": packed weights must hold [", in, " + ", units,
                                          ", 4 * ", units, "] and biases 4 * ", units));
      weights[layer] = w.flat<W>().data();
      biases[layer] = bias.flat<float>().data();
    }
    // One team for all layers (an OpenMP team spins between layers; waking pool threads per layer
    // would cost as much as a batch-1 layer), as many threads as TensorFlow's intra-op pool.
    const int num_threads = context->device()->tensorflow_cpu_worker_threads()->num_threads;
    const int in_first = x.dim_size(1);
#pragma omp parallel num_threads(num_threads)
    for (int layer = 0; layer < num_layers_; ++layer) {
      const int in = layer == 0 ? in_first : units;
      const float* layer_input = layer == 0 ? x_data : new_states_data + (2 * layer - 2) * batch * units;
      const float* h = states_data + (2 * layer) * batch * units;
      const float* c = h + batch * units;
      float* h_out = new_states_data + (2 * layer) * batch * units;
      float* c_out = h_out + batch * units;
#pragma omp for schedule(static)
      for (int block = 0; block < blocks; ++block) {
        int r = 0;
        for (; r + kRowsPerTile <= batch; r += kRowsPerTile)
          StepRows<kRowsPerTile>(layer_input + r * in, in, h + r * units, c + r * units, units, weights[layer],
                                 biases[layer], h_out + r * units, c_out + r * units, block, block + 1);
        for (; r < batch; ++r)
          StepRows<1>(layer_input + r * in, in, h + r * units, c + r * units, units, weights[layer],
                      biases[layer], h_out + r * units, c_out + r * units, block, block + 1);
      }
    }
  }

 private:
  int num_layers_;
};

}  // namespace

REGISTER_OP("CharRnnLstmStackStep")
    .Input("x: float")
    .Input("states: float")
    .Input("packed_weights: num_layers * weight_dtype")
    .Input("packed_biases: num_layers * float")
    .Output("new_states: float")
    .Attr("num_layers: int >= 1")
    .Attr("weight_dtype: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      context->set_output(0, context->input(1));
      return ::tensorflow::OkStatus();
    })
    .Doc("One step of a stack of LSTM layers: x [B, E], states [L, 2, B, H] -> new states [L, 2, B, H].");

REGISTER_KERNEL_BUILDER(
    Name("CharRnnLstmStackStep").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("weight_dtype"),
    LstmStackStepOp<float>);
REGISTER_KERNEL_BUILDER(Name("CharRnnLstmStackStep")
                            .Device(::tensorflow::DEVICE_CPU)
                            .TypeConstraint<Eigen::bfloat16>("weight_dtype"),
                        LstmStackStepOp<Eigen::bfloat16>);
