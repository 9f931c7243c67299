"""The golden cases: ELEKTRONN 1.0's own parameter files, inputs and outputs."""

import numpy as np
import pytest

from elektronn.net import paramfile
from tests.net.golden import BUILDERS, load_case

CASES = sorted(BUILDERS)

# float32 reaches ~2e-7 relative to the recorded values (forward and after two SGD steps);
# 1e-5 leaves room for summation order, yet momentum 0.88 instead of 0.9 fails (1e-3 on n2d_clf).
TOL = 1e-5


@pytest.fixture(scope="module", params=CASES)
def case(request):
    param_file, inp, ref = load_case(request.param)
    cnn = BUILDERS[request.param]()
    cnn.loadParameters(str(param_file))
    return request.param, cnn, param_file, inp, ref


def unflatten(arr):
    """The reference stores lists of tuples flattened, each tuple ended by -1."""
    out, cur = [], []
    for v in np.asarray(arr).tolist():
        if v == -1:
            out.append(tuple(cur))
            cur = []
        else:
            cur.append(v)
    return out


def rel_err(a, b):
    return np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-12)


def test_forward_outputs(case):
    _, cnn, _, inp, ref = case
    probs = cnn.class_probabilities(inp["x"])
    assert probs.shape == ref["probs0.value"].shape
    assert rel_err(probs, ref["probs0.value"]) < TOL
    loss, err, pred = cnn.get_error(inp["x"], inp["y"])
    assert rel_err(loss, ref["err0.loss"]) < TOL
    assert abs(err - ref["err0.error"]) < 1e-6
    np.testing.assert_array_equal(pred, ref["err0.prediction"])
    loss, inst = cnn.get_loss(inp["x"], inp["y"])
    assert rel_err(loss, ref["loss0.loss"]) < TOL
    assert rel_err(inst, ref["loss0.loss_instance"]) < TOL


def test_parameter_roundtrip(case, tmp_path):
    _, cnn, param_file, _, ref = case
    out = tmp_path / "roundtrip.param"
    cnn.saveParameters(str(out))
    objects = paramfile.read_param_file(out)
    assert len(objects) == int(ref["param_roundtrip.n_pickles"])
    assert [tuple(s) for s in objects[0]] == unflatten(ref["param_roundtrip.shape_info"])
    assert [tuple(p) for p in objects[-1]] == unflatten(ref["param_roundtrip.poolings"])
    arrays = sorted(k for k in ref if k.startswith("param_roundtrip.array"))
    for obj, key in zip(objects[1:-1], arrays):
        np.testing.assert_array_equal(obj, ref[key])
    assert objects[1:-1][0].dtype == np.float32
    # and the original file itself holds the same objects
    original = paramfile.read_param_file(param_file)
    for a, b in zip(original[1:-1], objects[1:-1]):
        np.testing.assert_array_equal(a, b)


# Learning rate of each case's recorded SGD steps.  The README of the golden files says 0.01 for
# both, but n3d's reference was recorded with 0.05: rerunning ELEKTRONN 1.0.14 under Theano 0.9.0
# (Python 2.7, CPU, float32) gives bit-identical n3d results at LR 0.05 and our LR-0.01 numbers at
# LR 0.01 (its gradients agree with ours to ~2e-7); n2d_clf matches bit-exactly at LR 0.01.
GOLDEN_SGD_LR = {"n2d_clf": 0.01, "n3d": 0.05}


@pytest.mark.parametrize("name", CASES)
def test_two_sgd_steps(name):
    """Two SGD steps reproduce ELEKTRONN 1.0 (losses, then probabilities and loss)."""
    param_file, inp, ref = load_case(name)
    cnn = BUILDERS[name]()
    cnn.loadParameters(str(param_file))
    cnn.setOptimizerParams(SGD={"LR": GOLDEN_SGD_LR[name], "momentum": 0.9}, weight_decay=0.0)
    for k in (1, 2):
        loss, inst, _ = cnn.trainingStep(inp["x"], inp["y"], mode="SGD")
        assert rel_err(loss, ref[f"sgd_step{k}.loss"]) < TOL
        assert rel_err(inst, ref[f"sgd_step{k}.loss_instance"]) < TOL
    assert rel_err(cnn.class_probabilities(inp["x"]), ref["probs2.value"]) < TOL
    loss, inst = cnn.get_loss(inp["x"], inp["y"])
    assert rel_err(loss, ref["loss2.loss"]) < TOL
    assert rel_err(inst, ref["loss2.loss_instance"]) < TOL
