"""The optimisers of ELEKTRONN 1.0: SGD with momentum, Adam, RPROP, CG and L-BFGS.

The classes (:class:`Optimizer`, :class:`compileSGD`, :class:`compileAdam`,
:class:`compileRPROP`, :class:`compileCG`, :class:`compileLBFGS`) compile the update rules of
:mod:`elektronn.net.updates` into functions and are called as
``loss, loss_instance = opt(data, labels, *aux)`` (L-BFGS returns the loss only).

An optimiser is given what it works on explicitly: the inputs ``X``, ``Y``, ``Y_aux``, the
loss, the parameters and, optionally, the gradients, the momentum buffers ``last_grads`` (SGD,
RPROP and CG may share them), the weight decay and the random-stream updates of dropout and
noise (``{shared generator: next generator}``; the entries a compiled graph uses are added to
its updates, so every call draws fresh numbers).  As in ELEKTRONN 1.0 a model object may be
given instead (``model_obj``); it is only read: ``_x``, ``_y``, ``_y_aux``, ``_loss``,
``_loss_instance``, ``_gradients``, ``params``, ``_last_grads``, ``global_weightdecay``,
``SGD_LR``, ``SGD_momentum`` and ``_rng_updates`` fill the arguments not given.  Unlike the
original, an optimiser never writes into the model (the original replaced the model's
``get_loss`` and ``_last_grads``).

Hyperparameters missing from ``optimizer_params`` come from
:data:`elektronn.defaults.NET_OPTIMIZER_DEFAULTS`; an unknown key raises ``ValueError``
naming the valid keys (the original ignored it).  Numerics are those of ELEKTRONN 1.0 (see
:mod:`elektronn.net.updates`).  Fixed against the original (docs/differences.md, N23-N30):
duplicated (shared) parameters are optimised once, with their buffers aligned; every optimiser
has :meth:`Optimizer.reset` for the state it really has; Adam has defaults; L-BFGS writes back
scipy's optimum and reports its outcome correctly.

Non-finite losses
-----------------
SGD, Adam and RPROP compile one fused function that computes the loss, the gradients and the
updates.  It also computes ``finite = isfinite(loss) & all(isfinite(gradients))``, and every
update is wrapped as ``switch(finite, new, old)`` (:func:`~elektronn.net.updates.guard_updates`);
in the ``"numpy"`` mode one :class:`~elektronn.ops.updates.FusedUpdate` node decides ``finite``
the same way and only then updates every parameter and buffer in place.  A non-finite step
therefore leaves parameters and optimiser state (momenta, Adam moments, RPROP step sizes)
exactly as they were.  CG and L-BFGS evaluate many points per call, so they copy
the parameters and their state at the start of a call and restore the copy when the final loss
is not finite.  After a non-finite step the optimiser raises :class:`NonFiniteLossError`
(``nan_policy="raise"``, the default) or warns with :class:`NonFiniteLossWarning`
(``nan_policy="warn"``); in both cases the parameters were not updated.  Steps are counted per
optimiser object, from 1.
"""

import logging
import time
import warnings
from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.graph.traversal import ancestors
from pytensor.graph.utils import InconsistencyError
from scipy.optimize import fmin_l_bfgs_b

from elektronn import backend
from elektronn.defaults import NET_OPTIMIZER_DEFAULTS, OPTIMIZER_KEYS
from elektronn.net.updates import (
    RPROP_STEP_BOUNDS,
    adam_updates,
    all_finite,
    cg_kickstart_updates,
    cg_move_updates,
    cg_step_updates,
    fit_updates,
    guard_updates,
    rprop_updates,
    sgd_updates,
)
from elektronn.ops.updates import fused_updates

__all__ = [
    "Optimizer",
    "compileSGD",
    "compileAdam",
    "compileRPROP",
    "compileCG",
    "compileLBFGS",
    "NonFiniteLossError",
    "NonFiniteLossWarning",
    "check_optimizer_params",
    "momentum_buffers",
    "NAN_POLICIES",
]

logger = logging.getLogger("elektronn")

NAN_POLICIES = ("raise", "warn")

_ZERO = np.float32(0)
# The original's line search starts with this "previous loss", so a first trial loss above it
# ends the search at once (kept, docs/differences.md N28).
_CG_INITIAL_LAST_LOSS = 1e6
# scipy's warnflag -> message (the original printed "L-BFGS aborted!" for 0 and 2, N29).
_LBFGS_OUTCOME = {
    0: "L-BFGS converged: %s (%s iterations, %s evaluations)",
    1: "L-BFGS stopped at its iteration/evaluation limit: %s (%s iterations, %s evaluations)",
    2: "L-BFGS aborted: %s (%s iterations, %s evaluations)",
}


