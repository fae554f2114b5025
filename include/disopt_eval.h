/*
 * disopt_eval.h - scoring building predictions against ground truth (libdisopt_raster; the
 * gdal_disopt_eval tool is a thin main over it). Same conventions as disopt.h: status + thread-local
 * message (disopt_last_error()), no global state. GDAL must be registered (GDALAllRegister) first.
 *
 * A pair is a prediction raster and a ground truth on the same grid:
 *  - prediction: band 1 of any GDAL raster. Integer bands: nonzero = building. Float bands: building
 *    where value > threshold (default 0.5, the same rule as disopt_run -mask). Pixels that are nodata
 *    (GDAL mask band: nodata value, alpha, .msk) or NaN are ignored.
 *  - truth, either
 *    - a raster (band 1, any nonzero = building; its nodata/NaN pixels are ignored) with exactly the
 *      prediction's size, geotransform and CRS, or
 *    - a vector file (any OGR format, any CRS; every polygon / multipolygon feature of every layer, or
 *      of the layers named in options.layers and passing options.where, is one building): reprojected to the prediction's CRS, clipped to the prediction's footprint,
 *      polygons of area <= min_area_m2 (20 m^2, SpaceNet 6) dropped (area measured in the prediction's
 *      CRS if projected, else the layer's if projected, else in pixels: <= 80 px or min_pixels), then
 *      rasterized onto the prediction grid with GDALRasterizeGeometries (pixel-centre rule).
 *
 * Pixel metrics count the pixels valid in both rasters: TP, FP, FN, TN; Dice = 2TP / (2TP + FP + FN),
 * IoU = TP / (TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN).
 *
 * Building (SpaceNet) metrics: the prediction mask is polygonized (GDALPolygonize, 4-connected by
 * default as in solaris, whose rasterio.features.shapes defaults to 4), each connected component one
 * polygon, holes kept. A predicted polygon counts when, on a grid in a projected CRS, its area is
 * >= min_area_m2 (20 m^2), and, on a grid without one, it has >= 80 pixels (SpaceNet's "80 px / 20 m^2"
 * are the same thing at its 0.5 m; at other resolutions the metric rule is the meaningful one). An
 * explicit min_pixels >= 0 applies on every grid, in addition. The same rule applies to truth polygons
 * made by polygonizing a truth raster, so that a perfect prediction scores F1 = 1. Truth polygons from a
 * vector file follow the rasterization rule above (area <= 20 m^2 dropped). A polygon whose pixels all lie in
 * the ignored area of the other raster is dropped too. Predictions are taken in raster order (the
 * component whose first pixel comes first in row-major order first); each is matched to the still
 * unmatched truth polygon of highest IoU, IoU = |P n T| / (|P| + |T| - |P n T|) (ties go to the earlier
 * truth polygon); the match counts when IoU >= iou_threshold (0.5; solaris requires > 0.5, which
 * differs only at exactly 0.5). Against vector truth the areas are polygon areas (OGR_G_Intersection /
 * OGR_G_Area) and IoUs within 1e-9 count as equal (floating-point areas of reprojected polygons miss
 * exact ratios such as 1/2 by ~1e-10). Against a truth raster both sides are unions of whole pixel
 * cells (exactly what GDALPolygonize traces), so the areas are pixel counts times the pixel area and
 * the IoU is computed exactly from counts, without polygons (the same numbers, much faster). Matched
 * predictions are TP, the others FP; truth polygons left unmatched are FN.
 * F1 = 2TP / (2TP + FP + FN), summed over all pairs (not averaged).
 *
 * Empty cases: a ratio whose denominator is 0 is undefined and reported as NaN (JSON null, empty CSV
 * field, "n/a" in text). So with no truth and no prediction every ratio is NaN; with no prediction,
 * precision is NaN and recall, Dice, IoU and F1 are 0; with no truth, recall is NaN and the rest 0.
 */
#ifndef DISOPT_EVAL_H
#define DISOPT_EVAL_H

