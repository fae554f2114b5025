/*
 * safetensors.c - reader and writer of the safetensors format (json-c for the header).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data section.
 * The reader treats the file as untrusted: the header size is bounded, every offset is checked
 * against the data section, sizes must equal numel * element size (overflow-checked), and
 * tensors may not overlap.
 */
#include "internal.h"

#include <json-c/json.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER (100u * 1024u * 1024u)
#define ST_MAX_TENSORS 100000

typedef struct {
    char *key, *value;
} st_meta;

struct disopt_st {
    FILE *fp;                /* file-backed, or */
    const unsigned char *mem;/* memory-backed (not owned) */
    uint64_t data_start;     /* absolute offset of the data section */
    uint64_t data_size;
    disopt_st_tensor_info *tensors;
    int n_tensors;
    st_meta *meta;
    int n_meta;
    char *path;
};

static const struct {
    const char *name;
    disopt_dtype dtype;
    int size;
} ST_DTYPES[] = {
    {"F32", DISOPT_DTYPE_F32, 4}, {"F16", DISOPT_DTYPE_F16, 2}, {"BF16", DISOPT_DTYPE_BF16, 2},
    {"I64", DISOPT_DTYPE_I64, 8}, {"F64", DISOPT_DTYPE_F64, 8}, {"I32", DISOPT_DTYPE_I32, 4},
    {"U8", DISOPT_DTYPE_U8, 1},
};

static int dtype_size(disopt_dtype d) {
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (ST_DTYPES[i].dtype == d) return ST_DTYPES[i].size;
    return 0;
}

static const char *dtype_name(disopt_dtype d) {
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (ST_DTYPES[i].dtype == d) return ST_DTYPES[i].name;
    return "?";
}

void disopt_st_close(disopt_st *st) {
    if (!st) return;
    if (st->fp) fclose(st->fp);
    for (int i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->tensors);
    free(st->meta);
    free(st->path);
    free(st);
}

static disopt_status st_read(disopt_st *st, uint64_t off, void *dst, size_t n) {
    if (st->mem) {
        memcpy(dst, st->mem + off, n);
        return DISOPT_OK;
    }
    if (fseeko(st->fp, (off_t)off, SEEK_SET) != 0)
        return dp_error(DISOPT_ERR_IO, "%s: seek failed: %s", st->path, strerror(errno));
    if (fread(dst, 1, n, st->fp) != n)
        return dp_error(DISOPT_ERR_IO, "%s: short read at offset %llu (file truncated?)", st->path,
                        (unsigned long long)off);
    return DISOPT_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const disopt_st_tensor_info *x = *(disopt_st_tensor_info *const *)a, *y = *(disopt_st_tensor_info *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static disopt_status parse_tensor(disopt_st *st, const char *name, json_object *v, disopt_st_tensor_info *t) {
    json_object *jd, *js, *jo;
    if (!json_object_is_type(v, json_type_object) || !json_object_object_get_ex(v, "dtype", &jd) ||
        !json_object_object_get_ex(v, "shape", &js) || !json_object_object_get_ex(v, "data_offsets", &jo))
        return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': entry needs dtype, shape and data_offsets", st->path,
                        name);
    if (!json_object_is_type(jd, json_type_string) || !json_object_is_type(js, json_type_array) ||
        !json_object_is_type(jo, json_type_array) || json_object_array_length(jo) != 2)
        return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': malformed entry", st->path, name);
    const char *ds = json_object_get_string(jd);
    t->dtype = DISOPT_DTYPE_UNKNOWN;
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (strcmp(ds, ST_DTYPES[i].name) == 0) t->dtype = ST_DTYPES[i].dtype;
    if (t->dtype == DISOPT_DTYPE_UNKNOWN)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype %s", st->path, name, ds);
    size_t nd = json_object_array_length(js);
    if (nd > DISOPT_MAX_DIMS)
        return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': %zu dimensions (max %d)", st->path, name, nd,
                        DISOPT_MAX_DIMS);
    t->ndim = (int)nd;
    size_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_object *d = json_object_array_get_idx(js, i);
        if (!json_object_is_type(d, json_type_int))
            return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': shape is not integer", st->path, name);
        int64_t v64 = json_object_get_int64(d);
        if (v64 < 0 || v64 > (int64_t)1 << 40)
            return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': bad dimension %lld", st->path, name,
                            (long long)v64);
        t->shape[i] = v64;
        if (!dp_mul_size(numel, (size_t)v64, &numel))
            return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': size overflows", st->path, name);
    }
    int64_t o[2];
    for (int i = 0; i < 2; i++) {
        json_object *d = json_object_array_get_idx(jo, (size_t)i);
        if (!json_object_is_type(d, json_type_int) || (o[i] = json_object_get_int64(d)) < 0)
            return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': bad data_offsets", st->path, name);
    }
    size_t nbytes;
    if (!dp_mul_size(numel, (size_t)dtype_size(t->dtype), &nbytes))
        return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': size overflows", st->path, name);
    if (o[1] < o[0] || (uint64_t)o[1] > st->data_size)
        return dp_error(DISOPT_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%lld, %lld] outside the data section (%llu bytes; file "
                        "truncated or header lies)",
                        st->path, name, (long long)o[0], (long long)o[1], (unsigned long long)st->data_size);
    if ((uint64_t)(o[1] - o[0]) != nbytes)
        return dp_error(DISOPT_ERR_FORMAT, "%s: tensor '%s': %lld bytes for %zu elements of %s", st->path, name,
                        (long long)(o[1] - o[0]), numel, ds);
    t->offset = (uint64_t)o[0];
    t->nbytes = nbytes;
    t->name = strdup(name);
    if (!t->name) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    return DISOPT_OK;
}

