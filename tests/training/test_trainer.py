"""End-to-end tests of the training pipeline: Trainer, BackgroundProc, elektronn-train."""

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from elektronn.data.synthetic import read_h5, write_cubes
from elektronn.net import losses, paramfile
from elektronn.scripts.train import build_parser, main
from elektronn.training import trainer as trainer_module
from elektronn.training import trainutils
from elektronn.training.config import EXAMPLE_CONFIG_DIR, Config, DefaultConfig
from elektronn.training.parallelisation import BackgroundProc
from elektronn.training.predictor import create_predncnn
from elektronn.training.trainer import Trainer

NAME = "neuro_3d"  # save_name of the example config

# A tiny version of the neuro_3d example: input (z, x, y) = (5, 23, 23), 2 conv layers.
TINY = """
save_path = {save!r}
data_path = label_path = {data!r}
desired_input = [23, 23, 5]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [4, 6]
batch_size = 1
monitor_batch_size = 4
n_steps = 300
history_freq = [50]
max_runtime = 600
preview_data_path = {preview!r}
initial_prev_h = 0.0
prev_save_h = 0.0005
param_save_h = 0.0005
SGD_params = dict(LR=0.01, momentum=0.9)
seed = 0
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("neuro_data")
    write_cubes(folder, n_cubes=3, shape=(48, 48, 16))
    trainutils.h5Save(read_h5(folder / "raw_0.h5", "raw"), folder / "preview.h5", "raw")
    return folder


def write_config(folder, data, save, **extra):
    """The example neuro_3d config with the tiny settings (and ``extra``) appended."""
    text = (EXAMPLE_CONFIG_DIR / "neuro_3d_config.py").read_text()
    text += TINY.format(save=f"{save}/", data=f"{data}/", preview=str(Path(data) / "preview.h5"))
    text += "".join(f"{k} = {v!r}\n" for k, v in extra.items())
    path = Path(folder) / "tiny_config.py"
    path.write_text(text)
    return path


def make_trainer(tmp_path, data_dir, **overrides):
    cfg = write_config(tmp_path, data_dir, tmp_path / "save")
    config = Config(cfg, default_config=DefaultConfig(None), overrides=overrides)
    trainer = Trainer(config)
    trainer.loadData()
    trainer.createNet()
    return trainer


class FakeClock:
    """The trainer's wall clock, advancing by ``tick`` seconds per reading: time-dependent
    saves happen at the same steps on every machine."""

    def __init__(self, tick=0.01):
        self.now, self.tick = 1e9, tick

    def time(self):
        self.now += self.tick
        return self.now


@pytest.mark.slow
def test_cli_trains_writes_files_predicts_and_resumes(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(trainer_module, "time", FakeClock())
    save = tmp_path / "save"
    # in-process batches: CNNData reseeds worker processes from their pids, so only these make
    # the "loss goes down" checks below reproducible (trainer.run with workers: see the
    # Ctrl-C test)
    cfg = write_config(tmp_path, data_dir, save, background_processes=False)
    assert main([str(cfg), "--gpu", "auto"]) == 0

    timeline = np.load(save / "Backup" / f"{NAME}.timeline.npy")
    history = np.load(save / "Backup" / f"{NAME}.history.npy")
    errors = np.load(save / "Backup" / f"{NAME}.errors.npy")
    assert timeline.shape == (300, 5) and list(timeline[:, 0]) == list(range(300))
    assert list(history[:, 0]) == [0, 50, 100, 150, 200, 250] and history.shape[1] == 8
    assert errors.shape == (6, 4)
    # the loss goes down: the update loss of the last steps vs the first ones, and the
    # monitored training loss at the end vs at step 0
    assert timeline[-100:, 3].mean() < timeline[:10, 3].mean() - 0.05
    assert timeline[-1, 2] < timeline[0, 2]  # the smoothed loss
    assert timeline[0, 2] == timeline[0, 3]  # which starts at the first loss (not at 0.65)
    assert history[-2:, 4].mean() < history[0, 4]
    # T6: the LR decays at i=0 already
    assert history[0, 7] == pytest.approx(0.01 * 0.993, rel=1e-5)

    for name in (f"{NAME}-LAST.param", f"{NAME}_end.param", f"{NAME}.timeline.png",
                 f"{NAME}.history.png", f"{NAME}.Errors.png", f"{NAME}.log",
                 "debugGetCNNBatch.png", "Backup/config.py", "Backup/elektronn-train"):
        assert (save / name).is_file(), name
    assert list(save.glob(f"{NAME}-pred-0-c1-z*-0.0hrs.png"))
    assert list(save.glob(f"{NAME}-raw-0-z*.png"))
    assert list(save.glob(f"{NAME}-0.0005h.param"))
    assert not list(save.glob("**/*.tmp"))
    state = json.loads((save / f"{NAME}.state.json").read_text())
    assert state["step"] == 299
    assert "End of Training" in (save / f"{NAME}.log").read_text()

    # the trained net, built from the config for prediction
    cnn = create_predncnn(cfg, 1, 2)
    raw = read_h5(data_dir / "raw_1.h5", "raw")[None, :, :, :7]
    prob = cnn.predictDense(raw, show_progress=False)
    assert prob.shape[0] == 2 and np.allclose(prob.sum(0), 1, atol=1e-4)

    # resume: continues at step 300 from the saved parameters and history
    last = [p.get_value() for p in cnn.params]
    assert main([str(cfg), "--resume", "--steps", "360"]) == 0
    history2 = np.load(save / "Backup" / f"{NAME}.history.npy")
    timeline2 = np.load(save / "Backup" / f"{NAME}.timeline.npy")
    assert list(history2[:, 0]) == [0, 50, 100, 150, 200, 250, 300, 350]
    np.testing.assert_array_equal(history2[:6], history)
    assert list(timeline2[:, 0]) == list(range(360))
    assert history2[6, 1] > history[-1, 1]  # the time axis continues
    assert timeline2[300:320, 3].mean() < timeline[:20, 3].mean()  # trained weights, not new
    assert "Resuming from" in (save / f"{NAME}.log").read_text()
    resumed = create_predncnn(cfg, 1, 2)
    assert any(not np.array_equal(a, p.get_value())
               for a, p in zip(last, resumed.params, strict=True))


def test_keyboard_interrupt_saves_and_stops(tmp_path, data_dir, monkeypatch):
    trainer = make_trainer(tmp_path, data_dir, background_processes=2, warp_on=False,
                           preview_data_path=None, history_freq=[1000])
    original, calls = trainer.cnn.trainingStep, []

    def step(*args, **kwargs):
        if len(calls) == 25:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer.cnn, "trainingStep", step)
    assert trainer.run() == "interrupt"
    save = Path(trainer.config.save_path)
    for name in (f"{NAME}-LAST.param", f"{NAME}_end.param", f"{NAME}.state.json"):
        assert (save / name).is_file()
    assert json.loads((save / f"{NAME}.state.json").read_text())["step"] == 24  # last done
    assert len(trainer.timeline) == 25
    # the saved parameters are the trained ones
    values = [p.get_value() for p in trainer.cnn.params]
    trainer.cnn.randomizeWeights()
    trainer.cnn.loadParameters(str(save / f"{NAME}-LAST.param"), strict=True)
    for v, p in zip(values, trainer.cnn.params, strict=True):
        np.testing.assert_array_equal(v, p.get_value())
    assert not mp.active_children()  # the batch workers were shut down and joined


IMG_SCALAR = """
save_path = {save!r}
save_name = "img_scalar"
data_path = label_path = {data!r}
d_files = [("img0.h5", "raw"), ("img1.h5", "raw")]
l_files = [("lab0.h5", "lab"), ("lab1.h5", "lab")]
valid_cubes = [1]
mode = "img-scalar"
border_mode = "crop"
n_dim = 2
n_lab = 2
desired_input = [10, 10]
filters = [3]
pool = [2]
nof_filters = [4]
MLP_layers = [8]
activation_func = "tanh"
target = "nll"
batch_size = 4
monitor_batch_size = 8
n_steps = 10000
max_runtime = {runtime!r}
history_freq = [10]
plot_on = False
background_processes = False
seed = 3
SGD_params = dict(LR=0.05, momentum=0.9)
"""


def write_img_scalar(folder, runtime):
    """Two stacks of 12 x 12 images (x, y, z on disk): class 1 bright, class 0 dark."""
    rng = np.random.default_rng(0)
    data = folder / "data"
    data.mkdir()
    for k in range(2):
        labels = (np.arange(24) % 2).astype(np.int16)
        images = rng.random((12, 12, 24)) * 0.5 + 0.4 * labels  # (x, y, z)
        trainutils.h5Save((images * 255).astype(np.uint8), data / f"img{k}.h5", "raw")
        trainutils.h5Save(labels, data / f"lab{k}.h5", "lab")
    cfg = folder / "img_scalar_config.py"
    cfg.write_text(IMG_SCALAR.format(save=f"{folder / 'save'}/", data=f"{data}/",
                                     runtime=runtime))
    return cfg


@pytest.mark.slow
def test_img_scalar_training_stops_at_the_runtime(tmp_path, monkeypatch):
    """img-scalar batches from h5 stacks train a classifier until ``max_runtime``."""
    clock = FakeClock(tick=0.01)
    monkeypatch.setattr(trainer_module, "time", clock)
    cfg = write_img_scalar(tmp_path, runtime=1.0)
    trainer = Trainer(Config(cfg, default_config=DefaultConfig(None)))
    trainer.loadData()
    trainer.createNet()
    img, lab = trainer.data.getbatch(**trainer.get_batch_kwargs)
    assert img.shape == (4, 1, 10, 10) and lab.shape == (4,)
    np.testing.assert_array_equal(lab, img.mean(axis=(1, 2, 3)) > 0.45)  # bright = class 1
    assert trainer.cnn.class_probabilities(img).shape == (4, 2)
    assert trainer.run() == "runtime"
    steps = len(trainer.timeline)
    assert 10 < steps < 10000
    assert trainer._elapsed() > 1.0
    state = json.loads((tmp_path / "save" / "img_scalar.state.json").read_text())
    assert state["step"] == steps - 1
    assert (tmp_path / "save" / "img_scalar_end.param").is_file()
    # it learned to tell bright from dark images on the validation stack
    assert trainer.errors[-1][3] < 25 and trainer.history[-1][5] < trainer.history[0][5]


@pytest.mark.slow
def test_cli_max_runtime_and_param_file(tmp_path, data_dir, monkeypatch):
    """--max-runtime stops the run; --resume --param-file continues from that file's weights."""
    monkeypatch.setattr(trainer_module, "time", FakeClock())
    save = tmp_path / "save"
    cfg = write_config(tmp_path, data_dir, save, preview_data_path=None, plot_on=False,
                       background_processes=False, warp_on=False, history_freq=[1000])
    assert main([str(cfg), "--max-runtime", "0.3"]) == 0
    step = json.loads((save / f"{NAME}.state.json").read_text())["step"]
    assert 0 < step < 299
    assert "Maximal runtime (0.3 s) reached" in (save / f"{NAME}.log").read_text()

    # all-zero weights: every class has probability 1/2, so the next loss is log(2)
    objects = paramfile.read_param_file(save / f"{NAME}-LAST.param")
    zeros = [objects[0], *[np.zeros_like(a) for a in objects[1:-1]], objects[-1]]
    paramfile.write_param_file(tmp_path / "zeros.param", zeros)
    assert main([str(cfg), "--resume", "--param-file", str(tmp_path / "zeros.param"),
                 "--steps", str(step + 2)]) == 0
    timeline = np.load(save / "Backup" / f"{NAME}.timeline.npy")
    assert list(timeline[:, 0]) == list(range(step + 2))
    assert timeline[step + 1, 3] == pytest.approx(-np.log(0.5 + losses.EPS), rel=1e-6)
    assert f"Resuming from {tmp_path / 'zeros.param'}" in (save / f"{NAME}.log").read_text()


