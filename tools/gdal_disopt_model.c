/*
 * gdal_disopt_model - inspect, convert and verify DisOptNet model files (.safetensors, or PyTorch
 * checkpoints .pth / .pth.tar read with our restricted unpickler). A thin main over
 * include/disopt_io.h; GDAL paths (/vsicurl/, /vsizip/, ...) work everywhere.
 */
#include "disopt.h"
#include "disopt_io.h"
#include "tool_version.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <gdal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LISTED 50

static int usage(int rc) {
    FILE *f = rc ? stderr : stdout;
    fprintf(f,
            "Usage: gdal_disopt_model [--help] [--help-general] <command> ...\n"
            "  info FILE                         architecture (from the keys), parameters, metadata,\n"
            "                                    missing / unexpected keys\n"
            "  convert IN OUT.safetensors [--metadata KEY=VALUE]... [--dtype f32|f16|bf16]\n"
            "                                    to safetensors (default dtype: as stored; counters stay I64)\n"
            "  verify FILE [--size N] [--threads N] [--dump OUT.f32]\n"
            "                                    forward on a fixed 1 x C x N x N input (default N 64), checksum\n"
            "FILE / IN: .safetensors, or a PyTorch checkpoint (torch.save >= 1.6: .pth, .pth.tar).\n");
    return rc;
}

static int fail(const char *what) {
    fprintf(stderr, "ERROR: %s: %s\n", what, disopt_last_error());
    return 1;
}

static const char *dtype_str(disopt_dtype d) {
    switch (d) {
    case DISOPT_DTYPE_F32: return "F32";
    case DISOPT_DTYPE_F16: return "F16";
    case DISOPT_DTYPE_BF16: return "BF16";
    case DISOPT_DTYPE_I64: return "I64";
    case DISOPT_DTYPE_F64: return "F64";
    case DISOPT_DTYPE_I32: return "I32";
    case DISOPT_DTYPE_U8: return "U8";
    default: return "?";
    }
}

typedef struct {
    int shown[3];
} listing;

static void report_key(void *user, const char *kind, const char *key, const char *detail) {
    listing *l = user;
    int k = kind[0] == 'm' ? 0 : kind[0] == 'u' ? 1 : 2;
    if (++l->shown[k] <= MAX_LISTED) printf("  %-10s %s%s%s\n", kind, key, *detail ? "  " : "", detail);
}

static int cmd_info(const char *path) {
    disopt_file_kind kind;
    if (disopt_file_kind_of_path(path, &kind) != DISOPT_OK) return fail(path);
    if (kind == DISOPT_FILE_PTH_ZIP) {
        disopt_pth *p;
        if (disopt_pth_open(path, &p) != DISOPT_OK) return fail("open");
        int counts[8] = {0};
        for (int i = 0; i < disopt_pth_num_tensors(p); i++) {
            disopt_pth_tensor_info t;
            disopt_pth_tensor(p, i, &t);
            counts[t.dtype < 8 ? t.dtype : 7]++;
        }
        printf("Format: PyTorch zip checkpoint (folder '%s'), %d tensors:", disopt_pth_archive_name(p),
               disopt_pth_num_tensors(p));
        for (int d = 0; d < 7; d++)
            if (counts[d]) printf(" %d %s", counts[d], dtype_str((disopt_dtype)d));
        printf("\n");
        disopt_pth_close(p);
    } else {
        printf("Format: safetensors\n");
    }
    disopt_weights *w;
    if (disopt_weights_open(path, &w) != DISOPT_OK) return fail("open");
    disopt_st *st = disopt_weights_st(w);
    printf("Metadata:\n");
    for (int i = 0; i < disopt_st_num_metadata(st); i++) {
        const char *k, *v;
        disopt_st_metadata_at(st, i, &k, &v);
        printf("  %s=%s\n", k, v);
    }
    listing l = {{0, 0, 0}};
    disopt_weights_report r;
    printf("Key check:\n");
    if (disopt_weights_check(w, report_key, &l, &r) != DISOPT_OK) {
        disopt_weights_close(w);
        return fail("check");
    }
    for (int k = 0; k < 3; k++)
        if (l.shown[k] > MAX_LISTED) printf("  ... and %d more %s\n", l.shown[k] - MAX_LISTED,
                                            k == 0 ? "missing" : k == 1 ? "unexpected" : "shape mismatches");
    char cfg[64];
    disopt_model_config_format(&r.config, cfg, sizeof cfg);
    int exact = r.missing == 0 && r.unexpected == 0 && r.bad_shape == 0;
    printf("Tensors: %d\nParameters: %lld\n", r.num_tensors, (long long)r.num_parameters);
    printf("Architecture: %s%s (%d keys matched, %d missing, %d unexpected, %d with another shape)\n", cfg,
           exact ? "" : " (closest; does not load)", r.matched, r.missing, r.unexpected, r.bad_shape);
    disopt_weights_close(w);
    return exact ? 0 : 2;
}

