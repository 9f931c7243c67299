"""Reading and writing ELEKTRONN parameter files (the layer under ``saveParameters``).

A parameter file is a *stream of consecutive pickles* (protocol 2), as written by
ELEKTRONN 1.0 under Python 2.7:

1. ``shape_info``: a list with one shape tuple per layer, the shape of the layer's
   ``params[0]`` (the W shape for conv layers, the **b** shape ``(n_out,)`` for
   perceptrons, whose params are ``[b, W]``);
2. per layer its parameter arrays in ``params`` order (two per layer, four for a
   recurrent layer), float32;
3. ``poolings``: the list of pool-shape tuples of all conv layers (absent in old files).

Files are read through a restricted unpickler that only builds numpy arrays, dtypes and
scalars, numbers, strings, lists and tuples; anything else is refused with a
:class:`ParameterFileError` before it is executed. Files are written atomically (temporary
file in the same directory, ``fsync``, ``os.replace``) and stay readable by ELEKTRONN 1.0
(Python 2.7, numpy 1.x).

The module also holds the pure array logic of the adaptive loader
(``loadParameters(strict=False)``): :func:`adapt_conv_filter` and :func:`adapt_bias`.

This module depends on numpy and the standard library only (no PyTensor).
"""

from __future__ import annotations

import codecs
import logging
import os
import pickle
import pickletools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from elektronn.atomicio import atomic_write
from elektronn.utils import as_rng

__all__ = [
    "ParameterFileError",
    "ParameterSet",
    "read_param_file",
    "read_pickles",
    "write_param_file",
    "split_layers",
    "adapt_conv_filter",
    "adapt_bias",
]

logger = logging.getLogger("elektronn")

PROTOCOL = 2
"""Pickle protocol of parameter files (the one cPickle used in ELEKTRONN 1.0)."""

# numpy's own reconstruction helpers, taken from numpy's reduce output so that no
# (deprecated or private) module path has to be imported.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]

_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Stand-in for ``_codecs.encode`` that Python 3 protocol-2 pickles use for bytes."""
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1_NAMES:
        raise pickle.UnpicklingError(
            f"_codecs.encode is only allowed for latin-1 text, got {type(text).__name__} "
            f"with encoding {encoding!r}"
        )
    return codecs.encode(text, "latin1", errors)


# (module, name) -> object; both numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``)
# spellings, and both Python 2 (``__builtin__``) and Python 3 module names.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "complex"): complex,
    ("builtins", "complex"): complex,
}

_PLAIN_TYPES = (bool, int, float, complex, str, bytes, type(None), np.dtype)


class ParameterFileError(ValueError):
    """A parameter file that cannot be read or an object that cannot be written.

    Parameters
    ----------
    path : str
        The file concerned.
    message : str
        What is wrong.
    """

    def __init__(self, path, message):
        self.path = os.fspath(path)
        super().__init__(f"parameter file {self.path!r}: {message}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays and scalars need."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


class _RefusedGlobal(pickle.UnpicklingError):
    """Raised inside the unpickler; turned into a ParameterFileError by the reader."""


def _check_tree(obj, where):
    """Raise ``TypeError`` unless ``obj`` holds only arrays, numbers, strings, lists, tuples.

    Shared sub-objects are visited once, so a pickle whose memo repeats a list many
    times cannot make this walk exponential.
    """
    seen = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, np.ndarray | np.generic):
            if item.dtype.hasobject:
                raise TypeError(f"{where} is a numpy object of dtype object")
        elif not isinstance(item, _PLAIN_TYPES):
            raise TypeError(
                f"{where} contains a {type(item).__module__}.{type(item).__qualname__}; only "
                "numpy arrays/dtypes/scalars, numbers, strings, lists and tuples are allowed"
            )


def read_param_file(path) -> list:
    """Read all objects of a parameter file.

    Parameters
    ----------
    path : str or os.PathLike
        The file, written by ELEKTRONN 1.0 (Python 2) or by :func:`write_param_file`.

    Returns
    -------
    list
        The unpickled objects in file order; arrays are :class:`numpy.ndarray`, Python 2
        byte strings are decoded as latin-1 ``str``.

    Raises
    ------
    ParameterFileError
        If the file is empty, truncated, not a pickle stream, or refers to anything but
        numpy arrays/dtypes/scalars, numbers, strings, lists and tuples (the refused
        global is named and never imported or called).
    OSError
        If the file cannot be opened.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ParameterFileError(path, "the file is empty")
        return read_pickles(f, path)


