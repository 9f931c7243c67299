"""Tests of createNet and createNetfromParams (docs/differences.md, N33)."""

import logging
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from elektronn.net import netcreation, paramfile
from elektronn.net.convlayer2d import ConvLayer2d
from elektronn.net.convlayer3d import ConvLayer3d
from elektronn.net.netcreation import CONFIG_DEFAULTS, createNet, createNetfromParams
from elektronn.net.netutils import CNNCalculator
from elektronn.net.perceptronlayer import PerceptronLayer
from tests.net.golden import golden_file


def golden(name):
    return golden_file(name)


def w_shapes(cnn):
    return [tuple(lay.W.get_value().shape) for lay in cnn.layers]


# --- createNet ------------------------------------------------------------------------------------


def conv2d_config(**kw):
    cfg = dict(filters=[3, 3], pool=[2, 1], nof_filters=[4, 5], activation_func="relu",
               MFP=[], pooling_mode="max", dropout_rates=[0.3, 0.2], batch_size=2,
               target="nll")
    cfg.update(kw)
    return SimpleNamespace(**cfg)


def test_create_2d_conv_net():
    calc = CNNCalculator([3, 3, 1], [2, 1, 1], desired_input=16, n_dim=2)
    cnn = createNet(conv2d_config(), calc.input, 1, 3, calc, seed=1)
    assert all(isinstance(lay, ConvLayer2d) for lay in cnn.layers)
    assert w_shapes(cnn) == [(4, 1, 3, 3), (5, 4, 3, 3), (3, 5, 1, 1)]
    assert cnn.poolings == [(2, 2), (1, 1), (1, 1)]
    assert [lay.activation_func for lay in cnn.layers] == ["relu", "relu", "linear"]
    assert cnn.getDropoutRates() == pytest.approx([0.3, 0.2])  # the output layer has none
    assert cnn.layers[-1].activation_noise is None
    assert cnn.dimension_calc is calc and cnn.batch_size == 2 and cnn.n_lab == 3
    # the config's default SGD_params of ELEKTRONN 1.0 were applied (LR 0.001, momentum 0.9)
    assert float(cnn.SGD_LR.get_value()) == pytest.approx(0.001)
    assert float(cnn.SGD_momentum.get_value()) == pytest.approx(0.9)
    x = np.zeros((2, 1) + tuple(calc.input), np.float32)
    assert cnn.class_probabilities(x).shape == (2, 3) + tuple(cnn.output_shape[2:])


def test_create_3d_net_with_mfp():
    filters, pool = [(1, 4, 4), (3, 3, 3)], [(1, 2, 2), 1]
    calc = CNNCalculator(filters + [1], pool + [1], desired_input=[5, 20, 20], MFP=[1, 0, 1],
                         n_dim=3)
    cfg = SimpleNamespace(filters=filters, pool=pool, nof_filters=[3, 4], MFP=[1, 0],
                          activation_func=["tanh", "relu"], batch_size=1)
    cnn = createNet(cfg, calc.input, 2, 2, calc, seed=0)
    assert all(isinstance(lay, ConvLayer3d) for lay in cnn.layers)
    assert w_shapes(cnn) == [(3, 1, 2, 4, 4), (4, 3, 3, 3, 3), (2, 1, 4, 1, 1)]
    assert [lay.use_fragment_pooling for lay in cnn.layers] == [True, False, True]
    assert cnn.output_strides == [1, 1, 1]
    assert cnn.getDropoutRates() == []  # no dropout_rates: dropout off
    x = np.zeros((1, calc.input[0], 2, calc.input[1], calc.input[2]), np.float32)
    out = cnn.class_probabilities(x)
    assert out.shape == tuple(cnn.output_shape)
    # dense output: the fragments of the x/y pooling by 2 are reassembled
    assert out.shape[2:] == (calc.out[0][-1], 2 * calc.out[1][-1], 2 * calc.out[2][-1])


def test_create_mlp_net():
    cfg = SimpleNamespace(MLP_layers=[20, 10], activation_func=["tanh", "relu"],
                          dropout_rates=[0.5, 0.1], batch_size=4)
    cnn = createNet(cfg, (30,), None, 4, None)
    assert all(isinstance(lay, PerceptronLayer) for lay in cnn.layers)
    assert w_shapes(cnn) == [(30, 20), (20, 10), (10, 4)]
    assert [lay.activation_func for lay in cnn.layers] == ["tanh", "relu", "linear"]
    assert cnn.getDropoutRates() == pytest.approx([0.5, 0.1])
    x = np.random.default_rng(0).random((4, 30), dtype=np.float32)
    assert cnn.class_probabilities(x).shape == (4, 4)


