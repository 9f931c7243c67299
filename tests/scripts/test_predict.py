"""``elektronn-predict``: a training run's save folder, an input volume and an output, as the user
types them; faults injected through the command line (kill -9, then --resume)."""

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

from elektronn.data.synthetic import write_cubes  # noqa: E402
from elektronn.net.netcreation import createNet  # noqa: E402
from elektronn.net.volume import plan_volume  # noqa: E402
from elektronn.scripts.predict import build_parser, main  # noqa: E402
from elektronn.training.config import Config, DefaultConfig  # noqa: E402
from elektronn.training.predictor import create_predncnn  # noqa: E402
from elektronn.training.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# a small 3-D net: input (x, y, z) 23 x 23 x 5, field of view 10 x 10 x 3
CONFIG = """
save_path = {save!r}
save_name = "tiny3d"
data_path = label_path = {data!r}
d_files = [("raw_0.h5", "raw")]
l_files = [("barrier_int16_0.h5", "lab")]
n_dim = 3
n_lab = 2
mode = "img-img"
desired_input = [23, 23, 5]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [3, 2]
MFP = []
batch_size = 1
monitor_batch_size = 1
n_steps = 1
max_runtime = 60
SGD_params = dict(LR=0.01, momentum=0.9)
seed = 0
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A save folder as a training leaves it (config backup and a -LAST.param), and a volume."""
    root = tmp_path_factory.mktemp("predict_cli")
    write_cubes(root / "data", n_cubes=1, shape=(32, 32, 8))
    cfg = root / "tiny3d_config.py"
    cfg.write_text(CONFIG.format(save=f"{root}/save/", data=f"{root}/data/"))
    config = Config(cfg, default_config=DefaultConfig(None))
    Trainer(config).prepareSaveFolder()  # as a run starts: save/ with Backup/config.py
    cnn = createNet(config, config.dimensions.input, 1, 2, config.dimensions, seed=0)
    for lay in cnn.layers:  # not the initial biases (all equal)
        lay.b.set_value(np.random.default_rng(1).normal(size=lay.b.get_value().shape)
                        .astype(np.float32))
    cnn.saveParameters(str(root / "save" / "tiny3d-LAST.param"))
    raw = (np.random.default_rng(2).random((1, 40, 34, 14)) * 255).astype(np.uint8)
    zarr.create_array(str(root / "raw.zarr"), data=raw, chunks=(1, 16, 16, 8))
    with h5py.File(root / "raw.h5", "w") as f:
        f["vol/raw"] = raw
    ref = create_predncnn(cfg, 1, 2, override_MFP_to_active=True,
                          param_file=root / "save" / "tiny3d-LAST.param")
    return {"root": root, "save": root / "save", "config": cfg, "raw": raw, "cnn": ref,
            "want": ref.predictDense(raw, show_progress=False)}


def n_blocks(run, block):
    return plan_volume(run["cnn"], run["raw"].shape, run["raw"].dtype, block).n_blocks


def read(path):
    return zarr.open_array(str(path), mode="r")[:]


def test_save_folder_to_zarr_resume_and_overwrite(run, tmp_path, capsys):
    out = tmp_path / "pred.zarr"
    args = [str(run["save"]), str(run["root"] / "raw.zarr"), str(out), "--block", "8", "8", "4"]
    n = n_blocks(run, (8, 8, 4))
    assert n > 20
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Vox/s]" in err and f"{n} of {n} blocks computed" in err and "MVox/s" in err
    np.testing.assert_allclose(read(out), run["want"], atol=1e-6, rtol=0)
    # an existing output needs --resume or --overwrite
    assert main(args) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert f"0 of {n} blocks computed ({n} done before)" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"{n} of {n} blocks computed" in err and "Vox/s]" not in err
    # --resume with another block shape would mix two runs: refused, output untouched
    assert main(args[:3] + ["--block", "8", "8", "8", "--resume"]) == 2
    assert "block_shape" in capsys.readouterr().err
    np.testing.assert_allclose(read(out), run["want"], atol=1e-6, rtol=0)


