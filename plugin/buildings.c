/*
 * buildings.c - the BUILDINGS driver's logic in C: options, identification, the lazy dataset's
 * state and block reads, and CreateCopy (a tiled GeoTIFF written by streaming the tiler).
 *
 * Models are read through GDAL's VSI (so /vsizip/, /vsicurl/ work), hashed (SHA-256, OpenSSL's
 * libcrypto, which GDAL already loads) and loaded from memory. Every failure becomes a CPLError
 * with the library's message; nothing here aborts.
 */
#include "buildings.h"
#include "pixelfuncs.h"

#include "disopt.h"
#include "disopt_io.h"
#include "disopt_raster.h"

#include <cpl_conv.h>
#include <cpl_minixml.h>
#include <cpl_multiproc.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef DISOPT_DEFAULT_MODEL
#define DISOPT_DEFAULT_MODEL "/usr/local/share/gdal-disopt/default.safetensors"
#endif

/* ------------------------------------------------------------------ options */

/* Options common to creation and opening (the lazy dataset mirrors CreateCopy). */
#define BLD_COMMON_OPTIONS                                                                                     \
    "  <Option name='MODEL' type='string' description='Model file (safetensors; GDAL virtual paths work). "     \
    "Default: the DISOPT_MODEL configuration option, else the model installed with the plugin'/>"               \
    "  <Option name='OUTPUT' type='string-select' default='PROBABILITY' description='PROBABILITY: Float32 "     \
    "0..1 (nodata -1); MASK: Byte 0/1 with a colour table (nodata 255)'>"                                         \
    "    <Value>PROBABILITY</Value><Value>MASK</Value></Option>"                                                 \
    "  <Option name='THRESHOLD' type='float' default='0.5' description='MASK: building where probability > "    \
    "THRESHOLD'/>"                                                                                               \
    "  <Option name='BANDS' type='string' description='Source bands feeding the model inputs (HH,HV,VH,VV), "  \
    "comma separated, e.g. 1,2,3,4. Default: 1..N'/>"                                                            \
    "  <Option name='DEVICE' type='string' default='AUTO' description='Where the network runs: AUTO (the first " \
    "CUDA GPU if there is one, else the CPU), CPU, CUDA (GPU 0), CUDA:n, or CUDA:ALL (batches split over every " \
    "visible GPU)'/>"                                     \
    "  <Option name='PRECISION' type='string-select' default='FP32' description='Network arithmetic: FP32 "    \
    "(IEEE, equal to the CPU), or on the GPU TF32, FP16, BF16'>"                                                  \
    "    <Value>FP32</Value><Value>TF32</Value><Value>FP16</Value><Value>BF16</Value></Option>"                   \
    "  <Option name='TILE_SIZE' type='int' default='512' description='Network window in pixels, a multiple of " \
    "32 (the authors trained on 512)'/>"                                                                         \
    "  <Option name='OVERLAP' type='int' default='64' description='Context pixels on each side of a window; "   \
    "neighbouring windows are blended over 2*OVERLAP pixels'/>"                                                  \
    "  <Option name='BATCH_SIZE' type='int' default='1' description='Windows per network call'/>"               \
    "  <Option name='NUM_THREADS' type='string' default='ALL_CPUS' description='CPU threads for the network: " \
    "a number or ALL_CPUS'/>"                                                                                    \
    "  <Option name='ROTATE180' type='string-select' default='MODEL' description='Rotate each window 180 "     \
    "degrees (SpaceNet 6 strips imaged from the south). MODEL: as the model file says'>"                        \
    "    <Value>YES</Value><Value>NO</Value><Value>MODEL</Value></Option>"                                       \
    "  <Option name='COMPLEX' type='string-select' default='ERROR' description='Complex (SLC) bands: ERROR, or " \
    "convert to DB (10*log10|z|^2), INTENSITY (|z|^2) or AMPLITUDE (|z|)'>"                                     \
    "    <Value>ERROR</Value><Value>DB</Value><Value>INTENSITY</Value><Value>AMPLITUDE</Value></Option>"

static const char bld_open_options[] =
    "<OpenOptionList>" BLD_COMMON_OPTIONS
    "  <Option name='BLOCK_SIZE' type='int' description='Block size of the lazy dataset (default: the window "
    "step, TILE_SIZE - 2*OVERLAP)'/>"
    "  <Option name='CACHE_TILES' type='int' default='64' description='Computed windows kept in memory'/>"
    "</OpenOptionList>";

/* our names, which are not passed on to GTiff */
static const char *const bld_own_names[] = {"MODEL", "PRECISION",       "OUTPUT",    "THRESHOLD", "BANDS",    "DEVICE",
                                            "TILE_SIZE",   "OVERLAP",   "BATCH_SIZE", "NUM_THREADS", "ROTATE180",
                                            "COMPLEX",     "BLOCK_SIZE", "CACHE_TILES", "IO_THREADS", NULL};

const char *disopt_bld_open_option_list(void) { return bld_open_options; }

