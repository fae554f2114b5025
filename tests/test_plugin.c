/* test_plugin.c - the BUILDINGS driver end to end, through GDAL as a user meets it: the plugin is
 * loaded from the build tree (GDAL_DRIVER_PATH), datasets are made with GDALTranslate / the
 * gdal_translate command, and every comparison is over all pixels.
 *
 * Fixture: a synthetic 4-band Float32 "SAR" scene in SpaceNet 6's value range (0..92, smooth
 * structure + noise, a NaN patch and a nodata-valued patch), georeferenced in UTM 31N. The model
 * is the demo model (the authors' student B3 with dwgen-1 weights): untrained, but its outputs vary
 * over this scene, so every equality below is a real one. */
#include "test_util.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <gdal_utils.h>
#include <math.h>
#include <ogr_srs_api.h>
#include <sys/stat.h>

#include "disopt_raster.h"

#ifndef DISOPT_MODEL_FILE
#define DISOPT_MODEL_FILE "default.safetensors"
#endif

#define SAR_REAL DISOPT_SHARED "/realdata/rotterdam_capella/sar_masked.tif"
#define SLC_DIR DISOPT_SHARED "/realdata/rotterdam_capella"

enum { FW = 200, FH = 168 };

static char g_dir[256], g_scene[300], g_ref[300];
static const char *SMALL[] = {"-co", "TILE_SIZE=128", "-co", "OVERLAP=32", NULL};

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

static void make_scene(const char *path) {
    GDALDatasetH ds = GDALCreate(GDALGetDriverByName("GTiff"), path, FW, FH, 4, GDT_Float32, NULL);
    assert_non_null(ds);
    double gt[6] = {592000.0, 0.5, 0.0, 5750000.0, 0.0, -0.5};
    GDALSetGeoTransform(ds, gt);
    OGRSpatialReferenceH srs = OSRNewSpatialReference(NULL);
    OSRImportFromEPSG(srs, 32631);
    GDALSetSpatialRef(ds, srs);
    OSRDestroySpatialReference(srs);
    float *v = malloc(sizeof(float) * FW * FH);
    uint64_t h = 0x1234567;
    for (int b = 0; b < 4; b++) {
        for (int y = 0; y < FH; y++)
            for (int x = 0; x < FW; x++) {
                h = h * 6364136223846793005ULL + 1442695040888963407ULL;
                float noise = (float)((h >> 40) & 0xffff) / 65536.0f;
                float f = 35.0f + 22.0f * sinf(0.09f * x + 0.7f * b) * cosf(0.06f * y) +
                          18.0f * (((x / 23 + y / 17) & 1) ? 1.0f : -0.5f) + 14.0f * noise;
                v[y * FW + x] = f < 0 ? 0 : (f > 92 ? 92 : f);
            }
        if (b == 1)
            for (int y = 20; y < 30; y++)
                for (int x = 40; x < 55; x++) v[y * FW + x] = NAN;
        GDALRasterBandH band = GDALGetRasterBand(ds, b + 1);
        GDALSetRasterNoDataValue(band, -9999.0);
        if (b == 2)
            for (int y = 100; y < 104; y++)
                for (int x = 150; x < 180; x++) v[y * FW + x] = -9999.0f;
        assert_int_equal(GDALRasterIO(band, GF_Write, 0, 0, FW, FH, v, FW, FH, GDT_Float32, 0, 0), CE_None);
    }
    free(v);
    GDALClose(ds);
}

/* gdal_translate through the C API; argv-style options, NULL-terminated; returns the output or NULL */
static GDALDatasetH translate(const char *dst, GDALDatasetH src, const char *const *a, const char *const *b) {
    char **argv = NULL;
    for (; a && *a; a++) argv = CSLAddString(argv, *a);
    for (; b && *b; b++) argv = CSLAddString(argv, *b);
    GDALTranslateOptions *o = GDALTranslateOptionsNew(argv, NULL);
    CSLDestroy(argv);
    assert_non_null(o);
    GDALDatasetH out = GDALTranslate(dst, src, o, NULL);
    GDALTranslateOptionsFree(o);
    return out;
}

static GDALDatasetH make_buildings(const char *dst, const char *src_path, const char *const *extra) {
    GDALDatasetH src = GDALOpen(src_path, GA_ReadOnly);
    assert_non_null(src);
    const char *base[] = {"-q", "-of", "BUILDINGS", "-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "DEVICE=CPU", NULL};
    GDALDatasetH out = translate(dst, src, base, extra);
    GDALClose(src);
    return out;
}

static float *read_all(GDALDatasetH ds, int *w, int *h) {
    *w = GDALGetRasterXSize(ds);
    *h = GDALGetRasterYSize(ds);
    float *v = malloc(sizeof(float) * (size_t)*w * *h);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, *w, *h, v, *w, *h, GDT_Float32, 0, 0),
                     CE_None);
    return v;
}

static int count_diff(const float *a, const float *b, size_t n, double *maxd) {
    int d = 0;
    *maxd = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            d++;
            double e = fabs((double)a[i] - b[i]);
            if (e > *maxd) *maxd = e;
        }
    return d;
}

/* compares a dataset (any source) with the reference output, all pixels, bit for bit */
static void assert_same_as_ref(GDALDatasetH ds, const char *what) {
    assert_non_null(ds);
    GDALDatasetH ref = GDALOpen(g_ref, GA_ReadOnly);
    int w, h, w2, h2;
    float *a = read_all(ref, &w, &h), *b = read_all(ds, &w2, &h2);
    assert_int_equal(w, w2);
    assert_int_equal(h, h2);
    double md;
    int d = count_diff(a, b, (size_t)w * h, &md);
    fprintf(stderr, "# %s: %d of %d pixels differ from CreateCopy (max %g)\n", what, d, w * h, md);
    assert_int_equal(d, 0);
    free(a);
    free(b);
    GDALClose(ref);
}

