/* kernels.h - launchers of the CUDA backend's own kernels (cuda/kernels.cu). Each returns a
 * cudaError_t as int (0 = success); stream is a cudaStream_t. Tensors: float32 NCHW, device. */
#ifndef DISOPT_CUDA_KERNELS_H
#define DISOPT_CUDA_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { DPK_ACT_NONE = 0, DPK_ACT_RELU = 1, DPK_ACT_SWISH = 2, DPK_ACT_SIGMOID = 3 }; /* = dp_act */

int dpk_bias_act(void *stream, float *y, const float *bias, int N, int C, size_t HW, int act);
int dpk_scale_shift_act(void *stream, float *y, const float *x, const float *s, const float *sh, int N, int C,
                        size_t HW, int act);
int dpk_scale_ch(void *stream, float *y, const float *x, const float *g, int N, int C, size_t HW);
int dpk_pad(void *stream, float *y, const float *x, int N, int C, int H, int W, int pt, int pb, int pl, int pr);
int dpk_depthwise(void *stream, float *y, const float *x, const float *w, const float *bias, int N, int C, int H,
                  int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act);
/* few-output dense convs (the 3x3 heads to 2 classes): usable when dpk_conv_few_ok */
int dpk_conv_few_ok(int cin, int cout, int kh, int kw);
int dpk_conv_few(void *stream, float *y, const float *x, const float *w, const float *bias, int N, int Cin, int Cout,
                 int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act);
int dpk_gap(void *stream, float *y, const float *x, int N, int C, size_t HW);
int dpk_scse(void *stream, float *y, const float *x, const float *cs, const float *ss, int N, int C, size_t HW);
int dpk_add(void *stream, float *y, const float *a, const float *b, size_t n);
int dpk_concat_part(void *stream, float *y, const float *x, int N, int Cx, int Cy, int c0, size_t HW);
int dpk_broadcast(void *stream, float *y, const float *x, int N, int C, size_t HW);
int dpk_upsample(void *stream, float *y, const float *x, int N, int C, int H, int W, int Ho, int Wo);
int dpk_softmax(void *stream, float *y, const float *x, int N, int C, size_t HW);
const char *dpk_error_string(int err);

#ifdef __cplusplus
}
#endif
#endif
