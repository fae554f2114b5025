/* test_cuda_train_host.c - the GPU training kernels' bodies (cuda/train_kernels.cu, cuda/train_loss.cu) run on
 * the host against the CPU kernels of core/train, without a device, so that CI (where test_cuda_grad skips)
 * checks their arithmetic and index logic. libdisopt_cuda_hostcheck is those two files built with
 * DPTK_HOST_CHECK: every dptk_* launcher then runs its kernel's __host__ __device__ body on the host, index by
 * index, over host memory (float operations rounded one by one: the device's __fmul_rn and friends are plain,
 * uncontracted operations there). Each op is driven as cuda/train_ops.c drives it (reductions: partials, then the
 * finishing body, then the element body). Inputs are fresh random values each run (seed printed;
 * DISOPT_TEST_SEED replays one).
 * Bound: bitwise equality (memcmp) wherever the host twin sums in the CPU's order (that is everywhere here but
 * the batch norm case with several reduction blocks per channel, where the blocks' double partial sums are
 * added in another order: 1e-6 normalised there, as the float results differ by an ulp at most). Not covered
 * here (test_cuda_grad on a GPU covers it): launches, block trees, expf on the device, cuDNN. */
#include "test_util.h"
#include "internal.h"
#include "train/grad_ops.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/rng.h"
#include "train_kernels.h"

#include <math.h>

static tu_rng g_rng;

#define OK(expr)                                                                                                   \
    do {                                                                                                           \
        disopt_status s_ = (expr);                                                                                 \
        if (s_ != DISOPT_OK) fail_msg("%s: %s (%s)", #expr, disopt_status_name(s_), disopt_last_error());         \
    } while (0)
#define K0(expr) assert_int_equal((expr), 0) /* a launcher, on the host */

/* allocations of the current case, freed by release() */
static void *g_ptrs[256];
static int g_np;

static void *keep(void *p) {
    assert_non_null(p);
    assert_true(g_np < 256);
    g_ptrs[g_np++] = p;
    return p;
}

static void release(void) {
    for (int i = 0; i < g_np; i++) free(g_ptrs[i]);
    g_np = 0;
}

static float *rnd(size_t n, float lo, float hi) {
    float *p = keep(malloc((n ? n : 1) * sizeof(float)));
    tu_fill(&g_rng, p, n, lo, hi);
    return p;
}

static float *fdup(const float *x, size_t n) {
    float *p = keep(malloc((n ? n : 1) * sizeof(float)));
    memcpy(p, x, n * sizeof(float));
    return p;
}

static void *zalloc(size_t bytes) { return keep(calloc(bytes ? bytes : 1, 1)); }

/* host twin's result a vs the CPU's b: bitwise (tol 0) or within tol normalised */
static void check(const char *what, const float *a, const float *b, size_t n, double tol) {
    size_t diff = 0;
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
        m = fmax(m, fabs((double)b[i]));
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= e)) e = d;
    }
    e /= m > 0 ? m : 1;
    printf("# %-62s %zu of %zu differ (max %.3g%s)\n", what, diff, n, e, tol > 0 ? "" : ", bitwise wanted");
    if (tol > 0 ? !(e <= tol) : diff != 0) fail_msg("%s: %zu differ, error %g", what, diff, e);
}

/* ---------------------------------------------------------------- batch norm, driven as train_ops.c does */
static void bn_case(int n, int c, size_t hw, double tol) {
    const size_t cnt = (size_t)n * c * hw, M = (size_t)n * hw;
    const double eps = 1e-5, mom = 0.1;
    float *x = rnd(cnt, -3, 5), *gamma = rnd(c, 0.5f, 1.5f), *beta = rnd(c, -0.5f, 0.5f), *rm0 = rnd(c, -0.5f, 0.5f);
    float *rv0 = rnd(c, 0.5f, 2), *dy = rnd(cnt, -1, 1), *dx0 = rnd(cnt, -1, 1), *dg0 = rnd(c, -1, 1);
    float *db0 = rnd(c, -1, 1);
    /* CPU */
    float *y = zalloc(cnt * 4), *sm = zalloc(c * 4), *si = zalloc(c * 4), *rm = fdup(rm0, c), *rv = fdup(rv0, c);
    float *dx = fdup(dx0, cnt), *dg = fdup(dg0, c), *db = fdup(db0, c), *ye = zalloc(cnt * 4), *dxe = fdup(dx0, cnt);
    float *dge = fdup(dg0, c), *dbe = fdup(db0, c);
    OK(dp_tr_bn_fwd_train_f32(n, c, hw, x, gamma, beta, eps, mom, rm, rv, sm, si, y));
    OK(dp_tr_bn_bwd_train_f32(n, c, hw, x, dy, gamma, sm, si, dx, dg, db));
    OK(dp_tr_bn_fwd_eval_f32(n, c, hw, x, gamma, beta, rm0, rv0, eps, ye));
    OK(dp_tr_bn_bwd_eval_f32(n, c, hw, x, dy, gamma, rm0, rv0, eps, dxe, dge, dbe));
    /* the twins */
    const int parts = dptk_red_parts(n, hw);
    double *part = zalloc(dptk_red_bytes(n, c, hw)), *mean = zalloc((size_t)c * 8);
    float *alpha = zalloc(c * 4), *shift = zalloc(c * 4), *coef = zalloc((size_t)c * 16);
    float *Y = zalloc(cnt * 4), *SM = zalloc(c * 4), *SI = zalloc(c * 4), *RM = fdup(rm0, c), *RV = fdup(rv0, c);
    K0(dptk_chan_reduce(NULL, DPTK_RED_SUM, part, n, c, hw, x, NULL, NULL));
    K0(dptk_bn_fin_mean(NULL, part, c, parts, M, mean));
    K0(dptk_chan_reduce(NULL, DPTK_RED_SQDEV, part, n, c, hw, x, NULL, mean));
    K0(dptk_bn_fin_var(NULL, part, c, parts, M, mean, gamma, beta, eps, mom, RM, RV, SM, SI, alpha, shift));
    K0(dptk_bn_apply(NULL, Y, x, alpha, shift, n, c, hw));
    float *DX = fdup(dx0, cnt), *DG = fdup(dg0, c), *DB = fdup(db0, c);
    K0(dptk_chan_reduce(NULL, DPTK_RED_BN, part, n, c, hw, x, dy, sm));
    K0(dptk_bn_bwd_fin(NULL, part, c, parts, M, sm, si, gamma, DG, DB, coef));
    K0(dptk_bn_bwd_apply(NULL, DX, x, dy, coef, n, c, hw));
    float *YE = zalloc(cnt * 4), *DXE = fdup(dx0, cnt), *DGE = fdup(dg0, c), *DBE = fdup(db0, c);
    K0(dptk_bn_eval_coef(NULL, c, gamma, beta, rm0, rv0, eps, alpha, shift));
    K0(dptk_bn_apply(NULL, YE, x, alpha, shift, n, c, hw));
    K0(dptk_chan_reduce(NULL, DPTK_RED_BN, part, n, c, hw, x, dy, rm0));
    K0(dptk_bn_eval_bwd_fin(NULL, part, c, parts, rv0, eps, DGE, DBE));
    K0(dptk_bn_eval_coef(NULL, c, gamma, NULL, rm0, rv0, eps, alpha, NULL));
    K0(dptk_mul_plane(NULL, DXE, dy, alpha, cnt, hw, (size_t)c, 1));
    const char *tag[13] = {"y", "save_mean", "save_invstd", "running mean", "running var", "dx", "dgamma", "dbeta",
                           "eval y", "eval dx", "eval dgamma", "eval dbeta", NULL};
    const float *a[12] = {Y, SM, SI, RM, RV, DX, DG, DB, YE, DXE, DGE, DBE};
    const float *b[12] = {y, sm, si, rm, rv, dx, dg, db, ye, dxe, dge, dbe};
    const size_t ct[12] = {cnt, c, c, c, c, cnt, c, c, cnt, cnt, c, c};
    char what[96];
    for (int i = 0; i < 12; i++) {
        snprintf(what, sizeof what, "bn n%d c%d hw%zu (%d block%s per channel): %s", n, c, hw, parts,
                 parts > 1 ? "s" : "", tag[i]);
        check(what, a[i], b[i], ct[i], tol);
    }
    release();
}

