"""An MLP and a small CNN learn a small generated image data set (issue: training)."""

import numpy as np
import pytest

from elektronn.net.convnet import MixedConvNN


def shapes_dataset(n, rng):
    """10x10 grey images of four classes: horizontal bar, vertical bar, cross, empty square,
    at random positions and contrasts, with Gaussian noise."""
    x = np.zeros((n, 1, 10, 10), np.float32)
    y = rng.integers(0, 4, n)
    for i, c in enumerate(y):
        r, q = rng.integers(2, 8, 2)
        a = rng.uniform(0.6, 1.0)
        if c in (0, 2):
            x[i, 0, r, 1:9] = a
        if c in (1, 2):
            x[i, 0, 1:9, q] = a
        if c == 3:
            lo, hi = rng.integers(1, 3), rng.integers(7, 9)
            x[i, 0, lo:hi, [lo, hi - 1]] = a
            x[i, 0, [lo, hi - 1], lo:hi] = a
    x += rng.normal(0, 0.15, x.shape).astype(np.float32)
    return x, y.astype(np.int16)


def train(cnn, x, y, steps, batch, rng, mode="SGD"):
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        cnn.trainingStep(x[idx], y[idx], mode=mode)


def accuracy(cnn, x, y, batch):
    pred = np.concatenate([cnn.class_probabilities(x[i:i + batch]).argmax(1)
                           for i in range(0, len(x), batch)])
    return (pred == y).mean()


@pytest.mark.slow
def test_mlp_learns_shapes():
    rng = np.random.default_rng(0)
    x, y = shapes_dataset(1200, rng)
    xt, yt = shapes_dataset(400, rng)
    mlp = MixedConvNN((100,), batch_size=40, seed=0)
    mlp.addPerceptronLayer(64, "tanh")
    mlp.addPerceptronLayer(4, "linear")
    mlp.compileOutputFunctions("nll")
    mlp.setOptimizerParams(Adam={"LR": 3e-3})
    train(mlp, x.reshape(-1, 100), y, 600, 40, rng, mode="Adam")
    assert accuracy(mlp, xt.reshape(-1, 100), yt, 40) > 0.9


@pytest.mark.slow
def test_cnn_learns_shapes():
    rng = np.random.default_rng(1)
    x, y = shapes_dataset(1200, rng)
    xt, yt = shapes_dataset(400, rng)
    cnn = MixedConvNN((10, 10), input_depth=1, batch_size=40, seed=1)
    cnn.addConvLayer(8, 3, pool_shape=2, activation_func="relu")
    cnn.addPerceptronLayer(32, "tanh")
    cnn.addPerceptronLayer(4, "linear")
    cnn.compileOutputFunctions("nll")
    cnn.setOptimizerParams(SGD={"LR": 0.05, "momentum": 0.9})
    train(cnn, x, y, 600, 40, rng)
    assert accuracy(cnn, xt, yt, 40) > 0.9
