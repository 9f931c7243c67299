"""Fast CPU kernels: compiled C called through ctypes.

Convolution (``_conv_kernels.c``) and pooling / max-fragment pooling (``_pool_kernels.c``).
The C sources are compiled once per machine with the system C compiler (``-O3 -march=native
-fopenmp``) into one library in PyTensor's compile directory and reused by every later
process.  When no compiler is available, or :data:`use_c_kernels` is false (set by
:func:`elektronn.backend.configure` from ``ELEKTRONN_KERNELS=numpy``), the numpy
implementations in :mod:`elektronn.ops.numpy_kernels` are used instead (correct, several times
slower).
"""

import ctypes
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from elektronn.ops import numpy_kernels

__all__ = [
    "corr", "corr_weights", "conv_grad_input", "kernel_library", "pool", "pool_grad", "mfp",
    "mfp_grad",
]

logger = logging.getLogger("elektronn")

_SOURCES = [Path(__file__).with_name(name) for name in ("_conv_kernels.c", "_pool_kernels.c")]
_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
_NATIVE = ("-march=native",)
_lib = None  # None: not tried yet; False: unavailable

use_c_kernels = True
"""Whether :func:`kernel_library` may return the C library (False: the numpy kernels)."""


def _cpu_signature():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return os.uname().machine


def _build(cc, target=_NATIVE):
    """Compile (once, cached by source, flags and CPU) and load the library for ``target``.

    ``target`` holds the instruction-set flags: ``-march=native`` at run time; the tests build
    other vector widths (e.g. ``("-march=x86-64-v3",)`` for AVX2) to check every code path.
    """
    import pytensor

    flags = [*_FLAGS, *target]
    src = b"".join(path.read_bytes() for path in _SOURCES)
    key = hashlib.sha256(src + " ".join([cc] + flags).encode() + _cpu_signature().encode())
    outdir = Path(pytensor.config.compiledir) / "elektronn"
    target = outdir / f"kernels_{key.hexdigest()[:16]}.so"
    if not target.exists():
        outdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=outdir)
        os.close(fd)
        try:
            subprocess.run(
                [cc, *flags, "-o", tmp, *map(str, _SOURCES)],
                check=True, capture_output=True, text=True,
            )
            os.replace(tmp, target)  # atomic: concurrent processes never see a partial file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    # OMP_WAIT_POLICY (read by libgomp as it loads here) is set by elektronn.backend.configure.
    lib = ctypes.CDLL(str(target))
    arrays, sizes = [ctypes.c_void_p] * 4, [ctypes.c_int] * 3
    taps = [ctypes.c_void_p, ctypes.c_long]  # offsets, computed positions
    grid = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]  # ndim, dims, odims
    bias_relu = [ctypes.c_void_p, ctypes.c_int]  # after x, w; before y, wpack
    lib.corr_fwd.argtypes = arrays[:2] + bias_relu + arrays[2:] + sizes
    lib.corr_fwd.argtypes += [ctypes.c_long, ctypes.c_int] + taps + grid
    lib.corr_fwd.argtypes += [ctypes.c_long] * 2  # lead, band
    lib.corr_gradw.argtypes = arrays + sizes + [ctypes.c_int] + grid + [ctypes.c_int]
    lib.corr_gradw.argtypes += taps[:1]
    lib.embed.argtypes = [ctypes.c_void_p] * 2 + sizes + [ctypes.c_long] * 2 + grid
    lib.corr_fwd.restype = lib.corr_gradw.restype = None
    lib.corr_gradw_pos.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 3 + [ctypes.c_long]
    lib.corr_gradw_pos.argtypes += [ctypes.c_int, ctypes.c_void_p]
    lib.corr_gradw_pos.restype = None
    lib.corr_gradw_scratch.argtypes = [ctypes.c_long, ctypes.c_int]
    lib.corr_gradw_scratch.restype = ctypes.c_long
    lib.corr_block.argtypes = [ctypes.c_int]
    lib.embed.restype = None
    geometry = [ctypes.POINTER(ctypes.c_long)] * 3  # shape, stride, ws
    lib.pool_fwd.argtypes = [ctypes.c_void_p] * 2 + geometry + [ctypes.c_int] * 2
    lib.pool_bwd.argtypes = [ctypes.c_void_p] * 4 + geometry + [ctypes.c_int]
    lib.pool_fwd.restype = lib.pool_bwd.restype = None
    return lib