def check_optimizer_params(name, optimizer_params):
    """Raise ``ValueError`` for hyperparameter keys the optimiser ``name`` does not know.

    Parameters
    ----------
    name : {"SGD", "CG", "RPROP", "LBFGS", "Adam"}
    optimizer_params : mapping or None

    Examples
    --------
    >>> check_optimizer_params("SGD", {"lr": 0.1})
    Traceback (most recent call last):
    ...
    ValueError: unknown SGD parameter 'lr'; valid keys are 'LR', 'momentum'
    """
    valid = OPTIMIZER_KEYS[name]
    unknown = [key for key in (optimizer_params or {}) if key not in valid]
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        raise ValueError(f"unknown {name} parameter{'s' if len(unknown) > 1 else ''} {keys}; "
                         f"valid keys are {', '.join(repr(k) for k in valid)}")


class NonFiniteLossError(FloatingPointError):
    """An optimiser step produced a NaN or infinite loss (or gradient).

    The parameters and the optimiser state were left as they were before the step.

    Attributes
    ----------
    step : int
        The number of the failed step, counted per optimiser object from 1.
    loss : numpy.float32
        The loss of the failed step.
    """

    def __init__(self, message, step=None, loss=None):
        super().__init__(message)
        self.step = step
        self.loss = loss


class NonFiniteLossWarning(UserWarning):
    """Issued instead of :class:`NonFiniteLossError` with ``nan_policy="warn"``."""


# --- helpers ----------------------------------------------------------------------------------


def _unique(params):
    """Return the params without repeats (first occurrence kept) and the kept indices."""
    seen, keep = set(), []
    for i, param in enumerate(params):
        if id(param) in seen:
            logger.info("Detected shared param: param[%i]", i)
        else:
            seen.add(id(param))
            keep.append(i)
    return [params[i] for i in keep], keep


def _zeros_like(param, suffix, fill=0.0):
    """A shared buffer with the shape, dtype and static shape of a shared parameter."""
    value = param.get_value(borrow=True)
    return pytensor.shared(np.full(value.shape, fill, dtype=value.dtype),
                           name=f"{param.name or 'param'}{suffix}", shape=param.type.shape)


def momentum_buffers(params):
    """Zero momentum buffers ``last_grads``, one per parameter, to share between optimisers.

    Parameters
    ----------
    params : list of shared variables

    Returns
    -------
    list of shared variables
        Named ``<param name>_LG``, with the parameters' shapes and dtypes.
    """
    return [_zeros_like(p, "_LG") for p in params]


def _same_shapes(buffers, params):
    return len(buffers) == len(params) and all(
        b.get_value(borrow=True).shape == p.get_value(borrow=True).shape
        for b, p in zip(buffers, params, strict=True))


