/*
 * pth.c - PyTorch zip checkpoints through GDAL's /vsizip/, and model files of either format
 * (include/disopt_io.h).
 *
 * A checkpoint written by torch.save since 1.6 is a zip archive: <archive>/data.pkl (the pickle),
 * <archive>/data/<key> (one raw little-endian storage per key), <archive>/version and, since
 * torch 1.10 or so, <archive>/byteorder. <archive> is derived from the saved file's name, so it
 * is found by looking for the one folder that holds data.pkl. The pickle goes through our own
 * restricted unpickler (pickle.c); the storages are only ever read as numbers.
 *
 * Untrusted input: data.pkl is read only up to 64 MiB; every storage a tensor uses must exist and
 * be as long as declared; the storages together may declare at most ~1100x the file's size (no
 * deflate stream inflates more than 1032x: anything beyond is a zip bomb); short reads are errors.
 */
#define _LARGEFILE64_SOURCE 1 /* VSIStatBufL is a struct stat64 */
#include "disopt_io.h"

#include "internal.h"
#include "pickle.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PTH_MAX_PKL ((vsi_l_offset)64 << 20)
#define PTH_MAX_ENTRIES 64          /* top-level folders looked at for data.pkl */
#define PTH_BOMB_RATIO 1100         /* declared storage bytes per byte of file */
#define PTH_MAX_SAFETENSORS ((GIntBig)16 << 30)

struct disopt_pth {
    char *root;     /* "/vsizip/{path}/<archive>" */
    char *archive;
    dp_pk_result r;
};

struct disopt_weights {
    disopt_st *st;
    void *image;    /* malloc'd (pth) or VSIMalloc'd (ingested safetensors) */
    int image_is_vsi;
    size_t size;
};

/* ---------------------------------------------------------------- file kinds */
disopt_file_kind disopt_file_kind_of(const void *head, size_t n) {
    const unsigned char *h = head;
    if (!h) return DISOPT_FILE_UNKNOWN;
    if (n >= 4 && memcmp(h, "PK\x03\x04", 4) == 0) return DISOPT_FILE_PTH_ZIP;
    if (n >= 9 && h[8] == '{') return DISOPT_FILE_SAFETENSORS; /* u64 header length, then JSON */
    if (n >= 2 && h[0] == 0x80 && h[1] >= 2 && h[1] <= 5) return DISOPT_FILE_PTH_LEGACY; /* a bare pickle */
    return DISOPT_FILE_UNKNOWN;
}

disopt_status disopt_file_kind_of_path(const char *path, disopt_file_kind *kind) {
    if (!path || !kind) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_file_kind_of_path: NULL argument");
    unsigned char head[16];
    VSILFILE *fp = VSIFOpenL(path, "rb");
    if (!fp) return dp_error(DISOPT_ERR_IO, "%s: cannot open", path);
    size_t n = VSIFReadL(head, 1, sizeof head, fp);
    VSIFCloseL(fp);
    *kind = disopt_file_kind_of(head, n);
    return DISOPT_OK;
}

static disopt_status legacy_error(const char *path) {
    return dp_error(DISOPT_ERR_UNSUPPORTED,
                    "%s is a legacy PyTorch checkpoint (torch < 1.6 format, or saved with "
                    "_use_new_zipfile_serialization=False), which would need a full Python unpickler; re-save it "
                    "once with torch >= 1.6: python3 -c \"import torch; torch.save(torch.load('OLD', "
                    "map_location='cpu'), 'NEW.pth')\" (only load files you trust)",
                    path);
}

/* ---------------------------------------------------------------- checkpoints */
static int dtype_bytes(disopt_dtype d) {
    switch (d) {
    case DISOPT_DTYPE_F32: return 4;
    case DISOPT_DTYPE_F16:
    case DISOPT_DTYPE_BF16: return 2;
    case DISOPT_DTYPE_F64:
    case DISOPT_DTYPE_I64: return 8;
    default: return 0;
    }
}

typedef struct {
    const char *root;
    uint64_t budget;   /* storage bytes still allowed (zip-bomb bound) */
    char **seen;       /* storage keys already charged */
    int n_seen, cap_seen;
} provider_ctx;

