"""Fast CPU kernels: compiled C called through ctypes.

Convolution (``_conv_kernels.c``) and pooling / max-fragment pooling (``_pool_kernels.c``);
the library also holds the optimisers' update steps (``_update_kernels.c``, called by
:mod:`elektronn.ops.updates`).
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
import typing
from pathlib import Path

import numpy as np

from elektronn.ops import numpy_kernels

__all__ = [
    "corr", "corr_weights", "conv_grad_input", "kernel_library", "pool", "pool_grad", "mfp",
    "mfp_grad",
]

logger = logging.getLogger("elektronn")

_SOURCES = [Path(__file__).with_name(name)
            for name in ("_conv_kernels.c", "_pool_kernels.c", "_update_kernels.c")]
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
    lib.conv.argtypes = [ctypes.c_void_p] * 5  # plan, a, b, bias, out
    lib.conv.restype = ctypes.c_int
    lib.corr_block.argtypes = [ctypes.c_int]
    lib.pool_fwd.argtypes = [ctypes.c_void_p] * 3  # plan, x, y
    lib.pool_bwd.argtypes = [ctypes.c_void_p] * 5  # plan, x, y, g, gx
    lib.pool_fwd.restype = lib.pool_bwd.restype = None
    if lib.conv_plan_head() != len(_PLAN_HEAD):
        raise OSError(f"{target} was built from other sources than {__file__}")
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


# Convolutions: one call of ``conv`` in _conv_kernels.c per Op, with the geometry in a plan: C
# longs that hold the fields of _PLAN_HEAD, the tap offsets on the flattened input grid, the
# input dims and the output dims (see ``conv`` there).  Plans are built once per shape.
_PLAN_HEAD = ("kind", "bs", "ic", "oc", "nk", "nd", "merged", "relu", "flip")
_CORR, _GRAD_INPUT, _GRAD_WEIGHTS, _GRAD_WEIGHTS_POS = range(4)
_LONG = np.dtype(f"i{ctypes.sizeof(ctypes.c_long)}")


class _Plan(typing.NamedTuple):
    """A kernel call's geometry: ``address`` of the C longs in ``array``, the output shape."""

    array: np.ndarray
    address: int
    shape: tuple


def _make_plan(values, shape):
    """A :class:`_Plan` of the integers ``values`` (kept read-only) and output ``shape``."""
    array = np.array(values, dtype=_LONG)
    array.flags.writeable = False
    return _Plan(array, array.ctypes.data, tuple(int(s) for s in shape))


def _offsets(spatial, kshape):
    """The tap offsets of a kernel of shape ``kshape`` on the flattened grid ``spatial``."""
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    return [sum(i * s for i, s in zip(k, strides)) for k in np.ndindex(*kshape)]


def _conv_plan(kind, bs, ic, oc, spatial, kshape, merged=False, relu=False, flip=False):
    """The plan of ``conv`` for the input grid ``spatial`` and kernel ``kshape``."""
    nd = len(spatial)
    ospatial = tuple(s - k + 1 for s, k in zip(spatial, kshape))
    head = (kind, bs, ic, oc, math.prod(kshape), nd, int(merged), int(relu), int(flip))
    out = {_CORR: (bs, oc) + ospatial, _GRAD_INPUT: (bs, oc) + spatial}.get(kind, (oc, ic) + kshape)
    return _make_plan([*head, *_offsets(spatial, kshape), *spatial, *ospatial], out)


def _require(fit, what, a, b):
    """Raise a ``ValueError`` naming the shapes ``a`` and ``b`` of ``what`` unless ``fit``."""
    if not fit:
        raise ValueError(f"{what}: arrays of shapes {a} and {b} do not fit together")


def _kernel_fits(spatial, kshape):
    return len(spatial) == len(kshape) >= 1 and all(1 <= k <= s for s, k in zip(spatial, kshape))


