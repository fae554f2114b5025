/*
 * ops_conv.c - 2-D convolution on the CPU (conventions: see cpu.h).
 *  - depthwise (groups == cin == cout): direct kernel, one task per (image, channel); each kernel
 *    tap is accumulated over a whole output row, so stride-1 inner loops are contiguous;
 *  - everything else: GEMM through BLIS (bli_sgemm, its single-threaded build: the threads are
 *    ours). 1x1/stride 1/no padding convs multiply the input directly; others go through an
 *    im2col panel of up to gemm_cols output pixels per task in the task thread's workspace slice.
 * Padding is explicit (pt, pb, pl, pr), which covers symmetric and EfficientNet's static
 * asymmetric "same" padding; dilation and stride are per axis.
 */
#include "cpu.h"
#include "simd.h"

#include <blis.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const dp_cpu *cpu;
    const dp_node *node;
    const dp_tview *in, *out;
    const float *scale; /* per (image, input channel) scale of the input, or NULL */
    float *gap;         /* depthwise only: the global average pool of the output (N x C), or NULL */
    float *ws;
    size_t ws_per_thread; /* floats */
    int col_blocks, cols;
    int dw_run;           /* depthwise: planes per task */
    int m_blocks, m_rows; /* output channels of a group split into m_blocks blocks of m_rows */
} conv_job;

/* C[m x n] = A[m x k] * B[k x n], all row-major with leading dimensions lda, ldb, ldc */
static void sgemm_rm(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *Cm, int ldc) {
    float one = 1.0f, zero = 0.0f;
    bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &one, (float *)A, lda, 1, (float *)B, ldb, 1, &zero, Cm,
              ldc, 1);
}

DP_CLONES static void conv_epilogue(const dp_node *node, float *y, size_t n, float bias) {
    if (bias != 0.0f)
        for (size_t i = 0; i < n; i++) y[i] += bias;
    dp_cpu_act(node->act, y, n);
}

/* ---------------------------------------------------------------- depthwise */
/* Each task copies its input plane into a zero-bordered scratch plane (the thread's workspace
 * slice), so the inner loops need no bounds checks; 3x3 and 5x5 kernels are unrolled so that a
 * vector of outputs is summed in registers over all taps. */
#define DW_ROW3(R, W0)                                                                                             \
    ((W0)[0] * (R)[o] + (W0)[1] * (R)[o + dw] + (W0)[2] * (R)[o + 2 * dw])
#define DW_ROW5(R, W0)                                                                                             \
    ((W0)[0] * (R)[o] + (W0)[1] * (R)[o + dw] + (W0)[2] * (R)[o + 2 * dw] + (W0)[3] * (R)[o + 3 * dw] +            \
     (W0)[4] * (R)[o + 4 * dw])

DP_CLONES static void dw_rows(const dp_conv_params *c, const float *restrict Xp, int Wp, const float *restrict wt,
                              float b, float *restrict Y, int OH, int OW, dp_act act) {
    const int sh = c->sh, sw = c->sw, dh = c->dh, dw = c->dw, kh = c->kh, kw = c->kw;
    for (int oh = 0; oh < OH; oh++) {
        float *restrict yr = Y + (size_t)oh * OW;
        const float *restrict base = Xp + (size_t)oh * sh * Wp;
        if (kh == 3 && kw == 3) {
            const float *restrict r0 = base, *restrict r1 = base + (size_t)dh * Wp, *restrict r2 = base + (size_t)2 * dh * Wp;
            if (sw == 1) {
                for (int o = 0; o < OW; o++) yr[o] = b + DW_ROW3(r0, wt) + DW_ROW3(r1, wt + 3) + DW_ROW3(r2, wt + 6);
            } else {
                for (int ow = 0; ow < OW; ow++) {
                    int o = ow * sw;
                    yr[ow] = b + DW_ROW3(r0, wt) + DW_ROW3(r1, wt + 3) + DW_ROW3(r2, wt + 6);
                }
            }
        } else if (kh == 5 && kw == 5) {
            const float *restrict r0 = base, *restrict r1 = base + (size_t)dh * Wp,
                                 *restrict r2 = base + (size_t)2 * dh * Wp, *restrict r3 = base + (size_t)3 * dh * Wp,
                                 *restrict r4 = base + (size_t)4 * dh * Wp;
            if (sw == 1) {
                for (int o = 0; o < OW; o++)
                    yr[o] = b + DW_ROW5(r0, wt) + DW_ROW5(r1, wt + 5) + DW_ROW5(r2, wt + 10) + DW_ROW5(r3, wt + 15) +
                            DW_ROW5(r4, wt + 20);
            } else {
                for (int ow = 0; ow < OW; ow++) {
                    int o = ow * sw;
                    yr[ow] = b + DW_ROW5(r0, wt) + DW_ROW5(r1, wt + 5) + DW_ROW5(r2, wt + 10) + DW_ROW5(r3, wt + 15) +
                             DW_ROW5(r4, wt + 20);
                }
            }
        } else { /* any other kernel: tap by tap over the row */
            for (int ow = 0; ow < OW; ow++) yr[ow] = b;
            for (int ki = 0; ki < kh; ki++)
                for (int kj = 0; kj < kw; kj++) {
                    const float *xr = base + (size_t)ki * dh * Wp + kj * dw;
                    float wv = wt[ki * kw + kj];
                    for (int ow = 0; ow < OW; ow++) yr[ow] += wv * xr[ow * sw];
                }
        }
    }
    dp_cpu_act(act, Y, (size_t)OH * OW); /* one call per plane: rows can be as short as 8 */
}

