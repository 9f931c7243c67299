"""A seeded synthetic EM-like volume with membrane labels, and HDF5 files like real data.

:func:`em_volume` draws a volume of densely packed cells as in a serial-section electron
micrograph of neural tissue: Voronoi cells around random seeds (nearest seed found with a
KD-tree on anisotropic, smoothly warped coordinates) whose boundaries are dark membranes
(2 px wide in x/y), bright cytoplasm with per-cell brightness and texture, a few dark
organelle blobs inside the cells, blur, uneven illumination, slice-to-slice brightness jitter
and noise.  The z axis is sampled ``anisotropy`` times coarser than x and y.

The labels are ``1`` for membrane and ``0`` for inside; organelles are inside (dark but not
membrane: the distractor a membrane detector must learn to ignore).

:func:`write_cubes` stores volumes as ELEKTRONN 1.0's example data was stored: one file per
cube and kind, ``raw_<i>.h5`` with the uint8 dataset ``raw`` and ``barrier_int16_<i>.h5``
with the int16 dataset ``lab``, both in ``(x, y, z)`` order.  Every file is written to a
temporary file first and then renamed, so a file that exists is complete.

Examples
--------
>>> raw, lab = em_volume((64, 64, 16), seed=1)
>>> raw.dtype, lab.dtype, raw.shape == lab.shape == (64, 64, 16)
(dtype('uint8'), dtype('int16'), True)
>>> sorted(np.unique(lab).tolist())
[0, 1]
"""

import argparse
import logging
import sys
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from elektronn.atomicio import atomic_path

__all__ = ["RAW_NAME", "LABEL_NAME", "em_volume", "write_h5", "read_h5", "write_cubes", "main"]

logger = logging.getLogger("elektronn")

RAW_NAME = "raw"
"""Dataset name of the raw data in ``raw_<i>.h5`` (uint8, ``(x, y, z)``)."""
LABEL_NAME = "lab"
"""Dataset name of the labels in ``barrier_int16_<i>.h5`` (int16, ``(x, y, z)``, 1 = membrane)."""

# Grey values (before illumination, blur and noise) of the three kinds of voxels.
_CYTOPLASM = (0.6, 0.8)  # range of the per-cell brightness
_ORGANELLE = 0.3
_MEMBRANE = 0.12


def _smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise, shifted and scaled to mean 0 and standard deviation 1."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / field.std()


def _grid(shape, anisotropy):
    """Physical coordinates ``(n_voxels, 3)`` of all voxels; z spacing is ``anisotropy``."""
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    axes[2] *= anisotropy
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _cells(rng, shape, cell_size, anisotropy):
    """Cell id of every voxel: the nearest of random seeds, on smoothly warped coordinates."""
    extent = np.array(shape, np.float64) * (1, 1, anisotropy)
    n_seeds = max(2, int(np.prod(extent + 2 * cell_size) / cell_size**3))
    seeds = rng.uniform(-cell_size, extent + cell_size, size=(n_seeds, 3))
    warp = np.stack([_smooth_noise(rng, shape, cell_size / 4).ravel() for _ in range(3)], axis=1)
    points = _grid(shape, anisotropy) + 0.15 * cell_size * warp
    _, ids = cKDTree(seeds).query(points, workers=-1)
    return ids.reshape(shape)


