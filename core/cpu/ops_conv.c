/*
 * ops_conv.c - 2-D convolution on the CPU (conventions: see cpu.h).
 *  - depthwise (groups == cin == cout): direct kernel, one task per (image, channel); each kernel
 *    tap is accumulated over a whole output row, so stride-1 inner loops are contiguous;
 *  - everything else: GEMM through BLIS (bli_sgemm, its single-threaded build: the threads are
 *    ours). 1x1/stride 1/no padding convs multiply the input directly; others go through an
 *    im2col panel of DP_CPU_COLS output pixels per task in the task thread's workspace slice.
 * Padding is explicit (pt, pb, pl, pr), which covers symmetric and EfficientNet's static
 * asymmetric "same" padding; dilation and stride are per axis.
 */
#include "cpu.h"

#include <blis.h>
#include <string.h>

typedef struct {
    const dp_node *node;
    const dp_tview *in, *out;
    float *ws;
    size_t ws_per_thread; /* floats */
    int col_blocks, cols;
} conv_job;

/* C[m x n] = A[m x k] * B[k x n], all row-major with leading dimensions lda, ldb, ldc */
static void sgemm_rm(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *Cm, int ldc) {
    float one = 1.0f, zero = 0.0f;
    bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &one, (float *)A, lda, 1, (float *)B, ldb, 1, &zero, Cm,
              ldc, 1);
}

DP_CLONES static void conv_epilogue(const dp_node *node, float *y, size_t n, float bias) {
    if (bias != 0.0f)
        for (size_t i = 0; i < n; i++) y[i] += bias;
    dp_cpu_act(node->act, y, n);
}

/* ---------------------------------------------------------------- depthwise */
DP_CLONES static void dw_task(void *ctx, int task, int thread) {
    const conv_job *j = ctx;
    const dp_node *node = j->node;
    const dp_conv_params *c = &node->conv;
    (void)thread;
    int C = j->in->c;
    int n = task / C, ch = task % C;
    int H = j->in->h, W = j->in->w, OH = j->out->h, OW = j->out->w;
    const float *X = (const float *)j->in->data + ((size_t)n * C + ch) * H * W;
    float *Y = (float *)j->out->data + ((size_t)n * C + ch) * OH * OW;
    const float *wt = node->fw + (size_t)ch * c->kh * c->kw;
    float b = node->fb ? node->fb[ch] : 0.0f;
    for (int oh = 0; oh < OH; oh++) {
        float *row = Y + (size_t)oh * OW;
        for (int ow = 0; ow < OW; ow++) row[ow] = b;
        for (int ki = 0; ki < c->kh; ki++) {
            int ih = oh * c->sh - c->pt + ki * c->dh;
            if (ih < 0 || ih >= H) continue;
            const float *xr = X + (size_t)ih * W;
            for (int kj = 0; kj < c->kw; kj++) {
                float wv = wt[ki * c->kw + kj];
                int off = kj * c->dw - c->pl;
                int lo = off < 0 ? (-off + c->sw - 1) / c->sw : 0;
                int hi = (W - 1 - off) >= 0 ? (W - 1 - off) / c->sw + 1 : 0;
                if (hi > OW) hi = OW;
                if (c->sw == 1) {
                    const float *xs = xr + off;
                    for (int ow = lo; ow < hi; ow++) row[ow] += wv * xs[ow];
                } else {
                    for (int ow = lo; ow < hi; ow++) row[ow] += wv * xr[ow * c->sw + off];
                }
            }
        }
        dp_cpu_act(node->act, row, (size_t)OW);
    }
}

/* ---------------------------------------------------------------- GEMM path */
DP_CLONES static void im2col(const dp_conv_params *c, const float *X, int cin_g, int H, int W, int OW, int p0, int ncols,
                   float *col) {
    /* col: (cin_g*kh*kw) x ncols, row-major; pixel p0+j of the output plane */
    int r = 0;
    for (int ci = 0; ci < cin_g; ci++) {
        const float *Xc = X + (size_t)ci * H * W;
        for (int ki = 0; ki < c->kh; ki++)
            for (int kj = 0; kj < c->kw; kj++, r++) {
                float *dst = col + (size_t)r * ncols;
                int oh = p0 / OW, ow = p0 % OW;
                for (int jj = 0; jj < ncols; jj++) {
                    int ih = oh * c->sh - c->pt + ki * c->dh;
                    int iw = ow * c->sw - c->pl + kj * c->dw;
                    dst[jj] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? Xc[(size_t)ih * W + iw] : 0.0f;
                    if (++ow == OW) {
                        ow = 0;
                        oh++;
                    }
                }
            }
    }
}

