/* test_pixelfuncs.c - the plugin's VRT pixel functions (plugin/pixelfuncs.c), exercised the way
 * users meet them: derived-band VRTs (XML strings opened with GDALOpen) over /vsimem/ GTiff sources
 * holding fresh random data, plus the real Capella SLC chip. Every pixel is compared with a direct
 * double-precision computation of the documented formula. */
#include "test_util.h"

#include <math.h>

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>

#include "pixelfuncs.h"

#ifndef DISOPT_TESTDATA
#define DISOPT_TESTDATA "testdata"
#endif
#define CAPELLA_HH DISOPT_TESTDATA "/../../shared/realdata/rotterdam_capella/sar_hh.tif"

static tu_rng g_rng;

#define STT "<SourceTransferType>Float32</SourceTransferType>"
#define STT64 "<SourceTransferType>Float64</SourceTransferType>"

/* ---- helpers ---- */

/* a /vsimem/ GTiff with one band of type t holding vals (doubles, or re,im pairs for complex t) */
static void make_src(const char *path, int w, int h, GDALDataType t, const double *vals) {
    GDALDriverH drv = GDALGetDriverByName("GTiff");
    assert_non_null(drv);
    GDALDatasetH ds = GDALCreate(drv, path, w, h, 1, t, NULL);
    assert_non_null(ds);
    GDALDataType vt = GDALDataTypeIsComplex(t) ? GDT_CFloat64 : GDT_Float64;
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Write, 0, 0, w, h, (void *)vals, w, h, vt, 0, 0),
                     CE_None);
    GDALClose(ds);
}

/* Opens a derived-band VRT of size w x h: nsrc SimpleSources on band 1 of src, the pixel
 * function fn with the attribute list args (e.g. "threshold=\"0.3\""), band_extra inside the band
 * (NoDataValue, SourceTransferType). */
static GDALDatasetH open_vrt(const char *src, int nsrc, int w, int h, const char *band_type, const char *fn,
                             const char *args, const char *band_extra) {
    char xml[8192];
    int n = snprintf(xml, sizeof xml,
                     "<VRTDataset rasterXSize=\"%d\" rasterYSize=\"%d\">"
                     "<VRTRasterBand dataType=\"%s\" band=\"1\" subClass=\"VRTDerivedRasterBand\">%s"
                     "<PixelFunctionType>%s</PixelFunctionType>"
                     "<PixelFunctionArguments %s/>",
                     w, h, band_type, band_extra ? band_extra : "", fn, args ? args : "");
    for (int i = 0; i < nsrc; i++)
        n += snprintf(xml + n, sizeof xml - (size_t)n,
                      "<SimpleSource><SourceFilename relativeToVRT=\"0\">%s</SourceFilename>"
                      "<SourceBand>1</SourceBand></SimpleSource>",
                      src);
    snprintf(xml + n, sizeof xml - (size_t)n, "</VRTRasterBand></VRTDataset>");
    GDALDatasetH ds = GDALOpen(xml, GA_ReadOnly);
    assert_non_null(ds);
    return ds;
}

static CPLErr read_all(GDALDatasetH ds, int w, int h, double *out) {
    return GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, w, h, out, w, h, GDT_Float64, 0, 0);
}

static int same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

/* counts pixels where got != want (NaN == NaN), prints the first few */
static long count_diff(const char *what, const double *got, const double *want, long n) {
    long bad = 0;
    for (long i = 0; i < n; i++)
        if (!same(got[i], want[i])) {
            if (bad < 5)
                fprintf(stderr, "# %s: pixel %ld: got %.17g, want %.17g\n", what, i, got[i], want[i]);
            bad++;
        }
    if (bad)
        fprintf(stderr, "# %s: %ld of %ld pixels differ\n", what, bad, n);
    return bad;
}

/* The value a band of type t stores for the double v (GDAL rounds/clamps for integer types). */
static double as_type(double v, GDALDataType t) {
    double r;
    unsigned char tmp[16];
    GDALCopyWords(&v, GDT_Float64, 0, tmp, t, 0, 1);
    GDALCopyWords(tmp, t, 0, &r, GDT_Float64, 0, 1);
    return r;
}

static double mask_ref(double p, double thr, int has_nd_in, double nd_in, double nd_out) {
    if (isnan(p) || (has_nd_in && p == nd_in))
        return nd_out;
    return p > thr ? 1.0 : 0.0;
}

