"""The conv-layer core shared by :class:`ConvLayer2d` and :class:`ConvLayer3d`.

One layer: valid convolution -> pooling (plain or max-fragment) -> dropout gate -> bias ->
activation, plus the softmax class probabilities of the pre-activation (optionally reshaped, and
reassembled from MFP fragments into a dense map).  The computation runs in the "core" layout
``(batch, channels, *spatial)`` of :mod:`elektronn.ops`; the 2-D and 3-D subclasses only say how
their public layouts map onto it (3-D: ``(bs, z, ch, x, y)`` <-> ``(bs, ch, z, x, y)``), so
consecutive layers' transposes cancel in the compiled graph.
"""

import logging

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable

from elektronn import ops
from elektronn.net import losses
from elektronn.net._graph import as_param, softmax
from elektronn.net.activations import apply_activation, parse_activation
from elektronn.net.layer import Layer
from elektronn.net.netutils import initWeights

__all__ = ["ConvLayerBase", "bias_init"]

logger = logging.getLogger("elektronn")


def bias_init(activation, n, filter_volume, rng):
    """ELEKTRONN 1.0's initial bias: relu 1/filter volume, sigmoid 0.5, else U(±1e-6)."""
    if activation == "relu":
        return np.full(n, 1.0 / filter_volume, np.float32)
    if activation == "sigmoid":
        return np.full(n, 0.5, np.float32)
    return initWeights((n,), scale=1e-6, mode="fix-uni", rng=rng)


