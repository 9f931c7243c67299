"""Architecture arithmetic and weight initialisation for ELEKTRONN networks.

:func:`CNNCalculator` works out which input sizes a stack of convolution and pooling layers
accepts, and the receptive fields, strides and offsets that follow from it. :func:`initWeights`
draws initial weights by the rules of ELEKTRONN 1.0. Both are plain Python/numpy: nothing here
builds a graph.
"""

import logging
import numbers
import operator
from collections.abc import Sequence

import numpy as np

from elektronn.utils import as_rng

__all__ = ["CNNCalculator", "initWeights"]

logger = logging.getLogger("elektronn")

# The calculator tries the input sizes range(_MIN_INPUT, _MAX_INPUT), as ELEKTRONN 1.0 did.
_MIN_INPUT = 2
_MAX_INPUT = 5000


def _is_sequence(value):
    return isinstance(value, (list, tuple, np.ndarray))


def _positive_int(value, name):
    """Return ``value`` as a Python int, or raise ValueError naming the argument ``name``."""
    try:
        number = None if isinstance(value, (bool, np.bool_)) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number <= 0:
        raise ValueError(f"{name} must hold positive integers, got {value!r}")
    return number


def _flag(value, name):
    """Return a bool given as bool or 0/1, or raise ValueError naming the argument ``name``."""
    if isinstance(value, (bool, np.bool_, int, np.integer)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} entries must be booleans or 0/1, got {value!r}")


def _layer_list(value, name):
    """Check that ``value`` is a non-empty per-layer sequence and return it as a list."""
    if not _is_sequence(value) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list with one entry per layer, got {value!r}")
    return list(value)


def _mfp_list(MFP, n_layers):
    """Per-layer MFP entries; a single bool (or None) applies to every layer."""
    if MFP is None or isinstance(MFP, (bool, np.bool_)):
        return [bool(MFP)] * n_layers
    if not _is_sequence(MFP) or len(MFP) != n_layers:
        raise ValueError(f"MFP must be a bool or a list with one entry per layer "
                         f"({n_layers}), got {MFP!r}")
    return list(MFP)


def _per_dim(value, n_dim, name):
    """Repeat a scalar ``n_dim`` times; check that a sequence has ``n_dim`` entries."""
    if not _is_sequence(value):
        return [value] * n_dim
    if len(value) != n_dim:
        raise ValueError(f"{name}: expected {n_dim} per-dimension values, got {value!r}")
    return list(value)


def _transpose(per_layer, n_dim, name):
    """Turn per-layer entries (scalars or per-dimension lists) into per-dimension lists."""
    rows = [_per_dim(entry, n_dim, name) for entry in per_layer]
    return [list(column) for column in zip(*rows, strict=True)]


def _fit_size(desired, valid, what):
    """Return ``desired`` if it is in the sorted list ``valid``, else the next smaller valid
    size (the smallest one if none is smaller), logging the change."""
    if desired in valid:
        return desired
    smaller = [size for size in valid if size < desired]
    chosen, reason = (smaller[-1], "size not possible") if smaller else (valid[0], "size too small")
    logger.info("%s (%i) changed to (%i) (%s)", what, desired, chosen, reason)
    return chosen


class _Layer:
    """Sizes of one convolution + pooling layer for a given input size.

    Parameters
    ----------
    input : int
        Size of the layer input along one dimension.
    filter : int
        Filter size.
    pool : int
        Pooling factor.
    stride : int
        Cumulative stride of this layer's output, in input pixels.
    mfp : bool
        Whether the layer uses max-fragment-pooling.
    legacy_mfp : bool
        Use ELEKTRONN 1.0's MFP rule (see Raises).

    Raises
    ------
    ValueError
        If the layer has no output (also after pooling), or the pooling does not fit the
        convolution output ``out``: without MFP ``out`` must be divisible by ``pool``; with
        MFP ``out % pool == pool - 1`` is required (all fragments of equal size), or
        ``out % pool == 1`` with ``legacy_mfp`` (ELEKTRONN 1.0's rule, the same for
        ``pool == 2``).
    """

    def __init__(self, input, filter=1, pool=1, stride=1, mfp=True, legacy_mfp=False):
        self.input = input
        self.filter = filter
        self.pool = pool
        self.stride = stride
        self.mfp = mfp
        self.out = input - filter + 1
        self.pool_out = self.out // pool
        if self.pool_out <= 0:
            raise ValueError(f"CNN has no output for layer with input {input}")
        remainder = 1 if legacy_mfp else pool - 1
        if pool > 1 and mfp and self.out % pool != remainder:
            raise ValueError(f"MFP fails: conv output {self.out} % pool {pool} != {remainder}")
        if pool > 1 and not mfp and self.out % pool:
            raise ValueError(f"Uneven pools: conv output {self.out} is not divisible by {pool}")
        self.field = None
        self.overlap = None

    def setfield(self, field):
        """Store the receptive field and the resulting overlap ``field - stride``."""
        self.field = field
        self.overlap = field - self.stride


