"""Tests of elektronn.training.traindata: MNIST files in both formats, batches, RNG, balance."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from elektronn.training import traindata, warping
from elektronn.training.traindata import BalancedData, Data, MNISTData, find_mnist, load_mnist

SIZES = {"train": 12, "valid": 4, "test": 5}


def make_splits(rng, side=28):
    """Random MNIST-like sets: float32 (N, side²) in [0, 1] and int64 labels."""
    return tuple(
        (rng.random((n, side * side), dtype=np.float32), np.arange(n, dtype=np.int64) % 10)
        for n in SIZES.values())


def write_pickle(path, splits, compress=True):
    """``splits`` pickled with protocol 2 as one object, as deeplearning.net's mnist.pkl.gz."""
    data = pickle.dumps(splits, protocol=2)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --- a Python-2 protocol-2 pickle, as cPickle wrote it (str opcodes, numpy.core names) ----------


def _string(raw):
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw
    return b"T" + struct.pack("<i", len(raw)) + raw


def _py2_array(a):
    """Opcodes that rebuild ``a`` the way numpy 1.x under Python 2 pickled arrays."""
    dtype = (b"cnumpy\ndtype\n" + _string(a.dtype.str[1:].encode()) + b"K\x00K\x01\x87R"
             + b"(K\x03" + _string(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    shape = b"(" + b"".join(b"J" + struct.pack("<i", s) for s in a.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(K\x00tU\x01b\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + _string(a.tobytes()) + b"tb")


def write_py2_pickle(path, splits):
    body = b"".join(b"(" + _py2_array(x) + _py2_array(y) + b"t" for x, y in splits)
    path.write_bytes(gzip.compress(b"\x80\x02(" + body + b"t."))
    return path


# --- IDX files ----------------------------------------------------------------------------------


def write_idx(path, array, compress):
    """An IDX file: two zero bytes, type 0x08 (ubyte), rank, big-endian sizes, data."""
    array = np.asarray(array, dtype=np.uint8)
    data = (b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.tobytes())
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_dir(directory, rng, compress=True, n_train=20, n_test=6):
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    train_y, test_y = np.arange(n_train) % 10, np.arange(n_test) % 10
    names = traindata.MNIST_IDX_NAMES
    for name, array in zip(names, (train_x, train_y, test_x, test_y), strict=True):
        write_idx(directory / name, array, compress)
    return train_x, train_y, test_x, test_y


@pytest.fixture(autouse=True)
def no_user_mnist(monkeypatch, tmp_path):
    """No $ELEKTRONN_MNIST and an empty home, so only the test's files are found."""
    monkeypatch.delenv(traindata.MNIST_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "home"))


@pytest.fixture
def pkl(tmp_path, rng):
    splits = make_splits(rng)
    return write_pickle(tmp_path / "mnist.pkl.gz", splits), splits


def assert_splits_equal(loaded, expected):
    for (x, y), (ex, ey) in zip(loaded, expected, strict=True):
        assert x.dtype == np.float32 and y.dtype == np.int16
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


# --- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_load_pickle(tmp_path, rng, compress):
    splits = make_splits(rng)
    path = write_pickle(tmp_path / ("mnist.pkl.gz" if compress else "mnist.pkl"), splits,
                        compress)
    assert_splits_equal(load_mnist(path), splits)
    assert_splits_equal(load_mnist(tmp_path), splits)  # the directory finds the file


def test_load_python2_pickle(tmp_path, rng):
    splits = make_splits(rng)
    assert_splits_equal(load_mnist(write_py2_pickle(tmp_path / "m.pkl.gz", splits)), splits)


def test_load_stream_of_three_pickles(tmp_path, rng):
    """ELEKTRONN 1.0's pickleSave wrote one pickle per item of a sequence."""
    splits = make_splits(rng)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"".join(pickle.dumps(s, protocol=2) for s in splits)))
    assert_splits_equal(load_mnist(path), splits)


