"""Tests of elektronn.training.CNNData on small cubes written by the tests."""

import os

import h5py
import numpy as np
import pytest

import elektronn.training.CNNData as cnndata_module
from elektronn.data import synthetic
from elektronn.net.netutils import CNNCalculator
from elektronn.training.CNNData import CNNData, H5Volume
from elektronn.training.patches import strip_cubes

# Hand-made cubes: image channels hold the (1-based) file coordinates x, y, z (+ 1000 * cube),
# labels are a known function of the same coordinates, stored without the CNN offset border.
SHAPE = (24, 22, 14)  # x, y, z


def lab_fn(x, y, z):
    return (7 * x + 3 * y + 5 * z) % 200 + 1  # > 0 inside the labelled area


def write_coord_cubes(folder, off_zxy, n_cubes=2, shape=SHAPE, info=None):
    """Cubes whose image encodes the position; labels cropped by the offset (x, y, z on disk)."""
    oz, ox, oy = off_zxy
    folder.mkdir(parents=True, exist_ok=True)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d_files, l_files = [], []
    for i in range(n_cubes):
        raw = np.stack([x + 1 + 1000 * i, y + 1, z + 1]).astype(np.float32)  # (ch, x, y, z)
        lab = lab_fn(x, y, z)[ox:shape[0] - ox, oy:shape[1] - oy, oz:shape[2] - oz]
        with h5py.File(folder / f"d{i}.h5", "w") as f:
            f["raw"] = raw
        with h5py.File(folder / f"lb{i}.h5", "w") as f:
            f["lab"] = lab.astype(np.int16)
            if info is not None and info[i] is not None:
                f["info"] = np.asarray(info[i], np.int16)
        d_files.append((f"d{i}.h5", "raw"))
        l_files.append((f"lb{i}.h5", "lab"))
    return d_files, l_files


def make(folder, n_dim=3, ps=(5, 11, 11), off=(1, 3, 3), stride=(1, 2, 2), n_cubes=2,
         info=None, load=None, **kwargs):
    off3 = off if n_dim == 3 else (0,) + tuple(off)
    d_files, l_files = write_coord_cubes(folder, off3, n_cubes, info=info)
    kwargs.setdefault("seed", 0)
    data = CNNData(ps, stride, off, n_dim, n_lab=201, anistropic_data=True, **kwargs)
    data.addDataFromFile(folder, folder, d_files, l_files, **(load or {}))
    return data


def decode(img, axis_ch):
    """Coordinates (x, y, z, cube) from an image patch with channels on ``axis_ch``."""
    c = np.moveaxis(img, axis_ch, 0)
    return (c[0] - 1) % 1000, c[1] - 1, c[2] - 1, (c[0] - 1) // 1000


def expected_labels(x, y, z, off_zxy):
    """Labels of image positions: 0 outside the labelled part of the cube (zero padding)."""
    oz, ox, oy = off_zxy
    labelled = ((x >= ox) & (x < SHAPE[0] - ox) & (y >= oy) & (y < SHAPE[1] - oy)
                & (z >= oz) & (z < SHAPE[2] - oz))
    return np.where(labelled, lab_fn(x, y, z), 0)


def check_aligned_3d(images, labels, off, stride):
    for img, lab in zip(images, labels, strict=True):
        x, y, z, _ = decode(img, 1)  # (pz, px, py) each
        sl = tuple(slice(o, o + n * s, s) for o, n, s in zip(off, lab.shape, stride, strict=True))
        assert (x[sl] >= 0).mean() > 0.5  # mostly inside the source (warps may leave it)
        np.testing.assert_array_equal(lab, expected_labels(x[sl], y[sl], z[sl], off))


# --- shapes, layouts, alignment ------------------------------------------------------------------


def test_shapes_dtypes_3d(tmp_path):
    data = make(tmp_path)
    with h5py.File(tmp_path / "d0.h5") as f, h5py.File(tmp_path / "lb0.h5") as g:
        d, lb = strip_cubes(np.transpose(f["raw"][()], (3, 0, 1, 2)),
                            np.transpose(g["lab"][()], (2, 0, 1)), (1, 3, 3), np.int16)
    np.testing.assert_array_equal(data.train_d[0], d)
    np.testing.assert_array_equal(data.train_l[0], lb)
    assert data.n_ch == 3 and data.n_lab == 201
    assert data.train_d[0].shape == (14, 3, 24, 22) and data.train_l[0].shape == (14, 24, 22)
    img, lab = data.getbatch(4, flip=False)
    assert img.shape == (4, 5, 3, 11, 11) and img.dtype == np.float32
    assert lab.shape == (4, 3, 3, 3) and lab.dtype == np.int16  # (5-2, 11-6 strided by 2)
    img, lab = data.getbatch(2, strided=False)
    assert lab.shape == (2, 3, 5, 5)
    assert "201-class Data Set with 3 input channel(s)" in repr(data)


