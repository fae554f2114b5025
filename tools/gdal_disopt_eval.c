/*
 * gdal_disopt_eval - scores building predictions against ground truth: pixel Dice / IoU /
 * precision / recall and the SpaceNet building F1, for one pair or a list of pairs. A thin main
 * over include/disopt_eval.h; the page is tools/doc/gdal_disopt_eval.md.
 * Exit codes: 0 success, 1 failure, 2 usage.
 */
#include "disopt.h"
#include "disopt_eval.h"
#include "tool_version.h"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "Usage: gdal_disopt_eval [--help] [--help-general] [--version] [-q]\n"
            "                        [-of TEXT|JSON|CSV] [-o OUTPUT]\n"
            "                        [-threshold T] [-iou T] [-min_area M2] [-min_pixels N]\n"
            "                        [-connectivity 4|8] [-l LAYER]... [-where EXPR]\n"
            "                        (PREDICTION TRUTH | -list PAIRS.csv)\n"
            "\n"
            "PREDICTION: a raster; band 1 is a mask (integer: nonzero = building) or a probability\n"
            "            (float: building where value > threshold). Nodata pixels are ignored.\n"
            "TRUTH:      a raster mask on the same grid (nonzero = building; nodata ignored), or a\n"
            "            vector file of building polygons (any OGR format and CRS), rasterized onto the\n"
            "            prediction grid (pixel centres; polygons of <= 20 m^2 dropped).\n"
            "-list:      a CSV file with 'prediction,truth' per line (relative to the CSV's folder);\n"
            "            the building F1 is computed from TP/FP/FN summed over all pairs.\n"
            "-threshold: probability threshold for float predictions (default 0.5)\n"
            "-iou:       IoU a building match needs, >= (default 0.5)\n"
            "-min_area:  smallest predicted building in m^2 (default 20; grids in a projected CRS)\n"
            "-min_pixels: smallest predicted building in pixels (default: 80 on grids without a\n"
            "            projected CRS, none on projected grids; a value given applies everywhere)\n"
            "-connectivity: polygonizing connectivity, 4 (default, as SpaceNet's solaris) or 8\n"
            "-l:         vector truth: a layer to read (repeatable; default: all layers)\n"
            "-where:     vector truth: an OGR SQL attribute filter, e.g. \"class = 'building'\"\n"
            "-of:        output format (default TEXT); -o: output file (default stdout)\n");
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "ERROR: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

static int parse_double(const char *s, double *out) {
    char *end;
    double v = CPLStrtod(s, &end);
    if (end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < -2147483647L || v > 2147483647L) return 0;
    *out = (int)v;
    return 1;
}

