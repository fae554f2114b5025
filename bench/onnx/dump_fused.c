/*
 * dump_fused - the fused logits of a model for golden.input of an IO file (export_onnx.py's
 * check_io.safetensors), the image repeated BATCH times, written raw (float32) to OUT, so that two
 * builds' outputs can be compared bit for bit with cmp (bench/onnx/device_ort.sh):
 *   dump_fused MODEL IO OUT THREADS BATCH
 */
#include "disopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "Usage: dump_fused MODEL IO OUT THREADS BATCH\n");
        return 1;
    }
    disopt_st *io;
    if (disopt_st_open(argv[2], &io) != DISOPT_OK) return fprintf(stderr, "%s\n", disopt_last_error()), 1;
    const disopt_st_tensor_info *ti = disopt_st_find(io, "golden.input");
    int B = atoi(argv[5]);
    if (!ti || ti->ndim != 4 || ti->shape[0] != 1 || ti->shape[1] != 4 || B < 1) return fprintf(stderr, "bad input\n"), 1;
    int H = (int)ti->shape[2], W = (int)ti->shape[3];
    size_t n = (size_t)4 * H * W, no = (size_t)2 * H * W;
    float *x = malloc(n * B * sizeof(float)), *y = malloc(no * B * sizeof(float));
    if (!x || !y || disopt_st_read_f32(io, ti, x, n) != DISOPT_OK) return fprintf(stderr, "read failed\n"), 1;
    for (int b = 1; b < B; b++) memcpy(x + n * b, x, n * sizeof(float));
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    eo.num_threads = atoi(argv[4]);
    disopt_engine *e;
    disopt_model *m;
    disopt_outputs o = {y, NULL, NULL, NULL, NULL, 0};
    if (disopt_engine_create(&eo, &e) || disopt_model_load(e, argv[1], &m) || disopt_model_infer(m, x, B, 4, H, W, &o))
        return fprintf(stderr, "dump_fused: %s\n", disopt_last_error()), 1;
    FILE *f = fopen(argv[3], "wb");
    if (!f || fwrite(y, sizeof(float), no * B, f) != no * B || fclose(f)) return fprintf(stderr, "write failed\n"), 1;
    disopt_model_destroy(m);
    disopt_engine_destroy(e);
    disopt_st_close(io);
    free(x);
    free(y);
    return 0;
}
