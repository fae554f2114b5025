/*
 * simd.h - vector activations shared by the CPU kernels (gemm_kernels.c, ops_conv.c): AVX-512 and
 * AVX2 versions of dp_cpu_act's scalar code (ops_eltwise.c). x86-64 GCC only; each function carries
 * its own target attribute, so the including file needs no ISA flags.
 */
#ifndef DISOPT_CPU_SIMD_H
#define DISOPT_CPU_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__)
#define DP_HAVE_SIMD 1
#include <immintrin.h>

#include "cpu.h"

/* bias + activation on a register, the same operations in the same order as dp_cpu_act's scalar
 * code (ops_eltwise.c: Cephes expf clamped to [-87.3, 80], no FMA contraction) */
#define EXP_POLY(V, MUL, ADD, SET)                                                                                     \
    ADD(MUL(ADD(MUL(ADD(MUL(ADD(MUL(ADD(MUL(SET(1.9875691500E-4f), V), SET(1.3981999507E-3f)), V),                     \
                                SET(8.3334519073E-3f)),                                                                \
                            V),                                                                                        \
                        SET(4.1665795894E-2f)),                                                                        \
                    V),                                                                                                \
                SET(1.6666665459E-1f)),                                                                                \
            V),                                                                                                        \
        SET(5.0000001201E-1f))

__attribute__((target("avx512f,fma"))) static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    x = _mm512_min_ps(x, _mm512_set1_ps(80.0f));
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(fx, _mm512_set1_ps(0.693359375f)));
    r = _mm512_add_ps(r, _mm512_mul_ps(fx, _mm512_set1_ps(2.12194440e-4f)));
    __m512 z = _mm512_mul_ps(r, r);
    __m512 y = EXP_POLY(r, _mm512_mul_ps, _mm512_add_ps, _mm512_set1_ps);
    y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(y, z), r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

__attribute__((target("avx512f,fma"))) static inline __m512 act512(__m512 v, dp_act act) {
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (act) {
    case DP_ACT_RELU:
        return _mm512_max_ps(v, _mm512_setzero_ps());
    case DP_ACT_SIGMOID:
        return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
    case DP_ACT_SWISH:
        return _mm512_mul_ps(v, _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), v)))));
    default:
        return v;
    }
}

__attribute__((target("avx2,fma"))) static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    x = _mm256_min_ps(x, _mm256_set1_ps(80.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375f)));
    r = _mm256_add_ps(r, _mm256_mul_ps(fx, _mm256_set1_ps(2.12194440e-4f)));
    __m256 z = _mm256_mul_ps(r, r);
    __m256 y = EXP_POLY(r, _mm256_mul_ps, _mm256_add_ps, _mm256_set1_ps);
    y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) static inline __m256 act256(__m256 v, dp_act act) {
    const __m256 one = _mm256_set1_ps(1.0f);
    switch (act) {
    case DP_ACT_RELU:
        return _mm256_max_ps(v, _mm256_setzero_ps());
    case DP_ACT_SIGMOID:
        return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
    case DP_ACT_SWISH:
        return _mm256_mul_ps(v, _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v)))));
    default:
        return v;
    }
}

__attribute__((target("avx2,fma"))) static inline __m256i dp_mask8(int n) { /* lanes 0..n-1 set */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

#endif
#endif
