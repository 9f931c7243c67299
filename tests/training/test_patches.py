"""Tests of elektronn.training.patches: how data and labels of a cube are brought together."""

import logging

import pytest

from elektronn.training.patches import strip_geometry


def test_labels_as_large_as_the_image_are_no_warning(caplog):
    """Synthetic cubes (a label for every voxel) lose the border without a warning."""
    with caplog.at_level(logging.INFO, logger="elektronn"):
        d_cut, l_cut = strip_geometry((32, 128, 128), (32, 128, 128), (2, 15, 15))
    assert d_cut == [0, 0, 0] and l_cut == [2, 15, 15]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "labels as large as the image" in caplog.text


@pytest.mark.parametrize("labels, cut", [((32, 110, 110), [2, 6, 6]), ((28, 98, 98), [0, 0, 0])])
def test_labels_larger_than_the_net_can_see_warn(caplog, labels, cut):
    with caplog.at_level(logging.INFO, logger="elektronn"):
        _, l_cut = strip_geometry((32, 128, 128), labels, (2, 15, 15))
    assert l_cut == cut
    warned = any("labels are cut off" in r.getMessage() for r in caplog.records
                 if r.levelno == logging.WARNING)
    assert warned == any(cut)
