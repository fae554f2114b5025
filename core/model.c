/*
 * model.c - loading a model from safetensors (validation, BN folding), memory planning per input
 * shape, and inference through the engine's backend.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *key, *value;
} md_entry;

#define DP_PLAN_GRAPHS 4
typedef struct dp_plan {
    int n, h, w;
    size_t *offset;     /* per tensor */
    void *arena;
    size_t arena_bytes;
    void *ws;
    size_t ws_bytes;
    /* recorded node sequences (backends with graphs), one per set of wanted tensors */
    void *graph[DP_PLAN_GRAPHS];
    char *graph_want[DP_PLAN_GRAPHS];
    int graph_next;
} dp_plan;

enum { PROF_CONV1X1, PROF_CONV_DW, PROF_CONV_KXK, PROF_CONV_1PX, PROF_OTHER, PROF_N = PROF_OTHER + DP_OP_COUNT };

struct disopt_model {
    disopt_engine *engine;
    int profiling;
    double prof_s[PROF_N], prof_flop[PROF_N];
    long prof_calls[PROF_N];
    double *prof_node; /* per node, when profiling */
    dp_graph g;
    disopt_model_info info;
    md_entry *md;
    int n_md;
    dp_plan plan;
    int prepared;
    disopt_infer_timing timing; /* of the last inference */
    /* an inference started with DP_INFER_ASYNC, not yet waited for (dp_model_infer_wait): its input check */
    struct {
        int on, dev_check, c, h, w;
        const float *input;
        size_t total;
    } pend;
};

/* ---------------------------------------------------------------- configs */
disopt_status disopt_model_config_parse(const char *s, disopt_model_config *cfg) {
    if (!s || !cfg) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "NULL argument");
    memset(cfg, 0, sizeof *cfg);
    cfg->in_channels = 4;
    cfg->num_classes = 2;
    const char *dash = strrchr(s, '-');
    if (!dash || dash[1] != 'b' || dash[2] < '0' || dash[2] > '7' || dash[3] != '\0')
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "bad model name '%s' (want teacher-bN or student-bN)", s);
    if (strncmp(s, "teacher", (size_t)(dash - s)) == 0 && dash - s == 7)
        cfg->arch = DISOPT_ARCH_TEACHER;
    else if (strncmp(s, "student", (size_t)(dash - s)) == 0 && dash - s == 7)
        cfg->arch = DISOPT_ARCH_STUDENT;
    else
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "bad model name '%s' (want teacher-bN or student-bN)", s);
    cfg->variant = dash[2] - '0';
    return DISOPT_OK;
}

void disopt_model_config_format(const disopt_model_config *cfg, char *buf, size_t len) {
    snprintf(buf, len, "%s-b%d", cfg->arch == DISOPT_ARCH_TEACHER ? "teacher" : "student", cfg->variant);
}

/* ---------------------------------------------------------------- key lists */
struct disopt_keylist {
    dp_graph g;
};

disopt_status disopt_keylist_create(const disopt_model_config *cfg, disopt_keylist **out) {
    if (!cfg || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "NULL argument");
    disopt_keylist *kl = calloc(1, sizeof *kl);
    if (!kl) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = dp_graph_build(cfg, &kl->g);
    if (s != DISOPT_OK) {
        free(kl);
        return s;
    }
    *out = kl;
    return DISOPT_OK;
}

void disopt_keylist_destroy(disopt_keylist *kl) {
    if (!kl) return;
    dp_graph_free(&kl->g);
    free(kl);
}

int disopt_keylist_count(const disopt_keylist *kl) { return kl ? kl->g.n_params : 0; }

void disopt_keylist_at(const disopt_keylist *kl, int i, const char **name, disopt_key_kind *kind, int *ndim,
                       int64_t shape[4]) {
    const dp_param *p = &kl->g.params[i];
    if (name) *name = p->key;
    if (kind) *kind = p->kind;
    if (ndim) *ndim = p->ndim;
    if (shape) memcpy(shape, p->shape, sizeof p->shape);
}

/* ---------------------------------------------------------------- loading */
static const char *strip_module(const char *k) { return strncmp(k, "module.", 7) == 0 ? k + 7 : k; }

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = 0;
    buf[0] = '\0';
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Does every key of cfg's graph exist in st with the right shape? */
static int config_matches(disopt_st *st, const disopt_model_config *cfg) {
    dp_graph g;
    int ok = 1;
    if (dp_graph_build(cfg, &g) != DISOPT_OK) return 0;
    int nfile = 0;
    for (int i = 0; i < disopt_st_num_tensors(st); i++) {
        const char *k = strip_module(disopt_st_tensor(st, i)->name);
        if (strncmp(k, "golden.", 7) != 0) nfile++;
    }
    int nreq = 0;
    for (int i = 0; ok && i < g.n_params; i++) {
        const dp_param *p = &g.params[i];
        const disopt_st_tensor_info *t = NULL;
        for (int j = 0; j < disopt_st_num_tensors(st) && !t; j++)
            if (strcmp(strip_module(disopt_st_tensor(st, j)->name), p->key) == 0) t = disopt_st_tensor(st, j);
        if (!t) {
            if (p->kind != DISOPT_KEY_BN_COUNT) ok = 0;
            continue;
        }
        nreq++;
        if (p->kind == DISOPT_KEY_BN_COUNT) continue;
        if (t->ndim != p->ndim) ok = 0;
        for (int d = 0; ok && d < p->ndim; d++)
            if (t->shape[d] != p->shape[d]) ok = 0;
    }
    dp_graph_free(&g);
    return ok && nreq == nfile;
}