static int setup(void **s) {
    (void)s;
    GDALAllRegister();
    assert_non_null(GDALGetDriverByName("BUILDINGS"));
    snprintf(g_dir, sizeof g_dir, "%s/disopt_plugin_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    mkdir(g_dir, 0755);
    snprintf(g_scene, sizeof g_scene, "%s/scene.tif", g_dir);
    snprintf(g_ref, sizeof g_ref, "%s/ref.tif", g_dir);
    make_scene(g_scene);
    GDALDatasetH out = make_buildings(g_ref, g_scene, SMALL);
    assert_non_null(out);
    GDALClose(out);
    return 0;
}

static int teardown(void **s) {
    (void)s;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- driver metadata */
static void test_driver_metadata(void **s) {
    (void)s;
    GDALDriverH d = GDALGetDriverByName("BUILDINGS");
    assert_string_equal(GDALGetDriverShortName(d), "BUILDINGS");
    assert_non_null(strstr(GDALGetDriverLongName(d), "DisOptNet"));
    assert_non_null(strstr(GDALGetDriverHelpTopic(d), "BUILDINGS.md"));
    const char *co = GDALGetDriverCreationOptionList(d), *oo = GDALGetMetadataItem(d, GDAL_DMD_OPENOPTIONLIST, NULL);
    const char *names[] = {"MODEL", "OUTPUT", "THRESHOLD", "BANDS", "DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE",
                           "NUM_THREADS", "ROTATE180", NULL};
    for (int i = 0; names[i]; i++) {
        char q[64];
        snprintf(q, sizeof q, "name=\"%s\"", names[i]);
        CPLXMLNode *x = CPLParseXMLString(co);
        char *ser = CPLSerializeXMLTree(x);
        assert_non_null(strstr(ser, q));
        CPLFree(ser);
        CPLDestroyXMLNode(x);
        snprintf(q, sizeof q, "name='%s'", names[i]);
        assert_non_null(strstr(oo, q));
    }
    assert_non_null(strstr(co, "COMPRESS")); /* GTiff's options pass through */
    assert_non_null(strstr(co, "name=\"IO_THREADS\""));
    /* `gdalinfo --format BUILDINGS` (which reads the driver's metadata as a whole) shows both lists */
    char cmd[600], path[400];
    snprintf(path, sizeof path, "%s/format.txt", g_dir);
    snprintf(cmd, sizeof cmd, "gdalinfo --format BUILDINGS > '%s' 2>&1", path);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *txt = calloc(1, 1 << 20);
    const size_t got = fread(txt, 1, (1 << 20) - 1, f);
    fclose(f);
    assert_true(got > 0);
    assert_non_null(strstr(txt, "<CreationOptionList>"));
    assert_non_null(strstr(txt, "<OpenOptionList>"));
    assert_non_null(strstr(txt, "name=\"IO_THREADS\""));
    assert_non_null(strstr(txt, "Help Topic:"));
    free(txt);
    /* the installed doc page exists in the repo */
    assert_true(file_exists(DISOPT_SOURCE_DIR "/plugin/doc/BUILDINGS.md"));
}

/* ---- CreateCopy: georeferencing, metadata, nodata, values == direct library inference */
static void test_createcopy_equals_library(void **s) {
    (void)s;
    GDALDatasetH ref = GDALOpen(g_ref, GA_ReadOnly), src = GDALOpen(g_scene, GA_ReadOnly);
    assert_non_null(ref);
    double g1[6], g2[6];
    assert_int_equal(GDALGetGeoTransform(src, g1), CE_None);
    assert_int_equal(GDALGetGeoTransform(ref, g2), CE_None);
    assert_memory_equal(g1, g2, sizeof g1);
    assert_true(OSRIsSame(GDALGetSpatialRef(src), GDALGetSpatialRef(ref)));
    GDALRasterBandH b = GDALGetRasterBand(ref, 1);
    int has;
    assert_true(GDALGetRasterNoDataValue(b, &has) == -1.0 && has);
    assert_string_equal(GDALGetMetadataItem(ref, "DISOPT_MODEL", NULL), "untrained-student-b3");
    assert_int_equal((int)strlen(GDALGetMetadataItem(ref, "DISOPT_MODEL_SHA256", NULL)), 64);
    assert_string_equal(GDALGetMetadataItem(ref, "DISOPT_TILE_SIZE", NULL), "128");
    assert_string_equal(GDALGetMetadataItem(ref, "DISOPT_VERSION", NULL), disopt_version());
    assert_non_null(strstr(GDALGetMetadataItem(ref, "DISOPT_MODEL_PROVENANCE", NULL), "NOT TRAINED"));
    assert_string_equal(GDALGetMetadataItem(ref, "COMPRESSION", "IMAGE_STRUCTURE"), "DEFLATE");
    int bx, by;
    GDALGetBlockSize(b, &bx, &by);
    assert_int_equal(bx, 64);

    /* direct library inference, window by window (TILE 128, OVERLAP 32, step 64, the canonical
     * grid from pixel 0), then the documented blend: linear ramps over the 64-pixel overlaps */
    disopt_engine *e;
    disopt_model *m;
    assert_int_equal(disopt_engine_create(NULL, &e), DISOPT_OK);
    assert_int_equal(disopt_model_load(e, DISOPT_MODEL_FILE, &m), DISOPT_OK);
    int w, h;
    float *out = read_all(ref, &w, &h);
    float *band[4];
    for (int c = 0; c < 4; c++) {
        band[c] = malloc(sizeof(float) * FW * FH);
        assert_int_equal(
            GDALRasterIO(GDALGetRasterBand(src, c + 1), GF_Read, 0, 0, FW, FH, band[c], FW, FH, GDT_Float32, 0, 0),
            CE_None);
    }
    enum { T = 128, O = 32, S = 64, NTX = (FW + S - 1) / S, NTY = (FH + S - 1) / S };
    float *x = malloc(sizeof(float) * 4 * T * T), *win = malloc(sizeof(float) * NTX * NTY * T * T);
    for (int ty = 0; ty < NTY; ty++)
        for (int tx = 0; tx < NTX; tx++) {
            for (int c = 0; c < 4; c++)
                for (int yy = 0; yy < T; yy++)
                    for (int xx = 0; xx < T; xx++) {
                        int sx = tx * S - O + xx, sy = ty * S - O + yy;
                        float v = 0;
                        if (sx >= 0 && sy >= 0 && sx < FW && sy < FH) {
                            int bad = 0; /* nodata in any band: 0 in every band */
                            for (int k = 0; k < 4; k++)
                                bad |= isnan(band[k][sy * FW + sx]) || band[k][sy * FW + sx] == -9999.0f;
                            v = bad ? 0.0f : band[c][sy * FW + sx];
                        }
                        x[(c * T + yy) * T + xx] = v;
                    }
            assert_int_equal(disopt_model_normalize(m, x, 1, T, T), DISOPT_OK);
            disopt_outputs o = {NULL, win + (size_t)(ty * NTX + tx) * T * T, NULL, NULL, NULL, 0};
            assert_int_equal(disopt_model_infer(m, x, 1, 4, T, T, &o), DISOPT_OK);
        }
    float ramp[T];
    for (int u = 0; u < T; u++) ramp[u] = u < 2 * O ? (u + 0.5f) / (2 * O) : u >= T - 2 * O ? (T - u - 0.5f) / (2 * O) : 1.0f;
    int checked = 0, nodata = 0;
    float lo = 1, hi = 0;
    for (int oy = 0; oy < FH; oy++)
        for (int ox = 0; ox < FW; ox++) {
            int invalid = 0;
            for (int c = 0; c < 4; c++) invalid |= isnan(band[c][oy * FW + ox]) || band[c][oy * FW + ox] == -9999.0f;
            float acc = 0, ws = 0;
            for (int ty = 0; ty < NTY; ty++)
                for (int tx = 0; tx < NTX; tx++) {
                    int u = ox - (tx * S - O), v = oy - (ty * S - O);
                    if (u < 0 || v < 0 || u >= T || v >= T) continue;
                    float wgt = ramp[v] * ramp[u];
                    acc += wgt * win[(size_t)(ty * NTX + tx) * T * T + v * T + u];
                    ws += wgt;
                }
            float expect = invalid ? -1.0f : acc / ws;
            if (memcmp(&expect, &out[oy * FW + ox], sizeof(float)))
                fprintf(stderr, "# pixel %d,%d: library %.9g, driver %.9g\n", ox, oy, expect, out[oy * FW + ox]);
            assert_memory_equal(&expect, &out[oy * FW + ox], sizeof(float));
            checked++;
            nodata += invalid;
            if (!invalid) {
                lo = fminf(lo, expect);
                hi = fmaxf(hi, expect);
            }
        }
    fprintf(stderr, "# CreateCopy == library inference + blend on %d pixels (%d nodata), probability %.4f..%.4f\n",
            checked, nodata, lo, hi);
    assert_int_equal(checked, FW * FH);
    assert_int_equal(nodata, 150 + 120);
    assert_true(hi - lo > 0.2f); /* the scene gives varied output: the comparisons are not vacuous */
    free(win);
    for (int c = 0; c < 4; c++) free(band[c]);
    free(x);
    free(out);
    disopt_model_destroy(m);
    disopt_engine_destroy(e);
    GDALClose(ref);
    GDALClose(src);
}

/* ---- the gdal_translate command itself, mask output with colour table */
static void test_gdal_translate_command_mask(void **s) {
    (void)s;
    char out[400], cmd[1400];
    snprintf(out, sizeof out, "%s/mask.tif", g_dir);
    snprintf(cmd, sizeof cmd,
             "gdal_translate -q -of BUILDINGS -co MODEL=%s -co TILE_SIZE=128 -co OVERLAP=32 -co OUTPUT=MASK "
             "-co THRESHOLD=0.4 -co NUM_THREADS=1 -co DEVICE=CPU %s %s",
             DISOPT_MODEL_FILE, g_scene, out);
    assert_int_equal(system(cmd), 0);
    GDALDatasetH m = GDALOpen(out, GA_ReadOnly), ref = GDALOpen(g_ref, GA_ReadOnly);
    assert_non_null(m);
    GDALRasterBandH b = GDALGetRasterBand(m, 1);
    assert_int_equal(GDALGetRasterDataType(b), GDT_Byte);
    assert_non_null(GDALGetRasterColorTable(b));
    int w, h, ones = 0;
    float *mv = read_all(m, &w, &h), *pv = read_all(ref, &w, &h);
    for (int i = 0; i < w * h; i++) {
        float e = pv[i] == -1.0f ? 255.0f : (pv[i] > 0.4f ? 1.0f : 0.0f);
        assert_true(mv[i] == e);
        ones += mv[i] == 1.0f;
    }
    assert_true(ones > 0 && ones < w * h - 270);
    free(mv);
    free(pv);
    GDALClose(m);
    GDALClose(ref);
}

/* ---- the result does not depend on how the work is cut: batch, threads, output blocks */
static void test_tiling_invariance(void **s) {
    (void)s;
    char out[400];
    const char *variants[][8] = {
        {"-co", "BATCH_SIZE=3", "-co", "NUM_THREADS=2", NULL},
        {"-co", "BATCH_SIZE=7", "-co", "BLOCKXSIZE=48", "-co", "BLOCKYSIZE=32", NULL},
        {"-co", "TILED=NO", "-co", "COMPRESS=NONE", "-co", "NUM_THREADS=1", NULL},
    };
    for (int i = 0; i < 3; i++) {
        snprintf(out, sizeof out, "%s/var%d.tif", g_dir, i);
        /* TILE_SIZE/OVERLAP as the reference, then the variant */
        const char *both[16];
        int n = 0;
        for (int k = 0; SMALL[k]; k++) both[n++] = SMALL[k];
        for (int k = 0; variants[i][k]; k++) both[n++] = variants[i][k];
        both[n] = NULL;
        GDALDatasetH ds = make_buildings(out, g_scene, both);
        char what[64];
        snprintf(what, sizeof what, "variant %d", i);
        assert_same_as_ref(ds, what);
        GDALClose(ds);
    }
}

/* ---- the window geometry (TILE_SIZE/OVERLAP) is part of the result: measured, see the doc */
static void test_window_geometry_effect(void **s) {
    (void)s;
    char out[400];
    snprintf(out, sizeof out, "%s/geom.tif", g_dir);
    const char *g[] = {"-co", "TILE_SIZE=160", "-co", "OVERLAP=48", NULL};
    GDALDatasetH ds = make_buildings(out, g_scene, g), ref = GDALOpen(g_ref, GA_ReadOnly);
    int w, h;
    float *a = read_all(ref, &w, &h), *b = read_all(ds, &w, &h);
    double sum = 0, mx = 0;
    int n = 0, flips = 0;
    for (int i = 0; i < w * h; i++) {
        if (a[i] < 0) {
            assert_true(b[i] == -1.0f); /* nodata does not depend on the windows */
            continue;
        }
        double d = fabs((double)a[i] - b[i]);
        sum += d;
        mx = d > mx ? d : mx;
        flips += (a[i] > 0.5f) != (b[i] > 0.5f);
        n++;
    }
    fprintf(stderr, "# TILE 128/OVERLAP 32 vs TILE 160/OVERLAP 48: mean |dp| %.3g, max %.3g, mask flips %d of %d\n",
            sum / n, mx, flips, n);
    free(a);
    free(b);
    GDALClose(ds);
    GDALClose(ref);
}

/* ---- the lazy dataset: any block size, cache size, zoom, gdallocationinfo == CreateCopy */
static GDALDatasetH open_lazy(const char *src, const char *const *extra_oo) {
    char name[400];
    snprintf(name, sizeof name, "BUILDINGS:%s", src);
    char **oo = NULL;
    oo = CSLAddString(oo, "MODEL=" DISOPT_MODEL_FILE);
    oo = CSLAddString(oo, "TILE_SIZE=128");
    oo = CSLAddString(oo, "OVERLAP=32");
    oo = CSLAddString(oo, "DEVICE=CPU");
    for (; extra_oo && *extra_oo; extra_oo++) oo = CSLAddString(oo, *extra_oo);
    GDALDatasetH ds = GDALOpenEx(name, GDAL_OF_RASTER | GDAL_OF_VERBOSE_ERROR, NULL, (const char *const *)oo, NULL);
    CSLDestroy(oo);
    return ds;
}

static void test_lazy_equals_createcopy(void **s) {
    (void)s;
    const char *bs[] = {NULL, "BLOCK_SIZE=77", "BLOCK_SIZE=128", "BLOCK_SIZE=1000"};
    for (int i = 0; i < 4; i++) {
        const char *oo[] = {bs[i], NULL};
        GDALDatasetH ds = open_lazy(g_scene, bs[i] ? oo : NULL);
        assert_non_null(ds);
        assert_string_equal(GDALGetMetadataItem(ds, "DISOPT_MODEL", NULL), "untrained-student-b3");
        double g1[6];
        assert_int_equal(GDALGetGeoTransform(ds, g1), CE_None);
        assert_true(g1[0] == 592000.0 && g1[1] == 0.5);
        assert_same_as_ref(ds, bs[i] ? bs[i] : "lazy, default blocks");
        /* odd windows, read in an odd order, bit for bit */
        GDALDatasetH ref = GDALOpen(g_ref, GA_ReadOnly);
        const int win[][4] = {{150, 130, 50, 38}, {0, 0, 1, 1}, {63, 63, 3, 3}, {13, 90, 111, 41}};
        for (int k = 0; k < 4; k++) {
            float a[111 * 41], b[111 * 41];
            const int *r = win[k];
            assert_int_equal(GDALRasterIO(GDALGetRasterBand(ref, 1), GF_Read, r[0], r[1], r[2], r[3], a, r[2], r[3],
                                          GDT_Float32, 0, 0),
                             CE_None);
            assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, r[0], r[1], r[2], r[3], b, r[2], r[3],
                                          GDT_Float32, 0, 0),
                             CE_None);
            assert_memory_equal(a, b, sizeof(float) * r[2] * r[3]);
        }
        /* zoomed out (like -outsize 50%): GDAL's nearest-neighbour over the full-resolution blocks */
        float za[100 * 84], zb[100 * 84];
        assert_int_equal(
            GDALRasterIO(GDALGetRasterBand(ref, 1), GF_Read, 0, 0, FW, FH, za, 100, 84, GDT_Float32, 0, 0), CE_None);
        assert_int_equal(
            GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, FW, FH, zb, 100, 84, GDT_Float32, 0, 0), CE_None);
        assert_memory_equal(za, zb, sizeof za);
        GDALClose(ref);
        GDALClose(ds);
    }
}

