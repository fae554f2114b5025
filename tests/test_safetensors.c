/* test_safetensors.c - the safetensors reader/writer: round trips and hostile files. */
#include "test_util.h"
#include "internal.h"

#include <math.h>

static char g_path[256];

static void write_raw(const char *path, const char *header, const void *data, size_t data_len, int64_t lie_len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    uint64_t n = lie_len >= 0 ? (uint64_t)lie_len : strlen(header);
    unsigned char hb[8];
    for (int i = 0; i < 8; i++) hb[i] = (unsigned char)(n >> (8 * i));
    assert_int_equal(fwrite(hb, 1, 8, fp), 8);
    assert_int_equal(fwrite(header, 1, strlen(header), fp), strlen(header));
    if (data_len) assert_int_equal(fwrite(data, 1, data_len, fp), data_len);
    fclose(fp);
}

static disopt_status open_status(const char *path) {
    disopt_st *st = NULL;
    disopt_status s = disopt_st_open(path, &st);
    if (s == DISOPT_OK) {
        /* also read every tensor: reading must be safe once the header was accepted */
        for (int i = 0; i < disopt_st_num_tensors(st); i++) {
            const disopt_st_tensor_info *t = disopt_st_tensor(st, i);
            size_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
            float *buf = malloc(numel * sizeof(float) + 4);
            s = disopt_st_read_f32(st, t, buf, numel);
            free(buf);
            if (s) break;
        }
        disopt_st_close(st);
    }
    return s;
}

static void test_roundtrip(void **state) {
    (void)state;
    tu_rng r = tu_rng_fresh();
    float a[24], b[5], c[7];
    tu_fill(&r, a, 24, -100.0f, 100.0f);
    tu_fill(&r, b, 5, -1.0f, 1.0f);
    tu_fill(&r, c, 7, -3.0f, 3.0f);
    int64_t sa[3] = {2, 3, 4}, sb[1] = {5}, sc[2] = {7, 1};
    disopt_st_writer *w;
    assert_int_equal(disopt_st_writer_create(&w), DISOPT_OK);
    assert_int_equal(disopt_st_writer_add(w, "a", DISOPT_DTYPE_F32, 3, sa, a), DISOPT_OK);
    assert_int_equal(disopt_st_writer_add(w, "b.half", DISOPT_DTYPE_F16, 1, sb, b), DISOPT_OK);
    assert_int_equal(disopt_st_writer_add(w, "c.bf16", DISOPT_DTYPE_BF16, 2, sc, c), DISOPT_OK);
    assert_int_equal(disopt_st_writer_add(w, "a", DISOPT_DTYPE_F32, 3, sa, a), DISOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(disopt_st_writer_set_metadata(w, "arch", "student"), DISOPT_OK);
    assert_int_equal(disopt_st_writer_save(w, g_path), DISOPT_OK);
    disopt_st_writer_destroy(w);

    disopt_st *st;
    assert_int_equal(disopt_st_open(g_path, &st), DISOPT_OK);
    assert_int_equal(disopt_st_num_tensors(st), 3);
    assert_string_equal(disopt_st_metadata(st, "arch"), "student");
    assert_null(disopt_st_metadata(st, "nope"));
    const disopt_st_tensor_info *t = disopt_st_find(st, "a");
    assert_non_null(t);
    assert_int_equal(t->dtype, DISOPT_DTYPE_F32);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[2], 4);
    float got[24];
    assert_int_equal(disopt_st_read_f32(st, t, got, 24), DISOPT_OK);
    assert_memory_equal(got, a, sizeof a);
    assert_int_equal(disopt_st_read_f32(st, t, got, 23), DISOPT_ERR_SHAPE);
    t = disopt_st_find(st, "b.half");
    assert_int_equal(t->dtype, DISOPT_DTYPE_F16);
    assert_int_equal(disopt_st_read_f32(st, t, got, 5), DISOPT_OK);
    for (int i = 0; i < 5; i++) assert_true(fabsf(got[i] - b[i]) <= 1e-3f * fabsf(b[i]) + 1e-7f);
    t = disopt_st_find(st, "c.bf16");
    assert_int_equal(t->dtype, DISOPT_DTYPE_BF16);
    assert_int_equal(disopt_st_read_f32(st, t, got, 7), DISOPT_OK);
    for (int i = 0; i < 7; i++) assert_true(fabsf(got[i] - c[i]) <= 4e-3f * fabsf(c[i]));
    disopt_st_close(st);

    /* the same bytes through the memory reader */
    FILE *fp = fopen(g_path, "rb");
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)sz);
    assert_int_equal(fread(buf, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    assert_int_equal(disopt_st_open_memory(buf, (size_t)sz, &st), DISOPT_OK);
    assert_int_equal(disopt_st_read_f32(st, disopt_st_find(st, "a"), got, 24), DISOPT_OK);
    assert_memory_equal(got, a, sizeof a);
    disopt_st_close(st);
    /* every truncation of the file is refused cleanly, never read out of bounds */
    for (long cut = 0; cut < sz; cut += (cut < 64 ? 1 : 13)) {
        disopt_status s = disopt_st_open_memory(buf, (size_t)cut, &st);
        assert_int_not_equal(s, DISOPT_OK);
        assert_true(strlen(disopt_last_error()) > 0);
    }
    free(buf);
}

static void test_half_conversions(void **state) {
    (void)state;
    /* every half decodes like the compiler's _Float16, and encodes back to itself */
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hv = (uint16_t)h;
        _Float16 ref;
        memcpy(&ref, &hv, 2);
        float f = dp_f16_to_f32(hv);
        if (isnan((float)ref)) {
            assert_true(isnan(f));
            continue;
        }
        assert_true(f == (float)ref);
        assert_int_equal(dp_f32_to_f16(f), hv);
    }
    /* random floats round like the compiler's conversion (round to nearest even) */
    tu_rng r = tu_rng_fresh();
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = (uint32_t)tu_next(&r);
        float f;
        memcpy(&f, &bits, 4);
        if (isnan(f)) continue;
        _Float16 ref = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        assert_int_equal(dp_f32_to_f16(f), rb);
    }
}

