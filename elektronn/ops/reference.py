"""The tests' oracle: slow, obviously correct numpy versions of every Op in :mod:`elektronn.ops`.

Nothing in the package runs these; the tests compare the Ops, the C kernels, their numpy
fallback (:mod:`elektronn.ops.numpy_kernels`) and the JAX implementations with them.  Each is
written from the definition, by a route of its own: convolutions as one ``einsum`` over sliding
windows (computed in float64), their input gradient by scattering every kernel tap, pooling
over strided windows, pooling gradients by repeating the outputs over their windows, fragment
reassembly by strided assignment.  Layout: ``(batch, channels, *spatial)``; pooling acts on the
trailing axes.

>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> pool(x, (2, 2))[0, 0]
array([[ 5.,  7.],
       [13., 15.]], dtype=float32)
>>> conv(x, np.ones((1, 1, 3, 3), np.float32))[0, 0]
array([[45., 54.],
       [81., 90.]], dtype=float32)
"""

import itertools
import string

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "corr",
    "corr_weights",
    "conv",
    "conv_grad_input",
    "conv_grad_weights",
    "pool",
    "pool_grad",
    "mfp",
    "mfp_grad",
    "fragments_to_dense",
    "dense_to_fragments",
]


def _flip(w):
    """Reverse every spatial axis of a ``(out, in, *k)`` kernel."""
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


def _letters(nd):
    """Index letters for ``nd`` output positions and ``nd`` kernel taps."""
    return string.ascii_letters[:nd], string.ascii_letters[nd:2 * nd]


def _windows(x, kshape):
    """``win[n, c, *p, *k] = x[n, c, *(p + k)]`` for every valid position ``p``."""
    return sliding_window_view(x, tuple(kshape), axis=tuple(range(2, x.ndim)))


def corr(x, w):
    """Valid cross-correlation: ``y[n,o,p] = sum_{c,k} w[o,c,k] * x[n,c,p+k]``."""
    p, k = _letters(x.ndim - 2)
    y = np.einsum(f"NC{p}{k},OC{k}->NO{p}", _windows(x, w.shape[2:]).astype(np.float64),
                  w.astype(np.float64))
    return y.astype(np.float32)


def corr_weights(x, g, kshape):
    """``gw[o,c,k] = sum_{n,p} g[n,o,p] * x[n,c,p+k]``: the kernel gradient of :func:`corr`."""
    p, k = _letters(x.ndim - 2)
    gw = np.einsum(f"NC{p}{k},NO{p}->OC{k}", _windows(x, kshape).astype(np.float64),
                   g.astype(np.float64))
    return gw.astype(np.float32)


def conv(x, w):
    """Valid true convolution (kernel flipped in every spatial axis, as Theano's conv2d)."""
    return corr(x, _flip(w))


def conv_grad_input(g, w):
    """Gradient of ``sum(conv(x, w) * g)`` with respect to ``x``.

    Every output position ``p`` of tap ``k`` of the flipped kernel read input ``p + k``; the
    gradient adds ``g[p] * w_flipped[k]`` back there, tap by tap.
    """
    wf = _flip(w).astype(np.float64)
    kshape, oshape = w.shape[2:], g.shape[2:]
    gx = np.zeros((g.shape[0], w.shape[1]) + tuple(o + s - 1 for o, s in zip(oshape, kshape)))
    for tap in itertools.product(*(range(s) for s in kshape)):
        target = (slice(None), slice(None)) + tuple(slice(t, t + o) for t, o in zip(tap, oshape))
        gx[target] += np.einsum("NO...,OC->NC...", g.astype(np.float64),
                                wf[(slice(None), slice(None)) + tap])
    return gx.astype(np.float32)


def conv_grad_weights(x, g):
    """Gradient of ``sum(conv(x, w) * g)`` with respect to ``w``."""
    kshape = tuple(s - o + 1 for s, o in zip(x.shape[2:], g.shape[2:]))
    return np.ascontiguousarray(_flip(corr_weights(x, g, kshape)))


