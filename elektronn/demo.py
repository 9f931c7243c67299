"""The elektronn demo: segment cell membranes in a synthetic EM volume with a 3-D CNN.

Run ``elektronn-demo`` (or ``python -m elektronn.demo``).  The demo

1. draws two seeded synthetic EM-like volumes (:mod:`elektronn.data.synthetic`) and writes
   them as HDF5 files, the way real data is stored (``data/raw_<i>.h5`` with dataset
   ``raw``, ``data/barrier_int16_<i>.h5`` with dataset ``lab``; cube 0 trains, cube 1 is held
   out),
2. trains a small anisotropic 3-D CNN (``MixedConvNN``, sizes from ``CNNCalculator``) on
   random, randomly flipped patches of the training volume with Adam,
3. copies the weights into a second net with max-fragment pooling (MFP) and predicts a dense
   membrane probability map of the whole held-out volume with ``predictDense``,
4. reports pixel accuracy and membrane precision / recall / F1 next to the trivial baselines,
   the prediction speed and the run time, and writes ``prediction.h5``, ``demo.png``,
   ``metrics.json`` and the parameter file ``demo-cnn.param`` to the output folder.

The default run takes about a minute on two free CPU cores (membrane F1 about 0.89 on the
held-out volume); ``--quick`` runs a tiny version in seconds (for tests).
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from elektronn.atomicio import atomic_write
from elektronn.data import synthetic
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator
from elektronn.utils import console_logging, pprinttime

__all__ = ["Settings", "DEFAULT", "QUICK", "build_cnn", "PatchSampler", "train",
           "membrane_metrics", "save_figure", "run_demo", "main"]

# The architecture, per layer in the net's (z, x, y) order: two flat layers that pool x/y,
# one 3-D layer, and a 2x2 output layer with the two classes (inside, membrane).
FILTERS = ((1, 4, 4), (1, 3, 3), (3, 3, 3), (1, 2, 2))
POOLS = ((1, 2, 2), (1, 2, 2), 1, 1)
MFP = (True, True, False, False)

logger = logging.getLogger("elektronn.demo")

PREDICTION_FILE, PREDICTION_NAME = "prediction.h5", "prob"
FIGURE_FILE, METRICS_FILE, PARAM_FILE = "demo.png", "metrics.json", "demo-cnn.param"


@dataclass(frozen=True)
class Settings:
    """Sizes and hyperparameters of a demo run.

    Attributes
    ----------
    size : tuple of int
        Size ``(x, y, z)`` of the training and of the held-out volume.
    iterations : int
        Training steps.
    batch_size : int
        Patches per step.
    patch : tuple of int
        Desired training input ``(z, x, y)`` (``CNNCalculator`` picks the next valid size).
    filters : tuple of int
        Number of filters of the three hidden layers.
    learning_rate : float
        Adam's learning rate.
    pred_patch : tuple of int
        Largest prediction input ``(z, x, y)`` of the MFP net (smaller for small volumes).
    seed : int
        Seed of the data, the initial weights and the patch sampling.
    """

    size: tuple = (128, 128, 32)
    iterations: int = 1200
    batch_size: int = 8
    patch: tuple = (9, 63, 63)
    filters: tuple = (8, 16, 16)
    learning_rate: float = 0.002
    pred_patch: tuple = (34, 150, 150)
    seed: int = 0


DEFAULT = Settings()
"""The settings of ``elektronn-demo``."""
QUICK = Settings(size=(48, 48, 12), iterations=400, batch_size=4, patch=(5, 35, 35),
                 learning_rate=0.004, pred_patch=(14, 70, 70))
"""The settings of ``elektronn-demo --quick``: a tiny run for tests."""


# --- the nets ---------------------------------------------------------------------------------
def build_cnn(settings, desired_input, batch_size, mfp):
    """Build and compile the demo architecture.

    Parameters
    ----------
    settings : Settings
        For the number of filters and the seed.
    desired_input : tuple of int
        Desired input size ``(z, x, y)``; ``CNNCalculator`` chooses the nearest valid one.
    batch_size : int
        Batch size (1 for MFP).
    mfp : bool
        Build the prediction net with max-fragment pooling in the pooling layers.

    Returns
    -------
    MixedConvNN
        The compiled net (target ``'nll'``); ``cnn.dimension_calc`` holds the calculator.
    """
    calc = CNNCalculator(FILTERS, POOLS, desired_input=list(desired_input),
                         MFP=list(MFP) if mfp else False, n_dim=3)
    cnn = MixedConvNN(calc.input, input_depth=1, batch_size=batch_size, dimension_calc=calc,
                      seed=settings.seed)
    for n, filt, pool, frag in zip(settings.filters, FILTERS[:-1], POOLS[:-1],
                                   MFP[:-1], strict=True):
        cnn.addConvLayer(n, filt, pool_shape=pool, activation_func="relu",
                         use_fragment_pooling=mfp and frag)
    cnn.addConvLayer(2, FILTERS[-1], pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions("nll", only_forward=mfp)
    return cnn


class PatchSampler:
    """Random training patches of a volume, with labels for the net's (strided) output.

    Parameters
    ----------
    raw : ndarray of uint8, shape (x, y, z)
        The image.
    labels : ndarray of int, shape (x, y, z)
        The labels.
    cnn : MixedConvNN
        A compiled 3-D net with a ``dimension_calc``.
    rng : numpy.random.Generator
        Source of the patch positions and flips.

    Notes
    -----
    Output ``i`` of the net along an axis sees the input window starting at
    ``i * stride``; its label is the one of the pixel ``offset + i * stride`` of the patch
    (``offset`` = half the field of view, floored).  Flips of x, y and z and the swap of
    x and y are applied to image and labels together.
    """

    def __init__(self, raw, labels, cnn, rng):
        self.raw = np.ascontiguousarray(raw.transpose(2, 0, 1), np.float32) / 255  # (z, x, y)
        self.labels = np.ascontiguousarray(labels.transpose(2, 0, 1), np.int16)
        self.patch = tuple(int(s) for s in cnn.patch_size)
        if any(p > s for p, s in zip(self.patch, self.raw.shape, strict=True)):
            raise ValueError(f"the training patch (z, x, y) = {self.patch} does not fit into "
                             f"the volume (z, x, y) = {self.raw.shape}")
        offset = np.floor(cnn.dimension_calc.offset).astype(int)
        out = cnn.output_shape[2:]
        self.label_index = tuple(slice(o, o + n * s, s)
                                 for o, n, s in zip(offset, out, cnn.output_strides, strict=True))
        self.rng = rng

    def batch(self, batch_size):
        """Draw ``batch_size`` patches: data ``(bs, z, 1, x, y)``, labels ``(bs, z, x, y)``."""
        data, labels = [], []
        for _ in range(batch_size):
            window = tuple(slice(a, a + p) for a, p in zip(
                self.rng.integers(0, np.subtract(self.raw.shape, self.patch) + 1), self.patch,
                strict=True))
            img, lab = self.raw[window], self.labels[window]
            flip = [axis for axis in range(3) if self.rng.random() < 0.5]
            img, lab = np.flip(img, flip), np.flip(lab, flip)
            if self.patch[1] == self.patch[2] and self.rng.random() < 0.5:
                img, lab = img.transpose(0, 2, 1), lab.transpose(0, 2, 1)
            data.append(img[:, None])
            labels.append(lab[self.label_index])
        return np.stack(data), np.stack(labels)


def train(cnn, sampler, settings, show_progress=True):
    """Train ``cnn`` with Adam on batches from ``sampler``.

    Parameters
    ----------
    cnn : MixedConvNN
        The compiled training net.
    sampler : PatchSampler
        Source of the batches.
    settings : Settings
        Iterations, batch size and learning rate.
    show_progress : bool
        Show a progress bar (``tqdm.auto``) with the loss (moving average) and the error rate
        on fresh patches. The bar starts after the first step, which compiles the net, so that
        its rate and time left are those of the training.

    Returns
    -------
    list of dict
        Ten entries: ``iteration``, ``loss`` (mean since the previous entry) and ``error``
        (error rate on a fresh batch, i.e. on patches not trained on).
    """
    cnn.setOptimizerParams(Adam={"LR": settings.learning_rate})
    n = settings.iterations
    every = max(1, n // 10)
    history, losses = [], []
    smooth = 0.0
    bar = None
    try:
        for it in range(1, n + 1):
            loss = float(cnn.trainingStep(*sampler.batch(settings.batch_size), mode="Adam")[0])
            losses.append(loss)
            smooth = loss if it == 1 else 0.95 * smooth + 0.05 * loss
            if it % every == 0 or it == n:
                error = cnn.get_error(*sampler.batch(settings.batch_size))[1]
                history.append({"iteration": it, "loss": float(np.mean(losses)),
                                "error": float(error)})
                losses = []
            if bar is None:  # after the first (compiling) step: an honest rate from here on
                bar = tqdm(total=n, initial=it, desc="Training", unit="it",
                           disable=not show_progress)
            else:
                bar.update()
            bar.set_postfix(loss=f"{smooth:.4f}",
                            error=f"{history[-1]['error']:.2%}" if history else "n/a",
                            refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return history


# --- evaluation and outputs -------------------------------------------------------------------
def membrane_metrics(prob, labels):
    """Pixel accuracy and membrane precision, recall and F1 of a probability map.

    Parameters
    ----------
    prob : ndarray, shape (x, y, z)
        Membrane probability; a voxel counts as membrane above 0.5.
    labels : ndarray, shape (x, y, z)
        Ground truth, 1 = membrane.

    Returns
    -------
    dict
        ``accuracy``, ``precision``, ``recall``, ``f1``, the ``membrane_fraction`` of the
        ground truth and the trivial baselines: ``baseline_accuracy`` (every voxel called
        inside) and ``baseline_f1`` (every voxel called membrane, the best F1 without
        looking at the image).

    Examples
    --------
    >>> m = membrane_metrics(np.array([0.9, 0.2, 0.7, 0.1]), np.array([1, 0, 0, 0]))
    >>> m["accuracy"], m["precision"], m["recall"], round(m["f1"], 3), m["baseline_accuracy"]
    (0.75, 0.5, 1.0, 0.667, 0.75)
    """
    pred, truth = prob > 0.5, labels == 1
    tp = float(np.sum(pred & truth))
    precision = tp / max(float(pred.sum()), 1.0)
    recall = tp / max(float(truth.sum()), 1.0)
    fraction = float(truth.mean())
    return {
        "accuracy": float(np.mean(pred == truth)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "membrane_fraction": fraction,
        "baseline_accuracy": 1 - fraction,
        "baseline_f1": 2 * fraction / (1 + fraction),
    }


def save_figure(path, raw, labels, prob, metrics=None, n_slices=3):
    """Write a PNG of ``n_slices`` z-slices of the held-out volume: raw | truth | probability.

    Parameters
    ----------
    path : str or Path
        The PNG file.
    raw : ndarray of uint8, shape (x, y, z)
        The image.
    labels : ndarray, shape (x, y, z)
        Ground truth (1 = membrane).
    prob : ndarray, shape (x, y, z)
        Membrane probability.
    metrics : dict, optional
        :func:`membrane_metrics` of ``prob``, shown under the title.
    n_slices : int
        Number of z-slices (rows), evenly spaced inside the volume.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    panels = ((raw, 255, "gray", "raw image"), (labels, 1, "gray", "ground truth (membrane = 1)"),
              (prob, 1, "magma", "predicted P(membrane)"))
    zs = np.linspace(0, raw.shape[2] - 1, n_slices + 2).round().astype(int)[1:-1]
    fig = Figure(figsize=(10, 3.2 * n_slices + 0.8), layout="constrained")
    title = f"Held-out volume {raw.shape} (x, y, z), not seen in training"
    if metrics is not None:
        m = metrics
        title += (f"\npixel accuracy {m['accuracy']:.1%} (all inside: "
                  f"{m['baseline_accuracy']:.1%}),  membrane F1 {m['f1']:.3f} (all membrane: "
                  f"{m['baseline_f1']:.3f}),  precision {m['precision']:.3f}, "
                  f"recall {m['recall']:.3f}")
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(n_slices, 3, squeeze=False)
    for row, z in zip(axes, zs, strict=True):
        for ax, (img, vmax, cmap, name) in zip(row, panels, strict=True):
            shown = ax.imshow(img[:, :, z].T, cmap=cmap, vmin=0, vmax=vmax,
                              interpolation="nearest")
            ax.set_title(f"{name}, z={z}", fontsize=9)
            ax.axis("off")
    fig.colorbar(shown, ax=axes[:, 2], label="P(membrane)", shrink=0.8)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _report(metrics, shape, out):
    """The closing text of the demo."""
    m = metrics
    return (f"Held-out volume {shape}:\n"
            f"  pixel accuracy  {m['accuracy']:.2%}   (baseline, all inside: "
            f"{m['baseline_accuracy']:.2%})\n"
            f"  membrane F1     {m['f1']:.3f}    (baseline, all membrane: {m['baseline_f1']:.3f});"
            f" precision {m['precision']:.3f}, recall {m['recall']:.3f}\n"
            f"  prediction      {m['prediction_mvox_per_s']:.2f} MVox/s "
            f"({m['prediction_seconds']:.1f} s); training {pprinttime(m['training_seconds'])}; "
            f"total {pprinttime(m['total_seconds'])}\n"
            f"Wrote {PREDICTION_FILE} (dataset '{PREDICTION_NAME}', (class, x, y, z)), "
            f"{FIGURE_FILE}, {METRICS_FILE} and {PARAM_FILE} to {out}")


