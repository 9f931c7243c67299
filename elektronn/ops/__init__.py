"""PyTensor Ops that PyTensor 3 no longer ships: convolution, pooling and max-fragment pooling.

Layout convention: ``(batch, channels, *spatial)``; pooling and MFP act on the trailing axes.
Every Op validates its inputs (``ValueError`` naming the argument), infers shapes, has a
gradient, and a numpy reference in :mod:`elektronn.ops.reference`.  Convolution, pooling and
MFP run on compiled C kernels (:mod:`elektronn.ops._kernels`); :mod:`elektronn.ops.jax_dispatch`
holds JAX implementations of every Op for PyTensor's JAX mode (GPU).  In the default
``"numpy"`` mode, :mod:`elektronn.ops.fusion` moves a conv layer's bias and relu into its
convolution after differentiation (:class:`ConvBiasAct`, the one Op without a gradient), and
the optimisers run their guarded update as one in-place :class:`FusedUpdate` node (no gradient
and no JAX implementation: the JAX mode keeps the symbolic update rules).

Importing this package registers the JAX implementations with PyTensor's ``jax_funcify``
without importing JAX: a graph rewrite in PyTensor's ``"jax"`` rewrite database, which only
PyTensor's JAX mode runs, imports :mod:`elektronn.ops.jax_dispatch` (and with it JAX) just
before the JAX linker converts a graph.  So ``pytensor.function(..., mode="JAX")`` works on any
graph of these Ops, and processes that never use JAX never import it (importing JAX costs
seconds, and PyTensor's JAX dispatch sets ``jax_enable_x64``).

This package does not import :mod:`elektronn.backend` (the backend builds its modes on these
Ops, not the other way round): graphs built here use PyTensor's configuration as it is.
"""

from pytensor.compile import optdb as _optdb
from pytensor.graph.rewriting.basic import GraphRewriter as _GraphRewriter

from elektronn.ops.conv import (
    Conv,
    ConvBiasAct,
    ConvGradInput,
    ConvGradWeights,
    conv,
    conv2d,
    conv3d,
)
from elektronn.ops.mfp import (
    DenseToFragments,
    FragmentsToDense,
    MaxFragmentPool,
    MaxFragmentPoolGrad,
    fragment_offsets,
    fragments_to_dense,
    max_fragment_pool,
)
from elektronn.ops.pool import Pool, PoolGrad, maxout, pool
from elektronn.ops.updates import FusedUpdate, fused_updates

__all__ = [
    "Conv",
    "ConvBiasAct",
    "ConvGradInput",
    "ConvGradWeights",
    "conv",
    "conv2d",
    "conv3d",
    "Pool",
    "PoolGrad",
    "pool",
    "maxout",
    "MaxFragmentPool",
    "MaxFragmentPoolGrad",
    "max_fragment_pool",
    "FragmentsToDense",
    "DenseToFragments",
    "fragments_to_dense",
    "fragment_offsets",
    "FusedUpdate",
    "fused_updates",
]


class _RegisterJax(_GraphRewriter):
    """A rewrite that changes nothing: it registers the Ops' JAX implementations when run."""

    def apply(self, fgraph):
        from elektronn.ops import jax_dispatch  # noqa: F401  (registers with jax_funcify)


class _Float32Accumulators(_GraphRewriter):
    """JAX mode only: sums accumulate in their own float32 when JAX has no 64-bit types."""

    def apply(self, fgraph):
        from elektronn.ops import jax_dispatch

        jax_dispatch.float32_accumulators(fgraph)


if "elektronn_jax_funcify" not in _optdb:
    _optdb.register("elektronn_jax_funcify", _RegisterJax(), "jax", position=0)
    _optdb.register("elektronn_jax_float32_acc", _Float32Accumulators(), "jax", position=100.5)