static void test_bn(void **st) {
    (void)st;
    bn_case(2, 8, 17 * 13, 0);
    bn_case(4, 16, 1, 0);
    bn_case(1, 3, 40000, 1e-6); /* 3 reduction blocks per channel */
}

/* ---------------------------------------------------------------- element-wise and channel ops */
/* BN fused with the activation after it (dptk_bn_act_*, the trainer's BN + ReLU / swish / identity pairs on CUDA)
 * against the CPU's two ops: y and z of the forward, and dx, dgamma, dbeta of the backward from dz, where the
 * CPU first puts the activation's gradient into a zeroed dy: bit for bit (tol 0) when a channel is one
 * reduction block */
static void bn_act_case(int n, int c, size_t hw, dp_act act, double tol) {
    const size_t cnt = (size_t)n * c * hw, M = (size_t)n * hw;
    const double eps = 1e-3, mom = 0.01;
    float *x = rnd(cnt, -3, 5), *gamma = rnd(c, 0.5f, 1.5f), *beta = rnd(c, -0.5f, 0.5f), *rm0 = rnd(c, -0.5f, 0.5f);
    float *rv0 = rnd(c, 0.5f, 2), *dz = rnd(cnt, -1, 1), *dx0 = rnd(cnt, -1, 1), *dg0 = rnd(c, -1, 1);
    float *db0 = rnd(c, -1, 1);
    /* CPU: BN, activation; the activation's backward into a zeroed dy, BN's backward */
    float *y = zalloc(cnt * 4), *z = zalloc(cnt * 4), *sm = zalloc(c * 4), *si = zalloc(c * 4);
    float *rm = fdup(rm0, c), *rv = fdup(rv0, c), *dy = zalloc(cnt * 4), *dx = fdup(dx0, cnt), *dg = fdup(dg0, c);
    float *db = fdup(db0, c), *ye = zalloc(cnt * 4), *ze = zalloc(cnt * 4);
    OK(dp_tr_bn_fwd_train_f32(n, c, hw, x, gamma, beta, eps, mom, rm, rv, sm, si, y));
    OK(dp_tr_act_fwd_f32(act, cnt, y, z));
    OK(dp_tr_act_bwd_f32(act, cnt, y, z, dz, dy));
    OK(dp_tr_bn_bwd_train_f32(n, c, hw, x, dy, gamma, sm, si, dx, dg, db));
    OK(dp_tr_bn_fwd_eval_f32(n, c, hw, x, gamma, beta, rm0, rv0, eps, ye));
    OK(dp_tr_act_fwd_f32(act, cnt, ye, ze));
    /* the fused twins, driven as train_ops.c does */
    const int parts = dptk_red_parts(n, hw);
    double *part = zalloc(dptk_red_bytes(n, c, hw)), *mean = zalloc((size_t)c * 8);
    float *alpha = zalloc(c * 4), *shift = zalloc(c * 4), *coef = zalloc((size_t)c * 16);
    float *Y = zalloc(cnt * 4), *Z = zalloc(cnt * 4), *SM = zalloc(c * 4), *SI = zalloc(c * 4);
    float *RM = fdup(rm0, c), *RV = fdup(rv0, c), *DX = fdup(dx0, cnt), *DG = fdup(dg0, c), *DB = fdup(db0, c);
    float *YE = zalloc(cnt * 4), *ZE = zalloc(cnt * 4);
    K0(dptk_chan_reduce(NULL, DPTK_RED_SUM, part, n, c, hw, x, NULL, NULL));
    K0(dptk_bn_fin_mean(NULL, part, c, parts, M, mean));
    K0(dptk_chan_reduce(NULL, DPTK_RED_SQDEV, part, n, c, hw, x, NULL, mean));
    K0(dptk_bn_fin_var(NULL, part, c, parts, M, mean, gamma, beta, eps, mom, RM, RV, SM, SI, alpha, shift));
    float *Z3 = zalloc(cnt * 4);
    K0(dptk_bn_act_apply(NULL, (int)act, Y, Z, x, alpha, shift, n, c, hw));
    K0(dptk_bn_act_apply(NULL, (int)act, NULL, Z3, x, alpha, shift, n, c, hw)); /* y not stored */
    /* the backward recomputes y from x, alpha and shift */
    K0(dptk_bn_act_reduce(NULL, (int)act, part, n, c, hw, x, alpha, shift, dz, SM));
    K0(dptk_bn_bwd_fin(NULL, part, c, parts, M, SM, SI, gamma, DG, DB, coef));
    K0(dptk_bn_act_bwd_apply(NULL, (int)act, DX, 0, x, alpha, shift, dz, coef, n, c, hw));
    /* dx written fresh in dz's memory (the trainer's mode 2) = the CPU's BN backward into a zeroed dx */
    float *DZ4 = fdup(dz, cnt), *dxz = zalloc(cnt * 4), *dgz = fdup(dg0, c), *dbz = fdup(db0, c);
    OK(dp_tr_bn_bwd_train_f32(n, c, hw, x, dy, gamma, sm, si, dxz, dgz, dbz));
    K0(dptk_bn_act_bwd_apply(NULL, (int)act, DZ4, 1, x, alpha, shift, DZ4, coef, n, c, hw));
    K0(dptk_bn_eval_coef(NULL, c, gamma, beta, rm0, rv0, eps, alpha, shift));
    K0(dptk_bn_act_apply(NULL, (int)act, YE, ZE, x, alpha, shift, n, c, hw));
    const char *tag[9] = {"y", "z", "dx", "dgamma", "dbeta", "eval y", "eval z", "z (y not stored)", "dx fresh in dz"};
    const float *a[9] = {Y, Z, DX, DG, DB, YE, ZE, Z3, DZ4}, *b[9] = {y, z, dx, dg, db, ye, ze, z, dxz};
    const size_t ct[9] = {cnt, cnt, cnt, c, c, cnt, cnt, cnt, cnt};
    char what[96];
    for (int i = 0; i < 9; i++) {
        snprintf(what, sizeof what, "bn + act %d n%d c%d hw%zu: %s", (int)act, n, c, hw, tag[i]);
        check(what, a[i], b[i], ct[i], tol);
    }
    assert_int_not_equal(dptk_bn_act_apply(NULL, (int)DP_ACT_SIGMOID, Y, Z, x, alpha, shift, n, c, hw), 0);
    release();
}

