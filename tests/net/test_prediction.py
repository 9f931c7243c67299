"""Tests of elektronn.net.prediction (``predictDense``) and elektronn.utils.

The reference is a naive loop: for every output pixel, cut a patch (from a non-MFP net of
the same weights) whose strided output grid contains the pixel's window, run
``class_probabilities`` on it with batch 1 and read the matching element.  The image is
extended with random junk beyond its end, so the result also shows that no prediction
depends on pixels outside its window.
"""

import doctest
import logging

import numpy as np
import pytest

from elektronn import defaults, utils
from elektronn.net import prediction
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator
from elektronn.net.prediction import (
    axis_phases,
    dense_positions,
    plan_axis,
    predict_dense,
    source_indices,
    symmetric_index,
    tile_starts,
)

TOL = dict(rtol=1e-5, atol=2e-6)


@pytest.fixture(autouse=True, params=["net", "twin"])
def predicting_net(request, monkeypatch):
    """Every test twice: predicting with the net itself, and with a twin built at once
    (:mod:`elektronn.net.prednet`, MFP everywhere and a larger tile)."""
    if request.param == "net":
        monkeypatch.setattr(defaults, "PREDICT_TWIN_BYTES", 0)
    else:
        monkeypatch.setattr(defaults, "PREDICT_TWIN_MAC", 0)
    return request.param


# --- pure helpers -----------------------------------------------------------------------------
def test_doctests():
    for module in (prediction, utils):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("pools, mfp, residues, shifts, stride", [
    ([2, 1], [False, False], [0], [0, 1], 2),
    ([2, 3], [False, False], [0], [0, 1, 2, 3, 4, 5], 6),
    ([2, 2, 1], [True, True, True], [0, 1, 2, 3], [0], 4),
    ([2, 2, 1], [True, False, True], [0, 1], [0, 2], 4),
    ([2, 2, 1], [False, True, True], [0, 2], [0, 1], 4),
    ([2, 2, 2], [True, False, True], [0, 1, 4, 5], [0, 2], 8),
    ([1, 1], [True, True], [0], [0], 1),
])
def test_axis_phases(pools, mfp, residues, shifts, stride):
    r, t, s = axis_phases(pools, mfp)
    assert (r.tolist(), t.tolist(), s) == (residues, shifts, stride)
    # every position modulo the stride is produced exactly once
    assert sorted((r[:, None] + t[None]).ravel().tolist()) == list(range(stride))


def test_axis_phases_indexes_the_offsets_of_the_ops():
    """Along each axis the fragment offsets of ``fragment_offsets`` are ``0 .. M-1``."""
    from elektronn.ops import fragment_offsets
    offsets, strides = None, None
    for pool in ([2, 3], [3, 2]):
        offsets, strides = fragment_offsets(offsets, strides, pool)
    for axis, pools in enumerate(([2, 3], [3, 2])):
        r, t, s = axis_phases(pools, [True, True])
        assert len(r) == strides[axis] == s and t.tolist() == [0]
        assert sorted(set(offsets[:, axis].tolist())) == list(range(len(r)))


def test_dense_positions():
    assert dense_positions(4, [0], 3).tolist() == [0, 3, 6, 9]
    assert dense_positions(6, [0, 1, 2], 3).tolist() == list(range(6))
    assert dense_positions(4, [0, 2], 4).tolist() == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="multiple of the MFP stride"):
        dense_positions(5, [0, 1], 2)


@pytest.mark.parametrize("patch, n_dense, pools, mfp, tile_in, tile_out, fov", [
    (8, 3, [2], [False], 9, 6, 4),            # conv 3 + pool 2: fov 4, stride 2
    (9, 6, [2], [True], 9, 6, 4),             # the same with MFP: dense, one pass
    (10, 1, [1], [False], 10, 1, 10),         # no pooling: one output
    (15, 4, [2, 2, 1], [True, False, True], 17, 8, 10),
    (15, 4, [2, 2, 1], [False, True, True], 16, 8, 9),
])
def test_plan_axis(patch, n_dense, pools, mfp, tile_in, tile_out, fov):
    p = plan_axis(patch, n_dense, pools, mfp)
    assert (p.tile_in, p.tile_out, p.fov) == (tile_in, tile_out, fov)
    covered = sorted((p.shifts[:, None] + p.positions[None]).ravel().tolist())
    assert covered == list(range(tile_out))
    assert p.passes == len(p.shifts)


