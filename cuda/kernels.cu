// kernels.cu - the CUDA backend's own kernels (everything cuDNN and cuBLAS do not do for us).
//
// Conventions:
//  - Tensors are NCHW in device memory, stored as float (FP32/TF32 modes), __half (FP16) or
//    __nv_bfloat16 (BF16): every kernel is a template over the storage type T, loads convert to
//    float, all arithmetic is float (reductions in double), stores round to T (nearest even).
//  - Weights and biases read by these kernels are always float32.
//  - Every launcher is extern "C", takes the storage type as a DPK_* code and the backend's
//    stream, launches, and returns cudaGetLastError() (the caller turns it into a status).
//  - Formulas follow the CPU backend's (same operation order where it is cheap); sigmoid/swish
//    use expf.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

namespace {

constexpr int TPB = 256;

__device__ inline float ld(const float *p) { return *p; }
__device__ inline float ld(const __half *p) { return __half2float(*p); }
__device__ inline float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ inline void st(float *p, float v) { *p = v; }
__device__ inline void st(__half *p, float v) { *p = __float2half_rn(v); }
__device__ inline void st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
// v as st() stores it, read back (the rounding to T), without the memory round trip
__device__ inline float rounded(const float *, float v) { return v; }
__device__ inline float rounded(const __half *, float v) { return __half2float(__float2half_rn(v)); }
__device__ inline float rounded(const __nv_bfloat16 *, float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// the 16 bytes at a vector load as floats: 4 floats or 8 halves / bfloat16s (the pointer picks T)
__device__ inline void unpack16(const float *, uint4 r, float *f) {
    f[0] = __uint_as_float(r.x);
    f[1] = __uint_as_float(r.y);
    f[2] = __uint_as_float(r.z);
    f[3] = __uint_as_float(r.w);
}
__device__ inline void unpack16(const __half *, uint4 r, float *f) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&r);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 v = __half22float2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}
__device__ inline void unpack16(const __nv_bfloat16 *, uint4 r, float *f) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&r);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 v = __bfloat1622float2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

// VEC floats rounded to T (as st() rounds them) into the 16 bytes of a vector store
__device__ inline uint4 pack16(const float *, const float *f) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
}
__device__ inline uint4 pack16(const __half *, const float *f) {
    alignas(16) __half2 h[4];
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
    return *reinterpret_cast<const uint4 *>(h);
}
__device__ inline uint4 pack16(const __nv_bfloat16 *, const float *f) {
    alignas(16) __nv_bfloat162 h[4];
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return *reinterpret_cast<const uint4 *>(h);
}

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
// The same with the hardware's approximate exp2 and reciprocal (relative error ~1e-6, far below the
// 2^-11 / 2^-8 rounding of half / bfloat16 storage; a handful of instructions instead of a few
// dozen): the activation of kernels whose storage type is half. For exp(-x) -> inf the quotient
// goes to 0, the right limit.
// exp(-x) as __expf computes it (ex2.approx of x * -log2(e)) but flushing results below 2^-126 to 0, which
// saves __expf's three-instruction fix-up for them: 1 + e then rounds to 1 either way, so the
// activations below are the same bits
__device__ __forceinline__ float exp_neg_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * -1.4426950408889634f));
    return y;
}
__device__ inline float act_fast(int act, float x) {
    switch (act) {
    case DPK_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case DPK_ACT_SIGMOID: return __fdividef(1.0f, 1.0f + exp_neg_ftz(x));
    case DPK_ACT_SWISH: return __fdividef(x, 1.0f + exp_neg_ftz(x));
    default: return x;
    }
}
// the activation for storage type T: exact (expf, IEEE division) for float (FP32/TF32 modes, equal
// to the CPU), fast for half storage
template <typename T> __device__ inline float act_t(int act, float x) { return act_fast(act, x); }
template <> __device__ inline float act_t<float>(int act, float x) { return act_apply(act, x); }

// Index type I: unsigned (32-bit) when every index a kernel forms is below 2^31 (LAUNCH checks), so
// that the divisions and remainders of the index math are 32-bit (a 64-bit division costs several
// times the instructions; these kernels are bound by instruction issue, not memory), else size_t.
#define GRID_LOOP(i, total)                                                                                    \
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (total); i += (I)gridDim.x * blockDim.x)

template <typename T, typename I> __global__ void k_bias_act(T *y, const float *bias, int C, I HW, I total, int act) {
    GRID_LOOP(i, total) {
        float v = ld(y + i);
        if (bias) v += bias[(i / HW) % C];
        st(y + i, act_t<T>(act, v));
    }
}

template <typename T, typename I>
__global__ void k_scale_shift_act(T *y, const T *x, const float *s, const float *t, int C, I HW, I total,
                                  int act) {
    GRID_LOOP(i, total) {
        int c = (int)((i / HW) % C);
        st(y + i, act_t<T>(act, ld(x + i) * s[c] + t[c]));
    }
}

// y = x * g[n, c] (SE gate; g is N x C)
template <typename T, typename I> __global__ void k_scale_ch(T *y, const T *x, const T *g, I HW, I total) {
    GRID_LOOP(i, total) st(y + i, ld(g + i / HW) * ld(x + i));
}

// zero-padded copy: x (N,C,H,W) -> y (N,C,H+pt+pb,W+pl+pr)
template <typename T, typename I>
__global__ void k_pad(T *y, const T *x, int H, int W, int pt, int pl, int Ho, int Wo, I total) {
    GRID_LOOP(i, total) {
        int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        I plane = i / ((I)Wo * Ho);
        int xi = xo - pl, yi = yo - pt;
        st(y + i, (xi >= 0 && xi < W && yi >= 0 && yi < H) ? ld(x + plane * H * W + (I)yi * W + xi) : 0.0f);
    }
}

// The producer's deferred bias + activation applied to a depthwise conv's input value (padding
// stays 0: it pads the activated tensor); pre_act < 0: nothing deferred.
template <typename T> __device__ inline float pre_apply(float v, const float *pre_b, int c, int pre_act) {
    if (pre_act < 0) return v;
    return act_t<T>(pre_act, v + (pre_b ? pre_b[c] : 0.0f));
}

// The activations of the depthwise kernels, fixed at compile time where the launcher knows them (A, P
// >= -1; DW_RT: read at run time). With a run-time switch per element, each of a thread's loaded
// elements was a chain of compares and branches: ncu showed the FP16 kernel issue-bound (0.81 warp
// instructions per scheduler and cycle, ~150 instructions per output, DRAM 17 % busy).
constexpr int DW_RT = -2;
template <typename T, int A> __device__ __forceinline__ float act_k(int act, float x) {
    if constexpr (A == DW_RT) return act_t<T>(act, x);
    else return act_t<T>(A, x);
}
// pb: pre_b[c] (0 without a deferred bias), as pre_apply adds it
template <typename T, int P> __device__ __forceinline__ float pre_k(float v, float pb, int pre_act) {
    if constexpr (P == DW_RT) return pre_act < 0 ? v : act_t<T>(pre_act, v + pb);
    else if constexpr (P < 0) return v;
    else return act_t<T>(P, v + pb);
}

