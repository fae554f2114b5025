/*
 * dataset.c - the training data pipeline (see dataset.h): sample list, checks, GDAL reading / warping /
 * rasterizing of one crop, and the prefetching loader (pthreads).
 */
#define _LARGEFILE64_SOURCE 1 /* VSIStatBufL is struct stat64 */
#include "dataset.h"

#include "internal.h"
#include "train/rng.h"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <gdal_alg.h>
#include <gdal_utils.h>
#include <ogr_api.h>
#include <ogr_srs_api.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_ 8192

typedef struct dp_sample {
    char *sar, *opt, *label; /* resolved paths; sar may be NULL in stage 1 */
    int val, rotate;
    int w, h;     /* the grid's raster size */
    double gt[6]; /* the grid's geotransform (identity-like when has_gt = 0) */
    int has_gt;
    char *wkt;        /* the grid's CRS ("" when none) */
    int opt_direct;   /* optical on the grid: read windows directly */
    int label_vector; /* 1: OGR vector, 0: raster */
    int label_direct; /* raster label on the grid */
} dp_sample;

struct dp_dataset {
    dp_ds_options o;
    dp_sample *s;
    int n, cap;
    int *idx[2]; /* positions of the train (0) and val (1) samples */
    int count[2];
    uint64_t hash;
};

void dp_ds_options_init(dp_ds_options *o) {
    memset(o, 0, sizeof *o);
    o->stage = 2;
    o->channels = 4;
    o->crop = 512;
    o->complex_mode = DISOPT_COMPLEX_ERROR;
    o->rotate180 = -1;
    o->min_area = 20.0;
    o->norm_scale = 1.0f / 255.0f;
    o->norm_mean = 0.5f;
    o->norm_std = 0.125f;
}

static void sample_free(dp_sample *s) {
    free(s->sar);
    free(s->opt);
    free(s->label);
    free(s->wkt);
}

void dp_dataset_close(dp_dataset *ds) {
    if (!ds)
        return;
    for (int i = 0; i < ds->n; i++)
        sample_free(&ds->s[i]);
    free(ds->s);
    free(ds->idx[0]);
    free(ds->idx[1]);
    free(ds);
}

int dp_dataset_count(const dp_dataset *ds, int val) { return ds ? ds->count[val ? 1 : 0] : 0; }
uint64_t dp_dataset_hash(const dp_dataset *ds) { return ds ? ds->hash : 0; }
const dp_ds_options *dp_dataset_options(const dp_dataset *ds) { return ds ? &ds->o : NULL; }

static const char *gdal_msg(void) {
    const char *m = CPLGetLastErrorMsg();
    return m && *m ? m : "(no GDAL message)";
}

/* ---------------------------------------------------------------- the list */
static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '"')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n' || s[n - 1] == '"'))
        s[--n] = '\0';
    return s;
}

static int split_csv(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    while (n < max) {
        char *c = strchr(p, ',');
        if (c)
            *c = '\0';
        f[n++] = trim(p);
        if (!c)
            break;
        p = c + 1;
    }
    return n;
}

