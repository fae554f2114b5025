/*
 * tiler.c - runs a model over a GDAL raster on a canonical grid of overlapping windows
 * (see disopt_raster.h for the contract).
 *
 * Conventions: window (tx, ty) reads source pixels [tx*step - overlap, tx*step - overlap + tile)
 * in x (likewise y) and keeps [overlap, overlap + step) of its own pixels. Input buffers are NCHW
 * float32; outputs are step x step planes with NaN for nodata. All GDAL failures become
 * DISOPT_ERR_IO with GDAL's message. The only GDAL calls are RasterIO on the source and its mask
 * bands, so any source GDAL can open (VRT, /vsizip/, ...) works.
 */
#include "disopt_raster.h"
#include "internal.h"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct tile_slot {
    int tx, ty;            /* -1 when empty */
    unsigned long stamp;   /* last use, for LRU */
    float *prob;           /* tile * tile, NaN = nodata */
    int band;              /* bulk runs: the band of cells the window was computed for */
    long seq;              /* bulk runs: the window's number in the run's sequence */
} tile_slot;

/* The network input and output of one batch of windows. x and prob live in the engine's host
 * memory (page-locked on a GPU: the copies to and from the device run at full speed). */
typedef struct batch_buf {
    int cap;               /* windows the buffers hold */
    float *x;              /* cap * C * T * T */
    float *prob;           /* cap * T * T */
    unsigned char *valid;  /* cap * T * T */
} batch_buf;

/* What one thread needs to read windows: a source handle and scratch rows. */
typedef struct reader {
    GDALDatasetH ds;
    int own;               /* ds was opened by the tiler (closed with the reader) */
    float *cbuf;           /* 2 * T * T (complex band read) */
    unsigned char *mbuf;   /* T * T (mask read) */
} reader;

#define TILER_MAX_MODELS 16

struct disopt_tiler {
    disopt_model *model;
    disopt_model *more[TILER_MAX_MODELS - 1]; /* the same network on other devices (CUDA:ALL) */
    int n_more;
    GDALDatasetH src;
    disopt_tiler_options o;
    int C, W, H, step, ntx, nty;
    int rotate;
    int bands[DISOPT_MAX_BANDS];
    int is_complex[DISOPT_MAX_BANDS];
    int is_float[DISOPT_MAX_BANDS];
    int any_complex;
    batch_buf batch;       /* lazy reads: one batch */
    reader rd;             /* lazy reads: the source handle we were given */
    float *wx;             /* T: 1-D blending weight across a window */
    float *acc, *wsum;     /* blending accumulators of one read */
    size_t acc_cap;
    /* LRU of computed windows */
    tile_slot *slots;
    int nslots;
    unsigned long clock;
    long last_prefetch_hits; /* uploads served by a prefetch in the last bulk run */
};

long dp_tiler_last_prefetch_hits(const disopt_tiler *t) { return t ? t->last_prefetch_hits : 0; }

void disopt_tiler_options_init(disopt_tiler_options *o) {
    memset(o, 0, sizeof *o);
    o->tile_size = 512;
    o->overlap = 64;
    o->batch_size = 1;
    o->rotate180 = -1;
    o->complex_mode = DISOPT_COMPLEX_ERROR;
    o->cache_tiles = 64;
}

static disopt_status gdal_fail(const char *what) {
    const char *m = CPLGetLastErrorMsg();
    return dp_error(DISOPT_ERR_IO, "%s: %s", what, (m && *m) ? m : "GDAL reported a failure");
}

/* Makes b hold n windows (its contents never outlive a batch). */
static disopt_status batch_reserve(disopt_tiler *t, batch_buf *b, int n) {
    if (n <= b->cap) return DISOPT_OK;
    disopt_engine *e = disopt_model_engine(t->model);
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    disopt_engine_host_free(e, b->x);
    disopt_engine_host_free(e, b->prob);
    b->x = b->prob = NULL;
    b->cap = 0;
    void *x = NULL, *p = NULL;
    disopt_status s = disopt_engine_host_alloc(e, (size_t)n * t->C * T2 * sizeof(float), &x);
    if (s == DISOPT_OK) s = disopt_engine_host_alloc(e, (size_t)n * T2 * sizeof(float), &p);
    b->x = x;
    b->prob = p;
    unsigned char *v = realloc(b->valid, (size_t)n * T2);
    if (v) b->valid = v;
    if (s != DISOPT_OK || !v)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: no memory for a batch of %d windows", n);
    b->cap = n;
    return DISOPT_OK;
}

static void batch_free(disopt_tiler *t, batch_buf *b) {
    disopt_engine *e = disopt_model_engine(t->model);
    disopt_engine_host_free(e, b->x);
    disopt_engine_host_free(e, b->prob);
    free(b->valid);
    memset(b, 0, sizeof *b);
}

/* r reads from ds (owned: closed by reader_free) */
static disopt_status reader_init(disopt_tiler *t, reader *r, GDALDatasetH ds, int own) {
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    r->ds = ds;
    r->own = own;
    r->cbuf = malloc(2 * T2 * sizeof(float));
    r->mbuf = malloc(T2);
    if (!r->cbuf || !r->mbuf) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    return DISOPT_OK;
}

static void reader_free(reader *r) {
    if (r->own && r->ds) GDALClose(r->ds);
    free(r->cbuf);
    free(r->mbuf);
    memset(r, 0, sizeof *r);
}

/* Grows the window cache to want slots (clip: never more than the raster has windows). */
static disopt_status cache_grow(disopt_tiler *t, int want, int clip) {
    const long nwin = (long)t->ntx * t->nty;
    if (clip && nwin < want) want = (int)nwin;
    if (want <= t->nslots) return DISOPT_OK;
    tile_slot *ns = realloc(t->slots, (size_t)want * sizeof *ns);
    if (!ns) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory for the window cache");
    t->slots = ns;
    for (int i = t->nslots; i < want; i++) {
        ns[i].tx = ns[i].ty = -1;
        ns[i].stamp = 0;
        ns[i].band = -1;
        ns[i].seq = -1;
        ns[i].prob = malloc((size_t)t->o.tile_size * t->o.tile_size * sizeof(float));
        if (!ns[i].prob) {
            t->nslots = i;
            return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory for the window cache");
        }
    }
    t->nslots = want;
    return DISOPT_OK;
}

