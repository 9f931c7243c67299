"""Tests of the demo (``elektronn-demo``): patch sampling, metrics, and a quick full run."""

import doctest
import json
import re
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from elektronn import demo
from elektronn.demo import DEFAULT, QUICK, PatchSampler, build_cnn, main, membrane_metrics


def test_doctests():
    result = doctest.testmod(demo)
    assert result.failed == 0 and result.attempted > 0


def test_membrane_metrics():
    labels = np.array([[1, 1, 0, 0, 0, 0, 0, 0]])
    perfect = membrane_metrics(labels.astype(float), labels)
    assert perfect["accuracy"] == perfect["f1"] == 1.0
    assert perfect["baseline_accuracy"] == 0.75
    assert perfect["baseline_f1"] == pytest.approx(0.4)  # all membrane: precision 1/4, recall 1
    nothing = membrane_metrics(np.zeros((1, 8)), labels)
    assert nothing["accuracy"] == nothing["baseline_accuracy"] and nothing["f1"] == 0


def test_patch_labels_are_the_output_centres(rng):
    """With labels equal to the image, every label is the image value at its output's centre,
    also after the random flips and x/y swaps."""
    cnn = build_cnn(QUICK, QUICK.patch, 3, mfp=False)
    raw = rng.integers(0, 256, size=(40, 44, 9), dtype=np.uint8)
    sampler = PatchSampler(raw, raw.astype(np.int16), cnn, np.random.default_rng(0))
    data, labels = sampler.batch(3)
    assert data.shape == (3,) + tuple(cnn.input_shape[1:]) and data.dtype == np.float32
    assert labels.shape == (3,) + tuple(cnn.output_shape[2:])
    for _ in range(4):
        data, labels = sampler.batch(3)
        centres = data[:, :, 0][(slice(None),) + sampler.label_index]
        np.testing.assert_array_equal(np.round(centres * 255).astype(np.int16), labels)
    offset = np.floor(cnn.dimension_calc.offset).astype(int)
    assert [s.start for s in sampler.label_index] == offset.tolist()
    assert [s.step for s in sampler.label_index] == list(cnn.output_strides)


def test_patch_too_large_for_volume():
    cnn = build_cnn(QUICK, QUICK.patch, 1, mfp=False)
    raw = np.zeros((20, 20, 9), np.uint8)
    with pytest.raises(ValueError, match="does not fit into the volume"):
        PatchSampler(raw, raw.astype(np.int16), cnn, np.random.default_rng(0))


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--help"])
    assert err.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: elektronn-demo-output)" in text and f"{DEFAULT.iterations}" in text


def test_first_time_left_is_honest(monkeypatch, capsys):
    """The first step (which compiles) does not enter the rate: no 't=23m' for a 40 s run."""
    class Net:
        def __init__(self):
            self.calls = 0

        def setOptimizerParams(self, **kw):
            pass

        def trainingStep(self, *args, mode):
            self.calls += 1
            time.sleep(1.0 if self.calls == 1 else 0.01)  # a slow first step
            return (0.5,)

        def get_error(self, *args):
            return 0.5, 0.1

    class Sampler:
        def batch(self, n):
            return None, None

    history = demo.train(Net(), Sampler(), replace(QUICK, iterations=30), show_progress=True)
    assert len(history) == 10
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "30/30" in final and "loss=0.5000" in final and "error=10.00%" in final
    assert float(re.search(r"([0-9.]+)it/s", final).group(1)) > 20  # not ~1 it/s


@pytest.mark.parametrize("argv", [["--size", "1", "2"], ["--iterations", "0"],
                                  ["--quick", "--size", "8"]])
def test_bad_arguments(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv + ["--out", str(tmp_path), "--quiet"])
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_writes_outputs_and_beats_the_baseline(tmp_path, capsys):
    out = tmp_path / "demo-out"
    assert main(["--quick", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.err  # progress bars and the log, in order, on stderr
    assert "pixel accuracy" in text and "MVox/s" in text and str(out) in text
    assert "Training: 100%" in text and "Predicting: 100%" in text
    assert text.index("Training: 100%") < text.index("pixel accuracy")
    assert captured.out == ""

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.03
    assert metrics["f1"] > metrics["baseline_f1"] + 0.2
    assert metrics["prediction_mvox_per_s"] > 0 and metrics["total_seconds"] > 0
    assert len(metrics["history"]) == 10 and metrics["history"][-1]["iteration"] == 400

    x, y, z = QUICK.size
    with h5py.File(out / "prediction.h5", "r") as f:
        prob = f["prob"][()]
    assert prob.shape == (2, x, y, z) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(axis=0), 1, atol=1e-5)
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "demo-cnn.param").stat().st_size > 0
    for name in ("raw_0.h5", "barrier_int16_0.h5", "raw_1.h5", "barrier_int16_1.h5"):
        assert (out / "data" / name).exists()