def compiler():
    """The C compiler the kernels are built with (``$CC``, gcc or cc), or ``None``."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def kernel_library():
    """Return the loaded C kernel library, or ``None`` when the numpy fallback is in use."""
    global _lib
    if not use_c_kernels:
        return None
    if _lib is None:
        _lib = False
        cc = compiler()
        if cc is None:
            logger.warning("no C compiler found: using the slow numpy kernels")
            return None
        try:
            _lib = _build(cc)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or err
            logger.warning("compiling the C kernels failed (%s); using numpy", detail)
    return _lib or None


@functools.lru_cache(maxsize=256)
def _grid(spatial, kshape):
    """Flattened-grid geometry: tap offsets, plane size and the number of computed positions.

    Cached per shape (a training step asks for the same few geometries every time); the
    returned offset array must not be modified.
    """
    strides = [int(np.prod(spatial[d + 1 :])) for d in range(len(spatial))]
    offs = np.array(
        [sum(i * s for i, s in zip(k, strides)) for k in np.ndindex(*kshape)], dtype=np.int64
    )
    offs.flags.writeable = False
    plane = int(np.prod(spatial))
    return offs, plane, plane - int(offs[-1])


@functools.lru_cache(maxsize=256)
def _dims(spatial, ospatial):
    """``spatial`` and ``ospatial`` as read-only int64 arrays (the ``dims, odims`` of C)."""
    arrays = tuple(np.array(s, dtype=np.int64) for s in (spatial, ospatial))
    for a in arrays:
        a.flags.writeable = False
    return arrays


_from_buffer, _addressof = ctypes.c_char.from_buffer, ctypes.addressof


def _ptr(a):
    """The address of the data of the C-contiguous array ``a`` (an int, for ``c_void_p``).

    Through the buffer protocol (0.3 us) rather than ``a.ctypes`` (1-2 us; a small training
    step passes about 70 pointers); read-only and empty arrays take the slow path.
    """
    try:
        return _addressof(_from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _merged(bs, plane, last_offset, block):
    """Whether to process the examples as one long plane (see :func:`_merge_batch`).

    The forward kernel computes positions in blocks of ``block`` on each example's flattened
    plane, up to ``plane - last_offset``; the last block is moved back to end at the row's
    end, so only rows shorter than a block take scalar code (counted ``block`` times as
    expensive).  Merging keeps the blocks full on small planes, but computes the positions between
    examples too (all of them, where a 3-D kernel leaves output slices out), so the smaller
    amount of work decides.
    """
    if bs == 1:
        return False
    n = plane - last_offset
    separate = bs * (-(-n // block) * block if n >= block else n * block)
    merged = -(-(bs * plane - last_offset) // block) * block
    return merged < separate


def _merge_batch(a):
    """``(bs, c, *sp)`` -> ``(1, c, bs * prod(sp))`` (one plane holding every example)."""
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)).reshape(1, a.shape[1], -1)


def _embed(lib, g, spatial, lead, merged):
    """``g (bs, c, *out)`` on the flattened grid of the input ``spatial``, zero elsewhere.

    Parameters
    ----------
    lib : ctypes.CDLL
        The kernel library.
    g : ndarray
        Output-shaped array, ``out`` at most ``spatial`` in every axis.
    spatial : tuple of int
        The grid.
    lead : int
        Zeros in front of each row.
    merged : bool
        Lay the examples side by side in one row per channel (see :func:`_merge_batch`).

    Returns
    -------
    ndarray
        ``(bs, c, lead + prod(spatial))``, or ``(1, c, lead + bs * prod(spatial))`` when
        ``merged``.
    """
    g = np.ascontiguousarray(g, dtype=np.float32)
    bs, c = g.shape[:2]
    plane = math.prod(spatial)
    rows, length = (c, lead + bs * plane) if merged else (bs * c, lead + plane)
    buf = np.empty((rows, length), dtype=np.float32)
    dims, odims = _dims(tuple(spatial), tuple(g.shape[2:]))
    lib.embed(_ptr(g), _ptr(buf), bs, c, merged, lead, length, len(dims), _ptr(dims),
              _ptr(odims))
    return buf.reshape((1 if merged else bs, c, length))


def _corr_fwd(lib, x, w, y, offs, n, dims, odims, lead=0, band=None, b=None, relu=False):
    """Call ``corr_fwd``: ``x (nb, ic, xs)`` against ``w (oc, ic, *kernel)`` into ``y``.

    ``n`` positions are computed per example of ``x`` (``nb`` is 1 when the examples lie side
    by side); ``y (bs, oc, *odims)`` receives those whose coordinates on the grid ``dims``
    are inside ``odims`` (see ``geom`` in ``_conv_kernels.c``).  When ``x`` is zero except for
    the first ``band`` positions of each plane after ``lead``, taps that read only zeros are
    skipped (``band=None``: nothing is zero).  The stored values get the float32 bias ``b``
    (``(oc,)``, C-contiguous; ``None``: none) added per output channel, then ``relu``.
    """
    nb, ic, xs = x.shape
    oc = w.shape[0]
    wpack = np.empty((oc + 16) * ic * len(offs), dtype=np.float32)
    plane = math.prod(dims)
    dims, odims = _dims(tuple(dims), tuple(odims))
    lib.corr_fwd(_ptr(x), _ptr(w), None if b is None else _ptr(b), int(relu), _ptr(y),
                 _ptr(wpack), nb, ic, oc, xs, len(offs), _ptr(offs), n, len(dims), _ptr(dims),
                 _ptr(odims), lead, plane if band is None else band)


def corr(x, w, b=None, relu=False):
    """Valid cross-correlation ``y[n,o,p] = sum_{c,k} w[o,c,k] x[n,c,p+k]`` (float32).

    Parameters
    ----------
    x : ndarray
        ``(batch, in_channels, *spatial)``.
    w : ndarray
        ``(out_channels, in_channels, *kernel)``.
    b : ndarray, optional
        ``(out_channels,)``: added to every output of channel ``o`` (``y[n,o,p] += b[o]``).
    relu : bool
        Then replace negative outputs by 0 (NaN stays NaN).

    Returns
    -------
    ndarray
        ``(batch, out_channels, *(spatial - kernel + 1))`` float32.
    """
    if b is not None:
        b = np.ascontiguousarray(b, dtype=np.float32)
        if b.shape != w.shape[:1]:
            raise ValueError(f"bias of shape {b.shape} does not match filters of shape {w.shape}")
    lib = kernel_library()
    if lib is None:
        y = numpy_kernels.corr(x, w)
        if b is not None:
            y += b.reshape((-1,) + (1,) * (y.ndim - 2))
        return np.maximum(y, 0, out=y) if relu else y
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    (bs, ic), sp = x.shape[:2], x.shape[2:]
    oc, ksh = w.shape[0], tuple(int(k) for k in w.shape[2:])
    offs, plane, n = _grid(tuple(sp), ksh)
    if _merged(bs, plane, int(offs[-1]), lib.corr_block(oc)):
        x, n = _merge_batch(x), bs * plane - int(offs[-1])
    osp = tuple(s - k + 1 for s, k in zip(sp, ksh))
    y = np.empty((bs, oc) + osp, dtype=np.float32)
    _corr_fwd(lib, x.reshape(x.shape[0], ic, -1), w, y, offs, n, sp, osp, b=b, relu=relu)
    return y


def conv_grad_input(g, w):
    """Gradient of ``sum(conv(x, w) * g)`` w.r.t. ``x`` (see ``numpy_kernels.conv_grad_input``).

    ``gx[n,c,q] = sum_{o,k} w[o,c,k] g[n,o,q-k]``: computed for every input position ``q``
    from ``g`` embedded in the input's grid behind a zero lead-in, so that no position is
    computed twice or cropped away.
    """
    lib = kernel_library()
    if lib is None:
        return numpy_kernels.conv_grad_input(g, w)
    w = np.ascontiguousarray(np.swapaxes(w, 0, 1), dtype=np.float32)
    bs, ic = g.shape[0], w.shape[0]
    ksh = tuple(int(k) for k in w.shape[2:])
    sp = tuple(o + k - 1 for o, k in zip(g.shape[2:], ksh))
    offs, plane, _ = _grid(sp, ksh)
    merged = _merged(bs, plane, 0, lib.corr_block(ic))
    buf = _embed(lib, g, sp, int(offs[-1]), merged)
    gx = np.empty((bs, ic) + sp, dtype=np.float32)
    # every position is an output: a one-axis grid; g is zero past its first output slices
    band = g.shape[2] * (plane // sp[0])
    _corr_fwd(lib, buf, w, gx, offs, (bs if merged else 1) * plane, (plane,), (plane,),
              lead=int(offs[-1]), band=band)
    return gx


def corr_weights(x, g, kshape):
    """Kernel gradient of :func:`corr`: ``gw[o,c,k] = sum_{n,p} g[n,o,p] x[n,c,p+k]``.

    The C kernel keeps the output channels (padded to a multiple of 16) in its vector lanes
    (``corr_gradw`` in ``_conv_kernels.c``); with fewer than 16 channels most lanes would be
    padding, and ``corr_gradw_pos`` keeps positions in them instead, on ``g`` laid out on the
    input grid, where a plane has enough positions for that (at least 256 computed ones;
    measured 1.5-4x faster there, slower on smaller planes).
    """
    lib = kernel_library()
    if lib is None:
        return numpy_kernels.corr_weights(x, g, kshape)
    x = np.ascontiguousarray(x, dtype=np.float32)
    g = np.ascontiguousarray(g, dtype=np.float32)
    (bs, ic), sp = x.shape[:2], x.shape[2:]
    oc, kshape = g.shape[1], tuple(int(k) for k in kshape)
    ocp = -(-oc // 16) * 16
    offs = _grid(tuple(sp), kshape)[0]
    dims, odims = _dims(tuple(sp), tuple(g.shape[2:]))
    gw = np.empty((oc, ic) + kshape, dtype=np.float32)
    if oc < 16 and math.prod(sp) - int(offs[-1]) >= 256:
        ge = _embed(lib, g, tuple(sp), 0, False)
        lib.corr_gradw_pos(_ptr(x), _ptr(ge), _ptr(gw), bs, ic, oc, math.prod(sp), len(offs),
                           _ptr(offs))
        return gw
    raw = np.empty(lib.corr_gradw_scratch(ic * len(offs), ocp) + 16, dtype=np.float32)
    acc = raw[(-raw.ctypes.data % 64) // 4 :]  # 64-byte aligned
    lib.corr_gradw(_ptr(x), _ptr(g), _ptr(gw), _ptr(acc), bs, ic, oc, ocp, len(dims),
                   _ptr(dims), _ptr(odims), len(offs), _ptr(offs))
    return gw


# Pooling: the C kernels see the pooled array as a strided (lead, S0, S1, S2) view, and
# max-fragment pooling pools every phase-shifted crop of it (see _pool_kernels.c).
_Long3, _Long4 = ctypes.c_long * 3, ctypes.c_long * 4


def _pool_geometry(shape, ws, phases):
    """Output shape and C arguments of pooling the trailing ``len(ws)`` axes.

    Parameters
    ----------
    shape : tuple of int
        Shape of the C-contiguous pooled array.
    ws : tuple of int
        Pool factors of its trailing axes.
    phases : bool
        Max-fragment pooling: pool every phase crop (``s - p + 1`` elements of each axis) and
        stack the ``prod(ws)`` fragments on axis 0.

    Returns
    -------
    out_shape : tuple of int
        Shape of the pooled result (remainders of non-divisible axes are dropped).
    args : tuple
        The ``shape, stride, ws`` arguments of ``pool_fwd`` and ``pool_bwd``.
    """
    nd = len(ws)
    lead, sp = shape[: len(shape) - nd], (1,) * (3 - nd) + tuple(shape[len(shape) - nd :])
    p = (1,) * (3 - nd) + tuple(ws)
    out = tuple((s - phases * (k - 1)) // k for s, k in zip(sp, p))
    stride = _Long3(sp[0] * sp[1] * sp[2], sp[1] * sp[2], sp[2])
    args = (_Long4(math.prod(lead), *out), stride, _Long3(*p))
    if phases:
        lead = (math.prod(ws) * lead[0],) + lead[1:]
    return lead + out[3 - nd :], args


def _pooled_pair(y, g, shape):
    """``y`` and ``g`` as C-contiguous float32 arrays; raise unless both have ``shape``."""
    pair = []
    for name, a in (("output", y), ("gradient", g)):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.shape != shape:
            raise ValueError(f"{name} must have the pooled shape {shape}, got {a.shape}")
        pair.append(a)
    return pair


def _pool(x, ws, mode, phases):
    """Pooling (``phases=False``) or max-fragment pooling with the C kernel."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out_shape, args = _pool_geometry(x.shape, ws, phases)
    y = np.empty(out_shape, dtype=np.float32)
    kernel_library().pool_fwd(_ptr(x), _ptr(y), *args, mode == "maxabs", phases)
    return y


