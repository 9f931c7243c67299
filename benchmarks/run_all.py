"""Run every benchmark and print one table of elektronn against PyTorch.

Runs ``bench_ops`` (conv layers), ``bench_train`` (training steps), ``bench_predict`` (dense
prediction and its memory), ``bench_original`` (small nets against ELEKTRONN 1.0, skipped where
it is not installed), ``bench_volume`` (out-of-core prediction with ``predict_volume``: overhead,
dask workers, memory; its peer is in-memory ``predictDense`` or 1 worker) and the compile
times of the reference nets, each in a fresh process: the MNIST net with batch 4 (build,
compile and the first SGD step) with an empty
compile directory ("cold") and again reusing it ("warm"), and the 3-D neuro net with MFP
(build, compile and the first forward pass) cold::

    python benchmarks/run_all.py [--quick] [--mode MODE] [--out DIR] [--json PATH]

Every script writes its own JSON into ``--out``; this one writes the summary rows.  ``--quick``
runs the smoke sizes and measures only a warm MNIST compile (the caller's cache).
In the table ``ratio`` > 1 means elektronn is better (faster, or more voxels per second), and
``goal`` is the target of the performance issue for that line (:data:`GOALS`): a ratio, or a
share of the float32 matmul peak ("65%").
``--mode`` runs elektronn in another of :mod:`elektronn.backend`'s modes (e.g. ``jax``; it
sets ``ELEKTRONN_MODE`` for every benchmark process); the default is the library's default.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _nets  # noqa: E402
import bench_predict  # noqa: E402

HERE = Path(__file__).resolve().parent
COLUMNS = ("workload", "unit", "elektronn", "peer", "ratio", "pct_peak", "goal", "met")

#: The goals of the performance issue: ``("ratio", x)``: ratio at least x (peer: PyTorch or
#: ELEKTRONN 1.0); ``("pct_peak", p)``: at least p % of the float32 matmul peak.
GOALS = {
    "conv": ("ratio", 1.0),
    "train neuro": ("ratio", 2.0),
    "train mnist": ("ratio", 1.5),
    "predictDense neuro": ("pct_peak", 65.0),
    "predictDense neuro 7x127²": ("ratio", 1.5),
    "original train": ("ratio", 2.0),
    "original predict": ("ratio", 3.0),
    "predict_volume overhead": ("ratio", 1 / 1.1),  # at most 10% slower than predictDense
    "predict_volume workers": ("ratio", 1.6),  # 2 workers against 1
    "predict_volume memory": ("ratio", 1 / 1.1),  # the same peak at 4x the volume
}


def _goal(key, ratio, pct):
    """``(goal text, met)`` of the goal ``GOALS[key]`` for a row's ratio and % peak."""
    kind, target = GOALS[key]
    value = ratio if kind == "ratio" else pct
    text = f">={target:g}x" if kind == "ratio" else f">={target:g}%"
    return text, None if value is None else bool(value >= target)


def run_script(name, args, path):
    """Run ``benchmarks/<name>.py`` in a fresh process (its output shown); return its JSON.

    A process per script keeps PyTorch's and OpenBLAS's thread pools of one script from
    slowing down the next one.
    """
    subprocess.run([sys.executable, HERE / f"{name}.py", *args, "--json", path], check=True)
    return json.loads(Path(path).read_text())


def compile_worker(case):
    """In a fresh process: build, compile and run ``case`` once; return the timings."""
    t_start = time.perf_counter()
    import pytensor  # noqa: F401  (imports are not part of the compile time)

    import elektronn.net.convnet  # noqa: F401

    t0 = time.perf_counter()
    if case == "mnist4":
        cnn = _nets.mnist_elektronn(4)
        x = np.zeros((4, 1, 28, 28), np.float32)
        cnn.trainingStep(x, np.arange(4, dtype=np.int16), mode="SGD")
    else:
        cnn = _nets.neuro_elektronn(bench_predict.PATCH, mfp=True)
        cnn.class_probabilities(np.zeros(cnn.input_shape, np.float32))
    return {"import_s": t0 - t_start, "total_s": time.perf_counter() - t0}


