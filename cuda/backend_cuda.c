/*
 * backend_cuda.c - the CUDA backend (core's backend vtable), built as its own shared module
 * (libdisopt_cuda.so) that the engine dlopens. cuDNN runs the dense and grouped convolutions,
 * our kernels (kernels.cu) the rest: depthwise convs, bias + activation, BN, SE, SCSE, concat,
 * upsampling, softmax.
 *
 * Conventions:
 *  - Tensors are NCHW in cudaMalloc'd memory (the model's arenas). FP32 mode: float32, cuDNN
 *    restricted to FMA math (no TF32) and the GEMM-family algorithms, cuBLAS in pedantic math, so
 *    results equal the CPU and PyTorch fp32 to rounding. TF32: the same with tensor cores.
 *    FP16/BF16: tensors stored in half, weights of cuBLAS/cuDNN nodes too, float accumulation
 *    everywhere; uploads and downloads convert through a float32 staging buffer.
 *  - One stream per backend; cuDNN and every kernel run on it; synchronize() waits for it.
 *  - Every CUDA and cuDNN return code is checked and becomes a status + message through the
 *    host's error function; nothing aborts.
 *  - The static asymmetric "same" padding of EfficientNet, which cuDNN cannot express, is done by
 *    copying the input into a zero-padded workspace buffer first; the SE gate folded into a conv
 *    (in[1]) is applied by a scaling pass into the workspace.
 */
#include "cu_status.h"
#include "internal.h"
#include "kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#define ALIGN256(x) (((x) + 255) & ~(size_t)255)
#define MAX_ALGO_CACHE 8

typedef struct cu_algo {
    int n, h, w, valid;
    cudnnConvolutionFwdAlgo_t algo;
    size_t ws;
} cu_algo;

typedef struct cu_node {
    float *w, *b;          /* device copies of the folded weights / bias (NULL when absent) */
    void *wh;              /* the weights in the storage type (FP16/BF16 modes; cuBLAS and cuDNN nodes) */
    int cudnn;             /* runs through cuDNN (dense or grouped, not depthwise) */
    int gemm;              /* 1x1, stride 1, no padding, groups 1: a cuBLAS GEMM per image */
    int few;               /* dense k x k conv to <= 4 outputs (the heads): our kernel */
    int co;                /* dense k x k conv of a small patch (the stems, cin*k*k <= 64): our kernel */
    int tap;               /* stride-1 k x k conv to few outputs from many inputs (the heads): a cuBLAS
                            * GEMM to one float map per (output, tap), then dpk_tap_sum */
    void *wt;              /* the tap GEMM's weights, (Cout*kh*kw) x Cin, in the storage type */
    cudnnFilterDescriptor_t fdesc;
    cudnnConvolutionDescriptor_t cdesc;
    cu_algo cache[MAX_ALGO_CACHE];
    int ncache;
} cu_node;

typedef struct cu_backend {
    dp_backend base;
    const dp_cuda_host *host;
    int device;
    int tf32;              /* TF32 tensor cores allowed in the convolutions */
    int dt;                /* storage type of tensors: DPK_F32, DPK_F16, DPK_BF16 */
    size_t esz;            /* bytes per element */
    float *stage;          /* float32 staging buffer for uploads/downloads of half tensors */
    size_t stage_bytes;
    int no_gemm;           /* benchmark knob DISOPT_CUDA_NO_GEMM: 1x1 convs through cuDNN too */
    int no_graph;          /* benchmark knob DISOPT_CUDA_NO_GRAPH: run node by node */
    void *blas_ws;         /* cuBLAS's workspace, ours, so that GEMMs can be captured in graphs */
    cudaStream_t stream;
    cudnnHandle_t cudnn;
    cudnnTensorDescriptor_t xdesc, ydesc;
    cublasHandle_t cublas;
    unsigned long long *nonfinite; /* device counter of upload_checked */
    /* prefetched inputs (cu_prefetch): float32 copies made on copy_stream while stream computes */
    cudaStream_t copy_stream;
    struct cu_pre {
        float *dev;          /* the copy */
        size_t cap;          /* its capacity, floats */
        const float *host;   /* what it holds a copy of (NULL: nothing to serve) */
        size_t n;            /* floats */
        cudaEvent_t ready;   /* the copy done (recorded on copy_stream) */
        cudaEvent_t used;    /* its last reader done (recorded on stream) */
        int used_set;        /* used has been recorded */
    } pre[2];
    int pre_next;
    long pre_hits;
} cu_backend;


static disopt_status cuda_fail(const cu_backend *cb, cudaError_t e, const char *what) {
    return dp_cu_status(cb->host, e, what);
}
#define CU_TRY(cb, expr, what) DP_CU_TRY((cb)->host, expr, what)
#define DNN_TRY(cb, expr, what) DP_DNN_TRY((cb)->host, expr, what)
#define K_TRY(cb, expr, what) CU_TRY(cb, (cudaError_t)(expr), what)

static disopt_status cublas_fail(const cu_backend *cb, cublasStatus_t e, const char *what) {
    return cb->host->error(e == CUBLAS_STATUS_ALLOC_FAILED ? DISOPT_ERR_OUT_OF_MEMORY : DISOPT_ERR_BACKEND,
                           "cublas: %s: %s (%s)", what, cublasGetStatusString(e), cublasGetStatusName(e));
}
#define BLAS_TRY(cb, expr, what)                                                                              \
    do {                                                                                                      \
        cublasStatus_t e_ = (expr);                                                                           \
        if (e_ != CUBLAS_STATUS_SUCCESS) return cublas_fail((cb), e_, (what));                                \
    } while (0)

/* Release paths (free, destroy) have no status to return: a failure there is logged as a warning
 * through the engine's log, never dropped silently. */
static void rel_cu(const cu_backend *cb, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    cudaGetLastError();
    cb->host->log(cb->base.engine, DISOPT_LOG_WARNING, "cuda: %s: %s (%s)", what, cudaGetErrorString(e),
                  cudaGetErrorName(e));
}
static void rel_dnn(const cu_backend *cb, cudnnStatus_t e, const char *what) {
    if (e != CUDNN_STATUS_SUCCESS)
        cb->host->log(cb->base.engine, DISOPT_LOG_WARNING, "cudnn: %s: %s", what, cudnnGetErrorString(e));
}
static void rel_blas(const cu_backend *cb, cublasStatus_t e, const char *what) {
    if (e != CUBLAS_STATUS_SUCCESS)
        cb->host->log(cb->base.engine, DISOPT_LOG_WARNING, "cublas: %s: %s", what, cublasGetStatusString(e));
}

static double cu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* cudnnCreate on its own thread (DISOPT_CUDA_PAR_SETUP) */
typedef struct dnn_job {
    int device;
    cudnnHandle_t h;
    cudnnStatus_t st;
    cudaError_t ce;
    double secs;
} dnn_job;

