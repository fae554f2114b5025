/*
 * eval.c - pixel and SpaceNet building metrics of a prediction raster against ground truth
 * (contract and definitions: include/disopt_eval.h; user page: tools/doc/gdal_disopt_eval.md).
 *
 * Per pair, in memory: one state byte per pixel for the prediction and one for the truth
 * (0 background, 1 building, 2 ignored), Int32 component labels for the polygonizing step, and
 * for vector truth an Int32 raster of burned polygon ids: about 10 bytes per pixel at the peak.
 *
 * Polygons: connected components are labelled here (union-find, 4- or 8-connected), each kept
 * component gets its own label value, and GDALPolygonize turns the label raster (its own mask:
 * label 0 is background) into exactly one polygon per component, georeferenced with the
 * prediction's geotransform. Pixel counts per component come from the labelling, so the size rule
 * and the "wholly ignored" rule need no geometry.
 */
#include "disopt_eval.h"
#include "internal.h"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <gdal_alg.h>
#include <json-c/json.h>
#include <math.h>
#include <ogr_api.h>
#include <ogr_srs_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { ST_BG = 0, ST_BLD = 1, ST_IGN = 2 };

/* IoUs closer than this are equal (for ties and for the threshold): polygon areas in floating point,
 * after reprojection, miss exact ratios such as 1/2 by ~1e-12..1e-10; distinct IoUs of real
 * buildings differ by far more. */
#define DP_EVAL_IOU_EPS 1e-9

/* ------------------------------------------------------------------------------------------ */
/* options, counts, metrics                                                                     */

void disopt_eval_options_init(disopt_eval_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->threshold = 0.5;
    o->iou_threshold = 0.5;
    o->min_area_m2 = 20.0;
    o->min_pixels = -1; /* auto: 80 where the grid has no projected CRS */
    o->connectivity = 4;
}

static disopt_status check_options(const disopt_eval_options *o) {
    if (!o) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "eval: NULL options");
    if (!isfinite(o->threshold))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "threshold must be a finite number");
    if (!(o->iou_threshold > 0.0 && o->iou_threshold <= 1.0))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "IoU threshold %g: must be in (0, 1]", o->iou_threshold);
    if (!(o->min_area_m2 >= 0.0) || !isfinite(o->min_area_m2))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "minimum area %g: must be >= 0", o->min_area_m2);
    if (o->min_pixels < -1)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "minimum pixel count %d: must be >= 0 (or -1: auto)",
                        o->min_pixels);
    if (o->connectivity != 4 && o->connectivity != 8)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "connectivity %d: must be 4 or 8", o->connectivity);
    return DISOPT_OK;
}

void disopt_eval_add(disopt_eval_counts *t, const disopt_eval_counts *c) {
    if (!t || !c) return;
    t->tp += c->tp;
    t->fp += c->fp;
    t->fn += c->fn;
    t->tn += c->tn;
    t->ignored += c->ignored;
    t->bld_tp += c->bld_tp;
    t->bld_fp += c->bld_fp;
    t->bld_fn += c->bld_fn;
    t->pred_polygons += c->pred_polygons;
    t->truth_polygons += c->truth_polygons;
    t->pred_dropped += c->pred_dropped;
    t->truth_dropped += c->truth_dropped;
    t->pairs += c->pairs;
}

static double ratio(int64_t num, int64_t den) { return den > 0 ? (double)num / (double)den : NAN; }

void disopt_eval_metrics_of(const disopt_eval_counts *c, disopt_eval_metrics *m) {
    if (!c || !m) return;
    m->dice = ratio(2 * c->tp, 2 * c->tp + c->fp + c->fn);
    m->iou = ratio(c->tp, c->tp + c->fp + c->fn);
    m->precision = ratio(c->tp, c->tp + c->fp);
    m->recall = ratio(c->tp, c->tp + c->fn);
    m->bld_precision = ratio(c->bld_tp, c->bld_tp + c->bld_fp);
    m->bld_recall = ratio(c->bld_tp, c->bld_tp + c->bld_fn);
    m->bld_f1 = ratio(2 * c->bld_tp, 2 * c->bld_tp + c->bld_fp + c->bld_fn);
}

/* ------------------------------------------------------------------------------------------ */
/* opening and checking a pair                                                                  */

static disopt_status gdal_fail(disopt_status s, const char *fmt, const char *arg) {
    const char *m = CPLGetLastErrorMsg();
    char head[512];
    snprintf(head, sizeof head, fmt, arg);
    return dp_error(s, "%s: %s", head, (m && *m) ? m : "GDAL reported a failure");
}

typedef struct ev_ctx {
    GDALDatasetH pred;
    GDALDatasetH truth;   /* raster or vector */
    int truth_is_raster;
    int W, H;
    double gt[6];
    int has_gt;
    OGRSpatialReferenceH srs; /* prediction CRS, traditional GIS axis order; NULL if none */
    double lin_m;             /* metres per CRS unit if projected, else 0 */
    double px_area;           /* |det| of the geotransform (CRS units^2 per pixel) */
    double px_area_m2;        /* m^2 per pixel, 0 if the CRS is not projected */
} ev_ctx;

static void ctx_close(ev_ctx *c) {
    if (c->pred) GDALClose(c->pred);
    if (c->truth) GDALClose(c->truth);
    if (c->srs) OSRDestroySpatialReference(c->srs);
    memset(c, 0, sizeof *c);
}

static GDALDatasetH open_quiet(const char *path, unsigned flags) {
    CPLPushErrorHandler(CPLQuietErrorHandler);
    CPLErrorReset();
    GDALDatasetH ds = GDALOpenEx(path, flags | GDAL_OF_READONLY, NULL, NULL, NULL);
    CPLPopErrorHandler();
    return ds;
}

static disopt_status open_failure(const char *role, const char *path) {
    struct stat st;
    if (strncmp(path, "/vsi", 4) != 0 && strchr(path, ':') == NULL && stat(path, &st) != 0)
        return dp_error(DISOPT_ERR_IO, "%s '%s': no such file", role, path);
    const char *m = CPLGetLastErrorMsg();
    return dp_error(DISOPT_ERR_IO, "%s '%s': GDAL cannot open it%s%s", role, path, (m && *m) ? ": " : "",
                    (m && *m) ? m : "");
}

static OGRSpatialReferenceH srs_of_wkt(const char *wkt) {
    if (!wkt || !*wkt) return NULL;
    OGRSpatialReferenceH s = OSRNewSpatialReference(NULL);
    if (!s) return NULL;
    char *p = (char *)wkt;
    if (OSRImportFromWkt(s, &p) != OGRERR_NONE) {
        OSRDestroySpatialReference(s);
        return NULL;
    }
    OSRSetAxisMappingStrategy(s, OAMS_TRADITIONAL_GIS_ORDER);
    return s;
}

static int gt_equal(const double *a, const double *b) {
    double scale = fabs(a[1]) + fabs(a[2]) + fabs(a[4]) + fabs(a[5]);
    double tol = 1e-6 * (scale > 0 ? scale : 1.0);
    for (int i = 0; i < 6; i++)
        if (fabs(a[i] - b[i]) > tol) return 0;
    return 1;
}

static int layer_selected(const disopt_eval_options *o, OGRLayerH layer) {
    if (!o->layers || !o->layers[0]) return 1;
    for (int k = 0; o->layers[k]; k++)
        if (strcmp(o->layers[k], OGR_L_GetName(layer)) == 0) return 1;
    return 0;
}

