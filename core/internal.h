/*
 * internal.h - shared internals of libdisopt (not installed).
 */
#ifndef DISOPT_INTERNAL_H
#define DISOPT_INTERNAL_H

#include "disopt.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define DP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DP_PRINTF(a, b)
#endif

/* Sets the thread-local message and returns s, so that `return dp_error(...)` reads naturally. */
disopt_status dp_error(disopt_status s, const char *fmt, ...) DP_PRINTF(2, 3);
/* Prepends context to the current message: "context: previous message". Returns s. */
disopt_status dp_error_prefix(disopt_status s, const char *fmt, ...) DP_PRINTF(2, 3);

/* seconds on the monotonic clock (for timings and profiles) */
double dp_now_s(void);

void dp_log(const disopt_engine *e, disopt_log_level level, const char *fmt, ...) DP_PRINTF(3, 4);

#define DP_TRY(expr)                                                                                          \
    do {                                                                                                      \
        disopt_status dp_try_s_ = (expr);                                                                     \
        if (dp_try_s_ != DISOPT_OK) return dp_try_s_;                                                         \
    } while (0)

/* Overflow-checked size arithmetic. Return 0 on overflow. */
int dp_mul_size(size_t a, size_t b, size_t *out);

/* ---------------------------------------------------------------- thread pool */
typedef struct dp_pool dp_pool;
typedef void (*dp_task_fn)(void *ctx, int task, int thread);
disopt_status dp_pool_create(int nthreads, dp_pool **out);
void dp_pool_destroy(dp_pool *p);
int dp_pool_size(const dp_pool *p);
/* Runs fn(ctx, t, thread) for t in [0, ntasks) on the pool (the caller participates). Blocks until done. */
void dp_pool_run(dp_pool *p, int ntasks, dp_task_fn fn, void *ctx);

/* disopt_model_infer with flags: DP_INFER_DEVICE_OUT: the outputs' pointers (fused/sar/rgb logits, taps; no
 * probability) are memory of the engine's device (backend download_device), written when this returns;
 * DP_INFER_DEVICE_IN: the input is there (backend upload_device; not checked for NaN/Inf) */
#define DP_INFER_DEVICE_OUT 1
#define DP_INFER_DEVICE_IN 2
/* with DEVICE_OUT: return once the work is queued on the engine's stream; dp_model_infer_wait (or the next
 * inference) waits for it and checks the input (which must stay valid until then) */
#define DP_INFER_ASYNC 4
disopt_status dp_model_infer_ex(disopt_model *m, const float *input, int n, int c, int h, int w,
                                const disopt_outputs *o, int flags);
disopt_status dp_model_infer_wait(disopt_model *m);
/* DP_INFER_PREPARE: no input (NULL) and nothing run: the plan for this shape is made and, on a backend with
 * graphs, the graph for these outputs recorded, so that the first real call of that shape only runs it (a
 * pipeline does this while its first batch is read) */
#define DP_INFER_PREPARE 8
/* Starts copying input (n x c x h x w, host memory from disopt_engine_host_alloc) to the model's device now,
 * beside whatever the device is running; the next disopt_model_infer of exactly that input and shape then
 * uses the copy (same bits). input must not change until then. Does nothing on a backend without it. */
disopt_status dp_model_prefetch(disopt_model *m, const float *input, int n, int c, int h, int w);
/* how many inputs of m's engine a prefetch has served so far (0 without the feature) */
long dp_model_prefetch_hits(const disopt_model *m);
/* uploads a prefetch served in the tiler's last bulk run (core/raster/tiler.c; tests, benchmarks) */
struct disopt_tiler;
long dp_tiler_last_prefetch_hits(const struct disopt_tiler *t);

