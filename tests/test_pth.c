/*
 * test_pth.c - PyTorch zip checkpoints (core/raster/pth.c + pickle.c) and gdal_disopt_model.
 *
 * Fixtures in testdata/pth/ come from testdata/gen/make_pth.py: the good ones are written by
 * torch.save (the authors' {'state_dict', 'epoch', 'best_metric'} wrapping with DataParallel
 * "module." keys, fp16/bf16/f64/long storages, a transposed view, a storage offset, views sharing
 * one storage; protocols 2 and 4), the hostile ones are zips around hand-made pickles. The full
 * architecture is covered without torch: a checkpoint of the demo model is written here (our own
 * pickle writer, a zip made through GDAL's /vsizip/) and must give the very same forward as the
 * safetensors it came from.
 */
#define _LARGEFILE64_SOURCE 1 /* VSIStatBufL */
#include "test_util.h"

#include "disopt_io.h"
#include "raster/pickle.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <sys/wait.h>

#ifndef DISOPT_MODEL_FILE
#define DISOPT_MODEL_FILE "default.safetensors"
#endif
#ifndef DISOPT_MODEL_TOOL
#define DISOPT_MODEL_TOOL "gdal_disopt_model"
#endif

#define PTH DISOPT_TESTDATA "/pth/"

static int find(disopt_pth *p, const char *name) {
    for (int i = 0; i < disopt_pth_num_tensors(p); i++) {
        disopt_pth_tensor_info t;
        assert_int_equal(disopt_pth_tensor(p, i, &t), DISOPT_OK);
        if (strcmp(t.name, name) == 0) return i;
    }
    fail_msg("tensor %s not found", name);
    return -1;
}

static void read_tensor(disopt_pth *p, const char *name, disopt_dtype dtype, int ndim, const int64_t *shape,
                        float *dst, size_t numel) {
    int i = find(p, name);
    disopt_pth_tensor_info t;
    assert_int_equal(disopt_pth_tensor(p, i, &t), DISOPT_OK);
    assert_int_equal(t.dtype, dtype);
    assert_int_equal(t.ndim, ndim);
    for (int d = 0; d < ndim; d++) assert_int_equal(t.shape[d], shape[d]);
    assert_int_equal(disopt_pth_read_f32(p, i, dst, numel), DISOPT_OK);
}

/* the state dict of make_pth.py's state() */
static void check_state(disopt_pth *p) {
    float v[24];
    assert_int_equal(disopt_pth_num_tensors(p), 8);
    read_tensor(p, "a.weight", DISOPT_DTYPE_F32, 3, (int64_t[]){2, 3, 4}, v, 24);
    for (int i = 0; i < 24; i++) assert_true(v[i] == (float)i / 8);
    read_tensor(p, "h.weight", DISOPT_DTYPE_F16, 1, (int64_t[]){6}, v, 6);
    for (int i = 0; i < 6; i++) assert_true(v[i] == (float)i * 0.5f - 1);
    read_tensor(p, "bf.weight", DISOPT_DTYPE_BF16, 1, (int64_t[]){4}, v, 4);
    for (int i = 0; i < 4; i++) assert_true(v[i] == (float)i + 0.25f);
    /* x.t() of a 3x4 arange: strides (1, 4) */
    int ti = find(p, "t.weight");
    disopt_pth_tensor_info t;
    disopt_pth_tensor(p, ti, &t);
    assert_int_equal(t.stride[0], 1);
    assert_int_equal(t.stride[1], 4);
    read_tensor(p, "t.weight", DISOPT_DTYPE_F32, 2, (int64_t[]){4, 3}, v, 12);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) assert_true(v[i * 3 + j] == (float)(j * 4 + i));
    /* base[5:11] and base[0:4].view(2, 2) of one storage */
    int oi = find(p, "off.weight"), si = find(p, "s1.weight");
    disopt_pth_tensor_info to, ts;
    disopt_pth_tensor(p, oi, &to);
    disopt_pth_tensor(p, si, &ts);
    assert_int_equal(to.offset, 5);
    assert_string_equal(to.storage, ts.storage);
    read_tensor(p, "off.weight", DISOPT_DTYPE_F32, 1, (int64_t[]){6}, v, 6);
    for (int i = 0; i < 6; i++) assert_true(v[i] == -(float)(5 + i));
    read_tensor(p, "s1.weight", DISOPT_DTYPE_F32, 2, (int64_t[]){2, 2}, v, 4);
    for (int i = 0; i < 4; i++) assert_true(v[i] == -(float)i);
    read_tensor(p, "bn.num_batches_tracked", DISOPT_DTYPE_I64, 0, NULL, v, 1);
    assert_true(v[0] == 7.0f);
    read_tensor(p, "d.weight", DISOPT_DTYPE_F64, 1, (int64_t[]){2}, v, 2);
    assert_true(v[0] == 1.5f && v[1] == -2.25f);
    assert_int_equal(disopt_pth_read_f32(p, find(p, "a.weight"), v, 23), DISOPT_ERR_INVALID_ARGUMENT);
}

