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

Requires the ``fork`` start method (Linux, macOS with care): the workers inherit the loaded
data instead of pickling it.
"""

import logging
import multiprocessing as mp
import os
import queue
import signal
import time
import traceback

import numpy as np

__all__ = ["BackgroundProc"]

logger = logging.getLogger("elektronn")

_POLL_S = 0.5


def _as_tuple(result):
    return tuple(result) if isinstance(result, list | tuple) else (result,)


def _worker(target, args, kwargs, out, stop, seed):
    """Loop of one worker: produce batches into ``out`` until ``stop`` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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

    Attributes
    ----------
    dtypes, shapes : list
        What every batch has.
    n_proc : int

    Examples
    --------
    >>> bg = BackgroundProc(lambda: np.zeros(3), n_proc=2)
    >>> bg.get()
    array([0., 0., 0.])
    >>> bg.shutdown()
    """

    def __init__(self, target, dtypes=None, shapes=None, n_proc=1, target_args=(),
                 target_kwargs=None, profile=False, prefetch=2, seed=None):
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
        self._ctx = mp.get_context("fork")
        seeds = np.random.SeedSequence(seed).generate_state(self.n_proc)
        self._stop = self._ctx.Event()
        self._queues, self._procs = [], []
        for k in range(self.n_proc):
            q = self._ctx.Queue(maxsize=max(1, int(prefetch)))
            p = self._ctx.Process(target=_worker, daemon=True, name=f"elektronn-batch-{k}",
                                  args=(target, self.target_args, self.target_kwargs, q,
                                        self._stop, int(seeds[k])))
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
