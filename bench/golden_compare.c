/*
 * golden_compare - compare our CPU inference with reference outputs saved by
 * testdata/gen/device_check.py (full-size models on the device machine):
 *   golden_compare MODEL.safetensors IO.safetensors
 * IO holds golden.input and the reference logits (golden.logit or golden.fused_logit,
 * golden.logit_sar, golden.logit_rgb), optionally float64-computed twins (fp64.<name> or
 * golden.fp64.<name>). Prints max|ours - ref| / max|ref| per output and the argmax flips.
 * Exit 1 if ours is further from float64 than max(3e-5, 1.25 x PyTorch fp32's own error), or
 * (without float64) further than 3e-5 from PyTorch fp32, or flips more than 1e-4 of the pixels.
 */
#include "disopt.h"
#include "bench_env.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *read_t(disopt_st *st, const char *name, size_t *n) {
    const disopt_st_tensor_info *t = disopt_st_find(st, name);
    if (!t) return NULL;
    *n = 1;
    for (int d = 0; d < t->ndim; d++) *n *= (size_t)t->shape[d];
    float *v = malloc(*n * sizeof(float));
    if (disopt_st_read_f32(st, t, v, *n) != DISOPT_OK) {
        free(v);
        return NULL;
    }
    return v;
}

static double rel(const float *a, const float *b, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(b[i]));
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d;
    }
    return e / (m > 0 ? m : 1);
}

static double maxabs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "Usage: golden_compare MODEL IO [threads]\n");
        return 2;
    }
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = argc > 3 ? atoi(argv[3]) : 0;
    bench_engine_env(&eo);
    disopt_engine *e;
    disopt_model *m;
    disopt_st *io;
    if (disopt_engine_create(&eo, &e) || disopt_model_load(e, argv[1], &m) || disopt_st_open(argv[2], &io)) {
        fprintf(stderr, "golden_compare: %s\n", disopt_last_error());
        return 2;
    }
    const disopt_st_tensor_info *ti = disopt_st_find(io, "golden.input");
    size_t nx;
    float *x = read_t(io, "golden.input", &nx);
    if (!x || ti->ndim != 4) {
        fprintf(stderr, "golden_compare: no golden.input\n");
        return 2;
    }
    int N = (int)ti->shape[0], C = (int)ti->shape[1], H = (int)ti->shape[2], W = (int)ti->shape[3];
    disopt_model_info info;
    disopt_model_get_info(m, &info);
    int student = info.config.arch == DISOPT_ARCH_STUDENT;
    size_t nl = (size_t)N * info.config.num_classes * H * W;
    float *out[3] = {malloc(nl * 4), student ? malloc(nl * 4) : NULL, student ? malloc(nl * 4) : NULL};
    disopt_outputs o = {out[0], NULL, out[1], out[2], NULL, 0};
    if (disopt_model_infer(m, x, N, C, H, W, &o) != DISOPT_OK) {
        fprintf(stderr, "golden_compare: %s\n", disopt_last_error());
        return 2;
    }
    const char *names[3] = {student ? "golden.fused_logit" : "golden.logit", "golden.logit_sar", "golden.logit_rgb"};
    int bad = 0;
    for (int i = 0; i < (student ? 3 : 1); i++) {
        size_t n;
        float *ref = read_t(io, names[i], &n);
        if (!ref || n != nl) {
            fprintf(stderr, "golden_compare: %s missing\n", names[i]);
            return 2;
        }
        char n64[64];
        size_t n2 = 0;
        snprintf(n64, sizeof n64, "fp64.%s", names[i] + 7);
        float *ref64 = read_t(io, n64, &n2);
        if (!ref64) {
            snprintf(n64, sizeof n64, "golden.fp64.%s", names[i] + 7);
            ref64 = read_t(io, n64, &n2);
        }
        size_t flips = 0, hw = (size_t)H * W;
        for (int b = 0; b < N; b++)
            for (size_t p = 0; p < hw; p++) {
                const float *r0 = ref + (size_t)b * 2 * hw, *o0 = out[i] + (size_t)b * 2 * hw;
                flips += (r0[hw + p] > r0[p]) != (o0[hw + p] > o0[p]);
            }
        double r = rel(out[i], ref, nl);
        printf("%s %-12s ours~torch32 %.3g", info.name, names[i] + 7, r);
        if (ref64 && n2 == nl) {
            double o64 = rel(out[i], ref64, nl), t64 = rel(ref, ref64, nl);
            printf("  ours~fp64 %.3g  torch32~fp64 %.3g", o64, t64);
            if (!(o64 <= fmax(3e-5, 1.25 * t64))) bad = 1;
        } else if (!(r <= 3e-5)) {
            bad = 1;
        }
        printf("  argmax_flips %zu/%zu (%.2g)  max|logit| %.4g\n", flips, (size_t)N * hw,
               (double)flips / ((double)N * hw), maxabs(ref, nl));
        if (flips * 10000 > (size_t)N * hw) bad = 1;
        free(ref);
        free(ref64);
        free(out[i]);
    }
    free(x);
    disopt_st_close(io);
    disopt_model_destroy(m);
    disopt_engine_destroy(e);
    return bad;
}
