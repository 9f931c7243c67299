"""Inference speed and memory of a CNN for several input sizes.

:func:`profile_input_sizes` builds the same conv architecture for input sizes from small to
large, times the forward pass (``class_probabilities``, :func:`measure_forward`) and reports the
dense prediction speed and the memory a pass needs, so that a patch size for ``predictDense``
can be chosen. :func:`sweep_sizes` picks the sizes to try from a calculator's valid inputs. The
command ``elektronn-profile`` (:mod:`elektronn.scripts.profile`) does the same from the shell,
for a training config or an architecture given by its filters and poolings.
"""

import logging
import statistics
import sys
import time
import tracemalloc

import numpy as np
from tqdm.auto import tqdm

from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator

__all__ = ["profile_input_sizes", "candidate_input_sizes", "sweep_sizes", "measure_forward",
           "format_table", "DEFAULT_MAX_SIZE"]

logger = logging.getLogger("elektronn")

DEFAULT_MAX_SIZE = {2: (512, 512), 3: (32, 192, 192)}
"""Largest input size per axis tried by default (``(x, y)`` or ``(z, x, y)``)."""


def _n_dim(filters, poolings, *hints):
    """The number of spatial axes: the length of the per-axis entries of ``filters``,
    ``poolings`` and the sizes in ``hints`` (2 if all are scalars)."""
    entries = list(filters) + list(poolings) + [h for h in hints if h is not None]
    lengths = {len(e) for e in entries if np.ndim(e) > 0}
    if len(lengths) > 1:
        raise ValueError(f"filters, poolings and sizes mix per-axis entries of lengths "
                         f"{sorted(lengths)}")
    n_dim = lengths.pop() if lengths else 2
    if n_dim not in (2, 3):
        raise ValueError(f"only 2-D and 3-D architectures can be profiled, got {n_dim} axes")
    return n_dim


def _mfp_flags(MFP, poolings):
    """Per-layer MFP flags; ``True`` means MFP in every layer that pools."""
    if MFP is None or isinstance(MFP, bool | np.bool_):
        return [bool(MFP) and int(np.max(p)) > 1 for p in poolings]
    flags = [bool(m) for m in MFP]
    if len(flags) != len(poolings):
        raise ValueError(f"MFP needs one entry per layer ({len(poolings)}), got {MFP!r}")
    return flags


def _calculator(filters, poolings, mfp, n_dim, desired_input=None):
    """The calculator of the net as built here: the given layers plus the 1×1 output layer."""
    return CNNCalculator(list(filters) + [1], list(poolings) + [1], desired_input=desired_input,
                         MFP=list(mfp) + [any(mfp)], n_dim=n_dim)


def candidate_input_sizes(filters, poolings, MFP=False, n_sizes=5, max_size=None):
    """Valid input sizes spread from the smallest to ``max_size``, geometrically.

    Parameters
    ----------
    filters, poolings : list
        Filter sizes and pooling factors of the conv layers (entries scalar or per axis; 3-D
        entries in zxy order). A 1×1 output layer is added, as :func:`profile_input_sizes`
        does.
    MFP : bool or list of bool, optional
        As for :func:`profile_input_sizes`.
    n_sizes : int, optional
        Number of sizes (fewer if the valid sizes run out).
    max_size : int or tuple of int, optional
        Largest size per axis (default :data:`DEFAULT_MAX_SIZE`). If no valid size of an axis is
        that small, the smallest valid size is used.

    Returns
    -------
    list of tuple of int
        Input sizes ``(x, y)`` or ``(z, x, y)``, smallest first, without repeats.
    """
    n_dim = _n_dim(filters, poolings, max_size)
    mfp = _mfp_flags(MFP, poolings)
    calc = _calculator(filters, poolings, mfp, n_dim)
    limits = DEFAULT_MAX_SIZE[n_dim] if max_size is None else max_size
    limits = (int(limits),) * n_dim if np.ndim(limits) == 0 else tuple(int(m) for m in limits)
    if len(limits) != n_dim:
        raise ValueError(f"max_size needs {n_dim} entries, got {max_size!r}")
    valid = [[s for s in v if s <= m] or v[:1]
             for v, m in zip(calc.valid_inputs, limits, strict=True)]
    sizes = []
    for t in np.linspace(0.0, 1.0, max(int(n_sizes), 1)):
        size = []
        for v in valid:
            target = v[0] * (v[-1] / v[0]) ** t
            size.append(max(s for s in v if s <= target + 1e-9))
        if tuple(size) not in sizes:
            sizes.append(tuple(size))
    return sizes


