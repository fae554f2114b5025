/*
 * trainer_cu.h - the trainer's way to the GPU (issue 5), internal.
 *
 * The CUDA module (libdisopt_cuda.so, built from cuda/) exports the training ops of cuda/train_ops.h: plain
 * C functions over device pointers, with the semantics of grad_ops.h / loss.h / optim.h's CPU kernels. The
 * core links nothing of CUDA: dp_tr_cu_open dlopens the module (as the engine does: DISOPT_CUDA_MODULE,
 * the installed path, the linker's search path), resolves every op it uses into a table and makes a
 * training context (stream, cuDNN handle) on one device. cuda/train_ops.h is included for its prototypes
 * only (the module's C ABI, declared once; the table's types are taken from them, so a signature change
 * breaks the build here instead of the stack at run time); DP_CUDA_ABI guards the module's version.
 *
 * The static inline wrappers below give each op the name and argument list of its CPU twin with the
 * suffix _cu (dp_tr_conv_fwd_mt_cu(cu, ...) for dp_tr_conv_fwd_mt_f32(pool, ...)): trainer.inc is
 * instantiated once more with them (trainer.c). The CPU convs' workspace arguments are ignored: the
 * training context owns its cuDNN workspace. No global state: everything lives in the dp_tr_cu.
 */
#ifndef DISOPT_TRAIN_TRAINER_CU_H
#define DISOPT_TRAIN_TRAINER_CU_H

#include "../../cuda/train_ops.h"

/* the ops the trainer uses */
#define DP_TR_CU_FNS(X)                                                                                                \
    X(ctx_create) X(ctx_destroy) X(sync) X(alloc) X(free) X(upload) X(download) X(zero) X(copy) X(conv_fwd)            \
    X(conv_bwd_data) X(conv_bwd_filter) X(bn_fwd_train) X(bn_bwd_train) X(bn_fwd_eval) X(act_fwd) X(act_bwd)           \
    X(gap_fwd) X(gap_bwd) X(broadcast_fwd) X(broadcast_bwd) X(scale_ch_fwd) X(scale_ch_bwd) X(scse_fwd) X(scse_bwd)    \
    X(add_fwd) X(add_bwd) X(concat_fwd) X(concat_bwd) X(upsample_fwd) X(upsample_bwd) X(softmax_fwd) X(softmax_bwd)    \
    X(dropout_mask) X(drop_connect_mask) X(dropout_fwd) X(dropout_bwd) X(drop_connect_fwd) X(drop_connect_bwd)        \
    X(loss_stage1) X(loss_stage2) X(optim_update) X(device) X(comm_init_all) X(comm_destroy) X(allreduce_avg)          \
    X(broadcast) X(set_math) X(bn_act_fwd_train) X(bn_act_fwd_eval) X(bn_act_bwd_train)

typedef struct dp_tr_cu {
    void *module;       /* dlopen handle */
    dp_cuda_host host;  /* the callbacks the module reports through (outlives ctx) */
    dp_cu_tr_ctx *ctx;  /* stream, cuDNN and cuBLAS handles, workspace of one device */
    struct {
#define DP_TR_CU_MEMBER(name) __typeof__(&dp_cu_tr_##name) name;
        DP_TR_CU_FNS(DP_TR_CU_MEMBER)
#undef DP_TR_CU_MEMBER
    } f;
} dp_tr_cu;

/* Loads the module and makes a context on CUDA device `device`. DISOPT_ERR_UNSUPPORTED (with the reason)
 * without a module or a device. */
disopt_status dp_tr_cu_open(int device, dp_tr_cu **out);
void dp_tr_cu_close(dp_tr_cu *cu);

/* ---------------------------------------------------------------- the CPU kernels' twins */
#define DP_TR_CU_IGNORE_WS(ws, e) ((void)(ws), (void)(e))

