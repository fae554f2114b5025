/*
 * train_run.c - disopt_train_run (include/disopt_train.h): a whole training run over GDAL rasters.
 */
#define _LARGEFILE64_SOURCE 1 /* VSIStatBufL is struct stat64 */
#include "disopt_train.h"

#include "dataset.h"
#include "disopt_io.h"
#include "internal.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

#include <cpl_conv.h>
#include <cpl_vsi.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void disopt_train_options_init(disopt_train_options *o, int stage) {
    memset(o, 0, sizeof *o);
    o->stage = stage == 1 ? 1 : 2;
    o->variant = 3;
    o->epochs = 200;
    o->batch = o->stage == 1 ? 16 : 8;
    o->crop = 512;
    o->lr = 5e-3;
    o->optimizer = DISOPT_OPTIM_SGD;
    o->weight_decay = 1e-4;
    o->momentum = 0.9;
    o->threads = 1;
    o->loader_threads = 2;
    o->seed = 0;
    o->device = DISOPT_BACKEND_CPU;
    o->dropout = 1;
    o->drop_connect = 1;
    o->rotate180 = -1;
    o->complex_mode = DISOPT_COMPLEX_ERROR;
    o->min_area = 20.0;
    o->norm_scale = 1.0f / 255.0f;
    o->norm_mean = 0.5f;
    o->norm_std = 0.125f;
}

static void logf_(const disopt_train_options *o, const char *fmt, ...) DP_PRINTF(2, 3);
static void logf_(const disopt_train_options *o, const char *fmt, ...) {
    if (!o->log)
        return;
    char b[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    o->log(o->log_user, b);
}

/* OUTPUT without a ".safetensors" ending, + suffix */
static char *derived(const char *out, const char *suffix) {
    size_t n = strlen(out);
    const char *ext = ".safetensors";
    size_t e = strlen(ext);
    if (n > e && strcmp(out + n - e, ext) == 0)
        n -= e;
    char *p = malloc(n + strlen(suffix) + 1);
    if (p) {
        memcpy(p, out, n);
        strcpy(p + n, suffix);
    }
    return p;
}

/* the output folder takes files: create and remove a probe */
static disopt_status check_writable(const char *out) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", CPLGetPath(out));
    if (!dir[0])
        snprintf(dir, sizeof dir, ".");
    VSIStatBufL st;
    if (VSIStatL(dir, &st) != 0 || !VSI_ISDIR(st.st_mode))
        return dp_error(DISOPT_ERR_IO, "output folder '%s' does not exist", dir);
    VSIStatBufL ost;
    if (VSIStatL(out, &ost) == 0 && !VSI_ISREG(ost.st_mode))
        return dp_error(DISOPT_ERR_IO, "output '%s' exists and is not a regular file", out);
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.disopt_probe_%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f)
        return dp_error(DISOPT_ERR_IO, "output folder '%s' is not writable: %s", dir, strerror(errno));
    int ok = fputs("probe", f) >= 0;
    ok = fclose(f) == 0 && ok;
    remove(probe);
    if (!ok)
        return dp_error(DISOPT_ERR_IO, "output folder '%s': write failed (disk full?)", dir);
    return DISOPT_OK;
}

static disopt_status check_teacher(const char *path, int variant) {
    VSIStatBufL st;
    if (VSIStatL(path, &st) != 0)
        return dp_error(DISOPT_ERR_IO, "teacher '%s' does not exist", path);
    disopt_weights *w = NULL;
    disopt_status s = disopt_weights_open(path, &w);
    if (s != DISOPT_OK)
        return dp_error_prefix(s, "teacher '%s'", path);
    disopt_weights_report r;
    s = disopt_weights_check(w, NULL, NULL, &r);
    disopt_weights_close(w);
    if (s != DISOPT_OK)
        return dp_error_prefix(s, "teacher '%s'", path);
    char cfg[64];
    disopt_model_config_format(&r.config, cfg, sizeof cfg);
    if (r.config.arch != DISOPT_ARCH_TEACHER)
        return dp_error(DISOPT_ERR_INPUT,
                        "teacher '%s' is a %s model: --teacher takes a stage-1 model (gdal_disopt_train --stage "
                        "optical)",
                        path, cfg);
    if (r.missing || r.unexpected || r.bad_shape)
        return dp_error(DISOPT_ERR_INPUT,
                        "teacher '%s' does not load as %s (%d missing, %d unexpected keys, %d shapes)", path, cfg,
                        r.missing, r.unexpected, r.bad_shape);
    if (r.config.variant != variant)
        return dp_error(DISOPT_ERR_INPUT, "teacher '%s' is %s, the student is b%d: the encoders must match", path, cfg,
                        variant);
    if (r.config.in_channels != 4 || r.config.num_classes != 2)
        return dp_error(DISOPT_ERR_INPUT, "teacher '%s' has %d input channels and %d classes, 4 and 2 expected", path,
                        r.config.in_channels, r.config.num_classes);
    return DISOPT_OK;
}

