// train_kernels.cu - the training ops' own kernels (issue 5): per-channel reductions and batch norm, activations,
// GAP, broadcast, channel scale, SCSE, add, concat/split, bilinear upsampling, softmax, dropout, drop-connect;
// float32 only; the depthwise convs and the 3x3 convs with 1-4 output channels (the trainer's defaults since session
// 12: faster than cuDNN's, bench/RESULTS.md §7.6); cuDNN and cuBLAS do the other convolutions (train_ops.c); masks,
// losses and the optimizer are in train_loss.cu.
//
// Conventions (see train_kernels.h):
//  - every launcher is extern "C", takes the context's stream, launches, returns cudaGetLastError();
//  - each kernel is a thin grid-stride loop over a __host__ __device__ body (one element, one channel, one pixel):
//    built with DPTK_HOST_CHECK (libdisopt_cuda_hostcheck), the same launchers run those bodies on the host, in
//    index order, over host memory, so that tests/test_cuda_train_host.c checks them against the CPU kernels
//    without a device;
//  - element-wise math repeats the CPU kernel's (core/train/grad_tmpl.h) operations in its order, each float
//    operation rounded on its own (rmul and friends: __fmul_rn on the device, where nvcc would otherwise contract
//    a * b + c into an FMA, which the CPU build, ISO C without -ffp-contract, never does; a plain operation on the
//    host, compiled with -ffp-contract=off); exp is expf (<= 2 ulp on the device, glibc's is correctly rounded:
//    sigmoid, swish and softmax may differ from the CPU by an ulp or two there);
//  - reductions (BN statistics and gradients, GAP, per-channel gradients) accumulate in double: a fixed number
//    of blocks per channel for a given shape, a shared-memory tree in each block, the blocks' partial sums
//    added in order by a finishing kernel: deterministic run to run, no atomics anywhere;
//  - the bilinear backward gathers: each input pixel sums the contributions of the output pixels that read
//    it, in the CPU scatter's order (output pixels row-major, the four taps of each in order), so it equals
//    the CPU's result bit for bit, without atomics.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "train_kernels.h"