def compile_case(case, runs, timeout):
    """Run ``case`` in fresh processes: "cold" (new compile dir), "warm" (same dir), "user"."""
    tmp = Path(tempfile.mkdtemp(prefix=f"elektronn_bench_{case}_"))
    args = [Path(__file__).resolve(), "--worker", case]
    try:
        out = {}
        for run in runs:
            env = _common.compile_env(None if run == "user" else tmp)
            out[run] = _common.run_worker(args, env, timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def summary_rows(ops, train, predict, original, compiles):
    """The table's rows: (workload, unit, elektronn, peer, ratio, % peak, goal, met).

    The peer is PyTorch, or ELEKTRONN 1.0 for the ``1.0`` rows.
    """
    rows = []

    def add(name, unit, value, peer, ratio, pct, goal_key=None):
        goal, met = _goal(goal_key, ratio, pct) if goal_key else (None, None)
        rows.append((name, unit, value, peer, ratio, pct, goal, met))

    for r in ops["rows"]:
        add(f"conv {r['layer']} {r['pass']}", "ms", r["elektronn_ms"], r.get("torch_ms"),
            r.get("ratio"), r["elektronn_pct_peak"], "conv")
    for r in train["rows"]:
        alone = r.get("alone")
        add(f"train {r['workload']} bs{r['batch']}", "ms/step", r["elektronn_ms"],
            r.get("torch_ms"), r.get("ratio"), r["elektronn_pct_peak"],
            None if alone else f"train {r['workload']}")
        if alone:  # the goal is measured with each library in its own process
            add("  alone, fresh processes", "ms/step", alone["elektronn_ms"],
                alone["torch_ms"], alone["ratio"], None, f"train {r['workload']}")
    e, t = predict["elektronn"], predict.get("torch")
    add("predictDense neuro", "MVox/s", e["mvox_s"], t and t["mvox_s"], predict.get("ratio"),
        e["pct_peak"], "predictDense neuro")
    e = predict.get("elektronn_train_patch")
    if e:
        add("predictDense neuro 7x127²", "MVox/s", e["mvox_s"], t and t["mvox_s"],
            predict.get("ratio_train_patch"), e["pct_peak"], "predictDense neuro 7x127²")
    for r in original.get("rows", []):
        unit = "MVox/s" if r["kind"] == "predict" else "ms/step"
        ours, peer = ((r["elektronn_mvox_s"], r["original_mvox_s"]) if r["kind"] == "predict"
                      else (r["elektronn_ms"], r["original_ms"]))
        add(f"1.0 {r['workload']}", unit, ours, peer, r["ratio"], None, f"original {r['kind']}")
    small, large = predict["memory"]
    add("predict memory peak", "MB", small["tracemalloc_peak_mb"], None, None, None)
    add("  8x volume" if predict["config"]["scale"] == 8 else "  scaled volume", "MB",
        large["tracemalloc_peak_mb"], None, None, None)
    for case, runs in compiles.items():
        for run, rec in runs.items():
            value = rec.get("total_s") if rec["status"] == "ok" else float("nan")
            add(f"compile {case} {run}", "s", value, None, None, None)
    return rows


def volume_rows(volume):
    """The rows of ``bench_volume`` (out-of-core prediction), in the layout of the table."""
    if "overhead" not in volume:
        return []
    rows = []

    def add(name, unit, value, peer, ratio, goal_key=None):
        goal, met = _goal(goal_key, ratio, None) if goal_key else (None, None)
        rows.append((name, unit, value, peer, ratio, None, goal, met))

    o = volume["overhead"]
    add("predict_volume (tiles)", "MVox/s", o["tiles"]["mvox_s"], o["predictDense_mvox_s"],
        o["tiles"]["mvox_s"] / o["predictDense_mvox_s"], "predict_volume overhead")
    w = volume["workers"]["setups"]
    one, two = w["1 worker, 1 thread"], w["2 workers, 1 thread each"]
    add("predict_volume 2 workers", "MVox/s", two["mvox_s"], one["mvox_s"],
        two["mvox_s"] / one["mvox_s"], "predict_volume workers")
    small, large = volume["memory"]
    add("predict_volume memory 4x", "MB", large["tracemalloc_peak_mb"],
        small["tracemalloc_peak_mb"], small["tracemalloc_peak_mb"] / large["tracemalloc_peak_mb"],
        "predict_volume memory")
    b = volume["per_block"]
    add("predict_volume per block", "ms", b["2 workers"]["ms_per_block"],
        b["serial"]["ms_per_block"], None)
    return rows


def format_table(rows):
    """The summary rows as a fixed-width table."""
    lines = ["{:<26}{:>8}{:>11}{:>10}{:>7}{:>8}{:>8}{:>5}".format(
        "workload", "unit", "elektronn", "peer", "ratio", "% peak", "goal", "met")]

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    for name, unit, e, t, ratio, pct, goal, met in rows:
        ok = "-" if met is None else "yes" if met else "NO"
        lines.append(f"{name:<26}{unit:>8}{f(e, '.3f'):>11}{f(t, '.3f'):>10}"
                     f"{f(ratio, '.2f'):>7}{f(pct, '.1f'):>8}{goal or '-':>8}{ok:>5}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke sizes, warm MNIST compile only")
    p.add_argument("--out", default="bench_results", help="folder of the per-script JSON files")
    p.add_argument("--json", default=None, help="summary JSON (default OUT/run_all.json)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per fresh process")
    p.add_argument("--mode", default=None, help="elektronn mode (sets ELEKTRONN_MODE)")
    p.add_argument("--no-original", action="store_true", help="skip ELEKTRONN 1.0's rows")
    p.add_argument("--no-volume", action="store_true",
                   help="skip bench_volume (out-of-core prediction; needs the distributed extra)")
    p.add_argument("--worker", choices=("mnist4", "neuro_mfp"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    """Run all benchmarks, print the summary table and write the JSON; return the summary."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(compile_worker(args.worker)))
        return {}
    if args.mode:
        os.environ["ELEKTRONN_MODE"] = args.mode  # inherited by every benchmark process
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = ["--quick"] if args.quick else []
    load0 = _common.loadavg()
    t0 = time.perf_counter()
    ops, train, predict = (run_script(name, quick, out / f"{name}.json")
                           for name in ("bench_ops", "bench_train", "bench_predict"))
    original = ({"rows": [], "skipped": "--no-original"} if args.no_original else
                run_script("bench_original", quick, out / "bench_original.json"))
    if args.quick:
        compiles = {"mnist4": compile_case("mnist4", ["user"], args.timeout)}
    else:
        compiles = {"mnist4": compile_case("mnist4", ["cold", "warm"], args.timeout),
                    "neuro_mfp": compile_case("neuro_mfp", ["cold"], args.timeout)}
    volume = ({"skipped": "--no-volume"} if args.no_volume else
              run_script("bench_volume", quick, out / "bench_volume.json"))
    rows = summary_rows(ops, train, predict, original, compiles) + volume_rows(volume)
    torch = _common.import_torch()
    summary = {
        "machine": dict(_common.machine_info(torch), loadavg_start=load0),
        "config": {"quick": args.quick, "mode": os.environ.get("ELEKTRONN_MODE", "default")},
        "wall_s": time.perf_counter() - t0,
        "matmul_gflops": {"ops": ops["matmul"]["gflops"], "train": train["matmul"]["gflops"],
                          "predict": predict["matmul"]["gflops"]},
        "compile": compiles,
        "original_skipped": original.get("skipped"),
        "rows": [dict(zip(COLUMNS, r, strict=True)) for r in rows],
    }
    print()
    print(f"summary: mode {summary['config']['mode']}, {summary['machine']['cores']} cores, "
          f"load at start {load0}, at end "
          f"{summary['machine']['loadavg']}, {summary['wall_s']:.0f} s; matmul peak "
          f"{summary['matmul_gflops']['train']:.0f} GFLOP/s")
    print(format_table(rows))
    print("peer: PyTorch, on the '1.0' rows ELEKTRONN 1.0; ratio > 1: elektronn better; % peak: "
          "elektronn's GFLOP/s / float32 matmul GFLOP/s; goal: the performance issue's")
    if original.get("skipped"):
        print(f"ELEKTRONN 1.0 rows skipped: {original['skipped']}")
    _common.write_json(summary, args.json or out / "run_all.json")
    return summary


if __name__ == "__main__":
    main()
