/*
 * trainer.h - one training step through the whole network on the CPU (issue 5), internal API.
 *
 * Conventions:
 *  - The network is dp_graph_build_train's graph of the model config (same architecture and state-dict
 *    names as the inference graph; BN, activations, dropout and drop-connect as their own nodes).
 *  - Parameters live in ONE flat float arena (every conv weight / bias and BN weight / bias, 16-float
 *    aligned), their gradients in a second arena of the same layout, the optimizer state in optim.h's
 *    arena; the optimizer's segments cover the parameters the forward pass uses (EfficientNet's
 *    _conv_head / _bn1 get no gradient and, as in PyTorch where their .grad stays None, no update).
 *    BN running means / variances are buffers in a third arena.
 *  - Memory plan: the trained network's activations and tensor gradients share one arena planned by
 *    liveness over the step (forward, loss, backward): an activation lives until its last reader (forward
 *    consumers, the loss, the backward kernels that read it), a gradient from its first writer to its
 *    producer's backward. The frozen teacher's activations share one arena planned by forward liveness
 *    (its logits, f4, f5 and decoder output kept to the end). Per BN node its batch mean and 1/std, per
 *    dropout / drop-connect node its mask. dp_trainer_memory reports the sizes.
 *  - Stage 1 (teacher-bN): forward in training mode -> dp_loss_stage1 -> backward -> optimizer.
 *    Stage 2 (student-bN): the frozen teacher (teacher-bN of the same variant and channels) runs its
 *    forward in eval mode (BN with running statistics, no dropout) on the optical image; the student runs
 *    in training mode on the SAR image; dp_loss_stage2 with the spec's feature pairs
 *    (p4, teacher f4), (p5, teacher f5), (decoder_rgb, teacher decoder) -> backward -> optimizer.
 *  - Random numbers (dropout / drop-connect masks) come from one dp_rng seeded by the config, drawn
 *    node by node in forward order; dropout and drop-connect can be switched off (identity).
 *  - Precision: float32 (training), or double (cfg.f64: the same step with the kernels' double
 *    instantiations, the reference the goldens check the math with); inputs are float either way.
 *  - Place: the CPU, or one CUDA device (cfg.cuda: the same step with the CUDA module's training ops,
 *    trainer_cu.h, float32; the arenas on the device, host copies for the accessors).
 *  - Threads: cfg.nthreads (the trainer's own dp_pool; 1 = the caller's thread), bitwise the same
 *    results on any count; errors through dp_error(); nothing aborts; no global state.
 */
#ifndef DISOPT_TRAIN_TRAINER_H
#define DISOPT_TRAIN_TRAINER_H

#include "../internal.h"
#include "loss.h"
#include "optim.h"
#include "rng.h"

#include <stddef.h>
#include <stdint.h>

/* cfg.cuda_math (the values of train_ops.h's DP_CU_TR_MATH_*; see dp_cu_tr_set_math): FP32 exact, TF32 or BF16
 * tensor-core math in the convs and pointwise GEMMs, every tensor FP32 in memory. The CPU trains in FP32 (or
 * double) only: another value with cfg.cuda == 0 is an error. */
typedef enum dp_trainer_math { DP_TRAINER_MATH_FP32 = 0, DP_TRAINER_MATH_TF32 = 1, DP_TRAINER_MATH_BF16 = 2 } dp_trainer_math;

/* cfg.teacher_engine. OWN: the trainer's eval-mode forward (BN as its own op, every tensor float32: the exact
 * reference). ENGINE: the inference engine (core/model.c) on the trainer's backend and device, BN folded into
 * the convs, CUDA graphs, own fused kernels; its outputs (logits, f4, f5, decoder) are written as float32
 * into the trainer's memory (on the device for CUDA; no host copy). The engine's precision follows
 * cfg.cuda_math: FP32, TF32, or BF16 activations and weights for BF16. AUTO (0): ENGINE on CUDA with
 * TF32 / BF16 math, OWN otherwise. float32 trainers only (f64 runs use OWN). */
