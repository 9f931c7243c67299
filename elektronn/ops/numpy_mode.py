"""Graph rewrites that make PyTensor graphs fast to run as Python/numpy (the ``"numpy"`` mode).

In :mod:`elektronn.backend`'s default mode every node runs through its Python ``perform``.
PyTensor's ``Elemwise.perform`` calls one numpy ufunc when its scalar Op names one and the node
has as many inputs as the ufunc; otherwise it loops over the elements in Python
(``np.frompyfunc``).  These rewrites keep every elementwise node on a ufunc, and on a lean path:

* :func:`split_variadic_add_mul`: ``add(a, b, c)`` / ``mul(a, b, c)`` become chains of binary
  ones (PyTensor's canonical form collects sums and products into one variadic node);
* :func:`cast_with_numpy`: a cast calls the numpy scalar type, ``np.float32(x)``;
* :func:`lean_elemwise`: single-output nodes become :class:`NumpyElemwise`, whose ``perform``
  is just the ufunc call (8 us -> 2 us per node: most nodes of a small net's training step are
  elementwise).

:data:`REWRITES` lists them with their positions in PyTensor's rewrite sequence (after its
``fast_run`` rewrites; Elemwise fusion and in-place elementwise rewrites are off in this mode).
"""

import numpy as np
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.scalar import Add, Cast, Mul
from pytensor.tensor.elemwise import Elemwise

from elektronn.ops.fusion import fuse_conv_bias, fuse_conv_relu

__all__ = ["NumpyElemwise", "split_variadic_add_mul", "cast_with_numpy", "lean_elemwise",
           "REWRITES"]


class NumpyElemwise(Elemwise):
    """An ``Elemwise`` whose ``perform`` only calls its numpy ufunc.

    PyTensor's ``perform`` also re-checks the broadcasting of every input against the static
    types and takes several detours per call; the graphs it runs here were checked when they
    were built.  Floating-point warnings are silenced as in ``Elemwise.perform``.
    """

    def perform(self, node, inputs, output_storage):
        if self.nfunc is None:
            self.prepare_node(node, None, None, "py")
        with np.errstate(all="ignore"):
            result = self.nfunc(*inputs)
        output_storage[0][0] = np.asarray(result, dtype=node.outputs[0].dtype)


@node_rewriter([Elemwise])
def split_variadic_add_mul(fgraph, node):
    """``add(a, b, c, ...)`` -> ``add(add(a, b), c) ...`` (and the same for ``mul``)."""
    if not isinstance(node.op.scalar_op, Add | Mul) or len(node.inputs) <= 2:
        return None
    binary = Elemwise(type(node.op.scalar_op)(node.op.scalar_op.output_types_preference))
    out = node.inputs[0]
    for term in node.inputs[1:]:
        out = binary(out, term)
    return [out] if out.type == node.outputs[0].type else None


@node_rewriter([Elemwise])
def cast_with_numpy(fgraph, node):
    """A cast calls the numpy scalar type of its output dtype (``np.float32(x)``)."""
    if not isinstance(node.op.scalar_op, Cast) or node.op.nfunc_spec is not None:
        return None
    return [Elemwise(node.op.scalar_op, nfunc_spec=(node.outputs[0].dtype, 1, 1))(*node.inputs)]


@node_rewriter([Elemwise])
def lean_elemwise(fgraph, node):
    """A single-output, not in-place ``Elemwise`` with a ufunc of its arity -> ``NumpyElemwise``."""
    op = node.op
    spec = op.nfunc_spec
    if (type(op) is not Elemwise or op.inplace_pattern or spec is None
            or spec[1] != len(node.inputs) or spec[2] != 1 or len(node.outputs) != 1):
        return None
    return [NumpyElemwise(op.scalar_op, nfunc_spec=spec)(*node.inputs)]


REWRITES = (
    (dfs_rewriter(split_variadic_add_mul), 49.5),
    (dfs_rewriter(cast_with_numpy), 49.55),
    (dfs_rewriter(fuse_conv_bias), 49.6),
    (dfs_rewriter(fuse_conv_relu), 49.7),
    (dfs_rewriter(lean_elemwise), 49.8),
)
"""``(rewriter, position)`` pairs for ``Mode.register``."""