static void test_lazy_tiny_cache_and_tools(void **s) {
    (void)s;
    char cmd[1600], a[400], b[400];
    /* GDAL_CACHEMAX tiny, -outsize 50%, through the gdal_translate command */
    snprintf(a, sizeof a, "%s/half_ref.tif", g_dir);
    snprintf(b, sizeof b, "%s/half_lazy.tif", g_dir);
    snprintf(cmd, sizeof cmd, "gdal_translate -q -outsize 50%% 50%% %s %s", g_ref, a);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "gdal_translate -q --config GDAL_CACHEMAX 1 -outsize 50%% 50%% -oo MODEL=%s -oo TILE_SIZE=128 "
             "-oo OVERLAP=32 -oo BLOCK_SIZE=77 -oo CACHE_TILES=1 -oo DEVICE=CPU BUILDINGS:%s %s",
             DISOPT_MODEL_FILE, g_scene, b);
    assert_int_equal(system(cmd), 0);
    GDALDatasetH da = GDALOpen(a, GA_ReadOnly), db = GDALOpen(b, GA_ReadOnly);
    int w, h;
    float *va = read_all(da, &w, &h), *vb = read_all(db, &w, &h);
    assert_int_equal(w, FW / 2);
    assert_memory_equal(va, vb, sizeof(float) * w * h);
    free(va);
    free(vb);
    GDALClose(da);
    GDALClose(db);
    /* gdallocationinfo on both: the same values */
    char oa[400], ob[400];
    snprintf(oa, sizeof oa, "%s/loc_ref.txt", g_dir);
    snprintf(ob, sizeof ob, "%s/loc_lazy.txt", g_dir);
    const char *pts = "0 0\n199 167\n77 64\n45 25\n123 45\n";
    snprintf(cmd, sizeof cmd, "printf '%s' | gdallocationinfo -valonly %s > %s", pts, g_ref, oa);
    assert_int_equal(system(cmd), 0);
    /* gdallocationinfo has no -oo in GDAL 3.6: the options come from a sidecar */
    char side[400];
    snprintf(side, sizeof side, "%s/loc.buildings.json", g_dir);
    FILE *f = fopen(side, "w");
    assert_non_null(f);
    fprintf(f, "{\"type\": \"disopt.buildings\", \"source\": \"%s\", \"options\": {\"MODEL\": \"%s\", "
               "\"TILE_SIZE\": \"128\", \"OVERLAP\": \"32\", \"BLOCK_SIZE\": \"77\", \"DEVICE\": \"CPU\"}}\n",
            g_scene, DISOPT_MODEL_FILE);
    fclose(f);
    snprintf(cmd, sizeof cmd, "printf '%s' | gdallocationinfo -valonly --config GDAL_CACHEMAX 1 %s > %s", pts, side,
             ob);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "cmp %s %s && test $(wc -l < %s) = 5", oa, ob, oa);
    assert_int_equal(system(cmd), 0);
}

