"""``MixedConvNN``: build a network layer by layer, compile it, train it, predict with it.

The class keeps the API of ELEKTRONN 1.0; the work is done by the layer modules, the loss
module (:mod:`elektronn.net.losses`), the optimisers (:mod:`elektronn.net.optimizer`), dense
prediction (:mod:`elektronn.net.prediction`) and the parameter files
(:mod:`elektronn.net.paramfile`).
"""

import functools
import inspect
import logging
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable

from elektronn import backend
from elektronn.defaults import NET_OPTIMIZER_DEFAULTS, NEW_NET_SGD, OPTIMIZERS, TARGETS
from elektronn.net import optimizer, paramfile, prediction
from elektronn.net._functions import Arg, CheckedFunction
from elektronn.net._graph import RandomStreams, compile_function
from elektronn.net.convlayer2d import ConvLayer2d
from elektronn.net.convlayer3d import AffinityLayer3d, ConvLayer3d, MalisLayer
from elektronn.net.perceptronlayer import PerceptronLayer, RecurrentLayer

__all__ = ["MixedConvNN"]

logger = logging.getLogger("elektronn")


def _printOps(n):
    """Format a count of operations like ELEKTRONN 1.0 (``'Computational Cost: 1.2 Giga Ops'``)."""
    scales = ((1e12, "Tera Ops"), (1e9, "Giga Ops"), (1e6, "Mega Ops"), (1e3, "kilo Ops"))
    factor, unit = next((s for s in scales if n >= s[0]), scales[-1])
    return f"Computational Cost: {n / factor:.1f} {unit}"


