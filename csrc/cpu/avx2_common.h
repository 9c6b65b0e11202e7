// AVX2 horizontal reductions shared by the kernel files that compile their functions with target attributes
// (int4_avx2.cpp, int4_avx2_x16.cpp, int8_avx2.cpp, binary_avx2.cpp). Their target is the common subset
// "avx2,fma", so they inline into any of those files' functions. (Each file keeps its own `unroll`: the lambdas
// it calls carry the file's target, "avx2,fma,f16c" for int4, and GCC inlines a callee only into a caller with
// all its features.)
#pragma once

#if defined(__x86_64__)

#include <immintrin.h>

#include <cstdint>

#define PYCOMP_AVX2_COMMON inline __attribute__((always_inline, target("avx2,fma")))

namespace pycomp::cpu::avx2 {

PYCOMP_AVX2_COMMON float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

PYCOMP_AVX2_COMMON int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

PYCOMP_AVX2_COMMON float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace pycomp::cpu::avx2

#endif  // __x86_64__
