/*
 * train_ops.h - the GPU twin of every training kernel of core/train (grad_ops.h, loss.h, optim.h, the masks of
 * rng.h), float32 on CUDA devices, for a CUDA trainer (issue 5). Part of the CUDA module (libdisopt_cuda.so);
 * these functions are exported from it (C ABI, default visibility), the rest of the module stays hidden.
 *
 * Conventions (every function below):
 *  - the semantics of the CPU kernel of the same name (dp_tr_X_f32 -> dp_cu_tr_X, dp_loss_X_f32 ->
 *    dp_cu_tr_loss_X, dp_optim_update_f32 -> dp_cu_tr_optim_update): NCHW contiguous, conv weights OIHW with
 *    PyTorch's groups; forward functions overwrite their outputs, backward functions ADD into every gradient
 *    (dx += ...), gradients documented "may be NULL" are skipped; loss totals (stage1, stage2) overwrite;
 *  - every tensor pointer is DEVICE memory (cudaMalloc or dp_cu_tr_alloc) of the context's device; shapes,
 *    parameters, conv params, concat's channel list and pointer arrays, the optimizer's config and segment
 *    table are host values;
 *  - FP32 exact (the default; see dp_cu_tr_set_math for TF32 and BF16): cuDNN convolutions run with CUDNN_FMA_MATH (no TF32) and only the GEMM-family / direct
 *    algorithms (no FFT, no Winograd), deterministic ones first; pointwise convs (1x1, stride 1, unpadded,
 *    groups 1) are cuBLAS SGEMMs in pedantic math (no TF32), the filter gradient summed image by image; reductions (BN statistics, GAP, bias and
 *    per-channel gradients, loss sums) accumulate in double, in a fixed order for a given shape: results are
 *    bitwise reproducible run to run (given the same cuDNN algorithm), and no kernel of ours uses float
 *    atomics (bilinear upsampling's backward gathers; see train_kernels.cu);
 *  - asynchronous: work is queued on the context's stream (dp_cu_tr_stream) in call order; the losses are
 *    the exception: they return their values to the host and so synchronise the stream;
 *  - no global mutable state: the CUDA stream, the cuDNN handle, its descriptors, the workspace and a scratch
 *    arena for reductions live in the caller's dp_cu_tr_ctx. A context is used by one host thread at a time.
 *    The workspace and scratch grow on demand (cudaMalloc/cudaFree: not inside a CUDA graph capture; call
 *    dp_cu_tr_reserve beforehand to capture);
 *  - errors: every CUDA / cuDNN return code is checked and becomes a disopt_status with a message through the
 *    host's error function (dp_cuda_host.error: the core's thread-local message); impossible shapes give
 *    DISOPT_ERR_INVALID_ARGUMENT as the CPU kernels do; nothing aborts.
 */
#ifndef DISOPT_CUDA_TRAIN_OPS_H
#define DISOPT_CUDA_TRAIN_OPS_H

#include "internal.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/rng.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_CU_TR_API __attribute__((visibility("default")))

typedef struct dp_cu_tr_ctx dp_cu_tr_ctx;

/* ---------------------------------------------------------------- context, memory */
/* A context on CUDA device `device`: its own non-blocking stream, cuDNN handle (FMA math) and descriptors.
 * DISOPT_ERR_UNSUPPORTED (message set) when no CUDA device is visible. host must outlive the context. */
