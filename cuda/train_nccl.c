/*
 * train_nccl.c - data parallelism for the CUDA trainer (issue 5): NCCL communicators, the gradient
 * all-reduce and the broadcast of the initial state, exported from the CUDA module (train_ops.h).
 *
 * Conventions:
 *  - NCCL is loaded when the first communicators are made (dlopen of libnccl.so.2, every symbol checked),
 *    so the module itself loads and runs without NCCL (machines with CUDA but no NCCL; CI);
 *  - one process drives every rank: dp_cu_tr_comm_init_all makes one communicator per device
 *    (ncclCommInitAll), each rank's trainer uses its own from its own host thread (NCCL's "one thread per
 *    device" model); collectives are queued on the rank's context stream, in the same order on every rank;
 *  - float32 in place: the all-reduce averages (ncclAvg, sum then divide by the rank count: with one rank
 *    the buffer is left as it is, bit for bit), the broadcast copies rank `root`'s buffer to all;
 *  - every NCCL and CUDA return code is checked and becomes a status with a message; nothing aborts; no
 *    global state (the library handle and the function pointers live in each communicator).
 */
#include "train_ops.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    void *lib;
    ncclResult_t (*init_all)(ncclComm_t *, int, const int *);
    ncclResult_t (*destroy)(ncclComm_t);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    const char *(*error_string)(ncclResult_t);
    ncclResult_t (*version)(int *);
} nccl_fns;

struct dp_cu_tr_comm {
    nccl_fns f;
    ncclComm_t comm;
    const dp_cuda_host *host;
    int rank, nranks, device;
};

static disopt_status nccl_load(const dp_cuda_host *host, nccl_fns *f) {
    memset(f, 0, sizeof *f);
    const char *names[2] = {"libnccl.so.2", "libnccl.so"};
    for (int i = 0; i < 2 && !f->lib; i++) f->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!f->lib)
        return host->error(DISOPT_ERR_UNSUPPORTED, "NCCL is not available (%s): multi-GPU training needs libnccl.so.2 "
                           "(the CUDA toolkit's, e.g. /usr/local/cuda/lib64, on LD_LIBRARY_PATH)", dlerror());
    const char *missing = NULL;
#define NCCL_SYM(field, name)                                                                                          \
    if (!missing) {                                                                                                    \
        void *p_ = dlsym(f->lib, name);                                                                                \
        if (!p_) missing = name;                                                                                       \
        memcpy(&f->field, &p_, sizeof p_);                                                                             \
    }
    NCCL_SYM(init_all, "ncclCommInitAll")
    NCCL_SYM(destroy, "ncclCommDestroy")
    NCCL_SYM(all_reduce, "ncclAllReduce")
    NCCL_SYM(broadcast, "ncclBroadcast")
    NCCL_SYM(error_string, "ncclGetErrorString")
    NCCL_SYM(version, "ncclGetVersion")
#undef NCCL_SYM
    if (missing) {
        dlclose(f->lib);
        f->lib = NULL;
        return host->error(DISOPT_ERR_UNSUPPORTED, "NCCL: the library has no %s", missing);
    }
    int v = 0;
    if (f->version(&v) != ncclSuccess || v < 21000) { /* ncclAvg: NCCL 2.10 */
        dlclose(f->lib);
        f->lib = NULL;
        return host->error(DISOPT_ERR_UNSUPPORTED, "NCCL %d is too old (2.10 or later needed for ncclAvg)", v);
    }
    return DISOPT_OK;
}

