/*
 * graph.c - the compute graph: tensors, nodes and the state-dict parameters they use,
 * plus shape inference. Model builders (efficientnet.c, deeplab.c, disoptnet.c) fill it.
 */
#include "graph_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static disopt_status dp_grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return DISOPT_OK;
    int ncap = *cap ? *cap * 2 : 64;
    while (ncap < need) ncap *= 2;
    void *np = realloc(*p, (size_t)ncap * elem);
    if (!np) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "graph: out of memory");
    memset((char *)np + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
    *p = np;
    *cap = ncap;
    return DISOPT_OK;
}

void dp_graph_free(dp_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->n_params; i++) {
        free(g->params[i].key);
        free(g->params[i].data);
    }
    free(g->warena);
    free(g->params);
    free(g->nodes);
    free(g->tensors);
    memset(g, 0, sizeof *g);
}

int dp_graph_find_param(const dp_graph *g, const char *key) {
    for (int i = 0; i < g->n_params; i++)
        if (strcmp(g->params[i].key, key) == 0) return i;
    return -1;
}

int dp_graph_find_tensor(const dp_graph *g, const char *name) {
    if (!name || !name[0]) return -1;
    for (int i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return i;
    return -1;
}

int gb_param(gb_ctx *b, const char *key, disopt_key_kind kind, int ndim, int64_t d0, int64_t d1, int64_t d2,
             int64_t d3, int used) {
    dp_graph *g = b->g;
    if (b->status != DISOPT_OK) return -1;
    if (dp_graph_find_param(g, key) >= 0) {
        b->status = dp_error(DISOPT_ERR_INTERNAL, "graph: key %s declared twice", key);
        return -1;
    }
    b->status = dp_grow((void **)&g->params, &g->cap_params, g->n_params + 1, sizeof *g->params);
    if (b->status != DISOPT_OK) return -1;
    dp_param *p = &g->params[g->n_params];
    p->key = strdup(key);
    if (!p->key) {
        b->status = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "graph: out of memory");
        return -1;
    }
    p->kind = kind;
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->shape[2] = d2;
    p->shape[3] = d3;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) p->numel *= p->shape[i];
    p->used = used;
    return g->n_params++;
}

int gb_tensor(gb_ctx *b, const char *name, int c) {
    dp_graph *g = b->g;
    if (b->status != DISOPT_OK) return -1;
    b->status = dp_grow((void **)&g->tensors, &g->cap_tensors, g->n_tensors + 1, sizeof *g->tensors);
    if (b->status != DISOPT_OK) return -1;
    dp_tensor *t = &g->tensors[g->n_tensors];
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    t->c = c;
    t->producer = -1;
    return g->n_tensors++;
}

void gb_name(gb_ctx *b, int t, const char *name) {
    if (b->status != DISOPT_OK || t < 0) return;
    snprintf(b->g->tensors[t].name, sizeof b->g->tensors[t].name, "%s", name);
}

int gb_node(gb_ctx *b, const dp_node *proto, int cout) {
    dp_graph *g = b->g;
    if (b->status != DISOPT_OK) return -1;
    for (int i = 0; i < proto->n_in; i++)
        if (proto->in[i] < 0) {
            b->status = dp_error(DISOPT_ERR_INTERNAL, "graph: node with a missing input");
            return -1;
        }
    int out = gb_tensor(b, NULL, cout);
    if (out < 0) return -1;
    b->status = dp_grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes);
    if (b->status != DISOPT_OK) return -1;
    dp_node *n = &g->nodes[g->n_nodes];
    *n = *proto;
    n->out = out;
    g->tensors[out].producer = g->n_nodes;
    g->n_nodes++;
    return out;
}

static void gb_declare_bn(gb_ctx *b, const char *prefix, int c, int used, int *first) {
    char key[256];
    static const char *sfx[5] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
    static const disopt_key_kind kinds[5] = {DISOPT_KEY_BN_WEIGHT, DISOPT_KEY_BN_BIAS, DISOPT_KEY_BN_MEAN,
                                             DISOPT_KEY_BN_VAR, DISOPT_KEY_BN_COUNT};
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "%s.%s", prefix, sfx[i]);
        int id = gb_param(b, key, kinds[i], i < 4 ? 1 : 0, i < 4 ? c : 1, 1, 1, 1, used);
        if (i == 0) *first = id;
    }
}

