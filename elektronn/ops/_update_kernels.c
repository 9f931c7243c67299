/* The optimisers' update rules for elektronn: one call updates every parameter in place.
 *
 * Each function takes k parameters at once through an array of pointers `ptr`: the k
 * gradients, then the k parameters, then k pointers per state buffer (velocities; Adam's m and
 * v; RPROP's last gradients and step sizes), all C-contiguous float32 arrays of `size[j]`
 * elements.  It first decides whether the step is finite: the loss and every gradient entry
 * are finite (what elektronn.net.updates.all_finite decides with its float64 sum: a float64
 * sum of float32 numbers is finite exactly when every term is).  Only then it updates the
 * parameters and buffers in place, and it returns 1; otherwise it changes nothing and
 * returns 0.
 *
 * The arithmetic is float32, operation by operation in the order of the symbolic rules of
 * elektronn/net/updates.py (see elektronn.ops.numpy_kernels for the same rules in numpy):
 * floating-point contraction (fused multiply-add) is off, so results equal numpy's bit for bit.
 * Every element is read before it is written, at the same index, so a gradient that is the
 * parameter itself still updates correctly.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* 1 when every entry of a[0..n) is finite (exponent bits not all set). */
static int finite_f32(const float *a, long n)
{
    uint32_t bad = 0;
    for (long i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, a + i, 4);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

static int step_finite(double loss, int k, void *const *grads, const long *size)
{
    if (!isfinite(loss))
        return 0;
    for (int j = 0; j < k; j++)
        if (!finite_f32((const float *)grads[j], size[j]))
            return 0;
    return 1;
}

/* SGD with momentum: v <- g + mu*v; p <- (p - lr*v) - (lr*wd)*p.
 * ptr: g[k], p[k], v[k]. */
int update_sgd(double loss, int k, void *const *ptr, const long *size, float lr, float mu,
               float wd)
{
    if (!step_finite(loss, k, ptr, size))
        return 0;
    const float lrwd = lr * wd;
    for (int j = 0; j < k; j++) {
        const float *g = ptr[j];
        float *p = ptr[k + j], *v = ptr[2 * k + j];
        for (long i = 0; i < size[j]; i++) {
            float nv = g[i] + mu * v[i];
            float pi = p[i];
            p[i] = (pi - lr * nv) - lrwd * pi;
            v[i] = nv;
        }
    }
    return 1;
}

/* Adam: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g*g; p <- p - (step*m) / (sqrt(v) + eps).
 * step = lr*sqrt(1 - b2**t)/(1 - b1**t) and the constants 1-b1, 1-b2 come from the caller
 * (computed in float32 as the symbolic rule does).  ptr: g[k], p[k], m[k], v[k]. */
int update_adam(double loss, int k, void *const *ptr, const long *size, float step, float b1,
                float omb1, float b2, float omb2, float eps)
{
    if (!step_finite(loss, k, ptr, size))
        return 0;
    for (int j = 0; j < k; j++) {
        const float *g = ptr[j];
        float *p = ptr[k + j], *m = ptr[2 * k + j], *v = ptr[3 * k + j];
        for (long i = 0; i < size[j]; i++) {
            float gi = g[i];
            float nm = b1 * m[i] + omb1 * gi;
            float nv = b2 * v[i] + omb2 * (gi * gi);
            m[i] = nm;
            v[i] = nv;
            p[i] = p[i] - (step * nm) / (sqrtf(nv) + eps);
        }
    }
    return 1;
}

/* ELEKTRONN 1.0's RPROP: s = last*g;
 * eta <- clip(eta * ((1 - pen*[s < lo_s]) + gain*[s > hi_s]), low, high) (from the old eta);
 * p <- (p - eta_old*g / (|g| + tiny)) - wd*p; last <- g.
 * ptr: g[k], p[k], last[k], eta[k]. */
int update_rprop(double loss, int k, void *const *ptr, const long *size, float pen, float gain,
                 float wd, float low, float high, float lo_s, float hi_s, float tiny)
{
    if (!step_finite(loss, k, ptr, size))
        return 0;
    for (int j = 0; j < k; j++) {
        const float *g = ptr[j];
        float *p = ptr[k + j], *last = ptr[2 * k + j], *eta = ptr[3 * k + j];
        for (long i = 0; i < size[j]; i++) {
            float gi = g[i], e = eta[i], pi = p[i];
            float s = last[i] * gi;
            float f = (1.0f - pen * (float)(s < lo_s)) + gain * (float)(s > hi_s);
            float ne = e * f;
            ne = ne < low ? low : ne;
            ne = ne > high ? high : ne;
            p[i] = (pi - (e * gi) / (fabsf(gi) + tiny)) - wd * pi;
            eta[i] = ne;
            last[i] = gi;
        }
    }
    return 1;
}