/* Vector kernels (direct_tmpl.h, once per ISA). The depthwise scratch holds the zero-padded input
 * plane split by column phase for stride 2 (phase p holds padded columns p, p+2, ...), so that every
 * tap of a vector of outputs is one contiguous load; rows are DW_ROW_ALIGN floats apart. */
#define DW_MAX_TAPS 49
#define DW_MAX_KH 7
#define DW_MAX_KW 7
#define DW_ROW_ALIGN 16
#define DW_AHEAD 2 /* output rows whose input rows are padded ahead */
#define DW_ACT_BLOCK 1024 /* outputs per activation pass (rows are whole) */
#define FEW_CHUNK 16 /* input channels per pass over a few-output conv's rows */
#define FEW_MAX_KW 7

typedef struct {
    const float *x;   /* the input plane, h x w */
    const float *wt;  /* kh*kw taps */
    float b;
    float *y;         /* the output plane, oh x ow */
    int h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, pr;
    dp_act act;
    int rs, span;     /* floats per phase of a slot; slots in the ring ((kh-1)*dh+1 rows) */
    float *ring, *zero, *rowbuf; /* the thread's scratch: ring, zero row (one slot), padded row */
    double *gap;      /* when not NULL: the 8 partial sums of the plane's outputs (needs ow % 8 == 0) */
} dw_plane;

typedef struct {
    const float *x, *w, *bias; /* one image's input; OIHW weights; bias or NULL */
    float *y;                  /* one image's output */
    int C, H, W, OH, OW, cout, kh, kw, sh, dh, dw, pt, pl;
    dp_act act;
} few_job;

/* a mod m for 0 <= a, mostly a < 2m (ring slot arithmetic without a division) */
static inline int dw_wrap(int a, int m) { return a < m ? a : (a < 2 * m ? a - m : a % m); }

#ifdef DP_HAVE_SIMD
#define DT(name) name##_512
#define DT_TARGET __attribute__((target("avx512f,fma")))
#define DT_VL 16
#define VF __m512
#define DT_MASK __mmask16
#define DT_SET1 _mm512_set1_ps
#define DT_LOADU _mm512_loadu_ps
#define DT_STOREU _mm512_storeu_ps
#define DT_MUL _mm512_mul_ps
#define DT_ADD _mm512_add_ps
#define DT_ACT act512
#define DT_ACT_N act512_n
#define DT_FIRST(n) ((__mmask16)((1u << (n)) - 1u))
#define DT_RANGE(lo, hi) ((__mmask16)(((1u << (hi)) - 1u) & ~((1u << (lo)) - 1u)))
#define DT_LOADM(m, p) _mm512_maskz_loadu_ps(m, p)
#define DT_STOREM(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define DT_MADD(acc, m, v) _mm512_mask_add_ps(acc, m, acc, v)
#define DT_NV 4
#define DT_GAP_T __m512d
#define DT_GAP_ZERO _mm512_setzero_pd()
#define DT_GAP_ADD(g, v, full)                                                                                         \
    do {                                                                                                               \
        (g) = _mm512_add_pd((g), _mm512_cvtps_pd(_mm512_castps512_ps256(v)));                                          \
        if (full)                                                                                                      \
            (g) = _mm512_add_pd((g), _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))); \
    } while (0)
