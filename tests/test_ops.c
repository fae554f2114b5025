/* test_ops.c - every CPU op against a naive double-precision reference, on fresh random inputs
 * with poisoned outputs, at 1 and 3 threads (results must be bitwise identical across thread counts). */
#include "test_util.h"
#include "internal.h"
#include "cpu/simd.h"

#include <math.h>

static tu_rng g_rng;

typedef struct {
    dp_backend *be;
} fixture;

static float *alloc_poisoned(size_t n) {
    float *p = malloc(n * sizeof(float) + 64);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static double act_ref(dp_act a, double x) {
    switch (a) {
    case DP_ACT_RELU: return x > 0 ? x : 0;
    case DP_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case DP_ACT_SWISH: return x / (1.0 + exp(-x));
    default: return x;
    }
}

/* normalised max error: max|a-b| / max|b| */
static double nerr(const float *a, const double *b, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > m) m = fabs(b[i]);
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d; /* NaN (an unwritten output) wins */
    }
    return e / (m > 0 ? m : 1);
}

/* runs one node on a fresh CPU backend; with gap: a depthwise conv with its output's global average
 * pool fused in (backend run_conv_gap) */
static disopt_status run_pool(int nthreads, dp_node *node, dp_tview *ins, dp_tview *out, dp_tview *gap) {
    dp_backend *be;
    disopt_status s = dp_backend_cpu_create(NULL, nthreads, &be);
    if (s) return s;
    void *ws = NULL;
    size_t wsb = be->vt->workspace_bytes(be, node, ins, out);
    if (wsb) ws = aligned_alloc(64, (wsb + 63) & ~(size_t)63);
    s = be->vt->prepare_node(be, node);
    if (!s) s = gap ? be->vt->run_conv_gap(be, node, ins, out, gap, ws, wsb) : be->vt->run_node(be, node, ins, out, ws, wsb);
    be->vt->release_node(be, node);
    free(ws);
    be->vt->destroy(be);
    return s;
}

static disopt_status run(int nthreads, dp_node *node, dp_tview *ins, dp_tview *out) {
    return run_pool(nthreads, node, ins, out, NULL);
}

typedef struct {
    int n, cin, cout, h, w, k, s, d, g, pt, pb, pl, pr, bias;
    dp_act act;
} conv_case;

static void check_conv(const conv_case *cc) {
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = DP_OP_CONV;
    node.n_in = 1;
    node.act = cc->act;
    dp_conv_params *c = &node.conv;
    *c = (dp_conv_params){cc->cin, cc->cout, cc->k, cc->k, cc->s, cc->s, cc->d, cc->d, cc->g, cc->pt, cc->pb, cc->pl, cc->pr};
    int cin_g = cc->cin / cc->g, cout_g = cc->cout / cc->g;
    int oh = (cc->h + cc->pt + cc->pb - cc->d * (cc->k - 1) - 1) / cc->s + 1;
    int ow = (cc->w + cc->pl + cc->pr - cc->d * (cc->k - 1) - 1) / cc->s + 1;
    size_t nin = (size_t)cc->n * cc->cin * cc->h * cc->w, nout = (size_t)cc->n * cc->cout * oh * ow;
    size_t nw = (size_t)cc->cout * cin_g * cc->k * cc->k;
    float *x = malloc(nin * 4), *wt = malloc(nw * 4), *bias = cc->bias ? malloc((size_t)cc->cout * 4) : NULL;
    tu_fill(&g_rng, x, nin, -2.0f, 2.0f);
    tu_fill(&g_rng, wt, nw, -0.5f, 0.5f);
    if (bias) tu_fill(&g_rng, bias, (size_t)cc->cout, -1.0f, 1.0f);
    node.fw = wt;
    node.fb = bias;
    double *ref = malloc(nout * sizeof(double));
    for (int n = 0; n < cc->n; n++)
        for (int o = 0; o < cc->cout; o++) {
            int g = o / cout_g;
            for (int y = 0; y < oh; y++)
                for (int xo = 0; xo < ow; xo++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ki = 0; ki < cc->k; ki++)
                            for (int kj = 0; kj < cc->k; kj++) {
                                int ih = y * cc->s - cc->pt + ki * cc->d, iw = xo * cc->s - cc->pl + kj * cc->d;
                                if (ih < 0 || ih >= cc->h || iw < 0 || iw >= cc->w) continue;
                                acc += (double)wt[((size_t)o * cin_g + ci) * cc->k * cc->k + ki * cc->k + kj] *
                                       x[(((size_t)n * cc->cin + g * cin_g + ci) * cc->h + ih) * cc->w + iw];
                            }
                    ref[(((size_t)n * cc->cout + o) * oh + y) * ow + xo] = act_ref(cc->act, acc);
                }
        }
    /* every GEMM the machine can run: BLAS, our AVX2 kernel, our AVX-512 kernel; the direct kernels
     * (depthwise, few outputs: scalar under "blas", vector code otherwise) must agree to the bit */
    static const char *isas[3] = {"blas", "avx2", "avx512"};
    const int direct = (cc->g == cc->cin && cc->g == cc->cout && cc->g > 1) ||
                       (cc->g == 1 && cc->cout <= 8 && cc->k > 1 && cc->cin > 1);
    float *first = NULL;
    for (int i = 0; i < 3; i++) {
        setenv("DISOPT_CPU_ISA", isas[i], 1);
        float *out1 = alloc_poisoned(nout), *out3 = alloc_poisoned(nout);
        dp_tview in = {cc->n, cc->cin, cc->h, cc->w, x};
        dp_tview o1 = {cc->n, cc->cout, oh, ow, out1}, o3 = {cc->n, cc->cout, oh, ow, out3};
        assert_int_equal(run(1, &node, &in, &o1), DISOPT_OK);
        assert_int_equal(run(3, &node, &in, &o3), DISOPT_OK);
        double e = nerr(out1, ref, nout);
        /* fp32 sums of K = cin/g*k*k products: the bound grows with K (a 20->2 5x5 conv, K = 500, once
         * reached 2.1e-6 on random data) */
        const double K = (double)(cc->cin / cc->g) * cc->k * cc->k, tol = K * 8e-9 > 2e-6 ? K * 8e-9 : 2e-6;
        if (!(e < tol))
            fail_msg("conv (%s) n%d %d->%d %dx%d k%d s%d d%d g%d pad t%d b%d l%d r%d: error %g", isas[i], cc->n, cc->cin,
                     cc->cout, cc->h, cc->w, cc->k, cc->s, cc->d, cc->g, cc->pt, cc->pb, cc->pl, cc->pr, e);
        assert_memory_equal(out1, out3, nout * 4);
        if (direct && first && memcmp(first, out1, nout * 4) != 0)
            fail_msg("conv (%s) n%d %d->%d %dx%d k%d s%d d%d g%d: not bitwise equal to the scalar kernel", isas[i], cc->n,
                     cc->cin, cc->cout, cc->h, cc->w, cc->k, cc->s, cc->d, cc->g);
        if (!first)
            first = out1;
        else
            free(out1);
        free(out3);
    }
    free(first);
    unsetenv("DISOPT_CPU_ISA");
    free(x); free(wt); free(bias); free(ref);
}

