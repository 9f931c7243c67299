"""MixedConvNN: building, layer kinds, activations, MFP, dropout, weights and clear errors."""

import numpy as np
import pytensor
import pytest

from elektronn.net.convlayer2d import ConvLayer2d
from elektronn.net.convlayer3d import ConvLayer3d
from elektronn.net.convnet import MixedConvNN, _printOps
from elektronn.net.perceptronlayer import PerceptronLayer
from elektronn.ops import reference


def np_conv2d(x, W, b, pool, act):
    """numpy reference of a 2-D conv layer on (bs, ch, x, y)."""
    lin = reference.pool(reference.conv(x, W), pool) + b[None, :, None, None]
    return {"tanh": np.tanh, "abs": np.abs, "linear": lambda t: t,
            "relu": lambda t: np.maximum(t, 0), "sigmoid": lambda t: 1 / (1 + np.exp(-t))}[act](lin)


def softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_seed_doc_examples():
    cnn = MixedConvNN((30, 30, 30), input_depth=5, batch_size=1)
    assert cnn.input_shape == (1, 30, 5, 30, 30) and cnn.n_dim == 3
    mlp = MixedConvNN((100,), input_depth=None, batch_size=2000)
    assert mlp.input_shape == (2000, 100)
    mlp.addPerceptronLayer(20, "tanh")
    mlp.addPerceptronLayer(3, "linear")
    mlp.compileOutputFunctions("nll")
    assert mlp.class_probabilities(np.zeros((2000, 100), np.float32)).shape == (2000, 3)


def test_printops_format():
    assert _printOps(500) == "Computational Cost: 0.5 kilo Ops"
    assert _printOps(2.5e9) == "Computational Cost: 2.5 Giga Ops"


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "abs", "linear"])
def test_2d_conv_layer_matches_numpy(rng, act):
    cnn = MixedConvNN((9, 10), input_depth=2, batch_size=3, seed=1)
    cnn.addConvLayer(4, (2, 3), pool_shape=(2, 2), activation_func=act)
    cnn.compileDebugFunctions(gradients=False)
    x = rng.standard_normal((3, 2, 9, 10)).astype(np.float32)
    lay = cnn.layers[0]
    ref = np_conv2d(x, lay.W.get_value(), lay.b.get_value(), (2, 2), act)
    np.testing.assert_allclose(cnn.get_activities(x)[0], ref, rtol=1e-5, atol=1e-5)
    assert lay.output_shape == (3, 4, 4, 4)


