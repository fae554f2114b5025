/* bench_env.h - benchmark-only engine settings from the environment, shared by the bench tools:
 * DISOPT_BENCH_BACKEND=cuda (the GPU backend), DISOPT_BENCH_PRECISION=tf32|fp16|bf16. */
#ifndef DISOPT_BENCH_ENV_H
#define DISOPT_BENCH_ENV_H

#include "disopt.h"

#include <stdlib.h>
#include <string.h>

static inline void bench_engine_env(disopt_engine_options *eo) {
    const char *be = getenv("DISOPT_BENCH_BACKEND");
    if (be && strcmp(be, "cuda") == 0) eo->backend = DISOPT_BACKEND_CUDA;
    const char *pr = getenv("DISOPT_BENCH_PRECISION");
    if (!pr) return;
    if (strcmp(pr, "tf32") == 0) eo->precision = DISOPT_PRECISION_TF32;
    if (strcmp(pr, "fp16") == 0) eo->precision = DISOPT_PRECISION_FP16;
    if (strcmp(pr, "bf16") == 0) eo->precision = DISOPT_PRECISION_BF16;
}

#endif
