"""Tests of elektronn.net.paramfile: the parameter-file layer under save/loadParameters."""

import os
import pathlib
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest

from elektronn.net import paramfile
from elektronn.net.paramfile import (
    ParameterFileError,
    ParameterSet,
    adapt_bias,
    adapt_conv_filter,
    read_param_file,
    split_layers,
    write_param_file,
)
from tests.net import golden

CASES = ["n2d_clf", "n3d"]

# The globals Python 2.7 with numpy 1.x can resolve; our files may only use these.
PY2_GLOBALS = {
    "numpy.core.multiarray _reconstruct",
    "numpy.core.multiarray scalar",
    "numpy ndarray",
    "numpy dtype",
    "_codecs encode",
    "__builtin__ complex",
}


def golden_file(case, suffix):
    return golden.golden_file(f"{case}{suffix}")


def split_on_minus_one(flat):
    """Undo the npz encoding of a list of tuples: entries separated by -1."""
    groups, current = [], []
    for value in flat.tolist():
        if value == -1:
            groups.append(tuple(current))
            current = []
        else:
            current.append(value)
    return groups


def assert_same_objects(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray)
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        else:
            assert type(x) is type(y) and x == y


def file_globals(path):
    """The GLOBAL opcodes of every pickle in a file, as 'module name' strings."""
    data = pathlib.Path(path).read_bytes()
    names, pos = set(), 0
    while pos < len(data):
        for opcode, arg, at in pickletools.genops(data[pos:]):
            assert opcode.proto <= 2, f"opcode {opcode.name} needs protocol {opcode.proto}"
            if opcode.name == "GLOBAL":
                names.add(arg)
            if opcode.name == "STOP":
                pos += at + 1
                break
    return names