static disopt_status ctx_open(const char *pred, const char *truth, const disopt_eval_options *o, ev_ctx *c) {
    memset(c, 0, sizeof *c);
    if (!pred || !truth) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "eval: NULL file name");
    c->pred = open_quiet(pred, GDAL_OF_RASTER);
    if (!c->pred) return open_failure("prediction", pred);
    c->W = GDALGetRasterXSize(c->pred);
    c->H = GDALGetRasterYSize(c->pred);
    if (GDALGetRasterCount(c->pred) < 1 || c->W < 1 || c->H < 1)
        return dp_error(DISOPT_ERR_INPUT, "prediction '%s': no raster band or an empty raster", pred);
    GDALDataType pdt = GDALGetRasterDataType(GDALGetRasterBand(c->pred, 1));
    if (GDALDataTypeIsComplex(pdt))
        return dp_error(DISOPT_ERR_INPUT, "prediction '%s': band 1 is complex (%s); a mask or probability is needed",
                        pred, GDALGetDataTypeName(pdt));
    if ((int64_t)c->W * c->H > INT32_MAX)
        return dp_error(DISOPT_ERR_UNSUPPORTED,
                        "prediction '%s': %d x %d pixels is more than 2^31; score it in tiles (-list)", pred, c->W,
                        c->H);
    c->has_gt = GDALGetGeoTransform(c->pred, c->gt) == CE_None;
    if (!c->has_gt) {
        const double id[6] = {0, 1, 0, 0, 0, 1};
        memcpy(c->gt, id, sizeof id);
    }
    c->px_area = fabs(c->gt[1] * c->gt[5] - c->gt[2] * c->gt[4]);
    if (!(c->px_area > 0))
        return dp_error(DISOPT_ERR_INPUT, "prediction '%s': degenerate geotransform (pixel area 0)", pred);
    c->srs = srs_of_wkt(GDALGetProjectionRef(c->pred));
    if (c->srs && OSRIsProjected(c->srs)) {
        c->lin_m = OSRGetLinearUnits(c->srs, NULL);
        if (c->lin_m > 0) c->px_area_m2 = c->px_area * c->lin_m * c->lin_m;
    }

    c->truth = open_quiet(truth, GDAL_OF_RASTER | GDAL_OF_VECTOR);
    if (!c->truth) return open_failure("truth", truth);
    if (GDALGetRasterCount(c->truth) >= 1) {
        c->truth_is_raster = 1;
        int tw = GDALGetRasterXSize(c->truth), th = GDALGetRasterYSize(c->truth);
        if (tw != c->W || th != c->H)
            return dp_error(DISOPT_ERR_INPUT, "grids differ: prediction '%s' is %d x %d pixels, truth '%s' is %d x %d",
                            pred, c->W, c->H, truth, tw, th);
        double tgt[6];
        int t_has = GDALGetGeoTransform(c->truth, tgt) == CE_None;
        if (t_has != c->has_gt || (t_has && !gt_equal(c->gt, tgt)))
            return dp_error(DISOPT_ERR_INPUT,
                            "grids differ: prediction '%s' and truth '%s' have different geotransforms "
                            "(%.10g, %.10g, %.10g, %.10g, %.10g, %.10g) vs (%.10g, %.10g, %.10g, %.10g, %.10g, %.10g)",
                            pred, truth, c->gt[0], c->gt[1], c->gt[2], c->gt[3], c->gt[4], c->gt[5],
                            t_has ? tgt[0] : 0, t_has ? tgt[1] : 1, t_has ? tgt[2] : 0, t_has ? tgt[3] : 0,
                            t_has ? tgt[4] : 0, t_has ? tgt[5] : 1);
        OGRSpatialReferenceH ts = srs_of_wkt(GDALGetProjectionRef(c->truth));
        int one_missing = !ts != !c->srs;
        int same = (!ts && !c->srs) || (ts && c->srs && OSRIsSame(ts, c->srs));
        if (ts) OSRDestroySpatialReference(ts);
        if (!same)
            return dp_error(DISOPT_ERR_INPUT, "grids differ: prediction '%s' and truth '%s' have different CRS%s", pred,
                            truth, one_missing ? " (one of them has none)" : "");
        if ((o->layers && o->layers[0]) || (o->where && *o->where))
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "truth '%s' is a raster: layers and where filters are for "
                            "vector truth", truth);
        GDALDataType tdt = GDALGetRasterDataType(GDALGetRasterBand(c->truth, 1));
        if (GDALDataTypeIsComplex(tdt))
            return dp_error(DISOPT_ERR_INPUT, "truth '%s': band 1 is complex", truth);
    } else if (GDALDatasetGetLayerCount(c->truth) >= 1) {
        c->truth_is_raster = 0;
        if (!c->has_gt)
            return dp_error(DISOPT_ERR_INPUT,
                            "prediction '%s' has no geotransform: vector truth '%s' cannot be placed on it", pred,
                            truth);
        for (int k = 0; o->layers && o->layers[k]; k++)
            if (!GDALDatasetGetLayerByName(c->truth, o->layers[k]))
                return dp_error(DISOPT_ERR_INPUT, "truth '%s' has no layer '%s'", truth, o->layers[k]);
        for (int l = 0; l < GDALDatasetGetLayerCount(c->truth); l++) {
            OGRLayerH layer = GDALDatasetGetLayer(c->truth, l);
            if (!layer_selected(o, layer)) continue;
            if (OGR_L_GetSpatialRef(layer) && !c->srs)
                return dp_error(DISOPT_ERR_INPUT,
                                "prediction '%s' has no CRS: vector truth '%s' (layer '%s' has one) cannot be "
                                "reprojected onto it",
                                pred, truth, OGR_L_GetName(layer));
            if (o->where && *o->where) {
                /* some drivers (GPKG: SQLite) only complain when reading: read one feature */
                CPLPushErrorHandler(CPLQuietErrorHandler);
                CPLErrorReset();
                OGRErr e = OGR_L_SetAttributeFilter(layer, o->where);
                if (e == OGRERR_NONE) {
                    OGR_L_ResetReading(layer);
                    OGRFeatureH f = OGR_L_GetNextFeature(layer);
                    if (f) OGR_F_Destroy(f);
                    if (CPLGetLastErrorType() >= CE_Failure) e = OGRERR_FAILURE;
                }
                CPLPopErrorHandler();
                if (e != OGRERR_NONE)
                    return gdal_fail(DISOPT_ERR_INVALID_ARGUMENT, "where filter rejected by layer '%s'",
                                     OGR_L_GetName(layer));
                OGR_L_SetAttributeFilter(layer, NULL);
            }
        }
    } else {
        return dp_error(DISOPT_ERR_INPUT, "truth '%s': neither a raster band nor a vector layer", truth);
    }
    return DISOPT_OK;
}

