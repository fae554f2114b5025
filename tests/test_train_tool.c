/* test_train_tool.c - gdal_disopt_train (issue 6) end to end on tiny synthetic scenes made here with GDAL, and on
 * the real Rotterdam rasters (../shared/realdata):
 *  - the data pipeline: vector labels burnt with the pixel-centre rule (<= 20 m^2 dropped; a CRS84 GeoJSON
 *    reprojected onto UTM), raster labels with nodata, NaN / nodata SAR and optical off the warped footprint
 *    masked out, the band normalisation, flip and 180-degree rotation, loader results independent of the loader
 *    thread count;
 *  - warping onto a rotated grid: the real Capella SLC chip (complex -> dB) against rgb_unmasked.tif, each
 *    warped pixel checked against a bilinear interpolation computed here;
 *  - stage 1 then stage 2 on the result, then disopt_run and the BUILDINGS driver (gdal_translate) on the trained
 *    student, and the trainer's eval forward (what validation scores) against the inference engine;
 *  - kill -9 after the first checkpoint, --resume: the final model is byte-identical to an uninterrupted run's,
 *    and so is a run with another loader thread count;
 *  - --init from a partial file (matched / skipped counts);
 *  - every bad input fails with exit 1 and its message before any training (no checkpoint written); usage: 2. */
#define _LARGEFILE64_SOURCE 1
#include "test_util.h"

#include "raster/dataset.h"
#include "train/trainer.h"

#include <cpl_conv.h>
#include <gdal.h>
#include <json-c/json.h>
#include <ogr_srs_api.h>

#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define REAL DISOPT_SHARED "/realdata/rotterdam_capella"
#define S 96 /* synthetic scene side (pixels of 1 m) */

static char g_dir[256];

static char *P(const char *name) { /* a path in the test folder (rotating buffers) */
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "# %s\n", cmd);
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : 128 + WTERMSIG(r);
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)l + 1);
    size_t got = fread(b, 1, (size_t)l, f);
    fclose(f);
    b[got] = '\0';
    if (n)
        *n = got;
    return b;
}

static int same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---------------------------------------------------------------- synthetic scenes */
typedef struct {
    int x, y, w, h;
} rect;

/* buildings of scene k in SAR pixels; the last one is 4 x 4 m = 16 m^2 (dropped from vector labels) */
static const rect BUILD[3][5] = {
    {{10, 12, 12, 12}, {40, 50, 16, 10}, {70, 20, 10, 14}, {60, 70, 14, 14}, {30, 80, 4, 4}},
    {{20, 20, 14, 14}, {50, 30, 12, 16}, {15, 60, 16, 12}, {66, 66, 12, 12}, {80, 10, 4, 4}},
    {{12, 40, 14, 10}, {44, 12, 12, 14}, {70, 60, 12, 12}, {36, 70, 10, 12}, {84, 84, 4, 4}},
};
static const char *UTM = "EPSG:32631";

static double origin_x(int k) { return 592000.0 + 200.0 * k; }
static double origin_y(int k) { return 5749800.0 - 100.0 * k; }

static int in_building(int k, int x, int y, int with_tiny) {
    for (int b = 0; b < (with_tiny ? 5 : 4); b++) {
        const rect *r = &BUILD[k][b];
        if (x >= r->x && x < r->x + r->w && y >= r->y && y < r->y + r->h)
            return 1;
    }
    return 0;
}

static float noise(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) * (1.0f / 16777216.0f);
}

static void set_srs(GDALDatasetH d) {
    OGRSpatialReferenceH srs = OSRNewSpatialReference(NULL);
    OSRSetFromUserInput(srs, UTM);
    char *wkt = NULL;
    OSRExportToWkt(srs, &wkt);
    GDALSetProjection(d, wkt);
    CPLFree(wkt);
    OSRDestroySpatialReference(srs);
}

/* 4-band Float32 SAR; scene 0: NaN in columns 0..3; scene 1: nodata -9999 in rows 90..95 */
static void make_sar(int k, const char *path) {
    GDALDatasetH d = GDALCreate(GDALGetDriverByName("GTiff"), path, S, S, 4, GDT_Float32, NULL);
    assert_non_null(d);
    double gt[6] = {origin_x(k), 1.0, 0.0, origin_y(k), 0.0, -1.0};
    GDALSetGeoTransform(d, gt);
    set_srs(d);
    float *v = malloc(S * S * sizeof *v);
    uint32_t s = 17u + (uint32_t)k;
    for (int b = 1; b <= 4; b++) {
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                float f = in_building(k, x, y, 1) ? 60.0f + 10.0f * noise(&s) : 15.0f + 10.0f * noise(&s) + b;
                if (k == 0 && x < 4)
                    f = NAN;
                if (k == 1 && y >= 90)
                    f = -9999.0f;
                v[y * S + x] = f;
            }
        GDALRasterBandH rb = GDALGetRasterBand(d, b);
        if (k == 1)
            GDALSetRasterNoDataValue(rb, -9999.0);
        assert_int_equal(GDALRasterIO(rb, GF_Write, 0, 0, S, S, v, S, S, GDT_Float32, 0, 0), CE_None);
    }
    free(v);
    GDALClose(d);
}

/* 4-band Byte optical (buildings 200, background 40..70); scene 0 on a 0.5 m grid shifted by (-2 m, 0):
 * it does not cover SAR columns 94, 95 */
static void make_optical(int k, const char *path) {
    const int fine = k == 0, n = fine ? 2 * S : S;
    const double px = fine ? 0.5 : 1.0;
    GDALDatasetH d = GDALCreate(GDALGetDriverByName("GTiff"), path, n, n, 4, GDT_Byte, NULL);
    assert_non_null(d);
    double gt[6] = {origin_x(k) - (fine ? 2.0 : 0.0), px, 0.0, origin_y(k), 0.0, -px};
    GDALSetGeoTransform(d, gt);
    set_srs(d);
    unsigned char *v = malloc((size_t)n * n);
    uint32_t s = 99u + (uint32_t)k;
    for (int b = 1; b <= 4; b++) {
        for (int y = 0; y < n; y++)
            for (int x = 0; x < n; x++) {
                /* the SAR pixel this optical pixel lies in */
                const int sx = fine ? (int)floor((x * 0.5 - 2.0)) : x, sy = fine ? y / 2 : y;
                v[y * n + x] = in_building(k, sx, sy, 1) ? 200 : (unsigned char)(40 + 30 * noise(&s));
            }
        assert_int_equal(GDALRasterIO(GDALGetRasterBand(d, b), GF_Write, 0, 0, n, n, v, n, n, GDT_Byte, 0, 0), CE_None);
    }
    free(v);
    GDALClose(d);
}

