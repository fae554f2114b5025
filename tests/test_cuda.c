/* test_cuda.c - every op of the CUDA backend against the CPU backend (itself checked against a
 * double reference in test_ops), on fresh random inputs, with device outputs poisoned (NaN) before
 * each run; plus engine-level behaviour (device errors, fallback). Skips cleanly where no CUDA
 * device (or no CUDA module) is available, as in CI. */
#include "test_util.h"
#include "internal.h"

#include <math.h>

static tu_rng g_rng;
static disopt_engine *g_cuda;            /* engine holding the CUDA backend (FP32) */
static disopt_engine *g_half[2];         /* FP16, BF16 */
static dp_backend *g_be;                 /* the backend the op cases run on */
static double g_tol;                     /* tolerance of the current precision (0: the case's own) */
static const char *g_prec = "FP32";

static dp_backend *cuda_be(void) { return g_be; }

/* runs node on backend be with host inputs, returns the host output (caller frees) */
static float *run_on(dp_backend *be, dp_node *node, const dp_tview *ins_host, int n_in, dp_tview out_shape) {
    dp_tview ins[DP_MAX_IN], out = out_shape;
    void *mem[DP_MAX_IN + 2] = {0};
    for (int k = 0; k < n_in; k++) {
        ins[k] = ins_host[k];
        size_t b = be->vt->tensor_bytes(be, ins[k].n, ins[k].c, ins[k].h, ins[k].w);
        assert_int_equal(be->vt->alloc(be, b, &mem[k]), DISOPT_OK);
        ins[k].data = mem[k];
        assert_int_equal(be->vt->upload(be, &ins[k], ins_host[k].data), DISOPT_OK);
    }
    size_t ob = be->vt->tensor_bytes(be, out.n, out.c, out.h, out.w), on = (size_t)out.n * out.c * out.h * out.w;
    assert_int_equal(be->vt->alloc(be, ob, &mem[DP_MAX_IN]), DISOPT_OK);
    out.data = mem[DP_MAX_IN];
    float *poison = malloc(on * sizeof(float));
    for (size_t i = 0; i < on; i++) poison[i] = NAN;
    assert_int_equal(be->vt->upload(be, &out, poison), DISOPT_OK);
    assert_int_equal(be->vt->prepare_node(be, node), DISOPT_OK);
    size_t wsb = be->vt->workspace_bytes(be, node, ins, &out);
    void *ws = NULL;
    if (wsb) assert_int_equal(be->vt->alloc(be, wsb, &ws), DISOPT_OK);
    disopt_status s = be->vt->run_node(be, node, ins, &out, ws, wsb);
    if (s != DISOPT_OK) fail_msg("%s: %s", be->vt->name, disopt_last_error());
    assert_int_equal(be->vt->synchronize(be), DISOPT_OK);
    assert_int_equal(be->vt->download(be, poison, &out), DISOPT_OK);
    be->vt->release_node(be, node);
    if (ws) be->vt->free(be, ws);
    for (int k = 0; k < DP_MAX_IN + 2; k++)
        if (mem[k]) be->vt->free(be, mem[k]);
    return poison;
}

static double nerr(const float *a, const float *b, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(b[i]));
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d; /* NaN (unwritten) wins */
    }
    return e / (m > 0 ? m : 1);
}

/* CUDA vs CPU on one node; returns the normalised error */
static double compare(dp_node *node, dp_tview *ins, int n_in, dp_tview out, double tol, const char *what) {
    dp_backend *cpu;
    assert_int_equal(dp_backend_cpu_create(NULL, 2, &cpu), DISOPT_OK);
    float *a = run_on(cpu, node, ins, n_in, out);
    float *b = run_on(cuda_be(), node, ins, n_in, out);
    cpu->vt->destroy(cpu);
    size_t n = (size_t)out.n * out.c * out.h * out.w;
    double e = nerr(b, a, n);
    if (g_tol > 0) tol = g_tol;
    printf("# %-44s cuda %s vs cpu: %.3g\n", what, g_prec, e);
    if (!(e <= tol)) fail_msg("%s: cuda %s vs cpu error %g > %g", what, g_prec, e, tol);
    free(a);
    free(b);
    return e;
}

static float *rnd(size_t n, float lo, float hi) {
    float *p = malloc(n * sizeof(float));
    tu_fill(&g_rng, p, n, lo, hi);
    return p;
}