@pytest.mark.parametrize("compress", [True, False])
def test_load_idx(tmp_path, rng, compress):
    train_x, train_y, test_x, test_y = make_idx_dir(tmp_path, rng, compress)
    (tx, ty), (vx, vy), (sx, sy) = load_mnist(tmp_path, valid_size=5)
    assert tx.shape == (15, 784) and vx.shape == (5, 784) and sx.shape == (6, 784)
    assert tx.dtype == vx.dtype == sx.dtype == np.float32
    assert ty.dtype == vy.dtype == sy.dtype == np.int16
    np.testing.assert_allclose(tx, train_x[:15].reshape(15, -1) / 255)
    np.testing.assert_allclose(vx, train_x[15:].reshape(5, -1) / 255)  # the last images
    np.testing.assert_allclose(sx, test_x.reshape(6, -1) / 255)
    np.testing.assert_array_equal(np.concatenate([ty, vy]), train_y)
    np.testing.assert_array_equal(sy, test_y)
    name = traindata.MNIST_IDX_NAMES[0] + (".gz" if compress else "")
    assert find_mnist(tmp_path / name)[0] == "idx"  # an IDX file stands for its directory


def test_idx_default_split_is_last_10000(tmp_path, rng):
    make_idx_dir(tmp_path, rng, n_train=10003)
    (tx, _), (vx, _), _ = load_mnist(tmp_path)
    assert len(tx) == 3 and len(vx) == 10000


def test_pickle_is_preferred_over_idx(tmp_path, rng, pkl):
    make_idx_dir(tmp_path, rng)
    kind, files = find_mnist(tmp_path)
    assert kind == "pickle" and files == [pkl[0]]


def test_bad_idx_files(tmp_path, rng):
    make_idx_dir(tmp_path, rng, compress=False)
    with pytest.raises(ValueError, match="valid_size"):
        load_mnist(tmp_path, valid_size=20)
    (tmp_path / traindata.MNIST_IDX_NAMES[1]).write_bytes(b"\0\0\x08\x01\0\0\0\x09" + bytes(3))
    with pytest.raises(ValueError, match="holds 3 data bytes"):
        load_mnist(tmp_path, valid_size=5)
    (tmp_path / traindata.MNIST_IDX_NAMES[1]).write_bytes(b"\x1f\x00\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_mnist(tmp_path, valid_size=5)


def test_environment_variable(tmp_path, rng, monkeypatch, pkl):
    path, splits = pkl
    monkeypatch.setenv(traindata.MNIST_ENV_VAR, str(path))
    assert_splits_equal(load_mnist(), splits)
    monkeypatch.setenv(traindata.MNIST_ENV_VAR, str(tmp_path))
    assert_splits_equal(load_mnist(), splits)
    assert MNISTData(shift_augment=False, center=False).train_d.shape == (12, 1, 28, 28)


def test_default_directory(tmp_path, rng):
    home = tmp_path / "home" / ".ELEKTRONN"
    home.mkdir(parents=True)
    splits = make_splits(rng)
    write_pickle(home / "mnist.pkl.gz", splits)
    assert traindata.default_mnist_dir() == home
    assert_splits_equal(load_mnist(), splits)


def test_missing_file_message(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        MNISTData()
    message = str(info.value)
    for text in ("mnist.pkl.gz", *traindata.MNIST_IDX_NAMES, "ELEKTRONN_MNIST",
                 "MNISTData(path=...)", str(tmp_path / "home" / ".ELEKTRONN")):
        assert text in message
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(traindata.MNIST_ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        load_mnist()


def test_incomplete_idx_names_the_missing_files(tmp_path, rng):
    make_idx_dir(tmp_path, rng)
    (tmp_path / (traindata.MNIST_IDX_NAMES[3] + ".gz")).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte are missing"):
        load_mnist(tmp_path)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.remove, (self.path,)


def test_malicious_pickle_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil(str(victim)), protocol=2)))
    with pytest.raises(ValueError, match="refused"):
        load_mnist(path)
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("content", [b"not a pickle at all", pickle.dumps((1, 2, 3), 2),
                                     pickle.dumps(((np.zeros(3), np.zeros(3)),) * 3, 2)])
def test_bad_pickles(tmp_path, content):
    path = tmp_path / "mnist.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="mnist.pkl"):
        load_mnist(path)


# --- MNISTData ----------------------------------------------------------------------------------


def test_mnistdata_images(pkl):
    path, splits = pkl
    data = MNISTData(path, shift_augment=False, center=False, seed=0)
    assert data.train_d.shape == (12, 1, 28, 28) and data.train_l.dtype == np.int16
    np.testing.assert_array_equal(data.valid_d.reshape(4, -1), splits[1][0])
    assert data.example_shape == (1, 28, 28) and data.n_ch == 1 and data.n_lab == 10
    d, lab = data.getbatch(5)
    assert d.shape == (5, 1, 28, 28) and d.dtype == np.float32 and lab.shape == (5,)
    d, lab = data.getbatch(3, "test")
    np.testing.assert_array_equal(d.reshape(3, -1), splits[2][0][:3])
    np.testing.assert_array_equal(lab, splits[2][1][:3])
    assert "10-class Data Set: #training examples: 12 and #validing: 4" == repr(data)


