/*
 * checkpoint.c - training checkpoints, model files and partial initialisation of a dp_trainer (see
 * checkpoint.h). POSIX file calls (open / fsync / rename) for the atomic write.
 */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static disopt_status write_all(int fd, const unsigned char *p, size_t n, const char *path) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return dp_error(DISOPT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return DISOPT_OK;
}

disopt_status dp_write_atomic(disopt_st_writer *w, const char *path) {
    if (!w || !path)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "write_atomic: NULL argument");
    void *buf = NULL;
    size_t size = 0;
    DP_TRY(disopt_st_writer_save_memory(w, &buf, &size));
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen), *dir = malloc(plen);
    disopt_status s = DISOPT_OK;
    if (!tmp || !dir) {
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    } else {
        snprintf(tmp, plen, "%s.tmp%ld", path, (long)getpid());
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            s = dp_error(DISOPT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        } else {
            s = write_all(fd, buf, size, tmp);
            if (s == DISOPT_OK && fsync(fd) != 0)
                s = dp_error(DISOPT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
            if (close(fd) != 0 && s == DISOPT_OK)
                s = dp_error(DISOPT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
            if (s == DISOPT_OK && rename(tmp, path) != 0)
                s = dp_error(DISOPT_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
            if (s != DISOPT_OK)
                remove(tmp);
        }
        if (s == DISOPT_OK) { /* the rename itself durable: fsync the directory (best effort) */
            snprintf(dir, plen, "%s", path);
            char *slash = strrchr(dir, '/');
            if (slash)
                *(slash == dir ? slash + 1 : slash) = '\0';
            else
                snprintf(dir, plen, ".");
            int dfd = open(dir, O_RDONLY);
            if (dfd >= 0) {
                (void)fsync(dfd);
                close(dfd);
            }
        }
    }
    free(tmp);
    free(dir);
    disopt_free(buf);
    return s;
}

static disopt_status add_meta_int(disopt_st_writer *w, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    return disopt_st_writer_set_metadata(w, key, b);
}

static disopt_status add_meta_u64(disopt_st_writer *w, const char *key, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return disopt_st_writer_set_metadata(w, key, b);
}

static disopt_status add_user_meta(disopt_st_writer *w, const dp_kv *meta, int n_meta) {
    for (int i = 0; i < n_meta; i++)
        if (meta[i].key && meta[i].value)
            DP_TRY(disopt_st_writer_set_metadata(w, meta[i].key, meta[i].value));
    return DISOPT_OK;
}

static disopt_status ckpt_build(dp_trainer *t, disopt_st_writer *w, const dp_kv *meta, int n_meta) {
    dp_trainer_state st;
    DP_TRY(dp_trainer_get_state(t, &st));
    const dp_trainer_config *cfg = dp_trainer_get_config(t);
    const disopt_dtype dt = st.esz == 8 ? DISOPT_DTYPE_F64 : DISOPT_DTYPE_F32;
    char variant[8];
    snprintf(variant, sizeof variant, "b%d", cfg->model.variant);
    DP_TRY(disopt_st_writer_set_metadata(w, "disopt_checkpoint", "1"));
    DP_TRY(disopt_st_writer_set_metadata(w, "arch", cfg->model.arch == DISOPT_ARCH_STUDENT ? "student" : "teacher"));
    DP_TRY(disopt_st_writer_set_metadata(w, "variant", variant));
    DP_TRY(disopt_st_writer_set_metadata(w, "precision", st.esz == 8 ? "f64" : "f32"));
    DP_TRY(add_meta_u64(w, "n_params", st.n_params));
    DP_TRY(add_meta_u64(w, "n_bufs", st.n_bufs));
    DP_TRY(add_meta_int(w, "n_opt_state", st.n_opt_state));
    DP_TRY(add_meta_int(w, "opt_step", (long long)*st.opt_step));
    DP_TRY(add_meta_u64(w, "rng_seed", st.rng->seed));
    DP_TRY(add_meta_u64(w, "rng_counter", st.rng->counter));
    DP_TRY(add_meta_int(w, "forwards", (long long)*st.forwards));
    DP_TRY(add_user_meta(w, meta, n_meta));
    int64_t shp = (int64_t)st.n_params;
    DP_TRY(dp_st_writer_add_raw(w, "trainer.params", dt, 1, &shp, st.params));
    int64_t shb = (int64_t)st.n_bufs;
    DP_TRY(dp_st_writer_add_raw(w, "trainer.bufs", dt, 1, &shb, st.bufs));
    for (int k = 0; k < st.n_opt_state; k++) {
        char name[64];
        snprintf(name, sizeof name, "optim.%s", dp_optim_state_name(&cfg->optim, k));
        DP_TRY(
            dp_st_writer_add_raw(w, name, dt, 1, &shp, (const char *)st.opt_state + (size_t)k * st.n_params * st.esz));
    }
    return DISOPT_OK;
}

disopt_status dp_checkpoint_save(dp_trainer *t, const char *path, const dp_kv *meta, int n_meta) {
    if (!t || !path)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "checkpoint: NULL argument");
    disopt_st_writer *w = NULL;
    DP_TRY(disopt_st_writer_create(&w));
    disopt_status s = ckpt_build(t, w, meta, n_meta);
    if (s == DISOPT_OK)
        s = dp_write_atomic(w, path);
    disopt_st_writer_destroy(w);
    return s;
}

static int meta_ll(const disopt_st *st, const char *key, long long *v) {
    const char *s = disopt_st_metadata(st, key);
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return errno || *end ? -1 : 0;
}

static int meta_u64(const disopt_st *st, const char *key, uint64_t *v) {
    const char *s = disopt_st_metadata(st, key);
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long u = strtoull(s, &end, 10);
    *v = u;
    return errno || *end ? -1 : 0;
}

static disopt_status read_arena(disopt_st *f, const char *path, const char *name, disopt_dtype dt, void *dst,
                                size_t nbytes) {
    const disopt_st_tensor_info *ti = disopt_st_find(f, name);
    if (!ti)
        return dp_error(DISOPT_ERR_FORMAT, "%s: checkpoint tensor '%s' missing", path, name);
    if (ti->dtype != dt)
        return dp_error(DISOPT_ERR_FORMAT, "%s: checkpoint tensor '%s' has another dtype", path, name);
    return dp_st_read_raw(f, ti, dst, nbytes);
}

disopt_status dp_checkpoint_load(dp_trainer *t, const char *path, disopt_st **out) {
    if (out)
        *out = NULL;
    if (!t || !path)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "checkpoint: NULL argument");
    disopt_st *f = NULL;
    DP_TRY(disopt_st_open(path, &f));
    dp_trainer_state st;
    disopt_status s = dp_trainer_get_state(t, &st);
    const dp_trainer_config *cfg = dp_trainer_get_config(t);
    const char *mark = disopt_st_metadata(f, "disopt_checkpoint");
    const char *arch = disopt_st_metadata(f, "arch"), *variant = disopt_st_metadata(f, "variant");
    const char *prec = disopt_st_metadata(f, "precision");
    char want_variant[8];
    snprintf(want_variant, sizeof want_variant, "b%d", cfg ? cfg->model.variant : 0);
    const char *want_arch = cfg && cfg->model.arch == DISOPT_ARCH_STUDENT ? "student" : "teacher";
    long long n_opt = 0, opt_step = 0, forwards = 0;
    uint64_t n_params = 0, n_bufs = 0, seed = 0, counter = 0;
    if (s == DISOPT_OK && (!mark || strcmp(mark, "1") != 0))
        s = dp_error(DISOPT_ERR_FORMAT, "%s: not a gdal_disopt_train checkpoint (no disopt_checkpoint metadata)", path);
    if (s == DISOPT_OK && (!arch || !variant || strcmp(arch, want_arch) != 0 || strcmp(variant, want_variant) != 0))
        s = dp_error(DISOPT_ERR_INPUT, "%s: checkpoint of %s-%s, this run trains %s-%s", path, arch ? arch : "?",
                     variant ? variant : "?", want_arch, want_variant);
    if (s == DISOPT_OK && (!prec || strcmp(prec, st.esz == 8 ? "f64" : "f32") != 0))
        s = dp_error(DISOPT_ERR_INPUT, "%s: checkpoint precision %s, this run uses %s", path, prec ? prec : "?",
                     st.esz == 8 ? "f64" : "f32");
    if (s == DISOPT_OK &&
        (meta_u64(f, "n_params", &n_params) || meta_u64(f, "n_bufs", &n_bufs) || meta_ll(f, "n_opt_state", &n_opt) ||
         meta_ll(f, "opt_step", &opt_step) || meta_u64(f, "rng_seed", &seed) || meta_u64(f, "rng_counter", &counter) ||
         meta_ll(f, "forwards", &forwards)))
        s = dp_error(DISOPT_ERR_FORMAT, "%s: checkpoint metadata incomplete", path);
    if (s == DISOPT_OK && (n_params != st.n_params || n_bufs != st.n_bufs || n_opt != st.n_opt_state))
        s = dp_error(DISOPT_ERR_INPUT,
                     "%s: checkpoint arenas (%" PRIu64 " parameters, %" PRIu64 " buffers, %lld optimizer arrays) do "
                     "not fit this run (%zu, %zu, %d): another optimizer or model?",
                     path, n_params, n_bufs, n_opt, st.n_params, st.n_bufs, st.n_opt_state);
    /* read everything into scratch first: the trainer is untouched unless the whole file is good */
    const disopt_dtype dt = st.esz == 8 ? DISOPT_DTYPE_F64 : DISOPT_DTYPE_F32;
    const size_t pb = st.n_params * st.esz, bb = st.n_bufs * st.esz;
    unsigned char *scratch = NULL;
    if (s == DISOPT_OK) {
        scratch = malloc(pb * (1 + (size_t)st.n_opt_state) + bb + 1);
        if (!scratch)
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "checkpoint: out of memory");
    }
    if (s == DISOPT_OK)
        s = read_arena(f, path, "trainer.params", dt, scratch, pb);
    if (s == DISOPT_OK)
        s = read_arena(f, path, "trainer.bufs", dt, scratch + pb, bb);
    for (int k = 0; s == DISOPT_OK && k < st.n_opt_state; k++) {
        char name[64];
        snprintf(name, sizeof name, "optim.%s", dp_optim_state_name(&cfg->optim, k));
        s = read_arena(f, path, name, dt, scratch + pb + bb + (size_t)k * pb, pb);
    }
    if (s == DISOPT_OK) {
        memcpy(st.params, scratch, pb);
        memcpy(st.bufs, scratch + pb, bb);
        if (st.n_opt_state)
            memcpy(st.opt_state, scratch + pb + bb, (size_t)st.n_opt_state * pb);
        *st.opt_step = opt_step;
        st.rng->seed = seed;
        st.rng->counter = counter;
        *st.forwards = forwards;
        s = dp_trainer_push(t); /* CUDA: the host copies back to the device */
    }
    free(scratch);
    if (s == DISOPT_OK && out)
        *out = f;
    else
        disopt_st_close(f);
    return s;
}

