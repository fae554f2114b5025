// train_kernels.cu - the training ops' own kernels (issue 5): per-channel reductions and batch norm, activations,
// GAP, broadcast, channel scale, SCSE, add, concat/split, bilinear upsampling, softmax, dropout, drop-connect;
// float32 only. cuDNN does the convolutions (train_ops.c); masks, losses and the optimizer are in train_loss.cu.
//
// Conventions (see train_kernels.h):
//  - every launcher is extern "C", takes the context's stream, launches, returns cudaGetLastError();
//  - element-wise math repeats the CPU kernel's (core/train/grad_tmpl.h) operations in its order, each float
//    operation rounded on its own (__fmul_rn and friends: nvcc would otherwise contract a * b + c into an FMA,
//    which the CPU build, ISO C without -ffp-contract, never does); exp is expf (<= 2 ulp, glibc's is
//    correctly rounded: sigmoid, swish and softmax may differ from the CPU by an ulp or two);
//  - reductions (BN statistics and gradients, GAP, per-channel gradients) accumulate in double: a fixed number
//    of blocks per channel for a given shape, a shared-memory tree in each block, the blocks' partial sums
//    added in order by a finishing kernel: deterministic run to run, no atomics anywhere;
//  - the bilinear backward gathers: each input pixel sums the contributions of the output pixels that read
//    it, in the CPU scatter's order (output pixels row-major, the four taps of each in order), so it equals
//    the CPU's result bit for bit, without atomics.
#include <cuda_runtime.h>
#include <stdint.h>

#include "train_kernels.h"