static const char *meta(disopt_pth *p, const char *key) {
    for (int i = 0; i < disopt_pth_num_metadata(p); i++) {
        const char *k, *v;
        disopt_pth_metadata_at(p, i, &k, &v);
        if (strcmp(k, key) == 0) return v;
    }
    return NULL;
}

static void test_wrapped(void **state) {
    (void)state;
    disopt_pth *p;
    assert_int_equal(disopt_pth_open(PTH "wrapped.pth.tar", &p), DISOPT_OK);
    assert_string_equal(disopt_pth_archive_name(p), "wrapped.pth");
    check_state(p); /* "module." stripped */
    assert_string_equal(meta(p, "epoch"), "42");
    assert_string_equal(meta(p, "best_metric"), "0.8125");
    disopt_pth_close(p);
}

static void test_numpy_scalars(void **state) {
    (void)state;
    disopt_pth *p;
    assert_int_equal(disopt_pth_open(PTH "numpy_meta.pth", &p), DISOPT_OK);
    assert_int_equal(disopt_pth_num_tensors(p), 1);
    assert_string_equal(meta(p, "epoch"), "42");
    assert_string_equal(meta(p, "best_metric"), "0.8125");
    assert_string_equal(meta(p, "best_f32"), "0.5");
    assert_string_equal(meta(p, "neg"), "-3");
    assert_string_equal(meta(p, "flag"), "True");
    disopt_pth_close(p);
}

static void test_plain_and_protocol4(void **state) {
    (void)state;
    const char *files[] = {PTH "plain.pth", PTH "proto4.pth"};
    for (int f = 0; f < 2; f++) {
        disopt_pth *p;
        assert_int_equal(disopt_pth_open(files[f], &p), DISOPT_OK);
        check_state(p);
        assert_int_equal(disopt_pth_num_metadata(p), 0);
        disopt_pth_close(p);
    }
    disopt_pth *p; /* another folder name, a byteorder record, column-major strides */
    assert_int_equal(disopt_pth_open(PTH "good_little.pth", &p), DISOPT_OK);
    assert_string_equal(disopt_pth_archive_name(p), "some_other_name");
    float v[4];
    read_tensor(p, "w", DISOPT_DTYPE_F32, 2, (int64_t[]){2, 2}, v, 4);
    assert_true(v[0] == 1 && v[1] == 3 && v[2] == 2 && v[3] == 4);
    disopt_pth_close(p);
}

