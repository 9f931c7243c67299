"""Non-image data sets: the :class:`Data` base, :class:`BalancedData` and :class:`MNISTData`.

A data set holds ``train_d``/``train_l``, ``valid_d``/``valid_l`` and (optionally)
``test_d``/``test_l`` as numpy arrays and hands out batches with
``getbatch(batch_size, source='train')``: training batches walk through a random permutation
of the training set, validation and test batches are the first ``batch_size`` examples.

Random numbers
--------------
Each data set has its own generator ``rng`` (``numpy.random.default_rng``), seeded with the
``seed`` argument (``None``: fresh entropy from the operating system). Within one process a
given seed reproduces the batch sequence. A forked worker process (e.g. one that prefetches
batches) notices the new process id at its next ``getbatch``, switches to a stream derived
from the seed and its id and starts a new epoch, so that workers do not repeat each other's
batches (ELEKTRONN 1.0 forgot this for these classes, docs/differences.md, T5).

MNIST
-----
:func:`load_mnist` reads MNIST from ``mnist.pkl.gz`` (the pickle of deeplearning.net that
ELEKTRONN 1.0 downloaded from ``http://www.elektronn.org/downloads/mnist.pkl.gz``; it is read
with a restricted unpickler that only builds numpy arrays, so a file cannot run code) or from
the four IDX files of the MNIST web page; see :func:`find_mnist` for where the files are looked
for. ``MNISTData(path=None)`` (and :func:`load_mnist`) download the IDX files into
:func:`default_mnist_dir` on first use (:func:`download_mnist`: progress bar, MD5 checksums,
atomic writes), unless ``$ELEKTRONN_MNIST`` names the data.
"""

import gzip
import hashlib
import logging
import os
import re
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from elektronn import backend
from elektronn.atomicio import atomic_path
from elektronn.net.paramfile import read_pickles

__all__ = [
    "Data",
    "BalancedData",
    "MNISTData",
    "load_mnist",
    "find_mnist",
    "download_mnist",
    "mnist_download_url",
    "default_mnist_dir",
    "sort_human",
    "MNIST_ENV_VAR",
    "MNIST_PICKLE_NAMES",
    "MNIST_IDX_NAMES",
    "MNIST_URL_ENV_VAR",
    "MNIST_DOWNLOAD_URL",
    "MNIST_DOWNLOAD_FILES",
]

logger = logging.getLogger("elektronn")

MNIST_ENV_VAR = "ELEKTRONN_MNIST"
"""Environment variable naming the MNIST file or directory when no ``path`` is given."""

MNIST_PICKLE_NAMES = ("mnist.pkl.gz", "mnist.pkl")
"""File names of the MNIST pickle looked for in a directory, in this order."""

