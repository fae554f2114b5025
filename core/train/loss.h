/*
 * loss.h - the DisOptNet training losses (stage 1 and stage 2 of Kang et al., TGRS 2022), forward value and
 * gradient w.r.t. the inputs, on host arrays.
 *
 * Conventions (see also loss.c):
 *  - Tensors are NCHW, contiguous; element (n, c, p) of a map with P = H*W pixels is at (n*C + c)*P + p.
 *    Label maps and validity masks are N*H*W, element (n, p) at n*P + p.
 *  - Every function exists as _f32 and _f64 (the same code, instantiated from loss.inc): the f64 one is what
 *    the finite-difference tests run. Pixel math and every reduction are done in double in both; the storage
 *    type only changes the loads and stores.
 *  - Loss values are returned as double.
 *  - Term functions (ce, dice, seg, kd, mse) ADD gscale * dLoss/dInput into every gradient pointer that is
 *    not NULL (so a caller can sum weighted terms into one buffer). The totals (stage1, stage2) are the root
 *    of a backward pass and OVERWRITE their gradient outputs.
 *  - Targets are int32 class indices. valid: NULL (every pixel counts) or one byte per pixel, nonzero = valid.
 *    An invalid pixel behaves as PyTorch's ignore_index: it adds nothing to any sum and gets a zero
 *    gradient; its target value is not read. A valid pixel's target outside [0, C) is DISOPT_ERR_INPUT.
 *  - Errors: disopt_status, message through dp_error; nothing aborts; no global state.
 *
 * The losses, exactly (PyTorch 1.13 / segmentation_models_pytorch 0.2.0 semantics):
 *  - ce: mean over valid pixels of -log_softmax(x)[target] (nn.CrossEntropyLoss, reduction mean,
 *    ignore_index for the invalid pixels). With no valid pixel at all we return 0 with a zero gradient
 *    (PyTorch would return NaN).
 *  - dice: smp DiceLoss(mode="multiclass", from_logits=True, smooth=0, eps=1e-7): p = softmax(x);
 *    for each class c, with sums over the batch and the valid pixels, I_c = sum p_c*y_c, D_c = sum p_c + y_c,
 *    dice_c = 2*I_c / max(D_c, 1e-7) (clamp_min: no gradient through D_c when it clamps),
 *    loss_c = (1 - dice_c) * [sum y_c > 0]; the loss is the mean over all C classes (masked ones count as 0).
 *    With a validity mask this is exactly smp's ignore_index path (invalid pixels zeroed in both p and y).
 *  - seg = w_ce * ce + w_dice * dice on the same logits (one softmax pass); the authors use 1 and 1.
 *  - kd (utils/losses.py CriterionPixelWise): sum over every pixel of the batch of
 *    -sum_c softmax(t)_c * log_softmax(s)_c, divided by H*W (not by N). With a validity mask the sum runs
 *    over the valid pixels only and is still divided by H*W (our choice; the authors have no mask).
 *  - mse: mean((a - b)^2) over all elements (nn.MSELoss).
 *  - stage 1 (main_st1.py, the teacher): seg(t_logits, y) with weights dice 1, ce 1.
 *  - stage 2 (train_st2.py): seg(sar, y) + [seg(rgb, argmax t) + kd(rgb, t)] + seg(fused, y)
 *    + (1/3) * sum_k mse(s_feat[k], t_feat[k]), with the spec's intended pairs
 *    (p4, teacher f4), (p5, teacher f5), (decoder_rgb output, teacher decoder output).
 *    argmax picks the first maximal class (torch.argmax). The validity mask, when given, applies to every
 *    seg and kd term (also to the teacher's pseudo-labels); the feature maps are not masked.
 */
#ifndef DISOPT_TRAIN_LOSS_H
#define DISOPT_TRAIN_LOSS_H

#include "../internal.h"

#include <stddef.h>
#include <stdint.h>

#define DP_DICE_EPS 1e-7
#define DP_STAGE2_NFEAT 3

typedef struct dp_lshape {
    int n, c, h, w;
} dp_lshape;

/* Term weights of the totals. dp_loss_weights_authors() gives the authors' values. */
typedef struct dp_loss_weights {
    double ce, dice;    /* inside every seg() */
    double sar, rgb, kd, fused;
    double feat;        /* multiplies the SUM of the feature MSEs: 1/3 for the authors */
} dp_loss_weights;