/* polygons of the buildings: in UTM (crs member EPSG:32631) or in CRS84 lon/lat (reprojected here) */
static void make_geojson(int k, const char *path, int lonlat) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    OGRCoordinateTransformationH ct = NULL;
    if (lonlat) {
        OGRSpatialReferenceH a = OSRNewSpatialReference(NULL), b = OSRNewSpatialReference(NULL);
        OSRSetFromUserInput(a, UTM);
        OSRSetFromUserInput(b, "OGC:CRS84");
        OSRSetAxisMappingStrategy(a, OAMS_TRADITIONAL_GIS_ORDER);
        OSRSetAxisMappingStrategy(b, OAMS_TRADITIONAL_GIS_ORDER);
        ct = OCTNewCoordinateTransformation(a, b);
        assert_non_null(ct);
        OSRDestroySpatialReference(a);
        OSRDestroySpatialReference(b);
    }
    fprintf(f, "{\"type\":\"FeatureCollection\",%s\"features\":[",
            lonlat ? "" : "\"crs\":{\"type\":\"name\",\"properties\":{\"name\":\"urn:ogc:def:crs:EPSG::32631\"}},");
    for (int b = 0; b < 5; b++) {
        const rect *r = &BUILD[k][b];
        double xs[5] = {r->x, r->x + r->w, r->x + r->w, r->x, r->x},
               ys[5] = {r->y, r->y, r->y + r->h, r->y + r->h, r->y};
        double X[5], Y[5];
        for (int i = 0; i < 5; i++) {
            X[i] = origin_x(k) + xs[i];
            Y[i] = origin_y(k) - ys[i];
        }
        if (ct)
            assert_true(OCTTransform(ct, 5, X, Y, NULL));
        fprintf(
            f,
            "%s{\"type\":\"Feature\",\"properties\":{\"id\":%d},\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[[",
            b ? "," : "", b);
        for (int i = 0; i < 5; i++)
            fprintf(f, "%s[%.10f,%.10f]", i ? "," : "", X[i], Y[i]);
        fprintf(f, "]]}}");
    }
    fprintf(f, "]}\n");
    fclose(f);
    if (ct)
        OCTDestroyCoordinateTransformation(ct);
}

/* Byte mask on the SAR grid, 1 = building (the tiny one too: raster labels are taken as they are), nodata 255 in
 * rows 0..1 */
static void make_mask(int k, const char *path) {
    GDALDatasetH d = GDALCreate(GDALGetDriverByName("GTiff"), path, S, S, 1, GDT_Byte, NULL);
    double gt[6] = {origin_x(k), 1.0, 0.0, origin_y(k), 0.0, -1.0};
    GDALSetGeoTransform(d, gt);
    set_srs(d);
    unsigned char *v = malloc(S * S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            v[y * S + x] = y < 2 ? 255 : (unsigned char)in_building(k, x, y, 1);
    GDALSetRasterNoDataValue(GDALGetRasterBand(d, 1), 255);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(d, 1), GF_Write, 0, 0, S, S, v, S, S, GDT_Byte, 0, 0), CE_None);
    free(v);
    GDALClose(d);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    GDALAllRegister();
    const char *t = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/disopt_train_tool_%d", t, (int)getpid());
    if (mkdir(g_dir, 0755) != 0)
        return -1;
    char n[64];
    for (int k = 0; k < 3; k++) {
        snprintf(n, sizeof n, "sar%d.tif", k);
        make_sar(k, P(n));
        snprintf(n, sizeof n, "opt%d.tif", k);
        make_optical(k, P(n));
    }
    make_geojson(0, P("lab0.geojson"), 0);
    make_mask(1, P("lab1.tif"));
    make_geojson(2, P("lab2.geojson"), 1);
    write_file(P("list.csv"), "sar,optical,label,split\n"
                              "sar0.tif,opt0.tif,lab0.geojson,train\n"
                              "# a comment\n"
                              "sar1.tif,opt1.tif,lab1.tif,train\n"
                              "sar2.tif,opt2.tif,lab2.geojson,val\n");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (!getenv("DISOPT_TEST_KEEP"))
        sh("rm -rf '%s'", g_dir);
    return 0;
}

/* ---------------------------------------------------------------- the pipeline */
static float norm(float v) { return (v * (1.0f / 255.0f) - 0.5f) / 0.125f; }

static dp_dataset *open_ds(int crop, int rotate) {
    dp_ds_options o;
    dp_ds_options_init(&o);
    o.crop = crop;
    o.rotate180 = rotate;
    dp_dataset *ds = NULL;
    disopt_status s = dp_dataset_open(P("list.csv"), NULL, &o, &ds);
    if (s)
        fprintf(stderr, "# %s\n", disopt_last_error());
    assert_int_equal(s, DISOPT_OK);
    return ds;
}

typedef struct {
    float *x, *xt;
    int32_t *tg;
    uint8_t *vd;
} crop_buf;

static crop_buf cb_new(int c) {
    crop_buf b = {malloc(4 * (size_t)c * c * 4), malloc(4 * (size_t)c * c * 4), malloc((size_t)c * c * 4),
                  malloc((size_t)c * c)};
    return b;
}
static void cb_free(crop_buf *b) {
    free(b->x);
    free(b->xt);
    free(b->tg);
    free(b->vd);
}

