"""Plots of a network's filters, activations and parameter/activation histograms.

The functions of ELEKTRONN 1.0's ``elektronn.net.introspection``, with the
original's plotting bugs fixed (docs/differences.md, N43): subplots are numbered from 1, reshapes
use integers,
:func:`plotFilters` saves its image *before* showing it, and 3-D filters and activations are
shown as mosaics of 2-D slices.

Backend: importing this module neither imports ``matplotlib.pyplot`` nor chooses a backend;
the functions that draw figures import pyplot when called, and matplotlib picks its backend
as usual (the non-interactive ``'Agg'`` where there is no display).

Figures: with ``no_show=False`` the functions draw pyplot figures and call ``plt.show()``.
Under a non-interactive backend ``show`` does nothing and the figures stay open (save or
close them with pyplot).  With ``no_show=True`` no figure is made at all; the functions only
compute and return their images or histograms.  Statistics that the original printed go to
``logging.getLogger("elektronn")`` at INFO level.
"""

import logging
import math

import numpy as np

__all__ = [
    "plotFilters",
    "showActivations",
    "showParamHistogram",
    "showActivityHistogram",
    "embedMatricesInGray",
    "showMultipleFiguresAdd",
]

logger = logging.getLogger("elektronn")


def _pyplot():
    """``matplotlib.pyplot``, imported when a function draws (not when this module is)."""
    import matplotlib.pyplot as plt

    return plt


def _value(var):
    """The numpy value of a parameter (shared) or of a symbolic weight (e.g. tied, ``W.T``)."""
    return np.asarray(var.get_value() if hasattr(var, "get_value") else var.eval())


def _weights(layer):
    """A layer's weight matrices: ``W``, or ``W_in`` and ``W_hid`` of a recurrent layer."""
    return [getattr(layer, name) for name in ("W", "W_in", "W_hid") if hasattr(layer, name)]


def _debug_functions(cnn):
    if not cnn.debug_functions:
        logger.warning("No debug functions found in cnn! Compile them first "
                       "(cnn.compileDebugFunctions())")
    return cnn.debug_functions


def _filter_mosaic(W, channel, normalize):
    """Gray mosaic of one input channel: 2-D filters in a near 16:9 grid; 3-D filters
    ``(nof, fz, ch, fx, fy)`` as one row of z-slices per filter."""
    if W.ndim == 4:
        return embedMatricesInGray(W[:, channel], normalize=normalize)
    nof, fz = W.shape[:2]
    tiles = W[:, :, channel].reshape(nof * fz, W.shape[3], W.shape[4])
    return embedMatricesInGray(tiles, normalize=normalize, fixed_n_horizontal=fz)


def plotFilters(cnn, layer=0, channel=None, normalize=False, savename="filters_layer0.png"):
    """Draw the filters of a conv layer as a mosaic, save it to ``savename``, then show it.

    Parameters
    ----------
    cnn : MixedConvNN
        The network.
    layer : int
        Index into ``cnn.layers``; the layer must be a 2-D or 3-D conv layer.
    channel : int, optional
        Input channel to draw.  None: an RGB mosaic if the layer has exactly 3 input
        channels, otherwise channel 0.
    normalize : bool
        Scale every tile to ``[0, 1]`` (see :func:`embedMatricesInGray`).
    savename : str or path-like
        Image file written with ``savefig(..., bbox_inches='tight')`` before ``plt.show()``.

    Returns
    -------
    numpy.ndarray
        The gray mosaic (float32, 2-D), or for RGB the three channel mosaics stacked on the
        last axis, shifted by ``min(0, min)`` and scaled to uint8 ``0..255``.  A 2-D layer's
        ``(nof, ch, fx, fy)`` filters are tiled as by :func:`embedMatricesInGray`; a 3-D
        layer's ``(nof, fz, ch, fx, fy)`` filters give one row per filter and one column per
        z-slice.

    Raises
    ------
    ValueError
        If the layer is not a conv layer or ``channel`` is out of range.
    """
    plt = _pyplot()
    lay = cnn.layers[layer]
    W = _value(lay.W) if hasattr(lay, "W") else None
    if W is None or W.ndim not in (4, 5):
        raise ValueError(f"plotFilters needs a conv layer, but layer {layer} is a "
                         f"{type(lay).__name__}")
    n_channels = W.shape[1] if W.ndim == 4 else W.shape[2]
    if channel is None and n_channels == 3:
        mat = np.dstack([_filter_mosaic(W, c, normalize) for c in range(3)])
        lower = min(0, mat.min())
        spread = (mat.max() - lower) or 1.0
        mat = (255.0 / spread * (mat - lower)).astype(np.uint8)
        title = f"Layer {layer} filters (RGB)"
    else:
        channel = 0 if channel is None else channel
        if not 0 <= channel < n_channels:
            raise ValueError(f"channel must lie in [0, {n_channels}), got {channel}")
        mat = _filter_mosaic(W, channel, normalize)
        title = f"Layer {layer} filters (channel {channel})"
    fig = plt.figure()
    plt.imshow(mat, interpolation="nearest", cmap="gray")
    plt.title(title)
    logger.info("Saving filter image as %s", savename)
    fig.savefig(savename, bbox_inches="tight")
    plt.show()
    return mat


