/*
 * disopt_run - run a DisOptNet model over any GDAL-readable raster and write a georeferenced
 * building probability (Float32 0..1) or mask (Byte 0/1) raster.
 *
 * The interim "main job" until the BUILDINGS driver lands (it will replace this tool's tiler):
 * tiles of TILE x TILE output pixels are computed from windows grown by OVERLAP on each side
 * (zero padding beyond the raster, the SpaceNet 6 nodata value), and only the centre is kept.
 */
#include "disopt.h"
#include "disopt_io.h"

#include <gdal.h>
#include <cpl_conv.h>
#include <cpl_string.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr,
            "Usage: disopt_run -m MODEL [-b band]... [-tile N] [-overlap N] [-threads N] [-mask] [-threshold T]\n"
            "                  [-of FORMAT] [-co NAME=VALUE]... [-q] SRC DST\n"
            "  -m MODEL      model: .safetensors or a PyTorch checkpoint (.pth, .pth.tar; teacher or student)\n"
            "  -b band       source band for each model input, in order (default 1..C)\n"
            "  -tile N       output tile size, a multiple of 32 (default 512)\n"
            "  -overlap N    context added on each side, a multiple of 16 (default 64)\n"
            "  -threads N    CPU threads (default: all cores)\n"
            "  -mask         write Byte 0/1 (probability > threshold) instead of Float32 probability\n"
            "  -threshold T  default 0.5\n");
}