static void test_pipeline(void **st) {
    (void)st;
    dp_dataset *ds = open_ds(S, 0);
    assert_int_equal(dp_dataset_count(ds, 0), 2);
    assert_int_equal(dp_dataset_count(ds, 1), 1);
    crop_buf b = cb_new(S);
    /* scene 0: vector label in UTM, NaN columns, optical warped from a finer shifted grid */
    assert_int_equal(dp_dataset_load(ds, 0, 0, 0, 0, 0, b.x, b.xt, b.tg, b.vd), DISOPT_OK);
    int mism = 0, ones = 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            ones += b.tg[y * S + x];
            mism += b.tg[y * S + x] != in_building(0, x, y, 0);
        }
    fprintf(stderr, "# scene 0: %d building pixels burnt (expected %d), %d differ\n", ones,
            12 * 12 + 16 * 10 + 10 * 14 + 14 * 14, mism);
    assert_int_equal(mism, 0); /* pixel-centre rule; the 16 m^2 polygon dropped */
    for (int y = 0; y < S; y++) {
        for (int x = 0; x < 4; x++)
            assert_int_equal(b.vd[y * S + x], 0); /* NaN SAR */
        for (int x = 94; x < S; x++)
            assert_int_equal(b.vd[y * S + x], 0); /* outside the optical */
        for (int x = 5; x < 92; x++)
            assert_int_equal(b.vd[y * S + x], 1);
        for (int x = 0; x < 4; x++)
            assert_true(b.x[y * S + x] == norm(0.0f)); /* raw 0 there */
    }
    /* the SAR normalisation, read back from the file */
    GDALDatasetH d = GDALOpen(P("sar0.tif"), GA_ReadOnly);
    float raw[S * S];
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(d, 3), GF_Read, 0, 0, S, S, raw, S, S, GDT_Float32, 0, 0), CE_None);
    GDALClose(d);
    for (int p = 0; p < S * S; p++)
        if (p % S >= 4)
            assert_true(b.x[2 * S * S + p] == norm(raw[p]));
    /* the warped optical: 200 inside a building (away from its edges), 40..70 on the background */
    for (int y = 52; y < 58; y++)
        for (int x = 43; x < 53; x++)
            assert_float_equal(b.xt[S * S + y * S + x], norm(200.0f), 1e-4);
    for (int x = 24; x < 38; x++) {
        const float v = b.xt[3 * S * S + 40 * S + x] * 0.125f + 0.5f;
        assert_true(v * 255.0f > 39.9f && v * 255.0f < 70.1f);
    }
    /* scene 1: raster label (tiny building kept), its nodata rows and the SAR nodata value masked */
    assert_int_equal(dp_dataset_load(ds, 0, 1, 0, 0, 0, b.x, b.xt, b.tg, b.vd), DISOPT_OK);
    mism = 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const int inval = y < 2 || y >= 90;
            assert_int_equal(b.vd[y * S + x], !inval);
            if (!inval)
                mism += b.tg[y * S + x] != in_building(1, x, y, 1);
        }
    assert_int_equal(mism, 0);
    /* scene 2 (val): CRS84 GeoJSON reprojected onto UTM */
    assert_int_equal(dp_dataset_load(ds, 1, 0, 0, 0, 0, b.x, b.xt, b.tg, b.vd), DISOPT_OK);
    mism = 0;
    for (int p = 0; p < S * S; p++)
        mism += b.tg[p] != in_building(2, p % S, p / S, 0);
    fprintf(stderr, "# scene 2 (CRS84 polygons): %d pixels differ from the UTM squares\n", mism);
    assert_int_equal(mism, 0);
    cb_free(&b);

    /* stage 1 without a SAR column (the optical's grid), and a separate validation list */
    write_file(P("nosar.csv"), "sar,optical,label\n,opt1.tif,lab1.tif\n");
    write_file(P("val.csv"), "optical,label,sar\nopt2.tif,lab2.geojson,sar2.tif\n");
    {
        dp_ds_options o1;
        dp_ds_options_init(&o1);
        o1.stage = 1;
        o1.crop = 64;
        dp_dataset *d1;
        assert_int_equal(dp_dataset_open(P("nosar.csv"), P("val.csv"), &o1, &d1), DISOPT_OK);
        assert_int_equal(dp_dataset_count(d1, 0), 1);
        assert_int_equal(dp_dataset_count(d1, 1), 1);
        crop_buf q = cb_new(64);
        assert_int_equal(dp_dataset_load(d1, 0, 0, 0, 32, 0, q.x, NULL, q.tg, q.vd), DISOPT_OK);
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++) {
                assert_int_equal(q.tg[y * 64 + x], in_building(1, x, y + 32, 1));
                assert_true(q.x[y * 64 + x] == (in_building(1, x, y + 32, 1) ? norm(200.0f) : q.x[y * 64 + x]));
            }
        cb_free(&q);
        dp_dataset_close(d1);
        o1.stage = 2; /* the SAR is needed in stage 2 */
        assert_int_not_equal(dp_dataset_open(P("nosar.csv"), NULL, &o1, &d1), DISOPT_OK);
        assert_non_null(strstr(disopt_last_error(), "empty sar path"));
    }

    /* flip and rotation of a 64 crop */
    const int c = 64;
    dp_dataset *dr = open_ds(c, 1), *dn = open_ds(c, 0);
    crop_buf u = cb_new(c), f = cb_new(c), r = cb_new(c);
    assert_int_equal(dp_dataset_load(dn, 0, 0, 7, 11, 0, u.x, u.xt, u.tg, u.vd), DISOPT_OK);
    assert_int_equal(dp_dataset_load(dn, 0, 0, 7, 11, 1, f.x, f.xt, f.tg, f.vd), DISOPT_OK);
    assert_int_equal(dp_dataset_load(dr, 0, 0, S - c - 7, S - c - 11, 0, r.x, r.xt, r.tg, r.vd), DISOPT_OK);
    const size_t PP = (size_t)c * c;
    for (int y = 0; y < c; y++)
        for (int x = 0; x < c; x++) {
            const size_t p = (size_t)y * c + x, pf = (size_t)y * c + (c - 1 - x), pr = PP - 1 - p;
            assert_int_equal(f.tg[pf], u.tg[p]);
            assert_int_equal(f.vd[pf], u.vd[p]);
            assert_int_equal(r.tg[pr], u.tg[p]);
            assert_int_equal(r.vd[pr], u.vd[p]);
            for (int ch = 0; ch < 4; ch++) {
                assert_true(f.x[ch * PP + pf] == u.x[ch * PP + p]);
                assert_true(f.xt[ch * PP + pf] == u.xt[ch * PP + p]);
                assert_true(r.x[ch * PP + pr] == u.x[ch * PP + p]);
                assert_true(r.xt[ch * PP + pr] == u.xt[ch * PP + p]);
            }
        }
    cb_free(&u);
    cb_free(&f);
    cb_free(&r);

    /* the loader: the same batches with 0 and 3 loader threads; another seed draws other crops */
    dp_loader *l0, *l3, *l9;
    assert_int_equal(dp_loader_create(dn, 0, 2, 0, 42, &l0), DISOPT_OK);
    assert_int_equal(dp_loader_create(dn, 0, 2, 3, 42, &l3), DISOPT_OK);
    assert_int_equal(dp_loader_create(dn, 0, 2, 2, 43, &l9), DISOPT_OK);
    int differ9 = 0;
    for (int e = 0; e < 2; e++) {
        assert_int_equal(dp_loader_begin(l0, e, 0, 3), DISOPT_OK);
        assert_int_equal(dp_loader_begin(l3, e, 0, 3), DISOPT_OK);
        assert_int_equal(dp_loader_begin(l9, e, 0, 3), DISOPT_OK);
        for (int i = 0; i < 3; i++) {
            const dp_batch *a, *bb, *cc;
            assert_int_equal(dp_loader_next(l0, &a), DISOPT_OK);
            assert_int_equal(dp_loader_next(l3, &bb), DISOPT_OK);
            assert_int_equal(dp_loader_next(l9, &cc), DISOPT_OK);
            assert_int_equal(a->index, i);
            assert_memory_equal(a->x, bb->x, 2 * 4 * PP * sizeof(float));
            assert_memory_equal(a->xt, bb->xt, 2 * 4 * PP * sizeof(float));
            assert_memory_equal(a->target, bb->target, 2 * PP * sizeof(int32_t));
            assert_memory_equal(a->valid, bb->valid, 2 * PP);
            differ9 += memcmp(a->x, cc->x, 2 * 4 * PP * sizeof(float)) != 0;
        }
        dp_loader_end(l3);
    }
    assert_true(differ9 > 0);
    /* the draws: crops inside the raster, both flips seen */
    int flips = 0;
    for (int k = 0; k < 64; k++) {
        int sm, x0, y0, fl;
        dp_loader_item(l0, 5, k, &sm, &x0, &y0, &fl);
        assert_true(sm >= 0 && sm < 2 && x0 >= 0 && x0 <= S - c && y0 >= 0 && y0 <= S - c);
        flips += fl;
    }
    assert_true(flips > 10 && flips < 54);
    dp_loader_destroy(l0);
    dp_loader_destroy(l3);
    dp_loader_destroy(l9);
    /* a file that disappears after the checks: the loader threads' error reaches the consumer (no hang) */
    assert_int_equal(sh("cp %s %s", P("sar1.tif"), P("gone.tif")), 0);
    write_file(P("gone.csv"), "sar,optical,label\ngone.tif,opt1.tif,lab1.tif\n");
    for (int th = 0; th <= 2; th += 2) {
        dp_ds_options og;
        dp_ds_options_init(&og);
        og.crop = c;
        dp_dataset *dg;
        assert_int_equal(dp_dataset_open(P("gone.csv"), NULL, &og, &dg), DISOPT_OK);
        assert_int_equal(remove(P("gone.tif")), 0);
        dp_loader *lg;
        assert_int_equal(dp_loader_create(dg, 0, 2, th, 1, &lg), DISOPT_OK);
        assert_int_equal(dp_loader_begin(lg, 0, 0, 3), DISOPT_OK);
        const dp_batch *bg;
        assert_int_equal(dp_loader_next(lg, &bg), DISOPT_ERR_IO);
        fprintf(stderr, "# %d loader threads, file removed: %s\n", th, disopt_last_error());
        assert_non_null(strstr(disopt_last_error(), "gone.tif"));
        assert_null(strstr(disopt_last_error(), "no GDAL message")); /* GDAL's own reason is kept */
        dp_loader_destroy(lg);
        dp_dataset_close(dg);
        assert_int_equal(sh("cp %s %s", P("sar1.tif"), P("gone.tif")), 0);
    }
    dp_dataset_close(dr);
    dp_dataset_close(dn);
    dp_dataset_close(ds);
}

