/* test_eval.c - gdal_disopt_eval's metrics (include/disopt_eval.h) on hand-made scenes with known
 * answers, and the tool end to end (exit codes, JSON parsed back, CSV, pair lists).
 *
 * Every scene is a 200 x 200 grid in EPSG:32631 at 0.5 m (origin 600000 E, 5750000 N, north up), so
 * one pixel is 0.25 m^2 and 80 px = 20 m^2. Buildings are rectangles given in pixel edges
 * [x0, x1) x [y0, y1); in GeoJSON their corners are the pixel corners, so the pixel-centre rule
 * burns exactly the pixels of the rectangle, and polygon areas/intersections are exact in binary.
 * Expected numbers are worked out by hand in the comments. */
#include "test_util.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <gdal_alg.h>
#include <json-c/json.h>
#include <math.h>
#include <ogr_srs_api.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "disopt_eval.h"

#ifndef DISOPT_SHARED
#define DISOPT_SHARED "../shared"
#endif
#define SAR_REAL DISOPT_SHARED "/realdata/rotterdam_capella/sar_masked.tif"

#ifndef DISOPT_EVAL_TOOL
#define DISOPT_EVAL_TOOL "gdal_disopt_eval"
#endif

enum { W = 200, H = 200, NPX = W * H };
static const double GT[6] = {600000.0, 0.5, 0.0, 5750000.0, 0.0, -0.5};
static char g_dir[256];

typedef struct {
    int x0, y0, x1, y1;
} rect;
typedef struct {
    rect outer;
    int has_hole;
    rect hole;
} bld;

static const char *P(const char *name) { /* rotating buffers: a few paths alive at once */
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void fill(unsigned char *m, rect r, unsigned char v) {
    for (int y = r.y0; y < r.y1; y++)
        for (int x = r.x0; x < r.x1; x++) m[y * W + x] = v;
}

static void set_georef(GDALDatasetH ds, const double *gt, int epsg) {
    if (gt) {
        double g[6];
        memcpy(g, gt, sizeof g);
        assert_int_equal(GDALSetGeoTransform(ds, g), CE_None);
    }
    if (epsg) {
        OGRSpatialReferenceH srs = OSRNewSpatialReference(NULL);
        OSRImportFromEPSG(srs, epsg);
        GDALSetSpatialRef(ds, srs);
        OSRDestroySpatialReference(srs);
    }
}

/* Byte mask GeoTIFF; nodata < 0: none */
static const char *write_mask_ex(const char *name, const unsigned char *m, int w, int h, const double *gt, int epsg,
                                 int nodata) {
    const char *path = P(name);
    GDALDatasetH ds = GDALCreate(GDALGetDriverByName("GTiff"), path, w, h, 1, GDT_Byte, NULL);
    assert_non_null(ds);
    set_georef(ds, gt, epsg);
    if (nodata >= 0) GDALSetRasterNoDataValue(GDALGetRasterBand(ds, 1), nodata);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Write, 0, 0, w, h, (void *)m, w, h, GDT_Byte, 0, 0),
                     CE_None);
    GDALClose(ds);
    return path;
}

static const char *write_mask(const char *name, const unsigned char *m) {
    return write_mask_ex(name, m, W, H, GT, 32631, -1);
}

static const char *write_float(const char *name, const float *v, double nodata) {
    const char *path = P(name);
    GDALDatasetH ds = GDALCreate(GDALGetDriverByName("GTiff"), path, W, H, 1, GDT_Float32, NULL);
    assert_non_null(ds);
    set_georef(ds, GT, 32631);
    GDALSetRasterNoDataValue(GDALGetRasterBand(ds, 1), nodata);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Write, 0, 0, W, H, (void *)v, W, H, GDT_Float32, 0, 0),
                     CE_None);
    GDALClose(ds);
    return path;
}

static void ring_utm(FILE *f, rect r) {
    double X0 = GT[0] + r.x0 * GT[1], X1 = GT[0] + r.x1 * GT[1];
    double Y0 = GT[3] + r.y0 * GT[5], Y1 = GT[3] + r.y1 * GT[5];
    fprintf(f, "[[%.3f,%.3f],[%.3f,%.3f],[%.3f,%.3f],[%.3f,%.3f],[%.3f,%.3f]]", X0, Y0, X0, Y1, X1, Y1, X1, Y0, X0, Y0);
}

static void ring_crs84(FILE *f, rect r, OGRCoordinateTransformationH ct) {
    double xs[5] = {r.x0, r.x0, r.x1, r.x1, r.x0}, ys[5] = {r.y0, r.y1, r.y1, r.y0, r.y0};
    fputc('[', f);
    for (int k = 0; k < 5; k++) {
        double X = GT[0] + xs[k] * GT[1], Y = GT[3] + ys[k] * GT[5];
        assert_true(OCTTransform(ct, 1, &X, &Y, NULL));
        fprintf(f, "%s[%.13f,%.13f]", k ? "," : "", X, Y);
    }
    fputc(']', f);
}

/* GeoJSON in EPSG:32631 (old-style "crs" member) or, crs84 != 0, in RFC 7946 lon/lat */
static const char *write_geojson(const char *name, const bld *b, int n, int crs84) {
    const char *path = P(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    OGRCoordinateTransformationH ct = NULL;
    OGRSpatialReferenceH s1 = NULL, s2 = NULL;
    if (crs84) {
        s1 = OSRNewSpatialReference(NULL);
        s2 = OSRNewSpatialReference(NULL);
        OSRImportFromEPSG(s1, 32631);
        OSRSetWellKnownGeogCS(s2, "WGS84");
        OSRSetAxisMappingStrategy(s1, OAMS_TRADITIONAL_GIS_ORDER);
        OSRSetAxisMappingStrategy(s2, OAMS_TRADITIONAL_GIS_ORDER);
        ct = OCTNewCoordinateTransformation(s1, s2);
        assert_non_null(ct);
    }
    fprintf(f, "{\"type\":\"FeatureCollection\",%s\"features\":[",
            crs84 ? "" : "\"crs\":{\"type\":\"name\",\"properties\":{\"name\":\"urn:ogc:def:crs:EPSG::32631\"}},");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s\n{\"type\":\"Feature\",\"properties\":{\"id\":%d},\"geometry\":{\"type\":\"Polygon\","
                   "\"coordinates\":[",
                i ? "," : "", i);
        if (crs84) ring_crs84(f, b[i].outer, ct);
        else ring_utm(f, b[i].outer);
        if (b[i].has_hole) {
            fputc(',', f);
            if (crs84) ring_crs84(f, b[i].hole, ct);
            else ring_utm(f, b[i].hole);
        }
        fprintf(f, "]}}");
    }
    fprintf(f, "\n]}\n");
    fclose(f);
    if (ct) {
        OCTDestroyCoordinateTransformation(ct);
        OSRDestroySpatialReference(s1);
        OSRDestroySpatialReference(s2);
    }
    return path;
}

/* counts the warnings and errors GDAL reports while scoring: a clean run reports none */
static void count_cpl(CPLErr cls, CPLErrorNum num, const char *msg) {
    (void)num;
    if (cls >= CE_Warning) {
        int *n = CPLGetErrorHandlerUserData();
        (*n)++;
        fprintf(stderr, "# GDAL said: %s\n", msg);
    }
}

static disopt_eval_counts eval_ok(const char *pred, const char *truth, const disopt_eval_options *o) {
    disopt_eval_options d;
    disopt_eval_options_init(&d);
    disopt_eval_counts c;
    int reports = 0;
    CPLPushErrorHandlerEx(count_cpl, &reports);
    disopt_status s = disopt_eval_pair(pred, truth, o ? o : &d, &c);
    CPLPopErrorHandler();
    assert_int_equal(reports, 0);
    if (s != DISOPT_OK) fprintf(stderr, "# eval failed: %s\n", disopt_last_error());
    assert_int_equal(s, DISOPT_OK);
    assert_int_equal(c.pairs, 1);
    /* every valid pixel is counted once */
    assert_int_equal(c.tp + c.fp + c.fn + c.tn + c.ignored, NPX);
    return c;
}

static void expect_pixels(const disopt_eval_counts *c, int64_t tp, int64_t fp, int64_t fn, int64_t ignored) {
    assert_int_equal(c->tp, tp);
    assert_int_equal(c->fp, fp);
    assert_int_equal(c->fn, fn);
    assert_int_equal(c->ignored, ignored);
    assert_int_equal(c->tn, NPX - tp - fp - fn - ignored);
}

static void expect_bld(const disopt_eval_counts *c, int64_t tp, int64_t fp, int64_t fn) {
    assert_int_equal(c->bld_tp, tp);
    assert_int_equal(c->bld_fp, fp);
    assert_int_equal(c->bld_fn, fn);
}

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-12)

/* ---------------------------------------------------------------------------------------- */

/* Perfect match: one 20 x 10 px building (200 px, 50 m^2); the same pixels predicted.
 * Pixels TP 200, FP 0, FN 0; buildings TP 1, FP 0, FN 0; every ratio 1. The same truth written in
 * CRS84 lon/lat (RFC 7946) is reprojected to UTM and gives the very same numbers. */