static disopt_status detect_config(disopt_st *st, disopt_model_config *cfg) {
    const char *arch = disopt_st_metadata(st, "arch");
    const char *variant = disopt_st_metadata(st, "variant");
    int has_sar = 0, has_teacher = 0;
    const disopt_st_tensor_info *stem = NULL;
    for (int i = 0; i < disopt_st_num_tensors(st); i++) {
        const char *k = strip_module(disopt_st_tensor(st, i)->name);
        if (strncmp(k, "encoder_sar.", 12) == 0) has_sar = 1;
        if (strncmp(k, "encoder.", 8) == 0) has_teacher = 1;
        if (strcmp(k, "encoder._conv_stem.weight") == 0 || strcmp(k, "encoder_sar._conv_stem.weight") == 0)
            stem = disopt_st_tensor(st, i);
    }
    memset(cfg, 0, sizeof *cfg);
    if (arch) {
        if (strcmp(arch, "teacher") == 0) cfg->arch = DISOPT_ARCH_TEACHER;
        else if (strcmp(arch, "student") == 0) cfg->arch = DISOPT_ARCH_STUDENT;
        else return dp_error(DISOPT_ERR_UNSUPPORTED, "metadata arch '%s' is not teacher or student", arch);
    } else if (has_sar) {
        cfg->arch = DISOPT_ARCH_STUDENT;
    } else if (has_teacher) {
        cfg->arch = DISOPT_ARCH_TEACHER;
    } else {
        return dp_error(DISOPT_ERR_MISSING_KEY,
                        "no DisOptNet weights found (no encoder._conv_stem.weight or encoder_sar._conv_stem.weight)");
    }
    if (!stem || stem->ndim != 4)
        return dp_error(DISOPT_ERR_MISSING_KEY, "missing key %s._conv_stem.weight",
                        cfg->arch == DISOPT_ARCH_STUDENT ? "encoder_sar" : "encoder");
    cfg->in_channels = (int)stem->shape[1];
    cfg->num_classes = 2;
    const char *head = cfg->arch == DISOPT_ARCH_STUDENT ? "ffm_seg_head.0.weight" : "segmentation_head.0.weight";
    for (int i = 0; i < disopt_st_num_tensors(st); i++)
        if (strcmp(strip_module(disopt_st_tensor(st, i)->name), head) == 0 && disopt_st_tensor(st, i)->ndim == 4)
            cfg->num_classes = (int)disopt_st_tensor(st, i)->shape[0];
    if (variant) {
        if (variant[0] != 'b' || variant[1] < '0' || variant[1] > '7' || variant[2])
            return dp_error(DISOPT_ERR_UNSUPPORTED, "metadata variant '%s' is not b0..b7", variant);
        cfg->variant = variant[1] - '0';
        return DISOPT_OK;
    }
    for (int v = 0; v <= 7; v++) {
        cfg->variant = v;
        if (config_matches(st, cfg)) return DISOPT_OK;
    }
    /* no exact match: guess from the stem width so that validation names the offending key */
    static const int stem_width[8] = {32, 32, 32, 40, 48, 48, 56, 64};
    cfg->variant = 3;
    for (int v = 7; v >= 0; v--)
        if (stem->shape[0] == stem_width[v]) cfg->variant = v;
    return DISOPT_OK;
}

static disopt_status load_params(disopt_model *m, disopt_st *st) {
    dp_graph *g = &m->g;
    char a[128], b[128];
    /* every tensor in the file must be known */
    for (int i = 0; i < disopt_st_num_tensors(st); i++) {
        const disopt_st_tensor_info *t = disopt_st_tensor(st, i);
        const char *k = strip_module(t->name);
        int pi = dp_graph_find_param(g, k);
        if (pi < 0)
            return dp_error(DISOPT_ERR_UNEXPECTED_KEY, "unexpected key '%s' for a %s-b%d model", t->name,
                            g->out_sar >= 0 ? "student" : "teacher", m->info.config.variant);
        dp_param *p = &g->params[pi];
        if (p->loaded) return dp_error(DISOPT_ERR_FORMAT, "key '%s' appears twice (with and without 'module.')", k);
        if (p->kind == DISOPT_KEY_BN_COUNT) {
            if (t->ndim > 1 || (t->ndim == 1 && t->shape[0] != 1))
                return dp_error(DISOPT_ERR_SHAPE, "key '%s': shape %s, expected a scalar", k,
                                (fmt_shape(a, sizeof a, t->ndim, t->shape), a));
            p->loaded = 1;
            continue;
        }
        if (t->dtype != DISOPT_DTYPE_F32 && t->dtype != DISOPT_DTYPE_F16 && t->dtype != DISOPT_DTYPE_BF16)
            return dp_error(DISOPT_ERR_UNSUPPORTED, "key '%s': dtype not supported for weights (F32, F16, BF16)", k);
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            fmt_shape(a, sizeof a, t->ndim, t->shape);
            fmt_shape(b, sizeof b, p->ndim, p->shape);
            return dp_error(DISOPT_ERR_SHAPE, "key '%s': shape %s in the file, %s expected", k, a, b);
        }
        p->data = malloc((size_t)p->numel * sizeof(float));
        if (!p->data) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory loading '%s'", k);
        DP_TRY(disopt_st_read_f32(st, t, p->data, (size_t)p->numel));
        p->loaded = 1;
    }
    for (int i = 0; i < g->n_params; i++)
        if (!g->params[i].loaded && g->params[i].kind != DISOPT_KEY_BN_COUNT)
            return dp_error(DISOPT_ERR_MISSING_KEY, "missing key '%s'", g->params[i].key);
    return DISOPT_OK;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Sizes the model arena and points every conv node's fw/fb into it (64-byte aligned slices). */
static disopt_status weight_arena(dp_graph *g) {
    size_t total = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const dp_node *n = &g->nodes[i];
        if (n->op != DP_OP_CONV) continue;
        total += align16((size_t)g->params[n->w_key].numel);
        if (n->b_key >= 0 || n->bn_key >= 0) total += align16((size_t)n->conv.cout);
    }
    g->warena = aligned_alloc(64, total * sizeof(float) + 64);
    if (!g->warena) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory for %zu MB of weights", total >> 18);
    g->warena_floats = total;
    size_t off = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        dp_node *n = &g->nodes[i];
        if (n->op != DP_OP_CONV) continue;
        n->fw = g->warena + off;
        off += align16((size_t)g->params[n->w_key].numel);
        if (n->b_key >= 0 || n->bn_key >= 0) {
            n->fb = g->warena + off;
            off += align16((size_t)n->conv.cout);
        }
    }
    return DISOPT_OK;
}