static double db_ref(double intensity, double floor_db) {
    if (isnan(intensity))
        return NAN;
    if (!(intensity > 0.0))
        return floor_db;
    double db = 10.0 * log10(intensity);
    return (!isnan(floor_db) && db < floor_db) ? floor_db : db;
}

static int setup(void **state) {
    (void)state;
    GDALAllRegister();
    assert_int_equal(disopt_register_pixel_functions(), 0);
    assert_int_equal(disopt_register_pixel_functions(), 0); /* idempotent */
    return 0;
}

/* ---- disopt_mask ---- */

/* random probabilities with NaN, the source nodata, values equal to the threshold and another
 * out-of-range value mixed in (quantised to float, as a Float32 source stores them) */
static void fill_probs(double *p, long n, double thr, double nd_in, double other) {
    for (long i = 0; i < n; i++) {
        uint64_t k = tu_next(&g_rng) % 20;
        if (k == 0)
            p[i] = NAN;
        else if (k == 1)
            p[i] = nd_in;
        else if (k == 2)
            p[i] = (float)thr;
        else if (k == 3)
            p[i] = other;
        else
            p[i] = (float)tu_uniform(&g_rng, -0.1f, 1.1f);
    }
}

static void test_mask_values(void **state) {
    (void)state;
    const int w = 67, h = 45;
    const long n = (long)w * h;
    double *p = malloc(sizeof(double) * (size_t)n), *got = malloc(sizeof(double) * (size_t)n),
           *want = malloc(sizeof(double) * (size_t)n);
    struct {
        const char *args, *extra, *band_type;
        double thr;
        int has_nd_in;
        double nd_in, nd_out;
    } cases[] = {
        /* defaults: threshold 0.5, NaN -> 255 */
        {"", STT, "Byte", 0.5, 0, 0, 255},
        {"threshold=\"0.3\" nodata_in=\"-9999\"", STT, "Byte", 0.3, 1, -9999, 255},
        {"threshold=\"0.7\" nodata_in=\"7\" nodata_out=\"7\"", STT "<NoDataValue>7</NoDataValue>", "Byte", 0.7, 1, 7,
         7},
        {"threshold=\"0.25\" nodata_in=\"-1\" nodata_out=\"0\"", "<NoDataValue>0</NoDataValue>" STT64, "Byte", 0.25, 1,
         -1, 0},
        {"threshold=\" 0.6 \" nodata_out=\"nan\"", STT, "Float32", 0.6, 0, 0, NAN},
        {"threshold=\"-0.05\" nodata_in=\"2\" nodata_out=\"-5\"", STT "<NoDataValue>-5</NoDataValue>", "Int16", -0.05,
         1, 2, -5},
    };
    long total = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fill_probs(p, n, cases[c].thr, cases[c].has_nd_in ? cases[c].nd_in : 0.5, 255.0);
        make_src("/vsimem/pf_mask.tif", w, h, GDT_Float32, p);
        GDALDatasetH ds =
            open_vrt("/vsimem/pf_mask.tif", 1, w, h, cases[c].band_type, "disopt_mask", cases[c].args, cases[c].extra);
        GDALDataType bt = GDALGetRasterDataType(GDALGetRasterBand(ds, 1));
        assert_int_equal(read_all(ds, w, h, got), CE_None);
        for (long i = 0; i < n; i++)
            want[i] = as_type(mask_ref(p[i], cases[c].thr, cases[c].has_nd_in, cases[c].nd_in, cases[c].nd_out), bt);
        char what[64];
        snprintf(what, sizeof what, "mask case %zu", c);
        assert_int_equal(count_diff(what, got, want, n), 0);
        /* read in the band's own type (what QGIS does): the same values */
        unsigned char *own = malloc((size_t)n * 8);
        const int sz = GDALGetDataTypeSizeBytes(bt);
        assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, w, h, own, w, h, bt, 0, 0), CE_None);
        GDALCopyWords(own, bt, sz, got, GDT_Float64, 8, (int)n);
        snprintf(what, sizeof what, "mask case %zu, %s read", c, GDALGetDataTypeName(bt));
        assert_int_equal(count_diff(what, got, want, n), 0);
        free(own);
        /* every class present */
        long ones = 0, zeros = 0, nds = 0;
        for (long i = 0; i < n; i++) {
            ones += got[i] == 1.0;
            zeros += got[i] == 0.0;
            nds += same(got[i], as_type(cases[c].nd_out, bt));
        }
        assert_true(ones > 100 && zeros > 100 && nds > 50);
        total += n;
        GDALClose(ds);
    }
    fprintf(stderr, "# disopt_mask: %ld pixels over %zu configurations, all equal\n", total,
            sizeof cases / sizeof cases[0]);
    VSIUnlink("/vsimem/pf_mask.tif");
    free(p);
    free(got);
    free(want);
}