namespace {

#include "train_launch.h"

constexpr size_t RED_CHUNK = 16384; // elements of a channel per reduction block


// rmul / radd / rsub / rdiv: train_launch.h

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */
constexpr int RED_UNROLL = 8; // elements whose loads a reduction thread issues together

// sum of v over the block (blockDim.x a power of two <= TPB); every thread gets the result
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

// threads of a reduction block for m elements: a power of two
inline unsigned red_threads(size_t m) { return m >= (size_t)TPB ? TPB : m >= 64 ? 64 : 32; }

#endif
// ------------------------------------------------------------------ per-channel reductions
#ifdef DPTK_HOST_CHECK
// element m of channel ch
__host__ __device__ inline size_t red_idx(size_t m, int C, int ch, size_t HW) {
    return ((m / HW) * (size_t)C + (size_t)ch) * HW + m % HW;
}
#endif

// whether KIND reads b
template <int KIND> __host__ __device__ constexpr bool red_has_b() { return KIND == DPTK_RED_DOT || KIND == DPTK_RED_BN; }

// adds an element's values av (and bv) to s0 (and s1)
template <int KIND>
__host__ __device__ inline void red_add_v(float av, float bv, double mu, double *s0, double *s1) {
    if (KIND == DPTK_RED_SUM) {
        *s0 += (double)av;
    } else if (KIND == DPTK_RED_DOT) {
        *s0 += (double)rmul(av, bv);
    } else if (KIND == DPTK_RED_SQDEV) {
        const double d = (double)av - mu;
        *s0 += d * d;
    } else {
        const double g = (double)bv;
        *s0 += g;
        *s1 += g * ((double)av - mu);
    }
}

// adds element idx's value(s) to s0 (and s1)
template <int KIND>
__host__ __device__ inline void red_add(size_t idx, const float *a, const float *b, double mu, double *s0, double *s1) {
    red_add_v<KIND>(a[idx], red_has_b<KIND>() ? b[idx] : 0.0f, mu, s0, s1);
}

template <int KIND> __host__ __device__ inline double red_mean(const void *mean, int ch) {
    if (KIND == DPTK_RED_SQDEV) return ((const double *)mean)[ch];
    if (KIND == DPTK_RED_BN) return (double)((const float *)mean)[ch];
    return 0.0;
}

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */
// block (ch, piece): elements [piece * RED_CHUNK, ...) of channel ch
template <int KIND>
__global__ void k_chan_reduce(double *part, int C, size_t HW, size_t M, int parts, const float *a, const float *b,
                              const void *mean) {
    __shared__ double sh[TPB];
    const size_t blk = blockIdx.x;
    const int ch = (int)(blk / (size_t)parts), piece = (int)(blk % (size_t)parts);
    const size_t m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
    const double mu = red_mean<KIND>(mean, ch);
    double s0 = 0.0, s1 = 0.0;
    // element m = n * HW + r of the channel: (n, r) stepped by blockDim.x without a division per element (the
    // same elements in the same order as red_idx(m) for m = m0 + threadIdx.x, m0 + threadIdx.x + blockDim.x, ...)
    const size_t first = m0 + threadIdx.x, sn = blockDim.x / HW, sr = blockDim.x % HW, bd = blockDim.x;
    size_t n = first / HW, r = first % HW, m = first;
    // RED_UNROLL elements' loads issued before their adds (more bytes in flight per thread: the loop was bound by
    // memory latency, one 4-byte load per dependent double add); the adds keep their order, so the same bits
    for (; m + (RED_UNROLL - 1) * bd < m1; m += RED_UNROLL * bd) {
        size_t idx[RED_UNROLL];
#pragma unroll
        for (int k = 0; k < RED_UNROLL; k++) {
            idx[k] = (n * (size_t)C + (size_t)ch) * HW + r;
            n += sn;
            r += sr;
            if (r >= HW) {
                r -= HW;
                n++;
            }
        }
        float va[RED_UNROLL], vb[RED_UNROLL];
#pragma unroll
        for (int k = 0; k < RED_UNROLL; k++) {
            va[k] = a[idx[k]];
            vb[k] = red_has_b<KIND>() ? b[idx[k]] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < RED_UNROLL; k++) red_add_v<KIND>(va[k], vb[k], mu, &s0, &s1);
    }
    for (; m < m1; m += bd) {
        red_add<KIND>((n * (size_t)C + (size_t)ch) * HW + r, a, b, mu, &s0, &s1);
        n += sn;
        r += sr;
        if (r >= HW) {
            r -= HW;
            n++;
        }
    }
    s0 = block_sum(s0, sh);
    if (KIND == DPTK_RED_BN) {
        s1 = block_sum(s1, sh);
        if (threadIdx.x == 0) {
            part[blk * 2] = s0;
            part[blk * 2 + 1] = s1;
        }
    } else if (threadIdx.x == 0) {
        part[blk] = s0;
    }
}

#endif
#ifdef DPTK_HOST_CHECK
// the same partial sums on the host, each block's elements in order
template <int KIND>
void host_chan_reduce(double *part, int C, size_t HW, size_t M, int parts, const float *a, const float *b,
                      const void *mean) {
    for (size_t blk = 0; blk < (size_t)C * parts; blk++) {
        const int ch = (int)(blk / (size_t)parts), piece = (int)(blk % (size_t)parts);
        const size_t m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
        const double mu = red_mean<KIND>(mean, ch);
        double s0 = 0.0, s1 = 0.0;
        for (size_t m = m0; m < m1; m++) red_add<KIND>(red_idx(m, C, ch, HW), a, b, mu, &s0, &s1);
        if (KIND == DPTK_RED_BN) {
            part[blk * 2] = s0;
            part[blk * 2 + 1] = s1;
        } else {
            part[blk] = s0;
        }
    }
}
#endif

// ------------------------------------------------------------------ per-channel finishing bodies
__host__ __device__ inline void c_fin_sum(size_t ch, const double *part, int parts, float *out, int accumulate,
                                          double div) {
    double s = 0.0;
    for (int p = 0; p < parts; p++) s += part[ch * parts + p];
    out[ch] = accumulate ? radd(out[ch], (float)s) : (float)(s / div);
}

__host__ __device__ inline void c_bn_fin_mean(size_t ch, const double *part, int parts, size_t M, double *mean) {
    double s = 0.0;
    for (int p = 0; p < parts; p++) s += part[ch * parts + p];
    mean[ch] = s / (double)M;
}

__host__ __device__ inline void c_bn_fin_var(size_t ch, const double *part, int parts, size_t M, const double *meanv,
                                             const float *gamma, const float *beta, double eps, double momentum,
                                             float *run_mean, float *run_var, float *save_mean, float *save_invstd,
                                             float *alpha, float *shift) {
    double ss = 0.0;
    for (int p = 0; p < parts; p++) ss += part[ch * parts + p];
    const double mean = meanv[ch];
    const double invstd = 1.0 / sqrt(ss / (double)M + eps);
    save_mean[ch] = (float)mean;
    save_invstd[ch] = (float)invstd;
    if (run_mean) { // PyTorch: r = momentum * batch + (1 - momentum) * r, unbiased variance
        const double m = momentum;
        run_mean[ch] = (float)(m * mean + (1.0 - m) * (double)run_mean[ch]);
        run_var[ch] = (float)(m * (ss / (double)(M - 1)) + (1.0 - m) * (double)run_var[ch]);
    }
    alpha[ch] = (float)((double)gamma[ch] * invstd);
    shift[ch] = (float)((double)beta[ch] - mean * (double)gamma[ch] * invstd);
}

__host__ __device__ inline void c_bn_eval_coef(size_t ch, const float *gamma, const float *beta, const float *rm,
                                               const float *rv, double eps, float *alpha, float *shift) {
    const double invstd = 1.0 / sqrt((double)rv[ch] + eps);
    alpha[ch] = (float)((double)gamma[ch] * invstd);
    if (shift) shift[ch] = (float)((double)beta[ch] - (double)rm[ch] * (double)gamma[ch] * invstd);
}

__host__ __device__ inline void c_bn_bwd_fin(size_t ch, const double *part, int parts, size_t M,
                                             const float *save_mean, const float *save_invstd, const float *gamma,
                                             float *dgamma, float *dbeta, float *coef) {
    double sdy = 0.0, dot = 0.0;
    for (int p = 0; p < parts; p++) {
        sdy += part[(ch * parts + p) * 2];
        dot += part[(ch * parts + p) * 2 + 1];
    }
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    if (dgamma) dgamma[ch] = radd(dgamma[ch], (float)(dot * invstd));
    if (dbeta) dbeta[ch] = radd(dbeta[ch], (float)sdy);
    coef[4 * ch + 0] = (float)mean;
    coef[4 * ch + 1] = (float)(dot / (double)M * invstd * invstd);
    coef[4 * ch + 2] = (float)(sdy / (double)M);
    coef[4 * ch + 3] = (float)((double)gamma[ch] * invstd);
}

__host__ __device__ inline void c_bn_eval_bwd_fin(size_t ch, const double *part, int parts, const float *rv,
                                                  double eps, float *dgamma, float *dbeta) {
    double sdy = 0.0, dot = 0.0;
    for (int p = 0; p < parts; p++) {
        sdy += part[(ch * parts + p) * 2];
        dot += part[(ch * parts + p) * 2 + 1];
    }
    const double invstd = 1.0 / sqrt((double)rv[ch] + eps);
    if (dgamma) dgamma[ch] = radd(dgamma[ch], (float)(dot * invstd));
    if (dbeta) dbeta[ch] = radd(dbeta[ch], (float)sdy);
}

// ------------------------------------------------------------------ element bodies
__host__ __device__ inline void e_bn_apply(size_t i, float *y, const float *x, const float *alpha, const float *shift,
                                           int C, size_t HW) {
    const int ch = (int)((i / HW) % (size_t)C);
    y[i] = radd(rmul(x[i], alpha[ch]), shift[ch]);
}

// dx += (dy - gm - (x - tm) * k) * wi, each operation rounded
__host__ __device__ inline float bn_bwd_one(float dx, float x, float dy, float tm, float k, float gm, float wi) {
    return radd(dx, rmul(rsub(rsub(dy, gm), rmul(rsub(x, tm), k)), wi));
}
__host__ __device__ inline void e_bn_bwd_apply(size_t i, float *dx, const float *x, const float *dy,
                                               const float *coef, int C, size_t HW) {
    const int ch = (int)((i / HW) % (size_t)C);
    dx[i] = bn_bwd_one(dx[i], x[i], dy[i], coef[4 * ch], coef[4 * ch + 1], coef[4 * ch + 2], coef[4 * ch + 3]);
}

__host__ __device__ inline void e_fill(size_t i, float *x, float v) { x[i] = v; }

__host__ __device__ inline void e_mul_plane(size_t i, float *y, const float *x, const float *g, size_t HW, size_t mod,
                                            int accumulate) {
    const float v = rmul(x[i], g[(i / HW) % mod]);
    y[i] = accumulate ? radd(y[i], v) : v;
}

__host__ __device__ inline void e_crop_add(size_t i, float *dx, const float *dxp, int H, int W, int Hp, int Wp, int pt,
                                           int pl) {
    const size_t j = i % (size_t)W, r = (i / (size_t)W) % (size_t)H, plane = i / ((size_t)W * H);
    dx[i] = radd(dx[i], dxp[plane * Hp * Wp + (r + pt) * Wp + j + pl]);
}

__host__ __device__ inline float sigm(float v) { return rdiv(1.0f, radd(1.0f, expf(-v))); }

// The activations (act 0 none, 1 ReLU, 2 swish, 3 sigmoid) of one value, and the term their backward adds:
// dy * act'(x), from the input x (ReLU, swish) or the output y (sigmoid). Every kernel computes them here.
__host__ __device__ inline float act_value(int act, float v) {
    switch (act) {
    case 1: return v > 0.0f ? v : 0.0f; // ReLU
    case 2: return rmul(v, sigm(v));    // swish: x * sigmoid(x)
    case 3: return sigm(v);             // sigmoid
    default: return v;
    }
}
__host__ __device__ inline float act_deriv(int act, float g, float x, float y) {
    switch (act) {
    case 1: return x > 0.0f ? g : 0.0f;
    case 2: { // dy * (s * (1 + x * (1 - s)))
        const float s = sigm(x);
        return rmul(g, rmul(s, radd(1.0f, rmul(x, rsub(1.0f, s)))));
    }
    case 3: return rmul(rmul(g, rsub(1.0f, y)), y); // dy * (1 - y) * y
    default: return g;
    }
}

__host__ __device__ inline void e_act_fwd(size_t i, int act, const float *x, float *y) { y[i] = act_value(act, x[i]); }

// reads x for ReLU and swish, y for sigmoid (the other may be NULL)
__host__ __device__ inline void e_act_bwd(size_t i, int act, const float *x, const float *y, const float *dy,
                                          float *dx) {
    const float xv = act == 1 || act == 2 ? x[i] : 0.0f, yv = act == 3 ? y[i] : 0.0f;
    dx[i] = radd(dx[i], act_deriv(act, dy[i], xv, yv));
}

// the fused BN + activation pairs (act 0, 1, 2, applied to the BN output y): the gradient that e_act_bwd adds
// into a zeroed buffer (radd(0, d): -0 becomes +0 there too)
__host__ __device__ inline float act_grad0(int act, float dz, float y) {
    return radd(0.0f, act_deriv(act, dz, y, 0.0f));
}
// (y may be NULL: not stored; the backward recomputes it from x, alpha and shift, the same operations)
__host__ __device__ inline void e_bn_act_apply(size_t i, int act, float *y, float *z, const float *x,
                                               const float *alpha, const float *shift, int C, size_t HW) {
    const int ch = (int)((i / HW) % (size_t)C);
    const float v = radd(rmul(x[i], alpha[ch]), shift[ch]);
    if (y) y[i] = v;
    z[i] = act_value(act, v);
}
// (fresh: dx as if zeroed, not read: it may be dz's memory, each dz[i] read before dx[i] is written)
__host__ __device__ inline void e_bn_act_bwd_apply(size_t i, int act, float *dx, int fresh, const float *x,
                                                   const float *alpha, const float *shift, const float *dz,
                                                   const float *coef, int C, size_t HW) {
    const int ch = (int)((i / HW) % (size_t)C);
    const float xv = x[i], y = radd(rmul(xv, alpha[ch]), shift[ch]);
    const float g = act_grad0(act, dz[i], y), d0 = fresh ? 0.0f : dx[i];
    dx[i] = bn_bwd_one(d0, xv, g, coef[4 * ch], coef[4 * ch + 1], coef[4 * ch + 2], coef[4 * ch + 3]);
}

__host__ __device__ inline void e_gap_bwd(size_t i, size_t HW, const float *dy, float *dx) {
    dx[i] = radd(dx[i], (float)((double)dy[i / HW] / (double)HW));
}

__host__ __device__ inline void e_broadcast(size_t i, size_t HW, const float *x, float *y) { y[i] = x[i / HW]; }

__host__ __device__ inline void e_scse_fwd(size_t i, int C, size_t HW, const float *x, const float *cg,
                                           const float *sg, float *y) {
    const size_t q = i / HW, n = q / (size_t)C, p = i % HW;
    y[i] = radd(rmul(x[i], cg[q]), rmul(x[i], sg[n * HW + p]));
}

__host__ __device__ inline void e_scse_bwd_dx(size_t i, int C, size_t HW, const float *cg, const float *sg,
                                              const float *dy, float *dx) {
    const size_t q = i / HW, n = q / (size_t)C, p = i % HW;
    dx[i] = radd(dx[i], radd(rmul(dy[i], cg[q]), rmul(dy[i], sg[n * HW + p])));
}

// t = n * HW + p: dsg[t] += dy * x over the channels in order
__host__ __device__ inline void e_scse_bwd_dsg(size_t t, int C, size_t HW, const float *x, const float *dy,
                                               float *dsg) {
    const size_t n = t / HW, p = t % HW;
    float acc = dsg[t];
    for (int ch = 0; ch < C; ch++) {
        const size_t i = (n * (size_t)C + (size_t)ch) * HW + p;
        acc = radd(acc, rmul(dy[i], x[i]));
    }
    dsg[t] = acc;
}

__host__ __device__ inline void e_add(size_t i, const float *a, const float *b, float *y) { y[i] = radd(a[i], b[i]); }

__host__ __device__ inline void e_acc(size_t i, const float *dy, float *dx) { dx[i] = radd(dx[i], dy[i]); }
// float -> bfloat16, round to nearest even (NaN kept a quiet NaN): __float2bfloat16_rn's result, as bits
__host__ __device__ inline void e_to_bf16(size_t i, const float *x, uint16_t *y) {
    const float f = x[i];
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        y[i] = (uint16_t)((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    y[i] = (uint16_t)(u >> 16);
}
// dx[i] += part[0][i], then part[1][i], ... (parts `stride` floats apart), each add rounded on its own
__host__ __device__ inline void e_acc_parts(size_t i, const float *part, size_t stride, int count, float *dx) {
    float acc = dx[i];
    for (int k = 0; k < count; k++) acc = radd(acc, part[(size_t)k * stride + i]);
    dx[i] = acc;
}

__host__ __device__ inline void e_concat_part(size_t i, int Cx, int Cy, int c0, size_t HW, const float *x, float *y) {
    const size_t p = i % HW, c = (i / HW) % (size_t)Cx, n = i / (HW * (size_t)Cx);
    y[(n * (size_t)Cy + (size_t)c0 + c) * HW + p] = x[i];
}

__host__ __device__ inline void e_split_part(size_t i, int Cx, int Cy, int c0, size_t HW, const float *dy,
                                             float *dx) {
    const size_t p = i % HW, c = (i / HW) % (size_t)Cx, n = i / (HW * (size_t)Cx);
    dx[i] = radd(dx[i], dy[(n * (size_t)Cy + (size_t)c0 + c) * HW + p]);
}

// ------------------------------------------------------------------ bilinear upsampling, align_corners=True
// the CPU's up_coord: scale = (in - 1) / (out - 1) in float, src = scale * o, i0 = (int)src, ...
__host__ __device__ inline void up_coord(int in, int out, int o, int *i0, int *i1, float *l0, float *l1) {
    const float scale = out > 1 ? rdiv((float)(in - 1), (float)(out - 1)) : 0.0f;
    const float src = rmul(scale, (float)o);
    int a = (int)src;
    if (a > in - 1) a = in - 1;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : in - 1;
    *l1 = rsub(src, (float)a);
    *l0 = rsub(1.0f, *l1);
}

__host__ __device__ inline int up_i0(int in, int out, int o) {
    int a, b;
    float l0, l1;
    up_coord(in, out, o, &a, &b, &l0, &l1);
    return a;
}

// first output index whose i0 >= target (i0 is non-decreasing in the output index), out if none
__host__ __device__ inline int up_first(int in, int out, int target) {
    int lo = 0, hi = out;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (up_i0(in, out, mid) >= target) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

// acc + the CPU scatter's terms that land on input pixel (ih, iw) of an h x w plane from dY (h f x w f), in the
// scatter's order: output pixels row-major and, for each, r0[w0], r0[w1], r1[w0], r1[w1] with
// r0[w0] += lw0 * (lh0 * g) etc. The outputs that touch input row ih are those with h0 in {ih - 1, ih}
// (h1 = min(h0 + 1, h - 1)); the same along columns.
__host__ __device__ inline float up_gather(int h, int w, int f, const float *dY, int ih, int iw, float acc) {
    const int OH = h * f, OW = w * f;
    const int oh_start = up_first(h, OH, ih - 1), ow_start = up_first(w, OW, iw - 1);
    for (int oh = oh_start; oh < OH; oh++) {
        int h0, h1;
        float lh0, lh1;
        up_coord(h, OH, oh, &h0, &h1, &lh0, &lh1);
        if (h0 > ih) break;
        const bool m0 = h0 == ih, m1 = h1 == ih;
        if (!m0 && !m1) continue;
        for (int ow = ow_start; ow < OW; ow++) {
            int w0, w1;
            float lw0, lw1;
            up_coord(w, OW, ow, &w0, &w1, &lw0, &lw1);
            if (w0 > iw) break;
            const bool c0 = w0 == iw, c1 = w1 == iw;
            if (!c0 && !c1) continue;
            const float g = dY[(size_t)oh * OW + ow], g0 = rmul(lh0, g), g1 = rmul(lh1, g);
            if (m0 && c0) acc = radd(acc, rmul(lw0, g0));
            if (m0 && c1) acc = radd(acc, rmul(lw1, g0));
            if (m1 && c0) acc = radd(acc, rmul(lw0, g1));
            if (m1 && c1) acc = radd(acc, rmul(lw1, g1));
        }
    }
    return acc;
}

__host__ __device__ inline void e_up_fwd(size_t i, int h, int w, int f, const float *x, float *y) {
    const int OH = h * f, OW = w * f;
    const int ow = (int)(i % (size_t)OW), oh = (int)((i / (size_t)OW) % (size_t)OH);
    const size_t plane = i / ((size_t)OW * OH);
    int h0, h1, w0, w1;
    float lh0, lh1, lw0, lw1;
    up_coord(h, OH, oh, &h0, &h1, &lh0, &lh1);
    up_coord(w, OW, ow, &w0, &w1, &lw0, &lw1);
    const float *r0 = x + plane * h * w + (size_t)h0 * w, *r1 = x + plane * h * w + (size_t)h1 * w;
    const float t0 = radd(rmul(lw0, r0[w0]), rmul(lw1, r0[w1]));
    const float t1 = radd(rmul(lw0, r1[w0]), rmul(lw1, r1[w1]));
    y[i] = radd(rmul(lh0, t0), rmul(lh1, t1));
}

__host__ __device__ inline void e_up_bwd(size_t i, int h, int w, int f, const float *dy, float *dx) {
    const int iw = (int)(i % (size_t)w), ih = (int)((i / (size_t)w) % (size_t)h);
    const size_t plane = i / ((size_t)w * h);
    dx[i] = up_gather(h, w, f, dy + plane * h * f * w * f, ih, iw, dx[i]);
}

// ------------------------------------------------------------------ softmax over channels (t: pixel)
__host__ __device__ inline void e_softmax_fwd(size_t t, int C, size_t HW, const float *x, float *y) {
    const size_t o = (t / HW) * (size_t)C * HW + t % HW;
    const float *X = x + o;
    float *Y = y + o;
    float m = X[0];
    for (int c = 1; c < C; c++) m = X[(size_t)c * HW] > m ? X[(size_t)c * HW] : m;
    double s = 0.0;
    for (int c = 0; c < C; c++) {
        const float e = expf(rsub(X[(size_t)c * HW], m));
        Y[(size_t)c * HW] = e;
        s += e;
    }
    const float inv = (float)(1.0 / s);
    for (int c = 0; c < C; c++) Y[(size_t)c * HW] = rmul(Y[(size_t)c * HW], inv);
}

__host__ __device__ inline void e_softmax_bwd(size_t t, int C, size_t HW, const float *y, const float *dy, float *dx) {
    const size_t o = (t / HW) * (size_t)C * HW + t % HW;
    double dot = 0.0;
    for (int c = 0; c < C; c++) dot += (double)rmul(dy[o + (size_t)c * HW], y[o + (size_t)c * HW]);
    const float td = (float)dot;
    for (int c = 0; c < C; c++) {
        const size_t i = o + (size_t)c * HW;
        dx[i] = radd(dx[i], rmul(y[i], rsub(dy[i], td)));
    }
}

// ------------------------------------------------------------------ dropout, drop-connect
__host__ __device__ inline void e_dropout(size_t i, float scale, const uint8_t *mask, const float *x, float *y,
                                          int accumulate) {
    const float v = rmul(rmul(x[i], (float)mask[i]), scale); // (x * mask) * scale
    y[i] = accumulate ? radd(y[i], v) : v;
}

__host__ __device__ inline void e_drop_connect(size_t i, size_t per, float keep, const uint8_t *mask, const float *x,
                                               float *y, int accumulate) {
    const float m = (float)mask[i / per];
    if (accumulate) y[i] = radd(y[i], rdiv(rmul(x[i], m), keep)); // (dy * binary) / keep
    else y[i] = rmul(rdiv(x[i], keep), m);                        // inputs / keep * binary
}

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */
// ------------------------------------------------------------------ the kernels: grid-stride loops over the bodies
// K: train_launch.h

K(c_fin_sum, (const double *part, int parts, float *out, int acc, double div), (part, parts, out, acc, div))
K(c_bn_fin_mean, (const double *part, int parts, size_t M, double *mean), (part, parts, M, mean))
K(c_bn_fin_var,
  (const double *part, int parts, size_t M, const double *mean, const float *gamma, const float *beta, double eps,
   double mom, float *rm, float *rv, float *sm, float *si, float *alpha, float *shift),
  (part, parts, M, mean, gamma, beta, eps, mom, rm, rv, sm, si, alpha, shift))
K(c_bn_eval_coef,
  (const float *gamma, const float *beta, const float *rm, const float *rv, double eps, float *alpha, float *shift),
  (gamma, beta, rm, rv, eps, alpha, shift))
K(c_bn_bwd_fin,
  (const double *part, int parts, size_t M, const float *sm, const float *si, const float *gamma, float *dg,
   float *db, float *coef),
  (part, parts, M, sm, si, gamma, dg, db, coef))
K(c_bn_eval_bwd_fin, (const double *part, int parts, const float *rv, double eps, float *dg, float *db),
  (part, parts, rv, eps, dg, db))
K(e_bn_apply, (float *y, const float *x, const float *alpha, const float *shift, int C, size_t HW),
  (y, x, alpha, shift, C, HW))
K(e_bn_bwd_apply, (float *dx, const float *x, const float *dy, const float *coef, int C, size_t HW),
  (dx, x, dy, coef, C, HW))
K(e_bn_act_apply, (int act, float *y, float *z, const float *x, const float *alpha, const float *shift, int C, size_t HW),
  (act, y, z, x, alpha, shift, C, HW))
K(e_bn_act_bwd_apply,
  (int act, float *dx, int fresh, const float *x, const float *alpha, const float *shift, const float *dz,
   const float *coef, int C, size_t HW),
  (act, dx, fresh, x, alpha, shift, dz, coef, C, HW))
K(e_fill, (float *x, float v), (x, v))

// Activations over 16-byte vectors, the activation a template argument (act_value / act_deriv with a constant,
// folded: no switch per element): the same float operations as e_act_fwd / e_act_bwd, so the same bits; used
// where the count is a multiple of 4 and the tensors 16-byte aligned (the trainer's arena tensors are 256-byte
// aligned).
template <int ACT> __global__ void k_act_fwd_v4(size_t n4, const float4 *x, float4 *y) {
    GRID_LOOP(j, n4) {
        const float4 v = x[j];
        y[j] = make_float4(act_value(ACT, v.x), act_value(ACT, v.y), act_value(ACT, v.z), act_value(ACT, v.w));
    }
}
// x is read for ReLU and swish, y for sigmoid (the other may be NULL)
template <int ACT> __global__ void k_act_bwd_v4(size_t n4, const float4 *x, const float4 *y, const float4 *dy, float4 *dx) {
    GRID_LOOP(j, n4) {
        const float4 g = dy[j], d = dx[j];
        const float4 xv = ACT == 3 ? make_float4(0.f, 0.f, 0.f, 0.f) : x[j];
        const float4 yv = ACT == 3 ? y[j] : make_float4(0.f, 0.f, 0.f, 0.f);
        dx[j] = make_float4(radd(d.x, act_deriv(ACT, g.x, xv.x, yv.x)), radd(d.y, act_deriv(ACT, g.y, xv.y, yv.y)),
                            radd(d.z, act_deriv(ACT, g.z, xv.z, yv.z)), radd(d.w, act_deriv(ACT, g.w, xv.w, yv.w)));
    }
}

// DPTK_RED_BN of (x, g), g = act_grad0(ACT, dz, y), y = x * alpha + shift recomputed: dptk_bn_act_reduce (the
// blocks and order of k_chan_reduce)
template <int ACT>
__global__ void k_bn_act_reduce(double *part, int C, size_t HW, size_t M, int parts, const float *x,
                                const float *alpha, const float *shift, const float *dz, const float *mean) {
    __shared__ double sh[TPB];
    const size_t blk = blockIdx.x;
    const int ch = (int)(blk / (size_t)parts), piece = (int)(blk % (size_t)parts);
    const size_t m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
    const double mu = (double)mean[ch];
    const float a = alpha[ch], b = shift[ch];
    double s0 = 0.0, s1 = 0.0;
    const size_t first = m0 + threadIdx.x, sn = blockDim.x / HW, sr = blockDim.x % HW, bd = blockDim.x;
    size_t n = first / HW, r = first % HW, m = first;
    for (; m + (RED_UNROLL - 1) * bd < m1; m += RED_UNROLL * bd) { /* loads first, as in k_chan_reduce */
        float xv[RED_UNROLL], dv[RED_UNROLL];
#pragma unroll
        for (int k = 0; k < RED_UNROLL; k++) {
            const size_t i = (n * (size_t)C + (size_t)ch) * HW + r;
            xv[k] = x[i];
            dv[k] = dz[i];
            n += sn;
            r += sr;
            if (r >= HW) {
                r -= HW;
                n++;
            }
        }
#pragma unroll
        for (int k = 0; k < RED_UNROLL; k++) {
            const double g = (double)act_grad0(ACT, dv[k], radd(rmul(xv[k], a), b));
            s0 += g;
            s1 += g * ((double)xv[k] - mu);
        }
    }
    for (; m < m1; m += bd) {
        const size_t i = (n * (size_t)C + (size_t)ch) * HW + r;
        const float xv = x[i];
        const double g = (double)act_grad0(ACT, dz[i], radd(rmul(xv, a), b));
        s0 += g;
        s1 += g * ((double)xv - mu);
        n += sn;
        r += sr;
        if (r >= HW) {
            r -= HW;
            n++;
        }
    }
    s0 = block_sum(s0, sh);
    s1 = block_sum(s1, sh);
    if (threadIdx.x == 0) {
        part[blk * 2] = s0;
        part[blk * 2 + 1] = s1;
    }
}

// Batch norm's two element-wise passes over planes: grid (chunks of a plane, N * C planes), the channel's
// coefficients read once per thread, 16-byte loads and stores where the plane is a multiple of 4 floats (the
// tensors are 256-byte aligned). The same float operations per element as e_bn_apply / e_bn_bwd_apply, so the
// same bits, without a 64-bit division and modulo per element.
template <int VEC>
__global__ void k_bn_apply_planes(float *y, const float *x, const float *alpha, const float *shift, int C, size_t HW) {
    const size_t plane = blockIdx.y + (size_t)gridDim.y * blockIdx.z;
    const int ch = (int)(plane % (size_t)C);
    const float a = alpha[ch], sh = shift[ch];
    const size_t nv = HW / VEC;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < nv; j += (size_t)gridDim.x * blockDim.x) {
        if (VEC == 4) {
            const float4 v = ((const float4 *)(x + plane * HW))[j];
            float4 o;
            o.x = radd(rmul(v.x, a), sh);
            o.y = radd(rmul(v.y, a), sh);
            o.z = radd(rmul(v.z, a), sh);
            o.w = radd(rmul(v.w, a), sh);
            ((float4 *)(y + plane * HW))[j] = o;
        } else {
            y[plane * HW + j] = radd(rmul(x[plane * HW + j], a), sh);
        }
    }
}
template <int VEC>
__global__ void k_bn_bwd_apply_planes(float *dx, const float *x, const float *dy, const float *coef, int C, size_t HW) {
    const size_t plane = blockIdx.y + (size_t)gridDim.y * blockIdx.z;
    const int ch = (int)(plane % (size_t)C);
    const float tm = coef[4 * ch], k = coef[4 * ch + 1], gm = coef[4 * ch + 2], wi = coef[4 * ch + 3];
    const size_t nv = HW / VEC;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < nv; j += (size_t)gridDim.x * blockDim.x) {
        if (VEC == 4) {
            const float4 xv = ((const float4 *)(x + plane * HW))[j], gv = ((const float4 *)(dy + plane * HW))[j];
            float4 d = ((float4 *)(dx + plane * HW))[j];
            d.x = bn_bwd_one(d.x, xv.x, gv.x, tm, k, gm, wi);
            d.y = bn_bwd_one(d.y, xv.y, gv.y, tm, k, gm, wi);
            d.z = bn_bwd_one(d.z, xv.z, gv.z, tm, k, gm, wi);
            d.w = bn_bwd_one(d.w, xv.w, gv.w, tm, k, gm, wi);
            ((float4 *)(dx + plane * HW))[j] = d;
        } else {
            const size_t i = plane * HW + j;
            dx[i] = bn_bwd_one(dx[i], x[i], dy[i], tm, k, gm, wi);
        }
    }
}
// the fused pairs' element-wise passes over planes (plane_grid), ACT a template argument: e_bn_act_apply and
// e_bn_act_bwd_apply's operations
template <int ACT>
__global__ void k_bn_act_apply_planes(float *y, float *z, const float *x, const float *alpha, const float *shift, int C,
                                      size_t HW) {
    const size_t plane = blockIdx.y + (size_t)gridDim.y * blockIdx.z;
    const int ch = (int)(plane % (size_t)C);
    const float a = alpha[ch], sh = shift[ch];
    const size_t base = plane * HW;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < HW; j += (size_t)gridDim.x * blockDim.x) {
        const float v = radd(rmul(x[base + j], a), sh);
        if (y) y[base + j] = v;
        z[base + j] = act_value(ACT, v);
    }
}
template <int ACT>
__global__ void k_bn_act_bwd_apply_planes(float *dx, int fresh, const float *x, const float *alpha, const float *shift,
                                          const float *dz, const float *coef, int C, size_t HW) {
    const size_t plane = blockIdx.y + (size_t)gridDim.y * blockIdx.z;
    const int ch = (int)(plane % (size_t)C);
    const float tm = coef[4 * ch], k = coef[4 * ch + 1], gm = coef[4 * ch + 2], wi = coef[4 * ch + 3];
    const float a = alpha[ch], b = shift[ch];
    const size_t base = plane * HW;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < HW; j += (size_t)gridDim.x * blockDim.x) {
        const size_t i = base + j;
        const float xv = x[i], g = act_grad0(ACT, dz[i], radd(rmul(xv, a), b)), d0 = fresh ? 0.0f : dx[i];
        dx[i] = bn_bwd_one(d0, xv, g, tm, k, gm, wi);
    }
}
// the grid of the plane kernels: y * z = planes (z only past 65535 planes), x enough blocks for ~4 waves in all
inline bool plane_grid(size_t planes, size_t per_plane, dim3 *g, unsigned *threads) {
    if (planes == 0 || per_plane == 0) return false;
    unsigned th = per_plane >= (size_t)TPB ? TPB : per_plane > 64 ? 128 : 64;
    size_t y = planes, z = 1;
    if (y > 65535) {
        z = (planes + 65535 - 1) / 65535;
        if (planes % z) return false; // no exact split: the generic kernel
        y = planes / z;
        if (y > 65535 || z > 65535) return false;
    }
    size_t x = (per_plane + th - 1) / th, cap = (132 * 16 + planes - 1) / planes; // ~2000 blocks of work at least
    if (cap < 1) cap = 1;
    if (x > cap) x = cap;
    *g = dim3((unsigned)x, (unsigned)y, (unsigned)z);
    *threads = th;
    return true;
}
K(e_mul_plane, (float *y, const float *x, const float *g, size_t HW, size_t mod, int acc), (y, x, g, HW, mod, acc))
K(e_crop_add, (float *dx, const float *dxp, int H, int W, int Hp, int Wp, int pt, int pl),
  (dx, dxp, H, W, Hp, Wp, pt, pl))
