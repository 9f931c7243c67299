"""Speed of elektronn's warping augmentation: patches per second for the neuro_3d patch size.

Warps 3-D patches of ``PATCH`` (z, x, y) = (7, 127, 127), the input of the original's
``neuro_3d`` example, as ``CNNData`` does with ``warp_on``: every patch gets fresh random
parameters from ``getWarpParams`` and is cut at the required (larger) size from a random
volume. Cases: ``warp3dFast`` with 1 and 2 channels, and ``warp3dJoint`` of 1 channel plus
int16 labels inset by the example's offset (2, 15, 15)::

    python benchmarks/bench_warping.py [--quick] [--repeats N] [--json PATH]

Each case runs ``--repeats`` rounds of ``BATCH`` patches; the rate is the median over rounds.
The parameter draws and the cut are part of the timed loop, as in training.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine_info, write_json  # noqa: E402

PATCH = (7, 127, 127)
LABEL_OFFSET = (2, 15, 15)
BATCH, QUICK_BATCH = 20, 2
CASES = (("warp3dFast", 1), ("warp3dFast", 2), ("warp3dJoint", 1))


def make_case(kind, channels, rng):
    """A zero-argument callable that cuts and warps one random patch."""
    from elektronn.training.warping import getWarpParams, warp3dFast, warp3dJoint

    big = getWarpParams(PATCH, rng=np.random.default_rng(0))[0] + 40  # room for any draw
    volume = rng.random((big[0], channels, big[1], big[2]), dtype=np.float32)
    labels = rng.integers(0, 2, size=(big[0], big[1], big[2])).astype(np.int16)

    def run():
        req, rot, shear, scale, stretch, twist = getWarpParams(PATCH, rng=rng)
        z, x, y = (int(rng.integers(0, b - r + 1)) for b, r in zip(big, req, strict=True))
        img = volume[z:z + req[0], :, x:x + req[1], y:y + req[2]]
        if kind == "warp3dFast":
            return warp3dFast(img, PATCH, rot, shear, scale, stretch, twist)
        lab = labels[tuple(slice(s + o, s + r - o)
                           for s, r, o in zip((z, x, y), req, LABEL_OFFSET, strict=True))]
        return warp3dJoint(img, lab, PATCH, rot, shear, scale, stretch, twist)

    return run


def patches_per_second(fn, batch, repeats):
    """Median rate over ``repeats`` rounds of ``batch`` calls, after one warm-up call."""
    fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        rates.append(batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few patches (a smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    p.add_argument("--json", default="bench_results/bench_warping.json", help="output JSON path")
    return p.parse_args(argv)


def main(argv=None):
    """Run the benchmark, print the rates and write the JSON; return the result dict."""
    args = parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    batch = QUICK_BATCH if args.quick else BATCH
    info = machine_info(None)
    rows = []
    for kind, channels in CASES:
        rate = patches_per_second(make_case(kind, channels, np.random.default_rng(1)),
                                  batch, repeats)
        rows.append({"function": kind, "channels": channels, "patch": list(PATCH),
                     "patches_per_s": rate, "ms_per_patch": 1e3 / rate})
    info["loadavg_end"] = loadavg()
    result = {
        "machine": info,
        "config": {"repeats": repeats, "batch": batch, "quick": args.quick},
        "rows": rows,
    }
    print(f"{info['cores']} cores, load {info['loadavg']}, medians of {repeats} rounds "
          f"of {batch} random warps of {PATCH}")
    for r in rows:
        print(f"{r['function']:<12} ch={r['channels']}  {r['patches_per_s']:8.1f} patches/s"
              f"  {r['ms_per_patch']:6.2f} ms")
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