static char *resolve(const char *dir, const char *p) {
    if (!p || !*p)
        return NULL;
    if (CPLIsFilenameRelative(p) && strncmp(p, "/vsi", 4) != 0)
        return strdup(CPLFormFilename(dir, p, NULL));
    return strdup(p);
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static disopt_status parse_list(dp_dataset *ds, const char *path, int all_val) {
    VSILFILE *fp = VSIFOpenL(path, "rb");
    if (!fp)
        return dp_error(DISOPT_ERR_IO, "%s: cannot open the sample list", path);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", CPLGetPath(path));
    char line[LINE_MAX_];
    int col_sar = -1, col_opt = -1, col_lab = -1, col_split = -1, col_rot = -1, header = 0, lineno = 0;
    disopt_status s = DISOPT_OK;
    const char *l;
    while (s == DISOPT_OK && (l = CPLReadLine2L(fp, LINE_MAX_ - 1, NULL)) != NULL) {
        lineno++;
        ds->hash = fnv1a(ds->hash, (const unsigned char *)l, strlen(l));
        ds->hash = fnv1a(ds->hash, (const unsigned char *)"\n", 1);
        snprintf(line, sizeof line, "%s", l);
        char *t = trim(line);
        if (!*t || *t == '#')
            continue;
        char *f[16];
        int nf = split_csv(t, f, 16);
        if (!header) {
            header = 1;
            for (int i = 0; i < nf; i++) {
                if (EQUAL(f[i], "sar"))
                    col_sar = i;
                else if (EQUAL(f[i], "optical"))
                    col_opt = i;
                else if (EQUAL(f[i], "label"))
                    col_lab = i;
                else if (EQUAL(f[i], "split"))
                    col_split = i;
                else if (EQUAL(f[i], "rotate180"))
                    col_rot = i;
            }
            if (col_sar < 0 || col_opt < 0 || col_lab < 0)
                s = dp_error(DISOPT_ERR_INPUT,
                             "%s: the header line must name the columns sar, optical and label (optional: split, "
                             "rotate180); got '%s'",
                             path, l);
            continue;
        }
        int need = col_sar > col_opt ? col_sar : col_opt;
        if (col_lab > need)
            need = col_lab;
        if (nf <= need) {
            s = dp_error(DISOPT_ERR_INPUT, "%s:%d: %d fields, %d expected", path, lineno, nf, need + 1);
            break;
        }
        if (ds->n == ds->cap) {
            int nc = ds->cap ? 2 * ds->cap : 16;
            dp_sample *ns = realloc(ds->s, (size_t)nc * sizeof *ns);
            if (!ns) {
                s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
                break;
            }
            ds->s = ns;
            ds->cap = nc;
        }
        dp_sample *sm = &ds->s[ds->n];
        memset(sm, 0, sizeof *sm);
        ds->n++;
        sm->sar = resolve(dir, f[col_sar]);
        sm->opt = resolve(dir, f[col_opt]);
        sm->label = resolve(dir, f[col_lab]);
        sm->val = all_val;
        if (col_split >= 0 && col_split < nf && *f[col_split]) {
            if (EQUAL(f[col_split], "val") || EQUAL(f[col_split], "validation"))
                sm->val = 1;
            else if (!EQUAL(f[col_split], "train"))
                s = dp_error(DISOPT_ERR_INPUT, "%s:%d: split '%s' is neither train nor val", path, lineno,
                             f[col_split]);
        }
        if (col_rot >= 0 && col_rot < nf && *f[col_rot]) {
            if (strcmp(f[col_rot], "1") == 0 || EQUAL(f[col_rot], "yes") || EQUAL(f[col_rot], "true"))
                sm->rotate = 1;
            else if (!(strcmp(f[col_rot], "0") == 0 || EQUAL(f[col_rot], "no") || EQUAL(f[col_rot], "false")))
                s = dp_error(DISOPT_ERR_INPUT, "%s:%d: rotate180 '%s' is not 0 or 1", path, lineno, f[col_rot]);
        }
        if (s == DISOPT_OK && (!sm->opt || !sm->label || (!sm->sar && ds->o.stage == 2)))
            s = dp_error(DISOPT_ERR_INPUT, "%s:%d: empty %s path", path, lineno,
                         !sm->opt     ? "optical"
                         : !sm->label ? "label"
                                      : "sar");
    }
    VSIFCloseL(fp);
    if (s == DISOPT_OK && !header)
        s = dp_error(DISOPT_ERR_INPUT, "%s: the sample list is empty (no header line)", path);
    return s;
}

/* ---------------------------------------------------------------- checks */
static disopt_status exists(const char *path, const char *what, int lineno) {
    VSIStatBufL st;
    if (VSIStatL(path, &st) != 0)
        return dp_error(DISOPT_ERR_IO, "sample %d: %s file '%s' does not exist", lineno, what, path);
    return DISOPT_OK;
}

static int wkt_same(const char *a, const char *b) {
    if ((!a || !*a) && (!b || !*b))
        return 1;
    if (!a || !*a || !b || !*b)
        return 0;
    if (strcmp(a, b) == 0)
        return 1;
    OGRSpatialReferenceH x = OSRNewSpatialReference(a), y = OSRNewSpatialReference(b);
    int same = x && y && OSRIsSame(x, y);
    OSRDestroySpatialReference(x);
    OSRDestroySpatialReference(y);
    return same;
}

/* same size, geotransform (to 1e-9 of a pixel) and CRS */
static int same_grid(const dp_sample *sm, GDALDatasetH d) {
    if (GDALGetRasterXSize(d) != sm->w || GDALGetRasterYSize(d) != sm->h)
        return 0;
    double gt[6];
    int has = GDALGetGeoTransform(d, gt) == CE_None;
    if (has != sm->has_gt)
        return 0;
    if (has) {
        double px = fabs(sm->gt[1]) + fabs(sm->gt[2]) + fabs(sm->gt[4]) + fabs(sm->gt[5]);
        for (int k = 0; k < 6; k++)
            if (fabs(gt[k] - sm->gt[k]) > 1e-9 * px)
                return 0;
    }
    return wkt_same(GDALGetProjectionRef(d), sm->wkt);
}

static disopt_status check_bands(GDALDatasetH d, const char *path, const char *what, const int *bands, int nb,
                                 int channels, disopt_complex_mode cm, int lineno) {
    int count = GDALGetRasterCount(d);
    if (nb == 0 && count != channels)
        return dp_error(DISOPT_ERR_INPUT,
                        "sample %d: %s '%s' has %d band(s), the model takes %d (pick bands with --%s-bands)", lineno,
                        what, path, count, channels, strcmp(what, "sar") == 0 ? "sar" : "optical");
    for (int i = 0; i < (nb ? nb : channels); i++) {
        int b = nb ? bands[i] : i + 1;
        if (b < 1 || b > count)
            return dp_error(DISOPT_ERR_INPUT, "sample %d: %s '%s' has %d band(s), band %d asked for", lineno, what,
                            path, count, b);
        if (GDALDataTypeIsComplex(GDALGetRasterDataType(GDALGetRasterBand(d, b))) && cm == DISOPT_COMPLEX_ERROR)
            return dp_error(DISOPT_ERR_INPUT,
                            "sample %d: %s '%s' band %d is complex (SLC): convert it to intensity first, or pass "
                            "--complex db (10*log10(|z|^2))",
                            lineno, what, path, b);
    }
    return DISOPT_OK;
}

/* Whether the other dataset covers any of a 9 x 9 lattice of the grid's pixels (both georeferenced). */
static disopt_status check_overlap(const dp_sample *sm, GDALDatasetH grid, GDALDatasetH other, const char *what,
                                   const char *path, int lineno) {
    void *tr = GDALCreateGenImgProjTransformer2(other, grid, NULL);
    if (!tr)
        return dp_error(DISOPT_ERR_INPUT, "sample %d: %s '%s' cannot be transformed onto the SAR grid: %s", lineno,
                        what, path, gdal_msg());
    int inside = 0;
    const int ow = GDALGetRasterXSize(other), oh = GDALGetRasterYSize(other);
    for (int j = 0; j <= 8 && !inside; j++)
        for (int i = 0; i <= 8 && !inside; i++) {
            double x = (sm->w * i) / 8.0, y = (sm->h * j) / 8.0, z = 0.0;
            int ok = 0;
            if (i == 8)
                x -= 0.5;
            if (j == 8)
                y -= 0.5;
            GDALGenImgProjTransform(tr, TRUE, 1, &x, &y, &z, &ok); /* grid pixel -> other pixel */
            if (ok && x >= 0 && y >= 0 && x < ow && y < oh)
                inside = 1;
        }
    GDALDestroyGenImgProjTransformer(tr);
    if (!inside)
        return dp_error(DISOPT_ERR_INPUT, "sample %d: %s '%s' does not overlap the SAR grid", lineno, what, path);
    return DISOPT_OK;
}

static disopt_status georef_needed(GDALDatasetH d, const char *what, const char *path, int lineno) {
    double gt[6];
    const char *wkt = GDALGetProjectionRef(d);
    if (GDALGetGeoTransform(d, gt) != CE_None || !wkt || !*wkt)
        return dp_error(DISOPT_ERR_INPUT, "sample %d: %s '%s' is not on the SAR grid and has no %s: cannot align it",
                        lineno, what, path, GDALGetGeoTransform(d, gt) != CE_None ? "geotransform" : "CRS");
    return DISOPT_OK;
}

static disopt_status check_sample(dp_dataset *ds, dp_sample *sm, int lineno) {
    const dp_ds_options *o = &ds->o;
    const char *gpath = sm->sar ? sm->sar : sm->opt;
    if (sm->sar)
        DP_TRY(exists(sm->sar, "sar", lineno));
    DP_TRY(exists(sm->opt, "optical", lineno));
    DP_TRY(exists(sm->label, "label", lineno));
    disopt_status s = DISOPT_OK;
    GDALDatasetH g = GDALOpenEx(gpath, GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
    GDALDatasetH op = NULL, lab = NULL;
    if (!g)
        return dp_error(DISOPT_ERR_INPUT, "sample %d: cannot open '%s' as a raster: %s", lineno, gpath, gdal_msg());
    sm->w = GDALGetRasterXSize(g);
    sm->h = GDALGetRasterYSize(g);
    sm->has_gt = GDALGetGeoTransform(g, sm->gt) == CE_None;
    sm->wkt = strdup(GDALGetProjectionRef(g) ? GDALGetProjectionRef(g) : "");
    if (!sm->wkt)
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    if (s == DISOPT_OK && sm->sar && o->stage == 2)
        s = check_bands(g, sm->sar, "sar", o->sar_bands, o->n_sar_bands, o->channels, o->complex_mode, lineno);
    if (s == DISOPT_OK && (sm->w < o->crop || sm->h < o->crop))
        s = dp_error(DISOPT_ERR_INPUT, "sample %d: '%s' is %d x %d pixels, smaller than the crop %d x %d", lineno,
                     gpath, sm->w, sm->h, o->crop, o->crop);
    if (s == DISOPT_OK) {
        op = sm->sar ? GDALOpenEx(sm->opt, GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL)
                     : g;
        if (!op)
            s = dp_error(DISOPT_ERR_INPUT, "sample %d: cannot open optical '%s' as a raster: %s", lineno, sm->opt,
                         gdal_msg());
    }
    if (s == DISOPT_OK)
        s = check_bands(op, sm->opt, "optical", o->opt_bands, o->n_opt_bands, o->channels, o->complex_mode, lineno);
    if (s == DISOPT_OK) {
        sm->opt_direct = same_grid(sm, op);
        if (!sm->opt_direct) {
            s = georef_needed(g, "sar", gpath, lineno);
            if (s == DISOPT_OK)
                s = georef_needed(op, "optical", sm->opt, lineno);
            if (s == DISOPT_OK)
                s = check_overlap(sm, g, op, "optical", sm->opt, lineno);
            for (int i = 0; s == DISOPT_OK && i < o->channels; i++) {
                const int bi = o->n_opt_bands ? o->opt_bands[i] : i + 1;
                if (GDALDataTypeIsComplex(GDALGetRasterDataType(GDALGetRasterBand(op, bi))))
                    s = dp_error(DISOPT_ERR_UNSUPPORTED,
                                 "sample %d: optical '%s' is complex and off the SAR grid: warping complex values is "
                                 "not supported",
                                 lineno, sm->opt);
            }
        }
    }
    /* the label: a vector file with layers, else a raster */
    if (s == DISOPT_OK) {
        lab = GDALOpenEx(sm->label, GDAL_OF_VECTOR | GDAL_OF_READONLY, NULL, NULL, NULL);
        if (lab && GDALDatasetGetLayerCount(lab) > 0) {
            sm->label_vector = 1;
            for (int li = 0; s == DISOPT_OK && li < GDALDatasetGetLayerCount(lab); li++) {
                OGRSpatialReferenceH srs = OGR_L_GetSpatialRef(GDALDatasetGetLayer(lab, li));
                if (srs && (!sm->wkt[0] || !sm->has_gt))
                    s = dp_error(DISOPT_ERR_INPUT,
                                 "sample %d: label '%s' has a CRS but '%s' has no georeferencing: cannot align them",
                                 lineno, sm->label, gpath);
                if (s == DISOPT_OK && srs) {
                    OGRSpatialReferenceH dst = OSRNewSpatialReference(sm->wkt);
                    OGRCoordinateTransformationH ct = dst ? OCTNewCoordinateTransformation(srs, dst) : NULL;
                    if (!ct)
                        s = dp_error(DISOPT_ERR_INPUT,
                                     "sample %d: label '%s': no transformation to the CRS of '%s': %s", lineno,
                                     sm->label, gpath, gdal_msg());
                    OCTDestroyCoordinateTransformation(ct);
                    OSRDestroySpatialReference(dst);
                }
            }
        } else {
            if (lab)
                GDALClose(lab);
            lab = GDALOpenEx(sm->label, GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
            if (!lab)
                s = dp_error(DISOPT_ERR_INPUT, "sample %d: cannot open label '%s' as a vector or a raster: %s", lineno,
                             sm->label, gdal_msg());
            else {
                sm->label_direct = same_grid(sm, lab);
                if (GDALGetRasterCount(lab) < 1)
                    s = dp_error(DISOPT_ERR_INPUT, "sample %d: label raster '%s' has no band", lineno, sm->label);
                if (s == DISOPT_OK && !sm->label_direct) {
                    s = georef_needed(g, "sar", gpath, lineno);
                    if (s == DISOPT_OK)
                        s = georef_needed(lab, "label", sm->label, lineno);
                    if (s == DISOPT_OK)
                        s = check_overlap(sm, g, lab, "label", sm->label, lineno);
                }
            }
        }
    }
    if (lab)
        GDALClose(lab);
    if (op && op != g)
        GDALClose(op);
    GDALClose(g);
    if (o->rotate180 >= 0)
        sm->rotate = o->rotate180;
    return s;
}

disopt_status dp_dataset_open(const char *list, const char *val_list, const dp_ds_options *o, dp_dataset **out) {
    if (!list || !o || !out)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dataset: NULL argument");
    *out = NULL;
    if (o->stage != 1 && o->stage != 2)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dataset: stage %d", o->stage);
    if (o->channels < 1 || o->channels > DISOPT_MAX_BANDS || o->crop < 1)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dataset: %d channels, crop %d", o->channels, o->crop);
    if ((o->n_sar_bands && o->n_sar_bands != o->channels) || (o->n_opt_bands && o->n_opt_bands != o->channels))
        return dp_error(DISOPT_ERR_INPUT, "dataset: band lists must name %d bands (the model's input channels)",
                        o->channels);
    dp_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    ds->o = *o;
    ds->hash = 0xcbf29ce484222325ULL;
    disopt_status s = parse_list(ds, list, 0);
    if (s == DISOPT_OK && val_list)
        s = parse_list(ds, val_list, 1);
    if (s == DISOPT_OK && ds->n == 0)
        s = dp_error(DISOPT_ERR_INPUT, "%s: the sample list holds no sample", list);
    CPLPushErrorHandler(CPLQuietErrorHandler);
    for (int i = 0; s == DISOPT_OK && i < ds->n; i++)
        s = check_sample(ds, &ds->s[i], i + 1);
    CPLPopErrorHandler();
    for (int v = 0; s == DISOPT_OK && v < 2; v++) {
        ds->idx[v] = calloc((size_t)ds->n + 1, sizeof(int));
        if (!ds->idx[v])
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        for (int i = 0; s == DISOPT_OK && i < ds->n; i++)
            if (ds->s[i].val == v)
                ds->idx[v][ds->count[v]++] = i;
    }
    if (s == DISOPT_OK && ds->count[0] == 0)
        s = dp_error(DISOPT_ERR_INPUT, "%s: no training sample (every sample is in the val split)", list);
    if (s != DISOPT_OK) {
        dp_dataset_close(ds);
        return s;
    }
    *out = ds;
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- one crop */
/* reads bands of d at window (ox, oy, c, c) into out (planes), marking invalid pixels in valid */
static disopt_status read_direct(GDALDatasetH d, const char *path, const int *bands, int nb, int ox, int oy, int c,
                                 disopt_complex_mode cm, float *out, uint8_t *valid, float *cbuf) {
    const size_t P = (size_t)c * c;
    for (int i = 0; i < nb; i++) {
        GDALRasterBandH b = GDALGetRasterBand(d, bands[i]);
        float *dst = out + (size_t)i * P;
        int has_nd = 0;
        double nd = GDALGetRasterNoDataValue(b, &has_nd);
        if (GDALDataTypeIsComplex(GDALGetRasterDataType(b))) {
            if (GDALRasterIO(b, GF_Read, ox, oy, c, c, cbuf, c, c, GDT_CFloat32, 0, 0) != CE_None)
                return dp_error(DISOPT_ERR_IO, "%s: read failed: %s", path, gdal_msg());
            for (size_t p = 0; p < P; p++) {
                const float re = cbuf[2 * p], im = cbuf[2 * p + 1], q = re * re + im * im;
                float v;
                switch (cm) {
                case DISOPT_COMPLEX_DB:
                    v = q > 0.0f ? 10.0f * log10f(q) : NAN;
                    break;
                case DISOPT_COMPLEX_INTENSITY:
                    v = q;
                    break;
                case DISOPT_COMPLEX_AMPLITUDE:
                    v = sqrtf(q);
                    break;
                default:
                    return dp_error(DISOPT_ERR_INPUT, "%s: complex band refused", path);
                }
                dst[p] = v;
            }
        } else if (GDALRasterIO(b, GF_Read, ox, oy, c, c, dst, c, c, GDT_Float32, 0, 0) != CE_None) {
            return dp_error(DISOPT_ERR_IO, "%s: read failed: %s", path, gdal_msg());
        }
        for (size_t p = 0; p < P; p++)
            if (isnan(dst[p]) || isinf(dst[p]) || (has_nd && (double)dst[p] == (double)(float)nd))
                valid[p] = 0;
    }
    return DISOPT_OK;
}

/* a MEM dataset of c x c pixels, nb bands of type t, on the sample grid shifted to (ox, oy) */
static GDALDatasetH mem_window(const dp_sample *sm, int ox, int oy, int c, int nb, GDALDataType t) {
    GDALDriverH drv = GDALGetDriverByName("MEM");
    if (!drv)
        return NULL;
    GDALDatasetH m = GDALCreate(drv, "", c, c, nb, t, NULL);
    if (!m)
        return NULL;
    double gt[6];
    memcpy(gt, sm->gt, sizeof gt);
    gt[0] = sm->gt[0] + ox * sm->gt[1] + oy * sm->gt[2];
    gt[3] = sm->gt[3] + ox * sm->gt[4] + oy * sm->gt[5];
    GDALSetGeoTransform(m, gt);
    if (sm->wkt[0])
        GDALSetProjection(m, sm->wkt);
    return m;
}

/* warps every band of src onto the window; NaN where nothing was warped (outside, source nodata) */
static disopt_status warp_window(const dp_sample *sm, GDALDatasetH src, const char *path, int ox, int oy, int c,
                                 const char *resampling, GDALDatasetH *out) {
    const int nb = GDALGetRasterCount(src);
    GDALDatasetH m = mem_window(sm, ox, oy, c, nb, GDT_Float32);
    if (!m)
        return dp_error(DISOPT_ERR_IO, "MEM dataset: %s", gdal_msg());
    for (int i = 1; i <= nb; i++) {
        GDALRasterBandH b = GDALGetRasterBand(m, i);
        GDALSetRasterNoDataValue(b, NAN);
        GDALFillRaster(b, NAN, 0.0);
    }
    /* every band is data (a 4-band Byte GeoTIFF is RGBA to GDAL: no alpha here), the exact transformer (so a
     * crop's pixels equal the whole grid's), and the window starts as nodata (NaN) */
    char *args[] = {"-r", (char *)resampling, "-et", "0", "-nosrcalpha", "-wo", "INIT_DEST=NO_DATA", "-q", NULL};
    GDALWarpAppOptions *wo = GDALWarpAppOptionsNew(args, NULL);
    int err = 0;
    GDALDatasetH r = wo ? GDALWarp(NULL, m, 1, &src, wo, &err) : NULL;
    GDALWarpAppOptionsFree(wo);
    if (!r || err) {
        GDALClose(m);
        return dp_error(DISOPT_ERR_IO, "%s: warping onto the SAR grid failed: %s", path, gdal_msg());
    }
    *out = m;
    return DISOPT_OK;
}

static disopt_status read_input(const dp_sample *sm, const char *path, GDALDatasetH d, int direct, const int *bands,
                                int nb, int ox, int oy, int c, disopt_complex_mode cm, float *out, uint8_t *valid,
                                float *cbuf) {
    if (direct)
        return read_direct(d, path, bands, nb, ox, oy, c, cm, out, valid, cbuf);
    /* complex sources are converted by warping their intensity? refuse: warp works on real values */
    for (int i = 0; i < nb; i++)
        if (GDALDataTypeIsComplex(GDALGetRasterDataType(GDALGetRasterBand(d, bands[i]))))
            return dp_error(DISOPT_ERR_UNSUPPORTED, "%s: a complex raster off the SAR grid cannot be warped", path);
    GDALDatasetH m = NULL;
    DP_TRY(warp_window(sm, d, path, ox, oy, c, "bilinear", &m));
    disopt_status s = read_direct(m, path, bands, nb, 0, 0, c, cm, out, valid, cbuf);
    GDALClose(m);
    return s;
}

static int is_area_geom(OGRwkbGeometryType t) {
    t = wkbFlatten(t);
    return t == wkbPolygon || t == wkbMultiPolygon || t == wkbCurvePolygon || t == wkbMultiSurface;
}

static disopt_status rasterize_label(const dp_sample *sm, double min_area, int ox, int oy, int c, uint8_t *lab) {
    GDALDatasetH v = GDALOpenEx(sm->label, GDAL_OF_VECTOR | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
    if (!v)
        return dp_error(DISOPT_ERR_IO, "%s: cannot open: %s", sm->label, gdal_msg());
    GDALDatasetH m = mem_window(sm, ox, oy, c, 1, GDT_Byte);
    if (!m) {
        GDALClose(v);
        return dp_error(DISOPT_ERR_IO, "MEM dataset: %s", gdal_msg());
    }
    OGRSpatialReferenceH dst = NULL;
    if (sm->wkt[0]) {
        dst = OSRNewSpatialReference(sm->wkt);
        if (dst)
            OSRSetAxisMappingStrategy(dst, OAMS_TRADITIONAL_GIS_ORDER);
    }
    double unit = dst && OSRIsProjected(dst) ? OSRGetLinearUnits(dst, NULL) : 1.0;
    disopt_status s = DISOPT_OK;
    OGRGeometryH *geoms = NULL;
    int ng = 0, cap = 0;
    for (int li = 0; s == DISOPT_OK && li < GDALDatasetGetLayerCount(v); li++) {
        OGRLayerH L = GDALDatasetGetLayer(v, li);
        OGRSpatialReferenceH src = OGR_L_GetSpatialRef(L);
        OGRCoordinateTransformationH ct = NULL;
        if (src && dst && !OSRIsSame(src, dst)) {
            OGRSpatialReferenceH sc = OSRClone(src);
            OSRSetAxisMappingStrategy(sc, OAMS_TRADITIONAL_GIS_ORDER);
            ct = OCTNewCoordinateTransformation(sc, dst);
            OSRDestroySpatialReference(sc);
            if (!ct)
                s = dp_error(DISOPT_ERR_INPUT, "%s: no transformation to the SAR CRS: %s", sm->label, gdal_msg());
        }
        OGR_L_ResetReading(L);
        OGRFeatureH f;
        while (s == DISOPT_OK && (f = OGR_L_GetNextFeature(L)) != NULL) {
            OGRGeometryH g0 = OGR_F_GetGeometryRef(f);
            if (g0 && is_area_geom(OGR_G_GetGeometryType(g0))) {
                OGRGeometryH g = OGR_G_Clone(g0);
                if (ct && OGR_G_Transform(g, ct) != OGRERR_NONE) {
                    OGR_G_DestroyGeometry(g);
                    g = NULL;
                }
                if (g && OGR_G_Area(g) * unit * unit <= min_area) {
                    OGR_G_DestroyGeometry(g);
                    g = NULL;
                }
                if (g) {
                    if (ng == cap) {
                        int nc = cap ? 2 * cap : 64;
                        OGRGeometryH *ngs = realloc(geoms, (size_t)nc * sizeof *ngs);
                        if (!ngs) {
                            OGR_G_DestroyGeometry(g);
                            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
                        } else {
                            geoms = ngs;
                            cap = nc;
                        }
                    }
                    if (s == DISOPT_OK)
                        geoms[ng++] = g;
                }
            }
            OGR_F_Destroy(f);
        }
        if (ct)
            OCTDestroyCoordinateTransformation(ct);
    }
    if (s == DISOPT_OK && ng > 0) {
        int band = 1;
        double *burn = malloc((size_t)ng * sizeof *burn);
        if (!burn)
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        for (int i = 0; s == DISOPT_OK && i < ng; i++)
            burn[i] = 1.0;
        if (s == DISOPT_OK &&
            GDALRasterizeGeometries(m, 1, &band, ng, geoms, NULL, NULL, burn, NULL, NULL, NULL) != CE_None)
            s = dp_error(DISOPT_ERR_IO, "%s: rasterizing failed: %s", sm->label, gdal_msg());
        free(burn);
    }
    if (s == DISOPT_OK &&
        GDALRasterIO(GDALGetRasterBand(m, 1), GF_Read, 0, 0, c, c, lab, c, c, GDT_Byte, 0, 0) != CE_None)
        s = dp_error(DISOPT_ERR_IO, "label read failed: %s", gdal_msg());
    for (int i = 0; i < ng; i++)
        OGR_G_DestroyGeometry(geoms[i]);
    free(geoms);
    OSRDestroySpatialReference(dst);
    GDALClose(m);
    GDALClose(v);
    return s;
}

static disopt_status read_label(const dp_sample *sm, double min_area, int ox, int oy, int c, int32_t *target,
                                uint8_t *valid, float *tmp) {
    const size_t P = (size_t)c * c;
    if (sm->label_vector) {
        uint8_t *lab = (uint8_t *)tmp;
        DP_TRY(rasterize_label(sm, min_area, ox, oy, c, lab));
        for (size_t p = 0; p < P; p++)
            target[p] = lab[p] != 0;
        return DISOPT_OK;
    }
    GDALDatasetH d = GDALOpenEx(sm->label, GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
    if (!d)
        return dp_error(DISOPT_ERR_IO, "%s: cannot open: %s", sm->label, gdal_msg());
    disopt_status s = DISOPT_OK;
    GDALDatasetH src = d, m = NULL;
    int x = ox, y = oy;
    if (!sm->label_direct) {
        s = warp_window(sm, d, sm->label, ox, oy, c, "near", &m);
        src = m;
        x = y = 0;
    }
    if (s == DISOPT_OK) {
        GDALRasterBandH b = GDALGetRasterBand(src, 1);
        int has_nd = 0;
        double nd = GDALGetRasterNoDataValue(b, &has_nd);
        if (GDALRasterIO(b, GF_Read, x, y, c, c, tmp, c, c, GDT_Float32, 0, 0) != CE_None)
            s = dp_error(DISOPT_ERR_IO, "%s: read failed: %s", sm->label, gdal_msg());
        for (size_t p = 0; s == DISOPT_OK && p < P; p++) {
            const float v = tmp[p];
            if (isnan(v) || (has_nd && (double)v == (double)(float)nd)) {
                valid[p] = 0;
                target[p] = 0;
            } else {
                target[p] = v != 0.0f;
            }
        }
    }
    if (m)
        GDALClose(m);
    GDALClose(d);
    return s;
}

static void reverse_f(float *p, size_t n) {
    for (size_t i = 0, j = n - 1; i < j; i++, j--) {
        float t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void flip_rows_f(float *p, int c) {
    for (int y = 0; y < c; y++)
        for (int i = 0, j = c - 1; i < j; i++, j--) {
            float t = p[(size_t)y * c + i];
            p[(size_t)y * c + i] = p[(size_t)y * c + j];
            p[(size_t)y * c + j] = t;
        }
}

static void reverse_i(int32_t *p, size_t n) {
    for (size_t i = 0, j = n - 1; i < j; i++, j--) {
        int32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void flip_rows_i(int32_t *p, int c) {
    for (int y = 0; y < c; y++)
        for (int i = 0, j = c - 1; i < j; i++, j--) {
            int32_t t = p[(size_t)y * c + i];
            p[(size_t)y * c + i] = p[(size_t)y * c + j];
            p[(size_t)y * c + j] = t;
        }
}

static void reverse_u8(uint8_t *p, size_t n) {
    for (size_t i = 0, j = n - 1; i < j; i++, j--) {
        uint8_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void flip_rows_u8(uint8_t *p, int c) {
    for (int y = 0; y < c; y++)
        for (int i = 0, j = c - 1; i < j; i++, j--) {
            uint8_t t = p[(size_t)y * c + i];
            p[(size_t)y * c + i] = p[(size_t)y * c + j];
            p[(size_t)y * c + j] = t;
        }
}

/* raw 0 on invalid pixels, then x' = (x * scale - mean) / std */
static void normalise(const dp_ds_options *o, float *x, int nb, size_t P, const uint8_t *ok) {
    for (int b = 0; b < nb; b++)
        for (size_t p = 0; p < P; p++) {
            float v = ok[p] ? x[(size_t)b * P + p] : 0.0f;
            x[(size_t)b * P + p] = (v * o->norm_scale - o->norm_mean) / o->norm_std;
        }
}

static void orient(float *x, int nb, int c, int rotate, int flip) {
    const size_t P = (size_t)c * c;
    for (int b = 0; b < nb; b++) {
        if (rotate)
            reverse_f(x + (size_t)b * P, P);
        if (flip)
            flip_rows_f(x + (size_t)b * P, c);
    }
}

disopt_status dp_dataset_load(const dp_dataset *ds, int val, int index, int x0, int y0, int flip, float *x, float *xt,
                              int32_t *target, uint8_t *valid) {
    if (!ds || !x || !target || !valid || index < 0 || index >= ds->count[val ? 1 : 0])
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dataset_load: bad argument");
    const dp_ds_options *o = &ds->o;
    const dp_sample *sm = &ds->s[ds->idx[val ? 1 : 0][index]];
    const int c = o->crop, C = o->channels;
    const size_t P = (size_t)c * c;
    if (x0 < 0 || y0 < 0 || x0 + c > sm->w || y0 + c > sm->h)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dataset_load: crop (%d, %d) outside %d x %d", x0, y0, sm->w,
                        sm->h);
    if (o->stage == 2 && !xt)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dataset_load: stage 2 needs the teacher buffer");
    const int ox = sm->rotate ? sm->w - x0 - c : x0, oy = sm->rotate ? sm->h - y0 - c : y0;
    CPLPushErrorHandler(CPLQuietErrorHandler); /* this thread's GDAL messages end up in ours */
    int sb[DISOPT_MAX_BANDS], obd[DISOPT_MAX_BANDS];
    for (int i = 0; i < C; i++) {
        sb[i] = o->n_sar_bands ? o->sar_bands[i] : i + 1;
        obd[i] = o->n_opt_bands ? o->opt_bands[i] : i + 1;
    }
    uint8_t *ok_s = malloc(P), *ok_o = malloc(P);
    float *tmp = malloc(2 * P * sizeof(float));
    disopt_status s = DISOPT_OK;
    if (!ok_s || !ok_o || !tmp)
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    if (s == DISOPT_OK) {
        memset(ok_s, 1, P);
        memset(ok_o, 1, P);
    }
    float *xo = o->stage == 2 ? xt : x; /* where the optical goes */
    /* the optical */
    if (s == DISOPT_OK) {
        GDALDatasetH d =
            GDALOpenEx(sm->opt, GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
        if (!d)
            s = dp_error(DISOPT_ERR_IO, "%s: cannot open: %s", sm->opt, gdal_msg());
        else {
            s = read_input(sm, sm->opt, d, sm->opt_direct, obd, C, ox, oy, c, o->complex_mode, xo, ok_o, tmp);
            GDALClose(d);
        }
    }
    /* the SAR (stage 2) */
    if (s == DISOPT_OK && o->stage == 2) {
        GDALDatasetH d =
            GDALOpenEx(sm->sar, GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
        if (!d)
            s = dp_error(DISOPT_ERR_IO, "%s: cannot open: %s", sm->sar, gdal_msg());
        else {
            s = read_direct(d, sm->sar, sb, C, ox, oy, c, o->complex_mode, x, ok_s, tmp);
            GDALClose(d);
        }
    }
    if (s == DISOPT_OK) {
        memset(valid, 1, P);
        s = read_label(sm, o->min_area, ox, oy, c, target, valid, tmp);
    }
    if (s == DISOPT_OK) {
        for (size_t p = 0; p < P; p++)
            valid[p] = valid[p] && ok_o[p] && (o->stage == 1 || ok_s[p]);
        normalise(o, xo, C, P, ok_o);
        if (o->stage == 2)
            normalise(o, x, C, P, ok_s);
        orient(x, C, c, sm->rotate, flip);
        if (o->stage == 2)
            orient(xt, C, c, sm->rotate, flip);
        if (sm->rotate) {
            reverse_i(target, P);
            reverse_u8(valid, P);
        }
        if (flip) {
            flip_rows_i(target, c);
            flip_rows_u8(valid, c);
        }
    }
    free(ok_s);
    free(ok_o);
    free(tmp);
    CPLPopErrorHandler();
    return s;
}

/* ---------------------------------------------------------------- the loader */
typedef struct {
    dp_batch b;
    int done; /* items loaded */
} slot;

struct dp_loader {
    const dp_dataset *ds;
    int val, batch, nthreads, Q;
    uint64_t seed;
    int64_t n_batches;
    slot *slots;
    int *perm; /* the epoch's permutation (training) */
    int64_t epoch, first, count;
    int64_t next_item; /* next item to claim, relative to first * batch */
    int64_t released;  /* batches handed back (relative to first) */
    int64_t current;   /* the batch handed out last (relative), -1 none */
    int active;        /* workers inside an item */
    int stop, quit;
    disopt_status err;
    char errmsg[1024];
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    pthread_t *th;
    int n_th;
};

static uint64_t perm_seed(uint64_t seed) { return seed ^ 0x9e3779b97f4a7c15ULL; }

static void make_perm(uint64_t seed, int64_t epoch, int n, int *perm) {
    for (int i = 0; i < n; i++)
        perm[i] = i;
    const uint64_t base = (uint64_t)epoch << 32;
    for (int i = n - 1; i > 0; i--) {
        uint32_t w = dp_rng_word(perm_seed(seed), base, (uint64_t)(n - 1 - i));
        int j = (int)(w % (uint32_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static void item_draw(const dp_loader *l, const int *perm, int64_t epoch, int64_t k, int *sample, int *x0, int *y0,
                      int *flip) {
    const dp_dataset *ds = l->ds;
    const int n = ds->count[l->val];
    const int c = ds->o.crop;
    if (l->val) {
        *sample = (int)k;
        const dp_sample *sm = &ds->s[ds->idx[1][k]];
        *x0 = (sm->w - c) / 2;
        *y0 = (sm->h - c) / 2;
        *flip = 0;
        return;
    }
    *sample = perm[k % n];
    const dp_sample *sm = &ds->s[ds->idx[0][*sample]];
    uint32_t w[4];
    dp_rng_block(l->seed, ((uint64_t)epoch << 32) | (uint64_t)(k & 0xffffffff), w);
    *x0 = (int)(w[0] % (uint32_t)(sm->w - c + 1));
    *y0 = (int)(w[1] % (uint32_t)(sm->h - c + 1));
    *flip = (int)(w[2] >> 31);
}

void dp_loader_item(const dp_loader *l, int64_t epoch, int64_t k, int *sample, int *x0, int *y0, int *flip) {
    const int n = l->ds->count[l->val];
    int *perm = malloc((size_t)n * sizeof *perm);
    if (!perm) {
        *sample = *x0 = *y0 = *flip = -1;
        return;
    }
    make_perm(l->seed, epoch, n, perm);
    item_draw(l, perm, epoch, k, sample, x0, y0, flip);
    free(perm);
}

/* loads item j (relative to the schedule) into its slot; no lock held */
static disopt_status load_item(dp_loader *l, int64_t j) {
    const int64_t rb = j / l->batch, k = j % l->batch;
    slot *sl = &l->slots[rb % l->Q];
    const dp_ds_options *o = &l->ds->o;
    const size_t P = (size_t)o->crop * o->crop, X = (size_t)o->channels * P;
    float *x = sl->b.x + k * X, *xt = sl->b.xt ? sl->b.xt + k * X : NULL;
    int32_t *tg = sl->b.target + k * P;
    uint8_t *vd = sl->b.valid + k * P;
    const int64_t item = (l->first + rb) * l->batch + k; /* position in the epoch */
    const int n = l->ds->count[l->val];
    if (l->val && item >= n) { /* padding */
        memset(x, 0, X * sizeof *x);
        if (xt)
            memset(xt, 0, X * sizeof *xt);
        memset(tg, 0, P * sizeof *tg);
        memset(vd, 0, P);
        return DISOPT_OK;
    }
    int sample, x0, y0, flip;
    item_draw(l, l->perm, l->epoch, item, &sample, &x0, &y0, &flip);
    return dp_dataset_load(l->ds, l->val, sample, x0, y0, flip, x, xt, tg, vd);
}

static void *worker(void *arg) {
    dp_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && (l->stop || l->err != DISOPT_OK || l->next_item >= l->count * l->batch ||
                            l->next_item / l->batch >= l->released + l->Q))
            pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->quit)
            break;
        const int64_t j = l->next_item++;
        l->active++;
        pthread_mutex_unlock(&l->mu);
        disopt_status s = load_item(l, j);
        char msg[1024] = "";
        if (s != DISOPT_OK)
            snprintf(msg, sizeof msg, "%s", disopt_last_error());
        pthread_mutex_lock(&l->mu);
        l->active--;
        if (s != DISOPT_OK && l->err == DISOPT_OK) {
            l->err = s;
            snprintf(l->errmsg, sizeof l->errmsg, "%s", msg);
        }
        l->slots[(j / l->batch) % l->Q].done++;
        pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

void dp_loader_destroy(dp_loader *l) {
    if (!l)
        return;
    if (l->n_th > 0) {
        pthread_mutex_lock(&l->mu);
        l->quit = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->n_th; i++)
            pthread_join(l->th[i], NULL);
    }
    if (l->th) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
    }
    for (int q = 0; l->slots && q < l->Q; q++) {
        free(l->slots[q].b.x);
        free(l->slots[q].b.xt);
        free(l->slots[q].b.target);
        free(l->slots[q].b.valid);
    }
    free(l->slots);
    free(l->perm);
    free(l->th);
    free(l);
}

disopt_status dp_loader_create(const dp_dataset *ds, int val, int batch, int nthreads, uint64_t seed, dp_loader **out) {
    if (!ds || !out || batch < 1 || nthreads < 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "loader: bad argument");
    *out = NULL;
    val = val ? 1 : 0;
    const int n = ds->count[val];
    if (n < 1)
        return dp_error(DISOPT_ERR_INPUT, "loader: no %s sample", val ? "validation" : "training");
    dp_loader *l = calloc(1, sizeof *l);
    if (!l)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    l->ds = ds;
    l->val = val;
    l->batch = batch;
    l->nthreads = nthreads;
    l->seed = seed;
    l->Q = nthreads + 1 < 2 ? 2 : nthreads + 1;
    l->n_batches = val ? (n + batch - 1) / batch : (n / batch > 0 ? n / batch : 1);
    l->current = -1;
    const dp_ds_options *o = &ds->o;
    const size_t P = (size_t)o->crop * o->crop, X = (size_t)o->channels * P;
    disopt_status s = DISOPT_OK;
    l->slots = calloc((size_t)l->Q, sizeof *l->slots);
    l->perm = malloc((size_t)n * sizeof *l->perm);
    if (!l->slots || !l->perm)
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    for (int q = 0; s == DISOPT_OK && q < l->Q; q++) {
        dp_batch *b = &l->slots[q].b;
        b->n = batch;
        b->x = malloc((size_t)batch * X * sizeof(float));
        b->xt = o->stage == 2 ? malloc((size_t)batch * X * sizeof(float)) : NULL;
        b->target = malloc((size_t)batch * P * sizeof(int32_t));
        b->valid = malloc((size_t)batch * P);
        if (!b->x || (o->stage == 2 && !b->xt) || !b->target || !b->valid)
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "loader: out of memory (%d crops of %d x %d)", batch, o->crop,
                         o->crop);
    }
    if (s == DISOPT_OK && nthreads > 0) {
        l->th = calloc((size_t)nthreads, sizeof *l->th);
        if (!l->th) {
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        } else {
            pthread_mutex_init(&l->mu, NULL);
            pthread_cond_init(&l->cv_work, NULL);
            pthread_cond_init(&l->cv_done, NULL);
            l->stop = 1;
            for (int i = 0; i < nthreads && s == DISOPT_OK; i++) {
                if (pthread_create(&l->th[i], NULL, worker, l) != 0)
                    s = dp_error(DISOPT_ERR_BACKEND, "loader: cannot start a thread");
                else
                    l->n_th++;
            }
        }
    }
    if (s != DISOPT_OK) {
        dp_loader_destroy(l);
        return s;
    }
    *out = l;
    return DISOPT_OK;
}

int64_t dp_loader_batches(const dp_loader *l) { return l ? l->n_batches : 0; }

void dp_loader_end(dp_loader *l) {
    if (!l || l->n_th == 0)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    while (l->active > 0)
        pthread_cond_wait(&l->cv_done, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

disopt_status dp_loader_begin(dp_loader *l, int64_t epoch, int64_t first, int64_t count) {
    if (!l || epoch < 0 || first < 0 || count < 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "loader: bad schedule");
    dp_loader_end(l);
    if (!l->val)
        make_perm(l->seed, epoch, l->ds->count[0], l->perm);
    if (l->n_th)
        pthread_mutex_lock(&l->mu);
    l->epoch = epoch;
    l->first = first;
    l->count = count;
    l->next_item = 0;
    l->released = 0;
    l->current = -1;
    l->err = DISOPT_OK;
    l->errmsg[0] = '\0';
    for (int q = 0; q < l->Q; q++)
        l->slots[q].done = 0;
    l->stop = 0;
    if (l->n_th) {
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
    }
    return DISOPT_OK;
}

disopt_status dp_loader_next(dp_loader *l, const dp_batch **b) {
    if (!l || !b)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "loader: NULL argument");
    *b = NULL;
    const int64_t want = l->current + 1;
    if (want >= l->count)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "loader: no batch left in the schedule");
    slot *sl = &l->slots[want % l->Q];
    if (l->n_th == 0) {
        for (int k = 0; k < l->batch; k++)
            DP_TRY(load_item(l, want * l->batch + k));
    } else {
        pthread_mutex_lock(&l->mu);
        if (l->current >= 0) { /* hand the previous batch back */
            l->slots[l->current % l->Q].done = 0;
            l->released = l->current + 1;
            pthread_cond_broadcast(&l->cv_work);
        }
        while (l->err == DISOPT_OK && sl->done < l->batch)
            pthread_cond_wait(&l->cv_done, &l->mu);
        disopt_status s = l->err;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", l->errmsg);
        pthread_mutex_unlock(&l->mu);
        if (s != DISOPT_OK)
            return dp_error(s, "%s", msg);
    }
    l->current = want;
    sl->b.index = l->first + want;
    const int n = l->ds->count[l->val];
    const int64_t start = (l->first + want) * l->batch;
    sl->b.n_real = l->val ? (int)(n - start < l->batch ? n - start : l->batch) : l->batch;
    *b = &sl->b;
    return DISOPT_OK;
}