def _first_class_map(probs):
    """Probability of class 0 as an image: ``(N, classes)`` gives the N examples as a grid of
    ``d`` rows (``d`` the largest divisor of N up to ``sqrt(N)``); conv outputs give the
    first example's ``(x, y)`` map or its ``(z, x, y)`` map as a mosaic of z-slices."""
    if probs.ndim == 2:
        n = len(probs)
        rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        return probs[:, 0].reshape(rows, -1)
    first = probs[0, 0]
    return first if first.ndim == 2 else embedMatricesInGray(first)


def showActivations(cnn, data, show_first_class_prob=False, no_show=False):
    """Mosaics of every conv layer's activations for the first example of ``data``.

    Needs :meth:`MixedConvNN.compileDebugFunctions` (otherwise it logs a warning and returns
    an empty list).

    Parameters
    ----------
    cnn : MixedConvNN
        The network.
    data : numpy.ndarray
        Input batch of ``cnn.input_shape``.
    show_first_class_prob : bool
        Also make the map of ``cnn.class_probabilities(data)`` for class 0.
    no_show : bool
        Only return the images; draw no figure.

    Returns
    -------
    list of numpy.ndarray
        One float32 mosaic per conv layer, each tile normalised to ``[0, 1]``: a 2-D layer's
        ``(ch, x, y)`` activation as ``ch`` tiles, a 3-D layer's ``(z, ch, x, y)`` activation
        as ``z * ch`` tiles with one row per z-slice.  Layers with other outputs (perceptrons)
        are skipped.  With ``show_first_class_prob`` the class-0 probability map is appended
        last.

    Notes
    -----
    Shown as one 15x14-inch figure with a subplot ``Layer-<i> Activity`` per layer (grid for
    all ``len(cnn.layers)`` layers), and the class-0 map in a second figure.
    """
    plt = _pyplot()
    functions = _debug_functions(cnn)
    fig = None if no_show or not functions else plt.figure(figsize=(15, 14))
    images = []
    for i, function in enumerate(functions):
        activity = np.asarray(function(data))[0]
        if activity.ndim == 3:
            image = embedMatricesInGray(activity, 1, True)
        elif activity.ndim == 4:
            z, ch, x, y = activity.shape
            image = embedMatricesInGray(activity.reshape(z * ch, x, y), 1, True,
                                        fixed_n_horizontal=ch)
        else:
            continue
        images.append(image)
        if fig is not None:
            showMultipleFiguresAdd(fig, len(cnn.layers), i + 1, image, f"Layer-{i} Activity")
    if fig is not None:
        fig.tight_layout()

    if show_first_class_prob:
        prob_map = _first_class_map(np.asarray(cnn.class_probabilities(data)))
        images.append(prob_map)
        if not no_show:
            plt.figure()
            plt.imshow(prob_map, interpolation="nearest", cmap="gray")
            plt.title("prediction map of first class")
    if not no_show:
        plt.show()
    return images


def _histogram(values, xlabel, ylabel, draw):
    """100-bin histogram of ``values``; drawn as a bar chart (bars 0.7 bins wide) if ``draw``."""
    plt = _pyplot()
    counts, edges = np.histogram(values.ravel(), bins=100)
    if draw:
        plt.figure()
        plt.bar((edges[:-1] + edges[1:]) / 2, counts, align="center",
                width=0.7 * (edges[1] - edges[0]))
        plt.xlabel(xlabel, fontsize=16)
        plt.ylabel(ylabel, fontsize=16)
    return counts, edges


def showParamHistogram(cnn, no_show=False, onlyW=True):
    """Histograms and statistics of every layer's weights (or of all its parameters).

    For each parameter it logs ``Layer  i: mean=..., median=..., mean(abs)=...,
    median(abs)=...`` and ``Layer  i: filter_shape = ...`` (layers counted from 1).

    Parameters
    ----------
    cnn : MixedConvNN
        The network (conv, perceptron and recurrent layers; it need not be compiled).
    no_show : bool
        Only return the histograms; draw no figure.
    onlyW : bool
        Only the weights (``W``; ``W_in`` and ``W_hid`` of a recurrent layer), else every
        entry of ``layer.params``.

    Returns
    -------
    list of tuple
        ``(counts, bin_edges)`` of :func:`numpy.histogram` with 100 bins, one per parameter,
        in layer order.

    Notes
    -----
    Shown as one figure per parameter, x label ``<shape> parameters``, y label
    ``# (Layer i)``; ``plt.show()`` is called after each layer.
    """
    plt = _pyplot()
    histograms = []
    for i, layer in enumerate(cnn.layers, start=1):
        for param in _weights(layer) if onlyW else layer.params:
            values = _value(param)
            logger.info("Layer %2d: mean=%3.6e, median=%3.6e, mean(abs)=%2.6e, median(abs)=%2.6e",
                        i, np.mean(values), np.median(values), np.mean(np.abs(values)),
                        np.median(np.abs(values)))
            logger.info("Layer  %d: filter_shape = %s", i, values.shape)
            histograms.append(_histogram(values, f"{values.shape} parameters",
                                         f"# (Layer {i})", not no_show))
        if not no_show:
            plt.show()
    return histograms


