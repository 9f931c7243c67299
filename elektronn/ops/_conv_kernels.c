/* Direct convolution kernels for elektronn (valid correlation on a "full grid").
 *
 * The input of one example is a (channels, P) array: every spatial axis is flattened, so the
 * input sample under kernel tap k for output position p is x[c][p + offs[k]].  Output
 * positions p in [0, n) are computed on the same flattened grid, including positions that
 * wrap around a row end; the caller crops those away.  This turns a convolution of any
 * dimensionality into register-blocked vector FMAs on contiguous memory, with no im2col copy.
 *
 * All arrays are C-contiguous float32.  Vectors are GCC vector extensions, so the same code
 * compiles to AVX-512, AVX2 or SSE depending on -march.
 */
#include <stddef.h>
#include <string.h>

#ifndef VW
#if defined(__AVX512F__)
#define VW 16
#define OB 4      /* output channels per register block */
#define NV 6      /* vectors of positions per register block */
#else
#define VW 8
#define OB 4
#define NV 3
#endif
#endif
#define PB (VW * NV)
#define PARALLEL_MIN_FMA 4e6

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));

/* Positions per register block of corr_fwd, and per vector (corr_gradw): the Python side
 * uses them to choose how to lay out small planes. */
int corr_block(void) { return PB; }
int corr_vector(void) { return VW; }

static inline vf loadu(const float *p) { return *(const vfu *)p; }
static inline void storeu(float *p, vf v) { *(vfu *)p = v; }

/* y[o][p] = sum_{c,k} w[o][c][k] * x[c][p + offs[k]] for p < n, for each of bs examples.
 * x: (bs, ic, P); w: (oc, ic, nk); y: (bs, oc, P) (positions >= n are left untouched).
 * wpack: scratch of ceil(oc/OB)*OB*ic*nk floats. */
void corr_fwd(const float *x, const float *w, float *y, float *wpack, int bs, int ic, int oc,
              long P, int nk, const long *offs, long n)
{
    const int nob = (oc + OB - 1) / OB;
    const long K = (long)ic * nk;
    /* pack weights as [ob][c*nk+k][OB] so that the broadcasts of one tap are adjacent */
    for (int ob = 0; ob < nob; ob++)
        for (long q = 0; q < K; q++)
            for (int j = 0; j < OB; j++) {
                int o = ob * OB + j;
                wpack[((long)ob * K + q) * OB + j] = o < oc ? w[(long)o * K + q] : 0.0f;
            }
    /* position blocks of PB; the last one is shifted back to end at n (it recomputes a few
     * positions of its neighbour, with identical results), so no position needs scalar code
     * unless the whole row is shorter than one block */
    const long nfull = n >= PB ? (n + PB - 1) / PB : 0;
    const long nblocks = nfull * nob;
    /* one parallel loop over (example, position block, output-channel block); small problems
     * stay on one thread, where waking the team would cost more than the work */
    const int big = (double)bs * nblocks * K * OB * PB > PARALLEL_MIN_FMA;
#pragma omp parallel for schedule(static) if (big)
    for (long job = 0; job < (long)bs * nblocks; job++) {
        const long b = job / nblocks, blk = job % nblocks;
        const float *xb = x + b * ic * P;
        float *yb = y + b * oc * P;
        const long p = (blk / nob + 1) * PB <= n ? (blk / nob) * PB : n - PB;
        const int ob = blk % nob;
        vf acc[OB][NV];
        for (int j = 0; j < OB; j++)
            for (int v = 0; v < NV; v++) acc[j][v] = (vf){0};
        const float *wq = wpack + (long)ob * K * OB;
        for (int c = 0; c < ic; c++) {
            const float *xc = xb + (long)c * P + p;
            for (int k = 0; k < nk; k++, wq += OB) {
                vf xv[NV];
                for (int v = 0; v < NV; v++) xv[v] = loadu(xc + offs[k] + v * VW);
                for (int j = 0; j < OB; j++) {
                    vf wv = (vf){0} + wq[j];
                    for (int v = 0; v < NV; v++) acc[j][v] += wv * xv[v];
                }
            }
        }
        for (int j = 0; j < OB; j++) {
            int o = ob * OB + j;
            if (o < oc)
                for (int v = 0; v < NV; v++) storeu(yb + (long)o * P + p + v * VW, acc[j][v]);
        }
    }
    if (nfull)
        return;
    /* rows shorter than one block: scalar code */
    for (int b = 0; b < bs; b++) {
        const float *xb = x + (long)b * ic * P;
        float *yb = y + (long)b * oc * P;
        for (long p = 0; p < n; p++)
            for (int o = 0; o < oc; o++) {
                float s = 0.0f;
                for (int c = 0; c < ic; c++)
                    for (int k = 0; k < nk; k++)
                        s += w[((long)o * ic + c) * nk + k] * xb[(long)c * P + p + offs[k]];
                yb[(long)o * P + p] = s;
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
 * g: (bs, oc, P) with zeros wherever p is not a valid output position; gw: (oc, ic, nk).
 * part: scratch of oc*ic*nk*VW floats (vector partial sums). */
void corr_gradw(const float *x, const float *g, float *gw, float *part, int bs, int ic, int oc,
                long P, int nk, const long *offs, long n)
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
        const float *gb = g + (long)b * oc * P;
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
                for (int j = 0; j < GO; j++) go[j] = gb + (long)(ob * GO + (j < no ? j : 0)) * P;
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
    for (long i = 0; i < (long)oc * K; i++) {
        float s = 0.0f;
        for (int l = 0; l < VW; l++) s += part[i * VW + l];
        gw[i] = s;
    }
    /* scalar tail over the positions past the last full vector */
    for (int b = 0; b < bs; b++)
        for (long p = nvec * VW; p < n; p++)
            for (int o = 0; o < oc; o++) {
                float gp = g[((long)b * oc + o) * P + p];
                if (gp == 0.0f) continue;
                for (long q = 0; q < K; q++)
                    gw[(long)o * K + q] += gp * x[((long)b * ic + q / nk) * P + p + offs[q % nk]];
            }
}