static int cmd_convert(const char *in, const char *out, char **md, const char *dtype) {
    disopt_dtype want = DISOPT_DTYPE_UNKNOWN;
    if (dtype) {
        if (EQUAL(dtype, "f32")) want = DISOPT_DTYPE_F32;
        else if (EQUAL(dtype, "f16")) want = DISOPT_DTYPE_F16;
        else if (EQUAL(dtype, "bf16")) want = DISOPT_DTYPE_BF16;
        else {
            fprintf(stderr, "ERROR: --dtype must be f32, f16 or bf16\n");
            return 1;
        }
    }
    disopt_weights *w;
    if (disopt_weights_open(in, &w) != DISOPT_OK) return fail("open");
    disopt_st *st = disopt_weights_st(w);
    disopt_st_writer *wr;
    disopt_status s = disopt_st_writer_create(&wr);
    for (int i = 0; s == DISOPT_OK && i < disopt_st_num_metadata(st); i++) {
        const char *k, *v;
        disopt_st_metadata_at(st, i, &k, &v);
        s = disopt_st_writer_set_metadata(wr, k, v);
    }
    disopt_weights_report r;
    if (s == DISOPT_OK) s = disopt_weights_check(w, NULL, NULL, &r);
    if (s == DISOPT_OK && r.missing == 0 && r.unexpected == 0 && r.bad_shape == 0 &&
        !disopt_st_metadata(st, "arch")) { /* record what the keys say */
        char cfg[64];
        disopt_model_config_format(&r.config, cfg, sizeof cfg);
        char *dash = strchr(cfg, '-');
        if (dash) {
            *dash = '\0';
            s = disopt_st_writer_set_metadata(wr, "arch", cfg);
            if (s == DISOPT_OK) s = disopt_st_writer_set_metadata(wr, "variant", dash + 1);
        }
    }
    for (int i = 0; s == DISOPT_OK && md && md[i]; i++) {
        char *key = NULL;
        const char *val = CPLParseNameValue(md[i], &key);
        if (!key || !val) {
            fprintf(stderr, "ERROR: --metadata wants KEY=VALUE, not '%s'\n", md[i]);
            CPLFree(key);
            disopt_st_writer_destroy(wr);
            disopt_weights_close(w);
            return 1;
        }
        s = disopt_st_writer_set_metadata(wr, key, val);
        CPLFree(key);
    }
    for (int i = 0; s == DISOPT_OK && i < disopt_st_num_tensors(st); i++) {
        const disopt_st_tensor_info *t = disopt_st_tensor(st, i);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        float *buf = malloc(numel ? numel * sizeof(float) : sizeof(float));
        if (!buf) {
            fprintf(stderr, "ERROR: out of memory\n");
            s = DISOPT_ERR_OUT_OF_MEMORY;
            break;
        }
        disopt_dtype dt = t->dtype;
        if (dt != DISOPT_DTYPE_I64)
            dt = want != DISOPT_DTYPE_UNKNOWN ? want
                 : (dt == DISOPT_DTYPE_F16 || dt == DISOPT_DTYPE_BF16) ? dt
                                                                      : DISOPT_DTYPE_F32;
        const char *name = strncmp(t->name, "module.", 7) == 0 ? t->name + 7 : t->name;
        s = disopt_st_read_f32(st, t, buf, numel);
        if (s == DISOPT_OK) s = disopt_st_writer_add(wr, name, dt, t->ndim, t->shape, buf);
        free(buf);
    }
    if (s == DISOPT_OK) s = disopt_st_writer_save(wr, out);
    disopt_st_writer_destroy(wr);
    int n = disopt_st_num_tensors(st);
    disopt_weights_close(w);
    if (s != DISOPT_OK) return fail("convert");
    printf("wrote %s (%d tensors)\n", out, n);
    return 0;
}

