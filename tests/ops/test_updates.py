"""The fused optimiser step (elektronn.ops.updates) against numpy references of the rules.

The references below are written out in float32, operation by operation, from the formulas of
elektronn.net.updates; the C kernel and the numpy fallback must equal them bit for bit (no
fused multiply-add, the same order), for small gradients (gathered into one buffer) and large
ones (passed one by one), contiguous or transposed.
"""

import numpy as np
import pytensor
import pytest

from elektronn import backend
from elektronn.ops import _kernels, updates
from elektronn.ops.updates import FusedUpdate, apply_update, fused_updates

F = np.float32
SHAPES = [(3, 4), (5,), (2, 3, 2)]


def _arrays(rng, shapes, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(F) for s in shapes]


def ref_sgd(grads, params, vel, lr, mu, wd):
    lr, mu, wd = F(lr), F(mu), F(wd)
    out_p, out_v = [], []
    for g, p, v in zip(grads, params, vel, strict=True):
        nv = g + mu * v
        out_p.append((p - lr * nv) - (lr * wd) * p)
        out_v.append(nv)
    return out_p, out_v


def ref_adam(grads, params, ms, vs, t, lr, b1, b2, eps):
    lr, b1, b2, eps = F(lr), F(b1), F(b2), F(eps)
    t = F(t) + F(1)
    a = lr * np.sqrt(F(1) - b2**t) / (F(1) - b1**t)
    res = [], [], []
    for g, p, m, v in zip(grads, params, ms, vs, strict=True):
        nm = b1 * m + (F(1) - b1) * g
        nv = b2 * v + (F(1) - b2) * (g * g)
        res[0].append(p - (a * nm) / (np.sqrt(nv) + eps))
        res[1].append(nm)
        res[2].append(nv)
    return (*res, t)


def ref_rprop(grads, params, last, eta, pen, gain, wd, low, high):
    pen, gain, wd = F(pen), F(gain), F(wd)
    res = [], [], []
    for g, p, lg, e in zip(grads, params, last, eta, strict=True):
        s = lg * g
        f = (F(1) - pen * (s < F(-1e-9)).astype(F)) + gain * (s > F(1e-11)).astype(F)
        res[0].append((p - (e * g) / (np.abs(g) + F(1e-6))) - wd * p)
        res[1].append(g.copy())
        res[2].append(np.clip(e * f, F(low), F(high)))
    return res


@pytest.fixture(params=["c", "numpy"])
def kernels(request, monkeypatch):
    """Run each test with the C kernel and with the numpy fallback."""
    if request.param == "c":
        if _kernels.kernel_library() is None:
            pytest.skip("C kernels unavailable")
    else:
        monkeypatch.setattr(_kernels, "use_c_kernels", False)
    return request.param


@pytest.mark.parametrize("scale", [1, 40])  # 40: above the size gathered into one buffer
@pytest.mark.parametrize("transposed", [False, True])
def test_sgd_matches_reference(rng, kernels, scale, transposed):
    shapes = [tuple(s * scale if i == 0 else s for i, s in enumerate(sh)) for sh in SHAPES]
    if scale > 1:
        shapes[0] = (200, 400)
        assert 200 * 400 > updates._GATHER_MAX
    params, vel = _arrays(rng, shapes), _arrays(rng, shapes)
    cache = {}
    for _ in range(3):
        grads = _arrays(rng, shapes)
        if transposed:  # gradients as transposed views, as the conv graphs produce them
            grads = [np.ascontiguousarray(g.T).T for g in grads]
        want_p, want_v = ref_sgd(grads, params, vel, 0.1, 0.9, 0.01)
        ids = [id(a) for a in params + vel]
        assert apply_update("sgd", F(2.5), grads, params + vel, [F(0.1), F(0.9), F(0.01)], cache)
        assert [id(a) for a in params + vel] == ids  # in place
        for got, want in zip(params + vel, want_p + want_v, strict=True):
            np.testing.assert_array_equal(got, want)