static void test_conv(void **state) {
    (void)state;
    const conv_case cases[] = {
        /* n cin cout h w k s d g pt pb pl pr bias act */
        {2, 4, 8, 17, 13, 3, 2, 1, 1, 0, 1, 0, 1, 0, DP_ACT_SWISH},       /* EfficientNet stem: static (0,1,0,1) */
        {1, 6, 6, 16, 16, 5, 2, 1, 6, 1, 2, 1, 2, 1, DP_ACT_SWISH},       /* depthwise 5x5/s2, static (1,2,1,2) */
        {2, 12, 12, 9, 11, 3, 1, 1, 12, 1, 1, 1, 1, 1, DP_ACT_RELU},      /* depthwise 3x3 */
        {1, 8, 8, 12, 12, 5, 1, 2, 8, 4, 4, 4, 4, 1, DP_ACT_SWISH},       /* dilated depthwise (stage 5) */
        {1, 8, 8, 8, 8, 3, 1, 12, 8, 12, 12, 12, 12, 0, DP_ACT_NONE},     /* ASPP rate 12 on a small map */
        {1, 8, 8, 6, 6, 3, 1, 36, 8, 36, 36, 36, 36, 0, DP_ACT_NONE},     /* rate 36: centre tap only */
        {3, 40, 24, 20, 33, 1, 1, 1, 1, 0, 0, 0, 0, 0, DP_ACT_NONE},      /* 1x1 (direct GEMM) */
        {1, 40, 24, 21, 21, 1, 1, 2, 1, 0, 0, 0, 0, 1, DP_ACT_SIGMOID},   /* 1x1 with dilation 2 */
        {2, 16, 10, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, DP_ACT_SWISH},       /* SE reduce on a 1x1 map */
        {1, 32, 2, 24, 24, 3, 1, 1, 1, 1, 1, 1, 1, 1, DP_ACT_NONE},       /* student head 3x3 */
        {1, 12, 8, 10, 10, 3, 1, 1, 4, 1, 1, 1, 1, 1, DP_ACT_RELU},       /* grouped, not depthwise */
        {1, 6, 9, 15, 15, 3, 2, 2, 3, 2, 1, 0, 2, 1, DP_ACT_RELU},        /* grouped, strided, dilated, asymmetric */
        {1, 3, 5, 40, 40, 3, 1, 1, 1, 1, 1, 1, 1, 0, DP_ACT_RELU},        /* > one column panel */
        {1, 8, 40, 48, 48, 1, 1, 1, 1, 0, 0, 0, 0, 1, DP_ACT_SWISH},      /* 1x1, several panels */
        {2, 16, 300, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1, DP_ACT_NONE},       /* 1x1, output channels split */
        {1, 37, 29, 13, 11, 1, 1, 1, 1, 0, 0, 0, 0, 1, DP_ACT_SWISH},     /* 1x1, ragged M, N and K */
        {1, 300, 7, 1, 3, 1, 1, 1, 1, 0, 0, 0, 0, 0, DP_ACT_NONE},        /* 1x1, long K, tiny N */
        {1, 4, 7, 50, 47, 3, 1, 1, 1, 1, 1, 1, 1, 1, DP_ACT_SWISH},       /* 3x3, few outputs (direct) */
        {1, 4, 40, 70, 66, 3, 2, 1, 1, 0, 1, 0, 1, 0, DP_ACT_SWISH},      /* stem-like im2col GEMM, panels */
        {1, 30, 20, 9, 9, 5, 1, 2, 1, 4, 4, 4, 4, 1, DP_ACT_RELU},        /* im2col GEMM, long K, dilated */
        {1, 3, 3, 70, 90, 3, 1, 1, 3, 1, 1, 1, 1, 1, DP_ACT_SWISH},       /* depthwise, larger plane */
        {1, 2, 2, 64, 66, 5, 2, 1, 2, 1, 2, 1, 2, 1, DP_ACT_SWISH},       /* depthwise 5x5/s2, larger plane */
        {1, 2, 2, 33, 40, 3, 2, 1, 2, 0, 1, 0, 1, 1, DP_ACT_NONE},        /* depthwise 3x3/s2 static pad */
        {1, 2, 2, 40, 40, 5, 1, 2, 2, 4, 4, 4, 4, 0, DP_ACT_NONE},        /* depthwise 5x5 dilation 2 */
        {1, 2, 2, 20, 20, 7, 1, 1, 2, 3, 3, 3, 3, 0, DP_ACT_NONE},        /* depthwise, generic kernel */
        /* the vector depthwise kernel: ring of padded rows, stride-2 phase split, ragged tails */
        {2, 3, 3, 70, 75, 3, 2, 1, 3, 0, 1, 0, 1, 1, DP_ACT_SWISH},       /* 3x3/s2, odd width, 2 images */
        {1, 2, 2, 41, 38, 5, 2, 1, 2, 1, 2, 1, 2, 1, DP_ACT_SIGMOID},     /* 5x5/s2, odd height */
        {1, 2, 2, 40, 41, 5, 2, 2, 2, 4, 4, 4, 4, 1, DP_ACT_SWISH},       /* 5x5/s2 dilated: one phase only */
        {1, 3, 3, 37, 53, 3, 1, 1, 3, 0, 2, 2, 0, 1, DP_ACT_SWISH},       /* 3x3, asymmetric padding, ragged */
        {1, 2, 2, 9, 16, 5, 1, 3, 2, 6, 6, 6, 6, 0, DP_ACT_RELU},         /* dilation 3 on a small map */
        {1, 2, 2, 12, 12, 3, 1, 20, 2, 20, 20, 20, 20, 1, DP_ACT_NONE},   /* taps beyond the map (zero rows) */
        {1, 2, 2, 22, 19, 9, 1, 1, 2, 4, 4, 4, 4, 1, DP_ACT_RELU},        /* 9x9: scalar kernel on every ISA */
        {1, 2, 2, 22, 23, 3, 3, 1, 2, 1, 1, 1, 1, 1, DP_ACT_SWISH},       /* stride 3: scalar kernel */
        {1, 2, 2, 16, 32, 3, 1, 1, 2, 1, 1, 1, 1, 1, DP_ACT_SWISH},       /* whole vectors only */
        /* the vector few-output kernel: both outputs of a pair from one load, channel chunks, masks */
        {1, 40, 3, 19, 70, 3, 1, 1, 1, 1, 1, 1, 1, 1, DP_ACT_NONE},       /* odd outputs, 2 column blocks */
        {2, 20, 2, 13, 17, 5, 1, 2, 1, 4, 3, 4, 3, 1, DP_ACT_SIGMOID},    /* 5x5 dilated, asymmetric */
        {1, 17, 8, 10, 129, 3, 1, 1, 1, 0, 2, 2, 0, 0, DP_ACT_RELU},      /* 8 outputs, wide and ragged */
        {1, 6, 2, 9, 9, 9, 1, 1, 1, 4, 4, 4, 4, 1, DP_ACT_NONE},          /* kw 9: scalar kernel */
        {1, 6, 2, 15, 16, 3, 2, 1, 1, 1, 1, 1, 1, 1, DP_ACT_NONE},        /* stride 2: scalar kernel */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv(&cases[i]);
}

/* depthwise conv + pooling in one pass: the conv output is the conv's, bit for bit, and the pool is
 * what the GAP op computes from it, bit for bit (registers when the width is a multiple of 8, else a
 * pass over the plane), on every ISA and thread count; poisoned outputs */
static void test_conv_gap(void **state) {
    (void)state;
    const conv_case cases[] = {
        {2, 5, 5, 32, 32, 5, 1, 2, 5, 4, 4, 4, 4, 1, DP_ACT_SWISH},   /* stage 5: dilated 5x5 */
        {1, 4, 4, 66, 64, 3, 2, 1, 4, 0, 1, 0, 1, 1, DP_ACT_SWISH},   /* 3x3/s2, width 32 out */
        {1, 3, 3, 20, 48, 3, 1, 1, 3, 1, 1, 1, 1, 1, DP_ACT_SWISH},   /* width 48: a half vector on AVX-512 */
        {1, 3, 3, 21, 37, 5, 1, 1, 3, 2, 2, 2, 2, 0, DP_ACT_SIGMOID}, /* width 37: pooled from the plane */
        {1, 2, 2, 22, 19, 9, 1, 1, 2, 4, 4, 4, 4, 1, DP_ACT_RELU},    /* 9x9: the scalar kernel */
        {2, 101, 101, 16, 16, 3, 1, 1, 101, 1, 1, 1, 1, 1, DP_ACT_SWISH}, /* 202 planes: tasks are runs of 8 at 3
                                                                        * threads, the last one short */
    };
    static const char *isas[3] = {"blas", "avx2", "avx512"};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci];
        dp_node node, gnode;
        memset(&node, 0, sizeof node);
        node.op = DP_OP_CONV;
        node.n_in = 1;
        node.act = cc->act;
        node.conv = (dp_conv_params){cc->cin, cc->cout, cc->k, cc->k, cc->s, cc->s, cc->d, cc->d, cc->g,
                                     cc->pt, cc->pb, cc->pl, cc->pr};
        memset(&gnode, 0, sizeof gnode);
        gnode.op = DP_OP_GAP;
        gnode.n_in = 1;
        int oh = (cc->h + cc->pt + cc->pb - cc->d * (cc->k - 1) - 1) / cc->s + 1;
        int ow = (cc->w + cc->pl + cc->pr - cc->d * (cc->k - 1) - 1) / cc->s + 1;
        size_t nin = (size_t)cc->n * cc->cin * cc->h * cc->w, nout = (size_t)cc->n * cc->cout * oh * ow;
        size_t ng = (size_t)cc->n * cc->cout;
        float *x = malloc(nin * 4), *wt = malloc((size_t)cc->cout * cc->k * cc->k * 4), *b = malloc((size_t)cc->cout * 4);
        tu_fill(&g_rng, x, nin, -2.0f, 2.0f);
        tu_fill(&g_rng, wt, (size_t)cc->cout * cc->k * cc->k, -0.5f, 0.5f);
        tu_fill(&g_rng, b, (size_t)cc->cout, -1.0f, 1.0f);
        node.fw = wt;
        node.fb = cc->bias ? b : NULL;
        for (int i = 0; i < 3; i++) {
            setenv("DISOPT_CPU_ISA", isas[i], 1);
            float *y = alloc_poisoned(nout), *yg1 = alloc_poisoned(nout), *yg3 = alloc_poisoned(nout);
            float *pool = alloc_poisoned(ng), *g1 = alloc_poisoned(ng), *g3 = alloc_poisoned(ng);
            dp_tview in = {cc->n, cc->cin, cc->h, cc->w, x};
            dp_tview vy = {cc->n, cc->cout, oh, ow, y}, vy1 = {cc->n, cc->cout, oh, ow, yg1},
                     vy3 = {cc->n, cc->cout, oh, ow, yg3};
            dp_tview vp = {cc->n, cc->cout, 1, 1, pool}, v1 = {cc->n, cc->cout, 1, 1, g1}, v3 = {cc->n, cc->cout, 1, 1, g3};
            assert_int_equal(run(1, &node, &in, &vy), DISOPT_OK);
            assert_int_equal(run(1, &gnode, &vy, &vp), DISOPT_OK);
            assert_int_equal(run_pool(1, &node, &in, &vy1, &v1), DISOPT_OK);
            assert_int_equal(run_pool(3, &node, &in, &vy3, &v3), DISOPT_OK);
            assert_memory_equal(y, yg1, nout * 4);
            assert_memory_equal(y, yg3, nout * 4);
            if (memcmp(pool, g1, ng * 4) != 0 || memcmp(pool, g3, ng * 4) != 0)
                fail_msg("conv+pool (%s) case %zu: pool differs from the GAP op", isas[i], ci);
            /* and the pool is the mean */
            size_t P = (size_t)oh * ow;
            for (size_t q = 0; q < ng; q++) {
                double m = 0;
                for (size_t p = 0; p < P; p++) m += y[q * P + p];
                m /= (double)P;
                assert_true(fabs(g1[q] - m) <= 1e-6 * (1 + fabs(m)));
            }
            free(y); free(yg1); free(yg3); free(pool); free(g1); free(g3);
        }
        unsetenv("DISOPT_CPU_ISA");
        /* anything but a depthwise conv is refused, not run */
        dp_node dense = node;
        dense.conv.groups = 1;
        dense.conv.cin = 1;
        float *y = alloc_poisoned(nout), *g = alloc_poisoned(ng);
        dp_tview in1 = {cc->n, 1, cc->h, cc->w, x}, vy = {cc->n, cc->cout, oh, ow, y}, vg = {cc->n, cc->cout, 1, 1, g};
        assert_int_equal(run_pool(1, &dense, &in1, &vy, &vg), DISOPT_ERR_INTERNAL);
        free(y); free(g);
        free(x); free(wt); free(b);
    }
}