static void test_bn_act(void **st) {
    (void)st;
    const dp_act acts[3] = {DP_ACT_NONE, DP_ACT_RELU, DP_ACT_SWISH};
    for (int k = 0; k < 3; k++) {
        bn_act_case(2, 8, 17 * 13, acts[k], 0);
        bn_act_case(8, 5, 1, acts[k], 0); /* 1x1 maps */
        /* several reduction blocks per channel: the CPU sums each channel in one order (as in test_bn) */
        bn_act_case(1, 3, 65536 + 77, acts[k], 1e-6);
    }
}

static void test_eltwise(void **st) {
    (void)st;
    const int n = 2, c = 7;
    const size_t hw = 33 * 31, cnt = (size_t)n * c * hw, nc = (size_t)n * c, nsp = (size_t)n * hw;
    char what[96];
    const dp_act acts[4] = {DP_ACT_NONE, DP_ACT_RELU, DP_ACT_SWISH, DP_ACT_SIGMOID};
    const char *names[4] = {"identity", "relu", "swish", "sigmoid"};
    for (int k = 0; k < 4; k++) {
        float *x = rnd(cnt, -6, 6), *dy = rnd(cnt, -1, 1), *dx0 = rnd(cnt, -1, 1);
        float *y = zalloc(cnt * 4), *dx = fdup(dx0, cnt), *Y = zalloc(cnt * 4), *DX = fdup(dx0, cnt);
        OK(dp_tr_act_fwd_f32(acts[k], cnt, x, y));
        OK(dp_tr_act_bwd_f32(acts[k], cnt, x, y, dy, dx));
        K0(dptk_act_fwd(NULL, (int)acts[k], cnt, x, Y));
        K0(dptk_act_bwd(NULL, (int)acts[k], cnt, x, y, dy, DX));
        snprintf(what, sizeof what, "%s forward", names[k]);
        check(what, Y, y, cnt, 0);
        snprintf(what, sizeof what, "%s backward", names[k]);
        check(what, DX, dx, cnt, 0);
        release();
    }
    float *x = rnd(cnt, -2, 2), *dy = rnd(cnt, -1, 1), *g = rnd(nc, 0, 1), *sg = rnd(nsp, 0, 1), *b = rnd(cnt, -3, 3);
    float *dx0 = rnd(cnt, -1, 1), *dg0 = rnd(nc, -1, 1), *dsg0 = rnd(nsp, -1, 1), *dyp = rnd(nc, -1, 1);
    const int parts = dptk_red_parts(1, hw);
    double *part = zalloc(dptk_red_bytes(1, (int)nc, hw));
    { /* GAP */
        float *y = zalloc(nc * 4), *dx = fdup(dx0, cnt), *Y = zalloc(nc * 4), *DX = fdup(dx0, cnt);
        OK(dp_tr_gap_fwd_f32(n, c, hw, x, y));
        OK(dp_tr_gap_bwd_f32(n, c, hw, dyp, dx));
        K0(dptk_chan_reduce(NULL, DPTK_RED_SUM, part, 1, (int)nc, hw, x, NULL, NULL));
        K0(dptk_fin_sum(NULL, part, (int)nc, parts, Y, 0, (double)hw));
        K0(dptk_gap_bwd(NULL, cnt, hw, dyp, DX));
        check("gap forward", Y, y, nc, 0);
        check("gap backward", DX, dx, cnt, 0);
    }
    { /* broadcast */
        float *y = zalloc(cnt * 4), *dx = fdup(dg0, nc), *Y = zalloc(cnt * 4), *DX = fdup(dg0, nc);
        OK(dp_tr_broadcast_fwd_f32(n, c, hw, g, y));
        OK(dp_tr_broadcast_bwd_f32(n, c, hw, dy, dx));
        K0(dptk_broadcast(NULL, cnt, hw, g, Y));
        K0(dptk_chan_reduce(NULL, DPTK_RED_SUM, part, 1, (int)nc, hw, dy, NULL, NULL));
        K0(dptk_fin_sum(NULL, part, (int)nc, parts, DX, 1, 1.0));
        check("broadcast forward", Y, y, cnt, 0);
        check("broadcast backward", DX, dx, nc, 0);
    }
    { /* channel scale */
        float *y = zalloc(cnt * 4), *dx = fdup(dx0, cnt), *dg = fdup(dg0, nc);
        float *Y = zalloc(cnt * 4), *DX = fdup(dx0, cnt), *DG = fdup(dg0, nc);
        OK(dp_tr_scale_ch_fwd_f32(n, c, hw, x, g, y));
        OK(dp_tr_scale_ch_bwd_f32(n, c, hw, x, g, dy, dx, dg));
        K0(dptk_mul_plane(NULL, Y, x, g, cnt, hw, nc, 0));
        K0(dptk_mul_plane(NULL, DX, dy, g, cnt, hw, nc, 1));
        K0(dptk_chan_reduce(NULL, DPTK_RED_DOT, part, 1, (int)nc, hw, dy, x, NULL));
        K0(dptk_fin_sum(NULL, part, (int)nc, parts, DG, 1, 1.0));
        check("channel scale forward", Y, y, cnt, 0);
        check("channel scale backward dx", DX, dx, cnt, 0);
        check("channel scale backward dgate", DG, dg, nc, 0);
    }
    { /* SCSE */
        float *y = zalloc(cnt * 4), *dx = fdup(dx0, cnt), *dg = fdup(dg0, nc), *dsg = fdup(dsg0, nsp);
        float *Y = zalloc(cnt * 4), *DX = fdup(dx0, cnt), *DG = fdup(dg0, nc), *DSG = fdup(dsg0, nsp);
        OK(dp_tr_scse_fwd_f32(n, c, hw, x, g, sg, y));
        OK(dp_tr_scse_bwd_f32(n, c, hw, x, g, sg, dy, dx, dg, dsg));
        K0(dptk_scse_fwd(NULL, n, c, hw, x, g, sg, Y));
        K0(dptk_scse_bwd_dx(NULL, n, c, hw, g, sg, dy, DX));
        K0(dptk_chan_reduce(NULL, DPTK_RED_DOT, part, 1, (int)nc, hw, dy, x, NULL));
        K0(dptk_fin_sum(NULL, part, (int)nc, parts, DG, 1, 1.0));
        K0(dptk_scse_bwd_dsg(NULL, n, c, hw, x, dy, DSG));
        check("scse forward", Y, y, cnt, 0);
        check("scse backward dx", DX, dx, cnt, 0);
        check("scse backward dchannel-gate", DG, dg, nc, 0);
        check("scse backward dspatial-gate", DSG, dsg, nsp, 0);
    }
    { /* add */
        float *y = zalloc(cnt * 4), *da = fdup(dx0, cnt), *db = fdup(b, cnt);
        float *Y = zalloc(cnt * 4), *DA = fdup(dx0, cnt), *DB = fdup(b, cnt);
        OK(dp_tr_add_fwd_f32(cnt, x, b, y));
        OK(dp_tr_add_bwd_f32(cnt, dy, da, db));
        K0(dptk_add(NULL, cnt, x, b, Y));
        K0(dptk_acc(NULL, cnt, dy, DA));
        K0(dptk_acc(NULL, cnt, dy, DB));
        check("add forward", Y, y, cnt, 0);
        check("add backward da", DA, da, cnt, 0);
        check("add backward db", DB, db, cnt, 0);
    }
    { /* softmax over 5 channels of n x 5 x hw */
        const int C = 5;
        const size_t cs = (size_t)n * C * hw;
        float *sx = rnd(cs, -5, 5), *sdy = rnd(cs, -1, 1), *sdx0 = rnd(cs, -1, 1);
        float *y = zalloc(cs * 4), *dx = fdup(sdx0, cs), *Y = zalloc(cs * 4), *DX = fdup(sdx0, cs);
        OK(dp_tr_softmax_fwd_f32(n, C, hw, sx, y));
        OK(dp_tr_softmax_bwd_f32(n, C, hw, y, sdy, dx));
        K0(dptk_softmax_fwd(NULL, n, C, hw, sx, Y));
        K0(dptk_softmax_bwd(NULL, n, C, hw, y, sdy, DX));
        check("softmax forward", Y, y, cs, 0);
        check("softmax backward", DX, dx, cs, 0);
    }
    release();
}

