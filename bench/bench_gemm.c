/*
 * bench_gemm - single-thread GEMM throughput of the BLAS we link (BLIS serial), on the shapes of
 * DisOptNet's 1x1 convolutions: C[M x N] = A[M x K] * B[K x N], row-major, N = a 512-pixel panel
 * of a larger plane (ldb = plane size) as the CPU backend calls it, and N = the whole plane.
 */
#include <blis.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    const int panel = argc > 1 ? atoi(argv[1]) : 512;
    /* M, K, plane (pixels) */
    const int shapes[][3] = {{144, 24, 65536}, {24, 144, 65536}, {192, 32, 16384}, {48, 192, 4096},
                             {816, 136, 1024}, {232, 1392, 1024}, {256, 384, 1024}, {256, 1280, 1024},
                             {256, 304, 16384}, {256, 512, 16384}};
    printf("# BLIS arch: %s\n", bli_arch_string(bli_arch_query_id()));
    printf("%6s %6s %7s %11s%-5d %14s\n", "M", "K", "plane", "GF/s panel", panel, "GF/s whole");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], P = shapes[s][2];
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * P), *C = malloc(sizeof(float) * M * P);
        for (long i = 0; i < (long)M * K; i++) A[i] = 1e-3f * (float)(i % 13) - 0.005f;
        for (long i = 0; i < (long)K * P; i++) B[i] = 1e-3f * (float)(i % 7) - 0.003f;
        float one = 1, zero = 0;
        double flops = 2.0 * M * K * P, best[2] = {1e9, 1e9};
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            for (int p0 = 0; p0 < P; p0 += panel) {
                int n = P - p0 < panel ? P - p0 : panel;
                bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, M, n, K, &one, A, K, 1, B + p0, P, 1, &zero, C + p0, P, 1);
            }
            double t1 = now();
            bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, M, P, K, &one, A, K, 1, B, P, 1, &zero, C, P, 1);
            double t2 = now();
            if (t1 - t0 < best[0]) best[0] = t1 - t0;
            if (t2 - t1 < best[1]) best[1] = t2 - t1;
        }
        printf("%6d %6d %7d %14.1f %14.1f\n", M, K, P, flops / best[0] / 1e9, flops / best[1] / 1e9);
        free(A);
        free(B);
        free(C);
    }
    return 0;
}