/* eBufType, nPixelSpace, nLineSpace honoured; sub-windows and zoomed-out reads */
static void test_buffer_layout(void **state) {
    (void)state;
    const int w = 50, h = 40;
    const long n = (long)w * h;
    double *p = malloc(sizeof(double) * (size_t)n);
    fill_probs(p, n, 0.4, -9999, 0.75);
    make_src("/vsimem/pf_layout.tif", w, h, GDT_Float32, p);
    GDALDatasetH ds = open_vrt("/vsimem/pf_layout.tif", 1, w, h, "Float32", "disopt_mask",
                               "threshold=\"0.4\" nodata_in=\"-9999\"", STT);
    GDALRasterBandH b = GDALGetRasterBand(ds, 1);

    /* interleaved: float values every 12 bytes, lines padded by 20 bytes; the rest must stay 0xAB */
    const int ps = 12, ls = 12 * w + 20;
    unsigned char *buf = malloc((size_t)ls * (size_t)h);
    memset(buf, 0xAB, (size_t)ls * (size_t)h);
    assert_int_equal(GDALRasterIO(b, GF_Read, 0, 0, w, h, buf, w, h, GDT_Float32, ps, ls), CE_None);
    long bad = 0, touched = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float v;
            memcpy(&v, buf + (size_t)y * (size_t)ls + (size_t)x * (size_t)ps, sizeof v);
            double want = mask_ref(p[(long)y * w + x], 0.4, 1, -9999, 255);
            bad += !same(v, want);
        }
    for (size_t i = 0; i < (size_t)ls * (size_t)h; i++) {
        size_t y = i / (size_t)ls, o = i % (size_t)ls;
        if (y < (size_t)h && o < (size_t)ps * (size_t)w && o % (size_t)ps < 4)
            continue;
        touched += buf[i] != 0xAB;
    }
    assert_int_equal(bad, 0);
    assert_int_equal(touched, 0);

    /* Int16 buffer with pixel spacing 4 */
    short *sb = calloc((size_t)n * 2, sizeof(short));
    assert_int_equal(GDALRasterIO(b, GF_Read, 0, 0, w, h, sb, w, h, GDT_Int16, 4, 4 * w), CE_None);
    for (long i = 0; i < n; i++) {
        if (bad < 5 && (sb[2 * i] != (short)mask_ref(p[i], 0.4, 1, -9999, 255) || sb[2 * i + 1] != 0))
            fprintf(stderr, "# Int16 %ld: %d %d p=%g\n", i, sb[2 * i], sb[2 * i + 1], p[i]);
        bad += sb[2 * i] != (short)mask_ref(p[i], 0.4, 1, -9999, 255);
        bad += sb[2 * i + 1] != 0;
    }
    assert_int_equal(bad, 0);

    /* sub-window, and zoomed-out reads: the function sees what the source gives at that size */
    GDALDatasetH src = GDALOpen("/vsimem/pf_layout.tif", GA_ReadOnly);
    const int win[][6] = {
        {7, 3, 20, 11, 20, 11}, {0, 0, 50, 40, 25, 20}, {0, 0, 50, 40, 13, 7}, {5, 9, 40, 30, 17, 29}};
    for (size_t k = 0; k < sizeof win / sizeof win[0]; k++) {
        const int xo = win[k][0], yo = win[k][1], xs = win[k][2], ys = win[k][3], bx = win[k][4], by = win[k][5];
        double *sv = malloc(sizeof(double) * (size_t)(bx * by)), *gv = malloc(sizeof(double) * (size_t)(bx * by));
        assert_int_equal(
            GDALRasterIO(GDALGetRasterBand(src, 1), GF_Read, xo, yo, xs, ys, sv, bx, by, GDT_Float64, 0, 0), CE_None);
        assert_int_equal(GDALRasterIO(b, GF_Read, xo, yo, xs, ys, gv, bx, by, GDT_Float64, 0, 0), CE_None);
        for (int i = 0; i < bx * by; i++)
            sv[i] = mask_ref(sv[i], 0.4, 1, -9999, 255);
        assert_int_equal(count_diff("window", gv, sv, (long)bx * by), 0);
        free(sv);
        free(gv);
    }
    GDALClose(src);
    GDALClose(ds);
    VSIUnlink("/vsimem/pf_layout.tif");
    free(sb);
    free(buf);
    free(p);
}

