"""Lazy, read-only access to the image and label volumes of training data on disk.

:class:`H5Volume` shows an HDF5 dataset, or an array of a zarr group, as an array in another
axis order; indexing reads only the window asked for, so volumes larger than memory can be
trained on. A data file is an HDF5 file or a zarr store holding a group (a directory with
zarr metadata, or named ``*.zarr``); ``("raw_0.zarr", "raw")`` names the array ``raw`` of
the group ``raw_0.zarr`` as ``("raw_0.h5", "raw")`` names the dataset ``raw`` of an HDF5 file
(zarr needs ``pip install elektronn[distributed]``). :func:`convert` is the one value
conversion (cast, divide, standardise) used for data in memory and on disk alike.
"""

import os
from pathlib import Path

import h5py
import numpy as np

__all__ = ["DataError", "H5Volume", "convert", "dataset_info", "image_divisor", "is_zarr",
           "open_data_file", "read_dataset", "label_chunks"]

_CHUNK = 2 ** 24  # elements per read when scanning a dataset on disk


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and the dataset."""


def is_zarr(path):
    """Whether ``path`` names a zarr store: a directory with zarr metadata, or ``*.zarr``."""
    p = Path(os.fspath(path))
    if p.is_dir() and any((p / m).is_file() for m in ("zarr.json", ".zgroup", ".zarray")):
        return True
    return p.suffix.lower() == ".zarr"


class _ZarrFile:
    """A zarr group opened read-only, used like the ``h5py.File`` of an HDF5 data file."""

    def __init__(self, group):
        self.group = group

    def __getitem__(self, key):
        return self.group[key]

    def __contains__(self, key):
        return key in self.group

    def close(self):
        """Nothing to close (zarr opens its chunks per read)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _zarr_open(path, key):
    try:
        import zarr
    except ImportError:
        raise DataError(f"{path}: reading zarr data needs zarr; install it with `pip install "
                        "elektronn[distributed]`") from None
    if not os.path.isdir(path):
        raise DataError(f"{path}: the zarr store does not exist")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as e:  # an array at the root, or no zarr metadata
        raise DataError(f"{path}: cannot be read as a zarr group holding the data as named "
                        f"arrays (e.g. ('{Path(path).name}', 'raw')): {e}") from None
    if key is not None and not hasattr(group.get(key), "shape"):
        names = sorted(name for name, node in group.members(max_depth=None)
                       if hasattr(node, "shape"))
        raise DataError(f"{path}: has no array {key!r}; its arrays are {names}")
    return _ZarrFile(group)


def open_data_file(path, key=None):
    """Open a data file (HDF5 or zarr) read-only, and check that it holds ``key``.

    Parameters
    ----------
    path : str or os.PathLike
        An HDF5 file or a zarr store holding a group.
    key : str, optional
        A dataset (array) that must be in it.

    Returns
    -------
    h5py.File or a zarr group wrapper
        Both index datasets by name (``f[key]``), support ``key in f`` and ``with``.

    Raises
    ------
    DataError
        Naming the file and the dataset: a missing or damaged file, a missing dataset (with
        the datasets it has), or zarr data without zarr installed.
    """
    path = os.fspath(path)
    if is_zarr(path):
        return _zarr_open(path, key)
    if not os.path.isfile(path):
        raise DataError(f"{path}: the data file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot be read as an HDF5 file (truncated or damaged?): "
                        f"{e}") from None
    if key is not None and not isinstance(f.get(key), h5py.Dataset):
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
        f.close()
        raise DataError(f"{path}: has no dataset {key!r}; its datasets are {sorted(names)}")
    return f


def dataset_info(path, key):
    """Shape and dtype of dataset ``key`` of the HDF5 file (or zarr group) ``path``.

    Raises
    ------
    DataError
        If the file is missing, not readable as HDF5 (e.g. truncated) or has no such dataset;
        the message names the file, the dataset and the datasets the file has.
    """
    with open_data_file(path, key) as f:
        return f[key].shape, f[key].dtype