def _build(size, filters, poolings, mfp, nof_filters, n_ch, n_lab, activation_func, seed):
    """The net for one input size: batch 1, forward pass only."""
    calc = _calculator(filters, poolings, mfp, len(size), desired_input=list(size))
    if tuple(calc.input) != tuple(size):
        raise ValueError(f"input size {tuple(size)} does not fit the architecture; the next "
                         f"valid one is {tuple(calc.input)}")
    cnn = MixedConvNN(size, input_depth=n_ch, batch_size=1, dimension_calc=calc, seed=seed)
    for n, f, p, m in zip(nof_filters, filters, poolings, mfp, strict=True):
        cnn.addConvLayer(n, f, p, activation_func, use_fragment_pooling=m)
    cnn.addConvLayer(n_lab, 1, 1, "linear", is_last_layer=True)
    cnn.compileOutputFunctions(target="nll", only_forward=True)
    return cnn


def _traced_peak(fn, *args):
    """Run ``fn(*args)``; return its result and the peak of traced allocations during it."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn(*args)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, max(peak, 0)


def profile_input_sizes(filters, poolings, n_ch=1, n_lab=2, MFP=False, activation_func="relu",
                        nof_filters=None, n_sizes=5, repeats=3, sizes=None, max_size=None,
                        seed=0, verbose=False):
    """Time the forward pass of an architecture for several input sizes.

    For each input size, the net (the given conv layers plus a 1×1 linear output layer with
    ``n_lab`` classes, batch size 1, no gradients) is built and compiled, and
    ``class_probabilities`` is called on random input: once to warm up, once to measure the
    memory and ``repeats`` times for the timing.

    Parameters
    ----------
    filters, poolings : list
        Filter size and pooling factor of each conv layer; an entry is an int or one int per
        axis (3-D in zxy order, e.g. ``[[1, 4, 4], [1, 3, 3], [3, 3, 3]]``).
    n_ch : int, optional
        Input channels.
    n_lab : int, optional
        Classes of the output layer.
    MFP : bool or list of bool, optional
        Max-fragment-pooling: ``True`` in every pooling layer, or one flag per layer.
    activation_func : str, optional
        Activation of the conv layers.
    nof_filters : int or list of int, optional
        Filters per layer (default 16 in every layer).
    n_sizes : int, optional
        Number of input sizes (see :func:`candidate_input_sizes`); ignored with ``sizes``.
    repeats : int, optional
        Timed passes per size; the median is reported.
    sizes : list of tuple of int, optional
        The input sizes to profile instead of the automatic choice; each must be valid.
    max_size : int or tuple of int, optional
        Largest input size per axis for the automatic choice.
    seed : int, optional
        Seed of the weights and of the random input.
    verbose : bool, optional
        Print a table row per size to stdout as it is measured, with a progress bar over the
        sizes on stderr.

    Returns
    -------
    list of dict
        One dict per size, smallest first, with the keys

        * ``input_size``: the input ``(x, y)`` or ``(z, x, y)``;
        * ``output_size``: spatial size of one pass's output (dense where MFP is on);
        * ``output_strides``: spacing of the output voxels in input voxels;
        * ``passes``: forward passes ``predictDense`` makes per tile (``prod(output_strides)``);
        * ``compile_s``: seconds to build and compile the net;
        * ``first_pass_s``: seconds of the first (warm-up) pass, which includes one-time work
          such as the JIT compilation of parts of the graph;
        * ``pass_s``: median seconds of one forward pass;
        * ``voxels_per_s``: output voxels per second, ``prod(output_size) / pass_s``. This is
          the dense prediction speed, with or without MFP: a tile takes ``passes`` passes and
          yields ``passes * prod(output_size)`` voxels;
        * ``peak_mem_mb``: the peak of memory allocated during one forward pass after the
          warm-up (MiB, measured with :mod:`tracemalloc`): the numpy buffers of the
          intermediate and output arrays (allocated by elektronn's Ops and PyTensor's C and
          Python thunks) and Python objects, on top of what existed before the pass (input,
          weights, buffers the compiled function keeps between calls). Memory that compiled
          code allocates outside numpy or on a device (e.g. the JAX backend on a GPU) is not
          seen.

    Raises
    ------
    ValueError
        For inconsistent arguments or an input size that does not fit the architecture.

    Notes
    -----
    A size that runs out of memory ends the profile (larger ones would too) with a warning;
    the sizes measured until then are returned.
    """
    filters, poolings = list(filters), list(poolings)
    if len(filters) != len(poolings) or not filters:
        raise ValueError(f"filters and poolings need one entry per layer, got {len(filters)} "
                         f"and {len(poolings)}")
    if sizes is not None:
        sizes = [tuple(int(s) for s in size) for size in sizes]
    _n_dim(filters, poolings, max_size, *(sizes or []))  # checks that the axes agree
    mfp = _mfp_flags(MFP, poolings)
    nof = [16] * len(filters) if nof_filters is None else nof_filters
    nof = [int(nof)] * len(filters) if np.ndim(nof) == 0 else [int(n) for n in nof]
    if len(nof) != len(filters):
        raise ValueError(f"nof_filters needs one entry per layer ({len(filters)}), got {nof}")
    if sizes is None:
        sizes = candidate_input_sizes(filters, poolings, mfp, n_sizes, max_size)
    rng = np.random.default_rng(seed)
    results = []
    if verbose:
        tqdm.write(format_table([]), file=sys.stdout)
    for size in tqdm(sizes, desc="Profiling", unit="size", disable=not verbose, leave=False):
        try:
            row = _profile_one(size, filters, poolings, mfp, nof, n_ch, n_lab,
                               activation_func, max(int(repeats), 1), seed, rng)
        except MemoryError:
            logger.warning("out of memory at input size %s: larger sizes skipped", size)
            break
        results.append(row)
        if verbose:
            tqdm.write(format_table([row], header=False), file=sys.stdout)
    return results


def _profile_one(size, filters, poolings, mfp, nof, n_ch, n_lab, activation_func, repeats,
                 seed, rng):
    t0 = time.perf_counter()
    cnn = _build(size, filters, poolings, mfp, nof, n_ch, n_lab, activation_func, seed)
    getattr(cnn.class_probabilities, "fn", None)  # compile now if compiling is deferred
    compile_s = time.perf_counter() - t0
    return dict(measure_forward(cnn, n_ch, repeats, rng), compile_s=compile_s)


def measure_forward(cnn, n_ch=1, repeats=3, rng=None):
    """Time the forward pass (``class_probabilities``) of a batch-1 image net on random input.

    Parameters
    ----------
    cnn : MixedConvNN
        A compiled 2-D or 3-D conv net of batch size 1 (or None).
    n_ch : int, optional
        Its input channels.
    repeats : int, optional
        Timed passes after a warm-up pass; the median is reported.
    rng : numpy.random.Generator, optional
        Source of the random input (default seeded with 0).

    Returns
    -------
    dict
        ``input_size``, ``output_size``, ``output_strides``, ``passes``, ``first_pass_s``,
        ``pass_s``, ``voxels_per_s`` and ``peak_mem_mb``, as described in
        :func:`profile_input_sizes`.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    size = tuple(int(s) for s in cnn.input_shape[2:]) if len(cnn.input_shape) == 4 else \
        (int(cnn.input_shape[1]),) + tuple(int(s) for s in cnn.input_shape[3:])
    shape = (1, n_ch) + size if len(size) == 2 else (1, size[0], n_ch) + size[1:]
    x = rng.random(shape, dtype=np.float32)
    t0 = time.perf_counter()
    cnn.class_probabilities(x)  # warm-up: one-time work of the first call
    first_pass_s = time.perf_counter() - t0
    _, peak = _traced_peak(cnn.class_probabilities, x)
    times = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        cnn.class_probabilities(x)
        times.append(time.perf_counter() - t0)
    pass_s = statistics.median(times)
    out = tuple(int(s) for s in cnn.output_shape[2:])  # class probabilities (bs, n_lab, ...)
    strides = [int(s) for s in cnn.output_strides]
    return {
        "input_size": size,
        "output_size": out,
        "output_strides": strides,
        "passes": int(np.prod(strides)),
        "first_pass_s": first_pass_s,
        "pass_s": pass_s,
        "voxels_per_s": float(np.prod(out)) / pass_s,
        "peak_mem_mb": peak / 2**20,
    }