#define DT_GAP_OUT(g, part) _mm512_storeu_pd(part, (g))
#include "direct_tmpl.h" /* (it undefines the names above) */

typedef struct {
    __m256d lo, hi; /* partial sums 0..3 and 4..7 */
} dt_gap256;

#define DT(name) name##_256
#define DT_TARGET __attribute__((target("avx2,fma")))
#define DT_VL 8
#define VF __m256
#define DT_MASK __m256i
#define DT_SET1 _mm256_set1_ps
#define DT_LOADU _mm256_loadu_ps
#define DT_STOREU _mm256_storeu_ps
#define DT_MUL _mm256_mul_ps
#define DT_ADD _mm256_add_ps
#define DT_ACT act256
#define DT_ACT_N act256_n
#define DT_FIRST(n) dp_mask8(n)
#define DT_RANGE(lo, hi) _mm256_andnot_si256(dp_mask8(lo), dp_mask8(hi))
#define DT_LOADM(m, p) _mm256_maskload_ps(p, m)
#define DT_STOREM(p, m, v) _mm256_maskstore_ps(p, m, v)
#define DT_MADD(acc, m, v) _mm256_blendv_ps(acc, _mm256_add_ps(acc, v), _mm256_castsi256_ps(m))
#define DT_NV 2
#define DT_GAP_T dt_gap256
#define DT_GAP_ZERO ((dt_gap256){_mm256_setzero_pd(), _mm256_setzero_pd()})
#define DT_GAP_ADD(g, v, full)                                                                                         \
    do {                                                                                                               \
        (void)(full);                                                                                                  \
        (g).lo = _mm256_add_pd((g).lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));                                    \
        (g).hi = _mm256_add_pd((g).hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));                                  \
    } while (0)
#define DT_GAP_OUT(g, part) (_mm256_storeu_pd(part, (g).lo), _mm256_storeu_pd((part) + 4, (g).hi))
#include "direct_tmpl.h" /* (it undefines the names above) */
#endif

/* does the vector depthwise kernel take this conv (else the scalar dw_rows) */
static int dw_vector(const dp_cpu *cpu, const dp_conv_params *c) {
#ifdef DP_HAVE_SIMD
    return cpu->isa != DP_ISA_BLAS && (c->sw == 1 || c->sw == 2) && c->kh <= DW_MAX_KH && c->kw <= DW_MAX_KW;
#else
    (void)cpu, (void)c;
    return 0;
#endif
}

/* scratch floats per thread: the scalar path's padded plane; or the vector path's ring of padded
 * rows ((kh-1)*dh+1+DW_AHEAD*sh slots of sw phases of *rs floats), a zero slot and one padded row */
static size_t dw_scratch_floats(const dp_cpu *cpu, const dp_conv_params *c, int H, int W, int *rs, int *span) {
    size_t Hp = (size_t)(H + c->pt + c->pb), Wp = (size_t)(W + c->pl + c->pr);
    if (!dw_vector(cpu, c)) return Hp * Wp;
    /* + DW_ROW_ALIGN: pad_row's whole-vector stores run up to one vector past a row's end */
    size_t r = ((Wp + (size_t)c->sw - 1) / (size_t)c->sw + DW_ROW_ALIGN + DW_ROW_ALIGN - 1) / DW_ROW_ALIGN * DW_ROW_ALIGN;
    size_t sp = (size_t)(c->kh - 1) * (size_t)c->dh + 1 + DW_AHEAD * (size_t)c->sh;
    if (rs) *rs = (int)r;
    if (span) *span = (int)sp;
    return (sp + 1) * (size_t)c->sw * r + (Wp + 2 * DW_ROW_ALIGN + DW_ROW_ALIGN - 1) / DW_ROW_ALIGN * DW_ROW_ALIGN;
}

