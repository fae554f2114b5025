/* test_train.c - the training losses and optimizers (core/train/loss.*, core/train/optim.*):
 *  - every loss gradient against central finite differences of the real code instantiated in double
 *    (fixed-seed random logits; with and without an absent class and a validity mask), with a negative
 *    control showing the bound catches a gradient error of 1e-5 of its scale;
 *  - every loss value and gradient against PyTorch 1.13 + smp 0.2.0 (testdata/train/loss_golden.safetensors,
 *    written by testdata/gen/make_train_golden.py): values of our f64 code vs PyTorch float64 within 1e-10
 *    relative, of our f32 code vs PyTorch float32 within 1e-6 relative; gradients (PyTorch float64 stored as
 *    F32) within 1e-6 of max|gradient|;
 *  - 10 steps of torch.optim.SGD (the authors' Nesterov config, and a dampened one) and torch.optim.AdamW under
 *    the authors' poly schedule (testdata/train/optim_golden.safetensors): learning rates, weights after every
 *    step and the final state; gap elements of the arena are never touched;
 *  - argument errors. */
#include "test_util.h"
#include "internal.h"
#include "train/loss.h"
#include "train/optim.h"

#include <math.h>

/* ---------------------------------------------------------------- helpers */
static tu_rng fixed_rng(uint64_t seed) {
    tu_rng r = {seed};
    return r;
}

static double *rand_d(tu_rng *r, size_t n, double scale) {
    double *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = scale * (2.0 * tu_uniform(r, 0.0f, 1.0f) - 1.0) + 1e-3 * (double)tu_uniform(r, 0.0f, 1.0f);
    return x;
}

/* max|a - b| / max|b| (NaN in a wins) */
static double nerr_d(const double *a, const double *b, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > m) m = fabs(b[i]);
        double d = fabs(a[i] - b[i]);
        if (!(d <= e)) e = d;
    }
    return e / (m > 0 ? m : 1);
}

static double nerr_f(const float *a, const float *b, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= e)) e = d;
    }
    return e / (m > 0 ? m : 1);
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 0 ? fabs(b) : 1.0); }

/* ---------------------------------------------------------------- finite differences */
typedef double (*fd_fn)(void *ctx); /* evaluates the loss at the current inputs (in double) */

#define FD_H 1e-5
#define FD_TOL 1e-7  /* max|fd - analytic| / max|analytic| */

/* central differences of f w.r.t. every x[i]; returns the normalised error against an */
static double fd_err(fd_fn f, void *ctx, double *x, size_t n, const double *an) {
    double *fd = malloc(n * sizeof *fd);
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + FD_H;
        const double fp = f(ctx);
        x[i] = x0 - FD_H;
        const double fm = f(ctx);
        x[i] = x0;
        fd[i] = (fp - fm) / (2.0 * FD_H);
    }
    double e = nerr_d(an, fd, n);
    /* negative control: the same check on a gradient wrong by 1e-5 of its scale in one element must fail */
    double *bad = malloc(n * sizeof *bad), m = 0;
    memcpy(bad, an, n * sizeof *bad);
    for (size_t i = 0; i < n; i++)
        if (fabs(an[i]) > m) m = fabs(an[i]);
    bad[n / 2] += 1e-5 * m;
    const double e_bad = nerr_d(bad, fd, n);
    if (!(e_bad > FD_TOL)) fail_msg("finite-difference bound too loose: a 1e-5 error gives only %g", e_bad);
    free(bad);
    free(fd);
    return e;
}

/* ---- seg (ce, dice) */
typedef struct {
    dp_lshape sh;
    double *x;
    int32_t *y;
    uint8_t *valid;
    int which; /* 0 ce, 1 dice, 2 seg with weights 0.7 / 1.3 */
} seg_ctx;

static double seg_eval(void *p) {
    seg_ctx *c = p;
    double ce = 0, dice = 0;
    assert_int_equal(dp_loss_seg_f64(c->sh, c->x, c->y, c->valid, 0.7, 1.3, &ce, &dice, NULL, 1.0), DISOPT_OK);
    return c->which == 0 ? ce : c->which == 1 ? dice : 0.7 * ce + 1.3 * dice;
}

/* target rule: 0 random over all classes, 1 class C-1 absent, 2 only class 0 (absent ones + cardinality) */
static void make_target(tu_rng *r, dp_lshape sh, int rule, int32_t *y, uint8_t *valid) {
    const size_t NP = (size_t)sh.n * (size_t)sh.h * (size_t)sh.w;
    for (size_t i = 0; i < NP; i++) {
        int ncls = rule == 0 ? sh.c : rule == 1 ? sh.c - 1 : 1;
        y[i] = (int32_t)(tu_next(r) % (uint64_t)ncls);
        if (valid) {
            valid[i] = (tu_next(r) % 4) != 0;
            if (!valid[i]) y[i] = (int32_t)(tu_next(r) % 2 ? 255 : -7); /* never read */
        }
    }
}

static void test_fd_seg(void **state) {
    (void)state;
    tu_rng r = fixed_rng(0x5eed1234ULL);
    double worst[3] = {0, 0, 0};
    const int dims[][4] = {{2, 2, 6, 6}, {2, 2, 7, 8}, {2, 3, 6, 7}, {1, 2, 8, 8}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int rule = 0; rule < 3; rule++)
            for (int masked = 0; masked < 2; masked++) {
                dp_lshape sh = {dims[d][0], dims[d][1], dims[d][2], dims[d][3]};
                const size_t NP = (size_t)sh.n * sh.h * sh.w, nx = NP * (size_t)sh.c;
                seg_ctx c = {sh, rand_d(&r, nx, 3.0), malloc(NP * sizeof(int32_t)), masked ? malloc(NP) : NULL, 0};
                make_target(&r, sh, rule, c.y, c.valid);
                for (int which = 0; which < 3; which++) {
                    c.which = which;
                    double *g = calloc(nx, sizeof *g), v1 = 0, v2 = 0;
                    disopt_status s;
                    if (which == 0)
                        s = dp_loss_ce_f64(sh, c.x, c.y, c.valid, &v1, g, 1.0);
                    else if (which == 1)
                        s = dp_loss_dice_f64(sh, c.x, c.y, c.valid, &v1, g, 1.0);
                    else
                        s = dp_loss_seg_f64(sh, c.x, c.y, c.valid, 0.7, 1.3, &v1, &v2, g, 1.0);
                    assert_int_equal(s, DISOPT_OK);
                    double e = fd_err(seg_eval, &c, c.x, nx, g);
                    if (e > worst[which]) worst[which] = e;
                    if (!(e <= FD_TOL))
                        fail_msg("%s %dx%dx%dx%d rule %d mask %d: gradient vs finite differences %g",
                                 which == 0 ? "ce" : which == 1 ? "dice" : "seg", sh.n, sh.c, sh.h, sh.w, rule, masked, e);
                    free(g);
                }
                free(c.x);
                free(c.y);
                free(c.valid);
            }
    printf("# finite differences (double): ce %.3g, dice %.3g, seg %.3g (bound %g)\n", worst[0], worst[1], worst[2], FD_TOL);
}