namespace {

constexpr int TPB = 256;
constexpr size_t RED_CHUNK = 16384; // elements of a channel per reduction block

inline unsigned blocks_for(size_t n) {
    size_t b = (n + TPB - 1) / TPB;
    if (b == 0) b = 1;
    return (unsigned)(b > 65535u * 64u ? 65535u * 64u : b);
}

#define GRID_LOOP(i, total)                                                                                    \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

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

// ------------------------------------------------------------------ per-channel reductions
template <int KIND>
__global__ void k_chan_reduce(double *part, int C, size_t HW, size_t M, int parts, const float *a, const float *b,
                              const void *mean) {
    __shared__ double sh[TPB];
    const size_t blk = blockIdx.x;
    const int ch = (int)(blk / (size_t)parts), piece = (int)(blk % (size_t)parts);
    const size_t m0 = (size_t)piece * RED_CHUNK, m1 = M - m0 < RED_CHUNK ? M : m0 + RED_CHUNK;
    double mu = 0.0;
    if (KIND == DPTK_RED_SQDEV) mu = ((const double *)mean)[ch];
    if (KIND == DPTK_RED_BN) mu = (double)((const float *)mean)[ch];
    double s0 = 0.0, s1 = 0.0;
    for (size_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
        const size_t idx = ((m / HW) * (size_t)C + (size_t)ch) * HW + m % HW;
        if (KIND == DPTK_RED_SUM) {
            s0 += (double)a[idx];
        } else if (KIND == DPTK_RED_DOT) {
            s0 += (double)__fmul_rn(a[idx], b[idx]);
        } else if (KIND == DPTK_RED_SQDEV) {
            const double d = (double)a[idx] - mu;
            s0 += d * d;
        } else {
            const double g = (double)b[idx];
            s0 += g;
            s1 += g * ((double)a[idx] - mu);
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

__global__ void k_fin_sum(const double *part, int C, int parts, float *out, int accumulate, double div) {
    GRID_LOOP(ch, (size_t)C) {
        double s = 0.0;
        for (int p = 0; p < parts; p++) s += part[ch * parts + p];
        out[ch] = accumulate ? __fadd_rn(out[ch], (float)s) : (float)(s / div);
    }
}

// ------------------------------------------------------------------ batch norm
__global__ void k_bn_fin_mean(const double *part, int C, int parts, size_t M, double *mean) {
    GRID_LOOP(ch, (size_t)C) {
        double s = 0.0;
        for (int p = 0; p < parts; p++) s += part[ch * parts + p];
        mean[ch] = s / (double)M;
    }
}

__global__ void k_bn_fin_var(const double *part, int C, int parts, size_t M, const double *meanv, const float *gamma,
                             const float *beta, double eps, double momentum, float *run_mean, float *run_var,
                             float *save_mean, float *save_invstd, float *alpha, float *shift) {
    GRID_LOOP(ch, (size_t)C) {
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
}

__global__ void k_bn_eval_coef(int C, const float *gamma, const float *beta, const float *rm, const float *rv,
                               double eps, float *alpha, float *shift) {
    GRID_LOOP(ch, (size_t)C) {
        const double invstd = 1.0 / sqrt((double)rv[ch] + eps);
        alpha[ch] = (float)((double)gamma[ch] * invstd);
        if (shift) shift[ch] = (float)((double)beta[ch] - (double)rm[ch] * (double)gamma[ch] * invstd);
    }
}

__global__ void k_bn_apply(float *y, const float *x, const float *alpha, const float *shift, int C, size_t HW,
                           size_t total) {
    GRID_LOOP(i, total) {
        const int ch = (int)((i / HW) % (size_t)C);
        y[i] = __fadd_rn(__fmul_rn(x[i], alpha[ch]), shift[ch]);
    }
}

__global__ void k_bn_bwd_fin(const double *part, int C, int parts, size_t M, const float *save_mean,
                             const float *save_invstd, const float *gamma, float *dgamma, float *dbeta, float *coef) {
    GRID_LOOP(ch, (size_t)C) {
        double sdy = 0.0, dot = 0.0;
        for (int p = 0; p < parts; p++) {
            sdy += part[(ch * parts + p) * 2];
            dot += part[(ch * parts + p) * 2 + 1];
        }
        const double mean = save_mean[ch], invstd = save_invstd[ch];
        if (dgamma) dgamma[ch] = __fadd_rn(dgamma[ch], (float)(dot * invstd));
        if (dbeta) dbeta[ch] = __fadd_rn(dbeta[ch], (float)sdy);
        coef[4 * ch + 0] = (float)mean;
        coef[4 * ch + 1] = (float)(dot / (double)M * invstd * invstd);
        coef[4 * ch + 2] = (float)(sdy / (double)M);
        coef[4 * ch + 3] = (float)((double)gamma[ch] * invstd);
    }
}

__global__ void k_bn_bwd_apply(float *dx, const float *x, const float *dy, const float *coef, int C, size_t HW,
                               size_t total) {
    GRID_LOOP(i, total) {
        const int ch = (int)((i / HW) % (size_t)C);
        const float tm = coef[4 * ch], k = coef[4 * ch + 1], gm = coef[4 * ch + 2], wi = coef[4 * ch + 3];
        const float t = __fsub_rn(__fsub_rn(dy[i], gm), __fmul_rn(__fsub_rn(x[i], tm), k));
        dx[i] = __fadd_rn(dx[i], __fmul_rn(t, wi));
    }
}

__global__ void k_bn_eval_bwd_fin(const double *part, int C, int parts, const float *rv, double eps, float *dgamma,
                                  float *dbeta) {
    GRID_LOOP(ch, (size_t)C) {
        double sdy = 0.0, dot = 0.0;
        for (int p = 0; p < parts; p++) {
            sdy += part[(ch * parts + p) * 2];
            dot += part[(ch * parts + p) * 2 + 1];
        }
        const double invstd = 1.0 / sqrt((double)rv[ch] + eps);
        if (dgamma) dgamma[ch] = __fadd_rn(dgamma[ch], (float)(dot * invstd));
        if (dbeta) dbeta[ch] = __fadd_rn(dbeta[ch], (float)sdy);
    }
}

// ------------------------------------------------------------------ element-wise
__global__ void k_fill(float *x, size_t n, float v) {
    GRID_LOOP(i, n) x[i] = v;
}

__global__ void k_mul_plane(float *y, const float *x, const float *g, size_t total, size_t HW, size_t mod,
                            int accumulate) {
    GRID_LOOP(i, total) {
        const float v = __fmul_rn(x[i], g[(i / HW) % mod]);
        y[i] = accumulate ? __fadd_rn(y[i], v) : v;
    }
}

__global__ void k_crop_add(float *dx, const float *dxp, int H, int W, int Hp, int Wp, int pt, int pl, size_t total) {
    GRID_LOOP(i, total) {
        const size_t j = i % (size_t)W, r = (i / (size_t)W) % (size_t)H, plane = i / ((size_t)W * H);
        dx[i] = __fadd_rn(dx[i], dxp[plane * Hp * Wp + (r + pt) * Wp + j + pl]);
    }
}

__device__ inline float sigm(float v) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-v))); }

__global__ void k_act_fwd(int act, size_t n, const float *x, float *y) {
    GRID_LOOP(i, n) {
        const float v = x[i];
        switch (act) {
        case 1: y[i] = v > 0.0f ? v : 0.0f; break;      // ReLU
        case 2: y[i] = __fmul_rn(v, sigm(v)); break;   // swish
        case 3: y[i] = sigm(v); break;                 // sigmoid
        default: y[i] = v; break;
        }
    }
}

__global__ void k_act_bwd(int act, size_t n, const float *x, const float *y, const float *dy, float *dx) {
    GRID_LOOP(i, n) {
        const float g = dy[i];
        float d;
        switch (act) {
        case 1: d = x[i] > 0.0f ? g : 0.0f; break;
        case 2: { // dy * (s * (1 + x * (1 - s)))
            const float s = sigm(x[i]);
            d = __fmul_rn(g, __fmul_rn(s, __fadd_rn(1.0f, __fmul_rn(x[i], __fsub_rn(1.0f, s)))));
            break;
        }
        case 3: d = __fmul_rn(__fmul_rn(g, __fsub_rn(1.0f, y[i])), y[i]); break; // dy * (1 - y) * y
        default: d = g; break;
        }
        dx[i] = __fadd_rn(dx[i], d);
    }
}

__global__ void k_gap_bwd(size_t total, size_t HW, const float *dy, float *dx) {
    GRID_LOOP(i, total) dx[i] = __fadd_rn(dx[i], (float)((double)dy[i / HW] / (double)HW));
}

__global__ void k_broadcast(size_t total, size_t HW, const float *x, float *y) {
    GRID_LOOP(i, total) y[i] = x[i / HW];
}

__global__ void k_scse_fwd(int C, size_t HW, size_t total, const float *x, const float *cg, const float *sg,
                           float *y) {
    GRID_LOOP(i, total) {
        const size_t q = i / HW, n = q / (size_t)C, p = i % HW;
        y[i] = __fadd_rn(__fmul_rn(x[i], cg[q]), __fmul_rn(x[i], sg[n * HW + p]));
    }
}

__global__ void k_scse_bwd_dx(int C, size_t HW, size_t total, const float *cg, const float *sg, const float *dy,
                              float *dx) {
    GRID_LOOP(i, total) {
        const size_t q = i / HW, n = q / (size_t)C, p = i % HW;
        dx[i] = __fadd_rn(dx[i], __fadd_rn(__fmul_rn(dy[i], cg[q]), __fmul_rn(dy[i], sg[n * HW + p])));
    }
}

__global__ void k_scse_bwd_dsg(int C, size_t HW, size_t total, const float *x, const float *dy, float *dsg) {
    GRID_LOOP(t, total) { // t = n * HW + p
        const size_t n = t / HW, p = t % HW;
        float acc = dsg[t];
        for (int ch = 0; ch < C; ch++) {
            const size_t i = (n * (size_t)C + (size_t)ch) * HW + p;
            acc = __fadd_rn(acc, __fmul_rn(dy[i], x[i]));
        }
        dsg[t] = acc;
    }
}

__global__ void k_add(size_t n, const float *a, const float *b, float *y) {
    GRID_LOOP(i, n) y[i] = __fadd_rn(a[i], b[i]);
}

__global__ void k_acc(size_t n, const float *dy, float *dx) {
    GRID_LOOP(i, n) dx[i] = __fadd_rn(dx[i], dy[i]);
}

__global__ void k_concat_part(int Cx, int Cy, int c0, size_t HW, size_t total, const float *x, float *y) {
    GRID_LOOP(i, total) {
        const size_t p = i % HW, c = (i / HW) % (size_t)Cx, n = i / (HW * (size_t)Cx);
        y[(n * (size_t)Cy + (size_t)c0 + c) * HW + p] = x[i];
    }
}

__global__ void k_split_part(int Cx, int Cy, int c0, size_t HW, size_t total, const float *dy, float *dx) {
    GRID_LOOP(i, total) {
        const size_t p = i % HW, c = (i / HW) % (size_t)Cx, n = i / (HW * (size_t)Cx);
        dx[i] = __fadd_rn(dx[i], dy[(n * (size_t)Cy + (size_t)c0 + c) * HW + p]);
    }
}

// ------------------------------------------------------------------ bilinear upsampling, align_corners=True
// float operations rounded on their own: the intrinsics on the device, plain (uncontracted) on the host (the
// coordinate helpers and the gather are __host__ __device__, so that they can be checked on the host too)
__host__ __device__ inline float up_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
__host__ __device__ inline float up_add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
__host__ __device__ inline float up_sub(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
__host__ __device__ inline float up_div(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

// the CPU's up_coord: scale = (in - 1) / (out - 1) in float, src = scale * o, i0 = (int)src, ...
__host__ __device__ inline void up_coord(int in, int out, int o, int *i0, int *i1, float *l0, float *l1) {
    const float scale = out > 1 ? up_div((float)(in - 1), (float)(out - 1)) : 0.0f;
    const float src = up_mul(scale, (float)o);
    int a = (int)src;
    if (a > in - 1) a = in - 1;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : in - 1;
    *l1 = up_sub(src, (float)a);
    *l0 = up_sub(1.0f, *l1);
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
            const float g = dY[(size_t)oh * OW + ow], g0 = up_mul(lh0, g), g1 = up_mul(lh1, g);
            if (m0 && c0) acc = up_add(acc, up_mul(lw0, g0));
            if (m0 && c1) acc = up_add(acc, up_mul(lw1, g0));
            if (m1 && c0) acc = up_add(acc, up_mul(lw0, g1));
            if (m1 && c1) acc = up_add(acc, up_mul(lw1, g1));
        }
    }
    return acc;
}

__global__ void k_up_fwd(int h, int w, int f, size_t total, const float *x, float *y) {
    const int OH = h * f, OW = w * f;
    GRID_LOOP(i, total) {
        const int ow = (int)(i % (size_t)OW), oh = (int)((i / (size_t)OW) % (size_t)OH);
        const size_t plane = i / ((size_t)OW * OH);
        int h0, h1, w0, w1;
        float lh0, lh1, lw0, lw1;
        up_coord(h, OH, oh, &h0, &h1, &lh0, &lh1);
        up_coord(w, OW, ow, &w0, &w1, &lw0, &lw1);
        const float *r0 = x + plane * h * w + (size_t)h0 * w, *r1 = x + plane * h * w + (size_t)h1 * w;
        const float t0 = __fadd_rn(__fmul_rn(lw0, r0[w0]), __fmul_rn(lw1, r0[w1]));
        const float t1 = __fadd_rn(__fmul_rn(lw0, r1[w0]), __fmul_rn(lw1, r1[w1]));
        y[i] = __fadd_rn(__fmul_rn(lh0, t0), __fmul_rn(lh1, t1));
    }
}

__global__ void k_up_bwd(int h, int w, int f, size_t total, const float *dy, float *dx) {
    GRID_LOOP(i, total) {
        const int iw = (int)(i % (size_t)w), ih = (int)((i / (size_t)w) % (size_t)h);
        const size_t plane = i / ((size_t)w * h);
        dx[i] = up_gather(h, w, f, dy + plane * h * f * w * f, ih, iw, dx[i]);
    }
}

// ------------------------------------------------------------------ softmax over channels
__global__ void k_softmax_fwd(int C, size_t HW, size_t total, const float *x, float *y) {
    GRID_LOOP(t, total) { // pixels (image, position)
        const size_t o = (t / HW) * (size_t)C * HW + t % HW;
        const float *X = x + o;
        float *Y = y + o;
        float m = X[0];
        for (int c = 1; c < C; c++) m = X[(size_t)c * HW] > m ? X[(size_t)c * HW] : m;
        double s = 0.0;
        for (int c = 0; c < C; c++) {
            const float e = expf(__fsub_rn(X[(size_t)c * HW], m));
            Y[(size_t)c * HW] = e;
            s += e;
        }
        const float inv = (float)(1.0 / s);
        for (int c = 0; c < C; c++) Y[(size_t)c * HW] = __fmul_rn(Y[(size_t)c * HW], inv);
    }
}

__global__ void k_softmax_bwd(int C, size_t HW, size_t total, const float *y, const float *dy, float *dx) {
    GRID_LOOP(t, total) {
        const size_t o = (t / HW) * (size_t)C * HW + t % HW;
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)__fmul_rn(dy[o + (size_t)c * HW], y[o + (size_t)c * HW]);
        const float td = (float)dot;
        for (int c = 0; c < C; c++) {
            const size_t i = o + (size_t)c * HW;
            dx[i] = __fadd_rn(dx[i], __fmul_rn(y[i], __fsub_rn(dy[i], td)));
        }
    }
}

