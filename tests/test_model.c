/* test_model.c - loading models and running them: every bad input gets its own clear error,
 * architecture detection, dtypes, prefixes, metadata, engines and thread counts. */
#include "test_util.h"

#include <math.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

static char g_path[256];
static disopt_engine *g_engine;

static disopt_status load(const char *cfg, const tu_model_opts *o, disopt_model **m) {
    assert_int_equal(tu_write_model(g_path, cfg, o), DISOPT_OK);
    *m = NULL;
    return disopt_model_load(g_engine, g_path, m);
}

static void expect_load_error(const char *cfg, const tu_model_opts *o, disopt_status want, const char *m1,
                              const char *m2) {
    disopt_model *m;
    disopt_status s = load(cfg, o, &m);
    if (s != want) fail_msg("want %s, got %s: %s", disopt_status_name(want), disopt_status_name(s), disopt_last_error());
    assert_null(m);
    if (m1 && !strstr(disopt_last_error(), m1)) fail_msg("message '%s' lacks '%s'", disopt_last_error(), m1);
    if (m2 && !strstr(disopt_last_error(), m2)) fail_msg("message '%s' lacks '%s'", disopt_last_error(), m2);
}

static void test_missing_key(void **s) {
    (void)s;
    tu_model_opts o = {.skip = "decoder.aspp.0.project.0.weight"};
    expect_load_error("teacher-b0", &o, DISOPT_ERR_MISSING_KEY, "missing key", "decoder.aspp.0.project.0.weight");
    tu_model_opts o2 = {.skip = "encoder._bn1.running_var"}; /* unused by the forward pass, still required */
    expect_load_error("teacher-b0", &o2, DISOPT_ERR_MISSING_KEY, "encoder._bn1.running_var", NULL);
}

static void test_unexpected_key(void **s) {
    (void)s;
    tu_model_opts o = {.extra = "decoder.aspp.9.weight"};
    expect_load_error("teacher-b0", &o, DISOPT_ERR_UNEXPECTED_KEY, "unexpected key", "decoder.aspp.9.weight");
}

static void test_wrong_shape(void **s) {
    (void)s;
    tu_model_opts o = {.reshape = "decoder.block1.0.weight", .md_key = {"arch", "variant"}, .md_value = {"teacher", "b0"}};
    expect_load_error("teacher-b0", &o, DISOPT_ERR_SHAPE, "decoder.block1.0.weight", "[49, 24, 1, 1] in the file, [48, 24, 1, 1]");
}

static void test_bad_files(void **s) {
    (void)s;
    disopt_model *m = (disopt_model *)1;
    assert_int_equal(disopt_model_load(g_engine, "/nonexistent/model.safetensors", &m), DISOPT_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(disopt_last_error(), "/nonexistent/model.safetensors"));
    /* a truncated model: the header promises more than the file holds */
    tu_model_opts o = {0};
    assert_int_equal(tu_write_model(g_path, "teacher-b0", &o), DISOPT_OK);
    assert_int_equal(truncate(g_path, 100000), 0);
    assert_int_equal(disopt_model_load(g_engine, g_path, &m), DISOPT_ERR_FORMAT);
    assert_non_null(strstr(disopt_last_error(), "outside the data section"));
    /* not a safetensors file at all (a TIFF header) */
    FILE *fp = fopen(g_path, "wb");
    fwrite("II*\0\x08\0\0\0\0\0\0\0\0\0\0\0", 1, 16, fp);
    fclose(fp);
    assert_int_equal(disopt_model_load(g_engine, g_path, &m), DISOPT_ERR_FORMAT);
    assert_non_null(strstr(disopt_last_error(), "not a safetensors file"));
    /* a valid safetensors file that is no DisOptNet */
    disopt_st_writer *w;
    float v[2] = {1, 2};
    int64_t sh = 2;
    assert_int_equal(disopt_st_writer_create(&w), DISOPT_OK);
    assert_int_equal(disopt_st_writer_add(w, "transformer.h.0.attn.weight", DISOPT_DTYPE_F32, 1, &sh, v), DISOPT_OK);
    assert_int_equal(disopt_st_writer_save(w, g_path), DISOPT_OK);
    disopt_st_writer_destroy(w);
    assert_int_equal(disopt_model_load(g_engine, g_path, &m), DISOPT_ERR_MISSING_KEY);
    assert_non_null(strstr(disopt_last_error(), "no DisOptNet weights"));
}