char *disopt_bld_creation_option_list(void) {
    /* ours, then GTiff's (which the output is), minus any name we own */
    CPLXMLNode *root = CPLParseXMLString(
        "<CreationOptionList>" BLD_COMMON_OPTIONS
        "  <Option name='IO_THREADS' type='string' default='AUTO' description='Threads reading the source, each on "
        "its own handle, while the network runs: a number or AUTO (one per core, at most 8)'/>"
        "</CreationOptionList>");
    if (!root) return CPLStrdup("<CreationOptionList/>");
    GDALDriverH gtiff = GDALGetDriverByName("GTiff");
    const char *gl = gtiff ? GDALGetMetadataItem(gtiff, GDAL_DMD_CREATIONOPTIONLIST, NULL) : NULL;
    CPLXMLNode *g = gl ? CPLParseXMLString(gl) : NULL;
    CPLXMLNode *last = root->psChild;
    while (last && last->psNext) last = last->psNext;
    for (CPLXMLNode *c = g ? g->psChild : NULL; c; c = c->psNext) {
        if (c->eType != CXT_Element || !EQUAL(c->pszValue, "Option")) continue;
        const char *name = CPLGetXMLValue(c, "name", "");
        if (CSLFindString((CSLConstList)bld_own_names, name) >= 0) continue;
        CPLXMLNode *next = c->psNext; /* CPLCloneXMLTree copies the siblings too: detach */
        c->psNext = NULL;
        CPLXMLNode *copy = CPLCloneXMLTree(c);
        c->psNext = next;
        if (last) last->psNext = copy;
        else root->psChild = copy;
        last = copy;
    }
    if (g) CPLDestroyXMLNode(g);
    char *s = CPLSerializeXMLTree(root);
    CPLDestroyXMLNode(root);
    return s;
}

typedef struct bld_opts {
    char model[2048];
    int mask;
    double threshold;
    int device; /* 0 auto, 1 cpu, 2 cuda, 3 every visible CUDA device (CUDA:ALL) */
    int gpu;    /* CUDA device ordinal */
    disopt_precision precision;
    int num_threads;
    int block_size;
    disopt_tiler_options tiler;
} bld_opts;

static int parse_int(const char *name, const char *v, int lo, int hi, int *out) {
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: %s=%s: expected an integer in %d..%d", name, v, lo, hi);
        return 0;
    }
    *out = (int)x;
    return 1;
}

/* Parses our options from a NAME=VALUE list. Returns 0 (after CPLError) for an impossible one. */
static int parse_opts(CSLConstList list, bld_opts *o) {
    memset(o, 0, sizeof *o);
    o->threshold = 0.5;
    o->num_threads = 0;
    disopt_tiler_options_init(&o->tiler);
    const char *v;
    if ((v = CSLFetchNameValue(list, "MODEL")) && *v) snprintf(o->model, sizeof o->model, "%s", v);
    else {
        const char *d = CPLGetConfigOption("DISOPT_MODEL", NULL);
        snprintf(o->model, sizeof o->model, "%s", d && *d ? d : DISOPT_DEFAULT_MODEL);
    }
    if ((v = CSLFetchNameValue(list, "OUTPUT"))) {
        if (EQUAL(v, "MASK")) o->mask = 1;
        else if (!EQUAL(v, "PROBABILITY")) {
            CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: OUTPUT=%s: expected PROBABILITY or MASK", v);
            return 0;
        }
    }
    if ((v = CSLFetchNameValue(list, "THRESHOLD"))) {
        char *end = NULL;
        o->threshold = CPLStrtod(v, &end);
        if (!*v || *end || !(o->threshold >= 0.0 && o->threshold <= 1.0)) {
            CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: THRESHOLD=%s: expected a number in [0, 1]", v);
            return 0;
        }
    }
    if ((v = CSLFetchNameValue(list, "BANDS"))) {
        char **items = CSLTokenizeString2(v, ", ", 0);
        int n = CSLCount(items), ok = n > 0 && n <= DISOPT_MAX_BANDS;
        for (int i = 0; ok && i < n; i++) ok = parse_int("BANDS", items[i], 1, 65535, &o->tiler.bands[i]);
        CSLDestroy(items);
        if (!ok) {
            CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: BANDS=%s: expected a list of 1..%d band numbers", v,
                     DISOPT_MAX_BANDS);
            return 0;
        }
        o->tiler.num_bands = n;
    }
    if ((v = CSLFetchNameValue(list, "DEVICE"))) {
        if (EQUAL(v, "AUTO")) o->device = 0;
        else if (EQUAL(v, "CPU")) o->device = 1;
        else if (EQUAL(v, "CUDA")) o->device = 2;
        else if (EQUAL(v, "CUDA:ALL")) o->device = 3, o->gpu = 0;
        else if (STARTS_WITH_CI(v, "CUDA:") && parse_int("DEVICE", v + 5, 0, 1023, &o->gpu)) o->device = 2;
        else {
            CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: DEVICE=%s: expected AUTO, CPU, CUDA, CUDA:n or CUDA:ALL", v);
            return 0;
        }
    }
    if ((v = CSLFetchNameValue(list, "PRECISION"))) {
        if (EQUAL(v, "FP32")) o->precision = DISOPT_PRECISION_FP32;
        else if (EQUAL(v, "TF32")) o->precision = DISOPT_PRECISION_TF32;
        else if (EQUAL(v, "FP16")) o->precision = DISOPT_PRECISION_FP16;
        else if (EQUAL(v, "BF16")) o->precision = DISOPT_PRECISION_BF16;
        else {
            CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: PRECISION=%s: expected FP32, TF32, FP16 or BF16", v);
            return 0;
        }
    }
    if ((v = CSLFetchNameValue(list, "TILE_SIZE")) && !parse_int("TILE_SIZE", v, 32, 8192, &o->tiler.tile_size))
        return 0;
    if ((v = CSLFetchNameValue(list, "OVERLAP")) && !parse_int("OVERLAP", v, 0, 4096, &o->tiler.overlap)) return 0;
    if ((v = CSLFetchNameValue(list, "BATCH_SIZE")) && !parse_int("BATCH_SIZE", v, 1, 256, &o->tiler.batch_size))
        return 0;
    if ((v = CSLFetchNameValue(list, "NUM_THREADS")) && !EQUAL(v, "ALL_CPUS") &&
        !parse_int("NUM_THREADS", v, 1, 1024, &o->num_threads))
        return 0;
    if ((v = CSLFetchNameValue(list, "ROTATE180"))) {
        if (EQUAL(v, "MODEL")) o->tiler.rotate180 = -1;
        else o->tiler.rotate180 = CPLTestBool(v) ? 1 : 0;
    }
    if ((v = CSLFetchNameValue(list, "COMPLEX"))) {
        if (EQUAL(v, "ERROR")) o->tiler.complex_mode = DISOPT_COMPLEX_ERROR;
        else if (EQUAL(v, "DB")) o->tiler.complex_mode = DISOPT_COMPLEX_DB;
        else if (EQUAL(v, "INTENSITY")) o->tiler.complex_mode = DISOPT_COMPLEX_INTENSITY;
        else if (EQUAL(v, "AMPLITUDE")) o->tiler.complex_mode = DISOPT_COMPLEX_AMPLITUDE;
        else {
            CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: COMPLEX=%s: expected ERROR, DB, INTENSITY or AMPLITUDE", v);
            return 0;
        }
    }
    if ((v = CSLFetchNameValue(list, "BLOCK_SIZE")) && !parse_int("BLOCK_SIZE", v, 1, 16384, &o->block_size)) return 0;
    if ((v = CSLFetchNameValue(list, "CACHE_TILES")) && !parse_int("CACHE_TILES", v, 1, 4096, &o->tiler.cache_tiles))
        return 0;
    if ((v = CSLFetchNameValue(list, "IO_THREADS")) && !EQUAL(v, "AUTO") &&
        !parse_int("IO_THREADS", v, 1, 16, &o->tiler.io_threads))
        return 0;
    if (o->tiler.tile_size % 32) {
        CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: TILE_SIZE=%d: must be a multiple of 32", o->tiler.tile_size);
        return 0;
    }
    if (2 * o->tiler.overlap >= o->tiler.tile_size) {
        CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: OVERLAP=%d: must be less than half of TILE_SIZE=%d",
                 o->tiler.overlap, o->tiler.tile_size);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ model loading */

