/* train_kernels.h - launchers of the training kernels (cuda/train_kernels.cu: ops, cuda/train_loss.cu: masks,
 * losses, optimizer), called by cuda/train_ops.c only. Conventions of kernels.h: each launcher is C ABI, takes
 * the context's stream (a cudaStream_t as void *), launches on it and returns cudaGetLastError() as an int
 * (0 = success); the caller turns it into a status. Tensors: float32, NCHW, device memory. Index math is size_t.
 * Element-wise arithmetic repeats the CPU kernel's operations in the CPU's order with every float operation
 * rounded on its own (__fmul_rn, __fadd_rn, ...: no contraction into FMAs), so that element-wise results are
 * the CPU's bit for bit; reductions accumulate in double in a fixed order for a given shape. */
#ifndef DISOPT_CUDA_TRAIN_KERNELS_H
#define DISOPT_CUDA_TRAIN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- per-channel reductions */
/* A reduction over the N x HW elements of each of C channels of an N x C x HW tensor (element m of channel
 * ch at ((m / HW) * C + ch) * HW + m % HW): dptk_red_parts(N, HW) blocks per channel each write NV double
 * partial sums to part[(ch * parts + piece) * NV + v]; the finishing kernels add a channel's parts in order.
 * A plane reduction (GAP and friends) is the same with N = 1 and C = images * channels. */
enum {
    DPTK_RED_SUM = 0,   /* NV 1: a */
    DPTK_RED_DOT = 1,   /* NV 1: (double)(a * b), the float product (the CPU's (double)(dY * X)) */
    DPTK_RED_SQDEV = 2, /* NV 1: ((double)a - mean[ch])^2, mean: double[C] */
    DPTK_RED_BN = 3     /* NV 2: b, (double)b * ((double)a - mean[ch]), mean: float[C] */
};
int dptk_red_parts(int N, size_t HW);
size_t dptk_red_bytes(int N, int C, size_t HW); /* of part for NV = 2 (enough for every kind) */
int dptk_chan_reduce(void *stream, int kind, double *part, int N, int C, size_t HW, const float *a, const float *b,
                     const void *mean);
/* NV 1 partials of C channels: out[ch] = (float)(sum / div) (accumulate 0) or out[ch] += (float)sum */
int dptk_fin_sum(void *stream, const double *part, int C, int parts, float *out, int accumulate, double div);

/* ---------------------------------------------------------------- batch norm */
/* mean[ch] = sum / M (double) */
int dptk_bn_fin_mean(void *stream, const double *part, int C, int parts, size_t M, double *mean);
/* from the squared deviations: save_mean, save_invstd, the running statistics (may be NULL), and the
 * affine coefficients y = x * alpha + shift */
int dptk_bn_fin_var(void *stream, const double *part, int C, int parts, size_t M, const double *mean,
                    const float *gamma, const float *beta, double eps, double momentum, float *run_mean,
                    float *run_var, float *save_mean, float *save_invstd, float *alpha, float *shift);
/* eval mode: alpha = gamma / sqrt(run_var + eps), shift = beta - run_mean * alpha (in double, as the CPU);
 * shift may be NULL (then beta is not read) */
int dptk_bn_eval_coef(void *stream, int C, const float *gamma, const float *beta, const float *run_mean,
                      const float *run_var, double eps, float *alpha, float *shift);
/* y = x * alpha[ch] + shift[ch] */
int dptk_bn_apply(void *stream, float *y, const float *x, const float *alpha, const float *shift, int N, int C,
                  size_t HW);
/* training backward from the (sum dy, sum dy (x - mean)) partials: dgamma, dbeta (may be NULL) += ...;
 * coef[4 * C]: tm, k, gm, wi per channel for dptk_bn_bwd_apply */
int dptk_bn_bwd_fin(void *stream, const double *part, int C, int parts, size_t M, const float *save_mean,
                    const float *save_invstd, const float *gamma, float *dgamma, float *dbeta, float *coef);
/* dx += (dy - gm - (x - tm) * k) * wi */
int dptk_bn_bwd_apply(void *stream, float *dx, const float *x, const float *dy, const float *coef, int N, int C,
                      size_t HW);
