"""The rewrites of the "numpy" mode: lean elementwise nodes with PyTensor's semantics."""

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
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


def test_linker_runs_reductions_shuffles_and_shape_checks_like_pytensor():
    """NumpyLinker's direct code paths agree with PyTensor's own Python mode."""
    x = pt.tensor("x", dtype="float32", shape=(None, 1, None))
    m = pt.matrix("m", dtype="float32")
    checked = pt.specify_shape(m, (2, None))
    outputs = [
        x.sum(dtype="float64"),  # float64 accumulation of float32
        x.max(axis=2),
        x.dimshuffle(2, 0),  # transpose and drop a broadcastable axis
        x.dimshuffle("x", 0, 1, "x", 2),
        checked.T * 2,
        pt.argmax(m, axis=1),  # an Op through its perform
    ]
    rng = np.random.default_rng(1)
    values = [rng.normal(size=(3, 1, 4)).astype(np.float32),
              rng.normal(size=(2, 5)).astype(np.float32)]
    fast, slow, _ = both_modes([x, m], outputs, values)
    for got, want in zip(fast, slow, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)
    f = pytensor.function([m], checked * 2, mode=backend.get_mode("numpy"))
    with pytest.raises(AssertionError, match="SpecifyShape"):
        f(np.ones((3, 5), np.float32))


def test_linker_frees_intermediate_results():
    """Each intermediate variable of the generated function is deleted after its last use."""
    x = pt.vector("x", dtype="float32")
    f = pytensor.function([x], pt.exp(pt.tanh(x) + 1) * 2, mode=backend.get_mode("numpy"))
    source = f.vm.jit_fn.source
    assert source.count("del ") >= 2
    np.testing.assert_allclose(f(np.zeros(3, np.float32)), 2 * np.exp(1), rtol=1e-6)


def test_linker_runs_ops_with_their_own_thunks_repeatedly():
    """A Scan (its own thunk) over a shared matrix: the shared value survives every call."""
    w = pytensor.shared(np.eye(3, dtype=np.float32) * 2, name="w")
    x = pt.matrix("x", dtype="float32")
    ys = pytensor.scan(lambda row: pt.dot(row, w), sequences=[x], return_updates=False)
    f = pytensor.function([x], ys, mode=backend.get_mode("numpy"))
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    for _ in range(2):
        np.testing.assert_allclose(f(value), value * 2)
    np.testing.assert_array_equal(w.get_value(), np.eye(3) * 2)


def test_float64_sums_of_arrays_become_one_node():
    """The optimisers' finiteness guard: a float64 sum of whole-array sums is one SumAll."""
    from elektronn.net.optimizer import all_finite
    from elektronn.ops.numpy_mode import SumAll

    loss = pt.scalar("loss", dtype="float32")
    a, b = pt.matrix("a", dtype="float32"), pt.tensor3("b", dtype="float32")
    f = pytensor.function([loss, a, b], all_finite(loss, [a, b]),
                          mode=backend.get_mode("numpy"))
    assert sum(isinstance(n.op, SumAll) for n in f.maker.fgraph.apply_nodes) == 1
    ok = [np.float32(1.5), np.ones((2, 3), np.float32), np.full((2, 2, 2), 3e38, np.float32)]
    assert f(*ok)  # float64 sums do not overflow
    for i, bad in [(0, np.float32(np.nan)), (1, np.array([[np.inf, -np.inf, 0]] * 2, np.float32)),
                   (2, np.full((2, 2, 2), np.inf, np.float32))]:
        values = list(ok)
        values[i] = bad
        assert not f(*values)
