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

/* 1 / d without a division, bit-identical to it for every float d in [1, 2^116] (the activations
 * divide by 1 + exp(-x), exp clamped to e^80 < 2^116; test_ops checks every such d): an estimate,
 * Newton steps ending in Markstein's correctly rounded one, and the one family that step misses
 * set directly (significand all ones: d = 2^k (2 - 2^-23), 1/d rounds to 2^-(k+1) (1 + 2^-23)).
 * On the Xeon a zmm divide occupies the divider for 10-16 cycles; this is a dozen simple ops. */
__attribute__((target("avx512f,fma"))) static inline __m512 dp_rcp512(__m512 d) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 y = _mm512_rcp14_ps(d); /* relative error < 2^-14 */
    y = _mm512_fmadd_ps(y, _mm512_fnmadd_ps(d, y, one), y);
    y = _mm512_fmadd_ps(y, _mm512_fnmadd_ps(d, y, one), y);
    const __m512i bits = _mm512_castps_si512(d), mant = _mm512_set1_epi32(0x7fffff);
    const __m512i fixed = _mm512_or_si512(
        _mm512_slli_epi32(_mm512_sub_epi32(_mm512_set1_epi32(253), _mm512_srli_epi32(bits, 23)), 23),
        _mm512_set1_epi32(1));
    const __mmask16 ones = _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, mant), mant);
    return _mm512_mask_blend_ps(ones, y, _mm512_castsi512_ps(fixed));
}

__attribute__((target("avx2,fma"))) static inline __m256 dp_rcp256(__m256 d) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 y = _mm256_rcp_ps(d); /* relative error < 1.5 * 2^-12 */
    y = _mm256_fmadd_ps(y, _mm256_fnmadd_ps(d, y, one), y);
    y = _mm256_fmadd_ps(y, _mm256_fnmadd_ps(d, y, one), y);
    y = _mm256_fmadd_ps(y, _mm256_fnmadd_ps(d, y, one), y);
    const __m256i bits = _mm256_castps_si256(d), mant = _mm256_set1_epi32(0x7fffff);
    const __m256i fixed = _mm256_or_si256(
        _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(253), _mm256_srli_epi32(bits, 23)), 23),
        _mm256_set1_epi32(1));
    const __m256i ones = _mm256_cmpeq_epi32(_mm256_and_si256(bits, mant), mant);
    return _mm256_blendv_ps(y, _mm256_castsi256_ps(fixed), _mm256_castsi256_ps(ones));
}

__attribute__((target("avx512f,fma"))) static inline __m512 act512(__m512 v, dp_act act) {
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (act) {
    case DP_ACT_RELU:
        return _mm512_max_ps(v, _mm512_setzero_ps());
    case DP_ACT_SIGMOID:
        return dp_rcp512(_mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
    case DP_ACT_SWISH:
        return _mm512_mul_ps(v, dp_rcp512(_mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), v)))));
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
        return dp_rcp256(_mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
    case DP_ACT_SWISH:
        return _mm256_mul_ps(v, dp_rcp256(_mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v)))));
    default:
        return v;
    }
}

/* The same activations on N vectors at once (N a compile-time constant after inlining, at most
 * DP_ACT_NMAX), every step applied to all N before the next: one vector's swish is a chain of ~40
 * dependent operations (exp's polynomial, the reciprocal's Newton steps), and GCC emits an inlined
 * act256/act512 chain after chain, so a loop over single vectors ran at the chain's latency (Zen's FP
 * scheduler holds about one chain): 28 cycles a vector on the EPYC, where the operations need ~12.
 * Each element gets exactly act256/act512's operations, so the bits are the same. */
#define DP_ACT_NMAX 4
#define DP_ACTN_STEP(stmt) _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) stmt

