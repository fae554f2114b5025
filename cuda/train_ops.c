/*
 * train_ops.c - the GPU training ops of train_ops.h (issue 5): the context, argument checks, cuDNN convolutions
 * and the sequencing of our kernels (train_kernels.cu, train_loss.cu).
 *
 * Conventions: those of train_ops.h. The checks repeat the CPU kernels' (core/train/grad_tmpl.h, loss.inc,
 * optim.inc) with the same statuses; the module cannot call the core, so the few helpers it needs (the conv
 * shape check, the optimizer's config check) are restated here. Every CUDA and cuDNN return code is checked
 * and reported through the host's error function; nothing aborts; no global state. Scratch use of one call:
 * [reduction partials | per-channel values] from offset 0 of the context's scratch arena, in stream order (the
 * next call may reuse it at once: the stream serialises). Growing an arena synchronises the stream first.
 */
#include "train_ops.h"

#include "cu_status.h"

#include "kernels.h"
#include "train_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN256(x) (((x) + 255) & ~(size_t)255)

/* the cuDNN algorithm of one conv (its params, n, h, w) in one direction (0 forward, 1 data, 2 filter) */
#define ALGO_CACHE 512
#define ALGO_KEY 17
typedef struct conv_algo {
    int key[ALGO_KEY];
    int algo;
    size_t ws;
} conv_algo;

struct dp_cu_tr_ctx {
    const dp_cuda_host *host;
    int device;
    cudaStream_t stream;
    cudnnHandle_t dnn;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t fd;
    cudnnConvolutionDescriptor_t cd;
    void *ws, *scratch; /* cuDNN workspace + explicit padding; reduction partials and per-channel values */
    size_t ws_bytes, scratch_bytes;
    conv_algo algos[ALGO_CACHE]; /* the algorithm chosen per (conv, input shape, direction) */
    int nalgos, next_algo;
    cublasHandle_t blas; /* pointwise convs as GEMMs (FP32 mode: pedantic math, no TF32) */
    int math;            /* DP_CU_TR_MATH_*: the convs' and GEMMs' math (dp_cu_tr_set_math) */
    int own_dw;          /* depthwise convs (forward, backward) by our kernels (dptk_dw_*); DISOPT_CUDA_TR_DW=cudnn: by cuDNN */
    int own_sc;          /* 3x3 convs with 1..4 output channels by our kernels (dptk_sc_*); DISOPT_CUDA_TR_HEADS=cudnn: cuDNN */
};

#define CU_TRY(c, expr, what) DP_CU_TRY((c)->host, expr, what)
#define DNN_TRY(c, expr, what) DP_DNN_TRY((c)->host, expr, what)
#define K_TRY(c, expr, what) CU_TRY(c, (cudaError_t)(expr), what)
#define TRY(expr)                                                                                                  \
    do {                                                                                                           \
        disopt_status s_ = (expr);                                                                                 \
        if (s_ != DISOPT_OK) return s_;                                                                            \
    } while (0)
#define BAD(c, ...) (c)->host->error(DISOPT_ERR_INVALID_ARGUMENT, __VA_ARGS__)
#define BLAS_TRY(c, expr, what)                                                                                    \
    do {                                                                                                           \
        cublasStatus_t b_ = (expr);                                                                                \
        if (b_ != CUBLAS_STATUS_SUCCESS)                                                                           \
            return (c)->host->error(b_ == CUBLAS_STATUS_ALLOC_FAILED ? DISOPT_ERR_OUT_OF_MEMORY : DISOPT_ERR_BACKEND, \
                                    "cublas: %s: %s", (what), cublasGetStatusString(b_));                            \
    } while (0)
/* every entry point: a context, its device current */
#define ENTER(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) return DISOPT_ERR_INVALID_ARGUMENT;                                                              \
        CU_TRY((c), cudaSetDevice((c)->device), "cudaSetDevice");                                                  \
    } while (0)

/* ---------------------------------------------------------------- context, memory */
void dp_cu_tr_ctx_destroy(dp_cu_tr_ctx *c) {
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->xd) cudnnDestroyTensorDescriptor(c->xd);
    if (c->yd) cudnnDestroyTensorDescriptor(c->yd);
    if (c->fd) cudnnDestroyFilterDescriptor(c->fd);
    if (c->cd) cudnnDestroyConvolutionDescriptor(c->cd);
    if (c->dnn) cudnnDestroy(c->dnn);
    if (c->blas) cublasDestroy(c->blas);
    if (c->ws) cudaFree(c->ws);
    if (c->scratch) cudaFree(c->scratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

disopt_status dp_cu_tr_ctx_create(const dp_cuda_host *host, int device, dp_cu_tr_ctx **out) {
    if (!host || !out) return DISOPT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (host->abi != DP_CUDA_ABI) return DISOPT_ERR_UNSUPPORTED; /* another layout: cannot call it back */
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || count == 0) {
        cudaGetLastError();
        return host->error(DISOPT_ERR_UNSUPPORTED, "no CUDA device: %s",
                           ce != cudaSuccess ? cudaGetErrorString(ce) : "none visible");
    }
    if (device < 0 || device >= count)
        return host->error(DISOPT_ERR_INVALID_ARGUMENT, "CUDA device %d does not exist (%d visible)", device, count);
    dp_cu_tr_ctx *c = calloc(1, sizeof *c);
    if (!c) return host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda training context: out of memory");
    c->host = host;
    c->device = device;
    const char *dwk = getenv("DISOPT_CUDA_TR_DW");
    c->own_dw = !(dwk && !strcmp(dwk, "cudnn")); /* ours by default: faster than cuDNN's in every math mode (§7.6) */
    const char *hk = getenv("DISOPT_CUDA_TR_HEADS");
    c->own_sc = !(hk && !strcmp(hk, "cudnn"));
    disopt_status s = DISOPT_OK;
    cudaError_t r = cudaSetDevice(device);
    if (r == cudaSuccess) r = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (r != cudaSuccess) s = dp_cu_status(c->host, r, "training context setup");
    cudnnStatus_t d = CUDNN_STATUS_SUCCESS;
    if (!s) d = cudnnCreate(&c->dnn);
    if (!s && d == CUDNN_STATUS_SUCCESS) d = cudnnSetStream(c->dnn, c->stream);
    if (!s && d == CUDNN_STATUS_SUCCESS) d = cudnnCreateTensorDescriptor(&c->xd);
    if (!s && d == CUDNN_STATUS_SUCCESS) d = cudnnCreateTensorDescriptor(&c->yd);
    if (!s && d == CUDNN_STATUS_SUCCESS) d = cudnnCreateFilterDescriptor(&c->fd);
    if (!s && d == CUDNN_STATUS_SUCCESS) d = cudnnCreateConvolutionDescriptor(&c->cd);
    if (!s && d != CUDNN_STATUS_SUCCESS) s = dp_dnn_status(c->host, d, "training context setup");
    cublasStatus_t bl = CUBLAS_STATUS_SUCCESS;
    if (!s) bl = cublasCreate(&c->blas);
    if (!s && bl == CUBLAS_STATUS_SUCCESS) bl = cublasSetStream(c->blas, c->stream);
    if (!s && bl == CUBLAS_STATUS_SUCCESS) bl = cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH);
    if (!s && bl != CUBLAS_STATUS_SUCCESS)
        s = c->host->error(DISOPT_ERR_BACKEND, "cublas: training context setup: %s", cublasGetStatusString(bl));
    if (s) {
        dp_cu_tr_ctx_destroy(c);
        return s;
    }
    *out = c;
    return DISOPT_OK;
}

int dp_cu_tr_device(const dp_cu_tr_ctx *c) { return c ? c->device : -1; }

disopt_status dp_cu_tr_set_math(dp_cu_tr_ctx *c, int math) {
    ENTER(c);
    if (math != DP_CU_TR_MATH_FP32 && math != DP_CU_TR_MATH_TF32 && math != DP_CU_TR_MATH_BF16)
        return BAD(c, "training math mode %d (0 FP32, 1 TF32, 2 BF16)", math);
    /* BF16 mode: cublasGemmEx's compute type asks for BF16; the handle's mode must not force pedantic FP32 */
    const cublasMath_t bm = math == DP_CU_TR_MATH_FP32   ? CUBLAS_PEDANTIC_MATH
                            : math == DP_CU_TR_MATH_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                         : CUBLAS_DEFAULT_MATH;
    BLAS_TRY(c, cublasSetMathMode(c->blas, bm), "math mode");
    c->math = math;
    c->nalgos = c->next_algo = 0; /* the algorithms were chosen for the old math */
    return DISOPT_OK;
}

void *dp_cu_tr_stream(dp_cu_tr_ctx *c) { return c ? (void *)c->stream : NULL; }

disopt_status dp_cu_tr_sync(dp_cu_tr_ctx *c) {
    ENTER(c);
    CU_TRY(c, cudaStreamSynchronize(c->stream), "synchronize");
    CU_TRY(c, cudaGetLastError(), "synchronize");
    return DISOPT_OK;
}

/* grows one of the context's arenas to at least need bytes (the old contents are lost) */
static disopt_status grow(dp_cu_tr_ctx *c, void **buf, size_t *have, size_t need, const char *what) {
    if (need <= *have) return DISOPT_OK;
    need = ALIGN256(need);
    CU_TRY(c, cudaStreamSynchronize(c->stream), what); /* queued work may still use the old buffer */
    if (*buf) cudaFree(*buf);
    *buf = NULL;
    *have = 0;
    cudaError_t e = cudaMalloc(buf, need);
    if (e != cudaSuccess) {
        *buf = NULL;
        cudaGetLastError();
        return c->host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: cannot allocate %zu bytes of %s on device %d: %s",
                              need, what, c->device, cudaGetErrorString(e));
    }
    *have = need;
    return DISOPT_OK;
}

static disopt_status need_ws(dp_cu_tr_ctx *c, size_t bytes) {
    return grow(c, &c->ws, &c->ws_bytes, bytes, "training workspace");
}

static disopt_status need_scratch(dp_cu_tr_ctx *c, size_t bytes) {
    return grow(c, &c->scratch, &c->scratch_bytes, bytes, "training scratch");
}