disopt_status disopt_eval_check_pair(const char *prediction, const char *truth, const disopt_eval_options *o) {
    disopt_status s = check_options(o);
    if (s != DISOPT_OK) return s;
    ev_ctx c;
    s = ctx_open(prediction, truth, o, &c);
    ctx_close(&c);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* reading rasters into state bytes                                                             */

#define ROWS_PER_READ 64

/* is_pred: building = value > threshold for float bands, value != 0 otherwise; truth: value != 0 */
static disopt_status read_state(GDALDatasetH ds, const char *role, int W, int H, int is_pred, double threshold,
                                unsigned char *state) {
    GDALRasterBandH b = GDALGetRasterBand(ds, 1);
    int is_float = GDALDataTypeIsFloating(GDALGetRasterDataType(b));
    GDALRasterBandH mb = GDALGetMaskBand(b);
    int all_valid = (GDALGetMaskFlags(b) & GMF_ALL_VALID) != 0;
    int rows = H < ROWS_PER_READ ? H : ROWS_PER_READ;
    double *v = malloc((size_t)W * (size_t)rows * sizeof *v);
    unsigned char *m = all_valid ? NULL : malloc((size_t)W * (size_t)rows);
    if (!v || (!all_valid && !m)) {
        free(v);
        free(m);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory reading the %s", role);
    }
    disopt_status s = DISOPT_OK;
    for (int y0 = 0; y0 < H && s == DISOPT_OK; y0 += rows) {
        int n = H - y0 < rows ? H - y0 : rows;
        CPLErrorReset();
        if (GDALRasterIO(b, GF_Read, 0, y0, W, n, v, W, n, GDT_Float64, 0, 0) != CE_None ||
            (m && GDALRasterIO(mb, GF_Read, 0, y0, W, n, m, W, n, GDT_Byte, 0, 0) != CE_None)) {
            s = gdal_fail(DISOPT_ERR_IO, "reading the %s", role);
            break;
        }
        size_t npx = (size_t)W * (size_t)n;
        unsigned char *o = state + (size_t)y0 * (size_t)W;
        for (size_t i = 0; i < npx; i++) {
            double x = v[i];
            if ((m && m[i] == 0) || isnan(x)) o[i] = ST_IGN;
            else if (is_pred && is_float) o[i] = x > threshold ? ST_BLD : ST_BG;
            else o[i] = x != 0.0 ? ST_BLD : ST_BG;
        }
    }
    free(v);
    free(m);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* polygons                                                                                     */

typedef struct ev_poly {
    OGRGeometryH g;
    OGREnvelope e;
    double area; /* OGR_G_Area, CRS units^2 */
    int order;   /* position in scoring order (ties go to the lower) */
    int matched;
    int valid;   /* geometry checked/repaired (predictions are checked only when first intersected) */
} ev_poly;

typedef struct ev_polys {
    ev_poly *p;
    int n, cap;
} ev_polys;

static void polys_free(ev_polys *ps) {
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].g) OGR_G_DestroyGeometry(ps->p[i].g);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

/* Takes ownership of g. */
static disopt_status polys_push(ev_polys *ps, OGRGeometryH g) {
    if (ps->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 64;
        ev_poly *np = realloc(ps->p, (size_t)cap * sizeof *np);
        if (!np) {
            OGR_G_DestroyGeometry(g);
            return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory for polygons");
        }
        ps->p = np;
        ps->cap = cap;
    }
    ev_poly *p = &ps->p[ps->n];
    memset(p, 0, sizeof *p);
    p->g = g;
    OGR_G_GetEnvelope(g, &p->e);
    p->area = OGR_G_Area(g);
    p->order = ps->n++;
    p->valid = 1;
    return DISOPT_OK;
}

/* The polygonal part of g as a (Multi)Polygon; consumes g. NULL when nothing polygonal is left. */
static OGRGeometryH polygonal(OGRGeometryH g) {
    if (!g) return NULL;
    OGRwkbGeometryType t = wkbFlatten(OGR_G_GetGeometryType(g));
    if (t == wkbPolygon || t == wkbMultiPolygon) return g;
    if (t == wkbCurvePolygon || t == wkbMultiSurface) {
        OGRGeometryH lin = OGR_G_GetLinearGeometry(g, 0, NULL);
        OGR_G_DestroyGeometry(g);
        return polygonal(lin);
    }
    if (t == wkbGeometryCollection) {
        OGRGeometryH mp = OGR_G_CreateGeometry(wkbMultiPolygon);
        for (int i = 0; mp && i < OGR_G_GetGeometryCount(g); i++) {
            OGRGeometryH part = OGR_G_Clone(OGR_G_GetGeometryRef(g, i));
            part = polygonal(part);
            if (!part) continue;
            if (wkbFlatten(OGR_G_GetGeometryType(part)) == wkbPolygon) {
                OGR_G_AddGeometryDirectly(mp, part);
            } else {
                for (int k = 0; k < OGR_G_GetGeometryCount(part); k++)
                    OGR_G_AddGeometry(mp, OGR_G_GetGeometryRef(part, k));
                OGR_G_DestroyGeometry(part);
            }
        }
        OGR_G_DestroyGeometry(g);
        if (mp && OGR_G_GetGeometryCount(mp) == 0) {
            OGR_G_DestroyGeometry(mp);
            return NULL;
        }
        return mp;
    }
    OGR_G_DestroyGeometry(g);
    return NULL;
}

/* *g (consumed) becomes a valid polygonal geometry, or NULL when nothing polygonal is left (points,
 * lines, zero-area rings). Fails only when GEOS cannot repair an invalid polygon. */
static disopt_status make_valid(OGRGeometryH *g) {
    *g = polygonal(*g);
    if (!*g) return DISOPT_OK;
    CPLPushErrorHandler(CPLQuietErrorHandler);
    CPLErrorReset();
    int ok = OGR_G_IsValid(*g);
    disopt_status s = DISOPT_OK;
    if (!ok) {
        OGRGeometryH fixed = OGR_G_MakeValid(*g);
        OGR_G_DestroyGeometry(*g);
        *g = NULL;
        if (!fixed) s = gdal_fail(DISOPT_ERR_INPUT, "%s", "an invalid polygon could not be repaired (OGR_G_MakeValid)");
        else *g = polygonal(fixed);
    }
    CPLPopErrorHandler();
    return s;
}

/* Connected components of (state == ST_BLD), row-major first-pixel order, labels 1..*ncomp (0 =
 * background). npx[l] and nign[l] (pixels where other[] == ST_IGN) are filled for l in 1..ncomp. */
static disopt_status label_components(const unsigned char *state, const unsigned char *other, int W, int H,
                                      int conn, int32_t *lab, int32_t *ncomp, int64_t **npx_out,
                                      int64_t **nign_out) {
    size_t cap = 1024, n = 1; /* provisional label 0 unused */
    int32_t *parent = malloc(cap * sizeof *parent);
    if (!parent) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory labelling components");
    parent[0] = 0;
#define FIND(x)                                                  \
    do {                                                         \
        while (parent[x] != x) x = parent[x] = parent[parent[x]]; \
    } while (0)
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * (size_t)W + (size_t)x;
            if (state[i] != ST_BLD) {
                lab[i] = 0;
                continue;
            }
            int32_t nb[4];
            int k = 0;
            if (x > 0 && lab[i - 1]) nb[k++] = lab[i - 1];
            if (y > 0) {
                size_t up = i - (size_t)W;
                if (lab[up]) nb[k++] = lab[up];
                if (conn == 8) {
                    if (x > 0 && lab[up - 1]) nb[k++] = lab[up - 1];
                    if (x + 1 < W && lab[up + 1]) nb[k++] = lab[up + 1];
                }
            }
            if (k == 0) {
                if (n == cap) {
                    cap *= 2;
                    int32_t *np = realloc(parent, cap * sizeof *np);
                    if (!np) {
                        free(parent);
                        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory labelling components");
                    }
                    parent = np;
                }
                parent[n] = (int32_t)n;
                lab[i] = (int32_t)n++;
                continue;
            }
            int32_t r = nb[0];
            FIND(r);
            for (int j = 1; j < k; j++) {
                int32_t q = nb[j];
                FIND(q);
                if (q < r) {
                    parent[r] = q;
                    r = q;
                } else if (q > r) {
                    parent[q] = r;
                }
            }
            lab[i] = r;
        }
    }
    /* final labels in order of first pixel: a root's first pixel precedes every other pixel of its
     * set (roots are the smallest provisional label, assigned in scan order) */
    int32_t *final = calloc(n, sizeof *final);
    if (!final) {
        free(parent);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory labelling components");
    }
    int32_t nc = 0;
    for (size_t l = 1; l < n; l++) {
        int32_t r = (int32_t)l;
        FIND(r);
        if (r == (int32_t)l) final[l] = ++nc;
    }
    for (size_t l = 1; l < n; l++) {
        int32_t r = (int32_t)l;
        FIND(r);
        final[l] = final[r];
    }
#undef FIND
    int64_t *npx = calloc((size_t)nc + 1, sizeof *npx), *nign = calloc((size_t)nc + 1, sizeof *nign);
    if (!npx || !nign) {
        free(parent);
        free(final);
        free(npx);
        free(nign);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory labelling components");
    }
    size_t total = (size_t)W * (size_t)H;
    for (size_t i = 0; i < total; i++) {
        if (!lab[i]) continue;
        int32_t l = final[lab[i]];
        lab[i] = l;
        npx[l]++;
        if (other[i] == ST_IGN) nign[l]++;
    }
    free(parent);
    free(final);
    *ncomp = nc;
    *npx_out = npx;
    *nign_out = nign;
    return DISOPT_OK;
}

static GDALDatasetH mem_raster(const ev_ctx *c, GDALDataType dt) {
    GDALDriverH drv = GDALGetDriverByName("MEM");
    if (!drv) return NULL;
    GDALDatasetH ds = GDALCreate(drv, "", c->W, c->H, 1, dt, NULL);
    if (!ds) return NULL;
    double gt[6];
    memcpy(gt, c->gt, sizeof gt);
    if (GDALSetGeoTransform(ds, gt) != CE_None) {
        GDALClose(ds);
        return NULL;
    }
    return ds;
}

/* Polygonizes the kept components of lab (keep[l] != 0) into ps, in label order. lab is modified
 * (dropped labels become 0). */
