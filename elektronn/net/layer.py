"""The interface every layer of a :class:`~elektronn.net.convnet.MixedConvNN` has.

``MixedConvNN`` (and dense prediction, the trainer) use a layer only through these members, so a
new kind of layer needs only them:

``params``
    The layer's trainable shared variables, in the order of the parameter files (conv: ``W, b``;
    perceptron: ``b, W``).
``output``, ``output_shape``
    The symbolic output and its static shape (``None`` for an unknown batch size).
``activation_noise``
    The drop rate (a shared float32 scalar) of a layer built with dropout, else ``None``.
``conv_out``
    The convolution output before pooling of a conv layer, else ``None``.
``randomizeWeights()``
    Draw new initial values for the parameters.
"""

__all__ = ["Layer"]


class Layer:
    """Base class of the layers: the members of the interface, with their defaults.

    Attributes
    ----------
    params : list of shared variables
    output : TensorVariable
    output_shape : tuple
    activation_noise : shared variable or None
        None: the layer has no dropout.
    conv_out : TensorVariable or None
        None: the layer is not a conv layer.
    """

    activation_noise = None
    conv_out = None

    def randomizeWeights(self):
        """Re-initialise the trainable parameters by the layer's initialisation rules."""
        raise NotImplementedError(f"{type(self).__name__} must implement randomizeWeights")