def _membranes(cells):
    """Voxels on either side of a cell boundary in x or y: membranes 2 px wide in each slice."""
    mask = np.zeros(cells.shape, bool)
    for axis in (0, 1):
        differs = np.diff(cells, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        mask[tuple(lo)] |= differs
        mask[tuple(hi)] |= differs
    return mask


def _organelles(rng, shape, anisotropy, count):
    """Mask of ``count`` dark blobs (radius 2-4.5 px in x/y), each a ball in physical space."""
    centres = rng.uniform(0, 1, size=(count, 3)) * np.array(shape) * (1, 1, anisotropy)
    radii = rng.uniform(2.0, 4.5, size=count)
    dist, nearest = cKDTree(centres).query(_grid(shape, anisotropy), workers=-1)
    return (dist < radii[nearest]).reshape(shape)


def em_volume(shape=(128, 128, 32), seed=0, cell_size=24.0, anisotropy=2.5, noise=0.07,
              organelle_density=2.0):
    """Draw a synthetic EM-like volume and its membrane labels.

    Parameters
    ----------
    shape : tuple of int
        Volume size ``(x, y, z)``.
    seed : int or sequence of int
        Seed of ``numpy.random.default_rng``; the same seed gives the same volume.
    cell_size : float
        Mean cell diameter in x/y pixels.
    anisotropy : float
        z spacing in units of the x/y spacing (serial sections are thicker than a pixel).
    noise : float
        Standard deviation of the additive Gaussian noise (grey values in [0, 1]).
    organelle_density : float
        Organelles per 10^4 voxels.

    Returns
    -------
    raw : ndarray of uint8, shape ``shape``
        The image.
    labels : ndarray of int16, shape ``shape``
        ``1`` for membrane, ``0`` for inside.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"shape must be 3 sizes (x, y, z) of at least 2, got {shape}")
    rng = np.random.default_rng(seed)
    cells = _cells(rng, shape, cell_size, anisotropy)
    membrane = _membranes(cells)
    count = max(1, round(organelle_density * np.prod(shape) / 1e4))
    organelle = _organelles(rng, shape, anisotropy, count)

    brightness = rng.uniform(*_CYTOPLASM, size=cells.max() + 1)
    image = brightness[cells] + 0.05 * _smooth_noise(rng, shape, (1.5, 1.5, 0.5))
    image[organelle] = _ORGANELLE
    image[membrane] = _MEMBRANE
    image = ndimage.gaussian_filter(image, (1.0, 1.0, 0.4))
    illumination = 1 + 0.15 * _smooth_noise(rng, shape, (shape[0] / 3, shape[1] / 3, shape[2]))
    slice_gain = rng.uniform(0.9, 1.1, size=shape[2])
    image *= illumination * slice_gain
    image += noise * rng.standard_normal(shape)
    raw = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return raw, membrane.astype(np.int16)


def write_h5(path, name, array):
    """Write ``array`` as dataset ``name`` of a new HDF5 file ``path``, atomically.

    The data goes to a temporary file in the same folder, which then replaces ``path``; a
    reader never sees a partly written file.

    Parameters
    ----------
    path : str or Path
        The file.
    name : str
        The dataset name.
    array : ndarray
        The data (stored gzip-compressed, in its dtype).
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(name, data=array, compression="gzip", compression_opts=1)


def read_h5(path, name):
    """Read dataset ``name`` of the HDF5 file ``path`` into memory."""
    with h5py.File(path, "r") as f:
        return f[name][()]


def write_cubes(folder, n_cubes=2, shape=(128, 128, 32), seed=0, **kwargs):
    """Draw ``n_cubes`` volumes and write them as ELEKTRONN 1.0's example data.

    Cube ``i`` is ``em_volume(shape, seed=(seed, i), **kwargs)``, stored as
    ``raw_<i>.h5`` (dataset :data:`RAW_NAME`) and ``barrier_int16_<i>.h5`` (dataset
    :data:`LABEL_NAME`).

    Parameters
    ----------
    folder : str or Path
        Output folder (created if missing).
    n_cubes : int
        Number of volumes.
    shape : tuple of int
        Size ``(x, y, z)`` of every volume.
    seed : int
        Base seed.
    **kwargs
        Passed to :func:`em_volume`.

    Returns
    -------
    list of (Path, Path)
        The raw and label file of every cube.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_cubes):
        raw, lab = em_volume(shape, seed=(seed, i), **kwargs)
        raw_path, lab_path = folder / f"raw_{i}.h5", folder / f"barrier_int16_{i}.h5"
        write_h5(raw_path, RAW_NAME, raw)
        write_h5(lab_path, LABEL_NAME, lab)
        files.append((raw_path, lab_path))
    return files


def main(argv=None):
    """``python -m elektronn.data.synthetic FOLDER``: write synthetic cubes as HDF5 files.

    With the defaults this writes the two cubes ``elektronn-demo`` trains and predicts on
    (the data of the example config ``neuro_3d_config``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``); ``--help`` lists them.

    Returns
    -------
    int
        0 on success.
    """
    parser = argparse.ArgumentParser(
        prog="python -m elektronn.data.synthetic",
        description="Write seeded synthetic EM-like cubes with membrane labels as HDF5 files "
                    "(raw_<i>.h5 with dataset 'raw', barrier_int16_<i>.h5 with dataset 'lab', "
                    "(x, y, z) order), the layout of the example config neuro_3d_config.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("folder", help="output folder (created if missing)")
    parser.add_argument("--cubes", type=int, default=2, help="number of cubes")
    parser.add_argument("--size", type=int, nargs=3, default=(128, 128, 32),
                        metavar=("X", "Y", "Z"), help="size of every cube")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    if args.cubes < 1 or min(args.size) < 1:
        parser.error("--cubes and every --size must be at least 1")
    from elektronn.utils import console_logging

    with console_logging():
        for raw, lab in write_cubes(args.folder, args.cubes, tuple(args.size), args.seed):
            logger.info("wrote %s and %s", raw, lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
