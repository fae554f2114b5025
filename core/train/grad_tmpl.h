/*
 * grad_tmpl.h - the training kernels of grad_ops.h, written once over the element type. grad_ops.c
 * includes this file once per type after defining:
 *   T          float or double
 *   FN(name)   name##_f32 or name##_f64
 *   TGEMM      bli_sgemm or bli_dgemm
 *   TEXP       expf or exp
 * Conventions: see grad_ops.h (NCHW; forward overwrites, backward adds; reductions in double;
 * tasks on the caller's dp_pool with disjoint outputs; no allocation). Every element is computed by the same expression
 * in both instantiations, so the double one, which the finite-difference tests check, checks the float one. The end of
 * this file undefines nothing: grad_ops.c does it between the two includes.
 */

/* ---------------------------------------------------------------- conv */
/* C[m x n] = A[m x k] * B[k x n] + beta * C, every matrix given by (row stride, column stride) */
static void FN(gemm)(dim_t m, dim_t n, dim_t k, const T *a, inc_t rsa, inc_t csa, const T *b, inc_t rsb, inc_t csb,
                     T beta, T *c, inc_t rsc, inc_t csc) {
    T one = 1, bt = beta;
    TGEMM(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &one, (T *)a, rsa, csa, (T *)b, rsb, csb, &bt, c, rsc, csc);
}

/* col: rows [r0, r0 + nrows) of the im2col matrix (row r = (ci, ki, kj) of cin_g*kh*kw) by ncols,
 * column j = output pixel p0 + j; zero where the tap reads padding */
static void FN(im2col)(const dp_conv_params *c, const T *X, int H, int W, int OW, size_t r0, size_t nrows, size_t p0,
                       size_t ncols, T *col) {
    const size_t taps = (size_t)c->kh * c->kw;
    for (size_t r = r0; r < r0 + nrows; r++) {
        const int ci = (int)(r / taps), ki = (int)(r % taps) / c->kw, kj = (int)(r % taps) % c->kw;
        const T *Xc = X + (size_t)ci * H * W;
        T *dst = col + (r - r0) * ncols;
        int oh = (int)(p0 / (size_t)OW), ow = (int)(p0 % (size_t)OW);
        for (size_t j = 0; j < ncols; j++) {
            const int ih = oh * c->sh - c->pt + ki * c->dh, iw = ow * c->sw - c->pl + kj * c->dw;
            dst[j] = ih >= 0 && ih < H && iw >= 0 && iw < W ? Xc[(size_t)ih * W + iw] : (T)0;
            if (++ow == OW) {
                ow = 0;
                oh++;
            }
        }
    }
}

/* the adjoint of im2col: X += scatter(col) */
static void FN(col2im_add)(const dp_conv_params *c, const T *col, int cin_g, int H, int W, int OW, size_t p0,
                           size_t ncols, T *X) {
    size_t r = 0;
    for (int ci = 0; ci < cin_g; ci++) {
        T *Xc = X + (size_t)ci * H * W;
        for (int ki = 0; ki < c->kh; ki++)
            for (int kj = 0; kj < c->kw; kj++, r++) {
                const T *src = col + r * ncols;
                int oh = (int)(p0 / (size_t)OW), ow = (int)(p0 % (size_t)OW);
                for (size_t j = 0; j < ncols; j++) {
                    const int ih = oh * c->sh - c->pt + ki * c->dh, iw = ow * c->sw - c->pl + kj * c->dw;
                    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                        Xc[(size_t)ih * W + iw] += src[j];
                    if (++ow == OW) {
                        ow = 0;
                        oh++;
                    }
                }
            }
    }
}

/* Output columns ow of a depthwise tap with input column iw = ow * sw + off inside [0, W): [*lo, *hi). */
static void FN(dw_cols)(int OW, int W, int sw, int off, int *lo, int *hi) {
    *lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int h = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
    *hi = h < OW ? h : OW;
}

typedef struct {
    const dp_conv_params *p;
    int n, h, w, OH, OW, G, cin_g, cout_g;
    size_t HW, P, K, nw;   /* input plane, output plane, im2col rows, weight elements */
    size_t cols, chunks;   /* output pixels per task panel (0: 1x1 direct), panels per (image, group) */
    const T *a, *b, *bias; /* forward: x, w, bias; backward data: dy, w; backward filter: x, dy */
    T *out;                /* y, dx, or the per-image filter gradients */
    T *ws;                 /* the threads' panels, ws_thread elements each */
    size_t ws_thread;
} FN(conv_job);

/* Checks the arguments and lays out the job: one im2col panel per thread in the workspace. */
static disopt_status FN(conv_job_init)(FN(conv_job) * j, const char *what, dp_pool *pool, const dp_conv_params *p,
                                       int n, int h, int w, const void *a, const void *b, const void *c, T *ws,
                                       size_t ws_elems) {
    memset(j, 0, sizeof *j);
    disopt_status s = dp_tr_conv_check(p, n, h, w, &j->OH, &j->OW);
    if (s)
        return dp_error_prefix(s, "%s", what);
    if (!a || !b || !c)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: NULL tensor", what);
    j->p = p, j->n = n, j->h = h, j->w = w, j->G = p->groups;
    j->cin_g = p->cin / p->groups, j->cout_g = p->cout / p->groups;
    j->HW = (size_t)h * w, j->P = (size_t)j->OH * j->OW, j->K = (size_t)j->cin_g * p->kh * p->kw;
    j->nw = (size_t)p->cout * j->K;
    if (dp_tr_conv_is_depthwise(p))
        return DISOPT_OK;
    if (dp_tr_conv_is_direct(p)) {
        j->cols = 0;
        j->chunks = (j->P + DP_TR_DIRECT_COLS - 1) / DP_TR_DIRECT_COLS;
        return DISOPT_OK;
    }
    const size_t nthr = (size_t)dp_tr_threads(pool);
    if (!ws || ws_elems < nthr * j->K)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: workspace of %zu elements, at least %zu needed", what,
                        ws ? ws_elems : 0, nthr * j->K);
    j->ws = ws;
    j->ws_thread = ws_elems / nthr;
    j->cols = j->ws_thread / j->K < j->P ? j->ws_thread / j->K : j->P;
    j->chunks = (j->P + j->cols - 1) / j->cols;
    return DISOPT_OK;
}