/* *layers (the -l names) is owned by the caller, which frees it whatever run returns */
static int run(int argc, char **argv, char ***layers_out) {
    disopt_eval_options o;
    disopt_eval_options_init(&o);
    disopt_eval_format fmt = DISOPT_EVAL_TEXT;
    const char *out_path = NULL, *list = NULL;
    const char *pos[2] = {NULL, NULL};
    int npos = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (EQUAL(a, "--help") || EQUAL(a, "-h") || EQUAL(a, "-help")) {
            usage(stdout);
            return 0;
        } else if (EQUAL(a, "-q") || EQUAL(a, "-quiet")) {
            quiet = 1;
        } else if (EQUAL(a, "-of") && has_val) {
            const char *f = argv[++i];
            if (EQUAL(f, "TEXT")) fmt = DISOPT_EVAL_TEXT;
            else if (EQUAL(f, "JSON")) fmt = DISOPT_EVAL_JSON;
            else if (EQUAL(f, "CSV")) fmt = DISOPT_EVAL_CSV;
            else return usage_error("-of %s: must be TEXT, JSON or CSV", f);
        } else if (EQUAL(a, "-o") && has_val) {
            out_path = argv[++i];
        } else if (EQUAL(a, "-list") && has_val) {
            list = argv[++i];
        } else if (EQUAL(a, "-threshold") && has_val) {
            if (!parse_double(argv[++i], &o.threshold)) return usage_error("-threshold %s: not a number", argv[i]);
        } else if (EQUAL(a, "-iou") && has_val) {
            if (!parse_double(argv[++i], &o.iou_threshold) || !(o.iou_threshold > 0 && o.iou_threshold <= 1))
                return usage_error("-iou %s: must be a number in (0, 1]", argv[i]);
        } else if ((EQUAL(a, "-min_area") || EQUAL(a, "-min-area")) && has_val) {
            if (!parse_double(argv[++i], &o.min_area_m2) || o.min_area_m2 < 0)
                return usage_error("-min_area %s: must be a number >= 0", argv[i]);
        } else if ((EQUAL(a, "-min_pixels") || EQUAL(a, "-min-pixels")) && has_val) {
            if (!parse_int(argv[++i], &o.min_pixels) || o.min_pixels < 0)
                return usage_error("-min_pixels %s: must be an integer >= 0", argv[i]);
        } else if (EQUAL(a, "-l") && has_val) {
            *layers_out = CSLAddString(*layers_out, argv[++i]);
            o.layers = (const char *const *)*layers_out;
        } else if (EQUAL(a, "-where") && has_val) {
            o.where = argv[++i];
        } else if (EQUAL(a, "-connectivity") && has_val) {
            if (!parse_int(argv[++i], &o.connectivity) || (o.connectivity != 4 && o.connectivity != 8))
                return usage_error("-connectivity %s: must be 4 or 8", argv[i]);
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option or missing value: %s", a);
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            return usage_error("too many file names (%s)", a);
        }
    }
    if (list && npos) return usage_error("%s", "give either PREDICTION TRUTH or -list, not both");
    if (!list && npos != 2) return usage_error("%s", "PREDICTION and TRUTH are needed (or -list PAIRS.csv)");

    char **preds = NULL, **truths = NULL;
    int n = 0;
    if (list) {
        if (disopt_eval_read_list(list, &preds, &truths, &n) != DISOPT_OK) {
            CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
            return 1;
        }
    } else {
        preds = CSLAddString(NULL, pos[0]);
        truths = CSLAddString(NULL, pos[1]);
        n = 1;
    }
    /* every pair is checked before any work */
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (disopt_eval_check_pair(preds[i], truths[i], &o) != DISOPT_OK) {
            CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
            bad++;
        }
    }
    VSILFILE *of = NULL;
    if (!bad && out_path) {
        of = VSIFOpenL(out_path, "wb");
        if (!of) {
            CPLError(CE_Failure, CPLE_OpenFailed, "cannot create output file '%s'", out_path);
            bad++;
        }
    }
    if (bad) {
        disopt_eval_free_list(preds);
        disopt_eval_free_list(truths);
        return 1;
    }
    disopt_eval_pair_result *res = calloc((size_t)n, sizeof *res);
    disopt_eval_counts total;
    memset(&total, 0, sizeof total);
    int rc = res ? 0 : 1;
    if (!res) CPLError(CE_Failure, CPLE_OutOfMemory, "out of memory");
    int progress = !quiet && out_path != NULL;
    for (int i = 0; !rc && i < n; i++) {
        res[i].prediction = preds[i];
        res[i].truth = truths[i];
        if (disopt_eval_pair(preds[i], truths[i], &o, &res[i].counts) != DISOPT_OK) {
            CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
            rc = 1;
            break;
        }
        disopt_eval_add(&total, &res[i].counts);
        if (progress) GDALTermProgress((double)(i + 1) / n, NULL, NULL);
    }
    char *text = NULL;
    if (!rc && disopt_eval_report(res, n, &total, &o, fmt, &text) != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
        rc = 1;
    }
    if (!rc) {
        size_t len = strlen(text);
        if (of) {
            if (VSIFWriteL(text, 1, len, of) != len) {
                CPLError(CE_Failure, CPLE_FileIO, "writing '%s' failed", out_path);
                rc = 1;
            }
        } else if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0) {
            CPLError(CE_Failure, CPLE_FileIO, "writing to stdout failed");
            rc = 1;
        }
    }
    if (of && VSIFCloseL(of) != 0 && !rc) {
        CPLError(CE_Failure, CPLE_FileIO, "closing '%s' failed", out_path);
        rc = 1;
    }
    free(text);
    free(res);
    disopt_eval_free_list(preds);
    disopt_eval_free_list(truths);
    return rc;
}

int main(int argc, char **argv) {
    if (disopt_tool_version("gdal_disopt_eval", argc, argv))
        return 0;
    GDALAllRegister();
    argc = GDALGeneralCmdLineProcessor(argc, &argv, 0);
    if (argc < 1) { /* --version, --formats, ... handled; a bad --config is < 0 */
        GDALDestroyDriverManager();
        return argc == 0 ? 0 : 2;
    }
    char **layers = NULL;
    int rc = run(argc, argv, &layers);
    CSLDestroy(layers);
    CSLDestroy(argv);
    GDALDestroyDriverManager();
    return rc;
}
