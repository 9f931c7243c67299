"""Losses and error rates against numpy references written from ELEKTRONN 1.0's formulas."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.special import softmax

from elektronn.net import losses
from elektronn.ops.malis import malis_weights

MODE = "FAST_COMPILE"
EPS = 1e-6
TOL = {"rtol": 1e-4, "atol": 1e-6}
SHAPES = {  # rule -> shape of P: (bs, K, *spatial)
    "3d": (2, 3, 2, 3, 4),
    "2d": (3, 4, 3, 5),
    "perceptron": (7, 5),
}
RULES = {  # how each layer calls nll
    "3d": {},
    "2d": {"dn_count": "pairs", "instance": "pixels"},
    "perceptron": {"instance": "classes"},
}


def _compile(inputs, outputs):
    return pytensor.function(inputs, outputs, mode=MODE)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(rng, shape, scale=3.0):
    """Logits, their softmax and int16 labels in [-1, K] (-1 and K both select no class)."""
    logits = (scale * rng.standard_normal(shape)).astype(np.float32)
    y = rng.integers(-1, shape[1] + 1, (shape[0], *shape[2:])).astype(np.int16)
    return logits, _softmax(logits.astype(np.float64)), y


def _sym(name, value):
    return pt.tensor(name, dtype=value.dtype, shape=(None,) * value.ndim)


def _ref_nll(P, y, cw=None, ew=None, ml=None, mn=None, t=None, dn_count="voxels"):
    """ELEKTRONN 1.0's rule (fixes: docs/differences.md) per element; returns (loss, terms)."""
    bs, K = P.shape[:2]
    terms = np.zeros(P.shape)
    n_up = 0
    for b in range(bs):
        for v in np.ndindex(P.shape[2:]):
            label = y[(b, *v)]
            for k in range(K):
                p = P[(b, k, *v)]
                w = (1.0 if cw is None else cw[k]) * (1.0 if ew is None else ew[(b, *v)])
                hit = label == k and (ml is None or ml[b, k] == 1)
                if t is not None and p > t:
                    unlabeled = ml[b, k] == 0 if ml is not None else not 0 <= label < K
                    hit = hit or unlabeled
                if hit:
                    terms[(b, k, *v)] -= np.log(p + EPS) * w
                    n_up += 1
                if mn is not None:
                    terms[(b, k, *v)] -= np.log(1 - p * mn[b, k] * w + EPS)
    n_dn = 0
    if mn is not None:
        n_dn = mn.sum() * (np.prod(P.shape[2:]) if dn_count == "voxels" else 1)
    return terms.sum() / ((n_up + n_dn) or 1), terms


def _ref_instance(loss, terms, rule):
    return {"3d": loss, "2d": terms.sum(axis=1), "perceptron": terms}[rule]


def _nll_function(shape, y, rule, **options):
    """Compile nll(softmax(logits), y, **options); array options become function inputs."""
    logits = pt.tensor("logits", shape=(None,) * len(shape))
    ys = _sym("y", y)
    inputs, values, kwargs = [logits, ys], [], dict(RULES[rule])
    for name, value in options.items():
        var = _sym(name, np.asarray(value))
        inputs.append(var)
        values.append(value)
        kwargs[name] = var
    loss, inst = losses.nll(softmax(logits, axis=1), ys, **kwargs)
    f = _compile(inputs, [loss, inst])
    return lambda lg: f(lg, y, *values), loss


def _check_nll(rng, rule, ref_options=None, **options):
    shape = SHAPES[rule]
    logits, P, y = _case(rng, shape)
    f, loss_var = _nll_function(shape, y, rule, **options)
    loss, inst = f(logits)
    ref_options = dict(options) if ref_options is None else ref_options
    if rule == "2d":
        ref_options["dn_count"] = "pairs"
    ref_loss, ref_terms = _ref_nll(P, y, **ref_options)
    assert loss_var.dtype == "float32"
    np.testing.assert_allclose(loss, ref_loss, **TOL)
    np.testing.assert_allclose(inst, _ref_instance(ref_loss, ref_terms, rule), **TOL)
    return P, y


def _masks(rng, bs, K):
    labeled = rng.integers(0, 2, (bs, K)).astype(np.int16)
    not_present = rng.integers(0, 2, (bs, K)).astype(np.int16)
    return labeled, not_present