static void test_concat_crop(void **st) {
    (void)st;
    const int n = 2, cs[3] = {3, 5, 2}, ct = 10;
    const size_t hw = 7 * 5, ny = (size_t)n * ct * hw;
    float *xs[3], *dx0[3], *dxc[3], *DX[3];
    for (int i = 0; i < 3; i++) {
        const size_t m = (size_t)n * cs[i] * hw;
        xs[i] = rnd(m, -2, 2);
        dx0[i] = rnd(m, -1, 1);
        dxc[i] = fdup(dx0[i], m);
        DX[i] = fdup(dx0[i], m);
    }
    float *dy = rnd(ny, -1, 1), *y = zalloc(ny * 4), *Y = zalloc(ny * 4);
    const float *cx[3] = {xs[0], xs[1], xs[2]};
    float *dxl[3] = {dxc[0], dxc[1], dxc[2]};
    OK(dp_tr_concat_fwd_f32(n, hw, 3, cs, cx, y));
    OK(dp_tr_concat_bwd_f32(n, hw, 3, cs, dy, dxl));
    for (int i = 0, c0 = 0; i < 3; c0 += cs[i], i++) {
        K0(dptk_concat_part(NULL, n, cs[i], ct, c0, hw, xs[i], Y));
        K0(dptk_split_part(NULL, n, cs[i], ct, c0, hw, dy, DX[i]));
    }
    check("concat 3+5+2", Y, y, ny, 0);
    for (int i = 0; i < 3; i++) check("split (concat backward)", DX[i], dxc[i], (size_t)n * cs[i] * hw, 0);
    /* crop-add: the interior of a padded gradient into dx (no CPU twin: a direct loop) */
    const int N = 2, C = 3, H = 5, W = 6, pt = 1, pb = 2, pl = 2, pr = 1, Hp = H + pt + pb, Wp = W + pl + pr;
    const size_t nx = (size_t)N * C * H * W;
    float *dxp = rnd((size_t)N * C * Hp * Wp, -1, 1), *d0 = rnd(nx, -1, 1), *ref = fdup(d0, nx), *got = fdup(d0, nx);
    for (size_t q = 0; q < (size_t)N * C; q++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) ref[(q * H + i) * W + j] += dxp[(q * Hp + i + pt) * Wp + j + pl];
    K0(dptk_crop_add(NULL, got, dxp, N, C, H, W, Hp, Wp, pt, pl));
    check("crop-add of a padded gradient", got, ref, nx, 0);
    release();
}

