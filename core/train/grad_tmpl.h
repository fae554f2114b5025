/*
 * grad_tmpl.h - the training kernels of grad_ops.h, written once over the element type. grad_ops.c
 * includes this file once per type after defining:
 *   T          float or double
 *   FN(name)   name##_f32 or name##_f64
 *   TGEMM      bli_sgemm or bli_dgemm
 *   TEXP       expf or exp
 * Conventions: see grad_ops.h (NCHW; forward overwrites, backward adds; reductions in double;
 * single-threaded; no allocation). Every element is computed by the same expression in both
 * instantiations, so the double one, which the finite-difference tests check, checks the float one.
 * The end of this file undefines nothing: grad_ops.c does it between the two includes.
 */

/* ---------------------------------------------------------------- conv */
/* C[m x n] = A[m x k] * B[k x n] + beta * C, every matrix given by (row stride, column stride) */
static void FN(gemm)(dim_t m, dim_t n, dim_t k, const T *a, inc_t rsa, inc_t csa, const T *b, inc_t rsb, inc_t csb,
                     T beta, T *c, inc_t rsc, inc_t csc) {
    T one = 1, bt = beta;
    TGEMM(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &one, (T *)a, rsa, csa, (T *)b, rsb, csb, &bt, c, rsc, csc);
}

/* col: (cin_g*kh*kw) x ncols, row r = (ci, ki, kj), column j = output pixel p0 + j; zero where the
 * tap reads padding */