class Optimizer:
    """Base class: collects the variables to optimise and compiles ``get_loss``.

    Parameters
    ----------
    model_obj : object, optional
        A model to read the arguments that are not given from (see the module docstring); it
        is never written to.
    X, Y : variable, optional
        The data and label inputs.
    Y_aux : sequence of variables, optional
        Further inputs of the loss (masks, weights), given after ``X, Y`` when calling.
    top_loss : scalar variable, optional
        The loss.
    params : list of shared variables, optional
        The parameters.  A parameter listed twice (weight sharing) is optimised once.
    loss_instance : variable, optional
        Returned with the loss (e.g. per example); default the model's ``_loss_instance``,
        else the loss itself.
    gradients : list of variables, optional
        The gradients of ``top_loss`` with respect to ``params`` (computed here when not given;
        the model's ``_gradients`` are used only with the model's loss and parameters).
    last_grads : list of shared variables, optional
        Momentum buffers, one per parameter (or per unique parameter); pass the same list to
        several optimisers to share them.  Created here when not given or when they do not fit.
    weight_decay : shared scalar, optional
        The L2 weight decay (SGD and RPROP); default the model's ``global_weightdecay``, else 0.
    rng_updates : dict, optional
        ``{shared generator: next generator}`` of the graph's random draws.
    nan_policy : {"raise", "warn"}
        What to do after a step with a non-finite loss or gradient (the parameters are not
        updated in either case).
    mode : str, optional
        The compile mode (see :mod:`elektronn.backend`); default the model's ``mode``, else the
        backend's current mode when the optimiser is built.

    Attributes
    ----------
    params, gradients, last_grads : list
        Unique parameters, their gradients and their momentum buffers.
    weightdecay : scalar variable
    step : pytensor Function or None
        The compiled step of SGD, Adam and RPROP: ``(X, Y, *aux) -> [loss, instance,
        finite]``.
    step_count : int
        Steps (calls) made so far.

    Notes
    -----
    ELEKTRONN 1.0 stored X, Y and params only when a model was given, and misaligned the
    momentum buffers of duplicated parameters (docs/differences.md, N24); both are fixed.
    """

    #: The optimiser's name in :data:`elektronn.defaults.OPTIMIZER_KEYS` (None: the base class).
    name = None
    #: Hyperparameter keys baked into the compiled functions (changing them needs a new object).
    _compiled_in = ()

    def __init__(self, model_obj=None, X=None, Y=None, Y_aux=(), top_loss=None, params=None,
                 *, loss_instance=None, gradients=None, last_grads=None, weight_decay=None,
                 rng_updates=None, nan_policy="raise", mode=None):
        self.t_init = time.time()
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.model_obj = model_obj
        self.mode = backend.check_mode(
            mode or getattr(model_obj, "mode", None) or backend.mode_name())
        self.optimizer_params = {}
        self.step = None
        self.step_count = 0
        self._live = {}  # hyperparameter key -> shared variable read by the compiled graph
        self._state = []  # (shared variable, initial fill value) pairs restored by reset()
        self._get_loss = None
        model = model_obj

        self.X = X if X is not None else getattr(model, "_x", None)
        self.Y = Y if Y is not None else getattr(model, "_y", None)
        self.Y_aux = list(Y_aux) if Y_aux else list(getattr(model, "_y_aux", None) or [])
        all_params = params if params is not None else getattr(model, "params", None)
        if top_loss is None:
            top_loss = getattr(model, "_loss", None)
            if params is None and gradients is None:
                gradients = getattr(model, "_gradients", None)
        self.top_loss = top_loss
        missing = [name for name, value in
                   (("X", self.X), ("Y", self.Y), ("top_loss", top_loss), ("params", all_params))
                   if value is None]
        if missing:
            raise ValueError(f"Missing arguments: {', '.join(missing)}; give model_obj or "
                             f"X, Y, top_loss and params")
        if len(all_params) == 0:
            raise ValueError("no params, call compileOutputFunctions() before compiling an "
                             "optimiser")
        self.params, keep = _unique(list(all_params))
        self.gradients = self._aligned_gradients(gradients, all_params, keep)
        if last_grads is None:
            last_grads = getattr(model, "_last_grads", None)
        self.last_grads = self._momentum_buffers(last_grads, all_params, keep)

        if weight_decay is None:
            weight_decay = getattr(model, "global_weightdecay", None)
        if weight_decay is None:
            weight_decay = pytensor.shared(np.float32(0), name="weightdecay")
        self.weightdecay = weight_decay
        if loss_instance is None:
            loss_instance = getattr(model, "_loss_instance", None)
        self.loss_instance = top_loss if loss_instance is None else loss_instance
        if rng_updates is None:
            rng_updates = getattr(model, "_rng_updates", None)
        self._rng_updates = dict(rng_updates or {})
        self._inputs = [self.X, self.Y, *self.Y_aux]
        self._input_types = None  # (dtype, static shape) per input, see _exact_inputs

    def _hyperparameters(self, optimizer_params):
        """The defaults of this optimiser updated by ``optimizer_params`` (keys checked)."""
        check_optimizer_params(self.name, optimizer_params)
        return {**NET_OPTIMIZER_DEFAULTS[self.name], **(optimizer_params or {})}

    # -- construction helpers --

    def _aligned_gradients(self, gradients, all_params, keep):
        if gradients is None:
            return list(pytensor.grad(self.top_loss, self.params, disconnected_inputs="warn"))
        gradients = list(gradients)
        if len(gradients) == len(all_params):
            return [gradients[i] for i in keep]
        if len(gradients) == len(self.params):
            return gradients
        raise ValueError(f"{len(gradients)} gradients do not match {len(all_params)} params")

    def _momentum_buffers(self, buffers, all_params, keep):
        """Reuse the given momentum buffers when they fit the params, else create them."""
        if buffers:
            buffers = list(buffers)
            if len(buffers) == len(all_params) != len(self.params):
                buffers = [buffers[i] for i in keep]
            if _same_shapes(buffers, self.params):
                return buffers
            logger.warning("The momentum buffers last_grads (%d) do not fit the %d params; "
                           "creating new momentum buffers", len(buffers), len(self.params))
        return momentum_buffers(self.params)

    def _compile(self, outputs, updates=None, accept_inplace=False):
        """Compile ``inputs -> outputs`` with ``updates`` plus the random-stream updates the
        graph needs: entries of ``rng_updates`` (``{rng: next_rng}``) whose generator the graph
        uses (generators with a ``default_update`` need nothing).  Updates whose static shape
        disagrees with their variable's are fitted (:func:`~elektronn.net.updates.fit_updates`).
        """
        updates = list(fit_updates(updates or {}).items())
        rng_updates = self._rng_updates
        if rng_updates:
            outs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
            used = set(ancestors(outs + [new for _, new in updates]))
            updated = {id(var) for var, _ in updates}
            updates += [(rng, new) for rng, new in rng_updates.items()
                        if rng in used and id(rng) not in updated]
        return pytensor.function(self._inputs, outputs, updates=updates,
                                 mode=backend.get_mode(self.mode),
                                 on_unused_input="ignore", accept_inplace=accept_inplace)

    def _compile_step(self, updates, fused=None):
        """Compile the fused, guarded step ``inputs -> [loss, instance, finite]``.

        ``updates`` are the symbolic updates of the rule.  In the ``"numpy"`` mode,
        ``fused = (rule, buffers, hyperparameters, t)`` (the arguments of
        :func:`elektronn.ops.updates.fused_updates`) replace them by one in-place
        :class:`~elektronn.ops.updates.FusedUpdate` node that also decides ``finite``; where
        that Op does not apply (not all float32, a variable updated twice, a gradient aliasing
        a parameter) the symbolic updates are compiled.
        """
        outputs = [self.top_loss, self.loss_instance]
        if fused is not None and self.mode == "numpy" and self._fusable(fused[0]):
            rule, buffers, hyperparameters, t = fused
            finite, new = fused_updates(rule, self.top_loss, self.gradients, self.params,
                                        buffers, hyperparameters, t)
            try:
                return self._compile(outputs + [finite], OrderedDict(new), accept_inplace=True)
            except InconsistencyError as err:
                logger.debug("%s: compiling the symbolic updates (%s)", type(self).__name__, err)
        # JAX computes in float32 unless x64 is on (a float64 cast would warn and truncate)
        finite = all_finite(self.top_loss, self.gradients, float64=self.mode != "jax")
        return self._compile(outputs + [finite], guard_updates(updates, finite))

    def _fusable(self, rule):
        """Whether :class:`~elektronn.ops.updates.FusedUpdate` can run this optimiser's step."""
        variables = self.params + [var for var, _ in self._state]
        return (len({id(v) for v in variables}) == len(variables)
                and all(v.dtype == "float32" for v in variables + self.gradients)
                and all(g.ndim == p.ndim for g, p in zip(self.gradients, self.params,
                                                          strict=True))
                and self.top_loss.ndim == 0)

    def _live_scalar(self, key, value):
        """Register a hyperparameter held in a shared variable (created from a number)."""
        if not isinstance(value, Variable):
            value = pytensor.shared(np.float32(value), name=f"{type(self).__name__}_{key}")
        self._live[key] = value
        self.optimizer_params[key] = value
        return value

    def _log_done(self):
        logger.info(" Compiling done  - in %.3f s!", time.time() - self.t_init)

    # -- public API --

    def updateOptimizerParams(self, optimizer_params):
        """Update the hyperparameter dictionary.

        Numbers given for hyperparameters held in shared variables (SGD ``LR`` and
        ``momentum``, Adam ``LR``) are written into those variables and take effect at the next
        step.  CG and L-BFGS read their dictionary at every call.  Keys compiled into the
        graph (RPROP's, Adam's betas and epsilon) are stored but need a new optimiser.

        Raises
        ------
        ValueError
            For a key the optimiser does not know (nothing is changed then).
        """
        check_optimizer_params(self.name, optimizer_params)
        for key, value in optimizer_params.items():
            shared = self._live.get(key)
            if shared is None:
                if key in self._compiled_in:
                    logger.warning("%s: %r is compiled in; the change takes effect only in a "
                                   "newly compiled optimiser", type(self).__name__, key)
                self.optimizer_params[key] = value
            elif isinstance(value, Variable):
                if value is not shared:
                    raise ValueError(f"{key} is compiled as the shared variable {shared}; "
                                     f"pass a number to change its value")
            else:
                shared.set_value(np.asarray(value, dtype=shared.dtype))

    def get_loss(self, *args):
        """``(data, labels, *aux) -> (float32 loss, loss_instance)``, without updating.

        The loss excludes the weight-decay term.  Compiled on first use.
        """
        if self._get_loss is None:
            self._get_loss = self._compile([self.top_loss, self.loss_instance])
        loss, loss_instance = self._get_loss(*args)
        return np.float32(loss), loss_instance

    def compileGradients(self):
        """Compile and return a function ``(data, labels, *aux) -> list of gradients``."""
        logger.info("Compiling getGradients")
        return self._compile(self.gradients)

    def reset(self):
        """Reset the optimiser state (momenta, step sizes, moments) to its initial values.

        Parameters are not touched.  ``MixedConvNN.resetMomenta`` calls this for every
        compiled optimiser.
        """
        for var, fill in self._state:
            var.set_value(np.full_like(var.get_value(borrow=True), fill))

    def __call__(self, *args):
        """Perform one update step.

        Parameters
        ----------
        *args : numpy arrays
            ``data, labels, *aux`` in the order of ``[X, Y] + Y_aux``.

        Returns
        -------
        list
            ``[float32 loss, loss_instance]``, evaluated before the update.

        Raises
        ------
        NonFiniteLossError
            With ``nan_policy="raise"`` when the loss or a gradient is not finite; the
            parameters and state were not updated.
        """
        if self.step is None:
            raise NotImplementedError("the Optimizer base class has no update rule")
        self.step_count += 1
        loss, loss_instance, finite = self.step(*args)
        loss = np.float32(loss)
        if not finite:
            self._non_finite(loss)
        return [loss, loss_instance]

    def call_converted(self, *args):
        """:meth:`__call__` for arguments already checked and converted by the caller.

        ``MixedConvNN.trainingStep`` converts its arguments to the inputs' exact dtypes and
        checks their shapes (:class:`~elektronn.net._functions.Arg`); when every argument is an
        array of its input's dtype, rank and static shape, the compiled step skips PyTensor's
        input validation (``trust_input``).  Anything else goes through :meth:`__call__`.
        """
        step = self.step
        if step is None or not self._exact_inputs(args):
            return self(*args)
        step.trust_input = True
        try:
            return self(*args)
        finally:
            step.trust_input = False

    def _exact_inputs(self, args):
        """Whether ``args`` are arrays that PyTensor's input filter would pass unchanged."""
        types = self._input_types
        if types is None:
            types = self._input_types = [(np.dtype(v.type.dtype), v.type.shape)
                                         for v in self._inputs]
        if len(args) != len(types):
            return False
        for value, (dtype, shape) in zip(args, types, strict=True):
            if (type(value) is not np.ndarray or value.dtype != dtype
                    or value.ndim != len(shape) or not value.flags.aligned
                    or any(s is not None and s != n for s, n in zip(shape, value.shape))):
                return False
        return True

    # -- non-finite handling --

    def _snapshot(self):
        variables = self.params + [var for var, _ in self._state]
        return [(var, var.get_value()) for var in variables]

    @staticmethod
    def _restore(snapshot):
        for var, value in snapshot:
            var.set_value(value)

    def _non_finite(self, loss):
        what = f"loss is {loss}" if not np.isfinite(loss) else (
            f"a gradient is not finite (loss {loss})")
        message = (f"{what} at step {self.step_count} of {type(self).__name__}; parameters "
                   f"were not updated")
        if self.nan_policy == "raise":
            raise NonFiniteLossError(message, step=self.step_count, loss=loss)
        warnings.warn(message, NonFiniteLossWarning, stacklevel=3)


