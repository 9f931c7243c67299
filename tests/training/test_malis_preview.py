"""MALIS previews: elektronn-train with target 'malis' writes MALIS-<step>.pkl when monitoring."""

import logging
import re

import numpy as np
import pytest

from elektronn.data.synthetic import write_cubes
from elektronn.scripts.train import main
from elektronn.training.config import EXAMPLE_CONFIG_DIR
from elektronn.training.trainutils import pickleLoad

TINY_MALIS = """
save_path = {save!r}
data_path = label_path = {data!r}
desired_input = [23, 23, 7]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [4, 6]
batch_size = 1
monitor_batch_size = 1
history_freq = [2]
target = 'malis'
background_processes = False
plot_on = False
"""


@pytest.mark.slow
def test_cli_malis_target_writes_previews(tmp_path, caplog):
    write_cubes(tmp_path / "data", n_cubes=2, shape=(40, 40, 12))
    config = tmp_path / "malis_config.py"
    config.write_text((EXAMPLE_CONFIG_DIR / "neuro_3d_config.py").read_text() + TINY_MALIS.format(
        save=f"{tmp_path}/run/", data=f"{tmp_path}/data/"))
    with caplog.at_level(logging.INFO, logger="elektronn"):
        assert main([str(config), "--steps", "3"]) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("MALIS-*.pkl")) == ["MALIS-0.pkl", "MALIS-2.pkl"]
    logged = {}
    for record in caplog.records:
        m = re.match(r"MALIS (\d+): (.*)", record.getMessage())
        if m:
            logged[int(m[1])] = {k: float(v) for k, v in
                                 (kv.split("=") for kv in m[2].split(", "))}
    assert set(logged) == {0, 2}

    pred, aff_gt, pos, log_neg, seg, data = pickleLoad(run / "MALIS-2.pkl")
    z, x, y = seg.shape
    assert pred.shape == aff_gt.shape == pos.shape == log_neg.shape == (z, x, y, 3)
    assert data.ndim == 3 and data.shape[0] >= z  # the raw input (with the net's margin)
    assert np.all((pred > 0) & (pred < 1)) and set(np.unique(aff_gt)) <= {0, 1}
    neg = np.expm1(log_neg)
    stats = logged[2]
    assert pos.sum() == pytest.approx(stats["n_pos"]) and neg.sum() == pytest.approx(
        stats["n_neg"])
    # the MALIS-weighted loss of these predictions (two classes per edge: dis = 1 - aff)
    nll = -(pos * np.log(pred) + neg * np.log1p(-pred)).sum() / (pos.sum() + neg.sum())
    assert nll == pytest.approx(stats["nll"], rel=1e-4)
    splits = ((pred < 0.5) * pos).sum()
    assert splits == pytest.approx(stats["false_splits"])
