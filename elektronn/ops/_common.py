"""Input checks shared by the Ops: clear errors that name the argument."""

import pytensor.tensor as pt

__all__ = ["as_float32", "check_ndim", "static_dims"]


def as_float32(value, name):
    """Return ``value`` as a float32 tensor variable or raise a ``ValueError`` naming it."""
    try:
        var = pt.as_tensor_variable(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a float32 tensor, got {value!r}") from err
    if var.dtype != "float32":
        raise ValueError(
            f"{name} must have dtype float32, got {var.dtype} (cast it with .astype('float32'))"
        )
    return var


def check_ndim(var, name, ndim=None, min_ndim=None, layout=""):
    """Raise a ``ValueError`` unless ``var.ndim`` is ``ndim`` (or at least ``min_ndim``)."""
    if (ndim is not None and var.ndim != ndim) or (min_ndim is not None and var.ndim < min_ndim):
        want = f"{ndim}" if ndim is not None else f"at least {min_ndim}"
        raise ValueError(f"{name} must have {want} dimensions {layout}, got {var.ndim}")


def static_dims(var, axes):
    """Static sizes of ``axes`` of ``var`` (``None`` where unknown)."""
    return tuple(var.type.shape[a] for a in axes)
