"""Train a multi-layer perceptron on flattened MNIST digits (MixedConvNN API alone).

The Python 3, pipeline-free version of ELEKTRONN 1.0's ``MNIST_MLP_config.py``: two relu
layers of 300 units and a linear output layer of 10 (what the pipeline adds), trained with SGD
(learning rate 0.02, momentum 0.9, the learning rate multiplied by 0.99 every 1000 steps) on
batches of 50 flattened 26x26 digits (``shift_augment``: the training set holds every digit
shifted by up to one pixel, four times). ``--warp`` turns on the random elastic warping of
training batches that the original configuration used (needs
``elektronn.training.warping``).

Data: ``mnist.pkl.gz`` or the four MNIST IDX files, given with ``--data`` or the environment
variable ``ELEKTRONN_MNIST`` (a file or a directory), or in ``~/.ELEKTRONN/``.

Run:  python examples/mnist_mlp.py --data ~/data/mnist.pkl.gz [--iterations 100000] [--warp]
"""

import argparse

from elektronn.net.convnet import MixedConvNN
from elektronn.training.traindata import MNISTData


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0]
        + " The default 100000 steps are ELEKTRONN 1.0's full training: "
        "about 2 hours on 2 CPU cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100000, help="training steps")
    parser.add_argument("--data", default=None,
                        help="mnist.pkl.gz or a folder with it or the IDX files (None: "
                             "$ELEKTRONN_MNIST, else ~/.ELEKTRONN, downloaded on first use)")
    parser.add_argument("--batch-size", type=int, default=50, help="examples per step")
    parser.add_argument("--eval-every", type=int, default=100,
                        help="steps between two validations")
    parser.add_argument("--warp", action="store_true", help="warp the training batches")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the net and the batches (None: random)")
    return parser.parse_args(argv)


def main(argv=None):
    """Train and test the net; return the test error (a fraction)."""
    args = parse_args(argv)
    try:
        data = MNISTData(path=args.data, convert2image=False, warp_on=args.warp,
                         shift_augment=True, seed=args.seed)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None

    cnn = MixedConvNN(data.example_shape, seed=args.seed)  # 26*26 = 676 inputs
    cnn.addPerceptronLayer(300, activation_func="relu")
    cnn.addPerceptronLayer(300, activation_func="relu")
    cnn.addPerceptronLayer(10, activation_func="linear")
    cnn.compileOutputFunctions()
    learning_rate = 0.02
    cnn.setOptimizerParams(SGD={"LR": learning_rate, "momentum": 0.9}, weight_decay=0)
    valid_d = data.valid_d.reshape(len(data.valid_d), -1)
    test_d = data.test_d.reshape(len(data.test_d), -1)

    print("training...")
    for i in range(args.iterations):
        if i and i % 1000 == 0:
            learning_rate *= 0.99
            cnn.setSGDLR(learning_rate)
        d, lab = data.getbatch(args.batch_size)
        loss, _, step_time = cnn.trainingStep(d, lab, mode="SGD")
        if i % args.eval_every == 0:
            valid_loss, valid_error, _ = cnn.get_error(valid_d, data.valid_l)
            print(f"update: {i}; training loss: {loss:.4f}; validation loss: {valid_loss:.4f}; "
                  f"validation error: {valid_error * 100:.2f} % ({step_time:.4f} s/step)")

    test_loss, test_error, _ = cnn.get_error(test_d, data.test_l)
    print(f"Test loss: {test_loss:.4f}  Test error: {test_error * 100:.2f} %")
    return float(test_error)


if __name__ == "__main__":
    main()