disopt_status dp_model_save(const dp_trainer *t, const char *path, const dp_kv *meta, int n_meta) {
    if (!t || !path)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "model_save: NULL argument");
    disopt_st_writer *w = NULL;
    DP_TRY(disopt_st_writer_create(&w));
    disopt_status s = dp_trainer_add_state_dict(t, w);
    if (s == DISOPT_OK)
        s = add_user_meta(w, meta, n_meta);
    if (s == DISOPT_OK)
        s = dp_write_atomic(w, path);
    disopt_st_writer_destroy(w);
    return s;
}

disopt_status dp_trainer_init_from(dp_trainer *t, const char *path, int *matched, int *skipped) {
    if (!t || !path || !matched || !skipped)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "init_from: NULL argument");
    *matched = *skipped = 0;
    const dp_trainer_config *cfg = dp_trainer_get_config(t);
    disopt_keylist *kl = NULL;
    DP_TRY(disopt_keylist_create(&cfg->model, &kl));
    disopt_st *f = NULL;
    disopt_status s = dp_trainer_pull(t); /* CUDA: every host copy current before some are overwritten */
    if (s == DISOPT_OK)
        s = disopt_st_open(path, &f);
    float *tmp = NULL;
    for (int i = 0; s == DISOPT_OK && i < disopt_st_num_tensors(f); i++) {
        const disopt_st_tensor_info *ti = disopt_st_tensor(f, i);
        const char *k = strncmp(ti->name, "module.", 7) == 0 ? ti->name + 7 : ti->name;
        int found = -1;
        for (int j = 0; j < disopt_keylist_count(kl); j++) {
            const char *name;
            disopt_key_kind kind;
            int nd;
            int64_t sh[4];
            disopt_keylist_at(kl, j, &name, &kind, &nd, sh);
            if (strcmp(name, k) != 0)
                continue;
            int same = nd == ti->ndim && kind != DISOPT_KEY_BN_COUNT;
            for (int d = 0; same && d < nd; d++)
                same = sh[d] == ti->shape[d];
            found = same ? j : -1;
            break;
        }
        int64_t numel = 0;
        float *dst32 = NULL;
        double *dst64 = NULL;
        if (found >= 0) {
            dst32 = dp_trainer_param(t, k, NULL, &numel);
            if (!dst32)
                dst64 = dp_trainer_param_f64(t, k, NULL, &numel);
        }
        if (!dst32 && !dst64) {
            (*skipped)++;
            continue;
        }
        if (dst32) {
            s = disopt_st_read_f32(f, ti, dst32, (size_t)numel);
        } else {
            float *nt = realloc(tmp, (size_t)numel * sizeof *nt);
            if (!nt) {
                s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "init_from: out of memory");
                break;
            }
            tmp = nt;
            s = disopt_st_read_f32(f, ti, tmp, (size_t)numel);
            for (int64_t j = 0; s == DISOPT_OK && j < numel; j++)
                dst64[j] = (double)tmp[j];
        }
        if (s == DISOPT_OK)
            (*matched)++;
    }
    free(tmp);
    disopt_st_close(f);
    disopt_keylist_destroy(kl);
    if (s == DISOPT_OK)
        s = dp_trainer_push(t); /* CUDA: the host copies back to the device */
    return s;
}