DP_CU_TR_API disopt_status dp_cu_tr_ctx_create(const dp_cuda_host *host, int device, dp_cu_tr_ctx **out);
DP_CU_TR_API void dp_cu_tr_ctx_destroy(dp_cu_tr_ctx *c);
/* the context's cudaStream_t */
DP_CU_TR_API void *dp_cu_tr_stream(dp_cu_tr_ctx *c);
/* the context's CUDA device */
DP_CU_TR_API int dp_cu_tr_device(const dp_cu_tr_ctx *c);
/* waits for every queued operation; reports an asynchronous kernel error if one happened */
DP_CU_TR_API disopt_status dp_cu_tr_sync(dp_cu_tr_ctx *c);
/* The math of the convolutions and pointwise GEMMs (cuDNN, cuBLAS); our own kernels (BN, activations, losses,
 * reductions, the optimizer, the depthwise convs (ours unless DISOPT_CUDA_TR_DW=cudnn)) are FP32 with double reductions in every
 * mode, and every tensor stays FP32 in memory (parameters, activations, gradients):
 *  - DP_CU_TR_MATH_FP32 (a new context's): exact FP32, cuDNN FMA math, cuBLAS pedantic math;
 *  - DP_CU_TR_MATH_TF32: TF32 tensor cores (operands rounded to 10 mantissa bits, FP32 accumulation) in
 *    cuDNN and cuBLAS, as PyTorch's allow_tf32;
 *  - DP_CU_TR_MATH_BF16: the pointwise convs (most of the network's FLOPs) as cuBLAS GEMMs on bfloat16 operands
 *    (both the activation / gradient and the weights rounded to nearest even into the workspace just before the
 *    GEMM; FP32 accumulation, CUBLAS_COMPUTE_32F, FP32 output), the other cuDNN convs in TF32; the master weights,
 *    activations and gradients stay FP32 in memory. No loss scale is needed (bfloat16 has FP32's exponent range).
 *    (Until session 12 this mode passed FP32 matrices with CUBLAS_COMPUTE_32F_FAST_16BF, which cuBLAS ran as TF32.)
 * Clears the algorithm cache. DISOPT_ERR_INVALID_ARGUMENT for another value. */
#define DP_CU_TR_MATH_FP32 0
#define DP_CU_TR_MATH_TF32 1
#define DP_CU_TR_MATH_BF16 2
DP_CU_TR_API disopt_status dp_cu_tr_set_math(dp_cu_tr_ctx *c, int math);
/* grows the context's workspace (cuDNN, explicit padding) and scratch (reductions) to at least these sizes */
DP_CU_TR_API disopt_status dp_cu_tr_reserve(dp_cu_tr_ctx *c, size_t ws_bytes, size_t scratch_bytes);
/* device memory of the context's device (256-byte aligned) */
DP_CU_TR_API disopt_status dp_cu_tr_alloc(dp_cu_tr_ctx *c, size_t bytes, void **out);
DP_CU_TR_API void dp_cu_tr_free(dp_cu_tr_ctx *c, void *p);
/* copies between host and device memory; both wait until the copy is done */
DP_CU_TR_API disopt_status dp_cu_tr_upload(dp_cu_tr_ctx *c, void *dst, const void *src, size_t bytes);
DP_CU_TR_API disopt_status dp_cu_tr_download(dp_cu_tr_ctx *c, void *dst, const void *src, size_t bytes);
/* dst[0..bytes) = 0, queued (gradient buffers before a backward pass) */
DP_CU_TR_API disopt_status dp_cu_tr_zero(dp_cu_tr_ctx *c, void *dst, size_t bytes);
/* device-to-device copy, queued */
DP_CU_TR_API disopt_status dp_cu_tr_copy(dp_cu_tr_ctx *c, void *dst, const void *src, size_t bytes);
/* x[0..n) = v, queued */
DP_CU_TR_API disopt_status dp_cu_tr_fill(dp_cu_tr_ctx *c, float *x, size_t n, float v);

/* ---------------------------------------------------------------- convolution (cuDNN) */
/* Any groups (depthwise included), stride, dilation, zero padding top/bottom/left/right: symmetric padding
 * goes to cuDNN, asymmetric padding (EfficientNet's static same) is done explicitly in the workspace (forward
 * and filter gradient: a zero-padded copy of x; data gradient: into a padded buffer, then the interior added).
 * The algorithm of each (conv, input shape, direction) is chosen once per context (cuDNN's heuristics, see
 * train_ops.c) and cached (512 entries, then round robin). */
DP_CU_TR_API disopt_status dp_cu_tr_conv_fwd(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w,
                                             const float *x, const float *wt, const float *b, float *y);
/* dx += conv_transpose(dy, w) */
DP_CU_TR_API disopt_status dp_cu_tr_conv_bwd_data(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w,
                                                  const float *dy, const float *wt, float *dx);
