/*
 * gdal_disopt_synth - writes a synthetic SpaceNet-6-like scene set (SAR-Intensity/, PS-RGB/,
 * geojson_buildings/, tiles.csv, SAR_orientations.txt), deterministic by --seed; or (--stats) prints
 * statistics of a 4-band SAR raster for comparing products. A thin main over include/disopt_synth.h.
 * Exit codes: 0 success, 1 failure, 2 usage error.
 */
#include "disopt.h"
#include "disopt_synth.h"
#include "tool_version.h"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <gdal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(int rc) {
    FILE *f = rc ? stderr : stdout;
    fprintf(f,
            "Usage: gdal_disopt_synth [--help] [--help-general] [--version] [-q]\n"
            "         --out DIR [--tiles N] [--size PX] [--res M] [--seed S] [--split TRAIN,VAL,TEST]\n"
            "       gdal_disopt_synth --stats FILE [--sn6] [--block K]\n"
            "  --out DIR       where to write SAR-Intensity/, PS-RGB/, geojson_buildings/, tiles.csv,\n"
            "                  SAR_orientations.txt (created as needed)\n"
            "  --tiles N       number of tiles (default 8)\n"
            "  --size PX       tile width and height in pixels, 32..4096 (default 900)\n"
            "  --res M         pixel size in metres (default 0.5)\n"
            "  --seed S        random seed, an unsigned 64-bit integer (default 1); same seed, same bytes\n"
            "  --split A,B,C   train, val, test fractions (default 0.7,0.15,0.15)\n"
            "  -q              quiet: no progress, no summary\n"
            "  --stats FILE    statistics (in dB) of bands 1-4 of FILE: --sn6 if FILE holds SpaceNet-6-like\n"
            "                  values (v = %.1f * dB + %.0f, 0 = nodata), else FILE is taken as dB;\n"
            "                  --block K first averages linear intensity over K x K pixels\n",
            DISOPT_SYNTH_DB_SCALE, DISOPT_SYNTH_DB_OFFSET);
    return rc;
}

static int parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < -2147483647L || v > 2147483647L) return 0;
    *out = (int)v;
    return 1;
}

static int stats_main(const char *path, int sn6, int block) {
    disopt_sar_stats st;
    if (disopt_sar_stats_compute(path, sn6, block, &st) != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
        return 1;
    }
    static const char *names[4] = {"HH", "HV", "VH", "VV"};
    printf("file: %s (%s values%s)\nvalid pixels: %lld of %lld\n", path, sn6 ? "SN6-like" : "dB",
           block > 1 ? ", multilooked" : "", (long long)st.valid, (long long)st.total);
    if (block > 1) printf("block: %d x %d\n", block, block);
    printf("band      min     max    mean     std      p1      p5     p25     p50     p75     p95     p99   (dB)\n");
    for (int b = 0; b < 4; b++) {
        const disopt_sar_band_stats *s = &st.band[b];
        printf("%-4s %8.2f%8.2f%8.2f%8.2f", names[b], s->min, s->max, s->mean, s->std);
        for (int k = 0; k < 7; k++) printf("%8.2f", s->pct[k]);
        printf("\n");
    }
    printf("mean HH-HV: %.2f dB\nmean |HV-VH|: %.2f dB\ncorrelation HV/VH (dB): %.3f\n", st.hh_minus_hv,
           st.hv_minus_vh_abs, st.corr_hv_vh);
    printf("homogeneous areas (5th percentile of 7x7 windows, linear HH): CV %.3f, ENL %.2f\n", st.cv_homog,
           st.enl_homog);
    if (sn6) {
        printf("as SN6-like values (v = %.1f * dB + %.0f): mean", DISOPT_SYNTH_DB_SCALE, DISOPT_SYNTH_DB_OFFSET);
        for (int b = 0; b < 4; b++) printf(" %.2f", DISOPT_SYNTH_DB_SCALE * st.band[b].mean + DISOPT_SYNTH_DB_OFFSET);
        printf(", std");
        for (int b = 0; b < 4; b++) printf(" %.2f", DISOPT_SYNTH_DB_SCALE * st.band[b].std);
        printf("\n");
    }
    return 0;
}