static void FN(conv_fwd_task)(void *ctx, int task, int thread) {
    const FN(conv_job) *j = ctx;
    const dp_conv_params *p = j->p;
    const T *x = j->a, *wt = j->b;
    if (dp_tr_conv_is_depthwise(p)) { /* one (image, channel); each output sums its taps in (ki, kj) order */
        const int ni = task / p->cin, ch = task % p->cin;
        const T *X = x + ((size_t)ni * p->cin + ch) * j->HW, *wk = wt + (size_t)ch * p->kh * p->kw;
        T *Y = j->out + ((size_t)ni * p->cout + ch) * j->P;
        const T bv = j->bias ? j->bias[ch] : (T)0;
        for (int oh = 0; oh < j->OH; oh++) {
            T *yr = Y + (size_t)oh * j->OW;
            for (int ow = 0; ow < j->OW; ow++)
                yr[ow] = 0;
            for (int ki = 0; ki < p->kh; ki++) {
                const int ih = oh * p->sh - p->pt + ki * p->dh;
                if (ih < 0 || ih >= j->h)
                    continue;
                const T *xr = X + (size_t)ih * j->w;
                for (int kj = 0; kj < p->kw; kj++) {
                    const int off = kj * p->dw - p->pl, sw = p->sw;
                    int lo, hi;
                    FN(dw_cols)(j->OW, j->w, sw, off, &lo, &hi);
                    const T wv = wk[ki * p->kw + kj];
                    for (int ow = lo; ow < hi; ow++)
                        yr[ow] += wv * xr[ow * sw + off];
                }
            }
            if (j->bias)
                for (int ow = 0; ow < j->OW; ow++)
                    yr[ow] += bv;
        }
        return;
    }
    /* one panel of output pixels of one (image, group) */
    const size_t chunk = (size_t)task % j->chunks;
    const int rest = (int)((size_t)task / j->chunks), g = rest % j->G, ni = rest / j->G;
    const T *X = x + ((size_t)ni * p->cin + (size_t)g * j->cin_g) * j->HW;
    T *Y = j->out + ((size_t)ni * p->cout + (size_t)g * j->cout_g) * j->P;
    const T *Wg = wt + (size_t)g * j->cout_g * j->K;
    const size_t width = j->cols ? j->cols : DP_TR_DIRECT_COLS, p0 = chunk * width;
    const size_t nc = j->P - p0 < width ? j->P - p0 : width;
    if (!j->cols) {
        FN(gemm)
        (j->cout_g, (dim_t)nc, (dim_t)j->K, Wg, (inc_t)j->K, 1, X + p0, (inc_t)j->P, 1, 0, Y + p0, (inc_t)j->P, 1);
    } else {
        T *col = j->ws + (size_t)thread * j->ws_thread;
        FN(im2col)(p, X, j->h, j->w, j->OW, 0, j->K, p0, nc, col);
        FN(gemm)(j->cout_g, (dim_t)nc, (dim_t)j->K, Wg, (inc_t)j->K, 1, col, (inc_t)nc, 1, 0, Y + p0, (inc_t)j->P, 1);
    }
    if (j->bias)
        for (int o = 0; o < j->cout_g; o++) {
            const T bv = j->bias[(size_t)g * j->cout_g + o];
            T *yr = Y + (size_t)o * j->P + p0;
            for (size_t i = 0; i < nc; i++)
                yr[i] += bv;
        }
}

disopt_status FN(dp_tr_conv_fwd_mt)(dp_pool *pool, const dp_conv_params *p, int n, int h, int w, const T *x,
                                    const T *wt, const T *b, T *y, T *ws, size_t ws_elems) {
    FN(conv_job) j;
    DP_TRY(FN(conv_job_init)(&j, "conv forward", pool, p, n, h, w, x, wt, y, ws, ws_elems));
    j.a = x, j.b = wt, j.bias = b, j.out = y;
    const size_t ntasks = dp_tr_conv_is_depthwise(p) ? (size_t)n * p->cin : (size_t)n * j.G * j.chunks;
    dp_tr_run(pool, ntasks, FN(conv_fwd_task), &j);
    return DISOPT_OK;
}

static void FN(conv_bwd_data_task)(void *ctx, int task, int thread) {
    const FN(conv_job) *j = ctx;
    const dp_conv_params *p = j->p;
    const T *dy = j->a, *wt = j->b;
    if (dp_tr_conv_is_depthwise(p)) {
        const int ni = task / p->cin, ch = task % p->cin;
        T *dX = j->out + ((size_t)ni * p->cin + ch) * j->HW;
        const T *wk = wt + (size_t)ch * p->kh * p->kw, *dY = dy + ((size_t)ni * p->cout + ch) * j->P;
        for (int oh = 0; oh < j->OH; oh++) {
            const T *gr = dY + (size_t)oh * j->OW;
            for (int ki = 0; ki < p->kh; ki++) {
                const int ih = oh * p->sh - p->pt + ki * p->dh;
                if (ih < 0 || ih >= j->h)
                    continue;
                T *xr = dX + (size_t)ih * j->w;
                for (int kj = 0; kj < p->kw; kj++) {
                    const int off = kj * p->dw - p->pl, sw = p->sw;
                    int lo, hi;
                    FN(dw_cols)(j->OW, j->w, sw, off, &lo, &hi);
                    const T wv = wk[ki * p->kw + kj];
                    for (int ow = lo; ow < hi; ow++)
                        xr[ow * sw + off] += wv * gr[ow];
                }
            }
        }
        return;
    }
    /* 1x1 direct: one panel of pixels (dx and dy pixels coincide); im2col: a whole (image, group),
     * its panels in order, since their scatters overlap */
    const size_t chunks = j->cols ? 1 : j->chunks, chunk = (size_t)task % chunks;
    const int rest = (int)((size_t)task / chunks), g = rest % j->G, ni = rest / j->G;
    T *dX = j->out + ((size_t)ni * p->cin + (size_t)g * j->cin_g) * j->HW;
    const T *dY = dy + ((size_t)ni * p->cout + (size_t)g * j->cout_g) * j->P;
    const T *Wg = wt + (size_t)g * j->cout_g * j->K; /* read transposed: K x cout_g */
    if (!j->cols) {
        const size_t p0 = chunk * DP_TR_DIRECT_COLS, nc = j->P - p0 < DP_TR_DIRECT_COLS ? j->P - p0 : DP_TR_DIRECT_COLS;
        FN(gemm)
        ((dim_t)j->K, (dim_t)nc, j->cout_g, Wg, 1, (inc_t)j->K, dY + p0, (inc_t)j->P, 1, 1, dX + p0, (inc_t)j->HW, 1);
        return;
    }
    T *col = j->ws + (size_t)thread * j->ws_thread;
    for (size_t p0 = 0; p0 < j->P; p0 += j->cols) {
        const size_t nc = j->P - p0 < j->cols ? j->P - p0 : j->cols;
        FN(gemm)((dim_t)j->K, (dim_t)nc, j->cout_g, Wg, 1, (inc_t)j->K, dY + p0, (inc_t)j->P, 1, 0, col, (inc_t)nc, 1);
        FN(col2im_add)(p, col, j->cin_g, j->h, j->w, j->OW, p0, nc, dX);
    }
}

disopt_status FN(dp_tr_conv_bwd_data_mt)(dp_pool *pool, const dp_conv_params *p, int n, int h, int w, const T *dy,
                                         const T *wt, T *dx, T *ws, size_t ws_elems) {
    FN(conv_job) j;
    DP_TRY(FN(conv_job_init)(&j, "conv backward data", pool, p, n, h, w, dy, wt, dx, ws, ws_elems));
    j.a = dy, j.b = wt, j.out = dx;
    const size_t ntasks = dp_tr_conv_is_depthwise(p) ? (size_t)n * p->cin : (size_t)n * j.G * (j.cols ? 1 : j.chunks);
    dp_tr_run(pool, ntasks, FN(conv_bwd_data_task), &j);
    return DISOPT_OK;
}