class compileSGD(Optimizer):
    """Stochastic gradient descent with momentum.

    ``v <- g + momentum*v``; ``theta <- theta - LR*v - LR*wd*theta``; returns the loss before
    the update.

    Parameters
    ----------
    optimizer_params : dict, optional
        ``LR`` and ``momentum``, numbers or shared scalars.  Missing keys come from the model's
        ``SGD_LR`` / ``SGD_momentum``, else ``NET_OPTIMIZER_DEFAULTS["SGD"]``.  Both are
        shared variables
        in the compiled step, so new values take effect at the next step without recompiling
        (``opt.LR.set_value(...)``, the model's ``setSGDLR``, or
        :meth:`~Optimizer.updateOptimizerParams`).
    model_obj, X, Y, Y_aux, top_loss, params, **kwargs
        See :class:`Optimizer`.

    Attributes
    ----------
    LR, momentum : shared scalars
    """

    name = "SGD"

    def __init__(self, optimizer_params=None, model_obj=None, X=None, Y=None, Y_aux=(),
                 top_loss=None, params=None, **kwargs):
        logger.info("Compiling SGD")
        super().__init__(model_obj, X, Y, Y_aux, top_loss, params, **kwargs)
        check_optimizer_params(self.name, optimizer_params)
        given = dict(optimizer_params or {})
        for key, model_attr in (("LR", "SGD_LR"), ("momentum", "SGD_momentum")):
            value = given.get(key, getattr(model_obj, model_attr, None))
            self._live_scalar(key, NET_OPTIMIZER_DEFAULTS["SGD"][key] if value is None
                              else value)
        self.LR, self.momentum = self._live["LR"], self._live["momentum"]
        self._state = [(v, 0) for v in self.last_grads]
        self.step = self._compile_step(sgd_updates(
            self.params, self.gradients, self.last_grads, self.LR, self.momentum,
            self.weightdecay), ("sgd", [self.last_grads],
                                [self.LR, self.momentum, self.weightdecay], None))
        self._log_done()