def test_labels_aligned_3d_with_flips(tmp_path):
    data = make(tmp_path)
    img, lab = data.getbatch(20, flip=True)
    check_aligned_3d(img, lab, data.offset, data.stride)
    # labels in the zero-padded border of the cube never appear inside the label window
    img, lab = data.getbatch(20, flip=False, strided=False)
    check_aligned_3d(img, lab, data.offset, (1, 1, 1))
    x, y, z, _ = decode(img[0], 1)  # no flip: a plain translated window
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)
    np.testing.assert_array_equal(np.diff(z, axis=0), 1)


@pytest.mark.parametrize("aniso", [True, False])
def test_labels_aligned_2d(tmp_path, aniso):
    data = make(tmp_path, n_dim=2, ps=(9, 9), off=(2, 2), stride=(1, 1))
    data.aniso = aniso
    img, lab = data.getbatch(30, flip=True)
    assert img.shape == (30, 3, 9, 9) and lab.shape == (30, 5, 5)
    seen_planes = set()
    for im, lb in zip(img, lab, strict=True):
        x, y, z, _ = decode(im, 0)
        sl = (slice(2, 7), slice(2, 7))
        np.testing.assert_array_equal(lb, expected_labels(x[sl], y[sl], z[sl], (0, 2, 2)))
        seen_planes.add(next(a for a, c in enumerate((x, y, z)) if np.ptp(c) == 0))
    # anisotropic: always z-slices; isotropic: slices across x and y too (T7 check fixed)
    assert seen_planes == ({2} if aniso else {0, 1, 2})


def test_calculator_offsets_on_synthetic_cubes(tmp_path):
    synthetic.write_cubes(tmp_path, n_cubes=2, shape=(40, 40, 12), seed=3, cell_size=10.0)
    calc = CNNCalculator([[1, 4, 4], [3, 3, 3]], [[1, 2, 2], 1], desired_input=[5, 21, 21],
                         n_dim=3)  # zxy order
    data = CNNData(calc.input, calc.pred_stride, calc.offset, 3, n_lab=2, anistropic_data=True,
                   seed=1)
    data.addDataFromFile(tmp_path, tmp_path, [("raw_0.h5", "raw"), ("raw_1.h5", "raw")],
                         [("barrier_int16_0.h5", "lab"), ("barrier_int16_1.h5", "lab")],
                         valid_cubes=[1])
    assert list(data.offset) == [int(o) for o in calc.offset]
    img, lab = data.getbatch(3, grey_augment_channels=[0])
    assert img.shape == (3, *[calc.input[0]], 1, calc.input[1], calc.input[2])
    assert 0 <= img.min() and img.max() <= 1
    assert set(np.unique(lab)) <= {0, 1}
    out = [(i - 2 * int(o) - 1) // s + 1 for i, o, s in
           zip(calc.input, calc.offset, calc.pred_stride, strict=True)]
    assert lab.shape == (3, *out)
    assert data.getbatch(2, source="valid")[0].shape[0] == 2


# --- sampling ------------------------------------------------------------------------------------


def test_positions_uniform_without_last(tmp_path):
    data = make(tmp_path, n_cubes=1)
    n = 3000
    img, _ = data.getbatch(n, flip=False)
    x0 = img[:, 0, 0, 0, 0] - 1
    z0 = img[:, 0, 2, 0, 0] - 1
    # T7: randint(0, s - p): origins 0 .. s - p - 1, never the last one
    assert sorted(np.unique(x0)) == list(range(24 - 11))
    assert sorted(np.unique(z0)) == list(range(14 - 5))
    counts = np.bincount(x0.astype(int))
    expected = n / counts.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 40  # 12 degrees of freedom: p ~ 3e-4


def test_cube_prios_and_valid_cubes(tmp_path):
    data = make(tmp_path, n_cubes=3, load=dict(cube_prios=[1, 0], valid_cubes=[2]))
    img, _ = data.getbatch(200, flip=False)
    assert set(np.unique(decode(img, 2)[3])) == {0}
    img, _ = data.getbatch(50, source="valid", flip=False)
    assert set(np.unique(decode(img, 2)[3])) == {2}

    data = make(tmp_path, n_cubes=2, load=dict(cube_prios=[1, 3]))
    cubes = decode(data.getbatch(2000, flip=False)[0], 2)[3][:, 0, 0, 0]
    assert 0.70 < cubes.mean() < 0.80


