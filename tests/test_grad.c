/* test_grad.c - the training kernels of core/train/grad_ops.h (issue 5):
 *  - every op's backward against central finite differences of L = sum(out * r), in double, on the
 *    double instantiation (random inputs from a fixed seed, none near zero); gradients are added
 *    onto a random prefill, which checks the "backward adds" convention too;
 *  - the float instantiation against the double one (forward and every gradient), and the double
 *    one's _mt kernels on a 3-thread pool against the caller's thread: bitwise equal (the plain
 *    kernels, which the goldens and the mask tests call, are the _mt ones without a pool);
 *  - BN's running statistics against hand-computed values (momentum 0.01 and 0.1);
 *  - Philox4x32-10 known answers, the stream layout, dropout and drop-connect masks (statistics,
 *    scaling, determinism, backward with the forward's mask), the drop-connect rate schedule;
 *  - a whole MBConv block (depthwise, BN, swish, SE, 1x1, BN, drop-connect, residual) composed
 *    from the kernels, by finite differences: the fan-outs rely on backward adding;
 *  - PyTorch 1.13 goldens (testdata/train/grad_golden.safetensors, testdata/gen/make_grad_golden.py):
 *    conv with stride/dilation/groups/asymmetric pad, depthwise conv, BN training forward/backward
 *    with the running-stat update, bilinear x4, swish, softmax, drop-connect.
 * Seeds are fixed (DISOPT_TEST_SEED overrides the input seed). */
#include "internal.h"
#include "test_util.h"
#include "train/grad_ops.h"

#include <math.h>

#define MAXT 12

/* ---------------------------------------------------------------- harness */
typedef struct gcase gcase;
/* prec 32 or 64: buffers are float or double; in[i] for i < n_in (the differentiable inputs) */
typedef disopt_status (*fwd_fn)(const gcase *c, int prec, void *const *in, void *out);
typedef disopt_status (*bwd_fn)(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                                void *const *din);

struct gcase {
    const char *name;
    int n_in;
    size_t in_len[MAXT];
    size_t out_len;
    fwd_fn fwd;
    bwd_fn bwd;
    /* op parameters */
    dp_conv_params cp;
    int n, c, h, w, f, has_bias, k, cs[4];
    dp_act act;
    double eps, p;
    uint8_t *mask;
    double in_scale;  /* inputs are +-[0.1, 1] * in_scale (1 when 0) */
    int ws_cols;      /* conv: a workspace of this many im2col columns (0: dp_tr_conv_ws_elems) */
    int fd_max;       /* finite differences on at most this many elements per input (0: 160) */
    double *aux64[2]; /* constant tensors of the op (not differentiated), in both precisions */
    float *aux32[2];
};

#define AUX(c, prec, i) ((prec) == 64 ? (void *)(c)->aux64[i] : (void *)(c)->aux32[i])

/* the kernels with their tasks on g_pool */
#define CALL(prec, fn, ...) ((prec) == 64 ? fn##_mt_f64(g_pool, __VA_ARGS__) : fn##_mt_f32(g_pool, __VA_ARGS__))

static tu_rng g_rng;
static dp_pool *g_pool;  /* the pool the kernels run on: NULL (caller's thread) or g_pool3 */
static dp_pool *g_pool3; /* 3 threads */
static double g_worst_fd, g_worst_f32;

static double urand(void) { return (double)(tu_next(&g_rng) >> 11) * 0x1p-53; }

/* +-[0.1, 1]: never zero, never near ReLU's kink */
static void fill_nz(double *x, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) {
        double v = 0.1 + 0.9 * urand();
        x[i] = (tu_next(&g_rng) & 1 ? v : -v) * scale;
    }
}

static void *to_prec(const double *x, size_t n, int prec) {
    if (prec == 64) {
        double *d = malloc(n * sizeof(double) + 8);
        memcpy(d, x, n * sizeof(double));
        return d;
    }
    float *f = malloc(n * sizeof(float) + 8);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)x[i];
    return f;
}

static double at(const void *p, int prec, size_t i) {
    return prec == 64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

static double loss(const double *out, const double *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += out[i] * r[i];
    return s;
}

/* normalised max error max|a - b| / max|b| */
static double nerr(const void *a, int prec, const double *b, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > m)
            m = fabs(b[i]);
        double d = fabs(at(a, prec, i) - b[i]);
        if (!(d <= e))
            e = d;
    }
    return e / (m > 0 ? m : 1);
}

/* Runs the finite-difference and float-vs-double checks of one case. fd_tol bounds the normalised
 * error of each gradient against central differences; f32_tol the float instantiation's against the
 * double one's. */
static void check_case(gcase *c, double fd_tol, double f32_tol) {
    double *in[MAXT], *din[MAXT], *pre[MAXT];
    double scale = c->in_scale > 0 ? c->in_scale : 1;
    for (int i = 0; i < c->n_in; i++) {
        in[i] = malloc(c->in_len[i] * sizeof(double));
        din[i] = malloc(c->in_len[i] * sizeof(double));
        pre[i] = malloc(c->in_len[i] * sizeof(double));
        fill_nz(in[i], c->in_len[i], scale);
        fill_nz(pre[i], c->in_len[i], 1); /* backward must add onto this */
        memcpy(din[i], pre[i], c->in_len[i] * sizeof(double));
    }
    double *out = malloc(c->out_len * sizeof(double)), *r = malloc(c->out_len * sizeof(double));
    double *tmp = malloc(c->out_len * sizeof(double));
    fill_nz(r, c->out_len, 1);
    for (size_t i = 0; i < c->out_len; i++)
        out[i] = NAN;
    assert_int_equal(c->fwd(c, 64, (void *const *)in, out), DISOPT_OK);
    for (size_t i = 0; i < c->out_len; i++)
        assert_true(isfinite(out[i]));
    assert_int_equal(c->bwd(c, 64, (void *const *)in, out, r, (void *const *)din), DISOPT_OK);
    /* the same on 3 threads, bitwise */
    {
        double *out3 = malloc(c->out_len * sizeof(double)), *din3[MAXT];
        for (int i = 0; i < c->n_in; i++) {
            din3[i] = malloc(c->in_len[i] * sizeof(double));
            memcpy(din3[i], pre[i], c->in_len[i] * sizeof(double));
        }
        g_pool = g_pool3;
        assert_int_equal(c->fwd(c, 64, (void *const *)in, out3), DISOPT_OK);
        assert_int_equal(c->bwd(c, 64, (void *const *)in, out3, r, (void *const *)din3), DISOPT_OK);
        g_pool = NULL;
        assert_memory_equal(out3, out, c->out_len * sizeof(double));
        for (int i = 0; i < c->n_in; i++) {
            assert_memory_equal(din3[i], din[i], c->in_len[i] * sizeof(double));
            free(din3[i]);
        }
        free(out3);
    }
    for (int i = 0; i < c->n_in; i++)
        for (size_t j = 0; j < c->in_len[i]; j++)
            din[i][j] -= pre[i][j];

    /* central differences; at most ~160 elements of each input (all when fewer) */
    const double hstep = 1e-5;
    double worst = 0;
    for (int i = 0; i < c->n_in; i++) {
        const size_t fmax = c->fd_max ? (size_t)c->fd_max : 160;
        size_t len = c->in_len[i], stride = len > fmax ? len / fmax : 1;
        double *num = calloc(len, sizeof(double)), *ana = calloc(len, sizeof(double));
        size_t m = 0;
        for (size_t j = (size_t)(urand() * (double)stride); j < len; j += stride, m++) {
            double x0 = in[i][j], hs = hstep * (fabs(x0) > 1 ? fabs(x0) : 1);
            in[i][j] = x0 + hs;
            assert_int_equal(c->fwd(c, 64, (void *const *)in, tmp), DISOPT_OK);
            double lp = loss(tmp, r, c->out_len);
            in[i][j] = x0 - hs;
            assert_int_equal(c->fwd(c, 64, (void *const *)in, tmp), DISOPT_OK);
            double lm = loss(tmp, r, c->out_len);
            in[i][j] = x0;
            num[m] = (lp - lm) / (2 * hs);
            ana[m] = din[i][j];
        }
        double e = nerr(num, 64, ana, m);
        if (e > worst)
            worst = e;
        if (!(e <= fd_tol))
            print_message("%s: input %d: finite differences %.3g (bound %.1g)\n", c->name, i, e, fd_tol);
        assert_true(e <= fd_tol);
        free(num);
        free(ana);
    }

    /* the float instantiation on the same (float-rounded) inputs */
    void *fin[MAXT], *fdin[MAXT];
    for (int i = 0; i < c->n_in; i++) {
        fin[i] = to_prec(in[i], c->in_len[i], 32);
        fdin[i] = calloc(c->in_len[i], sizeof(float)); /* a float prefill would cost the small gradients digits */
    }
    void *fout = to_prec(tmp, c->out_len, 32), *fr = to_prec(r, c->out_len, 32);
    g_pool = g_pool3; /* (the float kernels on 3 threads) */
    assert_int_equal(c->fwd(c, 32, fin, fout), DISOPT_OK);
    assert_int_equal(c->bwd(c, 32, fin, fout, fr, fdin), DISOPT_OK);
    g_pool = NULL;
    double ef = nerr(fout, 32, out, c->out_len);
    for (int i = 0; i < c->n_in; i++) {
        double e = nerr(fdin[i], 32, din[i], c->in_len[i]);
        if (e > ef)
            ef = e;
    }
    if (!(ef <= f32_tol))
        print_message("%s: float vs double %.3g (bound %.1g)\n", c->name, ef, f32_tol);
    assert_true(ef <= f32_tol);
    print_message("# %-34s fd %.2e  f32 %.2e\n", c->name, worst, ef);
    if (worst > g_worst_fd)
        g_worst_fd = worst;
    if (ef > g_worst_f32 && f32_tol < 1e-4)
        g_worst_f32 = ef; /* (the ill-conditioned BN case aside) */

    for (int i = 0; i < c->n_in; i++) {
        free(in[i]);
        free(din[i]);
        free(pre[i]);
        free(fin[i]);
        free(fdin[i]);
    }
    free(out);
    free(r);
    free(tmp);
    free(fout);
    free(fr);
}

