"""Fully connected layers: :class:`PerceptronLayer` and the Elman :class:`RecurrentLayer`."""

import logging

import numpy as np
import pytensor
import pytensor.tensor as pt

from elektronn.net import losses
from elektronn.net._graph import as_param, softmax
from elektronn.net.activations import apply_activation, parse_activation
from elektronn.net.layer import Layer
from elektronn.net.netutils import initWeights

__all__ = ["PerceptronLayer", "RecurrentLayer"]

logger = logging.getLogger("elektronn")


def _bias_init(activation, n, rng):
    """Perceptron bias rule (as ELEKTRONN 1.0): relu 1.0, sigmoid 0.5, otherwise U(±1e-6)."""
    if activation == "relu":
        return np.ones(n, np.float32)
    if activation == "sigmoid":
        return np.full(n, 0.5, np.float32)
    return initWeights((n,), scale=1e-6, mode="fix-uni", rng=rng)


class PerceptronLayer(Layer):
    """Fully connected layer: ``act(dropout(noisy(x) . W) + b)`` with ``W (n_in, n_out)``.

    Parameters
    ----------
    input : TensorVariable ``(bs, n_in)``
    n_in, n_out : int
        Number of inputs and of units.
    batch_size : int or None
    enable_dropout : bool
        Dropout on the units (drop rate ``activation_noise``, default 0.5; one gate per unit,
        shared by the batch, inverted scaling).
    activation_func : str
        ``'tanh'``, ``'relu'``, ``'sigmoid'``, ``'abs'``, ``'linear'`` or ``'maxout <r>'``.
    input_noise : float, optional
        Standard deviation of additive Gaussian noise on the input, kept in the shared variable
        ``input_noise`` (setting it to 0 switches the noise off).
    input_layer : object, optional
    W, b : ndarray or TensorVariable, optional
        Given weights are used as they are and are **not** trained (not in ``params``), as in
        ELEKTRONN 1.0; symbolic ones share the weight of another layer (e.g. tied auto-encoders).
    rng : numpy.random.Generator, optional
    streams : elektronn.net._graph.RandomStreams, optional
        Source of dropout gates and input noise.

    All arguments after ``batch_size`` are keyword-only.
    """

    def __init__(self, input, n_in, n_out, batch_size, *, enable_dropout=False,
                 activation_func="tanh", input_noise=None, input_layer=None, W=None, b=None,
                 rng=None, streams=None):
        self.input = input
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.batch_size = batch_size
        self.activation_func, factor = parse_activation(activation_func)
        self.input_layer = input_layer
        self._rng = rng
        self.W = as_param(self._initial_W() if W is None else W,
                          f"W_perceptron{self.n_in}.{self.n_out}")
        self.b = as_param(_bias_init(self.activation_func, self.n_out, rng) if b is None else b,
                          f"b_perceptron{self.n_in}.{self.n_out}")
        self.params = [p for p, given in ((self.b, b), (self.W, W)) if given is None]
        if W is not None or b is not None:
            logger.info("Directly using fixed/shared W/b, no training on it")

        if input_noise is not None:
            self.input_noise = pytensor.shared(np.float32(input_noise), name="input_noise")
            input = input + self.input_noise * streams.normal(input.shape)
        lin = pt.dot(input, self.W)
        if enable_dropout:
            self.activation_noise = pytensor.shared(np.float32(0.5), name="dropout_rate")
            keep = np.float32(1) - self.activation_noise
            self.dropout_gate = pt.lt(streams.uniform((self.n_out,)), keep).astype("float32") / keep
            lin = lin * self.dropout_gate
        # the width is static (W may be a shared variable of unknown shape): losses build
        # constant class ranges from it, which JAX requires
        self.lin_output = pt.specify_shape(lin + self.b, (None, self.n_out))
        self.output = apply_activation(activation_func, self.lin_output, channel_axis=1)
        self.output_shape = (batch_size, self.n_out // factor)
        self.class_probabilities = softmax(self.lin_output, axis=1)
        self.class_prediction = pt.argmax(self.class_probabilities, axis=1)
        logger.info("PerceptronLayer( #Inputs = %i #Outputs = %i)", self.n_in, self.n_out)

    def _initial_W(self):
        return initWeights((self.n_in, self.n_out), "glorot", "uni", rng=self._rng)

    def randomizeWeights(self, scale="glorot", mode="uni"):
        """Re-initialise W (glorot uniform) and b; given (fixed or shared) ones are left alone."""
        if any(p is self.W for p in self.params):
            self.W.set_value(initWeights((self.n_in, self.n_out), scale, mode, rng=self._rng))
        if any(p is self.b for p in self.params):
            self.b.set_value(_bias_init(self.activation_func, self.n_out, self._rng))

    def NLL(self, y, class_weights=None, example_weights=None, label_prop_thresh=None):
        """Mean NLL over the labelled examples and the per-example, per-class terms ``(bs, K)``.

        ``example_weights`` is accepted for compatibility and ignored, as in ELEKTRONN 1.0.
        """
        return losses.nll(self.class_probabilities, y, class_weights,
                          label_prop_thresh=label_prop_thresh, instance="classes")

    def NLL_weak(self, y, class_weights=None, example_weights=None, label_prop_thresh=None):
        """NLL against a target mixing the labels with the prediction."""
        return losses.nll_weak(self.class_probabilities, y, class_weights, instance="classes")

    def nll_mutiple_binary(self, y, class_weights=None):
        """Independent binary losses per output (``y (bs, n_out)`` of 0/1).

        As in ELEKTRONN 1.0, ``sigmoid(activation)`` is the probability of label **0**; this
        replaces ``class_probabilities`` by ``(bs, n_out, 2)`` and ``class_prediction``.
        """
        loss, inst, probs, pred = losses.nll_multiple_binary(self.lin_output, y, class_weights)
        self.class_probabilities, self.class_prediction = probs, pred
        return loss, inst

    def squared_distance(self, Target, Mask=None, return_instancewise=True):
        """Mean squared error of ``output`` (optionally masked)."""
        return losses.squared_distance(self.output, Target, Mask, return_instancewise)

    def errors(self, y):
        """Error rate of ``class_prediction`` over all examples."""
        return losses.errors(self.class_prediction, y, ignore_unlabeled=False)

    def errors_no_tn(self, y):
        """Intersection over union ``tp / (tp + fp + fn)`` (higher is better)."""
        return losses.errors_no_tn(self.class_prediction, y)


class RecurrentLayer(Layer):
    """Elman recurrent layer over ``(batch, time, features)``; ``output`` is the last state.

    ``h_t = act(x_t . W_in + h_{t-1} . W_hid + b_hid)`` from a trainable initial state
    ``hid_0``; ``params = [W_in, W_hid, b_hid, hid_0]``.
    """

    def __init__(self, input, n_in, n_hid, batch_size, activation_func="tanh", rng=None):
        if input.ndim != 3:
            raise ValueError(f"RecurrentLayer input must be (batch, time, features), got ndim "
                             f"{input.ndim}")
        self.activation_func, factor = parse_activation(activation_func)
        if factor > 1:
            raise ValueError("RecurrentLayer does not support maxout")
        self.input, self.n_in, self.n_hid = input, int(n_in), int(n_hid)
        self._rng = rng
        self.W_in = as_param(initWeights((self.n_in, self.n_hid), "glorot", "uni", rng=rng),
                             "W_in")
        self.W_hid = as_param(initWeights((self.n_hid, self.n_hid), mode="rnn", rng=rng), "W_hid")
        self.b_hid = as_param(initWeights((self.n_hid,), 1e-6, "fix-uni", rng=rng), "b_hid")
        self.hid_0 = as_param(np.zeros(self.n_hid, np.float32), "hid_0")
        self.params = [self.W_in, self.W_hid, self.b_hid, self.hid_0]

        x_in = pt.dot(input.dimshuffle(1, 0, 2), self.W_in)  # (time, batch, n_hid)
        h0 = pt.alloc(self.hid_0, input.shape[0], self.n_hid)

        def step(x_t, h_prev):
            return apply_activation(self.activation_func, x_t + pt.dot(h_prev, self.W_hid)
                                    + self.b_hid)

        hid = pytensor.scan(step, sequences=[x_in], outputs_info=[h0], return_updates=False)
        self.hid = hid.dimshuffle(1, 0, 2)
        self.output = self.hid[:, -1]
        self.output_shape = (batch_size, self.n_hid)

    def randomizeWeights(self, scale_w=1.0):
        """Re-initialise the weights (with the correct ``W_hid`` shape)."""
        self.W_in.set_value(initWeights((self.n_in, self.n_hid), "glorot", "uni", rng=self._rng))
        self.W_hid.set_value(initWeights((self.n_hid, self.n_hid), mode="rnn", rng=self._rng)
                             * np.float32(scale_w))
        self.b_hid.set_value(initWeights((self.n_hid,), 1e-6, "fix-uni", rng=self._rng))
        self.hid_0.set_value(np.zeros(self.n_hid, np.float32))