// ------------------------------------------------------------------ dropout, drop-connect
__global__ void k_dropout(size_t n, float scale, const uint8_t *mask, const float *x, float *y, int accumulate) {
    GRID_LOOP(i, n) {
        const float v = __fmul_rn(__fmul_rn(x[i], (float)mask[i]), scale);
        y[i] = accumulate ? __fadd_rn(y[i], v) : v;
    }
}

__global__ void k_drop_connect(size_t n, size_t per, float keep, const uint8_t *mask, const float *x, float *y,
                               int accumulate) {
    GRID_LOOP(i, n) {
        const float m = (float)mask[i / per];
        if (accumulate) y[i] = __fadd_rn(y[i], __fdiv_rn(__fmul_rn(x[i], m), keep)); // (dy * binary) / keep
        else y[i] = __fmul_rn(__fdiv_rn(x[i], keep), m);                              // inputs / keep * binary
    }
}

} // namespace

#define LAUNCH1(kernel, n, ...)                                                                                \
    do {                                                                                                       \
        if ((n) == 0) return 0;                                                                                \
        kernel<<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(__VA_ARGS__);                                  \
        return (int)cudaGetLastError();                                                                        \
    } while (0)

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
}

int dptk_fin_sum(void *stream, const double *part, int C, int parts, float *out, int accumulate, double div) {
    LAUNCH1(k_fin_sum, (size_t)C, part, C, parts, out, accumulate, div);
}

