"""Training-step speed of the reference nets: elektronn against PyTorch (CPU) in the same run.

Workloads (see ``_nets.py``): the 3-D neuro net on a (7, 127, 127) patch, batch 1, and the
MNIST net with batch 64; both NLL and SGD with momentum 0.9.  elektronn's step is
``MixedConvNN.trainingStep(data, labels, mode="SGD")``, PyTorch's is zero_grad, forward,
cross-entropy, backward and ``SGD.step`` in eager mode::

    python benchmarks/bench_train.py [--quick] [--repeats N] [--json PATH]

Times are medians of ``--repeats`` steps after two warm-up steps, elektronn's and PyTorch's
calls interleaved.  The MNIST step is also timed with each library alone in a fresh process
(``alone`` in its row: interleaved in one process, the two libraries' thread pools slow each
other down on small steps).
GFLOP/s counts three forward passes per step (FLOPs from the layer shapes)
and is compared with a float32 matmul measured in the same run.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _nets  # noqa: E402

#: name -> (input, batch) ; input: the (z, x, y) patch for "neuro", None for "mnist"
WORKLOADS = {"neuro": ((7, 127, 127), 1), "mnist": (None, 64)}
QUICK_WORKLOADS = {"neuro": ((5, 30, 30), 1), "mnist": (None, 8)}
MATMUL_N, QUICK_MATMUL_N = 2048, 256


def neuro_case(patch, torch, seed=0):
    """The neuro net's step callables and its FLOPs per step."""
    cnn = _nets.neuro_elektronn(patch, mfp=False, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random(cnn.input_shape, dtype=np.float32)  # (1, z, 1, x, y)
    out = tuple(cnn.output_shape[2:])
    y = rng.integers(0, 2, (1, *out)).astype(np.int16)
    fns = [lambda: cnn.trainingStep(x, y, mode="SGD")]
    if torch is not None:
        net = _nets.neuro_torch(torch)
        fns.append(_nets.torch_train_step(torch, net, x.transpose(0, 2, 1, 3, 4).copy(), y))
    patch = tuple(int(s) for s in cnn.patch_size)
    return fns, 3 * _nets.neuro_forward_flop(patch), {"input_zxy": list(patch), "output": out}


def mnist_case(batch, torch, seed=0):
    """The MNIST net's step callables and its FLOPs per step."""
    cnn = _nets.mnist_elektronn(batch, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int16)
    fns = [lambda: cnn.trainingStep(x, y, mode="SGD")]
    if torch is not None:
        fns.append(_nets.torch_train_step(torch, _nets.mnist_torch(torch), x, y))
    return fns, 3 * _nets.mnist_forward_flop(batch), {"input": [1, 28, 28]}


def alone_worker(who, batch, repeats):
    """In a fresh process: the median ms of ``repeats`` MNIST steps of one library."""
    torch = _common.import_torch() if who == "torch" else None
    fns, _, _ = mnist_case(batch, torch)
    (ms,) = _common.median_ms(fns[-1:], repeats)
    return {"who": who, "ms": ms}


def run_alone(batch, repeats):
    """MNIST step times of elektronn and PyTorch, each in its own fresh process."""
    out = {}
    for who in ("elektronn", "torch"):
        args = [Path(__file__).resolve(), "--worker", json.dumps([who, batch, repeats])]
        rec = _common.run_worker(args, _common.compile_env())
        if rec["status"] != "ok":
            raise RuntimeError(f"bench_train worker failed: {rec}")
        out[f"{who}_ms"] = rec["ms"]
    out["ratio"] = out["torch_ms"] / out["elektronn_ms"]
    return out


def run_workload(name, spec, repeats, torch, peak):
    """Time one workload; return its row."""
    patch, batch = spec
    fns, flop, extra = neuro_case(patch, torch) if name == "neuro" else mnist_case(batch, torch)
    ms = _common.median_ms(fns, repeats)
    row = {"workload": name, "batch": batch, **extra, "gflop": flop / 1e9}
    row.update(elektronn_ms=ms[0], elektronn_gflops=flop / ms[0] / 1e6)
    row["elektronn_pct_peak"] = 100 * row["elektronn_gflops"] / peak
    if torch is not None:
        row.update(torch_ms=ms[1], torch_gflops=flop / ms[1] / 1e6)
        row["torch_pct_peak"] = 100 * row["torch_gflops"] / peak
        row["ratio"] = row["torch_ms"] / row["elektronn_ms"]
    return row


def format_table(rows):
    """The rows as a fixed-width text table (ratio > 1: elektronn is faster)."""
    head = ("workload", "batch", "GFLOP", "elektronn ms", "GFLOP/s", "torch ms", "GFLOP/s",
            "ratio", "% peak")
    lines = ["{:<9}{:>6}{:>7}{:>13}{:>9}{:>10}{:>9}{:>7}{:>8}".format(*head)]
    for r in rows:
        t_ms, t_gf, ratio = _common.peer_cells(r, 1)
        lines.append(
            f"{r['workload']:<9}{r['batch']:>6}{r['gflop']:>7.2f}{r['elektronn_ms']:>13.1f}"
            f"{r['elektronn_gflops']:>9.1f}{t_ms:>10}{t_gf:>9}{ratio:>7}"
            f"{r['elektronn_pct_peak']:>8.1f}"
        )
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps (default 10, quick 2)")
    p.add_argument("--json", default="bench_results/bench_train.json", help="output JSON path")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    """Run the benchmark, print the table and write the JSON; return the result dict."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(alone_worker(*json.loads(args.worker))))
        return {}
    repeats = args.repeats or (2 if args.quick else 10)
    torch = None if args.no_torch else _common.import_torch()
    info = _common.machine_info(torch)
    n = QUICK_MATMUL_N if args.quick else MATMUL_N
    mm_ms, peak = _common.matmul_peak(n, repeats)
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    rows = [run_workload(name, spec, repeats, torch, peak) for name, spec in workloads.items()]
    if torch is not None:
        mnist = next(r for r in rows if r["workload"] == "mnist")
        mnist["alone"] = run_alone(mnist["batch"], max(repeats, 20))
    info["loadavg_end"] = _common.loadavg()
    result = {
        "machine": info,
        "config": {"repeats": repeats, "quick": args.quick},
        "matmul": {"n": n, "ms": mm_ms, "gflops": peak},
        "rows": rows,
    }
    print(f"training steps, mode {info['elektronn_mode']}, {info['cores']} cores, "
          f"load {info['loadavg']}, medians of {repeats}")
    print(f"float32 matmul {n}^3: {mm_ms:.1f} ms, {peak:.1f} GFLOP/s (peak)")
    print(format_table(rows))
    for r in rows:
        if "alone" in r:
            a = r["alone"]
            print(f"{r['workload']} alone, each library in a fresh process: elektronn "
                  f"{a['elektronn_ms']:.1f} ms, "
                  f"torch {a['torch_ms']:.1f} ms, ratio {a['ratio']:.2f}")
    print("ratio = torch ms / elektronn ms (> 1: elektronn faster); % peak: elektronn")
    _common.write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
