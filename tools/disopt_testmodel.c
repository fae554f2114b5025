/*
 * disopt_testmodel - assemble a complete, loadable model file from a golden fixture
 * (a file in testdata/golden: calibrated BN tensors) plus dwgen-1 conv weights.
 *
 * The result is the exact network the authors' code computes in the golden test, but it is
 * NOT TRAINED: its weights are pseudo-random. It exists to run the pipeline end to end.
 */
#include "disopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what) {
    fprintf(stderr, "disopt_testmodel: %s: %s\n", what, disopt_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "Usage: disopt_testmodel FIXTURE.safetensors OUT.safetensors\n");
        return 1;
    }
    disopt_st *st;
    if (disopt_st_open(argv[1], &st) != DISOPT_OK) return fail("fixture");
    const char *arch = disopt_st_metadata(st, "arch"), *variant = disopt_st_metadata(st, "variant");
    char name[64];
    snprintf(name, sizeof name, "%s-%s", arch ? arch : "?", variant ? variant : "?");
    disopt_model_config cfg;
    disopt_keylist *kl;
    disopt_st_writer *w;
    if (disopt_model_config_parse(name, &cfg) != DISOPT_OK) return fail("fixture metadata");
    if (disopt_keylist_create(&cfg, &kl) != DISOPT_OK || disopt_st_writer_create(&w) != DISOPT_OK) return fail("setup");
    for (int i = 0; i < disopt_keylist_count(kl); i++) {
        const char *key;
        disopt_key_kind k;
        int nd;
        int64_t sh[4];
        disopt_keylist_at(kl, i, &key, &k, &nd, sh);
        if (k == DISOPT_KEY_BN_COUNT) continue;
        size_t n = 1;
        for (int d = 0; d < nd; d++) n *= (size_t)sh[d];
        float *v = malloc(n * sizeof(float));
        if (!v) return 1;
        const disopt_st_tensor_info *t = disopt_st_find(st, key);
        if (k == DISOPT_KEY_CONV_WEIGHT)
            disopt_dwgen_conv_weight(key, sh, v);
        else if (k == DISOPT_KEY_CONV_BIAS)
            disopt_dwgen_conv_bias(key, (int64_t)n, v);
        else if (!t || disopt_st_read_f32(st, t, v, n) != DISOPT_OK)
            return fail(key);
        if (disopt_st_writer_add(w, key, DISOPT_DTYPE_F32, nd, sh, v) != DISOPT_OK) return fail(key);
        free(v);
    }
    char pname[96];
    snprintf(pname, sizeof pname, "untrained-%s", name);
    disopt_st_writer_set_metadata(w, "arch", arch);
    disopt_st_writer_set_metadata(w, "variant", variant);
    disopt_st_writer_set_metadata(w, "name", pname);
    disopt_st_writer_set_metadata(w, "bands", "HH,HV,VH,VV");
    disopt_st_writer_set_metadata(w, "provenance",
                                  "NOT TRAINED: dwgen-1 pseudo-random conv weights + BN calibrated on random "
                                  "SAR-like inputs (testdata/golden); for pipeline tests only");
    if (disopt_st_writer_save(w, argv[2]) != DISOPT_OK) return fail("write");
    disopt_st_writer_destroy(w);
    disopt_keylist_destroy(kl);
    disopt_st_close(st);
    return 0;
}