static void test_missing_and_garbage(void **state) {
    (void)state;
    disopt_st *st = NULL;
    assert_int_equal(disopt_st_open("/nonexistent/dir/model.safetensors", &st), DISOPT_ERR_IO);
    assert_non_null(strstr(disopt_last_error(), "/nonexistent/dir/model.safetensors"));
    assert_null(st);
    FILE *fp = fopen(g_path, "wb");
    fputs("this is a GeoTIFF, honestly. Not a model at all......", fp);
    fclose(fp);
    assert_int_equal(open_status(g_path), DISOPT_ERR_FORMAT);
    assert_non_null(strstr(disopt_last_error(), "not a safetensors file"));
    fp = fopen(g_path, "wb");
    fputs("abc", fp);
    fclose(fp);
    assert_int_equal(open_status(g_path), DISOPT_ERR_FORMAT);
    assert_int_equal(disopt_st_open(NULL, &st), DISOPT_ERR_INVALID_ARGUMENT);
}

static void test_hostile_headers(void **state) {
    (void)state;
    float data[4] = {1, 2, 3, 4};
    struct {
        const char *header;
        int64_t lie;
        disopt_status want;
        const char *msg;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, DISOPT_OK, NULL},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,32]}}", -1, DISOPT_ERR_FORMAT, "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", -1, DISOPT_ERR_FORMAT, "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}", -1, DISOPT_ERR_FORMAT, "bytes for"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, DISOPT_ERR_FORMAT, "overlap"},
        {"{\"a\":{\"dtype\":\"C64\",\"shape\":[2],\"data_offsets\":[0,16]}}", -1, DISOPT_ERR_UNSUPPORTED, "C64"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", -1, DISOPT_ERR_FORMAT, "dimension"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", -1,
         DISOPT_ERR_FORMAT, NULL},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", -1, DISOPT_ERR_FORMAT, "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", -1, DISOPT_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}", -1, DISOPT_ERR_FORMAT, "JSON"},
        {"[1,2,3]", -1, DISOPT_ERR_FORMAT, NULL},
        {"{\"__metadata__\":{\"a\":1}}", -1, DISOPT_ERR_FORMAT, "__metadata__"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 1000000, DISOPT_ERR_FORMAT,
         "truncated"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", (int64_t)1 << 40, DISOPT_ERR_FORMAT,
         "header length"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(g_path, cases[i].header, data, sizeof data, cases[i].lie);
        disopt_status s = open_status(g_path);
        if (s != cases[i].want) fprintf(stderr, "case %zu: got %s (%s)\n", i, disopt_status_name(s), disopt_last_error());
        assert_int_equal(s, cases[i].want);
        if (cases[i].msg) assert_non_null(strstr(disopt_last_error(), cases[i].msg));
    }
}

int main(void) {
    tu_tmpname(g_path, sizeof g_path, "st");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_missing_and_garbage),
        cmocka_unit_test(test_hostile_headers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    remove(g_path);
    return rc;
}