static void dw_plane_task(const conv_job *j, int task, int thread) {
    const dp_node *node = j->node;
    const dp_conv_params *c = &node->conv;
    int C = j->in->c;
    int n = task / C, ch = task % C;
    int H = j->in->h, W = j->in->w, OH = j->out->h, OW = j->out->w;
    int Wp = W + c->pl + c->pr;
    const float *X = (const float *)j->in->data + ((size_t)n * C + ch) * H * W;
    float *Y = (float *)j->out->data + ((size_t)n * C + ch) * OH * OW;
    float *Xp = j->ws + (size_t)thread * j->ws_per_thread;
    const float *wt = node->fw + (size_t)ch * c->kh * c->kw;
    const float b = node->fb ? node->fb[ch] : 0.0f;
    if (!dw_vector(j->cpu, c)) {
        /* zero only the border, copy the interior */
        memset(Xp, 0, (size_t)c->pt * Wp * sizeof(float));
        for (int h = 0; h < H; h++) {
            float *row = Xp + (size_t)(h + c->pt) * Wp;
            memset(row, 0, (size_t)c->pl * sizeof(float));
            memcpy(row + c->pl, X + (size_t)h * W, (size_t)W * sizeof(float));
            memset(row + c->pl + W, 0, (size_t)c->pr * sizeof(float));
        }
        memset(Xp + (size_t)(H + c->pt) * Wp, 0, (size_t)c->pb * Wp * sizeof(float));
        dw_rows(c, Xp, Wp, wt, b, Y, OH, OW, node->act);
        if (j->gap) j->gap[task] = dp_cpu_gap_plane(Y, (size_t)OH * OW); /* while the plane is in cache */
        return;
    }
#ifdef DP_HAVE_SIMD
    int rs = 0, span = 0;
    (void)dw_scratch_floats(j->cpu, c, H, W, &rs, &span);
    const size_t slot = (size_t)c->sw * rs;
    /* the pooling sums are taken from the registers when every row starts a group of 8 */
    double part[8];
    const int fused = j->gap && OW % 8 == 0;
    dw_plane p = {X, wt, b, Y, H, W, OH, OW, c->kh, c->kw, c->sh, c->sw, c->dh, c->dw, c->pt, c->pl, c->pr,
                  node->act, rs, span, Xp, Xp + (size_t)span * slot, Xp + (size_t)(span + 1) * slot,
                  fused ? part : NULL};
    if (j->cpu->isa == DP_ISA_AVX512)
        dw_plane_run_512(&p);
    else
        dw_plane_run_256(&p);
    if (fused)
        j->gap[task] = dp_cpu_gap_finish(part, (size_t)OH * OW);
    else if (j->gap)
        j->gap[task] = dp_cpu_gap_plane(Y, (size_t)OH * OW);
#endif
}

/* A task is a run of j->dw_run consecutive planes (image-major): a plane of a 32x32 map takes a few
 * microseconds, so per-plane tasks cost a counter update and a pooled sum's cache line each. (The
 * 32x32 layers' poor 2-thread scaling, first blamed on this, came from the pool's round-robin tasks:
 * pool.c.) */
static void dw_task(void *ctx, int task, int thread) {
    const conv_job *j = ctx;
    const int planes = j->in->n * j->in->c;
    const int p0 = task * j->dw_run, p1 = p0 + j->dw_run < planes ? p0 + j->dw_run : planes;
    for (int p = p0; p < p1; p++) dw_plane_task(j, p, thread);
}

/* ---------------------------------------------------------------- few output channels */
/* Dense kxk convs with at most DP_FEW_COUT outputs (the segmentation heads: 256 -> 2, 3x3): im2col
 * would write K = 2304 rows for 2 rows of work, so each task sums its output rows directly, tap by
 * tap over whole rows (vectorised; padding handled by the valid column range). */
#define DP_FEW_COUT 8
#define DP_FEW_ROWS 8