/* Folds BN into conv weights: w' = w * g/sqrt(v+eps), b' = (b - mean) * g/sqrt(v+eps) + beta. */
static disopt_status fold_node(dp_graph *g, dp_node *n) {
    if (n->op != DP_OP_CONV) return DISOPT_OK;
    const dp_param *w = &g->params[n->w_key];
    int cout = n->conv.cout;
    size_t per = (size_t)(w->numel / cout);
    for (int o = 0; o < cout; o++) {
        double scale = 1.0, shift = n->b_key >= 0 ? g->params[n->b_key].data[o] : 0.0;
        if (n->bn_key >= 0) {
            const float *gamma = g->params[n->bn_key].data, *beta = g->params[n->bn_key + 1].data;
            const float *mean = g->params[n->bn_key + 2].data, *var = g->params[n->bn_key + 3].data;
            if (!(var[o] >= 0.0f))
                return dp_error(DISOPT_ERR_FORMAT, "key '%s': negative or NaN running_var at channel %d",
                                g->params[n->bn_key + 3].key, o);
            /* PyTorch: (y - mean) / sqrt(var + eps) * gamma + beta, with var + eps in float */
            float ve = var[o] + n->bn_eps;
            scale = (double)gamma[o] / sqrt((double)ve);
            shift = (shift - (double)mean[o]) * scale + (double)beta[o];
        }
        for (size_t i = 0; i < per; i++) n->fw[o * per + i] = (float)(w->data[o * per + i] * scale);
        if (n->fb) n->fb[o] = (float)shift;
    }
    return DISOPT_OK;
}

static void md_free(disopt_model *m) {
    for (int i = 0; i < m->n_md; i++) {
        free(m->md[i].key);
        free(m->md[i].value);
    }
    free(m->md);
    m->md = NULL;
    m->n_md = 0;
}

static int parse_floats(const char *s, float *out, int max) {
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        float v = strtof(s, &end);
        if (end == s) return -1;
        out[n++] = v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return n;
}

static disopt_status fill_info(disopt_model *m) {
    disopt_model_info *in = &m->info;
    int C = in->config.in_channels;
    static const char *sar[4] = {"HH", "HV", "VH", "VV"};
    for (int i = 0; i < C; i++) {
        if (C == 4)
            snprintf(in->band_names[i], sizeof in->band_names[i], "%s", sar[i]);
        else
            snprintf(in->band_names[i], sizeof in->band_names[i], "B%d", i + 1);
        in->band_scale[i] = 1.0f / 255.0f;
        in->band_mean[i] = 0.5f;
        in->band_std[i] = 0.125f;
    }
    const char *bands = disopt_model_metadata(m, "bands");
    if (bands) {
        int i = 0;
        const char *p = bands;
        while (*p && i < C) {
            size_t l = strcspn(p, ",");
            snprintf(in->band_names[i], sizeof in->band_names[i], "%.*s", (int)(l < 15 ? l : 15), p);
            i++;
            p += l;
            if (*p == ',') p++;
        }
        if (i != C) return dp_error(DISOPT_ERR_FORMAT, "metadata 'bands' names %d bands, the model has %d", i, C);
    }
    const char *keys[3] = {"norm_scale", "norm_mean", "norm_std"};
    float *dst[3] = {in->band_scale, in->band_mean, in->band_std};
    for (int k = 0; k < 3; k++) {
        const char *v = disopt_model_metadata(m, keys[k]);
        if (!v) continue;
        float tmp[DISOPT_MAX_BANDS];
        int n = parse_floats(v, tmp, DISOPT_MAX_BANDS);
        if (n == 1)
            for (int i = 0; i < C; i++) dst[k][i] = tmp[0];
        else if (n == C)
            for (int i = 0; i < C; i++) dst[k][i] = tmp[i];
        else
            return dp_error(DISOPT_ERR_FORMAT, "metadata '%s' = '%s': need 1 or %d numbers", keys[k], v, C);
        if (k == 2)
            for (int i = 0; i < C; i++)
                if (!(dst[k][i] > 0.0f)) return dp_error(DISOPT_ERR_FORMAT, "metadata norm_std must be positive");
    }
    const char *rot = disopt_model_metadata(m, "rotate180");
    in->rotate180 = rot && (strcmp(rot, "1") == 0 || strcmp(rot, "yes") == 0 || strcmp(rot, "YES") == 0);
    const char *name = disopt_model_metadata(m, "name");
    if (name)
        snprintf(in->name, sizeof in->name, "%s", name);
    else
        disopt_model_config_format(&in->config, in->name, sizeof in->name);
    in->num_keys = m->g.n_params;
    in->num_parameters = 0;
    for (int i = 0; i < m->g.n_params; i++)
        if (m->g.params[i].kind != DISOPT_KEY_BN_COUNT) in->num_parameters += m->g.params[i].numel;
    return DISOPT_OK;
}

static void plan_free(disopt_model *m) {
    dp_backend *be = m->engine->backend;
    for (int i = 0; i < DP_PLAN_GRAPHS; i++) {
        if (m->plan.graph[i]) be->vt->graph_destroy(be, m->plan.graph[i]);
        free(m->plan.graph_want[i]);
    }
    if (m->plan.arena) be->vt->free(be, m->plan.arena);
    if (m->plan.ws) be->vt->free(be, m->plan.ws);
    free(m->plan.offset);
    memset(&m->plan, 0, sizeof m->plan);
}

