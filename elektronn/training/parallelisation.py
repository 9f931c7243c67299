"""Batch generation in background processes, so that training does not wait for augmentation.

:class:`BackgroundProc` runs a batch function (e.g. ``CNNData.getbatch``) in worker processes.
Each worker keeps up to ``prefetch`` finished batches in its own queue; :meth:`~BackgroundProc.get`
takes them round-robin, as ELEKTRONN 1.0 did with its shared-memory workers.

Differences to ELEKTRONN 1.0: results travel through ``multiprocessing`` queues instead of
shared ctypes arrays (the copy ``get`` made anyway is the unpickling here); every worker
reseeds numpy's global random state with its own seed (docs/differences.md, T5; ``CNNData`` and the
``traindata`` classes also reseed their own generators when they see a new process id);
workers ignore SIGINT, so Ctrl-C reaches only the trainer; an exception in a worker is raised
by :meth:`~BackgroundProc.get` with the worker's traceback. As in ELEKTRONN 1.0 the target is
called once in the parent first: it fails early there, and it fixes the dtypes and shapes
every batch must have (docs/differences.md, T19).

Workers are started with ``spawn`` (a fresh interpreter that receives the pickled target),
never by forking the trainer: forking a process that runs threads (JAX, OpenMP, BLAS) can
deadlock, and Python warns about it. A target that cannot be pickled or whose module cannot
be imported by name (a lambda, a nested function, a class loaded from a file path) falls back
to ``fork``, with a logged warning. Workers exit when their parent dies, whatever kills it
(kill -9, the out-of-memory killer): on Linux the kernel sends them SIGKILL
(``prctl(PR_SET_PDEATHSIG)``), and everywhere a thread in each worker watches the parent.
"""

import ctypes
import importlib.util
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback

import numpy as np

__all__ = ["BackgroundProc"]

logger = logging.getLogger("elektronn")

_POLL_S = 0.5


def _as_tuple(result):
    return tuple(result) if isinstance(result, list | tuple) else (result,)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid):
    """End this process when its parent dies (kill -9 of the trainer included)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc with prctl: the thread below remains
            pass
    if parent_pid is not None and os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(1)
    parent = mp.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is not None:
        def watch():
            multiprocessing.connection.wait([sentinel])  # readable once the parent is gone
            os._exit(1)

        threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _worker(target, args, kwargs, out, stop, seed, parent_pid):
    """Loop of one worker: produce batches into ``out`` until ``stop`` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    np.random.seed(seed)  # T5: the global state differs per worker (warping uses it)
    while not stop.is_set():
        try:
            item = ("ok", _as_tuple(target(*args, **kwargs)))
        except Exception:  # reported to the parent by get()
            item = ("error", traceback.format_exc())
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        if item[0] == "error":
            return


def _start_method(target, args, kwargs):
    """'spawn' if the target travels by pickle to a fresh interpreter, else 'fork'."""
    try:
        pickle.dumps((target, args, kwargs))
    except Exception as e:  # noqa: BLE001 (any reason: lambdas, locals, open files)
        return "fork", f"it cannot be pickled ({type(e).__name__}: {e})"
    func = getattr(target, "__func__", target)
    owner = getattr(target, "__self__", None)
    module = getattr(type(owner) if owner is not None else func, "__module__", None)
    if module not in (None, "__main__", "builtins") and module not in sys.builtin_module_names:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return "fork", f"its module {module!r} cannot be imported by name"
    return "spawn", None


def _drain(q):
    """Discard what is in ``q`` now (complete messages only: a started one is read to its end)."""
    try:
        while True:
            q.get_nowait()
    except (queue.Empty, OSError, ValueError):
        pass


