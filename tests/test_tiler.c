/* test_tiler.c - the tiler's bulk run (disopt_tiler_run: readers, inference thread and the caller's
 * blend + sink working at once) against its lazy reads (disopt_tiler_read, everything on the
 * calling thread), over every pixel.
 *
 * Fixture: a synthetic 4-band Float32 SAR-like raster of 612 x 70 pixels (a GeoTIFF, which the
 * readers open again, each on its own handle, and the same pixels in a MEM dataset, which cannot be
 * opened again: one reader on the caller's handle), with a NaN patch. With 64-pixel windows and an
 * overlap of 16 (step 32) it has 20 x 3 windows: two bands of cells (16 + 4 columns), batches that
 * span steps and bands (batch sizes 3 and 5 do not divide a step's 18 windows), a last batch that is
 * partial, and cells clipped at the right and bottom edges. The model is the demo model (the
 * authors' student B3, dwgen-1 weights) on the CPU, which is batch-invariant bit for bit, so every
 * configuration must give the same bits. */
#include "test_util.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <gdal.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "disopt_raster.h"
#include "internal.h"

#ifndef DISOPT_MODEL_FILE
#define DISOPT_MODEL_FILE "default.safetensors"
#endif

enum { RW = 612, RH = 70 };

static char g_path[256];
static disopt_engine *g_engine;
static disopt_model *g_model;
static float *g_ref; /* lazy read of the whole raster */
static int g_cuda;   /* DISOPT_TEST_BACKEND=cuda: the same runs on the GPU (FP32) */

static void fill(GDALDatasetH ds) {
    float *v = malloc(sizeof(float) * RW * RH);
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (int b = 0; b < 4; b++) {
        for (int y = 0; y < RH; y++)
            for (int x = 0; x < RW; x++) {
                h = h * 6364136223846793005ULL + 1442695040888963407ULL;
                const float noise = (float)((h >> 40) & 0xffff) / 65536.0f;
                const float f = 30.0f + 20.0f * sinf(0.07f * x + 0.9f * b) * cosf(0.11f * y) +
                                15.0f * (((x / 19 + y / 13) & 1) ? 1.0f : -0.5f) + 12.0f * noise;
                v[y * RW + x] = f < 0 ? 0 : f;
            }
        if (b == 2)
            for (int y = 10; y < 20; y++)
                for (int x = 500; x < 530; x++) v[y * RW + x] = NAN;
        assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, b + 1), GF_Write, 0, 0, RW, RH, v, RW, RH, GDT_Float32, 0, 0),
                         CE_None);
    }
    free(v);
}

static GDALDatasetH make_mem(void) {
    GDALDatasetH ds = GDALCreate(GDALGetDriverByName("MEM"), "", RW, RH, 4, GDT_Float32, NULL);
    assert_non_null(ds);
    fill(ds);
    return ds;
}

static int setup(void **s) {
    (void)s;
    GDALAllRegister();
    snprintf(g_path, sizeof g_path, "/tmp/disopt_tiler_%d.tif", (int)getpid());
    char **co = CSLAddString(NULL, "TILED=YES");
    co = CSLAddString(co, "BLOCKXSIZE=64");
    co = CSLAddString(co, "BLOCKYSIZE=64");
    GDALDatasetH ds = GDALCreate(GDALGetDriverByName("GTiff"), g_path, RW, RH, 4, GDT_Float32, co);
    CSLDestroy(co);
    assert_non_null(ds);
    fill(ds);
    GDALClose(ds);
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = 2;
    if (g_cuda) {
        eo.backend = DISOPT_BACKEND_CUDA;
        eo.precision = DISOPT_PRECISION_FP32;
    }
    assert_int_equal(disopt_engine_create(&eo, &g_engine), DISOPT_OK);
    assert_int_equal(disopt_model_load(g_engine, DISOPT_MODEL_FILE, &g_model), DISOPT_OK);
    return 0;
}

static int teardown(void **s) {
    (void)s;
    disopt_model_destroy(g_model);
    disopt_engine_destroy(g_engine);
    free(g_ref);
    unlink(g_path);
    return 0;
}

static void small_opts(disopt_tiler_options *o, int batch, int io) {
    disopt_tiler_options_init(o);
    o->tile_size = 64;
    o->overlap = 16;
    o->batch_size = batch;
    o->io_threads = io;
}

