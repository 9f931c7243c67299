"""The two nets recorded with ELEKTRONN 1.0 (see tests/data/golden/README.md)."""

from pathlib import Path

import numpy as np

from elektronn.net.convnet import MixedConvNN

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def load_case(name):
    """Return ``(param_file, inputs, reference)`` of a golden case."""
    return (golden_file(f"{name}.param"), dict(np.load(golden_file(f"{name}_in.npz"))),
            dict(np.load(golden_file(f"{name}_ref.npz"))))


def golden_file(name):
    """Path of a golden file; a missing one is an error (the files are part of the repo)."""
    path = GOLDEN / name
    if not path.is_file():
        raise FileNotFoundError(f"golden file {path} is missing (see {GOLDEN / 'README.md'})")
    return path


def build_n2d():
    """The original's MNIST example net (golden case ``n2d_clf``)."""
    cnn = MixedConvNN((28, 28), input_depth=1, batch_size=4, enable_dropout=False)
    cnn.addConvLayer(10, 5, pool_shape=2, activation_func="abs")
    cnn.addConvLayer(8, 5, pool_shape=2, activation_func="abs")
    cnn.addPerceptronLayer(100, activation_func="abs")
    cnn.addPerceptronLayer(10, activation_func="abs")
    cnn.compileOutputFunctions(target="nll")
    return cnn


def build_n3d():
    """An anisotropic 3-D image-to-image net (golden case ``n3d``)."""
    cnn = MixedConvNN((7, 21, 21), input_depth=2, batch_size=2, enable_dropout=False)
    cnn.addConvLayer(4, (1, 4, 4), pool_shape=(1, 2, 2), activation_func="relu")
    cnn.addConvLayer(5, (3, 3, 3), pool_shape=1, activation_func="tanh")
    cnn.addConvLayer(3, (3, 2, 2), pool_shape=1, activation_func="linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll")
    return cnn


BUILDERS = {"n2d_clf": build_n2d, "n3d": build_n3d}