/* a dense 1x1 conv whose input is first scaled per (image, channel): the SE gate folded in */
static void test_conv_input_scale(void **state) {
    (void)state;
    const int N = 2, C = 40, M = 30, H = 17, W = 61;
    size_t nin = (size_t)N * C * H * W, nout = (size_t)N * M * H * W;
    float *x = malloc(nin * 4), *sc = malloc((size_t)N * C * 4), *wt = malloc((size_t)M * C * 4), *b = malloc((size_t)M * 4);
    tu_fill(&g_rng, x, nin, -2, 2);
    tu_fill(&g_rng, sc, (size_t)N * C, 0, 1);
    tu_fill(&g_rng, wt, (size_t)M * C, -0.5f, 0.5f);
    tu_fill(&g_rng, b, (size_t)M, -1, 1);
    double *ref = malloc(nout * sizeof(double));
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++)
            for (int p = 0; p < H * W; p++) {
                double acc = b[m];
                for (int k = 0; k < C; k++) acc += (double)wt[m * C + k] * (x[((size_t)n * C + k) * H * W + p] * sc[n * C + k]);
                ref[((size_t)n * M + m) * H * W + p] = act_ref(DP_ACT_SWISH, acc);
            }
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = DP_OP_CONV;
    node.n_in = 2;
    node.act = DP_ACT_SWISH;
    node.conv = (dp_conv_params){C, M, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    node.fw = wt;
    node.fb = b;
    static const char *isas[3] = {"blas", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        setenv("DISOPT_CPU_ISA", isas[i], 1);
        float *y1 = alloc_poisoned(nout), *y3 = alloc_poisoned(nout);
        dp_tview ins[2] = {{N, C, H, W, x}, {N, C, 1, 1, sc}};
        dp_tview o1 = {N, M, H, W, y1}, o3 = {N, M, H, W, y3};
        assert_int_equal(run(1, &node, ins, &o1), DISOPT_OK);
        assert_int_equal(run(3, &node, ins, &o3), DISOPT_OK);
        double e = nerr(y1, ref, nout);
        if (!(e < 2e-6)) fail_msg("scaled 1x1 conv (%s): error %g", isas[i], e);
        assert_memory_equal(y1, y3, nout * 4);
        free(y1);
        free(y3);
    }
    unsetenv("DISOPT_CPU_ISA");
    free(x); free(sc); free(wt); free(b); free(ref);
}

