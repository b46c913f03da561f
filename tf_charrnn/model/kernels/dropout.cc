// CharRnnDropout / CharRnnDropoutGrad: dropout in one pass over the tensor, bit for bit what
// tf.nn.experimental.stateless_dropout (Keras' Dropout on TensorFlow) computes from the same seed.
//
// TensorFlow's dropout is four ops forward (StatelessRandomUniformV2, GreaterEqual, Mul, SelectV2) and two
// backward, and its Philox generator runs one counter at a time: on a 2-core CPU they cost as much as an
// LSTM layer's forward recurrence at 2 x 128 units. Here the same Philox4x32-10 stream (key and counter
// from StatelessRandomGetKeyCounter, group g of four numbers from counter + g, as FillPhiloxRandom fills
// StatelessRandomUniformV2's output) runs 16 counters at once in vector registers, and the uniform number,
// the keep mask and the scaling are applied as it is made:
//   float32:  u = (bits & 0x7fffff) / 2^23           (Uint32ToFloat)
//   bfloat16: u = (bits & 0x7f) / 2^7                 (Uint16ToGfloat16 of the low 16 bits)
//   keep = u >= rate;  y = keep ? x * scale : 0;  the gradient dx = keep ? dy * scale : 0,
// with rate and scale the tensors of x's dtype that stateless_dropout makes (rate, 1 / (1 - rate)).
#include <algorithm>
#include <cstdint>
#include <climits>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define TF_CHARRNN_DROPOUT_AVX512 1
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/random_ops_util.h"

