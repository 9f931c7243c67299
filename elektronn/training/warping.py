"""Geometric and grey-value augmentation of image patches (ELEKTRONN 1.0 ``warping``).

The warps map every voxel of an output patch to a source position and copy the *nearest*
source voxel, so labels keep their values. They are a numpy port of ELEKTRONN 1.0's C kernel
(``warping.c``): the same float32 arithmetic in the same order, the same rounding of a source
coordinate ``u`` to the index ``trunc(u + 0.5)`` (so coordinates in ``(-1.5, -0.5]`` still read
index 0) and the same zero fill for positions outside the source, which makes the results
bit-identical to the original's.

Transform
---------
Coordinates are centred on the **source** image (centre ``c = size / 2 - 0.5`` per axis); the
output patch is the centred crop of the warped source. For an output voxel at centred
coordinates ``(z, x, y)``, with the angle ``a = rot + z * twist / c_z``:

* ``xt = x * (1 / scale_x + stretch[0] * y / c_x + stretch[2] * z / c_z)``
* ``yt = y * (1 / scale_y + stretch[1] * x / c_y + stretch[3] * z / c_z)``
* ``u = xt cos(a - shear) - yt sin(a + shear) + c_x`` (source x)
* ``v = yt cos(a + shear) + xt sin(a - shear) + c_y`` (source y)
* ``w = z / scale_z + c_z`` (source z; 3-D only)

So the kinds of warp are a rotation about the z axis, a shear relative to the xy diagonal, a
scale per axis (``scale > 1`` enlarges), a perspective "stretch" (x depends on y and y on x; in
3-D both also on z) and, in 3-D, a "twist" (the rotation angle grows linearly with z). Angles
are in degrees. A positive ``rot`` turns the image content clockwise in the (x, y) plane as
numpy prints it: ``rot=90`` equals ``np.rot90(img, k=-1, axes=(-2, -1))``.

z is treated as anisotropic: it is only scaled, never rotated or sheared into x and y, so every
output z-slice reads from exactly one source slice.

Layouts are the original's: 2-D images ``(ch, x, y)``, 3-D images ``(z, ch, x, y)``, labels
``(x, y)`` / ``(z, x, y)``. All channels are warped with the same map.

Labels
------
:func:`warp2dJoint` / :func:`warp3dJoint` warp labels with the image's transform. Label voxels
that map outside the source become **0**, i.e. class 0, not an ignore label (T9 of
ELEKTRONN 1.0, kept).

Random parameters
-----------------
:func:`getWarpParams`, :func:`randomFlip` and :func:`greyAugment` draw from a passed generator
(``numpy.random.Generator``; a legacy ``RandomState`` works too), never from numpy's global
state, so forked workers with their own generators do not repeat each other (docs/differences.md,
T5).

Changes against ELEKTRONN 1.0
-----------------------------
* An axis of source size 1 (centre offset 0) makes the original divide by zero (NaN or inf
  coordinates, an all-zero 3-D warp of a single slice); here the stretch and twist terms
  along such an axis are 0.
* Joint warps return labels in their own dtype; the original cast them to int16, which
  truncated float (regression) labels. int16 labels give identical results.
* No self-test runs at import; :func:`test` runs it on demand.
"""

import logging
import math

import numpy as np

__all__ = [
    "warp2dFast",
    "warp3dFast",
    "warp2dJoint",
    "warp3dJoint",
    "getWarpParams",
    "getRequiredPatchSize",
    "getCornerIx",
    "randomFlip",
    "greyAugment",
    "transposeIgnoreCh",
    "maketestimage",
    "test",
]

logger = logging.getLogger("elektronn")

_f32 = np.float32


# --- the kernel ----------------------------------------------------------------------------------


def _half_diff(src, out):
    """``(src - out) / 2`` with C integer division (truncation towards zero)."""
    d = src - out
    return d // 2 if d >= 0 else -(-d // 2)


def _safe_div(num, den):
    """float32 ``num / den``, or 0 where ``den == 0`` (a size-1 axis; the original gave inf)."""
    return num / den if den != 0 else _f32(0)


