"""Tests of the input-size profiler and the elektronn-profile command."""

import json

import pytest

from elektronn.net import profiling
from elektronn.net.netutils import CNNCalculator
from elektronn.net.profiling import candidate_input_sizes, main, profile_input_sizes

FILTERS, POOLS = [3, 3], [2, 1]


def test_candidate_sizes_are_valid_and_spread():
    sizes = candidate_input_sizes(FILTERS, POOLS, n_sizes=4, max_size=40)
    valid = CNNCalculator(FILTERS + [1], POOLS + [1], n_dim=2).valid_inputs[0]
    assert len(sizes) == 4 and sizes == sorted(sizes)
    assert sizes[0] == (valid[0], valid[0])
    assert sizes[-1] == (max(v for v in valid if v <= 40),) * 2
    assert all(s in valid for size in sizes for s in size)
    mfp = candidate_input_sizes(FILTERS, POOLS, MFP=True, n_sizes=2, max_size=(20, 30))
    valid = CNNCalculator(FILTERS + [1], POOLS + [1], MFP=[1, 0, 1], n_dim=2).valid_inputs[0]
    assert mfp[0] == (valid[0], valid[0]) and all(s in valid for s in mfp[-1])
    assert mfp[-1][0] <= 20 and mfp[-1][1] <= 30


def test_profile_two_sizes(capsys):
    results = profile_input_sizes(FILTERS, POOLS, n_ch=2, n_lab=3, nof_filters=[4, 4],
                                  n_sizes=2, repeats=2, max_size=24, verbose=True)
    assert [r["input_size"] for r in results] == [(8, 8), (24, 24)]
    for r in results:
        assert r["pass_s"] > 0 and r["first_pass_s"] > 0 and r["compile_s"] > 0
        assert r["voxels_per_s"] > 0 and r["peak_mem_mb"] > 0
        assert r["output_strides"] == [2, 2] and r["passes"] == 4
    assert results[1]["output_size"] == (9, 9)
    assert results[1]["peak_mem_mb"] > results[0]["peak_mem_mb"]
    table = capsys.readouterr().out
    assert "MVox/s" in table and "24x24" in table


def test_profile_mfp_explicit_sizes():
    (r,) = profile_input_sizes(FILTERS, POOLS, MFP=True, nof_filters=3, sizes=[(9, 11)],
                               repeats=1)
    assert r["output_strides"] == [1, 1] and r["passes"] == 1
    assert r["output_size"] == (2, 4)  # dense: 2 x the fragment output (1, 2)
    with pytest.raises(ValueError, match="does not fit"):
        profile_input_sizes(FILTERS, POOLS, MFP=True, sizes=[(10, 10)])


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = main(["--filters", "3", "3", "--pools", "2", "1", "--nof-filters", "4", "4",
               "--sizes", "2", "--max-size", "16", "--repeats", "1", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["architecture"]["filters"] == [3, 3]
    assert [r["input_size"] for r in report["results"]] == [[8, 8], [16, 16]]
    assert all(r["voxels_per_s"] > 0 for r in report["results"])
    assert "peak[MiB]" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--filters", "3", "3", "--pools", "2"])
    assert err.value.code == 2
    assert "one entry per layer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--filters", "3,x", "--pools", "2"])


def test_module_api():
    assert {"profile_input_sizes", "main"} <= set(profiling.__all__)