/* reads that must fail cleanly (CE_Failure, a CPLError, no crash) */
static void expect_failure(const char *src, int nsrc, const char *band_type, const char *fn, const char *args,
                           const char *extra, const char *msg_part) {
    double v[16];
    GDALDatasetH ds = open_vrt(src, nsrc, 4, 4, band_type, fn, args, extra);
    CPLErrorReset();
    CPLPushErrorHandler(CPLQuietErrorHandler);
    CPLErr e = read_all(ds, 4, 4, v);
    CPLPopErrorHandler();
    if (e != CE_Failure)
        fprintf(stderr, "# expected failure: %s %s\n", fn, args);
    assert_int_equal(e, CE_Failure);
    const char *msg = CPLGetLastErrorMsg();
    if (msg_part && !strstr(msg, msg_part))
        fprintf(stderr, "# message '%s' lacks '%s'\n", msg, msg_part);
    assert_true(msg_part == NULL || strstr(msg, msg_part) != NULL);
    GDALClose(ds);
}

static void test_bad_arguments(void **state) {
    (void)state;
    double p[16], z[32];
    for (int i = 0; i < 16; i++)
        p[i] = 0.1 * i;
    for (int i = 0; i < 32; i++)
        z[i] = i - 7.0;
    make_src("/vsimem/pf_bad.tif", 4, 4, GDT_Float32, p);
    make_src("/vsimem/pf_bad_c.tif", 4, 4, GDT_CFloat32, z);
    const char *s = "/vsimem/pf_bad.tif", *c = "/vsimem/pf_bad_c.tif";
    const char *ct = "<SourceTransferType>CFloat32</SourceTransferType>";
    expect_failure(s, 1, "Byte", "disopt_mask", "threshold=\"abc\"", "", "threshold='abc' is not a number");
    expect_failure(s, 1, "Byte", "disopt_mask", "threshold=\"0.5x\"", "", "not a number");
    expect_failure(s, 1, "Byte", "disopt_mask", "threshold=\"\"", "", "not a number");
    expect_failure(s, 1, "Byte", "disopt_mask", "threshold=\"nan\"", "", "finite");
    expect_failure(s, 1, "Byte", "disopt_mask", "threshold=\"1e999\"", "", "not a number");
    expect_failure(s, 1, "Byte", "disopt_mask", "nodata_out=\"none\"", "", "nodata_out");
    expect_failure(s, 1, "Byte", "disopt_mask", "nodata_in=\"?\"", "", "nodata_in");
    expect_failure(s, 2, "Byte", "disopt_mask", "", "", "exactly one source");
    expect_failure(c, 1, "Byte", "disopt_mask", "", ct, "complex");
    expect_failure(s, 1, "Float32", "disopt_sar_db", "scale=\"abc\"", "", "scale='abc'");
    expect_failure(s, 1, "Float32", "disopt_sar_db", "scale=\"0\"", "", "positive");
    expect_failure(s, 1, "Float32", "disopt_sar_db", "scale=\"-2\"", "", "positive");
    expect_failure(s, 1, "Float32", "disopt_sar_db", "input=\"power\"", "", "input=intensity or input=amplitude");
    expect_failure(s, 1, "Float32", "disopt_sar_db", "floor_db=\"low\"", "", "floor_db");
    expect_failure(s, 1, "Float32", "disopt_sar_db", "floor_db=\"inf\"", "", "floor_db");
    expect_failure(c, 3, "Float32", "disopt_sar_db", "", ct, "exactly one source");

    /* without a SourceTransferType, GDAL 3.6 hands the sources over in each read's buffer type:
     * an integer read must fail loudly rather than threshold truncated probabilities */
    {
        double v[16];
        unsigned char m[16];
        GDALDatasetH ds = open_vrt(s, 1, 4, 4, "Byte", "disopt_mask", "", "");
        assert_int_equal(read_all(ds, 4, 4, v), CE_None); /* Float64 buffer: fine */
        CPLPushErrorHandler(CPLQuietErrorHandler);
        CPLErr e = GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, 4, 4, m, 4, 4, GDT_Byte, 0, 0);
        CPLPopErrorHandler();
        assert_int_equal(e, CE_Failure);
        assert_non_null(strstr(CPLGetLastErrorMsg(), "SourceTransferType"));
        GDALClose(ds);
        ds = open_vrt(s, 1, 4, 4, "Byte", "disopt_mask", "", "<SourceTransferType>Float32</SourceTransferType>");
        assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, 4, 4, m, 4, 4, GDT_Byte, 0, 0), CE_None);
        for (int i = 0; i < 16; i++)
            assert_int_equal(m[i], (float)p[i] > 0.5f ? 1 : 0);
        GDALClose(ds);
    }
    expect_failure(s, 1, "Float32", "disopt_sar_db", "", "<SourceTransferType>Int32</SourceTransferType>",
                   "arrived as Int32");

    /* an unknown argument works, with a warning naming it */
    double v[16];
    GDALDatasetH ds = open_vrt(s, 1, 4, 4, "Byte", "disopt_mask", "treshold=\"0.2\"", "");
    CPLErrorReset();
    CPLPushErrorHandler(CPLQuietErrorHandler);
    assert_int_equal(read_all(ds, 4, 4, v), CE_None);
    CPLPopErrorHandler();
    assert_non_null(strstr(CPLGetLastErrorMsg(), "treshold"));
    for (int i = 0; i < 16; i++)
        assert_true(v[i] == (p[i] > 0.5 ? 1.0 : 0.0) || (float)p[i] == 0.5f);
    GDALClose(ds);
    VSIUnlink(s);
    VSIUnlink(c);
}