static disopt_status polygonize_components(const ev_ctx *c, int conn, int32_t *lab, int32_t nc,
                                           const unsigned char *keep, const int64_t *npx, ev_polys *ps) {
    size_t total = (size_t)c->W * (size_t)c->H;
    int any = 0;
    for (size_t i = 0; i < total; i++) {
        if (lab[i] && !keep[lab[i]]) lab[i] = 0;
        any |= lab[i] != 0;
    }
    if (!any) return DISOPT_OK;
    disopt_status s = DISOPT_OK;
    GDALDatasetH rds = mem_raster(c, GDT_Int32);
    GDALDriverH vdrv = GDALGetDriverByName("Memory");
    GDALDatasetH vds = vdrv ? GDALCreate(vdrv, "", 0, 0, 0, GDT_Unknown, NULL) : NULL;
    OGRGeometryH *byl = calloc((size_t)nc + 1, sizeof *byl);
    OGRLayerH layer = NULL;
    if (!rds || !vds || !byl) {
        s = gdal_fail(DISOPT_ERR_IO, "%s", "creating in-memory datasets for polygonizing");
        goto done;
    }
    GDALRasterBandH band = GDALGetRasterBand(rds, 1);
    CPLErrorReset();
    if (GDALRasterIO(band, GF_Write, 0, 0, c->W, c->H, lab, c->W, c->H, GDT_Int32, 0, 0) != CE_None) {
        s = gdal_fail(DISOPT_ERR_IO, "%s", "writing the label raster");
        goto done;
    }
    layer = GDALDatasetCreateLayer(vds, "polygons", NULL, wkbPolygon, NULL);
    OGRFieldDefnH fd = OGR_Fld_Create("label", OFTInteger);
    if (!layer || !fd || OGR_L_CreateField(layer, fd, TRUE) != OGRERR_NONE) {
        if (fd) OGR_Fld_Destroy(fd);
        s = gdal_fail(DISOPT_ERR_IO, "%s", "creating the polygon layer");
        goto done;
    }
    OGR_Fld_Destroy(fd);
    char **popt = conn == 8 ? CSLSetNameValue(NULL, "8CONNECTED", "8") : NULL;
    CPLErrorReset();
    /* the label band is its own mask: label 0 (background, dropped) reads as mask 0 */
    CPLErr err = GDALPolygonize(band, band, layer, 0, popt, NULL, NULL);
    CSLDestroy(popt);
    if (err != CE_None) {
        s = gdal_fail(DISOPT_ERR_IO, "%s", "GDALPolygonize");
        goto done;
    }
    OGR_L_ResetReading(layer);
    OGRFeatureH f;
    while ((f = OGR_L_GetNextFeature(layer)) != NULL) {
        int l = OGR_F_GetFieldAsInteger(f, 0);
        OGRGeometryH g = OGR_F_StealGeometry(f);
        OGR_F_Destroy(f);
        if (l < 1 || l > nc || !g) {
            if (g) OGR_G_DestroyGeometry(g);
            continue;
        }
        if (byl[l]) { /* never expected (one polygon per component); merged to be safe */
            OGRGeometryH u = OGR_G_Union(byl[l], g);
            OGR_G_DestroyGeometry(g);
            if (!u) {
                s = gdal_fail(DISOPT_ERR_INTERNAL, "%s", "merging polygons of one component");
                goto done;
            }
            OGR_G_DestroyGeometry(byl[l]);
            byl[l] = u;
        } else {
            byl[l] = g;
        }
    }
    for (int32_t l = 1; l <= nc; l++) {
        if (!byl[l]) continue;
        OGRGeometryH g = byl[l];
        byl[l] = NULL;
        s = polys_push(ps, g);
        if (s != DISOPT_OK) goto done;
        /* 4-connected components polygonize into valid polygons (no ring can touch itself where only
         * diagonal pixels meet; checked with GEOS on 11458 polygons of a noise mask: none invalid);
         * 8-connected ones often touch themselves (40 of 392 there) and are checked and repaired when
         * first intersected. The area is exact from the pixel count. */
        ps->p[ps->n - 1].valid = conn == 4;
        ps->p[ps->n - 1].area = (double)npx[l] * c->px_area;
    }
done:
    if (byl) {
        for (int32_t l = 0; l <= nc; l++)
            if (byl[l]) OGR_G_DestroyGeometry(byl[l]);
        free(byl);
    }
    if (vds) GDALClose(vds);
    if (rds) GDALClose(rds);
    return s;
}

/* The pixel-count rule: as given, or (auto, -1) 80 px on grids without a projected CRS and none on
 * projected grids, where the area rule (20 m^2) holds alone: 80 px = 20 m^2 at SpaceNet 6's 0.5 m. */
#define DP_EVAL_AUTO_MIN_PIXELS 80
static int64_t min_pixels_of(const ev_ctx *c, const disopt_eval_options *o) {
    if (o->min_pixels >= 0) return o->min_pixels;
    return c->px_area_m2 > 0 ? 0 : DP_EVAL_AUTO_MIN_PIXELS;
}

/* Connected components of one mask after the size rule and the "wholly ignored" rule. */
typedef struct ev_comps {
    int32_t *lab;        /* W * H labels, 0 = background; dropped components keep their label */
    int32_t n;           /* labels 1..n */
    int64_t *npx;        /* pixels per label */
    unsigned char *keep; /* per label: scored */
    int64_t kept;
} ev_comps;

static void comps_free(ev_comps *k) {
    free(k->lab);
    free(k->npx);
    free(k->keep);
    memset(k, 0, sizeof *k);
}

static disopt_status components(const ev_ctx *c, const disopt_eval_options *o, const unsigned char *state,
                                const unsigned char *other, ev_comps *k, int64_t *dropped) {
    memset(k, 0, sizeof *k);
    size_t total = (size_t)c->W * (size_t)c->H;
    k->lab = malloc(total * sizeof *k->lab);
    if (!k->lab) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory for %zu labels", total);
    int64_t *nign = NULL;
    disopt_status s = label_components(state, other, c->W, c->H, o->connectivity, k->lab, &k->n, &k->npx, &nign);
    if (s == DISOPT_OK) {
        k->keep = calloc((size_t)k->n + 1, 1);
        if (!k->keep) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory");
    }
    if (s == DISOPT_OK) {
        int64_t min_px = min_pixels_of(c, o);
        for (int32_t l = 1; l <= k->n; l++) {
            int64_t n = k->npx[l];
            int small = n < min_px || (c->px_area_m2 > 0 && (double)n * c->px_area_m2 < o->min_area_m2);
            int ignored = nign[l] == n;
            k->keep[l] = !small && !ignored;
            if (k->keep[l]) k->kept++;
            else (*dropped)++;
        }
    }
    free(nign);
    if (s != DISOPT_OK) comps_free(k);
    return s;
}

/* Matching against a truth raster, from pixel counts. Both sides are unions of whole pixels (what
 * GDALPolygonize would trace is exactly the pixel cells of a component), so |P n T| is the number of
 * pixels in both times the pixel area and the IoU from counts equals the polygon IoU; no polygons are
 * needed. Same order and tie rules as match(): predictions by label (raster order), ties to the lower
 * truth label (also raster order). */
typedef struct ev_pair {
    uint64_t key; /* pred label << 32 | truth label; 0 = empty slot */
    int64_t n;
} ev_pair;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int pair_add(ev_pair **tab, size_t *cap, size_t *used, uint64_t key, int64_t n) {
    if (2 * (*used + 1) > *cap) {
        size_t ncap = *cap ? 2 * *cap : 4096;
        ev_pair *nt = calloc(ncap, sizeof *nt);
        if (!nt) return 0;
        for (size_t i = 0; i < *cap; i++) {
            if (!(*tab)[i].key) continue;
            size_t h = mix64((*tab)[i].key) & (ncap - 1);
            while (nt[h].key) h = (h + 1) & (ncap - 1);
            nt[h] = (*tab)[i];
        }
        free(*tab);
        *tab = nt;
        *cap = ncap;
    }
    size_t h = mix64(key) & (*cap - 1);
    while ((*tab)[h].key && (*tab)[h].key != key) h = (h + 1) & (*cap - 1);
    if (!(*tab)[h].key) {
        (*tab)[h].key = key;
        (*used)++;
    }
    (*tab)[h].n += n;
    return 1;
}

static int cmp_pair(const void *a, const void *b) {
    uint64_t x = ((const ev_pair *)a)->key, y = ((const ev_pair *)b)->key;
    return x < y ? -1 : x > y;
}