# --- nll -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_nll_plain(rng, rule):
    _check_nll(rng, rule)


@pytest.mark.parametrize("rule", RULES)
def test_nll_class_weights(rng, rule):
    cw = rng.uniform(0.2, 2.0, SHAPES[rule][1]).astype(np.float32)
    _check_nll(rng, rule, ref_options={"cw": cw}, class_weights=cw)


@pytest.mark.parametrize("rule", ["3d", "2d"])
def test_nll_example_weights(rng, rule):
    shape = SHAPES[rule]
    ew = rng.uniform(0.0, 2.0, (shape[0], *shape[2:])).astype(np.float32)
    _check_nll(rng, rule, ref_options={"ew": ew}, example_weights=ew)


@pytest.mark.parametrize("rule", ["3d", "2d"])
def test_nll_lazy_label_masks(rng, rule):
    shape = SHAPES[rule]
    ml, mn = _masks(rng, *shape[:2])
    cw = rng.uniform(0.2, 1.0, shape[1]).astype(np.float32)
    ew = rng.uniform(0.0, 1.0, (shape[0], *shape[2:])).astype(np.float32)
    _check_nll(
        rng,
        rule,
        ref_options={"ml": ml, "mn": mn, "cw": cw, "ew": ew},
        mask_class_labeled=ml,
        mask_class_not_present=mn,
        class_weights=cw,
        example_weights=ew,
    )


def test_nll_single_masks(rng):
    ml, mn = _masks(rng, *SHAPES["3d"][:2])
    _check_nll(rng, "3d", ref_options={"ml": ml}, mask_class_labeled=ml)
    _check_nll(rng, "3d", ref_options={"mn": mn}, mask_class_not_present=mn)


def test_nll_down_vote_count_voxels_vs_pairs(rng):
    """N4: the 3-D rule counts (example, class, voxel) triples, the 2-D rule (example, class)."""
    shape = SHAPES["3d"]
    logits, P, y = _case(rng, shape)
    ml, mn = _masks(rng, *shape[:2])
    mn[0, 0] = 1
    results = {}
    for count in ("voxels", "pairs"):
        logits_sym, ys = pt.tensor("l", shape=(None,) * 5), _sym("y", y)
        mls, mns = _sym("ml", ml), _sym("mn", mn)
        loss, _ = losses.nll(
            softmax(logits_sym, axis=1),
            ys,
            mask_class_labeled=mls,
            mask_class_not_present=mns,
            dn_count=count,
        )
        results[count] = _compile([logits_sym, ys, mls, mns], loss)(logits, y, ml, mn)
        ref, _ = _ref_nll(P, y, ml=ml, mn=mn, dn_count=count)
        np.testing.assert_allclose(results[count], ref, **TOL)
    assert results["pairs"] > results["voxels"]


@pytest.mark.parametrize("rule", RULES)
def test_nll_label_propagation_without_masks(rng, rule):
    """Without masks propagation acts only on pixels whose label selects no class."""
    t = np.float32(0.6)
    P, y = _check_nll(rng, rule, ref_options={"t": t}, label_prop_thresh=t)
    assert (P.max(axis=1) > t)[(y < 0) | (y >= P.shape[1])].any()  # the case does propagate
    assert _ref_nll(P, y, t=t)[0] != _ref_nll(P, y)[0]


@pytest.mark.parametrize("rule", ["3d", "2d"])
def test_nll_label_propagation_with_masks(rng, rule):
    """With masks: on every pixel of a class marked unlabelled, whatever its label (original)."""
    shape = SHAPES[rule]
    ml, mn = _masks(rng, *shape[:2])
    t = np.float32(0.55)
    _check_nll(
        rng,
        rule,
        ref_options={"ml": ml, "mn": mn, "t": t},
        mask_class_labeled=ml,
        mask_class_not_present=mn,
        label_prop_thresh=t,
    )


def test_nll_label_propagation_with_mask_ignores_labels():
    P = np.array([[0.9, 0.1], [0.8, 0.2]], dtype=np.float32)  # perceptron layout (bs=2, K=2)
    y = np.array([1, 1], dtype=np.int16)
    ml = np.array([[0, 1], [1, 1]], dtype=np.int16)
    Ps, ys, mls = _sym("P", P), _sym("y", y), _sym("ml", ml)
    loss, inst = losses.nll(
        Ps, ys, mask_class_labeled=mls, label_prop_thresh=0.7, instance="classes"
    )
    loss, inst = _compile([Ps, ys, mls], [loss, inst])(P, y, ml)
    up = -np.log(np.array([[0.9, 0.1], [0.8, 0.2]]) + EPS) * [[1, 1], [0, 1]]
    np.testing.assert_allclose(inst, up, **TOL)
    np.testing.assert_allclose(loss, up.sum() / 3, **TOL)