static int cmd_verify(const char *path, int size, int threads, const char *dump) {
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = threads;
    disopt_engine *e;
    disopt_model *m;
    if (disopt_engine_create(&eo, &e) != DISOPT_OK) return fail("engine");
    if (disopt_model_load_any(e, path, &m) != DISOPT_OK) {
        disopt_engine_destroy(e);
        return fail("load");
    }
    disopt_model_info info;
    disopt_model_get_info(m, &info);
    int c = info.config.in_channels, k = info.config.num_classes;
    size_t n_in = (size_t)c * (size_t)size * (size_t)size, n_out = (size_t)k * (size_t)size * (size_t)size;
    float *x = malloc(n_in * sizeof *x), *y = malloc(n_out * sizeof *y);
    int rc = 0;
    if (!x || !y) {
        fprintf(stderr, "ERROR: out of memory\n");
        rc = 1;
    }
    /* the fixed input: SAR-like raw values in 0..50, raw = ((i * 2654435761) mod 2^32 mod 2001) * 0.025,
     * normalised the authors' way, (raw / 255 - 0.5) / 0.125, in double, then rounded to float */
    for (size_t i = 0; !rc && i < n_in; i++)
        x[i] = (float)(((double)(((uint32_t)i * 2654435761u) % 2001u) * 0.025 / 255.0 - 0.5) / 0.125);
    disopt_outputs o;
    memset(&o, 0, sizeof o);
    o.fused_logits = y;
    if (!rc && disopt_model_infer(m, x, 1, c, size, size, &o) != DISOPT_OK) rc = fail("infer");
    if (!rc) {
        uint64_t h = 1469598103934665603ull;
        double sum = 0;
        const unsigned char *b = (const unsigned char *)y;
        for (size_t i = 0; i < n_out * sizeof *y; i++) h = (h ^ b[i]) * 1099511628211ull;
        for (size_t i = 0; i < n_out; i++) sum += y[i];
        char cfg[64];
        disopt_model_config_format(&info.config, cfg, sizeof cfg);
        printf("model: %s, %lld parameters\ninput: 1 x %d x %d x %d (fixed)\nlogits sum: %.9g\n"
               "checksum: fnv1a64:%016llx\n",
               cfg, (long long)info.num_parameters, c, size, size, sum, (unsigned long long)h);
        if (dump) {
            FILE *f = fopen(dump, "wb");
            if (!f || fwrite(y, sizeof *y, n_out, f) != n_out) {
                fprintf(stderr, "ERROR: cannot write %s\n", dump);
                rc = 1;
            }
            if (f && fclose(f) != 0) rc = 1;
        }
    }
    free(x);
    free(y);
    disopt_model_destroy(m);
    disopt_engine_destroy(e);
    return rc;
}

int main(int argc, char **argv) {
    if (disopt_tool_version("gdal_disopt_model", argc, argv))
        return 0;
    GDALAllRegister();
    argc = GDALGeneralCmdLineProcessor(argc, &argv, 0);
    if (argc < 1) return 0; /* --version, --formats, ... handled */
    int rc;
    if (argc < 2 || EQUAL(argv[1], "--help") || EQUAL(argv[1], "-h")) {
        rc = usage(argc < 2);
    } else if (EQUAL(argv[1], "info") && argc == 3) {
        rc = cmd_info(argv[2]);
    } else if (EQUAL(argv[1], "convert") && argc >= 4) {
        char **md = NULL;
        const char *dtype = NULL;
        rc = 0;
        for (int i = 4; i < argc && !rc; i++) {
            if (EQUAL(argv[i], "--metadata") && i + 1 < argc) md = CSLAddString(md, argv[++i]);
            else if (EQUAL(argv[i], "--dtype") && i + 1 < argc) dtype = argv[++i];
            else rc = usage(1);
        }
        if (!rc) rc = cmd_convert(argv[2], argv[3], md, dtype);
        CSLDestroy(md);
    } else if (EQUAL(argv[1], "verify") && argc >= 3) {
        int size = 64, threads = 0;
        const char *dump = NULL;
        rc = 0;
        for (int i = 3; i < argc && !rc; i++) {
            if (EQUAL(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
            else if (EQUAL(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
            else if (EQUAL(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
            else rc = usage(1);
        }
        if (!rc && (size < 16 || size > 4096 || size % 16)) {
            fprintf(stderr, "ERROR: --size must be a multiple of 16 in 16..4096\n");
            rc = 1;
        }
        if (!rc) rc = cmd_verify(argv[2], size, threads, dump);
    } else {
        rc = usage(1);
    }
    CSLDestroy(argv);
    GDALDestroyDriverManager();
    return rc;
}