class H5Volume:
    """A read-only, array-like window onto an HDF5 dataset or zarr array, in another axis order.

    Indexing with ints and unit-step slices reads just that window from disk. Positions of
    the volume outside the dataset read as 0 (used for labels, which are zero-padded to the
    image extent).

    Parameters
    ----------
    path : str or os.PathLike or None
        The HDF5 file or zarr store (see :func:`open_data_file`); None: a volume of zeros.
    key : str or None
        The dataset (array) name.
    axes : sequence of (int or None)
        For every axis of the volume the dataset axis it shows, or None for a length-1 axis
        the dataset does not have (e.g. the channel of single-channel images).
    start : sequence of int, optional
        Dataset coordinate of the volume's position 0 along every axis (negative: padding).
    shape : sequence of int, optional
        Shape of the volume (default: the dataset's extent from ``start`` on).
    dtype : numpy dtype
        Dtype of the values read.
    divisor : float
        Values read are converted to ``dtype`` and divided by it (255 for integer images).
    mean, std : float or None
        If given, ``(value - mean) / std`` is returned (standardisation).

    Attributes
    ----------
    shape, ndim, dtype, size
        As for a numpy array.
    """

    def __init__(self, path, key, axes, start=None, shape=None, dtype=np.float32, divisor=1,
                 mean=None, std=None):
        self.path, self.key = path, key
        self.axes = tuple(axes)
        self._handle = self._pid = None
        fshape = self._file_shape()
        self.start = tuple(start) if start is not None else (0,) * len(self.axes)
        if shape is None:
            shape = [1 if a is None else fshape[a] - s
                     for a, s in zip(self.axes, self.start, strict=True)]
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.divisor, self.mean, self.std = divisor, mean, std

    def _file_shape(self):
        return (1,) * len(self.axes) if self.path is None else self._dataset().shape

    def _dataset(self):
        if self._handle is None or self._pid != os.getpid():  # h5py handles do not survive fork
            self._handle = open_data_file(self.path, self.key)
            self._pid = os.getpid()
        return self._handle[self.key]

    def close(self):
        """Close the file (it is reopened on the next read)."""
        if self._handle is not None:
            self._handle.close()
        self._handle = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = state["_pid"] = None
        return state

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"H5Volume({self.path!r}, {self.key!r}, shape={self.shape}, axes={self.axes})"

    def _derived(self, axes, start, shape):
        new = object.__new__(H5Volume)
        new.__dict__.update(self.__dict__)
        new.axes, new.start, new.shape = tuple(axes), tuple(start), tuple(shape)
        return new

    def transpose(self, *axes):
        """A view with permuted axes (as ``ndarray.transpose``; used by ``np.transpose``)."""
        if len(axes) == 1 and not isinstance(axes[0], int | np.integer):
            axes = axes[0]
        if axes is None or axes == ():
            axes = range(self.ndim)[::-1]
        axes = [int(a) for a in axes]
        return self._derived([self.axes[a] for a in axes], [self.start[a] for a in axes],
                             [self.shape[a] for a in axes])

    def crop(self, begin, shape):
        """A view of the box ``begin[i] : begin[i] + shape[i]`` (may extend outside: zeros)."""
        return self._derived(self.axes, [s + b for s, b in zip(self.start, begin, strict=True)],
                             shape)

    def _normalise_key(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for a volume of shape {self.shape}")
        ranges, squeeze = [], []
        for i, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                if step != 1:
                    raise IndexError("H5Volume supports only slices with step 1")
                ranges.append((a, max(a, b)))
            else:
                k = int(k)
                k = k + n if k < 0 else k
                if not 0 <= k < n:
                    raise IndexError(f"index {k} out of range for axis {i} of size {n}")
                ranges.append((k, k + 1))
                squeeze.append(i)
        return ranges, tuple(squeeze)

    def __getitem__(self, key):
        ranges, squeeze = self._normalise_key(key)
        out = np.zeros([b - a for a, b in ranges], dtype=self.dtype)
        if self.path is not None and out.size:
            self._fill(out, ranges)
        return out.squeeze(axis=squeeze) if squeeze else out

    def _fill(self, out, ranges):
        ds = self._dataset()
        fsl = [None] * ds.ndim
        dst = []
        for ax, st, (a, b) in zip(self.axes, self.start, ranges, strict=True):
            if ax is None:
                dst.append(slice(None))
                continue
            lo, hi = max(a + st, 0), min(b + st, ds.shape[ax])
            if hi <= lo:
                return  # entirely outside the dataset: zeros
            fsl[ax] = slice(lo, hi)
            dst.append(slice(lo - (a + st), hi - (a + st)))
        try:
            block = ds[tuple(fsl)]
        except OSError as e:  # e.g. a chunk beyond the end of a truncated file
            raise DataError(f"{self.path}: dataset {self.key!r} cannot be read (truncated or "
                            f"damaged file?): {e}") from None
        block = np.transpose(block, [ax for ax in self.axes if ax is not None])  # to our order
        for i, ax in enumerate(self.axes):
            if ax is None:
                block = np.expand_dims(block, i)
        out[tuple(dst)] = convert(block, self.dtype, self.divisor, self.mean, self.std)

    def __array__(self, dtype=None, copy=None):
        arr = self[...]
        return arr if dtype is None else arr.astype(dtype)

    def chunks(self):
        """Yield the volume in blocks along axis 0 (to scan volumes larger than memory)."""
        n = max(1, _CHUNK // max(1, int(np.prod(self.shape[1:]))))
        for a in range(0, self.shape[0], n):
            yield self[a:a + n]


def convert(block, dtype, divisor=1, mean=None, std=None):
    """Cast to ``dtype``, divide by ``divisor`` and standardise: the same in memory and on disk."""
    out = np.asarray(block, dtype=dtype)
    if divisor != 1:
        out = out / dtype.type(divisor)
    if mean is not None:
        out = (out - dtype.type(mean)) / dtype.type(std)
    return out.astype(dtype, copy=False)


def image_divisor(dtype):
    """255 for integer images, 1 for float images."""
    return 255 if np.issubdtype(np.dtype(dtype), np.integer) else 1


def read_dataset(path, key):
    """The whole dataset ``key`` of the data file ``path`` as an array (errors: DataError)."""
    with open_data_file(path, key) as f:
        try:
            return np.asarray(f[key][...])
        except OSError as e:
            raise DataError(f"{path}: dataset {key!r} cannot be read (truncated or damaged "
                            f"file?): {e}") from None


def label_chunks(lb):
    """Blocks of a label volume to scan (the array itself if it is in memory)."""
    return lb.chunks() if isinstance(lb, H5Volume) else [lb]
