"""The one place that configures PyTensor and the process for elektronn, and chooses modes.

Importing elektronn changes nothing outside it.  Everything elektronn needs from the process is
applied by :func:`configure`, which building the first net (``MixedConvNN``) or asking for a
compile mode (:func:`get_mode`) calls; :func:`settings` shows every setting and
:func:`restore` undoes them.  :func:`configure` applies:

``floatX``
    PyTensor's ``floatX = "float32"``: the original ran in float32 and parameter files store
    float32; elektronn's graphs are built with it.
``blas__ldflags``
    ``""`` (no BLAS link detection for PyTensor's C linker; a pip install has no BLAS to link,
    PyTensor then calls numpy's matrix product, which is as fast, and the detection would warn
    and cost seconds).  Left alone when ``PYTENSOR_FLAGS`` sets it.
``compiledir``
    PyTensor's compile directory (which also holds elektronn's C kernels) inside
    ``$ELEKTRONN_COMPILEDIR`` when that is set.  PyTensor fixes its compile directory the first
    time it uses it, so this works until then and cannot be undone by :func:`restore`.
``keep_freed_memory``
    glibc's allocator keeps freed memory for reuse (see :func:`keep_freed_memory`).
``OMP_WAIT_POLICY``
    ``PASSIVE`` in the environment unless it is set (idle OpenMP threads of the C kernels sleep
    instead of spinning, so they do not compete with numpy's BLAS threads between calls; measured
    2-5x slower training steps otherwise).  Read by OpenMP when the kernels are first loaded.
``kernels``
    ``"numpy"`` when ``ELEKTRONN_KERNELS=numpy``: the numpy kernels instead of the C ones.

Environment variables
---------------------
This module is the only one that reads elektronn's environment variables (:func:`environ`):

``ELEKTRONN_MODE``
    The default compile mode (see below).
``ELEKTRONN_COMPILEDIR``
    The compile cache directory.
``ELEKTRONN_KERNELS``
    ``numpy`` to use the numpy kernels instead of the compiled C kernels.
``ELEKTRONN_KEEP_MEMORY``
    ``0`` to leave glibc's allocator alone.
``ELEKTRONN_MNIST``, ``ELEKTRONN_MNIST_URL``
    Where MNIST is, and where to download it from (see :mod:`elektronn.training.traindata`).

Modes
-----
``"numpy"`` (default)
    PyTensor's graph rewrites, then every node runs as Python/numpy (elementwise nodes as single
    numpy ufuncs, matrix products through numpy's BLAS) and elektronn's convolution, pooling
    and MFP kernels as compiled C with OpenMP.  Nothing is compiled per graph: a new net is
    ready in under a second (2-3 s the first time on a machine, when the kernels are built).
``"c"``
    PyTensor's C linker (``cvm``): fused elementwise loops compiled to C.  The first use of
    each new node kind compiles a C module (45 for the MNIST example net, ~45 s with an empty
    cache, cached on disk); steps were no faster than ``"numpy"`` in our benchmarks.
``"jax"``
    PyTensor's JAX linker (XLA); use it to run on a GPU when ``jax`` has one
    (``pip install elektronn[jax]`` plus a CUDA build of jaxlib).
``"py"``
    PyTensor's ``FAST_COMPILE`` (few rewrites, Python thunks; for debugging).

PyTensor's numba linker is not offered: elektronn's Ops have no numba implementations, so they
would run in numba's object mode, and graphs with many slices took minutes to JIT-compile (see
``docs/backends.md``).

A net's mode is fixed when the net is built: ``MixedConvNN(..., mode="jax")``, or the current
mode at that moment, which :func:`set_mode`, the :func:`mode` context or ``ELEKTRONN_MODE``
choose:

>>> from elektronn import backend
>>> with backend.mode("py"):
...     backend.mode_name()
'py'

Measured on a 2-core machine (``python benchmarks/run_all.py``, fresh processes): the MNIST
example net (batch 4) was built, compiled and had taken its first SGD step after 2.3 s with an
empty cache and 0.6 s with a warm one in ``"numpy"`` mode, against 45 s and ~2 s with the C
linker; see ``docs/performance.md`` for the step times.
"""