def _radians32(deg):
    """Degrees to float32 radians, rounded as the original wrapper (``deg * pi / 180``)."""
    return _f32(float(deg) * np.pi / 180)


def _sin_cos32(angles):
    """float32 ``sin`` and ``cos`` of float32 angles, evaluated in double as C's ``sin``."""
    sin = np.array([math.sin(a) for a in angles.tolist()], dtype=_f32)
    cos = np.array([math.cos(a) for a in angles.tolist()], dtype=_f32)
    return sin, cos


def _round_index(coord, size):
    """Nearest-neighbour index ``trunc(coord + 0.5)`` (in double) and its in-range mask.

    ``trunc(u + 0.5)`` lies in ``[0, size)`` exactly when ``-1.5 < u < size - 0.5`` (exact
    float32 comparisons); out-of-range entries get index 0.
    """
    valid = (coord > -1.5) & (coord < size - 0.5)
    t = coord.astype(np.float64)
    t += 0.5
    t *= valid  # out-of-range coordinates (finite: the parameters are checked) become 0
    return t.astype(np.intp), valid  # the cast truncates towards zero, as C's trunc


def _source_indices(src_shape, out_shape, rot, shear, scale, stretch, twist):
    """The source voxel that each output voxel copies (the C kernel's map).

    Parameters
    ----------
    src_shape, out_shape : tuple of int
        Spatial shapes ``(z, x, y)`` of the source and the output.
    rot, shear, twist : float
        Angles in degrees.
    scale : sequence of 3 float
        Scale of x, y and z.
    stretch : sequence of 4 float
        Stretch of x by y, y by x, x by z and y by z.

    Returns
    -------
    zi : ndarray of int, shape ``(pz, 1, 1)``
    xi, yi : ndarray of int, shape ``(pz, px, py)``
    valid : ndarray of bool, shape ``(pz, px, py)``
        Whether the source voxel ``(zi, xi, yi)`` exists (else the output is 0).
    """
    zc, xc, yc = (_f32(n / 2 - 0.5) for n in src_shape)
    z, x, y = (_f32(-c + _half_diff(s, p)) + np.arange(p, dtype=_f32)
               for c, s, p in zip((zc, xc, yc), src_shape, out_shape, strict=True))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # checked below
        inv = _f32(1) / np.asarray(scale, dtype=_f32)
        st = np.asarray(stretch, dtype=_f32)
        st = [_safe_div(s, c) for s, c in zip(st, (xc, yc, zc, zc), strict=True)]
        twist = _safe_div(_radians32(twist), zc)
        rot, shear = _radians32(rot), _radians32(shear)
    if not np.all(np.isfinite([rot, shear, twist, *inv, *st])):
        raise ValueError("warp parameters must be finite, and scales non-zero")

    zt = z * twist
    sin_plus, cos_plus = _sin_cos32((rot + shear) + zt)
    sin_minus, cos_minus = _sin_cos32((rot - shear) + zt)
    zi, z_ok = _round_index(z * inv[2] + zc, src_shape[0])

    col = (slice(None), None, None)  # z-vectors broadcast over (px, py)
    xt = x[None, :, None] * ((inv[0] + st[0] * y)[None, None, :] + (st[2] * z)[col])
    yt = y[None, None, :] * ((inv[1] + st[1] * x)[None, :, None] + (st[3] * z)[col])
    u = (xt * cos_minus[col] - yt * sin_plus[col]) + xc
    v = (yt * cos_plus[col] + xt * sin_minus[col]) + yc
    xi, x_ok = _round_index(u, src_shape[1])
    yi, y_ok = _round_index(v, src_shape[2])
    valid = x_ok & y_ok & z_ok[col]
    return zi[col], xi, yi, valid


