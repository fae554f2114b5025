/*
 * rng.c - Philox4x32-10 and the stream layout described in rng.h.
 * Conventions: pure functions of (seed, counter, index); no allocation, no global state;
 * single-threaded (a caller may split a draw: value i depends only on (seed, base, i)).
 */
#include "rng.h"

void dp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    dp_philox_inline(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1], out);
}

void dp_rng_block(uint64_t seed, uint64_t b, uint32_t out[4]) { dp_rng_block_inline(seed, b, out); }

uint32_t dp_rng_word(uint64_t seed, uint64_t base, uint64_t i) {
    uint32_t w[4];
    dp_rng_block(seed, base + i / 4, w);
    return w[i % 4];
}

void dp_rng_words(dp_rng *r, size_t n, uint32_t *out) {
    uint32_t w[4];
    for (size_t i = 0; i < n; i += 4) {
        dp_rng_block(r->seed, r->counter + i / 4, w);
        for (size_t q = 0; q < 4 && i + q < n; q++)
            out[i + q] = w[q];
    }
    r->counter += dp_rng_blocks(n);
}

void dp_rng_uniform(dp_rng *r, size_t n, float *out) {
    uint32_t w[4];
    for (size_t i = 0; i < n; i += 4) {
        dp_rng_block(r->seed, r->counter + i / 4, w);
        for (size_t q = 0; q < 4 && i + q < n; q++)
            out[i + q] = dp_rng_u01(w[q]);
    }
    r->counter += dp_rng_blocks(n);
}