disopt_status disopt_tiler_create(disopt_model *model, GDALDatasetH src, const disopt_tiler_options *opt,
                                  disopt_tiler **out) {
    if (!out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler: NULL output handle");
    *out = NULL;
    if (!model || !src) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler: NULL model or source dataset");
    if (!disopt_model_engine(model)) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler: the model has no engine");
    disopt_tiler_options o;
    if (opt) o = *opt;
    else disopt_tiler_options_init(&o);
    if (o.tile_size < 32 || o.tile_size % 32 || o.tile_size > 8192)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "TILE_SIZE=%d: must be a multiple of 32 between 32 and 8192",
                        o.tile_size);
    if (o.overlap < 0) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "OVERLAP=%d: must not be negative", o.overlap);
    if (2 * o.overlap >= o.tile_size)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "OVERLAP=%d: twice the overlap must be less than TILE_SIZE=%d",
                        o.overlap, o.tile_size);
    if (o.batch_size < 1 || o.batch_size > 256)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "BATCH_SIZE=%d: must be 1..256", o.batch_size);
    if (o.cache_tiles < 1) o.cache_tiles = 1;

    disopt_model_info info;
    DP_TRY(disopt_model_get_info(model, &info));
    const int C = info.config.in_channels, nsrc = GDALGetRasterCount(src);
    const int W = GDALGetRasterXSize(src), H = GDALGetRasterYSize(src);
    if (W <= 0 || H <= 0) return dp_error(DISOPT_ERR_INPUT, "the source raster is empty (%d x %d)", W, H);
    int bands[DISOPT_MAX_BANDS];
    if (o.num_bands == 0) {
        if (nsrc < C)
            return dp_error(DISOPT_ERR_INPUT,
                            "the source has %d band%s but the model '%s' takes %d (%s%s%s%s%s%s%s): "
                            "give BANDS=... or a source with enough bands",
                            nsrc, nsrc == 1 ? "" : "s", info.name, C, info.band_names[0], C > 1 ? "," : "",
                            C > 1 ? info.band_names[1] : "", C > 2 ? "," : "", C > 2 ? info.band_names[2] : "",
                            C > 3 ? "," : "", C > 3 ? info.band_names[3] : "");
        for (int i = 0; i < C; i++) bands[i] = i + 1;
    } else {
        if (o.num_bands != C)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "BANDS lists %d bands, the model '%s' takes %d",
                            o.num_bands, info.name, C);
        for (int i = 0; i < C; i++) {
            if (o.bands[i] < 1 || o.bands[i] > nsrc)
                return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "BANDS: band %d does not exist (the source has %d)",
                                o.bands[i], nsrc);
            bands[i] = o.bands[i];
        }
    }
    disopt_tiler *t = calloc(1, sizeof *t);
    if (!t) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    t->model = model;
    t->src = src;
    t->o = o;
    t->C = C;
    t->W = W;
    t->H = H;
    t->step = o.tile_size - 2 * o.overlap;
    t->ntx = (W + t->step - 1) / t->step;
    t->nty = (H + t->step - 1) / t->step;
    t->rotate = o.rotate180 < 0 ? info.rotate180 : o.rotate180;
    disopt_status s = DISOPT_OK;
    for (int i = 0; i < C && s == DISOPT_OK; i++) {
        t->bands[i] = bands[i];
        GDALDataType dt = GDALGetRasterDataType(GDALGetRasterBand(src, bands[i]));
        t->is_complex[i] = GDALDataTypeIsComplex(dt);
        t->any_complex |= t->is_complex[i];
        t->is_float[i] = GDALDataTypeIsFloating(dt);
        if (dt == GDT_Unknown)
            s = dp_error(DISOPT_ERR_INPUT, "band %d has no numeric data type", bands[i]);
        else if (t->is_complex[i] && o.complex_mode == DISOPT_COMPLEX_ERROR)
            s = dp_error(DISOPT_ERR_INPUT,
                         "band %d is complex (%s, e.g. single-look complex SAR), the model takes intensities in dB "
                         "(SpaceNet 6 SAR-Intensity): open with COMPLEX=DB (10*log10|z|^2; also INTENSITY or "
                         "AMPLITUDE), or put the band through the disopt_sar_db pixel function in a VRT "
                         "(it also applies a calibration scale)",
                         bands[i], GDALGetDataTypeName(dt));
    }
    if (s == DISOPT_OK) s = reader_init(t, &t->rd, src, 0);
    if (s == DISOPT_OK && !(t->wx = malloc((size_t)o.tile_size * sizeof(float))))
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    if (s == DISOPT_OK) s = cache_grow(t, o.cache_tiles, 1);
    if (s == DISOPT_OK) {
        /* linear ramps over the 2*overlap pixels where neighbouring windows overlap: the weights of
         * the two windows sum to 1 there, so the blend is continuous across window borders */
        const int T = o.tile_size, R = 2 * o.overlap;
        for (int u = 0; u < T; u++)
            t->wx[u] = R == 0 ? 1.0f : u < R ? (u + 0.5f) / R : u >= T - R ? (T - u - 0.5f) / R : 1.0f;
        s = batch_reserve(t, &t->batch, 1);
    }
    if (s != DISOPT_OK) {
        disopt_tiler_destroy(t);
        return s;
    }
    *out = t;
    return DISOPT_OK;
}

void disopt_tiler_destroy(disopt_tiler *t) {
    if (!t) return;
    for (int i = 0; t->slots && i < t->nslots; i++) free(t->slots[i].prob);
    free(t->slots);
    batch_free(t, &t->batch);
    reader_free(&t->rd);
    free(t->wx);
    free(t->acc);
    free(t->wsum);
    free(t);
}

int disopt_tiler_step(const disopt_tiler *t) { return t ? t->step : 0; }

static float complex_value(disopt_complex_mode m, float re, float im) {
    const float i2 = re * re + im * im;
    switch (m) {
    case DISOPT_COMPLEX_INTENSITY: return i2;
    case DISOPT_COMPLEX_AMPLITUDE: return sqrtf(i2);
    default: return i2 > 0.0f ? 10.0f * log10f(i2) : NAN;
    }
}

static void reverse_plane(float *p, size_t n) {
    for (size_t i = 0, j = n - 1; i < j; i++, j--) {
        float v = p[i];
        p[i] = p[j];
        p[j] = v;
    }
}

/* Fills window k of b with the source for window (tx, ty), read through r, and normalises it for
 * the model. */
