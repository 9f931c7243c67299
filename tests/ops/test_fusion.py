"""Bias and relu fused into the convolution: the kernel, ConvBiasAct and the numpy mode rewrites."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import NullTypeGradError
from pytensor.tensor.elemwise import Elemwise

from elektronn import backend, ops
from elektronn.ops import _kernels, reference


def _with_bias(y, b, relu):
    y = y + b.reshape((-1,) + (1,) * (y.ndim - 2))
    return np.maximum(y, 0) if relu else y


def _data(rng, bs, ic, oc, sp, k):
    x = rng.standard_normal((bs, ic, *sp)).astype(np.float32)
    w = rng.standard_normal((oc, ic, *k)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    return x, w, b


# --- the kernel ------------------------------------------------------------------------------

@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("bs, ic, oc, sp, k", [
    (16, 4, 5, (5, 9, 9), (3, 3, 3)),  # small 3-D planes (MFP fragments)
    (5, 1, 10, (12, 12), (5, 5)),  # rows shorter than one register block: the scalar path
    (3, 2, 3, (40, 41), (2, 3)),
    (2, 3, 11, (6, 20, 30), (2, 3, 3)),  # a partial output-channel block
])
def test_kernel_bias_relu_match_reference(rng, force_batch_layout, c_kernels, relu, merged, bs, ic,
                                          oc, sp, k):
    """Both batch layouts (examples side by side or one plane each), 2-D and 3-D."""
    force_batch_layout(merged)
    x, w, b = _data(rng, bs, ic, oc, sp, k)
    np.testing.assert_allclose(_kernels.corr(x, w, b, relu=relu),
                               _with_bias(reference.corr(x, w), b, relu), rtol=1e-4, atol=1e-4)


def test_kernel_relu_keeps_nan(c_kernels):
    x = np.ones((1, 1, 3, 40), np.float32)
    x[0, 0, 1, 5] = np.nan
    y = _kernels.corr(x, -np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32), relu=True)
    assert np.isnan(y[0, 0, 1, 5]) and np.sum(np.isnan(y)) == 1
    assert np.all(y[~np.isnan(y)] == 0)


@pytest.mark.parametrize("relu", [False, True])
def test_numpy_fallback_bias_relu(rng, monkeypatch, relu):
    monkeypatch.setattr(_kernels, "kernel_library", lambda: None)
    x, w, b = _data(rng, 2, 3, 4, (7, 8), (3, 2))
    np.testing.assert_allclose(_kernels.corr(x, w, b, relu=relu),
                               _with_bias(reference.corr(x, w), b, relu), rtol=1e-5, atol=1e-5)


# --- the Op ----------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_conv_bias_act_op(rng, activation):
    x, w, b = _data(rng, 2, 3, 4, (6, 7, 5), (2, 3, 2))
    xs, ws, bs = pt.tensor5("x"), pt.tensor5("w"), pt.vector("b")
    out = ops.ConvBiasAct(activation)(xs, ws, bs)
    f = pytensor.function([xs, ws, bs], [out, out.shape], mode=backend.get_mode("py"))
    y, shape = f(x, w, b)
    np.testing.assert_allclose(y, _with_bias(reference.conv(x, w), b, activation == "relu"),
                               rtol=1e-4, atol=1e-4)
    assert tuple(shape) == y.shape == (2, 4, 5, 5, 4)


def test_conv_bias_act_static_shape_and_errors():
    x, w = pt.tensor("x", shape=(2, 3, 9, 11)), pt.tensor("w", shape=(None, 3, 3, 2))
    assert ops.ConvBiasAct()(x, w, pt.tensor("b", shape=(4,))).type.shape == (2, 4, 7, 10)
    with pytest.raises(ValueError, match="activation must be one of"):
        ops.ConvBiasAct("tanh")
    with pytest.raises(ValueError, match="bias must have 1 dimensions"):
        ops.ConvBiasAct()(x, w, pt.matrix("b"))
    with pytest.raises(ValueError, match="bias has 5 entries but the filters have 4"):
        ops.ConvBiasAct()(x, pt.tensor("w", shape=(4, 3, 3, 2)), pt.tensor("b", shape=(5,)))
    with pytest.raises(ValueError, match="filter axis 3 .* larger than input"):
        ops.ConvBiasAct()(pt.tensor("x", shape=(1, 3, 5, 1)), w, pt.vector("b"))
    xs, ws, bs = pt.tensor4("x"), pt.tensor4("w"), pt.vector("b")
    f = pytensor.function([xs, ws, bs], ops.ConvBiasAct()(xs, ws, bs),
                          mode=backend.get_mode("py"))
    with pytest.raises(ValueError, match="bias of shape .* does not match"):
        f(np.zeros((1, 1, 4, 4), np.float32), np.zeros((2, 1, 3, 3), np.float32),
          np.zeros(3, np.float32))
    with pytest.raises(NullTypeGradError):
        pytensor.grad(ops.ConvBiasAct()(xs, ws, bs).sum(), ws)


# --- the rewrites ----------------------------------------------------------------------------

def _relu(t):
    return t * (t > 0)  # as elektronn.net.activations writes it


def _compile(inputs, outputs, mode="numpy"):
    return pytensor.function(inputs, outputs, mode=backend.get_mode(mode))


def _kinds(f):
    """The compiled graph's nodes: ``ConvBiasAct:<activation>``, other Op class names, and the
    scalar op name of each Elemwise."""
    kinds = []
    for node in f.maker.fgraph.apply_nodes:
        op = node.op
        if isinstance(op, ops.ConvBiasAct):
            kinds.append(f"ConvBiasAct:{op.activation}")
        elif isinstance(op, Elemwise):
            kinds.append(type(op.scalar_op).__name__)
        else:
            kinds.append(type(op).__name__)
    return sorted(kinds)


def _agree_with_py(inputs, outputs, values):
    """Compile for numpy and py modes; check equal results; return the numpy function."""
    f = _compile(inputs, outputs)
    got, want = f(*values), _compile(inputs, outputs, "py")(*values)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return f


def _layer_inputs(rng, nd=3, mfp=False):
    """Symbolic and numeric ``x, w, b``; the output planes (8, 8) pool, (9, 9) fragment."""
    sp = (4, 10 + mfp, 10 + mfp) if nd == 3 else (12, 10)
    x, w, b = _data(rng, 2, 3, 4, sp, (2, 3, 3)[-nd:])
    xs, ws, bs = pt.tensor("x", shape=x.shape), pt.tensor("w", shape=w.shape), pt.vector("b")
    return (xs, ws, bs), (x, w, b)


def _bias(b, nd):
    return b.dimshuffle(("x", 0) + ("x",) * nd)


LAYERS = {  # name -> (layer of (conv, bias), the ops it should compile to)
    "bias": (lambda c, b: c + b, ["ConvBiasAct:linear"]),
    "bias_first": (lambda c, b: b + c, ["ConvBiasAct:linear"]),
    "relu": (lambda c, b: _relu(c + b), ["ConvBiasAct:relu"]),
    "relu_mask_first": (lambda c, b: (b + c > 0) * (b + c), ["ConvBiasAct:relu"]),
    "pool": (lambda c, b: ops.pool(c, (1, 2, 2)) + b, ["ConvBiasAct:linear", "Pool"]),
    "pool_relu": (lambda c, b: _relu(ops.pool(c, (1, 2, 2)) + b),
                  ["ConvBiasAct:relu", "Pool"]),
    "mfp_relu": (lambda c, b: _relu(b + ops.max_fragment_pool(c, (1, 2, 2))),
                 ["ConvBiasAct:relu", "MaxFragmentPool"]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_rewrite_fuses_bias_and_relu(rng, name):
    layer, expected = LAYERS[name]
    (xs, ws, bs), values = _layer_inputs(rng, mfp="mfp" in name)
    out = layer(ops.conv(xs, ws), _bias(bs, 3))
    f = _agree_with_py([xs, ws, bs], [out], values)
    assert [k for k in _kinds(f) if k != "DimShuffle"] == expected


def test_rewrite_in_2d(rng):
    (xs, ws, bs), values = _layer_inputs(rng, nd=2)
    out = _relu(ops.pool(ops.conv(xs, ws), (2, 2)) + _bias(bs, 2))
    f = _agree_with_py([xs, ws, bs], [out], values)
    assert "ConvBiasAct:relu" in _kinds(f)


NOT_FUSED = {  # name -> graph of (conv, bias) that must keep its Add (or its relu)
    "maxabs": lambda c, b: [_relu(ops.pool(c, (1, 2, 2), "maxabs") + b)],
    "mfp_maxabs": lambda c, b: [ops.max_fragment_pool(c, (1, 2, 2), "maxabs") + b],
    "conv_used_twice": lambda c, b: [c + b, c.sum()],
    "pool_used_twice": lambda c, b: [ops.pool(c, (1, 2, 2)) + b, ops.pool(c, (1, 2, 2)).sum()],
    "conv_used_by_pool_grad": lambda c, b: [pytensor.grad(
        ((ops.pool(c, (1, 2, 2)) + b) ** 2).sum(), c.owner.inputs[1])],
    "scalar_bias": lambda c, b: [c + b.sum().dimshuffle(("x",) * 5)],
}


@pytest.mark.parametrize("name", list(NOT_FUSED))
def test_rewrite_leaves_other_graphs_alone(rng, name):
    (xs, ws, bs), values = _layer_inputs(rng, mfp="mfp" in name)
    outputs = NOT_FUSED[name](ops.conv(xs, ws), _bias(bs, 3))
    f = _agree_with_py([xs, ws, bs], outputs, values)
    assert not any(k.startswith("ConvBiasAct") for k in _kinds(f))
    assert "Conv" in _kinds(f)


def test_one_bias_entry_for_all_channels_is_not_fused(rng):
    """A bias of static length 1 broadcasts over the channels: ConvBiasAct cannot do that."""
    _, values = _layer_inputs(rng)
    xs, ws, bs = pt.tensor5("x"), pt.tensor5("w"), pt.vector("b")
    out = ops.conv(xs, ws) + _bias(pt.specify_shape(bs[:1], (1,)), 3)
    f = _agree_with_py([xs, ws, bs], [out], values)
    assert "Conv" in _kinds(f)


def test_relu_not_fused_when_its_input_has_other_uses(rng):
    (xs, ws, bs), values = _layer_inputs(rng)
    lin = ops.conv(xs, ws) + _bias(bs, 3)
    f = _agree_with_py([xs, ws, bs], [_relu(lin), lin.sum()], values)
    assert "ConvBiasAct:linear" in _kinds(f) and "ConvBiasAct:relu" not in _kinds(f)


def test_fused_relu_serves_the_gradient_mask(rng):
    """In a training graph the relu gradient keeps its mask, computed from the fused output."""
    (xs, ws, bs), values = _layer_inputs(rng)
    h = _relu(ops.conv(xs, ws) + _bias(bs, 3))
    loss = pt.tanh(h).sum()
    f = _agree_with_py([xs, ws, bs], [loss, *pytensor.grad(loss, [ws, bs])], values)
    kinds = _kinds(f)
    assert "ConvBiasAct:relu" in kinds and "Conv" not in kinds and "GT" in kinds
