/* test_cuda_train_host.c - the GPU training kernels' __host__ __device__ bodies (cuda/train_kernels.cu,
 * cuda/train_loss.cu, built once more with their host twins: libdisopt_cuda_hostcheck), run on the host, against
 * the CPU kernels of core/train, bit for bit. Needs no device, so it runs in CI where test_cuda_grad is skipped.
 * What it covers is the arithmetic and the index logic the kernels share with these twins: the bilinear
 * backward's gather (the CPU scatters), the Philox stream and both masks, the seg (CE + Dice) and KD losses'
 * pixel math and the Dice finish, the optimizer's float scalars and element update over a segment table with
 * gaps and empty segments. Not covered here (test_cuda_grad on a GPU does): the launches, the block reductions,
 * cuDNN. Inputs are fresh random values each run (seed printed; DISOPT_TEST_SEED replays one).
 * Bound: bitwise equality (memcmp) everywhere, since the twins do the CPU's operations in its order; loss values
 * within 1e-14 relative (the same sums in the same order: equal in practice, printed). */
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

static float *rnd(size_t n, float lo, float hi) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    tu_fill(&g_rng, p, n, lo, hi);
    return p;
}

static float *fdup(const float *x, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    memcpy(p, x, n * sizeof(float));
    return p;
}

static void same(const char *what, const void *a, const void *b, size_t bytes) {
    size_t diff = 0;
    for (size_t i = 0; i < bytes / 4; i++) diff += memcmp((const char *)a + 4 * i, (const char *)b + 4 * i, 4) != 0;
    printf("# %-60s %zu of %zu words differ\n", what, diff, bytes / 4);
    if (diff || memcmp(a, b, bytes)) fail_msg("%s: %zu words differ", what, diff);
}

static void test_upsample_gather(void **st) {
    (void)st;
    const int cases[][4] = {{2, 16, 12, 4}, {1, 5, 7, 2}, {1, 1, 3, 4}, {1, 3, 1, 8}, {1, 1, 1, 4},
                            {3, 32, 32, 4}, {1, 7, 9, 3}, {1, 2, 2, 1}, {1, 64, 48, 4}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int nc = cases[k][0], h = cases[k][1], w = cases[k][2], f = cases[k][3];
        const size_t nx = (size_t)nc * h * w, ny = nx * f * f;
        float *dy = rnd(ny, -1, 1), *dx = rnd(nx, -1, 1), *dxh = fdup(dx, nx);
        OK(dp_tr_upsample_bwd_f32(1, nc, h, w, f, dy, dx));
        dptk_host_upsample_bwd((size_t)nc, h, w, f, dy, dxh);
        char what[96];
        snprintf(what, sizeof what, "upsample backward x%d, %d planes %dx%d: gather vs scatter", f, nc, h, w);
        same(what, dxh, dx, nx * 4);
        free(dy);
        free(dx);
        free(dxh);
    }
}

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
    const int nd = 37;
    uint8_t *m = malloc(n), *mh = malloc(n), *d = malloc((size_t)nd), *dh = malloc((size_t)nd);
    assert_true(m && mh && d && dh);
    OK(dp_tr_dropout_mask(&r, 0.25, n, m));
    const uint64_t c1 = r.counter;
    OK(dp_tr_drop_connect_mask(&r, 0.3, nd, d));
    dptk_host_dropout_mask(r.seed, c0, 1.0 - 0.25, n, mh);
    dptk_host_drop_connect_mask(r.seed, c1, (float)(1.0 - 0.3), nd, dh);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) kept += m[i];
    printf("# masks: dropout keeps %zu of %zu, Philox blocks equal\n", kept, n);
    assert_memory_equal(m, mh, n);
    assert_memory_equal(d, dh, (size_t)nd);
    assert_true(kept > n / 2 && kept < n);
    free(m);
    free(mh);
    free(d);
    free(dh);
}

