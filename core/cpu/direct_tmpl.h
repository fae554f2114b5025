/*
 * direct_tmpl.h - the direct (non-GEMM) conv kernels, written once and included by ops_conv.c for
 * each vector ISA. The includer defines:
 *   DT(name)       the function name with the ISA's suffix
 *   DT_TARGET      the target attribute
 *   DT_VL          floats per vector;  VF the vector type;  DT_MASK the lane-mask type
 *   DT_SET1, DT_LOADU, DT_STOREU, DT_MUL, DT_ADD, DT_ACT, DT_ACT_N (simd.h's act*_n)
 *   DT_FIRST(n)    mask of lanes 0..n-1 (0 <= n <= DT_VL);  DT_RANGE(lo, hi) lanes lo..hi-1
 *   DT_LOADM(m, p) masked load, zero elsewhere (masked-off lanes are never read);  DT_STOREM(p, m, v)
 *   DT_MADD(acc, m, v)  acc + v in the lanes of m, acc elsewhere
 *   DT_NV          vectors of one row that the few-output kernel keeps in registers
 *   DT_GAP_T, DT_GAP_ZERO, DT_GAP_ADD(g, v, full), DT_GAP_OUT(g, double *part8): the SE pooling sums of a plane,
 *                  8 partial double sums, element i of the plane into part[i % 8] in plane order
 *                  (exactly ops_eltwise.c's dp_cpu_gap_plane); full = 0: only lanes 0..7 are data.
 * Every output element is computed with the same float operations in the same order as the scalar
 * code in ops_conv.c (no FMA contraction), so all ISAs give the same bits. The end of this file
 * undefines all of the above, ready for the next ISA.
 */

/* dst[0, pl) = 0, dst[pl, pl + W) = src, dst[pl + W, pl + W + pr) = 0, with whole-vector stores only:
 * the zeros in front are stored first and overwritten by the data, the data's last vector carries
 * zeros past W (masked load), and the stores may run up to DT_VL floats past pl + W + pr (dw_scratch_floats
 * leaves that much room after every slot and the row buffer). Masked stores (vmaskmovps) are
 * microcoded on AMD's cores: two per row were a fifth of a 32x32 5x5 plane's time on the EPYC. */
/* (inlined: a call inside the row loop makes GCC clear the upper register halves first, which
 * spills the kernel's weights every row) */
DT_TARGET static inline __attribute__((always_inline)) void DT(pad_row)(float *dst, const float *src, int W, int pl,
                                                                         int pr) {
    const VF z = DT_SET1(0.0f);
    for (int i = 0; i < pl; i += DT_VL) DT_STOREU(dst + i, z);
    float *d = dst + pl;
    int i = 0;
    for (; i + DT_VL <= W; i += DT_VL) DT_STOREU(d + i, DT_LOADU(src + i));
    if (i < W) {
        DT_STOREU(d + i, DT_LOADM(DT_FIRST(W - i), src + i));
        i += DT_VL;
    }
    for (; i < W + pr; i += DT_VL) DT_STOREU(d + i, z);
}

/* dst[j] = src[2j + phase] for j < n (the stride-2 phase split of one padded row) */
DT_TARGET static inline __attribute__((always_inline)) void DT(deinterleave)(const float *src, float *even, float *odd,
                                                                              int n_even, int n_odd) {
    int j = 0;
#if DT_VL == 16
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (; j + 16 <= n_odd; j += 16) {
        __m512 a = _mm512_loadu_ps(src + 2 * j), b = _mm512_loadu_ps(src + 2 * j + 16);
        _mm512_storeu_ps(even + j, _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(odd + j, _mm512_permutex2var_ps(a, io, b));
    }
#else
    for (; j + 8 <= n_odd; j += 8) {
        __m256 a = _mm256_loadu_ps(src + 2 * j), b = _mm256_loadu_ps(src + 2 * j + 8);
        __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xdd); /* a0 a2 b0 b2 | a4 a6 b4 b6 */
        _mm256_storeu_ps(even + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8)));
        _mm256_storeu_ps(odd + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xd8)));
    }
#endif
    for (int k = j; k < n_even; k++) even[k] = src[2 * k];
    for (int k = j; k < n_odd; k++) odd[k] = src[2 * k + 1];
}