class ConvLayerBase(Layer):
    """Shared implementation; see :class:`elektronn.net.convlayer2d.ConvLayer2d`."""

    n_dim = None  # 2 or 3, set by subclasses
    channel_axis = 1  # channel axis of the public layout
    _label = "Conv"

    # --- layout hooks (overridden by ConvLayer3d) ---------------------------------------------
    @staticmethod
    def _to_core(t):
        return t

    _from_core = _to_core
    _filter_to_core = _to_core

    @staticmethod
    def _kernel_shape(filter_shape):
        return tuple(filter_shape[2:])

    @staticmethod
    def _flat_probs(probs_core):
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------
    def __init__(self, input, input_shape, filter_shape, pool, *, activation_func="tanh",
                 enable_dropout=False, use_fragment_pooling=False, reshape_output=False,
                 mfp_offsets=None, mfp_strides=None, input_layer=None, W=None, b=None,
                 pooling_mode="max", rng=None, streams=None, dropout_rate=None):
        self.input = input
        self.input_shape = tuple(input_shape)
        self.filter_shape = tuple(int(s) for s in filter_shape)
        self.pool = tuple(int(p) for p in pool)
        self.activation_func, factor = parse_activation(activation_func)
        self._activation_arg = activation_func
        self.input_layer = input_layer
        self.pooling_mode = pooling_mode
        self.reshape_output = reshape_output
        self.use_fragment_pooling = use_fragment_pooling
        self.number_of_filters = self.filter_shape[0]
        self._rng = rng
        kshape = self._kernel_shape(self.filter_shape)
        self._filter_volume = int(np.prod(kshape))
        if len(self.pool) != self.n_dim:
            raise ValueError(f"pool must have {self.n_dim} entries, got {self.pool}")

        self.W = as_param(
            initWeights(self.filter_shape, "glorot", "normal", pool=self.pool, rng=rng)
            if W is None else W, "W_conv")
        self.b = as_param(
            bias_init(self.activation_func, self.number_of_filters, self._filter_volume, rng)
            if b is None else b, "b_conv")
        for name, var, shape in (("W", self.W, self.filter_shape), ("b", self.b,
                                                                   (self.number_of_filters,))):
            given = var.get_value().shape if hasattr(var, "get_value") else var.type.shape
            if len(given) != len(shape) or any(g not in (None, s) for g, s in zip(given, shape)):
                raise ValueError(f"{name} has shape {tuple(given)}, the layer needs {shape}")
        self.params = [p for p in (self.W, self.b) if isinstance(p, SharedVariable)]

        # the filter shape made static: every layer output then has static channel counts
        # (losses build constant class ranges from them, which JAX requires)
        w_core = self._filter_to_core(pt.specify_shape(self.W, self.filter_shape))
        conv_core = ops.conv(self._to_core(input), w_core)
        self.conv_out = self._from_core(conv_core)
        if use_fragment_pooling:
            self.mfp_offsets, self.mfp_strides = ops.fragment_offsets(
                mfp_offsets, mfp_strides, self.pool)
            pooled = (ops.max_fragment_pool(conv_core, self.pool, pooling_mode)
                      if any(p > 1 for p in self.pool) else conv_core)
        else:
            self.mfp_offsets, self.mfp_strides = mfp_offsets, mfp_strides
            pooled = (ops.pool(conv_core, self.pool, pooling_mode)
                      if any(p > 1 for p in self.pool) else conv_core)
        self.output_shape = self._output_shape(factor)

        if enable_dropout:
            self.activation_noise = (pytensor.shared(np.float32(0.5), name="dropout_rate")
                                     if dropout_rate is None else dropout_rate)
            keep = np.float32(1) - self.activation_noise
            spatial = [s for s in self._core_shape(self.output_shape)[2:]]
            gate = pt.lt(streams.uniform(spatial), keep).astype("float32") / keep
            self.dropout_gate = gate
            pooled = pooled * gate[(None, None) + (slice(None),) * self.n_dim]
        lin_core = pooled + self.b.dimshuffle(("x", 0) + ("x",) * self.n_dim)
        self.lin_output = self._from_core(lin_core)
        self.output = self._from_core(apply_activation(activation_func, lin_core, channel_axis=1))

        probs_core = softmax(lin_core, axis=1)
        if reshape_output:
            if use_fragment_pooling:
                probs_core = ops.fragments_to_dense(probs_core, self.mfp_offsets, self.mfp_strides)
            self.class_probabilities = probs_core
            self.prob_shape = self._prob_shape()
            logger.info("Class Prob Output = %s", self.prob_shape)
        else:
            self.class_probabilities = self._flat_probs(probs_core)
        self.class_prediction = pt.argmax(self.class_probabilities, axis=1)
        logger.info(
            "%dDConv: input= %s \tfilter= %s\nOutput = %s Dropout %s, Act: %s pool: %s",
            self.n_dim, self.input_shape, self.filter_shape, self.output_shape,
            "ON," if enable_dropout else "OFF,", self.activation_func, pooling_mode)

    def _output_shape(self, factor):
        raise NotImplementedError

    def _prob_shape(self):
        raise NotImplementedError

    def _core_shape(self, shape):
        return shape

    # --- weights ---------------------------------------------------------------------------------
    def randomizeWeights(self, scale="glorot", mode="uni"):
        """Re-initialise W (glorot uniform by default, as the original) and b; given symbolic
        ones (weight sharing) are left alone."""
        if any(p is self.W for p in self.params):
            self.W.set_value(initWeights(self.filter_shape, scale, mode, pool=self.pool,
                                         rng=self._rng).astype(np.float32))
        if any(p is self.b for p in self.params):
            self.b.set_value(bias_init(self.activation_func, self.number_of_filters,
                                        self._filter_volume, self._rng))

    # --- losses (all delegated to elektronn.net.losses) ------------------------------------------
    def _check_reshaped(self):
        if not self.reshape_output:
            raise ValueError(
                "this conv layer does not reshape its output, so it has no per-pixel class "
                "probabilities to compare with labels: build it as the last layer "
                "(addConvLayer(..., is_last_layer=True))")

    def NLL(self, y, class_weights=None, example_weights=None, mask_class_labeled=None,
            mask_class_not_present=None, label_prop_thresh=None):
        """Masked, weighted negative log-likelihood; see :func:`elektronn.net.losses.nll`.

        Labels ``y < 0`` are ignored.  Returns ``(loss, instance_loss)``.
        """
        self._check_reshaped()
        return losses.nll(self.class_probabilities, y, class_weights, example_weights,
                          mask_class_labeled, mask_class_not_present, label_prop_thresh,
                          **self._nll_options)

    def NLL_weak(self, y, class_weights=None, mask_class_labeled=None,
                 mask_class_not_present=None, label_prop_thresh=None):
        """NLL against a target mixing the labels with the prediction (masks are unused)."""
        self._check_reshaped()
        return losses.nll_weak(self.class_probabilities, y, class_weights)

    def squared_distance(self, y):
        """Mean squared distance of ``output`` to ``y`` broadcast over the channels."""
        return losses.squared_distance(self.output, y, channel_axis=self.channel_axis)

    def errors(self, y):
        """Error rate of ``class_prediction`` over the pixels with ``y >= 0``."""
        return losses.errors(self.class_prediction, y)
