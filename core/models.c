/*
 * models.c - the authors' networks as graphs:
 *   EfficientNet b0..b7 (efficientnet_pytorch 0.6.3 as wrapped by smp 0.2.0, stage 5 dilated),
 *   the smp 0.2.0 DeepLabV3+ decoder, the teacher DeepLabV3plus and the student BiDeepLabV3p_Dist.
 * Parameter names are exactly the authors' state_dict keys (see ../shared/spec/reference/keys_*.tsv).
 */
#include "graph_build.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- EfficientNet configuration */
typedef struct {
    double width, depth;
    int image_size;
    int stage_idxs[4]; /* smp's block indices that end the encoder stages 2..5 */
} effnet_coef;

static const effnet_coef EFFNET[8] = {
    {1.0, 1.0, 224, {3, 5, 9, 16}},   {1.0, 1.1, 240, {5, 8, 16, 23}},  {1.1, 1.2, 260, {5, 8, 16, 23}},
    {1.2, 1.4, 300, {5, 8, 18, 26}},  {1.4, 1.8, 380, {6, 10, 22, 32}}, {1.6, 2.2, 456, {8, 13, 27, 39}},
    {1.8, 2.6, 528, {9, 15, 31, 45}}, {2.0, 3.1, 600, {11, 18, 38, 55}},
};

/* The seven base block strings of EfficientNet-B0: repeats, kernel, stride, expand, in, out (se 0.25). */
static const int EFFNET_BASE[7][6] = {
    {1, 3, 1, 1, 32, 16},   {2, 3, 2, 6, 16, 24},   {2, 5, 2, 6, 24, 40},  {3, 3, 2, 6, 40, 80},
    {3, 5, 1, 6, 80, 112}, {4, 5, 2, 6, 112, 192}, {1, 3, 1, 6, 192, 320},
};

#define EFFNET_MAX_BLOCKS 64

typedef struct {
    int k, stride, expand, in, out, residual;
} mb_block;

typedef struct {
    int variant;
    int stem_out, head_out;
    int nblocks;
    mb_block blocks[EFFNET_MAX_BLOCKS];
    int image_size;
    int stage_idxs[4];
    int out_channels[6]; /* f0..f5 */
} effnet_cfg;

static int round_filters(int filters, double width) {
    const int divisor = 8;
    double f = filters * width;
    int nf = (int)(f + divisor / 2.0) / divisor * divisor;
    if (nf < divisor) nf = divisor;
    if (nf < 0.9 * f) nf += divisor;
    return nf;
}

static int round_repeats(int repeats, double depth) { return (int)ceil(depth * repeats); }

static disopt_status effnet_config(int variant, int in_channels, effnet_cfg *c) {
    if (variant < 0 || variant > 7) return dp_error(DISOPT_ERR_UNSUPPORTED, "EfficientNet-b%d does not exist", variant);
    const effnet_coef *k = &EFFNET[variant];
    memset(c, 0, sizeof *c);
    c->variant = variant;
    c->image_size = k->image_size;
    memcpy(c->stage_idxs, k->stage_idxs, sizeof c->stage_idxs);
    c->stem_out = round_filters(32, k->width);
    c->head_out = round_filters(1280, k->width);
    for (int s = 0; s < 7; s++) {
        int reps = round_repeats(EFFNET_BASE[s][0], k->depth);
        int in = round_filters(EFFNET_BASE[s][4], k->width), out = round_filters(EFFNET_BASE[s][5], k->width);
        for (int r = 0; r < reps; r++) {
            if (c->nblocks >= EFFNET_MAX_BLOCKS) return dp_error(DISOPT_ERR_INTERNAL, "too many blocks");
            mb_block *bl = &c->blocks[c->nblocks++];
            bl->k = EFFNET_BASE[s][1];
            bl->stride = r == 0 ? EFFNET_BASE[s][2] : 1;
            bl->expand = EFFNET_BASE[s][3];
            bl->in = r == 0 ? in : out;
            bl->out = out;
            /* efficientnet_pytorch 0.6.3 compares the block's stride (a list for the first block of a stage,
             * the int 1 for repeats) with 1: only repeats with in == out get the identity skip. */
            bl->residual = r > 0 && bl->in == bl->out;
        }
    }
    if (c->stage_idxs[3] != c->nblocks) return dp_error(DISOPT_ERR_INTERNAL, "EfficientNet stage table mismatch");
    c->out_channels[0] = in_channels;
    c->out_channels[1] = c->stem_out;
    for (int i = 0; i < 4; i++) c->out_channels[2 + i] = c->blocks[c->stage_idxs[i] - 1].out;
    return DISOPT_OK;
}