/* dw += sum over images of dy (x) x; db += sum of dy per output channel (dw, db may be NULL) */
DP_CU_TR_API disopt_status dp_cu_tr_conv_bwd_filter(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h,
                                                    int w, const float *x, const float *dy, float *dw, float *db);

/* ---------------------------------------------------------------- batch norm */
/* training mode: batch mean and biased variance (two passes, double); save_mean / save_invstd get the mean and
 * 1/sqrt(var + eps) per channel; run_mean / run_var (both or neither NULL) updated with PyTorch's momentum and
 * the unbiased variance */
DP_CU_TR_API disopt_status dp_cu_tr_bn_fwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                 const float *gamma, const float *beta, double eps,
                                                 double momentum, float *run_mean, float *run_var,
                                                 float *save_mean, float *save_invstd, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_bn_bwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                 const float *dy, const float *gamma, const float *save_mean,
                                                 const float *save_invstd, float *dx, float *dgamma,
                                                 float *dbeta);
DP_CU_TR_API disopt_status dp_cu_tr_bn_fwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                const float *gamma, const float *beta, const float *run_mean,
                                                const float *run_var, double eps, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_bn_bwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                const float *dy, const float *gamma, const float *run_mean,
                                                const float *run_var, double eps, float *dx, float *dgamma,
                                                float *dbeta);

/* Batch norm fused with the activation that follows it (act: DP_ACT_NONE, DP_ACT_RELU or DP_ACT_SWISH; sigmoid:
 * DISOPT_ERR_INVALID_ARGUMENT), for the trainer's BN + activation pairs whose BN output feeds only the
 * activation. Each gives the bits of the unfused calls, in fewer passes over memory:
 *  - fwd_train / fwd_eval: y = BN(x) and z = act(y) (bn_fwd_* then act_fwd), the statistics as bn_fwd_*; y is
 *    not stored when NULL; fwd_train keeps the per-channel alpha (gamma * invstd) and shift in save_coef
 *    (2 ch floats: alpha, then shift);
 *  - bwd_train: from dz (the gradient of z), x and save_coef (y = x * alpha + shift recomputed: the forward's
 *    bits): dx, dgamma, dbeta += what act_bwd into a zeroed dy and then bn_bwd_train would add, without
 *    materialising dy or reading y; dx_fresh: dx is written as if it had been zeroed (not read), and may then be
 *    dz's own memory (each element of dz is read before its dx is written, by the same thread). */
DP_CU_TR_API disopt_status dp_cu_tr_bn_act_fwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                     const float *gamma, const float *beta, double eps,
                                                     double momentum, float *run_mean, float *run_var,
                                                     float *save_mean, float *save_invstd, float *save_coef,
                                                     dp_act act, float *y, float *z);
DP_CU_TR_API disopt_status dp_cu_tr_bn_act_fwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                    const float *gamma, const float *beta, const float *run_mean,
                                                    const float *run_var, double eps, dp_act act, float *y, float *z);
DP_CU_TR_API disopt_status dp_cu_tr_bn_act_bwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                     const float *save_coef, const float *dz, const float *gamma,
                                                     const float *save_mean, const float *save_invstd, dp_act act,
                                                     float *dx, int dx_fresh, float *dgamma, float *dbeta);

/* ---------------------------------------------------------------- element-wise and channel ops */
DP_CU_TR_API disopt_status dp_cu_tr_act_fwd(dp_cu_tr_ctx *c, dp_act a, size_t count, const float *x, float *y);
/* dx += dy * act'(x); reads x for ReLU and swish, y for sigmoid (the other may be NULL) */
DP_CU_TR_API disopt_status dp_cu_tr_act_bwd(dp_cu_tr_ctx *c, dp_act a, size_t count, const float *x,
                                            const float *y, const float *dy, float *dx);
DP_CU_TR_API disopt_status dp_cu_tr_gap_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_gap_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *dy, float *dx);
DP_CU_TR_API disopt_status dp_cu_tr_broadcast_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                  float *y);
DP_CU_TR_API disopt_status dp_cu_tr_broadcast_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *dy,
                                                  float *dx);