typedef enum dp_trainer_teacher {
    DP_TRAINER_TEACHER_AUTO = 0,
    DP_TRAINER_TEACHER_OWN = 1,
    DP_TRAINER_TEACHER_ENGINE = 2
} dp_trainer_teacher;

typedef struct dp_trainer_config {
    disopt_model_config model; /* teacher-bN: stage 1; student-bN: stage 2 */
    int n, h, w;               /* batch and crop size of every step */
    int dropout;               /* nonzero: Dropout(0.5) of the ASPP projection active (training default) */
    int drop_connect;          /* nonzero: MBConv drop-connect active (training default) */
    uint64_t seed;             /* the masks' Philox stream */
    int f64;                   /* nonzero: every arena and kernel in double (reference runs) */
    int nthreads;              /* kernel threads (the trainer's pool); <= 1: the caller's thread */
    int cuda;                  /* nonzero: every arena on CUDA device cuda_device, the module's training ops
                                * (float32 only; see "CUDA" below) */
    int cuda_device;
    int cuda_math;             /* DP_TRAINER_MATH_*: the convs' and GEMMs' math on CUDA (0: exact FP32) */
    int cuda_unfused;          /* nonzero: no fused BN + activation pairs on CUDA (A/B runs and tests: the fused
                                * pairs give the same bits) */
    int cuda_fuse_no_inplace;  /* nonzero: fuse only the pairs whose BN input gradient has memory of its own, not those
                                * whose gradient the plan puts in the activation's output gradient's memory (by
                                * default those are fused too, written in place: 163 pairs in student B3 + teacher
                                * instead of 79, the same bits, test_fused_pairs); for A/B runs */
    int teacher_engine;        /* stage 2, DP_TRAINER_TEACHER_*: where the frozen teacher's forward runs */
    int teacher_serial;        /* ENGINE: nonzero waits for the teacher before the student's forward starts (default:
                                * both queued at once, on CUDA they run side by side on two streams) */
    dp_optim_config optim;
    dp_loss_weights loss;
} dp_trainer_config;

/* the authors' settings: dropout and drop-connect on, SGD of optim.h, loss weights of loss.h; 1 thread */
dp_trainer_config dp_trainer_config_authors(const disopt_model_config *model, int n, int h, int w);

typedef struct dp_trainer_loss {
    int stage; /* 1 or 2 */
    dp_stage1_terms s1;
    dp_stage2_terms s2;
} dp_trainer_loss;

typedef struct dp_trainer_memory_info {
    size_t params_bytes, grads_bytes, state_bytes, buffers_bytes;
    size_t arena_bytes;     /* the trained network's activations and tensor gradients, planned together */
    size_t unplanned_bytes; /* for comparison: every activation and tensor gradient of the step kept */
    size_t saved_bytes;     /* BN batch statistics and masks */
    size_t workspace_bytes;
    size_t teacher_bytes; /* the frozen teacher: weights, buffers, activations (stage 2; with
                           * DP_TRAINER_TEACHER_ENGINE only the four outputs, the engine's own memory not counted) */
    size_t total_bytes;
} dp_trainer_memory_info;

typedef struct dp_trainer dp_trainer;

/* weights: safetensors of the trained model (a state dict, "module." prefixes accepted), or NULL for
 * fresh dwgen-1 weights (convs as core/dwgen.c; BN weight 1 + 0.25 v and bias 0.1 v with v the key's
 * dwgen-1 uniforms, as testdata/gen/dwgen.py; running mean 0, variance 1).
 * teacher_weights: stage 2 only, the frozen teacher (same rules, NULL = dwgen-1). */
disopt_status dp_trainer_create(const dp_trainer_config *cfg, const char *weights, const char *teacher_weights,
                                dp_trainer **out);
void dp_trainer_destroy(dp_trainer *t);

/* Forward (training mode), loss and backward: the gradient arena is overwritten, the BN running
 * statistics are updated. x: the model's input, n x in_channels x h x w; x_teacher: the teacher's
 * input (stage 2; same shape); target: n x h x w class indices; valid: NULL or one byte per pixel. */
