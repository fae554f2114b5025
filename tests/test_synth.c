/* test_synth.c - the synthetic SpaceNet-6-like scene generator (core/raster/synth.c) and its tool:
 * formats (bands, types, CRS, geotransform, nodata), determinism by seed, SN6-like value ranges,
 * SAR physics seen through the labels (footprints rasterized with GDAL onto the SAR grid: buildings
 * brighter than open ground in co-pol, radar shadows behind them darker, cross-pol below co-pol),
 * the GeoJSON (OGR) and the CSV / orientation lists. */
#include "test_util.h"

#include "disopt_synth.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>
#include <gdal_alg.h>
#include <math.h>
#include <ogr_api.h>
#include <ogr_srs_api.h>
#include <sys/wait.h>

#ifndef NT
#define NT 4
#endif
#ifndef SZ
#define SZ 256
#endif

static char g_dir[3][256]; /* seed 7, seed 7 again, seed 8 */
static disopt_synth_tile_info g_info[3][NT];

static int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "# %s\n", cmd);
    return system(cmd);
}

static int setup(void **state) {
    (void)state;
    GDALAllRegister();
    const char *tmp = getenv("TMPDIR");
    uint64_t seeds[3] = {7, 7, 8};
    for (int k = 0; k < 3; k++) {
        snprintf(g_dir[k], sizeof g_dir[k], "%s/disopt_test_synth_%d_%d", tmp ? tmp : "/tmp", (int)getpid(), k);
        disopt_synth_options o;
        disopt_synth_options_init(&o);
        o.num_tiles = NT;
        o.size = SZ;
        o.seed = seeds[k];
        if (disopt_synth_generate(g_dir[k], &o, NULL, NULL, g_info[k]) != DISOPT_OK) {
            fprintf(stderr, "generate: %s\n", disopt_last_error());
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int k = 0; k < 3; k++) sh("rm -rf '%s'", g_dir[k]);
    return 0;
}

static void tile_path(char *buf, size_t len, int k, const char *sub, const char *kind, const char *name, const char *ext) {
    int n = snprintf(buf, len, "%s/%s/SN6synth_AOI_11_Rotterdam_%s_%s.%s", g_dir[k], sub, kind, name, ext);
    assert_true(n > 0 && (size_t)n < len);
}

static void check_grid(GDALDatasetH ds, int tile) {
    double gt[6];
    assert_int_equal(GDALGetGeoTransform(ds, gt), CE_None);
    double W = SZ * 0.5;
    assert_true(fabs(gt[0] - (594000 + (tile % 10) * W)) < 1e-6);
    assert_true(fabs(gt[3] - (5750000 - (tile / 10) * W)) < 1e-6);
    assert_true(gt[1] == 0.5 && gt[5] == -0.5 && gt[2] == 0 && gt[4] == 0);
    OGRSpatialReferenceH srs = OSRNewSpatialReference(NULL);
    assert_int_equal(OSRImportFromEPSG(srs, 32631), OGRERR_NONE);
    OGRSpatialReferenceH got = GDALGetSpatialRef(ds);
    assert_non_null(got);
    assert_true(OSRIsSame(srs, got));
    OSRDestroySpatialReference(srs);
}

static void test_formats(void **state) {
    (void)state;
    char p[2048];
    for (int t = 0; t < NT; t++) {
        const disopt_synth_tile_info *ti = &g_info[0][t];
        tile_path(p, sizeof p, 0, "SAR-Intensity", "SAR-Intensity", ti->name, "tif");
        GDALDatasetH ds = GDALOpen(p, GA_ReadOnly);
        assert_non_null(ds);
        assert_int_equal(GDALGetRasterCount(ds), 4);
        assert_int_equal(GDALGetRasterXSize(ds), SZ);
        assert_int_equal(GDALGetRasterYSize(ds), SZ);
        static const char *names[4] = {"HH", "HV", "VH", "VV"};
        for (int b = 1; b <= 4; b++) {
            GDALRasterBandH band = GDALGetRasterBand(ds, b);
            int has;
            assert_int_equal(GDALGetRasterDataType(band), GDT_Float32);
            assert_true(GDALGetRasterNoDataValue(band, &has) == 0.0 && has);
            assert_string_equal(GDALGetDescription(band), names[b - 1]);
        }
        check_grid(ds, t);
        const char *o = GDALGetMetadataItem(ds, "SYNTH_ORIENTATION", NULL);
        assert_non_null(o);
        assert_int_equal(atoi(o), ti->orientation);
        GDALClose(ds);
        tile_path(p, sizeof p, 0, "PS-RGB", "PS-RGB", ti->name, "tif");
        ds = GDALOpen(p, GA_ReadOnly);
        assert_non_null(ds);
        assert_int_equal(GDALGetRasterCount(ds), 3);
        for (int b = 1; b <= 3; b++) {
            int has;
            assert_int_equal(GDALGetRasterDataType(GDALGetRasterBand(ds, b)), GDT_Byte);
            assert_true(GDALGetRasterNoDataValue(GDALGetRasterBand(ds, b), &has) == 0.0 && has);
        }
        check_grid(ds, t);
        GDALClose(ds);
        /* footprints: polygons in EPSG:32631 within the tile, as many as reported */
        tile_path(p, sizeof p, 0, "geojson_buildings", "Buildings", ti->name, "geojson");
        GDALDatasetH v = GDALOpenEx(p, GDAL_OF_VECTOR, NULL, NULL, NULL);
        assert_non_null(v);
        OGRLayerH l = GDALDatasetGetLayer(v, 0);
        assert_non_null(l);
        assert_int_equal((int)OGR_L_GetFeatureCount(l, 1), ti->num_buildings);
        OGRSpatialReferenceH srs = OSRNewSpatialReference(NULL);
        assert_int_equal(OSRImportFromEPSG(srs, 32631), OGRERR_NONE);
        assert_non_null(OGR_L_GetSpatialRef(l));
        assert_true(OSRIsSame(srs, OGR_L_GetSpatialRef(l)));
        OSRDestroySpatialReference(srs);
        OGRFeatureH f;
        OGRGeometryH uni = NULL;
        double area_sum = 0;
        double x0 = 594000 + (t % 10) * SZ * 0.5, y1 = 5750000 - (t / 10) * SZ * 0.5;
        while ((f = OGR_L_GetNextFeature(l)) != NULL) {
            OGRGeometryH g = OGR_F_GetGeometryRef(f);
            assert_int_equal(wkbFlatten(OGR_G_GetGeometryType(g)), wkbPolygon);
            OGREnvelope e;
            OGR_G_GetEnvelope(g, &e);
            assert_true(e.MinX >= x0 - 1e-3 && e.MaxX <= x0 + SZ * 0.5 + 1e-3);
            assert_true(e.MinY >= y1 - SZ * 0.5 - 1e-3 && e.MaxY <= y1 + 1e-3);
            assert_true(OGR_G_Area(g) > 0);
            assert_true(OGR_F_GetFieldAsDouble(f, OGR_F_GetFieldIndex(f, "height_m")) >= 2.0);
            area_sum += OGR_G_Area(g);
            OGRGeometryH u2 = uni ? OGR_G_Union(uni, g) : OGR_G_Clone(g);
            if (uni) OGR_G_DestroyGeometry(uni);
            uni = u2;
            OGR_F_Destroy(f);
        }
        /* footprints do not overlap: the union's area is the sum of the areas */
        if (uni) {
            fprintf(stderr, "# tile %d: %d footprints, %.1f m2, union %.1f m2\n", t, ti->num_buildings, area_sum,
                    OGR_G_Area(uni));
            assert_true(fabs(OGR_G_Area(uni) - area_sum) < 1e-6 * area_sum + 0.01);
            OGR_G_DestroyGeometry(uni);
        }
        GDALClose(v);
    }
}

static int read_all(const char *path, GByte **buf, vsi_l_offset *len) {
    return VSIIngestFile(NULL, path, buf, len, 1 << 30);
}

static void test_determinism(void **state) {
    (void)state;
    static const char *sub[3][4] = {{"SAR-Intensity", "SAR-Intensity", "tif", ""},
                                     {"PS-RGB", "PS-RGB", "tif", ""},
                                     {"geojson_buildings", "Buildings", "geojson", ""}};
    char a[2048], b[2048];
    int differ[3] = {0, 0, 0};
    for (int t = 0; t < NT; t++) {
        assert_string_equal(g_info[0][t].name, g_info[1][t].name);
        for (int k = 0; k < 3; k++) {
            tile_path(a, sizeof a, 0, sub[k][0], sub[k][1], g_info[0][t].name, sub[k][2]);
            tile_path(b, sizeof b, 1, sub[k][0], sub[k][1], g_info[1][t].name, sub[k][2]);
            GByte *x, *y;
            vsi_l_offset nx, ny;
            assert_true(read_all(a, &x, &nx));
            assert_true(read_all(b, &y, &ny));
            assert_true(nx == ny && nx > 0);
            assert_memory_equal(x, y, (size_t)nx);
            VSIFree(y);
            /* another seed: other content (names may also differ) */
            tile_path(b, sizeof b, 2, sub[k][0], sub[k][1], g_info[2][t].name, sub[k][2]);
            assert_true(read_all(b, &y, &ny));
            if (nx != ny || memcmp(x, y, (size_t)nx) != 0) differ[k]++;
            VSIFree(x);
            VSIFree(y);
        }
    }
    for (int k = 0; k < 3; k++) assert_int_equal(differ[k], NT);
    for (int f = 0; f < 2; f++) {
        snprintf(a, sizeof a, "%s/%s", g_dir[0], f ? "tiles.csv" : "SAR_orientations.txt");
        snprintf(b, sizeof b, "%s/%s", g_dir[1], f ? "tiles.csv" : "SAR_orientations.txt");
        GByte *x, *y;
        vsi_l_offset nx, ny;
        assert_true(read_all(a, &x, &nx) && read_all(b, &y, &ny));
        assert_true(nx == ny);
        assert_memory_equal(x, y, (size_t)nx);
        VSIFree(x), VSIFree(y);
    }
}

/* translated copy of a polygon (map units) */
static OGRGeometryH translated(OGRGeometryH g, double dx, double dy) {
    OGRGeometryH c = OGR_G_Clone(g);
    for (int r = 0; r < OGR_G_GetGeometryCount(c); r++) {
        OGRGeometryH ring = OGR_G_GetGeometryRef(c, r);
        for (int i = 0; i < OGR_G_GetPointCount(ring); i++)
            OGR_G_SetPoint_2D(ring, i, OGR_G_GetX(ring, i) + dx, OGR_G_GetY(ring, i) + dy);
    }
    return c;
}

/* burns geometries (value 1) onto a fresh Byte MEM raster on the grid of ds */
static void burn(GDALDatasetH ref, OGRGeometryH *g, int n, unsigned char *out) {
    GDALDatasetH m = GDALCreate(GDALGetDriverByName("MEM"), "", SZ, SZ, 1, GDT_Byte, NULL);
    double gt[6];
    GDALGetGeoTransform(ref, gt);
    GDALSetGeoTransform(m, gt);
    int band = 1;
    double *v = malloc(sizeof(double) * (n ? n : 1));
    for (int i = 0; i < n; i++) v[i] = 1;
    if (n) assert_int_equal(GDALRasterizeGeometries(m, 1, &band, n, g, NULL, NULL, v, NULL, NULL, NULL), CE_None);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(m, 1), GF_Read, 0, 0, SZ, SZ, out, SZ, SZ, GDT_Byte, 0, 0), CE_None);
    free(v);
    GDALClose(m);
}

