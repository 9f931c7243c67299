"""Compile time of the first call of a graph under elektronn's "numpy" and "c" modes, and numba.

"numba" is PyTensor's numba linker (PyTensor's ``NUMBA`` mode after elektronn's
:func:`~elektronn.backend.configure`); elektronn does not offer it as a mode because its Ops
have no numba implementations (they run in numba's object mode).

This is the measurement behind :mod:`elektronn.backend`'s default mode.  Every case runs in a
fresh Python process with its own PyTensor compile directory (``ELEKTRONN_COMPILEDIR`` and
``PYTENSOR_FLAGS=base_compiledir=...``): a first process with the empty directory ("cold"),
then a second one reusing what the first left there ("warm")::

    python benchmarks/bench_compile.py [--quick] [--timeout S] [--json PATH]

Graphs
------
a
    Pooling and max-fragment pooling built from pure PyTensor slicing, reshape and max
    (crop -> reshape -> max over the pool axes for each phase, phases stacked on the batch
    axis, then a plain pool), with the gradient with respect to the input.
b
    A small net-like graph of elektronn Ops: conv -> relu -> MFP -> conv ->
    fragments_to_dense, with the gradients with respect to both filters.

Reported per case: ``build_s`` (graph and gradient construction), ``compile_s``
(``pytensor.function``), ``first_call_s`` (the first call, where the numba linker JITs and
elektronn builds its C kernels), ``total_s`` (compile + first call) and ``process_s`` (the
whole process, imports included).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compile_env, run_worker  # noqa: E402

GRAPHS = ("a", "b")
MODES = ("numpy", "c", "numba")
POOL = (2, 2, 2)


def pool_graph(x, ws):
    """Non-overlapping max pooling of the trailing axes with slicing-free reshape + max."""
    nd = len(ws)
    lead = x.ndim - nd
    shape = list(x.type.shape[:lead])
    for s, p in zip(x.type.shape[lead:], ws, strict=True):
        shape += [s // p, p]
    return x.reshape(shape).max(axis=[lead + 2 * i + 1 for i in range(nd)])


def mfp_graph(x, ws):
    """Max-fragment pooling as a pure graph: every phase cropped, pooled, stacked on axis 0."""
    import itertools

    import pytensor.tensor as pt

    nd = len(ws)
    sizes = [(s - p + 1) // p * p for s, p in zip(x.type.shape[-nd:], ws, strict=True)]
    frags = []
    for phase in itertools.product(*(range(p) for p in ws)):
        crop = (Ellipsis,) + tuple(slice(f, f + n) for f, n in zip(phase, sizes, strict=True))
        frags.append(pool_graph(x[crop], ws))
    return pt.concatenate(frags, axis=0)


def graph_a(rng):
    """Graph (a): pure-PyTensor MFP then pool, output and input gradient."""
    import pytensor
    import pytensor.tensor as pt

    x = pt.tensor("x", dtype="float32", shape=(1, 4, 21, 21, 21))
    y = pool_graph(mfp_graph(x, POOL), POOL)  # (8, 4, 5, 5, 5)
    g = pt.constant(rng.standard_normal((8, 4, 5, 5, 5)).astype("float32"))
    outputs = [y, pytensor.grad((y * g).sum(), x)]
    return [x], outputs, [rng.standard_normal((1, 4, 21, 21, 21)).astype("float32")]


def graph_b(rng):
    """Graph (b): conv -> relu -> MFP -> conv -> fragments_to_dense, filter gradients."""
    import pytensor
    import pytensor.tensor as pt

    from elektronn.ops import conv, fragment_offsets, fragments_to_dense, max_fragment_pool

    x = pt.tensor("x", dtype="float32", shape=(1, 2, 15, 15, 15))
    w1 = pytensor.shared(0.1 * rng.standard_normal((4, 2, 3, 3, 3)).astype("float32"), "w1")
    w2 = pytensor.shared(0.1 * rng.standard_normal((3, 4, 3, 3, 3)).astype("float32"), "w2")
    h = pt.maximum(conv(x, w1), 0)  # (1, 4, 13, 13, 13)
    h = max_fragment_pool(h, POOL)  # (8, 4, 6, 6, 6)
    h = conv(h, w2)  # (8, 3, 4, 4, 4)
    offsets, strides = fragment_offsets(None, None, POOL)
    y = fragments_to_dense(h, offsets, strides)  # (1, 3, 8, 8, 8)
    loss = ((y - 0.5) ** 2).mean()
    outputs = [loss, *pytensor.grad(loss, [w1, w2])]
    return [x], outputs, [rng.standard_normal((1, 2, 15, 15, 15)).astype("float32")]


def worker(graph, mode):
    """Measure one case in this (fresh) process; return the timings as a dict."""
    t_start = time.perf_counter()
    import numpy as np
    import pytensor

    from elektronn import backend

    backend.configure()
    if mode == "numba":
        from pytensor.compile.mode import get_mode as pytensor_mode

        compile_mode = pytensor_mode("NUMBA").excluding(*backend._EXCLUDED)
    else:
        compile_mode = backend.get_mode(mode)
    t0 = time.perf_counter()
    inputs, outputs, values = {"a": graph_a, "b": graph_b}[graph](np.random.default_rng(0))
    t1 = time.perf_counter()
    f = pytensor.function(inputs, outputs, mode=compile_mode)
    t2 = time.perf_counter()
    f(*values)
    t3 = time.perf_counter()
    return {
        "import_s": t0 - t_start,
        "build_s": t1 - t0,
        "compile_s": t2 - t1,
        "first_call_s": t3 - t2,
        "total_s": t3 - t1,
        "compiledir": str(pytensor.config.compiledir),
    }


def run_case(graph, mode, compiledir, timeout):
    """Run :func:`worker` in a subprocess using ``compiledir``; return its record."""
    return run_worker([os.path.abspath(__file__), "--worker", graph, mode],
                      env=compile_env(compiledir), timeout=timeout)


def run_cold_warm(graph, mode, timeout):
    """Cold then warm run of one case in a temporary compile directory."""
    tmp = Path(tempfile.mkdtemp(prefix=f"elektronn_bench_{graph}_{mode}_"))
    try:
        cold = run_case(graph, mode, tmp, timeout)
        warm = run_case(graph, mode, tmp, timeout)
        if cold["status"] != "ok":
            warm["note"] = "the cold run did not finish: its cache may be partly filled"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"graph": graph, "mode": mode, "cold": cold, "warm": warm}


def _fmt(rec, key):
    if rec["status"] == "timeout":
        return f">{rec['timeout_s']:.0f} (timeout)" if key == "total_s" else "-"
    if rec["status"] != "ok":
        return "error"
    return f"{rec[key]:.2f}"


def format_table(results):
    """The results as a text table; times in seconds."""
    head = ("graph", "mode", "run", "compile", "first call", "total", "process")
    lines = ["{:<6}{:<7}{:<6}{:>9}{:>12}{:>16}{:>9}".format(*head)]
    for r in results:
        for run in ("cold", "warm"):
            rec = r[run]
            label = run + ("*" if "note" in rec else "")
            lines.append(
                f"{r['graph']:<6}{r['mode']:<7}{label:<6}{_fmt(rec, 'compile_s'):>9}"
                f"{_fmt(rec, 'first_call_s'):>12}{_fmt(rec, 'total_s'):>16}"
                f"{rec['process_s']:>9.2f}"
            )
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: graph b, mode c only")
    p.add_argument("--timeout", type=float, default=300, help="seconds per process")
    p.add_argument("--json", default="bench_results/bench_compile.json", help="output JSON path")
    p.add_argument("--worker", nargs=2, metavar=("GRAPH", "MODE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    """Run every case, print the table and write the JSON; return the result dict."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return {}
    cases = [("b", "c")] if args.quick else [(g, m) for g in GRAPHS for m in MODES]
    results = []
    for graph, mode in cases:
        results.append(run_cold_warm(graph, mode, args.timeout))
        print(f"graph {graph}, mode {mode}: done", file=sys.stderr)
    import numpy as np
    import pytensor

    result = {
        "machine": {
            "cores": os.cpu_count(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "pytensor": pytensor.__version__,
        },
        "config": {"quick": args.quick, "timeout_s": args.timeout},
        "results": results,
    }
    print("seconds; cold: empty compile directory, warm: a second process reusing it")
    print(format_table(results))
    if any("note" in r["warm"] for r in results):
        print("warm*: after a cold run that timed out or failed (its cache may be partly filled)")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