/* ---------------------------------------------------------------- graph */
typedef enum dp_op {
    DP_OP_CONV = 0,  /* in[0] -> out; weights; optional bias; fused activation; optional in[1] (N,C,1,1):
                      * in[0] is multiplied per channel by it first (the SE gate folded into the next conv) */
    DP_OP_BN,        /* standalone inference batch norm (per-channel scale/shift): only when not folded */
    DP_OP_ACT,       /* elementwise activation */
    DP_OP_GAP,       /* global average pool: N,C,H,W -> N,C,1,1 */
    DP_OP_SCALE_CH,  /* out = in[0] * in[1] (in[1]: N,C,1,1) */
    DP_OP_SCSE,      /* out = x*c + x*s with x=in[0], c=in[1] (N,C,1,1), s=in[2] (N,1,H,W) */
    DP_OP_ADD,       /* out = in[0] + in[1] */
    DP_OP_CONCAT,    /* channel concat of in[0..n_in) */
    DP_OP_UPSAMPLE,  /* bilinear, align_corners=True, integer scale factor */
    DP_OP_BROADCAST, /* N,C,1,1 -> N,C,H,W with H,W of in[1] (ASPP pooling's 1x1 "resize") */
    DP_OP_SOFTMAX,   /* softmax over channels */
    /* training graphs only (dp_graph_build_train); inference backends refuse them */
    DP_OP_DROPOUT,      /* out = in[0] * mask / (1 - p), elementwise mask; p in node->p */
    DP_OP_DROP_CONNECT, /* out = in[0] / (1 - p) * mask[sample]; p (the block's rate) in node->p */
    DP_OP_COUNT
} dp_op;

typedef enum dp_act { DP_ACT_NONE = 0, DP_ACT_RELU, DP_ACT_SWISH, DP_ACT_SIGMOID } dp_act;

#define DP_MAX_IN 6

typedef struct dp_conv_params {
    int cin, cout, kh, kw, sh, sw, dh, dw, groups;
    int pt, pb, pl, pr; /* zero padding top, bottom, left, right (symmetric or static-same) */
} dp_conv_params;

typedef struct dp_node {
    dp_op op;
    int in[DP_MAX_IN];
    int n_in;
    int out;
    dp_act act;         /* fused activation (conv) or the activation (ACT) */
    dp_conv_params conv;
    int w_key, b_key;   /* param indices (conv weight / conv bias), -1 when absent */
    int bn_key;         /* index of BN weight key (bias, mean, var follow), -1 when absent */
    float bn_eps;
    int scale;          /* upsample factor */
    /* training graphs: BN momentum (PyTorch semantics), dropout probability / drop-connect rate */
    double bn_momentum, p;
    /* Folded parameters (host, float32): weight as OIHW, bias (cout) or NULL; in the graph's warena. */
    float *fw, *fb;
    void *bk;           /* backend's prepared form of the node (packed weights, descriptors) */
    /* Deferred bias + activation (backends with DP_CAP_DW_PRE_ACT; set by the model at load): a conv
     * with raw_out writes its output without bias and activation, and the one depthwise conv that
     * reads it (pre points at the producer) applies them as it loads its input. */
    int raw_out;
    const struct dp_node *pre;
} dp_node;

typedef struct dp_tensor {
    char name[32];      /* non-empty for tappable/named tensors */
    int c;
    int h, w;           /* set by dp_graph_shapes for the planned input size */
    int producer;       /* node index, -1 for the graph input */
} dp_tensor;

typedef struct dp_param {
    char *key;
    disopt_key_kind kind;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    float *data;        /* host float32, loaded */
    int loaded;
    int used;           /* referenced by the forward pass (conv_head and bn1 are not) */
} dp_param;

typedef struct dp_graph {
    dp_node *nodes;
    int n_nodes, cap_nodes;
    dp_tensor *tensors;
    int n_tensors, cap_tensors;
    dp_param *params;
    int n_params, cap_params;
    int input;          /* tensor id of the input */
    int out_fused, out_sar, out_rgb; /* tensor ids; -1 when absent */
    int in_channels, num_classes;
    float *warena;      /* the model's arena: every node's folded weights and biases (fw/fb point here) */
    size_t warena_floats;
} dp_graph;

