/*
 * optim.c - SGD (momentum, Nesterov, weight decay) and AdamW over flat arenas, in PyTorch 1.13 semantics, and
 * the authors' poly learning-rate schedule.
 *
 * Conventions: those of optim.h. The per-element update lives once in optim.inc, instantiated here for float
 * and double. Functions return a disopt_status with the message in dp_error; no global mutable state;
 * nothing aborts. The dp_optim object owns a copy of the segment table and the float state.
 */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dp_optim_config dp_optim_config_sgd_authors(void) {
    dp_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = DP_OPTIM_SGD;
    c.lr = 5e-3;
    c.weight_decay = 1e-4;
    c.momentum = 0.9;
    c.dampening = 0.0;
    c.nesterov = 1;
    return c;
}

dp_optim_config dp_optim_config_adamw(double lr, double weight_decay) {
    dp_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = DP_OPTIM_ADAMW;
    c.lr = lr;
    c.weight_decay = weight_decay;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    return c;
}

static int dp_fin_ge0(double x) { return isfinite(x) && x >= 0.0; }

int dp_optim_state_count(const dp_optim_config *cfg) {
    if (!cfg) {
        dp_error(DISOPT_ERR_INVALID_ARGUMENT, "optimizer: NULL config");
        return -1;
    }
    if (!dp_fin_ge0(cfg->lr) || !dp_fin_ge0(cfg->weight_decay)) {
        dp_error(DISOPT_ERR_INVALID_ARGUMENT, "optimizer: invalid lr %g or weight decay %g", cfg->lr,
                 cfg->weight_decay);
        return -1;
    }
    switch (cfg->kind) {
    case DP_OPTIM_SGD:
        if (!dp_fin_ge0(cfg->momentum) || !isfinite(cfg->dampening)) {
            dp_error(DISOPT_ERR_INVALID_ARGUMENT, "SGD: invalid momentum %g or dampening %g", cfg->momentum,
                     cfg->dampening);
            return -1;
        }
        if (cfg->nesterov && (cfg->momentum <= 0.0 || cfg->dampening != 0.0)) {
            dp_error(DISOPT_ERR_INVALID_ARGUMENT, "SGD: Nesterov momentum requires a momentum and zero dampening");
            return -1;
        }
        return cfg->momentum != 0.0 ? 1 : 0;
    case DP_OPTIM_ADAMW:
        if (!(cfg->beta1 >= 0.0 && cfg->beta1 < 1.0) || !(cfg->beta2 >= 0.0 && cfg->beta2 < 1.0) ||
            !dp_fin_ge0(cfg->eps)) {
            dp_error(DISOPT_ERR_INVALID_ARGUMENT, "AdamW: invalid betas (%g, %g) or eps %g", cfg->beta1,
                     cfg->beta2, cfg->eps);
            return -1;
        }
        return 2;
    }
    dp_error(DISOPT_ERR_INVALID_ARGUMENT, "optimizer: unknown kind %d", (int)cfg->kind);
    return -1;
}

const char *dp_optim_state_name(const dp_optim_config *cfg, int i) {
    if (!cfg || i < 0) return NULL;
    if (cfg->kind == DP_OPTIM_SGD) return (i == 0 && cfg->momentum != 0.0) ? "momentum_buffer" : NULL;
    if (cfg->kind == DP_OPTIM_ADAMW) return i == 0 ? "exp_avg" : i == 1 ? "exp_avg_sq" : NULL;
    return NULL;
}

disopt_status dp_optim_validate(const dp_optim_config *cfg, size_t n, const dp_optim_segment *seg, int n_seg) {
    if (dp_optim_state_count(cfg) < 0) return DISOPT_ERR_INVALID_ARGUMENT;
    if (n_seg < 0 || (n_seg > 0 && !seg))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "optimizer: bad segment table (%d segments)", n_seg);
    size_t end = 0;
    for (int s = 0; s < n_seg; s++) {
        const size_t a = seg[s].offset, b = seg[s].offset + seg[s].count;
        if (b < a || b > n)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "optimizer: segment %d [%zu, +%zu) outside the arena of %zu",
                            s, seg[s].offset, seg[s].count, n);
        if (a < end)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT,
                            "optimizer: segment %d starts at %zu, before the end %zu of the previous one", s, a, end);
        end = b;
    }
    return DISOPT_OK;
}

disopt_status dp_optim_create(const dp_optim_config *cfg, size_t n, const dp_optim_segment *seg, int n_seg,
                              dp_optim **out) {
    if (!out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dp_optim_create: NULL out");
    *out = NULL;
    DP_TRY(dp_optim_validate(cfg, n, seg, n_seg));
    const int ns = dp_optim_state_count(cfg);
    size_t nst;
    if (!dp_mul_size(n, (size_t)ns, &nst) || !dp_mul_size(nst, sizeof(float), &nst))
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "optimizer: state of %d x %zu floats overflows", ns, n);
    dp_optim *o = calloc(1, sizeof *o);
    if (!o) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "optimizer: out of memory");
    o->cfg = *cfg;
    o->n = n;
    o->n_seg = n_seg;
    o->n_state = ns;
    o->seg = malloc((size_t)(n_seg > 0 ? n_seg : 1) * sizeof *o->seg);
    o->state = calloc(nst > 0 ? nst : 1, 1);
    if (!o->seg || !o->state) {
        dp_optim_destroy(o);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "optimizer: out of memory (%zu bytes of state)", nst);
    }
    if (n_seg > 0) memcpy(o->seg, seg, (size_t)n_seg * sizeof *seg);
    *out = o;
    return DISOPT_OK;
}

void dp_optim_destroy(dp_optim *o) {
    if (!o) return;
    free(o->seg);
    free(o->state);
    free(o);
}

disopt_status dp_optim_step(dp_optim *o, float *params, const float *grads, double lr) {
    if (!o) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dp_optim_step: NULL optimizer");
    DP_TRY(dp_optim_update_f32(&o->cfg, o->seg, o->n_seg, o->n, o->step + 1, lr, params, grads, o->state));
    o->step++;
    return DISOPT_OK;
}

disopt_status dp_optim_load_state(dp_optim *o, const float *state, size_t count, int64_t step) {
    if (!o || (count > 0 && !state)) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dp_optim_load_state: NULL argument");
    if (count != (size_t)o->n_state * o->n)
        return dp_error(DISOPT_ERR_SHAPE, "optimizer state: %zu floats given, %zu expected", count,
                        (size_t)o->n_state * o->n);
    if (step < 0) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "optimizer state: step %lld < 0", (long long)step);
    if (count) memcpy(o->state, state, count * sizeof(float));
    o->step = step;
    return DISOPT_OK;
}

double dp_lr_poly(double base, double T, double N, double power) {
    if (!(N > 0.0) || T >= N) return 0.0;
    return base * pow(1.0 - 1.0 * T / N, power);
}

double dp_lr_authors(double base, int epochs, int64_t iters_per_epoch, int64_t g) {
    if (epochs < 1 || iters_per_epoch < 1 || g < 0) return -1.0;
    if (g == 0) return base;
    const double N = (double)(epochs + 1) * (double)iters_per_epoch;
    const double T = (double)(g - 1 + iters_per_epoch);
    return dp_lr_poly(base, T, N, DP_POLY_POWER);
}

#define DP_T float
#define DP_S f32
#include "optim.inc"
#undef DP_T
#undef DP_S

#define DP_T double
#define DP_S f64
#include "optim.inc"
#undef DP_T
#undef DP_S