static disopt_status parse_header(disopt_st *st, const char *json, size_t len) {
    json_tokener *tok = json_tokener_new();
    if (!tok) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        if (root) json_object_put(root);
        return dp_error(DISOPT_ERR_FORMAT, "%s: not a safetensors file (header is not valid JSON: %s)", st->path,
                        json_tokener_error_desc(jerr));
    }
    disopt_status s = DISOPT_OK;
    if (!json_object_is_type(root, json_type_object)) {
        s = dp_error(DISOPT_ERR_FORMAT, "%s: not a safetensors file (header is not a JSON object)", st->path);
        goto done;
    }
    int count = json_object_object_length(root);
    if (count > ST_MAX_TENSORS) {
        s = dp_error(DISOPT_ERR_FORMAT, "%s: %d header entries (max %d)", st->path, count, ST_MAX_TENSORS);
        goto done;
    }
    st->tensors = calloc((size_t)count + 1, sizeof *st->tensors);
    if (!st->tensors) {
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    json_object_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_object_is_type(val, json_type_object)) {
                s = dp_error(DISOPT_ERR_FORMAT, "%s: __metadata__ is not an object", st->path);
                goto done;
            }
            int mc = json_object_object_length(val);
            st->meta = calloc((size_t)mc + 1, sizeof *st->meta);
            if (!st->meta) {
                s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
                goto done;
            }
            json_object_object_foreach(val, mk, mv) {
                if (!json_object_is_type(mv, json_type_string)) {
                    s = dp_error(DISOPT_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", st->path, mk);
                    goto done;
                }
                st->meta[st->n_meta].key = strdup(mk);
                st->meta[st->n_meta].value = strdup(json_object_get_string(mv));
                st->n_meta++;
                if (!st->meta[st->n_meta - 1].key || !st->meta[st->n_meta - 1].value) {
                    s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
                    goto done;
                }
            }
            continue;
        }
        s = parse_tensor(st, key, val, &st->tensors[st->n_tensors]);
        if (s != DISOPT_OK) goto done;
        st->n_tensors++;
    }
    if (st->n_tensors > 1) { /* no two tensors may share bytes */
        disopt_st_tensor_info **v = malloc((size_t)st->n_tensors * sizeof *v);
        if (!v) {
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
            goto done;
        }
        for (int i = 0; i < st->n_tensors; i++) v[i] = &st->tensors[i];
        qsort(v, (size_t)st->n_tensors, sizeof *v, cmp_offset);
        for (int i = 1; i < st->n_tensors && s == DISOPT_OK; i++)
            if (v[i]->offset < v[i - 1]->offset + v[i - 1]->nbytes)
                s = dp_error(DISOPT_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", st->path, v[i - 1]->name,
                             v[i]->name);
        free(v);
    }
done:
    json_object_put(root);
    return s;
}

static disopt_status st_open_common(disopt_st *st, uint64_t file_size) {
    unsigned char hb[8];
    if (file_size < 8)
        return dp_error(DISOPT_ERR_FORMAT, "%s: not a safetensors file (%llu bytes, too short)", st->path,
                        (unsigned long long)file_size);
    DP_TRY(st_read(st, 0, hb, 8));
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | hb[i];
    if (n < 2 || n > ST_MAX_HEADER)
        return dp_error(DISOPT_ERR_FORMAT, "%s: not a safetensors file (header length %llu)", st->path,
                        (unsigned long long)n);
    if (n > file_size - 8)
        return dp_error(DISOPT_ERR_FORMAT, "%s: truncated safetensors file (header of %llu bytes, file of %llu)",
                        st->path, (unsigned long long)n, (unsigned long long)file_size);
    char *json = malloc((size_t)n + 1);
    if (!json) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = st_read(st, 8, json, (size_t)n);
    if (s == DISOPT_OK) {
        json[n] = '\0';
        if (json[0] != '{') {
            s = dp_error(DISOPT_ERR_FORMAT, "%s: not a safetensors file (header does not start with '{')",
                         st->path);
        } else {
            st->data_start = 8 + n;
            st->data_size = file_size - 8 - n;
            s = parse_header(st, json, (size_t)n);
        }
    }
    free(json);
    return s;
}