/* Batch norm with the activation that follows it (act: 0 none, 1 ReLU, 2 swish; not sigmoid), for the trainer's
 * fused BN + activation pairs. Each gives the bits of the unfused kernels:
 *  - dptk_bn_act_apply: y = x * alpha + shift (not stored when y is NULL) and z = act(y) (dptk_bn_apply, then
 *    dptk_act_fwd on y), one pass;
 *  - dptk_bn_act_reduce: the DPTK_RED_BN partials of (x, g) with g = the gradient that dptk_act_bwd adds into a
 *    zeroed buffer from dz and y (0 + dz * act'(y)), without that buffer, y recomputed from x and the forward's
 *    alpha and shift (the same two rounded operations, so the same bits as the stored y);
 *  - dptk_bn_act_bwd_apply: dx += (g - gm - (x - tm) * k) * wi with the same g (fresh: dx = 0 + ..., dx not read;
 *    then dx may be dz's memory). */
int dptk_bn_act_apply(void *stream, int act, float *y, float *z, const float *x, const float *alpha,
                      const float *shift, int N, int C, size_t HW);
int dptk_bn_act_reduce(void *stream, int act, double *part, int N, int C, size_t HW, const float *x,
                       const float *alpha, const float *shift, const float *dz, const float *mean);
int dptk_bn_act_bwd_apply(void *stream, int act, float *dx, int fresh, const float *x, const float *alpha,
                          const float *shift, const float *dz, const float *coef, int N, int C, size_t HW);
/* eval backward: dgamma += (float)(dot * invstd), dbeta += (float)sdy, invstd = 1 / sqrt(run_var + eps) */
int dptk_bn_eval_bwd_fin(void *stream, const double *part, int C, int parts, const float *run_var, double eps,
                         float *dgamma, float *dbeta);

/* ---------------------------------------------------------------- element-wise */
int dptk_fill(void *stream, float *x, size_t n, float v);
/* y = x * g[(i / HW) % mod] (accumulate 0) or y += ... (accumulate 1) */
int dptk_mul_plane(void *stream, float *y, const float *x, const float *g, size_t count, size_t HW, size_t mod,
                   int accumulate);
/* dx[n, c, i, j] += dxp[n, c, i + pt, j + pl] (dxp: N x C x Hp x Wp) */
int dptk_crop_add(void *stream, float *dx, const float *dxp, int N, int C, int H, int W, int Hp, int Wp, int pt,
                  int pl);
int dptk_act_fwd(void *stream, int act, size_t n, const float *x, float *y);
int dptk_act_bwd(void *stream, int act, size_t n, const float *x, const float *y, const float *dy, float *dx);
/* dx[i] += (float)((double)dy[i / HW] / HW) */
int dptk_gap_bwd(void *stream, size_t count, size_t HW, const float *dy, float *dx);
/* y[i] = x[i / HW] */
int dptk_broadcast(void *stream, size_t count, size_t HW, const float *x, float *y);
int dptk_scse_fwd(void *stream, int N, int C, size_t HW, const float *x, const float *cg, const float *sg, float *y);
/* dx += dy * cg + dy * sg */
int dptk_scse_bwd_dx(void *stream, int N, int C, size_t HW, const float *cg, const float *sg, const float *dy,
                     float *dx);
/* dsg[n, i] += dy * x over the channels in order (float, as the CPU) */
int dptk_scse_bwd_dsg(void *stream, int N, int C, size_t HW, const float *x, const float *dy, float *dsg);
/* y = a + b */
int dptk_add(void *stream, size_t n, const float *a, const float *b, float *y);
/* dx += dy */
int dptk_acc(void *stream, size_t n, const float *dy, float *dx);
/* dx[i] += part[0][i] + part[1][i] + ... + part[count - 1][i] (parts n floats apart), added in that order, each
 * add rounded on its own */