def test_adam_several_steps_match_reference(rng, kernels):
    params = _arrays(rng, SHAPES)
    ms, vs = [np.zeros(s, F) for s in SHAPES], [np.zeros(s, F) for s in SHAPES]
    t = np.zeros((), F)
    hp = (F(0.01), F(0.8), F(0.99), F(1e-3))
    cache = {}
    for step in range(1, 5):
        grads = _arrays(rng, SHAPES)
        want = ref_adam(grads, params, ms, vs, t, *hp)
        assert apply_update("adam", F(1), grads, params + ms + vs + [t], hp, cache)
        for got, w in zip(params + ms + vs, want[0] + want[1] + want[2], strict=True):
            np.testing.assert_array_equal(got, w)
        assert t == step and t.dtype == F


def test_rprop_matches_reference(rng, kernels):
    params, last = _arrays(rng, SHAPES), _arrays(rng, SHAPES)
    eta = [np.full(s, 1e-3, F) for s in SHAPES]
    eta[0].flat[:3] = [1e-7, 2e-3, 1.9e-3]  # at and near the bounds
    for _ in range(3):
        grads = _arrays(rng, SHAPES)
        grads[1][0] = 0.0
        want = ref_rprop(grads, params, last, eta, 0.5, 1.2, 0.01, 1e-7, 2e-3)
        hp = [F(0.5), F(1.2), F(0.01), F(1e-7), F(2e-3)]
        assert apply_update("rprop", F(1), grads, params + last + eta, hp)
        for got, w in zip(params + last + eta, want[0] + want[1] + want[2], strict=True):
            np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("rule", ["sgd", "adam", "rprop"])