def read_pickles(f, name="<stream>") -> list:
    """Read every object of a stream of pickles through the restricted unpickler.

    Parameters
    ----------
    f : binary file object with ``peek`` (a regular or a gzip file)
    name : str
        Used in error messages.

    Returns
    -------
    list
        The objects in stream order (see :func:`read_param_file`).

    Raises
    ------
    ParameterFileError
        As :func:`read_param_file`.
    """
    objects = []
    while f.peek(1):
        index = len(objects)
        try:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
        except _RefusedGlobal as err:
            raise ParameterFileError(
                name,
                f"object #{index} refers to the global {err}, which is refused; only numpy "
                "arrays/dtypes/scalars, numbers, strings, lists and tuples are allowed",
            ) from None
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoding failure means a bad file
            raise ParameterFileError(
                name,
                f"truncated or not a pickle stream: object #{index} cannot be read "
                f"({type(err).__name__}: {err})",
            ) from err
        try:
            _check_tree(obj, f"object #{index}")
        except TypeError as err:
            raise ParameterFileError(name, str(err)) from None
        objects.append(obj)
    return objects


def _dumps_py2(obj) -> bytes:
    """Pickle ``obj`` with protocol 2 so that Python 2.7 with numpy 1.x can load it.

    numpy 2 names its reconstruction helpers ``numpy._core.multiarray.*``, a module that
    numpy 1.x does not have; those GLOBAL opcodes are rewritten to ``numpy.core``.
    """
    data = pickle.dumps(obj, protocol=PROTOCOL)
    pieces = []
    done = 0
    for opcode, arg, pos in pickletools.genops(data):
        if opcode.name == "GLOBAL" and arg.startswith("numpy._core."):
            module, name = arg.split(" ", 1)
            old_end = pos + 1 + len(module) + 1 + len(name) + 1
            pieces += [data[done:pos], f"cnumpy.core.{module[12:]}\n{name}\n".encode("ascii")]
            done = old_end
    pieces.append(data[done:])
    return b"".join(pieces)


def write_param_file(path, objects: Iterable) -> None:
    """Write objects as a parameter file, each as its own protocol-2 pickle, atomically.

    The objects are written to a temporary file in the same directory, flushed to disk
    and then renamed over ``path``; on any error the temporary file is removed and an
    existing ``path`` is left as it was. ELEKTRONN 1.0 (Python 2.7, numpy 1.x) can read
    the result, and so can :func:`read_param_file`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    objects : iterable
        The objects in file order. Each may only hold numpy arrays/dtypes/scalars (not of
        dtype object), numbers, strings, ``None``, lists and tuples; for the ELEKTRONN
        layout build them with :meth:`ParameterSet.to_objects`.

    Raises
    ------
    ParameterFileError
        If an object holds anything else (nothing is written then).
    OSError
        If the file cannot be written.
    """
    path = os.fspath(path)
    objects = list(objects)
    for index, obj in enumerate(objects):  # check all before anything is written
        try:
            _check_tree(obj, f"object #{index}")
        except TypeError as err:
            raise ParameterFileError(path, f"cannot write {err}") from None

    def write(f):
        for obj in objects:
            f.write(_dumps_py2(obj))

    atomic_write(path, write, mode=0o644)


# --------------------------------------------------------------------------------------
# The ELEKTRONN layout: shapes, per-layer params, poolings
# --------------------------------------------------------------------------------------


def _int_tuple(values) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(values))