def test_plan_axis_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="inconsistent net geometry"):
        plan_axis(3, 4, [2], [False])


def test_tile_starts():
    assert tile_starts(10, 4) == [0, 4, 8]
    assert tile_starts(8, 4) == [0, 4]
    assert tile_starts(1, 4) == [0]
    assert tile_starts(0, 4) == []


@pytest.mark.parametrize("size, pad", [(5, 0), (5, 2), (5, 5), (3, 7), (1, 4)])
def test_symmetric_index_is_np_pad(size, pad):
    a = np.arange(size)
    idx = symmetric_index(np.arange(-pad, size + pad), size)
    assert np.array_equal(a[idx], np.pad(a, pad, mode="symmetric"))
    assert np.array_equal(source_indices(0, size + 2 * pad + 9, pad, size), idx)
    assert np.array_equal(source_indices(2, 3, pad, size), idx[2:5])


def test_pprinttime():
    assert utils.pprinttime(12.4) == "t=12s"
    assert utils.pprinttime(300) == "t=300s"
    assert utils.pprinttime(301) == "t=5m"
    assert utils.pprinttime(4000) == "t=67m"
    assert utils.pprinttime(4001) == "t=1.1h"


# --- nets -------------------------------------------------------------------------------------
class Net:
    """A compiled net plus the calculator it was sized with."""

    def __init__(self, filters, pools, mfp, n_dim, desired, ch, n_lab, copy_from=None, seed=0):
        self.calc = CNNCalculator(filters, pools, desired_input=desired, MFP=mfp, n_dim=n_dim)
        cnn = MixedConvNN(self.calc.input, input_depth=ch, batch_size=1,
                          dimension_calc=self.calc, seed=seed)
        for i, (f, p, m) in enumerate(zip(filters, pools, mfp, strict=True)):
            last = i == len(filters) - 1
            cnn.addConvLayer(n_lab if last else 4, f, pool_shape=p, activation_func="tanh",
                             use_fragment_pooling=m, is_last_layer=last)
        cnn.compileOutputFunctions(target="nll", only_forward=True)
        if copy_from is not None:
            for mine, theirs in zip(cnn.layers, copy_from.cnn.layers, strict=True):
                mine.W.set_value(theirs.W.get_value())
                mine.b.set_value(theirs.b.get_value())
        self.cnn = cnn
        self.fov = [f[-1] for f in self.calc.fields]  # net order
        self._refs = {}


def spec_a(mfp):
    """2-D, anisotropic pools; field of view x 6 (even), y 5 (odd); stride (2, 2)."""
    return ([[3, 2], [2, 3], 1], [[2, 1], [1, 2], 1], [mfp] * 3, 2, 14)


def spec_b(mfp):
    """2-D, two pool-2 layers; field of view 7; stride 4."""
    return ([2, 2, 1], [2, 2, 1], mfp, 2, 16)


def spec_d(mfp):
    """3-D (zxy), pools (1, 2, 2); field of view z 3, x 6, y 5."""
    return ([[2, 3, 2], [2, 2, 2], 1], [[1, 2, 2], 1, 1], [mfp] * 3, 3, [5, 11, 11])


def spec_e(mfp):
    """3-D partial MFP: MFP pools (1, 2, 2) then a plain pool (2, 1, 1)."""
    return ([[1, 2, 2], [2, 2, 2], 1], [[1, 2, 2], [2, 1, 1], 1], mfp, 3, [6, 9, 9])