def test_nll_nothing_labelled_gives_zero(rng):
    logits, _, y = _case(rng, SHAPES["3d"])
    f, _ = _nll_function(SHAPES["3d"], np.full_like(y, -1), "3d")
    assert f(logits)[0] == 0


# --- other losses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, instance", [("3d", "scalar"), ("2d", "scalar"), ("perceptron", "classes")]
)
def test_nll_weak(rng, rule, instance):
    shape = SHAPES[rule]
    logits, P, y = _case(rng, shape)
    cw = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    ls, ys, cws = pt.tensor("l", shape=(None,) * len(shape)), _sym("y", y), _sym("cw", cw)
    loss, inst = losses.nll_weak(softmax(ls, axis=1), ys, cws, instance=instance)
    loss, inst = _compile([ls, ys, cws], [loss, inst])(logits, y, cw)
    S = (y[:, None] == np.arange(shape[1]).reshape(1, -1, *[1] * (len(shape) - 2))).astype(float)
    terms = -(0.5 * S + 0.5 * P) * np.log(P + EPS) * cw.reshape(1, -1, *[1] * (len(shape) - 2))
    ref = terms.sum() / max(S.sum(), 1)
    np.testing.assert_allclose(loss, ref, **TOL)
    np.testing.assert_allclose(inst, ref if instance == "scalar" else terms, **TOL)


def test_nll_affinity_has_the_right_sign(rng):
    shape = (2, 3, 2, 3, 3)
    P = rng.uniform(0.01, 0.99, shape).astype(np.float32)
    y = rng.integers(0, 2, shape).astype(np.int16)
    cw = np.array([0.3, 2.0], dtype=np.float32)
    Ps, ys, cws = _sym("P", P), _sym("y", y), _sym("cw", cw)
    f = _compile([Ps, ys, cws], list(losses.nll_affinity(Ps, ys, cws)))
    loss, inst = f(P, y, cw)
    ref = -np.mean(y * np.log(P + 1e-8) * cw[1] + (1 - y) * np.log(1 - P + 1e-8) * cw[0])
    np.testing.assert_allclose(loss, ref, **TOL)
    assert inst == loss and loss > 0
    plain, _ = _compile([Ps, ys], list(losses.nll_affinity(Ps, ys)))(P, y)
    np.testing.assert_allclose(plain, -np.mean(y * np.log(P) + (1 - y) * np.log(1 - P)), rtol=1e-4)


def test_nll_multiple_binary(rng):
    a = rng.standard_normal((4, 3)).astype(np.float32) * 3
    y = rng.integers(0, 2, (4, 3)).astype(np.int16)
    cw = np.array([0.5, 1.5], dtype=np.float32)
    As, ys, cws = _sym("a", a), _sym("y", y), _sym("cw", cw)
    outs = losses.nll_multiple_binary(As, ys, cws)
    loss, inst, prob, pred = _compile([As, ys, cws], list(outs))(a, y, cw)
    p0 = np.exp(a) / (np.exp(a) + 1)
    ref_inst = -np.log(p0 + EPS) * (1 - y) * cw[0] - np.log(1 - p0 + EPS) * y * cw[1]
    np.testing.assert_allclose(inst, ref_inst, **TOL)
    np.testing.assert_allclose(loss, ref_inst.mean(), **TOL)
    np.testing.assert_allclose(prob, np.stack([p0, 1 - p0], axis=2), **TOL)
    np.testing.assert_array_equal(pred, (a < 0).astype(int))  # N36: high activation -> label 0
    assert outs[0].dtype == "float32"