static disopt_status match_pixels(const disopt_eval_options *o, size_t total, const ev_comps *pk, const ev_comps *tk,
                                  disopt_eval_counts *out) {
    ev_pair *tab = NULL;
    size_t cap = 0, used = 0;
    uint64_t run_key = 0;
    int64_t run_n = 0;
    for (size_t i = 0; i <= total; i++) {
        uint64_t key = 0;
        if (i < total) {
            int32_t p = pk->lab[i], t = tk->lab[i];
            if (p && t && pk->keep[p] && tk->keep[t]) key = (uint64_t)(uint32_t)p << 32 | (uint32_t)t;
        }
        if (key == run_key) {
            run_n += key != 0;
            continue;
        }
        if (run_key && !pair_add(&tab, &cap, &used, run_key, run_n)) {
            free(tab);
            return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory for component overlaps");
        }
        run_key = key;
        run_n = key != 0;
    }
    /* compact and sort: all pairs of one prediction become contiguous, truth labels ascending */
    size_t m = 0;
    for (size_t i = 0; i < cap; i++)
        if (tab[i].key) tab[m++] = tab[i];
    if (m > 1) qsort(tab, m, sizeof *tab, cmp_pair);
    unsigned char *used_t = calloc((size_t)tk->n + 1, 1);
    if (!used_t) {
        free(tab);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory");
    }
    size_t j = 0;
    for (int32_t p = 1; p <= pk->n; p++) {
        if (!pk->keep[p]) continue;
        while (j < m && (tab[j].key >> 32) < (uint64_t)p) j++;
        int32_t best = 0;
        double best_iou = 0;
        for (; j < m && (tab[j].key >> 32) == (uint64_t)p; j++) {
            int32_t t = (int32_t)(tab[j].key & 0xffffffffu);
            if (used_t[t]) continue;
            double iou = (double)tab[j].n / (double)(pk->npx[p] + tk->npx[t] - tab[j].n);
            if (!best || iou > best_iou + DP_EVAL_IOU_EPS) { /* ascending t: ties keep the lower */
                best = t;
                best_iou = iou;
            }
        }
        if (best && best_iou >= o->iou_threshold - DP_EVAL_IOU_EPS) {
            used_t[best] = 1;
            out->bld_tp++;
        } else {
            out->bld_fp++;
        }
    }
    for (int32_t t = 1; t <= tk->n; t++)
        if (tk->keep[t] && !used_t[t]) out->bld_fn++;
    out->pred_polygons = pk->kept;
    out->truth_polygons = tk->kept;
    free(used_t);
    free(tab);
    return DISOPT_OK;
}

/* Truth polygons from a vector file: reprojected, clipped to the footprint, size-filtered, then
 * rasterized (pixel-centre rule) into tstate; polygons whose pixels are all ignored in the
 * prediction are dropped from scoring (their pixels stay truth: they are ignored anyway). */