static void bands_str(const int *b, int n, char *out, size_t len) {
    out[0] = '\0';
    if (n == 0) {
        snprintf(out, len, "default");
        return;
    }
    size_t o = 0;
    for (int i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%d", i ? "," : "", b[i]);
}

/* FNV-1a 64 of a file's bytes (the teacher's identity) */
static disopt_status file_fnv(const char *path, uint64_t *h) {
    VSILFILE *f = VSIFOpenL(path, "rb");
    if (!f)
        return dp_error(DISOPT_ERR_IO, "%s: cannot open", path);
    unsigned char *buf = malloc(1 << 20);
    if (!buf) {
        VSIFCloseL(f);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    uint64_t v = 0xcbf29ce484222325ULL;
    size_t n;
    while ((n = VSIFReadL(buf, 1, 1 << 20, f)) > 0)
        for (size_t i = 0; i < n; i++) {
            v ^= buf[i];
            v *= 0x100000001b3ULL;
        }
    free(buf);
    VSIFCloseL(f);
    *h = v;
    return DISOPT_OK;
}

/* Everything that decides the run's numbers (not the thread counts): stored in checkpoints, compared at resume. */
static void identity(const disopt_train_options *o, uint64_t data_hash, uint64_t teacher_hash, int64_t iters, char *out,
                     size_t len) {
    char sb[128], ob[128], gpus[32] = "";
    if (o->n_gpus > 1) /* the ranks' batch statistics and masks differ from one GPU's: part of the run */
        snprintf(gpus, sizeof gpus, " ranks=%d", o->n_gpus);
    bands_str(o->sar_bands, o->n_sar_bands, sb, sizeof sb);
    bands_str(o->opt_bands, o->n_opt_bands, ob, sizeof ob);
    snprintf(out, len,
             "stage=%s arch=%s-b%d epochs=%d batch=%d crop=%d lr=%.17g optimizer=%s weight_decay=%.17g "
             "momentum=%.17g seed=%" PRIu64 " steps_per_epoch=%" PRId64 " dropout=%d drop_connect=%d precision=%s "
             "rotate180=%d sar_bands=%s optical_bands=%s complex=%d min_area=%.17g norm=%.9g/%.9g/%.9g "
             "data_fnv1a64=%016" PRIx64 " teacher_fnv1a64=%016" PRIx64 "%s",
             o->stage == 1 ? "optical" : "distill", o->stage == 1 ? "teacher" : "student", o->variant, o->epochs,
             o->batch, o->crop, o->lr, o->optimizer == DISOPT_OPTIM_ADAMW ? "adamw" : "sgd", o->weight_decay,
             o->momentum, o->seed, iters, o->dropout, o->drop_connect, o->f64 ? "fp64" : "fp32", o->rotate180, sb, ob,
             (int)o->complex_mode, o->min_area, (double)o->norm_scale, (double)o->norm_mean, (double)o->norm_std,
             data_hash, teacher_hash, gpus);
}

typedef struct {
    double tp, fp, fn, tn;
    double dice_authors_sum; /* per sample: (2 |P n G| + 1) / (|P| + |G| + 1), the authors' dice_coeff (smooth 1) */
    int samples;
} conf_mat;

static disopt_status validate(dp_trainer *t, dp_loader *vl, int f64, int crop, conf_mat *cm) {
    memset(cm, 0, sizeof *cm);
    const int64_t nb = dp_loader_batches(vl);
    DP_TRY(dp_loader_begin(vl, 0, 0, nb));
    const size_t P = (size_t)crop * crop;
    for (int64_t b = 0; b < nb; b++) {
        const dp_batch *B;
        DP_TRY(dp_loader_next(vl, &B));
        DP_TRY(dp_trainer_forward_eval(t, B->x));
        int c = 0, h = 0, w = 0;
        const float *L32 = f64 ? NULL : dp_trainer_tensor(t, 0, "logits", &c, &h, &w);
        const double *L64 = f64 ? dp_trainer_tensor_f64(t, 0, "logits", &c, &h, &w) : NULL;
        if ((!L32 && !L64) || c != 2 || (size_t)h * (size_t)w != P)
            return dp_error(DISOPT_ERR_INTERNAL, "validation: logits missing");
        for (int n = 0; n < B->n_real; n++) {
            double si = 0, sp = 0, sg = 0;
            for (size_t p = 0; p < P; p++) {
                if (!B->valid[(size_t)n * P + p])
                    continue;
                const size_t i0 = ((size_t)n * 2) * P + p, i1 = i0 + P;
                const int pred = f64 ? L64[i1] > L64[i0] : L32[i1] > L32[i0]; /* argmax: first max wins ties */
                const int y = B->target[(size_t)n * P + p] != 0;
                si += pred && y;
                sp += pred;
                sg += y;
                if (pred && y)
                    cm->tp++;
                else if (pred)
                    cm->fp++;
                else if (y)
                    cm->fn++;
                else
                    cm->tn++;
            }
            cm->dice_authors_sum += (2.0 * si + 1.0) / (sp + sg + 1.0);
            cm->samples++;
        }
    }
    dp_loader_end(vl);
    return DISOPT_OK;
}

static double ratio(double a, double b, double empty) { return b > 0 ? a / b : empty; }

static disopt_status rewrite_log(const char *path, int64_t keep_epochs, const char *header) {
    /* keeps the header and the rows of epochs 1..keep_epochs (a resumed run redoes the rest) */
    FILE *f = fopen(path, "rb");
    char *kept = NULL;
    size_t kn = 0;
    if (f) {
        char line[4096];
        int first = 1;
        while (fgets(line, sizeof line, f)) {
            long long e = first ? 0 : strtoll(line, NULL, 10);
            if (!first && (e < 1 || e > keep_epochs))
                continue;
            first = 0;
            size_t l = strlen(line);
            char *nk = realloc(kept, kn + l + 1);
            if (!nk) {
                free(kept);
                fclose(f);
                return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
            }
            kept = nk;
            memcpy(kept + kn, line, l + 1);
            kn += l;
        }
        fclose(f);
    }
    f = fopen(path, "wb");
    if (!f) {
        free(kept);
        return dp_error(DISOPT_ERR_IO, "%s: cannot write the log: %s", path, strerror(errno));
    }
    if (kept && kn)
        fputs(kept, f);
    else
        fprintf(f, "%s\n", header);
    free(kept);
    if (fclose(f) != 0)
        return dp_error(DISOPT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return DISOPT_OK;
}

static disopt_status append_log(const char *path, const char *row) {
    FILE *f = fopen(path, "ab");
    if (!f)
        return dp_error(DISOPT_ERR_IO, "%s: cannot append to the log: %s", path, strerror(errno));
    fprintf(f, "%s\n", row);
    if (fclose(f) != 0)
        return dp_error(DISOPT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return DISOPT_OK;
}

static disopt_status check_options(const disopt_train_options *o) {
    if (!o->list || !o->output)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "a sample list and an output file are needed");
    if (o->stage != 1 && o->stage != 2)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "stage must be optical (1) or distill (2)");
    if (o->device != DISOPT_BACKEND_CPU && o->device != DISOPT_BACKEND_CUDA)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "--device: cpu or cuda[:N]");
    if (o->device == DISOPT_BACKEND_CUDA && o->f64)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "--device cuda trains in fp32 (fp64 is the CPU's debugging mode)");
    if (o->n_gpus < 0 || o->n_gpus > DISOPT_MAX_GPUS)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%d GPUs: at most %d", o->n_gpus, DISOPT_MAX_GPUS);
    if (o->n_gpus >= 1 && o->device != DISOPT_BACKEND_CUDA)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "several GPUs need --device cuda:LIST");
    if (o->n_gpus > 1 && (o->batch < o->n_gpus || o->batch % o->n_gpus))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "--batch %d does not split evenly over %d GPUs", o->batch,
                        o->n_gpus);
    if (o->variant < 0 || o->variant > 7)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "unknown architecture b%d: EfficientNet b0..b7", o->variant);
    if (o->crop < 32 || o->crop % 32)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "--crop %d: a positive multiple of 32 is needed", o->crop);
    if (o->epochs < 1 || o->batch < 1 || o->steps_per_epoch < 0 || o->threads < 1 || o->loader_threads < 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "epochs, batch and threads must be positive");
    if (!(o->lr > 0) || o->weight_decay < 0 || o->momentum < 0 || o->momentum >= 1)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "--lr must be > 0, --weight-decay >= 0, 0 <= --momentum < 1");
    if (o->stage == 2 && !o->teacher)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "--stage distill needs --teacher T.safetensors");
    if (o->stage == 1 && o->teacher)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "--teacher is for --stage distill only");
    if (o->init) {
        VSIStatBufL st;
        if (VSIStatL(o->init, &st) != 0)
            return dp_error(DISOPT_ERR_IO, "--init '%s' does not exist", o->init);
    }
    if (o->resume) {
        VSIStatBufL st;
        if (VSIStatL(o->resume, &st) != 0)
            return dp_error(DISOPT_ERR_IO, "--resume '%s' does not exist", o->resume);
    }
    return DISOPT_OK;
}

