/*
 * pickle.c - a restricted unpickler for PyTorch state dicts (see pickle.h).
 *
 * A small stack machine over our own value type. Values are never freed one by one: each is
 * linked into the parse's list and all are released at the end, so shared (memoised) and even
 * cyclic values cost nothing special, and no code here recurses over a value.
 *
 * Known opcodes (protocols 2 to 5): PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE
 * BININT BININT1 BININT2 LONG1 BINFLOAT BINUNICODE SHORT_BINUNICODE BINUNICODE8 SHORT_BINBYTES
 * BINBYTES EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS EMPTY_DICT SETITEM
 * SETITEMS BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET GLOBAL STACK_GLOBAL BINPERSID REDUCE BUILD.
 * Known globals: collections.OrderedDict (called with no arguments), torch._utils._rebuild_tensor_v2,
 * the storage types torch.{Float,Half,BFloat16,Double,Long}Storage (only inside a persistent id), and
 * for numeric numpy scalars numpy.core.multiarray.scalar, numpy.dtype and _codecs.encode(str, 'latin1').
 */
#include "pickle.h"

#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_BYTES, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR,
    V_NPDTYPE /* a numpy scalar's dtype: s = "f8", "i8", ...; i = 1 when big-endian */
} vtype;

static const char *const VTYPE_NAME[] = {"None", "bool", "int", "float", "str", "bytes", "tuple",
                                         "list", "dict", "global", "storage", "tensor", "numpy dtype"};

typedef enum {
    G_ODICT, G_REBUILD_V2, G_FLOAT_ST, G_HALF_ST, G_BF16_ST, G_DOUBLE_ST, G_LONG_ST, G_NP_SCALAR, G_NP_DTYPE,
    G_CODECS_ENCODE
} gid;

static const struct {
    const char *module, *name;
    gid id;
    disopt_dtype dtype;
} GLOBALS[] = {
    {"collections", "OrderedDict", G_ODICT, DISOPT_DTYPE_UNKNOWN},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, DISOPT_DTYPE_UNKNOWN},
    {"torch", "FloatStorage", G_FLOAT_ST, DISOPT_DTYPE_F32},
    {"torch", "HalfStorage", G_HALF_ST, DISOPT_DTYPE_F16},
    {"torch", "BFloat16Storage", G_BF16_ST, DISOPT_DTYPE_BF16},
    {"torch", "DoubleStorage", G_DOUBLE_ST, DISOPT_DTYPE_F64},
    {"torch", "LongStorage", G_LONG_ST, DISOPT_DTYPE_I64},
    /* numpy scalars (a wrapper's 'best_metric' is often a numpy float): numbers only, no object dtype */
    {"numpy.core.multiarray", "scalar", G_NP_SCALAR, DISOPT_DTYPE_UNKNOWN},
    {"numpy._core.multiarray", "scalar", G_NP_SCALAR, DISOPT_DTYPE_UNKNOWN},
    {"numpy", "dtype", G_NP_DTYPE, DISOPT_DTYPE_UNKNOWN},
    {"_codecs", "encode", G_CODECS_ENCODE, DISOPT_DTYPE_UNKNOWN}, /* protocol 2's form of bytes */
};

typedef struct val val;
struct val {
    vtype t;
    val *all_next;  /* every value of the parse, for the final release */
    int64_t i;      /* int, bool; global: index into GLOBALS */
    double f;
    char *s;        /* str/bytes (NUL-terminated copy); storage: key */
    size_t slen;
    val **items;    /* tuple/list items; dict: key0, value0, key1, value1, ... */
    size_t n, cap;
    uint64_t numel; /* storage: declared elements */
    dp_pk_tensor *tensor; /* tensor (name unset) */
};

typedef struct {
    const unsigned char *p;
    size_t size, pos;
    val *all;
    size_t n_objects;
    val **stack;
    size_t sp, stack_cap;
    size_t marks[DP_PK_MAX_MARKS];
    int n_marks;
    val **memo;
    size_t memo_cap, memo_len; /* memo_len: entries stored (MEMOIZE's next index) */
    const dp_pk_provider *provider;
} pk;

static disopt_status oom(void) { return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "pickle: out of memory"); }

static disopt_status new_val(pk *k, vtype t, val **out) {
    if (k->n_objects >= DP_PK_MAX_OBJECTS)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: more than %d values", DP_PK_MAX_OBJECTS);
    val *v = calloc(1, sizeof *v);
    if (!v) return oom();
    v->t = t;
    v->all_next = k->all;
    k->all = v;
    k->n_objects++;
    *out = v;
    return DISOPT_OK;
}

