"""The training loop of ELEKTRONN's pipeline.

A :class:`Trainer` loads the data a :class:`~elektronn.training.config.Config` describes,
builds the net with :func:`~elektronn.net.netcreation.createNet` and trains it::

    trainer = Trainer(config)
    trainer.loadData()           # opens and checks every file
    trainer.prepareSaveFolder()  # only now: the old run moved aside, the folder made
    trainer.createNet()
    trainer.run()

Everything is written into ``config.save_path`` (atomically and durably, see
:mod:`elektronn.atomicio`): ``<save_name>-LAST.param``, the optimiser state
``<save_name>.optimizer.npz`` and ``<save_name>.state.json`` (what :meth:`Trainer.resume`
continues from) at every monitoring step, ``<save_name>-<h>h.param`` snapshots every
``param_save_h`` hours, ``<save_name>_end.param`` at the end, the history in
``Backup/<save_name>.*.npy``, the progress plots ``<save_name>.*.png`` and preview
predictions. docs/long-trainings.md describes resuming and what is kept where.

Differences to ELEKTRONN 1.0:

* Ctrl-C opens the console (:mod:`elektronn.training.console`) after the current step
  finishes, not in the middle of it; without a terminal it stops the training cleanly, with
  the parameters, history and plots saved as at a normal end. A Ctrl-C during that final
  save does not interrupt it.
* A diverging loss (NaN or inf) ends the training with the last good parameters in
  ``_end.param``, without overwriting the ``-LAST`` parameters (ELEKTRONN 1.0 opened the
  console).
* An existing folder is moved aside, not deleted, and only after the data was checked.
* Auxiliary inputs are passed in the compiled order (docs/differences.md, T3); ``reset`` passes
  the weight decay by keyword (T2); the training can be resumed (:meth:`Trainer.resume`).
* Files go to ``save_path`` by absolute path; the working directory is not changed.
"""

import copy
import hashlib
import io
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elektronn.atomicio import remove_stale_temps
from elektronn.training import console, trainutils
from elektronn.training.parallelisation import BackgroundProc
from elektronn.training.volumes import DataError
from elektronn.utils import pprinttime

if TYPE_CHECKING:
    from elektronn.net.convnet import MixedConvNN
    from elektronn.training.config import Config

__all__ = ["Trainer"]

logger = logging.getLogger("elektronn")