import contextlib
import ctypes
import functools
import logging
import os
from pathlib import Path

__all__ = [
    "MODES", "floatX", "configure", "restore", "settings", "environ", "get_mode", "set_mode",
    "mode", "mode_name", "check_mode", "keep_freed_memory", "HEAP_ARRAY_BYTES",
]

logger = logging.getLogger("elektronn")

MODES = ("numpy", "c", "jax", "py")
floatX = "float32"

ENVIRONMENT = {
    "ELEKTRONN_MODE": None,
    "ELEKTRONN_COMPILEDIR": None,
    "ELEKTRONN_KERNELS": "c",
    "ELEKTRONN_KEEP_MEMORY": "1",
    "ELEKTRONN_MNIST": None,
    "ELEKTRONN_MNIST_URL": None,
}
"""elektronn's environment variables and their defaults (``None``: unset)."""

_mode_name = None
_saved = None  # what configure() changed: {setting: previous value}; None when not configured

HEAP_ARRAY_BYTES = 32 << 20
"""The largest array :func:`keep_freed_memory` lets glibc serve from reused heap memory (its
largest allowed mmap threshold); larger ones are mapped fresh, a page fault per 4 kB, whenever
they are allocated."""
_MMAP_THRESHOLD = HEAP_ARRAY_BYTES
_TRIM_THRESHOLD = 1 << 30
_GLIBC_DEFAULT_THRESHOLD = 128 << 10  # glibc's initial mmap and trim thresholds
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_USER_MALLOC_VARS = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"}


def environ(name):
    """Return the value of one of elektronn's environment variables (see :data:`ENVIRONMENT`).

    Parameters
    ----------
    name : str
        A key of :data:`ENVIRONMENT`, e.g. ``"ELEKTRONN_MODE"``.

    Returns
    -------
    str or None
        The variable's value, or its default when it is unset or empty.

    Examples
    --------
    >>> environ("ELEKTRONN_KEEP_MEMORY") in ("0", "1")
    True
    """
    if name not in ENVIRONMENT:
        raise ValueError(f"name must be one of {tuple(ENVIRONMENT)}, got {name!r}")
    return os.environ.get(name) or ENVIRONMENT[name]


# --------------------------------------------------------------------------- configuration


def configure():
    """Apply elektronn's process settings (see the module docstring); a no-op when applied.

    Building a net and :func:`get_mode` call it, so code that uses elektronn does not need to.
    Call it yourself before building PyTensor graphs from :mod:`elektronn.ops` by hand if you
    want elektronn's settings (float32, the C kernels' thread policy, ...) for them.

    Returns
    -------
    dict
        :func:`settings` after applying.
    """
    global _saved
    if _saved is not None:
        return settings()
    import pytensor

    from elektronn.ops import _kernels

    saved = {"floatX": pytensor.config.floatX, "blas__ldflags": _config_value("blas__ldflags"),
             "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
             "kernels": _kernels.use_c_kernels, "keep_freed_memory": False}
    pytensor.config.floatX = floatX
    if "blas__ldflags" not in os.environ.get("PYTENSOR_FLAGS", ""):
        pytensor.config.blas__ldflags = ""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _kernels.use_c_kernels = environ("ELEKTRONN_KERNELS").lower() != "numpy"
    if not _kernels.use_c_kernels:
        logger.info("ELEKTRONN_KERNELS=numpy: using the numpy kernels")
    _set_compiledir(environ("ELEKTRONN_COMPILEDIR"))
    saved["keep_freed_memory"] = keep_freed_memory()
    _saved = saved
    logger.debug("elektronn backend configured: %s", settings())
    return settings()