/* ---------------------------------------------------------------- conv */
static size_t elem(int prec) { return prec == 64 ? sizeof(double) : sizeof(float); }

static size_t conv_ws(const gcase *c) {
    const int nthr = g_pool ? dp_pool_size(g_pool) : 1;
    size_t full = dp_tr_conv_ws_elems_mt(&c->cp, c->h, c->w, nthr);
    if (!c->ws_cols || !full)
        return full;
    size_t col = (size_t)(c->cp.cin / c->cp.groups) * c->cp.kh * c->cp.kw;
    return (size_t)nthr * col * (size_t)c->ws_cols; /* narrow panels */
}

static disopt_status conv_fwd(const gcase *c, int prec, void *const *in, void *out) {
    size_t wsn = conv_ws(c);
    void *ws = wsn ? malloc(wsn * elem(prec)) : NULL;
    disopt_status s =
        CALL(prec, dp_tr_conv_fwd, &c->cp, c->n, c->h, c->w, in[0], in[1], c->has_bias ? in[2] : NULL, out, ws, wsn);
    free(ws);
    return s;
}

static disopt_status conv_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                              void *const *din) {
    (void)out;
    size_t wsn = conv_ws(c);
    void *ws = wsn ? malloc(wsn * elem(prec)) : NULL;
    disopt_status s = CALL(prec, dp_tr_conv_bwd_data, &c->cp, c->n, c->h, c->w, dy, in[1], din[0], ws, wsn);
    if (!s)
        s = CALL(prec, dp_tr_conv_bwd_filter, &c->cp, c->n, c->h, c->w, in[0], dy, din[1], c->has_bias ? din[2] : NULL,
                 ws, wsn);
    free(ws);
    return s;
}

typedef struct {
    const char *name;
    int n, cin, cout, h, w, kh, kw, sh, sw, dh, dw, g, pt, pb, pl, pr, bias;
} conv_spec;

static void run_conv(const conv_spec *s, int ws_cols) {
    gcase c;
    memset(&c, 0, sizeof c);
    char name[96];
    snprintf(name, sizeof name, "%s%s", s->name, ws_cols == 1 ? " [1-col ws]" : ws_cols ? " [7-col ws]" : "");
    c.name = name;
    c.ws_cols = ws_cols;
    c.cp =
        (dp_conv_params){s->cin, s->cout, s->kh, s->kw, s->sh, s->sw, s->dh, s->dw, s->g, s->pt, s->pb, s->pl, s->pr};
    c.n = s->n, c.h = s->h, c.w = s->w, c.has_bias = s->bias;
    int oh, ow;
    assert_int_equal(dp_tr_conv_check(&c.cp, s->n, s->h, s->w, &oh, &ow), DISOPT_OK);
    c.n_in = s->bias ? 3 : 2;
    c.in_len[0] = (size_t)s->n * s->cin * s->h * s->w;
    c.in_len[1] = (size_t)s->cout * (s->cin / s->g) * s->kh * s->kw;
    c.in_len[2] = (size_t)s->cout;
    c.out_len = (size_t)s->n * s->cout * oh * ow;
    c.fwd = conv_fwd;
    c.bwd = conv_bwd;
    /* float vs double: the float error grows with the reduction length (cin/g * kh * kw) */
    check_case(&c, 1e-6, 2e-6 * sqrt((double)(s->cin / s->g * s->kh * s->kw)));
}

static void test_conv(void **state) {
    (void)state;
    static const conv_spec specs[] = {
        /* name                        n cin cout h  w kh kw sh sw dh dw g pt pb pl pr bias */
        {"conv 3x3 pad 1 bias", 2, 3, 4, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {"conv 3x3/s2 pad (0,1,0,1)", 2, 4, 5, 9, 9, 3, 3, 2, 2, 1, 1, 1, 0, 1, 0, 1, 0},
        {"conv 5x5/s2 pad (1,2,1,2)", 2, 3, 4, 9, 8, 5, 5, 2, 2, 1, 1, 1, 1, 2, 1, 2, 0},
        {"conv 3x3 dil 2 pad 2", 2, 3, 4, 8, 7, 3, 3, 1, 1, 2, 2, 1, 2, 2, 2, 2, 1},
        {"conv 3x3/s2 dil 2 groups 2", 2, 4, 6, 9, 9, 3, 3, 2, 2, 2, 2, 2, 1, 2, 2, 1, 1},
        {"conv 1x1 (direct) bias", 2, 8, 5, 6, 5, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1},
        {"conv 3x3 16->12 (3 blocks of K)", 2, 16, 12, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {"conv 1x1 80->6 (2 blocks of K)", 2, 80, 6, 5, 4, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        {"conv 1x1/s2", 2, 6, 3, 7, 7, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0, 0, 0},
        {"conv 1x1 groups 2", 2, 6, 4, 5, 5, 1, 1, 1, 1, 1, 1, 2, 0, 0, 0, 0, 0},
        {"conv 1x3 s(1,2) pad (0,0,1,1)", 2, 3, 4, 6, 9, 1, 3, 1, 2, 1, 1, 1, 0, 0, 1, 1, 1},
        {"depthwise 3x3 pad 1", 2, 6, 6, 7, 7, 3, 3, 1, 1, 1, 1, 6, 1, 1, 1, 1, 0},
        {"depthwise 5x5/s2 pad (1,2,1,2)", 2, 5, 5, 9, 9, 5, 5, 2, 2, 1, 1, 5, 1, 2, 1, 2, 0},
        {"depthwise 3x3/s2 pad (0,1,0,1)", 2, 4, 4, 8, 8, 3, 3, 2, 2, 1, 1, 4, 0, 1, 0, 1, 1},
        {"depthwise 3x3 dil 2 pad 2", 2, 3, 3, 7, 8, 3, 3, 1, 1, 2, 2, 3, 2, 2, 2, 2, 0},
        {"depthwise 3x3 dil 3 pad 3 (ASPP)", 2, 3, 3, 5, 5, 3, 3, 1, 1, 3, 3, 3, 3, 3, 3, 3, 0},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        run_conv(&specs[i], 0);
    /* im2col in panels narrower than the output (a small workspace): 7 columns, and 1 */
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        const conv_spec *c = &specs[i];
        dp_conv_params p = {c->cin, c->cout, c->kh, c->kw, c->sh, c->sw, c->dh,
                            c->dw,  c->g,    c->pt, c->pb, c->pl, c->pr};
        if (!dp_tr_conv_is_direct(&p) && !dp_tr_conv_is_depthwise(&p))
            run_conv(c, i % 2 ? 7 : 1);
    }
}

static void test_conv_errors(void **state) {
    (void)state;
    dp_conv_params p = {4, 6, 3, 3, 1, 1, 1, 1, 4, 1, 1, 1, 1}; /* groups 4 do not divide cout 6 */
    float x[64] = {0}, w[64] = {0}, y[64], ws[64];
    assert_int_equal(dp_tr_conv_fwd_f32(&p, 1, 4, 4, x, w, NULL, y, ws, 64), DISOPT_ERR_INVALID_ARGUMENT);
    p.groups = 1;
    p.kh = 7; /* larger than the padded input */
    assert_int_equal(dp_tr_conv_fwd_f32(&p, 1, 4, 4, x, w, NULL, y, ws, 64), DISOPT_ERR_INVALID_ARGUMENT);
    p.kh = 3;
    assert_true(dp_tr_conv_ws_elems(&p, 4, 4) > 0);
    assert_int_equal(dp_tr_conv_fwd_f32(&p, 1, 4, 4, x, w, NULL, y, NULL, 0), DISOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(disopt_last_error(), "workspace"));
}

/* ---------------------------------------------------------------- batch norm */
static disopt_status bn_train_fwd(const gcase *c, int prec, void *const *in, void *out) {
    double sm[64], si[64]; /* (float or double storage) */
    return CALL(prec, dp_tr_bn_fwd_train, c->n, c->c, (size_t)c->h * c->w, in[0], in[1], in[2], c->eps, 0.1, NULL, NULL,
                (void *)sm, (void *)si, out);
}

static disopt_status bn_train_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                                  void *const *din) {
    double sm[64], si[64];
    (void)out;
    size_t hw = (size_t)c->h * c->w;
    void *y = malloc(c->out_len * sizeof(double));
    disopt_status s = CALL(prec, dp_tr_bn_fwd_train, c->n, c->c, hw, in[0], in[1], in[2], c->eps, 0.1, NULL, NULL,
                           (void *)sm, (void *)si, y);
    if (!s)
        s = CALL(prec, dp_tr_bn_bwd_train, c->n, c->c, hw, in[0], dy, in[1], (void *)sm, (void *)si, din[0], din[1],
                 din[2]);
    free(y);
    return s;
}

static void test_bn(void **state) {
    (void)state;
    gcase c;
    memset(&c, 0, sizeof c);
    c.name = "bn training eps 1e-3";
    c.n = 2, c.c = 5, c.h = 6, c.w = 5, c.eps = 1e-3;
    c.n_in = 3; /* x, gamma, beta */
    c.in_len[0] = c.out_len = (size_t)2 * 5 * 30;
    c.in_len[1] = c.in_len[2] = 5;
    c.fwd = bn_train_fwd;
    c.bwd = bn_train_bwd;
    check_case(&c, 1e-6, 1e-5);

    c.name = "bn training, 2 values per channel";
    c.n = 2, c.c = 3, c.h = 1, c.w = 1, c.eps = 1e-3;
    c.in_len[0] = c.out_len = 6;
    c.in_len[1] = c.in_len[2] = 3;
    /* with 2 values per channel x_hat is +-1 whatever x is: dx is only the eps term, a difference of
     * O(1) terms, so float keeps few of its digits (PyTorch's float kernel as well) */
    check_case(&c, 1e-6, 5e-3);
}

static disopt_status bn_eval_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_bn_fwd_eval, c->n, c->c, (size_t)c->h * c->w, in[0], in[1], in[2], AUX(c, prec, 0),
                AUX(c, prec, 1), c->eps, out);
}

