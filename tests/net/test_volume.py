"""predict_volume: blockwise prediction to zarr/HDF5 equals in-memory predictDense; resume.

The reference is ``predict_dense`` on the whole volume in memory (itself tested against a naive
per-pixel loop in test_prediction.py).  Nets cover no, full and partial MFP and odd and even
fields of view; block shapes do not divide the volumes.
"""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from elektronn.net import prediction, volume  # noqa: E402
from elektronn.net.convnet import MixedConvNN  # noqa: E402
from elektronn.net.netutils import CNNCalculator  # noqa: E402
from elektronn.net.volume import plan_volume, predict_volume  # noqa: E402

TOL = 1e-6
REPO = Path(__file__).resolve().parents[2]


def build(filters, pools, mfp, n_dim, desired, ch, n_lab, seed):
    calc = CNNCalculator(filters, pools, desired_input=desired, MFP=mfp, n_dim=n_dim)
    cnn = MixedConvNN(calc.input, input_depth=ch, batch_size=1, dimension_calc=calc, seed=seed)
    for i, (f, p, m) in enumerate(zip(filters, pools, mfp, strict=True)):
        last = i == len(filters) - 1
        cnn.addConvLayer(n_lab if last else 3, f, pool_shape=p, activation_func="tanh",
                         use_fragment_pooling=m, is_last_layer=last)
    cnn.compileOutputFunctions(target="nll", only_forward=True)
    return cnn


NETS = {
    # 2-D, anisotropic pools; field of view x 6 (even), y 5 (odd); stride (2, 2)
    "2d": ([[3, 2], [2, 3], 1], [[2, 1], [1, 2], 1], [False] * 3, 2, 14, 2, 3),
    "2d_mfp": ([[3, 2], [2, 3], 1], [[2, 1], [1, 2], 1], [True] * 3, 2, 14, 2, 3),
    # 2-D partial MFP (MFP in the first pool only); field of view 7, stride 4
    "2d_partial": ([2, 2, 1], [2, 2, 1], [True, False, True], 2, 16, 1, 2),
    # 3-D (zxy); field of view z 3, x 6, y 5
    "3d": ([[2, 3, 2], [2, 2, 2], 1], [[1, 2, 2], 1, 1], [False] * 3, 3, [5, 11, 11], 1, 2),
    "3d_mfp": ([[2, 3, 2], [2, 2, 2], 1], [[1, 2, 2], 1, 1], [True] * 3, 3, [5, 11, 11], 1, 2),
    # 3-D partial MFP: MFP pools (1, 2, 2), then a plain pool (2, 1, 1)
    "3d_partial": ([[1, 2, 2], [2, 2, 2], 1], [[1, 2, 2], [2, 1, 1], 1], [True, False, True], 3,
                   [6, 9, 9], 1, 2),
}


@pytest.fixture(scope="module")
def nets():
    return {name: build(*spec, seed=i) for i, (name, spec) in enumerate(NETS.items())}


def volume_for(cnn, shape, seed=0, dtype=np.float32):
    ch = cnn.input_shape[1] if cnn.n_dim == 2 else cnn.input_shape[2]
    values = np.random.default_rng(seed).random((ch, *shape))
    return (values * 255).astype(dtype) if np.dtype(dtype).kind in "iu" else \
        values.astype(dtype)


def assert_same(got, want):
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype == np.uint8:  # truncation: a 1e-7 difference may cross an integer
        assert np.abs(got.astype(int) - want).max() <= 1
        assert np.mean(got != want) < 1e-3
    else:
        assert np.abs(got - want).max() <= TOL


CASES = [
    ("2d", (41, 37), (10, 7), {}),
    ("2d", (41, 37), (8, 12), {"pad_raw": True}),
    ("2d_mfp", (30, 33), (9, 5), {"pad_raw": True, "as_uint8": True}),
    ("2d_mfp", (30, 33), (30, 33), {}),  # one block
    ("2d_partial", (40, 29), (12, 5), {}),
    ("2d_partial", (40, 29), (3, 50), {"pad_raw": True}),  # blocks smaller than a patch
    ("3d", (18, 17, 9), (7, 5, 3), {}),
    ("3d", (18, 17, 9), (4, 6, 2), {"pad_raw": True, "as_uint8": True}),
    ("3d_mfp", (20, 16, 8), (6, 7, 4), {"pad_raw": True}),
    ("3d_partial", (15, 14, 12), (5, 4, 3), {}),
    ("3d_partial", (15, 14, 12), (4, 5, 5), {"pad_raw": True}),
]


