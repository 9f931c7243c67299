"""Tests of elektronn.net.prednet: the twin ``predictDense`` builds to predict faster.

That a twin predicts the same as the net itself is shown by tests/net/test_prediction.py,
which runs every test with and without twins.  Here: its geometry and cost model, when it is
built and kept, that it follows the net's parameters, and which nets get none.
"""

import pickle
import tracemalloc

import numpy as np
import pytest

from elektronn import defaults
from elektronn.net import prednet
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator
from elektronn.net.prednet import Architecture


def build(n_dim=2, mfp=False, dropout=False, seed=0, w0=None):
    """A small net: 2 pooling layers (MFP or not), then a 2-class output layer.

    ``w0``: the first layer's weights (e.g. another net's shared variable: weight sharing).
    """
    filters = [[3, 3], [2, 3], [2, 2]] if n_dim == 2 else [[1, 3, 3], [2, 2, 2], [1, 2, 2]]
    pools = [[2, 2], [2, 1], [1, 1]] if n_dim == 2 else [[1, 2, 2], [1, 2, 2], [1, 1, 1]]
    desired = [20, 20] if n_dim == 2 else [4, 24, 24]
    calc = CNNCalculator(filters, pools, desired_input=desired, MFP=[mfp, mfp, False],
                         n_dim=n_dim)
    cnn = MixedConvNN(calc.input, input_depth=2, batch_size=1, dimension_calc=calc, seed=seed,
                      enable_dropout=dropout)
    for i, (f, p) in enumerate(zip(filters, pools, strict=True)):
        last = i == len(filters) - 1
        cnn.addConvLayer(2 if last else 3, f, pool_shape=p, activation_func="tanh",
                         use_fragment_pooling=mfp and not last, is_last_layer=last,
                         W=w0 if i == 0 else None)
    cnn.compileOutputFunctions(target="nll", only_forward=True)
    return cnn


def image(n_dim, shape=None, seed=0):
    shape = shape or ((60, 50) if n_dim == 2 else (64, 60, 9))
    return np.random.default_rng(seed).normal(size=(2, *shape)).astype(np.float32)


def direct(cnn, img, monkeypatch):
    """predictDense with the net itself."""
    with monkeypatch.context() as m:
        m.setattr(defaults, "PREDICT_TWIN_BYTES", 0)
        return cnn.predictDense(img, show_progress=False)


def test_doctests():
    import doctest

    result = doctest.testmod(prednet)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("n_dim", [2, 3])
@pytest.mark.parametrize("mfp", [False, True])
def test_cost_model_matches_the_built_nets(n_dim, mfp):
    """``forward`` counts the multiply-adds the net itself reports; ``input_size`` gives
    inputs an all-MFP net accepts, with the asked outputs per fragment."""
    cnn = build(n_dim, mfp)
    arch = Architecture.of(cnn)
    flags = [lay.use_fragment_pooling for lay in cnn.layers]
    assert arch.forward(tuple(cnn.patch_size), flags)[0] == cnn.TotalForwardPassCost
    for n in [(1,) * n_dim, (3, 5, 2)[:n_dim], (7, 2, 4)[:n_dim]]:
        twin = prednet._build(cnn, cnn._recipe, arch.input_size(n))
        frags = int(np.prod(arch.strides))
        assert twin.TotalForwardPassCost == arch.forward(arch.input_size(n), [True] * 3)[0]
        assert [int(s) for s in twin.output_shape[2:]] == [k * s for k, s in
                                                          zip(n, arch.strides, strict=True)]
        assert frags > 1 and twin.output_strides == [1] * n_dim


def test_choose_stays_within_the_memory_budget():
    arch = Architecture([(1, 4, 4), (3, 3, 3), (1, 1, 1)], [(1, 2, 2), (1, 1, 1), (1, 1, 1)],
                        [20, 30, 2], channels=1)
    flags = [True] * 3
    for budget in (2**20, 16 * 2**20, 256 * 2**20):
        n = arch.choose((3, 10, 10), (100, 400, 400), budget)
        assert 4 * arch.forward(arch.input_size(n), flags)[1] <= budget
    small, large = (arch.choose((3, 10, 10), (100, 400, 400), b) for b in (2**20, 2**26))
    assert np.prod(large) > 4 * np.prod(small)
    assert arch.choose((3, 10, 10), (100, 400, 400), 10) is None
    # an image smaller than the budget allows is covered by one tile, no larger
    assert arch.choose((3, 10, 10), (5, 30, 30), 2**30) == (5, 15, 15)