K(e_act_fwd, (int act, const float *x, float *y), (act, x, y))
K(e_act_bwd, (int act, const float *x, const float *y, const float *dy, float *dx), (act, x, y, dy, dx))
K(e_gap_bwd, (size_t HW, const float *dy, float *dx), (HW, dy, dx))
K(e_broadcast, (size_t HW, const float *x, float *y), (HW, x, y))
K(e_scse_fwd, (int C, size_t HW, const float *x, const float *cg, const float *sg, float *y), (C, HW, x, cg, sg, y))
K(e_scse_bwd_dx, (int C, size_t HW, const float *cg, const float *sg, const float *dy, float *dx),
  (C, HW, cg, sg, dy, dx))
K(e_scse_bwd_dsg, (int C, size_t HW, const float *x, const float *dy, float *dsg), (C, HW, x, dy, dsg))
K(e_add, (const float *a, const float *b, float *y), (a, b, y))
K(e_acc, (const float *dy, float *dx), (dy, dx))
K(e_to_bf16, (const float *x, uint16_t *y), (x, y))
K(e_acc_parts, (const float *part, size_t stride, int count, float *dx), (part, stride, count, dx))
K(e_concat_part, (int Cx, int Cy, int c0, size_t HW, const float *x, float *y), (Cx, Cy, c0, HW, x, y))
K(e_split_part, (int Cx, int Cy, int c0, size_t HW, const float *dy, float *dx), (Cx, Cy, c0, HW, dy, dx))
K(e_up_fwd, (int h, int w, int f, const float *x, float *y), (h, w, f, x, y))
K(e_up_bwd, (int h, int w, int f, const float *dy, float *dx), (h, w, f, dy, dx))
K(e_softmax_fwd, (int C, size_t HW, const float *x, float *y), (C, HW, x, y))
K(e_softmax_bwd, (int C, size_t HW, const float *y, const float *dy, float *dx), (C, HW, y, dy, dx))
K(e_dropout, (float scale, const uint8_t *mask, const float *x, float *y, int acc), (scale, mask, x, y, acc))
K(e_drop_connect, (size_t per, float keep, const uint8_t *mask, const float *x, float *y, int acc),
  (per, keep, mask, x, y, acc))