/* efficientnet_pytorch 0.6.3's static "same" padding, computed for the construction image size. */
static void static_same_pad(int k, int stride, int image_size, int pad[4]) {
    int o = (image_size + stride - 1) / stride;
    int p = (o - 1) * stride + k - image_size;
    if (p < 0) p = 0;
    pad[0] = pad[2] = p / 2;
    pad[1] = pad[3] = p - p / 2;
}

static void sym_pad(int p, int pad[4]) { pad[0] = pad[1] = pad[2] = pad[3] = p; }

/* efficientnet_pytorch 0.6.3: BN momentum = 1 - batch_norm_momentum (0.99), as a Python double */
#define EFFNET_BN_MOMENTUM (1.0 - 0.99)
/* efficientnet_pytorch's global drop_connect_rate (smp 0.2.0 keeps the default) */
#define EFFNET_DROP_CONNECT 0.2

static int conv_dil(gb_ctx *b, int x, const char *name, int cout, int k, int pad, int dil, int bias, const char *bn,
                    float eps, dp_act act) {
    gb_conv_spec s;
    memset(&s, 0, sizeof s);
    s.cout = cout;
    s.dilation = dil;
    s.k = k;
    sym_pad(pad, s.pad);
    s.bias = bias;
    s.bn = bn;
    s.bn_eps = eps;
    s.act = act;
    return gb_conv(b, x, name, &s);
}

static int conv_simple(gb_ctx *b, int x, const char *name, int cout, int k, int pad, int bias, const char *bn,
                       float eps, dp_act act) {
    return conv_dil(b, x, name, cout, k, pad, 1, bias, bn, eps, act);
}

/* dc_rate: the block's drop-connect rate (training graphs; 0 = none, as Python's `if drop_connect_rate:`) */
static int mbconv(gb_ctx *b, int x, const char *prefix, const mb_block *bl, int dilated, int image_size,
                  double dc_rate) {
    char n1[256], n2[256];
    const float eps = 1e-3f;
    int inp = x;
    int oup = bl->in * bl->expand;
    int dil = dilated ? 2 : 1; /* make_dilated sets dilation 2 on every conv of the stage, 1x1 ones too */
    gb_conv_spec s;
    if (bl->expand != 1) {
        snprintf(n1, sizeof n1, "%s_expand_conv", prefix);
        snprintf(n2, sizeof n2, "%s_bn0", prefix);
        memset(&s, 0, sizeof s);
        s.cout = oup;
        s.k = 1;
        s.dilation = dil;
        s.bn = n2;
        s.bn_eps = eps;
        s.bn_momentum = EFFNET_BN_MOMENTUM;
        s.act = DP_ACT_SWISH;
        x = gb_conv(b, x, n1, &s);
    }
    memset(&s, 0, sizeof s);
    s.cout = oup;
    s.k = bl->k;
    s.groups = oup;
    if (dilated) { /* smp's make_dilated: stride 1, dilation 2, symmetric padding, no static pad */
        s.stride = 1;
        s.dilation = 2;
        sym_pad((bl->k / 2) * 2, s.pad);
    } else {
        s.stride = bl->stride;
        s.dilation = 1;
        static_same_pad(bl->k, bl->stride, image_size, s.pad);
    }
    snprintf(n1, sizeof n1, "%s_depthwise_conv", prefix);
    snprintf(n2, sizeof n2, "%s_bn1", prefix);
    s.bn = n2;
    s.bn_eps = eps;
    s.bn_momentum = EFFNET_BN_MOMENTUM;
    s.act = DP_ACT_SWISH;
    x = gb_conv(b, x, n1, &s);
    /* squeeze and excitation */
    int nsq = (int)(bl->in * 0.25);
    if (nsq < 1) nsq = 1;
    int g = gb_gap(b, x);
    snprintf(n1, sizeof n1, "%s_se_reduce", prefix);
    g = conv_dil(b, g, n1, nsq, 1, 0, dil, 1, NULL, 0, DP_ACT_SWISH);
    snprintf(n1, sizeof n1, "%s_se_expand", prefix);
    g = conv_dil(b, g, n1, oup, 1, 0, dil, 1, NULL, 0, DP_ACT_SIGMOID);
    /* x * gate goes straight into the projection: the conv multiplies each input channel by the gate
     * as it reads it, the same float product PyTorch forms, without writing the scaled tensor */
    snprintf(n1, sizeof n1, "%s_project_conv", prefix);
    snprintf(n2, sizeof n2, "%s_bn2", prefix);
    memset(&s, 0, sizeof s);
    s.cout = bl->out;
    s.k = 1;
    s.dilation = dil;
    s.bn = n2;
    s.bn_eps = eps;
    s.bn_momentum = EFFNET_BN_MOMENTUM;
    s.act = DP_ACT_NONE;
    s.has_scale = 1;
    s.scale_t = g;
    x = gb_conv(b, x, n1, &s);
    if (bl->residual && b->training && dc_rate != 0.0) x = gb_dropout(b, DP_OP_DROP_CONNECT, x, dc_rate);
    if (bl->residual) x = gb_simple(b, DP_OP_ADD, x, inp, -1, bl->out);
    return x;
}

