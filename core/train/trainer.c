/*
 * trainer.c - one training step through the whole network on the CPU (see trainer.h).
 *
 * Conventions: C11; the arenas hold float or double (cfg.f64), the typed code (forward, backward, loss)
 * is written once in trainer.inc and instantiated for both; the kernels are grad_ops.h's. Every buffer
 * is owned by the dp_trainer and allocated once at create time (no allocation in a step); weights are
 * read as float32 (safetensors or dwgen-1) into a staging copy and converted into the arena. Errors
 * through dp_error() and DP_TRY; no global state. Threads: the kernels' _mt twins on the trainer's
 * dp_pool (cfg.nthreads), one node at a time; results do not depend on the thread count. Offsets into arenas are in
 * elements and 16-element aligned.
 */
#include "trainer.h"

#include "grad_ops.h"
#include "rng.h"
#include "trainer_cu.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(DP_TRAINER_MATH_FP32 == DP_CU_TR_MATH_FP32 && DP_TRAINER_MATH_TF32 == DP_CU_TR_MATH_TF32 &&
                   DP_TRAINER_MATH_BF16 == DP_CU_TR_MATH_BF16,
               "trainer.h's math modes are train_ops.h's");

/* the frozen teacher's outputs the stage-2 loss reads: its logits, then the features paired with p4, p5 and
 * decoder_rgb (the tensors its plan keeps, and what the inference engine's teacher writes) */
static const char *const teacher_outs[DP_STAGE2_NFEAT + 1] = {"logits", "f4", "f5", "decoder"};

static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* One network: its graph, weights (owned arenas), activations and what backward needs. The arenas hold
 * elements of esz bytes (float or double). */
typedef struct dp_net {
    dp_graph g;
    int n; /* batch */
    size_t esz;
    void *params, *grads, *bufs;
    size_t n_params, n_bufs; /* elements */
    size_t *p_off;           /* per graph param: offset into params (trainable kinds) or bufs; SIZE_MAX none */
    /* activations at t_off and (trained nets) tensor gradients at g_off, in one arena of n_act elements
     * planned by liveness (plan_train; plan_forward for the frozen teacher); the tensors whose gradient
     * starts at backward position T (node n_nodes-1-T) are z_list[z_start[T+1] .. z_start[T+2]) and get
     * zeroed there (T = -1: the loss's inputs, zeroed before the loss) */
    void *act;
    size_t n_act;
    size_t *t_off;
    void *gact;         /* = act (trained nets), else NULL */
    size_t n_unplanned; /* every activation and gradient kept (for dp_trainer_memory) */
    size_t *g_off;
    int *z_start, *z_list;
    void *save; /* BN nodes: batch mean, then 1/std (c each) at s_off; CUDA nets with fused pairs: then the forward's
                 * alpha and shift (c each), from which the fused backward recomputes the BN output */
    size_t *s_off, n_save;
    uint8_t *mask; /* dropout / drop-connect nodes at m_off */
    size_t *m_off, n_mask;
    double *eps; /* per node: BN eps as the decimal PyTorch has (1e-3 / 1e-5) */
    uint8_t *fuse; /* CUDA nets, per node: 1 = a BN whose output only node i + 1, a ReLU / swish / identity
                    * activation, reads (not a loss input): the pair runs as one op (find_fusions); 2: the same,
                    * its input's gradient in dz's memory; NULL: none */
    void *ws;
    size_t ws_elems;
    dp_pool *pool; /* the trainer's (not owned); NULL: the caller's thread */
    /* CUDA nets: params, grads, bufs, act, save and mask are DEVICE memory; the host copies of the first
     * three (what the accessors return) are hparams, hgrads, hbufs */
    dp_tr_cu *cu;
    void *hparams, *hgrads, *hbufs;
    double *prof; /* profiling: seconds per category (the trainer's table; NULL: off) */
    double *prof_node; /* profiling: seconds per node, forward [2 i], backward [2 i + 1] (owned; NULL: off) */
    int teacher;  /* the frozen teacher (its forward is one category) */
} dp_net;

struct dp_trainer {
    dp_trainer_config cfg;
    dp_net net, teacher;
    int stage;
    dp_optim *opt;   /* float runs */
    double *state64; /* double runs: the optimizer state (dp_optim_update_f64) */
    int64_t step64;
    dp_optim_segment *seg;
    int n_seg;
    dp_rng rng;
    dp_pool *pool;    /* cfg.nthreads > 1 */
    int64_t forwards; /* training forwards run (num_batches_tracked) */
    /* CUDA (cfg.cuda): the context; the optimizer state on the device and its host copy (steps counted in
     * step64); the loss's targets and validity masks uploaded into target_d / valid_d; the host copies of
     * the tensors dp_trainer_tensor handed out */
    dp_tr_cu *cu;
    float *state_d, *state_h;
    int32_t *target_d;
    uint8_t *valid_d;
    /* stage 2 with DP_TRAINER_TEACHER_ENGINE: the teacher's engine and model, and its outputs (logits, f4, f5,
     * decoder: teacher_outs) as float32 in the trainer's memory (device memory on CUDA), tcount elements each */
    /* the resident batch (dp_trainer_set_batch): inputs, labels and validity (have_valid) in the trainer's memory
     * (CUDA: on the device); resident: a step runs from it */
    float *bx, *bxt;
    int32_t *by;
    uint8_t *bv;
    int batch_set, have_valid, resident;
    disopt_engine *teng;
    disopt_model *tmodel;
    float *tout[DP_STAGE2_NFEAT + 1];
    size_t tcount[DP_STAGE2_NFEAT + 1];
    int tshape[DP_STAGE2_NFEAT + 1][4];
    struct {
        const dp_net *net;
        int tensor; /* -1 - k: the engine teacher's output k */
        float *data;
    } hcopy[16];
    int n_hcopy;
    double prof[DP_TR_PROF_N];
};

dp_trainer_config dp_trainer_config_authors(const disopt_model_config *model, int n, int h, int w) {
    dp_trainer_config c;
    memset(&c, 0, sizeof c);
    c.model = *model;
    c.n = n;
    c.h = h;
    c.w = w;
    c.dropout = 1;
    c.drop_connect = 1;
    c.seed = 0x5eedULL;
    c.nthreads = 1;
    c.optim = dp_optim_config_sgd_authors();
    c.loss = dp_loss_weights_authors();
    return c;
}

/* ---------------------------------------------------------------- dwgen-1 BN init (testdata/gen/dwgen.py) */
static int trainable_kind(disopt_key_kind k) {
    return k == DISOPT_KEY_CONV_WEIGHT || k == DISOPT_KEY_CONV_BIAS || k == DISOPT_KEY_BN_WEIGHT ||
           k == DISOPT_KEY_BN_BIAS;
}

static void init_dwgen(dp_graph *g) {
    for (int i = 0; i < g->n_params; i++) {
        dp_param *p = &g->params[i];
        if (!p->data)
            continue;
        uint64_t seed = dp_dwgen_seed(p->key);
        switch (p->kind) {
        case DISOPT_KEY_CONV_WEIGHT:
            disopt_dwgen_conv_weight(p->key, p->shape, p->data);
            break;
        case DISOPT_KEY_CONV_BIAS:
            disopt_dwgen_conv_bias(p->key, p->numel, p->data);
            break;
        case DISOPT_KEY_BN_WEIGHT:
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = 1.0f + 0.25f * dp_dwgen_unit(seed, (uint64_t)j);
            break;
        case DISOPT_KEY_BN_BIAS:
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = 0.1f * dp_dwgen_unit(seed, (uint64_t)j);
            break;
        case DISOPT_KEY_BN_MEAN:
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = 0.0f;
            break;
        case DISOPT_KEY_BN_VAR:
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = 1.0f;
            break;
        default:
            break;
        }
    }
}

static disopt_status load_weights(dp_graph *g, const char *path) {
    disopt_st *st = NULL;
    DP_TRY(disopt_st_open(path, &st));
    disopt_status s = DISOPT_OK;
    int *seen = calloc((size_t)g->n_params, sizeof *seen);
    if (!seen)
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory");
    for (int i = 0; s == DISOPT_OK && i < disopt_st_num_tensors(st); i++) {
        const disopt_st_tensor_info *t = disopt_st_tensor(st, i);
        const char *k = strncmp(t->name, "module.", 7) == 0 ? t->name + 7 : t->name;
        int pi = dp_graph_find_param(g, k);
        if (pi < 0) {
            s = dp_error(DISOPT_ERR_UNEXPECTED_KEY, "%s: unexpected key '%s'", path, t->name);
            break;
        }
        dp_param *p = &g->params[pi];
        seen[pi] = 1;
        if (!p->data)
            continue; /* num_batches_tracked */
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= t->shape[d];
        if (numel != p->numel) {
            s = dp_error(DISOPT_ERR_SHAPE, "%s: key '%s' has %lld elements, %lld expected", path, k, (long long)numel,
                         (long long)p->numel);
            break;
        }
        s = disopt_st_read_f32(st, t, p->data, (size_t)p->numel);
    }
    for (int i = 0; s == DISOPT_OK && i < g->n_params; i++)
        if (!seen[i] && g->params[i].data)
            s = dp_error(DISOPT_ERR_MISSING_KEY, "%s: missing key '%s'", path, g->params[i].key);
    free(seen);
    disopt_st_close(st);
    return s;
}

