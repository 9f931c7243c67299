"""MNISTData(path=None) downloads MNIST on first use, here from a server on 127.0.0.1."""

import functools
import gzip
import hashlib
import http.server
import struct
import threading

import numpy as np
import pytest

from elektronn.training import traindata
from elektronn.training.config import EXAMPLE_CONFIG_DIR
from elektronn.training.traindata import MNISTData, download_mnist

N_TRAIN, N_TEST = 10040, 30  # MNISTData splits the last 10000 training images off as valid


def idx_bytes(array):
    """An IDX file (gzipped): magic (0, 0, dtype 0x08, rank), big-endian sizes, uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def make_mnist(rng):
    """Tiny MNIST-like IDX files: each digit a bright 6x6 block at a label-dependent place."""
    arrays = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28), np.uint8)
        for k, lab in enumerate(labels):
            r, c = 2 + 2 * lab, 4 + (lab % 3) * 6
            images[k, r:r + 6, c:c + 6] = 200 + rng.integers(0, 55)
        arrays[f"{split}-images-idx3-ubyte.gz"] = images
        arrays[f"{split}-labels-idx1-ubyte.gz"] = labels
    return arrays


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path, rng, monkeypatch):
    """Serve generated MNIST files on 127.0.0.1; the download URL and checksums point there."""
    root = tmp_path / "www" / "mnist"
    root.mkdir(parents=True)
    arrays = make_mnist(rng)
    checksums = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        (root / name).write_bytes(data)
        checksums[name] = hashlib.md5(data).hexdigest()
    handler = type("Handler", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ELEKTRONN_MNIST_URL", f"http://127.0.0.1:{httpd.server_port}/mnist")
    monkeypatch.setattr(traindata, "MNIST_DOWNLOAD_FILES", checksums)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "home"))
    monkeypatch.delenv(traindata.MNIST_ENV_VAR, raising=False)
    try:
        yield root, arrays, handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_first_use_downloads_then_reuses(server, capsys):
    root, arrays, handler = server
    data = MNISTData(shift_augment=False, center=False)
    cache = traindata.default_mnist_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(arrays)  # no temporary files
    assert len(handler.requests) == 4
    images = arrays["train-images-idx3-ubyte.gz"]
    np.testing.assert_allclose(data.train_d[:, 0], images[:N_TRAIN - 10000] / 255, atol=1e-6)
    np.testing.assert_allclose(data.valid_d[:, 0], images[N_TRAIN - 10000:] / 255, atol=1e-6)
    np.testing.assert_array_equal(data.test_l, arrays["t10k-labels-idx1-ubyte.gz"])
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar
    MNISTData(shift_augment=False)
    assert len(handler.requests) == 4  # the cached files are used


def test_corrupt_download_is_not_kept(server):
    root, arrays, handler = server
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b tampered")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz is corrupt: its MD5"):
        download_mnist(show_progress=False)
    cache = traindata.default_mnist_dir()
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_missing_file_on_the_server(server):
    root, arrays, handler = server
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.gz \(HTTP 404 "):
        MNISTData()


def test_without_network_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(traindata.MNIST_ENV_VAR, raising=False)
    monkeypatch.setenv("ELEKTRONN_MNIST_URL", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(FileNotFoundError) as info:
        MNISTData()
    message = str(info.value)
    cache = str(tmp_path / "home" / ".ELEKTRONN")
    assert "could not be downloaded from http://127.0.0.1:9/train-images-idx3-ubyte.gz" in message
    assert f"without network, put the files into {cache} yourself" in message
    assert "mnist.pkl.gz" in message


def test_explicit_path_never_downloads(server, tmp_path):
    root, arrays, handler = server
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MNISTData(path=tmp_path / "elsewhere")
    assert handler.requests == []


@pytest.mark.slow
def test_shipped_mnist_config_runs_as_it_is(server, tmp_path):
    from elektronn.scripts.train import main

    save = tmp_path / "run"
    code = main([str(EXAMPLE_CONFIG_DIR / "MNIST_CNN_warp_config.py"), "--steps", "3",
                 "--set", f"save_path={save}/"])
    assert code == 0
    assert len(server[2].requests) == 4
    history = np.load(save / "Backup" / "MNIST_example_warp.history.npy")
    assert history.shape == (1, 8) and np.isfinite(history).all()
    assert (save / "MNIST_example_warp_end.param").exists()
