"""Speed of elektronn's convolution Ops against PyTorch and the float32 matmul peak.

Times two layers (see ``LAYERS``), forward and forward+backward, with the Ops compiled
through PyTensor in one of elektronn's modes, next to the same layer in PyTorch (when
importable) and a numpy float32 matrix product measured in the same run::

    python benchmarks/bench_ops.py [--quick] [--repeats N] [--mode numpy|c|jax] [--json PATH]

Forward+backward means the output and the gradients with respect to input and weights of
``sum(conv(x, w) * G)`` for a fixed random ``G``.  FLOPs are counted as
``2 * bs * oc * ic * prod(kernel) * prod(out)`` for a forward pass and three times that for
forward+backward.  Times are medians of ``--repeats`` calls after a warm-up.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    import_torch,
    machine_info,
    matmul_peak,
    median_ms,
    peer_cells,
    write_json,
)

#: name -> (batch, in_channels, out_channels, spatial input shape, kernel shape)
LAYERS = {
    "3d": (1, 16, 32, (40, 40, 40), (3, 3, 3)),
    "2d": (32, 16, 32, (64, 64), (3, 3)),
}
QUICK_LAYERS = {
    "3d": (1, 2, 3, (8, 8, 8), (3, 3, 3)),
    "2d": (2, 2, 3, (12, 12), (3, 3)),
}
MATMUL_N, QUICK_MATMUL_N = 2048, 256
PASSES = ("fwd", "fwd+bwd")


def layer_flop(bs, ic, oc, spatial, kernel, pass_):
    """FLOPs of one call of ``pass_`` ("fwd" or "fwd+bwd") on a valid convolution layer."""
    out = [s - k + 1 for s, k in zip(spatial, kernel, strict=True)]
    fwd = 2 * bs * oc * ic * int(np.prod(kernel)) * int(np.prod(out))
    return fwd if pass_ == "fwd" else 3 * fwd


def layer_data(bs, ic, oc, spatial, kernel, seed=0):
    """Random float32 input, filters and output cotangent ``G`` of one layer."""
    rng = np.random.default_rng(seed)
    out = tuple(s - k + 1 for s, k in zip(spatial, kernel, strict=True))
    x = rng.standard_normal((bs, ic, *spatial), dtype=np.float32)
    w = rng.standard_normal((oc, ic, *kernel), dtype=np.float32) / np.float32(ic)
    g = rng.standard_normal((bs, oc, *out), dtype=np.float32)
    return x, w, g


def elektronn_fn(x, w, g, pass_, mode):
    """Compile the layer with elektronn's ``conv``; return a zero-argument callable."""
    import pytensor
    import pytensor.tensor as pt

    from elektronn.backend import get_mode
    from elektronn.ops import conv

    xv = pt.tensor("x", dtype="float32", shape=x.shape)
    wv = pt.tensor("w", dtype="float32", shape=w.shape)
    y = conv(xv, wv)
    outputs = [y]
    if pass_ == "fwd+bwd":
        # y is an output too: the gradients alone would not need the forward pass
        outputs += pytensor.grad((y * pt.constant(g)).sum(), [xv, wv])
    f = pytensor.function([xv, wv], outputs, mode=get_mode(mode))
    if mode == "jax":  # JAX dispatches asynchronously: time until the results exist
        import jax

        return lambda: jax.block_until_ready(f(x, w))
    return lambda: f(x, w)


def torch_fn(x, w, g, pass_):
    """The layer in PyTorch eager mode (``conv2d``/``conv3d``); a zero-argument callable."""
    import torch

    conv = {4: torch.nn.functional.conv2d, 5: torch.nn.functional.conv3d}[x.ndim]
    xt, wt, gt = (torch.from_numpy(a.copy()) for a in (x, w, g))
    if pass_ == "fwd":

        def run():
            with torch.no_grad():
                return conv(xt, wt)

        return run
    xt.requires_grad_(True)
    wt.requires_grad_(True)

    def run():
        xt.grad = wt.grad = None
        conv(xt, wt).backward(gt)

    return run