#endif
// ------------------------------------------------------------------ depthwise conv backward (own kernels)
// forward: one output element, its taps in (ki, kj) order from 0, then the bias (grad_tmpl.h's order)
__host__ __device__ inline void c_dw_fwd(size_t i, dptk_dw_geo g, const float *x, const float *wt, const float *b,
                                         float *y) {
    const int ow = (int)(i % (size_t)g.OW);
    const size_t r = i / (size_t)g.OW, nc = r / (size_t)g.OH;
    const int oh = (int)(r % (size_t)g.OH), c = (int)(nc % (size_t)g.C);
    const float *X = x + nc * (size_t)g.H * g.W, *wk = wt + (size_t)c * g.kh * g.kw;
    float acc = 0.0f;
    for (int ki = 0; ki < g.kh; ki++) {
        const int ih = oh * g.sh - g.pt + ki * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int kj = 0; kj < g.kw; kj++) {
            const int iw = ow * g.sw - g.pl + kj * g.dw;
            if (iw < 0 || iw >= g.W) continue;
            acc = radd(acc, rmul(wk[ki * g.kw + kj], X[(size_t)ih * g.W + iw]));
        }
    }
    y[i] = b ? radd(acc, b[c]) : acc;
}
#ifndef DPTK_HOST_CHECK
K(c_dw_fwd, (dptk_dw_geo g, const float *x, const float *wt, const float *b, float *y), (g, x, wt, b, y))
#endif

// data: one dx element; the oh whose window row covers ih ascending (ki then follows), kj ascending: the order
// in which grad_tmpl.h's scatter adds into that element
__host__ __device__ inline void c_dw_bwd_data(size_t i, dptk_dw_geo g, const float *dy, const float *wt, float *dx) {
    const int iw = (int)(i % (size_t)g.W);
    const size_t r = i / (size_t)g.W, nc = r / (size_t)g.H;
    const int ih = (int)(r % (size_t)g.H), c = (int)(nc % (size_t)g.C);
    const float *dY = dy + nc * (size_t)g.OH * g.OW, *wk = wt + (size_t)c * g.kh * g.kw;
    const int top = ih + g.pt; // = oh * sh + ki * dh
    const int lo = top - (g.kh - 1) * g.dh;
    const int oh0 = lo <= 0 ? 0 : (lo + g.sh - 1) / g.sh, oh1 = top / g.sh < g.OH - 1 ? top / g.sh : g.OH - 1;
    float acc = dx[i];
    for (int oh = oh0; oh <= oh1; oh++) {
        const int rem = top - oh * g.sh;
        if (rem % g.dh) continue;
        const int ki = rem / g.dh;
        if (ki >= g.kh) continue;
        for (int kj = 0; kj < g.kw; kj++) {
            const int t = iw + g.pl - kj * g.dw; // = ow * sw
            if (t < 0 || t % g.sw) continue;
            const int ow = t / g.sw;
            if (ow >= g.OW) continue;
            acc = radd(acc, rmul(wk[ki * g.kw + kj], dY[(size_t)oh * g.OW + ow]));
        }
    }
    dx[i] = acc;
}
#ifndef DPTK_HOST_CHECK
K(c_dw_bwd_data, (dptk_dw_geo g, const float *dy, const float *wt, float *dx), (g, dy, wt, dx))
#endif

// filter: the term of output pixel m = (n, oh, ow) for channel ch, tap (ki, kj): 0 where the tap reads padding
__host__ __device__ inline double dw_filter_term(size_t m, const dptk_dw_geo &g, int ch, int ki, int kj,
                                                 const float *x, const float *dy) {
    const int ow = (int)(m % (size_t)g.OW);
    const size_t r = m / (size_t)g.OW, n = r / (size_t)g.OH;
    const int oh = (int)(r % (size_t)g.OH);
    const int ih = oh * g.sh - g.pt + ki * g.dh, iw = ow * g.sw - g.pl + kj * g.dw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.0;
    const size_t nc = n * (size_t)g.C + (size_t)ch;
    return (double)rmul(x[(nc * g.H + ih) * g.W + iw], dy[(nc * g.OH + oh) * g.OW + ow]);
}

#ifndef DPTK_HOST_CHECK
// block (ch * taps + tap, piece): output pixels [piece * RED_CHUNK, ...) of every image
__global__ void k_dw_bwd_filter(double *part, dptk_dw_geo g, int parts, const float *x, const float *dy) {
    __shared__ double sh[TPB];
    const size_t blk = blockIdx.x, ct = blk / (size_t)parts;
    const int piece = (int)(blk % (size_t)parts), taps = g.kh * g.kw;
    const int ch = (int)(ct / (size_t)taps), tap = (int)(ct % (size_t)taps);
    const size_t M = (size_t)g.N * g.OH * g.OW, m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
    double s = 0.0;
    for (size_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) s += dw_filter_term(m, g, ch, tap / g.kw, tap % g.kw, x, dy);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blk] = s;
}

#endif

// ------------------------------------------------------------------ depthwise fast paths
#ifdef __CUDA_ARCH__
#define DPTK_UNROLL _Pragma("unroll")
#else
#define DPTK_UNROLL
#endif
// 3x3 / 5x5 kernels, stride S (1 or 2) both ways, any dilation with stride 1, dilation 1 with stride 2
// (EfficientNet's depthwise convs, the dilated ones of its output-stride-16 stages, ASPP's separable convs): the
// bodies above with the kernel size and stride compiled in and 32-bit indices within a plane (p = n * C + c,
// j = the element's index in its plane): the same operations in the same order, so the same bits (the generic
// bodies' integer divisions and modulos by runtime strides and dilations were most of their instructions)
template <int KH, int KW, int S>
__host__ __device__ inline void t_dw_fwd(int p, int j, const dptk_dw_geo &g, const float *x, const float *wt,
                                         const float *b, float *y) {
    const int oh = j / g.OW, ow = j - oh * g.OW, c = p % g.C;
    const float *X = x + (size_t)p * g.H * g.W, *wk = wt + c * (KH * KW);
    const int ih0 = oh * S - g.pt, iw0 = ow * S - g.pl;
    float acc = 0.0f;
    DPTK_UNROLL
    for (int ki = 0; ki < KH; ki++) {
        const int ih = ih0 + ki * g.dh;
        if (ih < 0 || ih >= g.H) continue;
    DPTK_UNROLL
        for (int kj = 0; kj < KW; kj++) {
            const int iw = iw0 + kj * g.dw;
            if (iw < 0 || iw >= g.W) continue;
            acc = radd(acc, rmul(wk[ki * KW + kj], X[ih * g.W + iw]));
        }
    }
    y[(size_t)p * g.OH * g.OW + j] = b ? radd(acc, b[c]) : acc;
}

// c_dw_bwd_data's order: oh ascending is ki descending (oh = (ih + pt - ki * dh) / S), then kj ascending
template <int KH, int KW, int S>
__host__ __device__ inline void t_dw_bwd_data(int p, int j, const dptk_dw_geo &g, const float *dy, const float *wt,
                                              float *dx) {
    const int ih = j / g.W, iw = j - ih * g.W, c = p % g.C;
    const float *dY = dy + (size_t)p * g.OH * g.OW, *wk = wt + c * (KH * KW);
    const int top = ih + g.pt, left = iw + g.pl;
    float *o = dx + (size_t)p * g.H * g.W + j;
    float acc = *o;
    DPTK_UNROLL
    for (int ki = KH - 1; ki >= 0; ki--) {
        const int ohs = top - ki * g.dh;
        if (ohs < 0 || (S == 2 && (ohs & 1))) continue;
        const int oh = ohs / S;
        if (oh >= g.OH) continue;
    DPTK_UNROLL
        for (int kj = 0; kj < KW; kj++) {
            const int t = left - kj * g.dw;
            if (t < 0 || (S == 2 && (t & 1))) continue;
            const int ow = t / S;
            if (ow >= g.OW) continue;
            acc = radd(acc, rmul(wk[ki * KW + kj], dY[oh * g.OW + ow]));
        }
    }
    *o = acc;
}

#ifndef DPTK_HOST_CHECK
template <int KH, int KW, int S>
__global__ void k_dw_fwd_t(dptk_dw_geo g, int planes, const float *x, const float *wt, const float *b, float *y) {
    const int j = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (j >= g.OH * g.OW) return;
    for (int p = (int)blockIdx.y; p < planes; p += (int)gridDim.y) t_dw_fwd<KH, KW, S>(p, j, g, x, wt, b, y);
}
template <int KH, int KW, int S>
__global__ void k_dw_bwd_data_t(dptk_dw_geo g, int planes, const float *dy, const float *wt, float *dx) {
    const int j = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (j >= g.H * g.W) return;
    for (int p = (int)blockIdx.y; p < planes; p += (int)gridDim.y) t_dw_bwd_data<KH, KW, S>(p, j, g, dy, wt, dx);
}