DP_CLONES static void few_task_scalar(void *ctx, int task, int thread) {
    const conv_job *j = ctx;
    const dp_node *node = j->node;
    const dp_conv_params *c = &node->conv;
    (void)thread;
    const int H = j->in->h, W = j->in->w, OH = j->out->h, OW = j->out->w, C = c->cin;
    const int rblocks = (OH + DP_FEW_ROWS - 1) / DP_FEW_ROWS;
    const int rb = task % rblocks, o = (task / rblocks) % c->cout, n = task / rblocks / c->cout;
    const int oh0 = rb * DP_FEW_ROWS, oh1 = oh0 + DP_FEW_ROWS < OH ? oh0 + DP_FEW_ROWS : OH;
    const float *X = (const float *)j->in->data + (size_t)n * C * H * W;
    float *Y = (float *)j->out->data + ((size_t)n * c->cout + o) * OH * OW;
    const float b = node->fb ? node->fb[o] : 0.0f;
    for (int oh = oh0; oh < oh1; oh++) {
        float *restrict row = Y + (size_t)oh * OW;
        for (int ow = 0; ow < OW; ow++) row[ow] = b;
        for (int ci = 0; ci < C; ci++) {
            const float *wt = node->fw + ((size_t)o * C + ci) * c->kh * c->kw;
            const float *Xc = X + (size_t)ci * H * W;
            for (int ki = 0; ki < c->kh; ki++) {
                int ih = oh * c->sh - c->pt + ki * c->dh;
                if (ih < 0 || ih >= H) continue;
                const float *restrict xr = Xc + (size_t)ih * W;
                for (int kj = 0; kj < c->kw; kj++) {
                    float wv = wt[ki * c->kw + kj];
                    int off = kj * c->dw - c->pl;
                    int lo = off < 0 ? (-off + c->sw - 1) / c->sw : 0;
                    int hi = (W - 1 - off) >= 0 ? (W - 1 - off) / c->sw + 1 : 0;
                    if (hi > OW) hi = OW;
                    if (c->sw == 1)
                        for (int ow = lo; ow < hi; ow++) row[ow] += wv * xr[ow + off];
                    else
                        for (int ow = lo; ow < hi; ow++) row[ow] += wv * xr[ow * c->sw + off];
                }
            }
        }
        dp_cpu_act(node->act, row, (size_t)OW);
    }
}

static int is_few(const dp_node *node) {
    const dp_conv_params *c = &node->conv;
    return c->groups == 1 && c->cout <= DP_FEW_COUT && !(c->kh == 1 && c->kw == 1) && node->conv.cin > 1;
}

/* the vector few-output kernel: stride 1 along W; one task per (image, block of DP_FEW_ROWS rows),
 * every output channel */
static int few_vector(const dp_cpu *cpu, const dp_conv_params *c) {
#ifdef DP_HAVE_SIMD
    return cpu->isa != DP_ISA_BLAS && c->sw == 1 && c->kw <= FEW_MAX_KW;
#else
    (void)cpu, (void)c;
    return 0;
#endif
}

static void few_task_vector(void *ctx, int task, int thread) {
    const conv_job *j = ctx;
    const dp_node *node = j->node;
    const dp_conv_params *c = &node->conv;
    (void)thread;
    const int H = j->in->h, W = j->in->w, OH = j->out->h, OW = j->out->w, C = c->cin;
    const int rblocks = (OH + DP_FEW_ROWS - 1) / DP_FEW_ROWS;
    const int rb = task % rblocks, n = task / rblocks;
    const int oh0 = rb * DP_FEW_ROWS, oh1 = oh0 + DP_FEW_ROWS < OH ? oh0 + DP_FEW_ROWS : OH;
    few_job f = {(const float *)j->in->data + (size_t)n * C * H * W, node->fw, node->fb,
                 (float *)j->out->data + (size_t)n * c->cout * OH * OW, C, H, W, OH, OW, c->cout, c->kh, c->kw,
                 c->sh, c->dh, c->dw, c->pt, c->pl, node->act};
#ifdef DP_HAVE_SIMD
    if (j->cpu->isa == DP_ISA_AVX512)
        few_rows_512(&f, oh0, oh1);
    else
        few_rows_256(&f, oh0, oh1);
#else
    (void)f, (void)oh0, (void)oh1;
#endif
}

