/*
 * bench_act [ROUNDS] - throughput of the vector activations (core/cpu/simd.h: act512_n / act256_n, 4 vectors
 * interleaved, as the depthwise pass and the GEMM epilogue call them) on one L1-resident buffer of 4096
 * floats in [-4.8, 4.8], one thread: ns per element for swish and sigmoid on each ISA this CPU has. Header-only
 * code, so building this file against an older tree's simd.h times the older activations (issue 9's A/B).
 * "swish-nt" times, for comparison only, the same expf followed by rcp14 + two Newton steps and a multiply
 * instead of the division (not the product's bits: it shows whether the divider limits this CPU).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 199309L
#endif
#include "simd.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NEL 4096
#define REPS 20000

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fill(float *x) {
    for (int i = 0; i < NEL; i++) x[i] = 0.1f * (float)(i % 97) - 4.8f;
}

#ifdef DP_HAVE_SIMD
/* each pass feeds its output back (minus 0.25, so values stay in range): the work cannot be skipped */
__attribute__((target("avx512f,fma"))) static void run512(float *x, dp_act act) {
    for (int r = 0; r < REPS; r++)
        for (int i = 0; i < NEL; i += 64) {
            __m512 v[4];
            for (int j = 0; j < 4; j++) v[j] = _mm512_load_ps(x + i + 16 * j);
            act512_n(v, 4, act);
            for (int j = 0; j < 4; j++) _mm512_store_ps(x + i + 16 * j, _mm512_sub_ps(v[j], _mm512_set1_ps(0.25f)));
        }
}

#ifdef DP_ROUND512
/* act512_n's swish with the division replaced by rcp14 + two Newton steps + a multiply (timing only) */
__attribute__((target("avx512f,fma"))) static void run512_newton(float *x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int r = 0; r < REPS; r++)
        for (int i = 0; i < NEL; i += 64) {
            __m512 v[4], d[4], y[4];
            for (int j = 0; j < 4; j++) v[j] = _mm512_load_ps(x + i + 16 * j);
            for (int j = 0; j < 4; j++) {
                const __m512 u = _mm512_min_ps(_mm512_max_ps(v[j], _mm512_set1_ps(-80.0f)), _mm512_set1_ps(87.3f));
                const __m512 fx = DP_ROUND512(_mm512_mul_ps(u, _mm512_set1_ps(-1.44269504088896341f)));
                __m512 rr = _mm512_fnmsub_ps(fx, _mm512_set1_ps(0.693359375f), u);
                rr = _mm512_fmadd_ps(fx, _mm512_set1_ps(2.12194440e-4f), rr);
                const __m512 z = _mm512_mul_ps(rr, rr);
                __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500E-4f), rr, _mm512_set1_ps(1.3981999507E-3f));
                p = _mm512_fmadd_ps(p, rr, _mm512_set1_ps(8.3334519073E-3f));
                p = _mm512_fmadd_ps(p, rr, _mm512_set1_ps(4.1665795894E-2f));
                p = _mm512_fmadd_ps(p, rr, _mm512_set1_ps(1.6666665459E-1f));
                p = _mm512_fmadd_ps(p, rr, _mm512_set1_ps(5.0000001201E-1f));
                p = _mm512_add_ps(_mm512_fmadd_ps(p, z, rr), one);
                d[j] = _mm512_add_ps(one, _mm512_scalef_ps(p, fx));
            }
            for (int j = 0; j < 4; j++) y[j] = _mm512_rcp14_ps(d[j]);
            for (int j = 0; j < 4; j++) y[j] = _mm512_fmadd_ps(y[j], _mm512_fnmadd_ps(d[j], y[j], one), y[j]);
            for (int j = 0; j < 4; j++) y[j] = _mm512_fmadd_ps(y[j], _mm512_fnmadd_ps(d[j], y[j], one), y[j]);
            for (int j = 0; j < 4; j++) _mm512_store_ps(x + i + 16 * j, _mm512_sub_ps(_mm512_mul_ps(v[j], y[j]), _mm512_set1_ps(0.25f)));
        }
}

#endif

__attribute__((target("avx2,fma"))) static void run256(float *x, dp_act act) {
    for (int r = 0; r < REPS; r++)
        for (int i = 0; i < NEL; i += 32) {
            __m256 v[4];
            for (int j = 0; j < 4; j++) v[j] = _mm256_load_ps(x + i + 8 * j);
            act256_n(v, 4, act);
            for (int j = 0; j < 4; j++) _mm256_store_ps(x + i + 8 * j, _mm256_sub_ps(v[j], _mm256_set1_ps(0.25f)));
        }
}
#endif

int main(int argc, char **argv) {
#ifdef DP_HAVE_SIMD
    const int rounds = argc > 1 ? atoi(argv[1]) : 3;
    float *x = aligned_alloc(64, NEL * sizeof(float));
    if (!x || rounds < 1) return 1;
    __builtin_cpu_init();
    const int has512 = __builtin_cpu_supports("avx512f"), has256 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    printf("# ns per element, %d floats x %d passes, 4 vectors interleaved, 1 thread\n", NEL, REPS);
    for (int r = 0; r < rounds; r++) {
        const dp_act acts[2] = {DP_ACT_SWISH, DP_ACT_SIGMOID};
        for (int a = 0; a < 2; a++) {
            const char *nm = a ? "sigmoid" : "swish";
            double t0, t;
            if (has512) {
                fill(x), t0 = now_s(), run512(x, acts[a]), t = now_s() - t0;
                printf("round %d  avx512 %-7s %.3f ns  (x[7] %g)\n", r + 1, nm, t / NEL / REPS * 1e9, x[7]);
            }
            if (has256) {
                fill(x), t0 = now_s(), run256(x, acts[a]), t = now_s() - t0;
                printf("round %d  avx2   %-7s %.3f ns  (x[7] %g)\n", r + 1, nm, t / NEL / REPS * 1e9, x[7]);
            }
        }
#ifdef DP_ROUND512 /* this tree's simd.h (FMA expf); an older one lacks the macros used above */
        if (has512) {
            double t0;
            fill(x), t0 = now_s(), run512_newton(x);
            printf("round %d  avx512 swish-nt %.3f ns  (x[7] %g)\n", r + 1, (now_s() - t0) / NEL / REPS * 1e9, x[7]);
        }
#endif
    }
    free(x);
#else
    (void)argc, (void)argv;
    printf("no x86-64 vector code in this build: nothing to time\n");
#endif
    return 0;
}