// Every tap of a channel in one block (ch, piece), the stride compiled in, 32-bit pixel indices (M < 2^31): the
// same pixels in the same per-thread order as k_dw_bwd_filter (a padding tap adds nothing, so skipping it keeps the
// bits) and the same block_sum per tap, into the same part[(ch * taps + tap) * parts + piece]: the same bits, with
// dy read once instead of once per tap
template <int KH, int KW, int S>
__global__ void k_dw_bwd_filter_t(double *part, dptk_dw_geo g, int parts, const float *x, const float *dy) {
    __shared__ double sh[TPB];
    const int ch = (int)(blockIdx.x / (unsigned)parts), piece = (int)(blockIdx.x % (unsigned)parts);
    const unsigned OW = (unsigned)g.OW, OH = (unsigned)g.OH, M = (unsigned)g.N * OH * OW;
    const unsigned m0 = (unsigned)piece * (unsigned)RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + (unsigned)RED_CHUNK;
    double s[KH * KW];
#pragma unroll
    for (int t = 0; t < KH * KW; t++) s[t] = 0.0;
    for (unsigned m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
        const unsigned r = m / OW, n = r / OH;
        const int ow = (int)(m - r * OW), oh = (int)(r - n * OH);
        const size_t nc = (size_t)n * g.C + (size_t)ch;
        const float d = dy[nc * OH * OW + (unsigned)oh * OW + (unsigned)ow];
        const float *X = x + nc * (size_t)g.H * g.W;
        const int ih0 = oh * S - g.pt, iw0 = ow * S - g.pl;
#pragma unroll
        for (int ki = 0; ki < KH; ki++) {
            const int ih = ih0 + ki * g.dh;
            if (ih < 0 || ih >= g.H) continue;
#pragma unroll
            for (int kj = 0; kj < KW; kj++) {
                const int iw = iw0 + kj * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                s[ki * KW + kj] += (double)rmul(X[ih * g.W + iw], d);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < KH * KW; t++) {
        const double v = block_sum(s[t], sh);
        if (threadIdx.x == 0) part[((size_t)ch * (KH * KW) + t) * parts + piece] = v;
    }
}
#endif

// the fast path's (KH = KW, S) as one code, 0 when the shape has none (other kernel sizes or strides, unequal
// strides or dilations, dilation with stride 2, planes of 2^31 elements or more)
inline int dw_fast_code(const dptk_dw_geo *g) {
    if (g->sh != g->sw || (g->sh != 1 && g->sh != 2) || g->kh != g->kw || g->dh != g->dw || g->dh < 1) return 0;
    if (g->sh == 2 && g->dh != 1) return 0;
    if (g->kh != 3 && g->kh != 5) return 0;
    if ((size_t)g->H * g->W >= 0x7fffffffu || (size_t)g->OH * g->OW >= 0x7fffffffu) return 0;
    if ((size_t)g->N * g->OH * g->OW >= 0x7fffffffu || (size_t)g->N * g->C >= 0x7fffffffu) return 0;
    return g->kh * 10 + g->sh;
}

// runs the fast path of kind F (0 forward, 1 data gradient) for code; false when code has none
#ifdef DPTK_HOST_CHECK
#define DW_FAST_CASE(KH, S)                                                                                    \
    case KH * 10 + S:                                                                                          \
        for (int p = 0; p < planes; p++)                                                                       \
            for (int j = 0; j < per; j++) {                                                                    \
                if (F == 0) t_dw_fwd<KH, KH, S>(p, j, *g, a, wt, b, out);                                       \
                else t_dw_bwd_data<KH, KH, S>(p, j, *g, a, wt, out);                                             \
            }                                                                                                  \
        return true;
#else
#define DW_FAST_CASE(KH, S)                                                                                    \
    case KH * 10 + S:                                                                                          \
        if (F == 0) k_dw_fwd_t<KH, KH, S><<<grid, TPB, 0, (cudaStream_t)stream>>>(*g, planes, a, wt, b, out);    \
        else k_dw_bwd_data_t<KH, KH, S><<<grid, TPB, 0, (cudaStream_t)stream>>>(*g, planes, a, wt, out);         \
        return true;
#endif
template <int F>
bool dw_fast(void *stream, const dptk_dw_geo *g, const float *a, const float *wt, const float *b, float *out) {
    const int code = dw_fast_code(g), planes = g->N * g->C;
    const int per = F == 0 ? g->OH * g->OW : g->H * g->W;
#ifndef DPTK_HOST_CHECK
    const dim3 grid((unsigned)((per + TPB - 1) / TPB), (unsigned)(planes < 65535 ? planes : 65535));
#else
    (void)stream;
#endif
    switch (code) {
        DW_FAST_CASE(3, 1)
        DW_FAST_CASE(3, 2)
        DW_FAST_CASE(5, 1)
        DW_FAST_CASE(5, 2)
    default: return false;
    }
}
#undef DW_FAST_CASE

// Stride 1, dilation D (1 or 2, compiled in), DW_R outputs of a row per thread: each input row segment the DW_R
// outputs need is read once (DW_R + (K - 1) D values) instead of K values per output, the index arithmetic and
// bounds tests once per segment. Each output's operations and their order are t_dw_fwd's / t_dw_bwd_data's; a
// tap outside the input adds rmul(w, 0) = +-0 instead of being skipped, which leaves a sum unchanged (the sums
// start at +0 or at a gradient's value, and x + (+-0) = x, +0 + (-0) = +0), so the same bits.
constexpr int DW_R = 4;
template <int K, int D>
__host__ __device__ inline void t_dw_fwd_s1(int p, int oh, int ow0, const dptk_dw_geo &g, const float *x,
                                            const float *wt, const float *b, float *y) {
    constexpr int L = DW_R + (K - 1) * D;
    const int c = p % g.C;
    const float *X = x + (size_t)p * g.H * g.W, *wk = wt + c * (K * K);
    const int base = ow0 - g.pl; // seg[s] = X[ih][base + s]
    float acc[DW_R];
    DPTK_UNROLL
    for (int r = 0; r < DW_R; r++) acc[r] = 0.0f;
    DPTK_UNROLL
    for (int ki = 0; ki < K; ki++) {
        const int ih = oh - g.pt + ki * D;
        if (ih < 0 || ih >= g.H) continue;
        float seg[L];
        DPTK_UNROLL
        for (int s = 0; s < L; s++) {
            const int iw = base + s;
            seg[s] = iw >= 0 && iw < g.W ? X[ih * g.W + iw] : 0.0f;
        }
        DPTK_UNROLL
        for (int r = 0; r < DW_R; r++)
            DPTK_UNROLL
            for (int kj = 0; kj < K; kj++) acc[r] = radd(acc[r], rmul(wk[ki * K + kj], seg[r + kj * D]));
    }
    float *o = y + (size_t)p * g.OH * g.OW + (size_t)oh * g.OW;
    DPTK_UNROLL
    for (int r = 0; r < DW_R; r++)
        if (ow0 + r < g.OW) o[ow0 + r] = b ? radd(acc[r], b[c]) : acc[r];
}
template <int K, int D>
__host__ __device__ inline void t_dw_bwd_data_s1(int p, int ih, int iw0, const dptk_dw_geo &g, const float *dy,
                                                 const float *wt, float *dx) {
    constexpr int L = DW_R + (K - 1) * D;
    const int c = p % g.C;
    const float *dY = dy + (size_t)p * g.OH * g.OW, *wk = wt + c * (K * K);
    float *o = dx + (size_t)p * g.H * g.W + (size_t)ih * g.W;
    const int top = ih + g.pt, base = iw0 + g.pl - (K - 1) * D; // seg[s] = dY[oh][base + s]
    float acc[DW_R];
    DPTK_UNROLL
    for (int r = 0; r < DW_R; r++) acc[r] = iw0 + r < g.W ? o[iw0 + r] : 0.0f;
    DPTK_UNROLL
    for (int ki = K - 1; ki >= 0; ki--) {
        const int oh = top - ki * D;
        if (oh < 0 || oh >= g.OH) continue;
        float seg[L];
        DPTK_UNROLL
        for (int s = 0; s < L; s++) {
            const int ow = base + s;
            seg[s] = ow >= 0 && ow < g.OW ? dY[oh * g.OW + ow] : 0.0f;
        }
        DPTK_UNROLL
        for (int r = 0; r < DW_R; r++)
            DPTK_UNROLL
            for (int kj = 0; kj < K; kj++) acc[r] = radd(acc[r], rmul(wk[ki * K + kj], seg[r + (K - 1 - kj) * D]));
    }
    DPTK_UNROLL
    for (int r = 0; r < DW_R; r++)
        if (iw0 + r < g.W) o[iw0 + r] = acc[r];
}
#ifndef DPTK_HOST_CHECK
// F 0: forward (rows of y), 1: data gradient (rows of dx); j = (row, group of DW_R) within plane blockIdx.y...
template <int F, int K, int D>
__global__ void k_dw_s1(dptk_dw_geo g, int planes, const float *a, const float *wt, const float *b, float *out) {
    const int rows = F == 0 ? g.OH : g.H, cols = F == 0 ? g.OW : g.W, q = (cols + DW_R - 1) / DW_R;
    const int j = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (j >= rows * q) return;
    const int row = j / q, c0 = (j - row * q) * DW_R;
    for (int p = (int)blockIdx.y; p < planes; p += (int)gridDim.y) {
        if (F == 0) t_dw_fwd_s1<K, D>(p, row, c0, g, a, wt, b, out);
        else t_dw_bwd_data_s1<K, D>(p, row, c0, g, a, wt, out);
    }
}
#endif
// the row-tiled path for g (stride 1, dilation 1 or 2, 3x3 / 5x5): true when it ran
template <int F>
bool dw_s1(void *stream, const dptk_dw_geo *g, const float *a, const float *wt, const float *b, float *out) {
    const int code = dw_fast_code(g);
    if (code != 31 && code != 51) return false;
    if (g->dh != 1 && g->dh != 2) return false;
    const int planes = g->N * g->C, rows = F == 0 ? g->OH : g->H, cols = F == 0 ? g->OW : g->W;
    const int q = (cols + DW_R - 1) / DW_R;
    if ((size_t)rows * q >= 0x7fffffffu) return false;
    const int sel = code * 10 + g->dh; // 311, 312, 511, 512
#ifdef DPTK_HOST_CHECK
    (void)stream;
    for (int p = 0; p < planes; p++)
        for (int row = 0; row < rows; row++)
            for (int c0 = 0; c0 < cols; c0 += DW_R) {
                switch (sel) {
#define DW_S1_HOST(KK, DD)                                                                                     \
    case KK * 100 + 10 + DD:                                                                                   \
        if (F == 0) t_dw_fwd_s1<KK, DD>(p, row, c0, *g, a, wt, b, out);                                        \
        else t_dw_bwd_data_s1<KK, DD>(p, row, c0, *g, a, wt, out);                                              \
        break;
                    DW_S1_HOST(3, 1)
                    DW_S1_HOST(3, 2)
                    DW_S1_HOST(5, 1)
                    DW_S1_HOST(5, 2)
#undef DW_S1_HOST
                default: break;
                }
            }
    return true;
#else
    const dim3 grid((unsigned)(((size_t)rows * q + TPB - 1) / TPB), (unsigned)(planes < 65535 ? planes : 65535));
    cudaStream_t st = (cudaStream_t)stream;
    switch (sel) {
    case 311: k_dw_s1<F, 3, 1><<<grid, TPB, 0, st>>>(*g, planes, a, wt, b, out); break;
    case 312: k_dw_s1<F, 3, 2><<<grid, TPB, 0, st>>>(*g, planes, a, wt, b, out); break;
    case 511: k_dw_s1<F, 5, 1><<<grid, TPB, 0, st>>>(*g, planes, a, wt, b, out); break;
    case 512: k_dw_s1<F, 5, 2><<<grid, TPB, 0, st>>>(*g, planes, a, wt, b, out); break;
    default: return false;
    }
    return true;
#endif
}

#ifndef DPTK_HOST_CHECK
// The filter gradient at stride 1 (dilation D = 1 or 2): block (ch, piece) over groups of DW_R pixels of a row
// (group gi = (n, oh, q): pixels ow = q DW_R + r), DW_GCHUNK groups per piece; a thread converts each x value of its
// row segments and each dy value to double once and adds the exact double products x * dy (DFMA), instead of one
// float product, one conversion and one double add per tap and pixel. Deterministic (fixed blocks, fixed per-thread
// order, block_sum, the pieces added in order); the products are exact where k_dw_bwd_filter_t rounds them to float.
constexpr int DW_GCHUNK = 4096;
template <int K, int D>
__global__ void k_dw_bwd_filter_s1(double *part, dptk_dw_geo g, int parts, const float *x, const float *dy) {
    __shared__ double sh[TPB];
    constexpr int L = DW_R + (K - 1) * D;
    const int ch = (int)(blockIdx.x / (unsigned)parts), piece = (int)(blockIdx.x % (unsigned)parts);
    const unsigned Q = (unsigned)(g.OW + DW_R - 1) / DW_R, G = (unsigned)g.N * (unsigned)g.OH * Q;
    const unsigned g0 = (unsigned)piece * DW_GCHUNK, g1 = G - g0 < DW_GCHUNK ? G : g0 + DW_GCHUNK;
    double s[K * K];
#pragma unroll
    for (int t = 0; t < K * K; t++) s[t] = 0.0;
    for (unsigned gi = g0 + threadIdx.x; gi < g1; gi += blockDim.x) {
        const unsigned r2 = gi / Q, n = r2 / (unsigned)g.OH;
        const int ow0 = (int)(gi - r2 * Q) * DW_R, oh = (int)(r2 - n * (unsigned)g.OH);
        const size_t nc = (size_t)n * g.C + (size_t)ch;
        const float *dr = dy + (nc * g.OH + oh) * g.OW;
        const float *X = x + nc * (size_t)g.H * g.W;
        double dv[DW_R];
#pragma unroll
        for (int r = 0; r < DW_R; r++) dv[r] = ow0 + r < g.OW ? (double)dr[ow0 + r] : 0.0;
        const int base = ow0 - g.pl;
#pragma unroll
        for (int ki = 0; ki < K; ki++) {
            const int ih = oh - g.pt + ki * D;
            if (ih < 0 || ih >= g.H) continue;
            double seg[L];
#pragma unroll
            for (int q = 0; q < L; q++) {
                const int iw = base + q;
                seg[q] = iw >= 0 && iw < g.W ? (double)X[ih * g.W + iw] : 0.0;
            }
#pragma unroll
            for (int r = 0; r < DW_R; r++)
#pragma unroll
                for (int kj = 0; kj < K; kj++) s[ki * K + kj] = fma(seg[r + kj * D], dv[r], s[ki * K + kj]);
        }
    }
#pragma unroll
    for (int t = 0; t < K * K; t++) {
        const double v = block_sum(s[t], sh);
        if (threadIdx.x == 0) part[((size_t)ch * (K * K) + t) * parts + piece] = v;
    }
}
#endif
#ifndef DPTK_HOST_CHECK
// whether the filter gradient of g takes k_dw_bwd_filter_s1 (the device build; the host twins keep the generic
// per-tap sums)
inline bool dw_filter_s1(const dptk_dw_geo *g) {
    const int code = dw_fast_code(g);
    return (code == 31 || code == 51) && (g->dh == 1 || g->dh == 2) &&
           (size_t)g->N * g->OH * ((g->OW + DW_R - 1) / DW_R) < 0x7fffffffu;
}
#endif

// ------------------------------------------------------------------ 3x3 convs with few output channels
// The segmentation heads (256 -> 2 classes, 3x3, stride 1): cuDNN's implicit GEMMs spend ~0.5 ms forward and
// ~0.8 ms backward on each at 128 x 128 x 8 for ~0.05 ms of memory traffic (one output channel per GEMM column,
// two columns). Here one thread does one pixel for every output channel (CO <= 4, compiled in): the forward and
// the data gradient read each input / output-gradient value once per tap from L1, the filter gradient sums
// x * dy per (co, ci, tap) in double per block of pixels, the blocks added in order (deterministic).
// Each output: the taps of ci = 0, 1, ... in (ki, kj) order, then the bias; each float operation rounded on
// its own (no FMA), so FP32 semantics in every math mode. Host twins (DPTK_HOST_CHECK): the same bodies.
// the 3x3 window of plane X around output pixel (oh, ow) in tap order, 0 outside the input: a tap outside adds
// rmul(w, 0) = +-0 to a sum, which leaves it unchanged (the sums start at +0; x + (+-0) = x, +0 + (-0) = +0)
__host__ __device__ inline void sc_window(const dptk_sc_geo &g, const float *X, int oh, int ow, float v[9]) {
    DPTK_UNROLL
    for (int ki = 0; ki < 3; ki++) {
        const int ih = oh - g.pt + ki;
        DPTK_UNROLL
        for (int kj = 0; kj < 3; kj++) {
            const int iw = ow - g.pl + kj;
            v[ki * 3 + kj] = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W ? X[ih * g.W + iw] : 0.0f;
        }
    }
}

template <int CO>
__host__ __device__ inline void t_sc_fwd(size_t i, const dptk_sc_geo &g, const float *x, const float *wt,
                                         const float *b, float *y) {
    const int P = g.OH * g.OW, n = (int)(i / (size_t)P), j = (int)(i - (size_t)n * P);
    const int oh = j / g.OW, ow = j - oh * g.OW;
    float acc[CO];
    DPTK_UNROLL
    for (int co = 0; co < CO; co++) acc[co] = 0.0f;
    for (int ci = 0; ci < g.Cin; ci++) {
        float v[9];
        sc_window(g, x + ((size_t)n * g.Cin + ci) * g.H * g.W, oh, ow, v);
        DPTK_UNROLL
        for (int t = 0; t < 9; t++)
            DPTK_UNROLL
            for (int co = 0; co < CO; co++) acc[co] = radd(acc[co], rmul(wt[((size_t)co * g.Cin + ci) * 9 + t], v[t]));
    }
    DPTK_UNROLL
    for (int co = 0; co < CO; co++)
        y[((size_t)n * CO + co) * P + j] = b ? radd(acc[co], b[co]) : acc[co];
}

// dx[n, ci, ih, iw] += sum over (co, ki, kj) of w * dy[n, co, ih + pt - ki, iw + pl - kj]: the output gradient's
// window (CO x 9 values, 0 outside) read once per pixel, then every input channel in turn
template <int CO>
__host__ __device__ inline void t_sc_bwd_data(size_t i, const dptk_sc_geo &g, const float *dy, const float *wt,
                                              float *dx) {
    const int P = g.H * g.W, n = (int)(i / (size_t)P), j = (int)(i - (size_t)n * P);
    const int ih = j / g.W, iw = j - ih * g.W;
    float d[CO * 9];
    DPTK_UNROLL
    for (int ki = 0; ki < 3; ki++) {
        const int oh = ih + g.pt - ki;
        DPTK_UNROLL
        for (int kj = 0; kj < 3; kj++) {
            const int ow = iw + g.pl - kj;
            const bool in = oh >= 0 && oh < g.OH && ow >= 0 && ow < g.OW;
            DPTK_UNROLL
            for (int co = 0; co < CO; co++)
                d[co * 9 + ki * 3 + kj] = in ? dy[(((size_t)n * CO + co) * g.OH + oh) * g.OW + ow] : 0.0f;
        }
    }
    for (int ci = 0; ci < g.Cin; ci++) {
        float *o = dx + ((size_t)n * g.Cin + ci) * P + j;
        float acc = *o;
        DPTK_UNROLL
        for (int co = 0; co < CO; co++) {
            const float *wk = wt + ((size_t)co * g.Cin + ci) * 9;
            DPTK_UNROLL
            for (int t = 0; t < 9; t++) acc = radd(acc, rmul(wk[t], d[co * 9 + t]));
        }
        *o = acc;
    }
}

// the filter gradient's terms of pixel m = (n, oh, ow) for input channel ci: s[co * 9 + tap] += x * dy
template <int CO>
__host__ __device__ inline void t_sc_filter_terms(unsigned m, const dptk_sc_geo &g, int ci, const float *x,
                                                  const float *dy, double *s) {
    const unsigned P = (unsigned)(g.OH * g.OW), n = m / P, r = m - n * P;
    const int oh = (int)(r / (unsigned)g.OW), ow = (int)(r - (unsigned)oh * (unsigned)g.OW);
    float d[CO], v[9];
    DPTK_UNROLL
    for (int co = 0; co < CO; co++) d[co] = dy[((size_t)n * CO + co) * P + r];
    sc_window(g, x + ((size_t)n * g.Cin + ci) * g.H * g.W, oh, ow, v);
    DPTK_UNROLL
    for (int t = 0; t < 9; t++)
        DPTK_UNROLL
        for (int co = 0; co < CO; co++) s[co * 9 + t] += (double)rmul(v[t], d[co]);
}

#ifndef DPTK_HOST_CHECK
template <int CO>
__global__ void k_sc_fwd(size_t total, dptk_sc_geo g, const float *x, const float *wt, const float *b, float *y) {
    GRID_LOOP(i, total) t_sc_fwd<CO>(i, g, x, wt, b, y);
}
template <int CO>
__global__ void k_sc_bwd_data(size_t total, dptk_sc_geo g, const float *dy, const float *wt, float *dx) {
    GRID_LOOP(i, total) t_sc_bwd_data<CO>(i, g, dy, wt, dx);
}
// block (ci, piece): pixels [piece * RED_CHUNK, ...); part[((co * Cin + ci) * 9 + tap) * parts + piece]
template <int CO>
__global__ void k_sc_bwd_filter(double *part, dptk_sc_geo g, int parts, const float *x, const float *dy) {
    __shared__ double sh[TPB];
    const int ci = (int)(blockIdx.x / (unsigned)parts), piece = (int)(blockIdx.x % (unsigned)parts);
    const unsigned M = (unsigned)g.N * (unsigned)(g.OH * g.OW), m0 = (unsigned)piece * (unsigned)RED_CHUNK;
    const unsigned m1 = M - m0 < RED_CHUNK ? M : m0 + (unsigned)RED_CHUNK;
    double s[CO * 9];
#pragma unroll
    for (int t = 0; t < CO * 9; t++) s[t] = 0.0;
    for (unsigned m = m0 + threadIdx.x; m < m1; m += blockDim.x) t_sc_filter_terms<CO>(m, g, ci, x, dy, s);
#pragma unroll
    for (int t = 0; t < CO * 9; t++) {
        const double v = block_sum(s[t], sh);
        if (threadIdx.x == 0) part[(((size_t)(t / 9) * g.Cin + ci) * 9 + t % 9) * parts + piece] = v;
    }
}
#endif

} // namespace

// RUN: train_launch.h

extern "C" {

int dptk_red_parts(int N, size_t HW) {
    const size_t M = (size_t)N * HW, p = (M + RED_CHUNK - 1) / RED_CHUNK;
    return p ? (int)p : 1;
}

size_t dptk_red_bytes(int N, int C, size_t HW) { return (size_t)C * (size_t)dptk_red_parts(N, HW) * 2 * sizeof(double); }

int dptk_chan_reduce(void *stream, int kind, double *part, int N, int C, size_t HW, const float *a, const float *b,
                     const void *mean) {
    const size_t M = (size_t)N * HW;
    const int parts = dptk_red_parts(N, HW);
    const size_t nb = (size_t)C * parts;
    if (nb > 0x7fffffffu) return (int)cudaErrorInvalidConfiguration;
#ifdef DPTK_HOST_CHECK
    (void)stream;
    switch (kind) {
    case DPTK_RED_SUM: host_chan_reduce<DPTK_RED_SUM>(part, C, HW, M, parts, a, b, mean); return 0;
    case DPTK_RED_DOT: host_chan_reduce<DPTK_RED_DOT>(part, C, HW, M, parts, a, b, mean); return 0;
    case DPTK_RED_SQDEV: host_chan_reduce<DPTK_RED_SQDEV>(part, C, HW, M, parts, a, b, mean); return 0;
    case DPTK_RED_BN: host_chan_reduce<DPTK_RED_BN>(part, C, HW, M, parts, a, b, mean); return 0;
    default: return (int)cudaErrorInvalidValue;
    }
#else
    const unsigned th = red_threads(M < RED_CHUNK ? M : RED_CHUNK);
    cudaStream_t s = (cudaStream_t)stream;
    switch (kind) {
    case DPTK_RED_SUM: k_chan_reduce<DPTK_RED_SUM><<<(unsigned)nb, th, 0, s>>>(part, C, HW, M, parts, a, b, mean); break;
    case DPTK_RED_DOT: k_chan_reduce<DPTK_RED_DOT><<<(unsigned)nb, th, 0, s>>>(part, C, HW, M, parts, a, b, mean); break;
    case DPTK_RED_SQDEV:
        k_chan_reduce<DPTK_RED_SQDEV><<<(unsigned)nb, th, 0, s>>>(part, C, HW, M, parts, a, b, mean);
        break;
    case DPTK_RED_BN: k_chan_reduce<DPTK_RED_BN><<<(unsigned)nb, th, 0, s>>>(part, C, HW, M, parts, a, b, mean); break;
    default: return (int)cudaErrorInvalidValue;
    }
    return (int)cudaGetLastError();
#endif
}

int dptk_dw_fwd(void *stream, const dptk_dw_geo *g, const float *x, const float *wt, const float *b, float *y) {
    if ((size_t)g->N * g->C * g->OH * g->OW == 0) return 0;
    if (dw_s1<0>(stream, g, x, wt, b, y) || dw_fast<0>(stream, g, x, wt, b, y)) {
#ifdef DPTK_HOST_CHECK
        return 0;
#else
        return (int)cudaGetLastError();
#endif
    }
    RUN((size_t)g->N * g->C * g->OH * g->OW, c_dw_fwd, *g, x, wt, b, y);
}
int dptk_dw_bwd_data(void *stream, const dptk_dw_geo *g, const float *dy, const float *wt, float *dx) {
    if ((size_t)g->N * g->C * g->H * g->W == 0) return 0;
    if (dw_s1<1>(stream, g, dy, wt, NULL, dx) || dw_fast<1>(stream, g, dy, wt, NULL, dx)) {
#ifdef DPTK_HOST_CHECK
        return 0;
#else
        return (int)cudaGetLastError();
#endif
    }
    RUN((size_t)g->N * g->C * g->H * g->W, c_dw_bwd_data, *g, dy, wt, dx);
}
int dptk_dw_bwd_filter_parts(const dptk_dw_geo *g) {
#ifndef DPTK_HOST_CHECK
    if (dw_filter_s1(g)) {
        const size_t G = (size_t)g->N * g->OH * ((g->OW + DW_R - 1) / DW_R);
        return (int)((G + DW_GCHUNK - 1) / DW_GCHUNK);
    }
#endif
    const size_t M = (size_t)g->N * g->OH * g->OW;
    return (int)(M == 0 ? 1 : (M + RED_CHUNK - 1) / RED_CHUNK);
}
size_t dptk_dw_bwd_filter_bytes(const dptk_dw_geo *g) {
    return (size_t)g->C * g->kh * g->kw * (size_t)dptk_dw_bwd_filter_parts(g) * sizeof(double);
}
int dptk_dw_bwd_filter(void *stream, const dptk_dw_geo *g, double *part, const float *x, const float *dy, float *dw) {
    const int parts = dptk_dw_bwd_filter_parts(g), taps = g->kh * g->kw;
    const size_t nb = (size_t)g->C * taps * parts, M = (size_t)g->N * g->OH * g->OW;
    if (nb == 0) return 0;
    if (nb > 0x7fffffffu) return (int)cudaErrorInvalidConfiguration;
#ifdef DPTK_HOST_CHECK
    for (size_t blk = 0; blk < nb; blk++) { /* each block's pixels in order */
        const size_t ct = blk / (size_t)parts, m0 = (blk % (size_t)parts) * RED_CHUNK;
        const size_t m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
        const int ch = (int)(ct / (size_t)taps), tap = (int)(ct % (size_t)taps);
        double s = 0.0;
        for (size_t m = m0; m < m1; m++) s += dw_filter_term(m, *g, ch, tap / g->kw, tap % g->kw, x, dy);
        part[blk] = s;
    }
#else
    const unsigned th = red_threads(M < RED_CHUNK ? M : RED_CHUNK);
    const size_t nbc = (size_t)g->C * parts; /* all taps of a channel per block (the fast paths) */
    cudaStream_t st = (cudaStream_t)stream;
    const int s1 = dw_filter_s1(g) ? dw_fast_code(g) * 10 + g->dh : 0;
    const size_t G = (size_t)g->N * g->OH * ((g->OW + DW_R - 1) / DW_R);
    const unsigned ths = red_threads(G < (size_t)DW_GCHUNK ? G : (size_t)DW_GCHUNK);
    switch (s1 ? s1 : dw_fast_code(g)) {
    case 311: k_dw_bwd_filter_s1<3, 1><<<(unsigned)nbc, ths, 0, st>>>(part, *g, parts, x, dy); break;
    case 312: k_dw_bwd_filter_s1<3, 2><<<(unsigned)nbc, ths, 0, st>>>(part, *g, parts, x, dy); break;
    case 511: k_dw_bwd_filter_s1<5, 1><<<(unsigned)nbc, ths, 0, st>>>(part, *g, parts, x, dy); break;
    case 512: k_dw_bwd_filter_s1<5, 2><<<(unsigned)nbc, ths, 0, st>>>(part, *g, parts, x, dy); break;
    case 31: k_dw_bwd_filter_t<3, 3, 1><<<(unsigned)nbc, th, 0, st>>>(part, *g, parts, x, dy); break;
    case 32: k_dw_bwd_filter_t<3, 3, 2><<<(unsigned)nbc, th, 0, st>>>(part, *g, parts, x, dy); break;
    case 51: k_dw_bwd_filter_t<5, 5, 1><<<(unsigned)nbc, th, 0, st>>>(part, *g, parts, x, dy); break;
    case 52: k_dw_bwd_filter_t<5, 5, 2><<<(unsigned)nbc, th, 0, st>>>(part, *g, parts, x, dy); break;
    default: k_dw_bwd_filter<<<(unsigned)nb, th, 0, st>>>(part, *g, parts, x, dy); /* one block per (channel, tap) */
    }
    const int e = (int)cudaGetLastError();
    if (e) return e;
#endif
    RUN((size_t)g->C * taps, c_fin_sum, part, parts, dw, 1, 1.0);
}
int dptk_fin_sum(void *stream, const double *part, int C, int parts, float *out, int accumulate, double div) {
    RUN((size_t)C, c_fin_sum, part, parts, out, accumulate, div);
}

int dptk_bn_fin_mean(void *stream, const double *part, int C, int parts, size_t M, double *mean) {
    RUN((size_t)C, c_bn_fin_mean, part, parts, M, mean);
}

int dptk_bn_fin_var(void *stream, const double *part, int C, int parts, size_t M, const double *mean,
                    const float *gamma, const float *beta, double eps, double momentum, float *run_mean,
                    float *run_var, float *save_mean, float *save_invstd, float *alpha, float *shift) {
    RUN((size_t)C, c_bn_fin_var, part, parts, M, mean, gamma, beta, eps, momentum, run_mean, run_var, save_mean,
        save_invstd, alpha, shift);
}

int dptk_bn_eval_coef(void *stream, int C, const float *gamma, const float *beta, const float *run_mean,
                      const float *run_var, double eps, float *alpha, float *shift) {
    RUN((size_t)C, c_bn_eval_coef, gamma, beta, run_mean, run_var, eps, alpha, shift);
}

int dptk_bn_apply(void *stream, float *y, const float *x, const float *alpha, const float *shift, int N, int C,
                  size_t HW) {
#ifndef DPTK_HOST_CHECK
    dim3 g;
    unsigned th;
    const int v4 = HW % 4 == 0 && ((uintptr_t)x | (uintptr_t)y) % 16 == 0;
    if (plane_grid((size_t)N * C, v4 ? HW / 4 : HW, &g, &th)) {
        if (v4) k_bn_apply_planes<4><<<g, th, 0, (cudaStream_t)stream>>>(y, x, alpha, shift, C, HW);
        else k_bn_apply_planes<1><<<g, th, 0, (cudaStream_t)stream>>>(y, x, alpha, shift, C, HW);
        return (int)cudaGetLastError();
    }
#endif
    RUN((size_t)N * C * HW, e_bn_apply, y, x, alpha, shift, C, HW);
}

int dptk_bn_bwd_fin(void *stream, const double *part, int C, int parts, size_t M, const float *save_mean,
                    const float *save_invstd, const float *gamma, float *dgamma, float *dbeta, float *coef) {
    RUN((size_t)C, c_bn_bwd_fin, part, parts, M, save_mean, save_invstd, gamma, dgamma, dbeta, coef);
}

#ifndef DPTK_HOST_CHECK
// inside a launcher with `stream`: KERNEL<act>(args) over plane_grid(planes, per_plane) for act 0, 1, 2, then
// returns the launch's status; falls through when the planes do not fit a grid (the caller's generic RUN)
#define PLANES_ACT(act, planes, per_plane, KERNEL, ...)                                                       \
    do {                                                                                                   \
        dim3 g_;                                                                                           \
        unsigned th_;                                                                                      \
        if (plane_grid((planes), (per_plane), &g_, &th_)) {                                                \
            cudaStream_t st_ = (cudaStream_t)stream;                                                       \
            if ((act) == 1) KERNEL<1><<<g_, th_, 0, st_>>>(__VA_ARGS__);                                   \
            else if ((act) == 2) KERNEL<2><<<g_, th_, 0, st_>>>(__VA_ARGS__);                              \
            else KERNEL<0><<<g_, th_, 0, st_>>>(__VA_ARGS__);                                              \
            return (int)cudaGetLastError();                                                                \
        }                                                                                                  \
    } while (0)
#endif

int dptk_bn_act_apply(void *stream, int act, float *y, float *z, const float *x, const float *alpha,
                      const float *shift, int N, int C, size_t HW) {
    if (act < 0 || act > 2) return (int)cudaErrorInvalidValue;
#ifndef DPTK_HOST_CHECK
    PLANES_ACT(act, (size_t)N * C, HW, k_bn_act_apply_planes, y, z, x, alpha, shift, C, HW);
#endif
    RUN((size_t)N * C * HW, e_bn_act_apply, act, y, z, x, alpha, shift, C, HW);
}

int dptk_bn_act_reduce(void *stream, int act, double *part, int N, int C, size_t HW, const float *x,
                       const float *alpha, const float *shift, const float *dz, const float *mean) {
    if (act < 0 || act > 2) return (int)cudaErrorInvalidValue;
    const size_t M = (size_t)N * HW;
    const int parts = dptk_red_parts(N, HW);
    const size_t nb = (size_t)C * parts;
    if (nb > 0x7fffffffu) return (int)cudaErrorInvalidConfiguration;
#ifdef DPTK_HOST_CHECK
    (void)stream;
    for (size_t blk = 0; blk < nb; blk++) { /* each block's elements in order */
        const int ch = (int)(blk / (size_t)parts), piece = (int)(blk % (size_t)parts);
        const size_t m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
        const double mu = (double)mean[ch];
        double s0 = 0.0, s1 = 0.0;
        for (size_t m = m0; m < m1; m++) {
            const size_t i = red_idx(m, C, ch, HW);
            const double g = (double)act_grad0(act, dz[i], radd(rmul(x[i], alpha[ch]), shift[ch]));
            s0 += g;
            s1 += g * ((double)x[i] - mu);
        }
        part[blk * 2] = s0;
        part[blk * 2 + 1] = s1;
    }
    return 0;
#else
    const unsigned th = red_threads(M < RED_CHUNK ? M : RED_CHUNK);
    cudaStream_t st = (cudaStream_t)stream;
    if (act == 1) k_bn_act_reduce<1><<<(unsigned)nb, th, 0, st>>>(part, C, HW, M, parts, x, alpha, shift, dz, mean);
    else if (act == 2)
        k_bn_act_reduce<2><<<(unsigned)nb, th, 0, st>>>(part, C, HW, M, parts, x, alpha, shift, dz, mean);
    else k_bn_act_reduce<0><<<(unsigned)nb, th, 0, st>>>(part, C, HW, M, parts, x, alpha, shift, dz, mean);
    return (int)cudaGetLastError();
#endif
}

int dptk_bn_act_bwd_apply(void *stream, int act, float *dx, int fresh, const float *x, const float *alpha,
                          const float *shift, const float *dz, const float *coef, int N, int C, size_t HW) {
    if (act < 0 || act > 2) return (int)cudaErrorInvalidValue;
#ifndef DPTK_HOST_CHECK
    PLANES_ACT(act, (size_t)N * C, HW, k_bn_act_bwd_apply_planes, dx, fresh, x, alpha, shift, dz, coef, C, HW);
#endif
    RUN((size_t)N * C * HW, e_bn_act_bwd_apply, act, dx, fresh, x, alpha, shift, dz, coef, C, HW);
}

int dptk_bn_bwd_apply(void *stream, float *dx, const float *x, const float *dy, const float *coef, int N, int C,
                      size_t HW) {
#ifndef DPTK_HOST_CHECK
    dim3 g;
    unsigned th;
    const int v4 = HW % 4 == 0 && ((uintptr_t)dx | (uintptr_t)x | (uintptr_t)dy) % 16 == 0;
    if (plane_grid((size_t)N * C, v4 ? HW / 4 : HW, &g, &th)) {
        if (v4) k_bn_bwd_apply_planes<4><<<g, th, 0, (cudaStream_t)stream>>>(dx, x, dy, coef, C, HW);
        else k_bn_bwd_apply_planes<1><<<g, th, 0, (cudaStream_t)stream>>>(dx, x, dy, coef, C, HW);
        return (int)cudaGetLastError();
    }
#endif
    RUN((size_t)N * C * HW, e_bn_bwd_apply, dx, x, dy, coef, C, HW);
}

int dptk_bn_eval_bwd_fin(void *stream, const double *part, int C, int parts, const float *run_var, double eps,
                         float *dgamma, float *dbeta) {
    RUN((size_t)C, c_bn_eval_bwd_fin, part, parts, run_var, eps, dgamma, dbeta);
}

int dptk_fill(void *stream, float *x, size_t n, float v) { RUN(n, e_fill, x, v); }

int dptk_mul_plane(void *stream, float *y, const float *x, const float *g, size_t count, size_t HW, size_t mod,
                   int accumulate) {
    RUN(count, e_mul_plane, y, x, g, HW, mod, accumulate);
}

int dptk_crop_add(void *stream, float *dx, const float *dxp, int N, int C, int H, int W, int Hp, int Wp, int pt,
                  int pl) {
    RUN((size_t)N * C * H * W, e_crop_add, dx, dxp, H, W, Hp, Wp, pt, pl);
}

int dptk_act_fwd(void *stream, int act, size_t n, const float *x, float *y) {
#ifndef DPTK_HOST_CHECK
    if (n % 4 == 0 && n > 0 && ((uintptr_t)x | (uintptr_t)y) % 16 == 0 && act >= 0 && act <= 3) {
        const size_t n4 = n / 4;
        cudaStream_t st = (cudaStream_t)stream;
        const float4 *xv = (const float4 *)x;
        float4 *yv = (float4 *)y;
        switch (act) {
        case 1: k_act_fwd_v4<1><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv); break;
        case 2: k_act_fwd_v4<2><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv); break;
        case 3: k_act_fwd_v4<3><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv); break;
        default: k_act_fwd_v4<0><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv); break;
        }
        return (int)cudaGetLastError();
    }
