/*
 * rng.h - the training's random numbers: Philox4x32-10 (Salmon et al., SC'11), counter-based.
 *
 * A stream is (seed, counter) and nothing else, so a checkpoint stores two integers, and a CUDA
 * kernel reproduces any element without generating the ones before it:
 *  - key = (seed & 0xffffffff, seed >> 32);
 *  - block b (a 64-bit index) is Philox4x32-10 of the counter (b & 0xffffffff, b >> 32, 0, 0) under
 *    that key; it gives 4 words;
 *  - a draw of n values starting at block c uses value i = word (i % 4) of block c + i / 4, and
 *    then moves the counter to c + ceil(n / 4): every draw starts on a fresh block.
 * Value i of a draw is therefore a pure function of (seed, c, i): a GPU thread per element computes
 * the same value. Uniform floats are (word >> 8) * 2^-24, in [0, 1), exact in float.
 * No global state: every generator is a caller-owned dp_rng.
 */
#ifndef DISOPT_TRAIN_RNG_H
#define DISOPT_TRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DP_RNG_HD __host__ __device__
#else
#define DP_RNG_HD
#endif

/* Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1). Inline and also compiled for the GPU:
 * the CPU (rng.c) and the GPU training kernels (cuda/train_loss.cu) run this one definition, so their
 * masks are the same bits. */
static inline DP_RNG_HD void dp_philox_inline(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                              uint32_t k1, uint32_t out[4]) {
    for (int round = 0; round < 10; round++) {
        if (round) {
            k0 += 0x9E3779B9u; /* the Weyl key increments */
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2; /* the multipliers */
        const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
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

/* block b of stream seed (4 words), inline (see dp_rng_block) */
static inline DP_RNG_HD void dp_rng_block_inline(uint64_t seed, uint64_t b, uint32_t out[4]) {
    dp_philox_inline((uint32_t)b, (uint32_t)(b >> 32), 0, 0, (uint32_t)seed, (uint32_t)(seed >> 32), out);
}

typedef struct dp_rng {
    uint64_t seed;
    uint64_t counter; /* the next unused block */
} dp_rng;

/* one Philox4x32-10 block: out = philox(ctr, key) */
void dp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

static inline dp_rng dp_rng_make(uint64_t seed) {
    dp_rng r = {seed, 0};
    return r;
}

/* block b of stream seed (4 words) */
void dp_rng_block(uint64_t seed, uint64_t b, uint32_t out[4]);

/* word i of the draw that starts at block `base` of stream `seed` */
uint32_t dp_rng_word(uint64_t seed, uint64_t base, uint64_t i);

/* the uniform float in [0, 1) made from a word */
static inline DP_RNG_HD float dp_rng_u01(uint32_t w) { return (float)(w >> 8) * 0x1p-24f; }

/* n words / n uniforms of one draw; the counter advances by ceil(n / 4) blocks */
void dp_rng_words(dp_rng *r, size_t n, uint32_t *out);
void dp_rng_uniform(dp_rng *r, size_t n, float *out);

/* blocks a draw of n values consumes (what the counter advances by) */
static inline uint64_t dp_rng_blocks(size_t n) { return ((uint64_t)n + 3) / 4; }

#endif