/* ---------------------------------------------------------------- network setup */
static void net_free(dp_net *m) {
    free(m->prof_node);
    m->prof_node = NULL;
    dp_graph_free(&m->g);
    if (m->cu) { /* an arena with a host copy is on the device (to_device); act, save, mask always are */
        void **arena[3] = {&m->params, &m->grads, &m->bufs}, **host[3] = {&m->hparams, &m->hgrads, &m->hbufs};
        for (int i = 0; i < 3; i++)
            if (*host[i]) {
                m->cu->f.free(m->cu->ctx, *arena[i]);
                *arena[i] = *host[i]; /* freed below */
                *host[i] = NULL;
            }
        void *dev[3] = {m->act, m->save, m->mask};
        for (int i = 0; i < 3; i++)
            if (dev[i])
                m->cu->f.free(m->cu->ctx, dev[i]);
        m->act = m->save = NULL;
        m->mask = NULL;
    }
    free(m->params);
    free(m->grads);
    free(m->bufs);
    free(m->p_off);
    free(m->act);
    free(m->t_off);
    free(m->g_off);
    free(m->z_start);
    free(m->z_list);
    free(m->save);
    free(m->s_off);
    free(m->mask);
    free(m->m_off);
    free(m->eps);
    free(m->fuse);
    free(m->ws);
    memset(m, 0, sizeof *m);
}

static void *zalloc(size_t count, size_t elem, disopt_status *s) {
    if (*s != DISOPT_OK)
        return NULL;
    void *p = calloc(count ? count : 1, elem);
    if (!p)
        *s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory (%zu bytes)", count * elem);
    return p;
}

/* Liveness plan of the tensor gradients. Backward position of node i: T = n_nodes-1-i. Tensor t's gradient
 * lives from its first writer (the loss, T = -1, for the loss's inputs; else the latest consumer, or its
 * producer when nothing consumes it) to its producer's backward, both ends included (a node reads its
 * output's gradient while it writes its inputs'). Largest first, each at the lowest offset free over its
 * whole lifetime. The graph input gets no gradient. */
typedef struct {
    long start, end;
    size_t size, off;
    int t;
} gplan;

static int gplan_by_size(const void *a, const void *b) {
    const gplan *x = a, *y = b;
    if (x->size != y->size)
        return x->size < y->size ? 1 : -1;
    return x->t - y->t;
}

