"""A tour of elektronn's Ops: a 3-D convolution, max-fragment pooling and dense reassembly.

Run:  python examples/ops_tour.py [--repeats 5]
It convolves a random volume, pools it with MFP, reassembles the fragments into a dense map,
checks that the result equals stride-1 pooling, and prints how fast the convolution runs.
"""

import argparse
import time

import numpy as np
import pytensor
import pytensor.tensor as pt

from elektronn import backend, ops


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " ") + " Takes a few seconds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of the convolution (their mean is printed)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    x = pt.tensor("x", shape=(1, 16, None, None, None))
    w = pt.tensor("w", shape=(32, 16, 3, 3, 3))
    conv = ops.conv3d(x, w)
    frags = ops.max_fragment_pool(conv, (1, 2, 2))
    offsets, strides = ops.fragment_offsets(None, None, (1, 2, 2))
    dense = ops.fragments_to_dense(frags, offsets, strides)
    grads = pytensor.grad((dense**2).sum(), [x, w])
    t0 = time.perf_counter()
    f = pytensor.function([x, w], [conv, dense, *grads], mode=backend.get_mode())
    print(f"compiled forward+backward in {time.perf_counter() - t0:.2f} s "
          f"(mode {backend.mode_name()!r})")

    xv = rng.standard_normal((1, 16, 18, 41, 41)).astype(np.float32)
    wv = rng.standard_normal((32, 16, 3, 3, 3)).astype(np.float32)
    c, d, gx, gw = f(xv, wv)
    sliding = np.max(
        [c[..., i : i + d.shape[3], j : j + d.shape[4]] for i in (0, 1) for j in (0, 1)], axis=0
    )
    print(f"conv {c.shape} -> {len(offsets)} fragments -> dense {d.shape}")
    print("MFP + reassembly equals stride-1 pooling:", np.array_equal(d, sliding))

    fc = pytensor.function([x, w], conv, mode=backend.get_mode())
    fc(xv, wv)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        fc(xv, wv)
    dt = (time.perf_counter() - t0) / args.repeats
    flops = 2 * np.prod(c.shape) * np.prod(wv.shape[1:])
    print(f"3-D convolution forward: {dt * 1e3:.1f} ms, {flops / dt / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
