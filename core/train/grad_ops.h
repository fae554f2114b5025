/*
 * grad_ops.h - training-mode forward and backward kernels of every op of the network, on the CPU
 * (issue 5). Internal, not installed.
 *
 * Conventions (every function below):
 *  - tensors are NCHW, contiguous, host memory; conv weights are OIHW (PyTorch's layout), grouped
 *    as PyTorch groups them (output channel o reads input channels of group o / (cout / groups));
 *  - each kernel exists twice, written once in grad_tmpl.h: a float instantiation (suffix _f32, the
 *    one that trains) and a double one (suffix _f64, the one the finite-difference tests run). The
 *    two differ only in T and in the BLAS call (bli_sgemm / bli_dgemm);
 *  - forward functions overwrite their outputs; backward functions ADD into every gradient buffer
 *    (dx += ..., dw += ...), so a tensor read by several ops, or a parameter used twice, gets the
 *    sum; the caller zeroes gradient buffers before a backward pass. Gradient pointers documented
 *    as "may be NULL" are skipped;
 *  - reductions (BN statistics, GAP, bias and per-channel gradients) accumulate in double in both
 *    instantiations; running statistics are updated in double and stored as T;
 *  - what backward needs is named in each prototype: the op's input x and/or output y, and what the
 *    forward saved (BN: batch mean and 1/sqrt(var + eps) per channel; dropout and drop-connect: the
 *    mask). Nothing is kept inside the kernels;
 *  - no allocation: the convs take a caller's workspace, dp_tr_conv_ws_elems() elements of T for the
 *    full speed (per thread); any size from one im2col column (cin/groups * kh * kw elements) per
 *    thread works, in more, narrower panels (the result is the same up to the GEMM's rounding);
 *  - threading: every kernel has a twin with an _mt suffix that takes a dp_pool first and runs its
 *    tasks there; the plain kernel is the twin with a NULL pool (the caller's thread, tasks in
 *    order). The convs split into (image, group, pixel panel) tasks, (image, channel) for depthwise,
 *    and their filter gradients into (group, block of 64 im2col rows) tasks over every image; BN
 *    runs a task per channel, upsampling one per plane, the other ops ranges of about 16K elements
 *    of independent units (planes, pixels, images, elements). Every task writes its own part of the
 *    output and the decomposition depends on no thread count, so the results are bitwise the same
 *    on any pool (given a workspace of one full panel per thread). The op boundary is per node, as
 *    the backend vtable's "run backward of one node" will be; a CUDA backend implements the same
 *    functions over device pointers;
 *  - errors: impossible shapes or parameters give DISOPT_ERR_INVALID_ARGUMENT through dp_error();
 *    nothing aborts.
 *
 * Ops (PyTorch semantics each):
 *  conv (groups incl. depthwise, stride, dilation, zero padding top/bottom/left/right, optional bias);
 *  BatchNorm training mode (batch mean, biased variance for the normalisation, running stats
 *  updated with momentum m: r = (1 - m) r + m s, with the unbiased variance) and eval mode;
 *  activations ReLU, swish x*sigmoid(x), sigmoid; global average pool; per-channel scale (SE gate);
 *  SCSE (x*c + x*s); add; channel concat; bilinear upsampling by an integer factor with
 *  align_corners=True; broadcast N,C,1,1 -> N,C,H,W; softmax over channels; dropout; drop-connect.
 */
#ifndef DISOPT_TRAIN_GRAD_OPS_H
#define DISOPT_TRAIN_GRAD_OPS_H

#include "../internal.h"
#include "rng.h"

#include <stddef.h>
#include <stdint.h>

/* Output size of a conv on an h x w input; DISOPT_ERR_INVALID_ARGUMENT when the params are
 * impossible (groups not dividing cin/cout, kernel larger than the padded input, ...). */
disopt_status dp_tr_conv_check(const dp_conv_params *p, int n, int h, int w, int *oh, int *ow);
/* Workspace of the conv kernels (forward, backward data, backward filter) on one thread, in
 * elements of T: an im2col panel of about DP_TR_PANEL_ELEMS elements (at least
 * DP_TR_PANEL_MIN_COLS output pixels, at most all of them); 0 for depthwise and
 * 1x1/stride-1/unpadded convs. The _mt kernels take one panel per thread of the pool:
 * dp_tr_conv_ws_elems_mt(p, h, w, dp_pool_size(pool)) = nthreads * dp_tr_conv_ws_elems(p, h, w). */