static int fail(const char *what) {
    fprintf(stderr, "disopt_run: %s: %s\n", what, disopt_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *src_path = NULL, *dst_path = NULL, *format = "GTiff";
    int bands[DISOPT_MAX_BANDS], nbands = 0, tile = 512, overlap = 64, threads = 0, mask = 0, quiet = 0;
    double threshold = 0.5;
    char **co = NULL;

    GDALAllRegister();
    argc = GDALGeneralCmdLineProcessor(argc, &argv, 0);
    if (argc < 1) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-m") && more) model_path = argv[++i];
        else if (!strcmp(a, "-b") && more && nbands < DISOPT_MAX_BANDS) bands[nbands++] = atoi(argv[++i]);
        else if (!strcmp(a, "-tile") && more) tile = atoi(argv[++i]);
        else if (!strcmp(a, "-overlap") && more) overlap = atoi(argv[++i]);
        else if (!strcmp(a, "-threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-threshold") && more) threshold = atof(argv[++i]);
        else if (!strcmp(a, "-of") && more) format = argv[++i];
        else if (!strcmp(a, "-co") && more) co = CSLAddString(co, argv[++i]);
        else if (!strcmp(a, "-mask")) mask = 1;
        else if (!strcmp(a, "-q")) quiet = 1;
        else if (a[0] == '-' && a[1]) {
            usage();
            return 1;
        } else if (!src_path) src_path = a;
        else if (!dst_path) dst_path = a;
        else {
            usage();
            return 1;
        }
    }
    if (!model_path || !src_path || !dst_path) {
        usage();
        return 1;
    }
    if (tile < 32 || tile % 32 || overlap < 0 || overlap % 16) {
        fprintf(stderr, "disopt_run: -tile must be a positive multiple of 32 and -overlap a multiple of 16\n");
        return 1;
    }

    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = threads;
    disopt_engine *engine;
    disopt_model *model;
    disopt_model_info info;
    if (disopt_engine_create(&eo, &engine) != DISOPT_OK) return fail("engine");
    if (disopt_model_load_any(engine, model_path, &model) != DISOPT_OK) return fail("model"); /* .safetensors or .pth */
    disopt_model_get_info(model, &info);
    const int C = info.config.in_channels;

    GDALDatasetH src = GDALOpen(src_path, GA_ReadOnly);
    if (!src) return 1; /* GDAL printed why */
    const int W = GDALGetRasterXSize(src), H = GDALGetRasterYSize(src);
    if (nbands == 0) {
        if (GDALGetRasterCount(src) < C) {
            fprintf(stderr, "disopt_run: %s has %d bands, the model %s takes %d (use -b)\n", src_path,
                    GDALGetRasterCount(src), info.name, C);
            return 1;
        }
        for (int i = 0; i < C; i++) bands[nbands++] = i + 1;
    }
    if (nbands != C) {
        fprintf(stderr, "disopt_run: %d -b bands given, the model takes %d\n", nbands, C);
        return 1;
    }
    for (int i = 0; i < C; i++)
        if (bands[i] < 1 || bands[i] > GDALGetRasterCount(src)) {
            fprintf(stderr, "disopt_run: band %d does not exist\n", bands[i]);
            return 1;
        }

    GDALDriverH drv = GDALGetDriverByName(format);
    if (!drv) {
        fprintf(stderr, "disopt_run: unknown format %s\n", format);
        return 1;
    }
    GDALDatasetH dst = GDALCreate(drv, dst_path, W, H, 1, mask ? GDT_Byte : GDT_Float32, co);
    if (!dst) return 1;
    double gt[6];
    if (GDALGetGeoTransform(src, gt) == CE_None) GDALSetGeoTransform(dst, gt);
    const char *wkt = GDALGetProjectionRef(src);
    if (wkt && *wkt) GDALSetProjection(dst, wkt);
    if (GDALGetGCPCount(src) > 0) GDALSetGCPs(dst, GDALGetGCPCount(src), GDALGetGCPs(src), GDALGetGCPProjection(src));
    GDALRasterBandH ob = GDALGetRasterBand(dst, 1);
    GDALSetRasterNoDataValue(ob, mask ? 255 : -1);
    GDALSetMetadataItem(dst, "DISOPT_MODEL", info.name, NULL);
    GDALSetMetadataItem(dst, "DISOPT_MODEL_FILE", CPLGetFilename(model_path), NULL);
    GDALSetMetadataItem(dst, "DISOPT_VERSION", disopt_version(), NULL);
    const char *prov = disopt_model_metadata(model, "provenance");
    if (prov) GDALSetMetadataItem(dst, "DISOPT_MODEL_PROVENANCE", prov, NULL);

    /* window = tile + 2 * overlap, rounded up so the network sees multiples of 32 */
    const int win = tile + 2 * overlap;
    float *x = malloc((size_t)C * win * win * sizeof(float));
    float *prob = malloc((size_t)win * win * sizeof(float));
    float *valid = malloc((size_t)win * win * sizeof(float));
    float *outbuf = malloc((size_t)tile * tile * sizeof(float));
    if (!x || !prob || !valid || !outbuf) {
        fprintf(stderr, "disopt_run: out of memory\n");
        return 1;
    }
    const int ntx = (W + tile - 1) / tile, nty = (H + tile - 1) / tile;
    int rc = 0;
    for (int ty = 0; ty < nty && !rc; ty++)
        for (int tx = 0; tx < ntx && !rc; tx++) {
            const int x0 = tx * tile - overlap, y0 = ty * tile - overlap;
            /* the part of the window inside the raster */
            const int rx0 = x0 < 0 ? 0 : x0, ry0 = y0 < 0 ? 0 : y0;
            const int rx1 = x0 + win > W ? W : x0 + win, ry1 = y0 + win > H ? H : y0 + win;
            const int rw = rx1 - rx0, rh = ry1 - ry0;
            for (int p = 0; p < win * win; p++) valid[p] = 1.0f;
            for (int c = 0; c < C && !rc; c++) {
                float *plane = x + (size_t)c * win * win;
                for (int p = 0; p < win * win; p++) plane[p] = 0.0f;
                GDALRasterBandH b = GDALGetRasterBand(src, bands[c]);
                int has_nd = 0;
                double nd = GDALGetRasterNoDataValue(b, &has_nd);
                /* read straight into the window at its offset */
                float *dstp = plane + (size_t)(ry0 - y0) * win + (rx0 - x0);
                if (GDALRasterIO(b, GF_Read, rx0, ry0, rw, rh, dstp, rw, rh, GDT_Float32, sizeof(float),
                                 (GSpacing)win * sizeof(float)) != CE_None) {
                    rc = 1;
                    break;
                }
                for (int yy = 0; yy < win; yy++)
                    for (int xx = 0; xx < win; xx++) {
                        float *v = &plane[(size_t)yy * win + xx];
                        int inside = yy >= ry0 - y0 && yy < ry1 - y0 && xx >= rx0 - x0 && xx < rx1 - x0;
                        if (!inside) continue;
                        if (isnan(*v) || (has_nd && *v == (float)nd)) {
                            *v = 0.0f; /* nodata is fed as 0 (SpaceNet 6's nodata) */
                            valid[(size_t)yy * win + xx] = 0.0f;
                        }
                    }
            }
            if (rc) break;
            if (disopt_model_normalize(model, x, 1, win, win) != DISOPT_OK) {
                rc = fail("normalize");
                break;
            }
            disopt_outputs out = {NULL, prob, NULL, NULL, NULL, 0};
            if (disopt_model_infer(model, x, 1, C, win, win, &out) != DISOPT_OK) {
                rc = fail("inference");
                break;
            }
            const int ox = tx * tile, oy = ty * tile;
            const int ow = ox + tile > W ? W - ox : tile, oh = oy + tile > H ? H - oy : tile;
            for (int yy = 0; yy < oh; yy++)
                for (int xx = 0; xx < ow; xx++) {
                    size_t wp = (size_t)(yy + overlap) * win + (xx + overlap);
                    float p = prob[wp];
                    float v = mask ? (float)(p > threshold) : p;
                    outbuf[(size_t)yy * ow + xx] = valid[wp] > 0 ? v : (mask ? 255.0f : -1.0f);
                }
            if (GDALRasterIO(ob, GF_Write, ox, oy, ow, oh, outbuf, ow, oh, GDT_Float32, 0, 0) != CE_None) rc = 1;
            if (!quiet) GDALTermProgress((double)(ty * ntx + tx + 1) / (ntx * nty), NULL, NULL);
        }
    free(x);
    free(prob);
    free(valid);
    free(outbuf);
    GDALClose(dst);
    GDALClose(src);
    disopt_model_destroy(model);
    disopt_engine_destroy(engine);
    CSLDestroy(co);
    CSLDestroy(argv);
    return rc;
}