static void gemm_task(void *ctx, int task, int thread) {
    const conv_job *j = ctx;
    const dp_node *node = j->node;
    const dp_conv_params *c = &node->conv;
    int G = c->groups;
    int cb = task % j->col_blocks;
    int rest = task / j->col_blocks;
    int g = rest % G, n = rest / G;
    int H = j->in->h, W = j->in->w, OW = j->out->w;
    int P = j->out->h * OW;
    int p0 = cb * j->cols;
    int ncols = P - p0 < j->cols ? P - p0 : j->cols;
    int cin_g = c->cin / G, cout_g = c->cout / G;
    int K = cin_g * c->kh * c->kw;
    const float *X = (const float *)j->in->data + ((size_t)n * c->cin + (size_t)g * cin_g) * H * W;
    float *Y = (float *)j->out->data + ((size_t)n * c->cout + (size_t)g * cout_g) * P;
    const float *A = node->fw + (size_t)g * cout_g * K;
    int direct = c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && !c->pt && !c->pb && !c->pl && !c->pr;
    if (direct) {
        sgemm_rm(cout_g, ncols, K, A, K, X + p0, H * W, Y + p0, P);
    } else {
        float *col = j->ws + (size_t)thread * j->ws_per_thread;
        im2col(c, X, cin_g, H, W, OW, p0, ncols, col);
        sgemm_rm(cout_g, ncols, K, A, K, col, ncols, Y + p0, P);
    }
    for (int o = 0; o < cout_g; o++)
        conv_epilogue(node, Y + (size_t)o * P + p0, (size_t)ncols, node->fb ? node->fb[g * cout_g + o] : 0.0f);
}

static int is_depthwise(const dp_conv_params *c) { return c->groups > 1 && c->groups == c->cin && c->groups == c->cout; }

static int conv_cols(int tasks_other, int P) {
    /* enough column blocks to feed up to 32 threads, with panels of at least 64 pixels. The split
     * depends on the shape only, never on the thread count, so results are the same at any count. */
    int cols = DP_CPU_COLS;
    while (cols > 64 && (long)tasks_other * ((P + cols - 1) / cols) < 32L) cols /= 2;
    return cols;
}

size_t dp_cpu_conv_workspace(const dp_cpu *cpu, const dp_node *node, const dp_tview *in, const dp_tview *out) {
    const dp_conv_params *c = &node->conv;
    (void)in;
    (void)out;
    if (is_depthwise(c)) return 0;
    if (c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && !c->pt && !c->pb && !c->pl && !c->pr) return 0;
    size_t K = (size_t)(c->cin / c->groups) * c->kh * c->kw;
    return K * DP_CPU_COLS * sizeof(float) * (size_t)cpu->nthreads;
}

disopt_status dp_cpu_conv(dp_cpu *cpu, const dp_node *node, const dp_tview *in, const dp_tview *out, void *ws,
                          size_t ws_bytes) {
    const dp_conv_params *c = &node->conv;
    conv_job j;
    memset(&j, 0, sizeof j);
    j.node = node;
    j.in = in;
    j.out = out;
    if (in->c != c->cin || out->c != c->cout)
        return dp_error(DISOPT_ERR_INTERNAL, "conv: channel mismatch (%d->%d, node %d->%d)", in->c, out->c, c->cin,
                        c->cout);
    if (is_depthwise(c)) {
        dp_pool_run(cpu->pool, in->n * in->c, dw_task, &j);
        return DISOPT_OK;
    }
    int P = out->h * out->w;
    j.cols = conv_cols(in->n * c->groups, P);
    j.col_blocks = (P + j.cols - 1) / j.cols;
    size_t need = dp_cpu_conv_workspace(cpu, node, in, out);
    if (need > 0) {
        if (!ws || ws_bytes < need) return dp_error(DISOPT_ERR_INTERNAL, "conv: workspace too small");
        j.ws = ws;
        j.ws_per_thread = need / sizeof(float) / (size_t)cpu->nthreads;
    }
    dp_pool_run(cpu->pool, in->n * c->groups * j.col_blocks, gemm_task, &j);
    return DISOPT_OK;
}
