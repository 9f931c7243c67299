"""Shared test helpers."""

import zlib

import numpy as np
import pytest

import elektronn  # noqa: F401  (configures PyTensor: float32, compile dir)
from elektronn.ops import _kernels

pytest_plugins = ["tests.ci_skips"]


@pytest.fixture
def rng(request):
    """A generator per test, seeded from the test's id: fresh data per test, reproducible."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def distinct(rng, shape, spacing=0.05):
    """Random float32 values at least ``spacing`` apart, so max pooling has no near-ties."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * spacing).reshape(shape).astype(np.float32)


@pytest.fixture
def c_kernels():
    """The compiled C kernel library; skips the test where it is unavailable."""
    lib = _kernels.kernel_library()
    if lib is None:
        pytest.skip("C kernels unavailable")
    return lib


def assert_numpy_fallback_matches(f, x, monkeypatch):
    """``f(x)`` gives the same arrays after the C library is made unavailable."""
    fast = f(x)
    asked = []

    def no_library():
        asked.append(True)
        return None

    monkeypatch.setattr(_kernels, "kernel_library", no_library)
    for got, want in zip(f(x), fast, strict=True):
        np.testing.assert_array_equal(got, want)
    assert asked, "the numpy fallback was not consulted"
