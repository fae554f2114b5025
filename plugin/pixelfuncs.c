/* pixelfuncs.c - VRT pixel functions of the BUILDINGS plugin; semantics in pixelfuncs.h.
 *
 * Every call converts one source line at a time to doubles (complex: re,im pairs) with
 * GDALCopyWords, computes a line of doubles and writes it with GDALCopyWords, which honours
 * eBufType, nPixelSpace and nLineSpace the way GDAL's own pixel functions do. No state outside a
 * call; the only memory is three line buffers per call. */
#include "pixelfuncs.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cpl_error.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal.h>

/* No builtin arguments: GDAL 3.6 has no optional builtins, and a declared builtin NoData makes
 * every band without a <NoDataValue> fail ("Raster has no NoData"). The functions read their
 * arguments themselves (defaults included). */
static const char disopt_mask_md[] =
    "<PixelFunctionArgumentsList>"
    "<Argument name='threshold' description='p > threshold gives 1, else 0' type='double' default='0.5' />"
    "<Argument name='nodata_in' description='Source value meaning no data (NaN always does)' type='double' />"
    "<Argument name='nodata_out' description='Output value for no data' type='double' default='255' />"
    "</PixelFunctionArgumentsList>";

static const char disopt_sar_db_md[] =
    "<PixelFunctionArgumentsList>"
    "<Argument name='scale' description='Amplitude calibration factor: I = (scale*|z|)^2' type='double' default='1' />"
    "<Argument name='input' description='How a real source is read' type='string-select' default='intensity'>"
    "<Value>intensity</Value><Value>amplitude</Value></Argument>"
    "<Argument name='floor_db' description='Lower bound of the output in dB, and the value for intensity &lt;= 0'"
    " type='double' default='nan' />"
    "<Argument name='nodata_in' description='Source value meaning no data (NaN always does)' type='double' />"
    "<Argument name='nodata_out' description='Output value for no data' type='double' default='nan' />"
    "</PixelFunctionArgumentsList>";

/* ---- arguments ---- */

/* Parses the whole string as a double (surrounding blanks allowed; "nan", "inf" accepted).
 * Returns 0, or -1 after a CPLError naming the function and argument. */
static int parse_double(const char *fn, const char *name, const char *s, double *out) {
    char *end = NULL;
    while (*s == ' ' || *s == '\t')
        s++;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s)
        goto bad;
    while (*end == ' ' || *end == '\t')
        end++;
    if (*end != '\0' || (errno == ERANGE && isinf(v)))
        goto bad;
    *out = v;
    return 0;
bad:
    CPLError(CE_Failure, CPLE_IllegalArg, "%s: argument %s='%s' is not a number", fn, name, s);
    return -1;
}

/* Optional double argument: 1 if present (value in *out), 0 if absent, -1 if malformed. */
static int arg_double(CSLConstList args, const char *fn, const char *name, double *out) {
    const char *s = CSLFetchNameValue(args, name);
    if (s == NULL)
        return 0;
    return parse_double(fn, name, s, out) == 0 ? 1 : -1;
}

/* Warns once per read about arguments the function does not know (a typo would otherwise silently
 * give the default). */
static void warn_unknown_args(CSLConstList args, const char *fn, const char *const *known) {
    for (int i = 0; args != NULL && args[i] != NULL; i++) {
        char *key = NULL;
        CPLParseNameValue(args[i], &key);
        if (key == NULL)
            continue;
        int ok = 0;
        for (int k = 0; known[k] != NULL && !ok; k++)
            ok = EQUAL(key, known[k]);
        if (!ok)
            CPLError(CE_Warning, CPLE_IllegalArg, "%s: unknown argument '%s' ignored", fn, key);
        CPLFree(key);
    }
}

/* ---- shared per-call plumbing ---- */

typedef struct {
    double *in;  /* one source line: nx values, or nx (re,im) pairs */
    double *out; /* one output line */
    int complex_src;
} line_bufs;

static int line_bufs_init(line_bufs *b, const char *fn, int nx, GDALDataType src_type) {
    b->complex_src = GDALDataTypeIsComplex(src_type);
    b->in = VSIMalloc2((size_t)nx, sizeof(double) * (b->complex_src ? 2 : 1));
    b->out = VSIMalloc2((size_t)nx, sizeof(double));
    if (b->in == NULL || b->out == NULL) {
        VSIFree(b->in);
        VSIFree(b->out);
        CPLError(CE_Failure, CPLE_OutOfMemory, "%s: out of memory for a line of %d pixels", fn, nx);
        return -1;
    }
    return 0;
}

