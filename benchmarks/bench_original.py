"""Small nets against ELEKTRONN 1.0 (Theano 0.9, Python 2.7), measured live in the same run.

The workloads are those of the performance issue (ELEKTRONN 1.0's MNIST example net and a
small anisotropic 3-D net, training steps and ``predictDense``).  Both libraries build them with
the same code (:data:`WORKLOAD_CODE`, valid Python 2 and 3: elektronn keeps the original's API),
each in its own process: the original in a Python 2.7 worker started from a temporary folder
outside the checkout, elektronn in this process.  The two take turns: every round times one
batch of calls in the original, then one in elektronn, so both see the same background load;
the figures are medians over all rounds.  The original's Theano compile cache is its usual
one (``~/.theano``), so only the first run ever compiles its C code (minutes)::

    python benchmarks/bench_original.py [--quick] [--rounds N] [--json PATH]

The original is found as ``python2.7`` (pyenv version ``2.7.18`` when pyenv is used) or
``$ELEKTRONN1_PYTHON``; install it with ``original-env.sh`` (see ``docs/performance.md``).
Without it the benchmark prints why and skips (exit status 0, ``"skipped"`` in the JSON).
Ratios > 1 mean elektronn is faster: ``original ms / elektronn ms`` for training steps and
``elektronn MVox/s / original MVox/s`` for dense prediction.  The goals of the issue: 2x for
training steps and 3x for dense prediction.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

#: Goals of the performance issue (ratio, > 1: elektronn faster), per kind of workload.
GOALS = {"train": 2.0, "predict": 3.0}

#: name -> (kind, spec); see ``build`` in WORKLOAD_CODE.  Descriptions in DESCRIPTIONS.
WORKLOADS = {
    "n2d_clf_bs4": ("train", {"net": "n2d", "batch": 4}),
    "n2d_clf_bs64": ("train", {"net": "n2d", "batch": 64}),
    "n3d_7x21x21": ("train", {"net": "n3d", "batch": 2, "input": [7, 21, 21]}),
    "n3d_11x41x41": ("train", {"net": "n3d", "batch": 2, "input": [11, 41, 41]}),
    "pred2d_mfp": ("predict", {"net": "p2d", "mfp": True, "image": [2, 400, 400]}),
    "pred2d": ("predict", {"net": "p2d", "mfp": False, "image": [2, 400, 400]}),
    "pred3d_mfp": ("predict", {"net": "n3d", "mfp": True, "image": [2, 120, 120, 30],
                               "input": [11, 40, 40]}),
    "pred3d": ("predict", {"net": "n3d", "mfp": False, "image": [2, 120, 120, 30],
                           "input": [11, 40, 40]}),
}
QUICK = ("n2d_clf_bs4", "n3d_7x21x21", "pred2d_mfp")
DESCRIPTIONS = {
    "n2d_clf_bs4": "MNIST net (golden n2d_clf), SGD step, batch 4",
    "n2d_clf_bs64": "the same, batch 64",
    "n3d_7x21x21": "golden n3d net, SGD step, batch 2, input (7, 21, 21)",
    "n3d_11x41x41": "the same net, input (11, 41, 41)",
    "pred2d_mfp": "predictDense (2, 400, 400), 2-D net 98x98, MFP",
    "pred2d": "the same without MFP (input 95x95)",
    "pred3d_mfp": "predictDense (2, 120, 120, 30), n3d net (11, 40, 40), MFP",
    "pred3d": "the same without MFP (input (11, 39, 39))",
}

WORKLOAD_CODE = r'''
import time
import numpy as np


def build(MixedConvNN, CNNCalculator, spec):
    """Build the net of ``spec``; return ``(call, units)``: a zero-argument callable doing
    one step or prediction, and the output voxels per call (0 for training steps)."""
    rng = np.random.RandomState(0)
    net = spec["net"]
    if net == "n2d":  # the original's MNIST example (golden case n2d_clf)
        bs = spec["batch"]
        cnn = MixedConvNN((28, 28), input_depth=1, batch_size=bs, enable_dropout=False)
        cnn.addConvLayer(10, 5, pool_shape=2, activation_func="abs")
        cnn.addConvLayer(8, 5, pool_shape=2, activation_func="abs")
        cnn.addPerceptronLayer(100, activation_func="abs")
        cnn.addPerceptronLayer(10, activation_func="abs")
        cnn.compileOutputFunctions(target="nll")
        x = rng.rand(bs, 1, 28, 28).astype(np.float32)
        y = rng.randint(0, 10, bs).astype(np.int16)
    elif net == "n3d" and "batch" in spec:  # golden case n3d, for training
        bs = spec["batch"]
        cnn = MixedConvNN(tuple(spec["input"]), input_depth=2, batch_size=bs,
                          enable_dropout=False)
        cnn.addConvLayer(4, (1, 4, 4), pool_shape=(1, 2, 2), activation_func="relu")
        cnn.addConvLayer(5, (3, 3, 3), pool_shape=1, activation_func="tanh")
        cnn.addConvLayer(3, (3, 2, 2), pool_shape=1, activation_func="linear",
                         is_last_layer=True)
        cnn.compileOutputFunctions(target="nll")
        z, xs, ys = spec["input"]
        x = rng.rand(bs, z, 2, xs, ys).astype(np.float32)
        y = rng.randint(0, 3, (bs,) + tuple(cnn.output_shape[2:])).astype(np.int16)
    else:  # prediction nets: batch 1, input from the CNNCalculator
        mfp = spec["mfp"]
        if net == "p2d":
            layers = [(6, 4, 2, "relu", "maxabs"), (8, 3, 2, "tanh", "max"),
                      (3, 3, 1, "linear", "max")]
            calc = CNNCalculator([4, 3, 3], [2, 2, 1], desired_input=98, MFP=[mfp, mfp, False],
                                 n_dim=2)
        else:
            layers = [(4, (1, 4, 4), (1, 2, 2), "relu", "max"), (5, (3, 3, 3), 1, "tanh", "max"),
                      (3, (3, 2, 2), 1, "linear", "max")]
            calc = CNNCalculator([[1, 4, 4], [3, 3, 3], [3, 2, 2]],
                                 [[1, 2, 2], [1, 1, 1], [1, 1, 1]],
                                 desired_input=list(spec["input"]), MFP=[mfp, False, False],
                                 n_dim=3)
        cnn = MixedConvNN(calc.input, input_depth=2, batch_size=1, enable_dropout=False,
                          dimension_calc=calc)
        for i, (nof, filt, pool, act, mode) in enumerate(layers):
            cnn.addConvLayer(nof, filt, pool_shape=pool, activation_func=act,
                             pooling_mode=mode, use_fragment_pooling=mfp and pool != 1,
                             is_last_layer=i == len(layers) - 1)
        cnn.compileOutputFunctions(target="nll", only_forward=True)
        img = rng.rand(*spec["image"]).astype(np.float32)
        n_out = [0]

        def call():
            out = cnn.predictDense(img, show_progress=False)
            n_out[0] = int(np.prod(out.shape[1:]))
            return out

        call()
        return call, n_out[0], [int(s) for s in cnn.patch_size]
    cnn.setOptimizerParams(SGD={"LR": 1e-3, "momentum": 0.9}, weight_decay=0.0)
    return (lambda: cnn.trainingStep(x, y, mode="SGD")), 0, [int(s) for s in cnn.patch_size]


def timed(call, n):
    """Wall seconds of ``n`` calls, each."""
    out = []
    for _ in range(n):
        t0 = time.time()
        call()
        out.append(time.time() - t0)
    return out
'''

WORKER = r'''
# ELEKTRONN 1.0 side of benchmarks/bench_original.py (Python 2.7): JSON commands on stdin,
# one JSON answer per line on the real stdout; the library's prints go to stderr.
import json, os, sys
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
import numpy as np
import theano
from elektronn.net.convnet import MixedConvNN
from elektronn.net.netutils import CNNCalculator
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads.py")).read())
calls = {}
for line in iter(sys.stdin.readline, ""):
    cmd = json.loads(line)
    if cmd["cmd"] == "build":
        t0 = time.time()
        call, units, patch = build(MixedConvNN, CNNCalculator, cmd["spec"])
        calls[cmd["name"]] = call
        ans = {"units": units, "patch": patch, "build_s": time.time() - t0,
               "theano": theano.__version__, "blas": theano.config.blas.ldflags}
    elif cmd["cmd"] == "time":
        ans = {"times": timed(calls[cmd["name"]], cmd["n"])}
    else:
        break
    reply.write(json.dumps(ans) + "\n")
    reply.flush()
'''


def find_python2():
    """The original's interpreter as an argv prefix and its environment, or ``(None, why)``."""
    env = dict(os.environ, THEANO_FLAGS=os.environ.get("THEANO_FLAGS", "floatX=float32"),
               MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    env.setdefault("PYENV_VERSION", "2.7.18")
    exe = os.environ.get("ELEKTRONN1_PYTHON") or shutil.which("python2.7")
    if exe is None:
        return None, "no python2.7 (set ELEKTRONN1_PYTHON)"
    probe = ("import elektronn.net.convnet, pkg_resources, theano; "
             "print(pkg_resources.get_distribution('elektronn').version)")
    try:
        proc = subprocess.run([exe, "-c", probe], env=env, cwd=tempfile.gettempdir(),
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"{exe} failed: {err}"
    version = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    if version != ["1.0.14"]:
        return None, (f"ELEKTRONN 1.0.14 is not importable by {exe} "
                      f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:]})")
    return (exe, env), None