static void test_upsample(void **st) {
    (void)st;
    const int cases[][4] = {{2, 16, 12, 4}, {1, 5, 7, 2}, {1, 1, 3, 4}, {1, 3, 1, 8}, {1, 1, 1, 4},
                            {3, 32, 32, 4}, {1, 7, 9, 3}, {1, 2, 2, 1}, {1, 64, 48, 4}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int nc = cases[k][0], h = cases[k][1], w = cases[k][2], f = cases[k][3];
        const size_t nx = (size_t)nc * h * w, ny = nx * f * f;
        float *x = rnd(nx, -2, 2), *dy = rnd(ny, -1, 1), *dx = rnd(nx, -1, 1), *DX = fdup(dx, nx);
        float *y = zalloc(ny * 4), *Y = zalloc(ny * 4);
        OK(dp_tr_upsample_fwd_f32(1, nc, h, w, f, x, y));
        OK(dp_tr_upsample_bwd_f32(1, nc, h, w, f, dy, dx));
        K0(dptk_upsample_fwd(NULL, (size_t)nc, h, w, f, x, Y));
        K0(dptk_upsample_bwd(NULL, (size_t)nc, h, w, f, dy, DX));
        char what[96];
        snprintf(what, sizeof what, "upsample x%d, %d planes %dx%d: forward", f, nc, h, w);
        check(what, Y, y, ny, 0);
        snprintf(what, sizeof what, "upsample x%d, %d planes %dx%d: backward (gather)", f, nc, h, w);
        check(what, DX, dx, nx, 0);
        release();
    }
}

/* ---------------------------------------------------------------- depthwise conv (own kernels) */
static void dw_case(int n, int c, int h, int w, int k, int s, int d, int pt, int pb, int pl, int pr) {
    const dp_conv_params p = {c, c, k, k, s, s, d, d, c, pt, pb, pl, pr};
    const int oh = (h + pt + pb - d * (k - 1) - 1) / s + 1, ow = (w + pl + pr - d * (k - 1) - 1) / s + 1;
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * oh * ow, nw = (size_t)c * k * k;
    float *x = rnd(nx, -2, 2), *dy = rnd(ny, -1, 1), *wt = rnd(nw, -0.5f, 0.5f);
    float *dx = rnd(nx, -1, 1), *DX = fdup(dx, nx), *dw = rnd(nw, -1, 1), *DW = fdup(dw, nw);
    const size_t wse = 1 << 16; /* (the CPU kernels' workspace; depthwise convs barely use it) */
    float *ws = zalloc(wse * sizeof(float));
    float *b = rnd((size_t)c, -1, 1), *y = zalloc(ny * sizeof(float)), *Y = zalloc(ny * sizeof(float));
    OK(dp_tr_conv_fwd_f32(&p, n, h, w, x, wt, b, y, ws, wse));
    OK(dp_tr_conv_bwd_data_f32(&p, n, h, w, dy, wt, dx, ws, wse));
    OK(dp_tr_conv_bwd_filter_f32(&p, n, h, w, x, dy, dw, NULL, ws, wse));
    const dptk_dw_geo g = {n, c, h, w, oh, ow, k, k, s, s, d, d, pt, pl};
    double *part = zalloc(dptk_dw_bwd_filter_bytes(&g));
    K0(dptk_dw_fwd(NULL, &g, x, wt, b, Y));
    K0(dptk_dw_bwd_data(NULL, &g, dy, wt, DX));
    K0(dptk_dw_bwd_filter(NULL, &g, part, x, dy, DW));
    char what[112];
    snprintf(what, sizeof what, "depthwise n%d c%d %dx%d k%d s%d d%d pad %d%d%d%d: forward + bias", n, c, h, w, k, s, d,
             pt, pb, pl, pr);
    check(what, Y, y, ny, 0);
    snprintf(what, sizeof what, "depthwise bwd n%d c%d %dx%d k%d s%d d%d pad %d%d%d%d: data (gather)", n, c, h, w, k, s,
             d, pt, pb, pl, pr);
    check(what, DX, dx, nx, 0);
    snprintf(what, sizeof what, "depthwise bwd n%d c%d %dx%d k%d s%d d%d: filter (%d partial sums)", n, c, h, w, k, s,
             d, dptk_dw_bwd_filter_parts(&g));
    check(what, DW, dw, nw, 1e-6);
    release();
}

