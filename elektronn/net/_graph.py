"""Graph helpers shared by the layers and the net: shared variables, random streams, compiling."""

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.traversal import ancestors

from elektronn import backend

__all__ = ["as_param", "softmax", "RandomStreams", "compile_function"]


def as_param(value, name):
    """Turn an initial value into a float32 shared variable; use a symbolic variable as is.

    Parameters given as a PyTensor variable are shared with whoever else uses them.
    """
    if isinstance(value, pytensor.graph.basic.Variable):
        return value
    return pytensor.shared(np.asarray(value, dtype=np.float32), name=name)


def softmax(x, axis=1):
    """Numerically stable softmax over ``axis`` from elementwise Ops.

    (PyTensor 3.0's ``special.softmax`` is an ``OpFromGraph`` whose inner graph is compiled with
    PyTensor's default linker on its first call; :mod:`elektronn.backend` also switches off the
    rewrite that would turn this graph into one.)
    """
    e = pt.exp(x - pt.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class RandomStreams:
    """All random draws of one net, from one seed.

    Every draw gets its own shared generator (seeded from the net's seed sequence) and registers
    the generator's update in :attr:`updates`; :func:`compile_function` adds the updates of the
    generators a graph uses, so each call of a compiled function draws fresh numbers.
    """

    def __init__(self, seed):
        self._seeds = np.random.SeedSequence(seed)
        self.updates = {}

    def _rng(self):
        (child,) = self._seeds.spawn(1)
        return pytensor.shared(np.random.default_rng(child), name="rng")

    def _draw(self, distribution, shape):
        rng = self._rng()
        next_rng, draw = distribution(size=shape, rng=rng, dtype="float32", return_next_rng=True)
        self.updates[rng] = next_rng
        return draw

    def uniform(self, shape):
        """Symbolic float32 ``U(0, 1)`` of the given (static) shape."""
        return self._draw(pt.random.uniform, shape)

    def normal(self, shape):
        """Symbolic float32 ``N(0, 1)`` of the given shape (symbolic shapes allowed)."""
        return self._draw(pt.random.normal, shape)


def compile_function(inputs, outputs, updates=(), rng_updates=None, name=None, mode=None):
    """``pytensor.function`` in an elektronn mode, with the random-stream updates it needs.

    ``mode`` is a name of :data:`elektronn.backend.MODES` (default: the current mode).
    """
    updates = list(dict(updates).items())
    if rng_updates:
        outs = outputs if isinstance(outputs, list | tuple) else [outputs]
        used = set(ancestors(list(outs) + [u for _, u in updates]))
        updates += [(r, u) for r, u in rng_updates.items() if r in used]
    return pytensor.function(
        inputs, outputs, updates=updates, mode=backend.get_mode(mode), name=name,
        on_unused_input="ignore",
    )
