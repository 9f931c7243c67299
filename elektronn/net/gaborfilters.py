"""Gabor and blob filters for initialising 2-D convolution filters.

:func:`makeGabor`, :func:`makeGaborFilters` and :func:`blob` follow ELEKTRONN 1.0
:func:`gabor_initial_weights` builds the weights of
``ConvLayer2d.gaborInitialisation``, with the original's crashes
fixed (docs/differences.md, N40): any number of filters and any number of input channels work.

Pure numpy; no PyTensor.
"""

from __future__ import annotations

import logging
import operator

import numpy as np

from elektronn.utils import as_rng

__all__ = ["makeGabor", "makeGaborFilters", "blob", "gabor_initial_weights"]

logger = logging.getLogger("elektronn")

_SIGMA = 0.35  # width of the Gaussian envelope in units of the half filter size


def _filter_size(size) -> int:
    try:
        size = operator.index(size)
    except TypeError:
        raise TypeError(f"filter size must be an integer, got {size!r}") from None
    if size < 1:
        raise ValueError(f"filter size must be at least 1, got {size}")
    return size


def makeGabor(filter_angle, n_modes, size, offset):
    """Make one square Gabor filter.

    The carrier ``cos(2 pi (freq * y' + phase))`` runs along ``y'``, the axis at
    ``filter_angle`` degrees to the rows (axis 0), under a Gaussian envelope.

    Parameters
    ----------
    filter_angle : float
        Orientation in degrees, ``0 <= filter_angle < 360``. Angles 180 degrees apart
        give point-mirrored filters.
    n_modes : float
        Spatial frequency: ``freq = n_modes / pi * 1.6`` cycles per half filter size
        (plus one pixel).
    size : int
        Edge length of the filter.
    offset : float
        Phase offset; ``phase = offset / 180 * pi`` in units of cycles.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)``, zero mean, divided by its sum of squares (not by its
        square root). A 1-pixel filter is all zeros.

    Raises
    ------
    ValueError
        If ``filter_angle`` is outside ``[0, 360)`` or ``size < 1``.

    Notes
    -----
    With ``M = (size - 1) // 2`` for odd and ``size // 2`` for even sizes, the grid is
    ``X, Y = meshgrid(linspace(-M, M, size))`` (X varies along axis 1). With
    ``theta = filter_angle / 180 * pi``::

        x' = ( X cos(theta) + Y sin(theta)) / (M + 1)
        y' = (-X sin(theta) + Y cos(theta)) / (M + 1)
        g  = exp(-(x'^2 + y'^2) / (2 * 0.35^2)) * cos(2 pi (freq * y' + phase))
    """
    if not 0 <= filter_angle < 360:
        raise ValueError(
            f"makeGabor: filter_angle must lie in [0, 360) degrees, got {filter_angle!r}"
        )
    size = _filter_size(size)
    freq = n_modes / np.pi * 1.6
    theta = float(filter_angle) / 180.0 * np.pi
    phase = float(offset) / 180.0 * np.pi
    half = (size - 1) // 2 if size % 2 == 1 else size // 2

    coords = np.linspace(-half, half, size)
    x, y = np.meshgrid(coords, coords)
    x_rot = x / (half + 1) * np.cos(theta) + y / (half + 1) * np.sin(theta)
    y_rot = -x / (half + 1) * np.sin(theta) + y / (half + 1) * np.cos(theta)
    gabor = np.exp(-0.5 * (x_rot**2 + y_rot**2) / _SIGMA**2)
    gabor = gabor * np.cos(2.0 * np.pi * (freq * y_rot + phase))
    gabor = gabor - gabor.mean()
    energy = np.square(gabor).sum()
    if energy > 0:  # only a 1-pixel filter is all zeros after removing the mean
        gabor = gabor / energy
    return gabor.astype(np.float32)


