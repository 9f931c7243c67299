"""Small helpers shared by the package: time formatting, a progress display, random sources.

``pprinttime`` is the formatter of ELEKTRONN 1.0; :class:`Progress` is the one progress helper
used wherever long loops report on the terminal (``show_progress=True``).
"""

import sys
import time

import numpy as np

__all__ = ["pprinttime", "Progress", "as_rng"]


def as_rng(rng):
    """A random source: ``None`` -> numpy's global state (as ELEKTRONN 1.0); an int -> a new
    ``Generator``; a ``Generator`` or ``RandomState`` is returned as is."""
    if rng is None:
        return np.random
    if isinstance(rng, np.random.Generator | np.random.RandomState):
        return rng
    return np.random.default_rng(rng)


def pprinttime(t):
    """Format a duration in seconds as ELEKTRONN 1.0 did.

    Parameters
    ----------
    t : float
        Seconds.

    Returns
    -------
    str
        ``'t=1.2h'`` above 4000 s, ``'t=7m'`` above 300 s, else ``'t=42s'``.

    Examples
    --------
    >>> pprinttime(12.4), pprinttime(600), pprinttime(7200)
    ('t=12s', 't=10m', 't=2.0h')
    """
    if t > 4000:
        return f"t={t / 3600:.1f}h"
    if t > 300:
        return f"t={t / 60:.0f}m"
    return f"t={t:.0f}s"


class Progress:
    """A one-line progress display: ``'\\r<label>: 42.00% in t=3s; estimate: t=7s'``.

    Parameters
    ----------
    total : int
        Number of steps of the whole job.
    label : str
        Text in front of the percentage.
    stream : file-like, optional
        Where to write (``sys.stderr`` when None).
    enabled : bool
        When False nothing is written (the object still counts steps and time).
    min_interval : float
        Seconds between two redraws (the last step is always drawn).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(2, "Work", stream=out) as bar:
    ...     bar.update()
    ...     bar.update()
    >>> out.getvalue().endswith("100.00% in t=0s; estimate: t=0s - done\\n")
    True
    """

    def __init__(self, total, label="Progress", stream=None, enabled=True, min_interval=0.2):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.min_interval = min_interval
        self.done = 0
        self.t0 = time.perf_counter()
        self._last_draw = -float("inf")

    @property
    def elapsed(self):
        """Seconds since the display was created."""
        return time.perf_counter() - self.t0

    def _out(self):
        return sys.stderr if self.stream is None else self.stream

    def write(self, text):
        """Write ``text`` to the stream (when enabled) and flush it."""
        if self.enabled:
            out = self._out()
            out.write(text)
            out.flush()

    def update(self, n=1):
        """Count ``n`` finished steps and redraw the line (at most every ``min_interval`` s)."""
        self.done = min(self.done + n, self.total)
        now = time.perf_counter()
        if self.done < self.total and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        elapsed = now - self.t0
        fraction = self.done / self.total
        estimate = elapsed / fraction if fraction > 0 else 0.0
        self.write(f"\r{self.label}: {100 * fraction:.2f}% in {pprinttime(elapsed)}; "
                   f"estimate: {pprinttime(estimate)}")

    def close(self):
        """End the line with ``' - done'``."""
        self.write(" - done\n")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.write("\n")
        return False