/* ---- kd */
typedef struct {
    dp_lshape sh;
    double *s, *t;
    uint8_t *valid;
} kd_ctx;

static double kd_eval(void *p) {
    kd_ctx *c = p;
    double v = 0;
    assert_int_equal(dp_loss_kd_f64(c->sh, c->s, c->t, c->valid, &v, NULL, NULL, 1.0), DISOPT_OK);
    return v;
}

static void test_fd_kd(void **state) {
    (void)state;
    tu_rng r = fixed_rng(0x5eed4321ULL);
    double worst = 0;
    const int dims[][4] = {{2, 2, 6, 6}, {2, 3, 7, 6}, {1, 2, 8, 7}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int masked = 0; masked < 2; masked++) {
            dp_lshape sh = {dims[d][0], dims[d][1], dims[d][2], dims[d][3]};
            const size_t NP = (size_t)sh.n * sh.h * sh.w, nx = NP * (size_t)sh.c;
            kd_ctx c = {sh, rand_d(&r, nx, 3.0), rand_d(&r, nx, 4.0), masked ? malloc(NP) : NULL};
            if (c.valid)
                for (size_t i = 0; i < NP; i++) c.valid[i] = (tu_next(&r) % 3) != 0;
            double *gs = calloc(nx, sizeof *gs), *gt = calloc(nx, sizeof *gt), v;
            assert_int_equal(dp_loss_kd_f64(sh, c.s, c.t, c.valid, &v, gs, gt, 1.0), DISOPT_OK);
            double e1 = fd_err(kd_eval, &c, c.s, nx, gs), e2 = fd_err(kd_eval, &c, c.t, nx, gt);
            if (e1 > worst) worst = e1;
            if (e2 > worst) worst = e2;
            if (!(e1 <= FD_TOL && e2 <= FD_TOL)) fail_msg("kd case %zu mask %d: %g (student) %g (teacher)", d, masked, e1, e2);
            free(gs);
            free(gt);
            free(c.s);
            free(c.t);
            free(c.valid);
        }
    printf("# finite differences (double): kd %.3g\n", worst);
}

/* ---- mse */
typedef struct {
    double *a, *b;
    size_t n;
} mse_ctx;

static double mse_eval(void *p) {
    mse_ctx *c = p;
    double v = 0;
    assert_int_equal(dp_loss_mse_f64(c->a, c->b, c->n, &v, NULL, NULL, 1.0), DISOPT_OK);
    return v;
}

static void test_fd_mse(void **state) {
    (void)state;
    tu_rng r = fixed_rng(77);
    mse_ctx c = {rand_d(&r, 150, 1.0), rand_d(&r, 150, 1.0), 150};
    double *ga = calloc(150, sizeof *ga), *gb = calloc(150, sizeof *gb), v;
    assert_int_equal(dp_loss_mse_f64(c.a, c.b, c.n, &v, ga, gb, 1.0), DISOPT_OK);
    double e1 = fd_err(mse_eval, &c, c.a, c.n, ga), e2 = fd_err(mse_eval, &c, c.b, c.n, gb);
    printf("# finite differences (double): mse %.3g %.3g\n", e1, e2);
    assert_true(e1 <= FD_TOL && e2 <= FD_TOL);
    free(ga);
    free(gb);
    free(c.a);
    free(c.b);
}

/* ---- stage 1 and stage 2 totals */
typedef struct {
    dp_stage2_in_f64 in;
} st2_ctx;

static double st2_eval(void *p) {
    st2_ctx *c = p;
    dp_stage2_terms t;
    assert_int_equal(dp_loss_stage2_f64(&c->in, &t, NULL), DISOPT_OK);
    return t.total;
}