@pytest.mark.parametrize("name, shape, block, kw", CASES)
def test_blockwise_equals_in_memory(nets, tmp_path, name, shape, block, kw):
    cnn = nets[name]
    vol = volume_for(cnn, shape, seed=len(name))
    want = cnn.predictDense(vol, show_progress=False, **kw)
    info = predict_volume(cnn, vol, str(tmp_path / "out.zarr"), block_shape=block,
                          show_progress=False, **kw)
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert_same(out[:], want)
    plan = plan_volume(cnn, vol.shape, vol.dtype, block, **kw)
    assert info["blocks"] == info["computed"] == plan.n_blocks > 1 or block == shape
    assert info["skipped"] == 0 and info["voxels_per_s"] > 0
    assert out.chunks == (want.shape[0], *plan.block)  # blocks are the chunks


def test_2d_net_on_a_volume_and_integer_input(nets, tmp_path):
    cnn = nets["2d_mfp"]
    vol = volume_for(cnn, (26, 23, 5), seed=3, dtype=np.uint8)
    want = cnn.predictDense(vol, show_progress=False)
    predict_volume(cnn, vol, str(tmp_path / "o.zarr"), block_shape=(8, 9, 2),
                   show_progress=False)
    assert_same(zarr.open_array(str(tmp_path / "o.zarr"))[:], want)


def test_default_block_shape_is_a_multiple_of_the_tile_and_fits_the_budget(nets):
    cnn = nets["3d_partial"]
    geo = prediction._NetGeometry.from_cnn(cnn)
    shape = (1, 500, 400, 300)
    plan = plan_volume(cnn, shape, np.uint8, max_bytes=8 * 2**20)
    assert all(b % a.tile_out == 0 for b, a in zip(plan.block, geo.axes, strict=True))
    used = volume._estimate_bytes(plan.block, plan.fov, 1, 2, 1, 4)
    assert 2 * 2**20 < used <= 8 * 2**20
    small = plan_volume(cnn, (1, 15, 14, 12), np.float32)
    assert small.n_blocks == 1 and small.block == small.out_shape[1:]


def test_target_attributes_and_a_group_path(nets, tmp_path):
    cnn = nets["3d"]
    vol = volume_for(cnn, (12, 12, 8))
    predict_volume(cnn, vol, str(tmp_path / "out.zarr/run1/prob"), block_shape=(4, 4, 4),
                   show_progress=False)
    out = zarr.open_array(str(tmp_path / "out.zarr"), path="run1/prob", mode="r")
    attrs = out.attrs["elektronn"]
    assert attrs["offset"] == [1, 3, 2] and attrs["field_of_view"] == [3, 6, 5]  # zxy
    fp = attrs["fingerprint"]
    assert fp["block_shape"] == [4, 4, 4] and fp["source_shape"] == [1, 12, 12, 8]
    assert fp["source_dtype"] == "<f4" and len(fp["params_sha256"]) == 64 and fp["version"]
    # the output group stays a normal zarr hierarchy
    assert [k for k, _ in zarr.open_group(str(tmp_path / "out.zarr"), mode="r").members(
        max_depth=None)] == ["run1", "run1/prob"]


def test_hdf5_to_zarr_and_zarr_to_hdf5(nets, tmp_path):
    cnn = nets["2d_partial"]
    vol = volume_for(cnn, (33, 27), seed=5, dtype=np.uint8)
    want = cnn.predictDense(vol, show_progress=False, pad_raw=True)
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["data/raw"] = vol
    zarr.create_array(str(tmp_path / "raw.zarr"), data=vol, chunks=(1, 10, 10))

    predict_volume(cnn, f"{tmp_path}/raw.h5:data/raw", str(tmp_path / "p.zarr"),
                   block_shape=(8, 8), pad_raw=True, show_progress=False)
    assert_same(zarr.open_array(str(tmp_path / "p.zarr"))[:], want)

    info = predict_volume(cnn, f"{tmp_path}/raw.zarr", f"{tmp_path}/p.h5:pred/prob",
                          block_shape=(16, 12), pad_raw=True, show_progress=False)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert_same(f["pred/prob"][()], want)
        assert f["pred/prob_done"][()].all() and f["pred/prob_done"].shape == (3, 3)
        assert '"fingerprint"' in f["pred/prob"].attrs["elektronn"]
    assert info["computed"] == 9
    # an h5py dataset and a zarr array as sources work too
    with h5py.File(tmp_path / "raw.h5", "r") as f:
        predict_volume(cnn, f["data/raw"], str(tmp_path / "q.zarr"), block_shape=(8, 8),
                       pad_raw=True, show_progress=False)
    assert_same(zarr.open_array(str(tmp_path / "q.zarr"))[:], want)