namespace tf_charrnn {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

constexpr int kCounters = 16;                 // Philox counters computed together (one vector of each word)
constexpr int kGroupValues = 4;               // uint32 values per Philox counter
constexpr int64_t kChunk = kCounters * kGroupValues;
constexpr int64_t kMinElementsPerShard = 1 << 15;  // below this a thread hand-off costs more than it saves
// The random bits UniformDistribution<PhiloxRandom, T> keeps of a uint32, and the value of their unit.
template <typename T>
constexpr uint32_t kMantissa = 0x7fffffu;
template <>
constexpr uint32_t kMantissa<::tensorflow::bfloat16> = 0x7fu;
template <typename T>
constexpr float kUnit = 1.0f / (1 << 23);
template <>
constexpr float kUnit<::tensorflow::bfloat16> = 1.0f / (1 << 7);

// The counters of kCounters consecutive groups from `base` + `first_group` (as PhiloxRandom::Skip adds,
// carries included): word w of group `lane` in c[w][lane].
void Counters(const ::tensorflow::random::PhiloxRandom& base, int64_t first_group,
              uint32_t (&c)[kGroupValues][kCounters]) {
  ::tensorflow::random::PhiloxRandom first = base;
  first.Skip(first_group);
  const auto& counter = first.counter();
  const bool carries = counter[0] > UINT32_MAX - (kCounters - 1);
  for (int lane = 0; lane < kCounters; ++lane) {
    ::tensorflow::random::PhiloxRandom generator = first;
    if (carries) generator.Skip(lane);  // rare: the low word wraps within the block
    for (int word = 0; word < kGroupValues; ++word) c[word][lane] = generator.counter()[word];
    if (!carries) c[0][lane] += lane;
  }
}

#ifdef TF_CHARRNN_DROPOUT_AVX512
// Philox4x32-10 of kCounters consecutive groups (PhiloxRandom::operator()), eight groups per vector, each
// word in the low half of a 64-bit lane (vpmuludq reads only that half, so the high halves may hold
// anything): out[i] is element 4 * first_group + i of the stream.
void PhiloxBlock(const ::tensorflow::random::PhiloxRandom& base, int64_t first_group, uint32_t (&out)[kChunk]) {
  uint32_t counters[kGroupValues][kCounters];
  Counters(base, first_group, counters);
  const __m512i multiplier0 = _mm512_set1_epi64(0xD2511F53u), multiplier1 = _mm512_set1_epi64(0xCD9E8D57u);
  const __m512i interleave_low = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
  const __m512i interleave_high = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  for (int half = 0; half < kCounters / 8; ++half) {
    __m512i c[kGroupValues];
    for (int word = 0; word < kGroupValues; ++word)
      c[word] = _mm512_cvtepu32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(counters[word] + 8 * half)));
    uint32_t k0 = base.key()[0], k1 = base.key()[1];
    for (int round = 0; round < 10; ++round) {
      const __m512i product0 = _mm512_mul_epu32(c[0], multiplier0);
      const __m512i product1 = _mm512_mul_epu32(c[2], multiplier1);
      c[0] = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(product1, 32), c[1]), _mm512_set1_epi64(k0));
      c[2] = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(product0, 32), c[3]), _mm512_set1_epi64(k1));
      c[1] = product1;
      c[3] = product0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    // Per group, words 0 and 1 as one 64-bit value and words 2 and 3 as another, then groups in order.
    const __m512i low_words = _mm512_set1_epi64(0xFFFFFFFFu);
    const __m512i words01 = _mm512_or_si512(_mm512_and_si512(c[0], low_words), _mm512_slli_epi64(c[1], 32));
    const __m512i words23 = _mm512_or_si512(_mm512_and_si512(c[2], low_words), _mm512_slli_epi64(c[3], 32));
    _mm512_storeu_si512(out + 32 * half, _mm512_permutex2var_epi64(words01, interleave_low, words23));
    _mm512_storeu_si512(out + 32 * half + 16, _mm512_permutex2var_epi64(words01, interleave_high, words23));
  }
}
#else
// Philox4x32-10 of kCounters consecutive groups (PhiloxRandom::operator()): out[i] is element
// 4 * first_group + i of the stream.
void PhiloxBlock(const ::tensorflow::random::PhiloxRandom& base, int64_t first_group, uint32_t (&out)[kChunk]) {
  uint32_t c[kGroupValues][kCounters];
  Counters(base, first_group, c);
  uint32_t k0 = base.key()[0], k1 = base.key()[1];
  for (int round = 0; round < 10; ++round) {
    for (int lane = 0; lane < kCounters; ++lane) {
      const uint64_t product0 = static_cast<uint64_t>(0xD2511F53u) * c[0][lane];
      const uint64_t product1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2][lane];
      c[0][lane] = static_cast<uint32_t>(product1 >> 32) ^ c[1][lane] ^ k0;
      c[2][lane] = static_cast<uint32_t>(product0 >> 32) ^ c[3][lane] ^ k1;
      c[1][lane] = static_cast<uint32_t>(product1);
      c[3][lane] = static_cast<uint32_t>(product0);
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int lane = 0; lane < kCounters; ++lane)
    for (int word = 0; word < kGroupValues; ++word) out[kGroupValues * lane + word] = c[word][lane];
}
#endif

// The uniform number in [0, 1) that UniformDistribution<PhiloxRandom, T> makes of `bits`, as a float.
template <typename T>
inline float Uniform(uint32_t bits);
template <>
inline float Uniform<float>(uint32_t bits) {
  return static_cast<float>(bits & kMantissa<float>) * kUnit<float>;
}
template <>
inline float Uniform<::tensorflow::bfloat16>(uint32_t bits) {
  return static_cast<float>(bits & kMantissa<::tensorflow::bfloat16>) * kUnit<::tensorflow::bfloat16>;
}

// y = keep ? x * scale : 0 (T's own product: TensorFlow's Mul) for elements [from, n).
template <typename T>
inline void ScaleKept(const bool* keep, int64_t from, int64_t n, T scale, const T* x, T* y) {
  for (int64_t i = from; i < n; ++i) y[i] = keep[i] ? static_cast<T>(x[i] * scale) : T(0);
}