disopt_status dp_trainer_forward_backward(dp_trainer *t, const float *x, const float *x_teacher, const int32_t *target,
                                          const uint8_t *valid, dp_trainer_loss *loss);
/* The resident batch: x, x_teacher (stage 2), target and valid (NULL: every pixel) copied into the trainer's
 * memory (uploaded on CUDA), where they stay until the next call. forward_backward / step with x, x_teacher,
 * target and valid all NULL run from it (no transfer in the step: the way PyTorch's benchmark keeps its batch on
 * the device, and what a loader that fills the next batch while a step runs needs). */
disopt_status dp_trainer_set_batch(dp_trainer *t, const float *x, const float *x_teacher, const int32_t *target,
                                   const uint8_t *valid);
/* One optimizer update of every used parameter with the gradients of the last forward_backward. */
disopt_status dp_trainer_update(dp_trainer *t, double lr);
/* forward_backward + update */
disopt_status dp_trainer_step(dp_trainer *t, const float *x, const float *x_teacher, const int32_t *target,
                              const uint8_t *valid, double lr, dp_trainer_loss *loss);

/* A state-dict entry of the trained model: its values (parameters and BN buffers), its gradient (NULL for
 * buffers) and element count. NULL when the key does not exist, holds no data (num_batches_tracked) or
 * the trainer runs in the other precision (_f64: cfg.f64 set). */
float *dp_trainer_param(dp_trainer *t, const char *key, float **grad, int64_t *numel);
double *dp_trainer_param_f64(dp_trainer *t, const char *key, double **grad, int64_t *numel);
/* A named tensor of the last forward ("logits", "logit_sar", "p4", "f5", "decoder", ...; named tensors stay
 * valid after backward) of the trained network (teacher = 0) or of the frozen teacher (teacher = 1: only "logits",
 * "f4", "f5", "decoder" stay valid, the rest of its arena is reused), NCHW; NULL when absent (or in the other
 * precision). */
const float *dp_trainer_tensor(const dp_trainer *t, int teacher, const char *name, int *c, int *h, int *w);
const double *dp_trainer_tensor_f64(const dp_trainer *t, int teacher, const char *name, int *c, int *h, int *w);
void dp_trainer_memory(const dp_trainer *t, dp_trainer_memory_info *m);

/* Writes the trained model's state dict as safetensors (F32; every parameter and BN running statistic
 * under the authors' names, num_batches_tracked = the training forwards this trainer ran, as I64) with
 * metadata arch (teacher / student) and variant (bN), so that dp_trainer_create and the inference
 * loader read it back. */
disopt_status dp_trainer_save(const dp_trainer *t, const char *path);
/* The same state dict and metadata added to a caller's writer (which may add more metadata and save). */
disopt_status dp_trainer_add_state_dict(const dp_trainer *t, disopt_st_writer *w);

/* ---------------------------------------------------------------- state (checkpoints, issue 6) */
/* Everything a training run's future depends on, as pointers into the trainer (read to save, written to
 * restore): the parameter arena (trainable kinds, optimizer segments' layout), the BN running-statistics
 * arena, the optimizer state (n_opt_state arrays of n_params elements back to back) and its step counter,
 * the mask RNG, and the training forwards run (num_batches_tracked). Elements are esz bytes (float, or
 * double with cfg.f64); alignment gaps inside the arenas are part of them (zero). */
typedef struct dp_trainer_state {
    size_t esz;
    void *params;
    size_t n_params;
    void *bufs;
    size_t n_bufs;
    void *opt_state;
    int n_opt_state;
    int64_t *opt_step;
    dp_rng *rng;
    int64_t *forwards;
} dp_trainer_state;
disopt_status dp_trainer_get_state(dp_trainer *t, dp_trainer_state *st);
const dp_trainer_config *dp_trainer_get_config(const dp_trainer *t);