#define DP_ACTN_BODY(VT, SET1, MAX, MIN, MUL, ADD, SUB, ROUND, CVTI, ADDI, SLLI, CASTIF, ZERO, RCP)                       \
    if (act == DP_ACT_RELU) {                                                                                          \
        DP_ACTN_STEP(v[i] = MAX(v[i], ZERO()));                                                                        \
        return;                                                                                                        \
    }                                                                                                                  \
    if (act != DP_ACT_SWISH && act != DP_ACT_SIGMOID) return;                                                          \
    VT x[DP_ACT_NMAX], fx[DP_ACT_NMAX], r[DP_ACT_NMAX], z[DP_ACT_NMAX], y[DP_ACT_NMAX];                                \
    DP_ACTN_STEP(x[i] = SUB(ZERO(), v[i]));                                                                            \
    DP_ACTN_STEP(x[i] = MAX(x[i], SET1(-87.3f)));                                                                      \
    DP_ACTN_STEP(x[i] = MIN(x[i], SET1(80.0f)));                                                                       \
    DP_ACTN_STEP(fx[i] = ROUND(MUL(x[i], SET1(1.44269504088896341f))));                                                \
    DP_ACTN_STEP(r[i] = SUB(x[i], MUL(fx[i], SET1(0.693359375f))));                                                    \
    DP_ACTN_STEP(r[i] = ADD(r[i], MUL(fx[i], SET1(2.12194440e-4f))));                                                  \
    DP_ACTN_STEP(z[i] = MUL(r[i], r[i]));                                                                              \
    DP_ACTN_STEP(y[i] = ADD(MUL(SET1(1.9875691500E-4f), r[i]), SET1(1.3981999507E-3f)));                               \
    DP_ACTN_STEP(y[i] = ADD(MUL(y[i], r[i]), SET1(8.3334519073E-3f)));                                                 \
    DP_ACTN_STEP(y[i] = ADD(MUL(y[i], r[i]), SET1(4.1665795894E-2f)));                                                 \
    DP_ACTN_STEP(y[i] = ADD(MUL(y[i], r[i]), SET1(1.6666665459E-1f)));                                                 \
    DP_ACTN_STEP(y[i] = ADD(MUL(y[i], r[i]), SET1(5.0000001201E-1f)));                                                 \
    DP_ACTN_STEP(y[i] = ADD(ADD(MUL(y[i], z[i]), r[i]), SET1(1.0f)));                                                  \
    DP_ACTN_STEP(y[i] = MUL(y[i], CASTIF(SLLI(ADDI(CVTI(fx[i]), 127), 23))));                                          \
    DP_ACTN_STEP(y[i] = ADD(SET1(1.0f), y[i]));                                                                        \
    RCP(y, N);                                                                                                         \
    if (act == DP_ACT_SWISH) {                                                                                         \
        DP_ACTN_STEP(v[i] = MUL(v[i], y[i]));                                                                          \
    } else {                                                                                                           \
        DP_ACTN_STEP(v[i] = y[i]);                                                                                     \
    }

/* d[i] = 1 / d[i] for N vectors, interleaved (dp_rcp512 / dp_rcp256 step by step) */
__attribute__((target("avx512f,fma"))) static inline __attribute__((always_inline)) void dp_rcp512_n(__m512 *d,
                                                                                                     const int N) {
    const __m512 one = _mm512_set1_ps(1.0f);
#ifdef DP_RCP512_DIV /* (A/B builds, issue 9: a true division, interleaved, as the AVX2 code does; same bits) */
    DP_ACTN_STEP(d[i] = _mm512_div_ps(one, d[i]));
    return;
#endif
    const __m512i mant = _mm512_set1_epi32(0x7fffff);
    __m512 y[DP_ACT_NMAX];
    DP_ACTN_STEP(y[i] = _mm512_rcp14_ps(d[i]));
    DP_ACTN_STEP(y[i] = _mm512_fmadd_ps(y[i], _mm512_fnmadd_ps(d[i], y[i], one), y[i]));
    DP_ACTN_STEP(y[i] = _mm512_fmadd_ps(y[i], _mm512_fnmadd_ps(d[i], y[i], one), y[i]));
    DP_ACTN_STEP({
        const __m512i bits = _mm512_castps_si512(d[i]);
        const __m512i fixed = _mm512_or_si512(
            _mm512_slli_epi32(_mm512_sub_epi32(_mm512_set1_epi32(253), _mm512_srli_epi32(bits, 23)), 23),
            _mm512_set1_epi32(1));
        const __mmask16 ones = _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, mant), mant);
        d[i] = _mm512_mask_blend_ps(ones, y[i], _mm512_castsi512_ps(fixed));
    });
}

/* AVX2: a true division. Interleaved, the divider works beside the other FP pipes; on the 2-vCPU
 * EPYC it beat dp_rcp256's Newton steps by 10 % of the whole swish (same bits: both are 1/d
 * correctly rounded) */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void dp_rcp256_n(__m256 *d,
                                                                                                  const int N) {
    const __m256 one = _mm256_set1_ps(1.0f);
    DP_ACTN_STEP(d[i] = _mm256_div_ps(one, d[i]));
}

#define DP_ROUND512(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define DP_ROUND256(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define DP_ADDI512(a, k) _mm512_add_epi32(a, _mm512_set1_epi32(k))
#define DP_ADDI256(a, k) _mm256_add_epi32(a, _mm256_set1_epi32(k))

/* v[0..N) = act(v[0..N)), bit for bit act512 / act256 on each */
__attribute__((target("avx512f,fma"))) static inline __attribute__((always_inline)) void act512_n(__m512 *v,
                                                                                                  const int N,
                                                                                                  const dp_act act) {
    DP_ACTN_BODY(__m512, _mm512_set1_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_sub_ps,
                 DP_ROUND512, _mm512_cvtps_epi32, DP_ADDI512, _mm512_slli_epi32, _mm512_castsi512_ps,
                 _mm512_setzero_ps, dp_rcp512_n)
}

__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void act256_n(__m256 *v,
                                                                                               const int N,
                                                                                               const dp_act act) {
    DP_ACTN_BODY(__m256, _mm256_set1_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_add_ps, _mm256_sub_ps,
                 DP_ROUND256, _mm256_cvtps_epi32, DP_ADDI256, _mm256_slli_epi32, _mm256_castsi256_ps,
                 _mm256_setzero_ps, dp_rcp256_n)
}

__attribute__((target("avx2,fma"))) static inline __m256i dp_mask8(int n) { /* lanes 0..n-1 set */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

#endif
#endif
