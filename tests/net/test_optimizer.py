"""Optimisers against numpy references written from ELEKTRONN 1.0's formulas (docs/differences.md,
N23-N30).

The stand-in model objects carry exactly the attributes the net provides (``_x``, ``_y``,
``_y_aux``, ``_loss``, ``_loss_instance``, ``_gradients``, ``params``, ``_last_grads``,
``global_weightdecay``, ``SGD_LR``, ``SGD_momentum``); the optimisers only read them.  The
"probe" model has a linear loss ``sum(x * theta)``, so its gradient is exactly the input ``x``
and single updates can be checked by hand.
"""

import logging
import types

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.special import log_softmax

from elektronn.defaults import NET_OPTIMIZER_DEFAULTS
from elektronn.net import optimizer as opt_mod
from elektronn.net.optimizer import (
    NonFiniteLossError,
    NonFiniteLossWarning,
    compileAdam,
    compileCG,
    compileLBFGS,
    compileRPROP,
    compileSGD,
    momentum_buffers,
)
from elektronn.net.updates import all_finite

TOL = {"rtol": 1e-5, "atol": 1e-7}
W_SHAPE, B_SIZE = (2, 3), 4
N_PROBE = 6 + B_SIZE


def _f32(value):
    return np.float32(value)


def _shared(value, name):
    return pytensor.shared(np.asarray(value, dtype=np.float32), name=name)


def _model(x, y, loss, instance, params, gradients=None, **extra):
    attrs = {
        "_x": x, "_y": y, "_y_aux": [], "_loss": loss, "_loss_instance": instance,
        "_gradients": gradients, "params": params, "_last_grads": [],
        "global_weightdecay": _shared(0.0, "wd"), "SGD_LR": _shared(0.1, "LR"),
        "SGD_momentum": _shared(0.9, "mu"),
    }
    attrs.update(extra)
    return types.SimpleNamespace(**attrs)


def probe_model(rng, duplicate=False, loss_fn=None):
    """Linear loss ``sum(x[:6].reshape(2, 3) * W) + sum(x[6:] * b)``: the gradient is x."""
    x, y = pt.vector("x"), pt.vector("y")
    W = _shared(rng.standard_normal(W_SHAPE), "W")
    b = _shared(rng.standard_normal(B_SIZE), "b")
    loss = pt.sum(x[:6].reshape(W_SHAPE) * W) + pt.sum(x[6:] * b)
    if loss_fn is not None:
        loss = loss_fn(loss, W, b)
    params = [W, b, W] if duplicate else [W, b]
    gradients = pytensor.grad(loss, params) if duplicate else None
    return _model(x, y, loss, loss, params, gradients)


def split(vec):
    """Split a probe input or flat parameter vector into (W, b) parts."""
    return vec[:6].reshape(W_SHAPE), vec[6:]


def values(model):
    return [p.get_value() for p in model.params]


def logreg_model(rng):
    x, y = pt.matrix("x"), pt.vector("y", dtype="int16")
    W = _shared(np.zeros((4, 3)), "W")
    b = _shared(np.zeros(3), "b")
    log_p = log_softmax(x @ W + b, axis=1)
    instance = -log_p[pt.arange(y.shape[0]), y]
    return _model(x, y, instance.mean(), instance, [W, b])


def logreg_data(rng):
    X = rng.standard_normal((50, 4)).astype(np.float32)
    Y = ((X[:, 0] > 0).astype(np.int16) + (X[:, 1] > 0)).astype(np.int16)
    return X, Y


def lsq_model():
    x, y = pt.matrix("x"), pt.vector("y")
    w = _shared([0.3, -0.2, 0.1], "w")
    b = _shared(0.05, "b")
    residual2 = (x @ w + b - y) ** 2
    return _model(x, y, residual2.mean(), residual2, [w, b])


def lsq_data(rng):
    X = rng.standard_normal((40, 3)).astype(np.float32)
    Y = (X @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(40)).astype(np.float32)
    design = np.c_[X, np.ones(len(X))].astype(np.float64)
    return X, Y, np.linalg.lstsq(design, Y.astype(np.float64), rcond=None)[0]


def probe_input(rng):
    return rng.standard_normal(N_PROBE).astype(np.float32)


DUMMY_Y = np.zeros(1, np.float32)

STEP_OPTIMISERS = {
    "SGD": (compileSGD, {"LR": 0.1, "momentum": 0.9}),
    "Adam": (compileAdam, {"LR": 0.01}),
    "RPROP": (compileRPROP, {}),
}


# --- every optimiser trains -------------------------------------------------------------------


@pytest.mark.parametrize("name, cls, params, n_calls", [
    ("SGD", compileSGD, {"LR": 0.1, "momentum": 0.9}, 10),
    ("Adam", compileAdam, {"LR": 0.05}, 10),
    ("RPROP", compileRPROP, {"initial_update_size": 1e-3}, 10),
    ("CG", compileCG, {"max_step": 0.5}, 3),
    ("LBFGS", compileLBFGS, {}, 2),
])
def test_each_optimiser_decreases_the_loss(rng, name, cls, params, n_calls):
    model = logreg_model(rng)
    X, Y = logreg_data(rng)
    opt = cls(params, model)
    loss0, _ = opt.get_loss(X, Y)
    for _ in range(n_calls):
        result = opt(X, Y)
    loss1, instance = opt.get_loss(X, Y)
    assert loss1 < loss0 - 0.01
    assert isinstance(loss1, np.float32) and instance.shape == (50,)
    if name == "LBFGS":
        assert isinstance(result, np.float32)
    else:
        assert isinstance(result[0], np.float32) and len(result) == 2