static void test_fd_stage2(void **state) {
    (void)state;
    tu_rng r = fixed_rng(0x57a9e2ULL);
    double worst = 0;
    const size_t fn[3] = {2 * 5 * 2 * 2, 2 * 6 * 2 * 2, 2 * 4 * 3 * 4};
    for (int masked = 0; masked < 2; masked++) {
        dp_lshape sh = {2, 2, 6, 7};
        const size_t NP = (size_t)sh.n * sh.h * sh.w, nx = NP * (size_t)sh.c;
        st2_ctx c;
        memset(&c, 0, sizeof c);
        c.in.shape = sh;
        double *ls = rand_d(&r, nx, 3.0), *lr = rand_d(&r, nx, 3.0), *lf = rand_d(&r, nx, 3.0), *lt = rand_d(&r, nx, 4.0);
        int32_t *y = malloc(NP * sizeof *y);
        uint8_t *valid = masked ? malloc(NP) : NULL;
        make_target(&r, sh, 0, y, valid);
        c.in.logit_sar = ls;
        c.in.logit_rgb = lr;
        c.in.logit_fused = lf;
        c.in.t_logits = lt;
        c.in.target = y;
        c.in.valid = valid;
        c.in.w = dp_loss_weights_authors();
        double *sf[3], *tf[3], *gsf[3];
        for (int k = 0; k < 3; k++) {
            sf[k] = rand_d(&r, fn[k], 1.0);
            tf[k] = rand_d(&r, fn[k], 1.0);
            gsf[k] = malloc(fn[k] * sizeof(double));
            c.in.s_feat[k] = sf[k];
            c.in.t_feat[k] = tf[k];
            c.in.feat_numel[k] = fn[k];
        }
        double *gs = malloc(nx * sizeof *gs), *gr = malloc(nx * sizeof *gr), *gf = malloc(nx * sizeof *gf);
        for (size_t i = 0; i < nx; i++) gs[i] = gr[i] = gf[i] = NAN; /* must be overwritten */
        dp_stage2_grad_f64 g = {gs, gr, gf, {gsf[0], gsf[1], gsf[2]}};
        dp_stage2_terms t;
        assert_int_equal(dp_loss_stage2_f64(&c.in, &t, &g), DISOPT_OK);
        /* the total is the authors' expression of the terms */
        double tot = (t.ce_sar + t.dice_sar) + (t.ce_rgb + t.dice_rgb + t.kd_rgb) + (t.ce_fused + t.dice_fused) +
                     (t.mse[0] + t.mse[1] + t.mse[2]) / 3.0;
        assert_true(rel(t.total, tot) < 1e-14);
        double e[6] = {fd_err(st2_eval, &c, ls, nx, gs), fd_err(st2_eval, &c, lr, nx, gr), fd_err(st2_eval, &c, lf, nx, gf),
                       fd_err(st2_eval, &c, sf[0], fn[0], gsf[0]), fd_err(st2_eval, &c, sf[1], fn[1], gsf[1]),
                       fd_err(st2_eval, &c, sf[2], fn[2], gsf[2])};
        for (int k = 0; k < 6; k++) {
            if (e[k] > worst) worst = e[k];
            if (!(e[k] <= FD_TOL)) fail_msg("stage 2 (mask %d): input %d gradient vs finite differences %g", masked, k, e[k]);
        }
        for (int k = 0; k < 3; k++) {
            free(sf[k]);
            free(tf[k]);
            free(gsf[k]);
        }
        free(ls), free(lr), free(lf), free(lt), free(y), free(valid), free(gs), free(gr), free(gf);
    }
    printf("# finite differences (double): stage-2 total %.3g\n", worst);
}

typedef struct {
    dp_lshape sh;
    double *x;
    int32_t *y;
    uint8_t *valid;
} st1_ctx;

static double st1_eval(void *p) {
    st1_ctx *c = p;
    dp_stage1_terms t;
    assert_int_equal(dp_loss_stage1_f64(c->sh, c->x, c->y, c->valid, dp_loss_weights_authors(), &t, NULL), DISOPT_OK);
    return t.total;
}

static void test_fd_stage1(void **state) {
    (void)state;
    tu_rng r = fixed_rng(0x1a2b3cULL);
    double worst = 0;
    for (int masked = 0; masked < 2; masked++) {
        dp_lshape sh = {2, 2, 8, 6};
        const size_t NP = (size_t)sh.n * sh.h * sh.w, nx = NP * (size_t)sh.c;
        st1_ctx c = {sh, rand_d(&r, nx, 3.0), malloc(NP * sizeof(int32_t)), masked ? malloc(NP) : NULL};
        make_target(&r, sh, masked, c.y, c.valid);
        double *g = malloc(nx * sizeof *g);
        for (size_t i = 0; i < nx; i++) g[i] = NAN;
        dp_stage1_terms t;
        assert_int_equal(dp_loss_stage1_f64(sh, c.x, c.y, c.valid, dp_loss_weights_authors(), &t, g), DISOPT_OK);
        assert_true(rel(t.total, t.ce + t.dice) < 1e-15);
        double e = fd_err(st1_eval, &c, c.x, nx, g);
        if (e > worst) worst = e;
        if (!(e <= FD_TOL)) fail_msg("stage 1 (mask %d): %g", masked, e);
        free(g), free(c.x), free(c.y), free(c.valid);
    }
    printf("# finite differences (double): stage-1 total %.3g\n", worst);
}

/* term functions accumulate gscale * gradient; the f32 and f64 instantiations agree */
static void test_accumulate_and_types(void **state) {
    (void)state;
    tu_rng r = fixed_rng(99);
    dp_lshape sh = {2, 3, 5, 4};
    const size_t NP = 40, nx = 120;
    double *x = rand_d(&r, nx, 3.0), *g1 = calloc(nx, sizeof *g1), *g2 = malloc(nx * sizeof *g2);
    float *xf = malloc(nx * sizeof *xf), *gf = calloc(nx, sizeof *gf);
    int32_t *y = malloc(NP * sizeof *y);
    make_target(&r, sh, 1, y, NULL);
    for (size_t i = 0; i < nx; i++) {
        xf[i] = (float)x[i];
        x[i] = (double)xf[i];
        g2[i] = 0.25 * (double)i;
    }
    double v1, v2, vf, cf, dummy;
    assert_int_equal(dp_loss_seg_f64(sh, x, y, NULL, 1.0, 1.0, &v1, &dummy, g1, 1.0), DISOPT_OK);
    assert_int_equal(dp_loss_seg_f64(sh, x, y, NULL, 1.0, 1.0, &v2, &dummy, g2, -2.5), DISOPT_OK);
    for (size_t i = 0; i < nx; i++) assert_true(fabs(g2[i] - (0.25 * (double)i - 2.5 * g1[i])) < 1e-12);
    assert_int_equal(dp_loss_seg_f32(sh, xf, y, NULL, 1.0, 1.0, &cf, &vf, gf, 1.0), DISOPT_OK);
    assert_true(rel(cf, v1) < 1e-14); /* same double math on the same values */
    double m = 0, e = 0;
    for (size_t i = 0; i < nx; i++) {
        m = fmax(m, fabs(g1[i]));
        e = fmax(e, fabs((double)gf[i] - g1[i]));
    }
    assert_true(e <= 1e-7 * m);
    free(x), free(g1), free(g2), free(xf), free(gf), free(y);
}

/* ---------------------------------------------------------------- PyTorch goldens */
typedef struct {
    disopt_st *st;
    const char *file;
} golden;

