/*
 * ops_eltwise.c - elementwise and channel ops on the CPU (conventions: see cpu.h):
 * activations, inference BN, global average pool, SE channel scale, SCSE combine, add,
 * channel concat, 1x1 -> HxW broadcast, channel softmax. One task per (image, channel) plane
 * (or per image for softmax), so every op is parallel and deterministic.
 */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* d = 1 + e^-v, the denominator of sigmoid and swish. e^-v is Cephes' expf (range reduction by ln 2 in two
 * parts, degree-6 polynomial, about 1 ulp), evaluated with fused multiply-adds: fewer operations and
 * roundings than separate ones. v is clamped to [-80, 87.3] first, so e^-v lies in [e^-87.3, e^80] (normal
 * floats: 1 / (1 + e^80) is still normal, so sigmoid and swish never produce subnormals, slow on every
 * x86, where the exact result would be below 1e-34 anyway). The clamps are written as x86's maxps/minps
 * (a > b ? a : b), and 2^n is applied as one exact product, so simd.h's vector code (which uses
 * vscalefps on AVX-512) gives these bits exactly. The activations only ever see finite values (inputs
 * are checked). fmaf is one instruction in the x86-64-v3/v4 clones (and on arm64); the baseline clone
 * (pre-Haswell x86, BLAS path) calls libm's exact fmaf. */
static inline float act_denominator(float v) {
    float u = v > -80.0f ? v : -80.0f;
    u = u < 87.3f ? u : 87.3f;
    float fx = u * -1.44269504088896341f;           /* -v log2(e) */
    fx = (fx + 12582912.0f) - 12582912.0f;          /* round to nearest even (|fx| < 2^22) */
    float r = fmaf(-fx, 0.693359375f, -u);          /* -v - fx ln2_hi (fx ln2_hi is exact) */
    r = fmaf(fx, 2.12194440e-4f, r);                /* - fx ln2_lo */
    const float z = r * r;
    float y = fmaf(1.9875691500E-4f, r, 1.3981999507E-3f);
    y = fmaf(y, r, 8.3334519073E-3f);
    y = fmaf(y, r, 4.1665795894E-2f);
    y = fmaf(y, r, 1.6666665459E-1f);
    y = fmaf(y, r, 5.0000001201E-1f);
    y = fmaf(y, z, r) + 1.0f;                       /* e^r */
    const int32_t e = ((int32_t)fx + 127) << 23;    /* 2^fx, fx in [-126, 115]: a normal float */
    float scale;
    memcpy(&scale, &e, 4);
    return 1.0f + y * scale;
}

DP_CLONES void dp_cpu_act(dp_act act, float *x, size_t n) {
    switch (act) {
    case DP_ACT_NONE:
        break;
    case DP_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case DP_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) x[i] = 1.0f / act_denominator(x[i]);
        break;
    case DP_ACT_SWISH: /* x * sigmoid(x), as efficientnet_pytorch's MemoryEfficientSwish, as one division */
        for (size_t i = 0; i < n; i++) x[i] = x[i] / act_denominator(x[i]);
        break;
    }
}

float dp_cpu_gap_finish(const double part[8], size_t n) {
    double s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    return (float)(s / (double)n);
}

DP_CLONES float dp_cpu_gap_plane(const float *x, size_t n) {
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* 8 independent partial sums, in double */
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int q = 0; q < 8; q++) part[q] += x[i + q];
    for (; i < n; i++) part[0] += x[i];
    return dp_cpu_gap_finish(part, n);
}

typedef struct {
    const dp_node *node;
    const dp_tview *ins, *out;
} elt_job;

static float *plane(const dp_tview *t, int n, int c) {
    return (float *)t->data + ((size_t)n * t->c + c) * (size_t)t->h * t->w;
}

DP_CLONES static void elt_task(void *ctx, int task, int thread) {
    const elt_job *j = ctx;
    const dp_node *node = j->node;
    const dp_tview *a = &j->ins[0], *o = j->out;
    (void)thread;
    if (node->op == DP_OP_SOFTMAX) { /* task = image */
        int n = task, C = a->c;
        size_t HW = (size_t)a->h * a->w;
        const float *x = (const float *)a->data + (size_t)n * C * HW;
        float *y = (float *)o->data + (size_t)n * C * HW;
        for (size_t p = 0; p < HW; p++) {
            float m = x[p];
            for (int c = 1; c < C; c++) m = fmaxf(m, x[c * HW + p]);
            float s = 0.0f;
            for (int c = 0; c < C; c++) {
                float e = expf(x[c * HW + p] - m);
                y[c * HW + p] = e;
                s += e;
            }
            for (int c = 0; c < C; c++) y[c * HW + p] /= s;
        }
        return;
    }
    int n = task / o->c, c = task % o->c;
    size_t HW = (size_t)o->h * o->w;
    float *y = plane(o, n, c);
    switch (node->op) {
    case DP_OP_ACT:
        memcpy(y, plane(a, n, c), HW * sizeof(float));
        dp_cpu_act(node->act, y, HW);
        break;
    case DP_OP_BN: { /* fw = per-channel scale, fb = shift (prepared from the BN keys) */
        const float *x = plane(a, n, c);
        float s = node->fw[c], t = node->fb[c];
        for (size_t i = 0; i < HW; i++) y[i] = x[i] * s + t;
        dp_cpu_act(node->act, y, HW);
        break;
    }
    case DP_OP_GAP:
        y[0] = dp_cpu_gap_plane(plane(a, n, c), (size_t)a->h * a->w);
        break;
    case DP_OP_SCALE_CH: {
        const float *x = plane(a, n, c);
        float s = plane(&j->ins[1], n, c)[0];
        for (size_t i = 0; i < HW; i++) y[i] = s * x[i];
        break;
    }
    case DP_OP_SCSE: { /* x * cSE + x * sSE */
        const float *x = plane(a, n, c);
        float cs = plane(&j->ins[1], n, c)[0];
        const float *ss = plane(&j->ins[2], n, 0);
        for (size_t i = 0; i < HW; i++) y[i] = x[i] * cs + x[i] * ss[i];
        break;
    }
    case DP_OP_ADD: {
        const float *x0 = plane(a, n, c), *x1 = plane(&j->ins[1], n, c);
        for (size_t i = 0; i < HW; i++) y[i] = x0[i] + x1[i];
        break;
    }
    case DP_OP_CONCAT: {
        int cc = c;
        for (int k = 0; k < node->n_in; k++) {
            if (cc < j->ins[k].c) {
                memcpy(y, plane(&j->ins[k], n, cc), HW * sizeof(float));
                break;
            }
            cc -= j->ins[k].c;
        }
        break;
    }
    case DP_OP_BROADCAST: {
        float v = plane(a, n, c)[0];
        for (size_t i = 0; i < HW; i++) y[i] = v;
        break;
    }
    default:
        break;
    }
}

