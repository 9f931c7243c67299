"""Graph rewrites that make PyTensor graphs fast to run as Python/numpy (the ``"numpy"`` mode).

In :mod:`elektronn.backend`'s default mode every node runs through its Python ``perform``.
PyTensor's ``Elemwise.perform`` calls one numpy ufunc when its scalar Op names one and the node
has as many inputs as the ufunc; otherwise it loops over the elements in Python
(``np.frompyfunc``).  These rewrites keep every elementwise node on a ufunc, and on a lean path:

* :func:`split_variadic_add_mul`: ``add(a, b, c)`` / ``mul(a, b, c)`` become chains of binary
  ones (PyTensor's canonical form collects sums and products into one variadic node);
* :func:`cast_with_numpy`: a cast calls the numpy scalar type, ``np.float32(x)``;
* :func:`sum_all_float64`: a float64 sum of float64 sums of whole arrays (the optimisers'
  guard against non-finite loss and gradients) becomes one :class:`SumAll` node instead of two
  nodes per array;
* :func:`lean_elemwise`: single-output nodes become :class:`NumpyElemwise`, whose ``perform``
  is just the ufunc call (8 us -> 2 us per node: most nodes of a small net's training step are
  elementwise).

:class:`NumpyLinker` then runs the rewritten graph as one generated Python function with a
line per node (elementwise nodes, sums and dimension shuffles as direct numpy calls, every other
node through its ``perform``), instead of PyTensor's virtual machine calling a thunk per node.

:data:`REWRITES` lists them with their positions in PyTensor's rewrite sequence (after its
``fast_run`` rewrites; Elemwise fusion and in-place elementwise rewrites are off in this mode).
"""

import time

import numpy as np
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.link.basic import JITLinker
from pytensor.link.c.op import COp
from pytensor.scalar import Add, Cast, Mul
from pytensor.tensor.elemwise import CAReduce, DimShuffle, Elemwise
from pytensor.tensor.math import Sum
from pytensor.tensor.shape import SpecifyShape
from pytensor.tensor.type import scalar
from pytensor.tensor.type_other import NoneTypeT

from elektronn.ops.fusion import fuse_conv_bias, fuse_conv_relu

__all__ = ["NumpyElemwise", "NumpyLinker", "SumAll", "split_variadic_add_mul", "cast_with_numpy",
           "sum_all_float64", "lean_elemwise", "REWRITES"]


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


class SumAll(Op):
    """The float64 sum of every element of every input (``0-d float64``).

    Each input is summed in float64 by one ``add.reduce``, then the sums are added in order.
    """

    __props__ = ()

    def make_node(self, *arrays):
        return Apply(self, list(arrays), [scalar(dtype="float64")])

    def perform(self, node, inputs, output_storage):
        total = 0.0
        for a in inputs:
            total += np.add.reduce(a, axis=None, dtype=np.float64)
        output_storage[0][0] = np.asarray(total, dtype=np.float64)


def _float64_terms(var):
    """The arrays whose float64 sums add up to the 0-d float64 ``var`` (flattening ``add``s)."""
    node = var.owner
    if node is not None and isinstance(node.op, Elemwise) and var.ndim == 0:
        if isinstance(node.op.scalar_op, Add) and var.dtype == "float64":
            return [a for term in node.inputs for a in _float64_terms(term)]
        if isinstance(node.op.scalar_op, Cast) and node.inputs[0].ndim == 0:
            return [node.inputs[0]]
    if node is not None and isinstance(node.op, Sum) and node.op.axis in (None, tuple(
            range(node.inputs[0].ndim))) and node.op.acc_dtype in (None, "float64"):
        return [node.inputs[0]]
    return [var]


