/*
 * disopt_train.h - training runs of DisOptNet from GDAL rasters (issue 6): what gdal_disopt_train does,
 * as one library call. Part of libdisopt_raster (GDAL-facing). Same conventions as disopt.h: status +
 * thread-local message, nothing printed (text goes through the log callback), no global state.
 *
 * A run: check every input (sample list, rasters, grids, teacher, output folder) -> build the trainer ->
 * epochs of training steps on random crops (dataset.h's loader) with the authors' poly schedule ->
 * validation each epoch (centre crops, eval mode; pixel Dice / IoU / precision / recall of the argmax of
 * the fused logits, or of the teacher's logits) -> a CSV log row and an atomic checkpoint per epoch ->
 * the model file (safetensors, with metadata the BUILDINGS driver reads: arch, variant, bands,
 * norm_scale / norm_mean / norm_std, plus the training options, the data list hash, epochs and the best
 * validation score). --resume continues from a checkpoint bit for bit as if never interrupted.
 */
#ifndef DISOPT_TRAIN_H
#define DISOPT_TRAIN_H

#include "disopt.h"
#include "disopt_raster.h"

#include <gdal.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DISOPT_MAX_GPUS 16

typedef enum disopt_optimizer { DISOPT_OPTIM_SGD = 1, DISOPT_OPTIM_ADAMW = 2 } disopt_optimizer;
/* the math of the convolutions and GEMMs when training on CUDA; every tensor stays float32 in memory */
typedef enum disopt_train_math {
    DISOPT_TRAIN_MATH_FP32 = 0, /* exact float32 (no TF32) */
    DISOPT_TRAIN_MATH_TF32 = 1, /* TF32 tensor cores, float32 accumulation */
    DISOPT_TRAIN_MATH_BF16 = 2  /* the pointwise convs with bfloat16 operands, float32 accumulation; others TF32 */
} disopt_train_math;

typedef void (*disopt_train_log_fn)(void *user, const char *line);

typedef struct disopt_train_options {
    int stage;                  /* 1: optical (the teacher), 2: distill (the student, frozen teacher) */
    const char *list;           /* CSV sample list (sar,optical,label[,split][,rotate180]) */
    const char *val_list;       /* optional: every sample of it is a validation sample */
    const char *teacher;        /* stage 2: the stage-1 model (safetensors) */
    const char *init;           /* optional: a (partial) model whose matching keys initialise the weights */
    const char *resume;         /* optional: a checkpoint to continue from */
    const char *output;         /* the model file; OUTPUT minus ".safetensors" + ".ckpt.safetensors" / ".log.csv" */
    const char *log_csv;        /* optional: the CSV log's path instead */
    int variant;                /* EfficientNet b<variant> (3) */
    int epochs;                 /* 200 */
    int batch;                  /* 16 (stage 1) / 8 (stage 2) */
    int crop;                   /* 512, a multiple of 32 */
    double lr;                  /* 5e-3 */
    disopt_optimizer optimizer; /* SGD (Nesterov) */
    double weight_decay;        /* 1e-4 */
    double momentum;            /* 0.9 (SGD) */
    int threads;                /* compute threads (1) */
    int loader_threads;         /* sample loader threads (2); results do not depend on it */
    uint64_t seed;              /* 0 */
    int f64;                    /* debugging: the whole run in double */
    disopt_backend_kind device; /* CPU, or CUDA (float32; the trainer on GPU `gpu`) */
    int gpu;                    /* CUDA device index (0) */
    disopt_train_math math;     /* CUDA only: FP32 (exact, the default), TF32 or BF16 math */
    int n_gpus;                 /* >= 1: data parallelism over gpus[0..n_gpus) through NCCL (gpu ignored): one rank
                                 * per GPU, each batch split evenly (batch % n_gpus == 0); 1: the same path with one
                                 * rank (gives the plain run's result, bit for bit) */
    int gpus[DISOPT_MAX_GPUS];
    int steps_per_epoch;        /* 0: training samples / batch */
    int dropout, drop_connect;  /* 1, 1 */
    int rotate180;              /* -1: the list's rotate180 column; 0: none; 1: every sample */
    int sar_bands[DISOPT_MAX_BANDS], n_sar_bands; /* 0: bands 1..4 */
    int opt_bands[DISOPT_MAX_BANDS], n_opt_bands;
    disopt_complex_mode complex_mode;      /* SLC bands: refused (default) or converted */
    double min_area;                       /* label polygons <= this many m^2 are dropped (20) */
    float norm_scale, norm_mean, norm_std; /* the authors': 1/255, 0.5, 0.125 */
    disopt_train_log_fn log;               /* optional: one line per epoch and notes */
    void *log_user;
    GDALProgressFunc progress; /* optional: over all steps of the run */
    void *progress_arg;
} disopt_train_options;

/* The authors' defaults for a stage (1 or 2). */
DISOPT_API void disopt_train_options_init(disopt_train_options *o, int stage);
DISOPT_API disopt_status disopt_train_run(const disopt_train_options *o);

#ifdef __cplusplus
}
#endif
#endif /* DISOPT_TRAIN_H */