def test_3d_layout_and_anisotropic_pool(rng):
    cnn = MixedConvNN((5, 9, 8), input_depth=2, batch_size=2, seed=2)
    cnn.addConvLayer(3, (2, 3, 3), pool_shape=(1, 1, 2), activation_func="tanh")
    cnn.compileDebugFunctions(gradients=False)
    x = rng.standard_normal((2, 5, 2, 9, 8)).astype(np.float32)  # (bs, z, ch, x, y)
    lay = cnn.layers[0]
    W = lay.W.get_value()  # (nof, fz, ch, fx, fy)
    assert W.shape == (3, 2, 2, 3, 3)
    core = reference.conv(x.transpose(0, 2, 1, 3, 4), W.transpose(0, 2, 1, 3, 4))
    lin = reference.pool(core, (1, 1, 2)) + lay.b.get_value()[None, :, None, None, None]
    ref = np.tanh(lin).transpose(0, 2, 1, 3, 4)
    out = cnn.get_activities(x)[0]
    assert out.shape == lay.output_shape == (2, 4, 3, 7, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_maxout_and_maxabs(rng):
    cnn = MixedConvNN((8, 8), input_depth=1, batch_size=1, seed=3)
    cnn.addConvLayer(6, 3, pool_shape=2, activation_func="maxout 3", pooling_mode="maxabs")
    cnn.addPerceptronLayer(4, "maxout 2")
    cnn.compileDebugFunctions(gradients=False)
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    lay = cnn.layers[0]
    lin = reference.pool(reference.conv(x, lay.W.get_value()), (2, 2), "maxabs")
    lin = lin + lay.b.get_value()[None, :, None, None]
    ref = lin.reshape(1, 2, 3, 3, 3).max(axis=2)
    acts = cnn.get_activities(x)
    np.testing.assert_allclose(acts[0], ref, rtol=1e-5, atol=1e-6)
    assert lay.output_shape == (1, 2, 3, 3)
    assert cnn.layers[1].output_shape == (1, 2) and acts[1].shape == (1, 2)  # N15 fixed


def test_class_probabilities_flattening_orders(rng):
    """Non-reshaped layers flatten like ELEKTRONN 1.0 (2-D: batch fastest; 3-D: y fastest)."""
    probs = rng.random((2, 3, 4, 5)).astype(np.float32)
    p = pytensor.tensor.tensor4("p")
    f2 = pytensor.function([p], ConvLayer2d._flat_probs(p))
    i, j, b = 1, 3, 1
    assert np.array_equal(f2(probs)[(i * 5 + j) * 2 + b], probs[b, :, i, j])
    p5 = pytensor.tensor.tensor5("p")
    probs5 = rng.random((2, 3, 2, 4, 5)).astype(np.float32)
    f3 = pytensor.function([p5], ConvLayer3d._flat_probs(p5))
    b, k, i, j = 1, 1, 2, 3
    assert np.array_equal(f3(probs5)[((b * 2 + k) * 4 + i) * 5 + j], probs5[b, :, k, i, j])


def test_mfp_net_equals_stride1_net(rng):
    """MFP in two layers + reassembly gives the dense output of the same weights."""
    kw = dict(input_depth=1, batch_size=1, seed=5)
    mfp = MixedConvNN((15, 15), **kw)
    mfp.addConvLayer(3, 3, pool_shape=2, activation_func="tanh", use_fragment_pooling=True)
    mfp.addConvLayer(2, 2, pool_shape=2, activation_func="tanh", use_fragment_pooling=True)
    mfp.addConvLayer(2, 1, pool_shape=1, activation_func="linear", is_last_layer=True)
    mfp.compileOutputFunctions("nll", only_forward=True)
    assert mfp.output_strides == [1, 1] and mfp.output_shape == (1, 2, 8, 8)
    x = rng.standard_normal((1, 1, 15, 15)).astype(np.float32)
    dense = mfp.class_probabilities(x)
    # reference: stride-1 pooling, second layer dilated by 2
    W = [lay.W.get_value() for lay in mfp.layers]
    b = [lay.b.get_value() for lay in mfp.layers]
    h = reference.conv(x, W[0])
    h = np.maximum.reduce([h[..., i:i + 12, j:j + 12] for i in (0, 1) for j in (0, 1)])
    h = np.tanh(h + b[0][None, :, None, None])
    # dilated conv of a 2x2 kernel by 2 = conv with a zero-interleaved 3x3 kernel
    Wd = np.zeros((2, 3, 3, 3), np.float32)
    Wd[:, :, ::2, ::2] = W[1]
    h = reference.conv(h, Wd)
    h = np.maximum.reduce([h[..., i:i + 8, j:j + 8] for i in (0, 2) for j in (0, 2)])
    h = np.tanh(h + b[1][None, :, None, None])
    lin = reference.conv(h, W[2]) + b[2][None, :, None, None]
    np.testing.assert_allclose(dense, softmax(lin, 1), rtol=1e-4, atol=1e-6)


def test_dropout_gate_statistics():
    cnn = MixedConvNN((10, 10), input_depth=2, batch_size=3, enable_dropout=True, seed=7)
    cnn.addConvLayer(4, 3, pool_shape=1, activation_func="linear")
    cnn.addPerceptronLayer(500, "linear")
    cnn.addPerceptronLayer(2, "linear", force_no_dropout=True)
    cnn.compileOutputFunctions("nll")
    assert cnn.getDropoutRates() == [0.5, 0.5]
    cnn.setDropoutRates([0.25, 0.8, 0.3])
    assert cnn.getDropoutRates() == pytest.approx([0.25, 0.8])
    conv, mlp = cnn.layers[0], cnn.layers[1]
    f = pytensor.function([], [conv.dropout_gate, mlp.dropout_gate],
                          updates=list(cnn._rng_updates.items()))
    g1, g2 = f()
    assert g1.shape == (8, 8) and g2.shape == (500,)  # spatial gates, shared over batch/channels
    one = np.float32(1)
    assert set(np.unique(g1)) <= {0.0, one / (one - np.float32(0.25))}
    assert set(np.unique(g2)) <= {0.0, one / (one - np.float32(0.8))}
    gates = np.array([f()[1] for _ in range(20)])
    assert abs((gates == 0).mean() - 0.8) < 0.02  # drop rate
    assert abs(gates.mean() - 1) < 0.1  # inverted scaling keeps the expectation
    assert not np.array_equal(f()[1], f()[1])  # fresh gates per call
    cnn.setDropoutRates([0.0, 0.0])
    x = np.ones((3, 2, 10, 10), np.float32)
    np.testing.assert_array_equal(cnn.class_probabilities(x), cnn.class_probabilities(x))


def test_same_seed_same_net():
    def build(seed):
        cnn = MixedConvNN((6, 6), input_depth=1, batch_size=1, seed=seed)
        cnn.addConvLayer(2, 3, pool_shape=1)
        return cnn.layers[0].W.get_value()
    assert np.array_equal(build(3), build(3)) and not np.array_equal(build(3), build(4))
    np.random.seed(11)
    a = MixedConvNN((4,), batch_size=1).rng.random()
    np.random.seed(11)
    assert MixedConvNN((4,), batch_size=1).rng.random() == a


def test_input_noise_is_a_live_shared_variable(rng):
    cnn = MixedConvNN((5,), batch_size=4, seed=1)
    cnn.addPerceptronLayer(3, "linear", enable_input_noise=True)
    cnn.compileOutputFunctions("regression")
    x = rng.standard_normal((4, 5)).astype(np.float32)
    assert not np.array_equal(cnn.prediction(x), cnn.prediction(x))
    cnn.layers[0].input_noise.set_value(np.float32(0))
    np.testing.assert_array_equal(cnn.prediction(x), cnn.prediction(x))


def test_weight_sharing_and_given_weights(rng):
    W = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    cnn = MixedConvNN((6, 6), input_depth=3, batch_size=1, seed=1)
    cnn.addConvLayer(3, 2, pool_shape=1, W=W)
    np.testing.assert_array_equal(cnn.layers[0].W.get_value(), W)
    cnn.addConvLayer(3, 2, pool_shape=1, W=cnn.layers[0].W.dimshuffle(0, 1, 2, 3))
    cnn.addPerceptronLayer(2, "linear", W=rng.standard_normal((48, 2)).astype(np.float32))
    assert len(cnn.layers[2].params) == 1  # a given perceptron W is not trained (R N16)
    cnn.compileOutputFunctions("nll")
    cnn.compileOutputFunctions("nll")  # recompiling never duplicates params (F N21)
    assert len(cnn.params) == 4  # b0, W0 (shared by layer 1), b1, perceptron b
    cnn.compileDebugFunctions(gradients=False)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    a0, a1, _ = cnn.get_activities(x)
    ref = np.tanh(reference.conv(a0, W) + cnn.layers[1].b.get_value()[None, :, None, None])
    np.testing.assert_allclose(a1, ref, rtol=1e-5, atol=1e-6)  # layer 1 uses layer 0's W


def test_initialisation_rules():
    cnn = MixedConvNN((12, 12), input_depth=3, batch_size=1, seed=0)
    cnn.addConvLayer(50, 3, pool_shape=2, activation_func="relu")
    cnn.addConvLayer(4, 3, pool_shape=1, activation_func="sigmoid")
    cnn.addPerceptronLayer(20, "relu")
    cnn.addPerceptronLayer(5, "tanh")
    c0, c1, p0, p1 = cnn.layers
    np.testing.assert_allclose(c0.b.get_value(), 1 / 9)
    np.testing.assert_allclose(c1.b.get_value(), 0.5)
    np.testing.assert_allclose(p0.b.get_value(), 1.0)
    assert np.abs(p1.b.get_value()).max() <= 1e-6
    fan_in, fan_out = 3 * 9, 50 * 9 // 4
    std = np.sqrt(2 / (fan_in + fan_out))
    assert abs(c0.W.get_value().std() / std - 1) < 0.1  # glorot normal at construction
    c0.randomizeWeights()
    w = c0.W.get_value()
    assert np.abs(w).max() <= std and abs(w.std() / (std / np.sqrt(3)) - 1) < 0.1  # uniform
    before = p1.W.get_value().copy()
    cnn.randomizeWeights()
    assert not np.array_equal(before, p1.W.get_value())


def test_gabor_initialisation():
    cnn = MixedConvNN((12, 12), input_depth=3, batch_size=1, seed=0)
    cnn.addConvLayer(7, 5, pool_shape=1)
    cnn.layers[0].gaborInitialisation()
    W = cnn.layers[0].W.get_value()
    assert W.shape == (7, 3, 5, 5) and np.array_equal(W[:, 0], W[:, 2])


def test_recurrent_layer_matches_numpy(rng):
    cnn = MixedConvNN((4,), input_depth=3, batch_size=2, recurrent=True, seed=0)
    cnn.addRecurrentLayer(n_hid=5, activation_func="tanh")
    cnn.addPerceptronLayer(2, "linear")
    cnn.compileOutputFunctions("nll")
    cnn.compileDebugFunctions(gradients=False)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    rnn = cnn.layers[0]
    h = np.tile(rnn.hid_0.get_value(), (2, 1))
    for t in range(3):
        h = np.tanh(x[:, t] @ rnn.W_in.get_value() + h @ rnn.W_hid.get_value()
                    + rnn.b_hid.get_value())
    np.testing.assert_allclose(cnn.get_activities(x)[0], h, rtol=1e-5, atol=1e-6)
    assert cnn.get_loss(x, np.array([0, 1]))[0] > 0


def test_tied_autoencoder_chain(rng):
    cnn = MixedConvNN((12,), batch_size=5, seed=0)
    cnn.addPerceptronLayer(8, "tanh")
    cnn.addPerceptronLayer(4, "tanh")
    cnn.addTiedAutoencoderChain(n_layers=None, activation_func="linear", input_noise=0.0)
    cnn.compileOutputFunctions("regression")
    dec = cnn.layers[-1]
    assert len(cnn.layers) == 4 and dec.output_shape == (5, 12)
    assert [len(lay.params) for lay in cnn.layers] == [2, 2, 1, 1]  # tied W: biases untrained
    x = rng.standard_normal((5, 12)).astype(np.float32)
    h = np.tanh(x @ cnn.layers[0].W.get_value() + cnn.layers[0].b.get_value())
    h = np.tanh(h @ cnn.layers[1].W.get_value() + cnn.layers[1].b.get_value())
    h = h @ cnn.layers[1].W.get_value().T + cnn.layers[2].b.get_value()
    h = h @ cnn.layers[0].W.get_value().T + dec.b.get_value()
    np.testing.assert_allclose(cnn.prediction(x), h, rtol=1e-4, atol=1e-5)
    mse, rmse, _ = cnn.get_error(x, x)
    assert np.isclose(mse, ((h - x) ** 2).mean(), rtol=1e-4) and np.isclose(rmse, np.sqrt(mse))


def test_lazy_labels_2d_and_label_propagation(rng):
    """2-D nets take example weights and lazy labels (fixed N1) in the compiled order."""
    cnn = MixedConvNN((6, 6), input_depth=1, batch_size=2, seed=0)
    cnn.addConvLayer(3, 3, pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions("nll", use_class_weights=True, use_example_weights=True,
                               use_lazy_labels=True, use_label_prop=True)
    assert [v.name for v in cnn._y_aux] == ["mask_class_labeled", "mask_class_not_present",
                                            "class_weights", "example_weights",
                                            "label_prop_thresh"]
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    y = rng.integers(-1, 3, (2, 4, 4))
    ml, mn = np.ones((2, 3), np.int16), np.zeros((2, 3), np.int16)
    loss, inst = cnn.get_loss(x, y, ml, mn, np.ones(3, np.float32),
                              np.ones((2, 4, 4), np.float32), np.float32(0.99))
    P = cnn.class_probabilities(x)
    hits = (y[:, None] == np.arange(3)[None, :, None, None])
    assert inst.shape == (2, 4, 4)
    assert np.isclose(loss, -(np.log(P + 1e-6) * hits).sum() / hits.sum(), rtol=1e-4)


def test_clear_errors(rng):
    with pytest.raises(ValueError, match="input_size"):
        MixedConvNN((1, 2, 3, 4))
    cnn = MixedConvNN((10, 10), input_depth=1, batch_size=2)
    with pytest.raises(ValueError, match="activation_func must be one of"):
        cnn.addConvLayer(2, 3, activation_func="swish")
    with pytest.raises(ValueError, match="batch_size 1"):
        cnn.addConvLayer(2, 3, pool_shape=2, use_fragment_pooling=True)
    with pytest.raises(ValueError, match="filter size 11 is larger than the input size 10"):
        cnn.addConvLayer(2, 11)
    with pytest.raises(ValueError, match="pooling by 2 needs a conv output divisible by 2"):
        cnn.addConvLayer(2, 2, pool_shape=2)
    cnn.addConvLayer(2, 3, pool_shape=2)
    msg = r"W has shape \(2, 1, 3, 3\), the layer needs \(3, 2, 3, 3\)"
    with pytest.raises(ValueError, match=msg):
        cnn.addConvLayer(3, 3, pool_shape=2, W=np.zeros((2, 1, 3, 3), np.float32))
    cnn.addPerceptronLayer(3)
    with pytest.raises(ValueError, match="cannot follow a perceptron"):
        cnn.addConvLayer(2, 2)
    cnn.compileOutputFunctions("nll")
    with pytest.raises(ValueError, match=r"data must have shape \(2, 1, 10, 10\)"):
        cnn.class_probabilities(np.zeros((2, 10, 10), np.float32))
    with pytest.raises(ValueError, match="label 3, but the net has only 3 classes"):
        cnn.get_loss(np.zeros((2, 1, 10, 10), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match="expected 2 arguments"):
        cnn.get_loss(np.zeros((2, 1, 10, 10), np.float32))
    with pytest.raises(ValueError, match="labels must hold integers"):
        cnn.get_loss(np.zeros((2, 1, 10, 10), np.float32), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="target must be one of"):
        cnn.compileOutputFunctions("hinge")
    mfp = MixedConvNN((10, 10), input_depth=1, batch_size=1)
    with pytest.raises(ValueError, match="k\\*2\\+1"):
        mfp.addConvLayer(2, 3, pool_shape=2, use_fragment_pooling=True)
    mlp = MixedConvNN((5,), batch_size=2)
    mlp.addPerceptronLayer(3)
    with pytest.raises(ValueError, match="lazy labels"):
        mlp.compileOutputFunctions("nll", use_lazy_labels=True)
    conv = MixedConvNN((6, 6), input_depth=1, batch_size=1)
    conv.addConvLayer(2, 3, pool_shape=1)
    with pytest.raises(ValueError, match="is_last_layer=True"):
        conv.compileOutputFunctions("nll")


def test_perceptron_params_order_and_names():
    cnn = MixedConvNN((6,), batch_size=2, seed=0)
    cnn.addPerceptronLayer(4, "tanh")
    lay = cnn.layers[0]
    assert isinstance(lay, PerceptronLayer)
    assert lay.params == [lay.b, lay.W] and lay.W.name == "W_perceptron6.4"


def test_load_parameters_errors_leave_net_unchanged(tmp_path, rng):
    from elektronn.net.paramfile import ParameterFileError

    cnn = MixedConvNN((8, 8), input_depth=1, batch_size=1, seed=0)
    cnn.addConvLayer(3, 3, pool_shape=2)
    cnn.addConvLayer(2, 3, pool_shape=1, is_last_layer=True)
    cnn.compileOutputFunctions("nll", only_forward=True)
    good = tmp_path / "good.param"
    cnn.saveParameters(str(good))
    before = [p.get_value().copy() for p in cnn.params]
    data = good.read_bytes()
    (tmp_path / "cut.param").write_bytes(data[: len(data) // 2])
    other = MixedConvNN((8, 8), input_depth=1, batch_size=1, seed=1)
    other.addConvLayer(4, 3, pool_shape=2)
    other.addConvLayer(2, 3, pool_shape=1, is_last_layer=True)
    other.compileOutputFunctions("nll", only_forward=True)
    other.saveParameters(str(tmp_path / "other.param"))
    with pytest.raises(ParameterFileError):
        cnn.loadParameters(str(tmp_path / "cut.param"))
    with pytest.raises(ParameterFileError, match="parameter 0 has shape"):
        cnn.loadParameters(str(tmp_path / "other.param"), strict=True)
    for p, v in zip(cnn.params, before):
        np.testing.assert_array_equal(p.get_value(), v)
    cnn.loadParameters(str(tmp_path / "other.param"))  # adaptive: adapts the filters
    assert cnn.layers[0].W.get_value().shape == (3, 1, 3, 3)
    cnn.loadParameters(str(good), n_layers_to_load=1)
    np.testing.assert_array_equal(cnn.layers[0].W.get_value(), before[1])


# --- optimiser glue (issue 13) -----------------------------------------------------------------


def _small_2d_net():
    cnn = MixedConvNN((28, 28), input_depth=1, batch_size=4, seed=1)
    cnn.addConvLayer(10, 5, pool_shape=2, activation_func="tanh")
    cnn.addPerceptronLayer(3, activation_func="linear")
    cnn.compileOutputFunctions(target="nll")
    return cnn


def test_cg_trains_a_conv_net(rng):
    """A conv layer with one input channel has gradients of static shape (10, 1, 5, 5); CG's
    updates of its buffers (shape unknown) used to be refused by PyTensor."""
    cnn = _small_2d_net()
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    y = np.array([0, 1, 2, 1])
    before = [p.get_value() for p in cnn.params]
    loss, _, _ = cnn.trainingStep(x, y, mode="CG")
    assert np.isfinite(loss)
    assert any(not np.array_equal(b, p.get_value()) for b, p in zip(before, cnn.params))
    assert len(cnn.CG_timeline) == 3  # n_steps of the net's CG defaults


@pytest.mark.parametrize("mode", ["SGD", "CG", "RPROP", "Adam", "LBFGS"])
def test_get_loss_keeps_its_checks_after_training(rng, mode):
    cnn = _small_2d_net()
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    before = cnn.get_loss(x, y)[0]
    cnn.trainingStep(x, y, mode=mode)
    after = cnn.get_loss(x, y)[0]  # int64 labels are still converted
    assert np.isfinite(after) and after != before
    with pytest.raises(ValueError, match="labels"):
        cnn.get_loss(x, np.array([0, 1, 7, 1]))
    with pytest.raises(ValueError, match="data"):
        cnn.get_loss(x[:, :, :20], y)


def test_unknown_optimiser_keys_raise_and_change_nothing():
    cnn = _small_2d_net()
    with pytest.raises(ValueError, match=r"unknown SGD parameter 'lr'; valid keys are 'LR', "
                                         r"'momentum'"):
        cnn.setOptimizerParams(SGD={"lr": 0.1})
    assert cnn.SGD_LR.get_value() == np.float32(0.09)
    for name in ("CG", "RPROP", "LBFGS", "Adam"):
        with pytest.raises(ValueError, match=f"unknown {name} parameter 'typo'"):
            cnn.setOptimizerParams(**{name: {"typo": 1}})


def test_two_levels_of_sgd_defaults():
    cnn = _small_2d_net()
    assert cnn.SGD_LR.get_value() == np.float32(0.09)
    cnn.setOptimizerParams(SGD={})
    assert cnn.SGD_LR.get_value() == np.float32(0.001)
    assert cnn._optimizer("CG").optimizer_params["n_steps"] == 3
    assert cnn._optimizer("CG").optimizer_params["beta"] == 0.7


@pytest.mark.parametrize("mode", ["SGD", "Adam"])
def test_tied_autoencoder_decoder_biases_are_not_trained(rng, mode):
    cnn = MixedConvNN((12,), batch_size=5, seed=0)
    cnn.addPerceptronLayer(8, "tanh")
    cnn.addPerceptronLayer(4, "tanh")
    cnn.addTiedAutoencoderChain(activation_func="linear", input_noise=0.0)
    cnn.compileOutputFunctions("regression")
    decoders, encoders = cnn.layers[2:], cnn.layers[:2]
    biases = [dec.b.get_value() for dec in decoders]
    weights = [enc.W.get_value() for enc in encoders]
    assert not any(dec.b is p for dec in decoders for p in cnn.params)
    x = rng.standard_normal((5, 12)).astype(np.float32)
    cnn.trainingStep(x, x, mode=mode)
    for dec, before in zip(decoders, biases, strict=True):
        np.testing.assert_array_equal(dec.b.get_value(), before)
    assert all(not np.array_equal(enc.W.get_value(), w) for enc, w in zip(encoders, weights))


def test_untied_autoencoder_decoders_are_trained(rng):
    cnn = MixedConvNN((12,), batch_size=5, seed=0)
    cnn.addPerceptronLayer(8, "tanh")
    cnn.addTiedAutoencoderChain(activation_func="linear", input_noise=0.0, tie_W=False)
    cnn.compileOutputFunctions("regression")
    dec = cnn.layers[-1]
    before = dec.b.get_value(), dec.W.get_value()
    x = rng.standard_normal((5, 12)).astype(np.float32)
    cnn.trainingStep(x, x, mode="SGD")
    assert not np.array_equal(dec.b.get_value(), before[0])
    assert not np.array_equal(dec.W.get_value(), before[1])


# --- one layer interface (issue 13) ------------------------------------------------------------


def _nets_of_every_layer_kind():
    from elektronn.net.convnet import MixedConvNN as Net

    conv2d = Net((10, 10), input_depth=1, batch_size=1, enable_dropout=True, seed=3)
    conv2d.addConvLayer(3, 3, pool_shape=2, activation_func="relu")
    conv2d.addPerceptronLayer(2, "linear")
    nets = {"conv2d+perceptron": conv2d}
    for affinity in (True, "malis"):
        net = Net((4, 10, 10), input_depth=1, batch_size=1, enable_dropout=True, seed=4)
        net.addConvLayer(3, (1, 3, 3), pool_shape=(1, 2, 2), activation_func="tanh")
        net.addConvLayer(2, (2, 2, 2), pool_shape=1, activation_func="linear", affinity=affinity,
                         is_last_layer=True)
        nets[f"affinity={affinity}"] = net
    rnn = Net((3,), input_depth=4, batch_size=2, recurrent=True, seed=5)
    rnn.addRecurrentLayer(n_hid=5)
    rnn.addPerceptronLayer(2, "linear")
    nets["rnn"] = rnn
    ae = Net((6,), batch_size=2, seed=6)
    ae.addPerceptronLayer(3, "tanh")
    ae.addTiedAutoencoderChain(activation_func="linear", input_noise=0.0)
    nets["tied autoencoder"] = ae
    return nets


@pytest.mark.parametrize("kind", ["conv2d+perceptron", "affinity=True", "affinity=malis", "rnn",
                                  "tied autoencoder"])
def test_every_layer_has_the_interface_and_can_be_reinitialised(kind):
    """AffinityLayer3d had no randomizeWeights (MixedConvNN.randomizeWeights raised)."""
    from pytensor.compile.sharedvalue import SharedVariable

    from elektronn.net.layer import Layer

    cnn = _nets_of_every_layer_kind()[kind]
    for lay in cnn.layers:
        assert isinstance(lay, Layer)
        assert all(isinstance(p, SharedVariable) for p in lay.params)
        assert isinstance(lay.output_shape, tuple)
        assert lay.activation_noise is None or isinstance(lay.activation_noise, SharedVariable)
    before = [p.get_value() for lay in cnn.layers for p in lay.params]
    cnn.randomizeWeights()
    after = [p.get_value() for lay in cnn.layers for p in lay.params]
    assert [a.shape for a in after] == [b.shape for b in before]
    changed = [not np.array_equal(a, b) for a, b in zip(after, before, strict=True)]
    assert any(changed)


def test_affinity_layer_dropout_is_one_rate(rng):
    cnn = _nets_of_every_layer_kind()["affinity=True"]
    aff = cnn.layers[-1]
    assert aff.activation_noise is None  # the last layer has no dropout
    from elektronn.net.convlayer3d import AffinityLayer3d

    inp = cnn.layers[0].output
    layer = AffinityLayer3d(inp, cnn.layers[0].output_shape, (2, 1, 3, 1, 1), (1, 1, 1),
                            activation_func="linear", enable_dropout=True, rng=cnn.rng,
                            streams=cnn._streams)
    assert layer.activation_noise is not None
    assert all(s.activation_noise is layer.activation_noise for s in layer.sub_layers)
    cnn.layers.insert(1, layer)
    cnn.setDropoutRates([0.5, 0.25, 0.1])
    assert cnn.getDropoutRates() == [0.5, 0.25]


def test_layer_constructors_take_keywords():
    import pytensor.tensor as pt

    from elektronn.net.convlayer2d import ConvLayer2d as Conv

    x = pt.tensor("x", dtype="float32", shape=(1, 1, 6, 6))
    with pytest.raises(TypeError):
        Conv(x, (1, 1, 6, 6), (2, 1, 3, 3), (2, 2), "tanh", False, False, False, None, None)
    layer = Conv(x, (1, 1, 6, 6), (2, 1, 3, 3), (2, 2), activation_func="tanh")
    assert layer.output_shape == (1, 2, 2, 2)
    with pytest.raises(TypeError):
        PerceptronLayer(x.flatten(2), 36, 2, 1, False)