#define DP_TR_PANEL_ELEMS ((size_t)1 << 20)
#define DP_TR_PANEL_MIN_COLS ((size_t)256)
size_t dp_tr_conv_ws_elems(const dp_conv_params *p, int h, int w);
size_t dp_tr_conv_ws_elems_mt(const dp_conv_params *p, int h, int w, int nthreads);
/* 1 when the GEMM reads the input itself (1x1, stride 1, no padding, any groups) */
int dp_tr_conv_is_direct(const dp_conv_params *p);
/* 1 when the conv runs as a depthwise direct loop (groups == cin == cout > 1) */
int dp_tr_conv_is_depthwise(const dp_conv_params *p);

/* ---------------------------------------------------------------- random masks (type-free) */
/* Dropout's keep mask: mask[i] = 1 with probability 1 - p (u < 1 - p, u the draw's uniform i),
 * one draw of count values from r. */
disopt_status dp_tr_dropout_mask(dp_rng *r, double p, size_t count, uint8_t *mask);
/* Drop-connect's per-sample mask, efficientnet_pytorch 0.6.3's rule: keep = 1 - rate;
 * mask[i] = floor(keep + u_i) computed in float (u_i the draw's uniform i), one draw of n values. */
disopt_status dp_tr_drop_connect_mask(dp_rng *r, double rate, int n, uint8_t *mask);
/* The rate of block block_idx (0-based, counted over the whole encoder) out of num_blocks, as
 * smp 0.2.0's EfficientNetEncoder.forward and efficientnet_pytorch 0.6.3 compute it:
 * base * block_idx / num_blocks, in double, left to right. A rate of 0 (the first block) means no
 * drop-connect at all (Python's `if drop_connect_rate:`): no mask is drawn. Drop-connect applies
 * only to blocks with a residual (original stride 1 and cin == cout), in training only. The
 * student's pseudo-optical stages continue the count (b3: their first block is 8 of 26). */
double dp_tr_drop_connect_rate(double base, int block_idx, int num_blocks);