static golden open_golden(const char *name) {
    golden g = {NULL, name};
    char path[512];
    snprintf(path, sizeof path, "%s/train/%s", DISOPT_TESTDATA, name);
    if (disopt_st_open(path, &g.st) != DISOPT_OK) fail_msg("%s", disopt_last_error());
    return g;
}

/* a tensor as floats; *n its element count */
static float *g_f32(golden *g, const char *key, size_t *n) {
    const disopt_st_tensor_info *t = disopt_st_find(g->st, key);
    if (!t) fail_msg("%s: no tensor %s", g->file, key);
    size_t cnt = 1;
    for (int d = 0; d < t->ndim; d++) cnt *= (size_t)t->shape[d];
    float *v = malloc((cnt ? cnt : 1) * sizeof *v);
    if (disopt_st_read_f32(g->st, t, v, cnt) != DISOPT_OK) fail_msg("%s", disopt_last_error());
    if (n) *n = cnt;
    return v;
}

static double *g_f64(golden *g, const char *key, size_t *n) {
    size_t cnt;
    float *f = g_f32(g, key, &cnt);
    double *d = malloc(cnt * sizeof *d);
    for (size_t i = 0; i < cnt; i++) d[i] = f[i];
    free(f);
    if (n) *n = cnt;
    return d;
}

static int32_t *g_i32(golden *g, const char *key) {
    size_t cnt;
    float *f = g_f32(g, key, &cnt);
    int32_t *v = malloc(cnt * sizeof *v);
    for (size_t i = 0; i < cnt; i++) v[i] = (int32_t)f[i];
    free(f);
    return v;
}

static uint8_t *g_u8(golden *g, const char *key) {
    if (!disopt_st_find(g->st, key)) return NULL;
    size_t cnt;
    float *f = g_f32(g, key, &cnt);
    uint8_t *v = malloc(cnt);
    for (size_t i = 0; i < cnt; i++) v[i] = (uint8_t)(f[i] != 0.0f);
    free(f);
    return v;
}

static dp_lshape g_shape(golden *g, const char *key) {
    const disopt_st_tensor_info *t = disopt_st_find(g->st, key);
    if (!t || t->ndim != 4) fail_msg("%s: %s is not NCHW", g->file, key);
    dp_lshape sh = {(int)t->shape[0], (int)t->shape[1], (int)t->shape[2], (int)t->shape[3]};
    return sh;
}

static double g_meta(golden *g, const char *key) {
    const char *v = disopt_st_metadata(g->st, key);
    if (!v) fail_msg("%s: no metadata %s", g->file, key);
    return strtod(v, NULL);
}

#define TOL_V64 1e-10 /* our f64 vs PyTorch float64, relative */
#define TOL_V32 1e-6  /* our f32 vs PyTorch float32, relative */
#define TOL_G 1e-6    /* gradients vs PyTorch float64 (stored F32), relative to max|gradient| */

typedef struct {
    double v64, v32, g;
} worst_t;

static void check_value(worst_t *w, const char *what, double mine64, double mine32, double ref64, double ref32) {
    double e64 = rel(mine64, ref64), e32 = rel(mine32, ref32);
    if (e64 > w->v64) w->v64 = e64;
    if (e32 > w->v32) w->v32 = e32;
    if (!(e64 <= TOL_V64)) fail_msg("%s: f64 %.17g vs PyTorch %.17g (rel %g)", what, mine64, ref64, e64);
    if (!(e32 <= TOL_V32)) fail_msg("%s: f32 %.9g vs PyTorch %.9g (rel %g)", what, mine32, ref32, e32);
}

static void check_grad(worst_t *w, const char *what, const double *g64, const float *g32, const float *ref, size_t n) {
    double *r64 = malloc(n * sizeof *r64);
    float *a32 = malloc(n * sizeof *a32);
    for (size_t i = 0; i < n; i++) {
        r64[i] = ref[i];
        a32[i] = g32[i];
    }
    double e64 = nerr_d(g64, r64, n), e32 = nerr_f(a32, ref, n);
    double e = e64 > e32 ? e64 : e32;
    if (e > w->g) w->g = e;
    if (!(e <= TOL_G)) fail_msg("%s: gradient differs from PyTorch: f64 %g, f32 %g", what, e64, e32);
    free(r64);
    free(a32);
}