def test_missing_options_use_the_defaults():
    calc = CNNCalculator([3, 1], [2, 1], desired_input=10, n_dim=2)
    cnn = createNet(SimpleNamespace(filters=[3], pool=[2], nof_filters=[2]), calc.input, 1, 2,
                    calc)
    assert cnn.batch_size == CONFIG_DEFAULTS["batch_size"] == 1
    assert cnn.layers[0].activation_func == "relu"
    assert cnn._target == "nll"
    # a mapping works as well
    cnn = createNet({"filters": [3], "pool": [2], "nof_filters": [2]}, calc.input, 1, 2, calc)
    assert w_shapes(cnn) == [(2, 1, 3, 3), (2, 2, 1, 1)]


def test_optimizer_params_and_param_file(tmp_path):
    calc = CNNCalculator([3, 1], [2, 1], desired_input=10, n_dim=2)
    cfg = conv2d_config(filters=[3], pool=[2], nof_filters=[2], dropout_rates=[],
                        SGD_params={"LR": 0.1, "momentum": 0.5}, weight_decay=1e-3,
                        Adam_params={"LR": 0.02})
    first = createNet(cfg, calc.input, 1, 2, calc, seed=1)
    assert float(first.SGD_LR.get_value()) == pytest.approx(0.1)
    assert float(first.SGD_momentum.get_value()) == pytest.approx(0.5)
    assert float(first.global_weightdecay.get_value()) == pytest.approx(1e-3)
    # Adam's first step moves every weight by LR (bias-corrected m / sqrt(v) = sign(g))
    x = np.random.default_rng(0).standard_normal((2, 1, *calc.input)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 2, (2, *first.output_shape[2:])).astype(np.int16)
    before = first.layers[0].W.get_value()
    first.trainingStep(x, y, mode="Adam")
    delta = np.abs(first.layers[0].W.get_value() - before)
    np.testing.assert_allclose(delta, 0.02, rtol=1e-2)  # not the default LR 0.001
    first.layers[0].W.set_value(before)
    path = tmp_path / "net.param"
    first.saveParameters(str(path))
    cfg.param_file = str(path)
    second = createNet(cfg, calc.input, 1, 2, calc, seed=2)
    for a, b in zip(first.params, second.params, strict=True):
        np.testing.assert_array_equal(a.get_value(), b.get_value())


@pytest.mark.parametrize("change, match", [
    (dict(nof_filters=[4]), "one entry per conv layer"),
    (dict(activation_func=["relu"]), "activation_func has 1 entries"),
    (dict(dropout_rates=[0.5]), "dropout_rates needs one rate per layer"),
    (dict(MFP=[1]), "MFP has 1 entries"),
])
def test_create_net_clear_errors(change, match):
    with pytest.raises(ValueError, match=match):
        createNet(conv2d_config(**change), (16, 16), 1, 2, None)


# --- createNetfromParams --------------------------------------------------------------------------


def n3d_file():
    return golden("n3d.param")


def test_from_params_golden_n3d():
    path = n3d_file()
    pset = paramfile.split_layers(paramfile.read_param_file(path))
    cnn = createNetfromParams(path, (7, 21, 21), batch_size=2,
                              activation_func=["relu", "tanh", "linear"], only_prediction=True)
    assert tuple(cnn.patch_size) == (7, 21, 21)
    assert w_shapes(cnn) == list(pset.shapes)
    assert cnn.poolings == pset.poolings == [(1, 2, 2), (1, 1, 1), (1, 1, 1)]
    for layer, saved in zip(cnn.layers, pset.params, strict=True):
        for p, value in zip(layer.params, saved, strict=True):
            np.testing.assert_array_equal(p.get_value(), value)
    calc = CNNCalculator([(1, 4, 4), (3, 3, 3), (3, 2, 2)], pset.poolings,
                         desired_input=[7, 21, 21], n_dim=3)
    assert cnn.dimension_calc.offset == calc.offset == [2.5, 5.5, 5.5]  # N33 fixed
    # the net is the recorded one: same probabilities as ELEKTRONN 1.0
    x = np.load(golden("n3d_in.npz"))["x"]
    ref = np.load(golden("n3d_ref.npz"))["probs0.value"]
    np.testing.assert_allclose(cnn.class_probabilities(x), ref, rtol=1e-4, atol=1e-6)