static inline dp_loss_weights dp_loss_weights_authors(void) {
    dp_loss_weights w = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0 / DP_STAGE2_NFEAT};
    return w;
}

/* Every term of the stage-2 loss, unweighted, and the weighted sums. */
typedef struct dp_stage2_terms {
    double ce_sar, dice_sar, ce_rgb, dice_rgb, kd_rgb, ce_fused, dice_fused;
    double mse[DP_STAGE2_NFEAT];
    double seg_sar;   /* w.ce*ce_sar + w.dice*dice_sar */
    double seg_rgb;   /* w.ce*ce_rgb + w.dice*dice_rgb (without kd) */
    double seg_fused;
    double feat;      /* w.feat * sum mse */
    double total;     /* w.sar*seg_sar + w.rgb*seg_rgb + w.kd*kd_rgb + w.fused*seg_fused + feat */
} dp_stage2_terms;

typedef struct dp_stage1_terms {
    double ce, dice, total;
} dp_stage1_terms;

/* Declarations for one storage type T with suffix S (f32 / f64). */
#define DP_LOSS_DECLARE(T, S)                                                                                  \
    /* inputs of the stage-2 total; feature pair k has feat_numel[k] elements in both tensors */             \
    typedef struct dp_stage2_in_##S {                                                                           \
        dp_lshape shape; /* of the four logit maps */                                                         \
        const T *logit_sar, *logit_rgb, *logit_fused, *t_logits;                                                \
        const int32_t *target;                                                                                  \
        const uint8_t *valid; /* NULL: all valid */                                                             \
        const T *s_feat[DP_STAGE2_NFEAT], *t_feat[DP_STAGE2_NFEAT];                                             \
        size_t feat_numel[DP_STAGE2_NFEAT];                                                                     \
        dp_loss_weights w;                                                                                      \
    } dp_stage2_in_##S;                                                                                         \
    /* gradient outputs of the stage-2 total (each NULL = not wanted; overwritten) */                          \
    typedef struct dp_stage2_grad_##S {                                                                         \
        T *logit_sar, *logit_rgb, *logit_fused;                                                                 \
        T *s_feat[DP_STAGE2_NFEAT];                                                                             \
    } dp_stage2_grad_##S;                                                                                       \
    disopt_status dp_loss_ce_##S(dp_lshape sh, const T *x, const int32_t *target, const uint8_t *valid,      \
                                 double *loss, T *gx, double gscale);                                          \
    disopt_status dp_loss_dice_##S(dp_lshape sh, const T *x, const int32_t *target, const uint8_t *valid,    \
                                   double *loss, T *gx, double gscale);                                        \
    /* ce and dice of the same logits in one pass; gx += gscale * d(w_ce*ce + w_dice*dice)/dx */              \
    disopt_status dp_loss_seg_##S(dp_lshape sh, const T *x, const int32_t *target, const uint8_t *valid,     \
                                  double w_ce, double w_dice, double *ce, double *dice, T *gx, double gscale); \
    /* s: student logits, t: teacher logits (same shape); gs/gt: gradients w.r.t. s and t */                  \
    disopt_status dp_loss_kd_##S(dp_lshape sh, const T *s, const T *t, const uint8_t *valid, double *loss,   \
                                 T *gs, T *gt, double gscale);                                                 \
    disopt_status dp_loss_mse_##S(const T *a, const T *b, size_t n, double *loss, T *ga, T *gb,              \
                                  double gscale);                                                              \
    /* labels[n*P + p] = first c maximising x[(n*C + c)*P + p] */                                             \
    disopt_status dp_loss_argmax_##S(dp_lshape sh, const T *x, int32_t *labels);                             \
    /* the teacher's loss (main_st1.py): w.dice * dice + w.ce * ce; only w.ce and w.dice are read */           \
    disopt_status dp_loss_stage1_##S(dp_lshape sh, const T *logits, const int32_t *target,                   \
                                     const uint8_t *valid, dp_loss_weights w, dp_stage1_terms *terms,        \
                                     T *glogits);                                                              \
    disopt_status dp_loss_stage2_##S(const dp_stage2_in_##S *in, dp_stage2_terms *terms,                     \
                                     const dp_stage2_grad_##S *grad);

DP_LOSS_DECLARE(float, f32)
DP_LOSS_DECLARE(double, f64)

#endif