// depthwise conv, any k/stride/dilation/padding, one thread per output (fallback)
template <typename T, typename I>
__global__ void k_depthwise(T *y, const T *x, const float *w, const float *bias, int C, int H, int W, int Ho, int Wo,
                            int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, I total, int act,
                            const float *pre_b, int pre_act) {
    GRID_LOOP(i, total) {
        int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        I nc = i / ((I)Wo * Ho);
        int c = (int)(nc % C);
        const T *xp = x + nc * H * W;
        const float *wp = w + (I)c * kh * kw;
        float acc = 0.0f;
        for (int ki = 0; ki < kh; ki++) {
            int yi = yo * sh - pt + ki * dh;
            if (yi < 0 || yi >= H) continue;
            for (int kj = 0; kj < kw; kj++) {
                int xi = xo * sw - pl + kj * dw;
                if (xi < 0 || xi >= W) continue;
                acc += wp[ki * kw + kj] * pre_apply<T>(ld(xp + (I)yi * W + xi), pre_b, c, pre_act);
            }
        }
        if (bias) acc += bias[c];
        st(y + i, act_t<T>(act, acc));
    }
}

// Sums v over the block (any size up to 1024 threads, a multiple of 32) and thread 0 stores it at
// out. Every thread of the block must call it.
__device__ inline void block_sum_store(double v, double *out) {
    __shared__ double warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nw = (blockDim.x * blockDim.y) / 32;
    if ((tid & 31) == 0) warp_sums[tid / 32] = v;
    __syncthreads();
    if (tid == 0) {
        double s = 0.0;
        for (int i = 0; i < nw; i++) s += warp_sums[i];
        *out = s;
    }
}