disopt_status dp_cu_tr_reserve(dp_cu_tr_ctx *c, size_t ws_bytes, size_t scratch_bytes) {
    ENTER(c);
    TRY(need_ws(c, ws_bytes));
    return need_scratch(c, scratch_bytes);
}

disopt_status dp_cu_tr_alloc(dp_cu_tr_ctx *c, size_t bytes, void **out) {
    if (!out) return DISOPT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    ENTER(c);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? ALIGN256(bytes) : 256);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return c->host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: cannot allocate %zu bytes on device %d: %s", bytes,
                              c->device, cudaGetErrorString(e));
    }
    *out = p;
    return DISOPT_OK;
}

void dp_cu_tr_free(dp_cu_tr_ctx *c, void *p) {
    if (!c || !p) return;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    cudaFree(p);
}

disopt_status dp_cu_tr_upload(dp_cu_tr_ctx *c, void *dst, const void *src, size_t bytes) {
    ENTER(c);
    if (!bytes) return DISOPT_OK;
    if (!dst || !src) return BAD(c, "upload: NULL pointer");
    CU_TRY(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
    CU_TRY(c, cudaStreamSynchronize(c->stream), "upload");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_download(dp_cu_tr_ctx *c, void *dst, const void *src, size_t bytes) {
    ENTER(c);
    if (!bytes) return DISOPT_OK;
    if (!dst || !src) return BAD(c, "download: NULL pointer");
    CU_TRY(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    CU_TRY(c, cudaStreamSynchronize(c->stream), "download");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_zero(dp_cu_tr_ctx *c, void *dst, size_t bytes) {
    ENTER(c);
    if (!bytes) return DISOPT_OK;
    if (!dst) return BAD(c, "zero: NULL pointer");
    CU_TRY(c, cudaMemsetAsync(dst, 0, bytes, c->stream), "zero");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_copy(dp_cu_tr_ctx *c, void *dst, const void *src, size_t bytes) {
    ENTER(c);
    if (!bytes) return DISOPT_OK;
    if (!dst || !src) return BAD(c, "copy: NULL pointer");
    CU_TRY(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "copy");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_fill(dp_cu_tr_ctx *c, float *x, size_t n, float v) {
    ENTER(c);
    if (!n) return DISOPT_OK;
    if (!x) return BAD(c, "fill: NULL pointer");
    K_TRY(c, dptk_fill(c->stream, x, n, v), "fill");
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- convolution */
/* dp_tr_conv_check's rules (grad_ops.c) */
static disopt_status conv_check(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w, int *oh, int *ow) {
    if (!p) return BAD(c, "conv: NULL params");
    if (n <= 0 || h <= 0 || w <= 0 || p->cin <= 0 || p->cout <= 0 || p->kh <= 0 || p->kw <= 0 || p->sh <= 0 ||
        p->sw <= 0 || p->dh <= 0 || p->dw <= 0 || p->groups <= 0 || p->pt < 0 || p->pb < 0 || p->pl < 0 || p->pr < 0)
        return BAD(c, "conv: bad shape or params (n %d, %dx%d, cin %d, cout %d, k %dx%d, s %d,%d, d %d,%d, groups %d)",
                   n, h, w, p->cin, p->cout, p->kh, p->kw, p->sh, p->sw, p->dh, p->dw, p->groups);
    if (p->cin % p->groups || p->cout % p->groups)
        return BAD(c, "conv: groups %d do not divide cin %d and cout %d", p->groups, p->cin, p->cout);
    long eh = (long)(p->kh - 1) * p->dh + 1, ew = (long)(p->kw - 1) * p->dw + 1;
    long ph = (long)h + p->pt + p->pb, pw = (long)w + p->pl + p->pr;
    if (eh > ph || ew > pw)
        return BAD(c, "conv: kernel %ldx%ld (dilated) exceeds the padded input %ldx%ld", eh, ew, ph, pw);
    *oh = (int)((ph - eh) / p->sh + 1);
    *ow = (int)((pw - ew) / p->sw + 1);
    return DISOPT_OK;
}

typedef struct conv_geo {
    int oh, ow;     /* output */
    int asym;       /* padding done explicitly */
    int Hx, Wx;     /* the input as cuDNN sees it */
    size_t pad_bytes; /* of the explicitly padded copy (x or dx), aligned; 0 when symmetric */
} conv_geo;

/* descriptors of one conv: x (padded when asymmetric), y, filter, conv (FMA math, groups) */
static disopt_status conv_setup(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w, conv_geo *g) {
    TRY(conv_check(c, p, n, h, w, &g->oh, &g->ow));
    g->asym = !(p->pt == p->pb && p->pl == p->pr);
    g->Hx = h + (g->asym ? p->pt + p->pb : 0);
    g->Wx = w + (g->asym ? p->pl + p->pr : 0);
    const double ex = (double)n * p->cin * g->Hx * g->Wx, ey = (double)n * p->cout * g->oh * g->ow;
    if (ex > INT_MAX || ey > INT_MAX)
        return c->host->error(DISOPT_ERR_UNSUPPORTED, "conv: tensors of more than 2^31 elements (cuDNN's limit)");
    g->pad_bytes = g->asym ? ALIGN256((size_t)n * p->cin * g->Hx * g->Wx * sizeof(float)) : 0;
    DNN_TRY(c, cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, p->cin, g->Hx, g->Wx), "x");
    DNN_TRY(c, cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, p->cout, g->oh, g->ow), "y");
    DNN_TRY(c, cudnnSetFilter4dDescriptor(c->fd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, p->cout, p->cin / p->groups,
                                          p->kh, p->kw),
            "filter");
    DNN_TRY(c, cudnnSetConvolution2dDescriptor(c->cd, g->asym ? 0 : p->pt, g->asym ? 0 : p->pl, p->sh, p->sw, p->dh,
                                               p->dw, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
            "convolution");
    DNN_TRY(c, cudnnSetConvolutionGroupCount(c->cd, p->groups), "group count");
    /* FP32: FMA math (no TF32); TF32 and BF16 modes: cuDNN's default math, TF32 tensor cores on FP32 data */
    DNN_TRY(c, cudnnSetConvolutionMathType(c->cd, c->math == DP_CU_TR_MATH_FP32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH),
            "math type");
    int dn, dc, dh, dw;
    DNN_TRY(c, cudnnGetConvolution2dForwardOutputDim(c->cd, c->xd, c->fd, &dn, &dc, &dh, &dw), "output size");
    if (dn != n || dc != p->cout || dh != g->oh || dw != g->ow)
        return c->host->error(DISOPT_ERR_INTERNAL, "conv: cuDNN's output %dx%dx%dx%d differs from %dx%dx%dx%d", dn, dc,
                              dh, dw, n, p->cout, g->oh, g->ow);
    return DISOPT_OK;
}

/* Candidate algorithms in order of preference: the heuristics' GEMM-family ones (no FFT, no Winograd) with FMA
 * math (FP32 mode only; in TF32/BF16 mode any math, in the heuristics' order) and deterministic; then not
 * necessarily deterministic; then any math type (in FP32 mode the descriptor forbids TF32 anyway); then the
 * rest of the family in enum order. Each listed once; returns the count. */
#define RANK_BODY(family, nfamily)                                                                                 \
    int m = 0;                                                                                                     \
    for (int pass = 0; pass < 4; pass++)                                                                           \
        for (int i = 0; i < (pass < 3 ? got : (nfamily)); i++) {                                                   \
            const int a = pass < 3 ? (int)perf[i].algo : (family)[i];                                              \
            int ok = 0, seen = 0;                                                                                  \
            for (int k = 0; k < (nfamily); k++) ok |= (family)[k] == a;                                            \
            for (int k = 0; k < m; k++) seen |= out[k] == a;                                                       \
            if (!ok || seen) continue;                                                                             \
            if (pass < 3 && (perf[i].status != CUDNN_STATUS_SUCCESS ||                                             \
                             (pass < 2 && fma_only && perf[i].mathType != CUDNN_FMA_MATH) ||                       \
                             (pass < 1 && perf[i].determinism != CUDNN_DETERMINISTIC)))                            \
                continue;                                                                                          \
            out[m++] = a;                                                                                          \
        }                                                                                                          \
    return m

static const int FWD_FAMILY[4] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                                  CUDNN_CONVOLUTION_FWD_ALGO_DIRECT};
static const int BWD_DATA_FAMILY[2] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0};
static const int BWD_FILTER_FAMILY[3] = {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3};

static int rank_fwd(const cudnnConvolutionFwdAlgoPerf_t *perf, int got, int fma_only, int *out) {
    RANK_BODY(FWD_FAMILY, 4);
}
static int rank_bwd_data(const cudnnConvolutionBwdDataAlgoPerf_t *perf, int got, int fma_only, int *out) {
    RANK_BODY(BWD_DATA_FAMILY, 2);
}
static int rank_bwd_filter(const cudnnConvolutionBwdFilterAlgoPerf_t *perf, int got, int fma_only, int *out) {
    RANK_BODY(BWD_FILTER_FAMILY, 3);
}

/* The algorithm and workspace size of a conv (descriptors set by conv_setup) in direction dir (0 forward,
 * 1 data gradient, 2 filter gradient): cached per context, else the first candidate (rank_*) whose workspace
 * query cuDNN accepts. */
static disopt_status choose(dp_cu_tr_ctx *c, int dir, const dp_conv_params *p, int n, int h, int w, int *algo,
                            size_t *aws) {
    const int key[ALGO_KEY] = {dir,    n,     h,      w,     p->cin, p->cout, p->kh, p->kw, p->sh,
                               p->sw,  p->dh, p->dw,  p->groups, p->pt, p->pb, p->pl, p->pr};
    for (int i = 0; i < c->nalgos; i++)
        if (!memcmp(c->algos[i].key, key, sizeof key)) {
            *algo = c->algos[i].algo;
            *aws = c->algos[i].ws;
            return DISOPT_OK;
        }
    static const char *const what[3] = {"forward", "backward data", "backward filter"};
    int got = 0, cand[8], nc = 0;
    const int fma = c->math == DP_CU_TR_MATH_FP32;
    if (dir == 0) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        DNN_TRY(c, cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, c->xd, c->fd, c->cd, c->yd,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf),
                "forward heuristics");
        nc = rank_fwd(perf, got, fma, cand);
    } else if (dir == 1) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        DNN_TRY(c, cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, c->fd, c->yd, c->cd, c->xd,
                                                               CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf),
                "backward data heuristics");
        nc = rank_bwd_data(perf, got, fma, cand);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        DNN_TRY(c, cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->dnn, c->xd, c->yd, c->cd, c->fd,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf),
                "backward filter heuristics");
        nc = rank_bwd_filter(perf, got, fma, cand);
    }
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    int k = 0;
    for (; k < nc; k++) {
        *aws = 0;
        last = dir == 0   ? cudnnGetConvolutionForwardWorkspaceSize(c->dnn, c->xd, c->fd, c->cd, c->yd,
                                                                    (cudnnConvolutionFwdAlgo_t)cand[k], aws)
               : dir == 1 ? cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, c->fd, c->yd, c->cd, c->xd,
                                                                         (cudnnConvolutionBwdDataAlgo_t)cand[k], aws)
                          : cudnnGetConvolutionBackwardFilterWorkspaceSize(
                                c->dnn, c->xd, c->yd, c->cd, c->fd, (cudnnConvolutionBwdFilterAlgo_t)cand[k], aws);
        if (last == CUDNN_STATUS_SUCCESS) break;
    }
    if (k == nc)
        return c->host->error(DISOPT_ERR_UNSUPPORTED,
                              "cudnn: no FP32 (FMA) GEMM-family %s algorithm for conv %d->%d k%dx%d s%d,%d d%d,%d g%d "
                              "on %dx%dx%d (%d tried, last: %s)",
                              what[dir], p->cin, p->cout, p->kh, p->kw, p->sh, p->sw, p->dh, p->dw, p->groups, n, h, w,
                              nc, cudnnGetErrorString(last));
    *algo = cand[k];
    int slot = c->nalgos;
    if (c->nalgos < ALGO_CACHE) {
        c->nalgos++;
    } else { /* full: round robin */
        slot = c->next_algo;
        c->next_algo = (c->next_algo + 1) % ALGO_CACHE;
    }
    memcpy(c->algos[slot].key, key, sizeof key);
    c->algos[slot].algo = *algo;
    c->algos[slot].ws = *aws;
    return DISOPT_OK;
}

