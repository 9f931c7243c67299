"""Shared test helpers."""

import zlib

import numpy as np
import pytest

import elektronn  # noqa: F401  (configures PyTensor: float32, compile dir)


@pytest.fixture
def rng(request):
    """A generator per test, seeded from the test's id: fresh data per test, reproducible."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def distinct(rng, shape, spacing=0.05):
    """Random float32 values at least ``spacing`` apart, so max pooling has no near-ties."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * spacing).reshape(shape).astype(np.float32)