static void conv_case(int n, int cin, int cout, int h, int w, int k, int s, int d, int g, int pt, int pb, int pl,
                      int pr, int bias, dp_act act, int gate) {
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = DP_OP_CONV;
    node.act = act;
    node.conv = (dp_conv_params){cin, cout, k, k, s, s, d, d, g, pt, pb, pl, pr};
    node.fw = rnd((size_t)cout * (cin / g) * k * k, -0.5f, 0.5f);
    node.fb = bias ? rnd((size_t)cout, -1, 1) : NULL;
    int oh = (h + pt + pb - d * (k - 1) - 1) / s + 1, ow = (w + pl + pr - d * (k - 1) - 1) / s + 1;
    dp_tview ins[2] = {{n, cin, h, w, rnd((size_t)n * cin * h * w, -2, 2)}, {n, cin, 1, 1, rnd((size_t)n * cin, 0, 1)}};
    node.n_in = gate ? 2 : 1;
    char what[128];
    snprintf(what, sizeof what, "conv n%d %d->%d %dx%d k%d s%d d%d g%d pad %d%d%d%d%s", n, cin, cout, h, w, k, s, d, g,
             pt, pb, pl, pr, gate ? " gated" : "");
    compare(&node, ins, node.n_in, (dp_tview){n, cout, oh, ow, NULL}, 1e-5, what);
    free(node.fw);
    free(node.fb);
    free(ins[0].data);
    free(ins[1].data);
}

static void conv_cases(void) {
    conv_case(2, 16, 24, 33, 29, 1, 1, 1, 1, 0, 0, 0, 0, 1, DP_ACT_SWISH, 0);  /* 1x1, bias, swish */
    conv_case(1, 40, 32, 20, 20, 1, 1, 1, 1, 0, 0, 0, 0, 0, DP_ACT_NONE, 1);   /* projection with SE gate */
    conv_case(2, 4, 40, 64, 48, 3, 2, 1, 1, 0, 1, 0, 1, 1, DP_ACT_SWISH, 0);   /* stem: static asymmetric pad */
    conv_case(1, 24, 24, 31, 37, 3, 1, 1, 24, 1, 1, 1, 1, 1, DP_ACT_SWISH, 0); /* depthwise 3x3 */
    conv_case(2, 32, 32, 32, 32, 5, 2, 1, 32, 1, 2, 1, 2, 1, DP_ACT_SWISH, 0); /* depthwise 5x5/s2 asym */
    conv_case(1, 48, 48, 16, 16, 3, 1, 12, 48, 12, 12, 12, 12, 0, DP_ACT_NONE, 0); /* ASPP separable, dil 12 */
    conv_case(1, 32, 32, 12, 12, 5, 1, 2, 32, 4, 4, 4, 4, 1, DP_ACT_SWISH, 0);  /* dilated stage 5 */
    conv_case(1, 64, 2, 40, 40, 3, 1, 1, 1, 1, 1, 1, 1, 1, DP_ACT_NONE, 0);     /* student head 3x3 -> 2 */
    conv_case(2, 256, 2, 33, 17, 3, 1, 1, 1, 1, 1, 1, 1, 1, DP_ACT_NONE, 0);    /* head, batch 2 */
    conv_case(1, 8, 3, 20, 24, 3, 2, 2, 1, 1, 2, 2, 1, 1, DP_ACT_RELU, 0);      /* few outputs, odd geometry */
    conv_case(2, 48, 3, 21, 19, 3, 1, 2, 1, 2, 1, 2, 1, 1, DP_ACT_SIGMOID, 0);  /* head as tap GEMM: dilated, asym */
    conv_case(2, 16, 16, 70, 45, 3, 2, 1, 16, 0, 1, 0, 1, 1, DP_ACT_SWISH, 0);  /* depthwise s2, several tiles */
    /* widths that are whole 16-byte vectors: the vectorised tile loads, the tile starting d0 columns
     * left of the window (d0 = -pl mod VEC: 0, VEC - 1, VEC - 2), several tiles across and down */
    conv_case(2, 8, 8, 70, 64, 3, 1, 1, 8, 1, 1, 1, 1, 1, DP_ACT_SWISH, 0);    /* 3x3/s1, pad 1 */
    conv_case(1, 8, 8, 66, 72, 3, 2, 1, 8, 0, 1, 0, 1, 1, DP_ACT_SIGMOID, 0);  /* 3x3/s2, static pad (0,1) */
    conv_case(2, 6, 6, 40, 40, 5, 1, 1, 6, 2, 2, 2, 2, 0, DP_ACT_RELU, 0);     /* 5x5/s1, pad 2 */
    conv_case(1, 4, 4, 24, 16, 5, 2, 1, 4, 2, 2, 2, 2, 1, DP_ACT_NONE, 0);     /* 5x5/s2, pad 2 */
    conv_case(1, 8, 8, 32, 32, 3, 1, 36, 8, 36, 36, 36, 36, 0, DP_ACT_NONE, 0); /* ASPP rate 36 */
    conv_case(1, 4, 4, 20, 20, 3, 1, 48, 4, 48, 48, 48, 48, 0, DP_ACT_NONE, 0); /* tile too big: fallback */
    conv_case(33, 2048, 2048, 2, 2, 3, 1, 1, 2048, 1, 1, 1, 1, 1, DP_ACT_SWISH, 0); /* N*C > 65535 planes */
    conv_case(1, 304, 256, 24, 24, 1, 1, 1, 1, 0, 0, 0, 0, 0, DP_ACT_RELU, 0); /* decoder 1x1 + ReLU */
    conv_case(1, 16, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, DP_ACT_SIGMOID, 0);   /* SE expand on 1x1 */
}

