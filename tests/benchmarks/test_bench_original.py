"""bench_original skips with a clear message where ELEKTRONN 1.0 is not installed."""

import json

from tests.benchmarks.test_bench_smoke import load


def test_skips_without_the_original(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ELEKTRONN1_PYTHON", str(tmp_path / "no-python2.7"))
    path = tmp_path / "original.json"
    result = load("bench_original").main(["--quick", "--json", str(path)])
    assert "skipped, ELEKTRONN 1.0 is not installed" in capsys.readouterr().out
    assert result["rows"] == [] and "no-python2.7" in result["skipped"]
    assert json.loads(path.read_text())["skipped"] == result["skipped"]


def test_shared_workload_code_builds_in_elektronn():
    """The code both libraries run builds a training step and a prediction here."""
    bench = load("bench_original")
    build, timed = bench.elektronn_builder()
    call, units, patch = build(bench.WORKLOADS["n3d_7x21x21"][1])
    assert (units, patch) == (0, [7, 21, 21]) and len(timed(call, 2)) == 2
    call, units, patch = build(dict(bench.WORKLOADS["pred3d_mfp"][1], image=[2, 50, 50, 14]))
    assert units > 0 and patch[0] == 11