static void *dnn_create_main(void *arg) {
    dnn_job *j = arg;
    const double t0 = cu_now();
    j->ce = cudaSetDevice(j->device);
    if (j->ce == cudaSuccess) j->st = cudnnCreate(&j->h);
    j->secs = cu_now() - t0;
    return NULL;
}

static void cu_destroy(dp_backend *b) {
    cu_backend *cb = (cu_backend *)b;
    rel_cu(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    if (cb->xdesc) rel_dnn(cb, cudnnDestroyTensorDescriptor(cb->xdesc), "destroy tensor descriptor");
    if (cb->ydesc) rel_dnn(cb, cudnnDestroyTensorDescriptor(cb->ydesc), "destroy tensor descriptor");
    if (cb->cudnn) rel_dnn(cb, cudnnDestroy(cb->cudnn), "destroy handle");
    if (cb->cublas) rel_blas(cb, cublasDestroy(cb->cublas), "destroy handle");
    if (cb->blas_ws) rel_cu(cb, cudaFree(cb->blas_ws), "free the cuBLAS workspace");
    if (cb->stage) rel_cu(cb, cudaFree(cb->stage), "free the staging buffer");
    if (cb->nonfinite) rel_cu(cb, cudaFree(cb->nonfinite), "free the input check counter");
    if (cb->copy_stream) rel_cu(cb, cudaStreamSynchronize(cb->copy_stream), "wait for the prefetch copies");
    for (int i = 0; i < 2; i++) {
        if (cb->pre[i].dev) rel_cu(cb, cudaFree(cb->pre[i].dev), "free a prefetch buffer");
        if (cb->pre[i].ready) rel_cu(cb, cudaEventDestroy(cb->pre[i].ready), "destroy a prefetch event");
        if (cb->pre[i].used) rel_cu(cb, cudaEventDestroy(cb->pre[i].used), "destroy a prefetch event");
    }
    if (cb->copy_stream) rel_cu(cb, cudaStreamDestroy(cb->copy_stream), "destroy the copy stream");
    if (cb->stream) rel_cu(cb, cudaStreamDestroy(cb->stream), "destroy the stream");
    free(cb);
}

static size_t cu_tensor_bytes(dp_backend *b, int n, int c, int h, int w) {
    return ALIGN256((size_t)n * c * h * w * ((cu_backend *)b)->esz);
}

static cudnnDataType_t dnn_type(const cu_backend *cb) {
    return cb->dt == DPK_F16 ? CUDNN_DATA_HALF : cb->dt == DPK_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

static disopt_status stage_reserve(cu_backend *cb, size_t bytes) {
    if (bytes <= cb->stage_bytes) return DISOPT_OK;
    if (cb->stage) rel_cu(cb, cudaFree(cb->stage), "free the staging buffer");
    cb->stage = NULL;
    cb->stage_bytes = 0;
    CU_TRY(cb, cudaMalloc((void **)&cb->stage, bytes), "staging buffer");
    cb->stage_bytes = bytes;
    return DISOPT_OK;
}

static disopt_status cu_alloc(dp_backend *b, size_t bytes, void **out) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? ALIGN256(bytes) : 256);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error */
        return cb->host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: cannot allocate %zu bytes on device %d: %s", bytes,
                               cb->device, cudaGetErrorString(e));
    }
    *out = p;
    return DISOPT_OK;
}

static void cu_free(dp_backend *b, void *p) {
    cu_backend *cb = (cu_backend *)b;
    if (!p) return;
    rel_cu(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    rel_cu(cb, cudaFree(p), "free device memory");
}

/* ---- prefetch: the next batch's host-to-device copy on copy_stream while stream computes this one.
 * Two buffers alternate; a buffer is written again only after its last reader on stream is done
 * (event 'used'), and read on stream only after its copy is (event 'ready'). Only the thread that
 * runs the model calls these (the engine's one-thread-at-a-time rule). */
static disopt_status cu_prefetch(dp_backend *b, const float *src, size_t n) {
    cu_backend *cb = (cu_backend *)b;
    if (!src || !n) return DISOPT_OK;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    if (!cb->copy_stream)
        CU_TRY(cb, cudaStreamCreateWithFlags(&cb->copy_stream, cudaStreamNonBlocking), "prefetch: copy stream");
    for (int i = 0; i < 2; i++) /* an older copy of the same memory is stale from now on */
        if (cb->pre[i].host == src) cb->pre[i].host = NULL;
    struct cu_pre *p = &cb->pre[cb->pre_next];
    cb->pre_next ^= 1;
    if (!p->ready) CU_TRY(cb, cudaEventCreateWithFlags(&p->ready, cudaEventDisableTiming), "prefetch: event");
    if (!p->used) CU_TRY(cb, cudaEventCreateWithFlags(&p->used, cudaEventDisableTiming), "prefetch: event");
    if (n > p->cap) {
        if (p->dev) {
            if (p->used_set) CU_TRY(cb, cudaEventSynchronize(p->used), "prefetch: wait for the buffer");
            CU_TRY(cb, cudaStreamSynchronize(cb->copy_stream), "prefetch: wait for the copies");
            CU_TRY(cb, cudaFree(p->dev), "prefetch: free");
            p->dev = NULL;
            p->cap = 0;
        }
        CU_TRY(cb, cudaMalloc((void **)&p->dev, n * sizeof(float)), "prefetch buffer");
        p->cap = n;
    }
    if (p->used_set) CU_TRY(cb, cudaStreamWaitEvent(cb->copy_stream, p->used, 0), "prefetch: wait for the buffer");
    CU_TRY(cb, cudaMemcpyAsync(p->dev, src, n * sizeof(float), cudaMemcpyHostToDevice, cb->copy_stream), "prefetch");
    CU_TRY(cb, cudaEventRecord(p->ready, cb->copy_stream), "prefetch: event");
    p->host = src;
    p->n = n;
    return DISOPT_OK;
}

static long cu_prefetch_hits(dp_backend *b) { return ((cu_backend *)b)->pre_hits; }

/* The prefetched copy of src (n floats) if there is one, with stream made to wait for it; NULL otherwise.
 * The caller queues its reads of it on stream, then calls pre_done. */
static const float *pre_take(cu_backend *cb, const float *src, size_t n, struct cu_pre **out, disopt_status *st) {
    *out = NULL;
    *st = DISOPT_OK;
    for (int i = 0; i < 2; i++) {
        struct cu_pre *p = &cb->pre[i];
        if (p->host != src || !src) continue;
        p->host = NULL; /* served once */
        if (p->n != n) return NULL;
        const cudaError_t e = cudaStreamWaitEvent(cb->stream, p->ready, 0);
        if (e != cudaSuccess) {
            *st = cuda_fail(cb, e, "prefetch: wait for the copy");
            return NULL;
        }
        *out = p;
        return p->dev;
    }
    return NULL;
}

static disopt_status pre_done(cu_backend *cb, struct cu_pre *p) {
    CU_TRY(cb, cudaEventRecord(p->used, cb->stream), "prefetch: event");
    p->used_set = 1;
    cb->pre_hits++;
    return DISOPT_OK;
}

/* from float32 in device memory of this device (the trainer's resident batch), in stream order */
static disopt_status cu_upload_device(dp_backend *b, const dp_tview *dst, const float *src) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const size_t n = (size_t)dst->n * dst->c * dst->h * dst->w;
    if (cb->dt == DPK_F32)
        CU_TRY(cb, cudaMemcpyAsync(dst->data, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cb->stream),
               "device upload");
    else
        K_TRY(cb, dpk_from_f32(cb->stream, cb->dt, dst->data, src, n), "device upload conversion");
    return DISOPT_OK;
}