@pytest.fixture(scope="module")
def nets():
    out = {}
    out["A"] = Net(*spec_a(False), ch=2, n_lab=3)
    out["A_mfp"] = Net(*spec_a(True), ch=2, n_lab=3, copy_from=out["A"])
    out["B"] = Net(*spec_b([False] * 3), ch=2, n_lab=3, seed=1)
    out["B_mfp_first"] = Net(*spec_b([True, False, True]), ch=2, n_lab=3, copy_from=out["B"])
    out["B_mfp_second"] = Net(*spec_b([False, True, True]), ch=2, n_lab=3, copy_from=out["B"])
    out["D"] = Net(*spec_d(False), ch=1, n_lab=2, seed=2)
    out["D_mfp"] = Net(*spec_d(True), ch=1, n_lab=2, copy_from=out["D"])
    out["E"] = Net(*spec_e([False] * 3), ch=1, n_lab=2, seed=3)
    out["E_mfp"] = Net(*spec_e([True, False, True]), ch=1, n_lab=2, copy_from=out["E"])
    return out


def test_net_geometry(nets):
    """The nets cover what they should: MFP full/partial/none, even and odd fields of view."""
    a, a_mfp, b1, b2 = (nets[k].cnn for k in ("A", "A_mfp", "B_mfp_first", "B_mfp_second"))
    assert nets["A"].fov == [6, 5] and nets["B"].fov == [7, 7] and nets["D"].fov == [3, 6, 5]
    assert a.output_strides == [2, 2] and a_mfp.output_strides == [1, 1]
    assert b1.output_strides == [2, 2] and b2.output_strides == [2, 2]
    assert nets["E_mfp"].cnn.output_strides == [2, 1, 1]
    assert b1._atleast_single_mfp and b2._atleast_single_mfp


