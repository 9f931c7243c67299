"""The one place that chooses how elektronn's PyTensor graphs are compiled.

Importing :mod:`elektronn` configures PyTensor for this library:

* ``floatX = float32`` (the original ran in float32; parameter files store float32),
* no BLAS link detection for the C linker (a pip install has no BLAS to link; PyTensor then
  calls numpy's matrix product, which is as fast, and the detection would warn and cost seconds),
* the compile cache in ``$ELEKTRONN_COMPILEDIR`` when that variable is set (PyTensor's default
  ``~/.pytensor`` otherwise; applied by ``import elektronn``, before PyTensor is imported),
* glibc's allocator keeps freed memory for reuse (see :func:`keep_freed_memory`).

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
``"numba"``
    PyTensor's numba linker.  elektronn's Ops run there in numba's object mode, and the first
    call of graphs with many slices (pooling, MFP) JIT-compiles for minutes.
``"jax"``
    PyTensor's JAX linker (XLA); use it to run on a GPU when ``jax`` has one
    (``pip install elektronn[jax]`` plus a CUDA build of jaxlib).
``"py"``
    PyTensor's ``FAST_COMPILE`` (few rewrites, Python thunks; for debugging).

Choose with ``elektronn.backend.set_mode("jax")`` before compiling a net, or with the
environment variable ``ELEKTRONN_MODE``.

Measured on a 2-core machine (``python benchmarks/run_all.py``, fresh processes): the MNIST
example net (batch 4) was built, compiled and had taken its first SGD step after 2.3 s with an
empty cache and 0.6 s with a warm one in ``"numpy"`` mode, against 45 s and ~2 s with the C
linker; see ``docs/performance.md`` for the step times.
"""

import ctypes
import functools
import logging
import os

__all__ = ["MODES", "get_mode", "set_mode", "mode_name", "floatX", "keep_freed_memory"]

logger = logging.getLogger("elektronn")

MODES = ("numpy", "c", "numba", "jax", "py")
floatX = "float32"

import pytensor  # noqa: E402

pytensor.config.floatX = floatX
if "blas__ldflags" not in os.environ.get("PYTENSOR_FLAGS", ""):
    pytensor.config.blas__ldflags = ""

_mode_name = None

_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value
_TRIM_THRESHOLD = 1 << 30
_USER_MALLOC_VARS = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"}


def keep_freed_memory():
    """Let glibc's ``malloc`` keep freed memory in the process instead of returning it at once.

    Every step allocates the same large temporaries (layer outputs, gradients) and frees them
    again.  By default glibc serves arrays from a few hundred kB up with fresh ``mmap`` pages
    and returns them on ``free``, so each step pays a page fault for every 4 kB it touches: a
    training step of the MNIST example net (batch 64) took 21 ms instead of 8 ms.  Arrays up to
    32 MB now come from the heap, and up to 1 GB of freed heap stays mapped for reuse.

    Applied when this module is imported (by anything that builds graphs).  Skipped when the
    environment already sets these glibc malloc thresholds (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_MAX_`` or a ``malloc`` entry in
    ``GLIBC_TUNABLES``), when ``ELEKTRONN_KEEP_MEMORY=0``, and on other C libraries.

    Returns
    -------
    bool
        Whether the setting was applied.
    """
    if os.environ.get("ELEKTRONN_KEEP_MEMORY", "1") == "0":
        return False
    if _USER_MALLOC_VARS & set(os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(
        mallopt(m_trim_threshold, _TRIM_THRESHOLD))


keep_freed_memory()


def set_mode(name):
    """Select the compilation mode for every function elektronn compiles from now on.

    Parameters
    ----------
    name : {"numpy", "c", "numba", "jax", "py"}
        See the module docstring.  Functions that are already compiled keep their mode.
    """
    global _mode_name
    name = str(name).lower()
    if name not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {name!r}")
    if name == "jax":
        from elektronn.ops import jax_dispatch  # noqa: F401  (registers the Ops with JAX)
    _mode_name = name
    logger.info("elektronn compilation mode: %s", name)


def mode_name():
    """Return the name of the current mode (see :data:`MODES`)."""
    if _mode_name is None:
        set_mode(os.environ.get("ELEKTRONN_MODE", "numpy"))
    return _mode_name


def get_mode(name=None):
    """Return the PyTensor ``Mode`` for ``name`` (default: the current mode)."""
    from pytensor.compile.mode import get_mode as _pt_get_mode

    name = mode_name() if name is None else str(name).lower()
    if name not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {name!r}")
    if name == "jax":
        from elektronn.ops import jax_dispatch  # noqa: F401
    if name == "numpy":
        return _numpy_mode()
    return {
        "c": lambda: _pt_get_mode("CVM"),
        "numba": lambda: _pt_get_mode("NUMBA"),
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