static void test_hostile(void **state) {
    (void)state;
    static const struct {
        const char *file;
        disopt_status s;
        const char *msg;
    } cases[] = {
        {"evil_system.pth", DISOPT_ERR_UNSUPPORTED, "refused global 'posix.system'"},
        {"evil_builtins.pth", DISOPT_ERR_UNSUPPORTED, "refused global '__builtin__.eval'"},
        {"numpy_object.pth", DISOPT_ERR_UNSUPPORTED, "refused numpy dtype 'O8'"},
        {"huge_numel.pth", DISOPT_ERR_FORMAT, "declares 1099511627776 elements"},
        {"huge_dims.pth", DISOPT_ERR_FORMAT, "tensor of more than"},
        {"offset_past_end.pth", DISOPT_ERR_FORMAT, "past its end"},
        {"stride_past_end.pth", DISOPT_ERR_FORMAT, "past its end"},
        {"short_storage.pth", DISOPT_ERR_FORMAT, "shorter than its tensors"},
        {"missing_storage.pth", DISOPT_ERR_FORMAT, "storage '7' is missing"},
        {"bad_key.pth", DISOPT_ERR_FORMAT, "storage key"},
        {"big_endian.pth", DISOPT_ERR_UNSUPPORTED, "big-endian"},
        {"deep_marks.pth", DISOPT_ERR_FORMAT, "MARKs nested deeper"},
        {"deep_lists.pth", DISOPT_ERR_FORMAT, "stack deeper"},
        {"many_values.pth", DISOPT_ERR_FORMAT, "more than 2097152 values"},
        {"not_a_dict.pth", DISOPT_ERR_UNSUPPORTED, "holds a list, not a state dict"},
        {"list_value.pth", DISOPT_ERR_UNSUPPORTED, "state_dict['w'] is a list"},
        {"no_stop.pth", DISOPT_ERR_FORMAT, "no STOP"},
        {"no_pkl.pth", DISOPT_ERR_FORMAT, "no <folder>/data.pkl"},
        {"garbage.pth", DISOPT_ERR_FORMAT, "no <folder>/data.pkl"},
        {"truncated.pth", DISOPT_ERR_FORMAT, "no <folder>/data.pkl"},
        {"zipbomb.pth", DISOPT_ERR_FORMAT, "zip bomb"},
        {"storagebomb.pth", DISOPT_ERR_FORMAT, "zip bomb"},
        {"legacy.pth", DISOPT_ERR_UNSUPPORTED, "torch.save(torch.load("},
        {"does_not_exist.pth", DISOPT_ERR_IO, "cannot open"},
        {"../reference/convs_student_b3.tsv", DISOPT_ERR_FORMAT, "neither a safetensors file nor a PyTorch checkpoint"},
    };
    disopt_engine *e;
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = 1;
    assert_int_equal(disopt_engine_create(&eo, &e), DISOPT_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, PTH "%s", cases[i].file);
        disopt_pth *p = (disopt_pth *)1;
        disopt_status s = disopt_pth_open(path, &p);
        if (s != cases[i].s || !strstr(disopt_last_error(), cases[i].msg))
            fail_msg("%s: %s: %s (wanted %s, '%s')", cases[i].file, disopt_status_name(s), disopt_last_error(),
                     disopt_status_name(cases[i].s), cases[i].msg);
        assert_null(p);
        /* the same through the loaders */
        disopt_model *m = NULL;
        assert_int_equal(disopt_model_load_any(e, path, &m), cases[i].s);
        assert_non_null(strstr(disopt_last_error(), cases[i].msg));
        assert_null(m);
    }
    disopt_engine_destroy(e);
}

/* Crash inputs the fuzzer found, and pickles that test single opcodes (no zip). */
static disopt_status accept_all(void *user, const char *key, disopt_dtype dtype, uint64_t numel) {
    (void)user;
    (void)key;
    (void)dtype;
    return numel <= 1000 ? DISOPT_OK : DISOPT_ERR_FORMAT;
}

#define B(lit) lit, sizeof(lit) - 1

