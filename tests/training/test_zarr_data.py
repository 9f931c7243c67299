"""Training data from zarr groups: the same cubes as HDF5 give the same batches, in memory and
read lazily from disk; clear errors name the store and the array."""

import pickle

import h5py
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from elektronn.training.CNNData import CNNData, H5Volume  # noqa: E402
from elektronn.training.config import Config, ConfigError, DefaultConfig  # noqa: E402
from elektronn.training.volumes import DataError, dataset_info, is_zarr, read_dataset  # noqa: E402

SHAPE = (20, 18, 12)  # x, y, z
OFF = (1, 3, 3)  # zxy


def write_both(folder, n_cubes=2, info=True):
    """Random cubes as HDF5 files and as zarr groups with the same arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"h5": ([], []), "zarr": ([], [])}
    for i in range(n_cubes):
        raw = rng.integers(0, 256, (2, *SHAPE), dtype=np.uint8)  # (ch, x, y, z)
        lab = rng.integers(0, 3, [s - 2 * o for s, o in zip(SHAPE, (3, 3, 1), strict=True)],
                           dtype=np.int16)
        masks = np.array([[1, 1, 0], [0, 0, 1]], np.int16)
        with h5py.File(folder / f"raw_{i}.h5", "w") as f:
            f["raw"] = raw
        with h5py.File(folder / f"lab_{i}.h5", "w") as f:
            f["lab"] = lab
            if info:
                f["info"] = masks
        raw_group = zarr.open_group(str(folder / f"raw_{i}.zarr"), mode="w")
        raw_group.create_array("raw", data=raw, chunks=(1, 8, 8, 8))
        lab_group = zarr.open_group(str(folder / f"lab_{i}.zarr"), mode="w")
        lab_group.create_array("lab", data=lab, chunks=(8, 8, 8))
        if info:
            lab_group.create_array("info", data=masks)
        for kind in ("h5", "zarr"):
            files[kind][0].append((f"raw_{i}.{kind}", "raw"))
            files[kind][1].append((f"lab_{i}.{kind}", "lab"))
    return files


def cnn_data(folder, files, **kwargs):
    data = CNNData((5, 11, 11), (1, 2, 2), OFF, 3, n_lab=3, anistropic_data=True, seed=4,
                   **kwargs)
    data.addDataFromFile(folder, folder, *files, valid_cubes=[1])
    return data


@pytest.mark.parametrize("in_memory", [True, False])
def test_zarr_cubes_give_the_batches_of_hdf5_cubes(tmp_path, in_memory):
    files = write_both(tmp_path)
    from_h5 = cnn_data(tmp_path, files["h5"], in_memory=in_memory)
    from_zarr = cnn_data(tmp_path, files["zarr"], in_memory=in_memory)
    assert isinstance(from_zarr.train_d[0], np.ndarray if in_memory else H5Volume)
    np.testing.assert_array_equal(np.asarray(from_zarr.train_d[0]), np.asarray(from_h5.train_d[0]))
    np.testing.assert_array_equal(np.asarray(from_zarr.valid_l[0]), np.asarray(from_h5.valid_l[0]))
    np.testing.assert_array_equal(from_zarr.info[0][0], [1, 1, 0])  # the 'info' array is read
    kwargs = dict(batch_size=4, flip=True, grey_augment_channels=[0], warp_on=0.5,
                  ret_info=True)
    for source in ("train", "valid"):
        for a, b in zip(from_h5.getbatch(source=source, **kwargs),
                        from_zarr.getbatch(source=source, **kwargs), strict=True):
            np.testing.assert_array_equal(a, b)


def test_lazy_zarr_volumes_pickle_and_reopen(tmp_path):
    files = write_both(tmp_path, n_cubes=1, info=False)
    data = CNNData((5, 11, 11), (1, 2, 2), OFF, 3, n_lab=3, anistropic_data=True, seed=4,
                   in_memory=False)
    data.addDataFromFile(tmp_path, tmp_path, *files["zarr"])
    vol = data.train_d[0]
    window = vol[2:5, :, 3:9, 1:4]
    copy = pickle.loads(pickle.dumps(vol))  # what a batch worker process gets
    assert copy._handle is None
    np.testing.assert_array_equal(copy[2:5, :, 3:9, 1:4], window)


def test_volume_helpers_read_zarr(tmp_path):
    write_both(tmp_path, n_cubes=1)
    store = tmp_path / "raw_0.zarr"
    assert is_zarr(store) and is_zarr(tmp_path / "not_yet.zarr")
    assert not is_zarr(tmp_path / "raw_0.h5") and not is_zarr(tmp_path)
    assert dataset_info(store, "raw") == ((2, *SHAPE), np.dtype(np.uint8))
    with h5py.File(tmp_path / "raw_0.h5", "r") as f:
        np.testing.assert_array_equal(read_dataset(store, "raw"), f["raw"][()])


def test_clear_errors_name_the_store_and_array(tmp_path):
    write_both(tmp_path, n_cubes=1)
    with pytest.raises(DataError, match=r"raw_0.zarr: has no array 'data'; its arrays are "
                                        r"\['raw'\]"):
        dataset_info(tmp_path / "raw_0.zarr", "data")
    with pytest.raises(DataError, match="missing.zarr: the zarr store does not exist"):
        dataset_info(tmp_path / "missing.zarr", "raw")
    zarr.create_array(str(tmp_path / "bare.zarr"), data=np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"bare.zarr: cannot be read as a zarr group.*"
                                        r"\('bare.zarr', 'raw'\)"):
        dataset_info(tmp_path / "bare.zarr", "raw")


CONFIG = """
save_path = {save!r}
data_path = label_path = {data!r}
d_files = [("raw_0.zarr", "raw")]
l_files = [("lab_0.zarr", "lab")]
n_dim = 3
n_lab = 3
mode = "img-img"
desired_input = [23, 23, 5]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [3, 3]
batch_size = 1
monitor_batch_size = 1
n_steps = 1
max_runtime = 60
SGD_params = dict(LR=0.01, momentum=0.9)
"""


def test_config_accepts_zarr_stores_and_names_missing_ones(tmp_path):
    write_both(tmp_path / "data", n_cubes=1)
    cfg = tmp_path / "cfg.py"
    cfg.write_text(CONFIG.format(save=f"{tmp_path}/save/", data=f"{tmp_path}/data/"))
    config = Config(cfg, default_config=DefaultConfig(None))
    config.checkDataFiles()
    assert config.d_files == [("raw_0.zarr", "raw")]
    cfg.write_text(CONFIG.format(save=f"{tmp_path}/save/", data=f"{tmp_path}/data/")
                   .replace("raw_0.zarr", "raw_7.zarr"))
    with pytest.raises(ConfigError, match=r"raw_7.zarr does not exist \(expected an HDF5 file "
                                          r"or a zarr group with the dataset 'raw'\)"):
        Config(cfg, default_config=DefaultConfig(None)).checkDataFiles()
