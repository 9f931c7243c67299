"""The rewrites of the "numpy" mode: lean elementwise nodes with PyTensor's semantics."""

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.elemwise import Elemwise

from elektronn import backend
from elektronn.ops.numpy_mode import NumpyElemwise


def both_modes(inputs, outputs, values):
    """Results in the numpy mode and in PyTensor's plain Python mode, and the numpy graph."""
    fast = pytensor.function(inputs, outputs, mode=backend.get_mode("numpy"))
    slow = pytensor.function(inputs, outputs, mode=backend.get_mode("py"))
    return fast(*values), slow(*values), fast.maker.fgraph.toposort()


def test_elementwise_nodes_become_lean_and_agree():
    x = pt.matrix("x", dtype="float32")
    v = pt.vector("v", dtype="float32")
    i = pt.matrix("i", dtype="int16")
    outputs = [
        pt.tanh(x) * v + pt.exp(-x),  # broadcasting a vector over rows
        pt.switch(x > 0, x, 0.5 * x),
        i / 3,  # int -> float64
        pt.cast(pt.eq(i, 1), "float32") * x,
        (x * x).sum() + 1,  # 0-d elementwise result
        pt.maximum(i, 2) // 2,
    ]
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32),
              rng.integers(-3, 4, (3, 4)).astype(np.int16)]
    fast, slow, nodes = both_modes([x, v, i], outputs, values)
    for got, want in zip(fast, slow, strict=True):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)
    elemwise = [n for n in nodes if isinstance(n.op, Elemwise)]
    assert elemwise and all(type(n.op) is NumpyElemwise for n in elemwise)


def test_floating_point_warnings_stay_silent():
    """As in Elemwise.perform: log(0), 0/0 give inf/nan without numpy warnings."""
    x = pt.vector("x", dtype="float32")
    values = [np.array([0.0, 1.0], np.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, slow, _ = both_modes([x], [pt.log(x), x / x], values)
    for got, want in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(got, want)


def test_results_do_not_alias_inputs():
    x = pt.vector("x", dtype="float32")
    f = pytensor.function([x], pt.abs(x), mode=backend.get_mode("numpy"))
    value = np.array([-1.0, 2.0], np.float32)
    out = f(value)
    out[0] = 7
    np.testing.assert_array_equal(value, [-1.0, 2.0])