def run_demo(settings=DEFAULT, out="elektronn-demo-output", show_progress=True):
    """Run the whole demo (data, training, dense prediction, report) into the folder ``out``.

    Parameters
    ----------
    settings : Settings
        Sizes and hyperparameters.
    out : str or Path
        Output folder (created if missing).
    show_progress : bool
        Show progress bars (training, prediction) on stderr. The steps and the report are
        logged (logger ``"elektronn.demo"``, level INFO; ``elektronn-demo`` shows them).

    Returns
    -------
    dict
        The metrics, as written to ``out/metrics.json``.

    Raises
    ------
    ValueError
        If the volume is too small for the net.
    """
    say = logger.info
    t0 = time.perf_counter()
    out = Path(out).resolve()
    say("elektronn demo: membrane segmentation of a synthetic EM volume\nOutput folder: %s", out)
    (train_raw, train_lab), (test_raw, test_lab) = [
        (synthetic.read_h5(raw, synthetic.RAW_NAME), synthetic.read_h5(lab, synthetic.LABEL_NAME))
        for raw, lab in synthetic.write_cubes(out / "data", 2, settings.size, settings.seed)]
    say("Data: 2 volumes (x, y, z) = %s in %s (%.1f%% membrane); volume 0 trains, volume 1 is "
        "held out", settings.size, out / "data", 100 * train_lab.mean())

    size_zxy = np.roll(settings.size, 1)
    cnn = build_cnn(settings, np.minimum(settings.patch, size_zxy), settings.batch_size, False)
    calc = cnn.dimension_calc
    say("Training net: input (z, x, y) = %s, output %s with strides %s, field of view %s, "
        "%d parameters", tuple(calc.input), tuple(cnn.output_shape[2:]),
        tuple(cnn.output_strides), tuple(f[-1] for f in calc.fields), cnn.param_count)
    sampler = PatchSampler(train_raw, train_lab, cnn, np.random.default_rng(settings.seed))
    t_train = time.perf_counter()
    history = train(cnn, sampler, settings, show_progress)
    t_train = time.perf_counter() - t_train
    param_file = out / PARAM_FILE
    cnn.saveParameters(param_file, show=False)

    padded = size_zxy + 2 * np.floor(calc.offset).astype(int)
    pred_cnn = build_cnn(settings, np.minimum(padded, settings.pred_patch), 1, mfp=True)
    pred_cnn.loadParameters(param_file)
    say("Prediction net (MFP): input (z, x, y) = %s, dense output %s; compiling",
        tuple(pred_cnn.dimension_calc.input), tuple(pred_cnn.output_shape[2:]))
    pred_cnn.class_probabilities.fn  # noqa: B018  (compiles now: time the prediction only)
    t_pred = time.perf_counter()
    prob = pred_cnn.predictDense(test_raw[None], show_progress=show_progress, pad_raw=True)
    t_pred = time.perf_counter() - t_pred

    metrics = membrane_metrics(prob[1], test_lab)
    metrics.update(prediction_mvox_per_s=test_raw.size / 1e6 / t_pred, prediction_seconds=t_pred,
                   training_seconds=t_train, settings=asdict(settings), history=history)
    synthetic.write_h5(out / PREDICTION_FILE, PREDICTION_NAME, prob)
    save_figure(out / FIGURE_FILE, test_raw, test_lab, prob[1], metrics)
    metrics["total_seconds"] = time.perf_counter() - t0
    atomic_write(out / METRICS_FILE, json.dumps(metrics, indent=2).encode())
    say("%s", _report(metrics, settings.size, out))
    return metrics