/* ---- VRTs: absolute BUILDINGS: source with open options; relative paths through a sidecar */
static void test_vrt_absolute_and_sidecar(void **s) {
    (void)s;
    char cmd[4000], vrt[400];
    snprintf(vrt, sizeof vrt, "%s/abs.vrt", g_dir);
    snprintf(cmd, sizeof cmd,
             "gdal_translate -q -of VRT -oo MODEL=%s -oo TILE_SIZE=128 -oo OVERLAP=32 -oo DEVICE=CPU BUILDINGS:%s %s",
             DISOPT_MODEL_FILE, g_scene, vrt);
    assert_int_equal(system(cmd), 0);
    GDALDatasetH ds = GDALOpen(vrt, GA_ReadOnly);
    assert_same_as_ref(ds, "VRT over BUILDINGS:/abs");
    GDALClose(ds);

    /* a self-contained folder: scene + model + sidecar + VRT, all relative; then moved */
    char d1[300], d2[300];
    snprintf(d1, sizeof d1, "%s/proj", g_dir);
    snprintf(d2, sizeof d2, "%s/moved", g_dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/data %s/models && cp %s %s/data/scene.tif && ln -s %s %s/models/m.safetensors",
             d1, d1, g_scene, d1, DISOPT_MODEL_FILE, d1);
    assert_int_equal(system(cmd), 0);
    char side[400];
    snprintf(side, sizeof side, "%s/scene.buildings.json", d1);
    FILE *f = fopen(side, "w");
    assert_non_null(f);
    fprintf(f, "{\"type\": \"disopt.buildings\", \"source\": \"data/scene.tif\",\n"
               " \"options\": {\"MODEL\": \"models/m.safetensors\", \"TILE_SIZE\": \"128\", \"OVERLAP\": \"32\", "
               "\"DEVICE\": \"CPU\"}}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd %s && gdal_translate -q -of VRT scene.buildings.json buildings.vrt && "
                              "grep -q 'relativeToVRT=\"1\">scene.buildings.json' buildings.vrt && mv %s %s",
             d1, d1, d2);
    assert_int_equal(system(cmd), 0);
    snprintf(vrt, sizeof vrt, "%s/buildings.vrt", d2);
    ds = GDALOpen(vrt, GA_ReadOnly);
    assert_same_as_ref(ds, "relative VRT -> sidecar, folder moved");
    GDALClose(ds);
}

