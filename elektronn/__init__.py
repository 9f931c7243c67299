"""elektronn: 2-D/3-D convolutional networks for (bio)medical image volumes.

A port of ELEKTRONN 1.0 (Theano) to PyTensor 3.  The network API lives in
:mod:`elektronn.net`, the PyTensor Ops it is built on in :mod:`elektronn.ops`, and the
choice of compilation backend in :mod:`elektronn.backend`.
"""

__version__ = "1.1.0.dev0"

from elektronn import backend  # noqa: E402,F401  (configures PyTensor before any graph is built)
