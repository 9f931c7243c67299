"""Tests of the three-level training configuration (docs/differences.md, T1, T16, T17)."""

import logging
import os
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest

from elektronn.training import config as cfg
from elektronn.training.config import (
    EXAMPLE_CONFIG_DIR,
    OPTION_NAMES,
    Config,
    ConfigError,
    DefaultConfig,
    MasterConfig,
    master_defaults,
    read_config_file,
    write_config_file,
)
from elektronn.training.trainer import Trainer

MLP = dict(mode="vect-scalar", MLP_layers=[20, 10], n_lab=3)
CNN2D = dict(mode="img-scalar", n_dim=2, desired_input=26, filters=[3, 3], pool=[2, 2],
             nof_filters=[4, 8], MLP_layers=[16], n_lab=10)
CNN3D = dict(mode="img-img", n_dim=3, desired_input=[127, 127, 7],
             filters=[[4, 4, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [2, 2, 1]],
             pool=[[2, 2, 1], [2, 2, 1], 1, 1, 1], nof_filters=[10, 25, 40, 50, 60], n_lab=2)


@pytest.fixture
def no_user_file():
    """Defaults without reading the real ~/.elektronn.config."""
    return DefaultConfig(None)


@pytest.fixture
def make(no_user_file):
    """Config(file or None, **overrides) without a save folder and without a user file."""
    def make(config_file=None, **kwargs):
        arguments = ("gpu", "trainer_file", "use_existing_dir", "override_MFP_to_active",
                     "imposed_input_size")
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in arguments}
        kwargs.setdefault("use_existing_dir", True)
        return Config(config_file, default_config=no_user_file, overrides=options, **kwargs)
    return make


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


# --- defaults ------------------------------------------------------------------------------------


