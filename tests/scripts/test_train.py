"""Tests of ``elektronn-train`` as a new user meets it: names, --set, messages on bad input."""

import logging
import os

import pytest

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


def test_the_hinted_command_writes_the_missing_cubes(tmp_path, monkeypatch):
    from elektronn.data import synthetic
    from elektronn.training.config import Config

    monkeypatch.chdir(tmp_path)
    assert synthetic.main(["elektronn-demo-output/data/", "--cubes", "2",
                           "--size", "24", "24", "8"]) == 0
    config = Config("neuro_3d_config", use_existing_dir=True)
    config.checkDataFiles()  # raises if a file is missing
    assert os.path.isfile(os.path.join(config.data_path, "barrier_int16_1.h5"))
