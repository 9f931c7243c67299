/* Direct convolution kernels for elektronn (valid correlation on a "full grid").
 *
 * The input of one example is a (channels, P) array: every spatial axis is flattened, so the
 * input sample under kernel tap k for output position p is x[c][p + offs[k]].  Output
 * positions p in [0, n) are computed on the same flattened grid, including positions that
 * wrap around a row end; those are dropped when the results are stored (see scatter).  This
 * turns a convolution of any dimensionality into register-blocked vector FMAs on contiguous
 * memory, with no im2col copy.
 *
 * All arrays are C-contiguous float32.  Vectors are GCC vector extensions, so the same code
 * compiles to AVX-512, AVX2 or SSE depending on -march.
 */
#include <stddef.h>
#include <string.h>

#ifndef VW
#if defined(__AVX512F__)
#define VW 16
#define OB 4      /* output channels per register block ("narrow" layout) */
#define NV 6      /* vectors of positions per register block */
#define OBW 8     /* the same for the "wide" layout */
#define NVW 3
#else
#define VW 8
#define OB 4
#define NV 3
#define OBW 4
#define NVW 3
#endif
#endif
#define BLOCK_VECTORS 24  /* largest OB * NV, OBW * NVW */
#define PARALLEL_MIN_FMA 4e6

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));

/* corr_fwd's register blocks: the wide layout loads each input vector for more FMAs (fewer
 * passes over the input per position block); it is used unless it pads more output channels
 * than the narrow one. */
static int wide(int oc) { return (oc + OBW - 1) / OBW * OBW == (oc + OB - 1) / OB * OB; }

/* Positions per register block of corr_fwd for oc output channels, and per vector
 * (corr_gradw): the Python side uses them to choose how to lay out small planes. */
int corr_block(int oc) { return VW * (wide(oc) ? NVW : NV); }
int corr_vector(void) { return VW; }

static inline vf loadu(const float *p) { return *(const vfu *)p; }
static inline void storeu(float *p, vf v) { *(vfu *)p = v; }
/* all lanes = *p; compiles to one broadcast load (x - 0 == x for every x, unlike 0 + x) */
static inline vf splat(const float *p) { return *p - (vf){0}; }

/* Where the results of corr_fwd go.  Computed position p of example b is grid position
 * gp = b * P + p (P = prod(dims); with the examples laid side by side in one plane, b = 0 and
 * p runs over all of them).  It is an output if each coordinate of gp % P in the dims array
 * is below odims, and then lands in y: (examples, oc, OP) at its index in the odims array. */
typedef struct {
    int nd;
    const long *dims, *odims;
    long P, OP;
} geom;

static geom make_geom(int nd, const long *dims, const long *odims)
{
    geom g = {nd, dims, odims, 1, 1};
    for (int d = 0; d < nd; d++) {
        g.P *= dims[d];
        g.OP *= odims[d];
    }
    return g;
}

/* Index of grid position gp within the output channel of its example *ex, or -1 when gp is
 * not an output; *left: the number of positions from gp to the end of its row. */
static long out_index(const geom *g, long gp, long *ex, long *left)
{
    const int last = g->nd - 1;
    long r = gp % g->P, c = r % g->dims[last];
    *ex = gp / g->P;
    *left = g->dims[last] - c;
    if (c >= g->odims[last])
        return -1;
    long idx = c, mul = g->odims[last];
    r /= g->dims[last];
    for (int d = last - 1; d >= 0; d--) {
        c = r % g->dims[d];
        r /= g->dims[d];
        if (c >= g->odims[d])
            return -1;
        idx += c * mul;
        mul *= g->odims[d];
    }
    return idx;
}

/* y[i] = t[i] + b for i < cnt, then max(y[i], 0) when relu (NaN stays NaN, as in numpy's
 * t * (t > 0)); plain loops, which the compiler vectorises. */
static inline void store_row(float *y, const float *t, long cnt, float b, int relu)
{
    if (relu)
        for (long i = 0; i < cnt; i++) {
            const float v = t[i] + b;
            y[i] = v < 0.0f ? 0.0f : v;
        }
    else
        for (long i = 0; i < cnt; i++) y[i] = t[i] + b;
}

/* Store the results of grid positions [g0, g0 + len) for output channels o0 .. o0 + no - 1
 * (row j of tmp, ldt floats apart, holds channel o0 + j) into y, one row segment at a time,
 * adding bias[o0 + j] (bias may be NULL: none) and applying relu if asked. */
