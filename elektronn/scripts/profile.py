"""``elektronn-profile``: how fast does a net predict, for which input size?

Usage::

    elektronn-profile <config file> [--sizes N] [--z-sizes N] [--max-size S] [--out DIR]
    elektronn-profile --filters 1,4,4 1,3,3 --pools 1,2,2 1,1,1 [--mfp] ...

With a training config (as ELEKTRONN 1.0's ``elektronn-profile``) the net of the config is
built for a sweep of input sizes: ``x = y`` from the valid input sizes of the config's
architecture, and for 3-D nets ``z`` (for anisotropic nets the valid sizes around ``x / 8.5``).
The forward pass (``class_probabilities``, batch 1) is timed for each, and the results are
written to ``Speed_<save_name>.csv`` (tab-separated) and plotted in ``Speed_<save_name>.png``
in ``--out`` (default: the current folder). At the end the size with the most output voxels per
second is printed: the patch size to use with ``predictDense``.

With ``--filters``/``--pools`` an architecture is given directly (plus a 1x1 output layer);
see :func:`elektronn.net.profiling.profile_input_sizes`.
"""

import argparse
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser", "profile_config"]

logger = logging.getLogger("elektronn")

CSV_HEADER = "z-shape\txy-shape\tpixel\tSpeed [MPix/s]\tpass [s]\tpeak [MiB]\n"
"""Columns of ``Speed_<save_name>.csv``: ELEKTRONN 1.0's four (``pixel``: output voxels of one
pass; the speed in million output voxels per second, as ``predictDense`` would reach), then
the seconds of one pass and its peak of traced memory."""