/* The documented no-data chain: a ComplexSource's <NODATA> pixels and pixels outside the source
 * window reach the function as the band's <NoDataValue>; nodata_in = that value maps them to
 * nodata_out. */
static void test_nodata_chain(void **state) {
    (void)state;
    const int w = 30, h = 20;
    double p[600], got[40 * 20];
    for (int i = 0; i < w * h; i++)
        p[i] = (i % 7 == 0) ? -1.0 : (float)tu_uniform(&g_rng, 0.0f, 1.0f);
    make_src("/vsimem/pf_chain.tif", w, h, GDT_Float32, p);
    /* a 40x20 VRT: the source covers columns 0..29, columns 30..39 have no source */
    const char *xml = "<VRTDataset rasterXSize=\"40\" rasterYSize=\"20\">"
                      "<VRTRasterBand dataType=\"Byte\" band=\"1\" subClass=\"VRTDerivedRasterBand\">"
                      "<NoDataValue>255</NoDataValue><SourceTransferType>Float32</SourceTransferType>"
                      "<PixelFunctionType>disopt_mask</PixelFunctionType>"
                      "<PixelFunctionArguments threshold=\"0.5\" nodata_in=\"255\" nodata_out=\"255\"/>"
                      "<ComplexSource><SourceFilename relativeToVRT=\"0\">/vsimem/pf_chain.tif</SourceFilename>"
                      "<SourceBand>1</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"30\" ySize=\"20\"/>"
                      "<DstRect xOff=\"0\" yOff=\"0\" xSize=\"30\" ySize=\"20\"/><NODATA>-1</NODATA></ComplexSource>"
                      "</VRTRasterBand></VRTDataset>";
    GDALDatasetH ds = GDALOpen(xml, GA_ReadOnly);
    assert_non_null(ds);
    assert_int_equal(read_all(ds, 40, 20, got), CE_None);
    long bad = 0, nd = 0;
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 40; x++) {
            double want = x >= w ? 255.0 : p[y * w + x] == -1.0 ? 255.0 : (p[y * w + x] > 0.5 ? 1.0 : 0.0);
            bad += got[y * 40 + x] != want;
            nd += want == 255.0;
        }
    fprintf(stderr, "# no-data chain: %ld no-data pixels of 800, %ld differ\n", nd, bad);
    assert_int_equal(bad, 0);
    GDALClose(ds);
    VSIUnlink("/vsimem/pf_chain.tif");
}

/* ---- disopt_sar_db ---- */