#define BLD_MAX_GPUS 16
typedef struct bld_model {
    disopt_engine *engine;
    disopt_model *model;
    disopt_model_info info;
    char sha256[65];
    int n_more; /* CUDA:ALL: the same model on GPUs 1..n_more */
    disopt_engine *more_engine[BLD_MAX_GPUS - 1];
    disopt_model *more_model[BLD_MAX_GPUS - 1];
} bld_model;

static void bld_model_free(bld_model *m) {
    for (int i = 0; i < m->n_more; i++) {
        disopt_model_destroy(m->more_model[i]);
        disopt_engine_destroy(m->more_engine[i]);
    }
    disopt_model_destroy(m->model);
    disopt_engine_destroy(m->engine);
    memset(m, 0, sizeof *m);
}

/* CUDA:ALL: the model once more on each further visible GPU (1, 2, ... until one does not exist) */
static disopt_status bld_load_more(const bld_opts *o, bld_model *m, disopt_file_kind kind, const GByte *buf,
                                   size_t size) {
    for (int g = 1; g < BLD_MAX_GPUS; g++) {
        disopt_engine_options eo;
        disopt_engine_options_init(&eo);
        eo.num_threads = o->num_threads;
        eo.backend = DISOPT_BACKEND_CUDA;
        eo.device = g;
        eo.precision = o->precision;
        disopt_engine *e = NULL;
        disopt_status s = disopt_engine_create(&eo, &e);
        if (s == DISOPT_ERR_INVALID_ARGUMENT) { /* no GPU g: all are in use */
            disopt_clear_error();
            return DISOPT_OK;
        }
        if (s != DISOPT_OK) return s;
        disopt_model *mm = NULL;
        s = kind == DISOPT_FILE_PTH_ZIP || kind == DISOPT_FILE_PTH_LEGACY ? disopt_model_load_any(e, o->model, &mm)
                                                                          : disopt_model_load_memory(e, buf, size, &mm);
        if (s != DISOPT_OK) {
            disopt_engine_destroy(e);
            return s;
        }
        m->more_engine[m->n_more] = e;
        m->more_model[m->n_more++] = mm;
    }
    return DISOPT_OK;
}