static void test_pickle_bytes(void **state) {
    (void)state;
    dp_pk_provider prov = {NULL, accept_all};
    dp_pk_result r;
    static const struct {
        const char *bytes;
        size_t n;
        disopt_status s;
    } cases[] = {
        {B(""), DISOPT_ERR_FORMAT},
        {B("\x80\x02}."), DISOPT_OK}, /* an empty dict: no tensors, fine for the unpickler */
        {B("\x80\x06}."), DISOPT_ERR_UNSUPPORTED},
        {B("\x80\x02."), DISOPT_ERR_FORMAT},
        {B("\x80\x02(t."), DISOPT_ERR_UNSUPPORTED},
        {B("\x80\x02h\x05."), DISOPT_ERR_FORMAT},                 /* memo never stored */
        {B("\x80\x02}r\xff\xff\xff\x7f."), DISOPT_ERR_FORMAT},    /* huge memo index */
        {B("\x80\x02}q\x00h\x00h\x00s."), DISOPT_ERR_FORMAT},    /* a dict as its own key: key not a str */
        {B("\x80\x02]q\x00h\x00" "a}."), DISOPT_OK},                 /* a list holding itself: no recursion */
        {B("\x80\x02X\xff\xff\xff\xff"), DISOPT_ERR_FORMAT},      /* string past the end */
        {B("\x80\x02\x8a\x09"), DISOPT_ERR_UNSUPPORTED},          /* 9-byte int */
        {B("\x80\x02\x81."), DISOPT_ERR_UNSUPPORTED},             /* NEWOBJ */
        {B("\x80\x02" "cos\nsystem\n."), DISOPT_ERR_UNSUPPORTED},
        {B("\x80\x02" "ccollections\nOrderedDict\n(K\x01tR."), DISOPT_ERR_UNSUPPORTED},
        {B("\x80\x02" "ccollections\nOrderedDict\n)Rb."), DISOPT_ERR_FORMAT}, /* BUILD without a state */
        {B("\x80\x02" "ctorch\nFloatStorage\n)R."), DISOPT_ERR_UNSUPPORTED},  /* storage type called */
        {B("\x80\x02" "c_codecs\nencode\nX\x02\x00\x00\x00\xe2\x82X\x06\x00\x00\x00latin1\x86R."),
         DISOPT_ERR_FORMAT}, /* not latin1 */
        {B("\x80\x02" "c_codecs\nencode\nX\x01\x00\x00\x00" "aX\x05\x00\x00\x00utf-8\x86R."),
         DISOPT_ERR_UNSUPPORTED},
        {B("\x80\x02" "cnumpy.core.multiarray\nscalar\n" "cnumpy\ndtype\nX\x02\x00\x00\x00" "f8\x89\x88\x87R"
           "C\x04\x00\x00\x00\x00\x86R."),
         DISOPT_ERR_FORMAT}, /* 4 bytes for an f8 */
        {B("\x80\x02" "cnumpy\ndtype\nX\x02\x00\x00\x00" "f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00!tb."),
         DISOPT_ERR_FORMAT}, /* bad byte order in the dtype state */
        {B("\x80\x02(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00"
           "cpuK\x04tQ."),
         DISOPT_ERR_UNSUPPORTED}, /* a bare storage at the top */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        disopt_status s = dp_pickle_state_dict((const unsigned char *)cases[i].bytes, cases[i].n, &prov, &r);
        if (s != cases[i].s)
            fail_msg("case %zu: %s: %s (wanted %s)", i, disopt_status_name(s), disopt_last_error(),
                     disopt_status_name(cases[i].s));
        if (s == DISOPT_OK) dp_pk_result_free(&r);
    }
}

/* Replays the fuzz regression inputs kept in tests/fuzz/regressions (each must not crash). */
static void test_fuzz_regressions(void **state) {
    (void)state;
    char **files = VSIReadDir(DISOPT_SOURCE_DIR "/tests/fuzz/regressions");
    dp_pk_provider prov = {NULL, accept_all};
    int n = 0;
    for (int i = 0; files && files[i]; i++) {
        if (files[i][0] == '.') continue;
        GByte *b = NULL;
        vsi_l_offset len = 0;
        const char *path = CPLFormFilename(DISOPT_SOURCE_DIR "/tests/fuzz/regressions", files[i], NULL);
        assert_true(VSIIngestFile(NULL, path, &b, &len, 1 << 24));
        if (strncmp(files[i], "pickle-", 7) == 0) {
            dp_pk_result r;
            if (dp_pickle_state_dict(b, (size_t)len, &prov, &r) == DISOPT_OK) dp_pk_result_free(&r);
        } else {
            disopt_st *st;
            if (disopt_st_open_memory(b, (size_t)len, &st) == DISOPT_OK) {
                for (int t = 0; t < disopt_st_num_tensors(st); t++) {
                    const disopt_st_tensor_info *ti = disopt_st_tensor(st, t);
                    size_t numel = 1;
                    for (int d = 0; d < ti->ndim; d++) numel *= (size_t)ti->shape[d];
                    if (numel > (1u << 20)) continue;
                    float *f = malloc(numel ? numel * 4 : 4);
                    (void)disopt_st_read_f32(st, ti, f, numel);
                    free(f);
                }
                disopt_st_close(st);
            }
        }
        VSIFree(b);
        n++;
    }
    CSLDestroy(files);
    print_message("# %d fuzz regression inputs replayed\n", n);
}