disopt_status dp_cpu_eltwise(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out) {
    elt_job j = {node, ins, out};
    if (node->op == DP_OP_BN && (!node->fw || !node->fb))
        return dp_error(DISOPT_ERR_INTERNAL, "bn: parameters not prepared");
    int tasks = node->op == DP_OP_SOFTMAX ? out->n : out->n * out->c;
    dp_pool_run(cpu->pool, tasks, elt_task, &j);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- bilinear, align_corners=True */
/* Two passes, in PyTorch's order of operations: every input row is first interpolated along x
 * (lw0 * x[w0] + lw1 * x[w1]) into the task's scratch rows, then each output row blends two of
 * them along y (lh0 * r0 + lh1 * r1). Source positions are computed in float as PyTorch does:
 * scale = (in - 1) / (out - 1), src = scale * dst. */
typedef struct {
    const dp_tview *in, *out;
    float *ws;
    size_t ws_per_thread;
} up_job;

size_t dp_cpu_upsample_workspace(int nthreads, const dp_tview *in, const dp_tview *out) {
    return ((size_t)in->h * out->w + 3 * (size_t)out->w + 16) * sizeof(float) * (size_t)nthreads;
}

DP_CLONES static void up_task(void *ctx, int task, int thread) {
    const up_job *j = ctx;
    int n = task / j->out->c, c = task % j->out->c;
    int H = j->in->h, W = j->in->w, OH = j->out->h, OW = j->out->w;
    const float *x = plane(j->in, n, c);
    float *y = plane(j->out, n, c);
    float *tmp = j->ws + (size_t)thread * j->ws_per_thread;
    float *lw1 = tmp + (size_t)H * OW;
    int *w0 = (int *)(lw1 + OW), *w1 = w0 + OW;
    float sh = OH > 1 ? (float)(H - 1) / (float)(OH - 1) : 0.0f;
    float sw = OW > 1 ? (float)(W - 1) / (float)(OW - 1) : 0.0f;
    for (int ow = 0; ow < OW; ow++) {
        float fw = sw * (float)ow;
        w0[ow] = (int)fw;
        w1[ow] = w0[ow] < W - 1 ? w0[ow] + 1 : W - 1;
        lw1[ow] = fw - (float)w0[ow];
    }
    for (int h = 0; h < H; h++) {
        const float *xr = x + (size_t)h * W;
        float *tr = tmp + (size_t)h * OW;
        for (int ow = 0; ow < OW; ow++) tr[ow] = (1.0f - lw1[ow]) * xr[w0[ow]] + lw1[ow] * xr[w1[ow]];
    }
    for (int oh = 0; oh < OH; oh++) {
        float fh = sh * (float)oh;
        int h0 = (int)fh;
        int h1 = h0 < H - 1 ? h0 + 1 : H - 1;
        float lh1 = fh - (float)h0, lh0 = 1.0f - lh1;
        const float *restrict r0 = tmp + (size_t)h0 * OW, *restrict r1 = tmp + (size_t)h1 * OW;
        float *restrict yr = y + (size_t)oh * OW;
        for (int ow = 0; ow < OW; ow++) yr[ow] = lh0 * r0[ow] + lh1 * r1[ow];
    }
}

disopt_status dp_cpu_upsample(dp_cpu *cpu, const dp_node *node, const dp_tview *in, const dp_tview *out, void *ws,
                              size_t ws_bytes) {
    (void)node;
    size_t need = dp_cpu_upsample_workspace(cpu->nthreads, in, out);
    if (!ws || ws_bytes < need) return dp_error(DISOPT_ERR_INTERNAL, "upsample: workspace too small");
    up_job j = {in, out, ws, need / sizeof(float) / (size_t)cpu->nthreads};
    dp_pool_run(cpu->pool, out->n * out->c, up_task, &j);
    return DISOPT_OK;
}
