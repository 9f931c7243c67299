"""Tests of ``elektronn-train`` as a new user meets it: names, --set, messages on bad input."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from elektronn.data import synthetic
from elektronn.scripts.train import build_parser, main
from elektronn.training.config import EXAMPLE_CONFIG_DIR, example_configs, read_config_file


def run(argv, caplog):
    with caplog.at_level(logging.INFO, logger="elektronn"):
        return main(argv)


def test_set_accepts_bare_strings_for_string_options():
    args = build_parser().parse_args([
        "c", "--set", "save_path=runs/", "--set", "save_name=123", "--set", "n_steps=500",
        "--set", "param_file=None", "--set", "data_path='quoted/'"])
    assert args.set == [("save_path", "runs/"), ("save_name", "123"), ("n_steps", 500),
                        ("param_file", None), ("data_path", "quoted/")]


def test_set_without_equals_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["MNIST_MLP_config", "--set", "n_steps"])
    assert e.value.code == 2 and "expected NAME=VALUE" in capsys.readouterr().err


def test_example_configs_are_package_data():
    assert set(example_configs()) == {"MNIST_CNN_warp_config", "MNIST_MLP_config",
                                      "config_template", "neuro_3d_config"}
    assert EXAMPLE_CONFIG_DIR.parent.name == "elektronn"  # inside the package, installed with it
    examples = EXAMPLE_CONFIG_DIR.parents[1] / "examples" / "configs"
    assert examples.resolve() == EXAMPLE_CONFIG_DIR.resolve()  # one source of truth
    for name in example_configs():  # no option points into a user's home data folder
        options = read_config_file(EXAMPLE_CONFIG_DIR / f"{name}.py")
        assert ".ELEKTRONN" not in repr(options)


def test_unknown_config_lists_the_examples(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["no_such_config"], caplog) == 2
    assert "no_such_config could not be found" in caplog.text
    assert "neuro_3d_config" in caplog.text and "Traceback" not in caplog.text


def test_missing_cubes_name_the_file_and_the_command_writing_them(tmp_path, caplog,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["neuro_3d_config", "--set", f"save_path={tmp_path / 'run'}/"], caplog) == 2
    missing = tmp_path / "elektronn-demo-output" / "data" / "raw_0.h5"
    assert f"d_files file {missing} does not exist" in caplog.text
    assert "dataset 'raw'" in caplog.text and "barrier_int16_1.h5" in caplog.text
    assert "python -m elektronn.data.synthetic elektronn-demo-output/data/ --cubes 2" \
        in caplog.text
    assert not (tmp_path / "run").exists()  # checked before the run folder is made


def test_missing_data_of_an_own_layout_has_no_synthetic_hint(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["neuro_3d_config", "--set", f"save_path={tmp_path / 'run'}/",
                "--set", "d_files=[('img.h5', 'raw')]", "--set", "l_files=[('lab.h5', 'lab')]",
                "--set", "valid_cubes=[]"], caplog) == 2
    assert "img.h5 does not exist" in caplog.text and "synthetic" not in caplog.text


def test_missing_mnist_file_is_a_message_not_a_traceback(tmp_path, caplog, capsys):
    missing = tmp_path / "nowhere" / "mnist.pkl.gz"
    code = run(["MNIST_MLP_config", "--set", f"save_path={tmp_path / 'run'}/",
                "--set", f"data_load_kwargs={{'path': {str(missing)!r}}}"], caplog)
    assert code == 2 and str(missing) in caplog.text
    assert "Traceback" not in caplog.text + capsys.readouterr().err


def test_the_hinted_command_writes_the_missing_cubes(tmp_path, monkeypatch):
    from elektronn.data import synthetic
    from elektronn.training.config import Config

    monkeypatch.chdir(tmp_path)
    assert synthetic.main(["elektronn-demo-output/data/", "--cubes", "2",
                           "--size", "24", "24", "8"]) == 0
    config = Config("neuro_3d_config", use_existing_dir=True)
    config.checkDataFiles()  # raises if a file is missing
    assert os.path.isfile(os.path.join(config.data_path, "barrier_int16_1.h5"))


# --- runs that lose nothing: faults injected as a user meets them ---------------------------------

REPO = Path(__file__).resolve().parents[2]

# A tiny version of the neuro_3d example: input (z, x, y) = (5, 23, 23), 2 conv layers.
TINY = """
save_path = {save!r}
data_path = label_path = {data!r}
desired_input = [23, 23, 5]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [4, 6]
monitor_batch_size = 4
n_steps = 40
history_freq = [10]
max_runtime = 600
preview_data_path = None
background_processes = False
plot_on = False
"""


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cubes")
    synthetic.write_cubes(folder, n_cubes=2, shape=(48, 48, 16))
    return folder


def tiny_config(tmp_path, data, save=None, **extra):
    """The neuro_3d example config made tiny (``extra`` options appended)."""
    text = (EXAMPLE_CONFIG_DIR / "neuro_3d_config.py").read_text()
    text += TINY.format(save=f"{save or tmp_path / 'run'}/", data=f"{data}/")
    text += "".join(f"{k} = {v!r}\n" for k, v in extra.items())
    path = tmp_path / "tiny_config.py"
    path.write_text(text)
    return path


def child_env():
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


def train_process(*args, cwd, **kwargs):
    """``python -m elektronn.scripts.train ...`` as a subprocess (stderr into stdout)."""
    return subprocess.Popen([sys.executable, "-m", "elektronn.scripts.train", *map(str, args)],
                            cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def train(*args, cwd, timeout=300):
    proc = train_process(*args, cwd=cwd)
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out


def broken_copy(cubes, tmp_path, what):
    """A copy of the cubes with one fault: returns (folder, the file that must be named)."""
    folder = tmp_path / "broken"
    shutil.copytree(cubes, folder)
    if what == "truncated":
        path = folder / "raw_1.h5"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif what in ("nan", "label_range", "transposed"):
        name, key = ("raw_0.h5", "raw") if what == "nan" else ("barrier_int16_0.h5", "lab")
        path = folder / name
        with h5py.File(path, "r+") as f:
            arr = f[key][()]
            del f[key]
            if what == "nan":
                arr = arr.astype(np.float32) / 255
                arr[10, 11, 3] = np.nan
                arr[1, 2, 3] = np.inf
            elif what == "label_range":
                arr[20, 20, 8] = 2  # n_lab = 2: classes 0 and 1
            else:
                arr = np.ascontiguousarray(np.transpose(arr, (2, 0, 1)))  # saved as (z, x, y)
            f[key] = arr
    elif what == "small":
        for name, key in (("raw_1.h5", "raw"), ("barrier_int16_1.h5", "lab")):
            with h5py.File(folder / name, "r+") as f:
                arr = f[key][:20]  # x: 20 voxels, the net's patch needs 23
                del f[key]
                f[key] = arr
        path = folder / "raw_1.h5"
    elif what == "dataset_name":
        path = folder / "barrier_int16_1.h5"
        with h5py.File(path, "r+") as f:
            f.move("lab", "labels")
    return folder, path


@pytest.mark.parametrize("what, message", [
    ("truncated", "cannot be read as an HDF5 file"),
    ("dataset_name", "has no dataset 'lab'; its datasets are ['labels']"),
    ("label_range", "holds the label 2, but n_lab=2"),
    ("nan", "holds 2 non-finite values (NaN or inf)"),
    ("transposed", "the labels (48, 16, 48) are larger than the image (16, 48, 48)"),
    ("small", "the image (16, 20, 48) is smaller than the net's input patch (5, 23, 23)"),
])
def test_bad_data_is_named_before_anything_is_deleted(tmp_path, cubes, what, message):
    folder, bad = broken_copy(cubes, tmp_path, what)
    run_dir = tmp_path / "run"
    (run_dir / "Backup").mkdir(parents=True)  # the previous run, overwrite = True
    (run_dir / "neuro_3d-LAST.param").write_bytes(b"the previous run's parameters")
    code, out = train(tiny_config(tmp_path, folder), cwd=tmp_path)
    assert code == 2, out
    assert str(bad) in out and message in out, out
    assert "Traceback" not in out and "Compiling" not in out
    assert (run_dir / "neuro_3d-LAST.param").read_bytes() == b"the previous run's parameters"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run"]


def test_correct_cubes_give_no_labels_cut_off_warning(tmp_path, cubes, caplog):
    from elektronn.training.config import Config, DefaultConfig
    from elektronn.training.trainer import Trainer

    config = Config(tiny_config(tmp_path, cubes), default_config=DefaultConfig(None))
    with caplog.at_level(logging.INFO, logger="elektronn"):
        Trainer(config).loadData()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "labels as large as the image" in caplog.text


def test_nan_in_a_cube_on_disk_is_named_when_a_patch_reads_it(tmp_path, cubes):
    """Cubes too large to scan (in_memory=False) are checked patch by patch."""
    from elektronn.training.CNNData import CNNData, DataError

    folder, bad = broken_copy(cubes, tmp_path, "nan")
    with h5py.File(bad, "r+") as f:
        raw = f["raw"][()]
        raw[:, :, :8] = np.nan  # half of the cube: a patch meets it soon
        f["raw"][...] = raw
    data = CNNData((5, 23, 23), 1, (1, 6, 6), 3, n_lab=2, in_memory=False, seed=0)
    data.addDataFromFile(folder, folder, [("raw_0.h5", "raw")], [("barrier_int16_0.h5", "lab")])
    with pytest.raises(DataError, match=f"{bad}.*'raw'.*patch of the image holds .* non-finite"):
        for _ in range(50):
            data.getbatch(4)


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for line in ("0    the training ended", "1    the training diverged",
                 "2    bad configuration or data", "130  interrupted"):
        assert line in out


def test_truncated_preview_file_is_named(tmp_path, cubes):
    preview = tmp_path / "preview.h5"
    preview.write_bytes((cubes / "raw_0.h5").read_bytes()[:3000])
    code, out = train(tiny_config(tmp_path, cubes, preview_data_path=str(preview)), cwd=tmp_path)
    assert code == 2 and f"{preview} (preview_data_path): cannot be read" in out, out
    assert "Traceback" not in out and not (tmp_path / "run").exists()


def test_resume_without_a_saved_run_says_so_before_compiling(tmp_path, cubes):
    code, out = train(tiny_config(tmp_path, cubes), "--resume", cwd=tmp_path)
    assert code == 2 and "cannot resume: there is no saved run" in out, out
    assert "Compiling" not in out and "Traceback" not in out


@pytest.mark.parametrize("option, message", [
    ("SGD_params=dict(momentun=0.5)", "SGD_params: 'momentun' is not a parameter of this "
                                      "optimiser (valid: ['LR', 'momentum']). Did you mean "
                                      "'momentum'?"),
    ("SGD_params=dict(LR='0.01')", "SGD_params['LR'] must be a number, got '0.01' (str)"),
])
def test_optimiser_parameters_are_checked_when_the_config_loads(tmp_path, cubes, caplog,
                                                                option, message):
    config = tiny_config(tmp_path, cubes)
    config.write_text(config.read_text() + option + "\n")
    assert run([str(config)], caplog) == 2
    assert message in caplog.text and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside_until_the_first_save(tmp_path, cubes):
    run_dir = tmp_path / "run"
    config = tiny_config(tmp_path, cubes, n_steps=3, history_freq=[1000])
    assert train(config, cwd=tmp_path)[0] == 0
    (run_dir / "marker").write_text("first run")
    proc = train_process(config, "--steps", "100000", cwd=tmp_path)
    try:
        for line in proc.stdout:  # the data is checked: the old run was moved aside
            if "Compiling SGD" in line:
                break
        previous = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
        assert len(previous) == 1 and (previous[0] / "marker").read_text() == "first run"
        assert not (run_dir / "marker").exists()
        for line in proc.stdout:
            if "00000 NLLm=" in line:  # the first save of the new run
                break
        assert not previous[0].exists()
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.slow
def test_diverging_run_saves_the_last_good_parameters(tmp_path, cubes):
    """A real optimiser with a huge learning rate: exit code 1, step and cause reported."""
    from elektronn.net import paramfile

    config = tiny_config(tmp_path, cubes, n_steps=200, plot_on=True,
                         SGD_params={"LR": 1e12, "momentum": 0.9})
    code, out = train(config, cwd=tmp_path)
    assert code == 1, out
    m = re.search(r"the training diverged at step (\d+): (the loss is -?(nan|inf)|a gradient is "
                  r"not finite)", out)
    assert m, out
    step = int(m.group(1))
    run_dir = tmp_path / "run"
    end = paramfile.read_param_file(run_dir / "neuro_3d_end.param")
    arrays = [np.asarray(a) for layer in end[1:-1] for a in layer]
    assert arrays and all(np.isfinite(a).all() for a in arrays)
    assert (run_dir / "neuro_3d.history.png").exists()
    timeline = np.load(run_dir / "Backup" / "neuro_3d.timeline.npy")
    assert timeline[-1, 0] == step - 1 and np.isfinite(timeline[:, 3]).all()
    assert "End of Training (diverged" in (run_dir / "neuro_3d.log").read_text()


@pytest.mark.slow
def test_resumed_run_gives_the_history_of_an_uninterrupted_one(tmp_path, cubes):
    """Stopped by --steps and by kill -9, resumed: the same history as without stopping.

    The learning rate schedule has an entry before and one after the stops, SGD has momentum
    and the patches are warped (random state): each would differ if it were not restored.
    With a seed, the run from scratch without a stop gives the same history too.
    """
    extra = dict(warp_on=True, monitor_batch_size=100, param_save_h=0.00005, seed=1,
                 LR_schedule=[(25, 0.02), (55, 0.005), (65, 0.002)])
    base, a, b, c = (tmp_path / name for name in ("base", "a", "b", "c"))
    config = tiny_config(tmp_path, cubes, save=base, **extra)
    code, out = train(config, "--steps", "40", cwd=tmp_path)
    assert code == 0, out
    snapshots = {p.name: p.read_bytes() for p in base.glob("neuro_3d-*h.param")}
    assert snapshots
    shutil.copytree(base, a)
    shutil.copytree(base, b)
    stale = [b / ".neuro_3d-LAST.param.999999999.0123abcd.tmp",  # left by killed saves
             b / f".{sorted(snapshots)[0]}.999999999.0123abcd.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)

    # a: 40 -> 80 in one go
    code, out = train(config, "--resume", "--steps", "80", "--set", f"save_path={a}/",
                      cwd=tmp_path)
    assert code == 0, out
    # b: 40 -> killed (-9) after the save of step 60 -> resumed to 80
    proc = train_process(config, "--resume", "--steps", "80", "--set", f"save_path={b}/",
                         cwd=tmp_path)
    for line in proc.stdout:
        if "00060 NLLm=" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((b / "neuro_3d.state.json").read_text())["step"] < 79
    code, out = train(config, "--resume", "--steps", "80", "--set", f"save_path={b}/",
                      cwd=tmp_path)
    assert code == 0, out
    assert not any(path.exists() for path in stale)

    # c: 0 -> 80 without a stop
    code, out = train(config, "--steps", "80", "--set", f"save_path={c}/", cwd=tmp_path)
    assert code == 0, out

    cols = [0, 2, 3, 4, 5, 6, 7]  # all but the time
    hist_a, hist_b, hist_c = (np.load(d / "Backup" / "neuro_3d.history.npy") for d in (a, b, c))
    assert list(hist_c[:, 0]) == list(range(0, 80, 10))
    time_a, time_b, time_c = (np.load(d / "Backup" / "neuro_3d.timeline.npy")
                              for d in (a, b, c))
    assert list(time_c[:, 0]) == list(range(80))
    for hist, times in ((hist_a, time_a), (hist_b, time_b)):
        assert hist.shape == hist_c.shape and times.shape == time_c.shape
        np.testing.assert_allclose(hist[:, cols], hist_c[:, cols], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(times[:, [0, 2, 3, 4]], time_c[:, [0, 2, 3, 4]], rtol=1e-6,
                                   atol=1e-7)
    np.testing.assert_allclose(hist_b[-1, 7], 0.002, rtol=1e-6)  # the step-65 entry applied
    # the first run's snapshots are kept; the resumed runs continue the hour marks
    for d in (a, b):
        for name, data in snapshots.items():
            assert (d / name).read_bytes() == data
        assert len(list(d.glob("neuro_3d-*h.param"))) > len(snapshots)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_batch_workers_exit_when_the_trainer_is_killed(tmp_path, cubes):
    config = tiny_config(tmp_path, cubes, background_processes=2, n_steps=10 ** 6)
    proc = train_process(config, cwd=tmp_path)
    pids = None
    for line in proc.stdout:
        m = re.search(r"Started 2 background processes for batch creation \(pids \[(\d+), "
                      r"(\d+)\]\)", line)
        if m:
            pids = [int(m.group(1)), int(m.group(2))]
        if pids and " NLLm=" in line:
            break
    assert pids and all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)  # as the out-of-memory killer does
    proc.communicate()
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


@pytest.mark.slow
def test_ctrl_c_twice_saves_and_exits_130(tmp_path, cubes):
    config = tiny_config(tmp_path, cubes, n_steps=10 ** 6)
    proc = train_process(config, cwd=tmp_path)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if " NLLm=" in line:
                break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # while the run stops and saves
        out.append(proc.communicate(timeout=120)[0])
    finally:
        proc.kill()
    text = "".join(out)
    assert proc.returncode == 130, text
    assert "Interrupted before the training started" not in text and "Traceback" not in text
    assert (tmp_path / "run" / "neuro_3d_end.param").exists()
    assert "End of Training (interrupt" in text
