"""Out-of-core prediction (``predict_volume``): overhead, dask workers, memory, per-block cost.

Four measurements with the 3-D neuro net (MFP, the prediction patch of ``bench_predict``):

overhead
    ``predict_volume`` from a zarr volume on disk to a zarr output against in-memory
    ``predictDense`` of the same volume, interleaved (median of ``--repeats``).  Blocks are the
    tiles of ``predictDense`` on this volume (those of the twin it builds: the forward passes
    are the same; each block reads its halo and writes its chunk) and, second, the default
    block shape.
workers
    The same prediction on a dask ``LocalCluster`` of 1 worker against 2 workers, one thread
    and one OpenMP thread per worker (and 1 worker with the default, all cores' OpenMP threads),
    interleaved.  Each worker unpickles and compiles the net once (from the compile cache) and
    reuses it in later runs: the first run of each setup is timed apart (``first_run_s``).
memory
    Peak memory of a serial ``predict_volume`` at 1x and 4x the volume (2x in x and y), each in
    a fresh process (tracemalloc peak and peak-RSS growth while predicting): bounded by the
    block, the peaks should be the same.
per_block
    The cost of one block apart from the net: a trivial net (one 1x1x1 convolution, one
    forward pass per block) on many small blocks, serial and on the 2-worker cluster.

Run::

    python benchmarks/bench_volume.py [--quick] [--repeats N] [--json PATH]

The machine may be shared: the load averages are in the JSON; compare only numbers measured
in the same run.
"""

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _nets  # noqa: E402

PATCH, QUICK_PATCH = (22, 118, 118), (7, 62, 62)
VOLUME, QUICK_VOLUME = (1, 200, 200, 40), (1, 80, 80, 12)
TRIVIAL_VOLUME, QUICK_TRIVIAL_VOLUME = (1, 160, 160, 40), (1, 64, 64, 16)
TRIVIAL_BLOCK = (16, 16, 10)
MB = 2**20


def neuro(patch):
    cnn = _nets.neuro_elektronn(patch, mfp=True)
    warm = np.zeros((1, *(int(s) for s in np.array(cnn.patch_size)[[1, 2, 0]])), np.float32)
    cnn.predictDense(warm, show_progress=False)  # compile
    return cnn