def test_master_defaults_are_the_codes(no_user_file):
    d = master_defaults()
    assert tuple(d) == OPTION_NAMES and len(OPTION_NAMES) == 66  # 1.0's 65 and seed
    # T17: the code's values, not Pipeline.rst's
    assert d["history_freq"] == [500] and d["desired_input"] == 100
    assert d["save_path"] == "~/CNN_Training/Test/" and d["save_name"] == "Test"
    assert d["n_steps"] == 10**12 and d["max_runtime"] == 24 * 3600 and d["LR_decay"] == 0.993
    assert d["SGD_params"] == {"LR": 0.001, "momentum": 0.9}
    assert d["Adam_params"] == {"LR": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    assert d["LBFGS_params"]["iprint"] == -1 and d["CG_params"]["min_step"] == 8e-5
    assert d["preview_kwargs"] == {"export_class": 1, "max_z_pred": 5}
    assert d["grey_augment_channels"] == [0] and d["mode"] == "img-img"
    assert "__doc__" not in d  # T1: no longer an "allowed" key
    assert MasterConfig().options() == d == no_user_file.options()
    assert master_defaults(["batch_size", "MFP"]) == {"batch_size": 1, "MFP": []}


def test_defaults_load_into_a_config(make):
    c = make(**MLP)
    for name, value in master_defaults().items():
        if name not in ("save_path", "dropout_rates", "activation_func", "MFP", "pooling_mode",
                        *MLP):
            assert getattr(c, name) == value, name
    assert c.save_path == os.path.expanduser("~/CNN_Training/Test/")
    assert c.n_layers == 2 and c.activation_func == ["relu", "relu"]
    assert c.dropout_rates == [] and c.MFP == [] and c.pooling_mode == []
    assert c.dimensions is None and c.patch_size is None and c.gpu is None


def test_netcreation_defaults_are_the_master_defaults():
    from elektronn.net.netcreation import CONFIG_DEFAULTS
    assert CONFIG_DEFAULTS == master_defaults(CONFIG_DEFAULTS)


# --- reading files and levels --------------------------------------------------------------------


def test_config_file_overrides_defaults(tmp_path, make):
    path = write(tmp_path / "run.py", """\
        \"\"\"A docstring, as ELEKTRONN 1.0's example configs had (not an option).\"\"\"
        import os
        _n = 3
        save_path = "~/runs/"
        save_name = "mine"
        save_path += save_name + "/"
        mode = "vect-scalar"
        MLP_layers = [10] * _n
        batch_size = 4
        monitor_batch_size = 10
        d_files = [(f"raw_{i}.h5", "raw") for i in range(_n)]
        class_weights = [1, 2]
        SGD_params = dict(LR=0.1, momentum=0.5)
        """)
    c = make(path)
    assert c.config_file == str(path.resolve())
    assert c.save_path == os.path.join(os.path.expanduser("~/runs/mine"), "")
    assert c.MLP_layers == [10, 10, 10] and c.n_layers == 3 and c.batch_size == 4
    assert c.monitor_batch_size == 8  # rounded down to a multiple of batch_size
    assert c.d_files == [("raw_0.h5", "raw"), ("raw_1.h5", "raw"), ("raw_2.h5", "raw")]
    assert c.class_weights.dtype == np.float32 and c.class_weights.tolist() == [1.0, 2.0]
    assert c.SGD_params == {"LR": 0.1, "momentum": 0.5}
    assert c.optimizer == "SGD" and c.LR_decay == 0.993  # not in the file: defaults
    assert set(c.user_options) == {"save_path", "save_name", "mode", "MLP_layers",
                                   "batch_size", "monitor_batch_size", "d_files",
                                   "class_weights", "SGD_params"}  # no _n, no os


def test_user_default_file_is_level_two(tmp_path, monkeypatch):
    write(tmp_path / ".elektronn.config", """\
        batch_size = 7
        plot_on = False
        SGD_params = dict(LR=0.5, momentum=0.0)
        """)
    monkeypatch.setenv("HOME", str(tmp_path))
    defaults = DefaultConfig()
    assert defaults.user_file == str(tmp_path / ".elektronn.config")
    assert defaults.user_options == {"batch_size", "plot_on", "SGD_params"}
    run = write(tmp_path / "run.py", "batch_size = 2\nmode = 'vect-scalar'\nMLP_layers = [5]\n")
    c = Config(run, use_existing_dir=True, default_config=defaults)
    assert c.batch_size == 2 and c.plot_on is False and c.SGD_params["LR"] == 0.5
    assert defaults.batch_size == 7  # the level below is unchanged


def test_shared_default_config_is_lazy_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(cfg, "_default_config", None)
    first = cfg.default_config
    assert first is cfg.get_default_config() and first.user_file is None
    assert cfg.get_default_config(reload=True) is not first


def test_user_default_file_errors(tmp_path):
    bad = write(tmp_path / "bad.config", "batch_size = 1 / 0\n")
    with pytest.raises(RuntimeError, match=r"bad\.config.*ZeroDivisionError"):
        DefaultConfig(bad)
    typo = write(tmp_path / "typo.config", "bach_size = 3\n")
    with pytest.raises(ConfigError, match="'bach_size'.*'batch_size'"):
        DefaultConfig(typo)


def test_example_configs_are_found_by_name(make):
    c = make("MNIST_MLP_config.py")
    assert c.config_file == str(EXAMPLE_CONFIG_DIR / "MNIST_MLP_config.py")
    with pytest.raises(RuntimeError, match="could not be found"):
        make("no_such_config.py")


def test_errors_in_the_file_name_the_file(tmp_path, make):
    path = write(tmp_path / "broken.py", "filters = [3, 3\n")
    with pytest.raises(RuntimeError, match=r"broken\.py.*SyntaxError") as info:
        make(path)
    assert isinstance(info.value.__cause__, SyntaxError)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("typo, closest", [("bach_size", "batch_size"),
                                           ("nof_filter", "nof_filters"),
                                           ("mfp", "MFP"), ("lr_decay", "LR_decay"),
                                           ("SGD_param", "SGD_params"),
                                           ("desired_inputs", "desired_input"),
                                           ("__doc__x", "__doc__x")])
def test_unknown_option_names_the_closest(tmp_path, make, typo, closest):
    if typo == "__doc__x":  # underscore names are helpers, not options
        assert read_config_file(write(tmp_path / "c.py", "__doc__x = 1\n")) == {}
        return
    path = write(tmp_path / "c.py", f"mode = 'vect-scalar'\nMLP_layers = [3]\n{typo} = 1\n")
    with pytest.raises(ConfigError) as info:
        make(path)
    message = str(info.value)
    assert f"{typo!r} is not a valid configuration option" in message
    assert f"Did you mean {closest!r}?" in message and "c.py" in message


def test_all_unknown_options_are_reported_at_once(make):
    with pytest.raises(ValueError, match=r"(?s)'fiters'.*'filters'.*'poool'.*'pool'"):
        make(fiters=[3], poool=[2])


@pytest.mark.parametrize("name, value, expected", [
    ("batch_size", "10", "batch_size must be an int, got '10' (str)"),
    ("batch_size", 2.0, "batch_size must be an int"),
    ("filters", 3, "filters must be a list or tuple, got 3 (int)"),
    ("SGD_params", [0.1], "SGD_params must be a dict or None"),
    ("save_name", None, "save_name must be a str"),
    ("example_ignore_threshold", "0", "example_ignore_threshold must be a number or None"),
    ("weight_decay", "1e-4", "weight_decay must be a bool or a number"),
    ("n_steps", 1e6, "n_steps must be an int"),
    ("data_class_name", ("a.py",), "data_class_name must be a str or a (file path, name) pair"),
    ("batch_size", 0, "batch_size must be at least 1"),
])
def test_wrong_type_names_option_and_type(make, name, value, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        make(**{**MLP, name: value})


def test_accepted_alternative_types(make):
    c = make(**MLP, dropout_rates=0.5, history_freq=50, weight_decay=1e-4, warp_on=0.7,
             class_weights=np.ones(3), cube_prios=np.ones(2), example_ignore_threshold=None,
             data_class_name=("~/my_data.py", "MyData"), device=1)
    assert c.dropout_rates == [0.5, 0.5] and c.history_freq == [50]
    assert c.example_ignore_threshold == 0.0
    assert c.data_class_name == (os.path.expanduser("~/my_data.py"), "MyData")


@pytest.mark.parametrize("options, message", [
    (dict(MLP, mode="img-vect"), "mode must be one of"),
    (dict(MLP, target="nll_weird"), "target must be one of"),
    (dict(MLP, optimizer="sgd"), "optimizer must be one of"),
    (dict(CNN2D, border_mode="c-pad"), "border_mode must be one of"),
    (dict(CNN2D, nof_filters=[4]), "one entry per conv layer, got 2, 2 and 1"),
    (dict(CNN2D, dropout_rates=[0.5]), "one rate per layer \\(3\\)"),
    (dict(CNN2D, MLP_layers=[]), "'img-scalar' mode requires MLP_layers"),
    (dict(CNN3D, MLP_layers=[5]), "'img-img' mode does not allow MLP_layers"),
    (dict(MLP, filters=[3], pool=[1], nof_filters=[2]), "does not allow conv layers"),
    (dict(CNN2D, lazy_labels=True), "lazy_labels is only possible"),
    (dict(CNN2D, rnn_layer_kwargs=dict(n_hid=5)), "recurrent layer"),
    (dict(mode="img-img"), "needs conv layers"),
    (dict(CNN3D, n_dim=2), r"needs 2 sizes \(n_dim=2\)"),
    (dict(CNN3D, filters=[[4, 4], 3, 3, 3, 2]), r"filters entry \[4, 4\] needs 3 sizes"),
    (dict(CNN3D, n_dim=4), "n_dim must be 2 or 3"),
    (dict(CNN2D, mode="img-img", MLP_layers=[]), "not centered"),  # img-img: odd FOV needed
])
def test_inconsistent_options(make, options, message):
    with pytest.raises(ConfigError, match=message):
        make(**options)


def test_missing_important_options_are_warned_per_instance(tmp_path, make, caplog):
    path = write(tmp_path / "c.py", "mode = 'vect-scalar'\nMLP_layers = [3]\n")
    with caplog.at_level(logging.WARNING, logger="elektronn"):
        make(path)
        make(path)
    warnings = [r.getMessage() for r in caplog.records if "important options" in r.message]
    assert len(warnings) == 2 and warnings[0] == warnings[1]  # T1: the list does not grow
    assert "'batch_size'" in warnings[0] and "'d_files'" in warnings[0]
    assert "'filters'" not in warnings[0]


# --- fixValues -----------------------------------------------------------------------------------


def test_fixvalues_converts_3d_sizes_from_xyz_to_zxy(make):
    c = make(**CNN3D)
    assert c.filters == [[1, 4, 4], [1, 3, 3], [3, 3, 3], [3, 3, 3], [1, 2, 2]]
    assert c.pool == [[1, 2, 2], [1, 2, 2], 1, 1, 1]  # scalars are left alone
    assert c.desired_input == [7, 127, 127]
    assert c.MFP == [0] * 5 and c.pooling_mode == ["max"] * 5
    assert c.activation_func == ["relu"] * 5
    # Appendix B: the neuro_3d numbers
    assert c.patch_size == (7, 127, 127) and c.dimensions.offset == [2.5, 15.5, 15.5]
    assert c.dimensions.pred_stride == [1, 4, 4]
    assert c.user_options["filters"][0] == [4, 4, 1]  # as the file gave it


def test_fixvalues_leaves_2d_sizes_and_scalars(make):
    c = make(**dict(CNN2D, filters=[(3, 3), 3], desired_input=(26, 26)))
    assert c.filters == [(3, 3), 3] and c.pool == [2, 2] and c.desired_input == (26, 26)
    assert c.patch_size == (26, 26) and c.dimensions.offset == [5.0, 5.0]


def test_imposed_input_size_is_zxy_and_mfp_override(make):
    c = make(**dict(CNN3D, batch_size=4, monitor_batch_size=4), imposed_input_size=[9, 126, 126],
             override_MFP_to_active=True)
    assert c.MFP == [1, 1, 0, 0, 0] and c.batch_size == 1
    assert c.desired_input == [9, 126, 126] and c.patch_size == (9, 126, 126)


@pytest.mark.parametrize("mfp, expected", [(False, [0, 0]), (None, [0, 0]), ([], [0, 0]),
                                           ((), [0, 0]), (True, [1, 1]), (1, [1, 1]),
                                           ([1, 0], [1, 0])])
def test_mfp_forms(make, mfp, expected):
    assert make(**dict(CNN2D, MFP=mfp, desired_input=25)).MFP == expected


def test_scalar_options_are_repeated_per_layer(make):
    c = make(**dict(CNN2D, activation_func="tanh", pooling_mode="maxabs", dropout_rates=None))
    assert c.activation_func == ["tanh"] * 3 and c.pooling_mode == ["maxabs"] * 2
    assert c.dropout_rates == [None] * 3
    c = make(**dict(CNN2D, activation_func=["abs", "tanh", "relu"], dropout_rates=[0.1] * 3))
    assert c.activation_func == ["abs", "tanh", "relu"] and c.dropout_rates == [0.1] * 3


def test_monitor_batch_size_is_at_least_batch_size(make):
    assert make(**MLP, batch_size=8, monitor_batch_size=5).monitor_batch_size == 8
    assert make(**MLP, batch_size=8, monitor_batch_size=17).monitor_batch_size == 16


@pytest.mark.parametrize("border_mode, expected", [("crop", (22, 22)), ("keep", (22, 22)),
                                                   ("mirror", (26, 26)), ("0-pad", (26, 26))])
def test_img_scalar_border_modes(make, border_mode, expected):
    c = make(**dict(CNN2D, desired_input=24, border_mode=border_mode))
    assert c.patch_size == expected and c.dimensions.input == list(expected)


def test_img_scalar_reject(make):
    with pytest.raises(ConfigError, match="border_mode='reject'"):
        make(**dict(CNN2D, desired_input=24, border_mode="reject"))
    assert make(**dict(CNN2D, border_mode="reject")).patch_size == (26, 26)


# --- T1: no shared state -------------------------------------------------------------------------


def test_configs_share_no_state(make, no_user_file):
    before = no_user_file.options()
    a = make(**CNN3D)
    a.history_freq[0] = 7
    a.SGD_params["LR"] = 1.0
    a.grey_augment_channels.append(3)
    a.user_options["filters"].append([1, 1, 1])
    b = make(**CNN3D)
    assert b.history_freq == [500] and b.SGD_params["LR"] == 0.001
    assert b.grey_augment_channels == [0] and len(b.filters) == 5
    assert no_user_file.options() == before == master_defaults()
    assert "__doc__" not in vars(b)
    assert CNN3D["filters"][0] == [4, 4, 1]  # the overrides were not converted in place


# --- writing and backups -------------------------------------------------------------------------


def test_write_and_read_back(tmp_path, make):
    a = make(**dict(CNN3D, class_weights=np.array([0.3, 0.7]), LR_schedule=[(100, 0.01)],
                    data_class_name=None))
    path = tmp_path / "written.py"
    a.write(path)
    b = make(path)
    assert b.config_file == str(path.resolve())
    for name, value in a.options().items():
        np.testing.assert_equal(getattr(b, name), value, err_msg=name)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left


def test_write_config_file_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ConfigError, match="data_load_kwargs"):
        write_config_file({"data_load_kwargs": {"f": len}}, tmp_path / "c.py")
    with pytest.raises(ConfigError, match="'batchsize'"):
        write_config_file({"batchsize": 1}, tmp_path / "c.py")
    assert not (tmp_path / "c.py").exists()


def test_backup_scripts(tmp_path, no_user_file):
    """The Trainer makes the folder when the run starts; a config alone writes nothing."""
    trainer = write(tmp_path / "train.py", "print('train')\n")
    run = write(tmp_path / "run.py", f"""\
        save_path = {str(tmp_path / 'runs')!r}
        save_name = 'x'
        save_path += '/' + save_name
        mode = 'vect-scalar'
        MLP_layers = [3]
        """)
    c = Config(run, None, trainer, default_config=no_user_file)
    assert not (tmp_path / "runs").exists()
    Trainer(c).prepareSaveFolder()
    backup = tmp_path / "runs" / "x" / "Backup"
    assert c.save_path == str(tmp_path / "runs" / "x") + os.sep
    assert (backup / "config.py").read_text() == run.read_text()
    assert (backup / "elektronn-train").read_text() == trainer.read_text()
    assert stat.S_IMODE((backup / "config.py").stat().st_mode) == 0o755
    (backup / "old.txt").write_text("old")
    again = Trainer(Config(run, None, trainer, default_config=no_user_file))
    again.prepareSaveFolder()  # overwrite=True: a fresh folder, the old one moved aside
    assert not (backup / "old.txt").exists()
    assert (again.previous_run / "Backup" / "old.txt").read_text() == "old"
    third = Trainer(Config(run, None, trainer, default_config=no_user_file))
    third.prepareSaveFolder()  # the second run never saved: both earlier folders are kept
    previous = sorted(p for p in (tmp_path / "runs").iterdir() if ".previous-" in p.name)
    assert len(previous) == 2 and third.previous_run in previous
    assert again.previous_run.is_dir()


def test_backup_refuses_to_overwrite(tmp_path, no_user_file, monkeypatch):
    run = write(tmp_path / "run.py", f"""\
        save_path = {str(tmp_path / 'r')!r} + '/'
        mode = 'vect-scalar'
        MLP_layers = [3]
        """)
    (tmp_path / "r").mkdir()
    config = Config(run, None, None, default_config=no_user_file,
                    overrides=dict(overwrite=False))
    with pytest.raises(RuntimeError, match="does already exist"):
        Trainer(config).prepareSaveFolder()
    monkeypatch.chdir(tmp_path / "r")
    with pytest.raises(RuntimeError, match="Refusing to replace"):
        Trainer(Config(run, None, None, default_config=no_user_file)).prepareSaveFolder()
    assert (tmp_path / "r").is_dir()


def test_backup_with_overrides_writes_the_effective_file(tmp_path, no_user_file):
    options = dict(MLP, save_path=str(tmp_path / "o"), batch_size=3)
    Trainer(Config(None, default_config=no_user_file, overrides=options)).prepareSaveFolder()
    backup = tmp_path / "o" / "Backup" / "config.py"
    again = Config(backup, use_existing_dir=True, default_config=no_user_file)
    assert again.batch_size == 3 and again.MLP_layers == [20, 10]
    assert not (tmp_path / "o" / "Backup" / "elektronn-train").exists()


# --- examples and presentation -------------------------------------------------------------------


def test_example_configs_load_and_validate(make):
    cnn = make("MNIST_CNN_warp_config.py")
    assert cnn.mode == "img-scalar" and cnn.patch_size == (26, 26)
    assert cnn.dimensions.offset == [5.0, 5.0] and cnn.dimensions.pred_stride == [4, 4]
    assert cnn.n_layers == 4 and cnn.dropout_rates == [None] * 4
    assert cnn.data_load_kwargs == dict(path=None, convert2image=True, warp_on=True,
                                        shift_augment=True)
    assert cnn.save_path == os.path.expanduser("~/CNN_Training/2D/MNIST_example_warp/")
    assert cnn.SGD_params == {"LR": 0.02, "momentum": 0.9} and cnn.background_processes == 3

    mlp = make("MNIST_MLP_config.py")
    assert mlp.mode == "vect-scalar" and mlp.MLP_layers == [300, 300]
    assert mlp.data_load_kwargs["convert2image"] is False and mlp.dimensions is None

    neuro = make("neuro_3d_config.py")
    assert neuro.filters[0] == [1, 4, 4] and neuro.pool[0] == [1, 2, 2]
    assert neuro.patch_size == (7, 127, 127) and neuro.dimensions.pred_stride == [1, 4, 4]
    assert neuro.nof_filters == [10, 25, 40, 50, 60] and neuro.n_lab == 2  # T17: the code's
    assert neuro.d_files == [(f"raw_{i}.h5", "raw") for i in range(2)]
    assert neuro.l_files == [(f"barrier_int16_{i}.h5", "lab") for i in range(2)]
    assert neuro.valid_cubes == [1] and neuro.warp_on == 0.7 and neuro.weight_decay == 1e-4
    assert neuro.data_path == neuro.label_path == "elektronn-demo-output/data/"  # the demo's


def test_neuro_config_fits_the_synthetic_layout(tmp_path, make):
    from elektronn.data import synthetic
    neuro = make("neuro_3d_config.py", data_path=str(tmp_path), label_path=str(tmp_path))
    files = synthetic.write_cubes(tmp_path, n_cubes=2, shape=(24, 24, 8), seed=0)
    for (raw, lab), (d_name, d_key), (l_name, l_key) in zip(files, neuro.d_files,
                                                              neuro.l_files, strict=True):
        assert raw == Path(neuro.data_path) / d_name and d_key == synthetic.RAW_NAME
        assert lab == Path(neuro.label_path) / l_name and l_key == synthetic.LABEL_NAME


def test_template_has_every_option_with_its_default():
    options = read_config_file(EXAMPLE_CONFIG_DIR / "config_template.py")
    expected = master_defaults()
    expected.update(save_path="~/CNN_Training/3D/Debug/", save_name="Debug")
    assert options == expected
    assert DefaultConfig(EXAMPLE_CONFIG_DIR / "config_template.py").batch_size == 1


def test_describe_and_repr(make):
    c = make(**CNN3D)
    text = c.describe()
    assert all(f"\n{name} = " in text for name in OPTION_NAMES)
    assert "filters = [[1, 4, 4]," in text and "patch_size = (7, 127, 127)" in text
    assert str(c) == text
    assert repr(c) == ("<Config 'Test' from defaults: mode='img-img', n_dim=3, n_layers=5, "
                       "patch_size=(7, 127, 127)>")


def test_gpu_is_kept_and_ignored(make, caplog):
    with caplog.at_level(logging.INFO, logger="elektronn"):
        c = make(**MLP, gpu="auto")
    assert c.gpu == "auto" and "gpu='auto' ignored" in caplog.text


def test_public_api():
    assert set(cfg.__all__) == {
        "ConfigError", "OPTION_NAMES", "USER_CONFIG_FILE", "EXAMPLE_CONFIG_DIR",
        "example_configs", "parse_override",
        "master_defaults", "read_config_file", "find_config_file", "write_config_file",
        "MasterConfig", "DefaultConfig", "get_default_config", "Config"}