@functools.lru_cache(maxsize=512)
def _corr_plan(lib, xshape, wshape, relu, flip):
    """Plan of :func:`corr` (the library decides the register blocks, so it is in the key)."""
    _require(len(xshape) > 2 and xshape[1] == wshape[1] and _kernel_fits(xshape[2:], wshape[2:]),
             "corr", xshape, wshape)
    (bs, ic), sp = xshape[:2], xshape[2:]
    oc, ksh = wshape[0], wshape[2:]
    merged = _merged(bs, math.prod(sp), _offsets(sp, ksh)[-1], lib.corr_block(oc))
    return _conv_plan(_CORR, bs, ic, oc, sp, ksh, merged, relu, flip)


@functools.lru_cache(maxsize=512)
def _grad_input_plan(lib, gshape, wshape):
    """Plan of :func:`conv_grad_input`."""
    _require(len(gshape) > 2 and len(wshape) == len(gshape) and gshape[1] == wshape[0] and
             min(wshape[2:]) >= 1, "conv_grad_input", gshape, wshape)
    bs, ic, oc, ksh = gshape[0], wshape[0], wshape[1], wshape[2:]
    sp = tuple(o + k - 1 for o, k in zip(gshape[2:], ksh))
    merged = _merged(bs, math.prod(sp), 0, lib.corr_block(oc))
    return _conv_plan(_GRAD_INPUT, bs, ic, oc, sp, ksh, merged)


@functools.lru_cache(maxsize=512)
def _grad_weights_plan(xshape, gshape, kshape, flip):
    """Plan of :func:`corr_weights`."""
    sp = xshape[2:]
    _require(len(xshape) > 2 and len(gshape) == len(xshape) and xshape[0] == gshape[0] and
             _kernel_fits(sp, kshape) and
             all(s - k + 1 == o for s, k, o in zip(sp, kshape, gshape[2:])),
             "corr_weights", xshape, gshape)
    bs, ic, oc = xshape[0], xshape[1], gshape[1]
    positions = math.prod(sp) - _offsets(sp, kshape)[-1]
    kind = _GRAD_WEIGHTS_POS if oc < 16 and positions >= 256 else _GRAD_WEIGHTS
    return _conv_plan(kind, bs, ic, oc, sp, kshape, flip=flip)


def _clear_plans():
    """Forget every plan (for tests that change how plans are chosen)."""
    for cached in (_corr_plan, _grad_input_plan, _grad_weights_plan, _pool_plan):
        cached.cache_clear()


_from_buffer, _addressof = ctypes.c_char.from_buffer, ctypes.addressof