static disopt_status bn_eval_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                                 void *const *din) {
    (void)out;
    return CALL(prec, dp_tr_bn_bwd_eval, c->n, c->c, (size_t)c->h * c->w, in[0], dy, in[1], AUX(c, prec, 0),
                AUX(c, prec, 1), c->eps, din[0], din[1], din[2]);
}

static void set_aux(gcase *c, int i, size_t n, double lo, double hi) {
    c->aux64[i] = malloc(n * sizeof(double));
    c->aux32[i] = malloc(n * sizeof(float));
    for (size_t j = 0; j < n; j++) {
        c->aux32[i][j] = (float)(lo + (hi - lo) * urand());
        c->aux64[i][j] = c->aux32[i][j];
    }
}

static void free_aux(gcase *c) {
    for (int i = 0; i < 2; i++) {
        free(c->aux64[i]);
        free(c->aux32[i]);
        c->aux64[i] = NULL;
        c->aux32[i] = NULL;
    }
}

static void test_bn_eval(void **state) {
    (void)state;
    gcase c;
    memset(&c, 0, sizeof c);
    c.name = "bn eval eps 1e-5";
    c.n = 2, c.c = 4, c.h = 5, c.w = 5, c.eps = 1e-5;
    c.n_in = 3;
    c.in_len[0] = c.out_len = (size_t)2 * 4 * 25;
    c.in_len[1] = c.in_len[2] = 4;
    set_aux(&c, 0, 4, -0.5, 0.5); /* running mean */
    set_aux(&c, 1, 4, 0.3, 2.0);  /* running var */
    c.fwd = bn_eval_fwd;
    c.bwd = bn_eval_bwd;
    check_case(&c, 1e-6, 1e-5);
    free_aux(&c);
}

/* the running statistics against the formula, PyTorch's: r = (1 - m) r + m s, with the unbiased
 * batch variance; also the saved mean and inverse std */
static void check_running(double momentum, double eps) {
    enum { N = 3, C = 4, HW = 10 };
    const size_t M = (size_t)N * HW;
    double x[N * C * HW], y[N * C * HW], g[C], b[C], rm[C], rv[C], sm[C], si[C];
    float xf[N * C * HW], yf[N * C * HW], gf[C], bf[C], rmf[C], rvf[C], smf[C], sif[C];
    fill_nz(x, N * C * HW, 2);
    fill_nz(g, C, 1);
    fill_nz(b, C, 1);
    for (int ch = 0; ch < C; ch++) {
        rm[ch] = 0.1 * ch - 0.2;
        rv[ch] = 0.5 + 0.25 * ch;
        x[ch * HW] += 3.0 * ch; /* different means per channel */
    }
    for (size_t i = 0; i < N * C * HW; i++)
        xf[i] = (float)x[i], x[i] = xf[i];
    for (int ch = 0; ch < C; ch++)
        gf[ch] = (float)g[ch], bf[ch] = (float)b[ch], rmf[ch] = (float)rm[ch], rvf[ch] = (float)rv[ch];
    double rm0[C], rv0[C];
    memcpy(rm0, rm, sizeof rm);
    memcpy(rv0, rv, sizeof rv);
    assert_int_equal(dp_tr_bn_fwd_train_f64(N, C, HW, x, g, b, eps, momentum, rm, rv, sm, si, y), DISOPT_OK);
    assert_int_equal(dp_tr_bn_fwd_train_f32(N, C, HW, xf, gf, bf, eps, momentum, rmf, rvf, smf, sif, yf), DISOPT_OK);
    for (int ch = 0; ch < C; ch++) {
        double mean = 0, var = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                mean += x[(n * C + ch) * HW + i];
        mean /= (double)M;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                var += pow(x[(n * C + ch) * HW + i] - mean, 2);
        double want_m = (1 - momentum) * rm0[ch] + momentum * mean;
        double want_v = (1 - momentum) * rv0[ch] + momentum * var / (double)(M - 1);
        assert_true(fabs(rm[ch] - want_m) <= 1e-14 * (1 + fabs(want_m)));
        assert_true(fabs(rv[ch] - want_v) <= 1e-14 * (1 + fabs(want_v)));
        assert_true(fabs(rmf[ch] - want_m) <= 1e-6 * (1 + fabs(want_m)));
        assert_true(fabs(rvf[ch] - want_v) <= 1e-6 * (1 + fabs(want_v)));
        assert_true(fabs(sm[ch] - mean) <= 1e-14 * (1 + fabs(mean)));
        double is = 1 / sqrt(var / (double)M + eps);
        assert_true(fabs(si[ch] - is) <= 1e-14 * is);
        assert_true(fabs(sif[ch] - is) <= 1e-6 * is);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                size_t k = (size_t)(n * C + ch) * HW + i;
                double want = (x[k] - mean) * is * g[ch] + b[ch];
                assert_true(fabs(y[k] - want) <= 1e-13);
                assert_true(fabs(yf[k] - want) <= 2e-6 * (1 + fabs(want)));
            }
    }
    /* a second step moves the stats again from the updated values */
    memcpy(rm0, rm, sizeof rm);
    assert_int_equal(dp_tr_bn_fwd_train_f64(N, C, HW, x, g, b, eps, momentum, rm, rv, sm, si, y), DISOPT_OK);
    for (int ch = 0; ch < C; ch++)
        assert_true(fabs(rm[ch] - ((1 - momentum) * rm0[ch] + momentum * sm[ch])) <= 1e-14);
}

static void test_bn_running(void **state) {
    (void)state;
    check_running(0.01, 1e-3); /* EfficientNet */
    check_running(0.1, 1e-5);  /* decoders, fusion */
    /* one value per channel cannot train (PyTorch refuses too) */
    double x[2] = {1, 2}, g[2] = {1, 1}, b[2] = {0, 0}, sm[2], si[2], y[2];
    assert_int_equal(dp_tr_bn_fwd_train_f64(1, 2, 1, x, g, b, 1e-5, 0.1, NULL, NULL, sm, si, y),
                     DISOPT_ERR_INVALID_ARGUMENT);
}