int main(int argc, char **argv) {
    if (disopt_tool_version("gdal_disopt_synth", argc, argv))
        return 0;
    GDALAllRegister();
    argc = GDALGeneralCmdLineProcessor(argc, &argv, 0);
    if (argc < 1) {
        GDALDestroyDriverManager();
        return 0; /* --version, --formats, --help-general, ... handled */
    }
    disopt_synth_options o;
    disopt_synth_options_init(&o);
    const char *out = NULL, *stats = NULL;
    int quiet = 0, sn6 = 0, block = 1, rc = -1;
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (EQUAL(a, "--help") || EQUAL(a, "-h")) rc = usage(0);
        else if (EQUAL(a, "-q") || EQUAL(a, "--quiet")) quiet = 1;
        else if (EQUAL(a, "--out") && more) out = argv[++i];
        else if (EQUAL(a, "--tiles") && more) {
            if (!parse_int(argv[++i], &o.num_tiles)) rc = 2;
        } else if (EQUAL(a, "--size") && more) {
            if (!parse_int(argv[++i], &o.size)) rc = 2;
        } else if (EQUAL(a, "--res") && more) {
            char *end;
            o.res = strtod(argv[++i], &end);
            if (*end) rc = 2;
        } else if (EQUAL(a, "--seed") && more) {
            char *end;
            const char *s = argv[++i];
            o.seed = strtoull(s, &end, 10);
            if (!*s || *end || *s == '-') rc = 2;
        } else if (EQUAL(a, "--split") && more) {
            char **t = CSLTokenizeString2(argv[++i], ",", 0);
            if (CSLCount(t) != 3) rc = 2;
            for (int k = 0; rc < 0 && k < 3; k++) {
                char *end;
                o.split[k] = strtod(t[k], &end);
                if (*end) rc = 2;
            }
            CSLDestroy(t);
        } else if (EQUAL(a, "--stats") && more) stats = argv[++i];
        else if (EQUAL(a, "--sn6")) sn6 = 1;
        else if (EQUAL(a, "--block") && more) {
            if (!parse_int(argv[++i], &block) || block < 1) rc = 2;
        } else {
            fprintf(stderr, "ERROR: unknown or incomplete option '%s'\n", a);
            rc = 2;
        }
    }
    if (rc == 2) usage(2);
    if (rc < 0 && stats) rc = stats_main(stats, sn6, block);
    if (rc < 0 && !out) {
        fprintf(stderr, "ERROR: --out DIR is required\n");
        rc = usage(2);
    }
    if (rc < 0) {
        disopt_synth_tile_info *ti = calloc((size_t)(o.num_tiles > 0 ? o.num_tiles : 1), sizeof *ti);
        if (!ti) {
            CPLError(CE_Failure, CPLE_OutOfMemory, "out of memory");
            rc = 1;
        } else {
            disopt_status st = disopt_synth_generate(out, &o, quiet ? NULL : GDALTermProgress, NULL, ti);
            if (st != DISOPT_OK) {
                CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
                rc = st == DISOPT_ERR_INVALID_ARGUMENT ? 2 : 1; /* a bad option value is a usage error */
            }
        }
        if (rc < 0) {
            rc = 0;
            if (!quiet) {
                int total = 0, south = 0;
                for (int i = 0; i < o.num_tiles; i++) total += ti[i].num_buildings, south += ti[i].orientation;
                printf("wrote %d tiles of %d x %d px at %g m to %s: %d buildings, %d tiles imaged from the south\n",
                       o.num_tiles, o.size, o.size, o.res, out, total, south);
                for (int i = 0; i < o.num_tiles; i++)
                    printf("  %s  %-10s %-5s orientation %d  incidence %.1f  buildings %d\n", ti[i].name,
                           disopt_synth_scene_name(ti[i].scene), disopt_synth_split_name(ti[i].split),
                           ti[i].orientation, ti[i].incidence_deg, ti[i].num_buildings);
            }
        }
        free(ti);
    }
    CSLDestroy(argv);
    GDALDestroyDriverManager();
    return rc;
}