def showActivityHistogram(cnn, data, no_show=False):
    """Histograms of every layer's activations for the whole batch ``data``.

    Needs :meth:`MixedConvNN.compileDebugFunctions` (otherwise it logs a warning and returns
    an empty list).

    Parameters
    ----------
    cnn : MixedConvNN
        The network.
    data : numpy.ndarray
        Input batch of ``cnn.input_shape``.
    no_show : bool
        Only return the histograms; draw no figure.

    Returns
    -------
    list of tuple
        ``(counts, bin_edges)`` of :func:`numpy.histogram` with 100 bins, one per layer.

    Notes
    -----
    Shown as one figure per layer, x label ``<N> activations``, y label ``# (Layer i)``
    (layers counted from 1).
    """
    plt = _pyplot()
    histograms = []
    for i, function in enumerate(_debug_functions(cnn), start=1):
        activity = np.asarray(function(data))
        histograms.append(_histogram(activity, f"{activity.size} activations",
                                     f"# (Layer {i})", not no_show))
    if not no_show:
        plt.show()
    return histograms


def embedMatricesInGray(mat, border_width=1, normalize=False, output_ratio=1.7,
                        fixed_n_horizontal=0):
    """Tile a stack of matrices into one 2-D canvas, row-major.

    Parameters
    ----------
    mat : array_like
        ``(n, h, w)`` stack.
    border_width : int
        Zero pixels after (right of and below) every tile.
    normalize : bool
        Scale every tile to ``(m - min) / (max - min + 1e-8)``; else use the raw values.
    output_ratio : float
        Aimed width:height ratio in tiles: ``n_hor = int(sqrt(n * output_ratio))``.
    fixed_n_horizontal : int
        Number of tiles per row (used instead of ``output_ratio`` if positive).

    Returns
    -------
    numpy.ndarray
        float32 ``(n_vert * (h + border_width), n_hor * (w + border_width))`` with
        ``n_vert = n // n_hor + 1`` (as the original: one empty row if ``n_hor`` divides
        ``n``).  Tile ``k`` sits in row ``k // n_hor`` and column ``k % n_hor``.

    Raises
    ------
    ValueError
        If ``mat`` is not 3-D.
    """
    mat = np.asarray(mat)
    if mat.ndim != 3:
        raise ValueError(f"embedMatricesInGray needs an (n, h, w) stack, got shape {mat.shape}")
    n, h, w = mat.shape
    if fixed_n_horizontal > 0:
        n_hor = int(fixed_n_horizontal)
    else:
        n_hor = max(1, int(math.sqrt(n * output_ratio)))
    n_vert = n // n_hor + 1
    step_y, step_x = h + border_width, w + border_width
    canvas = np.zeros((n_vert * step_y, n_hor * step_x), dtype=np.float32)
    for k, tile in enumerate(mat):
        if normalize:
            tile = (tile - tile.min()) / (tile.max() - tile.min() + 1e-8)
        row, col = divmod(k, n_hor)
        canvas[row * step_y:row * step_y + h, col * step_x:col * step_x + w] = tile
    return canvas


def showMultipleFiguresAdd(fig, n, i, image, title, isGray=True):
    """Add ``image`` as subplot ``i`` (counted from 1) of ``n`` in a near-square grid of ``fig``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    n : int
        Number of subplots the grid must hold: ``ceil(sqrt(n))`` rows by
        ``ceil(n / rows)`` columns.
    i : int
        Position, ``1 <= i <= n`` (matplotlib's numbering).
    image : array_like
        Image for ``imshow`` (nearest-neighbour interpolation).
    title : str
        Subplot title.
    isGray : bool
        Use the gray colormap.

    Returns
    -------
    matplotlib.axes.Axes
        The new subplot.
    """
    rows = math.ceil(math.sqrt(n))
    cols = math.ceil(n / rows)
    ax = fig.add_subplot(rows, cols, i)
    ax.set_title(title)
    ax.imshow(image, interpolation="nearest", cmap="gray" if isGray else None)
    return ax