def _parser():
    parser = argparse.ArgumentParser(
        prog="elektronn-demo",
        description="Train a small 3-D CNN to find cell membranes in a synthetic EM volume, "
                    "predict a held-out volume densely (MFP) and report its quality.")
    parser.add_argument("--out", default="elektronn-demo-output",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--iterations", type=int, help="training steps "
                        f"(default: {DEFAULT.iterations}, with --quick {QUICK.iterations})")
    parser.add_argument("--size", type=int, nargs="+", metavar="N",
                        help="volume size: 'X Y Z', or one number N for (N, N, N // 4) "
                             f"(default: {' '.join(map(str, DEFAULT.size))})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny volumes and few steps: runs in seconds (for tests)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="show nothing (no progress bars, no messages)")
    return parser


def main(argv=None):
    """Entry point of ``elektronn-demo`` and ``python -m elektronn.demo``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``); ``--help`` lists them.

    Returns
    -------
    int
        0 on success.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    settings = replace(QUICK if args.quick else DEFAULT, seed=args.seed)
    if args.iterations is not None:
        if args.iterations < 1:
            parser.error("--iterations must be at least 1")
        settings = replace(settings, iterations=args.iterations)
    if args.size is not None:
        if len(args.size) not in (1, 3):
            parser.error("--size takes one number N or three numbers X Y Z")
        n = args.size[0]
        settings = replace(settings, size=tuple(args.size) if len(args.size) == 3 else
                           (n, n, n // 4))
    try:
        with console_logging(logging.WARNING if args.quiet else logging.INFO,
                             only="elektronn.demo"):
            run_demo(settings, args.out, show_progress=not args.quiet)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