def test_empty_valid_set_raises(tmp_path):
    data = make(tmp_path, n_cubes=1)
    with pytest.raises(ValueError, match="Validation Set empty"):
        data.getbatch(1, source="valid")


def test_lazy_label_masks_follow_their_patches(tmp_path):
    info0 = [[1, 0] + [0] * 199, [0, 1] + [0] * 199]
    data = make(tmp_path, n_cubes=2, info=[info0, None])
    img, lab, info1, info2 = data.getbatch(40, ret_info=True, flip=False)
    assert info1.shape == info2.shape == (40, 201) and info1.dtype == np.int16
    cube = decode(img, 2)[3][:, 0, 0, 0]
    assert set(cube) == {0, 1}
    for c, m1, m2 in zip(cube, info1, info2, strict=True):
        if c == 0:
            np.testing.assert_array_equal(m1, info0[0])
            np.testing.assert_array_equal(m2, info0[1])
        else:  # default: all classes labelled, none marked absent
            assert m1.all() and not m2.any()


def test_ignore_threshold(tmp_path):
    data = make(tmp_path, n_cubes=1)
    data.train_l[0] = -np.abs(data.train_l[0])
    data.train_l[0][:, :12] *= -1  # half the cube has ignore labels
    _, lab = data.getbatch(30, flip=False, ignore_thresh=0.5)
    assert all((lb < 0).mean() <= 0.5 for lb in lab)


# --- lazy reading, seeding, warping -------------------------------------------------------------


def test_on_disk_gives_same_batches(tmp_path):
    kwargs = dict(batch_size=6, flip=True, grey_augment_channels=[1], warp_on=0.5, ret_info=True)
    mem = make(tmp_path, seed=5)
    disk = make(tmp_path, seed=5, in_memory=False)
    assert isinstance(disk.train_d[0], H5Volume) and isinstance(mem.train_d[0], np.ndarray)
    np.testing.assert_array_equal(np.asarray(disk.train_d[0]), mem.train_d[0])
    np.testing.assert_array_equal(np.asarray(disk.train_l[0]), mem.train_l[0])
    for _ in range(3):
        for a, b in zip(mem.getbatch(**kwargs), disk.getbatch(**kwargs), strict=True):
            np.testing.assert_array_equal(a, b)
    kw2 = dict(n_dim=2, ps=(9, 9), off=(2, 2), stride=(1, 1), seed=2)
    m2, d2 = make(tmp_path / "2d", **kw2), make(tmp_path / "2d", in_memory=False, **kw2)
    m2.aniso = d2.aniso = False
    for a, b in zip(m2.getbatch(8), d2.getbatch(8), strict=True):
        np.testing.assert_array_equal(a, b)


def test_h5volume_window_and_padding(tmp_path):
    arr = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["a"] = arr
    v = H5Volume(tmp_path / "a.h5", "a", (2, None, 0, 1), dtype=np.int64)  # (z, ch, x, y)
    ref = np.transpose(arr, (2, 0, 1))[:, None]
    assert v.shape == ref.shape
    np.testing.assert_array_equal(v[1:4, :, 2:5, 1], ref[1:4, :, 2:5, 1])
    np.testing.assert_array_equal(np.transpose(v, (0, 1, 3, 2))[2], ref.transpose(0, 1, 3, 2)[2])
    c = v.crop([-1, 0, 1, 1], [8, 1, 2, 2])  # partly outside: zeros
    expect = np.zeros((8, 1, 2, 2), int)
    expect[1:7] = ref[:, :, 1:3, 1:3]
    np.testing.assert_array_equal(c[...], expect)


def test_worker_seeding(tmp_path, monkeypatch):
    a, b = make(tmp_path, seed=7), make(tmp_path, seed=7)
    np.testing.assert_array_equal(a.getbatch(3)[0], b.getbatch(3)[0])  # same process, same seed
    parent_next = a.getbatch(3)[0]
    real = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real + 1)  # b is now in a "forked worker"
    worker1 = b.getbatch(3)[0]
    assert not np.array_equal(parent_next, worker1)
    monkeypatch.setattr(os, "getpid", lambda: real + 2)  # another worker
    assert not np.array_equal(b.getbatch(3)[0], worker1)
    c = make(tmp_path / "c", seed=7)
    monkeypatch.setattr(os, "getpid", lambda: real + 1)  # same seed and pid: reproducible
    np.testing.assert_array_equal(c.getbatch(3)[0], worker1)


