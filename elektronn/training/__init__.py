"""Training data and the training pipeline (the ELEKTRONN 1.0 ``elektronn.training`` package).

:mod:`elektronn.training.traindata` holds the non-image data sets: the :class:`Data` base with
its batch iterator, :class:`BalancedData` and :class:`MNISTData`.
"""