static disopt_status cu_upload(dp_backend *b, const dp_tview *dst, const float *src) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const size_t n = (size_t)dst->n * dst->c * dst->h * dst->w;
    struct cu_pre *pre;
    disopt_status ps;
    const float *dsrc = pre_take(cb, src, n, &pre, &ps);
    if (ps != DISOPT_OK) return ps;
    if (dsrc) { /* from the prefetched copy, in stream order */
        const disopt_status s = cu_upload_device(b, dst, dsrc);
        return s != DISOPT_OK ? s : pre_done(cb, pre);
    }
    if (cb->dt == DPK_F32) {
        CU_TRY(cb, cudaMemcpyAsync(dst->data, src, n * sizeof(float), cudaMemcpyHostToDevice, cb->stream), "upload");
        return DISOPT_OK;
    }
    disopt_status s = stage_reserve(cb, n * sizeof(float));
    if (s != DISOPT_OK) return s;
    CU_TRY(cb, cudaMemcpyAsync(cb->stage, src, n * sizeof(float), cudaMemcpyHostToDevice, cb->stream), "upload");
    K_TRY(cb, dpk_from_f32(cb->stream, cb->dt, dst->data, cb->stage, n), "upload conversion");
    return DISOPT_OK;
}

/* The upload, with the NaN/Inf values of the float32 source counted on the device (in stream order,
 * before the half conversion). */
static disopt_status cu_upload_checked(dp_backend *b, const dp_tview *dst, const float *src) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const size_t n = (size_t)dst->n * dst->c * dst->h * dst->w;
    if (!cb->nonfinite) CU_TRY(cb, cudaMalloc((void **)&cb->nonfinite, sizeof *cb->nonfinite), "counter");
    CU_TRY(cb, cudaMemsetAsync(cb->nonfinite, 0, sizeof *cb->nonfinite, cb->stream), "counter");
    struct cu_pre *pre;
    disopt_status ps;
    const float *dsrc = pre_take(cb, src, n, &pre, &ps);
    if (ps != DISOPT_OK) return ps;
    if (dsrc) { /* the prefetched copy: counted where it is, then copied or converted into dst */
        K_TRY(cb, dpk_count_nonfinite(cb->stream, dsrc, n, cb->nonfinite), "input check");
        const disopt_status s = cu_upload_device(b, dst, dsrc);
        return s != DISOPT_OK ? s : pre_done(cb, pre);
    }
    float *f = (float *)dst->data;
    if (cb->dt != DPK_F32) {
        disopt_status s = stage_reserve(cb, n * sizeof(float));
        if (s != DISOPT_OK) return s;
        f = cb->stage;
    }
    CU_TRY(cb, cudaMemcpyAsync(f, src, n * sizeof(float), cudaMemcpyHostToDevice, cb->stream), "upload");
    K_TRY(cb, dpk_count_nonfinite(cb->stream, f, n, cb->nonfinite), "input check");
    if (cb->dt != DPK_F32) K_TRY(cb, dpk_from_f32(cb->stream, cb->dt, dst->data, f, n), "upload conversion");
    return DISOPT_OK;
}

static disopt_status cu_nonfinite_result(dp_backend *b, unsigned long long *count) {
    cu_backend *cb = (cu_backend *)b;
    *count = 0;
    if (!cb->nonfinite) return DISOPT_OK;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    CU_TRY(cb, cudaMemcpy(count, cb->nonfinite, sizeof *count, cudaMemcpyDeviceToHost), "input check");
    return DISOPT_OK;
}

/* Page-locked host memory, usable from every device (portable). */
static disopt_status cu_host_alloc(dp_backend *b, size_t bytes, void **out) {
    cu_backend *cb = (cu_backend *)b;
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return cb->host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: cannot allocate %zu bytes of pinned host memory: %s",
                               bytes, cudaGetErrorString(e));
    }
    *out = p;
    return DISOPT_OK;
}

static void cu_host_free(dp_backend *b, void *p) {
    const cu_backend *cb = (const cu_backend *)b;
    if (!p) return;
    /* a prefetch copy may still read it (a run that stopped before using its last prefetch) */
    if (cb->copy_stream) rel_cu(cb, cudaStreamSynchronize(cb->copy_stream), "wait for the prefetch copies");
    rel_cu(cb, cudaFreeHost(p), "free pinned host memory");
}

static disopt_status cu_download(dp_backend *b, float *dst, const dp_tview *src) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const size_t n = (size_t)src->n * src->c * src->h * src->w;
    const void *from = src->data;
    if (cb->dt != DPK_F32) {
        disopt_status s = stage_reserve(cb, n * sizeof(float));
        if (s != DISOPT_OK) return s;
        K_TRY(cb, dpk_to_f32(cb->stream, cb->dt, cb->stage, src->data, n), "download conversion");
        from = cb->stage;
    }
    CU_TRY(cb, cudaMemcpyAsync(dst, from, n * sizeof(float), cudaMemcpyDeviceToHost, cb->stream), "download");
    CU_TRY(cb, cudaStreamSynchronize(cb->stream), "download");
    return DISOPT_OK;
}

/* into device memory of this device (the trainer's buffers for the frozen teacher's outputs): the
 * conversion writes straight into dst, queued on the stream */
static disopt_status cu_download_device(dp_backend *b, float *dst, const dp_tview *src) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const size_t n = (size_t)src->n * src->c * src->h * src->w;
    if (cb->dt != DPK_F32)
        K_TRY(cb, dpk_to_f32(cb->stream, cb->dt, dst, src->data, n), "device download conversion");
    else
        CU_TRY(cb, cudaMemcpyAsync(dst, src->data, n * sizeof(float), cudaMemcpyDeviceToDevice, cb->stream),
               "device download");
    return DISOPT_OK; /* (stream order; the caller synchronizes) */
}

/* channels [c0, c0 + nc) of each image: one strided copy (after the half -> float32 conversion of
 * the whole tensor on the device, which costs a fraction of what the copy saves) */