def naive_dense(net, img, offset=None, pad_raw=False, rng=None):
    """Reference dense prediction with a non-MFP net, one output pixel at a time.

    ``img`` is ``(ch, x, y[, z])``; the loop runs in the net's order (zxy for 3-D).
    """
    cnn = net.cnn
    assert not cnn._atleast_single_mfp
    nd = cnn.n_dim
    x = np.asarray(img, np.float32)
    if nd == 3:
        x = x.transpose(3, 0, 1, 2)  # (z, ch, x, y)
    spatial = (1, 2) if nd == 2 else (0, 2, 3)
    off = np.floor(net.calc.offset if offset is None else offset).astype(int)
    fov = np.array(net.fov)
    if pad_raw:
        widths = [(0, 0)] * x.ndim
        for ax, o in zip(spatial, off, strict=True):
            widths[ax] = (o, o)
        x = np.pad(x, widths, mode="symmetric")
    extent = np.array([x.shape[a] for a in spatial])
    stride = np.array(cnn.output_strides)
    n_out = np.array(cnn.output_shape[2:])
    ps = np.array(cnn.patch_size)
    junk = [(0, 0)] * x.ndim
    for ax, s, size in zip(spatial, stride, ps, strict=True):
        junk[ax] = (0, int(s + size))
    x = np.pad(x, junk)
    # random values beyond the image must not matter
    for ax, (_, width) in enumerate(junk):
        sl = [slice(None)] * x.ndim
        sl[ax] = slice(x.shape[ax] - width, None)
        x[tuple(sl)] = rng.normal(size=x[tuple(sl)].shape)
    n_pred = extent - 2 * off
    base = off - fov // 2
    result = np.zeros((cnn.n_lab, *n_pred), np.float32)
    cache = {}
    for p in np.ndindex(*n_pred):
        w = np.array(p) + base  # window start
        a = np.minimum(n_out - 1, w // stride)  # output element whose window starts at w
        q = w - a * stride  # patch start
        key = tuple(q)
        if key not in cache:
            cut = [slice(None)] * x.ndim
            for ax, start, size in zip(spatial, q, ps, strict=True):
                cut[ax] = slice(start, start + size)
            cache[key] = cnn.class_probabilities(x[tuple(cut)][None])[0]
        result[(slice(None), *p)] = cache[key][(slice(None), *a)]
    return result if nd == 2 else result.transpose(0, 2, 3, 1)


def reference(net, img, key, **kw):
    """Naive prediction, cached per net and image key."""
    if key not in net._refs:
        net._refs[key] = naive_dense(net, img, rng=np.random.default_rng(7), **kw)
    return net._refs[key]


IMG2 = {s: np.random.default_rng(i).normal(size=(2, *s)).astype(np.float32)
        for i, s in enumerate([(14, 14), (23, 19), (16, 25)])}


# --- 2-D --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(14, 14), (23, 19)])
@pytest.mark.parametrize("pad_raw", [False, True])
@pytest.mark.parametrize("name", ["A", "A_mfp"])
def test_2d_equals_naive(nets, name, shape, pad_raw):
    """No MFP and full MFP; even x / odd y field of view; one patch up to several tiles."""
    img = IMG2[shape]
    ref = reference(nets["A"], img, (shape, pad_raw), pad_raw=pad_raw)
    got = predict_dense(nets[name].cnn, img, show_progress=False, pad_raw=pad_raw)
    assert got.dtype == np.float32 and got.shape == ref.shape
    expected_shape = shape if pad_raw else (shape[0] - 6, shape[1] - 4)
    assert got.shape == (3, *expected_shape)
    np.testing.assert_allclose(got, ref, **TOL)


@pytest.mark.parametrize("name, ref_name", [
    ("A", "A"), ("A_mfp", "A"), ("B_mfp_first", "B"), ("B_mfp_second", "B"), ("D_mfp", "D"),
])
def test_image_of_exactly_one_patch(nets, name, ref_name):
    """The even field of view made ELEKTRONN 1.0 crash at the last tile."""
    cnn = nets[name].cnn
    patch = prediction._NetGeometry.from_cnn(cnn).axes
    img = IMG3 if cnn.n_dim == 3 else IMG2[(23, 19)]
    img = img[(slice(None), *(slice(0, a.patch) for a in patch[: img.ndim - 1]))]
    got = predict_dense(cnn, img, show_progress=False)
    ref = naive_dense(nets[ref_name], img, rng=np.random.default_rng(0))
    assert got.shape == ref.shape and got.size > 0
    np.testing.assert_allclose(got, ref, **TOL)


@pytest.mark.parametrize("name", ["B_mfp_first", "B_mfp_second", "B"])
@pytest.mark.parametrize("pad_raw", [False, True])
def test_2d_partial_mfp_equals_naive(nets, name, pad_raw):
    img = IMG2[(16, 25)]
    ref = reference(nets["B"], img, ((16, 25), pad_raw), pad_raw=pad_raw)
    got = predict_dense(nets[name].cnn, img, show_progress=False, pad_raw=pad_raw)
    np.testing.assert_allclose(got, ref, **TOL)


def test_mfp_and_plain_nets_agree(nets):
    img = np.random.default_rng(5).normal(size=(2, 25, 22)).astype(np.float32)
    plain = predict_dense(nets["A"].cnn, img, show_progress=False)
    mfp = predict_dense(nets["A_mfp"].cnn, img, show_progress=False)
    np.testing.assert_allclose(mfp, plain, **TOL)
    for name in ("B_mfp_first", "B_mfp_second"):
        np.testing.assert_allclose(predict_dense(nets[name].cnn, img, show_progress=False),
                                   predict_dense(nets["B"].cnn, img, show_progress=False), **TOL)


def test_explicit_offset_crops_and_stays_centred(nets, monkeypatch):
    cnn = nets["A_mfp"].cnn
    img = IMG2[(23, 19)]
    full = predict_dense(cnn, img, show_progress=False)
    monkeypatch.setattr(cnn, "dimension_calc", None)
    same = predict_dense(cnn, img, show_progress=False, offset=(3.5, 2.9))
    np.testing.assert_array_equal(same, full)
    cropped = predict_dense(cnn, img, show_progress=False, offset=(4, 3))
    np.testing.assert_allclose(cropped, full[:, 1:-1, 1:-1], **TOL)
    with pytest.raises(ValueError, match="needs the offset"):
        predict_dense(cnn, img, show_progress=False)
    with pytest.raises(ValueError, match="smaller than half the field of view"):
        predict_dense(cnn, img, show_progress=False, offset=(2, 2))
    with pytest.raises(ValueError, match=r"offset must be 2 numbers \(x, y\)"):
        predict_dense(cnn, img, show_progress=False, offset=(3, 3, 3))
    with pytest.raises(ValueError, match="larger than half the image"):
        predict_dense(cnn, img, show_progress=False, offset=(12, 3))


def test_2d_net_on_a_volume_predicts_slice_by_slice(nets):
    cnn = nets["A_mfp"].cnn
    vol = np.random.default_rng(3).normal(size=(2, 15, 16, 3)).astype(np.float32)
    got = predict_dense(cnn, vol, show_progress=False)
    assert got.shape == (3, 9, 12, 3)
    for z in range(3):
        np.testing.assert_allclose(got[..., z], predict_dense(cnn, vol[..., z],
                                                              show_progress=False), **TOL)


# --- 3-D --------------------------------------------------------------------------------------
IMG3 = np.random.default_rng(11).normal(size=(1, 14, 13, 7)).astype(np.float32)  # (ch, x, y, z)


@pytest.mark.parametrize("name, ref_name, pad_raw", [
    ("D", "D", False), ("D_mfp", "D", False), ("D_mfp", "D", True), ("E_mfp", "E", False),
])
def test_3d_equals_naive(nets, name, ref_name, pad_raw):
    ref = reference(nets[ref_name], IMG3, ("3d", pad_raw), pad_raw=pad_raw)
    got = predict_dense(nets[name].cnn, IMG3, show_progress=False, pad_raw=pad_raw)
    assert got.shape == ref.shape
    if name.startswith("D"):  # offsets (z, x, y) = (1, 3, 2)
        assert got.shape == ((2, 14, 13, 7) if pad_raw else (2, 8, 9, 5))
    np.testing.assert_allclose(got, ref, **TOL)


# --- output options ---------------------------------------------------------------------------
def test_uint8_truncates(nets):
    cnn = nets["A_mfp"].cnn
    img = IMG2[(23, 19)]
    prob = predict_dense(cnn, img, show_progress=False)
    as8 = predict_dense(cnn, img, show_progress=False, as_uint8=True)
    assert as8.dtype == np.uint8
    np.testing.assert_array_equal(as8, np.floor(prob * np.float32(255)).astype(np.uint8))
    assert (np.rint(prob * 255) != as8).any()  # rounding would differ somewhere


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.uint16])
def test_integer_images_are_scaled(nets, dtype):
    cnn = nets["A_mfp"].cnn
    ints = np.random.default_rng(9).integers(0, 256, size=(2, 17, 15)).astype(dtype)
    got = predict_dense(cnn, ints, show_progress=False)
    want = predict_dense(cnn, ints.astype(np.float32) / np.float32(255), show_progress=False)
    np.testing.assert_array_equal(got, want)
    floats = predict_dense(cnn, ints.astype(np.float64), show_progress=False)  # not scaled
    assert not np.allclose(floats, want)