def test_source_and_target_in_one_hdf5_file(nets, tmp_path):
    cnn = nets["2d"]
    vol = volume_for(cnn, (30, 28), seed=13)
    with h5py.File(tmp_path / "cube.h5", "w") as f:
        f["raw"] = vol
    for _ in range(2):  # the second run resumes: nothing to do
        info = predict_volume(cnn, f"{tmp_path}/cube.h5:raw", f"{tmp_path}/cube.h5:pred",
                              block_shape=(10, 10), show_progress=False)
    assert (info["computed"], info["skipped"]) == (0, 9)
    with h5py.File(tmp_path / "cube.h5", "r") as f:
        np.testing.assert_array_equal(f["raw"][()], vol)
        assert_same(f["pred"][()], cnn.predictDense(vol, show_progress=False))


class SpyArray:
    """An array-like that only allows basic slicing and records the largest read."""

    def __init__(self, data):
        self._data, self.shape, self.dtype = data, data.shape, data.dtype
        self.largest_read = 0

    def __getitem__(self, key):
        assert all(isinstance(k, slice) for k in key), key
        block = self._data[key]
        self.largest_read = max(self.largest_read, block.size)
        return block.copy()

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was converted to an array")


def test_reads_each_block_with_its_exact_halo(nets, tmp_path):
    cnn = nets["3d_mfp"]
    vol = volume_for(cnn, (30, 26, 14), seed=6)
    spy = SpyArray(vol)
    block = (6, 8, 4)
    predict_volume(cnn, spy, str(tmp_path / "o.zarr"), block_shape=block, show_progress=False)
    halo = (5, 4, 2)  # fov - 1 per axis (x 6, y 5, z 3)
    assert spy.largest_read == np.prod([b + h for b, h in zip(block, halo, strict=True)])
    assert_same(zarr.open_array(str(tmp_path / "o.zarr"))[:],
                cnn.predictDense(vol, show_progress=False))


def marked(path):
    return sorted(os.listdir(path / "elektronn-done")) if (path / "elektronn-done").exists() \
        else []


def test_resume_computes_only_unmarked_blocks(nets, tmp_path):
    cnn = nets["2d"]
    vol = volume_for(cnn, (40, 38), seed=8)
    want = cnn.predictDense(vol, show_progress=False)
    path = tmp_path / "o.zarr"
    first = predict_volume(cnn, vol, str(path), block_shape=(10, 10), show_progress=False)
    assert len(marked(path)) == first["blocks"] == 16
    # a crash between writing two blocks: the last ones have no marker, one has junk data
    out = zarr.open_array(str(path), mode="r+")
    out[:, 20:30, 10:20] = -1
    for name in ("2.1", "3.3", "0.3"):
        (path / "elektronn-done" / name).unlink()
    again = predict_volume(cnn, vol, str(path), block_shape=(10, 10), show_progress=False)
    assert (again["computed"], again["skipped"]) == (3, 13)
    assert_same(out[:], want)
    assert predict_volume(cnn, vol, str(path), block_shape=(10, 10),
                          show_progress=False)["computed"] == 0
    # resume=False and overwrite=True compute everything again
    assert predict_volume(cnn, vol, str(path), block_shape=(10, 10), resume=False,
                          show_progress=False)["computed"] == 16
    assert predict_volume(cnn, vol, str(path), block_shape=(4, 6), overwrite=True,
                          show_progress=False)["computed"] == 9 * 6
    assert_same(zarr.open_array(str(path))[:], want)


