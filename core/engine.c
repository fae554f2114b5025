/*
 * engine.c - the engine: a backend, a thread count and the caller's log callback.
 */
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DISOPT_CUDA_MODULE_PATH
#define DISOPT_CUDA_MODULE_PATH "libdisopt_cuda.so.0"
#endif

/* Loads the CUDA backend module: DISOPT_CUDA_MODULE (a path) if set, else the installed one, else
 * the dynamic linker's search path. */
static disopt_status cuda_create(disopt_engine *e, dp_backend **out) {
    static const dp_cuda_host host = {DP_CUDA_ABI, dp_error, dp_log};
    const char *cands[3] = {getenv("DISOPT_CUDA_MODULE"), DISOPT_CUDA_MODULE_PATH, "libdisopt_cuda.so.0"};
    char why[512] = "";
    const char *loaded = NULL;
    const double t0 = dp_now_s();
    for (int i = 0; i < 3 && !e->module; i++) {
        if (!cands[i] || !*cands[i]) continue;
        loaded = cands[i];
        /* NODELETE: the CUDA libraries it pulls in stay mapped once loaded (they keep process-wide
         * state; unloading and reloading them per engine is slow and leaks their allocations) */
        e->module = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!e->module && !why[0]) snprintf(why, sizeof why, "%s", dlerror());
    }
    if (!e->module)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "the CUDA backend module is not available (%s); build with the CUDA "
                        "toolkit, or set DISOPT_CUDA_MODULE", why);
    dp_log(e, DISOPT_LOG_DEBUG, "engine: CUDA module %s loaded in %.3f s", loaded, dp_now_s() - t0);
    dp_cuda_create_fn fn;
    void *sym = dlsym(e->module, DP_CUDA_ENTRY);
    memcpy(&fn, &sym, sizeof fn);
    if (!fn) return dp_error(DISOPT_ERR_UNSUPPORTED, "the CUDA backend module has no %s", DP_CUDA_ENTRY);
    disopt_clear_error();
    disopt_status s = fn(&host, e, e->opt.device, out);
    if (s != DISOPT_OK && !*disopt_last_error()) /* a module of another interface version says nothing */
        s = dp_error(DISOPT_ERR_UNSUPPORTED, "the CUDA backend module %s does not match this libdisopt (interface "
                     "%d): install both from the same build, or point DISOPT_CUDA_MODULE at the right one", loaded,
                     DP_CUDA_ABI);
    return s;
}

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
    if ((unsigned)opt->precision > DISOPT_PRECISION_BF16) {
        free(e);
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "unknown precision %d", (int)opt->precision);
    }
    switch (opt->backend) {
    case DISOPT_BACKEND_CPU:
        s = opt->precision == DISOPT_PRECISION_FP32
                ? dp_backend_cpu_create(e, n, &e->backend)
                : dp_error(DISOPT_ERR_UNSUPPORTED, "the CPU backend computes in FP32 only (asked: %s)",
                           disopt_precision_name(opt->precision));
        break;
    case DISOPT_BACKEND_CUDA:
        s = cuda_create(e, &e->backend);
        break;
    default:
        s = dp_error(DISOPT_ERR_INVALID_ARGUMENT, "unknown backend %d", (int)opt->backend);
        break;
    }
    if (s != DISOPT_OK) {
        if (e->module) dlclose(e->module);
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
    if (e->module) dlclose(e->module);
    free(e);
}

const char *disopt_precision_name(disopt_precision p) {
    switch (p) {
    case DISOPT_PRECISION_FP32: return "FP32";
    case DISOPT_PRECISION_TF32: return "TF32";
    case DISOPT_PRECISION_FP16: return "FP16";
    case DISOPT_PRECISION_BF16: return "BF16";
    }
    return "?";
}

int disopt_engine_num_threads(const disopt_engine *e) { return e ? e->nthreads : 0; }
const char *disopt_engine_backend_name(const disopt_engine *e) {
    return e && e->backend ? e->backend->vt->name : "none";
}

disopt_status disopt_engine_host_alloc(disopt_engine *e, size_t bytes, void **out) {
    if (!e || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_engine_host_alloc: NULL argument");
    *out = NULL;
    dp_backend *b = e->backend;
    if (b->vt->host_alloc) return b->vt->host_alloc(b, bytes ? bytes : 1, out);
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? (bytes + 63) & ~(size_t)63 : 64) != 0 || !p)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
    *out = p;
    return DISOPT_OK;
}

void disopt_engine_host_free(disopt_engine *e, void *p) {
    if (!e || !p) return;
    dp_backend *b = e->backend;
    if (b->vt->host_alloc && b->vt->host_free) b->vt->host_free(b, p);
    else if (!b->vt->host_alloc) free(p);
}