/* A depthwise conv with the SE pooling of its output fused in (run_conv_gap), on one backend:
 * returns the conv output and, in *gap, the pooled N x C. */
static float *run_conv_gap_on(dp_backend *be, dp_node *node, const dp_tview *in_host, dp_tview out, float **gap) {
    dp_tview in = *in_host, gv = {out.n, out.c, 1, 1, NULL};
    void *mi = NULL, *mo = NULL, *mg = NULL, *ws = NULL;
    assert_int_equal(be->vt->alloc(be, be->vt->tensor_bytes(be, in.n, in.c, in.h, in.w), &mi), DISOPT_OK);
    in.data = mi;
    assert_int_equal(be->vt->upload(be, &in, in_host->data), DISOPT_OK);
    const size_t on = (size_t)out.n * out.c * out.h * out.w, gn = (size_t)out.n * out.c;
    assert_int_equal(be->vt->alloc(be, be->vt->tensor_bytes(be, out.n, out.c, out.h, out.w), &mo), DISOPT_OK);
    assert_int_equal(be->vt->alloc(be, be->vt->tensor_bytes(be, out.n, out.c, 1, 1), &mg), DISOPT_OK);
    out.data = mo;
    gv.data = mg;
    float *o = malloc(on * sizeof(float)), *g = malloc(gn * sizeof(float));
    for (size_t i = 0; i < on; i++) o[i] = NAN;
    for (size_t i = 0; i < gn; i++) g[i] = NAN;
    assert_int_equal(be->vt->upload(be, &out, o), DISOPT_OK); /* poisoned */
    assert_int_equal(be->vt->upload(be, &gv, g), DISOPT_OK);
    assert_int_equal(be->vt->prepare_node(be, node), DISOPT_OK);
    size_t wsb = be->vt->workspace_bytes(be, node, &in, &out);
    if (wsb) assert_int_equal(be->vt->alloc(be, wsb, &ws), DISOPT_OK);
    assert_non_null(be->vt->run_conv_gap);
    if (be->vt->run_conv_gap(be, node, &in, &out, &gv, ws, wsb) != DISOPT_OK) fail_msg("%s", disopt_last_error());
    assert_int_equal(be->vt->synchronize(be), DISOPT_OK);
    assert_int_equal(be->vt->download(be, o, &out), DISOPT_OK);
    assert_int_equal(be->vt->download(be, g, &gv), DISOPT_OK);
    be->vt->release_node(be, node);
    if (ws) be->vt->free(be, ws);
    be->vt->free(be, mi);
    be->vt->free(be, mo);
    be->vt->free(be, mg);
    *gap = g;
    return o;
}

/* a depthwise k x k conv node with bias and swish, random weights (caller frees fw, fb) */
static dp_node dw_node(int c, int k, int s, int pt, int pb, int pl, int pr) {
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = DP_OP_CONV;
    node.act = DP_ACT_SWISH;
    node.n_in = 1;
    node.conv = (dp_conv_params){c, c, k, k, s, s, 1, 1, c, pt, pb, pl, pr};
    node.fw = rnd((size_t)c * k * k, -0.5f, 0.5f);
    node.fb = rnd((size_t)c, -1, 1);
    return node;
}

static void conv_gap_case(int n, int c, int h, int w, int k, int s, int pt, int pb, int pl, int pr) {
    dp_node node = dw_node(c, k, s, pt, pb, pl, pr);
    const int oh = (h + pt + pb - k) / s + 1, ow = (w + pl + pr - k) / s + 1;
    dp_tview in = {n, c, h, w, rnd((size_t)n * c * h * w, -2, 2)}, out = {n, c, oh, ow, NULL};
    dp_backend *cpu;
    assert_int_equal(dp_backend_cpu_create(NULL, 2, &cpu), DISOPT_OK);
    float *ga, *gb, *a = run_conv_gap_on(cpu, &node, &in, out, &ga), *b = run_conv_gap_on(cuda_be(), &node, &in, out, &gb);
    cpu->vt->destroy(cpu);
    const double ey = nerr(b, a, (size_t)n * c * oh * ow), eg = nerr(gb, ga, (size_t)n * c);
    const double tol = g_tol > 0 ? g_tol : 2e-6;
    printf("# depthwise+pool n%d c%d %dx%d k%d s%d  cuda %s vs cpu: conv %.3g, pooled %.3g\n", n, c, h, w, k, s, g_prec,
           ey, eg);
    if (!(ey <= tol && eg <= tol)) fail_msg("depthwise+pool: cuda %s vs cpu %g / %g > %g", g_prec, ey, eg, tol);
    free(a); free(b); free(ga); free(gb); free(in.data); free(node.fw); free(node.fb);
}

