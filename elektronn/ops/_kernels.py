"""Fast CPU convolution kernels: compiled C (``_conv_kernels.c``) called through ctypes.

The C source is compiled once per machine with the system C compiler (``-O3 -march=native
-fopenmp``) into PyTensor's compile directory and reused by every later process.  When no
compiler is available, or ``ELEKTRONN_KERNELS=numpy`` is set, the numpy references in
:mod:`elektronn.ops.reference` are used instead (correct, about ten times slower).
"""

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from elektronn.ops import reference

__all__ = ["corr", "corr_weights", "kernel_library"]

logger = logging.getLogger("elektronn")

_SOURCE = Path(__file__).with_name("_conv_kernels.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
_lib = None  # None: not tried yet; False: unavailable


def _cpu_signature():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return os.uname().machine


def _build(cc):
    import pytensor

    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc] + _FLAGS).encode() + _cpu_signature().encode())
    outdir = Path(pytensor.config.compiledir) / "elektronn"
    target = outdir / f"conv_kernels_{key.hexdigest()[:16]}.so"
    if not target.exists():
        outdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=outdir)
        os.close(fd)
        try:
            subprocess.run(
                [cc, *_FLAGS, "-o", tmp, str(_SOURCE)], check=True, capture_output=True, text=True
            )
            os.replace(tmp, target)  # atomic: concurrent processes never see a partial file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    # Idle OpenMP threads sleep instead of spinning: on small machines they would otherwise
    # compete with numpy's BLAS threads between calls (measured 2-5x slower training steps).
    # Read by libgomp when it is loaded; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    lib = ctypes.CDLL(str(target))
    argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3
    argtypes += [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_long]
    for name in ("corr_fwd", "corr_gradw"):
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib


def kernel_library():
    """Return the loaded C kernel library, or ``None`` when the numpy fallback is in use."""
    global _lib
    if _lib is None:
        _lib = False
        if os.environ.get("ELEKTRONN_KERNELS", "c").lower() == "numpy":
            logger.info("ELEKTRONN_KERNELS=numpy: using the numpy convolution kernels")
            return None
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            logger.warning("no C compiler found: using the slow numpy convolution kernels")
            return None
        try:
            _lib = _build(cc)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or err
            logger.warning("compiling the convolution kernels failed (%s); using numpy", detail)
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


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _valid(spatial, kshape):
    return tuple(slice(0, s - k + 1) for s, k in zip(spatial, kshape))


# Planes smaller than this are processed as one long plane of all examples side by side, so
# that the vector blocks of the kernels stay full (the positions between examples are computed
# and cropped away, like those between rows).
_SMALL_PLANE = 4096


def _merge_batch(a):
    """``(bs, c, *sp)`` -> ``(1, c, bs * prod(sp))`` (one plane holding every example)."""
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)).reshape(1, a.shape[1], -1)


def _split_batch(full, bs, spatial):
    """Inverse of :func:`_merge_batch` for a ``(1, c, bs * prod(sp))`` result."""
    return np.swapaxes(full.reshape((full.shape[1], bs) + tuple(spatial)), 0, 1)


def corr(x, w):
    """Valid cross-correlation ``y[n,o,p] = sum_{c,k} w[o,c,k] x[n,c,p+k]`` (float32)."""
    lib = kernel_library()
    if lib is None:
        return reference.corr(x, w)
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    (bs, ic), sp = x.shape[:2], x.shape[2:]
    oc, ksh = w.shape[0], w.shape[2:]
    merged = bs > 1 and np.prod(sp) < _SMALL_PLANE
    xk = _merge_batch(x) if merged else x
    offs, plane, n = _grid(tuple(sp), tuple(int(k) for k in ksh))
    if merged:
        plane *= bs
        n = plane - int(offs[-1])
    full = np.empty((xk.shape[0], oc, plane), dtype=np.float32)
    wpack = np.empty((oc + 16) * ic * len(offs), dtype=np.float32)
    lib.corr_fwd(_ptr(xk), _ptr(w), _ptr(full), _ptr(wpack), xk.shape[0], ic, oc, plane,
                 len(offs), _ptr(offs), n)
    full = _split_batch(full, bs, sp) if merged else full.reshape((bs, oc) + sp)
    return np.ascontiguousarray(full[(slice(None), slice(None)) + _valid(sp, ksh)])


def corr_weights(x, g, kshape):
    """Kernel gradient of :func:`corr`: ``gw[o,c,k] = sum_{n,p} g[n,o,p] x[n,c,p+k]``."""
    lib = kernel_library()
    if lib is None:
        return reference.corr_weights(x, g, kshape)
    x = np.ascontiguousarray(x, dtype=np.float32)
    (bs, ic), sp = x.shape[:2], x.shape[2:]
    oc = g.shape[1]
    gfull = np.zeros((bs, oc) + sp, dtype=np.float32)
    gfull[(slice(None), slice(None)) + _valid(sp, kshape)] = g
    offs, plane, n = _grid(tuple(sp), tuple(int(k) for k in kshape))
    if bs > 1 and np.prod(sp) < _SMALL_PLANE:
        x, gfull = _merge_batch(x), _merge_batch(gfull)
        plane *= bs
        n = plane - int(offs[-1])
    gw = np.empty((oc, ic) + tuple(kshape), dtype=np.float32)
    part = np.empty(oc * ic * len(offs) * 16, dtype=np.float32)
    lib.corr_gradw(_ptr(x), _ptr(gfull), _ptr(gw), _ptr(part), x.shape[0], ic, oc, plane,
                   len(offs), _ptr(offs), n)
    return gw