def test_workers_are_seeded_differently(tmp_path, data_dir):
    trainer = make_trainer(tmp_path, data_dir, warp_on=0.5, preview_data_path=None)
    with BackgroundProc(trainer.data.getbatch, n_proc=2,
                        target_kwargs=trainer.get_batch_kwargs) as bg:
        a, b = bg.get(), bg.get()
        assert a[0].shape == b[0].shape == (1, 5, 1, 23, 23)
        assert not np.array_equal(a[0], b[0])
    with BackgroundProc(_global_draw, n_proc=2) as bg:  # global state too (T5)
        assert not np.array_equal(bg.get(), bg.get())


def _global_draw():
    return np.random.rand(4)


def _fail_in_worker():
    if mp.parent_process() is not None:
        raise OSError("broken file")
    return np.zeros(2)


def test_worker_error_is_raised():
    with BackgroundProc(_fail_in_worker, n_proc=1) as bg, \
            pytest.raises(RuntimeError, match="broken file"):
        assert bg.start_method == "spawn"
        bg.get()


def test_aux_order_lazy_labels_example_weights_class_weights(tmp_path, data_dir):
    trainer = make_trainer(tmp_path, data_dir, lazy_labels=True, use_example_weights=True,
                           class_weights=[1.0, 3.0], label_prop_thresh=0.7,
                           preview_data_path=None, warp_on=False)
    cnn = trainer.cnn
    assert [v.name for v in cnn._y_aux] == ["mask_class_labeled", "mask_class_not_present",
                                            "class_weights", "example_weights",
                                            "label_prop_thresh"]
    batch = trainer.data.getbatch(**trainer.get_batch_kwargs)
    assert len(batch) == 5  # images, labels, info1, info2, weights
    args = trainer.assembleArgs(batch)
    assert args[2] is batch[2] and args[3] is batch[3] and args[5] is batch[4]
    np.testing.assert_array_equal(args[4], [1.0, 3.0])
    assert args[6] == np.float32(0.7)
    # the loss is losses.nll of the net's probabilities with each array in its named slot
    P, y = pt.tensor5("P"), pt.itensor4("y")
    labeled, absent, ew = pt.matrix("labeled"), pt.matrix("absent"), pt.tensor4("ew")
    expected = pytensor.function([P, y, labeled, absent, ew], losses.nll(
        P, y, class_weights=np.float32([1.0, 3.0]), example_weights=ew,
        mask_class_labeled=labeled, mask_class_not_present=absent,
        label_prop_thresh=np.float32(0.7), **cnn.layers[-1]._nll_options)[0])
    probs = cnn.class_probabilities(batch[0])
    want = expected(probs, batch[1].astype(np.int32), batch[2].astype(np.float32),
                    batch[3].astype(np.float32), batch[4].astype(np.float32))
    assert float(cnn.get_loss(*args)[0]) == pytest.approx(float(want), rel=1e-5)
    nll, _, _ = cnn.trainingStep(*args, mode="SGD")
    assert float(nll) == pytest.approx(float(want), rel=1e-5)  # the loss before the update
    valid_nll, err = trainer.testModel("valid")
    assert np.isfinite(valid_nll) and 0 <= err <= 1


