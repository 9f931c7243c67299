"""Graph-level pooling helpers of ELEKTRONN 1.0 (the layers use :mod:`elektronn.ops` directly)."""

import pytensor.tensor as pt

from elektronn import ops

__all__ = ["maxabs", "maxout", "pooling2d", "pooling3d", "my_max_pool_3d"]


def maxabs(t1, t2):
    """Element-wise: the value of larger magnitude, sign kept; ties go to the positive value."""
    hi, lo = pt.maximum(t1, t2), pt.minimum(t1, t2)
    return pt.switch(pt.ge(hi, -lo), hi, lo)


def maxout(conv_out, factor=2, mode="max", axis=1):
    """Max (or maxabs) over groups of ``factor`` consecutive channels on ``axis`` (1 or 2)."""
    return ops.maxout(conv_out, factor, mode, axis)


def pooling2d(conv_out, pool_shape=(2, 2), mode="max"):
    """Non-overlapping pooling of ``(bs, ch, x, y)``."""
    return ops.pool(conv_out, pool_shape, mode)


def pooling3d(conv_out, pool_shape=(2, 2, 2), mode="max"):
    """Non-overlapping pooling of the 3-D layout ``(bs, z, ch, x, y)`` with ``(pz, px, py)``."""
    core = conv_out.dimshuffle(0, 2, 1, 3, 4)
    return ops.pool(core, pool_shape, mode).dimshuffle(0, 2, 1, 3, 4)


def my_max_pool_3d(sym_input, pool_shape=(2, 2, 2)):
    """Max pooling of ``(bs, z, ch, x, y)`` by ``(pz, px, py)`` (kept from ELEKTRONN 1.0)."""
    return pooling3d(sym_input, pool_shape, "max")