static void test_upsample(void **state) {
    (void)state;
    const int shapes[][3] = {{4, 5, 4}, {1, 1, 4}, {8, 8, 4}, {3, 7, 2}};
    for (size_t s = 0; s < 4; s++) {
        int H = shapes[s][0], W = shapes[s][1], f = shapes[s][2], N = 2, C = 3;
        int OH = H * f, OW = W * f;
        size_t nin = (size_t)N * C * H * W, nout = (size_t)N * C * OH * OW;
        float *x = malloc(nin * 4), *y1 = alloc_poisoned(nout), *y3 = alloc_poisoned(nout);
        double *ref = malloc(nout * 8);
        tu_fill(&g_rng, x, nin, -3, 3);
        for (int p = 0; p < N * C; p++)
            for (int i = 0; i < OH; i++)
                for (int j = 0; j < OW; j++) {
                    double sy = OH > 1 ? (double)i * (H - 1) / (OH - 1) : 0, sx = OW > 1 ? (double)j * (W - 1) / (OW - 1) : 0;
                    int y0 = (int)floor(sy), x0 = (int)floor(sx);
                    int y1i = y0 + 1 < H ? y0 + 1 : H - 1, x1i = x0 + 1 < W ? x0 + 1 : W - 1;
                    double ly = sy - y0, lx = sx - x0;
                    const float *X = x + (size_t)p * H * W;
                    ref[((size_t)p * OH + i) * OW + j] = (1 - ly) * ((1 - lx) * X[y0 * W + x0] + lx * X[y0 * W + x1i]) +
                                                         ly * ((1 - lx) * X[y1i * W + x0] + lx * X[y1i * W + x1i]);
                }
        dp_node node;
        memset(&node, 0, sizeof node);
        node.op = DP_OP_UPSAMPLE;
        node.n_in = 1;
        node.scale = f;
        dp_tview in = {N, C, H, W, x}, o1 = {N, C, OH, OW, y1}, o3 = {N, C, OH, OW, y3};
        assert_int_equal(run(1, &node, &in, &o1), DISOPT_OK);
        assert_int_equal(run(3, &node, &in, &o3), DISOPT_OK);
        /* the source position is computed in float, as PyTorch does: a few ulp of the scale */
        assert_true(nerr(y1, ref, nout) < 1e-5);
        assert_memory_equal(y1, y3, nout * 4);
        /* align_corners=True keeps the corners exactly */
        assert_true(y1[0] == x[0]);
        assert_true(y1[OW - 1] == x[W - 1]);
        free(x); free(y1); free(y3); free(ref);
    }
}