def _pool_grad(x, y, g, ws, phases):
    """Gradient of :func:`_pool` with the C kernel."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out_shape, args = _pool_geometry(x.shape, ws, phases)
    y, g = _pooled_pair(y, g, out_shape)
    gx = np.zeros(x.shape, dtype=np.float32)
    kernel_library().pool_bwd(_ptr(x), _ptr(y), _ptr(g), _ptr(gx), *args, phases)
    return gx


def pool(x, ws, mode="max"):
    """Non-overlapping ``max`` or ``maxabs`` pooling of the trailing axes (float32).

    Same semantics as :func:`elektronn.ops.numpy_kernels.pool`; axes must be divisible by their
    factor (checked by the Ops).
    """
    if kernel_library() is None:
        return numpy_kernels.pool(x, ws, mode)
    return _pool(x, ws, mode, phases=False)


def pool_grad(x, y, g, ws):
    """Gradient of :func:`pool` given its output ``y``, as :func:`numpy_kernels.pool_grad`."""
    if kernel_library() is None:
        return numpy_kernels.pool_grad(x, y, g, ws)
    return _pool_grad(x, y, g, ws, phases=False)


def mfp(x, ws, mode="max"):
    """Max-fragment pooling (float32), as :func:`elektronn.ops.numpy_kernels.mfp`."""
    if kernel_library() is None:
        return numpy_kernels.mfp(x, ws, mode)
    return _pool(x, ws, mode, phases=True)


def mfp_grad(x, y, g, ws):
    """Gradient of :func:`mfp` (overlapping phases add up), as ``numpy_kernels.mfp_grad``."""
    if kernel_library() is None:
        return numpy_kernels.mfp_grad(x, y, g, ws)
    return _pool_grad(x, y, g, ws, phases=True)
