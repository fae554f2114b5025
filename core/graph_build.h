/*
 * graph_build.h - helpers the model builders use to declare parameters and nodes.
 * Errors are sticky: after the first failure every helper returns -1 and b->status holds the cause.
 */
#ifndef DISOPT_GRAPH_BUILD_H
#define DISOPT_GRAPH_BUILD_H

#include "internal.h"

typedef struct gb_ctx {
    dp_graph *g;
    disopt_status status;
    int training;      /* build the training graph (see dp_graph_build_train) */
} gb_ctx;

typedef struct gb_conv_spec {
    int cout, k, stride, dilation, groups;
    int pad[4];        /* left, right, top, bottom (PyTorch ZeroPad2d order) */
    int bias;          /* conv has its own bias key */
    const char *bn;    /* BN module prefix to fold, or NULL */
    int has_scale;     /* the input is first multiplied per channel by tensor scale_t (N,C,1,1): the SE gate */
    int scale_t;
    float bn_eps;
    double bn_momentum; /* PyTorch BN momentum (training graphs); 0 means PyTorch's default 0.1 */
    dp_act act;
} gb_conv_spec;

int gb_param(gb_ctx *b, const char *key, disopt_key_kind kind, int ndim, int64_t d0, int64_t d1, int64_t d2,
             int64_t d3, int used);
int gb_tensor(gb_ctx *b, const char *name, int c);
void gb_name(gb_ctx *b, int t, const char *name);
int gb_node(gb_ctx *b, const dp_node *proto, int cout);
/* conv: module prefix of the conv ("encoder._conv_stem"); returns the output tensor */
int gb_conv(gb_ctx *b, int x, const char *conv, const gb_conv_spec *s);
/* declares keys of a conv + BN pair the forward pass never uses (EfficientNet's _conv_head/_bn1) */
void gb_unused_conv_bn(gb_ctx *b, const char *conv, int cin, int cout, const char *bn);
int gb_simple(gb_ctx *b, dp_op op, int a, int a2, int a3, int cout);
int gb_gap(gb_ctx *b, int x);
int gb_upsample(gb_ctx *b, int x, int scale);
int gb_concat(gb_ctx *b, const int *xs, int count);
/* training graphs: dropout (probability p) / drop-connect (rate p) of x */
int gb_dropout(gb_ctx *b, dp_op op, int x, double p);

#endif
