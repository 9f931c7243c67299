"""The numpy implementations elektronn runs: the C kernels' fallback and fragment reassembly.

:mod:`elektronn.ops._kernels` uses the convolution, pooling and MFP functions here when the C
kernels are unavailable (no C compiler, or ``ELEKTRONN_KERNELS=numpy``, see
:mod:`elektronn.backend`); the MFP Ops run their fragment bookkeeping and reassembly here, where
numpy is fast already.  The tests compare all of them with the independent implementations in
:mod:`elektronn.ops.reference`.  Layout convention of the whole package:
``(batch, channels, *spatial)``; pooling acts on the trailing axes.
"""

import itertools

import numpy as np

_ONE = np.float32(1)

__all__ = [
    "corr",
    "corr_weights",
    "conv_grad_input",
    "pool",
    "pool_grad",
    "mfp",
    "mfp_grad",
    "pool_phases",
    "fragments_to_dense",
    "dense_to_fragments",
    "dense_permutation",
    "step_finite",
    "update_sgd",
    "update_adam",
    "update_rprop",
]


def corr(x, w):
    """Valid cross-correlation: ``y[n,o,p] = sum_{c,k} w[o,c,k] * x[n,c,p+k]``."""
    ksh = w.shape[2:]
    osh = tuple(s - k + 1 for s, k in zip(x.shape[2:], ksh))
    y = np.zeros((x.shape[0], w.shape[0]) + osh, dtype=np.float32)
    for k in itertools.product(*(range(s) for s in ksh)):
        window = x[(slice(None), slice(None)) + tuple(slice(i, i + o) for i, o in zip(k, osh))]
        y += np.tensordot(w[(slice(None), slice(None)) + k], window, axes=([1], [1])).swapaxes(
            0, 1
        )
    return y


def corr_weights(x, g, kshape):
    """Correlation of ``x`` with ``g`` summed over the batch.

    ``gw[o,c,k] = sum_{n,p} g[n,o,p] * x[n,c,p+k]``: the kernel gradient of :func:`corr`.
    """
    osh = g.shape[2:]
    gw = np.empty((g.shape[1], x.shape[1]) + tuple(kshape), dtype=np.float32)
    for k in itertools.product(*(range(s) for s in kshape)):
        window = x[(slice(None), slice(None)) + tuple(slice(i, i + o) for i, o in zip(k, osh))]
        gw[(slice(None), slice(None)) + k] = np.tensordot(
            g, window, axes=([0] + list(range(2, g.ndim)), [0] + list(range(2, g.ndim)))
        )
    return gw


def _pad_full(g, kshape):
    pad = [(0, 0), (0, 0)] + [(k - 1, k - 1) for k in kshape]
    return np.pad(g, pad)


def conv_grad_input(g, w):
    """Gradient of ``sum(conv(x, w) * g)`` with respect to ``x`` (``conv``: :func:`corr` with
    the kernel flipped in every spatial axis, a true convolution)."""
    return corr(_pad_full(g, w.shape[2:]), np.swapaxes(w, 0, 1))


