/*
 * dwgen.c - "dwgen-1" deterministic pseudo-random conv weights, bit-identical to
 * testdata/gen/dwgen.py: FNV-1a-64 of the key seeds splitmix64 over the flat element index.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

uint64_t dp_dwgen_seed(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

float dp_dwgen_unit(uint64_t seed, uint64_t i) {
    uint64_t z = seed + i + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float r = (float)(z >> 40) * (1.0f / 16777216.0f);
    return 2.0f * r - 1.0f;
}

void disopt_dwgen_conv_weight(const char *key, const int64_t shape[4], float *dst) {
    uint64_t seed = dp_dwgen_seed(key);
    int64_t fan_in = shape[1] * shape[2] * shape[3];
    int64_t n = shape[0] * fan_in;
    float bound = (float)sqrt(3.0 / (double)fan_in);
    for (int64_t i = 0; i < n; i++) dst[i] = dp_dwgen_unit(seed, (uint64_t)i) * bound;
}

void disopt_dwgen_conv_bias(const char *key, int64_t n, float *dst) {
    uint64_t seed = dp_dwgen_seed(key);
    for (int64_t i = 0; i < n; i++) dst[i] = dp_dwgen_unit(seed, (uint64_t)i) * 0.1f;
}
