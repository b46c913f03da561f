// CharRnnAdam / CharRnnAdamSlices: Keras 3's Adam update (TensorFlow backend) of many variables in one op,
// bit for bit what keras.optimizers.Adam computes.
//
// Keras runs about twenty ops per variable a step (subtract, multiply and assign for m, the same for v,
// sqrt, add, divide and assign for the variable, and the bias-corrected rate), so at 2 x 128 units its
// update is about 150 small ops after the backward pass. Here, with alpha = lr sqrt(1 - b2^t) / (1 - b1^t)
// and the scalars computed once by the caller, each element gets the same float32 operations in the same
// order, each rounded once (this file is compiled without multiply-add contraction):
//   m' = m + (g - m) * one_minus_beta_1
//   v' = v + (g * g - v) * one_minus_beta_2
//   x' = x - (m' * alpha) / (sqrt(v') + epsilon)
// CharRnnAdamSlices takes a gradient as tf.IndexedSlices (an Embedding's): Keras densifies g and g * g
// separately (UnsortedSegmentSum, each row the sum of its slices in order), so v receives the sum of the
// slices' squares; the same sums are made here in the same order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#if defined(__AVX512F__)
#define TF_CHARRNN_ADAM_AVX512 1
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "lstm.h"

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")  // each multiply and add rounded apart, as TensorFlow's ops are

