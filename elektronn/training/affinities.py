"""Affinity graphs of segmentations: the targets of affinity and MALIS training."""

import numpy as np
from scipy import ndimage

__all__ = ["make_affinities"]


def make_affinities(labels, nhood=None):
    """Affinity graph and connected-component relabelling of segmentations ``(bs, z, x, y)``.

    Edge ``e`` at voxel ``v`` is 1 if ``v`` and ``v + nhood[e]`` have the same non-zero ID (the
    convention of ``malis.seg_to_affgraph`` with ``nhood = eye(3)``); the segmentation is
    relabelled by the connected components of that graph (ID 0 stays 0).

    Returns
    -------
    aff : ndarray of int16, shape ``(bs, 3, z, x, y)``
    seg : ndarray of int16, shape ``(bs, z, x, y)``
    """
    nhood = np.eye(3, dtype=int) if nhood is None else np.asarray(nhood)
    if np.any(nhood < 0) or np.any(nhood.sum(1) != 1):
        raise NotImplementedError("only unit nhood vectors with positive offsets are supported")
    labels = np.asarray(labels)
    aff = np.zeros((labels.shape[0], len(nhood)) + labels.shape[1:], dtype=np.int16)
    seg = np.zeros(labels.shape, dtype=np.int16)
    for i, lab in enumerate(labels):
        for e, vec in enumerate(nhood):
            ax = int(np.argmax(vec))
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[ax], b[ax] = slice(0, -1), slice(1, None)
            src, dst = lab[tuple(a)], lab[tuple(b)]
            aff[i, e][tuple(a)] = (src == dst) & (src > 0)
        n = 0
        for obj in np.unique(lab[lab > 0]):  # components of equal IDs, 6-connected
            comp, k = ndimage.label(lab == obj)
            seg[i][comp > 0] = comp[comp > 0] + n
            n += k
    return aff, seg