static int gplan_by_off(const void *a, const void *b) {
    const gplan *x = *(const gplan *const *)a, *y = *(const gplan *const *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Offsets for the n items of P with a nonzero size (np of them): largest first, each at the lowest
 * offset that no placed item overlapping its lifetime occupies. off[P[k].t] receives the offsets. */
static disopt_status place(gplan *P, int n, int np, size_t *off_by_t, size_t *total) {
    disopt_status s = DISOPT_OK;
    const gplan **placed = zalloc((size_t)n, sizeof *placed, &s);
    const gplan **conf = zalloc((size_t)n, sizeof *conf, &s);
    if (s == DISOPT_OK) {
        qsort(P, (size_t)n, sizeof *P, gplan_by_size);
        int nplaced = 0;
        *total = 0;
        for (int k = 0; k < np; k++) {
            gplan *q = &P[k];
            int nc = 0;
            for (int j = 0; j < nplaced; j++)
                if (placed[j]->start <= q->end && q->start <= placed[j]->end)
                    conf[nc++] = placed[j];
            qsort((void *)conf, (size_t)nc, sizeof *conf, gplan_by_off);
            size_t off = 0;
            for (int j = 0; j < nc; j++) {
                if (conf[j]->off >= off + q->size)
                    break;
                if (conf[j]->off + conf[j]->size > off)
                    off = conf[j]->off + conf[j]->size;
            }
            q->off = off;
            if (off + q->size > *total)
                *total = off + q->size;
            placed[nplaced++] = q;
            off_by_t[q->t] = off;
        }
    }
    free((void *)conf);
    free((void *)placed);
    return s;
}

/* A net that only runs forward (the frozen teacher): tensor t lives from its producer to its last
 * consumer; the kept tensors (the loss's inputs) to the end. */
static disopt_status plan_forward(dp_net *m, const int *kept, int n_kept) {
    const dp_graph *g = &m->g;
    const long NN = g->n_nodes;
    disopt_status s = DISOPT_OK;
    gplan *P = zalloc((size_t)g->n_tensors, sizeof *P, &s);
    if (s)
        return s;
    for (int t = 0; t < g->n_tensors; t++) {
        const dp_tensor *tt = &g->tensors[t];
        P[t].t = t;
        P[t].start = P[t].end = tt->producer; /* the input: -1 */
        P[t].size = al16((size_t)m->n * (size_t)tt->c * (size_t)tt->h * (size_t)tt->w);
    }
    for (long i = 0; i < NN; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (P[g->nodes[i].in[k]].end < i)
                P[g->nodes[i].in[k]].end = i;
    for (int k = 0; k < n_kept; k++)
        P[kept[k]].end = NN;
    s = place(P, g->n_tensors, g->n_tensors, m->t_off, &m->n_act);
    free(P);
    return s;
}

/* The trained network's activations and tensor gradients, planned together on one timeline: forward node i
 * at i, the loss at NN, the backward of node i at 2NN - i. An activation lives from its producer to its last
 * reader: forward consumers, the loss (its inputs), and the backwards that read it (conv and BN: their
 * input; ReLU / swish: the input, sigmoid and softmax: the output; SE scale and SCSE: every input). Named
 * tensors stay to the end (dp_trainer_tensor). A gradient lives from its first writer (the loss for the
 * loss's inputs, else the latest consumer's backward, or its producer's when nothing consumes it) to its
 * producer's backward and is zeroed when it starts; the graph input gets none. */
static disopt_status plan_train(dp_net *m, const int *roots, int n_roots) {
    const dp_graph *g = &m->g;
    const long NN = g->n_nodes;
    const int nt = g->n_tensors;
    disopt_status s = DISOPT_OK;
    gplan *P = zalloc(2 * (size_t)nt, sizeof *P, &s);
    size_t *offs = zalloc(2 * (size_t)nt, sizeof *offs, &s);
    int *fill = zalloc((size_t)NN + 2, sizeof *fill, &s);
    m->g_off = zalloc((size_t)nt, sizeof *m->g_off, &s);
    m->z_start = zalloc((size_t)NN + 2, sizeof *m->z_start, &s);
    m->z_list = zalloc((size_t)nt, sizeof *m->z_list, &s);
    if (s == DISOPT_OK) {
        gplan *A = P, *G = P + nt;
        for (int t = 0; t < nt; t++) {
            const dp_tensor *tt = &g->tensors[t];
            const size_t size = al16((size_t)m->n * (size_t)tt->c * (size_t)tt->h * (size_t)tt->w);
            A[t].t = t;
            A[t].start = A[t].end = tt->producer; /* the input: -1 */
            A[t].size = size;
            if (tt->name[0])
                A[t].end = 2 * NN + 1;
            /* gradients first in backward positions (node i at NN-1-i), moved onto the timeline below */
            G[t].t = nt + t;
            G[t].start = LONG_MAX;
            G[t].end = tt->producer >= 0 ? NN - 1 - tt->producer : -2;
            G[t].size = size;
        }
        for (long i = 0; i < NN; i++) {
            const dp_node *nd = &g->nodes[i];
            const long T = 2 * NN - i;
            long *rd[3] = {NULL, NULL, NULL};
            for (int k = 0; k < nd->n_in; k++) {
                const int in = nd->in[k];
                if (A[in].end < i)
                    A[in].end = i;
                if (NN - 1 - i < G[in].start)
                    G[in].start = NN - 1 - i;
            }
            switch (nd->op) {
            case DP_OP_CONV:
            case DP_OP_BN:
                rd[0] = &A[nd->in[0]].end;
                break;
            case DP_OP_ACT:
                rd[0] = nd->act == DP_ACT_SIGMOID ? &A[nd->out].end : &A[nd->in[0]].end;
                break;
            case DP_OP_SOFTMAX:
                rd[0] = &A[nd->out].end;
                break;
            case DP_OP_SCALE_CH:
            case DP_OP_SCSE:
                for (int k = 0; k < nd->n_in && k < 3; k++)
                    rd[k] = &A[nd->in[k]].end;
                break;
            default:
                break;
            }
            for (int k = 0; k < 3; k++)
                if (rd[k] && *rd[k] < T)
                    *rd[k] = T;
        }
        for (int r = 0; r < n_roots; r++) {
            if (A[roots[r]].end < NN)
                A[roots[r]].end = NN;
            G[roots[r]].start = -1;
        }
        int np = nt;
        for (int t = 0; t < nt; t++) {
            if (t == g->input || G[t].end < -1) {
                G[t].size = 0;
                continue;
            }
            if (G[t].start > G[t].end)
                G[t].start = G[t].end; /* nothing consumes it: zeroed at its producer */
            np++;
            m->z_start[G[t].start + 2]++;
        }
        for (long T = 0; T <= NN; T++)
            m->z_start[T + 1] += m->z_start[T];
        for (int t = 0; t < nt; t++)
            if (G[t].size) {
                const long b = G[t].start + 1;
                m->z_list[m->z_start[b] + fill[b]++] = t;
                G[t].start += NN + 1;
                G[t].end += NN + 1;
            }
        s = place(P, 2 * nt, np, offs, &m->n_act);
        for (int t = 0; s == DISOPT_OK && t < nt; t++) {
            m->t_off[t] = offs[t];
            m->g_off[t] = offs[nt + t];
        }
    }
    free(fill);
    free(offs);
    free(P);
    return s;
}

/* device memory of a CUDA net, zeroed (NULL for 0 bytes) */
static void *dzalloc(dp_tr_cu *cu, size_t bytes, disopt_status *s) {
    void *p = NULL;
    if (*s != DISOPT_OK || bytes == 0)
        return NULL;
    *s = cu->f.alloc(cu->ctx, bytes, &p);
    if (*s == DISOPT_OK)
        *s = cu->f.zero(cu->ctx, p, bytes);
    return p;
}

/* a host arena -> a new device arena of the same bytes; the host one stays as the copy (*host) */
static disopt_status to_device(dp_tr_cu *cu, void **arena, void **host, size_t bytes) {
    disopt_status s = DISOPT_OK;
    void *d = dzalloc(cu, bytes, &s);
    if (s == DISOPT_OK && bytes)
        s = cu->f.upload(cu->ctx, d, *arena, bytes);
    if (s != DISOPT_OK) {
        if (d)
            cu->f.free(cu->ctx, d);
        return s;
    }
    *host = *arena;
    *arena = d;
    return DISOPT_OK;
}

/* The BN + activation pairs a CUDA net runs as one op (m->fuse; train_ops.h's dp_cu_tr_bn_act_*, the same bits as
 * the two ops): node i a BN, node i + 1 a ReLU, swish or identity activation of its output, which nothing else
 * reads and which is none of keep[0..nkeep) (the loss's inputs: their gradient comes from the loss too; the
 * teacher's outputs), and x, y, z pairwise the same arena range or disjoint ones. fuse[i] = 2 (only with inplace,
 * unless cfg.cuda_fuse_no_inplace): the BN input's gradient shares dz's memory (written in place, not zeroed first). */
static size_t count_(const dp_net *m, int t);
static disopt_status find_fusions(dp_net *m, const int *keep, int nkeep, int inplace) {
    const dp_graph *g = &m->g;
    int *uses = calloc((size_t)g->n_tensors, sizeof *uses);
    m->fuse = calloc((size_t)g->n_nodes + 1, 1);
    if (!uses || !m->fuse) {
        free(uses);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory");
    }
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            uses[g->nodes[i].in[k]]++;
    for (int k = 0; k < nkeep; k++)
        uses[keep[k]] += 1000; /* never fused */
    for (int i = 0; i + 1 < g->n_nodes; i++) {
        const dp_node *b = &g->nodes[i], *a = &g->nodes[i + 1];
        if (b->op != DP_OP_BN || a->op != DP_OP_ACT || a->n_in != 1 || a->in[0] != b->out || uses[b->out] != 1 ||
            (a->act != DP_ACT_NONE && a->act != DP_ACT_RELU && a->act != DP_ACT_SWISH))
            continue;
        /* the fused forward reads x and writes y and z element by element: each pair of them the same range or
         * disjoint (the plan may give z the range of x, which dies at the BN, e.g. in the teacher's) */
        const size_t x0 = m->t_off[b->in[0]], y0 = m->t_off[b->out], z0 = m->t_off[a->out], len = count_(m, b->out);
        if ((y0 != z0 && y0 < z0 + len && z0 < y0 + len) || (x0 != z0 && x0 < z0 + len && z0 < x0 + len) ||
            (x0 != y0 && x0 < y0 + len && y0 < x0 + len))
            continue; /* partly overlapping */
        int mode = 1;
        if (m->g_off) { /* trained: the plan lets dz die at node i + 1's backward, where the fused backward reads it
                         * at node i's (y is not read there: recomputed from x): no gradient zeroed there may share
                         * its memory, except the BN input's own gradient dx on exactly dz's range (the plan's usual
                         * reuse): then dx is not zeroed, and the fused backward writes it element by element in
                         * place of dz (mode 2, dx_fresh) */
            const long T = (long)g->n_nodes - 1 - i;
            const size_t gz0 = m->g_off[a->out];
            int clash = 0;
            for (int k = m->z_start[T + 1]; k < m->z_start[T + 2]; k++) {
                const int t = m->z_list[k];
                const size_t r0 = m->g_off[t], rl = count_(m, t);
                if (!(r0 < gz0 + len && gz0 < r0 + rl))
                    continue;
                if (inplace && t == b->in[0] && r0 == gz0 && rl == len)
                    mode = 2;
                else
                    clash = 1;
            }
            if (clash)
                continue;
        }
        m->fuse[i] = (uint8_t)mode;
    }
    free(uses);
    return DISOPT_OK;
}

/* fuse: find the fused BN + activation pairs (CUDA nets; 2: with the in-place mode) */
static disopt_status net_init(dp_net *m, const disopt_model_config *cfg, int n, int h, int w, int trained, int f64,
                              dp_pool *pool, dp_tr_cu *cu, int fuse, const char *weights) {
    disopt_status s = DISOPT_OK;
    memset(m, 0, sizeof *m);
    DP_TRY(dp_graph_build_train(cfg, &m->g));
    dp_graph *g = &m->g;
    m->n = n;
    m->pool = pool;
    m->esz = f64 ? sizeof(double) : sizeof(float);
    s = dp_graph_shapes(g, h, w);
    if (s != DISOPT_OK)
        return s;
    /* parameter and buffer arenas */
    m->p_off = zalloc((size_t)g->n_params, sizeof *m->p_off, &s);
    if (s)
        return s;
    for (int i = 0; i < g->n_params; i++) {
        dp_param *p = &g->params[i];
        m->p_off[i] = SIZE_MAX;
        if (trainable_kind(p->kind)) {
            m->p_off[i] = m->n_params;
            m->n_params += al16((size_t)p->numel);
        } else if (p->kind == DISOPT_KEY_BN_MEAN || p->kind == DISOPT_KEY_BN_VAR) {
            m->p_off[i] = m->n_bufs;
            m->n_bufs += al16((size_t)p->numel);
        }
    }
    m->params = zalloc(m->n_params, m->esz, &s);
    m->bufs = zalloc(m->n_bufs, m->esz, &s);
    if (trained)
        m->grads = zalloc(m->n_params, m->esz, &s);
    if (s)
        return s;
    /* float32 staging in the graph's params (dp_graph_free frees it), then into the arenas */
    for (int i = 0; s == DISOPT_OK && i < g->n_params; i++) {
        dp_param *p = &g->params[i];
        if (m->p_off[i] == SIZE_MAX)
            continue;
        p->data = zalloc((size_t)p->numel, sizeof(float), &s);
        p->loaded = 1;
    }
    if (s)
        return s;
    if (weights)
        DP_TRY(load_weights(g, weights));
    else
        init_dwgen(g);
    for (int i = 0; i < g->n_params; i++) {
        dp_param *p = &g->params[i];
        if (m->p_off[i] == SIZE_MAX)
            continue;
        char *arena = (char *)(trainable_kind(p->kind) ? m->params : m->bufs) + m->p_off[i] * m->esz;
        if (f64)
            for (int64_t j = 0; j < p->numel; j++)
                ((double *)(void *)arena)[j] = (double)p->data[j];
        else
            memcpy(arena, p->data, (size_t)p->numel * sizeof(float));
        free(p->data);
        p->data = NULL;
    }
    /* activations: every tensor kept */
    m->t_off = zalloc((size_t)g->n_tensors, sizeof *m->t_off, &s);
    m->s_off = zalloc((size_t)g->n_nodes, sizeof *m->s_off, &s);
    m->m_off = zalloc((size_t)g->n_nodes, sizeof *m->m_off, &s);
    m->eps = zalloc((size_t)g->n_nodes, sizeof *m->eps, &s);
    if (s)
        return s;
    for (int i = 0; i < g->n_tensors; i++) {
        const dp_tensor *t = &g->tensors[i];
        m->t_off[i] = m->n_act;
        m->n_act += al16((size_t)n * (size_t)t->c * (size_t)t->h * (size_t)t->w);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        dp_node *nd = &g->nodes[i];
        const dp_tensor *a = &g->tensors[nd->in[0]];
        if (nd->op == DP_OP_BN) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.6g", (double)nd->bn_eps);
            m->eps[i] = strtod(buf, NULL);
            m->s_off[i] = m->n_save; /* mean, 1/std; CUDA nets that fuse: alpha, shift too (dp_cu_tr_bn_act_*) */
            m->n_save += al16((cu && fuse ? 4 : 2) * (size_t)a->c);
        } else if (nd->op == DP_OP_DROPOUT) {
            m->m_off[i] = m->n_mask;
            m->n_mask += al16((size_t)n * (size_t)a->c * (size_t)a->h * (size_t)a->w);
        } else if (nd->op == DP_OP_DROP_CONNECT) {
            m->m_off[i] = m->n_mask;
            m->n_mask += al16((size_t)n);
        } else if (nd->op == DP_OP_CONV) {
            size_t e = dp_tr_conv_ws_elems_mt(&nd->conv, a->h, a->w, pool ? dp_pool_size(pool) : 1);
            if (e > m->ws_elems)
                m->ws_elems = e;
        }
    }
    if (!trained && s == DISOPT_OK) {
        /* the teacher's outputs the stage-2 loss reads */
        int kept[DP_STAGE2_NFEAT + 1], nk = 0;
        for (int k = 0; k <= DP_STAGE2_NFEAT; k++) {
            int ti = dp_graph_find_tensor(g, teacher_outs[k]);
            if (ti < 0)
                return dp_error(DISOPT_ERR_INTERNAL, "trainer: tensor %s missing", teacher_outs[k]);
            kept[nk++] = ti;
        }
        DP_TRY(plan_forward(m, kept, nk));
        if (fuse)
            DP_TRY(find_fusions(m, kept, nk, fuse == 2));
    }
    if (trained && s == DISOPT_OK) {
        /* the loss's inputs: the logits (and the student's feature pairs) */
        int roots[6], nr = 0;
        static const char *names[6] = {"logits", "logit_sar", "logit_rgb", "p4", "p5", "decoder_rgb"};
        for (int k = 0; k < (g->out_sar >= 0 ? 6 : 1); k++) {
            int ti = dp_graph_find_tensor(g, names[k]);
            if (ti < 0)
                return dp_error(DISOPT_ERR_INTERNAL, "trainer: tensor %s missing", names[k]);
            roots[nr++] = ti;
        }
        m->n_unplanned = 2 * m->n_act;
        DP_TRY(plan_train(m, roots, nr));
        if (fuse)
            DP_TRY(find_fusions(m, roots, nr, fuse == 2));
    }
    if (cu) { /* on the device: the weights moved there (host copies kept), the rest made there; the
               * training context owns its convolution workspace */
        m->cu = cu;
        m->ws_elems = 0;
        if (s == DISOPT_OK)
            s = to_device(cu, &m->params, &m->hparams, m->n_params * m->esz);
        if (s == DISOPT_OK)
            s = to_device(cu, &m->bufs, &m->hbufs, m->n_bufs * m->esz);
        if (s == DISOPT_OK && trained)
            s = to_device(cu, &m->grads, &m->hgrads, m->n_params * m->esz);
        m->act = dzalloc(cu, m->n_act * m->esz, &s);
        m->save = dzalloc(cu, m->n_save * m->esz, &s);
        m->mask = dzalloc(cu, m->n_mask, &s);
        if (trained)
            m->gact = m->act;
        return s;
    }
    m->act = zalloc(m->n_act, m->esz, &s);
    if (trained)
        m->gact = m->act; /* one arena (plan_train) */
    m->save = zalloc(m->n_save, m->esz, &s);
    m->mask = zalloc(m->n_mask, 1, &s);
    m->ws = zalloc(m->ws_elems, m->esz, &s);
    return s;
}

static int find_t(const dp_net *m, const char *name) { return dp_graph_find_tensor(&m->g, name); }
static size_t hw_(const dp_net *m, int t) { return (size_t)m->g.tensors[t].h * (size_t)m->g.tensors[t].w; }
static size_t count_(const dp_net *m, int t) { return (size_t)m->n * (size_t)m->g.tensors[t].c * hw_(m, t); }

/* ---------------------------------------------------------------- the teacher in the inference engine */

/* the state dict's header (arch, variant) and one parameter or buffer of it: BN's num_batches_tracked as int64
 * `count`, every other kind as float32 `data` (skipped when NULL); shared by dwgen_teacher_image and
 * dp_trainer_add_state_dict */
static disopt_status st_header(disopt_st_writer *w, const char *arch, int variant) {
    char v[16];
    snprintf(v, sizeof v, "b%d", variant);
    DP_TRY(disopt_st_writer_set_metadata(w, "arch", arch));
    return disopt_st_writer_set_metadata(w, "variant", v);
}
static disopt_status st_param(disopt_st_writer *w, const dp_param *p, const float *data, float count) {
    if (p->kind == DISOPT_KEY_BN_COUNT)
        return disopt_st_writer_add(w, p->key, DISOPT_DTYPE_I64, 0, p->shape, &count);
    return data ? disopt_st_writer_add(w, p->key, DISOPT_DTYPE_F32, p->ndim, p->shape, data) : DISOPT_OK;
}

/* a safetensors image of the dwgen-1 teacher (no teacher weights given), for the engine's loader: the values
 * net_init gives the trainer's own teacher, under the state dict's names */
static disopt_status dwgen_teacher_image(const disopt_model_config *tc, void **buf, size_t *size) {
    dp_graph g;
    DP_TRY(dp_graph_build_train(tc, &g));
    disopt_status s = DISOPT_OK;
    for (int i = 0; s == DISOPT_OK && i < g.n_params; i++) {
        dp_param *p = &g.params[i];
        if (trainable_kind(p->kind) || p->kind == DISOPT_KEY_BN_MEAN || p->kind == DISOPT_KEY_BN_VAR)
            p->data = zalloc((size_t)p->numel, sizeof(float), &s); /* dp_graph_free frees them */
    }
    disopt_st_writer *w = NULL;
    if (s == DISOPT_OK) {
        init_dwgen(&g);
        s = disopt_st_writer_create(&w);
    }
    if (s == DISOPT_OK)
        s = st_header(w, "teacher", tc->variant);
    for (int i = 0; s == DISOPT_OK && i < g.n_params; i++)
        s = st_param(w, &g.params[i], g.params[i].data, 0.0f);
    if (s == DISOPT_OK)
        s = disopt_st_writer_save_memory(w, buf, size);
    disopt_st_writer_destroy(w);
    dp_graph_free(&g);
    return s;
}

/* the engine on the trainer's backend (CUDA: its device, the precision of cfg.cuda_math), the teacher loaded
 * into it, and the trainer's buffers for its outputs */
static disopt_status teacher_engine_init(dp_trainer *t, const disopt_model_config *tc, const char *weights) {
    const dp_trainer_config *cfg = &t->cfg;
    disopt_engine_options eo;
    disopt_engine_options_init(&eo);
    if (t->cu) {
        eo.backend = DISOPT_BACKEND_CUDA;
        eo.device = cfg->cuda_device;
        eo.precision = cfg->cuda_math == DP_TRAINER_MATH_BF16   ? DISOPT_PRECISION_BF16
                       : cfg->cuda_math == DP_TRAINER_MATH_TF32 ? DISOPT_PRECISION_TF32
                                                                : DISOPT_PRECISION_FP32;
    } else {
        eo.num_threads = cfg->nthreads > 1 ? cfg->nthreads : 1;
    }
    DP_TRY(disopt_engine_create(&eo, &t->teng));
    disopt_status s;
    if (weights) {
        s = disopt_model_load(t->teng, weights, &t->tmodel);
    } else {
        void *img = NULL;
        size_t sz = 0;
        s = dwgen_teacher_image(tc, &img, &sz);
        if (s == DISOPT_OK)
            s = disopt_model_load_memory(t->teng, img, sz, &t->tmodel);
        disopt_free(img);
    }
    disopt_model_info info;
    if (s == DISOPT_OK)
        s = disopt_model_get_info(t->tmodel, &info);
    if (s == DISOPT_OK && (info.config.arch != DISOPT_ARCH_TEACHER || info.config.variant != tc->variant ||
                           info.config.in_channels != tc->in_channels || info.config.num_classes != tc->num_classes))
        s = dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s is %s, the student needs teacher-b%d (%d bands, %d classes)",
                     weights ? weights : "(dwgen-1)", info.name, tc->variant, tc->in_channels, tc->num_classes);
    for (int k = 0; s == DISOPT_OK && k <= DP_STAGE2_NFEAT; k++) {
        int *sh = t->tshape[k];
        if (k == 0) {
            sh[0] = cfg->n, sh[1] = tc->num_classes, sh[2] = cfg->h, sh[3] = cfg->w;
        } else {
            s = disopt_model_tap_shape(t->tmodel, teacher_outs[k], cfg->n, cfg->h, cfg->w, sh);
            if (s != DISOPT_OK)
                break;
        }
        t->tcount[k] = (size_t)sh[0] * (size_t)sh[1] * (size_t)sh[2] * (size_t)sh[3];
        t->tout[k] = t->cu ? dzalloc(t->cu, t->tcount[k] * sizeof(float), &s)
                           : zalloc(t->tcount[k], sizeof(float), &s);
    }
    return s;
}

/* the teacher's forward through the engine: its four outputs into tout. Queued on the engine's stream, so that
 * the student's forward (the trainer's stream) runs beside it, unless cfg.teacher_serial or profiling (then it
 * is waited for here); teacher_engine_wait before the loss reads tout. */
static disopt_status teacher_engine_forward(dp_trainer *t, const float *x_teacher) {
    const double t0 = t->net.prof ? dp_now_s() : 0.0;
    const int serial = t->cfg.teacher_serial || t->net.prof;
    if (t->cu) /* the last step's kernels that read tout are done before the engine (its own stream) writes */
        DP_TRY(t->cu->f.sync(t->cu->ctx));
    disopt_tap taps[DP_STAGE2_NFEAT];
    for (int k = 0; k < DP_STAGE2_NFEAT; k++) {
        taps[k].name = teacher_outs[k + 1];
        taps[k].data = t->tout[k + 1];
    }
    disopt_outputs o;
    memset(&o, 0, sizeof o);
    o.fused_logits = t->tout[0];
    o.taps = taps;
    o.num_taps = DP_STAGE2_NFEAT;
    disopt_status s = dp_model_infer_ex(t->tmodel, x_teacher, t->cfg.n, t->cfg.model.in_channels, t->cfg.h, t->cfg.w,
                                        &o, DP_INFER_DEVICE_OUT | (t->resident ? DP_INFER_DEVICE_IN : 0) |
                                                (serial ? 0 : DP_INFER_ASYNC));
    if (s != DISOPT_OK)
        return dp_error_prefix(s, "teacher");
    if (t->net.prof)
        t->prof[DP_TR_PROF_TEACHER] += dp_now_s() - t0;
    return DISOPT_OK;
}

static disopt_status teacher_engine_wait(dp_trainer *t) {
    disopt_status s = dp_model_infer_wait(t->tmodel);
    return s == DISOPT_OK ? s : dp_error_prefix(s, "teacher");
}

/* ---------------------------------------------------------------- profiling */
static const char *const tr_prof_names[DP_TR_PROF_N] = {
    "teacher forward", "conv depthwise fwd", "conv 1x1 fwd", "conv kxk fwd", "conv on 1x1 maps fwd",
    "batch norm fwd", "activation fwd", "other fwd", "conv depthwise bwd", "conv 1x1 bwd", "conv kxk bwd",
    "conv on 1x1 maps bwd", "batch norm bwd", "activation bwd", "other bwd", "loss", "optimizer"};

static int tr_prof_category(const dp_net *m, int i, int bwd) {
    if (m->teacher)
        return DP_TR_PROF_TEACHER;
    const dp_node *nd = &m->g.nodes[i];
    const int base = bwd ? DP_TR_PROF_CONV_DW_B : DP_TR_PROF_CONV_DW_F;
    switch (nd->op) {
    case DP_OP_CONV: {
        const dp_conv_params *c = &nd->conv;
        const dp_tensor *o = &m->g.tensors[nd->out];
        if (o->h == 1 && o->w == 1)
            return base + 3;
        if (c->groups > 1)
            return base;
        return base + (c->kh == 1 && c->kw == 1 ? 1 : 2);
    }
    case DP_OP_BN:
        return base + 4;
    case DP_OP_ACT:
        return base + 5;
    default:
        return base + 6;
    }
}

void dp_trainer_set_profiling(dp_trainer *t, int on) {
    if (!t)
        return;
    memset(t->prof, 0, sizeof t->prof);
    t->net.prof = t->teacher.prof = on ? t->prof : NULL;
    free(t->net.prof_node);
    t->net.prof_node = on ? calloc((size_t)t->net.g.n_nodes * 2, sizeof(double)) : NULL; /* NULL: no per-node list */
}

/* the student's slowest nodes (forward and backward apart) after the categories: at most PROF_TOP lines */
#define PROF_TOP 24
static size_t prof_top_nodes(const dp_net *m, char *buf, size_t len) {
    size_t o = 0;
    if (!m->prof_node || !len)
        return 0;
    const size_t ne = (size_t)m->g.n_nodes * 2;
    int taken[PROF_TOP];
    int nt = 0;
    o += (size_t)snprintf(buf + o, len - o, "  slowest nodes of the student (op, input -> output, ms):\n");
    while (nt < PROF_TOP && o < len) {
        size_t best = ne;
        for (size_t e = 0; e < ne; e++) {
            int used = 0;
            for (int k = 0; k < nt; k++)
                used |= (size_t)taken[k] == e;
            if (!used && m->prof_node[e] > 0 && (best == ne || m->prof_node[e] > m->prof_node[best]))
                best = e;
        }
        if (best == ne)
            break;
        taken[nt++] = (int)best;
        const dp_node *nd = &m->g.nodes[best / 2];
        const dp_tensor *in = nd->n_in > 0 ? &m->g.tensors[nd->in[0]] : NULL, *out = &m->g.tensors[nd->out];
        char what[96];
        if (nd->op == DP_OP_CONV)
            snprintf(what, sizeof what, "conv %dx%d s%d d%d g%d", nd->conv.kh, nd->conv.kw, nd->conv.sh, nd->conv.dh,
                     nd->conv.groups);
        else {
            static const char *const names[] = {"conv", "bn", "act", "gap", "scale_ch", "scse", "add", "concat",
                                                "upsample", "broadcast", "softmax"};
            const int op = (int)nd->op;
            if (op >= 0 && op < (int)(sizeof names / sizeof names[0]))
                snprintf(what, sizeof what, "%s", names[op]);
            else
                snprintf(what, sizeof what, "op %d", op);
        }
        o += (size_t)snprintf(buf + o, len - o, "    %s %-24s %4dx%-4dx%-4d -> %4dx%-4dx%-4d %8.3f\n",
                              best % 2 ? "bwd" : "fwd", what, in ? in->c : 0, in ? in->h : 0, in ? in->w : 0, out->c,
                              out->h, out->w, 1e3 * m->prof_node[best]);
    }
    return o < len ? o : len;
}

void dp_trainer_profile_report(dp_trainer *t, char *buf, size_t len) {
    if (!t || !buf || !len)
        return;
    double total = 0;
    for (int i = 0; i < DP_TR_PROF_N; i++)
        total += t->prof[i];
    size_t o = 0;
    for (int i = 0; i < DP_TR_PROF_N && o < len; i++)
        if (t->prof[i] > 0)
            o += (size_t)snprintf(buf + o, len - o, "  %-22s %9.2f ms %5.1f%%\n", tr_prof_names[i], 1e3 * t->prof[i],
                                  total > 0 ? 100.0 * t->prof[i] / total : 0.0);
    if (o < len)
        o += (size_t)snprintf(buf + o, len - o, "  %-22s %9.2f ms\n", "total", 1e3 * total);
    if (o < len)
        prof_top_nodes(&t->net, buf + o, len - o);
    memset(t->prof, 0, sizeof t->prof);
    if (t->net.prof_node)
        memset(t->net.prof_node, 0, (size_t)t->net.g.n_nodes * 2 * sizeof(double));
}

/* the typed half: forward, backward, the loss (trainer.inc's macros) */
static disopt_status tr_input_f32(float *d, const float *x, size_t n) {
    memcpy(d, x, n * sizeof *d);
    return DISOPT_OK;
}
static disopt_status tr_input_f64(double *d, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = (double)x[i];
    return DISOPT_OK;
}
#define TR_CTX(m) ((m)->pool)
#define TR_SYNC(m) DISOPT_OK
#define TR_ZERO(m, p, bytes) (memset((p), 0, (bytes)), DISOPT_OK)
#define TR_COPY(m, d, src, bytes) (memcpy((d), (src), (bytes)), DISOPT_OK)
#define TR_DROPOUT_MASK(m, rng, p, n, mk) dp_tr_dropout_mask(rng, p, n, mk)
#define TR_DC_MASK(m, rng, p, n, mk) dp_tr_drop_connect_mask(rng, p, n, mk)
#define TR_FUSE 0 /* the CPU runs every node on its own */
#define TR_BN_ACT_FWD_TRAIN(m, ...) DISOPT_ERR_INTERNAL
#define TR_BN_ACT_FWD_EVAL(m, ...) DISOPT_ERR_INTERNAL
#define TR_BN_ACT_BWD_TRAIN(m, ...) DISOPT_ERR_INTERNAL

#define TR_T float
#define TR_TEACHER_ENGINE 1
#define TR_S f32
#define TR_L f32
#define TR_INPUT(m, d, x, n) tr_input_f32(d, x, n)
#define TR_INPUT_DEV(m, d, x, n) tr_input_f32(d, x, n)
#define TR_LOSS1(t, ...) dp_loss_stage1_f32(__VA_ARGS__)
#define TR_LOSS2(t, ...) dp_loss_stage2_f32(__VA_ARGS__)
#include "trainer.inc"
#undef TR_T /* (the CPU's memory macros stay for the double instantiation) */
#undef TR_TEACHER_ENGINE
#undef TR_S
#undef TR_L
#undef TR_INPUT
#undef TR_INPUT_DEV
#undef TR_LOSS1
#undef TR_LOSS2

#define TR_T double
#define TR_TEACHER_ENGINE 0
#define TR_S f64
#define TR_L f64
#define TR_INPUT(m, d, x, n) tr_input_f64(d, x, n)
#define TR_INPUT_DEV(m, d, x, n) tr_input_f64(d, x, n)
#define TR_LOSS1(t, ...) dp_loss_stage1_f64(__VA_ARGS__)
#define TR_LOSS2(t, ...) dp_loss_stage2_f64(__VA_ARGS__)
#include "trainer.inc"
#include "trainer_undef.inc"

/* CUDA: the loss's targets and mask in device memory: *td, *vd (NULL without a mask) = the resident batch's, already
 * there, or the host ones uploaded into target_d / valid_d */
static disopt_status tr_device_labels(dp_trainer *t, dp_lshape sh, const int32_t *target, const uint8_t *valid,
                                      const int32_t **td, const uint8_t **vd) {
    if (t->resident) { /* (by, bv) */
        *td = target;
        *vd = valid;
        return DISOPT_OK;
    }
    const size_t px = (size_t)sh.n * (size_t)sh.h * (size_t)sh.w;
    *td = t->target_d;
    *vd = valid ? t->valid_d : NULL;
    DP_TRY(t->cu->f.upload(t->cu->ctx, t->target_d, target, px * sizeof *target));
    return valid ? t->cu->f.upload(t->cu->ctx, t->valid_d, valid, px) : DISOPT_OK;
}
static disopt_status tr_loss1_cu(dp_trainer *t, dp_lshape sh, const float *logits, const int32_t *target,
                                 const uint8_t *valid, dp_loss_weights w, dp_stage1_terms *terms, float *glogits) {
    const int32_t *td;
    const uint8_t *vd;
    DP_TRY(tr_device_labels(t, sh, target, valid, &td, &vd));
    return t->cu->f.loss_stage1(t->cu->ctx, sh, logits, td, vd, w, terms, glogits);
}
static disopt_status tr_loss2_cu(dp_trainer *t, const dp_stage2_in_f32 *in, dp_stage2_terms *terms,
                                 const dp_stage2_grad_f32 *grad) {
    dp_stage2_in_f32 d = *in;
    DP_TRY(tr_device_labels(t, in->shape, in->target, in->valid, &d.target, &d.valid));
    return t->cu->f.loss_stage2(t->cu->ctx, &d, terms, grad);
}
#define TR_CTX(m) ((m)->cu)
#define TR_SYNC(m) (m)->cu->f.sync((m)->cu->ctx)
#define TR_ZERO(m, p, bytes) (m)->cu->f.zero((m)->cu->ctx, (p), (bytes))
#define TR_COPY(m, d, src, bytes) (m)->cu->f.copy((m)->cu->ctx, (d), (src), (bytes))
#define TR_DROPOUT_MASK(m, rng, p, n, mk) (m)->cu->f.dropout_mask((m)->cu->ctx, rng, p, n, mk)
#define TR_DC_MASK(m, rng, p, n, mk) (m)->cu->f.drop_connect_mask((m)->cu->ctx, rng, p, n, mk)
#define TR_FUSE 1
#define TR_BN_ACT_FWD_TRAIN(m, ...) (m)->cu->f.bn_act_fwd_train((m)->cu->ctx, __VA_ARGS__)
#define TR_BN_ACT_FWD_EVAL(m, ...) (m)->cu->f.bn_act_fwd_eval((m)->cu->ctx, __VA_ARGS__)
#define TR_BN_ACT_BWD_TRAIN(m, ...) (m)->cu->f.bn_act_bwd_train((m)->cu->ctx, __VA_ARGS__)
#define TR_T float
#define TR_TEACHER_ENGINE 1
#define TR_S cu
#define TR_L f32
#define TR_INPUT(m, d, x, n) (m)->cu->f.upload((m)->cu->ctx, (d), (x), (n) * sizeof(float))
#define TR_INPUT_DEV(m, d, x, n) (m)->cu->f.copy((m)->cu->ctx, (d), (x), (n) * sizeof(float))
#define TR_LOSS1(t, ...) tr_loss1_cu(t, __VA_ARGS__)
#define TR_LOSS2(t, ...) tr_loss2_cu(t, __VA_ARGS__)
#include "trainer.inc"
#include "trainer_undef.inc"

/* ---------------------------------------------------------------- trainer */
disopt_status dp_trainer_create(const dp_trainer_config *cfg, const char *weights, const char *teacher_weights,
                                dp_trainer **out) {
    if (!cfg || !out)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    *out = NULL;
    if (cfg->n < 1 || cfg->h < 1 || cfg->w < 1)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: batch %d x %d x %d", cfg->n, cfg->h, cfg->w);
    dp_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory");
    t->cfg = *cfg;
    t->rng = dp_rng_make(cfg->seed);
    t->stage = cfg->model.arch == DISOPT_ARCH_STUDENT ? 2 : 1;
    disopt_status s = DISOPT_OK;
    if (cfg->cuda && cfg->f64)
        s = dp_error(DISOPT_ERR_UNSUPPORTED, "trainer: CUDA trains in float32 (f64 is the CPU's reference mode)");
    if (s == DISOPT_OK && (cfg->cuda_math < DP_TRAINER_MATH_FP32 || cfg->cuda_math > DP_TRAINER_MATH_BF16 ||
                           (cfg->cuda_math != DP_TRAINER_MATH_FP32 && !cfg->cuda)))
        s = dp_error(DISOPT_ERR_UNSUPPORTED, "trainer: math mode %d (TF32 and BF16 are for CUDA)", cfg->cuda_math);
    if (s == DISOPT_OK && cfg->cuda)
        s = dp_tr_cu_open(cfg->cuda_device, &t->cu);
    if (s == DISOPT_OK && cfg->cuda && cfg->cuda_math != DP_TRAINER_MATH_FP32)
        s = t->cu->f.set_math(t->cu->ctx, (int)cfg->cuda_math);
    if (s == DISOPT_OK && cfg->nthreads > 1 && !cfg->cuda)
        s = dp_pool_create(cfg->nthreads, &t->pool);
    /* BN + activation pairs as one op (find_fusions), 2: also where dx takes dz's memory */
    const int fuse = cfg->cuda && !cfg->cuda_unfused ? (cfg->cuda_fuse_no_inplace ? 1 : 2) : 0;
    if (s == DISOPT_OK)
        s = net_init(&t->net, &cfg->model, cfg->n, cfg->h, cfg->w, 1, cfg->f64, t->pool, t->cu, fuse, weights);
    if (s == DISOPT_OK && (cfg->teacher_engine < DP_TRAINER_TEACHER_AUTO || cfg->teacher_engine > DP_TRAINER_TEACHER_ENGINE ||
                           (cfg->teacher_engine == DP_TRAINER_TEACHER_ENGINE && cfg->f64)))
        s = dp_error(DISOPT_ERR_UNSUPPORTED, "trainer: teacher mode %d (the engine's teacher is for float32 runs)",
                     cfg->teacher_engine);
    if (s == DISOPT_OK && t->stage == 2) {
        disopt_model_config tc = cfg->model;
        tc.arch = DISOPT_ARCH_TEACHER;
        const int engine = cfg->teacher_engine == DP_TRAINER_TEACHER_ENGINE ||
                           (cfg->teacher_engine == DP_TRAINER_TEACHER_AUTO && cfg->cuda &&
                            cfg->cuda_math != DP_TRAINER_MATH_FP32);
        if (engine)
            s = teacher_engine_init(t, &tc, teacher_weights);
        else
            s = net_init(&t->teacher, &tc, cfg->n, cfg->h, cfg->w, 0, cfg->f64, t->pool, t->cu, fuse, teacher_weights);
        t->teacher.teacher = 1;
        if (s != DISOPT_OK)
            s = dp_error_prefix(s, "teacher");
    }
    /* optimizer segments: the trainable parameters the forward pass uses */
    if (s == DISOPT_OK) {
        const dp_graph *g = &t->net.g;
        t->seg = calloc((size_t)g->n_params + 1, sizeof *t->seg);
        if (!t->seg)
            s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory");
        for (int i = 0; s == DISOPT_OK && i < g->n_params; i++) {
            const dp_param *p = &g->params[i];
            if (!trainable_kind(p->kind) || !p->used)
                continue;
            dp_optim_segment *sg = &t->seg[t->n_seg++];
            sg->offset = t->net.p_off[i];
            sg->count = (size_t)p->numel;
            sg->decay = 1; /* one parameter group: every parameter decayed (optim.h) */
        }
    }
    if (s == DISOPT_OK && t->cu) { /* the optimizer state and the loss's labels on the device */
        s = dp_optim_validate(&cfg->optim, t->net.n_params, t->seg, t->n_seg);
        const int ns = dp_optim_state_count(&cfg->optim);
        const size_t sb = (size_t)(ns > 0 ? ns : 0) * t->net.n_params * sizeof(float);
        const size_t px = (size_t)cfg->n * (size_t)cfg->h * (size_t)cfg->w;
        t->state_d = dzalloc(t->cu, sb, &s);
        t->state_h = zalloc(sb / sizeof(float), sizeof(float), &s);
        t->target_d = dzalloc(t->cu, px * sizeof(int32_t), &s);
        t->valid_d = dzalloc(t->cu, px, &s);
    } else if (s == DISOPT_OK && !cfg->f64) {
        s = dp_optim_create(&cfg->optim, t->net.n_params, t->seg, t->n_seg, &t->opt);
    }
    if (s == DISOPT_OK && cfg->f64) {
        s = dp_optim_validate(&cfg->optim, t->net.n_params, t->seg, t->n_seg);
        int ns = dp_optim_state_count(&cfg->optim);
        if (s == DISOPT_OK && ns > 0)
            t->state64 = zalloc((size_t)ns * t->net.n_params, sizeof(double), &s);
    }
    if (s != DISOPT_OK) {
        dp_trainer_destroy(t);
        return s;
    }
    *out = t;
    return DISOPT_OK;
}

void dp_trainer_destroy(dp_trainer *t) {
    if (!t)
        return;
    net_free(&t->net);
    net_free(&t->teacher);
    for (int k = 0; k <= DP_STAGE2_NFEAT; k++) {
        if (t->cu && t->tout[k])
            t->cu->f.free(t->cu->ctx, t->tout[k]);
        else
            free(t->tout[k]);
    }
    if (t->cu) {
        void *dev[4] = {t->bx, t->bxt, t->by, t->bv};
        for (int i = 0; i < 4; i++)
            if (dev[i])
                t->cu->f.free(t->cu->ctx, dev[i]);
    } else {
        free(t->bx);
        free(t->bxt);
        free(t->by);
        free(t->bv);
    }
    disopt_model_destroy(t->tmodel);
    disopt_engine_destroy(t->teng);
    if (t->cu) {
        void *dev[3] = {t->state_d, t->target_d, t->valid_d};
        for (int i = 0; i < 3; i++)
            if (dev[i])
                t->cu->f.free(t->cu->ctx, dev[i]);
        free(t->state_h);
        for (int i = 0; i < t->n_hcopy; i++)
            free(t->hcopy[i].data);
        dp_tr_cu_close(t->cu);
    }
    dp_optim_destroy(t->opt);
    free(t->state64);
    free(t->seg);
    dp_pool_destroy(t->pool);
    free(t);
}

disopt_status dp_trainer_set_batch(dp_trainer *t, const float *x, const float *x_teacher, const int32_t *target,
                                   const uint8_t *valid) {
    if (!t || !x || !target)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    if (t->stage == 2 && !x_teacher)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: stage 2 needs the teacher's input");
    const size_t px = (size_t)t->cfg.n * (size_t)t->cfg.h * (size_t)t->cfg.w;
    const size_t nx = px * (size_t)t->cfg.model.in_channels;
    disopt_status s = DISOPT_OK;
    t->batch_set = 0;
    if (!t->bx) {
        if (t->cu) {
            t->bx = dzalloc(t->cu, nx * sizeof(float), &s);
            if (t->stage == 2)
                t->bxt = dzalloc(t->cu, nx * sizeof(float), &s);
            t->by = dzalloc(t->cu, px * sizeof(int32_t), &s); /* (not target_d: steps given inputs upload there) */
            t->bv = dzalloc(t->cu, px, &s);
        } else {
            t->bx = zalloc(nx, sizeof(float), &s);
            if (t->stage == 2)
                t->bxt = zalloc(nx, sizeof(float), &s);
            t->by = zalloc(px, sizeof(int32_t), &s);
            t->bv = zalloc(px, 1, &s);
        }
        DP_TRY(s);
    }
    if (t->cu) {
        DP_TRY(t->cu->f.upload(t->cu->ctx, t->bx, x, nx * sizeof(float)));
        if (t->stage == 2)
            DP_TRY(t->cu->f.upload(t->cu->ctx, t->bxt, x_teacher, nx * sizeof(float)));
        DP_TRY(t->cu->f.upload(t->cu->ctx, t->by, target, px * sizeof(int32_t)));
        if (valid)
            DP_TRY(t->cu->f.upload(t->cu->ctx, t->bv, valid, px));
        DP_TRY(t->cu->f.sync(t->cu->ctx));
    } else {
        memcpy(t->bx, x, nx * sizeof(float));
        if (t->stage == 2)
            memcpy(t->bxt, x_teacher, nx * sizeof(float));
        memcpy(t->by, target, px * sizeof(int32_t));
        if (valid)
            memcpy(t->bv, valid, px);
    }
    t->have_valid = valid != NULL;
    t->batch_set = 1;
    return DISOPT_OK;
}

disopt_status dp_trainer_forward_backward(dp_trainer *t, const float *x, const float *x_teacher, const int32_t *target,
                                          const uint8_t *valid, dp_trainer_loss *loss) {
    if (!t)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    const int resident = !x && !x_teacher && !target && !valid;
    if (resident && !t->batch_set)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: no inputs given and no batch set (dp_trainer_set_batch)");
    if (!resident && (!x || !target))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    if (!resident && t->stage == 2 && !x_teacher)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: stage 2 needs the teacher's input");
    if (resident) {
        x = t->bx;
        x_teacher = t->bxt;
        target = t->by;
        valid = t->have_valid ? t->bv : NULL;
    }
    dp_trainer_loss L;
    memset(&L, 0, sizeof L);
    L.stage = t->stage;
    t->resident = resident;
    disopt_status s;
    if (t->cu)
        s = fwd_bwd_cu(t, x, x_teacher, target, valid, &L);
    else if (t->cfg.f64)
        s = fwd_bwd_f64(t, x, x_teacher, target, valid, &L);
    else
        s = fwd_bwd_f32(t, x, x_teacher, target, valid, &L);
    t->resident = 0;
    DP_TRY(s);
    t->forwards++;
    if (loss)
        *loss = L;
    return DISOPT_OK;
}

disopt_status dp_trainer_update(dp_trainer *t, double lr) {
    if (!t)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    if (t->cu) { /* one kernel over the arena; the step's errors surface here */
        const double t0 = dp_now_s();
        DP_TRY(t->cu->f.optim_update(t->cu->ctx, &t->cfg.optim, t->seg, t->n_seg, t->net.n_params, t->step64 + 1, lr,
                                     t->net.params, t->net.grads, t->state_d));
        DP_TRY(t->cu->f.sync(t->cu->ctx));
        if (t->net.prof)
            t->prof[DP_TR_PROF_OPTIM] += dp_now_s() - t0;
        t->step64++;
        return DISOPT_OK;
    }
    if (!t->cfg.f64)
        return dp_optim_step(t->opt, t->net.params, t->net.grads, lr);
    DP_TRY(dp_optim_update_f64(&t->cfg.optim, t->seg, t->n_seg, t->net.n_params, t->step64 + 1, lr, t->net.params,
                               t->net.grads, t->state64));
    t->step64++;
    return DISOPT_OK;
}

disopt_status dp_trainer_step(dp_trainer *t, const float *x, const float *x_teacher, const int32_t *target,
                              const uint8_t *valid, double lr, dp_trainer_loss *loss) {
    DP_TRY(dp_trainer_forward_backward(t, x, x_teacher, target, valid, loss));
    return dp_trainer_update(t, lr);
}

/* element offset of key in its arena and whether it is trainable; -1 when absent */
static int param_at(const dp_trainer *t, const char *key, size_t *off, int *trainable, int64_t *numel) {
    if (!t || !key)
        return -1;
    int i = dp_graph_find_param(&t->net.g, key);
    if (i < 0 || t->net.p_off[i] == SIZE_MAX)
        return -1;
    *off = t->net.p_off[i];
    *trainable = trainable_kind(t->net.g.params[i].kind);
    if (numel)
        *numel = t->net.g.params[i].numel;
    return 0;
}

float *dp_trainer_param(dp_trainer *t, const char *key, float **grad, int64_t *numel) {
    size_t off;
    int tr;
    int64_t ne = 0;
    if (grad)
        *grad = NULL;
    if (numel)
        *numel = 0;
    if (param_at(t, key, &off, &tr, &ne) || t->cfg.f64)
        return NULL;
    if (numel)
        *numel = ne;
    const dp_net *m = &t->net;
    if (m->cu) { /* the host copies, brought up to date */
        float *hp = (float *)(tr ? m->hparams : m->hbufs) + off;
        const float *dp = (const float *)(tr ? m->params : m->bufs) + off;
        if (m->cu->f.download(m->cu->ctx, hp, dp, (size_t)ne * sizeof(float)) != DISOPT_OK)
            return NULL;
        if (grad && tr) {
            if (m->cu->f.download(m->cu->ctx, (float *)m->hgrads + off, (const float *)m->grads + off,
                                  (size_t)ne * sizeof(float)) != DISOPT_OK)
                return NULL;
            *grad = (float *)m->hgrads + off;
        }
        return hp;
    }
    if (grad && tr)
        *grad = (float *)t->net.grads + off;
    return (float *)(tr ? t->net.params : t->net.bufs) + off;
}

double *dp_trainer_param_f64(dp_trainer *t, const char *key, double **grad, int64_t *numel) {
    size_t off;
    int tr;
    if (grad)
        *grad = NULL;
    if (param_at(t, key, &off, &tr, numel) || !t->cfg.f64)
        return NULL;
    if (grad && tr)
        *grad = (double *)t->net.grads + off;
    return (double *)(tr ? t->net.params : t->net.bufs) + off;
}

/* host memory for a copy of a device tensor, by (net, tensor), kept until the trainer goes; NULL when full */
static float *hcopy_slot(const dp_trainer *t, const dp_net *m, int tensor, size_t count) {
    dp_trainer *tm = (dp_trainer *)(uintptr_t)t; /* the copies' table only */
    int k = 0;
    while (k < tm->n_hcopy && !(tm->hcopy[k].net == m && tm->hcopy[k].tensor == tensor))
        k++;
    if (k == tm->n_hcopy) {
        if (k == (int)(sizeof tm->hcopy / sizeof tm->hcopy[0]))
            return NULL;
        tm->hcopy[k].data = malloc(count * sizeof(float) + 1);
        if (!tm->hcopy[k].data)
            return NULL;
        tm->hcopy[k].net = m;
        tm->hcopy[k].tensor = tensor;
        tm->n_hcopy++;
    }
    return tm->hcopy[k].data;
}

/* the engine teacher's output by name (host memory; a copy, made again on every call, on CUDA) */
static const void *teacher_engine_tensor(const dp_trainer *t, const char *name, int *c, int *h, int *w) {
    int k = 0;
    while (k <= DP_STAGE2_NFEAT && strcmp(name, teacher_outs[k]) != 0)
        k++;
    if (k > DP_STAGE2_NFEAT)
        return NULL;
    if (c)
        *c = t->tshape[k][1];
    if (h)
        *h = t->tshape[k][2];
    if (w)
        *w = t->tshape[k][3];
    if (!t->cu)
        return t->tout[k];
    float *d = hcopy_slot(t, &t->teacher, -1 - k, t->tcount[k]);
    if (!d || t->cu->f.download(t->cu->ctx, d, t->tout[k], t->tcount[k] * sizeof(float)) != DISOPT_OK)
        return NULL;
    return d;
}

static const void *tensor_at(const dp_trainer *t, int teacher, const char *name, int *c, int *h, int *w) {
    if (!t || !name)
        return NULL;
    if (teacher && t->tmodel)
        return teacher_engine_tensor(t, name, c, h, w);
    const dp_net *m = teacher ? &t->teacher : &t->net;
    if (!m->act)
        return NULL;
    int i = find_t(m, name);
    if (i < 0)
        return NULL;
    if (c)
        *c = m->g.tensors[i].c;
    if (h)
        *h = m->g.tensors[i].h;
    if (w)
        *w = m->g.tensors[i].w;
    if (m->cu) { /* a host copy, made again on every call (kept until the trainer goes) */
        float *d = hcopy_slot(t, m, i, count_(m, i));
        if (!d || m->cu->f.download(m->cu->ctx, d, (const float *)m->act + m->t_off[i], count_(m, i) * sizeof(float)) !=
                      DISOPT_OK)
            return NULL;
        return d;
    }
    return (const char *)m->act + m->t_off[i] * m->esz;
}

const float *dp_trainer_tensor(const dp_trainer *t, int teacher, const char *name, int *c, int *h, int *w) {
    return t && !t->cfg.f64 ? tensor_at(t, teacher, name, c, h, w) : NULL;
}

const double *dp_trainer_tensor_f64(const dp_trainer *t, int teacher, const char *name, int *c, int *h, int *w) {
    return t && t->cfg.f64 ? tensor_at(t, teacher, name, c, h, w) : NULL;
}

void dp_trainer_memory(const dp_trainer *t, dp_trainer_memory_info *mi) {
    memset(mi, 0, sizeof *mi);
    if (!t)
        return;
    const dp_net *m = &t->net, *tt = &t->teacher;
    const size_t e = m->esz;
    int ns = dp_optim_state_count(&t->cfg.optim);
    mi->params_bytes = m->n_params * e;
    mi->grads_bytes = m->n_params * e;
    mi->state_bytes = (size_t)(ns > 0 ? ns : 0) * m->n_params * e;
    mi->buffers_bytes = m->n_bufs * e;
    mi->arena_bytes = m->n_act * e;
    mi->unplanned_bytes = m->n_unplanned * e;
    mi->saved_bytes = m->n_save * e + m->n_mask;
    mi->workspace_bytes = m->ws_elems * e;
    mi->teacher_bytes = (tt->n_params + tt->n_bufs + tt->n_act + tt->n_save + tt->ws_elems) * e;
    for (int k = 0; k <= DP_STAGE2_NFEAT; k++)
        mi->teacher_bytes += t->tcount[k] * sizeof(float);
    mi->total_bytes = mi->params_bytes + mi->grads_bytes + mi->state_bytes + mi->buffers_bytes + mi->arena_bytes +
                      mi->saved_bytes + mi->workspace_bytes + mi->teacher_bytes;
}

/* CUDA: the parameter, buffer and optimizer arenas to their host copies (to_device 0) or back */
static disopt_status sync_arenas(dp_trainer *t, int to_device) {
    if (!t)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    if (!t->cu)
        return DISOPT_OK;
    const dp_net *m = &t->net;
    const int ns = dp_optim_state_count(&t->cfg.optim);
    void *dev[3] = {m->params, m->bufs, t->state_d}, *host[3] = {m->hparams, m->hbufs, t->state_h};
    const size_t bytes[3] = {m->n_params * m->esz, m->n_bufs * m->esz,
                             (size_t)(ns > 0 ? ns : 0) * m->n_params * sizeof(float)};
    for (int i = 0; i < 3; i++)
        if (bytes[i])
            DP_TRY(to_device ? t->cu->f.upload(t->cu->ctx, dev[i], host[i], bytes[i])
                             : t->cu->f.download(t->cu->ctx, host[i], dev[i], bytes[i]));
    return DISOPT_OK;
}

disopt_status dp_trainer_pull(dp_trainer *t) { return sync_arenas(t, 0); }

disopt_status dp_trainer_push(dp_trainer *t) { return sync_arenas(t, 1); }

static int count_fused(const dp_net *m) {
    int k = 0;
    for (int i = 0; m->fuse && i < m->g.n_nodes; i++)
        k += m->fuse[i] != 0;
    return k;
}

int dp_trainer_fused_pairs(const dp_trainer *t) { return t ? count_fused(&t->net) + count_fused(&t->teacher) : 0; }

int dp_trainer_on_cuda(const dp_trainer *t) { return t && t->cu; }

/* ---------------------------------------------------------------- data parallelism */
/* the module's communicator, with the trainer it was made for */
struct dp_trainer_comm {
    dp_cu_tr_comm *comm;
    dp_tr_cu *cu; /* the module's functions (every rank loaded the same module) */
};

disopt_status dp_trainer_comm_create(dp_trainer *const *ranks, int n, dp_trainer_comm **comms) {
    if (!ranks || n < 1 || !comms)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument or no rank");
    int devices[64];
    if (n > 64)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "data parallelism: %d ranks (at most 64)", n);
    for (int i = 0; i < n; i++) {
        comms[i] = NULL;
        if (!ranks[i] || !ranks[i]->cu || ranks[i]->cfg.f64)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "data parallelism: rank %d is not a float32 CUDA trainer", i);
        if (ranks[i]->net.n_params != ranks[0]->net.n_params || ranks[i]->net.n_bufs != ranks[0]->net.n_bufs)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "data parallelism: rank %d's model differs from rank 0's", i);
        devices[i] = ranks[i]->cfg.cuda_device;
    }
    for (int i = 0; i < n; i++) /* the wrappers first: nothing to undo but memory if one is missing */
        if (!(comms[i] = calloc(1, sizeof *comms[i]))) {
            for (int j = 0; j < i; j++) {
                free(comms[j]);
                comms[j] = NULL;
            }
            return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "data parallelism: out of memory");
        }
    dp_cu_tr_comm *c[64];
    dp_tr_cu *cu = ranks[0]->cu;
    disopt_status s = cu->f.comm_init_all(&cu->host, n, devices, c);
    for (int i = 0; i < n; i++) {
        if (s == DISOPT_OK) {
            comms[i]->comm = c[i];
            comms[i]->cu = ranks[i]->cu;
        } else {
            free(comms[i]);
            comms[i] = NULL;
        }
    }
    return s;
}