def test_mnistdata_flat_and_centered(pkl):
    data = MNISTData(pkl[0], convert2image=False, shift_augment=False, center=True)
    assert data.example_shape == 784
    for name in ("train_d", "valid_d", "test_d"):
        assert abs(getattr(data, name).mean()) < 1e-5
    assert data.getbatch(5)[0].shape == (5, 784)
    d, lab = data.getbatch(100, "valid")  # fewer examples than batch_size (T4)
    assert d.shape == (4, 784) and lab.shape == (4,)


def test_mnistdata_shift_augment(pkl):
    path, splits = pkl
    data = MNISTData(path, convert2image=False, shift_augment=True, center=False)
    assert data.train_d.shape == (48, 1, 26, 26)
    assert data.valid_d.shape == (4, 1, 26, 26) and data.test_d.shape == (5, 1, 26, 26)
    assert data.example_shape == 676 and data.getbatch(7)[0].shape == (7, 676)
    assert data.getbatch(7, "test")[0].shape == (5, 676)
    images = splits[0][0].reshape(12, 28, 28)
    crops = {(i, j): images[:, i:i + 26, j:j + 26] for i, j in MNISTData.SHIFTS}
    blocks = [data.train_d[12 * k:12 * (k + 1), 0] for k in range(4)]
    order = [next(s for s, c in crops.items() if np.array_equal(b, c)) for b in blocks]
    assert sorted(order) == sorted(MNISTData.SHIFTS)  # every crop once
    np.testing.assert_array_equal(data.valid_d[0, 0],
                                  splits[1][0][0].reshape(28, 28)[1:-1, 1:-1])
    np.testing.assert_array_equal(data.train_l, np.tile(splits[0][1], 4))


def test_shift_crops_are_in_random_order(pkl):
    def order(seed):
        data = MNISTData(pkl[0], shift_augment=True, center=False, seed=seed)
        return tuple(data.train_d[::12, 0, 0, 0].tolist()), data.train_l

    orders = {order(seed)[0] for seed in range(12)}
    assert len(orders) > 4  # 24 possible orders; a fixed order would give one
    assert order(3)[0] == order(3)[0]  # a seed reproduces its order
    np.testing.assert_array_equal(order(5)[1], np.tile(pkl[1][0][1], 4))


def test_warping_only_training_batches(pkl, monkeypatch):
    """The real warping, with the transform drawn from the data's seeded generator."""
    calls = []
    real = warping.warp3dFast

    def spy(img, patch_size, **params):
        calls.append((img.copy(), patch_size, params))
        return real(img, patch_size, **params)

    monkeypatch.setattr(warping, "warp3dFast", spy)
    data = MNISTData(pkl[0], convert2image=False, warp_on=True, shift_augment=False,
                     center=False, seed=7)
    plain = MNISTData(pkl[0], convert2image=False, warp_on=False, shift_augment=False,
                      center=False, seed=7)
    warped, labels = data.getbatch(6)
    raw, raw_labels = plain.getbatch(6)
    assert len(calls) == 1
    (img, patch_size, params), = calls
    # the batch the seed picks, as images, is what gets warped (the batch axis as z)
    np.testing.assert_array_equal(img.reshape(6, -1), raw)
    np.testing.assert_array_equal(labels, raw_labels)
    assert patch_size == (6, 28, 28) and params["rot"] == 0
    assert abs(params["shear"]) <= 7 and abs(params["twist"]) <= 5
    assert params["scale"][2] == 1 and all(1 <= s <= 1.15 for s in params["scale"][:2])
    assert len(params["stretch"]) == 4 and np.all(np.abs(params["stretch"]) <= 0.25)
    np.testing.assert_array_equal(warped, real(img, patch_size, **params).reshape(6, -1))
    assert not np.array_equal(warped, raw)  # a real transform, not the identity
    for source in ("valid", "test"):  # the original warped validation batches (T4)
        np.testing.assert_array_equal(data.getbatch(4, source)[0],
                                      plain.getbatch(4, source)[0])
    assert len(calls) == 1