static void conv_gap_cases(void) {
    conv_gap_case(2, 24, 70, 45, 3, 1, 1, 1, 1, 1);  /* several tiles per plane, ragged edges */
    conv_gap_case(3, 40, 64, 64, 5, 2, 1, 2, 1, 2);  /* 5x5 stride 2, static asymmetric pad */
    conv_gap_case(1, 16, 8, 8, 3, 1, 1, 1, 1, 1);    /* one partial tile */
    conv_gap_case(2, 12, 96, 128, 3, 2, 0, 1, 0, 1); /* vectorised loads, 3x3/s2, several tiles */
}

/* The depthwise kernel with its activations compiled in against the same kernel choosing them at run
 * time (DISOPT_CUDA_DW_RTACT=1), on the current precision: bit for bit the same conv output and pooled
 * sums; and the conv alone (run_node) = the conv of the conv + pooling pass. */
static void dw_act_case(int n, int c, int h, int w, int k, int s, int pt, int pb, int pl, int pr) {
    dp_node node = dw_node(c, k, s, pt, pb, pl, pr);
    const int oh = (h + pt + pb - k) / s + 1, ow = (w + pl + pr - k) / s + 1;
    const size_t on = (size_t)n * c * oh * ow, gn = (size_t)n * c;
    dp_tview in = {n, c, h, w, rnd((size_t)n * c * h * w, -2, 2)}, out = {n, c, oh, ow, NULL};
    float *ga, *gr, *a = run_conv_gap_on(cuda_be(), &node, &in, out, &ga);
    float *p = run_on(cuda_be(), &node, &in, 1, out);
    setenv("DISOPT_CUDA_DW_RTACT", "1", 1);
    float *r = run_conv_gap_on(cuda_be(), &node, &in, out, &gr);
    unsetenv("DISOPT_CUDA_DW_RTACT");
    printf("# depthwise, activations compiled in vs at run time, n%d c%d %dx%d k%d s%d %s\n", n, c, h, w, k, s, g_prec);
    if (memcmp(a, r, on * sizeof(float)) || memcmp(ga, gr, gn * sizeof(float)) || memcmp(a, p, on * sizeof(float)))
        fail_msg("depthwise: compiled-in != run-time activations (n%d c%d %dx%d k%d s%d %s)", n, c, h, w, k, s, g_prec);
    free(a); free(ga); free(p); free(r); free(gr); free(in.data); free(node.fw); free(node.fb);
}

static void dw_act_cases(void) {
    dw_act_case(2, 40, 64, 64, 3, 1, 1, 1, 1, 1);    /* 3x3/s1, 4 tiles per plane */
    dw_act_case(32, 96, 32, 32, 3, 1, 1, 1, 1, 1);   /* one tile per plane */
    dw_act_case(3, 24, 96, 128, 3, 2, 0, 1, 0, 1);   /* 3x3/s2, static asymmetric pad */
    dw_act_case(2, 20, 80, 64, 5, 1, 2, 2, 2, 2);    /* 5x5/s1, ragged tiles down */
    dw_act_case(4, 16, 48, 48, 5, 2, 1, 2, 1, 2);    /* 5x5/s2, partial tiles */
    dw_act_case(1, 7, 16, 16, 3, 1, 1, 1, 1, 1);     /* a partial tile */
}

static void eltwise_case(dp_op op, dp_act act, int n, int c, int h, int w) {
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = op;
    node.act = act;
    size_t nn = (size_t)n * c * h * w;
    dp_tview ins[3] = {{n, c, h, w, rnd(nn, -6, 6)}, {n, c, h, w, rnd(nn, -2, 2)}, {n, 1, h, w, rnd((size_t)n * h * w, 0, 1)}};
    dp_tview out = {n, c, h, w, NULL};
    int n_in = 1;
    const char *name = "";
    switch (op) {
    case DP_OP_ACT: name = act == DP_ACT_RELU ? "relu" : act == DP_ACT_SWISH ? "swish" : "sigmoid"; break;
    case DP_OP_GAP: name = "gap"; out.h = out.w = 1; break;
    case DP_OP_SCALE_CH: name = "scale_ch"; n_in = 2; ins[1].h = ins[1].w = 1; break;
    case DP_OP_SCSE: name = "scse"; n_in = 3; ins[1].h = ins[1].w = 1; break;
    case DP_OP_ADD: name = "add"; n_in = 2; break;
    case DP_OP_CONCAT: name = "concat"; n_in = 2; ins[1].c = c / 2; out.c = c + c / 2; break;
    case DP_OP_BROADCAST: name = "broadcast"; ins[0].h = ins[0].w = 1; n_in = 2; break;
    case DP_OP_UPSAMPLE: name = "upsample x4"; node.scale = 4; out.h = h * 4; out.w = w * 4; break;
    case DP_OP_SOFTMAX: name = "softmax"; break;
    default: break;
    }
    node.n_in = n_in;
    char what[96];
    snprintf(what, sizeof what, "%s n%d c%d %dx%d", name, n, c, h, w);
    compare(&node, ins, n_in, out, op == DP_OP_GAP || op == DP_OP_ACT || op == DP_OP_SOFTMAX ? 2e-6 : 1e-6, what);
    for (int k = 0; k < 3; k++) free(ins[k].data);
}