/* ---------------------------------------------------------------- elementwise and channel ops */
static disopt_status act_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_act_fwd, c->act, c->out_len, in[0], out);
}
static disopt_status act_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                             void *const *din) {
    return CALL(prec, dp_tr_act_bwd, c->act, c->out_len, c->act == DP_ACT_SIGMOID ? NULL : in[0],
                c->act == DP_ACT_SIGMOID ? out : NULL, dy, din[0]);
}
static disopt_status gap_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_gap_fwd, c->n, c->c, (size_t)c->h * c->w, in[0], out);
}
static disopt_status gap_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                             void *const *din) {
    (void)in, (void)out;
    return CALL(prec, dp_tr_gap_bwd, c->n, c->c, (size_t)c->h * c->w, dy, din[0]);
}
static disopt_status bc_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_broadcast_fwd, c->n, c->c, (size_t)c->h * c->w, in[0], out);
}
static disopt_status bc_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    (void)in, (void)out;
    return CALL(prec, dp_tr_broadcast_bwd, c->n, c->c, (size_t)c->h * c->w, dy, din[0]);
}
static disopt_status sc_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_scale_ch_fwd, c->n, c->c, (size_t)c->h * c->w, in[0], in[1], out);
}
static disopt_status sc_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    (void)out;
    return CALL(prec, dp_tr_scale_ch_bwd, c->n, c->c, (size_t)c->h * c->w, in[0], in[1], dy, din[0], din[1]);
}
static disopt_status scse_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_scse_fwd, c->n, c->c, (size_t)c->h * c->w, in[0], in[1], in[2], out);
}
static disopt_status scse_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                              void *const *din) {
    (void)out;
    return CALL(prec, dp_tr_scse_bwd, c->n, c->c, (size_t)c->h * c->w, in[0], in[1], in[2], dy, din[0], din[1], din[2]);
}
static disopt_status add_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_add_fwd, c->out_len, in[0], in[1], out);
}
static disopt_status add_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                             void *const *din) {
    (void)in, (void)out;
    return CALL(prec, dp_tr_add_bwd, c->out_len, dy, din[0], din[1]);
}
static disopt_status cat_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return prec == 64 ? dp_tr_concat_fwd_f64(c->n, (size_t)c->h * c->w, c->k, c->cs, (const double *const *)in, out)
                      : dp_tr_concat_fwd_f32(c->n, (size_t)c->h * c->w, c->k, c->cs, (const float *const *)in, out);
}
static disopt_status cat_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                             void *const *din) {
    (void)in, (void)out;
    return prec == 64 ? dp_tr_concat_bwd_f64(c->n, (size_t)c->h * c->w, c->k, c->cs, dy, (double *const *)din)
                      : dp_tr_concat_bwd_f32(c->n, (size_t)c->h * c->w, c->k, c->cs, dy, (float *const *)din);
}
static disopt_status up_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_upsample_fwd, c->n, c->c, c->h, c->w, c->f, in[0], out);
}
static disopt_status up_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    (void)in, (void)out;
    return CALL(prec, dp_tr_upsample_bwd, c->n, c->c, c->h, c->w, c->f, dy, din[0]);
}
static disopt_status sm_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_softmax_fwd, c->n, c->c, (size_t)c->h * c->w, in[0], out);
}
static disopt_status sm_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    (void)in;
    return CALL(prec, dp_tr_softmax_bwd, c->n, c->c, (size_t)c->h * c->w, out, dy, din[0]);
}
static disopt_status do_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_dropout_fwd, c->out_len, c->p, c->mask, in[0], out);
}
static disopt_status do_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    (void)in, (void)out;
    return CALL(prec, dp_tr_dropout_bwd, c->out_len, c->p, c->mask, dy, din[0]);
}
static disopt_status dc_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return CALL(prec, dp_tr_drop_connect_fwd, c->n, c->out_len / (size_t)c->n, c->p, c->mask, in[0], out);
}
static disopt_status dc_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    (void)in, (void)out;
    return CALL(prec, dp_tr_drop_connect_bwd, c->n, c->out_len / (size_t)c->n, c->p, c->mask, dy, din[0]);
}

static gcase shaped(const char *name, int n, int ch, int h, int w) {
    gcase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.n = n, c.c = ch, c.h = h, c.w = w;
    c.n_in = 1;
    c.in_len[0] = c.out_len = (size_t)n * ch * h * w;
    return c;
}

static void test_act(void **state) {
    (void)state;
    static const struct {
        const char *name;
        dp_act a;
    } acts[] = {{"relu", DP_ACT_RELU}, {"swish", DP_ACT_SWISH}, {"sigmoid", DP_ACT_SIGMOID}, {"identity", DP_ACT_NONE}};
    for (size_t i = 0; i < 4; i++) {
        gcase c = shaped(acts[i].name, 2, 3, 5, 6);
        c.act = acts[i].a;
        c.in_scale = 4; /* +-[0.4, 4]: both tails of the sigmoid */
        c.fwd = act_fwd;
        c.bwd = act_bwd;
        check_case(&c, 1e-6, 1e-6);
    }
    /* more than one task's chunk */
    gcase c = shaped("swish, 2 tasks of values", 2, 3, 64, 48);
    c.act = DP_ACT_SWISH;
    c.in_scale = 4;
    c.fwd = act_fwd;
    c.bwd = act_bwd;
    check_case(&c, 1e-6, 1e-6);
}

static void test_channel_ops(void **state) {
    (void)state;
    gcase c = shaped("global average pool", 2, 5, 7, 6);
    c.out_len = 10;
    c.fwd = gap_fwd, c.bwd = gap_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("broadcast 1x1 -> 6x7", 2, 4, 6, 7);
    c.in_len[0] = 8;
    c.fwd = bc_fwd, c.bwd = bc_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("channel scale (SE gate)", 2, 6, 5, 5);
    c.n_in = 2;
    c.in_len[1] = 12;
    c.fwd = sc_fwd, c.bwd = sc_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("SCSE x*c + x*s", 2, 5, 6, 5);
    c.n_in = 3;
    c.in_len[1] = 10;
    c.in_len[2] = 2 * 30;
    c.fwd = scse_fwd, c.bwd = scse_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("add", 2, 3, 5, 5);
    c.n_in = 2;
    c.in_len[1] = c.in_len[0];
    c.fwd = add_fwd, c.bwd = add_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("concat 2+3+1 channels", 2, 6, 5, 6);
    c.k = 3, c.cs[0] = 2, c.cs[1] = 3, c.cs[2] = 1;
    c.n_in = 3;
    for (int i = 0; i < 3; i++)
        c.in_len[i] = (size_t)2 * c.cs[i] * 30;
    c.fwd = cat_fwd, c.bwd = cat_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("upsample x2 5x6", 2, 3, 5, 6);
    c.f = 2;
    c.out_len = c.in_len[0] * 4;
    c.fwd = up_fwd, c.bwd = up_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("upsample x4 3x5", 2, 3, 3, 5);
    c.f = 4;
    c.out_len = c.in_len[0] * 16;
    c.fwd = up_fwd, c.bwd = up_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("upsample x4 1x1 (a broadcast)", 2, 3, 1, 1);
    c.f = 4;
    c.out_len = c.in_len[0] * 16;
    c.fwd = up_fwd, c.bwd = up_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("softmax over 4 channels", 2, 4, 5, 5);
    c.in_scale = 3;
    c.fwd = sm_fwd, c.bwd = sm_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("softmax over 2 channels", 2, 2, 6, 5);
    c.in_scale = 5;
    c.fwd = sm_fwd, c.bwd = sm_bwd;
    check_case(&c, 1e-6, 1e-6);
}

/* the light ops on shapes large enough to make several tasks (about 16K elements each), so the
 * 3-thread run really splits them; few finite-difference points (the small cases above have many) */