static void scatter(const geom *g, const float *tmp, int ldt, int no, float *y, int oc, int o0,
                    long g0, long len, const float *bias, int relu)
{
    const long ow = g->odims[g->nd - 1], w = g->dims[g->nd - 1];
    for (long gp = g0; gp < g0 + len;) {
        long ex, left;
        const long idx = out_index(g, gp, &ex, &left);
        const long seg = left < g0 + len - gp ? left : g0 + len - gp;
        if (idx >= 0) {
            /* the row's outputs end ow - (w - left) positions after gp */
            const long cnt = seg < ow - w + left ? seg : ow - w + left;
            float *yo = y + (ex * oc + o0) * g->OP + idx;
            const float *t = tmp + (gp - g0);
            for (int j = 0; j < no; j++)
                store_row(yo + j * g->OP, t + (long)j * ldt, cnt, bias ? bias[o0 + j] : 0.0f,
                          relu);
        }
        gp += seg;
    }
}

/* Lay g: (bs, c, prod(odims)) out on the grid dims, zero wherever a coordinate is outside
 * odims, behind lead zeros: buf holds bs * c rows of lead + P floats, stride floats apart, or
 * with the examples side by side when merged, c rows of lead + bs * P.  The padding of rows
 * to stride is left alone.  One pass over buf, the (example, channel) planes in parallel. */
void embed(const float *g, float *buf, int bs, int c, int merged, long lead, long stride,
           int nd, const long *dims, const long *odims)
{
    const geom gm = make_geom(nd, dims, odims);
    const long w = dims[nd - 1], ow = odims[nd - 1], rows = gm.P / w;
    const int big = (double)bs * c * gm.P > PARALLEL_MIN_FMA / 16;
#pragma omp parallel for schedule(static) if (big)
    for (long plane = 0; plane < (long)bs * c; plane++) {
        const long b = plane / c, o = plane % c;
        const float *gp = g + plane * gm.OP;
        float *bp = merged ? buf + o * stride + b * gm.P : buf + plane * stride;
        if (!merged || b == 0)
            memset(bp, 0, sizeof(float) * (size_t)lead);
        bp += lead;
        for (long r = 0; r < rows; r++, bp += w) {
            long ex, left;
            const long idx = out_index(&gm, r * w, &ex, &left);
            const long cnt = idx < 0 ? 0 : ow;
            memcpy(bp, gp + (idx < 0 ? 0 : idx), sizeof(float) * (size_t)cnt);
            memset(bp + cnt, 0, sizeof(float) * (size_t)(w - cnt));
        }
    }
}

/* One register block of corr_fwd: tmp[j][i] = sum_{c,t} wq[c*nk+tap[t]][j] * xb[c][i + toffs[t]]
 * over the nt taps listed, for ob_size output channels j and VW * nv positions i (both
 * constants once inlined). */
static inline __attribute__((always_inline)) void
corr_block_fma(const int ob_size, const int nv, const float *xb, const float *wq, long xs,
               int ic, int nk, int nt, const int *tap, const long *toffs, float *tmp)
{
    vf acc[BLOCK_VECTORS];
    for (int i = 0; i < ob_size * nv; i++) acc[i] = (vf){0};
    for (int c = 0; c < ic; c++, wq += (long)nk * ob_size) {
        const float *xc = xb + (long)c * xs;
        for (int t = 0; t < nt; t++) {
            const float *wt = wq + tap[t] * ob_size;
            vf xv[BLOCK_VECTORS];
            for (int v = 0; v < nv; v++) xv[v] = loadu(xc + toffs[t] + v * VW);
            for (int j = 0; j < ob_size; j++) {
                const vf wv = splat(wt + j);
                for (int v = 0; v < nv; v++) acc[j * nv + v] += wv * xv[v];
            }
        }
    }
    for (int i = 0; i < ob_size * nv; i++) storeu(tmp + i * VW, acc[i]);
}

/* Whether x[i] for some i in [s, s + len) may be nonzero, when only the first band positions
 * of each plane of P may be, counting from lead. */
static int may_be_nonzero(long s, long len, long lead, long P, long band)
{
    s -= lead;
    if (s + len <= 0)
        return 0;
    if (s < 0) {
        len += s;
        s = 0;
    }
    const long r = s % P;
    return r < band || P - r < len;
}