# --- memory and reporting ---------------------------------------------------------------------
class SpyArray:
    """An array-like that only allows basic slicing and records how much is read."""

    def __init__(self, data):
        self._data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.largest_read = 0

    def __getitem__(self, key):
        assert all(isinstance(k, slice) for k in key), key
        block = self._data[key]
        self.largest_read = max(self.largest_read, block.size)
        return block.copy()

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was converted to an array")


@pytest.mark.parametrize("name", ["A", "A_mfp"])
@pytest.mark.parametrize("pad_raw", [False, True])
def test_reads_the_image_tile_by_tile(nets, name, pad_raw, predicting_net, monkeypatch):
    cnn = nets[name].cnn
    img = np.random.default_rng(4).normal(size=(2, 40, 37)).astype(np.float32)
    spy = SpyArray(img)
    if predicting_net == "twin":  # a budget for a twin of several tiles on this image
        monkeypatch.setattr(defaults, "PREDICT_TWIN_BYTES", 12_000)
    got = predict_dense(cnn, spy, show_progress=False, pad_raw=pad_raw)
    np.testing.assert_array_equal(got, predict_dense(cnn, img, show_progress=False,
                                                     pad_raw=pad_raw))
    if predicting_net == "twin":
        cnn = next(reversed(cnn._prediction_twins.values()))  # the last used
    geo = prediction._NetGeometry.from_cnn(cnn)
    tile = 2 * geo.axes[0].tile_in * geo.axes[1].tile_in
    assert 0 < spy.largest_read <= tile < img.size / 4