static void test_perfect_match_utm_and_crs84(void **st) {
    (void)st;
    rect r = {10, 10, 30, 20};
    unsigned char *m = calloc(NPX, 1);
    fill(m, r, 1);
    const char *pred = write_mask("perfect_pred.tif", m);
    bld b = {r, 0, {0, 0, 0, 0}};
    for (int crs84 = 0; crs84 < 2; crs84++) {
        const char *truth = write_geojson(crs84 ? "perfect_crs84.geojson" : "perfect_utm.geojson", &b, 1, crs84);
        disopt_eval_counts c = eval_ok(pred, truth, NULL);
        expect_pixels(&c, 200, 0, 0, 0);
        expect_bld(&c, 1, 0, 0);
        disopt_eval_metrics mt;
        disopt_eval_metrics_of(&c, &mt);
        NEAR(mt.dice, 1.0);
        NEAR(mt.iou, 1.0);
        NEAR(mt.precision, 1.0);
        NEAR(mt.recall, 1.0);
        NEAR(mt.bld_f1, 1.0);
        NEAR(mt.bld_precision, 1.0);
        NEAR(mt.bld_recall, 1.0);
    }
    /* the truth as a raster mask on the same grid: same answer */
    const char *truth_r = write_mask("perfect_truth.tif", m);
    disopt_eval_counts c = eval_ok(pred, truth_r, NULL);
    expect_pixels(&c, 200, 0, 0, 0);
    expect_bld(&c, 1, 0, 0);
    free(m);
}

/* A 20 x 20 px building (400 px) predicted shifted right by s px: intersection 20 (20 - s),
 * union 20 (20 + s), IoU = (20 - s) / (20 + s).
 * s = 6: IoU 14/26 = 0.538 >= 0.5 -> TP 1; pixels TP 280, FP 120, FN 120, Dice 560/800 = 0.7.
 * s = 7: IoU 13/27 = 0.481 < 0.5 -> FP 1, FN 1; pixels TP 260, FP 140, FN 140. */
static void test_shifted_building(void **st) {
    (void)st;
    bld b = {{50, 50, 70, 70}, 0, {0, 0, 0, 0}};
    const char *truth = write_geojson("shift_truth.geojson", &b, 1, 0);
    for (int s = 6; s <= 7; s++) {
        unsigned char *m = calloc(NPX, 1);
        fill(m, (rect){50 + s, 50, 70 + s, 70}, 1);
        const char *pred = write_mask(s == 6 ? "shift6.tif" : "shift7.tif", m);
        free(m);
        disopt_eval_counts c = eval_ok(pred, truth, NULL);
        expect_pixels(&c, 20 * (20 - s), 20 * s, 20 * s, 0);
        if (s == 6) expect_bld(&c, 1, 0, 0);
        else expect_bld(&c, 0, 1, 1);
        disopt_eval_metrics mt;
        disopt_eval_metrics_of(&c, &mt);
        NEAR(mt.dice, (double)(2 * 20 * (20 - s)) / (2 * 20 * (20 - s) + 2 * 20 * s));
        NEAR(mt.iou, (double)(20 - s) / (20 + s));
        if (s == 7) NEAR(mt.bld_f1, 0.0);
    }
}

/* Touching buildings that the prediction merges into one blob.
 * (a) A = 20 x 20 (400 px), B = 20 x 10 (200 px) sharing the edge x = 30; predicted blob = A u B
 *     (600 px): IoU(blob, A) = 400/600 = 0.667 -> TP (A); IoU(blob, B) = 1/3; B stays unmatched -> FN.
 *     TP 1, FP 0, FN 1, F1 = 2/3. Pixels perfect (TP 600).
 *     A truth *raster* cannot separate touching buildings: A u B is one component, TP 1, FN 0.
 * (b) three 20 x 20 buildings in a row merged (1200 px): IoU 1/3 with each -> TP 0, FP 1, FN 3.
 * (c) two 20 x 20 buildings merged (800 px): IoU exactly 400/800 = 0.5 -> TP under the ">= 0.5"
 *     rule (TP 1, FN 1); with -iou just above 0.5 (solaris's "> 0.5" reading): TP 0, FP 1, FN 2. */
static void test_touching_buildings_merged(void **st) {
    (void)st;
    bld ab[2] = {{{10, 100, 30, 120}, 0, {0}}, {{30, 100, 50, 110}, 0, {0}}};
    unsigned char *m = calloc(NPX, 1);
    fill(m, ab[0].outer, 1);
    fill(m, ab[1].outer, 1);
    const char *pred = write_mask("touch_pred.tif", m);
    disopt_eval_counts c = eval_ok(pred, write_geojson("touch_truth.geojson", ab, 2, 0), NULL);
    expect_pixels(&c, 600, 0, 0, 0);
    expect_bld(&c, 1, 0, 1);
    assert_int_equal(c.pred_polygons, 1);
    assert_int_equal(c.truth_polygons, 2);
    disopt_eval_metrics mt;
    disopt_eval_metrics_of(&c, &mt);
    NEAR(mt.bld_f1, 2.0 / 3.0);
    NEAR(mt.bld_precision, 1.0);
    NEAR(mt.bld_recall, 0.5);
    c = eval_ok(pred, write_mask("touch_truth.tif", m), NULL);
    expect_pixels(&c, 600, 0, 0, 0);
    expect_bld(&c, 1, 0, 0);
    free(m);

    bld three[3] = {{{100, 10, 120, 30}, 0, {0}}, {{120, 10, 140, 30}, 0, {0}}, {{140, 10, 160, 30}, 0, {0}}};
    m = calloc(NPX, 1);
    fill(m, (rect){100, 10, 160, 30}, 1);
    c = eval_ok(write_mask("three_pred.tif", m), write_geojson("three_truth.geojson", three, 3, 0), NULL);
    free(m);
    expect_pixels(&c, 1200, 0, 0, 0);
    expect_bld(&c, 0, 1, 3);

    m = calloc(NPX, 1);
    fill(m, (rect){100, 10, 140, 30}, 1);
    pred = write_mask("two_pred.tif", m);
    free(m);
    const char *truth = write_geojson("two_truth.geojson", three, 2, 0);
    c = eval_ok(pred, truth, NULL);
    expect_bld(&c, 1, 0, 1);
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    o.iou_threshold = 0.5000001;
    c = eval_ok(pred, truth, &o);
    expect_bld(&c, 0, 1, 2);
}

/* A courtyard building: outer 40 x 40 (1600 px) with a 30 x 30 hole (900 px): 700 px of roof.
 * Predicted with the same hole: IoU 1 -> TP 1, pixels TP 700.
 * Predicted filled: IoU = 700/1600 = 0.4375 -> FP 1, FN 1; pixels TP 700, FP 900.
 * (Were the hole ignored, the filled prediction would score IoU 1.) */
static void test_courtyard(void **st) {
    (void)st;
    bld b = {{60, 60, 100, 100}, 1, {65, 65, 95, 95}};
    const char *truth = write_geojson("court_truth.geojson", &b, 1, 0);
    unsigned char *m = calloc(NPX, 1);
    fill(m, b.outer, 1);
    const char *filled = write_mask("court_filled.tif", m);
    fill(m, b.hole, 0);
    const char *holed = write_mask("court_holed.tif", m);
    disopt_eval_counts c = eval_ok(holed, truth, NULL);
    expect_pixels(&c, 700, 0, 0, 0);
    expect_bld(&c, 1, 0, 0);
    c = eval_ok(filled, truth, NULL);
    expect_pixels(&c, 700, 900, 0, 0);
    expect_bld(&c, 0, 1, 1);
    /* truth as a raster with the hole: polygonized with its hole, same answers */
    const char *truth_r = write_mask("court_truth.tif", m);
    c = eval_ok(holed, truth_r, NULL);
    expect_bld(&c, 1, 0, 0);
    c = eval_ok(filled, truth_r, NULL);
    expect_bld(&c, 0, 1, 1);
    free(m);
}

/* Size rules.
 * Predictions: a 8 x 9 blob (72 px = 18 m^2 < 80 px) is ignored (neither TP nor FP); an 8 x 10 blob
 * (80 px = 20 m^2) counts (FP). Truth: one 20 x 20 building, predicted exactly (TP).
 * -> buildings TP 1, FP 1, FN 0, one prediction dropped; pixel FP = 72 + 80 = 152 (pixels do not
 * care about polygon sizes).
 * Truth: 8 x 8 (16 m^2) and 10 x 8 (exactly 20 m^2) are dropped (<= 20 m^2, SpaceNet 6), so they are
 * neither burned (no FN pixels) nor FN; a 9 x 9 (20.25 m^2) building stays and is predicted
 * exactly -> TP 1, FN 0, 2 truth polygons dropped; pixels TP 81, FN 0. */