// depthwise conv, tiled: a block computes a 32 x 32 output tile of one (n, c) plane from an input
// tile staged in shared memory (float, zero padded); each thread computes 4 rows of one column
// (consecutive rows when undilated, so that input rows are reused from registers).
// Grid: (tiles of a plane, across then down; C; N), so that no block divides by C or by the tile count
// (ncu, FP16: signed 32-bit divisions made ~90 of a warp's ~530 instructions); the one division left
// (by the tiles across) is unsigned, the tile loads' by the row's vector count a multiply-shift.
constexpr int DW_TW = 32, DW_TH = 32, DW_ROWS = 4; // block 32 x 8 threads
// K, S > 0: kernel size and stride fixed at compile time (3x3 and 5x5, stride 1 and 2: every
// depthwise conv of the network), so the tap loops unroll and the weights stay in registers
template <typename T, int K, int S, int A, int P>
__global__ void k_depthwise_tiled(T *__restrict__ y, const T *__restrict__ x, const float *__restrict__ w,
                                  const float *__restrict__ bias, int C, int H, int W, int Ho, int Wo, int kh_, int kw_,
                                  int sh_, int sw_, int dh, int dw, int pt, int pl, int act, int IH, int IW, int TWs,
                                  int d0, int vec, unsigned ntx, unsigned nv_inv, double *__restrict__ gpart,
                                  const float *__restrict__ pre_b, int pre_act) {
    const int kh = K > 0 ? K : kh_, kw = K > 0 ? K : kw_, sh = S > 0 ? S : sh_, sw = S > 0 ? S : sw_;
    // IH x TWs input (row stride TWs >= IW; the window's first input column at d0), then kh*kw weights
    extern __shared__ float tile[];
    float *wsh = tile + IH * TWs;
    const unsigned bt = blockIdx.x, bty = bt / ntx, btx = bt - bty * ntx;
    const int c = (int)blockIdx.y;
    const size_t nc = (size_t)blockIdx.z * C + c;
    const int ox0 = (int)btx * DW_TW, oy0 = (int)bty * DW_TH;
    const int ix0 = ox0 * sw - pl, iy0 = oy0 * sh - pt;
    const T *xp = x + nc * H * W;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthr = blockDim.x * blockDim.y;
    const float pb = pre_b ? pre_b[c] : 0.0f;
    if (K > 0 && vec) {
        // 16-byte loads of whole aligned vectors (W % VEC == 0, so a vector is all inside the raster
        // row or all outside): the tile starts d0 columns left of the window, at an aligned column
        constexpr int VEC = 16 / sizeof(T);
        constexpr int IHc = (DW_TH - 1) * (S > 0 ? S : 1) + (K > 0 ? K : 1);
        const int ax0 = ix0 - d0, nv = TWs / VEC;
#pragma unroll 2
        for (int i = tid; i < IHc * nv; i += nthr) {
            // i / nv as (i * ceil(2^20 / nv)) >> 20: exact while i < 2^20 / nv (the launcher checks)
            const int ty = (int)(((unsigned)i * nv_inv) >> 20), v = i - ty * nv, yi = iy0 + ty, xi = ax0 + v * VEC;
            float4 *dst = reinterpret_cast<float4 *>(tile + ty * TWs + v * VEC);
            if (yi >= 0 && yi < H && xi >= 0 && xi < W) {
                float f[VEC];
                unpack16(xp, __ldg(reinterpret_cast<const uint4 *>(xp + (size_t)yi * W + xi)), f);
#pragma unroll
                for (int e = 0; e < VEC; e++) f[e] = pre_k<T, P>(f[e], pb, pre_act);
#pragma unroll
                for (int q = 0; q < VEC / 4; q++) dst[q] = make_float4(f[4 * q], f[4 * q + 1], f[4 * q + 2], f[4 * q + 3]);
            } else {
#pragma unroll
                for (int q = 0; q < VEC / 4; q++) dst[q] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
    } else if (K > 0 && dh == 1 && dw == 1) { // tile width known at compile time: a flat loop, cheap division
        constexpr int IWc = (DW_TW - 1) * (S > 0 ? S : 1) + (K > 0 ? K : 1);
        constexpr int IHc = (DW_TH - 1) * (S > 0 ? S : 1) + (K > 0 ? K : 1);
#pragma unroll 4
        for (int i = tid; i < IHc * IWc; i += nthr) { // (unrolled: several loads in flight per thread)
            const int ty = i / IWc, tx = i - ty * IWc, yi = iy0 + ty, xi = ix0 + tx;
            tile[i] = (yi >= 0 && yi < H && xi >= 0 && xi < W) ? pre_k<T, P>(ld(xp + (size_t)yi * W + xi), pb, pre_act)
                                                               : 0.0f;
        }
    } else {
        for (int ty = threadIdx.y; ty < IH; ty += blockDim.y) { // rows by warp row, columns by lane
            const int yi = iy0 + ty;
            const bool rowok = yi >= 0 && yi < H;
            for (int tx = threadIdx.x; tx < IW; tx += blockDim.x) {
                const int xi = ix0 + tx;
                tile[ty * TWs + tx] =
                    (rowok && xi >= 0 && xi < W) ? pre_k<T, P>(ld(xp + (size_t)yi * W + xi), pb, pre_act) : 0.0f;
            }
        }
    }
    for (int i = tid; i < kh * kw; i += nthr) wsh[i] = w[(size_t)c * kh * kw + i];
    __syncthreads();
    const int ox = ox0 + threadIdx.x;
    double gsum = 0.0; // of the stored (rounded) outputs, when gpart asks for the SE pooling
    const float b = bias ? bias[c] : 0.0f;
    if (ox >= Wo) {
        // no output column: only the block sum below
    } else if constexpr (K > 0) {
        float wr[K * K];
#pragma unroll
        for (int i = 0; i < K * K; i++) wr[i] = wsh[i];
        if (dh == 1 && dw == 1) {
            // the thread's DW_ROWS outputs are consecutive rows: each input row of the window is read
            // from shared memory once and feeds every output row it touches (taps in the same order)
            const int ly0 = threadIdx.y * DW_ROWS;
            float acc[DW_ROWS];
#pragma unroll
            for (int r = 0; r < DW_ROWS; r++) acc[r] = 0.0f;
#pragma unroll
            for (int rr = 0; rr < (DW_ROWS - 1) * S + K; rr++) {
                const float *row = tile + (ly0 * S + rr) * TWs + d0 + threadIdx.x * S;
                float v[K];
#pragma unroll
                for (int kj = 0; kj < K; kj++) v[kj] = row[kj];
#pragma unroll
                for (int r = 0; r < DW_ROWS; r++) {
                    const int ki = rr - r * S;
                    if (ki >= 0 && ki < K) {
#pragma unroll
                        for (int kj = 0; kj < K; kj++) acc[r] += wr[ki * K + kj] * v[kj];
                    }
                }
            }
            T *yp = y + (nc * Ho + (size_t)(oy0 + ly0)) * Wo + ox;
#pragma unroll
            for (int r = 0; r < DW_ROWS; r++, yp += Wo) {
                if (oy0 + ly0 + r < Ho) {
                    const float v = act_k<T, A>(act, acc[r] + b);
                    st(yp, v);
                    if (gpart) gsum += rounded(yp, v);
                }
            }
        } else {
#pragma unroll
        for (int r = 0; r < DW_ROWS; r++) {
            const int ly = threadIdx.y + r * blockDim.y, oy = oy0 + ly;
            if (oy >= Ho) break;
            float acc = 0.0f;
#pragma unroll
            for (int ki = 0; ki < K; ki++) {
                const float *row = tile + (ly * S + ki * dh) * TWs + d0 + threadIdx.x * S;
#pragma unroll
                for (int kj = 0; kj < K; kj++) acc += wr[ki * K + kj] * row[kj * dw];
            }
            T *yp = y + (nc * Ho + (size_t)oy) * Wo + ox;
            const float v = act_k<T, A>(act, acc + b);
            st(yp, v);
            if (gpart) gsum += rounded(yp, v);
        }
        }
    } else {
        for (int r = 0; r < DW_ROWS; r++) {
            const int ly = threadIdx.y + r * blockDim.y, oy = oy0 + ly;
            if (oy >= Ho) break;
            float acc = 0.0f;
            for (int ki = 0; ki < kh; ki++) {
                const float *row = tile + (ly * sh + ki * dh) * TWs + d0 + threadIdx.x * sw;
                for (int kj = 0; kj < kw; kj++) acc += wsh[ki * kw + kj] * row[kj * dw];
            }
            T *yp = y + (nc * Ho + (size_t)oy) * Wo + ox;
            const float v = act_k<T, A>(act, acc + b);
            st(yp, v);
            if (gpart) gsum += rounded(yp, v);
        }
    }
    if (gpart) block_sum_store(gsum, gpart + nc * gridDim.x + bt);
}

// SE pooling after the tiled depthwise conv: plane p's mean from its tiles' partial sums, summed
// in a fixed order (deterministic, unlike atomics)
template <typename T> __global__ void k_gap_parts(T *y, const double *part, int ntiles, double HW, int planes) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= planes) return;
    double s = 0.0;
    for (int i = 0; i < ntiles; i++) s += part[(size_t)p * ntiles + i];
    st(y + p, (float)(s / HW));
}

// dense conv (groups 1) of a small input patch (Cin*kh*kw <= CONV_CO_PATCH: the stems) to many outputs:
// a thread computes CONV_CO output channels of one pixel from the patch held in registers; the
// weights of the block's channel group sit in shared memory; padding, bias and activation included
constexpr int CONV_CO = 8, CONV_CO_PATCH = 64;
// KK > 0: the patch size Cin*kh*kw fixed at compile time (the 4-band and 3-band 3x3 stems), so the
// patch stays in registers
template <typename T, int KK>
__global__ void k_conv_co(T *__restrict__ y, const T *__restrict__ x, const float *__restrict__ w,
                          const float *__restrict__ bias, int Cin, int Cout, int H, int W, int Ho, int Wo, int kh,
                          int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act) {
    __shared__ float wsh[CONV_CO * CONV_CO_PATCH];
    const int K = KK > 0 ? KK : Cin * kh * kw, co0 = blockIdx.z * CONV_CO, nco = min(CONV_CO, Cout - co0);
    for (int i = threadIdx.x; i < nco * K; i += blockDim.x) wsh[i] = w[(size_t)co0 * K + i];
    __syncthreads();
    const size_t HWo = (size_t)Ho * Wo;
    const int n = blockIdx.y;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < HWo; p += (size_t)gridDim.x * blockDim.x) {
        const int oy = (int)(p / Wo), ox = (int)(p % Wo);
        float v[KK > 0 ? KK : CONV_CO_PATCH];
        if constexpr (KK > 0) { // 3x3 (the only compiled-in sizes are Cin * 9)
#pragma unroll
            for (int k = 0; k < KK; k++) {
                const int ci = k / 9, ki = (k / 3) % 3, kj = k % 3;
                const int yi = oy * sh - pt + ki * dh, xi = ox * sw - pl + kj * dw;
                v[k] = (yi >= 0 && yi < H && xi >= 0 && xi < W) ? ld(x + ((size_t)n * Cin + ci) * H * W + (size_t)yi * W + xi)
                                                                : 0.0f;
            }
        } else {
            int k = 0;
            for (int ci = 0; ci < Cin; ci++) {
                const T *xp = x + ((size_t)n * Cin + ci) * H * W;
                for (int ki = 0; ki < kh; ki++) {
                    const int yi = oy * sh - pt + ki * dh;
                    for (int kj = 0; kj < kw; kj++, k++) {
                        const int xi = ox * sw - pl + kj * dw;
                        v[k] = (yi >= 0 && yi < H && xi >= 0 && xi < W) ? ld(xp + (size_t)yi * W + xi) : 0.0f;
                    }
                }
            }
        }
        for (int o = 0; o < nco; o++) {
            const float *wp = wsh + o * K;
            float acc = 0.0f;
#pragma unroll
            for (int i = 0; i < (KK > 0 ? KK : CONV_CO_PATCH); i++)
                if (KK > 0 || i < K) acc += wp[i] * v[i];
            st(y + ((size_t)n * Cout + co0 + o) * HWo + p, act_t<T>(act, acc + (bias ? bias[co0 + o] : 0.0f)));
        }
    }
}