void disopt_model_destroy(disopt_model *m) {
    if (!m) return;
    if (m->engine) {
        plan_free(m);
        if (m->prepared)
            for (int i = 0; i < m->g.n_nodes; i++) m->engine->backend->vt->release_node(m->engine->backend, &m->g.nodes[i]);
    }
    dp_graph_free(&m->g);
    md_free(m);
    free(m->prof_node);
    free(m);
}

/* Backends that can (DP_CAP_DW_PRE_ACT): a 1x1 conv whose only reader is a depthwise conv (the
 * MBConv expansion) leaves its bias + activation to that reader, which applies them as it loads its
 * input tile: one pass less over the largest tensors of the network. The expansion's output must be
 * an unnamed intermediate (never a tap or an output). */
static void defer_acts(dp_graph *g) {
    for (int i = 0; i + 1 < g->n_nodes; i++) {
        dp_node *a = &g->nodes[i], *d = &g->nodes[i + 1];
        const dp_conv_params *ca = &a->conv, *cd = &d->conv;
        if (a->op != DP_OP_CONV || d->op != DP_OP_CONV || a->n_in != 1 || d->n_in != 1 || d->in[0] != a->out) continue;
        if (ca->kh != 1 || ca->kw != 1 || ca->groups != 1 || (!a->fb && a->act == DP_ACT_NONE)) continue;
        if (!(cd->groups > 1 && cd->groups == cd->cin && cd->groups == cd->cout)) continue;
        const int t = a->out;
        if (g->tensors[t].name[0] || t == g->out_fused || t == g->out_sar || t == g->out_rgb) continue;
        int readers = 0;
        for (int k = 0; k < g->n_nodes; k++)
            for (int j = 0; j < g->nodes[k].n_in; j++) readers += g->nodes[k].in[j] == t;
        if (readers != 1) continue;
        a->raw_out = 1;
        d->pre = a;
    }
}

/* The host part of a load: the graph, the parameters read and folded (BN into the convs). No engine:
 * it can run while an engine is being created (disopt_model_parse_memory, disopt_model_bind). */
static disopt_status model_parse(disopt_st *st, disopt_model **out) {
    disopt_model *m = calloc(1, sizeof *m);
    if (!m) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = detect_config(st, &m->info.config);
    if (s == DISOPT_OK) s = dp_graph_build(&m->info.config, &m->g);
    if (s == DISOPT_OK) s = load_params(m, st);
    int nmd = disopt_st_num_metadata(st);
    if (s == DISOPT_OK && nmd > 0) {
        m->md = calloc((size_t)nmd, sizeof *m->md);
        if (!m->md) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        for (int i = 0; s == DISOPT_OK && i < nmd; i++) {
            const char *k, *v;
            disopt_st_metadata_at(st, i, &k, &v);
            m->md[i].key = strdup(k);
            m->md[i].value = strdup(v);
            m->n_md++;
            if (!m->md[i].key || !m->md[i].value) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        }
    }
    if (s == DISOPT_OK) s = fill_info(m);
    if (s == DISOPT_OK) s = weight_arena(&m->g);
    for (int i = 0; s == DISOPT_OK && i < m->g.n_nodes; i++) s = fold_node(&m->g, &m->g.nodes[i]);
    if (s == DISOPT_OK) /* the folded copies are all inference needs */
        for (int i = 0; i < m->g.n_params; i++) {
            free(m->g.params[i].data);
            m->g.params[i].data = NULL;
        }
    if (s != DISOPT_OK) {
        disopt_model_destroy(m);
        return s;
    }
    *out = m;
    return DISOPT_OK;
}

disopt_status disopt_model_bind(disopt_model *m, disopt_engine *e) {
    if (!m || !e) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_bind: NULL argument");
    if (m->engine) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_bind: the model has an engine already");
    m->engine = e;
    dp_backend *be = e->backend;
    if (be->vt->caps & DP_CAP_DW_PRE_ACT) defer_acts(&m->g);
    m->prepared = 1; /* (release_node skips the nodes that were not prepared) */
    disopt_status s = DISOPT_OK;
    for (int i = 0; s == DISOPT_OK && i < m->g.n_nodes; i++) s = be->vt->prepare_node(be, &m->g.nodes[i]);
    return s;
}

static disopt_status model_from_st(disopt_engine *e, disopt_st *st, disopt_model **out) {
    disopt_model *m = NULL;
    DP_TRY(model_parse(st, &m));
    disopt_status s = disopt_model_bind(m, e);
    if (s != DISOPT_OK) {
        disopt_model_destroy(m);
        return s;
    }
    *out = m;
    return DISOPT_OK;
}

