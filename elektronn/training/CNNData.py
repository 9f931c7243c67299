"""Image training data: cubes of images and labels, random patches, lazy labels (ELEKTRONN 1.0).

:class:`CNNData` holds image cubes with their labels and cuts random training examples from
them for a CNN (``getbatch``). It is the port of ELEKTRONN 1.0's ``CNNData`` with the same
constructor, methods and return values. Its parts live in their own modules: lazy access to
volumes on disk in :mod:`elektronn.training.volumes`, the geometry of cubes and patches in
:mod:`elektronn.training.patches`, affinity targets in :mod:`elektronn.training.affinities`.

Layouts
-------
* On disk (HDF5 files, or zarr groups: ``("raw_0.zarr", "raw")`` names the array ``raw`` of
  the group ``raw_0.zarr``, see :mod:`elektronn.training.volumes`): images ``(ch, x, y, z)``
  or ``(x, y, z)``, labels ``(x, y, z)`` (or already ``(z, ch, x, y)`` / ``(z, x, y)`` with
  ``zchxy_order=True``).
* In the object: images ``(z, ch, x, y)``, labels ``(z, x, y)``; after loading, image and labels
  of a cube share their spatial extent and ``label[v]`` belongs to ``image[v]`` (the labels are
  zero-padded by the CNN offset, or the image is cropped; see
  :func:`elektronn.training.patches.strip_cubes`).
* Batches: images ``(bs, ch, x, y)`` (2-D) or ``(bs, z, ch, x, y)`` (3-D), float32 in
  ``[0, 1]`` for integer data (divided by 255); labels ``(bs, x', y')`` / ``(bs, z', x', y')``,
  the patch without the CNN offset on each side, optionally subsampled by the CNN stride.

Volumes larger than memory
--------------------------
With ``in_memory=False`` the HDF5 datasets or zarr arrays stay on disk (files open read-only,
reopened in a new process) and every example reads only its own window. The batches are
identical to those of ``in_memory=True`` for the same seed (except with
``pre_process='standardise'``, whose statistics are computed in chunks); ``downsample_xy``
needs ``in_memory=True``.

Random numbers of CNNData
-------------------------
Every object has one ``numpy.random.Generator`` (:attr:`CNNData.rng`), seeded from ``seed``
(default: fresh entropy) and re-seeded from that seed and the process id whenever
``getbatch`` runs in a new process, so background workers draw different batches
(docs/differences.md, T5).
Warp parameters, flips and grey augmentation use this generator too.

CNNData: changes against ELEKTRONN 1.0
--------------------------------------
Kept (see docs/differences.md): the cut position is ``randint(0, s - p)`` per axis, so the last
position of a cube is never drawn (T7, only ``s == p`` gives shift 0); warped labels outside the
source become class 0 (T9); ``downsample_xy`` averages integer labels with floor division (T8);
``offset`` and ``stride`` are floored to ints; cube priorities are relative weights, not
normalised by the user. Fixed: the 2-D choice of transposed slicing directions checks the slice
axes (T7's second half); ``addDataFromNdarray`` builds ``info`` per cube and accepts
``(z, x, y)`` images (T13); an empty validation set raises a clear ``ValueError``; an empty
label dataset becomes zeros also with ``zchxy_order``; example weights work for 2-D and for a
zero offset; an axis where the cube is exactly as large as the patch gets shift 0 even if
other axes are larger (the original raised); prints are logging.
"""

import gc
import logging
import os

import numpy as np

from elektronn.training import patches
from elektronn.training.affinities import make_affinities
from elektronn.training.volumes import (
    DataError,
    H5Volume,
    convert,
    dataset_info,
    image_divisor,
    label_chunks,
    open_data_file,
    read_dataset,
)
from elektronn.training.warping import (
    getWarpParams,
    greyAugment,
    randomFlip,
    warp2dJoint,
    warp3dJoint,
)

__all__ = ["CNNData", "H5Volume"]

logger = logging.getLogger("elektronn")


