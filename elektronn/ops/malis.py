"""MALIS loss weights: how often each affinity edge is the maximin edge of a voxel pair.

MALIS (Turaga et al., 2009) trains an affinity graph through the edges that decide whether two
voxels end up in the same segment.  For every pair of voxels the *maximin edge* is the weakest
edge on the strongest path between them: the edge whose addition joins the two voxels when the
edges are added in order of decreasing weight (Kruskal's algorithm for the maximum spanning
tree).  When Kruskal's algorithm merges two components A and B with an edge, that edge is the
maximin edge of exactly the ``|A| * |B|`` pairs with one voxel in each component.

Two passes count these pairs per edge:

* positive pass: edge weights ``min(aff_pred, aff_gt)``; counts the pairs that share the same
  nonzero ground-truth segment id (per id, ``count_A[id] * count_B[id]``),
* negative pass: edge weights ``max(aff_pred, aff_gt)``, or ``aff_pred`` alone with
  ``unrestrict_neg``; counts the pairs with different nonzero ids.

Voxels of segment id 0 (background) take part in neither count.  The original ELEKTRONN used
the external C++ package ``ELEKTRONN/malis``; this module replaces it with a numba kernel.

Edge convention (that of ``malis.nodelist_from_shape`` / ``malis.seg_to_affgraph``): channel
``e`` of an affinity graph of shape ``(n_edges, z, x, y)`` at position ``v = (z, x, y)`` is the
edge between voxel ``v`` and voxel ``v + nhood[e]``.  With the default ``nhood = eye(3)``, the
channel-0 value at ``[z, x, y]`` is the edge between ``(z, x, y)`` and ``(z + 1, x, y)``; the
entries whose partner lies outside the volume (here the last z-slice of channel 0) are no
edges and always get count 0.  Pass ``nhood = -eye(3)`` for the opposite convention.
"""

import functools

import numba
import numpy as np
import pytensor.tensor as pt
from numba import types
from numba.typed import Dict
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor.type import integer_dtypes

from elektronn.ops._common import as_float32, check_ndim

__all__ = ["NHOOD_3D", "MalisWeights", "edge_partners", "malis_weights", "maximin_counts"]

NHOOD_3D = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
"""The neighbourhood of ELEKTRONN's MALIS layer: one edge per axis (z, x, y)."""


def _as_nhood(nhood):
    """``nhood`` as a hashable tuple of integer offset tuples, validated."""
    arr = np.asarray(nhood)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.dtype.kind not in "iub":
        raise ValueError(f"nhood must be an integer array of shape (n_edges, ndim), got {nhood!r}")
    return tuple(tuple(int(o) for o in row) for row in arr)


@functools.lru_cache(maxsize=16)
def edge_partners(shape, nhood=NHOOD_3D):
    """Flat index of the far end of every edge of an affinity graph.

    Parameters
    ----------
    shape : tuple of int
        Shape of the volume, e.g. ``(z, x, y)``.
    nhood : tuple of tuple of int
        Offsets ``(n_edges, len(shape))``; edge ``e`` at voxel ``v`` joins ``v`` and
        ``v + nhood[e]``.

    Returns
    -------
    ndarray of int64, shape ``(n_edges,) + shape``
        The flat index of ``v + nhood[e]``, or -1 where it lies outside the volume (no edge).
        The near end of flat edge index ``i`` is voxel ``i % prod(shape)``.  Cached, read-only.
    """
    nodes = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    partners = np.full((len(nhood),) + tuple(shape), -1, dtype=np.int64)
    for e, offset in enumerate(nhood):
        if len(offset) != len(shape):
            raise ValueError(f"nhood offsets must have {len(shape)} entries, got {offset}")
        bounds = [(max(0, -o), min(size, size - o)) for size, o in zip(shape, offset, strict=True)]
        if all(lo < hi for lo, hi in bounds):
            here = tuple(slice(lo, hi) for lo, hi in bounds)
            there = tuple(slice(lo + o, hi + o) for (lo, hi), o in zip(bounds, offset, strict=True))
            partners[(e, *here)] = nodes[there]
    partners.flags.writeable = False
    return partners


@numba.njit(cache=True)
def _find(parent, v):
    while parent[v] != v:
        parent[v] = parent[parent[v]]
        v = parent[v]
    return v


