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

#include <cpl_error.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct tile_slot {
    int tx, ty;            /* -1 when empty */
    unsigned long stamp;   /* last use, for LRU */
    float *prob;           /* tile * tile, NaN = nodata */
} tile_slot;

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
    /* work buffers for one batch */
    int cap;               /* windows the buffers hold */
    float *x;              /* cap * C * T * T */
    float *prob;           /* cap * T * T */
    unsigned char *valid;  /* cap * T * T */
    float *cbuf;           /* 2 * T * T (complex band read) */
    unsigned char *mbuf;   /* T * T (mask read) */
    float *wx;             /* T: 1-D blending weight across a window */
    float *acc, *wsum;     /* blending accumulators of one read */
    size_t acc_cap;
    /* LRU of computed windows */
    tile_slot *slots;
    int nslots;
    unsigned long clock;
};

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

/* The batch's network input and output live in the engine's host memory (page-locked on a GPU:
 * the copies to and from the device run at full speed); their contents never outlive a batch. */
static disopt_status ensure_batch(disopt_tiler *t, int n) {
    if (n <= t->cap) return DISOPT_OK;
    disopt_engine *e = disopt_model_engine(t->model);
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    disopt_engine_host_free(e, t->x);
    disopt_engine_host_free(e, t->prob);
    t->x = t->prob = NULL;
    t->cap = 0;
    void *x = NULL, *p = NULL;
    disopt_status s = disopt_engine_host_alloc(e, (size_t)n * t->C * T2 * sizeof(float), &x);
    if (s == DISOPT_OK) s = disopt_engine_host_alloc(e, (size_t)n * T2 * sizeof(float), &p);
    t->x = x;
    t->prob = p;
    unsigned char *v = realloc(t->valid, (size_t)n * T2);
    if (v) t->valid = v;
    if (s != DISOPT_OK || !v)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: no memory for a batch of %d windows", n);
    t->cap = n;
    return DISOPT_OK;
}

