"""``elektronn-predict``: predict a whole volume with a trained net, block by block.

Usage::

    elektronn-predict SAVE_FOLDER INPUT OUTPUT [options]
    elektronn-predict --config CONFIG --params PARAM_FILE INPUT OUTPUT [options]

``SAVE_FOLDER`` is a training run's folder (``save_path``): its ``Backup/config.py`` gives the
architecture and its ``*-LAST.param`` the parameters (``--params`` picks another file, e.g.
``_end.param``).  ``INPUT`` is ``vol.zarr``, ``vol.zarr/group/array`` or ``file.h5:dataset``
with the layout ``(ch, x, y[, z])``, or ``(x, y[, z])`` for one channel (ELEKTRONN's cubes);
``OUTPUT`` is a zarr path (or ``file.h5:dataset`` without a cluster).  The prediction is
:func:`elektronn.net.volume.predict_volume`: resumable (``--resume``), on this process, a
LocalCluster (``--workers N``) or a running dask scheduler (``--scheduler ADDRESS``).  See
docs/large-volumes.md.
"""

import argparse
import glob
import logging
import os
import sys

import numpy as np

from elektronn.utils import console_logging

__all__ = ["main", "build_parser"]

logger = logging.getLogger("elektronn")


def build_parser():
    """The argument parser of ``elektronn-predict``."""
    p = argparse.ArgumentParser(
        prog="elektronn-predict",
        description="Predict a volume (zarr or HDF5, layout (ch, x, y[, z])) with a trained "
                    "ELEKTRONN net, block by block into zarr (or HDF5), resumable, optionally "
                    "on a dask cluster.",
        epilog="examples: elektronn-predict runs/neuro3d raw.zarr pred.zarr --workers 4\n"
               "          elektronn-predict --config cfg.py --params net_end.param "
               "raw.h5:raw pred.zarr --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="[SAVE_FOLDER] INPUT OUTPUT",
                   help="a training run's save folder (unless --config is given), the input "
                        "volume and the output")
    p.add_argument("--config", help="the training config file (instead of a save folder)")
    p.add_argument("--params", help="the parameter file (needed with --config; default with a "
                                    "save folder: its *-LAST.param)")
    p.add_argument("--block", type=int, nargs="+", metavar="N",
                   help="output block shape (x y [z]); default: chosen from the memory a "
                        "block needs")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="run on a local dask cluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the dask cluster of this scheduler (e.g. tcp://host:8786)")
    p.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads per worker task (default: cores / tasks per host)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted run into an existing OUTPUT")
    again.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--no-mfp", dest="mfp", action="store_false",
                   help="do not switch the net to max-fragment pooling (slower, less memory)")
    p.add_argument("--uint8", action="store_true",
                   help="write uint8(255 * probability) instead of float32")
    p.add_argument("--pad-raw", action="store_true",
                   help="mirror-pad the input so that the output has its size")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _SingleChannel:
    """A lazy ``(1, x, y[, z])`` view of a one-channel volume stored as ``(x, y[, z])``."""

    def __init__(self, array):
        self.array = array
        self.shape = (1, *array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        return np.asarray(self.array[index[1:]])[np.newaxis][index[:1]]


class UsageError(ValueError):
    """A command line that cannot work (reported without a traceback, exit code 2)."""


def _net_files(args):
    """(config file, parameter file or None, input, output) from the command line."""
    if args.config is not None:
        if len(args.paths) != 2 or args.params is None:
            raise UsageError(f"with --config give --params PARAM_FILE, INPUT and OUTPUT, got "
                             f"--params {args.params} and {args.paths}")
        return args.config, args.params, *args.paths
    if len(args.paths) != 3:
        raise UsageError(f"give SAVE_FOLDER INPUT OUTPUT (or --config CONFIG INPUT OUTPUT), got "
                         f"{args.paths}")
    folder, source, target = args.paths
    config = os.path.join(folder, "Backup", "config.py")
    if not os.path.isfile(config):
        raise UsageError(f"{folder!r} is not a training save folder: {config} is missing "
                         "(or give --config)")
    params = args.params
    if params is None:
        found = sorted(glob.glob(os.path.join(glob.escape(folder), "*-LAST.param")))
        if len(found) != 1:
            raise UsageError(f"expected one *-LAST.param in {folder!r}, found "
                             f"{[os.path.basename(f) for f in found] or 'none'}: give --params")
        params = found[0]
    return config, params, source, target


def _n_lab(param_file):
    """The number of classes: the filters of the parameter file's last layer."""
    from elektronn.net import paramfile

    objects = paramfile.read_param_file(os.fspath(param_file))
    try:
        return int(objects[0][-1][0])
    except (IndexError, TypeError, ValueError) as err:
        raise paramfile.ParameterFileError(param_file, "no list of layer shapes") from err


def _target_exists(target):
    from elektronn.net.volume import _parse_path

    kind, where, inner = _parse_path(target)
    if kind == "hdf5":
        import h5py

        if not os.path.exists(where):
            return False
        with h5py.File(where, "r") as f:
            return inner in f
    return os.path.exists(os.path.join(where, inner, "zarr.json")) or \
        os.path.exists(os.path.join(where, inner, ".zarray"))


def _channel_view(raw, config, args, source):
    """``raw`` with a channel axis: a volume with only the net's spatial axes is one channel."""
    from elektronn.training.config import Config

    n_dim = Config(config, use_existing_dir=True).n_dim
    if raw.ndim != n_dim:
        return raw
    if (args.workers is not None or args.scheduler is not None) and hasattr(raw, "file"):
        raise UsageError(f"{source} has no channel axis ({raw.shape}): on a cluster give an "
                         f"input (1, {', '.join(map(str, raw.shape))}) or a zarr array")
    return _SingleChannel(raw)


def _client(args, stack):
    if args.workers is None and args.scheduler is None:
        return None
    from elektronn.net.volume import _import

    distributed = _import("distributed")
    if args.scheduler is not None:
        return stack.enter_context(distributed.Client(args.scheduler))
    if args.workers < 1:
        raise UsageError(f"--workers needs a positive number, got {args.workers}")
    quiet = logging.getLogger("distributed")  # its INFO lines would break the progress bar
    stack.callback(quiet.setLevel, quiet.level)
    quiet.setLevel(logging.ERROR)
    cluster = stack.enter_context(distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR))
    return stack.enter_context(distributed.Client(cluster))