class compileAdam(Optimizer):
    """Adam (the original's docstring called it SGD).

    No weight decay.  Returns the loss before the update.

    Parameters
    ----------
    optimizer_params : dict, optional
        ``LR``, ``beta1``, ``beta2``, ``epsilon``; missing keys come from
        ``NET_OPTIMIZER_DEFAULTS["Adam"]`` (the original had none).  ``LR`` is a shared variable and
        can be changed between steps; the others are compiled in.
    model_obj, X, Y, Y_aux, top_loss, params, **kwargs
        See :class:`Optimizer`.

    Attributes
    ----------
    LR, t : shared scalars
    m, v : lists of shared moment buffers
    """

    name = "Adam"
    _compiled_in = ("beta1", "beta2", "epsilon")

    def __init__(self, optimizer_params=None, model_obj=None, X=None, Y=None, Y_aux=(),
                 top_loss=None, params=None, **kwargs):
        logger.info("Compiling Adam")
        super().__init__(model_obj, X, Y, Y_aux, top_loss, params, **kwargs)
        self.optimizer_params = self._hyperparameters(optimizer_params)
        self.LR = self._live_scalar("LR", self.optimizer_params["LR"])
        self.t = pytensor.shared(np.float32(0), name="Adam_t")
        self.m = [_zeros_like(p, "_Adam_m") for p in self.params]
        self.v = [_zeros_like(p, "_Adam_v") for p in self.params]
        self._state = [(b, 0) for b in self.m + self.v] + [(self.t, 0)]
        hp = self.optimizer_params
        hyperparameters = [self.LR, hp["beta1"], hp["beta2"], hp["epsilon"]]
        self.step = self._compile_step(
            adam_updates(self.params, self.gradients, self.m, self.v, self.t, *hyperparameters),
            ("adam", [self.m, self.v], hyperparameters, self.t))
        self._log_done()