int dptk_acc_parts(void *stream, size_t n, const float *part, int count, float *dx);
/* y[i] = x[i] as bfloat16 bits, rounded to nearest even (__float2bfloat16_rn) */
int dptk_to_bf16(void *stream, size_t n, const float *x, uint16_t *y);
/* concat: y[n, c0 + c] = x[n, c] (x: N x Cx x HW, y: N x Cy x HW); split: dx[n, c] += dy[n, c0 + c] */
int dptk_concat_part(void *stream, int N, int Cx, int Cy, int c0, size_t HW, const float *x, float *y);
int dptk_split_part(void *stream, int N, int Cx, int Cy, int c0, size_t HW, const float *dy, float *dx);
/* bilinear align_corners=True over NC planes h x w -> (h f) x (w f); backward gathers (dx += ...) */
int dptk_upsample_fwd(void *stream, size_t NC, int h, int w, int f, const float *x, float *y);
int dptk_upsample_bwd(void *stream, size_t NC, int h, int w, int f, const float *dy, float *dx);
int dptk_softmax_fwd(void *stream, int N, int C, size_t HW, const float *x, float *y);
int dptk_softmax_bwd(void *stream, int N, int C, size_t HW, const float *y, const float *dy, float *dx);
/* y = x * mask * scale (accumulate 0) or y += ... */
int dptk_dropout(void *stream, size_t n, float scale, const uint8_t *mask, const float *x, float *y, int accumulate);
/* forward y = x / keep * mask[i / per]; backward (accumulate 1) y += x * mask[i / per] / keep */
int dptk_drop_connect(void *stream, size_t n, size_t per, float keep, const uint8_t *mask, const float *x, float *y,
                      int accumulate);

/* ---------------------------------------------------------------- random masks (train_loss.cu) */
/* mask[i] = (double)u01(word i of the draw at block `counter` of stream `seed`) < keep */
int dptk_dropout_mask(void *stream, uint64_t seed, uint64_t counter, double keep, size_t n, uint8_t *mask);
/* mask[i] = floorf(keep + u01(word i)) in float */
int dptk_drop_connect_mask(void *stream, uint64_t seed, uint64_t counter, float keep, int n, uint8_t *mask);

/* ---------------------------------------------------------------- losses (train_loss.cu) */
#define DPTK_MAX_C 64
/* blocks of the loss kernels for NP pixels (or n elements): each writes its partial sums */
int dptk_loss_blocks(size_t np);
/* seg pass 1: per block, 3 + 3C doubles: ce_sum, nvalid, bad (valid pixels with a target outside [0, C)),
 * I[C], S[C], Y[C] */
int dptk_seg_stats(void *stream, int N, int C, size_t P, const float *x, const int32_t *target,
                   const uint8_t *valid, double *part);
typedef struct dptk_seg_coef {
    double a;                          /* gscale * w_ce / nvalid */
    double A[DPTK_MAX_C], B[DPTK_MAX_C]; /* dice gradient w.r.t. p_k: A[k] [k == y] + B[k] */
} dptk_seg_coef;
/* on the host: from the summed pass-1 statistics (tot: 3 + 3C values), loss.inc's ce, dice and the gradient
 * coefficients (cf->a is 0 without a valid pixel); dice_eps: DP_DICE_EPS */
void dptk_seg_finish(const double *tot, int C, double w_ce, double w_dice, double gscale, double dice_eps,
                     dptk_seg_coef *cf, double *ce, double *dice);
/* seg pass 2: gx += the ce + dice gradient of every valid pixel */
int dptk_seg_grad(void *stream, int N, int C, size_t P, const float *x, const int32_t *target, const uint8_t *valid,
                  const dptk_seg_coef *coef, float *gx);
/* kd: gradients (gs, gt may be NULL) += gsc * ..., part[block] = the block's sum of the pixel losses */
int dptk_kd(void *stream, int N, int C, size_t P, const float *s, const float *t, const uint8_t *valid, double gsc,
            float *gs, float *gt, double *part);
/* mse: ga += k d, gb -= k d (d = a - b; may be NULL), part[block] = the block's sum of d^2 */
int dptk_mse(void *stream, size_t n, const float *a, const float *b, double k, float *ga, float *gb, double *part);
int dptk_argmax(void *stream, int N, int C, size_t P, const float *x, int32_t *labels);

/* ---------------------------------------------------------------- depthwise conv backward (own kernels) */
/* A depthwise conv (groups = C = cin = cout): x N x C x H x W, y / dy N x C x OH x OW, weights C x kh x kw;
 * stride, dilation, top/left zero padding (bottom/right padding is implied by OH / OW). */
typedef struct dptk_dw_geo {
    int N, C, H, W, OH, OW, kh, kw, sh, sw, dh, dw, pt, pl;
} dptk_dw_geo;
/* y = conv(x, wt) + b (b may be NULL): each output sums its taps in (ki, kj) order, then the bias, each
 * operation rounded on its own: bitwise the CPU's */
