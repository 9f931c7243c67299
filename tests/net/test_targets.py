"""Every training target on a small net: its loss against numpy, its gradients against finite
differences of the whole net, and one SGD step that moves along them and lowers the loss.

The numpy loss formulas are those of tests/net/test_losses.py (written from ELEKTRONN 1.0's
definitions); here they are applied to the compiled net's own outputs.
"""

import numpy as np
import pytest

from elektronn.net.convnet import MixedConvNN
from elektronn.net.losses import EPS
from elektronn.ops.malis import malis_weights

LR = 1e-3
EPS_FD = 2e-3  # small enough not to cross max-pooling kinks, large against float32 rounding


def _net_2d(last):
    cnn = MixedConvNN((10, 10), input_depth=2, batch_size=2, enable_dropout=False, seed=1)
    cnn.addConvLayer(3, 3, pool_shape=2, activation_func="tanh")
    if last == "conv":
        cnn.addConvLayer(3, 2, pool_shape=1, activation_func="linear", is_last_layer=True)
    else:
        cnn.addPerceptronLayer(4, activation_func="linear")
    return cnn


def _net_3d(affinity=False):
    cnn = MixedConvNN((4, 14, 14), input_depth=1, batch_size=1, enable_dropout=False, seed=2)
    cnn.addConvLayer(3, (1, 3, 3), pool_shape=(1, 2, 2), activation_func="tanh")
    cnn.addConvLayer(2, (2, 2, 2), pool_shape=1, activation_func="linear", is_last_layer=True,
                     affinity=affinity)
    return cnn


def _log_p_of(P, y):
    """``log(P[label] + EPS)`` per pixel for class-axis-1 probabilities."""
    return np.log(np.take_along_axis(P, y[:, None].astype(np.int64), axis=1)[:, 0] + EPS)


def _nll(cnn, x, y):
    return -_log_p_of(cnn.class_probabilities(x), y).mean()


def _nll_weak(cnn, x, y):
    P = cnn.class_probabilities(x).astype(np.float64)
    S = (y[:, None] == np.arange(P.shape[1]).reshape(1, -1, 1, 1)).astype(float)
    return (-(0.5 * S + 0.5 * P) * np.log(P + EPS)).sum() / S.sum()


def _regression(cnn, x, t):
    out = cnn.prediction(x).astype(np.float64)
    return ((out - t[:, None]) ** 2).mean()


def _multiple_binary(cnn, x, y):
    p0 = cnn.class_probabilities(x)[..., 0].astype(np.float64)  # N36: P(label 0)
    return (-np.log(p0 + EPS) * (1 - y) - np.log(1 - p0 + EPS) * y).mean()


def _affinity(cnn, x, y):
    P = cnn.class_probabilities(x)  # (bs, 2 * 3 edges, z, x, y)
    return np.mean([-_log_p_of(P[:, 2 * e:2 * e + 2], y[:, e]).mean() for e in range(3)])


def _malis(cnn, x, aff, seg):
    P = cnn.class_probabilities(x).astype(np.float64)
    aff_pred, dis_pred = P[0, 1::2], P[0, 0::2]
    pos, neg = malis_weights(aff_pred.astype(np.float32), aff[0], seg[0], unrestrict_neg=True)
    nll = (-pos * np.log(aff_pred) - neg * np.log(dis_pred)).sum()
    return nll / (pos.sum() + neg.sum() + 1e-6)


def _case(target, rng):
    """``(net, loss arguments, numpy loss)`` of ``target``."""
    if target in ("nll", "nll_weak", "regression"):
        cnn = _net_2d("conv")
        cnn.compileOutputFunctions(target=target)
        x = rng.standard_normal(cnn.input_shape).astype(np.float32)
        out_sp = cnn.output_shape[2:]
        if target == "regression":
            y = rng.standard_normal((2, *out_sp)).astype(np.float32)
            return cnn, (x, y), _regression
        y = rng.integers(0, 3, (2, *out_sp)).astype(np.int16)
        return cnn, (x, y), _nll if target == "nll" else _nll_weak
    if target == "nll_mutiple_binary":
        cnn = _net_2d("perceptron")
        cnn.compileOutputFunctions(target=target)
        x = rng.standard_normal(cnn.input_shape).astype(np.float32)
        return cnn, (x, rng.integers(0, 2, (2, 4)).astype(np.int16)), _multiple_binary
    if target == "nll_3d":
        cnn = _net_3d()
        cnn.compileOutputFunctions(target="nll")
        x = rng.standard_normal(cnn.input_shape).astype(np.float32)
        y = rng.integers(0, 2, (1, 3, 5, 5)).astype(np.int16)
        return cnn, (x, y), _nll
    cnn = _net_3d(affinity="malis" if target == "malis" else True)
    cnn.compileOutputFunctions(target=target)
    x = rng.standard_normal(cnn.input_shape).astype(np.float32)
    seg = np.zeros((1, 3, 5, 5), np.int16)  # two objects and a boundary of background
    seg[:, :, :2], seg[:, :, 3:] = 1, 2
    aff = np.stack([  # affinity 1 between equal, non-background neighbours (z, x, y edges)
        np.pad((seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0), ((0, 0), (1, 0), (0, 0), (0, 0))),
        np.pad((seg[:, :, 1:] == seg[:, :, :-1]) & (seg[:, :, 1:] > 0),
               ((0, 0), (0, 0), (1, 0), (0, 0))),
        np.pad((seg[..., 1:] == seg[..., :-1]) & (seg[..., 1:] > 0),
               ((0, 0), (0, 0), (0, 0), (1, 0))),
    ], axis=1).astype(np.int16)
    if target == "malis":
        return cnn, (x, aff, seg), _malis
    return cnn, (x, aff), _affinity