static void line_bufs_free(line_bufs *b) {
    VSIFree(b->in);
    VSIFree(b->out);
}

static int check_call(const char *fn, int nsrc, GDALDataType src_type, int nx, int ny) {
    if (nsrc != 1) {
        CPLError(CE_Failure, CPLE_AppDefined, "%s: needs exactly one source, got %d", fn, nsrc);
        return -1;
    }
    if (GDALGetDataTypeSizeBytes(src_type) <= 0 || nx < 0 || ny < 0) {
        CPLError(CE_Failure, CPLE_AppDefined, "%s: unsupported source type or buffer size", fn);
        return -1;
    }
    if (!GDALDataTypeIsFloating(src_type) && !GDALDataTypeIsComplex(src_type)) {
        /* GDAL 3.6 converts the sources to the caller's buffer type when the band has no
         * SourceTransferType: a Byte read would see probabilities truncated to 0/1 */
        CPLError(CE_Failure, CPLE_AppDefined,
                 "%s: the source values arrived as %s; give the VRT band "
                 "<SourceTransferType>Float32</SourceTransferType> (CFloat32 for complex sources), or GDAL "
                 "converts them to the type of each read's buffer",
                 fn, GDALGetDataTypeName(src_type));
        return -1;
    }
    return 0;
}

/* source line iy -> b->in (doubles, or re,im pairs) */
static void read_line(const line_bufs *b, void *src, GDALDataType src_type, int nx, int iy) {
    const int sz = GDALGetDataTypeSizeBytes(src_type);
    const GByte *p = (const GByte *)src + (size_t)iy * (size_t)nx * (size_t)sz;
    if (b->complex_src)
        GDALCopyWords((void *)p, src_type, sz, b->in, GDT_CFloat64, 2 * (int)sizeof(double), nx);
    else
        GDALCopyWords((void *)p, src_type, sz, b->in, GDT_Float64, (int)sizeof(double), nx);
}

static void write_line(const line_bufs *b, void *data, GDALDataType buf_type, int nx, int iy, int pixel_space,
                       int line_space) {
    GByte *p = (GByte *)data + (size_t)iy * (size_t)line_space;
    GDALCopyWords(b->out, GDT_Float64, (int)sizeof(double), p, buf_type, pixel_space, nx);
}

/* ---- disopt_mask ---- */

static CPLErr disopt_mask_fn(void **sources, int nsrc, void *data, int nx, int ny, GDALDataType src_type,
                             GDALDataType buf_type, int pixel_space, int line_space, CSLConstList args) {
    static const char fn[] = "disopt_mask";
    static const char *const known[] = {"threshold", "nodata_in", "nodata_out", NULL};
    double threshold = 0.5, nd_in = 0.0, nd_out = 255.0;
    int has_nd_in, r;

    if (check_call(fn, nsrc, src_type, nx, ny))
        return CE_Failure;
    if (GDALDataTypeIsComplex(src_type)) {
        CPLError(CE_Failure, CPLE_AppDefined, "%s: the source is complex (%s); it needs a real probability band", fn,
                 GDALGetDataTypeName(src_type));
        return CE_Failure;
    }
    if ((r = arg_double(args, fn, "threshold", &threshold)) < 0)
        return CE_Failure;
    if (r == 1 && !isfinite(threshold)) {
        CPLError(CE_Failure, CPLE_IllegalArg, "%s: threshold must be finite", fn);
        return CE_Failure;
    }
    if ((has_nd_in = arg_double(args, fn, "nodata_in", &nd_in)) < 0)
        return CE_Failure;
    if (arg_double(args, fn, "nodata_out", &nd_out) < 0)
        return CE_Failure;
    warn_unknown_args(args, fn, known);

    line_bufs b;
    if (line_bufs_init(&b, fn, nx, src_type))
        return CE_Failure;
    for (int iy = 0; iy < ny; iy++) {
        read_line(&b, sources[0], src_type, nx, iy);
        for (int ix = 0; ix < nx; ix++) {
            const double p = b.in[ix];
            if (isnan(p) || (has_nd_in && p == nd_in))
                b.out[ix] = nd_out;
            else
                b.out[ix] = p > threshold ? 1.0 : 0.0;
        }
        write_line(&b, data, buf_type, nx, iy, pixel_space, line_space);
    }
    line_bufs_free(&b);
    return CE_None;
}