static void test_values_and_physics(void **state) {
    (void)state;
    char p[2048];
    double sum[4] = {0}, sum2[4] = {0};
    double n_valid = 0;
    double bld = 0, grd = 0, shd = 0, n_bld = 0, n_grd = 0, n_shd = 0;
    int south = 0;
    size_t N = (size_t)SZ * SZ;
    float *v = malloc(N * 4 * sizeof *v);
    unsigned char *F = malloc(N), *T = malloc(N), *R = malloc(N);
    for (int t = 0; t < NT; t++) {
        const disopt_synth_tile_info *ti = &g_info[0][t];
        south += ti->orientation;
        tile_path(p, sizeof p, 0, "SAR-Intensity", "SAR-Intensity", ti->name, "tif");
        GDALDatasetH ds = GDALOpen(p, GA_ReadOnly);
        assert_non_null(ds);
        assert_int_equal(GDALDatasetRasterIO(ds, GF_Read, 0, 0, SZ, SZ, v, SZ, SZ, GDT_Float32, 4, NULL, 0, 0, 0),
                         CE_None);
        for (size_t i = 0; i < N; i++) {
            int nod = v[i] == 0;
            for (int b = 0; b < 4; b++) {
                float x = v[b * N + i];
                assert_true(isfinite(x));
                assert_true((x == 0) == nod); /* nodata in every band or none */
                assert_true(x == 0 || (x >= (float)DISOPT_SYNTH_MIN_VALUE && x <= (float)DISOPT_SYNTH_MAX_VALUE));
                if (!nod) sum[b] += x, sum2[b] += (double)x * x;
            }
            n_valid += !nod;
        }
        /* labels onto the SAR grid; shadows: footprints moved away from the sensor by half their shadow
         * length, outside every footprint and every footprint's layover sweep (approximated by 9 steps) */
        tile_path(p, sizeof p, 0, "geojson_buildings", "Buildings", ti->name, "geojson");
        GDALDatasetH vec = GDALOpenEx(p, GDAL_OF_VECTOR, NULL, NULL, NULL);
        assert_non_null(vec);
        OGRLayerH l = GDALDatasetGetLayer(vec, 0);
        int nf = (int)OGR_L_GetFeatureCount(l, 1);
        OGRGeometryH *fp = calloc((size_t)nf + 1, sizeof *fp), *sh_ = calloc((size_t)nf + 1, sizeof *sh_);
        OGRGeometryH *lay = calloc((size_t)nf * 9 + 1, sizeof *lay);
        double inc = atof(GDALGetMetadataItem(ds, "SYNTH_INCIDENCE_DEG", NULL)) * 3.14159265358979 / 180;
        double toward = ti->orientation == 0 ? 1 : -1; /* map y of the sensor side */
        OGRFeatureH f;
        int k = 0;
        while ((f = OGR_L_GetNextFeature(l)) != NULL) {
            double h = OGR_F_GetFieldAsDouble(f, OGR_F_GetFieldIndex(f, "height_m"));
            OGRGeometryH g = OGR_F_GetGeometryRef(f);
            fp[k] = OGR_G_Clone(g);
            sh_[k] = translated(g, 0, -toward * h * tan(inc) * 0.5);
            for (int j = 0; j < 9; j++) lay[k * 9 + j] = translated(g, 0, toward * h / tan(inc) * j / 8.0);
            k++;
            OGR_F_Destroy(f);
        }
        assert_int_equal(k, nf);
        burn(ds, fp, nf, F);
        burn(ds, sh_, nf, T);
        burn(ds, lay, nf * 9, R);
        for (int i = 0; i < nf; i++) OGR_G_DestroyGeometry(fp[i]), OGR_G_DestroyGeometry(sh_[i]);
        for (int i = 0; i < nf * 9; i++) OGR_G_DestroyGeometry(lay[i]);
        free(fp), free(sh_), free(lay);
        GDALClose(vec);
        GDALClose(ds);
        double tb = 0, tg = 0, ts = 0, nb = 0, ng = 0, ns = 0;
        for (size_t i = 0; i < N; i++) {
            if (v[i] == 0) continue;
            double co = 0.5 * (v[i] + v[3 * N + i]);
            if (F[i]) tb += co, nb++;
            else if (T[i] && !R[i]) ts += co, ns++;
            else if (!T[i] && !R[i]) tg += co, ng++;
        }
        fprintf(stderr, "# tile %d (%s, incidence %.1f): co-pol mean buildings %.2f, ground %.2f, shadows %.2f\n", t,
                disopt_synth_scene_name(ti->scene), ti->incidence_deg, tb / nb, tg / ng, ts / ns);
        bld += tb, grd += tg, shd += ts, n_bld += nb, n_grd += ng, n_shd += ns;
    }
    double mean[4], sd[4];
    for (int b = 0; b < 4; b++) {
        mean[b] = sum[b] / n_valid;
        sd[b] = sqrt(sum2[b] / n_valid - mean[b] * mean[b]);
    }
    fprintf(stderr, "# band means %.2f %.2f %.2f %.2f, std %.2f %.2f %.2f %.2f over %.0f valid pixels\n", mean[0],
            mean[1], mean[2], mean[3], sd[0], sd[1], sd[2], sd[3], n_valid);
    fprintf(stderr, "# co-pol mean: buildings %.2f (%.0f px), open ground %.2f (%.0f px), shadows %.2f (%.0f px)\n",
            bld / n_bld, n_bld, grd / n_grd, n_grd, shd / n_shd, n_shd);
    assert_true(n_valid > 0.5 * NT * N);
    /* SpaceNet 6: per-band mean 22-31, std 12-14 over 4000 tiles; a few small tiles vary more */
    for (int b = 0; b < 4; b++) {
        assert_true(mean[b] > 15 && mean[b] < 35);
        assert_true(sd[b] > 6 && sd[b] < 18);
    }
    assert_true(mean[0] > 22 && mean[3] > 22);
    assert_true(mean[1] < mean[0] - 2.5 && mean[2] < mean[3] - 2.5); /* cross-pol several dB below co-pol */
    assert_true(fabs(mean[1] - mean[2]) < 0.3);                     /* HV ~= VH (reciprocity) */
    assert_true(n_bld > 500 && n_shd > 200 && n_grd > 1000);
    assert_true(bld / n_bld > grd / n_grd + 0.3);
    assert_true(shd / n_shd < grd / n_grd - 5.0);
    free(v), free(F), free(T), free(R);
}