// the second half of a stride-1 k x k conv to few outputs done as a GEMM per tap: z holds, per image,
// Cout*kh*kw float maps (tap-major: (o*kh + ki)*kw + kj) of the input's size, each the 1x1 product of
// one tap's weights; y[o](yo, xo) = act(bias[o] + sum of the taps' maps shifted into place)
template <typename T, typename I>
__global__ void k_tap_sum(T *y, const float *__restrict__ z, const float *__restrict__ bias, int Cout, int kh, int kw,
                          int dh, int dw, int pt, int pl, int H, int W, int Ho, int Wo, I total, int act) {
    GRID_LOOP(i, total) {
        const int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        const I no = i / ((I)Wo * Ho);
        const int o = (int)(no % Cout);
        const I n = no / Cout;
        const float *zp = z + (n * Cout + o) * (I)kh * kw * H * W;
        float acc = 0.0f;
        for (int ki = 0; ki < kh; ki++) {
            const int yi = yo - pt + ki * dh;
            if (yi < 0 || yi >= H) continue;
            for (int kj = 0; kj < kw; kj++) {
                const int xi = xo - pl + kj * dw;
                if (xi < 0 || xi >= W) continue;
                acc += zp[((I)ki * kw + kj) * H * W + (I)yi * W + xi];
            }
        }
        st(y + i, act_t<T>(act, acc + (bias ? bias[o] : 0.0f)));
    }
}

// per-image weights of a 1x1 conv with the SE gate folded in: wo[n][o][i] = w[o][i] * g[n][i]
// (instead of a scaling pass over the conv's large input)
template <typename T, typename I>
__global__ void k_scale_w(T *wo, const float *__restrict__ w, const T *__restrict__ g, int Cout, int Cin, I total) {
    GRID_LOOP(i, total) {
        const I ci = i % Cin, n = i / ((I)Cin * Cout);
        st(wo + i, w[i % ((I)Cin * Cout)] * ld(g + n * Cin + ci));
    }
}

// few-output dense conv (groups 1, cout <= 4): one thread per output pixel computes every output
// channel; the weights sit in shared memory.
constexpr int FEW_MAX = 4;
template <typename T>
__global__ void k_conv_few(T *__restrict__ y, const T *__restrict__ x, const float *__restrict__ w,
                           const float *__restrict__ bias, int Cin, int Cout, int H, int W, int Ho, int Wo, int kh,
                           int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act) {
    extern __shared__ float wsh[]; // Cout x Cin x kh x kw
    const int nw = Cout * Cin * kh * kw;
    for (int i = threadIdx.x; i < nw; i += blockDim.x) wsh[i] = w[i];
    __syncthreads();
    const size_t HWo = (size_t)Ho * Wo;
    const int n = blockIdx.y;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < HWo; p += (size_t)gridDim.x * blockDim.x) {
        const int oy = (int)(p / Wo), ox = (int)(p % Wo);
        float acc[FEW_MAX] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int ci = 0; ci < Cin; ci++) {
            const T *xp = x + ((size_t)n * Cin + ci) * H * W;
            for (int ki = 0; ki < kh; ki++) {
                const int yi = oy * sh - pt + ki * dh;
                if (yi < 0 || yi >= H) continue;
                for (int kj = 0; kj < kw; kj++) {
                    const int xi = ox * sw - pl + kj * dw;
                    if (xi < 0 || xi >= W) continue;
                    const float v = ld(xp + (size_t)yi * W + xi);
                    const float *wp = wsh + (ci * kh + ki) * kw + kj;
                    for (int o = 0; o < Cout; o++) acc[o] += wp[(size_t)o * Cin * kh * kw] * v;
                }
            }
        }
        for (int o = 0; o < Cout; o++)
            st(y + ((size_t)n * Cout + o) * HWo + p, act_t<T>(act, acc[o] + (bias ? bias[o] : 0.0f)));
    }
}

// a 1x1 conv on 1x1 maps (the SE and image-pooling FCs): y[n][o] = act(b[o] + sum_i w[o][i] x[n][i]),
// one warp per output, lanes over the inputs (the weight row coalesced), fused bias + activation
// (act < 0 and b NULL: raw output). Replaces a batched cuBLAS GEMM with one column per image and a
// separate bias pass.
template <typename T>
__global__ void k_fc(T *__restrict__ y, const T *__restrict__ x, const float *__restrict__ w,
                     const float *__restrict__ b, int N, int Cin, int Cout, int act) {
    const int warp = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (warp >= N * Cout) return;
    const int n = warp / Cout, o = warp - n * Cout;
    const float *wr = w + (size_t)o * Cin;
    const T *xr = x + (size_t)n * Cin;
    float acc = 0.0f;
    for (int i = lane; i < Cin; i += 32) acc = fmaf(wr[i], ld(xr + i), acc);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) {
        const float v = acc + (b ? b[o] : 0.0f);
        st(y + warp, act >= 0 ? act_t<T>(act, v) : v);
    }
}

// global average pool of small planes: one warp per (n, c) plane, double accumulation
template <typename T> __global__ void k_gap_warp(T *y, const T *x, size_t HW, int planes) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (warp >= planes) return;
    const T *p = x + (size_t)warp * HW;
    double s = 0.0;
    for (size_t i = lane; i < HW; i += 32) s += ld(p + i);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0) st(y + warp, (float)(s / (double)HW));
}