def test_progress_and_speed_report(nets, capsys, caplog):
    cnn = nets["A_mfp"].cnn
    img = IMG2[(23, 19)]
    caplog.set_level(logging.INFO, logger="elektronn")
    predict_dense(cnn, img, show_progress=True)
    err = capsys.readouterr().err
    assert "Predicting: 100%" in err and "Vox/s" in err  # a tqdm bar: rate and time left
    assert "Inference speed" not in err  # messages go through logging only
    messages = [r.getMessage() for r in caplog.records if r.name == "elektronn"]
    assert any(m.startswith("Predicting img (2, 23, 19) in") for m in messages)
    assert any(m.startswith("Inference speed: ") and "MVox/s" in m for m in messages)
    caplog.clear()
    predict_dense(cnn, img, show_progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert any(r.getMessage().startswith("Inference speed: ") for r in caplog.records)


# --- errors -----------------------------------------------------------------------------------
def test_errors(nets):
    a, d = nets["A_mfp"].cnn, nets["D_mfp"].cnn
    ok = IMG2[(23, 19)]
    with pytest.raises(ValueError, match=r"needs an array \(2, x, y\) with x>=13, y>=14"):
        predict_dense(a, ok[:1], show_progress=False)  # wrong channel count
    with pytest.raises(ValueError, match=r"\(2, x, y\)"):
        predict_dense(a, ok[0], show_progress=False)  # no channel axis
    with pytest.raises(ValueError, match="smaller than one patch"):
        predict_dense(a, ok[:, :12], show_progress=False)
    with pytest.raises(ValueError, match=r"needs an array \(1, x, y, z\)"):
        predict_dense(d, IMG3[..., 0], show_progress=False)  # 3-D net, 2-D image
    with pytest.raises(ValueError, match="smaller than one patch"):
        predict_dense(d, IMG3[..., :2], show_progress=False)
    with pytest.raises(ValueError, match="numeric"):
        predict_dense(a, ok.astype(str), show_progress=False)
    # with mirror padding a smaller image is enough
    assert predict_dense(a, ok[:, :10, :10], show_progress=False, pad_raw=True).shape == \
        (3, 10, 10)


def test_errors_for_nets_that_cannot_predict_densely():
    mlp = MixedConvNN(6, batch_size=2)
    mlp.addPerceptronLayer(3)
    mlp.compileOutputFunctions(only_forward=True)
    with pytest.raises(ValueError, match="2-D or 3-D conv net"):
        predict_dense(mlp, np.zeros((1, 6, 6), np.float32))
    cnn = MixedConvNN((6, 6), input_depth=1, batch_size=1)
    cnn.addConvLayer(2, 3, pool_shape=1, is_last_layer=True)
    with pytest.raises(ValueError, match="compileOutputFunctions"):
        predict_dense(cnn, np.zeros((1, 6, 6), np.float32), offset=(1, 1))


@pytest.mark.parametrize("lazy", [False, True])
def test_non_finite_input_warns_once_with_the_count(nets, lazy, tmp_path):
    """NaN/inf input gives NaN over its field of view; one warning says how many voxels."""
    import warnings

    import h5py

    img = IMG2[(23, 19)].astype(np.float32)
    img[0, 5, 5] = np.nan
    img[1, 5, 6] = np.inf
    img[0, 20, 3] = np.nan
    if lazy:  # an h5py dataset is read tile by tile
        with h5py.File(tmp_path / "img.h5", "w") as f:
            f["img"] = img
        f = h5py.File(tmp_path / "img.h5", "r")
        source = f["img"]
    else:
        source = img
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = predict_dense(nets["A"].cnn, source, show_progress=False)
    if lazy:
        f.close()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and f"3 of {img.size} input voxels are not finite" in messages[0]
    assert np.isnan(got).any() and np.isfinite(got).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite input: no warning
        predict_dense(nets["A"].cnn, IMG2[(23, 19)], show_progress=False)