#ifdef TF_CHARRNN_DROPOUT_AVX512
// 16 elements of T as floats, and back (bfloat16 rounded to nearest even, NaN kept a quiet NaN, as Eigen's
// conversion): a float product of two bfloat16 values is exact, so rounding it once is T's own product.
inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
inline void Store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline __m512 Load16(const ::tensorflow::bfloat16* p) {
  const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}
inline void Store16(::tensorflow::bfloat16* p, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
}

// Dropout of elements [0, n) from their stream bits: keep[i] = Uniform<T>(bits[i]) >= rate.
template <typename T>
void Drop(const uint32_t* bits, int64_t n, float rate, T scale, const T* x, T* y, bool* keep) {
  const __m512 threshold = _mm512_set1_ps(rate), factor = _mm512_set1_ps(static_cast<float>(scale));
  const __m512i mantissa = _mm512_set1_epi32(kMantissa<T>);
  const __m512 unit = _mm512_set1_ps(kUnit<T>);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i random = _mm512_and_si512(_mm512_loadu_si512(bits + i), mantissa);
    const __mmask16 kept = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_cvtepi32_ps(random), unit), threshold, _CMP_GE_OQ);
    Store16(y + i, _mm512_maskz_mul_ps(kept, Load16(x + i), factor));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + i), _mm_maskz_set1_epi8(kept, 1));
  }
  for (; i < n; ++i) keep[i] = Uniform<T>(bits[i]) >= rate;
  ScaleKept(keep, n - n % 16, n, scale, x, y);
}

// dx = keep ? dy * scale : 0 for elements [0, n).
template <typename T>
void Undrop(const bool* keep, int64_t n, T scale, const T* dy, T* dx) {
  const __m512 factor = _mm512_set1_ps(static_cast<float>(scale));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i flags = _mm_loadu_si128(reinterpret_cast<const __m128i*>(keep + i));
    Store16(dx + i, _mm512_maskz_mul_ps(_mm_test_epi8_mask(flags, flags), Load16(dy + i), factor));
  }
  ScaleKept(keep, i, n, scale, dy, dx);
}
#else
template <typename T>
void Drop(const uint32_t* bits, int64_t n, float rate, T scale, const T* x, T* y, bool* keep) {
  for (int64_t i = 0; i < n; ++i) keep[i] = Uniform<T>(bits[i]) >= rate;
  ScaleKept(keep, 0, n, scale, x, y);
}

template <typename T>
void Undrop(const bool* keep, int64_t n, T scale, const T* dy, T* dx) {
  ScaleKept(keep, 0, n, scale, dy, dx);
}
#endif

// Runs work(first, last) over [0, n) in one contiguous shard per intra-op thread, chunk-aligned.
template <typename Work>
void ShardElements(OpKernelContext* context, int64_t n, const Work& work) {
  auto* threads = context->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t shards = std::max<int64_t>(1, std::min<int64_t>(threads->NumThreads(), n / kMinElementsPerShard));
  if (shards <= 1) return work(0, n);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  threads->ParallelFor(shards, ::tsl::thread::ThreadPool::SchedulingParams::Fixed(1),
                       [&work, n, chunks, shards](int64_t first, int64_t last) {
                         for (int64_t shard = first; shard < last; ++shard)
                           work(std::min(n, shard * chunks / shards * kChunk),
                                std::min(n, (shard + 1) * chunks / shards * kChunk));
                       });
}

::tensorflow::Status CheckScalar(const char* name, const Tensor& tensor) {
  if (tensor.dims() != 0) return errors::InvalidArgument(name, " must be a scalar, got ", tensor.shape().DebugString());
  return ::tensorflow::OkStatus();
}