static void free_all(pk *k) {
    val *v = k->all;
    while (v) {
        val *n = v->all_next;
        free(v->s);
        free(v->items);
        if (v->tensor) free(v->tensor->storage);
        free(v->tensor);
        free(v);
        v = n;
    }
    k->all = NULL;
    free(k->stack);
    free(k->memo);
}

static disopt_status push(pk *k, val *v) {
    if (k->sp == k->stack_cap) {
        if (k->stack_cap >= DP_PK_MAX_STACK)
            return dp_error(DISOPT_ERR_FORMAT, "pickle: stack deeper than %d values", DP_PK_MAX_STACK);
        size_t nc = k->stack_cap ? 2 * k->stack_cap : 256;
        val **ns = realloc(k->stack, nc * sizeof *ns);
        if (!ns) return oom();
        k->stack = ns;
        k->stack_cap = nc;
    }
    k->stack[k->sp++] = v;
    return DISOPT_OK;
}

static size_t floor_sp(const pk *k) { return k->n_marks ? k->marks[k->n_marks - 1] : 0; }

static disopt_status pop(pk *k, val **out) {
    if (k->sp <= floor_sp(k)) return dp_error(DISOPT_ERR_FORMAT, "pickle: stack underflow at offset %zu", k->pos);
    *out = k->stack[--k->sp];
    return DISOPT_OK;
}

static disopt_status top(pk *k, val **out) {
    if (k->sp <= floor_sp(k)) return dp_error(DISOPT_ERR_FORMAT, "pickle: stack underflow at offset %zu", k->pos);
    *out = k->stack[k->sp - 1];
    return DISOPT_OK;
}

/* Pops the topmost mark: the values above it are k->stack[*from .. k->sp). */
static disopt_status pop_mark(pk *k, size_t *from) {
    if (k->n_marks == 0) return dp_error(DISOPT_ERR_FORMAT, "pickle: no MARK at offset %zu", k->pos);
    *from = k->marks[--k->n_marks];
    return DISOPT_OK;
}

static disopt_status need(pk *k, size_t n) {
    if (n > k->size - k->pos)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: truncated at offset %zu (needs %zu more bytes)", k->pos, n);
    return DISOPT_OK;
}

static uint64_t rd_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static disopt_status add_item(val *c, val *item) {
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 8;
        val **ni = realloc(c->items, nc * sizeof *ni);
        if (!ni) return oom();
        c->items = ni;
        c->cap = nc;
    }
    c->items[c->n++] = item;
    return DISOPT_OK;
}

static disopt_status make_seq(pk *k, vtype t, size_t from, val **out) {
    val *v = NULL;
    DP_TRY(new_val(k, t, &v));
    size_t n = k->sp - from;
    if (n) {
        v->items = malloc(n * sizeof *v->items);
        if (!v->items) return oom();
        memcpy(v->items, k->stack + from, n * sizeof *v->items);
    }
    v->n = v->cap = n;
    k->sp = from;
    *out = v;
    return DISOPT_OK;
}

static disopt_status op_string(pk *k, vtype t, int lenbytes) {
    DP_TRY(need(k, (size_t)lenbytes));
    uint64_t len = rd_le(k->p + k->pos, lenbytes);
    k->pos += (size_t)lenbytes;
    if (len > k->size - k->pos)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: string of %" PRIu64 " bytes runs past the end (offset %zu)", len,
                        k->pos);
    val *v = NULL;
    DP_TRY(new_val(k, t, &v));
    v->s = malloc((size_t)len + 1);
    if (!v->s) return oom();
    memcpy(v->s, k->p + k->pos, (size_t)len);
    v->s[len] = '\0';
    v->slen = (size_t)len;
    k->pos += (size_t)len;
    return push(k, v);
}

static disopt_status memo_put(pk *k, uint64_t idx) {
    val *v = NULL;
    DP_TRY(top(k, &v));
    /* picklers number the memo 0, 1, 2, ...: an index beyond the values made so far is hostile */
    if (idx >= DP_PK_MAX_MEMO || idx > k->n_objects + 16)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: memo index %" PRIu64 " too large", idx);
    if (idx >= k->memo_cap) {
        size_t nc = k->memo_cap ? k->memo_cap : 256;
        while (nc <= idx) nc *= 2;
        val **nm = realloc(k->memo, nc * sizeof *nm);
        if (!nm) return oom();
        memset(nm + k->memo_cap, 0, (nc - k->memo_cap) * sizeof *nm);
        k->memo = nm;
        k->memo_cap = nc;
    }
    if (!k->memo[idx]) k->memo_len++;
    k->memo[idx] = v;
    return DISOPT_OK;
}

static disopt_status memo_get(pk *k, uint64_t idx) {
    if (idx >= k->memo_cap || !k->memo[idx])
        return dp_error(DISOPT_ERR_FORMAT, "pickle: memo index %" PRIu64 " was never stored", idx);
    return push(k, k->memo[idx]);
}