MNIST_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four IDX files (each also accepted with ``.gz``): training images and labels, test
images and labels."""

_MNIST_URL = "http://www.elektronn.org/downloads/mnist.pkl.gz"  # ELEKTRONN 1.0's (gone)

MNIST_DOWNLOAD_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
"""Where :func:`download_mnist` gets the files from (a folder URL; the mirror of the MNIST IDX
files that torchvision uses). ``$ELEKTRONN_MNIST_URL`` overrides it."""

MNIST_URL_ENV_VAR = "ELEKTRONN_MNIST_URL"
"""Environment variable with another folder URL to download the MNIST files from."""

MNIST_DOWNLOAD_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
"""The files :func:`download_mnist` fetches and their MD5 checksums (the published ones)."""
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def sort_human(file_names):
    """Sort a list of strings in place so that embedded numbers sort numerically.

    Examples
    --------
    >>> names = ["x10", "x9", "x100"]
    >>> sort_human(names)
    >>> names
    ['x9', 'x10', 'x100']
    """
    def key(name):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    file_names.sort(key=key)


# --- Data ----------------------------------------------------------------------------------------


class Data:
    """Base of the non-image data sets.

    Subclasses set ``train_d``, ``train_l``, ``valid_d``, ``valid_l`` (and ``test_d``,
    ``test_l``) as numpy arrays with the examples on the first axis, then call
    ``Data.__init__``.

    Parameters
    ----------
    n_lab : int, optional
        Number of classes (default: the number of distinct training labels).
    seed : int, optional
        Seed of :attr:`rng` (see the module notes on random numbers).

    Attributes
    ----------
    n_lab : int
    example_shape : tuple of int
        Shape of one training example.
    n_ch : int
        ``example_shape[0]`` (the channel count of images).
    rng : numpy.random.Generator
        The generator of this data set (permutations, augmentation).
    """

    def __init__(self, n_lab=None, seed=None):
        self._seed = np.random.SeedSequence(seed)
        self.rng = np.random.default_rng(self._seed)
        self._pid = os.getpid()
        self._training_count = len(self.train_d)
        self.n_lab = int(np.unique(self.train_l).size if n_lab is None else n_lab)
        self.example_shape = self.train_d[0].shape
        self.n_ch = self.example_shape[0]
        self._pos = 0
        self._perm = self.rng.permutation(self._training_count)
        logger.info("%r", self)

    def _reseed(self):
        """In a new process: switch to a stream of the seed and the process id, new epoch.

        Returns
        -------
        bool
            Whether the process was new.
        """
        pid = os.getpid()
        if pid == self._pid:
            return False
        self._pid = pid
        self.rng = np.random.default_rng(
            np.random.SeedSequence(self._seed.entropy, spawn_key=(pid,)))
        self._pos = 0
        self._perm = self.rng.permutation(self._training_count)
        logger.info("Reseeding RNG in Process with PID: %i", pid)
        return True

    def __repr__(self):
        return (f"{self.n_lab}-class Data Set: #training examples: {self._training_count} "
                f"and #validing: {len(self.valid_d)}")

    def getbatch(self, batch_size, source="train"):
        """A batch of examples and labels.

        Parameters
        ----------
        batch_size : int
            Number of examples.
        source : {'train', 'valid', 'test'}
            ``'train'``: the next ``batch_size`` examples of a random permutation of the
            training set; when the permutation has fewer left, a new one is drawn (the rest
            of the old one is skipped). ``'valid'``/``'test'``: the first ``batch_size``
            examples of that set (fewer if the set is smaller).

        Returns
        -------
        data, labels : numpy.ndarray
        """
        self._reseed()
        if source == "train":
            if self._pos + batch_size > self._training_count:
                self._perm = self.rng.permutation(self._training_count)
                self._pos = 0
            index = self._perm[self._pos:self._pos + batch_size]
            self._pos += batch_size
            return self.train_d[index], self.train_l[index]
        if source in ("valid", "test"):
            return (getattr(self, f"{source}_d")[:batch_size],
                    getattr(self, f"{source}_l")[:batch_size])
        raise ValueError(f"source must be 'train', 'valid' or 'test', got {source!r}")

    def createSplitPerm(self, size, subset_ratio=0.8, seed=None):
        """The first ``int(size * subset_ratio)`` entries of a random permutation of ``size``.

        ``seed`` None draws from :attr:`rng`, an int from a generator seeded with it.
        """
        rng = self.rng if seed is None else np.random.default_rng(seed)
        return rng.permutation(size)[:int(size * subset_ratio)]

    def createCVSplit(self, data, label, n_folds=3, use_fold=2, shuffle=False,
                      random_state=None):
        """Set the training and validation sets to a k-fold cross-validation split.

        Fold ``use_fold`` of ``n_folds`` contiguous folds (of the examples shuffled with
        ``numpy.random.RandomState(random_state)`` if ``shuffle``) becomes the validation set,
        the rest, in their original order, the training set; the first ``len % n_folds`` folds
        are one example larger. This is the split of scikit-learn's old ``KFold`` that
        ELEKTRONN 1.0 used, computed without scikit-learn.
        """
        n = len(data)
        if not 0 <= use_fold < n_folds <= n:
            raise ValueError(f"need 0 <= use_fold < n_folds <= {n} examples, got use_fold="
                             f"{use_fold}, n_folds={n_folds}")
        order = np.arange(n)
        if shuffle:
            np.random.RandomState(random_state).shuffle(order)
        sizes = np.full(n_folds, n // n_folds)
        sizes[:n % n_folds] += 1
        start = sizes[:use_fold].sum()
        valid = order[start:start + sizes[use_fold]]
        train = np.setdiff1d(np.arange(n), valid)
        self.valid_d, self.valid_l = data[valid], label[valid]
        self.train_d, self.train_l = data[train], label[train]

    def splitData(self, data, label, valid_size, split_no=0):
        """Split off ``valid_size`` random examples as the validation set.

        The permutation comes from ``numpy.random.RandomState(split_no)``, as in ELEKTRONN
        1.0, so a split number gives the same split there and here.
        """
        perm = np.random.RandomState(split_no).permutation(len(data))
        self.valid_d, self.valid_l = data[perm[:valid_size]], label[perm[:valid_size]]
        self.train_d, self.train_l = data[perm[valid_size:]], label[perm[valid_size:]]

    def makeExampleSubset(self, subset_ratio=0.8, seed=None):
        """Keep a random ``subset_ratio`` of the training examples."""
        index = self.createSplitPerm(len(self.train_d), subset_ratio, seed)
        self.train_d, self.train_l = self.train_d[index], self.train_l[index]
        self._training_count = len(self.train_d)
        self._pos = 0
        self._perm = self.rng.permutation(self._training_count)

    def makeFeatureSubset(self, subset_ratio=0.8, seed=None):
        """Keep a random ``subset_ratio`` of the features (axis 1) in every set."""
        index = self.createSplitPerm(self.train_d.shape[1], subset_ratio, seed)
        for name in ("train_d", "valid_d", "test_d"):
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name)[:, index])


class BalancedData(Data):
    """A data set whose training batches can hold every class equally often.

    ``getbatch(batch_size, balanced=True)`` returns ``batch_size // n_lab`` examples of each
    class (labels ``0 .. n_lab-1``), sorted by class; the remaining ``batch_size % n_lab``
    examples come from as many randomly chosen classes, one each (ELEKTRONN 1.0 left those
    rows uninitialised, docs/differences.md, T14). Each class is walked through its own random
    permutation.
    """

    def __init__(self, n_lab=None, seed=None):
        super().__init__(n_lab, seed)
        self._class_perms = None

    def getbatch(self, batch_size, source="train", balanced=False):
        """As :meth:`Data.getbatch`; ``balanced=True`` draws a class-balanced training batch."""
        if not balanced:
            return super().getbatch(batch_size, source)
        if source != "train":
            raise ValueError("balanced batches are drawn from the training set only")
        if self._reseed() or self._class_perms is None:
            self._init_balanced()
        counts = np.full(self.n_lab, batch_size // self.n_lab)
        counts[self.rng.choice(self.n_lab, batch_size % self.n_lab, replace=False)] += 1
        index = np.concatenate([self._take(k, n) for k, n in enumerate(counts)])
        return self.train_d[index], self.train_l[index]

    def _init_balanced(self):
        members = [np.flatnonzero(self.train_l == k) for k in range(self.n_lab)]
        empty = [k for k, m in enumerate(members) if not m.size]
        if empty:
            raise ValueError(f"balanced batches need examples of every class 0..{self.n_lab - 1}"
                             f"; the training set has none of class(es) {empty}")
        self._class_members = members
        self._class_perms = [self.rng.permutation(m) for m in members]
        self._class_pos = [0] * self.n_lab

    def _take(self, k, n):
        """The next ``n`` training indices of class ``k`` (new permutations as needed)."""
        parts = []
        while n > 0:
            perm, pos = self._class_perms[k], self._class_pos[k]
            part = perm[pos:pos + n]
            parts.append(part)
            n -= len(part)
            pos += len(part)
            if pos == len(perm):
                self._class_perms[k] = self.rng.permutation(self._class_members[k])
                pos = 0
            self._class_pos[k] = pos
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)


# --- MNIST files ---------------------------------------------------------------------------------


def default_mnist_dir():
    """The directory ELEKTRONN 1.0 kept ``mnist.pkl.gz`` in.

    ``%APPDATA%\\ELEKTRONN`` on Windows, ``~/.ELEKTRONN`` elsewhere.
    """
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", Path.home())) / "ELEKTRONN"
    return Path.home() / ".ELEKTRONN"


def _not_found(location, why):
    return FileNotFoundError(
        f"MNIST data not found: {why}.\n"
        "Provide one of:\n"
        f"  (a) the pickle 'mnist.pkl.gz' (or 'mnist.pkl'): ((train_x, train_y), (valid_x, "
        "valid_y), (test_x, test_y)) with x float32 (N, 784) in [0, 1] and integer labels, as "
        f"deeplearning.net and ELEKTRONN 1.0 ({_MNIST_URL}) distributed it;\n"
        f"  (b) the four IDX files of the MNIST web page: {', '.join(MNIST_IDX_NAMES)} (each "
        "may end in '.gz'); the last 10000 training images become the validation set by "
        "default.\n"
        "Then either pass the file or its directory as MNISTData(path=...), or set the "
        f"environment variable {MNIST_ENV_VAR} to the file or directory, or put the file(s) in "
        f"{default_mnist_dir()}.\n"
        f"Looked in: {location}")


def _idx_files(directory):
    """``(paths, missing)``: the IDX files found in ``directory`` (plain or ``.gz``) and the
    names of those that are not there."""
    found, missing = [], []
    for name in MNIST_IDX_NAMES:
        paths = [directory / name, directory / f"{name}.gz"]
        hit = next((p for p in paths if p.is_file()), None)
        (found if hit else missing).append(hit or name)
    return found, missing


def find_mnist(path=None):
    """Locate the MNIST data.

    Only one location is consulted: ``path`` if given, else the environment variable
    ``ELEKTRONN_MNIST`` if set, else :func:`default_mnist_dir`. A file there is read as the
    MNIST pickle (an IDX file stands for its directory). A directory must hold
    ``mnist.pkl.gz`` or ``mnist.pkl`` (preferred) or all four IDX files.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A file or directory (``~`` is expanded).

    Returns
    -------
    kind : {'pickle', 'idx'}
    files : list of pathlib.Path
        The pickle, or the four IDX files in the order of :data:`MNIST_IDX_NAMES`.

    Raises
    ------
    FileNotFoundError
        If nothing usable is there; the message says which files to put where.
    """
    if path is not None:
        location = Path(os.fspath(path)).expanduser()
    elif backend.environ(MNIST_ENV_VAR):
        location = Path(backend.environ(MNIST_ENV_VAR)).expanduser()
    else:
        location = default_mnist_dir()
    if location.is_file():
        if location.name.removesuffix(".gz") not in MNIST_IDX_NAMES:
            return "pickle", [location]
        location = location.parent
    if not location.is_dir():
        raise _not_found(location, f"{location} does not exist")
    for name in MNIST_PICKLE_NAMES:
        if (location / name).is_file():
            return "pickle", [location / name]
    found, missing = _idx_files(location)
    if missing and len(missing) < len(MNIST_IDX_NAMES):
        raise _not_found(location, f"the IDX files {', '.join(missing)} are missing in "
                                   f"{location}")
    if missing:
        raise _not_found(location, f"{location} holds neither mnist.pkl.gz nor the IDX files")
    return "idx", found


def mnist_download_url():
    """The folder URL the MNIST files are downloaded from (ends with ``/``).

    ``$ELEKTRONN_MNIST_URL`` if set, else :data:`MNIST_DOWNLOAD_URL`.
    """
    url = backend.environ(MNIST_URL_ENV_VAR) or MNIST_DOWNLOAD_URL
    return url if url.endswith("/") else url + "/"


def _fetch(url, target, md5, show_progress):
    """Download ``url`` to ``target`` (atomic), checking its MD5 checksum on the way."""
    from tqdm.auto import tqdm

    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (http(s) only)
        total = int(response.headers.get("Content-Length") or 0) or None
        with atomic_path(target) as tmp, open(tmp, "wb") as f, \
                tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                     disable=not show_progress, leave=False) as bar:
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                f.write(chunk)
                bar.update(len(chunk))
            if digest.hexdigest() != md5:
                raise ValueError(f"the download of {url} is corrupt: its MD5 checksum is "
                                 f"{digest.hexdigest()}, expected {md5}; it was not kept, "
                                 "try again (or put the file in place yourself)")


def download_mnist(folder=None, show_progress=True):
    """Download the MNIST files that are missing in ``folder``.

    Each file of :data:`MNIST_DOWNLOAD_FILES` is fetched from :func:`mnist_download_url`,
    checked against its MD5 checksum and only then renamed into place, so a broken or
    interrupted download never leaves a file behind.

    Parameters
    ----------
    folder : str or os.PathLike, optional
        Default :func:`default_mnist_dir` (created if needed).
    show_progress : bool
        Show a progress bar per file.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    FileNotFoundError
        If a file cannot be downloaded (no network, ...); the message says where to put the
        files by hand.
    ValueError
        If a downloaded file does not match its checksum.
    """
    folder = Path(default_mnist_dir() if folder is None else folder).expanduser()
    base = mnist_download_url()
    for name, md5 in MNIST_DOWNLOAD_FILES.items():
        target = folder / name
        if target.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        url = base + name
        logger.info("Downloading %s to %s", url, target)
        try:
            _fetch(url, target, md5, show_progress)
        except (urllib.error.URLError, OSError) as e:
            reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) \
                else getattr(e, "reason", None) or e
            raise _not_found(folder, f"it could not be downloaded from {url} ({reason}); "
                                     f"without network, put the files into {folder} yourself"
                             ) from e
    return folder


def _open(path):
    """Open a file for reading bytes, decompressing it if it is gzipped."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read_pickle(path):
    """All objects of a (gzipped) pickle stream, through the restricted unpickler."""
    with _open(path) as f:
        return read_pickles(f, str(path))