template <typename T>
class DropoutOp : public OpKernel {
 public:
  explicit DropoutOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& key = context->input(1);
    const Tensor& counter = context->input(2);
    OP_REQUIRES(context, key.NumElements() == 1 && counter.NumElements() == 2,
                errors::InvalidArgument("key must hold 1 and counter 2 uint64 values (Philox), got ",
                                        key.NumElements(), " and ", counter.NumElements()));
    OP_REQUIRES_OK(context, CheckScalar("rate", context->input(3)));
    OP_REQUIRES_OK(context, CheckScalar("scale", context->input(4)));
    const float rate = static_cast<float>(context->input(3).scalar<T>()());
    const T scale = context->input(4).scalar<T>()();
    Tensor* y = nullptr;
    Tensor* keep = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(context, context->allocate_output(1, x.shape(), &keep));
    const ::tensorflow::random::PhiloxRandom base = ::tensorflow::GetPhiloxRandomFromCounterKeyMem(
        counter.flat<uint64_t>().data(), key.flat<uint64_t>().data());
    const T* in = x.flat<T>().data();
    T* out = y->flat<T>().data();
    bool* kept = keep->flat<bool>().data();
    ShardElements(context, x.NumElements(), [&](int64_t first, int64_t last) {
      uint32_t bits[kChunk];
      for (int64_t start = first; start < last; start += kChunk) {
        PhiloxBlock(base, start / kGroupValues, bits);
        Drop(bits, std::min(kChunk, last - start), rate, scale, in + start, out + start, kept + start);
      }
    });
  }
};

template <typename T>
class DropoutGradOp : public OpKernel {
 public:
  explicit DropoutGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& dy = context->input(0);
    const Tensor& keep = context->input(1);
    OP_REQUIRES(context, dy.shape() == keep.shape(),
                errors::InvalidArgument("dy ", dy.shape().DebugString(), " and keep ", keep.shape().DebugString(),
                                        " must have the same shape"));
    OP_REQUIRES_OK(context, CheckScalar("scale", context->input(2)));
    const T scale = context->input(2).scalar<T>()();
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, dy.shape(), &dx));
    const T* in = dy.flat<T>().data();
    const bool* kept = keep.flat<bool>().data();
    T* out = dx->flat<T>().data();
    ShardElements(context, dy.NumElements(), [&](int64_t first, int64_t last) {
      Undrop(kept + first, last - first, scale, in + first, out + first);
    });
  }
};

}  // namespace
}  // namespace tf_charrnn

REGISTER_OP("CharRnnDropout")
    .Input("x: T")
    .Input("key: uint64")
    .Input("counter: uint64")
    .Input("rate: T")
    .Input("scale: T")
    .Output("y: T")
    .Output("keep: bool")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      context->set_output(0, context->input(0));
      context->set_output(1, context->input(0));
      return ::tensorflow::OkStatus();
    })
    .Doc("Dropout of x with StatelessRandomUniformV2's Philox stream from key and counter: keep = u >= rate, "
         "y = keep ? x * scale : 0 (stateless_dropout's values); keep is what the gradient needs.");

REGISTER_OP("CharRnnDropoutGrad")
    .Input("dy: T")
    .Input("keep: bool")
    .Input("scale: T")
    .Output("dx: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* context) {
      context->set_output(0, context->input(0));
      return ::tensorflow::OkStatus();
    })
    .Doc("Backward of CharRnnDropout: dx = keep ? dy * scale : 0.");

REGISTER_KERNEL_BUILDER(Name("CharRnnDropout").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        tf_charrnn::DropoutOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("CharRnnDropout").Device(::tensorflow::DEVICE_CPU).TypeConstraint<::tensorflow::bfloat16>("T"),
    tf_charrnn::DropoutOp<::tensorflow::bfloat16>);
REGISTER_KERNEL_BUILDER(Name("CharRnnDropoutGrad").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        tf_charrnn::DropoutGradOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("CharRnnDropoutGrad").Device(::tensorflow::DEVICE_CPU).TypeConstraint<::tensorflow::bfloat16>("T"),
    tf_charrnn::DropoutGradOp<::tensorflow::bfloat16>);