static void test_unsupported_dtype(void **s) {
    (void)s;
    /* a hand-made file whose stem weight is I32 */
    const char *hdr = "{\"encoder._conv_stem.weight\":{\"dtype\":\"I32\",\"shape\":[32,4,3,3],\"data_offsets\":[0,4608]}}";
    FILE *fp = fopen(g_path, "wb");
    uint64_t n = strlen(hdr);
    fwrite(&n, 8, 1, fp); /* little-endian host */
    fwrite(hdr, 1, n, fp);
    for (int i = 0; i < 4608; i++) fputc(0, fp);
    fclose(fp);
    disopt_model *m;
    assert_int_equal(disopt_model_load(g_engine, g_path, &m), DISOPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(disopt_last_error(), "encoder._conv_stem.weight"));
    assert_non_null(strstr(disopt_last_error(), "dtype"));
    /* and a dtype safetensors itself does not know */
    hdr = "{\"encoder._conv_stem.weight\":{\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    fp = fopen(g_path, "wb");
    n = strlen(hdr);
    fwrite(&n, 8, 1, fp);
    fwrite(hdr, 1, n, fp);
    fwrite("abcd", 1, 4, fp);
    fclose(fp);
    assert_int_equal(disopt_model_load(g_engine, g_path, &m), DISOPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(disopt_last_error(), "Q4_K"));
}

static void run_one(disopt_model *m, int c, int h, int w, float *logits, disopt_status want, const char *msg) {
    float *x = malloc((size_t)c * h * w * 4);
    tu_rng r = tu_rng_fresh();
    tu_fill(&r, x, (size_t)c * h * w, -2, 2);
    disopt_outputs o = {logits, NULL, NULL, NULL, NULL, 0};
    disopt_status s = disopt_model_infer(m, x, 1, c, h, w, &o);
    if (s != want) fail_msg("want %s, got %s: %s", disopt_status_name(want), disopt_status_name(s), disopt_last_error());
    if (msg) assert_non_null(strstr(disopt_last_error(), msg));
    free(x);
}

