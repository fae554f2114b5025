/*
 * buildings.h - the C side of the BUILDINGS driver. The C++ shim (buildings_shim.cpp) holds only
 * what GDAL's classes force on us and calls these functions; options, identification, opening,
 * block computation and CreateCopy live in buildings.c. Failures are reported with CPLError.
 */
#ifndef DISOPT_BUILDINGS_H
#define DISOPT_BUILDINGS_H

#include <gdal.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DISOPT_BLD_PREFIX "BUILDINGS:"
/* a sidecar file (JSON) that names a source and options, with paths relative to itself */
#define DISOPT_BLD_SIDECAR_TYPE "disopt.buildings"

typedef struct disopt_bld disopt_bld; /* an opened lazy dataset */

/* Driver metadata: the option lists (XML). The creation list includes GTiff's pass-through options. */
const char *disopt_bld_open_option_list(void);
char *disopt_bld_creation_option_list(void); /* CPLFree() it */

/* 1 when the file is ours: a BUILDINGS: name or a sidecar (header bytes given). */
int disopt_bld_identify(const char *filename, const unsigned char *header, int nheader);

disopt_bld *disopt_bld_open(const char *filename, CSLConstList open_options);
void disopt_bld_close(disopt_bld *b);

int disopt_bld_width(const disopt_bld *b);
int disopt_bld_height(const disopt_bld *b);
int disopt_bld_block_size(const disopt_bld *b);
GDALDataType disopt_bld_data_type(const disopt_bld *b);
double disopt_bld_nodata(const disopt_bld *b);
int disopt_bld_is_mask(const disopt_bld *b);
GDALDatasetH disopt_bld_source(const disopt_bld *b);
/* metadata to put on the dataset (NAME=VALUE list owned by b) */
CSLConstList disopt_bld_metadata(const disopt_bld *b);
const char *disopt_bld_band_description(const disopt_bld *b);
/* The mask colour table (Byte output): 0 black, 1 red, nodata transparent. Caller destroys it. */
GDALColorTableH disopt_bld_color_table(void);

/* Fills block (bx, by) (block_size x block_size, edge blocks partially) in the output data type. */
CPLErr disopt_bld_read_block(disopt_bld *b, int bx, int by, void *buf);

GDALDatasetH disopt_bld_create_copy(const char *filename, GDALDatasetH src, int strict, CSLConstList options,
                                    GDALProgressFunc progress, void *progress_arg);

#ifdef __cplusplus
}
#endif
#endif