def trivial_net():
    """One 1x1x1 convolution to 2 classes on a patch of one block: the blocks' cost without
    the net's (one cheap forward pass per block)."""
    from elektronn.net.convnet import MixedConvNN

    x, y, z = TRIVIAL_BLOCK
    cnn = MixedConvNN((z, x, y), input_depth=1, batch_size=1, seed=0)
    cnn.addConvLayer(2, 1, pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions("nll", only_forward=True)
    cnn.predictDense(np.zeros((1, x, y, z), np.float32), offset=(0, 0, 0), show_progress=False)
    return cnn


def write_volume(path, shape, seed=0):
    """A random float32 zarr volume, written chunk by chunk (never whole in memory)."""
    import zarr

    arr = zarr.create_array(str(path), shape=shape, chunks=(1, 64, 64, 16), dtype="float32",
                            overwrite=True)
    rng = np.random.default_rng(seed)
    for x in range(0, shape[1], 64):
        arr[:, x:x + 64] = rng.random((shape[0], min(64, shape[1] - x), *shape[2:]),
                                      dtype=np.float32)
    return arr


def tile_block(cnn, raw=None):
    """The outputs of one predictDense tile in (x, y, z): the aligned block.

    With a volume ``raw``, the tile of predictDense on it: that of the twin it builds (see
    ``elektronn.net.prednet``), else the net's own.
    """
    from elektronn.net.prediction import _NetGeometry

    if raw is not None:
        cnn.__dict__.pop("_prediction_twins", None)
        cnn.predictDense(raw, show_progress=False)
        twins = cnn.__dict__.get("_prediction_twins")
        if twins:
            cnn = next(reversed(twins.values()))
    return tuple(a.tile_out for a in _NetGeometry.from_cnn(cnn).axes)


# --- overhead -----------------------------------------------------------------------------------
def run_overhead(cnn, tmp, volume, repeats):
    from elektronn.net.volume import predict_volume

    src = write_volume(tmp / "raw.zarr", volume)
    raw = src[:]
    block = tile_block(cnn, raw)
    infos = {}

    def dense():
        return cnn.predictDense(raw, show_progress=False)

    def blockwise(block_shape, key):
        def run():
            infos[key] = predict_volume(cnn, str(tmp / "raw.zarr"), str(tmp / f"{key}.zarr"),
                                        block_shape=block_shape, overwrite=True,
                                        show_progress=False)
        return run

    ms = _common.median_ms([dense, blockwise(block, "tiles"), blockwise(None, "default")],
                           repeats, warmup=1)
    import zarr
    want = dense()
    same = {k: bool(np.array_equal(zarr.open_array(str(tmp / f"{k}.zarr"))[:], want))
            for k in ("tiles", "default")}
    voxels = int(np.prod(want.shape[1:]))
    rec = {"volume": list(volume), "output": list(want.shape), "voxels": voxels,
           "predictDense_s": ms[0] / 1e3, "predictDense_mvox_s": voxels / ms[0] / 1e3}
    for key, t in zip(("tiles", "default"), ms[1:], strict=True):
        rec[key] = {"block": list(infos[key]["block_shape"]), "blocks": infos[key]["blocks"],
                    "seconds": t / 1e3, "mvox_s": voxels / t / 1e3,
                    "overhead_pct": 100 * (t / ms[0] - 1), "identical": same[key]}
    return rec


# --- workers ------------------------------------------------------------------------------------
def run_workers(cnn, tmp, volume, repeats):
    import zarr
    from distributed import Client, LocalCluster

    from elektronn.net.volume import predict_volume

    write_volume(tmp / "w_raw.zarr", volume)
    block = tile_block(cnn)
    setups = {"1 worker, 1 thread": (1, 1), "2 workers, 1 thread each": (2, 1),
              "1 worker, all cores' threads": (1, None)}
    clusters = {}
    try:
        for name, (n, _) in setups.items():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)
            clusters[name] = (cluster, Client(cluster))
        times = {name: [] for name in setups}
        first = {}

        def run(name):
            t0 = time.perf_counter()
            info = predict_volume(cnn, str(tmp / "w_raw.zarr"), str(tmp / "w_out.zarr"),
                                  block_shape=block, client=clusters[name][1], overwrite=True,
                                  show_progress=False, threads_per_worker=setups[name][1])
            return info, time.perf_counter() - t0

        for name in setups:  # every worker unpickles and compiles the net
            first[name] = run(name)[1]
        for _ in range(repeats):
            for name in setups:
                info, seconds = run(name)
                times[name].append(seconds)
        want = cnn.predictDense(zarr.open_array(str(tmp / "w_raw.zarr"))[:], show_progress=False)
        identical = bool(np.array_equal(zarr.open_array(str(tmp / "w_out.zarr"))[:], want))
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    voxels = int(np.prod(want.shape[1:]))
    rec = {"volume": list(volume), "block": list(block), "blocks": info["blocks"],
           "identical": identical, "setups": {}}
    for name in setups:
        t = float(np.median(times[name]))
        rec["setups"][name] = {"seconds": t, "mvox_s": voxels / t / 1e6,
                               "first_run_s": first[name]}
    one, two = (rec["setups"][k]["seconds"] for k in list(setups)[:2])
    rec["speedup_2_vs_1"] = one / two
    return rec


# --- memory (fresh processes) -------------------------------------------------------------------
def memory_worker(patch, volume, block):
    """In a fresh process: write the volume to zarr, predict it blockwise once; the peaks."""
    from elektronn.net.volume import predict_volume

    cnn = neuro(patch)
    tmp = Path(tempfile.mkdtemp(prefix="elektronn_bench_volume_"))
    try:
        write_volume(tmp / "raw.zarr", volume)
        predict_volume(cnn, str(tmp / "raw.zarr"), str(tmp / "warm.zarr"), block_shape=block,
                       show_progress=False)  # first blocks: allocator pools, zarr codecs
        exact = _common.peak_rss_reset()
        rss0 = _common.rss_kib("VmRSS")
        tracemalloc.start()
        t0 = time.perf_counter()
        info = predict_volume(cnn, str(tmp / "raw.zarr"), str(tmp / "out.zarr"),
                              block_shape=block, show_progress=False)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        growth = (_common.rss_kib("VmHWM") - rss0) if exact else float("nan")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out_mb = info["shape"][0] * int(np.prod(info["shape"][1:])) * 4 / MB
    return {"volume": list(volume), "blocks": info["blocks"], "block": list(info["block_shape"]),
            "seconds": seconds, "output_mb": out_mb, "input_mb": int(np.prod(volume)) * 4 / MB,
            "tracemalloc_peak_mb": peak / MB, "rss_growth_mb": growth / 1024,
            "rss_exact": exact}


def run_memory(patch, volume, block, timeout):
    big = (volume[0], 2 * volume[1], 2 * volume[2], volume[3])
    out = []
    for v in (volume, big):
        args = [Path(__file__).resolve(), "--worker", json.dumps([list(patch), list(v),
                                                                  list(block)])]
        rec = _common.run_worker(args, _common.compile_env(), timeout)
        if rec["status"] != "ok":
            raise RuntimeError(f"memory worker failed: {rec}")
        out.append(rec)
    return out