def test_from_params_file_poolings_override_argument(caplog):
    with caplog.at_level(logging.WARNING, logger="elektronn"):
        cnn = createNetfromParams(n3d_file(), (7, 25, 25), poolings=[1, 1, 1],
                                  only_prediction=True, legacy_last_filter=True)
    assert cnn.poolings == [(1, 2, 2), (1, 1, 1), (1, 1, 1)]
    assert any("override" in r.getMessage() for r in caplog.records)
    # ELEKTRONN 1.0's last layer: filter size 1, loaded adaptively
    assert w_shapes(cnn)[-1] == (3, 1, 5, 1, 1)
    assert tuple(cnn.patch_size) == tuple(cnn.dimension_calc.input) == (7, 25, 25)
    assert cnn.dimension_calc.offset == [1.5, 4.5, 4.5]


def test_from_params_mfp_and_poolings_argument(tmp_path):
    objects = paramfile.read_param_file(n3d_file())
    path = tmp_path / "nopool.param"
    paramfile.write_param_file(path, objects[:-1])  # a file without pooling info
    with pytest.raises(ValueError, match="No Pooling info found in file or provided"):
        createNetfromParams(path, (7, 22, 22))
    cnn = createNetfromParams(path, (7, 22, 22), poolings=[(1, 2, 2), 1, 1], MFP=[1, 0, 0],
                              only_prediction=True)
    assert cnn.output_strides == [1, 1, 1]
    assert tuple(cnn.patch_size) == (7, 22, 22)
    assert cnn.dimension_calc.input == [7, 22, 22]


@pytest.mark.parametrize("kind", ["2d", "3d-mfp"])
def test_from_params_rebuilds_a_written_net(tmp_path, kind):
    """A net made by createNet, saved, rebuilt from the file alone: same layers, same outputs."""
    rng = np.random.default_rng(3)
    if kind == "2d":
        calc = CNNCalculator([3, 3, 1], [2, 1, 1], desired_input=16, n_dim=2)
        cfg = conv2d_config(activation_func="tanh", dropout_rates=[], batch_size=1)
        source = createNet(cfg, calc.input, 2, 3, calc, seed=4)
        x = rng.standard_normal((1, 2, *calc.input)).astype(np.float32)
        rebuilt_kw = dict(activation_func="tanh", batch_size=1)
    else:
        calc = CNNCalculator([(1, 3, 3), (2, 2, 2), 1], [(1, 2, 2), 1, 1],
                             desired_input=[4, 14, 14], n_dim=3, MFP=[True, False, False])
        cfg = conv2d_config(filters=[(1, 3, 3), (2, 2, 2)], pool=[(1, 2, 2), 1],
                            nof_filters=[3, 4], activation_func="tanh", dropout_rates=[],
                            MFP=[True, False], batch_size=1)
        source = createNet(cfg, calc.input, 1, 2, calc, seed=5)
        x = rng.standard_normal((1, calc.input[0], 1, *calc.input[1:])).astype(np.float32)
        rebuilt_kw = dict(activation_func="tanh", MFP=[1, 0, 0])
    path = tmp_path / "written.param"
    source.saveParameters(str(path))
    rebuilt = createNetfromParams(path, tuple(calc.input), only_prediction=True, **rebuilt_kw)
    assert w_shapes(rebuilt) == w_shapes(source)
    assert rebuilt.poolings == source.poolings
    assert tuple(rebuilt.patch_size) == tuple(calc.input)
    assert rebuilt.dimension_calc.offset == source.dimension_calc.offset
    for a, b in zip(rebuilt.params, source.params, strict=True):
        np.testing.assert_array_equal(a.get_value(), b.get_value())
    np.testing.assert_array_equal(rebuilt.class_probabilities(x), source.class_probabilities(x))