static disopt_status load_window(const disopt_tiler *t, reader *r, batch_buf *b, int k, int tx, int ty) {
    const int T = t->o.tile_size;
    const size_t T2 = (size_t)T * T;
    const int x0 = tx * t->step - t->o.overlap, y0 = ty * t->step - t->o.overlap;
    const int rx0 = x0 < 0 ? 0 : x0, ry0 = y0 < 0 ? 0 : y0;
    const int rx1 = x0 + T > t->W ? t->W : x0 + T, ry1 = y0 + T > t->H ? t->H : y0 + T;
    const int rw = rx1 - rx0, rh = ry1 - ry0;
    float *x = b->x + (size_t)k * t->C * T2;
    unsigned char *valid = b->valid + (size_t)k * T2;
    memset(x, 0, (size_t)t->C * T2 * sizeof(float));
    memset(valid, 0, T2);
    for (int yy = 0; yy < rh; yy++) memset(valid + (size_t)(ry0 - y0 + yy) * T + (rx0 - x0), 1, (size_t)rw);
    const size_t off = (size_t)(ry0 - y0) * T + (rx0 - x0);
    /* real bands in one dataset read (GDAL de-interleaves a pixel-interleaved source's blocks in
     * one pass instead of once per band) */
    const int whole = !t->any_complex;
    int bmap[DISOPT_MAX_BANDS]; /* (GDAL 3.6 takes a non-const band map) */
    memcpy(bmap, t->bands, sizeof bmap);
    if (whole && GDALDatasetRasterIO(r->ds, GF_Read, rx0, ry0, rw, rh, x + off, rw, rh, GDT_Float32, t->C, bmap,
                                     sizeof(float), (GSpacing)T * sizeof(float),
                                     (GSpacing)T2 * sizeof(float)) != CE_None)
        return gdal_fail("reading the source");
    for (int c = 0; c < t->C; c++) {
        GDALRasterBandH band = GDALGetRasterBand(r->ds, t->bands[c]);
        float *plane = x + (size_t)c * T2;
        if (whole) {
            /* read above */
        } else if (t->is_complex[c]) {
            if (GDALRasterIO(band, GF_Read, rx0, ry0, rw, rh, r->cbuf, rw, rh, GDT_CFloat32, 0, 0) != CE_None)
                return gdal_fail("reading the source");
            for (int yy = 0; yy < rh; yy++)
                for (int xx = 0; xx < rw; xx++) {
                    const float *z = r->cbuf + 2 * ((size_t)yy * rw + xx);
                    plane[off + (size_t)yy * T + xx] = complex_value(t->o.complex_mode, z[0], z[1]);
                }
        } else if (GDALRasterIO(band, GF_Read, rx0, ry0, rw, rh, plane + off, rw, rh, GDT_Float32, sizeof(float),
                                (GSpacing)T * sizeof(float)) != CE_None) {
            return gdal_fail("reading the source");
        }
        const int flags = GDALGetMaskFlags(band);
        if (!(flags & GMF_ALL_VALID)) {
            if (GDALRasterIO(GDALGetMaskBand(band), GF_Read, rx0, ry0, rw, rh, r->mbuf, rw, rh, GDT_Byte, 0, 0) !=
                CE_None)
                return gdal_fail("reading the source's mask");
            for (int yy = 0; yy < rh; yy++)
                for (int xx = 0; xx < rw; xx++)
                    if (!r->mbuf[(size_t)yy * rw + xx]) valid[off + (size_t)yy * T + xx] = 0;
        }
        if (t->is_float[c] || t->is_complex[c])
            for (int yy = 0; yy < rh; yy++)
                for (int xx = 0; xx < rw; xx++) {
                    const size_t p = off + (size_t)yy * T + xx;
                    if (!isfinite(plane[p])) valid[p] = 0;
                }
    }
    /* a pixel that is nodata (mask) or NaN in any band is fed as raw 0 in every band (SpaceNet 6's
     * nodata value) and is nodata in the output; pixels beyond the raster are 0 already */
    for (int yy = 0; yy < rh; yy++)
        for (int xx = 0; xx < rw; xx++) {
            const size_t p = off + (size_t)yy * T + xx;
            if (!valid[p])
                for (int c = 0; c < t->C; c++) x[(size_t)c * T2 + p] = 0.0f;
        }
    if (t->rotate)
        for (int c = 0; c < t->C; c++) reverse_plane(x + (size_t)c * T2, T2);
    return disopt_model_normalize(t->model, x, 1, T, T);
}


static tile_slot *cache_find(disopt_tiler *t, int tx, int ty) {
    for (int i = 0; i < t->nslots; i++)
        if (t->slots[i].tx == tx && t->slots[i].ty == ty) {
            t->slots[i].stamp = ++t->clock;
            return &t->slots[i];
        }
    return NULL;
}

static tile_slot *cache_victim(disopt_tiler *t) {
    tile_slot *v = &t->slots[0];
    for (int i = 1; i < t->nslots; i++)
        if (t->slots[i].stamp < v->stamp) v = &t->slots[i];
    return v;
}

/* Runs windows [k0, k0 + n) of b on model m; when the device runs out of memory, runs the two
 * halves one after the other instead (down to one window, then the error stands). */
static disopt_status infer_split(const disopt_tiler *t, disopt_model *m, batch_buf *b, int k0, int n) {
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    disopt_outputs outs;
    memset(&outs, 0, sizeof outs);
    outs.probability = b->prob + (size_t)k0 * T2;
    disopt_status s = disopt_model_infer(m, b->x + (size_t)k0 * t->C * T2, n, t->C, t->o.tile_size,
                                         t->o.tile_size, &outs);
    if (s == DISOPT_ERR_OUT_OF_MEMORY && n > 1) {
        DP_TRY(infer_split(t, m, b, k0, n / 2));
        return infer_split(t, m, b, k0 + n / 2, n - n / 2);
    }
    return s;
}

/* one model's share of a batch, run on its own thread */
typedef struct share {
    const disopt_tiler *t;
    disopt_model *m;
    batch_buf *b;
    int k0, n;
    disopt_status s;
    char msg[512]; /* the thread-local message of a failure, carried back */
} share;

static void *share_run(void *arg) {
    share *w = arg;
    w->s = infer_split(w->t, w->m, w->b, w->k0, w->n);
    if (w->s != DISOPT_OK) snprintf(w->msg, sizeof w->msg, "%s", disopt_last_error());
    return NULL;
}

/* The shares of a batch of n windows: G models (the first G of the tiler's), model g taking
 * windows [k0[g], k0[g] + cnt[g]) */
static int batch_shares(const disopt_tiler *t, int n, int *k0, int *cnt) {
    const int G = t->n_more + 1 < n ? t->n_more + 1 : n;
    for (int g = 0, k = 0; g < G; g++) {
        cnt[g] = n / G + (g < n % G);
        k0[g] = k;
        k += cnt[g];
    }
    return G;
}

static disopt_model *share_model(const disopt_tiler *t, int g) { return g == 0 ? t->model : t->more[g - 1]; }

/* Makes each model's plan and graph for its share of a batch of n windows before any is read (the
 * first batch then only runs). A failure here is left to the real run to report. */
static void prepare_batch(const disopt_tiler *t, int n) {
    int k0[TILER_MAX_MODELS], cnt[TILER_MAX_MODELS];
    const int G = batch_shares(t, n, k0, cnt);
    float dummy = 0.0f;
    disopt_outputs outs;
    memset(&outs, 0, sizeof outs);
    outs.probability = &dummy; /* (what is wanted; nothing is written) */
    for (int g = 0; g < G; g++)
        if (dp_model_infer_ex(share_model(t, g), NULL, cnt[g], t->C, t->o.tile_size, t->o.tile_size, &outs,
                              DP_INFER_PREPARE) != DISOPT_OK)
            disopt_clear_error();
}

/* Starts the copy of b's n windows to each model's device while the device runs the batch before. */
static void prefetch_batch(const disopt_tiler *t, const batch_buf *b, int n) {
    int k0[TILER_MAX_MODELS], cnt[TILER_MAX_MODELS];
    const int G = batch_shares(t, n, k0, cnt);
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    for (int g = 0; g < G; g++)
        if (dp_model_prefetch(share_model(t, g), b->x + (size_t)k0[g] * t->C * T2, cnt[g], t->C, t->o.tile_size,
                              t->o.tile_size) != DISOPT_OK)
            disopt_clear_error(); /* (then that share is uploaded when it runs) */
}

static long prefetch_hits(const disopt_tiler *t) {
    long h = dp_model_prefetch_hits(t->model);
    for (int g = 0; g < t->n_more; g++) h += dp_model_prefetch_hits(t->more[g]);
    return h;
}