disopt_status disopt_model_load(disopt_engine *e, const char *path, disopt_model **out) {
    disopt_st *st;
    if (!e || !path || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_load: NULL argument");
    *out = NULL;
    DP_TRY(disopt_st_open(path, &st));
    disopt_status s = model_from_st(e, st, out);
    disopt_st_close(st);
    if (s != DISOPT_OK) return dp_error_prefix(s, "%s", path);
    return DISOPT_OK;
}

disopt_status disopt_model_load_memory(disopt_engine *e, const void *buf, size_t size, disopt_model **out) {
    disopt_st *st;
    if (!e || !buf || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_load_memory: NULL argument");
    *out = NULL;
    DP_TRY(disopt_st_open_memory(buf, size, &st));
    disopt_status s = model_from_st(e, st, out);
    disopt_st_close(st);
    return s;
}

disopt_status disopt_model_parse_memory(const void *buf, size_t size, disopt_model **out) {
    disopt_st *st;
    if (!buf || !out) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_parse_memory: NULL argument");
    *out = NULL;
    DP_TRY(disopt_st_open_memory(buf, size, &st));
    disopt_status s = model_parse(st, out);
    disopt_st_close(st);
    return s;
}

disopt_engine *disopt_model_engine(const disopt_model *m) { return m ? m->engine : NULL; }

disopt_status disopt_model_get_info(const disopt_model *m, disopt_model_info *info) {
    if (!m || !info) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "NULL argument");
    *info = m->info;
    return DISOPT_OK;
}

const char *disopt_model_metadata(const disopt_model *m, const char *key) {
    if (!m || !key) return NULL;
    for (int i = 0; i < m->n_md; i++)
        if (strcmp(m->md[i].key, key) == 0) return m->md[i].value;
    return NULL;
}

disopt_status disopt_model_normalize(const disopt_model *m, float *data, int n, int h, int w) {
    if (!m || !data || n < 1 || h < 1 || w < 1) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "normalize: bad argument");
    int C = m->info.config.in_channels;
    size_t hw = (size_t)h * w;
    for (int b = 0; b < n; b++)
        for (int c = 0; c < C; c++) {
            float *p = data + ((size_t)b * C + c) * hw;
            float sc = m->info.band_scale[c], mu = m->info.band_mean[c], sd = m->info.band_std[c];
            for (size_t i = 0; i < hw; i++) p[i] = (p[i] * sc - mu) / sd;
        }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- planning */
typedef struct {
    size_t off, size;
    int end;
} live_block;

/* Does the GAP node i + 1 run inside depthwise conv i (the backend's run_conv_gap)? It does when
 * the backend offers it and the GAP pools exactly that conv's output (the SE blocks). */
static int gap_fused(const disopt_model *m, int i) {
    const dp_graph *g = &m->g;
    if (!m->engine->backend->vt->run_conv_gap || i + 1 >= g->n_nodes) return 0;
    const dp_node *a = &g->nodes[i], *b = &g->nodes[i + 1];
    const dp_conv_params *c = &a->conv;
    return a->op == DP_OP_CONV && c->groups > 1 && c->groups == c->cin && c->groups == c->cout &&
           b->op == DP_OP_GAP && b->in[0] == a->out;
}

static disopt_status plan_build(disopt_model *m, int N, int H, int W) {
    dp_graph *g = &m->g;
    dp_backend *be = m->engine->backend;
    if (m->plan.arena && m->plan.n == N && m->plan.h == H && m->plan.w == W) return DISOPT_OK;
    plan_free(m);
    const double t0 = dp_now_s();
    DP_TRY(dp_graph_shapes(g, H, W));
    int T = g->n_tensors;
    int *last = malloc((size_t)T * sizeof *last);
    size_t *size = malloc((size_t)T * sizeof *size);
    live_block *live = malloc((size_t)T * sizeof *live);
    m->plan.offset = calloc((size_t)T, sizeof *m->plan.offset);
    disopt_status s = DISOPT_OK;
    if (!last || !size || !live || !m->plan.offset) {
        s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "plan: out of memory");
        goto done;
    }
    for (int t = 0; t < T; t++) {
        const dp_tensor *x = &g->tensors[t];
        last[t] = g->tensors[t].producer; /* unused outputs die where they are born */
        size[t] = be->vt->tensor_bytes(be, N, x->c, x->h, x->w);
    }
    last[g->input] = 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (last[g->nodes[i].in[k]] < i) last[g->nodes[i].in[k]] = i;
    /* a GAP fused into conv i is written during step i: the conv's inputs must not share its memory */
    for (int i = 0; i < g->n_nodes; i++)
        if (gap_fused(m, i))
            for (int k = 0; k < g->nodes[i].n_in; k++)
                if (last[g->nodes[i].in[k]] < i + 1) last[g->nodes[i].in[k]] = i + 1;
    /* outputs and named tensors (taps) stay alive to the end, so they can be read back */
    for (int t = 0; t < T; t++)
        if (g->tensors[t].name[0]) last[t] = g->n_nodes;
    /* greedy first fit over lifetimes, in production order */
    int nlive = 0;
    size_t total = 0, ws = 0;
    for (int step = -1; step < g->n_nodes; step++) {
        int t = step < 0 ? g->input : g->nodes[step].out;
        int born = step < 0 ? -1 : step;
        int k = 0;
        for (int j = 0; j < nlive; j++) /* drop blocks whose tensors died before this step */
            if (live[j].end >= born) live[k++] = live[j];
        nlive = k;
        /* sort live blocks by offset (insertion sort; the list is short) */
        for (int a = 1; a < nlive; a++) {
            live_block v = live[a];
            int b = a - 1;
            while (b >= 0 && live[b].off > v.off) {
                live[b + 1] = live[b];
                b--;
            }
            live[b + 1] = v;
        }
        size_t off = 0;
        for (int j = 0; j < nlive; j++) {
            if (live[j].off >= off + size[t]) break;
            if (live[j].off + live[j].size > off) off = live[j].off + live[j].size;
        }
        m->plan.offset[t] = off;
        live[nlive].off = off;
        live[nlive].size = size[t];
        live[nlive].end = last[t];
        nlive++;
        if (off + size[t] > total) total = off + size[t];
        if (step >= 0) {
            const dp_node *n = &g->nodes[step];
            dp_tview ins[DP_MAX_IN], out;
            for (int q = 0; q < n->n_in; q++) {
                const dp_tensor *x = &g->tensors[n->in[q]];
                ins[q] = (dp_tview){N, x->c, x->h, x->w, NULL};
            }
            const dp_tensor *o = &g->tensors[n->out];
            out = (dp_tview){N, o->c, o->h, o->w, NULL};
            size_t need = be->vt->workspace_bytes(be, n, ins, &out);
            if (need > ws) ws = need;
        }
    }
    s = be->vt->alloc(be, total, &m->plan.arena);
    if (s == DISOPT_OK && ws > 0) s = be->vt->alloc(be, ws, &m->plan.ws);
    if (s != DISOPT_OK) goto done;
    m->plan.arena_bytes = total;
    m->plan.ws_bytes = ws;
    m->plan.n = N;
    m->plan.h = H;
    m->plan.w = W;
    dp_log(m->engine, DISOPT_LOG_DEBUG, "plan %dx%dx%d: %.1f MB activations, %.1f MB workspace, made in %.3f s", N, H,
           W, total / 1048576.0, ws / 1048576.0, dp_now_s() - t0);
done:
    free(last);
    free(size);
    free(live);
    if (s != DISOPT_OK) plan_free(m);
    return s;
}

