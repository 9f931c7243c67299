"""Activation functions of the layers, by their ELEKTRONN 1.0 names."""

import pytensor.tensor as pt

from elektronn.ops import maxout

__all__ = ["ACTIVATIONS", "parse_activation", "apply_activation"]

ACTIVATIONS = ("tanh", "relu", "sigmoid", "abs", "linear", "maxout <r>")

_ALIASES = {"ReLU": "relu", "none": "linear", "None": "linear", None: "linear"}


def parse_activation(name):
    """Normalise an activation name; return ``(name, maxout_factor)``.

    ``'ReLU'`` becomes ``'relu'``; ``None``, ``'none'`` and ``'None'`` become ``'linear'``;
    ``'maxout 3'`` gives ``('maxout', 3)``.  Anything else raises ``ValueError``.
    """
    name = _ALIASES.get(name, name)
    if isinstance(name, str) and name.startswith("maxout"):
        try:
            factor = int(name.split()[1])
        except (IndexError, ValueError):
            factor = 0
        if factor < 2:
            raise ValueError(
                f"activation_func {name!r}: maxout needs a factor > 1, e.g. 'maxout 2'")
        return "maxout", factor
    if name not in ACTIVATIONS:
        raise ValueError(f"activation_func must be one of {ACTIVATIONS}, got {name!r}")
    return name, 1


def apply_activation(name, lin, channel_axis=1):
    """Apply the (parsed) activation ``name`` to the pre-activation ``lin``."""
    name, factor = parse_activation(name)
    if name == "maxout":
        return maxout(lin, factor, axis=channel_axis)
    return {
        "tanh": pt.tanh,
        "relu": lambda t: t * (t > 0),
        "sigmoid": pt.sigmoid,
        "abs": pt.abs,
        "linear": lambda t: t,
    }[name](lin)
