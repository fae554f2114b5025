/* test_tools.c - the command-line tools end to end on real SAR (../shared/realdata, Capella
 * X-band quad-pol over Rotterdam, 4 x Float32 with NaN nodata): georeferencing kept, nodata
 * mapped, probabilities in [0, 1], masks consistent with probabilities, provenance recorded. */
#include "test_util.h"

#include <gdal.h>
#include <math.h>

#define SAR DISOPT_SHARED "/realdata/rotterdam_capella/sar_masked.tif"

static char g_model[256], g_prob[256], g_mask[256], g_prob2[256];

static int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "# %s\n", cmd);
    return system(cmd);
}

static float *read_band(GDALDatasetH ds, int b, int *w, int *h) {
    *w = GDALGetRasterXSize(ds);
    *h = GDALGetRasterYSize(ds);
    float *v = malloc((size_t)*w * *h * 4);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, b), GF_Read, 0, 0, *w, *h, v, *w, *h, GDT_Float32, 0, 0), CE_None);
    return v;
}

static void test_run_on_real_sar(void **s) {
    (void)s;
    assert_int_equal(sh("%s %s/golden/student_b3.safetensors %s", DISOPT_TESTMODEL, DISOPT_TESTDATA, g_model), 0);
    assert_int_equal(sh("%s -q -threads 2 -m %s %s %s", DISOPT_RUN, g_model, SAR, g_prob), 0);
    assert_int_equal(sh("%s -q -threads 1 -mask -threshold 0.5 -co COMPRESS=DEFLATE -m %s %s %s", DISOPT_RUN, g_model,
                        SAR, g_mask), 0);
    GDALAllRegister();
    GDALDatasetH src = GDALOpen(SAR, GA_ReadOnly), prob = GDALOpen(g_prob, GA_ReadOnly), mask = GDALOpen(g_mask, GA_ReadOnly);
    assert_non_null(src);
    assert_non_null(prob);
    assert_non_null(mask);
    double g1[6], g2[6];
    assert_int_equal(GDALGetGeoTransform(src, g1), CE_None);
    assert_int_equal(GDALGetGeoTransform(prob, g2), CE_None);
    assert_memory_equal(g1, g2, sizeof g1);
    assert_string_equal(GDALGetProjectionRef(src), GDALGetProjectionRef(prob));
    assert_int_equal(GDALGetRasterDataType(GDALGetRasterBand(prob, 1)), GDT_Float32);
    assert_int_equal(GDALGetRasterDataType(GDALGetRasterBand(mask, 1)), GDT_Byte);
    assert_string_equal(GDALGetMetadataItem(prob, "DISOPT_MODEL", NULL), "untrained-student-b3");
    assert_non_null(strstr(GDALGetMetadataItem(prob, "DISOPT_MODEL_PROVENANCE", NULL), "NOT TRAINED"));
    int w, h;
    float *hh = read_band(src, 1, &w, &h), *p = read_band(prob, 1, &w, &h), *m = read_band(mask, 1, &w, &h);
    int nodata = 0, valid = 0, agree = 0;
    for (int i = 0; i < w * h; i++) {
        if (isnan(hh[i])) {
            nodata++;
            assert_true(p[i] == -1.0f);
            assert_true(m[i] == 255.0f);
        } else {
            valid++;
            assert_true(p[i] >= 0.0f && p[i] <= 1.0f);
            assert_true(m[i] == 0.0f || m[i] == 1.0f);
            agree += (m[i] == 1.0f) == (p[i] > 0.5f);
        }
    }
    fprintf(stderr, "# %d valid, %d nodata pixels; mask (1 thread) agrees with probability (2 threads) on %d\n",
            valid, nodata, agree);
    assert_true(nodata > 0 && valid > 0);
    /* same tiling, different thread counts: the mask is exactly probability > threshold */
    assert_int_equal(agree, valid);
    free(hh); free(p); free(m);
    GDALClose(src); GDALClose(prob); GDALClose(mask);
    /* errors are reported, not crashed on */
    assert_int_not_equal(sh("%s -q -m %s -tile 100 %s %s 2>/dev/null", DISOPT_RUN, g_model, SAR, g_prob2), 0);
    /* a small tile (window 160 = 96 + 2 x 32) runs too */
    assert_int_equal(sh("%s -q -m %s -tile 96 -overlap 32 %s %s", DISOPT_RUN, g_model, SAR, g_prob2), 0);
    assert_int_not_equal(sh("%s -q -m /nonexistent.safetensors %s %s 2>/dev/null", DISOPT_RUN, SAR, g_prob2), 0);
    assert_int_not_equal(sh("%s -q -m %s -b 1 -b 2 %s %s 2>/dev/null", DISOPT_RUN, g_model, SAR, g_prob2), 0);
    remove(g_model); remove(g_prob); remove(g_mask); remove(g_prob2);
}

int main(void) {
    const char *t = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_model, sizeof g_model, "%s/disopt_tools_%d.safetensors", t, (int)getpid());
    snprintf(g_prob, sizeof g_prob, "%s/disopt_tools_prob_%d.tif", t, (int)getpid());
    snprintf(g_mask, sizeof g_mask, "%s/disopt_tools_mask_%d.tif", t, (int)getpid());
    snprintf(g_prob2, sizeof g_prob2, "%s/disopt_tools_bad_%d.tif", t, (int)getpid());
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_run_on_real_sar)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
