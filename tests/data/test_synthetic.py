"""Tests of elektronn.data.synthetic: the synthetic EM volume and its HDF5 files."""

import doctest

import h5py
import numpy as np
import pytest

from elektronn.data import synthetic
from elektronn.data.synthetic import LABEL_NAME, RAW_NAME, em_volume, write_cubes, write_h5

SHAPE = (64, 56, 16)


@pytest.fixture(scope="module")
def volume():
    return em_volume(SHAPE, seed=3)


def test_doctests():
    result = doctest.testmod(synthetic)
    assert result.failed == 0 and result.attempted > 0


def test_shape_dtype_and_labels(volume):
    raw, lab = volume
    assert raw.shape == lab.shape == SHAPE
    assert raw.dtype == np.uint8 and lab.dtype == np.int16
    assert set(np.unique(lab).tolist()) == {0, 1}


def test_same_seed_same_volume_other_seed_other_volume(volume):
    raw, lab = volume
    raw2, lab2 = em_volume(SHAPE, seed=3)
    np.testing.assert_array_equal(raw, raw2)
    np.testing.assert_array_equal(lab, lab2)
    raw3, lab3 = em_volume(SHAPE, seed=4)
    assert not np.array_equal(lab, lab3) and not np.array_equal(raw, raw3)


def test_membranes_present_in_every_slice_and_dark(volume):
    raw, lab = volume
    assert 0.08 < lab.mean() < 0.35
    assert lab.mean(axis=(0, 1)).min() > 0.05  # every z-slice has membranes
    assert raw[lab == 1].mean() < raw[lab == 0].mean() - 40
    assert raw.std() > 20 and 0 < raw.mean() < 255  # a real image, not saturated


def test_membranes_are_thin_in_xy(volume):
    """No 3x3 block of a slice is all membrane: the membranes are about 2 px wide."""
    _, lab = volume
    blocks = np.lib.stride_tricks.sliding_window_view(lab, (3, 3), axis=(0, 1))
    assert blocks.min(axis=(-2, -1)).mean() < 0.01


def test_invalid_shape():
    with pytest.raises(ValueError, match="shape must be 3 sizes"):
        em_volume((32, 32))
    with pytest.raises(ValueError, match="shape must be 3 sizes"):
        em_volume((32, 32, 1))


def test_write_h5_roundtrip_and_overwrite(tmp_path):
    path = tmp_path / "a.h5"
    write_h5(path, "raw", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    write_h5(path, "raw", np.ones((2, 2, 2), np.int16))
    with h5py.File(path, "r") as f:
        assert list(f) == ["raw"]
        assert f["raw"].dtype == np.int16 and f["raw"].shape == (2, 2, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]


def test_write_h5_failure_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.h5"
    write_h5(path, "lab", np.zeros(3, np.int16))
    with pytest.raises(TypeError):
        write_h5(path, "lab", np.array([object()]))
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]
    np.testing.assert_array_equal(synthetic.read_h5(path, "lab"), np.zeros(3, np.int16))


def test_write_cubes_layout(tmp_path):
    shape = (40, 40, 10)
    files = write_cubes(tmp_path / "cubes", n_cubes=2, shape=shape, seed=7)
    assert [(r.name, lab.name) for r, lab in files] == [
        ("raw_0.h5", "barrier_int16_0.h5"), ("raw_1.h5", "barrier_int16_1.h5")]
    for i, (raw_path, lab_path) in enumerate(files):
        raw, lab = em_volume(shape, seed=(7, i))
        with h5py.File(raw_path, "r") as f:
            assert list(f) == [RAW_NAME] and f[RAW_NAME].dtype == np.uint8
            np.testing.assert_array_equal(f[RAW_NAME][()], raw)
        with h5py.File(lab_path, "r") as f:
            assert list(f) == [LABEL_NAME] and f[LABEL_NAME].dtype == np.int16
            np.testing.assert_array_equal(f[LABEL_NAME][()], lab)
    assert not np.array_equal(synthetic.read_h5(files[0][0], RAW_NAME),
                              synthetic.read_h5(files[1][0], RAW_NAME))
