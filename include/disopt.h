/*
 * disopt.h - public C API of gdal-disopt's core library (libdisopt).
 *
 * Conventions:
 *  - Every function that can fail returns a disopt_status. On failure a message is left in a
 *    thread-local buffer, read with disopt_last_error(). The library never aborts, exits or prints;
 *    diagnostics go through an optional log callback set on the engine.
 *  - Handles are opaque. There is no global mutable state: everything hangs off a disopt_engine
 *    created by the caller.
 *  - Tensors crossing this API are float32, logical layout NCHW, contiguous, in host memory.
 *    The physical layout used by a backend (NCHW on the CPU, NHWC on the GPU, ...) is its own business.
 */
#ifndef DISOPT_H
#define DISOPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DISOPT_API __attribute__((visibility("default")))
#else
#define DISOPT_API
#endif

#define DISOPT_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- status */
typedef enum disopt_status {
    DISOPT_OK = 0,
    DISOPT_ERR_INVALID_ARGUMENT, /* a caller passed something impossible (NULL handle, bad option) */
    DISOPT_ERR_IO,               /* file missing, unreadable, short read, write failure */
    DISOPT_ERR_FORMAT,           /* file is not what it claims (bad header, lying offsets, ...) */
    DISOPT_ERR_UNSUPPORTED,      /* valid but not supported (dtype, architecture, backend) */
    DISOPT_ERR_MISSING_KEY,      /* a weight the model needs is absent */
    DISOPT_ERR_UNEXPECTED_KEY,   /* a weight file holds a key the model does not know */
    DISOPT_ERR_SHAPE,            /* a weight or an input has the wrong shape */
    DISOPT_ERR_INPUT,            /* input data is unusable (NaN/Inf, wrong channel count, size) */
    DISOPT_ERR_OUT_OF_MEMORY,
    DISOPT_ERR_BACKEND,          /* a backend (CUDA, cuDNN, BLAS, threads) reported a failure */
    DISOPT_ERR_INTERNAL,         /* a bug: please report */
    DISOPT_ERR_CANCELLED         /* the caller's progress callback asked to stop */
} disopt_status;

/* Short constant name of a status, e.g. "DISOPT_ERR_SHAPE". */
DISOPT_API const char *disopt_status_name(disopt_status s);
/* Message of the last failure on the calling thread ("" if none). Valid until the next failing call. */
DISOPT_API const char *disopt_last_error(void);
/* Clears the calling thread's message. */
DISOPT_API void disopt_clear_error(void);

DISOPT_API const char *disopt_version(void);

/* ---------------------------------------------------------------- engine */
typedef struct disopt_engine disopt_engine;

typedef enum disopt_backend_kind {
    DISOPT_BACKEND_CPU = 0,
    DISOPT_BACKEND_CUDA = 1
} disopt_backend_kind;

typedef enum disopt_log_level {
    DISOPT_LOG_DEBUG = 0,
    DISOPT_LOG_INFO = 1,
    DISOPT_LOG_WARNING = 2
} disopt_log_level;

typedef void (*disopt_log_fn)(void *user, disopt_log_level level, const char *message);

/* Arithmetic of the network. FP32 is IEEE float32 everywhere (what the goldens check); the others
 * are GPU precision modes: TF32 tensor cores for the convolutions; FP16/BF16 activations and
 * weights with float32 accumulation. The CPU backend offers FP32 only. */
typedef enum disopt_precision {
    DISOPT_PRECISION_FP32 = 0,
    DISOPT_PRECISION_TF32 = 1,
    DISOPT_PRECISION_FP16 = 2,
    DISOPT_PRECISION_BF16 = 3
} disopt_precision;

/* "FP32", "TF32", "FP16", "BF16" */
DISOPT_API const char *disopt_precision_name(disopt_precision p);

