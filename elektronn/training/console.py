"""The Ctrl-C console of a running training (ELEKTRONN 1.0's menu).

Pressing Ctrl-C while :meth:`~elektronn.training.trainer.Trainer.run` trains finishes the
current step, prints a status line and the menu and reads commands at the prompt
``<user>@ELEKTRONN:``:

=====================  ==========================================================================
``q`` (or Enter)       leave the console and continue training where it stopped
``abort``              stop the training; the parameters, state and plots are saved as at a
                       normal end (``<save_name>_end.param``, ``-LAST.param``)
``kill``               stop the training without saving anything more
``SGD``, ``Adam``, …   train on with another optimiser (``SGD``, ``CG``, ``RPROP``, ``LBFGS``,
                       ``Adam``)
``sf``                 write the filter mosaic of the first layer and the progress plots
``save [file]``        save the parameters (default ``CNN.save``; relative to ``save_path``)
``load [file]``        load parameters (default ``CNN.save``)
``sethist <int>``      monitor every ``<int>`` steps (``history_freq``)
``setlr <float>``      set the SGD learning rate
``setmom <float>``     set the SGD momentum
``params``             print statistics of every parameter array
``help``               print the menu again
anything else          a line of Python, run with the trainer as ``self`` (and ``cnn``,
                       ``config``, ``data``, ``np``); an expression's value is printed,
                       e.g. ``self.data.warp_on = False`` or ``self.testModel('test')``
=====================  ==========================================================================

End of input (Ctrl-D) and a second Ctrl-C at the prompt stop the training as ``abort`` does.
Without a terminal (standard input not a TTY, as under a batch scheduler) no console is opened:
Ctrl-C (SIGINT) then stops the training as ``abort`` does, so nothing ever waits for input.

The Python line is executed in the training process with the user's own rights, like the
config file: the console is as trusted as the terminal it runs in.
"""

import getpass
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from elektronn.utils import pprinttime

__all__ = ["OPTIMIZERS", "RESUME", "ABORT", "KILL", "InterruptFlag", "pprintmenu", "status_line",
           "Console", "open_console"]

logger = logging.getLogger("elektronn")

OPTIMIZERS = ("SGD", "CG", "RPROP", "LBFGS", "Adam")
"""Optimiser names the console switches to (``config.optimizer``)."""

RESUME, ABORT, KILL = "resume", "abort", "kill"
"""What :meth:`Console.interact` returns: continue training, stop saving, stop at once."""


class InterruptFlag:
    """Turn Ctrl-C (SIGINT) into a request the training loop polls between steps.

    The first Ctrl-C sets :attr:`requested`; the step in progress finishes, so the net and
    the optimiser are never left half-updated. A second Ctrl-C before the loop has handled the
    first raises :class:`KeyboardInterrupt` at once (for a step that hangs). Outside the
    main thread, or if SIGINT is not handled by Python, nothing is installed and Ctrl-C raises
    :class:`KeyboardInterrupt` as usual.

    Examples
    --------
    >>> flag = InterruptFlag().install()
    >>> flag.requested
    False
    >>> flag.uninstall()
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self):
        """Install the handler (main thread only); returns ``self``."""
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def uninstall(self):
        """Restore the previous SIGINT handler."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def clear(self):
        """Forget a handled request."""
        self.requested = False


def pprintmenu(save_name):
    """The menu text (printed by :meth:`Console.interact`).

    Parameters
    ----------
    save_name : str
        Shown in the title.

    Returns
    -------
    str
    """
    return (f"ELEKTRONN MENU\n==============\n    >> {save_name} <<\n"
            "    Shortcuts:\n"
            "    'q' or Enter (continue training),   'abort' (stop, saving params),\n"
            "    'kill' (stop, no saving),           'save'/'load' [file] (params),\n"
            "    'sf' (write filter and progress plots),\n"
            "    'sethist <int>',  'setlr <float>',  'setmom <float>',  'params' (statistics)\n"
            f"    Change the training optimiser: {', '.join(OPTIMIZERS)}\n"
            "    Anything else is a line of Python with the trainer as 'self' (also 'cnn',\n"
            "    'config', 'data', 'np'), e.g. self.data.warp_on = False\n")