/* ---- real Capella SAR: the dB product (NaN nodata) and the complex SLC chips */
static void test_real_capella(void **s) {
    (void)s;
    if (!file_exists(SAR_REAL)) {
        skip();
    }
    char out[400];
    snprintf(out, sizeof out, "%s/capella.tif", g_dir);
    GDALDatasetH ds = make_buildings(out, SAR_REAL, NULL);
    assert_non_null(ds);
    GDALDatasetH src = GDALOpen(SAR_REAL, GA_ReadOnly);
    int w, h;
    float *p = read_all(ds, &w, &h), *hh = read_all(src, &w, &h);
    int nd = 0;
    for (int i = 0; i < w * h; i++) {
        assert_true(isnan(hh[i]) ? p[i] == -1.0f : (p[i] >= 0.0f && p[i] <= 1.0f));
        nd += isnan(hh[i]);
    }
    assert_true(nd > 0);
    free(p);
    free(hh);
    GDALClose(src);
    GDALClose(ds);

    /* SLC: 4 CFloat32 chips stacked in a VRT (same rotated grid) */
    char vrt[400];
    snprintf(vrt, sizeof vrt, "%s/slc.vrt", g_dir);
    FILE *f = fopen(vrt, "w");
    fprintf(f, "<VRTDataset rasterXSize=\"200\" rasterYSize=\"200\">\n");
    const char *pol[] = {"hh", "hv", "vh", "vv"};
    for (int b = 0; b < 4; b++)
        fprintf(f,
                " <VRTRasterBand dataType=\"CFloat32\" band=\"%d\"><SimpleSource><SourceFilename>%s/sar_%s.tif"
                "</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>\n",
                b + 1, SLC_DIR, pol[b]);
    fprintf(f, "</VRTDataset>\n");
    fclose(f);
    snprintf(out, sizeof out, "%s/slc_out.tif", g_dir);
    CPLErrorReset();
    CPLPushErrorHandler(CPLQuietErrorHandler);
    ds = make_buildings(out, vrt, NULL);
    CPLPopErrorHandler();
    assert_null(ds);
    fprintf(stderr, "# complex input without COMPLEX=: %s\n", CPLGetLastErrorMsg());
    assert_non_null(strstr(CPLGetLastErrorMsg(), "COMPLEX=DB"));
    assert_false(file_exists(out));
    const char *c[] = {"-co", "COMPLEX=DB", NULL};
    ds = make_buildings(out, vrt, c);
    assert_non_null(ds);
    p = read_all(ds, &w, &h);
    for (int i = 0; i < w * h; i++) assert_true(p[i] == -1.0f || (p[i] >= 0.0f && p[i] <= 1.0f));
    free(p);
    GDALClose(ds);
}