def test_a_fingerprint_mismatch_is_refused_and_nothing_is_overwritten(nets, tmp_path):
    cnn = nets["2d"]
    vol = volume_for(cnn, (30, 30), seed=9)
    path = tmp_path / "o.zarr"
    predict_volume(cnn, vol, str(path), block_shape=(10, 10), show_progress=False)
    before = zarr.open_array(str(path))[:]
    attrs = zarr.open_array(str(path)).attrs.asdict()
    (path / "elektronn-done" / "1.1").unlink()
    other = pickle.loads(pickle.dumps(cnn))
    other.layers[0].b.set_value(other.layers[0].b.get_value() + 1)
    for kwargs, what in (({"cnn": other}, "params_sha256"),
                         ({"block_shape": (5, 10)}, "block_shape"),
                         ({"source": vol.astype(np.float64)}, "source_dtype")):
        args = {"cnn": cnn, "source": vol, "block_shape": (10, 10), **kwargs}
        with pytest.raises(ValueError, match=f"another run.*{what}.*overwrite=True"):
            predict_volume(args["cnn"], args["source"], str(path), args["block_shape"],
                           show_progress=False)
    with pytest.raises(ValueError, match="shape"):
        predict_volume(cnn, vol, str(path), block_shape=(10, 10), pad_raw=True,
                       show_progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(path))[:], before)
    assert zarr.open_array(str(path)).attrs.asdict() == attrs
    assert len(marked(path)) == 8