typedef struct disopt_engine_options {
    disopt_backend_kind backend; /* DISOPT_BACKEND_CPU */
    int num_threads;             /* CPU worker threads; <= 0 means all online cores */
    int device;                  /* GPU ordinal for CUDA */
    disopt_precision precision;  /* DISOPT_PRECISION_FP32 */
    disopt_log_fn log;           /* optional */
    void *log_user;
} disopt_engine_options;

DISOPT_API void disopt_engine_options_init(disopt_engine_options *opt);
DISOPT_API disopt_status disopt_engine_create(const disopt_engine_options *opt, disopt_engine **out);
DISOPT_API void disopt_engine_destroy(disopt_engine *engine);
DISOPT_API int disopt_engine_num_threads(const disopt_engine *engine);
DISOPT_API const char *disopt_engine_backend_name(const disopt_engine *engine);
/* Host memory for inputs and outputs of disopt_model_infer: page-locked on a GPU backend (copies
 * run at full bus speed), 64-byte aligned ordinary memory otherwise. Free with
 * disopt_engine_host_free on the same engine, before the engine is destroyed. */
DISOPT_API disopt_status disopt_engine_host_alloc(disopt_engine *engine, size_t bytes, void **out);
DISOPT_API void disopt_engine_host_free(disopt_engine *engine, void *p);

/* ---------------------------------------------------------------- models */
typedef enum disopt_arch {
    DISOPT_ARCH_TEACHER = 0, /* DeepLabV3plus (smp 0.2.0 DeepLabV3Plus, EfficientNet encoder) */
    DISOPT_ARCH_STUDENT = 1  /* BiDeepLabV3p_Dist: SAR encoder + pseudo-optical branch + fusion */
} disopt_arch;

typedef struct disopt_model_config {
    disopt_arch arch;
    int variant;      /* EfficientNet b<variant>, 0..7 */
    int in_channels;  /* 4 for the authors' models */
    int num_classes;  /* 2 for the authors' models (class 1 = building) */
} disopt_model_config;

#define DISOPT_MAX_BANDS 16

/* Per-band normalisation: x' = ((x * scale) - mean) / std. The authors': scale 1/255, mean 0.5, std 0.125. */
typedef struct disopt_model_info {
    disopt_model_config config;
    int64_t num_parameters;       /* floats in the state dict (num_batches_tracked excluded) */
    int num_keys;                 /* state-dict keys the architecture declares */
    char band_names[DISOPT_MAX_BANDS][16];
    float band_scale[DISOPT_MAX_BANDS];
    float band_mean[DISOPT_MAX_BANDS];
    float band_std[DISOPT_MAX_BANDS];
    int rotate180;                /* 1 if the model expects SpaceNet-6 south-looking strips rotated 180 deg */
    char name[128];
} disopt_model_info;

typedef struct disopt_model disopt_model;

/* Parses "teacher-b3", "student-b4", ... */
DISOPT_API disopt_status disopt_model_config_parse(const char *s, disopt_model_config *cfg);
DISOPT_API void disopt_model_config_format(const disopt_model_config *cfg, char *buf, size_t len);

/* Loads a model from a safetensors file. The architecture comes from the file's __metadata__
 * ("arch": "teacher"|"student", "variant": "b3"|...) or, when absent, is detected from the keys. */
DISOPT_API disopt_status disopt_model_load(disopt_engine *engine, const char *path, disopt_model **out);
/* Same, from a safetensors image in memory (the bytes are copied as needed; buf may be freed after). */
DISOPT_API disopt_status disopt_model_load_memory(disopt_engine *engine, const void *buf, size_t size,
                                                  disopt_model **out);
/* disopt_model_load_memory in two halves, so that the host work can run while an engine is being created
 * (a GPU's takes a few tenths of a second): parse reads the file image and folds the weights without an
 * engine (info and metadata are then available; inference is not); bind uploads them to the engine (once). */
