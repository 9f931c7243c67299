"""Convolution Ops against scipy and numpy references, with gradient checks."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy.signal import convolve

from elektronn import backend, ops
from elektronn.ops import _kernels, reference

CASES = [  # (batch, in_ch, out_ch, spatial, kernel)
    (2, 3, 4, (9, 11), (3, 2)),
    (1, 2, 5, (5, 8, 7), (2, 3, 4)),
    (3, 1, 2, (4, 6, 5), (1, 3, 3)),
    (1, 4, 3, (20, 33), (5, 1)),
]


def scipy_conv(x, w, dtype=np.float32):
    """Multi-channel valid true convolution, one scipy call per (example, filter, channel)."""
    out = [
        [sum(convolve(x[n, c], w[o, c], mode="valid") for c in range(x.shape[1]))
         for o in range(w.shape[0])]
        for n in range(x.shape[0])
    ]
    return np.array(out, dtype=dtype)


@pytest.mark.parametrize("bs, ic, oc, sp, k", CASES)
def test_conv_matches_scipy(rng, bs, ic, oc, sp, k):
    x = rng.standard_normal((bs, ic, *sp)).astype(np.float32)
    w = rng.standard_normal((oc, ic, *k)).astype(np.float32)
    xs, ws = pt.tensor("x", shape=(None,) * x.ndim), pt.tensor("w", shape=(None,) * x.ndim)
    f = pytensor.function([xs, ws], ops.conv(xs, ws), mode=backend.get_mode())
    np.testing.assert_allclose(f(x, w), scipy_conv(x, w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reference.conv(x, w), scipy_conv(x, w), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bs, ic, oc, sp, k", CASES)
def test_kernels_match_reference(c_kernels, rng, bs, ic, oc, sp, k):
    x = rng.standard_normal((bs, ic, *sp)).astype(np.float32)
    w = rng.standard_normal((oc, ic, *k)).astype(np.float32)
    osh = tuple(s - kk + 1 for s, kk in zip(sp, k))
    g = rng.standard_normal((bs, oc, *osh)).astype(np.float32)
    np.testing.assert_allclose(_kernels.corr(x, w), reference.corr(x, w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        _kernels.corr_weights(x, g, k), reference.corr_weights(x, g, k), rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(
        _kernels.conv_grad_input(g, w), reference.conv_grad_input(g, w), rtol=1e-4, atol=1e-4
    )


def test_kernels_long_rows_and_tails(c_kernels, rng):
    """Sizes that exercise full vector blocks, the scalar tail and many output channels."""
    x = rng.standard_normal((2, 5, 13, 150)).astype(np.float32)
    w = rng.standard_normal((11, 5, 3, 4)).astype(np.float32)
    g = rng.standard_normal((2, 11, 11, 147)).astype(np.float32)
    np.testing.assert_allclose(_kernels.corr(x, w), reference.corr(x, w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        _kernels.corr_weights(x, g, (3, 4)), reference.corr_weights(x, g, (3, 4)),
        rtol=1e-4, atol=1e-3,
    )
    np.testing.assert_allclose(
        _kernels.conv_grad_input(g, w), reference.conv_grad_input(g, w), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("bs, ic, oc, sp, k", [
    (3, 1, 1, (9, 40), (2, 3)),  # one channel: one vector of 16 lanes, one short pair block
    (2, 3, 17, (6, 7, 8), (2, 2, 3)),  # two vectors of channels, a full and a half pair block
    (1, 2, 40, (5, 9, 10), (3, 3, 3)),  # three vectors, a half last block
    (2, 2, 80, (7, 30), (3, 2)),  # five vectors: blocks of 3 and 2 vectors
    (20, 2, 3, (40, 50), (3, 3)),  # many chunks: several partial-sum segments
])
def test_corr_weights_channel_blocks(c_kernels, rng, bs, ic, oc, sp, k):
    """Weight gradients for every register-block shape of ``corr_gradw``."""
    x = rng.standard_normal((bs, ic, *sp)).astype(np.float32)
    g = rng.standard_normal((bs, oc, *(s - kk + 1 for s, kk in zip(sp, k)))).astype(np.float32)
    np.testing.assert_allclose(
        _kernels.corr_weights(x, g, k), reference.corr_weights(x, g, k), rtol=1e-4, atol=1e-3
    )


@pytest.mark.parametrize("bs, ic, oc, sp, k", [
    (2, 2, 4, (7, 21, 21), (1, 4, 4)),  # the golden n3d net's first layer
    (3, 5, 6, (9, 31), (3, 3)),  # a vector tail, a short last channel block
    (1, 7, 15, (300,), (5,)),  # four channel blocks, a short last pair block
    (2, 1, 1, (16, 16), (1, 1)),  # no tail: positions end at the row end
])
def test_corr_weights_positions_in_lanes(c_kernels, rng, bs, ic, oc, sp, k):
    """Few output channels on larger planes: ``corr_gradw_pos``, every block shape."""
    x = rng.standard_normal((bs, ic, *sp)).astype(np.float32)
    g = rng.standard_normal((bs, oc, *(s - kk + 1 for s, kk in zip(sp, k)))).astype(np.float32)
    np.testing.assert_allclose(
        _kernels.corr_weights(x, g, k), reference.corr_weights(x, g, k), rtol=1e-4, atol=1e-3
    )


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("bs, ic, oc, sp, k", [
    (16, 4, 5, (5, 9, 9), (3, 3, 3)),  # small 3-D planes (MFP fragments)
    (5, 1, 10, (12, 12), (5, 5)),  # rows shorter than one register block (AVX-512: 96)
    (4, 2, 3, (6, 6), (3, 3)),  # 22 positions: shorter than a block of every width (8 x 3)
    (3, 2, 3, (40, 41), (2, 3)),
])
def test_kernels_both_batch_layouts(c_kernels, rng, force_batch_layout, merged, bs, ic, oc, sp,
                                    k):
    """Examples side by side in one plane or one plane each: the same results.

    The 3-D case also has the input gradient skip taps that read only zero slices of ``g``.
    """
    force_batch_layout(merged)
    x = rng.standard_normal((bs, ic, *sp)).astype(np.float32)
    w = rng.standard_normal((oc, ic, *k)).astype(np.float32)
    g = rng.standard_normal((bs, oc, *(s - kk + 1 for s, kk in zip(sp, k)))).astype(np.float32)
    np.testing.assert_allclose(_kernels.corr(x, w), reference.corr(x, w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        _kernels.corr_weights(x, g, k), reference.corr_weights(x, g, k), rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(
        _kernels.conv_grad_input(g, w), reference.conv_grad_input(g, w), rtol=1e-4, atol=1e-4
    )


def test_batch_layout_choice():
    """Merging pays on planes shorter than a block, not where 3-D kernels drop output slices."""
    # MNIST layer 2: 12x12 plane, 5x5 kernel: 92 positions per example, block 96
    assert _kernels._merged(64, 144, 52, 96)
    # MFP fragment (5, 27, 27) under a 3x3x3 kernel: 40 % of the merged plane is wasted
    assert not _kernels._merged(16, 5 * 27 * 27, 2 * 729 + 2 * 27 + 2, 96)
    assert not _kernels._merged(1, 10, 5, 96)


def test_plans_follow_the_shapes(c_kernels, rng):
    """Calls alternating between shapes that share a plane or a kernel each get their own plan
    (one per shape, made once), and the results of every call stay right."""
    shapes = [((2, 3, 9, 11), (4, 3, 3, 2)), ((2, 3, 11, 9), (4, 3, 3, 2)),
              ((2, 3, 9, 11), (4, 3, 2, 3)), ((3, 3, 9, 11), (5, 3, 3, 2)),
              ((1, 2, 9, 11), (4, 2, 3, 2))]
    _kernels._clear_plans()
    for _ in range(2):
        for xs, ws in shapes:
            x = rng.standard_normal(xs).astype(np.float32)
            w = rng.standard_normal(ws).astype(np.float32)
            y = reference.corr(x, w)
            g = rng.standard_normal(y.shape).astype(np.float32)
            np.testing.assert_allclose(_kernels.corr(x, w), y, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(_kernels.conv_grad_input(g, w),
                                       reference.conv_grad_input(g, w), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(_kernels.corr_weights(x, g, ws[2:]),
                                       reference.corr_weights(x, g, ws[2:]), rtol=1e-4, atol=1e-3)
    for plan in (_kernels._corr_plan, _kernels._grad_input_plan, _kernels._grad_weights_plan):
        assert plan.cache_info().currsize == len(shapes)
        assert plan.cache_info().hits == len(shapes)


def test_kernels_take_any_layout_and_dtype(c_kernels, rng):
    """Strided views, Fortran order and float64 inputs give the float32 results of their
    C-contiguous float32 copies; the inputs are left unchanged."""
    x = rng.standard_normal((3, 2, 14, 9))  # float64
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 4, 5, 7))
    xv, wv, gv = x[::-1, :, ::2], np.asfortranarray(w[:, :, ::-1]), g[:, :, ::-1]
    before = [a.copy() for a in (xv, wv, gv)]
    xc, wc, gc = (np.ascontiguousarray(a, dtype=np.float32) for a in (xv, wv, gv))
    np.testing.assert_array_equal(_kernels.corr(xv, wv), _kernels.corr(xc, wc))
    np.testing.assert_array_equal(_kernels.corr(xv, wv, np.arange(4.0), relu=True),
                                  _kernels.corr(xc, wc, np.arange(4, dtype=np.float32), True))
    np.testing.assert_array_equal(_kernels.conv_grad_input(gv, wv),
                                  _kernels.conv_grad_input(gc, wc))
    gw = _kernels.corr_weights(xv, gv, (3, 3))
    assert gw.dtype == np.float32 and gw.shape == (4, 2, 3, 3)
    np.testing.assert_array_equal(gw, _kernels.corr_weights(xc, gc, (3, 3)))
    for a, b in zip((xv, wv, gv), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("sp, k", [((9, 11), (3, 2)), ((5, 8, 7), (2, 3, 4)), ((300,), (5,))])
def test_kernels_flip(c_kernels, rng, force_batch_layout, merged, sp, k):
    """``flip=True``: the filters are read, and the filter gradient is written, flipped in every
    spatial axis, with the results of flipped copies (the numpy fallback too)."""
    force_batch_layout(merged)
    x = rng.standard_normal((3, 2, *sp)).astype(np.float32)
    w = rng.standard_normal((4, 2, *k)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    flip = (slice(None), slice(None)) + (slice(None, None, -1),) * len(k)
    y = _kernels.corr(x, w, b, relu=True, flip=True)
    np.testing.assert_array_equal(y, _kernels.corr(x, w[flip], b, relu=True))
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw = _kernels.corr_weights(x, g, k, flip=True)
    np.testing.assert_array_equal(gw, _kernels.corr_weights(x, g, k)[flip])
    assert gw.flags.c_contiguous
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kernels, "kernel_library", lambda: None)
        np.testing.assert_allclose(_kernels.corr(x, w, b, relu=True, flip=True), y,
                                   rtol=1e-4, atol=1e-4)
        fallback = _kernels.corr_weights(x, g, k, flip=True)
        np.testing.assert_allclose(fallback, gw, rtol=1e-4, atol=1e-3)
        assert fallback.flags.c_contiguous


def test_kernel_shape_errors(c_kernels):
    """Shapes that do not fit are a ValueError before any kernel runs."""
    x, w = np.zeros((2, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="corr"):
        _kernels.corr(x, w[:, :2])
    with pytest.raises(ValueError, match="corr"):
        _kernels.corr(x[:, :, :2], w)
    with pytest.raises(ValueError, match="conv_grad_input"):
        _kernels.conv_grad_input(np.zeros((2, 3, 6, 6), np.float32), w)
    with pytest.raises(ValueError, match="corr_weights"):
        _kernels.corr_weights(x, np.zeros((2, 4, 5, 6), np.float32), (3, 3))


def test_gradients_match_numpy(rng):
    x = rng.standard_normal((2, 3, 6, 5, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 5, 3, 5)).astype(np.float32)
    xs, ws = pt.tensor5("x"), pt.tensor5("w")
    cost = (ops.conv(xs, ws) * g).sum()
    f = pytensor.function([xs, ws], pytensor.grad(cost, [xs, ws]), mode=backend.get_mode())
    gx, gw = f(x, w)
    np.testing.assert_allclose(gx, reference.conv_grad_input(g, w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, reference.conv_grad_weights(x, g), rtol=1e-4, atol=1e-3)
    # the references themselves: conv is linear, so a finite difference of the float64 scipy
    # convolution is the exact derivative (up to float64 rounding)
    x64, w64, eps = x.astype(np.float64), w.astype(np.float64), 0.5
    for arr, grad, idx in ((x64, gx, (1, 2, 3, 1, 4)), (x64, gx, (0, 0, 0, 4, 0)),
                           (w64, gw, (3, 1, 1, 2, 0)), (w64, gw, (0, 2, 0, 0, 2))):
        saved = arr[idx]
        arr[idx] = saved + eps
        up = (scipy_conv(x64, w64, np.float64) * g).sum()
        arr[idx] = saved - eps
        down = (scipy_conv(x64, w64, np.float64) * g).sum()
        arr[idx] = saved
        assert grad[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-5)


def _verify(fn, inputs, rng):
    """Finite differences of linear Ops: a large step costs no accuracy, only float32 rounding."""
    verify_grad(fn, inputs, rng=rng, eps=0.5, abs_tol=TOL, rel_tol=TOL, mode=backend.get_mode())


TOL = 1e-4


@pytest.mark.parametrize("nd", [2, 3])
def test_verify_grad_all_three_ops(rng, nd):
    sp, k = ((6, 5, 4), (2, 3, 2)) if nd == 3 else ((7, 6), (3, 2))
    o = tuple(s - kk + 1 for s, kk in zip(sp, k))
    x = rng.standard_normal((2, 3, *sp)).astype(np.float32)
    w = rng.standard_normal((2, 3, *k)).astype(np.float32)
    g = rng.standard_normal((2, 2, *o)).astype(np.float32)
    _verify(lambda a, b: ops.Conv()(a, b), [x, w], rng)
    _verify(lambda a, b: ops.ConvGradInput()(a, b), [g, w], rng)
    _verify(lambda a, b: ops.ConvGradWeights()(a, b), [x, g], rng)


def test_static_shapes_and_infer_shape(rng):
    x = pt.tensor("x", shape=(2, 3, 9, 11))
    w = pt.tensor("w", shape=(4, 3, 3, 2))
    y = ops.conv2d(x, w)
    assert y.type.shape == (2, 4, 7, 10)
    xd, wd = pt.tensor4("xd"), pt.tensor4("wd")
    shp = pytensor.function([xd, wd], ops.conv(xd, wd).shape, mode=backend.get_mode())
    xv = np.zeros((2, 3, 9, 11), np.float32)
    wv = np.zeros((4, 3, 3, 2), np.float32)
    assert tuple(shp(xv, wv)) == (2, 4, 7, 10)
    # the shape graph must not run the convolution
    assert not any(isinstance(n.op, ops.Conv) for n in shp.maker.fgraph.apply_nodes)


def test_clear_errors():
    with pytest.raises(ValueError, match="filter axis 3 .* larger than input"):
        ops.conv(pt.tensor("x", shape=(1, 1, 5, 2)), pt.tensor("w", shape=(1, 1, 3, 3)))
    with pytest.raises(ValueError, match="input has 2 channels but filters expects 3"):
        ops.conv(pt.tensor("x", shape=(1, 2, 5, 5)), pt.tensor("w", shape=(1, 3, 3, 3)))
    with pytest.raises(ValueError, match="filters must have 4 dimensions"):
        ops.conv(pt.tensor4("x"), pt.tensor5("w"))
    with pytest.raises(ValueError, match="input must have dtype float32"):
        ops.conv(pt.tensor4("x", dtype="float64"), pt.tensor4("w"))
    with pytest.raises(ValueError, match="input must have at least 3 dimensions"):
        ops.conv(pt.matrix("x"), pt.matrix("w"))
    with pytest.raises(ValueError, match="5 dimensions"):
        ops.conv3d(pt.tensor4("x"), pt.tensor4("w"))
    xs, ws = pt.tensor4("x"), pt.tensor4("w")
    f = pytensor.function([xs, ws], ops.conv(xs, ws), mode=backend.get_mode())
    with pytest.raises(ValueError, match="do not fit input"):
        f(np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 3, 3), np.float32))
