"""trainutils helpers for user scripts: pickle files, preview comparison, timeit, GPU helpers."""

import gzip
import logging
import os
import pickle
import stat

import matplotlib.image
import numpy as np
import pytest

from elektronn.training import trainutils
from elektronn.training.trainutils import (get_free_gpu, initGPU, pickleLoad, pickleSave,
                                           previewDiffPlot, timeit)


def test_pickle_round_trip(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    pickleSave([a, "x", (1, 2.5)], tmp_path / "many.pkl")
    got = pickleLoad(tmp_path / "many.pkl")
    assert len(got) == 3 and got[1] == "x" and got[2] == (1, 2.5)
    np.testing.assert_array_equal(got[0], a)
    pickleSave(a, tmp_path / "one.pkl")  # an array is one object (not one per row)
    np.testing.assert_array_equal(pickleLoad(tmp_path / "one.pkl"), a)
    # a stream of protocol-2 pickles, as ELEKTRONN 1.0 wrote: plain pickle reads it
    with open(tmp_path / "many.pkl", "rb") as f:
        assert pickle.load(f).shape == (2, 3) and pickle.load(f) == "x"


def test_pickle_load_gzip_and_python2_strings(tmp_path):
    py2 = b"\x80\x02U\x04caf\xe9q\x00."  # Python 2: pickle.dumps('caf\xe9', 2)
    (tmp_path / "s.pkl.gz").write_bytes(gzip.compress(py2 + pickle.dumps([1, 2], 2)))
    assert pickleLoad(tmp_path / "s.pkl.gz") == ["café", [1, 2]]


class _Evil:
    def __reduce__(self):
        return os.system, ("touch hacked",)


def test_pickle_load_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Evil(), 2))
    with pytest.raises(ValueError, match="posix.system.*refused|refused"):
        pickleLoad(tmp_path / "evil.pkl")
    assert not (tmp_path / "hacked").exists()


def test_pickle_save_refuses_what_cannot_be_read(tmp_path):
    with pytest.raises(ValueError, match=r"pickleSave.*dict"):
        pickleSave([np.zeros(2), {"a": 1}], tmp_path / "d.pkl")
    assert not (tmp_path / "d.pkl").exists()


def _write_preview(folder, name, value, number="0.1", shape=(20, 20)):
    folder.mkdir(parents=True, exist_ok=True)
    img = np.full(shape, value, np.float32)
    img[:5] = 0  # a band the nets agree on
    matplotlib.image.imsave(folder / f"{name}-pred-0-c1-z0-{number}hrs.png", img, cmap="gray",
                            vmin=0, vmax=1)


def test_preview_diff_plot(tmp_path):
    _write_preview(tmp_path / "netA", "netA", 1.0)
    _write_preview(tmp_path / "netB", "netB", 0.0, shape=(24, 22))
    _write_preview(tmp_path / "netC", "netC", 1.0)
    diffs = previewDiffPlot(["netA", "netB", "netC"], tmp_path, number=0.1)
    assert set(diffs) == {("netA", "netB"), ("netA", "netC"), ("netB", "netC")}
    ab = diffs[("netA", "netB")]
    assert ab.shape == (20, 20, 3)  # cropped to the common centre
    np.testing.assert_allclose(ab[10, 10], [0, 1, 0], atol=0.01)  # only A: green
    np.testing.assert_allclose(diffs[("netA", "netC")][10, 10], [1, 1, 1], atol=0.01)
    np.testing.assert_allclose(ab[0, 0], [0, 0, 0], atol=0.01)
    assert (tmp_path / "netA_vs_netB_pred-0-c1-z0-0.1hrs.png").exists()
    assert (tmp_path / "Compare_pred-0-c1-z0-0.1hrs.png").exists()
    with pytest.raises(FileNotFoundError, match=r"netA-pred-0-c1-z0-0.1hrs.png"):
        previewDiffPlot(["netA", "netB"], tmp_path, number=2)


def test_timeit(capsys):
    calls = []

    @timeit(n=3)
    def work(x):
        calls.append(x)
        return x * 2

    assert work(4) == 8 and calls == [4, 4, 4] and work.last_time >= 0
    assert "work:" in capsys.readouterr().out
    quiet = timeit(sum, show=False)
    assert quiet([1, 2]) == 3 and capsys.readouterr().out == ""


FAKE_SMI = """#!/bin/sh
if [ "$1" = "-L" ]; then
  echo "GPU 0: Fake (UUID: GPU-0)"; echo "GPU 1: Fake (UUID: GPU-1)"; exit 0
fi
if [ "$2" = "0" ]; then echo "    Processes"; echo "        Process ID : 123"; exit 0; fi
echo "    Processes                         : None"
"""


def test_get_free_gpu_and_init_gpu(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert get_free_gpu() == -1  # no nvidia-smi
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    assert get_free_gpu() == 1  # GPU 0 runs a process
    assert get_free_gpu(nb_gpus=1) == -1
    with caplog.at_level(logging.INFO, logger="elektronn"):
        initGPU(False)
        assert not caplog.records
        initGPU("auto")
    message = caplog.records[-1].getMessage()
    assert "free GPU: 1" in message and "CUDA_VISIBLE_DEVICES" in message
    assert "ELEKTRONN_MODE=jax" in message


def test_helpers_are_exported():
    for name in ("pickleSave", "pickleLoad", "previewDiffPlot", "timeit", "get_free_gpu",
                 "initGPU"):
        assert name in trainutils.__all__
