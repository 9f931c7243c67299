"""Max-fragment pooling, its bookkeeping and the reassembly into dense maps."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from elektronn import backend, ops
from elektronn.ops import _kernels, reference
from tests.conftest import assert_numpy_fallback_matches, distinct


def sliding_pool(x, ws, mode="max"):
    """Stride-1 pooling with window ``ws`` over the trailing axes (what MFP + reassembly equal)."""
    nd = len(ws)
    osh = tuple(s - p + 1 for s, p in zip(x.shape[x.ndim - nd :], ws))
    lead = x.shape[: x.ndim - nd]
    out = np.empty(lead + osh, np.float32)
    for oi in np.ndindex(*osh):
        win = x[(Ellipsis,) + tuple(slice(i, i + p) for i, p in zip(oi, ws))]
        win = win.reshape(lead + (-1,))
        hi, lo = win.max(-1), win.min(-1)
        out[(Ellipsis,) + oi] = hi if mode == "max" else np.where(hi >= -lo, hi, lo)
    return out


def test_fragment_offsets_worked_example():
    """docs/mfp.md: two MFP layers with pool (2, 2), starting from batch 1."""
    o1, s1 = ops.fragment_offsets(None, None, (2, 2))
    assert o1.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and s1.tolist() == [2, 2]
    o2, s2 = ops.fragment_offsets(o1, s1, (2, 2))
    assert o2.tolist() == [
        [0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3],
        [2, 0], [2, 1], [3, 0], [3, 1], [2, 2], [2, 3], [3, 2], [3, 3],
    ]
    assert s2.tolist() == [4, 4]
    o3, s3 = ops.fragment_offsets(o2, s2, (1, 1))  # pool 1: a trivial one-phase pass
    assert o3.tolist() == o2.tolist() and s3.tolist() == [4, 4]


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize(
    "shape, ws",
    [((1, 2, 7, 9), (2, 2)), ((2, 3, 5, 8, 7), (3, 1, 2)), ((1, 1, 3, 11, 5), (1, 3, 3))],
)
def test_mfp_then_dense_equals_sliding_pool(rng, mode, shape, ws):
    x = rng.standard_normal(shape).astype(np.float32)
    offs, strides = ops.fragment_offsets(None, None, ws)
    xv = pt.tensor("x", shape=(None,) * len(shape))
    frags = ops.max_fragment_pool(xv, ws, mode)
    dense = ops.fragments_to_dense(frags, offs, strides)
    f = pytensor.function([xv], [frags, dense], mode=backend.get_mode())
    fr, de = f(x)
    bs = shape[0]
    assert fr.shape[0] == bs * int(np.prod(ws))
    np.testing.assert_array_equal(de, sliding_pool(x, ws, mode))
    # fragment f of example b sits at batch index f * bs + b and holds phase offs[f]
    for i, o in enumerate(offs):
        sl = (slice(None), slice(None)) + tuple(
            slice(int(a), None, int(s)) for a, s in zip(o, strides))
        np.testing.assert_array_equal(fr[i * bs:(i + 1) * bs], de[sl])


def test_two_mfp_layers_reassemble_to_stride1(rng):
    x = rng.standard_normal((1, 2, 11, 11)).astype(np.float32)
    o1, s1 = ops.fragment_offsets(None, None, (2, 2))
    o2, s2 = ops.fragment_offsets(o1, s1, (2, 2))
    xv = pt.tensor4("x")
    y = ops.max_fragment_pool(ops.max_fragment_pool(xv, (2, 2)), (2, 2))
    f = pytensor.function([xv], ops.fragments_to_dense(y, o2, s2), mode=backend.get_mode())
    # two stride-1 poolings, the second one dilated by 2 (the dense equivalent of MFP)
    first = sliding_pool(x, (2, 2))
    second = np.maximum.reduce([first[..., i::1, :][..., : first.shape[2] - 2, :] for i in (0, 2)])
    second = np.maximum(second[..., :-2], second[..., 2:])
    np.testing.assert_array_equal(f(x), second)


@pytest.mark.parametrize("mode", ["max", "maxabs"])
def test_mfp_verify_grad(rng, mode):
    x = distinct(rng, (2, 2, 5, 3, 8)) * rng.choice([-1, 1], (2, 2, 5, 3, 8)).astype(np.float32)
    verify_grad(lambda v: ops.max_fragment_pool(v, (2, 1, 3), mode), [x], rng=rng, eps=1e-3,
                mode=backend.get_mode())


def test_reassembly_inverse_and_grads(rng):
    o, s = ops.fragment_offsets(*ops.fragment_offsets(None, None, (1, 2, 2)), (3, 1, 2))
    frags = rng.standard_normal((2 * len(o), 3, 2, 4, 3)).astype(np.float32)
    v = pt.tensor5("v")
    f = pytensor.function(
        [v], ops.DenseToFragments(o, s)(ops.FragmentsToDense(o, s)(v)), mode=backend.get_mode()
    )
    np.testing.assert_array_equal(f(frags), frags)
    verify_grad(lambda t: ops.FragmentsToDense(o, s)(t), [frags], rng=rng, mode=backend.get_mode())
    dense = rng.standard_normal((1, 2, 6, 4, 8)).astype(np.float32)
    verify_grad(lambda t: ops.DenseToFragments(o, s)(t), [dense], rng=rng, mode=backend.get_mode())


def test_static_shapes():
    x = pt.tensor("x", shape=(1, 4, 7, 9))
    y = ops.max_fragment_pool(x, (2, 2))
    assert y.type.shape == (4, 4, 3, 4)
    o, s = ops.fragment_offsets(None, None, (2, 2))
    assert ops.fragments_to_dense(y, o, s).type.shape == (1, 4, 6, 8)


def test_mfp_errors():
    with pytest.raises(ValueError, match=r"axis 2 has size 8: max-fragment pooling with factor 2"):
        ops.max_fragment_pool(pt.tensor("x", shape=(1, 1, 8, 7)), (2, 2))
    with pytest.raises(ValueError, match="offsets must list each phase"):
        ops.FragmentsToDense([[0, 0], [0, 1]], (2, 2))
    with pytest.raises(ValueError, match="not a multiple of 4 fragments"):
        ops.fragments_to_dense(pt.tensor("x", shape=(3, 1, 2, 2)),
                               *ops.fragment_offsets(None, None, (2, 2)))
    with pytest.raises(ValueError, match="offsets must have shape"):
        ops.fragment_offsets([[0, 0, 0]], [1, 1], (2, 2))
    v = pt.tensor4("v")
    f = pytensor.function([v], ops.max_fragment_pool(v, (3, 1)), mode=backend.get_mode())
    with pytest.raises(ValueError, match="k\\*3\\+2"):
        f(np.zeros((1, 1, 6, 3), np.float32))


def check_kernels(x, ws, mode, rng):
    """The C max-fragment pooling and its gradient equal the numpy references exactly."""
    y = _kernels.mfp(x, ws, mode)
    np.testing.assert_array_equal(y, reference.mfp(x, ws, mode))
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = _kernels.mfp_grad(x, y, g, ws)
    # overlapping phases add up in the reference's order, so even the rounding is the same
    np.testing.assert_array_equal(gx, reference.mfp_grad(x, y, g, ws))


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize(
    "shape, ws",
    [
        ((1, 3, 7, 23), (2, 2)),  # fragment rows of 11 outputs: vector blocks, last one shifted
        ((2, 3, 5, 9, 27), (1, 2, 2)),
        ((3, 2, 8, 5, 19), (3, 1, 2)),
        ((2, 1, 5, 8, 11), (2, 3, 3)),  # last-axis factor 3: scalar code
        ((4, 31), (2,)),
    ],
)
def test_c_kernels_match_reference(c_kernels, rng, mode, shape, ws):
    """Small integers: ties within windows and across the overlapping phases."""
    check_kernels(rng.integers(-3, 4, shape).astype(np.float32), ws, mode, rng)


@pytest.mark.parametrize("mode", ["max", "maxabs"])
def test_c_kernels_random_shapes(c_kernels, rng, mode):
    """Sizes k*p + p - 1, of which every phase crops p - 1 elements."""
    for _ in range(20):
        ws = tuple(int(p) for p in rng.integers(1, 4, rng.integers(2, 4)))
        lead = tuple(int(s) for s in rng.integers(1, 4, rng.integers(1, 3)))
        shape = lead + tuple(int(p * rng.integers(1, 20) + p - 1) for p in ws)
        check_kernels(rng.integers(-3, 4, shape).astype(np.float32), ws, mode, rng)


def test_numpy_fallback(rng, monkeypatch):
    """Without the C library the Ops run the numpy references, with the same results."""
    x = rng.integers(-3, 4, (2, 2, 3, 9, 21)).astype(np.float32)
    xv = pt.tensor5("x")
    y = ops.max_fragment_pool(xv, (1, 2, 2))
    f = pytensor.function([xv], [y, pytensor.grad((y * y).sum(), xv)], mode=backend.get_mode())
    assert_numpy_fallback_matches(f, x, monkeypatch)