static dp_tview view_of(const disopt_model *m, int t) {
    const dp_tensor *x = &m->g.tensors[t];
    dp_tview v = {m->plan.n, x->c, x->h, x->w, (char *)m->plan.arena + m->plan.offset[t]};
    return v;
}

disopt_status disopt_model_tap_shape(const disopt_model *m, const char *name, int n, int h, int w, int shape[4]) {
    if (!m || !name || !shape) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "NULL argument");
    int t = dp_graph_find_tensor(&m->g, name);
    if (t < 0) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "no tensor named '%s' in this model", name);
    dp_graph g = m->g; /* shapes are scratch fields: compute on a shallow copy of the tensor table */
    dp_tensor *tmp = malloc((size_t)g.n_tensors * sizeof *tmp);
    if (!tmp) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    memcpy(tmp, m->g.tensors, (size_t)g.n_tensors * sizeof *tmp);
    g.tensors = tmp;
    disopt_status s = dp_graph_shapes(&g, h, w);
    if (s == DISOPT_OK) {
        shape[0] = n;
        shape[1] = tmp[t].c;
        shape[2] = tmp[t].h;
        shape[3] = tmp[t].w;
    }
    free(tmp);
    return s;
}

/* ---------------------------------------------------------------- profiling */
static int prof_category(const dp_node *n, const dp_tview *out) {
    if (n->op != DP_OP_CONV) return PROF_OTHER + (int)n->op;
    const dp_conv_params *c = &n->conv;
    if (out->h == 1 && out->w == 1) return PROF_CONV_1PX;
    if (c->groups > 1 && c->groups == c->cin && c->groups == c->cout) return PROF_CONV_DW;
    if (c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1) return PROF_CONV1X1;
    return PROF_CONV_KXK;
}

static double node_flops(const dp_node *n, const dp_tview *out) {
    if (n->op != DP_OP_CONV) return 0.0;
    const dp_conv_params *c = &n->conv;
    return 2.0 * out->n * out->c * out->h * out->w * (double)(c->cin / c->groups) * c->kh * c->kw;
}

void disopt_model_set_profiling(disopt_model *m, int on) {
    if (!m) return;
    m->profiling = on;
    if (on && !m->prof_node) m->prof_node = calloc((size_t)m->g.n_nodes, sizeof *m->prof_node);
}

disopt_status disopt_model_profile_report(disopt_model *m, char *buf, size_t len) {
    static const char *names[PROF_OTHER] = {"conv 1x1", "conv depthwise", "conv kxk (im2col)", "conv on 1x1 maps"};
    static const char *ops[DP_OP_COUNT] = {"conv", "batchnorm", "activation", "global avg pool", "SE scale",
                                           "SCSE", "add", "concat", "upsample x4", "broadcast", "softmax"};
    if (!m || !buf || len == 0) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "profile_report: bad argument");
    double total = 0;
    for (int i = 0; i < PROF_N; i++) total += m->prof_s[i];
    size_t o = (size_t)snprintf(buf, len, "%-20s %6s %10s %6s %9s\n", "op", "calls", "seconds", "share", "GFLOP/s");
    for (int i = 0; i < PROF_N && o < len; i++) {
        if (m->prof_calls[i] == 0) continue;
        const char *nm = i < PROF_OTHER ? names[i] : ops[i - PROF_OTHER];
        o += (size_t)snprintf(buf + o, len - o, "%-20s %6ld %10.4f %5.1f%% %9.2f\n", nm, m->prof_calls[i], m->prof_s[i],
                              total > 0 ? 100.0 * m->prof_s[i] / total : 0.0,
                              m->prof_s[i] > 0 ? m->prof_flop[i] / m->prof_s[i] / 1e9 : 0.0);
    }
    if (o < len) o += (size_t)snprintf(buf + o, len - o, "%-20s %6s %10.4f\n", "total", "", total);
    /* the ten slowest nodes */
    for (int r = 0; m->prof_node && r < 10 && o < len; r++) {
        int best = -1;
        for (int i = 0; i < m->g.n_nodes; i++)
            if (m->prof_node[i] > 0 && (best < 0 || m->prof_node[i] > m->prof_node[best])) best = i;
        if (best < 0) break;
        const dp_node *n = &m->g.nodes[best];
        const dp_tensor *ti = &m->g.tensors[n->in[0]], *to = &m->g.tensors[n->out];
        o += (size_t)snprintf(buf + o, len - o, "  %8.4f s  %-40.40s %dx%dx%d -> %dx%dx%d k%d g%d\n", m->prof_node[best],
                              n->op == DP_OP_CONV ? m->g.params[n->w_key].key : ops[n->op], ti->c, ti->h, ti->w, to->c,
                              to->h, to->w, n->conv.kh, n->conv.groups);
        m->prof_node[best] = -m->prof_node[best];
    }
    if (m->prof_node) memset(m->prof_node, 0, (size_t)m->g.n_nodes * sizeof *m->prof_node);
    memset(m->prof_s, 0, sizeof m->prof_s);
    memset(m->prof_flop, 0, sizeof m->prof_flop);
    memset(m->prof_calls, 0, sizeof m->prof_calls);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- inference */
/* Any NaN or Inf in x? A branch-free pass over the exponent bits (vectorised by the compiler),
 * twice as fast as an isfinite() loop with an early exit. */
static int has_nonfinite(const float *x, size_t n) {
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        any |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return any != 0;
}

