"""Helpers of the training pipeline: history files, progress plots, h5 I/O, small utilities.

The subset of ELEKTRONN 1.0's ``trainutils`` that the port's
:class:`~elektronn.training.trainer.Trainer` uses. Every file is written atomically and
durably (:mod:`elektronn.atomicio`), so an interrupted run never leaves a half-written history
or plot. Plots are drawn with matplotlib's object API on
an Agg canvas: no display and no ``pyplot`` state are needed.

Also here for user scripts: :func:`pickleSave`/:func:`pickleLoad` (pickle files read with the
restricted reader of the parameter files), :func:`previewDiffPlot` (compare the preview
predictions of several trainings), :func:`timeit`, and ELEKTRONN 1.0's GPU helpers
:func:`get_free_gpu` and :func:`initGPU` (elektronn chooses its device through the backend,
see :func:`initGPU`). The console's ``pprintmenu`` lives in :mod:`elektronn.training.console`.
"""

import functools
import gzip
import importlib.util
import io
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np

from elektronn.atomicio import atomic_path, atomic_write

__all__ = ["atomic_write", "save_png", "import_variable_from_file", "xyz2zyx", "h5Save",
           "h5Load", "saveHist", "loadHist", "smooth_nll", "NLL_SMOOTHING_STEPS", "plotInfo",
           "plotInfoFromFiles", "HIST_NAMES",
           "pickleSave", "pickleLoad", "previewDiffPlot", "timeit", "get_free_gpu", "initGPU"]

logger = logging.getLogger("elektronn")

HIST_NAMES = ("history", "timeline", "errors", "CGtimeline")
"""The series :func:`saveHist` writes, as ``Backup/<name>.<series>.npy``."""


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