@node_rewriter([Elemwise])
def sum_all_float64(fgraph, node):
    """A 0-d float64 ``add`` of whole-array float64 sums (and casts) -> :class:`SumAll`."""
    out = node.outputs[0]
    if (not isinstance(node.op.scalar_op, Add) or out.dtype != "float64" or out.ndim != 0
            or any(v.ndim != 0 or v.dtype != "float64" for v in node.inputs)):
        return None
    terms = _float64_terms(out)
    if sum(t.ndim > 0 for t in terms) < 2:
        return None
    return [SumAll()(*terms)]


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
    (dfs_rewriter(sum_all_float64), 49.45),
    (dfs_rewriter(split_variadic_add_mul), 49.5),
    (dfs_rewriter(cast_with_numpy), 49.55),
    (dfs_rewriter(fuse_conv_bias), 49.6),
    (dfs_rewriter(fuse_conv_relu), 49.7),
    (dfs_rewriter(lean_elemwise), 49.8),
)
"""``(rewriter, position)`` pairs for ``Mode.register``."""


class NumpyLinker(JITLinker):
    """Runs a graph as one generated Python function: a line of numpy per node.

    PyTensor's virtual machine calls a thunk per node, which reads its inputs from and writes
    its outputs to storage cells and marks them computed: about 2 us per node on top of the
    node's own work, which decides the speed of small nets (a training step has 150-200
    nodes).  Here the nodes run in PyTensor's order as plain Python statements on local
    variables, each deleted after its last use (as the virtual machine frees intermediate
    results).  :class:`NumpyElemwise` nodes call their ufunc, sums and other reductions call
    ``ufunc.reduce``, dimension shuffles are a ``transpose`` and an index; other nodes call
    their ``perform`` (or, for Ops with their own thunks, that thunk).  Floating-point warnings
    are silenced for the whole function, as ``Elemwise.perform`` does per node.
    """

    def fgraph_convert(self, fgraph, order, input_storage, output_storage, storage_map,
                       **kwargs):
        return _python_function(fgraph, order, storage_map)

    def jit_compile(self, fn):
        return fn

    def create_thunk_inputs(self, storage_map):
        return [storage_map[v] for v in self.fgraph.inputs]


def _plain_perform(op):
    """Whether ``op`` runs through ``perform`` in Python (its thunk is PyTensor's generic one)."""
    return type(op).make_thunk in (Op.make_thunk, COp.make_thunk)


