"""Shared test helpers."""

import functools
import os
import platform
import zlib

import numpy as np
import pytest

from elektronn import backend
from elektronn.ops import _kernels

# elektronn's settings (float32, compile dir, ...) for the graphs the tests build by hand, as
# building a net would apply them; tests/test_imports.py checks that imports alone change nothing.
backend.configure()


@pytest.fixture(autouse=True)
def _no_mnist_download(monkeypatch):
    """No test downloads MNIST from the internet: the download URL is a closed local port
    (tests of the download serve files on 127.0.0.1 themselves)."""
    monkeypatch.setenv("ELEKTRONN_MNIST_URL", "http://127.0.0.1:9/no-network-in-tests/")


@pytest.fixture(autouse=True)
def _seeded_global_numpy(request):
    """numpy's global random state seeded from the test's id (restored afterwards): nets built
    without ``seed`` (which draw it from there) and global-state users are reproducible."""
    state = np.random.get_state()
    np.random.seed(zlib.crc32(request.node.nodeid.encode()))
    yield
    np.random.set_state(state)


@pytest.fixture
def rng(request):
    """A generator per test, seeded from the test's id: fresh data per test, reproducible."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def distinct(rng, shape, spacing=0.05):
    """Random float32 values at least ``spacing`` apart, so max pooling has no near-ties."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * spacing).reshape(shape).astype(np.float32)


# The C kernels' vector widths: (compiler flags, CPU flags needed, lanes of the conv kernel).
# ``-march=native`` picks one of them at run time; each is compiled and tested here, so a bug
# in the path this machine does not take is still caught.  AVX-512 has 16 lanes; AVX2 and SSE2
# 8 (SSE2 as two 4-wide halves, and the pooling kernels' generic, non-AVX code).
KERNEL_WIDTHS = {
    "avx512": (("-march=x86-64", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl",
                "-mfma"), {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"}, 16),
    "avx2": (("-march=x86-64", "-mavx2", "-mfma"), {"avx2", "fma"}, 8),
    "sse2": (("-march=x86-64",), {"sse2"}, 8),
}


def _cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def kernel_build(width):
    """The kernel library compiled for ``width`` (a key of :data:`KERNEL_WIDTHS`)."""
    cc = _kernels.compiler()
    if cc is None:
        pytest.skip("C kernels unavailable: no C compiler")
    target, needed, _ = KERNEL_WIDTHS[width]
    if platform.machine() not in ("x86_64", "AMD64") or not needed <= _cpu_flags():
        pytest.skip(f"CPU cannot run the {width} kernels")
    return _kernels._build(cc, target)


@pytest.fixture(params=sorted(KERNEL_WIDTHS))
def c_kernels(request, monkeypatch):
    """The C kernel library of each vector width, in use by :mod:`elektronn.ops._kernels`.

    Skips where no compiler is available (a failure under ``CI=true``) or where the CPU cannot
    run that width.
    """
    if os.environ.get("ELEKTRONN_KERNELS", "c").lower() == "numpy":
        pytest.skip("C kernels unavailable: ELEKTRONN_KERNELS=numpy")
    lib = kernel_build(request.param)
    monkeypatch.setattr(_kernels, "_lib", lib)
    return lib


@pytest.fixture
def force_batch_layout(monkeypatch):
    """A function ``force(merged)`` that makes the C convolution kernels lay the examples side by
    side in one plane (``merged=True``) or one plane each, whatever the shapes; the plans made
    meanwhile are forgotten after the test."""
    def force(merged):
        monkeypatch.setattr(_kernels, "_merged", lambda *args, **kwargs: merged)
        _kernels._clear_plans()

    yield force
    _kernels._clear_plans()


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