static void eltwise_cases(void) {
    eltwise_case(DP_OP_ACT, DP_ACT_RELU, 2, 5, 17, 13);
    eltwise_case(DP_OP_ACT, DP_ACT_SWISH, 2, 5, 17, 13);
    eltwise_case(DP_OP_ACT, DP_ACT_SIGMOID, 1, 3, 64, 64);
    eltwise_case(DP_OP_GAP, DP_ACT_NONE, 2, 7, 33, 31);
    eltwise_case(DP_OP_GAP, DP_ACT_NONE, 1, 3, 100, 90); /* large planes: block per plane */
    eltwise_case(DP_OP_SCALE_CH, DP_ACT_NONE, 2, 6, 9, 11);
    eltwise_case(DP_OP_SCSE, DP_ACT_NONE, 2, 6, 9, 11);
    eltwise_case(DP_OP_SCSE, DP_ACT_NONE, 2, 6, 16, 16); /* 16-byte vectors */
    eltwise_case(DP_OP_ADD, DP_ACT_NONE, 1, 4, 10, 10);  /* vectors */
    eltwise_case(DP_OP_ADD, DP_ACT_NONE, 1, 3, 7, 5);    /* odd count: scalar */
    eltwise_case(DP_OP_UPSAMPLE, DP_ACT_NONE, 1, 2, 5, 7); /* Wo 28: vectors of 4 floats, scalar halves */
    eltwise_case(DP_OP_CONCAT, DP_ACT_NONE, 2, 6, 7, 5);
    eltwise_case(DP_OP_CONCAT, DP_ACT_NONE, 3, 10, 16, 24); /* planes of whole 16-byte vectors */
    eltwise_case(DP_OP_BROADCAST, DP_ACT_NONE, 2, 8, 13, 9);
    eltwise_case(DP_OP_UPSAMPLE, DP_ACT_NONE, 2, 3, 16, 12);
    eltwise_case(DP_OP_SOFTMAX, DP_ACT_NONE, 2, 2, 20, 20);
}

/* each op case on FP32 (tolerance per case, ~1e-6), FP16 (5e-3) and BF16 (4e-2): half storage
 * rounds every tensor to 11 / 8 significant bits, accumulation stays float */
static void for_each_precision(void (*cases)(void)) {
    disopt_engine *es[3] = {g_cuda, g_half[0], g_half[1]};
    const double tols[3] = {0, 5e-3, 4e-2};
    const char *names[3] = {"FP32", "FP16", "BF16"};
    for (int i = 0; i < 3; i++) {
        if (!es[i]) fail_msg("no CUDA engine for %s", names[i]);
        g_be = es[i]->backend;
        g_tol = tols[i];
        g_prec = names[i];
        cases();
    }
    g_be = g_cuda->backend;
    g_tol = 0;
    g_prec = "FP32";
}

static void test_conv(void **s) {
    (void)s;
    if (!g_cuda) skip();
    for_each_precision(conv_cases);
}

static void test_eltwise(void **s) {
    (void)s;
    if (!g_cuda) skip();
    for_each_precision(eltwise_cases);
}

static void test_dw_act(void **s) {
    (void)s;
    if (!g_cuda) skip();
    for_each_precision(dw_act_cases);
}

/* the 16-byte vector kernels (add, SCSE, upsampling) against the scalar ones (DISOPT_CUDA_NO_VEC=1):
 * the same float expression per element, so the same bits */
static void vec_case(dp_op op, int n, int c, int h, int w) {
    dp_node node;
    memset(&node, 0, sizeof node);
    node.op = op;
    size_t nn = (size_t)n * c * h * w;
    dp_tview ins[3] = {{n, c, h, w, rnd(nn, -6, 6)}, {n, c, h, w, rnd(nn, -2, 2)}, {n, 1, h, w, rnd((size_t)n * h * w, 0, 1)}};
    dp_tview out = {n, c, h, w, NULL};
    int n_in = 2;
    if (op == DP_OP_SCSE) n_in = 3, ins[1].h = ins[1].w = 1;
    if (op == DP_OP_UPSAMPLE) n_in = 1, node.scale = 4, out.h = h * 4, out.w = w * 4;
    node.n_in = n_in;
    const size_t on = (size_t)out.n * out.c * out.h * out.w;
    float *a = run_on(cuda_be(), &node, ins, n_in, out);
    setenv("DISOPT_CUDA_NO_VEC", "1", 1);
    float *b = run_on(cuda_be(), &node, ins, n_in, out);
    unsetenv("DISOPT_CUDA_NO_VEC");
    printf("# vector vs scalar kernel, op %d n%d c%d %dx%d %s: %s\n", (int)op, n, c, h, w, g_prec,
           memcmp(a, b, on * sizeof(float)) ? "DIFFER" : "identical");
    if (memcmp(a, b, on * sizeof(float))) fail_msg("op %d: vector kernel != scalar kernel (%s)", (int)op, g_prec);
    free(a); free(b);
    for (int k = 0; k < 3; k++) free(ins[k].data);
}

