// CharRnnSoftmaxCrossEntropy: TensorFlow's SparseSoftmaxCrossEntropyWithLogits (float32 logits, int32
// labels) in one pass per row.
//
// TensorFlow's CPU kernel makes six passes over the [rows, classes] logits as whole-tensor Eigen
// expressions (the row maxima, logits - max, the sums of exp, the loss, exp again, the gradient), each
// split across threads apart: at a character vocabulary (65 classes) and 2,500 rows (char-rnn's batch of
// 50 x 50) that was 0.9 ms of a 25 ms training step on a 2-core CPU. Here each row is read once into
// L1 and gets the same arithmetic, with Eigen's vectorised exp (the one TensorFlow's op uses):
//   m = max_j x_j;  e_j = exp(x_j - m);  s = sum_j e_j;  loss = log(s) - (x_label - m);
//   backprop_j = e_j / s - [j == label],
// so the loss and backprop differ from TensorFlow's by rounding only (1e-7 relative): s is summed in
// another order, and the exp compiled for this CPU (fused multiply-adds) may differ in its last bit from
// TensorFlow's build of it.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "lstm.h"

namespace tf_charrnn {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
namespace errors = ::tensorflow::errors;
namespace vec = ::Eigen::internal;  // Eigen's packet functions: its vector exp is TensorFlow's
using FloatPacket = vec::packet_traits<float>::type;
constexpr int kFloatPacketSize = vec::unpacket_traits<FloatPacket>::size;
constexpr int64_t kCrossEntropyFlopsPerClass = 40;  // a rough cost of one class of a row (exp, sum, divide)
constexpr int64_t kMinCrossEntropyFlopsPerShard = 1 << 17;

// Row `x` of `classes` logits with label `label` (in range): its loss, and its backprop written to `g`.
float CrossEntropyRow(const float* x, int64_t classes, int64_t label, float* g) {
  float max = x[0];
  int64_t j = 0;
  if (classes >= kFloatPacketSize) {  // the order of a maximum does not change it
    FloatPacket maxima = vec::ploadu<FloatPacket>(x);
    for (j = kFloatPacketSize; j + kFloatPacketSize <= classes; j += kFloatPacketSize)
      maxima = vec::pmax(maxima, vec::ploadu<FloatPacket>(x + j));
    max = vec::predux_max(maxima);
  }
  for (; j < classes; ++j) max = std::max(max, x[j]);
  const FloatPacket shift = vec::pset1<FloatPacket>(max);
  FloatPacket sums = vec::pset1<FloatPacket>(0.0f);
  for (j = 0; j + kFloatPacketSize <= classes; j += kFloatPacketSize) {
    const FloatPacket e = vec::pexp(vec::psub(vec::ploadu<FloatPacket>(x + j), shift));
    vec::pstoreu(g + j, e);
    sums = vec::padd(sums, e);
  }
  float sum = vec::predux(sums);
  if (j < classes) {  // the last classes through the same vector exp, in a packet of their own
    alignas(64) float tail[kFloatPacketSize] = {};
    std::copy(x + j, x + classes, tail);
    vec::pstore(tail, vec::pexp(vec::psub(vec::pload<FloatPacket>(tail), shift)));
    for (int64_t k = 0; j + k < classes; ++k) {
      g[j + k] = tail[k];
      sum += tail[k];
    }
  }
  const FloatPacket total = vec::pset1<FloatPacket>(sum);
  for (j = 0; j + kFloatPacketSize <= classes; j += kFloatPacketSize)
    vec::pstoreu(g + j, vec::pdiv(vec::ploadu<FloatPacket>(g + j), total));
  for (; j < classes; ++j) g[j] = g[j] / sum;
  g[label] -= 1.0f;
  return std::log(sum) - (x[label] - max);
}

class SoftmaxCrossEntropyOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor &logits = context->input(0), &labels = context->input(1);
    OP_REQUIRES(context, logits.dims() == 2,
                errors::InvalidArgument("logits must be [rows, classes], got ", logits.shape().DebugString()));
    const int64_t rows = logits.dim_size(0), classes = logits.dim_size(1);
    OP_REQUIRES(context, labels.dims() == 1 && labels.dim_size(0) == rows,
                errors::InvalidArgument("labels must be [", rows, "], got ", labels.shape().DebugString()));
    OP_REQUIRES(context, classes > 0 || rows == 0,
                errors::InvalidArgument("logits must have a class, got ", logits.shape().DebugString()));
    const auto ids = labels.flat<int32_t>();
    for (int64_t row = 0; row < rows; ++row)
      OP_REQUIRES(context, ids(row) >= 0 && ids(row) < classes,
                  errors::InvalidArgument("Received a label value of ", ids(row),
                                          " which is outside the valid range of [0, ", classes, ")"));
    Tensor *loss, *backprop;
    OP_REQUIRES_OK(context, context->allocate_output(0, labels.shape(), &loss));
    OP_REQUIRES_OK(context, context->allocate_output(1, logits.shape(), &backprop));
    const float* x = logits.flat<float>().data();
    float *l = loss->flat<float>().data(), *g = backprop->flat<float>().data();
    ShardBlocks(context, rows, kCrossEntropyFlopsPerClass * classes, kMinCrossEntropyFlopsPerShard,
                [&](int64_t first, int64_t last) {
                  for (int64_t row = first; row < last; ++row)
                    l[row] = CrossEntropyRow(x + row * classes, classes, ids(row), g + row * classes);
                });
  }
};

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnSoftmaxCrossEntropy")
    .Input("logits: float")
    .Input("labels: int32")
    .Output("loss: float")
    .Output("backprop: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      ::tensorflow::shape_inference::ShapeHandle logits, labels;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 2, &logits));
      TF_RETURN_IF_ERROR(context->WithRank(context->input(1), 1, &labels));
      ::tensorflow::shape_inference::DimensionHandle rows;
      TF_RETURN_IF_ERROR(context->Merge(context->Dim(logits, 0), context->Dim(labels, 0), &rows));
      context->set_output(0, context->Vector(rows));
      context->set_output(1, context->Matrix(rows, context->Dim(logits, 1)));
      return ::tensorflow::OkStatus();
    })
    .Doc("SparseSoftmaxCrossEntropyWithLogits of float32 [rows, classes] logits and int32 [rows] labels: "
         "each row's loss and its gradient with respect to the logits.");

REGISTER_KERNEL_BUILDER(Name("CharRnnSoftmaxCrossEntropy").Device(::tensorflow::DEVICE_CPU),
                        tf_charrnn::SoftmaxCrossEntropyOp);