def _check_split(path, name, split):
    """``(x, y)`` as float32 ``(N, features)`` and int16 ``(N,)``, or a ValueError."""
    if not (isinstance(split, tuple | list) and len(split) == 2
            and all(isinstance(a, np.ndarray) for a in split)):
        raise ValueError(f"{path}: the {name} set is not a pair of arrays (data, labels)")
    x, y = split
    if (x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not np.issubdtype(x.dtype, np.number)
            or not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"{path}: the {name} set must be data (N, features) and integer "
                         f"labels (N,), got {x.dtype}{x.shape} and {y.dtype}{y.shape}")
    return x.reshape(len(x), -1).astype(np.float32), y.astype(np.int16)


def _load_pickle(path):
    objects = _read_pickle(path)
    splits = objects[0] if len(objects) == 1 else objects
    if not isinstance(splits, tuple | list) or len(splits) != 3:
        raise ValueError(f"{path}: expected the three sets (train, valid, test), got "
                         f"{len(objects)} object(s), not three pairs of arrays")
    return tuple(_check_split(path, name, s)
                 for name, s in zip(("training", "validation", "test"), splits, strict=True))


def _read_idx(path):
    """The array of an IDX file (magic: two zero bytes, dtype code, rank; big-endian sizes)."""
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{rank}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) - header != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: the header announces {shape} of {dtype}, the file holds "
                         f"{len(data) - header} data bytes")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def _load_idx(files, valid_size):
    arrays = [_read_idx(p) for p in files]
    for images, labels, (img_path, _) in ((arrays[0], arrays[1], files[:2]),
                                          (arrays[2], arrays[3], files[2:])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{img_path}: expected images (N, rows, cols) and labels (N,), got "
                             f"{images.shape} and {labels.shape}")
    train_x, train_y, test_x, test_y = arrays
    if not 0 < valid_size < len(train_x):
        raise ValueError(f"valid_size must be between 1 and {len(train_x) - 1} (the training "
                         f"set has {len(train_x)} images), got {valid_size}")

    def split(x, y):
        return x.reshape(len(x), -1).astype(np.float32) / 255, y.astype(np.int16)

    cut = len(train_x) - valid_size
    return (split(train_x[:cut], train_y[:cut]), split(train_x[cut:], train_y[cut:]),
            split(test_x, test_y))


