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


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--filters", "3", "3", "--pools", "2"])
    assert err.value.code == 2
    assert "one entry per layer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--filters", "3,x", "--pools", "2"])


def test_module_api():
    assert {"profile_input_sizes", "main"} <= set(profiling.__all__)