#endif
    RUN(n, e_act_fwd, act, x, y);
}

int dptk_act_bwd(void *stream, int act, size_t n, const float *x, const float *y, const float *dy, float *dx) {
#ifndef DPTK_HOST_CHECK
    const float *rd = act == 3 ? y : x; // the tensor this activation's backward reads
    if (n % 4 == 0 && n > 0 && rd && ((uintptr_t)rd | (uintptr_t)dy | (uintptr_t)dx) % 16 == 0 && act >= 0 &&
        act <= 3) {
        const size_t n4 = n / 4;
        cudaStream_t st = (cudaStream_t)stream;
        const float4 *xv = (const float4 *)x, *yv = (const float4 *)y, *gv = (const float4 *)dy;
        float4 *dv = (float4 *)dx;
        switch (act) {
        case 1: k_act_bwd_v4<1><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv, gv, dv); break;
        case 2: k_act_bwd_v4<2><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv, gv, dv); break;
        case 3: k_act_bwd_v4<3><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv, gv, dv); break;
        default: k_act_bwd_v4<0><<<blocks_for(n4), TPB, 0, st>>>(n4, xv, yv, gv, dv); break;
        }
        return (int)cudaGetLastError();
    }
#endif
    RUN(n, e_act_bwd, act, x, y, dy, dx);
}

