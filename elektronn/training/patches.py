"""Geometry of training cubes and patches: aligning labels with images, cutting patches.

Images are ``(z, ch, x, y)`` and labels ``(z, x, y)`` here (see :mod:`elektronn.training.CNNData`
for the layouts); the functions work on arrays and on lazy volumes alike.
"""

import logging

import numpy as np

from elektronn.training.volumes import DataError
from elektronn.training.warping import transposeIgnoreCh

__all__ = ["border_treatment", "cut_patch", "off3", "random_shift", "strided_labels",
           "strip_cubes", "strip_geometry", "valid_2d_transposes"]

logger = logging.getLogger("elektronn")

_TRANSPOSES_2D = [(0, 1, 2), (2, 0, 1), (1, 2, 0)]


def valid_2d_transposes(shape, ps):
    """Transposes of a ``(z, x, y)`` cube whose slices (last two axes) hold a 2-D patch ``ps``.

    ELEKTRONN 1.0 compared the first two axes of the transposed shape (fixed,
    docs/differences.md, T7).
    """
    return [T for T in _TRANSPOSES_2D
            if all(p <= s for p, s in zip(ps, np.take(shape, T)[1:], strict=True))]


def strip_geometry(d_sh, l_sh, off, source="the labels and the image"):
    """Per spatial axis ``(data_cut, label_cut)`` that makes data and labels the same extent.

    Labels are assumed centred in the data; the data must be larger by ``2 * off`` (more
    data is cut away, fewer labels cut off with a warning). Labels of the same extent as the
    data (a label for every voxel, as in the synthetic cubes) lose their border of ``off``
    voxels, where the net has no full field of view: that is only logged (INFO).

    Parameters
    ----------
    d_sh, l_sh : sequence of int
        Spatial extents ``(z, x, y)`` of data and labels.
    off : sequence of int
        CNN offset ``(z, x, y)``.
    source : str
        Names the files in error messages.

    Raises
    ------
    DataError
        If the labels are larger than the data on an axis (e.g. saved in another axis
        order), or are not centred (odd difference).
    """
    if any(n > d for d, n in zip(d_sh, l_sh, strict=True)):
        raise DataError(f"{source}: the labels {tuple(l_sh)} are larger than the image "
                        f"{tuple(d_sh)} on an axis (z, x, y); were they saved in another axis "
                        "order (see zchxy_order)?")
    d_cut, l_cut = [], []
    for d, n, o in zip(d_sh, l_sh, off, strict=True):
        diff = (d - n) - 2 * o
        if diff % 2:
            raise DataError(f"{source}: image extent {tuple(d_sh)} and label extent "
                            f"{tuple(l_sh)} (z, x, y) do not fit the CNN offset {tuple(off)}: "
                            "the labels must be centred in the image and the difference minus"
                            " twice the offset must be even")
        x = diff // 2
        d_cut.append(max(x, 0))
        l_cut.append(max(-x, 0))
    if any(l_cut) and tuple(d_sh) == tuple(l_sh):
        logger.info("labels as large as the image: the outer %s voxels (z, x, y) on each side "
                    "have no full field of view and are not trained on", l_cut)
    elif any(l_cut):
        logger.warning("the CNN offset is so large that labels are cut off! On each side of the"
                       " cube %s", l_cut)
    return d_cut, l_cut


def strip_cubes(d, lb, off, ldtype):
    """Crop data ``(z, ch, x, y)`` and zero-pad labels ``(z, x, y)`` to a common extent.

    Parameters
    ----------
    d, lb : ndarray
        Image and labels, labels centred in the image.
    off : sequence of int
        CNN offset ``(x, y)`` (2-D, z offset 0) or ``(z, x, y)``.
    ldtype : dtype
        Label dtype.

    Returns
    -------
    d, lb : ndarray
        ``d`` cropped; ``lb`` of the same spatial shape, zero outside ``off`` of the border.
    """
    off = off3(off)
    d_sh = (d.shape[0],) + d.shape[2:]
    d_cut, l_cut = strip_geometry(d_sh, lb.shape, off)
    d = d[d_cut[0]:d_sh[0] - d_cut[0], :, d_cut[1]:d_sh[1] - d_cut[1],
          d_cut[2]:d_sh[2] - d_cut[2]]
    sh = (d.shape[0],) + d.shape[2:]
    new_l = np.zeros(sh, dtype=ldtype)
    lb = lb[l_cut[0]:lb.shape[0] - l_cut[0], l_cut[1]:lb.shape[1] - l_cut[1],
          l_cut[2]:lb.shape[2] - l_cut[2]]
    new_l[off[0]:sh[0] - off[0], off[1]:sh[1] - off[1], off[2]:sh[2] - off[2]] = lb
    return d, new_l


def off3(off):
    """The offset ``(x, y)`` of a 2-D CNN as ``(0, x, y)``; ``(z, x, y)`` as it is."""
    off = [int(o) for o in off]
    return [0] + off if len(off) == 2 else off