class compileRPROP(Optimizer):
    """Resilient backpropagation, ELEKTRONN 1.0's variant (docs/differences.md, N26).

    Per-element step sizes grow by ``gain`` while the gradient keeps its sign and shrink by
    ``penalty`` when it flips, clipped to :data:`RPROP_STEP_BOUNDS`; the weight-decay term
    ``wd*theta`` is not scaled by the step size; ``beta`` is unused.  Returns the loss before
    the update.

    Parameters
    ----------
    optimizer_params : dict, optional
        ``penalty``, ``gain``, ``beta``, ``initial_update_size``; missing keys come from
        ``NET_OPTIMIZER_DEFAULTS["RPROP"]``.  All are compiled in.
    model_obj, X, Y, Y_aux, top_loss, params, **kwargs
        See :class:`Optimizer`.

    Attributes
    ----------
    LRs : list of shared step-size buffers
    """

    name = "RPROP"
    _compiled_in = ("penalty", "gain", "initial_update_size")

    def __init__(self, optimizer_params=None, model_obj=None, X=None, Y=None, Y_aux=(),
                 top_loss=None, params=None, **kwargs):
        logger.info("Compiling RPROP...")
        super().__init__(model_obj, X, Y, Y_aux, top_loss, params, **kwargs)
        hp = self.optimizer_params = self._hyperparameters(optimizer_params)
        initial = np.float32(hp["initial_update_size"])
        self.LRs = [_zeros_like(p, "_RPROP", fill=initial) for p in self.params]
        self._state = [(v, 0) for v in self.last_grads] + [(v, initial) for v in self.LRs]
        self.step = self._compile_step(rprop_updates(
            self.params, self.gradients, self.last_grads, self.LRs, hp["penalty"], hp["gain"],
            self.weightdecay), ("rprop", [self.last_grads, self.LRs],
                                [hp["penalty"], hp["gain"], self.weightdecay,
                                 *RPROP_STEP_BOUNDS], None))
        self._log_done()