namespace tf_charrnn {
namespace {

using ::tensorflow::OpInputList;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::OpOutputList;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr int64_t kMinAdamElementsPerShard = 1 << 15;  // below this a thread hand-off costs more than it saves

struct Scalars {
  float alpha, epsilon, one_minus_beta_1, one_minus_beta_2;
};

Scalars ReadScalars(OpKernelContext* context) {
  auto scalar = [context](int input) { return context->input(input).scalar<float>()(); };
  return {scalar(0), scalar(1), scalar(2), scalar(3)};
}

// The update of elements [first, last): g and g2 (g * g, or the sum of the slices' squares) in, m, v and
// x read from m_in, v_in, x_in and written to m, v, x.
void Update(const Scalars& s, const float* g, const float* g2, const float* m_in, const float* v_in,
            const float* x_in, float* m, float* v, float* x, int64_t first, int64_t last) {
  int64_t i = first;
#ifdef TF_CHARRNN_ADAM_AVX512
  const __m512 alpha = _mm512_set1_ps(s.alpha), epsilon = _mm512_set1_ps(s.epsilon);
  const __m512 b1 = _mm512_set1_ps(s.one_minus_beta_1), b2 = _mm512_set1_ps(s.one_minus_beta_2);
  for (; i + 16 <= last; i += 16) {
    const __m512 gi = _mm512_loadu_ps(g + i), mi = _mm512_loadu_ps(m_in + i), vi = _mm512_loadu_ps(v_in + i);
    const __m512 g2i = g2 == nullptr ? _mm512_mul_ps(gi, gi) : _mm512_loadu_ps(g2 + i);
    const __m512 m_new = _mm512_add_ps(mi, _mm512_mul_ps(_mm512_sub_ps(gi, mi), b1));
    const __m512 v_new = _mm512_add_ps(vi, _mm512_mul_ps(_mm512_sub_ps(g2i, vi), b2));
    const __m512 step = _mm512_div_ps(_mm512_mul_ps(m_new, alpha), _mm512_add_ps(_mm512_sqrt_ps(v_new), epsilon));
    _mm512_storeu_ps(m + i, m_new);
    _mm512_storeu_ps(v + i, v_new);
    _mm512_storeu_ps(x + i, _mm512_sub_ps(_mm512_loadu_ps(x_in + i), step));
  }
#endif
  for (; i < last; ++i) {  // no multiply and add in one statement: a compiler contracting within one fuses none
    const float g2i = g2 == nullptr ? g[i] * g[i] : g2[i];
    const float m_step = (g[i] - m_in[i]) * s.one_minus_beta_1;
    m[i] = m_in[i] + m_step;
    const float v_step = (g2i - v_in[i]) * s.one_minus_beta_2;
    v[i] = v_in[i] + v_step;
    const float update = m[i] * s.alpha;
    x[i] = x_in[i] - update / (std::sqrt(v[i]) + s.epsilon);
  }
}

class AdamOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Scalars scalars = ReadScalars(context);
    OpInputList grads, ms, vs, xs;
    OP_REQUIRES_OK(context, context->input_list("gradients", &grads));
    OP_REQUIRES_OK(context, context->input_list("m", &ms));
    OP_REQUIRES_OK(context, context->input_list("v", &vs));
    OP_REQUIRES_OK(context, context->input_list("variables", &xs));
    OpOutputList m_out, v_out, x_out;
    OP_REQUIRES_OK(context, context->output_list("new_m", &m_out));
    OP_REQUIRES_OK(context, context->output_list("new_v", &v_out));
    OP_REQUIRES_OK(context, context->output_list("new_variables", &x_out));
    struct Job {
      const float *g, *m_in, *v_in, *x_in;
      float *m, *v, *x;
      int64_t size;
    };
    std::vector<Job> jobs;
    int64_t total = 0;
    for (int k = 0; k < grads.size(); ++k) {
      for (const Tensor* other : {&ms[k], &vs[k], &xs[k]})
        OP_REQUIRES(context, other->shape() == grads[k].shape(),
                    errors::InvalidArgument("variable ", k, ": gradient ", grads[k].shape().DebugString(),
                                            ", m, v and variable ", other->shape().DebugString()));
      Tensor *m, *v, *x;
      OP_REQUIRES_OK(context, m_out.allocate(k, grads[k].shape(), &m));
      OP_REQUIRES_OK(context, v_out.allocate(k, grads[k].shape(), &v));
      OP_REQUIRES_OK(context, x_out.allocate(k, grads[k].shape(), &x));
      Job job{grads[k].flat<float>().data(), ms[k].flat<float>().data(), vs[k].flat<float>().data(),
              xs[k].flat<float>().data(), m->flat<float>().data(), v->flat<float>().data(), x->flat<float>().data(),
              grads[k].NumElements()};
      jobs.push_back(job);
      total += job.size;
    }
    // Elements [first, last) of all the variables laid end to end.
    auto work = [&jobs, &scalars](int64_t first, int64_t last) {
      int64_t offset = 0;
      for (const Job& job : jobs) {
        const int64_t begin = std::max(first - offset, int64_t{0}), end = std::min(last - offset, job.size);
        if (begin < end)
          Update(scalars, job.g, nullptr, job.m_in, job.v_in, job.x_in, job.m, job.v, job.x, begin, end);
        offset += job.size;
      }
    };
    ShardBlocks(context, total, 1, kMinAdamElementsPerShard, work);  // an element a block
  }
};

