"""Tests of elektronn.training.warping: the C kernel's map, labels, flips and parameters."""

import logging
import math

import numpy as np
import pytest

from elektronn.training import warping
from elektronn.training.warping import (
    getCornerIx,
    getRequiredPatchSize,
    getWarpParams,
    greyAugment,
    randomFlip,
    transposeIgnoreCh,
    warp2dFast,
    warp2dJoint,
    warp3dFast,
    warp3dJoint,
)

f32 = np.float32


# --- a scalar transcription of ELEKTRONN 1.0's warping.c (float32 steps, C rounding) -------------


def c_int_half(d):
    """C's ``d / 2`` on ints (truncation towards zero)."""
    return int(d / 2)


def nearest(u):
    return math.trunc(float(u) + 0.5)


def ref_warp3d(img, ps, rot, shear, scale, stretch, twist):
    """fastwarp3d_opt_zxy with the Python wrapper's conversions, one voxel at a time."""
    sz, ch, sx, sy = img.shape
    pz, px, py = ps
    rot, shear, twist = (f32(a * np.pi / 180) for a in (rot, shear, twist))
    scale = 1.0 / np.array(scale, dtype=f32)
    stretch = np.array(stretch, dtype=f32)
    zc, xc, yc = (f32(f32(n) / 2 - 0.5) for n in (sz, sx, sy))
    st = [stretch[0] / xc, stretch[1] / yc, stretch[2] / zc, stretch[3] / zc]
    twist = twist / zc
    out = np.zeros((pz, ch, px, py), dtype=f32)
    z = f32(-zc + c_int_half(sz - pz))
    for k in range(pz):
        a_plus, a_minus = (rot + shear) + z * twist, (rot - shear) + z * twist
        sp, cp = f32(math.sin(a_plus)), f32(math.cos(a_plus))
        sm, cm = f32(math.sin(a_minus)), f32(math.cos(a_minus))
        zi = nearest(z * scale[2] + zc)
        for c in range(ch):
            x = f32(-xc + c_int_half(sx - px))
            for i in range(px):
                y = f32(-yc + c_int_half(sy - py))
                for j in range(py):
                    xt = x * (scale[0] + st[0] * y + st[2] * z)
                    yt = y * (scale[1] + st[1] * x + st[3] * z)
                    xi = nearest(xt * cm - yt * sp + xc)
                    yi = nearest(yt * cp + xt * sm + yc)
                    if 0 <= xi < sx and 0 <= yi < sy and 0 <= zi < sz:
                        out[k, c, i, j] = img[zi, c, xi, yi]
                    y += f32(1)
                x += f32(1)
        z += f32(1)
    return out


def ref_warp2d(img, ps, rot, shear, scale, stretch):
    """fastwarp2d_opt with the Python wrapper's conversions, one pixel at a time."""
    ch, sx, sy = img.shape
    px, py = ps
    rot, shear = (f32(a * np.pi / 180) for a in (rot, shear))
    scale = 1.0 / np.array(scale, dtype=f32)
    stretch = np.array(stretch, dtype=f32)
    xc, yc = (f32(f32(n) / 2 - 0.5) for n in (sx, sy))
    st = [stretch[0] / xc, stretch[1] / yc]
    sp, cp = f32(math.sin(rot + shear)), f32(math.cos(rot + shear))
    sm, cm = f32(math.sin(rot - shear)), f32(math.cos(rot - shear))
    out = np.zeros((ch, px, py), dtype=f32)
    for c in range(ch):
        x = f32(-xc + c_int_half(sx - px))
        for i in range(px):
            y = f32(-yc + c_int_half(sy - py))
            for j in range(py):
                xt = x * (scale[0] + st[0] * y)
                yt = y * (scale[1] + st[1] * x)
                xi, yi = nearest(xt * cm - yt * sp + xc), nearest(yt * cp + xt * sm + yc)
                if 0 <= xi < sx and 0 <= yi < sy:
                    out[c, i, j] = img[c, xi, yi]
                y += f32(1)
            x += f32(1)
    return out


PARAMS_3D = [  # rot, shear, scale (x, y, z), stretch, twist
    (0, 0, (1, 1, 1), (0, 0, 0, 0), 0),
    (13.7, -2.9, (1.07, 1.02, 1.09), (0.08, -0.05, 0.03, -0.09), -11.0),
    (-90, 7, (2, 0.5, 1), (0, 0, 0, 0), 0),
    (37, 0, (0.5, 2, 2), (0.25, 0.25, -0.25, 0.1), 5),
    (180, 45, (1, 1, 0.7), (-0.2, 0.1, 0, 0), 30),
]
SHAPES_3D = [((5, 2, 9, 11), (4, 8, 12)), ((6, 1, 10, 10), (6, 10, 10)),
             ((4, 3, 7, 6), (7, 9, 5))]


