/*
 * gdal_disopt_train - train DisOptNet from GDAL rasters: stage 1 (--stage optical, the teacher) and stage 2
 * (--stage distill --teacher T, the student). A thin main over disopt_train_run (include/disopt_train.h).
 * Exit codes: 0 success, 1 failure, 2 usage.
 */
#include "disopt.h"
#include "disopt_train.h"
#include "tool_version.h"

#include <cpl_conv.h>
#include <cpl_error.h>
#include <cpl_string.h>
#include <gdal.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "Usage: gdal_disopt_train [--help] [--help-general] [--version] [-q]\n"
            "         --stage optical|distill [--teacher T.safetensors] [--val LIST] [--init FILE] [--resume CKPT]\n"
            "         [--arch b0..b7] [--epochs N] [--batch N] [--crop N] [--lr X] [--optimizer sgd|adamw]\n"
            "         [--weight-decay X] [--momentum X] [--threads N] [--loader-threads N] [--seed N]\n"
            "         [--precision fp32|fp64|tf32|bf16] [--device cpu|cuda[:N[,N...]]] [--steps-per-epoch N] [--no-dropout]\n"
            "         [--no-drop-connect] [--rotate180 column|yes|no] [--sar-bands B,B,B,B] [--optical-bands B,B,B,B]\n"
            "         [--complex error|db|intensity|amplitude] [--min-area M2] [--log LOG.csv]\n"
            "         LIST.csv OUTPUT.safetensors\n"
            "\n"
            "LIST.csv: a header line naming the columns sar,optical,label (optional: split = train|val, rotate180 =\n"
            "  0|1), one sample per line; relative paths are relative to the list. Labels: a raster mask (nonzero =\n"
            "  building) or polygons in any OGR format (burnt on the SAR grid, pixel centres; <= --min-area m^2\n"
            "  dropped). Optical rasters off the SAR grid are warped onto it (bilinear).\n"
            "Defaults are the authors': 200 epochs, batch 16 (optical) / 8 (distill), crop 512, SGD lr 5e-3\n"
            "  momentum 0.9 Nesterov weight decay 1e-4 with the poly schedule, b3, fp32, seed 0.\n"
            "Writes OUTPUT, OUTPUT.ckpt.safetensors every epoch (for --resume) and OUTPUT.log.csv\n"
            "  (OUTPUT minus its .safetensors ending).\n");
}

/* the progress line and the epoch lines share the terminal: an epoch line mid-progress starts on a new line */
typedef struct {
    int mid; /* a progress line is open */
} term_state;

static int progress(double f, const char *msg, void *arg) {
    term_state *t = arg;
    t->mid = f < 1.0;
    return GDALTermProgress(f, msg, NULL);
}

static void log_line(void *user, const char *line) {
    term_state *t = user;
    printf("%s%s\n", t->mid ? "\n" : "", line);
    fflush(stdout);
}

static int parse_bands(const char *s, int *b, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 65535 || *n >= DISOPT_MAX_BANDS)
            return -1;
        b[(*n)++] = (int)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return *n > 0 ? 0 : -1;
}

static int parse_int(const char *s, int *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < -2147483647L || x > 2147483647L)
        return -1;
    *v = (int)x;
    return 0;
}

static int parse_double(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return errno || end == s || *end ? -1 : 0;
}

