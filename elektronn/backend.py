"""The one place that chooses how elektronn's PyTensor graphs are compiled.

Importing :mod:`elektronn` configures PyTensor for this library:

* ``floatX = float32`` (the original ran in float32; parameter files store float32),
* no BLAS link detection for the C linker (a pip install has no BLAS to link; PyTensor then
  calls numpy's matrix product, which is as fast, and the detection would warn and cost seconds),
* the compile cache in ``$ELEKTRONN_COMPILEDIR`` when that variable is set (PyTensor's default
  ``~/.pytensor`` otherwise; applied by ``import elektronn``, before PyTensor is imported).

Modes
-----
``"c"`` (default)
    PyTensor's C linker (``cvm``).  Graphs compile in about a second and are cached on disk;
    elektronn's convolution kernels are compiled C with OpenMP.
``"numba"``
    PyTensor's numba linker.  elektronn's Ops run there in numba's object mode, and the first
    call of graphs with many slices (pooling, MFP) JIT-compiles for minutes.
``"jax"``
    PyTensor's JAX linker (XLA); use it to run on a GPU when ``jax`` has one
    (``pip install elektronn[jax]`` plus a CUDA build of jaxlib).
``"py"``
    Pure Python/numpy thunks (for debugging: no compilation at all).

Choose with ``elektronn.backend.set_mode("jax")`` before compiling a net, or with the
environment variable ``ELEKTRONN_MODE``.

Measured on a 2-core machine (``benchmarks/bench_compile.py``): a 3-D pooling/MFP graph
(forward and gradient) was ready for its first call after about 1 s with the C linker when
the compile cache was warm (10-20 s with an empty cache) against 2-6 minutes with the numba
linker, which is why ``"c"`` is the default.
"""

import logging
import os

__all__ = ["MODES", "get_mode", "set_mode", "mode_name", "floatX"]

logger = logging.getLogger("elektronn")

MODES = ("c", "numba", "jax", "py")
floatX = "float32"

import pytensor  # noqa: E402

pytensor.config.floatX = floatX
if "blas__ldflags" not in os.environ.get("PYTENSOR_FLAGS", ""):
    pytensor.config.blas__ldflags = ""

_mode_name = None


def set_mode(name):
    """Select the compilation mode for every function elektronn compiles from now on.

    Parameters
    ----------
    name : {"c", "numba", "jax", "py"}
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
        set_mode(os.environ.get("ELEKTRONN_MODE", "c"))
    return _mode_name


def get_mode(name=None):
    """Return the PyTensor ``Mode`` for ``name`` (default: the current mode)."""
    from pytensor.compile.mode import get_mode as _pt_get_mode

    name = mode_name() if name is None else str(name).lower()
    if name not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {name!r}")
    if name == "jax":
        from elektronn.ops import jax_dispatch  # noqa: F401
    return {
        "c": lambda: _pt_get_mode("CVM"),
        "numba": lambda: _pt_get_mode("NUMBA"),
        "jax": lambda: _pt_get_mode("JAX"),
        "py": lambda: _pt_get_mode("FAST_COMPILE"),
    }[name]()