/* ---------------------------------------------------------------- real rasters: warping onto a rotated grid */
static double bilinear(const unsigned char *img, int w, int h, double sx, double sy) {
    /* GDAL's bilinear at source pixel coordinates (sx, sy): centres at +0.5 */
    double fx = sx - 0.5, fy = sy - 0.5;
    int x0 = (int)floor(fx), y0 = (int)floor(fy);
    double ax = fx - x0, ay = fy - y0, acc = 0, wsum = 0;
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 2; i++) {
            int x = x0 + i, y = y0 + j;
            if (x < 0 || y < 0 || x >= w || y >= h)
                continue;
            double wt = (i ? ax : 1 - ax) * (j ? ay : 1 - ay);
            acc += wt * img[y * w + x];
            wsum += wt;
        }
    return wsum > 0 ? acc / wsum : NAN;
}

/* every pixel of the crop's warped optical (model band 1 = rgb band 3) against a bilinear interpolation of
 * rgb_unmasked at the pixel's centre, computed here from the two geotransforms */
static void check_warp(const char *sar_path, const crop_buf *b, int x0, int y0, int c, const char *what) {
    GDALDatasetH sar = GDALOpen(sar_path, GA_ReadOnly), rgb = GDALOpen(REAL "/rgb_unmasked.tif", GA_ReadOnly);
    assert_non_null(sar);
    assert_non_null(rgb);
    double sgt[6], rgt[6], inv[6];
    GDALGetGeoTransform(sar, sgt);
    GDALGetGeoTransform(rgb, rgt);
    assert_true(GDALInvGeoTransform(rgt, inv));
    const int rw = GDALGetRasterXSize(rgb), rh = GDALGetRasterYSize(rgb);
    unsigned char *band3 = malloc((size_t)rw * rh);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(rgb, 3), GF_Read, 0, 0, rw, rh, band3, rw, rh, GDT_Byte, 0, 0),
                     CE_None);
    double maxerr = 0;
    int n = 0;
    for (int y = 0; y < c; y++)
        for (int x = 0; x < c; x++) {
            const double px = x0 + x + 0.5, py = y0 + y + 0.5;
            const double X = sgt[0] + px * sgt[1] + py * sgt[2], Y = sgt[3] + px * sgt[4] + py * sgt[5];
            const double sx = inv[0] + X * inv[1] + Y * inv[2], sy = inv[3] + X * inv[4] + Y * inv[5];
            if (sx < 1 || sy < 1 || sx > rw - 1 || sy > rh - 1)
                continue;
            const double want = bilinear(band3, rw, rh, sx, sy);
            const double got = (b->xt[y * c + x] * 0.125 + 0.5) * 255.0;
            if (fabs(got - want) > maxerr)
                maxerr = fabs(got - want);
            n++;
        }
    fprintf(stderr, "# %s: %d warped pixels checked, max |GDALWarp - bilinear here| = %.3g (of 0..255)\n", what, n,
            maxerr);
    assert_true(n > c * c / 2);
    assert_true(maxerr < 0.05);
    free(band3);
    GDALClose(sar);
    GDALClose(rgb);
}