class _CalculatorBase:
    """The printout shared by the one- and multi-dimensional calculators."""

    def __repr__(self):
        return "\n".join([
            f"Input: {self.input}",
            f"Layer/Fragment sizes:\t{self.pool_out}",
            f"Unpooled Layer sizes:\t{self.out}",
            f"Receptive fields:\t{self.fields}",
            f"Strides:\t\t{self.stride}",
            f"Overlap:\t\t{self.overlap}",
            f"Offset:\t\t{self.offset}.",
            "If offset is non-int: output neurons lie centered on input neurons, "
            "they have an odd FOV",
        ])


class _CNNCalculator(_CalculatorBase):
    """Architecture values of a CNN along one dimension; build it with :func:`CNNCalculator`.

    Parameters
    ----------
    filters, poolings : list of int
        Filter size and pooling factor of every layer.
    desired_input, desired_output : int or None
        See :func:`CNNCalculator`.
    MFP : bool or list of bool
        Max-fragment-pooling, for all layers or per layer.
    force_center : bool
        Raise ValueError instead of warning when the field of view is even.
    legacy_mfp : bool
        ELEKTRONN 1.0's MFP rule ``out % pool == 1`` (see :func:`CNNCalculator`).

    Attributes
    ----------
    input : int
        The chosen input size.
    valid_inputs, valid_outputs : list of int
        All input sizes in ``[2, 5000)`` the layers accept, and the unpooled output size of
        the last layer for each of them.
    layers : list of _Layer
        The layers for ``input``.
    pool_out, out : list of int
        Per layer: output size after pooling (the fragment size with MFP), and before it.
    fields : list of int
        Receptive field of each layer's output neurons, in input pixels.
    stride, overlap : list of int
        Per layer: cumulative stride, and ``field - stride``.
    pred_stride : int
        Stride of the last layer, i.e. the spacing of the predictions in input pixels.
    offset : float
        Half the field of view of the last layer (non-integer for an odd field of view).
    """

    def __init__(self, filters: Sequence[int], poolings: Sequence[int],
                 desired_input: int | None = None, MFP: bool | Sequence[bool] = False,
                 force_center: bool = False, desired_output: int | None = None,
                 legacy_mfp: bool = False) -> None:
        self.legacy_mfp = bool(legacy_mfp)
        self.filters = [_positive_int(f, "filters") for f in _layer_list(filters, "filters")]
        self.poolings = [_positive_int(p, "poolings") for p in _layer_list(poolings, "poolings")]
        if len(self.poolings) != len(self.filters):
            raise ValueError(f"poolings has {len(self.poolings)} entries but filters has "
                             f"{len(self.filters)}; give one per layer")
        self.mfp = [_flag(m, "MFP") for m in _mfp_list(MFP, len(self.filters))]

        self.fields = self.getFields()
        fov = self.fields[-1]
        if fov % 2 == 0:
            if force_center:
                raise ValueError(f"Receptive Fields are not centered with field of view ({fov}) "
                                 f"and force_center=True")
            logger.warning("Receptive Fields are not centered with even field of view (%i)", fov)
        self.offset = fov / 2

        self.valid_inputs, self.valid_outputs = [], []
        for size in range(_MIN_INPUT, _MAX_INPUT):
            try:
                last = self._make_layers(size)[-1]
            except ValueError:
                continue
            self.valid_inputs.append(size)
            self.valid_outputs.append(last.out)
        if not self.valid_inputs:
            raise ValueError(f"no input size below {_MAX_INPUT} fits filters {self.filters} "
                             f"and poolings {self.poolings}")

        self.input = self._choose_input(desired_input, desired_output)
        self.calclayers(self.input)
        for layer, field in zip(self.layers, self.fields, strict=True):
            layer.setfield(field)
        self.overlap = [layer.overlap for layer in self.layers]
        self.pred_stride = self.stride[-1]

        uneven = sorted({p for p, m in zip(self.poolings, self.mfp, strict=True) if m and p > 2})
        if uneven and self.legacy_mfp:
            logger.warning("MFP with pool %s: legacy_mfp sizes follow the ELEKTRONN 1.0 rule "
                           "out %% pool == 1, but max-fragment-pooling needs out %% pool == "
                           "pool - 1: a net with these sizes cannot be built", uneven)

    def _choose_input(self, desired_input, desired_output):
        if desired_output is not None:
            output = _fit_size(_positive_int(desired_output, "desired_output"),
                               self.valid_outputs, "output")
            return self.valid_inputs[self.valid_outputs.index(output)]
        if desired_input is None:
            return self.valid_inputs[-1]
        return _fit_size(_positive_int(desired_input, "desired_input"), self.valid_inputs, "input")

    def _make_layers(self, input):
        layers, size, stride = [], input, 1
        for filt, pool, mfp in zip(self.filters, self.poolings, self.mfp, strict=True):
            stride *= pool
            layers.append(_Layer(size, filt, pool, stride, mfp, self.legacy_mfp))
            size = layers[-1].pool_out
        return layers

    def calclayers(self, input: int) -> None:
        """Set ``layers``, ``pool_out``, ``out`` and ``stride`` for the input size ``input``.

        Raises
        ------
        ValueError
            If the layers do not accept ``input``.
        """
        self.layers = self._make_layers(input)
        self.pool_out = [layer.pool_out for layer in self.layers]
        self.out = [layer.out for layer in self.layers]
        self.stride = [layer.stride for layer in self.layers]

    def getFields(self) -> list[int]:
        """Return the receptive field of every layer's output neurons, in input pixels."""
        fields = []
        for i in range(len(self.filters)):
            field = 1
            for filt, pool in zip(self.filters[i::-1], self.poolings[i::-1], strict=True):
                field = field * pool + filt - 1
            fields.append(field)
        return fields


