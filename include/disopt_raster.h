/*
 * disopt_raster.h - the GDAL-facing half of gdal-disopt (libdisopt_raster): the tiler that runs a
 * model over any GDAL raster, shared by the BUILDINGS driver (CreateCopy and the lazy dataset) and
 * the tools. Same conventions as disopt.h (status + thread-local message, opaque handles, no
 * global state).
 *
 * The tiling is canonical: network windows of tile_size x tile_size pixels sit on a grid anchored
 * at the raster's pixel (0, 0), with a step of tile_size - 2 * overlap. Where neighbouring windows
 * overlap (2 * overlap pixels), their probabilities are blended with linear ramps whose weights sum
 * to 1 (no seams), summed in a fixed window order. Every output pixel therefore comes from the same
 * windows and the same arithmetic whatever order, batch, block size or read window asks for it: a
 * lazy block read, a zoomed-out read and a full CreateCopy agree bit for bit.
 *
 * Window pixels outside the raster are fed as raw 0 (SpaceNet 6's nodata value), before the
 * model's band normalisation. A pixel that is nodata (GDAL mask band) or NaN in any model input
 * band is fed as raw 0 in every band, and is nodata in the output.
 */
#ifndef DISOPT_RASTER_H
#define DISOPT_RASTER_H

#include "disopt.h"

#include <gdal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How complex (SLC) source bands become model input. */
typedef enum disopt_complex_mode {
    DISOPT_COMPLEX_ERROR = 0,  /* refuse, with a message that says what to do (default) */
    DISOPT_COMPLEX_DB,         /* 10 * log10(|z|^2), NaN where |z| == 0 */
    DISOPT_COMPLEX_INTENSITY,  /* |z|^2 */
    DISOPT_COMPLEX_AMPLITUDE   /* |z| */
} disopt_complex_mode;

typedef struct disopt_tiler_options {
    int tile_size;   /* network window, a multiple of 32 (default 512, the authors' crop size) */
    int overlap;     /* context on each side, >= 0, 2 * overlap < tile_size (default 64) */
    int batch_size;  /* windows per inference call in bulk runs (default 1) */
    int num_bands;   /* 0: source bands 1..C; else the source band for each model input, in order */
    int bands[DISOPT_MAX_BANDS];
    int rotate180;   /* -1: as the model says; 0: no; 1: rotate each window 180 degrees (SpaceNet 6 south strips) */
    disopt_complex_mode complex_mode;
    int cache_tiles; /* computed windows kept for lazy reads (default 64) */
    int io_threads;  /* bulk runs: threads reading the source, each on its own handle (0: one per
                        core, at most 8; a source that cannot be opened again is read by one) */
} disopt_tiler_options;

typedef struct disopt_tiler disopt_tiler;

DISOPT_API void disopt_tiler_options_init(disopt_tiler_options *o);
/* The tiler borrows model and src; both must outlive it. One tiler is used by one thread at a time. */
DISOPT_API disopt_status disopt_tiler_create(disopt_model *model, GDALDatasetH src, const disopt_tiler_options *o,
                                             disopt_tiler **out);
DISOPT_API void disopt_tiler_destroy(disopt_tiler *t);
/* Adds the same network loaded on another engine (another GPU: DEVICE=CUDA:ALL); each batch of
 * windows is then split over the models, one thread each. Borrowed like the first model. At most
 * 16 models in all. */
DISOPT_API disopt_status disopt_tiler_add_model(disopt_tiler *t, disopt_model *m);
/* Output pixels per window side (tile_size - 2 * overlap). */
DISOPT_API int disopt_tiler_step(const disopt_tiler *t);
/* Building probability of the raster window (x, y, w, h), row-major into prob (w * h floats, row
 * stride w); NaN marks nodata. Windows computed for it are kept in a small LRU cache. */
DISOPT_API disopt_status disopt_tiler_read(disopt_tiler *t, int x, int y, int w, int h, float *prob);

/* Receives the probability of output rows [y, y + h) x columns [x, x + w) (row stride w, NaN =
 * nodata) as bulk runs produce them. Returns 0 to go on, nonzero to stop with an error. */
typedef int (*disopt_tiler_sink)(void *user, int x, int y, int w, int h, const float *prob);

/* Computes the whole raster once, handing out the output cells (step x step, the last ones of a
 * row or column clipped) to sink, in a fixed order, from one writer thread that the run starts
 * (never two calls at once; the sink may use a GDAL dataset that nothing else touches during the
 * run; its CPLError message, if it fails, becomes the run's). Reading the source (io_threads
 * threads), the network (one thread), blending (the calling thread) and the sink (the writer) run
 * at the same time on three batch buffers and three step buffers; the result does not depend on
 * their timing. progress (may be NULL) is GDAL's, called from the calling thread with the share of
 * cells written; a FALSE return cancels with DISOPT_ERR_CANCELLED. Memory: three batches of
 * windows, a window cache and three rows of 16 cells, independent of the raster size. */
DISOPT_API disopt_status disopt_tiler_run(disopt_tiler *t, disopt_tiler_sink sink, void *sink_user,
                                          GDALProgressFunc progress, void *progress_arg);

#ifdef __cplusplus
}
#endif
#endif /* DISOPT_RASTER_H */