static void test_speckle(void **state) {
    (void)state;
    char p[2048];
    tile_path(p, sizeof p, 0, "SAR-Intensity", "SAR-Intensity", g_info[0][0].name, "tif");
    disopt_sar_stats st;
    assert_int_equal(disopt_sar_stats_compute(p, 1, 1, &st), DISOPT_OK);
    GDALDatasetH ds = GDALOpen(p, GA_ReadOnly);
    int looks = atoi(GDALGetMetadataItem(ds, "SYNTH_LOOKS", NULL));
    GDALClose(ds);
    fprintf(stderr, "# %d looks: ENL in homogeneous areas %.2f, corr(HV, VH) %.3f, HH-HV %.2f dB\n", looks,
            st.enl_homog, st.corr_hv_vh, st.hh_minus_hv);
    assert_true(looks >= 2 && looks <= 4);
    /* the 5th percentile of 7x7-window CVs sits a little above the true ENL */
    assert_true(st.enl_homog > looks * 0.7 && st.enl_homog < looks * 3.0);
    assert_true(st.corr_hv_vh > 0.8);
    assert_true(st.hh_minus_hv > 2 && st.hh_minus_hv < 10);
}

static void test_lists(void **state) {
    (void)state;
    char p[2048];
    snprintf(p, sizeof p, "%s/tiles.csv", g_dir[0]);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[2048];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "sar,optical,label,split,orientation,scene,strip\n");
    int rows = 0, seen[NT] = {0};
    while (fgets(line, sizeof line, f)) {
        char **c = CSLTokenizeString2(line, ",\n", 0);
        assert_int_equal(CSLCount(c), 7);
        int t = -1;
        for (int i = 0; i < NT; i++)
            if (strstr(c[0], g_info[0][i].name) && strstr(c[0], ".tif") &&
                strlen(strstr(c[0], g_info[0][i].name)) == strlen(g_info[0][i].name) + 4)
                t = i;
        assert_true(t >= 0);
        seen[t]++;
        assert_true(EQUAL(c[3], "train") || EQUAL(c[3], "val") || EQUAL(c[3], "test"));
        assert_string_equal(c[3], disopt_synth_split_name(g_info[0][t].split));
        assert_int_equal(atoi(c[4]), g_info[0][t].orientation);
        for (int k = 0; k < 3; k++) {
            char q[2048];
            snprintf(q, sizeof q, "%s/%s", g_dir[0], c[k]);
            assert_int_equal(access(q, R_OK), 0);
        }
        CSLDestroy(c);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, NT);
    for (int i = 0; i < NT; i++) assert_int_equal(seen[i], 1);
    /* SAR_orientations.txt: "<strip> <0|1>", one line per strip, agreeing with the tiles */
    snprintf(p, sizeof p, "%s/SAR_orientations.txt", g_dir[0]);
    f = fopen(p, "r");
    assert_non_null(f);
    int strips = 0;
    while (fgets(line, sizeof line, f)) {
        char strip[64];
        int o;
        assert_int_equal(sscanf(line, "%63s %d", strip, &o), 2);
        assert_true(o == 0 || o == 1);
        for (int i = 0; i < NT; i++)
            if (strcmp(strip, g_info[0][i].strip) == 0) assert_int_equal(o, g_info[0][i].orientation);
        strips++;
    }
    fclose(f);
    assert_int_equal(strips, (NT + 1) / 2);
    /* both look directions occur within 4 tiles (strips alternate) */
    assert_int_not_equal(g_info[0][0].orientation, g_info[0][2].orientation);
    /* the split follows the fractions: 10 tiles at 0.6/0.2/0.2 */
    disopt_synth_options o;
    disopt_synth_options_init(&o);
    o.num_tiles = 10, o.size = 32, o.split[0] = 0.6, o.split[1] = 0.2, o.split[2] = 0.2;
    disopt_synth_tile_info ti[10];
    char d[400];
    snprintf(d, sizeof d, "%s_split", g_dir[0]);
    assert_int_equal(disopt_synth_generate(d, &o, NULL, NULL, ti), DISOPT_OK);
    int cnt[3] = {0, 0, 0};
    for (int i = 0; i < 10; i++) cnt[ti[i].split]++;
    assert_int_equal(cnt[0], 6);
    assert_int_equal(cnt[1], 2);
    assert_int_equal(cnt[2], 2);
    sh("rm -rf '%s'", d);
}