def sweep_sizes(valid_inputs, n_sizes=6, max_size=None, anisotropic=False, n_z=3):
    """Input sizes to profile, from a calculator's valid inputs.

    ``x = y`` is spread geometrically over the valid sizes of both axes (up to ``max_size``).
    For 3-D nets ``z`` is ``x`` (the nearest valid size not above it) or, for anisotropic nets
    (ELEKTRONN 1.0's ``elektronn-profile``), the first valid z above ``x / 8.5`` (else the
    largest) and the valid sizes next to it, ``n_z`` in all.

    Parameters
    ----------
    valid_inputs : list of list of int
        Per axis (``(x, y)`` or ``(z, x, y)``), as ``CNNCalculator.valid_inputs``.
    n_sizes : int
        Number of ``x`` sizes.
    max_size : int or tuple of int, optional
        Largest size per axis (default :data:`DEFAULT_MAX_SIZE`).
    anisotropic : bool
        3-D only: choose z as described above.
    n_z : int
        3-D anisotropic only: z sizes per ``x``.

    Returns
    -------
    list of tuple of int
        Sorted by ``x``, then ``z``; without repeats.

    Examples
    --------
    >>> sweep_sizes([[5, 7, 9, 11], list(range(20, 200, 2)), list(range(20, 200, 2))],
    ...             n_sizes=2, max_size=(32, 100, 100), anisotropic=True, n_z=2)
    [(5, 20, 20), (7, 20, 20), (9, 100, 100), (11, 100, 100)]
    """
    n_dim = len(valid_inputs)
    limits = DEFAULT_MAX_SIZE[n_dim] if max_size is None else max_size
    limits = (int(limits),) * n_dim if np.ndim(limits) == 0 else tuple(int(m) for m in limits)
    if len(limits) != n_dim:
        raise ValueError(f"max_size needs {n_dim} entries, got {max_size!r}")
    xy = sorted(set(valid_inputs[-2]) & set(valid_inputs[-1]))
    xy = [v for v in xy if v <= min(limits[-2:])] or xy[:1]
    if not xy:
        raise ValueError("no input size is valid for both x and y")
    xs = []
    for t in np.linspace(0.0, 1.0, max(int(n_sizes), 1)):
        target = xy[0] * (xy[-1] / xy[0]) ** t
        x = max(v for v in xy if v <= target + 1e-9)
        if x not in xs:
            xs.append(x)
    if n_dim == 2:
        return [(x, x) for x in xs]
    zs = [v for v in valid_inputs[0] if v <= limits[0]] or list(valid_inputs[0][:1])
    sizes = []
    for x in xs:
        if not anisotropic:
            chosen = [max([z for z in zs if z <= x] or zs[:1])]
        else:  # ELEKTRONN 1.0's find_z, then its neighbours
            k = next((j for j, z in enumerate(zs) if z > int(x / 8.5)), len(zs) - 1)
            lo = max(0, min(k - (n_z - 1) // 2, len(zs) - n_z))
            chosen = zs[lo:lo + n_z]
        sizes += [(z, x, x) for z in chosen if (z, x, x) not in sizes]
    return sizes


_COLUMNS = (("input", 16), ("output", 16), ("passes", 6), ("compile[s]", 10), ("pass[s]", 10),
            ("MVox/s", 9), ("peak[MiB]", 10))


def format_table(results, header=True):
    """The results of :func:`profile_input_sizes` as a text table.

    Parameters
    ----------
    results : list of dict
        Rows to format.
    header : bool, optional
        Start with the column titles.

    Returns
    -------
    str
    """
    lines = ["  ".join(f"{name:>{w}}" for name, w in _COLUMNS)] if header else []
    for r in results:
        cells = ("x".join(map(str, r["input_size"])), "x".join(map(str, r["output_size"])),
                 str(r["passes"]), f"{r['compile_s']:.2f}", f"{r['pass_s']:.4g}",
                 f"{r['voxels_per_s'] / 1e6:.4g}", f"{r['peak_mem_mb']:.1f}")
        lines.append("  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=True)))
    return "\n".join(lines)
