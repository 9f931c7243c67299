"""Tests of elektronn.net.netutils against the numbers of ELEKTRONN 1.0 (docs/cnncalculator.md)."""

import ast
import doctest
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elektronn.net import netutils
from elektronn.net.netutils import (
    CNNCalculator,
    _CNNCalculator,
    _glorot_fans,
    _Layer,
    _multiCNNCalculator,
    initWeights,
)

DOC_FILTERS = [[6, 6, 1], [4, 4, 4], [2, 2, 2], [1, 1, 1]]
DOC_POOLS = [[2, 2, 1], [2, 2, 2], [2, 2, 2], [1, 1, 1]]
NEURO_FILTERS = [[1, 4, 4], [1, 3, 3], [3, 3, 3], [3, 3, 3], [1, 2, 2]]
NEURO_POOLS = [[1, 2, 2], [1, 2, 2], 1, 1, 1]
NOTE = "If offset is non-int: output neurons lie centered on input neurons, they have an odd FOV"


def infos(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "elektronn" and r.levelno == logging.INFO]


def warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "elektronn" and r.levelno == logging.WARNING]


def assert_plain(value):
    """Every number in ``value`` is a Python int or float, never a numpy scalar."""
    if isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert type(value) in (int, float), (value, type(value))


# --- the original docstring's example --------------------------------------------------------