static disopt_status provider_check(void *user, const char *key, disopt_dtype dtype, uint64_t numel) {
    provider_ctx *c = user;
    uint64_t need = numel * (uint64_t)dtype_bytes(dtype); /* numel <= 2^33: no overflow */
    VSIStatBufL sb;
    const char *f = CPLSPrintf("%s/data/%s", c->root, key);
    if (VSIStatL(f, &sb) != 0)
        return dp_error(DISOPT_ERR_FORMAT, "storage '%s' is missing from the archive (data/%s)", key, key);
    if ((uint64_t)sb.st_size < need)
        return dp_error(DISOPT_ERR_FORMAT,
                        "storage '%s' holds %" PRIu64 " bytes but declares %" PRIu64 " elements (%" PRIu64
                        " bytes): a storage shorter than its tensors",
                        key, (uint64_t)sb.st_size, numel, need);
    for (int i = 0; i < c->n_seen; i++)
        if (strcmp(c->seen[i], key) == 0) return DISOPT_OK;
    if (need > c->budget)
        return dp_error(DISOPT_ERR_FORMAT,
                        "storages declare more bytes than the file could hold even compressed (zip bomb?) at "
                        "storage '%s'",
                        key);
    c->budget -= need;
    if (c->n_seen == c->cap_seen) {
        int nc = c->cap_seen ? 2 * c->cap_seen : 64;
        char **ns = realloc(c->seen, (size_t)nc * sizeof *ns);
        if (!ns) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        c->seen = ns;
        c->cap_seen = nc;
    }
    if (!(c->seen[c->n_seen] = strdup(key))) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    c->n_seen++;
    return DISOPT_OK;
}

/* Reads a whole member of at most `limit` bytes. */
static disopt_status read_member(const char *f, vsi_l_offset limit, unsigned char **out, size_t *size) {
    VSIStatBufL sb;
    *out = NULL;
    *size = 0;
    if (VSIStatL(f, &sb) != 0) return dp_error(DISOPT_ERR_FORMAT, "%s is missing", f);
    if ((vsi_l_offset)sb.st_size > limit)
        return dp_error(DISOPT_ERR_FORMAT, "%s declares %" PRIu64 " bytes (limit %" PRIu64 "; a zip bomb?)", f,
                        (uint64_t)sb.st_size, (uint64_t)limit);
    size_t n = (size_t)sb.st_size;
    unsigned char *b = malloc(n ? n : 1);
    if (!b) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    VSILFILE *fp = VSIFOpenL(f, "rb");
    size_t got = fp ? VSIFReadL(b, 1, n, fp) : 0;
    if (fp) VSIFCloseL(fp);
    if (!fp || got != n) {
        free(b);
        return dp_error(DISOPT_ERR_FORMAT, "%s: short read (%zu of %zu bytes; truncated or corrupt archive)", f, got,
                        n);
    }
    *out = b;
    *size = n;
    return DISOPT_OK;
}

static disopt_status find_archive(const char *zip, char **archive) {
    char **entries = VSIReadDirEx(zip, PTH_MAX_ENTRIES);
    int n = CSLCount(entries), found = 0;
    *archive = NULL;
    for (int i = 0; i < n && i < PTH_MAX_ENTRIES; i++) {
        VSIStatBufL sb;
        if (strlen(entries[i]) > 1024 || strchr(entries[i], '/')) continue;
        if (VSIStatL(CPLSPrintf("%s/%s/data.pkl", zip, entries[i]), &sb) == 0) {
            found++;
            if (!*archive) *archive = strdup(entries[i]);
        }
    }
    CSLDestroy(entries);
    if (found == 0) {
        free(*archive);
        *archive = NULL;
        return dp_error(DISOPT_ERR_FORMAT, "no <folder>/data.pkl in the zip: not a PyTorch checkpoint, or a truncated "
                                           "or corrupt archive");
    }
    if (found > 1) {
        free(*archive);
        *archive = NULL;
        return dp_error(DISOPT_ERR_FORMAT, "%d folders with a data.pkl in the zip: ambiguous checkpoint", found);
    }
    if (!*archive) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    return DISOPT_OK;
}

