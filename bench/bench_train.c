/*
 * bench_train - milliseconds per training step of the trainer (core/train/trainer.h): stage 2 (a student
 * distilled from its frozen teacher) or stage 1 (a teacher), on the CPU or one CUDA device, after warm-up,
 * on fresh random inputs (SAR-like and optical-like values, random 2-class targets), with the authors'
 * settings (dropout, drop-connect, SGD momentum 0.9 Nesterov, weight decay 1e-4, lr 5e-3).
 *   bench_train [-model student-b3] [-batch 8] [-size 512] [-steps 10] [-warmup 3] [-device cpu|cuda[:N]]
 *               [-threads N] [-math fp32|tf32|bf16] [-unfused] [-deterministic] [-profile]
 *               [-teacher auto|own|engine] [-teacher-serial] [-resident] [-no-inplace]
 * -math: the convs' and GEMMs' math on CUDA (dp_trainer_math; fp32: exact, the default).
 * -unfused: CUDA without the fused BN + activation pairs (cfg.cuda_unfused; the same bits, for A/B timing).
 * -teacher: where stage 2's frozen teacher runs (cfg.teacher_engine; auto: the inference engine with tf32/bf16).
 * -teacher-serial: the engine's teacher waited for before the student's forward (cfg.teacher_serial; A/B).
 * -no-inplace: not the BN + activation pairs whose dx takes dz's memory (cfg.cuda_fuse_no_inplace; A/B runs).
 * -resident: each step's batch put into the trainer's memory first (dp_trainer_set_batch, timed apart), so the
 *   timed step has no host-to-device transfer, as in bench_torch_train.py (its batch stays on the device).
 * -profile: one more step after the timed ones, node by node (waiting for each), by op category.
 * Prints the memory plan (dp_trainer_memory), every timed step's loss and time, and one summary line:
 *   model=... device=... math=... batch=... size=... ms_step_median=... ms_step_min=... planned_gib=...
 */
#include "internal.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* xorshift64*: bench inputs only */
static float urand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (float)((*s * 0x2545F4914F6CDD1DULL) >> 40) * 0x1p-24f;
}