@dataclass
class ParameterSet:
    """The contents of a parameter file in the ELEKTRONN layout.

    Attributes
    ----------
    shapes : list of tuple of int
        ``shape_info``: the shape of ``params[0]`` of every layer in the file.
    params : list of list of numpy.ndarray
        Per layer its parameter arrays in the layer's ``params`` order (conv: ``[W, b]``;
        perceptron: ``[b, W]``; recurrent: ``[W_in, W_hid, b_hid, hid_0]``).
    poolings : list of tuple of int or None
        The pool shapes of all conv layers of the net, or ``None`` for old files
        that do not store them.
    """

    shapes: list
    params: list
    poolings: list | None = None

    @classmethod
    def from_params(cls, params: Sequence[Sequence], poolings=None) -> ParameterSet:
        """Build the set for ``saveParameters`` from per-layer parameter values.

        Parameters
        ----------
        params : sequence of sequence of array_like
            Per layer its parameter values in ``params`` order.
        poolings : sequence of sequence of int, optional
            The pool shapes of the net's conv layers.

        Returns
        -------
        ParameterSet
            With ``shapes`` taken from each layer's first parameter.
        """
        layers = [[np.asarray(p) for p in layer] for layer in params]
        for i, layer in enumerate(layers):
            if not layer:
                raise ValueError(f"layer {i} has no parameters")
        shapes = [tuple(int(s) for s in layer[0].shape) for layer in layers]
        pools = None if poolings is None else [_int_tuple(p) for p in poolings]
        return cls(shapes, layers, pools)

    def to_objects(self) -> list:
        """Return the objects of the file in order: shapes, parameters, poolings.

        Shapes and poolings are lists of tuples of plain Python ints, as in files of
        ELEKTRONN 1.0; the poolings are left out when they are ``None``.
        """
        objects = [[_int_tuple(s) for s in self.shapes]]
        for layer in self.params:
            objects.extend(np.asarray(p) for p in layer)
        if self.poolings is not None:
            objects.append([_int_tuple(p) for p in self.poolings])
        return objects


def split_layers(objects: Sequence, params_per_layer=2, *, path="<objects>") -> ParameterSet:
    """Interpret the objects of a parameter file in the ELEKTRONN layout.

    Parameters
    ----------
    objects : sequence
        What :func:`read_param_file` returned.
    params_per_layer : int or sequence of int, optional
        Number of parameter arrays of each layer stored in the file: 2 for conv and
        perceptron layers (the default, which is all the adaptive loader and
        ``createNetfromParams`` of the original support), 4 for a recurrent layer.
    path : str, optional
        File name used in error messages.

    Returns
    -------
    ParameterSet

    Raises
    ------
    ParameterFileError
        If the objects do not follow the layout: no shape list, too few arrays, a
        layer's first array not of the shape the shape list names, or more than one
        object after the last layer's parameters.
    """
    if not objects or not isinstance(objects[0], list | tuple):
        raise ParameterFileError(path, "the first object is not the list of layer shapes")
    try:
        shapes = [_int_tuple(s) for s in objects[0]]
    except (TypeError, ValueError):
        raise ParameterFileError(path, "the first object is not a list of shapes") from None
    counts = (
        [int(params_per_layer)] * len(shapes)
        if np.ndim(params_per_layer) == 0
        else [int(n) for n in params_per_layer]
    )
    if len(counts) != len(shapes):
        raise ValueError(
            f"params_per_layer names {len(counts)} layers, the file holds {len(shapes)}"
        )
    needed = 1 + sum(counts)
    if len(objects) < needed:
        raise ParameterFileError(
            path,
            f"{len(shapes)} layers with {sum(counts)} parameter arrays need {needed} objects, "
            f"the file holds only {len(objects)}",
        )
    params = []
    pos = 1
    for i, (shape, n) in enumerate(zip(shapes, counts, strict=True)):
        layer = list(objects[pos : pos + n])
        pos += n
        if not all(isinstance(p, np.ndarray) for p in layer):
            raise ParameterFileError(path, f"the parameters of layer {i} are not all arrays")
        if layer[0].shape != shape:
            raise ParameterFileError(
                path,
                f"layer {i}: first parameter has shape {layer[0].shape}, the shape list says "
                f"{shape} (does a layer hold a different number of parameters?)",
            )
        params.append(layer)
    rest = objects[pos:]
    if len(rest) > 1:
        raise ParameterFileError(
            path,
            f"{len(rest)} objects follow the last layer, expected at most the poolings "
            "(does a recurrent layer hold 4 parameters?)",
        )
    poolings = None
    if rest:
        if not isinstance(rest[0], list | tuple):
            raise ParameterFileError(path, "the last object is not the list of poolings")
        poolings = [_int_tuple(p) for p in rest[0]]
    return ParameterSet(shapes, params, poolings)


