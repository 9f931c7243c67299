"""Dense prediction speed and memory of the 3-D neuro net: elektronn's MFP against PyTorch.

elektronn: the neuro net with max-fragment pooling in its two pooling layers (input size from
``CNNCalculator`` for a desired (22, 118, 118) patch) and ``predictDense`` of a
``(1, 200, 200, 40)`` float32 volume (ch, x, y, z).  The prediction patch is the one a user
would pick for this volume (e.g. with ``elektronn-profile``): its (18, 88, 88) output tiles
cover the (36, 170, 170) map with little overlap.  The training patch (7, 127, 127) alone
would predict about 1.7x slower: each of its (3, 96, 96) outputs needs a (7, 126, 126) input.
PyTorch: the dense equivalent network (stride-1 pooling, later convolutions dilated by the
accumulated stride) applied to the whole volume under ``torch.no_grad`` (softmax included);
both give a (2, 170, 170, 36) map.  The same volume is also predicted with the net built for
the training patch (7, 127, 127).  ``predictDense`` may predict with a twin of either net (MFP
everywhere, a larger tile: :mod:`elektronn.net.prednet`), which its first call on the volume
builds::

    python benchmarks/bench_predict.py [--quick] [--repeats N] [--scale S] [--json PATH]

Each elektronn measurement runs in a fresh process (one per volume size): the net is compiled
and warmed up on a one-patch volume, the volume is predicted once (timed apart as
``first_call_s``: it builds the twin and touches fresh memory), the peak-RSS mark is reset
(``/proc/self/clear_refs``; ``ru_maxrss`` where that is impossible), the volume is predicted
again while ``tracemalloc`` follows the allocations, and the process reports that call's time,
the peak RSS growth and the tracemalloc peak (PyTorch's time is likewise the median of calls
after a first one).  The second size is ``--scale`` (default 8) times the voxels (2x per axis
for 8): predictDense's memory is bounded by its tile, so each peak should exceed the output by
at most the tile's memory budget (``elektronn.defaults.PREDICT_TWIN_BYTES``), whatever the
volume size.  The check uses the tracemalloc peaks (what was allocated):
the RSS growth also depends on how much freed memory the allocator keeps from the warm-up
(elektronn keeps it, see ``elektronn.backend.keep_freed_memory``).  PyTorch's time is the
median of ``--repeats`` calls.  GFLOP/s counts the FLOPs per output voxel of the dense net
(191 kFLOP).
"""

import argparse
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _nets  # noqa: E402

from elektronn import defaults  # noqa: E402

PATCH, QUICK_PATCH = (22, 118, 118), (7, 62, 62)
TRAIN_PATCH, QUICK_TRAIN_PATCH = (7, 127, 127), (5, 30, 30)  # the net's training patch
VOLUME, QUICK_VOLUME = (1, 200, 200, 40), (1, 64, 64, 8)
MATMUL_N, QUICK_MATMUL_N = 2048, 256
MB = 2**20


def scaled(volume, scale):
    """``volume`` (ch, x, y, z) with about ``scale`` times the voxels (each axis by scale^1/3)."""
    f = scale ** (1 / 3)
    return (volume[0], *(int(round(s * f)) for s in volume[1:]))