def makeGaborFilters(size, number):
    """Make ``number`` first-order and ``number`` second-order Gabor filters.

    Parameters
    ----------
    size : int
        Edge length of the filters.
    number : int
        How many filters of each order.

    Returns
    -------
    numpy.ndarray
        float32 ``(2 * number, size, size)``: first ``makeGabor(a, 1, size, 45)`` for the
        angles ``a = k * 360 / number``, then ``makeGabor(a, 2, size, 0)`` for
        ``a = k * 180 / number`` (``k = 0 .. number - 1``). Empty for ``number == 0``.

    Notes
    -----
    The original took the angles from ``arange(0, 360, 360 / number)``, which for some
    numbers (e.g. 161) yields one angle too many (360, refused by :func:`makeGabor`);
    here there are always exactly ``number`` angles of the same values.
    """
    size = _filter_size(size)
    number = operator.index(number)
    if number < 0:
        raise ValueError(f"number of filters must not be negative, got {number}")
    if number == 0:
        return np.zeros((0, size, size), dtype=np.float32)
    first = [makeGabor(a, 1, size, 45) for a in np.arange(number) * (360.0 / number)]
    second = [makeGabor(a, 2, size, 0) for a in np.arange(number) * (180.0 / number)]
    return np.array(first + second, dtype=np.float32)


def blob(size):
    """Return a Gaussian blob filter.

    Parameters
    ----------
    size : int
        Edge length of the filter.

    Returns
    -------
    numpy.ndarray
        float64 ``(size, size)``: ``exp(-(x^2 + y^2) / 2)`` on a ``linspace(-2, 2, size)``
        grid, divided by its sum of squares (float64, as in the original).
    """
    size = _filter_size(size)
    x, y = np.meshgrid(np.linspace(-2, 2, size), np.linspace(-2, 2, size))
    gauss = np.exp(-0.5 * (np.square(x) + np.square(y)))
    return gauss / np.square(gauss).sum()



def gabor_initial_weights(filter_shape, rng=None):
    """Weights for the Gabor initialisation of a 2-D conv layer.

    The ``nof`` filters are, in order:

    * odd ``nof``: ``makeGaborFilters(x, (nof - 1) // 2) / 10``, then ``blob(x)``;
    * even ``nof``: ``makeGaborFilters(x, (nof - 2) // 2) / 10``, then ``blob(x) / 10``,
      then one filter of ``N(0, 0.02)`` noise.

    Every input channel gets the same stack.

    Parameters
    ----------
    filter_shape : tuple of int
        ``(nof, ch, x, y)`` with square filters (``x == y``).
    rng : numpy.random.Generator or numpy.random.RandomState or int, optional
        Source of the noise filter (even ``nof``). ``None`` uses numpy's global random
        state, as the original did.

    Returns
    -------
    numpy.ndarray
        float32 array of ``filter_shape``.

    Raises
    ------
    ValueError
        If ``filter_shape`` is not 4-D, has non-square filters, or no filters.

    Notes
    -----
    Fixes of N40 (docs/differences.md): the original crashed for odd ``nof`` (a wrong index when
    appending the blob), for ``nof`` of 1 or 2 (no Gabor filters), and for fewer than 3
    channels, and left channels beyond the third at zero.
    """
    shape = tuple(operator.index(s) for s in filter_shape)
    if len(shape) != 4:
        raise ValueError(f"Gabor initialisation needs a 4-D filter shape, got {shape}")
    nof, channels, x, y = shape
    if x != y:
        raise ValueError(f"Gabor initialisation needs square filters, got {x}x{y}")
    if nof < 1:
        raise ValueError(f"Gabor initialisation needs at least one filter, got nof={nof}")
    if nof % 2 == 1:
        stack = [makeGaborFilters(x, (nof - 1) // 2) / 10, blob(x)[np.newaxis]]
    else:
        noise = as_rng(rng).normal(0, 0.02, (x, y))
        gabors = makeGaborFilters(x, (nof - 2) // 2) / 10
        stack = [gabors, blob(x)[np.newaxis] / 10, noise[np.newaxis]]
    filters = np.concatenate(stack, axis=0).astype(np.float32)
    weights = np.empty(shape, dtype=np.float32)
    weights[:] = filters[:, np.newaxis]
    logger.debug("Gabor initialisation of filters %s", shape)
    return weights