def _gather(src, zi, xi, yi, valid):
    """``src[zi, :, xi, yi]`` as ``(pz, ch, px, py)``, 0 where not ``valid``.

    Each channel is flattened with one zero appended, which the invalid positions read.
    """
    sz, ch, sx, sy = src.shape
    n = sz * sx * sy
    flat = np.zeros((ch, n + 1), dtype=src.dtype)
    flat[:, :n].reshape(ch, sz, sx, sy)[...] = src.transpose(1, 0, 2, 3)
    index = (zi * sx + xi) * sy + yi
    index -= n
    index *= valid
    index += n  # invalid -> the appended zero
    index = index[:, None] + (np.arange(ch) * (n + 1))[:, None, None]
    return np.take(flat.reshape(-1), index)


def _check(img, n_dim, patch_size):
    if img.ndim != n_dim + 1:
        layout = "(ch, x, y)" if n_dim == 2 else "(z, ch, x, y)"
        raise ValueError(f"the image must be {n_dim + 1}-D {layout}, got shape {img.shape}")
    if len(patch_size) != n_dim:
        raise ValueError(f"patch_size must have {n_dim} entries, got {tuple(patch_size)}")


# --- warps ---------------------------------------------------------------------------------------


def warp2dFast(img, patch_size, rot=0, shear=0, scale=(1, 1), stretch=(0, 0)):
    """Warp a 2-D multi-channel image about its centre and crop it to ``patch_size``.

    Parameters
    ----------
    img : array_like, shape ``(ch, x, y)``
        The image; it should be at least as large as the patch (a smaller one is zero-filled).
    patch_size : sequence of 2 int
        Output size ``(px, py)``.
    rot : float
        Rotation about the z axis in degrees (see the module notes for the sign).
    shear : float
        Shear relative to the xy diagonal in degrees.
    scale : sequence of 2 float
        Scale of x and y; values above 1 enlarge the content.
    stretch : sequence of 2 float
        Perspective stretch: of x depending on y, of y depending on x, as the fraction of
        extra scale at the border of the image.

    Returns
    -------
    ndarray of float32, shape ``(ch, px, py)``
        Nearest-neighbour samples; 0 where the map leaves the image.
    """
    img = np.ascontiguousarray(img, dtype=np.float32)
    _check(img, 2, patch_size)
    px, py = (int(p) for p in patch_size)
    zi, xi, yi, valid = _source_indices(
        (1,) + img.shape[1:], (1, px, py), rot, shear,
        (scale[0], scale[1], 1), (stretch[0], stretch[1], 0, 0), 0)
    return _gather(img[None], zi, xi, yi, valid)[0]


def warp3dFast(img, patch_size, rot=0, shear=0, scale=(1, 1, 1), stretch=(0, 0, 0, 0),
               twist=0):
    """Warp a 3-D multi-channel image about its centre and crop it to ``patch_size``.

    Parameters
    ----------
    img : array_like, shape ``(z, ch, x, y)``
        The image; it should be at least as large as the patch (a smaller one is zero-filled).
    patch_size : sequence of 3 int
        Output size ``(pz, px, py)``.
    rot : float
        Rotation about the z axis in degrees (see the module notes for the sign).
    shear : float
        Shear relative to the xy diagonal in degrees.
    scale : sequence of 3 float
        Scale of x, y and z (this order); values above 1 enlarge the content.
    stretch : sequence of 4 float
        Perspective stretch of x depending on y, y on x, x on z and y on z, as the fraction of
        extra scale at the border of the image.
    twist : float
        Extra rotation in degrees at the z border; the angle grows linearly with z.

    Returns
    -------
    ndarray of float32, shape ``(pz, ch, px, py)``
        Nearest-neighbour samples; 0 where the map leaves the image. z is only scaled, never
        mixed with x and y.

    Examples
    --------
    >>> img = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    >>> out = warp3dFast(img, (2, 4, 4), rot=90)
    >>> np.array_equal(out, np.rot90(img, k=-1, axes=(2, 3)))
    True
    """
    img = np.ascontiguousarray(img, dtype=np.float32)
    _check(img, 3, patch_size)
    out_shape = tuple(int(p) for p in patch_size)
    spatial = (img.shape[0],) + img.shape[2:]
    coords = _source_indices(spatial, out_shape, rot, shear, scale, stretch, twist)
    return _gather(img, *coords)


