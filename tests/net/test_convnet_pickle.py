"""Pickling a MixedConvNN: the recipe and the values travel, compiled functions are rebuilt."""

import pickle

import numpy as np
import pytensor
import pytest

from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator


def round_trip(cnn):
    return pickle.loads(pickle.dumps(cnn))


def conv_net_2d(mfp, seed=0):
    calc = CNNCalculator([3, 3, 1], [2, 1, 1], desired_input=20, MFP=[mfp] * 3, n_dim=2)
    cnn = MixedConvNN(calc.input, input_depth=2, batch_size=1, dimension_calc=calc, seed=seed,
                      enable_dropout=True)
    for i, (f, p) in enumerate(zip([3, 3, 1], [2, 1, 1], strict=True)):
        cnn.addConvLayer(3 if i == 2 else 4, f, pool_shape=p, activation_func="relu",
                         use_fragment_pooling=mfp, is_last_layer=i == 2)
    cnn.compileOutputFunctions(target="nll")
    return cnn


@pytest.mark.parametrize("mfp", [False, True])
def test_2d_conv_net_round_trip_predicts_identically(rng, mfp):
    cnn = conv_net_2d(mfp)
    cnn.setDropoutRates([0.25, 0.0])
    assert round_trip(cnn).getDropoutRates() == pytest.approx([0.25, 0.0])
    cnn.setDropoutRates([0.0, 0.0])  # dropout is random: predict without it
    cnn.setSGDLR(0.03)
    cnn.setOptimizerParams(SGD={"LR": 0.03, "momentum": 0.5}, Adam={"LR": 0.002},
                           weight_decay=0.001)
    img = rng.random((2, 31, 26), dtype=np.float32)
    want = cnn.predictDense(img, show_progress=False)
    copy = round_trip(cnn)
    assert copy is not cnn and copy.class_probabilities._fn is None  # compiled lazily
    np.testing.assert_array_equal(copy.predictDense(img, show_progress=False), want)
    assert copy.SGD_LR.get_value() == np.float32(0.03)
    assert copy.SGD_momentum.get_value() == np.float32(0.5)
    assert copy.global_weightdecay.get_value() == np.float32(0.001)
    assert copy._optimizer_params["Adam"]["LR"] == 0.002
    assert copy.output_strides == cnn.output_strides
    assert copy.dimension_calc.offset == cnn.dimension_calc.offset
    # a copy of the copy is the same net again, and the original is untouched
    np.testing.assert_array_equal(round_trip(copy).predictDense(img, show_progress=False), want)
    np.testing.assert_array_equal(cnn.predictDense(img, show_progress=False), want)


def test_trained_3d_net_round_trip(rng):
    cnn = MixedConvNN((3, 8, 8), input_depth=1, batch_size=1, seed=3)
    cnn.addConvLayer(3, (1, 3, 3), pool_shape=(1, 2, 2), activation_func="tanh")
    cnn.addConvLayer(2, (2, 3, 3), pool_shape=1, is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    x = rng.standard_normal((1, 3, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, (1, 2, 1, 1)).astype(np.int16)
    before = cnn.class_probabilities(x)
    for _ in range(3):
        cnn.trainingStep(x, y, mode="SGD")
    trained = cnn.class_probabilities(x)
    assert not np.allclose(before, trained)  # the parameters moved: their values must travel
    copy = round_trip(cnn)
    np.testing.assert_array_equal(copy.class_probabilities(x), trained)
    # the copy trains on (its gradients are rebuilt; momenta start from zero)
    copy.trainingStep(x, y, mode="SGD")
    assert np.isfinite(copy.get_loss(x, y)[0])


def test_perceptron_and_autoencoder_nets_round_trip(rng):
    mlp = MixedConvNN((12,), input_depth=None, batch_size=5, seed=4)
    mlp.addPerceptronLayer(7, "tanh", enable_input_noise=True)
    mlp.addPerceptronLayer(3, "linear")
    mlp.compileOutputFunctions("nll")
    mlp.layers[0].input_noise.set_value(np.float32(0.0))
    x = rng.standard_normal((5, 12)).astype(np.float32)
    np.testing.assert_array_equal(round_trip(mlp).class_probabilities(x),
                                  mlp.class_probabilities(x))
    assert round_trip(mlp).layers[0].input_noise.get_value() == 0

    ae = MixedConvNN((12,), input_depth=None, batch_size=5, seed=5)
    ae.addPerceptronLayer(6, "tanh")
    ae.addTiedAutoencoderChain(n_layers=1, input_noise=0.0)
    ae.compileOutputFunctions("regression")
    np.testing.assert_array_equal(round_trip(ae).prediction(x), ae.prediction(x))


def test_a_net_with_symbolic_inputs_is_refused():
    shared_W = pytensor.shared(np.ones((3, 6), np.float32))
    cnn = MixedConvNN((6,), input_depth=None, batch_size=2, seed=6)
    cnn.addPerceptronLayer(3, "tanh", W=shared_W)
    with pytest.raises(pickle.PicklingError, match="'W'"):
        pickle.dumps(cnn)


def test_a_foreign_state_is_refused():
    with pytest.raises(pickle.UnpicklingError, match="format"):
        MixedConvNN.__new__(MixedConvNN).__setstate__({"format": 99})