def _blocked(x, ws):
    """View ``x`` with each pooled trailing axis split into ``(n // p, p)``."""
    nd = len(ws)
    lead = x.shape[: x.ndim - nd]
    shape = list(lead)
    for s, p in zip(x.shape[x.ndim - nd :], ws):
        shape += [s // p, p]
    return x.reshape(shape)


def pool(x, ws, mode="max"):
    """Non-overlapping pooling of the trailing ``len(ws)`` axes.

    ``mode='max'`` takes the maximum; ``'maxabs'`` the element of largest absolute value with
    its sign, ties going to the positive value.  Axes must be divisible by their factor.
    Computed as an elementwise max (and min) over the strided slices ``[i::p]`` of each axis.
    """
    hi = lo = x
    for i, p in enumerate(ws):
        if p == 1:
            continue
        axis = x.ndim - len(ws) + i
        step = [(Ellipsis,) + (slice(j, None, p),) + (slice(None),) * (x.ndim - 1 - axis)
                for j in range(p)]
        hi = np.maximum.reduce([hi[s] for s in step])
        if mode != "max":
            lo = np.minimum.reduce([lo[s] for s in step])
    if mode == "max":
        return np.ascontiguousarray(hi)
    return np.where(hi >= -lo, hi, lo)


def pool_grad(x, y, g, ws):
    """Gradient of :func:`pool`: ``g`` goes to every input element equal to its output."""
    nd = len(ws)
    lead = x.ndim - nd
    window = (slice(None),) * lead + sum(((slice(None), None) for _ in ws), ())
    mask = _blocked(x, ws) == y[window]
    return np.multiply(mask, g[window], dtype=np.float32).reshape(x.shape)


def pool_phases(ws):
    """All pooling phases in the row-major order MFP stacks its fragments in."""
    return list(itertools.product(*(range(p) for p in ws)))


def _phase_crop(x, phase, ws):
    nd = len(ws)
    lead = (slice(None),) * (x.ndim - nd)
    return lead + tuple(
        slice(ph, s - p + ph + 1) for ph, p, s in zip(phase, ws, x.shape[x.ndim - nd :])
    )


def mfp(x, ws, mode="max"):
    """Max-fragment pooling: pool every phase-shifted crop, stack the fragments on axis 0.

    Fragment of phase index ``f`` (row-major over the phases) for example ``b`` lands at batch
    index ``f * batch + b``.
    """
    return np.concatenate([pool(x[_phase_crop(x, ph, ws)], ws, mode) for ph in pool_phases(ws)])


def mfp_grad(x, y, g, ws):
    """Gradient of :func:`mfp` with respect to its input."""
    gx = np.zeros_like(x)
    bs = x.shape[0]
    for f, ph in enumerate(pool_phases(ws)):
        crop = _phase_crop(x, ph, ws)
        sl = slice(f * bs, (f + 1) * bs)
        gx[crop] += pool_grad(x[crop], y[sl], g[sl], ws)
    return gx


def dense_permutation(offsets, strides):
    """Index of the fragment holding each dense phase, the phases in row-major order.

    Raises ``ValueError`` unless ``offsets`` lists every phase of the ``strides`` grid once.
    """
    strides = tuple(int(s) for s in strides)
    index = {tuple(int(v) for v in o): i for i, o in enumerate(offsets)}
    phases = pool_phases(strides)
    if len(index) != len(offsets) or sorted(index) != phases:
        raise ValueError(
            f"offsets must list each phase of strides {strides} exactly once "
            f"({len(phases)} offsets), got {[tuple(o) for o in offsets]}"
        )
    return np.array([index[ph] for ph in phases], dtype=np.int64)


def fragments_to_dense(frags, offsets, strides):
    """Interleave MFP fragments into dense maps.

    ``frags`` has shape ``(F * bs, C, *s)`` with fragment ``i`` of example ``b`` at row
    ``i * bs + b``; the result has shape ``(bs, C, *(s * strides))`` and
    ``dense[b, c, o + strides * a] = frags[i * bs + b, c, a]`` for ``o = offsets[i]``.
    """
    nd = len(strides)
    perm = dense_permutation(offsets, strides)
    F = len(perm)
    bs = frags.shape[0] // F
    sp = frags.shape[2:]
    t = frags.reshape((F, bs) + frags.shape[1:])[perm]
    t = t.reshape(tuple(strides) + (bs,) + frags.shape[1:])
    # axes: strides(0..nd-1), bs, C, spatial(nd+2 ..) -> bs, C, (a0, s0), (a1, s1), ...
    order = [nd, nd + 1]
    for d in range(nd):
        order += [nd + 2 + d, d]
    dense = tuple(a * s for a, s in zip(sp, strides))
    return t.transpose(order).reshape((bs, frags.shape[1]) + dense)


def dense_to_fragments(dense, offsets, strides):
    """Inverse of :func:`fragments_to_dense`."""
    nd = len(strides)
    perm = dense_permutation(offsets, strides)
    bs, C = dense.shape[:2]
    sp = tuple(d // s for d, s in zip(dense.shape[2:], strides))
    shape = [bs, C]
    for a, s in zip(sp, strides):
        shape += [a, s]
    t = dense.reshape(shape)
    order = [3 + 2 * d for d in range(nd)] + [0, 1] + [2 + 2 * d for d in range(nd)]
    t = t.transpose(order).reshape((len(perm), bs, C) + sp)
    out = np.empty_like(t)
    out[perm] = t
    return out.reshape((len(perm) * bs, C) + sp)


# --- optimiser steps (elektronn.ops.updates) -------------------------------------------------


def step_finite(loss, grads):
    """Whether the float64 sum of ``loss`` and of every gradient is finite (as
    :func:`elektronn.net.updates.all_finite` decides)."""
    total = np.float64(loss)
    with np.errstate(all="ignore"):
        for g in grads:
            total += np.add.reduce(g, axis=None, dtype=np.float64)
    return bool(np.isfinite(total))


def update_sgd(loss, grads, updated, lr, mu, wd):
    """SGD with momentum in place (``updated``: params, then velocities); False if not finite.

    ``v <- g + mu*v`` and ``p <- (p - lr*v) - (lr*wd)*p``, float32 numpy scalars.
    """
    if not step_finite(loss, grads):
        return False
    lr, mu, wd = np.float32(lr), np.float32(mu), np.float32(wd)
    k, lrwd = len(grads), lr * wd
    with np.errstate(all="ignore"):
        for g, p, v in zip(grads, updated[:k], updated[k:], strict=True):
            new_v = g + mu * v
            p[...] = (p - lr * new_v) - lrwd * p
            v[...] = new_v
    return True


def update_adam(loss, grads, updated, step, b1, omb1, b2, omb2, eps):
    """Adam in place (``updated``: params, m, v); ``step = lr*sqrt(1-b2**t)/(1-b1**t)``,
    ``omb1 = 1-b1``, ``omb2 = 1-b2``; False if not finite.

    ``m <- b1*m + omb1*g``, ``v <- b2*v + omb2*g*g``, ``p <- p - (step*m)/(sqrt(v) + eps)``.
    """
    if not step_finite(loss, grads):
        return False
    k = len(grads)
    with np.errstate(all="ignore"):
        for g, p, m, v in zip(grads, updated[:k], updated[k:2 * k], updated[2 * k:], strict=True):
            new_m = b1 * m + omb1 * g
            new_v = b2 * v + omb2 * (g * g)
            m[...] = new_m
            v[...] = new_v
            p[...] = p - (step * new_m) / (np.sqrt(new_v) + eps)
    return True


def update_rprop(loss, grads, updated, pen, gain, wd, low, high, lo_s, hi_s, tiny):
    """ELEKTRONN 1.0's RPROP in place (``updated``: params, last gradients, step sizes);
    False if not finite.

    ``s = last*g``; ``eta <- clip(eta*((1 - pen*[s < lo_s]) + gain*[s > hi_s]), low, high)``;
    ``p <- (p - eta_old*g/(|g| + tiny)) - wd*p``; ``last <- g``.
    """
    if not step_finite(loss, grads):
        return False
    k = len(grads)
    with np.errstate(all="ignore"):
        for g, p, last, eta in zip(grads, updated[:k], updated[k:2 * k], updated[2 * k:],
                                   strict=True):
            s = last * g
            factor = (_ONE - pen * (s < lo_s).astype(np.float32)) + gain * (
                s > hi_s).astype(np.float32)
            new_eta = np.clip(eta * factor, low, high)
            p[...] = (p - (eta * g) / (np.abs(g) + tiny)) - wd * p
            eta[...] = new_eta
            last[...] = g
    return True