# --------------------------------------------------------------------------------------
# Adaptive loading (loadParameters(strict=False))
# --------------------------------------------------------------------------------------



def _adapt_4d(saved, target, rng):
    """2-D conv filters ``(nof, ch, x, y)``: tile or cut filters and channels (reproduced)."""
    out = rng.normal(0, 0.02, target).astype(np.float32)
    t0, t1 = target[:2]
    s0, s1 = saved.shape[:2]
    nx, ny = min(target[2], saved.shape[2]), min(target[3], saved.shape[3])

    def put(filters, channels, block):
        out[filters, channels, :nx, :ny] = block

    if t0 > s0:  # more filters than saved: repeat the saved ones in blocks of s0
        for i in range(0, t0, s0):
            n = min(t0 - i, s0)
            if t1 > s1:  # and more channels: repeat channel blocks as well
                for j in range(0, t1, s1):
                    c = min(t1 - j, s1)
                    put(slice(i, i + n), slice(j, j + c), saved[:n, :c, :nx, :ny])
            else:
                put(slice(i, i + n), slice(0, t1), saved[:n, :t1, :nx, :ny])
    elif t1 > s1:  # fewer filters, more channels: repeat channel blocks plus a little noise
        for j in range(0, t1, s1):
            c = min(t1 - j, s1)
            block = saved[:t0, :c, :nx, :ny]
            put(slice(0, t0), slice(j, j + c), block + rng.random(block.shape) * 1e-4)
    else:  # fewer filters and channels: the channel slice in the middle
        mid = (s1 - t1) // 2
        put(slice(0, t0), slice(0, t1), saved[:t0, mid : mid + t1, :nx, :ny])
    return out