# --- hand-checked single updates --------------------------------------------------------------


def test_sgd_two_steps_match_numpy(rng):
    model = probe_model(rng)
    model.global_weightdecay.set_value(_f32(0.01))
    opt = compileSGD({"LR": 0.1, "momentum": 0.9}, model)
    theta = np.concatenate([v.ravel() for v in values(model)]).astype(np.float64)
    velocity = np.zeros_like(theta)
    for _ in range(2):
        g = probe_input(rng)
        loss, instance = opt(g, DUMMY_Y)
        np.testing.assert_allclose(loss, g @ theta, rtol=1e-5)  # pre-update loss
        velocity = g + 0.9 * velocity
        theta = theta - 0.1 * velocity - 0.1 * 0.01 * theta
        W, b = split(theta)
        np.testing.assert_allclose(model.params[0].get_value(), W, **TOL)
        np.testing.assert_allclose(model.params[1].get_value(), b, **TOL)
        np.testing.assert_allclose(np.concatenate([v.get_value().ravel() for v in opt.last_grads]),
                                   velocity, **TOL)


def test_adam_two_steps_match_numpy(rng):
    model = probe_model(rng)
    hp = {"LR": 0.01, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-3}
    opt = compileAdam(hp, model)
    theta = np.concatenate([v.ravel() for v in values(model)]).astype(np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t in (1, 2):
        g = probe_input(rng)
        loss, _ = opt(g, DUMMY_Y)
        np.testing.assert_allclose(loss, g @ theta, rtol=1e-5)
        a_t = hp["LR"] * np.sqrt(1 - hp["beta2"] ** t) / (1 - hp["beta1"] ** t)
        m = hp["beta1"] * m + (1 - hp["beta1"]) * g
        v = hp["beta2"] * v + (1 - hp["beta2"]) * g**2
        theta = theta - a_t * m / (np.sqrt(v) + hp["epsilon"])
        W, b = split(theta)
        np.testing.assert_allclose(model.params[0].get_value(), W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.params[1].get_value(), b, rtol=1e-5, atol=1e-6)
        assert opt.t.get_value() == t
        np.testing.assert_allclose(opt.m[1].get_value(), split(m)[1], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(opt.v[1].get_value(), split(v)[1], rtol=1e-5, atol=1e-7)


def test_adam_defaults_exist():
    assert dict(NET_OPTIMIZER_DEFAULTS["Adam"]) == {"LR": 0.001, "beta1": 0.9, "beta2": 0.999,
                                           "epsilon": 1e-8}


def test_rprop_step_sizes_clipping_and_weight_decay(rng):
    model = probe_model(rng)
    wd = 0.05
    model.global_weightdecay.set_value(_f32(wd))
    opt = compileRPROP({"penalty": 0.35, "gain": 0.2}, model)
    # Per element: (last gradient, gradient, step size before the step)
    cases = np.array([
        [1.0, -2.0, 1e-4],    # sign flip: * (1 - 0.35)
        [1.0, 3.0, 1e-4],     # same sign: * (1 + 0.2)
        [0.0, 1.0, 1e-4],     # no previous gradient: unchanged
        [1e-5, -5e-5, 1e-4],  # product -5e-10 > -1e-9: unchanged
        [1e-6, 5e-6, 1e-4],   # product 5e-12 < 1e-11: unchanged
        [1.0, 1.0, 1.9e-3],   # grows to 2.28e-3, clipped to 2e-3
        [1.0, -1.0, 1.2e-7],  # shrinks to 7.8e-8, clipped to 1e-7
        [-2.0, -0.5, 5e-4],   # same sign (both negative): grows
        [0.5, -0.5, 5e-4],    # flip
        [0.0, 0.0, 5e-4],     # zero gradient: unchanged step, only decay moves theta
    ])
    last, g, eta = (cases[:, i] for i in range(3))
    for buffers, column in ((opt.last_grads, last), (opt.LRs, eta)):
        for buffer, part in zip(buffers, split(column.astype(np.float32)), strict=True):
            buffer.set_value(part)
    theta = np.concatenate([v.ravel() for v in values(model)]).astype(np.float64)
    opt(g.astype(np.float32), DUMMY_Y)

    factor = np.array([0.65, 1.2, 1, 1, 1, 1.2, 0.65, 1.2, 0.65, 1])
    new_eta = np.clip(eta * factor, 1e-7, 2e-3)
    new_theta = theta - eta * g / (np.abs(g) + 1e-6) - wd * theta  # decay not scaled by eta
    got_eta = np.concatenate([v.get_value().ravel() for v in opt.LRs])
    np.testing.assert_allclose(got_eta, new_eta, rtol=1e-6)
    assert got_eta[5] == _f32(2e-3) and got_eta[6] == _f32(1e-7)
    got_theta = np.concatenate([v.get_value().ravel() for v in model.params])
    np.testing.assert_allclose(got_theta, new_theta, **TOL)
    got_last = np.concatenate([v.get_value().ravel() for v in opt.last_grads])
    np.testing.assert_allclose(got_last, g, **TOL)


def test_rprop_initial_step_size(rng):
    model = probe_model(rng)
    opt = compileRPROP({"initial_update_size": 3e-4}, model)
    for buffer in opt.LRs:
        np.testing.assert_array_equal(buffer.get_value(), _f32(3e-4))


# --- CG and L-BFGS on a convex problem --------------------------------------------------------


def test_cg_reaches_least_squares_minimum(rng):
    model = lsq_model()
    X, Y, ref = lsq_data(rng)
    opt = compileCG({"max_step": 1.0, "min_step": 1e-6, "n_steps": 5}, model)
    for _ in range(30):
        loss, instance = opt(X, Y)
    np.testing.assert_allclose(model.params[0].get_value(), ref[:3], atol=1e-3)
    np.testing.assert_allclose(model.params[1].get_value(), ref[3], atol=1e-3)
    assert instance.shape == (40,)
    # CG returns the loss after the update
    np.testing.assert_allclose(loss, opt.get_loss(X, Y)[0], rtol=1e-6)
    assert len(opt.last_timeline) == 5 and len(opt.last_timeline[0]) == 4


def test_lbfgs_reaches_least_squares_minimum(rng):
    model = lsq_model()
    X, Y, ref = lsq_data(rng)
    opt = compileLBFGS({"maxiter": 100, "maxfun": 200}, model)
    loss = opt(X, Y)
    np.testing.assert_allclose(model.params[0].get_value(), ref[:3], atol=1e-4)
    np.testing.assert_allclose(model.params[1].get_value(), ref[3], atol=1e-4)
    design = np.c_[X, np.ones(len(X))].astype(np.float64)
    np.testing.assert_allclose(loss, np.mean((design @ ref - Y) ** 2), rtol=1e-4)


def _fake_lbfgs(calls, warnflag=0, task="CONVERGENCE: NORM_OF_PROJECTED_GRADIENT_<=_PGTOL"):
    """Stand-in for scipy: evaluates a trial point last, returns a different optimum."""

    def fake(func, x0, args=(), **kwargs):
        calls.append(kwargs)
        best = np.asarray(x0, np.float64) + 0.5
        loss, _ = func(best, *args)
        func(best + 1.0, *args)  # the last evaluated point is not the optimum
        return best, loss, {"warnflag": warnflag, "task": task, "nit": 1, "funcalls": 2,
                            "grad": np.zeros_like(best)}

    return fake


def test_lbfgs_writes_back_the_optimum(rng, monkeypatch):
    """N29: the original left the parameters at the last evaluated point."""
    model = lsq_model()
    X, Y, _ = lsq_data(rng)
    opt = compileLBFGS({}, model)
    calls = []
    monkeypatch.setattr(opt_mod, "fmin_l_bfgs_b", _fake_lbfgs(calls))
    loss = opt(X, Y)
    np.testing.assert_allclose(model.params[0].get_value(), [0.8, 0.3, 0.6], rtol=1e-6)
    np.testing.assert_allclose(model.params[1].get_value(), 0.55, rtol=1e-6)
    np.testing.assert_allclose(loss, opt.get_loss(X, Y)[0], rtol=1e-6)
    expected = {k: v for k, v in NET_OPTIMIZER_DEFAULTS["LBFGS"].items() if k != "iprint"}
    assert calls == [expected]  # the deprecated silent iprint=-1 is not passed on


@pytest.mark.parametrize("warnflag, text", [
    (0, "L-BFGS converged"), (1, "iteration/evaluation limit"), (2, "L-BFGS aborted"),
])
def test_lbfgs_outcome_message(rng, monkeypatch, caplog, warnflag, text):
    model = lsq_model()
    X, Y, _ = lsq_data(rng)
    opt = compileLBFGS({}, model)
    monkeypatch.setattr(opt_mod, "fmin_l_bfgs_b", _fake_lbfgs([], warnflag, "TASK"))
    with caplog.at_level(logging.INFO, logger="elektronn"):
        opt(X, Y)
    messages = [r.getMessage() for r in caplog.records if "L-BFGS" in r.getMessage()]
    assert len(messages) == 1 and text in messages[0] and "TASK" in messages[0]
    assert ("aborted" in messages[0]) == (warnflag == 2)


# --- the CG line search (kept, differences N28) -----------------------------------------------


def quadratic_model():
    """f(theta) = sum(x * (theta - y)**2) with a single parameter of shape (1,)."""
    x, y = pt.vector("x"), pt.vector("y")
    theta = _shared([1.0], "theta")
    instance = x * (theta - y) ** 2
    return _model(x, y, instance.sum(), instance, [theta])


ONE, ZERO = np.ones(1, np.float32), np.zeros(1, np.float32)


@pytest.mark.parametrize("alpha, theta, t, count", [
    # f = theta^2 from theta=1, d = -2, max_step 1, beta 0.7.  Trial points t = 1, 0.7, 0.49:
    # f(0.49) = 0.0004 is below the chord 1 - 4*0.49*0.35.
    (0.35, 0.02, 0.49, 3),
    # alpha 0.99: no point is below the chord; at t = 0.343 the loss (0.0986) rose against
    # t = 0.49 (0.0004), the search stops and keeps the worse point, as the original did.
    (0.99, 0.314, 0.343, 4),
])
def test_cg_line_search_follows_the_original(alpha, theta, t, count):
    model = quadratic_model()
    opt = compileCG({"alpha": alpha, "beta": 0.7, "max_step": 1.0, "min_step": 1e-3}, model)
    opt.CG_kickstart(ONE, ZERO)
    loss, _, t_got, count_got = opt.lineSearch(ONE, ZERO)
    np.testing.assert_allclose(model.params[0].get_value(), [theta], rtol=1e-5)
    np.testing.assert_allclose(loss, theta**2, rtol=1e-4)
    np.testing.assert_allclose(t_got, t, rtol=1e-5)
    assert count_got == count


def test_cg_line_search_does_not_move_uphill():
    model = quadratic_model()
    opt = compileCG({}, model)
    opt.CG_kickstart(ONE, ZERO)
    opt.direc[0].set_value(np.float32([2.0]))  # an ascent direction: sum(g * d) > 0
    loss, _, t, count = opt.lineSearch(ONE, ZERO)
    assert (loss, t, count) == (1.0, 0, 0)
    assert model.params[0].get_value()[0] == 1.0


def test_cg_polak_ribiere_coefficient():
    model = quadratic_model()
    opt = compileCG({}, model)
    opt.last_grads[0].set_value(np.float32([3.0]))
    opt.direc[0].set_value(np.float32([-1.0]))
    coeff = opt.CG_step(ONE, ZERO)  # g = 2 at theta = 1
    np.testing.assert_allclose(coeff, 0.0)  # 2*(2-3)/9 < 0 -> 0
    opt.last_grads[0].set_value(np.float32([1.0]))
    coeff = opt.CG_step(ONE, ZERO)
    np.testing.assert_allclose(coeff, 2.0)  # 2*(2-1)/1
    np.testing.assert_allclose(opt.direc[0].get_value(), [-2.0 + 2.0 * -2.0])
    opt.last_grads[0].set_value(ZERO)
    assert opt.CG_step(ONE, ZERO) == 0.0  # no division by zero


# --- weight decay per optimiser ---------------------------------------------------------------


def _first_update(cls, params, wd, build, data):
    model = build()
    model.global_weightdecay.set_value(_f32(wd))
    opt = cls(params, model)
    start = values(model)
    opt(*data)
    return start, values(model)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RPROP", "CG", "LBFGS"])
def test_weight_decay_placement(rng, name):
    cls, params = {"CG": (compileCG, {}), "LBFGS": (compileLBFGS, {}),
                   **STEP_OPTIMISERS}[name]
    if name in ("CG", "LBFGS"):
        X, Y, _ = lsq_data(rng)
        data, build = (X, Y), lsq_model
    else:
        seed = int(rng.integers(1 << 30))
        data = (probe_input(rng), DUMMY_Y)

        def build():
            return probe_model(np.random.default_rng(seed))

    start, plain = _first_update(cls, params, 0.0, build, data)
    _, decayed = _first_update(cls, params, 0.1, build, data)
    for s, p, d in zip(start, plain, decayed, strict=True):
        if name == "SGD":
            np.testing.assert_allclose(d - p, -0.1 * 0.1 * s, rtol=1e-4, atol=1e-6)
        elif name == "RPROP":
            np.testing.assert_allclose(d - p, -0.1 * s, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_array_equal(d, p)


# --- hyperparameters change without recompiling -----------------------------------------------


def _no_compiling(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("recompiled")

    monkeypatch.setattr(pytensor, "function", fail)


def test_sgd_lr_and_momentum_change_between_steps(rng, monkeypatch):
    model = probe_model(rng)
    opt = compileSGD({}, model)  # uses the model's shared SGD_LR and SGD_momentum
    assert opt.LR is model.SGD_LR and opt.momentum is model.SGD_momentum
    step = opt.step
    _no_compiling(monkeypatch)
    g1, g2, g3 = probe_input(rng), probe_input(rng), probe_input(rng)
    opt(g1, DUMMY_Y)
    model.SGD_LR.set_value(_f32(0.5))  # what MixedConvNN.setSGDLR does
    model.SGD_momentum.set_value(_f32(0.0))
    before = values(model)
    opt(g2, DUMMY_Y)
    for b, a, g in zip(before, values(model), split(g2), strict=True):
        np.testing.assert_allclose(a, b - 0.5 * g, **TOL)
    opt.updateOptimizerParams({"LR": 0.25, "momentum": 0.5})
    assert model.SGD_LR.get_value() == _f32(0.25)
    before = values(model)
    opt(g3, DUMMY_Y)
    for b, a, g, v in zip(before, values(model), split(g3), split(g2), strict=True):
        np.testing.assert_allclose(a, b - 0.25 * (g + 0.5 * v), **TOL)
    assert opt.step is step


def test_sgd_number_hyperparameters_become_shared(rng):
    model = probe_model(rng)
    opt = compileSGD({"LR": 0.2, "momentum": 0.0}, model)
    assert opt.LR is not model.SGD_LR and opt.LR.get_value() == _f32(0.2)
    assert opt.LR.dtype == "float32" and opt.momentum.dtype == "float32"
    assert opt.optimizer_params == {"LR": opt.LR, "momentum": opt.momentum}


def test_float64_hyperparameters_do_not_upcast(rng):
    model = probe_model(rng)
    lr64 = pytensor.shared(0.1)  # a float64 shared scalar
    model.global_weightdecay = pytensor.shared(0.01)
    opt = compileSGD({"LR": lr64, "momentum": 0.5}, model)
    assert opt.LR is lr64
    before = values(model)
    g = probe_input(rng)
    opt(g, DUMMY_Y)
    for b, a, part in zip(before, values(model), split(g), strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b - 0.1 * part - 0.1 * 0.01 * b, **TOL)


def test_adam_lr_changes_between_steps(rng, monkeypatch):
    model = probe_model(rng)
    opt = compileAdam({"LR": 0.01}, model)
    step = opt.step
    _no_compiling(monkeypatch)
    g = probe_input(rng)
    opt.updateOptimizerParams({"LR": 0.0})
    before = values(model)
    opt(g, DUMMY_Y)
    for b, a in zip(before, values(model), strict=True):
        np.testing.assert_array_equal(a, b)
    opt.LR.set_value(_f32(0.01))
    opt(g, DUMMY_Y)
    assert not np.allclose(values(model)[0], before[0])
    assert opt.step is step


# --- reset (N23) ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "Adam", "RPROP", "CG"])
def test_reset_restores_the_optimiser_state(rng, name):
    cls, params = {"CG": (compileCG, {}), **STEP_OPTIMISERS}[name]
    model = probe_model(rng)
    opt = cls(params, model)
    for _ in range(2):
        opt(probe_input(rng), DUMMY_Y)
    state = {
        "SGD": lambda: opt.last_grads,
        "Adam": lambda: [*opt.m, *opt.v, opt.t],
        "RPROP": lambda: opt.last_grads,
        "CG": lambda: [*opt.last_grads, *opt.direc],
    }[name]()
    assert any(np.any(v.get_value() != 0) for v in state)
    params_before = values(model)
    opt.reset()
    for var in state:
        np.testing.assert_array_equal(var.get_value(), 0)
    if name == "RPROP":
        for var in opt.LRs:
            np.testing.assert_array_equal(var.get_value(), _f32(1e-4))
    for b, a in zip(params_before, values(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_adam_after_reset_steps_like_a_fresh_optimiser(rng):
    seed = int(rng.integers(1 << 30))
    g1, g2 = probe_input(rng), probe_input(rng)
    used = probe_model(np.random.default_rng(seed))
    opt = compileAdam({"LR": 0.01}, used)
    opt(g1, DUMMY_Y)
    for p, v in zip(used.params, values(probe_model(np.random.default_rng(seed))), strict=True):
        p.set_value(v)
    opt.reset()
    opt(g2, DUMMY_Y)
    fresh = probe_model(np.random.default_rng(seed))
    compileAdam({"LR": 0.01}, fresh)(g2, DUMMY_Y)
    for a, b in zip(values(used), values(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lbfgs_reset_keeps_params_and_next_run(rng):
    """L-BFGS keeps no state between calls: after ``reset`` the parameters are untouched and
    the next run goes exactly where a fresh optimiser from the same point goes."""
    X, Y, _ = lsq_data(rng)
    model = lsq_model()
    opt = compileLBFGS({"maxiter": 3, "maxfun": 6}, model)
    opt(X, Y)
    before = values(model)
    opt.reset()
    for b, a in zip(before, values(model), strict=True):
        np.testing.assert_array_equal(a, b)
    opt(X, Y)
    fresh = lsq_model()
    for p, v in zip(fresh.params, before, strict=True):
        p.set_value(v)
    compileLBFGS({"maxiter": 3, "maxfun": 6}, fresh)(X, Y)
    for a, b in zip(values(model), values(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(values(model)[0], before[0])  # the runs moved the parameters


# --- non-finite losses ------------------------------------------------------------------------


def _state_values(opt):
    return [v.get_value() for v, _ in opt._state] + [p.get_value() for p in opt.params]


@pytest.mark.parametrize("name", list(STEP_OPTIMISERS))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_raises_and_leaves_params(rng, name, bad):
    cls, params = STEP_OPTIMISERS[name]
    model = probe_model(rng)
    opt = cls(params, model)
    opt(probe_input(rng), DUMMY_Y)
    before = _state_values(opt)
    g = probe_input(rng)
    g[2] = bad
    with pytest.raises(NonFiniteLossError, match="loss is -?(nan|inf) at step 2 .*parameters "
                                                 "were not updated") as info:
        opt(g, DUMMY_Y)
    assert info.value.step == 2 and not np.isfinite(info.value.loss)
    assert isinstance(info.value, FloatingPointError)
    for b, a in zip(before, _state_values(opt), strict=True):
        np.testing.assert_array_equal(a, b)
    opt(probe_input(rng), DUMMY_Y)  # training continues after the bad batch
    assert opt.step_count == 3


def test_non_finite_gradient_with_finite_loss_raises(rng):
    model = probe_model(rng, loss_fn=lambda loss, W, b: loss + pt.sum(pt.sqrt(pt.abs(b))))
    model.params[1].set_value(np.float32([0.0, 1.0, 2.0, 3.0]))  # d sqrt(|b|)/db is inf at 0
    opt = compileSGD({"LR": 0.1, "momentum": 0.9}, model)
    before = values(model)
    with pytest.raises(NonFiniteLossError, match="gradient is not finite.*step 1"):
        opt(probe_input(rng), DUMMY_Y)
    for b, a in zip(before, values(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_policy_warn(rng):
    model = probe_model(rng)
    opt = compileRPROP({}, model, nan_policy="warn")
    before = _state_values(opt)
    g = np.full(N_PROBE, np.nan, np.float32)
    with pytest.warns(NonFiniteLossWarning, match="loss is nan at step 1"):
        loss, _ = opt(g, DUMMY_Y)
    assert np.isnan(loss)
    for b, a in zip(before, _state_values(opt), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [compileCG, compileLBFGS])
def test_non_finite_loss_restores_cg_and_lbfgs(rng, cls):
    model = lsq_model()
    X, Y, _ = lsq_data(rng)
    opt = cls({}, model)
    opt(X, Y)
    before = _state_values(opt)
    X_bad = X.copy()
    X_bad[3, 1] = np.nan
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 2"):
        opt(X_bad, Y)
    for b, a in zip(before, _state_values(opt), strict=True):
        np.testing.assert_array_equal(a, b)
    opt.nan_policy = "warn"
    with pytest.warns(NonFiniteLossWarning, match="step 3"):
        opt(X_bad, Y)
    for b, a in zip(before, _state_values(opt), strict=True):
        np.testing.assert_array_equal(a, b)


def test_invalid_nan_policy(rng):
    with pytest.raises(ValueError, match="nan_policy"):
        compileSGD({}, probe_model(rng), nan_policy="ignore")


# --- duplicate (shared) parameters (N24) ------------------------------------------------------


@pytest.mark.parametrize("name", list(STEP_OPTIMISERS))
def test_duplicate_params_are_optimised_once(rng, name):
    cls, params = STEP_OPTIMISERS[name]
    seed = int(rng.integers(1 << 30))
    gs = [probe_input(rng) for _ in range(2)]
    results = []
    for duplicate in (False, True):
        model = probe_model(np.random.default_rng(seed), duplicate=duplicate)
        opt = cls(params, model)
        assert len(opt.params) == len(opt.gradients) == len(opt.last_grads) == 2
        for g in gs:
            opt(g, DUMMY_Y)
        results.append(values(model)[:2])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, **TOL)


def test_duplicate_params_lbfgs(rng):
    model = lsq_model()
    w, b = model.params
    model.params = [w, b, w]
    X, Y, ref = lsq_data(rng)
    opt = compileLBFGS({"maxiter": 100, "maxfun": 200}, model)
    assert opt.total_size == 4
    opt(X, Y)
    np.testing.assert_allclose(w.get_value(), ref[:3], atol=1e-4)


# --- the model interface ----------------------------------------------------------------------


def test_standalone_without_model(rng):
    """N24: without a model the variables are stored and the optimiser works."""
    x, y = pt.vector("x"), pt.vector("y")
    W = _shared(np.ones(N_PROBE), "W")
    loss = pt.sum(x * W) + 0 * pt.sum(y)
    opt = compileSGD({"LR": 0.1, "momentum": 0.0}, X=x, Y=y, top_loss=loss, params=[W])
    assert opt.X is x and opt.Y is y and opt.top_loss is loss and opt.params == [W]
    assert opt.model_obj is None
    g = probe_input(rng)
    loss_value, instance = opt(g, DUMMY_Y)
    np.testing.assert_allclose(instance, loss_value)  # the instance defaults to the loss
    np.testing.assert_allclose(W.get_value(), 1 - 0.1 * g, **TOL)
    opt.weightdecay.set_value(_f32(0.5))  # a standalone optimiser has its own weight decay
    opt(np.zeros(N_PROBE, np.float32), DUMMY_Y)
    np.testing.assert_allclose(W.get_value(), (1 - 0.1 * g) * (1 - 0.05), **TOL)


def test_missing_arguments():
    with pytest.raises(ValueError, match="Missing arguments: X, Y, top_loss, params"):
        compileSGD({})
    model = types.SimpleNamespace(_x=pt.vector(), _y=pt.vector(), _loss=pt.constant(0.0),
                                  params=[])
    with pytest.raises(ValueError, match="no params"):
        compileSGD({}, model)


def test_optimisers_do_not_write_into_the_model(rng):
    """The original replaced the model's get_loss and _last_grads (losing the net's checks)."""
    model = probe_model(rng)
    before = dict(vars(model))
    opts = [cls({}, model) for cls in (compileSGD, compileRPROP, compileCG, compileAdam,
                                       compileLBFGS)]
    for opt in opts[:3]:
        opt(probe_input(rng), DUMMY_Y)
    assert vars(model).keys() == before.keys()
    assert all(vars(model)[k] is v for k, v in before.items())
    loss, instance = opts[0].get_loss(probe_input(rng), DUMMY_Y)
    assert isinstance(loss, np.float32)


def test_momentum_buffers_are_shared_when_given(rng):
    model = probe_model(rng)
    buffers = momentum_buffers(model.params)
    sgd = compileSGD({}, model, last_grads=buffers)
    g = probe_input(rng)
    sgd(g, DUMMY_Y)
    rprop = compileRPROP({}, model, last_grads=buffers)
    cg = compileCG({}, model, last_grads=buffers)
    for opt in (sgd, rprop, cg):
        assert all(a is b for a, b in zip(opt.last_grads, buffers, strict=True))
    np.testing.assert_allclose(np.concatenate([b.get_value().ravel() for b in buffers]), g,
                               rtol=1e-6)


def test_explicit_arguments_without_model(rng):
    model = probe_model(rng)
    wd = _shared(0.0, "wd")
    opt = compileSGD({"LR": 0.1, "momentum": 0.0}, X=model._x, Y=model._y,
                     top_loss=model._loss, params=model.params, weight_decay=wd)
    assert opt.weightdecay is wd
    before = values(model)
    g = probe_input(rng)
    opt(g, DUMMY_Y)
    for b, a, part in zip(before, values(model), split(g), strict=True):
        np.testing.assert_allclose(a, b - 0.1 * part, **TOL)


@pytest.mark.parametrize("cls", [compileSGD, compileAdam, compileRPROP, compileCG, compileLBFGS])
def test_unknown_hyperparameter_keys_raise(rng, cls):
    model = probe_model(rng)
    with pytest.raises(ValueError, match=r"unknown \w+ parameter 'lr'; valid keys are"):
        cls({"lr": 0.1}, model)
    opt = cls({}, model)
    with pytest.raises(ValueError, match="'typo'"):
        opt.updateOptimizerParams({"typo": 1})


def test_model_gradients_are_used(rng):
    model = probe_model(rng)
    model._gradients = [2 * g for g in pytensor.grad(model._loss, model.params)]
    opt = compileSGD({"LR": 0.1, "momentum": 0.0}, model)
    before = values(model)
    g = probe_input(rng)
    opt(g, DUMMY_Y)
    for b, a, part in zip(before, values(model), split(g), strict=True):
        np.testing.assert_allclose(a, b - 0.2 * part, **TOL)


def test_mismatched_model_momenta_are_replaced(rng, caplog):
    model = probe_model(rng)
    model._last_grads = [_shared(np.zeros(5), "stale")]
    with caplog.at_level(logging.WARNING, logger="elektronn"):
        opt = compileSGD({}, model)
    assert "do not fit" in caplog.text
    assert [v.get_value().shape for v in opt.last_grads] == [W_SHAPE, (B_SIZE,)]
    assert model._last_grads is not opt.last_grads


def test_aux_inputs_and_compiled_gradients(rng):
    x, y, w_aux = pt.vector("x"), pt.vector("y"), pt.vector("w_aux")
    W = _shared(np.ones(3), "W")
    loss = pt.sum(w_aux * (x * W - y) ** 2)
    model = _model(x, y, loss, loss, [W], _y_aux=[w_aux])
    opt = compileSGD({"LR": 0.1, "momentum": 0.0}, model)
    X, Y, A = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    (grad,) = opt.compileGradients()(X, Y, A)
    np.testing.assert_allclose(grad, 2 * A * (X - Y) * X, rtol=1e-5)
    loss_value, _ = opt(X, Y, A)
    np.testing.assert_allclose(loss_value, np.sum(A * (X - Y) ** 2), rtol=1e-5)


@pytest.mark.parametrize("cls", [compileSGD, compileCG])
def test_model_random_streams_advance(rng, cls):
    """Dropout-like draws registered in the model's ``_rng_updates`` change at every call."""
    x, y = pt.vector("x"), pt.vector("y")
    W = _shared(np.ones(N_PROBE), "W")
    generator = pytensor.shared(np.random.default_rng(0), name="rng")
    next_generator, mask = pt.random.uniform(size=(N_PROBE,), rng=generator, dtype="float32",
                                             return_next_rng=True)
    loss = pt.sum(x * W * mask)
    model = _model(x, y, loss, loss, [W], _rng_updates={generator: next_generator})
    opt = cls({"LR": 0.0, "momentum": 0.0} if cls is compileSGD else {}, model)
    g = np.ones(N_PROBE, np.float32)
    assert opt.get_loss(g, DUMMY_Y)[0] != opt.get_loss(g, DUMMY_Y)[0]
    if cls is compileSGD:
        assert opt(g, DUMMY_Y)[0] != opt(g, DUMMY_Y)[0]


@pytest.mark.parametrize("loss, grads, expected", [
    (1.0, [[3e38, 3e38, 3e38], [-3e38, 1.0]], True),  # float32 extremes do not overflow
    (1.0, [[1.0, np.nan], [0.0]], False),
    (1.0, [[np.inf], [-np.inf]], False),  # opposite infinities in different gradients
    (1.0, [[0.0], [np.inf, -np.inf]], False),
    (np.inf, [[0.0], [0.0]], False),
    (np.nan, [[0.0], [0.0]], False),
])
def test_all_finite(loss, grads, expected):
    loss_v = pt.scalar("loss", dtype="float32")
    grad_vs = [pt.vector(f"g{i}", dtype="float32") for i in range(len(grads))]
    f = pytensor.function([loss_v, *grad_vs], all_finite(loss_v, grad_vs))
    assert bool(f(np.float32(loss), *[np.asarray(g, np.float32) for g in grads])) is expected


# --- the fused update of the "numpy" mode -----------------------------------------------------


def _step_ops(opt):
    return [type(node.op).__name__ for node in opt.step.maker.fgraph.apply_nodes]


@pytest.mark.parametrize("name", list(STEP_OPTIMISERS))
def test_fused_step_equals_symbolic_step(rng, name, monkeypatch):
    """The one-node step of the numpy mode against the symbolic rules, over several steps."""
    cls, hp = STEP_OPTIMISERS[name]
    seed = int(rng.integers(1 << 30))
    runs = []
    for fused in (True, False):
        with monkeypatch.context() as patch:
            if not fused:
                patch.setattr(opt_mod.Optimizer, "_fusable", lambda self, rule: False)
            model = probe_model(np.random.default_rng(seed))
            model.global_weightdecay.set_value(_f32(0.01))
            opt = cls(dict(hp), model)
        assert ("FusedUpdate" in _step_ops(opt)) == fused
        data = np.random.default_rng(seed + 1)
        losses = [opt(probe_input(data), DUMMY_Y)[0] for _ in range(4)]
        runs.append((losses, values(model), [v.get_value() for v, _ in opt._state]))
    (l1, p1, s1), (l2, p2, s2) = runs
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(p1 + s1, p2 + s2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(STEP_OPTIMISERS))
def test_fused_step_is_one_node(rng, name):
    cls, hp = STEP_OPTIMISERS[name]
    opt = cls(dict(hp), probe_model(rng), mode="numpy")
    ops = _step_ops(opt)
    assert ops.count("FusedUpdate") == 1 and "Switch" not in str(opt.step.maker.fgraph.outputs)


def test_gradient_aliasing_its_parameter_falls_back(rng):
    """A gradient that is the parameter itself: the step cannot destroy w in place."""
    w = _shared([1.0, -2.0], "w")
    x, y = pt.vector("x"), pt.vector("y")
    model = _model(x, y, 0.5 * pt.sum(w * w) + 0 * x.sum(), None, [w], gradients=[w])
    opt = compileSGD({"LR": 0.1, "momentum": 0.5}, model)
    assert "FusedUpdate" not in _step_ops(opt)
    for _ in range(2):
        opt(np.zeros(1, np.float32), DUMMY_Y)
    # v1 = w0, w1 = 0.9 w0; v2 = w1 + 0.5 v1 = 1.4 w0, w2 = w1 - 0.14 w0 = 0.76 w0
    np.testing.assert_allclose(w.get_value(), [0.76, -1.52], rtol=1e-6)


@pytest.mark.jax
@pytest.mark.slow
def test_jax_mode_keeps_the_symbolic_step(rng):
    pytest.importorskip("jax")
    opt = compileSGD({"LR": 0.1, "momentum": 0.9}, probe_model(rng), mode="jax")
    assert opt.step.maker.linker.__class__.__name__ == "JAXLinker"
    assert "FusedUpdate" not in _step_ops(opt)
    opt(probe_input(rng), DUMMY_Y)


# --- the step called with converted arguments (MixedConvNN.trainingStep) ---------------------


def test_call_converted_steps_like_call(rng):
    seed = int(rng.integers(1 << 30))
    models = [probe_model(np.random.default_rng(seed)) for _ in range(2)]
    opts = [compileSGD({"LR": 0.1, "momentum": 0.9}, m) for m in models]
    for _ in range(3):
        g = probe_input(rng)
        a = opts[0](g, DUMMY_Y)
        b = opts[1].call_converted(g, DUMMY_Y)
        assert a[0] == b[0] and isinstance(b[0], np.float32)
        assert opts[1].step.trust_input is False
    for p, q in zip(values(models[0]), values(models[1]), strict=True):
        np.testing.assert_array_equal(p, q)


def test_call_converted_validates_what_it_cannot_trust(rng):
    """Arguments of another dtype, rank or static shape take PyTensor's checked path."""
    opt = compileSGD({"LR": 0.1, "momentum": 0.9}, probe_model(rng))
    before = [p.get_value() for p in opt.params]
    for bad in (probe_input(rng).astype(np.float64), probe_input(rng)[None]):
        assert not opt._exact_inputs((bad, DUMMY_Y))
        with pytest.raises(TypeError):
            opt.call_converted(bad, DUMMY_Y)
        assert opt.step.trust_input is False
    for p, b in zip(opt.params, before, strict=True):
        np.testing.assert_array_equal(p.get_value(), b)
    listed = probe_input(rng).tolist()  # converted by PyTensor's filter, as by __call__
    assert not opt._exact_inputs((listed, DUMMY_Y))
    loss = opt.call_converted(listed, DUMMY_Y)[0]
    np.testing.assert_allclose(loss, np.float32(listed) @ np.concatenate(
        [b.ravel() for b in before]), rtol=1e-5)
    with pytest.raises(NonFiniteLossError):  # the trusted path keeps the guard
        opt.call_converted(np.full(N_PROBE, np.nan, np.float32), DUMMY_Y)
    assert opt.step.trust_input is False
