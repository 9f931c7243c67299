"""Tests of elektronn.net.introspection (docs/differences.md, N43)."""

import logging
import os
import subprocess
import sys

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from elektronn.net.convnet import MixedConvNN
from elektronn.net.introspection import (
    embedMatricesInGray,
    plotFilters,
    showActivations,
    showActivityHistogram,
    showMultipleFiguresAdd,
    showParamHistogram,
)


@pytest.fixture(autouse=True)
def shows(monkeypatch):
    """Record ``plt.show`` calls instead of showing (never blocks); close figures after."""
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(plt.get_fignums()))
    plt.close("all")
    yield calls
    plt.close("all")


@pytest.fixture(scope="module")
def net2d():
    """conv (6 filters 5x5, pool 2) -> conv (4 filters 3x3) -> perceptron, 3 input channels."""
    cnn = MixedConvNN((20, 22), input_depth=3, batch_size=2, seed=0)
    cnn.addConvLayer(6, 5, pool_shape=2, activation_func="tanh")
    cnn.addConvLayer(4, 3, pool_shape=1, activation_func="relu")
    cnn.addPerceptronLayer(3, activation_func="tanh")
    cnn.compileOutputFunctions(target="nll")
    cnn.compileDebugFunctions(gradients=False)
    data = np.random.default_rng(0).normal(size=(2, 3, 20, 22)).astype(np.float32)
    return cnn, data


@pytest.fixture(scope="module")
def net3d():
    """conv (8 filters (2,3,3), pool (1,2,2)) -> last conv (3 filters (2,3,3)), 2 channels."""
    cnn = MixedConvNN((6, 14, 16), input_depth=2, batch_size=2, seed=0)
    cnn.addConvLayer(8, (2, 3, 3), pool_shape=(1, 2, 2), activation_func="tanh")
    cnn.addConvLayer(3, (2, 3, 3), pool_shape=1, is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    cnn.compileDebugFunctions(gradients=False)
    data = np.random.default_rng(1).normal(size=(2, 6, 2, 14, 16)).astype(np.float32)
    return cnn, data


def tiles(canvas, n, h, w, n_hor, border=1):
    """Cut the ``n`` tiles out of a row-major mosaic."""
    return np.array([canvas[(k // n_hor) * (h + border):(k // n_hor) * (h + border) + h,
                            (k % n_hor) * (w + border):(k % n_hor) * (w + border) + w]
                     for k in range(n)])


def normalized(stack):
    low = stack.min(axis=(-2, -1), keepdims=True)
    high = stack.max(axis=(-2, -1), keepdims=True)
    return (stack - low) / (high - low + 1e-8)


# --- embedMatricesInGray / showMultipleFiguresAdd ----------------------------------------------

@pytest.mark.parametrize(("n", "border", "fixed", "n_hor"),
                         [(7, 1, 0, 3), (1, 1, 0, 1), (12, 2, 4, 4), (10, 0, 0, 4)])
def test_embed_places_tiles_row_major(n, border, fixed, n_hor):
    h, w = 2, 3
    mat = np.arange(1, n * h * w + 1, dtype=np.float32).reshape(n, h, w)
    canvas = embedMatricesInGray(mat, border_width=border, fixed_n_horizontal=fixed)
    n_vert = n // n_hor + 1  # int(n / n_hor + 1) of the original
    assert canvas.dtype == np.float32
    assert canvas.shape == (n_vert * (h + border), n_hor * (w + border))
    np.testing.assert_array_equal(tiles(canvas, n, h, w, n_hor, border), mat)
    # tile 1 is the second tile of the first row
    if n_hor > 1:
        np.testing.assert_array_equal(canvas[:h, w + border:2 * w + border], mat[1])
    # everything else (borders, unused places) is zero
    assert canvas.sum() == mat.sum() and np.count_nonzero(canvas) == mat.size


def test_embed_normalize_per_tile_and_errors():
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(5, 4, 4)).astype(np.float32) * np.arange(1, 6)[:, None, None]
    mat[2] = 7.5  # a constant tile becomes zeros, without warnings
    canvas = embedMatricesInGray(mat, normalize=True)
    got = tiles(canvas, 5, 4, 4, n_hor=2)
    np.testing.assert_allclose(got, normalized(mat), atol=1e-6)
    assert np.all(got[2] == 0) and got[0].min() == 0 and got[0].max() == pytest.approx(1)
    with pytest.raises(ValueError, match=r"\(n, h, w\)"):
        embedMatricesInGray(mat[0])


def test_show_multiple_figures_add_grid_from_1():
    fig = plt.figure()
    images = [np.full((3, 3), k, np.float32) for k in range(5)]
    axes = [showMultipleFiguresAdd(fig, 5, i + 1, im, f"t{i}") for i, im in enumerate(images)]
    for i, ax in enumerate(axes):  # 5 panels: ceil(sqrt 5) = 3 rows, 2 columns
        assert ax.get_subplotspec().get_geometry() == (3, 2, i, i)
        assert ax.get_title() == f"t{i}"
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), images[i])
        assert ax.get_images()[0].get_cmap().name == "gray"
    ax = showMultipleFiguresAdd(fig, 1, 1, images[0], "rgb", isGray=False)
    assert ax.get_images()[0].get_cmap().name == matplotlib.rcParams["image.cmap"]