def _int_tuple(text):
    """``'1,4,4'`` -> ``(1, 4, 4)``; ``'3'`` -> ``3``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or ints separated by commas, "
                                         f"got {text!r}") from None
    return values[0] if len(values) == 1 else values


def build_parser():
    """The argument parser of ``elektronn-profile``."""
    from elektronn import backend

    p = argparse.ArgumentParser(
        prog="elektronn-profile",
        description="Time the forward pass of a net for several input sizes and report the "
                    "dense prediction speed: the net of a training config (the positional "
                    "argument), or an architecture given by --filters and --pools (plus a "
                    "1x1 output layer). 3-D sizes are given in zxy order.",
        epilog="examples: elektronn-profile neuro_3d_config.py --sizes 4 | "
               "elektronn-profile --filters 1,4,4 1,3,3 3,3,3 --pools 1,2,2 1,2,2 1,1,1 "
               "--nof-filters 10 25 40 --mfp")
    p.add_argument("config", nargs="?", default=None,
                   help="training config file (a path, or the name of an example config)")
    p.add_argument("--gpu", default=None,
                   help="accepted for ELEKTRONN 1.0 compatibility and ignored (the backend "
                        "chooses the device, see elektronn.backend)")
    p.add_argument("--filters", nargs="+", type=_int_tuple, default=None,
                   help="without config: filter size per layer, an int or ints per axis")
    p.add_argument("--pools", nargs="+", type=_int_tuple, default=None,
                   help="without config: pooling factors per layer, e.g. 1,2,2")
    p.add_argument("--nof-filters", nargs="+", type=int, default=None,
                   help="without config: number of filters per layer (default 16 each)")
    p.add_argument("--mfp", action="store_true",
                   help="without config: max-fragment-pooling in pooling layers")
    p.add_argument("--activation", default="relu",
                   help="without config: activation function (default relu)")
    p.add_argument("--channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--classes", type=int, default=None,
                   help="output classes (default: the config's n_lab, else 2)")
    p.add_argument("--sizes", type=int, default=None, metavar="N",
                   help="number of x/y input sizes (default 6 with a config, else 5)")
    p.add_argument("--z-sizes", type=int, default=3, metavar="N",
                   help="config of an anisotropic 3-D net: z sizes per x/y size (default 3)")
    p.add_argument("--max-size", type=_int_tuple, default=None,
                   help="largest input size, an int or one per axis (default 512 for 2-D, "
                        "32,192,192 for 3-D)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per size (default 3)")
    p.add_argument("--mode", choices=backend.MODES, default=None,
                   help="compilation mode (see elektronn.backend)")
    p.add_argument("--out", default=".",
                   help="config: folder for Speed_<save_name>.csv/.png (default: here)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results here")
    return p


# --- a training config -------------------------------------------------------------------------


def _anisotropic(config):
    shapes = [np.broadcast_to(np.asarray(s), (3,)) for s in list(config.filters) +
              list(config.pool)]
    return bool(config.anisotropic_data) or any(s[0] != s[1] for s in shapes)


def profile_config(config, n_ch=1, n_lab=None, n_sizes=6, n_z=3, max_size=None, repeats=3,
                   sizes=None, show_progress=True, seed=0):
    """Time the forward pass of a config's net for a sweep of input sizes.

    Parameters
    ----------
    config : elektronn.training.config.Config
        A config of mode ``'img-img'`` (a net that predicts dense maps).
    n_ch : int
        Input channels.
    n_lab : int, optional
        Classes (default ``config.n_lab``, else 2).
    n_sizes, n_z, max_size
        See :func:`elektronn.net.profiling.sweep_sizes`.
    repeats : int
        Timed passes per size.
    sizes : list of tuple of int, optional
        The sizes to profile instead of the sweep (each must be valid).
    show_progress : bool
        Progress bar over the sizes and a table row per size (stdout).
    seed : int
        Seed of the weights and inputs.

    Returns
    -------
    list of dict
        As :func:`~elektronn.net.profiling.profile_input_sizes`; a size that does not fit
        or runs out of memory is left out (with a warning).
    """
    from tqdm.auto import tqdm

    from elektronn.net.netcreation import createNet
    from elektronn.net.netutils import CNNCalculator
    from elektronn.net.profiling import format_table, measure_forward, sweep_sizes

    if config.mode != "img-img":
        raise ValueError(f"elektronn-profile needs a dense image net (mode 'img-img'), the "
                         f"config has mode {config.mode!r}")
    n_lab = n_lab or config.n_lab or 2

    def calculator(size):
        return CNNCalculator(config.filters, config.pool, list(size), MFP=config.MFP,
                             force_center=config.mode == "img-img", n_dim=config.n_dim)

    if sizes is None:
        valid = config.dimensions.valid_inputs
        sizes = sweep_sizes(valid, n_sizes, max_size, config.n_dim == 3 and _anisotropic(config),
                            n_z)
    options = dict(config.options(), batch_size=1, param_file=None)
    rng = np.random.default_rng(seed)
    results = []
    if show_progress:
        tqdm.write(format_table([]), file=sys.stdout)
    for size in tqdm(sizes, desc="Profiling", unit="size", disable=not show_progress,
                     leave=False):
        size = tuple(int(s) for s in size)
        try:
            calc = calculator(size)
            if tuple(int(s) for s in np.atleast_1d(calc.input)) != size:
                raise ValueError(f"the input size {size} does not fit the architecture (the "
                                 f"nearest valid one is {tuple(calc.input)})")
            t0 = time.perf_counter()
            cnn = createNet(options, size, n_ch, n_lab, calc, seed=seed)
            getattr(cnn.class_probabilities, "fn", None)  # compile now if deferred
            compile_s = time.perf_counter() - t0
            row = dict(measure_forward(cnn, n_ch, repeats, rng), compile_s=compile_s)
        except MemoryError:
            logger.warning("out of memory at input size %s: larger sizes skipped", size)
            break
        except ValueError as e:
            logger.warning("input size %s skipped: %s", size, e)
            continue
        results.append(row)
        if show_progress:
            tqdm.write(format_table([row], header=False), file=sys.stdout)
    return results


def _csv(results):
    lines = [CSV_HEADER]
    for r in results:
        size = r["input_size"]
        z = size[0] if len(size) == 3 else 1
        lines.append(f"{z}\t{size[-1]}\t{int(np.prod(r['output_size']))}\t"
                     f"{r['voxels_per_s'] / 1e6:.6g}\t{r['pass_s']:.6g}\t"
                     f"{r['peak_mem_mb']:.2f}\n")
    return "".join(lines).encode()


def _plot(results, title):
    """PNG bytes: speed (MVox/s) against the input size in voxels, each point labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = sorted(results, key=lambda r: np.prod(r["input_size"]))
    n_in = [int(np.prod(r["input_size"])) for r in rows]
    speed = [r["voxels_per_s"] / 1e6 for r in rows]
    ax.plot(n_in, speed, "o-", color="tab:blue")
    for n, v, r in zip(n_in, speed, rows, strict=True):
        ax.annotate("x".join(map(str, r["input_size"])), (n, v), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    best = max(rows, key=lambda r: r["voxels_per_s"])
    ax.plot(np.prod(best["input_size"]), best["voxels_per_s"] / 1e6, "r*", ms=14,
            label="fastest: " + "x".join(map(str, best["input_size"])))
    ax.set_xscale("log")
    ax.set_xlabel("input size [voxels] (" + ("z x y" if len(best["input_size"]) == 3 else "x y")
                  + " at the points)")
    ax.set_ylabel("prediction speed [million output voxels / s]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _fastest_message(results):
    best = max(results, key=lambda r: r["voxels_per_s"])
    axes = "(z, x, y)" if len(best["input_size"]) == 3 else "(x, y)"
    return (f"Fastest input size {axes} = {tuple(best['input_size'])}: "
            f"{best['voxels_per_s'] / 1e6:.4g} million output voxels/s (one pass "
            f"{best['pass_s']:.4g} s, output {tuple(best['output_size'])} x {best['passes']} "
            "passes per tile)")


def _run_config(args, parser):
    from elektronn.atomicio import atomic_write
    from elektronn.training.config import Config, ConfigError

    try:
        config = Config(args.config, args.gpu, None, use_existing_dir=True)
    except (ConfigError, RuntimeError) as e:
        parser.exit(2, f"elektronn-profile: error: {e}\n")
    out = Path(os.path.expanduser(args.out))
    if not out.is_dir():
        parser.error(f"--out {args.out}: no such folder")
    try:
        results = profile_config(config, n_ch=args.channels, n_lab=args.classes,
                                 n_sizes=args.sizes or 6, n_z=args.z_sizes,
                                 max_size=args.max_size, repeats=args.repeats)
    except ValueError as e:
        parser.error(str(e))
    if not results:
        parser.exit(1, "elektronn-profile: no input size could be profiled\n")
    csv_path = out / f"Speed_{config.save_name}.csv"
    png_path = out / f"Speed_{config.save_name}.png"
    atomic_write(csv_path, _csv(results))
    atomic_write(png_path, _plot(results, f"{config.save_name}: forward pass, batch 1"))
    print(f"results written to {csv_path} and {png_path}")
    print(_fastest_message(results))
    return results, {"config": config.config_file, "save_name": config.save_name}


def _run_architecture(args, parser):
    from elektronn.net.profiling import profile_input_sizes

    try:
        results = profile_input_sizes(
            args.filters, args.pools, n_ch=args.channels, n_lab=args.classes or 2,
            MFP=args.mfp, activation_func=args.activation, nof_filters=args.nof_filters,
            n_sizes=args.sizes or 5, repeats=args.repeats, max_size=args.max_size,
            verbose=True)
    except ValueError as err:
        parser.error(str(err))
    if results:
        print(_fastest_message(results))
    return results, {"architecture": {
        "filters": args.filters, "pools": args.pools, "nof_filters": args.nof_filters,
        "mfp": args.mfp, "channels": args.channels, "classes": args.classes or 2,
        "activation": args.activation}}


def main(argv=None):
    """Entry point of ``elektronn-profile``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``); ``--help`` lists them.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    SystemExit
        Status 2 for invalid arguments or config (after printing why), 1 if no size could be
        profiled.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None and (args.filters is None or args.pools is None):
        parser.error("give a training config file, or --filters and --pools")
    if args.config is not None and (args.filters is not None or args.pools is not None):
        parser.error("give either a config file or --filters/--pools, not both")
    if args.mode is not None:
        from elektronn import backend

        backend.set_mode(args.mode)
    run = _run_config if args.config is not None else _run_architecture
    results, about = run(args, parser)
    if args.json:
        from elektronn.atomicio import atomic_write

        atomic_write(args.json, json.dumps(dict(about, results=results), indent=2).encode())
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