def test_real_warping(pkl):
    """Nearest-neighbour warping of training crops: source values or 0, reproducible."""
    batches = []
    for warp_on in (True, True, False):
        data = MNISTData(pkl[0], warp_on=warp_on, shift_augment=True, seed=0)
        batches.append(data.getbatch(6))
    (d, lab), (again, _), (raw, raw_lab) = batches
    assert d.shape == (6, 1, 26, 26) and lab.shape == (6,)
    np.testing.assert_array_equal(d, again)
    np.testing.assert_array_equal(lab, raw_lab)
    assert not np.array_equal(d, raw)
    assert set(np.unique(d)) <= set(np.unique(raw)) | {0.0}


# --- Data: batches and random numbers -----------------------------------------------------------


class Toy(Data):
    def __init__(self, n=10, seed=None):
        self.train_d = np.arange(n, dtype=np.float32)[:, None] * np.ones(3, np.float32)
        self.train_l = (np.arange(n) % 2).astype(np.int16)
        self.valid_d, self.valid_l = self.train_d[:4], self.train_l[:4]
        super().__init__(seed=seed)


def test_epochs_are_permutations():
    data = Toy(10, seed=1)
    seen = np.concatenate([data.getbatch(5)[0][:, 0] for _ in range(2)])
    assert sorted(seen) == list(range(10))
    seen = np.concatenate([data.getbatch(3)[0][:, 0] for _ in range(3)])
    assert len(set(seen)) == 9  # one permutation; the 10th example is skipped
    assert data.getbatch(3)[0].shape == (3, 3)
    with pytest.raises(ValueError, match="source"):
        data.getbatch(2, "training")


def test_seed_reproduces_and_processes_differ(monkeypatch):
    def batches(data):
        return np.concatenate([data.getbatch(4)[0][:, 0] for _ in range(6)])

    np.testing.assert_array_equal(batches(Toy(seed=3)), batches(Toy(seed=3)))
    assert not np.array_equal(batches(Toy(seed=3)), batches(Toy(seed=4)))
    parent, child, other_child = Toy(seed=3), Toy(seed=3), Toy(seed=3)
    in_parent = batches(parent)
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    in_child = batches(child)
    assert not np.array_equal(in_parent[:4], in_child[:4])  # a forked worker differs at once
    np.testing.assert_array_equal(in_child, batches(other_child))  # but is seeded


def test_balanced_batches_differ_in_a_new_process(monkeypatch):
    labels = [0] * 50 + [1] * 50
    parent, child = ToyBalanced(labels), ToyBalanced(labels)
    in_parent = parent.getbatch(10, balanced=True)[0]
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    assert not np.array_equal(in_parent, child.getbatch(10, balanced=True)[0])


def test_splits():
    data = Toy(12)
    x, y = np.arange(12), np.arange(12) * 10
    data.splitData(x, y, valid_size=3, split_no=1)
    assert sorted(np.concatenate([data.train_d, data.valid_d])) == list(range(12))
    assert len(data.valid_d) == 3 and np.array_equal(data.valid_l, data.valid_d * 10)
    data.createCVSplit(x, y, n_folds=5, use_fold=1)
    np.testing.assert_array_equal(data.valid_d, [3, 4, 5])  # folds of 3, 3, 2, 2, 2
    np.testing.assert_array_equal(data.train_d, [0, 1, 2, 6, 7, 8, 9, 10, 11])
    data = Toy(10)
    data.makeExampleSubset(0.5, seed=0)
    assert len(data.train_d) == 5 and data.getbatch(5)[0].shape == (5, 3)


# --- BalancedData -------------------------------------------------------------------------------


class ToyBalanced(BalancedData):
    def __init__(self, labels, seed=0):
        self.train_d = np.arange(len(labels), dtype=np.float32)[:, None]
        self.train_l = np.asarray(labels, dtype=np.int16)
        self.valid_d, self.valid_l = self.train_d, self.train_l
        super().__init__(seed=seed)


def test_balanced_batches_are_full_and_balanced():
    labels = [0] * 20 + [1] * 3 + [2] * 7
    data = ToyBalanced(labels)
    for _ in range(5):
        d, lab = data.getbatch(11, balanced=True)  # 3 per class + 2 extra (T14)
        assert d.shape == (11, 1) and np.array_equal(np.asarray(labels)[d[:, 0].astype(int)], lab)
        counts = np.bincount(lab, minlength=3)
        assert counts.sum() == 11 and set(counts) <= {3, 4}
    assert data.getbatch(4)[0].shape == (4, 1)  # unbalanced as Data
    with pytest.raises(ValueError, match="none of class"):
        ToyBalanced([0, 0, 2]).getbatch(3, balanced=True)