static disopt_status pth_open(const char *path, disopt_pth *p) {
    disopt_file_kind kind;
    DP_TRY(disopt_file_kind_of_path(path, &kind));
    if (kind == DISOPT_FILE_PTH_LEGACY) return legacy_error(path);
    if (kind == DISOPT_FILE_SAFETENSORS) return dp_error(DISOPT_ERR_FORMAT, "a safetensors file, not a PyTorch checkpoint");
    if (kind != DISOPT_FILE_PTH_ZIP)
        return dp_error(DISOPT_ERR_FORMAT, "neither a safetensors file nor a PyTorch checkpoint");
    VSIStatBufL sb;
    if (VSIStatL(path, &sb) != 0) return dp_error(DISOPT_ERR_IO, "cannot stat");
    uint64_t file_size = (uint64_t)sb.st_size;
    /* braces: the archive is found whatever its extension (.pth, .tar, none); GDAL cannot brace a '}' */
    char *zip = strdup(strchr(path, '}') ? CPLSPrintf("/vsizip/%s", path) : CPLSPrintf("/vsizip/{%s}", path));
    if (!zip) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = find_archive(zip, &p->archive);
    if (s == DISOPT_OK) {
        p->root = strdup(CPLSPrintf("%s/%s", zip, p->archive));
        if (!p->root) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    free(zip);
    DP_TRY(s);
    /* byte order: storages are little-endian unless the record says otherwise */
    const char *bo = CPLSPrintf("%s/byteorder", p->root);
    if (VSIStatL(bo, &sb) == 0) {
        unsigned char *b;
        size_t n;
        DP_TRY(read_member(bo, 64, &b, &n));
        int little = n >= 6 && memcmp(b, "little", 6) == 0 && (n == 6 || b[6] == '\n');
        free(b);
        if (!little) return dp_error(DISOPT_ERR_UNSUPPORTED, "checkpoint saved on a big-endian machine (byteorder)");
    }
    unsigned char *pkl;
    size_t npkl;
    vsi_l_offset lim = PTH_MAX_PKL;
    if ((uint64_t)lim > file_size * PTH_BOMB_RATIO + 4096) lim = (vsi_l_offset)(file_size * PTH_BOMB_RATIO + 4096);
    DP_TRY(read_member(CPLSPrintf("%s/data.pkl", p->root), lim, &pkl, &npkl));
    provider_ctx pc = {p->root, file_size * PTH_BOMB_RATIO + ((uint64_t)1 << 20), NULL, 0, 0};
    dp_pk_provider prov = {&pc, provider_check};
    s = dp_pickle_state_dict(pkl, npkl, &prov, &p->r);
    free(pkl);
    for (int i = 0; i < pc.n_seen; i++) free(pc.seen[i]);
    free(pc.seen);
    if (s == DISOPT_OK && p->r.n_tensors == 0) s = dp_error(DISOPT_ERR_FORMAT, "the state dict holds no tensors");
    return s;
}

disopt_status disopt_pth_open(const char *path, disopt_pth **out) {
    if (!path || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_pth_open: NULL argument");
    *out = NULL;
    disopt_pth *p = calloc(1, sizeof *p);
    if (!p) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = pth_open(path, p);
    if (s != DISOPT_OK) {
        disopt_pth_close(p);
        return dp_error_prefix(s, "%s", path);
    }
    *out = p;
    return DISOPT_OK;
}

void disopt_pth_close(disopt_pth *p) {
    if (!p) return;
    dp_pk_result_free(&p->r);
    free(p->root);
    free(p->archive);
    free(p);
}

int disopt_pth_num_tensors(const disopt_pth *p) { return p ? p->r.n_tensors : 0; }
int disopt_pth_num_metadata(const disopt_pth *p) { return p ? p->r.n_meta : 0; }
const char *disopt_pth_archive_name(const disopt_pth *p) { return p ? p->archive : NULL; }

void disopt_pth_metadata_at(const disopt_pth *p, int i, const char **key, const char **value) {
    int ok = p && i >= 0 && i < p->r.n_meta;
    if (key) *key = ok ? p->r.meta_keys[i] : NULL;
    if (value) *value = ok ? p->r.meta_values[i] : NULL;
}

disopt_status disopt_pth_tensor(const disopt_pth *p, int i, disopt_pth_tensor_info *info) {
    if (!p || !info || i < 0 || i >= p->r.n_tensors)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_pth_tensor: bad argument");
    const dp_pk_tensor *t = &p->r.tensors[i];
    memset(info, 0, sizeof *info);
    info->name = t->name;
    info->dtype = t->dtype;
    info->ndim = t->ndim;
    memcpy(info->shape, t->shape, sizeof info->shape);
    memcpy(info->stride, t->stride, sizeof info->stride);
    info->offset = t->offset;
    info->storage = t->storage;
    return DISOPT_OK;
}

static float decode(const unsigned char *b, disopt_dtype d) {
    uint64_t u = 0;
    int n = dtype_bytes(d);
    for (int k = n - 1; k >= 0; k--) u = (u << 8) | b[k];
    switch (d) {
    case DISOPT_DTYPE_F16: return dp_f16_to_f32((uint16_t)u);
    case DISOPT_DTYPE_BF16: return dp_bf16_to_f32((uint16_t)u);
    case DISOPT_DTYPE_F64: {
        double x;
        memcpy(&x, &u, 8);
        return (float)x;
    }
    case DISOPT_DTYPE_I64: return (float)(int64_t)u;
    default: {
        uint32_t u32 = (uint32_t)u;
        float x;
        memcpy(&x, &u32, 4);
        return x;
    }
    }
}

disopt_status disopt_pth_read_f32(disopt_pth *p, int i, float *dst, size_t numel) {
    if (!p || !dst || i < 0 || i >= p->r.n_tensors)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_pth_read_f32: bad argument");
    const dp_pk_tensor *t = &p->r.tensors[i];
    if (numel != t->numel)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tensor '%s' has %" PRIu64 " elements, not %zu", t->name,
                        t->numel, numel);
    if (numel == 0) return DISOPT_OK;
    int es = dtype_bytes(t->dtype);
    uint64_t span = t->span_hi - t->span_lo + 1; /* checked against the storage by the unpickler */
    size_t bytes;
    if (span > SIZE_MAX / (size_t)es || !dp_mul_size((size_t)span, (size_t)es, &bytes))
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tensor '%s' too large", t->name);
    unsigned char *b = malloc(bytes);
    if (!b) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes for tensor '%s')", bytes, t->name);
    const char *f = CPLSPrintf("%s/data/%s", p->root, t->storage);
    VSILFILE *fp = VSIFOpenL(f, "rb");
    int ok = fp && VSIFSeekL(fp, (vsi_l_offset)(t->span_lo * (uint64_t)es), SEEK_SET) == 0 &&
             VSIFReadL(b, 1, bytes, fp) == bytes;
    if (fp) VSIFCloseL(fp);
    if (!ok) {
        free(b);
        return dp_error(DISOPT_ERR_FORMAT, "tensor '%s': storage '%s' cannot be read in full (truncated or corrupt)",
                        t->name, t->storage);
    }
    /* gather in row-major order over the strides (relative to span_lo = the storage offset) */
    int64_t idx[DISOPT_MAX_DIMS] = {0};
    uint64_t off = 0;
    for (size_t e = 0; e < numel; e++) {
        dst[e] = decode(b + off * (uint64_t)es, t->dtype);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) {
                off += (uint64_t)t->stride[d];
                break;
            }
            off -= (uint64_t)t->stride[d] * (uint64_t)(t->shape[d] - 1);
            idx[d] = 0;
        }
    }
    free(b);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- any format */