static void test_size_rules(void **st) {
    (void)st;
    bld one = {{10, 10, 30, 30}, 0, {0}};
    unsigned char *m = calloc(NPX, 1);
    fill(m, one.outer, 1);
    fill(m, (rect){100, 100, 108, 109}, 1);
    fill(m, (rect){150, 150, 158, 160}, 1);
    disopt_eval_counts c = eval_ok(write_mask("size_pred.tif", m), write_geojson("size_truth.geojson", &one, 1, 0), NULL);
    free(m);
    expect_pixels(&c, 400, 152, 0, 0);
    expect_bld(&c, 1, 1, 0);
    assert_int_equal(c.pred_dropped, 1);
    assert_int_equal(c.pred_polygons, 2);

    bld small[3] = {{{100, 100, 108, 108}, 0, {0}}, {{150, 150, 160, 158}, 0, {0}}, {{50, 150, 59, 159}, 0, {0}}};
    m = calloc(NPX, 1);
    fill(m, small[2].outer, 1);
    c = eval_ok(write_mask("small_pred.tif", m), write_geojson("small_truth.geojson", small, 3, 0), NULL);
    free(m);
    expect_pixels(&c, 81, 0, 0, 0);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.truth_dropped, 2);
    assert_int_equal(c.truth_polygons, 1);
}

/* A rotated grid (30 degrees, 0.5 m pixels; like the Capella SLC chips' geotransforms). The truth
 * building is the pixel rectangle [40, 60) x [50, 60) (200 px) mapped through the geotransform: a
 * rotated rectangle in UTM. Rasterized (pixel centres), it burns exactly those 200 pixels; the
 * polygonized prediction of the same pixels is the same rotated rectangle: TP 1, pixels perfect. A
 * second building hangs over the grid's (rotated) edge, [190, 215) x [100, 120): clipped to the
 * footprint it keeps 10 x 20 = 200 px, predicted exactly -> TP. */
static void test_rotated_grid(void **st) {
    (void)st;
    const double c = cos(3.14159265358979323846 / 6), s = sin(3.14159265358979323846 / 6);
    const double gt[6] = {600000.0, 0.5 * c, 0.5 * s, 5750000.0, 0.5 * s, -0.5 * c};
    rect rs[2] = {{40, 50, 60, 60}, {190, 100, 215, 120}};
    unsigned char *m = calloc(NPX, 1);
    fill(m, rs[0], 1);
    fill(m, (rect){190, 100, 200, 120}, 1);
    const char *pred = write_mask_ex("rot_pred.tif", m, W, H, gt, 32631, -1);
    free(m);
    const char *path = P("rot_truth.geojson");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"type\":\"FeatureCollection\",\"crs\":{\"type\":\"name\",\"properties\":{\"name\":"
               "\"urn:ogc:def:crs:EPSG::32631\"}},\"features\":[");
    for (int i = 0; i < 2; i++) {
        rect r = rs[i];
        double xs[5] = {r.x0, r.x0, r.x1, r.x1, r.x0}, ys[5] = {r.y0, r.y1, r.y1, r.y0, r.y0};
        fprintf(f, "%s{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"Polygon\","
                   "\"coordinates\":[[",
                i ? "," : "");
        for (int k = 0; k < 5; k++)
            fprintf(f, "%s[%.6f,%.6f]", k ? "," : "", gt[0] + xs[k] * gt[1] + ys[k] * gt[2],
                    gt[3] + xs[k] * gt[4] + ys[k] * gt[5]);
        fprintf(f, "]]}}");
    }
    fprintf(f, "]}\n");
    fclose(f);
    disopt_eval_counts cc = eval_ok(pred, path, NULL);
    expect_pixels(&cc, 400, 0, 0, 0);
    expect_bld(&cc, 2, 0, 0);
}

/* Size rules on other grids (truth and prediction rasters, identical: a perfect prediction).
 * No CRS, no geotransform: the pixel rule (80 px) holds: 8 x 10 (80 px) kept, 8 x 9 (72 px) dropped on
 * both sides -> TP 1, one dropped each.
 * EPSG:32631 at 2 m (4 m^2 per pixel): the area rule holds: 3 x 3 (36 m^2) kept, 2 x 2 (16 m^2)
 * dropped -> TP 1; with an explicit -min_pixels 80 both are dropped -> TP 0, two dropped each.
 * At 0.5 m an explicit -min_pixels 100 drops the 80 px (20 m^2) blob of the first size scene. */
static void test_size_rules_other_grids(void **st) {
    (void)st;
    unsigned char *m = calloc(NPX, 1);
    fill(m, (rect){10, 10, 18, 20}, 1);
    fill(m, (rect){50, 50, 58, 59}, 1);
    const char *bare = write_mask_ex("bare_blobs.tif", m, W, H, NULL, 0, -1);
    disopt_eval_counts c = eval_ok(bare, bare, NULL);
    expect_pixels(&c, 152, 0, 0, 0);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.pred_dropped, 1);
    assert_int_equal(c.truth_dropped, 1);
    memset(m, 0, NPX);
    fill(m, (rect){10, 10, 13, 13}, 1);
    fill(m, (rect){50, 50, 52, 52}, 1);
    const double gt2[6] = {600000.0, 2.0, 0.0, 5750000.0, 0.0, -2.0};
    const char *coarse = write_mask_ex("coarse_blobs.tif", m, W, H, gt2, 32631, -1);
    free(m);
    c = eval_ok(coarse, coarse, NULL);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.pred_dropped, 1);
    assert_int_equal(c.truth_dropped, 1);
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    o.min_pixels = 80;
    c = eval_ok(coarse, coarse, &o);
    expect_bld(&c, 0, 0, 0);
    assert_int_equal(c.pred_dropped, 2);
    assert_int_equal(c.truth_dropped, 2);
    o.min_pixels = 100;
    c = eval_ok(P("size_pred.tif"), P("size_truth.geojson"), &o);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.pred_dropped, 2);
}

/* Any OGR format and CRS, several layers: a GeoPackage in EPSG:3857 (Web Mercator, whose own units
 * inflate areas by about 1/cos^2(52 deg) = 2.7 here) with two layers: layer 1 holds an 8 x 8 px box
 * (16 m^2 on the ground, about 43 "m^2" in EPSG:3857 units), layer 2 a 12 x 8 px box (24 m^2).
 * The 20 m^2 rule is applied after reprojecting to the prediction's UTM grid: the first is dropped,
 * the second kept. Both are predicted exactly: the 64 px blob is too small to be a building, the
 * 96 px one is a TP. -> TP 1, FP 0, FN 0, 1 truth and 1 prediction dropped; pixels TP 96, FP 64. */
static void test_gpkg_web_mercator_layers(void **st) {
    (void)st;
    rect boxes[2] = {{20, 60, 28, 68}, {60, 60, 72, 68}};
    const char *path = P("truth_3857.gpkg");
    GDALDatasetH ds = GDALCreate(GDALGetDriverByName("GPKG"), path, 0, 0, 0, GDT_Unknown, NULL);
    assert_non_null(ds);
    OGRSpatialReferenceH utm = OSRNewSpatialReference(NULL), wm = OSRNewSpatialReference(NULL);
    OSRImportFromEPSG(utm, 32631);
    OSRImportFromEPSG(wm, 3857);
    OSRSetAxisMappingStrategy(utm, OAMS_TRADITIONAL_GIS_ORDER);
    OSRSetAxisMappingStrategy(wm, OAMS_TRADITIONAL_GIS_ORDER);
    OGRCoordinateTransformationH ct = OCTNewCoordinateTransformation(utm, wm);
    assert_non_null(ct);
    for (int l = 0; l < 2; l++) {
        OGRLayerH layer = GDALDatasetCreateLayer(ds, l ? "big" : "small", wm, wkbPolygon, NULL);
        assert_non_null(layer);
        OGRFieldDefnH fd = OGR_Fld_Create("kind", OFTString);
        assert_int_equal(OGR_L_CreateField(layer, fd, TRUE), OGRERR_NONE);
        OGR_Fld_Destroy(fd);
        rect r = boxes[l];
        OGRGeometryH poly = OGR_G_CreateGeometry(wkbPolygon), ring = OGR_G_CreateGeometry(wkbLinearRing);
        const int xs[5] = {r.x0, r.x0, r.x1, r.x1, r.x0}, ys[5] = {r.y0, r.y1, r.y1, r.y0, r.y0};
        for (int k = 0; k < 5; k++) OGR_G_AddPoint_2D(ring, GT[0] + xs[k] * GT[1], GT[3] + ys[k] * GT[5]);
        OGR_G_AddGeometryDirectly(poly, ring);
        assert_int_equal(OGR_G_Transform(poly, ct), OGRERR_NONE);
        if (l == 0) assert_true(OGR_G_Area(poly) > 40.0); /* Web Mercator "m^2": would pass a 20 m^2 rule */
        OGRFeatureH f = OGR_F_Create(OGR_L_GetLayerDefn(layer));
        OGR_F_SetFieldString(f, 0, l ? "house" : "shed");
        OGR_F_SetGeometryDirectly(f, poly);
        assert_int_equal(OGR_L_CreateFeature(layer, f), OGRERR_NONE);
        OGR_F_Destroy(f);
    }
    OCTDestroyCoordinateTransformation(ct);
    OSRDestroySpatialReference(utm);
    OSRDestroySpatialReference(wm);
    GDALClose(ds);
    unsigned char *m = calloc(NPX, 1);
    fill(m, boxes[0], 1);
    fill(m, boxes[1], 1);
    disopt_eval_counts c = eval_ok(write_mask("gpkg_pred.tif", m), path, NULL);
    free(m);
    expect_pixels(&c, 96, 64, 0, 0);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.truth_dropped, 1);
    assert_int_equal(c.pred_dropped, 1);
    /* only layer "big", or only features of kind 'house': the 16 m^2 shed is never read */
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    const char *only_big[] = {"big", NULL};
    o.layers = only_big;
    c = eval_ok(P("gpkg_pred.tif"), path, &o);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.truth_dropped, 0);
    disopt_eval_options_init(&o);
    o.where = "kind = 'house'";
    c = eval_ok(P("gpkg_pred.tif"), path, &o);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.truth_dropped, 0);
    /* only sheds: the house is not truth, its 96 px prediction is an FP */
    o.where = "kind = 'shed'";
    c = eval_ok(P("gpkg_pred.tif"), path, &o);
    expect_pixels(&c, 0, 160, 0, 0);
    expect_bld(&c, 0, 1, 0);
    /* errors before any work: an unknown layer, a where clause OGR rejects, layers for raster truth */
    const char *nope[] = {"big", "nope", NULL};
    disopt_eval_options_init(&o);
    o.layers = nope;
    assert_int_equal(disopt_eval_check_pair(P("gpkg_pred.tif"), path, &o), DISOPT_ERR_INPUT);
    assert_non_null(strstr(disopt_last_error(), "nope"));
    disopt_eval_options_init(&o);
    o.where = "kind = = (";
    assert_int_equal(disopt_eval_check_pair(P("gpkg_pred.tif"), path, &o), DISOPT_ERR_INVALID_ARGUMENT);
    o.where = NULL;
    o.layers = only_big;
    assert_int_equal(disopt_eval_check_pair(P("gpkg_pred.tif"), P("gpkg_pred.tif"), &o), DISOPT_ERR_INVALID_ARGUMENT);
}