/* ---------------------------------------------------------------- GEMM path */
DP_CLONES static void im2col(const dp_conv_params *c, const float *X, int cin_g, int H, int W, int OW, int p0, int ncols,
                   float *col) {
    /* col: (cin_g*kh*kw) x ncols, row-major; pixel p0+j of the output plane */
    int r = 0;
    for (int ci = 0; ci < cin_g; ci++) {
        const float *Xc = X + (size_t)ci * H * W;
        for (int ki = 0; ki < c->kh; ki++)
            for (int kj = 0; kj < c->kw; kj++, r++) {
                float *dst = col + (size_t)r * ncols;
                int oh = p0 / OW, ow = p0 % OW;
                for (int jj = 0; jj < ncols; jj++) {
                    int ih = oh * c->sh - c->pt + ki * c->dh;
                    int iw = ow * c->sw - c->pl + kj * c->dw;
                    dst[jj] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? Xc[(size_t)ih * W + iw] : 0.0f;
                    if (++ow == OW) {
                        ow = 0;
                        oh++;
                    }
                }
            }
    }
}

static void gemm_task(void *ctx, int task, int thread) {
    const conv_job *j = ctx;
    const dp_node *node = j->node;
    const dp_conv_params *c = &node->conv;
    int G = c->groups;
    int mb = task % j->m_blocks;
    int cb = (task / j->m_blocks) % j->col_blocks;
    int rest = task / j->m_blocks / j->col_blocks;
    int g = rest % G, n = rest / G;
    int H = j->in->h, W = j->in->w, OW = j->out->w;
    int P = j->out->h * OW;
    int p0 = cb * j->cols;
    int ncols = P - p0 < j->cols ? P - p0 : j->cols;
    int cin_g = c->cin / G, cout_g = c->cout / G;
    int m0 = mb * j->m_rows, rows = cout_g - m0 < j->m_rows ? cout_g - m0 : j->m_rows;
    if (rows <= 0) return;
    int K = cin_g * c->kh * c->kw;
    const float *X = (const float *)j->in->data + ((size_t)n * c->cin + (size_t)g * cin_g) * H * W;
    float *Y = (float *)j->out->data + ((size_t)n * c->cout + (size_t)g * cout_g + m0) * P;
    const float *A = node->fw + ((size_t)g * cout_g + m0) * K;
    /* B: the input plane itself (1x1), a scaled copy (1x1 with an input scale, BLAS only: our kernels
     * scale while they pack), or an im2col panel; then one GEMM */
    float *ws = j->ws ? j->ws + (size_t)thread * j->ws_per_thread : NULL;
    const float *kscale = j->scale ? j->scale + (size_t)n * c->cin : NULL;
    const float *B = X + p0;
    int ldb = H * W;
    if (!dp_cpu_conv_is_direct(node)) {
        im2col(c, X, cin_g, H, W, OW, p0, ncols, ws);
        B = ws;
        ldb = ncols;
        ws += (size_t)K * j->cols; /* our kernel's packed copy follows the panel */
    } else if (kscale && !node->bk) {
        for (int k = 0; k < K; k++)
            for (int q = 0; q < ncols; q++) ws[(size_t)k * ncols + q] = X[(size_t)k * H * W + p0 + q] * kscale[k];
        B = ws;
        ldb = ncols;
        kscale = NULL;
    }
    if (node->bk) { /* our GEMM on weights packed at load (AVX2/AVX-512); bias and activation in its store */
        const dp_cpu *cpu = j->cpu;
        int mr = dp_gemm_mr(cpu->isa);
        const float *Ap = (const float *)node->bk + (size_t)(m0 / mr) * K * mr;
        if (P == 1 && dp_gemv_run(cpu->isa, rows, K, Ap, B, ldb, Y + p0, node->fb ? node->fb + g * cout_g + m0 : NULL,
                                  node->act, kscale))
            return;
        dp_gemm_run(cpu->isa, rows, ncols, K, Ap, B, ldb, Y + p0, P, ws, node->fb ? node->fb + g * cout_g + m0 : NULL,
                    node->act, kscale);
        return;
    }
    sgemm_rm(rows, ncols, K, A, K, B, ldb, Y + p0, P);
    for (int o = 0; o < rows; o++)
        conv_epilogue(node, Y + (size_t)o * P + p0, (size_t)ncols, node->fb ? node->fb[g * cout_g + m0 + o] : 0.0f);
}

int dp_cpu_conv_is_direct(const dp_node *node) {
    const dp_conv_params *c = &node->conv;
    return node->op == DP_OP_CONV && c->groups == 1 && c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 &&
           !c->pt && !c->pb && !c->pl && !c->pr;
}

