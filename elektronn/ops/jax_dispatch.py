"""JAX implementations of every Op in :mod:`elektronn.ops`, for PyTensor's JAX mode.

Importing this module registers one function per Op with PyTensor's ``jax_funcify``
(:mod:`elektronn.ops` has PyTensor's JAX mode import it before it converts a graph); it has no
other effect of its own.  Importing PyTensor's JAX dispatch, however, sets ``jax_enable_x64`` from
``pytensor.config.floatX``: with elektronn's ``float32`` it switches 64-bit types in JAX off
(integer inputs such as MALIS label volumes then become int32 inside JAX).  elektronn's graphs
are float32, so this changes none of their results.

Every implementation takes its shapes from the static ``.shape`` of the arrays it receives,
so it traces under ``jax.jit``; PyTensor graphs compiled for JAX should have full static input
shapes.  The semantics are those of :mod:`elektronn.ops.reference`:

* the convolutions are true convolutions (kernel flipped in every spatial axis) computed with
  ``jax.lax.conv_general_dilated`` at ``HIGHEST`` precision (no TF32 on GPUs),
* pooling gradients give the gradient to *every* input equal to its window's output, as
  Theano did (not to the first maximum only, as JAX's own gradient of a max would),
* MFP stacks the fragment of phase ``f`` (row-major) of example ``b`` at batch index
  ``f * batch + b``,
* ``MalisWeights`` calls its numpy/numba kernel on the host through ``jax.pure_callback``.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from pytensor.link.jax.dispatch import jax_funcify
from pytensor.tensor.elemwise import CAReduce

from elektronn.ops.conv import Conv, ConvGradInput, ConvGradWeights
from elektronn.ops.malis import MalisWeights, malis_weights
from elektronn.ops.mfp import (
    DenseToFragments,
    FragmentsToDense,
    MaxFragmentPool,
    MaxFragmentPoolGrad,
)
from elektronn.ops.pool import Pool, PoolGrad

__all__ = ["conv", "conv_grad_input", "conv_grad_weights", "pool", "pool_grad", "mfp", "mfp_grad",
           "float32_accumulators"]


def float32_accumulators(fgraph):
    """Let float32 sums accumulate in float32 when JAX has no 64-bit types (``jax_enable_x64``).

    PyTensor sums float32 arrays with a float64 accumulator.  Without x64 JAX truncates that
    accumulator to float32 anyway, and warns at every trace ("Explicitly requested dtype
    float64 ... will be truncated"); asking for float32 computes the same and says nothing.
    Run by PyTensor's JAX mode through a rewrite registered in :mod:`elektronn.ops`.
    """
    if jax.config.jax_enable_x64:
        return
    for node in fgraph.toposort():
        op = node.op
        if (isinstance(op, CAReduce) and getattr(op, "acc_dtype", None) == "float64"
                and node.outputs[0].dtype == "float32"):
            new = op.clone(acc_dtype="float32")(*node.inputs)
            fgraph.replace_all_validate([(node.outputs[0], new)], reason="float32_accumulators")


# --------------------------------------------------------------------------- convolution


def _flip(a, nd):
    """Reverse the last ``nd`` axes of ``a``."""
    return a[(Ellipsis,) + (slice(None, None, -1),) * nd]


def _corr(lhs, rhs, lhs_spec, rhs_spec, out_spec, padding="VALID"):
    """Stride-1 N-d cross-correlation with explicit dimension specs (see ``ConvDimensionNumbers``).

    ``lhs_spec`` names the (batch, feature, *spatial) axes of ``lhs``, ``rhs_spec`` the
    (out feature, in feature, *spatial) axes of ``rhs``, ``out_spec`` where the (batch, feature,
    *spatial) axes of the result go.
    """
    nd = lhs.ndim - 2
    spatial = tuple(range(2, 2 + nd))
    dn = jax.lax.ConvDimensionNumbers(
        lhs_spec=tuple(lhs_spec) + spatial,
        rhs_spec=tuple(rhs_spec) + spatial,
        out_spec=tuple(out_spec) + spatial,
    )
    return jax.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=(1,) * nd,
        padding=padding,
        dimension_numbers=dn,
        precision=jax.lax.Precision.HIGHEST,
    )


def conv(x, w):
    """Valid true convolution: ``x (bs, ic, *s)``, ``w (oc, ic, *k)`` -> ``(bs, oc, *(s-k+1))``."""
    return _corr(x, _flip(w, x.ndim - 2), (0, 1), (0, 1), (0, 1))


def conv_grad_input(g, w):
    """Full correlation of ``g (bs, oc, *o)`` with ``w (oc, ic, *k)`` -> ``(bs, ic, *(o+k-1))``."""
    pad = [(k - 1, k - 1) for k in w.shape[2:]]
    return _corr(g, w, (0, 1), (1, 0), (0, 1), padding=pad)


def conv_grad_weights(x, g):
    """Kernel gradient ``(oc, ic, *(s-o+1))`` of :func:`conv` for ``x (bs, ic, *s)``.

    ``g (bs, oc, *o)`` is the output gradient.  The batch axis is the contraction axis: ``x`` is
    read as (feature=bs, batch=ic) and ``g`` as a kernel (in=bs, out=oc); the correlation is then
    flipped into a convolution kernel.
    """
    gw = _corr(x, g, (1, 0), (1, 0), (1, 0))
    return _flip(gw, x.ndim - 2)


@jax_funcify.register(Conv)
def jax_funcify_Conv(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.conv.Conv`."""
    return conv


@jax_funcify.register(ConvGradInput)
def jax_funcify_ConvGradInput(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.conv.ConvGradInput`."""
    return conv_grad_input


@jax_funcify.register(ConvGradWeights)
def jax_funcify_ConvGradWeights(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.conv.ConvGradWeights`."""
    return conv_grad_weights


# ----------------------------------------------------------------------------- pooling


def _blocked(x, ws):
    """Reshape ``x`` so that each pooled trailing axis ``s`` becomes ``(s // p, p)``."""
    nd = len(ws)
    shape = list(x.shape[: x.ndim - nd])
    for s, p in zip(x.shape[x.ndim - nd :], ws, strict=True):
        shape += [s // p, p]
    return x.reshape(shape)


def _window_axes(x, ws):
    """The window axes of ``_blocked(x, ws)``."""
    lead = x.ndim - len(ws)
    return tuple(lead + 2 * i + 1 for i in range(len(ws)))


def pool(x, ws, mode="max"):
    """Non-overlapping ``max`` / ``maxabs`` pooling of the trailing ``len(ws)`` axes."""
    b = _blocked(x, ws)
    axes = _window_axes(x, ws)
    hi = b.max(axis=axes)
    if mode == "max":
        return hi
    lo = b.min(axis=axes)
    return jnp.where(hi >= -lo, hi, lo)


def pool_grad(x, y, g, ws):
    """Gradient of :func:`pool`: ``g`` goes to every input element equal to its window's output."""
    axes = _window_axes(x, ws)
    y_b = jnp.expand_dims(y, axes)
    g_b = jnp.expand_dims(g, axes)
    mask = _blocked(x, ws) == y_b
    return (mask.astype(g.dtype) * g_b).reshape(x.shape)


@jax_funcify.register(Pool)
def jax_funcify_Pool(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.pool.Pool`."""
    ws, mode = op.ws, op.mode

    def pool_fn(x):
        return pool(x, ws, mode)

    return pool_fn


@jax_funcify.register(PoolGrad)
def jax_funcify_PoolGrad(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.pool.PoolGrad`."""
    ws = op.ws

    def pool_grad_fn(x, y, g):
        return pool_grad(x, y, g, ws)

    return pool_grad_fn


# ------------------------------------------------------------------ max-fragment pooling


def _phase_crops(x, ws):
    """``(f, crop)`` for every phase in row-major order; ``crop`` indexes ``x``'s phase crop."""
    nd = len(ws)
    lead = (slice(None),) * (x.ndim - nd)
    sizes = x.shape[x.ndim - nd :]
    for f, phase in enumerate(itertools.product(*(range(p) for p in ws))):
        yield (
            f,
            lead
            + tuple(slice(ph, s - p + ph + 1) for ph, p, s in zip(phase, ws, sizes, strict=True)),
        )


def mfp(x, ws, mode="max"):
    """Max-fragment pooling: pool every phase crop, stack the fragments on axis 0."""
    return jnp.concatenate([pool(x[crop], ws, mode) for _, crop in _phase_crops(x, ws)])


def mfp_grad(x, y, g, ws):
    """Gradient of :func:`mfp` with respect to ``x``: the phases' pool gradients, summed."""
    bs = x.shape[0]
    gx = jnp.zeros_like(x)
    for f, crop in _phase_crops(x, ws):
        part = pool_grad(x[crop], y[f * bs : (f + 1) * bs], g[f * bs : (f + 1) * bs], ws)
        widths = [(0, 0)] * x.ndim
        for a, sl in enumerate(crop):
            if sl.start is not None:
                widths[a] = (sl.start, x.shape[a] - sl.stop)
        gx = gx + jnp.pad(part, widths)
    return gx


@jax_funcify.register(MaxFragmentPool)
def jax_funcify_MaxFragmentPool(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.mfp.MaxFragmentPool`."""
    ws, mode = op.ws, op.mode

    def mfp_fn(x):
        return mfp(x, ws, mode)

    return mfp_fn


@jax_funcify.register(MaxFragmentPoolGrad)
def jax_funcify_MaxFragmentPoolGrad(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.mfp.MaxFragmentPoolGrad`."""
    ws = op.ws

    def mfp_grad_fn(x, y, g):
        return mfp_grad(x, y, g, ws)

    return mfp_grad_fn


# ------------------------------------------------------------------ fragment reassembly


def fragments_to_dense(frags, perm, strides):
    """Interleave fragments ``(F*bs, C, *s)`` into ``(bs, C, *(s*strides))``.

    ``perm[i]`` is the fragment holding dense phase ``i`` (row-major), as
    :func:`elektronn.ops.numpy_kernels.dense_permutation` returns it.
    """
    nd = len(strides)
    n = len(perm)
    bs, ch = frags.shape[0] // n, frags.shape[1]
    sp = frags.shape[2:]
    t = frags.reshape((n, bs, ch) + sp)[np.asarray(perm)]
    t = t.reshape(tuple(strides) + (bs, ch) + sp)
    order = [nd, nd + 1]
    for d in range(nd):
        order += [nd + 2 + d, d]
    return t.transpose(order).reshape(
        (bs, ch) + tuple(a * s for a, s in zip(sp, strides, strict=True))
    )


def dense_to_fragments(dense, perm, strides):
    """Inverse of :func:`fragments_to_dense`."""
    nd = len(strides)
    bs, ch = dense.shape[:2]
    sp = tuple(d // s for d, s in zip(dense.shape[2:], strides, strict=True))
    shape = [bs, ch]
    for a, s in zip(sp, strides, strict=True):
        shape += [a, s]
    order = [3 + 2 * d for d in range(nd)] + [0, 1] + [2 + 2 * d for d in range(nd)]
    t = dense.reshape(shape).transpose(order).reshape((len(perm), bs, ch) + sp)
    t = t[np.argsort(np.asarray(perm))]
    return t.reshape((len(perm) * bs, ch) + sp)


@jax_funcify.register(FragmentsToDense)
def jax_funcify_FragmentsToDense(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.mfp.FragmentsToDense`."""
    perm, strides = tuple(int(i) for i in op.perm), op.strides

    def fragments_to_dense_fn(x):
        return fragments_to_dense(x, perm, strides)

    return fragments_to_dense_fn


@jax_funcify.register(DenseToFragments)
def jax_funcify_DenseToFragments(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.mfp.DenseToFragments`."""
    perm, strides = tuple(int(i) for i in op.perm), op.strides

    def dense_to_fragments_fn(x):
        return dense_to_fragments(x, perm, strides)

    return dense_to_fragments_fn


# ------------------------------------------------------------------------------ MALIS


@jax_funcify.register(MalisWeights)
def jax_funcify_MalisWeights(op, node=None, **kwargs):
    """JAX implementation of :class:`~elektronn.ops.malis.MalisWeights` (a host callback)."""
    nhood, unrestrict_neg = op.nhood, op.unrestrict_neg

    def host(aff_pred, aff_gt, seg_gt):
        return malis_weights(aff_pred, aff_gt, seg_gt, nhood=nhood, unrestrict_neg=unrestrict_neg)

    def malis_fn(aff_pred, aff_gt, seg_gt):
        out = jax.ShapeDtypeStruct(aff_pred.shape, jnp.float32)
        return jax.pure_callback(host, (out, out), aff_pred, aff_gt, seg_gt)

    return malis_fn