static void vec_cases(void) {
    vec_case(DP_OP_ADD, 2, 8, 32, 32);
    vec_case(DP_OP_SCSE, 2, 8, 32, 32);
    vec_case(DP_OP_UPSAMPLE, 2, 8, 32, 32);
}

static void test_vec_kernels(void **s) {
    (void)s;
    if (!g_cuda) skip();
    for_each_precision(vec_cases);
}

static void test_conv_gap(void **s) {
    (void)s;
    if (!g_cuda) skip();
    for_each_precision(conv_gap_cases);
}

static void test_bad_device(void **s) {
    (void)s;
    if (!g_cuda) skip();
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.backend = DISOPT_BACKEND_CUDA;
    eo.device = 999;
    disopt_engine *e = NULL;
    assert_int_equal(disopt_engine_create(&eo, &e), DISOPT_ERR_INVALID_ARGUMENT);
    assert_null(e);
    assert_non_null(strstr(disopt_last_error(), "999"));
}

static int setup(void **s) {
    (void)s;
    g_rng = tu_rng_fresh();
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.backend = DISOPT_BACKEND_CUDA;
    if (disopt_engine_create(&eo, &g_cuda) != DISOPT_OK) {
        printf("# CUDA backend unavailable: %s\n", disopt_last_error());
        g_cuda = NULL;
        return 0;
    }
    g_be = g_cuda->backend;
    eo.precision = DISOPT_PRECISION_FP16;
    if (disopt_engine_create(&eo, &g_half[0]) != DISOPT_OK) g_half[0] = NULL;
    eo.precision = DISOPT_PRECISION_BF16;
    if (disopt_engine_create(&eo, &g_half[1]) != DISOPT_OK) g_half[1] = NULL;
    return 0;
}

static int teardown(void **s) {
    (void)s;
    disopt_engine_destroy(g_cuda);
    disopt_engine_destroy(g_half[0]);
    disopt_engine_destroy(g_half[1]);
    return 0;
}


/* the full student B3 (the golden's BN statistics, dwgen-1 convs) written to a temporary file */
static void make_student_b3(char *path, size_t len, const char *tag) {
    char cmd[600];
    tu_tmpname(path, len, tag);
    snprintf(cmd, sizeof cmd, "%s %s/golden/student_b3.safetensors %s > /dev/null", DISOPT_TESTMODEL, DISOPT_TESTDATA,
             path);
    assert_int_equal(system(cmd), 0);
}

/* whole model, CUDA vs CPU, through the public API: several fresh inputs in a row (the first run
 * records a CUDA graph, the next ones replay it), another set of outputs (another graph), another
 * size (new plan), taps */