@pytest.mark.parametrize("bad", ["nan_grad", "inf_loss", "opposite_infs", "nan_loss"])
def test_non_finite_step_changes_nothing(rng, kernels, rule, bad):
    n_buffers = updates.RULES[rule][0]
    params = _arrays(rng, SHAPES)
    buffers = [a for _ in range(n_buffers) for a in _arrays(rng, SHAPES)]
    updated = params + buffers + ([np.asarray(3, F)] if rule == "adam" else [])
    before = [a.copy() for a in updated]
    grads, loss = _arrays(rng, SHAPES), F(1)
    if bad == "nan_grad":
        grads[2][1, 0, 1] = np.nan
    elif bad == "opposite_infs":  # each sum is +-inf, their float64 total is NaN
        grads[0][0, 0], grads[1][0] = np.inf, -np.inf
    else:
        loss = F(np.inf if bad == "inf_loss" else np.nan)
    hp = {"sgd": [0.1, 0.9, 0.0], "adam": [0.01, 0.9, 0.999, 1e-8],
          "rprop": [0.5, 1.2, 0.0, 1e-7, 2e-3]}[rule]
    assert apply_update(rule, loss, grads, updated, hp) is False
    for got, want in zip(updated, before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_large_finite_values_are_finite(kernels):
    """float32 values near the maximum: their float64 sum is finite (as all_finite decides)."""
    p, v = np.zeros(4, F), np.zeros(4, F)
    assert apply_update("sgd", F(3e38), [np.full(4, 3e38, F)], [p, v], [0.0, 0.0, 0.0])


def test_shape_mismatch_is_an_error(kernels):
    with pytest.raises(ValueError, match="shape"):
        apply_update("sgd", F(1), [np.zeros(3, F)], [np.zeros(3, F), np.zeros(4, F)],
                     [0.1, 0.9, 0.0])


def test_replaced_arrays_are_picked_up(rng, kernels):
    """A parameter replaced between steps (set_value) is updated, not the old array."""
    cache = {}
    p, v = np.ones(5, F), np.zeros(5, F)
    apply_update("sgd", F(1), [np.ones(5, F)], [p, v], [0.5, 0.0, 0.0], cache)
    old, p = p.copy(), np.full(5, 2, F)
    apply_update("sgd", F(1), [np.ones(5, F)], [p, v], [0.5, 0.0, 0.0], cache)
    np.testing.assert_array_equal(p, np.full(5, 1.5, F))
    np.testing.assert_array_equal(old, np.full(5, 0.5, F))


# --- the Op in compiled functions ---------------------------------------------------------


def _sgd_function(w, v, x, mode="numpy"):
    loss = (w * x).sum() ** 2
    finite, new = fused_updates("sgd", loss, [pytensor.grad(loss, w)], [w], [[v]],
                                [0.1, 0.9, 0.0])
    return pytensor.function([x], [loss, finite], updates=new, accept_inplace=True,
                             mode=backend.get_mode(mode))


@pytest.mark.parametrize("mode", ["numpy", "py", "c"])
def test_op_updates_shared_variables_in_place(rng, mode):
    w0 = rng.standard_normal(4).astype(F)
    w = pytensor.shared(w0.copy(), name="w")
    v = pytensor.shared(np.zeros(4, F), name="v")
    x = pytensor.tensor.vector("x", dtype="float32")
    step = _sgd_function(w, v, x, mode)
    held = w.get_value(borrow=True)
    copy = w.get_value()
    want_w, want_v = w0, np.zeros(4, F)
    for _ in range(3):
        xv = rng.standard_normal(4).astype(F)
        loss, finite = step(xv)
        assert bool(finite)
        np.testing.assert_allclose(loss, F(want_w @ xv) ** 2, rtol=1e-5)
        g = F(2) * F(want_w @ xv) * xv
        (want_w,), (want_v,) = ref_sgd([g], [want_w], [want_v], 0.1, 0.9, 0.0)
        np.testing.assert_allclose(w.get_value(), want_w, rtol=1e-5)
        np.testing.assert_allclose(v.get_value(), want_v, rtol=1e-5)
    np.testing.assert_array_equal(copy, w0)  # a copy taken before is not touched
    if mode == "numpy":  # the array held by the shared variable was updated in place
        assert w.get_value(borrow=True) is held
    xv = np.full(4, np.nan, F)
    before = w.get_value()
    assert not bool(step(xv)[1])
    np.testing.assert_array_equal(w.get_value(), before)


def test_op_checks_its_inputs():
    w = pytensor.shared(np.zeros(3, F))
    v64 = pytensor.shared(np.zeros(3))
    with pytest.raises(ValueError, match="float32"):
        fused_updates("sgd", w.sum(), [w * 2], [w], [[v64]], [0.1, 0.9, 0.0])
    with pytest.raises(ValueError, match="rule"):
        FusedUpdate("momentum", 1)
    with pytest.raises(ValueError, match="inputs"):
        FusedUpdate("sgd", 1)(w.sum(), w, w)
    with pytest.raises(ValueError, match="step counter"):
        fused_updates("adam", w.sum(), [w], [w], [[w], [w]], [0.1, 0.9, 0.9, 1e-8])


def test_op_pickles_without_its_cache(rng):
    import pickle

    op = FusedUpdate("sgd", 1)
    op._cache["args"] = object()
    clone = pickle.loads(pickle.dumps(op))
    assert clone == op and clone._cache == {}


def test_cache_keeps_no_replaced_array_alive(kernels):
    import weakref

    cache, v = {}, np.zeros(5, F)
    p = np.ones(5, F)
    apply_update("sgd", F(1), [np.ones(5, F)], [p, v], [0.5, 0.0, 0.0], cache)
    gone = weakref.ref(p)
    p = np.ones(5, F)
    assert gone() is None
    apply_update("sgd", F(1), [np.ones(5, F)], [p, v], [0.5, 0.0, 0.0], cache)
    np.testing.assert_array_equal(p, np.full(5, 0.5, F))