static void test_golden_terms(void **state) {
    (void)state;
    golden G = open_golden("loss_golden.safetensors");
    worst_t w = {0, 0, 0};
    const char *cases[] = {"c2", "c2_absent", "c2_mask", "c2_mask_absent", "c3", "c3_mask"};
    char k[128];
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const char *cs = cases[ci];
        snprintf(k, sizeof k, "%s.x", cs);
        dp_lshape sh = g_shape(&G, k);
        size_t nx;
        float *xf = g_f32(&G, k, &nx);
        double *xd = g_f64(&G, k, NULL);
        snprintf(k, sizeof k, "%s.y", cs);
        int32_t *y = g_i32(&G, k);
        snprintf(k, sizeof k, "%s.valid", cs);
        uint8_t *valid = g_u8(&G, k);
        for (int term = 0; term < 2; term++) {
            const char *tn = term ? "dice" : "ce";
            double v64, v32;
            double *g64 = calloc(nx, sizeof *g64);
            float *g32 = calloc(nx, sizeof *g32);
            if (term == 0) {
                assert_int_equal(dp_loss_ce_f64(sh, xd, y, valid, &v64, g64, 1.0), DISOPT_OK);
                assert_int_equal(dp_loss_ce_f32(sh, xf, y, valid, &v32, g32, 1.0), DISOPT_OK);
            } else {
                assert_int_equal(dp_loss_dice_f64(sh, xd, y, valid, &v64, g64, 1.0), DISOPT_OK);
                assert_int_equal(dp_loss_dice_f32(sh, xf, y, valid, &v32, g32, 1.0), DISOPT_OK);
            }
            char what[96];
            snprintf(what, sizeof what, "%s %s", cs, tn);
            snprintf(k, sizeof k, "%s.%s.f64", cs, tn);
            double r64 = g_meta(&G, k);
            snprintf(k, sizeof k, "%s.%s.f32", cs, tn);
            check_value(&w, what, v64, v32, r64, g_meta(&G, k));
            snprintf(k, sizeof k, "%s.g_%s", cs, tn);
            float *ref = g_f32(&G, k, NULL);
            check_grad(&w, what, g64, g32, ref, nx);
            free(ref), free(g64), free(g32);
        }
        free(xf), free(xd), free(y), free(valid);
    }
    const char *kds[] = {"kd_c2", "kd_c2_mask", "kd_c3"};
    for (size_t ci = 0; ci < 3; ci++) {
        const char *cs = kds[ci];
        snprintf(k, sizeof k, "%s.s", cs);
        dp_lshape sh = g_shape(&G, k);
        size_t nx;
        float *sf = g_f32(&G, k, &nx);
        double *sd = g_f64(&G, k, NULL);
        snprintf(k, sizeof k, "%s.t", cs);
        float *tf = g_f32(&G, k, NULL);
        double *td = g_f64(&G, k, NULL);
        snprintf(k, sizeof k, "%s.valid", cs);
        uint8_t *valid = g_u8(&G, k);
        double *gs64 = calloc(nx, sizeof(double)), *gt64 = calloc(nx, sizeof(double)), v64, v32;
        float *gs32 = calloc(nx, sizeof(float)), *gt32 = calloc(nx, sizeof(float));
        assert_int_equal(dp_loss_kd_f64(sh, sd, td, valid, &v64, gs64, gt64, 1.0), DISOPT_OK);
        assert_int_equal(dp_loss_kd_f32(sh, sf, tf, valid, &v32, gs32, gt32, 1.0), DISOPT_OK);
        char a[64], b[64];
        snprintf(a, sizeof a, "%s.kd.f64", cs);
        snprintf(b, sizeof b, "%s.kd.f32", cs);
        check_value(&w, cs, v64, v32, g_meta(&G, a), g_meta(&G, b));
        snprintf(k, sizeof k, "%s.g_s", cs);
        float *ref = g_f32(&G, k, NULL);
        check_grad(&w, cs, gs64, gs32, ref, nx);
        free(ref);
        snprintf(k, sizeof k, "%s.g_t", cs);
        ref = g_f32(&G, k, NULL);
        check_grad(&w, cs, gt64, gt32, ref, nx);
        free(ref), free(sf), free(sd), free(tf), free(td), free(valid), free(gs64), free(gt64), free(gs32), free(gt32);
    }
    {
        size_t n;
        float *af = g_f32(&G, "mse.a", &n), *bf = g_f32(&G, "mse.b", NULL);
        double *ad = g_f64(&G, "mse.a", NULL), *bd = g_f64(&G, "mse.b", NULL);
        double *ga64 = calloc(n, sizeof(double)), *gb64 = calloc(n, sizeof(double)), v64, v32;
        float *ga32 = calloc(n, sizeof(float)), *gb32 = calloc(n, sizeof(float));
        assert_int_equal(dp_loss_mse_f64(ad, bd, n, &v64, ga64, gb64, 1.0), DISOPT_OK);
        assert_int_equal(dp_loss_mse_f32(af, bf, n, &v32, ga32, gb32, 1.0), DISOPT_OK);
        check_value(&w, "mse", v64, v32, g_meta(&G, "mse.mse.f64"), g_meta(&G, "mse.mse.f32"));
        float *ra = g_f32(&G, "mse.g_a", NULL), *rb = g_f32(&G, "mse.g_b", NULL);
        check_grad(&w, "mse a", ga64, ga32, ra, n);
        check_grad(&w, "mse b", gb64, gb32, rb, n);
        free(af), free(bf), free(ad), free(bd), free(ga64), free(gb64), free(ga32), free(gb32), free(ra), free(rb);
    }
    printf("# PyTorch goldens, terms: values f64 rel %.3g (tol %g), f32 rel %.3g (tol %g); gradients %.3g (tol %g)\n",
           w.v64, TOL_V64, w.v32, TOL_V32, w.g, TOL_G);
    disopt_st_close(G.st);
}

