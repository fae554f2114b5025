/*
 * gemm_kernels.c - our own single-threaded SGEMM for 1x1 convolutions, AVX-512 and AVX2+FMA.
 *
 * Conventions (besides cpu.h's):
 *  - C[M x N] = A[M x K] * B[K x N], row-major. A is the conv weight, packed once at load into
 *    slivers of MR rows (dp_gemm_pack_a: Ap[(block * K + k) * MR + i], rows past M are zero);
 *    B is the input plane (K channel rows of ldb pixels), C the output plane (ldc pixels).
 *  - K is taken in blocks of KC. For each block, the task's whole column block of B is copied into
 *    KC x NR strips (the caller's workspace, 64-byte aligned); every MR x NR micro-tile of a strip
 *    then reads it from L1, and A's KC columns stay in L2. The copy goes PACK_KB (8) rows at a time,
 *    strip by strip: 8 read streams one plane apart, and each strip's 8 x NR floats written in one
 *    contiguous run. Copying all of a row first wrote N/NR streams KC x NR floats apart (32 KiB on
 *    AVX-512), all in one L1 set (+0-15 % on AVX2, most for small M); copying a whole strip at a time
 *    reads B with a stride of a whole plane, KC streams, and ran at half the speed; without K blocks,
 *    K = 2304 ran at half the speed (all measured on AVX2).
 *    Later K blocks continue each accumulator from C, which is exact, so the FMA chain per element
 *    is the same as without blocking.
 *  - Each C element is one FMA chain over k = 0..K-1: the result does not depend on how M and N
 *    are split among tasks, so results are the same at any thread count.
 *  - MR x NR = 12 x 32 (AVX-512: 24 zmm accumulators) and 6 x 16 (AVX2: 12 ymm accumulators).
 *  - The rows are taken in blocks of slivers that fit L2 (a_block_slivers); each block sweeps the
 *    packed strips of B.
 *  - The conv's bias and activation are applied to the accumulators before the one store, so the
 *    output is written once (no second pass over it).
 */
#include "cpu.h"
#include "simd.h"

#include <string.h>

size_t dp_gemm_packed_a_floats(int M, int K, int mr) { return (size_t)((M + mr - 1) / mr) * (size_t)mr * (size_t)K; }

void dp_gemm_pack_a(const float *A, int M, int K, int mr, float *Ap) {
    int blocks = (M + mr - 1) / mr;
    for (int b = 0; b < blocks; b++)
        for (int k = 0; k < K; k++)
            for (int i = 0; i < mr; i++) {
                int m = b * mr + i;
                Ap[((size_t)b * K + k) * mr + i] = m < M ? A[(size_t)m * K + k] : 0.0f;
            }
}

#if defined(__x86_64__) && defined(__GNUC__)

#define KC 256 /* K block */
#ifndef PACK_KB
#define PACK_KB 8
#endif
/* Slivers of A per block: a block of A (slivers x MR x kc floats) is swept over one B strip after
 * another, so it should stay in L2: at most A_BLOCK_BYTES (AVX-512 machines have 1-2 MiB of L2 per
 * core, AVX2 ones from 512 KiB). Without the cap a batch of 4 at 32x32 (one task per 64-pixel
 * panel, all 2304 rows of an expand conv) swept 2.4 MB of A per strip. With a short K the C stores
 * dominate, and 4 slivers at a time keep them local. The order of the k sum is unchanged. */
static int a_block_slivers(int K, int kc, int mr, int slivers, long budget) {
    if (K <= 64) return 4;
    long n = budget / ((long)mr * kc * (long)sizeof(float));
    return n < 1 ? 1 : (n > slivers ? slivers : (int)n);
}

#define MR512 12
#define NR512 32

