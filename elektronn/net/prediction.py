"""Dense prediction: a class-probability map for every pixel of an image or volume.

:func:`predict_dense` is ``MixedConvNN.predictDense`` of ELEKTRONN 1.0.  The image is
cut into tiles; every tile is predicted by one or more forward passes of the net on a
``patch_size`` window, and the outputs are interleaved into a dense map:

* a net with max-fragment pooling (MFP) in every pooling layer is dense already: one pass;
* a net without MFP outputs every ``stride``-th pixel: one pass per shift of the window by
  ``0 .. stride - 1`` pixels, i.e. ``prod(output_strides)`` passes;
* a net with MFP in some pooling layers only ("partial MFP", which ELEKTRONN 1.0 refused) gets
  one pass for each shift of the pooling phases that MFP does not cover, again
  ``prod(output_strides)`` passes, each returning an MFP-dense but gapped output.

All three cases use one rule: an output of the net sits at a known input position
(:func:`axis_phases`, :func:`dense_positions`), so each pass is scattered into the tile's output.

Memory is bounded by the tile: the image is read tile by tile (only a tile-sized block is ever
taken from ``raw_img``, so ``np.memmap`` and ``h5py`` datasets stay on disk), integer scaling
and mirror padding are applied per tile, and the only whole-image array is the result.

Coordinates: the image is ``(ch, x, y[, z])`` and so is the result; the net's own sizes
(``patch_size``, pools, ``output_strides``, offsets) are zxy for 3-D nets.  Inside this module
every per-axis quantity is in the image's (x, y, z) order.
"""

import itertools
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from elektronn.net import prednet
from elektronn.net._convcore import ConvLayerBase
from elektronn.net.convlayer3d import AffinityLayer3d

__all__ = [
    "predict_dense",
    "AxisPlan",
    "axis_phases",
    "dense_positions",
    "plan_axis",
    "tile_starts",
    "symmetric_index",
    "source_indices",
]

logger = logging.getLogger("elektronn")


# --- pure tiling arithmetic (no PyTensor, unit-tested on their own) ---------------------------
def axis_phases(pools, mfp):
    """Input positions of one forward pass's outputs along one axis, and the missing shifts.

    Output ``a`` of a pooling layer covers the layer input from ``a * pool``; with MFP the
    fragment of phase ``f`` covers it from ``f + a * pool``.  So a pass puts its outputs at
    ``residue + k * stride`` input pixels, where ``stride`` is the product of all pools and
    the residues are the MFP phases weighted by the stride of the layer's input.  Shifting the
    input by the phases of the pools *without* MFP fills in the rest.

    Parameters
    ----------
    pools : sequence of int
        Pool factor of every layer along this axis, first layer first.
    mfp : sequence of bool
        Whether each layer uses max-fragment pooling.

    Returns
    -------
    residues : ndarray of int
        ``residues[o]`` is the input position of the fragment with offset ``o`` (the offset of
        ``MixedConvNN.mfp_offsets`` along this axis); ``len(residues)`` is the MFP stride.
    shifts : ndarray of int
        Input shifts that, added to the residues, give every position ``0 .. stride - 1``
        exactly once; ``len(shifts)`` is the net's ``output_strides`` entry.
    stride : int
        Product of the pools (the spacing of the outputs of one fragment).

    Examples
    --------
    MFP in the first of two pool-2 layers (partial MFP): one pass covers positions 0 and 1
    of every 4, the shifted pass (by 2) covers 2 and 3.

    >>> r, t, s = axis_phases([2, 2], [True, False])
    >>> r.tolist(), t.tolist(), s
    ([0, 1], [0, 2], 4)
    >>> r, t, s = axis_phases([2, 2], [False, True])
    >>> r.tolist(), t.tolist(), s
    ([0, 2], [0, 1], 4)
    """
    residues, shifts, stride = [0], [0], 1
    for pool, frag in zip(pools, mfp, strict=True):
        phases = [k * stride for k in range(int(pool))]
        if frag:  # new fragment offset = phase index * (old MFP stride) + old offset
            residues = [r + ph for ph in phases for r in residues]
        else:
            shifts = [t + ph for ph in phases for t in shifts]
        stride *= int(pool)
    return np.array(residues, np.int64), np.array(shifts, np.int64), stride


