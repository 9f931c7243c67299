"""One Op for a whole optimiser step: the finiteness guard and the update rule, in place.

The symbolic update rules of :mod:`elektronn.net.updates`, guarded by
:func:`~elektronn.net.updates.all_finite` and
:func:`~elektronn.net.updates.guard_updates`, make a training step run about 10 elementwise
nodes per parameter (``g + mu*v``, ``p - lr*v - lr*wd*p``, a ``switch`` per updated variable,
...), each a numpy call of a few microseconds, which decides the speed of small nets.
:class:`FusedUpdate` does the same in one node: it takes the loss, the gradients, the
parameters, the optimiser's state buffers and its hyperparameters, decides whether the step is
finite as ``all_finite(float64=True)`` does (the float64 sum of the loss and of every gradient
is finite), and only then updates the parameters and buffers in place (they are destroyed
inputs: shared variables that a compiled function updates are mutable).  Its first output is
the finite flag; the others are the updated variables, to pass as the function's ``updates``
(:func:`fused_updates` builds both).

The arithmetic is float32 in the order of the symbolic rules (see
:func:`elektronn.net.updates.sgd_updates`, :func:`~elektronn.net.updates.adam_updates` and
:func:`~elektronn.net.updates.rprop_updates`); it runs in the C kernel library
(``_update_kernels.c``, see :mod:`elektronn.ops._kernels`) or, without it, in numpy
(:mod:`elektronn.ops.numpy_kernels`), with bit-identical results.  The Op has no gradient and
no JAX implementation: the optimisers use it in the ``"numpy"`` mode and keep the symbolic
rules elsewhere.

Examples
--------
>>> import numpy as np, pytensor
>>> w = pytensor.shared(np.float32([1.0, 2.0]), name="w")
>>> v = pytensor.shared(np.float32([0.0, 0.0]), name="v")
>>> loss = (w ** 2).sum()
>>> finite, updates = fused_updates("sgd", loss, [pytensor.grad(loss, w)], [w], [[v]],
...                                 [0.1, 0.9, 0.0])
>>> step = pytensor.function([], finite, updates=updates, accept_inplace=True,
...                          mode="FAST_COMPILE")
>>> bool(step()), w.get_value(), v.get_value()
(True, array([0.8, 1.6], dtype=float32), array([2., 4.], dtype=float32))
"""

import ctypes
import weakref

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor.type import TensorType

from elektronn.ops import _kernels, numpy_kernels

__all__ = ["FusedUpdate", "fused_updates", "apply_update", "RULES", "RPROP_CONSTANTS"]

RULES = {
    "sgd": (1, ("learning_rate", "momentum", "weight_decay")),
    "adam": (2, ("learning_rate", "beta1", "beta2", "epsilon")),
    "rprop": (2, ("penalty", "gain", "weight_decay", "low", "high")),
}
"""``rule -> (state buffers per parameter, hyperparameter names)``.  Buffers: SGD the
velocities; Adam the moments ``m, v`` (and its step counter ``t``, a shared float32 scalar);
RPROP the last gradients and the step sizes."""

_ONE = np.float32(1)
_GATHER_MAX = 1 << 16
"""Gradients of up to this many elements in all are gathered into one buffer for the C kernel
(see :class:`_KernelStep`)."""
RPROP_CONSTANTS = (np.float32(-1e-9), np.float32(1e-11), np.float32(1e-6))
"""ELEKTRONN 1.0's RPROP constants: a product of the last and the new gradient below the first
is a sign change, above the second the same sign; the third is added to ``|g|`` in the step's
denominator.  :func:`elektronn.net.updates.rprop_updates` uses them too."""