/* elementwise/channel ops: builds inputs of given shapes and checks against a reference lambda-by-switch */
static void check_elt(dp_op op, dp_act act, int nin_t, const int shapes[][4], const int oshape[4]) {
    float *in[DP_MAX_IN] = {0};
    dp_tview ins[DP_MAX_IN];
    for (int k = 0; k < nin_t; k++) {
        size_t n = (size_t)shapes[k][0] * shapes[k][1] * shapes[k][2] * shapes[k][3];
        in[k] = malloc(n * 4);
        tu_fill(&g_rng, in[k], n, -4, 4);
        ins[k] = (dp_tview){shapes[k][0], shapes[k][1], shapes[k][2], shapes[k][3], in[k]};
    }
    int N = oshape[0], C = oshape[1], H = oshape[2], W = oshape[3];
    size_t nout = (size_t)N * C * H * W, HW = (size_t)H * W;
    double *ref = malloc(nout * 8);
    float *bnw = NULL, *bnb = NULL;
    if (op == DP_OP_BN) {
        bnw = malloc((size_t)C * 4);
        bnb = malloc((size_t)C * 4);
        tu_fill(&g_rng, bnw, (size_t)C, 0.5f, 1.5f);
        tu_fill(&g_rng, bnb, (size_t)C, -1, 1);
    }
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < HW; p++) {
                size_t o = ((size_t)n * C + c) * HW + p;
                const float *a = in[0];
                size_t ai = ((size_t)n * shapes[0][1] + c) * (size_t)shapes[0][2] * shapes[0][3];
                double v = 0;
                switch (op) {
                case DP_OP_ACT: v = act_ref(act, a[ai + p]); break;
                case DP_OP_BN: v = act_ref(act, (double)a[ai + p] * bnw[c] + bnb[c]); break;
                case DP_OP_GAP: {
                    size_t ahw = (size_t)shapes[0][2] * shapes[0][3];
                    for (size_t q = 0; q < ahw; q++) v += a[ai + q];
                    v /= (double)ahw;
                    break;
                }
                case DP_OP_SCALE_CH: v = (double)a[ai + p] * in[1][(size_t)n * C + c]; break;
                case DP_OP_SCSE:
                    v = (double)a[ai + p] * in[1][(size_t)n * C + c] + (double)a[ai + p] * in[2][(size_t)n * HW + p];
                    break;
                case DP_OP_ADD: v = (double)a[ai + p] + in[1][ai + p]; break;
                case DP_OP_BROADCAST: v = a[(size_t)n * C + c]; break;
                case DP_OP_CONCAT: {
                    int cc = c, k = 0;
                    while (cc >= shapes[k][1]) cc -= shapes[k++][1];
                    v = in[k][((size_t)n * shapes[k][1] + cc) * HW + p];
                    break;
                }
                case DP_OP_SOFTMAX: {
                    double m = -INFINITY, s = 0;
                    for (int q = 0; q < C; q++) m = fmax(m, a[((size_t)n * C + q) * HW + p]);
                    for (int q = 0; q < C; q++) s += exp(a[((size_t)n * C + q) * HW + p] - m);
                    v = exp(a[ai + p] - m) / s;
                    break;
                }
                default: fail();
                }
                ref[o] = v;
            }
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = op;
    node.act = act;
    node.n_in = nin_t;
    node.fw = bnw;
    node.fb = bnb;
    float *y1 = alloc_poisoned(nout), *y3 = alloc_poisoned(nout);
    dp_tview o1 = {N, C, H, W, y1}, o3 = {N, C, H, W, y3};
    assert_int_equal(run(1, &node, ins, &o1), DISOPT_OK);
    assert_int_equal(run(3, &node, ins, &o3), DISOPT_OK);
    double e = nerr(y1, ref, nout);
    if (!(e < 1e-6)) fail_msg("op %d act %d: error %g", (int)op, (int)act, e);
    assert_memory_equal(y1, y3, nout * 4);
    for (int k = 0; k < nin_t; k++) free(in[k]);
    free(ref); free(y1); free(y3); free(bnw); free(bnb);
}