/* ---------------------------------------------------------------- typed kernels */
#define DP_TR_DECLARE(T, S)                                                                                            \
    /* conv: y = conv(x, w) + b (b may be NULL); x: n x cin x h x w; y: n x cout x oh x ow */                          \
    disopt_status dp_tr_conv_fwd_##S(const dp_conv_params *p, int n, int h, int w, const T *x, const T *wt,            \
                                     const T *b, T *y, T *ws, size_t ws_elems);                                        \
    /* dx += conv_transpose(dy, w) */                                                                                  \
    disopt_status dp_tr_conv_bwd_data_##S(const dp_conv_params *p, int n, int h, int w, const T *dy, const T *wt,      \
                                          T *dx, T *ws, size_t ws_elems);                                              \
    /* dw += sum over images of dy (x) x; db += sum of dy per output channel (db may be NULL) */                       \
    disopt_status dp_tr_conv_bwd_filter_##S(const dp_conv_params *p, int n, int h, int w, const T *x, const T *dy,     \
                                            T *dw, T *db, T *ws, size_t ws_elems);                                     \
                                                                                                                       \
    /* BN training mode over x: n x c x hw. Saves the batch mean and 1/sqrt(biased var + eps) per                      \
     * channel. run_mean / run_var (both or neither may be NULL) are updated with momentum. */                         \
    disopt_status dp_tr_bn_fwd_train_##S(int n, int c, size_t hw, const T *x, const T *gamma, const T *beta,           \
                                         double eps, double momentum, T *run_mean, T *run_var, T *save_mean,           \
                                         T *save_invstd, T *y);                                                        \
    /* backward of the training-mode BN through the batch statistics; dgamma, dbeta may be NULL */                     \
    disopt_status dp_tr_bn_bwd_train_##S(int n, int c, size_t hw, const T *x, const T *dy, const T *gamma,             \
                                         const T *save_mean, const T *save_invstd, T *dx, T *dgamma, T *dbeta);        \
    /* BN eval mode: y = (x - run_mean) / sqrt(run_var + eps) * gamma + beta */                                        \
    disopt_status dp_tr_bn_fwd_eval_##S(int n, int c, size_t hw, const T *x, const T *gamma, const T *beta,            \
                                        const T *run_mean, const T *run_var, double eps, T *y);                        \
    disopt_status dp_tr_bn_bwd_eval_##S(int n, int c, size_t hw, const T *x, const T *dy, const T *gamma,              \
                                        const T *run_mean, const T *run_var, double eps, T *dx, T *dgamma, T *dbeta);  \
                                                                                                                       \
    /* y = act(x) over count values (DP_ACT_NONE copies) */                                                            \
    disopt_status dp_tr_act_fwd_##S(dp_act a, size_t count, const T *x, T *y);                                         \
    /* dx += dy * act'(x). Reads x for ReLU and swish, y for sigmoid (the other may be NULL). */                       \
    disopt_status dp_tr_act_bwd_##S(dp_act a, size_t count, const T *x, const T *y, const T *dy, T *dx);               \
                                                                                                                       \
    /* global average pool: x n x c x hw -> y n x c */                                                                 \
    disopt_status dp_tr_gap_fwd_##S(int n, int c, size_t hw, const T *x, T *y);                                        \
    disopt_status dp_tr_gap_bwd_##S(int n, int c, size_t hw, const T *dy, T *dx);                                      \
    /* broadcast: x n x c -> y n x c x hw (ASPP pooling's resize of a 1x1 map) */                                      \
    disopt_status dp_tr_broadcast_fwd_##S(int n, int c, size_t hw, const T *x, T *y);                                  \
    disopt_status dp_tr_broadcast_bwd_##S(int n, int c, size_t hw, const T *dy, T *dx);                                \
    /* per-channel scale (SE gate): y = x * g, g: n x c */                                                             \
    disopt_status dp_tr_scale_ch_fwd_##S(int n, int c, size_t hw, const T *x, const T *g, T *y);                       \
    disopt_status dp_tr_scale_ch_bwd_##S(int n, int c, size_t hw, const T *x, const T *g, const T *dy, T *dx, T *dg);  \
    /* SCSE combine: y = x * cg + x * sg, cg: n x c (channel gate), sg: n x 1 x hw (spatial gate) */                   \
    disopt_status dp_tr_scse_fwd_##S(int n, int c, size_t hw, const T *x, const T *cg, const T *sg, T *y);             \
    disopt_status dp_tr_scse_bwd_##S(int n, int c, size_t hw, const T *x, const T *cg, const T *sg, const T *dy,       \
                                     T *dx, T *dcg, T *dsg);                                                           \
    /* y = a + b over count values; da, db may be NULL */                                                              \
    disopt_status dp_tr_add_fwd_##S(size_t count, const T *a, const T *b, T *y);                                       \
    disopt_status dp_tr_add_bwd_##S(size_t count, const T *dy, T *da, T *db);                                          \
    /* channel concat of k inputs xs[i] (n x cs[i] x hw) into y (n x sum cs x hw); dxs[i] may be NULL */               \
    disopt_status dp_tr_concat_fwd_##S(int n, size_t hw, int k, const int *cs, const T *const *xs, T *y);              \
    disopt_status dp_tr_concat_bwd_##S(int n, size_t hw, int k, const int *cs, const T *dy, T *const *dxs);            \
    /* bilinear, align_corners=True, x n x c x h x w -> y n x c x (h*f) x (w*f) */                                     \
    disopt_status dp_tr_upsample_fwd_##S(int n, int c, int h, int w, int f, const T *x, T *y);                         \
    disopt_status dp_tr_upsample_bwd_##S(int n, int c, int h, int w, int f, const T *dy, T *dx);                       \
    /* softmax over channels per pixel */                                                                              \
    disopt_status dp_tr_softmax_fwd_##S(int n, int c, size_t hw, const T *x, T *y);                                    \
    disopt_status dp_tr_softmax_bwd_##S(int n, int c, size_t hw, const T *y, const T *dy, T *dx);                      \
    /* dropout with the mask of dp_tr_dropout_mask: y = x * mask * (1 / (1 - p)) (PyTorch's order) */                  \
    disopt_status dp_tr_dropout_fwd_##S(size_t count, double p, const uint8_t *mask, const T *x, T *y);                \
    disopt_status dp_tr_dropout_bwd_##S(size_t count, double p, const uint8_t *mask, const T *dy, T *dx);              \
    /* drop-connect with the per-sample mask of dp_tr_drop_connect_mask: y = x / (1 - rate) * mask[i]                  \
     * for sample i (efficientnet_pytorch's order); per = elements per sample */                                       \
    disopt_status dp_tr_drop_connect_fwd_##S(int n, size_t per, double rate, const uint8_t *mask, const T *x, T *y);   \
    disopt_status dp_tr_drop_connect_bwd_##S(int n, size_t per, double rate, const uint8_t *mask, const T *dy, T *dx);

DP_TR_DECLARE(float, f32)
DP_TR_DECLARE(double, f64)

/* The same kernels with their tasks on a dp_pool (NULL: the caller's thread): dp_tr_<op>_mt_f32 /
 * _f64, the arguments of dp_tr_<op>_f32 / _f64 after the pool. The plain ones are these with a NULL
 * pool. See "threading" above. */
