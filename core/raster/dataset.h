/*
 * dataset.h - the training data pipeline of gdal_disopt_train (issue 6), internal API of disopt_raster.
 *
 * A dataset is a CSV list of samples "sar,optical,label[,split][,rotate180]" (header line; paths relative to
 * the list's folder; '#' lines and empty lines skipped). Every sample lives on the grid of its SAR raster
 * (stage 1 without a SAR column: of its optical raster):
 *  - the optical raster is read directly when it shares that grid (size, geotransform, CRS), else warped
 *    onto it with GDALWarp (bilinear, exact transformer: -et 0) into a MEM dataset of the crop;
 *  - the label is a raster mask (nonzero = building; read directly or warped with nearest) or a vector
 *    file (any OGR format): features reprojected to the grid's CRS, polygons of area <= min_area (m^2)
 *    dropped, the rest burnt with GDAL's pixel-centre rule;
 *  - a pixel is invalid (the losses' valid mask = 0) when any used band of an input is nodata or NaN
 *    there, the warped optical does not cover it, or the label raster is nodata there. Invalid pixels are
 *    fed as raw 0 in every band of that input, before the band normalisation x' = (x * scale - mean) / std.
 *  - Complex (SLC) bands are refused unless a complex mode converts them (DISOPT_COMPLEX_DB: 10 log10 |z|^2).
 * dp_dataset_open checks every sample up front (files, band counts, complex bands, crop <= raster, grids
 * that can be aligned and overlap), so that bad input fails before any training.
 *
 * The loader produces batches of crops with a small pthread pool ahead of the consumer. What a batch holds
 * is a pure function of (seed, epoch, batch index): the epoch's sample order is a Philox-drawn permutation,
 * each item's crop offset and horizontal flip (p = 0.5) are drawn from its own Philox block, so results do
 * not depend on the number of loader threads or their timing. Validation batches: the samples in list
 * order, centre crops, no flip; the last batch is padded with invalid items (n_real says how many count).
 * Samples with rotate180 are rotated 180 degrees (with their optical and label) before cropping.
 * Errors: disopt_status + dp_error; GDAL messages are folded into ours; no global state.
 */
#ifndef DISOPT_RASTER_DATASET_H
#define DISOPT_RASTER_DATASET_H

#include "disopt_raster.h"

#include <stdint.h>

typedef struct dp_ds_options {
    int stage;    /* 1: the input is the optical image; 2: the input is SAR, the optical feeds the teacher */
    int channels; /* model input channels */
    int crop;     /* crop side in pixels */
    int sar_bands[DISOPT_MAX_BANDS], n_sar_bands; /* 1-based source bands; n = 0: 1..channels */
    int opt_bands[DISOPT_MAX_BANDS], n_opt_bands;
    disopt_complex_mode complex_mode;
    int rotate180;   /* -1: the list's rotate180 column (absent: 0); 0: never; 1: every sample */
    double min_area; /* label polygons of area <= min_area square metres are dropped (SpaceNet 6: 20) */
    float norm_scale, norm_mean, norm_std;
} dp_ds_options;

void dp_ds_options_init(dp_ds_options *o); /* stage 2, 4 channels, crop 512, the authors' normalisation */

typedef struct dp_dataset dp_dataset;

/* list: the CSV; val_list (may be NULL): a second CSV whose samples are all validation samples. */
disopt_status dp_dataset_open(const char *list, const char *val_list, const dp_ds_options *o, dp_dataset **out);
void dp_dataset_close(dp_dataset *ds);
int dp_dataset_count(const dp_dataset *ds, int val);
/* FNV-1a 64 of the list files' bytes (list, then val_list) */
uint64_t dp_dataset_hash(const dp_dataset *ds);
const dp_ds_options *dp_dataset_options(const dp_dataset *ds);

/* One crop of sample `index` of the train (val = 0) or validation list: top-left (x0, y0) in the sample's
 * (rotated, when rotate180) frame, then flipped horizontally when flip. Outputs (crop x crop each):
 * x: the model input (channels planes, normalised), xt: the teacher input (stage 2; may be NULL otherwise),
 * target: 0 / 1, valid: 0 / 1. */
disopt_status dp_dataset_load(const dp_dataset *ds, int val, int index, int x0, int y0, int flip, float *x, float *xt,
                              int32_t *target, uint8_t *valid);

typedef struct dp_batch {
    int64_t index; /* batch number in the epoch */
    int n, n_real; /* items; items that count (validation padding) */
    float *x, *xt;
    int32_t *target;
    uint8_t *valid;
} dp_batch;

typedef struct dp_loader dp_loader;

/* nthreads: loader threads (0: load in the consumer's thread). seed: the data stream's seed. */
disopt_status dp_loader_create(const dp_dataset *ds, int val, int batch, int nthreads, uint64_t seed, dp_loader **out);
void dp_loader_destroy(dp_loader *l);
/* Batches per epoch: validation: ceil(count / batch); training: count / batch (at least 1). */
int64_t dp_loader_batches(const dp_loader *l);
/* Schedules batches [first, first + count) of epoch `epoch` (training batch b of an epoch holds the
 * items b*batch .. b*batch + batch - 1 of the epoch's permutation, modulo the sample count). */
disopt_status dp_loader_begin(dp_loader *l, int64_t epoch, int64_t first, int64_t count);
/* The next scheduled batch, in order (blocks until it is loaded); valid until the next call or end. */
disopt_status dp_loader_next(dp_loader *l, const dp_batch **b);
/* Stops the scheduled work (waits for the threads to go idle). */
void dp_loader_end(dp_loader *l);

/* The draws of training item k of an epoch, exposed for tests: sample (position in the train list),
 * crop offset and flip. */
void dp_loader_item(const dp_loader *l, int64_t epoch, int64_t k, int *sample, int *x0, int *y0, int *flip);

#endif