/* y[o][p] = sum_{c,k} w[o][c][k] * x[c][p + offs[k]] for p < n, for each of bs examples,
 * stored at the output positions of the grid (dims, odims) as described at geom.
 * x: (bs, ic, xs); w: (oc, ic, nk); y: (examples, oc, prod(odims)).
 * Where x is zero except for the first band positions of each plane, counted from lead (the
 * embedded gradient of conv_grad_input: band covers its output slices), a position block skips
 * the taps that read only zeros (band = P: nothing is skipped).
 * Each stored value gets bias[o] added (bias: oc floats, or NULL for none) and is then clamped
 * at 0 when relu is set.
 * wpack: scratch of (oc + OBW) * ic * nk floats. */
void corr_fwd(const float *x, const float *w, const float *bias, int relu, float *y, float *wpack,
              int bs, int ic, int oc, long xs, int nk, const long *offs, long n, int nd,
              const long *dims, const long *odims, long lead, long band)
{
    const geom gm = make_geom(nd, dims, odims);
    const int wd = wide(oc), ob_size = wd ? OBW : OB, pb = corr_block(oc);
    const int nob = (oc + ob_size - 1) / ob_size;
    const long K = (long)ic * nk;
    /* pack weights as [ob][c*nk+k][ob_size] so that the broadcasts of one tap are adjacent */
    for (int ob = 0; ob < nob; ob++)
        for (long q = 0; q < K; q++)
            for (int j = 0; j < ob_size; j++) {
                int o = ob * ob_size + j;
                wpack[((long)ob * K + q) * ob_size + j] = o < oc ? w[(long)o * K + q] : 0.0f;
            }
    /* position blocks of pb; the last one is shifted back to end at n (it recomputes a few
     * positions of its neighbour, with identical results), so no position needs scalar code
     * unless the whole row is shorter than one block */
    const long nfull = n >= pb ? (n + pb - 1) / pb : 0;
    const long nblocks = nfull * nob;
    /* one parallel loop over (example, position block, output-channel block); small problems
     * stay on one thread, where waking the team would cost more than the work */
    const int big = (double)bs * nblocks * K * ob_size * pb > PARALLEL_MIN_FMA;
    int all[nk];  /* the list of every tap */
    for (int k = 0; k < nk; k++) all[k] = k;
#pragma omp parallel for schedule(static) if (big)
    for (long job = 0; job < (long)bs * nblocks; job++) {
        const long b = job / nblocks, blk = job % nblocks;
        const long p = (blk / nob + 1) * pb <= n ? (blk / nob) * pb : n - pb;
        const int ob = blk % nob;
        const float *xb = x + b * ic * xs + p, *wq = wpack + (long)ob * K * ob_size;
        int some[nk], nt = nk;
        long some_offs[nk];
        const int *tap = all;
        const long *toffs = offs;
        if (band < gm.P) {
            for (int k = nt = 0; k < nk; k++)
                if (may_be_nonzero(p + offs[k], pb, lead, gm.P, band)) {
                    some[nt] = k;
                    some_offs[nt++] = offs[k];
                }
            tap = some;
            toffs = some_offs;
        }
        float tmp[BLOCK_VECTORS * VW];  /* [ob_size][pb] */
        if (wd)
            corr_block_fma(OBW, NVW, xb, wq, xs, ic, nk, nt, tap, toffs, tmp);
        else
            corr_block_fma(OB, NV, xb, wq, xs, ic, nk, nt, tap, toffs, tmp);
        const int no = oc - ob * ob_size < ob_size ? oc - ob * ob_size : ob_size;
        scatter(&gm, tmp, pb, no, y, oc, ob * ob_size, b * gm.P + p, pb, bias, relu);
    }
    if (nfull)
        return;
    /* rows shorter than one block: scalar code */
    for (int b = 0; b < bs; b++) {
        const float *xb = x + (long)b * ic * xs;
        for (long p = 0; p < n; p++) {
            long ex, left;
            const long idx = out_index(&gm, b * gm.P + p, &ex, &left);
            if (idx < 0)
                continue;
            for (int o = 0; o < oc; o++) {
                float s = 0.0f;
                for (int c = 0; c < ic; c++)
                    for (int k = 0; k < nk; k++)
                        s += w[((long)o * ic + c) * nk + k] * xb[(long)c * xs + p + offs[k]];
                store_row(y + (ex * oc + o) * gm.OP + idx, &s, 1, bias ? bias[o] : 0.0f, relu);
            }
        }
    }
}

