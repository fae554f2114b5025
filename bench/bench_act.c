/*
 * bench_act [ROUNDS] - throughput of the vector activations (core/cpu/simd.h: act512_n / act256_n, 4 vectors
 * interleaved, as the depthwise pass and the GEMM epilogue call them) on one L1-resident buffer of 4096
 * floats in [-4.8, 4.8], one thread: ns per element for swish and sigmoid on each ISA this CPU has. Header-only
 * code, so building this file against an older tree's simd.h times the older activations (issue 9's A/B).
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
    }
    free(x);
#else
    (void)argc, (void)argv;
    printf("no x86-64 vector code in this build: nothing to time\n");
#endif
    return 0;
}