/* ---- bad input: a CPLError with a clear message, no dataset, no file */
static void expect_fail(const char *src, const char *const *extra, const char *msg_part) {
    char out[400];
    snprintf(out, sizeof out, "%s/bad.tif", g_dir);
    CPLErrorReset();
    CPLPushErrorHandler(CPLQuietErrorHandler);
    GDALDatasetH in = GDALOpen(src, GA_ReadOnly);
    GDALDatasetH ds = NULL;
    if (in) {
        const char *base[] = {"-q", "-of", "BUILDINGS", NULL};
        ds = translate(out, in, base, extra);
        GDALClose(in);
    }
    CPLPopErrorHandler();
    fprintf(stderr, "# %s -> %s\n", msg_part, CPLGetLastErrorMsg());
    assert_null(ds);
    assert_int_equal(CPLGetLastErrorType(), CE_Failure);
    assert_non_null(strstr(CPLGetLastErrorMsg(), msg_part));
    assert_false(file_exists(out));
}

static void test_bad_inputs(void **s) {
    (void)s;
    char one[400], broken[400], byte[400], huge[400];
    snprintf(one, sizeof one, "%s/one_band.tif", g_dir);
    const char *b1[] = {"-q", "-b", "1", NULL};
    GDALDatasetH src = GDALOpen(g_scene, GA_ReadOnly);
    GDALClose(translate(one, src, b1, NULL));
    GDALClose(src);
    const char *model[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, NULL};
    expect_fail(one, model, "has 1 band but the model");
    snprintf(broken, sizeof broken, "%s/broken.safetensors", g_dir);
    FILE *f = fopen(broken, "w");
    fprintf(f, "not a model at all, just some bytes");
    fclose(f);
    char mb[450];
    snprintf(mb, sizeof mb, "MODEL=%s", broken);
    const char *bm[] = {"-co", mb, NULL};
    expect_fail(g_scene, bm, "broken.safetensors");
    const char *mm[] = {"-co", "MODEL=/nonexistent/model.safetensors", NULL};
    expect_fail(g_scene, mm, "does not exist");
    const char *bb[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "BANDS=1,2,3,9", NULL};
    expect_fail(g_scene, bb, "band 9 does not exist");
    const char *b3[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "BANDS=1,2,3", NULL};
    expect_fail(g_scene, b3, "BANDS lists 3 bands");
    const char *neg[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "OVERLAP=-8", NULL};
    expect_fail(g_scene, neg, "OVERLAP=-8");
    const char *t0[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "TILE_SIZE=0", NULL};
    expect_fail(g_scene, t0, "TILE_SIZE=0");
    const char *th2[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "TILE_SIZE=65536", NULL};
    expect_fail(g_scene, th2, "TILE_SIZE=65536");
    const char *ts[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "TILE_SIZE=100", NULL};
    expect_fail(g_scene, ts, "multiple of 32");
    const char *ov[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "TILE_SIZE=64", "-co", "OVERLAP=32", NULL};
    expect_fail(g_scene, ov, "less than half");
    const char *cu[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "DEVICE=CUDA:57", NULL};
    expect_fail(g_scene, cu, "DEVICE=CUDA");
    const char *cux[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "DEVICE=GPU", NULL};
    expect_fail(g_scene, cux, "DEVICE=GPU");
    const char *th[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "THRESHOLD=abc", NULL};
    expect_fail(g_scene, th, "THRESHOLD=abc");
    /* a zero-size request: gdal_translate -srcwin with an empty window */
    const char *zero[] = {"-co", "MODEL=" DISOPT_MODEL_FILE, "-srcwin", "0", "0", "0", "10", NULL};
    CPLPushErrorHandler(CPLQuietErrorHandler);
    expect_fail(g_scene, zero, "");
    CPLPopErrorHandler();
    /* a huge raster (1e6 x 1e6 VRT): the lazy dataset opens and reads a window; CreateCopy is cancellable */
    snprintf(huge, sizeof huge, "%s/huge.vrt", g_dir);
    f = fopen(huge, "w");
    fprintf(f, "<VRTDataset rasterXSize=\"1000000\" rasterYSize=\"1000000\">\n");
    for (int b = 1; b <= 4; b++)
        fprintf(f, " <VRTRasterBand dataType=\"Float32\" band=\"%d\"><SimpleSource><SourceFilename>%s</SourceFilename>"
                   "<SourceBand>%d</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"%d\" ySize=\"%d\"/>"
                   "<DstRect xOff=\"0\" yOff=\"0\" xSize=\"%d\" ySize=\"%d\"/></SimpleSource></VRTRasterBand>\n",
                b, g_scene, b, FW, FH, FW, FH);
    fprintf(f, "</VRTDataset>\n");
    fclose(f);
    GDALDatasetH lz = open_lazy(huge, NULL);
    assert_non_null(lz);
    assert_int_equal(GDALGetRasterXSize(lz), 1000000);
    float v[64];
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(lz, 1), GF_Read, 500000, 500000, 8, 8, v, 8, 8, GDT_Float32, 0, 0),
                     CE_None);
    GDALClose(lz);
    /* a source with no raster band (a vector file) */
    snprintf(byte, sizeof byte, "%s/vector.geojson", g_dir);
    f = fopen(byte, "w");
    fprintf(f, "{\"type\":\"FeatureCollection\",\"features\":[]}");
    fclose(f);
    char name[450];
    snprintf(name, sizeof name, "BUILDINGS:%s", byte);
    CPLPushErrorHandler(CPLQuietErrorHandler);
    assert_null(GDALOpen(name, GA_ReadOnly));
    assert_null(GDALOpen("BUILDINGS:/nonexistent/sar.tif", GA_ReadOnly));
    CPLPopErrorHandler();
    assert_non_null(strstr(CPLGetLastErrorMsg(), "nonexistent"));
}

