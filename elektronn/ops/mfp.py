"""Max-fragment pooling (MFP) and the reassembly of fragments into dense maps.

MFP pools every phase-shifted crop of a feature map and stacks the resulting fragments on the
batch axis, so that a net with pooling computes, in one pass, the output it would have at every
sub-stride shift of its input.  :func:`fragment_offsets` keeps the bookkeeping of where each
fragment belongs; :class:`FragmentsToDense` interleaves the fragments of the last layer into a
dense map (and :class:`DenseToFragments` is its inverse, hence its gradient).
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from elektronn.ops import _kernels, numpy_kernels
from elektronn.ops._common import as_float32, check_ndim
from elektronn.ops.pool import _pooled_type, _PoolingGrad, check_pool_args

__all__ = [
    "MaxFragmentPool",
    "MaxFragmentPoolGrad",
    "FragmentsToDense",
    "DenseToFragments",
    "fragment_offsets",
    "max_fragment_pool",
    "fragments_to_dense",
]


def fragment_offsets(offsets, strides, pool):
    """MFP bookkeeping of one layer (see docs/mfp.md).

    Parameters
    ----------
    offsets : array_like of shape (F, nd) or None
        Offsets of the incoming fragments (``None``: a single unshifted map).
    strides : array_like of shape (nd,) or None
        Incoming strides (``None``: all 1).
    pool : sequence of int
        The layer's pool factors.

    Returns
    -------
    offsets : ndarray of shape (F * prod(pool), nd)
        For each phase in row-major order, every incoming offset shifted by
        ``phase * strides``, in the order MFP stacks fragments on the batch axis.
    strides : ndarray of shape (nd,)
        ``pool * strides``.
    """
    pool = np.asarray(pool, dtype=np.int64)
    nd = len(pool)
    offsets = np.zeros((1, nd), np.int64) if offsets is None else np.asarray(offsets, np.int64)
    strides = np.ones(nd, np.int64) if strides is None else np.asarray(strides, np.int64)
    if offsets.ndim != 2 or offsets.shape[1] != nd or strides.shape != (nd,):
        raise ValueError(
            f"offsets must have shape (F, {nd}) and strides shape ({nd},) for pool {tuple(pool)}"
        )
    new = [o + np.asarray(ph) * strides
           for ph in numpy_kernels.pool_phases(pool) for o in offsets]
    return np.array(new, dtype=np.int64), pool * strides


def _check_fragmentable(shape, ws, name):
    nd = len(ws)
    for i, (s, p) in enumerate(zip(shape[len(shape) - nd :], ws)):
        if s is not None and (s - p + 1) % p:
            raise ValueError(
                f"{name} axis {len(shape) - nd + i} has size {s}: max-fragment pooling with "
                f"factor {p} needs a size of the form k*{p}+{p - 1} so that all fragments are "
                "equal (choose the input size with CNNCalculator)"
            )


class MaxFragmentPool(Op):
    """Pool every phase of the trailing axes and stack the fragments on axis 0.

    Fragment of phase index ``f`` (row-major) for example ``b`` is at batch index
    ``f * batch + b``; each pooled axis of size ``s`` becomes ``(s - p + 1) // p``.
    """

    __props__ = ("ws", "mode")

    def __init__(self, ws, mode="max"):
        self.ws = check_pool_args(ws, mode)
        self.mode = mode

    def make_node(self, x):
        x = as_float32(x, "input")
        check_ndim(x, "input", min_ndim=len(self.ws) + 1, layout="(batch, ..., *pooled axes)")
        _check_fragmentable(x.type.shape, self.ws, "input")
        out = _pooled_type(x, self.ws, int(np.prod(self.ws)), lambda s, p: (s - p + 1) // p)
        return Apply(self, [x], [out])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        _check_fragmentable(x.shape, self.ws, "input")
        output_storage[0][0] = _kernels.mfp(x, self.ws, self.mode)

    def infer_shape(self, fgraph, node, shapes):
        (s,) = shapes
        nd = len(self.ws)
        lead = [s[0] * int(np.prod(self.ws))] + list(s[1 : len(s) - nd])
        return [tuple(lead) + tuple((a - p + 1) // p for a, p in zip(s[len(s) - nd :], self.ws))]

    def pullback(self, inputs, outputs, cotangents):
        return [MaxFragmentPoolGrad(self.ws)(inputs[0], outputs[0], cotangents[0])]


class MaxFragmentPoolGrad(_PoolingGrad):
    """Gradient of :class:`MaxFragmentPool` with respect to its input."""

    grad_fn = staticmethod(_kernels.mfp_grad)

    def pullback(self, inputs, outputs, cotangents):
        x, y, g = inputs
        return [
            pt.zeros_like(x),
            pt.zeros_like(y),
            grad_not_implemented(self, 2, g, "second derivative of max-fragment pooling"),
        ]


class _Reassembly(Op):
    """Shared checks of the two fragment-layout permutations."""

    __props__ = ("offsets", "strides")

    def __init__(self, offsets, strides):
        self.strides = tuple(int(s) for s in strides)
        self.offsets = tuple(tuple(int(v) for v in o) for o in offsets)
        self.perm = numpy_kernels.dense_permutation(self.offsets, self.strides)

    def _input(self, x):
        x = as_float32(x, "input")
        check_ndim(x, "input", ndim=len(self.strides) + 2, layout="(batch, channels, *spatial)")
        return x


class FragmentsToDense(_Reassembly):
    """Interleave MFP fragments ``(F*bs, C, *s)`` into dense maps ``(bs, C, *(s*strides))``.

    ``offsets`` (one per fragment, in batch order) and ``strides`` come from
    :func:`fragment_offsets`.
    """

    def make_node(self, x):
        x = self._input(x)
        n = len(self.offsets)
        if x.type.shape[0] is not None and x.type.shape[0] % n:
            raise ValueError(f"input batch {x.type.shape[0]} is not a multiple of {n} fragments")
        bs = None if x.type.shape[0] is None else x.type.shape[0] // n
        sp = [None if s is None else s * k for s, k in zip(x.type.shape[2:], self.strides)]
        return Apply(self, [x], [pt.tensor(dtype="float32", shape=(bs, x.type.shape[1], *sp))])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        if x.shape[0] % len(self.offsets):
            raise ValueError(
                f"input batch {x.shape[0]} is not a multiple of {len(self.offsets)} fragments"
            )
        output_storage[0][0] = numpy_kernels.fragments_to_dense(
            x, self.offsets, self.strides)

    def infer_shape(self, fgraph, node, shapes):
        (s,) = shapes
        return [(s[0] // len(self.offsets), s[1], *(a * k for a, k in zip(s[2:], self.strides)))]

    def pullback(self, inputs, outputs, cotangents):
        return [DenseToFragments(self.offsets, self.strides)(cotangents[0])]


class DenseToFragments(_Reassembly):
    """Inverse of :class:`FragmentsToDense` (and its gradient)."""

    def make_node(self, x):
        x = self._input(x)
        for d, (s, k) in enumerate(zip(x.type.shape[2:], self.strides)):
            if s is not None and s % k:
                raise ValueError(f"input axis {d + 2} of size {s} is not divisible by stride {k}")
        bs = None if x.type.shape[0] is None else x.type.shape[0] * len(self.offsets)
        sp = [None if s is None else s // k for s, k in zip(x.type.shape[2:], self.strides)]
        return Apply(self, [x], [pt.tensor(dtype="float32", shape=(bs, x.type.shape[1], *sp))])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        if any(s % k for s, k in zip(x.shape[2:], self.strides)):
            raise ValueError(f"input shape {x.shape} is not divisible by strides {self.strides}")
        output_storage[0][0] = numpy_kernels.dense_to_fragments(
            x, self.offsets, self.strides)

    def infer_shape(self, fgraph, node, shapes):
        (s,) = shapes
        return [(s[0] * len(self.offsets), s[1], *(a // k for a, k in zip(s[2:], self.strides)))]

    def pullback(self, inputs, outputs, cotangents):
        return [FragmentsToDense(self.offsets, self.strides)(cotangents[0])]


def max_fragment_pool(x, ws, mode="max"):
    """Apply :class:`MaxFragmentPool` to the trailing ``len(ws)`` axes of ``x``."""
    return MaxFragmentPool(ws, mode)(x)


def fragments_to_dense(x, offsets, strides):
    """Apply :class:`FragmentsToDense`."""
    return FragmentsToDense(offsets, strides)(x)