class Original:
    """The Python 2.7 worker process running ELEKTRONN 1.0 from a temporary folder."""

    def __init__(self, exe, env, timeout):
        self.dir = Path(tempfile.mkdtemp(prefix="elektronn1_bench_"))
        (self.dir / "workloads.py").write_text(WORKLOAD_CODE)
        (self.dir / "worker.py").write_text(WORKER)
        self.timeout = timeout
        self.proc = subprocess.Popen([exe, str(self.dir / "worker.py")], cwd=self.dir, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the ELEKTRONN 1.0 worker died on {cmd}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def elektronn_builder():
    """``build`` and ``timed`` of WORKLOAD_CODE bound to elektronn's classes."""
    from elektronn.net.convnet import MixedConvNN
    from elektronn.net.netutils import CNNCalculator

    namespace = {}
    exec(WORKLOAD_CODE, namespace)  # noqa: S102  (our own code, shared with the original)
    return (lambda spec: namespace["build"](MixedConvNN, CNNCalculator, spec),
            namespace["timed"])


def calls_per_round(kind, quick):
    """Calls per timed batch: a batch of small steps lasts tens of milliseconds."""
    return 1 if kind == "predict" else (5 if quick else 20)


def measure(names, rounds, quick, original):
    """Time every workload in both libraries, alternating per round; return the rows."""
    build, timed = elektronn_builder()
    rows = []
    for name in names:
        kind, spec = WORKLOADS[name]
        info = original.ask(cmd="build", name=name, spec=spec)
        call, units, patch = build(spec)
        if patch != info["patch"]:
            raise RuntimeError(f"{name}: input {patch} here, {info['patch']} in the original")
        n = calls_per_round(kind, quick)
        for _ in range(2):  # warm-up
            original.ask(cmd="time", name=name, n=1)
            timed(call, 1)
        t_orig, t_ours = [], []
        for _ in range(rounds):
            t_orig += original.ask(cmd="time", name=name, n=n)["times"]
            t_ours += timed(call, n)
        o_ms, e_ms = (1e3 * statistics.median(t) for t in (t_orig, t_ours))
        row = {"workload": name, "kind": kind, "description": DESCRIPTIONS[name],
               "input": patch, "calls": len(t_ours), "original_ms": o_ms, "elektronn_ms": e_ms,
               "ratio": o_ms / e_ms, "goal": GOALS[kind]}
        if kind == "predict":
            row.update(voxels=units, original_mvox_s=units / o_ms / 1e3,
                       elektronn_mvox_s=units / e_ms / 1e3)
        row["met"] = row["ratio"] >= row["goal"]
        rows.append(row)
        print(format_row(row), flush=True)
    return rows, info


def format_row(r):
    if r["kind"] == "predict":
        o, e, unit = r["original_mvox_s"], r["elektronn_mvox_s"], "MVox/s"
    else:
        o, e, unit = r["original_ms"], r["elektronn_ms"], "ms"
    return (f"{r['workload']:<14}{unit:>7}{o:>10.3f}{e:>11.3f}{r['ratio']:>7.2f}"
            f"{r['goal']:>6.1f}{'yes' if r['met'] else 'NO':>5}  {r['description']}")


def format_table(rows):
    head = "{:<14}{:>7}{:>10}{:>11}{:>7}{:>6}{:>5}  {}".format(
        "workload", "unit", "original", "elektronn", "ratio", "goal", "met", "")
    return "\n".join([head] + [format_row(r) for r in rows])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="three workloads, few rounds")
    p.add_argument("--rounds", type=int, default=None, help="alternations (default 7, quick 2)")
    p.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="these workloads")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the original")
    p.add_argument("--json", default="bench_results/bench_original.json", help="output JSON")
    return p.parse_args(argv)


