"""MALIS pair counts against a brute-force maximin reference, and the PyTensor Op."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.special import xlogy
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from elektronn import backend
from elektronn.ops.malis import NHOOD_3D, MalisWeights, edge_partners, malis_weights, maximin_counts

EYE = np.eye(3, dtype=np.int32)


def _edges(shape, nhood):
    """All edges as (flat edge index, voxel a, voxel b), enumerated by coordinates."""
    edges = []
    for e, offset in enumerate(nhood):
        for v in np.ndindex(shape):
            w = tuple(np.add(v, offset))
            if all(0 <= c < s for c, s in zip(w, shape, strict=True)):
                flat = np.ravel_multi_index((e, *v), (len(nhood), *shape))
                edges.append((flat, np.ravel_multi_index(v, shape), np.ravel_multi_index(w, shape)))
    return edges


def brute_force_counts(weights, seg, nhood, positive):
    """Maximin edge of every voxel pair: the edge at which the pair first becomes connected when
    edges are added strongest first (ties: lower flat index first), found by recomputing the
    connected components after every added edge."""
    n = seg.size
    edges = sorted(_edges(seg.shape, nhood), key=lambda t: (-weights.flat[t[0]], t[0]))
    counts = np.zeros(weights.shape, dtype=np.int64)
    ids = seg.reshape(-1)
    labels = np.arange(n)
    for i, (flat, _, _) in enumerate(edges):
        rows = [a for _, a, _ in edges[: i + 1]]
        cols = [b for _, _, b in edges[: i + 1]]
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        new = connected_components(graph, directed=False)[1]
        for u, v in itertools.combinations(range(n), 2):
            if new[u] == new[v] and labels[u] != labels[v] and ids[u] != 0 and ids[v] != 0:
                if (ids[u] == ids[v]) == positive:
                    counts.flat[flat] += 1
        labels = new
    return counts


def seg_to_aff(seg, nhood=EYE):
    """Ground-truth affinities in the module's convention: 1 where v and v + nhood[e] share a
    nonzero id."""
    aff = np.zeros((len(nhood), *seg.shape), dtype=np.int16)
    partners = edge_partners(seg.shape, tuple(map(tuple, nhood)))
    flat = seg.reshape(-1)
    for e in range(len(nhood)):
        p = partners[e].reshape(-1)
        ok = (p >= 0) & (flat != 0)
        same = np.zeros_like(ok)
        same[ok] = flat[ok] == flat[p[ok]]
        aff[e] = same.reshape(seg.shape)
    return aff


def pair_totals(seg):
    ids, sizes = np.unique(seg[seg != 0], return_counts=True)
    same = int((sizes * (sizes - 1) // 2).sum())
    n = int(sizes.sum())
    return same, n * (n - 1) // 2 - same


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_counts_match_brute_force(rng, positive, ties):
    for _ in range(3):
        seg = rng.integers(0, 4, (2, 3, 3))
        weights = rng.random((3, 2, 3, 3)).astype(np.float32)
        if ties:
            weights = np.round(weights * 2) / 2
        got = maximin_counts(weights, seg, EYE, positive=positive)
        np.testing.assert_array_equal(got, brute_force_counts(weights, seg, EYE, positive))


def test_counts_match_brute_force_other_neighbourhood(rng):
    nhood = np.array([[0, -1, 0], [0, 0, -1], [-1, 0, 0], [0, 1, 1]])
    seg = rng.integers(0, 3, (2, 3, 3))
    weights = rng.random((4, 2, 3, 3)).astype(np.float32)
    for positive in (True, False):
        got = maximin_counts(weights, seg, nhood, positive=positive)
        np.testing.assert_array_equal(got, brute_force_counts(weights, seg, nhood, positive))


@pytest.mark.parametrize("unrestrict_neg", [True, False])
def test_malis_weights_match_brute_force(rng, unrestrict_neg):
    seg = rng.integers(0, 3, (2, 3, 3))
    aff_gt = seg_to_aff(seg)
    aff_pred = rng.random((3, 2, 3, 3)).astype(np.float32)
    pos, neg = malis_weights(aff_pred, aff_gt, seg, EYE, unrestrict_neg=unrestrict_neg)
    neg_weights = aff_pred if unrestrict_neg else np.maximum(aff_pred, aff_gt)
    assert pos.dtype == neg.dtype == np.float32
    np.testing.assert_array_equal(
        pos, brute_force_counts(np.minimum(aff_pred, aff_gt), seg, EYE, True)
    )
    np.testing.assert_array_equal(neg, brute_force_counts(neg_weights, seg, EYE, False))


def test_edge_convention():
    """Channel 0 at [z, x, y] joins (z, x, y) and (z + 1, x, y); -eye(3) flips it."""
    seg = np.array([1, 1, 2]).reshape(3, 1, 1)
    weights = np.zeros((3, 3, 1, 1), dtype=np.float32)
    weights[0, :, 0, 0] = [0.9, 0.2, 0.5]
    pos = maximin_counts(weights, seg, EYE, positive=True)
    neg = maximin_counts(weights, seg, EYE, positive=False)
    np.testing.assert_array_equal(pos[0, :, 0, 0], [1, 0, 0])  # pair (0, 1) via edge z=0
    np.testing.assert_array_equal(neg[0, :, 0, 0], [0, 2, 0])  # pairs (0, 2), (1, 2) via z=1
    assert pos[1:].sum() == neg[1:].sum() == 0
    # with -eye(3) edge z joins z and z - 1: z=2 (0.5) joins voxels 1 and 2 first (pair (1, 2)),
    # then z=1 (0.2) joins voxel 0 to them (pair (0, 2)); z=0 is no edge
    flipped = maximin_counts(weights, seg, -EYE, positive=False)
    np.testing.assert_array_equal(flipped[0, :, 0, 0], [0, 1, 1])


def test_sums_and_unrestrict_neg(rng):
    seg = rng.integers(0, 5, (5, 8, 8))
    aff_gt = seg_to_aff(seg)
    aff_pred = rng.random((3, 5, 8, 8)).astype(np.float32)
    pos, neg = malis_weights(aff_pred, aff_gt, seg)
    pos_r, neg_r = malis_weights(aff_pred, aff_gt, seg, unrestrict_neg=False)
    same, different = pair_totals(seg)
    assert pos.sum() == pos_r.sum() == same
    assert neg.sum() == neg_r.sum() == different
    np.testing.assert_array_equal(pos, pos_r)
    assert not np.array_equal(neg, neg_r)


def test_background_only_gives_zero_counts(rng):
    pos, neg = malis_weights(
        rng.random((3, 2, 3, 4)), np.zeros((3, 2, 3, 4), int), np.zeros((2, 3, 4), int)
    )
    assert not pos.any() and not neg.any()


def test_pair_totals_on_a_training_patch(rng):
    seg = np.repeat(rng.integers(0, 30, (20, 10, 10)), 5, axis=1).repeat(5, axis=2)
    aff_gt = seg_to_aff(seg)
    aff_pred = rng.random((3, 20, 50, 50)).astype(np.float32)
    pos, neg = malis_weights(aff_pred, aff_gt, seg)
    assert (pos.sum(), neg.sum()) == pair_totals(seg)


# --- the Op ----------------------------------------------------------------------------------


def _inputs():
    return (
        pt.tensor("aff_pred", dtype="float32", shape=(None,) * 4),
        pt.tensor("aff_gt", dtype="int16", shape=(None,) * 4),
        pt.tensor("seg_gt", dtype="int16", shape=(None,) * 3),
    )


@pytest.mark.parametrize("unrestrict_neg", [True, False])
def test_op_matches_numpy_and_has_constant_counts(rng, unrestrict_neg):
    seg = rng.integers(0, 4, (3, 4, 5)).astype(np.int16)
    aff_gt = seg_to_aff(seg)
    aff_pred = rng.uniform(0.05, 1, (3, 3, 4, 5)).astype(np.float32)
    ap, ag, sg = _inputs()
    pos, neg = MalisWeights(unrestrict_neg=unrestrict_neg)(ap, ag, sg)
    loss = -xlogy(pos, ap).sum() - xlogy(neg, 1 - ap).sum()
    grad = pytensor.grad(loss, ap)
    f = pytensor.function([ap, ag, sg], [pos, neg, pos.shape, grad], mode=backend.get_mode())
    got_pos, got_neg, shape, got_grad = f(aff_pred, aff_gt, seg)
    want_pos, want_neg = malis_weights(aff_pred, aff_gt, seg, unrestrict_neg=unrestrict_neg)
    np.testing.assert_array_equal(got_pos, want_pos)
    np.testing.assert_array_equal(got_neg, want_neg)
    assert tuple(shape) == aff_pred.shape
    np.testing.assert_allclose(
        got_grad, -want_pos / aff_pred + want_neg / (1 - aff_pred), rtol=1e-5
    )


def test_op_props_infer_shape_and_disconnected_gradient():
    ap, ag, sg = _inputs()
    assert MalisWeights() == MalisWeights(True, NHOOD_3D)
    assert MalisWeights(False) != MalisWeights(True)
    pos, _ = MalisWeights()(ap, ag, sg)
    shape_of = pytensor.function([ap, ag, sg], pos.shape, mode=backend.get_mode())
    assert not any(isinstance(n.op, MalisWeights) for n in shape_of.maker.fgraph.toposort())
    empty = (
        np.zeros((3, 2, 3, 4), np.float32),
        np.zeros((1,) * 4, np.int16),
        np.zeros((1,) * 3, np.int16),
    )
    assert tuple(shape_of(*empty)) == (3, 2, 3, 4)
    with pytest.raises(pytensor.gradient.DisconnectedInputError):
        pytensor.grad(pos.sum(), ap)
    zero = pytensor.grad(pos.sum(), ap, disconnected_inputs="ignore")
    assert not pytensor.function([ap], zero, mode=backend.get_mode())(
        np.ones((3, 2, 2, 2), np.float32)
    ).any()


def test_make_node_validation():
    ap, ag, sg = _inputs()
    op = MalisWeights()
    with pytest.raises(ValueError, match="aff_pred must have 4 dimensions"):
        op(pt.tensor(dtype="float32", shape=(None,) * 3), ag, sg)
    with pytest.raises(ValueError, match="aff_pred must have dtype float32"):
        op(pt.tensor(dtype="float64", shape=(None,) * 4), ag, sg)
    with pytest.raises(ValueError, match="aff_gt must have an integer dtype"):
        op(ap, pt.tensor(dtype="float32", shape=(None,) * 4), sg)
    with pytest.raises(ValueError, match="seg_gt must have 3 dimensions"):
        op(ap, ag, pt.tensor(dtype="int16", shape=(None,) * 4))
    with pytest.raises(ValueError, match="seg_gt must have an integer dtype"):
        op(ap, ag, pt.tensor(dtype="float32", shape=(None,) * 3))
    with pytest.raises(ValueError, match="2 edge channels but nhood has 3"):
        op(pt.tensor(dtype="float32", shape=(2, None, None, None)), ag, sg)
    with pytest.raises(ValueError, match="nhood must be an integer array"):
        MalisWeights(nhood=[1, 0, 0])
    with pytest.raises(ValueError, match="must both have the shape"):
        malis_weights(np.zeros((3, 2, 2, 2)), np.zeros((3, 2, 2, 2), int), np.zeros((2, 2, 3), int))