int dptk_bn_fin_mean(void *stream, const double *part, int C, int parts, size_t M, double *mean) {
    LAUNCH1(k_bn_fin_mean, (size_t)C, part, C, parts, M, mean);
}

int dptk_bn_fin_var(void *stream, const double *part, int C, int parts, size_t M, const double *mean,
                    const float *gamma, const float *beta, double eps, double momentum, float *run_mean,
                    float *run_var, float *save_mean, float *save_invstd, float *alpha, float *shift) {
    LAUNCH1(k_bn_fin_var, (size_t)C, part, C, parts, M, mean, gamma, beta, eps, momentum, run_mean, run_var,
            save_mean, save_invstd, alpha, shift);
}

int dptk_bn_eval_coef(void *stream, int C, const float *gamma, const float *beta, const float *run_mean,
                      const float *run_var, double eps, float *alpha, float *shift) {
    LAUNCH1(k_bn_eval_coef, (size_t)C, C, gamma, beta, run_mean, run_var, eps, alpha, shift);
}

int dptk_bn_apply(void *stream, float *y, const float *x, const float *alpha, const float *shift, int N, int C,
                  size_t HW) {
    const size_t t = (size_t)N * C * HW;
    LAUNCH1(k_bn_apply, t, y, x, alpha, shift, C, HW, t);
}