def _directional_fd(cnn, args, param, direction, eps):
    """Central difference of the net's loss along ``direction`` of one parameter."""
    value = param.get_value()
    losses = []
    for sign in (1, -1):
        param.set_value((value + sign * eps * direction).astype(np.float32))
        losses.append(float(np.float64(cnn.get_loss(*args)[0])))
    param.set_value(value)
    return (losses[0] - losses[1]) / (2 * eps)


TARGETS = ["nll", "nll_3d", "nll_weak", "regression", "nll_mutiple_binary", "affinity", "malis"]


@pytest.mark.parametrize("target", TARGETS)
def test_target_loss_gradients_and_one_step(target):
    rng = np.random.default_rng(TARGETS.index(target))
    cnn, args, reference = _case(target, rng)
    loss = float(cnn.get_loss(*args)[0])
    assert loss == pytest.approx(reference(cnn, *args), rel=1e-5)

    # the compiled gradients, against finite differences of the whole net per parameter
    cnn.compileDebugFunctions(gradients=True)
    grads = cnn.debug_gradients_function(*args)
    assert len(grads) == len(cnn.params)
    for param, grad in zip(cnn.params, grads, strict=True):
        assert grad.shape == param.get_value().shape
        # along the gradient itself: the largest slope, well above float32 rounding, and a
        # wrong gradient (a sign, a factor, a missing term) is not its own steepest direction
        direction = grad / np.linalg.norm(grad)
        # MALIS: the pair weights are piecewise constant in the prediction (the gradient
        # treats them as constants), so the step must stay within one piece
        eps, rel = (5e-4, 5e-3) if target == "malis" else (EPS_FD, 2e-3)
        numeric = _directional_fd(cnn, args, param, direction, eps=eps)
        analytic = float(np.linalg.norm(grad))
        assert analytic == pytest.approx(numeric, rel=rel), param.name
    assert any(np.abs(g).max() > 1e-4 for g in grads)

    # one SGD step without momentum or weight decay is params - LR * gradients
    cnn.setOptimizerParams(SGD={"LR": LR, "momentum": 0.0}, weight_decay=0.0)
    before = [p.get_value() for p in cnn.params]
    step_loss = float(cnn.trainingStep(*args, mode="SGD")[0])
    assert step_loss == pytest.approx(loss, rel=1e-6)  # the loss before the update
    for b, g, p in zip(before, grads, cnn.params, strict=True):
        np.testing.assert_allclose(p.get_value(), b - LR * g, rtol=1e-5, atol=1e-8)
    assert float(cnn.get_loss(*args)[0]) < loss


def _affinity_weighted(P, y, weights):
    """Mean over the 3 edges of the weighted NLL of the edge's 2 classes."""
    losses = []
    for e in range(3):
        log_p = _log_p_of(P[:, 2 * e:2 * e + 2], y[:, e]).astype(np.float64)
        losses.append(-(log_p * weights[y[:, e]]).sum() / y[:, e].size)
    return np.mean(losses)


def test_affinity_with_class_weights(rng):
    """The class weights of an affinity net weight the 2 classes of each edge (length 2, as
    the original); they were declared with the net's 6 outputs and the loss failed."""
    cnn, (x, aff), _ = _case("affinity", rng)
    cnn.compileOutputFunctions(target="affinity", use_class_weights=True)
    weights = np.array([0.5, 2.0], np.float32)
    P = cnn.class_probabilities(x)
    np.testing.assert_allclose(cnn.get_loss(x, aff, weights)[0],
                               _affinity_weighted(P, aff, weights), rtol=1e-5)
    np.testing.assert_allclose(cnn.get_loss(x, aff, np.ones(2, np.float32))[0],
                               _affinity(cnn, x, aff), rtol=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        cnn.get_loss(x, aff, np.ones(6, np.float32))
    loss, _, _ = cnn.trainingStep(x, aff, weights, mode="SGD")
    assert np.isfinite(loss) and cnn.get_loss(x, aff, weights)[0] != loss
