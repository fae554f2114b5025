/*
 * backend_cpu.c - the CPU backend: NCHW float32 tensors in 64-byte aligned host memory, kernels
 * in ops_*.c, a thread pool of its own (OpenBLAS is linked in its single-threaded build).
 */
#define _DEFAULT_SOURCE /* madvise */
#include "cpu.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void cpu_destroy(dp_backend *b) {
    dp_cpu *cpu = (dp_cpu *)b;
    dp_pool_destroy(cpu->pool);
    free(cpu);
}

static size_t cpu_tensor_bytes(dp_backend *b, int n, int c, int h, int w) {
    (void)b;
    size_t s = (size_t)n * c * h * w * sizeof(float);
    return (s + 63) & ~(size_t)63;
}

static disopt_status cpu_alloc(dp_backend *b, size_t bytes, void **out) {
    (void)b;
    size_t sz = (bytes + 63) & ~(size_t)63;
    if (sz == 0) sz = 64;
    void *p;
    /* buffers of 4 MiB and more (the activation arena, the GEMM workspaces) on 2 MiB boundaries with
     * transparent huge pages asked for (the kernels' default THP mode is "madvise"): the GEMM's B panels
     * gather K rows a plane apart, a page each with 4 KiB pages. Measured on the 2-vCPU EPYC: 1-2 % at
     * 2 threads, nothing at 1 (bench/RESULTS.md §5, session 7). DISOPT_CPU_NO_HUGEPAGES=1 turns it off. */
    if (sz >= ((size_t)4 << 20) && !getenv("DISOPT_CPU_NO_HUGEPAGES")) {
        sz = (sz + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
        p = aligned_alloc((size_t)2 << 20, sz);
        if (p) (void)madvise(p, sz, MADV_HUGEPAGE); /* advice only: refused, the buffer keeps 4 KiB pages */
    } else {
        p = aligned_alloc(64, sz);
    }
    if (!p) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "cpu: cannot allocate %zu bytes", bytes);
    *out = p;
    return DISOPT_OK;
}

static void cpu_free(dp_backend *b, void *p) {
    (void)b;
    free(p);
}

static disopt_status cpu_upload(dp_backend *b, const dp_tview *dst, const float *src) {
    (void)b;
    memcpy(dst->data, src, (size_t)dst->n * dst->c * dst->h * dst->w * sizeof(float));
    return DISOPT_OK;
}

static disopt_status cpu_download(dp_backend *b, float *dst, const dp_tview *src) {
    (void)b;
    memcpy(dst, src->data, (size_t)src->n * src->c * src->h * src->w * sizeof(float));
    return DISOPT_OK;
}

static disopt_status cpu_download_planes(dp_backend *b, float *dst, const dp_tview *src, int c0, int nc) {
    (void)b;
    const size_t hw = (size_t)src->h * src->w;
    for (int i = 0; i < src->n; i++)
        memcpy(dst + (size_t)i * nc * hw, (const float *)src->data + ((size_t)i * src->c + c0) * hw,
               (size_t)nc * hw * sizeof(float));
    return DISOPT_OK;
}

/* Dense convs (groups 1) that run on our own GEMM get their weights packed once here; depthwise
 * and the rest use the folded OIHW weights as they are. */
static disopt_status cpu_prepare(dp_backend *b, dp_node *node) {
    dp_cpu *cpu = (dp_cpu *)b;
    node->bk = NULL;
    const dp_conv_params *c = &node->conv;
    if (cpu->isa == DP_ISA_BLAS || node->op != DP_OP_CONV || c->groups != 1) return DISOPT_OK;
    if (c->cout <= 8 && !(c->kh == 1 && c->kw == 1)) return DISOPT_OK; /* direct few-output kernel */
    int mr = dp_gemm_mr(cpu->isa), M = c->cout, K = c->cin * c->kh * c->kw;
    float *ap = aligned_alloc(64, (dp_gemm_packed_a_floats(M, K, mr) * sizeof(float) + 63) & ~(size_t)63);
    if (!ap) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "cpu: out of memory packing weights");
    dp_gemm_pack_a(node->fw, M, K, mr, ap);
    node->bk = ap;
    return DISOPT_OK;
}

static void cpu_release(dp_backend *b, dp_node *node) {
    (void)b;
    free(node->bk);
    node->bk = NULL;
}

static size_t cpu_workspace(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out) {
    if (node->op == DP_OP_CONV) return dp_cpu_conv_workspace((dp_cpu *)b, node, &ins[0], out);
    if (node->op == DP_OP_UPSAMPLE) return dp_cpu_upsample_workspace(((dp_cpu *)b)->nthreads, &ins[0], out);
    return 0;
}