disopt_status dp_cu_tr_comm_init_all(const dp_cuda_host *host, int n, const int *devices, dp_cu_tr_comm **out) {
    if (!host) return DISOPT_ERR_INVALID_ARGUMENT;
    if (n < 1 || !devices || !out) return host->error(DISOPT_ERR_INVALID_ARGUMENT, "NCCL: bad arguments (%d ranks)", n);
    for (int i = 0; i < n; i++) out[i] = NULL;
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess) return host->error(DISOPT_ERR_UNSUPPORTED, "NCCL: no CUDA device: %s", cudaGetErrorString(ce));
    for (int i = 0; i < n; i++) {
        if (devices[i] < 0 || devices[i] >= count)
            return host->error(DISOPT_ERR_INVALID_ARGUMENT, "NCCL: CUDA device %d does not exist (%d visible)",
                               devices[i], count);
        for (int j = 0; j < i; j++)
            if (devices[j] == devices[i])
                return host->error(DISOPT_ERR_INVALID_ARGUMENT, "NCCL: device %d given twice (one rank per GPU)",
                                   devices[i]);
    }
    nccl_fns f;
    disopt_status s = nccl_load(host, &f);
    if (s != DISOPT_OK) return s;
    ncclComm_t *comms = calloc((size_t)n, sizeof *comms);
    if (!comms) {
        dlclose(f.lib);
        return host->error(DISOPT_ERR_OUT_OF_MEMORY, "NCCL: out of memory");
    }
    ncclResult_t r = f.init_all(comms, n, devices);
    if (r != ncclSuccess) {
        s = host->error(DISOPT_ERR_BACKEND, "NCCL: ncclCommInitAll over %d device(s): %s", n, f.error_string(r));
        free(comms);
        dlclose(f.lib);
        return s;
    }
    for (int i = 0; i < n && s == DISOPT_OK; i++) {
        out[i] = calloc(1, sizeof *out[i]);
        if (!out[i]) {
            s = host->error(DISOPT_ERR_OUT_OF_MEMORY, "NCCL: out of memory");
            break;
        }
        out[i]->f = f;
        out[i]->f.lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL); /* one reference each */
        if (!out[i]->f.lib) out[i]->f.lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
        if (!out[i]->f.lib) {
            s = host->error(DISOPT_ERR_UNSUPPORTED, "NCCL: cannot load the library again: %s", dlerror());
            free(out[i]);
            out[i] = NULL;
            break;
        }
        out[i]->comm = comms[i];
        out[i]->host = host;
        out[i]->rank = i;
        out[i]->nranks = n;
        out[i]->device = devices[i];
        comms[i] = NULL;
    }
    if (s != DISOPT_OK)
        for (int i = 0; i < n; i++) {
            if (comms[i]) f.destroy(comms[i]);
            dp_cu_tr_comm_destroy(out[i]);
            out[i] = NULL;
        }
    free(comms);
    dlclose(f.lib); /* the communicators hold their own references */
    return s;
}

void dp_cu_tr_comm_destroy(dp_cu_tr_comm *c) {
    if (!c) return;
    if (c->comm) c->f.destroy(c->comm);
    if (c->f.lib) dlclose(c->f.lib);
    free(c);
}

/* the rank's communicator must belong to the context's device */
static disopt_status comm_check(dp_cu_tr_ctx *c, dp_cu_tr_comm *comm, const void *x, const char *what) {
    if (!c || !comm || !x) return comm ? comm->host->error(DISOPT_ERR_INVALID_ARGUMENT, "NCCL %s: NULL argument", what)
                                       : DISOPT_ERR_INVALID_ARGUMENT;
    if (dp_cu_tr_device(c) != comm->device)
        return comm->host->error(DISOPT_ERR_INVALID_ARGUMENT, "NCCL %s: rank %d's communicator is on device %d, the "
                                 "context on device %d", what, comm->rank, comm->device, dp_cu_tr_device(c));
    cudaError_t ce = cudaSetDevice(comm->device);
    if (ce != cudaSuccess)
        return comm->host->error(DISOPT_ERR_BACKEND, "NCCL %s: cudaSetDevice(%d): %s", what, comm->device,
                                 cudaGetErrorString(ce));
    return DISOPT_OK;
}

disopt_status dp_cu_tr_allreduce_avg(dp_cu_tr_ctx *c, dp_cu_tr_comm *comm, float *x, size_t n) {
    disopt_status s = comm_check(c, comm, x, "all-reduce");
    if (s != DISOPT_OK) return s;
    if (n == 0) return DISOPT_OK;
    ncclResult_t r = comm->f.all_reduce(x, x, n, ncclFloat32, ncclAvg, comm->comm, (cudaStream_t)dp_cu_tr_stream(c));
    if (r != ncclSuccess)
        return comm->host->error(DISOPT_ERR_BACKEND, "NCCL all-reduce of %zu floats (rank %d of %d): %s", n, comm->rank,
                                 comm->nranks, comm->f.error_string(r));
    return DISOPT_OK;
}

disopt_status dp_cu_tr_broadcast(dp_cu_tr_ctx *c, dp_cu_tr_comm *comm, float *x, size_t n, int root) {
    disopt_status s = comm_check(c, comm, x, "broadcast");
    if (s != DISOPT_OK) return s;
    if (root < 0 || root >= comm->nranks)
        return comm->host->error(DISOPT_ERR_INVALID_ARGUMENT, "NCCL broadcast: root %d of %d ranks", root, comm->nranks);
    if (n == 0) return DISOPT_OK;
    ncclResult_t r = comm->f.broadcast(x, x, n, ncclFloat32, root, comm->comm, (cudaStream_t)dp_cu_tr_stream(c));
    if (r != ncclSuccess)
        return comm->host->error(DISOPT_ERR_BACKEND, "NCCL broadcast of %zu floats (rank %d of %d): %s", n, comm->rank,
                                 comm->nranks, comm->f.error_string(r));
    return DISOPT_OK;
}
