"""Smoke tests of bench_train, bench_predict and run_all: ``--quick`` writes positive numbers.

The PyTorch columns are checked only where torch is installed (the scripts leave them out
otherwise).
"""

import json

import pytest

from tests.benchmarks.test_bench_smoke import load, positive

TRAIN_KEYS = ["gflop", "elektronn_ms", "elektronn_gflops", "elektronn_pct_peak"]
TORCH_KEYS = ["torch_ms", "torch_gflops", "torch_pct_peak", "ratio"]


@pytest.mark.slow
def test_bench_train_quick(tmp_path):
    path = tmp_path / "train.json"
    load("bench_train").main(["--quick", "--json", str(path)])
    data = json.loads(path.read_text())
    positive(data["matmul"], ["n", "ms", "gflops"])
    assert [r["workload"] for r in data["rows"]] == ["neuro", "mnist"]
    keys = TRAIN_KEYS + (TORCH_KEYS if data["machine"]["torch"] else [])
    for row in data["rows"]:
        positive(row, keys)


@pytest.mark.slow
def test_bench_predict_quick(tmp_path):
    path = tmp_path / "predict.json"
    load("bench_predict").main(["--quick", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["flop_per_voxel"] == 191060  # the neuro net's dense FLOPs per output voxel
    positive(data["elektronn"], ["seconds", "mvox_s", "gflops"])
    if data["machine"]["torch"]:
        positive(data["torch"], ["seconds", "mvox_s", "gflops"])
        assert data["same_output_shape"]
    small, large = data["memory"]
    assert large["voxels"] > small["voxels"]
    for rec in data["memory"]:
        positive(rec, ["seconds", "first_call_s", "output_mb", "tracemalloc_peak_mb"])
        # the measured call is the second on the volume: it may reuse the first one's memory
        assert rec["rss_growth_mb"] >= 0
    assert data["memory_check"]["bounded"], data["memory"]


def test_flop_counts():
    nets = load("_nets")
    # neuro net, (7, 127, 127) patch: 312.0 M multiply-adds per forward pass (batch 1)
    assert nets.neuro_forward_flop((7, 127, 127)) == 2 * 311_998_120
    # MNIST net per image: conv 10*25*24^2 + conv 8*10*25*8^2 + 128*100 + 100*10
    assert nets.mnist_forward_flop(2) == 2 * 2 * (144_000 + 128_000 + 12_800 + 1_000)


@pytest.mark.slow
def test_run_all_quick(tmp_path):
    # bench_volume has its own smoke test (test_bench_volume.py)
    summary = load("run_all").main(["--quick", "--no-volume", "--out", str(tmp_path)])
    names = [r["workload"] for r in summary["rows"]]
    assert "predictDense neuro" in names and "compile mnist4 user" in names
    assert {p.name for p in tmp_path.iterdir()} >= {
        "bench_ops.json", "bench_train.json", "bench_predict.json", "run_all.json"}
    for row in summary["rows"]:
        assert row["elektronn"] > 0, row