disopt_status disopt_st_open(const char *path, disopt_st **out) {
    if (!path || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_st_open: NULL argument");
    *out = NULL;
    disopt_st *st = calloc(1, sizeof *st);
    if (!st) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    st->path = strdup(path);
    st->fp = fopen(path, "rb");
    if (!st->fp || !st->path) {
        disopt_status s = dp_error(DISOPT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        disopt_st_close(st);
        return s;
    }
    if (fseeko(st->fp, 0, SEEK_END) != 0) {
        disopt_st_close(st);
        return dp_error(DISOPT_ERR_IO, "%s: cannot seek", path);
    }
    off_t size = ftello(st->fp);
    disopt_status s = size < 0 ? dp_error(DISOPT_ERR_IO, "%s: cannot tell size", path)
                               : st_open_common(st, (uint64_t)size);
    if (s != DISOPT_OK) {
        disopt_st_close(st);
        return s;
    }
    *out = st;
    return DISOPT_OK;
}

disopt_status disopt_st_open_memory(const void *buf, size_t size, disopt_st **out) {
    if (!buf || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_st_open_memory: NULL argument");
    *out = NULL;
    disopt_st *st = calloc(1, sizeof *st);
    if (!st) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    st->mem = buf;
    st->path = strdup("<memory>");
    disopt_status s = st->path ? st_open_common(st, size) : dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    if (s != DISOPT_OK) {
        disopt_st_close(st);
        return s;
    }
    *out = st;
    return DISOPT_OK;
}

int disopt_st_num_tensors(const disopt_st *st) { return st ? st->n_tensors : 0; }
const disopt_st_tensor_info *disopt_st_tensor(const disopt_st *st, int i) {
    return (st && i >= 0 && i < st->n_tensors) ? &st->tensors[i] : NULL;
}
const disopt_st_tensor_info *disopt_st_find(const disopt_st *st, const char *name) {
    if (!st || !name) return NULL;
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}
int disopt_st_num_metadata(const disopt_st *st) { return st ? st->n_meta : 0; }
void disopt_st_metadata_at(const disopt_st *st, int i, const char **key, const char **value) {
    *key = *value = NULL;
    if (st && i >= 0 && i < st->n_meta) {
        *key = st->meta[i].key;
        *value = st->meta[i].value;
    }
}
const char *disopt_st_metadata(const disopt_st *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

static uint64_t rd_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

disopt_status disopt_st_read_f32(disopt_st *st, const disopt_st_tensor_info *t, float *dst, size_t numel) {
    if (!st || !t || !dst) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_st_read_f32: NULL argument");
    int es = dtype_size(t->dtype);
    if (es == 0 || t->nbytes != (uint64_t)numel * (uint64_t)es)
        return dp_error(DISOPT_ERR_SHAPE, "%s: tensor '%s' holds %llu bytes, %zu elements wanted", st->path,
                        t->name, (unsigned long long)t->nbytes, numel);
    const uint64_t off = st->data_start + t->offset;
    if (t->dtype == DISOPT_DTYPE_F32) { /* read straight into dst, then fix the byte order */
        DP_TRY(st_read(st, off, dst, numel * 4));
        unsigned char *p = (unsigned char *)dst;
        for (size_t i = 0; i < numel; i++) {
            uint32_t u = (uint32_t)rd_le(p + 4 * i, 4);
            memcpy(&dst[i], &u, 4);
        }
        return DISOPT_OK;
    }
    enum { CHUNK = 1 << 16 };
    unsigned char *buf = malloc((size_t)CHUNK * (size_t)es);
    if (!buf) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = DISOPT_OK;
    for (size_t i0 = 0; i0 < numel && s == DISOPT_OK; i0 += CHUNK) {
        size_t m = numel - i0 < CHUNK ? numel - i0 : CHUNK;
        s = st_read(st, off + i0 * (size_t)es, buf, m * (size_t)es);
        for (size_t i = 0; s == DISOPT_OK && i < m; i++) {
            uint64_t u = rd_le(buf + i * (size_t)es, es);
            float f;
            switch (t->dtype) {
            case DISOPT_DTYPE_F16: f = dp_f16_to_f32((uint16_t)u); break;
            case DISOPT_DTYPE_BF16: f = dp_bf16_to_f32((uint16_t)u); break;
            case DISOPT_DTYPE_F64: { double d; memcpy(&d, &u, 8); f = (float)d; break; }
            case DISOPT_DTYPE_I64: f = (float)(int64_t)u; break;
            case DISOPT_DTYPE_I32: f = (float)(int32_t)(uint32_t)u; break;
            case DISOPT_DTYPE_U8: f = (float)u; break;
            default: f = 0.0f; break;
            }
            dst[i0 + i] = f;
        }
    }
    free(buf);
    return s;
}

/* ---------------------------------------------------------------- writer */
typedef struct {
    char *name;
    disopt_dtype dtype;
    int ndim;
    int64_t shape[DISOPT_MAX_DIMS];
    unsigned char *bytes;
    size_t nbytes;
} st_wtensor;

struct disopt_st_writer {
    st_wtensor *t;
    int n, cap;
    json_object *meta;
};

disopt_status disopt_st_writer_create(disopt_st_writer **out) {
    disopt_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->meta = json_object_new_object())) {
        free(w);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    *out = w;
    return DISOPT_OK;
}

void disopt_st_writer_destroy(disopt_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].bytes);
    }
    free(w->t);
    json_object_put(w->meta);
    free(w);
}