static void test_dw_bwd(void **st) {
    (void)st;
    dw_case(2, 5, 17, 13, 3, 1, 1, 1, 1, 1, 1);    /* 3x3/s1, pad 1 */
    dw_case(2, 4, 16, 16, 3, 2, 1, 0, 1, 0, 1);    /* 3x3/s2, EfficientNet's static asymmetric pad */
    dw_case(1, 3, 15, 18, 5, 2, 1, 1, 2, 1, 2);    /* 5x5/s2, asymmetric */
    dw_case(2, 3, 12, 12, 5, 1, 2, 4, 4, 4, 4);    /* 5x5 dilated 2 (stage 5 of the student) */
    dw_case(1, 2, 9, 7, 3, 1, 3, 3, 3, 3, 3);      /* dilation 3 */
    dw_case(3, 2, 80, 72, 3, 1, 1, 1, 1, 1, 1);    /* several reduction blocks per tap (N*OH*OW > 16384) */
    dw_case(1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1);      /* one pixel */
}

/* ---------------------------------------------------------------- 3x3 convs with few output channels */
/* the segmentation heads' kernels (dptk_sc_*) against the CPU's conv (another summation order: within 1e-5 of
 * max|y|; the filter gradient's double sums within 1e-6) */
static void sc_case(int n, int cin, int cout, int h, int w, int pt, int pb, int pl, int pr, int bias) {
    const dp_conv_params p = {cin, cout, 3, 3, 1, 1, 1, 1, 1, pt, pb, pl, pr};
    const int oh = h + pt + pb - 2, ow = w + pl + pr - 2;
    const size_t nx = (size_t)n * cin * h * w, ny = (size_t)n * cout * oh * ow, nw = (size_t)cout * cin * 9;
    float *x = rnd(nx, -2, 2), *dy = rnd(ny, -1, 1), *wt = rnd(nw, -0.5f, 0.5f);
    float *dx = rnd(nx, -1, 1), *DX = fdup(dx, nx), *dw = rnd(nw, -1, 1), *DW = fdup(dw, nw);
    const size_t wse = dp_tr_conv_ws_elems(&p, h, w);
    float *ws = zalloc((wse ? wse : 1) * sizeof(float));
    float *b = bias ? rnd((size_t)cout, -1, 1) : NULL, *y = zalloc(ny * sizeof(float)), *Y = zalloc(ny * sizeof(float));
    OK(dp_tr_conv_fwd_f32(&p, n, h, w, x, wt, b, y, ws, wse));
    OK(dp_tr_conv_bwd_data_f32(&p, n, h, w, dy, wt, dx, ws, wse));
    OK(dp_tr_conv_bwd_filter_f32(&p, n, h, w, x, dy, dw, NULL, ws, wse));
    const dptk_sc_geo g = {n, cin, cout, h, w, oh, ow, pt, pl};
    assert_true(dptk_sc_ok(&g));
    double *part = zalloc(dptk_sc_bwd_filter_bytes(&g));
    K0(dptk_sc_fwd(NULL, &g, x, wt, b, Y));
    K0(dptk_sc_bwd_data(NULL, &g, dy, wt, DX));
    K0(dptk_sc_bwd_filter(NULL, &g, part, x, dy, DW));
    char what[112];
    snprintf(what, sizeof what, "3x3 conv n%d %d->%d %dx%d pad %d%d%d%d%s: forward", n, cin, cout, h, w, pt, pb, pl, pr,
             bias ? " + bias" : "");
    check(what, Y, y, ny, 1e-5);
    snprintf(what, sizeof what, "3x3 conv n%d %d->%d %dx%d: data gradient", n, cin, cout, h, w);
    check(what, DX, dx, nx, 1e-5);
    snprintf(what, sizeof what, "3x3 conv n%d %d->%d %dx%d: filter gradient (%d partial sums)", n, cin, cout, h, w,
             dptk_sc_bwd_filter_parts(&g));
    check(what, DW, dw, nw, 1e-6);
    release();
}

static void test_small_cout(void **st) {
    (void)st;
    sc_case(2, 24, 2, 17, 13, 1, 1, 1, 1, 1); /* a head: 2 classes, pad 1, bias */
    sc_case(1, 7, 1, 9, 11, 1, 1, 1, 1, 0);   /* 1 output channel, no bias */
    sc_case(2, 5, 3, 12, 10, 0, 0, 0, 0, 1);  /* 3 outputs, unpadded */
    sc_case(1, 4, 4, 8, 9, 2, 0, 1, 1, 1);    /* 4 outputs, asymmetric pad */
    sc_case(1, 3, 2, 150, 120, 1, 1, 1, 1, 1); /* several filter blocks (N*OH*OW > 16384) */
}

/* ---------------------------------------------------------------- bfloat16 operands (BF16 math) */
static void test_to_bf16(void **st) {
    (void)st;
    const uint32_t in[8] = {0x3f800000u, 0x3f800800u /* 1 + 2^-10 */, 0xc0200000u /* -2.5 */, 0x3f810000u,
                            0x3f808000u /* tie, even below */, 0x3f818000u /* tie, even above */, 0x7f7fffffu /* max */,
                            0x7fc00001u /* NaN */};
    const uint16_t want[8] = {0x3f80, 0x3f80, 0xc020, 0x3f81, 0x3f80, 0x3f82, 0x7f80, 0x7fc0};
    float x[8];
    uint16_t y[8];
    memcpy(x, in, sizeof x);
    K0(dptk_to_bf16(NULL, 8, x, y));
    for (int i = 0; i < 8; i++) {
        if (y[i] != want[i]) fail_msg("bfloat16 of 0x%08x: 0x%04x, want 0x%04x", in[i], y[i], want[i]);
    }
}