/* the tiler over src, with every loaded copy of the model */
static disopt_status bld_tiler_create(const bld_opts *o, bld_model *m, GDALDatasetH src, disopt_tiler **out) {
    disopt_status s = disopt_tiler_create(m->model, src, &o->tiler, out);
    for (int i = 0; s == DISOPT_OK && i < m->n_more; i++) s = disopt_tiler_add_model(*out, m->more_model[i]);
    if (s != DISOPT_OK && *out) {
        disopt_tiler_destroy(*out);
        *out = NULL;
    }
    return s;
}

static double bld_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The engine is created on a helper thread while this one reads and hashes the model file: on the
 * GPU the engine (CUDA context, cuDNN, cuBLAS) takes ~0.3 s and the read + SHA-256 ~0.15 s, both before
 * any pixel is computed (bench/RESULTS.md 4.5). Its error message is thread-local, so it is copied. */
typedef struct {
    disopt_engine_options eo;
    disopt_engine *engine;
    disopt_status status;
    double seconds;
    char msg[1024];
} bld_engine_job;

/* the engine's messages (device, set-up times) as GDAL debug messages (CPL_DEBUG=BUILDINGS) */
static void bld_log(void *user, disopt_log_level level, const char *msg) {
    (void)user;
    CPLDebug("BUILDINGS", "%s%s", level == DISOPT_LOG_WARNING ? "warning: " : "", msg);
}

static void bld_engine_thread(void *arg) {
    bld_engine_job *j = arg;
    const double t0 = bld_now();
    j->status = disopt_engine_create(&j->eo, &j->engine);
    if (j->status != DISOPT_OK) snprintf(j->msg, sizeof j->msg, "%s", disopt_last_error());
    j->seconds = bld_now() - t0;
}

/* joins the engine job (or runs it here if its thread could not start) */
static void bld_engine_join(CPLJoinableThread *th, bld_engine_job *j) {
    if (th)
        CPLJoinThread(th);
    else
        bld_engine_thread(j);
}

static int bld_model_load(const bld_opts *o, bld_model *m) {
    memset(m, 0, sizeof *m);
    const double t0 = bld_now();
    bld_engine_job job;
    memset(&job, 0, sizeof job);
    disopt_engine_options_init(&job.eo);
    job.eo.num_threads = o->num_threads;
    job.eo.backend = o->device == 1 ? DISOPT_BACKEND_CPU : DISOPT_BACKEND_CUDA;
    job.eo.device = o->gpu;
    job.eo.precision = o->precision;
    job.eo.log = bld_log;
    CPLJoinableThread *th = CPLCreateJoinableThread(bld_engine_thread, &job);
    GByte *buf = NULL;
    vsi_l_offset size = 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    VSILFILE *fp = VSIFOpenL(o->model, "rb");
    if (fp) VSIFCloseL(fp);
    const char *fail = NULL;
    if (!fp)
        fail = "does not exist or cannot be opened (set MODEL=..., or the DISOPT_MODEL configuration option)";
    else if (!VSIIngestFile(NULL, o->model, &buf, &size, (GIntBig)8 << 30))
        fail = "cannot be read";
    else if (EVP_Digest(buf, (size_t)size, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        fail = "could not be hashed (SHA-256 failed)";
    const double t1 = bld_now();
    /* a safetensors image is parsed and folded here while the engine is still being made; a PyTorch
     * checkpoint (.pth, .pth.tar: a zip) goes through the restricted reader of disopt_io.h later */
    disopt_file_kind kind = fail ? DISOPT_FILE_UNKNOWN : disopt_file_kind_of(buf, (size_t)size);
    disopt_model *parsed = NULL;
    disopt_status ps = DISOPT_OK;
    char pmsg[1024] = "";
    if (!fail && kind != DISOPT_FILE_PTH_ZIP && kind != DISOPT_FILE_PTH_LEGACY) {
        ps = disopt_model_parse_memory(buf, (size_t)size, &parsed);
        if (ps != DISOPT_OK) snprintf(pmsg, sizeof pmsg, "%s", disopt_last_error());
    }
    const double t1p = bld_now();
    bld_engine_join(th, &job);
    if (fail) {
        disopt_engine_destroy(job.engine);
        VSIFree(buf);
        CPLError(CE_Failure, CPLE_OpenFailed, "BUILDINGS: model file %s %s", o->model, fail);
        return 0;
    }
    for (unsigned i = 0; i < 32; i++) snprintf(m->sha256 + 2 * i, 3, "%02x", md[i]);
    disopt_status s = job.status;
    m->engine = job.engine;
    if (s != DISOPT_OK && o->device == 0) { /* AUTO: no usable GPU, the CPU it is */
        CPLDebug("BUILDINGS", "DEVICE=AUTO: no CUDA backend (%s); running on the CPU", job.msg);
        disopt_engine_options eo = job.eo;
        eo.backend = DISOPT_BACKEND_CPU;
        s = disopt_engine_create(&eo, &m->engine);
    } else if (s != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_NotSupported, "BUILDINGS: DEVICE=%s: %s",
                 o->device == 3 ? "CUDA:ALL" : o->device == 2 ? "CUDA" : "CPU", job.msg);
        disopt_model_destroy(parsed);
        VSIFree(buf);
        return 0;
    }
    const double t2 = bld_now();
    const char *why = NULL; /* the parse's message (the thread's last error may be the CPU engine's since) */
    if (s == DISOPT_OK && (kind == DISOPT_FILE_PTH_ZIP || kind == DISOPT_FILE_PTH_LEGACY)) {
        s = disopt_model_load_any(m->engine, o->model, &m->model);
    } else if (s == DISOPT_OK && ps != DISOPT_OK) {
        s = ps;
        why = pmsg;
    } else if (s == DISOPT_OK) {
        s = disopt_model_bind(parsed, m->engine);
        m->model = parsed; /* (freed with m, bound or not) */
        parsed = NULL;
    }
    disopt_model_destroy(parsed);
    if (s == DISOPT_OK && o->device == 3) s = bld_load_more(o, m, kind, buf, (size_t)size);
    VSIFree(buf);
    if (s == DISOPT_OK) s = disopt_model_get_info(m->model, &m->info);
    if (s != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "BUILDINGS: model %s: %s", o->model, why ? why : disopt_last_error());
        bld_model_free(m);
        return 0;
    }
    CPLDebug("BUILDINGS",
             "model: read + SHA-256 %.2f s, parse %.2f s, engine (%s) %.2f s on its own thread (ready %.2f s after the "
             "parse), load %.2f s",
             t1 - t0, t1p - t1, disopt_engine_backend_name(m->engine), job.seconds, t2 - t1p, bld_now() - t2);
    return 1;
}