def test_reset_and_lr_schedule(tmp_path, data_dir):
    trainer = make_trainer(tmp_path, data_dir, preview_data_path=None, warp_on=False,
                           background_processes=False, n_steps=12, history_freq=[5],
                           LR_schedule=[(3, 0.1), (8, 0.02)], optimizer="Adam",
                           weight_decay=0.001, plot_on=False)
    assert trainer.run() == "steps"
    assert trainer.history[-1][7] == pytest.approx(0.02)
    assert [h[0] for h in trainer.history] == [0, 5, 10]
    trainer.reset()  # T2: weight_decay goes to its own slot
    assert trainer.history == [] and trainer.step == 0
    assert float(trainer.cnn.global_weightdecay.get_value()) == pytest.approx(0.001)


def test_cli_help_and_gpu_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--resume" in capsys.readouterr().out
    args = build_parser().parse_args(["c.py", "--gpu", "false", "--set", "n_steps=5"])
    assert args.gpu is False and args.set == [("n_steps", 5)]
    assert build_parser().parse_args(["c.py", "--gpu=3"]).gpu == 3


def test_plot_info_from_files(tmp_path):
    timeline = [[i, i * 2.0, 0.6, 0.5 + 0.1 * np.sin(i), 0.2] for i in range(40)]
    history = [[i, i * 2.0, 0.6, 0.5, 0.5, 0.55, -0.01, 0.01] for i in range(0, 40, 4)]
    errors = [[i, i * 2.0, 20.0, 25.0] for i in range(0, 40, 4)]
    trainutils.saveHist(timeline, history, [], errors, "m", folder=tmp_path)
    trainutils.plotInfoFromFiles(tmp_path, "m")  # T12: reads .CGtimeline.npy
    for name in ("m.timeline.png", "m.history.png", "m.Errors.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert trainutils.loadHist("m", tmp_path)["errors"] == errors


@pytest.mark.slow
def test_cli_mnist_mlp_config(tmp_path):
    """The MLP example config (non-image data class) trains with the CLI on a tiny MNIST file."""
    import gzip
    import pickle

    rng = np.random.default_rng(0)
    splits = tuple((rng.random((n, 784), dtype=np.float32), np.arange(n) % 10)
                   for n in (200, 60, 60))
    mnist = tmp_path / "mnist.pkl.gz"
    mnist.write_bytes(gzip.compress(pickle.dumps(splits, protocol=2)))
    out = tmp_path / "out"
    kwargs = {"path": str(mnist), "convert2image": False, "warp_on": True, "shift_augment": True}
    code = main([str(EXAMPLE_CONFIG_DIR / "MNIST_MLP_config.py"), "--steps", "30",
                 "--set", f"save_path={str(out) + '/'!r}", "--set", f"data_load_kwargs={kwargs!r}",
                 "--set", "monitor_batch_size=50", "--set", "history_freq=[10]",
                 "--set", "background_processes=1"])
    assert code == 0
    assert (out / "MNIST_MLP_example_end.param").exists()
    assert (out / "MNIST_MLP_example.history.png").exists()


def _big_batch():
    return np.ones((4, 1, 64, 128, 128), np.float32)  # 32 MB: more than a pipe buffers


def test_shutdown_is_quick_with_full_queues():
    """Workers blocked on full queues with large batches stop without waiting out the timeout."""
    bg = BackgroundProc(_big_batch, n_proc=2)
    assert bg.get().shape == (4, 1, 64, 128, 128)
    deadline = time.monotonic() + 120  # only a bound for a broken worker
    while not all(q.full() for q in bg._queues):  # the workers block in put()
        assert time.monotonic() < deadline, "the workers never filled their queues"
        time.sleep(0.01)
    procs = list(bg._procs)
    bg.shutdown(timeout=600.0)
    assert bg._procs == []
    # each worker left its loop and exited by itself (0), none was terminated (-15)
    assert [p.exitcode for p in procs] == [0, 0]
