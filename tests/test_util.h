/* test_util.h - helpers shared by the cmocka tests (header-only, static functions). */
#ifndef DISOPT_TEST_UTIL_H
#define DISOPT_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "disopt.h"

#ifndef DISOPT_TESTDATA
#define DISOPT_TESTDATA "testdata"
#endif

/* xorshift64*, seeded per run from the clock unless DISOPT_TEST_SEED is set (printed on failure paths) */
typedef struct {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

static inline float tu_uniform(tu_rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((tu_next(r) >> 40) * (1.0 / 16777216.0));
}

static inline tu_rng tu_rng_fresh(void) {
    tu_rng r;
    const char *env = getenv("DISOPT_TEST_SEED");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r.s = env ? strtoull(env, NULL, 0) : ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)getpid();
    if (r.s == 0) r.s = 1;
    fprintf(stderr, "# random seed: DISOPT_TEST_SEED=0x%llx\n", (unsigned long long)r.s);
    return r;
}

static inline void tu_fill(tu_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = tu_uniform(r, lo, hi);
}

static inline void tu_tmpname(char *buf, size_t len, const char *tag) {
    const char *dir = getenv("TMPDIR");
    snprintf(buf, len, "%s/disopt_test_%s_%d.safetensors", dir ? dir : "/tmp", tag, (int)getpid());
}

/* BN values used when a test needs "some" BN: mild, deterministic from the index */
static inline float tu_bn_value(disopt_key_kind k, int64_t i) {
    switch (k) {
    case DISOPT_KEY_BN_WEIGHT: return 0.9f + 0.01f * (float)(i % 20);
    case DISOPT_KEY_BN_BIAS: return 0.01f * (float)(i % 7) - 0.03f;
    case DISOPT_KEY_BN_MEAN: return 0.001f * (float)(i % 11);
    case DISOPT_KEY_BN_VAR: return 0.8f + 0.02f * (float)(i % 13);
    default: return 0.0f;
    }
}

/* Options of tu_write_model. Zero-initialised means: F32 weights, no metadata, nothing odd. */
typedef struct {
    const char *skip;       /* a key to leave out */
    const char *extra;      /* an unknown key to add */
    const char *reshape;    /* a key to write with one more output channel */
    const char *prefix;     /* prepended to every key ("module.") */
    disopt_dtype dtype;     /* weights' dtype (F32, F16, BF16) */
    int with_counts;        /* write num_batches_tracked as I64 scalars */
    const char *md_key[4], *md_value[4];
} tu_model_opts;

/* Writes a full model file of cfgname with dwgen conv weights and tu_bn_value BN. */
static inline disopt_status tu_write_model(const char *path, const char *cfgname, const tu_model_opts *o) {
    disopt_model_config cfg;
    disopt_keylist *kl;
    disopt_st_writer *w;
    disopt_status s = disopt_model_config_parse(cfgname, &cfg);
    if (s) return s;
    if ((s = disopt_keylist_create(&cfg, &kl))) return s;
    if ((s = disopt_st_writer_create(&w))) return s;
    for (int i = 0; s == DISOPT_OK && i < disopt_keylist_count(kl); i++) {
        const char *name;
        disopt_key_kind k;
        int nd;
        int64_t sh[4];
        char full[300];
        disopt_keylist_at(kl, i, &name, &k, &nd, sh);
        snprintf(full, sizeof full, "%s%s", o->prefix ? o->prefix : "", name);
        if (o->skip && strcmp(o->skip, name) == 0) continue;
        if (k == DISOPT_KEY_BN_COUNT) {
            float count = 1234.0f;
            if (o->with_counts) s = disopt_st_writer_add(w, full, DISOPT_DTYPE_I64, 0, sh, &count);
            continue;
        }
        if (o->reshape && strcmp(o->reshape, name) == 0) sh[0] += 1;
        int64_t n = 1;
        for (int d = 0; d < nd; d++) n *= sh[d];
        float *v = malloc((size_t)n * sizeof(float));
        if (k == DISOPT_KEY_CONV_WEIGHT)
            disopt_dwgen_conv_weight(name, sh, v);
        else if (k == DISOPT_KEY_CONV_BIAS)
            disopt_dwgen_conv_bias(name, n, v);
        else
            for (int64_t j = 0; j < n; j++) v[j] = tu_bn_value(k, j);
        s = disopt_st_writer_add(w, full, o->dtype, nd, sh, v);
        free(v);
    }
    if (s == DISOPT_OK && o->extra) {
        float one = 1.0f;
        int64_t sh1 = 1;
        s = disopt_st_writer_add(w, o->extra, DISOPT_DTYPE_F32, 1, &sh1, &one);
    }
    for (int i = 0; s == DISOPT_OK && i < 4 && o->md_key[i]; i++) s = disopt_st_writer_set_metadata(w, o->md_key[i], o->md_value[i]);
    if (s == DISOPT_OK) s = disopt_st_writer_save(w, path);
    disopt_st_writer_destroy(w);
    disopt_keylist_destroy(kl);
    return s;
}

#endif