int dptk_dw_fwd(void *stream, const dptk_dw_geo *g, const float *x, const float *wt, const float *b, float *y);
/* dx += conv_transpose(dy, wt): each dx element gathers its (oh, ki, kj) contributions in the CPU scatter's
 * order (grad_tmpl.h), each product and sum rounded on its own: bitwise the CPU's */
int dptk_dw_bwd_data(void *stream, const dptk_dw_geo *g, const float *dy, const float *wt, float *dx);
/* dw[c, ki, kj] += sum over (n, oh, ow) of x * dy, in double: dptk_dw_bwd_filter_parts(g) blocks per (c, tap)
 * write their partial sums to part (dptk_dw_bwd_filter_bytes(g)), a finishing pass adds them in order
 * (deterministic; the CPU's eight partial sums are another order: an ulp apart at most) */
int dptk_dw_bwd_filter_parts(const dptk_dw_geo *g);
size_t dptk_dw_bwd_filter_bytes(const dptk_dw_geo *g);
int dptk_dw_bwd_filter(void *stream, const dptk_dw_geo *g, double *part, const float *x, const float *dy, float *dw);

/* ---------------------------------------------------------------- 3x3 convs with few output channels */
/* A dense conv (groups 1) with 1..4 output channels, 3x3, stride 1, dilation 1 (the segmentation heads): x N x Cin x
 * H x W, y / dy N x Cout x OH x OW, weights Cout x Cin x 3 x 3; top / left zero padding pt, pl (bottom / right
 * implied by OH / OW). One thread per pixel for every output channel; float sums with each operation rounded on
 * its own, the input channels in order; the filter gradient in double per block of pixels, blocks in order. */
typedef struct dptk_sc_geo {
    int N, Cin, Cout, H, W, OH, OW, pt, pl;
} dptk_sc_geo;
/* whether the launchers below take g (Cout 1..4, 32-bit pixel indices) */
int dptk_sc_ok(const dptk_sc_geo *g);
/* y = conv(x, wt) + b (b may be NULL) */
int dptk_sc_fwd(void *stream, const dptk_sc_geo *g, const float *x, const float *wt, const float *b, float *y);
/* dx += conv_transpose(dy, wt) */
int dptk_sc_bwd_data(void *stream, const dptk_sc_geo *g, const float *dy, const float *wt, float *dx);
/* dw += sum over pixels of x * dy: part holds dptk_sc_bwd_filter_bytes(g) of partial sums */
int dptk_sc_bwd_filter_parts(const dptk_sc_geo *g);
size_t dptk_sc_bwd_filter_bytes(const dptk_sc_geo *g);
int dptk_sc_bwd_filter(void *stream, const dptk_sc_geo *g, double *part, const float *x, const float *dy, float *dw);

/* ---------------------------------------------------------------- optimizer (train_loss.cu) */
typedef struct dptk_seg {
    size_t offset, count, start; /* start: elements of the segments before this one */
    int decay;
} dptk_seg;
typedef struct dptk_optim_args {
    int adamw;                /* 0: SGD */
    int first, use_mom, nesterov, use_wd[2]; /* [decay flag] */
    float wd[2], mom, damp1, neg_lr;         /* SGD */
    float shrink[2], b1, b2, one_b1, one_b2, neg_step, bc2_sqrt, eps; /* AdamW */
} dptk_optim_args;
/* on the host: the update's float scalars, from the config (optim.inc's, computed in double as there) */
void dptk_optim_args_make(int adamw, double lr, double weight_decay, double momentum, double dampening, int nesterov,
                          double beta1, double beta2, double eps, int64_t t, dptk_optim_args *a);
/* one kernel over the total elements of the n_seg segments (device table, sorted by start) */
int dptk_optim(void *stream, const dptk_optim_args *a, const dptk_seg *seg, int n_seg, size_t total, size_t n,
               float *params, const float *grads, float *state);

/* ---------------------------------------------------------------- host twins */
/* Built with DPTK_HOST_CHECK (libdisopt_cuda_hostcheck, for tests/test_cuda_train_host.c), every launcher above
 * runs its kernel's __host__ __device__ body on the host instead, index by index in order, over HOST memory
 * (the stream is ignored); the reductions put all their sums in block 0 (the other blocks' partials are 0).
 * And one more entry: Philox block b of stream seed. */
void dptk_host_philox(uint64_t seed, uint64_t b, uint32_t out[4]);

#ifdef __cplusplus
}
#endif
#endif