static void test_model_replay(void **s) {
    (void)s;
    if (!g_cuda) skip();
    char path[256];
    make_student_b3(path, sizeof path, "cuda_model");
    disopt_engine *cpu;
    disopt_model *mc, *mg;
    assert_int_equal(disopt_engine_create(NULL, &cpu), DISOPT_OK);
    assert_int_equal(disopt_model_load(cpu, path, &mc), DISOPT_OK);
    assert_int_equal(disopt_model_load(g_cuda, path, &mg), DISOPT_OK);
    remove(path);
    const int sizes[][3] = {{2, 64, 96}, {2, 64, 96}, {2, 64, 96}, {1, 128, 64}, {2, 64, 96}};
    for (int r = 0; r < 5; r++) {
        const int N = sizes[r][0], H = sizes[r][1], W = sizes[r][2];
        size_t nin = (size_t)N * 4 * H * W, nl = (size_t)N * 2 * H * W, np = (size_t)N * H * W;
        float *x = rnd(nin, 0, 60), *la = malloc(nl * 4), *lb = malloc(nl * 4), *pa = malloc(np * 4),
              *pb = malloc(np * 4);
        int shp[4];
        assert_int_equal(disopt_model_tap_shape(mc, "f3", N, H, W, shp), DISOPT_OK);
        size_t nt = (size_t)shp[0] * shp[1] * shp[2] * shp[3];
        float *ta = malloc(nt * 4), *tb = malloc(nt * 4);
        disopt_tap tapa = {"f3", ta}, tapb = {"f3", tb};
        const int with_tap = r == 2; /* another set of wanted tensors: another graph */
        assert_int_equal(disopt_model_normalize(mc, x, N, H, W), DISOPT_OK); /* SAR-like raw 0..60 */
        disopt_outputs oa = {la, pa, NULL, NULL, with_tap ? &tapa : NULL, with_tap};
        disopt_outputs ob = {lb, pb, NULL, NULL, with_tap ? &tapb : NULL, with_tap};
        assert_int_equal(disopt_model_infer(mc, x, N, 4, H, W, &oa), DISOPT_OK);
        if (disopt_model_infer(mg, x, N, 4, H, W, &ob) != DISOPT_OK) fail_msg("%s", disopt_last_error());
        double el = nerr(lb, la, nl), ep = 0;
        for (size_t i = 0; i < np; i++) ep = fmax(ep, fabs((double)pa[i] - pb[i]));
        printf("# model run %d (%dx4x%dx%d%s): logits %.3g, probability max abs %.3g\n", r, N, H, W,
               with_tap ? ", tap f3" : "", el, ep);
        assert_true(el < 1e-4 && ep < 1e-4);
        if (with_tap) assert_true(nerr(tb, ta, nt) < 1e-4);
        free(x); free(la); free(lb); free(pa); free(pb); free(ta); free(tb);
    }
    disopt_model_destroy(mc);
    disopt_model_destroy(mg);
    disopt_engine_destroy(cpu);
}

/* A full batch (32 windows of 512 x 512, the driver's batch) gives every image what it gives that
 * image alone, in FP32 and FP16, and image 0 matches the CPU backend: no index, grid or batch
 * stride of a kernel may depend on the batch size. */
