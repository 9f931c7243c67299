"""Train the MNIST CNN with dropout in the perceptron layers (MixedConvNN API alone).

The Python 3 version of ELEKTRONN 1.0's ``MNIST_CNN_standalone_Dropout.py``: two tanh conv
layers without dropout (10 and 8 filters of 5x5, pooling by 2), perceptron layers with 200
and 150 tanh units and dropout (drop rate 0.5), and a 10-unit tanh output layer without
dropout, trained with SGD (learning rate 0.01, momentum 0.9) on batches of 100.

Dropout has no train/test switch: the drop rates are shared variables, set per layer with
``setDropoutRates`` (``rates[i]`` goes to ``layers[i]``; layers without dropout ignore it).
They are set to 0 for validation and testing and back to 0.5 for training. (The original
example passed ``getDropoutRates()``, which lists only the layers with dropout, to
``setDropoutRates``, so its validation still ran with dropout.)

Data: ``mnist.pkl.gz`` or the four MNIST IDX files, given with ``--data`` or the environment
variable ``ELEKTRONN_MNIST`` (a file or a directory), or in ``~/.ELEKTRONN/``.

Run:  python examples/mnist_cnn_dropout.py --data ~/data/mnist.pkl.gz [--iterations 10000]
"""

import argparse

from elektronn.net.convnet import MixedConvNN
from elektronn.training.traindata import MNISTData

TRAIN_RATES = [0.0, 0.0, 0.5, 0.5, 0.0]  # drop rate per layer (only layers 2 and 3 have dropout)
NO_DROPOUT = [0.0] * len(TRAIN_RATES)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0]
        + " The default 10000 steps take a while on 2 CPU cores; "
        "--iterations 500 for a first look.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10000, help="training steps")
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

    cnn = MixedConvNN((28, 28), input_depth=1, enable_dropout=True, seed=args.seed)
    cnn.addConvLayer(10, 5, pool_shape=2, activation_func="tanh", force_no_dropout=True)
    cnn.addConvLayer(8, 5, pool_shape=2, activation_func="tanh", force_no_dropout=True)
    cnn.addPerceptronLayer(200, activation_func="tanh")
    cnn.addPerceptronLayer(150, activation_func="tanh")
    cnn.addPerceptronLayer(10, activation_func="tanh", force_no_dropout=True)
    cnn.compileOutputFunctions()
    cnn.setOptimizerParams(SGD={"LR": 1e-2, "momentum": 0.9}, weight_decay=0)
    cnn.setDropoutRates(TRAIN_RATES)

    print("training...")
    for i in range(args.iterations):
        d, lab = data.getbatch(args.batch_size)
        loss, _, step_time = cnn.trainingStep(d, lab, mode="SGD")
        if i % args.eval_every == 0:
            cnn.setDropoutRates(NO_DROPOUT)
            valid_loss, valid_error, _ = cnn.get_error(data.valid_d, data.valid_l)
            cnn.setDropoutRates(TRAIN_RATES)
            print(f"update: {i}; training loss: {loss:.4f}; validation loss: {valid_loss:.4f}; "
                  f"validation error: {valid_error * 100:.2f} % ({step_time:.3f} s/step)")

    cnn.setDropoutRates(NO_DROPOUT)
    test_loss, test_error, _ = cnn.get_error(data.test_d, data.test_l)
    print(f"Test loss: {test_loss:.4f}  Test error: {test_error * 100:.2f} %")
    return float(test_error)


if __name__ == "__main__":
    main()
