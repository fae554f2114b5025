/*
 * status.c - status names, the thread-local error message, logging and small numeric helpers.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static _Thread_local char dp_msg[1024];

const char *disopt_status_name(disopt_status s) {
    switch (s) {
    case DISOPT_OK: return "DISOPT_OK";
    case DISOPT_ERR_INVALID_ARGUMENT: return "DISOPT_ERR_INVALID_ARGUMENT";
    case DISOPT_ERR_IO: return "DISOPT_ERR_IO";
    case DISOPT_ERR_FORMAT: return "DISOPT_ERR_FORMAT";
    case DISOPT_ERR_UNSUPPORTED: return "DISOPT_ERR_UNSUPPORTED";
    case DISOPT_ERR_MISSING_KEY: return "DISOPT_ERR_MISSING_KEY";
    case DISOPT_ERR_UNEXPECTED_KEY: return "DISOPT_ERR_UNEXPECTED_KEY";
    case DISOPT_ERR_SHAPE: return "DISOPT_ERR_SHAPE";
    case DISOPT_ERR_INPUT: return "DISOPT_ERR_INPUT";
    case DISOPT_ERR_OUT_OF_MEMORY: return "DISOPT_ERR_OUT_OF_MEMORY";
    case DISOPT_ERR_BACKEND: return "DISOPT_ERR_BACKEND";
    case DISOPT_ERR_INTERNAL: return "DISOPT_ERR_INTERNAL";
    case DISOPT_ERR_CANCELLED: return "DISOPT_ERR_CANCELLED";
    }
    return "DISOPT_ERR_UNKNOWN";
}

const char *disopt_last_error(void) { return dp_msg; }
void disopt_clear_error(void) { dp_msg[0] = '\0'; }
const char *disopt_version(void) { return DISOPT_VERSION_STRING; }

disopt_status dp_error(disopt_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dp_msg, sizeof dp_msg, fmt, ap);
    va_end(ap);
    return s;
}

disopt_status dp_error_prefix(disopt_status s, const char *fmt, ...) {
    char prev[sizeof dp_msg];
    char head[512];
    va_list ap;
    memcpy(prev, dp_msg, sizeof prev);
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    /* "head: prev", silently truncated to the buffer */
    size_t hl = strlen(head), pl = strlen(prev);
    if (hl > sizeof dp_msg - 3) hl = sizeof dp_msg - 3;
    memcpy(dp_msg, head, hl);
    memcpy(dp_msg + hl, ": ", 2);
    if (pl > sizeof dp_msg - hl - 3) pl = sizeof dp_msg - hl - 3;
    memcpy(dp_msg + hl + 2, prev, pl);
    dp_msg[hl + 2 + pl] = '\0';
    return s;
}

void dp_log(const disopt_engine *e, disopt_log_level level, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    if (!e || !e->opt.log) return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->opt.log(e->opt.log_user, level, buf);
}

int dp_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* IEEE half <-> single, exact for every half value; f32 -> f16 rounds to nearest even. */
float dp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

float dp_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t dp_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

uint16_t dp_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);         /* overflow (>= 65520) -> Inf */
    if (ax < 0x38800000u) {                                            /* below 2^-14: subnormal or 0 */
        if (ax < 0x33000000u) return (uint16_t)sign;                   /* < 2^-25: rounds to 0 */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        /* value = m * 2^(e-150); the half subnormal unit is 2^-24, so q = m * 2^(e-126) */
        uint32_t r = m >> (126 - e);
        uint32_t rem = m & ((1u << (126 - e)) - 1u);
        uint32_t half = 1u << (125 - e);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax + 0xc8000fffu + ((ax >> 13) & 1u); /* rebias exponent (-112<<23) and round */
    return (uint16_t)(sign | (r >> 13));
}

double dp_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