def worker(patch, volume):
    """In a fresh process: compile, warm up, predict ``volume`` twice; return the record of the
    second call (and the time of the first, which builds predictDense's twin)."""
    t0 = time.perf_counter()
    cnn = _nets.neuro_elektronn(patch, mfp=True)
    warm = np.zeros((1, *(int(s) for s in np.array(cnn.patch_size)[[1, 2, 0]])), np.float32)
    cnn.predictDense(warm, show_progress=False)
    compile_s = time.perf_counter() - t0
    raw = np.random.default_rng(0).random(volume, dtype=np.float32)
    t0 = time.perf_counter()
    cnn.predictDense(raw, show_progress=False)
    first_s = time.perf_counter() - t0
    exact = _common.peak_rss_reset()
    rss0 = _common.rss_kib("VmRSS")
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    out = cnn.predictDense(raw, show_progress=False)
    seconds = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if exact:
        growth = _common.rss_kib("VmHWM") - rss0
    else:  # an upper bound when the mark was set before (e.g. by the compilation)
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - min(rss0, maxrss0)
    return {
        "volume": list(volume),
        "input_zxy": [int(s) for s in cnn.patch_size],
        "output": list(out.shape),
        "voxels": int(np.prod(out.shape[1:])),
        "seconds": seconds,
        "first_call_s": first_s,
        "compile_and_warmup_s": compile_s,
        "input_mb": raw.nbytes / MB,
        "output_mb": out.nbytes / MB,
        "rss_growth_mb": growth / 1024,
        "rss_exact": exact,
        "tracemalloc_peak_mb": traced_peak / MB,
    }


def run_elektronn(patch, volume, timeout):
    """:func:`worker` in a fresh process (the caller's compile cache)."""
    args = [Path(__file__).resolve(), "--worker", json.dumps([list(patch), list(volume)])]
    rec = _common.run_worker(args, _common.compile_env(), timeout)
    if rec["status"] != "ok":
        raise RuntimeError(f"elektronn prediction worker failed: {rec}")
    return rec


