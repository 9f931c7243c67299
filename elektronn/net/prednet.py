"""The net ``predictDense`` runs: the trained net itself, or a faster twin of it.

A net trained on small patches predicts slowly: each tile repeats the field of view of its
neighbours, every tile costs a fixed overhead, and a net without max-fragment pooling (MFP)
needs one forward pass per pooling phase.  A *twin* is the same architecture with MFP in every
pooling layer and a larger input, built by replaying the net's recipe (the calls that built
it) and running on the net's own parameter arrays (shared, not copied, and re-linked at
every call, so training in between is seen).  Its outputs are the same pixels as the net's,
computed from the same inputs with the same weights: one pass yields every pooling phase, and
a larger tile wastes less work on the overlap.

The twin's tile is the one, among tiles that split each image axis evenly, that predicts the
image with the fewest multiply-adds while the estimated memory of a forward pass stays within
:data:`~elektronn.defaults.PREDICT_TWIN_BYTES`: memory stays bounded by that budget, whatever
the image size; set it to 0 to predict with the trained net itself.  A twin is built (in a
fraction of a second) when a call's work is large (:data:`~elektronn.defaults.PREDICT_TWIN_MAC`
multiply-adds or more), or when the same image geometry comes back, and is kept on the net
(the last few); a kept twin that needs at most a quarter more work serves other images too
(the blocks at a volume's edge).  Nets that cannot be replayed
(built from symbolic inputs, with shared weights, output layers or affinity layers, or with
dropout switched on) are used as they are.

Everything here is in the net's axis order: ``(x, y)`` for 2-D nets, ``(z, x, y)`` for 3-D.
"""

import contextlib
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict

from pytensor.graph.basic import Variable

from elektronn import backend, defaults

__all__ = ["Architecture", "twin_for"]

logger = logging.getLogger("elektronn")
_BUILD_LOCK = threading.Lock()