/* what the sink saw: every pixel once, cells inside the raster */
typedef struct sink_state {
    float *out;
    unsigned char *seen;
    int calls, fail_at, bad;
} sink_state;

static int sink(void *user, int x, int y, int w, int h, const float *prob) {
    sink_state *st = user;
    if (++st->calls == st->fail_at) return 1;
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || x + w > RW || y + h > RH) {
        st->bad++;
        return 0;
    }
    for (int yy = 0; yy < h; yy++)
        for (int xx = 0; xx < w; xx++) {
            const size_t i = (size_t)(y + yy) * RW + x + xx;
            st->seen[i]++;
            st->out[i] = prob[(size_t)yy * w + xx];
        }
    return 0;
}

static int bits_differ(const float *a, const float *b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

/* a bulk run of src with the given options; every pixel handed out exactly once; *hits: the uploads a
 * prefetch served */
static float *bulk_hits(GDALDatasetH src, int batch, int io, long *hits) {
    disopt_tiler_options o;
    small_opts(&o, batch, io);
    disopt_tiler *t = NULL;
    assert_int_equal(disopt_tiler_create(g_model, src, &o, &t), DISOPT_OK);
    sink_state st = {calloc((size_t)RW * RH, sizeof(float)), calloc((size_t)RW * RH, 1), 0, -1, 0};
    const disopt_status s = disopt_tiler_run(t, sink, &st, NULL, NULL);
    if (s != DISOPT_OK) fail_msg("tiler_run: %s", disopt_last_error());
    if (hits) *hits = dp_tiler_last_prefetch_hits(t);
    disopt_tiler_destroy(t);
    assert_int_equal(st.bad, 0);
    int wrong = 0;
    for (size_t i = 0; i < (size_t)RW * RH; i++) wrong += st.seen[i] != 1;
    assert_int_equal(wrong, 0);
    assert_int_equal(st.calls, 20 * 3); /* cells: ceil(612 / 32) x ceil(70 / 32) */
    free(st.seen);
    return st.out;
}

static float *bulk(GDALDatasetH src, int batch, int io) { return bulk_hits(src, batch, io, NULL); }

/* the reference: the lazy path, the whole raster in one read */
static void test_lazy_reference(void **s) {
    (void)s;
    GDALDatasetH src = GDALOpen(g_path, GA_ReadOnly);
    assert_non_null(src);
    disopt_tiler_options o;
    small_opts(&o, 1, 0);
    o.cache_tiles = 4; /* the lazy path recomputes what it evicted: same values */
    disopt_tiler *t = NULL;
    assert_int_equal(disopt_tiler_create(g_model, src, &o, &t), DISOPT_OK);
    g_ref = malloc(sizeof(float) * RW * RH);
    assert_int_equal(disopt_tiler_read(t, 0, 0, RW, RH, g_ref), DISOPT_OK);
    disopt_tiler_destroy(t);
    GDALClose(src);
    int nan = 0;
    float lo = 1, hi = 0;
    for (size_t i = 0; i < (size_t)RW * RH; i++) {
        if (isnan(g_ref[i])) {
            nan++;
            continue;
        }
        lo = fminf(lo, g_ref[i]);
        hi = fmaxf(hi, g_ref[i]);
    }
    print_message("# lazy read: %d nodata pixels, probability %.4f..%.4f\n", nan, lo, hi);
    assert_int_equal(nan, 30 * 10);
    assert_true(hi - lo > 0.01f); /* a varied picture: the equalities below mean something */
}

/* bulk runs in every configuration == the lazy read, bit for bit */
static void test_bulk_equals_lazy(void **s) {
    (void)s;
    assert_non_null(g_ref);
    GDALDatasetH tif = GDALOpen(g_path, GA_ReadOnly);
    GDALDatasetH mem = make_mem();
    assert_non_null(tif);
    const struct {
        GDALDatasetH src;
        const char *name;
        int batch, io;
    } cases[] = {
        {tif, "GTiff, batch 3, 3 readers", 3, 3}, {tif, "GTiff, batch 5, 2 readers", 5, 2},
        {tif, "GTiff, batch 64, auto readers", 64, 0}, {mem, "MEM (one reader), batch 3", 3, 4},
        {tif, "GTiff, batch 7, 2 readers, the short last batch padded (windows of an earlier batch)", 7, 2},
        {tif, "GTiff, batch 30, 2 readers, the short last batch padded (zeros)", 30, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        /* (the padding of a short last batch is for GPUs; YES forces it on the CPU, whose windows do not
         * depend on their batch, so the bits must not change) */
        CPLSetConfigOption("DISOPT_TILER_PAD", c >= 4 ? "YES" : NULL);
        float *out = bulk(cases[c].src, cases[c].batch, cases[c].io);
        CPLSetConfigOption("DISOPT_TILER_PAD", NULL);
        const int d = bits_differ(out, g_ref, (size_t)RW * RH);
        print_message("# %s: %d of %d pixels differ from the lazy read\n", cases[c].name, d, RW * RH);
        assert_int_equal(d, 0);
        free(out);
    }
    GDALClose(mem);
    GDALClose(tif);
}

/* The first batch prepared ahead (plan and graph while the buffers are allocated and the windows
 * read) and the prefetch (batch j + 1 copied to the device while batch j runs) change no bit. On a
 * backend with prefetch (CUDA), WAIT makes every full batch after the first go through it. A bulk run
 * computes 66 windows here (the window columns at a band's sides twice: 17 + 5 columns x 3 rows): in
 * batches of 5, 13 full batches and a short one, 12 prefetched; of 7, 9 full, 8 prefetched (the short
 * last batch is padded on a GPU and uploaded when it runs); of 64, one full batch, none. Without
 * prefetch (the CPU), none. */
static void test_prepare_prefetch(void **s) {
    (void)s;
    GDALDatasetH tif = GDALOpen(g_path, GA_ReadOnly);
    assert_non_null(tif);
    const int batches[] = {5, 7, 64}, expect[] = {12, 8, 0};
    for (int b = 0; b < 3; b++) {
        long hits = -1;
        CPLSetConfigOption("DISOPT_TILER_PREFETCH", "NO");
        CPLSetConfigOption("DISOPT_TILER_PREPARE", "NO");
        float *ref = bulk_hits(tif, batches[b], 2, &hits);
        assert_int_equal(hits, 0);
        CPLSetConfigOption("DISOPT_TILER_PREPARE", NULL);
        const char *modes[] = {"NO", "WAIT", "YES"};
        for (int m = 0; m < 3; m++) {
            CPLSetConfigOption("DISOPT_TILER_PREFETCH", modes[m]);
            float *out = bulk_hits(tif, batches[b], m == 2 ? 3 : 2, &hits);
            const int d = bits_differ(out, ref, (size_t)RW * RH);
            print_message("# batch %d, prepared, prefetch %s: %ld uploads prefetched, %d pixels differ from the run with neither\n",
                          batches[b], modes[m], hits, d);
            assert_int_equal(d, 0);
            if (m == 0) assert_int_equal(hits, 0);
            if (m == 1) assert_int_equal(hits, g_cuda ? expect[b] : 0);
            if (m == 2) assert_true(hits >= 0 && hits <= expect[b]);
            free(out);
        }
        CPLSetConfigOption("DISOPT_TILER_PREFETCH", NULL);
        if (!g_cuda) { /* (the CPU's windows do not depend on their batch: the lazy read's bits too) */
            assert_non_null(g_ref);
            assert_int_equal(bits_differ(ref, g_ref, (size_t)RW * RH), 0);
        }
        free(ref);
    }
    GDALClose(tif);
}

static int stop_after(double done, const char *msg, void *arg) {
    (void)done;
    (void)msg;
    return --*(int *)arg > 0;
}

/* cancel from the progress callback and a failing sink stop the pipeline cleanly, at any point */
static void test_cancel_and_sink_failure(void **s) {
    (void)s;
    GDALDatasetH src = GDALOpen(g_path, GA_ReadOnly);
    assert_non_null(src);
    for (int at = 1; at <= 4; at += 3) {
        disopt_tiler_options o;
        small_opts(&o, 3, 2);
        disopt_tiler *t = NULL;
        assert_int_equal(disopt_tiler_create(g_model, src, &o, &t), DISOPT_OK);
        sink_state st = {calloc((size_t)RW * RH, sizeof(float)), calloc((size_t)RW * RH, 1), 0, -1, 0};
        int left = at;
        assert_int_equal(disopt_tiler_run(t, sink, &st, stop_after, &left), DISOPT_ERR_CANCELLED);
        st.fail_at = st.calls + 1 + at; /* the same tiler runs again and its sink fails */
        assert_int_equal(disopt_tiler_run(t, sink, &st, NULL, NULL), DISOPT_ERR_IO);
        disopt_tiler_destroy(t);
        free(st.out);
        free(st.seen);
    }
    GDALClose(src);
}

/* a source that cannot be read gives an error, not a hang: a VRT whose source file is gone */
static void test_reader_failure(void **s) {
    (void)s;
    char vrt[300], tif[300];
    snprintf(tif, sizeof tif, "/tmp/disopt_tiler_gone_%d.tif", (int)getpid());
    snprintf(vrt, sizeof vrt, "/tmp/disopt_tiler_gone_%d.vrt", (int)getpid());
    GDALDatasetH a = GDALOpen(g_path, GA_ReadOnly);
    GDALDatasetH b = GDALCreateCopy(GDALGetDriverByName("GTiff"), tif, a, FALSE, NULL, NULL, NULL);
    assert_non_null(b);
    GDALClose(b);
    b = GDALOpen(tif, GA_ReadOnly);
    GDALDatasetH v = GDALCreateCopy(GDALGetDriverByName("VRT"), vrt, b, FALSE, NULL, NULL, NULL);
    assert_non_null(v);
    GDALClose(v);
    GDALClose(b);
    GDALClose(a);
    GDALDatasetH src = GDALOpen(vrt, GA_ReadOnly);
    assert_non_null(src);
    unlink(tif); /* the VRT's source is gone: its reads fail */
    disopt_tiler_options o;
    small_opts(&o, 3, 3);
    disopt_tiler *t = NULL;
    assert_int_equal(disopt_tiler_create(g_model, src, &o, &t), DISOPT_OK);
    sink_state st = {calloc((size_t)RW * RH, sizeof(float)), calloc((size_t)RW * RH, 1), 0, -1, 0};
    CPLPushErrorHandler(CPLQuietErrorHandler);
    const disopt_status r = disopt_tiler_run(t, sink, &st, NULL, NULL);
    CPLPopErrorHandler();
    print_message("# unreadable source: %s\n", disopt_last_error());
    assert_int_equal(r, DISOPT_ERR_IO);
    assert_non_null(strstr(disopt_last_error(), "reading the source"));
    assert_int_equal(st.calls, 0);
    disopt_tiler_destroy(t);
    GDALClose(src);
    unlink(vrt);
    free(st.out);
    free(st.seen);
}

int main(void) {
    const char *be = getenv("DISOPT_TEST_BACKEND");
    g_cuda = be && strcmp(be, "cuda") == 0;
    if (g_cuda) { /* no GPU (CI): skipped, with the reason */
        disopt_engine_options eo;
        disopt_engine_options_init(&eo);
        eo.backend = DISOPT_BACKEND_CUDA;
        disopt_engine *e = NULL;
        if (disopt_engine_create(&eo, &e) != DISOPT_OK) {
            printf("# CUDA backend unavailable, skipped: %s\n", disopt_last_error());
            return 77;
        }
        disopt_engine_destroy(e);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy_reference),
        cmocka_unit_test(test_bulk_equals_lazy),
        cmocka_unit_test(test_prepare_prefetch),
        cmocka_unit_test(test_cancel_and_sink_failure),
        cmocka_unit_test(test_reader_failure),
    };
    /* on the GPU, windows computed in batches of different sizes may differ in their last bits (the
     * convolutions' algorithms depend on the batch): the bulk == lazy test is the CPU's; the runs
     * compared on the GPU share their batch size */
    const struct CMUnitTest tests_gpu[] = {
        cmocka_unit_test(test_lazy_reference),
        cmocka_unit_test(test_prepare_prefetch),
        cmocka_unit_test(test_cancel_and_sink_failure),
        cmocka_unit_test(test_reader_failure),
    };
    return g_cuda ? cmocka_run_group_tests(tests_gpu, setup, teardown) : cmocka_run_group_tests(tests, setup, teardown);
}