// global average pool: one block per (n, c) plane, double accumulation
template <typename T> __global__ void k_gap(T *y, const T *x, size_t HW) {
    __shared__ double part[TPB];
    const T *p = x + (size_t)blockIdx.x * HW;
    double s = 0.0;
    for (size_t i = threadIdx.x; i < HW; i += blockDim.x) s += ld(p + i);
    part[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) st(y + blockIdx.x, (float)(part[0] / (double)HW));
}

template <typename T, typename I>
__global__ void k_scse(T *y, const T *x, const T *cs, const T *ss, int C, I HW, I total) {
    GRID_LOOP(i, total) {
        I nc = i / HW, n = nc / C, p = i % HW;
        float v = ld(x + i);
        st(y + i, v * ld(cs + nc) + v * ld(ss + n * HW + p));
    }
}

template <typename T, typename I> __global__ void k_add(T *y, const T *a, const T *b, I total) {
    GRID_LOOP(i, total) st(y + i, ld(a + i) + ld(b + i));
}

// 16-byte vector versions of add, SCSE and upsampling (VEC = 4 floats or 8 halves per thread, one load
// or store instruction per vector instead of VEC; the same float expressions per element): the scalar
// kernels issued an instruction per 2-byte element and moved ~0.5 TB/s in FP16
#define VGRID_LOOP(v, nv) for (unsigned v = blockIdx.x * blockDim.x + threadIdx.x; v < (nv); v += gridDim.x * blockDim.x)
template <typename T> __global__ void k_add_v(T *y, const T *a, const T *b, unsigned nv) {
    constexpr int VEC = 16 / sizeof(T);
    VGRID_LOOP(v, nv) {
        float fa[VEC], fb[VEC];
        unpack16(a, reinterpret_cast<const uint4 *>(a)[v], fa);
        unpack16(b, reinterpret_cast<const uint4 *>(b)[v], fb);
#pragma unroll
        for (int e = 0; e < VEC; e++) fa[e] = fa[e] + fb[e];
        reinterpret_cast<uint4 *>(y)[v] = pack16(y, fa);
    }
}
// (HW % VEC == 0: a vector lies in one plane)
template <typename T>
__global__ void k_scse_v(T *y, const T *x, const T *cs, const T *ss, unsigned C, unsigned HW, unsigned nv) {
    constexpr int VEC = 16 / sizeof(T);
    VGRID_LOOP(v, nv) {
        const unsigned i = v * VEC, nc = i / HW, n = nc / C, p = i % HW;
        float fx[VEC], fs[VEC];
        unpack16(x, reinterpret_cast<const uint4 *>(x)[v], fx);
        unpack16(ss, *reinterpret_cast<const uint4 *>(ss + (size_t)n * HW + p), fs);
        const float c = ld(cs + nc);
#pragma unroll
        for (int e = 0; e < VEC; e++) fx[e] = fx[e] * c + fx[e] * fs[e];
        reinterpret_cast<uint4 *>(y)[v] = pack16(y, fx);
    }
}

// y[n, c0 + c, :] = x[n, c, :] for one concat input: planes over grid y (looping past 65535), a
// plane's pixels over grid x, 16-byte vectors when the planes are whole vectors (no index
// divisions per element)
template <typename T>
__global__ void k_concat_plane(T *__restrict__ y, const T *__restrict__ x, int Cx, int Cy, int c0, unsigned HW,
                               unsigned planes, int vec) {
    constexpr unsigned VEC = 16 / sizeof(T);
    for (unsigned pl = blockIdx.y; pl < planes; pl += gridDim.y) {
        const unsigned n = pl / Cx, c = pl % Cx;
        const T *src = x + (size_t)pl * HW;
        T *dst = y + ((size_t)n * Cy + c0 + c) * HW;
        const unsigned step = gridDim.x * blockDim.x;
        if (vec) {
            const uint4 *s4 = reinterpret_cast<const uint4 *>(src);
            uint4 *d4 = reinterpret_cast<uint4 *>(dst);
            for (unsigned v = blockIdx.x * blockDim.x + threadIdx.x; v < HW / VEC; v += step) d4[v] = s4[v];
        } else {
            for (unsigned p = blockIdx.x * blockDim.x + threadIdx.x; p < HW; p += step) dst[p] = src[p];
        }
    }
}

template <typename T, typename I> __global__ void k_broadcast(T *y, const T *x, I HW, I total) {
    GRID_LOOP(i, total) y[i] = x[i / HW];
}

// bilinear, align_corners=True (PyTorch's upsample_bilinear2d formula)
template <typename T, typename I> __global__ void k_upsample(T *y, const T *x, int H, int W, int Ho, int Wo, I total) {
    const float rh = Ho > 1 ? (float)(H - 1) / (float)(Ho - 1) : 0.0f;
    const float rw = Wo > 1 ? (float)(W - 1) / (float)(Wo - 1) : 0.0f;
    GRID_LOOP(i, total) {
        int xo = (int)(i % Wo), yo = (int)((i / Wo) % Ho);
        I nc = i / ((I)Wo * Ho);
        float hr = rh * yo, wr = rw * xo;
        int h0 = (int)hr, w0 = (int)wr;
        int hp = h0 < H - 1 ? 1 : 0, wp = w0 < W - 1 ? 1 : 0;
        float l1 = hr - h0, l0 = 1.0f - l1, m1 = wr - w0, m0 = 1.0f - m1;
        const T *p = x + nc * H * W + (I)h0 * W + w0;
        st(y + i, l0 * (m0 * ld(p) + m1 * ld(p + wp)) + l1 * (m0 * ld(p + hp * W) + m1 * ld(p + hp * W + wp)));
    }
}

// (Wo % VEC == 0: a vector lies in one output row)
template <typename T> __global__ void k_upsample_v(T *y, const T *x, int H, int W, int Ho, int Wo, unsigned nv) {
    constexpr int VEC = 16 / sizeof(T);
    const float rh = Ho > 1 ? (float)(H - 1) / (float)(Ho - 1) : 0.0f;
    const float rw = Wo > 1 ? (float)(W - 1) / (float)(Wo - 1) : 0.0f;
    VGRID_LOOP(v, nv) {
        const unsigned i = v * VEC, xo0 = i % (unsigned)Wo, row = i / (unsigned)Wo, yo = row % (unsigned)Ho,
                       nc = row / (unsigned)Ho;
        const float hr = rh * (int)yo;
        const int h0 = (int)hr, hp = h0 < H - 1 ? 1 : 0;
        const float l1 = hr - h0, l0 = 1.0f - l1;
        const T *pr = x + (size_t)nc * H * W + (size_t)h0 * W;
        float f[VEC];
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            const int xo = (int)xo0 + e;
            const float wr = rw * xo;
            const int w0 = (int)wr, wp = w0 < W - 1 ? 1 : 0;
            const float m1 = wr - w0, m0 = 1.0f - m1;
            const T *p = pr + w0;
            f[e] = l0 * (m0 * ld(p) + m1 * ld(p + wp)) + l1 * (m0 * ld(p + hp * W) + m1 * ld(p + hp * W + wp));
        }
        reinterpret_cast<uint4 *>(y)[v] = pack16(y, f);
    }
}

