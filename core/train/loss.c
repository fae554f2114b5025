/*
 * loss.c - the DisOptNet training losses (cross-entropy, smp 0.2.0 multiclass Dice, pixel-wise KD, feature
 * MSE, the stage-1 and stage-2 totals), forward and gradient, on host arrays.
 *
 * Conventions: those of loss.h. The math lives once, in loss.inc, and is instantiated here for float
 * (_f32, what training runs) and double (_f64, what the finite-difference tests run). Every function
 * returns a disopt_status and reports through dp_error; no global mutable state; nothing aborts.
 * Single-threaded: the loss is a small part of a training step (2 classes); the GPU has its own kernels.
 */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The per-pixel scratch lives on the stack: the number of classes is bounded. */
#define DP_LOSS_MAX_C 64

static disopt_status dp_loss_check_shape(const char *what, dp_lshape sh, size_t *P, size_t *NP) {
    if (sh.n <= 0 || sh.c <= 0 || sh.h <= 0 || sh.w <= 0)
        return dp_error(DISOPT_ERR_SHAPE, "%s: bad shape %dx%dx%dx%d", what, sh.n, sh.c, sh.h, sh.w);
    if (sh.c > DP_LOSS_MAX_C)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "%s: %d classes (at most %d)", what, sh.c, DP_LOSS_MAX_C);
    size_t p, np, all;
    if (!dp_mul_size((size_t)sh.h, (size_t)sh.w, &p) || !dp_mul_size(p, (size_t)sh.n, &np) ||
        !dp_mul_size(np, (size_t)sh.c, &all) || !dp_mul_size(all, sizeof(double), &all))
        return dp_error(DISOPT_ERR_SHAPE, "%s: shape %dx%dx%dx%d overflows", what, sh.n, sh.c, sh.h, sh.w);
    *P = p;
    *NP = np;
    return DISOPT_OK;
}

#define DP_T float
#define DP_S f32
#include "loss.inc"
#undef DP_T
#undef DP_S

#define DP_T double
#define DP_S f64
#include "loss.inc"
#undef DP_T
#undef DP_S