static int bad(const char *opt, const char *val) {
    fprintf(stderr, "ERROR 2: %s: bad value '%s'\n", opt, val);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
    if (disopt_tool_version("gdal_disopt_train", argc, argv))
        return 0;
    GDALAllRegister();
    argc = GDALGeneralCmdLineProcessor(argc, &argv, 0);
    if (argc < 1)
        return argc == 0 ? 0 : 2; /* --version, --formats, ... handled (0) or failed (< 0) */
    const char *stage = NULL;
    int quiet = 0, stage_n = 0, rc = 0;
    /* first pass: the stage decides the defaults */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            CSLDestroy(argv);
            return 0;
        }
        if (!strcmp(argv[i], "--stage") && i + 1 < argc)
            stage = argv[i + 1];
    }
    if (!stage) {
        fprintf(stderr, "ERROR 2: --stage optical|distill is required\n");
        usage(stderr);
        CSLDestroy(argv);
        return 2;
    }
    if (EQUAL(stage, "optical") || EQUAL(stage, "1"))
        stage_n = 1;
    else if (EQUAL(stage, "distill") || EQUAL(stage, "2"))
        stage_n = 2;
    else {
        rc = bad("--stage", stage);
        CSLDestroy(argv);
        return rc;
    }
    disopt_train_options o;
    disopt_train_options_init(&o, stage_n);
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        int n;
#define NEED_ARG()                                                                                                     \
    do {                                                                                                               \
        if (!v) {                                                                                                      \
            fprintf(stderr, "ERROR 2: %s needs a value\n", a);                                                         \
            rc = 2;                                                                                                    \
            break;                                                                                                     \
        }                                                                                                              \
        i++;                                                                                                           \
    } while (0)
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
            quiet = 1;
        else if (!strcmp(a, "--stage")) {
            NEED_ARG();
        } else if (!strcmp(a, "--teacher")) {
            NEED_ARG();
            if (!rc)
                o.teacher = v;
        } else if (!strcmp(a, "--val")) {
            NEED_ARG();
            if (!rc)
                o.val_list = v;
        } else if (!strcmp(a, "--init")) {
            NEED_ARG();
            if (!rc)
                o.init = v;
        } else if (!strcmp(a, "--resume")) {
            NEED_ARG();
            if (!rc)
                o.resume = v;
        } else if (!strcmp(a, "--log")) {
            NEED_ARG();
            if (!rc)
                o.log_csv = v;
        } else if (!strcmp(a, "--arch")) {
            NEED_ARG();
            if (rc)
                break;
            const char *p = v;
            if (!strncmp(p, "student-", 8))
                p += 8;
            else if (!strncmp(p, "teacher-", 8))
                p += 8;
            if ((p[0] != 'b' && p[0] != 'B') || parse_int(p + 1, &n)) {
                fprintf(stderr, "ERROR 1: unknown architecture '%s': b0..b7 (EfficientNet encoders)\n", v);
                rc = 1;
            } else
                o.variant = n;
        } else if (!strcmp(a, "--epochs")) {
            NEED_ARG();
            if (!rc && parse_int(v, &o.epochs))
                rc = bad(a, v);
        } else if (!strcmp(a, "--batch")) {
            NEED_ARG();
            if (!rc && parse_int(v, &o.batch))
                rc = bad(a, v);
        } else if (!strcmp(a, "--crop")) {
            NEED_ARG();
            if (!rc && parse_int(v, &o.crop))
                rc = bad(a, v);
        } else if (!strcmp(a, "--threads")) {
            NEED_ARG();
            if (!rc && parse_int(v, &o.threads))
                rc = bad(a, v);
        } else if (!strcmp(a, "--loader-threads")) {
            NEED_ARG();
            if (!rc && parse_int(v, &o.loader_threads))
                rc = bad(a, v);
        } else if (!strcmp(a, "--steps-per-epoch")) {
            NEED_ARG();
            if (!rc && parse_int(v, &o.steps_per_epoch))
                rc = bad(a, v);
        } else if (!strcmp(a, "--seed")) {
            NEED_ARG();
            if (rc)
                break;
            char *end;
            errno = 0;
            unsigned long long u = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-')
                rc = bad(a, v);
            else
                o.seed = (uint64_t)u;
        } else if (!strcmp(a, "--lr")) {
            NEED_ARG();
            if (!rc && parse_double(v, &o.lr))
                rc = bad(a, v);
        } else if (!strcmp(a, "--weight-decay")) {
            NEED_ARG();
            if (!rc && parse_double(v, &o.weight_decay))
                rc = bad(a, v);
        } else if (!strcmp(a, "--momentum")) {
            NEED_ARG();
            if (!rc && parse_double(v, &o.momentum))
                rc = bad(a, v);
        } else if (!strcmp(a, "--min-area")) {
            NEED_ARG();
            if (!rc && parse_double(v, &o.min_area))
                rc = bad(a, v);
        } else if (!strcmp(a, "--optimizer")) {
            NEED_ARG();
            if (rc)
                break;
            if (EQUAL(v, "sgd"))
                o.optimizer = DISOPT_OPTIM_SGD;
            else if (EQUAL(v, "adamw"))
                o.optimizer = DISOPT_OPTIM_ADAMW;
            else
                rc = bad(a, v);
        } else if (!strcmp(a, "--precision")) {
            NEED_ARG();
            if (rc)
                break;
            if (EQUAL(v, "fp32"))
                o.f64 = 0, o.math = DISOPT_TRAIN_MATH_FP32;
            else if (EQUAL(v, "fp64"))
                o.f64 = 1, o.math = DISOPT_TRAIN_MATH_FP32;
            else if (EQUAL(v, "tf32"))
                o.f64 = 0, o.math = DISOPT_TRAIN_MATH_TF32;
            else if (EQUAL(v, "bf16"))
                o.f64 = 0, o.math = DISOPT_TRAIN_MATH_BF16;
            else {
                fprintf(stderr, "ERROR 1: --precision %s: fp32, fp64 (CPU, for debugging), tf32 or bf16 (CUDA)\n", v);
                rc = 1;
            }
        } else if (!strcmp(a, "--device")) {
            NEED_ARG();
            if (rc)
                break;
            if (EQUAL(v, "cpu"))
                o.device = DISOPT_BACKEND_CPU;
            else if (EQUAL(v, "cuda"))
                o.device = DISOPT_BACKEND_CUDA;
            else if (EQUALN(v, "cuda:", 5) && !parse_int(v + 5, &o.gpu) && o.gpu >= 0)
                o.device = DISOPT_BACKEND_CUDA;
            else if (EQUALN(v, "cuda:", 5) && strchr(v, ',')) { /* cuda:0,1,...: one rank per GPU (NCCL) */
                char **ids = CSLTokenizeString2(v + 5, ",", 0);
                const int n = CSLCount(ids);
                o.n_gpus = 0;
                for (int k = 0; k < n && !rc; k++) {
                    int g = -1;
                    if (n > DISOPT_MAX_GPUS || parse_int(ids[k], &g) || g < 0)
                        rc = bad(a, v);
                    else
                        o.gpus[o.n_gpus++] = g;
                }
                CSLDestroy(ids);
                if (!rc)
                    o.device = DISOPT_BACKEND_CUDA;
            } else
                rc = bad(a, v);
        } else if (!strcmp(a, "--rotate180")) {
            NEED_ARG();
            if (rc)
                break;
            if (EQUAL(v, "column"))
                o.rotate180 = -1;
            else if (EQUAL(v, "yes") || !strcmp(v, "1"))
                o.rotate180 = 1;
            else if (EQUAL(v, "no") || !strcmp(v, "0"))
                o.rotate180 = 0;
            else
                rc = bad(a, v);
        } else if (!strcmp(a, "--complex")) {
            NEED_ARG();
            if (rc)
                break;
            if (EQUAL(v, "error"))
                o.complex_mode = DISOPT_COMPLEX_ERROR;
            else if (EQUAL(v, "db"))
                o.complex_mode = DISOPT_COMPLEX_DB;
            else if (EQUAL(v, "intensity"))
                o.complex_mode = DISOPT_COMPLEX_INTENSITY;
            else if (EQUAL(v, "amplitude"))
                o.complex_mode = DISOPT_COMPLEX_AMPLITUDE;
            else
                rc = bad(a, v);
        } else if (!strcmp(a, "--sar-bands")) {
            NEED_ARG();
            if (!rc && parse_bands(v, o.sar_bands, &o.n_sar_bands))
                rc = bad(a, v);
        } else if (!strcmp(a, "--optical-bands")) {
            NEED_ARG();
            if (!rc && parse_bands(v, o.opt_bands, &o.n_opt_bands))
                rc = bad(a, v);
        } else if (!strcmp(a, "--no-dropout"))
            o.dropout = 0;
        else if (!strcmp(a, "--no-drop-connect"))
            o.drop_connect = 0;
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "ERROR 2: unknown option %s\n", a);
            usage(stderr);
            rc = 2;
        } else if (npos < 2)
            pos[npos++] = a;
        else {
            fprintf(stderr, "ERROR 2: too many arguments (%s)\n", a);
            usage(stderr);
            rc = 2;
        }
#undef NEED_ARG
    }
    if (rc == 0 && npos != 2) {
        fprintf(stderr, "ERROR 2: a sample list and an output file are needed\n");
        usage(stderr);
        rc = 2;
    }
    if (rc == 0 && o.variant != 3 && (o.variant < 0 || o.variant > 7)) {
        fprintf(stderr, "ERROR 1: unknown architecture b%d: b0..b7 (EfficientNet encoders)\n", o.variant);
        rc = 1;
    }
    if (rc) {
        CSLDestroy(argv);
        return rc;
    }
    o.list = pos[0];
    o.output = pos[1];
    term_state ts = {0};
    if (!quiet) {
        o.log = log_line;
        o.log_user = &ts;
        o.progress = progress;
        o.progress_arg = &ts;
    }
    disopt_status s = disopt_train_run(&o);
    if (s != DISOPT_OK) {
        CPLError(CE_Failure, CPLE_AppDefined, "%s", disopt_last_error());
        rc = 1;
    }
    CSLDestroy(argv);
    GDALDestroyDriverManager();
    return rc;
}
