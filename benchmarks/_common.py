"""Helpers shared by the benchmark scripts: timing, the matmul peak, machine info, JSON, workers.

The scripts import it as ``_common`` (``benchmarks`` is not a package): each inserts its own
folder into ``sys.path`` first, so that they also work when loaded from a file path (tests).
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def median_ms(fns, repeats, warmup=2):
    """Median wall times in milliseconds of the zero-argument callables ``fns``.

    The calls are interleaved (one of each per round) so that every callable sees the same
    background load on a shared machine; ``warmup`` rounds are not timed.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def matmul_peak(n, repeats):
    """float32 ``n^3`` numpy matrix product: (milliseconds, GFLOP/s)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    (ms,) = median_ms([lambda: a @ b], repeats)
    return ms, 2 * n**3 / ms / 1e6


#: Where PyTorch runs: ``cpu`` unless ``ELEKTRONN_BENCH_TORCH_DEVICE`` says otherwise (``cuda``
#: on a GPU machine, see ``gpu_check.sh``).
TORCH_DEVICE = os.environ.get("ELEKTRONN_BENCH_TORCH_DEVICE", "cpu")


def import_torch():
    """Return ``torch`` with one thread per core, or ``None`` when it is not importable."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def torch_sync(torch):
    """Wait for PyTorch's queued GPU work (nothing to wait for on the CPU)."""
    if TORCH_DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def loadavg():
    """The 1, 5 and 15 minute load averages as a list (None where unavailable)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(torch):
    """Cores, CPU model, load, elektronn's mode and library versions for the JSON record."""
    import pytensor

    from elektronn.backend import mode_name

    cpu = platform.processor()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cores": os.cpu_count(),
        "elektronn_mode": mode_name(),
        "cpu": cpu,
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pytensor": pytensor.__version__,
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "torch_device": TORCH_DEVICE if torch else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def peer_cells(row, ms_digits):
    """The PyTorch columns of a table row: ``(ms, GFLOP/s, ratio)`` as text, ``-`` without it."""
    if "torch_ms" not in row:
        return "-", "-", "-"
    return (f"{row['torch_ms']:.{ms_digits}f}", f"{row['torch_gflops']:.1f}",
            f"{row['ratio']:.2f}")


def write_json(result, path):
    """Write ``result`` as indented JSON to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def compile_env(compiledir=None):
    """A copy of the environment with the PyTensor/elektronn compile cache in ``compiledir``.

    ``None`` keeps the caller's cache (a warm run); ``ELEKTRONN_MODE`` is removed either way.
    """
    env = dict(os.environ)
    env.pop("ELEKTRONN_MODE", None)
    if compiledir is None:
        return env
    env["ELEKTRONN_COMPILEDIR"] = str(compiledir)
    flags = [
        f
        for f in env.get("PYTENSOR_FLAGS", "").split(",")
        if f and not f.startswith(("base_compiledir=", "compiledir="))
    ]
    env["PYTENSOR_FLAGS"] = ",".join(flags + [f"base_compiledir={compiledir}"])
    return env


def run_worker(args, env=None, timeout=600):
    """Run ``python *args`` in a fresh process; parse the JSON on its last stdout line.

    Returns the parsed dict with ``status`` ("ok", "timeout" or "error"), ``process_s`` and
    ``loadavg_1min`` added.
    """
    record = {"loadavg_1min": loadavg()[0] if hasattr(os, "getloadavg") else None}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return dict(record, status="timeout", process_s=time.perf_counter() - t0, timeout_s=timeout)
    record["process_s"] = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return dict(record, status="error", returncode=proc.returncode, stderr=proc.stderr[-2000:])
    return dict(record, status="ok", **json.loads(lines[-1]))


def peak_rss_reset():
    """Reset the kernel's peak-RSS mark; return True if that worked (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib(field):
    """``VmRSS``/``VmHWM`` of this process in KiB from /proc, else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