def _adapt_5d(saved, target, rng, centre_per_axis):
    """3-D conv filters ``(nof, z, ch, x, y)``: centre the spatial overlap."""
    out = rng.normal(0, np.std(saved) + 1e-9, target).astype(np.float32)
    n_filters = min(target[0], saved.shape[0])
    n_channels = min(target[2], saved.shape[2])
    dst = [slice(0, n_filters), None, slice(0, n_channels), None, None]
    src = list(dst)
    for axis in (1, 3, 4):
        # the original took offsets and lengths from the z axis (1) for z, x and y alike
        ref = axis if centre_per_axis else 1
        t, s = target[ref], saved.shape[ref]
        length = min(t, s)
        dst[axis] = slice(max((t - s) // 2, 0), max((t - s) // 2, 0) + length)
        src[axis] = slice(max((s - t) // 2, 0), max((s - t) // 2, 0) + length)
    block = saved[tuple(src)]
    if out[tuple(dst)].shape != block.shape:
        raise ValueError(
            f"cannot adapt 3-D filters {saved.shape} to {target} with z-extent centring "
            "(centre_per_axis=False assumes cubic filters)"
        )
    out[tuple(dst)] = block
    return out


def adapt_conv_filter(saved, target_shape, rng=None, *, centre_per_axis=True):
    """Fit a saved weight array to a layer's ``params[0]`` of another shape.

    This is the W step of ``loadParameters(strict=False)`` (docs/differences.md, N32).

    * Equal shapes: a float32 copy of ``saved``.
    * Both 4-D (2-D conv, ``(nof, ch, x, y)``): start from ``N(0, 0.02)``; only the
      top-left spatial corner ``[:min(x), :min(y)]`` is copied. More filters than saved:
      the saved filters are repeated in blocks along axis 0 and, with more channels too,
      along the channel axis (else the first channels are taken). Otherwise, more
      channels: channel blocks are repeated with ``U(0, 1) * 1e-4`` added. Otherwise the
      channel slice centred at ``(s_ch - t_ch) // 2`` of the first filters is copied.
      A last, partial block is filled with the leading part of the saved block.
    * Both 5-D (3-D conv, ``(nof, z, ch, x, y)``): start from
      ``N(0, std(saved) + 1e-9)``; copy the leading filters and channels and the centred
      spatial overlap.
    * Anything else (e.g. perceptron weights): ``None``; the caller skips the layer.

    Parameters
    ----------
    saved : array_like
        The array from the file.
    target_shape : tuple of int
        Shape of the layer's parameter.
    rng : numpy.random.Generator or numpy.random.RandomState or int, optional
        Source of the random fill. ``None`` uses numpy's global random state, as the
        original did (then the draws equal the original's for the same global seed).
    centre_per_axis : bool, optional
        5-D only. ``True`` (default, fixed) centres z, x and y each by its own extents.
        ``False`` reproduces the original, which used the z offsets and length for x and
        y as well (only right for cubic filters); a shape that makes that slicing
        inconsistent raises ``ValueError`` instead of failing obscurely.

    Returns
    -------
    numpy.ndarray or None
        float32 array of ``target_shape``, or ``None`` if the shapes cannot be adapted.
    """
    saved = np.asarray(saved)
    target = tuple(int(t) for t in target_shape)
    if saved.shape == target:
        return saved.astype(np.float32)
    if saved.ndim != len(target) or saved.ndim not in (4, 5) or 0 in saved.shape:
        return None
    rng = as_rng(rng)
    if saved.ndim == 4:
        return _adapt_4d(saved, target, rng)
    logger.info("adapting 3D_net_filter...")
    return _adapt_5d(saved, target, rng, centre_per_axis)


def adapt_bias(saved, target_shape, rng=None):
    """Fit a saved array to a layer's ``params[1]`` along its first axis.

    This is the b step of ``loadParameters(strict=False)`` of ELEKTRONN 1.0.

    * Equal shapes: a float32 copy of ``saved``.
    * Shorter target: the leading entries.
    * Longer target: the saved entries repeated in blocks along the first axis (a last,
      partial block takes the leading part).

    The original first filled a longer target with ``uniform(low=1e-5 (+0.5 for sigmoid
    and relu), high=1e-6)`` and then overwrote every entry by the repetition, so the fill
    never shows; it is still drawn (one uniform number per entry) so that numpy's global
    random state advances as in the original.

    Parameters
    ----------
    saved : array_like
        The array from the file.
    target_shape : tuple of int
        Shape of the layer's parameter.
    rng : numpy.random.Generator or numpy.random.RandomState or int, optional
        As for :func:`adapt_conv_filter`.

    Returns
    -------
    numpy.ndarray or None
        float32 array of ``target_shape``, or ``None`` when the arrays differ in an axis
        other than the first (the original set such arrays without a check and failed
        later; the caller skips the parameter instead).
    """
    saved = np.asarray(saved)
    target = tuple(int(t) for t in target_shape)
    if saved.shape == target:
        return saved.astype(np.float32)
    if saved.ndim == 0 or saved.shape[1:] != target[1:] or saved.shape[0] == 0:
        return None
    t0, s0 = target[0], saved.shape[0]
    if t0 <= s0:
        return saved[:t0].astype(np.float32)
    as_rng(rng).random(target)  # the original's (invisible) random fill
    out = np.empty(target, dtype=np.float32)
    for i in range(0, t0, s0):
        n = min(t0 - i, s0)
        out[i : i + n] = saved[:n]
    return out
