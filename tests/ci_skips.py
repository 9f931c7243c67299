"""Pytest plugin: under ``CI=true`` a skip fails, unless the environment may lack the thing.

Locally, tests skip where golden files, JAX or a C compiler are missing.  CI installs all of
them, so there such a skip means the suite silently stopped testing something: it is reported
as a failure instead.  Skips whose reason starts with one of :data:`ALLOWED_IN_CI` (things CI
deliberately does not provide) stay skips.
"""

import os

import pytest

ALLOWED_IN_CI = (
    "set ELEKTRONN_PY2_PYTHON",  # a Python 2.7 interpreter with numpy: not part of CI
    "X11/Wayland platforms only",
    "CPU cannot run",  # a kernel vector width the CI machine's CPU lacks
)


def in_ci():
    """Whether the ``CI`` environment variable asks for strict skips."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(ALLOWED_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where it must run: {reason}"
