// CharRnnRowSums: sums[v] = the sum of values[n] over the rows n with ids[n] = v, in float32.
//
// The gradient of a gather of table rows (the first LSTM layer's input projection read from the
// [vocab, 4H] table of embedding x W, fused_lstm.py): TensorFlow's UnsortedSegmentSum takes about 1.9 ms
// for [2500, 512] rows on these two cores; here the columns are split across the intra-op threads and
// each thread adds whole rows of its columns, vectorised.
#include <algorithm>
#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_charrnn {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr int64_t kColumnsPerShard = 64;       // shards hold whole blocks of this many columns
constexpr int64_t kMinValuesPerShard = 1 << 22;  // below this a thread hand-off costs more than it saves

template <typename T>
class RowSumsOp : public OpKernel {
 public:
  explicit RowSumsOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("num_rows", &num_rows_));
    OP_REQUIRES(context, num_rows_ >= 0, errors::InvalidArgument("num_rows must be >= 0, got ", num_rows_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& values = context->input(0);
    const Tensor& ids = context->input(1);
    OP_REQUIRES(context, values.dims() == 2 && ids.dims() == 1 && ids.dim_size(0) == values.dim_size(0),
                errors::InvalidArgument("values must be [N, D] and ids [N], got ", values.shape().DebugString(),
                                        " and ", ids.shape().DebugString()));
    const int64_t n = values.dim_size(0), width = values.dim_size(1);
    const int32_t* row_ids = ids.flat<int32_t>().data();
    for (int64_t row = 0; row < n; ++row)
      OP_REQUIRES(context, row_ids[row] >= 0 && row_ids[row] < num_rows_,
                  errors::InvalidArgument("ids[", row, "] = ", row_ids[row], " is not in [0, ", num_rows_, ")"));
    Tensor* sums = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({num_rows_, width}), &sums));
    float* out = sums->flat<float>().data();
    std::fill(out, out + num_rows_ * width, 0.0f);
    const T* in = values.flat<T>().data();
    auto work = [=](int64_t first_block, int64_t last_block) {
      const int64_t first = first_block * kColumnsPerShard, last = std::min(width, last_block * kColumnsPerShard);
      for (int64_t row = 0; row < n; ++row) {
        const T* source = in + row * width;
        float* target = out + static_cast<int64_t>(row_ids[row]) * width;
        for (int64_t column = first; column < last; ++column) target[column] += static_cast<float>(source[column]);
      }
    };
    const int64_t blocks = (width + kColumnsPerShard - 1) / kColumnsPerShard;
    auto* threads = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t shards =
        std::min<int64_t>({threads->NumThreads(), blocks, std::max<int64_t>(1, n * width / kMinValuesPerShard)});
    if (shards <= 1) return work(0, blocks);
    threads->ParallelFor(blocks, ::tsl::thread::ThreadPool::SchedulingParams::Fixed((blocks + shards - 1) / shards),
                         work);
  }

 private:
  int64_t num_rows_;
};

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnRowSums")
    .Input("values: T")
    .Input("ids: int32")
    .Output("sums: float")
    .Attr("num_rows: int")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      int64_t num_rows;
      TF_RETURN_IF_ERROR(context->GetAttr("num_rows", &num_rows));
      context->set_output(0, context->Matrix(num_rows, context->Dim(context->input(0), 1)));
      return ::tensorflow::OkStatus();
    })
    .Doc("sums [num_rows, D] float32: row v is the sum of the rows of values [N, D] whose ids [N] are v.");

REGISTER_KERNEL_BUILDER(Name("CharRnnRowSums").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        tf_charrnn::RowSumsOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("CharRnnRowSums").Device(::tensorflow::DEVICE_CPU).TypeConstraint<::tensorflow::bfloat16>("T"),
    tf_charrnn::RowSumsOp<::tensorflow::bfloat16>);