def main(argv=None):
    """Run the comparison, print the table and write the JSON; return the result dict."""
    args = parse_args(argv)
    found, why = find_python2()
    info = _common.machine_info(None)
    if found is None:
        print(f"bench_original: skipped, ELEKTRONN 1.0 is not installed: {why}")
        result = {"machine": info, "skipped": why, "rows": []}
        _common.write_json(result, args.json)
        return result
    names = args.only or (QUICK if args.quick else list(WORKLOADS))
    rounds = args.rounds or (2 if args.quick else 7)
    original = Original(*found, args.timeout)
    t0 = time.perf_counter()
    try:
        print(format_table([]))
        rows, orig_info = measure(names, rounds, args.quick, original)
    finally:
        original.close()
    info.update(loadavg_end=_common.loadavg(), original_theano=orig_info["theano"],
                original_blas=orig_info["blas"])
    result = {"machine": info, "config": {"rounds": rounds, "quick": args.quick},
              "wall_s": time.perf_counter() - t0, "rows": rows}
    print(f"ELEKTRONN 1.0 (Theano {orig_info['theano']}) against elektronn "
          f"(mode {info['elektronn_mode']}), {info['cores']} cores, load {info['loadavg']}, "
          f"medians of {rows[0]['calls'] if rows else 0}+ calls alternated in {rounds} rounds")
    print("ratio > 1: elektronn faster (original ms / elektronn ms; MVox/s the other way)")
    _common.write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
