/*
 * disopt_synth.h - synthetic SpaceNet-6-like scenes (part of libdisopt_raster).
 *
 * Writes georeferenced tiles in SpaceNet 6's formats: 4-band Float32 SAR intensity (HH, HV, VH, VV,
 * dB-like values in 0..~92, nodata 0), 3-band Byte optical (PS-RGB, nodata 0) on the same grid, and
 * the true building footprints as GeoJSON in EPSG:32631, plus a CSV list with a train/val/test split
 * and a SAR_orientations.txt-like strip file (0 = imaged from the north, 1 = from the south).
 *
 * Everything is a function of the seed alone: one counter-based random stream per tile and purpose
 * (splitmix64), no threads, no floating-point contraction, so the same seed gives the same bytes
 * (on machines with the same GDAL and libm; see tools/doc/synth.md).
 *
 * Same conventions as disopt.h: status + thread-local message (disopt_last_error), no global state.
 */
#ifndef DISOPT_SYNTH_H
#define DISOPT_SYNTH_H

#include "disopt.h"

#include <gdal.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum disopt_synth_scene {
    DISOPT_SYNTH_SUBURBAN = 0, /* small pitched-roof houses in rows, gardens, street trees */
    DISOPT_SYNTH_DENSE,        /* perimeter blocks and slabs, 12-40 m high */
    DISOPT_SYNTH_INDUSTRIAL,   /* large low halls, parking lots with vehicles */
    DISOPT_SYNTH_PORT          /* quay, water with ships, warehouses, container stacks */
} disopt_synth_scene;

typedef enum disopt_synth_split {
    DISOPT_SYNTH_TRAIN = 0,
    DISOPT_SYNTH_VAL,
    DISOPT_SYNTH_TEST
} disopt_synth_split;

typedef struct disopt_synth_options {
    int num_tiles;       /* default 8 */
    int size;            /* tile width = height in pixels, 32..4096, default 900 */
    double res;          /* metres per pixel, default 0.5 */
    uint64_t seed;       /* default 1 */
    double split[3];     /* train, val, test fractions (sum 1), default 0.7, 0.15, 0.15 */
    double origin_x;     /* UTM 31N easting of tile 0's west edge, default 594000 */
    double origin_y;     /* UTM 31N northing of tile 0's north edge, default 5750000 */
    int grid_columns;    /* tiles per row of the origin grid, default 10 */
} disopt_synth_options;

/* What one generated tile holds. */
typedef struct disopt_synth_tile_info {
    char name[96];          /* common stem: <strip>_tile_<n> */
    char strip[40];         /* synthetic strip id (two timestamps, as SpaceNet 6) */
    int orientation;        /* 0: imaged from the north (layover toward north); 1: from the south */
    disopt_synth_scene scene;
    disopt_synth_split split;
    int num_buildings;      /* polygons in the GeoJSON (footprints clipped to the tile) */
    double incidence_deg;   /* incidence angle of the strip */
} disopt_synth_tile_info;

DISOPT_API void disopt_synth_options_init(disopt_synth_options *o);
DISOPT_API const char *disopt_synth_scene_name(disopt_synth_scene s);
DISOPT_API const char *disopt_synth_split_name(disopt_synth_split s);

/* Writes the whole set under out_dir: SAR-Intensity/, PS-RGB/, geojson_buildings/, tiles.csv,
 * SAR_orientations.txt. Directories are created as needed. progress may be NULL.
 * info (optional) receives num_tiles entries. */
DISOPT_API disopt_status disopt_synth_generate(const char *out_dir, const disopt_synth_options *o,
                                               GDALProgressFunc progress, void *progress_data,
                                               disopt_synth_tile_info *info);

/* SAR value mapping used by the generator: v = DISOPT_SYNTH_DB_SCALE * 10 log10(I) + DISOPT_SYNTH_DB_OFFSET,
 * clamped to [DISOPT_SYNTH_MIN_VALUE, DISOPT_SYNTH_MAX_VALUE]; 0 is nodata. */
#define DISOPT_SYNTH_DB_SCALE 1.4
#define DISOPT_SYNTH_DB_OFFSET 48.0
#define DISOPT_SYNTH_MIN_VALUE 0.01
#define DISOPT_SYNTH_MAX_VALUE 92.0

/* Statistics of a 4-band SAR raster, for comparing the synthetic product with real ones. */
typedef struct disopt_sar_band_stats {
    double min, max, mean, std;
    double pct[7];          /* 1, 5, 25, 50, 75, 95, 99 % */
} disopt_sar_band_stats;

typedef struct disopt_sar_stats {
    int bands;
    int64_t valid;            /* pixels valid in every band */
    int64_t total;
    disopt_sar_band_stats band[4];  /* of the values as converted (see below) */
    double hh_minus_hv;       /* mean of band 1 - band 2 (converted values) */
    double hv_minus_vh_abs;   /* mean |band 2 - band 3| */
    double corr_hv_vh;        /* Pearson correlation of bands 2 and 3 */
    double cv_homog;          /* median coefficient of variation of linear intensity in the most homogeneous
                                 10 % of 7x7 windows (band 1) */
    double enl_homog;         /* 1 / cv_homog^2: equivalent number of looks there */
} disopt_sar_stats;

/* Computes statistics of bands 1..4 of a raster. Nodata: the band's nodata value, NaN, and (when
 * sn6_values) 0. Values are converted to dB first: when sn6_values, dB = (v - DISOPT_SYNTH_DB_OFFSET) /
 * DISOPT_SYNTH_DB_SCALE; else the raster is taken as dB already. block > 1 first averages linear
 * intensity over block x block cells (multilooking, to reach another product's pixel size).
 * Statistics are then reported in dB. */
DISOPT_API disopt_status disopt_sar_stats_compute(const char *path, int sn6_values, int block, disopt_sar_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* DISOPT_SYNTH_H */
