/*
 * optim.h - optimizers over flat arenas (SGD with momentum / Nesterov, AdamW) and the authors' poly schedule.
 *
 * Conventions (see also optim.c):
 *  - params, grads and the optimizer state are each ONE contiguous array; a table of segments (offset, count,
 *    decay flag) says which ranges are parameters and whether weight decay applies to them. Elements outside
 *    every segment (alignment gaps) are never read or written. An update is one loop over the segments (one
 *    kernel on a GPU later).
 *  - Semantics are PyTorch 1.13's torch.optim.SGD / torch.optim.AdamW (single-tensor path, maximize=False,
 *    amsgrad=False), element by element and in the same operation order, in the storage type:
 *      SGD:   d = g + wd*p;  buf = d (first step) or momentum*buf + (1 - dampening)*d;
 *             d = d + momentum*buf (Nesterov) or buf;  p = p - lr*d
 *      AdamW: p = p*(1 - lr*wd);  m = b1*m + (1 - b1)*g;  v = b2*v + (1 - b2)*g*g;
 *             p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *    with t the 1-based step number and wd replaced by 0 on segments whose decay flag is 0.
 *    Every parameter is updated at every step (PyTorch skips parameters whose .grad is None; we have none).
 *  - The state is serialisable: dp_optim.state holds n_state arrays of n floats back to back, named as in a
 *    PyTorch optimizer state_dict (dp_optim_state_name), and dp_optim.step counts the updates done.
 *  - The update math exists as _f32 and _f64 (optim.inc); dp_optim itself keeps float state.
 *  - Errors: disopt_status + dp_error; no global state; nothing aborts.
 *
 * Which parameters the authors decay: train_st1.py / train_st2.py build
 * SGD(model.parameters(), lr=5e-3, momentum=0.9, weight_decay=1e-4, nesterov=True): one parameter group,
 * so EVERY parameter (conv weights and biases, BN weights and biases) is decayed.
 */
#ifndef DISOPT_TRAIN_OPTIM_H
#define DISOPT_TRAIN_OPTIM_H

#include "../internal.h"

#include <stddef.h>
#include <stdint.h>

typedef enum dp_optim_kind { DP_OPTIM_SGD = 1, DP_OPTIM_ADAMW = 2 } dp_optim_kind;

typedef struct dp_optim_config {
    dp_optim_kind kind;
    double lr;            /* base learning rate (informative: each step is given its lr) */
    double weight_decay;  /* on segments with decay = 1 */
    double momentum, dampening;
    int nesterov;         /* SGD; Nesterov needs momentum > 0 and dampening 0, as in PyTorch */
    double beta1, beta2, eps; /* AdamW */
} dp_optim_config;

/* SGD as the authors train (both stages): lr 5e-3, momentum 0.9, Nesterov, dampening 0, weight decay 1e-4 */
dp_optim_config dp_optim_config_sgd_authors(void);
/* AdamW with PyTorch's defaults for the rest: betas (0.9, 0.999), eps 1e-8 */
dp_optim_config dp_optim_config_adamw(double lr, double weight_decay);

typedef struct dp_optim_segment {
    size_t offset, count; /* a range of the arenas, in elements */
    int decay;            /* nonzero: weight decay applies to this range */
} dp_optim_segment;

typedef struct dp_optim {
    dp_optim_config cfg;
    size_t n;                /* elements of the params / grads arenas */
    dp_optim_segment *seg;   /* owned copy, sorted by offset, non-overlapping, inside [0, n) */
    int n_seg;
    int n_state;             /* state arrays: SGD 1 (0 without momentum), AdamW 2 */
    float *state;            /* n_state * n floats: [momentum_buffer] or [exp_avg | exp_avg_sq]; zero at start */
    int64_t step;            /* updates done so far */
} dp_optim;

/* Number of state arrays the config needs (0..2), or -1 for an invalid config (message set). */
int dp_optim_state_count(const dp_optim_config *cfg);
/* PyTorch state_dict name of state array i ("momentum_buffer", "exp_avg", "exp_avg_sq"); NULL if none. */
const char *dp_optim_state_name(const dp_optim_config *cfg, int i);
/* Checks the config (ranges as PyTorch checks them) and the segment table. */
disopt_status dp_optim_validate(const dp_optim_config *cfg, size_t n, const dp_optim_segment *seg, int n_seg);

disopt_status dp_optim_create(const dp_optim_config *cfg, size_t n, const dp_optim_segment *seg, int n_seg,
                              dp_optim **out);
void dp_optim_destroy(dp_optim *o);
/* One update with learning rate lr: params -= ..., state updated, step += 1. */
disopt_status dp_optim_step(dp_optim *o, float *params, const float *grads, double lr);
/* Restores a checkpoint: state (n_state * n floats) and the step counter. */
disopt_status dp_optim_load_state(dp_optim *o, const float *state, size_t count, int64_t step);

/* The update itself, over caller-owned arenas: t is the 1-based number of this step (t == 1 initialises the
 * SGD momentum buffer from d); state holds dp_optim_state_count(cfg) arrays of n elements. Does not validate
 * the segments beyond what is cheap: call dp_optim_validate once. */
#define DP_OPTIM_DECLARE(T, S)                                                                                 \
    disopt_status dp_optim_update_##S(const dp_optim_config *cfg, const dp_optim_segment *seg, int n_seg,     \
                                      size_t n, int64_t t, double lr, T *params, const T *grads, T *state);
DP_OPTIM_DECLARE(float, f32)
DP_OPTIM_DECLARE(double, f64)

/* ---------------------------------------------------------------- schedule */
#define DP_POLY_POWER 0.9

/* lr = base * (1 - T/N)^power, 0 once T >= N (LR_Scheduler 'poly' of the authors' utils/lr_scheduler.py). */
double dp_lr_poly(double base, double T, double N, double power);

/* The learning rate the authors' loop uses for its step number g (0-based over the whole run):
 * LR_Scheduler('poly', base, epochs + 1, iters_per_epoch) is called AFTER optimizer.step() with
 * T = epoch * iters_per_epoch + i (epoch from 1, i from 0), N = (epochs + 1) * iters_per_epoch.
 * So step 0 runs at the optimizer's initial lr (= base) and step g >= 1 at poly(T = g - 1 + iters_per_epoch).
 * Returns a negative value for bad arguments (epochs < 1, iters_per_epoch < 1, g < 0). */
double dp_lr_authors(double base, int epochs, int64_t iters_per_epoch, int64_t g);

#endif