/* depthwise convs (groups = cin = cout) run by our kernels (dptk_dw_*) unless DISOPT_CUDA_TR_DW=cudnn */
static int depthwise(const dp_conv_params *p) { return p->groups > 1 && p->groups == p->cin && p->groups == p->cout; }

static dptk_dw_geo dw_geo(const dp_conv_params *p, int n, int h, int w, const conv_geo *g) {
    const dptk_dw_geo d = {n, p->cin, h, w, g->oh, g->ow, p->kh, p->kw, p->sh, p->sw, p->dh, p->dw, p->pt, p->pl};
    return d;
}

/* Pointwise convs (1x1, stride 1, unpadded, groups 1: the MBConv expansions and projections, the SE and
 * image-pooling FCs, the decoders' 1x1s) run as cuBLAS SGEMMs in FP32 (pedantic math: no TF32), which
 * cuDNN's FMA GEMM-family algorithms do several times slower in the backward directions (measured:
 * bench_train -profile, RESULTS.md). Row-major NCHW tensors are read as column-major matrices: image n of x
 * is X_n (Cin x HW) row-major = X_n^T (HW x Cin) column-major, lda HW; W (Cout x Cin) row-major = W^T
 * (Cin x Cout) column-major, lda Cin. On 1x1 maps (HW = 1) the batch is one GEMM dimension instead. */
/* 3x3 convs with 1..4 output channels (the segmentation heads) run by our kernels (dptk_sc_*) */
static int small_cout(const dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w, const conv_geo *g,
                      dptk_sc_geo *sg) {
    if (!c->own_sc || p->groups != 1 || p->cout < 1 || p->cout > 4 || p->kh != 3 || p->kw != 3 || p->sh != 1 ||
        p->sw != 1 || p->dh != 1 || p->dw != 1)
        return 0;
    const dptk_sc_geo s = {n, p->cin, p->cout, h, w, g->oh, g->ow, p->pt, p->pl};
    *sg = s;
    return dptk_sc_ok(sg);
}

static int pointwise(const dp_conv_params *p) {
    return p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->groups == 1 && p->pt == 0 && p->pb == 0 &&
           p->pl == 0 && p->pr == 0;
}

/* C = alpha op(A) op(B) + beta C in the context's math: FP32 and TF32 modes through cublasSgemm (the handle's
 * math mode: pedantic FP32, or TF32 tensor ops) on float A and B; BF16 mode through cublasGemmEx on bfloat16 A and
 * B (pw_operands' copies) with FP32 accumulation and a float C (CUBLAS_COMPUTE_32F). */
static cublasStatus_t gemm(dp_cu_tr_ctx *c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const void *a, int lda, const void *b, int ldb, const float *beta,
                           float *cm, int ldc) {
    if (c->math != DP_CU_TR_MATH_BF16)
        return cublasSgemm(c->blas, ta, tb, m, n, k, alpha, (const float *)a, lda, (const float *)b, ldb, beta, cm,
                           ldc);
    return cublasGemmEx(c->blas, ta, tb, m, n, k, alpha, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, beta, cm,
                        CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
static cublasStatus_t gemm_sb(dp_cu_tr_ctx *c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float *alpha, const void *a, int lda, long long sa, const void *b, int ldb,
                              long long sb, const float *beta, float *cm, int ldc, long long sc, int count) {
    if (c->math != DP_CU_TR_MATH_BF16)
        return cublasSgemmStridedBatched(c->blas, ta, tb, m, n, k, alpha, (const float *)a, lda, sa,
                                         (const float *)b, ldb, sb, beta, cm, ldc, sc, count);
    return cublasGemmStridedBatchedEx(c->blas, ta, tb, m, n, k, alpha, a, CUDA_R_16BF, lda, sa, b, CUDA_R_16BF, ldb,
                                      sb, beta, cm, CUDA_R_32F, ldc, sc, count, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT);
}

/* The two operands of a pointwise conv's GEMM as the context's math wants them: the float tensors themselves
 * (FP32, TF32), or (BF16) bfloat16 copies of all na / nb elements made in the workspace (rounded to nearest even);
 * *extra (may be NULL): extra_bytes more of the workspace after them. at(): element e of such an operand. */
static disopt_status pw_operands(dp_cu_tr_ctx *c, const float *a, size_t na, const float *b, size_t nb,
                                 size_t extra_bytes, const void **oa, const void **ob, void **extra) {
    const int bf = c->math == DP_CU_TR_MATH_BF16;
    const size_t pb = bf ? ALIGN256(na * 2) : 0, pe = bf ? pb + ALIGN256(nb * 2) : 0;
    TRY(need_ws(c, pe + extra_bytes));
    *oa = a;
    *ob = b;
    if (bf) {
        uint16_t *ha = (uint16_t *)c->ws, *hb = (uint16_t *)(void *)((char *)c->ws + pb);
        K_TRY(c, dptk_to_bf16(c->stream, na, a, ha), "pointwise conv: bfloat16 operand");
        K_TRY(c, dptk_to_bf16(c->stream, nb, b, hb), "pointwise conv: bfloat16 operand");
        *oa = ha;
        *ob = hb;
    }
    if (extra) *extra = (char *)c->ws + pe;
    return DISOPT_OK;
}
static const void *at(const dp_cu_tr_ctx *c, const void *p, size_t e) {
    return (const char *)p + e * (c->math == DP_CU_TR_MATH_BF16 ? 2 : 4);
}

/* y = conv(x) (no bias) */
static disopt_status pw_fwd(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int hw, const float *x, const float *wt,
                            float *y) {
    const float one = 1.0f, zero = 0.0f;
    const void *X, *Wt;
    TRY(pw_operands(c, x, (size_t)n * p->cin * hw, wt, (size_t)p->cout * p->cin, 0, &X, &Wt, NULL));
    if (hw == 1) /* Y^T (Cout x N) = W (Cout x Cin) X^T (Cin x N) */
        BLAS_TRY(c, gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, p->cout, n, p->cin, &one, Wt, p->cin, X, p->cin, &zero, y,
                         p->cout),
                 "pointwise conv");
    else /* per image: Y_n^T (HW x Cout) = X_n^T (HW x Cin) W^T (Cin x Cout) */
        BLAS_TRY(c, gemm_sb(c, CUBLAS_OP_N, CUBLAS_OP_N, hw, p->cout, p->cin, &one, X, hw, (long long)p->cin * hw, Wt,
                            p->cin, 0, &zero, y, hw, (long long)p->cout * hw, n),
                 "pointwise conv");
    return DISOPT_OK;
}

/* dx += W^T dy */
static disopt_status pw_bwd_data(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int hw, const float *dy,
                                 const float *wt, float *dx) {
    const float one = 1.0f;
    const void *DY, *Wt;
    TRY(pw_operands(c, dy, (size_t)n * p->cout * hw, wt, (size_t)p->cout * p->cin, 0, &DY, &Wt, NULL));
    if (hw == 1) /* dX^T (Cin x N) += W^T (Cin x Cout) dY^T (Cout x N) */
        BLAS_TRY(c, gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, p->cin, n, p->cout, &one, Wt, p->cin, DY, p->cout, &one, dx,
                         p->cin),
                 "pointwise conv data gradient");
    else /* per image: dX_n^T (HW x Cin) += dY_n^T (HW x Cout) W (Cout x Cin) */
        BLAS_TRY(c, gemm_sb(c, CUBLAS_OP_N, CUBLAS_OP_T, hw, p->cin, p->cout, &one, DY, hw, (long long)p->cout * hw, Wt,
                            p->cin, 0, &one, dx, hw, (long long)p->cin * hw, n),
                 "pointwise conv data gradient");
    return DISOPT_OK;
}