static disopt_status cu_download_planes(dp_backend *b, float *dst, const dp_tview *src, int c0, int nc) {
    cu_backend *cb = (cu_backend *)b;
    if (c0 < 0 || nc < 1 || c0 + nc > src->c)
        return cb->host->error(DISOPT_ERR_INTERNAL, "cuda: planes %d+%d of %d channels", c0, nc, src->c);
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const size_t hw = (size_t)src->h * src->w, n = (size_t)src->n * src->c * hw;
    const char *from = src->data;
    if (cb->dt != DPK_F32) {
        disopt_status s = stage_reserve(cb, n * sizeof(float));
        if (s != DISOPT_OK) return s;
        K_TRY(cb, dpk_to_f32(cb->stream, cb->dt, cb->stage, src->data, n), "download conversion");
        from = (const char *)cb->stage;
    }
    const size_t row = (size_t)nc * hw * sizeof(float), pitch = (size_t)src->c * hw * sizeof(float);
    CU_TRY(cb, cudaMemcpy2DAsync(dst, row, from + (size_t)c0 * hw * sizeof(float), pitch, row, (size_t)src->n,
                                 cudaMemcpyDeviceToHost, cb->stream),
           "download");
    CU_TRY(cb, cudaStreamSynchronize(cb->stream), "download");
    return DISOPT_OK;
}

static int is_depthwise(const dp_conv_params *c) { return c->groups > 1 && c->groups == c->cin && c->groups == c->cout; }