static void test_db_helpers(void **state) {
    (void)state;
    assert_true(isnan(disopt_sar_db_from_intensity(0.0, NAN)));
    assert_true(isnan(disopt_sar_db_from_intensity(-1.0, NAN)));
    assert_true(isnan(disopt_sar_db_from_intensity(NAN, -30.0)));
    assert_true(disopt_sar_db_from_intensity(0.0, -30.0) == -30.0);
    assert_true(disopt_sar_db_from_intensity(1e-10, -30.0) == -30.0);
    assert_true(disopt_sar_db_from_intensity(100.0, NAN) == 20.0);
    assert_true(disopt_sar_db_from_intensity(100.0, -INFINITY) == 20.0);
    assert_true(disopt_sar_intensity_db(3.0, 4.0, 1.0) == 10.0 * log10(25.0));
    assert_true(disopt_sar_intensity_db(3.0, 4.0, 2.0) == 10.0 * log10(100.0));
    assert_true(disopt_sar_intensity_db(-5.0, 0.0, 2.0) == 20.0); /* amplitude 5 * 2 = 10 -> 20 dB */
    assert_true(isnan(disopt_sar_intensity_db(0.0, 0.0, 3.0)));
    assert_true(isnan(disopt_sar_intensity_db(NAN, 1.0, 1.0)));
}

static void test_db_real(void **state) {
    (void)state;
    const int w = 41, h = 37;
    const long n = (long)w * h;
    double *v = malloc(sizeof(double) * (size_t)n), *got = malloc(sizeof(double) * (size_t)n),
           *want = malloc(sizeof(double) * (size_t)n);
    struct {
        const char *args, *extra;
        int amplitude;
        double scale, floor_db;
        int has_nd;
        double nd;
    } cases[] = {
        {"", "", 0, 1.0, NAN, 0, 0},
        {"input=\"intensity\" scale=\"0.37\"", "", 0, 0.37, NAN, 0, 0},
        {"input=\"amplitude\" scale=\"2.5\" nodata_in=\"-9999\" nodata_out=\"-9999\"",
         "<NoDataValue>-9999</NoDataValue>", 1, 2.5, NAN, 1, -9999},
        {"input=\"AMPLITUDE\" floor_db=\"-12\"", "", 1, 1.0, -12, 0, 0},
        {"scale=\"0.0002777517937677223\" floor_db=\"-80\" nodata_in=\"-9999\" nodata_out=\"-9999\"",
         "<NoDataValue>-9999</NoDataValue>", 0, 0.0002777517937677223, -80, 1, -9999},
    };
    long total = 0, nonpos = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (long i = 0; i < n; i++) {
            uint64_t k = tu_next(&g_rng) % 25;
            v[i] = k == 0   ? NAN
                   : k == 1 ? 0.0
                   : k == 2 ? -9999.0
                   : k == 3 ? (float)tu_uniform(&g_rng, -3.0f, 0.0f)
                   : k == 4 ? (float)tu_uniform(&g_rng, 0.0f, 1e-3f)
                            : (float)(tu_uniform(&g_rng, 0.0f, 1.0f) * tu_uniform(&g_rng, 0.0f, 1.0f) * 5000.0f);
        }
        make_src("/vsimem/pf_db.tif", w, h, GDT_Float32, v);
        GDALDatasetH ds =
            open_vrt("/vsimem/pf_db.tif", 1, w, h, "Float32", "disopt_sar_db", cases[c].args, cases[c].extra);
        assert_int_equal(read_all(ds, w, h, got), CE_None);
        const double s2 = cases[c].scale * cases[c].scale;
        for (long i = 0; i < n; i++) {
            double x = v[i], r;
            if (isnan(x) || (cases[c].has_nd && x == cases[c].nd))
                r = cases[c].has_nd ? cases[c].nd : NAN;
            else
                r = db_ref(cases[c].amplitude ? s2 * (x * x) : s2 * x, cases[c].floor_db);
            want[i] = r; /* a Float64 read gets the function's doubles, unrounded */
            nonpos += !(x > 0);
        }
        char what[64];
        snprintf(what, sizeof what, "sar_db real case %zu", c);
        assert_int_equal(count_diff(what, got, want, n), 0);
        total += n;
        GDALClose(ds);
    }
    fprintf(stderr,
            "# disopt_sar_db real: %ld pixels (%ld NaN/zero/negative/nodata) over %zu configurations, all equal\n",
            total, nonpos, sizeof cases / sizeof cases[0]);
    VSIUnlink("/vsimem/pf_db.tif");
    free(v);
    free(got);
    free(want);
}