@pytest.mark.parametrize("params", PARAMS_3D)
@pytest.mark.parametrize("shapes", SHAPES_3D)
def test_warp3d_matches_c_kernel(rng, params, shapes):
    img_shape, ps = shapes
    img = rng.random(img_shape, dtype=f32) + 1
    out = warp3dFast(img, ps, *params)
    assert out.dtype == np.float32 and out.shape == (ps[0], img_shape[1]) + ps[1:]
    np.testing.assert_array_equal(out, ref_warp3d(img, ps, *params))


@pytest.mark.parametrize("params", [p[:4] for p in PARAMS_3D])
@pytest.mark.parametrize("shapes", [((2, 9, 11), (8, 12)), ((1, 12, 12), (12, 12)),
                                    ((3, 7, 6), (9, 5))])
def test_warp2d_matches_c_kernel(rng, params, shapes):
    rot, shear, scale, stretch = params
    img_shape, ps = shapes
    img = rng.random(img_shape, dtype=f32) + 1
    out = warp2dFast(img, ps, rot, shear, scale[:2], stretch[:2])
    assert out.dtype == np.float32 and out.shape == (img_shape[0],) + ps
    np.testing.assert_array_equal(out, ref_warp2d(img, ps, rot, shear, scale[:2], stretch[:2]))


# --- geometry ------------------------------------------------------------------------------------


def test_identity_is_exact(rng):
    img3 = rng.standard_normal((6, 3, 17, 20)).astype(f32)
    np.testing.assert_array_equal(warp3dFast(img3, (6, 17, 20)), img3)
    img2 = img3[0]
    np.testing.assert_array_equal(warp2dFast(img2, (17, 20)), img2)
    # a smaller patch is the centred crop, offset (size - patch) // 2
    np.testing.assert_array_equal(warp3dFast(img3, (3, 10, 13)), img3[1:4, :, 3:13, 3:16])
    np.testing.assert_array_equal(warp2dFast(img2, (10, 13)), img2[:, 3:13, 3:16])
    assert warping.test() is True


def test_rounding_and_zero_fill_of_the_original():
    """``trunc(u + 0.5)``: coordinates in (-1.5, -0.5] still read index 0; beyond: 0."""
    img = np.array([[[1, 2, 3, 4]]], dtype=f32)  # (ch, x, y) = (1, 1, 4)
    out = warp2dFast(img, (1, 8))
    np.testing.assert_array_equal(out[0, 0], [0, 1, 1, 2, 3, 4, 0, 0])


@pytest.mark.parametrize("size", [(9, 9), (8, 8)])
def test_rotation_by_90_degrees_is_rot90(rng, size):
    """Positive angles turn the content clockwise: rot=90 is ``np.rot90(k=-1)``."""
    img2 = rng.random((2,) + size, dtype=f32)
    for rot, k in ((90, -1), (-90, 1), (180, 2), (270, 1)):
        np.testing.assert_array_equal(warp2dFast(img2, size, rot=rot),
                                      np.rot90(img2, k=k, axes=(1, 2)))
    img3 = rng.random((3, 2) + size, dtype=f32)
    np.testing.assert_array_equal(warp3dFast(img3, (3,) + size, rot=90),
                                  np.rot90(img3, k=-1, axes=(2, 3)))


def test_scale_2_enlarges(rng):
    img = np.zeros((1, 64, 64), dtype=f32)
    img[0, 28:36, 30:38] = 1  # an 8×8 square about the centre (31.5, 31.5)
    out = warp2dFast(img, (64, 64), scale=(2, 2))
    rows, cols = np.nonzero(out[0])
    assert np.ptp(rows) + 1 == 16 and np.ptp(cols) + 1 == 16 and out.sum() == 256
    assert set(np.unique(out)) == {0, 1}
    small = warp2dFast(img, (64, 64), scale=(0.5, 1))  # x shrunk to half
    rows, cols = np.nonzero(small[0])
    assert np.ptp(rows) + 1 == 4 and np.ptp(cols) + 1 == 8