static void test_golden_stage2(void **state) {
    (void)state;
    golden G = open_golden("loss_golden.safetensors");
    worst_t w = {0, 0, 0};
    const char *cases[] = {"st2", "st2_mask"};
    const char *lnames[4] = {"logit_sar", "logit_rgb", "logit_fused", "t_logits"};
    char k[128];
    for (int ci = 0; ci < 2; ci++) {
        const char *cs = cases[ci];
        snprintf(k, sizeof k, "%s.logit_sar", cs);
        dp_lshape sh = g_shape(&G, k);
        size_t nx = 0, nf[3];
        float *lf[4], *sff[3], *tff[3];
        double *ld[4], *sfd[3], *tfd[3];
        for (int i = 0; i < 4; i++) {
            snprintf(k, sizeof k, "%s.%s", cs, lnames[i]);
            lf[i] = g_f32(&G, k, &nx);
            ld[i] = g_f64(&G, k, NULL);
        }
        for (int i = 0; i < 3; i++) {
            snprintf(k, sizeof k, "%s.s_feat%d", cs, i);
            sff[i] = g_f32(&G, k, &nf[i]);
            sfd[i] = g_f64(&G, k, NULL);
            snprintf(k, sizeof k, "%s.t_feat%d", cs, i);
            tff[i] = g_f32(&G, k, NULL);
            tfd[i] = g_f64(&G, k, NULL);
        }
        snprintf(k, sizeof k, "%s.y", cs);
        int32_t *y = g_i32(&G, k);
        snprintf(k, sizeof k, "%s.valid", cs);
        uint8_t *valid = g_u8(&G, k);

        dp_stage2_in_f64 in64 = {sh, ld[0], ld[1], ld[2], ld[3], y, valid,
                                 {sfd[0], sfd[1], sfd[2]}, {tfd[0], tfd[1], tfd[2]}, {nf[0], nf[1], nf[2]},
                                 dp_loss_weights_authors()};
        dp_stage2_in_f32 in32 = {sh, lf[0], lf[1], lf[2], lf[3], y, valid,
                                 {sff[0], sff[1], sff[2]}, {tff[0], tff[1], tff[2]}, {nf[0], nf[1], nf[2]},
                                 dp_loss_weights_authors()};
        double *g64[6];
        float *g32[6];
        for (int i = 0; i < 6; i++) {
            size_t n = i < 3 ? nx : nf[i - 3];
            g64[i] = malloc(n * sizeof(double));
            g32[i] = malloc(n * sizeof(float));
            for (size_t j = 0; j < n; j++) g64[i][j] = g32[i][j] = NAN; /* overwritten */
        }
        dp_stage2_grad_f64 gr64 = {g64[0], g64[1], g64[2], {g64[3], g64[4], g64[5]}};
        dp_stage2_grad_f32 gr32 = {g32[0], g32[1], g32[2], {g32[3], g32[4], g32[5]}};
        dp_stage2_terms t64, t32;
        assert_int_equal(dp_loss_stage2_f64(&in64, &t64, &gr64), DISOPT_OK);
        assert_int_equal(dp_loss_stage2_f32(&in32, &t32, &gr32), DISOPT_OK);
        const struct {
            const char *name;
            double a, b;
        } terms[] = {{"ce_sar", t64.ce_sar, t32.ce_sar},       {"dice_sar", t64.dice_sar, t32.dice_sar},
                     {"ce_rgb", t64.ce_rgb, t32.ce_rgb},       {"dice_rgb", t64.dice_rgb, t32.dice_rgb},
                     {"kd_rgb", t64.kd_rgb, t32.kd_rgb},       {"ce_fused", t64.ce_fused, t32.ce_fused},
                     {"dice_fused", t64.dice_fused, t32.dice_fused}, {"mse0", t64.mse[0], t32.mse[0]},
                     {"mse1", t64.mse[1], t32.mse[1]},         {"mse2", t64.mse[2], t32.mse[2]},
                     {"total", t64.total, t32.total}};
        for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) {
            char a[96], b[96], what[96];
            snprintf(a, sizeof a, "%s.%s.f64", cs, terms[i].name);
            snprintf(b, sizeof b, "%s.%s.f32", cs, terms[i].name);
            snprintf(what, sizeof what, "%s %s", cs, terms[i].name);
            check_value(&w, what, terms[i].a, terms[i].b, g_meta(&G, a), g_meta(&G, b));
        }
        const char *gnames[6] = {"g_logit_sar", "g_logit_rgb", "g_logit_fused", "g_s_feat0", "g_s_feat1", "g_s_feat2"};
        for (int i = 0; i < 6; i++) {
            snprintf(k, sizeof k, "%s.%s", cs, gnames[i]);
            float *ref = g_f32(&G, k, NULL);
            check_grad(&w, k, g64[i], g32[i], ref, i < 3 ? nx : nf[i - 3]);
            free(ref);
        }
        snprintf(k, sizeof k, "%s.total.f64", cs);
        printf("# %s: total %.9g (PyTorch f64 %.9g)\n", cs, t64.total, g_meta(&G, k));
        for (int i = 0; i < 6; i++) free(g64[i]), free(g32[i]);
        for (int i = 0; i < 4; i++) free(lf[i]), free(ld[i]);
        for (int i = 0; i < 3; i++) free(sff[i]), free(sfd[i]), free(tff[i]), free(tfd[i]);
        free(y), free(valid);
    }
    /* stage 1 */
    {
        dp_lshape sh = g_shape(&G, "st1.x");
        size_t nx;
        float *xf = g_f32(&G, "st1.x", &nx);
        double *xd = g_f64(&G, "st1.x", NULL);
        int32_t *y = g_i32(&G, "st1.y");
        double *g64 = malloc(nx * sizeof *g64);
        float *g32 = malloc(nx * sizeof *g32);
        dp_stage1_terms t64, t32;
        assert_int_equal(dp_loss_stage1_f64(sh, xd, y, NULL, dp_loss_weights_authors(), &t64, g64), DISOPT_OK);
        assert_int_equal(dp_loss_stage1_f32(sh, xf, y, NULL, dp_loss_weights_authors(), &t32, g32), DISOPT_OK);
        check_value(&w, "st1 total", t64.total, t32.total, g_meta(&G, "st1.total.f64"), g_meta(&G, "st1.total.f32"));
        check_value(&w, "st1 ce", t64.ce, t32.ce, g_meta(&G, "st1.ce.f64"), g_meta(&G, "st1.ce.f32"));
        check_value(&w, "st1 dice", t64.dice, t32.dice, g_meta(&G, "st1.dice.f64"), g_meta(&G, "st1.dice.f32"));
        float *ref = g_f32(&G, "st1.g", NULL);
        check_grad(&w, "st1", g64, g32, ref, nx);
        free(ref), free(xf), free(xd), free(y), free(g64), free(g32);
    }
    printf("# PyTorch goldens, stage 1 + 2 totals: values f64 rel %.3g, f32 rel %.3g; gradients %.3g\n", w.v64, w.v32, w.g);
    disopt_st_close(G.st);
}

/* ---------------------------------------------------------------- optimizers */
static void parse_list(const char *s, double *out, int max, int *count) {
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        out[n++] = strtod(s, &end);
        s = *end == ',' ? end + 1 : NULL;
    }
    *count = n;
}