/* Runs windows [0, n) of b: on the model alone, or split into contiguous shares over the model
 * and the added ones (one thread each; every window's result is the same whichever device
 * computes it). */
static disopt_status infer_batch(const disopt_tiler *t, batch_buf *b, int n) {
    int k0[TILER_MAX_MODELS], cnt[TILER_MAX_MODELS];
    const int G = batch_shares(t, n, k0, cnt);
    if (G <= 1) return infer_split(t, t->model, b, 0, n);
    share w[TILER_MAX_MODELS];
    pthread_t th[TILER_MAX_MODELS];
    int started[TILER_MAX_MODELS] = {0};
    for (int g = 0; g < G; g++) w[g] = (share){t, share_model(t, g), b, k0[g], cnt[g], DISOPT_OK, ""};
    for (int g = 1; g < G; g++) started[g] = pthread_create(&th[g], NULL, share_run, &w[g]) == 0;
    for (int g = 1; g < G; g++) /* a share whose thread could not start runs here */
        if (!started[g]) share_run(&w[g]);
    share_run(&w[0]);
    for (int g = 1; g < G; g++)
        if (started[g]) pthread_join(th[g], NULL);
    for (int g = 0; g < G; g++)
        if (w[g].s != DISOPT_OK) return dp_error(w[g].s, "%s", w[g].msg);
    return DISOPT_OK;
}

disopt_status disopt_tiler_add_model(disopt_tiler *t, disopt_model *m) {
    if (!t || !m) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler: NULL tiler or model");
    if (t->n_more >= TILER_MAX_MODELS - 1)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler: at most %d models", TILER_MAX_MODELS);
    disopt_model_info a, b;
    DP_TRY(disopt_model_get_info(t->model, &a));
    DP_TRY(disopt_model_get_info(m, &b));
    if (memcmp(&a.config, &b.config, sizeof a.config) != 0 || strcmp(a.name, b.name) != 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler: an added model must be the same network (%s vs %s)",
                        b.name, a.name);
    t->more[t->n_more++] = m;
    return DISOPT_OK;
}

/* Stores window k of b, an inferred batch, in slot sl of the window cache. */
static void store_window(const disopt_tiler *t, batch_buf *b, int k, tile_slot *sl) {
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    float *p = b->prob + (size_t)k * T2;
    if (t->rotate) reverse_plane(p, T2);
    const unsigned char *v = b->valid + (size_t)k * T2;
    for (size_t i = 0; i < T2; i++) sl->prob[i] = v[i] ? p[i] : NAN;
}

/* Adds window sl's blend contribution to the read accumulators (read window x, y, w, h). */
static void accumulate(disopt_tiler *t, const tile_slot *sl, int x, int y, int w, int h) {
    const int S = t->step, O = t->o.overlap, T = t->o.tile_size;
    const int wx0 = sl->tx * S - O, wy0 = sl->ty * S - O; /* window origin in raster pixels */
    const int cx0 = wx0 > x ? wx0 : x, cy0 = wy0 > y ? wy0 : y;
    const int cx1 = wx0 + T < x + w ? wx0 + T : x + w, cy1 = wy0 + T < y + h ? wy0 + T : y + h;
    for (int yy = cy0; yy < cy1; yy++) {
        const float wy = t->wx[yy - wy0];
        const float *p = sl->prob + (size_t)(yy - wy0) * T - wx0;
        float *a = t->acc + (size_t)(yy - y) * w - x, *ws = t->wsum + (size_t)(yy - y) * w - x;
        for (int xx = cx0; xx < cx1; xx++) {
            const float wgt = wy * t->wx[xx - wx0];
            a[xx] += wgt * p[xx];
            ws[xx] += wgt;
        }
    }
}

/* Computes n windows (coordinates in txs/tys) on the calling thread and stores them in the window
 * cache (lazy reads). */
static disopt_status compute_windows(disopt_tiler *t, int n, const int *txs, const int *tys) {
    DP_TRY(batch_reserve(t, &t->batch, n));
    for (int k = 0; k < n; k++) DP_TRY(load_window(t, &t->rd, &t->batch, k, txs[k], tys[k]));
    DP_TRY(infer_batch(t, &t->batch, n));
    for (int k = 0; k < n; k++) {
        tile_slot *sl = cache_victim(t);
        store_window(t, &t->batch, k, sl);
        sl->tx = txs[k];
        sl->ty = tys[k];
        sl->band = -1;
        sl->seq = -1;
        sl->stamp = ++t->clock;
    }
    return DISOPT_OK;
}

static int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* windows whose span [k*step - O, k*step - O + T) meets [a, a + len), clipped to the grid */
static void window_range(const disopt_tiler *t, int a, int len, int n, int *k0, int *k1) {
    const int S = t->step, O = t->o.overlap, T = t->o.tile_size;
    int lo = floor_div(a + O - T, S) + 1, hi = floor_div(a + len - 1 + O, S);
    *k0 = lo < 0 ? 0 : lo;
    *k1 = hi > n - 1 ? n - 1 : hi;
}

/* Makes the read accumulators hold w x h and zeroes them. */
static disopt_status acc_reset(disopt_tiler *t, int w, int h) {
    const size_t n = (size_t)w * h;
    if (n > t->acc_cap) {
        float *a = realloc(t->acc, n * sizeof(float)), *ws = a ? realloc(t->wsum, n * sizeof(float)) : NULL;
        if (a) t->acc = a;
        if (ws) t->wsum = ws;
        if (!a || !ws) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: no memory for a %dx%d read", w, h);
        t->acc_cap = n;
    }
    memset(t->acc, 0, n * sizeof(float));
    memset(t->wsum, 0, n * sizeof(float));
    return DISOPT_OK;
}

static void acc_finish(const disopt_tiler *t, size_t n, float *prob) {
    for (size_t i = 0; i < n; i++) prob[i] = t->acc[i] / t->wsum[i]; /* NaN (nodata) stays NaN */
}