static disopt_status op_global(pk *k, const char *module, const char *name) {
    for (size_t i = 0; i < sizeof GLOBALS / sizeof GLOBALS[0]; i++)
        if (strcmp(module, GLOBALS[i].module) == 0 && strcmp(name, GLOBALS[i].name) == 0) {
            val *v = NULL;
            DP_TRY(new_val(k, V_GLOBAL, &v));
            v->i = (int64_t)i;
            return push(k, v);
        }
    return dp_error(DISOPT_ERR_UNSUPPORTED,
                    "pickle: refused global '%s.%s' (a state dict needs only tensors, storages and OrderedDict; "
                    "nothing is executed)",
                    module, name);
}

static disopt_status read_line(pk *k, char *dst, size_t cap) {
    size_t n = 0;
    while (k->pos < k->size && k->p[k->pos] != '\n') {
        if (n + 1 >= cap) return dp_error(DISOPT_ERR_FORMAT, "pickle: GLOBAL name longer than %zu bytes", cap - 1);
        unsigned char c = k->p[k->pos++];
        if (c < 0x20 || c > 0x7e) return dp_error(DISOPT_ERR_FORMAT, "pickle: GLOBAL name with byte 0x%02x", c);
        dst[n++] = (char)c;
    }
    if (k->pos >= k->size) return dp_error(DISOPT_ERR_FORMAT, "pickle: truncated GLOBAL");
    k->pos++;
    dst[n] = '\0';
    return DISOPT_OK;
}

/* ('storage', torch.XStorage, key, location, numel) */
static disopt_status op_persid(pk *k) {
    val *pid = NULL, *v = NULL;
    DP_TRY(pop(k, &pid));
    if (pid->t != V_TUPLE || pid->n != 5 || pid->items[0]->t != V_STR || strcmp(pid->items[0]->s, "storage") != 0)
        return dp_error(DISOPT_ERR_UNSUPPORTED,
                        "pickle: persistent id is not ('storage', type, key, location, numel)");
    val *ty = pid->items[1], *key = pid->items[2], *loc = pid->items[3], *num = pid->items[4];
    if (ty->t != V_GLOBAL || GLOBALS[ty->i].dtype == DISOPT_DTYPE_UNKNOWN)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: persistent id with a storage type that is not "
                                                "Float/Half/BFloat16/Double/LongStorage");
    if (key->t != V_STR || loc->t != V_STR || num->t != V_INT)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: malformed storage persistent id");
    if (key->slen == 0 || key->slen > DP_PK_MAX_STORAGE_KEY)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: storage key of %zu bytes", key->slen);
    for (size_t i = 0; i < key->slen; i++) {
        char c = key->s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
            return dp_error(DISOPT_ERR_FORMAT, "pickle: storage key with a character other than [A-Za-z0-9_]");
    }
    if (num->i < 0 || (uint64_t)num->i > DP_PK_MAX_NUMEL)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: storage '%s' declares %" PRId64 " elements (limit %" PRIu64 ")",
                        key->s, num->i, DP_PK_MAX_NUMEL);
    disopt_dtype dt = GLOBALS[ty->i].dtype;
    if (k->provider && k->provider->check) DP_TRY(k->provider->check(k->provider->user, key->s, dt, (uint64_t)num->i));
    DP_TRY(new_val(k, V_STORAGE, &v));
    v->s = strdup(key->s);
    if (!v->s) return oom();
    v->slen = key->slen;
    v->i = (int64_t)dt;
    v->numel = (uint64_t)num->i;
    return push(k, v);
}

static disopt_status int_tuple(const val *t, const char *what, int64_t *dst, int *n) {
    if (t->t != V_TUPLE) return dp_error(DISOPT_ERR_FORMAT, "pickle: tensor %s is a %s, not a tuple", what,
                                         VTYPE_NAME[t->t]);
    if (t->n > DISOPT_MAX_DIMS)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: tensor with %zu dimensions (max %d)", t->n, DISOPT_MAX_DIMS);
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i]->t != V_INT) return dp_error(DISOPT_ERR_FORMAT, "pickle: tensor %s holds a non-integer", what);
        int64_t v = t->items[i]->i;
        if (v < 0 || v > DP_PK_MAX_DIM)
            return dp_error(DISOPT_ERR_FORMAT, "pickle: tensor %s %" PRId64 " out of range", what, v);
        dst[i] = v;
    }
    *n = (int)t->n;
    return DISOPT_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