template <typename Index>
class AdamSlicesOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* context) override {
    const Scalars scalars = ReadScalars(context);
    const Tensor &values = context->input(4), &indices = context->input(5), &m = context->input(6),
                 &v = context->input(7), &x = context->input(8);
    OP_REQUIRES(context, x.dims() == 2 && m.shape() == x.shape() && v.shape() == x.shape(),
                errors::InvalidArgument("m, v and the variable must be one [rows, width] shape"));
    const int64_t rows = x.dim_size(0), width = x.dim_size(1), slices = indices.NumElements();
    OP_REQUIRES(context, values.dims() == 2 && values.dim_size(0) == slices && values.dim_size(1) == width,
                errors::InvalidArgument("values ", values.shape().DebugString(), " for ", slices,
                                        " indices of rows of width ", width));
    Tensor sums, squares;
    OP_REQUIRES_OK(context, context->allocate_temp(::tensorflow::DT_FLOAT, x.shape(), &sums));
    OP_REQUIRES_OK(context, context->allocate_temp(::tensorflow::DT_FLOAT, x.shape(), &squares));
    float *g = sums.flat<float>().data(), *g2 = squares.flat<float>().data();
    std::fill(g, g + rows * width, 0.0f);
    std::fill(g2, g2 + rows * width, 0.0f);
    const float* slice = values.flat<float>().data();
    const auto ids = indices.flat<Index>();
    for (int64_t i = 0; i < slices; ++i, slice += width) {
      const int64_t row = ids(i);
      OP_REQUIRES(context, row >= 0 && row < rows,
                  errors::InvalidArgument("slice ", i, " names row ", row, " of a variable of ", rows, " rows"));
      float *sum = g + row * width, *square = g2 + row * width;
      for (int64_t j = 0; j < width; ++j) {
        sum[j] += slice[j];
        square[j] += slice[j] * slice[j];
      }
    }
    Tensor *m_out, *v_out, *x_out;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &m_out));
    OP_REQUIRES_OK(context, context->allocate_output(1, x.shape(), &v_out));
    OP_REQUIRES_OK(context, context->allocate_output(2, x.shape(), &x_out));
    Update(scalars, g, g2, m.flat<float>().data(), v.flat<float>().data(), x.flat<float>().data(),
           m_out->flat<float>().data(), v_out->flat<float>().data(), x_out->flat<float>().data(), 0, rows * width);
  }
};

}  // namespace
}  // namespace tf_charrnn

#pragma GCC pop_options

REGISTER_OP("CharRnnAdam")
    .Input("alpha: float")
    .Input("epsilon: float")
    .Input("one_minus_beta_1: float")
    .Input("one_minus_beta_2: float")
    .Input("gradients: N * float")
    .Input("m: N * float")
    .Input("v: N * float")
    .Input("variables: N * float")
    .Output("new_m: N * float")
    .Output("new_v: N * float")
    .Output("new_variables: N * float")
    .Attr("N: int >= 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      int n;
      TF_RETURN_IF_ERROR(context->GetAttr("N", &n));
      for (int k = 0; k < n; ++k)
        for (int out = 0; out < 3; ++out) context->set_output(out * n + k, context->input(4 + k));
      return ::tensorflow::OkStatus();
    })
    .Doc("Keras' Adam update of N float32 variables from dense gradients: the new m, v and variables.");

REGISTER_OP("CharRnnAdamSlices")
    .Input("alpha: float")
    .Input("epsilon: float")
    .Input("one_minus_beta_1: float")
    .Input("one_minus_beta_2: float")
    .Input("values: float")
    .Input("indices: Tindices")
    .Input("m: float")
    .Input("v: float")
    .Input("variable: float")
    .Output("new_m: float")
    .Output("new_v: float")
    .Output("new_variable: float")
    .Attr("Tindices: {int32, int64}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      for (int out = 0; out < 3; ++out) context->set_output(out, context->input(8));
      return ::tensorflow::OkStatus();
    })
    .Doc("Keras' Adam update of one float32 [rows, width] variable from a gradient given as IndexedSlices "
         "(values [slices, width], row indices [slices]): the new m, v and variable.");

REGISTER_KERNEL_BUILDER(Name("CharRnnAdam").Device(::tensorflow::DEVICE_CPU), tf_charrnn::AdamOp);
REGISTER_KERNEL_BUILDER(Name("CharRnnAdamSlices").Device(::tensorflow::DEVICE_CPU).TypeConstraint<int32_t>("Tindices"),
                        tf_charrnn::AdamSlicesOp<int32_t>);
REGISTER_KERNEL_BUILDER(Name("CharRnnAdamSlices").Device(::tensorflow::DEVICE_CPU).TypeConstraint<int64_t>("Tindices"),
                        tf_charrnn::AdamSlicesOp<int64_t>);