static void test_real_warp(void **st) {
    (void)st;
    /* a 60 x 40 m building (axis-aligned in UTM, so oblique to the chip's grid) and a 4 x 4 m one (dropped) */
    write_file(P("slc_lab.geojson"),
               "{\"type\":\"FeatureCollection\",\"crs\":{\"type\":\"name\",\"properties\":{\"name\":"
               "\"urn:ogc:def:crs:EPSG::32631\"}},\"features\":["
               "{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"Polygon\",\"coordinates\":"
               "[[[592840,5749430],[592900,5749430],[592900,5749470],[592840,5749470],[592840,5749430]]]}},"
               "{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"Polygon\",\"coordinates\":"
               "[[[592800,5749500],[592804,5749500],[592804,5749504],[592800,5749504],[592800,5749500]]]}}]}\n");
    write_file(P("slc.csv"), "sar,optical,label\n" REAL "/sar_hh.tif," REAL "/rgb_unmasked.tif,slc_lab.geojson\n");
    dp_ds_options o;
    dp_ds_options_init(&o);
    o.crop = 64;
    dp_dataset *ds = NULL;
    /* complex refused by default, with a message that says what to do */
    assert_int_not_equal(dp_dataset_open(P("slc.csv"), NULL, &o, &ds), DISOPT_OK);
    fprintf(stderr, "# %s\n", disopt_last_error());
    assert_non_null(strstr(disopt_last_error(), "band(s)"));
    o.n_sar_bands = 4;
    for (int i = 0; i < 4; i++)
        o.sar_bands[i] = 1;
    assert_int_not_equal(dp_dataset_open(P("slc.csv"), NULL, &o, &ds), DISOPT_OK);
    assert_non_null(strstr(disopt_last_error(), "complex"));
    o.complex_mode = DISOPT_COMPLEX_DB;
    o.n_opt_bands = 4;
    const int ob[4] = {3, 1, 1, 2};
    memcpy(o.opt_bands, ob, sizeof ob);
    assert_int_equal(dp_dataset_open(P("slc.csv"), NULL, &o, &ds), DISOPT_OK);
    const int c = 64, x0 = 68, y0 = 68;
    crop_buf b = cb_new(c);
    assert_int_equal(dp_dataset_load(ds, 0, 0, x0, y0, 0, b.x, b.xt, b.tg, b.vd), DISOPT_OK);
    /* SAR: 10 log10 |z|^2 of the chip */
    GDALDatasetH sar = GDALOpen(REAL "/sar_hh.tif", GA_ReadOnly);
    float *z = malloc((size_t)c * c * 8);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(sar, 1), GF_Read, x0, y0, c, c, z, c, c, GDT_CFloat32, 0, 0),
                     CE_None);
    for (int p = 0; p < c * c; p++) {
        const float q = z[2 * p] * z[2 * p] + z[2 * p + 1] * z[2 * p + 1];
        if (q > 0)
            assert_true(b.x[p] == norm(10.0f * log10f(q)) && b.x[3 * c * c + p] == b.x[p]);
    }
    /* optical: each warped pixel against a bilinear interpolation of rgb_unmasked at its centre */
    double sgt[6];
    GDALGetGeoTransform(sar, sgt);
    assert_true(fabs(sgt[2]) > 1.0); /* the chip's grid is rotated */
    check_warp(REAL "/sar_hh.tif", &b, x0, y0, c, "Capella SLC (rotated grid) + rgb_unmasked");
    /* the label burnt on the rotated grid: pixel centres inside the big building, none of the small one */
    int burnt = 0, wrong = 0;
    for (int y = 0; y < c; y++)
        for (int x = 0; x < c; x++) {
            const double px = x0 + x + 0.5, py = y0 + y + 0.5;
            const double X = sgt[0] + px * sgt[1] + py * sgt[2], Y = sgt[3] + px * sgt[4] + py * sgt[5];
            const int in = X > 592840 && X < 592900 && Y > 5749430 && Y < 5749470;
            burnt += b.tg[y * c + x];
            wrong += b.tg[y * c + x] != in;
        }
    fprintf(stderr,
            "# rotated grid: %d pixels burnt (%.0f m^2 at 6.25 m^2 per pixel; the polygon has 2400), %d differ "
            "from the pixel-centre rule computed here\n",
            burnt, burnt * 6.25, wrong);
    assert_true(burnt > 300);
    assert_int_equal(wrong, 0);
    free(z);
    GDALClose(sar);
    cb_free(&b);
    dp_dataset_close(ds);

    /* the co-registered pair: sar_masked (NaN nodata) + rgb_unmasked (pixel 6e-5 larger: warped too) */
    write_file(P("pair.csv"), "sar,optical,label\n" REAL "/sar_masked.tif," REAL "/rgb_unmasked.tif,lab0.geojson\n");
    o.complex_mode = DISOPT_COMPLEX_ERROR;
    o.n_sar_bands = 0;
    assert_int_equal(dp_dataset_open(P("pair.csv"), NULL, &o, &ds), DISOPT_OK);
    b = cb_new(c);
    const int px0 = 100, py0 = 40;
    assert_int_equal(dp_dataset_load(ds, 0, 0, px0, py0, 0, b.x, b.xt, b.tg, b.vd), DISOPT_OK);
    sar = GDALOpen(REAL "/sar_masked.tif", GA_ReadOnly);
    float *raw = malloc((size_t)c * c * sizeof *raw);
    int nan_px = 0;
    for (int bd = 1; bd <= 4; bd++) {
        assert_int_equal(
            GDALRasterIO(GDALGetRasterBand(sar, bd), GF_Read, px0, py0, c, c, raw, c, c, GDT_Float32, 0, 0), CE_None);
        for (int p = 0; p < c * c; p++) {
            if (isnan(raw[p])) {
                nan_px += bd == 1;
                assert_int_equal(b.vd[p], 0);
                assert_true(b.x[(bd - 1) * c * c + p] == norm(0.0f));
            } else {
                assert_true(b.x[(bd - 1) * c * c + p] == norm(raw[p]));
            }
        }
    }
    fprintf(stderr, "# sar_masked crop: %d NaN pixels masked\n", nan_px);
    check_warp(REAL "/sar_masked.tif", &b, px0, py0, c, "sar_masked + rgb_unmasked");
    free(raw);
    GDALClose(sar);
    cb_free(&b);
    dp_dataset_close(ds);
}

/* ---------------------------------------------------------------- the tool */
/* the smallest trainer configuration (b0, 2 x 64 x 64); under the sanitizers (~3x slower) one step per epoch */
#if defined(__SANITIZE_ADDRESS__)
#define STEPS "1"
#define RESUME_EPOCHS 2
#else
#define STEPS "2"
#define RESUME_EPOCHS 3
#endif
#define BASE "--arch b0 --batch 2 --crop 64 --steps-per-epoch " STEPS " --seed 5"

