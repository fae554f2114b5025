/*
 * disopt_io.h - model files beyond safetensors, in the GDAL-facing library (libdisopt_raster):
 * PyTorch zip checkpoints (torch.save since 1.6, the authors' .pth.tar) read through GDAL's
 * /vsizip/ with a restricted unpickler of our own (nothing is ever executed), and a loader that
 * takes either format. Same conventions as disopt.h (status + thread-local message, opaque
 * handles, no global state). Paths may be any GDAL virtual path (/vsicurl/, /vsis3/, ...).
 */
#ifndef DISOPT_IO_H
#define DISOPT_IO_H

#include "disopt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum disopt_file_kind {
    DISOPT_FILE_UNKNOWN = 0,
    DISOPT_FILE_SAFETENSORS,
    DISOPT_FILE_PTH_ZIP,    /* torch.save >= 1.6 (a zip archive) */
    DISOPT_FILE_PTH_LEGACY  /* torch.save before 1.6 or _use_new_zipfile_serialization=False: refused */
} disopt_file_kind;

/* Kind of a model file from its first bytes (16 are enough; fewer give UNKNOWN or SAFETENSORS). */
DISOPT_API disopt_file_kind disopt_file_kind_of(const void *head, size_t n);
/* Same, reading the start of a file. */
DISOPT_API disopt_status disopt_file_kind_of_path(const char *path, disopt_file_kind *kind);

/* ---------------------------------------------------------------- PyTorch checkpoints */
typedef struct disopt_pth disopt_pth;

typedef struct disopt_pth_tensor_info {
    const char *name;    /* state-dict key without a leading "module." */
    disopt_dtype dtype;  /* storage type: F32, F16, BF16, F64 or I64 */
    int ndim;
    int64_t shape[DISOPT_MAX_DIMS];
    int64_t stride[DISOPT_MAX_DIMS];
    int64_t offset;      /* storage offset in elements */
    const char *storage; /* storage key (<archive>/data/<key>) */
} disopt_pth_tensor_info;

/* Opens a checkpoint: a state dict, or a dict with a 'state_dict' entry (whose scalar siblings,
 * e.g. 'epoch' and 'best_metric', become metadata). Checks every tensor against its storage. */
DISOPT_API disopt_status disopt_pth_open(const char *path, disopt_pth **out);
DISOPT_API void disopt_pth_close(disopt_pth *p);
DISOPT_API int disopt_pth_num_tensors(const disopt_pth *p);
DISOPT_API disopt_status disopt_pth_tensor(const disopt_pth *p, int i, disopt_pth_tensor_info *info);
DISOPT_API int disopt_pth_num_metadata(const disopt_pth *p);
DISOPT_API void disopt_pth_metadata_at(const disopt_pth *p, int i, const char **key, const char **value);
/* Name of the folder inside the zip that holds data.pkl (it varies with the saved file's name). */
DISOPT_API const char *disopt_pth_archive_name(const disopt_pth *p);
/* Reads tensor i as float32 in its logical (contiguous, row-major) order; numel must match. */
DISOPT_API disopt_status disopt_pth_read_f32(disopt_pth *p, int i, float *dst, size_t numel);

/* ---------------------------------------------------------------- any model file */
/* A weight file of either format, seen as safetensors: a .pth is converted in memory
 * (F32/F16/BF16 storages keep their type, F64 becomes F32, I64 stays I64). Its metadata gets
 * "source_format" ("safetensors" or "pytorch") and a checkpoint's scalar entries. */
typedef struct disopt_weights disopt_weights;
DISOPT_API disopt_status disopt_weights_open(const char *path, disopt_weights **out);
DISOPT_API void disopt_weights_close(disopt_weights *w);
/* The safetensors view (owned by w). */
DISOPT_API disopt_st *disopt_weights_st(disopt_weights *w);
/* The whole safetensors image (owned by w). */
DISOPT_API const void *disopt_weights_image(const disopt_weights *w, size_t *size);

/* Loads a model from a .safetensors or a PyTorch checkpoint (.pth, .pth.tar), by content. */
DISOPT_API disopt_status disopt_model_load_any(disopt_engine *engine, const char *path, disopt_model **out);

/* How a weight file fits an architecture. The best-fitting config (most keys matched by name
 * and shape, over teacher/student b0..b7) is reported; each problem is passed to fn with kind
 * "missing" (a key the architecture needs), "unexpected" (a key it does not know) or "shape"
 * (known key, other shape; detail says both). num_batches_tracked counters are optional. */
typedef void (*disopt_key_report_fn)(void *user, const char *kind, const char *key, const char *detail);
typedef struct disopt_weights_report {
    disopt_model_config config;
    int matched, missing, unexpected, bad_shape;
    int64_t num_parameters;  /* floats in the file (num_batches_tracked excluded) */
    int num_tensors;
} disopt_weights_report;
DISOPT_API disopt_status disopt_weights_check(disopt_weights *w, disopt_key_report_fn fn, void *user,
                                              disopt_weights_report *report);

#ifdef __cplusplus
}
#endif
#endif /* DISOPT_IO_H */
