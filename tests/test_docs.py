"""The documentation: every ``python`` code block of ``docs/*.md`` runs, and the docs build.

Each page's ```` ```python ```` blocks run in order, in one fresh namespace per page, in a
temporary working directory.  A block is skipped only when it is marked as not runnable: an
HTML comment ``<!-- no-test -->`` on the line before its fence, or a word after the language
(```` ```python no-test ````, ```` ```python title ````).  Shell and other blocks are not run.

The Sphinx build (``sphinx-build -W``: any warning fails) runs when Sphinx and MyST are
installed (``pip install -e ".[docs]"``).
"""

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from elektronn import backend

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_NO_TEST = "<!-- no-test -->"

# Objects that a page's text introduces without code: the introspection page shows calls on
# "a net `cnn`" and "a batch `data`".  A small seeded 2-D net stands in for them.
_PRELUDES = {
    "introspection.md": """
import numpy as np
from elektronn.net.convnet import MixedConvNN
cnn = MixedConvNN((20, 20), input_depth=1, batch_size=2, seed=0)
cnn.addConvLayer(4, 5, pool_shape=2, activation_func="tanh")
cnn.addPerceptronLayer(3, activation_func="tanh")
cnn.compileOutputFunctions(target="nll", only_forward=True)
data = np.random.default_rng(0).normal(size=(2, 1, 20, 20)).astype(np.float32)
""",
}


def code_blocks(text):
    """All fenced blocks of a Markdown text: ``(line, language, words, skip, code)``.

    ``line`` is the 1-based line of the first code line, ``language`` the first word of the
    info string, ``words`` the rest of it, ``skip`` whether the line before the fence is the
    ``<!-- no-test -->`` marker.  A fence closes with the same character, at least as long.
    """
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip().split()
        language, words = (info[0], info[1:]) if info else ("", [])
        skip = i > 0 and lines[i - 1].strip() == _NO_TEST
        body, j = [], i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"].strip():
                break
            body.append(lines[j][len(m["indent"]):] if lines[j].startswith(m["indent"])
                        else lines[j])
            j += 1
        blocks.append((i + 2, language, words, skip, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def runnable_blocks(text):
    """The ``(line, code)`` of the ``python`` blocks that are not marked as not runnable."""
    return [(line, code) for line, language, words, skip, code in code_blocks(text)
            if language == "python" and not words and not skip]


def test_code_blocks_parser():
    text = "\n".join([
        "# Page", "```python", "a = 1", "```", "", "<!-- no-test -->", "```python",
        "import not_a_module", "```", "```python title", "raise SystemExit", "```",
        "```bash", "rm -rf /", "```", "````markdown", "```python", "nested = 1", "```", "````",
        "~~~python", "b = a + 1", "~~~",
    ])
    assert runnable_blocks(text) == [(3, "a = 1\n"), (22, "b = a + 1\n")]
    assert [b[1] for b in code_blocks(text)] == ["python", "python", "python", "bash",
                                                 "markdown", "python"]


def test_every_page_is_checked():
    names = {p.name for p in PAGES}
    assert {"index.md", "getting-started.md", "api.md", "mfp.md", "lazy-labels.md",
            "cnncalculator.md", "backends.md", "coming-from-elektronn1.md",
            "introspection.md"} <= names
    for page in ("getting-started.md", "mfp.md", "lazy-labels.md", "cnncalculator.md",
                 "backends.md", "coming-from-elektronn1.md"):
        assert runnable_blocks((DOCS / page).read_text()), f"{page} has no runnable example"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in ``tmp_path``; restore the backend mode, logging and matplotlib afterwards."""
    monkeypatch.chdir(tmp_path)
    mode = backend.mode_name()
    root, lib = logging.getLogger(), logging.getLogger("elektronn")
    saved = (list(root.handlers), root.level, lib.level)
    yield tmp_path
    backend.set_mode(mode)
    root.handlers[:], root.level, lib.level = saved[0], saved[1], saved[2]
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.mark.parametrize("page", [p.name for p in PAGES if runnable_blocks(p.read_text())])
def test_page_code_runs(page, isolated):
    namespace = {"__name__": f"docs.{page}"}
    if page in _PRELUDES:
        exec(compile(_PRELUDES[page], f"<prelude of {page}>", "exec"), namespace)
    for line, code in runnable_blocks((DOCS / page).read_text()):
        # Pad with blank lines so that tracebacks show the line numbers of the page.
        exec(compile("\n" * (line - 1) + code, str(DOCS / page), "exec"), namespace)


@pytest.mark.slow
def test_mfp_figure_script(tmp_path):
    """The figure script of mfp.md runs (small image) and finds MFP and plain equal."""
    sys.path.insert(0, str(DOCS))
    try:
        import make_mfp_figure
    finally:
        sys.path.remove(str(DOCS))
    report = make_mfp_figure.main(["--out", str(tmp_path / "mfp.png"), "--size", "100",
                                   "--repeats", "1"])
    assert (tmp_path / "mfp.png").stat().st_size > 10_000
    assert report["max_abs_difference"] < 1e-5
    assert report["without MFP"]["passes_per_tile"] == 16
    assert report["with MFP"]["passes_per_tile"] == 1


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:] or result.stdout[-5000:]
    for page in ("index", "getting-started", "api", "mfp", "lazy-labels", "cnncalculator",
                 "backends", "coming-from-elektronn1", "introspection"):
        assert (tmp_path / "html" / f"{page}.html").is_file()
    api = (tmp_path / "html" / "api.html").read_text()
    assert 'id="elektronn.net.convnet.MixedConvNN.trainingStep"' in api
    assert 'id="elektronn.net.netutils.CNNCalculator"' in api


def test_readme_code_runs(isolated):
    """The Python examples of the README run as written."""
    readme = DOCS.parent / "README.md"
    namespace = {"__name__": "README"}
    blocks = runnable_blocks(readme.read_text())
    assert blocks
    for line, code in blocks:
        exec(compile("\n" * (line - 1) + code, str(readme), "exec"), namespace)
