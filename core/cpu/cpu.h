/*
 * cpu.h - the CPU backend's kernels.
 * Conventions for every file in core/cpu/:
 *  - tensors are float32, NCHW, contiguous; views carry the logical shape (dp_tview);
 *  - conv weights are OIHW (PyTorch's layout) with BN already folded in, bias may be NULL;
 *  - kernels split work into tasks run on the backend's dp_pool; a task writes a disjoint part
 *    of the output, so results do not depend on the thread count;
 *  - no allocation inside kernels: scratch comes from the plan's workspace.
 */
#ifndef DISOPT_CPU_H
#define DISOPT_CPU_H

#include "../internal.h"

/* which GEMM runs the 1x1 convolutions */
enum { DP_ISA_BLAS = 0, DP_ISA_AVX2 = 1, DP_ISA_AVX512 = 2 };

typedef struct dp_cpu {
    dp_backend base;
    dp_pool *pool;
    int nthreads;
    int isa; /* DP_ISA_*: detected at creation; DISOPT_CPU_ISA=blas|avx2|avx512 overrides (benchmarks, tests) */
    /* GEMM work split (shape-only, see ops_conv.c). Defaults; for benchmarking they can be set
     * through DISOPT_CPU_COLS, DISOPT_CPU_MIN_COLS, DISOPT_CPU_MIN_TASKS (read at creation). */
    int gemm_cols, gemm_min_cols, gemm_min_tasks;
} dp_cpu;

/* Hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64, chosen at load time (ifunc). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DISOPT_NO_CLONES)
#define DP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DP_CLONES
#endif

/* largest GEMM column panel (pixels) a conv task works on; sizes the im2col workspace */
#define DP_CPU_COLS_MAX 4096

size_t dp_cpu_conv_workspace(const dp_cpu *cpu, const dp_node *node, const dp_tview *in, const dp_tview *out);
/* ins[0]: input; ins[1] when node->n_in == 2: per-channel input scale (1x1 dense convs only) */
disopt_status dp_cpu_conv(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out, void *ws,
                          size_t ws_bytes);
/* a depthwise conv that also writes the global average pool of its output into gap (N, C, 1, 1) */
disopt_status dp_cpu_conv_gap(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                              const dp_tview *gap, void *ws, size_t ws_bytes);
disopt_status dp_cpu_eltwise(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out);
disopt_status dp_cpu_upsample(dp_cpu *cpu, const dp_node *node, const dp_tview *in, const dp_tview *out, void *ws,
                              size_t ws_bytes);
size_t dp_cpu_upsample_workspace(int nthreads, const dp_tview *in, const dp_tview *out);

/* gemm_kernels.c */
int dp_gemm_isa_detect(void);
int dp_gemm_mr(int isa);
int dp_gemm_nr(int isa);
size_t dp_gemm_packed_a_floats(int M, int K, int mr);
void dp_gemm_pack_a(const float *A, int M, int K, int mr, float *Ap);
/* kscale (or NULL): B's row k is multiplied by kscale[k] as it is packed */
void dp_gemm_run(int isa, int M, int N, int K, const float *Ap, const float *B, int ldb, float *C, int ldc, float *Bp,
                 const float *bias, dp_act act, const float *kscale);
/* the same for one column (N = 1, C contiguous): returns 0 (nothing done) where it cannot run */
int dp_gemv_run(int isa, int M, int K, const float *Ap, const float *x, int incx, float *y, const float *bias, dp_act act,
                const float *kscale);
int dp_cpu_conv_is_direct(const dp_node *node);

/* activation over a contiguous run */
void dp_cpu_act(dp_act act, float *x, size_t n);

/* The global average pool of one plane of n floats, as the GAP op computes it: 8 partial double
 * sums (element i into part[i % 8], in order), combined pairwise, divided by n. dp_cpu_gap_finish
 * does the last two steps for sums accumulated elsewhere (the depthwise kernels). */
float dp_cpu_gap_plane(const float *x, size_t n);
float dp_cpu_gap_finish(const double part[8], size_t n);

#endif
