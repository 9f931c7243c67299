"""Where the time of one training step of a small net goes, node kind by node kind.

Builds a net of ``bench_original``'s workloads (default: the golden ``n3d`` net, batch 2,
input (7, 21, 21)), compiles its SGD step in the ``"numpy"`` mode, and runs it again as a copy
of the generated function that adds up the thread CPU time of every node::

    python benchmarks/profile_step.py [WORKLOAD] [--steps N]

Prints the step's thread CPU time, the share inside the graph function, and the time per
kind of node (elementwise ufuncs by scalar op, reductions, each other Op by class).  The clock
calls add about 0.1-0.5 us per node; thread CPU time leaves out the time other processes on a
shared machine take (set ``OMP_NUM_THREADS=1`` so that the kernels' work is on this thread).
"""

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_original  # noqa: E402


def node_kind(node):
    """A short name of what a node does."""
    op = node.op
    scalar = getattr(op, "scalar_op", None)
    return f"{type(op).__name__}:{type(scalar).__name__}" if scalar is not None else \
        type(op).__name__


def profile(name, steps):
    """Return ``(step_us, graph_us, {kind: (count, us)})`` per step of workload ``name``."""
    from elektronn.backend import mode_name
    from elektronn.ops.numpy_mode import NumpyLinker, _python_function

    kind, spec = bench_original.WORKLOADS[name]
    if kind != "train":
        raise SystemExit(f"{name} is not a training step")
    if mode_name() != "numpy":
        raise SystemExit("profile_step needs the 'numpy' mode")
    build, _ = bench_original.elektronn_builder()
    call, _, _ = build(spec)
    call()
    fn = next(o.step for o in _optimizers(call))
    linker = fn.maker.linker
    assert isinstance(linker, NumpyLinker)
    thunk = fn.vm
    order = linker.schedule(fn.maker.fgraph)
    timings = np.zeros(len(order))
    timed = _python_function(fn.maker.fgraph, order, thunk.storage_map, timings)
    plain = thunk.__defaults__[0]
    thunk.__defaults__ = (timed,) + thunk.__defaults__[1:]
    try:
        for _ in range(3):
            call()
        timings[:] = 0
        t0 = time.thread_time()
        for _ in range(steps):
            call()
        step_us = (time.thread_time() - t0) / steps * 1e6
    finally:
        thunk.__defaults__ = (plain,) + thunk.__defaults__[1:]
    per = collections.defaultdict(lambda: [0, 0.0])
    for node, ns in zip(order, timings, strict=True):
        per[node_kind(node)][0] += 1
        per[node_kind(node)][1] += ns / steps / 1e3
    return step_us, timings.sum() / steps / 1e3, dict(per)


def _optimizers(call):
    """The compiled optimisers of the net behind a ``build`` callable (from its closure)."""
    cells = [c.cell_contents for c in call.__closure__ or ()]
    cnn = next(c for c in cells if hasattr(c, "_optimizer"))
    return [cnn._optimizer("SGD")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workload", nargs="?", default="n3d_7x21x21",
                   choices=[k for k, (kind, _) in bench_original.WORKLOADS.items()
                            if kind == "train"])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    step_us, graph_us, per = profile(args.workload, args.steps)
    print(f"{args.workload}: {step_us:.0f} us per step (thread CPU time), {graph_us:.0f} us in "
          f"the graph's {sum(c for c, _ in per.values())} nodes, {step_us - graph_us:.0f} us "
          "outside them (the clock calls, argument checks, PyTensor's Function call)")
    print(f"{'node kind':<34}{'nodes':>6}{'us':>9}{'us/node':>9}")
    for k, (count, us) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:<34}{count:>6}{us:>9.1f}{us / count:>9.1f}")
    return step_us, graph_us, per


if __name__ == "__main__":
    main()