disopt_status dp_graph_build(const disopt_model_config *cfg, dp_graph *g);
/* The same architecture as a training graph: BN as its own DP_OP_BN node (bn_key, bn_eps, bn_momentum;
 * batch statistics in training), activations as DP_OP_ACT nodes, the SE gate as DP_OP_SCALE_CH, every
 * conv plain (no fused act/BN/scale), Dropout(0.5) after the ASPP projection, drop-connect before each
 * MBConv residual add (rate != 0), no final softmax. Tensor names as in the inference graph. */
disopt_status dp_graph_build_train(const disopt_model_config *cfg, dp_graph *g);
void dp_graph_free(dp_graph *g);
int dp_graph_find_param(const dp_graph *g, const char *key);
int dp_graph_find_tensor(const dp_graph *g, const char *name);
/* Computes every tensor's h, w for an input of H x W; fails if the graph cannot run at that size. */
disopt_status dp_graph_shapes(dp_graph *g, int H, int W);

/* ---------------------------------------------------------------- backend interface */
typedef struct dp_backend dp_backend;

/* A view of a tensor as the backend sees it: logical shape + backend memory. */
typedef struct dp_tview {
    int n, c, h, w;
    void *data;         /* backend memory (for the CPU: float* NCHW) */
} dp_tview;

typedef struct dp_backend_vtable {
    const char *name;
    void (*destroy)(dp_backend *b);
    /* Bytes a tensor of this logical shape occupies in the backend's layout. */
    size_t (*tensor_bytes)(dp_backend *b, int n, int c, int h, int w);
    disopt_status (*alloc)(dp_backend *b, size_t bytes, void **out);
    void (*free)(dp_backend *b, void *p);
    /* Host NCHW float32 <-> backend tensor. */
    disopt_status (*upload)(dp_backend *b, const dp_tview *dst, const float *src_nchw);
    disopt_status (*download)(dp_backend *b, float *dst_nchw, const dp_tview *src);
    /* Prepares a node's constant data (folded weights in node->fw/fb) for execution: node->bk. */
    disopt_status (*prepare_node)(dp_backend *b, dp_node *node);
    void (*release_node)(dp_backend *b, dp_node *node);
    /* Scratch bytes the node needs when run at these shapes. */
    size_t (*workspace_bytes)(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out);
    /* Runs one node. ins[i] for i < node->n_in. */
    disopt_status (*run_node)(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                              void *workspace, size_t workspace_bytes);
    disopt_status (*synchronize)(dp_backend *b);
    /* Optional (NULL when not offered): runs a depthwise conv node and, in the same pass, the global
     * average pool of its output into gap (N x C x 1 x 1), bit-identical to running the GAP node on
     * it. The model uses it when a GAP node directly follows the conv that feeds it (the SE blocks). */
    disopt_status (*run_conv_gap)(dp_backend *b, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                                  const dp_tview *gap, void *workspace, size_t workspace_bytes);
    /* Optional (NULL when not offered; CUDA graphs): the node calls between graph_begin and
     * graph_end are recorded, not run, into a replayable graph bound to the plan's memory;
     * graph_launch replays it. A failing graph_begin means "run the nodes directly". */
    disopt_status (*graph_begin)(dp_backend *b);
    disopt_status (*graph_end)(dp_backend *b, int ok, void **graph);
    disopt_status (*graph_launch)(dp_backend *b, void *graph);
    void (*graph_destroy)(dp_backend *b, void *graph);
    /* Optional: page-locked host memory (faster copies; disopt_engine_host_alloc). */
    disopt_status (*host_alloc)(dp_backend *b, size_t bytes, void **out);
    void (*host_free)(dp_backend *b, void *p);
    /* Optional, both or neither: an upload that also counts, on the device and in stream order, the
     * NaN/Inf values of src; nonfinite_result (after synchronize) gives the count of the last one.
     * The model then skips its host-side scan of the input. */
    disopt_status (*upload_checked)(dp_backend *b, const dp_tview *dst, const float *src);
    disopt_status (*nonfinite_result)(dp_backend *b, unsigned long long *count);
    /* Channels [c0, c0 + nc) of every image of src into dst (n x nc x h x w float32, NCHW), without
     * the rest (the probability of the building class out of the softmax: half of what download
     * moves, and no host-side copy). */
    disopt_status (*download_planes)(dp_backend *b, float *dst, const dp_tview *src, int c0, int nc);
    /* Optional: src as NCHW float32 into dst, memory of the backend's device (the CPU's: host memory),
     * in the backend's order: done after the next synchronize (the trainer reads the frozen teacher's outputs
     * there, no host copy). */
    disopt_status (*download_device)(dp_backend *b, float *dst, const dp_tview *src);
    /* Optional: the input from NCHW float32 in the backend's device memory (no NaN/Inf check: the caller's) */
    disopt_status (*upload_device)(dp_backend *b, const dp_tview *dst, const float *src);
    unsigned caps;      /* DP_CAP_* */
    /* Optional: starts copying n floats of host memory (page-locked: host_alloc) to the device now,
     * on a stream of its own beside the running work, so that the next upload / upload_checked of
     * exactly that src and size waits for that copy instead of making its own (the other uploads
     * copy as usual). The caller must not change src until that upload has been made. */
    disopt_status (*prefetch)(dp_backend *b, const float *src, size_t n);
    /* Optional: how many uploads a prefetch has served so far (benchmarks, tests) */
    long (*prefetch_hits)(dp_backend *b);
} dp_backend_vtable;