void dp_trainer_comm_destroy(dp_trainer_comm *c) {
    if (!c)
        return;
    if (c->comm)
        c->cu->f.comm_destroy(c->comm);
    free(c);
}

static disopt_status comm_args(const dp_trainer *t, const dp_trainer_comm *c) {
    if (!t || !c)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    if (!t->cu || t->cfg.f64)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "data parallelism: not a float32 CUDA trainer");
    return DISOPT_OK;
}

disopt_status dp_trainer_allreduce_grads(dp_trainer *t, dp_trainer_comm *c) {
    DP_TRY(comm_args(t, c));
    const double t0 = dp_now_s();
    DP_TRY(t->cu->f.allreduce_avg(t->cu->ctx, c->comm, (float *)t->net.grads, t->net.n_params));
    DP_TRY(t->cu->f.sync(t->cu->ctx));
    if (t->net.prof)
        t->prof[DP_TR_PROF_OPTIM] += dp_now_s() - t0;
    return DISOPT_OK;
}

disopt_status dp_trainer_broadcast_state(dp_trainer *t, dp_trainer_comm *c, int root) {
    DP_TRY(comm_args(t, c));
    const int ns = dp_optim_state_count(&t->cfg.optim);
    float *dev[3] = {(float *)t->net.params, (float *)t->net.bufs, t->state_d};
    const size_t n[3] = {t->net.n_params, t->net.n_bufs, (size_t)(ns > 0 ? ns : 0) * t->net.n_params};
    for (int i = 0; i < 3; i++)
        if (n[i] && dev[i])
            DP_TRY(t->cu->f.broadcast(t->cu->ctx, c->comm, dev[i], n[i], root));
    /* the optimizer's step counter (the poly schedule and AdamW's bias correction read it) and the count of
     * training forwards (num_batches_tracked) too; through floats they would lose digits past 2^24, so each
     * travels as two 24-bit halves */
    float *tmp = NULL;
    DP_TRY(t->cu->f.alloc(t->cu->ctx, 4 * sizeof(float), (void **)&tmp));
    const float hv[4] = {(float)(t->step64 >> 24), (float)(t->step64 & 0xffffff), (float)(t->forwards >> 24),
                         (float)(t->forwards & 0xffffff)};
    float back[4] = {0, 0, 0, 0};
    disopt_status s = t->cu->f.upload(t->cu->ctx, tmp, hv, sizeof hv);
    if (s == DISOPT_OK)
        s = t->cu->f.broadcast(t->cu->ctx, c->comm, tmp, 4, root);
    if (s == DISOPT_OK)
        s = t->cu->f.download(t->cu->ctx, back, tmp, sizeof back);
    if (s == DISOPT_OK)
        s = t->cu->f.sync(t->cu->ctx);
    t->cu->f.free(t->cu->ctx, tmp);
    if (s == DISOPT_OK) {
        t->step64 = ((int64_t)back[0] << 24) | (int64_t)back[1];
        t->forwards = ((int64_t)back[2] << 24) | (int64_t)back[3];
    }
    return s;
}