/* complex sources of every complex type; the function must see them as complex */
static void test_db_complex(void **state) {
    (void)state;
    const int w = 33, h = 29;
    const long n = (long)w * h;
    double *z = malloc(sizeof(double) * 2 * (size_t)n), *got = malloc(sizeof(double) * (size_t)n),
           *want = malloc(sizeof(double) * (size_t)n), *amp = malloc(sizeof(double) * (size_t)n);
    const GDALDataType types[] = {GDT_CFloat32, GDT_CFloat64, GDT_CInt16, GDT_CInt32};
    long total = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const int is_int = types[t] == GDT_CInt16 || types[t] == GDT_CInt32;
        for (long i = 0; i < n; i++) {
            uint64_t k = tu_next(&g_rng) % 20;
            double re = tu_uniform(&g_rng, -300.0f, 300.0f), im = tu_uniform(&g_rng, -300.0f, 300.0f);
            if (is_int) {
                re = round(re);
                im = round(im);
            } else if (types[t] == GDT_CFloat32) {
                re = (float)re;
                im = (float)im;
            }
            if (k == 0)
                re = im = 0.0; /* zero intensity */
            if (k == 1 && !is_int)
                im = NAN; /* NaN part */
            if (k == 2)
                re = -77.0, im = 0.0; /* the band nodata */
            if (k == 3)
                re = -77.0; /* not nodata: im != 0 */
            z[2 * i] = re;
            z[2 * i + 1] = im;
        }
        make_src("/vsimem/pf_cplx.tif", w, h, types[t], z);
        const char *tt = types[t] == GDT_CFloat32 ? "CFloat32" : "CFloat64";
        char extra[200], args[100];
        for (int variant = 0; variant < 2; variant++) {
            const double scale = variant ? 0.125 : 1.0;
            snprintf(extra, sizeof extra, "<SourceTransferType>%s</SourceTransferType>%s", tt,
                     variant ? "<NoDataValue>-77</NoDataValue>" : "");
            snprintf(args, sizeof args, "%s",
                     variant ? "scale=\"0.125\" input=\"amplitude\" nodata_in=\"-77\" nodata_out=\"-77\"" : "");
            GDALDatasetH ds =
                open_vrt("/vsimem/pf_cplx.tif", 1, w, h, variant ? "Float64" : "Float32", "disopt_sar_db", args, extra);
            assert_int_equal(read_all(ds, w, h, got), CE_None);
            for (long i = 0; i < n; i++) {
                double re = z[2 * i], im = z[2 * i + 1], r;
                if (types[t] == GDT_CFloat32 && strcmp(tt, "CFloat32") == 0)
                    re = (float)re, im = (float)im;
                if (isnan(re) || isnan(im) || (variant && re == -77.0 && im == 0.0))
                    r = variant ? -77.0 : NAN;
                else {
                    r = db_ref((scale * scale) * (re * re + im * im), NAN);
                    assert_true(same(r, disopt_sar_intensity_db(re, im, scale)));
                }
                want[i] = r;
            }
            char what[64];
            snprintf(what, sizeof what, "sar_db %s variant %d", GDALGetDataTypeName(types[t]), variant);
            assert_int_equal(count_diff(what, got, want, n), 0);
            total += n;
            GDALClose(ds);
        }
    }
    /* |z| as an amplitude band and |z|^2 as an intensity band give the same dB as z itself */
    for (long i = 0; i < n; i++) {
        double re = tu_uniform(&g_rng, -10.0f, 10.0f), im = tu_uniform(&g_rng, -10.0f, 10.0f);
        z[2 * i] = re;
        z[2 * i + 1] = im;
        amp[i] = sqrt(re * re + im * im);
    }
    make_src("/vsimem/pf_cplx.tif", w, h, GDT_CFloat64, z);
    make_src("/vsimem/pf_amp.tif", w, h, GDT_Float64, amp);
    GDALDatasetH dz = open_vrt("/vsimem/pf_cplx.tif", 1, w, h, "Float64", "disopt_sar_db", "scale=\"3\"",
                               "<SourceTransferType>CFloat64</SourceTransferType>");
    GDALDatasetH da =
        open_vrt("/vsimem/pf_amp.tif", 1, w, h, "Float64", "disopt_sar_db", "scale=\"3\" input=\"amplitude\"", "");
    assert_int_equal(read_all(dz, w, h, got), CE_None);
    assert_int_equal(read_all(da, w, h, want), CE_None);
    double maxdiff = 0;
    for (long i = 0; i < n; i++)
        maxdiff = fmax(maxdiff, fabs(got[i] - want[i]));
    fprintf(stderr, "# complex vs amplitude input, same scale: max |dB difference| %.3g\n", maxdiff);
    assert_true(maxdiff < 1e-12);
    GDALClose(dz);
    GDALClose(da);
    fprintf(stderr, "# disopt_sar_db complex: %ld pixels over 4 types x 2 configurations, all equal\n", total);
    VSIUnlink("/vsimem/pf_cplx.tif");
    VSIUnlink("/vsimem/pf_amp.tif");
    free(z);
    free(got);
    free(want);
    free(amp);
}