static disopt_status rebuild_tensor(pk *k, const val *args) {
    if (args->n != 6 && args->n != 7)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: _rebuild_tensor_v2 with %zu arguments", args->n);
    const val *st = args->items[0], *off = args->items[1];
    if (st->t != V_STORAGE) return dp_error(DISOPT_ERR_FORMAT, "pickle: _rebuild_tensor_v2 without a storage");
    if (off->t != V_INT || off->i < 0 || (uint64_t)off->i > DP_PK_MAX_NUMEL)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: bad tensor storage offset");
    if (args->items[4]->t != V_BOOL && args->items[4]->t != V_INT)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: bad requires_grad");
    if (args->items[5]->t != V_DICT || args->items[5]->n != 0)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: tensor with backward hooks");
    if (args->n == 7 && args->items[6]->t != V_NONE && args->items[6]->t != V_DICT)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: bad tensor metadata");
    dp_pk_tensor *t = calloc(1, sizeof *t);
    if (!t) return oom();
    val *v = NULL;
    disopt_status s = new_val(k, V_TENSOR, &v);
    if (s != DISOPT_OK) {
        free(t);
        return s;
    }
    v->tensor = t;
    int nd_size, nd_stride;
    DP_TRY(int_tuple(args->items[2], "size", t->shape, &nd_size));
    DP_TRY(int_tuple(args->items[3], "stride", t->stride, &nd_stride));
    if (nd_size != nd_stride)
        return dp_error(DISOPT_ERR_FORMAT, "pickle: tensor size has %d dimensions, stride %d", nd_size, nd_stride);
    t->ndim = nd_size;
    t->dtype = (disopt_dtype)st->i;
    t->offset = off->i;
    t->storage_numel = st->numel;
    t->storage = strdup(st->s);
    if (!t->storage) return oom();
    uint64_t numel = 1, last = (uint64_t)off->i;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t n = (uint64_t)t->shape[d], str = (uint64_t)t->stride[d];
        if (n != 0 && numel > DP_PK_MAX_NUMEL / n)
            return dp_error(DISOPT_ERR_FORMAT, "pickle: tensor of more than %" PRIu64 " elements", DP_PK_MAX_NUMEL);
        numel *= n;
        if (n > 1) {
            if (str != 0 && (n - 1) > DP_PK_MAX_NUMEL / str)
                return dp_error(DISOPT_ERR_FORMAT, "pickle: tensor strides reach past %" PRIu64 " elements",
                                DP_PK_MAX_NUMEL);
            last += (n - 1) * str; /* each term <= 2^33, at most 8 of them: no overflow */
        }
    }
    t->numel = numel;
    t->span_lo = (uint64_t)off->i;
    t->span_hi = last;
    if (numel > 0 && last >= t->storage_numel)
        return dp_error(DISOPT_ERR_FORMAT,
                        "pickle: tensor reads element %" PRIu64 " of storage '%s', which holds %" PRIu64
                        " elements (offset or strides past its end)",
                        last, t->storage, t->storage_numel);
    return push(k, v);
}

/* numpy.dtype(name, align, copy): numeric names only */
static disopt_status np_dtype(pk *k, const val *args) {
    static const char *const OK[] = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"};
    if (args->n < 1 || args->items[0]->t != V_STR) return dp_error(DISOPT_ERR_FORMAT, "pickle: bad numpy.dtype call");
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++)
        if (strcmp(args->items[0]->s, OK[i]) == 0) {
            val *v = NULL;
            DP_TRY(new_val(k, V_NPDTYPE, &v));
            if (!(v->s = strdup(OK[i]))) return oom();
            v->slen = 2;
            return push(k, v);
        }
    return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: refused numpy dtype '%.16s' (numbers only)",
                    args->items[0]->s);
}

/* _codecs.encode(str, 'latin1'): the str's code points (all < 256) as bytes */
static disopt_status codecs_encode(pk *k, const val *args) {
    if (args->n != 2 || args->items[0]->t != V_STR || args->items[1]->t != V_STR ||
        strcmp(args->items[1]->s, "latin1") != 0)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: _codecs.encode other than (str, 'latin1')");
    const val *in = args->items[0];
    val *v = NULL;
    DP_TRY(new_val(k, V_BYTES, &v));
    if (!(v->s = malloc(in->slen + 1))) return oom();
    size_t n = 0;
    for (size_t i = 0; i < in->slen; i++) {
        unsigned char c = (unsigned char)in->s[i];
        if (c < 0x80) {
            v->s[n++] = (char)c;
        } else if ((c == 0xc2 || c == 0xc3) && i + 1 < in->slen && ((unsigned char)in->s[i + 1] & 0xc0) == 0x80) {
            v->s[n++] = (char)(((c & 0x03) << 6) | ((unsigned char)in->s[++i] & 0x3f));
        } else {
            return dp_error(DISOPT_ERR_FORMAT, "pickle: _codecs.encode of a non-latin1 string");
        }
    }
    v->s[n] = '\0';
    v->slen = n;
    return push(k, v);
}