/* One truth file for several tiles (only the features near a tile are read, through a spatial filter
 * in the file's CRS): a CRS84 GeoJSON with building A = [10, 30)^2 of tile 1 and building B =
 * [250, 270) x [50, 70) in tile 1's pixels, which is [50, 70)^2 of tile 2 (tile 2 starts 100 m east).
 * Each tile predicts its own building exactly -> TP 1, FP 0, FN 0 and 1 truth polygon per tile. */
static void test_one_truth_two_tiles(void **st) {
    (void)st;
    bld b[2] = {{{10, 10, 30, 30}, 0, {0}}, {{250, 50, 270, 70}, 0, {0}}};
    const char *truth = write_geojson("two_tiles_crs84.geojson", b, 2, 1);
    double gt2[6];
    memcpy(gt2, GT, sizeof gt2);
    gt2[0] += 100.0;
    unsigned char *m = calloc(NPX, 1);
    fill(m, b[0].outer, 1);
    const char *t1 = write_mask("tile1.tif", m);
    memset(m, 0, NPX);
    fill(m, (rect){50, 50, 70, 70}, 1);
    const char *t2 = write_mask_ex("tile2.tif", m, W, H, gt2, 32631, -1);
    free(m);
    for (int k = 0; k < 2; k++) {
        disopt_eval_counts c = eval_ok(k ? t2 : t1, truth, NULL);
        expect_pixels(&c, 400, 0, 0, 0);
        expect_bld(&c, 1, 0, 0);
        assert_int_equal(c.truth_polygons, 1);
    }
}

/* Truth beyond the grid: vector truth is clipped to the prediction's footprint before the size rule.
 * A 20 x 20 building at x in [195, 215) keeps 5 x 20 = 100 px (25 m^2) inside; predicted there
 * (100 px) -> IoU 1, TP (unclipped it would be 100/400 = 0.25). A 12 x 10 building at x in [198, 210)
 * keeps 2 x 10 = 20 px = 5 m^2 -> dropped as small (unclipped, 30 m^2, it would be an FN). A building
 * wholly outside the grid is not counted at all. -> TP 1, FP 0, FN 0, 1 truth dropped. */
static void test_clip_to_grid(void **st) {
    (void)st;
    bld b[3] = {{{195, 50, 215, 70}, 0, {0}}, {{198, 100, 210, 110}, 0, {0}}, {{-50, -50, -30, -30}, 0, {0}}};
    unsigned char *m = calloc(NPX, 1);
    fill(m, (rect){195, 50, 200, 70}, 1);
    disopt_eval_counts c = eval_ok(write_mask("edge_pred.tif", m), write_geojson("edge_truth.geojson", b, 3, 0), NULL);
    free(m);
    /* the 20 px of the small building are not burned (dropped before rasterizing) */
    expect_pixels(&c, 100, 0, 0, 0);
    expect_bld(&c, 1, 0, 0);
    assert_int_equal(c.truth_dropped, 1);
    assert_int_equal(c.truth_polygons, 1);
}

/* Nodata and probabilities. Float32 prediction, nodata -1 in columns x < 15, 0.9 on the building
 * [10, 30) x [10, 30) (except where nodata), exactly 0.5 on [150, 170)^2 (not a building: the rule
 * is > threshold) and 0.51 on [100, 120) x [150, 170) (a building, no truth: FP).
 * Truth: the 20 x 20 building and a 10 x 20 building at x in [2, 12) wholly in the nodata columns.
 * Pixels: ignored = 15 x 200 = 3000; TP = 15 x 20 = 300 (x 15..29); FN 0 (the truth in x < 15 is
 * ignored); FP 400 (the 0.51 square).
 * Buildings: predicted polygon 300 px vs truth polygon 400 px: IoU 0.75 -> TP; the 0.51 square FP;
 * the building wholly under nodata is dropped (not FN). -> TP 1, FP 1, FN 0, 1 truth dropped.
 * A 20 x 5 blob of 0.9 on rows y < 5, [50, 70) x [0, 5) (100 px), adds FP 100 pixels and 1 FP building.
 * -> pixels TP 300, FP 500, FN 0; buildings TP 1, FP 2, FN 0, 1 truth dropped.
 * With -threshold 0.6 the 0.51 square is background: FP 100 pixels, 1 FP building.
 * A truth raster with nodata on rows y < 5 and the same two buildings: the blob lies wholly in the
 * truth's ignored area (dropped, not FP), the building at x < 15 wholly in the prediction's (dropped,
 * not FN). */
static void test_nodata_and_threshold(void **st) {
    (void)st;
    float *v = calloc(NPX, sizeof *v);
    for (int y = 10; y < 30; y++)
        for (int x = 10; x < 30; x++) v[y * W + x] = 0.9f;
    for (int y = 150; y < 170; y++)
        for (int x = 150; x < 170; x++) v[y * W + x] = 0.5f;
    for (int y = 150; y < 170; y++)
        for (int x = 100; x < 120; x++) v[y * W + x] = 0.51f;
    for (int y = 0; y < 5; y++)
        for (int x = 50; x < 70; x++) v[y * W + x] = 0.9f;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < 15; x++) v[y * W + x] = -1.0f;
    const char *pred = write_float("nodata_pred.tif", v, -1.0);
    free(v);
    bld b[2] = {{{10, 10, 30, 30}, 0, {0}}, {{2, 100, 12, 120}, 0, {0}}};
    const char *truth = write_geojson("nodata_truth.geojson", b, 2, 0);
    disopt_eval_counts c = eval_ok(pred, truth, NULL);
    expect_pixels(&c, 300, 500, 0, 3000);
    expect_bld(&c, 1, 2, 0);
    assert_int_equal(c.truth_dropped, 1);
    assert_int_equal(c.pred_dropped, 0);
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    o.threshold = 0.6;
    c = eval_ok(pred, truth, &o);
    expect_pixels(&c, 300, 100, 0, 3000);
    expect_bld(&c, 1, 1, 0);

    /* truth raster with its own nodata (255) over rows y < 5: those pixels are ignored too */
    unsigned char *m = calloc(NPX, 1);
    fill(m, b[0].outer, 1);
    fill(m, b[1].outer, 1);
    fill(m, (rect){0, 0, W, 5}, 255);
    c = eval_ok(pred, write_mask_ex("nodata_truth.tif", m, W, H, GT, 32631, 255), NULL);
    free(m);
    /* ignored: 3000 (pred) + 5 rows x 185 columns not already ignored = 3925 */
    expect_pixels(&c, 300, 400, 0, 3000 + 5 * 185);
    expect_bld(&c, 1, 1, 0);
    assert_int_equal(c.pred_dropped, 1);
    assert_int_equal(c.truth_dropped, 1);
}

/* Empty cases. No prediction vs one 400 px building: pixels FN 400, Dice = IoU = recall = 0,
 * precision undefined (NaN); buildings FN 1, F1 0, recall 0, precision NaN.
 * Empty truth (a FeatureCollection without features) vs one predicted 400 px building: FP 400,
 * recall NaN, Dice 0; buildings FP 1, F1 0, precision 0, recall NaN.
 * Both empty: every ratio NaN, TN = all pixels. */