/* the real Capella SLC chip: CFloat32, calibration scale_factor in the TIFF image description */
static void test_db_capella(void **state) {
    (void)state;
    GDALDatasetH src = GDALOpen(CAPELLA_HH, GA_ReadOnly);
    if (src == NULL) {
        fprintf(stderr, "# %s not found: skipped\n", CAPELLA_HH);
        skip();
    }
    assert_int_equal(GDALGetRasterDataType(GDALGetRasterBand(src, 1)), GDT_CFloat32);
    const char *desc = GDALGetMetadataItem(src, "TIFFTAG_IMAGEDESCRIPTION", NULL);
    assert_non_null(desc);
    const char *sf = strstr(desc, "\"scale_factor\":");
    assert_non_null(sf);
    const double scale = strtod(sf + strlen("\"scale_factor\":"), NULL);
    assert_true(scale > 0 && scale < 1);
    const int w = GDALGetRasterXSize(src), h = GDALGetRasterYSize(src);
    const long n = (long)w * h;
    float *z = malloc(sizeof(float) * 2 * (size_t)n);
    double *got = malloc(sizeof(double) * (size_t)n), *want = malloc(sizeof(double) * (size_t)n);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(src, 1), GF_Read, 0, 0, w, h, z, w, h, GDT_CFloat32, 0, 0),
                     CE_None);
    char args[128];
    snprintf(args, sizeof args, "scale=\"%.17g\"", scale);
    GDALDatasetH ds = open_vrt(CAPELLA_HH, 1, w, h, "Float32", "disopt_sar_db", args,
                               "<SourceTransferType>CFloat32</SourceTransferType>");
    assert_int_equal(read_all(ds, w, h, got), CE_None);
    double lo = INFINITY, hi = -INFINITY;
    long nan_count = 0;
    for (long i = 0; i < n; i++) {
        const double re = z[2 * i], im = z[2 * i + 1];
        const double r = db_ref((scale * scale) * (re * re + im * im), NAN);
        assert_true(same(r, disopt_sar_intensity_db(re, im, scale)));
        want[i] = r;
        if (isnan(r))
            nan_count++;
        else
            lo = fmin(lo, r), hi = fmax(hi, r);
    }
    assert_int_equal(count_diff("capella hh", got, want, n), 0);
    /* a Float32 read (the band's type) gets the same values rounded to float */
    float *g32 = malloc(sizeof(float) * (size_t)n);
    assert_int_equal(GDALRasterIO(GDALGetRasterBand(ds, 1), GF_Read, 0, 0, w, h, g32, w, h, GDT_Float32, 0, 0),
                     CE_None);
    for (long i = 0; i < n; i++)
        got[i] = g32[i], want[i] = (float)want[i];
    assert_int_equal(count_diff("capella hh, Float32 read", got, want, n), 0);
    free(g32);
    fprintf(stderr, "# Capella HH %dx%d, scale_factor %.10g: all %ld pixels equal, dB %.2f..%.2f, %ld NaN\n", w, h,
            scale, n, lo, hi, nan_count);
    assert_true(hi > lo && nan_count < n / 100);
    GDALClose(ds);
    GDALClose(src);
    free(z);
    free(got);
    free(want);
}

int main(void) {
    g_rng = tu_rng_fresh();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask_values),  cmocka_unit_test(test_buffer_layout), cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_nodata_chain), cmocka_unit_test(test_db_helpers),    cmocka_unit_test(test_db_real),
        cmocka_unit_test(test_db_complex),   cmocka_unit_test(test_db_capella),
    };
    int r = cmocka_run_group_tests(tests, setup, NULL);
    GDALDestroyDriverManager();
    return r;
}
