"""The JAX implementations of the Ops (``elektronn.ops.jax_dispatch``) against the C mode.

Every test compiles one graph (outputs and gradients together) in both modes and compares the
results on fresh random inputs.  JAX needs static shapes, so every input has a full static shape.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402
from pytensor.link.jax.dispatch import jax_funcify  # noqa: E402

from elektronn import backend, ops  # noqa: E402
from elektronn.ops import jax_dispatch, reference  # noqa: E402
from elektronn.ops.malis import MalisWeights  # noqa: E402
from tests.conftest import distinct  # noqa: E402

# PyTensor sums float32 in a float64 accumulator (``Sum{acc=float64}``); JAX without x64 warns
# that it accumulates in float32 instead (harmless here: the results still agree within rtol).
pytestmark = [
    pytest.mark.jax,
    pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning"),
]

ALL_OPS = (
    ops.Conv,
    ops.ConvGradInput,
    ops.ConvGradWeights,
    ops.Pool,
    ops.PoolGrad,
    ops.MaxFragmentPool,
    ops.MaxFragmentPoolGrad,
    ops.FragmentsToDense,
    ops.DenseToFragments,
    MalisWeights,
)


def tensor(name, shape, dtype="float32"):
    """A symbolic input with a full static shape."""
    return pt.tensor(name, shape=shape, dtype=dtype)


def assert_modes_agree(inputs, outputs, values, rtol=1e-4):
    """Compile ``outputs`` in JAX and C mode and compare them on ``values``."""
    f_jax = pytensor.function(inputs, outputs, mode=backend.get_mode("jax"))
    f_c = pytensor.function(inputs, outputs, mode=backend.get_mode("c"))
    for got, want in zip(f_jax(*values), f_c(*values), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        atol = rtol * max(float(np.abs(want).max()), 1e-6)  # sums may cancel to ~0
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def weighted_sum(y, rng):
    """``sum(y * r)`` with fixed random ``r``: a cost whose gradient reaches every element."""
    r = rng.standard_normal(y.type.shape).astype(np.float32)
    return (y * r).sum()


def test_every_op_is_registered():
    default = jax_funcify.dispatch(object)
    for op in ALL_OPS:
        assert jax_funcify.dispatch(op) is not default, op.__name__


def test_jax_dispatch_leaves_mode_and_x64_alone():
    before = backend.mode_name()
    backend.get_mode("jax")
    assert backend.mode_name() == before
    assert not jax.config.jax_enable_x64  # reset by PyTensor's JAX dispatch (floatX float32)


@pytest.mark.parametrize(
    "xshape, wshape",
    [((2, 3, 9, 7), (4, 3, 3, 2)), ((2, 2, 6, 7, 5), (3, 2, 2, 3, 1))],
    ids=["2d", "3d"],
)
def test_conv_and_gradients(rng, xshape, wshape):
    x, w = tensor("x", xshape), tensor("w", wshape)
    y = ops.conv(x, w)
    gx, gw = pytensor.grad(weighted_sum(y, rng), [x, w])
    # second order: exercises the pullbacks of ConvGradInput and ConvGradWeights
    ggw = pytensor.grad((gx**2).sum() + (gw**2).sum(), w)
    values = [rng.standard_normal(s).astype(np.float32) for s in (xshape, wshape)]
    assert_modes_agree([x, w], [y, gx, gw, ggw], values)


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize(
    "shape, ws", [((2, 3, 6, 6), (2, 3)), ((1, 2, 6, 4, 9), (3, 1, 3))], ids=["2d", "3d"]
)
def test_pool_and_gradient(rng, mode, shape, ws):
    x = tensor("x", shape)
    y = ops.pool(x, ws, mode)
    gx = pytensor.grad(weighted_sum(y, rng) + (y**2).sum(), x)
    ggx = pytensor.grad(weighted_sum(gx, rng), x)  # through the pullback of PoolGrad
    values = distinct(rng, shape) * rng.choice([-1, 1], shape).astype(np.float32)
    assert_modes_agree([x], [y, gx, ggx], [values])


def test_pool_ties_all_get_the_gradient(rng):
    shape, ws = (2, 2, 4, 6), (2, 3)
    x = tensor("x", shape)
    outs = []
    for mode in ("max", "maxabs"):
        y = ops.pool(x, ws, mode)
        outs += [y, pytensor.grad(weighted_sum(y, rng), x)]
    ties = rng.integers(-2, 3, shape).astype(np.float32)  # many ties, +-equal magnitudes
    assert_modes_agree([x], outs, [ties], rtol=0)


def test_maxout(rng):
    x = tensor("x", (2, 6, 3, 4))
    y = ops.maxout(x, 3, "maxabs")
    gx = pytensor.grad(weighted_sum(y, rng), x)
    assert_modes_agree([x], [y, gx], [distinct(rng, (2, 6, 3, 4))])


@pytest.mark.parametrize("mode", ["max", "maxabs"])
@pytest.mark.parametrize(
    "shape, ws", [((2, 3, 7, 8), (2, 3)), ((1, 2, 8, 5, 7), (3, 1, 2))], ids=["2d", "3d"]
)
def test_mfp_and_gradient(rng, mode, shape, ws):
    x = tensor("x", shape)
    y = ops.max_fragment_pool(x, ws, mode)
    (gx,) = pytensor.grad(weighted_sum(y, rng), [x])
    values = distinct(rng, shape) * rng.choice([-1, 1], shape).astype(np.float32)
    assert_modes_agree([x], [y, gx], [values])


def test_reassembly_and_gradients(rng):
    o, s = ops.fragment_offsets(*ops.fragment_offsets(None, None, (1, 2, 2)), (3, 1, 2))
    fshape, dshape = (2 * len(o), 3, 2, 4, 3), (2, 3, 6, 8, 12)
    f, d = tensor("f", fshape), tensor("d", dshape)
    dense = ops.FragmentsToDense(o, s)(f)
    frags = ops.DenseToFragments(o, s)(d)
    gf = pytensor.grad(weighted_sum(dense, rng), f)
    gd = pytensor.grad(weighted_sum(frags, rng), d)
    values = [rng.standard_normal(v).astype(np.float32) for v in (fshape, dshape)]
    assert_modes_agree([f, d], [dense, frags, gf, gd], values, rtol=0)


@pytest.mark.parametrize(
    "xshape, k1, ws, k2",
    [
        ((1, 2, 13, 12), (3, 2), (2, 2), (2, 3)),
        ((1, 1, 7, 11, 12), (2, 3, 2), (1, 2, 3), (1, 2, 2)),
    ],
    ids=["2d", "3d"],
)
def test_net_like_graph(rng, xshape, k1, ws, k2):
    """conv -> MFP -> conv -> fragments_to_dense with gradients, as a net in MFP mode."""
    x = tensor("x", xshape)
    w1, w2 = tensor("w1", (3, xshape[1]) + k1), tensor("w2", (2, 3) + k2)
    h = pt.tanh(ops.conv(x, w1))
    h = ops.max_fragment_pool(h, ws, "maxabs")
    h = ops.conv(h, w2)
    out = ops.fragments_to_dense(h, *ops.fragment_offsets(None, None, ws))
    grads = pytensor.grad(weighted_sum(out, rng), [x, w1, w2])
    # small weights keep tanh away from saturation, where near-ties of +-1 would let rounding
    # differences between the modes pick different maxabs winners
    values = [rng.standard_normal(v.type.shape).astype(np.float32) for v in (x, w1, w2)]
    values[1] *= np.float32(0.2)
    assert_modes_agree([x, w1, w2], [out, *grads], values)


def test_malis_weights(rng):
    shape = (3, 5, 6)
    aff_pred = tensor("aff_pred", (3, *shape))
    aff_gt = tensor("aff_gt", (3, *shape), dtype="int32")
    seg = tensor("seg", shape, dtype="int32")
    pos, neg = MalisWeights()(aff_pred, aff_gt, seg)
    seg_v = rng.integers(0, 4, shape).astype(np.int32)
    aff_gt_v = rng.integers(0, 2, (3, *shape)).astype(np.int32)
    values = [rng.random((3, *shape)).astype(np.float32), aff_gt_v, seg_v]
    assert_modes_agree([aff_pred, aff_gt, seg], [pos, neg], values, rtol=0)


def test_functions_trace_under_jit(rng):
    """The plain JAX functions need nothing but the static shapes of their arguments."""
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    y = jax.jit(jax_dispatch.conv)(x, w)
    np.testing.assert_allclose(y, reference.conv(x, w), rtol=1e-4, atol=1e-4)
    mfp = jax.jit(jax_dispatch.mfp, static_argnums=(1, 2))(x, (2, 3), "maxabs")
    np.testing.assert_array_equal(mfp, reference.mfp(x, (2, 3), "maxabs"))


@pytest.mark.slow
def test_plain_pytensor_jax_mode_works_without_elektronn_backend():
    """A fresh process: import elektronn.ops only, compile with mode="JAX" (no set_mode)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, pytensor, pytensor.tensor as pt\n"
        "from elektronn import ops\n"
        "assert 'jax' not in sys.modules and 'elektronn.backend' not in sys.modules\n"
        "x = pt.tensor('x', dtype='float32', shape=(1, 1, 6, 6))\n"
        "w = pt.tensor('w', dtype='float32', shape=(2, 1, 3, 3))\n"
        "f = pytensor.function([x, w], ops.pool(ops.conv(x, w), (2, 2)), mode='JAX')\n"
        "print(np.asarray(f(np.ones((1, 1, 6, 6), 'float32'), np.ones((2, 1, 3, 3), 'float32')))"
        ".ravel().tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-8:] == ["[9.0,"] + ["9.0,"] * 6 + ["9.0]"]