static disopt_status truth_from_vector(const ev_ctx *c, const disopt_eval_options *o, const char *path,
                                       const unsigned char *pstate, unsigned char *tstate, ev_polys *ps,
                                       int64_t *dropped) {
    disopt_status s = DISOPT_OK;
    ev_polys all = {0};
    OGRGeometryH foot = OGR_G_CreateGeometry(wkbPolygon), ring = OGR_G_CreateGeometry(wkbLinearRing);
    if (!foot || !ring) {
        if (foot) OGR_G_DestroyGeometry(foot);
        if (ring) OGR_G_DestroyGeometry(ring);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory");
    }
    const double px[5] = {0, c->W, c->W, 0, 0}, py[5] = {0, 0, c->H, c->H, 0};
    for (int k = 0; k < 5; k++)
        OGR_G_AddPoint_2D(ring, c->gt[0] + px[k] * c->gt[1] + py[k] * c->gt[2],
                          c->gt[3] + px[k] * c->gt[4] + py[k] * c->gt[5]);
    if (OGR_G_AddGeometryDirectly(foot, ring) != OGRERR_NONE) {
        OGR_G_DestroyGeometry(foot);
        return dp_error(DISOPT_ERR_INTERNAL, "eval: cannot build the grid footprint");
    }
    OGREnvelope fe;
    OGR_G_GetEnvelope(foot, &fe);
    int axis_aligned = c->gt[2] == 0 && c->gt[4] == 0;

    int nl = GDALDatasetGetLayerCount(c->truth);
    for (int li = 0; li < nl && s == DISOPT_OK; li++) {
        OGRLayerH layer = GDALDatasetGetLayer(c->truth, li);
        if (!layer_selected(o, layer)) continue;
        if (o->where && *o->where && OGR_L_SetAttributeFilter(layer, o->where) != OGRERR_NONE) {
            s = gdal_fail(DISOPT_ERR_INVALID_ARGUMENT, "where filter rejected by layer '%s'", OGR_L_GetName(layer));
            break;
        }
        OGRSpatialReferenceH ls = OGR_L_GetSpatialRef(layer), lsc = NULL;
        OGRCoordinateTransformationH ct = NULL;
        double layer_lin = 0;
        if (ls) {
            lsc = OSRClone(ls);
            OSRSetAxisMappingStrategy(lsc, OAMS_TRADITIONAL_GIS_ORDER);
            if (OSRIsProjected(lsc)) layer_lin = OSRGetLinearUnits(lsc, NULL);
            if (c->srs && !OSRIsSame(lsc, c->srs)) {
                CPLErrorReset();
                ct = OCTNewCoordinateTransformation(lsc, c->srs);
                if (!ct) {
                    s = gdal_fail(DISOPT_ERR_INPUT, "truth '%s': no transformation from its CRS to the prediction's",
                                  path);
                    OSRDestroySpatialReference(lsc);
                    break;
                }
            }
        }
        /* read only features near the grid (a city-wide file serves many tiles): a spatial filter on
         * the footprint's bounds in the layer's CRS, with a margin; the exact clip follows below */
        double bx0 = fe.MinX, by0 = fe.MinY, bx1 = fe.MaxX, by1 = fe.MaxY;
        int filter = 1;
        if (ct) {
            OGRCoordinateTransformationH back = OCTNewCoordinateTransformation(c->srs, lsc);
            filter = back && OCTTransformBounds(back, fe.MinX, fe.MinY, fe.MaxX, fe.MaxY, &bx0, &by0, &bx1, &by1, 21);
            if (back) OCTDestroyCoordinateTransformation(back);
        }
        if (filter && bx0 < bx1 && by0 < by1) { /* (not across the antimeridian) */
            double mx = 0.01 * (bx1 - bx0), my = 0.01 * (by1 - by0);
            OGR_L_SetSpatialFilterRect(layer, bx0 - mx, by0 - my, bx1 + mx, by1 + my);
        }
        OGR_L_ResetReading(layer);
        OGRFeatureH f;
        /* the error state is reset before each read, so that it tells a failed read from the end */
        while (s == DISOPT_OK && (CPLErrorReset(), (f = OGR_L_GetNextFeature(layer)) != NULL)) {
            OGRGeometryH g0 = OGR_F_GetGeometryRef(f);
            OGRGeometryH g = g0 ? polygonal(OGR_G_Clone(g0)) : NULL;
            GIntBig fid = OGR_F_GetFID(f);
            OGR_F_Destroy(f);
            if (!g) continue; /* points, lines, empty features: not buildings */
            double area_layer_m2 = layer_lin > 0 ? OGR_G_Area(g) * layer_lin * layer_lin : 0;
            if (ct && OGR_G_Transform(g, ct) != OGRERR_NONE) {
                OGR_G_DestroyGeometry(g);
                s = gdal_fail(DISOPT_ERR_INPUT, "truth '%s': reprojecting a polygon failed", path);
                break;
            }
            s = make_valid(&g);
            if (s != DISOPT_OK) {
                dp_error_prefix(s, "truth '%s', layer '%s', feature %lld", path, OGR_L_GetName(layer),
                                (long long)fid);
                break;
            }
            if (!g) continue; /* degenerate: no area */
            OGREnvelope e;
            OGR_G_GetEnvelope(g, &e);
            if (e.MaxX <= fe.MinX || e.MinX >= fe.MaxX || e.MaxY <= fe.MinY || e.MinY >= fe.MaxY) {
                OGR_G_DestroyGeometry(g); /* off this grid: not counted anywhere */
                continue;
            }
            if (!(axis_aligned && e.MinX >= fe.MinX && e.MaxX <= fe.MaxX && e.MinY >= fe.MinY && e.MaxY <= fe.MaxY)) {
                CPLErrorReset();
                OGRGeometryH clip = OGR_G_Intersection(g, foot);
                OGR_G_DestroyGeometry(g);
                if (!clip) {
                    s = gdal_fail(DISOPT_ERR_INTERNAL, "truth '%s': clipping a polygon to the grid failed (GEOS)", path);
                    break;
                }
                g = polygonal(clip);
                if (!g || OGR_G_Area(g) <= 0) {
                    if (g) OGR_G_DestroyGeometry(g);
                    continue;
                }
            }
            double a = OGR_G_Area(g);
            int small;
            if (c->lin_m > 0) small = a * c->lin_m * c->lin_m <= o->min_area_m2;
            else if (layer_lin > 0) small = area_layer_m2 <= o->min_area_m2;
            else small = a / c->px_area <= (double)min_pixels_of(c, o);
            if (small) {
                OGR_G_DestroyGeometry(g);
                (*dropped)++;
                continue;
            }
            s = polys_push(&all, g);
        }
        /* a read that failed ends the feature loop like the end of the layer: tell them apart */
        if (s == DISOPT_OK && CPLGetLastErrorType() >= CE_Failure)
            s = gdal_fail(DISOPT_ERR_IO, "truth '%s': reading features failed", path);
        OGR_L_SetSpatialFilter(layer, NULL);
        if (o->where && *o->where) OGR_L_SetAttributeFilter(layer, NULL);
        if (ct) OCTDestroyCoordinateTransformation(ct);
        if (lsc) OSRDestroySpatialReference(lsc);
    }
    OGR_G_DestroyGeometry(foot);
    if (s != DISOPT_OK) {
        polys_free(&all);
        return s;
    }

    /* rasterize polygon ids 1..n */
    size_t total = (size_t)c->W * (size_t)c->H;
    memset(tstate, ST_BG, total);
    if (all.n == 0) return DISOPT_OK;
    GDALDatasetH rds = mem_raster(c, GDT_Int32);
    OGRGeometryH *geoms = malloc((size_t)all.n * sizeof *geoms);
    double *burn = malloc((size_t)all.n * sizeof *burn);
    int32_t *ids = malloc(total * sizeof *ids);
    int64_t *npx = calloc((size_t)all.n + 1, sizeof *npx), *nign = calloc((size_t)all.n + 1, sizeof *nign);
    if (!rds || !geoms || !burn || !ids || !npx || !nign) {
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory rasterizing the truth");
        goto done;
    }
    for (int i = 0; i < all.n; i++) {
        geoms[i] = all.p[i].g;
        burn[i] = (double)(i + 1);
    }
    int bandlist = 1;
    CPLErrorReset();
    if (GDALRasterizeGeometries(rds, 1, &bandlist, all.n, geoms, NULL, NULL, burn, NULL, NULL, NULL) != CE_None) {
        s = gdal_fail(DISOPT_ERR_IO, "truth '%s': rasterizing", path);
        goto done;
    }
    if (GDALRasterIO(GDALGetRasterBand(rds, 1), GF_Read, 0, 0, c->W, c->H, ids, c->W, c->H, GDT_Int32, 0, 0) !=
        CE_None) {
        s = gdal_fail(DISOPT_ERR_IO, "truth '%s': reading the rasterized polygons", path);
        goto done;
    }
    for (size_t i = 0; i < total; i++) {
        int32_t id = ids[i];
        if (id <= 0 || id > all.n) continue;
        tstate[i] = ST_BLD;
        npx[id]++;
        if (pstate[i] == ST_IGN) nign[id]++;
    }
    for (int i = 0; i < all.n; i++) {
        if (npx[i + 1] > 0 && nign[i + 1] == npx[i + 1]) { /* wholly in the prediction's nodata */
            OGR_G_DestroyGeometry(all.p[i].g);
            (*dropped)++;
            continue;
        }
        OGRGeometryH g = all.p[i].g;
        s = polys_push(ps, g);
        if (s != DISOPT_OK) {
            for (int k = i + 1; k < all.n; k++) OGR_G_DestroyGeometry(all.p[k].g);
            break;
        }
    }
    free(all.p); /* geometries moved or destroyed */
    all.p = NULL;
    all.n = 0;
done:
    polys_free(&all);
    if (rds) GDALClose(rds);
    free(geoms);
    free(burn);
    free(ids);
    free(npx);
    free(nign);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* matching                                                                                     */

/* Area of the surfaces in g (an intersection may also hold the points and lines where two polygons
 * only touch; OGR_G_Area warns on those). */
static double surface_area(OGRGeometryH g) {
    OGRwkbGeometryType t = wkbFlatten(OGR_G_GetGeometryType(g));
    if (t == wkbPolygon || t == wkbMultiPolygon || t == wkbCurvePolygon || t == wkbMultiSurface)
        return OGR_G_Area(g);
    if (t == wkbGeometryCollection) {
        double a = 0;
        for (int i = 0; i < OGR_G_GetGeometryCount(g); i++) a += surface_area(OGR_G_GetGeometryRef(g, i));
        return a;
    }
    return 0;
}

static int cmp_minx(const void *a, const void *b) {
    const ev_poly *p = a, *q = b;
    if (p->e.MinX < q->e.MinX) return -1;
    if (p->e.MinX > q->e.MinX) return 1;
    return p->order - q->order;
}

/* Truth polygons sorted by MinX; *maxw = their widest envelope, for the sweep in first_candidate. */
static void truth_index(ev_polys *truth, double *maxw) {
    if (truth->n > 1) qsort(truth->p, (size_t)truth->n, sizeof *truth->p, cmp_minx);
    *maxw = 0;
    for (int j = 0; j < truth->n; j++)
        if (truth->p[j].e.MaxX - truth->p[j].e.MinX > *maxw) *maxw = truth->p[j].e.MaxX - truth->p[j].e.MinX;
}

/* First truth (in MinX order) whose MinX >= e->MinX - maxw: no earlier one can overlap e. */
static int first_candidate(const ev_polys *truth, double maxw, const OGREnvelope *e) {
    double lo = e->MinX - maxw;
    int a = 0, b = truth->n;
    while (a < b) {
        int m = (a + b) / 2;
        if (truth->p[m].e.MinX < lo) a = m + 1;
        else b = m;
    }
    return a;
}

/* IoU <= min(|P|, |T|) / max(|P|, |T|): a pair that cannot reach the threshold cannot be the match,
 * and skipping it changes nothing (a best candidate below the threshold is no match either). */
static int area_bound_ok(double ap, double at, double thr) {
    double lo = ap < at ? ap : at, hi = ap < at ? at : ap;
    return lo >= thr * hi * (1.0 - 1e-9);
}

/* Whether any truth polygon could match a prediction of envelope e and area ap (ignoring which are
 * already matched): envelopes overlap or touch, and the area bound holds. */
static int has_candidate(const ev_polys *truth, double maxw, const OGREnvelope *e, double ap, double thr) {
    const ev_poly *t = truth->p;
    for (int j = first_candidate(truth, maxw, e); j < truth->n && t[j].e.MinX <= e->MaxX; j++)
        if (t[j].e.MaxX >= e->MinX && t[j].e.MinY <= e->MaxY && t[j].e.MaxY >= e->MinY &&
            area_bound_ok(ap, t[j].area, thr))
            return 1;
    return 0;
}

static disopt_status match(const disopt_eval_options *o, ev_polys *pred, ev_polys *truth, disopt_eval_counts *out) {
    ev_poly *t = truth->p;
    int nt = truth->n;
    double maxw;
    truth_index(truth, &maxw);
    for (int i = 0; i < pred->n; i++) {
        ev_poly *p = &pred->p[i];
        int a = first_candidate(truth, maxw, &p->e);
        int best = -1;
        double best_iou = 0;
        for (int j = a; j < nt && t[j].e.MinX <= p->e.MaxX; j++) {
            if (t[j].matched || t[j].e.MaxX <= p->e.MinX || t[j].e.MinY >= p->e.MaxY || t[j].e.MaxY <= p->e.MinY)
                continue;
            /* spares GEOS e.g. a whole-scene blob against every building */
            if (!area_bound_ok(p->area, t[j].area, o->iou_threshold)) continue;
            if (!p->valid) {
                disopt_status vs = make_valid(&p->g);
                if (vs == DISOPT_OK && !p->g)
                    vs = dp_error(DISOPT_ERR_INTERNAL, "eval: a polygonized component has no area");
                if (vs != DISOPT_OK) return vs;
                p->valid = 1;
            }
            CPLErrorReset();
            CPLPushErrorHandler(CPLQuietErrorHandler);
            OGRGeometryH x = OGR_G_Intersection(p->g, t[j].g);
            CPLPopErrorHandler();
            if (!x) return gdal_fail(DISOPT_ERR_INTERNAL, "%s", "polygon intersection (GEOS) failed");
            double ai = surface_area(x);
            OGR_G_DestroyGeometry(x);
            if (!(ai > 0)) continue;
            double iou = ai / (p->area + t[j].area - ai);
            if (best < 0 || iou > best_iou + DP_EVAL_IOU_EPS ||
                (iou >= best_iou - DP_EVAL_IOU_EPS && t[j].order < t[best].order)) {
                best = j;
                best_iou = iou;
            }
        }
        if (best >= 0 && best_iou >= o->iou_threshold - DP_EVAL_IOU_EPS) {
            t[best].matched = 1;
            out->bld_tp++;
        } else {
            out->bld_fp++;
        }
    }
    for (int j = 0; j < nt; j++)
        if (!t[j].matched) out->bld_fn++;
    return DISOPT_OK;
}

/* Predictions that no truth polygon could match (no overlapping envelope passes the area bound) are
 * FP whatever their shape: counted here and not polygonized (their keep flag is cleared), which
 * spares GDALPolygonize and GEOS the speckle of a noisy prediction. The others keep their order. */
static disopt_status prefilter_predictions(const ev_ctx *c, const disopt_eval_options *o, ev_comps *pk,
                                           ev_polys *truth, disopt_eval_counts *r) {
    int32_t n = pk->n;
    int32_t *bb = malloc(((size_t)n + 1) * 4 * sizeof *bb);
    if (!bb) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory");
    for (int32_t l = 0; l <= n; l++) {
        bb[4 * l] = bb[4 * l + 1] = INT32_MAX;
        bb[4 * l + 2] = bb[4 * l + 3] = -1;
    }
    for (int y = 0; y < c->H; y++)
        for (int x = 0; x < c->W; x++) {
            int32_t l = pk->lab[(size_t)y * (size_t)c->W + (size_t)x];
            if (!l) continue;
            int32_t *b = bb + 4 * l;
            if (x < b[0]) b[0] = x;
            if (y < b[1]) b[1] = y;
            if (x > b[2]) b[2] = x;
            if (y > b[3]) b[3] = y;
        }
    double maxw;
    truth_index(truth, &maxw);
    for (int32_t l = 1; l <= n; l++) {
        if (!pk->keep[l]) continue;
        const int32_t *b = bb + 4 * l;
        const double px[4] = {b[0], b[2] + 1.0, b[0], b[2] + 1.0}, py[4] = {b[1], b[1], b[3] + 1.0, b[3] + 1.0};
        OGREnvelope e = {INFINITY, -INFINITY, INFINITY, -INFINITY};
        for (int k = 0; k < 4; k++) {
            double X = c->gt[0] + px[k] * c->gt[1] + py[k] * c->gt[2], Y = c->gt[3] + px[k] * c->gt[4] + py[k] * c->gt[5];
            if (X < e.MinX) e.MinX = X;
            if (X > e.MaxX) e.MaxX = X;
            if (Y < e.MinY) e.MinY = Y;
            if (Y > e.MaxY) e.MaxY = Y;
        }
        if (!has_candidate(truth, maxw, &e, (double)pk->npx[l] * c->px_area, o->iou_threshold)) {
            pk->keep[l] = 0;
            r->bld_fp++;
            r->pred_polygons++;
        }
    }
    free(bb);
    return DISOPT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* a pair                                                                                       */

disopt_status disopt_eval_pair(const char *prediction, const char *truth, const disopt_eval_options *o,
                               disopt_eval_counts *out) {
    if (!out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "eval: NULL output");
    memset(out, 0, sizeof *out);
    disopt_status s = check_options(o);
    if (s != DISOPT_OK) return s;
    ev_ctx c;
    s = ctx_open(prediction, truth, o, &c);
    if (s != DISOPT_OK) {
        ctx_close(&c);
        return s;
    }
    size_t total = (size_t)c.W * (size_t)c.H;
    unsigned char *ps = malloc(total), *ts = malloc(total);
    ev_polys pp = {0}, tp = {0};
    ev_comps pk = {0}, tk = {0};
    disopt_eval_counts r;
    memset(&r, 0, sizeof r);
    r.pairs = 1;
    if (!ps || !ts) {
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval: out of memory for a %d x %d raster", c.W, c.H);
        goto done;
    }
    s = read_state(c.pred, "prediction", c.W, c.H, 1, o->threshold, ps);
    if (s != DISOPT_OK) goto done;
    if (c.truth_is_raster) s = read_state(c.truth, "truth", c.W, c.H, 0, 0, ts);
    else s = truth_from_vector(&c, o, truth, ps, ts, &tp, &r.truth_dropped);
    if (s != DISOPT_OK) goto done;
    for (size_t i = 0; i < total; i++) {
        unsigned char a = ps[i], b = ts[i];
        if (a == ST_IGN || b == ST_IGN) r.ignored++;
        else if (a) {
            if (b) r.tp++;
            else r.fp++;
        } else {
            if (b) r.fn++;
            else r.tn++;
        }
    }
    if (c.truth_is_raster) {
        /* both sides are pixel unions: exact IoU from pixel counts (see match_pixels) */
        s = components(&c, o, ps, ts, &pk, &r.pred_dropped);
        if (s == DISOPT_OK) s = components(&c, o, ts, ps, &tk, &r.truth_dropped);
        if (s == DISOPT_OK) s = match_pixels(o, total, &pk, &tk, &r);
    } else {
        s = components(&c, o, ps, ts, &pk, &r.pred_dropped);
        if (s == DISOPT_OK) s = prefilter_predictions(&c, o, &pk, &tp, &r);
        if (s == DISOPT_OK) s = polygonize_components(&c, o->connectivity, pk.lab, pk.n, pk.keep, pk.npx, &pp);
        if (s != DISOPT_OK) goto done;
        r.pred_polygons += pp.n;
        r.truth_polygons = tp.n;
        s = match(o, &pp, &tp, &r);
    }
    if (s == DISOPT_OK) *out = r;
done:
    if (s != DISOPT_OK) dp_error_prefix(s, "%s vs %s", prediction, truth);
    polys_free(&pp);
    polys_free(&tp);
    comps_free(&pk);
    comps_free(&tk);
    free(ps);
    free(ts);
    ctx_close(&c);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* pair lists                                                                                   */

void disopt_eval_free_list(char **list) { CSLDestroy(list); }

disopt_status disopt_eval_read_list(const char *path, char ***predictions, char ***truths, int *n) {
    if (!path || !predictions || !truths || !n) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "eval: NULL argument");
    *predictions = *truths = NULL;
    *n = 0;
    VSILFILE *f = VSIFOpenL(path, "rb");
    if (!f) return dp_error(DISOPT_ERR_IO, "pair list '%s': cannot open it", path);
    char *dir = CPLStrdup(CPLGetPath(path));
    char **p = NULL, **t = NULL;
    int count = 0, lineno = 0;
    disopt_status s = DISOPT_OK;
    const char *line;
    while ((line = CPLReadLineL(f)) != NULL) {
        lineno++;
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        char **tok = CSLTokenizeString2(line, ",", CSLT_HONOURSTRINGS | CSLT_STRIPLEADSPACES | CSLT_STRIPENDSPACES |
                                                      CSLT_ALLOWEMPTYTOKENS);
        int nt = CSLCount(tok);
        if (count == 0 && nt == 2 && EQUAL(tok[0], "prediction") && EQUAL(tok[1], "truth")) {
            CSLDestroy(tok);
            continue;
        }
        if (nt != 2 || !*tok[0] || !*tok[1]) {
            CSLDestroy(tok);
            s = dp_error(DISOPT_ERR_INPUT, "pair list '%s', line %d: expected 'prediction,truth', got '%s'", path,
                         lineno, line);
            break;
        }
        for (int k = 0; k < 2; k++) {
            char *full = CPLIsFilenameRelative(tok[k]) && *dir ? CPLStrdup(CPLFormFilename(dir, tok[k], NULL))
                                                               : CPLStrdup(tok[k]);
            if (k == 0) p = CSLAddString(p, full);
            else t = CSLAddString(t, full);
            CPLFree(full);
        }
        CSLDestroy(tok);
        count++;
    }
    VSIFCloseL(f);
    CPLFree(dir);
    if (s == DISOPT_OK && count == 0) s = dp_error(DISOPT_ERR_INPUT, "pair list '%s': no pairs in it", path);
    if (s != DISOPT_OK) {
        CSLDestroy(p);
        CSLDestroy(t);
        return s;
    }
    *predictions = p;
    *truths = t;
    *n = count;
    return DISOPT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* reports                                                                                      */

static void text_num(FILE *f, double v) {
    if (isnan(v)) fprintf(f, "n/a");
    else fprintf(f, "%.6f", v);
}

static void text_block(FILE *f, const char *title, const disopt_eval_counts *c) {
    disopt_eval_metrics m;
    disopt_eval_metrics_of(c, &m);
    fprintf(f, "%s\n", title);
    fprintf(f, "  pixels:    TP %lld  FP %lld  FN %lld  TN %lld  (ignored %lld)\n", (long long)c->tp, (long long)c->fp,
            (long long)c->fn, (long long)c->tn, (long long)c->ignored);
    fprintf(f, "             Dice ");
    text_num(f, m.dice);
    fprintf(f, "  IoU ");
    text_num(f, m.iou);
    fprintf(f, "  precision ");
    text_num(f, m.precision);
    fprintf(f, "  recall ");
    text_num(f, m.recall);
    fprintf(f, "\n  buildings: TP %lld  FP %lld  FN %lld  (%lld predicted, %lld truth polygons scored; dropped: %lld "
               "predicted, %lld truth)\n",
            (long long)c->bld_tp, (long long)c->bld_fp, (long long)c->bld_fn, (long long)c->pred_polygons,
            (long long)c->truth_polygons, (long long)c->pred_dropped, (long long)c->truth_dropped);
    fprintf(f, "             precision ");
    text_num(f, m.bld_precision);
    fprintf(f, "  recall ");
    text_num(f, m.bld_recall);
    fprintf(f, "  F1 ");
    text_num(f, m.bld_f1);
    fprintf(f, "\n");
}

/* ratios as JSON numbers of 15 significant digits (json-c's default prints 17: 0.59999999999999998) */
static json_object *jnum(double v) {
    if (isnan(v)) return NULL;
    char s[40];
    snprintf(s, sizeof s, "%.15g", v);
    if (!strpbrk(s, ".eEn")) strcat(s, ".0");
    return json_object_new_double_s(v, s);
}

static json_object *json_counts(const disopt_eval_counts *c) {
    disopt_eval_metrics m;
    disopt_eval_metrics_of(c, &m);
    json_object *o = json_object_new_object(), *px = json_object_new_object(), *b = json_object_new_object();
    json_object_object_add(px, "tp", json_object_new_int64(c->tp));
    json_object_object_add(px, "fp", json_object_new_int64(c->fp));
    json_object_object_add(px, "fn", json_object_new_int64(c->fn));
    json_object_object_add(px, "tn", json_object_new_int64(c->tn));
    json_object_object_add(px, "ignored", json_object_new_int64(c->ignored));
    json_object_object_add(px, "dice", jnum(m.dice));
    json_object_object_add(px, "iou", jnum(m.iou));
    json_object_object_add(px, "precision", jnum(m.precision));
    json_object_object_add(px, "recall", jnum(m.recall));
    json_object_object_add(b, "tp", json_object_new_int64(c->bld_tp));
    json_object_object_add(b, "fp", json_object_new_int64(c->bld_fp));
    json_object_object_add(b, "fn", json_object_new_int64(c->bld_fn));
    json_object_object_add(b, "precision", jnum(m.bld_precision));
    json_object_object_add(b, "recall", jnum(m.bld_recall));
    json_object_object_add(b, "f1", jnum(m.bld_f1));
    json_object_object_add(b, "predicted_polygons", json_object_new_int64(c->pred_polygons));
    json_object_object_add(b, "truth_polygons", json_object_new_int64(c->truth_polygons));
    json_object_object_add(b, "predicted_dropped", json_object_new_int64(c->pred_dropped));
    json_object_object_add(b, "truth_dropped", json_object_new_int64(c->truth_dropped));
    json_object_object_add(o, "pixels", px);
    json_object_object_add(o, "buildings", b);
    return o;
}

static void csv_field(FILE *f, const char *s) {
    if (strpbrk(s, ",\"\n")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"') fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
}

static void csv_num(FILE *f, double v) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, "%.9g", v);
}

static void csv_row(FILE *f, const char *pred, const char *truth, const disopt_eval_counts *c) {
    disopt_eval_metrics m;
    disopt_eval_metrics_of(c, &m);
    csv_field(f, pred);
    fputc(',', f);
    csv_field(f, truth);
    fprintf(f, ",%lld,%lld,%lld,%lld,%lld", (long long)c->tp, (long long)c->fp, (long long)c->fn, (long long)c->tn,
            (long long)c->ignored);
    csv_num(f, m.dice);
    csv_num(f, m.iou);
    csv_num(f, m.precision);
    csv_num(f, m.recall);
    fprintf(f, ",%lld,%lld,%lld", (long long)c->bld_tp, (long long)c->bld_fp, (long long)c->bld_fn);
    csv_num(f, m.bld_precision);
    csv_num(f, m.bld_recall);
    csv_num(f, m.bld_f1);
    fputc('\n', f);
}

disopt_status disopt_eval_report(const disopt_eval_pair_result *pairs, int n, const disopt_eval_counts *total,
                                 const disopt_eval_options *o, disopt_eval_format fmt, char **out) {
    if (!out || (n > 0 && !pairs) || !total || n < 0 || !o)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "eval report: bad arguments");
    *out = NULL;
    if (fmt == DISOPT_EVAL_JSON) {
        json_object *root = json_object_new_object(), *arr = json_object_new_array(), *opt = json_object_new_object();
        if (!root || !arr || !opt) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval report: out of memory");
        json_object_object_add(opt, "threshold", jnum(o->threshold));
        json_object_object_add(opt, "iou_threshold", jnum(o->iou_threshold));
        json_object_object_add(opt, "min_area_m2", jnum(o->min_area_m2));
        json_object_object_add(opt, "min_pixels", json_object_new_int(o->min_pixels));
        json_object_object_add(opt, "connectivity", json_object_new_int(o->connectivity));
        for (int i = 0; i < n; i++) {
            json_object *p = json_counts(&pairs[i].counts);
            json_object_object_add(p, "prediction", json_object_new_string(pairs[i].prediction ? pairs[i].prediction : ""));
            json_object_object_add(p, "truth", json_object_new_string(pairs[i].truth ? pairs[i].truth : ""));
            json_object_array_add(arr, p);
        }
        json_object *t = json_counts(total);
        json_object_object_add(t, "pairs", json_object_new_int(total->pairs));
        json_object_object_add(root, "options", opt);
        json_object_object_add(root, "pairs", arr);
        json_object_object_add(root, "total", t);
        const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t len = strlen(s);
        *out = malloc(len + 2);
        if (*out) {
            memcpy(*out, s, len);
            (*out)[len] = '\n';
            (*out)[len + 1] = '\0';
        }
        json_object_put(root);
        return *out ? DISOPT_OK : dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval report: out of memory");
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval report: out of memory");
    if (fmt == DISOPT_EVAL_CSV) {
        fprintf(f, "prediction,truth,pixel_tp,pixel_fp,pixel_fn,pixel_tn,pixel_ignored,dice,iou,pixel_precision,"
                   "pixel_recall,building_tp,building_fp,building_fn,building_precision,building_recall,building_f1\n");
        for (int i = 0; i < n; i++)
            csv_row(f, pairs[i].prediction ? pairs[i].prediction : "", pairs[i].truth ? pairs[i].truth : "",
                    &pairs[i].counts);
        csv_row(f, "TOTAL", "", total);
    } else {
        char mp[32];
        if (o->min_pixels >= 0) snprintf(mp, sizeof mp, "%d px", o->min_pixels);
        else snprintf(mp, sizeof mp, "auto");
        fprintf(f, "rules: probability > %g, match IoU >= %g, smallest building %g m^2 / %s, %d-connected\n",
                o->threshold, o->iou_threshold, o->min_area_m2, mp, o->connectivity);
        for (int i = 0; i < n; i++) {
            char title[2048];
            snprintf(title, sizeof title, "%s vs %s", pairs[i].prediction ? pairs[i].prediction : "?",
                     pairs[i].truth ? pairs[i].truth : "?");
            text_block(f, title, &pairs[i].counts);
        }
        if (n != 1) {
            char title[64];
            snprintf(title, sizeof title, "total over %d pairs (counts summed)", total->pairs);
            text_block(f, title, total);
        }
    }
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "eval report: out of memory");
    }
    *out = buf;
    return DISOPT_OK;
}