@numba.njit(cache=True)
def _kruskal_counts(order, partners, seg, n_ids, positive):
    """Pair counts per edge for one pass; ``seg`` holds compact ids 1..n_ids, 0 = background.

    ``order`` lists the flat indices of the edges to add, strongest first; edge ``i`` joins
    voxels ``i % seg.size`` and ``partners[i]``.

    Every component keeps a sparse histogram of its segment ids as a linked list of entries
    (``head``/``entry_next``), found by ``(root, id)`` in ``lookup``.  A merge walks the shorter
    list and moves or adds its entries into the other component.
    """
    n_vert = seg.size
    parent = np.arange(n_vert)
    head = np.full(n_vert, -1, dtype=np.int64)
    n_entries = np.zeros(n_vert, dtype=np.int64)
    total = np.zeros(n_vert, dtype=np.int64)
    entry_id = np.zeros(n_vert, dtype=np.int64)
    entry_count = np.zeros(n_vert, dtype=np.int64)
    entry_next = np.full(n_vert, -1, dtype=np.int64)
    lookup = Dict.empty(key_type=types.int64, value_type=types.int64)
    stride = n_ids + 1
    for v in range(n_vert):
        if seg[v] != 0:
            head[v] = v
            n_entries[v] = 1
            total[v] = 1
            entry_id[v] = seg[v]
            entry_count[v] = 1
            lookup[v * stride + seg[v]] = v

    counts = np.zeros(partners.size, dtype=np.int64)
    for edge in order:
        a = _find(parent, edge % n_vert)
        b = _find(parent, partners[edge])
        if a == b:
            continue
        if n_entries[a] > n_entries[b]:
            a, b = b, a
        same = 0
        i = head[a]
        while i != -1:
            following = entry_next[i]
            key = b * stride + entry_id[i]
            if key in lookup:
                j = lookup[key]
                same += entry_count[i] * entry_count[j]
                entry_count[j] += entry_count[i]
            else:
                entry_next[i] = head[b]
                head[b] = i
                lookup[key] = i
                n_entries[b] += 1
            i = following
        counts[edge] = same if positive else total[a] * total[b] - same
        total[b] += total[a]
        parent[a] = b
    return counts


def maximin_counts(weights, seg, nhood=NHOOD_3D, positive=True):
    """Count, per edge, the voxel pairs whose maximin edge it is (one MALIS pass).

    Parameters
    ----------
    weights : ndarray, shape ``(n_edges,) + seg.shape``
        Edge weights; edges are added in order of decreasing weight, ties in order of the flat
        edge index (the original's C++ ``std::sort`` left tie order unspecified).
    seg : ndarray of int
        Ground-truth segment ids; 0 is background and is never counted.
    nhood : tuple of tuple of int
        Edge offsets, see :func:`edge_partners`.
    positive : bool
        Count pairs with the same id (True) or with different ids (False).

    Returns
    -------
    ndarray of int64, shape of ``weights``
    """
    seg = np.asarray(seg)
    partners = edge_partners(seg.shape, _as_nhood(nhood)).reshape(-1)
    flat_w = np.asarray(weights).reshape(-1)
    if flat_w.size != partners.size:
        raise ValueError(f"weights must have {partners.size} entries, got {flat_w.size}")
    edges = np.flatnonzero(partners >= 0)
    order = edges[np.argsort(-flat_w[edges], kind="stable")]
    ids, compact = np.unique(seg.reshape(-1), return_inverse=True)
    compact = np.where(seg.reshape(-1) == 0, 0, compact + 1).astype(np.int64)
    counts = _kruskal_counts(order, partners, compact, len(ids), bool(positive))
    return counts.reshape((-1,) + seg.shape)