def border_treatment(data_list, ps, border_mode, n_dim):
    """Bring img-scalar images ``(z, ch, x, y)`` to the patch size (crop, mirror, 0-pad, keep)."""
    def treat(d):
        if border_mode == "keep":
            return d
        sh = (d.shape[0],) + d.shape[2:] if n_dim == 3 else d.shape[2:]
        if border_mode == "crop":
            ex = [(s - p) // 2 for s, p in zip(sh, ps, strict=True)]
            if n_dim == 3:
                return d[ex[0]:ex[0] + ps[0], :, ex[1]:ex[1] + ps[1], ex[2]:ex[2] + ps[2]]
            return d[:, :, ex[0]:ex[0] + ps[0], ex[1]:ex[1] + ps[1]]
        if border_mode not in ("mirror", "0-pad"):
            raise NotImplementedError(f"border_mode {border_mode!r} is not implemented")
        left = [int(np.ceil((p - s) / 2)) for s, p in zip(sh, ps, strict=True)]
        right = [int(np.floor((p - s) / 2)) for s, p in zip(sh, ps, strict=True)]
        pads = list(zip(left, right, strict=True))
        pad = [pads[0], (0, 0), pads[1], pads[2]] if n_dim == 3 else [(0, 0), (0, 0)] + pads
        if border_mode == "mirror":
            return np.pad(d, pad, mode="symmetric")
        return np.pad(d, pad, mode="constant", constant_values=0)

    return [treat(np.asarray(d)) for d in data_list]


def random_shift(rng, ps, sh):
    """Random patch origin per axis: ``randint(0, s - p)``, never the last position (T7).

    An axis where the cube is exactly as large as the patch gets shift 0 (ELEKTRONN 1.0
    raised unless *all* axes were that tight).
    """
    if np.any(np.less(sh, ps)):
        raise ValueError(f"Image smaller than patch size: image shape={tuple(sh)}, "
                         f"patch size={tuple(ps)}")
    return [int(rng.integers(0, s - p)) if s > p else 0 for p, s in zip(ps, sh, strict=True)]


def cut_patch(rng, img, lab, ps, offset, n_dim, mode, aniso, thresh=0.0, it=0):
    """Cut a random patch of size ``ps`` from an image ``(z, ch, x, y)`` and its labels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the position (and, 2-D isotropic, the slicing direction).
    img, lab : array-like
        The cube's image ``(z, ch, x, y)`` and labels ``(z, x, y)`` (img-img) or its label
        vector (img-scalar); arrays or lazy volumes.
    ps : sequence of int
        Patch size ``(x, y)`` or ``(z, x, y)``.
    offset : sequence of int
        CNN offset (img-img): the labels of the patch lack this border on each side.
    n_dim : int
        2 or 3.
    mode : {'img-img', 'img-scalar'}
    aniso : bool
        2-D: cut only z-slices (else also slices across x and y).
    thresh : float
        If non-zero and more than this fraction of the labels is negative (ignore), another
        patch is cut (at most 10 more times).

    Returns
    -------
    cut_img, cut_lab : ndarray
    """
    off = offset
    if n_dim == 3:
        s = random_shift(rng, ps, (img.shape[0],) + tuple(img.shape[2:]))
        cut_img = img[s[0]:s[0] + ps[0], :, s[1]:s[1] + ps[1], s[2]:s[2] + ps[2]]
        if mode == "img-img":
            cut_lab = lab[s[0] + off[0]:s[0] + ps[0] - off[0],
                          s[1] + off[1]:s[1] + ps[1] - off[1],
                          s[2] + off[2]:s[2] + ps[2] - off[2]]
        else:
            cut_lab = np.asarray(lab)
    else:
        if aniso or mode == "img-scalar":
            imgT, labT = img, lab
        else:  # isotropic: slices may also be cut perpendicular to x or y
            possible = valid_2d_transposes(lab.shape, ps)
            if not possible:
                raise ValueError(f"Image smaller than patch size: image shape="
                                 f"{tuple(img.shape)}, patch size={tuple(ps)}")
            T = possible[rng.integers(0, len(possible))]
            imgT, labT = transposeIgnoreCh(img, T), np.transpose(lab, T)
        z = int(rng.integers(0, imgT.shape[0]))
        s = random_shift(rng, ps, imgT.shape[-2:])
        cut_img = imgT[z, :, s[0]:s[0] + ps[0], s[1]:s[1] + ps[1]]
        if mode == "img-img":
            cut_lab = labT[z, s[0] + off[0]:s[0] + ps[0] - off[0],
                           s[1] + off[1]:s[1] + ps[1] - off[1]]
        else:
            cut_lab = labT[z]
    cut_img, cut_lab = np.asarray(cut_img), np.asarray(cut_lab)
    if it < 10 and thresh and np.mean(cut_lab < 0) > thresh:
        return cut_patch(rng, img, lab, ps, offset, n_dim, mode, aniso, thresh, it + 1)
    return cut_img, cut_lab


def strided_labels(lab, stride):
    """Labels ``(bs, ...)`` subsampled by the CNN ``stride`` on every spatial axis."""
    return lab[(slice(None),) + tuple(slice(None, None, int(s)) for s in stride)]