int dptk_bn_bwd_fin(void *stream, const double *part, int C, int parts, size_t M, const float *save_mean,
                    const float *save_invstd, const float *gamma, float *dgamma, float *dbeta, float *coef) {
    LAUNCH1(k_bn_bwd_fin, (size_t)C, part, C, parts, M, save_mean, save_invstd, gamma, dgamma, dbeta, coef);
}

int dptk_bn_bwd_apply(void *stream, float *dx, const float *x, const float *dy, const float *coef, int N, int C,
                      size_t HW) {
    const size_t t = (size_t)N * C * HW;
    LAUNCH1(k_bn_bwd_apply, t, dx, x, dy, coef, C, HW, t);
}

int dptk_bn_eval_bwd_fin(void *stream, const double *part, int C, int parts, const float *run_var, double eps,
                         float *dgamma, float *dbeta) {
    LAUNCH1(k_bn_eval_bwd_fin, (size_t)C, part, C, parts, run_var, eps, dgamma, dbeta);
}

int dptk_fill(void *stream, float *x, size_t n, float v) { LAUNCH1(k_fill, n, x, n, v); }

int dptk_mul_plane(void *stream, float *y, const float *x, const float *g, size_t count, size_t HW, size_t mod,
                   int accumulate) {
    LAUNCH1(k_mul_plane, count, y, x, g, count, HW, mod, accumulate);
}

int dptk_crop_add(void *stream, float *dx, const float *dxp, int N, int C, int H, int W, int Hp, int Wp, int pt,
                  int pl) {
    const size_t t = (size_t)N * C * H * W;
    LAUNCH1(k_crop_add, t, dx, dxp, H, W, Hp, Wp, pt, pl, t);
}

int dptk_act_fwd(void *stream, int act, size_t n, const float *x, float *y) { LAUNCH1(k_act_fwd, n, act, n, x, y); }