static char **bld_metadata(const bld_opts *o, const bld_model *m) {
    char **md = NULL;
    char bands[128] = "";
    for (int i = 0; i < m->info.config.in_channels; i++) {
        char one[16];
        snprintf(one, sizeof one, "%s%d", i ? "," : "", o->tiler.num_bands ? o->tiler.bands[i] : i + 1);
        strncat(bands, one, sizeof bands - strlen(bands) - 1);
    }
    const char *prov = disopt_model_metadata(m->model, "provenance");
    md = CSLSetNameValue(md, "DISOPT_MODEL", m->info.name);
    md = CSLSetNameValue(md, "DISOPT_MODEL_FILE", CPLGetFilename(o->model));
    md = CSLSetNameValue(md, "DISOPT_MODEL_SHA256", m->sha256);
    if (prov) md = CSLSetNameValue(md, "DISOPT_MODEL_PROVENANCE", prov);
    md = CSLSetNameValue(md, "DISOPT_OUTPUT", o->mask ? "MASK" : "PROBABILITY");
    if (o->mask) md = CSLSetNameValue(md, "DISOPT_THRESHOLD", CPLSPrintf("%.17g", o->threshold));
    md = CSLSetNameValue(md, "DISOPT_BANDS", bands);
    md = CSLSetNameValue(md, "DISOPT_TILE_SIZE", CPLSPrintf("%d", o->tiler.tile_size));
    md = CSLSetNameValue(md, "DISOPT_OVERLAP", CPLSPrintf("%d", o->tiler.overlap));
    md = CSLSetNameValue(md, "DISOPT_ROTATE180",
                         (o->tiler.rotate180 < 0 ? m->info.rotate180 : o->tiler.rotate180) ? "YES" : "NO");
    md = CSLSetNameValue(md, "DISOPT_DEVICE", m->n_more ? CPLSPrintf("%s x %d", disopt_engine_backend_name(m->engine),
                                                                      m->n_more + 1)
                                                         : disopt_engine_backend_name(m->engine));
    md = CSLSetNameValue(md, "DISOPT_PRECISION", disopt_precision_name(o->precision));
    md = CSLSetNameValue(md, "DISOPT_VERSION", disopt_version());
    return md;
}

/* probability (NaN = nodata) -> output values */
static void convert_out(int mask, double thr, const float *p, size_t n, void *dst) {
    if (mask) {
        GByte *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = isnan(p[i]) ? 255 : (p[i] > thr ? 1 : 0);
    } else {
        float *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = isnan(p[i]) ? -1.0f : p[i];
    }
}

GDALColorTableH disopt_bld_color_table(void) {
    GDALColorTableH ct = GDALCreateColorTable(GPI_RGB);
    const GDALColorEntry bg = {0, 0, 0, 255}, bld = {255, 0, 0, 255}, none = {0, 0, 0, 0};
    GDALSetColorEntry(ct, 0, &bg);
    GDALSetColorEntry(ct, 1, &bld);
    for (int i = 2; i < 255; i++) GDALSetColorEntry(ct, i, &none);
    GDALSetColorEntry(ct, 255, &none);
    return ct;
}

/* ------------------------------------------------------------------ identify / open */

int disopt_bld_identify(const char *filename, const unsigned char *header, int nheader) {
    if (filename && STARTS_WITH_CI(filename, DISOPT_BLD_PREFIX)) return 1;
    if (!header || nheader < 20) return 0;
    char buf[1025];
    int n = nheader < 1024 ? nheader : 1024;
    memcpy(buf, header, (size_t)n);
    buf[n] = '\0';
    return buf[strspn(buf, " \t\r\n")] == '{' && strstr(buf, "\"" DISOPT_BLD_SIDECAR_TYPE "\"") != NULL;
}

struct disopt_bld {
    bld_opts o;
    bld_model m;
    GDALDatasetH src;
    disopt_tiler *tiler;
    char **md;
    float *blockbuf;
};

/* Reads a sidecar: {"type": "disopt.buildings", "source": "...", "options": {"MODEL": "...", ...}}.
 * Relative source and MODEL paths are relative to the sidecar. */