template <typename T, typename I> __global__ void k_softmax(T *y, const T *x, int C, I HW, I total) {
    GRID_LOOP(i, total) {
        I n = i / HW, p = i % HW;
        const T *xp = x + n * C * HW + p;
        T *yp = y + n * C * HW + p;
        float m = ld(xp);
        for (int c = 1; c < C; c++) m = fmaxf(m, ld(xp + c * HW));
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += expf(ld(xp + c * HW) - m);
        for (int c = 0; c < C; c++) st(yp + c * HW, expf(ld(xp + c * HW) - m) / s);
    }
}

// host float <-> device storage type
template <typename T, typename I> __global__ void k_from_f32(T *y, const float *x, I total) { GRID_LOOP(i, total) st(y + i, x[i]); }
template <typename T, typename I> __global__ void k_to_f32(float *y, const T *x, I total) { GRID_LOOP(i, total) y[i] = ld(x + i); }

// Counts NaN/Inf (exponent all ones) of x: grid-stride, warp-reduced, one atomic per warp.
__global__ void k_count_nonfinite(const float *__restrict__ x, size_t n, unsigned long long *count) {
    unsigned c = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        c += (__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u;
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31) == 0 && c) atomicAdd(count, (unsigned long long)c);
}

} // namespace

// dispatch on the storage type: body uses T
#define DISPATCH(dt, ...)                                                                                      \
    switch (dt) {                                                                                              \
    case DPK_F16: {                                                                                            \
        using T = __half;                                                                                      \
        __VA_ARGS__;                                                                                           \
    } break;                                                                                                   \
    case DPK_BF16: {                                                                                           \
        using T = __nv_bfloat16;                                                                               \
        __VA_ARGS__;                                                                                           \
    } break;                                                                                                   \
    default: {                                                                                                 \
        using T = float;                                                                                       \
        __VA_ARGS__;                                                                                           \
    } break;                                                                                                   \
    }

// n: the launch's element count, which also bounds every index its kernel forms (LAUNCH64: not so)
#define LAUNCH(dt, kernel, n, ...)                                                                             \
    do {                                                                                                       \
        if ((n) == 0) return cudaSuccess;                                                                      \
        if ((size_t)(n) < ((size_t)1 << 31)) {                                                                 \
            DISPATCH(dt, kernel<T, unsigned><<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(__VA_ARGS__))     \
        } else {                                                                                               \
            DISPATCH(dt, kernel<T, size_t><<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(__VA_ARGS__))       \
        }                                                                                                      \
        return cudaGetLastError();                                                                             \
    } while (0)
#define LAUNCH64(dt, kernel, n, ...)                                                                           \
    do {                                                                                                       \
        if ((n) == 0) return cudaSuccess;                                                                      \
        DISPATCH(dt, kernel<T, size_t><<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>(__VA_ARGS__))           \
        return cudaGetLastError();                                                                             \
    } while (0)

// DISOPT_CUDA_DW_SCALAR=1: the depthwise tile loads element by element (the code before the
// vectorised loads), for measuring one against the other in the same process run
static int dw_scalar_forced(void) {
    const char *v = getenv("DISOPT_CUDA_DW_SCALAR");
    return v && *v == '1';
}

#define TP(p) (T *)(p)
#define CTP(p) (const T *)(p)

extern "C" {

size_t dpk_elem_size(int dt) { return dt == DPK_F32 ? 4 : 2; }

int dpk_bias_act(void *stream, int dt, void *y, const float *bias, int N, int C, size_t HW, int act) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(dt, k_bias_act, t, TP(y), bias, C, HW, t, act);
}
int dpk_scale_shift_act(void *stream, int dt, void *y, const void *x, const float *s, const float *sh, int N, int C,
                        size_t HW, int act) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(dt, k_scale_shift_act, t, TP(y), CTP(x), s, sh, C, HW, t, act);
}
int dpk_scale_ch(void *stream, int dt, void *y, const void *x, const void *g, int N, int C, size_t HW) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(dt, k_scale_ch, t, TP(y), CTP(x), CTP(g), HW, t);
}
int dpk_pad(void *stream, int dt, void *y, const void *x, int N, int C, int H, int W, int pt, int pb, int pl, int pr) {
    int Ho = H + pt + pb, Wo = W + pl + pr;
    size_t t = (size_t)N * C * Ho * Wo;
    LAUNCH(dt, k_pad, t, TP(y), CTP(x), H, W, pt, pl, Ho, Wo, t);
}
size_t dpk_depthwise_gap_bytes(int N, int C, int Ho, int Wo) {
    return (size_t)((Wo + DW_TW - 1) / DW_TW) * ((Ho + DW_TH - 1) / DW_TH) * N * C * sizeof(double);
}
static int depthwise_go(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int C,
                        int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                        int act, void *gap, double *gpart, const float *pre_b, int pre_act);
int dpk_depthwise_gap(void *stream, int dt, void *y, void *gap, void *part, const void *x, const float *w,
                      const float *bias, int N, int C, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw,
                      int dh, int dw, int pt, int pl, int act, const float *pre_b, int pre_act) {
    return depthwise_go(stream, dt, y, x, w, bias, N, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, act, gap,
                        (double *)part, pre_b, pre_act);
}
int dpk_depthwise(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int C, int H,
                  int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act,
                  const float *pre_b, int pre_act) {
    return depthwise_go(stream, dt, y, x, w, bias, N, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, act, NULL, NULL,
                        pre_b, pre_act);
}
// the (output, deferred input) activation pairs of the network's depthwise convs compiled in, others at
// run time (DISOPT_CUDA_DW_RTACT=1: always at run time, for comparisons)
static int dw_rtact_forced(void) {
    const char *v = getenv("DISOPT_CUDA_DW_RTACT");
    return v && *v == '1';
}
#define DW_ACTS(GO)                                                                                            \
    do {                                                                                                       \
        const int rt_ = dw_rtact_forced();                                                                     \
        if (!rt_ && act == DPK_ACT_SWISH && pre_act == DPK_ACT_SWISH) GO(DPK_ACT_SWISH, DPK_ACT_SWISH);        \
        else if (!rt_ && act == DPK_ACT_SWISH && pre_act < 0) GO(DPK_ACT_SWISH, -1);                           \
        else if (!rt_ && act == DPK_ACT_NONE && pre_act < 0) GO(DPK_ACT_NONE, -1);                             \
        else GO(DW_RT, DW_RT);                                                                                 \
    } while (0)