class compileCG(Optimizer):
    """Nonlinear conjugate gradients (Polak-Ribiere+) with ELEKTRONN's line search.

    One call runs ``n_steps`` line searches along conjugate directions on the same batch and
    returns the loss and instance after the update.  No weight decay.  The line search
    reproduces the original (docs/differences.md, N28), see :meth:`lineSearch`.

    Parameters
    ----------
    optimizer_params : dict, optional
        ``n_steps``, ``alpha``, ``beta``, ``max_step``, ``min_step``, ``only_descent``,
        ``show``; missing keys come from ``NET_OPTIMIZER_DEFAULTS["CG"]``.  Read at every
        call.
    model_obj, X, Y, Y_aux, top_loss, params, **kwargs
        See :class:`Optimizer`.

    Attributes
    ----------
    direc : list of shared search directions
    t : shared scalar
        The distance moved along the current direction.
    CG_kickstart, CG_step, CG_update_params, CG_linear_approx : pytensor Functions
        ``(X, Y, *aux) -> []``: ``last_grad <- g``, ``d <- -g``;
        ``(X, Y, *aux) -> coeff``: Polak-Ribiere+ direction update;
        ``(delta) -> t + delta``: ``theta <- theta + delta*d``, ``t <- t + delta``;
        ``() -> sum(last_grad * d)``.
    """

    name = "CG"

    def __init__(self, optimizer_params=None, model_obj=None, X=None, Y=None, Y_aux=(),
                 top_loss=None, params=None, **kwargs):
        logger.info("Compiling CG")
        super().__init__(model_obj, X, Y, Y_aux, top_loss, params, **kwargs)
        self.optimizer_params = self._hyperparameters(optimizer_params)
        self.last_timeline = []
        self.direc = [_zeros_like(p, "_CG_direc") for p in self.params]
        self.t = pytensor.shared(np.float32(0), name="CG_t")
        self._state = [(v, 0) for v in self.last_grads + self.direc] + [(self.t, 0)]
        mode = backend.get_mode(self.mode)

        self.CG_kickstart = self._compile(
            [], cg_kickstart_updates(self.gradients, self.last_grads, self.direc))
        coeff, updates = cg_step_updates(self.gradients, self.last_grads, self.direc)
        self.CG_step = self._compile(coeff, updates)

        delta = pt.scalar("delta", dtype="float32")
        self.CG_update_params = pytensor.function(
            [delta], self.t + delta, mode=mode,
            updates=fit_updates(cg_move_updates(self.params, self.direc, self.t, delta)))
        linear = pt.add(
            *[pt.sum(lg * d) for lg, d in zip(self.last_grads, self.direc, strict=True)], _ZERO)
        self.CG_linear_approx = pytensor.function([], linear, mode=mode)
        self._log_done()

    def lineSearch(self, *args):
        """Backtracking line search along the current direction (ELEKTRONN 1.0 semantics).

        If ``sum(last_grad * d) > 0`` (not a descent direction) nothing moves.  Otherwise the
        parameters move by ``max_step`` along ``d`` and back by factors ``beta`` at most
        ``int(log(min_step/max_step)/log(beta))`` times.  The search stops when the loss is
        below the chord ``loss0 + t*alpha*sum(last_grad*d)`` or when it rose against the
        previous trial point; in the latter case the worse point is kept, as in the original.
        The first comparison is against a previous loss of 1e6.

        Returns
        -------
        tuple
            ``(loss, loss_instance, t, count)``: the loss at the final point, the distance
            moved, and the number of loss evaluations.
        """
        hp = self.optimizer_params
        loss0, instance0 = self.get_loss(*args)
        linear_approx = np.float32(self.CG_linear_approx())
        if linear_approx > 0:
            return loss0, instance0, 0, 0
        max_step, beta, alpha = hp["max_step"], hp["beta"], hp["alpha"]
        max_count = int(np.log(hp["min_step"] / max_step) / np.log(beta))
        points = []
        t = max_step
        self.CG_update_params(np.float32(max_step))
        loss, loss_instance = self.get_loss(*args)
        count = 1
        delta = max_step * (beta - 1.0)
        last_loss = _CG_INITIAL_LAST_LOSS
        for _ in range(max_count):
            chord = loss0 + t * linear_approx * alpha
            points.append([t, loss, chord])
            if loss <= chord or loss > last_loss:
                break
            self.CG_update_params(np.float32(delta))
            last_loss = loss
            loss, loss_instance = self.get_loss(*args)
            delta *= beta
            t *= beta
            count += 1
        if hp["show"]:
            self._plot(points + [[0, loss0, loss0]])
        return loss, loss_instance, float(self.t.get_value()), count

    @staticmethod
    def _plot(points):
        import matplotlib.pyplot as plt

        points = np.array(points, dtype=np.float64)
        plt.figure()
        plt.plot(points[:, 0], points[:, 1:])
        plt.scatter(points[:, 0], points[:, 1])
        plt.legend(("fu", "chord"))
        plt.draw()
        plt.pause(0.0001)

    def __call__(self, *args):
        """Run ``n_steps`` line searches; return ``[float32 loss, instance]`` after the update.

        The rows ``[loss, t, coeff, count]`` of the line searches are in ``last_timeline``.
        If the final loss is not finite, the parameters and the CG state are restored to their
        values before the call (see the module docstring).
        """
        self.step_count += 1
        snapshot = self._snapshot()
        hp = self.optimizer_params
        timeline = []
        self.CG_kickstart(*args)
        loss, loss_instance, t, count = self.lineSearch(*args)
        timeline.append([loss, t, 0, count])
        self.t.set_value(np.float32(0))
        for _ in range(hp["n_steps"] - 1):
            if hp["only_descent"]:
                self.CG_kickstart(*args)
                coeff = 0
            else:
                coeff = float(self.CG_step(*args))
            loss, loss_instance, t, count = self.lineSearch(*args)
            self.t.set_value(np.float32(0))
            timeline.append([loss, t, coeff, count])
        self.last_timeline = timeline
        loss = np.float32(loss)
        if not np.isfinite(loss):
            self._restore(snapshot)
            self._non_finite(loss)
        return [loss, loss_instance]