class _multiCNNCalculator(_CalculatorBase):
    """One :class:`_CNNCalculator` per dimension, with per-dimension lists of their values.

    Parameters
    ----------
    calcs : list of _CNNCalculator
        One calculator per dimension, in the caller's dimension order.

    Attributes
    ----------
    calcs : list of _CNNCalculator
    input, offset, pred_stride, fields, pool_out, out, stride, overlap, valid_inputs, \
valid_outputs : list
        The attribute of the same name of each calculator in ``calcs``.
    """

    _PER_DIM = ("input", "offset", "pred_stride", "fields", "pool_out", "out", "stride",
                "overlap", "valid_inputs", "valid_outputs")

    def __init__(self, calcs):
        self.calcs = list(calcs)
        for name in self._PER_DIM:
            setattr(self, name, [getattr(calc, name) for calc in self.calcs])


def CNNCalculator(filters: Sequence[int | Sequence[int]],
                  poolings: Sequence[int | Sequence[int]],
                  desired_input: int | Sequence[int] | None = None,
                  MFP: bool | Sequence[bool | Sequence[bool]] = False,
                  force_center: bool = False,
                  desired_output: int | Sequence[int] | None = None, n_dim: int = 1, *,
                  legacy_mfp: bool = False) -> "_CNNCalculator | _multiCNNCalculator":
    """Helper to calculate CNN architectures.

    This is a function, but it returns an object whose attributes hold the architecture
    values (input size, layer sizes, receptive fields, strides, overlaps, offset). Printing
    the object shows them one per line.

    Parameters
    ----------
    filters : list
        Filter size of every layer; for anisotropic filters an entry is a list with one size
        per dimension. Scalar and list entries may be mixed, e.g. ``[[1, 4, 4], 3, 3]``.
    poolings : list
        Pooling factor of every layer, in the same form as ``filters``.
    desired_input : int, list of int or None
        Desired input size (per dimension). If it is not possible, the next smaller valid
        size is used (the smallest valid size if it is too small). If None, the largest valid
        input below 5000 is used; all valid sizes are in the attribute ``valid_inputs``.
    MFP : bool or list
        Whether each layer uses max-fragment-pooling (entries may be per dimension). MFP
        needs other input sizes than normal pooling: a layer accepts a convolution output
        ``out`` when ``out % pool == pool - 1``, so that all ``pool`` fragments have the same
        size (what ``MixedConvNN.addConvLayer`` requires).
    force_center : bool
        Raise ValueError if the output neurons do not lie at the centre of input pixels
        (even field of view); otherwise only a warning is logged.
    desired_output : int, list of int or None
        Alternative to ``desired_input``: the desired unpooled output size of the last layer.
        If it is not possible, the next smaller valid output is used.
    n_dim : int
        Dimensionality of the CNN.
    legacy_mfp : bool
        Use ELEKTRONN 1.0's MFP rule ``out % pool == 1`` instead. It is the same rule for
        ``pool == 2``; for larger pools its sizes give uneven fragments, which the net refuses
        (a warning is logged).

    Returns
    -------
    _CNNCalculator or _multiCNNCalculator
        For ``n_dim == 1`` a single calculator with plain-int attributes. Otherwise one
        calculator per dimension, whose attributes (``input``, ``pool_out``, ``out``,
        ``fields``, ``stride``, ``overlap``, ``offset``, ``pred_stride``, ``valid_inputs``,
        ``valid_outputs``) are per-dimension lists, each in forward layer order.

    Raises
    ------
    ValueError
        For malformed arguments, when no input size fits, or for an even field of view with
        ``force_center=True``.

    Notes
    -----
    ``pool_out`` are the fragment sizes for MFP layers. ``offset`` is half the field of view
    of the last layer; a non-integer offset means the output neurons lie centred on input
    pixels (odd field of view). Size changes are logged at INFO level and an even field of
    view at WARNING level on the ``"elektronn"`` logger.

    Examples
    --------
    An anisotropic "flat" 3-D CNN with MFP in the first layers only:

    >>> d = CNNCalculator([[6, 6, 1], [4, 4, 4], [2, 2, 2], [1, 1, 1]],
    ...                   [[2, 2, 1], [2, 2, 2], [2, 2, 2], [1, 1, 1]],
    ...                   desired_input=[211, 211, 20], MFP=[1, 1, 0, 0],
    ...                   force_center=True, n_dim=3)
    >>> print(d)  # doctest: +NORMALIZE_WHITESPACE
    Input: [210, 210, 18]
    Layer/Fragment sizes:  [[102, 49, 24, 24], [102, 49, 24, 24], [18, 7, 3, 3]]
    Unpooled Layer sizes:  [[205, 99, 48, 24], [205, 99, 48, 24], [18, 15, 6, 3]]
    Receptive fields:      [[7, 15, 23, 23], [7, 15, 23, 23], [1, 5, 9, 9]]
    Strides:               [[2, 4, 8, 8], [2, 4, 8, 8], [1, 2, 4, 4]]
    Overlap:               [[5, 11, 15, 15], [5, 11, 15, 15], [0, 3, 5, 5]]
    Offset:                [11.5, 11.5, 4.5].
    If offset is non-int: output neurons lie centered on input neurons, they have an odd FOV

    The ELEKTRONN 1.0 documentation shows ``[210, 210, 22]`` ("20 changed to 22, size too
    small") for this call; that came from an older rule. With the rules the released code
    (and this port) applies, z = 18 is valid (18 -> 18 -> 15 -> 7 -> 6 -> 3 -> 3; the valid z
    inputs are 10, 14, 18, 22, ...), so 20 becomes 18:

    >>> d.valid_inputs[2][:4], d.pred_stride
    ([10, 14, 18, 22], [8, 8, 4])
    """
    n_dim = _positive_int(n_dim, "n_dim")
    filters = _layer_list(filters, "filters")
    per_dim = zip(
        _transpose(filters, n_dim, "filters"),
        _transpose(_layer_list(poolings, "poolings"), n_dim, "poolings"),
        _per_dim(desired_input, n_dim, "desired_input"),
        _transpose(_mfp_list(MFP, len(filters)), n_dim, "MFP"),
        _per_dim(desired_output, n_dim, "desired_output"),
        strict=True,
    )
    calcs = [_CNNCalculator(f, p, d_in, mfp, force_center, d_out, legacy_mfp)
             for f, p, d_in, mfp, d_out in per_dim]
    return calcs[0] if n_dim == 1 else _multiCNNCalculator(calcs)