/* dw += sum over images of dy_n x_n^T, the images in order */
#define PW_PARTS_MAX_BYTES ((size_t)256 << 20)
static disopt_status pw_bwd_filter(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int hw, const float *x,
                                   const float *dy, float *dw) {
    const float one = 1.0f;
    const size_t per = (size_t)p->cin * p->cout;
    const int batched = hw > 1 && n > 1 && (size_t)n * per * sizeof(float) <= PW_PARTS_MAX_BYTES;
    const void *X, *DY;
    void *extra = NULL;
    TRY(pw_operands(c, x, (size_t)n * p->cin * hw, dy, (size_t)n * p->cout * hw,
                    batched ? (size_t)n * per * sizeof(float) : 0, &X, &DY, &extra));
    if (hw == 1) /* dW^T (Cin x Cout) += X^T (Cin x N) dY (N x Cout) */
        BLAS_TRY(c, gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, p->cin, p->cout, n, &one, X, p->cin, DY, p->cout, &one, dw,
                         p->cin),
                 "pointwise conv filter gradient");
    else if (batched) {
        /* one strided-batched GEMM for every image's dW_n^T (Cin x Cout) = X_n dY_n^T into the workspace (the
         * images' GEMMs run side by side: each alone is a small output with a long reduction), then added to dw
         * image by image in order (deterministic) */
        const float zero = 0.0f;
        float *part = extra;
        BLAS_TRY(c, gemm_sb(c, CUBLAS_OP_T, CUBLAS_OP_N, p->cin, p->cout, hw, &one, X, hw, (long long)p->cin * hw, DY,
                            hw, (long long)p->cout * hw, &zero, part, p->cin, (long long)per, n),
                 "pointwise conv filter gradient");
        K_TRY(c, dptk_acc_parts(c->stream, per, part, n, dw), "pointwise conv filter gradient");
    } else /* dW^T (Cin x Cout) += X_n (Cin x HW) dY_n^T (HW x Cout) */
        for (int i = 0; i < n; i++)
            BLAS_TRY(c, gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, p->cin, p->cout, hw, &one, at(c, X, (size_t)i * p->cin * hw),
                             hw, at(c, DY, (size_t)i * p->cout * hw), hw, &one, dw, p->cin),
                     "pointwise conv filter gradient");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_conv_fwd(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w, const float *x,
                                const float *wt, const float *b, float *y) {
    ENTER(c);
    if (!x || !wt || !y) return BAD(c, "conv forward: NULL tensor");
    conv_geo g;
    TRY(conv_setup(c, p, n, h, w, &g));
    if (pointwise(p)) {
        TRY(pw_fwd(c, p, n, h * w, x, wt, y));
        if (b)
            K_TRY(c, dpk_bias_act(c->stream, DPK_F32, y, b, n, p->cout, (size_t)h * w, DPK_ACT_NONE), "conv bias");
        return DISOPT_OK;
    }
    if (c->own_dw && depthwise(p)) { /* the bias included, in the CPU's order */
        const dptk_dw_geo dg = dw_geo(p, n, h, w, &g);
        K_TRY(c, dptk_dw_fwd(c->stream, &dg, x, wt, b, y), "depthwise forward");
        return DISOPT_OK;
    }
    dptk_sc_geo sg;
    if (small_cout(c, p, n, h, w, &g, &sg)) { /* the bias included */
        K_TRY(c, dptk_sc_fwd(c->stream, &sg, x, wt, b, y), "conv forward (few output channels)");
        return DISOPT_OK;
    }
    int algo = 0;
    size_t aws = 0;
    TRY(choose(c, 0, p, n, h, w, &algo, &aws));
    TRY(need_ws(c, g.pad_bytes + aws));
    const float *src = x;
    if (g.asym) {
        K_TRY(c, dpk_pad(c->stream, DPK_F32, c->ws, x, n, p->cin, h, w, p->pt, p->pb, p->pl, p->pr), "conv pad");
        src = c->ws;
    }
    const float one = 1.0f, zero = 0.0f;
    DNN_TRY(c, cudnnConvolutionForward(c->dnn, &one, c->xd, src, c->fd, wt, c->cd, (cudnnConvolutionFwdAlgo_t)algo,
                                       aws ? (char *)c->ws + g.pad_bytes : NULL, aws, &zero, c->yd, y),
            "convolution forward");
    if (b)
        K_TRY(c, dpk_bias_act(c->stream, DPK_F32, y, b, n, p->cout, (size_t)g.oh * g.ow, DPK_ACT_NONE), "conv bias");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_conv_bwd_data(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w, const float *dy,
                                     const float *wt, float *dx) {
    ENTER(c);
    if (!dy || !wt || !dx) return BAD(c, "conv backward data: NULL tensor");
    conv_geo g;
    TRY(conv_setup(c, p, n, h, w, &g));
    if (pointwise(p)) return pw_bwd_data(c, p, n, h * w, dy, wt, dx);
    if (c->own_dw && depthwise(p)) { /* gathers in the CPU's order: dx += directly */
        const dptk_dw_geo dg = dw_geo(p, n, h, w, &g);
        K_TRY(c, dptk_dw_bwd_data(c->stream, &dg, dy, wt, dx), "depthwise backward data");
        return DISOPT_OK;
    }
    dptk_sc_geo sg;
    if (small_cout(c, p, n, h, w, &g, &sg)) {
        K_TRY(c, dptk_sc_bwd_data(c->stream, &sg, dy, wt, dx), "conv backward data (few output channels)");
        return DISOPT_OK;
    }
    int algo = 0;
    size_t aws = 0;
    TRY(choose(c, 1, p, n, h, w, &algo, &aws));
    TRY(need_ws(c, g.pad_bytes + aws));
    const float one = 1.0f, zero = 0.0f;
    void *aw = aws ? (char *)c->ws + g.pad_bytes : NULL;
    if (!g.asym) { /* dx += directly (beta 1) */
        DNN_TRY(c, cudnnConvolutionBackwardData(c->dnn, &one, c->fd, wt, c->yd, dy, c->cd,
                                                (cudnnConvolutionBwdDataAlgo_t)algo, aw, aws, &one, c->xd, dx),
                "convolution backward data");
        return DISOPT_OK;
    }
    /* the gradient of the padded input, then its interior added into dx */
    DNN_TRY(c, cudnnConvolutionBackwardData(c->dnn, &one, c->fd, wt, c->yd, dy, c->cd,
                                            (cudnnConvolutionBwdDataAlgo_t)algo, aw, aws, &zero, c->xd, c->ws),
            "convolution backward data");
    K_TRY(c, dptk_crop_add(c->stream, dx, c->ws, n, p->cin, h, w, g.Hx, g.Wx, p->pt, p->pl), "conv crop");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_conv_bwd_filter(dp_cu_tr_ctx *c, const dp_conv_params *p, int n, int h, int w,
                                       const float *x, const float *dy, float *dw, float *db) {
    ENTER(c);
    if (!x || !dy) return BAD(c, "conv backward filter: NULL tensor");
    conv_geo g;
    TRY(conv_setup(c, p, n, h, w, &g));
    dptk_sc_geo sg;
    if (dw && pointwise(p)) {
        TRY(pw_bwd_filter(c, p, n, h * w, x, dy, dw));
    } else if (dw && c->own_dw && depthwise(p)) {
        const dptk_dw_geo dg = dw_geo(p, n, h, w, &g);
        TRY(need_scratch(c, dptk_dw_bwd_filter_bytes(&dg)));
        K_TRY(c, dptk_dw_bwd_filter(c->stream, &dg, c->scratch, x, dy, dw), "depthwise backward filter");
    } else if (dw && small_cout(c, p, n, h, w, &g, &sg)) {
        TRY(need_scratch(c, dptk_sc_bwd_filter_bytes(&sg)));
        K_TRY(c, dptk_sc_bwd_filter(c->stream, &sg, c->scratch, x, dy, dw), "conv backward filter (few output channels)");
    } else if (dw) {
        int algo = 0;
        size_t aws = 0;
        TRY(choose(c, 2, p, n, h, w, &algo, &aws));
        TRY(need_ws(c, g.pad_bytes + aws));
        const float *src = x;
        if (g.asym) {
            K_TRY(c, dpk_pad(c->stream, DPK_F32, c->ws, x, n, p->cin, h, w, p->pt, p->pb, p->pl, p->pr), "conv pad");
            src = c->ws;
        }
        const float one = 1.0f;
        DNN_TRY(c, cudnnConvolutionBackwardFilter(c->dnn, &one, c->xd, src, c->yd, dy, c->cd,
                                                  (cudnnConvolutionBwdFilterAlgo_t)algo,
                                                  aws ? (char *)c->ws + g.pad_bytes : NULL, aws, &one, c->fd, dw),
                "convolution backward filter");
    }
    if (db) { /* per output channel, in double (the CPU's) */
        const size_t P = (size_t)g.oh * g.ow;
        TRY(need_scratch(c, dptk_red_bytes(n, p->cout, P)));
        K_TRY(c, dptk_chan_reduce(c->stream, DPTK_RED_SUM, c->scratch, n, p->cout, P, dy, NULL, NULL), "bias grad");
        K_TRY(c, dptk_fin_sum(c->stream, c->scratch, p->cout, dptk_red_parts(n, P), db, 1, 1.0), "bias grad");
    }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- batch norm */
static disopt_status bn_args(dp_cu_tr_ctx *c, const char *what, int n, int ch, size_t hw, const void *x,
                             const void *y, const void *gamma, double eps) {
    if (n <= 0 || ch <= 0 || hw == 0) return BAD(c, "%s: empty shape", what);
    if (!x || !y || !gamma) return BAD(c, "%s: NULL tensor", what);
    if (!(eps > 0)) return BAD(c, "%s: eps %g must be > 0", what, eps);
    return DISOPT_OK;
}

/* the fused pairs' activations: none, ReLU, swish (the kernels' 0, 1, 2) */
static int fusable_act(dp_act a) { return a == DP_ACT_NONE || a == DP_ACT_RELU || a == DP_ACT_SWISH; }

/* training forward; with z: z = act(y) in the same pass, y optional, alpha / shift kept in save_coef (2 ch) when
 * given (dp_cu_tr_bn_act_fwd_train) */
static disopt_status bn_fwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *gamma,
                                  const float *beta, double eps, double momentum, float *run_mean, float *run_var,
                                  float *save_mean, float *save_invstd, float *y, dp_act act, float *z,
                                  float *save_coef) {
    TRY(bn_args(c, "batch norm forward (training)", n, ch, hw, x, z ? z : y, gamma, eps));
    if (!beta || !save_mean || !save_invstd || !run_mean != !run_var)
        return BAD(c, "batch norm forward (training): NULL tensor");
    const size_t M = (size_t)n * hw;
    if (M < 2) return BAD(c, "batch norm forward (training): one value per channel");
    if (!(momentum >= 0 && momentum <= 1)) return BAD(c, "batch norm forward (training): momentum %g", momentum);
    const int parts = dptk_red_parts(n, hw);
    const size_t o_mean = ALIGN256(dptk_red_bytes(n, ch, hw)), o_alpha = o_mean + ALIGN256((size_t)ch * 8);
    const size_t o_shift = o_alpha + ALIGN256((size_t)ch * 4), total = o_shift + ALIGN256((size_t)ch * 4);
    TRY(need_scratch(c, total));
    char *s = c->scratch;
    double *part = (double *)s, *mean = (double *)(s + o_mean);
    float *alpha = save_coef ? save_coef : (float *)(s + o_alpha), *shift = save_coef ? save_coef + ch : (float *)(s + o_shift);
    K_TRY(c, dptk_chan_reduce(c->stream, DPTK_RED_SUM, part, n, ch, hw, x, NULL, NULL), "bn mean");
    K_TRY(c, dptk_bn_fin_mean(c->stream, part, ch, parts, M, mean), "bn mean");
    K_TRY(c, dptk_chan_reduce(c->stream, DPTK_RED_SQDEV, part, n, ch, hw, x, NULL, mean), "bn variance");
    K_TRY(c, dptk_bn_fin_var(c->stream, part, ch, parts, M, mean, gamma, beta, eps, momentum, run_mean, run_var,
                             save_mean, save_invstd, alpha, shift),
          "bn variance");
    if (z)
        K_TRY(c, dptk_bn_act_apply(c->stream, (int)act, y, z, x, alpha, shift, n, ch, hw), "bn + activation apply");
    else
        K_TRY(c, dptk_bn_apply(c->stream, y, x, alpha, shift, n, ch, hw), "bn apply");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_bn_fwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *gamma,
                                    const float *beta, double eps, double momentum, float *run_mean, float *run_var,
                                    float *save_mean, float *save_invstd, float *y) {
    ENTER(c);
    return bn_fwd_train(c, n, ch, hw, x, gamma, beta, eps, momentum, run_mean, run_var, save_mean, save_invstd, y,
                        DP_ACT_NONE, NULL, NULL);
}

disopt_status dp_cu_tr_bn_act_fwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *gamma,
                                        const float *beta, double eps, double momentum, float *run_mean,
                                        float *run_var, float *save_mean, float *save_invstd, float *save_coef,
                                        dp_act act, float *y, float *z) {
    ENTER(c);
    if (!z || !save_coef) return BAD(c, "batch norm + activation forward (training): NULL tensor");
    if (!fusable_act(act)) return BAD(c, "batch norm + activation: activation %d not fusable", (int)act);
    return bn_fwd_train(c, n, ch, hw, x, gamma, beta, eps, momentum, run_mean, run_var, save_mean, save_invstd, y, act,
                        z, save_coef);
}

/* training backward; with dz: the BN's gradient is act's backward from dz and y, y recomputed from x and the
 * forward's alpha / shift in save_coef (dp_cu_tr_bn_act_bwd_train) */
static disopt_status bn_bwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *dy,
                                  const float *gamma, const float *save_mean, const float *save_invstd, float *dx,
                                  float *dgamma, float *dbeta, dp_act act, const float *save_coef, const float *dz,
                                  int dx_fresh) {
    TRY(bn_args(c, "batch norm backward (training)", n, ch, hw, x, dz ? dz : dy, gamma, 1));
    if (!save_mean || !save_invstd) return BAD(c, "batch norm backward (training): NULL saved statistics");
    const int parts = dptk_red_parts(n, hw);
    const size_t o_coef = ALIGN256(dptk_red_bytes(n, ch, hw)), total = o_coef + ALIGN256((size_t)ch * 16);
    TRY(need_scratch(c, total));
    double *part = c->scratch;
    float *coef = (float *)((char *)c->scratch + o_coef);
    if (dz)
        K_TRY(c, dptk_bn_act_reduce(c->stream, (int)act, part, n, ch, hw, x, save_coef, save_coef + ch, dz, save_mean),
              "bn + act backward");
    else
        K_TRY(c, dptk_chan_reduce(c->stream, DPTK_RED_BN, part, n, ch, hw, x, dy, save_mean), "bn backward");
    K_TRY(c, dptk_bn_bwd_fin(c->stream, part, ch, parts, (size_t)n * hw, save_mean, save_invstd, gamma, dgamma, dbeta,
                             coef),
          "bn backward");
    if (dx && dz)
        K_TRY(c, dptk_bn_act_bwd_apply(c->stream, (int)act, dx, dx_fresh, x, save_coef, save_coef + ch, dz, coef, n,
                                       ch, hw),
              "bn + act backward");
    else if (dx)
        K_TRY(c, dptk_bn_bwd_apply(c->stream, dx, x, dy, coef, n, ch, hw), "bn backward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_bn_bwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *dy,
                                    const float *gamma, const float *save_mean, const float *save_invstd, float *dx,
                                    float *dgamma, float *dbeta) {
    ENTER(c);
    return bn_bwd_train(c, n, ch, hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, DP_ACT_NONE, NULL,
                        NULL, 0);
}

disopt_status dp_cu_tr_bn_act_bwd_train(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x,
                                        const float *save_coef, const float *dz, const float *gamma,
                                        const float *save_mean, const float *save_invstd, dp_act act, float *dx,
                                        int dx_fresh, float *dgamma, float *dbeta) {
    ENTER(c);
    if (!save_coef || !dz) return BAD(c, "batch norm + activation backward (training): NULL tensor");
    if (!fusable_act(act)) return BAD(c, "batch norm + activation: activation %d not fusable", (int)act);
    if (dx && (const float *)dx == dz && !dx_fresh)
        return BAD(c, "batch norm + activation backward (training): dx in dz's memory must be written fresh");
    return bn_bwd_train(c, n, ch, hw, x, NULL, gamma, save_mean, save_invstd, dx, dgamma, dbeta, act, save_coef, dz,
                        dx_fresh);
}

static disopt_status bn_fwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *gamma,
                                 const float *beta, const float *run_mean, const float *run_var, double eps, float *y,
                                 dp_act act, float *z) {
    TRY(bn_args(c, "batch norm forward (eval)", n, ch, hw, x, z ? z : y, gamma, eps));
    if (!beta || !run_mean || !run_var) return BAD(c, "batch norm forward (eval): NULL tensor");
    TRY(need_scratch(c, 2 * ALIGN256((size_t)ch * 4)));
    float *alpha = c->scratch, *shift = (float *)((char *)c->scratch + ALIGN256((size_t)ch * 4));
    K_TRY(c, dptk_bn_eval_coef(c->stream, ch, gamma, beta, run_mean, run_var, eps, alpha, shift), "bn eval");
    if (z)
        K_TRY(c, dptk_bn_act_apply(c->stream, (int)act, y, z, x, alpha, shift, n, ch, hw), "bn + activation eval");
    else
        K_TRY(c, dptk_bn_apply(c->stream, y, x, alpha, shift, n, ch, hw), "bn eval");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_bn_fwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *gamma,
                                   const float *beta, const float *run_mean, const float *run_var, double eps,
                                   float *y) {
    ENTER(c);
    return bn_fwd_eval(c, n, ch, hw, x, gamma, beta, run_mean, run_var, eps, y, DP_ACT_NONE, NULL);
}