class FusedUpdate(Op):
    """A guarded, in-place optimiser step (see the module docstring).

    Parameters
    ----------
    rule : {"sgd", "adam", "rprop"}
    n_params : int

    Notes
    -----
    Inputs: ``loss, *grads, *params, *buffers, [t,] *hyperparameters`` with the buffers
    grouped by kind (all velocities, then for Adam all ``m``, then all ``v``); outputs:
    ``finite`` (a boolean scalar), then the updated ``params, buffers[, t]`` in the order of
    the inputs, each the destroyed input itself.
    """

    __props__ = ("rule", "n_params")

    def __init__(self, rule, n_params):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {tuple(RULES)}, got {rule!r}")
        self.rule, self.n_params = rule, int(n_params)
        n_buffers = RULES[rule][0]
        self.n_updated = self.n_params * (1 + n_buffers) + (rule == "adam")
        first = 1 + self.n_params  # loss and gradients come first
        self.destroy_map = {1 + j: [first + j] for j in range(self.n_updated)}
        self._cache = {}

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}

    def make_node(self, loss, *inputs):
        k, (n_buffers, names) = self.n_params, RULES[self.rule]
        n_hyper = len(names)
        expected = k * (2 + n_buffers) + (self.rule == "adam") + n_hyper
        if len(inputs) != expected:
            raise ValueError(f"{self.rule} with {k} params takes {expected} inputs after the "
                             f"loss, got {len(inputs)}")
        loss = pt.as_tensor_variable(loss)
        if loss.ndim != 0:
            raise ValueError(f"loss must be a scalar, got ndim {loss.ndim}")
        grads = [pt.as_tensor_variable(g) for g in inputs[:k]]
        updated = [pt.as_tensor_variable(v) for v in inputs[k:k + self.n_updated]]
        hyper = [pt.cast(pt.as_tensor_variable(h), "float32") for h in inputs[k + self.n_updated:]]
        for name, group in (("grads", grads), ("params and buffers", updated)):
            for var in group:
                if var.dtype != "float32":
                    raise ValueError(f"{name} must be float32, got {var.type}")
        for i, (g, p) in enumerate(zip(grads, updated, strict=False)):
            if g.ndim != p.ndim:
                raise ValueError(f"grads[{i}] has ndim {g.ndim}, its param {p.ndim}")
        for i, var in enumerate(updated[k:k * (1 + n_buffers)]):
            if var.ndim != updated[i % k].ndim:
                raise ValueError(f"buffer {i} has ndim {var.ndim}, its param "
                                 f"{updated[i % k].ndim}")
        if self.rule == "adam" and updated[-1].ndim != 0:
            raise ValueError("Adam's step counter t must be a scalar")
        for name, h in zip(names, hyper, strict=True):
            if h.ndim != 0:
                raise ValueError(f"{name} must be a scalar, got ndim {h.ndim}")
        outputs = [TensorType("bool", shape=())()] + [v.type() for v in updated]
        return Apply(self, [loss, *grads, *updated, *hyper], outputs)

    def perform(self, node, inputs, output_storage):
        k, n = self.n_params, self.n_updated
        grads, updated = inputs[1:1 + k], inputs[1 + k:1 + k + n]
        finite = apply_update(self.rule, inputs[0], grads, updated,
                              inputs[1 + k + n:], self._cache)
        output_storage[0][0] = np.asarray(finite)
        for cell, array in zip(output_storage[1:], updated, strict=True):
            cell[0] = array


def fused_updates(rule, loss, grads, params, buffers, hyperparameters, t=None):
    """The finite flag and the ``updates`` of a :class:`FusedUpdate` step.

    Parameters
    ----------
    rule : {"sgd", "adam", "rprop"}
    loss : scalar variable
    grads, params : list
        The gradients and the shared parameters they belong to.
    buffers : list of lists of shared variables
        The state buffers, one list per kind (see :data:`RULES`): ``[velocities]`` (SGD),
        ``[m, v]`` (Adam), ``[last_grads, step_sizes]`` (RPROP).
    hyperparameters : list of numbers or scalar variables
        In the order of :data:`RULES`.
    t : shared scalar, optional
        Adam's step counter (required for Adam).

    Returns
    -------
    finite : boolean scalar variable
    updates : list of (shared variable, new value) pairs
        For ``pytensor.function(..., updates=updates, accept_inplace=True)``.
    """
    updated = list(params) + [b for group in buffers for b in group]
    if rule == "adam":
        if t is None:
            raise ValueError("Adam needs its step counter t")
        updated.append(t)
    finite, *new = FusedUpdate(rule, len(params))(loss, *grads, *updated, *hyperparameters)
    return finite, list(zip(updated, new, strict=True))


# --- the kernels ----------------------------------------------------------------------------

_C_ARGS = {
    "sgd": [ctypes.c_float] * 3,
    "adam": [ctypes.c_float] * 6,
    "rprop": [ctypes.c_float] * 8,
}


def _c_function(lib, rule):
    fn = getattr(lib, f"update_{rule}")
    if fn.argtypes is None:
        fn.argtypes = [ctypes.c_double, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                       *_C_ARGS[rule]]
        fn.restype = ctypes.c_int
    return fn


