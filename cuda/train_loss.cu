// train_loss.cu - the training's random masks (Philox4x32-10, the stream layout of core/train/rng.h), losses
// (core/train/loss.inc: CE + smp-0.2.0 Dice from logits, pixel-wise KD, feature MSE, argmax) and the optimizer
// update (core/train/optim.inc: SGD momentum/Nesterov + weight decay, AdamW) as one kernel over a flat arena.
//
// Conventions (see train_kernels.h and train_kernels.cu): launchers are extern "C", launch on the given stream
// and return cudaGetLastError(); the kernels are grid-stride loops over __host__ __device__ bodies, which the
// DPTK_HOST_CHECK build runs on the host instead (tests/test_cuda_train_host.c). Masks are bitwise the CPU's
// (the same integer arithmetic, the same float comparisons). The losses do their pixel math in double as the
// CPU does; their sums are per-block partials (a fixed grid for a given size, a shared-memory tree per block;
// on the host: everything in block 0, in pixel order) that the caller adds in block order: deterministic. The
// optimizer repeats optim.inc's float operations one by one, each rounded on its own: bitwise the CPU's.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "train_kernels.h"
#include "train/rng.h"

namespace {

#include "train_launch.h"

constexpr int LOSS_MAX_BLOCKS = 512;

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */

__device__ inline double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

#endif
// rmul / radd / rdiv (train_launch.h); the square root rounded on its own:
__host__ __device__ inline float o_sqrt(float a) {
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(a);
#else
    return (float)sqrt((double)a); /* optim.inc's (T)sqrt(vi): correctly rounded either way */
#endif
}

// ------------------------------------------------------------------ Philox4x32-10 (rng.c)
// the CPU's Philox (rng.h, one definition for both)
__host__ __device__ inline void philox_block(uint64_t seed, uint64_t b, uint32_t out[4]) {
    dp_rng_block_inline(seed, b, out);
}

// dp_rng_u01: (w >> 8) * 2^-24, exact in float (a product by a power of two: no rounding anywhere)
__host__ __device__ inline float u01(uint32_t w) { return dp_rng_u01(w); }

// dropout mask values 4b .. 4b + 3 (block b of the draw)
__host__ __device__ inline void dropout_mask_block(size_t b, uint64_t seed, uint64_t counter, double keep, size_t n,
                                                   uint8_t *mask) {
    uint32_t w[4];
    philox_block(seed, counter + b, w);
    for (int q = 0; q < 4; q++) {
        const size_t i = b * 4 + (size_t)q;
        if (i < n) mask[i] = (double)u01(w[q]) < keep;
    }
}

// drop-connect mask value i: floorf(keep + u) in float
__host__ __device__ inline uint8_t drop_connect_one(uint64_t seed, uint64_t counter, float keep, size_t i) {
    uint32_t w[4];
    philox_block(seed, counter + i / 4, w);
    return (uint8_t)floorf(radd(keep, u01(w[i % 4])));
}

__host__ __device__ inline void e_drop_connect_mask(size_t i, uint64_t seed, uint64_t counter, float keep,
                                                    uint8_t *mask) {
    mask[i] = drop_connect_one(seed, counter, keep, i);
}

// ------------------------------------------------------------------ losses
// The per-pixel bodies are __host__ __device__ (so that they can be checked on the host too); the kernels run
// them over a grid-stride loop and reduce the sums per block.

// log-softmax of the C values at x[k * P] in double (loss.inc's lsm_px)
__host__ __device__ inline void lsm_px(const float *x, size_t P, int C, double *ls) {
    double m = (double)x[0];
    for (int k = 1; k < C; k++) {
        const double v = (double)x[(size_t)k * P];
        if (v > m) m = v;
    }
    double s = 0.0;
    for (int k = 0; k < C; k++) s += exp((double)x[(size_t)k * P] - m);
    const double lz = m + log(s);
    for (int k = 0; k < C; k++) ls[k] = (double)x[(size_t)k * P] - lz;
}

// seg pass 1 at one pixel (logits at xp[k * P]) of label y in [0, C): st[0] += -log p_y, st[1] += 1 (valid),
// I[y] += p_y, S[k] += p_k, Y[y] += 1 with I = st + 3, S = st + 3 + C, Y = st + 3 + 2C (the layout of
// dptk_seg_stats' partials; st[2] counts the bad targets, outside this function)
__host__ __device__ inline void seg_px_stats(const float *xp, size_t P, int C, int y, double *st) {
    double ls[DPTK_MAX_C];
    lsm_px(xp, P, C, ls);
    st[0] -= ls[y];
    for (int k = 0; k < C; k++) st[3 + C + k] += exp(ls[k]);
    st[3 + y] += exp(ls[y]);
    st[3 + 2 * C + y] += 1.0;
    st[1] += 1.0;
}

// seg pass 2 at pixel p of one image (logits xn, gradient gn, C x P each) of label y
__host__ __device__ inline void seg_px_grad(const float *xn, float *gn, size_t P, int C, size_t p, int y,
                                            const dptk_seg_coef &cf) {
    double ls[DPTK_MAX_C], pk[DPTK_MAX_C], g[DPTK_MAX_C];
    lsm_px(xn + p, P, C, ls);
    double dot = 0.0;
    for (int k = 0; k < C; k++) {
        pk[k] = exp(ls[k]);
        g[k] = cf.B[k] + (k == y ? cf.A[k] : 0.0);
        dot += pk[k] * g[k];
    }
    for (int k = 0; k < C; k++) {
        const double d = pk[k] * (g[k] - dot) + cf.a * (pk[k] - (k == y ? 1.0 : 0.0));
        gn[(size_t)k * P + p] = (float)((double)gn[(size_t)k * P + p] + d);
    }
}

// kd at one pixel (offset o of the first class in s, t, gs, gt): returns the pixel's loss, adds the gradients
__host__ __device__ inline double kd_px(const float *s, const float *t, size_t P, int C, size_t o, double gsc,
                                        float *gs, float *gt) {
    double lss[DPTK_MAX_C], lst[DPTK_MAX_C], qt[DPTK_MAX_C];
    lsm_px(s + o, P, C, lss);
    lsm_px(t + o, P, C, lst);
    double px = 0.0, qsum = 0.0;
    for (int k = 0; k < C; k++) {
        qt[k] = exp(lst[k]);
        qsum += qt[k];
        px -= qt[k] * lss[k];
    }
    for (int k = 0; k < C; k++) { // px = -sum_k q_k ls_k: d/ds_k = p_k * sum(q) - q_k; d/dt_k = -q_k * (ls_k + px)
        const size_t i = o + (size_t)k * P;
        if (gs) gs[i] = (float)((double)gs[i] + gsc * (exp(lss[k]) * qsum - qt[k]));
        if (gt) gt[i] = (float)((double)gt[i] - gsc * qt[k] * (lss[k] + px));
    }
    return px;
}

// seg pass 1 at pixel q: its statistics into st (st[2]: valid pixels with a target outside [0, C))
__host__ __device__ inline void e_seg_stats(size_t q, int C, size_t P, const float *x, const int32_t *target,
                                            const uint8_t *valid, double *st) {
    if (valid && !valid[q]) return;
    const int32_t y = target[q];
    if (y < 0 || y >= C) {
        st[2] += 1.0;
        return;
    }
    seg_px_stats(x + (q / P) * (size_t)C * P + q % P, P, C, y, st);
}

__host__ __device__ inline void e_seg_grad(size_t q, int C, size_t P, const float *x, const int32_t *target,
                                           const uint8_t *valid, const dptk_seg_coef &cf, float *gx) {
    if (valid && !valid[q]) return;
    const int32_t y = target[q];
    if (y < 0 || y >= C) return; // (refused by the caller before this pass)
    const size_t n = q / P;
    seg_px_grad(x + n * (size_t)C * P, gx + n * (size_t)C * P, P, C, q % P, y, cf);
}

__host__ __device__ inline double e_kd(size_t q, int C, size_t P, const float *s, const float *t, const uint8_t *valid,
                                       double gsc, float *gs, float *gt) {
    if (valid && !valid[q]) return 0.0;
    return kd_px(s, t, P, C, (q / P) * (size_t)C * P + q % P, gsc, gs, gt);
}

__host__ __device__ inline double e_mse(size_t i, const float *a, const float *b, double k, float *ga, float *gb) {
    const double d = (double)a[i] - (double)b[i];
    if (ga) ga[i] = (float)((double)ga[i] + k * d);
    if (gb) gb[i] = (float)((double)gb[i] - k * d);
    return d * d;
}

__host__ __device__ inline void e_argmax(size_t q, int C, size_t P, const float *x, int32_t *labels) {
    const float *xn = x + (q / P) * (size_t)C * P;
    const size_t p = q % P;
    int best = 0;
    float bv = xn[p];
    for (int k = 1; k < C; k++) {
        const float v = xn[(size_t)k * P + p];
        if (v > bv || (isnan(v) && !isnan(bv))) { // torch.argmax: NaN is the maximum
            bv = v;
            best = k;
        }
    }
    labels[q] = best;
}

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */
__global__ void k_seg_stats(int C, size_t P, size_t NP, const float *x, const int32_t *target, const uint8_t *valid,
                            double *part) {
    __shared__ double sh[TPB];
    double st[3 + 3 * DPTK_MAX_C];
    const int nvals = 3 + 3 * C;
    for (int v = 0; v < nvals; v++) st[v] = 0.0;
    GRID_LOOP(q, NP) e_seg_stats(q, C, P, x, target, valid, st);
    for (int v = 0; v < nvals; v++) {
        const double r = block_sum(st[v], sh);
        if (threadIdx.x == 0) part[(size_t)blockIdx.x * nvals + v] = r;
    }
}

__global__ void k_kd(int C, size_t P, size_t NP, const float *s, const float *t, const uint8_t *valid, double gsc,
                     float *gs, float *gt, double *part) {
    __shared__ double sh[TPB];
    double sum = 0.0;
    GRID_LOOP(q, NP) sum += e_kd(q, C, P, s, t, valid, gsc, gs, gt);
    const double r = block_sum(sum, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = r;
}

__global__ void k_mse(size_t n, const float *a, const float *b, double k, float *ga, float *gb, double *part) {
    __shared__ double sh[TPB];
    double sum = 0.0;
    GRID_LOOP(i, n) sum += e_mse(i, a, b, k, ga, gb);
    const double r = block_sum(sum, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = r;
}

#endif
// ------------------------------------------------------------------ optimizer (optim.inc, element by element)
// element t of the segments' concatenation: the last segment starting at or before t (empty segments are not
// in the table), then optim.inc's update of that arena element
__host__ __device__ inline void optim_one(size_t t, const dptk_optim_args &a, const dptk_seg *seg, int n_seg,
                                          size_t n, float *p, const float *g, float *st) {
    int lo = 0, hi = n_seg - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (seg[mid].start <= t) lo = mid;
        else hi = mid - 1;
    }
    const size_t i = seg[lo].offset + (t - seg[lo].start);
    const int dec = seg[lo].decay ? 1 : 0;
    if (!a.adamw) {
        float d = g[i];
        if (a.use_wd[dec]) d = radd(d, rmul(a.wd[dec], p[i]));
        if (a.use_mom) {
            float b;
            if (a.first) b = d;
            else b = radd(rmul(st[i], a.mom), rmul(a.damp1, d));
            st[i] = b;
            d = a.nesterov ? radd(d, rmul(a.mom, b)) : b;
        }
        p[i] = radd(p[i], rmul(a.neg_lr, d));
    } else {
        float *m = st, *v = st + n;
        const float gi = g[i];
        const float pi = rmul(p[i], a.shrink[dec]);
        const float mi = radd(rmul(m[i], a.b1), rmul(a.one_b1, gi));
        const float vi = radd(rmul(v[i], a.b2), rmul(rmul(a.one_b2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        const float denom = radd(rdiv(o_sqrt(vi), a.bc2_sqrt), a.eps);
        p[i] = radd(pi, rdiv(rmul(a.neg_step, mi), denom));
    }
}

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */
// the element-wise kernels: grid-stride loops over the bodies (K: train_launch.h)

K(dropout_mask_block, (uint64_t seed, uint64_t counter, double keep, size_t n, uint8_t *mask),
  (seed, counter, keep, n, mask))
K(e_drop_connect_mask, (uint64_t seed, uint64_t counter, float keep, uint8_t *mask), (seed, counter, keep, mask))
K(e_seg_grad, (int C, size_t P, const float *x, const int32_t *target, const uint8_t *valid, dptk_seg_coef cf,
               float *gx),
  (C, P, x, target, valid, cf, gx))
K(e_argmax, (int C, size_t P, const float *x, int32_t *labels), (C, P, x, labels))
K(optim_one, (dptk_optim_args a, const dptk_seg *seg, int n_seg, size_t n, float *p, const float *g, float *st),
  (a, seg, n_seg, n, p, g, st))

#endif
} // namespace

// RUN: train_launch.h

extern "C" {

int dptk_dropout_mask(void *stream, uint64_t seed, uint64_t counter, double keep, size_t n, uint8_t *mask) {
    RUN((n + 3) / 4, dropout_mask_block, seed, counter, keep, n, mask);
}

int dptk_drop_connect_mask(void *stream, uint64_t seed, uint64_t counter, float keep, int n, uint8_t *mask) {
    RUN((size_t)(n > 0 ? n : 0), e_drop_connect_mask, seed, counter, keep, mask);
}

int dptk_loss_blocks(size_t np) {
    const size_t b = (np + TPB - 1) / TPB;
    return b == 0 ? 1 : b > (size_t)LOSS_MAX_BLOCKS ? LOSS_MAX_BLOCKS : (int)b;
}

int dptk_seg_stats(void *stream, int N, int C, size_t P, const float *x, const int32_t *target,
                   const uint8_t *valid, double *part) {
    if (C <= 0 || C > DPTK_MAX_C) return (int)cudaErrorInvalidValue;
    const size_t NP = (size_t)N * P;
    const int nb = dptk_loss_blocks(NP), nv = 3 + 3 * C;
#ifdef DPTK_HOST_CHECK /* every pixel in block 0, in order; the other blocks' partials 0 */
    (void)stream;
    for (size_t v = 0; v < (size_t)nb * nv; v++) part[v] = 0.0;
    for (size_t q = 0; q < NP; q++) e_seg_stats(q, C, P, x, target, valid, part);
    return 0;
#else
    (void)nv;
    k_seg_stats<<<nb, TPB, 0, (cudaStream_t)stream>>>(C, P, NP, x, target, valid, part);
    return (int)cudaGetLastError();
#endif
}

void dptk_seg_finish(const double *tot, int C, double w_ce, double w_dice, double gscale, double dice_eps,
                     dptk_seg_coef *cf, double *ce, double *dice) {
    const double ce_sum = tot[0], nvalid = tot[1];
    const double *I = tot + 3, *S = tot + 3 + C, *Y = tot + 3 + 2 * C;
    memset(cf, 0, sizeof *cf);
    double dice_sum = 0.0;
    for (int k = 0; k < C; k++) { /* loss.inc's dice per class */
        const double D = S[k] + Y[k];
        const int clamped = !(D >= dice_eps);
        const double den = clamped ? dice_eps : D;
        const double present = Y[k] > 0.0 ? 1.0 : 0.0;
        dice_sum += present * (1.0 - 2.0 * I[k] / den);
        /* d(loss_k / C)/dp = -(2 present / C) * (y * den - I * dD/dp) / den^2 */
        const double gk = gscale * w_dice * 2.0 * present / (double)C;
        cf->A[k] = -gk / den;
        cf->B[k] = clamped ? 0.0 : gk * I[k] / (den * den);
    }
    cf->a = nvalid > 0 ? gscale * w_ce / nvalid : 0.0;
    *ce = nvalid > 0 ? ce_sum / nvalid : 0.0;
    *dice = dice_sum / (double)C;
}

int dptk_seg_grad(void *stream, int N, int C, size_t P, const float *x, const int32_t *target, const uint8_t *valid,
                  const dptk_seg_coef *coef, float *gx) {
    if (C <= 0 || C > DPTK_MAX_C) return (int)cudaErrorInvalidValue;
    RUN((size_t)N * P, e_seg_grad, C, P, x, target, valid, *coef, gx);
}

int dptk_kd(void *stream, int N, int C, size_t P, const float *s, const float *t, const uint8_t *valid, double gsc,
            float *gs, float *gt, double *part) {
    if (C <= 0 || C > DPTK_MAX_C) return (int)cudaErrorInvalidValue;
    const size_t NP = (size_t)N * P;
    const int nb = dptk_loss_blocks(NP);
#ifdef DPTK_HOST_CHECK
    (void)stream;
    for (int b = 0; b < nb; b++) part[b] = 0.0;
    for (size_t q = 0; q < NP; q++) part[0] += e_kd(q, C, P, s, t, valid, gsc, gs, gt);
    return 0;
#else
    k_kd<<<nb, TPB, 0, (cudaStream_t)stream>>>(C, P, NP, s, t, valid, gsc, gs, gt, part);
    return (int)cudaGetLastError();
#endif
}

int dptk_mse(void *stream, size_t n, const float *a, const float *b, double k, float *ga, float *gb, double *part) {
    const int nb = dptk_loss_blocks(n);
#ifdef DPTK_HOST_CHECK
    (void)stream;
    for (int q = 0; q < nb; q++) part[q] = 0.0;
    for (size_t i = 0; i < n; i++) part[0] += e_mse(i, a, b, k, ga, gb);
    return 0;
#else
    k_mse<<<nb, TPB, 0, (cudaStream_t)stream>>>(n, a, b, k, ga, gb, part);
    return (int)cudaGetLastError();
#endif
}

int dptk_argmax(void *stream, int N, int C, size_t P, const float *x, int32_t *labels) {
    RUN((size_t)N * P, e_argmax, C, P, x, labels);
}

void dptk_optim_args_make(int adamw, double lr, double weight_decay, double momentum, double dampening, int nesterov,
                          double beta1, double beta2, double eps, int64_t t, dptk_optim_args *a) {
    memset(a, 0, sizeof *a);
    if (!adamw) { /* optim.inc's sgd_range scalars */
        a->adamw = 0;
        a->first = t == 1;
        a->use_mom = momentum != 0.0;
        a->nesterov = nesterov != 0;
        a->use_wd[0] = 0;
        a->use_wd[1] = weight_decay != 0.0;
        a->wd[0] = 0.0f;
        a->wd[1] = (float)weight_decay;
        a->mom = (float)momentum;
        a->damp1 = (float)(1.0 - dampening);
        a->neg_lr = (float)(-lr);
    } else { /* adamw_range's */
        a->adamw = 1;
        const double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
        a->shrink[0] = (float)(1.0 - lr * 0.0);
        a->shrink[1] = (float)(1.0 - lr * weight_decay);
        a->b1 = (float)beta1;
        a->b2 = (float)beta2;
        a->one_b1 = (float)(1.0 - beta1);
        a->one_b2 = (float)(1.0 - beta2);
        a->neg_step = (float)(-(lr / bc1));
        a->bc2_sqrt = (float)sqrt(bc2);
        a->eps = (float)eps;
    }
}

int dptk_optim(void *stream, const dptk_optim_args *a, const dptk_seg *seg, int n_seg, size_t total, size_t n,
               float *params, const float *grads, float *state) {
    if (n_seg <= 0) return 0;
    RUN(total, optim_one, *a, seg, n_seg, n, params, grads, state);
}

#ifdef DPTK_HOST_CHECK
void dptk_host_philox(uint64_t seed, uint64_t b, uint32_t out[4]) { philox_block(seed, b, out); }
#endif

} // extern "C"