static inline disopt_status dp_tr_conv_fwd_mt_cu(dp_tr_cu *cu, const dp_conv_params *p, int n, int h, int w,
                                                 const float *x, const float *wt, const float *b, float *y, float *ws,
                                                 size_t ws_elems) {
    DP_TR_CU_IGNORE_WS(ws, ws_elems);
    return cu->f.conv_fwd(cu->ctx, p, n, h, w, x, wt, b, y);
}
static inline disopt_status dp_tr_conv_bwd_data_mt_cu(dp_tr_cu *cu, const dp_conv_params *p, int n, int h, int w,
                                                      const float *dy, const float *wt, float *dx, float *ws,
                                                      size_t ws_elems) {
    DP_TR_CU_IGNORE_WS(ws, ws_elems);
    return cu->f.conv_bwd_data(cu->ctx, p, n, h, w, dy, wt, dx);
}
static inline disopt_status dp_tr_conv_bwd_filter_mt_cu(dp_tr_cu *cu, const dp_conv_params *p, int n, int h, int w,
                                                        const float *x, const float *dy, float *dw, float *db,
                                                        float *ws, size_t ws_elems) {
    DP_TR_CU_IGNORE_WS(ws, ws_elems);
    return cu->f.conv_bwd_filter(cu->ctx, p, n, h, w, x, dy, dw, db);
}
static inline disopt_status dp_tr_bn_fwd_train_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                     const float *gamma, const float *beta, double eps,
                                                     double momentum, float *run_mean, float *run_var,
                                                     float *save_mean, float *save_invstd, float *y) {
    return cu->f.bn_fwd_train(cu->ctx, n, c, hw, x, gamma, beta, eps, momentum, run_mean, run_var, save_mean,
                              save_invstd, y);
}
static inline disopt_status dp_tr_bn_bwd_train_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                     const float *dy, const float *gamma, const float *save_mean,
                                                     const float *save_invstd, float *dx, float *dgamma,
                                                     float *dbeta) {
    return cu->f.bn_bwd_train(cu->ctx, n, c, hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}
static inline disopt_status dp_tr_bn_fwd_eval_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                    const float *gamma, const float *beta, const float *run_mean,
                                                    const float *run_var, double eps, float *y) {
    return cu->f.bn_fwd_eval(cu->ctx, n, c, hw, x, gamma, beta, run_mean, run_var, eps, y);
}
static inline disopt_status dp_tr_act_fwd_mt_cu(dp_tr_cu *cu, dp_act a, size_t count, const float *x, float *y) {
    return cu->f.act_fwd(cu->ctx, a, count, x, y);
}
static inline disopt_status dp_tr_act_bwd_mt_cu(dp_tr_cu *cu, dp_act a, size_t count, const float *x, const float *y,
                                                const float *dy, float *dx) {
    return cu->f.act_bwd(cu->ctx, a, count, x, y, dy, dx);
}
static inline disopt_status dp_tr_gap_fwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x, float *y) {
    return cu->f.gap_fwd(cu->ctx, n, c, hw, x, y);
}
static inline disopt_status dp_tr_gap_bwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *dy, float *dx) {
    return cu->f.gap_bwd(cu->ctx, n, c, hw, dy, dx);
}
static inline disopt_status dp_tr_broadcast_fwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                      float *y) {
    return cu->f.broadcast_fwd(cu->ctx, n, c, hw, x, y);
}
static inline disopt_status dp_tr_broadcast_bwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *dy,
                                                      float *dx) {
    return cu->f.broadcast_bwd(cu->ctx, n, c, hw, dy, dx);
}
static inline disopt_status dp_tr_scale_ch_fwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                     const float *g, float *y) {
    return cu->f.scale_ch_fwd(cu->ctx, n, c, hw, x, g, y);
}
static inline disopt_status dp_tr_scale_ch_bwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                     const float *g, const float *dy, float *dx, float *dg) {
    return cu->f.scale_ch_bwd(cu->ctx, n, c, hw, x, g, dy, dx, dg);
}
static inline disopt_status dp_tr_scse_fwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                 const float *cg, const float *sg, float *y) {
    return cu->f.scse_fwd(cu->ctx, n, c, hw, x, cg, sg, y);
}
static inline disopt_status dp_tr_scse_bwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x,
                                                 const float *cg, const float *sg, const float *dy, float *dx,
                                                 float *dcg, float *dsg) {
    return cu->f.scse_bwd(cu->ctx, n, c, hw, x, cg, sg, dy, dx, dcg, dsg);
}
static inline disopt_status dp_tr_add_fwd_mt_cu(dp_tr_cu *cu, size_t count, const float *a, const float *b,
                                                float *y) {
    return cu->f.add_fwd(cu->ctx, count, a, b, y);
}
static inline disopt_status dp_tr_add_bwd_mt_cu(dp_tr_cu *cu, size_t count, const float *dy, float *da, float *db) {
    return cu->f.add_bwd(cu->ctx, count, dy, da, db);
}
static inline disopt_status dp_tr_concat_fwd_mt_cu(dp_tr_cu *cu, int n, size_t hw, int k, const int *cs,
                                                   const float *const *xs, float *y) {
    return cu->f.concat_fwd(cu->ctx, n, hw, k, cs, xs, y);
}
static inline disopt_status dp_tr_concat_bwd_mt_cu(dp_tr_cu *cu, int n, size_t hw, int k, const int *cs,
                                                   const float *dy, float *const *dxs) {
    return cu->f.concat_bwd(cu->ctx, n, hw, k, cs, dy, dxs);
}
static inline disopt_status dp_tr_upsample_fwd_mt_cu(dp_tr_cu *cu, int n, int c, int h, int w, int f, const float *x,
                                                     float *y) {
    return cu->f.upsample_fwd(cu->ctx, n, c, h, w, f, x, y);
}
static inline disopt_status dp_tr_upsample_bwd_mt_cu(dp_tr_cu *cu, int n, int c, int h, int w, int f,
                                                     const float *dy, float *dx) {
    return cu->f.upsample_bwd(cu->ctx, n, c, h, w, f, dy, dx);
}
static inline disopt_status dp_tr_softmax_fwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *x, float *y) {
    return cu->f.softmax_fwd(cu->ctx, n, c, hw, x, y);
}
static inline disopt_status dp_tr_softmax_bwd_mt_cu(dp_tr_cu *cu, int n, int c, size_t hw, const float *y,
                                                    const float *dy, float *dx) {
    return cu->f.softmax_bwd(cu->ctx, n, c, hw, y, dy, dx);
}
static inline disopt_status dp_tr_dropout_fwd_mt_cu(dp_tr_cu *cu, size_t count, double p, const uint8_t *mask,
                                                    const float *x, float *y) {
    return cu->f.dropout_fwd(cu->ctx, count, p, mask, x, y);
}
static inline disopt_status dp_tr_dropout_bwd_mt_cu(dp_tr_cu *cu, size_t count, double p, const uint8_t *mask,
                                                    const float *dy, float *dx) {
    return cu->f.dropout_bwd(cu->ctx, count, p, mask, dy, dx);
}
static inline disopt_status dp_tr_drop_connect_fwd_mt_cu(dp_tr_cu *cu, int n, size_t per, double rate,
                                                         const uint8_t *mask, const float *x, float *y) {
    return cu->f.drop_connect_fwd(cu->ctx, n, per, rate, mask, x, y);
}
static inline disopt_status dp_tr_drop_connect_bwd_mt_cu(dp_tr_cu *cu, int n, size_t per, double rate,
                                                         const uint8_t *mask, const float *dy, float *dx) {
    return cu->f.drop_connect_bwd(cu->ctx, n, per, rate, mask, dy, dx);
}

#endif