/* numpy.core.multiarray.scalar(dtype, bytes) -> int, float or bool */
static disopt_status np_scalar(pk *k, const val *args) {
    if (args->n != 2 || args->items[0]->t != V_NPDTYPE || args->items[1]->t != V_BYTES)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: numpy scalar other than (numeric dtype, bytes)");
    const val *dt = args->items[0], *b = args->items[1];
    size_t size = (size_t)(dt->s[1] - '0');
    if (b->slen != size) return dp_error(DISOPT_ERR_FORMAT, "pickle: numpy %s scalar of %zu bytes", dt->s, b->slen);
    unsigned char le[8] = {0};
    for (size_t i = 0; i < size; i++) le[i] = (unsigned char)b->s[dt->i ? size - 1 - i : i];
    uint64_t u = rd_le(le, (int)size);
    val *v = NULL;
    char kind = dt->s[0];
    DP_TRY(new_val(k, kind == 'f' ? V_FLOAT : kind == 'b' ? V_BOOL : V_INT, &v));
    if (kind == 'f') {
        if (size == 8) {
            memcpy(&v->f, &u, 8);
        } else if (size == 4) {
            uint32_t u32 = (uint32_t)u;
            float f;
            memcpy(&f, &u32, 4);
            v->f = f;
        } else {
            v->f = dp_f16_to_f32((uint16_t)u);
        }
    } else if (kind == 'i' && size < 8 && (u >> (8 * size - 1)) & 1) {
        v->i = (int64_t)(u | (~(uint64_t)0 << (8 * size))); /* sign-extend */
    } else {
        if (kind == 'u' && u > (uint64_t)INT64_MAX) return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: numpy uint64 too large");
        memcpy(&v->i, &u, 8);
        if (kind == 'b') v->i = u != 0;
    }
    return push(k, v);
}

static disopt_status op_reduce(pk *k) {
    val *args = NULL, *fn = NULL, *v = NULL;
    DP_TRY(pop(k, &args));
    DP_TRY(pop(k, &fn));
    if (fn->t != V_GLOBAL) return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: REDUCE on a %s", VTYPE_NAME[fn->t]);
    if (args->t != V_TUPLE) return dp_error(DISOPT_ERR_FORMAT, "pickle: REDUCE arguments are not a tuple");
    switch (GLOBALS[fn->i].id) {
    case G_ODICT:
        if (args->n != 0)
            return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: collections.OrderedDict called with arguments");
        DP_TRY(new_val(k, V_DICT, &v));
        return push(k, v);
    case G_REBUILD_V2: return rebuild_tensor(k, args);
    case G_NP_DTYPE: return np_dtype(k, args);
    case G_CODECS_ENCODE: return codecs_encode(k, args);
    case G_NP_SCALAR: return np_scalar(k, args);
    default:
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: refused call of %s.%s", GLOBALS[fn->i].module,
                        GLOBALS[fn->i].name);
    }
}

static disopt_status set_items(val *d, val **kv, size_t n) {
    if (d->t != V_DICT) return dp_error(DISOPT_ERR_FORMAT, "pickle: SETITEM(S) on a %s", VTYPE_NAME[d->t]);
    if (n % 2) return dp_error(DISOPT_ERR_FORMAT, "pickle: SETITEMS with an odd number of values");
    for (size_t i = 0; i < n; i += 2) {
        /* a repeated str key replaces the earlier value, as in Python */
        size_t j;
        for (j = 0; kv[i]->t == V_STR && j < d->n && d->n < 64; j += 2) /* cheap check for small dicts */
            if (d->items[j]->t == V_STR && strcmp(d->items[j]->s, kv[i]->s) == 0) break;
        if (kv[i]->t == V_STR && d->n < 64 && j < d->n) {
            d->items[j + 1] = kv[i + 1];
            continue;
        }
        DP_TRY(add_item(d, kv[i]));
        DP_TRY(add_item(d, kv[i + 1]));
    }
    return DISOPT_OK;
}

