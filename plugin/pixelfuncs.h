/* pixelfuncs.h - VRT pixel functions of the BUILDINGS plugin (pure C, GDAL >= 3.6).
 *
 * Pixel functions are for pixel-local steps only. The network itself is not one: on GDAL 3.6 a
 * pixel function receives only its source buffers, already resampled to the request's buffer size,
 * with no window offset and no geotransform (those builtin arguments arrive in GDAL 3.12), so a
 * convolutional network cannot see its neighbourhood and would give a different (wrong) picture at
 * every block edge and zoom level. The network runs as the BUILDINGS driver's source instead.
 *
 * Functions (used in a VRT as <VRTRasterBand subClass="VRTDerivedRasterBand"> with
 * <PixelFunctionType>NAME</PixelFunctionType> and <PixelFunctionArguments name="value" .../>):
 *
 * disopt_mask      one real source: probability -> mask.
 *     threshold   (default 0.5)  p > threshold -> 1, else 0 (p == threshold -> 0).
 *     nodata_in   (optional)     a source value that means "no data" (NaN always does).
 *     nodata_out  (default 255)  the value written for no data.
 *
 * disopt_sar_db    one source: SAR -> dB, 10*log10(I) of the calibrated intensity I.
 *     scale       (default 1)    an AMPLITUDE calibration factor (Capella's scale_factor), the same
 *                                for every input kind, so that z, |z| and |z|^2 give the same dB:
 *                   complex z (CInt16, CInt32, CFloat32, CFloat64):  I = scale^2 * (re^2 + im^2)
 *                   real, input=amplitude:                          I = scale^2 * v^2
 *                   real, input=intensity (the default):            I = scale^2 * v
 *     input       intensity|amplitude (default intensity): how a real source is read; ignored
 *                 for complex sources.
 *     floor_db    (default NaN = none) non-positive intensity gives floor_db, and dB values
 *                 below floor_db are raised to it. Without it non-positive intensity gives NaN.
 *     nodata_in   (optional)     a source value meaning no data (NaN in either part always does);
 *                                for a complex source, nodata_in + 0i.
 *     nodata_out  (default NaN)  the value written for no data.
 *
 * Always give the band a <SourceTransferType>: Float32 or Float64, CFloat32 or CFloat64 for complex
 * sources. Without it GDAL 3.6 converts the sources to the buffer type of each read: a Byte read of
 * a mask band would see probabilities truncated to 0 or 1, and a Float32 read of a dB band the real
 * part of a complex source only. Both functions therefore refuse integer source buffers (CE_Failure
 * with a message saying this); a complex source read as real cannot be detected.
 *
 * No data: GDAL 3.6 fills a derived band's source buffers with the band's <NoDataValue> where a
 * source has none (outside its window, or its <NODATA> in a ComplexSource), but it cannot tell the
 * function that value unless the function demands it (a builtin argument, which 3.6 cannot make
 * optional: every band without <NoDataValue> would then fail with "Raster has no NoData"). So the
 * functions take it as arguments: set nodata_in to what the sources hold for no data, nodata_out
 * to the band's <NoDataValue>.
 *
 * Bad arguments (not a number, unknown keyword, wrong source count or type) give a CPLError and
 * CE_Failure from the read; nothing aborts.
 */
#ifndef DISOPT_PIXELFUNCS_H
#define DISOPT_PIXELFUNCS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Registers disopt_mask and disopt_sar_db with GDAL (GDALAddDerivedBandPixelFuncWithArgs).
 * Safe to call any number of times (registering a name again replaces it with the same function).
 * Returns 0 on success, -1 if GDAL refused a registration (a CPLError says why). */
int disopt_register_pixel_functions(void);

/* dB of a calibrated SAR intensity I (linear): 10*log10(I); I <= 0 gives floor_db (pass NaN for
 * "no floor": NaN), a result below a finite floor_db gives floor_db; NaN in gives NaN. */
double disopt_sar_db_from_intensity(double intensity, double floor_db);

/* dB of a complex sample (re, im) with an amplitude calibration factor scale:
 * 10*log10(scale^2 * (re^2 + im^2)), non-positive intensity -> NaN. Exactly what disopt_sar_db
 * computes for complex sources (with no floor), for drivers that convert complex bands
 * themselves. An amplitude sample a is (a, 0). */
double disopt_sar_intensity_db(double re, double im, double scale);

#ifdef __cplusplus
}
#endif

#endif
