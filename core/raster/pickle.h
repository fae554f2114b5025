/*
 * pickle.h - a restricted unpickler for PyTorch state dicts (internal to libdisopt_raster).
 *
 * Pure C, no GDAL: it reads the bytes of a checkpoint's data.pkl and resolves storages through a
 * caller-supplied provider, so that it can be tested and fuzzed without a zip archive (pth.c is the
 * GDAL-facing caller). Nothing is ever executed: only the opcodes and globals a state_dict needs
 * are known, every other one is refused with an error that names it.
 */
#ifndef DISOPT_PICKLE_H
#define DISOPT_PICKLE_H

#include "disopt.h"

#include <stddef.h>
#include <stdint.h>

/* Bounds (every size, count and depth the input controls). */
#define DP_PK_MAX_STACK (1 << 20)         /* values on the stack */
#define DP_PK_MAX_MARKS (1 << 12)         /* nested MARKs */
#define DP_PK_MAX_MEMO (1 << 22)          /* memo index */
#define DP_PK_MAX_OBJECTS (1 << 21)       /* values created in one pickle (a B4 student state dict: ~30k) */
#define DP_PK_MAX_GLOBAL_NAME 256         /* module or name of a GLOBAL */
#define DP_PK_MAX_KEY 1024                /* a state-dict key */
#define DP_PK_MAX_STORAGE_KEY 64          /* a storage's file name under data/ */
#define DP_PK_MAX_NUMEL ((uint64_t)1 << 33) /* elements of one storage or tensor */
#define DP_PK_MAX_DIM ((int64_t)1 << 40)  /* one size or stride */

/* Called for every persistent id: storage `key` of `dtype` declares `numel` elements. Returns
 * DISOPT_OK when the storage exists and holds them all (else a status with a message). */
typedef struct dp_pk_provider {
    void *user;
    disopt_status (*check)(void *user, const char *key, disopt_dtype dtype, uint64_t numel);
} dp_pk_provider;

typedef struct dp_pk_tensor {
    char *name;       /* state-dict key, with a leading "module." removed */
    disopt_dtype dtype;
    int ndim;
    int64_t shape[DISOPT_MAX_DIMS];
    int64_t stride[DISOPT_MAX_DIMS]; /* in elements */
    int64_t offset;   /* storage offset, in elements */
    uint64_t numel;
    uint64_t span_lo, span_hi; /* first and last storage element it reads (span_hi < storage_numel) */
    char *storage;    /* storage key (file name under <archive>/data/) */
    uint64_t storage_numel;
} dp_pk_tensor;

typedef struct dp_pk_result {
    dp_pk_tensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_values; /* scalars of a {'state_dict': ..., 'epoch': ...} wrapper */
    int n_meta;
    int wrapped;      /* 1 when the state dict came from a 'state_dict' entry */
} dp_pk_result;

/* Interprets a pickle holding a state dict (or a wrapper dict with a 'state_dict' entry). */
disopt_status dp_pickle_state_dict(const unsigned char *buf, size_t size, const dp_pk_provider *provider,
                                   dp_pk_result *out);
void dp_pk_result_free(dp_pk_result *r);

#endif