def test_a_target_of_the_wrong_shape_is_refused(nets, tmp_path):
    cnn = nets["2d_mfp"]
    vol = volume_for(cnn, (30, 30), seed=10)
    wrong = zarr.create_array(str(tmp_path / "w.zarr"), shape=(3, 20, 24), chunks=(3, 10, 12),
                              dtype="float32", fill_value=7)
    wrong[:] = 5
    for target in (wrong, str(tmp_path / "w.zarr")):
        with pytest.raises(ValueError, match=r"shape \(3, 20, 24\).*needs \(3, 24, 26\)"):
            predict_volume(cnn, vol, target, show_progress=False)
    with pytest.raises(ValueError, match="overwrite"):  # an array cannot be replaced in place
        predict_volume(cnn, vol, wrong, show_progress=False, overwrite=True)
    np.testing.assert_array_equal(wrong[:], 5)
    assert sorted(os.listdir(tmp_path / "w.zarr")) == ["c", "zarr.json"]
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["p"] = np.ones((3, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"shape \(3, 2, 2\)"):
        predict_volume(cnn, vol, f"{tmp_path}/t.h5:p", show_progress=False)
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert list(f) == ["p"] and f["p"][()].sum() == 12
    # overwrite=True replaces a path target
    predict_volume(cnn, vol, str(tmp_path / "w.zarr"), show_progress=False, overwrite=True)
    assert_same(zarr.open_array(str(tmp_path / "w.zarr"))[:],
                cnn.predictDense(vol, show_progress=False))


def test_an_existing_zarr_array_sets_the_blocks(nets, tmp_path):
    cnn = nets["2d_mfp"]
    vol = volume_for(cnn, (40, 30), seed=11)
    want = cnn.predictDense(vol, show_progress=False)
    out = zarr.create_array(str(tmp_path / "o.zarr"), shape=want.shape, chunks=(3, 5, 6),
                            dtype="float32")
    info = predict_volume(cnn, vol, out, block_shape=(10, 12), show_progress=False)
    assert info["blocks"] == 12 and info["block_shape"] == (10, 12)
    assert_same(out[:], want)
    with pytest.raises(ValueError, match=r"multiple of the target's chunks \(5, 6\)"):
        predict_volume(cnn, vol, out, block_shape=(7, 12), overwrite=True, show_progress=False)
    # the default block shape is a multiple of the chunks
    assert all(b % c == 0 or b == n for b, c, n in zip(
        predict_volume(cnn, vol, out, overwrite=True, show_progress=False)["block_shape"],
        (5, 6), want.shape[1:], strict=True))


def test_missing_sources_name_the_path(nets, tmp_path):
    cnn = nets["2d"]
    out = str(tmp_path / "o.zarr")
    for source, what in ((tmp_path / "nope.zarr", "nope.zarr"),
                         (f"{tmp_path}/nope.h5:raw", "nope.h5")):
        with pytest.raises(FileNotFoundError, match=what):
            predict_volume(cnn, source, out, show_progress=False)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f["raw"] = np.zeros((2, 20, 20), np.float32)
    with pytest.raises(FileNotFoundError, match="has no dataset 'data'.*raw"):
        predict_volume(cnn, f"{tmp_path}/r.h5:data", out, show_progress=False)
    with pytest.raises(ValueError, match="names no dataset"):
        predict_volume(cnn, f"{tmp_path}/r.h5", out, show_progress=False)
    zarr.create_array(str(tmp_path / "g.zarr"), name="raw", shape=(2, 20, 20), dtype="f4")
    with pytest.raises(ValueError, match="zarr group.*g.zarr/raw"):
        predict_volume(cnn, str(tmp_path / "g.zarr"), out, show_progress=False)
    with pytest.raises(FileNotFoundError, match="no zarr array 'x'"):
        predict_volume(cnn, str(tmp_path / "g.zarr/x"), out, show_progress=False)
    assert not Path(out).exists()


def test_bad_arguments_are_refused_early(nets, tmp_path):
    cnn = nets["3d"]
    vol = volume_for(cnn, (12, 12, 8))
    with pytest.raises(ValueError, match=r"block_shape must be 3 positive ints \(x, y, z\)"):
        predict_volume(cnn, vol, str(tmp_path / "o.zarr"), block_shape=(4, 4),
                       show_progress=False)
    with pytest.raises(ValueError, match=r"needs an array \(1, x, y, z\)"):
        predict_volume(cnn, vol[..., 0], str(tmp_path / "o.zarr"), show_progress=False)
    with pytest.raises(ValueError, match="HDF5.*use zarr|HDF5.*zarr"):
        predict_volume(cnn, vol, f"{tmp_path}/o.h5:p", client=object(), show_progress=False)
    with pytest.raises(TypeError, match="target must be a path"):
        predict_volume(cnn, vol, np.zeros((2, 10, 6, 6), np.float32), show_progress=False)
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.h5").exists()


def test_without_zarr_the_message_names_the_extra(nets, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    cnn = nets["2d"]
    with pytest.raises(ImportError, match=r"pip install elektronn\[distributed\]"):
        predict_volume(cnn, volume_for(cnn, (20, 20)), str(tmp_path / "o.zarr"),
                       show_progress=False)
    # numpy to HDF5 needs neither zarr nor dask
    predict_volume(cnn, volume_for(cnn, (20, 20)), f"{tmp_path}/o.h5:p", show_progress=False)


def test_progress_bar_shows_voxel_rate(nets, tmp_path, capsys):
    cnn = nets["2d"]
    predict_volume(cnn, volume_for(cnn, (30, 30)), str(tmp_path / "o.zarr"),
                   block_shape=(8, 8), show_progress=True)
    err = capsys.readouterr().err
    assert "predict_volume" in err and "Vox/s" in err and "100%" in err


def test_predict_volume_is_available_from_prediction():
    assert prediction.predict_volume is predict_volume


# --- a run killed with SIGKILL and resumed ----------------------------------------------------
KILLED_RUN = textwrap.dedent("""
    import pickle, sys, time
    from elektronn.net import volume
    slow = volume.predict_block
    def predict_block(*args, **kwargs):  # slow enough to be killed mid-run
        time.sleep(0.05)
        return slow(*args, **kwargs)
    volume.predict_block = predict_block
    with open(sys.argv[1], "rb") as f:
        cnn = pickle.load(f)
    volume.predict_volume(cnn, sys.argv[2], sys.argv[3], block_shape=(5, 6, 4),
                          show_progress=False)
""")


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(nets, tmp_path):
    cnn = nets["3d_partial"]
    vol = volume_for(cnn, (30, 24, 16), seed=12, dtype=np.uint8)
    zarr.create_array(str(tmp_path / "raw.zarr"), data=vol, chunks=(1, 16, 16, 16))
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(cnn))
    out = tmp_path / "out.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path / "net.pkl"),
                             str(tmp_path / "raw.zarr"), str(out)], env=env)
    n_blocks = plan_volume(cnn, vol.shape, vol.dtype, (5, 6, 4)).n_blocks
    deadline = time.monotonic() + 300
    while len(marked(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(marked(out))
    assert proc.returncode == -signal.SIGKILL and 3 <= done_before < n_blocks
    info = predict_volume(cnn, str(tmp_path / "raw.zarr"), str(out), block_shape=(5, 6, 4),
                          show_progress=False)
    assert info["skipped"] >= done_before and info["computed"] == n_blocks - info["skipped"]
    assert 0 < info["computed"] < n_blocks
    assert_same(zarr.open_array(str(out))[:], cnn.predictDense(vol, show_progress=False))
