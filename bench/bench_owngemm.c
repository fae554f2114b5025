/*
 * bench_owngemm [PANEL] [ROUNDS] - single-thread throughput of our own SGEMM (core/cpu/gemm_kernels.c,
 * the ISA this CPU dispatches to) on the shapes of DisOptNet's 1x1 convolutions, called as the CPU
 * backend calls it: C[M x N] = A[M x K] * B[K x N] over column panels of PANEL pixels (default 1024) of
 * a plane of P pixels (ldb = ldc = P). Prints GFLOP/s per shape for each of ROUNDS rounds (default 3;
 * best of 5 runs per round) and a checksum, so that two builds can be compared and unsteady runs seen
 * (bench_gemm does the same for BLIS).
 */
#include "cpu.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

static float *falloc(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes ? bytes : 64);
}

int main(int argc, char **argv) {
    const int isa = dp_gemm_isa_detect();
    if (isa == DP_ISA_BLAS) {
        printf("no AVX2/AVX-512 kernel on this CPU: nothing to time\n");
        return 0;
    }
    const int mr = dp_gemm_mr(isa), nr = dp_gemm_nr(isa);
    const int panel = argc > 1 ? atoi(argv[1]) : 1024, rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (panel < 1 || rounds < 1) {
        fprintf(stderr, "usage: bench_owngemm [PANEL] [ROUNDS]\n");
        return 2;
    }
    /* M, K, plane (pixels): expand/project convs of the B3 encoder, the decoder's 1x1 convs */
    static const int shapes[][3] = {{144, 24, 65536},  {24, 144, 65536},  {192, 32, 16384}, {48, 192, 4096},
                                    {576, 96, 4096},   {816, 136, 1024},  {136, 816, 1024}, {1392, 232, 1024},
                                    {232, 1392, 1024}, {256, 1280, 1024}, {256, 304, 16384}};
    printf("# own SGEMM, ISA %s (MR x NR = %d x %d), panel %d, 1 thread\n", isa == DP_ISA_AVX512 ? "AVX-512" : "AVX2",
           mr, nr, panel);
    printf("%6s %6s %7s  GFLOP/s per round\n", "M", "K", "plane");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int M = shapes[s][0], K = shapes[s][1], P = shapes[s][2];
        float *A = falloc((size_t)M * K), *B = falloc((size_t)K * P), *C = falloc((size_t)M * P);
        float *Ap = falloc(dp_gemm_packed_a_floats(M, K, mr)), *Bp = falloc((size_t)K * (size_t)(panel + nr));
        if (!A || !B || !C || !Ap || !Bp) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = 1e-3f * (float)(i % 13) - 0.005f;
        for (size_t i = 0; i < (size_t)K * P; i++) B[i] = 1e-3f * (float)(i % 7) - 0.003f;
        dp_gemm_pack_a(A, M, K, mr, Ap);
        printf("%6d %6d %7d ", M, K, P);
        for (int r = 0; r < rounds; r++) {
            double best = 1e30;
            for (int run = 0; run < 5; run++) {
                const double t0 = dp_now_s();
                for (int p0 = 0; p0 < P; p0 += panel) {
                    const int n = P - p0 < panel ? P - p0 : panel;
                    dp_gemm_run(isa, M, n, K, Ap, B + p0, P, C + p0, P, Bp, NULL, DP_ACT_NONE, NULL);
                }
                const double t = dp_now_s() - t0;
                if (t < best) best = t;
            }
            printf(" %7.1f", 2.0 * M * K * P / best / 1e9);
        }
        double cs = 0;
        for (size_t i = 0; i < (size_t)M * P; i += 97) cs += C[i];
        printf("   checksum %.9g\n", cs);
        free(A), free(B), free(C), free(Ap), free(Bp);
    }
    return 0;
}