def test_malis_loss_tuple(rng):
    seg = rng.integers(0, 3, (1, 2, 3, 3)).astype(np.int16)
    aff = rng.integers(0, 2, (1, 3, 2, 3, 3)).astype(np.int16)
    logits = rng.standard_normal((1, 6, 2, 3, 3)).astype(np.float32)
    ls, affs, segs = pt.tensor("l", shape=(None,) * 5), _sym("aff", aff), _sym("seg", seg)
    P = pt.concatenate([softmax(ls[:, 2 * e : 2 * e + 2], axis=1) for e in range(3)], axis=1)
    out = losses.malis_loss(P, affs, segs)
    got = _compile([ls, affs, segs], list(out))(logits, aff, seg)
    Pn = np.concatenate([_softmax(logits[:, 2 * e : 2 * e + 2]) for e in range(3)], axis=1)
    aff_pred, dis_pred = Pn[0, 1::2], Pn[0, 0::2]
    pos, neg = malis_weights(aff_pred.astype(np.float32), aff[0], seg[0], unrestrict_neg=True)
    n_tot = pos.sum() + neg.sum()
    splits = ((aff_pred < 0.5) * pos).sum()
    merges = ((aff_pred > 0.5) * neg).sum()
    nll = (-pos * np.log(aff_pred) - neg * np.log(dis_pred)).sum() / (n_tot + 1e-6)
    want = [nll, pos.sum(), neg.sum(), n_tot, splits, merges, (splits + merges) / (n_tot + 1e-6)]
    assert len(got) == 9
    np.testing.assert_allclose(got[:7], want, **TOL)
    np.testing.assert_array_equal(got[7], pos)
    np.testing.assert_array_equal(got[8], neg)
    grad = pytensor.grad(out[0], ls)
    assert np.isfinite(_compile([ls, affs, segs], grad)(logits, aff, seg)).all()


# --- regression and error rates --------------------------------------------------------------


def test_squared_distance_perceptron_with_mask(rng):
    out, target = rng.standard_normal((2, 4, 5)).astype(np.float32)
    mask = rng.integers(0, 2, (4, 5)).astype(np.float32)
    os, ts, ms = _sym("o", out), _sym("t", target), _sym("m", mask)
    loss, inst = _compile([os, ts, ms], list(losses.squared_distance(os, ts, ms)))(
        out, target, mask
    )
    ref = ((out - target) * mask) ** 2
    np.testing.assert_allclose(inst, ref, **TOL)
    np.testing.assert_allclose(loss, ref.mean(), **TOL)
    scalar = losses.squared_distance(os, ts, return_instancewise=False)
    assert scalar.ndim == 0 and scalar.dtype == "float32"
    np.testing.assert_allclose(
        _compile([os, ts], scalar)(out, target), ((out - target) ** 2).mean(), **TOL
    )


@pytest.mark.parametrize("shape, axis", [((2, 3, 4, 5), 1), ((2, 3, 4, 5, 6), 2)])
def test_squared_distance_conv_broadcasts_over_channels(rng, shape, axis):
    out = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape[:axis] + shape[axis + 1 :])  # float64: cast to float32
    os, ts = _sym("o", out), _sym("t", target)
    loss, inst = losses.squared_distance(os, ts, channel_axis=axis)
    assert loss.dtype == "float32"
    loss, inst = _compile([os, ts], [loss, inst])(out, target)
    ref = (out - np.expand_dims(target, axis)) ** 2
    np.testing.assert_allclose(inst, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, ref.mean(), rtol=1e-4)


def test_errors_conv_ignores_negative_labels():
    pred = np.array([[0, 1, 2], [1, 1, 0]], dtype=np.int64)
    y = np.array([[0, -1, 1], [-1, 1, 1]], dtype=np.int16)
    ps, ys = _sym("p", pred), _sym("y", y)
    f = _compile([ps, ys], losses.errors(ps, ys))
    np.testing.assert_allclose(f(pred, y), 2 / 4)
    assert np.isnan(f(pred, np.full_like(y, -1)))  # N37: nothing labelled -> NaN


def test_errors_perceptron_counts_negative_labels():
    pred = np.array([0, 1, 2, 1], dtype=np.int64)
    y = np.array([0, -1, 1, 1], dtype=np.int16)
    ps, ys = _sym("p", pred), _sym("y", y)
    err = losses.errors(ps, ys, ignore_unlabeled=False)
    assert err.dtype == "float32"
    np.testing.assert_allclose(_compile([ps, ys], err)(pred, y), 2 / 4)