def _ptr(a):
    """The address of the data of the C-contiguous array ``a`` (an int, for ``c_void_p``).

    Through the buffer protocol (0.3 us) rather than ``a.ctypes`` (1-2 us); read-only and empty
    arrays take the slow path.
    """
    try:
        return _addressof(_from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _merged(bs, plane, last_offset, block):
    """Whether to process the examples as one long plane (the examples side by side).

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


def _flipped(w):
    """``w`` (``(channels, channels, *kernel)``) flipped in every kernel axis (a view)."""
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


def _run(lib, plan, a, b, bias, out):
    """Call ``conv`` of ``lib`` with ``plan`` on the arrays ``a, b, out`` and ``bias`` (an address
    or ``None``); return ``out``."""
    if lib.conv(plan.address, _ptr(a), _ptr(b), bias, _ptr(out)):
        raise MemoryError("the convolution kernel could not allocate its scratch memory")
    return out


def corr(x, w, b=None, relu=False, flip=False):
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
    flip : bool
        ``w`` holds the kernels flipped in every spatial axis (a true convolution with ``w``):
        no flipped copy is made.

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
        y = numpy_kernels.corr(x, _flipped(w) if flip else w)
        if b is not None:
            y += b.reshape((-1,) + (1,) * (y.ndim - 2))
        return np.maximum(y, 0, out=y) if relu else y
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    plan = _corr_plan(lib, x.shape, w.shape, bool(relu), bool(flip))
    y = np.empty(plan.shape, dtype=np.float32)
    return _run(lib, plan, x, w, None if b is None else _ptr(b), y)


def conv_grad_input(g, w):
    """Gradient of ``sum(conv(x, w) * g)`` w.r.t. ``x`` (see ``numpy_kernels.conv_grad_input``).

    ``gx[n,c,q] = sum_{o,k} w[o,c,k] g[n,o,q-k]``: computed for every input position ``q``
    from ``g`` embedded in the input's grid behind a zero lead-in, so that no position is
    computed twice or cropped away.
    """
    lib = kernel_library()
    if lib is None:
        return numpy_kernels.conv_grad_input(g, w)
    g = np.ascontiguousarray(g, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    plan = _grad_input_plan(lib, g.shape, w.shape)
    return _run(lib, plan, g, w, None, np.empty(plan.shape, dtype=np.float32))


def corr_weights(x, g, kshape, flip=False):
    """Kernel gradient of :func:`corr`: ``gw[o,c,k] = sum_{n,p} g[n,o,p] x[n,c,p+k]``.

    The C kernel keeps the output channels (padded to the vector width) in its vector lanes
    (``corr_gradw`` in ``_conv_kernels.c``); with fewer than 16 channels most lanes would be
    padding, and ``corr_gradw_pos`` keeps positions in them instead, on ``g`` laid out on the
    input grid, where a plane has enough positions for that (at least 256 computed ones;
    measured 1.5-4x faster there, slower on smaller planes).  With ``flip`` the result is
    flipped in every spatial axis (the gradient of a true convolution's kernels).
    """
    lib = kernel_library()
    if lib is None:
        gw = numpy_kernels.corr_weights(x, g, kshape)
        return np.ascontiguousarray(_flipped(gw)) if flip else gw
    x = np.ascontiguousarray(x, dtype=np.float32)
    g = np.ascontiguousarray(g, dtype=np.float32)
    plan = _grad_weights_plan(x.shape, g.shape, tuple(int(k) for k in kshape), bool(flip))
    return _run(lib, plan, x, g, None, np.empty(plan.shape, dtype=np.float32))


# Pooling: the C kernels see the pooled array as a strided (lead, S0, S1, S2) view, and
# max-fragment pooling pools every phase-shifted crop of it; their plan holds that geometry (see
# _pool_kernels.c).


@functools.lru_cache(maxsize=512)
def _pool_plan(shape, ws, maxabs, phases):
    """The plan of ``pool_fwd`` and ``pool_bwd`` for pooling the trailing ``len(ws)`` axes.

    Parameters
    ----------
    shape : tuple of int
        Shape of the C-contiguous pooled array.
    ws : tuple of int
        Pool factors of its trailing axes.
    maxabs : bool
        ``maxabs`` rather than ``max`` pooling.
    phases : bool
        Max-fragment pooling: pool every phase crop (``s - p + 1`` elements of each axis) and
        stack the ``prod(ws)`` fragments on axis 0.

    Returns
    -------
    _Plan
        With the shape of the pooled result (remainders of non-divisible axes are dropped).
    """
    nd = len(ws)
    if not 1 <= nd <= 3 or len(shape) < nd:
        raise ValueError(f"cannot pool {nd} trailing axes of an array of shape {shape}")
    lead, sp = shape[: len(shape) - nd], (1,) * (3 - nd) + tuple(shape[len(shape) - nd :])
    p = (1,) * (3 - nd) + tuple(ws)
    out = tuple((s - phases * (k - 1)) // k for s, k in zip(sp, p))
    stride = (sp[0] * sp[1] * sp[2], sp[1] * sp[2], sp[2])
    values = (math.prod(lead), *out, *stride, *p, int(maxabs), int(phases))
    if phases:
        lead = (math.prod(ws) * lead[0],) + lead[1:]
    return _make_plan(values, lead + out[3 - nd :])


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
    plan = _pool_plan(x.shape, tuple(ws), mode == "maxabs", phases)
    y = np.empty(plan.shape, dtype=np.float32)
    kernel_library().pool_fwd(plan.address, _ptr(x), _ptr(y))
    return y


def _pool_grad(x, y, g, ws, phases):
    """Gradient of :func:`_pool` with the C kernel."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    plan = _pool_plan(x.shape, tuple(ws), False, phases)
    y, g = _pooled_pair(y, g, plan.shape)
    gx = np.zeros(x.shape, dtype=np.float32)
    kernel_library().pool_bwd(plan.address, _ptr(x), _ptr(y), _ptr(g), _ptr(gx))
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