static disopt_status nonfinite_error(const float *input, size_t total, int C, int h, int w) {
    const size_t hw = (size_t)h * w;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(input[i]))
            return dp_error(DISOPT_ERR_INPUT, "input holds NaN or Inf (image %zu, band %zu, row %zu, col %zu)",
                            i / (hw * C), (i / hw) % C, (i % hw) / w, i % w);
    return dp_error(DISOPT_ERR_INPUT, "input holds NaN or Inf");
}

disopt_status disopt_model_infer(disopt_model *m, const float *input, int n, int c, int h, int w,
                                 const disopt_outputs *o) {
    return dp_model_infer_ex(m, input, n, c, h, w, o, 0);
}

/* the end of an inference: the backend idle, then the device's count of NaN/Inf in the input */
static disopt_status infer_finish(disopt_model *m, const float *input, size_t total, int C, int h, int w,
                                  int dev_check) {
    dp_backend *be = m->engine->backend;
    disopt_status s = be->vt->synchronize(be);
    if (s == DISOPT_OK && dev_check) {
        unsigned long long bad = 0;
        s = be->vt->nonfinite_result(be, &bad);
        if (s == DISOPT_OK && bad) s = nonfinite_error(input, total, C, h, w);
    }
    return s;
}

disopt_status dp_model_prefetch(disopt_model *m, const float *input, int n, int c, int h, int w) {
    if (!m || !input || n < 1 || c < 1 || h < 1 || w < 1)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "prefetch: NULL input or empty shape");
    if (!m->engine) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "prefetch: the model has no engine (bind it)");
    dp_backend *be = m->engine->backend;
    if (!be->vt->prefetch) return DISOPT_OK;
    return be->vt->prefetch(be, input, (size_t)n * c * h * w);
}

long dp_model_prefetch_hits(const disopt_model *m) {
    if (!m || !m->engine || !m->engine->backend->vt->prefetch_hits) return 0;
    return m->engine->backend->vt->prefetch_hits(m->engine->backend);
}

disopt_status dp_model_infer_wait(disopt_model *m) {
    if (!m || !m->pend.on) return DISOPT_OK;
    m->pend.on = 0;
    return infer_finish(m, m->pend.input, m->pend.total, m->pend.c, m->pend.h, m->pend.w, m->pend.dev_check);
}