static void test_eltwise(void **state) {
    (void)state;
    const int s1[][4] = {{2, 5, 7, 9}};
    const int o1[4] = {2, 5, 7, 9};
    for (int a = DP_ACT_NONE; a <= DP_ACT_SIGMOID; a++) {
        check_elt(DP_OP_ACT, (dp_act)a, 1, s1, o1);
        check_elt(DP_OP_BN, (dp_act)a, 1, s1, o1);
    }
    const int og[4] = {2, 5, 1, 1};
    check_elt(DP_OP_GAP, DP_ACT_NONE, 1, s1, og);
    const int ssc[][4] = {{2, 5, 7, 9}, {2, 5, 1, 1}};
    check_elt(DP_OP_SCALE_CH, DP_ACT_NONE, 2, ssc, o1);
    const int sse[][4] = {{2, 5, 7, 9}, {2, 5, 1, 1}, {2, 1, 7, 9}};
    check_elt(DP_OP_SCSE, DP_ACT_NONE, 3, sse, o1);
    const int sad[][4] = {{2, 5, 7, 9}, {2, 5, 7, 9}};
    check_elt(DP_OP_ADD, DP_ACT_NONE, 2, sad, o1);
    const int sbc[][4] = {{2, 5, 1, 1}, {2, 3, 7, 9}};
    check_elt(DP_OP_BROADCAST, DP_ACT_NONE, 2, sbc, o1);
    const int scat[][4] = {{2, 3, 7, 9}, {2, 1, 7, 9}, {2, 4, 7, 9}, {2, 2, 7, 9}, {2, 3, 7, 9}};
    const int ocat[4] = {2, 13, 7, 9};
    check_elt(DP_OP_CONCAT, DP_ACT_NONE, 5, scat, ocat);
    const int ssm[][4] = {{3, 2, 6, 5}};
    const int osm[4] = {3, 2, 6, 5};
    check_elt(DP_OP_SOFTMAX, DP_ACT_NONE, 1, ssm, osm);
    const int ssm7[][4] = {{1, 7, 4, 4}};
    const int osm7[4] = {1, 7, 4, 4};
    check_elt(DP_OP_SOFTMAX, DP_ACT_NONE, 1, ssm7, osm7);
}

