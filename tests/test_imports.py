"""Importing elektronn has no side effects, and its modules import each other without cycles."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "elektronn"

# Run in a fresh interpreter: snapshot the global state, import every module, compare.
_SNAPSHOT = r"""
import importlib, json, os, pkgutil, sys
import matplotlib
import pytensor
try:  # importing JAX sets environment variables of its own (TF_CPP_MIN_LOG_LEVEL, ...)
    import jax
except ImportError:
    pass

def state():
    params = pytensor.config._config_var_dict
    return {
        "pytensor": {k: str(p.val) for k, p in params.items() if hasattr(p, "val")},
        "environ": dict(os.environ),
        "mpl_backend": str(matplotlib.rcParams._get_backend_or_none()),
        "pyplot": "matplotlib.pyplot" in sys.modules,
    }

before = state()
import elektronn
names = ["elektronn"] + [m.name for m in pkgutil.walk_packages(elektronn.__path__, "elektronn.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"before": before, "after": state(), "modules": names}))
"""


def _all_modules():
    return sorted(
        ".".join(("elektronn", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__")
        for p in PACKAGE.rglob("*.py"))


@pytest.mark.slow
def test_importing_every_module_changes_no_global_setting(tmp_path):
    env = dict(os.environ, ELEKTRONN_COMPILEDIR=str(tmp_path / "cache"), MPLCONFIGDIR=str(tmp_path))
    env.pop("MPLBACKEND", None)
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", _SNAPSHOT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert set(result["modules"]) == set(_all_modules())  # every module was imported
    before, after = result["before"], result["after"]
    assert after["environ"] == before["environ"]
    assert after["mpl_backend"] == before["mpl_backend"] and not after["pyplot"]
    changed = {k: (before["pytensor"].get(k), v) for k, v in after["pytensor"].items()
               if before["pytensor"].get(k) != v}
    assert not changed  # includes compiledir: not fixed (nor read) by an import
    assert not (tmp_path / "cache").exists()


def _imports(path, module):
    """elektronn modules that ``module`` imports when it is imported (module level only)."""
    tree = ast.parse(path.read_text())
    modules = set(_all_modules())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue  # imports inside functions run on call, not on import
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:  # a submodule, else a name defined in ``base``
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
            if isinstance(node, ast.ClassDef):
                visit(node.body)
            else:
                visit(ast.iter_child_nodes(node))

    visit(tree.body)
    return {m for m in found if m in modules and m != module}


def test_no_import_cycles():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("elektronn", *path.relative_to(PACKAGE).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        graph[name] = _imports(path, name)
    # the layering: ops below backend (which builds its modes from ops), net and training above
    assert "elektronn.backend" not in graph["elektronn.ops"]
    assert "elektronn.backend" in graph["elektronn.net.convnet"]
    cycles, state = [], {}

    def dfs(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            dfs(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_only_the_backend_reads_elektronn_environment_variables():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "backend.py" and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ("os.environ" in line or "getenv" in line) and (
                    "ELEKTRONN_" in line or "_ENV_VAR" in line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders


def test_reference_is_only_the_tests_oracle():
    """No module of the package uses elektronn.ops.reference (runtime numpy: numpy_kernels)."""
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if p.name != "reference.py"
             and re.search(r"import reference\b|ops\.reference import|ops import .*\breference\b",
                           p.read_text())]
    assert not users