/* Full encoder: features f1..f5 into f[1..5] (f[0] = input). */
static void effnet_encoder(gb_ctx *b, const effnet_cfg *c, const char *prefix, int input, int f[6]) {
    char n1[256], n2[256];
    gb_conv_spec s;
    memset(&s, 0, sizeof s);
    s.cout = c->stem_out;
    s.k = 3;
    s.stride = 2;
    static_same_pad(3, 2, c->image_size, s.pad);
    snprintf(n1, sizeof n1, "%s_conv_stem", prefix);
    snprintf(n2, sizeof n2, "%s_bn0", prefix);
    s.bn = n2;
    s.bn_eps = 1e-3f;
    s.bn_momentum = EFFNET_BN_MOMENTUM;
    s.act = DP_ACT_SWISH;
    f[0] = input;
    int x = gb_conv(b, input, n1, &s);
    f[1] = x;
    for (int i = 0; i < c->nblocks; i++) {
        snprintf(n1, sizeof n1, "%s_blocks.%d.", prefix, i);
        /* smp 0.2.0's EfficientNetEncoder.forward: rate * block_number / len(blocks), in double */
        x = mbconv(b, x, n1, &c->blocks[i], i >= c->stage_idxs[2], c->image_size,
                   EFFNET_DROP_CONNECT * (double)i / (double)c->nblocks);
        for (int st = 0; st < 4; st++)
            if (i == c->stage_idxs[st] - 1) f[2 + st] = x;
    }
    snprintf(n1, sizeof n1, "%s_conv_head", prefix);
    snprintf(n2, sizeof n2, "%s_bn1", prefix);
    gb_unused_conv_bn(b, n1, c->blocks[c->nblocks - 1].out, c->head_out, n2);
}

/* ---------------------------------------------------------------- DeepLabV3+ decoder (smp 0.2.0) */
static int separable(gb_ctx *b, int x, const char *dw, const char *pw, int cout, int dil, const char *bn) {
    gb_conv_spec s;
    memset(&s, 0, sizeof s);
    int cin = b->status ? 1 : b->g->tensors[x].c;
    s.cout = cin;
    s.k = 3;
    s.dilation = dil;
    s.groups = cin;
    sym_pad(dil, s.pad);
    x = gb_conv(b, x, dw, &s);
    return conv_simple(b, x, pw, cout, 1, 0, 0, bn, 1e-5f, DP_ACT_RELU);
}