class Trainer:
    """Train the net a configuration describes.

    Parameters
    ----------
    config : elektronn.training.config.Config
        The run's configuration.

    Attributes
    ----------
    config : Config
    data : CNNData or traindata.Data
        After :meth:`loadData`.
    cnn : MixedConvNN
        After :meth:`createNet`.
    timeline : list
        Per step ``[step, seconds, smoothed NLL, NLL, batch mean label]``.
    history : list
        Per monitoring step ``[step, seconds, smoothed NLL, NLL, train NLL, valid NLL,
        NLL gain, LR]``.
    errors : list
        Per monitoring step ``[step, seconds, train error, valid error]`` (in % unless the
        target is regression).
    CG_timeline : list
        The net's conjugate-gradient records.
    get_batch_kwargs, get_batch_kwargs_test : dict
        Keyword arguments of ``data.getbatch`` for training and monitoring batches.
    preview_data : list of ndarray or None
        Preview cubes (float32 in [0, 1]).
    saved_raw_preview : bool
        Whether the raw preview slices were written.
    step : int
        The step the next :meth:`run` starts at (0, or after the resumed one).
    stop_reason : str or None
        Why the last :meth:`run` ended: ``'steps'``, ``'runtime'``, ``'interrupt'`` or
        ``'diverged'`` or ``'killed'`` (the console's ``kill``: nothing saved at the end).
    stop_message : str or None
        The same in words, with the step (and for ``'diverged'`` the cause).
    previous_run : Path or None
        Where the run this one replaces was moved, until this run's first save.
    """

    def __init__(self, config: "Config") -> None:
        self.config = config
        self.previous_run = None  # the replaced run's folder, until the first save
        self.save_path = Path(config.save_path)
        self.save_name = config.save_name
        self.data = self.cnn = None
        self.get_batch_kwargs = self.get_batch_kwargs_test = None
        self.preview_data = None
        self.saved_raw_preview = False
        self.CG_timeline, self.history, self.timeline, self.errors = [], [], [], []
        self.step = 0
        self.stop_reason = None
        self.stop_message = None
        self._t_offset = 0.0  # seconds of earlier (resumed) runs
        self._nll_ema = 0.65
        self._next_param_h = config.param_save_h  # hours of the next snapshot / preview
        self._next_prev_h = config.initial_prev_h
        self._resuming = self._folder_ready = False
        self._done = -1  # the last completed step

    # --- setup -------------------------------------------------------------------------------

    @property
    def _image_data(self) -> bool:
        c = self.config
        return c.mode != "vect-scalar" and c.data_class_name is None

    def loadData(self) -> Any:
        """Load the training data (and the preview cubes) as the configuration says.

        Every file is opened and checked here, before anything is compiled or written.

        Raises
        ------
        ConfigError
            If a data file is missing (see :meth:`Config.checkDataFiles`).
        DataError
            If a file cannot be read or holds unusable data (labels >= ``n_lab``, NaN or inf
            in the images, labels larger than the images); the message names the file.
        """
        c = self.config
        if self._image_data:
            c.checkDataFiles()
            from elektronn.training.CNNData import CNNData

            kw = dict(batch_size=c.batch_size, strided=(not any(c.MFP)) and c.mode == "img-img",
                      flip=c.flip_data, grey_augment_channels=c.grey_augment_channels,
                      ret_info=c.lazy_labels, ret_example_weights=c.use_example_weights,
                      warp_on=c.warp_on, ignore_thresh=c.example_ignore_threshold)
            self.get_batch_kwargs = kw
            self.get_batch_kwargs_test = dict(kw, batch_size=c.monitor_batch_size, warp_on=False)
            affinity = c.target if c.target in ("malis", "affinity") else False
            self.data = CNNData(c.patch_size, c.dimensions.pred_stride, c.dimensions.offset,
                                c.n_dim, c.n_lab, c.anisotropic_data, c.mode, c.zchxy_order,
                                c.border_mode, c.pre_process, c.upright_x,
                                float_label=(c.target == "regression"), affinity=affinity,
                                seed=c.seed)
            self.data.addDataFromFile(c.data_path, c.label_path, c.d_files, c.l_files,
                                      c.cube_prios, c.valid_cubes, c.downsample_xy)
            if c.preview_data_path is not None:
                try:
                    cubes = trainutils.h5Load(c.preview_data_path)
                except OSError as e:  # truncated or not HDF5
                    raise DataError(f"{c.preview_data_path} (preview_data_path): cannot be "
                                    f"read as an HDF5 file (truncated or damaged?): {e}") from None
                cubes = cubes if isinstance(cubes, list) else [cubes]
                self.preview_data = [np.asarray(d, np.float32) / 255 for d in cubes]
        else:
            self.get_batch_kwargs = dict(batch_size=c.batch_size, **(c.data_batch_kwargs or {}))
            self.get_batch_kwargs_test = dict(batch_size=c.monitor_batch_size)
            name = c.data_class_name
            if isinstance(name, list | tuple):
                cls = trainutils.import_variable_from_file(*name)
            else:
                from elektronn.training import traindata

                cls = getattr(traindata, name)
            self.data = cls(**(c.data_load_kwargs or {}))
            self.preview_data = None
        return self.data

    def createNet(self) -> "MixedConvNN":
        """Build and compile the net (:func:`~elektronn.net.netcreation.createNet`).

        Returns
        -------
        MixedConvNN
        """
        from elektronn.net.netcreation import createNet

        c = self.config
        if c.target == "nll" and c.class_weights is not None:
            assert len(c.class_weights) == self.data.n_lab, \
                f"class_weights needs {self.data.n_lab} entries, got {len(c.class_weights)}"
        if c.mode != "vect-scalar":
            self.cnn = createNet(c, c.patch_size, self.data.n_ch, self.data.n_lab, c.dimensions,
                                 seed=c.seed)
        else:
            n_ch = getattr(self.data, "n_taps", None) if c.rnn_layer_kwargs else None
            self.cnn = createNet(c, self.data.example_shape, n_ch, self.data.n_lab, None,
                                 seed=c.seed)
        self.CG_timeline = self.cnn.CG_timeline
        return self.cnn

    def reset(self) -> None:
        """Re-initialise the weights and optimiser settings and clear the histories (T2 fixed)."""
        c = self.config
        self.cnn.randomizeWeights()
        self.cnn.setOptimizerParams(SGD=c.SGD_params, CG=c.CG_params, RPROP=c.RPROP_params,
                                    LBFGS=c.LBFGS_params, Adam=c.Adam_params,
                                    weight_decay=c.weight_decay or 0.0)
        self.history, self.timeline, self.errors = [], [], []
        self.cnn.CG_timeline.clear()
        self.step, self._done, self._t_offset, self._nll_ema = 0, -1, 0.0, 0.65
        self._next_param_h, self._next_prev_h = c.param_save_h, c.initial_prev_h

    # --- the training folder -------------------------------------------------------------------

    def checkSaveFolder(self, resume: bool = False,
                        param_file: str | os.PathLike | None = None) -> None:
        """Check, before any long work, that the run can use its folder.

        Parameters
        ----------
        resume : bool
            The run continues the one in ``save_path``.
        param_file : str or os.PathLike, optional
            With ``resume``: the parameter file to continue from (default ``-LAST.param``).

        Raises
        ------
        RuntimeError
            If there is nothing to resume from, or ``save_path`` exists and ``overwrite`` is
            False, or replacing it would move the current, home or root directory.
        """
        if resume:
            param_file = Path(param_file or self.last_param_file)
            if not param_file.is_file():
                raise RuntimeError(f"cannot resume: there is no saved run ({param_file} does "
                                   "not exist). Start the run without --resume.")
            return
        if not self.save_path.exists():
            return
        if not self.config.overwrite:
            raise RuntimeError(f"The save directory {self.save_path} does already exist! Set "
                               "overwrite = True to replace it, or resume it.")
        resolved, cwd = self.save_path.resolve(), Path.cwd().resolve()
        if resolved in (cwd, *cwd.parents, Path.home().resolve()) \
                or resolved == Path(resolved.anchor):
            raise RuntimeError(f"Refusing to replace {resolved}: it is the current, home or root "
                               "directory or contains the current one. Choose another save_path.")

    def prepareSaveFolder(self, resume: bool | None = None) -> None:
        """Create ``save_path`` for the run, with backups of the config and trainer script.

        Call it once the data was loaded and checked: an existing folder (``overwrite``) is
        moved aside to ``<save_path>.previous-<time>``, not deleted, and removed only when the
        new run has saved its first parameters (:attr:`previous_run` until then). With
        ``resume`` the folder is kept as it is. Later calls do nothing.

        Parameters
        ----------
        resume : bool, optional
            Default: whether :meth:`resume` was called.

        Raises
        ------
        RuntimeError
            As :meth:`checkSaveFolder`.
        """
        if self._folder_ready:
            return
        resume = self._resuming if resume is None else resume
        self.checkSaveFolder(resume)
        if not resume and self.save_path.exists():
            stamp, k = time.strftime("%Y%m%d-%H%M%S"), 0
            old = self.save_path.with_name(f"{self.save_path.name}.previous-{stamp}")
            while old.exists():  # two replacements within a second
                k += 1
                old = self.save_path.with_name(f"{self.save_path.name}.previous-{stamp}-{k}")
            self.save_path.rename(old)
            self.previous_run = old
            logger.info("The previous run in %s was moved to %s; it is removed when this run "
                        "saves its first parameters", self.save_path, old)
        self.save_path.mkdir(parents=True, exist_ok=True)
        if not resume:
            self.config.backupScripts(folder=self.save_path)
        self._folder_ready = True

    def _drop_previous_run(self):
        if self.previous_run is not None:
            shutil.rmtree(self.previous_run, ignore_errors=True)
            logger.info("Removed the replaced run %s", self.previous_run)
            self.previous_run = None

    # --- files -------------------------------------------------------------------------------

    def _path(self, name):
        return self.save_path / name

    @property
    def last_param_file(self) -> Path:
        """``<save_path>/<save_name>-LAST.param``."""
        return self._path(f"{self.save_name}-LAST.param")

    @property
    def state_file(self) -> Path:
        """``<save_path>/<save_name>.state.json``: where :meth:`resume` continues."""
        return self._path(f"{self.save_name}.state.json")

    @property
    def optimizer_state_file(self) -> Path:
        """``<save_path>/<save_name>.optimizer.npz``: the optimiser's momenta or moments."""
        return self._path(f"{self.save_name}.optimizer.npz")

    def saveState(self, param_file: str | os.PathLike | None = None) -> None:
        """Save what :meth:`resume` needs, each file atomically.

        The parameters (default ``-LAST.param``), the optimiser state (SGD momenta, Adam
        moments, ...; :attr:`optimizer_state_file`) and, written last,
        :attr:`state_file`: the last completed step, the time, the learning rate, the
        snapshot and preview counters and the random states (data, numpy, the net's noise
        streams). Temporary files that killed saves left in the folder are removed.
        """
        self.prepareSaveFolder()
        param_file = Path(param_file or self.last_param_file)
        self.cnn.saveParameters(str(param_file), show=False)
        self._drop_previous_run()
        for folder in (self.save_path, self.save_path / "Backup"):  # e.g. of killed snapshots
            remove_stale_temps(folder)
        opt = self.cnn._optimizers.get(self.config.optimizer)
        arrays = {f"state_{k}": np.asarray(var.get_value())
                  for k, (var, _) in enumerate(getattr(opt, "_state", []))}
        buf = io.BytesIO()
        np.savez(buf, step_count=np.int64(getattr(opt, "step_count", 0)), **arrays)
        trainutils.atomic_write(self.optimizer_state_file, buf.getvalue())
        state = dict(step=self._done, t_passed=self._t_offset + self._elapsed(),
                     nll_ema=float(self._nll_ema), LR=float(self.cnn.SGD_LR.get_value()),
                     momentum=float(self.cnn.SGD_momentum.get_value()),
                     optimizer=self.config.optimizer, next_param_h=self._next_param_h,
                     next_prev_h=self._next_prev_h, saved_raw_preview=self.saved_raw_preview,
                     param_file=param_file.name, param_sha256=_sha256(param_file),
                     random=self._random_states())
        trainutils.atomic_write(self.state_file, json.dumps(state, indent=1).encode())

    def _random_states(self):
        states = {"numpy": _jsonable(np.random.get_state(legacy=False)),
                  "net": [g.get_value(borrow=True).bit_generator.state
                          for g in self.cnn._rng_updates]}
        if isinstance(getattr(self.data, "rng", None), np.random.Generator):
            states["data"] = self.data.rng.bit_generator.state
        return states

    def _set_random_states(self, states):
        state = dict(states["numpy"])
        state["state"] = dict(state["state"], key=np.asarray(state["state"]["key"], np.uint32))
        np.random.set_state(state)
        for g, st in zip(self.cnn._rng_updates, states["net"], strict=True):
            gen = copy.deepcopy(g.get_value())
            gen.bit_generator.state = st
            g.set_value(gen)
        if "data" in states and isinstance(getattr(self.data, "rng", None), np.random.Generator):
            self.data.rng.bit_generator.state = states["data"]

    def _load_optimizer_state(self):
        if not self.optimizer_state_file.is_file():
            logger.warning("No optimiser state (%s): the momenta start from zero",
                           self.optimizer_state_file.name)
            return
        opt = self.cnn._optimizer(self.config.optimizer)  # compiles it now, not at step 1
        with np.load(self.optimizer_state_file, allow_pickle=False) as f:
            arrays = [f[f"state_{k}"] for k in range(len(f.files) - 1)]
            step_count = int(f["step_count"])
        shapes = [var.get_value(borrow=True).shape for var, _ in opt._state]
        if [a.shape for a in arrays] != shapes:
            logger.warning("The optimiser state in %s does not fit the %s optimiser: the "
                           "momenta start from zero", self.optimizer_state_file.name,
                           self.config.optimizer)
            return
        for (var, _), value in zip(opt._state, arrays, strict=True):
            var.set_value(value)
        opt.step_count = step_count

    def resume(self, param_file: str | os.PathLike | None = None) -> None:
        """Continue a saved training where it stopped.

        Restores the parameters, the step, time and learning rate, the optimiser state
        (momenta, Adam moments), the snapshot and preview counters, the random states and
        the history; :meth:`run` then continues with the next step, and gives the history
        an uninterrupted run would have given (the learning rate schedule included).

        Parameters
        ----------
        param_file : str or os.PathLike, optional
            Default ``<save_path>/<save_name>-LAST.param``.

        Raises
        ------
        FileNotFoundError
            If there is nothing to resume from.
        """
        param_file = Path(param_file or self.last_param_file)
        if not param_file.exists():
            raise FileNotFoundError(f"cannot resume: {param_file} does not exist")
        self.cnn.loadParameters(str(param_file), strict=True)
        self._resuming = True
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            if state.get("param_sha256") not in (None, _sha256(param_file)):
                logger.warning("%s is not the parameter file %s was saved with (an "
                               "interrupted save, or another file): the step, optimiser and "
                               "random states may not fit these parameters", param_file.name,
                               self.state_file.name)
            self._done = int(state["step"])
            self.step = self._done + 1
            self._t_offset = float(state["t_passed"])
            self._nll_ema = float(state["nll_ema"])
            self.cnn.setSGDLR(state["LR"])
            self.cnn.setSGDMomentum(state["momentum"])
            self._next_param_h = state.get("next_param_h", self._next_param_h)
            self._next_prev_h = state.get("next_prev_h", self._next_prev_h)
            self.saved_raw_preview = state.get("saved_raw_preview", self.saved_raw_preview)
            if "random" in state:
                self._set_random_states(state["random"])
            self._load_optimizer_state()
        hist = trainutils.loadHist(self.save_name, self.save_path)
        keep = [row for row in hist["history"] if row[0] < self.step]
        self.history, self.errors = keep, [row for row in hist["errors"] if row[0] < self.step]
        self.timeline = [row for row in hist["timeline"] if row[0] < self.step]
        logger.info("Resuming from %s at step %i", param_file, self.step)

    def saveHistory(self, plot: bool = True) -> None:
        """Write the history files and, if ``plot``, the progress plots."""
        self.prepareSaveFolder()
        args = (self.timeline, self.history, self.CG_timeline, self.errors, self.save_name)
        if plot:
            trainutils.plotInfo(*args, folder=self.save_path)
        else:
            trainutils.saveHist(*args, folder=self.save_path)

    # --- batches -----------------------------------------------------------------------------

    def _n_label_parts(self):
        return 2 if self.config.target == "malis" else 1

    def assembleArgs(self, batch: Sequence[np.ndarray]) -> list:
        """Order a batch and the configured extras as the compiled loss expects.

        Fixes T3 of docs/differences.md.

        Parameters
        ----------
        batch : tuple
            ``(images, labels[, seg][, info1, info2][, example_weights])`` as ``getbatch``
            returns it.

        Returns
        -------
        list
            ``[images, labels(, seg), mask_class_labeled, mask_class_not_present,
            class_weights, example_weights, label_prop_thresh]``, each present only when
            configured.
        """
        c = self.config
        batch = list(batch)
        n = 1 + self._n_label_parts()
        args, rest = batch[:n], batch[n:]
        info, weights = [], []
        if c.lazy_labels and self._image_data:
            info, rest = rest[:2], rest[2:]
        if c.use_example_weights and self._image_data:
            weights, rest = rest[:1], rest[1:]
        args += info
        if c.class_weights is not None:
            args.append(np.asarray(c.class_weights, np.float32))
        args += weights
        if c.label_prop_thresh is not None:
            args.append(np.float32(c.label_prop_thresh))
        return args + rest

    def _getbatch(self, kwargs, source="train"):
        return self.data.getbatch(source=source, **kwargs)

    def testModel(self, source: str = "train") -> tuple[float, float]:
        """Loss and error on one monitoring batch, with dropout switched off.

        Parameters
        ----------
        source : {'train', 'valid'}

        Returns
        -------
        nll, error : float
            Means over chunks of ``batch_size`` (weighted by chunk size); ``(nan, nan)`` for
            ``'valid'`` without validation data.
        """
        valid = getattr(self.data, "valid_d", None)
        if source == "valid" and (valid is None or len(valid) == 0):
            return np.nan, np.nan
        batch = list(self._getbatch(self.get_batch_kwargs_test, source))
        noise = [lay.activation_noise for lay in self.cnn.layers
                 if lay.activation_noise is not None]
        rates = [v.get_value() for v in noise]
        for v in noise:
            v.set_value(np.float32(0))
        try:
            n, bs = len(batch[0]), self.config.batch_size
            total_nll = total_err = 0.0
            m = 0
            for k in range(0, n, bs):
                chunk = [b[k:k + bs] for b in batch]
                if len(chunk[0]) < bs and self.cnn.batch_size is not None:
                    break  # a net of fixed batch size cannot take a short chunk
                nll, err = self.cnn.get_error(*self.assembleArgs(chunk))[:2]
                total_nll += float(nll) * len(chunk[0])
                total_err += float(err) * len(chunk[0])
                m += len(chunk[0])
        finally:
            for v, r in zip(noise, rates, strict=True):
                v.set_value(r)
        return (total_nll / m, total_err / m) if m else (np.nan, np.nan)

    # --- previews ----------------------------------------------------------------------------

    def predictAndWrite(self, raw_img: np.ndarray, number: float = 0,
                        export_class: str | int | Sequence[int] = "all",
                        block_name: str | int = "", z_thick: int = 5) -> list[Path]:
        """Predict a block and write the central z-slices of the class maps as PNG.

        Parameters
        ----------
        raw_img : ndarray ``(ch, x, y)`` or ``(ch, x, y, z)``
        number : float
            The hour mark in the file names.
        export_class : 'all', int or list of int
            The classes to write (``'malis'``/``'affinity'``: an RGB of channels 0, 2, 4).
        block_name : str or int
        z_thick : int
            Number of central z-slices written.

        Returns
        -------
        list of Path
            The files written.
        """
        import matplotlib.image

        if self.cnn.batch_size not in (None, 1):
            raise ValueError(f"previews need a net of batch_size 1 (or None), this one has "
                             f"{self.cnn.batch_size}")
        pred = self.cnn.predictDense(raw_img, show_progress=False)
        if pred.shape[0] == 3:  # affinity hack of ELEKTRONN 1.0
            pred[0] = pred.min(axis=0)
        if pred.ndim == 3:
            pred = pred[..., None]
        nz = pred.shape[-1]
        z0 = max(0, (nz - z_thick) // 2)
        zs = range(z0, min(nz, z0 + z_thick))
        written = []

        def save(path, img, **kw):
            buf = io.BytesIO()
            matplotlib.image.imsave(buf, img, format="png", **kw)
            trainutils.atomic_write(path, buf.getvalue())
            written.append(path)

        if export_class in ("malis", "affinity"):
            for z in zs:
                rgb = np.stack([pred[k, :, :, z] for k in (0, 2, 4)
                                if k < pred.shape[0]], -1)
                save(self._path(f"{self.save_name}-pred-{block_name}-rgb-z{z}-{number}hrs.png"),
                     np.clip(rgb, 0, 1))
        else:
            classes = range(pred.shape[0]) if export_class == "all" else np.atleast_1d(
                export_class)
            for cls in classes:
                for z in zs:
                    save(self._path(f"{self.save_name}-pred-{block_name}-c{int(cls)}-z{z}-"
                                    f"{number}hrs.png"), pred[int(cls), :, :, z], cmap="gray",
                         vmin=0, vmax=1)
        if not self.saved_raw_preview:
            raw = raw_img[0] if raw_img.ndim == 4 else raw_img[0][..., None]
            dz = int(self.config.dimensions.offset[0]) if raw_img.ndim == 4 else 0
            for z in zs:
                if z + dz < raw.shape[-1]:
                    save(self._path(f"{self.save_name}-raw-{block_name}-z{z}.png"),
                         raw[:, :, z + dz], cmap="gray")
        return written

    def previewSliceFromTrainData(self, cube_i: int = 0, off: Sequence[int] = (0, 0, 0),
                                  sh: Sequence[int] = (10, 400, 400), number: float = 0,
                                  export_class: str | int | Sequence[int] = "all"
                                  ) -> list[Path]:
        """Predict a block ``(z, x, y)`` of a training cube (T11 fixed: y uses ``off[2]``)."""
        raw = self.data.previewBlock(cube_i, off, sh)
        return self.predictAndWrite(raw, number, export_class)

    def previewSlice(self, number: float = 0, export_class: str | int | Sequence[int] = "all",
                     max_z_pred: int = 5) -> list[Path]:
        """Predict the central slab of every preview cube and write it as PNG.

        Parameters
        ----------
        number : float
            The hour mark in the file names.
        export_class : 'all', int or list of int
        max_z_pred : int
            Number of z-slices written (3-D: the slab is as thick as the net needs for them).
        """
        written = []
        for k, raw in enumerate(self.preview_data or []):
            if self.config.n_dim == 3:
                strd_z = self.cnn.output_strides[0]
                out_z = self.cnn.output_shape[2] * strd_z
                min_z = self.cnn.input_shape[1] + strd_z - 1
                z_thick = min_z if out_z > max_z_pred else \
                    min_z + strd_z * math.ceil((max_z_pred - out_z) / strd_z)
                raw = raw if raw.ndim == 4 else raw[None]
                z0 = max(0, (raw.shape[-1] - z_thick) // 2)
                block = raw[..., z0:z0 + z_thick]
            else:
                raw = raw if raw.ndim == 3 else raw[None]
                block = raw
            written += self.predictAndWrite(block, number, export_class, k, max_z_pred)
        self.saved_raw_preview = True
        return written

    def malisPreviewSlice(self, batch, name="A"):
        """Log the MALIS statistics of a batch and pickle slices for inspection.

        Writes ``MALIS-<name>.pkl`` (:func:`~elektronn.training.trainutils.pickleSave`) into
        the training folder: ``[pred, aff_gt, pos, log(neg + 1), seg_gt, data]`` of the first
        example, the affinity maps as ``(z, x, y, 3)`` (the three edge directions last), the
        segmentation and the raw data as ``(z, x, y)``. Called at every monitoring step when
        the target is ``'malis'``.

        Parameters
        ----------
        batch : sequence
            ``(images, affinities, segmentation, ...)`` as for the loss.
        name : str or int
            Part of the file name (the step at monitoring time).

        Returns
        -------
        dict
            The statistics: ``nll``, ``n_pos``, ``n_neg``, ``n_tot``, ``false_splits``,
            ``false_merges``, ``rand_index``.
        """
        data, aff_gt, seg_gt = (np.asarray(b) for b in batch[:3])
        pred = np.asarray(self.cnn.class_probabilities(data))[0]  # (3 * n_lab, z, x, y)
        out = self.cnn.malis_stats(data, aff_gt, seg_gt)
        keys = ("nll", "n_pos", "n_neg", "n_tot", "false_splits", "false_merges", "rand_index")
        stats = {k: float(v) for k, v in zip(keys, out[:7], strict=True)}
        pos, neg = np.asarray(out[7]), np.asarray(out[8])
        logger.info("MALIS %s: %s", name, ", ".join(f"{k}={v:.6g}" for k, v in stats.items()))
        n_cls = pred.shape[0] // 3
        slices = [np.transpose(pred[1::n_cls], (1, 2, 3, 0)), np.transpose(aff_gt[0], (1, 2, 3, 0)),
                  np.transpose(pos, (1, 2, 3, 0)), np.log(np.transpose(neg, (1, 2, 3, 0)) + 1),
                  seg_gt[0], data[0, :, 0]]
        trainutils.pickleSave(slices, self._path(f"MALIS-{name}.pkl"))
        return stats

    def debugGetCNNBatch(self) -> tuple | None:
        """Plot one training example and its label (img-img), as ``debugGetCNNBatch.png``.

        Returns
        -------
        tuple
            ``(data, label, info1, info2)`` of the batch.
        """
        if self.config.mode != "img-img" or not self._image_data:
            return None
        self.prepareSaveFolder()
        kw = dict(self.get_batch_kwargs_test, strided=False, ret_info=True,
                  ret_example_weights=False)
        batch = self.data.getbatch(source="train", **kw)
        d, lab = batch[0], batch[1]
        info1, info2 = batch[-2], batch[-1]
        if self.config.target in ("affinity", "malis"):
            lab = lab.min(axis=1)
        off = [int(o) for o in self.data.offset]
        if self.config.n_dim == 3:
            img, lb = d[0, off[0], 0, off[1]:-off[1] or None, off[2]:-off[2] or None], lab[0, 0]
        else:
            img, lb = d[0, 0, off[0]:-off[0] or None, off[1]:-off[1] or None], lab[0]
        fig, axes = trainutils._figure(1)
        fig.clear()
        axes = [fig.add_subplot(1, 3, k + 1) for k in range(3)]
        axes[0].imshow(img, cmap="gray", interpolation="none")
        axes[0].set_title("data")
        axes[1].imshow(lb, cmap="gray", interpolation="none")
        axes[1].set_title("label")
        lb_n = (lb - lb.min()) / (np.ptp(lb) + 1e-9)
        axes[2].imshow(0.75 * img + 0.25 * lb_n, cmap="gray", interpolation="none")
        axes[2].set_title("overlay")
        trainutils.save_png(fig, self._path("debugGetCNNBatch.png"), bbox_inches="tight")
        return d, batch[1], info1, info2

    # --- the loop ----------------------------------------------------------------------------

    def _elapsed(self):
        return time.time() - self._t_start if getattr(self, "_t_start", None) else 0.0

    def run(self) -> str:
        """Train until ``n_steps``, ``max_runtime``, Ctrl-C or divergence; save at the end.

        After :meth:`resume` the run continues with the step after the saved one. A
        non-finite loss (:class:`~elektronn.net.optimizer.NonFiniteLossError`; the optimiser
        did not apply that step) stops the run: the last good parameters go to
        ``<save_name>_end.param`` with the final plots, while ``-LAST.param`` and the state
        stay those of the last monitoring step (a point to resume from, e.g. with a smaller
        learning rate). :attr:`stop_message` says at which step and why it stopped.

        Returns
        -------
        str
            :attr:`stop_reason`: ``'steps'``, ``'runtime'``, ``'interrupt'`` or
            ``'diverged'``.
        """
        from elektronn.net.optimizer import NonFiniteLossError

        c, cnn = self.config, self.cnn
        self.prepareSaveFolder()
        # entries before the first step were applied by the run that was resumed
        schedule = sorted(tuple(e) for e in (c.LR_schedule or []) if e[0] >= self.step)
        bg = None
        self._t_start = time.time()
        if c.background_processes:
            bg = self._start_workers()
        t_train_ema, t_it_ema = 2.0, 2.0
        freq = c.history_freq[0] if c.history_freq else 0
        self.stop_reason, self.stop_message = "steps", f"{c.n_steps} steps done"
        t_last = time.time()
        i = self.step
        interrupt = console.InterruptFlag().install()
        try:
            for i in range(self.step, c.n_steps):
                batch = bg.get() if bg is not None else self._getbatch(self.get_batch_kwargs)
                args = self.assembleArgs(batch)
                try:
                    nll, _, t_train = cnn.trainingStep(*args, mode=c.optimizer)
                except NonFiniteLossError as e:  # the optimiser did not apply the step
                    loss = getattr(e, "loss", None)
                    self._diverged(i, f"the loss is {loss}" if loss is None or not np.isfinite(
                        loss) else f"a gradient is not finite (the loss is {loss})")
                    break
                if not np.isfinite(nll):  # an optimiser that only warns
                    self._diverged(i, f"the loss is {nll}")
                    break
                self._nll_ema = trainutils.smooth_nll(self._nll_ema, nll, i)
                now = time.time()
                t_train_ema = 0.8 * t_train_ema + 0.2 * t_train
                t_it_ema = 0.8 * t_it_ema + 0.2 * (now - t_last)
                t_last = now
                t_passed = self._t_offset + (now - self._t_start)
                batch_char = float(np.mean(args[1]))
                self.timeline.append([i, t_passed, self._nll_ema, float(nll), batch_char])

                hours = t_passed / 3600  # of the whole training: resumed runs continue
                if c.param_save_h and hours >= self._next_param_h:
                    name = f"{self.save_name}-{self._next_param_h:g}h.param"
                    cnn.saveParameters(str(self._path(name)), show=False)
                    self._next_param_h += c.param_save_h
                if self.preview_data is not None and hours >= self._next_prev_h:
                    try:
                        self.previewSlice(number=round(self._next_prev_h, 3),
                                          **(c.preview_kwargs or {}))
                    except Exception as e:  # a preview must never stop the training
                        logger.warning("Preview failed: %s: %s", type(e).__name__, e)
                    self._next_prev_h += c.prev_save_h or float("inf")

                while schedule and i >= schedule[0][0]:
                    cnn.setSGDLR(schedule[0][1])
                    logger.info("LR schedule: LR set to %g at step %i", schedule[0][1], i)
                    schedule.pop(0)
                if i % 1000 == 0:  # T6: also at i=0
                    cnn.setSGDLR(cnn.SGD_LR.get_value() * c.LR_decay)
                self.step, self._done = i + 1, i
                if freq and i % freq == 0:
                    self._monitor(i, t_passed, nll, args, batch_char, t_it_ema, t_train_ema)
                if interrupt.requested:  # Ctrl-C: the console, between two steps
                    action, paused = console.open_console(self, interrupt, i, nll, t_train_ema,
                                                          t_it_ema, t_passed)
                    if action != console.RESUME:
                        self.stop_reason = "killed" if action == console.KILL else "interrupt"
                        self.stop_message = f"stopped from the console after step {i}"
                        break
                    self._t_start += paused  # the pause is not training time
                    t_last += paused
                    freq = c.history_freq[0] if c.history_freq else 0  # 'sethist'
                    if bg is not None:  # the workers' copy of the data may be outdated
                        bg.shutdown()
                        bg = self._start_workers()
                if now - self._t_start > c.max_runtime:
                    self.stop_reason = "runtime"
                    self.stop_message = f"the maximal runtime ({c.max_runtime} s) was reached"
                    logger.info("Maximal runtime (%s s) reached", c.max_runtime)
                    break
        except KeyboardInterrupt:
            self.stop_reason = "interrupt"
            self.stop_message = f"interrupted (Ctrl-C) at step {i}"
            logger.warning("Interrupted (Ctrl-C) at step %i: saving and stopping", i)
        finally:
            interrupt.uninstall()
            with _interrupts_deferred():
                if bg is not None:
                    bg.shutdown()
                self._finish()
        return self.stop_reason

    def _start_workers(self):
        c = self.config
        return BackgroundProc(self.data.getbatch, n_proc=max(2, int(c.background_processes)),
                              target_kwargs=self.get_batch_kwargs, seed=self.config.seed)

    def _diverged(self, i, cause):
        self.stop_reason = "diverged"
        self.stop_message = (f"the training diverged at step {i}: {cause}. The parameters of "
                             f"step {i - 1} are saved to {self.save_name}_end.param")
        logger.error("%s; %s keeps those of the last monitoring step.", self.stop_message,
                     self.last_param_file.name)

    def _monitor(self, i, t_passed, nll, args, batch_char, t_it_ema, t_train_ema):
        """Monitoring step: losses, errors, history, ``-LAST.param``, plots, status line."""
        c, cnn = self.config, self.cnn
        nll_gain = float(cnn.get_loss(*args)[0]) - float(nll)
        train_nll, train_err = self.testModel("train")
        valid_nll, valid_err = self.testModel("valid")
        if c.target != "regression":
            train_err, valid_err = 100 * train_err, 100 * valid_err
        lr = float(cnn.SGD_LR.get_value())
        self.errors.append([i, t_passed, train_err, valid_err])
        self.history.append([i, t_passed, self._nll_ema, float(nll), train_nll, valid_nll,
                             nll_gain, lr])
        if c.target == "malis":
            try:
                self.malisPreviewSlice(args, name=i)
            except Exception as e:  # a preview must never stop the training
                logger.warning("MALIS preview failed: %s: %s", type(e).__name__, e)
        self.saveState()
        self.saveHistory(plot=bool(c.plot_on) and i > 30)
        if c.print_status:
            kind, unit = ("MSE", "std") if c.target == "regression" else ("NLL", "%")
            logger.info("%05i %sm=%.3f, train=%05.2f%s, valid=%05.3f%s, prev=%04.1f, "
                        "NLLdiff=%+.1e, LR=%.5f, %.1f it/s, %s", i, kind, self._nll_ema,
                        train_err, unit, valid_err, unit, batch_char * 100, nll_gain, lr,
                        1.0 / max(t_it_ema, 1e-9), pprinttime(t_passed))

    def _finish(self):
        """Save the end parameters and plots, and (unless diverged) ``-LAST.param``/state.

        Nothing is saved after the console's ``kill``.
        """
        if self.stop_reason == "killed":
            logger.info("End of Training (killed: nothing saved)")
            return
        self.cnn.saveParameters(str(self._path(f"{self.save_name}_end.param")), show=False)
        if self.stop_reason != "diverged":
            self.saveState()
        self.saveHistory(plot=bool(self.config.plot_on))
        logger.info("End of Training (%s: %s)\n%s\n%s", self.stop_reason, self.stop_message,
                    "#" * 60, "#" * 60)


class _interrupts_deferred:
    """Hold Ctrl-C back while the final files are written (main thread only).

    A Ctrl-C in this time is reported and ignored: the save completes, so the files are
    those of the end of the run.
    """

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    @staticmethod
    def _handler(signum, frame):
        logger.warning("Ctrl-C again: still saving, the run ends when the files are written")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(value):
    """Numpy arrays and scalars in nested dicts/tuples as lists and Python numbers."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value
