"""Blockwise dense prediction of volumes larger than memory, on one machine or a dask cluster.

:func:`predict_volume` writes the result of :func:`~elektronn.net.prediction.predict_dense` to
a zarr array or an HDF5 dataset, one output block at a time.  Every block is computed by
``predict_dense`` itself on the block's input region:

* output voxel ``j`` (per axis) is the net's output on the padded-image window that starts at
  ``base + j`` and is ``fov`` voxels long (``base = offset - fov // 2``), so the output block
  ``[a, b)`` needs the input ``[base + a, base + b + 2 * (fov // 2))``: the halo is exact, no
  blending, for odd and even fields of view alike;
* ``predict_dense`` on that region with ``offset = fov // 2`` returns exactly the block.  Block
  starts are multiples of the tile size of ``predict_dense`` when :func:`plan_volume` picks the
  block shape, so the forward passes are the very ones of an in-memory run.

Blocks are aligned to the output's chunks (each chunk has one writer).  A block is marked done
after its data is written, in markers apart from the data (zarr: keys under
``<array>/elektronn-done/`` in the array's store; HDF5: the dataset ``<dataset>_done``).  The
output's attributes hold the offset, the field of view and a fingerprint of the run, so a rerun
resumes only when it would compute the same thing.

Coordinates follow ``predict_dense``: the volume is ``(ch, x, y[, z])``, the output
``(n_lab, x', y'[, z'])`` and block shapes are given in the output's spatial axes.
"""

import contextlib
import ctypes
import hashlib
import itertools
import json
import logging
import os
import pickle
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from elektronn.net.prediction import (
    _as_image,
    _NetGeometry,
    _offsets,
    _plan_image,
    _to_net,
    predict_dense,
    source_indices,
)

__all__ = ["predict_volume", "plan_volume", "VolumePlan", "open_volume", "DEFAULT_BLOCK_BYTES"]

logger = logging.getLogger("elektronn")

DEFAULT_BLOCK_BYTES = 256 * 2**20
"""Memory a block may take (input region, output, working arrays) when :func:`plan_volume`
picks the block shape."""

MARKERS = "elektronn-done"
"""Name of the done markers: a key prefix inside a zarr array, a dataset suffix in HDF5."""

ATTRIBUTE = "elektronn"
"""Name of the output attribute that holds offset, field of view and fingerprint."""

EXTRA_HINT = "pip install elektronn[distributed]"


