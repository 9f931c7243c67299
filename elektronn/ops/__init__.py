"""PyTensor Ops that PyTensor 3 no longer ships: convolution, pooling and max-fragment pooling.

Layout convention: ``(batch, channels, *spatial)``; pooling and MFP act on the trailing axes.
Every Op validates its inputs (``ValueError`` naming the argument), infers shapes, has a
gradient, and a numpy reference in :mod:`elektronn.ops.reference`.  Convolution, pooling and
MFP run on compiled C kernels (:mod:`elektronn.ops._kernels`); ``elektronn.ops.jax_dispatch``
registers JAX implementations of every Op for PyTensor's JAX mode (GPU).  In the default
``"numpy"`` mode, :mod:`elektronn.ops.fusion` moves a conv layer's bias and relu into its
convolution after differentiation (:class:`ConvBiasAct`, the one Op without a gradient).
"""

from elektronn import backend  # noqa: F401  (configures PyTensor before any Op is built)
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
]
