"""The reference nets of the benchmarks, in elektronn and in PyTorch, and their FLOP counts.

neuro
    ELEKTRONN 1.0's 3-D neuro example: filters (z, x, y) (1,4,4), (1,3,3), (3,3,3), (3,3,3),
    (1,2,2), (1,1,1) with 10, 25, 40, 50, 60, 2 filters, pools (1,2,2), (1,2,2), 1, 1, 1, 1,
    relu (the last layer linear, softmax + NLL); one input channel.
mnist
    ELEKTRONN 1.0's MNIST example: conv 10 and 8 filters of 5x5, pool 2, abs, then perceptrons
    of 100 and 10 abs units (softmax + NLL).

FLOPs are counted analytically: ``2 * multiply-adds`` of the convolutions and perceptrons of
a forward pass (pooling, activations and the loss are not counted); a training step counts as
three forward passes.
"""

import numpy as np

NEURO_FILTERS = [(1, 4, 4), (1, 3, 3), (3, 3, 3), (3, 3, 3), (1, 2, 2), (1, 1, 1)]
NEURO_POOLS = [(1, 2, 2), (1, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1)]
NEURO_NOF = [10, 25, 40, 50, 60, 2]
MNIST_CONV = [(10, 5, 2), (8, 5, 2)]  # (filters, filter size, pool)
MNIST_PERCEPTRONS = [100, 10]


# --- FLOPs -----------------------------------------------------------------------------------
def neuro_forward_flop(patch):
    """FLOPs of one forward pass of the neuro net on a ``(z, x, y)`` patch (batch 1)."""
    size, ch, macs = np.array(patch), 1, 0
    for k, p, nof in zip(NEURO_FILTERS, NEURO_POOLS, NEURO_NOF, strict=True):
        size = size - np.array(k) + 1
        macs += nof * ch * int(np.prod(k)) * int(np.prod(size))
        size, ch = size // np.array(p), nof
    return 2 * macs


def neuro_dense_flop_per_voxel():
    """FLOPs per output voxel of dense (MFP or dilated) prediction with the neuro net."""
    chans = [1, *NEURO_NOF[:-1]]
    layers = zip(NEURO_NOF, chans, NEURO_FILTERS, strict=True)
    return 2 * sum(n * c * int(np.prod(k)) for n, c, k in layers)


def mnist_forward_flop(batch):
    """FLOPs of one forward pass of the MNIST net on ``batch`` 28x28 images."""
    size, ch, macs = 28, 1, 0
    for nof, k, p in MNIST_CONV:
        size -= k - 1
        macs += nof * ch * k * k * size * size
        size, ch = size // p, nof
    n_in = ch * size * size
    for n_out in MNIST_PERCEPTRONS:
        macs += n_in * n_out
        n_in = n_out
    return 2 * batch * macs


# --- elektronn -------------------------------------------------------------------------------
def neuro_elektronn(patch, mfp, seed=0):
    """The neuro net for the desired input ``patch`` (z, x, y), compiled for NLL.

    With ``mfp`` the two pooling layers use max-fragment pooling and only the forward
    functions are compiled (prediction); the input size comes from ``CNNCalculator``.
    """
    from elektronn.net.convnet import MixedConvNN
    from elektronn.net.netutils import CNNCalculator

    mfp_flags = [p != (1, 1, 1) for p in NEURO_POOLS] if mfp else False
    calc = CNNCalculator(
        [list(f) for f in NEURO_FILTERS],
        [list(p) for p in NEURO_POOLS],
        desired_input=list(patch),
        MFP=mfp_flags,
        n_dim=3,
    )
    cnn = MixedConvNN(calc.input, input_depth=1, batch_size=1, dimension_calc=calc, seed=seed)
    last = len(NEURO_NOF) - 1
    for i, (nof, filt, pool) in enumerate(zip(NEURO_NOF, NEURO_FILTERS, NEURO_POOLS, strict=True)):
        cnn.addConvLayer(
            nof,
            filt,
            pool_shape=pool,
            activation_func="linear" if i == last else "relu",
            use_fragment_pooling=mfp and pool != (1, 1, 1),
            is_last_layer=i == last,
        )
    cnn.compileOutputFunctions("nll", only_forward=mfp)
    cnn.setOptimizerParams(SGD={"LR": 1e-3, "momentum": 0.9}, weight_decay=0)
    return cnn


def mnist_elektronn(batch, seed=0):
    """The MNIST net with a fixed batch size, compiled for NLL and SGD with momentum 0.9."""
    from elektronn.net.convnet import MixedConvNN

    cnn = MixedConvNN((28, 28), input_depth=1, batch_size=batch, seed=seed)
    for nof, k, p in MNIST_CONV:
        cnn.addConvLayer(nof, k, pool_shape=p, activation_func="abs")
    for n_out in MNIST_PERCEPTRONS:
        cnn.addPerceptronLayer(n_out, activation_func="abs")
    cnn.compileOutputFunctions("nll")
    cnn.setOptimizerParams(SGD={"LR": 1e-3, "momentum": 0.9}, weight_decay=0)
    return cnn


# --- PyTorch ---------------------------------------------------------------------------------
def neuro_torch(torch, dense=False):
    """The neuro net as a ``torch.nn.Sequential`` on ``(N, 1, z, x, y)`` (logits out).

    ``dense``: the dense equivalent of MFP prediction: pooling with stride 1 (its window
    dilated by the stride accumulated before it) and every later convolution dilated by the
    accumulated stride; its output is the class map at every position.
    """
    nn = torch.nn
    layers, ch, stride = [], 1, np.ones(3, int)
    for i, (nof, k, p) in enumerate(zip(NEURO_NOF, NEURO_FILTERS, NEURO_POOLS, strict=True)):
        dil = tuple(int(s) for s in stride) if dense else 1
        layers.append(nn.Conv3d(ch, nof, k, dilation=dil))
        if p != (1, 1, 1):
            layers.append(
                nn.MaxPool3d(p, stride=1, dilation=dil) if dense else nn.MaxPool3d(p)
            )
            stride = stride * np.array(p)
        if i < len(NEURO_NOF) - 1:
            layers.append(nn.ReLU())
        ch = nof
    return nn.Sequential(*layers)


def mnist_torch(torch):
    """The MNIST net as a ``torch.nn.Sequential`` on ``(N, 1, 28, 28)`` (logits out)."""
    nn = torch.nn

    class Abs(nn.Module):
        def forward(self, x):
            return x.abs()

    layers, ch, size = [], 1, 28
    for nof, k, p in MNIST_CONV:
        layers += [nn.Conv2d(ch, nof, k), nn.MaxPool2d(p), Abs()]
        ch, size = nof, (size - k + 1) // p
    layers.append(nn.Flatten())
    n_in = ch * size * size
    for n_out in MNIST_PERCEPTRONS:
        layers += [nn.Linear(n_in, n_out), Abs()]
        n_in = n_out
    return nn.Sequential(*layers)


def torch_train_step(torch, net, x, y):
    """A zero-argument callable: one SGD (momentum 0.9) step of ``net`` on ``(x, y)``, NLL."""
    from _common import TORCH_DEVICE, torch_sync

    net = net.to(TORCH_DEVICE)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    xt, yt = (torch.from_numpy(a).to(TORCH_DEVICE) for a in (x, y.astype(np.int64)))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
        torch_sync(torch)
        return loss

    return step