static void test_weights_view(void **state) {
    (void)state;
    disopt_weights *w;
    assert_int_equal(disopt_weights_open(PTH "wrapped.pth.tar", &w), DISOPT_OK);
    disopt_st *st = disopt_weights_st(w);
    assert_int_equal(disopt_st_num_tensors(st), 8);
    assert_string_equal(disopt_st_metadata(st, "source_format"), "pytorch");
    assert_string_equal(disopt_st_metadata(st, "epoch"), "42");
    const disopt_st_tensor_info *t = disopt_st_find(st, "t.weight");
    assert_non_null(t);
    float v[12];
    assert_int_equal(disopt_st_read_f32(st, t, v, 12), DISOPT_OK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) assert_true(v[i * 3 + j] == (float)(j * 4 + i));
    assert_int_equal(disopt_st_find(st, "h.weight")->dtype, DISOPT_DTYPE_F16);
    assert_int_equal(disopt_st_find(st, "d.weight")->dtype, DISOPT_DTYPE_F32);
    assert_int_equal(disopt_st_find(st, "bn.num_batches_tracked")->dtype, DISOPT_DTYPE_I64);
    disopt_weights_report r;
    assert_int_equal(disopt_weights_check(w, NULL, NULL, &r), DISOPT_OK);
    assert_int_equal(r.num_tensors, 8);
    assert_int_equal(r.num_parameters, 24 + 6 + 4 + 12 + 6 + 4 + 2);
    assert_int_equal(r.matched, 0);
    assert_int_equal(r.unexpected, 8);
    disopt_weights_close(w);
    /* a damaged deflate stream: the sizes are right, the data cannot be read */
    disopt_pth *p;
    assert_int_equal(disopt_pth_open(PTH "corrupt_storage.pth", &p), DISOPT_OK);
    float *big = malloc(4096 * sizeof *big);
    assert_int_equal(disopt_pth_read_f32(p, 0, big, 4096), DISOPT_ERR_FORMAT);
    assert_non_null(strstr(disopt_last_error(), "cannot be read in full"));
    free(big);
    disopt_pth_close(p);
    assert_int_equal(disopt_weights_open(PTH "corrupt_storage.pth", &w), DISOPT_ERR_FORMAT);
    assert_null(w);
    /* kinds by content */
    assert_int_equal(disopt_file_kind_of("PK\x03\x04", 4), DISOPT_FILE_PTH_ZIP);
    assert_int_equal(disopt_file_kind_of("\x80\x02\x8a\x0a", 4), DISOPT_FILE_PTH_LEGACY);
    assert_int_equal(disopt_file_kind_of("\x80\x02\0\0\0\0\0\0{", 9), DISOPT_FILE_SAFETENSORS);
    assert_int_equal(disopt_file_kind_of("GIF89a", 6), DISOPT_FILE_UNKNOWN);
}

/* ---------------------------------------------------------------- the full architecture */
/* Our own minimal torch.save: protocol-2 pickle of an OrderedDict of tensors, F32 storages.
 * With `wrap` the authors' {'state_dict': ..., 'epoch': 7, 'best_metric': 0.5} and "module." keys;
 * every third tensor is stored transposed-in-storage (strides reversed over a permuted copy) with
 * a storage offset, so the reader's stride and offset paths run on real shapes. */
typedef struct {
    unsigned char *b;
    size_t n, cap;
} buf;

