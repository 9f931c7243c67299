"""3-D convolutional layers: input ``(bs, z, ch, x, y)``, filters ``(nof, fz, ch, fx, fy)``.

This "strange" axis order is the one of ELEKTRONN 1.0 (inherited from Theano's ``conv3d2d``)
and of its parameter files; inside, the computation runs in ``(bs, ch, z, x, y)``.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt

from elektronn.net import losses
from elektronn.net._convcore import ConvLayerBase, bias_init
from elektronn.net._graph import as_param
from elektronn.net.activations import parse_activation
from elektronn.net.layer import Layer
from elektronn.net.netutils import initWeights

__all__ = ["getOutputShape", "getProbShape", "ConvLayer3d", "AffinityLayer3d", "MalisLayer"]


def getOutputShape(insh, fsh, pool, mfp, r=1):
    """Shape of the (pooled) convolution of ``(bs, z, ch, x, y)`` with ``(nof, fz, ch, fx, fy)``.

    With MFP the batch is multiplied by ``prod(pool)``; a maxout factor ``r > 1`` divides
    the channels.
    """
    bs = insh[0]
    if bs is not None and mfp:
        bs = bs * int(np.prod(pool))
    nof = fsh[0] // r if r > 1 else fsh[0]
    return (bs, (insh[1] - fsh[1] + 1) // pool[0], nof, (insh[3] - fsh[3] + 1) // pool[1],
            (insh[4] - fsh[4] + 1) // pool[2])


def getProbShape(output_shape, mfp_strides):
    """Class probability shape ``(bs, ch, z, x, y)``; ``(1, ch, z*sz, x*sx, y*sy)`` with MFP."""
    bs, z, ch, x, y = output_shape
    if mfp_strides is None:
        return (bs, ch, z, x, y)
    sz, sx, sy = (int(s) for s in mfp_strides)
    return (1, ch, z * sz, x * sx, y * sy)


def _swap12(t):
    return t.dimshuffle(0, 2, 1, 3, 4)


class ConvLayer3d(ConvLayerBase):
    """Conv-pool layer of a 3-D CNN (parameters as :class:`~elektronn.net.convlayer2d.ConvLayer2d`,
    with ``input_shape (bs, z, ch, x, y)``, ``filter_shape (nof, fz, ch, fx, fy)`` and
    ``pool (pz, px, py)``; keyword-only after ``pool``).  ``affinity`` is accepted for
    compatibility and must be False.
    """

    n_dim = 3
    channel_axis = 2
    _to_core = _from_core = _filter_to_core = staticmethod(_swap12)

    def __init__(self, input, input_shape, filter_shape, pool, *, affinity=False, **kwargs):
        if affinity:
            raise ValueError("ConvLayer3d(affinity=True) is not supported: use AffinityLayer3d")
        super().__init__(input, input_shape, filter_shape, pool, **kwargs)

    @staticmethod
    def _kernel_shape(filter_shape):
        return (filter_shape[1], filter_shape[3], filter_shape[4])

    def _output_shape(self, factor):
        return getOutputShape(self.input_shape, self.filter_shape, self.pool,
                              self.use_fragment_pooling, factor)

    def _core_shape(self, shape):
        return (shape[0], shape[2], shape[1], shape[3], shape[4])

    def _prob_shape(self):
        return getProbShape(self.output_shape, self.mfp_strides if self.use_fragment_pooling
                            else None)

    _nll_options = {}

    @staticmethod
    def _flat_probs(probs):
        """``(bs, C, z, x, y)`` -> ``(bs*z*x*y, C)``, y fastest (the original's order)."""
        return probs.dimshuffle(0, 2, 3, 4, 1).reshape((-1, probs.shape[1]))

    def NLL_affinity(self, y, class_weights=None, mask_class_labeled=None,
                     mask_class_not_present=None, label_prop_thresh=None):
        """Binary cross-entropy of the class-1 probability against 0/1 targets ``y``."""
        self._check_reshaped()
        return losses.nll_affinity(self.class_probabilities, y, class_weights)


class AffinityLayer3d(Layer):
    """Three :class:`ConvLayer3d` sub-layers, one per edge direction (z, x, y), sharing one W.

    ``filter_shape[0]`` is the number of classes per edge N; the shared W has ``3N`` filters
    and ``class_probabilities`` concatenates the three ``(bs, N, z, x, y)`` maps on axis 1.
    The arguments are those of :class:`ConvLayer3d` (keyword-only after ``pool``); with
    dropout the three sub-layers share one drop rate ``activation_noise``.  Experimental, as
    in ELEKTRONN 1.0.
    """

    def __init__(self, input, input_shape, filter_shape, pool, *, activation_func="tanh",
                 enable_dropout=False, W=None, b=None, rng=None, **kwargs):
        n = int(filter_shape[0])
        act, _ = parse_activation(activation_func)
        self._rng, self._edge_filter_shape = rng, tuple(int(s) for s in filter_shape)
        self._filter_volume = int(filter_shape[1] * filter_shape[3] * filter_shape[4])
        self._bias_activation = act
        self.W = as_param(self._initial_W("glorot", "normal", tuple(pool)) if W is None else W,
                          "W_conv")
        self.b = as_param(self._initial_b() if b is None else b, "b_conv")
        self.params = [self.W, self.b]
        if enable_dropout:
            self.activation_noise = pytensor.shared(np.float32(0.5), name="dropout_rate")
        self.sub_layers = [
            ConvLayer3d(input, input_shape, filter_shape, pool, activation_func=activation_func,
                        enable_dropout=enable_dropout, W=self.W[e * n:(e + 1) * n],
                        b=self.b[e * n:(e + 1) * n], rng=rng,
                        dropout_rate=self.activation_noise, **kwargs)
            for e in range(3)]
        first = self.sub_layers[0]
        self.input, self.input_shape = input, first.input_shape
        self.filter_shape = (3 * n,) + tuple(filter_shape[1:])
        self.pool, self.activation_func = first.pool, first.activation_func
        self.use_fragment_pooling = first.use_fragment_pooling
        self.reshape_output = first.reshape_output
        self.conv_out = pt.concatenate([s.conv_out for s in self.sub_layers], axis=2)
        self.mfp_offsets, self.mfp_strides = first.mfp_offsets, first.mfp_strides
        sh = first.output_shape
        self.output_shape = (sh[0], sh[1], 3 * sh[2], sh[3], sh[4])
        if self.reshape_output:
            ps = first.prob_shape
            self.prob_shape = (ps[0], 3 * ps[1]) + tuple(ps[2:])
        self.class_probabilities = pt.concatenate(
            [s.class_probabilities for s in self.sub_layers], axis=1)
        self.class_prediction = pt.stack([s.class_prediction for s in self.sub_layers], axis=1)
        self.output = pt.concatenate([s.output for s in self.sub_layers], axis=2)
        self.lin_output = pt.concatenate([s.lin_output for s in self.sub_layers], axis=2)

    def _initial_W(self, scale, mode, pool):
        """New filters of the three edges by the conv layers' rule."""
        return np.concatenate([initWeights(self._edge_filter_shape, scale, mode, pool=pool,
                                           rng=self._rng) for _ in range(3)]).astype(np.float32)

    def _initial_b(self):
        n = self._edge_filter_shape[0]
        return np.tile(bias_init(self._bias_activation, n, self._filter_volume, self._rng), 3)

    def randomizeWeights(self, scale="glorot", mode="uni"):
        """Re-initialise W and b as a conv layer does (glorot uniform by default)."""
        self.W.set_value(self._initial_W(scale, mode, self.pool))
        self.b.set_value(self._initial_b())

    def NLL_affinity(self, y, class_weights=None, example_weights=None, mask_class_labeled=None,
                     mask_class_not_present=None, label_prop_thresh=None):
        """Mean over the three edge directions of the sub-layers' NLL on ``y[:, e]``."""
        nlls = [s.NLL(y[:, e], class_weights, example_weights, mask_class_labeled,
                      mask_class_not_present, label_prop_thresh)[0]
                for e, s in enumerate(self.sub_layers)]
        loss = sum(nlls) / np.float32(3)
        return loss, loss

    def errors(self, y):
        """Mean of the three sub-layers' error rates on ``y[:, e]``."""
        return sum(s.errors(y[:, e]) for e, s in enumerate(self.sub_layers)) / np.float32(3)


class MalisLayer(AffinityLayer3d):
    """:class:`AffinityLayer3d` with the MALIS loss (:meth:`NLL_Malis`)."""

    def NLL_Malis(self, aff_gt, seg_gt, unrestrict_neg=True):
        """MALIS-weighted loss; returns the 9-tuple of :func:`elektronn.net.losses.malis_loss`."""
        return losses.malis_loss(self.class_probabilities, aff_gt, seg_gt, unrestrict_neg)
