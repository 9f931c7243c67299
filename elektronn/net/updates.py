"""The update rules of the optimisers, as plain functions over symbolic expressions.

Each rule returns an ordered dict ``{shared variable: new value}`` to pass as ``updates`` to
``pytensor.function`` (as Lasagne's ``updates`` module does); nothing is compiled here.  The
classes of :mod:`elektronn.net.optimizer` (``compileSGD`` ...) build on them.  The numerics are
those of ELEKTRONN 1.0: weight decay is added in the update, not to the loss, and its placement
differs per rule (SGD ``LR*wd*theta``, RPROP ``wd*theta`` without the step size, none for Adam
and CG).

Examples
--------
>>> import numpy as np, pytensor, pytensor.tensor as pt
>>> w = pytensor.shared(np.float32(1.0), name="w")
>>> v = pytensor.shared(np.float32(0.0), name="v")
>>> updates = sgd_updates([w], [2 * w], [v], learning_rate=0.1, momentum=0.9)
>>> step = pytensor.function([], [], updates=updates)
>>> _ = step()
>>> round(float(w.get_value()), 6)
0.8
"""

from collections import OrderedDict

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from elektronn.defaults import NET_OPTIMIZER_DEFAULTS
from elektronn.ops.updates import RPROP_CONSTANTS

__all__ = [
    "sgd_updates",
    "adam_updates",
    "rprop_updates",
    "cg_kickstart_updates",
    "cg_step_updates",
    "cg_move_updates",
    "guard_updates",
    "fit_updates",
    "all_finite",
    "RPROP_STEP_BOUNDS",
]

RPROP_STEP_BOUNDS = (1e-7, 2e-3)
"""The hard-coded bounds of the RPROP step sizes."""

_ONE = np.float32(1)
_ZERO = np.float32(0)
_ADAM, _RPROP = NET_OPTIMIZER_DEFAULTS["Adam"], NET_OPTIMIZER_DEFAULTS["RPROP"]
_SIGN_CHANGE, _SAME_SIGN, _OFFSET = RPROP_CONSTANTS


def _f32(value):
    """Return a number as a float32 constant and a variable as a float32 expression."""
    if isinstance(value, Variable):
        return value if value.dtype == "float32" else pt.cast(value, "float32")
    return np.float32(value)


def sgd_updates(params, grads, velocities, learning_rate, momentum, weight_decay=0.0):
    """Momentum SGD as in ELEKTRONN 1.0.

    ``v <- g + momentum * v`` and ``theta <- theta - LR * v - LR * weight_decay * theta``, all
    from the old values.

    Parameters
    ----------
    params, grads, velocities : list
        Shared parameters, their gradients and one shared velocity buffer per parameter.
    learning_rate, momentum, weight_decay : float or scalar variable
        Pass shared variables to change them between steps without recompiling.

    Returns
    -------
    OrderedDict
        Updates for the parameters and the velocities.
    """
    lr, mu, wd = _f32(learning_rate), _f32(momentum), _f32(weight_decay)
    updates = OrderedDict()
    for param, grad, velocity in zip(params, grads, velocities, strict=True):
        new_velocity = grad + mu * velocity
        updates[param] = param - lr * new_velocity - lr * wd * param
        updates[velocity] = new_velocity
    return updates


def adam_updates(params, grads, ms, vs, t, learning_rate=_ADAM["LR"], beta1=_ADAM["beta1"],
                 beta2=_ADAM["beta2"], epsilon=_ADAM["epsilon"]):
    """Adam as in ELEKTRONN 1.0 (no weight decay; epsilon outside the bias correction).

    ``t <- t + 1``, ``a = LR * sqrt(1 - beta2**t) / (1 - beta1**t)``,
    ``m <- beta1*m + (1-beta1)*g``, ``v <- beta2*v + (1-beta2)*g**2`` and
    ``theta <- theta - a * m / (sqrt(v) + epsilon)``.

    Parameters
    ----------
    params, grads : list
        Shared parameters and their gradients.
    ms, vs : list
        Shared first- and second-moment buffers, one per parameter.
    t : shared scalar
        The step counter (float32, starts at 0).
    learning_rate, beta1, beta2, epsilon : float or scalar variable

    Returns
    -------
    OrderedDict
    """
    lr, b1, b2, eps = (_f32(v) for v in (learning_rate, beta1, beta2, epsilon))
    updates = OrderedDict()
    new_t = t + _ONE
    step_size = lr * pt.sqrt(_ONE - b2**new_t) / (_ONE - b1**new_t)
    for param, grad, m, v in zip(params, grads, ms, vs, strict=True):
        new_m = b1 * m + (_ONE - b1) * grad
        new_v = b2 * v + (_ONE - b2) * grad**2
        updates[m] = new_m
        updates[v] = new_v
        updates[param] = param - step_size * new_m / (pt.sqrt(new_v) + eps)
    updates[t] = new_t
    return updates