int main(int argc, char **argv) {
    const char *model = "student-b3", *device = "cpu", *math = "fp32", *teacher = "auto";
    int batch = 8, size = 512, steps = 10, warmup = 3, threads = 1, random_on = 1, profile = 0, unfused = 0;
    int resident = 0, tserial = 0, noinplace = 0; /* -resident: each step's batch put in the trainer's memory first (dp_trainer_set_batch,
                       * timed apart): the step runs without transfers, as PyTorch's benchmark keeps its batch on
                       * the device */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-deterministic")) { random_on = 0; continue; }
        if (!strcmp(a, "-profile")) { profile = 1; continue; }
        if (!strcmp(a, "-unfused")) { unfused = 1; continue; }
        if (!strcmp(a, "-resident")) { resident = 1; continue; }
        if (!strcmp(a, "-teacher-serial")) { tserial = 1; continue; }
        if (!strcmp(a, "-no-inplace")) { noinplace = 1; continue; }
        if (!v) { fprintf(stderr, "bench_train: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "-model")) model = v;
        else if (!strcmp(a, "-batch")) batch = atoi(v);
        else if (!strcmp(a, "-size")) size = atoi(v);
        else if (!strcmp(a, "-steps")) steps = atoi(v);
        else if (!strcmp(a, "-warmup")) warmup = atoi(v);
        else if (!strcmp(a, "-device")) device = v;
        else if (!strcmp(a, "-threads")) threads = atoi(v);
        else if (!strcmp(a, "-math")) math = v;
        else if (!strcmp(a, "-teacher")) teacher = v;
        else { fprintf(stderr, "bench_train: unknown option %s\n", a); return 2; }
        i++;
    }
    if (batch < 1 || size < 16 || size % 16 || steps < 1 || warmup < 0) {
        fprintf(stderr, "bench_train: bad batch / size / steps\n");
        return 2;
    }
    disopt_model_config mc;
    if (disopt_model_config_parse(model, &mc) != DISOPT_OK) {
        fprintf(stderr, "bench_train: %s\n", disopt_last_error());
        return 2;
    }
    dp_trainer_config cfg = dp_trainer_config_authors(&mc, batch, size, size);
    cfg.dropout = cfg.drop_connect = random_on;
    cfg.nthreads = threads;
    cfg.cuda_unfused = unfused;
    cfg.teacher_serial = tserial;
    cfg.cuda_fuse_no_inplace = noinplace;
    if (!strncmp(device, "cuda", 4)) {
        cfg.cuda = 1;
        cfg.cuda_device = device[4] == ':' ? atoi(device + 5) : 0;
    }
    if (!strcmp(math, "tf32")) cfg.cuda_math = DP_TRAINER_MATH_TF32;
    else if (!strcmp(math, "bf16")) cfg.cuda_math = DP_TRAINER_MATH_BF16;
    else if (strcmp(math, "fp32")) { fprintf(stderr, "bench_train: -math fp32|tf32|bf16\n"); return 2; }
    if (!strcmp(teacher, "own")) cfg.teacher_engine = DP_TRAINER_TEACHER_OWN;
    else if (!strcmp(teacher, "engine")) cfg.teacher_engine = DP_TRAINER_TEACHER_ENGINE;
    else if (strcmp(teacher, "auto")) { fprintf(stderr, "bench_train: -teacher auto|own|engine\n"); return 2; }
    dp_trainer *t = NULL;
    const double t0 = now();
    if (dp_trainer_create(&cfg, NULL, NULL, &t) != DISOPT_OK) {
        fprintf(stderr, "bench_train: %s\n", disopt_last_error());
        return 1;
    }
    printf("# created in %.2f s\n", now() - t0);
    dp_trainer_memory_info mi;
    dp_trainer_memory(t, &mi);
    const double G = 1024.0 * 1024.0 * 1024.0;
    printf("# memory plan (GiB): params %.3f grads %.3f optimizer %.3f buffers %.3f activations+gradients %.3f "
           "(unplanned %.3f) saved %.3f workspace %.3f teacher %.3f total %.3f\n",
           mi.params_bytes / G, mi.grads_bytes / G, mi.state_bytes / G, mi.buffers_bytes / G, mi.arena_bytes / G,
           mi.unplanned_bytes / G, mi.saved_bytes / G, mi.workspace_bytes / G, mi.teacher_bytes / G,
           mi.total_bytes / G);
    const size_t px = (size_t)batch * size * size, nx = px * (size_t)mc.in_channels;
    float *x = malloc(nx * sizeof *x), *xt = malloc(px * 4 * sizeof *xt);
    int32_t *y = malloc(px * sizeof *y);
    double *ms = malloc((size_t)steps * sizeof *ms), *up = calloc((size_t)steps, sizeof *up);
    if (!x || !xt || !y || !ms || !up) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (int s = -warmup; s < steps; s++) {
        /* fresh inputs every step (normalised-range values; the buildings a smooth pattern) */
        for (size_t i = 0; i < nx; i++) x[i] = 2.0f * urand(&seed) - 1.0f;
        for (size_t i = 0; i < px * 4; i++) xt[i] = 2.0f * urand(&seed) - 1.0f;
        const int ph = (int)(urand(&seed) * 64);
        for (size_t i = 0; i < px; i++) y[i] = (int32_t)((((i % size) + ph) / 37 + (i / size % size) / 41) % 2);
        dp_trainer_loss L;
        const float *sx = x, *sxt = mc.arch == DISOPT_ARCH_STUDENT ? xt : NULL;
        const int32_t *sy = y;
        if (resident) {
            const double u = now();
            if (dp_trainer_set_batch(t, sx, sxt, sy, NULL) != DISOPT_OK) {
                fprintf(stderr, "bench_train: batch %d: %s\n", s, disopt_last_error());
                return 1;
            }
            if (s >= 0) up[s] = (now() - u) * 1e3;
            sx = sxt = NULL;
            sy = NULL;
        }
        const double a = now();
        if (dp_trainer_step(t, sx, sxt, sy, NULL, 5e-3, &L) != DISOPT_OK) {
            fprintf(stderr, "bench_train: step %d: %s\n", s, disopt_last_error());
            return 1;
        }
        const double dt = (now() - a) * 1e3; /* (the update synchronises the device) */
        const double total = L.stage == 2 ? L.s2.total : L.s1.total;
        if (!isfinite(total)) {
            fprintf(stderr, "bench_train: step %d: loss %g\n", s, total);
            return 1;
        }
        if (s >= 0) ms[s] = dt;
        printf("# step %3d%s: %.2f ms, loss %.6f\n", s, s < 0 ? " (warm-up)" : "", dt, total);
    }
    if (profile) {
        char rep[8192];
        dp_trainer_set_profiling(t, 1);
        dp_trainer_loss L;
        if (dp_trainer_step(t, x, mc.arch == DISOPT_ARCH_STUDENT ? xt : NULL, y, NULL, 5e-3, &L) != DISOPT_OK) {
            fprintf(stderr, "bench_train: profiled step: %s\n", disopt_last_error());
            return 1;
        }
        dp_trainer_profile_report(t, rep, sizeof rep);
        printf("# one step, node by node (each waited for):\n%s", rep);
        dp_trainer_set_profiling(t, 0);
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp);
    qsort(up, (size_t)steps, sizeof *up, cmp);
    printf("model=%s device=%s math=%s%s%s teacher=%s%s%s batch=%d size=%d dropout=%s ms_step_median=%.2f "
           "ms_step_min=%.2f planned_gib=%.3f",
           model, device, math, unfused ? " unfused" : "", noinplace ? " no-inplace" : "", teacher, tserial ? " serial" : "", resident ? " resident" : "",
           batch, size,
           random_on ? "on" : "off", ms[steps / 2], ms[0], mi.total_bytes / G);
    if (resident)
        printf(" (set_batch median %.2f ms, not in the step)", up[steps / 2]);
    printf("\n");
    dp_trainer_destroy(t);
    free(x);
    free(xt);
    free(y);
    free(ms);
    free(up);
    return 0;
}