disopt_status disopt_tiler_read(disopt_tiler *t, int x, int y, int w, int h, float *prob) {
    if (!t || !prob) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler_read: NULL argument");
    if (w <= 0 || h <= 0 || x < 0 || y < 0 || x + w > t->W || y + h > t->H)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler_read: window %d,%d %dx%d outside the %dx%d raster", x, y,
                        w, h, t->W, t->H);
    DP_TRY(acc_reset(t, w, h));
    int tx0, tx1, ty0, ty1;
    window_range(t, x, w, t->ntx, &tx0, &tx1);
    window_range(t, y, h, t->nty, &ty0, &ty1);
    /* windows in a fixed order (ty, tx ascending): every reader sums each pixel identically */
    for (int ty = ty0; ty <= ty1; ty++)
        for (int tx = tx0; tx <= tx1; tx++) {
            tile_slot *sl = cache_find(t, tx, ty);
            if (!sl) {
                DP_TRY(compute_windows(t, 1, &tx, &ty));
                sl = cache_find(t, tx, ty);
            }
            accumulate(t, sl, x, y, w, h);
        }
    acc_finish(t, (size_t)w * h, prob);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- bulk runs (CreateCopy)
 *
 * A bulk run sweeps columns of BAND_CELLS output cells ("bands") top to bottom, one row of cells
 * (a "step") at a time, so that the windows a step needs fit a cache that does not grow with the
 * raster; the windows at a band's sides are computed twice ((K+2)/K work). Step (band, cy) needs
 * window rows [ty0, ty1] x columns [tx0, tx1]; within a band the columns are fixed and the rows
 * only move down, so what a step needs beyond the step before it are the rows after that step's
 * ty1. The run's windows therefore form one sequence known in advance, numbered 0, 1, ... ("seq"),
 * cut into batches of B = batch_size windows regardless of steps (the device always gets full
 * batches). Three stages work on it at once:
 *   - readers (io_threads threads, each with its own handle on the source): read and normalise
 *     windows into the batch buffers, in sequence order;
 *   - the inference thread: runs batch j once its windows are read;
 *   - the caller's thread: stores inferred batches in the window cache, blends a step's cells into
 *     one of NSTEP step buffers and reports progress (the progress callback is only ever called
 *     from it);
 *   - the writer thread: hands the blended cells to the sink, step after step in order (the sink is
 *     only ever called from it, one call at a time).
 * NSLOT batch buffers rotate: batch j uses buffer j % NSLOT, free again once batch j is stored.
 * Every window is computed from the same input in the same batch whatever the timing or the
 * number of readers, so the result is the same bit for bit.
 */
#define BAND_CELLS 16
#define NSLOT 3
#define NSTEP 3
#define MAX_READERS 16

static int imin(int a, int b) { return a < b ? a : b; }

/* the windows step (band, cy) needs */
static void step_windows(const disopt_tiler *t, int band, int cy, int *tx0, int *tx1, int *ty0, int *ty1) {
    const int S = t->step, b0 = band * BAND_CELLS, b1 = imin(b0 + BAND_CELLS, t->ntx);
    const int oy = cy * S, ox0 = b0 * S;
    window_range(t, ox0, imin(b1 * S, t->W) - ox0, t->ntx, tx0, tx1);
    window_range(t, oy, imin(S, t->H - oy), t->nty, ty0, ty1);
}

/* the sequence of a run's windows */
typedef struct seq_gen {
    int nbands;
    int band, cy;   /* the current step */
    int c0, c1, r1; /* its columns and last row */
    int tx, ty;     /* the next window */
    int done;
} seq_gen;

/* Moves g to the first window of the first step at or after (band, cy) that has new windows;
 * prev_ty1: the last row of the step before (band, cy) in the same band, -1 at a band's top. */
static void gen_settle(const disopt_tiler *t, seq_gen *g, int prev_ty1) {
    while (g->band < g->nbands) {
        int tx0, tx1, ty0, ty1;
        step_windows(t, g->band, g->cy, &tx0, &tx1, &ty0, &ty1);
        const int r0 = ty0 > prev_ty1 + 1 ? ty0 : prev_ty1 + 1;
        if (r0 <= ty1) {
            g->c0 = tx0;
            g->c1 = tx1;
            g->r1 = ty1;
            g->tx = tx0;
            g->ty = r0;
            return;
        }
        prev_ty1 = ty1;
        if (++g->cy == t->nty) {
            g->cy = 0;
            g->band++;
            prev_ty1 = -1;
        }
    }
    g->done = 1;
}

static void gen_init(const disopt_tiler *t, seq_gen *g) {
    memset(g, 0, sizeof *g);
    g->nbands = (t->ntx + BAND_CELLS - 1) / BAND_CELLS;
    gen_settle(t, g, -1);
}

/* the next window of the sequence (g must not be done); g is settled on the one after */
static void gen_next(const disopt_tiler *t, seq_gen *g, int *band, int *tx, int *ty) {
    *band = g->band;
    *tx = g->tx;
    *ty = g->ty;
    if (++g->tx <= g->c1) return;
    g->tx = g->c0;
    if (++g->ty <= g->r1) return;
    const int prev = g->r1;
    if (++g->cy == t->nty) {
        g->cy = 0;
        g->band++;
        gen_settle(t, g, -1);
    } else {
        gen_settle(t, g, prev);
    }
}

typedef struct run_pipe run_pipe;

typedef struct run_reader {
    run_pipe *p;
    reader rd;
} run_reader;

struct run_pipe {
    disopt_tiler *t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int B;
    batch_buf buf[NSLOT];
    int *wtx[NSLOT], *wty[NSLOT], *wband[NSLOT]; /* each buffer's windows (B each) */
    long slot_batch[NSLOT]; /* the batch a buffer holds or is to hold */
    int loaded[NSLOT];      /* windows read into it */
    int inferred[NSLOT];
    seq_gen gen;            /* the next window to read */
    long next_seq;
    long total;             /* windows in the run once known, else -1 */
    int stop;               /* error, cancel or end: every thread leaves */
    disopt_status err;
    char msg[512];
    /* seconds per stage, for CPLDebug("BUILDINGS") at the end: readers' reading (summed over the
     * readers) and waiting for a free buffer; the network and its wait for read windows; the
     * caller's wait for inferred batches, storing, blending and the sink */
    double t_read, t_read_wait, t_infer, t_infer_wait, t_main_wait, t_store, t_blend, t_sink, t_write_wait;
    double t_first_wait, t_first; /* the first batch: waiting for its windows, running it (plans, graph capture) */
    int pad_last; /* pad a short last batch to B (DISOPT_TILER_PAD) */
    int prepare_n;               /* windows of the first batch, prepared before it is read (0: not) */
    double t_prepare;            /* that preparation (inference thread) */
    int prefetch;                /* copy batch j + 1 to the device while batch j runs (DISOPT_TILER_PREFETCH) */
    int prefetched[NSLOT];       /* the buffer's batch has been prefetched (inference thread only) */
    long prefetches, hits0;      /* batches prefetched; the engines' hit count at the start */
    int padded;   /* windows of padding computed */
    /* the writer: NSTEP buffers of one step's blended cells each, handed to the sink in order on
     * the writer's thread; steps [written, pushed) are queued; no_more: the caller pushed its last */
    disopt_tiler_sink sink;
    void *sink_user;
    float *wbuf[NSTEP];
    int wcell[NSTEP][BAND_CELLS][4]; /* x, y, w, h of each cell of a queued step */
    int wn[NSTEP];
    long pushed, written, cells_written;
    int no_more;
};

/* records the first failure (with the thread's message) and stops every stage; call under mu */
static void pipe_fail(run_pipe *p, disopt_status s) {
    if (!p->err) {
        p->err = s;
        snprintf(p->msg, sizeof p->msg, "%s", disopt_last_error());
    }
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
}

/* windows in batch j (0 while unknown) */
static int batch_n(const run_pipe *p, long j) {
    if (p->total < 0) return p->B;
    const long left = p->total - j * p->B;
    return left <= 0 ? 0 : left < p->B ? (int)left : p->B;
}