static int deeplab_decoder(gb_ctx *b, const char *p, int f2, int f5) {
    char n1[256], n2[256], n3[256];
    const int C = 256;
    const int rates[3] = {12, 24, 36};
    int br[5];
    snprintf(n1, sizeof n1, "%saspp.0.convs.0.0", p);
    snprintf(n2, sizeof n2, "%saspp.0.convs.0.1", p);
    br[0] = conv_simple(b, f5, n1, C, 1, 0, 0, n2, 1e-5f, DP_ACT_RELU);
    for (int i = 0; i < 3; i++) {
        snprintf(n1, sizeof n1, "%saspp.0.convs.%d.0.0", p, i + 1);
        snprintf(n2, sizeof n2, "%saspp.0.convs.%d.0.1", p, i + 1);
        snprintf(n3, sizeof n3, "%saspp.0.convs.%d.1", p, i + 1);
        br[i + 1] = separable(b, f5, n1, n2, C, rates[i], n3);
    }
    int g = gb_gap(b, f5);
    snprintf(n1, sizeof n1, "%saspp.0.convs.4.1", p);
    snprintf(n2, sizeof n2, "%saspp.0.convs.4.2", p);
    g = conv_simple(b, g, n1, C, 1, 0, 0, n2, 1e-5f, DP_ACT_RELU);
    br[4] = gb_simple(b, DP_OP_BROADCAST, g, f5, -1, C);
    int x = gb_concat(b, br, 5);
    snprintf(n1, sizeof n1, "%saspp.0.project.0", p);
    snprintf(n2, sizeof n2, "%saspp.0.project.1", p);
    x = conv_simple(b, x, n1, C, 1, 0, 0, n2, 1e-5f, DP_ACT_RELU); /* Dropout(0.5): identity in eval */
    if (b->training) x = gb_dropout(b, DP_OP_DROPOUT, x, 0.5);
    snprintf(n1, sizeof n1, "%saspp.1.0", p);
    snprintf(n2, sizeof n2, "%saspp.1.1", p);
    snprintf(n3, sizeof n3, "%saspp.2", p);
    x = separable(b, x, n1, n2, C, 1, n3);
    x = gb_upsample(b, x, 4);
    snprintf(n1, sizeof n1, "%sblock1.0", p);
    snprintf(n2, sizeof n2, "%sblock1.1", p);
    int hr = conv_simple(b, f2, n1, 48, 1, 0, 0, n2, 1e-5f, DP_ACT_RELU);
    int cat[2] = {x, hr};
    x = gb_concat(b, cat, 2);
    snprintf(n1, sizeof n1, "%sblock2.0.0", p);
    snprintf(n2, sizeof n2, "%sblock2.0.1", p);
    snprintf(n3, sizeof n3, "%sblock2.1", p);
    return separable(b, x, n1, n2, C, 1, n3);
}

static int seg_head(gb_ctx *b, int x, const char *name, int classes, int k) {
    x = conv_simple(b, x, name, classes, k, k / 2, 1, NULL, 0, DP_ACT_NONE);
    return gb_upsample(b, x, 4);
}

/* smp 0.2.0 SCSEModule (reduction 16): x * cSE(x) + x * sSE(x) */
static int scse(gb_ctx *b, int x, const char *p) {
    char n1[256];
    int C = b->status ? 1 : b->g->tensors[x].c;
    int g = gb_gap(b, x);
    snprintf(n1, sizeof n1, "%s.cSE.1", p);
    g = conv_simple(b, g, n1, C / 16, 1, 0, 1, NULL, 0, DP_ACT_RELU);
    snprintf(n1, sizeof n1, "%s.cSE.3", p);
    g = conv_simple(b, g, n1, C, 1, 0, 1, NULL, 0, DP_ACT_SIGMOID);
    snprintf(n1, sizeof n1, "%s.sSE.0", p);
    int s = conv_simple(b, x, n1, 1, 1, 0, 1, NULL, 0, DP_ACT_SIGMOID);
    return gb_simple(b, DP_OP_SCSE, x, g, s, C);
}

