"""Pooling and maxout Ops against loop references, with gradient checks."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from elektronn import backend, ops
from elektronn.ops import _kernels, reference
from tests.conftest import assert_numpy_fallback_matches, distinct


def loop_pool(x, ws, mode):
    """Pool by visiting every window explicitly."""
    nd = len(ws)
    lead = x.shape[: x.ndim - nd]
    osh = tuple(s // p for s, p in zip(x.shape[x.ndim - nd :], ws))
    out = np.empty(lead + osh, x.dtype)
    for li in np.ndindex(*lead):
        for oi in itertools.product(*(range(o) for o in osh)):
            win = x[li + tuple(slice(i * p, (i + 1) * p) for i, p in zip(oi, ws))].ravel()
            if mode == "max":
                out[li + oi] = win.max()
            else:  # largest magnitude, sign kept, ties to the positive value
                m = np.abs(win).max()
                out[li + oi] = m if m in win else -m
    return out


def compile1(fn, ndim):
    x = pt.tensor("x", shape=(None,) * ndim)
    return pytensor.function([x], fn(x), mode=backend.get_mode())


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize(
    "shape, ws",
    [((2, 3, 4, 6), (2, 3)), ((1, 2, 6, 4, 9), (3, 1, 3)), ((2, 1, 4, 6, 6), (1, 2, 2))],
)
def test_pool_matches_loop(rng, mode, shape, ws):
    x = rng.standard_normal(shape).astype(np.float32)
    f = compile1(lambda v: ops.pool(v, ws, mode), len(shape))
    np.testing.assert_array_equal(f(x), loop_pool(x, ws, mode))


def test_maxabs_sign_and_ties():
    x = np.array([[[[-3.0, 2.0], [1.0, 0.5]], [[2.0, -2.0], [0.0, 1.0]]]], np.float32)
    x = x.reshape(1, 1, 2, 4)  # windows of 2x2 along the last two axes after reshape below
    f = compile1(lambda v: ops.pool(v, (1, 2), "maxabs"), 4)
    np.testing.assert_array_equal(f(x), [[[[-3.0, 1.0], [2.0, 1.0]]]])
    tie = np.array([[[[-2.0, 2.0, 2.0, -2.0]]]], np.float32)
    np.testing.assert_array_equal(f(tie), [[[[2.0, 2.0]]]])


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize("shape, ws", [((2, 2, 4, 6), (2, 3)), ((1, 2, 3, 4, 6), (3, 1, 2))])
def test_pool_verify_grad(rng, mode, shape, ws):
    x = distinct(rng, shape) * rng.choice([-1, 1], shape).astype(np.float32)
    verify_grad(lambda v: ops.pool(v, ws, mode), [x], rng=rng, eps=1e-3, mode=backend.get_mode())


def test_pool_grad_ties_all_get_gradient():
    x = pt.tensor4("x")
    g = pytensor.grad(ops.pool(x, (2, 2)).sum(), x)
    f = pytensor.function([x], g, mode=backend.get_mode())
    val = np.array([[[[1, 1], [0, 1]]]], np.float32)
    np.testing.assert_array_equal(f(val), [[[[1, 1], [0, 1]]]])


def test_pool_second_derivative(rng):
    """The gradient of the pooling gradient w.r.t. the output gradient (a masked sum-pool)."""
    x = distinct(rng, (1, 2, 4, 6))
    g = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
    y = ops.pool(pt.constant(x), (2, 3))
    verify_grad(lambda gv: ops.PoolGrad((2, 3))(pt.constant(x), y, gv), [g], rng=rng,
                mode=backend.get_mode())


def test_pool_errors():
    msg = "axis 3 has size 5, which is not divisible by its pool factor 2"
    with pytest.raises(ValueError, match=msg):
        ops.pool(pt.tensor("x", shape=(1, 1, 4, 5)), (2, 2))
    with pytest.raises(ValueError, match="pooling mode must be one of"):
        ops.pool(pt.tensor4("x"), (2, 2), "mean")
    with pytest.raises(ValueError, match="positive ints"):
        ops.pool(pt.tensor4("x"), (0, 2))
    f = compile1(lambda v: ops.pool(v, (2, 2)), 4)
    with pytest.raises(ValueError, match="not divisible"):
        f(np.zeros((1, 1, 3, 4), np.float32))


@pytest.mark.parametrize("axis, shape", [(1, (2, 6, 3, 4)), (2, (2, 3, 6, 4, 5))])
def test_maxout(rng, axis, shape):
    x = distinct(rng, shape)
    f = compile1(lambda v: ops.maxout(v, 3, axis=axis), len(shape))
    moved = np.moveaxis(x, axis, -1)
    ref = np.moveaxis(moved.reshape(moved.shape[:-1] + (-1, 3)).max(-1), -1, axis)
    np.testing.assert_array_equal(f(x), ref)
    verify_grad(lambda v: ops.maxout(v, 3, axis=axis), [x], rng=rng, eps=1e-3,
                mode=backend.get_mode())
    with pytest.raises(ValueError, match="maxout factor"):
        ops.maxout(pt.tensor4("x"), 1)


def check_kernels(x, ws, mode, rng):
    """The C pooling and its gradient equal the numpy references exactly."""
    y = _kernels.pool(x, ws, mode)
    np.testing.assert_array_equal(y, reference.pool(x, ws, mode))
    assert y.dtype == np.float32
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = _kernels.pool_grad(x, y, g, ws)
    np.testing.assert_array_equal(gx, reference.pool_grad(x, y, g, ws))


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize(
    "shape, ws",
    [
        ((5, 3, 24, 26), (2, 2)),  # rows of 12 and 13 outputs: vector blocks, last one shifted
        ((2, 3, 4, 6, 36), (1, 2, 2)),
        ((3, 16, 8), (2, 1)),  # last-axis factor 1
        ((2, 2, 9, 30), (3, 3)),  # factor 3: scalar code
        ((7, 40), (2,)),  # one pooled axis, as maxout uses
        ((6, 4), (2, 2)),  # no leading axes
    ],
)
def test_c_kernels_match_reference(c_kernels, rng, mode, shape, ws):
    """Small integers, so most windows hold ties (all of them must get the gradient)."""
    check_kernels(rng.integers(-3, 4, shape).astype(np.float32), ws, mode, rng)


@pytest.mark.parametrize("mode", ["max", "maxabs"])
def test_c_kernels_random_shapes(c_kernels, rng, mode):
    for _ in range(20):
        ws = tuple(int(p) for p in rng.integers(1, 4, rng.integers(2, 4)))
        lead = tuple(int(s) for s in rng.integers(1, 4, rng.integers(0, 3)))
        shape = lead + tuple(int(p * rng.integers(1, 20)) for p in ws)
        check_kernels(rng.integers(-3, 4, shape).astype(np.float32), ws, mode, rng)


@pytest.mark.parametrize("mode", ["max", "maxabs"])
def test_c_kernels_nan_propagates(c_kernels, rng, mode):
    x = rng.standard_normal((2, 3, 8, 36)).astype(np.float32)
    x[0, 1, 3, 17] = x[1, 2, 6, 0] = np.nan
    x[1, 0, 2, 5] = np.inf
    check_kernels(x, (2, 2), mode, rng)


def test_c_kernels_plans_and_layouts(c_kernels, rng):
    """One shape pooled by max, maxabs and MFP in turn (each its own plan), from a strided
    float64 view: the results of the reference on its float32 copy."""
    base = rng.integers(-3, 4, (2, 3, 12, 20)).astype(np.float64)
    x = base[:, ::-1, :, ::2]
    xc = np.ascontiguousarray(x, dtype=np.float32)
    for _ in range(2):
        for mode in ("max", "maxabs"):
            np.testing.assert_array_equal(_kernels.pool(x, (2, 2), mode),
                                          reference.pool(xc, (2, 2), mode))
            np.testing.assert_array_equal(_kernels.mfp(x[..., :11, :9], (2, 2), mode),
                                          reference.mfp(xc[..., :11, :9], (2, 2), mode))
        y = _kernels.pool(xc, (2, 2))
        g = rng.standard_normal(y.shape + (2,))[..., 0]  # strided float64
        np.testing.assert_array_equal(_kernels.pool_grad(x, y, g, (2, 2)),
                                      reference.pool_grad(xc, y, g.astype(np.float32), (2, 2)))


def test_c_kernels_check_gradient_shapes(c_kernels):
    x = np.zeros((2, 4, 6), np.float32)
    y = _kernels.pool(x, (2, 2))
    with pytest.raises(ValueError, match=r"gradient must have the pooled shape \(2, 2, 3\)"):
        _kernels.pool_grad(x, y, y[:, :1], (2, 2))


def test_numpy_fallback(rng, monkeypatch):
    """Without the C library the Ops run the numpy references, with the same results."""
    x = rng.integers(-3, 4, (3, 2, 8, 18)).astype(np.float32)
    xv = pt.tensor4("x")
    y = ops.pool(xv, (2, 2), "maxabs")
    f = pytensor.function([xv], [y, pytensor.grad((y * y).sum(), xv)], mode=backend.get_mode())
    assert_numpy_fallback_matches(f, x, monkeypatch)