/* DEVICE=AUTO runs on the GPU when there is one, else on the CPU; DEVICE=CUDA fails clearly
 * without one. Either way the result is the CPU's (bit for bit on the CPU, to fp32 rounding on
 * the GPU). */
static void test_device_auto_and_cuda(void **s) {
    (void)s;
    char out[400];
    snprintf(out, sizeof out, "%s/auto.tif", g_dir);
    GDALDatasetH src = GDALOpen(g_scene, GA_ReadOnly);
    const char *a[] = {"-q", "-of", "BUILDINGS", "-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "TILE_SIZE=128", "-co",
                       "OVERLAP=32", "-co", "DEVICE=AUTO", NULL};
    GDALDatasetH ds = translate(out, src, a, NULL);
    assert_non_null(ds);
    const char *dev = GDALGetMetadataItem(ds, "DISOPT_DEVICE", NULL);
    GDALDatasetH ref = GDALOpen(g_ref, GA_ReadOnly);
    int w, h;
    float *x = read_all(ref, &w, &h), *y = read_all(ds, &w, &h);
    double md = 0;
    for (int i = 0; i < w * h; i++) md = fmax(md, fabs((double)x[i] - y[i]));
    fprintf(stderr, "# DEVICE=AUTO ran on %s: max |p - p_cpu| = %.3g\n", dev, md);
    if (strcmp(dev, "cpu") == 0) {
        assert_memory_equal(x, y, sizeof(float) * w * h);
        CPLPushErrorHandler(CPLQuietErrorHandler);
        const char *c[] = {"-q", "-of", "BUILDINGS", "-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "DEVICE=CUDA", NULL};
        GDALDatasetH dc = translate(out, src, c, NULL);
        CPLPopErrorHandler();
        assert_null(dc);
        assert_non_null(strstr(CPLGetLastErrorMsg(), "DEVICE=CUDA"));
        const char *c2[] = {"-q", "-of", "BUILDINGS", "-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "DEVICE=CUDA:ALL", NULL};
        CPLPushErrorHandler(CPLQuietErrorHandler);
        dc = translate(out, src, c2, NULL);
        CPLPopErrorHandler();
        assert_null(dc);
        assert_non_null(strstr(CPLGetLastErrorMsg(), "DEVICE=CUDA:ALL"));
    } else { /* on a GPU machine: CUDA:ALL (however many GPUs) gives CUDA's result */
        assert_true(md < 1e-4);
        char out2[400];
        snprintf(out2, sizeof out2, "%s/all.tif", g_dir);
        const char *c2[] = {"-q", "-of", "BUILDINGS", "-co", "MODEL=" DISOPT_MODEL_FILE, "-co", "TILE_SIZE=128", "-co",
                            "OVERLAP=32", "-co", "DEVICE=CUDA:ALL", "-co", "BATCH_SIZE=4", NULL};
        GDALDatasetH da = translate(out2, src, c2, NULL);
        assert_non_null(da);
        float *z = read_all(da, &w, &h);
        double mz = 0;
        for (int i = 0; i < w * h; i++) mz = fmax(mz, fabs((double)z[i] - y[i]));
        fprintf(stderr, "# DEVICE=CUDA:ALL ran on %s: max |p - p_auto| = %.3g\n", GDALGetMetadataItem(da, "DISOPT_DEVICE", NULL), mz);
        assert_true(mz < 1e-5);
        free(z);
        GDALClose(da);
    }
    free(x);
    free(y);
    GDALClose(ds);
    GDALClose(ref);
    GDALClose(src);
}

typedef struct grab {
    float *p;
} grab;
static int grab_sink(void *user, int x, int y, int w, int h, const float *prob) {
    grab *g = user;
    for (int r = 0; r < h; r++) memcpy(g->p + (size_t)(y + r) * FW + x, prob + (size_t)r * w, sizeof(float) * w);
    return 0;
}

/* CUDA:ALL's mechanism, on CPU engines: a batch split over several models (threads) gives the very
 * result of one model, and a different network is refused; DEVICE=CUDA:ALL without a GPU fails
 * clearly */
static void test_multi_model_split(void **s) {
    (void)s;
    GDALDatasetH src = GDALOpen(g_scene, GA_ReadOnly);
    disopt_engine *e[3];
    disopt_model *m[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(disopt_engine_create(NULL, &e[i]), DISOPT_OK);
        assert_int_equal(disopt_model_load(e[i], DISOPT_MODEL_FILE, &m[i]), DISOPT_OK);
    }
    disopt_tiler_options o;
    disopt_tiler_options_init(&o);
    o.tile_size = 128;
    o.overlap = 32;
    o.batch_size = 5; /* 12 windows: shares of 2 and 1 */
    float *ref = malloc(sizeof(float) * FW * FH), *got = malloc(sizeof(float) * FW * FH);
    for (int k = 1; k <= 3; k++) {
        disopt_tiler *t = NULL;
        assert_int_equal(disopt_tiler_create(m[0], src, &o, &t), DISOPT_OK);
        for (int i = 1; i < k; i++) assert_int_equal(disopt_tiler_add_model(t, m[i]), DISOPT_OK);
        grab g = {k == 1 ? ref : got};
        for (size_t i = 0; i < (size_t)FW * FH; i++) g.p[i] = -7.0f;
        assert_int_equal(disopt_tiler_run(t, grab_sink, &g, NULL, NULL), DISOPT_OK);
        if (k > 1) assert_memory_equal(ref, got, sizeof(float) * FW * FH);
        float lazy[50 * 40];
        assert_int_equal(disopt_tiler_read(t, 70, 60, 50, 40, lazy), DISOPT_OK); /* a lazy read, split too */
        for (int y = 0; y < 40; y++) assert_memory_equal(lazy + y * 50, ref + (size_t)(60 + y) * FW + 70, 50 * sizeof(float));
        assert_int_equal(disopt_tiler_add_model(t, NULL), DISOPT_ERR_INVALID_ARGUMENT);
        disopt_tiler_destroy(t);
    }
    for (int i = 0; i < 3; i++) {
        disopt_model_destroy(m[i]);
        disopt_engine_destroy(e[i]);
    }
    free(ref);
    free(got);
    GDALClose(src);
}

static int cancel_after(double done, const char *msg, void *arg) {
    (void)msg;
    int *calls = arg;
    return ++*calls < 3 && done < 1.0;
}

static void test_cancel_leaves_nothing(void **s) {
    (void)s;
    char out[400];
    snprintf(out, sizeof out, "%s/cancelled.tif", g_dir);
    GDALDatasetH src = GDALOpen(g_scene, GA_ReadOnly);
    char **co = NULL;
    co = CSLAddString(co, "MODEL=" DISOPT_MODEL_FILE);
    co = CSLAddString(co, "TILE_SIZE=128");
    co = CSLAddString(co, "OVERLAP=32");
    int calls = 0;
    CPLPushErrorHandler(CPLQuietErrorHandler);
    GDALDatasetH ds = GDALCreateCopy(GDALGetDriverByName("BUILDINGS"), out, src, FALSE, co, cancel_after, &calls);
    CPLPopErrorHandler();
    assert_null(ds);
    assert_int_equal(calls, 3);
    assert_int_equal(CPLGetLastErrorNo(), CPLE_UserInterrupt);
    assert_false(file_exists(out));
    /* progress reaches 1 on a full run */
    CSLDestroy(co);
    GDALClose(src);
}

/* unknown/malformed options warn the GDAL way (validation against the XML lists) */
static void test_option_warnings(void **s) {
    (void)s;
    char out[400];
    snprintf(out, sizeof out, "%s/warn.tif", g_dir);
    CPLErrorReset();
    CPLPushErrorHandler(CPLQuietErrorHandler);
    const char *unk[] = {"-co", "TILE_SIZE=128", "-co", "OVERLAP=32", "-co", "NOT_AN_OPTION=1", NULL};
    GDALDatasetH ds = make_buildings(out, g_scene, unk);
    CPLPopErrorHandler();
    assert_non_null(ds);
    assert_int_equal(CPLGetLastErrorType(), CE_Warning);
    assert_non_null(strstr(CPLGetLastErrorMsg(), "NOT_AN_OPTION"));
    GDALClose(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_metadata),
        cmocka_unit_test(test_createcopy_equals_library),
        cmocka_unit_test(test_gdal_translate_command_mask),
        cmocka_unit_test(test_tiling_invariance),
        cmocka_unit_test(test_window_geometry_effect),
        cmocka_unit_test(test_lazy_equals_createcopy),
        cmocka_unit_test(test_lazy_tiny_cache_and_tools),
        cmocka_unit_test(test_vrt_absolute_and_sidecar),
        cmocka_unit_test(test_real_capella),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_cancel_leaves_nothing),
        cmocka_unit_test(test_device_auto_and_cuda),
        cmocka_unit_test(test_multi_model_split),
        cmocka_unit_test(test_option_warnings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