disopt_status disopt_st_writer_set_metadata(disopt_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "set_metadata: NULL argument");
    json_object *v = json_object_new_string(value);
    if (!v || json_object_object_add(w->meta, key, v) != 0) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    return DISOPT_OK;
}

disopt_status disopt_st_writer_add(disopt_st_writer *w, const char *name, disopt_dtype dtype, int ndim,
                                   const int64_t *shape, const float *data) {
    if (!w || !name || (!shape && ndim > 0) || !data)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add: NULL argument");
    if (dtype != DISOPT_DTYPE_F32 && dtype != DISOPT_DTYPE_F16 && dtype != DISOPT_DTYPE_BF16 &&
        dtype != DISOPT_DTYPE_I64)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "writer_add: dtype %s cannot be written", dtype_name(dtype));
    if (ndim < 0 || ndim > DISOPT_MAX_DIMS) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add: bad ndim");
    if (strcmp(name, "__metadata__") == 0) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "reserved tensor name");
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add: tensor '%s' added twice", name);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || !dp_mul_size(numel, (size_t)shape[i], &numel))
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add: bad shape");
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 64;
        st_wtensor *nt = realloc(w->t, (size_t)nc * sizeof *nt);
        if (!nt) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        w->t = nt;
        w->cap = nc;
    }
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    int es = dtype_size(dtype);
    t->nbytes = numel * (size_t)es;
    t->bytes = malloc(t->nbytes ? t->nbytes : 1);
    t->name = strdup(name);
    if (!t->bytes || !t->name) {
        free(t->bytes);
        free(t->name);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    for (size_t i = 0; i < numel; i++) {
        uint64_t u;
        unsigned char *p = t->bytes + i * (size_t)es;
        if (dtype == DISOPT_DTYPE_F32) {
            uint32_t u32;
            memcpy(&u32, &data[i], 4);
            u = u32;
        } else if (dtype == DISOPT_DTYPE_I64) {
            u = (uint64_t)(int64_t)data[i];
        } else {
            u = dtype == DISOPT_DTYPE_F16 ? dp_f32_to_f16(data[i]) : dp_f32_to_bf16(data[i]);
        }
        for (int k = 0; k < es; k++) p[k] = (unsigned char)(u >> (8 * k));
    }
    w->n++;
    return DISOPT_OK;
}