def test_channels_warp_identically(rng):
    base = rng.random((5, 1, 21, 23), dtype=f32)
    img = np.concatenate([base, 3 * base, base ** 2], axis=1)
    params = (12, 3, (1.1, 0.9, 1.05), (0.1, -0.1, 0.05, 0.05), 8)
    out = warp3dFast(img, (5, 19, 19), *params)
    single = warp3dFast(base, (5, 19, 19), *params)[:, 0]
    np.testing.assert_array_equal(out[:, 0], single)
    np.testing.assert_array_equal(out[:, 1], 3 * single)
    np.testing.assert_array_equal(out[:, 2], single ** 2)
    img2 = img[0]
    out2 = warp2dFast(img2, (19, 19), 12, 3, (1.1, 0.9), (0.1, -0.1))
    for c in range(3):
        np.testing.assert_array_equal(out2[c], warp2dFast(img2[c:c + 1], (19, 19), 12, 3,
                                                          (1.1, 0.9), (0.1, -0.1))[0])


def test_z_is_only_scaled(rng):
    """Anisotropic z: each output slice reads from one source slice, ``z / scale_z``."""
    sz, pz = 9, 7
    img = np.broadcast_to((np.arange(sz, dtype=f32) + 1)[:, None, None, None],
                          (sz, 1, 30, 30))
    params = dict(rot=20, shear=5, stretch=(0.1, 0.1, 0.2, -0.2), twist=15)
    out = warp3dFast(img, (pz, 24, 24), scale=(1.1, 0.9, 1), **params)
    for k in range(pz):
        assert set(np.unique(out[k])) <= {k + 1 + 1, 0}  # source slice k + (9 - 7) // 2
    out = warp3dFast(img, (pz, 24, 24), scale=(1, 1, 2), **params)
    zc = (sz - 1) / 2
    for k in range(pz):
        z = k - zc + 1
        assert set(np.unique(out[k])) <= {math.trunc(z / 2 + zc + 0.5) + 1, 0}


def test_single_slice_3d_equals_2d(rng):
    """A source of one z slice: no division by its zero centre offset (the original's NaN)."""
    img = rng.random((1, 2, 15, 15), dtype=f32) + 1
    out = warp3dFast(img, (1, 13, 13), 10, 2, (1.1, 1.05, 1), (0.1, 0.05, 0.3, 0.3), 20)
    np.testing.assert_array_equal(out[0], warp2dFast(img[0], (13, 13), 10, 2, (1.1, 1.05),
                                                     (0.1, 0.05)))
    assert out.min() > 0


def test_mnist_batch_as_z(rng):
    """MNISTData warps a batch (bs, 1, x, y) with the batch axis taken as z."""
    data = rng.random((6, 1, 26, 26), dtype=f32)
    out = warp3dFast(data, (6, 26, 26), rot=0, shear=5, scale=(1.1, 1.05, 1),
                     stretch=rng.uniform(-0.25, 0.25, 4), twist=-4)
    assert out.shape == data.shape and out.dtype == np.float32


def test_bad_input():
    with pytest.raises(ValueError, match="ch, x, y"):
        warp2dFast(np.zeros((4, 4)), (4, 4))
    with pytest.raises(ValueError, match="z, ch, x, y"):
        warp3dFast(np.zeros((2, 4, 4)), (2, 4, 4))
    with pytest.raises(ValueError, match="3 entries"):
        warp3dFast(np.zeros((2, 1, 4, 4)), (4, 4))
    with pytest.raises(ValueError, match="finite"):
        warp2dFast(np.zeros((1, 4, 4)), (4, 4), rot=np.nan)
    with pytest.raises(ValueError, match="non-zero"):
        warp2dFast(np.zeros((1, 4, 4)), (4, 4), scale=(0, 1))


# --- labels --------------------------------------------------------------------------------------


def test_labels_keep_their_values(rng):
    values = np.array([-1, 1, 2, 7, 300], dtype=np.int16)
    img = rng.random((11, 1, 40, 40), dtype=f32)
    lab = rng.choice(values, size=(7, 30, 30))  # offset (2, 5, 5)
    req, *params = getWarpParams((9, 36, 36), rng=rng)
    out, wlab = warp3dJoint(img, lab, (9, 36, 36), *params)
    assert out.shape == (9, 1, 36, 36)
    assert wlab.shape == (5, 26, 26) and wlab.dtype == np.int16
    assert set(np.unique(wlab)) <= set(values) | {0}
    lab2 = lab[0]
    _, wlab2 = warp2dJoint(img[0], lab2, (36, 36), 10, 2, (1, 1.08), (0.05, -0.05))
    assert wlab2.shape == (26, 26) and wlab2.dtype == np.int16
    assert set(np.unique(wlab2)) <= set(values) | {0}