static void test_ops_split(void **state) {
    (void)state;
    enum { N = 2, C = 8, H = 48, W = 48 };
    const size_t NX = (size_t)N * C * H * W, HW = (size_t)H * W;
    gcase c = shaped("split: global average pool", N, C, H, W);
    c.fd_max = 8;
    c.out_len = (size_t)N * C;
    c.fwd = gap_fwd, c.bwd = gap_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: broadcast", N, C, H, W);
    c.fd_max = 8;
    c.in_len[0] = (size_t)N * C;
    c.fwd = bc_fwd, c.bwd = bc_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: channel scale", N, C, H, W);
    c.fd_max = 8;
    c.n_in = 2;
    c.in_len[1] = (size_t)N * C;
    c.fwd = sc_fwd, c.bwd = sc_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: SCSE", N, C, H, W);
    c.fd_max = 8;
    c.n_in = 3;
    c.in_len[1] = (size_t)N * C;
    c.in_len[2] = (size_t)N * HW;
    c.fwd = scse_fwd, c.bwd = scse_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: add", N, C, H, W);
    c.fd_max = 8;
    c.n_in = 2;
    c.in_len[1] = NX;
    c.fwd = add_fwd, c.bwd = add_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: concat 3+5", N, C, H, W);
    c.fd_max = 8;
    c.k = 2, c.cs[0] = 3, c.cs[1] = 5;
    c.n_in = 2;
    c.in_len[0] = (size_t)N * 3 * HW;
    c.in_len[1] = (size_t)N * 5 * HW;
    c.fwd = cat_fwd, c.bwd = cat_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: softmax", N, C, H, W);
    c.fd_max = 8;
    c.in_scale = 3;
    c.fwd = sm_fwd, c.bwd = sm_bwd;
    check_case(&c, 1e-6, 1e-6);

    c = shaped("split: upsample x2", N, C, H / 2, W / 2);
    c.fd_max = 8;
    c.f = 2;
    c.out_len = NX;
    c.fwd = up_fwd, c.bwd = up_bwd;
    /* float: the source positions scale * dst are computed in float, as PyTorch does (their rounding
     * moves the weights by ~1e-6 at 47 output columns) */
    check_case(&c, 1e-6, 1e-5);

    uint8_t *mask = malloc(NX);
    dp_rng r = dp_rng_make(5);
    assert_int_equal(dp_tr_dropout_mask(&r, 0.5, NX, mask), DISOPT_OK);
    c = shaped("split: dropout", N, C, H, W);
    c.fd_max = 8;
    c.p = 0.5;
    c.mask = mask;
    c.fwd = do_fwd, c.bwd = do_bwd;
    check_case(&c, 1e-6, 1e-6);

    mask[0] = 1, mask[1] = 0;
    c = shaped("split: drop-connect", N, C, H, W);
    c.fd_max = 8;
    c.p = 0.15;
    c.mask = mask;
    c.fwd = dc_fwd, c.bwd = dc_bwd;
    check_case(&c, 1e-6, 1e-6);
    free(mask);

    c = shaped("split: bn training", N, C, H / 2, W / 2);
    c.fd_max = 8;
    c.n_in = 3;
    c.in_len[1] = c.in_len[2] = C;
    c.eps = 1e-5;
    c.fwd = bn_train_fwd, c.bwd = bn_train_bwd;
    check_case(&c, 1e-6, 1e-5);
}

/* ---------------------------------------------------------------- random numbers, dropout */
static void test_philox(void **state) {
    (void)state;
    /* Random123's known answers for philox4x32_10 */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
         0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        dp_philox4x32_10(kat[i], kat[i] + 4, out);
        for (int q = 0; q < 4; q++)
            assert_int_equal(out[q], kat[i][6 + q]);
    }
    /* the stream: draw i of a draw at block c is word i % 4 of block c + i / 4; draws start on fresh blocks */
    dp_rng r = dp_rng_make(0x0123456789abcdefULL);
    uint32_t a[7], b[5];
    dp_rng_words(&r, 7, a);
    assert_int_equal(r.counter, 2);
    dp_rng_words(&r, 5, b);
    assert_int_equal(r.counter, 4);
    for (int i = 0; i < 7; i++)
        assert_int_equal(a[i], dp_rng_word(0x0123456789abcdefULL, 0, (uint64_t)i));
    for (int i = 0; i < 5; i++)
        assert_int_equal(b[i], dp_rng_word(0x0123456789abcdefULL, 2, (uint64_t)i));
    uint32_t blk[4];
    dp_rng_block(0x0123456789abcdefULL, 1, blk);
    const uint32_t ctr[4] = {1, 0, 0, 0}, key[2] = {0x89abcdef, 0x01234567};
    uint32_t ref[4];
    dp_philox4x32_10(ctr, key, ref);
    assert_memory_equal(blk, ref, sizeof ref);
    assert_int_equal(a[4], ref[0]);
    /* high counter bits reach the counter's second word */
    dp_rng_block(5, 0x100000002ULL, blk);
    const uint32_t ctr2[4] = {2, 1, 0, 0}, key2[2] = {5, 0};
    dp_philox4x32_10(ctr2, key2, ref);
    assert_memory_equal(blk, ref, sizeof ref);
    /* uniforms: in [0, 1), 24 bits, mean about 1/2 */
    enum { U = 40000 };
    float *u = malloc(U * sizeof(float));
    r = dp_rng_make(7);
    dp_rng_uniform(&r, U, u);
    double s = 0;
    for (int i = 0; i < U; i++) {
        assert_true(u[i] >= 0.0f && u[i] < 1.0f);
        assert_true(u[i] == dp_rng_u01(dp_rng_word(7, 0, (uint64_t)i)));
        s += u[i];
    }
    assert_true(fabs(s / U - 0.5) < 5 * sqrt(1.0 / 12 / U));
    free(u);
}