static void test_train_stages(void **st) {
    (void)st;
    /* stage 1 on the real co-registered pair (rgb as 4 bands 3,1,1,2) too: the optical is warped (its pixel
     * differs from the SAR's by 6e-5) */
    write_file(P("real.csv"), "sar,optical,label\n" REAL "/sar_masked.tif," REAL "/rgb_unmasked.tif,lab0.geojson\n");
    assert_int_equal(sh("%s -q --stage optical " BASE " --epochs 1 --optical-bands 3,1,1,2 %s %s", TRAIN_TOOL,
                        P("real.csv"), P("real_t.safetensors")),
                     0);
    assert_int_equal(sh("%s -q --stage distill --teacher %s " BASE " --epochs 1 --optical-bands 3,1,1,2 %s %s",
                        TRAIN_TOOL, P("real_t.safetensors"), P("real.csv"), P("real_s.safetensors")),
                     0);
    /* the synthetic scenes: stage 1, stage 2 on its result */
    assert_int_equal(sh("%s --stage optical " BASE " --epochs 2 %s %s > %s", TRAIN_TOOL, P("list.csv"),
                        P("teacher.safetensors"), P("t.out")),
                     0);
    char *out = slurp(P("t.out"), NULL);
    fprintf(stderr, "%s", out);
    assert_non_null(strstr(out, "2 training, 1 validation"));
    assert_non_null(strstr(out, "epoch 2/2"));
    assert_non_null(strstr(out, "val dice"));
    free(out);
    assert_true(exists(P("teacher.ckpt.safetensors")));
    char *log = slurp(P("teacher.log.csv"), NULL);
    assert_non_null(log);
    assert_non_null(strstr(log, "epoch,steps,lr,loss,ce,dice,val_dice"));
    assert_non_null(strstr(log, "\n2,"));
    free(log);
    assert_int_equal(sh("%s -q --stage distill --teacher %s " BASE " --epochs 2 %s %s", TRAIN_TOOL,
                        P("teacher.safetensors"), P("list.csv"), P("student.safetensors")),
                     0);
    log = slurp(P("student.log.csv"), NULL);
    assert_non_null(strstr(log, "seg_sar,seg_rgb,kd_rgb,seg_fused,feat"));
    free(log);
    /* the trained student through the inference loader: metadata and normalisation */
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = 1;
    disopt_engine *e;
    assert_int_equal(disopt_engine_create(&eo, &e), DISOPT_OK);
    disopt_model *m;
    assert_int_equal(disopt_model_load(e, P("student.safetensors"), &m), DISOPT_OK);
    disopt_model_info mi;
    assert_int_equal(disopt_model_get_info(m, &mi), DISOPT_OK);
    assert_int_equal(mi.config.arch, DISOPT_ARCH_STUDENT);
    assert_int_equal(mi.config.variant, 0);
    assert_string_equal(mi.band_names[0], "HH");
    assert_true(mi.band_scale[0] == 1.0f / 255.0f && mi.band_mean[2] == 0.5f && mi.band_std[3] == 0.125f);
    assert_non_null(disopt_model_metadata(m, "best_val_dice"));
    assert_non_null(disopt_model_metadata(m, "data_list_fnv1a64"));
    assert_string_equal(disopt_model_metadata(m, "epochs"), "2");
    assert_non_null(strstr(disopt_model_metadata(m, "training_options"), "stage=distill arch=student-b0"));
    fprintf(stderr, "# student: best val dice %s (epoch %s), %s\n", disopt_model_metadata(m, "best_val_dice"),
            disopt_model_metadata(m, "best_epoch"), disopt_model_metadata(m, "provenance"));
    /* what validation computed (the trainer's eval forward on the file) is what inference computes (BN folded) */
    {
        dp_ds_options o;
        dp_ds_options_init(&o);
        o.crop = 64;
        dp_dataset *ds;
        assert_int_equal(dp_dataset_open(P("list.csv"), NULL, &o, &ds), DISOPT_OK);
        crop_buf b = cb_new(64);
        assert_int_equal(dp_dataset_load(ds, 1, 0, 16, 16, 0, b.x, b.xt, b.tg, b.vd), DISOPT_OK);
        disopt_model_config mc;
        assert_int_equal(disopt_model_config_parse("student-b0", &mc), DISOPT_OK);
        dp_trainer_config tc = dp_trainer_config_authors(&mc, 1, 64, 64);
        dp_trainer *t;
        assert_int_equal(dp_trainer_create(&tc, P("student.safetensors"), P("teacher.safetensors"), &t), DISOPT_OK);
        assert_int_equal(dp_trainer_forward_eval(t, b.x), DISOPT_OK);
        int c, h, w;
        const float *lt = dp_trainer_tensor(t, 0, "logits", &c, &h, &w);
        assert_non_null(lt);
        assert_true(c == 2 && h == 64 && w == 64);
        float *li = malloc(2 * 64 * 64 * sizeof *li);
        disopt_outputs outs;
        memset(&outs, 0, sizeof outs);
        outs.fused_logits = li;
        assert_int_equal(disopt_model_infer(m, b.x, 1, 4, 64, 64, &outs), DISOPT_OK);
        double md = 0, mx = 0;
        for (int i = 0; i < 2 * 64 * 64; i++) {
            md = fmax(md, fabs((double)lt[i] - li[i]));
            mx = fmax(mx, fabs((double)lt[i]));
        }
        fprintf(stderr,
                "# trained student: trainer eval forward vs inference engine: max |diff| %.3g of max |logit| %.3g\n",
                md, mx);
        assert_true(md <= 1e-4 * mx + 1e-6);
        free(li);
        dp_trainer_destroy(t);
        cb_free(&b);
        dp_dataset_close(ds);
    }
    disopt_model_destroy(m);
    disopt_engine_destroy(e);
    /* the tiler through disopt_run on a whole scene, and on the real SAR with the real student */
    assert_int_equal(sh("%s -q -threads 1 -tile 64 -overlap 16 -m %s %s %s", RUN_TOOL, P("student.safetensors"),
                        P("sar2.tif"), P("prob2.tif")),
                     0);
    GDALDatasetH pd = GDALOpen(P("prob2.tif"), GA_ReadOnly);
    assert_non_null(pd);
    assert_int_equal(GDALGetRasterXSize(pd), S);
    assert_non_null(strstr(GDALGetMetadataItem(pd, "DISOPT_MODEL_PROVENANCE", NULL), "gdal_disopt_train"));
    float prob[S * S];
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(pd, 1), GF_Read, 0, 0, S, S, prob, S, S, GDT_Float32, 0, 0),
                     CE_None);
    for (int p = 0; p < S * S; p++)
        assert_true(prob[p] >= 0.0f && prob[p] <= 1.0f);
    GDALClose(pd);
    /* the BUILDINGS driver (plugin from the build tree: GDAL_DRIVER_PATH) takes the trained student */
    assert_int_equal(
        sh("gdal_translate -q -of BUILDINGS -co MODEL=%s -co TILE_SIZE=64 -co OVERLAP=16 -co NUM_THREADS=1 "
           "%s %s",
           P("student.safetensors"), P("sar2.tif"), P("drv2.tif")),
        0);
    pd = GDALOpen(P("drv2.tif"), GA_ReadOnly);
    assert_non_null(pd);
    assert_string_equal(GDALGetMetadataItem(pd, "DISOPT_MODEL", NULL), "student-b0 (gdal_disopt_train)");
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(pd, 1), GF_Read, 0, 0, S, S, prob, S, S, GDT_Float32, 0, 0),
                     CE_None);
    for (int p = 0; p < S * S; p++)
        assert_true(prob[p] >= 0.0f && prob[p] <= 1.0f);
    GDALClose(pd);
    /* ... and gdal_disopt_eval scores the driver's output against the scene's footprints (issue 6's chain:
     * stage 1, stage 2, the driver, eval); the numbers are those of a few steps of training, the test is that
     * every metric is there and in range, with the scene's buildings counted */
    assert_int_equal(sh("%s -q -of JSON -o %s %s %s", EVAL_TOOL, P("eval.json"), P("drv2.tif"), P("lab2.geojson")), 0);
    {
        char *js = slurp(P("eval.json"), NULL);
        assert_non_null(js);
        json_object *root = json_tokener_parse(js), *tot, *px, *bl, *v;
        assert_non_null(root);
        assert_true(json_object_object_get_ex(root, "total", &tot));
        assert_true(json_object_object_get_ex(tot, "pixels", &px));
        assert_true(json_object_object_get_ex(tot, "buildings", &bl));
        assert_true(json_object_object_get_ex(px, "tp", &v));
        const int64_t tp = json_object_get_int64(v);
        assert_true(json_object_object_get_ex(px, "fn", &v));
        assert_true(tp + json_object_get_int64(v) > 0); /* the scene has building pixels */
        assert_true(json_object_object_get_ex(bl, "truth_polygons", &v));
        assert_true(json_object_get_int64(v) > 0);
        fprintf(stderr, "# eval of the trained student through the driver: %s\n", js);
        json_object_put(root);
        free(js);
    }
    assert_int_equal(sh("%s -q -threads 1 -tile 64 -overlap 16 -m %s %s %s", RUN_TOOL, P("real_s.safetensors"),
                        REAL "/sar_masked.tif", P("prob_real.tif")),
                     0);
}

