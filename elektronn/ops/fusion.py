"""Graph rewrites of the ``"numpy"`` mode that fuse a layer's bias and relu into its convolution.

A conv layer computes ``conv(x, w)``, optionally max-pools it (:class:`~elektronn.ops.Pool` or
:class:`~elektronn.ops.MaxFragmentPool`), adds its bias ``b.dimshuffle("x", 0, "x", ...)`` and
applies its activation (relu: ``t * (t > 0)``).  Run as separate numpy passes, the bias and
the relu each read and write the whole layer output again.  These rewrites move both into
:class:`~elektronn.ops.ConvBiasAct`, which applies them as the kernel stores its results:

* :func:`fuse_conv_bias`: ``conv(x, w) + b`` becomes ``ConvBiasAct("linear")(x, w, b)``, and
  ``maxpool(conv(x, w)) + b`` becomes ``maxpool(ConvBiasAct("linear")(x, w, b))`` (adding a
  per-channel constant commutes with taking a maximum; not so for ``"maxabs"`` pooling).
* :func:`fuse_conv_relu`: ``a * (a > 0)`` with ``a`` such a fused output (or a max pool of
  one) becomes ``ConvBiasAct("relu")`` (relu commutes with a maximum too).

Each intermediate result must have no other use: in training graphs the pooling gradient
reads the convolution and pooling outputs, so pooled layers keep their separate bias there;
unpooled layers still fuse their bias.  The mask ``a > 0`` may have other uses (the relu
gradient): it is then computed from the fused output, which is positive where ``a`` is.
The rewrites run after gradients were taken; :class:`~elektronn.ops.ConvBiasAct` has none.
"""

from pytensor.graph.rewriting.basic import node_rewriter
from pytensor.scalar import GT, Add, Mul
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.variable import TensorConstant

from elektronn.ops.conv import Conv, ConvBiasAct
from elektronn.ops.mfp import MaxFragmentPool
from elektronn.ops.pool import Pool

__all__ = ["fuse_conv_bias", "fuse_conv_relu"]


def _users(fgraph, var):
    """The nodes that use ``var`` (``"output"`` for a graph output), each once."""
    return {client for client, _ in fgraph.clients[var]}


def _through_max_pool(var):
    """``(inner, pool_op)`` if ``var = pool_op(inner)`` (max Pool or MFP), else ``(var, None)``."""
    node = var.owner
    if node is not None and isinstance(node.op, Pool | MaxFragmentPool) and node.op.mode == "max":
        return node.inputs[0], node.op
    return var, None


def _channel_bias(var):
    """The float32 vector ``b`` when ``var`` is ``b.dimshuffle("x", 0, "x", ...)``, else None."""
    node = var.owner
    if node is None or not isinstance(node.op, DimShuffle):
        return None
    (b,) = node.inputs
    order = ("x", 0) + ("x",) * (var.ndim - 2)
    return b if tuple(node.op.new_order) == order and b.dtype == "float32" else None


def _binary(node, scalar_op):
    """Whether ``node`` is a binary float32 Elemwise of ``scalar_op``'s class."""
    return (isinstance(node.op, Elemwise) and isinstance(node.op.scalar_op, scalar_op)
            and len(node.inputs) == 2 and node.outputs[0].dtype == "float32")


@node_rewriter([Elemwise])
def fuse_conv_bias(fgraph, node):
    """``[maxpool](conv(x, w)) + b.dimshuffle("x", 0, ...)`` -> ``[maxpool](ConvBiasAct(x, w, b))``.

    Either operand order; the convolution (and pool) output must have no other use.
    """
    if not _binary(node, Add):
        return None
    for t, bias in (node.inputs, node.inputs[::-1]):
        b = _channel_bias(bias)
        conv_out, pool = _through_max_pool(t)
        conv = conv_out.owner
        if b is None or conv is None or type(conv.op) is not Conv:
            continue
        # a bias of one entry broadcast over several channels (or the reverse) stays an Add
        if (t.type.shape[1] == 1) != (b.type.shape[0] == 1):
            continue
        if _users(fgraph, t) != {node} or (pool and _users(fgraph, conv_out) != {t.owner}):
            continue
        out = ConvBiasAct("linear")(*conv.inputs, b)
        return [pool(out) if pool else out]
    return None


def _is_positive_mask(mask, a):
    """Whether ``mask`` is ``a > 0`` (``0`` a constant of one element)."""
    node = mask.owner
    if node is None or not isinstance(node.op, Elemwise) or not isinstance(node.op.scalar_op, GT):
        return False
    zero = node.inputs[1]
    return (node.inputs[0] is a and isinstance(zero, TensorConstant) and zero.data.size == 1
            and zero.data.item() == 0)


@node_rewriter([Elemwise])
def fuse_conv_relu(fgraph, node):
    """``a * (a > 0)`` -> relu inside ``a``, where ``a`` is ``[maxpool](ConvBiasAct("linear"))``.

    Either operand order; ``a`` must have no other use than the product and the mask, and the
    convolution output none but the pool.  A mask with other uses is recomputed from the result.
    """
    if not _binary(node, Mul):
        return None
    for a, mask in (node.inputs, node.inputs[::-1]):
        fused, pool = _through_max_pool(a)
        if (not _is_positive_mask(mask, a) or fused.owner is None
                or fused.owner.op != ConvBiasAct("linear")):
            continue
        if _users(fgraph, a) != {node, mask.owner}:
            continue
        if pool and _users(fgraph, fused) != {a.owner}:
            continue
        out = ConvBiasAct("relu")(*fused.owner.inputs)
        out = pool(out) if pool else out
        replacements = {node.outputs[0]: out}
        if _users(fgraph, mask) != {node}:  # e.g. the relu's gradient: relu(a) > 0 iff a > 0
            replacements[mask] = mask.owner.op(out, mask.owner.inputs[1])
        return replacements
    return None