# --- plotFilters -------------------------------------------------------------------------------

def test_plot_filters_2d_rgb_and_channel(net2d, tmp_path, monkeypatch):
    cnn, _ = net2d
    W = cnn.layers[0].W.get_value()  # (6, 3, 5, 5)
    path = tmp_path / "rgb.png"
    saved_before_show = []
    monkeypatch.setattr(plt, "show", lambda: saved_before_show.append(path.exists()))
    mat = plotFilters(cnn, savename=str(path))
    assert saved_before_show == [True]
    # 6 tiles: int(sqrt(6 * 1.7)) = 3 per row, 6 // 3 + 1 = 3 rows, 5x5 tiles + 1-pixel borders
    assert mat.shape == (18, 18, 3) and mat.dtype == np.uint8 and mat.min() < mat.max()
    lower = min(0, W.min())
    expected_red = (W[:, 0] - lower) * 255 / (max(0, W.max()) - lower)
    np.testing.assert_allclose(tiles(mat[..., 0], 6, 5, 5, 3), expected_red, atol=1)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 18 and image.std() > 0

    gray = plotFilters(cnn, channel=1, normalize=True, savename=tmp_path / "gray.png")
    np.testing.assert_array_equal(gray, embedMatricesInGray(W[:, 1], normalize=True))
    assert (tmp_path / "gray.png").exists()


def test_plot_filters_3d_rows_are_filters(net3d, tmp_path, shows):
    cnn, _ = net3d
    W = cnn.layers[0].W.get_value()  # (8, 2, 2, 3, 3): (nof, fz, ch, fx, fy)
    assert W.shape == (8, 2, 2, 3, 3)
    mat = plotFilters(cnn, channel=1, savename=tmp_path / "f3d.png")
    # 8 filters x 2 z-slices, 2 per row: 16 // 2 + 1 = 9 rows of 3+1, 2 columns of 3+1
    assert mat.shape == (36, 8) and mat.std() > 0
    got = tiles(mat, 16, 3, 3, n_hor=2).reshape(8, 2, 3, 3)
    np.testing.assert_array_equal(got, W[:, :, 1])
    assert len(shows) == 1
    assert matplotlib.image.imread(tmp_path / "f3d.png").std() > 0
    # 2 channels and channel None: channel 0 in gray
    np.testing.assert_array_equal(plotFilters(cnn, savename=tmp_path / "c0.png"),
                                  embedMatricesInGray(W[:, :, 0].reshape(16, 3, 3),
                                                      fixed_n_horizontal=2))