static void test_empty_cases(void **st) {
    (void)st;
    bld b = {{10, 10, 30, 30}, 0, {0}};
    unsigned char *m = calloc(NPX, 1);
    const char *empty_pred = write_mask("empty_pred.tif", m);
    fill(m, b.outer, 1);
    const char *pred = write_mask("one_pred.tif", m);
    free(m);
    const char *truth = write_geojson("one_truth.geojson", &b, 1, 0);
    const char *empty_truth = write_geojson("empty_truth.geojson", NULL, 0, 0);
    disopt_eval_metrics mt;

    disopt_eval_counts c = eval_ok(empty_pred, truth, NULL);
    expect_pixels(&c, 0, 0, 400, 0);
    expect_bld(&c, 0, 0, 1);
    disopt_eval_metrics_of(&c, &mt);
    NEAR(mt.dice, 0);
    NEAR(mt.iou, 0);
    NEAR(mt.recall, 0);
    assert_true(isnan(mt.precision));
    NEAR(mt.bld_f1, 0);
    NEAR(mt.bld_recall, 0);
    assert_true(isnan(mt.bld_precision));

    c = eval_ok(pred, empty_truth, NULL);
    expect_pixels(&c, 0, 400, 0, 0);
    expect_bld(&c, 0, 1, 0);
    disopt_eval_metrics_of(&c, &mt);
    NEAR(mt.dice, 0);
    assert_true(isnan(mt.recall));
    NEAR(mt.precision, 0);
    NEAR(mt.bld_f1, 0);
    NEAR(mt.bld_precision, 0);
    assert_true(isnan(mt.bld_recall));

    c = eval_ok(empty_pred, empty_truth, NULL);
    expect_pixels(&c, 0, 0, 0, 0);
    expect_bld(&c, 0, 0, 0);
    disopt_eval_metrics_of(&c, &mt);
    assert_true(isnan(mt.dice) && isnan(mt.iou) && isnan(mt.precision) && isnan(mt.recall));
    assert_true(isnan(mt.bld_f1) && isnan(mt.bld_precision) && isnan(mt.bld_recall));
}

/* Connectivity: two 10 x 10 buildings (100 px = 25 m^2 each) touching at one corner, predicted
 * exactly. 4-connected (default, solaris): two predicted polygons, TP 2. 8-connected: one polygon of
 * 200 px, IoU 100/200 = 0.5 with each -> TP 1 (the first), FN 1. */
static void test_connectivity(void **st) {
    (void)st;
    bld b[2] = {{{20, 150, 30, 160}, 0, {0}}, {{30, 160, 40, 170}, 0, {0}}};
    unsigned char *m = calloc(NPX, 1);
    fill(m, b[0].outer, 1);
    fill(m, b[1].outer, 1);
    const char *pred = write_mask("diag_pred.tif", m);
    free(m);
    const char *truth = write_geojson("diag_truth.geojson", b, 2, 0);
    disopt_eval_counts c = eval_ok(pred, truth, NULL);
    expect_bld(&c, 2, 0, 0);
    assert_int_equal(c.pred_polygons, 2);
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    o.connectivity = 8;
    c = eval_ok(pred, truth, &o);
    assert_int_equal(c.pred_polygons, 1);
    expect_bld(&c, 1, 0, 1);
}

/* An invalid truth polygon is repaired (OGR_G_MakeValid), not dropped: one feature whose single ring
 * crosses itself, (100,30) (120,30) (120,50) (110,50) (110,20) (100,20) in pixel corners: a figure
 * eight of B = [100, 110) x [20, 30) (100 px) and A = [110, 120) x [30, 50) (200 px) meeting at the
 * crossing (110, 30). Repaired it is a multipolygon of 300 px, one building (unrepaired its shoelace
 * area would be 200 - 100 and GEOS would refuse it). Predicted exactly, 4-connected: B comes first in
 * raster order, IoU 100/300 < 0.5 -> FP; then A, IoU 200/300 -> TP. 8-connected: one polygon equal
 * to the building -> TP 1, FP 0. */
static void test_invalid_truth_polygon(void **st) {
    (void)st;
    const char *path = P("bowtie.geojson");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    const int xs[7] = {100, 120, 120, 110, 110, 100, 100}, ys[7] = {30, 30, 50, 50, 20, 20, 30};
    fprintf(f, "{\"type\":\"FeatureCollection\",\"crs\":{\"type\":\"name\",\"properties\":{\"name\":"
               "\"urn:ogc:def:crs:EPSG::32631\"}},\"features\":[{\"type\":\"Feature\",\"properties\":{},"
               "\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[[");
    for (int k = 0; k < 7; k++)
        fprintf(f, "%s[%.3f,%.3f]", k ? "," : "", GT[0] + xs[k] * GT[1], GT[3] + ys[k] * GT[5]);
    fprintf(f, "]]}}]}\n");
    fclose(f);
    unsigned char *m = calloc(NPX, 1);
    fill(m, (rect){100, 20, 110, 30}, 1);
    fill(m, (rect){110, 30, 120, 50}, 1);
    const char *pred = write_mask("bowtie_pred.tif", m);
    free(m);
    disopt_eval_counts c = eval_ok(pred, path, NULL);
    expect_pixels(&c, 300, 0, 0, 0);
    expect_bld(&c, 1, 1, 0);
    assert_int_equal(c.truth_polygons, 1);
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    o.connectivity = 8;
    c = eval_ok(pred, path, &o);
    expect_bld(&c, 1, 0, 0);
}

/* Aggregation over pairs: pair 1 is the perfect match (TP 1, FP 0, FN 0: F1 1), pair 2 the three
 * merged buildings (TP 0, FP 1, FN 3: F1 0). Summed: TP 1, FP 1, FN 3 -> F1 = 2 / (2 + 1 + 3) = 1/3,
 * not the mean of the per-pair F1s (0.5). The list is read with relative paths. */
static void test_multi_pair_aggregation(void **st) {
    (void)st;
    const char *list = P("pairs.csv");
    FILE *f = fopen(list, "w");
    assert_non_null(f);
    fprintf(f, "prediction,truth\n# a comment\n\nperfect_pred.tif,perfect_utm.geojson\n"
               "\"three_pred.tif\", three_truth.geojson\n");
    fclose(f);
    char **preds, **truths;
    int n;
    assert_int_equal(disopt_eval_read_list(list, &preds, &truths, &n), DISOPT_OK);
    assert_int_equal(n, 2);
    assert_string_equal(preds[0], P("perfect_pred.tif"));
    assert_string_equal(truths[1], P("three_truth.geojson"));
    disopt_eval_counts total;
    memset(&total, 0, sizeof total);
    for (int i = 0; i < n; i++) {
        disopt_eval_counts c = eval_ok(preds[i], truths[i], NULL);
        disopt_eval_add(&total, &c);
    }
    disopt_eval_free_list(preds);
    disopt_eval_free_list(truths);
    assert_int_equal(total.pairs, 2);
    assert_int_equal(total.bld_tp, 1);
    assert_int_equal(total.bld_fp, 1);
    assert_int_equal(total.bld_fn, 3);
    disopt_eval_metrics mt;
    disopt_eval_metrics_of(&total, &mt);
    NEAR(mt.bld_f1, 1.0 / 3.0);
    NEAR(mt.bld_precision, 0.5);
    NEAR(mt.bld_recall, 0.25);
    /* pixels summed too: 200 + 1200 TP */
    assert_int_equal(total.tp, 1400);
    assert_int_equal(total.tn, 2 * NPX - 1400);

    /* an empty list and a malformed line are errors */
    f = fopen(P("empty.csv"), "w");
    fprintf(f, "prediction,truth\n# nothing\n");
    fclose(f);
    assert_int_equal(disopt_eval_read_list(P("empty.csv"), &preds, &truths, &n), DISOPT_ERR_INPUT);
    f = fopen(P("bad.csv"), "w");
    fprintf(f, "a.tif,b.tif,c.tif\n");
    fclose(f);
    assert_int_equal(disopt_eval_read_list(P("bad.csv"), &preds, &truths, &n), DISOPT_ERR_INPUT);
    assert_int_equal(disopt_eval_read_list(P("missing.csv"), &preds, &truths, &n), DISOPT_ERR_IO);
}

