"""The CI skip policy (tests/ci_skips.py) seen from a pytest run of its own."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]

TESTS = """
import pytest

def test_golden():
    pytest.skip("golden files not available")

def test_py2():
    pytest.skip("set ELEKTRONN_PY2_PYTHON to a Python 2.7")

def test_jax():
    pytest.importorskip("a_module_that_does_not_exist")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False
"""


@pytest.mark.parametrize("ci, failed, skipped", [("true", 2, 1), ("", 0, 3)])
def test_skips_fail_only_under_ci(pytester, monkeypatch, ci, failed, skipped):
    monkeypatch.setenv("CI", ci)
    # the run of its own starts in a temporary folder: ``tests`` is importable from the repo
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-p", "tests.ci_skips", "-rs")
    result.assert_outcomes(failed=failed, skipped=skipped, xfailed=1)
    if failed:
        result.stdout.fnmatch_lines(["*skipped under CI=true, where it must run: golden files*"])
