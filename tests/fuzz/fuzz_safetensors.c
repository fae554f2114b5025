/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader (disopt_st_open_memory and
 * disopt_st_read_f32 on every tensor it accepts).
 */
#include "disopt.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    disopt_st *st = NULL;
    if (disopt_st_open_memory(data, size, &st) != DISOPT_OK) return 0;
    for (int i = 0; i < disopt_st_num_metadata(st); i++) {
        const char *k, *v;
        disopt_st_metadata_at(st, i, &k, &v);
        (void)disopt_st_metadata(st, k);
    }
    for (int i = 0; i < disopt_st_num_tensors(st); i++) {
        const disopt_st_tensor_info *t = disopt_st_tensor(st, i);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        if (numel > (1u << 20)) continue; /* accepted sizes are bounded by the input: this only caps the buffer */
        float *buf = malloc(numel ? numel * sizeof(float) : 1);
        if (!buf) continue;
        (void)disopt_st_read_f32(st, t, buf, numel);
        (void)disopt_st_find(st, t->name);
        free(buf);
    }
    disopt_st_close(st);
    return 0;
}