#define DP_DW_RUN 65536L /* outputs */

static int is_depthwise(const dp_conv_params *c) { return c->groups > 1 && c->groups == c->cin && c->groups == c->cout; }

/* im2col convs: panels of at most 1M floats (K x cols) per thread */
static int im2col_cols(const dp_cpu *cpu, int K) {
    int cols = (1 << 20) / K / 64 * 64;
    if (cols < 64) cols = 64;
    return cols < cpu->gemm_cols ? cols : cpu->gemm_cols;
}

/* Multiply-adds under which a GEMM conv is one task per image (and group), run by the caller alone
 * when there is one image: the 1x1 convs on 1x1 maps (SE, ASPP pooling: up to 0.8 M) took ~60 us
 * each split into up to 64 tasks, at 16 threads as at 1, mostly the split and the pool's wake-ups. */
#define DP_TINY_GEMM 2.0e6

/* Work split of a GEMM conv. Column panels are gemm_cols pixels, at least gemm_min_cols: narrower panels
 * of a large plane make BLIS slow (strided B rows alias in the cache; measured 12 instead of 32
 * GFLOP/s at 512 columns of a 128x128 plane, bench/bench_gemm). When panels give fewer than
 * gemm_min_tasks tasks, the output channels are split too, in blocks of whole micro-tile slivers (16 rows
 * for BLAS). With our kernels neither split changes any output element's operations (each is one
 * K-ordered sum), so results are the same at any split and thread count; BLIS's results depend on the
 * split, so there the split depends on the shape only. The defaults (1024, 256, and 4 x threads within
 * 8..64 tasks, 64 for BLAS) are set in backend_cpu.c. */
static void conv_split(const dp_cpu *cpu, conv_job *j, int tasks_other, int P, int M, int K, int max_cols) {
    int cols = max_cols, min_tasks = cpu->gemm_min_tasks;
    if (P <= max_cols && (double)tasks_other * P * M * K <= DP_TINY_GEMM) { /* see DP_TINY_GEMM */
        j->cols = max_cols; /* (not P: the packed copy of an im2col panel starts K * cols floats on, aligned) */
        j->col_blocks = 1;
        j->m_rows = M;
        j->m_blocks = 1;
        return;
    }
    while (cols > cpu->gemm_min_cols && cols > 64 && (long)tasks_other * ((P + cols - 1) / cols) < min_tasks) cols /= 2;
    j->cols = cols;
    j->col_blocks = (P + cols - 1) / cols;
    long t = (long)tasks_other * j->col_blocks;
    int mblocks = 1;
    if (t < min_tasks) mblocks = (int)((min_tasks + t - 1) / t);
    int rows = (M + mblocks - 1) / mblocks;
    int unit = cpu->isa != DP_ISA_BLAS ? dp_gemm_mr(cpu->isa) * 2 : 16; /* whole micro-tile slivers */
    rows = (rows + unit - 1) / unit * unit;
    j->m_rows = rows;
    j->m_blocks = (M + rows - 1) / rows;
}

size_t dp_cpu_conv_workspace(const dp_cpu *cpu, const dp_node *node, const dp_tview *in, const dp_tview *out) {
    const dp_conv_params *c = &node->conv;
    (void)out;
    if (is_depthwise(c)) return dw_scratch_floats(cpu, c, in->h, in->w, NULL, NULL) * sizeof(float) * (size_t)cpu->nthreads;
    if (dp_cpu_conv_is_direct(node)) /* the B panel of our GEMM; for BLAS a scaled copy, if scaled */
        return cpu->isa == DP_ISA_BLAS ? (node->n_in == 2 ? (size_t)c->cin * cpu->gemm_cols * sizeof(float) * (size_t)cpu->nthreads : 0)
                                       : (size_t)c->cin * (size_t)(cpu->gemm_cols + dp_gemm_nr(cpu->isa)) *
                                             sizeof(float) * (size_t)cpu->nthreads;
    if (is_few(node)) return 0;
    size_t K = (size_t)(c->cin / c->groups) * c->kh * c->kw;
    size_t cols = (size_t)im2col_cols(cpu, (int)K);
    size_t per = K * cols; /* the im2col panel */
    if (cpu->isa != DP_ISA_BLAS && c->groups == 1) per += K * (cols + (size_t)dp_gemm_nr(cpu->isa)); /* + its packed copy */
    return per * sizeof(float) * (size_t)cpu->nthreads;
}

