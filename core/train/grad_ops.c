/*
 * grad_ops.c - training-mode forward and backward kernels (issue 5), CPU.
 * Conventions: grad_ops.h. Layout NCHW contiguous host memory, conv weights OIHW; forward
 * overwrites, backward adds into gradient buffers; what backward reads (input, output, BN's saved
 * mean and inverse std, dropout masks) is passed in by the caller, never kept here; dense convs
 * run BLIS gemm (single-threaded build) on im2col panels of one (image, group): as many output
 * pixels per panel as the caller's workspace holds (dp_tr_conv_ws_elems() asks for panels of about
 * 1M elements); 1x1/stride-1/unpadded convs run on the input itself; depthwise convs are direct
 * loops, tap by tap over the valid output columns of a row (no per-pixel bounds test).
 * Threads: the _mt kernels run their tasks on the caller's dp_pool (conv: (image, group, panel) or
 * (image, channel); filter gradients: (group, 64 im2col rows) over every image; BN: one channel;
 * upsampling: one plane; the rest: ranges of about 16K elements of independent units); each task
 * writes its own part of the output, so results are bitwise independent of the thread count.
 * No allocation, no global state.
 * The kernels are in grad_tmpl.h, instantiated here for float (_f32) and double (_f64).
 */
#include "grad_ops.h"

#include <blis.h>
#include <math.h>
#include <string.h>

int dp_tr_conv_is_depthwise(const dp_conv_params *p) {
    return p->groups > 1 && p->groups == p->cin && p->groups == p->cout;
}

disopt_status dp_tr_conv_check(const dp_conv_params *p, int n, int h, int w, int *oh, int *ow) {
    if (!p)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "conv: NULL params");
    if (n <= 0 || h <= 0 || w <= 0 || p->cin <= 0 || p->cout <= 0 || p->kh <= 0 || p->kw <= 0 || p->sh <= 0 ||
        p->sw <= 0 || p->dh <= 0 || p->dw <= 0 || p->groups <= 0 || p->pt < 0 || p->pb < 0 || p->pl < 0 || p->pr < 0)
        return dp_error(
            DISOPT_ERR_INVALID_ARGUMENT,
            "conv: bad shape or params (n %d, %dx%d, cin %d, cout %d, k %dx%d, s %d,%d, d %d,%d, groups %d)", n, h, w,
            p->cin, p->cout, p->kh, p->kw, p->sh, p->sw, p->dh, p->dw, p->groups);
    if (p->cin % p->groups || p->cout % p->groups)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "conv: groups %d do not divide cin %d and cout %d", p->groups,
                        p->cin, p->cout);
    long eh = (long)(p->kh - 1) * p->dh + 1, ew = (long)(p->kw - 1) * p->dw + 1;
    long ph = (long)h + p->pt + p->pb, pw = (long)w + p->pl + p->pr;
    if (eh > ph || ew > pw)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "conv: kernel %ldx%ld (dilated) exceeds the padded input %ldx%ld",
                        eh, ew, ph, pw);
    if (oh)
        *oh = (int)((ph - eh) / p->sh + 1);
    if (ow)
        *ow = (int)((pw - ew) / p->sw + 1);
    return DISOPT_OK;
}

int dp_tr_conv_is_direct(const dp_conv_params *p) {
    return p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && !p->pt && !p->pb && !p->pl && !p->pr;
}

size_t dp_tr_conv_ws_elems(const dp_conv_params *p, int h, int w) {
    int oh = 0, ow = 0;
    if (!p || dp_tr_conv_is_depthwise(p) || dp_tr_conv_is_direct(p) || dp_tr_conv_check(p, 1, h, w, &oh, &ow))
        return 0;
    const size_t P = (size_t)oh * (size_t)ow, K = (size_t)(p->cin / p->groups) * (size_t)p->kh * (size_t)p->kw;
    size_t cols = DP_TR_PANEL_ELEMS / K; /* panels of about DP_TR_PANEL_ELEMS, at least DP_TR_PANEL_MIN_COLS */
    if (cols < DP_TR_PANEL_MIN_COLS)
        cols = DP_TR_PANEL_MIN_COLS;
    return K * (cols < P ? cols : P);
}

size_t dp_tr_conv_ws_elems_mt(const dp_conv_params *p, int h, int w, int nthreads) {
    return nthreads > 0 ? (size_t)nthreads * dp_tr_conv_ws_elems(p, h, w) : 0;
}

/* ---------------------------------------------------------------- masks */
disopt_status dp_tr_dropout_mask(dp_rng *r, double p, size_t count, uint8_t *mask) {
    if (!r || (!mask && count))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dropout mask: NULL argument");
    if (!(p >= 0 && p <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dropout mask: p = %g", p);
    const double keep = 1.0 - p;
    uint32_t w[4];
    for (size_t i = 0; i < count; i += 4) {
        dp_rng_block(r->seed, r->counter + i / 4, w);
        for (size_t q = 0; q < 4 && i + q < count; q++)
            mask[i + q] = (double)dp_rng_u01(w[q]) < keep;
    }
    r->counter += dp_rng_blocks(count);
    return DISOPT_OK;
}

disopt_status dp_tr_drop_connect_mask(dp_rng *r, double rate, int n, uint8_t *mask) {
    if (!r || n < 0 || (!mask && n))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "drop-connect mask: bad argument");
    if (!(rate >= 0 && rate < 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "drop-connect mask: rate %g", rate);
    const float keep = (float)(1.0 - rate);
    for (int i = 0; i < n; i++) {
        /* random_tensor = keep_prob + torch.rand(...) in float; binary = floor(random_tensor) */
        float rt = keep + dp_rng_u01(dp_rng_word(r->seed, r->counter, (uint64_t)i));
        mask[i] = (uint8_t)floorf(rt);
    }
    r->counter += dp_rng_blocks((size_t)n);
    return DISOPT_OK;
}

double dp_tr_drop_connect_rate(double base, int block_idx, int num_blocks) {
    if (num_blocks <= 0 || block_idx < 0)
        return 0.0;
    return base * (double)block_idx / (double)num_blocks;
}

/* ---------------------------------------------------------------- threads */
/* output pixels per task of a 1x1 direct conv; elements per task of the light parallel loops;
 * im2col rows (filter gradient columns) per task of a filter gradient */
#define DP_TR_DIRECT_COLS ((size_t)4096)
#define DP_TR_CHUNK ((size_t)16384)
#define DP_TR_KBLOCK ((size_t)64)

static int dp_tr_threads(dp_pool *pool) { return pool ? dp_pool_size(pool) : 1; }

/* fn(ctx, t, thread) for t < ntasks, on the pool or (no pool) on the caller's thread, in order */
static void dp_tr_run(dp_pool *pool, size_t ntasks, dp_task_fn fn, void *ctx) {
    if (!ntasks)
        return;
    if (pool && ntasks > 1 && ntasks <= (size_t)INT32_MAX) {
        dp_pool_run(pool, (int)ntasks, fn, ctx);
        return;
    }
    for (size_t t = 0; t < ntasks; t++)
        fn(ctx, (int)t, 0);
}

/* ---------------------------------------------------------------- instantiations */
#define T float
#define FN(name) name##_f32
#define TGEMM bli_sgemm
#define TEXP expf
#include "grad_tmpl.h"
#undef T
#undef FN
#undef TGEMM
#undef TEXP

#define T double
#define FN(name) name##_f64
#define TGEMM bli_dgemm
#define TEXP exp
#include "grad_tmpl.h"
#undef T
#undef FN
#undef TGEMM
#undef TEXP
