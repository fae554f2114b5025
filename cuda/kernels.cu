// kernels.cu - the CUDA backend's own kernels (everything cuDNN does not do for us).
//
// Conventions: tensors are float32 NCHW in device memory; every launcher is extern "C", takes the
// backend's stream, launches, and returns cudaGetLastError() (the caller turns it into a status).
// Arithmetic follows the CPU backend's formulas (same operation order where it is cheap), in fp32,
// with double accumulation for reductions; sigmoid/swish use expf.
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

namespace {

constexpr int TPB = 256;

inline unsigned blocks_for(size_t n) {
    size_t b = (n + TPB - 1) / TPB;
    return (unsigned)(b > 65535u * 64u ? 65535u * 64u : b);
}

__device__ inline float act_apply(int act, float x) {
    switch (act) {
    case DPK_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case DPK_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case DPK_ACT_SWISH: return x * (1.0f / (1.0f + expf(-x)));
    default: return x;
    }
}

__global__ void k_bias_act(float *y, const float *bias, int C, size_t HW, size_t total, int act) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i];
        if (bias) v += bias[(i / HW) % C];
        y[i] = act_apply(act, v);
    }
}

__global__ void k_scale_shift_act(float *y, const float *x, const float *s, const float *t, int C, size_t HW,
                                  size_t total, int act) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)((i / HW) % C);
        y[i] = act_apply(act, x[i] * s[c] + t[c]);
    }
}

// y = x * g[n, c] (SE gate; g is N x C)
__global__ void k_scale_ch(float *y, const float *x, const float *g, size_t HW, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = g[i / HW] * x[i];
}

// zero-padded copy: x (N,C,H,W) -> y (N,C,H+pt+pb,W+pl+pr)
__global__ void k_pad(float *y, const float *x, int H, int W, int pt, int pl, int Ho, int Wo, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        size_t plane = i / ((size_t)Wo * Ho);
        int xi = xo - pl, yi = yo - pt;
        y[i] = (xi >= 0 && xi < W && yi >= 0 && yi < H) ? x[plane * H * W + (size_t)yi * W + xi] : 0.0f;
    }
}

// depthwise conv, any k/stride/dilation/padding, one thread per output
__global__ void k_depthwise(float *y, const float *x, const float *w, const float *bias, int C, int H, int W,
                            int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                            size_t total, int act) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        size_t nc = i / ((size_t)Wo * Ho);
        int c = (int)(nc % C);
        const float *xp = x + nc * H * W, *wp = w + (size_t)c * kh * kw;
        float acc = 0.0f;
        for (int ki = 0; ki < kh; ki++) {
            int yi = yo * sh - pt + ki * dh;
            if (yi < 0 || yi >= H) continue;
            for (int kj = 0; kj < kw; kj++) {
                int xi = xo * sw - pl + kj * dw;
                if (xi < 0 || xi >= W) continue;
                acc += wp[ki * kw + kj] * xp[(size_t)yi * W + xi];
            }
        }
        if (bias) acc += bias[c];
        y[i] = act_apply(act, acc);
    }
}

// global average pool: one block per (n, c) plane, double accumulation
__global__ void k_gap(float *y, const float *x, size_t HW) {
    __shared__ double part[TPB];
    const float *p = x + (size_t)blockIdx.x * HW;
    double s = 0.0;
    for (size_t i = threadIdx.x; i < HW; i += blockDim.x) s += p[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) y[blockIdx.x] = (float)(part[0] / (double)HW);
}

__global__ void k_scse(float *y, const float *x, const float *cs, const float *ss, int C, size_t HW, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t nc = i / HW, n = nc / C, p = i % HW;
        float v = x[i];
        y[i] = v * cs[nc] + v * ss[n * HW + p];
    }
}

__global__ void k_add(float *y, const float *a, const float *b, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

// y[n, c0 + c, :] = x[n, c, :] for one concat input
__global__ void k_concat_part(float *y, const float *x, int Cx, int Cy, int c0, size_t HW, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t p = i % HW, nc = i / HW;
        size_t n = nc / Cx, c = nc % Cx;
        y[(n * Cy + c0 + c) * HW + p] = x[i];
    }
}

__global__ void k_broadcast(float *y, const float *x, size_t HW, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = x[i / HW];
}

