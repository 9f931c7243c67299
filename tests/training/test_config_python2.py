"""ELEKTRONN 1.0's own config files (written for Python 2) run with ``elektronn-train``."""

import re

import numpy as np
import pytest

from elektronn.data.synthetic import write_cubes
from elektronn.scripts.train import main
from elektronn.training.config import read_config_file

# A config in the style of ELEKTRONN 1.0's neuro_3d_config.py (Python 2): a leaked list
# comprehension variable deleted with ``del i``, and a print statement.
ORIGINAL_STYLE = """# -*- coding: utf-8 -*-
# CONFIGURATION TEMPLATE FOR CNN/NN-TRAINING
save_path = {save!r}
plot_on = False
print_status = True
device = False
save_name = 'neuro_3d'
overwrite = True
save_path += save_name + '/'
param_file = None
activation_func = 'relu'
batch_size = 1
dropout_rates = []
n_dim = 3
desired_input = [23,23,5]
filters = [[4,4,1],[3,3,3]]
pool = [[2,2,1],[1,1,1]]
nof_filters = [4,6]
MFP = []
target = 'nll'
mode = 'img-img'
n_lab = 2
background_processes = False
data_path = {data!r}
label_path = {data!r}
d_files = [('raw_%i.h5'%i, 'raw') for i in range(3)]
l_files = [('barrier_int16_%i.h5'%i, 'lab') for i in range(3)]
del i
cube_prios = None
valid_cubes = [2,]
print "config read"
n_steps = 10**12
max_runtime = 2 * 3600
history_freq = [2]
monitor_batch_size = 2
optimizer = 'SGD'
SGD_params = dict(LR=0.005, momentum=0.90)
"""


def test_leaked_comprehension_variable_can_be_deleted(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("d_files = [('raw_%i.h5' % i, 'raw') for i in range(2)]\ndel i\nx = 1\n")
    assert read_config_file(path) == {"d_files": [("raw_0.h5", "raw"), ("raw_1.h5", "raw")],
                                      "x": 1}


def test_del_of_a_name_defined_otherwise_keeps_python_semantics(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("a = [k for k in range(2)]\nk = 5\ndel k\n")
    assert read_config_file(path) == {"a": [0, 1]}
    path.write_text("a = [k for k in range(2)]\ndel undefined\n")  # not a comprehension name
    with pytest.raises(RuntimeError, match="NameError: name 'undefined'"):
        read_config_file(path)


@pytest.mark.parametrize("text, bad, hint", [
    ('print "x"', 'print "x"', r"write print\(\.\.\.\)"),
    ("try:\n    pass\nexcept ValueError, e:\n    pass", "except ValueError, e:",
     "write 'except E as e:'"),
    ("mode = 0755", "mode = 0755", "write 0o755"),
    ("ok = 1 <> 2", "ok = 1 <> 2", "write !="),
])
def test_python2_syntax_names_the_line_and_the_fix(tmp_path, text, bad, hint):
    path = tmp_path / "old.py"
    path.write_text("batch_size = 1\n" + text + "\n")
    with pytest.raises(RuntimeError) as info:
        read_config_file(path)
    message = str(info.value)
    lineno = 1 + 1 + text.splitlines().index(bad)
    assert str(path) in message and f"line {lineno}:" in message and "Python 2" in message
    assert bad in message and re.search(hint, message), message
    assert isinstance(info.value.__cause__, SyntaxError)


@pytest.mark.slow
def test_cli_runs_an_original_style_config(tmp_path, capsys):
    data = tmp_path / "data"
    write_cubes(data, n_cubes=3, shape=(48, 48, 16))
    text = ORIGINAL_STYLE.format(save=f"{tmp_path}/runs/", data=f"{data}/")
    config = tmp_path / "neuro_3d_config.py"
    config.write_text(text)

    assert main([str(config), "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "line 31" in err and 'print "config read"' in err and "print(...)" in err
    assert not (tmp_path / "runs").exists()  # stopped before anything was created

    config.write_text(text.replace('print "config read"', 'print("config read")'))
    assert main([str(config), "--steps", "3"]) == 0
    assert "config read" in capsys.readouterr().out
    history = np.load(tmp_path / "runs" / "neuro_3d" / "Backup" / "neuro_3d.history.npy")
    assert list(history[:, 0]) == [0, 2]