static void FN(im2col)(const dp_conv_params *c, const T *X, int cin_g, int H, int W, int OW, size_t p0, size_t ncols,
                       T *col) {
    size_t r = 0;
    for (int ci = 0; ci < cin_g; ci++) {
        const T *Xc = X + (size_t)ci * H * W;
        for (int ki = 0; ki < c->kh; ki++)
            for (int kj = 0; kj < c->kw; kj++, r++) {
                T *dst = col + r * ncols;
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

/* 1x1, stride 1, no padding: the GEMM reads the input plane itself */
static int FN(conv_direct)(const dp_conv_params *c) {
    return c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && !c->pt && !c->pb && !c->pl && !c->pr;
}

/* Output columns ow of a depthwise tap with input column iw = ow * sw + off inside [0, W): [*lo, *hi). */
static void FN(dw_cols)(int OW, int W, int sw, int off, int *lo, int *hi) {
    *lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int h = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
    *hi = h < OW ? h : OW;
}

/* Checks the arguments; *cols: output pixels per im2col panel (0 when the conv needs no panel). */
static disopt_status FN(conv_args)(const char *what, const dp_conv_params *p, int n, int h, int w, const void *a,
                                   const void *b, const void *c, T *ws, size_t ws_elems, int *oh, int *ow,
                                   size_t *cols) {
    disopt_status s = dp_tr_conv_check(p, n, h, w, oh, ow);
    if (s)
        return dp_error_prefix(s, "%s", what);
    if (!a || !b || !c)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: NULL tensor", what);
    *cols = 0;
    if (dp_tr_conv_is_depthwise(p) || FN(conv_direct)(p))
        return DISOPT_OK;
    const size_t K = (size_t)(p->cin / p->groups) * p->kh * p->kw, P = (size_t)*oh * *ow;
    if (!ws || ws_elems < K)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: workspace of %zu elements, at least %zu needed", what,
                        ws ? ws_elems : 0, K);
    *cols = ws_elems / K < P ? ws_elems / K : P;
    return DISOPT_OK;
}

disopt_status FN(dp_tr_conv_fwd)(const dp_conv_params *p, int n, int h, int w, const T *x, const T *wt, const T *b,
                                 T *y, T *ws, size_t ws_elems) {
    int OH, OW;
    size_t cols;
    DP_TRY(FN(conv_args)("conv forward", p, n, h, w, x, wt, y, ws, ws_elems, &OH, &OW, &cols));
    const int G = p->groups, cin_g = p->cin / G, cout_g = p->cout / G;
    const size_t HW = (size_t)h * w, P = (size_t)OH * OW, K = (size_t)cin_g * p->kh * p->kw;
    if (dp_tr_conv_is_depthwise(p)) {
        /* tap by tap over output rows; each output sums its taps in (ki, kj) order */
        for (int ni = 0; ni < n; ni++)
            for (int ch = 0; ch < p->cin; ch++) {
                const T *X = x + ((size_t)ni * p->cin + ch) * HW;
                const T *wk = wt + (size_t)ch * p->kh * p->kw;
                T *Y = y + ((size_t)ni * p->cout + ch) * P;
                for (int oh = 0; oh < OH; oh++) {
                    T *yr = Y + (size_t)oh * OW;
                    for (int ow = 0; ow < OW; ow++)
                        yr[ow] = 0;
                    for (int ki = 0; ki < p->kh; ki++) {
                        const int ih = oh * p->sh - p->pt + ki * p->dh;
                        if (ih < 0 || ih >= h)
                            continue;
                        const T *xr = X + (size_t)ih * w;
                        for (int kj = 0; kj < p->kw; kj++) {
                            const int off = kj * p->dw - p->pl, sw = p->sw;
                            int lo, hi;
                            FN(dw_cols)(OW, w, sw, off, &lo, &hi);
                            const T wv = wk[ki * p->kw + kj];
                            for (int ow = lo; ow < hi; ow++)
                                yr[ow] += wv * xr[ow * sw + off];
                        }
                    }
                }
            }
    } else {
        for (int ni = 0; ni < n; ni++)
            for (int g = 0; g < G; g++) {
                const T *X = x + ((size_t)ni * p->cin + (size_t)g * cin_g) * HW;
                T *Y = y + ((size_t)ni * p->cout + (size_t)g * cout_g) * P;
                const T *Wg = wt + (size_t)g * cout_g * K;
                if (!cols) {
                    FN(gemm)(cout_g, (dim_t)P, (dim_t)K, Wg, (inc_t)K, 1, X, (inc_t)P, 1, 0, Y, (inc_t)P, 1);
                    continue;
                }
                for (size_t p0 = 0; p0 < P; p0 += cols) {
                    const size_t nc = P - p0 < cols ? P - p0 : cols;
                    FN(im2col)(p, X, cin_g, h, w, OW, p0, nc, ws);
                    FN(gemm)(cout_g, (dim_t)nc, (dim_t)K, Wg, (inc_t)K, 1, ws, (inc_t)nc, 1, 0, Y + p0, (inc_t)P, 1);
                }
            }
    }
    if (b)
        for (int ni = 0; ni < n; ni++)
            for (int o = 0; o < p->cout; o++) {
                T *Y = y + ((size_t)ni * p->cout + o) * P;
                for (size_t i = 0; i < P; i++)
                    Y[i] += b[o];
            }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_conv_bwd_data)(const dp_conv_params *p, int n, int h, int w, const T *dy, const T *wt, T *dx,
                                      T *ws, size_t ws_elems) {
    int OH, OW;
    size_t cols;
    DP_TRY(FN(conv_args)("conv backward data", p, n, h, w, dy, wt, dx, ws, ws_elems, &OH, &OW, &cols));
    const int G = p->groups, cin_g = p->cin / G, cout_g = p->cout / G;
    const size_t HW = (size_t)h * w, P = (size_t)OH * OW, K = (size_t)cin_g * p->kh * p->kw;
    if (dp_tr_conv_is_depthwise(p)) {
        for (int ni = 0; ni < n; ni++)
            for (int ch = 0; ch < p->cin; ch++) {
                T *dX = dx + ((size_t)ni * p->cin + ch) * HW;
                const T *wk = wt + (size_t)ch * p->kh * p->kw;
                const T *dY = dy + ((size_t)ni * p->cout + ch) * P;
                for (int oh = 0; oh < OH; oh++) {
                    const T *gr = dY + (size_t)oh * OW;
                    for (int ki = 0; ki < p->kh; ki++) {
                        const int ih = oh * p->sh - p->pt + ki * p->dh;
                        if (ih < 0 || ih >= h)
                            continue;
                        T *xr = dX + (size_t)ih * w;
                        for (int kj = 0; kj < p->kw; kj++) {
                            const int off = kj * p->dw - p->pl, sw = p->sw;
                            int lo, hi;
                            FN(dw_cols)(OW, w, sw, off, &lo, &hi);
                            const T wv = wk[ki * p->kw + kj];
                            for (int ow = lo; ow < hi; ow++)
                                xr[ow * sw + off] += wv * gr[ow];
                        }
                    }
                }
            }
        return DISOPT_OK;
    }
    for (int ni = 0; ni < n; ni++)
        for (int g = 0; g < G; g++) {
            T *dX = dx + ((size_t)ni * p->cin + (size_t)g * cin_g) * HW;
            const T *dY = dy + ((size_t)ni * p->cout + (size_t)g * cout_g) * P;
            const T *Wg = wt + (size_t)g * cout_g * K; /* read transposed: K x cout_g */
            if (!cols) {
                FN(gemm)((dim_t)K, (dim_t)P, cout_g, Wg, 1, (inc_t)K, dY, (inc_t)P, 1, 1, dX, (inc_t)HW, 1);
                continue;
            }
            for (size_t p0 = 0; p0 < P; p0 += cols) {
                const size_t nc = P - p0 < cols ? P - p0 : cols;
                FN(gemm)((dim_t)K, (dim_t)nc, cout_g, Wg, 1, (inc_t)K, dY + p0, (inc_t)P, 1, 0, ws, (inc_t)nc, 1);
                FN(col2im_add)(p, ws, cin_g, h, w, OW, p0, nc, dX);
            }
        }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_conv_bwd_filter)(const dp_conv_params *p, int n, int h, int w, const T *x, const T *dy, T *dw,
                                        T *db, T *ws, size_t ws_elems) {
    int OH, OW;
    size_t cols;
    DP_TRY(FN(conv_args)("conv backward filter", p, n, h, w, x, dy, dw, ws, ws_elems, &OH, &OW, &cols));
    const int G = p->groups, cin_g = p->cin / G, cout_g = p->cout / G;
    const size_t HW = (size_t)h * w, P = (size_t)OH * OW, K = (size_t)cin_g * p->kh * p->kw;
    if (dp_tr_conv_is_depthwise(p)) {
        for (int ch = 0; ch < p->cin; ch++)
            for (int ki = 0; ki < p->kh; ki++)
                for (int kj = 0; kj < p->kw; kj++) {
                    const int off = kj * p->dw - p->pl, sw = p->sw;
                    int lo, hi;
                    FN(dw_cols)(OW, w, sw, off, &lo, &hi);
                    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* independent sums: the loop vectorises */
                    for (int ni = 0; ni < n; ni++) {
                        const T *X = x + ((size_t)ni * p->cin + ch) * HW;
                        const T *dY = dy + ((size_t)ni * p->cout + ch) * P;
                        for (int oh = 0; oh < OH; oh++) {
                            const int ih = oh * p->sh - p->pt + ki * p->dh;
                            if (ih < 0 || ih >= h)
                                continue;
                            const T *xr = X + (size_t)ih * w, *gr = dY + (size_t)oh * OW;
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
                    dw[((size_t)ch * p->kh + ki) * p->kw + kj] += (T)acc;
                }
    } else {
        for (int ni = 0; ni < n; ni++)
            for (int g = 0; g < G; g++) {
                const T *X = x + ((size_t)ni * p->cin + (size_t)g * cin_g) * HW;
                const T *dY = dy + ((size_t)ni * p->cout + (size_t)g * cout_g) * P;
                T *dWg = dw + (size_t)g * cout_g * K;
                /* dW_g (cout_g x K) += dY (cout_g x P) * B^T (P x K), B the input (1x1) or im2col panels */
                if (!cols) {
                    FN(gemm)(cout_g, (dim_t)K, (dim_t)P, dY, (inc_t)P, 1, X, 1, (inc_t)HW, 1, dWg, (inc_t)K, 1);
                    continue;
                }
                for (size_t p0 = 0; p0 < P; p0 += cols) {
                    const size_t nc = P - p0 < cols ? P - p0 : cols;
                    FN(im2col)(p, X, cin_g, h, w, OW, p0, nc, ws);
                    FN(gemm)(cout_g, (dim_t)K, (dim_t)nc, dY + p0, (inc_t)P, 1, ws, 1, (inc_t)nc, 1, dWg, (inc_t)K, 1);
                }
            }
    }
    if (db)
        for (int o = 0; o < p->cout; o++) {
            double acc = 0;
            for (int ni = 0; ni < n; ni++) {
                const T *dY = dy + ((size_t)ni * p->cout + o) * P;
                for (size_t i = 0; i < P; i++)
                    acc += dY[i];
            }
            db[o] += (T)acc;
        }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- batch norm */
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

disopt_status FN(dp_tr_bn_fwd_train)(int n, int c, size_t hw, const T *x, const T *gamma, const T *beta, double eps,
                                     double momentum, T *run_mean, T *run_var, T *save_mean, T *save_invstd, T *y) {
    DP_TRY(FN(bn_args)("batch norm forward (training)", n, c, hw, x, y, gamma, eps));
    if (!beta || !save_mean || !save_invstd || !run_mean != !run_var)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (training): NULL tensor");
    const size_t M = (size_t)n * hw;
    if (M < 2) /* PyTorch: "Expected more than 1 value per channel when training" */
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (training): one value per channel");
    if (!(momentum >= 0 && momentum <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (training): momentum %g", momentum);
    for (int ch = 0; ch < c; ch++) {
        double s = 0;
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                s += X[i];
        }
        const double mean = s / (double)M;
        double ss = 0; /* two passes: the variance does not lose digits to the mean */
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                double d = (double)X[i] - mean;
                ss += d * d;
            }
        }
        const double invstd = 1.0 / sqrt(ss / (double)M + eps);
        save_mean[ch] = (T)mean;
        save_invstd[ch] = (T)invstd;
        if (run_mean) { /* PyTorch: r = momentum * batch + (1 - momentum) * r, unbiased variance */
            run_mean[ch] = (T)(momentum * mean + (1.0 - momentum) * (double)run_mean[ch]);
            run_var[ch] = (T)(momentum * (ss / (double)(M - 1)) + (1.0 - momentum) * (double)run_var[ch]);
        }
        /* y = x * alpha + shift, alpha = gamma * invstd, shift = beta - mean * alpha (PyTorch's CPU form) */
        const T alpha = (T)((double)gamma[ch] * invstd);
        const T shift = (T)((double)beta[ch] - mean * (double)gamma[ch] * invstd);
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw;
            T *Y = y + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                Y[i] = X[i] * alpha + shift;
        }
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_bn_bwd_train)(int n, int c, size_t hw, const T *x, const T *dy, const T *gamma,
                                     const T *save_mean, const T *save_invstd, T *dx, T *dgamma, T *dbeta) {
    DP_TRY(FN(bn_args)("batch norm backward (training)", n, c, hw, x, dy, gamma, 1));
    if (!save_mean || !save_invstd)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm backward (training): NULL saved statistics");
    const size_t M = (size_t)n * hw;
    for (int ch = 0; ch < c; ch++) {
        const double mean = save_mean[ch], invstd = save_invstd[ch];
        double sdy = 0, dot = 0; /* sum dy, sum dy * (x - mean) */
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw, *dY = dy + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                sdy += dY[i];
                dot += (double)dY[i] * ((double)X[i] - mean);
            }
        }
        if (dgamma)
            dgamma[ch] += (T)(dot * invstd);
        if (dbeta)
            dbeta[ch] += (T)sdy;
        if (!dx)
            continue;
        /* dx = (dy - mean(dy) - (x - mean) * dot / M * invstd^2) * gamma * invstd */
        const T tm = (T)mean, k = (T)(dot / (double)M * invstd * invstd), gm = (T)(sdy / (double)M);
        const T wi = (T)((double)gamma[ch] * invstd);
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw, *dY = dy + ((size_t)ni * c + ch) * hw;
            T *dX = dx + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                dX[i] += (dY[i] - gm - (X[i] - tm) * k) * wi;
        }
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_bn_fwd_eval)(int n, int c, size_t hw, const T *x, const T *gamma, const T *beta,
                                    const T *run_mean, const T *run_var, double eps, T *y) {
    DP_TRY(FN(bn_args)("batch norm forward (eval)", n, c, hw, x, y, gamma, eps));
    if (!beta || !run_mean || !run_var)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm forward (eval): NULL tensor");
    for (int ch = 0; ch < c; ch++) {
        const double invstd = 1.0 / sqrt((double)run_var[ch] + eps);
        const T alpha = (T)((double)gamma[ch] * invstd);
        const T shift = (T)((double)beta[ch] - (double)run_mean[ch] * (double)gamma[ch] * invstd);
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw;
            T *Y = y + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                Y[i] = X[i] * alpha + shift;
        }
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_bn_bwd_eval)(int n, int c, size_t hw, const T *x, const T *dy, const T *gamma, const T *run_mean,
                                    const T *run_var, double eps, T *dx, T *dgamma, T *dbeta) {
    DP_TRY(FN(bn_args)("batch norm backward (eval)", n, c, hw, x, dy, gamma, eps));
    if (!run_mean || !run_var)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "batch norm backward (eval): NULL stats");
    for (int ch = 0; ch < c; ch++) {
        const double invstd = 1.0 / sqrt((double)run_var[ch] + eps), mean = run_mean[ch];
        double sdy = 0, dot = 0;
        const T wi = (T)((double)gamma[ch] * invstd);
        for (int ni = 0; ni < n; ni++) {
            const T *X = x + ((size_t)ni * c + ch) * hw, *dY = dy + ((size_t)ni * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                sdy += dY[i];
                dot += (double)dY[i] * ((double)X[i] - mean);
            }
            if (dx) {
                T *dX = dx + ((size_t)ni * c + ch) * hw;
                for (size_t i = 0; i < hw; i++)
                    dX[i] += dY[i] * wi;
            }
        }
        if (dgamma)
            dgamma[ch] += (T)(dot * invstd);
        if (dbeta)
            dbeta[ch] += (T)sdy;
    }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- activations */
static inline T FN(sigmoid)(T v) { return (T)1 / ((T)1 + TEXP(-v)); }

disopt_status FN(dp_tr_act_fwd)(dp_act a, size_t count, const T *x, T *y) {
    if (!x || !y)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation forward: NULL tensor");
    switch (a) {
    case DP_ACT_NONE:
        if (y != x)
            memmove(y, x, count * sizeof(T));
        return DISOPT_OK;
    case DP_ACT_RELU:
        for (size_t i = 0; i < count; i++)
            y[i] = x[i] > 0 ? x[i] : (T)0;
        return DISOPT_OK;
    case DP_ACT_SIGMOID:
        for (size_t i = 0; i < count; i++)
            y[i] = FN(sigmoid)(x[i]);
        return DISOPT_OK;
    case DP_ACT_SWISH: /* efficientnet_pytorch's MemoryEfficientSwish: x * sigmoid(x) */
        for (size_t i = 0; i < count; i++)
            y[i] = x[i] * FN(sigmoid)(x[i]);
        return DISOPT_OK;
    }
    return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation forward: unknown activation %d", (int)a);
}

disopt_status FN(dp_tr_act_bwd)(dp_act a, size_t count, const T *x, const T *y, const T *dy, T *dx) {
    if (!dy || !dx)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation backward: NULL tensor");
    switch (a) {
    case DP_ACT_NONE:
        for (size_t i = 0; i < count; i++)
            dx[i] += dy[i];
        return DISOPT_OK;
    case DP_ACT_RELU:
        if (!x)
            break;
        for (size_t i = 0; i < count; i++)
            dx[i] += x[i] > 0 ? dy[i] : (T)0;
        return DISOPT_OK;
    case DP_ACT_SIGMOID: /* PyTorch's sigmoid_backward: dy * (1 - y) * y */
        if (!y)
            break;
        for (size_t i = 0; i < count; i++)
            dx[i] += dy[i] * ((T)1 - y[i]) * y[i];
        return DISOPT_OK;
    case DP_ACT_SWISH: /* MemoryEfficientSwish's backward: dy * (s * (1 + x * (1 - s))), s = sigmoid(x) */
        if (!x)
            break;
        for (size_t i = 0; i < count; i++) {
            const T s = FN(sigmoid)(x[i]);
            dx[i] += dy[i] * (s * ((T)1 + x[i] * ((T)1 - s)));
        }
        return DISOPT_OK;
    default:
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation backward: unknown activation %d", (int)a);
    }
    return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "activation backward: the saved %s is NULL",
                    a == DP_ACT_SIGMOID ? "output" : "input");
}

/* ---------------------------------------------------------------- channel ops */
#define DP_TR_NULL(what, ...)                                                                                          \
    do {                                                                                                               \
        const void *dp_ptrs_[] = {__VA_ARGS__};                                                                        \
        for (size_t dp_i_ = 0; dp_i_ < sizeof dp_ptrs_ / sizeof dp_ptrs_[0]; dp_i_++)                                  \
            if (!dp_ptrs_[dp_i_])                                                                                      \
                return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "%s: NULL tensor", what);                                 \
    } while (0)