/* kill -9 after the first checkpoint, resume: byte-identical to an uninterrupted run */
static void test_resume(void **st) {
    (void)st;
    char args[1024];
    snprintf(args, sizeof args, "-q --stage distill --teacher %s " BASE " --epochs %d %s", P("teacher.safetensors"),
             RESUME_EPOCHS, P("list.csv"));
    assert_int_equal(sh("%s %s %s", TRAIN_TOOL, args, P("straight.safetensors")), 0);
    /* no loader thread (the default is 2): the same bytes (compute threads: test_train_step) */
    assert_int_equal(sh("%s %s --loader-threads 0 %s", TRAIN_TOOL, args, P("threads.safetensors")), 0);
    assert_true(same_bytes(P("straight.safetensors"), P("threads.safetensors")));
    /* the interrupted run */
    char ck[512];
    snprintf(ck, sizeof ck, "%s", P("killed.ckpt.safetensors"));
    remove(ck);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[40];
        int n = 0;
        char *dup = strdup(args), *save = NULL;
        argv[n++] = TRAIN_TOOL;
        for (char *tok = strtok_r(dup, " ", &save); tok && n < 36; tok = strtok_r(NULL, " ", &save))
            argv[n++] = tok;
        argv[n++] = P("killed.safetensors");
        argv[n] = NULL;
        execv(TRAIN_TOOL, (char *const *)argv);
        _exit(127);
    }
    int waited = 0;
    while (!exists(ck) && waited < 120000) {
        nanosleep(&(struct timespec){0, 2000000}, NULL);
        waited += 2;
    }
    assert_true(exists(ck));
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    const int killed = WIFSIGNALED(status);
    fprintf(stderr, "# first checkpoint after %d ms; the run was %s\n", waited,
            killed ? "killed mid-run" : "already finished (slow poll)");
    assert_true(killed);
    assert_false(exists(P("killed.safetensors")));
    assert_int_equal(sh("%s %s --resume %s %s", TRAIN_TOOL, args, ck, P("killed.safetensors")), 0);
    assert_true(same_bytes(P("straight.safetensors"), P("killed.safetensors")));
    /* resuming a finished run only writes the same model again */
    assert_int_equal(sh("%s %s --resume %s %s", TRAIN_TOOL, args, ck, P("again.safetensors")), 0);
    assert_true(same_bytes(P("straight.safetensors"), P("again.safetensors")));
    char *a = slurp(P("straight.log.csv"), NULL), *b = slurp(P("killed.log.csv"), NULL);
    /* the logs agree up to the seconds column: same number of rows */
    int ra = 0, rb = 0;
    for (char *p = a; *p; p++)
        ra += *p == '\n';
    for (char *p = b; *p; p++)
        rb += *p == '\n';
    assert_int_equal(ra, 1 + RESUME_EPOCHS);
    assert_int_equal(rb, 1 + RESUME_EPOCHS);
    free(a);
    free(b);
    /* a checkpoint of another run is refused */
    assert_int_equal(
        sh("%s %s --lr 0.01 --resume %s %s 2> %s", TRAIN_TOOL, args, ck, P("other.safetensors"), P("err.txt")), 1);
    char *err = slurp(P("err.txt"), NULL);
    assert_non_null(strstr(err, "belongs to another run"));
    free(err);
}

static void test_init(void **st) {
    (void)st;
    /* a partial file: two student keys, one with another shape, one unknown */
    disopt_st *src;
    assert_int_equal(disopt_st_open(P("student.safetensors"), &src), DISOPT_OK);
    disopt_st_writer *w;
    assert_int_equal(disopt_st_writer_create(&w), DISOPT_OK);
    const char *keys[2] = {"encoder_sar._conv_stem.weight", "encoder_sar._bn0.weight"};
    for (int k = 0; k < 2; k++) {
        const disopt_st_tensor_info *ti = disopt_st_find(src, keys[k]);
        assert_non_null(ti);
        size_t n = 1;
        for (int d = 0; d < ti->ndim; d++)
            n *= (size_t)ti->shape[d];
        float *v = malloc(n * sizeof *v);
        assert_int_equal(disopt_st_read_f32(src, ti, v, n), DISOPT_OK);
        char name[128];
        snprintf(name, sizeof name, "module.%s", keys[k]);
        assert_int_equal(disopt_st_writer_add(w, name, DISOPT_DTYPE_F32, ti->ndim, ti->shape, v), DISOPT_OK);
        free(v);
    }
    float z[8] = {0};
    int64_t sh3[1] = {3}, sh8[1] = {8};
    assert_int_equal(disopt_st_writer_add(w, "encoder_sar._bn1.bias", DISOPT_DTYPE_F32, 1, sh3, z), DISOPT_OK);
    assert_int_equal(disopt_st_writer_add(w, "imagenet.fc.bias", DISOPT_DTYPE_F32, 1, sh8, z), DISOPT_OK);
    assert_int_equal(disopt_st_writer_save(w, P("partial.safetensors")), DISOPT_OK);
    disopt_st_writer_destroy(w);
    disopt_st_close(src);
    assert_int_equal(sh("%s --stage distill --teacher %s " BASE " --epochs 1 --steps-per-epoch 1 --init %s %s %s > %s",
                        TRAIN_TOOL, P("teacher.safetensors"), P("partial.safetensors"), P("list.csv"),
                        P("init.safetensors"), P("init.out")),
                     0);
    char *out = slurp(P("init.out"), NULL);
    fprintf(stderr, "%s", out);
    assert_non_null(strstr(out, "2 tensors loaded (name and shape matched), 2 skipped"));
    free(out);
    /* nothing matches: an error */
    assert_int_equal(sh("%s -q --stage optical " BASE " --epochs 1 --init %s %s %s 2> %s", TRAIN_TOOL,
                        P("partial.safetensors"), P("list.csv"), P("init2.safetensors"), P("err.txt")),
                     1);
    out = slurp(P("err.txt"), NULL);
    assert_non_null(strstr(out, "no tensor matches"));
    free(out);
}

/* each bad input: exit 1 with its message, before any training (no checkpoint) */
static void bad_case(const char *what, const char *extra, const char *list, const char *output, const char *msg) {
    char ck[512];
    snprintf(ck, sizeof ck, "%s", P("bad.ckpt.safetensors"));
    remove(ck);
    int rc = sh("%s -q --stage distill --teacher %s " BASE " --epochs 1 %s %s %s 2> %s", TRAIN_TOOL,
                P("teacher.safetensors"), extra, list, output, P("err.txt"));
    char *err = slurp(P("err.txt"), NULL);
    fprintf(stderr, "# %s -> exit %d: %s", what, rc, err);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, msg));
    assert_false(exists(ck));
    free(err);
}

