/* tool_version.h - the --version of the gdal_disopt_* tools: the tool's name and gdal-disopt's version before
 * GDAL's (GDALGeneralCmdLineProcessor alone would print only GDAL's). Call first thing in main. */
#ifndef DISOPT_TOOL_VERSION_H
#define DISOPT_TOOL_VERSION_H

#include "disopt.h"

#include <cpl_string.h>
#include <gdal.h>
#include <stdio.h>

/* 1 if argv holds --version (and the line was printed): main then returns 0 */
static inline int disopt_tool_version(const char *tool, int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (EQUAL(argv[i], "--version")) {
            printf("%s (gdal-disopt %s), %s\n", tool, disopt_version(), GDALVersionInfo("--version"));
            return 1;
        }
    return 0;
}

#endif