void disopt_weights_close(disopt_weights *w) {
    if (!w) return;
    disopt_st_close(w->st);
    if (w->image_is_vsi) VSIFree(w->image);
    else free(w->image);
    free(w);
}

disopt_st *disopt_weights_st(disopt_weights *w) { return w ? w->st : NULL; }

const void *disopt_weights_image(const disopt_weights *w, size_t *size) {
    if (size) *size = w ? w->size : 0;
    return w ? w->image : NULL;
}

static disopt_status pth_to_image(disopt_pth *p, void **image, size_t *size) {
    disopt_st_writer *wr;
    DP_TRY(disopt_st_writer_create(&wr));
    disopt_status s = disopt_st_writer_set_metadata(wr, "source_format", "pytorch");
    for (int i = 0; s == DISOPT_OK && i < p->r.n_meta; i++) {
        const char *k = p->r.meta_keys[i];
        /* checkpoint entries must not pose as our own architecture keys */
        if (strcmp(k, "arch") == 0 || strcmp(k, "variant") == 0 || strcmp(k, "source_format") == 0)
            k = CPLSPrintf("checkpoint.%s", k);
        s = disopt_st_writer_set_metadata(wr, k, p->r.meta_values[i]);
    }
    for (int i = 0; s == DISOPT_OK && i < p->r.n_tensors; i++) {
        const dp_pk_tensor *t = &p->r.tensors[i];
        float *buf = malloc(t->numel ? (size_t)t->numel * sizeof(float) : sizeof(float));
        if (!buf) {
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory for tensor '%s'", t->name);
            break;
        }
        disopt_dtype out = t->dtype == DISOPT_DTYPE_F64 ? DISOPT_DTYPE_F32 : t->dtype;
        s = disopt_pth_read_f32(p, i, buf, (size_t)t->numel);
        if (s == DISOPT_OK) s = disopt_st_writer_add(wr, t->name, out, t->ndim, t->shape, buf);
        free(buf);
    }
    if (s == DISOPT_OK) s = disopt_st_writer_save_memory(wr, image, size);
    disopt_st_writer_destroy(wr);
    return s;
}

