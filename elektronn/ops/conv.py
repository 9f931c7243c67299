"""Valid, stride-1, batched multi-channel N-d convolution with its gradients.

All three Ops use the layout ``x: (batch, in_channels, *spatial)`` and
``w: (out_channels, in_channels, *kernel)`` and compute a TRUE convolution: the kernel is
flipped in every spatial axis, as Theano's ``conv2d`` and ``conv3d2d`` did, so parameter
files of ELEKTRONN 1.0 give the same outputs.  The three Ops are closed under
differentiation: the gradient of each is expressed with the other two.

:class:`ConvBiasAct` is the convolution with the bias and activation of a layer applied as
its results are stored; the ``"numpy"`` mode substitutes it for ``conv + bias`` (and a relu)
after gradients were taken (see :mod:`elektronn.ops.fusion`).
"""

import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from elektronn.ops import _kernels
from elektronn.ops._common import as_float32, check_ndim

__all__ = ["Conv", "ConvBiasAct", "ConvGradInput", "ConvGradWeights", "conv", "conv2d", "conv3d"]


def _check_channels(name_a, a, name_b, b):
    if a is not None and b is not None and a != b:
        raise ValueError(f"{name_a} has {a} channels but {name_b} expects {b}")


def _spatial_out(name, size, kname, k, sign):
    """Static output size ``size + sign * (k - 1)``; raise if a kernel does not fit."""
    if size is None or k is None:
        return None
    out = size + sign * (k - 1)
    if out < 1:
        raise ValueError(f"{kname} of size {k} is larger than {name} of size {size}")
    return out


def _conv_inputs(x, w):
    """Check the inputs of a convolution; return them as float32 tensors and the output type."""
    x = as_float32(x, "input")
    w = as_float32(w, "filters")
    check_ndim(x, "input", min_ndim=3, layout="(batch, channels, *spatial)")
    check_ndim(w, "filters", ndim=x.ndim, layout="(out_channels, in_channels, *kernel)")
    _check_channels("input", x.type.shape[1], "filters", w.type.shape[1])
    spatial = [
        _spatial_out(f"input axis {2 + d}", s, f"filter axis {2 + d}", k, -1)
        for d, (s, k) in enumerate(zip(x.type.shape[2:], w.type.shape[2:]))
    ]
    out = pt.tensor(dtype="float32", shape=(x.type.shape[0], w.type.shape[0], *spatial))
    return x, w, out


def _out_shape(xs, ws):
    """The (symbolic) output shape of a valid convolution of inputs ``xs`` with filters ``ws``."""
    return (xs[0], ws[0], *(s - k + 1 for s, k in zip(xs[2:], ws[2:])))


def _check_fit(x, w):
    """Raise a ``ValueError`` unless the filters ``w`` fit the input ``x`` (numpy arrays)."""
    if x.shape[1] != w.shape[1] or any(k > s for s, k in zip(x.shape[2:], w.shape[2:])):
        raise ValueError(
            f"filters of shape {w.shape} do not fit input of shape {x.shape}: channels must "
            "match and every kernel axis must be at most the input axis"
        )


class Conv(Op):
    """``conv(x, w)[n, o, p] = sum_{c, k} w[o, c, K-1-k] * x[n, c, p + k]`` (valid mode)."""

    __props__ = ()

    def make_node(self, x, w):
        x, w, out = _conv_inputs(x, w)
        return Apply(self, [x, w], [out])

    def perform(self, node, inputs, output_storage):
        x, w = inputs
        _check_fit(x, w)
        output_storage[0][0] = _kernels.corr(x, w, flip=True)

    def infer_shape(self, fgraph, node, shapes):
        return [_out_shape(*shapes)]

    def pullback(self, inputs, outputs, cotangents):
        x, w = inputs
        (g,) = cotangents
        return [ConvGradInput()(g, w), ConvGradWeights()(x, g)]


class ConvBiasAct(Op):
    """``act(conv(x, w) + b[o])``: :class:`Conv` with a per-channel bias and an activation.

    The bias is added and the activation applied as the kernel stores each result, which saves
    the separate passes over the output of ``conv(x, w) + b.dimshuffle("x", 0, "x", ...)`` and
    of the relu ``t * (t > 0)``.

    Parameters
    ----------
    activation : {"linear", "relu"}
        ``"relu"`` replaces negative results by 0 (NaN stays NaN).

    Notes
    -----
    Only created by the ``"numpy"`` mode's rewrites (:mod:`elektronn.ops.fusion`), which run
    after gradients were taken; it has no gradient (``grad_not_implemented``).
    """

    __props__ = ("activation",)
    ACTIVATIONS = ("linear", "relu")

    def __init__(self, activation="linear"):
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be one of {self.ACTIVATIONS}, got {activation!r}")
        self.activation = activation

    def make_node(self, x, w, b):
        x, w, out = _conv_inputs(x, w)
        b = as_float32(b, "bias")
        check_ndim(b, "bias", ndim=1, layout="(out_channels,)")
        oc, nb = w.type.shape[0], b.type.shape[0]
        if oc is not None and nb is not None and oc != nb:
            raise ValueError(f"bias has {nb} entries but the filters have {oc} output channels")
        if out.type.shape[1] is None:  # the bias may know the number of output channels
            out = pt.tensor(dtype="float32", shape=(*out.type.shape[:1], b.type.shape[0],
                                                    *out.type.shape[2:]))
        return Apply(self, [x, w, b], [out])

    def perform(self, node, inputs, output_storage):
        x, w, b = inputs
        _check_fit(x, w)
        output_storage[0][0] = _kernels.corr(x, w, b, relu=self.activation == "relu", flip=True)

    def infer_shape(self, fgraph, node, shapes):
        return [_out_shape(*shapes[:2])]

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, i, v, "only created after differentiation")
                for i, v in enumerate(inputs)]


