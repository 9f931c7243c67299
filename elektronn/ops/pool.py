"""Non-overlapping max / maxabs pooling of the trailing axes, its gradient, and maxout."""

import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from elektronn.ops import _kernels
from elektronn.ops._common import as_float32, check_ndim

__all__ = ["Pool", "PoolGrad", "pool", "maxout", "POOL_MODES", "check_pool_args"]

POOL_MODES = ("max", "maxabs")


def check_pool_args(ws, mode):
    """Normalise the pool factors to a tuple of positive ints and validate the mode."""
    try:
        ws = tuple(int(p) for p in ws)
    except TypeError:
        raise ValueError(f"pool_shape must be a sequence of ints, got {ws!r}") from None
    if not ws or any(p < 1 for p in ws):
        raise ValueError(f"pool_shape must contain positive ints, got {ws}")
    if mode not in POOL_MODES:
        raise ValueError(f"pooling mode must be one of {POOL_MODES}, got {mode!r}")
    return ws


def _check_divisible(shape, ws, name):
    """Raise if a (known) pooled axis is not divisible by its factor."""
    nd = len(ws)
    for i, (s, p) in enumerate(zip(shape[len(shape) - nd :], ws)):
        if s is not None and s % p:
            raise ValueError(
                f"{name} axis {len(shape) - nd + i} has size {s}, which is not divisible by "
                f"its pool factor {p}"
            )


def _pooled_type(x, ws, batch_factor=1, size=lambda s, p: s // p):
    shape = list(x.type.shape)
    nd = len(ws)
    for i, p in enumerate(ws):
        a = len(shape) - nd + i
        shape[a] = None if shape[a] is None else size(shape[a], p)
    if batch_factor != 1 and shape[0] is not None:
        shape[0] *= batch_factor
    return pt.tensor(dtype="float32", shape=tuple(shape))


def _sum_pool(t, ws):
    """Sum over non-overlapping windows of the trailing axes (a graph, for second gradients)."""
    nd = len(ws)
    lead = t.ndim - nd
    shape = [t.shape[a] for a in range(lead)]
    for i, p in enumerate(ws):
        shape += [t.shape[lead + i] // p, p]
    return t.reshape(shape, ndim=lead + 2 * nd).sum(axis=[lead + 2 * i + 1 for i in range(nd)])


class Pool(Op):
    """Non-overlapping pooling of the trailing ``len(ws)`` axes (factor 1 leaves an axis alone).

    ``mode='max'`` takes the maximum; ``mode='maxabs'`` the element with the largest absolute
    value, sign kept, ties going to the positive value.  Each pooled axis must be divisible by
    its factor.
    """

    __props__ = ("ws", "mode")

    def __init__(self, ws, mode="max"):
        self.ws = check_pool_args(ws, mode)
        self.mode = mode

    def make_node(self, x):
        x = as_float32(x, "input")
        check_ndim(x, "input", min_ndim=len(self.ws), layout=f"to pool {len(self.ws)} axes")
        _check_divisible(x.type.shape, self.ws, "input")
        return Apply(self, [x], [_pooled_type(x, self.ws)])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        _check_divisible(x.shape, self.ws, "input")
        output_storage[0][0] = _kernels.pool(x, self.ws, self.mode)

    def infer_shape(self, fgraph, node, shapes):
        (s,) = shapes
        nd = len(self.ws)
        return [tuple(s[: len(s) - nd]) + tuple(a // p for a, p in zip(s[len(s) - nd :], self.ws))]

    def pullback(self, inputs, outputs, cotangents):
        return [PoolGrad(self.ws)(inputs[0], outputs[0], cotangents[0])]


class _PoolingGrad(Op):
    """Shared part of the gradients of :class:`Pool` and max-fragment pooling.

    Inputs ``(x, y, g)``: the pooling input, its output and the output gradient; the result has
    the shape of ``x``.  Subclasses set ``grad_fn`` (from :mod:`elektronn.ops._kernels`).
    """

    __props__ = ("ws",)
    grad_fn = None

    def __init__(self, ws):
        self.ws = check_pool_args(ws, "max")

    def make_node(self, x, y, g):
        x, y, g = (as_float32(v, n) for v, n in ((x, "input"), (y, "output"), (g, "gradient")))
        return Apply(self, [x, y, g], [x.type()])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = type(self).grad_fn(*inputs, self.ws)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0]]


class PoolGrad(_PoolingGrad):
    """Gradient of :class:`Pool`: every input equal to its window's output gets the gradient.

    Ties therefore all receive it (as in Theano); with ``maxabs`` only elements equal to the
    signed output do.
    """

    grad_fn = staticmethod(_kernels.pool_grad)

    def pullback(self, inputs, outputs, cotangents):
        x, y, g = inputs
        (gg,) = cotangents
        mask = self(x, y, pt.ones_like(g))
        return [pt.zeros_like(x), pt.zeros_like(y), _sum_pool(gg * mask, self.ws)]


def pool(x, ws, mode="max"):
    """Pool the trailing ``len(ws)`` axes of ``x`` with :class:`Pool`."""
    return Pool(ws, mode)(x)


def maxout(x, factor=2, mode="max", axis=1):
    """Maxout: output channel ``j`` is the max over channels ``j*factor ... j*factor+factor-1``.

    Parameters
    ----------
    x : tensor
        Input; ``axis`` must be divisible by ``factor``.
    factor : int
        Number of channels pooled into one (``> 1``).
    mode : {"max", "maxabs"}
        Pooling function.
    axis : int
        The channel axis (1 for ``(bs, ch, x, y)``, 2 for the 3-D layout ``(bs, z, ch, x, y)``).
    """
    if int(factor) < 2:
        raise ValueError(f"maxout factor must be an int > 1, got {factor!r}")
    x = as_float32(x, "input")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an input with {x.ndim} dimensions")
    moved = pt.moveaxis(x, axis, -1)
    return pt.moveaxis(Pool((int(factor),), mode)(moved), -1, axis)