#ifndef GO
#define GO 4
#define GQ 5
#endif
#ifndef CHUNK
#define CHUNK 2048
#endif

/* gw[o][c][k] = sum_b sum_{p<n} g[b][o][p] * x[b][c][p + offs[k]].
 * x: (bs, ic, P); g: (bs, oc, gs) with zeros wherever p is not a valid output position (its
 * loads are aligned vectors when the rows are, so gs should be a multiple of VW); gw: (oc, ic,
 * nk).
 * part: scratch of (oc*ic*nk + oc) * VW floats (vector partial sums and the tail of g). */
void corr_gradw(const float *x, const float *g, float *gw, float *part, int bs, int ic, int oc,
                long P, long gs, int nk, const long *offs, long n)
{
    const long K = (long)ic * nk;
    const int nqb = (int)((K + GQ - 1) / GQ);
    const int nob = (oc + GO - 1) / GO;
    const long nblocks = (long)nqb * nob;
    memset(part, 0, sizeof(float) * (size_t)oc * K * VW);
    const long nvec = n / VW;
    const int big = (double)bs * n * K * oc > PARALLEL_MIN_FMA;
#pragma omp parallel if (big)
    for (int b = 0; b < bs; b++) {
        const float *xb = x + (long)b * ic * P;
        const float *gb = g + (long)b * oc * gs;
        for (long c0 = 0; c0 < nvec; c0 += CHUNK / VW) {
            const long c1 = c0 + CHUNK / VW < nvec ? c0 + CHUNK / VW : nvec;
#pragma omp for schedule(static) nowait  /* same blocks per thread in every chunk: no barrier needed */
            for (long blk = 0; blk < nblocks; blk++) {
                const int qb = blk / nob, ob = blk % nob;
                const int no = oc - ob * GO < GO ? oc - ob * GO : GO;
                const int nq = K - (long)qb * GQ < GQ ? (int)(K - (long)qb * GQ) : GQ;
                const float *xq[GQ];
                for (int i = 0; i < GQ; i++) {
                    long q = (long)qb * GQ + (i < nq ? i : 0);
                    xq[i] = xb + (q / nk) * P + offs[q % nk];
                }
                const float *go[GO];
                for (int j = 0; j < GO; j++) go[j] = gb + (long)(ob * GO + (j < no ? j : 0)) * gs;
                vf acc[GO][GQ];
                for (int j = 0; j < GO; j++)
                    for (int i = 0; i < GQ; i++) acc[j][i] = (vf){0};
                for (long v = c0; v < c1; v++) {
                    vf xv[GQ], gv[GO];
                    for (int i = 0; i < GQ; i++) xv[i] = loadu(xq[i] + v * VW);
                    for (int j = 0; j < GO; j++) gv[j] = loadu(go[j] + v * VW);
                    for (int j = 0; j < GO; j++)
                        for (int i = 0; i < GQ; i++) acc[j][i] += gv[j] * xv[i];
                }
                for (int j = 0; j < no; j++)
                    for (int i = 0; i < nq; i++) {
                        float *pp = part + ((long)(ob * GO + j) * K + (long)qb * GQ + i) * VW;
                        storeu(pp, loadu(pp) + acc[j][i]);
                    }
            }
        }
    }
    /* the positions past the last full vector, as one vector padded with zeros (the padded
     * lanes are not read: they may lie past the end of x) */
    const long t0 = nvec * VW;
    float *gt = part + (long)oc * K * VW;
    if (t0 < n)
        for (int b = 0; b < bs; b++) {
            for (int o = 0; o < oc; o++)
                for (int l = 0; l < VW; l++)
                    gt[o * VW + l] = t0 + l < n ? g[((long)b * oc + o) * gs + t0 + l] : 0.0f;
            for (long q = 0; q < K; q++) {
                const float *xq = x + ((long)b * ic + q / nk) * P + t0 + offs[q % nk];
                float xt[VW];
                for (int l = 0; l < VW; l++) xt[l] = t0 + l < n ? xq[l] : 0.0f;
                const vf xv = loadu(xt);
                for (int o = 0; o < oc; o++) {
                    float *pp = part + ((long)o * K + q) * VW;
                    storeu(pp, loadu(pp) + loadu(gt + o * VW) * xv);
                }
            }
        }
    for (long i = 0; i < (long)oc * K; i++) {
        float s = 0.0f;
        for (int l = 0; l < VW; l++) s += part[i * VW + l];
        gw[i] = s;
    }
}
