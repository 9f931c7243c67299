"""Pooling and maxout Ops against loop references, with gradient checks."""

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from elektronn import backend, ops
from tests.conftest import distinct


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
