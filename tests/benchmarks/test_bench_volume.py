"""Smoke test of bench_volume: a ``--quick`` run writes complete, positive numbers, and
run_all turns them into table rows."""

import json

import pytest

from tests.benchmarks.test_bench_smoke import load, positive

pytest.importorskip("zarr")
pytest.importorskip("distributed")


@pytest.mark.slow
def test_bench_volume_quick(tmp_path):
    path = tmp_path / "volume.json"
    load("bench_volume").main(["--quick", "--json", str(path)])
    data = json.loads(path.read_text())
    o = data["overhead"]
    positive(o, ["voxels", "predictDense_s", "predictDense_mvox_s"])
    for key in ("tiles", "default"):
        assert o[key]["identical"] and o[key]["blocks"] >= 1
        positive(o[key], ["seconds", "mvox_s"])
    w = data["workers"]
    assert w["identical"] and w["blocks"] > 2 and w["speedup_2_vs_1"] > 0
    for setup in w["setups"].values():
        positive(setup, ["seconds", "mvox_s", "first_run_s"])
    small, large = data["memory"]
    assert large["blocks"] > small["blocks"] and large["output_mb"] > small["output_mb"]
    positive(small, ["tracemalloc_peak_mb", "seconds"])
    for name in ("serial", "2 workers"):
        positive(data["per_block"][name], ["blocks", "seconds", "ms_per_block"])
    rows = load("run_all").volume_rows(data)
    assert [r[0] for r in rows] == ["predict_volume (tiles)", "predict_volume 2 workers",
                                    "predict_volume memory 4x", "predict_volume per block"]
    assert all(r[2] > 0 for r in rows)
