"""elektronn.backend: settings, the modes, and what the default "numpy" mode does to a graph."""

from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.builders import OpFromGraph
from pytensor.scalar import Add, Cast, Composite, Mul
from pytensor.tensor.elemwise import Elemwise

from elektronn import backend
from elektronn.net._graph import softmax


def compiled_nodes(inputs, outputs, mode):
    f = pytensor.function(inputs, outputs, mode=backend.get_mode(mode))
    return f, f.maker.fgraph.toposort()


def test_default_mode_is_numpy(monkeypatch):
    monkeypatch.delenv("ELEKTRONN_MODE", raising=False)
    monkeypatch.setattr(backend, "_mode_name", None)
    assert backend.mode_name() == "numpy"
    assert backend.MODES[0] == "numpy"


def test_environment_selects_mode(monkeypatch):
    monkeypatch.setenv("ELEKTRONN_MODE", "PY")
    monkeypatch.setattr(backend, "_mode_name", None)
    assert backend.mode_name() == "py"


@pytest.mark.parametrize("bad", ["cuda", "", "NUMPYY", "numba"])
def test_unknown_mode_is_named(bad):
    with pytest.raises(ValueError, match="mode must be one of"):
        backend.set_mode(bad)
    with pytest.raises(ValueError, match="mode must be one of"):
        backend.get_mode(bad)


def test_numpy_mode_runs_one_ufunc_per_elementwise_node():
    """No fused Composite and no variadic add/mul: those would run through np.frompyfunc."""
    x, y, z = (pt.matrix(n, dtype="float32") for n in "xyz")
    out = pt.tanh(x * y * z + x + y + z) * 2 - pt.exp(x)
    f, nodes = compiled_nodes([x, y, z], out, "numpy")
    elemwise = [n for n in nodes if isinstance(n.op, Elemwise)]
    assert elemwise
    for node in elemwise:
        assert not isinstance(node.op.scalar_op, Composite)
        if isinstance(node.op.scalar_op, Add | Mul):
            assert len(node.inputs) == 2
        assert node.op.nfunc_spec is not None, node
    vals = [np.random.default_rng(i).normal(size=(3, 4)).astype(np.float32) for i in range(3)]
    a, b, c = vals
    np.testing.assert_allclose(f(*vals), np.tanh(a * b * c + a + b + c) * 2 - np.exp(a),
                               rtol=1e-5)