static void test_dropout(void **state) {
    (void)state;
    enum { NM = 200003 };
    uint8_t *m1 = malloc(NM), *m2 = malloc(NM);
    const double ps[2] = {0.5, 0.2};
    for (int k = 0; k < 2; k++) {
        double p = ps[k];
        dp_rng r = dp_rng_make(42 + (uint64_t)k);
        r.counter = 1000;
        assert_int_equal(dp_tr_dropout_mask(&r, p, NM, m1), DISOPT_OK);
        assert_int_equal(r.counter, 1000 + (NM + 3) / 4);
        size_t kept = 0;
        for (size_t i = 0; i < NM; i++) {
            assert_true(m1[i] <= 1);
            kept += m1[i];
            /* the rule: keep iff uniform i < 1 - p */
            assert_int_equal(m1[i], (double)dp_rng_u01(dp_rng_word(42 + (uint64_t)k, 1000, i)) < 1 - p);
        }
        double frac = (double)kept / NM, sd = sqrt(p * (1 - p) / NM);
        print_message("# dropout p %.1f: kept %.5f (want %.5f +- %.5f)\n", p, frac, 1 - p, 5 * sd);
        assert_true(fabs(frac - (1 - p)) < 5 * sd);
        /* neighbours are not correlated: P(both kept) ~ (1-p)^2 */
        size_t both = 0;
        for (size_t i = 0; i + 1 < NM; i++)
            both += m1[i] & m1[i + 1];
        assert_true(fabs((double)both / (NM - 1) - (1 - p) * (1 - p)) < 0.01);
        /* determinism: the same (seed, counter) gives the same mask; the next counter another one */
        dp_rng r2 = dp_rng_make(42 + (uint64_t)k);
        r2.counter = 1000;
        assert_int_equal(dp_tr_dropout_mask(&r2, p, NM, m2), DISOPT_OK);
        assert_memory_equal(m1, m2, NM);
        assert_int_equal(dp_tr_dropout_mask(&r2, p, NM, m2), DISOPT_OK);
        assert_true(memcmp(m1, m2, NM) != 0);
    }
    /* scaling, and backward with the forward's mask: bitwise */
    enum { N = 1000 };
    float x[N], y[N], dy[N], dx[N];
    double xd[N], yd[N];
    tu_fill(&g_rng, x, N, -2, 2);
    tu_fill(&g_rng, dy, N, -2, 2);
    dp_rng r = dp_rng_make(3);
    assert_int_equal(dp_tr_dropout_mask(&r, 0.5, N, m1), DISOPT_OK);
    assert_int_equal(dp_tr_dropout_fwd_f32(N, 0.5, m1, x, y), DISOPT_OK);
    memset(dx, 0, sizeof dx);
    assert_int_equal(dp_tr_dropout_bwd_f32(N, 0.5, m1, dy, dx), DISOPT_OK);
    for (int i = 0; i < N; i++) {
        assert_true(y[i] == (m1[i] ? 2.0f * x[i] : 0.0f));
        assert_true(dx[i] == (m1[i] ? 2.0f * dy[i] : 0.0f));
        xd[i] = x[i];
    }
    assert_int_equal(dp_tr_dropout_fwd_f64(N, 0.2, m1, xd, yd), DISOPT_OK);
    for (int i = 0; i < N; i++)
        assert_true(yd[i] == (m1[i] ? xd[i] * (1.0 / 0.8) : 0.0));
    /* p = 0 keeps everything */
    assert_int_equal(dp_tr_dropout_mask(&r, 0.0, N, m1), DISOPT_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(m1[i], 1);
    assert_int_equal(dp_tr_dropout_mask(&r, 1.5, N, m1), DISOPT_ERR_INVALID_ARGUMENT);

    /* finite differences through the masked op (the mask is a constant of the op) */
    gcase c = shaped("dropout p 0.5", 2, 4, 5, 5);
    c.p = 0.5;
    c.mask = m1;
    r = dp_rng_make(11);
    assert_int_equal(dp_tr_dropout_mask(&r, c.p, c.out_len, m1), DISOPT_OK);
    c.fwd = do_fwd, c.bwd = do_bwd;
    check_case(&c, 1e-6, 1e-6);
    free(m1);
    free(m2);
}

static void test_drop_connect(void **state) {
    (void)state;
    enum { NS = 100000 };
    uint8_t *m = malloc(NS), *m2 = malloc(NS);
    const double rates[2] = {0.2 * 25 / 26, 0.2 * 8 / 26};
    for (int k = 0; k < 2; k++) {
        dp_rng r = dp_rng_make(99);
        r.counter = 17;
        assert_int_equal(dp_tr_drop_connect_mask(&r, rates[k], NS, m), DISOPT_OK);
        assert_int_equal(r.counter, 17 + (NS + 3) / 4);
        size_t kept = 0;
        const float keep = (float)(1.0 - rates[k]);
        for (size_t i = 0; i < NS; i++) {
            float rt = keep + dp_rng_u01(dp_rng_word(99, 17, i)); /* efficientnet_pytorch: floor(keep + rand) */
            assert_int_equal(m[i], rt >= 1.0f ? 1 : 0);
            kept += m[i];
        }
        double frac = (double)kept / NS, keepd = 1 - rates[k];
        print_message("# drop-connect rate %.4f: kept %.5f (want %.5f)\n", rates[k], frac, keepd);
        assert_true(fabs(frac - keepd) < 5 * sqrt(keepd * (1 - keepd) / NS));
        dp_rng r2 = dp_rng_make(99);
        r2.counter = 17;
        assert_int_equal(dp_tr_drop_connect_mask(&r2, rates[k], NS, m2), DISOPT_OK);
        assert_memory_equal(m, m2, NS);
    }
    /* per sample: every element of a sample shares its mask; y = x / keep * mask */
    enum { N = 6, PER = 3 * 4 * 5 };
    float x[N * PER], y[N * PER], dy[N * PER], dx[N * PER];
    tu_fill(&g_rng, x, N * PER, -2, 2);
    tu_fill(&g_rng, dy, N * PER, -2, 2);
    uint8_t ms[N] = {1, 0, 1, 1, 0, 1};
    const double rate = 0.2 * 13 / 26;
    assert_int_equal(dp_tr_drop_connect_fwd_f32(N, PER, rate, ms, x, y), DISOPT_OK);
    memset(dx, 0, sizeof dx);
    assert_int_equal(dp_tr_drop_connect_bwd_f32(N, PER, rate, ms, dy, dx), DISOPT_OK);
    const float keep = (float)(1.0 - rate);
    for (int i = 0; i < N * PER; i++) {
        assert_true(y[i] == x[i] / keep * (float)ms[i / PER]);
        assert_true(dx[i] == dy[i] * (float)ms[i / PER] / keep);
    }
    /* the schedule: smp 0.2.0 / the authors' model.py, rate * block_number / number_of_blocks */
    assert_true(dp_tr_drop_connect_rate(0.2, 0, 26) == 0.0);
    assert_true(dp_tr_drop_connect_rate(0.2, 1, 26) == 0.007692307692307693);
    assert_true(dp_tr_drop_connect_rate(0.2, 8, 26) == 0.06153846153846154);
    assert_true(dp_tr_drop_connect_rate(0.2, 25, 26) == 0.19230769230769232);
    assert_int_equal(dp_tr_drop_connect_mask(&(dp_rng){1, 0}, 1.0, 4, m), DISOPT_ERR_INVALID_ARGUMENT);

    gcase c = shaped("drop-connect rate 0.1", 4, 3, 5, 5);
    c.p = 0.1;
    c.mask = ms; /* 1 0 1 1 */
    c.fwd = dc_fwd, c.bwd = dc_bwd;
    check_case(&c, 1e-6, 1e-6);
    free(m);
    free(m2);
}

/* ---------------------------------------------------------------- a whole MBConv block */
/* EfficientNet's MBConv without expansion, in training mode, composed from the kernels:
 * depthwise 3x3 -> BN -> swish -> SE (GAP -> 1x1+b -> swish -> 1x1+b -> sigmoid -> scale) -> 1x1 ->
 * BN -> drop-connect -> + x. x feeds the conv and the residual and s feeds the GAP and the scale,
 * so the "backward adds" convention is what makes the fan-outs right. Inputs: x, w_dw, g1, b1, w_r,
 * b_r, w_e, b_e, w_p, g2, b2. */
enum { MB_N = 3, MB_C = 4, MB_R = 2, MB_H = 6, MB_W = 5 };

static void *zal(size_t n, int prec) { return calloc(n, elem(prec)); }

static disopt_status mb_run(const gcase *c, int prec, void *const *in, void *out, const void *dy, void *const *din) {
    const int N = MB_N, C = MB_C, R = MB_R;
    const size_t HW = (size_t)MB_H * MB_W, NX = (size_t)N * C * HW;
    const dp_conv_params pdw = {C, C, 3, 3, 1, 1, 1, 1, C, 1, 1, 1, 1};
    const dp_conv_params pr = {C, R, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}, pe = {R, C, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    const dp_conv_params pp = {C, C, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    const double rate = c->p;
    void *a = zal(NX, prec), *b = zal(NX, prec), *s = zal(NX, prec), *p = zal((size_t)N * C, prec);
    void *r1 = zal((size_t)N * R, prec), *r2 = zal((size_t)N * R, prec), *e = zal((size_t)N * C, prec);
    void *gt = zal((size_t)N * C, prec), *sc = zal(NX, prec), *q = zal(NX, prec), *pj = zal(NX, prec);
    void *d = zal(NX, prec), *m1 = zal(C, prec), *i1 = zal(C, prec), *m2 = zal(C, prec), *i2 = zal(C, prec);
    disopt_status st = DISOPT_OK;
    const int nthr = g_pool ? dp_pool_size(g_pool) : 1;
    size_t wsn = dp_tr_conv_ws_elems_mt(&pdw, MB_H, MB_W, nthr), w2 = dp_tr_conv_ws_elems_mt(&pr, 1, 1, nthr);
    if (w2 > wsn)
        wsn = w2;
    if ((w2 = dp_tr_conv_ws_elems_mt(&pe, 1, 1, nthr)) > wsn)
        wsn = w2;
    if ((w2 = dp_tr_conv_ws_elems_mt(&pp, MB_H, MB_W, nthr)) > wsn)
        wsn = w2;
    void *ws = zal(wsn + 1, prec);
#define MB(call)                                                                                                       \
    do {                                                                                                               \
        if (!st)                                                                                                       \
            st = (call);                                                                                               \
    } while (0)
    MB(CALL(prec, dp_tr_conv_fwd, &pdw, N, MB_H, MB_W, in[0], in[1], NULL, a, ws, wsn));
    MB(CALL(prec, dp_tr_bn_fwd_train, N, C, HW, a, in[2], in[3], 1e-3, 0.01, NULL, NULL, m1, i1, b));
    MB(CALL(prec, dp_tr_act_fwd, DP_ACT_SWISH, NX, b, s));
    MB(CALL(prec, dp_tr_gap_fwd, N, C, HW, s, p));
    MB(CALL(prec, dp_tr_conv_fwd, &pr, N, 1, 1, p, in[4], in[5], r1, ws, wsn));
    MB(CALL(prec, dp_tr_act_fwd, DP_ACT_SWISH, (size_t)N * R, r1, r2));
    MB(CALL(prec, dp_tr_conv_fwd, &pe, N, 1, 1, r2, in[6], in[7], e, ws, wsn));
    MB(CALL(prec, dp_tr_act_fwd, DP_ACT_SIGMOID, (size_t)N * C, e, gt));
    MB(CALL(prec, dp_tr_scale_ch_fwd, N, C, HW, s, gt, sc));
    MB(CALL(prec, dp_tr_conv_fwd, &pp, N, MB_H, MB_W, sc, in[8], NULL, pj, ws, wsn));
    MB(CALL(prec, dp_tr_bn_fwd_train, N, C, HW, pj, in[9], in[10], 1e-3, 0.01, NULL, NULL, m2, i2, q));
    MB(CALL(prec, dp_tr_drop_connect_fwd, N, C * HW, rate, c->mask, q, d));
    MB(CALL(prec, dp_tr_add_fwd, NX, d, in[0], out));
    if (dy) {
        void *dd = zal(NX, prec), *dq = zal(NX, prec), *dpj = zal(NX, prec), *dsc = zal(NX, prec), *ds = zal(NX, prec);
        void *dgt = zal((size_t)N * C, prec), *de = zal((size_t)N * C, prec), *dr2 = zal((size_t)N * R, prec);
        void *dr1 = zal((size_t)N * R, prec), *dp = zal((size_t)N * C, prec), *db = zal(NX, prec), *da = zal(NX, prec);
        MB(CALL(prec, dp_tr_add_bwd, NX, dy, dd, din[0]));
        MB(CALL(prec, dp_tr_drop_connect_bwd, N, C * HW, rate, c->mask, dd, dq));
        MB(CALL(prec, dp_tr_bn_bwd_train, N, C, HW, pj, dq, in[9], m2, i2, dpj, din[9], din[10]));
        MB(CALL(prec, dp_tr_conv_bwd_data, &pp, N, MB_H, MB_W, dpj, in[8], dsc, ws, wsn));
        MB(CALL(prec, dp_tr_conv_bwd_filter, &pp, N, MB_H, MB_W, sc, dpj, din[8], NULL, ws, wsn));
        MB(CALL(prec, dp_tr_scale_ch_bwd, N, C, HW, s, gt, dsc, ds, dgt));
        MB(CALL(prec, dp_tr_act_bwd, DP_ACT_SIGMOID, (size_t)N * C, NULL, gt, dgt, de));
        MB(CALL(prec, dp_tr_conv_bwd_data, &pe, N, 1, 1, de, in[6], dr2, ws, wsn));
        MB(CALL(prec, dp_tr_conv_bwd_filter, &pe, N, 1, 1, r2, de, din[6], din[7], ws, wsn));
        MB(CALL(prec, dp_tr_act_bwd, DP_ACT_SWISH, (size_t)N * R, r1, r2, dr2, dr1));
        MB(CALL(prec, dp_tr_conv_bwd_data, &pr, N, 1, 1, dr1, in[4], dp, ws, wsn));
        MB(CALL(prec, dp_tr_conv_bwd_filter, &pr, N, 1, 1, p, dr1, din[4], din[5], ws, wsn));
        MB(CALL(prec, dp_tr_gap_bwd, N, C, HW, dp, ds)); /* s's second consumer: adds */
        MB(CALL(prec, dp_tr_act_bwd, DP_ACT_SWISH, NX, b, s, ds, db));
        MB(CALL(prec, dp_tr_bn_bwd_train, N, C, HW, a, db, in[2], m1, i1, da, din[2], din[3]));
        MB(CALL(prec, dp_tr_conv_bwd_data, &pdw, N, MB_H, MB_W, da, in[1], din[0], ws, wsn)); /* x's second */
        MB(CALL(prec, dp_tr_conv_bwd_filter, &pdw, N, MB_H, MB_W, in[0], da, din[1], NULL, ws, wsn));
        free(dd), free(dq), free(dpj), free(dsc), free(ds), free(dgt), free(de), free(dr2), free(dr1), free(dp);
        free(db), free(da);
    }
#undef MB
    free(a), free(b), free(s), free(p), free(r1), free(r2), free(e), free(gt), free(sc), free(q), free(pj), free(d);
    free(m1), free(i1), free(m2), free(i2), free(ws);
    return st;
}

static disopt_status mb_fwd(const gcase *c, int prec, void *const *in, void *out) {
    return mb_run(c, prec, in, out, NULL, NULL);
}

static disopt_status mb_bwd(const gcase *c, int prec, void *const *in, const void *out, const void *dy,
                            void *const *din) {
    void *o = zal(c->out_len, prec); /* (the forward is run again: its intermediates are not kept) */
    (void)out;
    disopt_status s = mb_run(c, prec, in, o, dy, din);
    free(o);
    return s;
}

static void test_mbconv_block(void **state) {
    (void)state;
    gcase c;
    memset(&c, 0, sizeof c);
    c.name = "MBConv block (SE, BN, drop-connect)";
    const size_t NX = (size_t)MB_N * MB_C * MB_H * MB_W;
    const size_t lens[11] = {NX, MB_C * 9, MB_C, MB_C, MB_R * MB_C, MB_R, MB_C * MB_R, MB_C, MB_C * MB_C, MB_C, MB_C};
    c.n_in = 11;
    memcpy(c.in_len, lens, sizeof lens);
    c.out_len = NX;
    uint8_t mask[MB_N] = {1, 0, 1};
    c.mask = mask;
    c.p = dp_tr_drop_connect_rate(0.2, 13, 26);
    c.fwd = mb_fwd;
    c.bwd = mb_bwd;
    /* float: two BNs and the SE's small gradients; 61 seeds gave at most 7.2e-6 */
    check_case(&c, 1e-6, 3e-5);
}

/* ---------------------------------------------------------------- PyTorch goldens */
typedef struct {
    disopt_st *st;
} golden;

/* reads name as float (numel checked), and as double in *d when d is non-NULL */
static float *gread(golden *g, const char *name, size_t numel, double **d) {
    const disopt_st_tensor_info *t = disopt_st_find(g->st, name);
    if (!t)
        print_message("golden tensor %s missing\n", name);
    assert_non_null(t);
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    assert_int_equal(n, numel);
    float *f = malloc(numel * sizeof(float));
    assert_int_equal(disopt_st_read_f32(g->st, t, f, numel), DISOPT_OK);
    if (d) {
        *d = malloc(numel * sizeof(double));
        for (size_t i = 0; i < numel; i++)
            (*d)[i] = f[i];
    }
    return f;
}

static double g_worst_golden64, g_worst_golden32;

/* our double result vs PyTorch's float64 one (stored as float32) and our float result vs PyTorch's
 * float32 one; bounds: normalised max error */
static void gcmp(golden *g, const char *cs, const char *what, const double *ours64, const float *ours32, size_t n,
                 double tol64, double tol32) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s.f64", cs, what);
    float *ref64 = gread(g, key, n, NULL);
    snprintf(key, sizeof key, "%s.%s.f32", cs, what);
    float *ref32 = gread(g, key, n, NULL);
    double *r64 = malloc(n * sizeof(double)), *r32 = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        r64[i] = ref64[i], r32[i] = ref32[i];
    double e64 = nerr(ours64, 64, r64, n), e32 = nerr(ours32, 32, r32, n);
    print_message("# golden %-11s %-13s f64 %.2e  f32 %.2e\n", cs, what, e64, e32);
    assert_true(e64 <= tol64);
    assert_true(e32 <= tol32);
    if (e64 > g_worst_golden64)
        g_worst_golden64 = e64;
    if (e32 > g_worst_golden32)
        g_worst_golden32 = e32;
    free(ref64);
    free(ref32);
    free(r64);
    free(r32);
}

static void golden_conv(golden *g, const char *cs, const dp_conv_params *p, int n, int h, int w, int bias) {
    int oh, ow;
    assert_int_equal(dp_tr_conv_check(p, n, h, w, &oh, &ow), DISOPT_OK);
    size_t nx = (size_t)n * p->cin * h * w, nw = (size_t)p->cout * (p->cin / p->groups) * p->kh * p->kw;
    size_t ny = (size_t)n * p->cout * oh * ow, nb = (size_t)p->cout;
    char key[64];
    double *x, *wt, *b = NULL, *r;
    snprintf(key, sizeof key, "%s.x", cs);
    float *xf = gread(g, key, nx, &x);
    snprintf(key, sizeof key, "%s.w", cs);
    float *wf = gread(g, key, nw, &wt);
    float *bf = NULL;
    if (bias) {
        snprintf(key, sizeof key, "%s.b", cs);
        bf = gread(g, key, nb, &b);
    }
    snprintf(key, sizeof key, "%s.r", cs);
    float *rf = gread(g, key, ny, &r);
    size_t wsn = dp_tr_conv_ws_elems(p, h, w);
    double *ws = malloc((wsn + 1) * sizeof(double)), *y = malloc(ny * sizeof(double));
    double *dx = calloc(nx, sizeof(double)), *dw = calloc(nw, sizeof(double)), *db = calloc(nb, sizeof(double));
    float *wsf = malloc((wsn + 1) * sizeof(float)), *yf = malloc(ny * sizeof(float));
    float *dxf = calloc(nx, sizeof(float)), *dwf = calloc(nw, sizeof(float)), *dbf = calloc(nb, sizeof(float));
    assert_int_equal(dp_tr_conv_fwd_f64(p, n, h, w, x, wt, b, y, ws, wsn), DISOPT_OK);
    assert_int_equal(dp_tr_conv_bwd_data_f64(p, n, h, w, r, wt, dx, ws, wsn), DISOPT_OK);
    assert_int_equal(dp_tr_conv_bwd_filter_f64(p, n, h, w, x, r, dw, bias ? db : NULL, ws, wsn), DISOPT_OK);
    assert_int_equal(dp_tr_conv_fwd_f32(p, n, h, w, xf, wf, bf, yf, wsf, wsn), DISOPT_OK);
    assert_int_equal(dp_tr_conv_bwd_data_f32(p, n, h, w, rf, wf, dxf, wsf, wsn), DISOPT_OK);
    assert_int_equal(dp_tr_conv_bwd_filter_f32(p, n, h, w, xf, rf, dwf, bias ? dbf : NULL, wsf, wsn), DISOPT_OK);
    gcmp(g, cs, "y", y, yf, ny, 2e-7, 2e-6);
    gcmp(g, cs, "dx", dx, dxf, nx, 2e-7, 2e-6);
    gcmp(g, cs, "dw", dw, dwf, nw, 2e-7, 2e-6);
    if (bias)
        gcmp(g, cs, "db", db, dbf, nb, 2e-7, 2e-6);
    free(x), free(wt), free(b), free(r), free(xf), free(wf), free(bf), free(rf);
    free(ws), free(y), free(dx), free(dw), free(db), free(wsf), free(yf), free(dxf), free(dwf), free(dbf);
}

static void test_golden_torch(void **state) {
    (void)state;
    golden g;
    char path[512];
    snprintf(path, sizeof path, "%s/train/grad_golden.safetensors", DISOPT_TESTDATA);
    assert_int_equal(disopt_st_open(path, &g.st), DISOPT_OK);

    /* groups 2, 3x3, stride 2, dilation 2, pad t2 b1 l1 r2, bias */
    dp_conv_params pc = {4, 6, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 2};
    golden_conv(&g, "conv", &pc, 2, 9, 9, 1);
    /* depthwise 5x5/s2, pad (1,2,1,2) */
    dp_conv_params pd = {6, 6, 5, 5, 2, 2, 1, 1, 6, 1, 2, 1, 2};
    golden_conv(&g, "dwconv", &pd, 2, 8, 8, 0);

    /* BN training, eps 1e-3, momentum 0.01 */
    {
        enum { N = 2, C = 5, HW = 36, NX = N * C * HW };
        double *x, *gm, *bt, *r, *rm, *rv;
        float *xf = gread(&g, "bn.x", NX, &x), *gf = gread(&g, "bn.g", C, &gm), *btf = gread(&g, "bn.b", C, &bt);
        float *rf = gread(&g, "bn.r", NX, &r), *rmf = gread(&g, "bn.running_mean", C, &rm);
        float *rvf = gread(&g, "bn.running_var", C, &rv);
        double y[NX], dx[NX] = {0}, dg[C] = {0}, db[C] = {0}, sm[C], si[C];
        float yf[NX], dxf[NX] = {0}, dgf[C] = {0}, dbf[C] = {0}, smf[C], sif[C];
        assert_int_equal(dp_tr_bn_fwd_train_f64(N, C, HW, x, gm, bt, 1e-3, 0.01, rm, rv, sm, si, y), DISOPT_OK);
        assert_int_equal(dp_tr_bn_bwd_train_f64(N, C, HW, x, r, gm, sm, si, dx, dg, db), DISOPT_OK);
        assert_int_equal(dp_tr_bn_fwd_train_f32(N, C, HW, xf, gf, btf, 1e-3, 0.01, rmf, rvf, smf, sif, yf), DISOPT_OK);
        assert_int_equal(dp_tr_bn_bwd_train_f32(N, C, HW, xf, rf, gf, smf, sif, dxf, dgf, dbf), DISOPT_OK);
        gcmp(&g, "bn", "y", y, yf, NX, 2e-7, 2e-6);
        gcmp(&g, "bn", "running_mean", rm, rmf, C, 2e-7, 2e-6);
        gcmp(&g, "bn", "running_var", rv, rvf, C, 2e-7, 2e-6);
        gcmp(&g, "bn", "dx", dx, dxf, NX, 2e-7, 2e-6);
        gcmp(&g, "bn", "dg", dg, dgf, C, 2e-7, 2e-6);
        gcmp(&g, "bn", "db", db, dbf, C, 2e-7, 2e-6);
        free(x), free(gm), free(bt), free(r), free(rm), free(rv);
        free(xf), free(gf), free(btf), free(rf), free(rmf), free(rvf);
    }
    /* bilinear x4 align_corners=True, swish, softmax */
    {
        enum { NX = 2 * 3 * 4 * 5, NY = NX * 16 };
        double *x, *r, y[NY], dx[NX] = {0};
        float *xf = gread(&g, "up4.x", NX, &x), *rf = gread(&g, "up4.r", NY, &r), yf[NY], dxf[NX] = {0};
        assert_int_equal(dp_tr_upsample_fwd_f64(2, 3, 4, 5, 4, x, y), DISOPT_OK);
        assert_int_equal(dp_tr_upsample_bwd_f64(2, 3, 4, 5, 4, r, dx), DISOPT_OK);
        assert_int_equal(dp_tr_upsample_fwd_f32(2, 3, 4, 5, 4, xf, yf), DISOPT_OK);
        assert_int_equal(dp_tr_upsample_bwd_f32(2, 3, 4, 5, 4, rf, dxf), DISOPT_OK);
        gcmp(&g, "up4", "y", y, yf, NY, 2e-7, 2e-6);
        gcmp(&g, "up4", "dx", dx, dxf, NX, 2e-7, 2e-6);
        free(x), free(r), free(xf), free(rf);
    }
    {
        enum { NX = 2 * 3 * 16 };
        double *x, *r, y[NX], dx[NX] = {0};
        float *xf = gread(&g, "swish.x", NX, &x), *rf = gread(&g, "swish.r", NX, &r), yf[NX], dxf[NX] = {0};
        assert_int_equal(dp_tr_act_fwd_f64(DP_ACT_SWISH, NX, x, y), DISOPT_OK);
        assert_int_equal(dp_tr_act_bwd_f64(DP_ACT_SWISH, NX, x, y, r, dx), DISOPT_OK);
        assert_int_equal(dp_tr_act_fwd_f32(DP_ACT_SWISH, NX, xf, yf), DISOPT_OK);
        assert_int_equal(dp_tr_act_bwd_f32(DP_ACT_SWISH, NX, xf, yf, rf, dxf), DISOPT_OK);
        gcmp(&g, "swish", "y", y, yf, NX, 2e-7, 2e-6);
        gcmp(&g, "swish", "dx", dx, dxf, NX, 2e-7, 2e-6);
        free(x), free(r), free(xf), free(rf);
    }
    {
        enum { NX = 2 * 4 * 9 };
        double *x, *r, y[NX], dx[NX] = {0};
        float *xf = gread(&g, "softmax.x", NX, &x), *rf = gread(&g, "softmax.r", NX, &r), yf[NX], dxf[NX] = {0};
        assert_int_equal(dp_tr_softmax_fwd_f64(2, 4, 9, x, y), DISOPT_OK);
        assert_int_equal(dp_tr_softmax_bwd_f64(2, 4, 9, y, r, dx), DISOPT_OK);
        assert_int_equal(dp_tr_softmax_fwd_f32(2, 4, 9, xf, yf), DISOPT_OK);
        assert_int_equal(dp_tr_softmax_bwd_f32(2, 4, 9, yf, rf, dxf), DISOPT_OK);
        gcmp(&g, "softmax", "y", y, yf, NX, 2e-7, 2e-6);
        gcmp(&g, "softmax", "dx", dx, dxf, NX, 2e-7, 2e-6);
        free(x), free(r), free(xf), free(rf);
    }
    {
        /* drop-connect (x / keep * mask, float ops in efficientnet_pytorch's order) */
        enum { N = 4, PER = 3 * 25, NX = N * PER };
        double *x, *r, *md, y[NX], dx[NX] = {0};
        float *xf = gread(&g, "dropconnect.x", NX, &x), *rf = gread(&g, "dropconnect.r", NX, &r), yf[NX], dxf[NX] = {0};
        float *mf = gread(&g, "dropconnect.mask", N, &md);
        uint8_t mask[N];
        for (int i = 0; i < N; i++)
            mask[i] = (uint8_t)mf[i];
        const double rate = dp_tr_drop_connect_rate(0.2, 13, 26);
        assert_int_equal(dp_tr_drop_connect_fwd_f64(N, PER, rate, mask, x, y), DISOPT_OK);
        assert_int_equal(dp_tr_drop_connect_bwd_f64(N, PER, rate, mask, r, dx), DISOPT_OK);
        assert_int_equal(dp_tr_drop_connect_fwd_f32(N, PER, rate, mask, xf, yf), DISOPT_OK);
        assert_int_equal(dp_tr_drop_connect_bwd_f32(N, PER, rate, mask, rf, dxf), DISOPT_OK);
        gcmp(&g, "dropconnect", "y", y, yf, NX, 2e-7, 2e-7);
        gcmp(&g, "dropconnect", "dx", dx, dxf, NX, 2e-7, 2e-7);
        free(x), free(r), free(md), free(xf), free(rf), free(mf);
    }
    disopt_st_close(g.st);
    print_message("# golden worst: f64 %.2e, f32 %.2e\n", g_worst_golden64, g_worst_golden32);
}

static void test_summary(void **state) {
    (void)state;
    print_message("# worst over all ops: finite differences %.2e, float vs double %.2e\n", g_worst_fd, g_worst_f32);
}

static int teardown(void **state) {
    (void)state;
    dp_pool_destroy(g_pool3);
    return 0;
}

static int setup(void **state) {
    (void)state;
    if (dp_pool_create(3, &g_pool3) != DISOPT_OK)
        return -1;
    const char *env = getenv("DISOPT_TEST_SEED");
    g_rng.s = env ? strtoull(env, NULL, 0) : 0x5eed2026112501ULL;
    if (!g_rng.s)
        g_rng.s = 1;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox),       cmocka_unit_test(test_conv),         cmocka_unit_test(test_conv_errors),
        cmocka_unit_test(test_bn),           cmocka_unit_test(test_bn_eval),      cmocka_unit_test(test_bn_running),
        cmocka_unit_test(test_act),          cmocka_unit_test(test_channel_ops),  cmocka_unit_test(test_ops_split),
        cmocka_unit_test(test_dropout),      cmocka_unit_test(test_drop_connect), cmocka_unit_test(test_golden_torch),
        cmocka_unit_test(test_mbconv_block), cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