/* Clear errors before any work: missing files, grids that differ, no georeferencing, bad options. */
static void test_errors(void **st) {
    (void)st;
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    disopt_eval_counts c;
    const char *pred = P("perfect_pred.tif"), *truth = P("perfect_utm.geojson");
    assert_int_equal(disopt_eval_check_pair(pred, truth, &o), DISOPT_OK);
    assert_int_equal(disopt_eval_pair(P("nope.tif"), truth, &o, &c), DISOPT_ERR_IO);
    assert_non_null(strstr(disopt_last_error(), "no such file"));
    assert_int_equal(disopt_eval_check_pair(pred, P("nope.geojson"), &o), DISOPT_ERR_IO);
    unsigned char *m = calloc(NPX, 1);
    /* size differs */
    assert_int_equal(disopt_eval_check_pair(pred, write_mask_ex("small.tif", m, W - 1, H, GT, 32631, -1), &o),
                     DISOPT_ERR_INPUT);
    assert_non_null(strstr(disopt_last_error(), "grids differ"));
    /* geotransform differs (half a pixel) */
    double gt2[6];
    memcpy(gt2, GT, sizeof gt2);
    gt2[0] += 0.25;
    assert_int_equal(disopt_eval_check_pair(pred, write_mask_ex("shifted.tif", m, W, H, gt2, 32631, -1), &o),
                     DISOPT_ERR_INPUT);
    /* CRS differs */
    assert_int_equal(disopt_eval_check_pair(pred, write_mask_ex("utm32.tif", m, W, H, GT, 32632, -1), &o),
                     DISOPT_ERR_INPUT);
    assert_non_null(strstr(disopt_last_error(), "CRS"));
    /* no georeferencing on the prediction: a vector truth cannot be placed */
    const char *bare = write_mask_ex("bare.tif", m, W, H, NULL, 0, -1);
    assert_int_equal(disopt_eval_check_pair(bare, truth, &o), DISOPT_ERR_INPUT);
    /* ... but raster vs raster without georeferencing works (pixel rule only) */
    disopt_eval_counts cc = eval_ok(bare, bare, NULL);
    expect_pixels(&cc, 0, 0, 0, 0);
    free(m);
    /* a text file is neither raster nor vector */
    FILE *f = fopen(P("junk.tif"), "w");
    fprintf(f, "not a raster\n");
    fclose(f);
    assert_int_equal(disopt_eval_check_pair(P("junk.tif"), truth, &o), DISOPT_ERR_IO);
    /* bad options */
    o.connectivity = 6;
    assert_int_equal(disopt_eval_check_pair(pred, truth, &o), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_eval_options_init(&o);
    o.iou_threshold = 0;
    assert_int_equal(disopt_eval_pair(pred, truth, &o, &c), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_eval_options_init(&o);
    o.threshold = NAN;
    assert_int_equal(disopt_eval_pair(pred, truth, &o, &c), DISOPT_ERR_INVALID_ARGUMENT);
}

/* Random scenes checked against answers computed here independently: one truth rectangle per 48 x 48
 * cell (some cells empty), the prediction the same rectangle jittered in position and size (some
 * missing, some without truth). Rectangles of neighbouring cells never touch, so every rectangle is
 * its own polygon and the expected TP/FP/FN follow from rectangle IoUs, in raster order of the
 * rectangles' top-left pixels, with the documented size rules (truth from vector: dropped if
 * <= 20 m^2; predictions and raster truth: dropped if < 20 m^2). Pixels: per-cell intersections. */
static int64_t rect_area(rect r) { return (int64_t)(r.x1 - r.x0) * (r.y1 - r.y0); }
static int64_t rect_inter(rect a, rect b) {
    int w = (a.x1 < b.x1 ? a.x1 : b.x1) - (a.x0 > b.x0 ? a.x0 : b.x0);
    int h = (a.y1 < b.y1 ? a.y1 : b.y1) - (a.y0 > b.y0 ? a.y0 : b.y0);
    return w > 0 && h > 0 ? (int64_t)w * h : 0;
}

static void test_random_rectangles(void **st) {
    (void)st;
    enum { CELLS = 4 }; /* W / 48 = 4 cells per side (192 px), the rest of the grid stays empty */
    tu_rng rng = tu_rng_fresh();
    for (int round = 0; round < 3; round++) {
        bld tb[CELLS * CELLS];
        rect pr[CELLS * CELLS];
        int has_t[CELLS * CELLS], has_p[CELLS * CELLS], nt = 0;
        memset(tb, 0, sizeof tb);
        unsigned char *pm = calloc(NPX, 1), *tm = calloc(NPX, 1);
        for (int cy = 0; cy < CELLS; cy++)
            for (int cx = 0; cx < CELLS; cx++) {
                int k = cy * CELLS + cx;
                int w = 6 + (int)(tu_next(&rng) % 19), h = 6 + (int)(tu_next(&rng) % 19); /* 6..24 */
                int x0 = cx * 48 + 7 + (int)(tu_next(&rng) % 7), y0 = cy * 48 + 7 + (int)(tu_next(&rng) % 7);
                rect t = {x0, y0, x0 + w, y0 + h};
                int dx = (int)(tu_next(&rng) % 13) - 6, dy = (int)(tu_next(&rng) % 13) - 6;
                int dw = (int)(tu_next(&rng) % 9) - 4, dh = (int)(tu_next(&rng) % 9) - 4;
                rect p = {x0 + dx, y0 + dy, x0 + dx + (w + dw < 4 ? 4 : w + dw), y0 + dy + (h + dh < 4 ? 4 : h + dh)};
                int r = (int)(tu_next(&rng) % 10);
                has_t[k] = r != 0; /* 10 %: prediction without truth */
                has_p[k] = r != 1; /* 10 %: truth without prediction */
                pr[k] = p;
                if (has_t[k]) {
                    tb[nt++] = (bld){t, 0, {0}};
                    fill(tm, t, 1);
                }
                if (has_p[k]) fill(pm, p, 1);
            }
        /* expected, for vector truth (vec = 1) and raster truth (vec = 0) */
        for (int vec = 1; vec >= 0; vec--) {
            int64_t etp = 0, efp = 0, efn = 0, ptp = 0, pfp = 0, pfn = 0;
            int ti = 0;
            for (int k = 0; k < CELLS * CELLS; k++) {
                rect t = has_t[k] ? tb[ti++].outer : (rect){0, 0, 0, 0};
                int64_t ta = has_t[k] ? rect_area(t) : 0, pa = has_p[k] ? rect_area(pr[k]) : 0;
                int t_kept = has_t[k] && (vec ? ta * 0.25 > 20.0 : ta * 0.25 >= 20.0);
                int p_kept = has_p[k] && pa * 0.25 >= 20.0;
                /* pixels: vector truth burns kept polygons only; raster truth is the raster */
                int t_burn = vec ? t_kept : has_t[k];
                int64_t inter = (has_p[k] && t_burn) ? rect_inter(pr[k], t) : 0;
                ptp += inter;
                pfp += pa - inter;
                pfn += (t_burn ? ta : 0) - inter;
                /* buildings (cells are scanned in raster order; one candidate per cell) */
                if (p_kept) {
                    int64_t i = t_kept ? rect_inter(pr[k], t) : 0;
                    if (i > 0 && (double)i / (double)(pa + ta - i) >= 0.5) etp++;
                    else {
                        efp++;
                        if (t_kept) efn++;
                    }
                } else if (t_kept) {
                    efn++;
                }
            }
            char pn[64], tn[64];
            snprintf(pn, sizeof pn, "rand_pred_%d.tif", round);
            snprintf(tn, sizeof tn, vec ? "rand_truth_%d.geojson" : "rand_truth_%d.tif", round);
            const char *pred = write_mask(pn, pm);
            const char *truth = vec ? write_geojson(tn, tb, nt, 0) : write_mask(tn, tm);
            disopt_eval_counts c = eval_ok(pred, truth, NULL);
            fprintf(stderr, "# round %d (%s truth): TP %lld FP %lld FN %lld\n", round, vec ? "vector" : "raster",
                    (long long)etp, (long long)efp, (long long)efn);
            expect_pixels(&c, ptp, pfp, pfn, 0);
            expect_bld(&c, etp, efp, efn);
        }
        free(pm);
        free(tm);
    }
}

/* Real SAR (../shared/realdata, Capella over Rotterdam, 200 x 200 at 4.5 m in EPSG:32631, 39 % NaN):
 * "buildings" = band 1 > 0 dB: hundreds of irregular speckle blobs with many diagonal contacts.
 * Prediction: the Float32 band itself (NaN = nodata) with -threshold 0. Truth: the same rule as a
 * Byte mask (nodata 255 where NaN), and as polygons (GDALPolygonize of that mask, 4- and 8-connected,
 * reprojected to WGS 84 lon/lat in GeoJSON; the 8-connected rings touch themselves and are repaired). Both must score perfectly: pixels TP = the count of > 0 dB pixels,
 * FP = FN = 0, ignored = the NaN count; buildings TP = the number of connected components counted
 * here by a flood fill (4- and 8-connected; at 20.25 m^2 per pixel no blob is too small). */
static int64_t count_components(const unsigned char *b, int w, int h, int conn) {
    int *stack = malloc(sizeof(int) * (size_t)w * h);
    unsigned char *seen = calloc((size_t)w * h, 1);
    int64_t n = 0;
    for (int i = 0; i < w * h; i++) {
        if (!b[i] || seen[i]) continue;
        n++;
        int sp = 0;
        stack[sp++] = i;
        seen[i] = 1;
        while (sp) {
            int p = stack[--sp], x = p % w, y = p / w;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    if ((!dx && !dy) || (conn == 4 && dx && dy)) continue;
                    int nx = x + dx, ny = y + dy;
                    if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                    int q = ny * w + nx;
                    if (b[q] && !seen[q]) {
                        seen[q] = 1;
                        stack[sp++] = q;
                    }
                }
        }
    }
    free(stack);
    free(seen);
    return n;
}

/* Polygonizes the value-1 pixels of band 1 of td (its mask band honoured), writes them reprojected
 * to WGS 84 lon/lat as a GeoJSON file; returns the number of polygons. */
static int64_t polygonize_to_lonlat(GDALDatasetH td, GDALDatasetH src, const char *out, int conn) {
    GDALDatasetH mem = GDALCreate(GDALGetDriverByName("Memory"), "", 0, 0, 0, GDT_Unknown, NULL);
    OGRSpatialReferenceH utm = OSRNewSpatialReference(GDALGetProjectionRef(src)), ll = OSRNewSpatialReference(NULL);
    OSRSetWellKnownGeogCS(ll, "WGS84");
    OSRSetAxisMappingStrategy(utm, OAMS_TRADITIONAL_GIS_ORDER);
    OSRSetAxisMappingStrategy(ll, OAMS_TRADITIONAL_GIS_ORDER);
    OGRLayerH ml = GDALDatasetCreateLayer(mem, "p", utm, wkbPolygon, NULL);
    OGRFieldDefnH fd = OGR_Fld_Create("dn", OFTInteger);
    OGR_L_CreateField(ml, fd, TRUE);
    OGR_Fld_Destroy(fd);
    char **opt = conn == 8 ? CSLSetNameValue(NULL, "8CONNECTED", "8") : NULL;
    assert_int_equal(GDALPolygonize(GDALGetRasterBand(td, 1), GDALGetMaskBand(GDALGetRasterBand(td, 1)), ml, 0, opt,
                                    NULL, NULL), CE_None);
    CSLDestroy(opt);
    GDALDatasetH gj = GDALCreate(GDALGetDriverByName("GeoJSON"), out, 0, 0, 0, GDT_Unknown, NULL);
    assert_non_null(gj);
    OGRLayerH gl = GDALDatasetCreateLayer(gj, "truth", ll, wkbPolygon, NULL);
    OGRCoordinateTransformationH ct = OCTNewCoordinateTransformation(utm, ll);
    assert_non_null(ct);
    OGRFeatureH f;
    int64_t npoly = 0;
    OGR_L_ResetReading(ml);
    while ((f = OGR_L_GetNextFeature(ml)) != NULL) {
        if (OGR_F_GetFieldAsInteger(f, 0) == 1) {
            OGRGeometryH g = OGR_G_Clone(OGR_F_GetGeometryRef(f));
            assert_int_equal(OGR_G_Transform(g, ct), OGRERR_NONE);
            OGRFeatureH nf = OGR_F_Create(OGR_L_GetLayerDefn(gl));
            OGR_F_SetGeometryDirectly(nf, g);
            assert_int_equal(OGR_L_CreateFeature(gl, nf), OGRERR_NONE);
            OGR_F_Destroy(nf);
            npoly++;
        }
        OGR_F_Destroy(f);
    }
    GDALClose(gj);
    GDALClose(mem);
    OCTDestroyCoordinateTransformation(ct);
    OSRDestroySpatialReference(utm);
    OSRDestroySpatialReference(ll);
    return npoly;
}

static void test_real_sar_blobs(void **st) {
    (void)st;
    GDALDatasetH src = GDALOpen(SAR_REAL, GA_ReadOnly);
    assert_non_null(src);
    int w = GDALGetRasterXSize(src), h = GDALGetRasterYSize(src);
    double gt[6];
    assert_int_equal(GDALGetGeoTransform(src, gt), CE_None);
    float *v = malloc(sizeof(float) * (size_t)w * h);
    unsigned char *mask = malloc((size_t)w * h), *bin = malloc((size_t)w * h);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(src, 1), GF_Read, 0, 0, w, h, v, w, h, GDT_Float32, 0, 0), CE_None);
    int64_t nbld = 0, nnan = 0;
    for (int i = 0; i < w * h; i++) {
        bin[i] = !isnan(v[i]) && v[i] > 0.0f;
        mask[i] = isnan(v[i]) ? 255 : bin[i];
        nbld += bin[i];
        nnan += isnan(v[i]) != 0;
    }
    /* prediction: band 1 as Float32, NaN as the only nodata */
    GDALDatasetH pd = GDALCreate(GDALGetDriverByName("GTiff"), P("sar_pred.tif"), w, h, 1, GDT_Float32, NULL);
    assert_non_null(pd);
    GDALSetGeoTransform(pd, gt);
    GDALSetProjection(pd, GDALGetProjectionRef(src));
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(pd, 1), GF_Write, 0, 0, w, h, v, w, h, GDT_Float32, 0, 0), CE_None);
    GDALClose(pd);
    /* truth raster */
    GDALDatasetH td = GDALCreate(GDALGetDriverByName("GTiff"), P("sar_truth.tif"), w, h, 1, GDT_Byte, NULL);
    assert_non_null(td);
    GDALSetGeoTransform(td, gt);
    GDALSetProjection(td, GDALGetProjectionRef(src));
    GDALSetRasterNoDataValue(GDALGetRasterBand(td, 1), 255);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(td, 1), GF_Write, 0, 0, w, h, mask, w, h, GDT_Byte, 0, 0), CE_None);
    /* truth polygons: polygonize (value 1 only; 4- and 8-connected), reproject to lon/lat, GeoJSON */
    int64_t npoly = polygonize_to_lonlat(td, src, P("sar_truth.geojson"), 4);
    int64_t npoly8 = polygonize_to_lonlat(td, src, P("sar_truth8.geojson"), 8);
    GDALClose(td);
    GDALClose(src);

    int64_t n4 = count_components(bin, w, h, 4), n8 = count_components(bin, w, h, 8);
    fprintf(stderr, "# real SAR > 0 dB: %lld px, %lld NaN, %lld 4-connected blobs, %lld 8-connected\n",
            (long long)nbld, (long long)nnan, (long long)n4, (long long)n8);
    assert_true(n4 > 20 && n8 < n4 && npoly == n4 && npoly8 == n8);
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    o.threshold = 0.0;
    for (int k = 0; k < 4; k++) {
        o.connectivity = k >= 2 ? 8 : 4;
        const char *truth = k == 0 || k == 2 ? "sar_truth.tif" : k == 1 ? "sar_truth.geojson" : "sar_truth8.geojson";
        disopt_eval_counts c = eval_ok(P("sar_pred.tif"), P(truth), &o);
        assert_int_equal(c.tp + c.fp + c.fn + c.tn + c.ignored, (int64_t)w * h);
        assert_int_equal(c.tp, nbld);
        assert_int_equal(c.fp, 0);
        assert_int_equal(c.fn, 0);
        assert_int_equal(c.ignored, nnan);
        assert_int_equal(c.bld_tp, k >= 2 ? n8 : n4);
        assert_int_equal(c.bld_fp, 0);
        assert_int_equal(c.bld_fn, 0);
        assert_int_equal(c.pred_dropped + c.truth_dropped, 0);
    }
    /* Imperfect predictions (> 2, > 4, > 8 dB, and 8-connected) against the > 0 dB truth: the truth
     * raster is scored from pixel counts, the truth polygons through GEOS intersections; the two
     * must agree exactly (at 20.25 m^2 per pixel the size rules drop nothing on either path). */
    for (int k = 0; k < 4; k++) {
        o.threshold = k == 3 ? 2.0 : 2.0 * (1 << k);
        o.connectivity = k == 3 ? 8 : 4;
        disopt_eval_counts cr = eval_ok(P("sar_pred.tif"), P("sar_truth.tif"), &o);
        disopt_eval_counts cv =
            eval_ok(P("sar_pred.tif"), P(o.connectivity == 8 ? "sar_truth8.geojson" : "sar_truth.geojson"), &o);
        fprintf(stderr, "# > %g dB, %d-connected: pixels TP %lld FN %lld, buildings TP %lld FP %lld FN %lld\n",
                o.threshold, o.connectivity, (long long)cr.tp, (long long)cr.fn, (long long)cr.bld_tp,
                (long long)cr.bld_fp, (long long)cr.bld_fn);
        assert_true(cr.fn > 0 && cr.bld_tp > 0 && cr.bld_fn > 0);
        assert_int_equal(cr.tp, cv.tp);
        assert_int_equal(cr.fp, cv.fp);
        assert_int_equal(cr.fn, cv.fn);
        assert_int_equal(cr.ignored, cv.ignored);
        expect_bld(&cv, cr.bld_tp, cr.bld_fp, cr.bld_fn);
        assert_int_equal(cr.pred_polygons, cv.pred_polygons);
        assert_int_equal(cr.truth_polygons, cv.truth_polygons);
    }
    free(v);
    free(mask);
    free(bin);
}