class _KernelStep:
    """The C kernel's call for one list of updated arrays, kept between steps.

    The parameters and buffers are updated in place, so the same arrays come back at every
    step: their pointers and sizes are kept, and a step only checks that the arrays are the
    same ones (:meth:`fits`).  Gradients of up to :data:`_GATHER_MAX` elements in all are copied
    into one buffer (one numpy call, which also makes transposed gradients contiguous) whose
    pointers are kept too; larger ones are passed one by one.
    """

    def __init__(self, lib, rule, grads, updated):
        k = len(grads)
        self.rule, self.k, self.fn = rule, k, _c_function(lib, rule)
        self.arrays = [weakref.ref(a) for a in updated]  # no old parameters kept alive
        self.shapes = [a.shape for a in updated[:k]]
        sizes = [a.size for a in updated[:k]]
        self.gathered = np.empty(sum(sizes), np.float32) if sum(sizes) <= _GATHER_MAX else None
        grad_pointers = [0] * k
        if self.gathered is not None:
            start = _kernels._ptr(self.gathered)
            offsets = np.cumsum([0, *sizes[:-1]], dtype=np.int64).tolist()
            grad_pointers = [start + 4 * o for o in offsets]
        self.pointers = (ctypes.c_void_p * (k + len(updated)))(
            *grad_pointers, *map(_kernels._ptr, updated))
        self.sizes = (ctypes.c_long * k)(*sizes)

    @staticmethod
    def usable(updated):
        return all(a.dtype == np.float32 and a.flags.c_contiguous and a.flags.aligned
                   and a.flags.writeable for a in updated)

    def fits(self, updated):
        return len(updated) == len(self.arrays) and all(
            a is ref() for a, ref in zip(updated, self.arrays, strict=True))

    def __call__(self, loss, grads, scalars):
        """Run the kernel with the float32 ``scalars`` of its rule; return the finite flag."""
        if [g.shape for g in grads] != self.shapes:
            _check_shapes(self.rule, grads, [ref() for ref in self.arrays])
        if self.gathered is not None:
            np.concatenate(grads, axis=None, out=self.gathered)
        else:
            grads = [np.ascontiguousarray(g) for g in grads]  # alive through the call
            for j, g in enumerate(grads):
                self.pointers[j] = _kernels._ptr(g)
        return bool(self.fn(float(loss), self.k, self.pointers, self.sizes, *scalars))


def _check_shapes(rule, grads, updated):
    k = len(grads)
    for j, array in enumerate(updated):
        if array.shape != grads[j % k].shape:
            raise ValueError(f"{rule} update: array {j} of the params and buffers has shape "
                             f"{array.shape}, its gradient {grads[j % k].shape}")


def _scalars(rule, hyperparameters, t):
    """The kernel's float32 scalars for ``rule`` (and Adam's new ``t``)."""
    if rule == "sgd":
        return [float(h) for h in hyperparameters], None
    hyper = [np.float32(h) for h in hyperparameters]
    if rule == "rprop":
        return [*hyper, *RPROP_CONSTANTS], None
    lr, b1, b2, eps = hyper
    new_t = t + _ONE
    step = lr * np.sqrt(_ONE - b2 ** new_t) / (_ONE - b1 ** new_t)
    return [np.float32(step), b1, _ONE - b1, b2, _ONE - b2, eps], new_t


def apply_update(rule, loss, grads, updated, hyperparameters, cache=None):
    """Run one guarded step of ``rule`` in place; return whether it was finite.

    Parameters
    ----------
    rule : {"sgd", "adam", "rprop"}
    loss : float or 0-d array
    grads : sequence of float32 arrays
    updated : sequence of float32 arrays
        The parameters, then the buffers grouped by kind, then (Adam) the 0-d step counter;
        updated in place when the step is finite, untouched otherwise.
    hyperparameters : sequence of numbers
        In the order of :data:`RULES`.
    cache : dict, optional
        Kept by the caller between calls (the C kernel's call for the same arrays).

    Returns
    -------
    bool
    """
    t = None
    if rule == "adam":
        t, updated = updated[-1], updated[:-1]
    scalars, new_t = _scalars(rule, hyperparameters, t)
    step = cache.get("step") if cache else None
    if step is None or not step.fits(updated) or not _kernels.use_c_kernels:
        _check_shapes(rule, grads, updated)
        lib = _kernels.kernel_library()
        step = (_KernelStep(lib, rule, grads, updated)
                if lib is not None and _KernelStep.usable(updated) else None)
        if cache is not None:
            cache["step"] = step
    if step is not None:
        finite = step(loss, grads, scalars)
    else:
        finite = getattr(numpy_kernels, f"update_{rule}")(loss, grads, updated, *scalars)
    if finite and t is not None:
        t[...] = new_t
    return finite