class CNNData:
    """Patch creation and data handling for image training data (img-img and img-scalar).

    Parameters
    ----------
    patch_size : int or sequence of int
        CNN input size of one example without channels: ``(x, y)`` or ``(z, x, y)``; a scalar
        is used for every axis.
    stride : int or sequence of int or None
        CNN output stride (img-img; floored to int); None for scalar labels.
    offset : float or sequence of float or None
        CNN offset (half the field of view; img-img; floored to int, so 15.5 becomes 15).
    n_dim : int
        2 or 3: the CNN dimension.
    n_lab : int or None
        Number of classes; None: the distinct label values (slow).
    anistropic_data : bool
        2-D: slices are only cut along z (else also along x and y). 3-D: flips only swap x and
        y (else the axes are permuted at random). (The original's spelling is kept.)
    mode : {'img-img', 'img-scalar'}
        Image labels or one label per image (per z-slice of a stack for 2-D).
    zchxy_order : bool
        The files are already in the internal layout ``(z, ch, x, y)`` / ``(z, x, y)``.
    border_mode : {'crop', 'keep', 'mirror', '0-pad'}
        img-scalar: how images are brought to the patch size.
    pre_process : None or 'standardise'
        'standardise': ``(d - M) / S`` with M the mean of the per-cube means and S the mean of
        the per-cube standard deviations (stored as ``data_mean`` and ``data_std``).
    upright_x : bool
        2-D: flips only mirror y (keeps natural images upright).
    float_label : bool
        float32 labels (regression) instead of int16.
    affinity : False, 'affinity' or 'malis'
        3-D img-img: return affinity graphs of the labels (and for 'malis' the relabelled
        segmentation) instead of the labels.
    in_memory : bool
        False: keep the HDF5 datasets on disk and read only the window of every example (for
        volumes larger than memory). Same batches as True for the same seed. img-scalar images
        are still loaded (their border treatment needs them in memory).
    seed : int or None
        Seed of :attr:`rng` (None: fresh entropy).

    Attributes
    ----------
    rng : numpy.random.Generator
        The generator of all random choices; re-seeded per process.
    n_ch, n_lab : int
        Channels of the images and number of classes (after loading data).
    train_d, train_l, train_i, valid_d, valid_l, valid_i : list
        Per cube: images ``(z, ch, x, y)``, labels ``(z, x, y)`` (ndarrays, or
        :class:`H5Volume` with ``in_memory=False``) and ``info`` = ``(mask_class_labeled,
        mask_class_not_present)``, two length-``n_lab`` 0/1 arrays (lazy labels).
    names, info : list
        File entries and ``info`` of all cubes, in file order.
    n_successful_warp, n_failed_warp : int
        How often a warp was applied, and how often the cube was too small for it.
    """

    def __init__(self, patch_size=None, stride=None, offset=None, n_dim=2, n_lab=None,
                 anistropic_data=False, mode="img-img", zchxy_order=False, border_mode="crop",
                 pre_process=None, upright_x=False, float_label=False, affinity=False, *,
                 in_memory=True, seed=None):
        if n_dim not in (2, 3):
            raise ValueError(f"n_dim must be 2 or 3, got {n_dim}")
        if mode not in ("img-img", "img-scalar"):
            raise ValueError(f"mode must be 'img-img' or 'img-scalar', got {mode!r} (use the "
                             "traindata classes for 'vect-scalar')")
        self.n_dim = n_dim
        self.patch_size = self._per_dim(patch_size, "patch_size")
        self.mode = mode
        if mode == "img-img":
            self.stride = self._per_dim(stride, "stride")
            self.offset = self._per_dim(offset, "offset")
            if np.any(self.patch_size - 2 * self.offset < 1):
                raise ValueError(f"patch_size {tuple(self.patch_size)} leaves no labels with "
                                 f"offset {tuple(self.offset)}")
        else:
            self.stride = self.offset = None
        self.n_lab = n_lab
        self.n_ch = None
        self.aniso = bool(anistropic_data)
        self.zchxy_order = zchxy_order
        self.border_mode = border_mode
        self.pre_process = pre_process
        self.upright_x = upright_x
        self.ldtype = np.dtype(np.float32 if float_label else np.int16)
        if affinity not in (False, None, "affinity", "malis"):
            raise ValueError(f"affinity must be False, 'affinity' or 'malis', got {affinity!r}")
        self.affinity = affinity or False
        self.in_memory = in_memory
        if n_dim == 3 and upright_x:
            logger.warning("the data is 3-dimensional and 'upright_x' is set, but it works "
                           "only for 2-D")

        self._seed = np.random.SeedSequence(seed)
        self.rng = np.random.default_rng(self._seed)
        self.pid = os.getpid()
        self.gc_count = 1

        self._sampling_weight = None
        self._training_count = self._valid_count = 0
        self.n_successful_warp = self.n_failed_warp = 0
        self.names, self.info = [], []
        self.train_d, self.train_l, self.train_i = [], [], []
        self.valid_d, self.valid_l, self.valid_i = [], [], []
        self._train_unchecked, self._valid_unchecked = [], []  # image files to check per patch

    def _per_dim(self, value, name):
        if value is None:
            raise ValueError(f"{name} is required")
        value = np.atleast_1d(value)
        if value.size == 1:
            value = np.repeat(value, self.n_dim)
        if value.size != self.n_dim:
            raise ValueError(f"{name} needs {self.n_dim} entries, got {list(value)}")
        return np.floor(value.astype(float)).astype(int)

    def __repr__(self):
        return (f"{self.n_lab}-class Data Set with {self.n_ch} input channel(s):\n"
                f"#train cubes: {self._training_count} and #valid cubes: {self._valid_count}")

    # -- loading ----------------------------------------------------------------------------------

    def addDataFromFile(self, d_path, l_path, d_files, l_files, cube_prios=None, valid_cubes=(),
                        downsample_xy=False):
        """Load image cubes and their labels from HDF5 files.

        Parameters
        ----------
        d_path, l_path : str or os.PathLike
            Folders of the image and label files.
        d_files, l_files : list of (str, str)
            ``(file name, dataset key)`` per cube, in the same order. A label file may also
            hold a dataset ``info``: the lazy-label masks ``(mask_class_labeled,
            mask_class_not_present)``, two 0/1 arrays of length ``n_lab``.
        cube_prios : list of float, optional
            Relative sampling weights of the training cubes (default: their label sizes).
        valid_cubes : list of int
            Indices (into the file lists) of the cubes used for validation only.
        downsample_xy : int or False
            Average ``f x f`` blocks in x and y (labels too, with integer division; T8).
            Needs ``in_memory=True``.
        """
        d_files, l_files = list(d_files), list(l_files)
        if len(d_files) != len(l_files):
            raise ValueError("d_files and l_files must be lists of the same length")
        if downsample_xy and not self.in_memory:
            raise NotImplementedError("downsample_xy needs in_memory=True")
        data, label, info, sources, unchecked = [], [], [], [], []
        for d_entry, l_entry in zip(d_files, l_files, strict=True):
            d_file, l_file = (os.path.join(d_path, d_entry[0]), os.path.join(l_path, l_entry[0]))
            d, lb, i = self._read_cube(d_file, d_entry[1], l_file, l_entry[1])
            if downsample_xy:
                d, lb = self._downsample(d, lb, int(downsample_xy))
            logger.info("Internal data.shape=%s, label.shape=%s", d.shape, lb.shape)
            self._check_patch_fits(d, f"{d_file} (dataset {d_entry[1]!r})")
            data.append(d)
            label.append(lb)
            info.append(i)
            sources.append(f"{l_file} (dataset {l_entry[1]!r})")
            unchecked.append(f"{d_file} (dataset {d_entry[1]!r})"
                             if isinstance(d, H5Volume) else None)
        self.names += d_files
        self._addCubes(data, label, info, cube_prios, valid_cubes, sources, unchecked)

    def addDataFromNdarray(self, d_train, l_train, d_valid=(), l_valid=(), cube_prios=None):
        """Add cubes that are already in memory, in the internal layout.

        Parameters
        ----------
        d_train, l_train : ndarray or list of ndarray
            Training images ``(z, ch, x, y)`` or ``(z, x, y)`` and labels ``(z, x, y)`` of the
            same spatial shape (img-img; label ``v`` belongs to image ``v``), or label vectors
            (img-scalar).
        d_valid, l_valid : list of ndarray
            Validation cubes, likewise.
        cube_prios : list of float, optional
            As in :meth:`addDataFromFile`.
        """
        if isinstance(d_train, np.ndarray):
            d_train, l_train = [d_train], [l_train]
        d_all = list(d_train) + list(d_valid)
        l_all = list(l_train) + list(l_valid)
        if len(d_all) != len(l_all):
            raise ValueError("every image cube needs its labels")
        data, label = [], []
        for d, lb in zip(d_all, l_all, strict=True):
            d = np.asarray(d)
            d = d[:, None] if d.ndim == 3 else d
            if d.ndim != 4:
                raise ValueError(f"images must be (z, ch, x, y) or (z, x, y), got {d.shape}")
            self._set_n_ch(d.shape[1])
            lb = self._cast_labels(np.asarray(lb))
            if self.mode == "img-img" and lb.shape != (d.shape[0],) + d.shape[2:]:
                raise ValueError(f"labels {lb.shape} must have the spatial shape of the images "
                                 f"{d.shape} (z, ch, x, y)")
            _check_finite(d, f"image array #{len(data)}")
            data.append(convert(d, np.dtype(np.float32), image_divisor(d.dtype)))
            label.append(lb)
        n = len(d_train)
        start = len(self.names)
        self.names += [f"directly_added_data_{k}" for k in range(start, start + len(d_all))]
        self._addCubes(data, label, [None] * len(d_all), cube_prios,
                       valid_cubes=range(n, len(d_all)),
                       sources=[f"label array #{k}" for k in range(len(d_all))])

    def _addCubes(self, data, label, info, cube_prios, valid_cubes, sources, unchecked=None):
        unchecked = unchecked or [None] * len(data)
        if self.mode == "img-scalar":
            data = patches.border_treatment(data, self.patch_size, self.border_mode, self.n_dim)
        if self.pre_process:
            data = self._standardise(data)
        if self.n_lab is None:
            values = [np.unique(np.asarray(c)) for lb in label for c in label_chunks(lb)]
            self.n_lab = int(np.unique(np.hstack(values)).size)
        for lb, source in zip(label, sources, strict=True):
            self._check_label_values(lb, source)
        default = (np.ones(self.n_lab), np.zeros(self.n_lab))
        info = [default if i is None else self._check_info(i) for i in info]
        self.info += info
        valid_cubes = set(valid_cubes)
        for k, item in enumerate(zip(data, label, info, unchecked, strict=True)):
            target = ((self.valid_d, self.valid_l, self.valid_i, self._valid_unchecked)
                      if k in valid_cubes else
                      (self.train_d, self.train_l, self.train_i, self._train_unchecked))
            for lst, x in zip(target, item, strict=True):
                lst.append(x)
        if cube_prios is None or len(cube_prios) == 0:
            prios = np.array([lb.size for lb in self.train_l], dtype=float)
        else:
            prios = np.asarray(cube_prios, dtype=float)
            if prios.shape != (len(self.train_d),) or np.any(prios < 0) or prios.sum() <= 0:
                raise ValueError(f"cube_prios needs one non-negative weight per training cube "
                                 f"({len(self.train_d)}), not all 0; got {list(cube_prios)}")
        if len(prios):
            self._sampling_weight = np.hstack((0, np.cumsum(prios / prios.sum())))
        self._training_count = len(self.train_d)
        self._valid_count = len(self.valid_d)
        logger.info("%r", self)

    def _check_patch_fits(self, d, source):
        """Raise DataError if an img-img cube ``(z, ch, x, y)`` is smaller than the patch."""
        if self.mode != "img-img":
            return
        ps = tuple(int(p) for p in self.patch_size)
        spatial = ((d.shape[0],) + tuple(d.shape[2:]))[-len(ps):]
        if any(s < p for s, p in zip(spatial, ps, strict=True)):
            raise DataError(f"{source}: the image {spatial} is smaller than the net's input "
                            f"patch {ps} (both {'(z, x, y)' if len(ps) == 3 else '(x, y)'}); "
                            "use larger cubes or a smaller desired_input")

    def _check_label_values(self, lb, source):
        """Class labels must be below ``n_lab`` (negative ones mean 'ignore')."""
        if self.ldtype.kind != "i" or self.affinity:  # regression values, segment IDs
            return
        top = max((int(c.max()) for c in label_chunks(lb) if c.size), default=0)
        if top >= self.n_lab:
            raise DataError(f"{source}: holds the label {top}, but n_lab={self.n_lab} allows "
                            f"only the classes 0..{self.n_lab - 1} (negative: ignore)")

    def _check_info(self, info):
        info = np.asarray(info)
        if info.shape != (2, self.n_lab):
            raise ValueError(f"the 'info' dataset must hold (mask_class_labeled, "
                             f"mask_class_not_present), shape (2, n_lab={self.n_lab}), got "
                             f"{info.shape}")
        return info[0], info[1]

    def _set_n_ch(self, n_ch):
        if self.n_ch is not None and self.n_ch != n_ch:
            raise ValueError(f"all cubes need the same number of channels ({self.n_ch}), "
                             f"got {n_ch}")
        self.n_ch = int(n_ch)

    def _cast_labels(self, lb):
        if self.ldtype.kind == "i" and lb.dtype != self.ldtype and lb.size:
            lim = np.iinfo(self.ldtype)
            if lb.max() > lim.max or lb.min() < lim.min:
                raise ValueError(f"labels must be cast to {self.ldtype}, which cannot store "
                                 f"{lb.max()} (allowed {lim.min}..{lim.max}); renumber them")
        return np.ascontiguousarray(lb, dtype=self.ldtype)

    def _read_cube(self, d_file, d_key, l_file, l_key):
        """One cube as internal volumes (arrays, or on-disk views with ``in_memory=False``)."""
        logger.info("Loading %s and %s", d_file, l_file)
        d_shape, d_dtype = dataset_info(d_file, d_key)
        l_shape, _ = dataset_info(l_file, l_key)
        with open_data_file(l_file) as f:
            info = np.asarray(f["info"][...]) if "info" in f else None
        if len(d_shape) not in (3, 4):
            raise ValueError(f"{d_file}:{d_key}: images must have 3 or 4 axes, got {d_shape}")
        chan = len(d_shape) == 4
        if self.zchxy_order:
            d_axes = (0, 1, 2, 3) if chan else (0, None, 1, 2)
            l_axes = (0, 1, 2)
        else:
            d_axes = (3, 0, 1, 2) if chan else (2, None, 0, 1)
            l_axes = (2, 0, 1)
        self._set_n_ch(d_shape[d_axes[1]] if chan else 1)
        d = H5Volume(d_file, d_key, d_axes, divisor=image_divisor(d_dtype))
        empty = int(np.prod(l_shape)) == 0
        if self.mode == "img-scalar":
            if not empty and len(l_shape) != 1:
                raise ValueError(f"{l_file}:{l_key}: scalar labels must be 1-D, got {l_shape}")
            lb = np.zeros(d.shape[0], self.ldtype) if empty else self._cast_labels(
                read_dataset(l_file, l_key))
            if self.in_memory:
                arr = np.asarray(d)
                d.close()
                d = arr
                _check_finite(arr, f"{d_file} (dataset {d_key!r})")
            return d, lb, info
        sh = (d.shape[0],) + d.shape[2:]
        if empty:
            lb = H5Volume(None, None, (None,) * 3, shape=sh, dtype=self.ldtype)
        else:
            if len(l_shape) != 3:
                raise ValueError(f"{l_file}:{l_key}: labels must be 3-D, got {l_shape}")
            lb = H5Volume(l_file, l_key, l_axes, dtype=self.ldtype)
            d_cut, l_cut = patches.strip_geometry(
                sh, lb.shape, patches.off3(self.offset),
                f"{l_file} (dataset {l_key!r}) and {d_file} (dataset {d_key!r})")
            sh = [s - 2 * c for s, c in zip(sh, d_cut, strict=True)]
            d = d.crop([d_cut[0], 0, d_cut[1], d_cut[2]], [sh[0], d.shape[1], sh[1], sh[2]])
            lb = lb.crop([c - o for c, o in zip(l_cut, patches.off3(self.offset), strict=True)], sh)
            self._check_label_range(lb)
        if self.in_memory:
            arrays = np.asarray(d), np.asarray(lb)
            d.close()
            lb.close()
            d, lb = arrays
            _check_finite(d, f"{d_file} (dataset {d_key!r})")
        return d, lb, info

    def _check_label_range(self, lb):
        if self.ldtype.kind != "i":
            return
        _, ds_dtype = dataset_info(lb.path, lb.key)
        if np.can_cast(ds_dtype, self.ldtype):
            return
        lim = np.iinfo(self.ldtype)
        raw = H5Volume(lb.path, lb.key, lb.axes, dtype=ds_dtype)
        for block in raw.chunks():
            if block.size and (block.max() > lim.max or block.min() < lim.min):
                raise DataError(f"labels in {lb.path} (dataset {lb.key!r}) must be cast to "
                                f"{self.ldtype}, which cannot store {block.max()}; renumber "
                                "them")

    def _downsample(self, d, lb, f):
        """Average ``f x f`` blocks in x and y; integer labels are floor-divided (T8, kept)."""
        cx, cy = lb.shape[-2] - lb.shape[-2] % f, lb.shape[-1] - lb.shape[-1] % f
        d, lb = d[..., :cx, :cy], lb[..., :cx, :cy]
        new_d = np.zeros(d[..., ::f, ::f].shape, np.float32)
        new_l = np.zeros(lb[..., ::f, ::f].shape, self.ldtype)
        for i in range(f):
            for j in range(f):
                new_d += d[..., i::f, j::f]
                new_l += lb[..., i::f, j::f]
        if self.ldtype.kind == "i":
            return new_d / f ** 2, new_l // f ** 2
        return new_d / f ** 2, new_l / f ** 2

    def _standardise(self, data):
        if self.pre_process != "standardise":
            raise NotImplementedError(f"Pre-processing {self.pre_process} is not implemented")
        means, stds = [], []
        for d in data:
            if isinstance(d, H5Volume):
                n = s1 = s2 = 0.0
                for block in d.chunks():
                    b = block.astype(np.float64)
                    n, s1, s2 = n + b.size, s1 + b.sum(), s2 + (b * b).sum()
                means.append(s1 / n)
                stds.append(np.sqrt(max(s2 / n - (s1 / n) ** 2, 0)))
            else:
                means.append(np.mean(d))
                stds.append(np.std(d))
        M, S = float(np.mean(means)), float(np.mean(stds))
        self.data_mean, self.data_std = M, S
        logger.info("Data is standardised. Original mean: %.3g, original std %.3g", M, S)
        out = []
        for d in data:
            if isinstance(d, H5Volume):
                d = d._derived(d.axes, d.start, d.shape)
                d.mean, d.std = M, S
                out.append(d)
            else:
                out.append(convert(d, np.dtype(np.float32), 1, M, S))
        return out

    # -- batches ----------------------------------------------------------------------------------

    def getbatch(self, batch_size=1, source="train", strided=True, flip=True,
                 grey_augment_channels=(), ret_info=False, warp_on=False, ignore_thresh=0.0,
                 ret_example_weights=False):
        """A batch of random, augmented examples.

        Parameters
        ----------
        batch_size : int
            Number of examples.
        source : {'train', 'valid'}
            Training cubes (drawn by ``cube_prios``) or validation cubes (uniformly).
        strided : bool
            Subsample the labels by the CNN stride (False: dense labels, for MFP nets).
        flip : bool
            Random mirroring and x/y swaps (needs equal x and y patch sizes).
        grey_augment_channels : sequence of int
            Channels with random grey-value augmentation (training batches only).
        ret_info : bool
            Also return the lazy-label masks of each example's cube.
        warp_on : bool or float
            Warp every example (True or 1), a fraction of them (``0 < warp_on < 1``) or none.
        ignore_thresh : float
            Re-cut a patch (up to 10 times) if more than this fraction of its labels is
            negative (ignore); afterwards skip it unless its cube has classes marked not
            present. 0 disables both.
        ret_example_weights : bool
            Also return example weights from the previous prediction in the last channel.

        Returns
        -------
        tuple
            ``(images, labels[, info1, info2][, weights])``; with ``affinity`` the labels are
            replaced by ``aff`` (and ``aff, seg`` for 'malis'). ``images`` are float32
            ``(bs, ch, x, y)`` or ``(bs, z, ch, x, y)``; labels ``(bs, x', y')`` or
            ``(bs, z', x', y')`` (``(bs,)`` for img-scalar); ``info1`` and ``info2``
            (``mask_class_labeled``, ``mask_class_not_present``) int16 ``(bs, n_lab)``.
        """
        self._reseed()
        if source not in ("train", "valid"):
            raise ValueError(f"Unknown data source {source!r}")
        ps = self.patch_size
        if self.n_dim == 2:
            images = np.zeros((batch_size, self.n_ch, ps[0], ps[1]), np.float32)
        else:
            images = np.zeros((batch_size, ps[0], self.n_ch, ps[1], ps[2]), np.float32)
        labels, infos = [], []
        while len(labels) < batch_size:
            d, lb, info, unchecked = self._getcube(source)
            d, lb = self._warpAugment(d, lb, warp_on, ignore_thresh)
            if unchecked is not None:  # too large to scan at load: check what is read
                _check_finite(d, unchecked, "a patch of the image")
            if ignore_thresh and not np.any(info[1]) and np.mean(lb < 0) > ignore_thresh:
                continue
            if flip:
                if ps[-1] != ps[-2]:
                    raise RuntimeError("Cannot apply 'flip' to image if x and y have different "
                                       "sizes")
                lab = lb if self.mode == "img-img" else None
                d, lab = randomFlip(d, lab, self.rng, self.aniso, self.upright_x)
                lb = lab if self.mode == "img-img" else lb
            if source == "train":
                d = greyAugment(d, grey_augment_channels, self.rng)
            images[len(labels)] = d
            labels.append(lb)
            infos.append(info)
        label = np.asarray(np.stack(labels), dtype=self.ldtype)
        if ret_example_weights:
            weights = self.getExampleWeights(images, label)
        if strided and self.mode == "img-img":
            label = self._stridedLabels(label)
        ret = [images, label]
        if self.affinity:
            if self.n_dim != 3 or self.mode != "img-img":
                raise ValueError("affinity targets need 3-D img-img data")
            aff, seg = make_affinities(label)
            ret = [images, aff, seg] if self.affinity == "malis" else [images, aff]
        if ret_info:
            infos = np.array([np.stack(i) for i in infos], dtype=np.int16)  # (bs, 2, n_lab)
            ret += [infos[:, 0], infos[:, 1]]
        if ret_example_weights:
            ret.append(weights)
        self.gc_count += 1
        if self.gc_count % 1000 == 0:
            gc.collect()
        return tuple(ret)

    def _reseed(self):
        """In a new process, switch to a stream of the seed and the process id (T5)."""
        pid = os.getpid()
        if pid != self.pid:
            self.pid = pid
            self.rng = np.random.default_rng(
                np.random.SeedSequence(self._seed.entropy, spawn_key=(pid,)))
            logger.info("Reseeding RNG in Process with PID: %i", pid)

    def _getcube(self, source):
        """Draw a cube: by the sampling weights (train) or uniformly (valid)."""
        if source == "train":
            if not self.train_d:
                raise ValueError("there are no training cubes")
            p = self.rng.random()
            i = np.flatnonzero(self._sampling_weight <= p)[-1]
            return self.train_d[i], self.train_l[i], self.train_i[i], self._train_unchecked[i]
        if not self.valid_d:
            raise ValueError("Validation Set empty (valid_cubes=[]): disable testing on "
                             "validation data")
        i = self.rng.integers(0, len(self.valid_d))
        return self.valid_d[i], self.valid_l[i], self.valid_i[i], self._valid_unchecked[i]

    def _warpAugment(self, d, lb, warp_on, ignore_thresh):
        if warp_on is True or warp_on == 1:
            do_warp = True
        elif warp_on and 0 < warp_on < 1:
            do_warp = self.rng.random() < warp_on
        else:
            do_warp = False
        if not do_warp:
            return self._cutPatch(d, lb, thresh=ignore_thresh)
        req, rot, shear, scale, stretch, twist = getWarpParams(self.patch_size, rng=self.rng)
        try:
            d, lb = self._cutPatch(d, lb, ps=req, thresh=ignore_thresh)
        except ValueError:  # the cube is too small for the required input
            self.n_failed_warp += 1
            return self._cutPatch(d, lb, thresh=ignore_thresh)
        if self.n_dim == 2:
            d, lb = warp2dJoint(d, lb, self.patch_size, rot, shear, scale, stretch)
        else:
            d, lb = warp3dJoint(d, lb, self.patch_size, rot, shear, scale, stretch, twist)
        self.n_successful_warp += 1
        return d, lb

    def _cutPatch(self, img, lab, ps=None, thresh=0.0):
        """Cut a random patch of size ``ps`` (default: the patch size) and its labels."""
        ps = self.patch_size if ps is None else np.asarray(ps)
        return patches.cut_patch(self.rng, img, lab, ps, self.offset, self.n_dim, self.mode,
                                 self.aniso, thresh)

    def previewBlock(self, cube_i=0, off=(0, 0, 0), sh=(10, 400, 400)):
        """A block of training cube ``cube_i`` as ``(ch, x, y, z)``, for ``predictDense``.

        This is the cut of the Trainer's ``previewSliceFromTrainData``, with the y offset and
        size taken from ``off[2]`` and ``sh[2]`` (ELEKTRONN 1.0 reused the x values; T11 fixed).
        Only the block is read for cubes on disk.

        Parameters
        ----------
        cube_i : int
            Index into :attr:`train_d`.
        off, sh : sequence of 3 int
            Origin and size ``(z, x, y)`` of the block (clipped to the cube).

        Returns
        -------
        ndarray of float32, shape ``(ch, x, y, z)``
        """
        z, x, y = (int(o) for o in off)
        nz, nx, ny = (int(n) for n in sh)
        block = np.asarray(self.train_d[cube_i][z:z + nz, :, x:x + nx, y:y + ny])
        return np.ascontiguousarray(np.transpose(block, (1, 2, 3, 0)), dtype=np.float32)

    def _stridedLabels(self, lab):
        return patches.strided_labels(lab, self.stride)

    def getExampleWeights(self, raw_rec, lab, gain=2.0):
        """Weights from the previous prediction stored in the last image channel.

        With ``diff = strided(label) - strided(prediction)`` the weight is
        ``1 + gain (-diff - 0.1) [diff < -0.1] + gain (diff - 0.05) [diff > 0.05]``.

        Parameters
        ----------
        raw_rec : ndarray
            The batch images; the last channel is the previous prediction.
        lab : ndarray
            The (unstrided) labels.
        gain : float

        Returns
        -------
        ndarray of float32, the shape of the strided labels
        """
        prev = raw_rec[:, :, -1] if self.n_dim == 3 else raw_rec[:, -1]
        crop = tuple(slice(int(o), n - int(o)) for o, n in zip(self.offset, prev.shape[1:],
                                                               strict=True))
        prev = prev[(slice(None),) + crop]
        diff = self._stridedLabels(lab) - self._stridedLabels(prev)
        weights = np.ones(diff.shape, dtype=np.float32)
        weights += (diff < -0.1) * gain * (-diff - 0.1)
        weights += (diff > 0.05) * gain * (diff - 0.05)
        return weights


def _check_finite(arr, source, what="the image"):
    """Raise DataError if a float array holds NaN or inf (integer images cannot)."""
    if arr.dtype.kind != "f":
        return
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise DataError(f"{source}: {what} holds {bad} non-finite values (NaN or inf) of "
                        f"{arr.size}; training on it would diverge. Repair or mask the data.")