int dptk_gap_bwd(void *stream, size_t count, size_t HW, const float *dy, float *dx) {
    RUN(count, e_gap_bwd, HW, dy, dx);
}

int dptk_broadcast(void *stream, size_t count, size_t HW, const float *x, float *y) {
    RUN(count, e_broadcast, HW, x, y);
}

int dptk_scse_fwd(void *stream, int N, int C, size_t HW, const float *x, const float *cg, const float *sg, float *y) {
    RUN((size_t)N * C * HW, e_scse_fwd, C, HW, x, cg, sg, y);
}

int dptk_scse_bwd_dx(void *stream, int N, int C, size_t HW, const float *cg, const float *sg, const float *dy,
                     float *dx) {
    RUN((size_t)N * C * HW, e_scse_bwd_dx, C, HW, cg, sg, dy, dx);
}

int dptk_scse_bwd_dsg(void *stream, int N, int C, size_t HW, const float *x, const float *dy, float *dsg) {
    RUN((size_t)N * HW, e_scse_bwd_dsg, C, HW, x, dy, dsg);
}

int dptk_add(void *stream, size_t n, const float *a, const float *b, float *y) { RUN(n, e_add, a, b, y); }

int dptk_acc(void *stream, size_t n, const float *dy, float *dx) { RUN(n, e_acc, dy, dx); }
int dptk_to_bf16(void *stream, size_t n, const float *x, uint16_t *y) { RUN(n, e_to_bf16, x, y); }
int dptk_acc_parts(void *stream, size_t n, const float *part, int count, float *dx) {
    RUN(n, e_acc_parts, part, n, count, dx);
}