void gb_unused_conv_bn(gb_ctx *b, const char *conv, int cin, int cout, const char *bn) {
    char key[256];
    int first;
    snprintf(key, sizeof key, "%s.weight", conv);
    gb_param(b, key, DISOPT_KEY_CONV_WEIGHT, 4, cout, cin, 1, 1, 0);
    gb_declare_bn(b, bn, cout, 0, &first);
}

int gb_conv(gb_ctx *b, int x, const char *conv, const gb_conv_spec *s) {
    char key[256];
    dp_node n;
    if (b->status != DISOPT_OK) return -1;
    memset(&n, 0, sizeof n);
    int cin = b->g->tensors[x].c;
    n.op = DP_OP_CONV;
    n.in[0] = x;
    n.n_in = 1;
    if (s->has_scale && b->training) {
        /* training graphs: the SE gate is its own node, x * gate, before the projection */
        x = gb_simple(b, DP_OP_SCALE_CH, x, s->scale_t, -1, cin);
        if (x < 0) return -1;
        n.in[0] = x;
    } else if (s->has_scale) {
        n.in[1] = s->scale_t;
        n.n_in = 2;
    }
    n.act = b->training ? DP_ACT_NONE : s->act;
    n.conv.cin = cin;
    n.conv.cout = s->cout;
    n.conv.kh = n.conv.kw = s->k;
    n.conv.sh = n.conv.sw = s->stride > 0 ? s->stride : 1;
    n.conv.dh = n.conv.dw = s->dilation > 0 ? s->dilation : 1;
    n.conv.groups = s->groups > 0 ? s->groups : 1;
    n.conv.pl = s->pad[0];
    n.conv.pr = s->pad[1];
    n.conv.pt = s->pad[2];
    n.conv.pb = s->pad[3];
    if (cin % n.conv.groups || s->cout % n.conv.groups) {
        b->status = dp_error(DISOPT_ERR_INTERNAL, "graph: %s: channels not divisible by groups", conv);
        return -1;
    }
    snprintf(key, sizeof key, "%s.weight", conv);
    n.w_key = gb_param(b, key, DISOPT_KEY_CONV_WEIGHT, 4, s->cout, cin / n.conv.groups, s->k, s->k, 1);
    n.b_key = -1;
    if (s->bias) {
        snprintf(key, sizeof key, "%s.bias", conv);
        n.b_key = gb_param(b, key, DISOPT_KEY_CONV_BIAS, 1, s->cout, 1, 1, 1, 1);
    }
    n.bn_key = -1;
    if (s->bn) {
        gb_declare_bn(b, s->bn, s->cout, 1, &n.bn_key);
        n.bn_eps = s->bn_eps;
    }
    if (!b->training) return gb_node(b, &n, s->cout);
    /* training graphs: conv -> BN (batch statistics) -> activation, each its own node */
    int bn_key = n.bn_key;
    n.bn_key = -1;
    int y = gb_node(b, &n, s->cout);
    if (bn_key >= 0 && y >= 0) {
        dp_node m;
        memset(&m, 0, sizeof m);
        m.op = DP_OP_BN;
        m.w_key = m.b_key = -1;
        m.in[0] = y;
        m.n_in = 1;
        m.bn_key = bn_key;
        m.bn_eps = s->bn_eps;
        m.bn_momentum = s->bn_momentum > 0 ? s->bn_momentum : 0.1;
        y = gb_node(b, &m, s->cout);
    }
    if (s->act != DP_ACT_NONE && y >= 0) {
        dp_node m;
        memset(&m, 0, sizeof m);
        m.op = DP_OP_ACT;
        m.w_key = m.b_key = m.bn_key = -1;
        m.in[0] = y;
        m.n_in = 1;
        m.act = s->act;
        y = gb_node(b, &m, s->cout);
    }
    return y;
}

int gb_dropout(gb_ctx *b, dp_op op, int x, double p) {
    dp_node n;
    if (b->status != DISOPT_OK) return -1;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.w_key = n.b_key = n.bn_key = -1;
    n.in[0] = x;
    n.n_in = 1;
    n.p = p;
    return gb_node(b, &n, b->g->tensors[x].c);
}