/* ---------------------------------------------------------------- masks, dropout, drop-connect */
static void test_masks(void **st) {
    (void)st;
    for (int k = 0; k < 20; k++) { /* Philox blocks */
        const uint64_t seed = tu_next(&g_rng), b = k < 10 ? (uint64_t)k : tu_next(&g_rng);
        uint32_t a[4], c[4];
        dp_rng_block(seed, b, a);
        dptk_host_philox(seed, b, c);
        assert_memory_equal(a, c, sizeof a);
    }
    dp_rng r = dp_rng_make(tu_next(&g_rng));
    r.counter = tu_next(&g_rng) >> 24;
    const uint64_t c0 = r.counter;
    const size_t n = 4099;
    const int nd = 3;
    const size_t per = 7 * 11;
    uint8_t *m = zalloc(n), *mh = zalloc(n), *d = zalloc((size_t)nd), *dh = zalloc((size_t)nd);
    OK(dp_tr_dropout_mask(&r, 0.25, n, m));
    const uint64_t c1 = r.counter;
    OK(dp_tr_drop_connect_mask(&r, 0.3, nd, d));
    K0(dptk_dropout_mask(NULL, r.seed, c0, 1.0 - 0.25, n, mh));
    K0(dptk_drop_connect_mask(NULL, r.seed, c1, (float)(1.0 - 0.3), nd, dh));
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) kept += m[i];
    printf("# masks: dropout keeps %zu of %zu; Philox blocks equal\n", kept, n);
    assert_memory_equal(m, mh, n);
    assert_memory_equal(d, dh, (size_t)nd);
    assert_true(kept > n / 2 && kept < n);
    float *x = rnd(n, -2, 2), *dy = rnd(n, -1, 1), *dx0 = rnd(n, -1, 1);
    float *y = zalloc(n * 4), *dx = fdup(dx0, n), *Y = zalloc(n * 4), *DX = fdup(dx0, n);
    OK(dp_tr_dropout_fwd_f32(n, 0.25, m, x, y));
    OK(dp_tr_dropout_bwd_f32(n, 0.25, m, dy, dx));
    K0(dptk_dropout(NULL, n, (float)(1.0 / (1.0 - 0.25)), m, x, Y, 0));
    K0(dptk_dropout(NULL, n, (float)(1.0 / (1.0 - 0.25)), m, dy, DX, 1));
    check("dropout forward", Y, y, n, 0);
    check("dropout backward", DX, dx, n, 0);
    const size_t nn = (size_t)nd * per;
    float *y2 = zalloc(nn * 4), *dx2 = fdup(dx0, nn), *Y2 = zalloc(nn * 4), *DX2 = fdup(dx0, nn);
    OK(dp_tr_drop_connect_fwd_f32(nd, per, 0.3, d, x, y2));
    OK(dp_tr_drop_connect_bwd_f32(nd, per, 0.3, d, dy, dx2));
    K0(dptk_drop_connect(NULL, nn, per, (float)(1.0 - 0.3), d, x, Y2, 0));
    K0(dptk_drop_connect(NULL, nn, per, (float)(1.0 - 0.3), d, dy, DX2, 1));
    check("drop-connect forward", Y2, y2, nn, 0);
    check("drop-connect backward", DX2, dx2, nn, 0);
    release();
}

/* ---------------------------------------------------------------- losses, driven as train_ops.c does */
static double sum_block0(const double *part, int nb, int nv, int v) {
    double s = 0;
    for (int b = 0; b < nb; b++) s += part[(size_t)b * nv + v];
    return s;
}