DP_CU_TR_API disopt_status dp_cu_tr_scale_ch_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                 const float *g, float *y);
/* dx, dg may be NULL */
DP_CU_TR_API disopt_status dp_cu_tr_scale_ch_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                 const float *g, const float *dy, float *dx, float *dg);
DP_CU_TR_API disopt_status dp_cu_tr_scse_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                             const float *cg, const float *sg, float *y);
/* dx, dcg, dsg may be NULL */
DP_CU_TR_API disopt_status dp_cu_tr_scse_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                             const float *cg, const float *sg, const float *dy, float *dx,
                                             float *dcg, float *dsg);
DP_CU_TR_API disopt_status dp_cu_tr_add_fwd(dp_cu_tr_ctx *c, size_t count, const float *a, const float *b,
                                            float *y);
/* da, db may be NULL */
DP_CU_TR_API disopt_status dp_cu_tr_add_bwd(dp_cu_tr_ctx *c, size_t count, const float *dy, float *da, float *db);
/* channel concat of k inputs (cs, xs: host arrays of k channel counts / device pointers); split is its
 * backward: dxs[i] += its slice of dy (dxs[i] may be NULL) */
DP_CU_TR_API disopt_status dp_cu_tr_concat_fwd(dp_cu_tr_ctx *c, int n, size_t hw, int k, const int *cs,
                                               const float *const *xs, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_concat_bwd(dp_cu_tr_ctx *c, int n, size_t hw, int k, const int *cs,
                                               const float *dy, float *const *dxs);
/* bilinear, align_corners=True, integer factor f; the backward gathers (no atomics): deterministic */
DP_CU_TR_API disopt_status dp_cu_tr_upsample_fwd(dp_cu_tr_ctx *c, int n, int ch, int h, int w, int f,
                                                 const float *x, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_upsample_bwd(dp_cu_tr_ctx *c, int n, int ch, int h, int w, int f,
                                                 const float *dy, float *dx);
DP_CU_TR_API disopt_status dp_cu_tr_softmax_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                                float *y);
DP_CU_TR_API disopt_status dp_cu_tr_softmax_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *y,
                                                const float *dy, float *dx);

/* ---------------------------------------------------------------- dropout, drop-connect */
/* The masks of dp_tr_dropout_mask / dp_tr_drop_connect_mask from the same Philox stream, computed on the
 * device (mask: device bytes): bitwise equal to the CPU's; r->counter advances as on the CPU. */
DP_CU_TR_API disopt_status dp_cu_tr_dropout_mask(dp_cu_tr_ctx *c, dp_rng *r, double p, size_t count,
                                                 uint8_t *mask);
DP_CU_TR_API disopt_status dp_cu_tr_drop_connect_mask(dp_cu_tr_ctx *c, dp_rng *r, double rate, int n,
                                                      uint8_t *mask);