def test_identity_warp_and_random_warps_keep_alignment(tmp_path, monkeypatch):
    data = make(tmp_path)
    ps = data.patch_size

    def identity(patch_size, amount=1.0, rng=None):
        return np.array(ps), 0.0, 0.0, np.ones(3), np.zeros(4), 0.0

    monkeypatch.setattr(cnndata_module, "getWarpParams", identity)
    img, lab = data.getbatch(10, warp_on=True, flip=False)
    assert data.n_successful_warp == 10
    check_aligned_3d(img, lab, data.offset, data.stride)
    x = decode(img[0], 1)[0]
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)  # identity: a plain window
    monkeypatch.undo()
    img, lab = data.getbatch(10, warp_on=True, flip=True)  # real warps: nearest neighbour
    check_aligned_3d(img, lab, data.offset, data.stride)
    assert data.n_successful_warp + data.n_failed_warp == 20


def test_warp_falls_back_when_cube_too_small(tmp_path, monkeypatch):
    data = make(tmp_path)

    def too_large(patch_size, amount=1.0, rng=None):
        return np.array([5, 30, 30]), 5.0, 0.0, np.ones(3), np.zeros(4), 0.0

    monkeypatch.setattr(cnndata_module, "getWarpParams", too_large)
    img, lab = data.getbatch(3, warp_on=True, flip=False)
    assert data.n_failed_warp == 3 and data.n_successful_warp == 0
    check_aligned_3d(img, lab, data.offset, data.stride)


# --- other input paths ---------------------------------------------------------------------------


def test_from_ndarray_and_example_weights():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 256, (6, 1, 16, 16)).astype(np.uint8)
    lb = rng.integers(0, 2, (6, 16, 16)).astype(np.int16)
    data = CNNData((3, 8, 8), 1, (1, 2, 2), 3, seed=0)
    data.addDataFromNdarray([d], [lb], [d[:, 0]], [lb])  # a (z, x, y) validation cube: T13
    assert data.n_lab == 2 and data.info[0][0].tolist() == [1, 1]
    assert data._training_count == data._valid_count == 1
    img, lab, w = data.getbatch(2, ret_example_weights=True)
    assert img.max() <= 1 and w.shape == lab.shape == (2, 1, 4, 4) and w.min() >= 1


def test_img_scalar_2d():
    d = np.random.default_rng(1).random((10, 1, 12, 12)).astype(np.float32)
    labels = np.arange(10, dtype=np.int16) % 3
    data = CNNData((10, 10), None, None, 2, mode="img-scalar", border_mode="crop", seed=0)
    data.addDataFromNdarray([d], [labels])
    img, lab = data.getbatch(5)
    assert img.shape == (5, 1, 10, 10) and lab.shape == (5,)
    for im, lb in zip(img, lab, strict=True):  # the label of the slice it came from
        z = next(k for k in range(10) if np.isclose(np.sort(d[k, 0, 1:11, 1:11].ravel()),
                                                     np.sort(im.ravel())).all())
        assert lb == labels[z]


def test_standardise_and_downsample(tmp_path):
    data = make(tmp_path, n_cubes=1, pre_process="standardise")
    assert abs(float(np.mean(data.train_d[0]))) < 1e-3
    data = make(tmp_path, n_cubes=1, ps=(5, 5, 5), off=(1, 1, 1), stride=1,
                load=dict(downsample_xy=2))
    assert data.train_d[0].shape == (14, 3, 12, 11)
    with pytest.raises(NotImplementedError):
        make(tmp_path, n_cubes=1, in_memory=False, load=dict(downsample_xy=2))


