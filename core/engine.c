/*
 * engine.c - the engine: a backend, a thread count and the caller's log callback.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void disopt_engine_options_init(disopt_engine_options *opt) {
    if (!opt) return;
    memset(opt, 0, sizeof *opt);
    opt->backend = DISOPT_BACKEND_CPU;
}

disopt_status disopt_engine_create(const disopt_engine_options *opt, disopt_engine **out) {
    disopt_engine_options def;
    if (!out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_engine_create: NULL output");
    *out = NULL;
    if (!opt) {
        disopt_engine_options_init(&def);
        opt = &def;
    }
    disopt_engine *e = calloc(1, sizeof *e);
    if (!e) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    e->opt = *opt;
    int n = opt->num_threads;
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > 1024) n = 1024;
    e->nthreads = n;
    disopt_status s;
    switch (opt->backend) {
    case DISOPT_BACKEND_CPU:
        s = dp_backend_cpu_create(e, n, &e->backend);
        break;
    case DISOPT_BACKEND_CUDA:
        s = dp_error(DISOPT_ERR_UNSUPPORTED, "the CUDA backend is not available in this build");
        break;
    default:
        s = dp_error(DISOPT_ERR_INVALID_ARGUMENT, "unknown backend %d", (int)opt->backend);
        break;
    }
    if (s != DISOPT_OK) {
        free(e);
        return s;
    }
    dp_log(e, DISOPT_LOG_DEBUG, "engine: backend %s, %d threads", e->backend->vt->name, n);
    *out = e;
    return DISOPT_OK;
}

void disopt_engine_destroy(disopt_engine *e) {
    if (!e) return;
    if (e->backend) e->backend->vt->destroy(e->backend);
    free(e);
}

int disopt_engine_num_threads(const disopt_engine *e) { return e ? e->nthreads : 0; }
const char *disopt_engine_backend_name(const disopt_engine *e) {
    return e && e->backend ? e->backend->vt->name : "none";
}