/* activation (a constant after inlining) and pooling sums over n contiguous outputs */
DT_TARGET static inline __attribute__((always_inline)) void DT(act_pass)(float *yb, size_t n, const dp_act ACT,
                                                                          const int gap_on, DT_GAP_T *g) {
    size_t i = 0;
    for (; i + DP_ACT_NMAX * DT_VL <= n; i += DP_ACT_NMAX * DT_VL) { /* DP_ACT_NMAX vectors interleaved */
        VF v[DP_ACT_NMAX];
#pragma GCC unroll 4
        for (int q = 0; q < DP_ACT_NMAX; q++) v[q] = DT_LOADU(yb + i + q * DT_VL);
        DT_ACT_N(v, DP_ACT_NMAX, ACT);
#pragma GCC unroll 4
        for (int q = 0; q < DP_ACT_NMAX; q++) {
            DT_STOREU(yb + i + q * DT_VL, v[q]);
            if (gap_on) DT_GAP_ADD(*g, v[q], 1);
        }
    }
    for (; i + DT_VL <= n; i += DT_VL) {
        VF v = DT_ACT(DT_LOADU(yb + i), ACT);
        DT_STOREU(yb + i, v);
        if (gap_on) DT_GAP_ADD(*g, v, 1);
    }
    if (i < n) { /* OW % 8 == 0 when gap is asked for: then 8 lanes are left */
        const DT_MASK m = DT_FIRST((int)(n - i));
        VF v = DT_ACT(DT_LOADM(m, yb + i), ACT);
        DT_STOREM(yb + i, m, v);
        if (gap_on) DT_GAP_ADD(*g, v, 0);
    }
}

/* One depthwise plane (see dw_task): input rows are zero-padded (and split by column phase for
 * stride 2) into a ring of slots as the output rows first need them; rows above and below the
 * input read a shared zero row. Every tap of a vector of outputs is then one contiguous load from
 * L1, and each output gets the scalar dw_rows' operations in its order. */