// bilinear, align_corners=True (PyTorch's upsample_bilinear2d formula)
__global__ void k_upsample(float *y, const float *x, int H, int W, int Ho, int Wo, size_t total) {
    const float rh = Ho > 1 ? (float)(H - 1) / (float)(Ho - 1) : 0.0f;
    const float rw = Wo > 1 ? (float)(W - 1) / (float)(Wo - 1) : 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        size_t nc = i / ((size_t)Wo * Ho);
        float hr = rh * yo, wr = rw * xo;
        int h0 = (int)hr, w0 = (int)wr;
        int hp = h0 < H - 1 ? 1 : 0, wp = w0 < W - 1 ? 1 : 0;
        float l1 = hr - h0, l0 = 1.0f - l1, m1 = wr - w0, m0 = 1.0f - m1;
        const float *p = x + nc * H * W + (size_t)h0 * W + w0;
        y[i] = l0 * (m0 * p[0] + m1 * p[wp]) + l1 * (m0 * p[hp * W] + m1 * p[hp * W + wp]);
    }
}

__global__ void k_softmax(float *y, const float *x, int C, size_t HW, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / HW, p = i % HW;
        const float *xp = x + n * C * HW + p;
        float *yp = y + n * C * HW + p;
        float m = xp[0];
        for (int c = 1; c < C; c++) m = fmaxf(m, xp[c * HW]);
        float s = 0.0f;
        for (int c = 0; c < C; c++) {
            float e = expf(xp[c * HW] - m);
            yp[c * HW] = e;
            s += e;
        }
        for (int c = 0; c < C; c++) yp[c * HW] /= s;
    }
}

} // namespace

#define LAUNCH(kernel, n, ...)                                                                                   \
    do {                                                                                                       \
        if ((n) == 0) return cudaSuccess;                                                                      \
        kernel<<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(__VA_ARGS__);                                   \
        return cudaGetLastError();                                                                             \
    } while (0)

extern "C" {

int dpk_bias_act(void *stream, float *y, const float *bias, int N, int C, size_t HW, int act) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(k_bias_act, t, y, bias, C, HW, t, act);
}
int dpk_scale_shift_act(void *stream, float *y, const float *x, const float *s, const float *sh, int N, int C,
                        size_t HW, int act) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(k_scale_shift_act, t, y, x, s, sh, C, HW, t, act);
}
int dpk_scale_ch(void *stream, float *y, const float *x, const float *g, int N, int C, size_t HW) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(k_scale_ch, t, y, x, g, HW, t);
}
int dpk_pad(void *stream, float *y, const float *x, int N, int C, int H, int W, int pt, int pb, int pl, int pr) {
    int Ho = H + pt + pb, Wo = W + pl + pr;
    size_t t = (size_t)N * C * Ho * Wo;
    LAUNCH(k_pad, t, y, x, H, W, pt, pl, Ho, Wo, t);
}
int dpk_depthwise(void *stream, float *y, const float *x, const float *w, const float *bias, int N, int C, int H,
                  int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act) {
    size_t t = (size_t)N * C * Ho * Wo;
    LAUNCH(k_depthwise, t, y, x, w, bias, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, t, act);
}
int dpk_gap(void *stream, float *y, const float *x, int N, int C, size_t HW) {
    if ((size_t)N * C == 0) return cudaSuccess;
    k_gap<<<(unsigned)(N * C), TPB, 0, (cudaStream_t)stream>>>(y, x, HW);
    return cudaGetLastError();
}
int dpk_scse(void *stream, float *y, const float *x, const float *cs, const float *ss, int N, int C, size_t HW) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(k_scse, t, y, x, cs, ss, C, HW, t);
}
int dpk_add(void *stream, float *y, const float *a, const float *b, size_t n) { LAUNCH(k_add, n, y, a, b, n); }
int dpk_concat_part(void *stream, float *y, const float *x, int N, int Cx, int Cy, int c0, size_t HW) {
    size_t t = (size_t)N * Cx * HW;
    LAUNCH(k_concat_part, t, y, x, Cx, Cy, c0, HW, t);
}
int dpk_broadcast(void *stream, float *y, const float *x, int N, int C, size_t HW) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(k_broadcast, t, y, x, HW, t);
}
int dpk_upsample(void *stream, float *y, const float *x, int N, int C, int H, int W, int Ho, int Wo) {
    size_t t = (size_t)N * C * Ho * Wo;
    LAUNCH(k_upsample, t, y, x, H, W, Ho, Wo, t);
}
int dpk_softmax(void *stream, float *y, const float *x, int N, int C, size_t HW) {
    size_t t = (size_t)N * HW;
    LAUNCH(k_softmax, t, y, x, C, HW, t);
}
const char *dpk_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

} // extern "C"
