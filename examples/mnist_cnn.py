"""Train a small CNN on MNIST with the MixedConvNN API alone (no training pipeline).

The Python 3 version of ELEKTRONN 1.0's ``MNIST_CNN_standalone.py``: two conv layers (10 and 8
filters of 5x5, max-pooling by 2, abs activation; 28 -> 24 -> 12 -> 8 -> 4), perceptron
layers with 100 and 80 abs units and an output layer of 10 (its softmax gives the class
probabilities), trained with SGD (learning rate 0.01, momentum 0.9) on batches of 100.
The validation error is printed every ``--eval-every`` steps, the test error at the end.

Data: ``mnist.pkl.gz`` or the four MNIST IDX files, given with ``--data`` or the environment
variable ``ELEKTRONN_MNIST`` (a file or a directory), or in ``~/.ELEKTRONN/``.

Run:  python examples/mnist_cnn.py --data ~/data/mnist.pkl.gz [--iterations 5000]
"""

import argparse

from elektronn.net.convnet import MixedConvNN
from elektronn.training.traindata import MNISTData


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0]
        + " The default 5000 steps take a while on 2 CPU cores; "
        "--iterations 500 for a first look.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5000, help="training steps")
    parser.add_argument("--data", default=None,
                        help="mnist.pkl.gz or a folder with it or the IDX files (None: "
                             "$ELEKTRONN_MNIST, else ~/.ELEKTRONN, downloaded on first use)")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per step")
    parser.add_argument("--eval-every", type=int, default=100,
                        help="steps between two validations")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the net and the batches (None: random)")
    return parser.parse_args(argv)


def main(argv=None):
    """Train and test the net; return the test error (a fraction)."""
    args = parse_args(argv)
    try:
        data = MNISTData(path=args.data, convert2image=True, shift_augment=False,
                         seed=args.seed)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None

    cnn = MixedConvNN((28, 28), input_depth=1, seed=args.seed)
    cnn.addConvLayer(10, 5, pool_shape=2, activation_func="abs")  # (nof_filters, filter_size)
    cnn.addConvLayer(8, 5, pool_shape=2, activation_func="abs")
    cnn.addPerceptronLayer(100, activation_func="abs")
    cnn.addPerceptronLayer(80, activation_func="abs")
    cnn.addPerceptronLayer(10, activation_func="abs")  # 10 outputs: one per digit
    cnn.compileOutputFunctions()  # target 'nll': softmax cross-entropy
    cnn.setOptimizerParams(SGD={"LR": 1e-2, "momentum": 0.9}, weight_decay=0)

    print("training...")
    for i in range(args.iterations):
        d, lab = data.getbatch(args.batch_size)
        loss, _, step_time = cnn.trainingStep(d, lab, mode="SGD")
        if i % args.eval_every == 0:
            valid_loss, valid_error, _ = cnn.get_error(data.valid_d, data.valid_l)
            print(f"update: {i}; training loss: {loss:.4f}; validation loss: {valid_loss:.4f}; "
                  f"validation error: {valid_error * 100:.2f} % ({step_time:.3f} s/step)")

    test_loss, test_error, _ = cnn.get_error(data.test_d, data.test_l)
    print(f"Test loss: {test_loss:.4f}  Test error: {test_error * 100:.2f} %")
    return float(test_error)


if __name__ == "__main__":
    main()