/* the backend's depthwise conv can apply its input producer's bias + activation (dp_node.pre) */
#define DP_CAP_DW_PRE_ACT 1u

struct dp_backend {
    const dp_backend_vtable *vt;
    const disopt_engine *engine;
};

disopt_status dp_backend_cpu_create(const disopt_engine *e, int nthreads, dp_backend **out);

/* The CUDA backend lives in its own shared module (libdisopt_cuda.so, built from cuda/) that the
 * engine dlopens when a caller asks for CUDA, so that the library and the GDAL plugin load and run
 * on machines without the CUDA libraries. The module reports errors through the host's functions
 * (one thread-local message, the core's). */
#define DP_CUDA_ABI 6
typedef struct dp_cuda_host {
    int abi;
    disopt_status (*error)(disopt_status s, const char *fmt, ...) DP_PRINTF(2, 3);
    void (*log)(const disopt_engine *e, disopt_log_level level, const char *fmt, ...) DP_PRINTF(3, 4);
} dp_cuda_host;
#define DP_CUDA_ENTRY "disopt_cuda_backend_create"
typedef disopt_status (*dp_cuda_create_fn)(const dp_cuda_host *host, const disopt_engine *e, int device,
                                           dp_backend **out);

/* Engine internals. */
struct disopt_engine {
    disopt_engine_options opt;
    int nthreads;
    dp_backend *backend;
    void *module;       /* dlopen handle of the backend's module (CUDA), or NULL */
};

/* ---------------------------------------------------------------- dwgen-1 (core/dwgen.c) */
/* the stream of a key: FNV-1a-64 of the key, and its element i as a uniform value in [-1, 1)
 * (splitmix64), bit-identical to testdata/gen/dwgen.py */
uint64_t dp_dwgen_seed(const char *key);
float dp_dwgen_unit(uint64_t seed, uint64_t i);

/* ---------------------------------------------------------------- half floats */
float dp_f16_to_f32(uint16_t h);
float dp_bf16_to_f32(uint16_t h);
uint16_t dp_f32_to_f16(float f);
uint16_t dp_f32_to_bf16(float f);
/* Raw tensors (training checkpoints: double arenas, exact bytes). The bytes are little-endian element
 * values of dtype's size (the host order on the x86-64 / aarch64 hosts we build for); numel * size bytes. */
disopt_status dp_st_writer_add_raw(disopt_st_writer *w, const char *name, disopt_dtype dtype, int ndim,
                                   const int64_t *shape, const void *bytes);
/* Reads a tensor's bytes unconverted; nbytes must equal the tensor's size. */
disopt_status dp_st_read_raw(disopt_st *st, const disopt_st_tensor_info *t, void *dst, size_t nbytes);

#endif