def _import(name):
    """Import an optional dependency, or say which extra provides it."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as err:
        raise ImportError(f"{name} is needed for this (zarr volumes or a dask cluster); install "
                          f"the optional dependencies with `{EXTRA_HINT}`") from err


# --- paths ------------------------------------------------------------------------------------
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def _parse_path(path):
    """``("hdf5", file, dataset)`` for ``'file.h5:dataset'``, else ``("zarr", store, inner)``.

    A zarr path is split after its first component ending in ``.zarr`` (``'a.zarr/g/arr'`` ->
    store ``'a.zarr'``, array ``'g/arr'``); without one the whole path is the store.
    """
    text = os.fspath(path)
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(_HDF5_SUFFIXES):
        if not tail.strip("/"):
            raise ValueError(f"HDF5 path {text!r} names no dataset: use 'file.h5:dataset'")
        return "hdf5", head, tail
    if text.lower().endswith(_HDF5_SUFFIXES):
        raise ValueError(f"HDF5 path {text!r} names no dataset: use '{text}:dataset'")
    parts = Path(text).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(".zarr"):
            return "zarr", str(Path(*parts[: i + 1])), "/".join(parts[i + 1:])
    return "zarr", text, ""


def open_volume(source, mode="r"):
    """Open a volume given as a path; return other array-likes unchanged.

    Parameters
    ----------
    source : str, os.PathLike or array_like
        ``'vol.zarr'`` (an array at the store's root), ``'vol.zarr/group/array'``,
        ``'file.h5:dataset'``, or an array (numpy, h5py, zarr), which is returned as it is.
    mode : str
        File mode (``'r'`` to read).

    Returns
    -------
    array_like
        A zarr array or an h5py dataset (its file stays open while the dataset is used).

    Raises
    ------
    FileNotFoundError
        If the file, store or the array inside it does not exist.
    ValueError
        If the path names a group, not an array.

    Examples
    --------
    >>> import numpy as np
    >>> open_volume(np.zeros((1, 4, 4))).shape
    (1, 4, 4)
    """
    if not isinstance(source, str | os.PathLike):
        return source
    kind, where, inner = _parse_path(source)
    if not Path(where).exists():
        raise FileNotFoundError(f"volume {os.fspath(source)!r}: {where!r} does not exist")
    if kind == "hdf5":
        f = h5py.File(where, mode)
        if inner not in f or not isinstance(f[inner], h5py.Dataset):
            names = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            f.close()
            raise FileNotFoundError(f"volume {os.fspath(source)!r}: {where!r} has no dataset "
                                    f"{inner!r} (datasets: {', '.join(names) or 'none'})")
        return f[inner]
    zarr = _import("zarr")
    try:
        node = zarr.open(where, mode=mode, path=inner or None)
    except (FileNotFoundError, KeyError) as err:
        raise FileNotFoundError(f"volume {os.fspath(source)!r}: no zarr array {inner!r} in "
                                f"{where!r}") from err
    if not hasattr(node, "shape"):
        arrays = [name for name, member in node.members(max_depth=None)
                  if hasattr(member, "shape")]
        raise ValueError(f"volume {os.fspath(source)!r} is a zarr group, not an array: name one "
                         f"of its arrays, e.g. {where}/{arrays[0] if arrays else 'raw'}")
    return node


# --- geometry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumePlan:
    """Geometry of a blockwise prediction (all per-axis tuples in the image's spatial order).

    Attributes
    ----------
    out_shape : tuple of int
        Shape of the output ``(n_lab, x', y'[, z'])``.
    dtype : str
        Output dtype (``'float32'`` or ``'uint8'``).
    block : tuple of int
        Output block shape (spatial).
    grid : tuple of int
        Number of blocks per axis.
    size, pad, base, fov, patch : tuple of int
        Image size, mirror padding, padded-image position of output 0's window, field of view
        and the net's patch size, per spatial axis.
    offset_net, fov_net : tuple of int
        The offset and field of view in the net's order (zxy for 3-D nets), for attributes.
    """

    out_shape: tuple
    dtype: str
    block: tuple
    grid: tuple
    size: tuple
    pad: tuple
    base: tuple
    fov: tuple
    patch: tuple
    offset_net: tuple
    fov_net: tuple

    @property
    def n_blocks(self):
        """Total number of blocks."""
        return int(np.prod(self.grid))

    def indices(self):
        """Every block index, in C order."""
        return itertools.product(*(range(g) for g in self.grid))

    def out_slices(self, index):
        """The output region of a block (spatial slices)."""
        return tuple(slice(i * b, min((i + 1) * b, n))
                     for i, b, n in zip(index, self.block, self.out_shape[1:], strict=True))

    def voxels(self, index):
        """Number of output voxels of a block."""
        return int(np.prod([s.stop - s.start for s in self.out_slices(index)]))

    @property
    def half(self):
        """Half the field of view (floored): the offset of a block's output in its region."""
        return tuple(f // 2 for f in self.fov)

    def source_indices(self, index):
        """Image indices (per axis, mirrored where padded) of a block's input region."""
        return [source_indices(b + s.start, s.stop - s.start + f - 1, p, n)
                for s, b, f, p, n in zip(self.out_slices(index), self.base, self.fov,
                                         self.pad, self.size, strict=True)]


def _estimate_bytes(block, fov, channels, n_lab, in_itemsize, out_itemsize):
    """Memory of one block: input region, float32 result, converted output."""
    region = int(np.prod([b + f for b, f in zip(block, fov, strict=True)]))
    out = int(np.prod(block))
    return channels * region * (in_itemsize + 4) + n_lab * out * (4 + out_itemsize)


def plan_volume(cnn, shape, dtype, block_shape=None, offset=None, as_uint8=False,
                pad_raw=False, chunks=None, max_bytes=DEFAULT_BLOCK_BYTES):
    """Output shape, block grid and input regions of a blockwise prediction.

    Parameters
    ----------
    cnn : MixedConvNN
        The net (as for ``predictDense``).
    shape, dtype
        Shape ``(ch, x, y[, z])`` and dtype of the volume.
    block_shape : sequence of int, optional
        Output block shape (spatial).  Default: as large as ``max_bytes`` allows, a multiple of
        the net's tile (and of ``chunks``) per axis.
    offset, as_uint8, pad_raw
        As for ``predictDense``.
    chunks : sequence of int, optional
        Spatial chunk (or shard) shape of an existing output: blocks must be multiples of it.
    max_bytes : int
        Memory budget of one block for the default block shape.

    Returns
    -------
    VolumePlan

    Raises
    ------
    ValueError
        As ``predictDense`` for a net or volume that do not fit; for a block shape of the wrong
        length, not positive, or not a multiple of ``chunks``.
    """
    geo = _NetGeometry.from_cnn(cnn)
    probe = np.broadcast_to(np.zeros((), dtype), tuple(shape))
    _, has_z = _as_image(probe, geo)
    off = _offsets(cnn, offset, geo.n_dim)
    size, pad, n_pred, base = _plan_image(geo, tuple(shape), has_z, off, pad_raw)
    nsp = 3 if has_z else 2
    axes, n_pred, size, pad, base = (geo.axes[:nsp], n_pred[:nsp], size[:nsp], pad[:nsp],
                                     base[:nsp])
    fov = tuple(a.fov for a in axes)
    unit = tuple(a.tile_out for a in axes) if chunks is None else tuple(int(c) for c in chunks)
    if block_shape is None:
        block = _default_block(unit, n_pred, fov, geo, np.dtype(dtype).itemsize,
                               1 if as_uint8 else 4, max_bytes)
    else:
        block = tuple(int(b) for b in np.atleast_1d(block_shape))
        if len(block) != nsp or min(block) < 1:
            names = "(x, y, z)" if nsp == 3 else "(x, y)"
            raise ValueError(f"block_shape must be {nsp} positive ints {names} (the output's "
                             f"spatial axes), got {block_shape!r}")
        if chunks is not None and any(b % c and b < n for b, c, n in
                                      zip(block, unit, n_pred, strict=True)):
            raise ValueError(f"block_shape {block} must be a multiple of the target's chunks "
                             f"{unit} (each chunk must have one writer)")
    block = tuple(min(b, n) for b, n in zip(block, n_pred, strict=True))
    grid = tuple(-(-n // b) for n, b in zip(n_pred, block, strict=True))
    fov_xyz = [a.fov for a in geo.axes]
    return VolumePlan(
        out_shape=(geo.n_lab, *n_pred), dtype="uint8" if as_uint8 else "float32", block=block,
        grid=grid, size=size, pad=pad, base=base, fov=fov,
        patch=tuple(a.patch for a in axes),
        offset_net=tuple(int(o) for o in _to_net(off, geo.n_dim)),
        fov_net=tuple(int(f) for f in _to_net(fov_xyz, geo.n_dim)),
    )


def _default_block(unit, n_pred, fov, geo, in_itemsize, out_itemsize, max_bytes):
    """Grow the block from one unit per axis by doubling its smallest axis while it fits."""
    block = [min(u, n) for u, n in zip(unit, n_pred, strict=True)]

    def fits(b):
        return _estimate_bytes(b, fov, geo.channels, geo.n_lab, in_itemsize,
                               out_itemsize) <= max_bytes

    while True:
        growable = [k for k in range(len(block)) if block[k] < n_pred[k]]
        grown = False
        for k in sorted(growable, key=lambda k: block[k]):
            trial = list(block)
            trial[k] = min(2 * block[k], -(-n_pred[k] // unit[k]) * unit[k])
            if fits(trial):
                block, grown = trial, True
                break
        if not grown:
            return tuple(block)


# --- computing one block ---------------------------------------------------------------------
class _BlockReports(logging.Filter):
    """Leave out ``predict_dense``'s start and speed reports of blocks (the run reports once)."""

    def __init__(self):
        super().__init__()
        self.threads, self.lock = Counter(), threading.Lock()

    def filter(self, record):
        return not (record.funcName == "predict_dense" and record.thread in self.threads)

    @contextlib.contextmanager
    def active(self):
        me = threading.get_ident()
        with self.lock:
            self.threads[me] += 1
            logger.addFilter(self)
        try:
            yield
        finally:
            with self.lock:
                self.threads[me] -= 1
                if not self.threads[me]:
                    del self.threads[me]
                if not self.threads:
                    logger.removeFilter(self)


_QUIET_BLOCKS = _BlockReports()


def _read_region(raw, idxs):
    """The input region of a block in the volume's dtype (mirrored parts gathered)."""
    lo = [int(i.min()) for i in idxs]
    block = np.asarray(raw[(slice(None),) + tuple(slice(a, int(i.max()) + 1)
                                                   for a, i in zip(lo, idxs, strict=True))])
    local = [i - a for i, a in zip(idxs, lo, strict=True)]
    if any(not np.array_equal(i, np.arange(len(i))) for i in local):
        block = block[(slice(None), *np.ix_(*local))]
    return block


def predict_block(cnn, raw, plan, index, as_uint8=False):
    """Predict one output block: ``predict_dense`` on its input region.

    Parameters
    ----------
    cnn : MixedConvNN
    raw : array_like
        The volume (only the block's region is read).
    plan : VolumePlan
    index : tuple of int
        The block's index in ``plan.grid``.
    as_uint8 : bool

    Returns
    -------
    ndarray, shape (n_lab, *block)
        Equal to the block's part of ``predict_dense`` on the whole volume.
    """
    region = _read_region(raw, plan.source_indices(index))
    # predict_dense with offset fov // 2 wants one more voxel for an even field of view, and at
    # least a patch: zeros, which no output of the block depends on (as its own last tile)
    want = [max(n + 1 - f % 2, p)
            for n, f, p in zip(region.shape[1:], plan.fov, plan.patch, strict=True)]
    if tuple(want) != region.shape[1:]:
        region = np.pad(region, [(0, 0)] + [(0, w - n) for w, n in
                                           zip(want, region.shape[1:], strict=True)])
    with _QUIET_BLOCKS.active():
        out = predict_dense(cnn, region, show_progress=False, as_uint8=as_uint8,
                            offset=_to_net((*plan.half, 0, 0)[:3], cnn.n_dim))
    want = [s.stop - s.start for s in plan.out_slices(index)]
    return out[(slice(None), *(slice(0, n) for n in want))]


# --- targets ----------------------------------------------------------------------------------
class _ZarrTarget:
    """A zarr output array; done markers are keys under ``<array>/elektronn-done/``."""

    def __init__(self, array):
        self.array = array

    def _prefix(self):
        return (f"{self.array.path}/" if self.array.path else "") + MARKERS + "/"

    @staticmethod
    def _sync(coroutine):
        from zarr.core.sync import sync
        return sync(coroutine)

    def prepare(self, plan):
        pass

    def write(self, plan, index, data):
        self.array[(slice(None), *plan.out_slices(index))] = data

    def mark_done(self, index):
        from zarr.core.buffer import default_buffer_prototype
        key = self._prefix() + ".".join(str(i) for i in index)
        self._sync(self.array.store.set(key, default_buffer_prototype().buffer.from_bytes(b"1")))

    def done(self):
        prefix = self._prefix()

        async def listing():
            return [k async for k in self.array.store.list_prefix(prefix)]

        return {tuple(int(i) for i in k[len(prefix):].split(".")) for k in self._sync(listing())}

    def clear_done(self):
        self._sync(self.array.store.delete_dir(self._prefix().rstrip("/")))

    @property
    def attributes(self):
        return self.array.attrs.asdict().get(ATTRIBUTE)

    def set_attributes(self, value):
        self.array.update_attributes({ATTRIBUTE: value})

    def close(self):
        pass


class _HDF5Target:
    """An HDF5 output dataset; done markers in the dataset ``<name>_done`` (one per block)."""

    def __init__(self, file, dataset):
        self.file, self.dataset = file, dataset
        self.array = dataset
        self.markers = file.get(dataset.name + "_done")

    def prepare(self, plan):
        """Create the markers (after the checks: a refused target stays untouched)."""
        if self.markers is None or self.markers.shape != plan.grid:
            if self.markers is not None:
                del self.file[self.markers.name]
            self.markers = self.file.create_dataset(self.dataset.name + "_done", shape=plan.grid,
                                                    dtype="uint8", fillvalue=0)

    def write(self, plan, index, data):
        self.dataset[(slice(None), *plan.out_slices(index))] = data
        self.file.flush()

    def mark_done(self, index):
        self.markers[index] = 1
        self.file.flush()

    def done(self):
        return {tuple(int(i) for i in ix) for ix in np.argwhere(self.markers[()] != 0)}

    def clear_done(self):
        self.markers[...] = 0

    @property
    def attributes(self):
        value = self.dataset.attrs.get(ATTRIBUTE)
        return None if value is None else json.loads(value)

    def set_attributes(self, value):
        self.dataset.attrs[ATTRIBUTE] = json.dumps(value)

    def close(self):
        self.file.close()


def _fingerprint(cnn, plan, source_shape, source_dtype, as_uint8, pad_raw):
    """What must match for a run to resume another: net, geometry, block shape, source."""
    from elektronn import __version__
    digest = hashlib.sha256()
    for lay in cnn.layers:
        digest.update(type(lay).__name__.encode())
        for p in lay.params:
            value = np.ascontiguousarray(p.get_value())
            digest.update(str((value.dtype.str, value.shape)).encode())
            digest.update(value.tobytes())
    return {
        "params_sha256": digest.hexdigest(),
        "block_shape": list(plan.block),
        "source_shape": [int(s) for s in source_shape],
        "source_dtype": np.dtype(source_dtype).str,
        "output_shape": list(plan.out_shape),
        "offset": list(plan.offset_net),
        "as_uint8": bool(as_uint8),
        "pad_raw": bool(pad_raw),
        "version": __version__,
    }


def _describe(target):
    return target if isinstance(target, str) else repr(target)


def _check_existing(existing, attributes, plan, fingerprint, name, overwrite, adopt):
    """Refuse an existing output that does not belong to this run (nothing is changed)."""
    if overwrite:
        return
    hint = "; pass overwrite=True to replace it"
    if tuple(existing.shape) != plan.out_shape or np.dtype(existing.dtype) != plan.dtype:
        raise ValueError(f"target {name} has shape {tuple(existing.shape)} and dtype "
                         f"{existing.dtype}, the prediction needs {plan.out_shape} "
                         f"{plan.dtype}{hint}")
    if attributes is None:
        if adopt:
            return
        raise ValueError(f"target {name} exists and was not written by predict_volume{hint}")
    theirs = attributes.get("fingerprint", {})
    diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
    if diff:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} != {fingerprint.get(k)!r}" for k in diff)
        raise ValueError(f"target {name} was written by another run (fingerprint differs in "
                         f"{shown}); resuming would mix two predictions{hint}")


def _open_zarr_target(target, overwrite, shape_args):
    """Open or create the zarr output; returns (array, created)."""
    zarr = _import("zarr")
    if not isinstance(target, str | os.PathLike):
        return target, False
    _, store, inner = _parse_path(target)
    existing = None
    if not overwrite:
        with contextlib.suppress(FileNotFoundError, KeyError):
            existing = zarr.open(store, mode="r", path=inner or None)
    if existing is not None:
        if not hasattr(existing, "shape"):
            raise ValueError(f"target {os.fspath(target)!r} is a zarr group; name an array "
                             "inside it, e.g. out.zarr/prediction")
        return zarr.open_array(store, mode="r+", path=inner or None), False
    return zarr.create_array(store, name=inner or None, overwrite=overwrite, **shape_args), True


def refuse_hdf5_for_cluster(target):
    """Raise ValueError for an HDF5 target path: HDF5 has no safe parallel writers (no MPI)."""
    if isinstance(target, str | os.PathLike) and _parse_path(target)[0] == "hdf5":
        raise ValueError(f"target {os.fspath(target)!r} is HDF5, which has no safe parallel "
                         "writers: on a dask cluster write to zarr (e.g. 'out.zarr'), or run "
                         "without a client")


def _same_hdf5_file(source, target):
    """Whether source and target paths are datasets of one HDF5 file (opened once, then)."""
    if not all(isinstance(p, str | os.PathLike) for p in (source, target)):
        return False
    (s_kind, s_file, _), (t_kind, t_file, _) = _parse_path(source), _parse_path(target)
    return s_kind == t_kind == "hdf5" and os.path.realpath(s_file) == os.path.realpath(t_file)


def _open_target(target, plan, overwrite, client, h5file=None):
    """The output (``_ZarrTarget`` or ``_HDF5Target``) and whether it was created now.

    ``h5file``: the source's HDF5 file, already open for writing, when the target is in it.
    """
    shape_args = dict(shape=plan.out_shape, chunks=(plan.out_shape[0], *plan.block),
                      dtype=plan.dtype, fill_value=0)
    is_path = isinstance(target, str | os.PathLike)
    if is_path and _parse_path(target)[0] == "hdf5":
        if client is not None:
            refuse_hdf5_for_cluster(target)
        _, file, name = _parse_path(target)
        f = h5file if h5file is not None else h5py.File(file, "a")
        if overwrite:
            for n in (name, name.rstrip("/") + "_done"):
                if n in f:
                    del f[n]
        if name in f:
            return _HDF5Target(f, f[name]), False
        ds = f.create_dataset(name, shape=plan.out_shape, dtype=plan.dtype, fillvalue=0,
                              chunks=shape_args["chunks"])
        return _HDF5Target(f, ds), True
    if not (is_path or _is_zarr_array(target)):
        raise TypeError(f"target must be a path ('out.zarr', 'out.zarr/group/array', "
                        f"'file.h5:dataset') or a zarr array, got {type(target).__name__}")
    array, created = _open_zarr_target(target, overwrite, shape_args)
    return _ZarrTarget(array), created


def _is_zarr_array(obj):
    return type(obj).__module__.startswith("zarr") and hasattr(obj, "shape")


def _target_chunks(target):
    """Spatial shard or chunk shape of an existing zarr array (the unit of one writer)."""
    shards = getattr(target, "shards", None)
    return tuple((shards or target.chunks)[1:])


# --- running blocks ---------------------------------------------------------------------------
@dataclass
class _Job:
    """Everything a worker needs for any block (sent to each worker once)."""

    net: bytes  # the pickled net, unpickled once per worker process (see _worker_net)
    net_key: str  # its sha256: a worker reuses a net it has already unpickled and compiled
    source: object  # an array-like, or ("hdf5", file, dataset) opened on the worker
    target: object  # a zarr array
    plan: VolumePlan
    as_uint8: bool
    slots: dict  # host -> task slots of this run on that host (threads per worker)
    threads: int | None  # OpenMP threads per task (None: the host's cores / its slots)
    token: str


_PROCESS_CACHE = {}
_NETS = {}


def _worker_net(job):
    """The job's net, unpickled (and then compiled) once per process, reused by later runs."""
    cnn = _NETS.get(job.net_key)
    if cnn is None:
        _NETS.clear()
        cnn = _NETS[job.net_key] = pickle.loads(job.net)  # from our own client
    return cnn


def _set_omp_threads(n):
    """Set the OpenMP threads of the calling thread (and of later-loaded OpenMP runtimes)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    for lib in ("libgomp.so.1", "libomp.so", "libiomp5.so"):
        try:
            ctypes.CDLL(lib).omp_set_num_threads(ctypes.c_int(n))
            return
        except (OSError, AttributeError):
            continue


def _worker_setup(job):
    """Once per process and run: open the source, cap zarr's threads; per call: OMP threads."""
    state = _PROCESS_CACHE.get(job.token)
    if state is None:
        _PROCESS_CACHE.clear()  # one run at a time per process: drop the previous run's files
        source = job.source
        if isinstance(source, tuple) and source[:1] == ("hdf5",):
            source = h5py.File(source[1], "r")[source[2]]
        with contextlib.suppress(ImportError):
            import numcodecs.blosc
            numcodecs.blosc.use_threads = False
        threads = job.threads
        if threads is None:
            from distributed import get_worker
            worker = get_worker()
            host = worker.address.split("://")[-1].rsplit(":", 1)[0]
            slots = job.slots.get(host, worker.state.nthreads)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else os.cpu_count()
            threads = max(1, cores // max(1, slots))
        state = _PROCESS_CACHE[job.token] = (source, threads)
    _set_omp_threads(state[1])
    return state[0]


def _run_block(job, index):
    """Task of one block on a dask worker: compute, write, mark done; returns its voxels."""
    raw = _worker_setup(job)
    target = _ZarrTarget(job.target)
    target.write(job.plan, index, predict_block(_worker_net(job), raw, job.plan, index,
                                                job.as_uint8))
    target.mark_done(index)
    return job.plan.voxels(index)


def _portable_source(source):
    """The source as something a worker can open: h5py datasets become a path spec."""
    if isinstance(source, h5py.Dataset):
        return "hdf5", source.file.filename, source.name
    return source


def _run_serial(cnn, raw, target, plan, todo, as_uint8, bar):
    for index in todo:
        target.write(plan, index, predict_block(cnn, raw, plan, index, as_uint8))
        target.mark_done(index)
        bar.update(plan.voxels(index))


def _run_distributed(client, job, todo, bar):
    distributed = _import("distributed")
    workers = client.scheduler_info(n_workers=-1)["workers"].values() \
        if _accepts_n_workers(client) else client.scheduler_info()["workers"].values()
    if not workers:
        raise RuntimeError("the dask cluster has no workers")
    slots = Counter()
    for w in workers:
        slots[w["host"]] += int(w["nthreads"])
    job.slots = dict(slots)
    in_flight = max(1, 2 * sum(slots.values()))
    [job_future] = client.scatter([job], broadcast=True, hash=False)
    pending = iter(todo)
    done = distributed.as_completed()

    def submit():
        index = next(pending, None)
        if index is not None:
            key = f"elektronn-block-{job.token}-{'-'.join(map(str, index))}"
            done.add(client.submit(_run_block, job_future, index, key=key, retries=2,
                                   pure=False))

    for _ in range(in_flight):
        submit()
    try:
        for future in done:
            bar.update(future.result())
            future.release()
            submit()
    finally:
        client.cancel([job_future])


def _accepts_n_workers(client):
    import inspect
    return "n_workers" in inspect.signature(client.scheduler_info).parameters


# --- the public function ----------------------------------------------------------------------
def predict_volume(cnn, source, target, block_shape=None, client=None, resume=True,
                   as_uint8=False, pad_raw=False, show_progress=True, overwrite=False,
                   offset=None, threads_per_worker=None):
    """Predict a volume block by block into a zarr array or an HDF5 dataset; resumable.

    The output equals ``cnn.predictDense(np.asarray(source), offset=offset, as_uint8=as_uint8,
    pad_raw=pad_raw)`` (within float32 rounding), but memory is bounded by one block, blocks
    can run on a dask cluster, and a run that was killed continues where it stopped.

    Parameters
    ----------
    cnn : MixedConvNN
        A compiled 2-D or 3-D conv net, as for ``predictDense``.
    source : str, os.PathLike or array_like
        The volume ``(ch, x, y[, z])``: a numpy, h5py or zarr array, or a path
        ``'vol.zarr'``, ``'vol.zarr/group/array'`` or ``'file.h5:dataset'``.  Only each block's
        input region is read.
    target : str, os.PathLike or zarr.Array
        The output ``(n_lab, x', y'[, z'])``: a path ``'out.zarr'``, ``'out.zarr/group/array'``
        or ``'file.h5:dataset'`` (created if missing), or an existing zarr array of that shape
        and dtype (its chunks, or shards, set the block alignment).
    block_shape : sequence of int, optional
        Output block shape in the output's spatial axes ``(x, y[, z])``; the output's chunks.
        Default: the largest that fits :data:`DEFAULT_BLOCK_BYTES`, a multiple of the net's
        tile size per axis.
    client : distributed.Client, optional
        Run the blocks as futures on this dask cluster (zarr targets only).
    resume : bool
        Skip the blocks an earlier run of the same fingerprint marked done.  False recomputes
        every block.
    as_uint8, pad_raw, offset
        As for ``predictDense``.
    show_progress : bool
        Show a progress bar (voxels per second, time left).
    overwrite : bool
        Replace an existing target (also one of another run or of another shape).
    threads_per_worker : int, optional
        OpenMP threads of the kernels in each dask task.  Default: the host's cores divided by
        the task slots of all workers on that host (dask's nanny sets ``OMP_NUM_THREADS=1``).

    Returns
    -------
    dict
        ``blocks`` (total), ``computed``, ``skipped`` (done before), ``seconds``,
        ``voxels_per_s`` (computed output voxels per second), ``block_shape`` and ``shape``.

    Raises
    ------
    FileNotFoundError
        For a source path that does not exist.
    ValueError
        For a net or volume ``predictDense`` rejects, a bad block shape, an HDF5 target with a
        client, or an existing target of another shape, dtype or run (nothing is written).
    ImportError
        For zarr or dask work without the optional dependencies (``pip install
        elektronn[distributed]``).

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from elektronn.net.convnet import MixedConvNN
    >>> cnn = MixedConvNN((9, 9), input_depth=1, batch_size=1, seed=0)
    >>> cnn.addConvLayer(2, 3, pool_shape=1, is_last_layer=True)
    >>> cnn.compileOutputFunctions(target="nll", only_forward=True)
    >>> vol = np.random.default_rng(0).random((1, 40, 30), dtype=np.float32)
    >>> out = zarr.create_array(zarr.storage.MemoryStore(), shape=(2, 38, 28), chunks=(2, 16, 16),
    ...                         dtype="float32")
    >>> info = predict_volume(cnn, vol, out, block_shape=(16, 16), offset=(1, 1),
    ...                       show_progress=False)
    >>> info["blocks"], info["computed"]
    (6, 6)
    >>> bool(np.allclose(out[:], cnn.predictDense(vol, offset=(1, 1), show_progress=False)))
    True
    """
    from tqdm.auto import tqdm

    if client is not None:
        refuse_hdf5_for_cluster(target)
    same_file = _same_hdf5_file(source, target)
    raw = open_volume(source, mode="a" if same_file else "r")
    owns_source = raw is not source
    target_obj = None
    try:
        chunks = _target_chunks(target) if _is_zarr_array(target) else None
        plan = plan_volume(cnn, raw.shape, raw.dtype, block_shape, offset, as_uint8, pad_raw,
                           chunks=chunks)
        fingerprint = _fingerprint(cnn, plan, raw.shape, raw.dtype, as_uint8, pad_raw)
        name = _describe(target)
        if overwrite and _is_zarr_array(target):
            _check_existing(target, None, plan, fingerprint, name, False, True)  # shape, dtype
        target_obj, created = _open_target(target, plan, overwrite, client,
                                           raw.file if same_file else None)
        if not created:
            _check_existing(target_obj.array, target_obj.attributes, plan, fingerprint, name,
                            overwrite, adopt=_is_zarr_array(target))
        target_obj.prepare(plan)
        if created or overwrite or not resume:
            target_obj.clear_done()
        target_obj.set_attributes({"offset": list(plan.offset_net),
                                   "field_of_view": list(plan.fov_net),
                                   "fingerprint": fingerprint})
        done = target_obj.done()
        todo = [ix for ix in plan.indices() if ix not in done]
        skipped = plan.n_blocks - len(todo)
        total = sum(plan.voxels(ix) for ix in todo)
        logger.info("predict_volume: %d blocks of %s (%d done before) -> %s", plan.n_blocks,
                    plan.block, skipped, name)
        t0 = time.perf_counter()
        with tqdm(total=total, unit="Vox", unit_scale=True, disable=not show_progress,
                  desc="predict_volume", smoothing=0.1) as bar:
            if client is None:
                _run_serial(cnn, raw, target_obj, plan, todo, as_uint8, bar)
            else:
                net = pickle.dumps(cnn)
                job = _Job(net, hashlib.sha256(net).hexdigest(), _portable_source(raw),
                           target_obj.array, plan, as_uint8, {},
                           threads_per_worker, uuid.uuid4().hex[:12])
                _run_distributed(client, job, todo, bar)
        seconds = time.perf_counter() - t0
    finally:
        if target_obj is not None:
            target_obj.close()
        if owns_source and isinstance(raw, h5py.Dataset) and raw.id.valid:
            raw.file.close()
    return {"blocks": plan.n_blocks, "computed": len(todo), "skipped": skipped,
            "seconds": seconds, "voxels_per_s": total / max(seconds, 1e-9),
            "block_shape": plan.block, "shape": plan.out_shape}
