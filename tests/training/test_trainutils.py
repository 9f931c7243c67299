"""Tests of the progress plots and the smoothed loss of elektronn.training.trainutils."""

import numpy as np
import pytest

from elektronn.training import trainutils
from elektronn.training.trainutils import NLL_SMOOTHING_STEPS, smooth_nll


def smoothed(values):
    out, s = [], 0.0
    for step, v in enumerate(values):
        s = smooth_nll(s, v, step)
        out.append(s)
    return np.array(out)


def test_smoothed_nll_starts_at_the_first_value_and_follows_quickly():
    values = np.r_[np.full(100, 0.2), np.full(400, 1.0)]
    s = smoothed(values)
    assert s[0] == 0.2 and s[99] == pytest.approx(0.2)  # no fixed start value
    np.testing.assert_allclose(smoothed([3.0, 1.0, 2.0]), [3.0, 2.0, 2.0])  # running mean first
    # after a jump it is within 5 % of the new level after 3 time constants (0.995: 600 steps)
    assert s[100 + 3 * NLL_SMOOTHING_STEPS] > 1.0 - 0.05 * 0.8
    assert s[100 + NLL_SMOOTHING_STEPS // 2] < 0.9  # but it does smooth


def test_short_history_is_readable():
    """After 20 steps (one monitoring point) every series is visible, the lower panel has a
    legend and train and valid NLL are told apart by style."""
    tl = np.array([[i, 2.0 * i, 0.0, 0.7 - 0.01 * i, 0.2] for i in range(20)])
    tl[:, 2] = smoothed(tl[:, 3])
    hi = np.array([[0, 0.0, 0.7, 0.7, 0.65, 0.66, -0.01, 0.005]])
    fig = trainutils._history_figure(hi, tl)
    ax, ax2 = fig.axes[0], fig.axes[1]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["train NLL"].get_marker() not in ("None", "", None)
    assert lines["valid NLL"].get_marker() != lines["train NLL"].get_marker()
    assert lines["train NLL"].get_linestyle() != lines["valid NLL"].get_linestyle()
    smooth = [line for label, line in lines.items() if label.startswith("smoothed NLL")]
    assert len(smooth[0].get_xdata()) == 20  # per step, not one point per monitoring step
    assert ax2.get_xlim() == ax.get_xlim()  # both panels over the whole run
    assert {t.get_text() for t in ax2.get_legend().get_texts()} == {
        "NLL gain per update", "learning rate (right axis)"}


def test_long_history_has_plain_lines(tmp_path):
    hi = np.array([[i, i, 0.5, 0.5, 0.5, 0.6, -0.01, 0.005] for i in range(200)])
    fig = trainutils._history_figure(hi, np.zeros((0, 5)))
    assert all(line.get_marker() in ("None", "", None) for line in fig.axes[0].get_lines())
