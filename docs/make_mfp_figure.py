"""Make the figure of ``docs/mfp.md``: max-fragment pooling, and what it saves.

Top row: a 9x9 map is max-pooled 2x2 at its four phases (``elektronn.ops.max_fragment_pool``),
giving four 4x4 fragments, which ``elektronn.ops.fragments_to_dense`` interleaves into the
dense 8x8 map of every 2x2 window.

Bottom row: a small 2-D net with two 2x2 poolings predicts a whole image with ``predictDense``,
once without MFP and once with MFP in both pooling layers (same weights).  The script counts
the forward passes and times the predictions, checks that both give the same map, prints the
numbers and draws them::

    python docs/make_mfp_figure.py                  # -> docs/_static/mfp.png
    python docs/make_mfp_figure.py --out /tmp/mfp.png --size 120 --repeats 1
    python docs/make_mfp_figure.py --out /tmp/mfp3d.png --ndim 3 --size 80 --repeats 1
"""

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from elektronn import backend, defaults, ops  # noqa: E402
from elektronn.net.convnet import MixedConvNN  # noqa: E402
from elektronn.net.netutils import CNNCalculator  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static" / "mfp.png"
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]  # one per pooling phase
FILTERS, POOLS = [4, 3, 3], [2, 2, 1]


# --- the illustration -----------------------------------------------------------------------
def fragments_and_dense(x):
    """The four 2x2 fragments of ``x`` (9, 9), their offsets, and the dense map (8, 8)."""
    t = pt.tensor4("x")
    frag = ops.max_fragment_pool(t, (2, 2))
    offsets, strides = ops.fragment_offsets(None, None, (2, 2))
    dense = ops.fragments_to_dense(frag, offsets, strides)
    f = pytensor.function([t], [frag, dense], mode=backend.get_mode())
    fr, de = f(x[None, None].astype("float32"))
    return fr[:, 0], offsets, de[0, 0]


