"""Loss and error functions shared by every layer class (symbolic, float32).

ELEKTRONN 1.0 copied its negative log-likelihood into each layer class, with small
differences between the copies.  Here one function per loss serves all layers; the
differences that the original's numerics depend on are explicit options, so that each layer
method is a thin caller:

=================  ======================================  ==================================
layer              NLL call                                returned "instance"
=================  ======================================  ==================================
``ConvLayer3d``    ``nll(P, y, cw, ew, ml, mn, t)``        the scalar loss itself
``ConvLayer2d``    ``nll(P, y, cw, ew, ml, mn, t,          per-pixel loss ``(bs, x, y)``
                   dn_count="pairs", instance="pixels")``
``Perceptron``     ``nll(P, y, cw, label_prop_thresh=t,    per-example, per-class ``(bs, K)``
                   instance="classes")``
=================  ======================================  ==================================

Layouts: class probabilities ``P`` are ``(bs, K, *spatial)`` (``(bs, K)`` for perceptrons,
``(bs, K, x, y)`` for 2-D and ``(bs, K, z, x, y)`` for 3-D conv layers); integer labels ``y`` are
``(bs, *spatial)``.  A label that is negative or ``>= K`` selects no class and is ignored.

Fixes against the original (docs/differences.md, N1-N3, N35): the 2-D rule takes
example weights and lazy-label masks; label propagation without ``mask_class_labeled`` means
"every class is labelled" and acts only on pixels whose label selects no class (with the mask
it behaves exactly as the original); the perceptron's label propagation follows that same
documented rule; :func:`nll_affinity` has the correct sign.
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor.special import xlogy
from pytensor.tensor.type import integer_dtypes

from elektronn.ops.malis import MalisWeights

__all__ = [
    "EPS",
    "nll",
    "nll_weak",
    "nll_affinity",
    "malis_loss",
    "nll_multiple_binary",
    "squared_distance",
    "errors",
    "errors_no_tn",
]

EPS = np.float32(1e-6)
"""Added to probabilities inside logarithms, as in the original."""

_ONE = np.float32(1)
_HALF = np.float32(0.5)
_INSTANCES = ("scalar", "pixels", "classes")
_LAYOUTS = {2: "(bs, K)", 4: "(bs, K, x, y)", 5: "(bs, K, z, x, y)"}


# --- argument checks -------------------------------------------------------------------------


def _choice(value, name, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _layout(ndim):
    return _LAYOUTS.get(ndim, f"(bs, K, <{ndim - 2} spatial axes>)")


def _pixel_layout(ndim):
    """Layout of labels or example weights for probabilities with ``ndim`` dimensions."""
    return "(bs,)" if ndim == 2 else _layout(ndim).replace(", K", "")


def _float_tensor(x, name):
    x = pt.as_tensor_variable(x)
    if x.dtype not in ("float32", "float64"):
        raise TypeError(f"{name} must be a float32 tensor, got dtype {x.dtype}")
    return x


def _probabilities(P, ndim=None):
    P = _float_tensor(P, "class_probabilities")
    if P.ndim < 2 or (ndim is not None and P.ndim != ndim):
        want = "at least 2" if ndim is None else str(ndim)
        raise ValueError(
            f"class_probabilities must have {want} dimensions (bs, K, *spatial), got {P.ndim}"
        )
    return P


def _labels(y, ndim, layout, name="y"):
    """``y`` as an integer tensor with ``ndim`` dimensions, or a clear error."""
    y = pt.as_tensor_variable(y)
    if y.dtype not in integer_dtypes:
        raise TypeError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if y.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got {y.ndim}")
    return y


def _class_labels(P, y):
    """Labels matching ``P``: shape ``(bs, *spatial)``."""
    layout = f"{_pixel_layout(P.ndim)} to match class_probabilities {_layout(P.ndim)}"
    return _labels(y, P.ndim - 1, layout)


def _float(value, P, name, ndim, layout):
    """An optional float argument cast to the dtype of ``P``, with its ndim checked."""
    var = pt.as_tensor_variable(value)
    if var.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got {var.ndim}")
    return var.astype(P.dtype)


# --- broadcasting helpers --------------------------------------------------------------------


def _per_class(v, ndim):
    """``(K,)`` -> ``(1, K, 1, ...)``."""
    return v.dimshuffle("x", 0, *["x"] * (ndim - 2))


def _per_example_class(m, ndim):
    """``(bs, K)`` -> ``(bs, K, 1, ...)``."""
    return m.dimshuffle(0, 1, *["x"] * (ndim - 2))


def _per_pixel(w):
    """``(bs, *spatial)`` -> ``(bs, 1, *spatial)``."""
    return pt.shape_padaxis(w, 1)


def _one_hot(P, y):
    """``S[b, k, v] = [y[b, v] == k]`` in the dtype of ``P``; other labels select nothing.

    The class count is taken from the static shape where known (JAX needs a constant range).
    """
    n_classes = P.type.shape[1] if P.type.shape[1] is not None else P.shape[1]
    classes = _per_class(pt.arange(n_classes), P.ndim)
    return pt.eq(_per_pixel(y), classes).astype(P.dtype)


def _nonzero(n):
    return pt.switch(pt.eq(n, 0), _ONE, n)


def _instance(loss, terms, instance):
    if instance == "scalar":
        return loss
    if instance == "pixels":
        return terms.sum(axis=1)
    return terms


def _weights(P, class_weights, example_weights):
    """Class weights times example weights, broadcastable against ``P`` (or 1)."""
    weight = _ONE
    if class_weights is not None:
        weight = _per_class(_float(class_weights, P, "class_weights", 1, "(K,)"), P.ndim)
    if example_weights is not None:
        ew = _float(example_weights, P, "example_weights", P.ndim - 1, _pixel_layout(P.ndim))
        weight = weight * _per_pixel(ew)
    return weight


# --- classification losses -------------------------------------------------------------------


def nll(
    P,
    y,
    class_weights=None,
    example_weights=None,
    mask_class_labeled=None,
    mask_class_not_present=None,
    label_prop_thresh=None,
    dn_count="voxels",
    instance="scalar",
):
    """Masked, weighted negative log-likelihood with optional label propagation.

    Parameters
    ----------
    P : TensorVariable, float32, ``(bs, K, *spatial)``
        Class probabilities (softmax over axis 1).
    y : TensorVariable, integer, ``(bs, *spatial)``
        Labels; negative labels (or labels ``>= K``) are ignored.
    class_weights : TensorVariable or array, ``(K,)``, optional
        Per-class factor on every term.  Not used for the normalisation.
    example_weights : TensorVariable or array, ``(bs, *spatial)``, optional
        Per-pixel factor on every term.  Not used for the normalisation.
    mask_class_labeled : TensorVariable, ``(bs, K)``, optional
        Lazy labels: 1 where class k is labelled in example b.  Label hits of unlabelled
        classes are dropped.
    mask_class_not_present : TensorVariable, ``(bs, K)``, optional
        Lazy labels: 1 where class k is known to be absent from example b; adds the down-vote
        term ``-log(1 - P*mask*weights + EPS)`` on every pixel (over all classes: a class with
        mask 0 contributes ``-log(1 + EPS)`` per pixel).
    label_prop_thresh : scalar, optional
        Label propagation: where ``P > label_prop_thresh`` on a pixel that carries no label
        information, that class is treated as a label hit (added to the up-vote term and its
        count).  With ``mask_class_labeled``, as in the original, "no label information" means
        "class marked unlabelled", on every pixel whatever its label.  Without the mask every
        class counts as labelled, and propagation acts only on pixels whose label selects no
        class.  Meant for thresholds in (0.5, 1); smaller values are not disabled.
    dn_count : {"voxels", "pairs"}
        How the down-vote term enters the normaliser: the number of (example, class, pixel)
        triples with ``mask_class_not_present`` set (3-D layers), or of (example, class) pairs
        (2-D layers, docs/differences.md, N4).
    instance : {"scalar", "pixels", "classes"}
        Second return value: the loss itself (3-D), the per-pixel loss summed over classes
        ``(bs, *spatial)`` (2-D), or the unsummed terms ``(bs, K, *spatial)`` (perceptron).

    Returns
    -------
    loss : scalar
        ``sum(up + dn) / N`` with ``N`` = number of label hits (after masks and propagation)
        plus the down-vote count, replaced by 1 when 0.
    instance : TensorVariable
        See ``instance``.
    """
    P = _probabilities(P)
    y = _class_labels(P, y)
    _choice(dn_count, "dn_count", ("voxels", "pairs"))
    _choice(instance, "instance", _INSTANCES)
    weight = _weights(P, class_weights, example_weights)
    hits = _one_hot(P, y)
    if mask_class_labeled is not None:
        labeled = _per_example_class(
            _float(mask_class_labeled, P, "mask_class_labeled", 2, "(bs, K)"), P.ndim
        )
        hits = hits * labeled
    if label_prop_thresh is not None:
        if mask_class_labeled is not None:
            unlabeled = _ONE - labeled
        else:
            unlabeled = _ONE - hits.sum(axis=1, keepdims=True)
        hits = hits + pt.gt(P, label_prop_thresh).astype(P.dtype) * unlabeled
    terms = -pt.log(P + EPS) * hits * weight
    count = hits.sum()
    if mask_class_not_present is not None:
        absent = _float(mask_class_not_present, P, "mask_class_not_present", 2, "(bs, K)")
        terms = terms - pt.log(_ONE - P * _per_example_class(absent, P.ndim) * weight + EPS)
        n_dn = absent.sum()
        if dn_count == "voxels":
            n_dn = n_dn * pt.prod(P.shape[2:]).astype(P.dtype)
        count = count + n_dn
    loss = terms.sum() / _nonzero(count)
    return loss, _instance(loss, terms, instance)


def nll_weak(P, y, class_weights=None, instance="scalar"):
    """NLL against a soft target that mixes the labels with the prediction itself.

    The target is ``0.5 * S + 0.5 * P`` (``S`` the one-hot labels; ``P`` is not
    gradient-stopped).  The loss covers every pixel, also those with ignored labels, but is
    normalised by the number of labelled pixels (replaced by 1 when 0), as in the original.
    Masks and label propagation, which the layers accept, have no effect on this loss.

    Parameters
    ----------
    P, y, class_weights
        As in :func:`nll`.
    instance : {"scalar", "pixels", "classes"}
        As in :func:`nll`; conv layers use "scalar", perceptrons "classes".

    Returns
    -------
    loss, instance
    """
    P = _probabilities(P)
    y = _class_labels(P, y)
    _choice(instance, "instance", _INSTANCES)
    labels = _one_hot(P, y)
    target = _HALF * labels + _HALF * P
    terms = -target * pt.log(P + EPS) * _weights(P, class_weights, None)
    loss = terms.sum() / _nonzero(labels.sum())
    return loss, _instance(loss, terms, instance)


def nll_affinity(P, y, class_weights=None):
    """Binary cross-entropy between probabilities and 0/1 targets of the same shape.

    ``-mean(cw[1] * y * log(P + 1e-8) + cw[0] * (1 - y) * log(1 - P + 1e-8))`` (the original
    added the second term with the wrong sign, docs/differences.md, N35).

    Parameters
    ----------
    P : TensorVariable, float32
        Probability of "connected" per element, e.g. ``(bs, 3, z, x, y)``.
    y : TensorVariable, integer, shape of ``P``
        Targets (1: connected, 0: disconnected).
    class_weights : TensorVariable or array, ``(2,)``, optional
        Weights of the targets 0 and 1; default ``[1, 1]``.

    Returns
    -------
    loss, loss
        The "instance" is the scalar itself (docs/differences.md, N5).
    """
    P = _probabilities(P)
    y = _labels(y, P.ndim, "(the shape of class_probabilities)").astype(P.dtype)
    eps = np.float32(1e-8)
    cw = _ONE, _ONE
    if class_weights is not None:
        cw = _float(class_weights, P, "class_weights", 1, "(2,)")
    terms = xlogy(y, P + eps) * cw[1] + xlogy(_ONE - y, _ONE - P + eps) * cw[0]
    loss = -terms.mean()
    return loss, loss


def malis_loss(P, aff_gt, seg_gt, unrestrict_neg=True):
    """MALIS loss of an affinity layer (``MalisLayer.NLL_Malis``), on batch element 0 only.

    Parameters
    ----------
    P : TensorVariable, float32, ``(bs, 3*K, z, x, y)``
        Class probabilities of the three edge directions concatenated, K classes per edge;
        class 1 is "connected", class 0 "disconnected".
    aff_gt : TensorVariable, integer, ``(bs, 3, z, x, y)``
        Ground-truth affinities.
    seg_gt : TensorVariable, integer, ``(bs, z, x, y)``
        Ground-truth segment ids, 0 = background.
    unrestrict_neg : bool
        See :func:`elektronn.ops.malis.malis_weights`.

    Returns
    -------
    tuple
        ``(nll, n_pos, n_neg, n_tot, false_splits, false_merges, rand_index, pos_count,
        neg_count)``: ``nll = sum(-pos*log(aff) - neg*log(dis)) / (n_tot + 1e-6)``; the counts
        ``pos_count``/``neg_count`` ``(3, z, x, y)`` are constants for the gradient;
        ``false_splits = sum([aff < 0.5] * pos)``, ``false_merges = sum([aff > 0.5] * neg)``,
        ``rand_index = (false_splits + false_merges) / (n_tot + 1e-6)``.
    """
    P = _probabilities(P, ndim=5)
    aff_gt = _labels(aff_gt, 5, "(bs, 3, z, x, y)", name="aff_gt")
    seg_gt = _labels(seg_gt, 4, "(bs, z, x, y)", name="seg_gt")
    n_classes = P.shape[1] // 3
    aff_pred = P[0, 1::n_classes]
    dis_pred = P[0, 0::n_classes]
    pos, neg = MalisWeights(unrestrict_neg=unrestrict_neg)(aff_pred, aff_gt[0], seg_gt[0])
    n_pos = pos.sum()
    n_neg = neg.sum()
    n_tot = n_pos + n_neg
    norm = n_tot + EPS
    loss = -(xlogy(pos, aff_pred) + xlogy(neg, dis_pred)).sum() / norm
    false_splits = (pt.lt(aff_pred, _HALF) * pos).sum()
    false_merges = (pt.gt(aff_pred, _HALF) * neg).sum()
    rand_index = (false_splits + false_merges) / norm
    return loss, n_pos, n_neg, n_tot, false_splits, false_merges, rand_index, pos, neg


def nll_multiple_binary(activation, y, class_weights=None):
    """Independent binary NLL per label (multi-label perceptron output).

    As in the original (docs/differences.md, N36), ``sigmoid(activation)`` is the probability of
    label **0**: a high activation predicts 0.

    Parameters
    ----------
    activation : TensorVariable, float32, ``(bs, n_lab)``
        Pre-activation of the perceptron.
    y : TensorVariable, integer, ``(bs, n_lab)``
        0/1 targets.
    class_weights : TensorVariable or array, ``(2,)``, optional
        Weights of the targets 0 and 1; default ``[1, 1]``.

    Returns
    -------
    loss : scalar
        Mean of the instance loss.
    instance : ``(bs, n_lab)``
        ``-log(p0 + EPS) * (1 - y) * cw[0] - log(p1 + EPS) * y * cw[1]``.
    class_probabilities : ``(bs, n_lab, 2)``
        ``(p0, p1)`` per label; the layer replaces its ``class_probabilities`` by this.
    class_prediction : ``(bs, n_lab)``
        Argmax over the last axis; replaces the layer's ``class_prediction``.
    """
    activation = _float_tensor(activation, "activation")
    if activation.ndim != 2:
        raise ValueError(f"activation must have 2 dimensions (bs, n_lab), got {activation.ndim}")
    y = _labels(y, 2, "(bs, n_lab) to match activation").astype(activation.dtype)
    cw = _ONE, _ONE
    if class_weights is not None:
        cw = _float(class_weights, activation, "class_weights", 1, "(2,)")
    prob_0 = pt.sigmoid(activation)
    prob_1 = _ONE - prob_0
    inst = -pt.log(prob_0 + EPS) * (_ONE - y) * cw[0] - pt.log(prob_1 + EPS) * y * cw[1]
    probabilities = pt.stack([prob_0, prob_1], axis=2)
    return inst.mean(), inst, probabilities, probabilities.argmax(axis=2)


# --- regression ------------------------------------------------------------------------------


def squared_distance(output, target, mask=None, return_instancewise=True, channel_axis=None):
    """Mean squared error, optionally masked.

    Parameters
    ----------
    output : TensorVariable, float32
        Layer output: ``(bs, n_out)`` for perceptrons, ``(bs, ch, x, y)`` for 2-D and
        ``(bs, z, ch, x, y)`` for 3-D conv layers.
    target : TensorVariable
        Same shape as ``output``, or without the channel axis when ``channel_axis`` is given;
        it is then broadcast over the channels.  Cast to the dtype of ``output``.
    mask : TensorVariable, optional
        Multiplies the difference before squaring (1: train, 0: ignore); shaped like
        ``target``.
    return_instancewise : bool
        Also return the elementwise squared differences.
    channel_axis : int, optional
        Axis of ``output`` along which ``target`` is broadcast (1 for 2-D, 2 for 3-D conv).

    Returns
    -------
    loss or (loss, instance)
    """
    output = _float_tensor(output, "output")
    if channel_axis is None:
        ndim, layout = output.ndim, "(the shape of output)"
    else:
        ndim, layout = output.ndim - 1, f"(the shape of output without axis {channel_axis})"

    def _aligned(value, name):
        var = _float(value, output, name, ndim, layout)
        return var if channel_axis is None else pt.shape_padaxis(var, channel_axis)

    diff = output - _aligned(target, "target")
    if mask is not None:
        diff = diff * _aligned(mask, "mask")
    instance = pt.sqr(diff)
    loss = instance.mean()
    return (loss, instance) if return_instancewise else loss


# --- error rates -----------------------------------------------------------------------------


def _prediction_and_labels(prediction, y):
    prediction = pt.as_tensor_variable(prediction)
    if prediction.dtype not in integer_dtypes:
        raise TypeError(f"prediction must hold integer classes, got dtype {prediction.dtype}")
    y = _labels(y, prediction.ndim, "(the shape of class_prediction)")
    return prediction, y


def errors(prediction, y, ignore_unlabeled=True):
    """Classification error rate (despite the original docstrings, not the accuracy).

    Parameters
    ----------
    prediction : TensorVariable, integer
        Predicted classes, e.g. ``class_prediction`` of a layer.
    y : TensorVariable, integer, same ndim
        Labels.
    ignore_unlabeled : bool
        Conv layers (True): the mean over pixels with ``y >= 0`` only, NaN when there are none.
        Perceptrons (False): the mean over all examples, negative labels counting as errors
        (docs/differences.md, N37).

    Returns
    -------
    scalar float32
    """
    prediction, y = _prediction_and_labels(prediction, y)
    wrong = pt.neq(prediction, y).astype("float32")
    if not ignore_unlabeled:
        return wrong.mean()
    labeled = pt.ge(y, 0).astype("float32")
    return (wrong * labeled).sum() / labeled.sum()


def errors_no_tn(prediction, y):
    """Intersection over union ``tp / (tp + fp + fn)`` of the positive class (1).

    Used for multi-label outputs.  Despite the name this is a score: higher is better.

    Parameters
    ----------
    prediction, y : TensorVariable, integer, same shape
        Predicted and true 0/1 labels.

    Returns
    -------
    scalar float32
    """
    prediction, y = _prediction_and_labels(prediction, y)
    predicted = pt.eq(prediction, 1)
    true = pt.eq(y, 1)
    tp = (predicted & true).astype("float32").sum()
    fp = (predicted & ~true).astype("float32").sum()
    fn = (~predicted & true).astype("float32").sum()
    return tp / (tp + fp + fn)