def restore():
    """Undo :func:`configure` (except the compile directory, which PyTensor fixes once used).

    PyTensor's ``floatX`` and ``blas__ldflags``, ``OMP_WAIT_POLICY`` and the kernel choice get
    their previous values; glibc's malloc thresholds are set back to glibc's initial values.
    Nets built before keep working (their graphs are typed already); the next net built
    configures again.

    Examples
    --------
    >>> import pytensor
    >>> _ = configure()
    >>> pytensor.config.floatX
    'float32'
    >>> restore()
    >>> settings()["configured"]
    False
    >>> _ = configure()  # as building the next net would
    """
    global _saved
    if _saved is None:
        return
    import pytensor

    from elektronn.ops import _kernels

    saved, _saved = _saved, None
    pytensor.config.floatX = saved["floatX"]
    _set_config_value("blas__ldflags", saved["blas__ldflags"])
    if saved["OMP_WAIT_POLICY"] is None:
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = saved["OMP_WAIT_POLICY"]
    _kernels.use_c_kernels = saved["kernels"]
    if saved["keep_freed_memory"]:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)


def settings():
    """Every setting elektronn controls, with its current value.

    Returns
    -------
    dict
        ``configured`` (whether :func:`configure` is in effect), ``mode`` (the current default
        mode), PyTensor's ``floatX`` and ``blas__ldflags`` (``None`` while PyTensor has not
        computed its default), ``compiledir`` (PyTensor's base
        compile directory, or ``$ELEKTRONN_COMPILEDIR`` before configuring),
        ``keep_freed_memory`` (whether glibc's thresholds were set), ``OMP_WAIT_POLICY`` and
        ``kernels`` (``"c"`` or ``"numpy"``).

    Examples
    --------
    >>> sorted(settings())  # doctest: +NORMALIZE_WHITESPACE
    ['OMP_WAIT_POLICY', 'blas__ldflags', 'compiledir', 'configured', 'floatX',
     'keep_freed_memory', 'kernels', 'mode']
    """
    import pytensor

    from elektronn.ops import _kernels

    return {
        "configured": _saved is not None,
        "mode": mode_name(),
        "floatX": pytensor.config.floatX,
        "blas__ldflags": _config_value("blas__ldflags"),
        "compiledir": str(_compiledir_if_set() or environ("ELEKTRONN_COMPILEDIR")
                          or pytensor.config.base_compiledir),
        "keep_freed_memory": bool(_saved and _saved["keep_freed_memory"]),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "kernels": "c" if _kernels.use_c_kernels else "numpy",
    }


_UNSET = None
"""What :func:`_config_value` returns for a PyTensor setting that still has its lazy default."""


def _config_value(name):
    """A PyTensor setting's value, or ``None`` while it has its lazy default.

    Reading a lazy default computes it, which costs seconds for ``blas__ldflags`` (PyTensor looks
    for a BLAS library and warns) and fixes ``compiledir`` for good.
    """
    import pytensor

    return getattr(pytensor.config._config_var_dict[name], "val", _UNSET)


def _set_config_value(name, value):
    """Set a PyTensor setting, or give it back its lazy default for ``None``."""
    import pytensor

    if value is _UNSET:
        param = pytensor.config._config_var_dict[name]
        if hasattr(param, "val"):
            del param.val
    else:
        setattr(pytensor.config, name, value)


def _compiledir_if_set():
    """PyTensor's compile directory if it is fixed already (reading it would fix it)."""
    return _config_value("compiledir")


def _set_compiledir(base):
    """Put PyTensor's compile directory under ``base``, as ``base_compiledir=base`` would."""
    if not base:
        return
    import pytensor

    current = _compiledir_if_set()
    base = Path(base).expanduser().resolve()
    if current is not None:
        if base not in Path(current).parents:
            logger.warning("ELEKTRONN_COMPILEDIR=%s is ignored: PyTensor already uses %s (set "
                           "it before compiling anything)", base, current)
        return
    try:
        from pytensor.configdefaults import _default_compiledir

        leaf = _default_compiledir().name  # compiledir_format: platform, versions
    except (ImportError, AttributeError):
        leaf = "compiledir"
    pytensor.config.compiledir = base / leaf