def status_line(trainer, step, nll, t_train, t_iter, t_passed):
    """ELEKTRONN 1.0's status line: losses, errors, LR, momentum and speeds.

    Parameters
    ----------
    trainer : Trainer
    step : int
        The step just done.
    nll : float
        Its loss.
    t_train, t_iter : float
        Smoothed seconds per training step and per iteration (with batch creation).
    t_passed : float
        Seconds of training so far.

    Returns
    -------
    str
    """
    regression = trainer.config.target == "regression"
    kind, unit = ("MSE", "std") if regression else ("NLL", "%")
    hist = trainer.history[-1] if trainer.history else [np.nan] * 8
    err = trainer.errors[-1] if trainer.errors else [np.nan] * 4
    cnn = trainer.cnn
    return (f"{step:05d} {kind}m={trainer._nll_ema:.5f}, {kind}={float(nll):.4f}, "
            f"train={hist[4]:.5f}, valid={hist[5]:.5f}, train={err[2]:.3f}{unit}, "
            f"valid={err[3]:.3f}{unit},\n"
            f"      LR={float(cnn.SGD_LR.get_value()):.6f}, "
            f"MOM={float(cnn.SGD_momentum.get_value()):.6f}, "
            f"{1.0 / max(t_train, 1e-9):.1f} train-it/s, {1.0 / max(t_iter, 1e-9):.1f} it/s, "
            f"{pprinttime(t_passed)}")


def _user_name():
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 (no user name in this environment)
        return "user"