def load_mnist(path=None, valid_size=10000, download=True):
    """Read MNIST as ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The pickle, or a directory with the pickle or the IDX files; see :func:`find_mnist`
        (default: ``$ELEKTRONN_MNIST``, else :func:`default_mnist_dir`).
    valid_size : int
        IDX files only: the last ``valid_size`` training images form the validation set (the
        pickle's split: 50000 training, 10000 validation images).
    download : bool
        Without ``path`` and ``$ELEKTRONN_MNIST``: download the files into
        :func:`default_mnist_dir` if they are not there (:func:`download_mnist`).

    Returns
    -------
    tuple of three (x, y) pairs
        ``x`` float32 ``(N, rows * cols)`` (IDX grey values are divided by 255), ``y`` int16
        ``(N,)``.

    Raises
    ------
    FileNotFoundError
        If no MNIST files are found or downloaded (the message says which files to put
        where).
    ValueError
        If a file is not valid MNIST data, or the pickle refers to anything but numpy arrays,
        numbers, strings and tuples (it is refused before anything is executed), or a download
        is corrupt.
    """
    if download and path is None and not backend.environ(MNIST_ENV_VAR):
        try:
            find_mnist()
        except FileNotFoundError:
            download_mnist()
    kind, files = find_mnist(path)
    logger.info("Loading MNIST from %s", ", ".join(map(str, files)))
    return _load_pickle(files[0]) if kind == "pickle" else _load_idx(files, valid_size)


