/*
 * checkpoint.h - training checkpoints and model files of a dp_trainer (issue 6), internal API.
 *
 * Conventions:
 *  - A checkpoint is a safetensors file holding the trainer's whole state (dp_trainer_get_state) as raw
 *    1-D tensors in the trainer's precision (F32, or F64 with cfg.f64), so that a restore is bit-exact:
 *      "trainer.params", "trainer.bufs" (the arenas, alignment gaps included),
 *      "optim.<name>" per optimizer state array (momentum_buffer / exp_avg / exp_avg_sq);
 *    and as metadata (decimal strings): disopt_checkpoint=1, arch, variant, precision (f32 / f64), n_params,
 *    n_bufs, opt_step, rng_seed, rng_counter, forwards, plus the caller's own pairs (the training loop's
 *    epoch, step, best score, run identity, ...).
 *  - Files are written atomically: a temporary file beside the target, fsync, rename, fsync of the
 *    directory. A reader sees the old file or the new one, never a torn one (kill -9 at any moment).
 *  - dp_checkpoint_load checks that the file fits the trainer (architecture, precision, sizes) before it
 *    writes anything into it.
 *  - Errors: disopt_status + dp_error; nothing aborts; no global state.
 */
#ifndef DISOPT_TRAIN_CHECKPOINT_H
#define DISOPT_TRAIN_CHECKPOINT_H

#include "trainer.h"

typedef struct dp_kv {
    const char *key, *value;
} dp_kv;

/* Writes the builder's image to path atomically (temp + fsync + rename + directory fsync). */
disopt_status dp_write_atomic(disopt_st_writer *w, const char *path);

disopt_status dp_checkpoint_save(dp_trainer *t, const char *path, const dp_kv *meta, int n_meta);
/* Restores the trainer's state; *st (optional) receives the open file for reading the caller's metadata
 * (close it with disopt_st_close). */
disopt_status dp_checkpoint_load(dp_trainer *t, const char *path, disopt_st **st);

/* The model file: the state dict (dp_trainer_add_state_dict) with the caller's metadata, atomically. */
disopt_status dp_model_save(const dp_trainer *t, const char *path, const dp_kv *meta, int n_meta);

/* Loads every tensor of a safetensors file whose name ("module." stripped) and shape match a trained
 * parameter or BN buffer of the trainer (a partial model, e.g. ImageNet EfficientNet weights);
 * *matched / *skipped count the file's tensors that were / were not used. */
disopt_status dp_trainer_init_from(dp_trainer *t, const char *path, int *matched, int *skipped);

#endif