static int read_sidecar(const char *path, char **source, char ***options) {
    GByte *txt = NULL;
    if (!VSIIngestFile(NULL, path, &txt, NULL, 1 << 20)) {
        CPLError(CE_Failure, CPLE_OpenFailed, "BUILDINGS: cannot read %s", path);
        return 0;
    }
    json_object *root = json_tokener_parse((const char *)txt);
    VSIFree(txt);
    json_object *type = NULL, *src = NULL, *opts = NULL;
    if (!root || !json_object_object_get_ex(root, "type", &type) ||
        strcmp(json_object_get_string(type), DISOPT_BLD_SIDECAR_TYPE) != 0 ||
        !json_object_object_get_ex(root, "source", &src) || !json_object_is_type(src, json_type_string)) {
        CPLError(CE_Failure, CPLE_OpenFailed,
                 "BUILDINGS: %s is not a valid sidecar: expected JSON {\"type\": \"%s\", \"source\": \"...\", "
                 "\"options\": {...}}",
                 path, DISOPT_BLD_SIDECAR_TYPE);
        json_object_put(root);
        return 0;
    }
    const char *dir = CPLGetPath(path);
    char *dirc = CPLStrdup(dir);
    const char *s = json_object_get_string(src);
    *source = CPLStrdup(CPLIsFilenameRelative(s) && !STARTS_WITH(s, "/vsi") ? CPLFormFilename(dirc, s, NULL) : s);
    if (json_object_object_get_ex(root, "options", &opts) && json_object_is_type(opts, json_type_object)) {
        json_object_object_foreach(opts, key, val) {
            const char *v = json_object_get_string(val);
            if (EQUAL(key, "MODEL") && CPLIsFilenameRelative(v) && !STARTS_WITH(v, "/vsi"))
                v = CPLFormFilename(dirc, v, NULL);
            *options = CSLSetNameValue(*options, key, v);
        }
    }
    CPLFree(dirc);
    json_object_put(root);
    return 1;
}

disopt_bld *disopt_bld_open(const char *filename, CSLConstList open_options) {
    char *source = NULL;
    char **opts = NULL;
    if (STARTS_WITH_CI(filename, DISOPT_BLD_PREFIX)) {
        source = CPLStrdup(filename + strlen(DISOPT_BLD_PREFIX));
    } else if (!read_sidecar(filename, &source, &opts)) {
        return NULL;
    }
    for (CSLConstList p = open_options; p && *p; p++) { /* open options override the sidecar's */
        char *key = NULL;
        const char *val = CPLParseNameValue(*p, &key);
        if (key && val) opts = CSLSetNameValue(opts, key, val);
        CPLFree(key);
    }
    disopt_bld *b = CPLCalloc(1, sizeof *b);
    int ok = parse_opts((CSLConstList)opts, &b->o);
    CSLDestroy(opts);
    if (ok && !*source) {
        CPLError(CE_Failure, CPLE_OpenFailed, "BUILDINGS: no source raster named: use BUILDINGS:<raster>");
        ok = 0;
    }
    if (ok) {
        b->src = GDALOpenEx(source, GDAL_OF_RASTER | GDAL_OF_VERBOSE_ERROR, NULL, NULL, NULL);
        if (!b->src) {
            if (CPLGetLastErrorType() != CE_Failure)
                CPLError(CE_Failure, CPLE_OpenFailed, "BUILDINGS: cannot open the source raster %s", source);
            ok = 0;
        }
    }
    CPLFree(source);
    ok = ok && bld_model_load(&b->o, &b->m);
    if (ok && bld_tiler_create(&b->o, &b->m, b->src, &b->tiler) != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "BUILDINGS: %s", disopt_last_error());
        ok = 0;
    }
    if (ok) {
        if (b->o.block_size <= 0) b->o.block_size = disopt_tiler_step(b->tiler);
        b->md = bld_metadata(&b->o, &b->m);
        b->blockbuf = VSIMalloc3((size_t)b->o.block_size, (size_t)b->o.block_size, sizeof(float));
        if (!b->blockbuf) {
            CPLError(CE_Failure, CPLE_OutOfMemory, "BUILDINGS: no memory for a %d x %d block", b->o.block_size,
                     b->o.block_size);
            ok = 0;
        }
    }
    if (!ok) {
        disopt_bld_close(b);
        return NULL;
    }
    return b;
}

void disopt_bld_close(disopt_bld *b) {
    if (!b) return;
    disopt_tiler_destroy(b->tiler);
    bld_model_free(&b->m);
    if (b->src) GDALClose(b->src);
    CSLDestroy(b->md);
    VSIFree(b->blockbuf);
    CPLFree(b);
}

int disopt_bld_width(const disopt_bld *b) { return GDALGetRasterXSize(b->src); }
int disopt_bld_height(const disopt_bld *b) { return GDALGetRasterYSize(b->src); }
int disopt_bld_block_size(const disopt_bld *b) { return b->o.block_size; }
GDALDataType disopt_bld_data_type(const disopt_bld *b) { return b->o.mask ? GDT_Byte : GDT_Float32; }
double disopt_bld_nodata(const disopt_bld *b) { return b->o.mask ? 255.0 : -1.0; }
int disopt_bld_is_mask(const disopt_bld *b) { return b->o.mask; }
GDALDatasetH disopt_bld_source(const disopt_bld *b) { return b->src; }
CSLConstList disopt_bld_metadata(const disopt_bld *b) { return (CSLConstList)b->md; }
const char *disopt_bld_band_description(const disopt_bld *b) {
    return b->o.mask ? "building mask" : "building probability";
}