disopt_status dp_cu_tr_bn_act_fwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *gamma,
                                       const float *beta, const float *run_mean, const float *run_var, double eps,
                                       dp_act act, float *y, float *z) {
    ENTER(c);
    if (!z) return BAD(c, "batch norm + activation forward (eval): NULL tensor");
    if (!fusable_act(act)) return BAD(c, "batch norm + activation: activation %d not fusable", (int)act);
    return bn_fwd_eval(c, n, ch, hw, x, gamma, beta, run_mean, run_var, eps, y, act, z);
}

disopt_status dp_cu_tr_bn_bwd_eval(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *dy,
                                   const float *gamma, const float *run_mean, const float *run_var, double eps,
                                   float *dx, float *dgamma, float *dbeta) {
    ENTER(c);
    TRY(bn_args(c, "batch norm backward (eval)", n, ch, hw, x, dy, gamma, eps));
    if (!run_mean || !run_var) return BAD(c, "batch norm backward (eval): NULL stats");
    const int parts = dptk_red_parts(n, hw);
    const size_t o_a = ALIGN256(dptk_red_bytes(n, ch, hw)), total = o_a + ALIGN256((size_t)ch * 4);
    TRY(need_scratch(c, total));
    double *part = c->scratch;
    float *alpha = (float *)((char *)c->scratch + o_a);
    if (dgamma || dbeta) {
        K_TRY(c, dptk_chan_reduce(c->stream, DPTK_RED_BN, part, n, ch, hw, x, dy, run_mean), "bn eval backward");
        K_TRY(c, dptk_bn_eval_bwd_fin(c->stream, part, ch, parts, run_var, eps, dgamma, dbeta), "bn eval backward");
    }
    if (dx) { /* dx += dy * wi, wi = (float)(gamma * invstd): the eval forward's alpha */
        K_TRY(c, dptk_bn_eval_coef(c->stream, ch, gamma, NULL, run_mean, run_var, eps, alpha, NULL),
              "bn eval backward");
        K_TRY(c, dptk_mul_plane(c->stream, dx, dy, alpha, (size_t)n * ch * hw, hw, (size_t)ch, 1), "bn eval backward");
    }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- activations and channel ops */
static int act_known(dp_act a) {
    return a == DP_ACT_NONE || a == DP_ACT_RELU || a == DP_ACT_SIGMOID || a == DP_ACT_SWISH;
}

disopt_status dp_cu_tr_act_fwd(dp_cu_tr_ctx *c, dp_act a, size_t count, const float *x, float *y) {
    ENTER(c);
    if (!x || !y) return BAD(c, "activation forward: NULL tensor");
    if (!act_known(a)) return BAD(c, "activation forward: unknown activation %d", (int)a);
    K_TRY(c, dptk_act_fwd(c->stream, (int)a, count, x, y), "activation forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_act_bwd(dp_cu_tr_ctx *c, dp_act a, size_t count, const float *x, const float *y,
                               const float *dy, float *dx) {
    ENTER(c);
    if (!dy || !dx) return BAD(c, "activation backward: NULL tensor");
    if (!act_known(a)) return BAD(c, "activation backward: unknown activation %d", (int)a);
    if ((a == DP_ACT_SIGMOID && !y) || ((a == DP_ACT_RELU || a == DP_ACT_SWISH) && !x))
        return BAD(c, "activation backward: the saved %s is NULL", a == DP_ACT_SIGMOID ? "output" : "input");
    K_TRY(c, dptk_act_bwd(c->stream, (int)a, count, x, y, dy, dx), "activation backward");
    return DISOPT_OK;
}

static disopt_status planes(dp_cu_tr_ctx *c, const char *what, int n, int ch, size_t hw, int *nc) {
    if (n <= 0 || ch <= 0 || hw == 0) return BAD(c, "%s: empty shape", what);
    if ((long long)n * ch > INT_MAX) return BAD(c, "%s: %d x %d planes", what, n, ch);
    *nc = n * ch;
    return DISOPT_OK;
}

/* out[q] (+)= the sum over plane q of a (DPTK_RED_SUM) or of a * b (DPTK_RED_DOT), in double */
static disopt_status plane_reduce(dp_cu_tr_ctx *c, int kind, int nc, size_t hw, const float *a, const float *b,
                                  float *out, int accumulate, double div, const char *what) {
    TRY(need_scratch(c, dptk_red_bytes(1, nc, hw)));
    K_TRY(c, dptk_chan_reduce(c->stream, kind, c->scratch, 1, nc, hw, a, b, NULL), what);
    K_TRY(c, dptk_fin_sum(c->stream, c->scratch, nc, dptk_red_parts(1, hw), out, accumulate, div), what);
    return DISOPT_OK;
}

disopt_status dp_cu_tr_gap_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, float *y) {
    ENTER(c);
    int nc = 0;
    if (!x || !y) return BAD(c, "global average pool forward: NULL tensor");
    TRY(planes(c, "global average pool forward", n, ch, hw, &nc));
    return plane_reduce(c, DPTK_RED_SUM, nc, hw, x, NULL, y, 0, (double)hw, "global average pool");
}

disopt_status dp_cu_tr_gap_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *dy, float *dx) {
    ENTER(c);
    int nc = 0;
    if (!dy || !dx) return BAD(c, "global average pool backward: NULL tensor");
    TRY(planes(c, "global average pool backward", n, ch, hw, &nc));
    K_TRY(c, dptk_gap_bwd(c->stream, (size_t)nc * hw, hw, dy, dx), "global average pool backward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_broadcast_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, float *y) {
    ENTER(c);
    int nc = 0;
    if (!x || !y) return BAD(c, "broadcast forward: NULL tensor");
    TRY(planes(c, "broadcast forward", n, ch, hw, &nc));
    K_TRY(c, dptk_broadcast(c->stream, (size_t)nc * hw, hw, x, y), "broadcast forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_broadcast_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *dy, float *dx) {
    ENTER(c);
    int nc = 0;
    if (!dy || !dx) return BAD(c, "broadcast backward: NULL tensor");
    TRY(planes(c, "broadcast backward", n, ch, hw, &nc));
    return plane_reduce(c, DPTK_RED_SUM, nc, hw, dy, NULL, dx, 1, 1.0, "broadcast backward");
}

disopt_status dp_cu_tr_scale_ch_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *g,
                                    float *y) {
    ENTER(c);
    int nc = 0;
    if (!x || !g || !y) return BAD(c, "channel scale forward: NULL tensor");
    TRY(planes(c, "channel scale forward", n, ch, hw, &nc));
    K_TRY(c, dptk_mul_plane(c->stream, y, x, g, (size_t)nc * hw, hw, (size_t)nc, 0), "channel scale forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_scale_ch_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *g,
                                    const float *dy, float *dx, float *dg) {
    ENTER(c);
    int nc = 0;
    if (!x || !g || !dy) return BAD(c, "channel scale backward: NULL tensor");
    TRY(planes(c, "channel scale backward", n, ch, hw, &nc));
    if (dx) K_TRY(c, dptk_mul_plane(c->stream, dx, dy, g, (size_t)nc * hw, hw, (size_t)nc, 1), "channel scale backward");
    if (dg) TRY(plane_reduce(c, DPTK_RED_DOT, nc, hw, dy, x, dg, 1, 1.0, "channel scale backward"));
    return DISOPT_OK;
}

disopt_status dp_cu_tr_scse_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *cg,
                                const float *sg, float *y) {
    ENTER(c);
    int nc = 0;
    if (!x || !cg || !sg || !y) return BAD(c, "SCSE forward: NULL tensor");
    TRY(planes(c, "SCSE forward", n, ch, hw, &nc));
    K_TRY(c, dptk_scse_fwd(c->stream, n, ch, hw, x, cg, sg, y), "SCSE forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_scse_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, const float *cg,
                                const float *sg, const float *dy, float *dx, float *dcg, float *dsg) {
    ENTER(c);
    int nc = 0;
    if (!x || !cg || !sg || !dy) return BAD(c, "SCSE backward: NULL tensor");
    TRY(planes(c, "SCSE backward", n, ch, hw, &nc));
    if (dx) K_TRY(c, dptk_scse_bwd_dx(c->stream, n, ch, hw, cg, sg, dy, dx), "SCSE backward");
    if (dcg) TRY(plane_reduce(c, DPTK_RED_DOT, nc, hw, dy, x, dcg, 1, 1.0, "SCSE backward"));
    if (dsg) K_TRY(c, dptk_scse_bwd_dsg(c->stream, n, ch, hw, x, dy, dsg), "SCSE backward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_add_fwd(dp_cu_tr_ctx *c, size_t count, const float *a, const float *b, float *y) {
    ENTER(c);
    if (!a || !b || !y) return BAD(c, "add forward: NULL tensor");
    K_TRY(c, dptk_add(c->stream, count, a, b, y), "add forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_add_bwd(dp_cu_tr_ctx *c, size_t count, const float *dy, float *da, float *db) {
    ENTER(c);
    if (!dy) return BAD(c, "add backward: NULL tensor");
    if (da) K_TRY(c, dptk_acc(c->stream, count, dy, da), "add backward");
    if (db) K_TRY(c, dptk_acc(c->stream, count, dy, db), "add backward");
    return DISOPT_OK;
}

static disopt_status concat_args(dp_cu_tr_ctx *c, const char *what, int n, int k, const int *cs, const void *list,
                                 const void *y, int *ct) {
    if (n <= 0 || k <= 0 || !cs || !list || !y) return BAD(c, "%s: no inputs", what);
    long long t = 0;
    for (int i = 0; i < k; i++) {
        if (cs[i] <= 0) return BAD(c, "%s: input %d has %d channels", what, i, cs[i]);
        t += cs[i];
    }
    if (t > INT_MAX) return BAD(c, "%s: %lld channels", what, t);
    *ct = (int)t;
    return DISOPT_OK;
}

disopt_status dp_cu_tr_concat_fwd(dp_cu_tr_ctx *c, int n, size_t hw, int k, const int *cs, const float *const *xs,
                                  float *y) {
    ENTER(c);
    int ct = 0, c0 = 0;
    TRY(concat_args(c, "concat forward", n, k, cs, xs, y, &ct));
    for (int i = 0; i < k; i++)
        if (!xs[i]) return BAD(c, "concat forward: input %d is NULL", i);
    for (int i = 0; i < k; c0 += cs[i], i++)
        K_TRY(c, dptk_concat_part(c->stream, n, cs[i], ct, c0, hw, xs[i], y), "concat forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_concat_bwd(dp_cu_tr_ctx *c, int n, size_t hw, int k, const int *cs, const float *dy,
                                  float *const *dxs) {
    ENTER(c);
    int ct = 0, c0 = 0;
    TRY(concat_args(c, "concat backward", n, k, cs, dxs, dy, &ct));
    for (int i = 0; i < k; c0 += cs[i], i++)
        if (dxs[i]) K_TRY(c, dptk_split_part(c->stream, n, cs[i], ct, c0, hw, dy, dxs[i]), "concat backward");
    return DISOPT_OK;
}

static disopt_status up_args(dp_cu_tr_ctx *c, const char *what, int n, int ch, int h, int w, int f, const void *a,
                             const void *b) {
    if (n <= 0 || ch <= 0 || h <= 0 || w <= 0 || f <= 0 || h > INT_MAX / f || w > INT_MAX / f)
        return BAD(c, "%s: bad shape %dx%dx%dx%d, factor %d", what, n, ch, h, w, f);
    if (!a || !b) return BAD(c, "%s: NULL tensor", what);
    return DISOPT_OK;
}

disopt_status dp_cu_tr_upsample_fwd(dp_cu_tr_ctx *c, int n, int ch, int h, int w, int f, const float *x, float *y) {
    ENTER(c);
    TRY(up_args(c, "upsample forward", n, ch, h, w, f, x, y));
    K_TRY(c, dptk_upsample_fwd(c->stream, (size_t)n * ch, h, w, f, x, y), "upsample forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_upsample_bwd(dp_cu_tr_ctx *c, int n, int ch, int h, int w, int f, const float *dy, float *dx) {
    ENTER(c);
    TRY(up_args(c, "upsample backward", n, ch, h, w, f, dy, dx));
    K_TRY(c, dptk_upsample_bwd(c->stream, (size_t)n * ch, h, w, f, dy, dx), "upsample backward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_softmax_fwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *x, float *y) {
    ENTER(c);
    if (!x || !y) return BAD(c, "softmax forward: NULL tensor");
    if (n <= 0 || ch <= 0) return BAD(c, "softmax forward: %d images, %d channels", n, ch);
    K_TRY(c, dptk_softmax_fwd(c->stream, n, ch, hw, x, y), "softmax forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_softmax_bwd(dp_cu_tr_ctx *c, int n, int ch, size_t hw, const float *y, const float *dy,
                                   float *dx) {
    ENTER(c);
    if (!y || !dy || !dx) return BAD(c, "softmax backward: NULL tensor");
    if (n <= 0 || ch <= 0) return BAD(c, "softmax backward: %d images, %d channels", n, ch);
    K_TRY(c, dptk_softmax_bwd(c->stream, n, ch, hw, y, dy, dx), "softmax backward");
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- dropout, drop-connect */
disopt_status dp_cu_tr_dropout_mask(dp_cu_tr_ctx *c, dp_rng *r, double p, size_t count, uint8_t *mask) {
    ENTER(c);
    if (!r || (!mask && count)) return BAD(c, "dropout mask: NULL argument");
    if (!(p >= 0 && p <= 1)) return BAD(c, "dropout mask: p = %g", p);
    K_TRY(c, dptk_dropout_mask(c->stream, r->seed, r->counter, 1.0 - p, count, mask), "dropout mask");
    r->counter += dp_rng_blocks(count);
    return DISOPT_OK;
}

disopt_status dp_cu_tr_drop_connect_mask(dp_cu_tr_ctx *c, dp_rng *r, double rate, int n, uint8_t *mask) {
    ENTER(c);
    if (!r || n < 0 || (!mask && n)) return BAD(c, "drop-connect mask: bad argument");
    if (!(rate >= 0 && rate < 1)) return BAD(c, "drop-connect mask: rate %g", rate);
    K_TRY(c, dptk_drop_connect_mask(c->stream, r->seed, r->counter, (float)(1.0 - rate), n, mask), "drop-connect mask");
    r->counter += dp_rng_blocks((size_t)n);
    return DISOPT_OK;
}

disopt_status dp_cu_tr_dropout_fwd(dp_cu_tr_ctx *c, size_t count, double p, const uint8_t *mask, const float *x,
                                   float *y) {
    ENTER(c);
    if (!mask || !x || !y) return BAD(c, "dropout forward: NULL tensor");
    if (!(p >= 0 && p <= 1)) return BAD(c, "dropout forward: p = %g", p);
    const float scale = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f; /* native_dropout: (x * mask) * scale */
    K_TRY(c, dptk_dropout(c->stream, count, scale, mask, x, y, 0), "dropout forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_dropout_bwd(dp_cu_tr_ctx *c, size_t count, double p, const uint8_t *mask, const float *dy,
                                   float *dx) {
    ENTER(c);
    if (!mask || !dy || !dx) return BAD(c, "dropout backward: NULL tensor");
    if (!(p >= 0 && p <= 1)) return BAD(c, "dropout backward: p = %g", p);
    const float scale = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f;
    K_TRY(c, dptk_dropout(c->stream, count, scale, mask, dy, dx, 1), "dropout backward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_drop_connect_fwd(dp_cu_tr_ctx *c, int n, size_t per, double rate, const uint8_t *mask,
                                        const float *x, float *y) {
    ENTER(c);
    if (!mask || !x || !y) return BAD(c, "drop-connect forward: NULL tensor");
    if (!(rate >= 0 && rate < 1)) return BAD(c, "drop-connect forward: rate %g", rate);
    if (n <= 0 || !per) return DISOPT_OK;
    K_TRY(c, dptk_drop_connect(c->stream, (size_t)n * per, per, (float)(1.0 - rate), mask, x, y, 0),
          "drop-connect forward");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_drop_connect_bwd(dp_cu_tr_ctx *c, int n, size_t per, double rate, const uint8_t *mask,
                                        const float *dy, float *dx) {
    ENTER(c);
    if (!mask || !dy || !dx) return BAD(c, "drop-connect backward: NULL tensor");
    if (!(rate >= 0 && rate < 1)) return BAD(c, "drop-connect backward: rate %g", rate);
    if (n <= 0 || !per) return DISOPT_OK;
    K_TRY(c, dptk_drop_connect(c->stream, (size_t)n * per, per, (float)(1.0 - rate), mask, dy, dx, 1),
          "drop-connect backward");
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- losses */
/* the most bytes of loss partials: blocks x (3 + 3C) doubles (dptk_loss_blocks <= 512) */
static size_t loss_part_bytes(int C) { return ALIGN256((size_t)512 * (3 + 3 * (size_t)(C > 0 ? C : 1)) * 8); }

static disopt_status loss_shape(dp_cu_tr_ctx *c, const char *what, dp_lshape sh, size_t *P, size_t *NP) {
    if (sh.n <= 0 || sh.c <= 0 || sh.h <= 0 || sh.w <= 0)
        return c->host->error(DISOPT_ERR_SHAPE, "%s: bad shape %dx%dx%dx%d", what, sh.n, sh.c, sh.h, sh.w);
    if (sh.c > DPTK_MAX_C)
        return c->host->error(DISOPT_ERR_UNSUPPORTED, "%s: %d classes (at most %d)", what, sh.c, DPTK_MAX_C);
    *P = (size_t)sh.h * (size_t)sh.w;
    *NP = *P * (size_t)sh.n;
    return DISOPT_OK;
}

/* downloads nb blocks x nv partial sums from the scratch at off and adds them per value, in block order */
static disopt_status sum_parts(dp_cu_tr_ctx *c, size_t off, int nb, int nv, double *tot) {
    const size_t cnt = (size_t)nb * nv;
    double *h = malloc(cnt * sizeof *h);
    if (!h) return c->host->error(DISOPT_ERR_OUT_OF_MEMORY, "loss: out of memory");
    cudaError_t e = cudaMemcpyAsync(h, (char *)c->scratch + off, cnt * sizeof *h, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        free(h);
        return dp_cu_status(c->host, e, "loss sums");
    }
    for (int v = 0; v < nv; v++) tot[v] = 0.0;
    for (int b = 0; b < nb; b++)
        for (int v = 0; v < nv; v++) tot[v] += h[(size_t)b * nv + v];
    free(h);
    return DISOPT_OK;
}

/* loss.inc's dp_loss_seg with its partials at scratch offset off (the caller reserved off + loss_part_bytes) */
static disopt_status seg_at(dp_cu_tr_ctx *c, size_t off, dp_lshape sh, const float *x, const int32_t *target,
                            const uint8_t *valid, double w_ce, double w_dice, double *ce_out, double *dice_out,
                            float *gx, double gscale) {
    size_t P = 0, NP = 0;
    TRY(loss_shape(c, "seg", sh, &P, &NP));
    if (!x || !target) return BAD(c, "seg loss: NULL logits or target");
    const int C = sh.c, nb = dptk_loss_blocks(NP), nv = 3 + 3 * C;
    TRY(need_scratch(c, off + loss_part_bytes(C)));
    K_TRY(c, dptk_seg_stats(c->stream, sh.n, C, P, x, target, valid, (double *)((char *)c->scratch + off)),
          "seg loss");
    double tot[3 + 3 * DPTK_MAX_C];
    TRY(sum_parts(c, off, nb, nv, tot));
    const double nvalid = tot[1], bad = tot[2];
    if (bad > 0)
        return c->host->error(DISOPT_ERR_INPUT, "seg loss: %.0f valid pixels have a target outside [0, %d)", bad, C);
    dptk_seg_coef cf;
    double ce = 0.0, dice = 0.0;
    dptk_seg_finish(tot, C, w_ce, w_dice, gscale, DP_DICE_EPS, &cf, &ce, &dice);
    if (ce_out) *ce_out = ce;
    if (dice_out) *dice_out = dice;
    if (!gx || nvalid == 0) return DISOPT_OK;
    K_TRY(c, dptk_seg_grad(c->stream, sh.n, C, P, x, target, valid, &cf, gx), "seg loss gradient");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_loss_seg(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, const int32_t *target,
                                const uint8_t *valid, double w_ce, double w_dice, double *ce, double *dice, float *gx,
                                double gscale) {
    ENTER(c);
    return seg_at(c, 0, sh, x, target, valid, w_ce, w_dice, ce, dice, gx, gscale);
}

disopt_status dp_cu_tr_loss_ce(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, const int32_t *target,
                               const uint8_t *valid, double *loss, float *gx, double gscale) {
    ENTER(c);
    return seg_at(c, 0, sh, x, target, valid, 1.0, 0.0, loss, NULL, gx, gscale);
}

disopt_status dp_cu_tr_loss_dice(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, const int32_t *target,
                                 const uint8_t *valid, double *loss, float *gx, double gscale) {
    ENTER(c);
    return seg_at(c, 0, sh, x, target, valid, 0.0, 1.0, NULL, loss, gx, gscale);
}

static disopt_status kd_at(dp_cu_tr_ctx *c, size_t off, dp_lshape sh, const float *s, const float *t,
                           const uint8_t *valid, double *loss, float *gs, float *gt, double gscale) {
    size_t P = 0, NP = 0;
    TRY(loss_shape(c, "kd", sh, &P, &NP));
    if (!s || !t) return BAD(c, "kd loss: NULL student or teacher logits");
    const double inv_hw = 1.0 / (double)P;
    TRY(need_scratch(c, off + loss_part_bytes(sh.c)));
    K_TRY(c, dptk_kd(c->stream, sh.n, sh.c, P, s, t, valid, gscale * inv_hw, gs, gt,
                     (double *)((char *)c->scratch + off)),
          "kd loss");
    double sum = 0.0;
    TRY(sum_parts(c, off, dptk_loss_blocks(NP), 1, &sum));
    if (loss) *loss = sum * inv_hw;
    return DISOPT_OK;
}

disopt_status dp_cu_tr_loss_kd(dp_cu_tr_ctx *c, dp_lshape sh, const float *s, const float *t, const uint8_t *valid,
                               double *loss, float *gs, float *gt, double gscale) {
    ENTER(c);
    return kd_at(c, 0, sh, s, t, valid, loss, gs, gt, gscale);
}

static disopt_status mse_at(dp_cu_tr_ctx *c, size_t off, const float *a, const float *b, size_t n, double *loss,
                            float *ga, float *gb, double gscale) {
    if (n == 0) return c->host->error(DISOPT_ERR_SHAPE, "mse loss: empty tensors");
    if (!a || !b) return BAD(c, "mse loss: NULL input");
    TRY(need_scratch(c, off + loss_part_bytes(1)));
    K_TRY(c, dptk_mse(c->stream, n, a, b, 2.0 * gscale / (double)n, ga, gb, (double *)((char *)c->scratch + off)),
          "mse loss");
    double sum = 0.0;
    TRY(sum_parts(c, off, dptk_loss_blocks(n), 1, &sum));
    if (loss) *loss = sum / (double)n;
    return DISOPT_OK;
}

disopt_status dp_cu_tr_loss_mse(dp_cu_tr_ctx *c, const float *a, const float *b, size_t n, double *loss, float *ga,
                                float *gb, double gscale) {
    ENTER(c);
    return mse_at(c, 0, a, b, n, loss, ga, gb, gscale);
}

disopt_status dp_cu_tr_loss_argmax(dp_cu_tr_ctx *c, dp_lshape sh, const float *x, int32_t *labels) {
    ENTER(c);
    size_t P = 0, NP = 0;
    TRY(loss_shape(c, "argmax", sh, &P, &NP));
    if (!x || !labels) return BAD(c, "argmax: NULL argument");
    K_TRY(c, dptk_argmax(c->stream, sh.n, sh.c, P, x, labels), "argmax");
    return DISOPT_OK;
}

disopt_status dp_cu_tr_loss_stage1(dp_cu_tr_ctx *c, dp_lshape sh, const float *logits, const int32_t *target,
                                   const uint8_t *valid, dp_loss_weights w, dp_stage1_terms *terms, float *glogits) {
    ENTER(c);
    size_t P = 0, NP = 0;
    TRY(loss_shape(c, "stage-1 loss", sh, &P, &NP));
    if (glogits) CU_TRY(c, cudaMemsetAsync(glogits, 0, NP * (size_t)sh.c * sizeof(float), c->stream), "stage-1 loss");
    double ce = 0.0, dice = 0.0;
    TRY(seg_at(c, 0, sh, logits, target, valid, w.ce, w.dice, &ce, &dice, glogits, 1.0));
    if (terms) {
        terms->ce = ce;
        terms->dice = dice;
        terms->total = w.dice * dice + w.ce * ce; /* main_st1.py sums dice first */
    }
    return DISOPT_OK;
}

disopt_status dp_cu_tr_loss_stage2(dp_cu_tr_ctx *c, const dp_stage2_in_f32 *in, dp_stage2_terms *terms,
                                   const dp_stage2_grad_f32 *grad) {
    ENTER(c);
    if (!in) return BAD(c, "stage-2 loss: NULL input");
    const dp_lshape sh = in->shape;
    size_t P = 0, NP = 0;
    TRY(loss_shape(c, "stage-2 loss", sh, &P, &NP));
    if (!in->logit_sar || !in->logit_rgb || !in->logit_fused || !in->t_logits || !in->target)
        return BAD(c, "stage-2 loss: a logit map or the target is NULL");
    for (int k = 0; k < DP_STAGE2_NFEAT; k++)
        if (!in->s_feat[k] || !in->t_feat[k] || in->feat_numel[k] == 0)
            return BAD(c, "stage-2 loss: feature pair %d is missing or empty", k);
    const size_t nl = NP * (size_t)sh.c;
    const dp_loss_weights w = in->w;
    float *g_sar = grad ? grad->logit_sar : NULL, *g_rgb = grad ? grad->logit_rgb : NULL;
    float *g_fused = grad ? grad->logit_fused : NULL;
    if (g_sar) CU_TRY(c, cudaMemsetAsync(g_sar, 0, nl * sizeof(float), c->stream), "stage-2 loss");
    if (g_rgb) CU_TRY(c, cudaMemsetAsync(g_rgb, 0, nl * sizeof(float), c->stream), "stage-2 loss");
    if (g_fused) CU_TRY(c, cudaMemsetAsync(g_fused, 0, nl * sizeof(float), c->stream), "stage-2 loss");
    for (int k = 0; k < DP_STAGE2_NFEAT; k++)
        if (grad && grad->s_feat[k])
            CU_TRY(c, cudaMemsetAsync(grad->s_feat[k], 0, in->feat_numel[k] * sizeof(float), c->stream), "stage-2 loss");
    /* the teacher's pseudo-labels at the head of the scratch, the partial sums after them: reserved at once, so
     * that no call below grows (and so clears) the scratch while the labels live */
    const size_t off = ALIGN256(NP * sizeof(int32_t));
    TRY(need_scratch(c, off + loss_part_bytes(sh.c)));
    int32_t *labels = c->scratch;
    dp_stage2_terms t;
    memset(&t, 0, sizeof t);
    disopt_status s = seg_at(c, off, sh, in->logit_sar, in->target, in->valid, w.ce, w.dice, &t.ce_sar, &t.dice_sar,
                             g_sar, w.sar);
    if (!s) {
        cudaError_t e = (cudaError_t)dptk_argmax(c->stream, sh.n, sh.c, P, in->t_logits, labels);
        if (e != cudaSuccess) s = dp_cu_status(c->host, e, "stage-2 loss: argmax");
    }
    if (!s)
        s = seg_at(c, off, sh, in->logit_rgb, labels, in->valid, w.ce, w.dice, &t.ce_rgb, &t.dice_rgb, g_rgb, w.rgb);
    if (!s) s = kd_at(c, off, sh, in->logit_rgb, in->t_logits, in->valid, &t.kd_rgb, g_rgb, NULL, w.kd);
    if (!s)
        s = seg_at(c, off, sh, in->logit_fused, in->target, in->valid, w.ce, w.dice, &t.ce_fused, &t.dice_fused,
                   g_fused, w.fused);
    if (s) return s;
    double msum = 0.0;
    for (int k = 0; k < DP_STAGE2_NFEAT; k++) {
        TRY(mse_at(c, off, in->s_feat[k], in->t_feat[k], in->feat_numel[k], &t.mse[k], grad ? grad->s_feat[k] : NULL,
                   NULL, w.feat));
        msum += t.mse[k];
    }
    /* train_st2.py: sar_loss + (seg_rgb + kd) + fused_loss + sum(mse) / 3, each seg = ce + dice */
    t.seg_sar = w.ce * t.ce_sar + w.dice * t.dice_sar;
    t.seg_rgb = w.ce * t.ce_rgb + w.dice * t.dice_rgb;
    t.seg_fused = w.ce * t.ce_fused + w.dice * t.dice_fused;
    t.feat = w.feat * msum;
    t.total = w.sar * t.seg_sar + (w.rgb * t.seg_rgb + w.kd * t.kd_rgb) + w.fused * t.seg_fused + t.feat;
    if (terms) *terms = t;
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- optimizer */
static int fin_ge0(double x) { return isfinite(x) && x >= 0.0; }

/* dp_optim_state_count's rules (optim.c): the number of state arrays, or -1 (message set) */
static int optim_states(dp_cu_tr_ctx *c, const dp_optim_config *cfg) {
    if (!fin_ge0(cfg->lr) || !fin_ge0(cfg->weight_decay)) {
        BAD(c, "optimizer: invalid lr %g or weight decay %g", cfg->lr, cfg->weight_decay);
        return -1;
    }
    if (cfg->kind == DP_OPTIM_SGD) {
        if (!fin_ge0(cfg->momentum) || !isfinite(cfg->dampening)) {
            BAD(c, "SGD: invalid momentum %g or dampening %g", cfg->momentum, cfg->dampening);
            return -1;
        }
        if (cfg->nesterov && (cfg->momentum <= 0.0 || cfg->dampening != 0.0)) {
            BAD(c, "SGD: Nesterov momentum requires a momentum and zero dampening");
            return -1;
        }
        return cfg->momentum != 0.0 ? 1 : 0;
    }
    if (cfg->kind == DP_OPTIM_ADAMW) {
        if (!(cfg->beta1 >= 0.0 && cfg->beta1 < 1.0) || !(cfg->beta2 >= 0.0 && cfg->beta2 < 1.0) ||
            !fin_ge0(cfg->eps)) {
            BAD(c, "AdamW: invalid betas (%g, %g) or eps %g", cfg->beta1, cfg->beta2, cfg->eps);
            return -1;
        }
        return 2;
    }
    BAD(c, "optimizer: unknown kind %d", (int)cfg->kind);
    return -1;
}

disopt_status dp_cu_tr_optim_update(dp_cu_tr_ctx *c, const dp_optim_config *cfg, const dp_optim_segment *seg,
                                    int n_seg, size_t n, int64_t t, double lr, float *params, const float *grads,
                                    float *state) {
    ENTER(c);
    if (!cfg || (n_seg > 0 && !seg) || !params || !grads) return BAD(c, "optimizer update: NULL argument");
    if (t < 1) return BAD(c, "optimizer update: step number %lld < 1", (long long)t);
    if (!(lr >= 0.0) || !isfinite(lr)) return BAD(c, "optimizer update: learning rate %g", lr);
    const int ns = optim_states(c, cfg);
    if (ns < 0) return DISOPT_ERR_INVALID_ARGUMENT;
    if (ns > 0 && !state) return BAD(c, "optimizer update: NULL state");
    if (n_seg <= 0) return DISOPT_OK;
    dptk_seg *tab = malloc((size_t)n_seg * sizeof *tab);
    if (!tab) return c->host->error(DISOPT_ERR_OUT_OF_MEMORY, "optimizer update: out of memory");
    size_t total = 0;
    int m = 0;
    for (int s = 0; s < n_seg; s++) {
        const size_t i0 = seg[s].offset, i1 = seg[s].offset + seg[s].count;
        if (i1 < i0 || i1 > n) {
            free(tab);
            return BAD(c, "optimizer update: segment %d outside the arena", s);
        }
        if (!seg[s].count) continue;
        tab[m].offset = seg[s].offset;
        tab[m].count = seg[s].count;
        tab[m].start = total;
        tab[m].decay = seg[s].decay != 0;
        total += seg[s].count;
        m++;
    }
    disopt_status st = m ? need_scratch(c, (size_t)m * sizeof *tab) : DISOPT_OK;
    if (!st && m) { /* in stream order (earlier kernels may still read the scratch), then the table may go */
        cudaError_t e = cudaMemcpyAsync(c->scratch, tab, (size_t)m * sizeof *tab, cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) st = dp_cu_status(c->host, e, "optimizer segments");
    }
    free(tab);
    if (st || !m) return st;
    dptk_optim_args a;
    dptk_optim_args_make(cfg->kind == DP_OPTIM_ADAMW, lr, cfg->weight_decay, cfg->momentum, cfg->dampening,
                         cfg->nesterov, cfg->beta1, cfg->beta2, cfg->eps, t, &a);
    K_TRY(c, dptk_optim(c->stream, &a, c->scratch, m, total, n, params, grads, state), "optimizer update");
    return DISOPT_OK;
}