static disopt_status conv_run(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                              float *gap, void *ws, size_t ws_bytes) {
    const dp_conv_params *c = &node->conv;
    const dp_tview *in = &ins[0];
    conv_job j;
    memset(&j, 0, sizeof j);
    j.cpu = cpu;
    j.node = node;
    j.gap = gap;
    if (node->n_in == 2) {
        if (!dp_cpu_conv_is_direct(node) || ins[1].c != c->cin || ins[1].h != 1 || ins[1].w != 1)
            return dp_error(DISOPT_ERR_INTERNAL, "conv: an input scale needs a dense 1x1 conv and an N,C,1,1 scale");
        j.scale = (const float *)ins[1].data;
    }
    j.in = in;
    j.out = out;
    if (in->c != c->cin || out->c != c->cout)
        return dp_error(DISOPT_ERR_INTERNAL, "conv: channel mismatch (%d->%d, node %d->%d)", in->c, out->c, c->cin,
                        c->cout);
    if (is_depthwise(c)) {
        size_t need = dp_cpu_conv_workspace(cpu, node, in, out);
        if (!ws || ws_bytes < need) return dp_error(DISOPT_ERR_INTERNAL, "conv: workspace too small");
        j.ws = ws;
        j.ws_per_thread = need / sizeof(float) / (size_t)cpu->nthreads;
        /* planes per task: about 8 tasks per thread, and no run longer than DP_DW_RUN outputs */
        const int planes = in->n * in->c;
        const long plane_out = (long)out->h * out->w;
        int per = planes / (8 * cpu->nthreads);
        if ((long)per * plane_out > DP_DW_RUN) per = (int)(DP_DW_RUN / plane_out);
        if (per < 1) per = 1;
        j.dw_run = per;
        dp_pool_run(cpu->pool, (planes + per - 1) / per, dw_task, &j);
        return DISOPT_OK;
    }
    if (gap) return dp_error(DISOPT_ERR_INTERNAL, "conv: pooling is fused into depthwise convs only");
    if (is_few(node)) {
        int rblocks = (out->h + DP_FEW_ROWS - 1) / DP_FEW_ROWS;
        if (few_vector(cpu, c))
            dp_pool_run(cpu->pool, in->n * rblocks, few_task_vector, &j);
        else
            dp_pool_run(cpu->pool, in->n * c->cout * rblocks, few_task_scalar, &j);
        return DISOPT_OK;
    }
    int P = out->h * out->w;
    int K = (c->cin / c->groups) * c->kh * c->kw;
    conv_split(cpu, &j, in->n * c->groups, P, c->cout / c->groups, K,
               dp_cpu_conv_is_direct(node) ? cpu->gemm_cols : im2col_cols(cpu, K));
    size_t need = dp_cpu_conv_workspace(cpu, node, in, out);
    if (need > 0) {
        if (!ws || ws_bytes < need) return dp_error(DISOPT_ERR_INTERNAL, "conv: workspace too small");
        j.ws = ws;
        j.ws_per_thread = need / sizeof(float) / (size_t)cpu->nthreads;
    }
    dp_pool_run(cpu->pool, in->n * c->groups * j.col_blocks * j.m_blocks, gemm_task, &j);
    return DISOPT_OK;
}

disopt_status dp_cpu_conv(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out, void *ws,
                          size_t ws_bytes) {
    return conv_run(cpu, node, ins, out, NULL, ws, ws_bytes);
}

disopt_status dp_cpu_conv_gap(dp_cpu *cpu, const dp_node *node, const dp_tview *ins, const dp_tview *out,
                              const dp_tview *gap, void *ws, size_t ws_bytes) {
    if (node->op != DP_OP_CONV || !is_depthwise(&node->conv) || gap->n != out->n || gap->c != out->c || gap->h != 1 ||
        gap->w != 1)
        return dp_error(DISOPT_ERR_INTERNAL, "conv+pool: needs a depthwise conv and an N,C,1,1 pool output");
    return conv_run(cpu, node, ins, out, (float *)gap->data, ws, ws_bytes);
}