def save_png(fig, path, **kwargs):
    """Save a matplotlib figure as PNG, atomically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
    **kwargs
        Passed to ``fig.savefig``.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    atomic_write(path, buf.getvalue())


def import_variable_from_file(file_path, class_name):
    """Import the module ``file_path`` and return its attribute ``class_name``.

    Parameters
    ----------
    file_path : str or os.PathLike
        A Python file (executed: it is the user's own code).
    class_name : str

    Returns
    -------
    object
    """
    file_path = os.path.expanduser(os.fspath(file_path))
    name = Path(file_path).stem
    spec = importlib.util.spec_from_file_location(name, file_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def xyz2zyx(shapes):
    """Reorder ``[x, y, z]`` to ``[z, x, y]``; scalars (and entries of scalars) pass through.

    Parameters
    ----------
    shapes : int or list
        A shape or a list of shapes.

    Returns
    -------
    int or list

    Examples
    --------
    >>> xyz2zyx([[4, 4, 1], 2, [3, 3, 3]])
    [[1, 4, 4], 2, [3, 3, 3]]
    """
    def one(s):
        return [s[2], s[0], s[1]] if isinstance(s, list | tuple | np.ndarray) and len(s) == 3 \
            else s

    if isinstance(shapes, list | tuple) and shapes and isinstance(shapes[0], list | tuple | int):
        if all(not isinstance(s, list | tuple | np.ndarray) for s in shapes):
            return one(shapes)
        return [one(s) for s in shapes]
    return shapes


def h5Save(data, file_name, keys="None", compress=True):
    """Write one array or a list of arrays to an HDF5 file (lzf compressed), atomically.

    Parameters
    ----------
    data : ndarray or list of ndarray
    file_name : str or os.PathLike
    keys : str or list of str
        Dataset names (default ``'None'``, as ELEKTRONN 1.0; a list gets ``'None0'``, ...).
    compress : bool
    """
    arrays = data if isinstance(data, list | tuple) else [data]
    if isinstance(keys, str):
        keys = [keys] if len(arrays) == 1 else [f"{keys}{i}" for i in range(len(arrays))]
    path = Path(os.path.expanduser(os.fspath(file_name)))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, array in zip(keys, arrays, strict=True):
            f.create_dataset(key, data=array, compression="lzf" if compress else None)


def h5Load(file_name, keys=None):
    """Read datasets of an HDF5 file.

    Parameters
    ----------
    file_name : str or os.PathLike
    keys : str, list of str or None
        One name (the array is returned), several, or None (all datasets).

    Returns
    -------
    ndarray or list of ndarray
        A single array is returned unwrapped.
    """
    with h5py.File(os.path.expanduser(os.fspath(file_name)), "r") as f:
        if isinstance(keys, str):
            return f[keys][()]
        arrays = [f[k][()] for k in (list(f.keys()) if keys is None else keys)]
    return arrays[0] if len(arrays) == 1 else arrays


def saveHist(timeline, history, CG_timeline, errors, save_name, folder="."):
    """Write the training series to ``<folder>/Backup/<save_name>.<series>.npy`` (atomic).

    Parameters
    ----------
    timeline : list or ndarray
        Rows ``[step, seconds, smoothed NLL, NLL, batch mean label]``.
    history : list or ndarray
        Rows ``[step, seconds, smoothed NLL, NLL, train NLL, valid NLL, NLL gain, LR]``.
    CG_timeline : list or ndarray
        The net's conjugate-gradient records (may be empty).
    errors : list or ndarray
        Rows ``[step, seconds, train error, valid error]``.
    save_name : str
    folder : str or os.PathLike
        The training folder (ELEKTRONN 1.0 used the current directory).
    """
    backup = Path(folder) / "Backup"
    backup.mkdir(parents=True, exist_ok=True)
    for name, series in zip(HIST_NAMES, (history, timeline, errors, CG_timeline), strict=True):
        atomic_write(backup / f"{save_name}.{name}.npy", _npy_bytes(series))


def loadHist(save_name, folder="."):
    """Read the series :func:`saveHist` wrote.

    Returns
    -------
    dict
        ``{series: list of rows}`` for every file that exists (missing ones are empty).
    """
    backup = Path(folder) / "Backup"
    out = {}
    for name in HIST_NAMES:
        path = backup / f"{save_name}.{name}.npy"
        out[name] = np.load(path, allow_pickle=False).tolist() if path.exists() else []
    return out


NLL_SMOOTHING_STEPS = 50
"""Time constant (steps) of the smoothed NLL the trainer logs and plots."""


def smooth_nll(smoothed, nll, step):
    """The smoothed training NLL after ``step``: an average that starts at the first value.

    The mean of all values up to step :data:`NLL_SMOOTHING_STEPS`, then an exponential
    moving average with that time constant (ELEKTRONN 1.0 started at a fixed 0.65 and averaged
    over about 200 steps, which lagged far behind a fast-falling loss).

    Parameters
    ----------
    smoothed : float
        The value after the previous step (ignored at step 0).
    nll : float
        The loss of this step.
    step : int
        The step, counted from 0 over the whole (also resumed) training.

    Examples
    --------
    >>> s = 0.0
    >>> for step, nll in enumerate([1.0, 0.5, 0.0]):
    ...     s = smooth_nll(s, nll, step)
    >>> s
    0.5
    """
    weight = max(1.0 / (step + 1), 1.0 / NLL_SMOOTHING_STEPS)
    return (1 - weight) * smoothed + weight * float(nll)


def _SMA(c, n):
    """Simple moving average of ``c`` over ``n`` points (``len(c) - n + 1`` values)."""
    c = np.asarray(c, dtype=float)
    if len(c) < n:
        return c[:0]
    cs = np.cumsum(np.insert(c, 0, 0.0))
    return (cs[n:] - cs[:-n]) / n


def _subsample(a, n=2000):
    a = np.asarray(a, dtype=float)
    step = max(1, len(a) // n)
    return a[::step]


def _figure(n_rows):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4 * n_rows))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(n_rows, 1, k + 1) for k in range(n_rows)]


def plotInfo(timeline, history, CG_timeline, errors, save_name, autoscale=True, folder="."):
    """Save the history (:func:`saveHist`) and draw the progress plots (PNG).

    Writes ``<save_name>.timeline.png`` (update NLL and its smoothed value over time, NLL
    against the batch mean label), ``<save_name>.history.png`` (smoothed, train and valid NLL;
    NLL gain and learning rate), ``<save_name>.Errors.png`` (train and valid error with an
    8-point moving average) and, with CG data, ``<save_name>.CGtimeline.png``. Times are
    shown in minutes; every series is subsampled to about 2000 points. Too little data to plot
    is logged, not raised.

    Parameters
    ----------
    timeline, history, CG_timeline, errors, save_name
        As :func:`saveHist`.
    autoscale : bool
        Let matplotlib scale the NLL axes (False: clip them to ``[0, 2 * median]``).
    folder : str or os.PathLike
        Where the plots and ``Backup`` go.
    """
    saveHist(timeline, history, CG_timeline, errors, save_name, folder)
    folder = Path(folder)
    try:
        _plot_timeline(np.asarray(timeline, float), save_name, folder, autoscale)
        _plot_history(np.asarray(history, float), np.asarray(timeline, float), save_name,
                      folder, autoscale)
        _plot_errors(np.asarray(errors, float), save_name, folder)
        if len(CG_timeline):
            _plot_cg(np.asarray(CG_timeline, float), save_name, folder)
    except (ValueError, IndexError) as e:
        logger.warning("plotInfo: not enough data to plot (%s)", e)


def _clip(ax, values, autoscale):
    if not autoscale and len(values):
        ax.set_ylim(0, 2 * np.median(values) + 1e-6)


_FEW_POINTS = 60  # series with at most this many points get markers


def _style(n, marker):
    """Line keywords: markers on short series (a single point is visible too)."""
    return dict(marker=marker, markersize=5) if n <= _FEW_POINTS else {}


def _steps_axis(ax, steps):
    """A top axis with the steps (approximately linear in time)."""
    top = ax.twiny()
    top.set_xlim(steps[0], max(steps[-1], steps[0] + 1))
    top.set_xlabel("steps")


def _plot_timeline(tl, save_name, folder, autoscale):
    tl = _subsample(tl)
    fig, (ax, ax2) = _figure(2)
    t = tl[:, 1] / 60
    ax.plot(t, tl[:, 3], "b-", lw=0.5, label="update NLL", **_style(len(tl), "."))
    ax.plot(t, tl[:, 2], "k-", lw=2, label=f"smoothed NLL (~{NLL_SMOOTHING_STEPS} steps)")
    _clip(ax, tl[:, 3], autoscale)
    ax.set_xlabel("time [min]")
    ax.set_ylabel("NLL")
    ax.legend(loc="upper right")
    _steps_axis(ax, tl[:, 0])
    sc = ax2.scatter(tl[:, 4], tl[:, 3], c=tl[:, 0], s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax2, label="step")
    ax2.set_xlabel("batch mean label")
    ax2.set_ylabel("NLL")
    save_png(fig, folder / f"{save_name}.timeline.png", bbox_inches="tight")


def _plot_history(hi, tl, save_name, folder, autoscale):
    fig = _history_figure(hi, tl, autoscale)
    save_png(fig, folder / f"{save_name}.history.png", bbox_inches="tight")


def _history_figure(hi, tl, autoscale=True):
    """History plot: smoothed, batch, train and valid NLL; NLL gain and learning rate."""
    hi = _subsample(hi)
    fig, (ax, ax2) = _figure(2)
    t = hi[:, 1] / 60
    if len(tl):
        tl = _subsample(tl)
        ax.plot(tl[:, 1] / 60, tl[:, 3], "-", color="0.75", lw=0.5, label="batch NLL (per step)")
        ax.plot(tl[:, 1] / 60, tl[:, 2], "k-", lw=1.5,
                label=f"smoothed NLL (~{NLL_SMOOTHING_STEPS} steps)")
    else:
        ax.plot(t, hi[:, 2], "k-", lw=1.5, label="smoothed NLL", **_style(len(hi), "."))
    ax.plot(t, hi[:, 5], "r-", lw=1.5, label="valid NLL", **_style(len(hi), "s"))
    ax.plot(t, hi[:, 4], "g--", lw=1.5, label="train NLL", **_style(len(hi), "o"))
    _clip(ax, hi[:, 2], autoscale)
    ax.set_ylabel("NLL")
    ax.set_xlabel("time [min]")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    ax2.sharex(ax)  # the same time range in both panels
    gain = ax2.plot(t, hi[:, 6], "b-", label="NLL gain per update", **_style(len(hi), "o"))
    ax2.axhline(0, color="0.6", lw=0.8)
    ax2.set_ylabel("NLL gain (loss after - before the step)")
    ax2.set_xlabel("time [min]")
    lr = ax2.twinx()
    rate = lr.plot(t, hi[:, 7], "m-", label="learning rate (right axis)", drawstyle="steps-post",
                   **_style(len(hi), "^"))
    lr.set_ylabel("learning rate")
    ax2.legend(handles=gain + rate, loc="upper right")
    return fig


def _plot_errors(er, save_name, folder):
    er = _subsample(er)
    fig, (ax,) = _figure(1)
    er = er[2:] if len(er) > 4 else er
    t = er[:, 1] / 60
    ax.plot(t, er[:, 2], "g--", lw=0.7, label="train error", **_style(len(er), "o"))
    ax.plot(t, er[:, 3], "r--", lw=0.7, label="valid error", **_style(len(er), "s"))
    for col, style, name in ((2, "g-", "train"), (3, "r-", "valid")):
        sma = _SMA(er[:, col], 8)
        if len(sma):
            ax.plot(t[7:], sma, style, lw=2, label=f"{name} error, 8-point average")
    ax.set_xlabel("time [min]")
    ax.set_ylabel("error [%] (MSE for regression)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    save_png(fig, folder / f"{save_name}.Errors.png", bbox_inches="tight")


def _plot_cg(cg, save_name, folder):
    fig, (ax, ax2) = _figure(2)
    ax.plot(cg[:, 0], "b-", label="CG NLL")
    ax.set_ylabel("NLL")
    if cg.shape[1] > 2:
        ax2.scatter(cg[:, 2], cg[:, 1], s=4)
        ax2.set_xlabel("coefficient")
        ax2.set_ylabel("step size")
    save_png(fig, folder / f"{save_name}.CGtimeline.png", bbox_inches="tight")


def plotInfoFromFiles(path, save_name, autoscale=True):
    """Redraw the plots of a training folder from its history files.

    Reads ``<path>/Backup/<save_name>.<series>.npy`` (docs/differences.md, T12 fixed: the CG
    series is read
    from ``.CGtimeline.npy``, the name :func:`saveHist` writes) and writes the plots to
    ``path``.
    """
    hist = loadHist(save_name, path)
    plotInfo(hist["timeline"], hist["history"], hist["CGtimeline"], hist["errors"],
             save_name, autoscale, folder=path)


# --- pickle files ------------------------------------------------------------------------------


def pickleSave(data, file_name):
    """Write objects to a pickle file (protocol 2, one pickle per item), atomically.

    Parameters
    ----------
    data : object, list or tuple
        One object, or a list/tuple whose items are written one after the other (ELEKTRONN
        1.0 split anything with a length, arrays and strings included; here only lists and
        tuples are split). Only what :func:`pickleLoad` reads back may be written: numpy
        arrays/dtypes/scalars, numbers, strings, ``None``, lists and tuples.
    file_name : str or os.PathLike

    Raises
    ------
    ValueError
        If ``data`` holds anything else (nothing is written then).

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.pkl")
    >>> pickleSave([np.arange(3), "label"], path)
    >>> pickleLoad(path)
    [array([0, 1, 2]), 'label']
    """
    from elektronn.net.paramfile import ParameterFileError, write_param_file

    objects = list(data) if isinstance(data, list | tuple) else [data]
    path = os.path.expanduser(os.fspath(file_name))
    try:
        write_param_file(path, objects)
    except ParameterFileError as e:
        raise ValueError(f"pickleSave({path!r}): {str(e).split(': ', 1)[-1]}") from None


def pickleLoad(file_name):
    """Read every object of a pickle file (gzipped or not) with a restricted reader.

    The reader of the parameter files: it builds numpy arrays/dtypes/scalars, numbers,
    strings, lists and tuples and refuses anything else before it is executed, so a file
    cannot run code. Python 2 pickles (ELEKTRONN 1.0's) are read with latin-1 strings.

    Parameters
    ----------
    file_name : str or os.PathLike

    Returns
    -------
    object or list
        The single object, or the list of all objects in file order.

    Raises
    ------
    ValueError
        If the file is not a pickle stream or holds refused types.
    """
    from elektronn.net.paramfile import read_pickles

    path = os.path.expanduser(os.fspath(file_name))
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
        objects = read_pickles(f, path)
    return objects[0] if len(objects) == 1 else objects


# --- comparing previews ------------------------------------------------------------------------


def _preview_file(folder, name, block_name, c, z, number):
    """The preview PNG of a training for the hour mark ``number`` (any float spelling)."""
    pattern = f"{name}-pred-{block_name}-c{c}-z{z}-*hrs.png"
    for path in sorted(folder.glob(pattern)):
        mark = path.name[len(pattern) - len("*hrs.png"):-len("hrs.png")]
        try:
            if np.isclose(float(mark), float(number)):
                return path
        except ValueError:
            continue
    found = sorted(p.name for p in folder.glob(f"{name}-pred-*.png"))
    raise FileNotFoundError(f"no preview {pattern.replace('*', str(number))} in {folder}; "
                            f"there are: {', '.join(found) or 'none'}")


def _gray(path):
    import matplotlib.image

    img = matplotlib.image.imread(path).astype(np.float32)
    img = img[..., 0] if img.ndim == 3 else img
    return img / 255 if img.max() > 1 else img


def previewDiffPlot(names, root_dir="~/CNN_Training/3D", block_name=0, c=1, z=0, number=1,
                    save=True):
    """Compare the preview predictions of several trainings pairwise, as RGB images.

    For every pair of trainings the two preview slices (cropped to a common centre) become
    one image: green the first, blue the second, red their minimum, so agreement is grey-white
    and disagreement green or blue.

    Parameters
    ----------
    names : list of str
        Save names of the trainings; each one's previews are in ``root_dir/<name>/``.
    root_dir : str or os.PathLike
        The folder holding the training folders.
    block_name : int or str
        The preview cube (``-pred-<block_name>-`` in the file names).
    c : int
        The class.
    z : int
        The z-slice.
    number : float
        The hour mark of the preview (``-<number>hrs.png``).
    save : bool
        Write ``<a>_vs_<b>_pred-...png`` per pair and ``Compare_pred-...png`` with all pairs
        into ``root_dir``.

    Returns
    -------
    dict
        ``{(name_a, name_b): rgb image (x, y, 3) float32 in [0, 1]}``.

    Raises
    ------
    FileNotFoundError
        If a preview is missing (the message lists the previews there are).
    """
    import matplotlib.image

    root = Path(os.path.expanduser(os.fspath(root_dir)))
    if len(names) < 2:
        raise ValueError(f"previewDiffPlot compares at least two trainings, got {names!r}")
    images = {n: _gray(_preview_file(root / n, n, block_name, c, z, number)) for n in names}
    tag = f"pred-{block_name}-c{c}-z{z}-{number}hrs"
    diffs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shape = np.minimum(images[a].shape, images[b].shape)
            pa, pb = (_center_crop(images[n], shape) for n in (a, b))
            diffs[(a, b)] = np.dstack([np.minimum(pa, pb), pa, pb]).clip(0, 1)
    if save:
        for (a, b), rgb in diffs.items():
            buf = io.BytesIO()
            matplotlib.image.imsave(buf, rgb, format="png")
            atomic_write(root / f"{a}_vs_{b}_{tag}.png", buf.getvalue())
        n = len(diffs)
        cols = int(np.ceil(np.sqrt(n * 16 / 9)))
        rows = int(np.ceil(n / cols))
        fig, _ = _figure(0)
        fig.set_size_inches(16, 9)
        for k, ((a, b), rgb) in enumerate(diffs.items()):
            ax = fig.add_subplot(rows, cols, k + 1)
            ax.imshow(rgb, interpolation="none")
            ax.set_title(f"{a} (green) vs. {b} (blue)")
        save_png(fig, root / f"Compare_{tag}.png", bbox_inches="tight")
    return diffs


def _center_crop(img, shape):
    off = [(s - t) // 2 for s, t in zip(img.shape, shape, strict=True)]
    return img[off[0]:off[0] + shape[0], off[1]:off[1] + shape[1]]


# --- timing -------------------------------------------------------------------------------------


def timeit(foo=None, n=1, show=True):
    """Decorator that runs a function ``n`` times per call and reports the mean runtime.

    Parameters
    ----------
    foo : callable
        The function (``@timeit`` or ``timeit(f, n=10)``; ``@timeit(n=10)`` also works).
    n : int
        Runs per call; the result of the last run is returned.
    show : bool
        Print ``"<name>: <seconds> s"`` (as ELEKTRONN 1.0 did); the time is also kept in
        the wrapper's attribute ``last_time``.

    Returns
    -------
    callable

    Examples
    --------
    >>> f = timeit(sum, n=3, show=False)
    >>> f([1, 2, 3]), f.last_time >= 0
    (6, True)
    """
    if foo is None:
        return functools.partial(timeit, n=n, show=show)
    n = max(int(n), 1)

    @functools.wraps(foo)
    def decorated(*args, **kwargs):
        t0 = time.perf_counter()
        for _ in range(n):
            ret = foo(*args, **kwargs)
        decorated.last_time = (time.perf_counter() - t0) / n
        if show:
            print(f"{getattr(foo, '__name__', foo)!s}: {decorated.last_time:.4g} s"
                  + (f" (mean of {n})" if n > 1 else ""))
        return ret

    decorated.last_time = None
    return decorated


# --- GPUs ---------------------------------------------------------------------------------------

_DEVICE_NOTE = ("elektronn does not switch devices itself: the backend chooses the device. "
                "Use the JAX mode (ELEKTRONN_MODE=jax or elektronn.backend.set_mode('jax'), "
                "with a CUDA build of jaxlib) and select the GPU with CUDA_VISIBLE_DEVICES=<n> "
                "before starting Python; the other modes run on the CPU")


def _nvidia_smi(*args):
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def get_free_gpu(wait=0, nb_gpus=-1):
    """The number of a GPU that no process uses (ELEKTRONN 1.0, via ``nvidia-smi``).

    The number is for ``CUDA_VISIBLE_DEVICES`` (see :func:`initGPU`); elektronn does not
    select a device itself.

    Parameters
    ----------
    wait : float
        Seconds to keep looking (every 10 s) while all GPUs are busy.
    nb_gpus : int
        Number of GPUs to consider (-1: all that ``nvidia-smi -L`` lists).

    Returns
    -------
    int
        The GPU number, or -1 if none is free or ``nvidia-smi`` is not available.
    """
    listing = _nvidia_smi("-L")
    if listing is None:
        logger.info("get_free_gpu: nvidia-smi is not available")
        return -1
    count = len(re.findall(r"^GPU \d+", listing, flags=re.M))
    count = count if nb_gpus < 0 else min(count, int(nb_gpus))
    deadline = time.monotonic() + wait
    while True:
        for k in range(count):
            pids = _nvidia_smi("-i", str(k), "-q", "-d", "PIDS") or ""
            if re.search(r"No running|Processes\s*:\s*None", pids):
                return k
        if time.monotonic() >= deadline:
            return -1
        time.sleep(min(10.0, max(deadline - time.monotonic(), 0.0)))


def initGPU(gpu):
    """ELEKTRONN 1.0's GPU selection; here it only explains how the device is chosen.

    Theano switched to ``gpu<n>`` here. elektronn compiles through its backend
    (:mod:`elektronn.backend`): the CPU modes, or the JAX mode, which uses the GPUs JAX sees;
    select one with ``CUDA_VISIBLE_DEVICES`` before starting Python.

    Parameters
    ----------
    gpu : None, False, int or 'auto'
        None/False: nothing to do. Anything else is logged with the explanation.

    Returns
    -------
    None
    """
    if gpu in (None, False):
        return
    if gpu == "auto":
        free = get_free_gpu()
        gpu = f"auto (free GPU: {free})" if free >= 0 else "auto (no free GPU found)"
    logger.warning("initGPU(%s): %s.", gpu, _DEVICE_NOTE)
