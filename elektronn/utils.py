"""Small helpers shared by the package: time formatting, console logging, random sources.

``pprinttime`` is the formatter of ELEKTRONN 1.0. Long loops show their progress with
``tqdm.auto`` (on stderr, a widget in notebooks) where they have ``show_progress=True``;
everything else the package says goes through the ``"elektronn"`` logger, which the
command-line entry points connect to the console with :func:`console_logging`.
"""

import contextlib
import logging
import sys

import numpy as np
from tqdm.auto import tqdm

__all__ = ["pprinttime", "console_logging", "as_rng"]


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


class _TqdmHandler(logging.StreamHandler):
    """A stream handler that writes through ``tqdm.write``, so log lines and bars do not mix."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001  (logging's contract: report, never raise)
            self.handleError(record)


@contextlib.contextmanager
def console_logging(level=logging.INFO, fmt="%(message)s", stream=None, only=None):
    """Show the ``"elektronn"`` log on the console while the block runs (for entry points).

    The messages go to ``stream`` (default ``sys.stderr``, where the progress bars are), in
    order with the bars; the logger's level and handlers are restored afterwards, so importing
    or calling the library never configures logging by itself.

    Parameters
    ----------
    level : int
        Lowest level shown.
    fmt : str
        ``logging.Formatter`` format.
    stream : file-like, optional
        Where to write (default ``sys.stderr`` at entry).
    only : str, optional
        Show messages below WARNING only from this logger and its children (e.g.
        ``"elektronn.demo"``: the demo's steps without the nets' construction log).

    Yields
    ------
    logging.Handler
        The handler, e.g. to add a file handler beside it with the same format.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with console_logging(stream=out):
    ...     logging.getLogger("elektronn").info("hello")
    >>> out.getvalue()
    'hello\\n'
    """
    logger = logging.getLogger("elektronn")
    handler = _TqdmHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
    if only is not None:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name == only
                          or r.name.startswith(only + "."))
    old_level = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