class Evil:
    """Pickles as a call of os.system creating a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- reading the golden files -----------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_objects_match_reference(case):
    objects = read_param_file(golden_file(case, ".param"))
    ref = np.load(golden_file(case, "_ref.npz"))
    key = "param_roundtrip."
    assert len(objects) == int(ref[key + "n_pickles"])
    assert objects[0] == split_on_minus_one(ref[key + "shape_info"])
    assert objects[-1] == split_on_minus_one(ref[key + "poolings"])
    arrays = sorted(k for k in ref.files if k.startswith(key + "array"))
    assert len(arrays) == len(objects) - 2
    for obj, name in zip(objects[1:-1], arrays, strict=True):
        assert isinstance(obj, np.ndarray) and obj.dtype == np.float32
        np.testing.assert_array_equal(obj, ref[name])
    assert all(type(n) is int for shape in objects[0] for n in shape)


def test_golden_layout_n2d():
    pset = split_layers(read_param_file(golden_file("n2d_clf", ".param")))
    assert pset.shapes == [(10, 1, 5, 5), (8, 10, 5, 5), (100,), (10,)]
    assert pset.poolings == [(2, 2), (2, 2)]
    # conv layers store [W, b], perceptrons [b, W]
    assert [[p.shape for p in layer] for layer in pset.params] == [
        [(10, 1, 5, 5), (10,)],
        [(8, 10, 5, 5), (8,)],
        [(100,), (128, 100)],
        [(10,), (100, 10)],
    ]


def test_golden_layout_n3d():
    pset = split_layers(read_param_file(golden_file("n3d", ".param")))
    assert pset.shapes == [(4, 1, 2, 4, 4), (5, 3, 4, 3, 3), (3, 3, 5, 2, 2)]
    assert pset.poolings == [(1, 2, 2), (1, 1, 1), (1, 1, 1)]
    assert [layer[1].shape for layer in pset.params] == [(4,), (5,), (3,)]


# --- writing ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_round_trip(case, tmp_path):
    objects = read_param_file(golden_file(case, ".param"))
    pset = split_layers(objects)
    assert_same_objects(pset.to_objects(), objects)
    rebuilt = ParameterSet.from_params(pset.params, pset.poolings)
    assert_same_objects(rebuilt.to_objects(), objects)

    out = tmp_path / "copy.param"
    write_param_file(out, rebuilt.to_objects())
    assert_same_objects(read_param_file(out), objects)
    # writing what was read gives the same bytes again
    again = tmp_path / "again.param"
    write_param_file(again, read_param_file(out))
    assert again.read_bytes() == out.read_bytes()


def test_written_file_is_python2_compatible(tmp_path):
    objects = [
        [(3, 2), (4,)],
        np.arange(6, dtype=np.float32).reshape(3, 2),
        np.asfortranarray(np.ones((2, 3), np.float32)),
        np.arange(4, dtype=np.int16)[::2],
        [(np.int64(2), 2), (1, np.int32(1))],
        np.float32(1.5),
        "text",
        b"\x00\xff bytes",
        1j,
    ]
    path = tmp_path / "py2.param"
    write_param_file(path, objects)
    assert file_globals(path) <= PY2_GLOBALS
    back = read_param_file(path)
    assert len(back) == len(objects)
    for a, b in zip(objects, back, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        else:
            assert a == b


def test_read_by_python2_numpy1(tmp_path):
    """Run only when ELEKTRONN_PY2_PYTHON names a Python 2.7 with numpy 1.x."""
    py2 = os.environ.get("ELEKTRONN_PY2_PYTHON")
    if not py2:
        pytest.skip("set ELEKTRONN_PY2_PYTHON to a Python 2.7 with numpy to run this test")
    arrays = [np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4), np.ones(3, np.float32)]
    path = tmp_path / "for_py2.param"
    write_param_file(path, ParameterSet.from_params([arrays], [(2, 2)]).to_objects())
    script = (
        "import cPickle, sys, numpy as np\n"
        "f = open(sys.argv[1], 'rb')\n"
        "shapes, w, b, pools = [cPickle.load(f) for _ in range(4)]\n"
        "assert shapes == [(2, 3, 4)] and pools == [(2, 2)], (shapes, pools)\n"
        "assert w.dtype == np.float32 and b.dtype == np.float32\n"
        "assert np.array_equal(w, np.linspace(-1, 1, 24).astype(np.float32).reshape(2, 3, 4))\n"
        "print('ok')\n"
    )
    result = subprocess.run([py2, "-c", script, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_atomic_write_keeps_old_file_when_an_object_fails(tmp_path):
    path = tmp_path / "net.param"
    path.write_bytes(b"old contents")
    with pytest.raises(ParameterFileError, match="object #1"):
        write_param_file(path, [np.zeros(3, np.float32), lambda: None])
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.param"]


def test_atomic_write_keeps_old_file_when_flush_fails(tmp_path, monkeypatch):
    path = tmp_path / "net.param"
    path.write_bytes(b"old contents")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(paramfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_param_file(path, [np.zeros(3, np.float32)])
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.param"]


def test_failed_write_creates_no_file(tmp_path):
    path = tmp_path / "new.param"
    with pytest.raises(ParameterFileError):
        write_param_file(path, [{"a": 1}])
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_object_arrays(tmp_path):
    with pytest.raises(ParameterFileError, match="dtype object"):
        write_param_file(tmp_path / "x.param", [np.array([None, 1], dtype=object)])


# --- refusing bad files -----------------------------------------------------------------


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.param"
    path.write_bytes(pickle.dumps([(1,)], protocol=2) + pickle.dumps(Evil(marker), protocol=2))
    with pytest.raises(ParameterFileError) as info:
        read_param_file(path)
    message = str(info.value)
    assert str(path) in message and "system" in message and "object #1" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1;\x85R.",
        b"\x80\x02c__builtin__\neval\nX\x03\x00\x00\x001+1\x85R.",
        b"\x80\x02csubprocess\nPopen\n.",
        b"\x80\x02cnumpy\nload\n.",
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.",
    ],
)
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "bad.param"
    path.write_bytes(payload)
    with pytest.raises(ParameterFileError, match="bad.param"):
        read_param_file(path)


def test_unexpected_types_are_refused(tmp_path):
    path = tmp_path / "dict.param"
    path.write_bytes(pickle.dumps({"W": 1}, protocol=2))
    with pytest.raises(ParameterFileError, match="dict"):
        read_param_file(path)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("keep", [0.5, 0.999, 20])
def test_truncated_golden_file(case, keep, tmp_path):
    data = golden_file(case, ".param").read_bytes()
    cut = int(len(data) * keep) if keep < 1 else keep
    path = tmp_path / "truncated.param"
    path.write_bytes(data[:cut])
    with pytest.raises(ParameterFileError, match="truncated") as info:
        read_param_file(path)
    assert str(path) in str(info.value)


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.param"
    empty.write_bytes(b"")
    with pytest.raises(ParameterFileError, match="empty"):
        read_param_file(empty)
    text = tmp_path / "notes.txt"
    text.write_text("these are not parameters\n")
    with pytest.raises(ParameterFileError, match="notes.txt"):
        read_param_file(text)
    with pytest.raises(FileNotFoundError):
        read_param_file(tmp_path / "missing.param")


def test_error_type_is_a_value_error():
    assert issubclass(ParameterFileError, ValueError)


# --- layout -----------------------------------------------------------------------------


def test_split_layers_recurrent_and_without_poolings():
    w_in, w_hid, b_hid, h0 = (np.zeros(s, np.float32) for s in [(3, 4), (4, 4), (4,), (4,)])
    b, w = np.zeros(2, np.float32), np.zeros((4, 2), np.float32)
    objects = [[(3, 4), (2,)], w_in, w_hid, b_hid, h0, b, w]
    pset = split_layers(objects, params_per_layer=[4, 2])
    assert pset.poolings is None
    assert [len(layer) for layer in pset.params] == [4, 2]
    assert_same_objects(pset.to_objects(), objects)
    with pytest.raises(ParameterFileError, match="shape"):
        split_layers(objects)  # 2 params per layer does not fit


def test_split_layers_errors():
    w, b = np.zeros((2, 1, 3, 3), np.float32), np.zeros(2, np.float32)
    with pytest.raises(ParameterFileError, match="shapes"):
        split_layers([w, b])
    with pytest.raises(ParameterFileError, match="only 2"):
        split_layers([[(2, 1, 3, 3)], w])
    with pytest.raises(ParameterFileError, match="follow"):
        split_layers([[(2, 1, 3, 3)], w, b, [(2, 2)], [(2, 2)]])
    with pytest.raises(ParameterFileError, match="poolings"):
        split_layers([[(2, 1, 3, 3)], w, b, b])
    with pytest.raises(ValueError, match="names 2 layers"):
        split_layers([[(2, 1, 3, 3)], w, b], params_per_layer=[2, 2])


def test_module_does_not_import_pytensor():
    source = pathlib.Path(paramfile.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pf', {str(source)!r})\n"
        "module = sys.modules['pf'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert 'pytensor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- adaptive loading -------------------------------------------------------------------


def filled(shape, start=1.0):
    return (np.arange(np.prod(shape), dtype=np.float32) + start).reshape(shape)


def test_adapt_equal_shapes_is_a_float32_copy():
    saved = filled((2, 3), start=0).astype(np.float64)
    out = adapt_conv_filter(saved, (2, 3))
    assert out.dtype == np.float32 and out is not saved
    np.testing.assert_array_equal(out, saved)


def test_adapt_4d_more_filters_tiles_with_partial_block():
    saved = filled((2, 1, 2, 2))
    out = adapt_conv_filter(saved, (5, 1, 3, 3), rng=0)
    assert out.shape == (5, 1, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, :2, :2], saved[[0, 1, 0, 1, 0], :, :2, :2])
    # outside the copied top-left corner: N(0, 0.02) noise
    assert np.all(np.abs(out[:, :, 2, :]) < 0.2) and np.all(out[:, :, 2, :] != 0)


def test_adapt_4d_more_filters_and_channels():
    saved = filled((2, 2, 3, 3))
    out = adapt_conv_filter(saved, (3, 3, 2, 2), rng=0)
    expected = saved[np.ix_([0, 1, 0], [0, 1, 0])][:, :, :2, :2]
    np.testing.assert_array_equal(out, expected)


def test_adapt_4d_more_filters_fewer_channels_takes_first_channels():
    saved = filled((1, 3, 2, 2))
    out = adapt_conv_filter(saved, (2, 2, 2, 2), rng=0)
    np.testing.assert_array_equal(out, np.concatenate([saved[:, :2]] * 2))


def test_adapt_4d_fewer_filters_more_channels_adds_small_noise():
    saved = filled((3, 2, 2, 2))
    out = adapt_conv_filter(saved, (2, 5, 2, 2), rng=0)
    expected = saved[:2][:, [0, 1, 0, 1, 0]]
    diff = out - expected
    assert np.all(diff >= 0) and np.all(diff <= 1e-4 * 1.01) and np.any(diff > 0)


def test_adapt_4d_fewer_channels_takes_middle_slice():
    saved = filled((3, 5, 2, 2))
    out = adapt_conv_filter(saved, (2, 2, 2, 2), rng=0)
    np.testing.assert_array_equal(out, saved[:2, 1:3])


def test_adapt_5d_centres_each_axis():
    saved = filled((2, 1, 2, 3, 3))
    out = adapt_conv_filter(saved, (3, 3, 1, 5, 1), rng=0)
    # z: target 3 > saved 1 -> target offset 1; x: 5 > 3 -> offset 1; y: 1 < 3 -> saved
    # offset 1; filters and channels from the start
    np.testing.assert_array_equal(out[:2, 1:2, :1, 1:4, 0:1], saved[:2, 0:1, :1, 0:3, 1:2])
    rest = np.ones(out.shape, bool)
    rest[:2, 1:2, :1, 1:4, 0:1] = False
    assert np.all(out[rest] != 0)


def test_adapt_5d_cubic_legacy_equals_per_axis():
    saved = filled((2, 3, 1, 3, 3))
    new = adapt_conv_filter(saved, (2, 5, 1, 5, 5), rng=3)
    old = adapt_conv_filter(saved, (2, 5, 1, 5, 5), rng=3, centre_per_axis=False)
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(new[:, 1:4, :, 1:4, 1:4], saved)


def test_adapt_5d_legacy_non_cubic_raises_clearly():
    saved = filled((1, 1, 1, 3, 3))
    assert adapt_conv_filter(saved, (1, 5, 1, 1, 1), rng=0).shape == (1, 5, 1, 1, 1)
    with pytest.raises(ValueError, match="cubic"):
        adapt_conv_filter(saved, (1, 5, 1, 1, 1), rng=0, centre_per_axis=False)


@pytest.mark.parametrize(
    ("saved", "target"),
    [((4, 3), (4, 5)), ((3,), (4,)), ((2, 1, 3, 3), (2, 1, 3, 3, 1)), ((2, 3, 3), (2, 4, 4))],
)
def test_adapt_unsupported_shapes_return_none(saved, target):
    assert adapt_conv_filter(np.zeros(saved, np.float32), target) is None


def test_adapt_uses_global_random_state_by_default():
    saved = filled((2, 1, 2, 2))
    np.random.seed(5)
    first = adapt_conv_filter(saved, (3, 2, 3, 3))
    np.random.seed(5)
    second = adapt_conv_filter(saved, (3, 2, 3, 3))
    np.testing.assert_array_equal(first, second)
    np.random.seed(5)
    expected = np.random.normal(0, 0.02, (3, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(first[:, :, 2], expected[:, :, 2])


def test_adapt_bias():
    saved = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(adapt_bias(saved, (3,)), saved)
    np.testing.assert_array_equal(adapt_bias(saved, (2,)), [1, 2])
    rng = np.random.RandomState(0)
    np.testing.assert_array_equal(adapt_bias(saved, (7,), rng=rng), [1, 2, 3, 1, 2, 3, 1])
    # the original's uniform fill was drawn: the state advanced by 7 numbers
    reference = np.random.RandomState(0)
    reference.random_sample(7)
    assert rng.random_sample() == reference.random_sample()
    assert adapt_bias(saved, (3, 1)) is None
    assert adapt_bias(np.zeros((4, 2)), (4, 3)) is None
    assert adapt_bias(np.ones((2, 2)), (3, 2)).tolist() == [[1, 1], [1, 1], [1, 1]]