/* The activations against double-precision references, over [-100, 100] densely near 0 and the clamp
 * edges: swish and sigmoid within a few float ulps (the expf polynomial is ~1 ulp, then two roundings),
 * and the clamps give what they must (swish(-100) a tiny negative, swish(100) = 100, sigmoid in [0, 1]). */
static void test_act_accuracy(void **state) {
    (void)state;
    enum { NX = 200001 };
    float *x = malloc(NX * sizeof(float)), *s = malloc(NX * sizeof(float)), *g = malloc(NX * sizeof(float));
    for (int i = 0; i < NX; i++) {
        const double t = -1.0 + 2.0 * i / (NX - 1); /* cubic spacing: dense near 0 */
        x[i] = (float)(100.0 * t * t * t);
    }
    memcpy(s, x, NX * sizeof(float));
    memcpy(g, x, NX * sizeof(float));
    dp_cpu_act(DP_ACT_SWISH, s, NX);
    dp_cpu_act(DP_ACT_SIGMOID, g, NX);
    double worst_s = 0, worst_g = 0;
    for (int i = 0; i < NX; i++) {
        const double v = x[i], sig = 1.0 / (1.0 + exp(-v)), sw = v * sig;
        /* relative to the reference, with an absolute floor for results far below 1 */
        const double es = fabs(s[i] - sw) / fmax(fabs(sw), 1e-30), eg = fabs(g[i] - sig) / fmax(sig, 1e-30);
        if (v > -80.0 && es > worst_s) worst_s = es; /* below -80 the clamp is by design */
        if (v > -80.0 && eg > worst_g) worst_g = eg;
        assert_true(g[i] >= 0.0f && g[i] <= 1.0f);
    }
    print_message("activation accuracy over [-80, 100]: swish %.3g, sigmoid %.3g relative (float ulp 1.19e-7)\n",
                  worst_s, worst_g);
    assert_true(worst_s < 4.8e-7); /* 4 ulp */
    assert_true(worst_g < 4.8e-7);
    float edge[3] = {-100.0f, 100.0f, 0.0f};
    dp_cpu_act(DP_ACT_SWISH, edge, 3);
    assert_true(edge[0] < 0.0f && edge[0] > -1e-30f);
    assert_true(edge[1] == 100.0f);
    assert_true(edge[2] == 0.0f);
    free(x);
    free(s);
    free(g);
}