int dptk_act_bwd(void *stream, int act, size_t n, const float *x, const float *y, const float *dy, float *dx) {
    LAUNCH1(k_act_bwd, n, act, n, x, y, dy, dx);
}

int dptk_gap_bwd(void *stream, size_t count, size_t HW, const float *dy, float *dx) {
    LAUNCH1(k_gap_bwd, count, count, HW, dy, dx);
}

int dptk_broadcast(void *stream, size_t count, size_t HW, const float *x, float *y) {
    LAUNCH1(k_broadcast, count, count, HW, x, y);
}

int dptk_scse_fwd(void *stream, int N, int C, size_t HW, const float *x, const float *cg, const float *sg, float *y) {
    const size_t t = (size_t)N * C * HW;
    LAUNCH1(k_scse_fwd, t, C, HW, t, x, cg, sg, y);
}

int dptk_scse_bwd_dx(void *stream, int N, int C, size_t HW, const float *cg, const float *sg, const float *dy,
                     float *dx) {
    const size_t t = (size_t)N * C * HW;
    LAUNCH1(k_scse_bwd_dx, t, C, HW, t, cg, sg, dy, dx);
}

int dptk_scse_bwd_dsg(void *stream, int N, int C, size_t HW, const float *x, const float *dy, float *dsg) {
    const size_t t = (size_t)N * HW;
    LAUNCH1(k_scse_bwd_dsg, t, C, HW, t, x, dy, dsg);
}

int dptk_add(void *stream, size_t n, const float *a, const float *b, float *y) { LAUNCH1(k_add, n, n, a, b, y); }

int dptk_acc(void *stream, size_t n, const float *dy, float *dx) { LAUNCH1(k_acc, n, n, dy, dx); }

int dptk_concat_part(void *stream, int N, int Cx, int Cy, int c0, size_t HW, const float *x, float *y) {
    const size_t t = (size_t)N * Cx * HW;
    LAUNCH1(k_concat_part, t, Cx, Cy, c0, HW, t, x, y);
}

int dptk_split_part(void *stream, int N, int Cx, int Cy, int c0, size_t HW, const float *dy, float *dx) {
    const size_t t = (size_t)N * Cx * HW;
    LAUNCH1(k_split_part, t, Cx, Cy, c0, HW, t, dy, dx);
}

int dptk_upsample_fwd(void *stream, size_t NC, int h, int w, int f, const float *x, float *y) {
    const size_t t = NC * (size_t)h * f * (size_t)w * f;
    LAUNCH1(k_up_fwd, t, h, w, f, t, x, y);
}

int dptk_upsample_bwd(void *stream, size_t NC, int h, int w, int f, const float *dy, float *dx) {
    const size_t t = NC * (size_t)h * w;
    LAUNCH1(k_up_bwd, t, h, w, f, t, dy, dx);
}

int dptk_softmax_fwd(void *stream, int N, int C, size_t HW, const float *x, float *y) {
    const size_t t = (size_t)N * HW;
    LAUNCH1(k_softmax_fwd, t, C, HW, t, x, y);
}

int dptk_softmax_bwd(void *stream, int N, int C, size_t HW, const float *y, const float *dy, float *dx) {
    const size_t t = (size_t)N * HW;
    LAUNCH1(k_softmax_bwd, t, C, HW, t, y, dy, dx);
}

int dptk_dropout(void *stream, size_t n, float scale, const uint8_t *mask, const float *x, float *y, int accumulate) {
    LAUNCH1(k_dropout, n, n, scale, mask, x, y, accumulate);
}

int dptk_drop_connect(void *stream, size_t n, size_t per, float keep, const uint8_t *mask, const float *x, float *y,
                      int accumulate) {
    LAUNCH1(k_drop_connect, n, n, per, keep, mask, x, y, accumulate);
}

#ifdef DPTK_HOST_CHECK /* the gather on the host (libdisopt_cuda_hostcheck, tests/test_cuda_train_host) */
void dptk_host_upsample_bwd(size_t NC, int h, int w, int f, const float *dy, float *dx) {
    for (size_t q = 0; q < NC; q++)
        for (int ih = 0; ih < h; ih++)
            for (int iw = 0; iw < w; iw++) {
                float *d = dx + q * h * w + (size_t)ih * w + iw;
                *d = up_gather(h, w, f, dy + q * h * f * w * f, ih, iw, *d);
            }
}
#endif

} // extern "C"
