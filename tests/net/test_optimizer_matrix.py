"""Every optimiser trains every kind of net, in the default ("numpy") mode and in the JAX mode.

Each case builds a small net, takes 3 steps through ``MixedConvNN.trainingStep`` on one fixed
batch and checks what each optimiser promises: the losses are finite, the parameters moved, and
for SGD, Adam and L-BFGS (descent methods with small steps, or a line search that only accepts
decreases) the loss on the batch went down.  RPROP's first steps are tiny sign steps and CG's
line search keeps a worse point when the loss rises (as the original), so for them only finite
losses and moved parameters are required.  The checked ``get_loss`` must work after training
(an optimiser used to replace it).
"""

import numpy as np
import pytest

from elektronn import backend
from elektronn.defaults import OPTIMIZERS
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator

pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")

DECREASING = ("SGD", "Adam", "LBFGS")


def _conv2d(rng):
    cnn = MixedConvNN((10, 10), input_depth=2, batch_size=2, seed=1)
    cnn.addConvLayer(3, 3, pool_shape=2, activation_func="tanh")
    cnn.addConvLayer(3, 2, pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal(cnn.input_shape).astype(np.float32)
    return cnn, (x, rng.integers(0, 3, (2, *cnn.output_shape[2:])).astype(np.int16))


def _conv3d(rng):
    cnn = MixedConvNN((4, 10, 10), input_depth=1, batch_size=1, seed=2)
    cnn.addConvLayer(3, (1, 3, 3), pool_shape=(1, 2, 2), activation_func="relu")
    cnn.addConvLayer(2, (2, 2, 2), pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal(cnn.input_shape).astype(np.float32)
    return cnn, (x, rng.integers(0, 2, (1, *cnn.output_shape[2:])).astype(np.int16))


def _conv_perceptron(rng):
    cnn = MixedConvNN((10, 10), input_depth=1, batch_size=4, seed=3)
    cnn.addConvLayer(4, 3, pool_shape=2, activation_func="tanh")
    cnn.addPerceptronLayer(5, activation_func="tanh")
    cnn.addPerceptronLayer(3, activation_func="linear")
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal(cnn.input_shape).astype(np.float32)
    return cnn, (x, np.array([0, 1, 2, 1], np.int16))


def _mfp(rng):
    calc = CNNCalculator([3, 2], [2, 1], desired_input=12, MFP=[True, True], n_dim=2)
    cnn = MixedConvNN(calc.input, input_depth=1, batch_size=1, dimension_calc=calc, seed=4)
    cnn.addConvLayer(3, 3, pool_shape=2, activation_func="tanh", use_fragment_pooling=True)
    cnn.addConvLayer(2, 2, pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal(cnn.input_shape).astype(np.float32)
    return cnn, (x, rng.integers(0, 2, (1, *cnn.output_shape[2:])).astype(np.int16))


def _mlp(rng):
    cnn = MixedConvNN((6,), batch_size=8, seed=5)
    cnn.addPerceptronLayer(5, activation_func="tanh")
    cnn.addPerceptronLayer(3, activation_func="linear")
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal((8, 6)).astype(np.float32)
    return cnn, (x, rng.integers(0, 3, 8).astype(np.int16))


def _affinity_net(rng, target):
    cnn = MixedConvNN((4, 10, 10), input_depth=1, batch_size=1, seed=6)
    cnn.addConvLayer(3, (1, 3, 3), pool_shape=(1, 2, 2), activation_func="tanh")
    cnn.addConvLayer(2, (2, 2, 2), pool_shape=1, activation_func="linear", is_last_layer=True,
                     affinity="malis" if target == "malis" else True)
    cnn.compileOutputFunctions(target=target)
    x = rng.standard_normal(cnn.input_shape).astype(np.float32)
    spatial = cnn.output_shape[2:]
    seg = np.zeros((1, *spatial), np.int16)  # two objects separated by background
    seg[:, :, :2], seg[:, :, 3:] = 1, 2
    aff = np.zeros((1, 3, *spatial), np.int16)
    aff[:, 0, 1:] = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    aff[:, 1, :, 1:] = (seg[:, :, 1:] == seg[:, :, :-1]) & (seg[:, :, 1:] > 0)
    aff[:, 2, :, :, 1:] = (seg[..., 1:] == seg[..., :-1]) & (seg[..., 1:] > 0)
    return cnn, ((x, aff, seg) if target == "malis" else (x, aff))


def _rnn(rng):
    cnn = MixedConvNN((4,), input_depth=3, batch_size=5, recurrent=True, seed=7)
    cnn.addRecurrentLayer(n_hid=6, activation_func="tanh")
    cnn.addPerceptronLayer(2, activation_func="linear")
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    return cnn, (x, rng.integers(0, 2, 5).astype(np.int16))


NETS = {
    "conv2d": _conv2d,
    "conv3d": _conv3d,
    "conv+perceptron": _conv_perceptron,
    "mfp": _mfp,
    "mlp": _mlp,
    "affinity": lambda rng: _affinity_net(rng, "affinity"),
    "malis": lambda rng: _affinity_net(rng, "malis"),
    "rnn": _rnn,
}


@pytest.fixture(params=["numpy", pytest.param("jax", marks=[pytest.mark.slow, pytest.mark.jax])])
def compile_mode(request):
    """Build (and so compile) the nets of a test in the given mode."""
    if request.param == "jax":
        pytest.importorskip("jax")
    with backend.mode(request.param):
        yield request.param


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("kind", list(NETS))
def test_optimizer_trains_net(kind, optimizer, compile_mode, rng):
    cnn, args = NETS[kind](rng)
    cnn.setOptimizerParams(SGD={"LR": 0.01, "momentum": 0.9}, Adam={"LR": 0.01},
                           LBFGS={"maxfun": 8, "maxiter": 2}, CG={"n_steps": 2})
    loss0 = cnn.get_loss(*args)[0]
    before = [p.get_value() for p in cnn.params]
    losses = [cnn.trainingStep(*args, mode=optimizer)[0] for _ in range(3)]
    assert np.all(np.isfinite(losses)), losses
    assert any(not np.array_equal(b, p.get_value()) for b, p in zip(before, cnn.params))
    loss3 = cnn.get_loss(*args)[0]  # the net's checked function, after training
    assert np.isfinite(loss3)
    if optimizer in DECREASING and kind != "malis":  # MALIS reweights its loss every step
        assert loss3 < loss0, (loss0, losses, loss3)