DT_TARGET static inline __attribute__((always_inline)) void DT(dw_body)(const dw_plane *p, const int KH,
                                                                         const int KW) {
    /* 3x3 and 5x5 sum each kernel row first, other kernels tap by tap: dw_rows' two orders */
    const int flat = KH != KW || (KH != 3 && KH != 5);
    VF w[DW_MAX_TAPS];
    for (int t = 0; t < KH * KW; t++) w[t] = DT_SET1(p->wt[t]);
    const VF vb = DT_SET1(p->b);
    const dp_act act = p->act;
    const int H = p->h, W = p->w, OW = p->ow, S = p->sw, rs = p->rs, span = p->span, dh = p->dh;
    const int Wp = W + p->pl + p->pr;
    const size_t slot = (size_t)S * rs;
    ptrdiff_t coff[DW_MAX_KW];
    for (int kj = 0; kj < KW; kj++) coff[kj] = (ptrdiff_t)(kj * p->dw % S) * rs + kj * p->dw / S;
    float *const ring = p->ring, *const y = p->y;
    const float *const x = p->x, *const zero = p->zero;
    double *const gap = p->gap;
    for (size_t i = 0; i < slot; i += DT_VL) DT_STOREU(p->zero + i, DT_SET1(0.0f));
    int filled = -1; /* the input rows up to this one are in the ring */
    int done = 0;    /* output rows before this one have their activation */
    int ih0 = -p->pt, s0 = ((ih0 % span) + span) % span; /* first input row of output row oh, its slot */
    DT_GAP_T gs = DT_GAP_ZERO;
    for (int oh = 0; oh < p->oh; oh++, ih0 += p->sh, s0 = dw_wrap(s0 + p->sh, span)) {
        int last = ih0 + (KH - 1) * dh + DW_AHEAD * p->sh; /* rows are padded ahead of use: loads right
                                                            * after the stores would wait for them */
        if (last > H - 1) last = H - 1;
        int r = filled + 1 > ih0 ? filled + 1 : (ih0 > 0 ? ih0 : 0);
        for (int sr = dw_wrap(s0 + (r - ih0), span); r <= last; r++, sr = sr + 1 == span ? 0 : sr + 1) {
            float *sl = ring + (size_t)sr * slot;
            const float *src = x + (size_t)r * W;
            if (S == 1) {
                DT(pad_row)(sl, src, W, p->pl, p->pr);
            } else {
                DT(pad_row)(p->rowbuf, src, W, p->pl, p->pr + 1);
                DT(deinterleave)(p->rowbuf, sl, sl + rs, (Wp + 1) / 2, Wp / 2);
            }
        }
        if (last > filled) filled = last;
        const float *rp[DW_MAX_KH];
        for (int ki = 0, sk = s0; ki < KH; ki++, sk = dw_wrap(sk + dh, span)) {
            const int ih = ih0 + ki * dh;
            rp[ki] = ih >= 0 && ih < H ? ring + (size_t)sk * slot : zero;
        }
        float *yr = y + (size_t)oh * OW;
        int o = 0;
        for (; o + DT_VL <= OW; o += DT_VL) {
            VF acc = vb;
#pragma GCC unroll 7
            for (int ki = 0; ki < KH; ki++) {
                const float *q = rp[ki] + o;
                if (flat) {
                    for (int kj = 0; kj < KW; kj++) acc = DT_ADD(acc, DT_MUL(w[ki * KW + kj], DT_LOADU(q + coff[kj])));
                    continue;
                }
                VF r = DT_MUL(w[ki * KW], DT_LOADU(q + coff[0]));
#pragma GCC unroll 6
                for (int kj = 1; kj < KW; kj++) r = DT_ADD(r, DT_MUL(w[ki * KW + kj], DT_LOADU(q + coff[kj])));
                acc = DT_ADD(acc, r);
            }
            DT_STOREU(yr + o, acc);
        }
        if (o < OW) {
            const DT_MASK m = DT_FIRST(OW - o);
            VF acc = vb;
            for (int ki = 0; ki < KH; ki++) {
                const float *q = rp[ki] + o;
                if (flat) {
                    for (int kj = 0; kj < KW; kj++) acc = DT_ADD(acc, DT_MUL(w[ki * KW + kj], DT_LOADM(m, q + coff[kj])));
                    continue;
                }
                VF r = DT_MUL(w[ki * KW], DT_LOADM(m, q + coff[0]));
                for (int kj = 1; kj < KW; kj++) r = DT_ADD(r, DT_MUL(w[ki * KW + kj], DT_LOADM(m, q + coff[kj])));
                acc = DT_ADD(acc, r);
            }
            DT_STOREM(yr + o, m, acc);
        }
        /* activation and pooling sums: a separate pass over each block of finished rows (still in
         * L1), whose iterations are independent; fused into the loop above, the long exp chain
         * left the Xeon idle at every row end of the many 32-wide planes */
        if (oh + 1 == p->oh || (size_t)(oh + 1 - done) * OW >= DW_ACT_BLOCK) {
            float *yb = y + (size_t)done * OW;
            const size_t n = (size_t)(oh + 1 - done) * OW;
            done = oh + 1;
            switch (act) { /* one loop per activation: no branch per vector */
            case DP_ACT_SWISH: DT(act_pass)(yb, n, DP_ACT_SWISH, gap != NULL, &gs); break;
            case DP_ACT_SIGMOID: DT(act_pass)(yb, n, DP_ACT_SIGMOID, gap != NULL, &gs); break;
            case DP_ACT_RELU: DT(act_pass)(yb, n, DP_ACT_RELU, gap != NULL, &gs); break;
            default:
                if (gap) DT(act_pass)(yb, n, DP_ACT_NONE, 1, &gs);
                break;
            }
        }
    }
    if (gap) DT_GAP_OUT(gs, gap);
}

DT_TARGET static void DT(dw_plane_run)(const dw_plane *p) {
    if (p->kh == 3 && p->kw == 3)
        DT(dw_body)(p, 3, 3);
    else if (p->kh == 5 && p->kw == 5)
        DT(dw_body)(p, 5, 5);
    else
        DT(dw_body)(p, p->kh, p->kw);
}

/* Few-output dense conv (stride 1 along W, kw <= FEW_MAX_KW), output rows oh0..oh1-1 of one image,
 * every output channel. Each output element is bias + sum over (ci, ki, kj) in that order with
 * out-of-range taps skipped, exactly as few_task_scalar. The rows of y hold the running sums
 * between channel chunks; within a chunk a row's DT_NV vectors of two output channels stay in
 * registers, and each input vector loaded serves both. */