def draw_grid(ax, values, colors=None, title=""):
    """A matrix with its numbers; ``colors`` (same shape, phase index) tints the cells."""
    n, m = values.shape
    for i in range(n):
        for j in range(m):
            face = "white" if colors is None else COLORS[colors[i, j]]
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=face, edgecolor="0.6", lw=0.5,
                                   alpha=1 if colors is None else 0.55))
            ax.text(j + 0.5, i + 0.5, f"{values[i, j]:.0f}", ha="center", va="center",
                    fontsize=7)
    ax.set_xlim(0, m)
    ax.set_ylim(n, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def illustrate(axes, rng):
    x = rng.integers(0, 10, size=(9, 9)).astype(np.float32)
    frags, offsets, dense = fragments_and_dense(x)
    ax_in, ax_fr, ax_de = axes

    draw_grid(ax_in, x,
              title="conv output 9x9: 2x2 windows of\nthe four phases (first window each)")
    for k, (px, py) in enumerate(offsets):
        ax_in.add_patch(Rectangle((py + 0.06 * k, px + 0.06 * k), 2, 2, fill=False,
                                  edgecolor=COLORS[k], lw=2.2))

    ax_fr.axis("off")
    ax_fr.set_title("4 fragments (4x4), stacked on the batch axis", fontsize=9)
    for k, (px, py) in enumerate(offsets):
        sub = ax_fr.inset_axes([0.02 + 0.5 * (k % 2), 0.52 - 0.5 * (k // 2), 0.44, 0.44])
        draw_grid(sub, frags[k], np.full((4, 4), k), title="")
        sub.set_title(f"phase ({px},{py})", fontsize=8, color=COLORS[k], pad=2)

    phase = (np.arange(8)[:, None] % 2) * 2 + (np.arange(8)[None, :] % 2)
    draw_grid(ax_de, dense, phase, title="dense 8x8 map: fragment (px,py) fills\n"
                                         "rows px::2, columns py::2")
    window_max = np.lib.stride_tricks.sliding_window_view(x, (2, 2)).max(axis=(2, 3))
    assert np.array_equal(dense, window_max), "the dense map must be the max of every window"


# --- the measurement ------------------------------------------------------------------------
def build(mfp, n_dim=2, seed=0):
    """The test net with or without MFP; sizes from CNNCalculator (patch about 80 in 2-D,
    about 40 in 3-D)."""
    calc = CNNCalculator(FILTERS, POOLS, desired_input=80 if n_dim == 2 else 40,
                         MFP=[mfp, mfp, False], n_dim=n_dim)
    cnn = MixedConvNN(calc.input, input_depth=1, batch_size=1, dimension_calc=calc, seed=seed)
    cnn.addConvLayer(8, FILTERS[0], pool_shape=2, activation_func="relu",
                     use_fragment_pooling=mfp)
    cnn.addConvLayer(8, FILTERS[1], pool_shape=2, activation_func="relu",
                     use_fragment_pooling=mfp)
    cnn.addConvLayer(2, FILTERS[2], pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll", only_forward=True)
    return cnn


class CountingForward:
    """Wraps ``cnn.class_probabilities`` and counts its calls (the forward passes)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def measure(size, repeats, rng, n_dim=2):
    """Time both nets themselves: predictDense's twin (elektronn.net.prednet) is off."""
    budget, defaults.PREDICT_TWIN_BYTES = defaults.PREDICT_TWIN_BYTES, 0
    try:
        return _measure(size, repeats, rng, n_dim)
    finally:
        defaults.PREDICT_TWIN_BYTES = budget


def _measure(size, repeats, rng, n_dim):
    image = rng.random((1,) + (size,) * n_dim, dtype=np.float32)
    plain, mfp = build(False, n_dim), build(True, n_dim)
    for src, dst in zip(plain.params, mfp.params, strict=True):  # the same weights
        dst.set_value(src.get_value())
    results, maps = {}, {}
    for name, cnn in (("without MFP", plain), ("with MFP", mfp)):
        counter = CountingForward(cnn.class_probabilities)
        cnn.class_probabilities = counter
        cnn.predictDense(image, show_progress=False)  # compiles; not timed
        times = []
        for _ in range(repeats):
            counter.calls = 0
            t0 = time.perf_counter()
            maps[name] = cnn.predictDense(image, show_progress=False)
            times.append(time.perf_counter() - t0)
        results[name] = {
            "patch": [int(s) for s in cnn.patch_size],
            "output_strides": [int(s) for s in cnn.output_strides],
            "passes_per_tile": int(np.prod(cnn.output_strides)),
            "passes_per_image": counter.calls,
            "seconds_per_image": float(np.median(times)),
        }
    diff = float(np.abs(maps["without MFP"] - maps["with MFP"]).max())
    return results, diff, maps["with MFP"].shape


def draw_measurement(axes, results, size, n_dim):
    names = list(results)
    what = "x".join([str(size)] * n_dim) + (" image" if n_dim == 2 else " volume")
    keys = [("passes_per_tile", "forward passes per tile"),
            ("passes_per_image", f"forward passes per {what}"),
            ("seconds_per_image", "seconds per image (median)")]
    for ax, (key, label) in zip(axes, keys, strict=True):
        values = [results[n][key] for n in names]
        bars = ax.bar(names, values, color=["0.55", COLORS[0]], width=0.6)
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                    f"{v:.3f}" if isinstance(v, float) else str(v),
                    ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, max(values) * 1.18)
        ax.tick_params(labelsize=8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="PNG file (default: %(default)s)")
    parser.add_argument("--size", type=int, default=200, help="image size (default: 200)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default: 5)")
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=2,
                        help="measure the 2-D net or its 3-D version (default: 2)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    fig, axes = plt.subplots(2, 3, figsize=(11, 7.2),
                             gridspec_kw={"height_ratios": [1.25, 1]})
    illustrate(axes[0], rng)
    results, diff, shape = measure(args.size, args.repeats, rng, args.ndim)
    draw_measurement(axes[1], results, args.size, args.ndim)
    fig.suptitle("Max-fragment pooling: one pass computes every pooling phase", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    report = {"image": [1] + [args.size] * args.ndim, "prediction": list(shape),
              "max_abs_difference": diff, **results}
    print(json.dumps(report, indent=1))
    if diff > 1e-5:
        raise SystemExit(f"the predictions with and without MFP differ by {diff}")
    return report


if __name__ == "__main__":
    main()