def run_layer(name, spec, pass_, mode, repeats, torch, peak):
    """Time one (layer, pass) row; return it as a dict."""
    bs, ic, oc, spatial, kernel = spec
    x, w, g = layer_data(*spec)
    flop = layer_flop(*spec, pass_)
    row = {
        "layer": name,
        "pass": pass_,
        "batch": bs,
        "in_channels": ic,
        "out_channels": oc,
        "input": list(spatial),
        "kernel": list(kernel),
        "gflop": flop / 1e9,
    }
    fns = [elektronn_fn(x, w, g, pass_, mode)]
    if torch is not None:
        fns.append(torch_fn(x, w, g, pass_))
    ms = median_ms(fns, repeats)
    row.update(elektronn_ms=ms[0], elektronn_gflops=flop / ms[0] / 1e6)
    row["elektronn_pct_peak"] = 100 * row["elektronn_gflops"] / peak
    if torch is not None:
        row.update(torch_ms=ms[1], torch_gflops=flop / ms[1] / 1e6)
        row["torch_pct_peak"] = 100 * row["torch_gflops"] / peak
        row["ratio"] = row["torch_ms"] / row["elektronn_ms"]
    return row


def format_table(rows):
    """The rows as a fixed-width text table (ratio > 1: elektronn is faster)."""
    head = ("layer", "pass", "elektronn ms", "GFLOP/s", "torch ms", "GFLOP/s", "ratio", "% peak")
    lines = ["{:<6}{:<9}{:>13}{:>9}{:>10}{:>9}{:>7}{:>8}".format(*head)]
    for r in rows:
        t_ms, t_gf, ratio = peer_cells(r, 2)
        lines.append(
            f"{r['layer']:<6}{r['pass']:<9}{r['elektronn_ms']:>13.2f}"
            f"{r['elektronn_gflops']:>9.1f}{t_ms:>10}{t_gf:>9}{ratio:>7}"
            f"{r['elektronn_pct_peak']:>8.1f}"
        )
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default 20, quick 3)")
    p.add_argument("--json", default="bench_results/bench_ops.json", help="output JSON path")
    p.add_argument("--mode", default=None, choices=("numpy", "c", "jax"),
                   help="elektronn mode (default: ELEKTRONN_MODE or the library's default)")
    return p.parse_args(argv)


def main(argv=None):
    """Run the benchmark, print the table and write the JSON; return the result dict."""
    args = parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 20)
    layers = QUICK_LAYERS if args.quick else LAYERS
    torch = import_torch()
    from elektronn.backend import get_mode, mode_name

    args.mode = args.mode or mode_name()
    try:
        get_mode(args.mode)
    except ImportError as err:
        raise SystemExit(f"mode {args.mode!r} is not available: {err}") from err
    info = machine_info(torch)
    mm_ms, peak = matmul_peak(QUICK_MATMUL_N if args.quick else MATMUL_N, repeats)
    rows = [
        run_layer(name, spec, pass_, args.mode, repeats, torch, peak)
        for name, spec in layers.items()
        for pass_ in PASSES
    ]
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "machine": info,
        "config": {"mode": args.mode, "repeats": repeats, "quick": args.quick},
        "matmul": {
            "n": QUICK_MATMUL_N if args.quick else MATMUL_N,
            "ms": mm_ms,
            "gflops": peak,
        },
        "rows": rows,
    }
    print(f"mode {args.mode}, {info['cores']} cores, load {info['loadavg']}, medians of {repeats}")
    print(f"float32 matmul {result['matmul']['n']}^3: {mm_ms:.1f} ms, {peak:.1f} GFLOP/s (peak)")
    print(format_table(rows))
    print("ratio = torch ms / elektronn ms (> 1: elektronn faster); % peak: elektronn")
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