class compileLBFGS(Optimizer):
    """L-BFGS through :func:`scipy.optimize.fmin_l_bfgs_b` (full-batch method).

    Each call runs scipy's L-BFGS-B on the flattened parameters (one float32 vector, each
    unique parameter once) for the given batch, writes scipy's optimum back into the
    parameters (the original left them at the last evaluated point) and returns the loss
    there.  No weight decay.  scipy's outcome (converged, stopped at the ``maxiter``/``maxfun``
    limit, or aborted) is logged at INFO level.

    Parameters
    ----------
    optimizer_params : dict, optional
        Keyword arguments of ``fmin_l_bfgs_b``; missing keys come from
        ``NET_OPTIMIZER_DEFAULTS["LBFGS"]``.  Read at every call.  ``iprint < 0`` (silent) is
        not passed on, as recent scipy deprecates it.
    model_obj, X, Y, Y_aux, top_loss, params, **kwargs
        See :class:`Optimizer`.
    debug : bool
        Log statistics of every evaluation at DEBUG level.

    References
    ----------
    R. H. Byrd, P. Lu and J. Nocedal. A Limited Memory Algorithm for Bound Constrained
    Optimization (1995), SIAM Journal on Scientific and Statistical Computing, 16, 5,
    pp. 1190-1208.

    C. Zhu, R. H. Byrd and J. Nocedal. L-BFGS-B: Algorithm 778: L-BFGS-B, FORTRAN routines for
    large scale bound constrained optimization (1997), ACM Transactions on Mathematical
    Software, 23, 4, pp. 550-560.

    J. L. Morales and J. Nocedal. L-BFGS-B: Remark on Algorithm 778 (2011), ACM Transactions on
    Mathematical Software, 38, 1.
    """

    name = "LBFGS"

    def __init__(self, optimizer_params=None, model_obj=None, X=None, Y=None, Y_aux=(),
                 top_loss=None, params=None, debug=False, **kwargs):
        logger.info("Compiling lBFGS")
        super().__init__(model_obj, X, Y, Y_aux, top_loss, params, **kwargs)
        self.optimizer_params = self._hyperparameters(optimizer_params)
        self.debug = debug
        self._loss_and_grad = self._compile([self.top_loss, *self.gradients])
        self.params_values = [p.get_value() for p in self.params]
        self.shapes = [v.shape for v in self.params_values]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.total_size = sum(self.sizes)
        self.params_vec = np.zeros(self.total_size, np.float32)
        self.gradients_vec = np.zeros(self.total_size, np.float32)
        self._log_done()

    def vec2list(self, vec, target_list):
        """Copy the flat vector ``vec`` into the arrays of ``target_list`` (in place)."""
        pos = 0
        for array, shape, size in zip(target_list, self.shapes, self.sizes, strict=True):
            array[...] = vec[pos:pos + size].reshape(shape)
            pos += size

    def list2vect(self, src_list, target_vec):
        """Copy the arrays of ``src_list`` into the flat vector ``target_vec`` (in place)."""
        pos = 0
        for array, size in zip(src_list, self.sizes, strict=True):
            target_vec[pos:pos + size] = np.asarray(array).ravel()
            pos += size

    def _set_params(self, vec):
        self.vec2list(vec, self.params_values)
        for param, value in zip(self.params, self.params_values, strict=True):
            param.set_value(value, borrow=False)

    def loss_and_grad(self, params_vect_new, *args):
        """Set the parameters to ``params_vect_new``; return ``(float32 loss, float64 grad)``."""
        self._set_params(params_vect_new)
        loss, *grads = self._loss_and_grad(*args)
        self.list2vect(grads, self.gradients_vec)
        grad_vec = self.gradients_vec.astype(np.float64)
        if self.debug:
            logger.debug("loss_and_grad: x in [%g, %g], y in [%g, %g], loss %g, mean(g) %g, "
                         "mean(|g|) %g", np.min(args[0]), np.max(args[0]), np.min(args[1]),
                         np.max(args[1]), loss, grad_vec.mean(), np.abs(grad_vec).mean())
        return np.float32(loss), grad_vec

    def __call__(self, *args):
        """Run L-BFGS-B on the batch ``(data, labels, *aux)``; return the final float32 loss.

        The parameters are left at scipy's optimum.  If the final loss is not finite they are
        restored to their values before the call.
        """
        self.step_count += 1
        self.params_values = [p.get_value() for p in self.params]
        self.list2vect(self.params_values, self.params_vec)
        start = self.params_vec.copy()
        options = dict(self.optimizer_params)
        if options.get("iprint") is not None and options["iprint"] < 0:
            del options["iprint"]
        x, loss, info = fmin_l_bfgs_b(self.loss_and_grad, self.params_vec, args=args, **options)
        self._set_params(x)
        loss = np.float32(loss)
        logger.info(_LBFGS_OUTCOME.get(info["warnflag"], _LBFGS_OUTCOME[2]), info.get("task"),
                    info.get("nit"), info.get("funcalls"))
        if not np.isfinite(loss):
            self._set_params(start)
            self._non_finite(loss)
        return loss