/* Reports: JSON parsed back with json-c (null for undefined ratios), CSV rows. */
static void test_report_formats(void **st) {
    (void)st;
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    disopt_eval_pair_result r[2];
    r[0].prediction = "a.tif";
    r[0].truth = "a.geojson";
    r[0].counts = eval_ok(P("perfect_pred.tif"), P("perfect_utm.geojson"), NULL);
    r[1].prediction = "b,\"x\".tif";
    r[1].truth = "b.geojson";
    r[1].counts = eval_ok(P("empty_pred.tif"), P("empty_truth.geojson"), NULL);
    disopt_eval_counts total;
    memset(&total, 0, sizeof total);
    disopt_eval_add(&total, &r[0].counts);
    disopt_eval_add(&total, &r[1].counts);
    char *s = NULL;
    assert_int_equal(disopt_eval_report(r, 2, &total, &o, DISOPT_EVAL_JSON, &s), DISOPT_OK);
    json_object *root = json_tokener_parse(s);
    assert_non_null(root);
    json_object *pairs, *tot, *p1, *b, *v;
    assert_true(json_object_object_get_ex(root, "pairs", &pairs));
    assert_int_equal(json_object_array_length(pairs), 2);
    p1 = json_object_array_get_idx(pairs, 1);
    assert_true(json_object_object_get_ex(p1, "buildings", &b));
    assert_true(json_object_object_get_ex(b, "f1", &v));
    assert_null(v); /* undefined: JSON null */
    assert_true(json_object_object_get_ex(root, "total", &tot));
    assert_true(json_object_object_get_ex(tot, "buildings", &b));
    assert_true(json_object_object_get_ex(b, "tp", &v));
    assert_int_equal(json_object_get_int64(v), 1);
    assert_true(json_object_object_get_ex(b, "f1", &v));
    NEAR(json_object_get_double(v), 1.0);
    json_object_put(root);
    free(s);
    assert_int_equal(disopt_eval_report(r, 2, &total, &o, DISOPT_EVAL_CSV, &s), DISOPT_OK);
    char **lines = CSLTokenizeString2(s, "\n", 0);
    assert_int_equal(CSLCount(lines), 4);
    assert_string_equal(lines[1], "a.tif,a.geojson,200,0,0,39800,0,1,1,1,1,1,0,0,1,1,1");
    assert_string_equal(lines[2], "\"b,\"\"x\"\".tif\",b.geojson,0,0,0,40000,0,,,,,0,0,0,,,");
    assert_true(strncmp(lines[3], "TOTAL,,200,0,0,79800,0,", 23) == 0);
    CSLDestroy(lines);
    free(s);
    assert_int_equal(disopt_eval_report(r, 2, &total, &o, DISOPT_EVAL_TEXT, &s), DISOPT_OK);
    assert_non_null(strstr(s, "total over 2 pairs"));
    assert_non_null(strstr(s, "n/a"));
    free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* the tool as a child process                                                                */

static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "# %s\n", cmd);
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void test_tool_end_to_end(void **st) {
    (void)st;
    const char *tool = DISOPT_EVAL_TOOL;
    /* one pair, JSON to a file, --config accepted */
    assert_int_equal(sh("%s -q --config GDAL_CACHEMAX 64 -of JSON -o %s %s %s", tool, P("one.json"),
                        P("touch_pred.tif"), P("touch_truth.geojson")), 0);
    char *s = slurp(P("one.json"));
    json_object *root = json_tokener_parse(s), *tot, *b, *px, *v;
    free(s);
    assert_non_null(root);
    assert_true(json_object_object_get_ex(root, "total", &tot));
    assert_true(json_object_object_get_ex(tot, "buildings", &b));
    assert_true(json_object_object_get_ex(b, "tp", &v));
    assert_int_equal(json_object_get_int64(v), 1);
    assert_true(json_object_object_get_ex(b, "fn", &v));
    assert_int_equal(json_object_get_int64(v), 1);
    assert_true(json_object_object_get_ex(b, "f1", &v));
    NEAR(json_object_get_double(v), 2.0 / 3.0);
    assert_true(json_object_object_get_ex(tot, "pixels", &px));
    assert_true(json_object_object_get_ex(px, "tp", &v));
    assert_int_equal(json_object_get_int64(v), 600);
    json_object_put(root);

    /* a list, CSV to a file: F1 summed over pairs */
    assert_int_equal(sh("%s -q -of CSV -list %s -o %s", tool, P("pairs.csv"), P("pairs_out.csv")), 0);
    s = slurp(P("pairs_out.csv"));
    char **lines = CSLTokenizeString2(s, "\n", 0);
    free(s);
    assert_int_equal(CSLCount(lines), 4);
    char **last = CSLTokenizeString2(lines[3], ",", CSLT_ALLOWEMPTYTOKENS);
    assert_int_equal(CSLCount(last), 17);
    assert_string_equal(last[0], "TOTAL");
    assert_string_equal(last[11], "1");
    assert_string_equal(last[12], "1");
    assert_string_equal(last[13], "3");
    assert_true(fabs(CPLAtof(last[16]) - 1.0 / 3.0) < 1e-8); /* CSV prints %.9g */
    CSLDestroy(last);
    CSLDestroy(lines);

    /* text to stdout */
    assert_int_equal(sh("%s %s %s > %s", tool, P("perfect_pred.tif"), P("perfect_crs84.geojson"), P("out.txt")), 0);
    s = slurp(P("out.txt"));
    assert_non_null(strstr(s, "F1 1.000000"));
    free(s);

    /* exit codes: 0 help/version, 2 usage, 1 failure */
    assert_int_equal(sh("%s --help > /dev/null", tool), 0);
    assert_int_equal(sh("%s --version > /dev/null", tool), 0);
    assert_int_equal(sh("%s 2> /dev/null", tool), 2);
    assert_int_equal(sh("%s -of XML a b 2> /dev/null", tool), 2);
    assert_int_equal(sh("%s -threshold abc a b 2> /dev/null", tool), 2);
    assert_int_equal(sh("%s -connectivity 6 a b 2> /dev/null", tool), 2);
    assert_int_equal(sh("%s -bogus a b 2> /dev/null", tool), 2);
    assert_int_equal(sh("%s a b c 2> /dev/null", tool), 2);
    assert_int_equal(sh("%s -list %s a b 2> /dev/null", tool, P("pairs.csv")), 2);
    assert_int_equal(sh("%s %s %s 2> %s", tool, P("nope.tif"), P("perfect_utm.geojson"), P("err.txt")), 1);
    s = slurp(P("err.txt"));
    assert_non_null(strstr(s, "no such file"));
    free(s);
    assert_int_equal(sh("%s %s %s 2> /dev/null", tool, P("perfect_pred.tif"), P("utm32.tif")), 1);
    assert_int_equal(sh("%s -list %s 2> /dev/null", tool, P("empty.csv")), 1);
    /* -l / -where on a GeoPackage */
    assert_int_equal(sh("%s -q -of CSV -l big -where \"kind = 'house'\" -o %s %s %s", tool, P("gpkg.csv"),
                        P("gpkg_pred.tif"), P("truth_3857.gpkg")), 0);
    s = slurp(P("gpkg.csv"));
    assert_non_null(strstr(s, ",96,64,0,"));
    free(s);
    assert_int_equal(sh("%s -l nope %s %s 2> /dev/null", tool, P("gpkg_pred.tif"), P("truth_3857.gpkg")), 1);
    /* an empty (0-byte) file is no raster */
    FILE *z = fopen(P("zero.tif"), "w");
    fclose(z);
    assert_int_equal(sh("%s %s %s 2> /dev/null", tool, P("zero.tif"), P("perfect_utm.geojson")), 1);
    assert_int_equal(sh("%s %s %s 2> /dev/null", tool, P("perfect_pred.tif"), P("zero.tif")), 1);
    /* JSON on stdout, progress (none with -q) never mixed in */
    assert_int_equal(sh("%s -of json %s %s > %s", tool, P("perfect_pred.tif"), P("perfect_utm.geojson"), P("o.json")), 0);
    s = slurp(P("o.json"));
    root = json_tokener_parse(s);
    free(s);
    assert_non_null(root);
    assert_true(json_object_object_get_ex(root, "total", &tot));
    assert_true(json_object_object_get_ex(tot, "pairs", &v));
    assert_int_equal(json_object_get_int(v), 1);
    json_object_put(root);
    /* a bad pair anywhere in a list fails before any work: nothing is written */
    FILE *f = fopen(P("badpairs.csv"), "w");
    fprintf(f, "perfect_pred.tif,perfect_utm.geojson\nperfect_pred.tif,small.tif\n");
    fclose(f);
    assert_int_equal(sh("%s -q -list %s -o %s 2> /dev/null", tool, P("badpairs.csv"), P("never.json")), 1);
    assert_int_not_equal(access(P("never.json"), F_OK), 0);
}

