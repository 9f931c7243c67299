"""elektronn: 2-D/3-D convolutional networks for (bio)medical image volumes.

A port of ELEKTRONN 1.0 (Theano) to PyTensor 3.  The network API lives in
:mod:`elektronn.net`, the PyTensor Ops it is built on in :mod:`elektronn.ops`, and the
choice of compilation backend in :mod:`elektronn.backend` (imported, and PyTensor configured,
as soon as anything that builds graphs is imported).  Pure numpy parts such as
:mod:`elektronn.net.netutils` and :mod:`elektronn.net.paramfile` do not import PyTensor.
"""

import importlib
import os
import sys

__version__ = "1.1.0.dev0"

# PyTensor reads its compile directory once, at import: set it before any submodule imports it.
if os.environ.get("ELEKTRONN_COMPILEDIR") and "pytensor" not in sys.modules:
    os.environ["PYTENSOR_FLAGS"] = ",".join(
        f for f in (os.environ.get("PYTENSOR_FLAGS", ""),
                    "base_compiledir=" + os.environ["ELEKTRONN_COMPILEDIR"]) if f)

_SUBMODULES = ("backend", "ops", "net", "training", "data", "utils", "demo")


def __getattr__(name):
    """Import subpackages on first access (``elektronn.backend.set_mode(...)`` works after a
    plain ``import elektronn``)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"elektronn.{name}")
    raise AttributeError(f"module 'elektronn' has no attribute {name!r}")