def test_labels_outside_become_class_0():
    """Label voxels mapped from outside the labelled volume are 0, not ignore.

    See docs/differences.md, T9.
    """
    lab = np.full((3, 10, 10), 4, dtype=np.int16)
    img = np.ones((5, 1, 14, 14), dtype=f32)
    out, wlab = warp3dJoint(img, lab, (5, 14, 14), scale=(0.5, 0.5, 1))
    assert set(np.unique(wlab)) == {0, 4} and wlab[:, 0].max() == 0
    assert out[:, :, 0].max() == 0


@pytest.mark.parametrize("n_dim", [2, 3])
def test_joint_warp_aligns_labels_with_image(rng, n_dim):
    """Labels embedded in the image warp to the image's warped crop (offset inset)."""
    ps = (7, 33, 33) if n_dim == 3 else (33, 33)
    off = (2, 6, 6) if n_dim == 3 else (6, 6)
    req, *params = getWarpParams(ps, rng=rng)
    req = tuple(req)
    lab_shape = tuple(r - 2 * o for r, o in zip(req, off, strict=True))
    lab = rng.integers(1, 9, size=lab_shape).astype(np.int16)
    embedded = np.zeros(req, dtype=f32)
    embedded[tuple(slice(o, o + n) for o, n in zip(off, lab_shape, strict=True))] = lab
    crop = tuple(slice(o, p - o) for o, p in zip(off, ps, strict=True))
    if n_dim == 3:
        img = embedded[:, None]
        out, wlab = warp3dJoint(img, lab, ps, *params)
        np.testing.assert_array_equal(out[:, 0][crop], wlab)
    else:
        img = embedded[None]
        out, wlab = warp2dJoint(img, lab, ps, *params[:4])
        np.testing.assert_array_equal(out[0][crop], wlab)


def test_non_image_labels_pass_through(rng):
    img = rng.random((3, 1, 12, 12), dtype=f32)
    lab = np.array([3], dtype=np.int16)
    out, same = warp3dJoint(img, lab, (3, 10, 10), rot=5)
    assert same is lab and out.shape == (3, 1, 10, 10)
    out, same = warp2dJoint(img[0], lab, (10, 10), 5, 0, (1, 1), (0, 0))
    assert same is lab and out.shape == (1, 10, 10)


def test_float_labels_keep_their_dtype(rng):
    lab = rng.random((3, 8, 8), dtype=f32)
    _, wlab = warp3dJoint(np.zeros((3, 1, 8, 8), f32), lab, (3, 8, 8))
    assert wlab.dtype == np.float32
    np.testing.assert_array_equal(wlab, lab)


# --- parameters and required sizes --------------------------------------------------------------


def test_corner_indices():
    np.testing.assert_array_equal(getCornerIx((3, 5)), [[0, 0], [2, 0], [0, 4], [2, 4]])
    assert getCornerIx((2, 3, 4)).shape == (8, 3)


def test_warp_params_are_seeded_and_in_range():
    state = np.random.get_state()[1].copy()
    a = getWarpParams((7, 127, 127), rng=np.random.default_rng(5))
    b = getWarpParams((7, 127, 127), rng=np.random.default_rng(5))
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # T5: global state unused
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    rng = np.random.default_rng(0)
    for _ in range(200):
        req, rot, shear, scale, stretch, twist = getWarpParams((7, 127, 127), rng=rng)
        assert abs(shear) <= 3 and abs(twist) <= 15 and rot <= 15 - abs(twist)
        assert np.all((1 <= scale) & (scale <= 1.1)) and scale.shape == (3,)
        assert np.all(np.abs(stretch) <= 0.1) and stretch.shape == (4,)
        assert req.dtype.kind == "i" and np.all(req >= (7, 127, 127))
        req, rot, shear, scale, stretch, twist = getWarpParams((31, 31), rng=rng)
        assert twist is None and abs(rot) <= 15 and scale[0] == 1  # T10: x never scaled
        assert stretch.shape == (2,)


def test_warp_amount_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="elektronn"):
        getWarpParams((20, 20), amount=1.5, rng=np.random.default_rng(0))
    assert "amount" in caplog.text