DT_TARGET static void DT(few_rows)(const few_job *f, int oh0, int oh1) {
    const int C = f->C, H = f->H, W = f->W, OW = f->OW, OH = f->OH, cout = f->cout, kh = f->kh, kw = f->kw;
    const int NB = DT_NV * DT_VL; /* columns per block */
    for (int o = 0; o < cout; o++) {
        const float b = f->bias ? f->bias[o] : 0.0f;
        for (int oh = oh0; oh < oh1; oh++) {
            float *row = f->y + ((size_t)o * OH + oh) * OW;
            for (int ow = 0; ow < OW; ow++) row[ow] = b;
        }
    }
    for (int c0 = 0; c0 < C; c0 += FEW_CHUNK) {
        const int c1 = c0 + FEW_CHUNK < C ? c0 + FEW_CHUNK : C;
        for (int oh = oh0; oh < oh1; oh++)
            for (int n0 = 0; n0 < OW; n0 += NB) {
                DT_MASK mk[FEW_MAX_KW][DT_NV], mo[DT_NV]; /* tap masks (valid input and output), output masks */
                for (int v = 0; v < DT_NV; v++) {
                    const int col = n0 + v * DT_VL, hi_o = OW - col < DT_VL ? (OW - col > 0 ? OW - col : 0) : DT_VL;
                    mo[v] = DT_FIRST(hi_o);
                    for (int kj = 0; kj < kw; kj++) {
                        const int off = kj * f->dw - f->pl;
                        int lo = -(col + off), hi = W - (col + off);
                        lo = lo < 0 ? 0 : (lo > DT_VL ? DT_VL : lo);
                        hi = hi > hi_o ? hi_o : (hi < 0 ? 0 : hi);
                        mk[kj][v] = DT_RANGE(lo, hi > lo ? hi : lo);
                    }
                }
                for (int o = 0; o < cout; o += 2) {
                    const int two = o + 1 < cout;
                    float *r0 = f->y + ((size_t)o * OH + oh) * OW + n0;
                    float *r1 = f->y + ((size_t)(o + two) * OH + oh) * OW + n0;
                    VF a0[DT_NV], a1[DT_NV];
#pragma GCC unroll 4
                    for (int v = 0; v < DT_NV; v++) {
                        a0[v] = DT_LOADM(mo[v], r0 + v * DT_VL);
                        a1[v] = DT_LOADM(mo[v], r1 + v * DT_VL);
                    }
                    for (int ci = c0; ci < c1; ci++) {
                        const float *w0 = f->w + ((size_t)o * C + ci) * kh * kw;
                        const float *w1 = f->w + ((size_t)(o + two) * C + ci) * kh * kw;
                        for (int ki = 0; ki < kh; ki++) {
                            const int ih = oh * f->sh - f->pt + ki * f->dh;
                            if (ih < 0 || ih >= H) continue;
                            const float *xr = f->x + ((size_t)ci * H + ih) * W;
                            for (int kj = 0; kj < kw; kj++) {
                                const VF wa = DT_SET1(w0[ki * kw + kj]), wb = DT_SET1(w1[ki * kw + kj]);
                                /* the address of lane 0 may lie before the row: those lanes are masked */
                                const float *xs = (const float *)((uintptr_t)xr +
                                                                  (uintptr_t)(ptrdiff_t)(n0 + kj * f->dw - f->pl) *
                                                                      sizeof(float));
#pragma GCC unroll 4
                                for (int v = 0; v < DT_NV; v++) {
                                    const VF xv = DT_LOADM(mk[kj][v], xs + v * DT_VL);
                                    a0[v] = DT_MADD(a0[v], mk[kj][v], DT_MUL(wa, xv));
                                    a1[v] = DT_MADD(a1[v], mk[kj][v], DT_MUL(wb, xv));
                                }
                            }
                        }
                    }
#pragma GCC unroll 4
                    for (int v = 0; v < DT_NV; v++) {
                        DT_STOREM(r0 + v * DT_VL, mo[v], a0[v]);
                        if (two) DT_STOREM(r1 + v * DT_VL, mo[v], a1[v]);
                    }
                }
            }
    }
    for (int o = 0; o < cout; o++)
        for (int oh = oh0; oh < oh1; oh++) dp_cpu_act(f->act, f->y + ((size_t)o * OH + oh) * OW, (size_t)OW);
}

#undef DT
#undef DT_TARGET
#undef DT_VL
#undef VF
#undef DT_MASK
#undef DT_SET1
#undef DT_LOADU
#undef DT_STOREU
#undef DT_MUL
#undef DT_ADD
#undef DT_ACT
#undef DT_ACT_N
#undef DT_FIRST
#undef DT_RANGE
#undef DT_LOADM
#undef DT_STOREM
#undef DT_MADD
#undef DT_NV
#undef DT_GAP_T
#undef DT_GAP_ZERO
#undef DT_GAP_ADD
#undef DT_GAP_OUT