static disopt_status weights_open(const char *path, disopt_weights *w) {
    disopt_file_kind kind;
    DP_TRY(disopt_file_kind_of_path(path, &kind));
    if (kind == DISOPT_FILE_PTH_LEGACY) return legacy_error(path);
    if (kind == DISOPT_FILE_UNKNOWN) /* safetensors headers begin with '{' by the format's rule */
        return dp_error(DISOPT_ERR_FORMAT, "%s: neither a safetensors file nor a PyTorch checkpoint", path);
    if (kind == DISOPT_FILE_PTH_ZIP) {
        disopt_pth *p;
        DP_TRY(disopt_pth_open(path, &p));
        disopt_status s = pth_to_image(p, &w->image, &w->size);
        disopt_pth_close(p);
        if (s != DISOPT_OK) return dp_error_prefix(s, "%s", path);
    } else {
        GByte *b = NULL;
        vsi_l_offset n = 0;
        if (!VSIIngestFile(NULL, path, &b, &n, PTH_MAX_SAFETENSORS))
            return dp_error(DISOPT_ERR_IO, "%s: cannot read (or larger than 16 GiB)", path);
        w->image = b;
        w->image_is_vsi = 1;
        w->size = (size_t)n;
    }
    disopt_status s = disopt_st_open_memory(w->image, w->size, &w->st);
    if (s != DISOPT_OK) return dp_error_prefix(s, "%s", path);
    return DISOPT_OK;
}