# --- per-block overhead -------------------------------------------------------------------------
def run_per_block(tmp, volume, repeats):
    from distributed import Client, LocalCluster

    from elektronn.net.volume import predict_volume

    cnn = trivial_net()
    write_volume(tmp / "t_raw.zarr", volume)
    rec = {"volume": list(volume), "block": list(TRIVIAL_BLOCK)}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        for name, c in (("serial", None), ("2 workers", client)):
            times = []
            for _ in range(repeats + 1):  # the first run compiles the net on the workers
                t0 = time.perf_counter()
                info = predict_volume(cnn, str(tmp / "t_raw.zarr"), str(tmp / "t_out.zarr"),
                                      block_shape=TRIVIAL_BLOCK, client=c, overwrite=True,
                                      show_progress=False, offset=(0, 0, 0))
                times.append(time.perf_counter() - t0)
            t = float(np.median(times[1:]))
            rec[name] = {"blocks": info["blocks"], "seconds": t,
                         "ms_per_block": 1e3 * t / info["blocks"]}
    return rec


# --- main ---------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 2)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per memory process")
    p.add_argument("--json", default="bench_results/bench_volume.json", help="output JSON path")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def format_table(r):
    o, w, m, b = r["overhead"], r["workers"], r["memory"], r["per_block"]
    lines = [f"overhead, volume {tuple(o['volume'])} -> {tuple(o['output'])}: predictDense "
             f"{o['predictDense_s']:.2f} s ({o['predictDense_mvox_s']:.3f} MVox/s)"]
    for key in ("tiles", "default"):
        k = o[key]
        lines.append(f"  predict_volume, {k['blocks']} blocks of {tuple(k['block'])}: "
                     f"{k['seconds']:.2f} s, overhead {k['overhead_pct']:+.1f}%, identical "
                     f"{k['identical']}")
    lines.append(f"workers, {w['blocks']} blocks of {tuple(w['block'])}, identical "
                 f"{w['identical']}:")
    for name, s in w["setups"].items():
        lines.append(f"  {name:<30} {s['seconds']:7.2f} s  {s['mvox_s']:.3f} MVox/s  "
                     f"(first run, compiling: {s['first_run_s']:.2f} s)")
    lines.append(f"  speedup 2 workers vs 1: {w['speedup_2_vs_1']:.2f}x")
    for rec in m:
        lines.append(f"memory {tuple(rec['volume'])}: {rec['blocks']} blocks, output "
                     f"{rec['output_mb']:.1f} MB, tracemalloc peak "
                     f"{rec['tracemalloc_peak_mb']:.1f} MB, peak RSS growth "
                     f"{rec['rss_growth_mb']:.1f} MB")
    for name in ("serial", "2 workers"):
        s = b[name]
        lines.append(f"per block (trivial net, {s['blocks']} blocks of {tuple(b['block'])}), "
                     f"{name}: {s['ms_per_block']:.1f} ms")
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark, print the results and write the JSON; return the result dict."""
    args = parse_args(argv)
    if args.worker:
        patch, volume, block = json.loads(args.worker)
        print(json.dumps(memory_worker(tuple(patch), tuple(volume), tuple(block))))
        return {}
    repeats = args.repeats or (1 if args.quick else 2)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    patch, volume = (QUICK_PATCH, QUICK_VOLUME) if args.quick else (PATCH, VOLUME)
    info = _common.machine_info(None)
    load0 = _common.loadavg()
    cnn = neuro(patch)
    tmp = Path(tempfile.mkdtemp(prefix="elektronn_bench_volume_"))
    try:
        result = {
            "machine": dict(info, loadavg_start=load0),
            "config": {"quick": args.quick, "repeats": repeats, "patch": list(patch),
                       "volume": list(volume)},
            "overhead": run_overhead(cnn, tmp, volume, repeats),
            "workers": run_workers(cnn, tmp, volume, repeats),
            "memory": run_memory(patch, volume, tile_block(cnn), args.timeout),
            "per_block": run_per_block(tmp, QUICK_TRIVIAL_VOLUME if args.quick
                                       else TRIVIAL_VOLUME, repeats),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = result["memory"]
    result["memory_check"] = {
        "peak_ratio": large["tracemalloc_peak_mb"] / small["tracemalloc_peak_mb"],
        "same_peak": large["tracemalloc_peak_mb"] <= 1.1 * small["tracemalloc_peak_mb"] + 4,
    }
    result["machine"]["loadavg_end"] = _common.loadavg()
    print(f"predict_volume, mode {info['elektronn_mode']}, {info['cores']} cores, load at start "
          f"{load0}, at end {result['machine']['loadavg_end']}")
    print(format_table(result))
    _common.write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