DISOPT_API disopt_status disopt_model_parse_memory(const void *buf, size_t size, disopt_model **out);
DISOPT_API disopt_status disopt_model_bind(disopt_model *model, disopt_engine *engine);
DISOPT_API void disopt_model_destroy(disopt_model *model);
/* The engine the model was loaded on (NULL while not bound). */
DISOPT_API disopt_engine *disopt_model_engine(const disopt_model *model);
DISOPT_API disopt_status disopt_model_get_info(const disopt_model *model, disopt_model_info *info);
/* Value of a __metadata__ entry of the model file, or NULL. */
DISOPT_API const char *disopt_model_metadata(const disopt_model *model, const char *key);

/* Applies the model's per-band normalisation in place to an N x C x H x W buffer. */
DISOPT_API disopt_status disopt_model_normalize(const disopt_model *model, float *data, int n, int h, int w);

/* Outputs of one inference. Any pointer may be NULL (not wanted). Shapes:
 *   fused_logits, sar_logits, rgb_logits: N x classes x H x W
 *   probability: N x H x W, softmax over classes, class 1 (building)
 * For the teacher, fused_logits are its logits and sar/rgb are unavailable (must be NULL).
 * taps: optional intermediate tensors by name (see disopt_model_tap_names), copied out as NCHW. */
typedef struct disopt_tap {
    const char *name;
    float *data;   /* caller-owned, large enough: query with disopt_model_tap_shape */
} disopt_tap;

typedef struct disopt_outputs {
    float *fused_logits;
    float *probability;
    float *sar_logits;
    float *rgb_logits;
    const disopt_tap *taps;
    int num_taps;
} disopt_outputs;

/* Runs the network on an already normalised input (N x C x H x W; C must be the model's input
 * channel count, H and W multiples of 16; NaN/Inf are refused: fill nodata before).
 * Thread safety: one model may be run from one thread at a time; use one model per thread or a lock. */
DISOPT_API disopt_status disopt_model_infer(disopt_model *model, const float *input, int n, int c, int h, int w,
                                            const disopt_outputs *outputs);

/* Shape of a named intermediate tensor for a given input size; fails with DISOPT_ERR_INVALID_ARGUMENT
 * for an unknown name. Names: "f1".."f5", "decoder" (teacher); "f1".."f5", "p4", "p5",
 * "decoder_sar", "decoder_rgb", "ffm" (student). */
DISOPT_API disopt_status disopt_model_tap_shape(const disopt_model *model, const char *name, int n, int h,
                                                int w, int shape_nchw[4]);

/* Wall time of the phases of the last disopt_model_infer call, in seconds (benchmarks): the input
 * check for NaN/Inf on the host (0 when the backend checks on the device), the upload, the network
 * (until the backend is idle), and the downloads of the outputs. */
typedef struct disopt_infer_timing {
    double check_s, upload_s, compute_s, download_s, total_s;
} disopt_infer_timing;
DISOPT_API disopt_status disopt_model_last_timing(const disopt_model *model, disopt_infer_timing *t);

/* Per-op timing for benchmarks. While on, every inference adds each node's wall time (the
 * backend is synchronised after each node, which costs a little on GPUs). */
DISOPT_API void disopt_model_set_profiling(disopt_model *model, int on);
/* Writes a text table of time and GFLOP/s per op category since the last report, then resets. */
DISOPT_API disopt_status disopt_model_profile_report(disopt_model *model, char *buf, size_t len);

/* ---------------------------------------------------------------- safetensors */
typedef enum disopt_dtype {
    DISOPT_DTYPE_F32 = 0,
    DISOPT_DTYPE_F16 = 1,
    DISOPT_DTYPE_BF16 = 2,
    DISOPT_DTYPE_I64 = 3,
    DISOPT_DTYPE_F64 = 4,
    DISOPT_DTYPE_I32 = 5,
    DISOPT_DTYPE_U8 = 6,
    DISOPT_DTYPE_UNKNOWN = 99
} disopt_dtype;

#define DISOPT_MAX_DIMS 8

typedef struct disopt_st disopt_st; /* an open safetensors file */

typedef struct disopt_st_tensor_info {
    const char *name;
    disopt_dtype dtype;
    int ndim;
    int64_t shape[DISOPT_MAX_DIMS];
    uint64_t offset; /* relative to the data section */
    uint64_t nbytes;
} disopt_st_tensor_info;