__attribute__((target("avx512f,fma"))) static void gemm512(int M, int N, int K, const float *Ap, const float *B,
                                                           int ldb, float *C, int ldc, float *Bp, const float *bias,
                                                           dp_act act, const float *kscale) {
    const int slivers = (M + MR512 - 1) / MR512;
    for (int k0 = 0; k0 < K; k0 += KC) { /* K in blocks: A's KC columns stay in L2, a B strip in L1 */
        const int kc = K - k0 < KC ? K - k0 : KC, last = k0 + kc == K;
        const int per_block = a_block_slivers(K, kc, MR512, slivers, 512L << 10);
        for (int kb = 0; kb < kc; kb += PACK_KB) { /* PACK_KB rows at a time, strip by strip */
            const int ke = kb + PACK_KB < kc ? kb + PACK_KB : kc;
            for (int n0 = 0; n0 < N; n0 += NR512) {
                const int nr = N - n0 < NR512 ? N - n0 : NR512;
                const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1u);
                const __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : (nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0);
                float *dst = Bp + ((size_t)(n0 / NR512) * kc + kb) * NR512;
                for (int k = kb; k < ke; k++, dst += NR512) {
                    const float *src = B + (size_t)(k0 + k) * ldb + n0;
                    __m512 v0 = _mm512_maskz_loadu_ps(m0, src), v1 = _mm512_maskz_loadu_ps(m1, src + 16);
                    if (kscale) {
                        const __m512 sc = _mm512_set1_ps(kscale[k0 + k]);
                        v0 = _mm512_mul_ps(v0, sc);
                        v1 = _mm512_mul_ps(v1, sc);
                    }
                    _mm512_store_ps(dst, v0);
                    _mm512_store_ps(dst + 16, v1);
                }
            }
        }
        for (int mb0 = 0; mb0 < slivers; mb0 += per_block) {
            const int mb1 = mb0 + per_block < slivers ? mb0 + per_block : slivers;
            for (int n0 = 0; n0 < N; n0 += NR512) {
                const int nr = N - n0 < NR512 ? N - n0 : NR512;
                const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1u);
                const __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : (nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0);
                const float *bs = Bp + (size_t)(n0 / NR512) * kc * NR512;
                for (int mb = mb0; mb < mb1; mb++) {
                    const float *a = Ap + ((size_t)mb * K + k0) * MR512;
                    const int rows = M - mb * MR512 < MR512 ? M - mb * MR512 : MR512;
                    __m512 c[MR512][2];
                    /* continue the chain from C (exact: a float stored and reloaded is the same float) */
#pragma GCC unroll 12
                    for (int i = 0; i < MR512; i++) {
                        if (k0 > 0 && i < rows) {
                            const float *cr = C + (size_t)(mb * MR512 + i) * ldc + n0;
                            c[i][0] = _mm512_maskz_loadu_ps(m0, cr);
                            c[i][1] = _mm512_maskz_loadu_ps(m1, cr + 16);
                        } else {
                            c[i][0] = c[i][1] = _mm512_setzero_ps();
                        }
                    }
                    for (int k = 0; k < kc; k++) {
                        const __m512 b0 = _mm512_load_ps(bs + (size_t)k * NR512);
                        const __m512 b1 = _mm512_load_ps(bs + (size_t)k * NR512 + 16);
                        const float *ak = a + (size_t)k * MR512;
#pragma GCC unroll 12
                        for (int i = 0; i < MR512; i++) {
                            const __m512 ai = _mm512_set1_ps(ak[i]);
                            c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
                            c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
                        }
                    }
                    /* constant-index stores keep c[][] in registers (a variable index would spill it) */
                    if (last) { /* bias, then the activation two rows (four vectors) at a time, interleaved */
#pragma GCC unroll 12
                        for (int i = 0; i < MR512; i++)
                            if (bias && i < rows) {
                                const __m512 bb = _mm512_set1_ps(bias[mb * MR512 + i]);
                                c[i][0] = _mm512_add_ps(c[i][0], bb);
                                c[i][1] = _mm512_add_ps(c[i][1], bb);
                            }
#pragma GCC unroll 6
                        for (int i = 0; i < MR512; i += 2) act512_n(&c[i][0], 4, act);
                    }
#pragma GCC unroll 12
                    for (int i = 0; i < MR512; i++) {
                        if (i < rows) {
                            float *dst = C + (size_t)(mb * MR512 + i) * ldc + n0;
                            const __m512 v0 = c[i][0], v1 = c[i][1];
                            _mm512_mask_storeu_ps(dst, m0, v0);
                            if (m1)
                                _mm512_mask_storeu_ps(dst + 16, m1, v1);
                        }
                    }
                }
            }
        }
    }
}

#define MR256 6
#define NR256 16