CPLErr disopt_bld_read_block(disopt_bld *b, int bx, int by, void *buf) {
    const int bs = b->o.block_size, W = disopt_bld_width(b), H = disopt_bld_height(b);
    const int x = bx * bs, y = by * bs;
    const int w = x + bs > W ? W - x : bs, h = y + bs > H ? H - y : bs;
    if (disopt_tiler_read(b->tiler, x, y, w, h, b->blockbuf) != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "BUILDINGS: %s", disopt_last_error());
        return CE_Failure;
    }
    /* rows of w values into a bs-wide block; the rest of an edge block is nodata */
    const size_t esz = b->o.mask ? 1 : 4;
    GByte *out = buf;
    if (w != bs || h != bs) {
        float nd = NAN;
        for (int i = 0; i < bs * bs; i++) convert_out(b->o.mask, b->o.threshold, &nd, 1, out + (size_t)i * esz);
    }
    for (int yy = 0; yy < h; yy++)
        convert_out(b->o.mask, b->o.threshold, b->blockbuf + (size_t)yy * w, (size_t)w, out + (size_t)yy * bs * esz);
    return CE_None;
}

/* ------------------------------------------------------------------ CreateCopy */

/* The sink hands every flush_bytes of written cells to GTiff (GDALFlushRasterCache: the dirty blocks go to
 * its compression threads, which work while the network goes on), so that the flush after the run only
 * has the last few blocks left; left to GDAL's block cache, up to GDAL_CACHEMAX of dirty blocks waited for
 * that final flush, with the GPU idle (0.18 s of a 5.7 s run at 16384^2, bench/RESULTS.md 4.7/4.8).
 * Configuration option DISOPT_FLUSH_MB (default 16; 0: GDAL's cache decides). */
typedef struct copy_sink {
    GDALRasterBandH band;
    int mask;
    double thr;
    void *buf;
    size_t pending, flush_bytes;
} copy_sink;

static int sink_write(void *user, int x, int y, int w, int h, const float *prob) {
    copy_sink *cs = user;
    convert_out(cs->mask, cs->thr, prob, (size_t)w * h, cs->buf);
    if (GDALRasterIO(cs->band, GF_Write, x, y, w, h, cs->buf, w, h, cs->mask ? GDT_Byte : GDT_Float32, 0, 0) !=
        CE_None)
        return 1;
    cs->pending += (size_t)w * h * (cs->mask ? 1 : 4);
    if (cs->flush_bytes && cs->pending >= cs->flush_bytes) {
        cs->pending = 0;
        return GDALFlushRasterCache(cs->band) != CE_None;
    }
    return 0;
}