static void put(buf *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2;
        o->b = realloc(o->b, o->cap);
        assert_non_null(o->b);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put_str(buf *o, const char *s) {
    uint32_t n = (uint32_t)strlen(s);
    unsigned char h[5] = {'X', (unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 24)};
    put(o, h, 5);
    put(o, s, n);
}
static void put_int(buf *o, int64_t v) {
    unsigned char h[10] = {0x8a, 8};
    for (int k = 0; k < 8; k++) h[2 + k] = (unsigned char)((uint64_t)v >> (8 * k));
    put(o, h, 10);
}
#define PUTS(o, s) put((o), (s), sizeof(s) - 1)

static int write_member(const char *zip, const char *name, const void *p, size_t n) {
    VSILFILE *fp = VSIFOpenL(CPLSPrintf("/vsizip/{%s}/%s", zip, name), "wb");
    if (!fp) return 0;
    int ok = VSIFWriteL(p, 1, n, fp) == n;
    return VSIFCloseL(fp) == 0 && ok;
}

static void write_pth(disopt_st *st, const char *path, int wrap) {
    buf pk = {0};
    PUTS(&pk, "\x80\x02");
    if (wrap) {
        PUTS(&pk, "}(");
        put_str(&pk, "epoch");
        put_int(&pk, 7);
        put_str(&pk, "best_metric");
        double bm = 0.5;
        uint64_t u;
        memcpy(&u, &bm, 8);
        unsigned char g[9] = {'G'};
        for (int k = 0; k < 8; k++) g[1 + k] = (unsigned char)(u >> (56 - 8 * k));
        put(&pk, g, 9);
        put_str(&pk, "state_dict");
    }
    PUTS(&pk, "ccollections\nOrderedDict\n)R(");
    VSIUnlink(path);
    VSILFILE *zip = VSIFOpenL(CPLSPrintf("/vsizip/{%s}", path), "wb"); /* held open while members are added */
    assert_non_null(zip);
    int n = disopt_st_num_tensors(st);
    /* the zip is written member by member through /vsizip/ (one open handle at a time) */
    for (int i = 0; i < n; i++) {
        const disopt_st_tensor_info *t = disopt_st_tensor(st, i);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        int is_count = t->dtype == DISOPT_DTYPE_I64;
        int permuted = !is_count && t->ndim >= 2 && i % 3 == 0;
        int64_t off = permuted ? 3 : 0;
        size_t snumel = numel + (size_t)off;
        float *v = malloc(numel * 4 + 4);
        assert_int_equal(disopt_st_read_f32(st, t, v, numel), DISOPT_OK);
        unsigned char *raw = calloc(snumel ? snumel : 1, is_count ? 8 : 4);
        int64_t stride[DISOPT_MAX_DIMS];
        if (permuted) { /* column-major: stride[d] = prod(shape[0..d)) */
            int64_t s = 1;
            for (int d = 0; d < t->ndim; d++) {
                stride[d] = s;
                s *= t->shape[d];
            }
        } else {
            int64_t s = 1;
            for (int d = t->ndim - 1; d >= 0; d--) {
                stride[d] = s;
                s *= t->shape[d];
            }
        }
        int64_t idx[DISOPT_MAX_DIMS] = {0};
        for (size_t e = 0; e < numel; e++) {
            int64_t so = off;
            for (int d = 0; d < t->ndim; d++) so += idx[d] * stride[d];
            if (is_count) {
                int64_t c = (int64_t)v[e];
                memcpy(raw + 8 * so, &c, 8);
            } else {
                memcpy(raw + 4 * so, &v[e], 4);
            }
            for (int d = t->ndim - 1; d >= 0; d--) {
                if (++idx[d] < t->shape[d]) break;
                idx[d] = 0;
            }
        }
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        assert_true(write_member(path, CPLSPrintf("ckpt/data/%s", key), raw, snumel * (is_count ? 8 : 4)));
        free(raw);
        free(v);
        put_str(&pk, wrap ? CPLSPrintf("module.%s", t->name) : t->name);
        PUTS(&pk, "ctorch._utils\n_rebuild_tensor_v2\n((");
        put_str(&pk, "storage");
        if (is_count) PUTS(&pk, "ctorch\nLongStorage\n");
        else PUTS(&pk, "ctorch\nFloatStorage\n");
        put_str(&pk, key);
        put_str(&pk, "cpu");
        put_int(&pk, (int64_t)snumel);
        PUTS(&pk, "tQ");
        put_int(&pk, off);
        PUTS(&pk, "(");
        for (int d = 0; d < t->ndim; d++) put_int(&pk, t->shape[d]);
        PUTS(&pk, "t(");
        for (int d = 0; d < t->ndim; d++) put_int(&pk, stride[d]);
        PUTS(&pk, "t\x89");
        PUTS(&pk, "ccollections\nOrderedDict\n)RtR");
    }
    PUTS(&pk, "u");
    if (wrap) PUTS(&pk, "u");
    PUTS(&pk, ".");
    assert_true(write_member(path, "ckpt/data.pkl", pk.b, pk.n));
    assert_true(write_member(path, "ckpt/version", "3\n", 2));
    assert_int_equal(VSIFCloseL(zip), 0);
    free(pk.b);
}

static void run_model(disopt_model *m, float *y, int size) {
    disopt_model_info info;
    disopt_model_get_info(m, &info);
    size_t n = (size_t)info.config.in_channels * (size_t)size * (size_t)size;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) /* as gdal_disopt_model verify */
        x[i] = (float)(((double)(((uint32_t)i * 2654435761u) % 2001u) * 0.025 / 255.0 - 0.5) / 0.125);
    disopt_outputs o;
    memset(&o, 0, sizeof o);
    o.fused_logits = y;
    assert_int_equal(disopt_model_infer(m, x, 1, info.config.in_channels, size, size, &o), DISOPT_OK);
    free(x);
}