def test_save_parameters_of_some_layers(tmp_path):
    """``layers=``: only those layers' shapes and arrays, then the net's poolings (as 1.0)."""
    calc = CNNCalculator([3, 3, 1], [2, 1, 1], desired_input=16, n_dim=2)
    cnn = createNet(conv2d_config(), calc.input, 1, 3, calc, seed=1)
    path = tmp_path / "first_two.param"
    cnn.saveParameters(str(path), layers=cnn.layers[:2])
    objects = paramfile.read_param_file(path)
    assert [tuple(s) for s in objects[0]] == w_shapes(cnn)[:2]
    expected = [cnn.layers[0].W, cnn.layers[0].b, cnn.layers[1].W, cnn.layers[1].b]
    assert len(objects) == 1 + len(expected) + 1
    for saved, var in zip(objects[1:-1], expected, strict=True):
        np.testing.assert_array_equal(saved, var.get_value())
    assert [tuple(p) for p in objects[-1]] == [(2, 2), (1, 1), (1, 1)]
    # the file pre-trains the first two layers of a fresh net of the same architecture
    fresh = createNet(conv2d_config(), calc.input, 1, 3, calc, seed=2)
    last_before = fresh.layers[2].W.get_value()
    fresh.loadParameters(str(path))
    for lay in (0, 1):
        np.testing.assert_array_equal(fresh.layers[lay].W.get_value(),
                                      cnn.layers[lay].W.get_value())
    np.testing.assert_array_equal(fresh.layers[2].W.get_value(), last_before)


def write(tmp_path, objects, name="f.param"):
    path = tmp_path / name
    paramfile.write_param_file(path, objects)
    return path


def arr(*shape):
    return np.zeros(shape, np.float32)


def test_from_params_clear_errors(tmp_path):
    conv = [arr(4, 1, 3, 3), arr(4)]
    mlp = write(tmp_path, [[(4, 1, 3, 3), (10,)], *conv, arr(10), arr(4, 10), [(2, 2)]])
    with pytest.raises(NotImplementedError, match="layer 1 is a perceptron layer"):
        createNetfromParams(mlp, (10, 10))
    rnn = write(tmp_path, [[(6, 5)], arr(6, 5), arr(5, 5), arr(5), arr(5)])
    with pytest.raises(NotImplementedError, match="recurrent"):
        createNetfromParams(rnn, (10, 10))
    mixed = write(tmp_path, [[(4, 1, 3, 3), (2, 1, 4, 1, 1)], *conv, arr(2, 1, 4, 1, 1),
                             arr(2), [(2, 2), (1, 1)]])
    with pytest.raises(ValueError, match="mixes 2-D and 3-D"):
        createNetfromParams(mixed, (10, 10))
    chain = write(tmp_path, [[(4, 1, 3, 3), (2, 3, 1, 1)], *conv, arr(2, 3, 1, 1), arr(2),
                             [(2, 2), (1, 1)]])
    with pytest.raises(ValueError, match="layer 1 takes 3 channels but layer 0 has 4"):
        createNetfromParams(chain, (10, 10))
    one = write(tmp_path, [[(4, 1, 3, 3)], *conv, [(2, 2)]])
    with pytest.raises(ValueError, match="MFP needs one entry per layer"):
        createNetfromParams(one, (10, 10), MFP=[1, 0])
    short = write(tmp_path, [[(4, 1, 3, 3)], *conv, [(2, 2), (1, 1)]])
    with pytest.raises(ValueError, match="1 layers need 1 poolings"):
        createNetfromParams(short, (10, 10))


def test_from_params_refuses_code(tmp_path):
    path = tmp_path / "evil.param"
    path.write_bytes(pickle.dumps([(4, 1, 3, 3)], protocol=2)
                     + b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(paramfile.ParameterFileError, match="refused"):
        createNetfromParams(path, (10, 10))


def test_module_api():
    assert set(netcreation.__all__) == {"CONFIG_DEFAULTS", "createNet", "createNetfromParams"}


def test_net_does_not_import_training_and_defaults_are_shared():
    """net/netcreation.py used to import training.config (against the layering)."""
    import subprocess
    import sys

    code = ("import sys, elektronn.net.netcreation; "
            "print(sorted(m for m in sys.modules if m.startswith('elektronn.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
    from elektronn.defaults import CONFIG_OPTIMIZER_DEFAULTS
    from elektronn.training.config import master_defaults

    config = master_defaults()
    for name, defaults in CONFIG_OPTIMIZER_DEFAULTS.items():
        assert config[f"{name}_params"] == dict(defaults) == CONFIG_DEFAULTS[f"{name}_params"]
    assert config["CG_params"]["n_steps"] == 4 and config["CG_params"]["beta"] == 0.75
    assert {k: config[k] for k in CONFIG_DEFAULTS} == dict(CONFIG_DEFAULTS)