static int depthwise_go(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int C,
                        int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                        int act, void *gap, double *gpart, const float *pre_b, int pre_act) {
    size_t t = (size_t)N * C * Ho * Wo;
    if (t == 0) return cudaSuccess;
    const int IH = (DW_TH - 1) * sh + (kh - 1) * dh + 1, IW = (DW_TW - 1) * sw + (kw - 1) * dw + 1;
    const int sq = kh == kw && sh == sw;
    // vectorised tile loads: a compiled-in K/S, undilated, rows of whole 16-byte vectors, an aligned
    // tensor (the tile then starts d0 = (-pl) mod VEC columns left of the window: ox0 * S is a
    // multiple of 32); DISOPT_CUDA_DW_SCALAR=1 turns them off (for comparisons)
    const int VEC = (int)(16 / dpk_elem_size(dt));
    const int vec = sq && (kh == 3 || kh == 5) && (sh == 1 || sh == 2) && dh == 1 && dw == 1 && W % VEC == 0 &&
                    ((uintptr_t)x % 16) == 0 && !dw_scalar_forced();
    const int d0 = vec ? ((-pl) % VEC + VEC) % VEC : 0;
    const int TWs = vec ? (d0 + IW + VEC - 1) / VEC * VEC : IW;
    const size_t smem = ((size_t)IH * TWs + (size_t)kh * kw) * sizeof(float);
    const unsigned ntx = (unsigned)((Wo + DW_TW - 1) / DW_TW), tpp = ntx * (unsigned)((Ho + DW_TH - 1) / DW_TH);
    const unsigned nv = (unsigned)(TWs / VEC), nv_inv = ((1u << 20) + nv - 1) / nv;
    if (smem <= 48 * 1024 && C <= 65535 && N <= 65535 && (size_t)IH * nv * nv < ((size_t)1 << 20)) {
        const dim3 grid(tpp, (unsigned)C, (unsigned)N);
#define DW_GO(K, S, A, P)                                                                                      \
    DISPATCH(dt, k_depthwise_tiled<T, K, S, A, P><<<grid, dim3(DW_TW, DW_TH / DW_ROWS), smem, (cudaStream_t)stream>>>( \
                     TP(y), CTP(x), w, bias, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, act, IH, IW, TWs, d0, vec, \
                     ntx, nv_inv, gap ? gpart : nullptr, pre_b, pre_act))
#define DW_GO_KS(A, P)                                                                                         \
    do {                                                                                                       \
        if (sq && kh == 3 && sh == 1) DW_GO(3, 1, A, P)                                                        \
        else if (sq && kh == 3 && sh == 2) DW_GO(3, 2, A, P)                                                   \
        else if (sq && kh == 5 && sh == 1) DW_GO(5, 1, A, P)                                                   \
        else if (sq && kh == 5 && sh == 2) DW_GO(5, 2, A, P)                                                   \
        else DW_GO(0, 0, DW_RT, DW_RT)                                                                         \
    } while (0)
        DW_ACTS(DW_GO_KS);
#undef DW_GO_KS
#undef DW_GO
        if (gap) {
            const int planes = N * C;
            DISPATCH(dt, k_gap_parts<T><<<(unsigned)((planes + TPB - 1) / TPB), TPB, 0, (cudaStream_t)stream>>>(
                             TP(gap), gpart, (int)tpp, (double)Ho * Wo, planes))
        }
        return cudaGetLastError();
    }
    if (gap) return (int)cudaErrorNotSupported; // callers check dpk_depthwise_gap_ok
    LAUNCH64(dt, k_depthwise, t, TP(y), CTP(x), w, bias, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, t, act, pre_b,
           pre_act);
}
int dpk_depthwise_gap_ok(int N, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw) {
    const int IH = (DW_TH - 1) * sh + (kh - 1) * dh + 1, IW = (DW_TW - 1) * sw + (kw - 1) * dw + 1;
    // (with the widest vectorised tile row: up to 7 more columns for the alignment, rounded to 8)
    const size_t TWs = (IW + 7 + 7) / 8 * 8, smem = ((size_t)IH * TWs + (size_t)kh * kw) * sizeof(float);
    (void)Ho, (void)Wo;
    return smem <= 48 * 1024 && C <= 65535 && N <= 65535 && (size_t)IH * TWs * TWs < ((size_t)1 << 20);
}
int dpk_conv_co_ok(int cin, int cout, int kh, int kw) { return cin * kh * kw <= CONV_CO_PATCH && cout > 0; }
int dpk_conv_co(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int Cin,
                int Cout, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                int act) {
    size_t hw = (size_t)Ho * Wo;
    if (hw == 0 || N == 0) return cudaSuccess;
    size_t b = (hw + 127) / 128;
    dim3 grid((unsigned)(b > 4096 ? 4096 : b), (unsigned)N, (unsigned)((Cout + CONV_CO - 1) / CONV_CO));
#define CO_GO(KK)                                                                                              \
    DISPATCH(dt, k_conv_co<T, KK><<<grid, 128, 0, (cudaStream_t)stream>>>(TP(y), CTP(x), w, bias, Cin, Cout, H, W, Ho, \
                                                                           Wo, kh, kw, sh, sw, dh, dw, pt, pl, act))
    if (kh == 3 && kw == 3 && Cin == 4) CO_GO(36)
    else if (kh == 3 && kw == 3 && Cin == 3) CO_GO(27)
    else CO_GO(0)
#undef CO_GO
    return cudaGetLastError();
}
int dpk_tap_sum(void *stream, int dt, void *y, const float *z, const float *bias, int N, int Cout, int kh, int kw,
                int dh, int dw, int pt, int pl, int H, int W, int Ho, int Wo, int act) {
    size_t t = (size_t)N * Cout * Ho * Wo;
    LAUNCH64(dt, k_tap_sum, t, TP(y), z, bias, Cout, kh, kw, dh, dw, pt, pl, H, W, Ho, Wo, t, act);
}
int dpk_scale_w(void *stream, int dt, void *wo, const float *w, const void *g, int N, int Cout, int Cin) {
    size_t t = (size_t)N * Cout * Cin;
    LAUNCH(dt, k_scale_w, t, TP(wo), w, CTP(g), Cout, Cin, t);
}
int dpk_conv_few_ok(int cin, int cout, int kh, int kw) {
    return cout <= FEW_MAX && (size_t)cout * cin * kh * kw * sizeof(float) <= 40 * 1024;
}
int dpk_conv_few(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int Cin,
                 int Cout, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                 int act) {
    size_t hw = (size_t)Ho * Wo;
    if (hw == 0 || N == 0) return cudaSuccess;
    size_t b = (hw + TPB - 1) / TPB;
    dim3 grid((unsigned)(b > 4096 ? 4096 : b), (unsigned)N);
    const size_t smem = (size_t)Cout * Cin * kh * kw * sizeof(float);
    DISPATCH(dt, k_conv_few<T><<<grid, TPB, smem, (cudaStream_t)stream>>>(TP(y), CTP(x), w, bias, Cin, Cout, H, W, Ho,
                                                                           Wo, kh, kw, sh, sw, dh, dw, pt, pl, act))
    return cudaGetLastError();
}
int dpk_fc(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int Cin, int Cout,
           int act) {
    const size_t warps = (size_t)N * Cout;
    if (warps == 0) return cudaSuccess;
    if (warps > 0x7fffffffu / 32) return (int)cudaErrorInvalidValue;
    DISPATCH(dt, k_fc<T><<<(unsigned)((warps + 7) / 8), 256, 0, (cudaStream_t)stream>>>(TP(y), CTP(x), w, bias, N, Cin,
                                                                                      Cout, act))
    return cudaGetLastError();
}
int dpk_gap(void *stream, int dt, void *y, const void *x, int N, int C, size_t HW) {
    if ((size_t)N * C == 0) return cudaSuccess;
    if (HW <= 4096) {
        const int planes = N * C;
        DISPATCH(dt, k_gap_warp<T><<<(unsigned)((planes + 7) / 8), 256, 0, (cudaStream_t)stream>>>(TP(y), CTP(x), HW,
                                                                                                 planes))
        return cudaGetLastError();
    }
    DISPATCH(dt, k_gap<T><<<(unsigned)(N * C), TPB, 0, (cudaStream_t)stream>>>(TP(y), CTP(x), HW))
    return cudaGetLastError();
}
// 16-byte vectors where every pointer is 16-byte aligned, `whole` elements divide into vectors and the
// element count fits 32-bit indices; DISOPT_CUDA_NO_VEC=1 turns them off (for comparisons)
static int vec_ok(int dt, size_t total, size_t whole, const void *a, const void *b, const void *c, const void *d) {
    const char *nv = getenv("DISOPT_CUDA_NO_VEC");
    if (nv && *nv == '1') return 0;
    const size_t VEC = 16 / dpk_elem_size(dt);
    return total < ((size_t)1 << 31) && whole % VEC == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 &&
           (uintptr_t)c % 16 == 0 && (uintptr_t)d % 16 == 0;
}
#define VLAUNCH(dt, total, kernel, ...)                                                                         \
    do {                                                                                                       \
        const unsigned nv_ = (unsigned)((total) / (16 / dpk_elem_size(dt)));                                   \
        DISPATCH(dt, kernel<T><<<blocks_for(nv_), TPB, 0, (cudaStream_t)stream>>>(__VA_ARGS__, nv_))           \
        return cudaGetLastError();                                                                             \
    } while (0)

