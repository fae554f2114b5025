/* kernels.h - launchers of the CUDA backend's own kernels (cuda/kernels.cu). Each returns a
 * cudaError_t as int (0 = success); stream is a cudaStream_t; dt is the tensors' storage type
 * (DPK_F32, DPK_F16, DPK_BF16). Tensors: NCHW, device; weights and biases: float32. */
#ifndef DISOPT_CUDA_KERNELS_H
#define DISOPT_CUDA_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { DPK_ACT_NONE = 0, DPK_ACT_RELU = 1, DPK_ACT_SWISH = 2, DPK_ACT_SIGMOID = 3 }; /* = dp_act */
enum { DPK_F32 = 0, DPK_F16 = 1, DPK_BF16 = 2 };

size_t dpk_elem_size(int dt);
int dpk_bias_act(void *stream, int dt, void *y, const float *bias, int N, int C, size_t HW, int act);
int dpk_scale_shift_act(void *stream, int dt, void *y, const void *x, const float *s, const float *sh, int N, int C,
                        size_t HW, int act);
int dpk_scale_ch(void *stream, int dt, void *y, const void *x, const void *g, int N, int C, size_t HW);
int dpk_pad(void *stream, int dt, void *y, const void *x, int N, int C, int H, int W, int pt, int pb, int pl, int pr);
/* pre_b / pre_act: the input producer's deferred bias (may be NULL) and activation, applied to each
 * input value as it is loaded (pre_act < 0: none) */
int dpk_depthwise(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int C, int H,
                  int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act,
                  const float *pre_b, int pre_act);
/* the depthwise conv and, in the same pass, the global average pool of its output into gap (N x C,
 * storage type), through part (dpk_depthwise_gap_bytes of workspace; deterministic); usable when
 * dpk_depthwise_gap_ok */
size_t dpk_depthwise_gap_bytes(int N, int C, int Ho, int Wo);
int dpk_depthwise_gap_ok(int N, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw);
int dpk_depthwise_gap(void *stream, int dt, void *y, void *gap, void *part, const void *x, const float *w,
                      const float *bias, int N, int C, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw,
                      int dh, int dw, int pt, int pl, int act, const float *pre_b, int pre_act);
/* dense convs of small patches (cin * kh * kw <= 64: the stems) to any number of outputs */
int dpk_conv_co_ok(int cin, int cout, int kh, int kw);
int dpk_conv_co(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int Cin,
                int Cout, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                int act);
/* y = act(bias + the kh*kw tap maps of z (float, N x Cout*kh*kw x H x W, tap-major) shifted into place):
 * the second half of a stride-1 conv done as one GEMM per tap */
int dpk_tap_sum(void *stream, int dt, void *y, const float *z, const float *bias, int N, int Cout, int kh, int kw,
                int dh, int dw, int pt, int pl, int H, int W, int Ho, int Wo, int act);
/* per-image 1x1 weights with the SE gate folded in: wo (N x Cout x Cin, storage type) = w * g[n] */
int dpk_scale_w(void *stream, int dt, void *wo, const float *w, const void *g, int N, int Cout, int Cin);
/* few-output dense convs (the 3x3 heads to 2 classes): usable when dpk_conv_few_ok */
int dpk_conv_few_ok(int cin, int cout, int kh, int kw);
int dpk_conv_few(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int Cin,
                 int Cout, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                 int act);
/* 1x1 conv on 1x1 maps (N x Cin -> N x Cout), fused bias (may be NULL) + activation (act < 0: none at all,
 * the raw output) */
int dpk_fc(void *stream, int dt, void *y, const void *x, const float *w, const float *bias, int N, int Cin, int Cout,
           int act);
int dpk_gap(void *stream, int dt, void *y, const void *x, int N, int C, size_t HW);
int dpk_scse(void *stream, int dt, void *y, const void *x, const void *cs, const void *ss, int N, int C, size_t HW);
int dpk_add(void *stream, int dt, void *y, const void *a, const void *b, size_t n);
int dpk_concat_part(void *stream, int dt, void *y, const void *x, int N, int Cx, int Cy, int c0, size_t HW);
int dpk_broadcast(void *stream, int dt, void *y, const void *x, int N, int C, size_t HW);
int dpk_upsample(void *stream, int dt, void *y, const void *x, int N, int C, int H, int W, int Ho, int Wo);
int dpk_softmax(void *stream, int dt, void *y, const void *x, int N, int C, size_t HW);
/* float32 <-> storage type (uploads and downloads of half tensors) */
int dpk_from_f32(void *stream, int dt, void *y, const float *x, size_t n);
int dpk_to_f32(void *stream, int dt, float *y, const void *x, size_t n);
/* adds the number of NaN/Inf among x[0..n) to *count (device memory) */
int dpk_count_nonfinite(void *stream, const float *x, size_t n, unsigned long long *count);
const char *dpk_error_string(int err);

#ifdef __cplusplus
}
#endif
#endif
