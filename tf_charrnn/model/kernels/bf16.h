// Shared by the bfloat16 kernels (lstm_sequence_bf16.cc, model_step.cc): rounding to bfloat16, bfloat16
// rows, and register tiles of a [rows, k] x [k, 64] product over weights in bfloat16 pairs on AVX512-BF16's
// vdpbf16ps (float32 accumulation). Only for a compiler that targets AVX512-BF16.
#ifndef TF_CHARRNN_KERNELS_BF16_H_
#define TF_CHARRNN_KERNELS_BF16_H_
#ifdef __AVX512BF16__

#include <immintrin.h>

#include <cstring>

#include "lstm.h"

namespace tf_charrnn {

using Bf16 = ::tensorflow::bfloat16;

// Round to nearest even, as TensorFlow's casts and vcvtneps2bf16 do.
inline uint16_t ToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}
inline uint32_t Pair(float even, float odd) { return ToBf16(even) | static_cast<uint32_t>(ToBf16(odd)) << 16; }

inline __m512 LoadBf16(const uint16_t* p) {
  return _mm512_cvtpbh_ps(reinterpret_cast<__m256bh>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
}
inline void StoreBf16(uint16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
}

struct Rows16 {
  const uint16_t* data;
  int64_t stride;
  const uint16_t* at(int row) const { return data + row * stride; }
};
struct MutableRows16 {
  uint16_t* data;
  int64_t stride;
  uint16_t* at(int row) const { return data + row * stride; }
};

inline const uint16_t* Bits(const Tensor& tensor) { return reinterpret_cast<const uint16_t*>(tensor.flat<Bf16>().data()); }
inline uint16_t* Bits(Tensor* tensor) { return reinterpret_cast<uint16_t*>(tensor->flat<Bf16>().data()); }

// acc[r][v] += sum_k a[r * lda + k] * w[k, v * kLanes ...] over k in pairs: w holds, per pair of rows k,
// k + 1, kWidth columns of (w[k], w[k + 1]) bfloat16 pairs. `depth` is even.
template <int Rows>
inline void MultiplyTileBf16(const uint16_t* a, int64_t lda, int depth, const uint32_t* w,
                             __m512 (&acc)[kMaxRows][kVectors]) {
  for (int k = 0; k < depth; k += 2) {
    const uint32_t* wk = w + static_cast<int64_t>(k / 2) * kWidth;
    const __m512bh w0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wk)),
                   w1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wk + kLanes)),
                   w2 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wk + 2 * kLanes)),
                   w3 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wk + 3 * kLanes));
#pragma GCC unroll 6
    for (int r = 0; r < Rows; ++r) {
      uint32_t pair;
      std::memcpy(&pair, a + r * lda + k, sizeof(pair));
      const __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair)));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, w1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], x, w2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], x, w3);
    }
  }
}

}  // namespace tf_charrnn

#endif  // __AVX512BF16__
#endif  // TF_CHARRNN_KERNELS_BF16_H_