def rprop_updates(params, grads, last_grads, step_sizes, penalty=_RPROP["penalty"],
                  gain=_RPROP["gain"], weight_decay=0.0, bounds=RPROP_STEP_BOUNDS):
    """The RPROP variant of ELEKTRONN 1.0.

    With ``s = last_grad * g``:
    ``eta <- clip(eta * (1 - penalty*[s < -1e-9] + gain*[s > 1e-11]), *bounds)``,
    ``theta <- theta - eta_old * g / (abs(g) + 1e-6) - weight_decay * theta`` (the decay is
    not scaled by the step size) and ``last_grad <- g``.

    Parameters
    ----------
    params, grads : list
        Shared parameters and their gradients.
    last_grads, step_sizes : list
        Shared buffers per parameter: the previous gradient and the step size ``eta``.
    penalty, gain, weight_decay : float or scalar variable
    bounds : (float, float)
        Clip range of the step sizes.

    Returns
    -------
    OrderedDict
    """
    pen, gn, wd = _f32(penalty), _f32(gain), _f32(weight_decay)
    low, high = np.float32(bounds[0]), np.float32(bounds[1])
    updates = OrderedDict()
    for param, grad, last_grad, eta in zip(params, grads, last_grads, step_sizes, strict=True):
        same_sign = last_grad * grad
        factor = (_ONE - pen * (same_sign < _SIGN_CHANGE) + gn * (same_sign > _SAME_SIGN))
        updates[eta] = pt.clip(eta * factor, low, high)
        updates[param] = param - eta * grad / (pt.abs(grad) + _OFFSET) - wd * param
        updates[last_grad] = grad
    return updates


def cg_kickstart_updates(grads, last_grads, directions):
    """Start conjugate gradients: ``last_grad <- g`` and ``d <- -g``.

    Returns
    -------
    OrderedDict
    """
    updates = OrderedDict()
    for grad, last_grad, direction in zip(grads, last_grads, directions, strict=True):
        updates[last_grad] = grad
        updates[direction] = -grad
    return updates


def cg_step_updates(grads, last_grads, directions):
    """A Polak-Ribiere+ direction update.

    ``coeff = max(0, sum(g * (g - last_grad)) / sum(last_grad**2))``, ``last_grad <- g`` and
    ``d <- -g + coeff * d``.  When every last gradient is zero, ``coeff`` is 0 (the original
    divided by zero).

    Returns
    -------
    coeff : scalar variable
    updates : OrderedDict
    """
    num = pt.add(*[pt.sum(g * (g - lg)) for g, lg in zip(grads, last_grads, strict=True)], _ZERO)
    den = pt.add(*[pt.sum(lg * lg) for lg in last_grads], _ZERO)
    positive = den > _ZERO
    coeff = pt.maximum(pt.switch(positive, num / pt.switch(positive, den, _ONE), _ZERO), _ZERO)
    updates = OrderedDict()
    for grad, last_grad, direction in zip(grads, last_grads, directions, strict=True):
        updates[last_grad] = grad
        updates[direction] = -grad + coeff * direction
    return coeff, updates


def cg_move_updates(params, directions, t, delta):
    """One move of the line search: ``theta <- theta + delta * d`` and ``t <- t + delta``.

    Parameters
    ----------
    params, directions : list
        Shared parameters and their search directions.
    t : shared scalar
        The distance moved along the directions so far.
    delta : scalar variable

    Returns
    -------
    OrderedDict
    """
    updates = OrderedDict((p, p + d * delta) for p, d in zip(params, directions, strict=True))
    updates[t] = t + delta
    return updates


def fit_updates(updates):
    """Give every update the type of its variable where only the static shapes disagree.

    A gradient can know more about its shape than the shared variable it updates (e.g. a
    static 1 for one input channel against an unknown size); PyTensor then refuses the update.
    Such an update is broadcast to the variable's shape, which drops the extra knowledge.

    Parameters
    ----------
    updates : dict
        ``{shared variable: new value}``.

    Returns
    -------
    OrderedDict
    """
    fitted = OrderedDict()
    for var, new in updates.items():
        if not var.type.in_same_class(new.type):
            new = pt.second(var, new)
        fitted[var] = new
    return fitted


def all_finite(loss, grads, float64=True):
    """Return a boolean scalar: the loss and every gradient entry are finite.

    NaN and inf survive summation (``inf - inf`` is NaN) and a float64 sum of float32 values
    cannot overflow, so the sum of the loss and of every gradient's float64 sum is finite
    exactly when all of them are: one reduction per gradient instead of four elementwise
    passes.  Without float64 (JAX runs in float32 unless x64 is enabled, and a float32 sum
    could overflow), every entry is tested with ``isfinite`` instead; XLA fuses the test into
    one pass per gradient.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> g = pt.vector("g")
    >>> check = pytensor.function([g], [all_finite(g[0], [g]),
    ...                                 all_finite(g[0], [g], float64=False)])
    >>> [bool(v) for v in check(np.array([3e38, 3e38], "float32"))]
    [True, True]
    >>> [bool(v) for v in check(np.array([1.0, np.nan], "float32"))]
    [False, False]
    """
    if float64:
        total = pt.cast(loss, "float64")
        for grad in grads:
            total = total + pt.sum(grad, dtype="float64")
        return pt.isfinite(total)
    finite = pt.isfinite(loss)
    for grad in grads:
        finite = pt.and_(finite, pt.all(pt.isfinite(grad)))
    return finite


def guard_updates(updates, condition):
    """Make every update conditional: ``var <- switch(condition, new, var)``.

    Parameters
    ----------
    updates : dict
        ``{shared variable: new value}``, e.g. from :func:`sgd_updates`.
    condition : boolean scalar variable
        E.g. :func:`all_finite` of the loss and the gradients.

    Returns
    -------
    OrderedDict
    """
    return OrderedDict((var, pt.switch(condition, new, var)) for var, new in updates.items())
