"""Run every MNIST example for a few steps on a tiny synthetic MNIST pickle."""

import gzip
import importlib.util
import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A mnist.pkl.gz in the original format, 100/20/20 images that a few steps can learn.

    Each digit is a fixed random binary template with 20 % noise, so a net that learns gets
    every test image right within 60 steps while an untrained one is at chance (90 % error).
    """
    rng = np.random.default_rng(0)
    templates = (rng.random((10, 784)) < 0.3).astype(np.float32)

    def split(n):
        labels = np.arange(n) % 10
        images = 0.8 * templates[labels] + 0.2 * rng.random((n, 784), dtype=np.float32)
        return images.astype(np.float32), labels

    path = tmp_path_factory.mktemp("mnist") / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((split(100), split(20), split(20)),
                                                protocol=2)))
    return str(path)


STEPS = ["--iterations", "60", "--batch-size", "20", "--eval-every", "20", "--seed", "1"]


def printed_test_error(out):
    """The percentage after 'Test error:' as a fraction."""
    return float(out.split("Test error:")[1].split("%")[0]) / 100


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_cnn_dropout", "mnist_mlp"])
def test_classifier_examples(name, tiny_mnist, capsys):
    error = load_example(name).main([*STEPS, "--data", tiny_mnist])
    out = capsys.readouterr().out
    assert "update: 0;" in out and "update: 40;" in out
    assert printed_test_error(out) == pytest.approx(error)
    assert error <= 0.1  # learned: chance is 0.9


@pytest.mark.slow
def test_autoencoder_example(tiny_mnist, tmp_path, capsys):
    params, image = tmp_path / "ae.param", tmp_path / "recon.png"
    error = load_example("mnist_autoencoder").main(
        [*STEPS, "--classifier-iterations", "60", "--data", tiny_mnist, "--save", str(params),
         "--plot", str(image)])
    assert params.stat().st_size > 0 and image.stat().st_size > 0
    out = capsys.readouterr().out
    assert "Validation reconstruction error" in out
    assert printed_test_error(out) == pytest.approx(error)
    assert error <= 0.1  # the pre-trained encoder and a classifier head learned


def test_missing_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("ELEKTRONN_MNIST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit, match="mnist.pkl.gz") as info:
        load_example("mnist_cnn").main(["--iterations", "1"])
    assert "ELEKTRONN_MNIST" in str(info.value)


@pytest.mark.slow
def test_neuro_3d_example(tmp_path, capsys):
    metrics = load_example("neuro_3d").main([
        "--out", str(tmp_path), "--iterations", "3", "--patch", "5", "35", "35",
        "--size", "48", "48", "12"])
    assert set(metrics) >= {"accuracy", "f1"}
    assert (tmp_path / "neuro3d.param").exists() and (tmp_path / "data" / "raw_1.h5").exists()
    out = capsys.readouterr().out
    assert "update 3:" in out
    assert "3 iterations are too few to learn" in out  # said before the run
    if metrics["f1"] <= metrics["baseline_f1"]:
        assert "no better than a trivial guess after 3 iterations" in out  # and after it
    with h5py.File(tmp_path / "prediction.h5", "r") as f:
        prob = f["prob"][()]
    assert prob.shape == (2, 48, 48, 12)
    assert (tmp_path / "prediction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def test_every_example_is_covered():
    assert EXAMPLE_NAMES == ["mnist_autoencoder", "mnist_cnn", "mnist_cnn_dropout", "mnist_mlp",
                             "neuro_3d", "ops_tour"]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_help_shows_the_defaults_and_runs_nothing(name, capsys):
    with pytest.raises(SystemExit) as info:
        load_example(name).main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage:") and "compiled" not in out  # ops_tour: no tour on --help
    options = [o for o in re.findall(r"(--[a-z-]+)", out) if o != "--help"]
    assert options and out.count("(default: ") == len(set(options))  # every option shows it


def test_long_default_runs_say_so(capsys):
    with pytest.raises(SystemExit):
        load_example("mnist_mlp").main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "training steps (default: 100000)" in out and "about 2 hours" in out