#include "disopt.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct disopt_eval_options {
    double threshold;     /* float predictions: building where value > threshold (default 0.5) */
    double iou_threshold; /* a match needs IoU >= this (default 0.5) */
    double min_area_m2;   /* default 20; applies only where the grid's CRS is projected */
    int min_pixels;       /* default -1 (auto): 80 on grids without a projected CRS, else unused;
                             >= 0: applies on every grid (80 px = 20 m^2 at SpaceNet 6's 0.5 m) */
    int connectivity;     /* 4 (default, as solaris) or 8 */
    const char *const *layers; /* vector truth: names of the layers to read, NULL-terminated; NULL = all */
    const char *where;    /* vector truth: OGR SQL attribute filter (OGR_L_SetAttributeFilter); NULL = none */
} disopt_eval_options;

typedef struct disopt_eval_counts {
    int64_t tp, fp, fn, tn;       /* pixels */
    int64_t ignored;              /* pixels nodata in the prediction or outside the truth's valid area */
    int64_t bld_tp, bld_fp, bld_fn; /* buildings (polygons) */
    int64_t pred_polygons;        /* predicted polygons scored (after the size rule) */
    int64_t truth_polygons;       /* truth polygons scored */
    int64_t pred_dropped;         /* predicted polygons dropped (too small, or wholly in the ignored area) */
    int64_t truth_dropped;        /* truth polygons dropped (too small, wholly ignored, outside the grid) */
    int pairs;                    /* pairs summed into these counts */
} disopt_eval_counts;

typedef struct disopt_eval_metrics {
    double dice, iou, precision, recall;        /* pixel; NaN where undefined */
    double bld_precision, bld_recall, bld_f1;   /* building; NaN where undefined */
} disopt_eval_metrics;

typedef enum disopt_eval_format { DISOPT_EVAL_TEXT = 0, DISOPT_EVAL_JSON, DISOPT_EVAL_CSV } disopt_eval_format;

/* One scored pair, for reports. */
typedef struct disopt_eval_pair_result {
    const char *prediction;
    const char *truth;
    disopt_eval_counts counts;
} disopt_eval_pair_result;

DISOPT_API void disopt_eval_options_init(disopt_eval_options *o);

/* Opens both files and checks them without computing anything: prediction readable with one or more
 * bands; truth a raster on the same grid (size, geotransform, CRS) or a vector file with at least one
 * layer (and the named layers, and a where filter OGR accepts), with a georeferenced prediction. Errors: DISOPT_ERR_IO (missing/unreadable),
 * DISOPT_ERR_INPUT (grid mismatch, empty raster, no georeferencing, no layer),
 * DISOPT_ERR_INVALID_ARGUMENT (bad options). */
DISOPT_API disopt_status disopt_eval_check_pair(const char *prediction, const char *truth,
                                                const disopt_eval_options *o);

/* Scores one pair (after the same checks); *out is overwritten (pairs = 1). */
DISOPT_API disopt_status disopt_eval_pair(const char *prediction, const char *truth, const disopt_eval_options *o,
                                          disopt_eval_counts *out);

/* total += c (all counts, pairs included). */
DISOPT_API void disopt_eval_add(disopt_eval_counts *total, const disopt_eval_counts *c);

/* Ratios from counts (NaN where a denominator is 0). */
DISOPT_API void disopt_eval_metrics_of(const disopt_eval_counts *c, disopt_eval_metrics *m);

/* Reads a pair list: one "prediction,truth" per line (CSV quoting allowed); blank lines, lines starting
 * with '#' and a first line "prediction,truth" (any case) are skipped; relative paths are relative to
 * the list file's folder. On success *predictions and *truths are NULL-terminated string lists (free
 * with disopt_eval_free_list) of *n >= 1 entries. An empty list is DISOPT_ERR_INPUT. */
DISOPT_API disopt_status disopt_eval_read_list(const char *path, char ***predictions, char ***truths, int *n);
DISOPT_API void disopt_eval_free_list(char **list);

/* Formats a report: per pair and, if n > 1 or always for JSON/CSV, the total. *out is malloc'd text
 * (free with free()). */
DISOPT_API disopt_status disopt_eval_report(const disopt_eval_pair_result *pairs, int n,
                                            const disopt_eval_counts *total, const disopt_eval_options *o,
                                            disopt_eval_format fmt, char **out);

#ifdef __cplusplus
}
#endif

#endif