disopt_status dp_trainer_save(const dp_trainer *t, const char *path) {
    if (!t || !path)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    disopt_st_writer *w = NULL;
    DP_TRY(disopt_st_writer_create(&w));
    disopt_status s = dp_trainer_add_state_dict(t, w);
    if (s == DISOPT_OK)
        s = disopt_st_writer_save(w, path);
    disopt_st_writer_destroy(w);
    return s;
}

disopt_status dp_trainer_add_state_dict(const dp_trainer *t, disopt_st_writer *w) {
    if (!t || !w)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    const dp_net *m = &t->net;
    const dp_graph *g = &m->g;
    disopt_status s = dp_trainer_pull((dp_trainer *)(uintptr_t)t); /* CUDA: the host copies (no-op on the CPU) */
    if (s == DISOPT_OK)
        s = st_header(w, t->stage == 2 ? "student" : "teacher", t->cfg.model.variant);
    float *tmp = NULL;
    size_t tmp_n = 0;
    for (int i = 0; s == DISOPT_OK && i < g->n_params; i++) {
        const dp_param *p = &g->params[i];
        if (p->kind == DISOPT_KEY_BN_COUNT) {
            s = st_param(w, p, NULL, (float)t->forwards);
            continue;
        }
        if (m->p_off[i] == SIZE_MAX)
            continue;
        const void *arena = m->cu ? (trainable_kind(p->kind) ? m->hparams : m->hbufs)
                                  : (trainable_kind(p->kind) ? m->params : m->bufs);
        const char *src = (const char *)arena + m->p_off[i] * m->esz;
        const float *data = (const float *)(const void *)src;
        if (t->cfg.f64) {
            if ((size_t)p->numel > tmp_n) {
                free(tmp);
                tmp_n = (size_t)p->numel;
                tmp = malloc(tmp_n * sizeof *tmp);
                if (!tmp) {
                    s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "trainer: out of memory");
                    break;
                }
            }
            for (int64_t j = 0; j < p->numel; j++)
                tmp[j] = (float)((const double *)(const void *)src)[j];
            data = tmp;
        }
        s = st_param(w, p, data, 0.0f);
    }
    free(tmp);
    return s;
}

