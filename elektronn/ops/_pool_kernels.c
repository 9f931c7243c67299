/* Non-overlapping max / maxabs pooling for elektronn, max-fragment pooling, and their gradient.
 *
 * The pooled array x is C-contiguous float32, seen as (L, S0, S1, S2): L runs over all leading
 * axes (batch, channels, ...) and S0, S1, S2 are the pooled axes (with fewer than three pooled
 * axes the caller pads in front with size-1 axes of factor 1).  `stride` holds the element
 * strides of L, S0 and S1 (S2 is contiguous), `ws` the pool factors (p0, p1, p2) and `shape`
 * the output shape (L, O0, O1, O2): output (l, o0, o1, o2) is the max of the window
 * x[l][o0*p0 + i0][o1*p1 + i1][o2*p2 + i2], i_d < p_d.  Max-fragment pooling (phases = 1)
 * pools every phase crop, the view starting at x + ph0*stride[1] + ph1*stride[2] + ph2 for a
 * phase (ph0, ph1, ph2) < ws, into one (L, O0, O1, O2) block of the output per phase, in
 * row-major phase order.
 *
 * The work is split into output rows (l, o0, o1), computed in vector blocks of B outputs.  For
 * p2 = 1 or 2 a block reduces its window rows as p2 contiguous vectors and then, for p2 = 2,
 * adjacent lanes pairwise; other factors, and rows shorter than a block, use scalar code.
 *
 * Results equal those of elektronn.ops.reference.pool / mfp and their gradients: `max` is
 * NaN-propagating like numpy.maximum; `maxabs` is the element of largest magnitude with its
 * sign, ties going to the positive value; the gradient goes to every element equal to its
 * window's output (all of them on ties), and overlapping MFP phases add up in phase order.
 */
#include <math.h>

#ifndef PARALLEL_MIN_ELEMS
#define PARALLEL_MIN_ELEMS 1e6  /* input elements below which pooling stays on one thread */
#endif
#define B 8                     /* outputs per vector block */

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));

#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE v8 load8(const float *p) { return *(const v8u *)p; }
ALWAYS_INLINE void store8(float *p, v8 v) { *(v8u *)p = v; }
ALWAYS_INLINE v8 select8(v8i m, v8 a, v8 b) { return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }

/* Running max and min that stay NaN once a NaN is seen, as numpy.maximum / numpy.minimum. */
ALWAYS_INLINE float pmax(float acc, float v) { return (v > acc) | (v != v) ? v : acc; }
ALWAYS_INLINE float pmin(float acc, float v) { return (v < acc) | (v != v) ? v : acc; }

/* Lane-wise a > b ? a : b and a < b ? a : b (b where either is NaN), and whether any lane is
 * NaN: single instructions on x86, portable vector code elsewhere. */
#if defined(__AVX__)
#include <immintrin.h>
ALWAYS_INLINE v8 max8(v8 a, v8 b) { return (v8)_mm256_max_ps((__m256)a, (__m256)b); }
ALWAYS_INLINE v8 min8(v8 a, v8 b) { return (v8)_mm256_min_ps((__m256)a, (__m256)b); }
ALWAYS_INLINE int any_nan8(v8 v)
{
    return _mm256_movemask_ps(_mm256_cmp_ps((__m256)v, (__m256)v, _CMP_UNORD_Q)) != 0;
}
#else
ALWAYS_INLINE v8 max8(v8 a, v8 b) { return select8(a > b, a, b); }
ALWAYS_INLINE v8 min8(v8 a, v8 b) { return select8(a < b, a, b); }
ALWAYS_INLINE int any_nan8(v8 v)
{
    const v8i nan = v != v;
    int any = 0;
    for (int i = 0; i < B; i++) any |= nan[i];
    return any;
}
#endif

/* One output of any pool factor: xr points to its window's first element. */
static float pool_window(const float *xr, long s0, long s1, long p0, long p1, long p2,
                         int maxabs)
{
    float hi = -INFINITY, lo = INFINITY;
    for (long i0 = 0; i0 < p0; i0++)
        for (long i1 = 0; i1 < p1; i1++)
            for (long i2 = 0; i2 < p2; i2++) {
                hi = pmax(hi, xr[i0 * s0 + i1 * s1 + i2]);
                lo = pmin(lo, xr[i0 * s0 + i1 * s1 + i2]);
            }
    return !maxabs || hi >= -lo ? hi : lo;
}

/* B adjacent outputs with last-axis factor P = 1 or 2 (a compile-time constant): the window
 * rows are reduced as P vectors in input layout, then for P = 2 adjacent lanes pairwise.
 * max8 / min8 drop NaNs, so the inputs are also summed: a NaN among them (or inf - inf)
 * makes the sum NaN, and then the block is redone by pool_window. */
