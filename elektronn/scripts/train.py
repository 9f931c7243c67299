"""``elektronn-train``: train a net as a configuration file describes.

Usage::

    elektronn-train <config file> [--gpu={auto|false|<int>}] [--resume] [--steps N]
                    [--max-runtime SECONDS] [--set NAME=VALUE ...]

A bare config file name is also looked up among the example configs. The training folder is
the config's ``save_path``; the log goes to the console and to ``<save_path>/<save_name>.log``.
Ctrl-C opens ELEKTRONN's console after the current step (see
:mod:`elektronn.training.console`): change the learning rate, save parameters, run a line of
Python, continue or stop; without a terminal Ctrl-C stops cleanly with everything saved.
``--resume`` continues from ``<save_path>/<save_name>-LAST.param`` without
clearing the folder. See docs/long-trainings.md for resuming and for what is kept where.

Exit codes: 0 the training ended (steps done or runtime reached), 1 it diverged, 2 bad
configuration or data (nothing was deleted or trained), 130 interrupted (Ctrl-C).
"""

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading

__all__ = ["main", "build_parser", "EXIT_DONE", "EXIT_DIVERGED", "EXIT_BAD_INPUT",
           "EXIT_INTERRUPTED"]

EXIT_DONE, EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """exit codes:
  0    the training ended: n_steps done or max_runtime reached
  1    the training diverged (NaN/inf loss); the last good parameters are in
       <save_name>_end.param
  2    bad configuration or data, or nothing to --resume: reported before anything is
       compiled, trained or deleted
  130  interrupted (Ctrl-C); the parameters and history are saved

An existing save_path folder (overwrite = True) is moved to <save_path>.previous-<time> once
the data has been checked, and removed when the new run saves its first parameters.
--resume continues the step count, learning rate schedule, optimiser state, snapshot and
preview counters and random state of the saved run."""

logger = logging.getLogger("elektronn")


def _gpu(value):
    """ELEKTRONN 1.0's ``--gpu`` values: 'auto', 'false' or an int (accepted, then ignored)."""
    low = value.lower()
    if low == "auto":
        return "auto"
    if low in ("false", "none", "no"):
        return False
    try:
        return int(value)
    except ValueError:
        return value  # e.g. 'gpu0': kept for the log, ignored like every value (T16)


def _assignment(text):
    from elektronn.training.config import parse_override

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), parse_override(name.strip(), value)


def build_parser():
    """The argument parser of ``elektronn-train``."""
    p = argparse.ArgumentParser(
        prog="elektronn-train",
        description="Train an ELEKTRONN CNN/MLP with the training pipeline. The config file is "
                    "executed as Python (see the example configs).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file (a path, or the name of an example config)")
    p.add_argument("--gpu", type=_gpu, default=None,
                   help="accepted for ELEKTRONN 1.0 compatibility and ignored: PyTensor selects "
                        "its device through its own configuration")
    p.add_argument("--resume", action="store_true",
                   help="continue from <save_path>/<save_name>-LAST.param (keeps the folder)")
    p.add_argument("--param-file", default=None,
                   help="with --resume: the parameter file to continue from")
    p.add_argument("--steps", type=int, default=None, help="override n_steps (total steps)")
    p.add_argument("--max-runtime", type=float, default=None,
                   help="override max_runtime (seconds of this run)")
    p.add_argument("--set", type=_assignment, action="append", default=[], metavar="NAME=VALUE",
                   help="override a config option, may be repeated: a Python literal "
                        "(--set n_steps=500 --set 'SGD_params={\"LR\": 0.01}'), or plain text "
                        "for options that take a string (--set save_path=runs/)")
    return p


def _add_handler(handler):
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           "%H:%M:%S"))
    logger.addHandler(handler)
    return handler


def main(argv=None):
    """Run ``elektronn-train``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        :data:`EXIT_DONE` (0) after the steps or the runtime, :data:`EXIT_DIVERGED` (1) if
        the training diverged, :data:`EXIT_BAD_INPUT` (2) for a bad configuration, bad data
        or nothing to resume, :data:`EXIT_INTERRUPTED` (130) after Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    from elektronn.training.config import Config, ConfigError
    from elektronn.training.volumes import DataError

    overrides = dict(args.set)
    if args.steps is not None:
        overrides["n_steps"] = args.steps
    if args.max_runtime is not None:
        overrides["max_runtime"] = args.max_runtime
    old_level = logger.level
    logger.setLevel(logging.INFO)
    handlers = [_add_handler(logging.StreamHandler(sys.stderr))]
    # the log file is made once the folder is: until then the records wait in memory
    early = _add_handler(logging.handlers.MemoryHandler(10 ** 6, flushLevel=logging.CRITICAL + 1))
    handlers.append(early)
    trainer = None
    try:
        try:
            config = Config(args.config, args.gpu, os.path.abspath(__file__),
                            use_existing_dir=args.resume, overrides=overrides or None)
            from elektronn.training.trainer import Trainer

            trainer = Trainer(config)
            trainer.checkSaveFolder(args.resume, args.param_file)
            trainer.loadData()
            trainer.prepareSaveFolder(args.resume)
        except (ConfigError, DataError, RuntimeError, FileNotFoundError) as e:
            logger.error("%s", e)  # FileNotFoundError: e.g. MNISTData's message where to put it
            return EXIT_BAD_INPUT
        log_file = os.path.join(config.save_path, f"{config.save_name}.log")
        handlers.append(_add_handler(logging.FileHandler(log_file, encoding="utf-8")))
        early.setTarget(handlers[-1])
        early.close()  # flushes the early records into the file
        logger.removeHandler(early)
        trainer.debugGetCNNBatch()
        trainer.createNet()
        if args.resume:
            trainer.resume(args.param_file)
        reason = trainer.run()
        if reason == "diverged":
            return EXIT_DIVERGED
        return EXIT_INTERRUPTED if reason in ("interrupt", "killed") else EXIT_DONE
    except KeyboardInterrupt:
        if trainer is not None and trainer.stop_reason is not None:
            logger.warning("Interrupted again while saving: the files of the last completed "
                           "save are kept")
        else:
            logger.warning("Interrupted before the training started")
        return EXIT_INTERRUPTED
    finally:
        if argv is None and threading.current_thread() is threading.main_thread():
            # the program ends: a late Ctrl-C must not turn a saved, clean end into a crash
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)


if __name__ == "__main__":
    sys.exit(main())