static int run_tool(const char *args, char *out, size_t len) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", DISOPT_MODEL_TOOL, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_full_model(void **state) {
    (void)state;
    VSIStatBufL sb;
    if (VSIStatL(DISOPT_MODEL_FILE, &sb) != 0) {
        print_message("# %s not built: skipped\n", DISOPT_MODEL_FILE);
        skip();
    }
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char pth[512], conv[512];
    snprintf(pth, sizeof pth, "%s/disopt_test_pth_%d.pth.tar", dir, (int)getpid());
    snprintf(conv, sizeof conv, "%s/disopt_test_pth_%d.safetensors", dir, (int)getpid());
    disopt_st *st;
    assert_int_equal(disopt_st_open(DISOPT_MODEL_FILE, &st), DISOPT_OK);
    write_pth(st, pth, 1);
    disopt_st_close(st);

    disopt_engine *e;
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = 2;
    assert_int_equal(disopt_engine_create(&eo, &e), DISOPT_OK);
    disopt_model *a, *b;
    assert_int_equal(disopt_model_load(e, DISOPT_MODEL_FILE, &a), DISOPT_OK);
    if (disopt_model_load_any(e, pth, &b) != DISOPT_OK) fail_msg("%s", disopt_last_error());
    disopt_model_info ia, ib;
    disopt_model_get_info(a, &ia);
    disopt_model_get_info(b, &ib);
    assert_int_equal(ia.config.arch, ib.config.arch);
    assert_int_equal(ia.config.variant, ib.config.variant);
    assert_int_equal(ia.num_parameters, ib.num_parameters);
    const int size = 64;
    size_t n = (size_t)ia.config.num_classes * size * size;
    float *ya = malloc(n * 4), *yb = malloc(n * 4);
    run_model(a, ya, size);
    run_model(b, yb, size);
    assert_memory_equal(ya, yb, n * 4); /* bit-exact */
    disopt_model_destroy(b);

    /* the tool: info names the architecture, convert gives a file that runs the same */
    char out[8192];
    assert_int_equal(run_tool(CPLSPrintf("info %s", pth), out, sizeof out), 0);
    assert_non_null(strstr(out, "Architecture: student-b3 ("));
    assert_non_null(strstr(out, "keys matched, 0 missing, 0 unexpected, 0 with another shape)"));
    assert_non_null(strstr(out, "epoch=7"));
    assert_int_equal(run_tool(CPLSPrintf("convert %s %s --metadata provenance=test", pth, conv), out, sizeof out), 0);
    assert_int_equal(disopt_model_load(e, conv, &b), DISOPT_OK);
    assert_string_equal(disopt_model_metadata(b, "provenance"), "test");
    assert_string_equal(disopt_model_metadata(b, "arch"), "student");
    memset(yb, 0, n * 4);
    run_model(b, yb, size);
    assert_memory_equal(ya, yb, n * 4);
    disopt_model_destroy(b);
    /* verify prints the same checksum for the checkpoint and its conversion */
    char v1[4096], v2[4096];
    assert_int_equal(run_tool(CPLSPrintf("verify %s --threads 1", pth), v1, sizeof v1), 0);
    assert_int_equal(run_tool(CPLSPrintf("verify %s --threads 2", conv), v2, sizeof v2), 0);
    const char *c1 = strstr(v1, "checksum: "), *c2 = strstr(v2, "checksum: ");
    assert_non_null(c1);
    assert_non_null(c2);
    assert_memory_equal(c1, c2, 33);
    /* a mismatching file is reported */
    assert_int_equal(run_tool("info " PTH "wrapped.pth.tar", out, sizeof out), 2);
    assert_non_null(strstr(out, "unexpected a.weight"));
    assert_int_equal(run_tool("convert " PTH "legacy.pth /nonexistent/x.safetensors", out, sizeof out), 1);
    assert_non_null(strstr(out, "legacy PyTorch checkpoint"));

    free(ya);
    free(yb);
    disopt_model_destroy(a);
    disopt_engine_destroy(e);
    VSIUnlink(pth);
    VSIUnlink(conv);
}

int main(void) {
    GDALAllRegister();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrapped),       cmocka_unit_test(test_numpy_scalars),
        cmocka_unit_test(test_plain_and_protocol4),
        cmocka_unit_test(test_hostile),       cmocka_unit_test(test_pickle_bytes),
        cmocka_unit_test(test_fuzz_regressions), cmocka_unit_test(test_weights_view),
        cmocka_unit_test(test_full_model),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    GDALDestroyDriverManager();
    return rc;
}
