"""Train ELEKTRONN 1.0's 3-D neuro example net on HDF5 EM volumes and predict one densely.

The Python 3 version of the original ``neuro_3d`` example: an anisotropic 3-D CNN (filters
(z, x, y) (1,4,4), (1,3,3), (3,3,3), (3,3,3), (1,2,2) with 10, 25, 40, 50, 60 filters, max-pooling
(1,2,2) in the first two layers, relu, a (1,1,1) output layer with 2 classes) trained with SGD
(momentum 0.9) on patches of a volume, then applied to a held-out volume with max-fragment
pooling.

Data: a folder with ``raw_<i>.h5`` (dataset ``raw``, ``(x, y, z)``) and ``barrier_int16_<i>.h5``
(dataset ``lab``, ``(x, y, z)``, 1 = membrane) as in ELEKTRONN 1.0's example data; cube 0 is
used for training, cube 1 for testing.  Without ``--data`` two synthetic EM-like cubes are
generated into ``<out>/data``.  The output folder gets the parameters ``neuro3d.param``, the
dense prediction of the test cube ``prediction.h5`` (dataset ``prob``, ``(class, x, y, z)``) and
``prediction.png`` (slices of raw image, labels and membrane probability, as the demo's).

Run:  python examples/neuro_3d.py [--data FOLDER] [--iterations 2000] [--out neuro3d-output]

The default run takes 5-10 minutes on 2 CPU cores; a few hundred iterations are too few
for the net to learn anything (the script says so).
"""

import argparse
from pathlib import Path

import numpy as np

from elektronn.data import synthetic
from elektronn.demo import PatchSampler, membrane_metrics, save_figure
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator

FILTERS = [(1, 4, 4), (1, 3, 3), (3, 3, 3), (3, 3, 3), (1, 2, 2), (1, 1, 1)]
POOLS = [(1, 2, 2), (1, 2, 2), 1, 1, 1, 1]
NOF = [10, 25, 40, 50, 60, 2]
MIN_ITERATIONS = 500  # below this the net rarely beats the trivial baselines


def build(patch, mfp, seed):
    """The neuro_3d net for a desired input ``patch`` (z, x, y); MFP in the pooling layers."""
    mfp_flags = [True, True, False, False, False, False] if mfp else False
    calc = CNNCalculator(FILTERS, POOLS, desired_input=list(patch), MFP=mfp_flags, n_dim=3)
    cnn = MixedConvNN(calc.input, input_depth=1, batch_size=1, dimension_calc=calc, seed=seed)
    for i, (nof, filt, pool) in enumerate(zip(NOF, FILTERS, POOLS)):
        last = i == len(NOF) - 1
        cnn.addConvLayer(nof, filt, pool_shape=pool, activation_func="linear" if last else "relu",
                         use_fragment_pooling=mfp and pool != 1, is_last_layer=last)
    cnn.compileOutputFunctions("nll", only_forward=mfp)
    return cnn


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " The default run takes 5-10 minutes on 2 "
        "CPU cores.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="folder with raw_<i>.h5/barrier_int16_<i>.h5 (None: synthetic "
                             "cubes written to OUT/data)")
    parser.add_argument("--out", default="neuro3d-output", help="output folder")
    parser.add_argument("--iterations", type=int, default=2000,
                        help=f"training steps (fewer than {MIN_ITERATIONS} learn little)")
    parser.add_argument("--patch", type=int, nargs=3, default=[7, 127, 127],
                        help="desired training input (z, x, y)")
    parser.add_argument("--size", type=int, nargs=3, default=[160, 160, 40],
                        help="size (x, y, z) of generated cubes (without --data)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and patches")
    return parser.parse_args(argv)


def main(argv=None):
    """Train, predict the test cube and return its membrane metrics (a dict)."""
    args = parse_args(argv)
    if args.iterations < MIN_ITERATIONS:
        print(f"Note: {args.iterations} iterations are too few to learn membranes (at least "
              f"{MIN_ITERATIONS}, default 2000): this run only checks that everything works.")
    out = Path(args.out)
    folder = Path(args.data) if args.data else out / "data"
    if not args.data:
        synthetic.write_cubes(folder, n_cubes=2, shape=tuple(args.size), seed=args.seed)
    cubes = [(synthetic.read_h5(folder / f"raw_{i}.h5", synthetic.RAW_NAME),
              synthetic.read_h5(folder / f"barrier_int16_{i}.h5", synthetic.LABEL_NAME))
             for i in (0, 1)]

    cnn = build(args.patch, mfp=False, seed=args.seed)
    cnn.setOptimizerParams(SGD={"LR": args.lr, "momentum": 0.9}, weight_decay=0)
    sampler = PatchSampler(*cubes[0], cnn, np.random.default_rng(args.seed))
    for i in range(1, args.iterations + 1):
        loss, _, step = cnn.trainingStep(*sampler.batch(1), mode="SGD")
        if i % max(1, args.iterations // 20) == 0 or i == 1:
            print(f"update {i}: loss {loss:.4f} ({step:.3f} s/step)")
    out.mkdir(parents=True, exist_ok=True)
    cnn.saveParameters(str(out / "neuro3d.param"))

    predictor = build(args.patch, mfp=True, seed=args.seed)
    predictor.loadParameters(str(out / "neuro3d.param"))
    raw, labels = cubes[1]
    prob = predictor.predictDense(raw[None], show_progress=True, pad_raw=True)
    metrics = membrane_metrics(prob[1], labels)
    synthetic.write_h5(out / "prediction.h5", "prob", prob)
    save_figure(out / "prediction.png", raw, labels, prob[1], metrics)
    print(f"test cube: accuracy {metrics['accuracy']:.2%} (all inside: "
          f"{metrics['baseline_accuracy']:.2%}), membrane F1 {metrics['f1']:.3f} (all membrane: "
          f"{metrics['baseline_f1']:.3f})")
    if not (metrics["f1"] > metrics["baseline_f1"]
            and metrics["accuracy"] > metrics["baseline_accuracy"]):
        print(f"Warning: the net is no better than a trivial guess after {args.iterations} "
              "iterations: train longer (--iterations 2000 or more).")
    print(f"Wrote neuro3d.param, prediction.h5 (dataset 'prob', (class, x, y, z)) and "
          f"prediction.png to {out}")
    return metrics


if __name__ == "__main__":
    main()
