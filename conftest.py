"""pytest setup for the whole repository.

The tests in ``tests/`` and the doctests of ``elektronn/``.

``pyproject.toml`` runs pytest with ``--doctest-modules`` over both, so every example in a
docstring runs.  The JAX implementations (``elektronn/ops/jax_dispatch.py``) import JAX, an
optional dependency: without it that module is not collected.
"""

import importlib.util

pytest_plugins = ["tests.ci_skips"]

collect_ignore = [] if importlib.util.find_spec("jax") else ["elektronn/ops/jax_dispatch.py"]
