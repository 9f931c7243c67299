"""elektronn: 2-D/3-D convolutional networks for (bio)medical image volumes.

A port of ELEKTRONN 1.0 (Theano) to PyTensor 3.  The network API lives in
:mod:`elektronn.net`, the PyTensor Ops it is built on in :mod:`elektronn.ops`, and the
configuration of PyTensor and the choice of compile mode in :mod:`elektronn.backend`.

Importing elektronn or any of its modules changes no global setting (PyTensor's configuration,
the environment, matplotlib's backend).  Building the first net applies elektronn's settings
through :func:`elektronn.backend.configure`; :func:`elektronn.backend.settings` shows them and
:func:`elektronn.backend.restore` undoes them.  See ``CONTRIBUTING.md`` for how the package is
layered.
"""

import importlib

__version__ = "1.1.0.dev0"

_SUBMODULES = ("backend", "ops", "net", "training", "data", "utils", "demo")


def __getattr__(name):
    """Import subpackages on first access (``elektronn.backend.set_mode(...)`` works after a
    plain ``import elektronn``)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"elektronn.{name}")
    raise AttributeError(f"module 'elektronn' has no attribute {name!r}")