ALWAYS_INLINE void pool_block(const float *xr, float *yr, long s0, long s1, long p0, long p1,
                              const int maxabs, const int P)
{
    v8 hi[2], lo[2], sum = {0};
    for (int k = 0; k < P; k++) {
        hi[k] = (v8){0} - INFINITY;
        lo[k] = (v8){0} + INFINITY;
    }
    for (long i0 = 0; i0 < p0; i0++)
        for (long i1 = 0; i1 < p1; i1++)
            for (int k = 0; k < P; k++) {
                const v8 v = load8(xr + i0 * s0 + i1 * s1 + k * B);
                hi[k] = max8(v, hi[k]);
                if (maxabs) lo[k] = min8(v, lo[k]);
                sum += v;
            }
    if (any_nan8(sum)) {
        for (int j = 0; j < B; j++) yr[j] = pool_window(xr + j * P, s0, s1, p0, p1, P, maxabs);
        return;
    }
    v8 h = hi[0], l = lo[0];
    if (P == 2) {
        h = max8(SHUFFLE(hi[0], hi[1], 0, 2, 4, 6, 8, 10, 12, 14),
                 SHUFFLE(hi[0], hi[1], 1, 3, 5, 7, 9, 11, 13, 15));
        if (maxabs)
            l = min8(SHUFFLE(lo[0], lo[1], 0, 2, 4, 6, 8, 10, 12, 14),
                     SHUFFLE(lo[0], lo[1], 1, 3, 5, 7, 9, 11, 13, 15));
    }
    store8(yr, maxabs ? select8(h >= -l, h, l) : h);
}

/* One output row of n outputs.  Rows are often short (a 24-pixel row pools to 12 outputs), so
 * instead of a scalar tail the last block is shifted back to end at n: it recomputes a few
 * outputs of its neighbour, with identical results. */
ALWAYS_INLINE void pool_row(const float *xr, float *yr, long n, long s0, long s1, long p0,
                            long p1, long p2, int maxabs)
{
    if (n < B || p2 > 2) {
        for (long j = 0; j < n; j++)
            yr[j] = pool_window(xr + j * p2, s0, s1, p0, p1, p2, maxabs);
        return;
    }
    for (long c = 0; c < n; c += B) {
        const long j = c + B <= n ? c : n - B;
        if (p2 == 1 && maxabs) pool_block(xr + j, yr + j, s0, s1, p0, p1, 1, 1);
        else if (p2 == 1) pool_block(xr + j, yr + j, s0, s1, p0, p1, 0, 1);
        else if (maxabs) pool_block(xr + 2 * j, yr + j, s0, s1, p0, p1, 1, 2);
        else pool_block(xr + 2 * j, yr + j, s0, s1, p0, p1, 0, 2);
    }
}

/* Gradient of one output of any pool factor: gr[e] += (xr[e] == y) * g over its window (as
 * numpy's mask * g, so a NaN or infinite g spreads like in the reference). */
static void grad_window(const float *xr, float *gr, float y, float g, long s0, long s1, long p0,
                        long p1, long p2)
{
    for (long i0 = 0; i0 < p0; i0++)
        for (long i1 = 0; i1 < p1; i1++)
            for (long i2 = 0; i2 < p2; i2++) {
                const long e = i0 * s0 + i1 * s1 + i2;
                gr[e] += (float)(xr[e] == y) * g;
            }
}

/* Gradient of B adjacent outputs with last-axis factor P = 1 or 2: y and g are first spread
 * to input layout (each lane repeated P times). */
ALWAYS_INLINE void grad_block(const float *xr, float *gr, v8 y, v8 g, long s0, long s1,
                              long p0, long p1, const int P)
{
    const v8i one = (v8i)((v8){0} + 1.0f);
    v8 ye[2] = {y}, ge[2] = {g};
    if (P == 2) {
        ye[0] = SHUFFLE(y, y, 0, 0, 1, 1, 2, 2, 3, 3);
        ye[1] = SHUFFLE(y, y, 4, 4, 5, 5, 6, 6, 7, 7);
        ge[0] = SHUFFLE(g, g, 0, 0, 1, 1, 2, 2, 3, 3);
        ge[1] = SHUFFLE(g, g, 4, 4, 5, 5, 6, 6, 7, 7);
    }
    for (long i0 = 0; i0 < p0; i0++)
        for (long i1 = 0; i1 < p1; i1++)
            for (int k = 0; k < P; k++) {
                const long e = i0 * s0 + i1 * s1 + k * B;
                const v8 mask = (v8)((load8(xr + e) == ye[k]) & one);
                store8(gr + e, load8(gr + e) + mask * ge[k]);
            }
}

/* Gradient of one output row, in vector blocks like pool_row; in the shifted-back last block
 * the lanes of outputs already done get g = 0, so they add nothing. */
