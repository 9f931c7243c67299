"""elektronn-profile: a training config's net timed over a sweep of input sizes, or a given
architecture."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elektronn.net.netutils import CNNCalculator
from elektronn.scripts.profile import CSV_HEADER, main

REPO = Path(__file__).resolve().parents[2]

# An anisotropic 3-D net in zxy order after the config's conversion: filters (1,4,4), (3,3,3)
CONFIG_3D = """
save_path = '~/unused/'
save_name = 'tiny3d'
n_dim = 3
desired_input = [23, 23, 5]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [3, 4]
mode = 'img-img'
n_lab = 2
"""


def read_csv(path):
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0] == CSV_HEADER
    return np.array([[float(v) for v in line.split("\t")] for line in lines[1:]])


@pytest.mark.slow
def test_config_sweep_writes_csv_plot_and_fastest(tmp_path, capsys):
    config = tmp_path / "tiny3d_config.py"
    config.write_text(CONFIG_3D)
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(config), "--sizes", "2", "--z-sizes", "2", "--max-size", "12,40,40",
                 "--repeats", "1", "--out", str(out), "--json", str(out / "r.json")]) == 0
    rows = read_csv(out / "Speed_tiny3d.csv")
    calc = CNNCalculator([[1, 4, 4], [3, 3, 3]], [[1, 2, 2], [1, 1, 1]], n_dim=3,
                         force_center=True)
    assert len(rows) == 4  # 2 x/y sizes, 2 z sizes each
    for z, xy, pixel, speed, pass_s, _ in rows:
        assert z in calc.valid_inputs[0] and xy in calc.valid_inputs[1] and xy <= 40 and z <= 12
        # output voxels of one pass, from an independent calculator for that input
        c = CNNCalculator([[1, 4, 4], [3, 3, 3], 1], [[1, 2, 2], [1, 1, 1], 1], n_dim=3,
                          desired_input=[int(z), int(xy), int(xy)], force_center=True)
        assert pixel == np.prod([sizes[-1] for sizes in c.out])
        assert speed == pytest.approx(pixel / pass_s / 1e6, rel=1e-3)
    assert (out / "Speed_tiny3d.png").read_bytes()[:4] == b"\x89PNG"
    best = rows[np.argmax(rows[:, 3])]
    text = capsys.readouterr()
    assert f"Fastest input size (z, x, y) = ({int(best[0])}, {int(best[1])}, {int(best[1])})" \
        in text.out
    assert "Profiling" in text.err  # the progress bar
    report = json.loads((out / "r.json").read_text())
    assert report["save_name"] == "tiny3d" and len(report["results"]) == 4


CONFIG_2D = """
save_path = '~/unused/'
save_name = 'tiny2d'
n_dim = 2
desired_input = 30
filters = [4, 3]
pool = [2, 1]
nof_filters = [3, 4]
mode = 'img-img'
n_lab = 2
"""


@pytest.mark.slow
def test_2d_config_from_the_command_line(tmp_path):
    (tmp_path / "tiny2d_config.py").write_text(CONFIG_2D)
    proc = subprocess.run(
        [sys.executable, "-m", "elektronn.scripts.profile", "tiny2d_config.py",
         "--sizes", "2", "--max-size", "40", "--repeats", "1"],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                           "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(tmp_path / "Speed_tiny2d.csv")
    assert len(rows) == 2 and set(rows[:, 0]) == {1} and rows[-1, 1] <= 40
    assert "Fastest input size (x, y)" in proc.stdout
    assert not (tmp_path / "unused").exists()  # no training folder is made


def test_architecture_mode_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = main(["--filters", "3", "3", "--pools", "2", "1", "--nof-filters", "4", "4",
               "--sizes", "2", "--max-size", "16", "--repeats", "1", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["architecture"]["filters"] == [3, 3]
    assert [r["input_size"] for r in report["results"]] == [[8, 8], [16, 16]]
    assert all(r["voxels_per_s"] > 0 for r in report["results"])
    text = capsys.readouterr().out
    assert "peak[MiB]" in text and "Fastest input size (x, y)" in text


def _valid_out(size, filters, pools):
    """Output of valid convolutions and pooling, by hand: (s - f + 1) // p per layer."""
    for f, p in zip(filters, pools, strict=True):
        size = (size - f + 1) // p
    return size


def _mfp_out(size, filters, pools):
    """Dense output of max-fragment pooling: every phase crops p - 1, fragments interleave."""
    stride = 1
    for f, p in zip(filters, pools, strict=True):
        size = (size - f + 1 - (p - 1)) // p
        stride *= p
    return size * stride


@pytest.mark.parametrize("mfp", [False, True])
def test_cli_3d_and_mfp_nets(tmp_path, mfp):
    """elektronn-profile on a 3-D net (z, x, y), with and without max-fragment-pooling."""
    filters, pools = [(1, 3, 3), (2, 3, 3)], [(1, 2, 2), (1, 1, 1)]
    out = tmp_path / "speed.json"
    rc = main(["--filters", "1,3,3", "2,3,3", "--pools", "1,2,2", "1,1,1", "--nof-filters",
               "3", "4", "--sizes", "2", "--max-size", "6,30,30", "--repeats", "1",
               "--json", str(out)] + (["--mfp"] if mfp else []))
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["architecture"]["mfp"] is mfp
    assert len(report["results"]) == 2
    for r in report["results"]:
        size = r["input_size"]
        assert len(size) == 3 and all(s <= m for s, m in zip(size, (6, 30, 30), strict=True))
        per_axis = [[f[a] for f in filters] for a in range(3)], [[p[a] for p in pools]
                                                                 for a in range(3)]
        expect = [(_mfp_out if mfp else _valid_out)(s, f, p)
                  for s, f, p in zip(size, *per_axis, strict=True)]
        assert r["output_size"] == expect
        assert r["output_strides"] == ([1, 1, 1] if mfp else [1, 2, 2])
        assert r["passes"] == (1 if mfp else 4)
        assert r["pass_s"] > 0 and r["voxels_per_s"] > 0
    assert report["results"][-1]["input_size"][0] == 6


@pytest.mark.parametrize("argv, message", [
    ([], "give a training config file, or --filters and --pools"),
    (["c.py", "--filters", "3"], "not both"),
    (["--filters", "3", "3", "--pools", "2"], "one entry per layer"),
    (["--filters", "3,x", "--pools", "2"], "expected an int or ints"),
    (["no_such_config.py"], "could not be found"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_configs_other_than_img_img_are_refused(capsys):
    with pytest.raises(SystemExit) as err:
        main(["MNIST_CNN_warp_config.py"])  # img-scalar: one class vector per image
    assert err.value.code == 2
    assert "needs a dense image net (mode 'img-img')" in capsys.readouterr().err