disopt_status dp_st_writer_add_raw(disopt_st_writer *w, const char *name, disopt_dtype dtype, int ndim,
                                   const int64_t *shape, const void *bytes) {
    if (!w || !name || (!shape && ndim > 0) || !bytes)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add_raw: NULL argument");
    int es = dtype_size(dtype);
    if (es == 0) return dp_error(DISOPT_ERR_UNSUPPORTED, "writer_add_raw: unknown dtype");
    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || !dp_mul_size(numel, (size_t)shape[i], &numel))
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add_raw: bad shape");
    size_t nbytes;
    if (!dp_mul_size(numel, (size_t)es, &nbytes))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add_raw: too big");
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 64;
        st_wtensor *nt = realloc(w->t, (size_t)nc * sizeof *nt);
        if (!nt) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        w->t = nt;
        w->cap = nc;
    }
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_add_raw: tensor '%s' added twice", name);
    if (strcmp(name, "__metadata__") == 0) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "reserved tensor name");
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->nbytes = nbytes;
    t->bytes = malloc(t->nbytes ? t->nbytes : 1);
    t->name = strdup(name);
    if (!t->bytes || !t->name) {
        free(t->bytes);
        free(t->name);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (t->nbytes) memcpy(t->bytes, bytes, t->nbytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    w->n++;
    return DISOPT_OK;
}

disopt_status dp_st_read_raw(disopt_st *st, const disopt_st_tensor_info *t, void *dst, size_t nbytes) {
    if (!st || !t || !dst) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dp_st_read_raw: NULL argument");
    if (t->nbytes != (uint64_t)nbytes)
        return dp_error(DISOPT_ERR_SHAPE, "%s: tensor '%s' holds %llu bytes, %zu wanted", st->path, t->name,
                        (unsigned long long)t->nbytes, nbytes);
    return st_read(st, st->data_start + t->offset, dst, nbytes);
}

/* The JSON header of the file (caller puts root). */
static disopt_status writer_header(disopt_st_writer *w, json_object **out) {
    json_object *root = json_object_new_object();
    if (!root) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    if (json_object_object_length(w->meta) > 0) json_object_object_add(root, "__metadata__", json_object_get(w->meta));
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_wtensor *t = &w->t[i];
        json_object *e = json_object_new_object(), *sh = json_object_new_array(), *of = json_object_new_array();
        json_object_object_add(e, "dtype", json_object_new_string(dtype_name(t->dtype)));
        for (int k = 0; k < t->ndim; k++) json_object_array_add(sh, json_object_new_int64(t->shape[k]));
        json_object_object_add(e, "shape", sh);
        json_object_array_add(of, json_object_new_int64((int64_t)off));
        json_object_array_add(of, json_object_new_int64((int64_t)(off + t->nbytes)));
        json_object_object_add(e, "data_offsets", of);
        json_object_object_add(root, t->name, e);
        off += t->nbytes;
    }
    *out = root;
    return DISOPT_OK;
}

disopt_status disopt_st_writer_save_memory(disopt_st_writer *w, void **buf, size_t *size) {
    if (!w || !buf || !size) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_save_memory: NULL argument");
    *buf = NULL;
    *size = 0;
    json_object *root;
    DP_TRY(writer_header(w, &root));
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7, total = 8 + padded;
    for (int i = 0; i < w->n; i++) total += w->t[i].nbytes;
    unsigned char *b = malloc(total);
    if (!b) {
        json_object_put(root);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory (%zu bytes for a safetensors image)", total);
    }
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)padded >> (8 * k));
    memcpy(b + 8, js, jl);
    memset(b + 8 + jl, ' ', padded - jl);
    size_t o = 8 + padded;
    for (int i = 0; i < w->n; i++) {
        if (w->t[i].nbytes) memcpy(b + o, w->t[i].bytes, w->t[i].nbytes);
        o += w->t[i].nbytes;
    }
    json_object_put(root);
    *buf = b;
    *size = total;
    return DISOPT_OK;
}

void disopt_free(void *p) { free(p); }

disopt_status disopt_st_writer_save(disopt_st_writer *w, const char *path) {
    if (!w || !path) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "writer_save: NULL argument");
    json_object *root;
    DP_TRY(writer_header(w, &root));
    disopt_status s = DISOPT_OK;
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    size_t plen = strlen(path) + 16;
    char *tmp = malloc(plen);
    if (!tmp) {
        json_object_put(root);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    }
    snprintf(tmp, plen, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        s = dp_error(DISOPT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        unsigned char hb[8];
        for (int k = 0; k < 8; k++) hb[k] = (unsigned char)((uint64_t)padded >> (8 * k));
        int ok = fwrite(hb, 1, 8, fp) == 8 && fwrite(js, 1, jl, fp) == jl;
        for (size_t k = jl; ok && k < padded; k++) ok = fputc(' ', fp) != EOF;
        for (int i = 0; ok && i < w->n; i++) ok = fwrite(w->t[i].bytes, 1, w->t[i].nbytes, fp) == w->t[i].nbytes;
        if (fclose(fp) != 0) ok = 0;
        if (!ok) {
            s = dp_error(DISOPT_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
            remove(tmp);
        } else if (rename(tmp, path) != 0) {
            s = dp_error(DISOPT_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
            remove(tmp);
        }
    }
    free(tmp);
    json_object_put(root);
    return s;
}