int gb_simple(gb_ctx *b, dp_op op, int a, int a2, int a3, int cout) {
    dp_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.w_key = n.b_key = n.bn_key = -1;
    n.in[0] = a;
    n.n_in = 1;
    if (a2 >= 0 || op == DP_OP_ADD || op == DP_OP_SCALE_CH || op == DP_OP_BROADCAST) n.in[n.n_in++] = a2;
    if (a3 >= 0 || op == DP_OP_SCSE) n.in[n.n_in++] = a3;
    if (b->status != DISOPT_OK) return -1;
    return gb_node(b, &n, cout);
}

int gb_gap(gb_ctx *b, int x) { return gb_simple(b, DP_OP_GAP, x, -1, -1, b->status ? 0 : b->g->tensors[x].c); }

int gb_upsample(gb_ctx *b, int x, int scale) {
    dp_node n;
    if (b->status != DISOPT_OK) return -1;
    memset(&n, 0, sizeof n);
    n.op = DP_OP_UPSAMPLE;
    n.w_key = n.b_key = n.bn_key = -1;
    n.in[0] = x;
    n.n_in = 1;
    n.scale = scale;
    return gb_node(b, &n, b->g->tensors[x].c);
}

int gb_concat(gb_ctx *b, const int *xs, int count) {
    dp_node n;
    int c = 0;
    if (b->status != DISOPT_OK) return -1;
    if (count > DP_MAX_IN) {
        b->status = dp_error(DISOPT_ERR_INTERNAL, "graph: concat of %d tensors", count);
        return -1;
    }
    memset(&n, 0, sizeof n);
    n.op = DP_OP_CONCAT;
    n.w_key = n.b_key = n.bn_key = -1;
    for (int i = 0; i < count; i++) {
        n.in[i] = xs[i];
        c += xs[i] >= 0 ? b->g->tensors[xs[i]].c : 0;
    }
    n.n_in = count;
    return gb_node(b, &n, c);
}

/* ---------------------------------------------------------------- shapes */
disopt_status dp_graph_shapes(dp_graph *g, int H, int W) {
    g->tensors[g->input].h = H;
    g->tensors[g->input].w = W;
    for (int i = 0; i < g->n_nodes; i++) {
        const dp_node *n = &g->nodes[i];
        const dp_tensor *a = &g->tensors[n->in[0]];
        dp_tensor *o = &g->tensors[n->out];
        switch (n->op) {
        case DP_OP_CONV: {
            const dp_conv_params *c = &n->conv;
            int eh = c->dh * (c->kh - 1) + 1, ew = c->dw * (c->kw - 1) + 1;
            int ph = a->h + c->pt + c->pb, pw = a->w + c->pl + c->pr;
            if (ph < eh || pw < ew)
                return dp_error(DISOPT_ERR_INPUT, "input %dx%d too small: a convolution sees %dx%d", H, W, a->h,
                                a->w);
            o->h = (ph - eh) / c->sh + 1;
            o->w = (pw - ew) / c->sw + 1;
            break;
        }
        case DP_OP_GAP:
            o->h = o->w = 1;
            break;
        case DP_OP_UPSAMPLE:
            o->h = a->h * n->scale;
            o->w = a->w * n->scale;
            break;
        case DP_OP_BROADCAST:
            o->h = g->tensors[n->in[1]].h;
            o->w = g->tensors[n->in[1]].w;
            break;
        case DP_OP_CONCAT:
        case DP_OP_ADD:
        case DP_OP_SCSE:
            for (int k = 1; k < n->n_in; k++) {
                const dp_tensor *bt = &g->tensors[n->in[k]];
                int needs_hw = !(n->op == DP_OP_SCSE && k == 1);
                if (needs_hw && (bt->h != a->h || bt->w != a->w))
                    return dp_error(DISOPT_ERR_INPUT,
                                    "input %dx%d not supported: feature maps %dx%d and %dx%d meet (use sizes that "
                                    "are multiples of 16)",
                                    H, W, a->h, a->w, bt->h, bt->w);
            }
            o->h = a->h;
            o->w = a->w;
            break;
        default:
            o->h = a->h;
            o->w = a->w;
            break;
        }
    }
    return DISOPT_OK;
}
