"""Make the figures of ``docs/introspection.md`` with :mod:`elektronn.net.introspection`.

Builds a small 2-D net (Gabor-initialised first layer) and a small 3-D net with seeded
weights, runs them on synthetic concentric rings, and saves every plot to
``docs/_static/introspection/``::

    python docs/make_introspection_figures.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from elektronn.net.convnet import MixedConvNN  # noqa: E402
from elektronn.net.introspection import (  # noqa: E402
    plotFilters,
    showActivations,
    showActivityHistogram,
    showParamHistogram,
)

OUT = Path(__file__).resolve().parent / "_static" / "introspection"


def rings(shape, rng):
    """Concentric rings (every orientation at once) plus a little seeded noise."""
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    radius = np.sqrt(sum(g.astype(float) ** 2 for g in grids))
    return (np.sin(0.9 * radius) + 0.2 * rng.normal(size=shape)).astype(np.float32)


def save_open_figures(*names):
    """Save the figures the last call drew (in the order it drew them, at most about 750
    pixels wide or high) and close them."""
    numbers = plt.get_fignums()
    if len(numbers) != len(names):
        raise RuntimeError(f"expected {len(names)} figures, got {len(numbers)}")
    for number, name in zip(numbers, names, strict=True):
        fig = plt.figure(number)
        fig.savefig(OUT / name, dpi=min(80, 750 / max(fig.get_size_inches())),
                    bbox_inches="tight")
    plt.close("all")


def net_2d(rng):
    """(2, 1, 36, 36) -> conv 16x7x7 (Gabor), pool 2 -> conv 8x4x4, pool 2 -> perceptron 10."""
    cnn = MixedConvNN((36, 36), input_depth=1, batch_size=2, seed=0)
    cnn.addConvLayer(16, 7, pool_shape=2, activation_func="tanh")
    cnn.addConvLayer(8, 4, pool_shape=2, activation_func="relu")
    cnn.addPerceptronLayer(10, activation_func="tanh")
    cnn.layers[0].gaborInitialisation()
    cnn.compileOutputFunctions(target="nll")
    cnn.compileDebugFunctions(gradients=False)
    data = np.stack([rings((36, 36), rng), rng.normal(size=(36, 36)).astype(np.float32)])
    return cnn, data[:, np.newaxis]


def net_3d(rng):
    """(1, 8, 1, 24, 24) -> conv 6x(3,5,5), pool (1,2,2) -> last conv 3x(2,3,3)."""
    cnn = MixedConvNN((8, 24, 24), input_depth=1, batch_size=1, seed=0)
    cnn.addConvLayer(6, (3, 5, 5), pool_shape=(1, 2, 2), activation_func="tanh")
    cnn.addConvLayer(3, (2, 3, 3), pool_shape=1, is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    cnn.compileDebugFunctions(gradients=False)
    data = rings((8, 24, 24), rng)[np.newaxis, :, np.newaxis]  # (bs, z, ch, x, y)
    return cnn, data


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cnn2, data2 = net_2d(rng)
    cnn3, data3 = net_3d(rng)

    plotFilters(cnn2, layer=0, normalize=True, savename=OUT / "filters_2d.png")
    plotFilters(cnn3, layer=0, savename=OUT / "filters_3d.png")
    plt.close("all")

    showActivations(cnn2, data2)
    save_open_figures("activations_2d.png")
    showActivations(cnn3, data3, show_first_class_prob=True)
    save_open_figures("activations_3d.png", "class_prob_3d.png")

    showParamHistogram(cnn2)
    save_open_figures("param_hist_2d_layer1.png", "param_hist_2d_layer2.png",
                      "param_hist_2d_layer3.png")
    showActivityHistogram(cnn3, data3)
    save_open_figures("activity_hist_3d_layer1.png", "activity_hist_3d_layer2.png")
    print(f"figures written to {OUT}")


if __name__ == "__main__":
    main()