GDALDatasetH disopt_bld_create_copy(const char *filename, GDALDatasetH src, int strict, CSLConstList options,
                                    GDALProgressFunc progress, void *progress_arg) {
    (void)strict;
    if (!progress) progress = GDALDummyProgress;
    bld_opts o;
    if (!parse_opts(options, &o)) return NULL;
    if (o.block_size) CPLError(CE_Warning, CPLE_NotSupported, "BUILDINGS: BLOCK_SIZE is an open option; use BLOCKXSIZE");
    const int W = GDALGetRasterXSize(src), H = GDALGetRasterYSize(src);
    if (W <= 0 || H <= 0 || GDALGetRasterCount(src) == 0) {
        CPLError(CE_Failure, CPLE_IllegalArg, "BUILDINGS: the source raster is empty (%d x %d, %d bands)", W, H,
                 GDALGetRasterCount(src));
        return NULL;
    }
    GDALDriverH gtiff = GDALGetDriverByName("GTiff");
    if (!gtiff) {
        CPLError(CE_Failure, CPLE_AppDefined, "BUILDINGS: the GTiff driver is not available");
        return NULL;
    }
    CPLDebug("BUILDINGS", "CreateCopy: %s, %d x %d, %d bands", filename, W, H, GDALGetRasterCount(src));
    bld_model m;
    if (!bld_model_load(&o, &m)) return NULL;
    const double t_out = bld_now();
    disopt_tiler *tiler = NULL;
    if (bld_tiler_create(&o, &m, src, &tiler) != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "BUILDINGS: %s", disopt_last_error());
        bld_model_free(&m);
        return NULL;
    }
    /* GTiff options: the caller's (minus ours), then our defaults where the caller gave none */
    const int step = disopt_tiler_step(tiler);
    char **co = NULL;
    for (CSLConstList p = options; p && *p; p++) {
        char *key = NULL;
        const char *val = CPLParseNameValue(*p, &key);
        if (key && val && CSLFindString((CSLConstList)bld_own_names, key) < 0) co = CSLSetNameValue(co, key, val);
        CPLFree(key);
    }
    if (!CSLFetchNameValue(co, "TILED")) co = CSLSetNameValue(co, "TILED", "YES");
    if (!CSLFetchNameValue(co, "COMPRESS")) {
        co = CSLSetNameValue(co, "COMPRESS", "DEFLATE");
        if (!o.mask && !CSLFetchNameValue(co, "PREDICTOR")) co = CSLSetNameValue(co, "PREDICTOR", "3");
    }
    if (CPLTestBool(CSLFetchNameValueDef(co, "TILED", "YES")) && !CSLFetchNameValue(co, "BLOCKXSIZE") &&
        !CSLFetchNameValue(co, "BLOCKYSIZE")) {
        const int bsz = step % 16 == 0 && step <= 1024 ? step : 256; /* one window = one output block */
        co = CSLSetNameValue(co, "BLOCKXSIZE", CPLSPrintf("%d", bsz));
        co = CSLSetNameValue(co, "BLOCKYSIZE", CPLSPrintf("%d", bsz));
    }
    if (!CSLFetchNameValue(co, "BIGTIFF")) co = CSLSetNameValue(co, "BIGTIFF", "IF_SAFER");
    /* GTiff's own compression threads (its NUM_THREADS creation option, which our NUM_THREADS
     * shadows): compressing the blocks must not hold up the network */
    if (!EQUAL(CSLFetchNameValueDef(co, "COMPRESS", "NONE"), "NONE")) co = CSLSetNameValue(co, "NUM_THREADS", "ALL_CPUS");

    disopt_status run_status = DISOPT_OK;
    GDALDatasetH dst = GDALCreate(gtiff, filename, W, H, 1, o.mask ? GDT_Byte : GDT_Float32, co);
    CSLDestroy(co);
    int ok = dst != NULL;
    if (ok) {
        double gt[6];
        if (GDALGetGeoTransform(src, gt) == CE_None) GDALSetGeoTransform(dst, gt);
        OGRSpatialReferenceH srs = GDALGetSpatialRef(src);
        if (srs) GDALSetSpatialRef(dst, srs);
        if (GDALGetGCPCount(src) > 0)
            GDALSetGCPs2(dst, GDALGetGCPCount(src), GDALGetGCPs(src), GDALGetGCPSpatialRef(src));
        char **md = bld_metadata(&o, &m);
        GDALSetMetadata(dst, md, NULL);
        CSLDestroy(md);
        GDALRasterBandH band = GDALGetRasterBand(dst, 1);
        GDALSetRasterNoDataValue(band, o.mask ? 255.0 : -1.0);
        GDALSetDescription(band, o.mask ? "building mask" : "building probability");
        if (o.mask) {
            GDALColorTableH ct = disopt_bld_color_table();
            GDALSetRasterColorTable(band, ct);
            GDALDestroyColorTable(ct);
        }
        CPLDebug("BUILDINGS", "CreateCopy: tiler and output created in %.2f s", bld_now() - t_out);
        const int flush_mb = atoi(CPLGetConfigOption("DISOPT_FLUSH_MB", "16"));
        copy_sink cs = {band, o.mask, o.threshold, VSIMalloc3((size_t)step, (size_t)step, sizeof(float)), 0,
                        flush_mb > 0 ? (size_t)flush_mb << 20 : 0};
        if (!cs.buf) {
            CPLError(CE_Failure, CPLE_OutOfMemory, "BUILDINGS: out of memory");
            ok = 0;
        } else {
            const double t0 = bld_now();
            run_status = disopt_tiler_run(tiler, sink_write, &cs, progress, progress_arg);
            CPLDebug("BUILDINGS", "CreateCopy: tiler run %.2f s", bld_now() - t0);
            if (run_status != DISOPT_OK) ok = 0;
        }
        VSIFree(cs.buf);
        if (ok) { /* GDALFlushCache returns nothing in 3.6: watch the error state around it */
            const CPLErr et = CPLGetLastErrorType();
            const CPLErrorNum en = CPLGetLastErrorNo();
            char *em = CPLStrdup(CPLGetLastErrorMsg());
            CPLErrorReset();
            const double t0 = bld_now();
            GDALFlushCache(dst);
            CPLDebug("BUILDINGS", "CreateCopy: flush %.2f s", bld_now() - t0);
            if (CPLGetLastErrorType() == CE_Failure) ok = 0;
            else CPLErrorSetState(et, en, em);
            CPLFree(em);
        }
    }
    char *msg = run_status != DISOPT_OK ? CPLStrdup(disopt_last_error()) : NULL;
    const double t_rel = bld_now();
    disopt_tiler_destroy(tiler);
    bld_model_free(&m);
    CPLDebug("BUILDINGS", "CreateCopy: tiler and engine released in %.2f s", bld_now() - t_rel);
    if (!ok) {
        if (dst) { /* no output is left behind */
            GDALClose(dst);
            CPLPushErrorHandler(CPLQuietErrorHandler);
            GDALDeleteDataset(gtiff, filename);
            VSIUnlink(filename); /* in case the delete did not recognise a half-written file */
            CPLPopErrorHandler();
        }
        /* reported last, so that it is the caller's last error */
        if (run_status == DISOPT_ERR_CANCELLED)
            CPLError(CE_Failure, CPLE_UserInterrupt, "BUILDINGS: interrupted by the user");
        else if (msg)
            CPLError(CE_Failure, CPLE_AppDefined, "BUILDINGS: %s", msg);
        CPLFree(msg);
        return NULL;
    }
    CPLFree(msg);
    return dst;
}