def test_label_range_checked(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["raw"] = np.zeros((10, 10, 4), np.uint8)
    with h5py.File(tmp_path / "lb.h5", "w") as f:
        f["lab"] = np.full((10, 10, 4), 40000, np.int32)
    data = CNNData((1, 5, 5), 1, 0, 3, n_lab=2)
    with pytest.raises(ValueError, match="renumber"):
        data.addDataFromFile(tmp_path, tmp_path, [("d.h5", "raw")], [("lb.h5", "lab")])


def test_affinity_targets():
    lab = np.zeros((4, 10, 10), np.int16)
    lab[:, :5] = 3
    lab[:, 6:, :4] = 3  # a second component with the same ID
    d = np.zeros((4, 1, 10, 10), np.float32)
    data = CNNData((4, 10, 10), 1, 0, 3, n_lab=4, affinity="malis", seed=0)
    data.addDataFromNdarray([d], [lab])
    img, aff, seg = data.getbatch(1, flip=False)
    assert aff.shape == (1, 3, 4, 10, 10) and aff.dtype == np.int16 and seg.shape == (1, 4, 10, 10)
    assert aff[0, 1, 0, 4, 0] == 0 and aff[0, 1, 0, 3, 0] == 1  # x edge leaving the segment
    assert aff[0, :, -1, -1, -1].tolist() == [0, 0, 0]  # background is never connected
    assert len(np.unique(seg[0][lab > 0])) == 2 and (seg[0][lab == 0] == 0).all()


def _worker_batch(data):
    return os.getpid(), data.getbatch(2)[0]


def test_worker_processes_read_from_disk(tmp_path):
    import multiprocessing

    data = make(tmp_path, in_memory=False)
    data.getbatch(1)  # open the files in the parent: handles are not pickled, but reopened
    # spawn, not fork: JAX (imported by other tests) warns that forking it may deadlock
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        (pid0, b0), (pid1, b1) = pool.map(_worker_batch, [data] * 2, chunksize=1)
    assert b0.shape == (2, 5, 3, 11, 11)
    assert np.array_equal(b0, b1) == (pid0 == pid1)  # a stream per seed and process id
    assert not np.array_equal(b0, data.getbatch(2)[0])


def test_preview_block_uses_y_offsets(tmp_path):
    for in_memory in (True, False):
        data = make(tmp_path / str(in_memory), in_memory=in_memory)
        block = data.previewBlock(0, off=(2, 1, 5), sh=(3, 4, 6))
        assert block.shape == (3, 4, 6, 3)  # (ch, x, y, z)
        assert block[1, 0, 0, 0] - 1 == 5 and block[0, 0, 0, 0] - 1 == 1  # T11: y uses off[2]
        assert block[2, 0, 0, 0] - 1 == 2


def test_zchxy_order_reads_the_same_cubes(tmp_path):
    """Cubes stored as (z, ch, x, y) / (z, x, y) load as the default (ch, x, y, z) / (x, y, z)."""
    default = make(tmp_path / "xyz")
    folder = tmp_path / "zxy"
    folder.mkdir()
    d_files, l_files = write_coord_cubes(tmp_path / "xyz_copy", (1, 3, 3))
    for (d_name, d_key), (l_name, l_key) in zip(d_files, l_files, strict=True):
        with h5py.File(tmp_path / "xyz_copy" / d_name) as f, h5py.File(folder / d_name, "w") as g:
            g[d_key] = np.transpose(f[d_key][()], (3, 0, 1, 2))  # (ch, x, y, z) -> (z, ch, x, y)
        with h5py.File(tmp_path / "xyz_copy" / l_name) as f, h5py.File(folder / l_name, "w") as g:
            g[l_key] = np.transpose(f[l_key][()], (2, 0, 1))  # (x, y, z) -> (z, x, y)
    zxy = CNNData((5, 11, 11), (1, 2, 2), (1, 3, 3), 3, n_lab=201, anistropic_data=True,
                  zchxy_order=True, seed=0)
    zxy.addDataFromFile(folder, folder, d_files, l_files)
    assert zxy.n_ch == default.n_ch == 3
    for a, b in zip(zxy.train_d + zxy.train_l, default.train_d + default.train_l, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    img, lab = zxy.getbatch(6, flip=True)
    check_aligned_3d(img, lab, zxy.offset, zxy.stride)


@pytest.mark.parametrize("mode, size", [("crop", 13), ("keep", 10), ("0-pad", 7),
                                        ("mirror", 7)])
def test_img_scalar_border_modes(mode, size):
    """Each border mode brings (ch, size, size) images to the 10 x 10 patch as numpy would."""
    rng = np.random.default_rng(2)
    d = rng.random((6, 1, size, size)).astype(np.float32) + 0.5  # > 0: padding is visible
    labels = np.arange(6, dtype=np.int16) % 2
    data = CNNData((10, 10), None, None, 2, mode="img-scalar", border_mode=mode, seed=0)
    data.addDataFromNdarray([d], [labels])
    if mode == "crop":  # centre crop: (13 - 10) // 2 = 1 in front
        want = d[:, :, 1:11, 1:11]
    elif mode == "keep":
        want = d
    else:  # ceil((10 - 7) / 2) = 2 in front, 1 behind
        pad = ((0, 0), (0, 0), (2, 1), (2, 1))
        want = np.pad(d, pad, mode="symmetric") if mode == "mirror" else np.pad(d, pad)
    np.testing.assert_array_equal(np.asarray(data.train_d[0]), want)
    img, lab = data.getbatch(4, flip=False)
    assert img.shape == (4, 1, 10, 10)
    for im, lb in zip(img, lab, strict=True):  # a treated image with its own label
        k = next(k for k in range(6) if np.array_equal(im, want[k]))
        assert lb == labels[k]