# --- MNISTData -----------------------------------------------------------------------------------


class MNISTData(Data):
    """The MNIST digits as images ``(N, 1, 28, 28)`` or flat vectors, with augmentation.

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``mnist.pkl.gz``, or a directory with it or the four IDX files; default:
        ``$ELEKTRONN_MNIST``, else ``~/.ELEKTRONN`` (see :func:`find_mnist`), where the IDX
        files are downloaded on first use (:func:`download_mnist`). Without network a
        :class:`FileNotFoundError` tells where to put the files.
    convert2image : bool
        Batches are ``(bs, 1, x, y)``; False: flat ``(bs, x * y)`` batches (and
        ``example_shape`` is the int ``x * y``). The arrays ``train_d`` ... are images
        either way.
    warp_on : bool
        Warp every training batch with one random elastic transform (needs
        :mod:`elektronn.training.warping`): shear ``U(±7°)``, twist over the batch ``U(±5°)``,
        scale ``1 + 0.15 U(0, 1)`` in x and y, stretch ``U(±0.25)``.
    shift_augment : bool
        Crop validation and test images to 26×26 (a 1-pixel border off) and replace the
        training set by its four 26×26 crops at offsets (0, 0), (1, 0), (0, 1), (1, 1)
        (four times as many examples, shifted by up to a pixel against the centred crop),
        concatenated in a random order drawn from ``seed`` (as ELEKTRONN 1.0 did).
    center : bool
        Subtract from each set its own global mean.
    seed : int, optional
        Seed of :attr:`rng` (batch order and warping).
    valid_size : int
        IDX files only: the number of validation images split off the end of the training
        set (see :func:`load_mnist`).

    Notes
    -----
    Fixed against ELEKTRONN 1.0 (docs/differences.md, T4): validation and test batches are
    never warped (the original warped validation batches when ``warp_on``), and flat batches
    of a set smaller than ``batch_size`` work.
    Augmentation draws from :attr:`rng`, not numpy's global
    generator.

    Examples
    --------
    With the real MNIST, ``MNISTData(shift_augment=False)`` finds or downloads it.  Here a
    small stand-in file with the layout of ``mnist.pkl.gz`` (three ``(images, labels)`` sets):

    >>> import gzip, os, pickle, tempfile
    >>> rng = np.random.default_rng(0)
    >>> sets = [(rng.random((n, 784), dtype=np.float32), np.arange(n) % 10) for n in (300, 50, 50)]
    >>> path = os.path.join(tempfile.mkdtemp(), "mnist.pkl.gz")
    >>> with gzip.open(path, "wb") as f:
    ...     pickle.dump(sets, f, protocol=2)
    >>> data = MNISTData(path, shift_augment=False, seed=0)
    >>> d, l = data.getbatch(100)
    >>> d.shape, l.dtype
    ((100, 1, 28, 28), dtype('int16'))
    """

    def __init__(self, path=None, convert2image=True, warp_on=False, shift_augment=True,
                 center=True, seed=None, valid_size=10000):
        splits = load_mnist(path, valid_size)
        (self.train_d, self.train_l), (self.valid_d, self.valid_l), (self.test_d, self.test_l) = (
            (self._to_images(x), y) for x, y in splits)
        self.warp_on = warp_on
        self.shift_augment = shift_augment
        self.return_flat = not convert2image
        if center:
            for name in ("train_d", "valid_d", "test_d"):
                data = getattr(self, name)
                data -= data.mean()
        seed_seq = np.random.SeedSequence(seed)
        if shift_augment:
            self.valid_d = self.valid_d[:, :, 1:-1, 1:-1]
            self.test_d = self.test_d[:, :, 1:-1, 1:-1]
            order = np.random.default_rng(seed_seq.spawn(1)[0]).permutation(4)
            self.train_d, self.train_l = self._shifted_crops(self.train_d, self.train_l, order)
        super().__init__(seed=seed_seq.entropy)
        if self.return_flat:
            self.example_shape = int(np.prod(self.example_shape))
        logger.info("MNIST data is converted/augmented to shape %s", self.example_shape)

    @staticmethod
    def _to_images(x):
        n = int(round(np.sqrt(x.shape[1])))
        if n * n != x.shape[1]:
            raise ValueError(f"MNIST examples must be square images, got {x.shape[1]} values")
        return x.reshape(len(x), 1, n, n)

    SHIFTS = ((0, 0), (1, 0), (0, 1), (1, 1))
    """Offsets ``(x, y)`` of the four training crops of ``shift_augment``."""

    @classmethod
    def _shifted_crops(cls, data, labels, order):
        """The crops at ``SHIFTS[k]`` for ``k`` in ``order``, one after the other."""
        size = data.shape[-1] - 2
        crops = [data[:, :, i:i + size, j:j + size] for i, j in (cls.SHIFTS[k] for k in order)]
        return np.concatenate(crops), np.tile(labels, 4)

    def getbatch(self, batch_size, source="train"):
        """A batch ``(data, labels)``: images ``(bs, 1, x, y)`` or flat ``(bs, x * y)``.

        Training batches are warped when :attr:`warp_on`; see :meth:`Data.getbatch`.
        """
        data, labels = super().getbatch(batch_size, source)
        if source == "train" and self.warp_on:
            data = self._warpaugment(data)
        if self.return_flat:
            data = data.reshape(len(data), -1)
        return data, labels

    def _warpaugment(self, data):
        """Warp a batch ``(bs, 1, x, y)`` with one transform (the batch axis taken as z)."""
        from elektronn.training.warping import warp3dFast

        rng = self.rng
        shear = rng.uniform(-7, 7)
        twist = rng.uniform(-5, 5)
        scale = 1 + 0.15 * rng.random(2)
        stretch = rng.uniform(-0.25, 0.25, 4)
        patch_size = (data.shape[0],) + data.shape[2:]
        return warp3dFast(data, patch_size, rot=0, shear=shear, scale=(scale[0], scale[1], 1),
                          stretch=stretch, twist=twist)