def main(argv=None):
    """Run ``elektronn-predict``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the output is complete, 2 for a usage error (missing files, a mismatching or
        existing output, bad block shape), 1 for a failure during the run.
    """
    import contextlib

    args = build_parser().parse_args(argv)
    # warnings and errors only: the progress bar tells the rest
    with console_logging(logging.WARNING, fmt="%(asctime)s %(levelname)s %(message)s"), \
            contextlib.ExitStack() as stack:
        try:
            config, params, source, target = _net_files(args)
            from elektronn.net.volume import (
                open_volume,
                predict_volume,
                refuse_hdf5_for_cluster,
            )
            from elektronn.training.predictor import create_predncnn

            if args.workers is not None or args.scheduler is not None:
                refuse_hdf5_for_cluster(target)

            raw = open_volume(source)
            if hasattr(raw, "file"):
                stack.callback(raw.file.close)
            raw = _channel_view(raw, config, args, source)
            if _target_exists(target) and not (args.resume or args.overwrite):
                raise UsageError(f"{target} exists: pass --resume to continue it or "
                                 "--overwrite to replace it")
            cnn = create_predncnn(config, n_ch=int(raw.shape[0]),
                                  n_lab=_n_lab(params),
                                  override_MFP_to_active=args.mfp, param_file=params)
            client = _client(args, stack)
        except (UsageError, FileNotFoundError, ValueError, ImportError) as err:
            logger.error("%s", err)
            return 2
        try:
            info = predict_volume(cnn, raw, target, block_shape=args.block, client=client,
                                  resume=True, overwrite=args.overwrite,
                                  as_uint8=args.uint8, pad_raw=args.pad_raw,
                                  show_progress=not args.quiet,
                                  threads_per_worker=args.threads)
        except (FileNotFoundError, ValueError, ImportError) as err:
            logger.error("%s", err)
            return 2
    print(f"{target}: {info['computed']} of {info['blocks']} blocks computed "
          f"({info['skipped']} done before) in {info['seconds']:.1f} s, "
          f"{info['voxels_per_s'] / 1e6:.3f} MVox/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