class ConvGradInput(Op):
    """Gradient of ``sum(conv(x, w) * g)`` w.r.t. ``x``: a full correlation of ``g`` with ``w``."""

    __props__ = ()

    def make_node(self, g, w):
        g = as_float32(g, "output gradient")
        w = as_float32(w, "filters")
        check_ndim(g, "output gradient", min_ndim=3, layout="(batch, channels, *spatial)")
        check_ndim(w, "filters", ndim=g.ndim, layout="(out_channels, in_channels, *kernel)")
        _check_channels("output gradient", g.type.shape[1], "filters", w.type.shape[0])
        spatial = [
            None if s is None or k is None else s + k - 1
            for s, k in zip(g.type.shape[2:], w.type.shape[2:])
        ]
        out = pt.tensor(dtype="float32", shape=(g.type.shape[0], w.type.shape[1], *spatial))
        return Apply(self, [g, w], [out])

    def perform(self, node, inputs, output_storage):
        g, w = inputs
        if g.shape[1] != w.shape[0]:
            raise ValueError(f"output gradient {g.shape} does not match filters {w.shape}")
        output_storage[0][0] = _kernels.conv_grad_input(g, w)

    def infer_shape(self, fgraph, node, shapes):
        gs, ws = shapes
        return [(gs[0], ws[1], *(s + k - 1 for s, k in zip(gs[2:], ws[2:])))]

    def pullback(self, inputs, outputs, cotangents):
        g, w = inputs
        (gg,) = cotangents
        return [Conv()(gg, w), ConvGradWeights()(gg, g)]


class ConvGradWeights(Op):
    """Gradient of ``sum(conv(x, w) * g)`` w.r.t. ``w``; the kernel size is ``x - g + 1``."""

    __props__ = ()

    def make_node(self, x, g):
        x = as_float32(x, "input")
        g = as_float32(g, "output gradient")
        check_ndim(x, "input", min_ndim=3, layout="(batch, channels, *spatial)")
        check_ndim(g, "output gradient", ndim=x.ndim, layout="(batch, channels, *spatial)")
        spatial = [
            _spatial_out(f"input axis {2 + d}", s, f"output gradient axis {2 + d}", o, -1)
            for d, (s, o) in enumerate(zip(x.type.shape[2:], g.type.shape[2:]))
        ]
        out = pt.tensor(dtype="float32", shape=(g.type.shape[1], x.type.shape[1], *spatial))
        return Apply(self, [x, g], [out])

    def perform(self, node, inputs, output_storage):
        x, g = inputs
        if x.shape[0] != g.shape[0] or any(o > s for s, o in zip(x.shape[2:], g.shape[2:])):
            raise ValueError(f"output gradient {g.shape} does not match input {x.shape}")
        kshape = tuple(s - o + 1 for s, o in zip(x.shape[2:], g.shape[2:]))
        output_storage[0][0] = _kernels.corr_weights(x, g, kshape, flip=True)

    def infer_shape(self, fgraph, node, shapes):
        xs, gs = shapes
        return [(gs[1], xs[1], *(s - o + 1 for s, o in zip(xs[2:], gs[2:])))]

    def pullback(self, inputs, outputs, cotangents):
        x, g = inputs
        (ggw,) = cotangents
        return [ConvGradInput()(g, ggw), Conv()(x, ggw)]


def conv(x, w):
    """Valid true convolution of ``x (batch, ch, *spatial)`` with ``w (nof, ch, *kernel)``."""
    return Conv()(x, w)


def conv2d(x, w):
    """2-D :func:`conv`: ``x (batch, ch, X, Y)``, ``w (nof, ch, fx, fy)``."""
    out = Conv()(x, w)
    check_ndim(out, "input", ndim=4, layout="(batch, channels, x, y)")
    return out


def conv3d(x, w):
    """3-D :func:`conv`: ``x (batch, ch, Z, X, Y)``, ``w (nof, ch, fz, fx, fy)``."""
    out = Conv()(x, w)
    check_ndim(out, "input", ndim=5, layout="(batch, channels, z, x, y)")
    return out