static void test_bad_inputs(void **s) {
    (void)s;
    disopt_model *m;
    tu_model_opts o = {0};
    assert_int_equal(load("teacher-b0", &o, &m), DISOPT_OK);
    float *lg = malloc(2 * 64 * 64 * 4);
    run_one(m, 4, 64, 64, lg, DISOPT_OK, NULL);
    run_one(m, 3, 64, 64, lg, DISOPT_ERR_INPUT, "3 channels");
    run_one(m, 4, 64, 60, lg, DISOPT_ERR_INPUT, "multiples of 16");
    run_one(m, 4, 8, 8, lg, DISOPT_ERR_INPUT, "multiples of 16");
    /* NaN and Inf are refused and located */
    float *x = malloc(4 * 32 * 32 * 4);
    for (int i = 0; i < 4 * 32 * 32; i++) x[i] = 0.1f * (float)(i % 17);
    x[2 * 32 * 32 + 5 * 32 + 7] = NAN;
    disopt_outputs out = {lg, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(disopt_model_infer(m, x, 1, 4, 32, 32, &out), DISOPT_ERR_INPUT);
    assert_non_null(strstr(disopt_last_error(), "band 2, row 5, col 7"));
    x[2 * 32 * 32 + 5 * 32 + 7] = INFINITY;
    assert_int_equal(disopt_model_infer(m, x, 1, 4, 32, 32, &out), DISOPT_ERR_INPUT);
    /* the teacher has no side logits */
    out.sar_logits = lg;
    x[2 * 32 * 32 + 5 * 32 + 7] = 0;
    assert_int_equal(disopt_model_infer(m, x, 1, 4, 32, 32, &out), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_tap bad = {"f9", lg};
    disopt_outputs out2 = {lg, NULL, NULL, NULL, &bad, 1};
    assert_int_equal(disopt_model_infer(m, x, 1, 4, 32, 32, &out2), DISOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(disopt_model_infer(NULL, x, 1, 4, 32, 32, &out), DISOPT_ERR_INVALID_ARGUMENT);
    free(x);
    free(lg);
    disopt_model_destroy(m);
}

/* same weights stored as F16/BF16 (upcast on load), with module. prefixes and num_batches_tracked */
static void test_dtypes_prefix_counts(void **s) {
    (void)s;
    const int H = 32, W = 48;
    size_t n = 2 * (size_t)H * W;
    float *x = malloc(4 * (size_t)H * W * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    tu_rng r = tu_rng_fresh();
    tu_fill(&r, x, 4 * (size_t)H * W, -2, 2);
    disopt_model *m;
    tu_model_opts o = {0};
    assert_int_equal(load("student-b0", &o, &m), DISOPT_OK);
    disopt_outputs out = {ref, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(disopt_model_infer(m, x, 1, 4, H, W, &out), DISOPT_OK);
    disopt_model_destroy(m);
    struct {
        tu_model_opts o;
        double tol;
    } cases[] = {
        {{.prefix = "module.", .with_counts = 1, .dtype = DISOPT_DTYPE_F32}, 0.0},
        {{.dtype = DISOPT_DTYPE_F16}, 0.05},
        {{.dtype = DISOPT_DTYPE_BF16, .with_counts = 1}, 0.2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_int_equal(load("student-b0", &cases[c].o, &m), DISOPT_OK);
        out.fused_logits = got;
        assert_int_equal(disopt_model_infer(m, x, 1, 4, H, W, &out), DISOPT_OK);
        double e = 0, mx = 0;
        for (size_t i = 0; i < n; i++) {
            e = fmax(e, fabs(got[i] - ref[i]));
            mx = fmax(mx, fabs(ref[i]));
        }
        printf("# case %zu: max diff %g (max %g)\n", c, e, mx);
        assert_true(e <= cases[c].tol * mx);
        disopt_model_destroy(m);
    }
    free(x); free(ref); free(got);
}

static void test_detection_and_metadata(void **s) {
    (void)s;
    const char *names[] = {"teacher-b1", "teacher-b2", "student-b0", "teacher-b4"};
    for (int i = 0; i < 4; i++) {
        disopt_model *m;
        disopt_model_info info;
        disopt_model_config want;
        tu_model_opts o = {0};
        assert_int_equal(load(names[i], &o, &m), DISOPT_OK);
        assert_int_equal(disopt_model_get_info(m, &info), DISOPT_OK);
        assert_int_equal(disopt_model_config_parse(names[i], &want), DISOPT_OK);
        assert_int_equal(info.config.arch, want.arch);
        assert_int_equal(info.config.variant, want.variant); /* b1 and b2 differ only in widths */
        assert_string_equal(info.name, names[i]);
        assert_string_equal(info.band_names[1], "HV");
        assert_true(info.band_scale[0] == 1.0f / 255.0f && info.band_mean[0] == 0.5f && info.band_std[0] == 0.125f);
        disopt_model_destroy(m);
    }
    tu_model_opts o = {.md_key = {"bands", "norm_std", "rotate180", "name"},
                       .md_value = {"VV,VH,HV,HH", "0.1,0.2,0.3,0.4", "YES", "demo"}};
    disopt_model *m;
    disopt_model_info info;
    assert_int_equal(load("teacher-b0", &o, &m), DISOPT_OK);
    disopt_model_get_info(m, &info);
    assert_string_equal(info.band_names[0], "VV");
    assert_true(info.band_std[3] == 0.4f);
    assert_int_equal(info.rotate180, 1);
    assert_string_equal(info.name, "demo");
    assert_string_equal(disopt_model_metadata(m, "bands"), "VV,VH,HV,HH");
    float px[4 * 4] = {0, 255, 127.5f, 51};
    for (int i = 4; i < 16; i++) px[i] = 127.5f;
    assert_int_equal(disopt_model_normalize(m, px, 1, 2, 2), DISOPT_OK);
    assert_true(fabsf(px[0] - (-0.5f / 0.1f)) < 1e-5f);
    disopt_model_destroy(m);
    tu_model_opts bad = {.md_key = {"norm_mean"}, .md_value = {"1,2"}};
    expect_load_error("teacher-b0", &bad, DISOPT_ERR_FORMAT, "norm_mean", NULL);
}

static void test_threads_and_batch(void **s) {
    (void)s;
    /* batch of 3 equals three single runs, at 1 and 4 threads, bit for bit */
    const int H = 48, W = 32, N = 3;
    size_t per = 4 * (size_t)H * W, nl = 2 * (size_t)H * W;
    float *x = malloc(N * per * 4), *b1 = malloc(N * nl * 4), *b4 = malloc(N * nl * 4), *one = malloc(nl * 4);
    tu_rng r = tu_rng_fresh();
    tu_fill(&r, x, N * per, -2, 2);
    tu_model_opts o = {0};
    assert_int_equal(tu_write_model(g_path, "student-b0", &o), DISOPT_OK);
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = 1;
    disopt_engine *e1, *e4;
    assert_int_equal(disopt_engine_create(&eo, &e1), DISOPT_OK);
    eo.num_threads = 4;
    assert_int_equal(disopt_engine_create(&eo, &e4), DISOPT_OK);
    assert_int_equal(disopt_engine_num_threads(e4), 4);
    assert_string_equal(disopt_engine_backend_name(e4), "cpu");
    disopt_model *m1, *m4;
    assert_int_equal(disopt_model_load(e1, g_path, &m1), DISOPT_OK);
    assert_int_equal(disopt_model_load(e4, g_path, &m4), DISOPT_OK);
    disopt_outputs o1 = {b1, NULL, NULL, NULL, NULL, 0}, o4 = {b4, NULL, NULL, NULL, NULL, 0};
#if defined(__x86_64__)
    unsigned csr = _mm_getcsr(); /* kernels flush subnormals, but the caller's FP state must come back */
#endif
    assert_int_equal(disopt_model_infer(m1, x, N, 4, H, W, &o1), DISOPT_OK);
    assert_int_equal(disopt_model_infer(m4, x, N, 4, H, W, &o4), DISOPT_OK);
#if defined(__x86_64__)
    assert_int_equal(_mm_getcsr(), csr);
#endif
    assert_memory_equal(b1, b4, N * nl * 4);
    for (int b = 0; b < N; b++) {
        disopt_outputs oo = {one, NULL, NULL, NULL, NULL, 0};
        assert_int_equal(disopt_model_infer(m4, x + b * per, 1, 4, H, W, &oo), DISOPT_OK);
        assert_memory_equal(one, b4 + b * nl, nl * 4);
    }
    disopt_model_destroy(m1);
    disopt_model_destroy(m4);
    disopt_engine_destroy(e1);
    disopt_engine_destroy(e4);
    eo.backend = (disopt_backend_kind)42;
    assert_int_equal(disopt_engine_create(&eo, &e1), DISOPT_ERR_INVALID_ARGUMENT);
    free(x); free(b1); free(b4); free(one);
}

/* disopt_model_parse_memory + disopt_model_bind (the driver's overlap of the host work with the engine's
 * creation) give the same model as disopt_model_load_memory: the same outputs, bit for bit; an unbound model
 * reports its info but refuses to run or to be tiled; a model binds once; a bad image fails in the parse */
static void test_parse_then_bind(void **s) {
    (void)s;
    const int H = 32, W = 48;
    size_t per = 4 * (size_t)H * W, nl = 2 * (size_t)H * W;
    float *x = malloc(per * 4), *a = malloc(nl * 4), *b = malloc(nl * 4);
    tu_rng r = tu_rng_fresh();
    tu_fill(&r, x, per, -2, 2);
    tu_model_opts o = {0};
    assert_int_equal(tu_write_model(g_path, "student-b0", &o), DISOPT_OK);
    FILE *f = fopen(g_path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *img = malloc((size_t)size);
    assert_int_equal(fread(img, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    disopt_model *ml, *mp;
    assert_int_equal(disopt_model_load_memory(g_engine, img, (size_t)size, &ml), DISOPT_OK);
    assert_int_equal(disopt_model_parse_memory(img, (size_t)size, &mp), DISOPT_OK);
    assert_null(disopt_model_engine(mp));
    disopt_model_info il, ip;
    assert_int_equal(disopt_model_get_info(ml, &il), DISOPT_OK);
    assert_int_equal(disopt_model_get_info(mp, &ip), DISOPT_OK);
    assert_string_equal(il.name, ip.name);
    disopt_outputs ob = {b, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(disopt_model_infer(mp, x, 1, 4, H, W, &ob), DISOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(disopt_last_error(), "no engine"));
    assert_int_equal(disopt_model_bind(mp, g_engine), DISOPT_OK);
    assert_ptr_equal(disopt_model_engine(mp), g_engine);
    assert_int_equal(disopt_model_bind(mp, g_engine), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_outputs oa = {a, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(disopt_model_infer(ml, x, 1, 4, H, W, &oa), DISOPT_OK);
    assert_int_equal(disopt_model_infer(mp, x, 1, 4, H, W, &ob), DISOPT_OK);
    assert_memory_equal(a, b, nl * 4);
    disopt_model_destroy(ml);
    disopt_model_destroy(mp);
    /* an unbound model is destroyed without an engine; a truncated image fails in the parse */
    assert_int_equal(disopt_model_parse_memory(img, (size_t)size, &mp), DISOPT_OK);
    disopt_model_destroy(mp);
    mp = (disopt_model *)1;
    assert_int_not_equal(disopt_model_parse_memory(img, (size_t)size / 2, &mp), DISOPT_OK);
    assert_null(mp);
    free(img); free(x); free(a); free(b);
}

static int setup(void **s) {
    (void)s;
    tu_tmpname(g_path, sizeof g_path, "model");
    disopt_engine_options o;
    disopt_engine_options_init(&o);
    o.num_threads = 2;
    return disopt_engine_create(&o, &g_engine) != DISOPT_OK;
}

static int teardown(void **s) {
    (void)s;
    disopt_engine_destroy(g_engine);
    remove(g_path);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_key),        cmocka_unit_test(test_unexpected_key),
        cmocka_unit_test(test_wrong_shape),        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_unsupported_dtype),  cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_dtypes_prefix_counts), cmocka_unit_test(test_detection_and_metadata),
        cmocka_unit_test(test_threads_and_batch), cmocka_unit_test(test_parse_then_bind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