static void test_batch32(void **s) {
    (void)s;
    if (!g_cuda) skip();
    char path[256];
    make_student_b3(path, sizeof path, "cuda_b32");
    const int N = 32, H = 512, W = 512;
    const size_t hw = (size_t)H * W, per_in = 4 * hw, per_l = 2 * hw;
    float *x = rnd((size_t)N * per_in, 0, 60), *lb = malloc((size_t)N * per_l * 4), *l1 = malloc(per_l * 4),
          *lc = malloc(per_l * 4);
    assert_non_null(lb);
    disopt_engine *cpu;
    disopt_model *mc;
    assert_int_equal(disopt_engine_create(NULL, &cpu), DISOPT_OK);
    assert_int_equal(disopt_model_load(cpu, path, &mc), DISOPT_OK);
    assert_int_equal(disopt_model_normalize(mc, x, N, H, W), DISOPT_OK);
    disopt_outputs oc = {lc, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(disopt_model_infer(mc, x, 1, 4, H, W, &oc), DISOPT_OK);
    disopt_engine *engs[2] = {g_cuda, g_half[0]};
    for (int k = 0; k < 2; k++) {
        if (!engs[k]) continue;
        disopt_model *m;
        assert_int_equal(disopt_model_load(engs[k], path, &m), DISOPT_OK);
        for (size_t i = 0; i < (size_t)N * per_l; i++) lb[i] = NAN; /* poisoned */
        disopt_outputs ob = {lb, NULL, NULL, NULL, NULL, 0}, o1 = {l1, NULL, NULL, NULL, NULL, 0};
        if (disopt_model_infer(m, x, N, 4, H, W, &ob) != DISOPT_OK) fail_msg("%s", disopt_last_error());
        double worst = 0;
        for (int b = 0; b < N; b++) {
            if (disopt_model_infer(m, x + (size_t)b * per_in, 1, 4, H, W, &o1) != DISOPT_OK)
                fail_msg("%s", disopt_last_error());
            worst = fmax(worst, nerr(lb + (size_t)b * per_l, l1, per_l));
        }
        const double ec = nerr(lb, lc, per_l);
        printf("# %s batch 32 vs one by one: worst image %.3g; image 0 vs CPU FP32: %.3g\n", k ? "FP16" : "FP32",
               worst, ec);
        assert_true(worst < (k ? 2e-2 : 1e-4));
        assert_true(ec < (k ? 5e-2 : 1e-4));
        disopt_model_destroy(m);
    }
    disopt_model_destroy(mc);
    disopt_engine_destroy(cpu);
    remove(path);
    free(x); free(lb); free(l1); free(lc);
}

/* The probability output in the half modes is the softmax's building plane (channel 1) of every
 * image, as the same run's logits say: p = 1 / (1 + exp(l0 - l1)), to the storage's rounding. */
static void test_probability_half(void **s) {
    (void)s;
    if (!g_cuda) skip();
    char path[256];
    make_student_b3(path, sizeof path, "cuda_prob");
    for (int k = 0; k < 2; k++) {
        if (!g_half[k]) continue;
        disopt_model *m;
        assert_int_equal(disopt_model_load(g_half[k], path, &m), DISOPT_OK);
        const int N = 3, H = 64, W = 64;
        const size_t hw = (size_t)H * W;
        float *x = rnd((size_t)N * 4 * hw, 0, 60), *l = malloc((size_t)N * 2 * hw * 4), *p = malloc((size_t)N * hw * 4);
        assert_int_equal(disopt_model_normalize(m, x, N, H, W), DISOPT_OK);
        for (size_t i = 0; i < (size_t)N * hw; i++) p[i] = -1.0f; /* poisoned */
        disopt_outputs o = {l, p, NULL, NULL, NULL, 0};
        if (disopt_model_infer(m, x, N, 4, H, W, &o) != DISOPT_OK) fail_msg("%s", disopt_last_error());
        double e = 0;
        for (int b = 0; b < N; b++)
            for (size_t i = 0; i < hw; i++) {
                const double l0 = l[(size_t)b * 2 * hw + i], l1 = l[((size_t)b * 2 + 1) * hw + i];
                e = fmax(e, fabs(p[(size_t)b * hw + i] - 1.0 / (1.0 + exp(l0 - l1))));
            }
        printf("# %s probability vs the logits' softmax: max abs %.3g\n", k ? "BF16" : "FP16", e);
        assert_true(e < (k ? 2e-2 : 3e-3));
        free(x); free(l); free(p);
        disopt_model_destroy(m);
    }
    remove(path);
}

/* Pinned host buffers work as inputs and outputs, NaN/Inf are found on the device with the
 * location of the first one, and the model runs normally after such a refusal. */
static void test_input_check_pinned(void **s) {
    (void)s;
    if (!g_cuda) skip();
    char path[256];
    make_student_b3(path, sizeof path, "cuda_nan");
    disopt_model *mg;
    assert_int_equal(disopt_model_load(g_cuda, path, &mg), DISOPT_OK);
    remove(path);
    const int N = 2, H = 64, W = 64;
    const size_t nin = (size_t)N * 4 * H * W, nl = (size_t)N * 2 * H * W;
    float *xr = rnd(nin, 0, 60), *ref = malloc(nl * 4);
    void *xp = NULL, *lp = NULL;
    assert_int_equal(disopt_engine_host_alloc(g_cuda, nin * 4, &xp), DISOPT_OK);
    assert_int_equal(disopt_engine_host_alloc(g_cuda, nl * 4, &lp), DISOPT_OK);
    float *x = xp, *l = lp;
    assert_int_equal(disopt_model_normalize(mg, xr, N, H, W), DISOPT_OK);
    memcpy(x, xr, nin * 4);
    disopt_outputs o = {ref, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(disopt_model_infer(mg, xr, N, 4, H, W, &o), DISOPT_OK); /* ordinary memory */
    o.fused_logits = l;
    for (int k = 0; k < 3; k++) {
        const size_t at = k == 0 ? (size_t)1 * 4 * H * W + 2 * H * W + 5 * W + 7 : nin - 1;
        const float saved = x[at];
        if (k < 2) x[at] = k == 0 ? NAN : -INFINITY;
        disopt_status st = disopt_model_infer(mg, x, N, 4, H, W, &o);
        x[at] = saved;
        if (k < 2) {
            assert_int_equal(st, DISOPT_ERR_INPUT);
            printf("# refused: %s\n", disopt_last_error());
            assert_non_null(strstr(disopt_last_error(),
                                    k == 0 ? "image 1, band 2, row 5, col 7" : "image 1, band 3, row 63, col 63"));
        } else {
            assert_int_equal(st, DISOPT_OK);
            assert_memory_equal(l, ref, nl * 4); /* pinned == ordinary memory, bit for bit */
        }
    }
    disopt_engine_host_free(g_cuda, xp);
    disopt_engine_host_free(g_cuda, lp);
    free(xr);
    free(ref);
    disopt_model_destroy(mg);
}

/* without a device (CI) the engine must say so cleanly */
static void test_no_device_message(void **s) {
    (void)s;
    if (g_cuda) skip();
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.backend = DISOPT_BACKEND_CUDA;
    disopt_engine *e = NULL;
    assert_int_equal(disopt_engine_create(&eo, &e), DISOPT_ERR_UNSUPPORTED);
    assert_null(e);
    assert_true(strstr(disopt_last_error(), "CUDA") || strstr(disopt_last_error(), "cuda"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_device_message),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_eltwise),
        cmocka_unit_test(test_conv_gap),
        cmocka_unit_test(test_dw_act),
        cmocka_unit_test(test_vec_kernels),
        cmocka_unit_test(test_bad_device),
        cmocka_unit_test(test_model_replay),
        cmocka_unit_test(test_input_check_pinned),
        cmocka_unit_test(test_probability_half),
        cmocka_unit_test(test_batch32),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
