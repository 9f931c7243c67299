"""Build a :class:`~elektronn.net.convnet.MixedConvNN` from a configuration or a parameter file.

:func:`createNet` is what the training pipeline uses: it turns the architecture options of a
configuration (``filters``, ``pool``, ``nof_filters``, ``MLP_layers`` ...) into layers, compiles
the net and sets its optimiser, dropout and initial parameters. :func:`createNetfromParams`
infers a conv-only architecture from a saved parameter file, e.g. to predict with a trained net
without its configuration.
"""

import copy
import logging
import os
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from elektronn.defaults import architecture_defaults
from elektronn.net import paramfile
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator

__all__ = ["CONFIG_DEFAULTS", "createNet", "createNetfromParams"]

logger = logging.getLogger("elektronn")

CONFIG_DEFAULTS = MappingProxyType(architecture_defaults())
"""The configuration options :func:`createNet` reads, with the defaults of ELEKTRONN 1.0's
``MasterConfig`` that it uses for options the configuration does not have (read-only; the
training configuration takes its defaults of these options from the same place,
:func:`elektronn.defaults.architecture_defaults`)."""


# --- createNet -----------------------------------------------------------------------------------


def _option(config, name):
    """``config.name`` (or ``config[name]`` for a mapping), else a copy of the default."""
    if isinstance(config, Mapping):
        if name in config:
            return config[name]
    elif hasattr(config, name):
        return getattr(config, name)
    return copy.deepcopy(CONFIG_DEFAULTS[name])


def _per_layer(value, n, name):
    """A scalar (or str) repeated ``n`` times; a sequence as a list of at least ``n`` entries."""
    if isinstance(value, str) or np.ndim(value) == 0:
        return [value] * n
    values = list(value)
    if len(values) < n:
        raise ValueError(f"{name} has {len(values)} entries, the net needs {n}: {value!r}")
    return values


def _architecture(config):
    """The layer options of ``config``, checked and expanded to per-layer lists.

    Scalars are expanded as ``Config.fixValues`` of ELEKTRONN 1.0 does, so a configuration
    that was not processed by it (e.g. a ``SimpleNamespace``) gives the same net.
    """
    arch = {name: _option(config, name) for name in CONFIG_DEFAULTS}
    filters, pool, nof = (list(arch[k]) for k in ("filters", "pool", "nof_filters"))
    if not len(filters) == len(pool) == len(nof):
        raise ValueError(f"filters, pool and nof_filters need one entry per conv layer, got "
                         f"{len(filters)}, {len(pool)} and {len(nof)} entries")
    n_conv, mlp = len(filters), list(arch["MLP_layers"])
    n_layers = n_conv + len(mlp)
    mfp = arch["MFP"]
    if mfp is None or mfp is False or (np.ndim(mfp) > 0 and len(mfp) == 0):
        mfp = [False] * n_conv
    elif mfp is True:
        mfp = [True] * n_conv
    rates = arch["dropout_rates"]
    if rates is None or np.ndim(rates) == 0:
        rates = [rates] * n_layers
    rates = list(rates)
    if rates and len(rates) != n_layers:
        raise ValueError(f"dropout_rates needs one rate per layer ({n_conv} conv + {len(mlp)} "
                         f"MLP layers) or none, got {len(rates)}: {rates!r}")
    arch.update(
        filters=filters, pool=pool, nof_filters=nof, MLP_layers=mlp, dropout_rates=rates,
        MFP=_per_layer(mfp, n_conv, "MFP")[:n_conv],
        pooling_mode=_per_layer(arch["pooling_mode"], n_conv, "pooling_mode")[:n_conv],
        activation_func=_per_layer(arch["activation_func"], n_layers, "activation_func"),
    )
    return arch