__attribute__((target("avx2,fma"))) static void gemm256(int M, int N, int K, const float *Ap, const float *B, int ldb,
                                                        float *C, int ldc, float *Bp, const float *bias, dp_act act,
                                                        const float *kscale) {
    const int slivers = (M + MR256 - 1) / MR256;
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC, last = k0 + kc == K;
        const int per_block = a_block_slivers(K, kc, MR256, slivers, 256L << 10);
        for (int kb = 0; kb < kc; kb += PACK_KB) { /* PACK_KB rows at a time, strip by strip */
            const int ke = kb + PACK_KB < kc ? kb + PACK_KB : kc;
            for (int n0 = 0; n0 < N; n0 += NR256) {
                const int nr = N - n0 < NR256 ? N - n0 : NR256;
                float *dst = Bp + ((size_t)(n0 / NR256) * kc + kb) * NR256;
                for (int k = kb; k < ke; k++, dst += NR256) {
                    const float *src = B + (size_t)(k0 + k) * ldb + n0;
                    __m256 v0, v1;
                    if (nr == NR256) {
                        v0 = _mm256_loadu_ps(src);
                        v1 = _mm256_loadu_ps(src + 8);
                    } else {
                        v0 = _mm256_maskload_ps(src, dp_mask8(nr));
                        v1 = nr > 8 ? _mm256_maskload_ps(src + 8, dp_mask8(nr - 8)) : _mm256_setzero_ps();
                    }
                    if (kscale) {
                        const __m256 sc = _mm256_set1_ps(kscale[k0 + k]);
                        v0 = _mm256_mul_ps(v0, sc);
                        v1 = _mm256_mul_ps(v1, sc);
                    }
                    _mm256_store_ps(dst, v0);
                    _mm256_store_ps(dst + 8, v1);
                }
            }
        }
        for (int mb0 = 0; mb0 < slivers; mb0 += per_block) {
            const int mb1 = mb0 + per_block < slivers ? mb0 + per_block : slivers;
            for (int n0 = 0; n0 < N; n0 += NR256) {
                const int nr = N - n0 < NR256 ? N - n0 : NR256;
                const __m256i m0 = dp_mask8(nr), m1 = dp_mask8(nr - 8);
                const float *bs = Bp + (size_t)(n0 / NR256) * kc * NR256;
                for (int mb = mb0; mb < mb1; mb++) {
                    const float *a = Ap + ((size_t)mb * K + k0) * MR256;
                    const int rows = M - mb * MR256 < MR256 ? M - mb * MR256 : MR256;
                    __m256 c[MR256][2];
#pragma GCC unroll 6
                    for (int i = 0; i < MR256; i++) {
                        if (k0 > 0 && i < rows) {
                            const float *cr = C + (size_t)(mb * MR256 + i) * ldc + n0;
                            c[i][0] = _mm256_maskload_ps(cr, m0);
                            c[i][1] = _mm256_maskload_ps(cr + 8, m1);
                        } else {
                            c[i][0] = c[i][1] = _mm256_setzero_ps();
                        }
                    }
                    for (int k = 0; k < kc; k++) {
                        const __m256 b0 = _mm256_load_ps(bs + (size_t)k * NR256);
                        const __m256 b1 = _mm256_load_ps(bs + (size_t)k * NR256 + 8);
                        const float *ak = a + (size_t)k * MR256;
#pragma GCC unroll 6
                        for (int i = 0; i < MR256; i++) {
                            const __m256 ai = _mm256_broadcast_ss(ak + i);
                            c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
                            c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
                        }
                    }
                    if (last) { /* bias, then the activation two rows (four vectors) at a time, interleaved */
#pragma GCC unroll 6
                        for (int i = 0; i < MR256; i++)
                            if (bias && i < rows) {
                                const __m256 bb = _mm256_set1_ps(bias[mb * MR256 + i]);
                                c[i][0] = _mm256_add_ps(c[i][0], bb);
                                c[i][1] = _mm256_add_ps(c[i][1], bb);
                            }
#pragma GCC unroll 3
                        for (int i = 0; i < MR256; i += 2) act256_n(&c[i][0], 4, act);
                    }
#pragma GCC unroll 6
                    for (int i = 0; i < MR256; i++) {
                        if (i < rows) {
                            float *dst = C + (size_t)(mb * MR256 + i) * ldc + n0;
                            const __m256 v0 = c[i][0], v1 = c[i][1];
                            if (nr == NR256) {
                                _mm256_storeu_ps(dst, v0);
                                _mm256_storeu_ps(dst + 8, v1);
                            } else {
                                _mm256_maskstore_ps(dst, m0, v0);
                                if (nr > 8)
                                    _mm256_maskstore_ps(dst + 8, m1, v1);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* One output column (the 1x1 convs on 1x1 maps: SE, ASPP pooling): y[m] = act(bias[m] + sum_k
 * A[m][k] * x'[k]) with x'[k] = x[k * incx] * kscale[k], from A packed for either GEMM (slivers of mr
 * rows, mr <= 16). Each y[m] is the GEMM's own FMA chain over k = 0..K-1 (the GEMM stores and reloads
 * it between K blocks, which is exact), then + bias, then the activation (act256 gives act512's
 * bits): the same bits as dp_gemm_run with N = 1, without a 32-wide micro-tile for one column. AVX2
 * and FMA only, so AVX-512 machines run this same code; four slivers at a time for independent
 * FMA chains. */
__attribute__((target("avx2,fma"))) static void gemv256(int M, int K, int mr, const float *Ap, const float *x,
                                                        int incx, float *y, const float *bias, dp_act act,
                                                        const float *kscale) {
    const int slivers = (M + mr - 1) / mr, chunks = (mr + 7) / 8;
    for (int s0 = 0; s0 < slivers; s0 += 4) {
        const int ns = slivers - s0 < 4 ? slivers - s0 : 4;
        __m256 acc[4][2];
        __m256i lm[2];
        for (int c = 0; c < 2; c++) lm[c] = dp_mask8(c < chunks ? (mr - 8 * c < 8 ? mr - 8 * c : 8) : 0);
        for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int k = 0; k < K; k++) {
            __m256 xv = _mm256_set1_ps(x[(size_t)k * incx]);
            if (kscale) xv = _mm256_mul_ps(xv, _mm256_set1_ps(kscale[k]));
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                if (i < ns) {
                    const float *a = Ap + ((size_t)(s0 + i) * K + k) * mr;
                    acc[i][0] = _mm256_fmadd_ps(_mm256_maskload_ps(a, lm[0]), xv, acc[i][0]);
                    if (chunks > 1) acc[i][1] = _mm256_fmadd_ps(_mm256_maskload_ps(a + 8, lm[1]), xv, acc[i][1]);
                }
            }
        }
        for (int i = 0; i < ns; i++)
            for (int c = 0; c < chunks; c++) {
                const int m0 = (s0 + i) * mr + 8 * c, left = M - m0;
                const int lanes = left < (mr - 8 * c < 8 ? mr - 8 * c : 8) ? left : (mr - 8 * c < 8 ? mr - 8 * c : 8);
                if (lanes <= 0) continue;
                const __m256i om = dp_mask8(lanes);
                __m256 v = acc[i][c];
                if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + m0, om));
                _mm256_maskstore_ps(y + m0, om, act256(v, act));
            }
    }
}

int dp_gemv_run(int isa, int M, int K, const float *Ap, const float *x, int incx, float *y, const float *bias, dp_act act,
                const float *kscale) {
    const int mr = dp_gemm_mr(isa);
    if (mr < 1 || mr > 16 || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    gemv256(M, K, mr, Ap, x, incx, y, bias, act, kscale);
    return 1;
}

int dp_gemm_isa_detect(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return DP_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return DP_ISA_AVX2;
    return DP_ISA_BLAS;
}

void dp_gemm_run(int isa, int M, int N, int K, const float *Ap, const float *B, int ldb, float *C, int ldc, float *Bp,
                 const float *bias, dp_act act, const float *kscale) {
    if (isa == DP_ISA_AVX512)
        gemm512(M, N, K, Ap, B, ldb, C, ldc, Bp, bias, act, kscale);
    else
        gemm256(M, N, K, Ap, B, ldb, C, ldc, Bp, bias, act, kscale);
}

#else /* not x86-64 GCC: the BLAS path only */
int dp_gemm_isa_detect(void) { return DP_ISA_BLAS; }
int dp_gemv_run(int isa, int M, int K, const float *Ap, const float *x, int incx, float *y, const float *bias, dp_act act,
                const float *kscale) {
    (void)isa, (void)M, (void)K, (void)Ap, (void)x, (void)incx, (void)y, (void)bias, (void)act, (void)kscale;
    return 0;
}
void dp_gemm_run(int isa, int M, int N, int K, const float *Ap, const float *B, int ldb, float *C, int ldc, float *Bp,
                 const float *bias, dp_act act, const float *kscale) {
    (void)isa, (void)M, (void)N, (void)K, (void)Ap, (void)B, (void)ldb, (void)C, (void)ldc, (void)Bp, (void)bias,
        (void)act, (void)kscale;
}
#endif

int dp_gemm_mr(int isa) { return isa == DP_ISA_AVX512 ? 12 : (isa == DP_ISA_AVX2 ? 6 : 0); }
int dp_gemm_nr(int isa) { return isa == DP_ISA_AVX512 ? 32 : (isa == DP_ISA_AVX2 ? 16 : 0); }