/* CUDA (cfg.cuda): the arenas live on the device; dp_trainer_param, dp_trainer_tensor and dp_trainer_get_state
 * return HOST copies, current when returned (param: that entry and its gradient; get_state: the parameter,
 * buffer and optimizer arenas); writes into them reach the device with dp_trainer_push. On the CPU these
 * pointers are the arenas themselves and dp_trainer_push does nothing. */
disopt_status dp_trainer_push(dp_trainer *t);
/* CUDA: the parameter, buffer and optimizer arenas -> their host copies (all of them; push uploads all of
 * them, so pull before writing a part of them) */
disopt_status dp_trainer_pull(dp_trainer *t);
/* nonzero when the trainer runs on CUDA */
int dp_trainer_on_cuda(const dp_trainer *t);
/* the BN + activation pairs that run as one op (CUDA, unless cfg.cuda_unfused): trained net and teacher */
int dp_trainer_fused_pairs(const dp_trainer *t);

/* ---------------------------------------------------------------- data parallelism (CUDA, NCCL) */
/* Ranks: n float32 CUDA trainers of the same configuration, seed and weights, each on its own device
 * (cfg.cuda_device), driven by one process, each rank from its own host thread. A step of rank i:
 *   dp_trainer_forward_backward(t_i, its own share of the global batch, ...);
 *   dp_trainer_allreduce_grads(t_i, c_i);   every rank's gradient arena := the mean over the ranks
 *   dp_trainer_update(t_i, lr);             the same update on every rank, so the weights stay equal
 * and once before the first step (and after restoring a checkpoint into rank 0 only):
 *   dp_trainer_broadcast_state(t_i, c_i, 0); parameters, BN running statistics and optimizer state of rank 0.
 * As PyTorch's DistributedDataParallel without SyncBatchNorm: BN uses each rank's own batch statistics;
 * the running statistics are rank 0's whenever broadcast_state runs (DDP broadcasts them every step).
 * The mean of the ranks' gradients is the gradient of the global batch's loss when the ranks have equal
 * shares (every loss here is a mean over the batch). With one rank every call leaves the arenas as they
 * are, bit for bit. NCCL (libnccl.so.2) is loaded on first use: DISOPT_ERR_UNSUPPORTED without it. */
typedef struct dp_trainer_comm dp_trainer_comm;
/* comms[i] for ranks[i]; the ranks' devices must differ */
disopt_status dp_trainer_comm_create(dp_trainer *const *ranks, int n, dp_trainer_comm **comms);
void dp_trainer_comm_destroy(dp_trainer_comm *c);
disopt_status dp_trainer_allreduce_grads(dp_trainer *t, dp_trainer_comm *c);
disopt_status dp_trainer_broadcast_state(dp_trainer *t, dp_trainer_comm *c, int root);

/* Profiling (benchmarks): with it on, every node's work is waited for (CUDA: the stream synchronised) and
 * its time added to a category (teacher forward; per direction: depthwise, 1x1, kxk convs, convs on 1x1
 * maps, BN, activations, the rest; the loss, the optimizer); the report lists them and clears them. */
enum {
    DP_TR_PROF_TEACHER,
    DP_TR_PROF_CONV_DW_F, /* then 1x1, kxk, 1px, BN, act, other: forward */
    DP_TR_PROF_CONV_DW_B = DP_TR_PROF_CONV_DW_F + 7, /* the same seven: backward */
    DP_TR_PROF_LOSS = DP_TR_PROF_CONV_DW_B + 7,
    DP_TR_PROF_OPTIM,
    DP_TR_PROF_N
};
void dp_trainer_set_profiling(dp_trainer *t, int on);
void dp_trainer_profile_report(dp_trainer *t, char *buf, size_t len);

/* Forward of the trained network in eval mode (BN with running statistics, no dropout / drop-connect, no
 * RNG draw, running statistics and num_batches_tracked untouched); x: n x in_channels x h x w of the
 * config. The outputs are read with dp_trainer_tensor (teacher = 0): "logits" (the fused logits of a
 * student, the logits of a teacher), "logit_sar", "logit_rgb". */
disopt_status dp_trainer_forward_eval(dp_trainer *t, const float *x);

#endif