def test_config_and_params_hdf5_in_and_out(run, tmp_path):
    params = run["save"] / "tiny3d-LAST.param"
    assert main(["--config", str(run["config"]), "--params", str(params),
                 f"{run['root']}/raw.h5:vol/raw", f"{tmp_path}/p.h5:prob", "--uint8",
                 "--pad-raw", "--quiet"]) == 0
    want = run["cnn"].predictDense(run["raw"], show_progress=False, as_uint8=True,
                                   pad_raw=True)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        got = f["prob"][()]
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1


def test_usage_errors(run, tmp_path, capsys):
    raw = str(run["root"] / "raw.zarr")
    cases = [
        ([str(tmp_path), raw, str(tmp_path / "o.zarr")], "not a training save folder"),
        ([str(run["save"]), str(tmp_path / "missing.zarr"), str(tmp_path / "o.zarr")],
         "missing.zarr"),
        (["--config", str(run["config"]), raw, str(tmp_path / "o.zarr")], "--params"),
        ([str(run["save"]), raw], "SAVE_FOLDER INPUT OUTPUT"),
        ([str(run["save"]), raw, f"{tmp_path}/o.h5:p", "--workers", "2"], "write to zarr"),
        ([str(run["save"]), raw, str(tmp_path / "o.zarr"), "--block", "4", "4"],
         "block_shape must be 3"),
    ]
    for argv, message in cases:
        assert main(argv + ["--quiet"]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.h5").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args([str(run["save"]), raw, "o.zarr", "--resume", "--overwrite"])


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--config", "--params", "--block", "--workers", "--scheduler", "--resume",
                   "--overwrite"):
        assert option in text


# --- kill -9 of the command mid-run, then --resume --------------------------------------------
SLOW_CLI = textwrap.dedent("""
    import sys, time
    from elektronn.net import volume
    fast = volume.predict_block
    def predict_block(*args, **kwargs):  # slow enough to be killed mid-run
        time.sleep(0.05)
        return fast(*args, **kwargs)
    volume.predict_block = predict_block
    from elektronn.scripts.predict import main
    sys.exit(main(sys.argv[1:]))
""")


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO),
                                                         os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_kill_9_then_resume_from_the_command_line(run, tmp_path):
    out = tmp_path / "pred.zarr"
    argv = [str(run["save"]), f"{run['root']}/raw.h5:vol/raw", str(out), "--block", "8", "8",
            "4", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *argv], env=env())
    markers = out / "elektronn-done"
    deadline = time.monotonic() + 300
    while (not markers.exists() or len(os.listdir(markers)) < 3) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done, n = len(os.listdir(markers)), n_blocks(run, (8, 8, 4))
    assert proc.returncode == -signal.SIGKILL and 3 <= done < n
    result = subprocess.run([sys.executable, "-m", "elektronn.scripts.predict", *argv,
                             "--resume"], env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    computed = int(result.stderr.split(f" of {n} blocks computed")[0].rsplit(" ", 1)[-1])
    assert 0 < computed <= n - done
    np.testing.assert_allclose(read(out), run["want"], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_local_cluster_of_two_workers(run, tmp_path):
    out = tmp_path / "pred.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "elektronn.scripts.predict", str(run["save"]),
         str(run["root"] / "raw.zarr"), str(out), "--block", "16", "16", "8", "--workers", "2",
         "--quiet"], env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    n = n_blocks(run, (16, 16, 8))
    assert n > 2 and f"{n} of {n} blocks computed" in result.stderr
    np.testing.assert_allclose(read(out), run["want"], atol=1e-6, rtol=0)
    assert pickle.loads(pickle.dumps(run["cnn"])).n_lab == 2


def test_volume_without_channel_axis_is_one_channel(run, tmp_path):
    """ELEKTRONN's cubes (and the demo's) are stored (x, y, z): read as (1, x, y, z), lazily."""
    with h5py.File(tmp_path / "xyz.h5", "w") as f:
        f["raw"] = run["raw"][0]
    assert main([str(run["save"]), f"{tmp_path}/xyz.h5:raw", f"{tmp_path}/p.h5:prob",
                 "--quiet"]) == 0
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_allclose(f["prob"][()], run["want"], atol=1e-6)