def createNet(config, input_size, n_ch, n_lab, dimension_calc, *, seed=None):
    """Build, compile and configure a net as the configuration describes it.

    Parameters
    ----------
    config : object or mapping
        The configuration, with the option names of ELEKTRONN 1.0's ``Config`` as attributes
        (or keys). Read are, with the default used when an option is missing:

        * ``filters=[]``, ``pool=[]``, ``nof_filters=[]``: one entry per conv layer (3-D sizes
          in zxy order, as after ``Config.fixValues``);
        * ``activation_func='relu'``: one per conv and MLP layer, or one for all;
        * ``MFP=[]`` (``[]``, ``False`` or ``None``: no max-fragment-pooling; ``True``: all
          conv layers), ``pooling_mode='max'`` (one per conv layer or one for all);
        * ``dropout_rates=[]``: one drop rate per conv and MLP layer (a scalar is used for
          all); dropout is enabled when the list is non-empty and its first entry is not None;
        * ``batch_size=1``, ``rnn_layer_kwargs=None`` (the keyword arguments of
          ``addRecurrentLayer``), ``MLP_layers=[]`` (output counts of the MLP layers);
        * ``target='nll'``, ``class_weights=None``, ``use_example_weights=False``,
          ``lazy_labels=False``, ``label_prop_thresh=None``;
        * ``SGD_params``, ``CG_params``, ``RPROP_params``, ``LBFGS_params``,
          ``Adam_params`` (the training configuration's optimiser defaults,
          :data:`elektronn.defaults.CONFIG_OPTIMIZER_DEFAULTS`), ``weight_decay=False``;
        * ``param_file=None``: a parameter file to initialise the net from (adaptive
          ``loadParameters``).

        The defaults are in :data:`CONFIG_DEFAULTS`.
    input_size : int or tuple of int
        Spatial input size (``(x, y)`` or ``(z, x, y)``; the feature count for MLPs/RNNs).
    n_ch : int or None
        Number of input channels (the number of time steps for an RNN).
    n_lab : int
        Number of classes (output neurons).
    dimension_calc : CNNCalculator or None
        The calculator the input size was chosen with (``predictDense`` takes its offset).
    seed : int, optional
        Seed of the net's random numbers (see :class:`MixedConvNN`).

    Returns
    -------
    MixedConvNN
        The compiled net.

    Raises
    ------
    ValueError
        If the per-layer options do not fit together (e.g. ``filters`` and ``nof_filters`` of
        different lengths, too few activation functions or dropout rates).

    Notes
    -----
    The layers, in order: a conv layer per ``filters`` entry, a recurrent layer if
    ``rnn_layer_kwargs`` is set, a perceptron per ``MLP_layers`` entry, and an output layer
    with ``n_lab`` outputs and linear activation: a perceptron after MLP or recurrent layers,
    otherwise a 1×1 conv layer (an affinity or MALIS layer for the targets ``'affinity'`` and
    ``'malis'``). ``setOptimizerParams`` is called only if the net has it. Unlike ELEKTRONN
    1.0, per-layer lists that are too short raise instead of silently dropping layers.
    """
    arch = _architecture(config)
    rates = arch["dropout_rates"]
    enable_dropout = bool(rates) and rates[0] is not None
    rnn = arch["rnn_layer_kwargs"]
    cnn = MixedConvNN(input_size, input_depth=n_ch, batch_size=arch["batch_size"],
                      enable_dropout=enable_dropout, recurrent=rnn is not None,
                      dimension_calc=dimension_calc, seed=seed)
    acts = arch["activation_func"]
    conv = zip(arch["nof_filters"], arch["filters"], arch["pool"], acts, arch["MFP"],
               arch["pooling_mode"], strict=False)  # activation_func also lists MLP layers
    for n, f, p, act, mfp, mode in conv:
        cnn.addConvLayer(n, f, p, act, use_fragment_pooling=bool(mfp), pooling_mode=mode)
    if rnn is not None:
        cnn.addRecurrentLayer(**rnn)
    for n, act in zip(arch["MLP_layers"], acts[len(arch["filters"]):], strict=False):
        cnn.addPerceptronLayer(n, act)
    target = arch["target"]
    if arch["MLP_layers"] or rnn is not None:
        cnn.addPerceptronLayer(n_lab, "linear", force_no_dropout=True)
    else:
        affinity = {"malis": "malis", "affinity": True}.get(target, False)
        cnn.addConvLayer(n_lab, 1, 1, "linear", is_last_layer=True, affinity=affinity)

    cnn.compileOutputFunctions(target, arch["class_weights"] is not None,
                               bool(arch["use_example_weights"]), bool(arch["lazy_labels"]),
                               arch["label_prop_thresh"] is not None)
    set_optimizer = getattr(cnn, "setOptimizerParams", None)
    if set_optimizer is not None:
        set_optimizer(SGD=dict(arch["SGD_params"] or {}), CG=dict(arch["CG_params"] or {}),
                      RPROP=dict(arch["RPROP_params"] or {}),
                      LBFGS=dict(arch["LBFGS_params"] or {}),
                      Adam=dict(arch["Adam_params"] or {}),
                      weight_decay=arch["weight_decay"] or 0.0)
    else:
        logger.info("the net has no setOptimizerParams: optimiser settings not applied")
    if enable_dropout:
        cnn.setDropoutRates(rates)
    if arch["param_file"] is not None:
        cnn.loadParameters(os.path.expanduser(os.fspath(arch["param_file"])))
    return cnn