DISOPT_API disopt_status disopt_st_open(const char *path, disopt_st **out);
DISOPT_API disopt_status disopt_st_open_memory(const void *buf, size_t size, disopt_st **out);
DISOPT_API void disopt_st_close(disopt_st *st);
DISOPT_API int disopt_st_num_tensors(const disopt_st *st);
DISOPT_API const disopt_st_tensor_info *disopt_st_tensor(const disopt_st *st, int i);
DISOPT_API const disopt_st_tensor_info *disopt_st_find(const disopt_st *st, const char *name);
DISOPT_API int disopt_st_num_metadata(const disopt_st *st);
DISOPT_API void disopt_st_metadata_at(const disopt_st *st, int i, const char **key, const char **value);
DISOPT_API const char *disopt_st_metadata(const disopt_st *st, const char *key);
/* Reads a tensor converted to float32 (F32/F16/BF16/F64/I64/I32/U8 accepted). dst holds numel floats. */
DISOPT_API disopt_status disopt_st_read_f32(disopt_st *st, const disopt_st_tensor_info *t, float *dst,
                                            size_t numel);

typedef struct disopt_st_writer disopt_st_writer;
DISOPT_API disopt_status disopt_st_writer_create(disopt_st_writer **out);
DISOPT_API void disopt_st_writer_destroy(disopt_st_writer *w);
DISOPT_API disopt_status disopt_st_writer_set_metadata(disopt_st_writer *w, const char *key, const char *value);
/* data is float32; it is stored as dtype (F32, F16 or BF16 rounded to nearest even, or I64 for counters).
 * The data is copied. */
DISOPT_API disopt_status disopt_st_writer_add(disopt_st_writer *w, const char *name, disopt_dtype dtype, int ndim,
                                              const int64_t *shape, const float *data);
/* Writes atomically (temporary file + rename). */
DISOPT_API disopt_status disopt_st_writer_save(disopt_st_writer *w, const char *path);
/* Builds the file's bytes in memory instead; release *buf with disopt_free. */
DISOPT_API disopt_status disopt_st_writer_save_memory(disopt_st_writer *w, void **buf, size_t *size);
/* Releases memory the library handed out (disopt_st_writer_save_memory). */
DISOPT_API void disopt_free(void *p);

/* ---------------------------------------------------------------- deterministic weights */
/* "dwgen-1": the deterministic pseudo-random weights shared with testdata/gen/dwgen.py.
 * Fills a conv weight (fan_in = product of dims 1..3) or a conv bias. */
DISOPT_API void disopt_dwgen_conv_weight(const char *key, const int64_t shape[4], float *dst);
DISOPT_API void disopt_dwgen_conv_bias(const char *key, int64_t n, float *dst);

/* Builds the list of state-dict keys of an architecture (for tools and tests). */
typedef enum disopt_key_kind {
    DISOPT_KEY_CONV_WEIGHT = 0,
    DISOPT_KEY_CONV_BIAS,
    DISOPT_KEY_BN_WEIGHT,
    DISOPT_KEY_BN_BIAS,
    DISOPT_KEY_BN_MEAN,
    DISOPT_KEY_BN_VAR,
    DISOPT_KEY_BN_COUNT /* num_batches_tracked, int64 scalar, optional */
} disopt_key_kind;

typedef struct disopt_keylist disopt_keylist;
DISOPT_API disopt_status disopt_keylist_create(const disopt_model_config *cfg, disopt_keylist **out);
DISOPT_API void disopt_keylist_destroy(disopt_keylist *kl);
DISOPT_API int disopt_keylist_count(const disopt_keylist *kl);
DISOPT_API void disopt_keylist_at(const disopt_keylist *kl, int i, const char **name, disopt_key_kind *kind,
                                  int *ndim, int64_t shape[4]);

#ifdef __cplusplus
}
#endif
#endif /* DISOPT_H */