disopt_status FN(dp_tr_gap_fwd)(int n, int c, size_t hw, const T *x, T *y) {
    DP_TR_NULL("global average pool forward", x, y);
    if (!hw)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "global average pool forward: empty plane");
    for (size_t q = 0; q < (size_t)n * c; q++) {
        const T *X = x + q * hw;
        double s = 0;
        for (size_t i = 0; i < hw; i++)
            s += X[i];
        y[q] = (T)(s / (double)hw);
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_gap_bwd)(int n, int c, size_t hw, const T *dy, T *dx) {
    DP_TR_NULL("global average pool backward", dy, dx);
    for (size_t q = 0; q < (size_t)n * c; q++) {
        const T g = (T)((double)dy[q] / (double)hw);
        T *dX = dx + q * hw;
        for (size_t i = 0; i < hw; i++)
            dX[i] += g;
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_broadcast_fwd)(int n, int c, size_t hw, const T *x, T *y) {
    DP_TR_NULL("broadcast forward", x, y);
    for (size_t q = 0; q < (size_t)n * c; q++)
        for (size_t i = 0; i < hw; i++)
            y[q * hw + i] = x[q];
    return DISOPT_OK;
}

disopt_status FN(dp_tr_broadcast_bwd)(int n, int c, size_t hw, const T *dy, T *dx) {
    DP_TR_NULL("broadcast backward", dy, dx);
    for (size_t q = 0; q < (size_t)n * c; q++) {
        double s = 0;
        for (size_t i = 0; i < hw; i++)
            s += dy[q * hw + i];
        dx[q] += (T)s;
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_scale_ch_fwd)(int n, int c, size_t hw, const T *x, const T *g, T *y) {
    DP_TR_NULL("channel scale forward", x, g, y);
    for (size_t q = 0; q < (size_t)n * c; q++)
        for (size_t i = 0; i < hw; i++)
            y[q * hw + i] = x[q * hw + i] * g[q];
    return DISOPT_OK;
}

disopt_status FN(dp_tr_scale_ch_bwd)(int n, int c, size_t hw, const T *x, const T *g, const T *dy, T *dx, T *dg) {
    DP_TR_NULL("channel scale backward", x, g, dy);
    for (size_t q = 0; q < (size_t)n * c; q++) {
        const T *X = x + q * hw, *dY = dy + q * hw;
        if (dx)
            for (size_t i = 0; i < hw; i++)
                dx[q * hw + i] += dY[i] * g[q];
        if (dg) {
            double s = 0;
            for (size_t i = 0; i < hw; i++)
                s += (double)(dY[i] * X[i]);
            dg[q] += (T)s;
        }
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_scse_fwd)(int n, int c, size_t hw, const T *x, const T *cg, const T *sg, T *y) {
    DP_TR_NULL("SCSE forward", x, cg, sg, y);
    for (int ni = 0; ni < n; ni++)
        for (int ch = 0; ch < c; ch++) {
            const size_t q = (size_t)ni * c + ch;
            const T *X = x + q * hw, *S = sg + (size_t)ni * hw;
            T *Y = y + q * hw;
            for (size_t i = 0; i < hw; i++)
                Y[i] = X[i] * cg[q] + X[i] * S[i];
        }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_scse_bwd)(int n, int c, size_t hw, const T *x, const T *cg, const T *sg, const T *dy, T *dx,
                                 T *dcg, T *dsg) {
    DP_TR_NULL("SCSE backward", x, cg, sg, dy);
    for (int ni = 0; ni < n; ni++)
        for (int ch = 0; ch < c; ch++) {
            const size_t q = (size_t)ni * c + ch;
            const T *X = x + q * hw, *dY = dy + q * hw, *S = sg + (size_t)ni * hw;
            if (dx)
                for (size_t i = 0; i < hw; i++)
                    dx[q * hw + i] += dY[i] * cg[q] + dY[i] * S[i];
            if (dcg) {
                double s = 0;
                for (size_t i = 0; i < hw; i++)
                    s += (double)(dY[i] * X[i]);
                dcg[q] += (T)s;
            }
            if (dsg) {
                T *dS = dsg + (size_t)ni * hw;
                for (size_t i = 0; i < hw; i++)
                    dS[i] += dY[i] * X[i];
            }
        }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_add_fwd)(size_t count, const T *a, const T *b, T *y) {
    DP_TR_NULL("add forward", a, b, y);
    for (size_t i = 0; i < count; i++)
        y[i] = a[i] + b[i];
    return DISOPT_OK;
}

disopt_status FN(dp_tr_add_bwd)(size_t count, const T *dy, T *da, T *db) {
    DP_TR_NULL("add backward", dy);
    if (da)
        for (size_t i = 0; i < count; i++)
            da[i] += dy[i];
    if (db)
        for (size_t i = 0; i < count; i++)
            db[i] += dy[i];
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

disopt_status FN(dp_tr_concat_fwd)(int n, size_t hw, int k, const int *cs, const T *const *xs, T *y) {
    size_t ct = 0;
    DP_TRY(FN(concat_args)("concat forward", k, cs, (const void *const *)xs, y, &ct));
    for (int i = 0; i < k; i++)
        if (!xs[i])
            return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "concat forward: input %d is NULL", i);
    for (int ni = 0; ni < n; ni++) {
        T *Y = y + (size_t)ni * ct * hw;
        for (int i = 0; i < k; i++) {
            const size_t len = (size_t)cs[i] * hw;
            memcpy(Y, xs[i] + (size_t)ni * len, len * sizeof(T));
            Y += len;
        }
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_concat_bwd)(int n, size_t hw, int k, const int *cs, const T *dy, T *const *dxs) {
    size_t ct = 0;
    DP_TRY(FN(concat_args)("concat backward", k, cs, (const void *const *)dxs, dy, &ct));
    for (int ni = 0; ni < n; ni++) {
        const T *dY = dy + (size_t)ni * ct * hw;
        for (int i = 0; i < k; i++) {
            const size_t len = (size_t)cs[i] * hw;
            if (dxs[i]) {
                T *dX = dxs[i] + (size_t)ni * len;
                for (size_t j = 0; j < len; j++)
                    dX[j] += dY[j];
            }
            dY += len;
        }
    }
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

disopt_status FN(dp_tr_upsample_fwd)(int n, int c, int h, int w, int f, const T *x, T *y) {
    DP_TRY(FN(up_args)("upsample forward", n, c, h, w, f, x, y));
    const int OH = h * f, OW = w * f;
    for (size_t q = 0; q < (size_t)n * c; q++) {
        const T *X = x + q * h * w;
        T *Y = y + q * OH * OW;
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
    return DISOPT_OK;
}

disopt_status FN(dp_tr_upsample_bwd)(int n, int c, int h, int w, int f, const T *dy, T *dx) {
    DP_TRY(FN(up_args)("upsample backward", n, c, h, w, f, dy, dx));
    const int OH = h * f, OW = w * f;
    for (size_t q = 0; q < (size_t)n * c; q++) {
        const T *dY = dy + q * OH * OW;
        T *dX = dx + q * h * w;
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
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- softmax over channels */
disopt_status FN(dp_tr_softmax_fwd)(int n, int c, size_t hw, const T *x, T *y) {
    DP_TR_NULL("softmax forward", x, y);
    if (n <= 0 || c <= 0)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "softmax forward: %d images, %d channels", n, c);
    for (int ni = 0; ni < n; ni++) {
        const T *X = x + (size_t)ni * c * hw;
        T *Y = y + (size_t)ni * c * hw;
        for (size_t i = 0; i < hw; i++) {
            T m = X[i];
            for (int ch = 1; ch < c; ch++)
                m = X[(size_t)ch * hw + i] > m ? X[(size_t)ch * hw + i] : m;
            double s = 0;
            for (int ch = 0; ch < c; ch++) {
                const T e = TEXP(X[(size_t)ch * hw + i] - m);
                Y[(size_t)ch * hw + i] = e;
                s += e;
            }
            const T inv = (T)(1.0 / s);
            for (int ch = 0; ch < c; ch++)
                Y[(size_t)ch * hw + i] *= inv;
        }
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_softmax_bwd)(int n, int c, size_t hw, const T *y, const T *dy, T *dx) {
    DP_TR_NULL("softmax backward", y, dy, dx);
    for (int ni = 0; ni < n; ni++) {
        const size_t o = (size_t)ni * c * hw;
        for (size_t i = 0; i < hw; i++) {
            double dot = 0;
            for (int ch = 0; ch < c; ch++)
                dot += (double)(dy[o + (size_t)ch * hw + i] * y[o + (size_t)ch * hw + i]);
            const T td = (T)dot;
            for (int ch = 0; ch < c; ch++) {
                const size_t j = o + (size_t)ch * hw + i;
                dx[j] += y[j] * (dy[j] - td);
            }
        }
    }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- dropout, drop-connect */
disopt_status FN(dp_tr_dropout_fwd)(size_t count, double p, const uint8_t *mask, const T *x, T *y) {
    DP_TR_NULL("dropout forward", mask, x, y);
    if (!(p >= 0 && p <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dropout forward: p = %g", p);
    const T scale = p < 1 ? (T)(1.0 / (1.0 - p)) : (T)0; /* PyTorch's native_dropout: (x * mask) * scale */
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] * (T)mask[i] * scale;
    return DISOPT_OK;
}

disopt_status FN(dp_tr_dropout_bwd)(size_t count, double p, const uint8_t *mask, const T *dy, T *dx) {
    DP_TR_NULL("dropout backward", mask, dy, dx);
    if (!(p >= 0 && p <= 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "dropout backward: p = %g", p);
    const T scale = p < 1 ? (T)(1.0 / (1.0 - p)) : (T)0;
    for (size_t i = 0; i < count; i++)
        dx[i] += dy[i] * (T)mask[i] * scale;
    return DISOPT_OK;
}

disopt_status FN(dp_tr_drop_connect_fwd)(int n, size_t per, double rate, const uint8_t *mask, const T *x, T *y) {
    DP_TR_NULL("drop-connect forward", mask, x, y);
    if (!(rate >= 0 && rate < 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "drop-connect forward: rate %g", rate);
    const T keep = (T)(1.0 - rate);
    for (int ni = 0; ni < n; ni++) {
        const T m = (T)mask[ni];
        const T *X = x + (size_t)ni * per;
        T *Y = y + (size_t)ni * per;
        for (size_t i = 0; i < per; i++)
            Y[i] = X[i] / keep * m; /* inputs / keep_prob * binary_tensor */
    }
    return DISOPT_OK;
}

disopt_status FN(dp_tr_drop_connect_bwd)(int n, size_t per, double rate, const uint8_t *mask, const T *dy, T *dx) {
    DP_TR_NULL("drop-connect backward", mask, dy, dx);
    if (!(rate >= 0 && rate < 1))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "drop-connect backward: rate %g", rate);
    const T keep = (T)(1.0 - rate);
    for (int ni = 0; ni < n; ni++) {
        const T m = (T)mask[ni];
        const T *dY = dy + (size_t)ni * per;
        T *dX = dx + (size_t)ni * per;
        for (size_t i = 0; i < per; i++)
            dX[i] += dY[i] * m / keep; /* autograd: (dy * binary) / keep */
    }
    return DISOPT_OK;
}

#undef DP_TR_NULL