int dpk_scse(void *stream, int dt, void *y, const void *x, const void *cs, const void *ss, int N, int C, size_t HW) {
    size_t t = (size_t)N * C * HW;
    if (t && vec_ok(dt, t, HW, y, x, ss, y)) VLAUNCH(dt, t, k_scse_v, TP(y), CTP(x), CTP(cs), CTP(ss), (unsigned)C, (unsigned)HW);
    LAUNCH(dt, k_scse, t, TP(y), CTP(x), CTP(cs), CTP(ss), C, HW, t);
}
int dpk_add(void *stream, int dt, void *y, const void *a, const void *b, size_t n) {
    if (n && vec_ok(dt, n, n, y, a, b, y)) VLAUNCH(dt, n, k_add_v, TP(y), CTP(a), CTP(b));
    LAUNCH(dt, k_add, n, TP(y), CTP(a), CTP(b), n);
}
int dpk_concat_part(void *stream, int dt, void *y, const void *x, int N, int Cx, int Cy, int c0, size_t HW) {
    const size_t planes = (size_t)N * Cx;
    if (planes == 0 || HW == 0) return cudaSuccess;
    if (HW >= ((size_t)1 << 31) || planes >= ((size_t)1 << 31)) return (int)cudaErrorInvalidValue;
    const size_t VEC = 16 / dpk_elem_size(dt);
    const int vec = HW % VEC == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)y % 16 == 0;
    const size_t per = vec ? HW / VEC : HW, bx = (per + TPB - 1) / TPB;
    dim3 grid((unsigned)(bx > 1024 ? 1024 : bx), (unsigned)(planes > 65535 ? 65535 : planes));
    DISPATCH(dt, k_concat_plane<T><<<grid, TPB, 0, (cudaStream_t)stream>>>(TP(y), CTP(x), Cx, Cy, c0, (unsigned)HW,
                                                                          (unsigned)planes, vec))
    return cudaGetLastError();
}
int dpk_broadcast(void *stream, int dt, void *y, const void *x, int N, int C, size_t HW) {
    size_t t = (size_t)N * C * HW;
    LAUNCH(dt, k_broadcast, t, TP(y), CTP(x), HW, t);
}
int dpk_upsample(void *stream, int dt, void *y, const void *x, int N, int C, int H, int W, int Ho, int Wo) {
    size_t t = (size_t)N * C * Ho * Wo;
    if (t && vec_ok(dt, t, (size_t)Wo, y, x, y, y)) VLAUNCH(dt, t, k_upsample_v, TP(y), CTP(x), H, W, Ho, Wo);
    LAUNCH(dt, k_upsample, t, TP(y), CTP(x), H, W, Ho, Wo, t);
}
int dpk_softmax(void *stream, int dt, void *y, const void *x, int N, int C, size_t HW) {
    size_t t = (size_t)N * HW;
    LAUNCH64(dt, k_softmax, t, TP(y), CTP(x), C, HW, t);
}
int dpk_from_f32(void *stream, int dt, void *y, const float *x, size_t n) { LAUNCH(dt, k_from_f32, n, TP(y), x, n); }
int dpk_to_f32(void *stream, int dt, float *y, const void *x, size_t n) { LAUNCH(dt, k_to_f32, n, y, CTP(x), n); }
int dpk_count_nonfinite(void *stream, const float *x, size_t n, unsigned long long *count) {
    size_t b = (n + TPB - 1) / TPB;
    k_count_nonfinite<<<(unsigned)(b > 4096 ? 4096 : b ? b : 1), TPB, 0, (cudaStream_t)stream>>>(x, n, count);
    return (int)cudaGetLastError();
}
const char *dpk_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

} // extern "C"