static void test_golden_optim(void **state) {
    (void)state;
    golden G = open_golden("optim_golden.safetensors");
    const size_t n = (size_t)g_meta(&G, "n");
    const int steps = (int)g_meta(&G, "steps"), epochs = (int)g_meta(&G, "epochs");
    const int64_t ipe = (int64_t)g_meta(&G, "iters_per_epoch");
    dp_optim_segment seg[16];
    int n_seg = 0;
    const char *s = disopt_st_metadata(G.st, "segments");
    assert_non_null(s);
    while (*s && n_seg < 16) {
        unsigned long a, b;
        int d, used;
        assert_int_equal(sscanf(s, "%lu:%lu:%d%n", &a, &b, &d, &used), 3);
        seg[n_seg++] = (dp_optim_segment){a, b, d};
        s += used;
        if (*s == ',') s++;
    }
    size_t np, ng;
    float *p0 = g_f32(&G, "params0", &np), *grads = g_f32(&G, "grads", &ng);
    assert_int_equal(np, n);
    assert_int_equal(ng, n * (size_t)steps);
    /* the gap elements: NaN in our params and grads; they must stay NaN / never be read */
    unsigned char *in_seg = calloc(n, 1);
    for (int i = 0; i < n_seg; i++) memset(in_seg + seg[i].offset, 1, seg[i].count);
    for (size_t i = 0; i < n; i++)
        if (!in_seg[i]) {
            p0[i] = NAN;
            for (int t = 0; t < steps; t++) grads[(size_t)t * n + i] = NAN;
        }
    const char *runs[] = {"sgd", "sgd_damp", "adamw"};
    for (int ri = 0; ri < 3; ri++) {
        const char *run = runs[ri];
        dp_optim_config cfg;
        double base;
        if (ri == 0) {
            cfg = dp_optim_config_sgd_authors();
            base = cfg.lr;
        } else if (ri == 1) {
            cfg = dp_optim_config_sgd_authors();
            cfg.nesterov = 0;
            cfg.dampening = 0.1;
            cfg.weight_decay = 1e-3;
            base = 5e-3;
        } else {
            cfg = dp_optim_config_adamw(1e-2, 0.05);
            base = 1e-2;
        }
        dp_optim_segment sg[16];
        memcpy(sg, seg, sizeof sg);
        if (ri == 0)
            for (int i = 0; i < n_seg; i++) sg[i].decay = 1; /* the authors decay every parameter */
        dp_optim *o;
        assert_int_equal(dp_optim_create(&cfg, n, sg, n_seg, &o), DISOPT_OK);
        assert_int_equal(o->n_state, ri == 2 ? 2 : 1);
        char k[64];
        snprintf(k, sizeof k, "%s.lr", run);
        double lrs[64];
        int nlr;
        parse_list(disopt_st_metadata(G.st, k), lrs, 64, &nlr);
        assert_int_equal(nlr, steps);
        snprintf(k, sizeof k, "%s.params", run);
        float *traj = g_f32(&G, k, NULL);
        snprintf(k, sizeof k, "%s.state", run);
        size_t nst;
        float *stref = g_f32(&G, k, &nst);
        assert_int_equal(nst, (size_t)o->n_state * n);
        float *p = malloc(n * sizeof *p);
        double *pd = malloc(n * sizeof *pd), *gd = malloc(n * sizeof *gd), *std_ = calloc(2 * n, sizeof *std_);
        memcpy(p, p0, n * sizeof *p);
        for (size_t i = 0; i < n; i++) pd[i] = p0[i];
        double worst_lr = 0, worst_p = 0, worst_pd = 0;
        for (int t = 0; t < steps; t++) {
            const double lr = dp_lr_authors(base, epochs, ipe, t);
            worst_lr = fmax(worst_lr, rel(lr, lrs[t]));
            assert_int_equal(dp_optim_step(o, p, grads + (size_t)t * n, lr), DISOPT_OK);
            for (size_t i = 0; i < n; i++) gd[i] = grads[(size_t)t * n + i];
            assert_int_equal(dp_optim_update_f64(&cfg, sg, n_seg, n, t + 1, lr, pd, gd, std_), DISOPT_OK);
            const float *ref = traj + (size_t)t * n;
            double m = 0, e = 0, ed = 0;
            for (size_t i = 0; i < n; i++) {
                if (!in_seg[i]) {
                    if (!isnan(p[i]) || !isnan(pd[i])) fail_msg("%s: gap element %zu was written", run, i);
                    continue;
                }
                m = fmax(m, fabs((double)ref[i]));
                double d = fabs((double)p[i] - (double)ref[i]), dd = fabs(pd[i] - (double)ref[i]);
                if (!(d <= e)) e = d;
                if (!(dd <= ed)) ed = dd;
            }
            worst_p = fmax(worst_p, e / m);
            worst_pd = fmax(worst_pd, ed / m);
        }
        assert_int_equal(o->step, steps);
        double m = 0, e = 0;
        for (size_t i = 0; i < nst; i++) {
            if (!in_seg[i % n]) continue;
            m = fmax(m, fabs((double)stref[i]));
            double d = fabs((double)o->state[i] - (double)stref[i]);
            if (!(d <= e)) e = d;
        }
        const double e_state = e / m;
        printf("# %-8s lr rel %.3g; weights after each of %d steps: f32 %.3g, f64 %.3g of max|w|; final state (%s%s%s) %.3g\n",
               run, worst_lr, steps, worst_p, worst_pd, dp_optim_state_name(&cfg, 0), o->n_state > 1 ? ", " : "",
               o->n_state > 1 ? dp_optim_state_name(&cfg, 1) : "", e_state);
        if (!(worst_lr <= 1e-15)) fail_msg("%s: learning rates differ from the authors' scheduler: %g", run, worst_lr);
        if (!(worst_p <= 1e-6 && worst_pd <= 1e-6)) fail_msg("%s: weights differ from PyTorch: %g / %g", run, worst_p, worst_pd);
        if (!(e_state <= 1e-6)) fail_msg("%s: optimizer state differs from PyTorch: %g", run, e_state);

        /* the state round-trips through dp_optim_load_state: a restarted optimizer continues identically */
        dp_optim *o2;
        assert_int_equal(dp_optim_create(&cfg, n, sg, n_seg, &o2), DISOPT_OK);
        assert_int_equal(dp_optim_load_state(o2, o->state, nst, o->step), DISOPT_OK);
        float *q = malloc(n * sizeof *q);
        memcpy(q, p, n * sizeof *q);
        assert_int_equal(dp_optim_step(o, p, grads, 1e-3), DISOPT_OK);
        assert_int_equal(dp_optim_step(o2, q, grads, 1e-3), DISOPT_OK);
        assert_memory_equal(p, q, n * sizeof *p);
        assert_memory_equal(o->state, o2->state, nst * sizeof(float));
        dp_optim_destroy(o2);
        free(q);

        dp_optim_destroy(o);
        free(traj), free(stref), free(p), free(pd), free(gd), free(std_);
    }
    free(p0), free(grads), free(in_seg);
    disopt_st_close(G.st);
}