DP_CU_TR_API disopt_status dp_cu_tr_dropout_fwd(dp_cu_tr_ctx *c, size_t count, double p, const uint8_t *mask,
                                                const float *x, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_dropout_bwd(dp_cu_tr_ctx *c, size_t count, double p, const uint8_t *mask,
                                                const float *dy, float *dx);
DP_CU_TR_API disopt_status dp_cu_tr_drop_connect_fwd(dp_cu_tr_ctx *c, int n, size_t per, double rate,
                                                     const uint8_t *mask, const float *x, float *y);
DP_CU_TR_API disopt_status dp_cu_tr_drop_connect_bwd(dp_cu_tr_ctx *c, int n, size_t per, double rate,
                                                     const uint8_t *mask, const float *dy, float *dx);

/* ---------------------------------------------------------------- losses (loss.h semantics) */
/* Logits, gradients, targets (int32) and validity masks (bytes, NULL: all valid) are device memory; the loss
 * values (double, may be NULL) are written to the HOST: these functions synchronise the stream. A valid
 * pixel's target outside [0, C) gives DISOPT_ERR_INPUT (found after the fact: the gradient is then undefined).
 * Term functions add gscale * gradient; stage1/stage2 overwrite their gradient outputs. */
DP_CU_TR_API disopt_status dp_cu_tr_loss_seg(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, const int32_t *target,
                                             const uint8_t *valid, double w_ce, double w_dice, double *ce,
                                             double *dice, float *gx, double gscale);
DP_CU_TR_API disopt_status dp_cu_tr_loss_ce(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, const int32_t *target,
                                            const uint8_t *valid, double *loss, float *gx, double gscale);
DP_CU_TR_API disopt_status dp_cu_tr_loss_dice(dp_cu_tr_ctx *c, dp_lshape sh, const float *x,
                                              const int32_t *target, const uint8_t *valid, double *loss, float *gx,
                                              double gscale);
DP_CU_TR_API disopt_status dp_cu_tr_loss_kd(dp_cu_tr_ctx *c, dp_lshape sh, const float *s, const float *t,
                                            const uint8_t *valid, double *loss, float *gs, float *gt,
                                            double gscale);
DP_CU_TR_API disopt_status dp_cu_tr_loss_mse(dp_cu_tr_ctx *c, const float *a, const float *b, size_t n,
                                             double *loss, float *ga, float *gb, double gscale);
/* labels (device) = first maximal class per pixel (NaN is the maximum, as torch.argmax); queued, no sync */
DP_CU_TR_API disopt_status dp_cu_tr_loss_argmax(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, int32_t *labels);
DP_CU_TR_API disopt_status dp_cu_tr_loss_stage1(dp_cu_tr_ctx *c, dp_lshape sh, const float *logits,
                                                const int32_t *target, const uint8_t *valid, dp_loss_weights w,
                                                dp_stage1_terms *terms, float *glogits);
/* in / grad: the CPU structs, with device pointers in them */
DP_CU_TR_API disopt_status dp_cu_tr_loss_stage2(dp_cu_tr_ctx *c, const dp_stage2_in_f32 *in,
                                                dp_stage2_terms *terms, const dp_stage2_grad_f32 *grad);

/* ---------------------------------------------------------------- optimizer */
/* One update of dp_optim_update_f32's semantics (SGD momentum/Nesterov + weight decay, AdamW), bitwise the
 * CPU's arithmetic (every operation rounded as the CPU rounds it, no contraction), as ONE kernel over the
 * flat arena: params, grads, state (dp_optim_state_count(cfg) arrays of n floats) are device memory; cfg and
 * the segment table are host values (the table is copied to the scratch arena). */
DP_CU_TR_API disopt_status dp_cu_tr_optim_update(dp_cu_tr_ctx *c, const dp_optim_config *cfg,
                                                 const dp_optim_segment *seg, int n_seg, size_t n, int64_t t,
                                                 double lr, float *params, const float *grads, float *state);

/* ---------------------------------------------------------------- data parallelism (train_nccl.c) */
/* One NCCL communicator per device for n ranks driven by this process (ncclCommInitAll; NCCL is dlopened
 * here, DISOPT_ERR_UNSUPPORTED when it is missing): out[i] is rank i on devices[i] (distinct devices). */
typedef struct dp_cu_tr_comm dp_cu_tr_comm;
DP_CU_TR_API disopt_status dp_cu_tr_comm_init_all(const dp_cuda_host *host, int n, const int *devices,
                                                  dp_cu_tr_comm **out);
DP_CU_TR_API void dp_cu_tr_comm_destroy(dp_cu_tr_comm *c);
/* x[0..n) = the mean over the ranks of their x, in place, queued on c's stream (c on the rank's device);
 * every rank calls it with the same n, in the same order as its other collectives */
DP_CU_TR_API disopt_status dp_cu_tr_allreduce_avg(dp_cu_tr_ctx *c, dp_cu_tr_comm *comm, float *x, size_t n);
/* x[0..n) = rank root's x on every rank, in place, queued on c's stream */
DP_CU_TR_API disopt_status dp_cu_tr_broadcast(dp_cu_tr_ctx *c, dp_cu_tr_comm *comm, float *x, size_t n, int root);

#ifdef __cplusplus
}
#endif
#endif