static void loss_case(int N, int C, int H, int W, int used, int masked) {
    const dp_lshape sh = {N, C, H, W};
    const size_t P = (size_t)H * W, np = P * N, nl = np * C;
    float *x = rnd(nl, -4, 4), *t = rnd(nl, -4, 4), *g = rnd(nl, -1, 1), *gt = rnd(nl, -1, 1);
    float *gc = fdup(g, nl), *gh = fdup(g, nl), *gsc = fdup(g, nl), *gsh = fdup(g, nl), *gtc = fdup(gt, nl);
    float *gth = fdup(gt, nl), *gac = fdup(g, nl), *gah = fdup(g, nl), *gbc = fdup(gt, nl), *gbh = fdup(gt, nl);
    int32_t *tg = zalloc(np * sizeof *tg), *lab = zalloc(np * 4), *labh = zalloc(np * 4);
    uint8_t *valid = masked ? zalloc(np) : NULL;
    for (size_t i = 0; i < np; i++) {
        tg[i] = (int32_t)(tu_next(&g_rng) % (uint64_t)used);
        if (valid) valid[i] = i == 0 || tu_next(&g_rng) % 5 != 0;
    }
    const double gscale = 0.7;
    /* CPU */
    double ce = 0, dice = 0, kd = 0, ms = 0;
    OK(dp_loss_seg_f32(sh, x, tg, valid, 1.0, 1.0, &ce, &dice, gc, gscale));
    OK(dp_loss_kd_f32(sh, x, t, valid, &kd, gsc, gtc, gscale));
    OK(dp_loss_mse_f32(x, t, nl, &ms, gac, gbc, gscale));
    const float saved = x[P * (C - 1)];
    x[P * (C - 1)] = NAN; /* argmax: NaN is the maximum */
    OK(dp_loss_argmax_f32(sh, x, lab));
    K0(dptk_argmax(NULL, N, C, P, x, labh));
    x[P * (C - 1)] = saved;
    /* the twins: seg (statistics, their sum over the blocks, the finish, the gradient), kd, mse */
    const int nb = dptk_loss_blocks(np), nv = 3 + 3 * C;
    double *part = zalloc((size_t)nb * nv * 8), tot[3 + 3 * DPTK_MAX_C];
    K0(dptk_seg_stats(NULL, N, C, P, x, tg, valid, part));
    for (int v = 0; v < nv; v++) tot[v] = sum_block0(part, nb, nv, v);
    assert_true(tot[2] == 0);
    dptk_seg_coef cf;
    double ceh = -1, diceh = -1;
    dptk_seg_finish(tot, C, 1.0, 1.0, gscale, DP_DICE_EPS, &cf, &ceh, &diceh);
    K0(dptk_seg_grad(NULL, N, C, P, x, tg, valid, &cf, gh));
    K0(dptk_kd(NULL, N, C, P, x, t, valid, gscale * (1.0 / (double)P), gsh, gth, part));
    const double kdh = sum_block0(part, nb, 1, 0) * (1.0 / (double)P);
    K0(dptk_mse(NULL, nl, x, t, 2.0 * gscale / (double)nl, gah, gbh, part));
    const double msh = sum_block0(part, dptk_loss_blocks(nl), 1, 0) / (double)nl;
    printf("# loss %dx%dx%dx%d%s: ce %.17g / %.17g, dice %.17g / %.17g, kd %.17g / %.17g, mse %.17g / %.17g\n", N, C, H,
           W, masked ? " masked" : "", ce, ceh, dice, diceh, kd, kdh, ms, msh);
    assert_true(ce == ceh && dice == diceh && fabs(kd - kdh) <= 1e-15 * fabs(kd) && ms == msh);
    char what[96];
    snprintf(what, sizeof what, "seg gradient %dx%dx%dx%d (classes used %d)", N, C, H, W, used);
    check(what, gh, gc, nl, 0);
    check("kd gradient (student)", gsh, gsc, nl, 0);
    check("kd gradient (teacher)", gth, gtc, nl, 0);
    check("mse gradient a", gah, gac, nl, 0);
    check("mse gradient b", gbh, gbc, nl, 0);
    assert_memory_equal(lab, labh, np * 4);
    /* a valid pixel with a target outside [0, C) is counted */
    tg[0] = C;
    K0(dptk_seg_stats(NULL, N, C, P, x, tg, valid, part));
    assert_true(sum_block0(part, nb, nv, 2) == 1.0);
    release();
}

static void test_losses(void **st) {
    (void)st;
    loss_case(2, 2, 13, 11, 2, 0);
    loss_case(2, 2, 13, 11, 2, 1);
    loss_case(1, 5, 8, 9, 3, 1); /* two classes absent */
    loss_case(1, 64, 3, 3, 64, 0);
}

/* ---------------------------------------------------------------- optimizer */
static void optim_case(dp_optim_config cfg) {
    const size_t n = 3000;
    const dp_optim_segment seg[5] = {{0, 700, 1}, {760, 500, 0}, {1260, 0, 1}, {1300, 1600, 1}, {2990, 0, 0}};
    OK(dp_optim_validate(&cfg, n, seg, 5));
    dptk_seg tab[5];
    int m = 0;
    size_t total = 0;
    for (int s = 0; s < 5; s++) { /* as train_ops.c builds it: empty segments left out */
        if (!seg[s].count) continue;
        tab[m].offset = seg[s].offset;
        tab[m].count = seg[s].count;
        tab[m].start = total;
        tab[m].decay = seg[s].decay != 0;
        total += seg[s].count;
        m++;
    }
    float *p = rnd(n, -1, 1), *ph = fdup(p, n), *sc = zalloc(2 * n * 4), *sh = zalloc(2 * n * 4);
    for (int64_t t = 1; t <= 4; t++) {
        float *g = rnd(n, -2, 2);
        const double lr = cfg.lr * (1.0 - 0.2 * (double)(t - 1));
        OK(dp_optim_update_f32(&cfg, seg, 5, n, t, lr, p, g, sc));
        dptk_optim_args a;
        dptk_optim_args_make(cfg.kind == DP_OPTIM_ADAMW, lr, cfg.weight_decay, cfg.momentum, cfg.dampening,
                             cfg.nesterov, cfg.beta1, cfg.beta2, cfg.eps, t, &a);
        K0(dptk_optim(NULL, &a, tab, m, total, n, ph, g, sh));
    }
    const char *name = cfg.kind == DP_OPTIM_ADAMW ? "AdamW" : cfg.nesterov ? "SGD Nesterov" : "SGD dampening";
    char what[96];
    snprintf(what, sizeof what, "optimizer %s, 4 steps: params (gaps untouched)", name);
    check(what, ph, p, n, 0);
    snprintf(what, sizeof what, "optimizer %s, 4 steps: state", name);
    check(what, sh, sc, 2 * n, 0);
    release();
}

static void test_optim(void **st) {
    (void)st;
    optim_case(dp_optim_config_sgd_authors());
    dp_optim_config plain = dp_optim_config_sgd_authors();
    plain.nesterov = 0;
    plain.dampening = 0.1;
    optim_case(plain);
    optim_case(dp_optim_config_adamw(1e-3, 1e-2));
}

int main(void) {
    g_rng = tu_rng_fresh();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bn),     cmocka_unit_test(test_eltwise), cmocka_unit_test(test_concat_crop),
        cmocka_unit_test(test_upsample), cmocka_unit_test(test_masks), cmocka_unit_test(test_losses),
        cmocka_unit_test(test_optim),   cmocka_unit_test(test_dw_bwd), cmocka_unit_test(test_small_cout), cmocka_unit_test(test_to_bf16),   cmocka_unit_test(test_bn_act),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
