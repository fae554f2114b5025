/*
 * bench_cpu - CPU inference throughput of a model: median seconds per tile and tiles/s at each
 * thread count, after warm-up, on fresh random SAR-like input (never zeros).
 *   bench_cpu MODEL.safetensors [-size 512] [-batch 1] [-runs 5] [-threads 1,2,16] [-fused-only]
 */
#include "disopt.h"
#include "bench_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "Usage: bench_cpu MODEL [-size N] [-batch N] [-runs N] [-threads a,b,c] [-all-heads] [-profile] [-pinned] [-phases]\n");
        return 1;
    }
    int size = 512, batch = 1, runs = 5, all_heads = 0, profile = 0, pinned = 0, phases = 0;
    char threads_s[256] = "1,2,0";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-threads") && i + 1 < argc) snprintf(threads_s, sizeof threads_s, "%s", argv[++i]);
        else if (!strcmp(argv[i], "-all-heads")) all_heads = 1;
        else if (!strcmp(argv[i], "-profile")) profile = 1;
        else if (!strcmp(argv[i], "-pinned")) pinned = 1; /* input/output in disopt_engine_host_alloc memory */
        else if (!strcmp(argv[i], "-phases")) phases = 1; /* median time of each phase of an inference */
    }
    if (runs < 1 || runs > 1000) runs = 5;

    size_t per = (size_t)4 * size * size;
    float *x = malloc(per * batch * sizeof(float));
    float *lg = malloc((size_t)batch * 2 * size * size * sizeof(float));
    float *l2 = malloc((size_t)batch * 2 * size * size * sizeof(float));
    float *l3 = malloc((size_t)batch * 2 * size * size * sizeof(float));
    uint64_t s = (uint64_t)time(NULL) * 2654435761u + 1;
    for (size_t i = 0; i < per * batch; i++) { /* SAR-like raw values 0..92, then the authors' normalisation */
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float raw = (float)((s >> 40) % 9200) / 100.0f;
        x[i] = (raw / 255.0f - 0.5f) / 0.125f;
    }
    printf("# model %s, input %dx4x%dx%d, %s, %d timed runs after 1 warm-up\n", argv[1], batch, size, size,
           all_heads ? "all three heads" : "fused output only", runs);
    printf("%8s %12s %12s %10s\n", "threads", "s/tile(med)", "s/tile(min)", "tiles/s");
    char *save = NULL;
    for (char *tok = strtok_r(threads_s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        disopt_engine_options eo;
        disopt_engine_options_init(&eo);
        eo.num_threads = atoi(tok);
        bench_engine_env(&eo);
        disopt_engine *e;
        disopt_model *m;
        if (disopt_engine_create(&eo, &e) || disopt_model_load(e, argv[1], &m)) {
            fprintf(stderr, "bench_cpu: %s\n", disopt_last_error());
            return 1;
        }
        disopt_model_info info;
        disopt_model_get_info(m, &info);
        float *xin = x, *out = lg;
        const size_t out_bytes = (size_t)batch * 2 * size * size * sizeof(float);
        if (pinned) {
            void *a = NULL, *b = NULL;
            if (disopt_engine_host_alloc(e, per * batch * sizeof(float), &a) ||
                disopt_engine_host_alloc(e, out_bytes, &b)) {
                fprintf(stderr, "bench_cpu: %s\n", disopt_last_error());
                return 1;
            }
            xin = a;
            out = b;
            memcpy(xin, x, per * batch * sizeof(float));
        }
        disopt_outputs o = {out, NULL, NULL, NULL, NULL, 0};
        if (all_heads && info.config.arch == DISOPT_ARCH_STUDENT) {
            o.sar_logits = l2;
            o.rgb_logits = l3;
        }
        double *t = malloc(sizeof(double) * runs);
        double *ph[5];
        for (int k = 0; k < 5; k++) ph[k] = malloc(sizeof(double) * runs);
        for (int r = -1; r < runs; r++) {
            double t0 = now();
            if (disopt_model_infer(m, xin, batch, 4, size, size, &o) != DISOPT_OK) {
                fprintf(stderr, "bench_cpu: %s\n", disopt_last_error());
                return 1;
            }
            if (r >= 0) {
                t[r] = (now() - t0) / batch;
                disopt_infer_timing tm;
                disopt_model_last_timing(m, &tm);
                ph[0][r] = tm.check_s, ph[1][r] = tm.upload_s, ph[2][r] = tm.compute_s;
                ph[3][r] = tm.download_s, ph[4][r] = tm.total_s;
            }
        }
        if (phases) {
            printf("# phases, median ms per batch of %d (%s buffers): check upload compute download total:", batch,
                   pinned ? "pinned" : "malloc");
            for (int k = 0; k < 5; k++) {
                qsort(ph[k], (size_t)runs, sizeof(double), cmp);
                printf(" %.2f", ph[k][runs / 2] * 1e3);
            }
            printf("\n");
        }
        for (int k = 0; k < 5; k++) free(ph[k]);
        if (profile) { /* one more run, timed per op */
            char rep[8192];
            disopt_model_set_profiling(m, 1);
            if (disopt_model_infer(m, x, batch, 4, size, size, &o) != DISOPT_OK) return 1; /* malloc'd input */
            disopt_model_profile_report(m, rep, sizeof rep);
            printf("# per-op profile, %d threads:\n%s", disopt_engine_num_threads(e), rep);
        }
        qsort(t, (size_t)runs, sizeof *t, cmp);
        double med = t[runs / 2];
        printf("%8d %12.4f %12.4f %10.3f\n", disopt_engine_num_threads(e), med, t[0], 1.0 / med);
        fflush(stdout);
        free(t);
        if (pinned) {
            disopt_engine_host_free(e, xin);
            disopt_engine_host_free(e, out);
        }
        disopt_model_destroy(m);
        disopt_engine_destroy(e);
    }
    free(x);
    free(lg);
    free(l2);
    free(l3);
    return 0;
}
