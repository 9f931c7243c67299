"""Defaults, loss targets and optimiser names shared by :mod:`elektronn.net` and
:mod:`elektronn.training`: each is defined here once.

ELEKTRONN 1.0 has two levels of optimiser defaults, with different values, and both are kept:

* :data:`NET_OPTIMIZER_DEFAULTS`, the net's own (``MixedConvNN.setOptimizerParams`` fills
  missing keys from it; the optimiser classes use it when given no values). A new net
  trains with SGD at the rate :data:`NEW_NET_SGD` (0.09) until ``setOptimizerParams`` is
  called, which sets 0.001 unless ``SGD={'LR': ...}`` says otherwise (as measured on ELEKTRONN
  1.0.14).
* :data:`CONFIG_OPTIMIZER_DEFAULTS`, the training configuration's (the ``*_params`` options);
  they differ in CG only: ``n_steps`` 4 and ``beta`` 0.75 instead of 3 and 0.7.

Every mapping here is read-only; copy it (``dict(...)``) to change values.

Examples
--------
>>> NET_OPTIMIZER_DEFAULTS["CG"]["n_steps"], CONFIG_OPTIMIZER_DEFAULTS["CG"]["n_steps"]
(3, 4)
>>> OPTIMIZER_KEYS["SGD"]
('LR', 'momentum')
"""

import copy
from types import MappingProxyType

__all__ = [
    "TARGETS",
    "OPTIMIZERS",
    "NEW_NET_SGD",
    "NET_OPTIMIZER_DEFAULTS",
    "CONFIG_OPTIMIZER_DEFAULTS",
    "OPTIMIZER_KEYS",
    "PREDICT_TWIN_BYTES",
    "PREDICT_TWIN_MAC",
    "PREDICT_TWIN_KEEP",
    "architecture_defaults",
]

TARGETS = ("nll", "nll_weak", "regression", "affinity", "malis", "nll_mutiple_binary")
"""The loss targets of ``MixedConvNN.compileOutputFunctions`` (and the ``target`` option)."""

OPTIMIZERS = ("SGD", "CG", "RPROP", "LBFGS", "Adam")
"""The optimiser names (``trainingStep(mode=...)`` and the ``optimizer`` option)."""


def _frozen(mapping):
    return MappingProxyType({key: MappingProxyType(dict(value)) if isinstance(value, dict)
                             else value for key, value in mapping.items()})


NEW_NET_SGD = MappingProxyType({"LR": 0.09, "momentum": 0.9})
"""SGD's learning rate and momentum on a new net, before ``setOptimizerParams``."""

_RPROP = {"penalty": 0.35, "gain": 0.2, "beta": 0.7, "initial_update_size": 1e-4}
_ADAM = {"LR": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
_LBFGS = {"maxfun": 40, "maxiter": 4, "m": 10, "factr": 1e2, "pgtol": 1e-9, "iprint": -1}

NET_OPTIMIZER_DEFAULTS = _frozen({
    "SGD": {"LR": 0.001, "momentum": 0.9},
    "CG": {"n_steps": 3, "alpha": 0.35, "beta": 0.7, "max_step": 0.02, "min_step": 8e-5,
           "only_descent": False, "show": False},
    "RPROP": _RPROP,
    "LBFGS": _LBFGS,
    "Adam": _ADAM,
})
"""The net's own hyperparameter defaults, per optimiser (level 1)."""

CONFIG_OPTIMIZER_DEFAULTS = _frozen({
    "SGD": NET_OPTIMIZER_DEFAULTS["SGD"],
    "CG": {"n_steps": 4, "alpha": 0.35, "beta": 0.75, "max_step": 0.02, "min_step": 8e-5},
    "RPROP": _RPROP,
    "LBFGS": _LBFGS,
    "Adam": _ADAM,
})
"""The training configuration's defaults of the options ``SGD_params``, ``CG_params`` ...
(level 2)."""

OPTIMIZER_KEYS = MappingProxyType(
    {name: tuple(defaults) for name, defaults in NET_OPTIMIZER_DEFAULTS.items()})
"""The hyperparameter keys each optimiser accepts; any other key is an error."""

PREDICT_TWIN_BYTES = 256 * 2**20
"""Memory budget of one forward pass of the larger net ``predictDense`` may build for an image
(:mod:`elektronn.net.prednet`); 0: always predict with the trained net itself.  Read at every
call, so it can be changed at run time."""

PREDICT_TWIN_MAC = 2 * 10**9
"""``predictDense`` builds that net at once when a call would take at least this many
multiply-adds with the trained net itself (otherwise when the same image geometry comes back)."""

PREDICT_TWIN_KEEP = 4
"""How many such nets (one per tile size) a trained net keeps."""

_ARCHITECTURE = {
    "filters": [], "pool": [], "nof_filters": [], "activation_func": "relu", "MFP": [],
    "pooling_mode": "max", "dropout_rates": [], "batch_size": 1, "rnn_layer_kwargs": None,
    "MLP_layers": [], "target": "nll", "class_weights": None, "use_example_weights": False,
    "lazy_labels": False, "label_prop_thresh": None,
    **{f"{name}_params": dict(CONFIG_OPTIMIZER_DEFAULTS[name]) for name in OPTIMIZERS},
    "weight_decay": False, "param_file": None,
}


def architecture_defaults():
    """Return a fresh copy of the configuration options that describe a net, with their
    defaults (level 2).

    These are the options ``elektronn.net.netcreation.createNet`` reads; the training
    configuration (:mod:`elektronn.training.config`) takes their defaults from here.

    Returns
    -------
    dict
        ``{option name: default}``, deep copies.

    Examples
    --------
    >>> architecture_defaults()["CG_params"]["beta"]
    0.75
    """
    return copy.deepcopy(_ARCHITECTURE)