# --- createNetfromParams -------------------------------------------------------------------------


def _conv_shapes(objects, path):
    """The W shapes of a parameter file's layers; raise for anything but a 2-D or 3-D conv net."""
    if not objects or not isinstance(objects[0], list | tuple) or not objects[0]:
        raise paramfile.ParameterFileError(path, "the first object is not a list of layer shapes")
    shapes = [tuple(int(s) for s in np.atleast_1d(shape)) for shape in objects[0]]
    for i, shape in enumerate(shapes):
        kind = {1: "a perceptron", 2: "a recurrent"}.get(len(shape))
        if kind:
            raise NotImplementedError(
                f"{path}: layer {i} is {kind} layer (first parameter of shape {shape}); "
                "createNetfromParams only builds conv nets. Build the net with MixedConvNN and "
                "call loadParameters instead.")
        if len(shape) not in (4, 5):
            raise ValueError(f"{path}: layer {i} has a first parameter of shape {shape}, not "
                             "the W of a 2-D (4 axes) or 3-D (5 axes) conv layer")
    if len({len(s) for s in shapes}) > 1:
        raise ValueError(f"{path}: the file mixes 2-D and 3-D conv layers: {shapes}")
    ch_axis = 1 if len(shapes[0]) == 4 else 2
    for i in range(1, len(shapes)):
        if shapes[i][ch_axis] != shapes[i - 1][0]:
            raise ValueError(f"{path}: layer {i} takes {shapes[i][ch_axis]} channels but layer "
                             f"{i - 1} has {shapes[i - 1][0]} filters; not a plain conv stack")
    return shapes


def _flags(MFP, n):
    """Per-layer MFP flags from None, a bool or a list with one entry per layer."""
    if MFP is None or isinstance(MFP, bool | np.bool_):
        return [bool(MFP)] * n
    flags = [bool(m) for m in MFP]
    if len(flags) != n:
        raise ValueError(f"MFP needs one entry per layer of the file ({n}), got {MFP!r}")
    return flags


def _expand_pools(poolings, n_dim):
    """Pooling factors as per-dimension int tuples (for comparing them)."""
    return [(int(p),) * n_dim if np.ndim(p) == 0 else tuple(int(q) for q in p) for p in poolings]