/* ---- disopt_sar_db ---- */

double disopt_sar_db_from_intensity(double intensity, double floor_db) {
    if (isnan(intensity))
        return intensity;
    if (!(intensity > 0.0))
        return floor_db;
    const double db = 10.0 * log10(intensity);
    return db < floor_db ? floor_db : db; /* false for a NaN floor */
}

double disopt_sar_intensity_db(double re, double im, double scale) {
    return disopt_sar_db_from_intensity((scale * scale) * (re * re + im * im), NAN);
}

static CPLErr disopt_sar_db_fn(void **sources, int nsrc, void *data, int nx, int ny, GDALDataType src_type,
                               GDALDataType buf_type, int pixel_space, int line_space, CSLConstList args) {
    static const char fn[] = "disopt_sar_db";
    static const char *const known[] = {"scale", "input", "floor_db", "nodata_in", "nodata_out", NULL};
    double scale = 1.0, floor_db = NAN, nd_in = 0.0, nd_out = NAN;
    int amplitude = 0, has_nd_in, r;

    if (check_call(fn, nsrc, src_type, nx, ny))
        return CE_Failure;
    if ((r = arg_double(args, fn, "scale", &scale)) < 0)
        return CE_Failure;
    if (r == 1 && !(isfinite(scale) && scale > 0.0)) {
        CPLError(CE_Failure, CPLE_IllegalArg, "%s: scale must be a finite positive number", fn);
        return CE_Failure;
    }
    if ((r = arg_double(args, fn, "floor_db", &floor_db)) < 0)
        return CE_Failure;
    if (r == 1 && isinf(floor_db) && floor_db > 0) {
        CPLError(CE_Failure, CPLE_IllegalArg, "%s: floor_db must not be +inf", fn);
        return CE_Failure;
    }
    const char *input = CSLFetchNameValue(args, "input");
    if (input != NULL) {
        if (EQUAL(input, "amplitude"))
            amplitude = 1;
        else if (!EQUAL(input, "intensity")) {
            CPLError(CE_Failure, CPLE_IllegalArg, "%s: input='%s': use input=intensity or input=amplitude", fn, input);
            return CE_Failure;
        }
    }
    if ((has_nd_in = arg_double(args, fn, "nodata_in", &nd_in)) < 0)
        return CE_Failure;
    if (arg_double(args, fn, "nodata_out", &nd_out) < 0)
        return CE_Failure;
    warn_unknown_args(args, fn, known);
    const double s2 = scale * scale;

    line_bufs b;
    if (line_bufs_init(&b, fn, nx, src_type))
        return CE_Failure;
    for (int iy = 0; iy < ny; iy++) {
        read_line(&b, sources[0], src_type, nx, iy);
        if (b.complex_src) {
            for (int ix = 0; ix < nx; ix++) {
                const double re = b.in[2 * ix], im = b.in[2 * ix + 1];
                if (isnan(re) || isnan(im) || (has_nd_in && re == nd_in && im == 0.0))
                    b.out[ix] = nd_out;
                else
                    b.out[ix] = disopt_sar_db_from_intensity(s2 * (re * re + im * im), floor_db);
            }
        } else {
            for (int ix = 0; ix < nx; ix++) {
                const double v = b.in[ix];
                if (isnan(v) || (has_nd_in && v == nd_in))
                    b.out[ix] = nd_out;
                else
                    b.out[ix] = disopt_sar_db_from_intensity(amplitude ? s2 * (v * v) : s2 * v, floor_db);
            }
        }
        write_line(&b, data, buf_type, nx, iy, pixel_space, line_space);
    }
    line_bufs_free(&b);
    return CE_None;
}

/* ---- registration ---- */

int disopt_register_pixel_functions(void) {
    if (GDALAddDerivedBandPixelFuncWithArgs("disopt_mask", disopt_mask_fn, disopt_mask_md) != CE_None)
        return -1;
    if (GDALAddDerivedBandPixelFuncWithArgs("disopt_sar_db", disopt_sar_db_fn, disopt_sar_db_md) != CE_None)
        return -1;
    return 0;
}
