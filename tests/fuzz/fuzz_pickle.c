/*
 * fuzz_pickle.c - libFuzzer target for the restricted unpickler (core/raster/pickle.c), with a
 * fake storage provider: every storage exists and holds what it declares, up to 2^24 elements.
 * Checks the invariant the reader relies on: every accepted tensor stays inside its storage.
 */
#include "pickle.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static disopt_status fake_check(void *user, const char *key, disopt_dtype dtype, uint64_t numel) {
    (void)user;
    (void)dtype;
    if (strlen(key) == 0 || numel > ((uint64_t)1 << 24)) return DISOPT_ERR_FORMAT;
    return DISOPT_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_pk_provider prov = {NULL, fake_check};
    dp_pk_result r;
    if (dp_pickle_state_dict(data, size, &prov, &r) != DISOPT_OK) return 0;
    for (int i = 0; i < r.n_tensors; i++) {
        const dp_pk_tensor *t = &r.tensors[i];
        if (t->numel > 0 && t->span_hi >= t->storage_numel) __builtin_trap();
        if (t->ndim < 0 || t->ndim > DISOPT_MAX_DIMS || !t->name || !t->storage) __builtin_trap();
    }
    for (int i = 0; i < r.n_meta; i++)
        if (!r.meta_keys[i] || !r.meta_values[i]) __builtin_trap();
    dp_pk_result_free(&r);
    return 0;
}