def createNetfromParams(param_file, patch_size, batch_size=1, activation_func="tanh",
                        poolings=None, MFP=None, only_prediction=False, *,
                        legacy_last_filter=False, seed=None):
    """Build a conv net whose architecture is inferred from a parameter file, and load it.

    This needs no configuration, so it only allows restricted choices and sets no optimiser
    parameters. The file is read with the restricted reader of :mod:`elektronn.net.paramfile`,
    which never executes code.

    Parameters
    ----------
    param_file : str or os.PathLike
        A parameter file of a 2-D or 3-D conv net (``saveParameters``). Its first object, the
        list of W shapes, gives the number of filters, the filter sizes and the input channels;
        its last object, if present, the pooling factors.
    patch_size : int or tuple of int
        Desired input size, ``(x, y)`` or ``(z, x, y)``; the next valid size is used (see
        :func:`~elektronn.net.netutils.CNNCalculator`).
    batch_size : int, optional
        Number of input patches (must be 1 with MFP).
    activation_func : str or list of str, optional
        Activation function of all layers, or one per layer.
    poolings : list, optional
        Pooling factors per layer, for files that do not store them. **Poolings stored in the
        file override this argument.**
    MFP : bool or list of bool, optional
        Max-fragment-pooling, for all layers or per layer (default: none). The last layer uses
        MFP if any layer before it does.
    only_prediction : bool, optional
        Skip the gradients (faster to compile; the net cannot be trained).
    legacy_last_filter : bool, optional
        ELEKTRONN 1.0 built the last layer with filter size 1 whatever the file said, so a
        last layer with larger filters was loaded adaptively (cut). By default the file's
        filter size is used, which gives the same net for files with a 1×1 last layer (all
        nets made by :func:`createNet`) and the saved net for the others; ``True`` builds the
        original's last layer (the input size is then chosen for that net, so it may differ
        from the original's choice, which used the file's filter size).
    seed : int, optional
        Seed of the net's random numbers (see :class:`MixedConvNN`).

    Returns
    -------
    MixedConvNN
        The compiled net with the file's parameters. Its ``dimension_calc`` is the calculator
        of the architecture (a fix of ELEKTRONN 1.0, docs/differences.md, N33), so
        ``predictDense`` needs no
        explicit offset, and its ``patch_size`` is the valid input size chosen.

    Raises
    ------
    NotImplementedError
        If the file holds perceptron or recurrent layers.
    ValueError
        If there is no pooling information, or the file, poolings, MFP flags or activation
        functions do not describe one consistent conv net.
    ParameterFileError
        If the file is not a readable parameter file.
    """
    path = os.fspath(param_file)
    objects = paramfile.read_param_file(path)
    shapes = _conv_shapes(objects, path)
    n_lay, n_dim = len(shapes), len(shapes[0]) - 2
    pset = paramfile.split_layers(objects, path=path)
    logger.info("Shapes are: %s\n#Layers = %i", shapes, n_lay)
    if pset.poolings is not None:
        if poolings is not None and _expand_pools(poolings, n_dim) != pset.poolings:
            logger.warning("the poolings %s of the file override the argument %s",
                           pset.poolings, poolings)
        poolings = pset.poolings
        logger.info("Found Pooling info: %s", poolings)
    elif poolings is None:
        raise ValueError("No Pooling info found in file or provided")
    poolings = list(poolings)
    if len(poolings) != n_lay:
        raise ValueError(f"{n_lay} layers need {n_lay} poolings, got {len(poolings)}: "
                         f"{poolings!r}")
    mfp = _flags(MFP, n_lay)
    mfp[-1] = mfp[-1] or any(mfp[:-1])  # what addConvLayer(is_last_layer=True) does
    acts = _per_layer(activation_func, n_lay, "activation_func")
    if len(acts) != n_lay:
        raise ValueError(f"activation_func needs one entry per layer ({n_lay}), got {len(acts)}")

    nof = [s[0] for s in shapes]
    n_ch = shapes[0][1] if n_dim == 2 else shapes[0][2]
    filters = [s[2:] if n_dim == 2 else (s[1],) + s[3:] for s in shapes]
    if legacy_last_filter:
        filters[-1] = (1,) * n_dim
    dims = CNNCalculator(filters, poolings, desired_input=patch_size, MFP=mfp,
                         force_center=False, n_dim=n_dim)
    cnn = MixedConvNN(dims.input, input_depth=n_ch, batch_size=batch_size,
                      dimension_calc=dims, seed=seed)
    for i, (n, f, p, act, m) in enumerate(zip(nof, filters, poolings, acts, mfp, strict=True)):
        cnn.addConvLayer(n, f, p, act, use_fragment_pooling=m, is_last_layer=i == n_lay - 1)
    cnn.compileOutputFunctions(target="nll", only_forward=only_prediction)
    cnn.loadParameters(path)
    return cnn
