"""Build a trained image CNN from its training configuration, for prediction.

Examples
--------
A net trained with ``elektronn-train my_config.py`` predicts a raw volume ``(ch, x, y, z)``::

    cnn = create_predncnn("my_config.py", n_ch=1, n_lab=2, override_MFP_to_active=True)
    probabilities = cnn.predictDense(raw)
"""

import logging
import os

__all__ = ["create_predncnn"]

logger = logging.getLogger("elektronn")


def create_predncnn(config_file, n_ch, n_lab, gpu=None, override_MFP_to_active=False,
                    imposed_input_size=None, param_file=None):
    """Create an image CNN with the architecture of a training config and its parameters.

    Parameters
    ----------
    config_file : str or os.PathLike
        The training's config file (or the copy ``<save_path>/Backup/config.py``).
    n_ch : int
        Number of input channels.
    n_lab : int
        Number of classes.
    gpu : None, bool, int or str, optional
        Accepted for ELEKTRONN 1.0's API and ignored (PyTensor has no device switch; T16).
    override_MFP_to_active : bool
        Use max-fragment-pooling in every pooling layer (faster dense prediction), batch 1.
    imposed_input_size : sequence of int, optional
        Input size instead of the config's ``desired_input``, in **(z, x, y)** order for 3-D.
    param_file : str or os.PathLike, optional
        Default ``<save_path>/<save_name>-LAST.param`` of the configuration.

    Returns
    -------
    MixedConvNN
        The compiled net with the parameters loaded (strictly: shapes must match); use
        ``cnn.predictDense(raw)``.

    Notes
    -----
    Image CNNs only. Unlike ELEKTRONN 1.0 the working directory is not changed.
    """
    from elektronn.net.netcreation import createNet
    from elektronn.training.config import Config

    config = Config(config_file, gpu, None, use_existing_dir=True,
                    override_MFP_to_active=override_MFP_to_active,
                    imposed_input_size=imposed_input_size)
    if config.mode == "vect-scalar":
        raise ValueError("create_predncnn builds image CNNs only (mode 'vect-scalar' given)")
    config.param_file = None  # the trained parameters are loaded below, strictly
    cnn = createNet(config, config.dimensions.input, n_ch, n_lab, config.dimensions)
    if param_file is None:
        param_file = os.path.join(config.save_path, f"{config.save_name}-LAST.param")
    cnn.loadParameters(os.fspath(param_file), strict=True)
    logger.info("create_predncnn: loaded %s", param_file)
    return cnn
