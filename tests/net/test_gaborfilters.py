"""Tests of elektronn.net.gaborfilters (docs/differences.md, N40)."""

import math

import numpy as np
import pytest

from elektronn.net.gaborfilters import blob, gabor_initial_weights, makeGabor, makeGaborFilters


def reference_gabor(angle, n_modes, size, offset):
    """ELEKTRONN 1.0's formula written out pixel by pixel; returns (normalised, raw)."""
    half = (size - 1) // 2 if size % 2 else size // 2
    step = 2 * half / (size - 1) if size > 1 else 0.0
    theta, phase = angle / 180 * math.pi, offset / 180 * math.pi
    freq = n_modes / math.pi * 1.6
    raw = np.empty((size, size))
    for row in range(size):
        for col in range(size):
            x, y = -half + col * step, -half + row * step
            xr = (x * math.cos(theta) + y * math.sin(theta)) / (half + 1)
            yr = (-x * math.sin(theta) + y * math.cos(theta)) / (half + 1)
            envelope = math.exp(-(xr**2 + yr**2) / (2 * 0.35**2))
            raw[row, col] = envelope * math.cos(2 * math.pi * (freq * yr + phase))
    raw -= raw.mean()
    return raw / np.square(raw).sum(), raw


def dominant_frequency(filt, pad=2048):
    """(cycles per pixel along axis 0, along axis 1) of the largest FFT peak."""
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(filt, (pad, pad))))
    row, col = np.unravel_index(spectrum.argmax(), spectrum.shape)
    return (row - pad // 2) / pad, (col - pad // 2) / pad


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8, 11])
@pytest.mark.parametrize(("angle", "n_modes", "offset"), [(0, 1, 45), (37.5, 2, 0), (300, 3, 10)])
def test_make_gabor_matches_formula(size, angle, n_modes, offset):
    gabor = makeGabor(angle, n_modes, size, offset)
    assert gabor.shape == (size, size) and gabor.dtype == np.float32
    expected, raw = reference_gabor(angle, n_modes, size, offset)
    np.testing.assert_allclose(gabor, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # zero mean; divided by the sum of squares, so that sum(g^2) * sum(raw^2) == 1
    assert abs(gabor.mean()) <= 1e-6 * np.abs(gabor).max()
    assert np.square(gabor.astype(np.float64)).sum() * np.square(raw).sum() == pytest.approx(
        1, rel=1e-5
    )


def test_make_gabor_single_pixel_is_zero():
    gabor = makeGabor(10, 1, 1, 45)
    assert gabor.shape == (1, 1) and gabor[0, 0] == 0


@pytest.mark.parametrize("angle", [-1, 360, 361.5, float("nan")])
def test_make_gabor_rejects_angles(angle):
    with pytest.raises(ValueError, match=r"filter_angle must lie in \[0, 360\)"):
        makeGabor(angle, 1, 5, 0)


@pytest.mark.parametrize("size", [0, -3])
def test_make_gabor_rejects_sizes(size):
    with pytest.raises(ValueError, match="size"):
        makeGabor(0, 1, size, 0)


@pytest.mark.parametrize("n_modes", [2, 3, 4])
@pytest.mark.parametrize("angle", [0, 30, 75, 110, 160, 200, 300])
def test_make_gabor_orientation_and_frequency(angle, n_modes):
    size, half = 65, 32
    f_rows, f_cols = dominant_frequency(makeGabor(angle, n_modes, size, 0))
    # the carrier runs along (-sin, cos) of the angle, in (axis 1, axis 0) = (X, Y)
    orientation = math.degrees(math.atan2(-f_cols, f_rows)) % 180
    difference = (orientation - angle % 180 + 90) % 180 - 90
    assert abs(difference) < 1.0
    expected = n_modes * 1.6 / math.pi / (half + 1)  # cycles per pixel
    assert math.hypot(f_rows, f_cols) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(("n_modes", "offset"), [(1, 45), (2, 0), (1, 0)])
def test_make_gabor_rotates_with_the_angle(n_modes, offset):
    base = makeGabor(30, n_modes, 7, offset)
    atol = 1e-6 * np.abs(base).max()
    np.testing.assert_allclose(makeGabor(120, n_modes, 7, offset), np.rot90(base, -1), atol=atol)
    np.testing.assert_allclose(makeGabor(210, n_modes, 7, offset), np.rot90(base, 2), atol=atol)


@pytest.mark.parametrize("number", [1, 3, 6])
def test_make_gabor_filters(number):
    filters = makeGaborFilters(5, number)
    assert filters.shape == (2 * number, 5, 5) and filters.dtype == np.float32
    for k in range(number):
        np.testing.assert_array_equal(filters[k], makeGabor(k * 360 / number, 1, 5, 45))
        np.testing.assert_array_equal(filters[number + k], makeGabor(k * 180 / number, 2, 5, 0))


def test_make_gabor_filters_edge_counts():
    assert makeGaborFilters(4, 0).shape == (0, 4, 4)
    # arange(0, 360, 360/161) of the original has 162 entries (the last one 360)
    assert makeGaborFilters(3, 161).shape == (322, 3, 3)
    with pytest.raises(ValueError):
        makeGaborFilters(3, -1)


@pytest.mark.parametrize("size", [1, 2, 5, 6])
def test_blob(size):
    filt = blob(size)
    grid = np.linspace(-2, 2, size)
    gauss = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / 2)
    assert filt.shape == (size, size)
    np.testing.assert_allclose(filt, gauss / np.square(gauss).sum(), rtol=1e-12)
    assert np.square(filt).sum() * np.square(gauss).sum() == pytest.approx(1)
    np.testing.assert_allclose(filt, filt.T)
    np.testing.assert_allclose(filt, filt[::-1, ::-1])
    if size % 2:
        assert filt[size // 2, size // 2] == filt.max()


@pytest.mark.parametrize("nof", [1, 2, 5, 6])
@pytest.mark.parametrize("channels", [1, 4])
def test_gabor_initial_weights(nof, channels):
    size = 5
    weights = gabor_initial_weights((nof, channels, size, size), rng=0)
    assert weights.shape == (nof, channels, size, size) and weights.dtype == np.float32
    for ch in range(1, channels):  # every channel holds the same stack
        np.testing.assert_array_equal(weights[:, ch], weights[:, 0])
    stack = weights[:, 0]
    n_gabor = nof - 1 if nof % 2 else nof - 2
    np.testing.assert_allclose(stack[:n_gabor], makeGaborFilters(size, n_gabor // 2) / 10)
    if nof % 2:
        np.testing.assert_allclose(stack[-1], blob(size), rtol=1e-6)
    else:
        np.testing.assert_allclose(stack[-2], blob(size) / 10, rtol=1e-6)
        noise = np.random.default_rng(0).normal(0, 0.02, (size, size))
        np.testing.assert_allclose(stack[-1], noise, rtol=1e-6)


def test_gabor_initial_weights_noise_statistics_and_seeding():
    weights = gabor_initial_weights((4, 3, 31, 31), rng=np.random.default_rng(1))
    noise = weights[-1, 0]
    assert abs(noise.mean()) < 0.005 and noise.std() == pytest.approx(0.02, rel=0.1)
    np.testing.assert_array_equal(weights, gabor_initial_weights((4, 3, 31, 31), rng=1))
    np.random.seed(7)  # without rng: numpy's global random state, as the original
    first = gabor_initial_weights((2, 1, 3, 3))
    np.random.seed(7)
    np.testing.assert_array_equal(first, gabor_initial_weights((2, 1, 3, 3)))


@pytest.mark.parametrize(
    ("shape", "match"),
    [((4, 1, 3, 5), "square"), ((4, 1, 3), "4-D"), ((0, 1, 3, 3), "at least one")],
)
def test_gabor_initial_weights_rejects_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        gabor_initial_weights(shape)