class Console:
    """The interactive console of a :class:`~elektronn.training.trainer.Trainer`.

    Parameters
    ----------
    trainer : Trainer
    stdin, stdout : file objects, optional
        Where commands are read and answers written (default ``sys.stdin``/``sys.stdout``).

    Attributes
    ----------
    namespace : dict
        Names visible to Python lines; kept between commands and sessions.
    """

    def __init__(self, trainer, stdin=None, stdout=None):
        self.trainer = trainer
        self.stdin = stdin
        self.stdout = stdout
        self.prompt = f"{_user_name()}@ELEKTRONN: "
        self.namespace = {}

    # --- I/O -------------------------------------------------------------------------------

    @property
    def _in(self):
        return self.stdin or sys.stdin

    @property
    def _out(self):
        return self.stdout or sys.stdout

    def say(self, text):
        """Write a line to the console's output."""
        print(text, file=self._out, flush=True)

    def interactive(self):
        """Whether commands can be read: standard input is a terminal."""
        try:
            return self._in.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def _readline(self):
        """One line of input, or None at end of input."""
        if self._in is sys.stdin and self._out is sys.stdout:
            try:
                return input(self.prompt)
            except EOFError:
                return None
        self._out.write(self.prompt)
        self._out.flush()
        line = self._in.readline()
        return line.rstrip("\n") if line else None

    # --- the session -----------------------------------------------------------------------

    def interact(self, status=""):
        """Show the status line and menu, then execute commands until one leaves.

        Parameters
        ----------
        status : str
            The status line (see :func:`status_line`).

        Returns
        -------
        {'resume', 'abort', 'kill'}
            ``'abort'`` also at end of input, on a second Ctrl-C and without a terminal.
        """
        if not self.interactive():
            logger.warning("Ctrl-C without a terminal to read commands from: stopping the "
                           "training (saving as 'abort' does)")
            return ABORT
        if status:
            self.say(status)
        self.say(pprintmenu(self.trainer.save_name))
        while True:
            try:
                line = self._readline()
            except KeyboardInterrupt:
                self.say("\nCtrl-C at the prompt: stopping the training (as 'abort')")
                return ABORT
            if line is None:
                self.say("\nEnd of input: stopping the training (as 'abort')")
                return ABORT
            try:
                action = self.execute(line)
            except KeyboardInterrupt:
                self.say("Interrupted")
                continue
            if action is not None:
                return action

    def execute(self, line):
        """Execute one console command.

        Parameters
        ----------
        line : str

        Returns
        -------
        {'resume', 'abort', 'kill'} or None
            None: stay in the console.
        """
        words = line.split()
        if not words or words == ["q"]:
            self.say("Continuing Training")
            return RESUME
        command, args = words[0], words[1:]
        if command in ("abort", "kill") and not args:
            self.say("Stopping the training" + (" (saving)" if command == "abort" else
                                                " (not saving)"))
            return ABORT if command == "abort" else KILL
        handler = getattr(self, f"_cmd_{command}", None) if command.isidentifier() else None
        if command in OPTIMIZERS and not args:
            handler = self._switch_optimizer
            args = [command]
        if handler is None:
            self._python(line)
            return None
        try:
            handler(*args)
        except TypeError as e:
            if "positional argument" not in str(e):
                raise
            self.say(f"{command}: wrong number of arguments; type 'help' for the menu")
        except (ValueError, OSError) as e:
            self.say(f"{command} failed: {e}")
        return None

    # --- commands ----------------------------------------------------------------------------

    def _switch_optimizer(self, name):
        self.trainer.config.optimizer = name
        self.say(f"Changing Training mode... the optimiser is now {name}")

    def _file(self, name):
        path = Path(os.path.expanduser(name))
        return path if path.is_absolute() else self.trainer.save_path / path

    def _cmd_save(self, name="CNN.save"):
        path = self._file(name)
        self.trainer.cnn.saveParameters(str(path), show=False)
        self.say(f"Saving done: {path}")

    def _cmd_load(self, name="CNN.save"):
        path = self._file(name)
        self.trainer.cnn.loadParameters(str(path))
        self.say(f"Loaded! {path}")

    def _cmd_sf(self):
        import matplotlib.pyplot as plt

        from elektronn.net.introspection import plotFilters

        trainer = self.trainer
        written = []
        path = trainer.save_path / "filters_layer0.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # show() on a non-GUI backend
                plotFilters(trainer.cnn, savename=str(path))
            written.append(path)
        except ValueError as e:
            self.say(f"sf: no filters to show ({e})")
        finally:
            plt.close("all")
        trainer.saveHistory(plot=True)
        written.append(trainer.save_path / f"{trainer.save_name}.*.png")
        self.say("Figures written: " + ", ".join(map(str, written)))

    def _cmd_smooth(self, *args):
        self.say("Filter smoothing is not implemented (neither was it in ELEKTRONN 1.0)")

    def _cmd_sethist(self, value):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"expected a positive integer, got {value!r}")
        hist = self.trainer.config.history_freq
        if hist:
            hist[0] = int(value)
        else:
            self.trainer.config.history_freq = [int(value)]
        self.say(f"Monitoring every {int(value)} steps")

    def _cmd_setlr(self, value):
        self.trainer.cnn.setSGDLR(np.float32(float(value)))
        self.say(f"LR = {float(self.trainer.cnn.SGD_LR.get_value()):g}")

    def _cmd_setmom(self, value):
        self.trainer.cnn.setSGDMomentum(np.float32(float(value)))
        self.say(f"momentum = {float(self.trainer.cnn.SGD_momentum.get_value()):g}")

    def _cmd_params(self):
        for k, layer in enumerate(self.trainer.cnn.layers):
            for p in layer.params:
                v = np.asarray(p.get_value())
                self.say(f"Layer {k:2d} {p.name or '':>10s} shape={v.shape}: "
                         f"mean(abs)={np.mean(np.abs(v)):.6e}, std={np.std(v):.6e}, "
                         f"median(abs)={np.median(np.abs(v)):.6e}")

    def _cmd_help(self):
        self.say(pprintmenu(self.trainer.save_name))

    # --- Python ------------------------------------------------------------------------------

    def _python(self, line):
        """Run a line of Python: an expression's value is printed, a statement executed."""
        trainer = self.trainer
        ns = self.namespace
        ns.update(self=trainer, cnn=trainer.cnn, config=trainer.config, data=trainer.data,
                  np=np)
        try:
            try:
                code = compile(line, "<console>", "eval")
            except SyntaxError:
                code = None
            if code is not None:
                value = eval(code, ns)  # noqa: S307 (the user's own console)
                if value is not None:
                    self.say(repr(value))
            else:
                exec(compile(line, "<console>", "exec"), ns)  # noqa: S102
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 (SystemExit too: the console stays open)
            self.say(traceback.format_exc(limit=-3).rstrip())


def open_console(trainer, flag, step, nll, t_train, t_iter, t_passed):
    """The trainer's hook: run a console session for a pending Ctrl-C request.

    Parameters
    ----------
    trainer : Trainer
    flag : InterruptFlag
        Cleared here.
    step, nll, t_train, t_iter, t_passed
        For :func:`status_line`.

    Returns
    -------
    action : {'resume', 'abort', 'kill'}
    paused : float
        Seconds spent in the console (not counted as training time).
    """
    t0 = time.time()
    console = getattr(trainer, "_console", None)
    if console is None:
        console = trainer._console = Console(trainer)
    flag.uninstall()  # Ctrl-C at the prompt raises KeyboardInterrupt
    try:
        action = console.interact(status_line(trainer, step, nll, t_train, t_iter, t_passed))
    finally:
        flag.clear()
        flag.install()
    return action, time.time() - t0