static void test_schedule(void **state) {
    (void)state;
    /* the authors' 200 epochs: step 0 at the base lr, then poly(T = g - 1 + ipe) with N = 201 * ipe */
    const double base = 5e-3;
    const int64_t ipe = 100;
    assert_true(dp_lr_authors(base, 200, ipe, 0) == base);
    assert_true(rel(dp_lr_authors(base, 200, ipe, 1), base * pow(1.0 - 100.0 / 20100.0, 0.9)) < 1e-15);
    assert_true(rel(dp_lr_authors(base, 200, ipe, 150), base * pow(1.0 - 249.0 / 20100.0, 0.9)) < 1e-15);
    const double last = dp_lr_authors(base, 200, ipe, 200 * ipe - 1);
    assert_true(last > 0 && rel(last, base * pow(1.0 - 20098.0 / 20100.0, 0.9)) < 1e-15);
    assert_true(dp_lr_poly(1.0, 5.0, 5.0, 0.9) == 0.0);
    assert_true(dp_lr_authors(base, 0, ipe, 1) < 0);
    assert_true(dp_lr_authors(base, 10, ipe, -1) < 0);
}

static void test_errors(void **state) {
    (void)state;
    dp_lshape sh = {1, 2, 2, 2};
    float x[8] = {0, 1, 2, 3, 4, 5, 6, 7}, g[8] = {0};
    int32_t y[4] = {0, 1, 2, 0};
    uint8_t v[4] = {1, 1, 0, 1};
    double loss = -1;
    assert_int_equal(dp_loss_ce_f32(sh, x, y, NULL, &loss, g, 1.0), DISOPT_ERR_INPUT);
    assert_non_null(strstr(disopt_last_error(), "outside"));
    assert_int_equal(dp_loss_dice_f32(sh, x, y, v, &loss, g, 1.0), DISOPT_OK); /* the bad label is masked out */
    dp_lshape bad = {1, 0, 2, 2};
    assert_int_equal(dp_loss_ce_f32(bad, x, y, NULL, &loss, g, 1.0), DISOPT_ERR_SHAPE);
    dp_lshape big = {1, 65, 1, 1};
    assert_int_equal(dp_loss_kd_f32(big, x, x, NULL, &loss, NULL, NULL, 1.0), DISOPT_ERR_UNSUPPORTED);
    assert_int_equal(dp_loss_ce_f32(sh, NULL, y, NULL, &loss, g, 1.0), DISOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(dp_loss_mse_f32(x, x, 0, &loss, NULL, NULL, 1.0), DISOPT_ERR_SHAPE);
    /* no valid pixel: ce and dice are 0 with a zero gradient (PyTorch's ce would be NaN) */
    uint8_t none[4] = {0, 0, 0, 0};
    double ce = -1, dice = -1;
    memset(g, 0, sizeof g);
    assert_int_equal(dp_loss_seg_f32(sh, x, y, none, 1.0, 1.0, &ce, &dice, g, 1.0), DISOPT_OK);
    assert_true(ce == 0.0 && dice == 0.0);
    for (int i = 0; i < 8; i++) assert_true(g[i] == 0.0f);
    /* stage 2 refuses a missing feature pair */
    dp_stage2_in_f32 in;
    memset(&in, 0, sizeof in);
    in.shape = sh;
    in.logit_sar = in.logit_rgb = in.logit_fused = in.t_logits = x;
    in.target = y;
    in.valid = v;
    assert_int_equal(dp_loss_stage2_f32(&in, NULL, NULL), DISOPT_ERR_INVALID_ARGUMENT);

    dp_optim *o = NULL;
    dp_optim_segment seg[2] = {{0, 4, 1}, {3, 4, 0}};
    dp_optim_config c = dp_optim_config_sgd_authors();
    assert_int_equal(dp_optim_create(&c, 8, seg, 2, &o), DISOPT_ERR_INVALID_ARGUMENT); /* overlap */
    assert_null(o);
    seg[1].offset = 4;
    assert_int_equal(dp_optim_create(&c, 7, seg, 2, &o), DISOPT_ERR_INVALID_ARGUMENT); /* past the end */
    c.dampening = 0.1;
    assert_int_equal(dp_optim_create(&c, 8, seg, 2, &o), DISOPT_ERR_INVALID_ARGUMENT); /* Nesterov + dampening */
    c = dp_optim_config_sgd_authors();
    c.momentum = 0.0;
    assert_int_equal(dp_optim_create(&c, 8, seg, 2, &o), DISOPT_ERR_INVALID_ARGUMENT); /* Nesterov, no momentum */
    c.nesterov = 0;
    assert_int_equal(dp_optim_create(&c, 8, seg, 2, &o), DISOPT_OK); /* plain SGD: no state */
    assert_int_equal(o->n_state, 0);
    assert_null(dp_optim_state_name(&c, 0));
    assert_int_equal(dp_optim_step(o, x, g, -1.0), DISOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(dp_optim_step(o, x, g, NAN), DISOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(dp_optim_load_state(o, x, 3, 0), DISOPT_ERR_SHAPE);
    dp_optim_destroy(o);
    dp_optim_config a = dp_optim_config_adamw(1e-3, 0.01);
    a.beta2 = 1.0;
    assert_int_equal(dp_optim_create(&a, 8, seg, 2, &o), DISOPT_ERR_INVALID_ARGUMENT);
    a = dp_optim_config_adamw(1e-3, -0.01);
    assert_int_equal(dp_optim_create(&a, 8, seg, 2, &o), DISOPT_ERR_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_seg),       cmocka_unit_test(test_fd_kd),        cmocka_unit_test(test_fd_mse),
        cmocka_unit_test(test_fd_stage2),    cmocka_unit_test(test_fd_stage1),    cmocka_unit_test(test_accumulate_and_types),
        cmocka_unit_test(test_golden_terms), cmocka_unit_test(test_golden_stage2), cmocka_unit_test(test_golden_optim),
        cmocka_unit_test(test_schedule),     cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