class BackgroundProc:
    """Call ``target(*target_args, **target_kwargs)`` repeatedly in ``n_proc`` processes.

    Parameters
    ----------
    target : callable
        Returns an array or a tuple of arrays of constant dtypes and shapes.
    dtypes, shapes : list, optional
        The dtypes and shapes of the results (default: those of a first call in this
        process).
    n_proc : int
        Number of worker processes.
    target_args : tuple
    target_kwargs : dict
    profile : bool
        Log how long :meth:`get` waited for each batch (debug level).
    prefetch : int
        Finished batches each worker may hold.
    seed : int, optional
        Base of the workers' numpy seeds (default: drawn from fresh entropy).
    start_method : {'spawn', 'forkserver', 'fork'}, optional
        How workers are started (default: 'spawn' where the target can be pickled, see the
        module notes).

    Attributes
    ----------
    dtypes, shapes : list
        What every batch has.
    n_proc : int

    Examples
    --------
    >>> bg = BackgroundProc(np.zeros, n_proc=2, target_args=(3,))
    >>> bg.get()
    array([0., 0., 0.])
    >>> bg.shutdown()
    """

    def __init__(self, target, dtypes=None, shapes=None, n_proc=1, target_args=(),
                 target_kwargs=None, profile=False, prefetch=2, seed=None, start_method=None):
        self.target = target
        self.target_args = tuple(target_args)
        self.target_kwargs = dict(target_kwargs or {})
        self.n_proc = max(1, int(n_proc))
        self.profile = profile
        if dtypes is None or shapes is None:
            first = _as_tuple(target(*self.target_args, **self.target_kwargs))
            dtypes = [np.asarray(a).dtype for a in first] if dtypes is None else dtypes
            shapes = [np.shape(a) for a in first] if shapes is None else shapes
        self.dtypes = [np.dtype(d) for d in dtypes]
        self.shapes = [tuple(s) for s in shapes]
        if start_method is None:
            start_method, why = _start_method(target, self.target_args, self.target_kwargs)
            if why:
                logger.warning("Batch workers are forked, not spawned, because the batch "
                               "function %r %s; forking a process with threads may deadlock",
                               target, why)
        self.start_method = start_method
        self._ctx = mp.get_context(start_method)
        seeds = np.random.SeedSequence(seed).generate_state(self.n_proc)
        self._stop = self._ctx.Event()
        self._queues, self._procs = [], []
        for k in range(self.n_proc):
            q = self._ctx.Queue(maxsize=max(1, int(prefetch)))
            p = self._ctx.Process(target=_worker, daemon=True, name=f"elektronn-batch-{k}",
                                  args=(target, self.target_args, self.target_kwargs, q,
                                        self._stop, int(seeds[k]),
                                        None if start_method == "forkserver" else os.getpid()))
            p.start()
            self._queues.append(q)
            self._procs.append(p)
        self._next = 0
        logger.info("Started %i background processes for batch creation (pids %s)",
                    self.n_proc, [p.pid for p in self._procs])

    def get(self):
        """The next batch (round-robin over the workers).

        Returns
        -------
        tuple of ndarray
            Or the single array if the target returns one.

        Raises
        ------
        RuntimeError
            If a worker failed (with its traceback), died, or returned other shapes or
            dtypes than :attr:`shapes` / :attr:`dtypes`.
        """
        if not self._procs:
            raise RuntimeError("BackgroundProc was shut down")
        k = self._next
        self._next = (k + 1) % self.n_proc
        q, p = self._queues[k], self._procs[k]
        t0 = os.times().elapsed
        while True:
            try:
                status, value = q.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not p.is_alive():
                    raise RuntimeError(f"batch worker {p.name} (pid {p.pid}) died with exit "
                                       f"code {p.exitcode}") from None
        if self.profile:
            logger.debug("BackgroundProc.get waited %.4f s", os.times().elapsed - t0)
        if status == "error":
            raise RuntimeError(f"batch worker {p.name} failed:\n{value}")
        shapes = [np.shape(a) for a in value]
        dtypes = [np.asarray(a).dtype for a in value]
        if shapes != self.shapes or dtypes != self.dtypes:
            raise RuntimeError(f"batch worker {p.name} returned shapes {shapes} / dtypes "
                               f"{dtypes}, expected {self.shapes} / {self.dtypes} (batch "
                               "shapes must be constant)")
        return value if len(value) > 1 else value[0]

    def reset(self):
        """Kept for ELEKTRONN 1.0's API (used after Ctrl-C); the workers need no restart."""

    def shutdown(self, timeout=5.0):
        """Stop and join the workers (terminating those that do not stop in ``timeout`` s).

        A worker exits only after its queue's feeder thread has written the batches it still
        buffers into the pipe, so the queues are drained for as long as workers are alive.
        """
        if not self._procs:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            for q in self._queues:
                _drain(q)
            for p in self._procs:
                p.join(0.02)
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(1.0)
        for q in self._queues:
            q.close()
            q.cancel_join_thread()
        self._procs, self._queues = [], []
        logger.info("Background processes shut down")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False

    def __del__(self):
        try:
            self.shutdown(timeout=1.0)
        except Exception:  # noqa: S110 (interpreter shutdown)
            pass
