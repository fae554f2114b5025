/*
 * rng.c - Philox4x32-10 and the stream layout described in rng.h.
 * Conventions: pure functions of (seed, counter, index); no allocation, no global state;
 * single-threaded (a caller may split a draw: value i depends only on (seed, base, i)).
 */
#include "rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void dp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void dp_rng_block(uint64_t seed, uint64_t b, uint32_t out[4]) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
    dp_philox4x32_10(ctr, key, out);
}

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