def dense_positions(n_dense, residues, stride):
    """Input position of every element of the net's (MFP-reassembled) output along one axis.

    Parameters
    ----------
    n_dense : int
        Output size along the axis (the dense size after MFP reassembly).
    residues : ndarray of int
        From :func:`axis_phases`; element ``d`` has fragment offset ``d % len(residues)``.
    stride : int
        From :func:`axis_phases`.

    Returns
    -------
    ndarray of int, shape (n_dense,)

    Examples
    --------
    >>> dense_positions(6, [0, 1], 4).tolist()
    [0, 1, 4, 5, 8, 9]
    """
    residues = np.asarray(residues, np.int64)
    m = len(residues)
    if n_dense % m:
        raise ValueError(f"output size {n_dense} is not a multiple of the MFP stride {m}")
    d = np.arange(n_dense)
    return residues[d % m] + (d // m) * stride


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one image axis (see :func:`plan_axis`).

    Attributes
    ----------
    patch : int
        Net input size.
    tile_in : int
        Input extent of a tile: the patch plus the largest shift.
    tile_out : int
        Outputs per tile (consecutive window positions ``0 .. tile_out - 1``).
    fov : int
        Field of view of one output (``tile_in - tile_out + 1``).
    positions : ndarray of int
        Position in the tile's output of every element of one pass (unshifted).
    shifts : ndarray of int
        Window shifts of the passes along this axis.
    """

    patch: int
    tile_in: int
    tile_out: int
    fov: int
    positions: np.ndarray
    shifts: np.ndarray

    @property
    def passes(self):
        """Forward passes per tile along this axis."""
        return len(self.shifts)


def plan_axis(patch, n_dense, pools, mfp):
    """Tile geometry of one axis for a net with the given patch, output size and pools.

    Parameters
    ----------
    patch : int
        Net input size along the axis.
    n_dense : int
        Net output size along the axis (dense size with MFP).
    pools, mfp : sequence
        Per-layer pools and MFP flags along the axis (see :func:`axis_phases`).

    Returns
    -------
    AxisPlan

    Raises
    ------
    ValueError
        If the sizes are inconsistent (the shifted outputs would not tile the axis).

    Examples
    --------
    One conv layer (filter 3) with pool 2 without MFP, patch 8 -> 3 outputs: two passes
    (shifts 0, 1) give 6 window positions from an input tile of 9.

    >>> p = plan_axis(8, 3, [2], [False])
    >>> p.tile_in, p.tile_out, p.fov, p.positions.tolist(), p.shifts.tolist()
    (9, 6, 4, [0, 2, 4], [0, 1])
    """
    residues, shifts, stride = axis_phases(pools, mfp)
    positions = dense_positions(n_dense, residues, stride)
    tile_out = (n_dense // len(residues)) * stride
    tile_in = int(patch) + int(shifts.max())
    covered = np.sort((shifts[:, None] + positions[None, :]).ravel())
    if not np.array_equal(covered, np.arange(tile_out)) or tile_in - tile_out < 0:
        raise ValueError(f"inconsistent net geometry: patch {patch}, output {n_dense}, "
                         f"pools {list(pools)}, MFP {list(mfp)}")
    return AxisPlan(int(patch), tile_in, tile_out, tile_in - tile_out + 1, positions, shifts)


def tile_starts(n_out, tile_out):
    """First output index of every tile covering ``n_out`` outputs (the last one may be cut).

    >>> tile_starts(10, 4)
    [0, 4, 8]
    """
    return list(range(0, int(n_out), int(tile_out)))


def symmetric_index(i, size):
    """Map indices outside ``[0, size)`` into it as ``np.pad(..., mode='symmetric')`` does.

    >>> symmetric_index(np.arange(-3, 6), 3).tolist()
    [2, 1, 0, 0, 1, 2, 2, 1, 0]
    """
    m = np.mod(i, 2 * size)
    return np.where(m >= size, 2 * size - 1 - m, m)


def source_indices(start, length, pad, size):
    """Image indices of a tile, in coordinates of the image mirror-padded by ``pad``.

    Parameters
    ----------
    start, length : int
        First index and length of the tile in padded coordinates.
    pad : int
        Mirror padding on both sides (0: none).
    size : int
        Unpadded image size along the axis.

    Returns
    -------
    ndarray of int
        Index into the unpadded image of each tile position that lies inside the padded image
        (the tile may reach beyond it; those positions are not listed and stay zero).

    Examples
    --------
    >>> source_indices(0, 5, 2, 4).tolist()
    [1, 0, 0, 1, 2]
    >>> source_indices(6, 4, 2, 4).tolist()
    [3, 2]
    """
    stop = min(start + length, size + 2 * pad)
    return symmetric_index(np.arange(start, stop) - pad, size)


# --- the net as seen by the tiler -------------------------------------------------------------
def _to_xyz(values, n_dim, fill):
    """Net order (xy for 2-D, zxy for 3-D) -> image order (x, y, z)."""
    v = [int(a) for a in values]
    return (v[0], v[1], fill) if n_dim == 2 else (v[1], v[2], v[0])


def _to_net(values, n_dim):
    """Image order (x, y, z) -> net order (for messages)."""
    return tuple(values[:2]) if n_dim == 2 else (values[2], values[0], values[1])


@dataclass(frozen=True)
class _NetGeometry:
    n_dim: int
    channels: int
    n_lab: int
    axes: tuple  # three AxisPlan, (x, y, z)
    dense: tuple  # output shape of one pass, (x, y, z)

    @classmethod
    def from_cnn(cls, cnn):
        if getattr(cnn, "n_dim", None) not in (2, 3) or not getattr(cnn, "layers", None):
            raise ValueError("predictDense needs a 2-D or 3-D conv net")
        if getattr(cnn, "output_strides", None) is None or \
                getattr(cnn, "class_probabilities", None) is None:
            raise ValueError("predictDense needs a conv net whose last layer was added with "
                             "is_last_layer=True, compiled with compileOutputFunctions() "
                             "(target 'nll')")
        if not all(isinstance(lay, ConvLayerBase | AffinityLayer3d) for lay in cnn.layers):
            raise ValueError("predictDense needs a net of conv layers only")
        n_dim = cnn.n_dim
        pools = [_to_xyz(lay.pool, n_dim, 1) for lay in cnn.layers]
        frag = [bool(lay.use_fragment_pooling) for lay in cnn.layers]
        patch = _to_xyz(cnn.patch_size, n_dim, 1)
        dense = _to_xyz(cnn.output_shape[2:], n_dim, 1)
        axes = tuple(plan_axis(patch[k], dense[k], [p[k] for p in pools], frag)
                     for k in range(3))
        strides = _to_xyz(cnn.output_strides, n_dim, 1)
        if tuple(a.passes for a in axes) != strides:
            raise RuntimeError(f"the net's output_strides {cnn.output_strides} do not match its "
                               f"layers' pools and MFP flags ({[a.passes for a in axes]})")
        channels = cnn.input_shape[1] if n_dim == 2 else cnn.input_shape[2]
        return cls(n_dim, int(channels), int(cnn.n_lab), axes, dense)

    def describe(self, with_z):
        """The image shape the net accepts, for error messages."""
        names = ("x", "y", "z") if with_z else ("x", "y")
        sizes = ", ".join(f"{n}>={a.patch}" for n, a in zip(names, self.axes[: len(names)],
                                                            strict=True))
        return f"({self.channels}, {', '.join(names)}) with {sizes}"

    def forward(self, cnn, patch):
        """Class probabilities ``(n_lab, x, y, z)`` of one ``(ch, x, y, z)`` patch."""
        if self.n_dim == 2:
            out = np.asarray(cnn.class_probabilities(patch[None, ..., 0])[0])[..., None]
        else:
            out = np.asarray(cnn.class_probabilities(patch.transpose(3, 0, 1, 2)[None])[0])
            out = out.transpose(0, 2, 3, 1)
        if out.shape != (self.n_lab,) + self.dense:
            raise RuntimeError(f"the net returned class probabilities of shape {out.shape}, "
                               f"expected {(self.n_lab,) + self.dense} (x, y, z order)")
        return out


def _index(positions):
    """A slice for an arithmetic progression (cheap strided write), else the index array."""
    if len(positions) > 1:
        step = int(positions[1] - positions[0])
        if step > 0 and np.array_equal(positions, positions[0] + step * np.arange(len(positions))):
            return slice(int(positions[0]), int(positions[-1]) + 1, step)
    elif len(positions) == 1:
        return slice(int(positions[0]), int(positions[0]) + 1)
    return positions


def _scatter_index(axes, shift):
    """Index into the tile output for the pass with the given (x, y, z) shift."""
    idx = [_index(a.positions + s) for a, s in zip(axes, shift, strict=True)]
    if all(isinstance(i, slice) for i in idx):
        return (slice(None), *idx)
    arrays = [np.arange(i.start, i.stop, i.step) if isinstance(i, slice) else i for i in idx]
    return (slice(None), *np.ix_(*arrays))


# --- the image --------------------------------------------------------------------------------
def _as_image(raw_img, geo):
    """Check the image; return it (an array-like, not copied) and whether it has a z axis."""
    if not all(hasattr(raw_img, a) for a in ("shape", "dtype", "__getitem__")):
        raw_img = np.asarray(raw_img)
    shape = tuple(raw_img.shape)
    accepted = (3, 4) if geo.n_dim == 2 or geo.axes[2].patch == 1 else (4,)
    if len(shape) not in accepted or shape[0] != geo.channels:
        forms = " or ".join(geo.describe(n == 4) for n in accepted)
        raise ValueError(f"predictDense of this {geo.n_dim}-D net needs an array {forms}; got "
                         f"shape {shape}")
    if not (np.issubdtype(raw_img.dtype, np.number) or raw_img.dtype == bool):
        raise ValueError(f"the image must be numeric, got dtype {raw_img.dtype}")
    return raw_img, len(shape) == 4


def _offsets(cnn, offset, n_dim):
    """Per-axis (x, y, z) offsets: the argument if given, else ``dimension_calc.offset``."""
    if offset is None:
        calc = getattr(cnn, "dimension_calc", None)
        if calc is None:
            want = "(x, y)" if n_dim == 2 else "(z, x, y)"
            raise ValueError("predictDense needs the offset: the net has no dimension_calc, so "
                             f"pass offset={want} (half the field of view, floored)")
        offset = calc.offset
    offset = np.asarray(offset, np.float64)
    if offset.ndim > 1 or offset.size not in (1, n_dim):
        order = "(x, y)" if n_dim == 2 else "(z, x, y)"
        raise ValueError(f"offset must be {n_dim} numbers {order}, got {offset.tolist()}")
    off = np.floor(np.broadcast_to(offset.ravel(), (n_dim,))).astype(int)
    if (off < 0).any():
        raise ValueError(f"offset must not be negative, got {offset}")
    return _to_xyz(off, n_dim, 0)


def _plan_image(geo, shape, has_z, off, pad_raw):
    """Check the image size and offsets; return per-axis (x, y, z) tuples.

    Returns ``size`` (image), ``pad`` (mirror padding), ``n_pred`` (predictions) and ``base``
    (padded-image position of the window of prediction 0).
    """
    size = tuple(shape[1:]) + (() if has_z else (1,))
    pad = off if pad_raw else (0, 0, 0)
    padded = tuple(s + 2 * p for s, p in zip(size, pad, strict=True))
    shown = padded[: 3 if has_z else 2]
    if any(s < a.patch for s, a in zip(padded, geo.axes, strict=True)):
        what = "mirror-padded image" if any(pad) else "image"
        raise ValueError(f"the {what} {shown} is smaller than one patch: the net needs "
                         f"{geo.describe(has_z)}")
    half_fov = tuple(a.fov // 2 for a in geo.axes)
    if any(o < h for o, h in zip(off, half_fov, strict=True)):
        raise ValueError(f"offset {_to_net(off, geo.n_dim)} is smaller than half the field of "
                         f"view {_to_net(half_fov, geo.n_dim)}: the border predictions would "
                         "need pixels outside the image")
    n_pred = tuple(s - 2 * o for s, o in zip(padded, off, strict=True))
    if min(n_pred) < 0:
        raise ValueError(f"offset {_to_net(off, geo.n_dim)} is larger than half the image {shown}")
    base = tuple(o - h for o, h in zip(off, half_fov, strict=True))
    return size, pad, n_pred, base


def _read_tile(raw, idxs, tile_in, has_z, scale):
    """Cut one tile (float32, ``(ch, *tile_in)``, zero beyond the image) from ``raw``."""
    lo = [int(i.min()) for i in idxs]
    sl = tuple(slice(a, int(i.max()) + 1) for a, i in zip(lo, idxs, strict=True))
    block = np.asarray(raw[(slice(None),) + (sl if has_z else sl[:2])])
    if not has_z:
        block = block[..., None]
    local = [i - a for i, a in zip(idxs, lo, strict=True)]
    if any(not np.array_equal(i, np.arange(len(i))) for i in local):  # mirrored parts
        block = block[(slice(None), *np.ix_(*local))]
    tile = np.zeros((block.shape[0], *tile_in), np.float32)
    tile[(slice(None),) + tuple(slice(0, len(i)) for i in idxs)] = block
    if scale != 1:
        tile /= np.float32(scale)
    return tile


def _predict_tile(cnn, geo, tile, prob):
    """Fill ``prob`` (n_lab, *tile_out) with all passes over ``tile`` (ch, *tile_in)."""
    for shift in itertools.product(*(a.shifts for a in geo.axes)):
        window = tuple(slice(int(s), int(s) + a.patch)
                       for s, a in zip(shift, geo.axes, strict=True))
        prob[_scatter_index(geo.axes, shift)] = geo.forward(cnn, tile[(slice(None),) + window])


def _prediction_net(cnn, geo, n_pred):
    """``(net, geometry)`` to predict ``n_pred`` outputs with: ``cnn`` or its twin (``prednet``)."""
    tiles = int(np.prod([-(-n // a.tile_out) for n, a in zip(n_pred, geo.axes, strict=True)]))
    passes = int(np.prod([a.passes for a in geo.axes]))
    twin = prednet.twin_for(cnn, tiles, passes, _to_net(n_pred, geo.n_dim))
    if twin is None:
        return cnn, geo
    twin_geo = _NetGeometry.from_cnn(twin)
    if [a.fov for a in twin_geo.axes] != [a.fov for a in geo.axes]:
        raise RuntimeError(f"the twin's field of view {[a.fov for a in twin_geo.axes]} differs "
                           f"from the net's {[a.fov for a in geo.axes]}")
    return twin, twin_geo


# --- the public function ----------------------------------------------------------------------
def _count_non_finite(raw):
    """Voxels of an image (array or array-like, read slab by slab) that are NaN or inf."""
    if np.dtype(raw.dtype).kind != "f":
        return 0
    step = max(1, 2 ** 24 // max(1, int(np.prod(raw.shape[:-1]))))
    return sum(int(np.count_nonzero(~np.isfinite(np.asarray(raw[..., k:k + step]))))
               for k in range(0, raw.shape[-1], step))


def _warn_non_finite(n_bad, n_total):
    warnings.warn(f"predictDense: {n_bad} of {n_total} input voxels are not finite (NaN or "
                  "inf); the prediction is NaN within the field of view of each of them",
                  RuntimeWarning, stacklevel=4)


def predict_dense(cnn, raw_img, show_progress=True, offset=None, as_uint8=False, pad_raw=False):
    """Predict the class probabilities of every pixel of an image or volume, tile by tile.

    Parameters
    ----------
    cnn : MixedConvNN
        A compiled 2-D or 3-D conv net (last layer added with ``is_last_layer=True``).  Nets with
        max-fragment pooling in all, some or none of their pooling layers are supported.
    raw_img : array_like, shape (ch, x, y) or (ch, x, y, z)
        The image.  Integer dtypes are scaled by 1/255, other dtypes are used as they are.  A
        2-D net predicts a volume slice by slice.  Any array-like with ``shape``, ``dtype`` and
        basic slicing (``np.memmap``, an ``h5py`` dataset) is read tile by tile, never whole.
    show_progress : bool
        Show a progress bar (``tqdm.auto``: MVox/s and the time left) on stderr; the
        tiling and the final speed are logged (logger ``"elektronn"``, level INFO).
    offset : sequence of int, optional
        Distance from the image border to the first predicted pixel: ``(x, y)`` for 2-D nets,
        ``(z, x, y)`` for 3-D nets; floored.  Default: ``cnn.dimension_calc.offset``.  At least
        half the field of view (floored); a larger offset crops more and keeps every
        prediction centred on its pixel.
    as_uint8 : bool
        Return ``uint8(255 * probability)``, truncated (not rounded) as in ELEKTRONN 1.0.
    pad_raw : bool
        Mirror-pad the image (``np.pad(..., mode='symmetric')``) by the offset, so that the
        prediction has the size of the image.

    Returns
    -------
    ndarray, shape (n_lab, x - 2*ox, y - 2*oy[, z - 2*oz])
        float32 probabilities (uint8 with ``as_uint8``); the full image size with ``pad_raw``.
        ``predictions[:, i, j]`` is the net's output for the window centred on image pixel
        ``(i + ox, j + oy)`` (for an even field of view: half a pixel before it).

    Raises
    ------
    ValueError
        For a net that cannot predict densely, an image of the wrong shape or smaller than one
        patch (after padding), or a missing or too small offset.

    Notes
    -----
    For a large prediction, or an image geometry met before, the tiles are predicted by a twin
    of the net with max-fragment pooling in every pooling layer and a larger tile, on the
    net's own parameters (:mod:`elektronn.net.prednet`): the same predictions, faster.
    Differences to ELEKTRONN 1.0, all of which only turn errors into results: any image at
    least one patch large works, also for nets with an even field of view (the original crashed
    at the last tile); partial MFP works (the original raised NotImplementedError); an explicit
    ``offset`` is used even when the net has a ``dimension_calc`` (the original ignored it).
    The predictions are equal, up to float32 rounding, to running the net on every window.
    """
    geo = _NetGeometry.from_cnn(cnn)
    raw, has_z = _as_image(raw_img, geo)
    off = _offsets(cnn, offset, geo.n_dim)
    size, pad, n_pred, base = _plan_image(geo, raw.shape, has_z, off, pad_raw)
    scale = 255 if np.issubdtype(raw.dtype, np.integer) else 1
    # an array is counted at once; a lazy one (h5py) only if a tile shows NaN or inf
    n_bad = _count_non_finite(raw) if isinstance(raw, np.ndarray) else None
    if n_bad:
        _warn_non_finite(n_bad, raw.size)

    net, geo = _prediction_net(cnn, geo, n_pred)
    starts = [tile_starts(n, a.tile_out) for n, a in zip(n_pred, geo.axes, strict=True)]
    n_tiles = tuple(len(s) for s in starts)
    n_passes = int(np.prod([a.passes for a in geo.axes]))
    predictions = np.zeros((geo.n_lab, *n_pred), np.uint8 if as_uint8 else np.float32)
    prob = np.zeros((geo.n_lab, *(a.tile_out for a in geo.axes)), np.float32)
    tile_in = tuple(a.tile_in for a in geo.axes)

    voxels = int(np.prod(n_pred))
    logger.info("Predicting img %s in %d Blocks: %s (%d forward pass%s per block)",
                tuple(raw.shape), int(np.prod(n_tiles)), n_tiles, n_passes,
                "es" if n_passes > 1 else "")
    t0 = time.perf_counter()
    with tqdm(total=voxels, desc="Predicting", unit="Vox", unit_scale=True,
              disable=not show_progress) as bar:
        for start in itertools.product(*starts):
            idxs = [source_indices(s + b, a.tile_in, p, n)
                    for s, b, a, p, n in zip(start, base, geo.axes, pad, size, strict=True)]
            tile = _read_tile(raw, idxs, tile_in, has_z, scale)
            if n_bad is None and not np.isfinite(tile).all():
                n_bad = _count_non_finite(raw)
                _warn_non_finite(n_bad, int(np.prod(raw.shape)))
            _predict_tile(net, geo, tile, prob)
            n = [min(a.tile_out, m - s) for a, m, s in zip(geo.axes, n_pred, start, strict=True)]
            block = prob[(slice(None), *(slice(0, k) for k in n))]
            if as_uint8:
                block = (block * 255).astype(np.uint8)  # truncates, as ELEKTRONN 1.0
            predictions[(slice(None), *(slice(s, s + k) for s, k in zip(start, n, strict=True)))] \
                = block
            bar.update(int(np.prod(n)))
    seconds = time.perf_counter() - t0
    logger.info("Inference speed: %.3f MVox/s (%d voxels in %.2f s)",
                voxels / 1e6 / max(seconds, 1e-9), voxels, seconds)
    return predictions if has_z else predictions[..., 0]


def __getattr__(name):
    """``predict_volume`` lives in :mod:`elektronn.net.volume` (imported on first use)."""
    if name == "predict_volume":
        from elektronn.net.volume import predict_volume
        return predict_volume
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