@pytest.fixture
def doc_calc(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    return CNNCalculator(DOC_FILTERS, DOC_POOLS, [211, 211, 20], MFP=[1, 1, 0, 0],
                         force_center=True, n_dim=3)


def test_docstring_example_attributes(doc_calc):
    d = doc_calc
    assert isinstance(d, _multiCNNCalculator)
    assert d.input == [210, 210, 18]
    assert d.pool_out == [[102, 49, 24, 24], [102, 49, 24, 24], [18, 7, 3, 3]]
    assert d.out == [[205, 99, 48, 24], [205, 99, 48, 24], [18, 15, 6, 3]]
    assert d.fields == [[7, 15, 23, 23], [7, 15, 23, 23], [1, 5, 9, 9]]
    assert d.stride == [[2, 4, 8, 8], [2, 4, 8, 8], [1, 2, 4, 4]]
    assert d.overlap == [[5, 11, 15, 15], [5, 11, 15, 15], [0, 3, 5, 5]]
    assert d.offset == [11.5, 11.5, 4.5]
    assert d.pred_stride == [8, 8, 4]


def test_docstring_example_valid_inputs(doc_calc):
    x_valid, y_valid, z_valid = doc_calc.valid_inputs
    assert x_valid == y_valid
    assert x_valid[:3] == [26, 34, 42] and len(x_valid) == 622
    assert set(np.diff(x_valid)) == {8}
    assert z_valid[:4] == [10, 14, 18, 22] and len(z_valid) == 1248


def test_docstring_example_messages(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    CNNCalculator(DOC_FILTERS, DOC_POOLS, [211, 211, 20], MFP=[1, 1, 0, 0], force_center=True,
                  n_dim=3)
    assert infos(caplog) == [
        "input (211) changed to (210) (size not possible)",
        "input (211) changed to (210) (size not possible)",
        "input (20) changed to (18) (size not possible)",
    ]
    assert warnings(caplog) == []  # both fields of view are odd


def test_docstring_example_repr(doc_calc):
    assert str(doc_calc) == repr(doc_calc) == "\n".join([
        "Input: [210, 210, 18]",
        "Layer/Fragment sizes:\t[[102, 49, 24, 24], [102, 49, 24, 24], [18, 7, 3, 3]]",
        "Unpooled Layer sizes:\t[[205, 99, 48, 24], [205, 99, 48, 24], [18, 15, 6, 3]]",
        "Receptive fields:\t[[7, 15, 23, 23], [7, 15, 23, 23], [1, 5, 9, 9]]",
        "Strides:\t\t[[2, 4, 8, 8], [2, 4, 8, 8], [1, 2, 4, 4]]",
        "Overlap:\t\t[[5, 11, 15, 15], [5, 11, 15, 15], [0, 3, 5, 5]]",
        "Offset:\t\t[11.5, 11.5, 4.5].",
        NOTE,
    ])


def test_attributes_are_plain_python_numbers(doc_calc):
    for name in ("input", "pool_out", "out", "fields", "stride", "overlap", "pred_stride",
                 "valid_inputs", "valid_outputs"):
        assert_plain(getattr(doc_calc, name))
    assert all(type(v) is float for v in doc_calc.offset)


def test_numpy_integer_arguments_give_plain_ints():
    c = CNNCalculator(np.array([3, 3]), [np.int64(2), np.int32(2)], desired_input=np.int64(26))
    for name in ("input", "pool_out", "out", "fields", "stride", "overlap", "pred_stride",
                 "valid_inputs", "valid_outputs", "offset"):
        assert_plain(getattr(c, name))
    assert "np." not in repr(c)


def test_module_doctest():
    result = doctest.testmod(netutils)
    assert result.attempted >= 3 and result.failed == 0


# --- MNIST 2-D ------------------------------------------------------------------------------

def test_mnist_2d(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    m = CNNCalculator([3, 3], [2, 2], desired_input=26, n_dim=2)
    assert m.input == [26, 26]
    assert m.pool_out == [[12, 5], [12, 5]]
    assert m.out == [[24, 10], [24, 10]]
    assert m.fields == [[4, 10], [4, 10]]
    assert m.stride == [[2, 4], [2, 4]]
    assert m.overlap == [[2, 6], [2, 6]]
    assert m.offset == [5.0, 5.0]
    assert m.pred_stride == [4, 4]
    assert m.valid_inputs[0][:5] == [10, 14, 18, 22, 26]
    even_fov = "Receptive Fields are not centered with even field of view (10)"
    assert warnings(caplog) == [even_fov] * 2
    assert infos(caplog) == []  # 26 is valid, nothing changed


def test_mnist_2d_repr():
    m = CNNCalculator([3, 3], [2, 2], desired_input=26, n_dim=2)
    assert repr(m).splitlines() == [
        "Input: [26, 26]",
        "Layer/Fragment sizes:\t[[12, 5], [12, 5]]",
        "Unpooled Layer sizes:\t[[24, 10], [24, 10]]",
        "Receptive fields:\t[[4, 10], [4, 10]]",
        "Strides:\t\t[[2, 4], [2, 4]]",
        "Overlap:\t\t[[2, 6], [2, 6]]",
        "Offset:\t\t[5.0, 5.0].",
        NOTE,
    ]


def test_force_center_rejects_even_field_of_view():
    with pytest.raises(ValueError, match=r"field of view \(10\)"):
        CNNCalculator([3, 3], [2, 2], desired_input=26, force_center=True, n_dim=2)
    with pytest.raises(ValueError, match="force_center"):
        CNNCalculator([3, 3], [2, 2], force_center=True)


# --- 1-D cases (Appendix B) -----------------------------------------------------------------

def test_1d_desired_output_10():
    c = CNNCalculator([3, 3], [2, 2], desired_output=10)
    assert isinstance(c, _CNNCalculator)
    assert c.input == 26
    assert c.out == [24, 10]
    assert c.pool_out == [12, 5]
    assert c.pred_stride == 4
    assert c.offset == 5.0


def test_1d_desired_output_6():
    assert CNNCalculator([3, 3], [2, 2], desired_output=6).input == 18


def test_1d_desired_output_takes_precedence_over_desired_input():
    assert CNNCalculator([3, 3], [2, 2], desired_input=26, desired_output=6).input == 18


@pytest.mark.parametrize("desired, expected", [(11, 10), (13, 12), (9, 8), (5000, 2496)])
def test_1d_desired_output_without_match_uses_next_smaller(desired, expected, caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    c = CNNCalculator([3, 3], [2, 2], desired_output=desired)
    assert c.out[-1] == expected
    assert c.input == c.valid_inputs[c.valid_outputs.index(expected)]
    assert infos(caplog) == [f"output ({desired}) changed to ({expected}) (size not possible)"]


def test_1d_desired_output_too_small_uses_smallest(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    c = CNNCalculator([3, 3], [2, 2], desired_output=1)
    assert (c.input, c.out[-1]) == (10, 2)
    assert infos(caplog) == ["output (1) changed to (2) (size too small)"]


def test_1d_desired_input_none_uses_largest():
    c = CNNCalculator([3, 3], [2, 2])
    assert c.input == 4998
    assert c.valid_inputs[-1] == 4998
    assert c.out == [4996, 2496]


def test_1d_desired_input_too_small(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    c = CNNCalculator([3, 3], [2, 2], desired_input=3)
    assert c.input == 10
    assert type(c.valid_inputs) is list  # the original gave an ndarray in this branch
    assert infos(caplog) == ["input (3) changed to (10) (size too small)"]


def test_1d_desired_input_not_possible(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    assert CNNCalculator([3, 3], [2, 2], desired_input=25).input == 22
    assert CNNCalculator([3, 3], [2, 2], desired_input=7000).input == 4998
    assert infos(caplog) == ["input (25) changed to (22) (size not possible)",
                             "input (7000) changed to (4998) (size not possible)"]


def test_1d_valid_inputs_and_outputs():
    c = CNNCalculator([3, 3], [2, 2])
    assert c.valid_inputs == list(range(10, 5000, 4))
    assert c.valid_outputs == [(i - 2) // 2 - 2 for i in c.valid_inputs]


def test_1d_repr_is_in_forward_layer_order():
    c = CNNCalculator([3, 3], [2, 2], desired_input=26)
    assert repr(c) == "\n".join([
        "Input: 26",
        "Layer/Fragment sizes:\t[12, 5]",
        "Unpooled Layer sizes:\t[24, 10]",
        "Receptive fields:\t[4, 10]",
        "Strides:\t\t[2, 4]",
        "Overlap:\t\t[2, 6]",
        "Offset:\t\t5.0.",
        NOTE,
    ])


def test_layers_carry_field_and_overlap():
    c = CNNCalculator([3, 3], [2, 2], desired_input=26)
    assert [layer.field for layer in c.layers] == [4, 10]
    assert [layer.overlap for layer in c.layers] == c.overlap == [2, 6]
    assert [layer.input for layer in c.layers] == [26, 12]


# --- MFP (docs/differences.md, N34) --------------------------------------------------------

def test_mfp_valid_inputs_pool3(caplog):
    c = CNNCalculator([5, 3, 1], [3, 2, 1], MFP=[1, 1, 0])
    assert c.valid_inputs[:4] == [21, 27, 33, 39]
    # true MFP: conv output % pool == pool - 1 (equal fragments)
    assert [layer.out for layer in c._make_layers(21)] == [17, 3, 1]
    assert not any("pool - 1" in m for m in warnings(caplog))


def test_mfp_valid_inputs_pool3_legacy_rule(caplog):
    c = CNNCalculator([5, 3, 1], [3, 2, 1], MFP=[1, 1, 0], legacy_mfp=True)
    assert c.valid_inputs[:4] == [20, 26, 32, 38]
    # the ELEKTRONN 1.0 acceptance rule: conv output % pool == 1
    layers = c._make_layers(20)
    assert [layer.out for layer in layers] == [16, 3, 1]
    assert 14 not in c.valid_inputs  # gives pool_out 0 in layer 2, hence no output
    assert any("out % pool == pool - 1" in m for m in warnings(caplog))


def test_mfp_pool2_needs_odd_outputs_and_logs_no_pool_warning(caplog):
    c = CNNCalculator([3, 3], [2, 2], MFP=True)
    assert c.valid_inputs[:3] == [13, 17, 21]  # 9 -> 7 -> 3 -> 1 leaves no pooled output
    assert all(out % 2 == 1 for i in c.valid_inputs for out in
               [layer.out for layer in c._make_layers(i)])
    assert not any("pool - 1" in m for m in warnings(caplog))


# --- neuro_3d (Appendix B) ------------------------------------------------------------------

def test_neuro_3d_without_mfp(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    n = CNNCalculator(NEURO_FILTERS, NEURO_POOLS, [7, 127, 127], n_dim=3)
    assert n.input == [7, 127, 127]
    assert [f[-1] for f in n.fields] == [5, 31, 31]
    assert n.offset == [2.5, 15.5, 15.5]
    assert n.pred_stride == [1, 4, 4]
    assert [s[-1] for s in n.stride] == [1, 4, 4]
    assert [p[-1] for p in n.pool_out] == [3, 25, 25]
    assert infos(caplog) == []


def test_neuro_3d_with_mfp(caplog):
    caplog.set_level(logging.INFO, logger="elektronn")
    n = CNNCalculator(NEURO_FILTERS, NEURO_POOLS, [7, 127, 127], MFP=[1, 1, 0, 0, 0], n_dim=3)
    assert n.input == [7, 126, 126]
    assert [p[-1] for p in n.pool_out] == [3, 24, 24]
    assert n.out[1] == [123, 59, 27, 25, 24]
    assert infos(caplog) == ["input (127) changed to (126) (size not possible)"] * 2


# --- argument expansion and validation ------------------------------------------------------

def test_mixed_scalar_and_list_entries_are_expanded():
    mixed = CNNCalculator([[1, 4, 4], 3, [3, 3, 3]], [[1, 2, 2], 1, 1], 40, n_dim=3)
    full = CNNCalculator([[1, 4, 4], [3, 3, 3], [3, 3, 3]], [[1, 2, 2], [1, 1, 1], [1, 1, 1]],
                         [40, 40, 40], n_dim=3)
    for name in ("input", "pool_out", "out", "fields", "stride", "overlap", "offset"):
        assert getattr(mixed, name) == getattr(full, name)
    assert mixed.input == [40, 39, 39]
    assert mixed.calcs[0].filters == [1, 3, 3] and mixed.calcs[1].poolings == [2, 1, 1]


def test_per_dimension_mfp_and_desired_sizes():
    d = CNNCalculator([3, 3], [2, 2], desired_input=[None, 26], MFP=[[1, 0], [1, 0]],
                      desired_output=[None, None], n_dim=2)
    assert d.calcs[0].mfp == [True, True] and d.calcs[1].mfp == [False, False]
    assert d.input == [4997, 26]  # largest MFP input, then the requested one
    d = CNNCalculator([3, 3], [2, 2], desired_output=[10, 6], n_dim=2)
    assert d.input == [26, 18]


def test_one_dim_accepts_length_one_lists():
    c = CNNCalculator([[3], [3]], [[2], 2], desired_input=[26])
    assert isinstance(c, _CNNCalculator) and c.input == 26


@pytest.mark.parametrize("kwargs, name", [
    (dict(filters=[3, 3], poolings=[2]), "poolings"),
    (dict(filters=[3, 3], poolings=[2, 2, 2]), "poolings"),
    (dict(filters=[], poolings=[]), "filters"),
    (dict(filters=3, poolings=[2]), "filters"),
    (dict(filters=[3, 0], poolings=[2, 2]), "filters"),
    (dict(filters=[3, -3], poolings=[2, 2]), "filters"),
    (dict(filters=[3, 3.0], poolings=[2, 2]), "filters"),
    (dict(filters=[3, "3"], poolings=[2, 2]), "filters"),
    (dict(filters=[3, 3], poolings=[2, 0]), "poolings"),
    (dict(filters=[3, 3], poolings=[2, None]), "poolings"),
    (dict(filters=[3, 3], poolings=[2, 2], desired_input=0), "desired_input"),
    (dict(filters=[3, 3], poolings=[2, 2], desired_input=26.5), "desired_input"),
    (dict(filters=[3, 3], poolings=[2, 2], desired_output=-1), "desired_output"),
    (dict(filters=[3, 3], poolings=[2, 2], MFP=[1]), "MFP"),
    (dict(filters=[3, 3], poolings=[2, 2], MFP=[1, 2]), "MFP"),
    (dict(filters=[3, 3], poolings=[2, 2], MFP="yes"), "MFP"),
    (dict(filters=[3, 3], poolings=[2, 2], n_dim=0), "n_dim"),
    (dict(filters=[[3, 3], 3], poolings=[2, 2], n_dim=3), "filters"),
    (dict(filters=[3, 3], poolings=[[2, 2, 2], 2], n_dim=2), "poolings"),
    (dict(filters=[3, 3], poolings=[2, 2], MFP=[[1, 1, 1], 0], n_dim=2), "MFP"),
    (dict(filters=[3, 3], poolings=[2, 2], desired_input=[26], n_dim=2), "desired_input"),
    (dict(filters=[3, 3], poolings=[2, 2], desired_output=[10, 10, 10], n_dim=2),
     "desired_output"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CNNCalculator(**kwargs)


def test_no_valid_input_raises():
    with pytest.raises(ValueError, match="no input size"):
        CNNCalculator([6000], [1])


# --- _Layer ---------------------------------------------------------------------------------

def test_layer_sizes_and_errors():
    layer = _Layer(26, filter=3, pool=2, stride=2, mfp=False)
    assert (layer.out, layer.pool_out) == (24, 12)
    layer.setfield(4)
    assert (layer.field, layer.overlap) == (4, 2)
    assert _Layer(25, 3, 3, mfp=True).pool_out == 7  # conv output 23, 23 % 3 == 2
    assert _Layer(24, 3, 3, mfp=True, legacy_mfp=True).pool_out == 7  # 22 % 3 == 1
    with pytest.raises(ValueError, match="no output"):
        _Layer(2, filter=3)
    with pytest.raises(ValueError, match="no output"):  # out 1, nothing left after pooling
        _Layer(3, filter=3, pool=2, mfp=True)
    with pytest.raises(ValueError, match="Uneven"):
        _Layer(25, 3, 2, mfp=False)
    with pytest.raises(ValueError, match="MFP"):
        _Layer(26, 3, 2, mfp=True)


def test_layer_mfp_rule_is_out_mod_pool_equals_pool_minus_one():
    accepted = [n for n in range(5, 40) if _try_layer(n, 3, 3, True)]
    assert accepted == [n for n in range(5, 40) if (n - 2) % 3 == 2]
    legacy = [n for n in range(5, 40) if _try_layer(n, 3, 3, True, legacy_mfp=True)]
    assert legacy == [n for n in range(5, 40) if (n - 2) % 3 == 1]


def _try_layer(size, filt, pool, mfp, legacy_mfp=False):
    try:
        _Layer(size, filt, pool, mfp=mfp, legacy_mfp=legacy_mfp)
    except ValueError:
        return False
    return True


def test_module_does_not_import_pytensor():
    code = "import sys, elektronn.net.netutils; sys.exit('pytensor' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_library_code_does_not_print():
    tree = ast.parse(Path(netutils.__file__).read_text())
    calls = [n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "print" not in calls


# --- initWeights ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape, pool, fans", [
    ((10, 20), None, (10, 20)),
    ((3, 2, 3, 3), None, (18, 27)),
    ((3, 2, 3, 3), (2, 2), (18, 6)),  # 27 // 4, not 6.75
    ((5, 3, 2, 3, 3), None, (54, 135)),
    ((5, 3, 2, 3, 3), (1, 2, 2), (54, 33)),  # 135 // 4
    ((5, 3, 2, 3, 3), (2, 2, 2), (54, 16)),  # 135 // 8
])
def test_glorot_fans(shape, pool, fans):
    assert _glorot_fans(shape, pool) == fans


def test_glorot_uniform_bounds():
    s = np.sqrt(2.0 / (60 + 90))
    w = initWeights((60, 90), mode="uni", rng=np.random.default_rng(0))
    assert w.dtype == np.float32 and w.shape == (60, 90)
    assert np.abs(w).max() <= s
    assert np.abs(w).max() > 0.99 * s
    assert abs(w.mean()) < 0.01 * s


def test_glorot_uniform_conv_bounds_use_floor_divided_fan_out():
    s = np.sqrt(2.0 / (18 + 6))  # with 27 / 4 = 6.75 the bound would be smaller
    w = initWeights((3, 2, 3, 3), mode="uni", pool=(2, 2), rng=np.random.default_rng(1))
    w_big = initWeights((3000, 2, 3, 3), mode="uni", pool=(2, 2), rng=np.random.default_rng(1))
    assert np.abs(w).max() <= s
    s_big = np.sqrt(2.0 / (18 + 3000 * 9 // 4))
    assert s_big * 0.99 < np.abs(w_big).max() <= s_big


@pytest.mark.parametrize("shape, pool, fans", [
    ((200, 300), None, (200, 300)),
    ((64, 8, 5, 5), (2, 2), (200, 400)),
    ((40, 3, 4, 5, 5), (1, 2, 2), (300, 750)),
])
def test_glorot_normal_std(shape, pool, fans):
    w = initWeights(shape, pool=pool, rng=np.random.default_rng(2))
    s = np.sqrt(2.0 / sum(fans))
    assert w.dtype == np.float32 and w.shape == shape
    assert abs(w.std() / s - 1) < 0.03
    assert abs(w.mean()) < 0.05 * s


def test_fix_uni_bounds():
    w = initWeights((50, 50), scale=0.3, mode="fix-uni", rng=np.random.default_rng(3))
    assert np.abs(w).max() <= np.float32(0.3)
    assert np.abs(w).max() > 0.29
    assert w.dtype == np.float32


def test_const():
    w = initWeights((7,), scale=0.5, mode="const")
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, np.full(7, 0.5, dtype=np.float32))
    assert initWeights((2, 3), scale=1.0 / 9, mode="const")[1, 2] == np.float32(1.0 / 9)


def test_rnn_has_spectral_norm_one():
    w = initWeights((30, 30), mode="rnn", rng=np.random.default_rng(4))
    assert w.dtype == np.float32
    assert np.linalg.norm(w.astype(np.float64), 2) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(w).max() < 1  # the U(-1, 1) draw was scaled down
    with pytest.raises(ValueError, match="shape"):
        initWeights((30, 20), mode="rnn")


def test_global_random_state_is_used_by_default():
    np.random.seed(123)
    a = initWeights((4, 5), mode="uni")
    np.random.seed(123)
    b = initWeights((4, 5), mode="uni")
    c = initWeights((4, 5), mode="uni")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_random_state_and_generator_are_accepted():
    a = initWeights((4, 5), rng=np.random.RandomState(7))
    b = initWeights((4, 5), rng=np.random.RandomState(7))
    np.testing.assert_array_equal(a, b)
    g1 = initWeights((4, 5), rng=np.random.default_rng(7))
    g2 = initWeights((4, 5), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("scale, mode", [
    (0.1, "normal"),
    (0.1, "uni"),
    ("glorot", "const"),
    ("glorot", "fix-uni"),
    ("glorot", "gauss"),
    ("he", "normal"),
    (True, "const"),
])
def test_invalid_combination_raises_naming_parameters(scale, mode):
    with pytest.raises(ValueError, match=r"(?s)Invalid weight initialisation.*scale.*mode"):
        initWeights((4, 5), scale=scale, mode=mode)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (1, 2, 3, 4, 5, 6)])
def test_glorot_needs_a_shape_with_fans(shape):
    with pytest.raises(ValueError, match="shape"):
        initWeights(shape)


def test_bad_shape_and_pool_raise():
    with pytest.raises(ValueError, match="shape"):
        initWeights((4, 0), scale=1.0, mode="const")
    with pytest.raises(ValueError, match="pool"):
        initWeights((3, 2, 3, 3), pool=(2, 0))


# --- the calculator's sizes are the sizes the net builds -------------------------------------

def _builds(size, filters, pools, mfp):
    from elektronn.net.convnet import MixedConvNN

    cnn = MixedConvNN((size, size), input_depth=1, batch_size=1, seed=0)
    try:
        for f, p, m in zip(filters, pools, mfp, strict=True):
            cnn.addConvLayer(2, f, p, "linear", use_fragment_pooling=m)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("seed", range(8))
def test_calculator_inputs_are_exactly_the_sizes_the_net_builds(seed):
    """Random architectures with MFP pools of 2 and 3: every input the calculator proposes
    builds the net, and no other size below 40 does."""
    gen = np.random.default_rng(seed)
    n = int(gen.integers(1, 4))
    filters = [int(f) for f in gen.integers(1, 6, n)]
    pools = [int(p) for p in gen.choice([1, 2, 3], n)]
    pools[int(gen.integers(n))] = 2 + seed % 2  # at least one pool of 2 or 3 ...
    mfp = [bool(m) for m in gen.integers(0, 2, n)]
    mfp[pools.index(2 + seed % 2)] = True  # ... with MFP
    calc = CNNCalculator(filters, pools, MFP=mfp, desired_input=int(gen.integers(10, 60)))
    assert _builds(calc.input, filters, pools, mfp)
    for size in range(2, 40):
        assert _builds(size, filters, pools, mfp) == (size in calc.valid_inputs), (
            size, filters, pools, mfp)
