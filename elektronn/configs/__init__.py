"""The example training configurations, shipped with the package.

``elektronn-train <name>`` finds them by name (``.py`` may be left out), e.g.
``elektronn-train MNIST_MLP_config``; :func:`elektronn.training.config.find_config_file` does
the lookup and ``examples/configs`` in a source checkout links here. The files are read by
:func:`~elektronn.training.config.read_config_file` (executed as Python), never imported.
"""