typedef struct {
    const disopt_train_options *o;
    dp_dataset *ds;
    dp_loader *tl, *vl;
    dp_trainer *t; /* rank 0 (the only one without data parallelism) */
    int nr;        /* ranks */
    dp_trainer *rank[DISOPT_MAX_GPUS];
    dp_trainer_comm *comm[DISOPT_MAX_GPUS];
    char *ckpt, *logp;
    char ident[2048];
} run_ctx;

/* ---------------------------------------------------------------- data parallelism */
/* One thread per rank beyond 0 (rank 0 runs on the caller's): each does its share of a step, or the
 * broadcast of rank 0's state, with its own NCCL communicator (dp_trainer_comm_*: every rank must call
 * each collective). The ranks' losses are averaged for the log. */
typedef struct {
    run_ctx *R;
    int r;
    const dp_batch *B;
    double lr;
    int bcast; /* 1: dp_trainer_broadcast_state only */
    dp_trainer_loss L;
    disopt_status s;
    char msg[512];
} rank_job;

static void rank_work(rank_job *j) {
    run_ctx *R = j->R;
    dp_trainer *t = R->rank[j->r];
    if (j->bcast) {
        j->s = dp_trainer_broadcast_state(t, R->comm[j->r], 0);
    } else {
        const dp_batch *B = j->B;
        const int share = B->n / R->nr, hw = R->o->crop * R->o->crop;
        const size_t off = (size_t)j->r * (size_t)share;
        j->s = dp_trainer_forward_backward(t, B->x + off * 4 * (size_t)hw, B->xt ? B->xt + off * 4 * (size_t)hw : NULL,
                                           B->target + off * (size_t)hw, B->valid ? B->valid + off * (size_t)hw : NULL,
                                           &j->L);
        /* the all-reduce even after a failed forward/backward: the other ranks wait in theirs, and the run
         * ends with this rank's error after it */
        const disopt_status a = dp_trainer_allreduce_grads(t, R->comm[j->r]);
        if (j->s == DISOPT_OK)
            j->s = a;
        if (j->s == DISOPT_OK)
            j->s = dp_trainer_update(t, j->lr);
    }
    if (j->s != DISOPT_OK)
        snprintf(j->msg, sizeof j->msg, "%s", disopt_last_error());
}