def _warp_labels(lab, img_spatial, patch_size, params):
    """Warp spatial labels ``(z, x, y)`` centred in an image of spatial shape ``img_spatial``.

    As the original, the labels are placed at offset ``(img - lab) // 2`` in a zero volume of
    the image's shape, which is warped to ``patch_size - 2 * offset``.
    """
    off = [(s - n) // 2 for s, n in zip(img_spatial, lab.shape, strict=True)]
    out_shape = [p - 2 * o for p, o in zip(patch_size, off, strict=True)]
    zi, xi, yi, valid = _source_indices(tuple(img_spatial), tuple(out_shape), *params)
    zi, xi, yi = zi - off[0], xi - off[1], yi - off[2]
    for ix, n in zip((zi, xi, yi), lab.shape, strict=True):
        valid &= (ix >= 0) & (ix < n)
    labels = np.ascontiguousarray(lab)[:, None]
    return _gather(labels, zi, xi, yi, valid)[:, 0]


def warp2dJoint(img, lab, patch_size, rot, shear, scale, stretch):
    """Warp an image and its labels with one transform (see :func:`warp2dFast`).

    Parameters
    ----------
    img : array_like, shape ``(ch, x, y)``
        The image.
    lab : ndarray
        Labels ``(lx, ly)`` centred in the image (smaller by twice the CNN offset), warped into
        ``patch_size - 2 * offset``; any other shape (e.g. a scalar label) is returned as is.
    patch_size, rot, shear, scale, stretch
        As in :func:`warp2dFast`.

    Returns
    -------
    img : ndarray of float32, shape ``(ch, px, py)``
    lab : ndarray
        Warped labels in the dtype of ``lab``; label pixels mapped from outside the labelled
        area are 0 (class 0, docs/differences.md, T9).
    """
    if np.ndim(lab) == 2:
        params = (rot, shear, (scale[0], scale[1], 1), (stretch[0], stretch[1], 0, 0), 0)
        spatial = (1,) + np.shape(img)[1:]
        lab = _warp_labels(np.asarray(lab)[None], spatial, (1,) + tuple(patch_size), params)[0]
    return warp2dFast(img, patch_size, rot, shear, scale, stretch), lab


def warp3dJoint(img, lab, patch_size, rot=0, shear=0, scale=(1, 1, 1), stretch=(0, 0, 0, 0),
                twist=0):
    """Warp an image and its labels with one transform (see :func:`warp3dFast`).

    Parameters
    ----------
    img : array_like, shape ``(z, ch, x, y)``
        The image.
    lab : ndarray
        Labels ``(lz, lx, ly)`` centred in the image (smaller by twice the CNN offset), warped
        into ``patch_size - 2 * offset``; any other shape is returned as is.
    patch_size, rot, shear, scale, stretch, twist
        As in :func:`warp3dFast`.

    Returns
    -------
    img : ndarray of float32, shape ``(pz, ch, px, py)``
    lab : ndarray
        Warped labels in the dtype of ``lab``; label voxels mapped from outside the labelled
        volume are 0 (class 0, docs/differences.md, T9).
    """
    if np.ndim(lab) == 3:
        spatial = (np.shape(img)[0],) + np.shape(img)[2:]
        lab = _warp_labels(np.asarray(lab), spatial, tuple(patch_size),
                           (rot, shear, scale, stretch, twist))
    return warp3dFast(img, patch_size, rot, shear, scale, stretch, twist), lab


# --- parameters and required sizes --------------------------------------------------------------


def getCornerIx(sh):
    """Indices of the ``2**n`` corner elements of an array of shape ``sh``.

    Returns
    -------
    ndarray of int, shape ``(2**n, n)``
        Row ``i`` holds, per axis ``k``, ``sh[k] - 1`` if bit ``k`` of ``i`` is set, else 0.
    """
    sh = np.asarray(sh, dtype=int) - 1
    bits = (np.arange(2 ** len(sh))[:, None] >> np.arange(len(sh))) & 1
    return bits * sh


def _warpCorners2d(sh, corners, rot=0, shear=0, scale=(1, 1), stretch=(0, 0)):
    """Source coordinates ``(u, v)`` of the points ``corners`` of a patch of shape ``sh``."""
    coords = _warpCorners3d((1,) + tuple(sh), np.column_stack([np.zeros(len(corners)), corners]),
                            rot, shear, (scale[0], scale[1], 1), (stretch[0], stretch[1], 0, 0))
    return coords[:, 1:]


def _warpCorners3d(sh, corners, rot=0, shear=0, scale=(1, 1, 1), stretch=(0, 0, 0, 0), twist=0):
    """Source coordinates ``(w, u, v)`` of the points ``corners`` of a patch of shape ``sh``.

    The transform of the kernel in float64, centred on the patch itself.
    """
    rot, shear, twist = (float(a) * np.pi / 180 for a in (rot, shear, twist or 0))
    inv = 1.0 / np.asarray(scale, dtype=float)
    zc, xc, yc = (n / 2 - 0.5 for n in sh)
    st = [s / c if c else 0.0 for s, c in zip(stretch, (xc, yc, zc, zc), strict=True)]
    twist = twist / zc if zc else 0.0
    z, x, y = (np.asarray(corners, dtype=float)[:, k] - c for k, c in enumerate((zc, xc, yc)))
    a = rot + z * twist
    xt = x * (inv[0] + st[0] * y + st[2] * z)
    yt = y * (inv[1] + st[1] * x + st[3] * z)
    u = xt * np.cos(a - shear) - yt * np.sin(a + shear) + xc
    v = yt * np.cos(a + shear) + xt * np.sin(a - shear) + yc
    return np.column_stack([z * inv[2] + zc, u, v])


def getRequiredPatchSize(patch_size, rot, shear, scale, stretch, twist=None):
    """Size of the input patch that a warp to ``patch_size`` reads from.

    The corners of the patch are mapped with the warp; the input must extend far enough on
    both sides (symmetrically) to contain them.

    Parameters
    ----------
    patch_size : sequence of 2 or 3 int
        Output size ``(px, py)`` or ``(pz, px, py)``.
    rot, shear, scale, stretch, twist
        Warp parameters as in :func:`warp2dFast` / :func:`warp3dFast` (``twist`` 3-D only).

    Returns
    -------
    req_size : ndarray of int
        The required input size ``patch_size + 2 * excess``.
    eff_size : ndarray of int
        Extent of the mapped corners (ceil of max - min).
    left_exc : ndarray of int
        How far the mapped corners reach below index 0.
    """
    patch_size = np.asarray(patch_size, dtype=int)
    corners = getCornerIx(patch_size)
    if len(patch_size) == 2:
        coords = _warpCorners2d(patch_size, corners, rot, shear, scale, stretch)
    elif len(patch_size) == 3:
        coords = _warpCorners3d(patch_size, corners, rot, shear, scale, stretch, twist)
    else:
        raise ValueError(f"patch_size must be 2-D or 3-D, got {tuple(patch_size)}")
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    eff_size = np.ceil(hi - lo)
    left_exc = np.floor(np.abs(np.minimum(lo, 0)))
    right_exc = np.ceil(np.maximum(hi - patch_size + 1, 0))
    req_size = patch_size + 2 * np.maximum(left_exc, right_exc)
    return req_size.astype(int), eff_size.astype(int), left_exc.astype(int)


def getWarpParams(patch_size, amount=1.0, rng=None):
    """Draw random warp parameters and the input size they need.

    Parameters
    ----------
    patch_size : sequence of 2 or 3 int
        Output size ``(px, py)`` or ``(pz, px, py)``.
    amount : float
        Strength: the maxima are rotation ``15 * amount`` degrees, shear ``3 * amount``
        degrees, scale ``1.1 * amount`` and stretch ``0.1 * amount``. Above 1 a warning is
        logged (the required input becomes much larger). As in the original, the scale is
        drawn from ``[1, 1.1 * amount]``, which shrinks for ``amount < 1/1.1``.
    rng : numpy.random.Generator, optional
        Source of the random numbers (default: a fresh ``default_rng()``); numpy's global
        state is never used.

    Returns
    -------
    req_size : ndarray of int
        Input size to cut before warping (:func:`getRequiredPatchSize`).
    rot, shear : float
        Degrees. 2-D: ``rot ~ U(±15)``; 3-D: ``twist ~ U(±15)`` and
        ``rot = min(15 - |twist|, 15 U)``; ``shear ~ U(±3)``.
    scale : ndarray of float
        ``1 + 0.1 U`` per axis, (x, y) or (x, y, z). In 2-D ``scale[0] = 1`` (only y is
        scaled; kept, docs/differences.md, T10).
    stretch : ndarray of float
        ``U(±0.1)``, 2 (2-D) or 4 (3-D) values.
    twist : float or None
        Degrees (3-D); None in 2-D.
    """
    if amount > 1:
        logger.warning("warp amount %g > 1 needs input patches more than 1.4 times larger",
                       amount)
    rng = np.random.default_rng() if rng is None else rng
    rot_max, shear_max = 15 * amount, 3 * amount
    scale_max, stretch_max = 1.1 * amount, 0.1 * amount
    n_dim = len(patch_size)
    shear = shear_max * 2 * (rng.random() - 0.5)
    if n_dim == 3:
        twist = rot_max * 2 * (rng.random() - 0.5)
        rot = min(rot_max - abs(twist), rot_max * rng.random())
        scale = 1 + (scale_max - 1) * rng.random(3)
        stretch = stretch_max * 2 * (rng.random(4) - 0.5)
    elif n_dim == 2:
        rot = rot_max * 2 * (rng.random() - 0.5)
        scale = 1 + (scale_max - 1) * rng.random(2)
        scale[0] = 1  # T10: the original's comment says "do not change along z"
        stretch = stretch_max * 2 * (rng.random(2) - 0.5)
        twist = None
    else:
        raise ValueError(f"patch_size must be 2-D or 3-D, got {tuple(patch_size)}")
    req_size, _, _ = getRequiredPatchSize(patch_size, rot, shear, scale, stretch, twist)
    return req_size, rot, shear, scale, stretch, twist


# --- flips, transposes and grey values -----------------------------------------------------------


def transposeIgnoreCh(arr, T):
    """Permute the spatial axes of ``arr`` ``(z, ch, x, y)`` by ``T``, keeping axis 1 (ch).

    Parameters
    ----------
    arr : ndarray, shape ``(z, ch, x, y)``
    T : sequence of 3 int
        Permutation of the spatial axes (z, x, y), as for ``np.transpose`` of ``(z, x, y)``.

    Returns
    -------
    ndarray
        A view.
    """
    t = [a + (a > 0) for a in T]
    return np.transpose(arr, (t[0], 1, t[1], t[2]))


def randomFlip(d, lab, rng, aniso=True, upright_x=False):
    """Random mirroring and 90-degree turns of an image and its labels (jointly).

    Parameters
    ----------
    d : ndarray, shape ``(ch, x, y)`` or ``(z, ch, x, y)``
        The image.
    lab : ndarray or None
        Labels ``(x, y)`` or ``(z, x, y)`` transformed with the image; None for images with
        scalar labels.
    rng : numpy.random.Generator
        Source of the random numbers.
    aniso : bool
        3-D: only swap x and y (else a random permutation of z, x and y).
    upright_x : bool
        2-D: only mirror y (keeps natural images upright).

    Returns
    -------
    d, lab : ndarray
        Views of the inputs: 2-D: x and y swapped with probability 1/2, then each mirrored
        with probability 1/2 (``upright_x``: only y mirrored with probability 1/2). 3-D: x and
        y swapped with probability 1/2 (``aniso``) or the axes permuted at random, then z, x
        and y each mirrored with probability 1/2. The layouts stay the same.
    """
    n_dim = d.ndim - 1
    if n_dim == 2:
        if upright_x:
            if rng.random() > 0.5:
                d = d[:, :, ::-1]
                lab = None if lab is None else lab[:, ::-1]
            return d, lab
        if rng.random() > 0.5:
            d = np.swapaxes(d, 1, 2)
            lab = None if lab is None else np.swapaxes(lab, 0, 1)
        fx, fy = rng.binomial(1, 0.5, 2) * 2 - 1
        return d[:, ::fx, ::fy], None if lab is None else lab[::fx, ::fy]
    if n_dim != 3:
        raise ValueError(f"the image must be (ch, x, y) or (z, ch, x, y), got shape {d.shape}")
    if aniso:
        if rng.random() > 0.5:
            d = np.swapaxes(d, 2, 3)
            lab = None if lab is None else np.swapaxes(lab, 1, 2)
    else:
        T = rng.permutation(3)
        d = transposeIgnoreCh(d, T)
        lab = None if lab is None else np.transpose(lab, T)
    fz, fx, fy = rng.binomial(1, 0.5, 3) * 2 - 1
    return d[::fz, :, ::fx, ::fy], None if lab is None else lab[::fz, ::fx, ::fy]


def greyAugment(d, channels, rng):
    """Random contrast, brightness and gamma of some channels (a copy; ``d`` is unchanged).

    Per channel ``α = 1 + 0.3 (U - 1/2)``, ``c = 0.3 (U - 1/2)``, ``γ = 2**(2U - 1)`` and
    ``d ← clip(α d + c, 0, 1) ** γ``. The values are expected in ``[0, 1]``.

    Parameters
    ----------
    d : ndarray, shape ``(ch, x, y)`` or ``(z, ch, x, y)``
        The image.
    channels : sequence of int
        Channels to augment; empty: ``d`` is returned as is.
    rng : numpy.random.Generator
        Source of the random numbers.

    Returns
    -------
    ndarray
    """
    channels = list(channels)
    if not channels:
        return d
    k = len(channels)
    alpha = 1 + (rng.random(k) - 0.5) * 0.3
    c = (rng.random(k) - 0.5) * 0.3
    gamma = 2.0 ** (rng.random(k) * 2 - 1)
    d = d.copy()
    axis = 1 if d.ndim == 4 else 0
    shape = [1] * d.ndim
    shape[axis] = k
    index = (slice(None),) * axis + (channels,)
    part = d[index] * alpha.reshape(shape) + c.reshape(shape)
    d[index] = np.clip(part, 0, 1) ** gamma.reshape(shape)
    return d


# --- test helpers --------------------------------------------------------------------------------


def maketestimage(sh):
    """A 2-D test image in ``[0, 1]``: grey with bright diagonals and border lines.

    Parameters
    ----------
    sh : tuple of 2 int
        Shape ``(x, y)``.

    Returns
    -------
    ndarray of float, shape ``sh``
    """
    img = np.full(sh, 0.5)
    n = min(sh)
    d = np.eye(n) + np.eye(n)[::-1]
    img[:n, :n] += d
    img[-n:, -n:] += d
    for index in (0, -1):
        img[index, :] += 1
        img[:, index] += 1
    if sh[0] > 80:
        for index in (30, -31):
            img[index, :] += 1
            img[:, index] += 1
    return img / img.max()


def test():
    """Self-test of the original's module: an identity warp of a 2-channel 11×11 image.

    Returns
    -------
    bool
        True.

    Raises
    ------
    RuntimeError
        If the warp does not reproduce the image.
    """
    img = maketestimage((11, 11))
    img = np.stack([img, np.exp(img)]).astype(np.float32)
    out = warp2dFast(img, (11, 11), 0, 0, (1, 1), (0.0, 0.0))
    if not np.array_equal(out, img):
        raise RuntimeError("warping is broken: an identity warp changed the image")
    return True


test.__test__ = False  # the original's name; not a pytest test