def run_torch(torch, volume, repeats):
    """Median seconds of the dense torch net on the whole volume; and the output shape."""
    net = _nets.neuro_torch(torch, dense=True).eval().to(_common.TORCH_DEVICE)
    raw = np.random.default_rng(0).random(volume, dtype=np.float32)
    x = torch.from_numpy(raw.transpose(0, 3, 1, 2)[None].copy())  # (1, ch, z, x, y)
    x = x.to(_common.TORCH_DEVICE)

    def predict():
        with torch.no_grad():
            out = torch.softmax(net(x), dim=1).cpu()  # the map in host memory, as elektronn's
        _common.torch_sync(torch)
        return out

    shape = tuple(predict().shape)
    (ms,) = _common.median_ms([predict], repeats, warmup=0)
    n, ch, z, xx, yy = shape
    return ms / 1e3, [ch, xx, yy, z]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="torch calls (default 3, quick 1)")
    p.add_argument("--scale", type=float, default=8, help="voxel factor of the memory check")
    p.add_argument("--timeout", type=float, default=600, help="seconds per elektronn process")
    p.add_argument("--json", default="bench_results/bench_predict.json", help="output JSON path")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def format_table(result):
    """The result as text: speed table, then the memory lines."""
    lines = ["{:<10}{:>22}{:>10}{:>9}{:>9}{:>8}".format(
        "", "output", "seconds", "MVox/s", "GFLOP/s", "% peak")]
    for who in ("elektronn", "elektronn_train_patch", "torch"):
        r = result.get(who)
        if r:
            label = "  (7x127²)" if who == "elektronn_train_patch" else who
            lines.append(f"{label:<10}{str(tuple(r['output'])):>22}{r['seconds']:>10.2f}"
                         f"{r['mvox_s']:>9.3f}{r['gflops']:>9.1f}{r['pct_peak']:>8.1f}")
    lines.append("first call on the volume (builds predictDense's twin): "
                 f"{result['elektronn']['first_call_s']:.2f} s, with the training patch "
                 f"{result['elektronn_train_patch']['first_call_s']:.2f} s")
    if "ratio" in result:
        lines.append(f"ratio (elektronn MVox/s / torch MVox/s): {result['ratio']:.2f}, with the "
                     f"training patch {result['ratio_train_patch']:.2f}")
    for r in result["memory"]:
        lines.append(
            f"memory {tuple(r['volume'])}: output {r['output_mb']:.1f} MB, peak RSS growth "
            f"{r['rss_growth_mb']:.1f} MB, tracemalloc peak {r['tracemalloc_peak_mb']:.1f} MB")
    m = result["memory_check"]
    lines.append(f"peak difference {m['peak_diff_mb']:.1f} MB vs output difference "
                 f"{m['output_diff_mb']:.1f} MB; each peak minus its output within the "
                 f"tile budget of {m['budget_mb']:.0f} MB: {m['bounded']}")
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark, print the table and write the JSON; return the result dict."""
    args = parse_args(argv)
    if args.worker:
        patch, volume = json.loads(args.worker)
        print(json.dumps(worker(tuple(patch), tuple(volume))))
        return {}
    repeats = args.repeats or (1 if args.quick else 3)
    patch, volume = (QUICK_PATCH, QUICK_VOLUME) if args.quick else (PATCH, VOLUME)
    torch = None if args.no_torch else _common.import_torch()
    info = _common.machine_info(torch)
    n = QUICK_MATMUL_N if args.quick else MATMUL_N
    mm_ms, peak = _common.matmul_peak(n, 3 if args.quick else 10)
    flop_vox = _nets.neuro_dense_flop_per_voxel()

    def speed(seconds, output):
        vox = int(np.prod(output[1:]))
        gflops = vox * flop_vox / seconds / 1e9
        return {"output": list(output), "seconds": seconds, "mvox_s": vox / seconds / 1e6,
                "gflops": gflops, "pct_peak": 100 * gflops / peak}

    memory = [run_elektronn(patch, v, args.timeout) for v in (volume, scaled(volume, args.scale))]
    at_train = run_elektronn(QUICK_TRAIN_PATCH if args.quick else TRAIN_PATCH, volume,
                             args.timeout)
    result = {
        "machine": info,
        "config": {"quick": args.quick, "repeats": repeats, "patch": list(patch),
                   "volume": list(volume), "scale": args.scale},
        "matmul": {"n": n, "ms": mm_ms, "gflops": peak},
        "flop_per_voxel": flop_vox,
        "elektronn": speed(memory[0]["seconds"], memory[0]["output"]),
        "memory": memory,
    }
    result["elektronn"]["compile_and_warmup_s"] = memory[0]["compile_and_warmup_s"]
    result["elektronn"]["first_call_s"] = memory[0]["first_call_s"]
    result["elektronn_train_patch"] = dict(speed(at_train["seconds"], at_train["output"]),
                                           input_zxy=at_train["input_zxy"],
                                           first_call_s=at_train["first_call_s"])
    if torch is not None:
        seconds, shape = run_torch(torch, volume, repeats)
        result["torch"] = speed(seconds, shape)
        result["ratio"] = result["elektronn"]["mvox_s"] / result["torch"]["mvox_s"]
        result["ratio_train_patch"] = (result["elektronn_train_patch"]["mvox_s"]
                                       / result["torch"]["mvox_s"])
        result["same_output_shape"] = shape == memory[0]["output"]
    small, large = memory
    out_diff = large["output_mb"] - small["output_mb"]
    peak_diff = large["tracemalloc_peak_mb"] - small["tracemalloc_peak_mb"]
    budget = defaults.PREDICT_TWIN_BYTES / MB
    result["memory_check"] = {
        "output_diff_mb": out_diff,
        "peak_diff_mb": peak_diff,
        "rss_growth_diff_mb": large["rss_growth_mb"] - small["rss_growth_mb"],
        "budget_mb": budget,
        # apart from the output, at most the tile's budget (slack: per-tile bookkeeping)
        "bounded": all(m["tracemalloc_peak_mb"] - m["output_mb"] <= 1.1 * budget + 16
                       for m in memory),
    }
    info["loadavg_end"] = _common.loadavg()
    print(f"dense prediction, mode {info['elektronn_mode']}, {info['cores']} cores, "
          f"load {info['loadavg']}, "
          f"{flop_vox / 1e3:.1f} kFLOP per output voxel")
    print(f"float32 matmul {n}^3: {mm_ms:.1f} ms, {peak:.1f} GFLOP/s (peak)")
    print(format_table(result))
    _common.write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
