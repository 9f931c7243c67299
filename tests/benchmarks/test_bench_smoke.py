"""Smoke tests of the benchmark scripts: a ``--quick`` run writes complete, positive numbers."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name):
    """Import ``benchmarks/<name>.py`` as a module (``benchmarks`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(record, keys):
    for key in keys:
        assert record[key] > 0, f"{key} = {record[key]!r}"


@pytest.mark.slow
def test_bench_ops_quick(tmp_path):
    path = tmp_path / "sub" / "ops.json"
    load("bench_ops").main(["--quick", "--repeats", "2", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["machine"]["cores"] >= 1
    assert data["machine"]["numpy"] and data["machine"]["pytensor"]
    positive(data["matmul"], ["n", "ms", "gflops"])
    assert {(r["layer"], r["pass"]) for r in data["rows"]} == {
        (layer, p) for layer in ("2d", "3d") for p in ("fwd", "fwd+bwd")
    }
    keys = ["gflop", "elektronn_ms", "elektronn_gflops", "elektronn_pct_peak"]
    if data["machine"]["torch"] is not None:
        keys += ["torch_ms", "torch_gflops", "torch_pct_peak", "ratio"]
    for row in data["rows"]:
        positive(row, keys)


@pytest.mark.slow
def test_bench_compile_quick(tmp_path):
    path = tmp_path / "compile.json"
    load("bench_compile").main(["--quick", "--timeout", "120", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["machine"]["cores"] >= 1
    [case] = data["results"]
    assert (case["graph"], case["mode"]) == ("b", "c")
    for run in ("cold", "warm"):
        record = case[run]
        assert record["status"] == "ok", record
        positive(record, ["compile_s", "first_call_s", "total_s", "process_s"])