static disopt_status run(pk *k, val **result) {
    char module[DP_PK_MAX_GLOBAL_NAME + 1], name[DP_PK_MAX_GLOBAL_NAME + 1];
    while (k->pos < k->size) {
        size_t at = k->pos;
        unsigned char op = k->p[k->pos++];
        val *v = NULL, *a = NULL, *b = NULL, *c = NULL;
        size_t from = 0;
        switch (op) {
        case 0x80: /* PROTO */
            DP_TRY(need(k, 1));
            if (k->p[k->pos] < 2 || k->p[k->pos] > 5)
                return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: protocol %d (2..5 supported)", k->p[k->pos]);
            k->pos++;
            break;
        case 0x95: /* FRAME: a length hint */
            DP_TRY(need(k, 8));
            k->pos += 8;
            break;
        case '.': /* STOP */
            DP_TRY(pop(k, result));
            return DISOPT_OK;
        case '(':
            if (k->n_marks >= DP_PK_MAX_MARKS)
                return dp_error(DISOPT_ERR_FORMAT, "pickle: MARKs nested deeper than %d", DP_PK_MAX_MARKS);
            k->marks[k->n_marks++] = k->sp;
            break;
        case '0': DP_TRY(pop(k, &v)); break;
        case '1':
            DP_TRY(pop_mark(k, &from));
            k->sp = from;
            break;
        case '2':
            DP_TRY(top(k, &v));
            DP_TRY(push(k, v));
            break;
        case 'N': DP_TRY(new_val(k, V_NONE, &v)); DP_TRY(push(k, v)); break;
        case 0x88:
        case 0x89:
            DP_TRY(new_val(k, V_BOOL, &v));
            v->i = op == 0x88;
            DP_TRY(push(k, v));
            break;
        case 'K':
        case 'M':
        case 'J': {
            int nb = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            DP_TRY(need(k, (size_t)nb));
            uint64_t u = rd_le(k->p + k->pos, nb);
            k->pos += (size_t)nb;
            DP_TRY(new_val(k, V_INT, &v));
            v->i = op == 'J' ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
            DP_TRY(push(k, v));
            break;
        }
        case 0x8a: { /* LONG1: little-endian two's complement of n <= 8 bytes */
            DP_TRY(need(k, 1));
            int nb = k->p[k->pos++];
            if (nb > 8) return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: integer of %d bytes (max 8)", nb);
            DP_TRY(need(k, (size_t)nb));
            uint64_t u = rd_le(k->p + k->pos, nb);
            if (nb > 0 && nb < 8 && (k->p[k->pos + (size_t)nb - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * nb);
            k->pos += (size_t)nb;
            DP_TRY(new_val(k, V_INT, &v));
            memcpy(&v->i, &u, sizeof u);
            DP_TRY(push(k, v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            DP_TRY(need(k, 8));
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | k->p[k->pos + (size_t)i];
            k->pos += 8;
            DP_TRY(new_val(k, V_FLOAT, &v));
            memcpy(&v->f, &u, 8);
            DP_TRY(push(k, v));
            break;
        }
        case 'X': DP_TRY(op_string(k, V_STR, 4)); break;
        case 0x8c: DP_TRY(op_string(k, V_STR, 1)); break;
        case 0x8d: DP_TRY(op_string(k, V_STR, 8)); break;
        case 'C': DP_TRY(op_string(k, V_BYTES, 1)); break;
        case 'B': DP_TRY(op_string(k, V_BYTES, 4)); break;
        case ')': DP_TRY(new_val(k, V_TUPLE, &v)); DP_TRY(push(k, v)); break;
        case 't':
            DP_TRY(pop_mark(k, &from));
            DP_TRY(make_seq(k, V_TUPLE, from, &v));
            DP_TRY(push(k, v));
            break;
        case 0x85:
        case 0x86:
        case 0x87: {
            size_t n = (size_t)(op - 0x84);
            if (k->sp < floor_sp(k) + n) return dp_error(DISOPT_ERR_FORMAT, "pickle: stack underflow at offset %zu", at);
            DP_TRY(make_seq(k, V_TUPLE, k->sp - n, &v));
            DP_TRY(push(k, v));
            break;
        }
        case ']': DP_TRY(new_val(k, V_LIST, &v)); DP_TRY(push(k, v)); break;
        case '}': DP_TRY(new_val(k, V_DICT, &v)); DP_TRY(push(k, v)); break;
        case 'a':
            DP_TRY(pop(k, &a));
            DP_TRY(top(k, &b));
            if (b->t != V_LIST) return dp_error(DISOPT_ERR_FORMAT, "pickle: APPEND to a %s", VTYPE_NAME[b->t]);
            DP_TRY(add_item(b, a));
            break;
        case 'e':
            DP_TRY(pop_mark(k, &from));
            if (from == floor_sp(k)) return dp_error(DISOPT_ERR_FORMAT, "pickle: APPENDS without a list");
            b = k->stack[from - 1];
            if (b->t != V_LIST) return dp_error(DISOPT_ERR_FORMAT, "pickle: APPENDS to a %s", VTYPE_NAME[b->t]);
            for (size_t i = from; i < k->sp; i++) DP_TRY(add_item(b, k->stack[i]));
            k->sp = from;
            break;
        case 's':
            DP_TRY(pop(k, &a));
            DP_TRY(pop(k, &b));
            DP_TRY(top(k, &c));
            {
                val *kv[2] = {b, a};
                DP_TRY(set_items(c, kv, 2));
            }
            break;
        case 'u':
            DP_TRY(pop_mark(k, &from));
            if (from == floor_sp(k)) return dp_error(DISOPT_ERR_FORMAT, "pickle: SETITEMS without a dict");
            DP_TRY(set_items(k->stack[from - 1], k->stack + from, k->sp - from));
            k->sp = from;
            break;
        case 'q': /* BINPUT, LONG_BINPUT, BINGET, LONG_BINGET: a 1- or 4-byte memo index */
        case 'r':
        case 'h':
        case 'j': {
            int nb = op == 'q' || op == 'h' ? 1 : 4;
            DP_TRY(need(k, (size_t)nb));
            uint64_t idx = rd_le(k->p + k->pos, nb);
            k->pos += (size_t)nb;
            DP_TRY(op == 'q' || op == 'r' ? memo_put(k, idx) : memo_get(k, idx));
            break;
        }
        case 0x94: DP_TRY(memo_put(k, k->memo_len)); break;
        case 'c':
            DP_TRY(read_line(k, module, sizeof module));
            DP_TRY(read_line(k, name, sizeof name));
            DP_TRY(op_global(k, module, name));
            break;
        case 0x93: /* STACK_GLOBAL */
            DP_TRY(pop(k, &a));
            DP_TRY(pop(k, &b));
            if (a->t != V_STR || b->t != V_STR || a->slen > DP_PK_MAX_GLOBAL_NAME || b->slen > DP_PK_MAX_GLOBAL_NAME ||
                strlen(a->s) != a->slen || strlen(b->s) != b->slen)
                return dp_error(DISOPT_ERR_FORMAT, "pickle: malformed STACK_GLOBAL");
            DP_TRY(op_global(k, b->s, a->s));
            break;
        case 'Q': DP_TRY(op_persid(k)); break;
        case 'R': DP_TRY(op_reduce(k)); break;
        case 'b': /* BUILD: an OrderedDict's attributes (the state dict's _metadata, dropped), or a numpy
                   * dtype's state (3, byte order, ...) */
            DP_TRY(pop(k, &a));
            DP_TRY(top(k, &b));
            if (b->t == V_NPDTYPE) {
                if (a->t != V_TUPLE || a->n < 2 || a->items[1]->t != V_STR || a->items[1]->slen != 1 ||
                    !strchr("<>|=", a->items[1]->s[0]))
                    return dp_error(DISOPT_ERR_FORMAT, "pickle: bad numpy dtype state");
                b->i = a->items[1]->s[0] == '>';
                break;
            }
            if (b->t != V_DICT || (a->t != V_DICT && a->t != V_NONE))
                return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: BUILD on a %s", VTYPE_NAME[b->t]);
            break;
        default:
            if (op >= 0x20 && op < 0x7f)
                return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: refused opcode '%c' (0x%02x) at offset %zu", op, op,
                                at);
            return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: refused opcode 0x%02x at offset %zu", op, at);
        }
    }
    return dp_error(DISOPT_ERR_FORMAT, "pickle: no STOP (truncated?)");
}

/* Finds str key `name` in dict d. */
static val *dict_get(const val *d, const char *name) {
    for (size_t i = 0; i + 1 < d->n; i += 2)
        if (d->items[i]->t == V_STR && strcmp(d->items[i]->s, name) == 0) return d->items[i + 1];
    return NULL;
}

static disopt_status add_meta(dp_pk_result *r, const char *key, const val *v) {
    char buf[64];
    const char *s;
    switch (v->t) {
    case V_INT: snprintf(buf, sizeof buf, "%" PRId64, v->i); s = buf; break;
    case V_FLOAT: snprintf(buf, sizeof buf, "%.17g", v->f); s = buf; break;
    case V_BOOL: s = v->i ? "True" : "False"; break;
    case V_NONE: s = "None"; break;
    case V_STR:
        if (v->slen > 4096 || strlen(v->s) != v->slen) return DISOPT_OK;
        s = v->s;
        break;
    default: return DISOPT_OK; /* optimizer states and the like: not metadata */
    }
    if (strlen(key) > 256) return DISOPT_OK;
    char **nk = realloc(r->meta_keys, (size_t)(r->n_meta + 1) * sizeof *nk);
    if (!nk) return oom();
    r->meta_keys = nk;
    char **nv = realloc(r->meta_values, (size_t)(r->n_meta + 1) * sizeof *nv);
    if (!nv) return oom();
    r->meta_values = nv;
    r->meta_keys[r->n_meta] = strdup(key);
    r->meta_values[r->n_meta] = strdup(s);
    r->n_meta++;
    if (!r->meta_keys[r->n_meta - 1] || !r->meta_values[r->n_meta - 1]) return oom();
    return DISOPT_OK;
}

static disopt_status extract(val *root, dp_pk_result *r) {
    if (root->t != V_DICT)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: the checkpoint holds a %s, not a state dict",
                        VTYPE_NAME[root->t]);
    val *sd = dict_get(root, "state_dict");
    if (sd) {
        if (sd->t != V_DICT)
            return dp_error(DISOPT_ERR_FORMAT, "pickle: 'state_dict' is a %s, not a dict", VTYPE_NAME[sd->t]);
        r->wrapped = 1;
        for (size_t i = 0; i + 1 < root->n; i += 2)
            if (root->items[i]->t == V_STR && root->items[i + 1] != sd)
                DP_TRY(add_meta(r, root->items[i]->s, root->items[i + 1]));
    } else {
        sd = root;
    }
    size_t n = sd->n / 2;
    if (n > (size_t)INT32_MAX / 2) return dp_error(DISOPT_ERR_FORMAT, "pickle: too many tensors");
    r->tensors = calloc(n ? n : 1, sizeof *r->tensors);
    if (!r->tensors) return oom();
    for (size_t i = 0; i < n; i++) {
        const val *kk = sd->items[2 * i], *vv = sd->items[2 * i + 1];
        if (kk->t != V_STR) return dp_error(DISOPT_ERR_FORMAT, "pickle: state-dict key is a %s", VTYPE_NAME[kk->t]);
        if (kk->slen == 0 || kk->slen > DP_PK_MAX_KEY || strlen(kk->s) != kk->slen)
            return dp_error(DISOPT_ERR_FORMAT, "pickle: state-dict key of %zu bytes (or with NUL)", kk->slen);
        if (vv->t != V_TENSOR)
            return dp_error(DISOPT_ERR_UNSUPPORTED, "pickle: state_dict['%s'] is a %s, not a tensor", kk->s,
                            VTYPE_NAME[vv->t]);
        const char *name = strncmp(kk->s, "module.", 7) == 0 ? kk->s + 7 : kk->s;
        if (!*name) return dp_error(DISOPT_ERR_FORMAT, "pickle: empty state-dict key");
        dp_pk_tensor *t = &r->tensors[r->n_tensors];
        *t = *vv->tensor;
        t->name = strdup(name);
        t->storage = strdup(vv->tensor->storage);
        r->n_tensors++;
        if (!t->name || !t->storage) return oom();
    }
    return DISOPT_OK;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const dp_pk_tensor *const *)a)->name, (*(const dp_pk_tensor *const *)b)->name);
}