static void test_errors_and_tool(void **state) {
    (void)state;
    disopt_synth_options o;
    disopt_synth_options_init(&o);
    o.size = 8;
    assert_int_equal(disopt_synth_generate("/tmp/x", &o, NULL, NULL, NULL), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_synth_options_init(&o);
    o.split[0] = 0.9;
    assert_int_equal(disopt_synth_generate("/tmp/x", &o, NULL, NULL, NULL), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_synth_options_init(&o);
    o.num_tiles = 0;
    assert_int_equal(disopt_synth_generate("/tmp/x", &o, NULL, NULL, NULL), DISOPT_ERR_INVALID_ARGUMENT);
    disopt_synth_options_init(&o);
    o.num_tiles = 1, o.size = 32;
    assert_int_equal(disopt_synth_generate("/proc/disopt_no/such", &o, NULL, NULL, NULL), DISOPT_ERR_IO);
    assert_true(strlen(disopt_last_error()) > 0);
    /* the tool: GDAL-style exit codes */
    assert_int_equal(sh("%s --help > /dev/null", DISOPT_SYNTH_TOOL), 0);
    assert_int_equal(sh("%s --version | grep -q '^gdal_disopt_synth (gdal-disopt .*GDAL'", DISOPT_SYNTH_TOOL), 0);
    assert_int_equal(WEXITSTATUS(sh("%s --tiles x --out /tmp/y 2>/dev/null", DISOPT_SYNTH_TOOL)), 2);
    assert_int_equal(WEXITSTATUS(sh("%s --bogus 2>/dev/null", DISOPT_SYNTH_TOOL)), 2);
    assert_int_equal(WEXITSTATUS(sh("%s -q --tiles 0 --out /tmp/y 2>/dev/null", DISOPT_SYNTH_TOOL)), 2);
    assert_int_equal(WEXITSTATUS(sh("%s -q --out 2>/dev/null", DISOPT_SYNTH_TOOL)), 2);
    assert_int_equal(WEXITSTATUS(sh("%s -q --tiles 1 --size 32 --out /proc/disopt_no/such 2>/dev/null",
                                    DISOPT_SYNTH_TOOL)), 1);
    char d[400];
    snprintf(d, sizeof d, "%s_tool", g_dir[0]);
    assert_int_equal(sh("%s -q --tiles 2 --size 64 --seed 7 --split 0.5,0.5,0 --out %s", DISOPT_SYNTH_TOOL, d), 0);
    char q[2048];
    snprintf(q, sizeof q, "%s/tiles.csv", d);
    assert_int_equal(access(q, R_OK), 0);
    assert_int_equal(sh("%s --stats %s/SAR-Intensity/SN6synth_AOI_11_Rotterdam_SAR-Intensity_%s.tif --sn6 > /dev/null",
                        DISOPT_SYNTH_TOOL, d, g_info[0][0].name), 0);
    sh("rm -rf '%s'", d);
    /* a relative --out whose folders do not exist yet (GDAL 3.6's VSIMkdirRecursive failed on it) */
    assert_int_equal(sh("mkdir -p '%s' && cd '%s' && %s -q --tiles 1 --size 32 --out rel/nested", d, d, DISOPT_SYNTH_TOOL),
                     0);
    snprintf(q, sizeof q, "%s/rel/nested/tiles.csv", d);
    assert_int_equal(access(q, R_OK), 0);
    sh("rm -rf '%s'", d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats),     cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_values_and_physics), cmocka_unit_test(test_speckle),
        cmocka_unit_test(test_lists),       cmocka_unit_test(test_errors_and_tool),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