/* the ranks' threads start their work together or not at all: a collective of a rank whose thread is
 * missing would wait forever */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go; /* 0: wait, 1: work, -1: leave */
} rank_gate;

typedef struct {
    rank_job *job;
    rank_gate *gate;
} rank_arg;

static void *rank_thread(void *arg) {
    rank_arg *a = arg;
    pthread_mutex_lock(&a->gate->mu);
    while (a->gate->go == 0)
        pthread_cond_wait(&a->gate->cv, &a->gate->mu);
    const int go = a->gate->go;
    pthread_mutex_unlock(&a->gate->mu);
    if (go > 0)
        rank_work(a->job);
    return NULL;
}

static void gate_open(rank_gate *g, int go) {
    pthread_mutex_lock(&g->mu);
    g->go = go;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* every rank's job at once; the first error, with its rank */
static disopt_status ranks_run(run_ctx *R, rank_job *jobs) {
    pthread_t th[DISOPT_MAX_GPUS];
    rank_arg args[DISOPT_MAX_GPUS];
    rank_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    int started = 1;
    for (int r = 1; r < R->nr && started == r; r++) {
        args[r].job = &jobs[r];
        args[r].gate = &gate;
        if (pthread_create(&th[r], NULL, rank_thread, &args[r]) == 0)
            started++;
    }
    gate_open(&gate, started == R->nr ? 1 : -1);
    if (started == R->nr)
        rank_work(&jobs[0]);
    for (int r = 1; r < started; r++)
        pthread_join(th[r], NULL);
    pthread_mutex_destroy(&gate.mu);
    pthread_cond_destroy(&gate.cv);
    if (started != R->nr)
        return dp_error(DISOPT_ERR_BACKEND, "data parallelism: cannot start the thread of rank %d", started);
    for (int r = 0; r < R->nr; r++)
        if (jobs[r].s != DISOPT_OK)
            return dp_error(jobs[r].s, "GPU %d (rank %d): %s", R->o->gpus[r], r, jobs[r].msg);
    return DISOPT_OK;
}

/* one training step over the batch: on rank 0 alone, or split over the ranks */
static disopt_status step_all(run_ctx *R, const dp_batch *B, double lr, dp_trainer_loss *L) {
    if (R->o->n_gpus < 1)
        return dp_trainer_step(R->t, B->x, B->xt, B->target, B->valid, lr, L);
    rank_job jobs[DISOPT_MAX_GPUS];
    memset(jobs, 0, sizeof jobs);
    for (int r = 0; r < R->nr; r++) {
        jobs[r].R = R;
        jobs[r].r = r;
        jobs[r].B = B;
        jobs[r].lr = lr;
    }
    DP_TRY(ranks_run(R, jobs));
    /* the log's losses: the ranks' mean (the terms are all doubles) */
    *L = jobs[0].L;
    double *d1 = (double *)&L->s1, *d2 = (double *)&L->s2;
    const size_t n1 = sizeof L->s1 / sizeof(double), n2 = sizeof L->s2 / sizeof(double);
    for (int r = 1; r < R->nr; r++) {
        const double *e1 = (const double *)&jobs[r].L.s1, *e2 = (const double *)&jobs[r].L.s2;
        for (size_t k = 0; k < n1; k++)
            d1[k] += e1[k];
        for (size_t k = 0; k < n2; k++)
            d2[k] += e2[k];
    }
    for (size_t k = 0; k < n1; k++)
        d1[k] /= R->nr;
    for (size_t k = 0; k < n2; k++)
        d2[k] /= R->nr;
    return DISOPT_OK;
}

static const char *math_name(int m) {
    return m == DP_TRAINER_MATH_TF32 ? "tf32 math" : m == DP_TRAINER_MATH_BF16 ? "bf16 math (fp32 storage)" : "fp32";
}

/* ranks 1.. (rank 0 is R->t, already made and initialised), the communicators, rank 0's state everywhere */
static disopt_status ranks_create(run_ctx *R, const dp_trainer_config *tc0) {
    const disopt_train_options *o = R->o;
    R->rank[0] = R->t;
    for (int r = 1; r < R->nr; r++) {
        dp_trainer_config tc = *tc0;
        tc.cuda_device = o->gpus[r];
        tc.seed = tc0->seed + 0x9e3779b97f4a7c15ULL * (uint64_t)r; /* each rank its own dropout masks */
        disopt_status s = dp_trainer_create(&tc, NULL, o->stage == 2 ? o->teacher : NULL, &R->rank[r]);
        if (s != DISOPT_OK)
            return dp_error_prefix(s, "GPU %d (rank %d)", o->gpus[r], r);
    }
    DP_TRY(dp_trainer_comm_create(R->rank, R->nr, R->comm));
    rank_job jobs[DISOPT_MAX_GPUS];
    memset(jobs, 0, sizeof jobs);
    for (int r = 0; r < R->nr; r++) {
        jobs[r].R = R;
        jobs[r].r = r;
        jobs[r].bcast = 1;
    }
    return ranks_run(R, jobs);
}

static void meta_add(dp_kv *kv, int *n, const char *k, const char *v) {
    kv[*n].key = k;
    kv[*n].value = v;
    (*n)++;
}

static disopt_status run(run_ctx *R) {
    const disopt_train_options *o = R->o;
    DP_TRY(check_options(o));
    DP_TRY(check_writable(o->output));
    if (o->stage == 2)
        DP_TRY(check_teacher(o->teacher, o->variant));
    R->ckpt = derived(o->output, ".ckpt.safetensors");
    R->logp = o->log_csv ? strdup(o->log_csv) : derived(o->output, ".log.csv");
    if (!R->ckpt || !R->logp)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");

    dp_ds_options dso;
    dp_ds_options_init(&dso);
    dso.stage = o->stage;
    dso.channels = 4;
    dso.crop = o->crop;
    memcpy(dso.sar_bands, o->sar_bands, sizeof dso.sar_bands);
    dso.n_sar_bands = o->n_sar_bands;
    memcpy(dso.opt_bands, o->opt_bands, sizeof dso.opt_bands);
    dso.n_opt_bands = o->n_opt_bands;
    dso.complex_mode = o->complex_mode;
    dso.rotate180 = o->rotate180;
    dso.min_area = o->min_area;
    dso.norm_scale = o->norm_scale;
    dso.norm_mean = o->norm_mean;
    dso.norm_std = o->norm_std;
    DP_TRY(dp_dataset_open(o->list, o->val_list, &dso, &R->ds));
    const int n_train = dp_dataset_count(R->ds, 0), n_val = dp_dataset_count(R->ds, 1);
    const uint64_t data_seed = o->seed * 0x2545f4914f6cdd1dULL + 0xda7a;
    DP_TRY(dp_loader_create(R->ds, 0, o->batch, o->loader_threads, data_seed, &R->tl));
    R->nr = o->n_gpus >= 1 ? o->n_gpus : 1;
    const int rank_batch = o->batch / R->nr;
    if (n_val > 0) /* validation runs on rank 0, whose trainer takes batches of its share */
        DP_TRY(dp_loader_create(R->ds, 1, rank_batch, o->loader_threads, data_seed, &R->vl));
    const int64_t iters = o->steps_per_epoch > 0 ? o->steps_per_epoch : dp_loader_batches(R->tl);
    uint64_t teacher_hash = 0;
    if (o->stage == 2)
        DP_TRY(file_fnv(o->teacher, &teacher_hash));
    identity(o, dp_dataset_hash(R->ds), teacher_hash, iters, R->ident, sizeof R->ident);
    logf_(o, "samples: %d training, %d validation; %" PRId64 " steps per epoch, batch %d, crop %d", n_train, n_val,
          iters, o->batch, o->crop);

    disopt_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.arch = o->stage == 1 ? DISOPT_ARCH_TEACHER : DISOPT_ARCH_STUDENT;
    mc.variant = o->variant;
    mc.in_channels = 4;
    mc.num_classes = 2;
    dp_trainer_config tc = dp_trainer_config_authors(&mc, rank_batch, o->crop, o->crop);
    tc.dropout = o->dropout;
    tc.drop_connect = o->drop_connect;
    tc.seed = o->seed;
    tc.f64 = o->f64;
    tc.nthreads = o->threads;
    tc.cuda = o->device == DISOPT_BACKEND_CUDA;
    tc.cuda_device = o->n_gpus >= 1 ? o->gpus[0] : o->gpu;
    tc.cuda_math = (int)o->math;
    if (o->optimizer == DISOPT_OPTIM_ADAMW) {
        tc.optim = dp_optim_config_adamw(o->lr, o->weight_decay);
    } else {
        tc.optim = dp_optim_config_sgd_authors();
        tc.optim.lr = o->lr;
        tc.optim.weight_decay = o->weight_decay;
        tc.optim.momentum = o->momentum;
        tc.optim.nesterov = o->momentum > 0;
    }
    disopt_status s = dp_trainer_create(&tc, NULL, o->stage == 2 ? o->teacher : NULL, &R->t);
    if (s != DISOPT_OK)
        return s;
    if (tc.cuda && o->n_gpus >= 1)
        logf_(o, "trainer: %d CUDA devices (data parallel through NCCL, %d images per GPU per step), %s", R->nr,
              rank_batch, math_name(tc.cuda_math));
    else if (tc.cuda)
        logf_(o, "trainer: CUDA device %d, %s", tc.cuda_device, math_name(tc.cuda_math));
    else
        logf_(o, "trainer: CPU, %d thread%s, %s", tc.nthreads, tc.nthreads == 1 ? "" : "s", tc.f64 ? "fp64" : "fp32");

    int64_t start_epoch = 0;
    double best = -1.0;
    int64_t best_epoch = 0;
    double last_dice = -1.0;
    char init_name[512];
    snprintf(init_name, sizeof init_name, "%s", o->init ? CPLGetFilename(o->init) : "none");
    if (o->resume) {
        disopt_st *md = NULL;
        s = dp_checkpoint_load(R->t, o->resume, &md);
        if (s != DISOPT_OK)
            return dp_error_prefix(s, "--resume");
        const char *id = disopt_st_metadata(md, "run");
        const char *ep = disopt_st_metadata(md, "epochs_done");
        const char *bs = disopt_st_metadata(md, "best_val_dice"), *be = disopt_st_metadata(md, "best_epoch");
        if (!id || strcmp(id, R->ident) != 0) {
            s = dp_error(DISOPT_ERR_INPUT,
                         "--resume '%s' belongs to another run: it was\n  %s\nthis run is\n  %s\n(only the thread "
                         "counts may change)",
                         o->resume, id ? id : "(none)", R->ident);
        } else if (!ep) {
            s = dp_error(DISOPT_ERR_FORMAT, "--resume '%s': epochs_done missing", o->resume);
        } else {
            start_epoch = strtoll(ep, NULL, 10);
            best = bs ? strtod(bs, NULL) : -1.0;
            best_epoch = be ? strtoll(be, NULL, 10) : 0;
            const char *ld = disopt_st_metadata(md, "last_val_dice");
            last_dice = ld ? strtod(ld, NULL) : -1.0;
            const char *in = disopt_st_metadata(md, "init");
            snprintf(init_name, sizeof init_name, "%s", in ? in : "none");
        }
        disopt_st_close(md);
        if (s != DISOPT_OK)
            return s;
        logf_(o, "resumed from %s after epoch %" PRId64 "%s", o->resume, start_epoch,
              o->init ? " (--init ignored: the checkpoint holds the weights)" : "");
    } else if (o->init) {
        int matched = 0, skipped = 0;
        s = dp_trainer_init_from(R->t, o->init, &matched, &skipped);
        if (s != DISOPT_OK)
            return dp_error_prefix(s, "--init");
        logf_(o, "--init %s: %d tensors loaded (name and shape matched), %d skipped", o->init, matched, skipped);
        if (matched == 0)
            return dp_error(DISOPT_ERR_INPUT, "--init '%s': no tensor matches the model's keys and shapes", o->init);
    }

    if (o->n_gpus >= 1) /* after --resume / --init on rank 0: every rank starts from its state */
        DP_TRY(ranks_create(R, &tc));

    const char *header =
        o->stage == 1
            ? "epoch,steps,lr,loss,ce,dice,val_dice,val_iou,val_precision,val_recall,val_dice_authors,seconds,"
              "data_wait_seconds"
            : "epoch,steps,lr,loss,seg_sar,seg_rgb,kd_rgb,seg_fused,feat,val_dice,val_iou,"
              "val_precision,val_recall,val_dice_authors,seconds,data_wait_seconds";
    DP_TRY(rewrite_log(R->logp, start_epoch, header));

    const int64_t total = (int64_t)o->epochs * iters;
    conf_mat cm;
    memset(&cm, 0, sizeof cm);
    if (o->progress)
        o->progress(total ? (double)(start_epoch * iters) / (double)total : 1.0, NULL, o->progress_arg);
    for (int64_t e = start_epoch; e < o->epochs; e++) {
        const double t0 = dp_now_s();
        double acc[6] = {0, 0, 0, 0, 0, 0}, lr = 0.0, wait = 0.0;
        DP_TRY(dp_loader_begin(R->tl, e, 0, iters));
        for (int64_t i = 0; i < iters; i++) {
            const dp_batch *B;
            const double w0 = dp_now_s();
            DP_TRY(dp_loader_next(R->tl, &B));
            wait += dp_now_s() - w0; /* time the step waited for GDAL */
            const int64_t g = e * iters + i;
            lr = dp_lr_authors(o->lr, o->epochs, iters, g);
            if (lr < 0)
                return dp_error(DISOPT_ERR_INTERNAL, "schedule: bad step %" PRId64, g);
            dp_trainer_loss L;
            s = step_all(R, B, lr, &L);
            if (s != DISOPT_OK)
                return dp_error_prefix(s, "epoch %" PRId64 " step %" PRId64, e + 1, i + 1);
            if (o->stage == 1) {
                acc[0] += L.s1.total;
                acc[1] += L.s1.ce;
                acc[2] += L.s1.dice;
            } else {
                acc[0] += L.s2.total;
                acc[1] += L.s2.seg_sar;
                acc[2] += L.s2.seg_rgb;
                acc[3] += L.s2.kd_rgb;
                acc[4] += L.s2.seg_fused;
                acc[5] += L.s2.feat;
            }
            if (o->progress && !o->progress((double)(g + 1) / (double)total, NULL, o->progress_arg))
                return dp_error(DISOPT_ERR_CANCELLED, "cancelled");
        }
        dp_loader_end(R->tl);
        for (int k = 0; k < 6; k++)
            acc[k] /= (double)iters;
        double dice = -1, iou = -1, prec = -1, rec = -1, dice_a = -1;
        if (R->vl) {
            DP_TRY(validate(R->t, R->vl, o->f64, o->crop, &cm));
            dice = ratio(2 * cm.tp, 2 * cm.tp + cm.fp + cm.fn, 1.0);
            iou = ratio(cm.tp, cm.tp + cm.fp + cm.fn, 1.0);
            prec = ratio(cm.tp, cm.tp + cm.fp, 1.0);
            rec = ratio(cm.tp, cm.tp + cm.fn, 1.0);
            dice_a = ratio(cm.dice_authors_sum, cm.samples, 1.0);
            last_dice = dice;
            if (dice > best) {
                best = dice;
                best_epoch = e + 1;
            }
        }
        const double secs = dp_now_s() - t0;
        char row[1024], vals[256];
        if (R->vl)
            snprintf(vals, sizeof vals, "%.6f,%.6f,%.6f,%.6f,%.6f", dice, iou, prec, rec, dice_a);
        else
            snprintf(vals, sizeof vals, ",,,,");
        if (o->stage == 1)
            snprintf(row, sizeof row, "%" PRId64 ",%" PRId64 ",%.9g,%.9g,%.9g,%.9g,%s,%.3f,%.3f", e + 1,
                     (e + 1) * iters, lr, acc[0], acc[1], acc[2], vals, secs, wait);
        else
            snprintf(row, sizeof row, "%" PRId64 ",%" PRId64 ",%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%s,%.3f,%.3f", e + 1,
                     (e + 1) * iters, lr, acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], vals, secs, wait);
        DP_TRY(append_log(R->logp, row));
        if (R->vl)
            logf_(o,
                  "epoch %" PRId64
                  "/%d: loss %.5g, lr %.4g, val dice %.4f iou %.4f precision %.4f recall %.4f (%.1f s, "
                  "%.2f s waiting for data)",
                  e + 1, o->epochs, acc[0], lr, dice, iou, prec, rec, secs, wait);
        else
            logf_(o, "epoch %" PRId64 "/%d: loss %.5g, lr %.4g (%.1f s, %.2f s waiting for data)", e + 1, o->epochs,
                  acc[0], lr, secs, wait);
        /* the checkpoint: everything the rest of the run depends on */
        char ep[32], bs[64], be[32], ls[64];
        snprintf(ep, sizeof ep, "%" PRId64, e + 1);
        snprintf(bs, sizeof bs, "%.17g", best);
        snprintf(be, sizeof be, "%" PRId64, best_epoch);
        snprintf(ls, sizeof ls, "%.17g", last_dice);
        dp_kv kv[6];
        int nkv = 0;
        meta_add(kv, &nkv, "last_val_dice", ls);
        meta_add(kv, &nkv, "init", init_name);
        meta_add(kv, &nkv, "run", R->ident);
        meta_add(kv, &nkv, "epochs_done", ep);
        meta_add(kv, &nkv, "best_val_dice", bs);
        meta_add(kv, &nkv, "best_epoch", be);
        s = dp_checkpoint_save(R->t, R->ckpt, kv, nkv);
        if (s != DISOPT_OK)
            return dp_error_prefix(s, "checkpoint");
    }

    /* the model file */
    char bands[128], ns[32], nm[32], nsd[32], ep[32], bs[64], be[32], ld[64], hash[32], name[96], prov[256], rot[4];
    if (o->stage == 2)
        snprintf(bands, sizeof bands, "HH,HV,VH,VV");
    else {
        size_t k = 0;
        for (int i = 0; i < 4; i++)
            k += (size_t)snprintf(bands + k, sizeof bands - k, "%sO%d", i ? "," : "",
                                  o->n_opt_bands ? o->opt_bands[i] : i + 1);
    }
    snprintf(ns, sizeof ns, "%.9g", (double)o->norm_scale);
    snprintf(nm, sizeof nm, "%.9g", (double)o->norm_mean);
    snprintf(nsd, sizeof nsd, "%.9g", (double)o->norm_std);
    snprintf(ep, sizeof ep, "%d", o->epochs);
    snprintf(bs, sizeof bs, "%.9g", best);
    snprintf(be, sizeof be, "%" PRId64, best_epoch);
    snprintf(ld, sizeof ld, "%.9g", last_dice);
    snprintf(hash, sizeof hash, "%016" PRIx64, dp_dataset_hash(R->ds));
    snprintf(name, sizeof name, "%s-b%d (gdal_disopt_train)", o->stage == 1 ? "teacher" : "student", o->variant);
    snprintf(prov, sizeof prov, "trained by gdal_disopt_train %s: %s stage, %d epochs of %" PRId64 " steps",
             disopt_version(), o->stage == 1 ? "optical" : "distill", o->epochs, iters);
    snprintf(rot, sizeof rot, "%d", o->rotate180 == 1);
    dp_kv kv[16];
    int nkv = 0;
    meta_add(kv, &nkv, "bands", bands);
    meta_add(kv, &nkv, "norm_scale", ns);
    meta_add(kv, &nkv, "norm_mean", nm);
    meta_add(kv, &nkv, "norm_std", nsd);
    meta_add(kv, &nkv, "rotate180", rot);
    meta_add(kv, &nkv, "name", name);
    meta_add(kv, &nkv, "provenance", prov);
    meta_add(kv, &nkv, "training_options", R->ident);
    meta_add(kv, &nkv, "init", init_name);
    meta_add(kv, &nkv, "data_list_fnv1a64", hash);
    meta_add(kv, &nkv, "epochs", ep);
    if (R->vl) {
        meta_add(kv, &nkv, "best_val_dice", bs);
        meta_add(kv, &nkv, "best_epoch", be);
        meta_add(kv, &nkv, "final_val_dice", ld);
    }
    s = dp_model_save(R->t, o->output, kv, nkv);
    if (s == DISOPT_OK)
        logf_(o, "wrote %s (checkpoint %s, log %s)", o->output, R->ckpt, R->logp);
    return s;
}

disopt_status disopt_train_run(const disopt_train_options *o) {
    if (!o)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "train: NULL options");
    run_ctx R;
    memset(&R, 0, sizeof R);
    R.o = o;
    disopt_status s = run(&R);
    dp_loader_destroy(R.tl);
    dp_loader_destroy(R.vl);
    for (int r = 0; r < DISOPT_MAX_GPUS; r++)
        dp_trainer_comm_destroy(R.comm[r]);
    for (int r = 1; r < DISOPT_MAX_GPUS; r++)
        dp_trainer_destroy(R.rank[r]);
    dp_trainer_destroy(R.t);
    dp_dataset_close(R.ds);
    free(R.ckpt);
    free(R.logp);
    return s;
}
