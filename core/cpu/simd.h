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

/* The activations on N vectors at once (N a compile-time constant after inlining, at most DP_ACT_NMAX),
 * every step applied to all N before the next: one vector's swish is a chain of ~20 dependent
 * operations, and GCC emits an inlined chain after chain, so a loop over single vectors ran at the
 * chain's latency (Zen's FP scheduler holds about one chain). Each element gets exactly the operations
 * of dp_cpu_act's scalar code (ops_eltwise.c: act_denominator, then one division), so the bits are the
 * same on every ISA (test_ops: test_act_n).
 *
 * History (issue 9): this was Cephes' expf without FMA, then 1 / d by rcp14 + two Newton steps +
 * Markstein's correction (~41 operations per vector on AVX-512), then a multiply by v. Now: FMAs in the
 * range reduction and the polynomial, vscalefps for 2^n (AVX-512; AVX2 builds 2^n from the integer),
 * and swish = v / d as one division: ~18 operations and a division, which the divider runs beside the
 * other pipes when 4 vectors are interleaved (swish throughput on AVX-512, bench_act: 0.34 -> 0.14
 * ns/element on a Zen 5 core, 0.61-0.85 -> 0.31-0.36 on the lent Xeon, where rcp14 + Newton steps in place
 * of the division took 0.36-0.56; bench/RESULTS.md §5). */
#define DP_ACT_NMAX 4
#define DP_ACTN_STEP(stmt) _Pragma("GCC unroll 4") for (int i = 0; i < N; i++) stmt

#define DP_ACTN_BODY(VT, SET1, MAX, MIN, MUL, ADD, ROUND, FMA, FNMSUB, SCALE, DIV, ZERO)                                \
    if (act == DP_ACT_RELU) {                                                                                          \
        DP_ACTN_STEP(v[i] = MAX(v[i], ZERO()));                                                                        \
        return;                                                                                                        \
    }                                                                                                                  \
    if (act != DP_ACT_SWISH && act != DP_ACT_SIGMOID) return;                                                          \
    VT u[DP_ACT_NMAX], fx[DP_ACT_NMAX], r[DP_ACT_NMAX], z[DP_ACT_NMAX], y[DP_ACT_NMAX];                                \
    DP_ACTN_STEP(u[i] = MIN(MAX(v[i], SET1(-80.0f)), SET1(87.3f)));                                                    \
    DP_ACTN_STEP(fx[i] = ROUND(MUL(u[i], SET1(-1.44269504088896341f))));                                               \
    DP_ACTN_STEP(r[i] = FNMSUB(fx[i], SET1(0.693359375f), u[i]));                                                      \
    DP_ACTN_STEP(r[i] = FMA(fx[i], SET1(2.12194440e-4f), r[i]));                                                       \
    DP_ACTN_STEP(z[i] = MUL(r[i], r[i]));                                                                              \
    DP_ACTN_STEP(y[i] = FMA(SET1(1.9875691500E-4f), r[i], SET1(1.3981999507E-3f)));                                    \
    DP_ACTN_STEP(y[i] = FMA(y[i], r[i], SET1(8.3334519073E-3f)));                                                      \
    DP_ACTN_STEP(y[i] = FMA(y[i], r[i], SET1(4.1665795894E-2f)));                                                      \
    DP_ACTN_STEP(y[i] = FMA(y[i], r[i], SET1(1.6666665459E-1f)));                                                      \
    DP_ACTN_STEP(y[i] = FMA(y[i], r[i], SET1(5.0000001201E-1f)));                                                      \
    DP_ACTN_STEP(y[i] = ADD(FMA(y[i], z[i], r[i]), SET1(1.0f)));                                                       \
    DP_ACTN_STEP(y[i] = ADD(SET1(1.0f), SCALE(y[i], fx[i])));                                                          \
    if (act == DP_ACT_SWISH) {                                                                                         \
        DP_ACTN_STEP(v[i] = DIV(v[i], y[i]));                                                                          \
    } else {                                                                                                           \
        DP_ACTN_STEP(v[i] = DIV(SET1(1.0f), y[i]));                                                                    \
    }

#define DP_ROUND512(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define DP_ROUND256(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* y 2^fx, fx integral in [-126, 115] and the product a normal float: exact, like the scalar code's multiply */
#define DP_SCALE256(y, fx)                                                                                             \
    _mm256_mul_ps(y, _mm256_castsi256_ps(                                                                              \
                         _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23)))

/* v[0..N) = act(v[0..N)), bit for bit dp_cpu_act on each element */
__attribute__((target("avx512f,fma"))) static inline __attribute__((always_inline)) void act512_n(__m512 *v,
                                                                                                  const int N,
                                                                                                  const dp_act act) {
    DP_ACTN_BODY(__m512, _mm512_set1_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_add_ps, DP_ROUND512,
                 _mm512_fmadd_ps, _mm512_fnmsub_ps, _mm512_scalef_ps, _mm512_div_ps, _mm512_setzero_ps)
}

__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void act256_n(__m256 *v,
                                                                                               const int N,
                                                                                               const dp_act act) {
    DP_ACTN_BODY(__m256, _mm256_set1_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps, _mm256_add_ps, DP_ROUND256,
                 _mm256_fmadd_ps, _mm256_fnmsub_ps, DP_SCALE256, _mm256_div_ps, _mm256_setzero_ps)
}

/* one vector */
__attribute__((target("avx512f,fma"))) static inline __m512 act512(__m512 v, dp_act act) {
    act512_n(&v, 1, act);
    return v;
}

__attribute__((target("avx2,fma"))) static inline __m256 act256(__m256 v, dp_act act) {
    act256_n(&v, 1, act);
    return v;
}

__attribute__((target("avx2,fma"))) static inline __m256i dp_mask8(int n) { /* lanes 0..n-1 set */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

#endif
#endif