static void test_bad_input(void **st) {
    (void)st;
    char out[512];
    snprintf(out, sizeof out, "%s", P("bad.safetensors"));
    write_file(P("missing.csv"), "sar,optical,label\nsar0.tif,nothere.tif,lab0.geojson\n");
    bad_case("missing file", "", P("missing.csv"), out, "does not exist");
    bad_case("missing list", "", P("nolist.csv"), out, "cannot open the sample list");
    write_file(P("empty.csv"), "sar,optical,label\n");
    bad_case("empty list", "", P("empty.csv"), out, "holds no sample");
    write_file(P("onlyval.csv"), "sar,optical,label,split\nsar0.tif,opt0.tif,lab0.geojson,val\n");
    bad_case("no training sample", "", P("onlyval.csv"), out, "no training sample");
    write_file(P("header.csv"), "a,b,c\nsar0.tif,opt0.tif,lab0.geojson\n");
    bad_case("bad header", "", P("header.csv"), out, "must name the columns");
    /* a 3-band SAR and an optical without georeferencing off the SAR grid, an optical elsewhere */
    assert_int_equal(sh("gdal_translate -q -b 1 -b 2 -b 3 %s %s", P("sar0.tif"), P("sar3b.tif")), 0);
    write_file(P("bands.csv"), "sar,optical,label\nsar3b.tif,opt0.tif,lab0.geojson\n");
    bad_case("wrong band count", "", P("bands.csv"), out, "has 3 band(s), the model takes 4");
    bad_case("band list out of range", "--sar-bands 1,2,3,9", P("list.csv"), out, "band 9 asked for");
    GDALDatasetH ng = GDALCreate(GDALGetDriverByName("GTiff"), P("optnogeo.tif"), S, S, 4, GDT_Byte, NULL);
    assert_non_null(ng);
    GDALClose(ng);
    write_file(P("nogeo.csv"), "sar,optical,label\nsar0.tif,optnogeo.tif,lab0.geojson\n");
    bad_case("optical without georeferencing", "", P("nogeo.csv"), out, "cannot align it");
    assert_int_equal(
        sh("gdal_translate -q -a_ullr 100000 5000000 100192 4999808 %s %s", P("opt0.tif"), P("optfar.tif")), 0);
    write_file(P("far.csv"), "sar,optical,label\nsar0.tif,optfar.tif,lab0.geojson\n");
    bad_case("no overlap", "", P("far.csv"), out, "does not overlap the SAR grid");
    bad_case("crop larger than a tile", "--crop 128", P("list.csv"), out, "smaller than the crop 128 x 128");
    bad_case("crop not a multiple of 32", "--crop 48", P("list.csv"), out, "multiple of 32");
    bad_case("unknown architecture", "--arch b9", P("list.csv"), out, "unknown architecture");
    bad_case("unknown architecture name", "--arch resnet50", P("list.csv"), out, "unknown architecture");
    bad_case("cuda in fp64", "--device cuda --precision fp64", P("list.csv"), out, "--device cuda trains in fp32");
    bad_case("batch not split over the GPUs", "--device cuda:0,1 --batch 3", P("list.csv"), out,
             "does not split evenly over 2 GPUs");
    bad_case("unwritable output folder", "", P("list.csv"), "/proc/disopt_out.safetensors", "not writable");
    bad_case("missing output folder", "", P("list.csv"), P("no/such/dir/out.safetensors"), "does not exist");
    bad_case("output is a folder", "", P("list.csv"), g_dir, "is not a regular file");
    /* a GPU list with a bad entry: a usage error (exit 2) */
    int urc = sh("%s -q --stage distill --teacher %s " BASE " --epochs 1 --device cuda:0,x %s %s 2> %s", TRAIN_TOOL,
                 P("teacher.safetensors"), P("list.csv"), out, P("err.txt"));
    char *uerr = slurp(P("err.txt"), NULL);
    fprintf(stderr, "# GPU list with a bad entry -> exit %d: %s", urc, uerr);
    assert_int_equal(urc, 2);
    assert_non_null(strstr(uerr, "--device: bad value 'cuda:0,x'"));
    free(uerr);
    /* a student passed as the teacher */
    int rc = sh("%s -q --stage distill --teacher %s " BASE " --epochs 1 %s %s 2> %s", TRAIN_TOOL,
                P("student.safetensors"), P("list.csv"), out, P("err.txt"));
    char *err = slurp(P("err.txt"), NULL);
    fprintf(stderr, "# student as teacher -> exit %d: %s", rc, err);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "is a student-b0 model: --teacher takes a stage-1 model"));
    free(err);
    rc = sh("%s -q --stage distill --teacher %s --arch b1 --crop 64 %s %s 2> %s", TRAIN_TOOL, P("teacher.safetensors"),
            P("list.csv"), out, P("err.txt"));
    err = slurp(P("err.txt"), NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "the encoders must match"));
    free(err);
    /* usage errors: 2 */
    assert_int_equal(sh("%s 2>/dev/null", TRAIN_TOOL), 2);
    assert_int_equal(sh("%s --stage optical --bogus %s %s 2>/dev/null", TRAIN_TOOL, P("list.csv"), out), 2);
    assert_int_equal(sh("%s --stage optical %s 2>/dev/null", TRAIN_TOOL, P("list.csv")), 2);
    assert_int_equal(sh("%s --stage optical --epochs x %s %s 2>/dev/null", TRAIN_TOOL, P("list.csv"), out), 2);
    assert_int_equal(sh("%s --help > /dev/null", TRAIN_TOOL), 0);
    assert_int_equal(sh("%s --version | grep -q '^gdal_disopt_train (gdal-disopt .*GDAL'", TRAIN_TOOL), 0);
    assert_false(exists(out));
}

/* a disk that fills up mid-run: RLIMIT_FSIZE (ulimit -f) stands in for it, so that the first checkpoint's write
 * fails (EFBIG, SIGXFSZ ignored). The tool stops with exit 1 and a message naming the file, and leaves neither
 * a model nor a checkpoint nor a temporary file behind. */
static void test_disk_full(void **st) {
    (void)st;
    const char *out = P("full.safetensors");
    char ck[512], dir[512];
    snprintf(ck, sizeof ck, "%s", P("full.ckpt.safetensors"));
    snprintf(dir, sizeof dir, "%s", g_dir);
    remove(out);
    remove(ck);
    int rc = sh("ulimit -f 2048; trap '' XFSZ; %s -q --stage optical " BASE " --epochs 2 %s %s 2> %s", TRAIN_TOOL,
                P("list.csv"), out, P("err.txt"));
    char *err = slurp(P("err.txt"), NULL);
    fprintf(stderr, "# disk full -> exit %d: %s", rc, err ? err : "(no message)");
    assert_int_equal(rc, 1);
    assert_non_null(err);
    assert_non_null(strstr(err, "write failed"));
    assert_non_null(strstr(err, "full.ckpt.safetensors"));
    free(err);
    assert_false(exists(out));
    assert_false(exists(ck));
    assert_int_equal(sh("ls %s | grep -q 'full.*tmp'", dir), 1); /* no temporary file left */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline), cmocka_unit_test(test_real_warp), cmocka_unit_test(test_train_stages),
        cmocka_unit_test(test_resume),   cmocka_unit_test(test_init),      cmocka_unit_test(test_bad_input), cmocka_unit_test(test_disk_full),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