/* ---------------------------------------------------------------------------------------- */

static int setup(void **st) {
    (void)st;
    const char *t = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/disopt_eval_XXXXXX", t);
    if (!mkdtemp(g_dir)) return -1;
    GDALAllRegister();
    return 0;
}

static int teardown(void **st) {
    (void)st;
    if (getenv("DISOPT_KEEP_TEST_FILES")) return 0;
    char **files = VSIReadDir(g_dir);
    for (int i = 0; files && files[i]; i++)
        if (strcmp(files[i], ".") && strcmp(files[i], "..")) VSIUnlink(P(files[i]));
    CSLDestroy(files);
    VSIRmdir(g_dir);
    GDALDestroyDriverManager();
    return 0;
}

int main(void) {
    /* the order matters: later tests reuse files written by earlier ones */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perfect_match_utm_and_crs84),
        cmocka_unit_test(test_shifted_building),
        cmocka_unit_test(test_touching_buildings_merged),
        cmocka_unit_test(test_courtyard),
        cmocka_unit_test(test_size_rules),
        cmocka_unit_test(test_rotated_grid),
        cmocka_unit_test(test_size_rules_other_grids),
        cmocka_unit_test(test_gpkg_web_mercator_layers),
        cmocka_unit_test(test_one_truth_two_tiles),
        cmocka_unit_test(test_clip_to_grid),
        cmocka_unit_test(test_nodata_and_threshold),
        cmocka_unit_test(test_empty_cases),
        cmocka_unit_test(test_connectivity),
        cmocka_unit_test(test_invalid_truth_polygon),
        cmocka_unit_test(test_multi_pair_aggregation),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_random_rectangles),
        cmocka_unit_test(test_real_sar_blobs),
        cmocka_unit_test(test_report_formats),
        cmocka_unit_test(test_tool_end_to_end),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