def _glorot_fans(shape, pool=None):
    """Return ``(n_in, n_out)`` of a weight of ``shape`` by ELEKTRONN 1.0's rules.

    Conv weights are ``(nof, ch, fx, fy)`` or ``(nof, fz, ch, fx, fy)``; their fan-out is
    divided (integer floor division) by the pooling volume ``prod(pool)``.
    """
    pools = pool if _is_sequence(pool) else [1 if pool is None else pool]
    pool_volume = int(np.prod([_positive_int(p, "pool") for p in pools]))
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        nof, ch, fx, fy = shape
        return ch * fx * fy, nof * fx * fy // pool_volume
    if len(shape) == 5:
        nof, fz, ch, fx, fy = shape
        return fz * ch * fx * fy, nof * fz * fx * fy // pool_volume
    raise ValueError(f"scale='glorot' needs a 2-, 4- or 5-D shape, got shape={shape}")


def initWeights(shape, scale="glorot", mode="normal", pool=None, rng=None):
    """Draw initial weights (or biases) by ELEKTRONN 1.0's rules.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array: ``(n_in, n_out)`` for perceptrons, ``(nof, ch, fx, fy)`` for 2-D
        and ``(nof, fz, ch, fx, fy)`` for 3-D convolutions; any shape for 'const'/'fix-uni'.
    scale : 'glorot' or float
        'glorot' uses ``s = sqrt(2 / (n_in + n_out))``; a number is used by the modes
        'const' and 'fix-uni'.
    mode : {'normal', 'uni', 'const', 'fix-uni', 'rnn'}
        With ``scale='glorot'``: 'normal' draws ``N(0, s)``, 'uni' draws ``U(-s, s)``.
        'const' fills with ``scale``, 'fix-uni' draws ``U(-scale, scale)``. 'rnn' (square
        shape, scale ignored) draws ``U(-1, 1)`` and divides by the largest singular value.
    pool : tuple of int, optional
        Pooling factors of a conv layer; the glorot fan-out ``nof * prod(filter)`` is
        floor-divided by ``prod(pool)``.
    rng : numpy.random.Generator or numpy.random.RandomState, optional
        Source of randomness; None uses numpy's global ``np.random`` state, like the original.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``.

    Raises
    ------
    ValueError
        For an invalid combination of ``scale`` and ``mode``, a non-square shape with
        ``mode='rnn'``, or a shape without glorot fans (not 2-, 4- or 5-D).
    """
    shape = tuple(_positive_int(n, "shape") for n in (shape if _is_sequence(shape) else [shape]))
    rng = as_rng(rng)
    numeric = isinstance(scale, numbers.Real) and not isinstance(scale, (bool, np.bool_))
    glorot = isinstance(scale, str) and scale == "glorot"
    if mode == "const" and numeric:
        weights = np.full(shape, scale)
    elif mode == "rnn":
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"mode='rnn' needs a square 2-D shape, got shape={shape}")
        weights = rng.uniform(-1.0, 1.0, size=shape)
        weights /= np.linalg.norm(weights, ord=2)
    elif mode == "fix-uni" and numeric:
        weights = rng.uniform(-scale, scale, size=shape)
    elif glorot and mode in ("normal", "uni"):
        n_in, n_out = _glorot_fans(shape, pool)
        s = np.sqrt(2.0 / (n_in + n_out))
        if mode == "normal":
            weights = rng.normal(0.0, s, size=shape)
        else:
            weights = rng.uniform(-s, s, size=shape)
    else:
        raise ValueError(f"Invalid weight initialisation parameters scale={scale!r}, "
                         f"mode={mode!r}: use mode 'const' or 'fix-uni' with a numeric scale, "
                         f"mode 'rnn', or scale='glorot' with mode 'normal' or 'uni'")
    return np.asarray(weights, dtype=np.float32)