def test_plot_filters_errors(net2d, tmp_path):
    cnn, _ = net2d
    with pytest.raises(ValueError, match="conv layer"):
        plotFilters(cnn, layer=2, savename=tmp_path / "p.png")
    with pytest.raises(ValueError, match="channel"):
        plotFilters(cnn, channel=3, savename=tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# --- showActivations ---------------------------------------------------------------------------

def test_show_activations_2d(net2d, shows):
    cnn, data = net2d
    acts = cnn.get_activities(data)  # (2, 6, 8, 9), (2, 4, 6, 7), (2, 3)
    images = showActivations(cnn, data, no_show=True)
    assert len(images) == 2 and plt.get_fignums() == [] and shows == []
    # 6 tiles of 8x9: 3 per row, 3 rows; 4 tiles of 6x7: int(sqrt(6.8)) = 2 per row, 3 rows
    assert images[0].shape == (27, 30) and images[1].shape == (21, 16)
    np.testing.assert_allclose(tiles(images[0], 6, 8, 9, 3), normalized(acts[0][0]), atol=1e-6)
    np.testing.assert_allclose(tiles(images[1], 4, 6, 7, 2), normalized(acts[1][0]), atol=1e-6)

    shown = showActivations(cnn, data, show_first_class_prob=True)
    assert len(shows) == 1 and len(shows[0]) == 2  # activation figure + class map
    for image, again in zip(images, shown[:2], strict=True):
        np.testing.assert_array_equal(image, again)
    # perceptron output (2, 3): class 0 of both examples as a 1x2 map
    probs = cnn.class_probabilities(data)
    np.testing.assert_allclose(shown[2], probs[:, 0].reshape(1, 2))
    axes = plt.figure(shows[0][0]).axes
    assert [ax.get_title() for ax in axes] == ["Layer-0 Activity", "Layer-1 Activity"]
    # 3 layers: a 2x2 grid, panels from 1
    assert [ax.get_subplotspec().get_geometry() for ax in axes] == [(2, 2, 0, 0), (2, 2, 1, 1)]


def test_show_activations_3d_slices(net3d, shows):
    cnn, data = net3d
    acts = cnn.get_activities(data)  # (2, 5, 8, 6, 7) and (2, 4, 3, 4, 5): (bs, z, ch, x, y)
    assert acts[0].shape == (2, 5, 8, 6, 7)
    images = showActivations(cnn, data, show_first_class_prob=True, no_show=True)
    assert len(images) == 3 and plt.get_fignums() == []
    # layer 0: z=5 rows of ch=8 tiles 6x7 (+1 empty row); layer 1: 4 rows of 3 tiles 4x5
    assert images[0].shape == (6 * 7, 8 * 8) and images[1].shape == (5 * 5, 3 * 6)
    got = tiles(images[0], 40, 6, 7, n_hor=8).reshape(5, 8, 6, 7)
    np.testing.assert_allclose(got, normalized(acts[0][0]), atol=1e-6)
    assert images[0].std() > 0 and images[1].std() > 0
    # class 0 of the first example, (z, x, y) = (4, 4, 5), as a mosaic of z-slices
    probs = cnn.class_probabilities(data)  # (bs, ch, z, x, y)
    np.testing.assert_array_equal(images[2], embedMatricesInGray(probs[0, 0]))
    assert images[2].std() > 0


def test_show_activations_needs_debug_functions(caplog):
    cnn = MixedConvNN((8, 8), input_depth=1, batch_size=1, seed=0)
    cnn.addConvLayer(2, 3, pool_shape=1)
    with caplog.at_level(logging.WARNING, logger="elektronn"):
        assert showActivations(cnn, np.zeros((1, 1, 8, 8), np.float32), no_show=True) == []
        assert showActivityHistogram(cnn, np.zeros((1, 1, 8, 8), np.float32)) == []
    assert caplog.text.count("compileDebugFunctions") == 2


# --- histograms --------------------------------------------------------------------------------

def check_histogram(hist, values):
    counts, edges = hist
    assert counts.shape == (100,) and edges.shape == (101,)
    assert counts.sum() == values.size and counts.max() < values.size
    assert edges[0] == pytest.approx(values.min()) and edges[-1] == pytest.approx(values.max())


def test_param_histogram_2d_with_perceptron(net2d, shows, caplog):
    cnn, _ = net2d
    weights = [lay.W.get_value() for lay in cnn.layers]
    with caplog.at_level(logging.INFO, logger="elektronn"):
        hists = showParamHistogram(cnn, no_show=True)
    assert len(hists) == 3 and plt.get_fignums() == [] and shows == []
    for hist, W in zip(hists, weights, strict=True):
        check_histogram(hist, W)
    assert "Layer  3: filter_shape = (168, 3)" in caplog.text  # 4 * 6 * 7 inputs, 3 units
    assert f"Layer  1: mean={np.mean(weights[0]):3.6e}, median=" in caplog.text

    hists = showParamHistogram(cnn, onlyW=False)
    assert len(hists) == 6  # W and b of every layer
    assert [len(fignums) for fignums in shows] == [2, 4, 6]  # show after each layer
    labels = [plt.figure(num).axes[0].get_xlabel() for num in plt.get_fignums()]
    assert labels[:2] == ["(6, 3, 5, 5) parameters", "(6,) parameters"]
    assert plt.figure(plt.get_fignums()[-1]).axes[0].get_ylabel() == "# (Layer 3)"


def test_param_histogram_3d(net3d):
    cnn, _ = net3d
    hists = showParamHistogram(cnn, no_show=True)
    assert len(hists) == 2
    for hist, lay in zip(hists, cnn.layers, strict=True):
        check_histogram(hist, lay.W.get_value())


def test_param_histogram_recurrent_and_tied_weights(tmp_path):
    rnn = MixedConvNN((4,), input_depth=3, batch_size=2, recurrent=True, seed=0)
    rnn.addRecurrentLayer(n_hid=5)
    rnn.addPerceptronLayer(2)
    hists = showParamHistogram(rnn, no_show=True)
    assert [int(h[0].sum()) for h in hists] == [4 * 5, 5 * 5, 5 * 2]  # W_in, W_hid, W
    with pytest.raises(ValueError, match="conv layer, but layer 0 is a RecurrentLayer"):
        plotFilters(rnn, savename=tmp_path / "r.png")

    mlp = MixedConvNN((12,), batch_size=5, seed=0)
    mlp.addPerceptronLayer(6)
    mlp.addTiedAutoencoderChain()
    mlp.compileOutputFunctions(target="regression")
    hists = showParamHistogram(mlp, no_show=True)
    assert len(hists) == 2  # the decoder's W is the encoder's W.T
    np.testing.assert_array_equal(hists[0][0], hists[1][0])


@pytest.mark.parametrize("net", ["net2d", "net3d"])
def test_activity_histogram(net, request, shows):
    cnn, data = request.getfixturevalue(net)
    acts = cnn.get_activities(data)
    hists = showActivityHistogram(cnn, data, no_show=True)
    assert len(hists) == len(cnn.layers) and plt.get_fignums() == []
    for hist, act in zip(hists, acts, strict=True):
        check_histogram(hist, act)
    showActivityHistogram(cnn, data)
    assert len(shows) == 1 and len(shows[0]) == len(cnn.layers)
    first = plt.figure(shows[0][0]).axes[0]
    assert first.get_xlabel().startswith(f"{acts[0].size} activations")
    assert first.get_ylabel() == "# (Layer 1)"


# --- backend choice ----------------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland platforms only")
def test_import_leaves_backend_alone_and_headless_drawing_works(tmp_path):
    """Importing neither imports pyplot nor picks a backend; headless, matplotlib picks Agg."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["MPLCONFIGDIR"] = str(tmp_path)  # no user matplotlibrc
    code = (
        "import sys, matplotlib\n"
        "import elektronn.net.introspection as i\n"
        "print('matplotlib.pyplot' in sys.modules, matplotlib.rcParams._get_backend_or_none())\n"
        "from elektronn.net.convnet import MixedConvNN\n"
        "cnn = MixedConvNN((10, 10), input_depth=1, batch_size=1, seed=0)\n"
        "cnn.addConvLayer(2, 3, pool_shape=1)\n"
        f"i.plotFilters(cnn, savename={str(tmp_path / 'f.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[:2] == ["False", "None"]
    assert out[2].lower() == "agg"
    assert (tmp_path / "f.png").is_file()
