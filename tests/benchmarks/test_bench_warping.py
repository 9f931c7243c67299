"""Smoke test of benchmarks/bench_warping.py: a ``--quick`` run writes complete numbers."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_warping.py"


def test_bench_warping_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_warping", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "sub" / "warping.json"
    module.main(["--quick", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["machine"]["cores"] >= 1 and data["config"]["quick"]
    assert [(r["function"], r["channels"]) for r in data["rows"]] == [
        ("warp3dFast", 1), ("warp3dFast", 2), ("warp3dJoint", 1)]
    for row in data["rows"]:
        assert row["patch"] == [7, 127, 127]
        assert row["patches_per_s"] > 0 and row["ms_per_patch"] > 0