@pytest.mark.parametrize("mode", ["numpy", "c", "py"])
def test_softmax_stays_a_plain_graph(mode):
    """PyTensor 3 would turn it into a Softmax OpFromGraph compiled with numba on first call."""
    x = pt.matrix("x", dtype="float32")
    f, nodes = compiled_nodes([x], softmax(x, axis=1), mode)
    assert not any(isinstance(n.op, OpFromGraph) for n in nodes)
    v = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    e = np.exp(v - v.max(axis=1, keepdims=True))
    np.testing.assert_allclose(f(v), e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_numpy_and_c_modes_agree_on_a_net_gradient():
    from elektronn import ops

    rng = np.random.default_rng(1)
    x = pt.tensor("x", dtype="float32", shape=(2, 2, 10, 10))
    w = pytensor.shared(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "w")
    h = pt.maximum(ops.conv(x, w), 0)
    loss = (ops.pool(h, (2, 2)) ** 2).mean() * 0.5 + (h * h * h).mean()
    outputs = [loss, pytensor.grad(loss, w)]
    xv = rng.normal(size=(2, 2, 10, 10)).astype(np.float32)
    got = {m: pytensor.function([x], outputs, mode=backend.get_mode(m))(xv)
           for m in ("numpy", "c")}
    for a, b in zip(got["numpy"], got["c"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keep_freed_memory_respects_the_environment(monkeypatch):
    monkeypatch.setenv("ELEKTRONN_KEEP_MEMORY", "0")
    assert backend.keep_freed_memory() is False
    monkeypatch.delenv("ELEKTRONN_KEEP_MEMORY")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert backend.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert backend.keep_freed_memory() is False


def test_keep_freed_memory_applies_on_glibc(monkeypatch):
    import platform

    for name in ("ELEKTRONN_KEEP_MEMORY", "GLIBC_TUNABLES", *backend._USER_MALLOC_VARS):
        monkeypatch.delenv(name, raising=False)
    expected = platform.libc_ver()[0] == "glibc"
    assert backend.keep_freed_memory() is expected


def _tiny_nets(mode):
    from elektronn.net.convnet import MixedConvNN

    net2 = MixedConvNN((12, 12), input_depth=1, batch_size=2, seed=0, mode=mode)
    net2.addConvLayer(3, 3, pool_shape=2, activation_func="relu")
    net2.addPerceptronLayer(4, activation_func="tanh")
    net2.addPerceptronLayer(3, activation_func="linear")
    net2.compileOutputFunctions(target="nll")
    net3 = MixedConvNN((5, 10, 10), input_depth=1, batch_size=1, seed=0, mode=mode)
    net3.addConvLayer(3, (1, 3, 3), pool_shape=(1, 2, 2), activation_func="relu")
    net3.addConvLayer(2, (2, 2, 2), pool_shape=1, activation_func="linear", is_last_layer=True)
    net3.compileOutputFunctions(target="nll")
    rng = np.random.default_rng(0)
    data2 = (rng.normal(size=(2, 1, 12, 12)).astype(np.float32), np.array([0, 2], np.int16))
    y3 = rng.integers(0, 2, (1, *net3.output_shape[2:])).astype(np.int16)  # (bs, z, x, y)
    data3 = (rng.normal(size=(1, 5, 1, 10, 10)).astype(np.float32), y3)
    return [(net2, data2), (net3, data3)]


@pytest.mark.parametrize("index", [0, 1], ids=["2d", "3d"])
def test_jax_mode_trains_like_numpy_mode(index):
    """Losses and SGD steps of a 2-D and a 3-D net agree between the JAX and numpy modes."""
    pytest.importorskip("jax")
    losses = {}
    for mode in ("jax", "numpy"):
        cnn, (x, y) = _tiny_nets(mode)[index]
        cnn.setOptimizerParams(SGD={"LR": 0.05, "momentum": 0.9})
        losses[mode] = [float(cnn.trainingStep(x, y, mode="SGD")[0]) for _ in range(3)]
        losses[mode].append(float(cnn.get_loss(x, y)[0]))
    np.testing.assert_allclose(losses["jax"], losses["numpy"], rtol=1e-4)
    assert losses["numpy"][-1] < losses["numpy"][0]


def _fusion_net(mfp, mode):
    """A 3-D relu net: MFP layers (prediction) or an unpooled and a pooled layer (training)."""
    from elektronn.net.convnet import MixedConvNN

    cnn = MixedConvNN((5, 11, 11), input_depth=1, batch_size=1, seed=0, mode=mode)
    cnn.addConvLayer(3, (1, 3, 3), pool_shape=(1, 1, 1) if not mfp else (1, 2, 2),
                     activation_func="relu", use_fragment_pooling=mfp)
    cnn.addConvLayer(3, (2, 2, 2), pool_shape=(1, 2, 2) if not mfp else 1,
                     activation_func="relu")
    cnn.addConvLayer(2, (1, 1, 1), pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll", only_forward=mfp)
    return cnn


def _fused_activations(fn):
    from elektronn.ops import ConvBiasAct

    return sorted(n.op.activation for n in fn.maker.fgraph.apply_nodes
                  if isinstance(n.op, ConvBiasAct))


def test_fused_conv_bias_relu_predicts_like_py_mode():
    """MFP net: every layer's bias and relu fused in numpy mode, same probabilities."""
    x = np.random.default_rng(0).normal(size=(1, 5, 1, 11, 11)).astype(np.float32)
    probs = {}
    for mode in ("numpy", "py"):
        cnn = _fusion_net(mfp=True, mode=mode)
        probs[mode] = cnn.class_probabilities(x)
        if mode == "numpy":
            assert _fused_activations(cnn.class_probabilities.fn) == ["linear", "relu", "relu"]
    np.testing.assert_allclose(probs["numpy"], probs["py"], rtol=1e-5, atol=1e-6)


def test_fused_conv_bias_relu_trains_like_py_mode():
    """Training graph: the unpooled layers fuse (the pooled one cannot), same SGD steps."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 1, 11, 11)).astype(np.float32)
    losses, weights = {}, {}
    for mode in ("numpy", "py"):
        cnn = _fusion_net(mfp=False, mode=mode)
        y = np.random.default_rng(1).integers(0, 2, (1, *cnn.output_shape[2:]))
        cnn.setOptimizerParams(SGD={"LR": 0.05, "momentum": 0.9})
        losses[mode] = [float(cnn.trainingStep(x, y.astype(np.int16), mode="SGD")[0])
                        for _ in range(3)]
        weights[mode] = cnn.layers[0].W.get_value()
        if mode == "numpy":
            assert _fused_activations(cnn.SGD.step) == ["linear", "relu"]
    np.testing.assert_allclose(losses["numpy"], losses["py"], rtol=1e-5)
    np.testing.assert_allclose(weights["numpy"], weights["py"], rtol=1e-4, atol=1e-6)


def test_numpy_mode_casts_with_numpy():
    """Casts run as one numpy call (PyTensor's Cast has no ufunc: one Python call per element)."""
    x = pt.matrix("x", dtype="int16")
    y = pt.matrix("y", dtype="float32")
    outs = [pt.cast(pt.eq(x, 1), "float32"), pt.cast(y, "float64"), pt.cast(y, "int8"),
            pt.cast(y, "bool"), pt.cast(y.sum(), "int32")]
    f, nodes = compiled_nodes([x, y], outs, "numpy")
    casts = [n for n in nodes if isinstance(n.op, Elemwise) and isinstance(n.op.scalar_op, Cast)]
    assert len(casts) == 5 and all(n.op.nfunc_spec is not None for n in casts)
    rng = np.random.default_rng(0)
    xv = rng.integers(0, 3, (20, 30)).astype(np.int16)
    yv = (rng.normal(size=(20, 30)) * 3).astype(np.float32)
    expected = pytensor.function([x, y], outs, mode=backend.get_mode("py"))(xv, yv)
    for got, want in zip(f(xv, yv), expected, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# --- modes per net ----------------------------------------------------------------------------

def _linker(fn):
    """What tells the modes apart: rewrite tags, elektronn's own rewrites, the linker."""
    query = fn.maker.mode.provided_optimizer
    linker = fn.maker.linker
    return (sorted(query.include), len(query.extra_rewrites), type(linker).__name__,
            getattr(linker, "c_thunks", None))


def _small_net(**kwargs):
    from elektronn.net.convnet import MixedConvNN

    cnn = MixedConvNN((8, 8), input_depth=1, batch_size=2, seed=0, **kwargs)
    cnn.addConvLayer(2, 3, pool_shape=2, activation_func="relu")
    cnn.addPerceptronLayer(3, activation_func="linear")
    cnn.compileOutputFunctions(target="nll")
    return cnn


def test_mode_context_restores_the_mode(monkeypatch):
    monkeypatch.setattr(backend, "_mode_name", "numpy")
    with backend.mode("PY") as name:
        assert name == backend.mode_name() == "py"
        with backend.mode("c"):
            assert backend.mode_name() == "c"
        assert backend.mode_name() == "py"
    assert backend.mode_name() == "numpy"
    with pytest.raises(ValueError, match="mode must be one of"), backend.mode("numba"):
        pass


def test_net_mode_is_fixed_when_the_net_is_built(monkeypatch):
    """Every function of a net, optimisers included, compiles in the mode it was built with."""
    monkeypatch.setattr(backend, "_mode_name", None)
    monkeypatch.delenv("ELEKTRONN_MODE", raising=False)
    with backend.mode("py"):
        cnn = _small_net()
    explicit = _small_net(mode="py")
    default = _small_net()
    assert (cnn.mode, explicit.mode, default.mode) == ("py", "py", "numpy")
    x = np.zeros((2, 1, 8, 8), np.float32)
    y = np.zeros(2, np.int16)
    with backend.mode("c"):  # the current mode no longer matters for built nets
        for net in (cnn, explicit, default):
            net.class_probabilities(x)
            net.trainingStep(x, y, mode="SGD")
    py = _linker(pytensor.function([], [], mode=backend.get_mode("py")))
    numpy = _linker(pytensor.function([], [], mode=backend.get_mode("numpy")))
    assert py != numpy
    for net in (cnn, explicit):
        assert _linker(net.class_probabilities.fn) == py
        assert _linker(net.SGD.step) == py
    assert _linker(default.class_probabilities.fn) == numpy
    assert _linker(default.SGD.step) == numpy
    with pytest.raises(ValueError, match="mode must be one of"):
        _small_net(mode="gpu")


# --- settings: applied by configure, shown by settings, undone by restore ----------------------

def test_configure_settings_restore_round_trip(monkeypatch):
    import ctypes

    from elektronn.ops import _kernels

    calls = []
    libc = ctypes.CDLL(None)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a: type("C", (), {"mallopt": staticmethod(
        lambda *args: calls.append(args) or 1)})() if a == (None,) else libc)
    for name in ("GLIBC_TUNABLES", *backend._USER_MALLOC_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("ELEKTRONN_KERNELS", "numpy")
    monkeypatch.setenv("ELEKTRONN_KEEP_MEMORY", "1")
    backend.restore()  # the test session configured already (tests/conftest.py)
    assert backend.settings()["configured"] is False
    calls.clear()
    pytensor.config.floatX = "float64"
    try:
        applied = backend.configure()
        assert applied == backend.settings()
        assert applied["configured"] is True
        assert applied["floatX"] == pytensor.config.floatX == "float32"
        assert applied["OMP_WAIT_POLICY"] == "PASSIVE"
        assert applied["kernels"] == "numpy" and _kernels.kernel_library() is None
        assert applied["keep_freed_memory"] is True and len(calls) == 2
        assert backend.configure() == applied and len(calls) == 2  # applied once
        backend.restore()
        restored = backend.settings()
        assert restored["configured"] is False
        assert pytensor.config.floatX == "float64"
        assert "OMP_WAIT_POLICY" not in __import__("os").environ
        assert restored["kernels"] == "c"
        assert len(calls) == 4  # glibc's thresholds set back
    finally:
        backend.restore()
        pytensor.config.floatX = "float32"
        monkeypatch.undo()
        backend.configure()


def test_environ_is_the_one_reader(monkeypatch):
    monkeypatch.setenv("ELEKTRONN_MNIST", "/data/mnist.pkl.gz")
    assert backend.environ("ELEKTRONN_MNIST") == "/data/mnist.pkl.gz"
    monkeypatch.delenv("ELEKTRONN_KERNELS", raising=False)
    assert backend.environ("ELEKTRONN_KERNELS") == "c"
    with pytest.raises(ValueError, match="ELEKTRONN_MODE"):
        backend.environ("ELEKTRONN_GPU")


@pytest.mark.slow
def test_compiledir_from_the_environment_applies_when_a_net_is_built(tmp_path):
    """ELEKTRONN_COMPILEDIR: untouched by imports, PyTensor's compile dir once a net is built."""
    import os
    import subprocess
    import sys

    code = (
        "import pytensor\n"
        "from elektronn.net.convnet import MixedConvNN\n"
        "from elektronn import backend\n"
        "assert backend._compiledir_if_set() is None\n"
        "MixedConvNN((8, 8), input_depth=1)\n"
        "print(pytensor.config.compiledir)\n"
    )
    env = dict(os.environ, ELEKTRONN_COMPILEDIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert Path(out.stdout.split()[-1]).parent == (tmp_path / "cache").resolve()
