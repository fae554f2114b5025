/* cu_status.h - CUDA and cuDNN return codes as the module's status + message (through the host's
 * error function), shared by the inference backend (backend_cuda.c) and the training ops
 * (train_ops.c). Each file defines its CU_TRY / DNN_TRY over these with its own context. */
#ifndef DISOPT_CUDA_CU_STATUS_H
#define DISOPT_CUDA_CU_STATUS_H

#include "internal.h"

#include <cuda_runtime.h>
#include <cudnn.h>

static inline disopt_status dp_cu_status(const dp_cuda_host *host, cudaError_t e, const char *what) {
    return host->error(e == cudaErrorMemoryAllocation ? DISOPT_ERR_OUT_OF_MEMORY : DISOPT_ERR_BACKEND,
                       "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static inline disopt_status dp_dnn_status(const dp_cuda_host *host, cudnnStatus_t e, const char *what) {
    return host->error(e == CUDNN_STATUS_ALLOC_FAILED ? DISOPT_ERR_OUT_OF_MEMORY : DISOPT_ERR_BACKEND,
                       "cudnn: %s: %s", what, cudnnGetErrorString(e));
}

/* return the status of a failing CUDA / cuDNN call (host: the module's dp_cuda_host) */
#define DP_CU_TRY(host, expr, what)                                                                           \
    do {                                                                                                      \
        cudaError_t e_ = (expr);                                                                              \
        if (e_ != cudaSuccess) return dp_cu_status((host), e_, (what));                                       \
    } while (0)
#define DP_DNN_TRY(host, expr, what)                                                                          \
    do {                                                                                                      \
        cudnnStatus_t e_ = (expr);                                                                            \
        if (e_ != CUDNN_STATUS_SUCCESS) return dp_dnn_status((host), e_, (what));                             \
    } while (0)

#endif
