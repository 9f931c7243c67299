"""A denoising auto-encoder with tied weights on MNIST, then a classifier pre-trained by it.

The Python 3 version of ELEKTRONN 1.0's ``MNIST_Denoising_Autoencoder.py``:

1. An encoder of tanh perceptron layers 784 -> 300 -> 200 -> 50 and, with
   ``addTiedAutoencoderChain``, a decoder 50 -> 200 -> 300 -> 784 that uses the transposed
   encoder weights (its biases are not trained, as in the original). Gaussian noise of std
   0.3 is added to the code (the decoder's input). It is trained to reproduce its input
   (target ``'regression'``, squared error) with SGD (learning rate 0.5, momentum 0.9) on
   batches of 100.
2. With the noise switched off, the reconstruction error of the validation set is printed
   (and, with ``--plot``, originals and reconstructions are drawn).
3. The encoder's parameters are saved and loaded into a classifier 784-300-200-50-10 (tanh),
   which is then trained (learning rate 0.005) and tested.

Data: ``mnist.pkl.gz`` or the four MNIST IDX files, given with ``--data`` or the environment
variable ``ELEKTRONN_MNIST`` (a file or a directory), or in ``~/.ELEKTRONN/``.

Run:  python examples/mnist_autoencoder.py --data ~/data/mnist.pkl.gz [--iterations 40000]
"""

import argparse

import numpy as np

from elektronn.net.convnet import MixedConvNN
from elektronn.training.traindata import MNISTData

ENCODER = (300, 200, 50)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0]
        + " The default 40000 steps take a while on 2 CPU cores; "
        "--iterations 500 for a first look.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40000,
                        help="training steps of the auto-encoder")
    parser.add_argument("--classifier-iterations", type=int, default=None,
                        help="training steps of the classifier (None: a quarter of "
                             "--iterations, at least 1)")
    parser.add_argument("--data", default=None,
                        help="mnist.pkl.gz or a folder with it or the IDX files (None: "
                             "$ELEKTRONN_MNIST, else ~/.ELEKTRONN, downloaded on first use)")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per step")
    parser.add_argument("--eval-every", type=int, default=100,
                        help="steps between two progress lines")
    parser.add_argument("--save", default="AE-pretraining.param",
                        help="parameter file for the encoder")
    parser.add_argument("--plot", default=None,
                        help="save originals and reconstructions here (a PNG file)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the nets and the batches (None: random)")
    return parser.parse_args(argv)


def tile(images, columns=20):
    """Arrange images ``(n, h, w)`` in a grid with one-pixel gaps."""
    n, h, w = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1), columns * (w + 1)), np.nan, dtype=np.float32)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    return grid


def plot(path, originals, reconstructions):
    """Draw originals and their reconstructions side by side into an image file."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 6))
    for ax, images, title in zip(fig.subplots(1, 2), (originals, reconstructions),
                                 ("Data", "Reconstruction"), strict=True):
        ax.imshow(tile(images.reshape(-1, 28, 28)), interpolation="none", cmap="gray",
                  vmin=originals.min(), vmax=originals.max())
        ax.set_title(title)
        ax.axis("off")
    fig.savefig(path)


def train_autoencoder(data, args):
    cnn = MixedConvNN(28**2, input_depth=None, seed=args.seed)
    for n in ENCODER:
        cnn.addPerceptronLayer(n_outputs=n, activation_func="tanh")
    cnn.addTiedAutoencoderChain(n_layers=None, activation_func="tanh", input_noise=0.3)
    cnn.compileOutputFunctions(target="regression")
    cnn.setOptimizerParams(SGD={"LR": 5e-1, "momentum": 0.9}, weight_decay=0)

    print("training the auto-encoder...")
    for i in range(args.iterations):
        d, _ = data.getbatch(args.batch_size)
        loss, _, step_time = cnn.trainingStep(d, d, mode="SGD")
        if i % args.eval_every == 0:
            print(f"update: {i}; training error (MSE): {loss:.5f} ({step_time:.4f} s/step)")

    cnn.layers[len(ENCODER)].input_noise.set_value(0.0)  # the first decoder layer adds noise
    valid = data.valid_d.reshape(len(data.valid_d), -1)
    mse, rmse, reconstructions = cnn.get_error(valid, valid)
    print(f"Validation reconstruction error: MSE {mse:.5f}, RMSE {rmse:.5f}")
    if args.plot:
        plot(args.plot, valid[:200], reconstructions[:200])
        print(f"Saved originals and reconstructions to {args.plot}")
    cnn.saveParameters(args.save, layers=cnn.layers[:len(ENCODER)])  # the encoder only
    return cnn


def train_classifier(data, args):
    cnn = MixedConvNN(28**2, input_depth=None, seed=args.seed)
    for n in ENCODER + (10,):
        cnn.addPerceptronLayer(n_outputs=n, activation_func="tanh")
    cnn.compileOutputFunctions(target="nll")
    cnn.setOptimizerParams(SGD={"LR": 0.005, "momentum": 0.9}, weight_decay=0)
    cnn.loadParameters(args.save)  # the pre-trained encoder; the output layer stays random

    steps = args.classifier_iterations
    if steps is None:
        steps = max(args.iterations // 4, 1)
    print("training the classifier...")
    for i in range(steps):
        d, lab = data.getbatch(args.batch_size)
        loss, _, step_time = cnn.trainingStep(d, lab, mode="SGD")
        if i % args.eval_every == 0:
            error = cnn.get_error(d, lab)[1]
            print(f"update: {i}; training error: {error * 100:.2f} %; NLL: {loss:.4f} "
                  f"({step_time:.4f} s/step)")
    return cnn


def main(argv=None):
    """Train the auto-encoder and the classifier; return the classifier's test error."""
    args = parse_args(argv)
    try:
        data = MNISTData(path=args.data, convert2image=False, shift_augment=False,
                         seed=args.seed)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    train_autoencoder(data, args)
    classifier = train_classifier(data, args)
    test_loss, test_error, _ = classifier.get_error(data.test_d.reshape(len(data.test_d), -1),
                                                    data.test_l)
    print(f"Test loss: {test_loss:.4f}  Test error: {test_error * 100:.2f} %")
    return float(test_error)


if __name__ == "__main__":
    main()