def _recorded(method):
    """Record a successful top-level call of a building method in the net's recipe.

    The recipe (constructor arguments, then every ``add*Layer`` / ``compile*`` call in order) is
    what a pickled net carries instead of its PyTensor graph: unpickling replays it and then
    restores the values of the shared variables (see :meth:`MixedConvNN.__getstate__`).
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        depth = self.__dict__.get("_recipe_depth", 0)
        self.__dict__["_recipe_depth"] = depth + 1
        try:
            result = method(self, *args, **kwargs)
        finally:
            self.__dict__["_recipe_depth"] = depth
        if depth == 0:
            bound = signature.bind(self, *args, **kwargs)
            call = (method.__name__, dict(list(bound.arguments.items())[1:]))
            if method.__name__ == "__init__":
                self.__dict__["_recipe"] = [call]
            else:
                self.__dict__.setdefault("_recipe", []).append(call)
        return result

    return wrapper


def _shared_values(obj):
    """``{attribute: value}`` of the shared variables of ``obj`` that hold arrays (not RNGs)."""
    return {name: var.get_value() for name, var in vars(obj).items()
            if isinstance(var, SharedVariable) and isinstance(var.get_value(), np.ndarray)}


def _expand(value, n_dim, name):
    """Expand a scalar to ``n_dim`` ints; check the length of a sequence."""
    vals = [value] * n_dim if np.ndim(value) == 0 else list(value)
    if len(vals) != n_dim or any(int(v) < 1 for v in vals):
        raise ValueError(f"{name} must be a positive int or {n_dim} positive ints, got {value!r}")
    return tuple(int(v) for v in vals)


class MixedConvNN:
    """A network of 2-D/3-D conv layers, perceptron layers and/or a recurrent layer.

    Parameters
    ----------
    input_size : int or tuple of int
        Spatial size of the input: ``(x, y)`` for 2-D, ``(z, x, y)`` for 3-D, ``(features,)`` or
        an int for an MLP / RNN.
    input_depth : int, optional
        Number of input channels (1 when None for images); for an RNN the number of time steps
        (None: the RNN broadcasts a ``(bs, features)`` input over ``iterations``).
    batch_size : int, optional
        Fixed batch size (None: any batch size).
    enable_dropout : bool
        Allow dropout in the layers (drop rates set with :meth:`setDropoutRates`).
    recurrent : bool
        Build an RNN input ``(bs, time, features)``.
    dimension_calc : CNNCalculator, optional
        The calculator the architecture was designed with; :meth:`predictDense` takes its offset.
    seed : int, optional
        Seed of the net's random numbers (initial weights, dropout, noise).  Without it the seed
        is drawn from numpy's global random state, so ``np.random.seed`` reproduces runs as in
        ELEKTRONN 1.0.
    mode : {"numpy", "c", "jax", "py"}, optional
        How every function of this net is compiled (see :mod:`elektronn.backend`); default: the
        backend's current mode (:func:`elektronn.backend.mode_name`) when the net is built.
        Kept as :attr:`mode`.

    Notes
    -----
    Building a net applies elektronn's PyTensor and process settings
    (:func:`elektronn.backend.configure`; ``floatX`` float32 among them).

    Examples
    --------
    >>> import numpy as np
    >>> cnn = MixedConvNN((28, 28), input_depth=1, batch_size=4, seed=0)
    >>> cnn.addConvLayer(10, 5, pool_shape=2, activation_func="abs")
    >>> cnn.addPerceptronLayer(10, activation_func="abs")
    >>> cnn.compileOutputFunctions(target="nll")
    >>> cnn.class_probabilities(np.zeros((4, 1, 28, 28), "float32")).shape
    (4, 10)

    Layouts: 2-D data ``(bs, ch, x, y)``, 3-D data ``(bs, z, ch, x, y)`` with ``input_size``
    given as ``(z, x, y)``, MLP data ``(bs, features)``, RNN data ``(bs, time, features)``.
    """

    @_recorded
    def __init__(self, input_size: int | Sequence[int] | None = None,
                 input_depth: int | None = None, batch_size: int | None = None,
                 enable_dropout: bool = False, recurrent: bool = False,
                 dimension_calc: Any = None, seed: int | None = None,
                 mode: str | None = None) -> None:
        backend.configure()
        self.mode = backend.mode_name() if mode is None else backend.check_mode(mode)
        try:
            input_size = tuple(int(s) for s in input_size)
        except TypeError:
            input_size = (int(input_size),)
        self.n_dim = len(input_size)
        if self.n_dim not in (1, 2, 3) or min(input_size) < 1:
            raise ValueError(f"input_size must be 1 to 3 positive ints, got {input_size}")
        if recurrent and self.n_dim != 1:
            raise ValueError("a recurrent net needs a 1-D input_size (features,)")
        if self.n_dim > 1 and input_depth is None:
            input_depth = 1
            logger.info("input_depth was None, set to 1")
        self.batch_size = batch_size
        self.patch_size = np.array(input_size)
        self.dimension_calc = dimension_calc
        self._enable_dropout = bool(enable_dropout)
        self._recurrent = bool(recurrent)
        seed = int(np.random.randint(2**31)) if seed is None else int(seed)
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self._streams = RandomStreams(seed)

        bs = batch_size
        if self.n_dim == 1:
            self.input_shape = ((bs, input_depth, input_size[0]) if input_depth is not None
                                else (bs, input_size[0]))
        elif self.n_dim == 2:
            self.input_shape = (bs, input_depth) + input_size
        else:
            self.input_shape = (bs, input_size[0], input_depth, input_size[1], input_size[2])
        name = "x_rnn_input" if recurrent else "x_cnn_input"
        self._x = pt.tensor(name, dtype="float32", shape=self.input_shape)
        self._layer0_input = self._x

        self.layers, self.poolings, self.params = [], [], []
        self._output_layers, self._autoencoder_chains, self._last_grads = [], [], []
        self._untrained_params = []  # the biases of tied decoders
        self.debug_functions, self.debug_conv_output, self.debug_gradients_function = [], [], []
        self.CG_timeline = []
        self.n_lab = self.output_strides = self.output_shape = None
        self.mfp_strides = self.mfp_offsets = None
        self.TotalForwardPassCost = 0
        self._atleast_single_mfp = False
        self._y, self._y_aux = None, []
        self._optimizers = {}
        self._compiled = False
        self.SGD_LR = pytensor.shared(np.float32(NEW_NET_SGD["LR"]), name="SGD_LR")
        self.SGD_momentum = pytensor.shared(np.float32(NEW_NET_SGD["momentum"]),
                                            name="SGD_momentum")
        self.global_weightdecay = pytensor.shared(np.float32(0), name="weight_decay")
        # hyperparameters per optimiser; missing keys take NET_OPTIMIZER_DEFAULTS
        self._optimizer_params = {name: {} for name in OPTIMIZERS}
        self._optimizer_params["SGD"] = {"LR": self.SGD_LR, "momentum": self.SGD_momentum}
        self.t_init = time.time()
        logger.info("-" * 60 + "\nInput shape   =  %s ; This is a %i dimensional NN\n---",
                    self.input_shape, self.n_dim)

    # --- pickling --------------------------------------------------------------------------------
    _PICKLE_FORMAT = 1

    def _all_layers(self):
        """Every layer once, in a fixed order (the order replaying the recipe recreates)."""
        seen, out = set(), []
        for lay in self.layers + self._output_layers + self._autoencoder_chains:
            if id(lay) not in seen:
                seen.add(id(lay))
                out.append(lay)
        return out

    def __getstate__(self):
        """The net's recipe and the values of its shared variables (not the PyTensor graph).

        A pickled net carries its constructor arguments, the sequence of ``add*Layer`` and
        ``compile*`` calls, the values of every layer's shared variables (weights, biases, drop
        rates, noise levels), the SGD learning rate, momentum and weight decay, and the
        optimisers' hyperparameters.  It does not carry compiled functions, nor the optimisers'
        internal state (momenta): unpickling rebuilds the graph by replaying the recipe and
        compiles each function on its first call.

        Unpickling runs code, so unpickle nets only from sources you trust (e.g. between the
        processes of your own dask cluster); to store a net in a file use
        :meth:`saveParameters`, which is read back without executing anything.

        Raises
        ------
        pickle.PicklingError
            For a net built with symbolic inputs (``layer_input`` or shared ``W``/``b`` given as
            PyTensor variables): their graph cannot be rebuilt from values.
        """
        recipe = []
        for name, kwargs in self.__dict__.get("_recipe", []):
            for key, value in kwargs.items():
                if isinstance(value, pytensor.graph.basic.Variable):
                    raise pickle.PicklingError(
                        f"cannot pickle a net whose {name}() got a PyTensor variable as "
                        f"{key!r}: only nets built from values can be rebuilt")
            if name == "__init__":
                kwargs = {**kwargs, "seed": self._seed, "mode": self.mode}
            recipe.append((name, kwargs))
        return {
            "format": self._PICKLE_FORMAT,
            "recipe": recipe,
            "layer_values": [_shared_values(lay) for lay in self._all_layers()],
            "net_values": _shared_values(self),
            "optimizer_params": {name: params for name, params in self._optimizer_params.items()
                                 if name != "SGD"},  # SGD's are shared values
        }

    def __setstate__(self, state):
        """Rebuild the net from :meth:`__getstate__`'s recipe and restore its values."""
        if not isinstance(state, dict) or state.get("format") != self._PICKLE_FORMAT:
            raise pickle.UnpicklingError(
                "not a pickled MixedConvNN of this elektronn version (format "
                f"{state.get('format') if isinstance(state, dict) else None!r}, expected "
                f"{self._PICKLE_FORMAT})")
        (init_name, init_kwargs), *calls = state["recipe"]
        self.__init__(**init_kwargs)
        for name, kwargs in calls:
            getattr(self, name)(**kwargs)
        layers = self._all_layers()
        if len(layers) != len(state["layer_values"]):
            raise pickle.UnpicklingError(f"the rebuilt net has {len(layers)} layers, the pickle "
                                         f"{len(state['layer_values'])}")
        for obj, values in zip([*layers, self], [*state["layer_values"], state["net_values"]]):
            for attr, value in values.items():
                getattr(obj, attr).set_value(value)
        self._optimizer_params.update(state["optimizer_params"])

    # --- building --------------------------------------------------------------------------------
    def _compile(self, inputs, outputs, **kwargs):
        """``compile_function`` in this net's mode."""
        return compile_function(inputs, outputs, mode=self.mode, **kwargs)

    @property
    def _rng_updates(self):
        return self._streams.updates

    def _last_output(self):
        if self.layers:
            return self.layers[-1].output, self.layers[-1].output_shape
        return self._layer0_input, self.input_shape

    @_recorded
    def addConvLayer(self, nof_filters: int | None = None,
                     filter_size: int | Sequence[int] | None = None,
                     pool_shape: int | Sequence[int] = 2, activation_func: str = "tanh",
                     add_in_output_layers: bool = False, force_no_dropout: bool = False,
                     use_fragment_pooling: bool = False, reshape: bool = False,
                     is_last_layer: bool = False,
                     layer_input_shape: Sequence[int | None] | None = None,
                     layer_input: pt.TensorVariable | None = None,
                     W: np.ndarray | SharedVariable | None = None,
                     b: np.ndarray | SharedVariable | None = None, pooling_mode: str = "max",
                     affinity: bool | str = False) -> None:
        """Append a conv layer: convolution, pooling (plain or MFP), dropout, bias, activation.

        Parameters
        ----------
        nof_filters : int
            Number of filters (output channels).
        filter_size : int or tuple
            Filter size; ``(fz, fx, fy)`` in 3-D (scalars are used for every axis).
        pool_shape : int or tuple
            Pooling factors per axis (1: no pooling).
        activation_func : str
            ``'tanh'``, ``'relu'``, ``'sigmoid'``, ``'abs'``, ``'linear'`` or ``'maxout <r>'``.
        add_in_output_layers : bool
            Put the layer in ``_output_layers`` instead of ``layers``.
        force_no_dropout : bool
            No dropout in this layer even if the net has dropout enabled.
        use_fragment_pooling : bool
            Max-fragment pooling: the net computes all pooling phases at once (batch size 1).
        reshape : bool
            Reshape ``class_probabilities`` to ``(bs, classes, x, y[, z])`` (for the last layer).
        is_last_layer : bool
            Sets ``reshape``, no dropout, and MFP if an earlier layer used MFP.
        layer_input_shape, layer_input : optional
            Use another input than the previous layer's output.
        W, b : ndarray or TensorVariable, optional
            Initial values or shared variables (weight sharing).
        pooling_mode : {'max', 'maxabs'}
        affinity : bool or 'malis'
            3-D only: build an :class:`AffinityLayer3d` (or a :class:`MalisLayer`).
        """
        if self.n_dim == 1:
            raise ValueError("addConvLayer needs a 2-D or 3-D net (input_size with 2 or 3 axes)")
        if self.layers and isinstance(self.layers[-1], PerceptronLayer | RecurrentLayer):
            raise ValueError("a conv layer cannot follow a perceptron or recurrent layer")
        if nof_filters is None or filter_size is None:
            raise ValueError("addConvLayer needs nof_filters and filter_size")
        fsize = _expand(filter_size, self.n_dim, "filter_size")
        pool = _expand(pool_shape, self.n_dim, "pool_shape")
        if is_last_layer:
            reshape, force_no_dropout = True, True
            use_fragment_pooling = use_fragment_pooling or self._atleast_single_mfp
        if use_fragment_pooling:
            if self.batch_size is not None and self.batch_size > 1:
                raise ValueError("max-fragment pooling needs batch_size 1 (its fragments are "
                                 f"stacked on the batch axis), got batch_size={self.batch_size}")
            self._atleast_single_mfp = True
        if layer_input is not None:
            inp, insh = layer_input, tuple(layer_input_shape)
        else:
            inp, insh = self._last_output()
        if self.n_dim == 3 and insh[0] is None:
            insh = (1,) + tuple(insh[1:])
        index = len(self.layers)
        ch = insh[1] if self.n_dim == 2 else insh[2]
        spatial = insh[2:] if self.n_dim == 2 else (insh[1], insh[3], insh[4])
        self._check_sizes(index, spatial, fsize, pool, use_fragment_pooling)
        filter_shape = ((int(nof_filters), ch) + fsize if self.n_dim == 2 else
                        (int(nof_filters), fsize[0], ch, fsize[1], fsize[2]))
        kwargs = dict(activation_func=activation_func,
                      enable_dropout=self._enable_dropout and not force_no_dropout,
                      use_fragment_pooling=use_fragment_pooling, reshape_output=reshape,
                      mfp_offsets=self.mfp_offsets, mfp_strides=self.mfp_strides,
                      input_layer=self.layers[-1] if self.layers else None, W=W, b=b,
                      pooling_mode=pooling_mode, rng=self.rng, streams=self._streams)
        args = (inp, insh, filter_shape, pool)
        if affinity:
            if self.n_dim != 3:
                raise ValueError("affinity layers need a 3-D net")
            layer = (MalisLayer if affinity == "malis" else AffinityLayer3d)(*args, **kwargs)
        else:
            layer = (ConvLayer2d if self.n_dim == 2 else ConvLayer3d)(*args, **kwargs)

        if add_in_output_layers:
            self._output_layers.append(layer)
        else:
            self.layers.append(layer)
            self.poolings.append(pool)
            self.mfp_offsets, self.mfp_strides = layer.mfp_offsets, layer.mfp_strides
        if reshape:
            self._y = pt.tensor("y_cnn_labels", dtype="int16", shape=(None,) * (self.n_dim + 1))
        conv_sizes = [s - f + 1 for s, f in zip(spatial, fsize)]
        cost = (insh[0] or 1) * int(np.prod(filter_shape)) * int(np.prod(conv_sizes))
        self.TotalForwardPassCost += cost
        logger.info("%s\nParameter Count: %i", _printOps(cost),
                    sum(int(np.prod(p.get_value().shape)) for p in layer.params))

    @staticmethod
    def _check_sizes(index, spatial, fsize, pool, mfp):
        """Clear errors for sizes the layer cannot process (before any graph is built)."""
        for axis, (s, f, p) in enumerate(zip(spatial, fsize, pool)):
            out = s - f + 1
            where = f"conv layer {index}, axis {axis}"
            if out < 1:
                raise ValueError(f"{where}: filter size {f} is larger than the input size {s}")
            if mfp and p > 1 and (out % p != p - 1 or out < 2 * p - 1):
                raise ValueError(
                    f"{where}: max-fragment pooling by {p} needs a conv output of the form "
                    f"k*{p}+{p - 1} with k >= 1, got {out} (input {s}, filter {f}); choose the "
                    "input size with CNNCalculator(..., MFP=...)")
            if not mfp and out % p:
                raise ValueError(
                    f"{where}: pooling by {p} needs a conv output divisible by {p}, got {out} "
                    f"(input {s}, filter {f}); choose the input size with CNNCalculator")

    @_recorded
    def addPerceptronLayer(self, n_outputs: int = 10, activation_func: str = "tanh",
                           enable_input_noise: bool = False, add_in_output_layers: bool = False,
                           force_no_dropout: bool = False,
                           W: np.ndarray | pt.TensorVariable | None = None,
                           b: np.ndarray | pt.TensorVariable | None = None) -> None:
        """Append a fully connected layer (conv outputs are flattened first).

        ``enable_input_noise`` adds Gaussian noise of std 0.2 to the layer input (the std is the
        shared variable ``layer.input_noise``).
        """
        inp, insh = self._last_output()
        if len(insh) > 2:
            if self._recurrent and not self.layers:
                raise ValueError("a recurrent net needs addRecurrentLayer before perceptrons")
            inp = inp.flatten(2)
            insh = (insh[0], int(np.prod(insh[1:])))
        layer = PerceptronLayer(
            inp, insh[1], n_outputs, insh[0],
            enable_dropout=self._enable_dropout and not force_no_dropout,
            activation_func=activation_func, input_noise=0.2 if enable_input_noise else None,
            input_layer=self.layers[-1] if self.layers else None, W=W, b=b, rng=self.rng,
            streams=self._streams)
        (self._output_layers if add_in_output_layers else self.layers).append(layer)
        self._y = pt.tensor("y_cnn_labels", dtype="int16", shape=(None,))
        self.TotalForwardPassCost += (insh[0] or 1) * insh[1] * int(n_outputs)

    @_recorded
    def addRecurrentLayer(self, n_hid: int | None = None, activation_func: str = "tanh",
                          iterations: int | None = None) -> None:
        """Append an Elman RNN layer over ``(bs, time, features)``; its output is the last state.

        A ``(bs, features)`` input (``input_depth=None``) is repeated over ``iterations`` steps.
        """
        if n_hid is None:
            raise ValueError("addRecurrentLayer needs n_hid")
        inp, insh = self._last_output()
        if len(insh) == 2:
            if not isinstance(iterations, int) or iterations < 1:
                raise ValueError("a (bs, features) input needs an int 'iterations' to broadcast "
                                 "over time")
            inp = pt.repeat(inp[:, None, :], iterations, axis=1)
            insh = (insh[0], iterations, insh[1])
            logger.info("Recurrence with broadcasted input")
        elif len(insh) != 3:
            raise ValueError(f"addRecurrentLayer needs a 2-D or 3-D input, got shape {insh}")
        layer = RecurrentLayer(inp, insh[2], n_hid, insh[0], activation_func, rng=self.rng)
        self.layers.append(layer)
        self._y = pt.tensor("y_cnn_labels", dtype="int16", shape=(None,))

    @_recorded
    def addTiedAutoencoderChain(self, n_layers: int | None = None, force_no_dropout: bool = False,
                                activation_func: str = "tanh", input_noise: float = 0.3,
                                tie_W: bool = True) -> None:
        """Mirror the first ``n_layers`` perceptron layers into a decoder chain.

        With ``tie_W`` the decoders use the transposed encoder weights, and their biases keep
        their initial values: they are not among the net's ``params``, so no optimiser changes
        them (as in ELEKTRONN 1.0, docs/differences.md N20).  Without ``tie_W`` the decoders
        have their own weights and biases, and all are trained.  ``n_layers`` None, 0 or
        negative means all layers.  The first decoder adds Gaussian noise of std
        ``input_noise`` to its input.
        """
        n = len(self.layers) if not n_layers or n_layers < 0 else int(n_layers)
        if not 0 < n <= len(self.layers):
            raise ValueError(f"n_layers must be at most the {len(self.layers)} layers, got {n}")
        chain, prev = [], self.layers[n - 1]
        for i in range(n - 1, -1, -1):
            enc = self.layers[i]
            layer = PerceptronLayer(
                prev.output, prev.output_shape[1], enc.n_in, prev.output_shape[0],
                enable_dropout=self._enable_dropout and not force_no_dropout,
                activation_func=activation_func,
                input_noise=input_noise if not chain else None, input_layer=prev,
                W=enc.W.T if tie_W else None, rng=self.rng, streams=self._streams)
            chain.append(layer)
            if tie_W:
                self._untrained_params += layer.params
            prev = layer
        self._autoencoder_chains += chain
        self._y = pt.tensor("y_cnn_labels", dtype="float32", shape=(None, None))

    # --- compiling -------------------------------------------------------------------------------
    def _data_arg(self):
        return Arg("data", self.input_shape, "float32")

    @_recorded
    def compileOutputFunctions(self, target: str = "nll", use_class_weights: bool = False,
                               use_example_weights: bool = False, use_lazy_labels: bool = False,
                               use_label_prop: bool = False, only_forward: bool = False) -> None:
        """Build the loss and compile ``get_loss``, ``get_error`` and ``class_probabilities``.

        Parameters
        ----------
        target : str
            ``'nll'``, ``'nll_weak'``, ``'regression'``, ``'affinity'``, ``'malis'`` or
            ``'nll_mutiple_binary'``.
        use_class_weights, use_example_weights, use_lazy_labels, use_label_prop : bool
            Add the matching auxiliary inputs; the compiled functions then take
            ``(data, labels, *aux)`` with aux in the order ``mask_class_labeled,
            mask_class_not_present, class_weights, example_weights, label_prop_thresh``.
            ``class_weights`` has one weight per class, or for ``'affinity'`` one per class of
            an edge (2; the same for the 3 edges, as in ELEKTRONN 1.0).
        only_forward : bool
            Skip the gradients (prediction only).

        Calling it again rebuilds everything (it never duplicates parameters).
        """
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        t0 = time.time()
        if not self._compiled:
            self.layers += [lay for lay in self._autoencoder_chains if lay not in self.layers]
        if not self.layers:
            raise ValueError("the net has no layers: add some before compiling")
        self._compiled = True
        self.params = []
        for lay in self.layers:
            for p in lay.params[::-1]:
                if not any(p is q for q in self.params + self._untrained_params):
                    self.params.append(p)
        self.param_count = int(sum(np.prod(p.get_value().shape) for p in self.params))
        last = self.layers[-1]
        is_conv = isinstance(last, ConvLayer2d | ConvLayer3d | AffinityLayer3d)
        if is_conv and not getattr(last, "reshape_output", True):
            raise ValueError("the last conv layer must reshape its output: add it with "
                             "is_last_layer=True")
        if isinstance(last, RecurrentLayer):
            raise ValueError("a recurrent layer cannot be the last layer: add a perceptron")
        self.output_shape = last.output_shape
        if isinstance(last, ConvLayer3d | AffinityLayer3d):
            self.n_lab = last.output_shape[2]
        else:
            self.n_lab = last.output_shape[1]
        logger.info("GLOBAL\n%s\nTotal Count of trainable Parameters: %i\nBuilding Computational "
                    "Graph took %.3f s", _printOps(self.TotalForwardPassCost), self.param_count,
                    time.time() - self.t_init)

        y_arg, aux = self._build_loss(target, last, is_conv, use_class_weights,
                                      use_example_weights, use_lazy_labels, use_label_prop)
        self._target = target
        inputs = [self._x, self._y] + self._y_aux
        args = [self._data_arg(), y_arg] + aux
        upd = self._rng_updates
        if target == "regression":
            self.get_error = CheckedFunction(lambda: self._compile(
                inputs, [self._loss, pt.sqrt(self._loss), last.output], rng_updates=upd), args)
            self.prediction = CheckedFunction(
                lambda: self._compile([self._x], [last.output], rng_updates=upd), args[:1],
                single=True)
        else:
            err = last.errors_no_tn(self._y) if target == "nll_mutiple_binary" else \
                last.errors(self._y)
            self.get_error = CheckedFunction(lambda: self._compile(
                inputs, [self._loss, err, last.class_prediction], rng_updates=upd), args)
            self.class_probabilities = CheckedFunction(
                lambda: self._compile([self._x], [last.class_probabilities], rng_updates=upd),
                args[:1], single=True)
        loss_fn = CheckedFunction(lambda: self._compile(
            inputs, [self._loss, self._loss_instance], rng_updates=upd), args)
        self._loss_args = args
        self.get_loss = lambda *a: (lambda r: (np.float32(r[0]), r[1]))(loss_fn(*a))
        self._gradients = None if only_forward else pytensor.grad(
            self._loss, self.params, disconnected_inputs="warn")
        self._last_grads = optimizer.momentum_buffers(self.params)
        self._optimizers = {}
        if is_conv:
            self.output_shape = last.prob_shape
            strides = np.prod(np.array(self.poolings), axis=0)
            if self.mfp_strides is not None:
                strides = strides // np.asarray(self.mfp_strides)
            self.output_strides = [int(s) for s in strides]
        logger.info(" Compiling done  - in %.3f s!", time.time() - t0)

    def _build_loss(self, target, last, is_conv, use_class_weights, use_example_weights,
                    use_lazy_labels, use_label_prop):
        """Create the label and auxiliary inputs and ``_loss``/``_loss_instance`` for ``target``."""
        bs = self.batch_size
        if is_conv:
            lab_shape = (last.prob_shape[0],) + tuple(last.prob_shape[2:])
        else:
            lab_shape = (bs,)
        K = self.n_lab
        self._y_aux, aux = [], []

        def add_aux(name, dtype, shape):
            var = pt.tensor(name, dtype=dtype, shape=tuple(None if s is None else s
                                                           for s in shape))
            self._y_aux.append(var)
            aux.append(Arg(name, shape, dtype))
            return var

        if target == "regression":
            shape = tuple(last.output_shape) if not is_conv else (
                (bs,) + tuple(last.output_shape[2:]) if self.n_dim == 2 else
                (bs, last.output_shape[1]) + tuple(last.output_shape[3:]))
            self._y = pt.tensor("y_target", dtype="float32", shape=(None,) * len(shape))
            self._loss, self._loss_instance = last.squared_distance(self._y)
            return Arg("targets", shape, "float32"), aux
        if target in ("affinity", "malis"):
            if not isinstance(last, AffinityLayer3d):
                raise ValueError(f"target {target!r} needs an affinity last layer "
                                 "(addConvLayer(..., affinity=True or 'malis'))")
            self._y = pt.tensor("y_aff", dtype="int16", shape=(None,) * 5)
            y_arg = Arg("affinity labels", (lab_shape[0], 3) + lab_shape[1:], "int16", 2)
            if target == "malis":
                seg = add_aux("seg_gt", "int16", lab_shape)
                ret = last.NLL_Malis(self._y, seg)
                self._loss = self._loss_instance = ret[0]
                self.malis_stats = CheckedFunction(lambda: self._compile(
                    [self._x, self._y, seg], list(ret), rng_updates=self._rng_updates),
                    [self._data_arg(), y_arg] + aux)
            else:
                # the weights of the classes of one edge (shared by the 3 edges), as the original
                cw = (add_aux("class_weights", "float32", (K // 3,)) if use_class_weights
                      else None)
                self._loss, self._loss_instance = last.NLL_affinity(self._y, cw)
            return y_arg, aux
        if target == "nll_mutiple_binary":
            if not isinstance(last, PerceptronLayer):
                raise ValueError("target 'nll_mutiple_binary' needs a perceptron last layer")
            self._y = pt.tensor("y_multi", dtype="int16", shape=(None, None))
            cw = add_aux("class_weights", "float32", (2,)) if use_class_weights else None
            self._loss, self._loss_instance = last.nll_mutiple_binary(self._y, cw)
            return Arg("labels", (bs, K), "int16", 2), aux

        self._y = pt.tensor("y_cnn_labels", dtype="int16", shape=(None,) * len(lab_shape))
        y_arg = Arg("labels", lab_shape, "int16", K)
        if target == "nll_weak":
            cw = add_aux("class_weights", "float32", (K,)) if use_class_weights else None
            self._loss, self._loss_instance = last.NLL_weak(self._y, cw)
            return y_arg, aux
        if use_lazy_labels and not is_conv:
            raise ValueError("Cannot use lazy labels for Perceptron layer")
        kw = {}
        if use_lazy_labels:
            kw["mask_class_labeled"] = add_aux("mask_class_labeled", "int16", (lab_shape[0], K))
            kw["mask_class_not_present"] = add_aux("mask_class_not_present", "int16",
                                                   (lab_shape[0], K))
        if use_class_weights:
            kw["class_weights"] = add_aux("class_weights", "float32", (K,))
        if use_example_weights:
            kw["example_weights"] = add_aux("example_weights", "float32", lab_shape)
        if use_label_prop:
            kw["label_prop_thresh"] = add_aux("label_prop_thresh", "float32", ())
        self._loss, self._loss_instance = last.NLL(self._y, **kw)
        return y_arg, aux

    @_recorded
    def compileDebugFunctions(self, gradients: bool = True) -> None:
        """Compile ``data -> layer.output`` (``debug_functions``) and ``data -> layer.conv_out``
        (``debug_conv_output``) per layer and, optionally, ``(data, labels, *aux) -> gradients``.
        """
        if self.debug_functions:
            return
        data = [self._data_arg()]

        def output_function(var):
            return CheckedFunction(
                lambda: self._compile([self._x], [var], rng_updates=self._rng_updates),
                data, single=True)

        for lay in self.layers:
            self.debug_functions.append(output_function(lay.output))
            if lay.conv_out is not None:
                self.debug_conv_output.append(output_function(lay.conv_out))
        if gradients and self._gradients is not None:
            self.debug_gradients_function = CheckedFunction(lambda: self._compile(
                [self._x, self._y] + self._y_aux, self._gradients,
                rng_updates=self._rng_updates), self._loss_args)

    def get_activities(self, data: np.ndarray) -> list[np.ndarray]:
        """Outputs of every layer for ``data`` (needs :meth:`compileDebugFunctions`)."""
        return [f(data) for f in self.debug_functions]

    def get_nonpooled_activities(self, data: np.ndarray) -> list[np.ndarray]:
        """Convolution outputs (before pooling) of every conv layer for ``data``."""
        return [f(data) for f in self.debug_conv_output]

    # --- training --------------------------------------------------------------------------------
    def setOptimizerParams(self, SGD: Mapping[str, Any] | None = None,
                           CG: Mapping[str, Any] | None = None,
                           RPROP: Mapping[str, Any] | None = None,
                           LBFGS: Mapping[str, Any] | None = None,
                           Adam: Mapping[str, Any] | None = None,
                           weight_decay: float | bool = 0.0) -> None:
        """Set the optimisers' hyperparameters (as ELEKTRONN 1.0).

        ``SGD`` ``{'LR', 'momentum'}`` and ``weight_decay`` are shared variables and take
        effect at once; ``RPROP``, ``CG``, ``LBFGS`` and ``Adam`` dicts update the defaults
        (Adam: ``{LR: 0.001, beta1: 0.9, beta2: 0.999, epsilon: 1e-8}``).  Already compiled CG
        and L-BFGS optimisers take the new keys; RPROP and Adam recompile when their compiled-in
        hyperparameters change.
        """
        given = {"SGD": SGD, "CG": CG, "RPROP": RPROP, "LBFGS": LBFGS, "Adam": Adam}
        given = {name: dict(value or {}) for name, value in given.items()}
        for name, params in given.items():  # all checked before anything changes
            optimizer.check_optimizer_params(name, params)
        SGD = given.pop("SGD")
        self.setWeightDecay(0.0 if weight_decay is False else weight_decay)
        self.setSGDLR(SGD.get("LR", NET_OPTIMIZER_DEFAULTS["SGD"]["LR"]))
        self.setSGDMomentum(SGD.get("momentum", NET_OPTIMIZER_DEFAULTS["SGD"]["momentum"]))
        for mode, params in given.items():
            self._optimizer_params[mode] = {**NET_OPTIMIZER_DEFAULTS[mode], **params}
            if mode not in self._optimizers:
                continue
            if mode in ("CG", "LBFGS"):
                self._optimizers[mode].updateOptimizerParams(params)
            elif params:
                del self._optimizers[mode]

    def setSGDLR(self, value: float = NEW_NET_SGD["LR"]) -> None:
        """Set the SGD learning rate (effective at the next step)."""
        self.SGD_LR.set_value(np.float32(value))

    def setSGDMomentum(self, value: float = NEW_NET_SGD["momentum"]) -> None:
        """Set the SGD momentum (effective at the next step)."""
        self.SGD_momentum.set_value(np.float32(value))

    def setWeightDecay(self, value: float = 0.0005) -> None:
        """Set the global L2 weight decay (used by SGD and RPROP)."""
        self.global_weightdecay.set_value(np.float32(value))

    def _optimizer(self, mode):
        if mode not in OPTIMIZERS:
            raise ValueError(f"mode must be one of {OPTIMIZERS}, got {mode!r}")
        if not self._compiled:
            raise ValueError("compile the net with compileOutputFunctions() before training")
        if self._gradients is None:
            raise ValueError("the net was compiled with only_forward=True: it cannot be trained")
        if mode not in self._optimizers:
            cls = getattr(optimizer, f"compile{mode}")
            self._optimizers[mode] = cls(
                dict(self._optimizer_params[mode]), X=self._x, Y=self._y, Y_aux=self._y_aux,
                top_loss=self._loss, params=self.params, loss_instance=self._loss_instance,
                gradients=self._gradients, last_grads=self._last_grads,
                weight_decay=self.global_weightdecay, rng_updates=self._rng_updates,
                mode=self.mode)
        return self._optimizers[mode]

    @property
    def SGD(self) -> optimizer.compileSGD:  # noqa: N802  (the original's attribute name)
        """The compiled SGD optimiser (compiled on first use)."""
        return self._optimizer("SGD")

    def trainingStep(self, *args: np.ndarray, mode: str = "SGD",
                     update_loss: bool = False) -> tuple[np.float32, np.ndarray, float]:
        """One optimisation step on ``(data, labels, *aux)``.

        Parameters
        ----------
        *args
            Data, labels and the auxiliary inputs in the order of the compiled loss.
        mode : {'SGD', 'Adam', 'RPROP', 'CG', 'LBFGS'}
            The optimiser (compiled and cached on first use).
        update_loss : bool
            Return the loss after the update (SGD and RPROP; CG's is always post-update).

        Returns
        -------
        loss : numpy.float32
            The loss (before the update, except for CG, L-BFGS and ``update_loss``).
        loss_instance : ndarray
        time_per_step : float
            Wall-clock seconds of the step (the first includes compilation).
        """
        if len(args) != len(self._y_aux) + 2:
            raise ValueError(
                "The number of auxiliary arguments for the NLL is not matching the compiled "
                f"signature: {[v.name for v in self._y_aux]}. Got {len(args) - 2} auxiliary "
                "args.")
        t0 = time.time()
        opt = self._optimizer(mode)
        values = [a.convert(v) for a, v in zip(self._loss_args, args)]
        if mode == "LBFGS":
            loss = inst = opt(*values)
        else:
            loss, inst = opt.call_converted(*values)
            if mode == "CG":
                self.CG_timeline.extend(opt.last_timeline)
            if update_loss and mode in ("SGD", "RPROP"):
                loss, inst = self.get_loss(*values)
        return np.float32(loss), inst, time.time() - t0 + 1e-10

    # --- prediction ------------------------------------------------------------------------------
    def predictDense(self, raw_img: Any, show_progress: bool = True,
                     offset: Sequence[int] | None = None, as_uint8: bool = False,
                     pad_raw: bool = False) -> np.ndarray:
        """Dense class-probability map of a whole image or volume, tile by tile.

        Parameters
        ----------
        raw_img : ndarray ``(ch, x, y)`` or ``(ch, x, y, z)``
            Integer images are scaled by 1/255.  Any array-like that supports slicing (an
            h5py dataset, a memmap) works and is read tile by tile.
        show_progress : bool
            Show a progress bar (tqdm: MVox/s, time left) on stderr.
        offset : sequence of int, optional
            Offset of the first output pixel (zxy for 3-D); default ``dimension_calc.offset``.
        as_uint8 : bool
            Return ``uint8`` probabilities ``* 255`` (truncated, as ELEKTRONN 1.0).
        pad_raw : bool
            Mirror-pad the image so that the output has the input's size.

        Returns
        -------
        ndarray ``(n_lab, x', y'[, z'])``
            See :func:`elektronn.net.prediction.predict_dense`.
        """
        return prediction.predict_dense(self, raw_img, show_progress, offset, as_uint8, pad_raw)

    # --- dropout ---------------------------------------------------------------------------------
    def setDropoutRates(self, rates: Sequence[float | None]) -> None:
        """Set the drop rates: ``rates[i]`` goes to ``layers[i]``.

        Layers without dropout, and rates outside [0, 1], are skipped (as in ELEKTRONN 1.0).
        """
        for lay, rate in zip(self.layers, rates):
            if lay.activation_noise is not None and rate is not None and 0 <= rate <= 1:
                lay.activation_noise.set_value(np.float32(rate))

    def getDropoutRates(self) -> list[float]:
        """Drop rates of the layers that have dropout (not aligned with layer indices)."""
        return [float(lay.activation_noise.get_value()) for lay in self.layers
                if lay.activation_noise is not None]

    # --- weights ---------------------------------------------------------------------------------
    def randomizeWeights(self, reset_momenta: bool = True) -> None:
        """Re-initialise every layer's weights (and, by default, the optimiser state)."""
        for lay in self.layers + self._output_layers:
            lay.randomizeWeights()
        if reset_momenta:
            self.resetMomenta()

    def resetMomenta(self) -> None:
        """Zero the momenta and reset every compiled optimiser's state."""
        for g in self._last_grads:
            g.set_value(np.zeros_like(g.get_value()))
        for opt in self._optimizers.values():
            opt.reset()
        logger.info("Reset %i momenta", len(self._last_grads))

    def _file_layers(self, layers=None):
        if layers is None:
            n = len(self.layers) - len(self._autoencoder_chains)
            layers = self.layers[:n]
        return layers

    def saveParameters(self, path: str | os.PathLike = "CNN.save", layers: list | None = None,
                       show: bool = True) -> None:
        """Write the parameters in the ELEKTRONN 1.0 file layout (atomically).

        The file is a stream of protocol-2 pickles: the list of each layer's first parameter
        shape, every layer's parameters (conv: W, b; perceptron: b, W), then the poolings.
        """
        layers = self._file_layers(layers)
        values = [[p.get_value() for p in lay.params] for lay in layers]
        pset = paramfile.ParameterSet.from_params(values, self.poolings)
        paramfile.write_param_file(path, pset.to_objects())
        if show:
            logger.info("Saving params to file %s\n shapes are: %s", path, pset.shapes)

    def loadParameters(self, myfile: str | os.PathLike = "CNN.save", strict: bool = False,
                       n_layers_to_load: int = -1) -> None:
        """Load a parameter file of ELEKTRONN 1.0 or of this port.

        Parameters
        ----------
        myfile : str
            Path of the file.  It is read with a restricted reader that never executes code.
        strict : bool
            Require every shape to match exactly (otherwise conv filters of other shapes are
            adapted, as ELEKTRONN 1.0 did).
        n_layers_to_load : int
            Load only the first n layers (-1: all).

        A file that does not fit raises an error and leaves the net unchanged.
        """
        self.resetMomenta()
        layers = self._file_layers()
        objects = paramfile.read_param_file(myfile)
        counts = [len(lay.params) if isinstance(lay, RecurrentLayer) else 2 for lay in layers]
        n_file = len(objects[0]) if objects and isinstance(objects[0], list | tuple) else 0
        pset = paramfile.split_layers(objects, counts[:n_file] if n_file <= len(counts)
                                      else 2, path=str(myfile))
        n = len(pset.params) if n_layers_to_load < 0 else min(n_layers_to_load, len(pset.params))
        if strict and len(pset.params) != len(layers):
            raise paramfile.ParameterFileError(
                myfile, f"the file has {len(pset.params)} layers, the net {len(layers)}")
        new = []
        for i, (lay, saved) in enumerate(zip(layers[:n], pset.params[:n])):
            values = [self._fitted(myfile, i, k, value, p.get_value().shape, strict)
                      for k, (p, value) in enumerate(zip(lay.params, saved))]
            if any(v is None for v in values):
                logger.warning("Load: skipping layer %i (shapes %s -> %s)", i + 1,
                               [v.shape for v in saved], [p.get_value().shape for p in lay.params])
                continue
            new += zip(lay.params, values)
        for p, value in new:  # all checks passed: now change the net
            p.set_value(value)
        logger.info("loading complete (%i layers)", n)

    def _fitted(self, path, layer, k, value, target, strict):
        """``value`` as float32 of shape ``target`` (adapted), ``None`` if impossible, or raise."""
        if value.shape == target:
            return np.asarray(value, np.float32)
        if strict:
            raise paramfile.ParameterFileError(
                path, f"layer {layer}: parameter {k} has shape {value.shape}, the net needs "
                f"{target}")
        adapt = paramfile.adapt_conv_filter if value.ndim in (4, 5) and k == 0 else \
            paramfile.adapt_bias
        fitted = adapt(value, target, self.rng)
        return None if fitted is None else np.asarray(fitted, np.float32)