disopt_status disopt_weights_open(const char *path, disopt_weights **out) {
    if (!path || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_weights_open: NULL argument");
    *out = NULL;
    disopt_weights *w = calloc(1, sizeof *w);
    if (!w) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = weights_open(path, w);
    if (s != DISOPT_OK) {
        disopt_weights_close(w);
        return s;
    }
    *out = w;
    return DISOPT_OK;
}

disopt_status disopt_model_load_any(disopt_engine *engine, const char *path, disopt_model **out) {
    if (!engine || !path || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_load_any: NULL argument");
    *out = NULL;
    disopt_weights *w;
    DP_TRY(disopt_weights_open(path, &w));
    disopt_status s = disopt_model_load_memory(engine, w->image, w->size, out);
    disopt_weights_close(w);
    if (s != DISOPT_OK) return dp_error_prefix(s, "%s", path);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- key check */
static const char *strip_module(const char *k) { return strncmp(k, "module.", 7) == 0 ? k + 7 : k; }

typedef struct {
    const char *name;
    const disopt_st_tensor_info *t;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static const named *find_named(const named *v, int n, const char *name) {
    named key = {name, NULL};
    return bsearch(&key, v, (size_t)n, sizeof *v, cmp_named);
}

static int same_shape(const disopt_st_tensor_info *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++) o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "",
                                                                    (long long)shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Matches (name + shape) of cfg's keys in the sorted file names; reports when fn != NULL. */
static disopt_status match_config(const disopt_model_config *cfg, const named *v, int n, disopt_key_report_fn fn,
                                  void *user, disopt_weights_report *rep) {
    disopt_keylist *kl;
    DP_TRY(disopt_keylist_create(cfg, &kl));
    int nk = disopt_keylist_count(kl);
    unsigned char *used = calloc((size_t)n + 1, 1);
    if (!used) {
        disopt_keylist_destroy(kl);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    rep->matched = rep->missing = rep->unexpected = rep->bad_shape = 0;
    for (int i = 0; i < nk; i++) {
        const char *name;
        disopt_key_kind kind;
        int ndim;
        int64_t shape[4];
        disopt_keylist_at(kl, i, &name, &kind, &ndim, shape);
        const named *f = find_named(v, n, name);
        if (!f) {
            if (kind == DISOPT_KEY_BN_COUNT) continue;
            rep->missing++;
            if (fn) fn(user, "missing", name, "");
            continue;
        }
        used[f - v] = 1;
        if (kind == DISOPT_KEY_BN_COUNT || same_shape(f->t, ndim, shape)) {
            rep->matched++;
        } else {
            char a[96], b[96], d[256];
            fmt_shape(a, sizeof a, f->t->ndim, f->t->shape);
            fmt_shape(b, sizeof b, ndim, shape);
            snprintf(d, sizeof d, "file %s, architecture %s", a, b);
            rep->bad_shape++;
            if (fn) fn(user, "shape", name, d);
        }
    }
    for (int i = 0; i < n; i++)
        if (!used[i]) {
            rep->unexpected++;
            if (fn) fn(user, "unexpected", v[i].name, "");
        }
    free(used);
    disopt_keylist_destroy(kl);
    return DISOPT_OK;
}

disopt_status disopt_weights_check(disopt_weights *w, disopt_key_report_fn fn, void *user,
                                   disopt_weights_report *report) {
    if (!w || !report) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_weights_check: NULL argument");
    memset(report, 0, sizeof *report);
    int n = disopt_st_num_tensors(w->st);
    named *v = calloc((size_t)n + 1, sizeof *v);
    if (!v) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    int in_ch = 4, classes = 2;
    for (int i = 0; i < n; i++) {
        const disopt_st_tensor_info *t = disopt_st_tensor(w->st, i);
        v[i].name = strip_module(t->name);
        v[i].t = t;
        size_t len = strlen(v[i].name);
        if (len < 20 || strcmp(v[i].name + len - 20, ".num_batches_tracked") != 0) {
            int64_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
            report->num_parameters += numel;
        }
        if ((strcmp(v[i].name, "encoder._conv_stem.weight") == 0 ||
             strcmp(v[i].name, "encoder_sar._conv_stem.weight") == 0) && t->ndim == 4 && t->shape[1] > 0 &&
            t->shape[1] <= DISOPT_MAX_BANDS)
            in_ch = (int)t->shape[1];
        if ((strcmp(v[i].name, "segmentation_head.0.weight") == 0 || strcmp(v[i].name, "ffm_seg_head.0.weight") == 0) &&
            t->ndim == 4 && t->shape[0] > 0 && t->shape[0] <= 1024)
            classes = (int)t->shape[0];
    }
    report->num_tensors = n;
    qsort(v, (size_t)n, sizeof *v, cmp_named);
    disopt_status s = DISOPT_OK;
    int best = -1;
    disopt_weights_report r;
    for (int a = 0; a < 2 && s == DISOPT_OK; a++)
        for (int var = 0; var <= 7 && s == DISOPT_OK; var++) {
            disopt_model_config cfg = {a ? DISOPT_ARCH_STUDENT : DISOPT_ARCH_TEACHER, var, in_ch, classes};
            memset(&r, 0, sizeof r);
            s = match_config(&cfg, v, n, NULL, NULL, &r);
            if (s == DISOPT_OK && r.matched > best) {
                best = r.matched;
                report->config = cfg;
            }
        }
    if (s == DISOPT_OK) s = match_config(&report->config, v, n, fn, user, report);
    free(v);
    return s;
}