def keep_freed_memory():
    """Let glibc's ``malloc`` keep freed memory in the process instead of returning it at once.

    Every step allocates the same large temporaries (layer outputs, gradients) and frees them
    again.  By default glibc serves arrays from a few hundred kB up with fresh ``mmap`` pages
    and returns them on ``free``, so each step pays a page fault for every 4 kB it touches: a
    training step of the MNIST example net (batch 64) took 21 ms instead of 8 ms.  Arrays up to
    32 MB now come from the heap, and up to 1 GB of freed heap stays mapped for reuse.

    Applied by :func:`configure`.  Skipped when the environment already sets these glibc malloc
    thresholds (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_MAX_`` or a
    ``malloc`` entry in ``GLIBC_TUNABLES``), when ``ELEKTRONN_KEEP_MEMORY=0``, and on other C
    libraries.

    Returns
    -------
    bool
        Whether the setting was applied.
    """
    if environ("ELEKTRONN_KEEP_MEMORY") == "0":
        return False
    if _USER_MALLOC_VARS & set(os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


# ---------------------------------------------------------------------------------- modes


def check_mode(name):
    """Return ``name`` as a mode name (lower case); ``ValueError`` unless it is in :data:`MODES`."""
    name = str(name).lower()
    if name not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {name!r}")
    return name


def set_mode(name):
    """Select the mode of the nets built from now on (and of :func:`get_mode` without a name).

    Parameters
    ----------
    name : {"numpy", "c", "jax", "py"}
        See the module docstring.  Nets built before keep their mode.
    """
    global _mode_name
    _mode_name = check_mode(name)
    logger.info("elektronn compilation mode: %s", _mode_name)


@contextlib.contextmanager
def mode(name):
    """Context in which :func:`mode_name` is ``name``: nets built inside it use that mode.

    Parameters
    ----------
    name : {"numpy", "c", "jax", "py"}
        See the module docstring.

    Examples
    --------
    >>> with mode("py"):
    ...     mode_name()
    'py'
    """
    global _mode_name
    name = check_mode(name)
    before, _mode_name = _mode_name, name
    try:
        yield name
    finally:
        _mode_name = before


def mode_name():
    """Return the name of the current mode (see :data:`MODES`).

    The mode chosen by :func:`set_mode` or :func:`mode`, else ``$ELEKTRONN_MODE``, else
    ``"numpy"``.
    """
    if _mode_name is not None:
        return _mode_name
    return check_mode(environ("ELEKTRONN_MODE") or "numpy")


def get_mode(name=None):
    """Return the PyTensor ``Mode`` for ``name`` (default: the current mode).

    Calls :func:`configure` first: graphs compiled in an elektronn mode get its settings.

    Parameters
    ----------
    name : {"numpy", "c", "jax", "py"}, optional
        See the module docstring.

    Returns
    -------
    pytensor.compile.mode.Mode
    """
    from pytensor.compile.mode import get_mode as _pt_get_mode

    name = mode_name() if name is None else check_mode(name)
    configure()
    if name == "numpy":
        return _numpy_mode()
    return {
        "c": lambda: _pt_get_mode("CVM"),
        "jax": lambda: _pt_get_mode("JAX"),
        "py": lambda: _pt_get_mode("FAST_COMPILE"),
    }[name]().excluding(*_EXCLUDED)


_EXCLUDED = ("symbolic_op_recognition",)
"""Rewrites no elektronn mode uses: PyTensor 3 turns ``exp(x) / sum(exp(x))`` into a
``Softmax`` ``OpFromGraph`` whose inner graph is compiled with PyTensor's default (numba)
linker on its first call, which cost ~16 s of a cold compile; the plain graph fuses instead."""


@functools.cache
def _numpy_mode():
    """The ``"numpy"`` mode: PyTensor's ``fast_run`` rewrites, then Python thunks.

    Elemwise fusion is off (a fused ``Composite`` would run as a Python loop over the elements)
    and so are in-place elementwise rewrites (numpy would compute into a new array and copy it
    back); :mod:`elektronn.ops.numpy_mode` keeps every elementwise node on one numpy ufunc and
    moves conv layers' bias and relu into their convolution (:mod:`elektronn.ops.fusion`).
    """
    from pytensor.compile.mode import Mode

    from elektronn.ops.numpy_mode import REWRITES, NumpyLinker

    mode = Mode(linker=NumpyLinker(), optimizer="fast_run").excluding(
        *_EXCLUDED, "fusion", "inplace_elemwise_optimizer")
    return mode.register(*REWRITES)