static void loss_case(int N, int C, int H, int W, int used, int masked) {
    const dp_lshape sh = {N, C, H, W};
    const size_t P = (size_t)H * W, np = P * N, nl = np * C;
    float *x = rnd(nl, -4, 4), *t = rnd(nl, -4, 4), *g = rnd(nl, -1, 1), *gt = rnd(nl, -1, 1);
    float *gc = fdup(g, nl), *gh = fdup(g, nl), *gsc = fdup(g, nl), *gsh = fdup(g, nl), *gtc = fdup(gt, nl), *gth = fdup(gt, nl);
    int32_t *tg = malloc(np * sizeof *tg);
    uint8_t *valid = masked ? malloc(np) : NULL;
    assert_non_null(tg);
    for (size_t i = 0; i < np; i++) {
        tg[i] = (int32_t)(tu_next(&g_rng) % (uint64_t)used);
        if (valid) valid[i] = i == 0 || tu_next(&g_rng) % 5 != 0;
    }
    double ce = 0, dice = 0, ceh = -1, diceh = -1, kd = 0;
    OK(dp_loss_seg_f32(sh, x, tg, valid, 1.0, 1.0, &ce, &dice, gc, 0.7));
    assert_int_equal(dptk_host_seg(N, C, P, x, tg, valid, 1.0, 1.0, 0.7, DP_DICE_EPS, &ceh, &diceh, gh), 0);
    OK(dp_loss_kd_f32(sh, x, t, valid, &kd, gsc, gtc, 0.7));
    const double kdh = dptk_host_kd(N, C, P, x, t, valid, 0.7, gsh, gth);
    printf("# loss %dx%dx%dx%d%s: ce %.17g / %.17g, dice %.17g / %.17g, kd %.17g / %.17g\n", N, C, H, W,
           masked ? " masked" : "", ce, ceh, dice, diceh, kd, kdh);
    assert_true(fabs(ce - ceh) <= 1e-14 * fabs(ce) && fabs(dice - diceh) <= 1e-14 * fabs(dice) &&
                fabs(kd - kdh) <= 1e-14 * fabs(kd));
    char what[96];
    snprintf(what, sizeof what, "seg gradient %dx%dx%dx%d (classes used %d)", N, C, H, W, used);
    same(what, gh, gc, nl * 4);
    snprintf(what, sizeof what, "kd gradients %dx%dx%dx%d", N, C, H, W);
    same(what, gsh, gsc, nl * 4);
    same(what, gth, gtc, nl * 4);
    free(x); free(t); free(g); free(gt); free(gc); free(gh); free(gsc); free(gsh); free(gtc); free(gth);
    free(tg);
    free(valid);
}

static void test_losses(void **st) {
    (void)st;
    loss_case(2, 2, 13, 11, 2, 0);
    loss_case(2, 2, 13, 11, 2, 1);
    loss_case(1, 5, 8, 9, 3, 1); /* two classes absent */
    loss_case(1, 64, 3, 3, 64, 0);
}

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
    float *p = rnd(n, -1, 1), *ph = fdup(p, n), *sc = calloc(2 * n, sizeof(float)), *sh = calloc(2 * n, sizeof(float));
    assert_true(sc && sh);
    for (int64_t t = 1; t <= 4; t++) {
        float *g = rnd(n, -2, 2);
        const double lr = cfg.lr * (1.0 - 0.2 * (double)(t - 1));
        OK(dp_optim_update_f32(&cfg, seg, 5, n, t, lr, p, g, sc));
        dptk_optim_args a;
        dptk_optim_args_make(cfg.kind == DP_OPTIM_ADAMW, lr, cfg.weight_decay, cfg.momentum, cfg.dampening,
                             cfg.nesterov, cfg.beta1, cfg.beta2, cfg.eps, t, &a);
        dptk_host_optim(&a, tab, m, total, n, ph, g, sh);
        free(g);
    }
    char what[96];
    snprintf(what, sizeof what, "optimizer %s%s, 4 steps: params", cfg.kind == DP_OPTIM_ADAMW ? "AdamW" : "SGD",
             cfg.kind == DP_OPTIM_SGD && cfg.nesterov ? " Nesterov" : "");
    same(what, ph, p, n * 4);
    snprintf(what, sizeof what, "optimizer %s, 4 steps: state", cfg.kind == DP_OPTIM_ADAMW ? "AdamW" : "SGD");
    same(what, sh, sc, 2 * n * 4);
    free(p);
    free(ph);
    free(sc);
    free(sh);
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
        cmocka_unit_test(test_upsample_gather),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_optim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