static void *reader_main(void *arg) {
    run_reader *rr = arg;
    run_pipe *p = rr->p;
    pthread_mutex_lock(&p->mu);
    while (!p->stop && !p->gen.done) {
        const long seq = p->next_seq, j = seq / p->B;
        const int s = (int)(j % NSLOT), k = (int)(seq % p->B);
        if (p->slot_batch[s] != j) { /* the buffer still holds batch j - NSLOT */
            const double t0 = dp_now_s();
            pthread_cond_wait(&p->cv, &p->mu);
            p->t_read_wait += dp_now_s() - t0;
            continue;
        }
        int band, tx, ty;
        gen_next(p->t, &p->gen, &band, &tx, &ty);
        p->next_seq++;
        if (p->gen.done) {
            p->total = p->next_seq;
            pthread_cond_broadcast(&p->cv);
        }
        p->wtx[s][k] = tx;
        p->wty[s][k] = ty;
        p->wband[s][k] = band;
        pthread_mutex_unlock(&p->mu);
        const double t0 = dp_now_s();
        const disopt_status st = load_window(p->t, &rr->rd, &p->buf[s], k, tx, ty);
        const double t1 = dp_now_s();
        pthread_mutex_lock(&p->mu);
        p->t_read += t1 - t0;
        if (st != DISOPT_OK) {
            pipe_fail(p, st);
            break;
        }
        if (++p->loaded[s] == batch_n(p, j)) pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* batch j's windows all read into its buffer (under mu) */
static int batch_read(const run_pipe *p, long j) {
    const int s = (int)(j % NSLOT);
    return p->slot_batch[s] == j && p->loaded[s] == batch_n(p, j);
}

static void *infer_main(void *arg) {
    run_pipe *p = arg;
    if (p->prepare_n > 0) { /* plans and graphs while the readers read the first batch */
        const double t0 = dp_now_s();
        prepare_batch(p->t, p->prepare_n);
        p->t_prepare = dp_now_s() - t0; /* (only this thread writes it; read after the join) */
    }
    for (long j = 0;; j++) {
        const int s = (int)(j % NSLOT), s1 = (int)((j + 1) % NSLOT);
        int n, pre1;
        const double t0 = dp_now_s();
        pthread_mutex_lock(&p->mu);
        for (;;) {
            n = batch_n(p, j);
            /* (WAIT, for tests: a full next batch is waited for, so that every one is prefetched) */
            const int wait1 =
                p->prefetch == 2 && !p->prefetched[s1] && batch_n(p, j + 1) == p->B && !batch_read(p, j + 1);
            if (p->stop || n == 0 || (batch_read(p, j) && !wait1)) break;
            pthread_cond_wait(&p->cv, &p->mu);
        }
        const int go = !p->stop && n > 0;
        /* the next batch, when it is full and read already: its copy to the device goes beside this one's
         * run (a short last batch is padded below when it runs, so it is uploaded then) */
        pre1 = go && p->prefetch && !p->prefetched[s1] && batch_n(p, j + 1) == p->B && batch_read(p, j + 1);
        const double t1 = dp_now_s();
        p->t_infer_wait += t1 - t0;
        pthread_mutex_unlock(&p->mu);
        if (!go) return NULL;
        if (pre1) {
            prefetch_batch(p->t, &p->buf[s1], p->B);
            p->prefetched[s1] = 1;
            p->prefetches++;
        }
        /* The run's last batch, when short, is padded to the full size (windows left from an earlier
         * batch of this buffer, or zeros): a new batch size would make the model plan again and record
         * new CUDA graphs (freeing the full size's) while the GPU idles; the padding's results are
         * not used. Not when no full batch has run (a small raster computes only what it needs). */
        int nrun = n;
        if (n < p->B && j > 0 && p->pad_last) {
            batch_buf *b = &p->buf[s];
            const size_t win = (size_t)p->t->C * p->t->o.tile_size * p->t->o.tile_size;
            if (j < NSLOT) memset(b->x + (size_t)n * win, 0, (size_t)(p->B - n) * win * sizeof(float));
            nrun = p->B;
            p->padded = p->B - n; /* (only this thread writes it; read after the join) */
        }
        const disopt_status st = infer_batch(p->t, &p->buf[s], nrun);
        p->prefetched[s] = 0; /* (the buffer's next batch is j + NSLOT) */
        const double t2 = dp_now_s();
        pthread_mutex_lock(&p->mu);
        p->t_infer += t2 - t1;
        if (j == 0) {
            p->t_first_wait = t1 - t0;
            p->t_first = t2 - t1;
        }
        if (st != DISOPT_OK) pipe_fail(p, st);
        else p->inferred[s] = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* The writer: hands the queued steps' cells to the sink, in order, until the caller has pushed
 * its last step and all are written, or the run stops. */
static void *writer_main(void *arg) {
    run_pipe *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->written == p->pushed && !p->no_more) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop || p->written == p->pushed) break;
        const int k = (int)(p->written % NSTEP), n = p->wn[k];
        pthread_mutex_unlock(&p->mu);
        const double t0 = dp_now_s();
        const float *cell = p->wbuf[k];
        disopt_status st = DISOPT_OK;
        const size_t S2 = (size_t)p->t->step * p->t->step;
        for (int c = 0; c < n && st == DISOPT_OK; c++) {
            const int *r = p->wcell[k][c];
            if (p->sink(p->sink_user, r[0], r[1], r[2], r[3], cell + c * S2)) {
                const char *m = CPLGetLastErrorMsg();
                st = dp_error(DISOPT_ERR_IO, "writing the result: %s", (m && *m) ? m : "the sink failed");
            }
        }
        const double t1 = dp_now_s();
        pthread_mutex_lock(&p->mu);
        p->t_sink += t1 - t0;
        if (st != DISOPT_OK) {
            pipe_fail(p, st);
            break;
        }
        p->written++;
        p->cells_written += n;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* A cache slot for a new window of step (band; columns tx0..tx1, rows ty0..ty1) whose new windows
 * end at seq need: an empty one, or one no step from this one on needs (an earlier window that
 * this step does not read: within a band rows only move down, and bands never come back). Windows
 * stored ahead (seq >= need) are kept. */
static disopt_status run_victim(disopt_tiler *t, int band, int tx0, int tx1, int ty0, int ty1, long need,
                                tile_slot **out) {
    for (;;) {
        for (int i = 0; i < t->nslots; i++) {
            tile_slot *sl = &t->slots[i];
            const int used = sl->band == band && sl->tx >= tx0 && sl->tx <= tx1 && sl->ty >= ty0 && sl->ty <= ty1;
            if (sl->tx < 0 || (sl->seq < need && !used)) {
                *out = sl;
                return DISOPT_OK;
            }
        }
        DP_TRY(cache_grow(t, t->nslots + 8, 0));
    }
}

static tile_slot *run_find(disopt_tiler *t, int band, int tx, int ty) {
    for (int i = 0; i < t->nslots; i++)
        if (t->slots[i].band == band && t->slots[i].tx == tx && t->slots[i].ty == ty) return &t->slots[i];
    return NULL;
}

/* Stores the inferred batches until the sequence up to need is in the cache (caller's thread). */
static disopt_status run_store(run_pipe *p, long *stored, long need, int band, int tx0, int tx1, int ty0, int ty1) {
    disopt_tiler *t = p->t;
    while (*stored < need) {
        const long j = *stored / p->B;
        const int s = (int)(j % NSLOT);
        const double t0 = dp_now_s();
        pthread_mutex_lock(&p->mu);
        while (!p->stop && !(p->slot_batch[s] == j && p->inferred[s])) pthread_cond_wait(&p->cv, &p->mu);
        const int n = batch_n(p, j), stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        const double t1 = dp_now_s();
        p->t_main_wait += t1 - t0; /* (only the caller's thread writes the t_main/store/blend/sink sums) */
        if (stop) return DISOPT_ERR_CANCELLED; /* the failing stage recorded why */
        for (int k = 0; k < n; k++) {
            tile_slot *sl;
            DP_TRY(run_victim(t, band, tx0, tx1, ty0, ty1, need, &sl));
            store_window(t, &p->buf[s], k, sl);
            sl->tx = p->wtx[s][k];
            sl->ty = p->wty[s][k];
            sl->band = p->wband[s][k];
            sl->seq = j * p->B + k;
            sl->stamp = ++t->clock;
        }
        p->t_store += dp_now_s() - t1;
        pthread_mutex_lock(&p->mu);
        p->slot_batch[s] = j + NSLOT;
        p->loaded[s] = 0;
        p->inferred[s] = 0;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        *stored += n;
    }
    return DISOPT_OK;
}

/* A second handle on the source for a reader thread, or NULL when the source cannot be opened
 * again as the same raster (an in-memory dataset, say). */
static GDALDatasetH reopen_source(const disopt_tiler *t) {
    const char *name = GDALGetDescription(t->src);
    if (!name || !*name) return NULL;
    /* quietly, keeping the caller's last error (a warning about its options, say) */
    const CPLErr etype = CPLGetLastErrorType();
    const CPLErrorNum eno = CPLGetLastErrorNo();
    char *emsg = CPLStrdup(CPLGetLastErrorMsg());
    CPLPushErrorHandler(CPLQuietErrorHandler);
    GDALDatasetH ds = GDALOpenEx(name, GDAL_OF_RASTER | GDAL_OF_READONLY, NULL, NULL, NULL);
    CPLPopErrorHandler();
    CPLErrorSetState(etype, eno, emsg);
    CPLFree(emsg);
    if (!ds) return NULL;
    int same = GDALGetRasterXSize(ds) == t->W && GDALGetRasterYSize(ds) == t->H &&
               GDALGetRasterCount(ds) == GDALGetRasterCount(t->src) &&
               GDALGetDatasetDriver(ds) == GDALGetDatasetDriver(t->src);
    for (int c = 0; same && c < t->C; c++)
        same = GDALGetRasterDataType(GDALGetRasterBand(ds, t->bands[c])) ==
               GDALGetRasterDataType(GDALGetRasterBand(t->src, t->bands[c]));
    if (!same) {
        GDALClose(ds);
        return NULL;
    }
    return ds;
}

/* progress callback with the cells written so far; FALSE: cancelled */
static int report(run_pipe *p, long total, GDALProgressFunc progress, void *progress_arg) {
    if (!progress) return 1;
    pthread_mutex_lock(&p->mu);
    const long done = p->cells_written;
    pthread_mutex_unlock(&p->mu);
    return progress((double)done / total, NULL, progress_arg);
}

/* the bulk sweep on the caller's thread: store, blend a step's cells into a free writer buffer,
 * queue it for the writer, report progress; at the end, wait for the writer to finish */
static disopt_status run_cells(run_pipe *p, GDALProgressFunc progress, void *progress_arg) {
    disopt_tiler *t = p->t;
    const int S = t->step;
    const size_t S2 = (size_t)S * S;
    const long total = (long)t->ntx * t->nty;
    const int nbands = (t->ntx + BAND_CELLS - 1) / BAND_CELLS;
    long stored = 0, need = 0;
    for (int band = 0; band < nbands; band++) {
        const int b0 = band * BAND_CELLS, b1 = imin(b0 + BAND_CELLS, t->ntx);
        int prev_ty1 = -1;
        for (int cy = 0; cy < t->nty; cy++) {
            int tx0, tx1, ty0, ty1;
            step_windows(t, band, cy, &tx0, &tx1, &ty0, &ty1);
            const int r0 = ty0 > prev_ty1 + 1 ? ty0 : prev_ty1 + 1;
            if (r0 <= ty1) need += (long)(ty1 - r0 + 1) * (tx1 - tx0 + 1);
            prev_ty1 = ty1;
            DP_TRY(run_store(p, &stored, need, band, tx0, tx1, ty0, ty1));
            /* a free writer buffer */
            const double tw = dp_now_s();
            pthread_mutex_lock(&p->mu);
            while (!p->stop && p->pushed - p->written >= NSTEP) pthread_cond_wait(&p->cv, &p->mu);
            const int stop = p->stop;
            pthread_mutex_unlock(&p->mu);
            p->t_write_wait += dp_now_s() - tw; /* (only the caller's thread writes t_write_wait/t_blend) */
            if (stop) return DISOPT_ERR_CANCELLED; /* the failing stage recorded why */
            const int k = (int)(p->pushed % NSTEP);
            const int oy = cy * S, oh = imin(S, t->H - oy);
            const double t0 = dp_now_s();
            for (int cx = b0; cx < b1; cx++) {
                const int ox = cx * S, ow = imin(S, t->W - ox);
                int wx0, wx1, wy0, wy1;
                window_range(t, ox, ow, t->ntx, &wx0, &wx1);
                window_range(t, oy, oh, t->nty, &wy0, &wy1);
                DP_TRY(acc_reset(t, ow, oh));
                for (int ty = wy0; ty <= wy1; ty++) /* the order of disopt_tiler_read */
                    for (int tx = wx0; tx <= wx1; tx++) {
                        const tile_slot *sl = run_find(t, band, tx, ty);
                        if (!sl) return dp_error(DISOPT_ERR_INTERNAL, "tiler: window %d,%d missing in a bulk run", tx, ty);
                        accumulate(t, sl, ox, oy, ow, oh);
                    }
                acc_finish(t, (size_t)ow * oh, p->wbuf[k] + (size_t)(cx - b0) * S2);
                int *r = p->wcell[k][cx - b0];
                r[0] = ox, r[1] = oy, r[2] = ow, r[3] = oh;
            }
            p->t_blend += dp_now_s() - t0;
            pthread_mutex_lock(&p->mu);
            p->wn[k] = b1 - b0;
            p->pushed++;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            if (!report(p, total, progress, progress_arg)) return dp_error(DISOPT_ERR_CANCELLED, "cancelled by the caller");
        }
    }
    /* the last steps: wait for the writer (progress as it goes) */
    pthread_mutex_lock(&p->mu);
    p->no_more = 1;
    pthread_cond_broadcast(&p->cv);
    while (!p->stop && p->written < p->pushed) {
        pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        if (!report(p, total, progress, progress_arg)) return dp_error(DISOPT_ERR_CANCELLED, "cancelled by the caller");
        pthread_mutex_lock(&p->mu);
    }
    const int stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop ? DISOPT_ERR_CANCELLED : DISOPT_OK;
}

/* the run's windows, counted by running its sequence */
static long count_windows(const disopt_tiler *t) {
    seq_gen g;
    gen_init(t, &g);
    long c = 0;
    int band, tx, ty;
    while (!g.done) {
        gen_next(t, &g, &band, &tx, &ty);
        c++;
    }
    return c;
}

static int auto_io_threads(void) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > 8 ? 8 : (int)c;
}

disopt_status disopt_tiler_run(disopt_tiler *t, disopt_tiler_sink sink, void *sink_user, GDALProgressFunc progress,
                               void *progress_arg) {
    if (!t || !sink) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler_run: NULL argument");
    run_pipe *p = calloc(1, sizeof *p);
    run_reader *rr = calloc(MAX_READERS, sizeof *rr);
    if (!p || !rr) {
        free(p);
        free(rr);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    }
    p->sink = sink;
    p->sink_user = sink_user;
    p->t = t;
    p->B = t->o.batch_size;
    p->total = -1;
    /* DISOPT_TILER_PAD: AUTO (on a GPU backend, where a new batch size costs plans and graphs; the CPU
     * backend plans in microseconds and would only compute the padding), YES, NO */
    const char *pad = CPLGetConfigOption("DISOPT_TILER_PAD", "AUTO");
    p->pad_last = EQUAL(pad, "AUTO") ? strcmp(disopt_engine_backend_name(disopt_model_engine(t->model)), "cpu") != 0
                                     : CPLTestBool(pad);
    /* DISOPT_TILER_PREPARE / DISOPT_TILER_PREFETCH (YES; NO for A/B runs): the first batch's plan and graph
     * made while the buffers are allocated and the first windows read; batch j + 1 copied to the device
     * while batch j runs when it is read by then (WAIT, for tests: batch j waits for batch j + 1) */
    const char *pf = CPLGetConfigOption("DISOPT_TILER_PREFETCH", "YES");
    p->prefetch = EQUAL(pf, "WAIT") ? 2 : CPLTestBool(pf);
    p->hits0 = prefetch_hits(t);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    const double t_setup = dp_now_s();
    gen_init(t, &p->gen);
    if (p->gen.done) p->total = 0;
    if (CPLTestBool(CPLGetConfigOption("DISOPT_TILER_PREPARE", "YES"))) {
        const long nwin = count_windows(t);
        p->prepare_n = nwin < p->B ? (int)nwin : p->B;
    }
    for (int i = 0; i < NSLOT; i++) p->slot_batch[i] = i;
    disopt_status s = DISOPT_OK;
    pthread_t rth[MAX_READERS], ith, wth;
    int rstarted = 0, istarted = 0, wstarted = 0;
    /* the inference thread first: it prepares while the rest is set up (it waits for read windows) */
    if (p->prepare_n > 0) istarted = pthread_create(&ith, NULL, infer_main, p) == 0;
    for (int i = 0; i < NSLOT && s == DISOPT_OK; i++) {
        s = batch_reserve(t, &p->buf[i], p->B);
        p->wtx[i] = malloc(3 * (size_t)p->B * sizeof(int));
        if (s == DISOPT_OK && !p->wtx[i]) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
        if (s == DISOPT_OK) {
            p->wty[i] = p->wtx[i] + p->B;
            p->wband[i] = p->wty[i] + p->B;
        }
    }
    const double t_batches = dp_now_s() - t_setup;
    for (int i = 0; i < NSTEP && s == DISOPT_OK; i++) {
        p->wbuf[i] = malloc((size_t)BAND_CELLS * t->step * t->step * sizeof(float));
        if (!p->wbuf[i]) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    }
    /* readers: each on its own handle of the source; one on the caller's handle when the source
     * cannot be opened again */
    int nr = 0;
    const int want = imin(t->o.io_threads > 0 ? t->o.io_threads : auto_io_threads(), MAX_READERS);
    for (; s == DISOPT_OK && nr < want; nr++) {
        GDALDatasetH ds = reopen_source(t);
        if (!ds && nr > 0) break;
        s = reader_init(t, &rr[nr].rd, ds ? ds : t->src, ds != NULL);
        rr[nr].p = p;
        if (!ds) {
            nr++;
            break;
        }
    }
    if (s == DISOPT_OK) s = cache_grow(t, 3 * (BAND_CELLS + 2) + 2 + p->B, 0);
    for (int i = 0; i < t->nslots; i++) t->slots[i].seq = -1;
    if (s == DISOPT_OK && progress && !progress(0.0, NULL, progress_arg))
        s = dp_error(DISOPT_ERR_CANCELLED, "cancelled by the caller");
    if (s == DISOPT_OK) {
        for (; rstarted < nr; rstarted++)
            if (pthread_create(&rth[rstarted], NULL, reader_main, &rr[rstarted]) != 0) break;
        if (!istarted) istarted = pthread_create(&ith, NULL, infer_main, p) == 0;
        wstarted = pthread_create(&wth, NULL, writer_main, p) == 0;
        if (!rstarted || !istarted || !wstarted)
            s = dp_error(DISOPT_ERR_INTERNAL, "tiler: could not start the pipeline threads");
    }
    const double t_start = dp_now_s();
    if (s == DISOPT_OK) s = run_cells(p, progress, progress_arg);
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < rstarted; i++) pthread_join(rth[i], NULL);
    if (istarted) pthread_join(ith, NULL);
    if (wstarted) pthread_join(wth, NULL);
    /* a stage's failure is why the caller's thread stopped: report it */
    if (p->err != DISOPT_OK) s = dp_error(p->err, "%s", p->msg);
    const double t_end = dp_now_s();
    t->last_prefetch_hits = prefetch_hits(t) - p->hits0;
    CPLDebug("BUILDINGS",
             "tiler run: set-up %.2f s (batch buffers %.2f s; beside them, the first batch prepared in %.2f s), first "
             "batch after %.2f s waiting + %.2f s running; run %.2f s, %ld windows in batches of %d (+%d of padding), "
             "%ld batches prefetched (%ld uploads served), %d reader%s; readers: reading %.2f s, waiting for a buffer "
             "%.2f s (summed); network %.2f s, waiting for read windows %.2f s; caller: waiting for the network %.2f s, "
             "storing %.2f s, blending %.2f s, waiting for the writer %.2f s; writer: sink %.2f s",
             t_start - t_setup, t_batches, p->t_prepare, p->t_first_wait, p->t_first, t_end - t_start, p->total, p->B,
             p->padded, p->prefetches, t->last_prefetch_hits, nr, nr == 1 ? "" : "s", p->t_read, p->t_read_wait,
             p->t_infer, p->t_infer_wait, p->t_main_wait, p->t_store, p->t_blend, p->t_write_wait, p->t_sink);
    for (int i = 0; i < nr; i++) reader_free(&rr[i].rd);
    for (int i = 0; i < NSLOT; i++) {
        batch_free(t, &p->buf[i]);
        free(p->wtx[i]);
    }
    for (int i = 0; i < NSTEP; i++) free(p->wbuf[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    CPLDebug("BUILDINGS", "tiler run: teardown %.2f s", dp_now_s() - t_end);
    free(p);
    free(rr);
    return s;
}