/* The interleaved activations (simd.h act512_n / act256_n, DP_ACT_NMAX vectors at once) give each
 * element the bits of the one-vector act512 / act256 and of the scalar dp_cpu_act. */
#define ACTN_COUNT 4096
#ifdef DP_HAVE_SIMD
__attribute__((target("avx512f,fma"))) static long actn_mismatches512(const float *x, dp_act act, const float *ref) {
    long bad = 0;
    for (int i = 0; i < ACTN_COUNT; i += 16 * DP_ACT_NMAX) {
        __m512 v[DP_ACT_NMAX];
        for (int q = 0; q < DP_ACT_NMAX; q++) v[q] = _mm512_loadu_ps(x + i + 16 * q);
        act512_n(v, DP_ACT_NMAX, act);
        for (int q = 0; q < DP_ACT_NMAX; q++) {
            const __m512 one = act512(_mm512_loadu_ps(x + i + 16 * q), act), r = _mm512_loadu_ps(ref + i + 16 * q);
            bad += __builtin_popcount(_mm512_cmpneq_epi32_mask(_mm512_castps_si512(v[q]), _mm512_castps_si512(one)));
            bad += __builtin_popcount(_mm512_cmpneq_epi32_mask(_mm512_castps_si512(v[q]), _mm512_castps_si512(r)));
        }
    }
    return bad;
}

__attribute__((target("avx2,fma"))) static long actn_mismatches256(const float *x, dp_act act, const float *ref) {
    long bad = 0;
    float out[8 * DP_ACT_NMAX], one[8];
    for (int i = 0; i < ACTN_COUNT; i += 8 * DP_ACT_NMAX) {
        __m256 v[DP_ACT_NMAX];
        for (int q = 0; q < DP_ACT_NMAX; q++) v[q] = _mm256_loadu_ps(x + i + 8 * q);
        act256_n(v, DP_ACT_NMAX, act);
        for (int q = 0; q < DP_ACT_NMAX; q++) {
            _mm256_storeu_ps(out + 8 * q, v[q]);
            _mm256_storeu_ps(one, act256(_mm256_loadu_ps(x + i + 8 * q), act));
            bad += memcmp(out + 8 * q, one, sizeof one) != 0;
        }
        bad += memcmp(out, ref + i, sizeof out) != 0;
    }
    return bad;
}
#endif

static void test_act_n(void **state) {
    (void)state;
#ifdef DP_HAVE_SIMD
    float *x = malloc(ACTN_COUNT * sizeof(float)), *ref = malloc(ACTN_COUNT * sizeof(float));
    tu_fill(&g_rng, x, ACTN_COUNT, -100.0f, 100.0f);
    const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 87.3f, -87.3f, 88.0f, -88.0f, 80.0f, -80.0f, 1e30f, -1e30f,
                             0.5f, -0.5f, 3.0e38f, -3.0e38f};
    memcpy(x, special, sizeof special);
    for (int i = 16; i < 1024; i++) x[i] *= 0.01f; /* a dense stretch near 0 */
    const dp_act acts[3] = {DP_ACT_SWISH, DP_ACT_SIGMOID, DP_ACT_RELU};
    __builtin_cpu_init();
    for (int a = 0; a < 3; a++) {
        memcpy(ref, x, ACTN_COUNT * sizeof(float));
        dp_cpu_act(acts[a], ref, ACTN_COUNT);
        if (__builtin_cpu_supports("avx512f")) assert_int_equal(actn_mismatches512(x, acts[a], ref), 0);
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            assert_int_equal(actn_mismatches256(x, acts[a], ref), 0);
    }
    free(x);
    free(ref);
#else
    skip();
#endif
}

static void count_task(void *ctx, int t, int th) {
    (void)th;
    int *hits = ctx;
    __atomic_fetch_add(&hits[t], 1, __ATOMIC_RELAXED);
}

static void test_pool(void **state) {
    (void)state;
    /* the pool runs every task exactly once, for many sizes and thread counts */
    for (int nt = 1; nt <= 5; nt++) {
        dp_pool *p;
        assert_int_equal(dp_pool_create(nt, &p), DISOPT_OK);
        for (int tasks = 0; tasks < 50; tasks += 7) {
            int *hits = calloc((size_t)tasks + 1, sizeof *hits);
            dp_pool_run(p, tasks, count_task, hits);
            for (int t = 0; t < tasks; t++) assert_int_equal(hits[t], 1);
            free(hits);
        }
        dp_pool_destroy(p);
    }
}

int main(void) {
    g_rng = tu_rng_fresh();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv), cmocka_unit_test(test_conv_gap), cmocka_unit_test(test_conv_input_scale), cmocka_unit_test(test_upsample), cmocka_unit_test(test_eltwise),
        cmocka_unit_test(test_pool), cmocka_unit_test(test_act_accuracy), cmocka_unit_test(test_act_n),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