/* Grows the window cache to want slots (never more than the raster has windows). */
static disopt_status cache_grow(disopt_tiler *t, int want) {
    const long nwin = (long)t->ntx * t->nty;
    if (nwin < want) want = (int)nwin;
    if (want <= t->nslots) return DISOPT_OK;
    tile_slot *ns = realloc(t->slots, (size_t)want * sizeof *ns);
    if (!ns) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory for the window cache");
    t->slots = ns;
    for (int i = t->nslots; i < want; i++) {
        ns[i].tx = ns[i].ty = -1;
        ns[i].stamp = 0;
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
    const size_t T2 = (size_t)o.tile_size * o.tile_size;
    if (s == DISOPT_OK) {
        t->cbuf = malloc(2 * T2 * sizeof(float));
        t->mbuf = malloc(T2);
        t->wx = malloc((size_t)o.tile_size * sizeof(float));
        if (!t->cbuf || !t->mbuf || !t->wx) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    }
    if (s == DISOPT_OK) s = cache_grow(t, o.cache_tiles);
    if (s == DISOPT_OK) {
        /* linear ramps over the 2*overlap pixels where neighbouring windows overlap: the weights of
         * the two windows sum to 1 there, so the blend is continuous across window borders */
        const int T = o.tile_size, R = 2 * o.overlap;
        for (int u = 0; u < T; u++)
            t->wx[u] = R == 0 ? 1.0f : u < R ? (u + 0.5f) / R : u >= T - R ? (T - u - 0.5f) / R : 1.0f;
        s = ensure_batch(t, 1);
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
    disopt_engine_host_free(disopt_model_engine(t->model), t->x);
    disopt_engine_host_free(disopt_model_engine(t->model), t->prob);
    free(t->valid);
    free(t->wx);
    free(t->acc);
    free(t->wsum);
    free(t->cbuf);
    free(t->mbuf);
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

/* Fills window k of the batch buffers with the source for window (tx, ty). */
static disopt_status load_window(disopt_tiler *t, int k, int tx, int ty) {
    const int T = t->o.tile_size;
    const size_t T2 = (size_t)T * T;
    const int x0 = tx * t->step - t->o.overlap, y0 = ty * t->step - t->o.overlap;
    const int rx0 = x0 < 0 ? 0 : x0, ry0 = y0 < 0 ? 0 : y0;
    const int rx1 = x0 + T > t->W ? t->W : x0 + T, ry1 = y0 + T > t->H ? t->H : y0 + T;
    const int rw = rx1 - rx0, rh = ry1 - ry0;
    float *x = t->x + (size_t)k * t->C * T2;
    unsigned char *valid = t->valid + (size_t)k * T2;
    memset(x, 0, (size_t)t->C * T2 * sizeof(float));
    memset(valid, 0, T2);
    for (int yy = 0; yy < rh; yy++) memset(valid + (size_t)(ry0 - y0 + yy) * T + (rx0 - x0), 1, (size_t)rw);
    const size_t off = (size_t)(ry0 - y0) * T + (rx0 - x0);
    for (int c = 0; c < t->C; c++) {
        GDALRasterBandH b = GDALGetRasterBand(t->src, t->bands[c]);
        float *plane = x + (size_t)c * T2;
        if (t->is_complex[c]) {
            if (GDALRasterIO(b, GF_Read, rx0, ry0, rw, rh, t->cbuf, rw, rh, GDT_CFloat32, 0, 0) != CE_None)
                return gdal_fail("reading the source");
            for (int yy = 0; yy < rh; yy++)
                for (int xx = 0; xx < rw; xx++) {
                    const float *z = t->cbuf + 2 * ((size_t)yy * rw + xx);
                    plane[off + (size_t)yy * T + xx] = complex_value(t->o.complex_mode, z[0], z[1]);
                }
        } else if (GDALRasterIO(b, GF_Read, rx0, ry0, rw, rh, plane + off, rw, rh, GDT_Float32, sizeof(float),
                                (GSpacing)T * sizeof(float)) != CE_None) {
            return gdal_fail("reading the source");
        }
        const int flags = GDALGetMaskFlags(b);
        if (!(flags & GMF_ALL_VALID)) {
            if (GDALRasterIO(GDALGetMaskBand(b), GF_Read, rx0, ry0, rw, rh, t->mbuf, rw, rh, GDT_Byte, 0, 0) != CE_None)
                return gdal_fail("reading the source's mask");
            for (int yy = 0; yy < rh; yy++)
                for (int xx = 0; xx < rw; xx++)
                    if (!t->mbuf[(size_t)yy * rw + xx]) valid[off + (size_t)yy * T + xx] = 0;
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
    return DISOPT_OK;
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

/* Runs windows [k0, k0 + n) of the batch buffers on model m; when the device runs out of memory,
 * runs the two halves one after the other instead (down to one window, then the error stands). */
static disopt_status infer_split(disopt_tiler *t, disopt_model *m, int k0, int n) {
    const size_t T2 = (size_t)t->o.tile_size * t->o.tile_size;
    disopt_outputs outs;
    memset(&outs, 0, sizeof outs);
    outs.probability = t->prob + (size_t)k0 * T2;
    disopt_status s = disopt_model_infer(m, t->x + (size_t)k0 * t->C * T2, n, t->C, t->o.tile_size,
                                         t->o.tile_size, &outs);
    if (s == DISOPT_ERR_OUT_OF_MEMORY && n > 1) {
        DP_TRY(infer_split(t, m, k0, n / 2));
        return infer_split(t, m, k0 + n / 2, n - n / 2);
    }
    return s;
}

/* one model's share of a batch, run on its own thread */
typedef struct share {
    disopt_tiler *t;
    disopt_model *m;
    int k0, n;
    disopt_status s;
    char msg[512]; /* the thread-local message of a failure, carried back */
} share;

static void *share_run(void *arg) {
    share *w = arg;
    w->s = infer_split(w->t, w->m, w->k0, w->n);
    if (w->s != DISOPT_OK) snprintf(w->msg, sizeof w->msg, "%s", disopt_last_error());
    return NULL;
}

/* Runs windows [0, n) of the batch buffers: on the model alone, or split into contiguous shares
 * over the model and the added ones (one thread each; every window's result is the same whichever
 * device computes it). */
static disopt_status infer_batch(disopt_tiler *t, int n) {
    const int G = t->n_more + 1 < n ? t->n_more + 1 : n;
    if (G <= 1) return infer_split(t, t->model, 0, n);
    share w[TILER_MAX_MODELS];
    pthread_t th[TILER_MAX_MODELS];
    int started[TILER_MAX_MODELS] = {0};
    for (int g = 0, k0 = 0; g < G; g++) {
        const int cnt = n / G + (g < n % G);
        w[g] = (share){t, g == 0 ? t->model : t->more[g - 1], k0, cnt, DISOPT_OK, ""};
        k0 += cnt;
    }
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

/* Computes n windows (coordinates in txs/tys) and stores them in the window cache. */
static disopt_status compute_windows(disopt_tiler *t, int n, const int *txs, const int *tys) {
    DP_TRY(ensure_batch(t, n));
    const int T = t->o.tile_size;
    const size_t T2 = (size_t)T * T;
    for (int k = 0; k < n; k++) DP_TRY(load_window(t, k, txs[k], tys[k]));
    DP_TRY(disopt_model_normalize(t->model, t->x, n, T, T));
    DP_TRY(infer_batch(t, n));
    for (int k = 0; k < n; k++) {
        float *p = t->prob + (size_t)k * T2;
        if (t->rotate) reverse_plane(p, T2);
        const unsigned char *v = t->valid + (size_t)k * T2;
        tile_slot *sl = cache_victim(t);
        for (size_t i = 0; i < T2; i++) sl->prob[i] = v[i] ? p[i] : NAN;
        sl->tx = txs[k];
        sl->ty = tys[k];
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

/* Makes sure the windows in [tx0, tx1] x [ty0, ty1] are cached, computing the missing ones in
 * batches. The cache must hold them all (callers size it). */
static disopt_status prefetch(disopt_tiler *t, int tx0, int tx1, int ty0, int ty1) {
    int txs[256], tys[256], n = 0;
    const int B = t->o.batch_size < 256 ? t->o.batch_size : 256;
    for (int ty = ty0; ty <= ty1; ty++)
        for (int tx = tx0; tx <= tx1; tx++) {
            if (cache_find(t, tx, ty)) continue;
            txs[n] = tx;
            tys[n] = ty;
            if (++n == B) {
                DP_TRY(compute_windows(t, n, txs, tys));
                n = 0;
            }
        }
    if (n) DP_TRY(compute_windows(t, n, txs, tys));
    return DISOPT_OK;
}

disopt_status disopt_tiler_read(disopt_tiler *t, int x, int y, int w, int h, float *prob) {
    if (!t || !prob) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler_read: NULL argument");
    if (w <= 0 || h <= 0 || x < 0 || y < 0 || x + w > t->W || y + h > t->H)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler_read: window %d,%d %dx%d outside the %dx%d raster", x, y,
                        w, h, t->W, t->H);
    const int S = t->step, O = t->o.overlap, T = t->o.tile_size;
    const size_t n = (size_t)w * h;
    if (n > t->acc_cap) {
        float *a = realloc(t->acc, n * sizeof(float)), *ws = a ? realloc(t->wsum, n * sizeof(float)) : NULL;
        if (a) t->acc = a;
        if (ws) t->wsum = ws;
        if (!a || !ws) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler_read: no memory for a %dx%d read", w, h);
        t->acc_cap = n;
    }
    memset(t->acc, 0, n * sizeof(float));
    memset(t->wsum, 0, n * sizeof(float));
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
            const int wx0 = tx * S - O, wy0 = ty * S - O; /* window origin in raster pixels */
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
    for (size_t i = 0; i < n; i++) prob[i] = t->acc[i] / t->wsum[i]; /* NaN (nodata) stays NaN */
    return DISOPT_OK;
}

/* CreateCopy order: columns of BAND_CELLS output cells, each swept top to bottom, so that the
 * windows a cell needs (its 3x3 neighbourhood) are cached at once with a cache that does not
 * grow with the raster; the windows at a band's sides are computed twice ((K+2)/K work). */
#define BAND_CELLS 16

disopt_status disopt_tiler_run(disopt_tiler *t, disopt_tiler_sink sink, void *sink_user, GDALProgressFunc progress,
                               void *progress_arg) {
    if (!t || !sink) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tiler_run: NULL argument");
    const int S = t->step;
    const long total = (long)t->ntx * t->nty;
    DP_TRY(ensure_batch(t, t->o.batch_size));
    /* the cache must hold three rows of a band's windows */
    DP_TRY(cache_grow(t, 3 * (BAND_CELLS + 2) + 2));
    float *cell = malloc((size_t)S * S * sizeof(float));
    if (!cell) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "tiler: out of memory");
    disopt_status s = DISOPT_OK;
    if (progress && !progress(0.0, NULL, progress_arg)) s = dp_error(DISOPT_ERR_CANCELLED, "cancelled by the caller");
    long done = 0;
    for (int b0 = 0; s == DISOPT_OK && b0 < t->ntx; b0 += BAND_CELLS) {
        const int b1 = b0 + BAND_CELLS < t->ntx ? b0 + BAND_CELLS : t->ntx; /* cells [b0, b1) */
        for (int cy = 0; s == DISOPT_OK && cy < t->nty; cy++) {
            const int oy = cy * S, oh = oy + S > t->H ? t->H - oy : S;
            const int ox0 = b0 * S, ow_all = (b1 * S > t->W ? t->W : b1 * S) - ox0;
            int tx0, tx1, ty0, ty1;
            window_range(t, ox0, ow_all, t->ntx, &tx0, &tx1);
            window_range(t, oy, oh, t->nty, &ty0, &ty1);
            s = prefetch(t, tx0, tx1, ty0, ty1);
            for (int cx = b0; s == DISOPT_OK && cx < b1; cx++) {
                const int ox = cx * S, ow = ox + S > t->W ? t->W - ox : S;
                s = disopt_tiler_read(t, ox, oy, ow, oh, cell);
                if (s == DISOPT_OK && sink(sink_user, ox, oy, ow, oh, cell)) {
                    const char *m = CPLGetLastErrorMsg();
                    s = dp_error(DISOPT_ERR_IO, "writing the result: %s", (m && *m) ? m : "the sink failed");
                }
                done++;
            }
            if (s == DISOPT_OK && progress && !progress((double)done / total, NULL, progress_arg))
                s = dp_error(DISOPT_ERR_CANCELLED, "cancelled by the caller");
        }
    }
    free(cell);
    return s;
}
