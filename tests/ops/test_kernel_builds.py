"""Each kernel vector width compiles to its own lanes; thread counts give identical results."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import KERNEL_WIDTHS, kernel_build


@pytest.mark.parametrize("width", sorted(KERNEL_WIDTHS))
def test_width_compiles_its_vector_lanes(width):
    """``corr_block(1)`` is lanes x vectors per register block: 16 x 6 or 8 x 3."""
    lanes = KERNEL_WIDTHS[width][2]
    assert kernel_build(width).corr_block(1) == {16: 96, 8: 24}[lanes]


# Sizes above the kernels' thresholds for going parallel (4e6 FMAs, 1e6 pooled elements).
SCRIPT = """
import json, sys
import numpy as np
from elektronn.ops import _kernels
target = json.loads(sys.argv[2])
_kernels._lib = _kernels._build(_kernels.compiler(), *target) if target else None
assert _kernels.kernel_library() is not None
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8, 10, 40, 40)).astype(np.float32)
w = rng.standard_normal((12, 8, 3, 3, 3)).astype(np.float32)
y = _kernels.corr(x, w)
g = rng.standard_normal(y.shape).astype(np.float32)
p = rng.standard_normal((4, 8, 12, 64, 64)).astype(np.float32)
pooled = _kernels.pool(p, (2, 2, 2))
frag = _kernels.mfp(p, (1, 2, 2))
out = {
    "corr": y, "gradw": _kernels.corr_weights(x, g, w.shape[2:]),
    "gradx": _kernels.conv_grad_input(g, w), "pool": pooled,
    "pool_grad": _kernels.pool_grad(p, pooled, pooled, (2, 2, 2)),
    "mfp": frag, "mfp_grad": _kernels.mfp_grad(p, frag, frag, (1, 2, 2)),
}
np.savez(sys.argv[1], **out)
"""


@pytest.mark.parametrize("width", ["native", *sorted(KERNEL_WIDTHS)])
def test_thread_counts_give_identical_results(width, tmp_path):
    """OMP_NUM_THREADS 1 and 2 (fresh processes): bit-identical arrays, for every build."""
    target = [] if width == "native" else [KERNEL_WIDTHS[width][0]]
    if target:
        kernel_build(width)  # skips where the CPU cannot run it; compiles it once
    results = []
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, "-c", SCRIPT, str(out), json.dumps(target)], env=env,
                       check=True, timeout=600)
        results.append(dict(np.load(out)))
    one, two = results
    assert sorted(one) == sorted(two)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