def _python_function(fgraph, order, storage_map, timings=None):
    """Generate the function ``(*inputs) -> tuple of outputs`` of :class:`NumpyLinker`.

    ``timings``: a float64 array of ``len(order)`` entries; if given, the function adds the
    thread CPU time of node ``i`` (in ns) to ``timings[i]`` (for profiling, see
    ``benchmarks/profile_step.py``).
    """
    names, env, lines = {}, {"asarray": np.asarray, "errstate": np.errstate}, []
    if timings is not None:
        env.update(_clock=time.thread_time_ns, _timings=timings)

    def name(var):
        if var not in names:
            if var.owner is None and var not in fgraph.inputs:  # a constant
                names[var] = f"k{len(env)}"
                env[names[var]] = var.data
            else:
                names[var] = f"v{len(names)}"
        return names[var]

    args = [name(v) for v in fgraph.inputs]
    last_use = {}
    for i, node in enumerate(order):
        for var in node.inputs:
            last_use[var] = i
    keep = set(fgraph.outputs) | set(fgraph.inputs)
    for i, node in enumerate(order):
        if timings is not None:
            lines.append("_t0 = _clock()")
        ins = ", ".join(name(v) for v in node.inputs)
        outs = [name(v) for v in node.outputs]
        op, tag = node.op, f"n{i}"
        if type(op) is NumpyElemwise:
            op.nfunc is None and op.prepare_node(node, None, None, "py")
            env[tag], env[tag + "t"] = op.nfunc, np.dtype(node.outputs[0].dtype)
            lines.append(f"{outs[0]} = asarray({tag}({ins}), {tag}t)")
        elif (type(op) is CAReduce or isinstance(op, CAReduce) and type(op).perform is
              CAReduce.perform) and op.scalar_op.nfunc_spec is not None:
            acc = op.acc_dtype or node.outputs[0].dtype
            # perform converts the input to acc first; reduce(dtype=acc) converts on the fly
            # (as many float64 additions, without a float64 copy of the input)
            env[tag], env[tag + "a"] = op.ufunc.reduce, np.dtype(acc)
            env[tag + "t"] = np.dtype(node.outputs[0].dtype)
            lines.append(f"{outs[0]} = asarray({tag}({ins}, axis={op.axis!r}, dtype={tag}a), "
                         f"{tag}t)")
        elif type(op) is DimShuffle and node.outputs[0].ndim > 0:
            index = ["None" if d == "x" else ":" for d in op.new_order] + ["0"] * len(op.drop)
            moved = op._transposition != tuple(range(node.inputs[0].ndim))
            src = f"{ins}.transpose({op._transposition!r})" if moved else ins
            lines.append(f"{outs[0]} = {src}[{', '.join(index)},]")
        elif type(op) is SpecifyShape and all(isinstance(v, Constant) for v in node.inputs[1:]):
            # the input itself when its shape matches; else perform raises the error
            shape = tuple(None if isinstance(v.type, NoneTypeT) else int(v.data)
                          for v in node.inputs[1:])
            env[tag], env[tag + "n"] = op.perform, node
            ok = " and ".join([f"{name(node.inputs[0])}.ndim == {len(shape)}"] + [
                f"{name(node.inputs[0])}.shape[{d}] == {n}" for d, n in enumerate(shape)
                if n is not None])
            lines.append(f"if not ({ok}): {tag}({tag}n, [{ins}], [[None]])")
            lines.append(f"{outs[0]} = {name(node.inputs[0])}")
        elif _plain_perform(op):
            op.prepare_node(node, None, None, "py")
            env[tag], env[tag + "n"] = op.perform, node
            lines.append(f"{tag}s = [[None] for _ in range({len(outs)})]")
            lines.append(f"{tag}({tag}n, [{ins}], {tag}s)")
            lines.append(f"{', '.join(outs)}, = [s[0] for s in {tag}s]")
        else:  # an Op with its own thunk: it reads and writes its cells in storage_map
            compute_map = {v: [v.owner is None] for v in node.inputs + node.outputs}
            thunk = op.make_thunk(node, storage_map, compute_map, [], impl="py")
            env[tag] = thunk
            for j, var in enumerate(node.inputs):
                env[f"{tag}i{j}"] = storage_map[var]
                lines.append(f"{tag}i{j}[0] = {name(var)}")
            lines.append(f"{tag}()")
            for j, var in enumerate(node.outputs):
                env[f"{tag}o{j}"] = storage_map[var]
                lines.append(f"{outs[j]} = {tag}o{j}[0]; {tag}o{j}[0] = None")
            # free the cells of intermediate results (those of inputs and constants belong
            # to the function and to the graph)
            lines += [f"{tag}i{j}[0] = None" for j, var in enumerate(node.inputs)
                      if var.owner is not None]
        if timings is not None:
            lines.append(f"_timings[{i}] += _clock() - _t0")
        dead = sorted({names[v] for v in node.inputs if last_use[v] == i and v not in keep
                       and v.owner is not None}
                      | {names[v] for v in node.outputs if v not in last_use and v not in keep})
        if dead:
            lines.append(f"del {', '.join(dead)}")
    result = "".join(f"{name(v)}, " for v in fgraph.outputs)
    body = "\n        ".join(lines + [f"return ({result})"])
    src = f"def numpy_graph({', '.join(args)}):\n    with errstate(all='ignore'):\n        {body}\n"
    exec(compile(src, f"<elektronn numpy graph {id(fgraph):x}>", "exec"), env)  # noqa: S102
    fn = env["numpy_graph"]
    fn.source = src
    return fn