@pytest.mark.parametrize("ps", [(7, 127, 127), (5, 31, 34), (64, 64), (25, 30)])
def test_required_patch_size_covers_the_warp(ps):
    """A source of the required size leaves no zero-filled voxel in the patch."""
    rng = np.random.default_rng(sum(ps))
    for _ in range(10):
        req, rot, shear, scale, stretch, twist = getWarpParams(ps, rng=rng)
        if len(ps) == 3:
            out = warp3dFast(np.ones((req[0], 1, req[1], req[2]), f32), ps, rot, shear, scale,
                             stretch, twist)
        else:
            out = warp2dFast(np.ones((1,) + tuple(req), f32), ps, rot, shear, scale, stretch)
        assert out.min() == 1


def test_required_patch_size_identity_and_rotation():
    req, eff, left = getRequiredPatchSize((20, 20), 0, 0, (1, 1), (0, 0))
    assert list(req) == [20, 20] and list(eff) == [19, 19] and list(left) == [0, 0]
    req, _, _ = getRequiredPatchSize((20, 20), 45, 0, (1, 1), (0, 0))
    assert list(req) == [28, 28]  # the diagonal 19·√2 ≈ 26.9 plus rounding
    req, _, _ = getRequiredPatchSize((1, 9, 9), 0, 0, (1, 1, 1), (0, 0, 0, 0), 10)
    assert list(req) == [1, 9, 9]


# --- flips, transposes, grey values -------------------------------------------------------------


def dihedral(a, axes):
    """The 8 mirrorings and 90-degree turns of ``a`` over ``axes``."""
    turns = [np.rot90(a, k, axes) for k in range(4)]
    return turns + [np.flip(t, axes[0]) for t in turns]


def test_random_flip_2d(rng):
    d = rng.random((2, 6, 6), dtype=f32)
    lab = d[0].copy()
    seen = set()
    for _ in range(128):
        fd, fl = randomFlip(d, lab, rng)
        assert fd.shape == d.shape and fl.shape == lab.shape
        np.testing.assert_array_equal(fd[0], fl)  # labels follow the image
        match = [i for i, t in enumerate(dihedral(d, (1, 2))) if np.array_equal(t, fd)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 8
    for _ in range(16):  # upright: only y is mirrored
        fd, fl = randomFlip(d, lab, rng, upright_x=True)
        assert np.array_equal(fd, d) or np.array_equal(fd, d[:, :, ::-1])
        np.testing.assert_array_equal(fd[0], fl)
    fd, none = randomFlip(d, None, rng)
    assert none is None and fd.shape == d.shape


@pytest.mark.parametrize("aniso", [True, False])
def test_random_flip_3d(rng, aniso):
    d = rng.random((4, 2, 4, 4), dtype=f32)
    lab = d[:, 0].copy()
    slices = {tuple(np.sort(s.ravel())) for s in lab}  # the z slices' contents
    kept = 0
    for _ in range(32):
        fd, fl = randomFlip(d, lab, rng, aniso=aniso)
        np.testing.assert_array_equal(fd[:, 0], fl)
        np.testing.assert_array_equal(np.sort(fd.ravel()), np.sort(d.ravel()))
        kept += {tuple(np.sort(s.ravel())) for s in fl} == slices
    assert kept == 32 if aniso else kept < 32  # aniso never moves z into x or y


def test_random_flip_is_seeded():
    d = np.arange(2 * 5 * 5).reshape(2, 5, 5)
    a = randomFlip(d, d[0], np.random.default_rng(3))
    b = randomFlip(d, d[0], np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])


def test_transpose_ignores_channels():
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (z, ch, x, y)
    t = transposeIgnoreCh(a, (2, 0, 1))
    assert t.shape == (5, 3, 2, 4)
    np.testing.assert_array_equal(t[:, 1], np.transpose(a[:, 1], (2, 0, 1)))


@pytest.mark.parametrize("shape, axis", [((3, 8, 8), 0), ((4, 3, 8, 8), 1)])
def test_grey_augment(rng, shape, axis):
    d = rng.random(shape, dtype=f32)
    orig = d.copy()
    out = greyAugment(d, [0, 2], np.random.default_rng(1))
    np.testing.assert_array_equal(d, orig)  # the input is not changed
    np.testing.assert_array_equal(np.take(out, 1, axis), np.take(d, 1, axis))
    assert not np.array_equal(np.take(out, 0, axis), np.take(d, 0, axis))
    assert out.dtype == d.dtype and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, greyAugment(d, [0, 2], np.random.default_rng(1)))
    assert greyAugment(d, [], rng) is d


def test_maketestimage():
    img = warping.maketestimage((90, 100))
    assert img.shape == (90, 100) and img.max() == 1 and img.min() > 0