static disopt_status cpu_run(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out, void *ws,
                             size_t ws_bytes) {
    dp_cpu *cpu = (dp_cpu *)b;
    switch (node->op) {
    case DP_OP_CONV:
        return dp_cpu_conv(cpu, node, ins, out, ws, ws_bytes);
    case DP_OP_UPSAMPLE:
        return dp_cpu_upsample(cpu, node, &ins[0], out, ws, ws_bytes);
    case DP_OP_BN:
    case DP_OP_ACT:
    case DP_OP_GAP:
    case DP_OP_SCALE_CH:
    case DP_OP_SCSE:
    case DP_OP_ADD:
    case DP_OP_CONCAT:
    case DP_OP_BROADCAST:
    case DP_OP_SOFTMAX:
        return dp_cpu_eltwise(cpu, node, ins, out);
    default:
        return dp_error(DISOPT_ERR_UNSUPPORTED, "cpu: op %d not supported", (int)node->op);
    }
}

static disopt_status cpu_run_conv_gap(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                                      const dp_tview *gap, void *ws, size_t ws_bytes) {
    return dp_cpu_conv_gap((dp_cpu *)b, node, ins, out, gap, ws, ws_bytes);
}

static disopt_status cpu_sync(dp_backend *b) {
    (void)b;
    return DISOPT_OK;
}

static int env_int(const char *name, int def, int lo, int hi) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    int x = atoi(v);
    return x < lo ? lo : (x > hi ? hi : x);
}

static const dp_backend_vtable CPU_VT = {
    "cpu", cpu_destroy, cpu_tensor_bytes, cpu_alloc, cpu_free, cpu_upload, cpu_download,
    cpu_prepare, cpu_release, cpu_workspace, cpu_run, cpu_sync, cpu_run_conv_gap,
    NULL, NULL, NULL, NULL, /* no graphs */
    NULL, NULL, NULL, NULL, /* ordinary host memory; the model checks inputs on the host */
    cpu_download_planes,
    cpu_download, cpu_upload, /* the device is the host */
    0,                      /* no deferred activations */
    NULL, NULL,             /* no prefetch: nothing to copy */
};

disopt_status dp_backend_cpu_create(const disopt_engine *e, int nthreads, dp_backend **out) {
    dp_cpu *cpu = calloc(1, sizeof *cpu);
    if (!cpu) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
    cpu->base.vt = &CPU_VT;
    cpu->base.engine = e;
    cpu->nthreads = nthreads < 1 ? 1 : nthreads;
    cpu->isa = dp_gemm_isa_detect();
    const char *isa = getenv("DISOPT_CPU_ISA");
    if (isa && strcmp(isa, "blas") == 0) cpu->isa = DP_ISA_BLAS;
    if (isa && strcmp(isa, "avx2") == 0 && cpu->isa >= DP_ISA_AVX2) cpu->isa = DP_ISA_AVX2;
    cpu->gemm_cols = env_int("DISOPT_CPU_COLS", 1024, 64, DP_CPU_COLS_MAX);
    /* BLIS needs wide panels (aliasing of plane-strided rows); our kernels pack B and prefer narrow
     * panels to splitting rows, which would pack B again for every row block (measured) */
    cpu->gemm_min_cols = env_int("DISOPT_CPU_MIN_COLS", cpu->isa == DP_ISA_BLAS ? 256 : 64, 64, DP_CPU_COLS_MAX);
    /* at least this many GEMM tasks per conv: enough to balance 16 threads (64: best of six settings on the
     * 16-core Xeon), but each extra row block packs the B panel again, which at 1-2 threads only costs
     * (8 measured faster than 64 at 1 and 2 threads on the 2-core EPYC and at 2 threads on the Xeon:
     * bench/RESULTS.md section 5). With our kernels the split never changes the results (each output is
     * one K-ordered sum); BLIS's are not split-invariant, so the BLAS path keeps one split at any count. */
    int min_tasks = 4 * cpu->nthreads;
    min_tasks = cpu->isa == DP_ISA_BLAS ? 64 : (min_tasks < 8 ? 8 : (min_tasks > 64 ? 64 : min_tasks));
    cpu->gemm_min_tasks = env_int("DISOPT_CPU_MIN_TASKS", min_tasks, 1, 4096);
    disopt_status s = dp_pool_create(cpu->nthreads, &cpu->pool);
    if (s != DISOPT_OK) {
        free(cpu);
        return s;
    }
    *out = &cpu->base;
    return DISOPT_OK;
}