#define DP_TR_DECLARE_MT(T, S)                                                                                         \
    disopt_status dp_tr_conv_fwd_mt_##S(dp_pool *pool, const dp_conv_params *p, int n, int h, int w, const T *x,       \
                                        const T *wt, const T *b, T *y, T *ws, size_t ws_elems);                        \
    disopt_status dp_tr_conv_bwd_data_mt_##S(dp_pool *pool, const dp_conv_params *p, int n, int h, int w, const T *dy, \
                                             const T *wt, T *dx, T *ws, size_t ws_elems);                              \
    disopt_status dp_tr_conv_bwd_filter_mt_##S(dp_pool *pool, const dp_conv_params *p, int n, int h, int w,            \
                                               const T *x, const T *dy, T *dw, T *db, T *ws, size_t ws_elems);         \
    disopt_status dp_tr_bn_fwd_train_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *gamma,        \
                                            const T *beta, double eps, double momentum, T *run_mean, T *run_var,       \
                                            T *save_mean, T *save_invstd, T *y);                                       \
    disopt_status dp_tr_bn_bwd_train_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *dy,           \
                                            const T *gamma, const T *save_mean, const T *save_invstd, T *dx,           \
                                            T *dgamma, T *dbeta);                                                      \
    disopt_status dp_tr_bn_fwd_eval_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *gamma,         \
                                           const T *beta, const T *run_mean, const T *run_var, double eps, T *y);      \
    disopt_status dp_tr_bn_bwd_eval_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *dy,            \
                                           const T *gamma, const T *run_mean, const T *run_var, double eps, T *dx,     \
                                           T *dgamma, T *dbeta);                                                       \
    disopt_status dp_tr_act_fwd_mt_##S(dp_pool *pool, dp_act a, size_t count, const T *x, T *y);                       \
    disopt_status dp_tr_act_bwd_mt_##S(dp_pool *pool, dp_act a, size_t count, const T *x, const T *y, const T *dy,     \
                                       T *dx);                                                                         \
    disopt_status dp_tr_gap_fwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, T *y);                      \
    disopt_status dp_tr_gap_bwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *dy, T *dx);                    \
    disopt_status dp_tr_broadcast_fwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, T *y);                \
    disopt_status dp_tr_broadcast_bwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *dy, T *dx);              \
    disopt_status dp_tr_scale_ch_fwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *g, T *y);     \
    disopt_status dp_tr_scale_ch_bwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *g,            \
                                            const T *dy, T *dx, T *dg);                                                \
    disopt_status dp_tr_scse_fwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *cg, const T *sg,  \
                                        T *y);                                                                         \
    disopt_status dp_tr_scse_bwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *cg, const T *sg,  \
                                        const T *dy, T *dx, T *dcg, T *dsg);                                           \
    disopt_status dp_tr_add_fwd_mt_##S(dp_pool *pool, size_t count, const T *a, const T *b, T *y);                     \
    disopt_status dp_tr_add_bwd_mt_##S(dp_pool *pool, size_t count, const T *dy, T *da, T *db);                        \
    disopt_status dp_tr_concat_fwd_mt_##S(dp_pool *pool, int n, size_t hw, int k, const int *cs, const T *const *xs,   \
                                          T *y);                                                                       \
    disopt_status dp_tr_concat_bwd_mt_##S(dp_pool *pool, int n, size_t hw, int k, const int *cs, const T *dy,          \
                                          T *const *dxs);                                                              \
    disopt_status dp_tr_upsample_fwd_mt_##S(dp_pool *pool, int n, int c, int h, int w, int f, const T *x, T *y);       \
    disopt_status dp_tr_upsample_bwd_mt_##S(dp_pool *pool, int n, int c, int h, int w, int f, const T *dy, T *dx);     \
    disopt_status dp_tr_softmax_fwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *x, T *y);                  \
    disopt_status dp_tr_softmax_bwd_mt_##S(dp_pool *pool, int n, int c, size_t hw, const T *y, const T *dy, T *dx);    \
    disopt_status dp_tr_dropout_fwd_mt_##S(dp_pool *pool, size_t count, double p, const uint8_t *mask, const T *x,     \
                                           T *y);                                                                      \
    disopt_status dp_tr_dropout_bwd_mt_##S(dp_pool *pool, size_t count, double p, const uint8_t *mask, const T *dy,    \
                                           T *dx);                                                                     \
    disopt_status dp_tr_drop_connect_fwd_mt_##S(dp_pool *pool, int n, size_t per, double rate, const uint8_t *mask,    \
                                                const T *x, T *y);                                                     \
    disopt_status dp_tr_drop_connect_bwd_mt_##S(dp_pool *pool, int n, size_t per, double rate, const uint8_t *mask,    \
                                                const T *dy, T *dx);

DP_TR_DECLARE_MT(float, f32)
DP_TR_DECLARE_MT(double, f64)

#undef DP_TR_DECLARE
#undef DP_TR_DECLARE_MT

#endif