static void cu_release(dp_backend *b, dp_node *node) {
    cu_backend *cb = (cu_backend *)b;
    cu_node *cn = node->bk;
    if (!cn) return;
    rel_cu(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    rel_cu(cb, cudaFree(cn->w), "free weights");
    rel_cu(cb, cudaFree(cn->b), "free bias");
    rel_cu(cb, cudaFree(cn->wh), "free half weights");
    rel_cu(cb, cudaFree(cn->wt), "free tap weights");
    if (cn->fdesc) rel_dnn(cb, cudnnDestroyFilterDescriptor(cn->fdesc), "destroy filter descriptor");
    if (cn->cdesc) rel_dnn(cb, cudnnDestroyConvolutionDescriptor(cn->cdesc), "destroy convolution descriptor");
    free(cn);
    node->bk = NULL;
}

static disopt_status upload_array(cu_backend *cb, const float *src, size_t n, float **out) {
    *out = NULL;
    if (!src || !n) return DISOPT_OK;
    CU_TRY(cb, cudaMalloc((void **)out, n * sizeof(float)), "weights");
    CU_TRY(cb, cudaMemcpy(*out, src, n * sizeof(float), cudaMemcpyHostToDevice), "weights");
    return DISOPT_OK;
}

static disopt_status cu_prepare(dp_backend *b, dp_node *node) {
    cu_backend *cb = (cu_backend *)b;
    node->bk = NULL;
    if (node->op != DP_OP_CONV && node->op != DP_OP_BN) return DISOPT_OK;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    cu_node *cn = calloc(1, sizeof *cn);
    if (!cn) return cb->host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    node->bk = cn;
    disopt_status s;
    if (node->op == DP_OP_BN) { /* fw = per-channel scale, fb = shift */
        /* (the graphs fold every BN into its conv; a standalone BN needs its channel count in conv.cin) */
        if (!node->fw || !node->fb || node->conv.cin <= 0)
            return cb->host->error(DISOPT_ERR_UNSUPPORTED, "cuda: standalone bn needs parameters and conv.cin");
        int C = node->conv.cin;
        if ((s = upload_array(cb, node->fw, (size_t)C, &cn->w)) != DISOPT_OK) return s;
        return upload_array(cb, node->fb, (size_t)C, &cn->b);
    }
    const dp_conv_params *c = &node->conv;
    size_t nw = (size_t)c->cout * (c->cin / c->groups) * c->kh * c->kw;
    if ((s = upload_array(cb, node->fw, nw, &cn->w)) != DISOPT_OK) return s;
    if ((s = upload_array(cb, node->fb, (size_t)c->cout, &cn->b)) != DISOPT_OK) return s;
    cn->gemm = !cb->no_gemm && c->groups == 1 && c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && c->pt == 0 && c->pb == 0 &&
               c->pl == 0 && c->pr == 0;
    cn->few = !cn->gemm && c->groups == 1 && c->kh * c->kw > 1 && dpk_conv_few_ok(c->cin, c->cout, c->kh, c->kw);
    cn->tap = cn->few && !cb->no_gemm && c->sh == 1 && c->sw == 1 && c->cin >= 32;
    if (cn->tap) { /* Wt[((o*kh + i)*kw + j)][ci] = w[o][ci][i][j] */
        const int K = c->kh * c->kw, M = c->cout * K;
        float *wt = malloc((size_t)M * c->cin * sizeof(float));
        if (!wt) return cb->host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: out of memory");
        for (int o = 0; o < c->cout; o++)
            for (int ci = 0; ci < c->cin; ci++)
                for (int k = 0; k < K; k++) wt[((size_t)o * K + k) * c->cin + ci] = node->fw[((size_t)o * c->cin + ci) * K + k];
        float *wf = NULL;
        s = upload_array(cb, wt, (size_t)M * c->cin, &wf);
        free(wt);
        if (s != DISOPT_OK) return s;
        if (cb->dt == DPK_F32) {
            cn->wt = wf;
        } else {
            cudaError_t e = cudaMalloc(&cn->wt, (size_t)M * c->cin * cb->esz);
            if (e == cudaSuccess) e = (cudaError_t)dpk_from_f32(cb->stream, cb->dt, cn->wt, wf, (size_t)M * c->cin);
            if (e == cudaSuccess) e = cudaStreamSynchronize(cb->stream);
            rel_cu(cb, cudaFree(wf), "free float tap weights");
            if (e != cudaSuccess) return cuda_fail(cb, e, "tap weights");
        }
    }
    cn->co = !cn->gemm && !cn->few && c->groups == 1 && c->kh * c->kw > 1 && dpk_conv_co_ok(c->cin, c->cout, c->kh, c->kw);
    cn->cudnn = !is_depthwise(c) && !cn->gemm && !cn->few && !cn->co;
    if (cb->dt != DPK_F32 && (cn->gemm || cn->cudnn)) { /* weights in the storage type */
        CU_TRY(cb, cudaMalloc(&cn->wh, nw * cb->esz), "weights");
        K_TRY(cb, dpk_from_f32(cb->stream, cb->dt, cn->wh, cn->w, nw), "weights");
        CU_TRY(cb, cudaStreamSynchronize(cb->stream), "weights");
    }
    if (cn->cudnn) {
        const int sym = c->pt == c->pb && c->pl == c->pr;
        DNN_TRY(cb, cudnnCreateFilterDescriptor(&cn->fdesc), "filter descriptor");
        DNN_TRY(cb, cudnnSetFilter4dDescriptor(cn->fdesc, dnn_type(cb), CUDNN_TENSOR_NCHW, c->cout,
                                               c->cin / c->groups, c->kh, c->kw),
                "filter descriptor");
        DNN_TRY(cb, cudnnCreateConvolutionDescriptor(&cn->cdesc), "convolution descriptor");
        DNN_TRY(cb, cudnnSetConvolution2dDescriptor(cn->cdesc, sym ? c->pt : 0, sym ? c->pl : 0, c->sh, c->sw, c->dh,
                                                    c->dw, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                "convolution descriptor");
        DNN_TRY(cb, cudnnSetConvolutionGroupCount(cn->cdesc, c->groups), "group count");
        /* FP32: FMA only (no TF32); TF32: cuDNN's default math, tensor cores on FP32 data; FP16/BF16:
         * tensor cores, float accumulation (the descriptor's compute type) */
        DNN_TRY(cb, cudnnSetConvolutionMathType(cn->cdesc, cb->dt != DPK_F32 ? CUDNN_TENSOR_OP_MATH
                                                           : cb->tf32          ? CUDNN_DEFAULT_MATH
                                                                               : CUDNN_FMA_MATH),
                "math type");
    }
    return DISOPT_OK;
}

/* the conv's input as cuDNN sees it (after the explicit pad, if any) */
static void conv_input_dims(const dp_node *node, const dp_tview *in, int *H, int *W) {
    const dp_conv_params *c = &node->conv;
    const int sym = c->pt == c->pb && c->pl == c->pr;
    *H = in->h + (sym ? 0 : c->pt + c->pb);
    *W = in->w + (sym ? 0 : c->pl + c->pr);
}

/* bytes of the SE-gated input (or, for GEMM nodes, of the gated per-image weights) and of the
 * padded copy of the input (cuDNN nodes with asymmetric padding) */
static void conv_extra(const dp_node *node, const dp_tview *in, size_t esz, size_t *gate, size_t *pad) {
    const dp_conv_params *c = &node->conv;
    const cu_node *cn = node->bk;
    const int sym = c->pt == c->pb && c->pl == c->pr;
    *gate = node->n_in < 2                ? 0
            : cn && cn->gemm ? ALIGN256((size_t)in->n * c->cout * c->cin * esz)
                             : ALIGN256((size_t)in->n * in->c * in->h * in->w * esz);
    *pad = sym || !cn || !cn->cudnn
               ? 0
               : ALIGN256((size_t)in->n * in->c * (in->h + c->pt + c->pb) * (in->w + c->pl + c->pr) * esz);
}

static int algo_ok(cudnnConvolutionFwdAlgo_t a) {
    return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

/* cuDNN's heuristics, restricted to FMA math and the GEMM family; cached per input shape */
static disopt_status choose_algo(cu_backend *cb, cu_node *cn, const dp_node *node, const dp_tview *in,
                                 const dp_tview *out, cu_algo **res) {
    for (int i = 0; i < cn->ncache; i++)
        if (cn->cache[i].valid && cn->cache[i].n == in->n && cn->cache[i].h == in->h && cn->cache[i].w == in->w) {
            *res = &cn->cache[i];
            return DISOPT_OK;
        }
    int H, W;
    conv_input_dims(node, in, &H, &W);
    DNN_TRY(cb, cudnnSetTensor4dDescriptor(cb->xdesc, CUDNN_TENSOR_NCHW, dnn_type(cb), in->n, in->c, H, W), "x");
    DNN_TRY(cb, cudnnSetTensor4dDescriptor(cb->ydesc, CUDNN_TENSOR_NCHW, dnn_type(cb), out->n, out->c, out->h, out->w),
            "y");
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    DNN_TRY(cb, cudnnGetConvolutionForwardAlgorithm_v7(cb->cudnn, cb->xdesc, cn->fdesc, cn->cdesc, cb->ydesc,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf),
            "algorithm heuristics");
    int pick = -1;
    for (int i = 0; i < got && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS &&
            (cb->tf32 || cb->dt != DPK_F32 ? perf[i].algo != CUDNN_CONVOLUTION_FWD_ALGO_FFT && perf[i].algo != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING
                      : perf[i].mathType == CUDNN_FMA_MATH && algo_ok(perf[i].algo)))
            pick = i;
    cu_algo a = {in->n, in->h, in->w, 1, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 0};
    if (pick >= 0) a.algo = perf[pick].algo;
    DNN_TRY(cb, cudnnGetConvolutionForwardWorkspaceSize(cb->cudnn, cb->xdesc, cn->fdesc, cn->cdesc, cb->ydesc, a.algo,
                                                        &a.ws),
            "workspace size");
    int slot = cn->ncache < MAX_ALGO_CACHE ? cn->ncache++ : 0;
    cn->cache[slot] = a;
    *res = &cn->cache[slot];
    return DISOPT_OK;
}

static size_t cu_workspace(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out) {
    cu_backend *cb = (cu_backend *)b;
    if (node->op != DP_OP_CONV || !node->bk) return 0;
    size_t gate, pad;
    conv_extra(node, &ins[0], cb->esz, &gate, &pad);
    cu_node *cn = node->bk;
    size_t dnn = 0;
    if (cn->cudnn) {
        cu_algo *a;
        if (choose_algo(cb, cn, node, &ins[0], out, &a) == DISOPT_OK) dnn = ALIGN256(a->ws);
    }
    if (cn->tap) /* the float tap maps */
        dnn = ALIGN256((size_t)ins[0].n * node->conv.cout * node->conv.kh * node->conv.kw * ins[0].h * ins[0].w *
                       sizeof(float));
    if (is_depthwise(&node->conv)) /* the partial sums of the SE pooling fused into it (cu_run_conv_gap) */
        dnn = ALIGN256(dpk_depthwise_gap_bytes(out->n, out->c, out->h, out->w));
    return gate + pad + dnn;
}

static disopt_status run_conv(cu_backend *cb, const dp_node *node, const dp_tview *ins, const dp_tview *out, void *ws,
                              size_t ws_bytes) {
    const dp_conv_params *c = &node->conv;
    cu_node *cn = node->bk;
    if (!cn) return cb->host->error(DISOPT_ERR_INTERNAL, "cuda: conv node not prepared");
    const dp_tview *in = &ins[0];
    size_t gate, pad;
    conv_extra(node, in, cb->esz, &gate, &pad);
    char *wsp = ws;
    const void *src = in->data;
    const int dt = cb->dt;
    const size_t HW = (size_t)in->h * in->w;
    if (gate + pad > ws_bytes) return cb->host->error(DISOPT_ERR_INTERNAL, "cuda: conv workspace too small");
    const void *wgemm = dt == DPK_F32 ? (const void *)cn->w : cn->wh;
    long long wstride = 0;
    if (node->n_in > 1 && cn->gemm) { /* SE gate folded into this 1x1 conv: into per-image weights */
        K_TRY(cb, dpk_scale_w(cb->stream, dt, wsp, cn->w, ins[1].data, in->n, c->cout, c->cin), "se gate");
        wgemm = wsp;
        wstride = (long long)c->cout * c->cin;
    } else if (node->n_in > 1) { /* into a scaled copy of the input */
        K_TRY(cb, dpk_scale_ch(cb->stream, dt, wsp, src, ins[1].data, in->n, in->c, HW), "se gate");
        src = wsp;
    }
    const int act = (int)node->act;
    if (cn->gemm && HW == 1 && node->n_in == 1) { /* on 1x1 maps (SE, image pooling): one warp per output */
        K_TRY(cb, dpk_fc(cb->stream, dt, out->data, src, cn->w, node->raw_out ? NULL : cn->b, in->n, c->cin, c->cout,
                         node->raw_out ? -1 : act),
              "1x1 convolution on 1x1 maps");
        return DISOPT_OK;
    }
    if (cn->gemm) { /* per image: Y (Cout x HW) = W (Cout x Cin) X (Cin x HW), row-major; in cuBLAS's
                     * column-major terms Y^T = X^T W^T, one strided-batched call */
        const float one = 1.0f, zero = 0.0f;
        const int hw = (int)HW;
        if (dt == DPK_F32) {
            BLAS_TRY(cb, cublasSgemmStridedBatched(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_N, hw, c->cout, c->cin, &one, src,
                                                   hw, (long long)c->cin * hw, wgemm, c->cin, wstride, &zero,
                                                   out->data, hw, (long long)c->cout * hw, in->n),
                     "1x1 convolution");
        } else { /* half storage, float accumulation (tensor cores) */
            const cudaDataType_t t = dt == DPK_F16 ? CUDA_R_16F : CUDA_R_16BF;
            BLAS_TRY(cb, cublasGemmStridedBatchedEx(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_N, hw, c->cout, c->cin, &one, src,
                                                    t, hw, (long long)c->cin * hw, wgemm, t, c->cin, wstride, &zero,
                                                    out->data, t, hw, (long long)c->cout * hw, in->n,
                                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "1x1 convolution");
        }
        if ((cn->b || act != DPK_ACT_NONE) && !node->raw_out) /* (raw_out: the depthwise reader applies them) */
            K_TRY(cb, dpk_bias_act(cb->stream, dt, out->data, cn->b, out->n, out->c, HW, act), "bias + activation");
        return DISOPT_OK;
    }
    if (cn->tap) { /* heads: Z^T (HW x M) = X^T (HW x Cin) Wt^T (Cin x M) per image, float output */
        const int M = c->cout * c->kh * c->kw, hw = (int)HW;
        float *z = (float *)(wsp + gate + pad);
        const float one = 1.0f, zero = 0.0f;
        if ((size_t)(wsp + gate + pad - (char *)ws) + (size_t)in->n * M * HW * sizeof(float) > ws_bytes)
            return cb->host->error(DISOPT_ERR_INTERNAL, "cuda: head workspace too small");
        if (dt == DPK_F32) {
            BLAS_TRY(cb, cublasSgemmStridedBatched(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_N, hw, M, c->cin, &one, src, hw,
                                                   (long long)c->cin * hw, cn->wt, c->cin, 0, &zero, z, hw,
                                                   (long long)M * hw, in->n),
                     "head taps");
        } else {
            const cudaDataType_t t = dt == DPK_F16 ? CUDA_R_16F : CUDA_R_16BF;
            BLAS_TRY(cb, cublasGemmStridedBatchedEx(cb->cublas, CUBLAS_OP_N, CUBLAS_OP_N, hw, M, c->cin, &one, src, t, hw,
                                                    (long long)c->cin * hw, cn->wt, t, c->cin, 0, &zero, z, CUDA_R_32F,
                                                    hw, (long long)M * hw, in->n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "head taps");
        }
        K_TRY(cb, dpk_tap_sum(cb->stream, dt, out->data, z, cn->b, in->n, c->cout, c->kh, c->kw, c->dh, c->dw, c->pt,
                              c->pl, in->h, in->w, out->h, out->w, act),
              "head tap sum");
        return DISOPT_OK;
    }
    if (cn->few) { /* heads: our kernel, padding and bias + activation included */
        K_TRY(cb, dpk_conv_few(cb->stream, dt, out->data, src, cn->w, cn->b, in->n, in->c, c->cout, in->h, in->w, out->h,
                               out->w, c->kh, c->kw, c->sh, c->sw, c->dh, c->dw, c->pt, c->pl, act),
              "few-output conv");
        return DISOPT_OK;
    }
    if (cn->co) { /* stems: our kernel, padding and bias + activation included */
        K_TRY(cb, dpk_conv_co(cb->stream, dt, out->data, src, cn->w, cn->b, in->n, in->c, c->cout, in->h, in->w, out->h,
                              out->w, c->kh, c->kw, c->sh, c->sw, c->dh, c->dw, c->pt, c->pl, act),
              "small-patch conv");
        return DISOPT_OK;
    }
    if (!cn->cudnn) { /* depthwise: our kernel, padding and bias + activation included */
        const float *pre_b = node->pre && node->pre->bk ? ((const cu_node *)node->pre->bk)->b : NULL;
        K_TRY(cb, dpk_depthwise(cb->stream, dt, out->data, src, cn->w, cn->b, in->n, in->c, in->h, in->w, out->h, out->w,
                                c->kh, c->kw, c->sh, c->sw, c->dh, c->dw, c->pt, c->pl, act, pre_b,
                                node->pre ? (int)node->pre->act : -1),
              "depthwise conv");
        return DISOPT_OK;
    }
    int H, W;
    conv_input_dims(node, in, &H, &W);
    if (pad) {
        void *pbuf = wsp + gate;
        K_TRY(cb, dpk_pad(cb->stream, dt, pbuf, src, in->n, in->c, in->h, in->w, c->pt, c->pb, c->pl, c->pr), "pad");
        src = pbuf;
    }
    cu_algo *a;
    disopt_status s = choose_algo(cb, cn, node, in, out, &a);
    if (s != DISOPT_OK) return s;
    if (gate + pad + a->ws > ws_bytes) return cb->host->error(DISOPT_ERR_INTERNAL, "cuda: conv workspace too small");
    DNN_TRY(cb, cudnnSetTensor4dDescriptor(cb->xdesc, CUDNN_TENSOR_NCHW, dnn_type(cb), in->n, in->c, H, W), "x");
    DNN_TRY(cb, cudnnSetTensor4dDescriptor(cb->ydesc, CUDNN_TENSOR_NCHW, dnn_type(cb), out->n, out->c, out->h, out->w),
            "y");
    const float one = 1.0f, zero = 0.0f;
    DNN_TRY(cb, cudnnConvolutionForward(cb->cudnn, &one, cb->xdesc, src, cn->fdesc, dt == DPK_F32 ? (void *)cn->w : cn->wh,
                                        cn->cdesc, a->algo,
                                        a->ws ? wsp + gate + pad : NULL, a->ws, &zero, cb->ydesc, out->data),
            "convolution");
    if ((cn->b || act != DPK_ACT_NONE) && !node->raw_out)
        K_TRY(cb, dpk_bias_act(cb->stream, dt, out->data, cn->b, out->n, out->c, (size_t)out->h * out->w, act),
              "bias + activation");
    return DISOPT_OK;
}

static disopt_status cu_run(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out, void *ws,
                            size_t ws_bytes) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    const dp_tview *a = &ins[0];
    const size_t HW = (size_t)out->h * out->w;
    switch (node->op) {
    case DP_OP_CONV:
        return run_conv(cb, node, ins, out, ws, ws_bytes);
    case DP_OP_BN: {
        const cu_node *cn = node->bk;
        if (!cn) return cb->host->error(DISOPT_ERR_INTERNAL, "cuda: bn node not prepared");
        K_TRY(cb, dpk_scale_shift_act(cb->stream, cb->dt, out->data, a->data, cn->w, cn->b, out->n, out->c, HW, (int)node->act),
              "bn");
        return DISOPT_OK;
    }
    case DP_OP_ACT:
        CU_TRY(cb, cudaMemcpyAsync(out->data, a->data, (size_t)out->n * out->c * HW * cb->esz,
                                   cudaMemcpyDeviceToDevice, cb->stream),
               "activation copy");
        K_TRY(cb, dpk_bias_act(cb->stream, cb->dt, out->data, NULL, out->n, out->c, HW, (int)node->act), "activation");
        return DISOPT_OK;
    case DP_OP_GAP:
        K_TRY(cb, dpk_gap(cb->stream, cb->dt, out->data, a->data, a->n, a->c, (size_t)a->h * a->w), "global average pool");
        return DISOPT_OK;
    case DP_OP_SCALE_CH:
        K_TRY(cb, dpk_scale_ch(cb->stream, cb->dt, out->data, a->data, ins[1].data, out->n, out->c, HW), "channel scale");
        return DISOPT_OK;
    case DP_OP_SCSE:
        K_TRY(cb, dpk_scse(cb->stream, cb->dt, out->data, a->data, ins[1].data, ins[2].data, out->n, out->c, HW), "scse");
        return DISOPT_OK;
    case DP_OP_ADD:
        K_TRY(cb, dpk_add(cb->stream, cb->dt, out->data, a->data, ins[1].data, (size_t)out->n * out->c * HW), "add");
        return DISOPT_OK;
    case DP_OP_CONCAT: {
        int c0 = 0;
        for (int k = 0; k < node->n_in; k++) {
            K_TRY(cb, dpk_concat_part(cb->stream, cb->dt, out->data, ins[k].data, out->n, ins[k].c, out->c, c0, HW), "concat");
            c0 += ins[k].c;
        }
        return DISOPT_OK;
    }
    case DP_OP_BROADCAST:
        K_TRY(cb, dpk_broadcast(cb->stream, cb->dt, out->data, a->data, out->n, out->c, HW), "broadcast");
        return DISOPT_OK;
    case DP_OP_UPSAMPLE:
        K_TRY(cb, dpk_upsample(cb->stream, cb->dt, out->data, a->data, out->n, out->c, a->h, a->w, out->h, out->w), "upsample");
        return DISOPT_OK;
    case DP_OP_SOFTMAX:
        K_TRY(cb, dpk_softmax(cb->stream, cb->dt, out->data, a->data, out->n, out->c, HW), "softmax");
        return DISOPT_OK;
    default:
        return cb->host->error(DISOPT_ERR_UNSUPPORTED, "cuda: op %d not supported", (int)node->op);
    }
}

/* A depthwise conv and the SE pooling of its output in one pass (the kernel sums each output tile
 * it writes; a second small kernel adds the tiles of each plane in a fixed order). */
static disopt_status cu_run_conv_gap(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                                     const dp_tview *gap, void *ws, size_t ws_bytes) {
    cu_backend *cb = (cu_backend *)b;
    const dp_conv_params *c = &node->conv;
    const cu_node *cn = node->bk;
    const size_t part = ALIGN256(dpk_depthwise_gap_bytes(out->n, out->c, out->h, out->w));
    if (cn && is_depthwise(c) && node->n_in == 1 && part <= ws_bytes &&
        dpk_depthwise_gap_ok(out->n, out->c, out->h, out->w, c->kh, c->kw, c->sh, c->sw, c->dh, c->dw)) {
        CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
        const float *pre_b = node->pre && node->pre->bk ? ((const cu_node *)node->pre->bk)->b : NULL;
        K_TRY(cb, dpk_depthwise_gap(cb->stream, cb->dt, out->data, gap->data, ws, ins[0].data, cn->w, cn->b, ins[0].n,
                                    ins[0].c, ins[0].h, ins[0].w, out->h, out->w, c->kh, c->kw, c->sh, c->sw, c->dh,
                                    c->dw, c->pt, c->pl, (int)node->act, pre_b, node->pre ? (int)node->pre->act : -1),
              "depthwise conv + pooling");
        return DISOPT_OK;
    }
    disopt_status s = cu_run(b, node, ins, out, ws, ws_bytes);
    if (s != DISOPT_OK) return s;
    K_TRY(cb, dpk_gap(cb->stream, cb->dt, gap->data, out->data, out->n, out->c, (size_t)out->h * out->w), "pooling");
    return DISOPT_OK;
}

static disopt_status cu_sync(dp_backend *b) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    CU_TRY(cb, cudaStreamSynchronize(cb->stream), "synchronize");
    return DISOPT_OK;
}

static disopt_status cu_graph_begin(dp_backend *b) {
    cu_backend *cb = (cu_backend *)b;
    if (cb->no_graph) return cb->host->error(DISOPT_ERR_UNSUPPORTED, "cuda graphs disabled");
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    CU_TRY(cb, cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal), "graph capture");
    return DISOPT_OK;
}

static disopt_status cu_graph_end(dp_backend *b, int ok, void **out) {
    cu_backend *cb = (cu_backend *)b;
    *out = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(cb->stream, &g);
    if (!ok || e != cudaSuccess) {
        if (g) rel_cu(cb, cudaGraphDestroy(g), "destroy graph");
        cudaGetLastError();
        return ok ? cuda_fail(cb, e, "graph capture") : DISOPT_OK;
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    rel_cu(cb, cudaGraphDestroy(g), "destroy graph");
    if (e != cudaSuccess) return cuda_fail(cb, e, "graph instantiate");
    *out = x;
    return DISOPT_OK;
}

static disopt_status cu_graph_launch(dp_backend *b, void *graph) {
    cu_backend *cb = (cu_backend *)b;
    CU_TRY(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    CU_TRY(cb, cudaGraphLaunch((cudaGraphExec_t)graph, cb->stream), "graph launch");
    return DISOPT_OK;
}

static void cu_graph_destroy(dp_backend *b, void *graph) {
    cu_backend *cb = (cu_backend *)b;
    rel_cu(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    if (graph) rel_cu(cb, cudaGraphExecDestroy((cudaGraphExec_t)graph), "destroy graph instance");
}

static const dp_backend_vtable CUDA_VT = {
    "cuda", cu_destroy, cu_tensor_bytes, cu_alloc, cu_free, cu_upload, cu_download,
    cu_prepare, cu_release, cu_workspace, cu_run, cu_sync, cu_run_conv_gap,
    cu_graph_begin, cu_graph_end, cu_graph_launch, cu_graph_destroy,
    cu_host_alloc, cu_host_free, cu_upload_checked, cu_nonfinite_result,
    cu_download_planes, cu_download_device, cu_upload_device,
    DP_CAP_DW_PRE_ACT,
    cu_prefetch, cu_prefetch_hits,
};

__attribute__((visibility("default"))) disopt_status disopt_cuda_backend_create(const dp_cuda_host *host,
                                                                                const disopt_engine *e, int device,
                                                                                dp_backend **out) {
    if (!host || !out) return DISOPT_ERR_INTERNAL;
    if (host->abi != DP_CUDA_ABI) return DISOPT_ERR_UNSUPPORTED; /* the host explains (it cannot call us back safely) */
    *out = NULL;
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || count == 0) {
        cudaGetLastError();
        return host->error(DISOPT_ERR_UNSUPPORTED, "no CUDA device: %s",
                           ce != cudaSuccess ? cudaGetErrorString(ce) : "none visible");
    }
    if (device < 0 || device >= count)
        return host->error(DISOPT_ERR_INVALID_ARGUMENT, "CUDA device %d does not exist (%d visible)", device, count);
    cu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) return host->error(DISOPT_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    cb->base.vt = &CUDA_VT;
    cb->base.engine = e;
    cb->host = host;
    cb->device = device;
    const disopt_precision prec = e ? e->opt.precision : DISOPT_PRECISION_FP32;
    cb->tf32 = prec == DISOPT_PRECISION_TF32;
    cb->dt = prec == DISOPT_PRECISION_FP16 ? DPK_F16 : prec == DISOPT_PRECISION_BF16 ? DPK_BF16 : DPK_F32;
    cb->esz = dpk_elem_size(cb->dt);
    const char *ng = getenv("DISOPT_CUDA_NO_GEMM");
    cb->no_gemm = ng && *ng && *ng != '0';
    const char *ngr = getenv("DISOPT_CUDA_NO_GRAPH");
    cb->no_graph = ngr && *ngr && *ngr != '0';
    disopt_status s = DISOPT_OK;
    struct cudaDeviceProp prop;
    const double t0 = cu_now();
    /* DISOPT_CUDA_PAR_SETUP=1: cudnnCreate on a thread of its own, beside the context and cuBLAS (A/B of the
     * engine's start-up time, bench/RESULTS.md 4.8) */
    const char *par = getenv("DISOPT_CUDA_PAR_SETUP");
    dnn_job job = {device, NULL, CUDNN_STATUS_SUCCESS, cudaSuccess, 0.0};
    pthread_t dnn_th;
    const int par_on = par && *par && *par != '0' && pthread_create(&dnn_th, NULL, dnn_create_main, &job) == 0;
    cudaError_t r = cudaSetDevice(device);
    if (r == cudaSuccess) r = cudaFree(NULL); /* the context, now (cudaSetDevice may leave it for later) */
    if (r == cudaSuccess) r = cudaGetDeviceProperties(&prop, device);
    if (r == cudaSuccess) r = cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking);
    if (r != cudaSuccess) s = cuda_fail(cb, r, "device setup");
    const double t1 = cu_now();
    cudnnStatus_t d = CUDNN_STATUS_SUCCESS; /* the handle (here or on its thread); its set-up after cuBLAS */
    if (!par_on && s == DISOPT_OK) d = cudnnCreate(&cb->cudnn);
    const double t2 = cu_now();
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
    if (s == DISOPT_OK) bs = cublasCreate(&cb->cublas);
    if (s == DISOPT_OK && bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(cb->cublas, cb->stream);
    /* FP32: pedantic math (no TF32, no reduced-precision reductions); TF32: TF32 tensor cores;
     * FP16/BF16: the default (tensor cores, float compute type asked per call) */
    if (s == DISOPT_OK && bs == CUBLAS_STATUS_SUCCESS)
        bs = cublasSetMathMode(cb->cublas, cb->dt != DPK_F32 ? CUBLAS_DEFAULT_MATH
                                           : cb->tf32        ? CUBLAS_TF32_TENSOR_OP_MATH
                                                             : CUBLAS_PEDANTIC_MATH);
    if (s == DISOPT_OK && bs != CUBLAS_STATUS_SUCCESS) s = cublas_fail(cb, bs, "cublas setup");
    const size_t blas_ws = (size_t)32 << 20;
    if (s == DISOPT_OK) {
        cudaError_t we = cudaMalloc(&cb->blas_ws, blas_ws);
        if (we != cudaSuccess) s = cuda_fail(cb, we, "cublas workspace");
    }
    if (s == DISOPT_OK && (bs = cublasSetWorkspace(cb->cublas, cb->blas_ws, blas_ws)) != CUBLAS_STATUS_SUCCESS)
        s = cublas_fail(cb, bs, "cublas workspace");
    const double t3 = cu_now();
    if (par_on) { /* the handle made on its thread (destroyed with cb whatever happened here) */
        pthread_join(dnn_th, NULL);
        cb->cudnn = job.ce == cudaSuccess && job.st == CUDNN_STATUS_SUCCESS ? job.h : NULL;
        if (s == DISOPT_OK && job.ce != cudaSuccess) s = cuda_fail(cb, job.ce, "device setup (cuDNN thread)");
        d = job.st;
    }
    if (s == DISOPT_OK && d == CUDNN_STATUS_SUCCESS) d = cudnnSetStream(cb->cudnn, cb->stream);
    if (s == DISOPT_OK && d == CUDNN_STATUS_SUCCESS) d = cudnnCreateTensorDescriptor(&cb->xdesc);
    if (s == DISOPT_OK && d == CUDNN_STATUS_SUCCESS) d = cudnnCreateTensorDescriptor(&cb->ydesc);
    if (s == DISOPT_OK && d != CUDNN_STATUS_SUCCESS) s = dp_dnn_status(cb->host, d, "cudnn setup");
    if (s != DISOPT_OK) {
        cu_destroy(&cb->base);
        return s;
    }
    host->log(e, DISOPT_LOG_INFO,
              "cuda backend: device %d %s (sm_%d%d), cuDNN %zu, %s; set-up: context %.3f s, cuDNN %.3f s%s, "
              "cuBLAS %.3f s, all %.3f s",
              device, prop.name, prop.major, prop.minor, cudnnGetVersion(),
              cb->dt == DPK_F16    ? "FP16 storage, float accumulation"
              : cb->dt == DPK_BF16 ? "BF16 storage, float accumulation"
              : cb->tf32           ? "TF32 tensor cores"
                                   : "FP32 (FMA math, no TF32)",
              t1 - t0, par_on ? job.secs : t2 - t1, par_on ? " (on its own thread)" : "", t3 - t2, cu_now() - t0);
    *out = &cb->base;
    return DISOPT_OK;
}
