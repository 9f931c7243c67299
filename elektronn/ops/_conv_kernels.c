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
#include <stdlib.h>
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
#ifndef PARALLEL_MIN_FMA
#define PARALLEL_MIN_FMA 4e6
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));

/* corr_fwd's register blocks: the wide layout loads each input vector for more FMAs (fewer
 * passes over the input per position block); it is used unless it pads more output channels
 * than the narrow one. */
static int wide(int oc) { return (oc + OBW - 1) / OBW * OBW == (oc + OB - 1) / OB * OB; }

/* Positions per register block of corr_fwd for oc output channels: the Python side uses it
 * to choose how to lay out small planes. */
int corr_block(int oc) { return VW * (wide(oc) ? NVW : NV); }

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
 * t * (t > 0)).  Rows of at least one vector are stored in whole vectors, the last one moved
 * back to end at cnt (it rewrites a few values with the same results); shorter ones by scalar
 * code. */
typedef int vi __attribute__((vector_size(VW * 4)));

static inline vf bias_relu(vf v, vf b, int relu)
{
    v += b;
    return relu ? (vf)((vi)v & ~(vi)(v < (vf){0})) : v;  /* NaN < 0 is false: NaN stays */
}

static inline void store_row(float *y, const float *t, long cnt, float b, int relu)
{
    if (cnt < VW) {
        for (long i = 0; i < cnt; i++) {
            const float v = t[i] + b;
            y[i] = relu && v < 0.0f ? 0.0f : v;
        }
        return;
    }
    const vf bv = (vf){0} + b;
    for (long i = 0; i < cnt; i += VW) {
        const long j = i + VW <= cnt ? i : cnt - VW;
        storeu(y + j, bias_relu(loadu(t + j), bv, relu));
    }
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
 * to stride is left alone.  One pass over buf, the (example, channel) planes in parallel.
 * Returns 0, or -1 when out of memory. */
static int embed(const float *g, float *buf, int bs, int c, int merged, long lead, long stride,
                 int nd, const long *dims, const long *odims)
{
    const geom gm = make_geom(nd, dims, odims);
    const long w = dims[nd - 1], ow = odims[nd - 1], rows = gm.P / w;
    const int big = (double)bs * c * gm.P > PARALLEL_MIN_FMA / 16;
    long *orow = malloc(sizeof(long) * (size_t)rows);  /* where row r starts in g, or -1 */
    if (!orow)
        return -1;
    for (long r = 0; r < rows; r++) {
        long ex, left;
        orow[r] = out_index(&gm, r * w, &ex, &left);
    }
#pragma omp parallel for schedule(static) if (big)
    for (long plane = 0; plane < (long)bs * c; plane++) {
        const long b = plane / c, o = plane % c;
        const float *gp = g + plane * gm.OP;
        float *bp = merged ? buf + o * stride + b * gm.P : buf + plane * stride;
        if (!merged || b == 0)
            memset(bp, 0, sizeof(float) * (size_t)lead);
        bp += lead;
        for (long r = 0; r < rows; r++, bp += w) {
            const long cnt = orow[r] < 0 ? 0 : ow;
            if (cnt >= VW)
                for (long i = 0; i < cnt; i += VW) {
                    const long k = i + VW <= cnt ? i : cnt - VW;
                    storeu(bp + k, loadu(gp + orow[r] + k));
                }
            else
                for (long i = 0; i < cnt; i++) bp[i] = gp[orow[r] + i];
            for (long i = cnt; i < w; i++) bp[i] = 0.0f;
        }
    }
    free(orow);
    return 0;
}

/* One register block of corr_fwd: tmp[j][i] = sum_{c,t} wq[c*nk+tap[t]][j] * xb[c][i + toffs[t]]
 * over the nt taps listed, for no output channels j (of the ws packed per weight row) and
 * VW * nv positions i (ws, no and nv constants once inlined). */
static inline __attribute__((always_inline)) void
corr_block_fma(const int ws, const int no, const int nv, const float *xb, const float *wq,
               long xs, int ic, int nk, int nt, const int *tap, const long *toffs, float *tmp)
{
    vf acc[BLOCK_VECTORS];
    for (int i = 0; i < no * nv; i++) acc[i] = (vf){0};
    for (int c = 0; c < ic; c++, wq += (long)nk * ws) {
        const float *xc = xb + (long)c * xs;
        for (int t = 0; t < nt; t++) {
            const float *wt = wq + tap[t] * ws;
            vf xv[BLOCK_VECTORS];
            for (int v = 0; v < nv; v++) xv[v] = loadu(xc + toffs[t] + v * VW);
            for (int j = 0; j < no; j++) {
                const vf wv = splat(wt + j);
                for (int v = 0; v < nv; v++) acc[j * nv + v] += wv * xv[v];
            }
        }
    }
    for (int i = 0; i < no * nv; i++) storeu(tmp + i * VW, acc[i]);
}

/* corr_block_fma for a block of no <= ws output channels: the last block of a layer whose
 * channels are not a multiple of ws computes only its real ones (no FMAs on padding). */
static inline __attribute__((always_inline)) void
corr_block_some(const int ws, const int nv, int no, const float *xb, const float *wq, long xs,
                int ic, int nk, int nt, const int *tap, const long *toffs, float *tmp)
{
#define CORR_BLOCK_CASE(NO)                                                                   \
    case NO:                                                                                  \
        if (ws > NO) {                                                                        \
            corr_block_fma(ws, NO, nv, xb, wq, xs, ic, nk, nt, tap, toffs, tmp);              \
            return;                                                                           \
        }                                                                                     \
        break;
    switch (no) {
    CORR_BLOCK_CASE(1) CORR_BLOCK_CASE(2) CORR_BLOCK_CASE(3) CORR_BLOCK_CASE(4)
    CORR_BLOCK_CASE(5) CORR_BLOCK_CASE(6) CORR_BLOCK_CASE(7)
    }
#undef CORR_BLOCK_CASE
    corr_block_fma(ws, ws, nv, xb, wq, xs, ic, nk, nt, tap, toffs, tmp);
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
static void corr_fwd(const float *x, const float *w, const float *bias, int relu, float *y, float *wpack,
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
        float tmp[BLOCK_VECTORS * VW];  /* [no][pb] */
        const int no = oc - ob * ob_size < ob_size ? oc - ob * ob_size : ob_size;
        if (wd)
            corr_block_some(OBW, NVW, no, xb, wq, xs, ic, nk, nt, tap, toffs, tmp);
        else
            corr_block_some(OB, NV, no, xb, wq, xs, ic, nk, nt, tap, toffs, tmp);
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

/* The weight gradient gw[o][c][k] = sum_b sum_p g[b][o][p] * x[b][c][p + offs[k]] has the
 * output channels in the vector lanes: a chunk of g is first transposed to position-major
 * order, t[p][o] (gather_t), so that one aligned load gives VW output channels at position p,
 * and each (channel, tap) pair q = c * nk + k contributes the broadcast of one input value
 * x[b][c][p + offs[k]].  A register block of ov vectors of output channels by GRADW_NQ(ov)
 * pairs q keeps 24 or fewer accumulators over the chunk: per position ov + nq loads feed
 * ov * nq FMAs, and no lane ever needs a horizontal sum. */
#if VW == 16  /* AVX-512: 32 vector registers */
#define GRADW_OV 4                                  /* largest output vectors per block */
#define GRADW_NQ(ov) ((ov) <= 2 ? 12 : (ov) == 3 ? 8 : 6)
#else         /* 16 vector registers: ov * nq sums, ov loads and a broadcast */
#define GRADW_OV 3
#define GRADW_NQ(ov) ((ov) == 1 ? 12 : (ov) == 2 ? 6 : 4)
#endif
#define GRADW_NQ_MAX 12
#ifndef GRADW_CHUNK_BYTES
#define GRADW_CHUNK_BYTES 131072                    /* of transposed g per chunk: in L2 */
#endif
#define GRADW_SEGMENTS 8                            /* most partial sums, see corr_gradw */

/* t[p - p0][o] = g[o][i] for the grid positions p in [p0, p1) of one example, where p is
 * output i (see geom) and o < oc; 0 elsewhere.  g: (oc, OP); t: (p1 - p0, ocp).  (Scalar
 * copies: an in-register 16 x 16 transpose measured slower, most rows being short.) */
static void gather_t(const geom *gm, const float *g, int oc, int ocp, long p0, long p1,
                     float *t)
{
    const long w = gm->dims[gm->nd - 1], ow = gm->odims[gm->nd - 1];
    memset(t, 0, sizeof(float) * (size_t)((p1 - p0) * ocp));
    for (long p = p0; p < p1;) {
        long ex, left;
        const long idx = out_index(gm, p, &ex, &left);
        const long seg = left < p1 - p ? left : p1 - p;
        /* the row's outputs end ow - (w - left) positions after p */
        const long cnt = idx < 0 ? 0 : seg < ow - w + left ? seg : ow - w + left;
        float *d = t + (p - p0) * ocp;
        for (long j = 0; j < cnt; j++)
            for (int o = 0; o < oc; o++) d[j * ocp + o] = g[(long)o * gm->OP + idx + j];
        p += seg;
    }
}

/* One register block of corr_gradw over the positions of a chunk: acc[i][j] += sum_p
 * xq[i][p] * t[p * ocp + j] for p < len, i < nq, j < VW * ov (ov, nq constants once
 * inlined), where acc rows are ocp floats apart.  Rows i >= nreal are computed but neither
 * loaded nor stored (their xq repeat a real row): a short last block runs the same code. */
static inline __attribute__((always_inline)) void
gradw_block(const int ov, const int nq, int nreal, const float *const *xq, const float *t,
            long ocp, long len, float *acc)
{
    vf a[GRADW_NQ_MAX * GRADW_OV];
    const float *x[GRADW_NQ_MAX];
    for (int i = 0; i < nq; i++) {
        x[i] = xq[i];
        for (int v = 0; v < ov; v++)
            a[i * ov + v] = i < nreal ? *(const vf *)(acc + i * ocp + v * VW) : (vf){0};
    }
    for (long p = 0; p < len; p++) {
        vf gv[GRADW_OV];
        for (int v = 0; v < ov; v++) gv[v] = *(const vf *)(t + p * ocp + v * VW);
        for (int i = 0; i < nq; i++) {
            const vf xv = splat(x[i] + p);
            for (int v = 0; v < ov; v++) a[i * ov + v] += gv[v] * xv;
        }
    }
    for (int i = 0; i < nreal; i++)
        for (int v = 0; v < ov; v++) *(vf *)(acc + i * ocp + v * VW) = a[i * ov + v];
}

/* oc rounded up to a multiple of the vector width: the ocp of corr_gradw. */
static int corr_gradw_pad(int oc) { return (oc + VW - 1) / VW * VW; }

/* Floats of scratch corr_gradw needs for K = ic * nk (channel, tap) pairs (see acc there). */
static long corr_gradw_scratch(long K, int ocp)
{
    return GRADW_SEGMENTS * (K * ocp + GRADW_CHUNK_BYTES / 4);
}

/* gw[o][c][k] = sum_b sum_{p<n} g[b][o][p] * x[b][c][p + offs[k]], where grid position p
 * (of the grid dims) is output i of g (see geom).
 * x: (bs, ic, P); g: (bs, oc, prod(odims)); gw: (oc, ic, nk); ocp: oc rounded up to a
 * multiple of VW.  acc: scratch of GRADW_SEGMENTS * (ic * nk * ocp + GRADW_CHUNK_BYTES / 4)
 * floats, 64-byte aligned: the partial sums, then one buffer of transposed g per segment.
 * The (example, chunk) pairs are split into at most GRADW_SEGMENTS contiguous segments, in
 * parallel; each sums its positions in order into its own (c * nk + k, o) array, and the
 * segments are added in order at the end: the result does not depend on the number of
 * threads. */
static void corr_gradw(const float *x, const float *g, float *gw, float *acc, int bs, int ic, int oc,
                int ocp, int nd, const long *dims, const long *odims, int nk, const long *offs)
{
    const geom gm = make_geom(nd, dims, odims);
    const long K = (long)ic * nk, n = gm.P - offs[nk - 1];
    /* output-channel blocks: ocp / VW vectors split as evenly as possible into blocks of at
     * most GRADW_OV; each has its own number of q blocks (jobs) */
    const int ocv = ocp / VW, nob = (ocv + GRADW_OV - 1) / GRADW_OV;
    int ov[nob], v0[nob];
    long job0[nob + 1];
    job0[0] = 0;
    for (int ob = 0; ob < nob; ob++) {
        ov[ob] = ocv / nob + (ob < ocv % nob);
        v0[ob] = ob ? v0[ob - 1] + ov[ob - 1] : 0;
        job0[ob + 1] = job0[ob] + (K + GRADW_NQ(ov[ob]) - 1) / GRADW_NQ(ov[ob]);
    }
    const long chunk = GRADW_CHUNK_BYTES / (4 * ocp);
    const long per_ex = (n + chunk - 1) / chunk, items = bs * per_ex;
    const int nseg = items < GRADW_SEGMENTS ? (int)items : GRADW_SEGMENTS;
    memset(acc, 0, sizeof(float) * (size_t)(nseg * K * ocp));
    float *tbuf = acc + (long)GRADW_SEGMENTS * K * ocp;  /* aligned: 8 * K * ocp % 16 == 0 */
    const int big = (double)bs * n * K * ocp > PARALLEL_MIN_FMA;
#pragma omp parallel for schedule(static) if (big)
    for (int s = 0; s < nseg; s++) {
        float *t = tbuf + s * (GRADW_CHUNK_BYTES / 4);
        for (long it = items * s / nseg; it < items * (s + 1) / nseg; it++) {
            const long b = it / per_ex, p0 = it % per_ex * chunk;
            const long len = n - p0 < chunk ? n - p0 : chunk;
            gather_t(&gm, g + b * oc * gm.OP, oc, ocp, p0, p0 + len, t);
            const float *xb = x + b * ic * gm.P + p0;
            for (long job = 0; job < job0[nob]; job++) {
                int ob = 0;
                while (job >= job0[ob + 1]) ob++;
                const int nq = GRADW_NQ(ov[ob]);
                const long q0 = (job - job0[ob]) * nq;
                const int nreal = K - q0 < nq ? (int)(K - q0) : nq;
                const float *xq[GRADW_NQ_MAX];
                for (int i = 0; i < nq; i++) {
                    const long q = q0 + (i < nreal ? i : 0);
                    xq[i] = xb + (q / nk) * gm.P + offs[q % nk];
                }
                const float *tb = t + v0[ob] * VW;
                float *a = acc + (s * K + q0) * ocp + v0[ob] * VW;
                /* a last block of at most half the pairs runs a half-size block */
                const int half = 2 * nreal <= nq;
                switch (ov[ob] * 2 - half) {
                case 1: gradw_block(1, GRADW_NQ(1) / 2, nreal, xq, tb, ocp, len, a); break;
                case 2: gradw_block(1, GRADW_NQ(1), nreal, xq, tb, ocp, len, a); break;
                case 3: gradw_block(2, GRADW_NQ(2) / 2, nreal, xq, tb, ocp, len, a); break;
                case 4: gradw_block(2, GRADW_NQ(2), nreal, xq, tb, ocp, len, a); break;
                case 5: gradw_block(3, GRADW_NQ(3) / 2, nreal, xq, tb, ocp, len, a); break;
#if GRADW_OV == 4
                case 6: gradw_block(3, GRADW_NQ(3), nreal, xq, tb, ocp, len, a); break;
                case 7: gradw_block(4, GRADW_NQ(4) / 2, nreal, xq, tb, ocp, len, a); break;
                default: gradw_block(4, GRADW_NQ(4), nreal, xq, tb, ocp, len, a); break;
#else
                default: gradw_block(3, GRADW_NQ(3), nreal, xq, tb, ocp, len, a); break;
#endif
                }
            }
        }
    }
    for (int o = 0; o < oc; o++)
        for (long q = 0; q < K; q++) {
            float sum = 0.0f;
            for (int s = 0; s < nseg; s++) sum += acc[(s * K + q) * ocp + o];
            gw[o * K + q] = sum;
        }
}

/* The weight gradient for few output channels, with the positions in the vector lanes:
 * gw[o][c * nk + k] = sum_b sum_p ge[b][o][p] * x[b][c][p + offs[k]], where ge is g laid out
 * on the input grid (zero where a grid position is not an output; see embed), so both operands
 * are contiguous rows.  A register block of no output channels by nq (channel, tap) pairs
 * keeps no * nq vector sums over all positions, reduced across lanes at the end; positions
 * past the last full vector take scalar code.  Unlike corr_gradw, no lane is padding however
 * few channels there are: it is used for oc < VW.  Each block sums its positions in the same
 * order whatever the number of threads.
 * x: (bs, ic, P); ge: (bs, oc, P); gw: (oc, ic, nk); n = P - offs[nk - 1]. */
#define GRADW_POS_O 4
#define GRADW_POS_Q 4

static inline __attribute__((always_inline)) void
gradw_pos_block(const int no, const int nq, const float *x, const float *ge, float *gw,
                int bs, int ic, int oc, long P, long n, int nk, const long *offs, int o0, long q0)
{
    const long K = (long)ic * nk, nvec = n / VW * VW, tail = n - nvec;
    vf acc[GRADW_POS_O * GRADW_POS_Q];
    for (int i = 0; i < no * nq; i++) acc[i] = (vf){0};
    for (int b = 0; b < bs; b++) {
        const float *gb[GRADW_POS_O], *xq[GRADW_POS_Q];
        for (int j = 0; j < no; j++) gb[j] = ge + ((long)b * oc + o0 + j) * P;
        for (int i = 0; i < nq; i++)
            xq[i] = x + ((long)b * ic + (q0 + i) / nk) * P + offs[(q0 + i) % nk];
        for (long p = 0; p < nvec; p += VW) {
            vf gv[GRADW_POS_O];
            for (int j = 0; j < no; j++) gv[j] = loadu(gb[j] + p);
            for (int i = 0; i < nq; i++) {
                const vf xv = loadu(xq[i] + p);
                for (int j = 0; j < no; j++) acc[j * nq + i] += gv[j] * xv;
            }
        }
        if (tail) {  /* the last positions, zero-padded to a vector (x may end right after) */
            vf gv[GRADW_POS_O];
            for (int j = 0; j < no; j++) {
                gv[j] = (vf){0};
                memcpy(&gv[j], gb[j] + nvec, sizeof(float) * (size_t)tail);
            }
            for (int i = 0; i < nq; i++) {
                vf xv = (vf){0};
                memcpy(&xv, xq[i] + nvec, sizeof(float) * (size_t)tail);
                for (int j = 0; j < no; j++) acc[j * nq + i] += gv[j] * xv;
            }
        }
    }
    for (int j = 0; j < no; j++)
        for (int i = 0; i < nq; i++) {
            float s = 0.0f;
            for (int l = 0; l < VW; l++) s += acc[j * nq + i][l];
            gw[(long)(o0 + j) * K + q0 + i] = s;
        }
}

static void corr_gradw_pos(const float *x, const float *ge, float *gw, int bs, int ic, int oc, long P,
                    int nk, const long *offs)
{
    const long K = (long)ic * nk, n = P - offs[nk - 1];
    const int nob = (oc + GRADW_POS_O - 1) / GRADW_POS_O;
    const long nqb = (K + GRADW_POS_Q - 1) / GRADW_POS_Q;
    const int big = (double)bs * n * K * oc > PARALLEL_MIN_FMA;
#pragma omp parallel for schedule(static) if (big)
    for (long job = 0; job < nob * nqb; job++) {
        const int o0 = (int)(job / nqb) * GRADW_POS_O;
        const long q0 = job % nqb * GRADW_POS_Q;
        const int no = oc - o0 < GRADW_POS_O ? oc - o0 : GRADW_POS_O;
        const int nq = K - q0 < GRADW_POS_Q ? (int)(K - q0) : GRADW_POS_Q;
#define GRADW_POS_CASE(NO, NQ)                                                                \
    case (NO) * 8 + (NQ):                                                                     \
        gradw_pos_block(NO, NQ, x, ge, gw, bs, ic, oc, P, n, nk, offs, o0, q0);               \
        break;
        switch (no * 8 + nq) {
        GRADW_POS_CASE(1, 1) GRADW_POS_CASE(1, 2) GRADW_POS_CASE(1, 3) GRADW_POS_CASE(1, 4)
        GRADW_POS_CASE(2, 1) GRADW_POS_CASE(2, 2) GRADW_POS_CASE(2, 3) GRADW_POS_CASE(2, 4)
        GRADW_POS_CASE(3, 1) GRADW_POS_CASE(3, 2) GRADW_POS_CASE(3, 3) GRADW_POS_CASE(3, 4)
        GRADW_POS_CASE(4, 1) GRADW_POS_CASE(4, 2) GRADW_POS_CASE(4, 3) GRADW_POS_CASE(4, 4)
        }
#undef GRADW_POS_CASE
    }
}

/* The entry point: one call per convolution, its geometry read from a plan.
 *
 * A plan is an array of C longs that elektronn/ops/_kernels.py builds once per combination of
 * shapes: PLAN_HEAD values (below), then the nk tap offsets on the flattened input grid, the
 * nd input dims and the nd output dims.  Everything else (plane sizes, computed positions,
 * scratch) follows from it here, so a call passes the plan and four arrays:
 *   CORR          a = x (bs, ic, *dims), b = w (oc, ic, nk), bias (oc floats or NULL) ->
 *                 out = y (bs, oc, *odims); merged: the examples side by side in one plane
 *   GRAD_INPUT    a = g (bs, ic, *odims), b = w (ic, oc, nk) -> out = gx (bs, oc, *dims),
 *                 the full correlation of g with the filters, computed on g embedded in the
 *                 input grid behind a zero lead-in (see embed); merged: the embedded examples
 *                 side by side
 *   GRAD_WEIGHTS, GRAD_WEIGHTS_POS
 *                 a = x (bs, ic, *dims), b = g (bs, oc, *odims) -> out = gw (oc, ic, nk), with
 *                 the output channels (corr_gradw) or the positions (corr_gradw_pos) in the
 *                 vector lanes
 * With flip set, the taps of the filters w of CORR, and of the result gw, are in reverse order:
 * the kernels flipped in every spatial axis (as a true convolution uses them).
 * The scratch memory is allocated here; 0 is returned, or -1 when it could not be (out is then
 * left unset). */
enum {
    PLAN_KIND, PLAN_BS, PLAN_IC, PLAN_OC, PLAN_NK, PLAN_ND, PLAN_MERGED, PLAN_RELU, PLAN_FLIP,
    PLAN_HEAD
};
enum { CORR, GRAD_INPUT, GRAD_WEIGHTS, GRAD_WEIGHTS_POS };

int conv_plan_head(void) { return PLAN_HEAD; }

int conv(const long *plan, const float *a, const float *b, const float *bias, float *out)
{
    const long kind = plan[PLAN_KIND], bs = plan[PLAN_BS], ic = plan[PLAN_IC];
    const long oc = plan[PLAN_OC], merged = plan[PLAN_MERGED];
    const int nk = (int)plan[PLAN_NK], nd = (int)plan[PLAN_ND], relu = (int)plan[PLAN_RELU];
    const int flip = (int)plan[PLAN_FLIP];
    const long *offs = plan + PLAN_HEAD, *dims = offs + nk, *odims = dims + nd;
    const long last = offs[nk - 1];
    long P = 1;
    for (int d = 0; d < nd; d++) P *= dims[d];
    float *s1 = NULL, *s2 = NULL, *wpack = NULL;
    int ok = 1;
    switch (kind) {
    case CORR:
        ok = (wpack = malloc(sizeof(float) * (size_t)((oc + OBW) * ic * nk))) != NULL;
        if (ok && flip) {
            ok = (s2 = malloc(sizeof(float) * (size_t)(oc * ic * nk))) != NULL;
            for (long r = 0; ok && r < oc * ic; r++)
                for (int k = 0; k < nk; k++) s2[r * nk + k] = b[r * nk + nk - 1 - k];
        }
        if (ok && merged) {  /* (bs, ic, P) -> (ic, bs * P) */
            ok = (s1 = malloc(sizeof(float) * (size_t)(ic * bs * P))) != NULL;
            for (long e = 0; ok && e < bs * ic; e++)
                memcpy(s1 + (e % ic * bs + e / ic) * P, a + e * P, sizeof(float) * (size_t)P);
        }
        if (ok)
            corr_fwd(merged ? s1 : a, flip ? s2 : b, bias, relu, out, wpack, merged ? 1 : (int)bs, (int)ic,
                     (int)oc, merged ? bs * P : P, nk, offs, (merged ? bs * P : P) - last, nd,
                     dims, odims, 0, P);
        break;
    case GRAD_INPUT: {
        /* g behind last zeros: every input position p reads g at p - k for the taps k */
        const long stride = last + (merged ? bs * P : P), one[1] = {P};
        s1 = malloc(sizeof(float) * (size_t)((merged ? 1 : bs) * ic * stride));
        s2 = malloc(sizeof(float) * (size_t)(ic * oc * nk));  /* w as (oc, ic, nk) */
        wpack = malloc(sizeof(float) * (size_t)((oc + OBW) * ic * nk));
        ok = s1 && s2 && wpack &&
             embed(a, s1, (int)bs, (int)ic, (int)merged, last, stride, nd, dims, odims) == 0;
        if (ok) {
            for (long o = 0; o < ic; o++)
                for (long c = 0; c < oc; c++)
                    memcpy(s2 + (c * ic + o) * nk, b + (o * oc + c) * nk,
                           sizeof(float) * (size_t)nk);
            /* every position is an output: a one-axis grid; g is zero past its first output
             * slices */
            corr_fwd(s1, s2, NULL, 0, out, wpack, merged ? 1 : (int)bs, (int)ic, (int)oc, stride,
                     nk, offs, (merged ? bs : 1) * P, 1, one, one, last,
                     odims[0] * (P / dims[0]));
        }
        break;
    }
    case GRAD_WEIGHTS: {
        const int ocp = corr_gradw_pad((int)oc);
        const size_t bytes = sizeof(float) * (size_t)corr_gradw_scratch(ic * nk, ocp);
        if ((ok = posix_memalign((void **)&s1, 64, bytes) == 0))
            corr_gradw(a, b, out, s1, (int)bs, (int)ic, (int)oc, ocp, nd, dims, odims, nk, offs);
        break;
    }
    case GRAD_WEIGHTS_POS:
        ok = (s1 = malloc(sizeof(float) * (size_t)(bs * oc * P))) != NULL &&
             embed(b, s1, (int)bs, (int)oc, 0, 0, P, nd, dims, odims) == 0;
        if (ok) {
            corr_gradw_pos(a, s1, out, (int)bs, (int)ic, (int)oc, P, nk, offs);
        }
        break;
    default:
        ok = 0;
    }
    if (ok && flip && (kind == GRAD_WEIGHTS || kind == GRAD_WEIGHTS_POS))
        for (long r = 0; r < oc * ic; r++)
            for (int k = 0; k < nk / 2; k++) {
                const float t = out[r * nk + k];
                out[r * nk + k] = out[r * nk + nk - 1 - k];
                out[r * nk + nk - 1 - k] = t;
            }
    free(s1);
    free(s2);
    free(wpack);
    return ok ? 0 : -1;
}
