"""Compiled functions of a net that check their arguments before PyTensor sees them.

A user mistake (wrong rank, shape or a label outside the class range) gets a ``ValueError``
naming the argument and the expected shape instead of a PyTensor traceback.
"""

import numpy as np

__all__ = ["Arg", "CheckedFunction"]


class Arg:
    """Expected argument of a compiled function.

    Parameters
    ----------
    name : str
        Name used in error messages (``'data'``, ``'labels'``, ...).
    shape : tuple of int or None
        Expected shape; ``None`` entries accept any size.
    dtype : str
        dtype the value is converted to (floats to float32, labels to int16, ...).
    n_classes : int, optional
        For labels: values must be ``< n_classes`` (negative values mean "ignore").
    """

    def __init__(self, name, shape, dtype, n_classes=None):
        self.name, self.shape, self.dtype, self.n_classes = name, tuple(shape), dtype, n_classes
        self._numpy_dtype = np.dtype(dtype)

    def _describe(self):
        return "(" + ", ".join("any" if s is None else str(s) for s in self.shape) + ")"

    def convert(self, value):
        value = np.asarray(value)
        if value.shape != self.shape and (value.ndim != len(self.shape) or any(
            e is not None and e != s for e, s in zip(self.shape, value.shape)
        )):
            raise ValueError(
                f"{self.name} must have shape {self._describe()}, got an array of shape "
                f"{value.shape}"
            )
        kind = value.dtype.kind  # dtype kinds: b bool, i/u integers, f/c floating and complex
        if self._numpy_dtype.kind in "iu":
            if kind not in "biu":
                raise ValueError(f"{self.name} must hold integers, got dtype {value.dtype}")
            if self.n_classes is not None and value.size and value.max() >= self.n_classes:
                raise ValueError(
                    f"{self.name} contains the label {value.max()}, but the net has only "
                    f"{self.n_classes} classes (0..{self.n_classes - 1}; negative labels are "
                    "ignored)"
                )
        elif kind not in "biufc":
            raise ValueError(f"{self.name} must be numeric, got dtype {value.dtype}")
        return np.asarray(value, dtype=self._numpy_dtype, order="C")


class CheckedFunction:
    """A compiled PyTensor function whose positional arguments are checked and converted.

    Compilation is deferred to the first call (or to :attr:`fn`), so building a net only
    compiles what is used.

    Parameters
    ----------
    build : callable
        Returns the compiled ``pytensor`` function (called once).
    args : list of Arg
    single : bool
        Return the only output itself instead of a one-element list.
    """

    def __init__(self, build, args, single=False):
        self._build, self._fn = build, None
        self.args, self.single = list(args), single

    @property
    def fn(self):
        """The compiled PyTensor function (compiled now if it was not yet)."""
        if self._fn is None:
            self._fn = self._build()
        return self._fn

    def __call__(self, *values):
        if len(values) != len(self.args):
            names = ", ".join(a.name for a in self.args)
            raise ValueError(f"expected {len(self.args)} arguments ({names}), got {len(values)}")
        out = [np.asarray(o) for o in self.fn(*(a.convert(v) for a, v in zip(self.args, values)))]
        return out[0] if self.single else out
