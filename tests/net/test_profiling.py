"""Tests of the input-size profiler (elektronn-profile: tests/scripts/test_profile.py)."""

import pytest

from elektronn.net import profiling
from elektronn.net.netutils import CNNCalculator
from elektronn.net.profiling import candidate_input_sizes, profile_input_sizes, sweep_sizes

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


def test_sweep_sizes():
    valid = [[3, 5, 7, 9], list(range(10, 60, 3)), list(range(10, 60, 6))]
    xy = sorted(set(valid[1]) & set(valid[2]))  # 10, 16, ..., 58: valid for x and y
    assert sweep_sizes(valid[1:], n_sizes=3, max_size=60) == [(10, 10), (22, 22), (58, 58)]
    iso = sweep_sizes(valid, n_sizes=2, max_size=(8, 60, 60))
    assert iso == [(7, 10, 10), (7, 58, 58)]  # z: the largest valid z not above x (and 8)
    aniso = sweep_sizes(valid, n_sizes=2, max_size=60, anisotropic=True, n_z=3)
    # x=10: the first z above int(10 / 8.5) = 1 is 3; x=58: the first above 6 is 7
    assert aniso == [(3, 10, 10), (5, 10, 10), (7, 10, 10), (5, 58, 58), (7, 58, 58),
                     (9, 58, 58)]
    assert all(z in valid[0] and x in xy for z, x, _ in aniso)
    with pytest.raises(ValueError, match="max_size needs 3 entries"):
        sweep_sizes(valid, max_size=(1, 2))


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


def test_module_api():
    assert {"profile_input_sizes", "measure_forward", "sweep_sizes"} <= set(profiling.__all__)
    assert not hasattr(profiling, "main")  # the command is elektronn.scripts.profile