disopt_status dp_model_infer_ex(disopt_model *m, const float *input, int n, int c, int h, int w,
                                const disopt_outputs *o, int flags) {
    DP_TRY(dp_model_infer_wait(m)); /* (an earlier DP_INFER_ASYNC one) */
    const int device_out = flags & DP_INFER_DEVICE_OUT, device_in = flags & DP_INFER_DEVICE_IN;
    const int prep = flags & DP_INFER_PREPARE;
    if ((flags & DP_INFER_ASYNC) && !device_out)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "an asynchronous inference writes into device memory only");
    if (!m || (!input && !prep) || !o) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_infer: NULL argument");
    if (!m->engine) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_infer: the model has no engine (bind it)");
    dp_graph *g = &m->g;
    dp_backend *be = m->engine->backend;
    if (c != g->in_channels)
        return dp_error(DISOPT_ERR_INPUT, "input has %d channels, the model takes %d (%s)", c, g->in_channels,
                        m->info.name);
    if (n < 1 || h < 16 || w < 16 || h % 16 || w % 16)
        return dp_error(DISOPT_ERR_INPUT, "input %dx%dx%d: height and width must be multiples of 16 (>= 16)", n, h, w);
    if ((o->sar_logits || o->rgb_logits) && g->out_sar < 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "the teacher has no SAR-only or pseudo-optical logits");
    if (o->num_taps < 0 || (o->num_taps > 0 && !o->taps)) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "bad taps");
    if (device_in && !be->vt->upload_device)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "the backend cannot read its input from device memory");
    if (device_out && (o->probability || !be->vt->download_device))
        return dp_error(DISOPT_ERR_UNSUPPORTED, "%s", o->probability ? "no probability plane into device memory"
                                                                     : "the backend cannot write into device memory");
    disopt_status (*const dl)(dp_backend *, float *, const dp_tview *) =
        device_out ? be->vt->download_device : be->vt->download;
    int C = g->in_channels;
    size_t total = (size_t)n * C * h * w;
    disopt_infer_timing *tm = &m->timing;
    memset(tm, 0, sizeof *tm);
    double t_start = dp_now_s(), t0 = t_start;
    /* NaN/Inf are refused: on the device when the backend can count them during the upload,
     * otherwise by a scan here first */
    const int dev_check = !device_in && be->vt->upload_checked && be->vt->nonfinite_result;
    if (!prep && !device_in && !dev_check && has_nonfinite(input, total)) return nonfinite_error(input, total, C, h, w);
    tm->check_s = dp_now_s() - t0;
    /* which nodes are needed for what was asked */
    int T = g->n_tensors;
    char *want = calloc((size_t)T, 1);
    int *tapt = NULL;
    if (!want) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
    disopt_status s = DISOPT_OK;
    int sm = dp_graph_find_tensor(g, "softmax");
    if (o->fused_logits) want[g->out_fused] = 1;
    if (o->probability) want[sm] = 1;
    if (o->sar_logits) want[g->out_sar] = 1;
    if (o->rgb_logits) want[g->out_rgb] = 1;
    if (o->num_taps > 0) {
        tapt = malloc((size_t)o->num_taps * sizeof *tapt);
        if (!tapt) s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
        for (int i = 0; s == DISOPT_OK && i < o->num_taps; i++) {
            tapt[i] = dp_graph_find_tensor(g, o->taps[i].name);
            if (tapt[i] < 0 || !o->taps[i].data)
                s = dp_error(DISOPT_ERR_INVALID_ARGUMENT, "tap '%s': unknown tensor or NULL buffer",
                             o->taps[i].name ? o->taps[i].name : "(null)");
            else
                want[tapt[i]] = 1;
        }
    }
    for (int i = g->n_nodes - 1; i >= 0; i--) /* propagate need backwards */
        if (want[g->nodes[i].out])
            for (int k = 0; k < g->nodes[i].n_in; k++) want[g->nodes[i].in[k]] = 1;
    if (s == DISOPT_OK) s = plan_build(m, n, h, w);
    if (s == DISOPT_OK && !prep) {
        dp_tview in = view_of(m, g->input);
        t0 = dp_now_s();
        s = device_in   ? be->vt->upload_device(be, &in, input)
            : dev_check ? be->vt->upload_checked(be, &in, input)
                        : be->vt->upload(be, &in, input);
        tm->upload_s = dp_now_s() - t0;
    }
    t0 = dp_now_s();
    /* with a graph-capable backend (and no profiling): replay the recorded sequence for this set of
     * wanted tensors, or record it now */
    void *graph = NULL;
    int recording = 0;
    if (s == DISOPT_OK && be->vt->graph_begin && !m->profiling) {
        for (int k = 0; k < DP_PLAN_GRAPHS && !graph; k++)
            if (m->plan.graph[k] && memcmp(m->plan.graph_want[k], want, (size_t)T) == 0) graph = m->plan.graph[k];
        if (!graph && be->vt->graph_begin(be) == DISOPT_OK) recording = 1;
        disopt_clear_error();
    }
    /* preparing: with a graph to record (or one recorded), record it only; otherwise the plan was all */
    for (int i = 0; s == DISOPT_OK && !graph && (!prep || recording) && i < g->n_nodes; i++) {
        const dp_node *nd = &g->nodes[i];
        if (!want[nd->out]) continue;
        dp_tview ins[DP_MAX_IN], out = view_of(m, nd->out);
        for (int k = 0; k < nd->n_in; k++) ins[k] = view_of(m, nd->in[k]);
        double t0 = m->profiling ? dp_now_s() : 0.0;
        const int fuse = gap_fused(m, i) && want[g->nodes[i + 1].out]; /* profiled as part of the conv */
        if (fuse) {
            dp_tview gv = view_of(m, g->nodes[i + 1].out);
            s = be->vt->run_conv_gap(be, nd, ins, &out, &gv, m->plan.ws, m->plan.ws_bytes);
        } else {
            s = be->vt->run_node(be, nd, ins, &out, m->plan.ws, m->plan.ws_bytes);
        }
        if (m->profiling && s == DISOPT_OK) {
            s = be->vt->synchronize(be);
            int cat = prof_category(nd, &out);
            double dt = dp_now_s() - t0;
            m->prof_s[cat] += dt;
            if (m->prof_node) m->prof_node[i] += dt;
            m->prof_flop[cat] += node_flops(nd, &out);
            m->prof_calls[cat]++;
        }
        if (fuse) i++;
    }
    if (recording) {
        disopt_status ge = be->vt->graph_end(be, s == DISOPT_OK, &graph);
        if (s == DISOPT_OK) s = ge;
        if (s == DISOPT_OK) { /* keep it, replacing the oldest */
            int k = m->plan.graph_next;
            m->plan.graph_next = (k + 1) % DP_PLAN_GRAPHS;
            if (m->plan.graph[k]) be->vt->graph_destroy(be, m->plan.graph[k]);
            free(m->plan.graph_want[k]);
            m->plan.graph[k] = graph;
            m->plan.graph_want[k] = malloc((size_t)T);
            if (m->plan.graph_want[k]) memcpy(m->plan.graph_want[k], want, (size_t)T);
            else {
                be->vt->graph_destroy(be, graph);
                m->plan.graph[k] = graph = NULL;
                s = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "out of memory");
            }
        }
    }
    if (prep) { /* nothing was run: nothing to wait for or read back */
        free(want);
        free(tapt);
        return s;
    }
    if (s == DISOPT_OK && graph) s = be->vt->graph_launch(be, graph);
    /* (into device memory: the copies follow in stream order, and the wait comes after them) */
    if (s == DISOPT_OK && !device_out) s = infer_finish(m, input, total, C, h, w, dev_check);
    tm->compute_s = dp_now_s() - t0;
    t0 = dp_now_s();
    for (int i = 0; s == DISOPT_OK && i < o->num_taps; i++) {
        dp_tview v = view_of(m, tapt[i]);
        s = dl(be, o->taps[i].data, &v);
    }
    struct {
        float *dst;
        int t;
    } outs[3] = {{o->fused_logits, g->out_fused}, {o->sar_logits, g->out_sar}, {o->rgb_logits, g->out_rgb}};
    for (int i = 0; s == DISOPT_OK && i < 3; i++)
        if (outs[i].dst) {
            dp_tview v = view_of(m, outs[i].t);
            s = dl(be, outs[i].dst, &v);
        }
    if (s == DISOPT_OK && o->probability) { /* the building plane only, into the caller's buffer */
        dp_tview v = view_of(m, sm);
        s = be->vt->download_planes(be, o->probability, &v, g->num_classes > 1 ? 1 : 0, 1);
    }
    if (s == DISOPT_OK && device_out) {
        if (flags & DP_INFER_ASYNC) {
            m->pend.on = 1, m->pend.dev_check = dev_check, m->pend.c = C, m->pend.h = h, m->pend.w = w;
            m->pend.input = input;
            m->pend.total = total;
        } else {
            s = infer_finish(m, input, total, C, h, w, dev_check);
        }
    } else if (s != DISOPT_OK && device_out) { /* nothing left running on a failure; its message kept */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", disopt_last_error());
        if (be->vt->synchronize(be) != DISOPT_OK) s = dp_error(s, "%s", msg);
    }
    tm->download_s = dp_now_s() - t0;
    tm->total_s = dp_now_s() - t_start;
    free(want);
    free(tapt);
    return s;
}

disopt_status disopt_model_last_timing(const disopt_model *m, disopt_infer_timing *t) {
    if (!m || !t) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "disopt_model_last_timing: NULL argument");
    *t = m->timing;
    return DISOPT_OK;
}