int dptk_concat_part(void *stream, int N, int Cx, int Cy, int c0, size_t HW, const float *x, float *y) {
    RUN((size_t)N * Cx * HW, e_concat_part, Cx, Cy, c0, HW, x, y);
}

int dptk_split_part(void *stream, int N, int Cx, int Cy, int c0, size_t HW, const float *dy, float *dx) {
    RUN((size_t)N * Cx * HW, e_split_part, Cx, Cy, c0, HW, dy, dx);
}

int dptk_upsample_fwd(void *stream, size_t NC, int h, int w, int f, const float *x, float *y) {
    RUN(NC * (size_t)h * f * (size_t)w * f, e_up_fwd, h, w, f, x, y);
}

int dptk_upsample_bwd(void *stream, size_t NC, int h, int w, int f, const float *dy, float *dx) {
    RUN(NC * (size_t)h * w, e_up_bwd, h, w, f, dy, dx);
}

int dptk_softmax_fwd(void *stream, int N, int C, size_t HW, const float *x, float *y) {
    RUN((size_t)N * HW, e_softmax_fwd, C, HW, x, y);
}

int dptk_softmax_bwd(void *stream, int N, int C, size_t HW, const float *y, const float *dy, float *dx) {
    RUN((size_t)N * HW, e_softmax_bwd, C, HW, y, dy, dx);
}

int dptk_dropout(void *stream, size_t n, float scale, const uint8_t *mask, const float *x, float *y, int accumulate) {
    RUN(n, e_dropout, scale, mask, x, y, accumulate);
}

int dptk_drop_connect(void *stream, size_t n, size_t per, float keep, const uint8_t *mask, const float *x, float *y,
                      int accumulate) {
    RUN(n, e_drop_connect, per, keep, mask, x, y, accumulate);
}

int dptk_sc_ok(const dptk_sc_geo *g) {
    return g->Cout >= 1 && g->Cout <= 4 && g->N >= 1 && g->Cin >= 1 && (size_t)g->H * g->W < 0x7fffffffu &&
           (size_t)g->N * g->OH * g->OW < 0x7fffffffu;
}
#define SC_SWITCH(CALL)                                                                                        \
    switch (g->Cout) {                                                                                         \
    case 1: CALL(1); break;                                                                                    \
    case 2: CALL(2); break;                                                                                    \
    case 3: CALL(3); break;                                                                                    \
    case 4: CALL(4); break;                                                                                    \
    default: return (int)cudaErrorInvalidValue;                                                                \
    }
int dptk_sc_fwd(void *stream, const dptk_sc_geo *g, const float *x, const float *wt, const float *b, float *y) {
    if (!dptk_sc_ok(g)) return (int)cudaErrorInvalidValue;
    const size_t n = (size_t)g->N * g->OH * g->OW;
    if (n == 0) return 0;
#ifdef DPTK_HOST_CHECK
    (void)stream;
#define SC_FWD(CO) for (size_t i = 0; i < n; i++) t_sc_fwd<CO>(i, *g, x, wt, b, y)
#else
#define SC_FWD(CO) k_sc_fwd<CO><<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(n, *g, x, wt, b, y)
#endif
    SC_SWITCH(SC_FWD)
#undef SC_FWD
#ifdef DPTK_HOST_CHECK
    return 0;
#else
    return (int)cudaGetLastError();
#endif
}
int dptk_sc_bwd_data(void *stream, const dptk_sc_geo *g, const float *dy, const float *wt, float *dx) {
    if (!dptk_sc_ok(g)) return (int)cudaErrorInvalidValue;
    const size_t n = (size_t)g->N * g->H * g->W;
    if (n == 0) return 0;
#ifdef DPTK_HOST_CHECK
    (void)stream;
#define SC_DATA(CO) for (size_t i = 0; i < n; i++) t_sc_bwd_data<CO>(i, *g, dy, wt, dx)
#else
#define SC_DATA(CO) k_sc_bwd_data<CO><<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(n, *g, dy, wt, dx)
#endif
    SC_SWITCH(SC_DATA)
#undef SC_DATA
#ifdef DPTK_HOST_CHECK
    return 0;
#else
    return (int)cudaGetLastError();
#endif
}
int dptk_sc_bwd_filter_parts(const dptk_sc_geo *g) {
    const size_t M = (size_t)g->N * g->OH * g->OW;
    return (int)(M == 0 ? 1 : (M + RED_CHUNK - 1) / RED_CHUNK);
}
size_t dptk_sc_bwd_filter_bytes(const dptk_sc_geo *g) {
    return (size_t)g->Cout * g->Cin * 9 * (size_t)dptk_sc_bwd_filter_parts(g) * sizeof(double);
}
int dptk_sc_bwd_filter(void *stream, const dptk_sc_geo *g, double *part, const float *x, const float *dy, float *dw) {
    if (!dptk_sc_ok(g)) return (int)cudaErrorInvalidValue;
    const int parts = dptk_sc_bwd_filter_parts(g);
    const size_t M = (size_t)g->N * g->OH * g->OW, nb = (size_t)g->Cin * parts;
    if (nb > 0x7fffffffu) return (int)cudaErrorInvalidConfiguration;
#ifdef DPTK_HOST_CHECK
    for (size_t blk = 0; blk < nb; blk++) { /* each block's pixels in order */
        const int ci = (int)(blk / (size_t)parts), piece = (int)(blk % (size_t)parts);
        const size_t m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
        double s[4 * 9] = {0};
#define SC_FILT(CO) for (size_t m = m0; m < m1; m++) t_sc_filter_terms<CO>((unsigned)m, *g, ci, x, dy, s)
        SC_SWITCH(SC_FILT)
#undef SC_FILT
        for (int t = 0; t < g->Cout * 9; t++)
            part[(((size_t)(t / 9) * g->Cin + ci) * 9 + t % 9) * parts + piece] = s[t];
    }
#else
    const unsigned th = red_threads(M < RED_CHUNK ? M : RED_CHUNK);
#define SC_FILT(CO) k_sc_bwd_filter<CO><<<(unsigned)nb, th, 0, (cudaStream_t)stream>>>(part, *g, parts, x, dy)
    SC_SWITCH(SC_FILT)
#undef SC_FILT
    const int e = (int)cudaGetLastError();
    if (e) return e;
#endif
    RUN((size_t)g->Cout * g->Cin * 9, c_fin_sum, part, parts, dw, 1, 1.0);
}
#undef SC_SWITCH

} // extern "C"