def _pool_windows(x, ws):
    """``(*lead, *pooled, prod(ws))``: the elements of every non-overlapping window."""
    nd = len(ws)
    axes = tuple(range(x.ndim - nd, x.ndim))
    win = sliding_window_view(x, tuple(ws), axis=axes)
    win = win[(Ellipsis,) + tuple(slice(None, None, p) for p in ws) + (slice(None),) * nd]
    return win.reshape(win.shape[: x.ndim] + (-1,))


def pool(x, ws, mode="max"):
    """Non-overlapping pooling of the trailing ``len(ws)`` axes (sizes divisible by ``ws``).

    ``"max"``: the largest element of each window; ``"maxabs"``: the element of largest absolute
    value, with its sign, the positive one where a positive and a negative one tie.
    """
    win = _pool_windows(x, ws)
    hi, lo = win.max(axis=-1), win.min(axis=-1)
    return (hi if mode == "max" else np.where(hi >= -lo, hi, lo)).astype(x.dtype)


def _repeat(y, ws):
    """Every element of ``y`` repeated over its pooling window (the input's shape)."""
    for i, p in enumerate(ws):
        y = np.repeat(y, p, axis=y.ndim - len(ws) + i)
    return y


def pool_grad(x, y, g, ws):
    """Gradient of :func:`pool`: ``g`` goes to every input element equal to its window's output."""
    return np.where(x == _repeat(y, ws), _repeat(g, ws), 0).astype(np.float32)


def _phases(ws):
    return list(itertools.product(*(range(p) for p in ws)))


def _crop(x, phase, ws):
    """The crop of phase ``phase``: whole windows starting at ``phase``."""
    lead = (slice(None),) * (x.ndim - len(ws))
    sizes = x.shape[x.ndim - len(ws):]
    return lead + tuple(slice(f, f + (s - f) // p * p) for f, p, s in zip(phase, ws, sizes))


def mfp(x, ws, mode="max"):
    """Max-fragment pooling: :func:`pool` of every phase's crop, the fragments stacked on axis 0.

    Phases in row-major order; fragment ``f`` of example ``b`` is row ``f * batch + b``.
    Every phase crop must have the same size (the input size is ``p - 1`` modulo ``p``).
    """
    return np.concatenate([pool(x[_crop(x, ph, ws)], ws, mode) for ph in _phases(ws)])


def mfp_grad(x, y, g, ws):
    """Gradient of :func:`mfp` with respect to its input: the phases' gradients, added up."""
    gx = np.zeros(x.shape, np.float32)
    bs = x.shape[0]
    for f, ph in enumerate(_phases(ws)):
        crop = _crop(x, ph, ws)
        rows = slice(f * bs, (f + 1) * bs)
        gx[crop] += pool_grad(x[crop], y[rows], g[rows], ws)
    return gx


def fragments_to_dense(frags, offsets, strides):
    """``dense[b, c, o + strides * a] = frags[i * bs + b, c, a]`` for ``o = offsets[i]``."""
    n = len(offsets)
    bs = frags.shape[0] // n
    dense = np.empty((bs,) + frags.shape[1:2]
                     + tuple(a * s for a, s in zip(frags.shape[2:], strides)), frags.dtype)
    for i, o in enumerate(offsets):
        where = (slice(None), slice(None)) + tuple(slice(int(f), None, s)
                                                   for f, s in zip(o, strides))
        dense[where] = frags[i * bs:(i + 1) * bs]
    return dense


def dense_to_fragments(dense, offsets, strides):
    """Inverse of :func:`fragments_to_dense`."""
    return np.concatenate([
        dense[(slice(None), slice(None)) + tuple(slice(int(f), None, s)
                                                 for f, s in zip(o, strides))]
        for o in offsets])