static disopt_status check_duplicates(const dp_pk_result *r) {
    if (r->n_tensors < 2) return DISOPT_OK;
    const dp_pk_tensor **p = malloc((size_t)r->n_tensors * sizeof *p);
    if (!p) return oom();
    for (int i = 0; i < r->n_tensors; i++) p[i] = &r->tensors[i];
    qsort(p, (size_t)r->n_tensors, sizeof *p, cmp_name);
    disopt_status s = DISOPT_OK;
    for (int i = 1; i < r->n_tensors && s == DISOPT_OK; i++)
        if (strcmp(p[i - 1]->name, p[i]->name) == 0)
            s = dp_error(DISOPT_ERR_FORMAT, "pickle: key '%s' appears twice (with and without 'module.'?)",
                         p[i]->name);
    free(p);
    return s;
}

void dp_pk_result_free(dp_pk_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_tensors; i++) {
        free(r->tensors[i].name);
        free(r->tensors[i].storage);
    }
    free(r->tensors);
    for (int i = 0; i < r->n_meta; i++) {
        free(r->meta_keys[i]);
        free(r->meta_values[i]);
    }
    free(r->meta_keys);
    free(r->meta_values);
    memset(r, 0, sizeof *r);
}

disopt_status dp_pickle_state_dict(const unsigned char *buf, size_t size, const dp_pk_provider *provider,
                                   dp_pk_result *out) {
    if (!buf || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dp_pickle_state_dict: NULL argument");
    memset(out, 0, sizeof *out);
    pk k;
    memset(&k, 0, sizeof k);
    k.p = buf;
    k.size = size;
    k.provider = provider;
    val *root = NULL;
    disopt_status s = run(&k, &root);
    if (s == DISOPT_OK) s = extract(root, out);
    if (s == DISOPT_OK) s = check_duplicates(out);
    free_all(&k);
    if (s != DISOPT_OK) dp_pk_result_free(out);
    return s;
}