@pytest.mark.parametrize("n_dim", [2, 3])
def test_real_memory_of_a_twin_is_within_its_estimate(n_dim):
    cnn = build(n_dim, mfp=False)
    arch = Architecture.of(cnn)
    n = (40, 30) if n_dim == 2 else (6, 20, 20)
    twin = prednet._build(cnn, cnn._recipe, arch.input_size(n))
    x = np.zeros(twin.input_shape, np.float32)
    twin.class_probabilities(x)
    tracemalloc.start()
    try:
        twin.class_probabilities(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = 4 * arch.forward(arch.input_size(n), [True] * 3)[1]
    assert 0.6 * estimate < peak < 1.2 * estimate


def test_built_for_large_work_at_once_else_when_the_geometry_comes_back(monkeypatch):
    cnn = build(2, mfp=False)
    img = image(2)
    ref = direct(cnn, img, monkeypatch)
    cnn.__dict__.pop("_prediction_twins", None)
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 10**12)
    np.testing.assert_array_equal(cnn.predictDense(img, show_progress=False), ref)
    assert not cnn._prediction_twins  # a first, small call: the net itself
    np.testing.assert_array_equal(cnn.predictDense(img, show_progress=False), ref)
    assert len(cnn._prediction_twins) == 1  # the same geometry again: a twin
    np.testing.assert_array_equal(cnn.predictDense(image(2, (61, 50)), show_progress=False),
                                  direct(cnn, image(2, (61, 50)), monkeypatch))
    assert len(cnn._prediction_twins) == 1  # a new geometry, small: not yet
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    monkeypatch.setattr(defaults, "PREDICT_TWIN_KEEP", 2)
    for shape in [(30, 31), (40, 41), (50, 51)]:  # large work: at once; only 2 are kept
        np.testing.assert_array_equal(cnn.predictDense(image(2, shape), show_progress=False),
                                      direct(cnn, image(2, shape), monkeypatch))
    assert len(cnn._prediction_twins) == 2


def test_twin_follows_the_nets_parameters(monkeypatch):
    """Training (new arrays) and in-place changes between calls are seen by the twin."""
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    cnn = build(3, mfp=True)
    img = image(3)
    cnn.predictDense(img, show_progress=False)
    assert cnn._prediction_twins
    rng = np.random.default_rng(1)
    for lay in cnn.layers:
        lay.W.set_value(rng.normal(size=lay.W.get_value().shape).astype(np.float32))
    cnn.layers[0].b.get_value(borrow=True)[:] = 0.5
    got = cnn.predictDense(img, show_progress=False)
    np.testing.assert_array_equal(got, direct(cnn, img, monkeypatch))


@pytest.mark.parametrize("kind", ["dropout", "shared weights"])
def test_nets_that_get_no_twin(kind, monkeypatch):
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    if kind == "dropout":
        cnn = build(2, dropout=True)
        cnn.setDropoutRates([0.5, 0.5, 0.0])
    else:
        cnn = build(2, w0=build(2).layers[0].W)
    cnn.predictDense(image(2), show_progress=False)
    assert not cnn.__dict__.get("_prediction_twins")


def test_a_net_with_dropout_off_gets_a_twin(monkeypatch):
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    cnn = build(2, dropout=True)
    cnn.setDropoutRates([0.0, 0.0, 0.0])
    img = image(2)
    got = cnn.predictDense(img, show_progress=False)
    assert cnn._prediction_twins
    np.testing.assert_allclose(got, direct(cnn, img, monkeypatch), rtol=1e-6, atol=1e-7)


def test_pickled_net_leaves_its_twins_behind(monkeypatch):
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    cnn = build(2)
    img = image(2)
    ref = cnn.predictDense(img, show_progress=False)
    copy = pickle.loads(pickle.dumps(cnn))  # noqa: S301  (our own net)
    assert "_prediction_twins" not in copy.__dict__
    np.testing.assert_array_equal(copy.predictDense(img, show_progress=False), ref)


def test_a_kept_twin_serves_a_slightly_smaller_image(monkeypatch):
    """The blocks at a volume's edge reuse the twin of the full blocks instead of a new one."""
    monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    cnn = build(3)
    cnn.predictDense(image(3, (64, 60, 9)), show_progress=False)
    assert len(cnn._prediction_twins) == 1
    edge = image(3, (60, 57, 9), seed=3)
    np.testing.assert_array_equal(cnn.predictDense(edge, show_progress=False),
                                  direct(cnn, edge, monkeypatch))
    assert len(cnn._prediction_twins) == 1
