"""2-D convolutional layers: input ``(bs, ch, x, y)``, filters ``(nof, ch, fx, fy)``."""

import numpy as np

from elektronn.net._convcore import ConvLayerBase
from elektronn.net.gaborfilters import gabor_initial_weights

__all__ = ["getOutputShape", "getProbShape", "ConvLayer2d"]


def getOutputShape(insh, fsh, pool, mfp, r=1):
    """Shape of the (pooled) convolution of ``(bs, ch, x, y)`` with ``(nof, ch, fx, fy)``.

    With MFP the batch is multiplied by the number of fragments ``prod(pool)``; a maxout
    factor ``r > 1`` divides the channels.  A batch of ``None`` stays ``None``.
    """
    bs = insh[0]
    if bs is not None and mfp:
        bs = bs * int(np.prod(pool))
    nof = fsh[0] // r if r > 1 else fsh[0]
    return (bs, nof, (insh[2] - fsh[2] + 1) // pool[0], (insh[3] - fsh[3] + 1) // pool[1])


def getProbShape(output_shape, mfp_strides):
    """Shape of the class probabilities ``(bs, ch, x, y)``; dense ``(1, ch, x*sx, y*sy)`` with MFP.

    (ELEKTRONN 1.0 used the y stride for both axes; fixed.)
    """
    if mfp_strides is None:
        return tuple(output_shape)
    return (1, output_shape[1], output_shape[2] * int(mfp_strides[0]),
            output_shape[3] * int(mfp_strides[1]))


class ConvLayer2d(ConvLayerBase):
    """Conv-pool layer of a 2-D CNN.

    Parameters
    ----------
    input : TensorVariable ``(bs, ch, x, y)``
        Symbolic input of shape ``input_shape``.
    input_shape : tuple of 4 ints
        ``(batch size, input channels, x, y)``.
    filter_shape : tuple of 4 ints
        ``(number of filters, input channels, fx, fy)``.
    pool : tuple of 2 ints
        Pooling factors (1: no pooling on that axis).
    activation_func : str
        ``'tanh'``, ``'relu'``, ``'sigmoid'``, ``'abs'``, ``'linear'`` or ``'maxout <r>'``.
    enable_dropout : bool
        Dropout on this layer; the drop rate is the shared ``activation_noise`` (default 0.5),
        set with ``MixedConvNN.setDropoutRates``.  Whole positions are dropped in all channels.
    use_fragment_pooling : bool
        Max-fragment pooling (MFP) instead of plain pooling.
    reshape_output : bool
        Make ``class_probabilities`` ``(bs, classes, x, y)`` (dense after MFP); for the last layer.
    mfp_offsets, mfp_strides : array_like or None
        MFP bookkeeping of the previous layers.
    input_layer : object, optional
        The layer feeding this one (bookkeeping only).
    W, b : ndarray or TensorVariable, optional
        Initial values (arrays) or shared variables (symbolic: weight sharing).
    pooling_mode : {'max', 'maxabs'}
        ``'maxabs'`` keeps the sign of large negative values.
    rng : numpy.random.Generator, optional
        Generator for the initial weights (numpy's global state when None).
    streams : elektronn.net._graph.RandomStreams, optional
        Source of the dropout gates (required with ``enable_dropout``).
    dropout_rate : shared float32 scalar, optional
        Use this drop rate (e.g. of another layer) instead of a new one.

    All arguments after ``pool`` are keyword-only.
    """

    n_dim = 2

    def _output_shape(self, factor):
        return getOutputShape(self.input_shape, self.filter_shape, self.pool,
                              self.use_fragment_pooling, factor)

    def _prob_shape(self):
        return getProbShape(self.output_shape, self.mfp_strides if self.use_fragment_pooling
                            else None)

    @property
    def _nll_options(self):
        return {"dn_count": "pairs", "instance": "pixels"}

    @staticmethod
    def _flat_probs(probs):
        """``(bs, C, x, y)`` -> ``(x*y*bs, C)``, rows ordered ``(i*Y + j)*BS + b`` (original)."""
        return probs.dimshuffle(2, 3, 0, 1).reshape((-1, probs.shape[1]))

    def gaborInitialisation(self):
        """Set W to a bank of Gabor filters, a blob and noise (2-D square filters only)."""
        self.W.set_value(gabor_initial_weights(self.filter_shape, rng=self._rng))