/* depthwise: one channel, every tap, over all images (8 partial double sums per tap) */
static void FN(conv_bwd_filter_dw_task)(void *ctx, int ch, int thread) {
    const FN(conv_job) *j = ctx;
    const dp_conv_params *p = j->p;
    (void)thread;
    for (int ki = 0; ki < p->kh; ki++)
        for (int kj = 0; kj < p->kw; kj++) {
            const int off = kj * p->dw - p->pl, sw = p->sw;
            int lo, hi;
            FN(dw_cols)(j->OW, j->w, sw, off, &lo, &hi);
            double part[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* independent sums: the loop vectorises */
            for (int ni = 0; ni < j->n; ni++) {
                const T *X = j->a + ((size_t)ni * p->cin + ch) * j->HW;
                const T *dY = j->b + ((size_t)ni * p->cout + ch) * j->P;
                for (int oh = 0; oh < j->OH; oh++) {
                    const int ih = oh * p->sh - p->pt + ki * p->dh;
                    if (ih < 0 || ih >= j->h)
                        continue;
                    const T *xr = X + (size_t)ih * j->w, *gr = dY + (size_t)oh * j->OW;
                    int ow = lo;
                    for (; ow + 8 <= hi; ow += 8)
                        for (int q = 0; q < 8; q++)
                            part[q] += (double)(xr[(ow + q) * sw + off] * gr[ow + q]);
                    for (; ow < hi; ow++)
                        part[0] += (double)(xr[ow * sw + off] * gr[ow]);
                }
            }
            const double acc =
                ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
            j->out[((size_t)ch * p->kh + ki) * p->kw + kj] += (T)acc;
        }
}

/* dense: columns [k0, k0 + kb) of one group's filter gradient (the im2col rows of those input taps,
 * or those input channels for 1x1 direct convs), over every image and panel in order:
 * dW[:, k0:k0+kb] += dY (cout_g x P) * B[k0:k0+kb]^T. The decomposition depends on no thread count. */
static void FN(conv_bwd_filter_task)(void *ctx, int task, int thread) {
    const FN(conv_job) *j = ctx;
    const dp_conv_params *p = j->p;
    const size_t kblocks = (j->K + DP_TR_KBLOCK - 1) / DP_TR_KBLOCK, k0 = ((size_t)task % kblocks) * DP_TR_KBLOCK;
    const size_t kb = j->K - k0 < DP_TR_KBLOCK ? j->K - k0 : DP_TR_KBLOCK;
    const int g = (int)((size_t)task / kblocks);
    T *dWg = j->out + (size_t)g * j->cout_g * j->K + k0;
    T *col = j->cols ? j->ws + (size_t)thread * j->ws_thread : NULL;
    for (int ni = 0; ni < j->n; ni++) {
        const T *X = j->a + ((size_t)ni * p->cin + (size_t)g * j->cin_g) * j->HW;
        const T *dY = j->b + ((size_t)ni * p->cout + (size_t)g * j->cout_g) * j->P;
        if (!j->cols) {
            FN(gemm)
            (j->cout_g, (dim_t)kb, (dim_t)j->P, dY, (inc_t)j->P, 1, X + k0 * j->HW, 1, (inc_t)j->HW, 1, dWg,
             (inc_t)j->K, 1);
            continue;
        }
        for (size_t p0 = 0; p0 < j->P; p0 += j->cols) {
            const size_t nc = j->P - p0 < j->cols ? j->P - p0 : j->cols;
            FN(im2col)(p, X, j->h, j->w, j->OW, k0, kb, p0, nc, col);
            FN(gemm)
            (j->cout_g, (dim_t)kb, (dim_t)nc, dY + p0, (inc_t)j->P, 1, col, 1, (inc_t)nc, 1, dWg, (inc_t)j->K, 1);
        }
    }
}

disopt_status FN(dp_tr_conv_bwd_filter_mt)(dp_pool *pool, const dp_conv_params *p, int n, int h, int w, const T *x,
                                           const T *dy, T *dw, T *db, T *ws, size_t ws_elems) {
    FN(conv_job) j;
    DP_TRY(FN(conv_job_init)(&j, "conv backward filter", pool, p, n, h, w, x, dy, dw, ws, ws_elems));
    j.a = x, j.b = dy, j.out = dw;
    if (dp_tr_conv_is_depthwise(p)) {
        dp_tr_run(pool, (size_t)p->cin, FN(conv_bwd_filter_dw_task), &j);
    } else {
        dp_tr_run(pool, (size_t)j.G * ((j.K + DP_TR_KBLOCK - 1) / DP_TR_KBLOCK), FN(conv_bwd_filter_task), &j);
    }
    if (db)
        for (int o = 0; o < p->cout; o++) {
            double acc = 0;
            for (int ni = 0; ni < n; ni++) {
                const T *dY = dy + ((size_t)ni * p->cout + o) * j.P;
                for (size_t i = 0; i < j.P; i++)
                    acc += dY[i];
            }
            db[o] += (T)acc;
        }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- batch norm */
/* one task per channel: every image of a channel is in the task, so the statistics are whole */
static disopt_status FN(bn_args)(const char *what, int n, int c, size_t hw, const void *x, const void *y,
                                 const void *gamma, double eps) {
    if (n <= 0 || c <= 0 || hw == 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: empty shape", what);
    if (!x || !y || !gamma)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: NULL tensor", what);
    if (!(eps > 0))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: eps %g must be > 0", what, eps);
    return DISOPT_OK;
}

typedef struct {
    int n, c;
    size_t hw;
    double eps, momentum;
    const T *x, *dy, *gamma, *beta, *mean, *invstd, *run_mean_in, *run_var_in;
    T *y, *dx, *dgamma, *dbeta, *save_mean, *save_invstd, *run_mean, *run_var;
} FN(bn_job);

static void FN(bn_fwd_train_task)(void *ctx, int ch, int thread) {
    const FN(bn_job) *j = ctx;
    const int n = j->n, c = j->c;
    const size_t hw = j->hw, M = (size_t)n * hw;
    (void)thread;
    double s = 0;
    for (int ni = 0; ni < n; ni++) {
        const T *X = j->x + ((size_t)ni * c + ch) * hw;
        for (size_t i = 0; i < hw; i++)
            s += X[i];
    }
    const double mean = s / (double)M;
    double ss = 0; /* two passes: the variance does not lose digits to the mean */
    for (int ni = 0; ni < n; ni++) {
        const T *X = j->x + ((size_t)ni * c + ch) * hw;
        for (size_t i = 0; i < hw; i++) {
            double d = (double)X[i] - mean;
            ss += d * d;
        }
    }
    const double invstd = 1.0 / sqrt(ss / (double)M + j->eps);
    j->save_mean[ch] = (T)mean;
    j->save_invstd[ch] = (T)invstd;
    if (j->run_mean) { /* PyTorch: r = momentum * batch + (1 - momentum) * r, unbiased variance */
        const double m = j->momentum;
        j->run_mean[ch] = (T)(m * mean + (1.0 - m) * (double)j->run_mean[ch]);
        j->run_var[ch] = (T)(m * (ss / (double)(M - 1)) + (1.0 - m) * (double)j->run_var[ch]);
    }
    /* y = x * alpha + shift, alpha = gamma * invstd, shift = beta - mean * alpha (PyTorch's CPU form) */
    const T alpha = (T)((double)j->gamma[ch] * invstd);
    const T shift = (T)((double)j->beta[ch] - mean * (double)j->gamma[ch] * invstd);
    for (int ni = 0; ni < n; ni++) {
        const T *X = j->x + ((size_t)ni * c + ch) * hw;
        T *Y = j->y + ((size_t)ni * c + ch) * hw;
        for (size_t i = 0; i < hw; i++)
            Y[i] = X[i] * alpha + shift;
    }
}

disopt_status FN(dp_tr_bn_fwd_train_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *gamma,
                                        const T *beta, double eps, double momentum, T *run_mean, T *run_var,
                                        T *save_mean, T *save_invstd, T *y) {
    DP_TRY(FN(bn_args)("batch norm forward (training)", n, c, hw, x, y, gamma, eps));
    if (!beta || !save_mean || !save_invstd || !run_mean != !run_var)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (training): NULL tensor");
    if ((size_t)n * hw < 2) /* PyTorch: "Expected more than 1 value per channel when training" */
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (training): one value per channel");
    if (!(momentum >= 0 && momentum <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (training): momentum %g", momentum);
    FN(bn_job)
    j = {.n = n,
         .c = c,
         .hw = hw,
         .eps = eps,
         .momentum = momentum,
         .x = x,
         .gamma = gamma,
         .beta = beta,
         .y = y,
         .save_mean = save_mean,
         .save_invstd = save_invstd,
         .run_mean = run_mean,
         .run_var = run_var};
    dp_tr_run(pool, (size_t)c, FN(bn_fwd_train_task), &j);
    return DISOPT_OK;
}

static void FN(bn_bwd_train_task)(void *ctx, int ch, int thread) {
    const FN(bn_job) *j = ctx;
    const int n = j->n, c = j->c;
    const size_t hw = j->hw, M = (size_t)n * hw;
    (void)thread;
    const double mean = j->mean[ch], invstd = j->invstd[ch];
    double sdy = 0, dot = 0; /* sum dy, sum dy * (x - mean) */
    for (int ni = 0; ni < n; ni++) {
        const T *X = j->x + ((size_t)ni * c + ch) * hw, *dY = j->dy + ((size_t)ni * c + ch) * hw;
        for (size_t i = 0; i < hw; i++) {
            sdy += dY[i];
            dot += (double)dY[i] * ((double)X[i] - mean);
        }
    }
    if (j->dgamma)
        j->dgamma[ch] += (T)(dot * invstd);
    if (j->dbeta)
        j->dbeta[ch] += (T)sdy;
    if (!j->dx)
        return;
    /* dx = (dy - mean(dy) - (x - mean) * dot / M * invstd^2) * gamma * invstd */
    const T tm = (T)mean, k = (T)(dot / (double)M * invstd * invstd), gm = (T)(sdy / (double)M);
    const T wi = (T)((double)j->gamma[ch] * invstd);
    for (int ni = 0; ni < n; ni++) {
        const T *X = j->x + ((size_t)ni * c + ch) * hw, *dY = j->dy + ((size_t)ni * c + ch) * hw;
        T *dX = j->dx + ((size_t)ni * c + ch) * hw;
        for (size_t i = 0; i < hw; i++)
            dX[i] += (dY[i] - gm - (X[i] - tm) * k) * wi;
    }
}

disopt_status FN(dp_tr_bn_bwd_train_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *dy, const T *gamma,
                                        const T *save_mean, const T *save_invstd, T *dx, T *dgamma, T *dbeta) {
    DP_TRY(FN(bn_args)("batch norm backward (training)", n, c, hw, x, dy, gamma, 1));
    if (!save_mean || !save_invstd)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm backward (training): NULL saved statistics");
    FN(bn_job)
    j = {.n = n,
         .c = c,
         .hw = hw,
         .x = x,
         .dy = dy,
         .gamma = gamma,
         .mean = save_mean,
         .invstd = save_invstd,
         .dx = dx,
         .dgamma = dgamma,
         .dbeta = dbeta};
    dp_tr_run(pool, (size_t)c, FN(bn_bwd_train_task), &j);
    return DISOPT_OK;
}

static void FN(bn_fwd_eval_task)(void *ctx, int ch, int thread) {
    const FN(bn_job) *j = ctx;
    (void)thread;
    const double invstd = 1.0 / sqrt((double)j->run_var_in[ch] + j->eps);
    const T alpha = (T)((double)j->gamma[ch] * invstd);
    const T shift = (T)((double)j->beta[ch] - (double)j->run_mean_in[ch] * (double)j->gamma[ch] * invstd);
    for (int ni = 0; ni < j->n; ni++) {
        const T *X = j->x + ((size_t)ni * j->c + ch) * j->hw;
        T *Y = j->y + ((size_t)ni * j->c + ch) * j->hw;
        for (size_t i = 0; i < j->hw; i++)
            Y[i] = X[i] * alpha + shift;
    }
}

disopt_status FN(dp_tr_bn_fwd_eval_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *gamma,
                                       const T *beta, const T *run_mean, const T *run_var, double eps, T *y) {
    DP_TRY(FN(bn_args)("batch norm forward (eval)", n, c, hw, x, y, gamma, eps));
    if (!beta || !run_mean || !run_var)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (eval): NULL tensor");
    FN(bn_job)
    j = {.n = n,
         .c = c,
         .hw = hw,
         .eps = eps,
         .x = x,
         .gamma = gamma,
         .beta = beta,
         .run_mean_in = run_mean,
         .run_var_in = run_var,
         .y = y};
    dp_tr_run(pool, (size_t)c, FN(bn_fwd_eval_task), &j);
    return DISOPT_OK;
}

static void FN(bn_bwd_eval_task)(void *ctx, int ch, int thread) {
    const FN(bn_job) *j = ctx;
    (void)thread;
    const double invstd = 1.0 / sqrt((double)j->run_var_in[ch] + j->eps), mean = j->run_mean_in[ch];
    double sdy = 0, dot = 0;
    const T wi = (T)((double)j->gamma[ch] * invstd);
    for (int ni = 0; ni < j->n; ni++) {
        const T *X = j->x + ((size_t)ni * j->c + ch) * j->hw, *dY = j->dy + ((size_t)ni * j->c + ch) * j->hw;
        for (size_t i = 0; i < j->hw; i++) {
            sdy += dY[i];
            dot += (double)dY[i] * ((double)X[i] - mean);
        }
        if (j->dx) {
            T *dX = j->dx + ((size_t)ni * j->c + ch) * j->hw;
            for (size_t i = 0; i < j->hw; i++)
                dX[i] += dY[i] * wi;
        }
    }
    if (j->dgamma)
        j->dgamma[ch] += (T)(dot * invstd);
    if (j->dbeta)
        j->dbeta[ch] += (T)sdy;
}

disopt_status FN(dp_tr_bn_bwd_eval_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *dy, const T *gamma,
                                       const T *run_mean, const T *run_var, double eps, T *dx, T *dgamma, T *dbeta) {
    DP_TRY(FN(bn_args)("batch norm backward (eval)", n, c, hw, x, dy, gamma, eps));
    if (!run_mean || !run_var)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm backward (eval): NULL stats");
    FN(bn_job)
    j = {.n = n,
         .c = c,
         .hw = hw,
         .eps = eps,
         .x = x,
         .dy = dy,
         .gamma = gamma,
         .run_mean_in = run_mean,
         .run_var_in = run_var,
         .dx = dx,
         .dgamma = dgamma,
         .dbeta = dbeta};
    dp_tr_run(pool, (size_t)c, FN(bn_bwd_eval_task), &j);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- activations */
/* tasks of DP_TR_CHUNK elements */
static inline T FN(sigmoid)(T v) { return (T)1 / ((T)1 + TEXP(-v)); }

typedef struct {
    dp_act a;
    size_t count;
    const T *x, *y, *dy;
    T *out;
} FN(act_job);

static void FN(act_fwd_task)(void *ctx, int task, int thread) {
    const FN(act_job) *j = ctx;
    const size_t i0 = (size_t)task * DP_TR_CHUNK, i1 = j->count - i0 < DP_TR_CHUNK ? j->count : i0 + DP_TR_CHUNK;
    const T *x = j->x;
    T *y = j->out;
    (void)thread;
    switch (j->a) {
    case DP_ACT_NONE:
        if (y != x)
            memmove(y + i0, x + i0, (i1 - i0) * sizeof(T));
        break;
    case DP_ACT_RELU:
        for (size_t i = i0; i < i1; i++)
            y[i] = x[i] > 0 ? x[i] : (T)0;
        break;
    case DP_ACT_SIGMOID:
        for (size_t i = i0; i < i1; i++)
            y[i] = FN(sigmoid)(x[i]);
        break;
    case DP_ACT_SWISH: /* efficientnet_pytorch's MemoryEfficientSwish: x * sigmoid(x) */
        for (size_t i = i0; i < i1; i++)
            y[i] = x[i] * FN(sigmoid)(x[i]);
        break;
    }
}

disopt_status FN(dp_tr_act_fwd_mt)(dp_pool *pool, dp_act a, size_t count, const T *x, T *y) {
    if (!x || !y)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation forward: NULL tensor");
    if (a != DP_ACT_NONE && a != DP_ACT_RELU && a != DP_ACT_SIGMOID && a != DP_ACT_SWISH)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation forward: unknown activation %d", (int)a);
    FN(act_job) j = {a, count, x, NULL, NULL, y};
    dp_tr_run(pool, (count + DP_TR_CHUNK - 1) / DP_TR_CHUNK, FN(act_fwd_task), &j);
    return DISOPT_OK;
}

static void FN(act_bwd_task)(void *ctx, int task, int thread) {
    const FN(act_job) *j = ctx;
    const size_t i0 = (size_t)task * DP_TR_CHUNK, i1 = j->count - i0 < DP_TR_CHUNK ? j->count : i0 + DP_TR_CHUNK;
    const T *x = j->x, *y = j->y, *dy = j->dy;
    T *dx = j->out;
    (void)thread;
    switch (j->a) {
    case DP_ACT_NONE:
        for (size_t i = i0; i < i1; i++)
            dx[i] += dy[i];
        break;
    case DP_ACT_RELU:
        for (size_t i = i0; i < i1; i++)
            dx[i] += x[i] > 0 ? dy[i] : (T)0;
        break;
    case DP_ACT_SIGMOID: /* PyTorch's sigmoid_backward: dy * (1 - y) * y */
        for (size_t i = i0; i < i1; i++)
            dx[i] += dy[i] * ((T)1 - y[i]) * y[i];
        break;
    case DP_ACT_SWISH: /* MemoryEfficientSwish's backward: dy * (s * (1 + x * (1 - s))), s = sigmoid(x) */
        for (size_t i = i0; i < i1; i++) {
            const T s = FN(sigmoid)(x[i]);
            dx[i] += dy[i] * (s * ((T)1 + x[i] * ((T)1 - s)));
        }
        break;
    }
}

disopt_status FN(dp_tr_act_bwd_mt)(dp_pool *pool, dp_act a, size_t count, const T *x, const T *y, const T *dy, T *dx) {
    if (!dy || !dx)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation backward: NULL tensor");
    if (a != DP_ACT_NONE && a != DP_ACT_RELU && a != DP_ACT_SIGMOID && a != DP_ACT_SWISH)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation backward: unknown activation %d", (int)a);
    if ((a == DP_ACT_SIGMOID && !y) || ((a == DP_ACT_RELU || a == DP_ACT_SWISH) && !x))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation backward: the saved %s is NULL",
                        a == DP_ACT_SIGMOID ? "output" : "input");
    FN(act_job) j = {a, count, x, y, dy, dx};
    dp_tr_run(pool, (count + DP_TR_CHUNK - 1) / DP_TR_CHUNK, FN(act_bwd_task), &j);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- channel ops */
#define DP_TR_NULL(what, ...)                                                                                          \
    do {                                                                                                               \
        const void *dp_ptrs_[] = {__VA_ARGS__};                                                                        \
        for (size_t dp_i_ = 0; dp_i_ < sizeof dp_ptrs_ / sizeof dp_ptrs_[0]; dp_i_++)                                  \
            if (!dp_ptrs_[dp_i_])                                                                                      \
                return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: NULL tensor", what);                                 \
    } while (0)

/* The light ops run a body over a range of independent units (planes, images, pixels, elements):
 * tasks of `grain` units, so every unit is computed the same way whatever the split. */
typedef struct FN(lj) FN(lj);
struct FN(lj) {
    void (*body)(const FN(lj) * j, size_t lo, size_t hi);
    size_t total, grain;
    int n, c, k;
    size_t hw, per, ct;
    double p;
    const int *cs;
    const uint8_t *mask;
    const T *a, *b, *d, *e;
    T *o1, *o2, *o3;
    const T *const *xs;
    T *const *dxs;
};

static void FN(lj_task)(void *ctx, int task, int thread) {
    const FN(lj) *j = ctx;
    const size_t lo = (size_t)task * j->grain, hi = j->total - lo < j->grain ? j->total : lo + j->grain;
    (void)thread;
    j->body(j, lo, hi);
}

/* units of `unit` elements each, about DP_TR_CHUNK elements per task */
static void FN(lj_run)(dp_pool *pool, FN(lj) * j, size_t total, size_t unit) {
    j->total = total;
    j->grain = unit >= DP_TR_CHUNK ? 1 : DP_TR_CHUNK / (unit ? unit : 1);
    dp_tr_run(pool, (total + j->grain - 1) / j->grain, FN(lj_task), j);
}

/* planes q = (image, channel) */
static void FN(gap_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++) {
        const T *X = j->a + q * j->hw;
        double s = 0;
        for (size_t i = 0; i < j->hw; i++)
            s += X[i];
        j->o1[q] = (T)(s / (double)j->hw);
    }
}

disopt_status FN(dp_tr_gap_fwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, T *y) {
    DP_TR_NULL("global average pool forward", x, y);
    if (!hw)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "global average pool forward: empty plane");
    FN(lj) j = {.body = FN(gap_fwd_body), .hw = hw, .a = x, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

static void FN(gap_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++) {
        const T g = (T)((double)j->a[q] / (double)j->hw);
        T *dX = j->o1 + q * j->hw;
        for (size_t i = 0; i < j->hw; i++)
            dX[i] += g;
    }
}

disopt_status FN(dp_tr_gap_bwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *dy, T *dx) {
    DP_TR_NULL("global average pool backward", dy, dx);
    FN(lj) j = {.body = FN(gap_bwd_body), .hw = hw, .a = dy, .o1 = dx};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

static void FN(bc_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++)
        for (size_t i = 0; i < j->hw; i++)
            j->o1[q * j->hw + i] = j->a[q];
}

disopt_status FN(dp_tr_broadcast_fwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, T *y) {
    DP_TR_NULL("broadcast forward", x, y);
    FN(lj) j = {.body = FN(bc_fwd_body), .hw = hw, .a = x, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

static void FN(bc_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++) {
        double s = 0;
        for (size_t i = 0; i < j->hw; i++)
            s += j->a[q * j->hw + i];
        j->o1[q] += (T)s;
    }
}

disopt_status FN(dp_tr_broadcast_bwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *dy, T *dx) {
    DP_TR_NULL("broadcast backward", dy, dx);
    FN(lj) j = {.body = FN(bc_bwd_body), .hw = hw, .a = dy, .o1 = dx};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

static void FN(sc_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++)
        for (size_t i = 0; i < j->hw; i++)
            j->o1[q * j->hw + i] = j->a[q * j->hw + i] * j->b[q];
}

disopt_status FN(dp_tr_scale_ch_fwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *g, T *y) {
    DP_TR_NULL("channel scale forward", x, g, y);
    FN(lj) j = {.body = FN(sc_fwd_body), .hw = hw, .a = x, .b = g, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

static void FN(sc_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++) {
        const T *X = j->a + q * j->hw, *dY = j->d + q * j->hw;
        if (j->o1)
            for (size_t i = 0; i < j->hw; i++)
                j->o1[q * j->hw + i] += dY[i] * j->b[q];
        if (j->o2) {
            double s = 0;
            for (size_t i = 0; i < j->hw; i++)
                s += (double)(dY[i] * X[i]);
            j->o2[q] += (T)s;
        }
    }
}

disopt_status FN(dp_tr_scale_ch_bwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *g, const T *dy,
                                        T *dx, T *dg) {
    DP_TR_NULL("channel scale backward", x, g, dy);
    FN(lj) j = {.body = FN(sc_bwd_body), .hw = hw, .a = x, .b = g, .d = dy, .o1 = dx, .o2 = dg};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

static void FN(scse_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t q = lo; q < hi; q++) {
        const T *X = j->a + q * j->hw, *S = j->d + (q / (size_t)j->c) * j->hw;
        T *Y = j->o1 + q * j->hw;
        for (size_t i = 0; i < j->hw; i++)
            Y[i] = X[i] * j->b[q] + X[i] * S[i];
    }
}

disopt_status FN(dp_tr_scse_fwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *cg, const T *sg,
                                    T *y) {
    DP_TR_NULL("SCSE forward", x, cg, sg, y);
    FN(lj) j = {.body = FN(scse_fwd_body), .c = c, .hw = hw, .a = x, .b = cg, .d = sg, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n * c, hw);
    return DISOPT_OK;
}

/* images: the spatial gate's gradient sums over an image's channels */
static void FN(scse_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const int c = j->c;
    const size_t hw = j->hw;
    for (size_t ni = lo; ni < hi; ni++)
        for (int ch = 0; ch < c; ch++) {
            const size_t q = ni * c + ch;
            const T *X = j->a + q * hw, *dY = j->e + q * hw, *S = j->d + ni * hw;
            if (j->o1)
                for (size_t i = 0; i < hw; i++)
                    j->o1[q * hw + i] += dY[i] * j->b[q] + dY[i] * S[i];
            if (j->o2) {
                double s = 0;
                for (size_t i = 0; i < hw; i++)
                    s += (double)(dY[i] * X[i]);
                j->o2[q] += (T)s;
            }
            if (j->o3) {
                T *dS = j->o3 + ni * hw;
                for (size_t i = 0; i < hw; i++)
                    dS[i] += dY[i] * X[i];
            }
        }
}

disopt_status FN(dp_tr_scse_bwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, const T *cg, const T *sg,
                                    const T *dy, T *dx, T *dcg, T *dsg) {
    DP_TR_NULL("SCSE backward", x, cg, sg, dy);
    FN(lj)
    j = {
        .body = FN(scse_bwd_body), .c = c, .hw = hw, .a = x, .b = cg, .d = sg, .e = dy, .o1 = dx, .o2 = dcg, .o3 = dsg};
    FN(lj_run)(pool, &j, (size_t)n, (size_t)c * hw);
    return DISOPT_OK;
}

/* elements */
static void FN(add_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++)
        j->o1[i] = j->a[i] + j->b[i];
}

disopt_status FN(dp_tr_add_fwd_mt)(dp_pool *pool, size_t count, const T *a, const T *b, T *y) {
    DP_TR_NULL("add forward", a, b, y);
    FN(lj) j = {.body = FN(add_fwd_body), .a = a, .b = b, .o1 = y};
    FN(lj_run)(pool, &j, count, 1);
    return DISOPT_OK;
}

static void FN(add_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    if (j->o1)
        for (size_t i = lo; i < hi; i++)
            j->o1[i] += j->a[i];
    if (j->o2)
        for (size_t i = lo; i < hi; i++)
            j->o2[i] += j->a[i];
}

disopt_status FN(dp_tr_add_bwd_mt)(dp_pool *pool, size_t count, const T *dy, T *da, T *db) {
    DP_TR_NULL("add backward", dy);
    FN(lj) j = {.body = FN(add_bwd_body), .a = dy, .o1 = da, .o2 = db};
    FN(lj_run)(pool, &j, count, 1);
    return DISOPT_OK;
}

static disopt_status FN(concat_args)(const char *what, int k, const int *cs, const void *const *xs, const void *y,
                                     size_t *ctot) {
    if (k <= 0 || !cs || !xs || !y)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: no inputs", what);
    size_t t = 0;
    for (int i = 0; i < k; i++) {
        if (cs[i] <= 0)
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: input %d has %d channels", what, i, cs[i]);
        t += (size_t)cs[i];
    }
    *ctot = t;
    return DISOPT_OK;
}

/* images */
static void FN(cat_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t ni = lo; ni < hi; ni++) {
        T *Y = j->o1 + ni * j->ct * j->hw;
        for (int i = 0; i < j->k; i++) {
            const size_t len = (size_t)j->cs[i] * j->hw;
            memcpy(Y, j->xs[i] + ni * len, len * sizeof(T));
            Y += len;
        }
    }
}

disopt_status FN(dp_tr_concat_fwd_mt)(dp_pool *pool, int n, size_t hw, int k, const int *cs, const T *const *xs, T *y) {
    size_t ct = 0;
    DP_TRY(FN(concat_args)("concat forward", k, cs, (const void *const *)xs, y, &ct));
    for (int i = 0; i < k; i++)
        if (!xs[i])
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "concat forward: input %d is NULL", i);
    FN(lj) j = {.body = FN(cat_fwd_body), .hw = hw, .k = k, .cs = cs, .ct = ct, .xs = xs, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n, ct * hw);
    return DISOPT_OK;
}

static void FN(cat_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    for (size_t ni = lo; ni < hi; ni++) {
        const T *dY = j->a + ni * j->ct * j->hw;
        for (int i = 0; i < j->k; i++) {
            const size_t len = (size_t)j->cs[i] * j->hw;
            if (j->dxs[i]) {
                T *dX = j->dxs[i] + ni * len;
                for (size_t q = 0; q < len; q++)
                    dX[q] += dY[q];
            }
            dY += len;
        }
    }
}

disopt_status FN(dp_tr_concat_bwd_mt)(dp_pool *pool, int n, size_t hw, int k, const int *cs, const T *dy,
                                      T *const *dxs) {
    size_t ct = 0;
    DP_TRY(FN(concat_args)("concat backward", k, cs, (const void *const *)dxs, dy, &ct));
    FN(lj) j = {.body = FN(cat_bwd_body), .hw = hw, .k = k, .cs = cs, .ct = ct, .a = dy, .dxs = dxs};
    FN(lj_run)(pool, &j, (size_t)n, ct * hw);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- bilinear upsampling */
/* align_corners=True as PyTorch computes it: scale = (in - 1) / (out - 1) in T, src = scale * dst,
 * i0 = (int)src, i1 = min(i0 + 1, in - 1), l1 = src - i0, l0 = 1 - l1; rows are interpolated along x
 * first, then blended along y (the inference kernel's order). Backward scatters the same weights. */
static void FN(up_coord)(int in, int out, int o, int *i0, int *i1, T *l0, T *l1) {
    const T scale = out > 1 ? (T)(in - 1) / (T)(out - 1) : (T)0;
    const T src = scale * (T)o;
    *i0 = (int)src;
    if (*i0 > in - 1)
        *i0 = in - 1;
    *i1 = *i0 < in - 1 ? *i0 + 1 : in - 1;
    *l1 = src - (T)*i0;
    *l0 = (T)1 - *l1;
}

static disopt_status FN(up_args)(const char *what, int n, int c, int h, int w, int f, const void *a, const void *b) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || f <= 0 || h > INT32_MAX / f || w > INT32_MAX / f)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: bad shape %dx%dx%dx%d, factor %d", what, n, c, h, w, f);
    if (!a || !b)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: NULL tensor", what);
    return DISOPT_OK;
}

typedef struct {
    int h, w, f;
    const T *in;
    T *out;
} FN(up_job);

/* one (image, channel) plane */
static void FN(up_fwd_task)(void *ctx, int task, int thread) {
    const FN(up_job) *j = ctx;
    const int h = j->h, w = j->w, OH = h * j->f, OW = w * j->f;
    const T *X = j->in + (size_t)task * h * w;
    T *Y = j->out + (size_t)task * OH * OW;
    (void)thread;
    for (int oh = 0; oh < OH; oh++) {
        int h0, h1;
        T lh0, lh1;
        FN(up_coord)(h, OH, oh, &h0, &h1, &lh0, &lh1);
        const T *r0 = X + (size_t)h0 * w, *r1 = X + (size_t)h1 * w;
        for (int ow = 0; ow < OW; ow++) {
            int w0, w1;
            T lw0, lw1;
            FN(up_coord)(w, OW, ow, &w0, &w1, &lw0, &lw1);
            const T t0 = lw0 * r0[w0] + lw1 * r0[w1], t1 = lw0 * r1[w0] + lw1 * r1[w1];
            Y[(size_t)oh * OW + ow] = lh0 * t0 + lh1 * t1;
        }
    }
}

disopt_status FN(dp_tr_upsample_fwd_mt)(dp_pool *pool, int n, int c, int h, int w, int f, const T *x, T *y) {
    DP_TRY(FN(up_args)("upsample forward", n, c, h, w, f, x, y));
    FN(up_job) j = {h, w, f, x, y};
    dp_tr_run(pool, (size_t)n * c, FN(up_fwd_task), &j);
    return DISOPT_OK;
}

static void FN(up_bwd_task)(void *ctx, int task, int thread) {
    const FN(up_job) *j = ctx;
    const int h = j->h, w = j->w, OH = h * j->f, OW = w * j->f;
    const T *dY = j->in + (size_t)task * OH * OW;
    T *dX = j->out + (size_t)task * h * w;
    (void)thread;
    for (int oh = 0; oh < OH; oh++) {
        int h0, h1;
        T lh0, lh1;
        FN(up_coord)(h, OH, oh, &h0, &h1, &lh0, &lh1);
        T *r0 = dX + (size_t)h0 * w, *r1 = dX + (size_t)h1 * w;
        for (int ow = 0; ow < OW; ow++) {
            int w0, w1;
            T lw0, lw1;
            FN(up_coord)(w, OW, ow, &w0, &w1, &lw0, &lw1);
            const T g = dY[(size_t)oh * OW + ow], g0 = lh0 * g, g1 = lh1 * g;
            r0[w0] += lw0 * g0;
            r0[w1] += lw1 * g0;
            r1[w0] += lw0 * g1;
            r1[w1] += lw1 * g1;
        }
    }
}

disopt_status FN(dp_tr_upsample_bwd_mt)(dp_pool *pool, int n, int c, int h, int w, int f, const T *dy, T *dx) {
    DP_TRY(FN(up_args)("upsample backward", n, c, h, w, f, dy, dx));
    FN(up_job) j = {h, w, f, dy, dx};
    dp_tr_run(pool, (size_t)n * c, FN(up_bwd_task), &j);
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- softmax over channels */
/* pixels t = (image, position) */
static void FN(sm_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const int c = j->c;
    const size_t hw = j->hw;
    for (size_t t = lo; t < hi; t++) {
        const size_t o = (t / hw) * c * hw + t % hw;
        const T *X = j->a + o;
        T *Y = j->o1 + o;
        T m = X[0];
        for (int ch = 1; ch < c; ch++)
            m = X[(size_t)ch * hw] > m ? X[(size_t)ch * hw] : m;
        double s = 0;
        for (int ch = 0; ch < c; ch++) {
            const T e = TEXP(X[(size_t)ch * hw] - m);
            Y[(size_t)ch * hw] = e;
            s += e;
        }
        const T inv = (T)(1.0 / s);
        for (int ch = 0; ch < c; ch++)
            Y[(size_t)ch * hw] *= inv;
    }
}

disopt_status FN(dp_tr_softmax_fwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *x, T *y) {
    DP_TR_NULL("softmax forward", x, y);
    if (n <= 0 || c <= 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "softmax forward: %d images, %d channels", n, c);
    FN(lj) j = {.body = FN(sm_fwd_body), .c = c, .hw = hw, .a = x, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n * hw, (size_t)c);
    return DISOPT_OK;
}

static void FN(sm_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const int c = j->c;
    const size_t hw = j->hw;
    for (size_t t = lo; t < hi; t++) {
        const size_t o = (t / hw) * c * hw + t % hw;
        const T *Y = j->a + o, *dY = j->b + o;
        T *dX = j->o1 + o;
        double dot = 0;
        for (int ch = 0; ch < c; ch++)
            dot += (double)(dY[(size_t)ch * hw] * Y[(size_t)ch * hw]);
        const T td = (T)dot;
        for (int ch = 0; ch < c; ch++)
            dX[(size_t)ch * hw] += Y[(size_t)ch * hw] * (dY[(size_t)ch * hw] - td);
    }
}

disopt_status FN(dp_tr_softmax_bwd_mt)(dp_pool *pool, int n, int c, size_t hw, const T *y, const T *dy, T *dx) {
    DP_TR_NULL("softmax backward", y, dy, dx);
    FN(lj) j = {.body = FN(sm_bwd_body), .c = c, .hw = hw, .a = y, .b = dy, .o1 = dx};
    FN(lj_run)(pool, &j, (size_t)n * hw, (size_t)(c > 0 ? c : 1));
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- dropout, drop-connect */
/* elements; the scale is j->p (as T) */
static void FN(do_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const T scale = (T)j->p;
    for (size_t i = lo; i < hi; i++)
        j->o1[i] = j->a[i] * (T)j->mask[i] * scale;
}

disopt_status FN(dp_tr_dropout_fwd_mt)(dp_pool *pool, size_t count, double p, const uint8_t *mask, const T *x, T *y) {
    DP_TR_NULL("dropout forward", mask, x, y);
    if (!(p >= 0 && p <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dropout forward: p = %g", p);
    /* PyTorch's native_dropout: (x * mask) * scale, scale = 1 / (1 - p) */
    FN(lj)
    j = {.body = FN(do_fwd_body), .p = (double)(p < 1 ? (T)(1.0 / (1.0 - p)) : (T)0), .mask = mask, .a = x, .o1 = y};
    FN(lj_run)(pool, &j, count, 1);
    return DISOPT_OK;
}

static void FN(do_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const T scale = (T)j->p;
    for (size_t i = lo; i < hi; i++)
        j->o1[i] += j->a[i] * (T)j->mask[i] * scale;
}

disopt_status FN(dp_tr_dropout_bwd_mt)(dp_pool *pool, size_t count, double p, const uint8_t *mask, const T *dy, T *dx) {
    DP_TR_NULL("dropout backward", mask, dy, dx);
    if (!(p >= 0 && p <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dropout backward: p = %g", p);
    FN(lj)
    j = {.body = FN(do_bwd_body), .p = (double)(p < 1 ? (T)(1.0 / (1.0 - p)) : (T)0), .mask = mask, .a = dy, .o1 = dx};
    FN(lj_run)(pool, &j, count, 1);
    return DISOPT_OK;
}

/* elements; sample i / per; keep = j->p (as T) */
static void FN(dc_fwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const T keep = (T)j->p;
    for (size_t i = lo; i < hi; i++)
        j->o1[i] = j->a[i] / keep * (T)j->mask[i / j->per]; /* inputs / keep_prob * binary_tensor */
}

disopt_status FN(dp_tr_drop_connect_fwd_mt)(dp_pool *pool, int n, size_t per, double rate, const uint8_t *mask,
                                            const T *x, T *y) {
    DP_TR_NULL("drop-connect forward", mask, x, y);
    if (!(rate >= 0 && rate < 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "drop-connect forward: rate %g", rate);
    if (n <= 0 || !per)
        return DISOPT_OK;
    FN(lj) j = {.body = FN(dc_fwd_body), .p = (double)(T)(1.0 - rate), .per = per, .mask = mask, .a = x, .o1 = y};
    FN(lj_run)(pool, &j, (size_t)n * per, 1);
    return DISOPT_OK;
}

static void FN(dc_bwd_body)(const FN(lj) * j, size_t lo, size_t hi) {
    const T keep = (T)j->p;
    for (size_t i = lo; i < hi; i++)
        j->o1[i] += j->a[i] * (T)j->mask[i / j->per] / keep; /* autograd: (dy * binary) / keep */
}

disopt_status FN(dp_tr_drop_connect_bwd_mt)(dp_pool *pool, int n, size_t per, double rate, const uint8_t *mask,
                                            const T *dy, T *dx) {
    DP_TR_NULL("drop-connect backward", mask, dy, dx);
    if (!(rate >= 0 && rate < 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "drop-connect backward: rate %g", rate);
    if (n <= 0 || !per)
        return DISOPT_OK;
    FN(lj) j = {.body = FN(dc_bwd_body), .p = (double)(T)(1.0 - rate), .per = per, .mask = mask, .a = dy, .o1 = dx};
    FN(lj_run)(pool, &j, (size_t)n * per, 1);
    return DISOPT_OK;
}

#undef DP_TR_NULL

/* ---------------------------------------------------------------- the same on the caller's thread */
disopt_status FN(dp_tr_conv_fwd)(const dp_conv_params *p, int n, int h, int w, const T *x, const T *wt, const T *b,
                                 T *y, T *ws, size_t ws_elems) {
    return FN(dp_tr_conv_fwd_mt)(NULL, p, n, h, w, x, wt, b, y, ws, ws_elems);
}

disopt_status FN(dp_tr_conv_bwd_data)(const dp_conv_params *p, int n, int h, int w, const T *dy, const T *wt, T *dx,
                                      T *ws, size_t ws_elems) {
    return FN(dp_tr_conv_bwd_data_mt)(NULL, p, n, h, w, dy, wt, dx, ws, ws_elems);
}

disopt_status FN(dp_tr_conv_bwd_filter)(const dp_conv_params *p, int n, int h, int w, const T *x, const T *dy, T *dw,
                                        T *db, T *ws, size_t ws_elems) {
    return FN(dp_tr_conv_bwd_filter_mt)(NULL, p, n, h, w, x, dy, dw, db, ws, ws_elems);
}

disopt_status FN(dp_tr_bn_fwd_train)(int n, int c, size_t hw, const T *x, const T *gamma, const T *beta, double eps,
                                     double momentum, T *run_mean, T *run_var, T *save_mean, T *save_invstd, T *y) {
    return FN(dp_tr_bn_fwd_train_mt)(NULL, n, c, hw, x, gamma, beta, eps, momentum, run_mean, run_var, save_mean,
                                     save_invstd, y);
}

disopt_status FN(dp_tr_bn_bwd_train)(int n, int c, size_t hw, const T *x, const T *dy, const T *gamma,
                                     const T *save_mean, const T *save_invstd, T *dx, T *dgamma, T *dbeta) {
    return FN(dp_tr_bn_bwd_train_mt)(NULL, n, c, hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

disopt_status FN(dp_tr_bn_fwd_eval)(int n, int c, size_t hw, const T *x, const T *gamma, const T *beta,
                                    const T *run_mean, const T *run_var, double eps, T *y) {
    return FN(dp_tr_bn_fwd_eval_mt)(NULL, n, c, hw, x, gamma, beta, run_mean, run_var, eps, y);
}

disopt_status FN(dp_tr_bn_bwd_eval)(int n, int c, size_t hw, const T *x, const T *dy, const T *gamma, const T *run_mean,
                                    const T *run_var, double eps, T *dx, T *dgamma, T *dbeta) {
    return FN(dp_tr_bn_bwd_eval_mt)(NULL, n, c, hw, x, dy, gamma, run_mean, run_var, eps, dx, dgamma, dbeta);
}

disopt_status FN(dp_tr_act_fwd)(dp_act a, size_t count, const T *x, T *y) {
    return FN(dp_tr_act_fwd_mt)(NULL, a, count, x, y);
}

disopt_status FN(dp_tr_act_bwd)(dp_act a, size_t count, const T *x, const T *y, const T *dy, T *dx) {
    return FN(dp_tr_act_bwd_mt)(NULL, a, count, x, y, dy, dx);
}

disopt_status FN(dp_tr_gap_fwd)(int n, int c, size_t hw, const T *x, T *y) {
    return FN(dp_tr_gap_fwd_mt)(NULL, n, c, hw, x, y);
}

disopt_status FN(dp_tr_gap_bwd)(int n, int c, size_t hw, const T *dy, T *dx) {
    return FN(dp_tr_gap_bwd_mt)(NULL, n, c, hw, dy, dx);
}

disopt_status FN(dp_tr_broadcast_fwd)(int n, int c, size_t hw, const T *x, T *y) {
    return FN(dp_tr_broadcast_fwd_mt)(NULL, n, c, hw, x, y);
}

disopt_status FN(dp_tr_broadcast_bwd)(int n, int c, size_t hw, const T *dy, T *dx) {
    return FN(dp_tr_broadcast_bwd_mt)(NULL, n, c, hw, dy, dx);
}

disopt_status FN(dp_tr_scale_ch_fwd)(int n, int c, size_t hw, const T *x, const T *g, T *y) {
    return FN(dp_tr_scale_ch_fwd_mt)(NULL, n, c, hw, x, g, y);
}

disopt_status FN(dp_tr_scale_ch_bwd)(int n, int c, size_t hw, const T *x, const T *g, const T *dy, T *dx, T *dg) {
    return FN(dp_tr_scale_ch_bwd_mt)(NULL, n, c, hw, x, g, dy, dx, dg);
}

disopt_status FN(dp_tr_scse_fwd)(int n, int c, size_t hw, const T *x, const T *cg, const T *sg, T *y) {
    return FN(dp_tr_scse_fwd_mt)(NULL, n, c, hw, x, cg, sg, y);
}

disopt_status FN(dp_tr_scse_bwd)(int n, int c, size_t hw, const T *x, const T *cg, const T *sg, const T *dy, T *dx,
                                 T *dcg, T *dsg) {
    return FN(dp_tr_scse_bwd_mt)(NULL, n, c, hw, x, cg, sg, dy, dx, dcg, dsg);
}

disopt_status FN(dp_tr_add_fwd)(size_t count, const T *a, const T *b, T *y) {
    return FN(dp_tr_add_fwd_mt)(NULL, count, a, b, y);
}

disopt_status FN(dp_tr_add_bwd)(size_t count, const T *dy, T *da, T *db) {
    return FN(dp_tr_add_bwd_mt)(NULL, count, dy, da, db);
}

disopt_status FN(dp_tr_concat_fwd)(int n, size_t hw, int k, const int *cs, const T *const *xs, T *y) {
    return FN(dp_tr_concat_fwd_mt)(NULL, n, hw, k, cs, xs, y);
}

disopt_status FN(dp_tr_concat_bwd)(int n, size_t hw, int k, const int *cs, const T *dy, T *const *dxs) {
    return FN(dp_tr_concat_bwd_mt)(NULL, n, hw, k, cs, dy, dxs);
}

disopt_status FN(dp_tr_upsample_fwd)(int n, int c, int h, int w, int f, const T *x, T *y) {
    return FN(dp_tr_upsample_fwd_mt)(NULL, n, c, h, w, f, x, y);
}

disopt_status FN(dp_tr_upsample_bwd)(int n, int c, int h, int w, int f, const T *dy, T *dx) {
    return FN(dp_tr_upsample_bwd_mt)(NULL, n, c, h, w, f, dy, dx);
}

disopt_status FN(dp_tr_softmax_fwd)(int n, int c, size_t hw, const T *x, T *y) {
    return FN(dp_tr_softmax_fwd_mt)(NULL, n, c, hw, x, y);
}

disopt_status FN(dp_tr_softmax_bwd)(int n, int c, size_t hw, const T *y, const T *dy, T *dx) {
    return FN(dp_tr_softmax_bwd_mt)(NULL, n, c, hw, y, dy, dx);
}

disopt_status FN(dp_tr_dropout_fwd)(size_t count, double p, const uint8_t *mask, const T *x, T *y) {
    return FN(dp_tr_dropout_fwd_mt)(NULL, count, p, mask, x, y);
}

disopt_status FN(dp_tr_dropout_bwd)(size_t count, double p, const uint8_t *mask, const T *dy, T *dx) {
    return FN(dp_tr_dropout_bwd_mt)(NULL, count, p, mask, dy, dx);
}

disopt_status FN(dp_tr_drop_connect_fwd)(int n, size_t per, double rate, const uint8_t *mask, const T *x, T *y) {
    return FN(dp_tr_drop_connect_fwd_mt)(NULL, n, per, rate, mask, x, y);
}

disopt_status FN(dp_tr_drop_connect_bwd)(int n, size_t per, double rate, const uint8_t *mask, const T *dy, T *dx) {
    return FN(dp_tr_drop_connect_bwd_mt)(NULL, n, per, rate, mask, dy, dx);
}