disopt_status dp_trainer_get_state(dp_trainer *t, dp_trainer_state *st) {
    if (!t || !st)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    memset(st, 0, sizeof *st);
    DP_TRY(dp_trainer_pull(t));
    st->esz = t->net.esz;
    st->params = t->cu ? t->net.hparams : t->net.params;
    st->n_params = t->net.n_params;
    st->bufs = t->cu ? t->net.hbufs : t->net.bufs;
    st->n_bufs = t->net.n_bufs;
    int ns = dp_optim_state_count(&t->cfg.optim);
    st->n_opt_state = ns > 0 ? ns : 0;
    if (t->cu) {
        st->opt_state = t->state_h;
        st->opt_step = &t->step64;
    } else if (t->cfg.f64) {
        st->opt_state = t->state64;
        st->opt_step = &t->step64;
    } else {
        st->opt_state = t->opt->state;
        st->opt_step = &t->opt->step;
    }
    st->rng = &t->rng;
    st->forwards = &t->forwards;
    return DISOPT_OK;
}

const dp_trainer_config *dp_trainer_get_config(const dp_trainer *t) { return t ? &t->cfg : NULL; }

disopt_status dp_trainer_forward_eval(dp_trainer *t, const float *x) {
    if (!t || !x)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "trainer: NULL argument");
    if (t->cu)
        return net_forward_cu(&t->net, x, 0, 0, 0, 0, &t->rng);
    if (t->cfg.f64)
        return net_forward_f64(&t->net, x, 0, 0, 0, 0, &t->rng);
    return net_forward_f32(&t->net, x, 0, 0, 0, 0, &t->rng);
}
