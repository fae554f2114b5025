/*
 * trainer_cu.c - loads the CUDA module's training ops for the trainer (see trainer_cu.h). C11; the module
 * is found as the engine finds it; every symbol is checked; errors through dp_error; no global state.
 */
#include "trainer_cu.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DISOPT_CUDA_MODULE_PATH
#define DISOPT_CUDA_MODULE_PATH "libdisopt_cuda.so.0"
#endif

disopt_status dp_tr_cu_open(int device, dp_tr_cu **out) {
    if (!out)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    *out = NULL;
    dp_tr_cu *cu = calloc(1, sizeof *cu);
    if (!cu)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory");
    cu->host.abi = DP_CUDA_ABI;
    cu->host.error = dp_error;
    cu->host.log = dp_log;
    const char *cands[3] = {getenv("DISOPT_CUDA_MODULE"), DISOPT_CUDA_MODULE_PATH, "libdisopt_cuda.so.0"};
    char why[512] = "";
    for (int i = 0; i < 3 && !cu->module; i++) {
        if (!cands[i] || !*cands[i])
            continue;
        /* NODELETE: see engine.c */
        cu->module = dlopen(cands[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!cu->module && !why[0])
            snprintf(why, sizeof why, "%s", dlerror());
    }
    if (!cu->module) {
        free(cu);
        return dp_error(DISOPT_ERR_UNSUPPORTED, "training on CUDA: the CUDA module is not available (%s); build with "
                        "the CUDA toolkit, or set DISOPT_CUDA_MODULE", why);
    }
    const char *missing = NULL;
#define DP_TR_CU_RESOLVE(name)                                                                                         \
    if (!missing) {                                                                                                    \
        void *sym = dlsym(cu->module, "dp_cu_tr_" #name);                                                              \
        if (!sym)                                                                                                      \
            missing = "dp_cu_tr_" #name;                                                                               \
        memcpy(&cu->f.name, &sym, sizeof sym);                                                                         \
    }
    DP_TR_CU_FNS(DP_TR_CU_RESOLVE)
#undef DP_TR_CU_RESOLVE
    if (missing) {
        dlclose(cu->module);
        free(cu);
        return dp_error(DISOPT_ERR_UNSUPPORTED, "training on CUDA: the CUDA module has no %s (an older build?)",
                        missing);
    }
    disopt_clear_error();
    disopt_status s = cu->f.ctx_create(&cu->host, device, &cu->ctx);
    if (s != DISOPT_OK) {
        if (!*disopt_last_error())
            s = dp_error(DISOPT_ERR_UNSUPPORTED, "training on CUDA: the CUDA module does not match this libdisopt "
                         "(interface %d)", DP_CUDA_ABI);
        dlclose(cu->module);
        free(cu);
        return s;
    }
    *out = cu;
    return DISOPT_OK;
}

void dp_tr_cu_close(dp_tr_cu *cu) {
    if (!cu)
        return;
    if (cu->ctx)
        cu->f.ctx_destroy(cu->ctx);
    if (cu->module)
        dlclose(cu->module);
    free(cu);
}