ALWAYS_INLINE void grad_row(const float *xr, float *gr, const float *y, const float *g, long n,
                            long s0, long s1, long p0, long p1, long p2)
{
    if (n < B || p2 > 2) {
        for (long j = 0; j < n; j++)
            grad_window(xr + j * p2, gr + j * p2, y[j], g[j], s0, s1, p0, p1, p2);
        return;
    }
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (long c = 0; c < n; c += B) {
        const long j = c + B <= n ? c : n - B;
        const v8 gj = select8(lane >= (int)(c - j), load8(g + j), (v8){0});
        if (p2 == 1) grad_block(xr + j, gr + j, load8(y + j), gj, s0, s1, p0, p1, 1);
        else grad_block(xr + 2 * j, gr + 2 * j, load8(y + j), gj, s0, s1, p0, p1, 2);
    }
}

/* The geometry of a call: a plan, an array of C longs that elektronn/ops/_kernels.py builds once
 * per shape, holding shape (4 values), stride (3), ws (3) as described at the top of the file,
 * then maxabs (0 for max, 1 for maxabs) and phases (1 for max-fragment pooling). */
enum { PLAN_SHAPE = 0, PLAN_STRIDE = 4, PLAN_WS = 7, PLAN_MAXABS = 10, PLAN_PHASES = 11 };

/* Pool x into y with the geometry of plan.  The phases of one output row read nearly
 * the same input rows, so they are pooled one after another. */
void pool_fwd(const long *plan, const float *x, float *y)
{
    const long *shape = plan + PLAN_SHAPE, *stride = plan + PLAN_STRIDE, *ws = plan + PLAN_WS;
    const int maxabs = (int)plan[PLAN_MAXABS], phases = (int)plan[PLAN_PHASES];
    const long L = shape[0], O0 = shape[1], O1 = shape[2], O2 = shape[3];
    const long s0 = stride[1], s1 = stride[2], p0 = ws[0], p1 = ws[1], p2 = ws[2];
    const long block = L * O0 * O1 * O2, nph = phases ? p0 * p1 * p2 : 1;
    const int big = (double)block * nph * p0 * p1 * p2 > PARALLEL_MIN_ELEMS;
#pragma omp parallel for collapse(3) schedule(static) if (big)
    for (long l = 0; l < L; l++)
        for (long o0 = 0; o0 < O0; o0++)
            for (long o1 = 0; o1 < O1; o1++) {
                const float *xr = x + l * stride[0] + o0 * p0 * s0 + o1 * p1 * s1;
                float *yr = y + ((l * O0 + o0) * O1 + o1) * O2;
                for (long f = 0; f < nph; f++) {
                    const long ph = f / (p1 * p2) * s0 + f / p2 % p1 * s1 + f % p2;
                    pool_row(xr + ph, yr + f * block, O2, s0, s1, p0, p1, p2, maxabs);
                }
            }
}

/* Gradient of pool_fwd with the same plan, accumulated: gx[e] += g[w] for every element e
 * of x equal to the output y[w] of its window w.  gx has the strides of x; y and g are laid
 * out like the output of pool_fwd.  With phases = 1 the windows of different phases overlap,
 * so each element sums several terms; they are added in phase order, as the reference does
 * (the same rounding), by walking the phases of one leading index l at a time.  Different l
 * touch disjoint parts of gx, so they run in parallel. */
void pool_bwd(const long *plan, const float *x, const float *y, const float *g, float *gx)
{
    const long *shape = plan + PLAN_SHAPE, *stride = plan + PLAN_STRIDE, *ws = plan + PLAN_WS;
    const int phases = (int)plan[PLAN_PHASES];
    const long L = shape[0], O0 = shape[1], O1 = shape[2], O2 = shape[3];
    const long s0 = stride[1], s1 = stride[2], p0 = ws[0], p1 = ws[1], p2 = ws[2];
    const long block = L * O0 * O1 * O2, nph = phases ? p0 * p1 * p2 : 1;
    const int big = (double)block * nph * p0 * p1 * p2 > PARALLEL_MIN_ELEMS;
#pragma omp parallel for schedule(static) if (big)
    for (long l = 0; l < L; l++)
        for (long f = 0; f < nph; f++) {
            const long ph = f / (p1 * p2) * s0 + f / p2 % p1 * s1 + f % p2;
            for (long o0 = 0; o0 < O0; o0++)
                for (long o1 = 0; o1 < O1; o1++) {
                    const long e = l * stride[0] + o0 * p0 * s0 + o1 * p1 * s1 + ph;
                    const long w = f * block + ((l * O0 + o0) * O1 + o1) * O2;
                    grad_row(x + e, gx + e, y + w, g + w, O2, s0, s1, p0, p1, p2);
                }
        }
}