/* ---------------------------------------------------------------- the two architectures */
static disopt_status build(const disopt_model_config *cfg, int training, dp_graph *g) {
    effnet_cfg ec;
    gb_ctx b;
    int f[6];
    char n1[256];
    memset(g, 0, sizeof *g);
    g->out_fused = g->out_sar = g->out_rgb = -1;
    if (cfg->in_channels < 1 || cfg->in_channels > DISOPT_MAX_BANDS)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "in_channels %d not supported (1..%d)", cfg->in_channels,
                        DISOPT_MAX_BANDS);
    if (cfg->num_classes < 1 || cfg->num_classes > 64)
        return dp_error(DISOPT_ERR_UNSUPPORTED, "num_classes %d not supported", cfg->num_classes);
    DP_TRY(effnet_config(cfg->variant, cfg->in_channels, &ec));
    g->in_channels = cfg->in_channels;
    g->num_classes = cfg->num_classes;
    b.g = g;
    b.status = DISOPT_OK;
    b.training = training;
    g->input = gb_tensor(&b, "input", cfg->in_channels);

    if (cfg->arch == DISOPT_ARCH_TEACHER) {
        effnet_encoder(&b, &ec, "encoder.", g->input, f);
        int d = deeplab_decoder(&b, "decoder.", f[2], f[5]);
        gb_name(&b, d, "decoder");
        g->out_fused = seg_head(&b, d, "segmentation_head.0", cfg->num_classes, 1);
    } else if (cfg->arch == DISOPT_ARCH_STUDENT) {
        int p[2];
        effnet_encoder(&b, &ec, "encoder_sar.", g->input, f);
        /* pseudo-optical branch: stages 4 and 5 of a second EfficientNet, on the SAR f3 */
        int x = f[3];
        /* the authors' BiDeepLabV3p_Dist.forward counts drop-connect blocks from 8.0 (the b3 stage-3
         * boundary, written as a constant, so b4 starts at 8 too) over len(encoder_sar._blocks) */
        double block_number = 8.0;
        for (int st = 0; st < 2; st++) {
            int from = ec.stage_idxs[1 + st], to = ec.stage_idxs[2 + st];
            for (int i = from; i < to; i++) {
                snprintf(n1, sizeof n1, "encoder_rgb_stages.%d.%d.", st, i - from);
                x = mbconv(&b, x, n1, &ec.blocks[i], st == 1, ec.image_size,
                           EFFNET_DROP_CONNECT * block_number / (double)ec.nblocks);
                block_number += 1.0;
            }
            p[st] = x;
        }
        gb_name(&b, p[0], "p4");
        gb_name(&b, p[1], "p5");
        int ds = deeplab_decoder(&b, "decoder_sar.", f[2], f[5]);
        int dr = deeplab_decoder(&b, "decoder_rgb.", f[2], p[1]);
        gb_name(&b, ds, "decoder_sar");
        gb_name(&b, dr, "decoder_rgb");
        g->out_rgb = seg_head(&b, dr, "seg_head_rgb.0", cfg->num_classes, 3);
        g->out_sar = seg_head(&b, ds, "seg_head_sar.0", cfg->num_classes, 3);
        int s1 = scse(&b, ds, "ffm.scse_1");
        int s2 = scse(&b, dr, "ffm.scse_2");
        int cat[2] = {s1, s2};
        x = gb_concat(&b, cat, 2);
        x = conv_simple(&b, x, "ffm.convblk.conv", 256, 1, 0, 0, "ffm.convblk.bn", 1e-5f, DP_ACT_RELU);
        x = scse(&b, x, "ffm.scse");
        gb_name(&b, x, "ffm");
        g->out_fused = seg_head(&b, x, "ffm_seg_head.0", cfg->num_classes, 3);
    } else {
        dp_graph_free(g);
        return dp_error(DISOPT_ERR_UNSUPPORTED, "unknown architecture %d", (int)cfg->arch);
    }
    for (int i = 1; i <= 5; i++) {
        snprintf(n1, sizeof n1, "f%d", i);
        gb_name(&b, f[i], n1);
    }
    gb_name(&b, g->out_fused, "logits");
    if (g->out_sar >= 0) gb_name(&b, g->out_sar, "logit_sar");
    if (g->out_rgb >= 0) gb_name(&b, g->out_rgb, "logit_rgb");
    if (b.status == DISOPT_OK && !training) {
        int sm = gb_simple(&b, DP_OP_SOFTMAX, g->out_fused, -1, -1, cfg->num_classes);
        gb_name(&b, sm, "softmax");
    }
    if (b.status != DISOPT_OK) {
        dp_graph_free(g);
        return b.status;
    }
    return DISOPT_OK;
}

disopt_status dp_graph_build(const disopt_model_config *cfg, dp_graph *g) { return build(cfg, 0, g); }

disopt_status dp_graph_build_train(const disopt_model_config *cfg, dp_graph *g) { return build(cfg, 1, g); }