class Architecture:
    """The conv layers of a net as sizes: kernels, pools and filters per layer (net order).

    Parameters
    ----------
    kernels, pools : sequence of tuple of int
        Per layer, per axis.
    filters : sequence of int
        Output channels per layer.
    channels : int
        Input channels.

    Examples
    --------
    Two 2-D layers: 3x3 filters with pool 2, then 3x3 without pooling.

    >>> arch = Architecture([(3, 3), (3, 3)], [(2, 2), (1, 1)], [4, 2], channels=1)
    >>> arch.input_size((5, 5))        # MFP everywhere: 5 outputs per fragment
    (17, 17)
    >>> arch.strides
    (2, 2)
    >>> mac, peak, largest = arch.forward((17, 17), [True, False])
    >>> mac == 4 * 9 * 15 * 15 + 2 * 4 * 9 * 4 * 5 * 5
    True
    >>> largest == 4 * 15 * 15
    True
    """

    def __init__(self, kernels, pools, filters, channels):
        self.kernels = [tuple(int(k) for k in ks) for ks in kernels]
        self.pools = [tuple(int(p) for p in ps) for ps in pools]
        self.filters = [int(f) for f in filters]
        self.channels = int(channels)
        self.strides = tuple(math.prod(p[a] for p in self.pools)
                             for a in range(len(self.kernels[0])))
        self._passes = {}  # outputs per fragment -> forward() of the all-MFP net

    @classmethod
    def of(cls, cnn):
        """The architecture of ``cnn``'s conv layers."""
        kernels = [lay.filter_shape[2:] if cnn.n_dim == 2 else
                   (lay.filter_shape[1], *lay.filter_shape[3:]) for lay in cnn.layers]
        channels = cnn.input_shape[1] if cnn.n_dim == 2 else cnn.input_shape[2]
        return cls(kernels, [lay.pool for lay in cnn.layers],
                   [lay.filter_shape[0] for lay in cnn.layers], channels)

    def input_size(self, n):
        """Input size of the all-MFP net with ``n`` outputs per fragment along every axis."""
        size = list(n)
        for ks, ps in zip(reversed(self.kernels), reversed(self.pools), strict=True):
            size = [s * p + p - 1 + k - 1 for s, k, p in zip(size, ks, ps, strict=True)]
        return tuple(size)

    def forward(self, size, mfp):
        """``(multiply-adds, peak floats, largest array floats)`` of one forward pass on an
        input of ``size``.

        The peak is twice a layer's input and two convolution outputs (the result and the
        activation or pooling applied to it), the largest over the layers: measured peaks
        (``tracemalloc``) are 1.8-2.2 times the latter, with the copies of layout changes.  The
        largest array is a layer's convolution output, all fragments.
        """
        size, frags, ch, mac, peak, largest = list(size), 1, self.channels, 0, 0, 0
        for ks, ps, nof, m in zip(self.kernels, self.pools, self.filters, mfp, strict=True):
            conv = [s - k + 1 for s, k in zip(size, ks)]
            out = frags * nof * math.prod(conv)
            mac += out * ch * math.prod(ks)
            peak = max(peak, 2 * (frags * ch * math.prod(size) + 2 * out))
            largest = max(largest, out)
            if m:
                size, frags = [(c - p + 1) // p for c, p in zip(conv, ps)], frags * math.prod(ps)
            else:
                size = [c // p for c, p in zip(conv, ps)]
            ch = nof
        return mac, peak, largest

    def _pass(self, n):
        """:meth:`forward` of the all-MFP net with ``n`` outputs per fragment (kept)."""
        if n not in self._passes:
            self._passes[n] = self.forward(self.input_size(n), [True] * len(self.kernels))
        return self._passes[n]

    def fits(self, n, max_bytes):
        """Whether the all-MFP net with ``n`` outputs per fragment needs at most ``max_bytes``
        for a forward pass, with no array larger than
        :data:`~elektronn.backend.HEAP_ARRAY_BYTES` (larger ones cost page faults at every
        pass: measured 25 % slower)."""
        _, peak, largest = self._pass(n)
        return 4 * peak <= max_bytes and 4 * largest <= backend.HEAP_ARRAY_BYTES

    def work(self, n, n_pred):
        """Multiply-adds of predicting ``n_pred`` outputs per axis with the all-MFP net of
        ``n`` outputs per fragment (whole tiles)."""
        tiles = math.prod(-(-p // (k * s)) for p, k, s in zip(n_pred, n, self.strides,
                                                            strict=True))
        return tiles * self._pass(n)[0]

    def choose(self, start, n_pred, max_bytes):
        """Outputs per fragment of the twin that predicts ``n_pred`` outputs with least work.

        The candidates split each axis into ``t`` tiles of equal size (``t`` from 1 up to twice
        the tiles of the trained net's ``start`` outputs, on a roughly geometric grid); the one
        with the fewest multiply-adds for the whole image (:meth:`work`) wins among those that
        fit ``max_bytes`` (:meth:`fits`).

        Parameters
        ----------
        start : tuple of int
            Outputs per fragment of the trained net.
        n_pred : tuple of int
            Outputs to predict per axis.
        max_bytes : int

        Returns
        -------
        tuple of int or None
            None when no candidate fits.
        """
        axes = []
        for p, k, s in zip(n_pred, start, self.strides, strict=True):
            most = 2 * -(-p // (k * s))  # twice the tiles of the trained net's size
            counts = sorted({min(most, max(1, round(1.25**i))) for i in range(64)})
            axes.append(sorted({-(-p // (t * s)) for t in counts}))
        fitting = [n for n in itertools.product(*axes) if self.fits(n, max_bytes)]
        return min(fitting, key=lambda n: self.work(n, n_pred), default=None)


def _replayable(cnn):
    """The recipe of ``cnn`` if a twin can be built from it, else None."""
    from elektronn.net.convlayer2d import ConvLayer2d
    from elektronn.net.convlayer3d import ConvLayer3d

    recipe = cnn.__dict__.get("_recipe")
    if not recipe or recipe[0][0] != "__init__" or any(cnn.getDropoutRates()) or \
            cnn._output_layers or cnn._autoencoder_chains:
        return None
    if not all(type(lay) in (ConvLayer2d, ConvLayer3d) for lay in cnn.layers):
        return None
    convs = [kw for name, kw in recipe if name == "addConvLayer"]
    names = {name for name, _ in recipe[1:]}
    if len(convs) != len(cnn.layers) or not names <= {"addConvLayer", "compileOutputFunctions"}:
        return None
    for kw in convs:
        if kw.get("layer_input") is not None or kw.get("layer_input_shape") is not None or \
                kw.get("add_in_output_layers") or kw.get("affinity") or \
                any(isinstance(kw.get(k), Variable) for k in ("W", "b")):
            return None
    return recipe


@contextlib.contextmanager
def _quiet():
    """Drop the INFO records of this thread while a twin is built (its layers, its compile)."""
    me = threading.get_ident()

    def drop(record):
        return record.thread != me or record.levelno > logging.INFO

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _build(cnn, recipe, input_size):
    """Replay ``recipe`` for an all-MFP net with ``input_size``; compile its forward pass."""
    from elektronn.net.convnet import MixedConvNN

    layers = iter(cnn.layers)
    twin = None
    for name, kwargs in recipe:
        if name == "__init__":
            twin = MixedConvNN(input_size, input_depth=kwargs.get("input_depth"), batch_size=1,
                               seed=cnn._seed, mode=cnn.mode)
        elif name == "addConvLayer":
            mfp = math.prod(next(layers).pool) > 1
            twin.addConvLayer(**{**kwargs, "use_fragment_pooling": mfp, "W": None, "b": None})
        else:
            target = kwargs.get("target", "nll")
    twin.compileOutputFunctions(target=target, only_forward=True)
    return twin


def _link(cnn, twin):
    """Make the twin's parameters the net's own arrays (no copy)."""
    for lay, tw in zip(cnn.layers, twin.layers, strict=True):
        for p, q in zip(lay.params, tw.params, strict=True):
            q.set_value(p.get_value(borrow=True), borrow=True)


def twin_for(cnn, tiles, passes, n_pred):
    """The net to predict an image with: a twin of ``cnn``, or None for ``cnn`` itself.

    Parameters
    ----------
    cnn : MixedConvNN
        A conv net ready for ``predictDense``.
    tiles : int
        Tiles ``cnn`` itself would need for the image.
    passes : int
        Forward passes per tile of ``cnn`` (1 with MFP in every pooling layer).
    n_pred : tuple of int
        Outputs to predict per axis (net order).

    Returns
    -------
    MixedConvNN or None
    """
    recipe = _replayable(cnn)
    if recipe is None:
        return None
    arch = Architecture.of(cnn)
    mfp = [bool(lay.use_fragment_pooling) for lay in cnn.layers]
    n_frag = tuple(int(o) // math.prod(p[a] for p, m in zip(arch.pools, mfp, strict=True) if m)
                   for a, o in enumerate(cnn.output_shape[2:]))
    n_pred = tuple(int(p) for p in n_pred)
    n = arch.choose(n_frag, n_pred, defaults.PREDICT_TWIN_BYTES)
    if n is None:
        return None
    direct = tiles * passes * arch.forward(tuple(int(s) for s in cnn.patch_size), mfp)[0]
    if arch.work(n, n_pred) > 0.8 * direct:
        return None
    twins = cnn.__dict__.setdefault("_prediction_twins", OrderedDict())
    seen = cnn.__dict__.setdefault("_prediction_seen", set())
    with _BUILD_LOCK:
        # a kept twin that is nearly as good (e.g. for the smaller blocks at a volume's edge)
        fits = [k for k in twins if arch.fits(k, defaults.PREDICT_TWIN_BYTES)]
        kept = min(fits, key=lambda k: arch.work(k, n_pred), default=None)
        if n not in twins and kept is not None and \
                arch.work(kept, n_pred) <= 1.25 * arch.work(n, n_pred):
            n = kept
        twin = twins.get(n)
        if twin is None:
            if direct < defaults.PREDICT_TWIN_MAC and (n, n_pred) not in seen:
                if len(seen) >= 64:
                    seen.clear()
                seen.add((n, n_pred))
                return None
            t0 = time.perf_counter()
            with _quiet():
                twin = _build(cnn, recipe, arch.input_size(n))
            logger.info("predictDense: built a twin of the net with input %s and MFP in every "
                        "pooling layer (%.2f s): %.2g multiply-adds instead of %.2g",
                        arch.input_size(n), time.perf_counter() - t0, arch.work(n, n_pred),
                        direct)
        twins[n] = twin
        twins.move_to_end(n)
        while len(twins) > defaults.PREDICT_TWIN_KEEP:
            twins.popitem(last=False)
    _link(cnn, twin)
    return twin