def malis_weights(aff_pred, aff_gt, seg_gt, nhood=NHOOD_3D, unrestrict_neg=True):
    """MALIS positive and negative pair counts per edge (numpy).

    Parameters
    ----------
    aff_pred : ndarray of float, shape ``(n_edges, z, x, y)``
        Predicted affinities (1: connected, 0: disconnected).
    aff_gt : ndarray of int, same shape
        Ground-truth affinities.
    seg_gt : ndarray of int, shape ``(z, x, y)``
        Ground-truth segment ids, 0 = background (ignored).
    nhood : array_like of int, shape ``(n_edges, 3)``
        Edge offsets (default ``eye(3)``); see the module docstring for the convention.
    unrestrict_neg : bool
        Negative pass on ``aff_pred`` alone instead of ``max(aff_pred, aff_gt)``.

    Returns
    -------
    pos, neg : ndarray of float32, shape of ``aff_pred``
        Pairs that should be connected / separated whose maximin edge each edge is.
    """
    aff_pred = np.asarray(aff_pred, dtype=np.float32)
    aff_gt = np.asarray(aff_gt).astype(np.float32)
    if aff_gt.shape != aff_pred.shape or aff_pred.shape[1:] != np.shape(seg_gt):
        raise ValueError(
            f"aff_pred {aff_pred.shape} and aff_gt {aff_gt.shape} must both have the shape "
            f"(n_edges,) + seg_gt.shape, seg_gt has shape {np.shape(seg_gt)}"
        )
    nhood = _as_nhood(nhood)
    if aff_pred.shape[0] != len(nhood):
        raise ValueError(f"aff_pred has {aff_pred.shape[0]} edge channels, nhood {len(nhood)}")
    neg_weights = aff_pred if unrestrict_neg else np.maximum(aff_pred, aff_gt)
    pos = maximin_counts(np.minimum(aff_pred, aff_gt), seg_gt, nhood, positive=True)
    neg = maximin_counts(neg_weights, seg_gt, nhood, positive=False)
    return pos.astype(np.float32), neg.astype(np.float32)


def _check_int(var, name):
    if var.dtype not in integer_dtypes:
        raise ValueError(f"{name} must have an integer dtype, got {var.dtype}")


class MalisWeights(Op):
    """PyTensor Op computing :func:`malis_weights`; the counts are constants for gradients.

    Parameters
    ----------
    unrestrict_neg : bool
        See :func:`malis_weights` (default True, as ``MalisLayer.NLL_Malis``).
    nhood : array_like of int, shape ``(n_edges, 3)``
        Edge offsets, default ``eye(3)``.

    Notes
    -----
    Inputs ``aff_pred`` (float32, ``(n_edges, z, x, y)``), ``aff_gt`` (integer, same shape) and
    ``seg_gt`` (integer, ``(z, x, y)``); outputs ``pos`` and ``neg`` (float32, shape of
    ``aff_pred``).  The outputs do not depend differentiably on any input, as in the original:
    gradients through them are disconnected.
    """

    __props__ = ("unrestrict_neg", "nhood")

    def __init__(self, unrestrict_neg=True, nhood=NHOOD_3D):
        self.unrestrict_neg = bool(unrestrict_neg)
        self.nhood = _as_nhood(nhood)

    def make_node(self, aff_pred, aff_gt, seg_gt):
        ndim = len(self.nhood[0])
        aff_pred = as_float32(aff_pred, "aff_pred")
        aff_gt = pt.as_tensor_variable(aff_gt)
        seg_gt = pt.as_tensor_variable(seg_gt)
        layout = "(n_edges, z, x, y)"
        check_ndim(aff_pred, "aff_pred", ndim=ndim + 1, layout=layout)
        check_ndim(aff_gt, "aff_gt", ndim=ndim + 1, layout=layout)
        check_ndim(seg_gt, "seg_gt", ndim=ndim, layout="(z, x, y)")
        _check_int(aff_gt, "aff_gt")
        _check_int(seg_gt, "seg_gt")
        n_edges = aff_pred.type.shape[0]
        if n_edges is not None and n_edges != len(self.nhood):
            raise ValueError(
                f"aff_pred has {n_edges} edge channels but nhood has {len(self.nhood)}"
            )
        out = pt.tensor(dtype="float32", shape=aff_pred.type.shape)
        return Apply(self, [aff_pred, aff_gt, seg_gt], [out, out.type()])

    def perform(self, node, inputs, output_storage):
        pos, neg = malis_weights(*inputs, nhood=self.nhood, unrestrict_neg=self.unrestrict_neg)
        output_storage[0][0] = pos
        output_storage[1][0] = neg

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], shapes[0]]

    def connection_pattern(self, node):
        return [[False, False]] * 3

    def pullback(self, inputs, outputs, cotangents):
        return [disconnected_type() for _ in inputs]