def test_errors_no_tn_is_iou():
    pred = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=np.int64)
    y = np.array([[1, 1, 0, 0], [1, 0, 0, 1]], dtype=np.int16)
    ps, ys = _sym("p", pred), _sym("y", y)
    tp, fp, fn = 2, 2, 2
    np.testing.assert_allclose(
        _compile([ps, ys], losses.errors_no_tn(ps, ys))(pred, y), tp / (tp + fp + fn)
    )


# --- gradients and validation ----------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_nll_gradients_are_finite(rng, rule):
    shape = SHAPES[rule]
    logits, _, y = _case(rng, shape)
    ls, ys = pt.tensor("l", shape=(None,) * len(shape)), _sym("y", y)
    P = softmax(ls, axis=1)
    ml, mn = _masks(rng, *shape[:2])
    ew = np.ones((shape[0], *shape[2:]), dtype=np.float32)
    cw = np.full(shape[1], 0.9, dtype=np.float32)
    masks = {} if rule == "perceptron" else {"mask_class_labeled": ml, "mask_class_not_present": mn}
    costs = [
        losses.nll(P, ys, cw, ew, label_prop_thresh=0.6, **masks, **RULES[rule])[0],
        losses.nll_weak(P, ys, cw)[0],
    ]
    grads = pytensor.grad(costs[0] + costs[1], ls)
    value = _compile([ls, ys], grads)(logits, y)
    assert value.dtype == np.float32 and np.isfinite(value).all() and np.abs(value).sum() > 0


def test_other_gradients_are_finite(rng):
    a = pt.matrix("a")
    y = pt.tensor("y", dtype="int16", shape=(None, None))
    loss = losses.nll_multiple_binary(a, y)[0] + losses.nll_affinity(pt.sigmoid(a), y)[0]
    loss = loss + losses.squared_distance(a, y.astype("float32"), return_instancewise=False)
    g = _compile([a, y], pytensor.grad(loss, a))(
        rng.standard_normal((3, 4)).astype(np.float32), rng.integers(0, 2, (3, 4)).astype(np.int16)
    )
    assert np.isfinite(g).all()


def test_validation_messages():
    P = pt.tensor("P", shape=(None,) * 5)
    y3 = pt.tensor("y", dtype="int16", shape=(None,) * 3)
    y4 = pt.tensor("y", dtype="int16", shape=(None,) * 4)
    with pytest.raises(ValueError, match=r"y must have 4 dimensions \(bs, z, x, y\)"):
        losses.nll(P, y3)
    with pytest.raises(TypeError, match="y must hold integer labels"):
        losses.nll(P, pt.tensor("y", shape=(None,) * 4))
    with pytest.raises(TypeError, match="class_probabilities must be a float32"):
        losses.nll(y4, y3)
    with pytest.raises(ValueError, match="dn_count"):
        losses.nll(P, y4, dn_count="pixels")
    with pytest.raises(ValueError, match=r"class_weights must have 1 dimensions \(K,\)"):
        losses.nll(P, y4, class_weights=pt.matrix())
    with pytest.raises(ValueError, match=r"example_weights must have 4 dimensions"):
        losses.nll(P, y4, example_weights=pt.matrix())
    with pytest.raises(ValueError, match=r"mask_class_labeled must have 2 dimensions \(bs, K\)"):
        losses.nll(P, y4, mask_class_labeled=pt.vector())
    with pytest.raises(ValueError, match=r"y must have 1 dimensions \(bs,\)"):
        losses.nll(pt.matrix(), pt.tensor(dtype="int16", shape=(None, None)))
    with pytest.raises(ValueError, match="class_probabilities must have 5 dimensions"):
        losses.malis_loss(pt.tensor(shape=(None,) * 4), y4, y3)
    with pytest.raises(ValueError, match="seg_gt must have 4 dimensions"):
        losses.malis_loss(P, pt.tensor(dtype="int16", shape=(None,) * 5), y3)
    with pytest.raises(ValueError, match="target must have 3 dimensions"):
        losses.squared_distance(
            pt.tensor(shape=(None,) * 4), pt.tensor(shape=(None,) * 4), channel_axis=1
        )
    with pytest.raises(TypeError, match="prediction must hold integer"):
        losses.errors(pt.matrix(), pt.tensor(dtype="int16", shape=(None, None)))
    with pytest.raises(ValueError, match="y must have 2 dimensions"):
        losses.errors(pt.tensor(dtype="int64", shape=(None, None)), y3)
